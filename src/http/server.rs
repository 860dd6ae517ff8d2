//! The listener, the accept loop, the worker pool, and graceful shutdown.
//!
//! One thread (the caller of [`Server::run`]) accepts and parks each admitted connection
//! in the pool's epoll set, where it holds no thread. Idle workers wait on the set; the
//! one that takes a ready connection runs its TLS handshake or serves its requests
//! (blocking, under the same deadlines as ever) while input is there, then parks it
//! again and goes back for the next ready one: under load without sleeping, so a request
//! costs no wake-up (a thread per connection paid a sleep and a wake-up per request,
//! issue 16). A connection is registered once, edge-triggered: parking it is no system
//! call when its last read emptied the socket; input reported while a worker holds it
//! marks it, and parking it then asks the epoll set to report it again, at the back of
//! the ready list ([`Slot::pending`]). Workers are small-stack threads, started at once
//! up to the cores, past them by the accept thread when none made progress for
//! [`STALL_TICK`] (handlers may block), never more than `Limits::max_connections`,
//! retired after a minute idle. The accept thread also closes parked connections whose
//! deadline passed (handshake, first head, idle keep-alive), waking only for the
//! earliest of them.
//! Accept errors (EMFILE and friends) are logged at most once a second and backed off
//! from 10 ms doubling to 1 s; they never end the loop.
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
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::conn::{self, Ctx, TlsTransport, Transport, UnixTransport};
use super::parse::Reject;
use super::response::{reject_response, write_response, ReplyMode};
use super::{Handler, Limits, Peer, ShutdownHandle};
use crate::addr::share_key;
use crate::sys::{self, Wake};

/// A worker with nothing to do for this long exits, returning its stack.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// While every worker is busy and connections are parked, the accept thread looks this
/// often whether any worker finished something; if none did (handlers blocked: long
/// polls, slow Kubernetes calls), it starts more workers (half again as many).
const STALL_TICK: Duration = Duration::from_millis(10);
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

/// An accepted connection, before it is admitted (or refused).
enum Job {
    Tls(TcpStream, SocketAddr, Arc<ServerConfig>),
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
            pool: Arc::new(Pool::new()?),
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

