//! The listener, the accept loop, the bounded worker pool, and graceful shutdown.
//!
//! One thread (the caller of [`Server::run`]) accepts; connections go to a pool of at most
//! `Limits::max_connections` small-stack worker threads, created on demand, reused, and
//! retired after a minute idle. Accept errors (EMFILE and friends) are logged at most once
//! a second and backed off from 10 ms doubling to 1 s; they never end the loop.
//!
//! Fair slots (so one client cannot take them all; issue 12 measured 512 idle TCP
//! connections from one address shutting everyone else out):
//! - one address (an IPv6 /64) holds at most `Limits::max_connections_per_address`;
//! - connections still in their TLS handshake hold at most three quarters of the slots
//!   ([`handshake_cap`]); when those are taken, a new connection takes the slot of the
//!   oldest one still handshaking after [`EVICT_AFTER`] (its socket is shut down), so
//!   sockets that never speak cannot keep a client that completes its handshake out,
//!   while a connection that completed one is never evicted;
//! - the handshake deadline of a new connection shrinks as handshake slots run out
//!   ([`handshake_budget`]), down to [`MIN_HANDSHAKE`], so idle sockets are shed fast;
//! - every refused connection goes to one "busy" thread that waits (poll, many at once)
//!   for its TLS ClientHello, answers 503 `server_busy` and closes: a refusal is a clean
//!   503, never a reset, unless the client sends nothing within [`BUSY_DEADLINE`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::conn::{self, Ctx, Transport, UnixTransport};
use super::parse::Reject;
use super::response::{reject_response, write_response, ReplyMode};
use super::{Handler, Limits, ShutdownHandle};
use crate::addr::share_key;
use crate::sys::{self, Wake};

/// A worker with nothing to do for this long exits, returning its stack.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// Refused connections handed from the accept loop to the busy thread at once.
const BUSY_QUEUE: usize = 256;
/// Refused connections the busy thread waits on at once; past it the oldest (a client
/// that has sent nothing for longest) is closed without an answer.
const BUSY_WAITING: usize = 512;
/// How long a refused connection has to start its TLS handshake before it is closed.
const BUSY_DEADLINE: Duration = Duration::from_secs(2);
/// The budget for the handshake and the 503 once a refused client has spoken.
const BUSY_ANSWER: Duration = Duration::from_millis(500);
/// A connection still in its handshake this long may lose its slot to a new one when
/// every handshake slot is taken (a real client's handshake takes one round trip).
pub(crate) const EVICT_AFTER: Duration = Duration::from_millis(500);
/// The shortest handshake deadline a new connection is given under pressure.
pub(crate) const MIN_HANDSHAKE: Duration = Duration::from_secs(1);

enum Listener {
    Tls(TcpListener, Arc<ServerConfig>),
    Unix(UnixListener, PathBuf),
}

/// An accepted connection waiting for (or being served by) a worker.
enum Job {
    /// The socket, the peer, the TLS config, and the handshake's deadline and id in
    /// the pool's handshake table (both set on admission).
    Tls(TcpStream, SocketAddr, Arc<ServerConfig>, Instant, u64),
    Unix(UnixStream),
}

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// All `max_connections` slots are taken (or no worker thread could be made).
    Full,
    /// Its address already holds `max_connections_per_address`.
    PerAddress,
    /// The slots connections in their handshake may hold are taken.
    Handshakes,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Refused::Full => "all connection slots taken",
            Refused::PerAddress => "per-address connection cap",
            Refused::Handshakes => "handshake slots taken",
        }
    }
}

