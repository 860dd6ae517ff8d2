//! `joinery serve`: turns a validated [`Config`] into a running daemon.
//!
//! Three steps. `build`: the Kubernetes client, the bind address (`bind.rs`: given,
//! k0s's API address, or loopback first and the node's InternalIP once known), the TLS
//! certificate (and its pin, which joining hosts use), the auth stores (nothing read
//! yet), the listeners. `start_background`: the cache's watch threads, the drain worker,
//! the bundle-cache warm-up, the loading of the password hash and signing key. `run`:
//! serve until SIGTERM, then stop and join every thread (one shutdown handle stops the
//! servers and the background threads' waits). The daemon listens before Kubernetes has
//! answered anything: `/v1/health` answers at once, and `/v1/ready` says not ready until
//! logins can be served.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

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
    let background = start_background(&built.ctx, &built.shutdown)?;
    run(built, background)
}

/// What [`build`] makes: the shared context and the bound (not yet serving) listeners,
/// which share one shutdown handle.
struct Built {
    ctx: Arc<Context>,
    server: http::Server,
    socket: Option<(http::Server, std::path::PathBuf)>,
    shutdown: http::ShutdownHandle,
    local_addr: SocketAddr,
    pin: String,
    cert_path: std::path::PathBuf,
    /// The InternalIP listener to add once the node is known (no `--bind-address`).
    internal_ip: Option<crate::bind::InternalIp>,
}

/// The data dir, the Kubernetes client, the bind address, the TLS identity, the auth
/// stores and the join service, then the listeners. Reads nothing from Kubernetes.
fn build(cfg: &Config) -> Result<Built, StartError> {
    create_data_dir(&cfg.data_dir)?;
    let kube = kube_client(&cfg.kube, cfg.kube_timeout)?;
    log::info("kubernetes api", &[("server", kube.server().into())]);

    let node_name = cfg.node_name.clone().or_else(hostname);
    let plan = crate::bind::Plan::new(cfg);
    let bind_ip = plan.first();

    let cert_path = match &cfg.tls_cert {
        Some(p) => p.clone(),
        None => tls::pair_paths(&cfg.data_dir).0,
    };
    let identity = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => tls::load(cert, key),
        _ => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            names.extend(node_name.clone());
            names.extend(plan.certificate_addresses().iter().map(|ip| ip.to_string()));
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
    // One handle stops both servers (SIGTERM is routed to it in `run`).
    let shutdown = server.shutdown_handle();
    let socket = match &cfg.socket {
        None => None,
        Some(path) => Some((
            bind_socket(path, &limits)?.sharing_shutdown(&shutdown),
            path.clone(),
        )),
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
            bind_ip: plan.advertised(),
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
    let internal_ip =
        (plan == crate::bind::Plan::LoopbackThenInternalIp).then(|| crate::bind::InternalIp {
            kube: ctx.kube.clone(),
            node_name: ctx.server.node_name.clone(),
            tls: identity.config.clone(),
            limits,
        });
    Ok(Built {
        ctx,
        server,
        socket,
        shutdown,
        local_addr,
        pin: identity.pin,
        cert_path,
        internal_ip,
    })
}

/// The threads the daemon owns besides the servers; [`Background::stop`] ends and
/// joins every one.
struct Background {
    cache: crate::cache::Threads,
    drain_worker: crate::lifecycle::WorkerHandle,
    /// Loads the password hash and signing key; ends once both are read, or at once on
    /// shutdown (its pause between retries waits on the shutdown handle).
    auth_load: JoinHandle<()>,
    /// The bundle cache warm-up and the flag that makes it give up at its next step.
    bundle_cache: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
}

impl Background {
    /// Stop and join every background thread. The drain worker goes first: it gives
    /// up its Leases so another controller's joinery carries on at once.
    fn stop(self) {
        if let Some((_, stop)) = &self.bundle_cache {
            stop.store(true, Ordering::Relaxed);
        }
        self.drain_worker.shutdown();
        self.cache.stop();
        let _ = self.auth_load.join();
        if let Some((thread, _)) = self.bundle_cache {
            let _ = thread.join();
        }
    }
}

/// The cache's reflectors, the drain worker, the bundle cache warm-up and the loading
/// of the password hash and signing key (retried until both are read): each owned by
/// the returned [`Background`], which stops them after the servers.
fn start_background(
    ctx: &Arc<Context>,
    shutdown: &http::ShutdownHandle,
) -> Result<Background, StartError> {
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| StartError(format!("cannot start the {name} thread: {e}")))
    };
    let bundle_cache = match &ctx.join {
        None => None,
        Some(_) => {
            // Compress and hash the artifacts once, so joins are served from cache (the
            // cache only ever holds complete, renamed files).
            let (warm, stop) = (ctx.clone(), Arc::new(AtomicBool::new(false)));
            let flag = stop.clone();
            let thread = spawn(
                "bundle-cache",
                Box::new(move || {
                    if let Some(j) = &warm.join {
                        j.warm_cache(&flag);
                    }
                }),
            )?;
            Some((thread, stop))
        }
    };
    let (auth, stop) = (ctx.clone(), shutdown.clone());
    let auth_load = spawn("auth-load", Box::new(move || load_auth(&auth, &stop)))?;
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
        auth_load,
        bundle_cache,
    })
}