        // Idle workers wake at once on shutdown: the pipe stays readable.
        pool.epoll.add_level(shutdown.fd(), SHUTDOWN)?;
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
                    Ok(Job::Tls(s, addr, tls.clone()))
                }
                Listener::Unix(l, _) => {
                    let (s, _) = l.accept()?;
                    s.set_nonblocking(false)?;
                    Ok(Job::Unix(s))
                }
            }
        };
        // While waiting for the next connection, this thread also closes parked
        // connections whose deadline has passed (a worker parking one with an earlier
        // deadline than the next wake-up pokes it).
        let wait = |w: WaitFor| -> bool {
            let WaitFor::Readable = w else {
                return sys::wait_readable(None, shutdown_fd, w.pause()) == Wake::Shutdown;
            };
            loop {
                let next = pool.sweep();
                let tick = pool.watch(&ctx);
                let fds = [shutdown_fd, listen_fd, pool.poke_rx.as_raw_fd()];
                // A millisecond late rather than early, so a deadline is never spun on.
                let timeout = next.map_or(Duration::MAX, |d| d + Duration::from_millis(1));
                let timeout = tick.map_or(timeout, |t| t.min(timeout));
                let ready = sys::poll_readable(&fds, timeout);
                if ready[0] {
                    return true;
                }
                if ready[2] {
                    let _ = (&pool.poke_rx).read(&mut [0; 64]);
                }
                if ready[1] {
                    return false;
                }
            }
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
    /// Connections open: served by a worker or parked between requests.
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

/// The token the shutdown pipe has in the epoll set (no connection's: slot indexes and
/// generations stay below 2^31).
const SHUTDOWN: u64 = u64::MAX;

/// Connections waiting for input sit in an epoll set (edge-triggered), holding no thread;
/// idle workers wait on the set, take one ready connection each, serve it while it has
/// input, and park it again. At least one worker waits whenever a connection is parked,
/// so a handler that blocks (a long poll, a stream) never stalls the others.
struct Pool {
    state: Mutex<PoolState>,
    /// Workers started at once as needed (the cores); past them the accept thread adds
    /// some per [`STALL_TICK`] in which none made progress. Few workers, each taking the
    /// next ready connection without sleeping, is what makes a request cheap.
    hot: usize,
    /// Signalled when `active` or, once closing, `workers` reaches zero.
    drained: Condvar,
    epoll: sys::Epoll,
    /// Wakes the accept thread to re-read the earliest parked deadline.
    poke_rx: std::fs::File,
    poke_tx: OwnedFd,
}

/// An admitted connection, parked in the pool's slab between its wake-ups.
struct Conn {
    io: Io,
    remote: conn::Remote,
    /// Its id in the handshake table, until its TLS handshake ends.
    handshake: Option<u64>,
    /// When it is closed if it stays silent (handshake, first head, or idle deadline).
    deadline: Instant,
    /// Its first request is still awaited.
    first: bool,
}

// The whole `Conn` is boxed already; boxing the TLS state too would cost one more
// allocation per connection.
#[allow(clippy::large_enum_variant)]
enum Io {
    /// Accepted; the TLS handshake starts when the client speaks.
    Fresh(TcpStream, Arc<ServerConfig>),
    Tls(TlsTransport),
    Unix(UnixTransport),
    /// The handshake failed.
    Gone,
}

impl Io {
    fn fd(&self) -> Option<RawFd> {
        match self {
            Io::Fresh(s, _) => Some(s.as_raw_fd()),
            Io::Tls(t) => Some(t.fd()),
            Io::Unix(t) => Some(t.fd()),
            Io::Gone => None,
        }
    }

    /// Close cleanly (TLS close_notify) a connection that was waiting for a request.
    fn finish(&mut self) {
        match self {
            Io::Tls(t) => t.finish(),
            Io::Unix(t) => t.finish(),
            Io::Fresh(..) | Io::Gone => {}
        }
    }
}

/// A connection's place in the slab. Its token (index and generation) stays the same
/// for the connection's life; the generation changes when the slot is freed, so an
/// event for a closed connection never reaches the next one in that slot.
#[derive(Default)]
struct Slot {
    generation: u32,
    /// `None` while a worker holds the connection (or the slot is free).
    conn: Option<Box<Conn>>,
    /// Input was reported while a worker held the connection: parking it asks the
    /// epoll set to report it again if that input is still unread (the set is
    /// edge-triggered and would not), at the back of the ready list: served again at
    /// once, a connection whose client answers fast kept its worker from the others.
    pending: bool,
}

#[derive(Default)]
struct PoolState {
    /// Admitted connections still open (parked or held by a worker).
    active: usize,
    workers: usize,
    /// Workers waiting in the epoll set (or on their way to it).
    idle: usize,
    /// Connections in the slab waiting for input.
    parked: usize,
    closing: bool,
    accepted: u64,
    rejected: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// When the accept thread next sweeps the slab for passed deadlines.
    next_sweep: Option<Instant>,
    /// Requests (or handshakes) workers have finished: the accept thread's sign of life.
    progress: u64,
    /// The accept thread is watching for stalled workers ([`STALL_TICK`]): its next
    /// look, and `progress` at its last one.
    watch: Option<(Instant, u64)>,
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
    /// [`EVICT_AFTER`]; the socket becomes readable, a worker's read fails at once and
    /// the slot is freed. True when one was evicted (its handshake slot is free now; its
    /// connection slot soon).
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

    /// A free slot's token.
    fn alloc(&mut self) -> u64 {
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        });
        self.token(i as usize)
    }

    /// The token of the connection in slot `i` (its index and the slot's generation).
    fn token(&self, i: usize) -> u64 {
        u64::from(self.slots[i].generation) << 32 | i as u64
    }

    /// Takes out of the slab every parked connection whose deadline is at or before
    /// `by` (all of them for `None`); also the earliest deadline of those left.
    fn take_parked(&mut self, by: Option<Instant>) -> (Vec<(u64, Box<Conn>)>, Option<Instant>) {
        let mut next: Option<Instant> = None;
        let mut taken = Vec::new();
        for i in 0..self.slots.len() {
            let Some(c) = &self.slots[i].conn else {
                continue;
            };
            if by.is_some_and(|by| c.deadline > by) {
                next = Some(next.map_or(c.deadline, |n| n.min(c.deadline)));
                continue;
            }
            let token = self.token(i);
            taken.extend(self.take(token).map(|c| (token, c)));
        }
        (taken, next)
    }

    fn slot(&mut self, token: u64) -> Option<&mut Slot> {
        let slot = self.slots.get_mut((token & 0xffff_ffff) as usize)?;
        (u64::from(slot.generation) == token >> 32).then_some(slot)
    }

    /// Takes the parked connection `token` names, on a report of input. `None` when it
    /// is not parked: closed (a stale report), or held by a worker, whose parking of it
    /// then asks for the report again ([`Slot::pending`]).
    fn take(&mut self, token: u64) -> Option<Box<Conn>> {
        let slot = self.slot(token)?;
        let Some(conn) = slot.conn.take() else {
            slot.pending = true;
            return None;
        };
        slot.pending = false;
        self.parked -= 1;
        Some(conn)
    }

    /// Parks `conn` under `token`, added to `epoll` when `add` (a new connection; it
    /// stays registered, edge-triggered, for its life); gives it back if it cannot be
    /// (the kernel is out of memory).
    fn park(
        &mut self,
        epoll: &sys::Epoll,
        token: u64,
        conn: Box<Conn>,
        add: bool,
    ) -> Result<(), Box<Conn>> {
        let Some(fd) = conn.io.fd() else {
            return Err(conn);
        };
        // Under the lock, so the sweeper cannot close the socket (and a new connection
        // reuse its number) between the slab and the epoll set, and a report cannot
        // reach another worker before the connection is in the slab.
        let pending = self
            .slot(token)
            .is_some_and(|s| std::mem::take(&mut s.pending));
        let watched = if add {
            epoll.add_edge(fd, token)
        } else if pending {
            epoll.recheck(fd, token)
        } else {
            Ok(())
        };
        if watched.is_err() {
            return Err(conn);
        }
        if self.next_sweep.is_none_or(|n| conn.deadline < n) {
            self.next_sweep = Some(conn.deadline);
        }
        if let Some(slot) = self.slot(token) {
            slot.conn = Some(conn);
        }
        self.parked += 1;
        Ok(())
    }

    /// A connection `token` ended: its slot, handshake and address are given back.
    fn release(&mut self, token: u64, conn: &Conn) {
        if let Some(slot) = self.slot(token) {
            slot.conn = None;
            slot.pending = false;
            slot.generation = (slot.generation + 1) & 0x7fff_ffff;
            self.free.push((token & 0xffff_ffff) as u32);
        }
        if let Some(id) = conn.handshake {
            self.handshakes.remove(&id);
        }
        if let Peer::Tcp(addr) = conn.remote.peer {
            let k = share_key(addr.ip());
            if let Some(n) = self.per_address.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&k);
                }
            }
        }
        self.active -= 1;
    }
}