/// An HTTP/1.1 server bound to a TLS port or a Unix socket; call [`run`](Server::run).
pub struct Server {
    listener: Listener,
    limits: Limits,
    shutdown: ShutdownHandle,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Listen on `addr` for HTTPS with `tls`.
    pub fn bind(addr: SocketAddr, tls: Arc<ServerConfig>, limits: Limits) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        Server::new(Listener::Tls(listener, tls), limits)
    }

    /// Listen on a Unix socket at `path` for plain HTTP (local clients; each request's
    /// peer carries the client's uid). A stale socket file at `path` is replaced, but one
    /// that a live server still answers on is not (AddrInUse); the new one is made mode
    /// 0600 so only our user (and root) can connect.
    pub fn bind_unix(path: &Path, limits: Limits) -> io::Result<Server> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use by another running server", path.display()),
                    ));
                }
                std::fs::remove_file(path)?
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Server::new(Listener::Unix(listener, path.to_path_buf()), limits)
    }

    fn new(listener: Listener, limits: Limits) -> io::Result<Server> {
        Ok(Server {
            listener,
            limits,
            shutdown: ShutdownHandle::new()?,
            pool: Arc::new(Pool::default()),
        })
    }

    /// The bound TCP address (useful after binding port 0). Unix servers have none.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Listener::Tls(l, _) => l.local_addr(),
            Listener::Unix(..) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a Unix-socket server has no TCP address",
            )),
        }
    }

    /// A handle that makes [`run`](Server::run) stop accepting and return.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// This server stops on `handle` instead of its own: servers sharing one handle
    /// stop together (the daemon's TLS and Unix-socket servers, on SIGTERM).
    pub fn sharing_shutdown(mut self, handle: &ShutdownHandle) -> Server {
        self.shutdown = handle.clone();
        self
    }

    /// Live counters, usable while `run` owns the server (tests, metrics).
    pub fn stats(&self) -> Stats {
        Stats(self.pool.clone())
    }

    /// Accept and serve until shutdown is requested, then stop accepting, close idle
    /// keep-alive connections, tell the handler ([`Handler::shutting_down`]), and
    /// return once in-flight requests have finished and every thread this server
    /// started has ended, or `Limits::grace` has passed (stragglers are left to the
    /// process exit, with a warning).
    pub fn run(self, handler: Arc<dyn Handler>) -> io::Result<()> {
        let Server {
            listener,
            limits,
            shutdown,
            pool,
        } = self;
        let listen_fd = match &listener {
            Listener::Tls(l, _) => {
                l.set_nonblocking(true)?;
                l.as_raw_fd()
            }
            Listener::Unix(l, _) => {
                l.set_nonblocking(true)?;
                l.as_raw_fd()
            }
        };
        let ctx = Arc::new(Ctx {
            handler,
            limits: limits.clone(),
            shutdown: shutdown.clone(),
        });

        let (busy_tx, busy_rx) = sync_channel::<Job>(BUSY_QUEUE);
        let busy_limits = limits.clone();
        let busy = thread::Builder::new()
            .name("http-busy".into())
            .stack_size(limits.worker_stack)
            .spawn(move || busy_loop(busy_rx, &busy_limits))?;

        let mut backoff = AcceptBackoff::default();
        let mut busy_log = RateLimit::default();
        let shutdown_fd = shutdown.fd();
        let accept = || -> io::Result<Job> {
            match &listener {
                Listener::Tls(l, tls) => {
                    let (s, addr) = l.accept()?;
                    // Accepted sockets do not inherit O_NONBLOCK on Linux; be explicit.
                    s.set_nonblocking(false)?;
                    let _ = s.set_nodelay(true);
                    // The handshake deadline is set on admission.
                    Ok(Job::Tls(s, addr, tls.clone(), Instant::now(), 0))
                }
                Listener::Unix(l, _) => {
                    let (s, _) = l.accept()?;
                    s.set_nonblocking(false)?;
                    Ok(Job::Unix(s))
                }
            }
        };
        let wait = |w: WaitFor| -> bool {
            let got = match w {
                WaitFor::Readable => sys::wait_readable(Some(listen_fd), shutdown_fd, None),
                WaitFor::Sleep(d) => sys::wait_readable(None, shutdown_fd, Some(d)),
            };
            got == Wake::Shutdown
        };
        let mut accept = accept;
        let mut wait = wait;
        while let Some(job) = accept_next(&mut accept, &mut wait, &mut backoff) {
            if let Err((job, why)) = pool.admit(job, &ctx) {
                if let Some(skipped) = busy_log.ready() {
                    let remote = match &job {
                        Job::Tls(_, addr, ..) => addr.ip().to_string(),
                        Job::Unix(_) => "unix".into(),
                    };
                    crate::log::warn(
                        "connection refused; answering 503",
                        &[
                            ("reason", why.as_str().into()),
                            ("remote", remote.into()),
                            ("maxConnections", limits.max_connections.into()),
                            (
                                "maxConnectionsPerAddress",
                                limits.max_connections_per_address.into(),
                            ),
                            ("suppressed", skipped.into()),
                        ],
                    );
                }
                // A full queue means we are flooded: close without an answer.
                let _ = busy_tx.try_send(job);
            }
        }

        shutdown.shutdown();
        if let Listener::Unix(_, path) = &listener {
            let _ = std::fs::remove_file(path);
        }
        drop(listener);
        // The busy thread ends within a tick of losing its sender.
        drop(busy_tx);
        let _ = busy.join();
        pool.close();
        ctx.handler.shutting_down();
        pool.wait_drained(limits.grace);
        Ok(())
    }
}

