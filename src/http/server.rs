//! The listener, the accept loop, the bounded worker pool, and graceful shutdown.
//!
//! One thread (the caller of [`Server::run`]) accepts; connections go to a pool of at most
//! `Limits::max_connections` small-stack worker threads, created on demand, reused, and
//! retired after a minute idle. Past the limit a connection is handed to one "busy" thread
//! that answers 503 and closes. Accept errors (EMFILE and friends) are logged at most once
//! a second and backed off from 10 ms doubling to 1 s; they never end the loop.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::conn::{self, Ctx, Transport, UnixTransport};
use super::parse::Reject;
use super::response::{reject_response, write_response};
use super::sys::{self, Wake};
use super::{Handler, Limits, ShutdownHandle};

/// A worker with nothing to do for this long exits, returning its stack.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// Connections waiting for a 503 beyond this many are closed without one.
const BUSY_QUEUE: usize = 16;
/// The whole budget for answering one over-limit connection.
const BUSY_DEADLINE: Duration = Duration::from_secs(1);

enum Listener {
    Tls(TcpListener, Arc<ServerConfig>),
    Unix(UnixListener, PathBuf),
}

/// An accepted connection waiting for (or being served by) a worker.
enum Job {
    Tls(TcpStream, SocketAddr, Arc<ServerConfig>),
    Unix(UnixStream),
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

    /// Live counters, usable while `run` owns the server (tests, metrics).
    pub fn stats(&self) -> Stats {
        Stats(self.pool.clone())
    }

    /// Connections being served right now (queued for a worker or in a worker).
    pub fn active_connections(&self) -> usize {
        self.stats().active_connections()
    }

    /// Accept and serve until shutdown is requested, then stop accepting, close idle
    /// keep-alive connections, and return once in-flight requests have finished or
    /// `Limits::grace` has passed (stragglers are left to the process exit).
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
        thread::Builder::new()
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
                    Ok(Job::Tls(s, addr, tls.clone()))
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
            if let Err(job) = pool.admit(job, &ctx) {
                if let Some(skipped) = busy_log.ready() {
                    crate::log::warn(
                        "connection limit reached; answering 503",
                        &[
                            ("maxConnections", limits.max_connections.into()),
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
        drop(busy_tx);
        pool.close();
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
    /// Worker threads alive (busy or idle).
    pub fn workers(&self) -> usize {
        self.0.lock().workers
    }
    /// Connections admitted since start.
    pub fn accepted(&self) -> u64 {
        self.0.lock().accepted
    }
    /// Connections turned away because every slot was taken.
    pub fn rejected_busy(&self) -> u64 {
        self.0.lock().rejected
    }
}

#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a job is queued or the pool closes.
    work: Condvar,
    /// Signalled when `active` reaches zero.
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
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing panics while holding this lock, but never let poison stop the server.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `job` for a worker, starting one if every worker is busy. `Err` gives the
    /// job back when all `max_connections` slots are taken (or no thread can be made).
    fn admit(self: &Arc<Self>, job: Job, ctx: &Arc<Ctx>) -> Result<(), Job> {
        let mut st = self.lock();
        if st.active >= ctx.limits.max_connections {
            st.rejected += 1;
            return Err(job);
        }
        // Invariant: workers >= active, so every queued job has a worker coming for it.
        if st.workers <= st.active {
            let pool = self.clone();
            let ctx = ctx.clone();
            let spawned = thread::Builder::new()
                .name("http-worker".into())
                .stack_size(ctx.limits.worker_stack)
                .spawn(move || worker(pool, ctx));
            if let Err(e) = spawned {
                crate::log::error(
                    "cannot start a worker thread",
                    &[("error", e.to_string().into())],
                );
                st.rejected += 1;
                return Err(job);
            }
            st.workers += 1;
        }
        st.active += 1;
        st.accepted += 1;
        st.pending.push_back(job);
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    fn close(&self) {
        self.lock().closing = true;
        self.work.notify_all();
    }

    fn wait_drained(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut st = self.lock();
        while st.active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                crate::log::warn(
                    "shutdown grace period over; abandoning in-flight connections",
                    &[("active", st.active.into())],
                );
                return;
            }
            st = self
                .drained
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn worker(pool: Arc<Pool>, ctx: Arc<Ctx>) {
    loop {
        let job = {
            let mut st = pool.lock();
            loop {
                if let Some(job) = st.pending.pop_front() {
                    break job;
                }
                if st.closing {
                    st.workers -= 1;
                    return;
                }
                let (guard, waited) = pool
                    .work
                    .wait_timeout(st, WORKER_IDLE)
                    .unwrap_or_else(|e| e.into_inner());
                st = guard;
                if waited.timed_out() && st.pending.is_empty() {
                    st.workers -= 1;
                    return;
                }
            }
        };
        // Handler panics are caught closer in; this catches bugs in the server itself so
        // the slot is always given back.
        if catch_unwind(AssertUnwindSafe(|| serve_job(job, &ctx))).is_err() {
            crate::log::error("connection worker panicked", &[]);
        }
        let mut st = pool.lock();
        st.active -= 1;
        if st.active == 0 {
            pool.drained.notify_all();
        }
    }
}

fn serve_job(job: Job, ctx: &Ctx) {
    match job {
        Job::Tls(sock, addr, tls) => {
            let deadline = Instant::now() + ctx.limits.handshake_timeout;
            if let Ok(mut t) = conn::tls_accept(tls, sock, deadline) {
                conn::serve(&mut t, &conn::tcp_peer(addr), ctx);
            }
        }
        Job::Unix(s) => {
            let peer = conn::unix_peer(&s);
            conn::serve(&mut UnixTransport(s), &peer, ctx);
        }
    }
}

/// Answer over-limit connections with 503 and close them, one at a time, each within
/// [`BUSY_DEADLINE`]. Ends when the accept loop drops the sender.
fn busy_loop(rx: Receiver<Job>, limits: &Limits) {
    for job in rx {
        let deadline = Instant::now() + BUSY_DEADLINE;
        match job {
            Job::Tls(sock, _, tls) => {
                // A handshake is cheap next to a confused client: with it the client sees
                // a real 503 instead of a TLS error.
                if let Ok(mut t) = conn::tls_accept(tls, sock, deadline) {
                    busy_answer(&mut t, limits);
                }
            }
            Job::Unix(s) => busy_answer(&mut UnixTransport(s), limits),
        }
    }
}

fn busy_answer<T: Transport>(t: &mut T, limits: &Limits) {
    if t.set_write_timeout(Some(BUSY_DEADLINE)).is_err() {
        return;
    }
    let resp = reject_response(&Reject::Busy, limits);
    if write_response(t, resp, true, false, false).is_ok() {
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
    fn shutdown_during_a_back_off_ends_the_loop() {
        let mut script: VecDeque<_> = [Err(err(libc::EMFILE)), Ok(4)].into_iter().collect();
        let (got, sleeps) = drive(&mut script, &mut AcceptBackoff::default(), true);
        assert_eq!((got, sleeps.len()), (None, 1));
    }
}
