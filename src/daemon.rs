//! `joinery serve`: turns a validated [`Config`] into a running daemon.
//!
//! Three steps. `build`: the Kubernetes client, the bind address (the node's
//! InternalIP when it can be found), the TLS certificate (and its pin, which joining
//! hosts use), the auth stores (nothing read yet), the listeners. `start_background`: the
//! cache's watch threads, the drain worker, the loading of the password hash and signing
//! key. `run`: serve until SIGTERM. The daemon listens before Kubernetes has answered
//! anything (except the node lookup when `--bind-address` is not given): `/v1/health`
//! answers at once, and `/v1/ready` says not ready until logins can be served.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::api::{Api, Context, ServerInfo};
use crate::auth::apitoken::ApiTokens;
use crate::auth::refresh::RefreshTokens;
use crate::auth::store::{PasswordHashes, SigningKeys};
use crate::cache::Cache;
use crate::config::{Config, KubeSource};
use crate::http::{self, tls};
use crate::join::seed::SeedSigner;
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

/// Runs the daemon until SIGTERM or SIGINT: build everything and bind the listeners,
/// start the background threads, then serve.
pub fn serve(cfg: Config) -> Result<(), StartError> {
    http::install_panic_hook();
    let built = build(&cfg)?;
    let background = start_background(&built.ctx)?;
    run(built, background)
}

/// What [`build`] makes: the shared context and the bound (not yet serving) listeners.
struct Built {
    ctx: Arc<Context>,
    server: http::Server,
    socket: Option<(http::Server, std::path::PathBuf)>,
    local_addr: SocketAddr,
    pin: String,
    cert_path: std::path::PathBuf,
}

/// The data dir, the Kubernetes client, the bind address, the TLS identity, the auth
/// stores and the join service, then the listeners. Reads nothing from Kubernetes except
/// this node's InternalIP when no `--bind-address` is given.
fn build(cfg: &Config) -> Result<Built, StartError> {
    create_data_dir(&cfg.data_dir)?;
    let kube = kube_client(&cfg.kube, cfg.kube_timeout)?;
    log::info("kubernetes api", &[("server", kube.server().into())]);

    let node_name = cfg.node_name.clone().or_else(hostname);
    let bind_ip = bind_address(cfg, &kube, node_name.as_deref());

    let cert_path = match &cfg.tls_cert {
        Some(p) => p.clone(),
        None => tls::pair_paths(&cfg.data_dir).0,
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

    // Nothing is read from Kubernetes here: the Secrets are loaded in the background
    // once the daemon listens (see `start_background`).
    let passwords = match &cfg.password_hash_file {
        Some(path) => PasswordHashes::from_file(path).map_err(StartError)?,
        None => PasswordHashes::from_secret(kube.clone(), &cfg.namespace),
    };
    let keys = match &cfg.signing_key_file {
        Some(path) => SigningKeys::from_file(path).map_err(StartError)?,
        None => SigningKeys::from_secret(kube.clone(), &cfg.namespace),
    };

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
                SeedSigner::new(identity.key.clone(), &identity.cert_der).map_err(StartError)?,
            )
            .map_err(StartError)?,
        ),
    };

    let limits = http::Limits {
        max_connections: cfg.max_connections,
        max_connections_per_address: cfg.max_connections_per_address,
        min_transfer_rate: cfg.min_transfer_rate,
        idle_timeout: cfg.idle_timeout,
        grace: cfg.shutdown_grace,
        ..http::Limits::default()
    };
    let addr = SocketAddr::new(bind_ip, cfg.api_port);
    let server = http::Server::bind(addr, identity.config.clone(), limits.clone())
        .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))?;
    let local_addr = server
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the listening address: {e}")))?;
    let cache = Cache::new(cfg.max_waiters);
    let lifecycle = crate::lifecycle::Lifecycle::new(
        kube.clone(),
        cache.clone(),
        &cfg.namespace,
        node_name.as_deref(),
    )
    .map_err(|e| StartError(format!("cannot choose this daemon's Lease identity: {e}")))?;
    let socket = match &cfg.socket {
        None => None,
        Some(path) => Some((bind_socket(path, &limits)?, path.clone())),
    };
    let mut stats = vec![server.stats()];
    stats.extend(socket.as_ref().map(|(s, _)| s.stats()));
    let ctx = Arc::new(Context {
        lifecycle,
        api_tokens: ApiTokens::new(kube.clone(), &cfg.namespace),
        refresh: RefreshTokens::new(kube.clone(), &cfg.namespace),
        kube,
        cache,
        passwords,
        keys,
        server: ServerInfo {
            bind_ip,
            port: local_addr.port(),
            node_name,
            pin: identity.pin.clone(),
            self_signed: cfg.tls_cert.is_none(),
            stats,
            socket_uid: cfg.socket_uid,
        },
        join,
        throttle: crate::auth::throttle::Throttle::new(crate::auth::throttle::Policy {
            failures: cfg.login_failures,
            ..Default::default()
        }),
    });
    Ok(Built {
        ctx,
        server,
        socket,
        local_addr,
        pin: identity.pin,
        cert_path,
    })
}