/// Live server counters.
#[derive(Clone)]
pub struct Stats(Arc<Pool>);

impl Stats {
    /// Connections queued for or held by a worker.
    pub fn active_connections(&self) -> usize {
        self.0.lock().active
    }
    /// Connections admitted since start.
    pub fn accepted(&self) -> u64 {
        self.0.lock().accepted
    }
    /// Connections turned away because every slot was taken.
    pub fn rejected_busy(&self) -> u64 {
        self.0.lock().rejected
    }
    /// Worker threads alive (busy or idle): zero once `run` has returned.
    #[cfg(test)]
    pub(crate) fn workers(&self) -> usize {
        self.0.lock().workers
    }
}

#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a job is queued or the pool closes.
    work: Condvar,
    /// Signalled when `active` or, once closing, `workers` reaches zero.
    drained: Condvar,
}

#[derive(Default)]
struct PoolState {
    pending: VecDeque<Job>,
    active: usize,
    workers: usize,
    closing: bool,
    accepted: u64,
    rejected: u64,
    /// Admitted TCP connections whose TLS handshake has not ended yet, by id: a clone
    /// of the socket (to shut it down on eviction) and when it was admitted.
    handshakes: HashMap<u64, (TcpStream, Instant)>,
    next_handshake: u64,
    /// Admitted TCP connections per address key ([`share_key`]); an entry goes when
    /// its count reaches zero, so this never outgrows `active`.
    per_address: HashMap<IpAddr, usize>,
    /// The worker threads by id, joined once the pool has drained. A worker retiring
    /// while idle drops its own handle (detaching itself), so its stack is freed as it
    /// exits rather than kept for a join.
    handles: HashMap<u64, thread::JoinHandle<()>>,
    next_worker: u64,
}

