//! `joinery serve`: turns a validated [`Config`] into a running daemon.
//!
//! Start-up order matters and is logged step by step: the Kubernetes client, the bind
//! address (the node's InternalIP when it can be found), the TLS certificate (and its
//! pin, which joining hosts use), the auth secrets, and then the listener. Kubernetes
//! being down does not stop the daemon: health answers, and everything that needs the
//! API says so until it is back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::api::{Api, Context, ServerInfo};
use crate::auth::store::{PasswordHashes, SigningKeys};
use crate::config::{Config, KubeSource};
use crate::http::{self, tls};
use crate::join::JoinService;
use crate::kube;
use crate::log;

/// A start-up failure, worded for the operator.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn serve(cfg: Config) -> Result<(), StartError> {
    http::install_panic_hook();
    create_data_dir(&cfg.data_dir)?;
    let source = match &cfg.kube {
        KubeSource::Kubeconfig(p) => kube::Source::Kubeconfig(p.clone()),
        KubeSource::InCluster => kube::Source::InCluster,
    };
    let timeouts = kube::Timeouts {
        connect: cfg.kube_timeout.min(std::time::Duration::from_secs(3)),
        request: cfg.kube_timeout,
    };
    let kube = kube::Client::new(&source, timeouts).map_err(|e| StartError(e.to_string()))?;
    log::info("kubernetes api", &[("server", kube.server().into())]);

    let node_name = cfg.node_name.clone().or_else(hostname);
    let own_ip = own_internal_ip(&kube, node_name.as_deref());
    let bind_ip = match (cfg.bind_address, own_ip) {
        (Some(ip), _) => {
            log::info(
                "bind address from configuration",
                &[("address", ip.to_string().into())],
            );
            ip
        }
        (None, Ok(ip)) => {
            log::info(
                "bind address is this node's InternalIP",
                &[("address", ip.to_string().into())],
            );
            ip
        }
        (None, Err(why)) => {
            log::warn(
                "listening on all addresses: this node's InternalIP is unknown",
                &[("reason", why.into())],
            );
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    };

    let identity = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => tls::load(cert, key),
        _ => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            names.extend(node_name.clone());
            if !bind_ip.is_unspecified() {
                names.push(bind_ip.to_string());
            }
            tls::load_or_generate(&cfg.data_dir, &names)
        }
    }
    .map_err(|e| StartError(e.to_string()))?;

    let passwords = match &cfg.password_hash_file {
        Some(path) => PasswordHashes::from_file(path).map_err(StartError)?,
        None => PasswordHashes::from_secret(kube.clone(), &cfg.namespace),
    };
    let keys = match &cfg.signing_key_file {
        Some(path) => SigningKeys::from_file(path).map_err(StartError)?,
        None => SigningKeys::from_secret(kube.clone(), &cfg.namespace),
    };
    // Load the key now when we can; when Kubernetes is down it is retried on first use.
    if let Err(e) = keys.get() {
        log::warn(
            "signing key not loaded yet; will retry on first use",
            &[("reason", e.to_string().into())],
        );
    }

    let join = match &cfg.join {
        None => {
            log::info(
                "joins are off: --ec-config, --license and --artifacts-dir not given",
                &[],
            );
            None
        }
        Some(j) => Some(
            JoinService::load(
                &j.ec_config,
                &j.license,
                &j.artifacts_dir,
                &cfg.data_dir,
                kube.clone(),
                &cfg.namespace,
            )
            .map_err(StartError)?,
        ),
    };

    let limits = http::Limits {
        max_connections: cfg.max_connections,
        idle_timeout: cfg.idle_timeout,
        grace: cfg.shutdown_grace,
        ..http::Limits::default()
    };
    let addr = SocketAddr::new(bind_ip, cfg.api_port);
    let server = http::Server::bind(addr, identity.config.clone(), limits)
        .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))?;
    let local = server
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the listening address: {e}")))?;
    let ctx = Arc::new(Context {
        kube,
        passwords,
        keys,
        server: ServerInfo {
            bind_ip,
            port: local.port(),
            node_name,
            pin: identity.pin.clone(),
            self_signed: cfg.tls_cert.is_none(),
        },
        join,
        throttle: crate::auth::throttle::Throttle::default(),
    });
    if ctx.join.is_some() {
        // Compress and hash the artifacts once, so joins are served from cache. The
        // thread ends by itself; the process may exit while it runs (the cache only
        // ever holds complete, renamed files).
        let warm = ctx.clone();
        std::thread::Builder::new()
            .name("bundle-cache".into())
            .spawn(move || {
                if let Some(j) = &warm.join {
                    j.warm_cache();
                }
            })
            .map_err(|e| StartError(format!("cannot start the cache thread: {e}")))?;
    }
    http::install_signal_handlers(server.shutdown_handle())
        .map_err(|e| StartError(format!("cannot install signal handlers: {e}")))?;
    log::info(
        "listening",
        &[
            ("address", format!("https://{local}").into()),
            ("pin", identity.pin.clone().into()),
        ],
    );
    server
        .run(Arc::new(Api::new(ctx)))
        .map_err(|e| StartError(format!("server stopped: {e}")))?;
    log::info("stopped", &[]);
    Ok(())
}

fn create_data_dir(dir: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            StartError(format!(
                "--data-dir {}: cannot create it: {e}",
                dir.display()
            ))
        })
}

/// This host's name, the default node name (k0s names nodes after the host).
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
}

/// The InternalIP of this daemon's own node, or why it is unknown.
fn own_internal_ip(kube: &kube::Client, node_name: Option<&str>) -> Result<IpAddr, String> {
    let name = node_name.ok_or("the host name is unknown and --node-name is not set")?;
    let node = kube
        .get_node(name)
        .map_err(|e| format!("node {name:?}: {e}; set --node-name or --bind-address"))?;
    let ip = node
        .internal_ip
        .ok_or_else(|| format!("node {name:?} has no InternalIP address"))?;
    ip.parse()
        .map_err(|_| format!("node {name:?} has an InternalIP that is not an IP address"))
}