/// The address to listen on: `--bind-address`, else this node's InternalIP, else all.
fn bind_address(cfg: &Config, kube: &kube::Client, node_name: Option<&str>) -> IpAddr {
    // The node lookup costs an API call (and a timeout while Kubernetes is down): only
    // make it when no address was configured.
    if let Some(ip) = cfg.bind_address {
        log::info(
            "bind address from configuration",
            &[("address", ip.to_string().into())],
        );
        return ip;
    }
    match own_internal_ip(kube, node_name) {
        Ok(ip) => {
            log::info(
                "bind address is this node's InternalIP",
                &[("address", ip.to_string().into())],
            );
            ip
        }
        Err(why) => {
            log::warn(
                "listening on all addresses: this node's InternalIP is unknown",
                &[("reason", why.into())],
            );
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    }
}

/// The threads the daemon owns besides the servers.
struct Background {
    cache: crate::cache::Threads,
    drain_worker: crate::lifecycle::WorkerHandle,
}

/// The cache's reflectors, the drain worker, and two threads that end by themselves
/// (the process may exit while they run): the bundle cache warm-up and the loading of
/// the password hash and signing key, retried until both are read.
fn start_background(ctx: &Arc<Context>) -> Result<Background, StartError> {
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map(drop)
            .map_err(|e| StartError(format!("cannot start the {name} thread: {e}")))
    };
    if ctx.join.is_some() {
        // Compress and hash the artifacts once, so joins are served from cache (the
        // cache only ever holds complete, renamed files).
        let warm = ctx.clone();
        spawn(
            "bundle-cache",
            Box::new(move || {
                if let Some(j) = &warm.join {
                    j.warm_cache();
                }
            }),
        )?;
    }
    let auth = ctx.clone();
    spawn("auth-load", Box::new(move || load_auth(&auth)))?;
    let cache = ctx
        .cache
        .start(&ctx.kube)
        .map_err(|e| StartError(format!("cannot start the cache threads: {e}")))?;
    // Drains in progress (on any controller, before any restart) are carried on by it.
    let drain_worker = crate::lifecycle::WorkerHandle::start(ctx.lifecycle.clone())
        .map_err(|e| StartError(format!("cannot start the drain worker: {e}")))?;
    Ok(Background {
        cache,
        drain_worker,
    })
}