impl PoolState {
    /// Shuts down the connection longest in its handshake, if it has been for at least
    /// [`EVICT_AFTER`]; its worker's next read fails and the slot is freed. True when
    /// one was evicted (its handshake slot is free now; its connection slot soon).
    fn evict_oldest_handshake(&mut self) -> bool {
        let now = Instant::now();
        let oldest = self
            .handshakes
            .iter()
            .filter(|(_, (_, since))| now.saturating_duration_since(*since) >= EVICT_AFTER)
            .min_by_key(|(_, (_, since))| *since)
            .map(|(id, _)| *id);
        let Some(id) = oldest else {
            return false;
        };
        if let Some((sock, _)) = self.handshakes.remove(&id) {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        true
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing panics while holding this lock, but never let poison stop the server.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `job` for a worker, starting one if every worker is busy. `Err` gives the
    /// job back when it may not have a slot (see [`Refused`]).
    fn admit(self: &Arc<Self>, mut job: Job, ctx: &Arc<Ctx>) -> Result<(), (Job, Refused)> {
        let limits = &ctx.limits;
        let mut st = self.lock();
        let full = st.active >= limits.max_connections;
        let refused = match &job {
            Job::Tls(_, addr, ..) => {
                let held = st.per_address.get(&share_key(addr.ip())).copied();
                if held.unwrap_or(0) >= limits.max_connections_per_address {
                    Some(Refused::PerAddress)
                } else if (full || st.handshakes.len() >= handshake_cap(limits.max_connections))
                    && !st.evict_oldest_handshake()
                {
                    // (An evicted connection still counts in `active` until its worker
                    // notices, a moment later: the pool may run one over for that long.)
                    Some(if full {
                        Refused::Full
                    } else {
                        Refused::Handshakes
                    })
                } else {
                    None
                }
            }
            Job::Unix(_) => full.then_some(Refused::Full),
        };
        if let Some(why) = refused {
            st.rejected += 1;
            return Err((job, why));
        }
        // Invariant: workers >= active, so every queued job has a worker coming for it.
        if st.workers <= st.active {
            let pool = self.clone();
            let ctx = ctx.clone();
            st.next_worker += 1;
            let id = st.next_worker;
            let spawned = thread::Builder::new()
                .name("http-worker".into())
                .stack_size(ctx.limits.worker_stack)
                .spawn(move || worker(pool, ctx, id));
            match spawned {
                // The worker cannot retire before this: it needs the lock held here.
                Ok(handle) => {
                    st.handles.insert(id, handle);
                }
                Err(e) => {
                    crate::log::error(
                        "cannot start a worker thread",
                        &[("error", e.to_string().into())],
                    );
                    st.rejected += 1;
                    return Err((job, Refused::Full));
                }
            }
            st.workers += 1;
        }
        if let Job::Tls(sock, addr, _, deadline, id) = &mut job {
            let budget = handshake_budget(
                limits.handshake_timeout,
                st.handshakes.len(),
                handshake_cap(limits.max_connections),
            );
            let now = Instant::now();
            *deadline = now + budget;
            st.next_handshake += 1;
            *id = st.next_handshake;
            // Without a clone the connection cannot be evicted, but it is served anyway.
            if let Ok(clone) = sock.try_clone() {
                st.handshakes.insert(*id, (clone, now));
            }
            *st.per_address.entry(share_key(addr.ip())).or_insert(0) += 1;
        }
        st.active += 1;
        st.accepted += 1;
        st.pending.push_back(job);
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    /// A connection's handshake ended (either way): its handshake slot is free.
    fn handshake_done(&self, id: u64) {
        self.lock().handshakes.remove(&id);
    }

    /// A TCP connection from `ip` ended.
    fn address_done(&self, ip: IpAddr) {
        let mut st = self.lock();
        let k = share_key(ip);
        if let Some(n) = st.per_address.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                st.per_address.remove(&k);
            }
        }
    }

    /// A worker thread ends (idle, or the pool closed).
    fn worker_done(&self, mut st: MutexGuard<'_, PoolState>) {
        st.workers -= 1;
        if st.workers == 0 {
            self.drained.notify_all();
        }
    }

    fn close(&self) {
        self.lock().closing = true;
        self.work.notify_all();
    }

    /// Waits (at most `grace`) until no connection is served and every worker thread
    /// has ended: after `close`, idle workers end at once and busy ones after their
    /// connection, so the pool's threads are its own to account for.
    fn wait_drained(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut st = self.lock();
        while st.active > 0 || st.workers > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                crate::log::warn(
                    "shutdown grace period over; abandoning in-flight connections",
                    &[("active", st.active.into()), ("workers", st.workers.into())],
                );
                return;
            }
            st = self
                .drained
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        // Every worker has said it is done; join them, so none is still on its way out
        // when the daemon says it has stopped.
        let handles = std::mem::take(&mut st.handles);
        drop(st);
        for h in handles.into_values() {
            let _ = h.join();
        }
    }
}