impl Pool {
    fn new() -> io::Result<Pool> {
        let (rx, tx) = sys::pipe()?;
        Ok(Pool {
            state: Mutex::default(),
            hot: thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            drained: Condvar::new(),
            epoll: sys::Epoll::new()?,
            poke_rx: rx.into(),
            poke_tx: tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing panics while holding this lock, but never let poison stop the server.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a worker, counted idle: it goes straight to the epoll set.
    fn spawn(self: &Arc<Self>, st: &mut PoolState, ctx: &Arc<Ctx>) -> io::Result<()> {
        let (pool, c) = (self.clone(), ctx.clone());
        st.next_worker += 1;
        let id = st.next_worker;
        // Only the first `hot` workers cache small blocks: they are the ones running at
        // once under load, and a cache in each of hundreds of workers (a flood of
        // blocking requests) held 26 MiB in the soak.
        let cache = st.workers < self.hot;
        let spawned = thread::Builder::new()
            .name("http-worker".into())
            .stack_size(ctx.limits.worker_stack)
            .spawn(move || worker(pool, c, id, cache));
        match spawned {
            // The worker cannot retire before this: it needs the lock held here.
            Ok(handle) => {
                st.handles.insert(id, handle);
                st.workers += 1;
                st.idle += 1;
                Ok(())
            }
            Err(e) => {
                crate::log::error(
                    "cannot start a worker thread",
                    &[("error", e.to_string().into())],
                );
                Err(e)
            }
        }
    }

    /// Parks `job` in the epoll set until it speaks, starting a worker if none is
    /// waiting. `Err` gives the job back when it may not have a slot (see [`Refused`]).
    fn admit(self: &Arc<Self>, job: Job, ctx: &Arc<Ctx>) -> Result<(), (Job, Refused)> {
        let limits = &ctx.limits;
        let mut st = self.lock();
        let full = st.active >= limits.max_connections;
        let refused = match &job {
            Job::Tls(_, addr, _) => {
                let held = st.per_address.get(&share_key(addr.ip())).copied();
                if held.unwrap_or(0) >= limits.max_connections_per_address {
                    Some(Refused::PerAddress)
                } else if (full || st.handshakes.len() >= handshake_cap(limits.max_connections))
                    && !st.evict_oldest_handshake()
                {
                    // (An evicted connection still counts in `active` until a worker
                    // sees it closed, a moment later: the pool may run one over for that long.)
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
        // Invariant: a worker waits in the epoll set whenever a connection is parked.
        let refused = refused.or_else(|| {
            if st.idle > 0 {
                None
            } else if st.workers < self.hot.min(limits.max_connections) {
                self.spawn(&mut st, ctx).err().map(|_| Refused::Full)
            } else {
                // Every worker is busy: one finishing takes it, or a stall adds one.
                let progress = st.progress;
                st.watch
                    .get_or_insert((Instant::now() + STALL_TICK, progress));
                None
            }
        });
        if let Some(why) = refused {
            st.rejected += 1;
            return Err((job, why));
        }
        let now = Instant::now();
        let conn = match job {
            Job::Tls(sock, addr, tls) => {
                let budget = handshake_budget(
                    limits.handshake_timeout,
                    st.handshakes.len(),
                    handshake_cap(limits.max_connections),
                );
                st.next_handshake += 1;
                let id = st.next_handshake;
                // Without a clone the connection cannot be evicted, but it is served anyway.
                if let Ok(clone) = sock.try_clone() {
                    st.handshakes.insert(id, (clone, now));
                }
                *st.per_address.entry(share_key(addr.ip())).or_insert(0) += 1;
                Conn {
                    io: Io::Fresh(sock, tls),
                    remote: conn::Remote::new(conn::tcp_peer(addr)),
                    handshake: Some(id),
                    deadline: now + budget,
                    first: false,
                }
            }
            Job::Unix(s) => {
                let _ = s.set_write_timeout(Some(conn::resting(limits)));
                Conn {
                    remote: conn::Remote::new(conn::unix_peer(&s)),
                    io: Io::Unix(UnixTransport(conn::Sock::new(s), Default::default())),
                    handshake: None,
                    deadline: now + limits.head_timeout,
                    first: true,
                }
            }
        };
        st.active += 1;
        st.accepted += 1;
        let token = st.alloc();
        if let Err(c) = st.park(&self.epoll, token, Box::new(conn), true) {
            // Closed unanswered, as on a failed accept.
            st.release(token, &c);
        }
        Ok(())
    }

    /// A connection's handshake ended (either way): its handshake slot is free.
    fn handshake_done(&self, id: u64) {
        self.lock().handshakes.remove(&id);
    }

    /// Closes the parked connections whose deadline has passed (idle, or silent past
    /// their handshake or first head deadline). The time until the next deadline.
    fn sweep(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut st = self.lock();
        match st.next_sweep {
            Some(n) if n <= now => {}
            next => return next.map(|n| n - now),
        }
        let (expired, next) = st.take_parked(Some(now));
        st.next_sweep = next;
        self.close_parked(st, expired);
        next.map(|n| n.saturating_duration_since(now))
    }

    /// While watching (every worker busy, connections parked): starts a worker when none
    /// made progress in the last [`STALL_TICK`], and says when to look again; `None`
    /// once some worker is idle or nothing is parked.
    fn watch(self: &Arc<Self>, ctx: &Arc<Ctx>) -> Option<Duration> {
        let now = Instant::now();
        let mut st = self.lock();
        let (at, seen) = st.watch?;
        if now < at {
            return Some(at - now);
        }
        let stalled = st.idle == 0 && st.parked > 0 && !st.closing;
        if stalled && st.progress == seen {
            // Half again as many workers (at least one) per tick without progress, so a
            // burst of blocking requests (64 long polls) finds workers within a few ticks.
            let room = ctx.limits.max_connections.saturating_sub(st.workers);
            for _ in 0..(st.workers / 2).max(1).min(room) {
                if self.spawn(&mut st, ctx).is_err() {
                    break;
                }
            }
        }
        // Watch on while nobody waits (a worker taking the last waiting place starts it
        // again).
        let watch = st.idle == 0 && st.parked > 0 && !st.closing;
        st.watch = watch.then_some((now + STALL_TICK, st.progress));
        watch.then_some(STALL_TICK)
    }

    /// Closes connections taken out of the slab while parked: cleanly, as they were
    /// between requests.
    fn close_parked(&self, mut st: MutexGuard<'_, PoolState>, conns: Vec<(u64, Box<Conn>)>) {
        for (token, c) in &conns {
            st.release(*token, c);
        }
        if st.active == 0 {
            self.drained.notify_all();
        }
        drop(st);
        for (_, mut c) in conns {
            if let Some(fd) = c.io.fd() {
                self.epoll.delete(fd);
            }
            c.io.finish();
        }
    }

    /// A worker thread ends (idle, or the pool closed).
    fn worker_done(&self, mut st: MutexGuard<'_, PoolState>) {
        st.idle -= 1;
        st.workers -= 1;
        if st.workers == 0 {
            self.drained.notify_all();
        }
    }

    /// Stops parking: connections waiting for a request are closed now, workers waiting
    /// for one leave (the shutdown pipe is readable in their epoll set), and busy ones
    /// close their connection after the response.
    fn close(&self) {
        let mut st = self.lock();
        st.closing = true;
        let (parked, _) = st.take_parked(None);
        self.close_parked(st, parked);
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

/// A worker: waits in the epoll set for a ready connection, serves it while it has
/// input, parks it again (or closes it), and goes back to wait. Under load it finds the
/// next ready connection without sleeping.
fn worker(pool: Arc<Pool>, ctx: Arc<Ctx>, id: u64, cache: bool) {
    // Requests allocate many small blocks; take them without the process's malloc lock.
    let _cache = cache.then(crate::alloc::ThreadCache::start);
    let mut buf = Vec::new();
    loop {
        let event = pool.epoll.wait_one(WORKER_IDLE);
        let mut st = pool.lock();
        let (token, hup) = match event {
            Some((SHUTDOWN, _)) => return pool.worker_done(st),
            Some(event) => event,
            None if st.closing => return pool.worker_done(st),
            // Idle for a while: retire, unless this is the last worker waiting while
            // connections are parked.
            None if st.idle > 1 || st.parked == 0 => {
                st.handles.remove(&id); // retiring while the pool goes on: nobody joins it
                return pool.worker_done(st);
            }
            None => continue,
        };
        // Swept or closed meanwhile: nothing to do.
        let Some(mut conn) = st.take(token) else {
            continue;
        };
        st.idle -= 1;
        if st.idle == 0 && st.parked > 0 {
            // Nobody is left waiting for the parked connections: another worker, or
            // the accept thread watches for a stall.
            let spawned = st.workers < pool.hot.min(ctx.limits.max_connections)
                && pool.spawn(&mut st, &ctx).is_ok();
            if !spawned && st.watch.is_none() {
                st.watch = Some((Instant::now() + STALL_TICK, st.progress));
                sys::poke(pool.poke_tx.as_raw_fd());
            }
        }
        drop(st);
        // Handler panics are caught closer in; this catches bugs in the server itself so
        // the slot is always given back.
        let served = catch_unwind(AssertUnwindSafe(|| {
            serve_conn(&mut conn, &ctx, &pool, &mut buf, hup)
        }));
        buf.clear();
        let wait = served.unwrap_or_else(|_| {
            crate::log::error("connection worker panicked", &[]);
            None
        });
        let mut st = pool.lock();
        st.idle += 1;
        st.progress += 1;
        if let Some(w) = &wait {
            if !st.closing && !ctx.shutdown.is_shutdown() {
                (conn.deadline, conn.first) = (w.until, w.first);
                // The accept thread sleeps until the earliest deadline it knows of.
                let poke = st.next_sweep.is_none_or(|n| w.until < n);
                match st.park(&pool.epoll, token, conn, false) {
                    Ok(()) => {
                        if poke {
                            sys::poke(pool.poke_tx.as_raw_fd());
                        }
                        continue;
                    }
                    // Not watched (out of kernel memory): closed below.
                    Err(c) => conn = c,
                }
            }
        }
        st.release(token, &conn);
        if st.active == 0 {
            pool.drained.notify_all();
        }
        drop(st);
        if wait.is_some() {
            // Shutting down (or not parkable): it was waiting for a request, so it ends
            // cleanly.
            conn.io.finish();
        }
    }
}

/// Serves `c` while it has input: a fresh connection's TLS handshake (under its
/// deadline), then requests ([`conn::serve`]). The wait for its next request when it is
/// to be parked, `None` once it is closed.
fn serve_conn(
    c: &mut Conn,
    ctx: &Ctx,
    pool: &Pool,
    buf: &mut Vec<u8>,
    hup: bool,
) -> Option<conn::Wait> {
    let mut first = c.first.then_some(c.deadline);
    let mut ready = true;
    if let Io::Fresh(..) = c.io {
        let Io::Fresh(sock, tls) = std::mem::replace(&mut c.io, Io::Gone) else {
            return None;
        };
        let accepted = conn::tls_accept(tls, sock, c.deadline);
        if let Some(id) = c.handshake.take() {
            pool.handshake_done(id);
        }
        let mut t = accepted.ok()?;
        t.set_write_timeout(Some(conn::resting(&ctx.limits))).ok()?;
        c.io = Io::Tls(t);
        // The first request's head deadline runs from the end of the handshake; the
        // client may not have sent it yet.
        first = Some(Instant::now() + ctx.limits.head_timeout);
        ready = false;
    }
    match &mut c.io {
        Io::Tls(t) => conn::serve(t, &c.remote, ctx, buf, first, ready, hup),
        Io::Unix(t) => conn::serve(t, &c.remote, ctx, buf, first, ready, hup),
        Io::Fresh(..) | Io::Gone => None,
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
                Job::Unix(s) => busy_answer(
                    &mut UnixTransport(conn::Sock::new(s), Default::default()),
                    limits,
                ),
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

impl WaitFor {
    fn pause(self) -> Option<Duration> {
        match self {
            WaitFor::Readable => None,
            WaitFor::Sleep(d) => Some(d),
        }
    }
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