/// Read the password hash and the signing key (creating it if absent) until both are
/// loaded, backing off from 0.5 s to 10 s; logins wait for them, `/v1/ready` says so.
fn load_auth(ctx: &Context) {
    let mut pause = std::time::Duration::from_millis(500);
    loop {
        let key = ctx.keys.get().map(drop);
        let hash = ctx.passwords.current().map(drop);
        match (key, hash) {
            (Ok(()), Ok(())) => {
                log::info("password hash and signing key loaded", &[]);
                return;
            }
            (k, h) => {
                let why: Vec<String> = [k.err(), h.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect();
                log::warn(
                    "password hash or signing key not loaded yet; will retry",
                    &[("reason", why.join("; ").into())],
                );
            }
        }
        if ctx.lifecycle.stopping() {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_secs(10));
    }
}

/// Serve until SIGTERM/SIGINT; then end waiters and streams, stop the local socket,
/// the cache and the drain worker, and return.
fn run(built: Built, background: Background) -> Result<(), StartError> {
    let Built {
        ctx,
        server,
        socket,
        local_addr,
        pin,
        cert_path,
    } = built;
    let tls_shutdown = server.shutdown_handle();
    http::install_signal_handlers(tls_shutdown.clone())
        .map_err(|e| StartError(format!("cannot install signal handlers: {e}")))?;
    // On shutdown, open waits and node streams end at once (cleanly), so the server's
    // grace period is not spent on them.
    let cache = ctx.cache.clone();
    let watched = tls_shutdown.clone();
    std::thread::Builder::new()
        .name("waiters-follower".into())
        .spawn(move || {
            watched.wait();
            cache.release_waiters();
        })
        .map_err(|e| StartError(format!("cannot start the waiters-follower thread: {e}")))?;
    let api = Arc::new(Api::new(ctx));
    // The local socket runs on its own thread and stops when the TLS server does (on
    // SIGTERM, SIGINT, or if it fails); both are joined before `serve` returns.
    let local = match socket {
        None => {
            log::info("local socket off (--socket '')", &[]);
            None
        }
        Some((sock, path)) => Some(start_socket(sock, &path, api.clone(), &tls_shutdown)?),
    };
    log::info(
        "listening",
        &[
            ("address", format!("https://{local_addr}").into()),
            ("pin", pin.into()),
            ("certificate", cert_path.display().to_string().into()),
        ],
    );
    let served = server.run(api);
    // `run` requests shutdown itself on return; this makes sure the socket follows.
    tls_shutdown.shutdown();
    if let Some(threads) = local {
        threads.join();
    }
    // Stop the drain worker whether or not the server ended cleanly: it gives up its
    // Leases so another controller's joinery carries on at once.
    background.drain_worker.shutdown();
    background.cache.stop();
    served.map_err(|e| StartError(format!("server stopped: {e}")))?;
    log::info("stopped", &[]);
    Ok(())
}

/// The Kubernetes client for `source`, with `timeout` per call (connect at most 3 s).
pub fn kube_client(
    source: &KubeSource,
    timeout: std::time::Duration,
) -> Result<kube::Client, StartError> {
    let source = match source {
        KubeSource::Kubeconfig(p) => kube::Source::Kubeconfig(p.clone()),
        KubeSource::InCluster => kube::Source::InCluster,
    };
    let timeouts = kube::Timeouts {
        connect: timeout.min(std::time::Duration::from_secs(3)),
        request: timeout,
    };
    kube::Client::new(&source, timeouts).map_err(|e| StartError(e.to_string()))
}

/// The local socket's server thread and the thread that stops it with the TLS server.
struct LocalSocket {
    server: std::thread::JoinHandle<()>,
    follower: std::thread::JoinHandle<()>,
}

impl LocalSocket {
    fn join(self) {
        let _ = self.follower.join();
        let _ = self.server.join();
    }
}

/// Binds the local socket (making its directory 0755 if missing) and serves `api` on it.
/// Binds the local socket (creating its directory 0755 when missing).
fn bind_socket(path: &std::path::Path, limits: &http::Limits) -> Result<http::Server, StartError> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |what: String| {
        StartError(format!(
            "--socket {}: {what}; give another path, or --socket '' to turn it off",
            path.display()
        ))
    };
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    http::Server::bind_unix(path, limits.clone()).map_err(|e| fail(format!("{e}")))
}

/// Serves the bound local socket on its own thread until the TLS server stops.
fn start_socket(
    server: http::Server,
    path: &std::path::Path,
    api: Arc<Api>,
    tls_shutdown: &http::ShutdownHandle,
) -> Result<LocalSocket, StartError> {
    let own = server.shutdown_handle();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| StartError(format!("cannot start the {name} thread: {e}")))
    };
    let watched = tls_shutdown.clone();
    let stop = own.clone();
    let follower = spawn(
        "socket-follower",
        Box::new(move || {
            watched.wait();
            stop.shutdown();
        }),
    )?;
    let server = spawn(
        "socket-server",
        Box::new(move || {
            if let Err(e) = server.run(api) {
                log::error("local socket stopped", &[("error", e.to_string().into())]);
            }
        }),
    )?;
    log::info(
        "local socket ready",
        &[("path", path.display().to_string().into())],
    );
    Ok(LocalSocket { server, follower })
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