fn worker(pool: Arc<Pool>, ctx: Arc<Ctx>, id: u64) {
    loop {
        let job = {
            let mut st = pool.lock();
            loop {
                if let Some(job) = st.pending.pop_front() {
                    break job;
                }
                if st.closing {
                    return pool.worker_done(st);
                }
                let (guard, waited) = pool
                    .work
                    .wait_timeout(st, WORKER_IDLE)
                    .unwrap_or_else(|e| e.into_inner());
                st = guard;
                if waited.timed_out() && st.pending.is_empty() {
                    st.handles.remove(&id); // retiring while the pool goes on: nobody joins it
                    return pool.worker_done(st);
                }
            }
        };
        // Handler panics are caught closer in; this catches bugs in the server itself so
        // the slot is always given back.
        let tcp = match &job {
            Job::Tls(_, addr, _, _, id) => Some((addr.ip(), *id)),
            Job::Unix(_) => None,
        };
        let served = catch_unwind(AssertUnwindSafe(|| {
            serve_job(job, &ctx, &mut |id| pool.handshake_done(id))
        }));
        if served.is_err() {
            crate::log::error("connection worker panicked", &[]);
        }
        if let Some((ip, id)) = tcp {
            // Already gone unless serve_job panicked inside the handshake.
            pool.handshake_done(id);
            pool.address_done(ip);
        }
        let mut st = pool.lock();
        st.active -= 1;
        if st.active == 0 {
            pool.drained.notify_all();
        }
    }
}

/// Serves one connection; `handshake_over` is called once its TLS handshake has ended
/// (succeeded or not), to give the handshake slot back.
fn serve_job(job: Job, ctx: &Ctx, handshake_over: &mut dyn FnMut(u64)) {
    match job {
        Job::Tls(sock, addr, tls, deadline, id) => {
            let accepted = conn::tls_accept(tls, sock, deadline);
            handshake_over(id);
            if let Ok(mut t) = accepted {
                conn::serve(&mut t, &conn::tcp_peer(addr), ctx);
            }
        }
        Job::Unix(s) => {
            let peer = conn::unix_peer(&s);
            conn::serve(&mut UnixTransport(s, Default::default()), &peer, ctx);
        }
    }
}