/// Read the password hash and the signing key (creating it if absent) until both are
/// loaded, backing off from 0.5 s to 10 s; logins wait for them, `/v1/ready` says so.
/// Ends at once when `shutdown` is requested.
fn load_auth(ctx: &Context, shutdown: &http::ShutdownHandle) {
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
        if shutdown.wait_for(pause) {
            return;
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(10));
    }
}

/// Serve until SIGTERM/SIGINT; then stop both servers (each ends open waits and
/// streams through [`Handler::shutting_down`](http::Handler::shutting_down) and waits
/// for its workers), join the local socket's thread and every background thread, and
/// return.
fn run(built: Built, background: Background) -> Result<(), StartError> {
    let Built {
        ctx,
        server,
        socket,
        shutdown,
        local_addr,
        pin,
        cert_path,
        internal_ip,
    } = built;
    http::install_signal_handlers(shutdown.clone())
        .map_err(|e| StartError(format!("cannot install signal handlers: {e}")))?;
    let api = Arc::new(Api::new(ctx));
    // The local socket runs on its own thread; it shares the TLS server's shutdown
    // handle, so both stop on SIGTERM, SIGINT, or when either stops.
    let local = match socket {
        None => {
            log::info("local socket off (--socket '')", &[]);
            None
        }
        Some((sock, path)) => Some(start_socket(sock, &path, api.clone())?),
    };
    log::info(
        "listening",
        &[
            ("address", format!("https://{local_addr}").into()),
            ("pin", pin.into()),
            ("certificate", cert_path.display().to_string().into()),
        ],
    );
    let internal_ip = match internal_ip {
        None => None,
        Some(l) => Some(
            l.start(local_addr.port(), api.clone(), &shutdown)
                .map_err(|e| StartError(format!("cannot start the internal-ip thread: {e}")))?,
        ),
    };
    let served = server.run(api);
    // `run` may fail before serving: make sure the other listeners stop too.
    shutdown.shutdown();
    if let Some(thread) = local {
        let _ = thread.join();
    }
    if let Some(listener) = internal_ip {
        listener.stop();
    }
    // Whether or not the server ended cleanly.
    background.stop();
    served.map_err(|e| StartError(format!("server stopped: {e}")))?;
    // Every thread this daemon started has been joined: the count (1, this one, unless
    // the grace period abandoned a connection) lets a test and an operator check it.
    log::info("stopped", &[("threads", live_threads().into())]);
    Ok(())
}

/// Threads alive in this process, from /proc/self/task (None where it is not mounted).
fn live_threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
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

/// Serves the bound local socket on its own thread (the caller joins it) until its
/// shutdown handle, shared with the TLS server, is triggered.
fn start_socket(
    server: http::Server,
    path: &std::path::Path,
    api: Arc<Api>,
) -> Result<JoinHandle<()>, StartError> {
    let thread = std::thread::Builder::new()
        .name("socket-server".into())
        .spawn(move || {
            if let Err(e) = server.run(api) {
                log::error("local socket stopped", &[("error", e.to_string().into())]);
            }
        })
        .map_err(|e| StartError(format!("cannot start the socket-server thread: {e}")))?;
    log::info(
        "local socket ready",
        &[("path", path.display().to_string().into())],
    );
    Ok(thread)
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