/// Answers refused connections with 503 and closes them. Many wait at once (a poll over
/// their sockets): each is answered as soon as its TLS ClientHello arrives, within
/// [`BUSY_ANSWER`]; one that sends nothing for [`BUSY_DEADLINE`] is just closed, as is
/// the oldest when [`BUSY_WAITING`] are already waiting. Ends when the accept loop drops
/// the sender.
fn busy_loop(rx: Receiver<Job>, limits: &Limits) {
    let mut waiting: VecDeque<(Job, Instant)> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match rx.recv() {
                Ok(job) => waiting.push_back((job, Instant::now() + BUSY_DEADLINE)),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(job) => {
                    if waiting.len() >= BUSY_WAITING {
                        waiting.pop_front();
                    }
                    waiting.push_back((job, Instant::now() + BUSY_DEADLINE));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let fds: Vec<RawFd> = waiting.iter().map(|(job, _)| job_fd(job)).collect();
        // A short tick, so newly refused connections join the poll promptly.
        let ready = sys::poll_readable(&fds, BUSY_TICK);
        let now = Instant::now();
        let mut still = VecDeque::with_capacity(waiting.len());
        for ((job, deadline), ready) in waiting.into_iter().zip(ready) {
            // Only a client that has not spoken by its deadline is closed unanswered: one
            // that spoke in time but waited while this thread answered others (a burst on
            // a loaded host) still gets its 503.
            if !ready {
                if deadline > now {
                    still.push_back((job, deadline));
                }
                continue;
            }
            let answer_by = Instant::now() + BUSY_ANSWER;
            match job {
                Job::Tls(sock, _, tls, ..) => {
                    // With the handshake the client sees a real 503, not a TLS error.
                    if let Ok(mut t) = conn::tls_accept(tls, sock, answer_by) {
                        busy_answer(&mut t, limits);
                    }
                }
                Job::Unix(s) => busy_answer(&mut UnixTransport(s, Default::default()), limits),
            }
        }
        waiting = still;
    }
}

/// How often the busy thread looks for newly refused connections while others wait.
const BUSY_TICK: Duration = Duration::from_millis(20);

fn job_fd(job: &Job) -> RawFd {
    match job {
        Job::Tls(s, ..) => s.as_raw_fd(),
        Job::Unix(s) => s.as_raw_fd(),
    }
}

/// The most connections that may be in their TLS handshake at once: three quarters of
/// the slots (all of them when there are fewer than four), so a quarter stays for
/// connections that completed a handshake.
pub(crate) fn handshake_cap(max_connections: usize) -> usize {
    (max_connections - max_connections / 4).max(1)
}

/// The handshake deadline of a new connection when `handshaking` of `cap` handshake
/// slots are taken: the full `timeout` while at most half are, then shrinking in step
/// with the free slots, to [`MIN_HANDSHAKE`] (or `timeout`, if shorter) at the last one.
pub(crate) fn handshake_budget(timeout: Duration, handshaking: usize, cap: usize) -> Duration {
    let half = cap / 2;
    if handshaking <= half {
        return timeout;
    }
    let free = cap.saturating_sub(handshaking);
    let scaled = timeout.mul_f64(free as f64 / (cap - half).max(1) as f64);
    scaled.max(MIN_HANDSHAKE.min(timeout))
}

fn busy_answer<T: Transport>(t: &mut T, limits: &Limits) {
    if t.set_write_timeout(Some(BUSY_ANSWER)).is_err() {
        return;
    }
    let resp = reject_response(&Reject::Busy, limits);
    if write_response(t, resp, ReplyMode::CLOSE).is_ok() {
        t.finish();
        conn::linger(t);
    }
}

/// What the accept loop waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitFor {
    /// The listener to become readable.
    Readable,
    /// A back-off pause.
    Sleep(Duration),
}

/// Accept the next connection. `wait` blocks as asked and returns true when shutdown is
/// requested, which ends the loop (`None`). Errors never end it: per-connection errors
/// are retried at once, resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) after a
/// back-off, because the pending connection keeps the listener readable and an immediate
/// retry would spin.
pub(crate) fn accept_next<T>(
    accept: &mut impl FnMut() -> io::Result<T>,
    wait: &mut impl FnMut(WaitFor) -> bool,
    backoff: &mut AcceptBackoff,
) -> Option<T> {
    loop {
        if wait(WaitFor::Readable) {
            return None;
        }
        match accept() {
            Ok(conn) => {
                backoff.reset();
                return Some(conn);
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                // The client gave up before we accepted: nothing wrong with us.
                io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => {
                    backoff.note(&e)
                }
                _ if e.raw_os_error() == Some(libc::EPROTO)
                    || e.raw_os_error() == Some(libc::EPERM) =>
                {
                    backoff.note(&e)
                }
                _ => {
                    backoff.note(&e);
                    let pause = backoff.next_pause();
                    if wait(WaitFor::Sleep(pause)) {
                        return None;
                    }
                }
            },
        }
    }
}

/// Back-off and log rate limit for accept errors.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    pause: Option<Duration>,
    log: RateLimit,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.pause = None;
    }

    /// The next pause: 10 ms, doubling, capped at 1 s.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let next = match self.pause {
            None => Self::FIRST,
            Some(p) => (p * 2).min(Self::MAX),
        };
        self.pause = Some(next);
        next
    }

    fn note(&mut self, e: &io::Error) {
        if let Some(skipped) = self.log.ready() {
            crate::log::warn(
                "accept failed",
                &[
                    ("error", e.to_string().into()),
                    ("suppressed", skipped.into()),
                ],
            );
        }
    }
}

/// At most one log line per second; counts what it suppressed in between.
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimit {
    /// `Some(suppressed since the last line)` when a line may be written now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn err(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    /// Run `accept_next` over a scripted sequence of accept results, recording pauses.
    fn drive(
        script: &mut VecDeque<io::Result<u32>>,
        backoff: &mut AcceptBackoff,
        shutdown_on_sleep: bool,
    ) -> (Option<u32>, Vec<Duration>) {
        let sleeps = RefCell::new(Vec::new());
        let mut accept = || script.pop_front().expect("script ran out");
        let mut wait = |w: WaitFor| match w {
            WaitFor::Readable => false,
            WaitFor::Sleep(d) => {
                sleeps.borrow_mut().push(d);
                shutdown_on_sleep
            }
        };
        let got = accept_next(&mut accept, &mut wait, backoff);
        (got, sleeps.into_inner())
    }

    #[test]
    fn emfile_backs_off_doubling_to_a_second_and_never_ends_the_loop() {
        // tiny_http's accept loop ended for good on the first EMFILE.
        let mut script: VecDeque<_> = (0..9).map(|_| Err(err(libc::EMFILE))).collect();
        script.push_back(Ok(1));
        script.push_back(Err(err(libc::ENFILE)));
        script.push_back(Ok(2));
        let mut backoff = AcceptBackoff::default();
        let (got, sleeps) = drive(&mut script, &mut backoff, false);
        assert_eq!(got, Some(1));
        let ms: Vec<u128> = sleeps.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        // A success resets the back-off.
        let (got, sleeps) = drive(&mut script, &mut backoff, false);
        assert_eq!((got, sleeps), (Some(2), vec![Duration::from_millis(10)]));
    }

    #[test]
    fn per_connection_accept_errors_are_retried_without_pause() {
        let mut script: VecDeque<_> = [
            Err(err(libc::ECONNABORTED)),
            Err(err(libc::EPROTO)),
            Err(err(libc::EINTR)),
            Err(err(libc::EAGAIN)),
            Ok(3),
        ]
        .into_iter()
        .collect();
        let (got, sleeps) = drive(&mut script, &mut AcceptBackoff::default(), false);
        assert_eq!((got, sleeps), (Some(3), vec![]));
    }

    #[test]
    fn handshake_deadlines_shrink_as_handshake_slots_run_out() {
        let full = Duration::from_secs(10);
        let cap = handshake_cap(512);
        assert_eq!(cap, 384);
        assert_eq!(handshake_budget(full, 0, cap), full);
        assert_eq!(handshake_budget(full, cap / 2, cap), full);
        let mid = handshake_budget(full, cap * 3 / 4, cap);
        assert!(mid < full && mid > MIN_HANDSHAKE, "{mid:?}");
        assert_eq!(handshake_budget(full, cap - 1, cap), MIN_HANDSHAKE);
        assert_eq!(handshake_budget(full, cap, cap), MIN_HANDSHAKE);
        // A configured deadline shorter than the floor is never lengthened.
        let short = Duration::from_millis(300);
        assert_eq!(handshake_budget(short, cap, cap), short);
        for n in 1..4 {
            assert_eq!(handshake_cap(n), n);
        }
    }

    #[test]
    fn shutdown_during_a_back_off_ends_the_loop() {
        let mut script: VecDeque<_> = [Err(err(libc::EMFILE)), Ok(4)].into_iter().collect();
        let (got, sleeps) = drive(&mut script, &mut AcceptBackoff::default(), true);
        assert_eq!((got, sleeps.len()), (None, 1));
    }
}
