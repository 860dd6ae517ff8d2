//! One connection's life: TLS handshake, then requests until close, each under deadlines.
//!
//! Generic over [`Transport`] (any `Read + Write` stream that can take timeouts), so TLS
//! over TCP and plain Unix sockets share every line of framing. Deadlines are totals: each
//! read gets the time left until the deadline as its socket timeout, so trickling bytes
//! cannot stretch them. EOF (including a TLS close_notify) always ends the connection.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::parse::{parse_head, ChunkedDecoder, Framing, Head, Reject, Version};
use super::rate::{resting_write_timeout, Budget, RateGuard};
use super::response::{reject_response, wants_close, write_response, ReplyMode, WriteError};
use super::{Handler, Limits, Peer, Request, ShutdownHandle};
use crate::sys;

/// After an error response we keep reading (and discarding) for a moment so the client's
/// TCP stack does not reset the connection and drop our answer before it reads it.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;
/// At most this much is read per call of `read_some` (and zero-filled first, on a Unix
/// socket): a request head is usually a few hundred bytes, and zeroing the whole 16 KiB
/// head allowance on every read cost more than the TLS decryption of a small request.
const READ_CHUNK: usize = 4 * 1024;

/// A byte stream the connection loop can serve.
pub(crate) trait Transport: Read + Write {
    /// The socket, for the pool's epoll set.
    fn fd(&self) -> RawFd;
    /// Is there input already buffered above the socket (decrypted TLS data, or a
    /// close_notify) that poll(2) on the socket would not report?
    fn has_buffered_input(&mut self) -> bool;
    /// Did the last read from the socket empty it ([`Sock`])? Then input arriving later
    /// is reported by the pool's edge-triggered epoll set, and the connection can park.
    fn drained(&self) -> bool;
    /// Appends at most `room` bytes of input to `buf`, waiting for some (under the read
    /// timeout) when none is there. `Ok(0)` at EOF.
    fn read_into(&mut self, buf: &mut Vec<u8>, room: usize) -> io::Result<usize>;
    /// Reads what the socket holds now, without waiting (`WouldBlock` when nothing),
    /// into the TLS layer (whose records it decrypts) or into `buf`. `Ok(0)` at EOF.
    fn read_now(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Make the next blocking read end within `left` (a read that times out early is
    /// simply retried by [`read_some`]). Implemented with [`ReadBound`], which skips
    /// the setsockopt when the timeout already set is short enough.
    fn bound_read(&mut self, left: Duration) -> io::Result<()>;
    fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()>;
    /// End cleanly (TLS close_notify, then shut the write side). Best effort.
    fn finish(&mut self);
}

/// The read timeout last set on a socket, so that a request does not cost a
/// setsockopt per read: a timeout at or below the time left is kept (it can only end a
/// read early, and [`read_some`] retries), and a new one is set at 7/8 of the time
/// left, so the next request's fresh deadline finds it short enough already.
#[derive(Default)]
pub(crate) struct ReadBound(Option<Duration>);

impl ReadBound {
    /// The timeout to set for `left`, or `None` when the current one will do.
    fn update(&mut self, left: Duration) -> Option<Duration> {
        if self.0.is_some_and(|cur| cur <= left) {
            return None;
        }
        let want = (left - left / 8).max(left.min(Duration::from_millis(1)));
        self.0 = Some(want);
        Some(want)
    }
}

/// A socket that notes whether its last read emptied it: a read that returned less than
/// it asked for, or nothing before its timeout. With the socket edge-triggered in the
/// pool's epoll set, a connection whose socket is drained can wait there without a
/// look: anything arriving after that read is reported. Reads block (under timeouts)
/// unless `now` is set, for one look at what is there ([`Transport::read_now`]).
pub(crate) struct Sock<S> {
    pub s: S,
    drained: bool,
    now: bool,
}

impl<S> Sock<S> {
    pub(crate) fn new(s: S) -> Sock<S> {
        Sock {
            s,
            drained: false,
            now: false,
        }
    }
}

impl<S: Read + AsRawFd> Read for Sock<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = if self.now {
            sys::recv_now(self.s.as_raw_fd(), buf)
        } else {
            self.s.read(buf)
        };
        self.drained = match &got {
            Ok(n) => *n < buf.len(),
            Err(e) => is_timeout(e),
        };
        got
    }
}

impl<S: Write> Write for Sock<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.write(buf)
    }
    // rustls hands every record of a flush to one writev.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.s.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

/// TLS over TCP.
pub(crate) struct TlsTransport(StreamOwned<ServerConnection, Sock<TcpStream>>, ReadBound);

impl Read for TlsTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Transport for TlsTransport {
    fn fd(&self) -> RawFd {
        self.0.sock.s.as_raw_fd()
    }
    fn has_buffered_input(&mut self) -> bool {
        match self.0.conn.process_new_packets() {
            Ok(st) => st.plaintext_bytes_to_read() > 0 || st.peer_has_closed(),
            // Let the next read report the error.
            Err(_) => true,
        }
    }
    fn drained(&self) -> bool {
        self.0.sock.drained
    }
    fn read_into(&mut self, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
        // As `StreamOwned::read`, but copying the decrypted bytes straight from the TLS
        // layer's buffer: reading into a zeroed slice first cost a 4 KiB copy per read.
        let s = &mut self.0;
        if s.conn.wants_write() {
            s.conn.complete_io(&mut s.sock)?;
        }
        while s.conn.wants_read() {
            if s.conn.complete_io(&mut s.sock)?.0 == 0 {
                break;
            }
        }
        let mut r = s.conn.reader();
        // Empty after a close_notify: EOF.
        let chunk = r.fill_buf()?;
        let n = chunk.len().min(room);
        buf.extend_from_slice(&chunk[..n]);
        r.consume(n);
        Ok(n)
    }
    fn read_now(&mut self, _: &mut Vec<u8>) -> io::Result<usize> {
        self.0.sock.now = true;
        let got = self.0.conn.read_tls(&mut self.0.sock);
        self.0.sock.now = false;
        let n = got?;
        // Decrypt now: a read of the stream would otherwise go to the socket first.
        if let Err(e) = self.0.conn.process_new_packets() {
            // The alert saying why, as rustls's own reads send it.
            let _ = self.0.conn.write_tls(&mut self.0.sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n)
    }
    fn bound_read(&mut self, left: Duration) -> io::Result<()> {
        match self.1.update(left) {
            Some(t) => self.0.sock.s.set_read_timeout(Some(t)),
            None => Ok(()),
        }
    }
    fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.0.sock.s.set_write_timeout(t)
    }
    fn finish(&mut self) {
        self.0.conn.send_close_notify();
        while self.0.conn.wants_write() {
            if self.0.conn.write_tls(&mut self.0.sock).is_err() {
                break;
            }
        }
        let _ = self.0.sock.s.shutdown(std::net::Shutdown::Write);
    }
}

/// A plain Unix socket (local clients; no TLS).
pub(crate) struct UnixTransport(pub Sock<UnixStream>, pub ReadBound);

impl Read for UnixTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for UnixTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Transport for UnixTransport {
    fn fd(&self) -> RawFd {
        self.0.s.as_raw_fd()
    }
    fn has_buffered_input(&mut self) -> bool {
        false
    }
    fn drained(&self) -> bool {
        self.0.drained
    }
    fn read_into(&mut self, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
        let old = buf.len();
        // A copy of zeros, not `resize`: at opt-level "z" resize fills byte by byte.
        buf.extend_from_slice(&[0; READ_CHUNK][..room.min(READ_CHUNK)]);
        let got = self.0.read(&mut buf[old..]);
        buf.truncate(old + *got.as_ref().unwrap_or(&0));
        got
    }
    fn read_now(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.0.now = true;
        let got = self.read_into(buf, READ_CHUNK);
        self.0.now = false;
        got
    }
    fn bound_read(&mut self, left: Duration) -> io::Result<()> {
        match self.1.update(left) {
            Some(t) => self.0.s.set_read_timeout(Some(t)),
            None => Ok(()),
        }
    }
    fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.0.s.set_write_timeout(t)
    }
    fn finish(&mut self) {
        let _ = self.0.s.shutdown(std::net::Shutdown::Write);
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Run the TLS handshake by hand so `deadline` bounds the whole of it (rustls's
/// `complete_io` would loop on a trickling client with only per-read timeouts).
/// Anything that is not TLS (say, plain HTTP on this port) fails here and is just closed.
pub(crate) fn tls_accept(
    config: Arc<ServerConfig>,
    sock: TcpStream,
    deadline: Instant,
) -> io::Result<TlsTransport> {
    let mut sock = Sock::new(sock);
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let left = |d: Instant| {
        let t = d.saturating_duration_since(Instant::now());
        if t.is_zero() {
            Err(timed_out())
        } else {
            Ok(t)
        }
    };
    while conn.is_handshaking() {
        while conn.wants_write() {
            sock.s.set_write_timeout(Some(left(deadline)?))?;
            conn.write_tls(&mut sock)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        sock.s.set_read_timeout(Some(left(deadline)?))?;
        match conn.read_tls(&mut sock) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        conn.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    while conn.wants_write() {
        sock.s.set_write_timeout(Some(left(deadline)?))?;
        conn.write_tls(&mut sock)?;
    }
    Ok(TlsTransport(
        StreamOwned::new(conn, sock),
        ReadBound::default(),
    ))
}

/// What every connection worker shares.
pub(crate) struct Ctx {
    pub handler: Arc<dyn Handler>,
    pub limits: Limits,
    pub shutdown: ShutdownHandle,
}

enum Next {
    KeepAlive,
    /// End cleanly.
    Close,
    /// Drop without a clean end (torn response, dead client).
    Abort,
}

/// A served connection with no input left: it waits (parked in the pool's epoll set,
/// holding no thread) for its next request until `until`.
pub(crate) struct Wait {
    pub until: Instant,
    /// Its first request is still awaited (`until` is that request's head deadline).
    pub first: bool,
}

/// Serves requests on `t` for as long as input is there: `ready` when its socket was
/// just reported readable (or may have been: the report can be for input already read),
/// then while `buf`, the TLS layer or the socket holds unread bytes (pipelined
/// requests). `hup` when the client has shut its side (the report said so): the end of
/// its input may have come with its last request and is not reported again, so the
/// socket is read until it ends. Returns when it must wait for input ([`Wait`]; the
/// caller parks it), or `None` once it is closed (the client left, a deadline passed,
/// an error, or shutdown). `first` is the head deadline while the first request is
/// awaited; later requests get `idle_timeout` to start and then `head_timeout` from
/// their first byte. `buf` is the worker's, empty on entry and on return.
pub(crate) fn serve<T: Transport>(
    t: &mut T,
    remote: &Remote,
    ctx: &Ctx,
    buf: &mut Vec<u8>,
    mut first: Option<Instant>,
    mut ready: bool,
    hup: bool,
) -> Option<Wait> {
    loop {
        if buf.is_empty() && !t.has_buffered_input() {
            // Look at the socket without waiting, unless its last read emptied it and no
            // report came since: what arrives after that read will be reported, so the
            // connection can park at once (one system call less per request).
            let got = if ready || hup || !t.drained() {
                t.read_now(buf)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
            match got {
                // The client closed between requests.
                Ok(0) => {
                    t.finish();
                    return None;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Some(match first {
                        Some(until) => Wait { until, first: true },
                        None => Wait {
                            until: Instant::now() + ctx.limits.idle_timeout,
                            first: false,
                        },
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    buf.clear();
                    return None;
                }
            }
        }
        ready = false;
        match one_request(t, remote, ctx, buf, first) {
            Next::KeepAlive => first = None,
            Next::Close => {
                t.finish();
                buf.clear();
                return None;
            }
            Next::Abort => {
                buf.clear();
                return None;
            }
        }
    }
}

/// Read into `buf` (at most `room` more bytes, and at most [`READ_CHUNK`] at a time)
/// before `deadline`. `Ok(0)` is EOF.
fn read_some<T: Transport>(
    t: &mut T,
    buf: &mut Vec<u8>,
    room: usize,
    deadline: Instant,
) -> io::Result<usize> {
    let room = room.min(READ_CHUNK);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        t.bound_read(left)?;
        match t.read_into(buf, room) {
            Ok(n) => return Ok(n),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One request on `t`: its head, its body, then the handler's answer written back.
/// Each step either hands on what it read or says what the connection does next.
/// `first` is the head deadline while the connection's first request is awaited.
fn one_request<T: Transport>(
    t: &mut T,
    remote: &Remote,
    ctx: &Ctx,
    buf: &mut Vec<u8>,
    first: Option<Instant>,
) -> Next {
    let x = Exchange {
        ctx,
        remote,
        started: Instant::now(),
    };
    // The first request's head deadline is the connection's; a later one's runs from now.
    let head_deadline = first.unwrap_or(x.started + ctx.limits.head_timeout);
    let head = match read_head(t, &x, buf, head_deadline) {
        Ok(head) => head,
        Err(next) => return next,
    };
    let body = match read_body(t, &x, buf, &head) {
        Ok(body) => body,
        Err(next) => return next,
    };
    dispatch(t, &x, head, body)
}

/// What the steps of one request share.
struct Exchange<'a> {
    ctx: &'a Ctx,
    remote: &'a Remote,
    /// When the request started, for the access log.
    started: Instant,
}

impl Exchange<'_> {
    /// Answers a refusal of this request with the JSON envelope, then closes with a
    /// short linger.
    fn reject<T: Transport>(&self, t: &mut T, route: Option<(&str, &str)>, r: Reject) -> Next {
        let resp = reject_response(&r, &self.ctx.limits);
        let status = resp.status;
        let written = write_response(t, resp, ReplyMode::CLOSE);
        access_log(&self.remote.text, route, status, 0, self.started, None);
        if written.is_err() {
            return Next::Abort;
        }
        t.finish();
        linger(t);
        Next::Abort
    }
}

/// Reads until `buf` holds a whole head (before `deadline`), and takes it off `buf`;
/// what follows it stays there for the body or the next request.
fn read_head<T: Transport>(
    t: &mut T,
    x: &Exchange,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Head, Next> {
    let limits = &x.ctx.limits;
    let (head, head_len) = loop {
        match parse_head(buf, limits) {
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(r) => return Err(x.reject(t, None, r)),
        }
        // parse_head rejects a full buffer, so there is room here.
        let room = limits.max_head.saturating_sub(buf.len()).max(1);
        match read_some(t, buf, room, deadline) {
            // The client closed between requests (or mid-head: nothing to answer).
            Ok(0) if buf.is_empty() => return Err(Next::Close),
            Ok(0) => return Err(Next::Abort),
            Ok(_) => {}
            Err(e) if is_timeout(&e) && !buf.is_empty() => {
                return Err(x.reject(t, None, Reject::Timeout))
            }
            Err(e) if is_timeout(&e) => return Err(Next::Close),
            Err(_) => return Err(Next::Abort),
        }
    };
    buf.drain(..head_len);
    Ok(head)
}

/// Reads the body `head` announces (from `buf` first, then `t`) within
/// `Limits::body_timeout`, answering `Expect: 100-continue` when more must be read.
fn read_body<T: Transport>(
    t: &mut T,
    x: &Exchange,
    buf: &mut Vec<u8>,
    head: &Head,
) -> Result<Vec<u8>, Next> {
    let limits = &x.ctx.limits;
    let route = Some((head.method.as_str(), head.path.as_str()));
    if head.framing == Framing::None {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + limits.body_timeout;
    // More body bytes into `into`; a client gone or too slow ends the connection.
    let more = |t: &mut T, into: &mut Vec<u8>, room: usize| match read_some(t, into, room, deadline)
    {
        Ok(0) => Err(Next::Abort),
        Ok(_) => Ok(()),
        Err(e) if is_timeout(&e) => Err(x.reject(t, route, Reject::Timeout)),
        Err(_) => Err(Next::Abort),
    };
    let mut body = Vec::new();
    match head.framing {
        Framing::None => {}
        Framing::Length(n) => {
            if n > limits.max_body as u64 {
                return Err(x.reject(t, route, Reject::BodyTooLarge));
            }
            let n = n as usize;
            if head.expect_continue && buf.len() < n && continue_100(t).is_err() {
                return Err(Next::Abort);
            }
            body.reserve_exact(n);
            let take = n.min(buf.len());
            body.extend(buf.drain(..take));
            while body.len() < n {
                let room = n - body.len();
                more(t, &mut body, room)?;
            }
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(limits.max_body);
            let mut asked = false;
            loop {
                match dec.feed(buf, &mut body) {
                    Ok(used) => {
                        buf.drain(..used);
                    }
                    Err(r) => return Err(x.reject(t, route, r)),
                }
                if dec.is_done() {
                    break;
                }
                if head.expect_continue && !asked {
                    asked = true;
                    if continue_100(t).is_err() {
                        return Err(Next::Abort);
                    }
                }
                more(t, buf, 16 * 1024)?;
            }
        }
    }
    Ok(body)
}

/// Hands the request to the handler (a panic costs a 500), writes its response under
/// the minimum-transfer-rate guard, and logs the exchange.
fn dispatch<T: Transport>(t: &mut T, x: &Exchange, head: Head, body: Vec<u8>) -> Next {
    let (ctx, remote, limits) = (x.ctx, x.remote, &x.ctx.limits);
    let is_head = head.method == "HEAD";
    let http11 = head.version == Version::Http11;
    let req = Request {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        body,
        peer: remote.peer.clone(),
    };
    let (method, path) = (&req.method, &req.path);
    let (resp, panicked) = match catch_unwind(AssertUnwindSafe(|| ctx.handler.handle(&req))) {
        Ok(resp) => (resp, false),
        Err(_payload) => {
            // The payload may quote secrets; the path is ours to log, the query is not.
            crate::log::error("handler panicked", &[("path", path.clone().into())]);
            (reject_response(&Reject::Internal, limits), true)
        }
    };
    let keep_alive =
        head.keep_alive && !panicked && !wants_close(&resp) && !ctx.shutdown.is_shutdown();
    let status = resp.status;
    let subject = resp.subject.clone();
    let budget = Budget::new(limits.min_transfer_rate, limits.min_rate_grace);
    let mut guarded = RateGuard::new(t, budget, resting(limits));
    let result = write_response(
        &mut guarded,
        resp,
        ReplyMode {
            http11,
            head_only: is_head,
            keep_alive,
        },
    );
    if guarded.tripped() {
        let b = guarded.budget();
        crate::log::warn(
            "slow reader: connection closed below the minimum transfer rate",
            &[
                ("remote", remote.text.as_str().into()),
                ("path", path.clone().into()),
                ("bytes", b.bytes().into()),
                ("blockedMs", (b.blocked().as_millis() as u64).into()),
                ("minTransferRate", limits.min_transfer_rate.into()),
            ],
        );
    }
    drop(guarded);
    let bytes = match &result {
        Ok(w) => w.bytes,
        Err(WriteError::Source { written, .. }) => *written,
        Err(WriteError::Client) => 0,
    };
    access_log(
        &remote.text,
        Some((method, path)),
        status,
        bytes,
        x.started,
        subject,
    );
    match result {
        Ok(_) if keep_alive => Next::KeepAlive,
        Ok(_) => Next::Close,
        Err(WriteError::Client) => Next::Abort,
        Err(WriteError::Source { detail, .. }) => {
            crate::log::warn(
                "response body failed mid-stream; connection aborted",
                &[("path", path.as_str().into()), ("error", detail.into())],
            );
            Next::Abort
        }
    }
}

/// The write timeout a connection keeps between responses (see
/// [`resting_write_timeout`]): set once per connection, not twice per request.
pub(crate) fn resting(limits: &Limits) -> Duration {
    resting_write_timeout(
        limits.min_transfer_rate,
        limits.min_rate_grace,
        limits.write_timeout,
    )
}

fn continue_100<T: Transport>(t: &mut T) -> io::Result<()> {
    t.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    t.flush()
}

/// Read and discard what the client is still sending, briefly and boundedly, so our
/// answer is not destroyed by a TCP reset when we close with unread input.
pub(crate) fn linger<T: Transport>(t: &mut T) {
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = Vec::with_capacity(16 * 1024);
    let mut total = 0;
    while total < LINGER_BYTES {
        scratch.clear();
        match read_some(t, &mut scratch, 16 * 1024, deadline) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// A connection's client: its address, and that address as the access log names it
/// (formatted once per connection: `SocketAddr`'s `Display` was a good part of the
/// access line's cost).
pub(crate) struct Remote {
    pub peer: Peer,
    pub text: String,
}

impl Remote {
    pub(crate) fn new(peer: Peer) -> Remote {
        let text = match &peer {
            Peer::Tcp(addr) => addr.to_string(),
            Peer::Unix { uid: Some(uid) } => format!("unix:uid={uid}"),
            Peer::Unix { uid: None } => "unix".into(),
        };
        Remote { peer, text }
    }
}

/// The one access-log line per request. Never headers, never the query.
fn access_log(
    remote: &str,
    route: Option<(&str, &str)>,
    status: u16,
    bytes: u64,
    started: Instant,
    subject: Option<String>,
) {
    thread_local! {
        /// The line's buffer, kept between requests.
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let elapsed = started.elapsed();
    let now = std::time::SystemTime::now();
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        let fields = (route, status, bytes, elapsed, subject.as_deref());
        access_line(&mut line, remote, fields, now);
        crate::log::write_line(&line);
    });
}

/// What an access line says of a request: its method and path, status, bytes sent,
/// time taken and subject.
type Fields<'a> = (
    Option<(&'a str, &'a str)>,
    u16,
    u64,
    Duration,
    Option<&'a str>,
);

/// The access-log line: exactly what `log::emit` writes for these fields (the same keys
/// in the same sorted order, numbers as serde_json writes them), but built by hand in
/// one buffer, since it is written for every request: the field map cost a few dozen
/// allocations, and `fmt` and float formatting more than the rest of the line.
fn access_line(v: &mut Vec<u8>, remote: &str, fields: Fields, time: std::time::SystemTime) {
    fn string_or_null(v: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                let _ = serde_json::to_writer(&mut *v, s);
            }
            None => v.extend_from_slice(b"null"),
        }
    }
    let (route, status, bytes, elapsed, subject) = fields;
    v.extend_from_slice(b"{\"bytes\":");
    push_decimal(v, bytes, 0);
    v.extend_from_slice(b",\"durationMs\":");
    push_millis(v, elapsed);
    v.extend_from_slice(b",\"level\":\"info\",\"method\":");
    // Method and path are client text: clipped like every logged field.
    let clipped = route.map(|(m, p)| (crate::log::clip(m), crate::log::clip(p)));
    string_or_null(v, clipped.as_ref().map(|r| &*r.0));
    v.extend_from_slice(b",\"msg\":\"request\",\"path\":");
    string_or_null(v, clipped.as_ref().map(|r| &*r.1));
    // Socket addresses and `unix:uid=N` never need JSON escaping.
    v.extend_from_slice(b",\"remote\":\"");
    v.extend_from_slice(remote.as_bytes());
    v.extend_from_slice(b"\",\"status\":");
    push_decimal(v, status.into(), 0);
    v.extend_from_slice(b",\"subject\":");
    string_or_null(v, subject);
    v.extend_from_slice(b",\"time\":\"");
    crate::time::push_rfc3339_millis(v, time);
    v.extend_from_slice(b"\"}\n");
}

/// `n` in decimal, with at least `width` digits (zero-padded).
pub(crate) fn push_decimal(v: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < width.max(1) {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    v.extend_from_slice(&digits[i..]);
}

/// `d` in milliseconds with up to three decimals, as serde_json writes the `f64`
/// `micros / 1000.0`: the shortest form that reads back the same, which for these
/// values is the exact decimal (`0.014`, `1.5`, `12.0`).
fn push_millis(v: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros().min(u64::MAX as u128) as u64;
    push_decimal(v, micros / 1000, 0);
    v.push(b'.');
    let mut frac = micros % 1000;
    let mut width = 3;
    while width > 1 && frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    push_decimal(v, frac, width);
}

/// Peer of an accepted TCP connection; kept here so `Peer` stays a plain data type.
pub(crate) fn tcp_peer(addr: SocketAddr) -> Peer {
    Peer::Tcp(addr)
}

/// Peer of an accepted Unix connection, with the uid from SO_PEERCRED.
pub(crate) fn unix_peer(s: &UnixStream) -> Peer {
    Peer::Unix {
        uid: sys::peer_uid(s.as_raw_fd()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_timeout_is_set_only_when_the_one_set_could_overshoot() {
        let ms = Duration::from_millis;
        let mut b = ReadBound::default();
        // First request: set below the time left.
        assert_eq!(b.update(ms(8000)), Some(ms(7000)));
        // Later reads and requests whose deadline is further than that: no syscall.
        assert_eq!(b.update(ms(8000)), None);
        assert_eq!(b.update(ms(7000)), None);
        // Less time left than the timeout set: set again, never above what is left.
        assert_eq!(b.update(ms(800)), Some(ms(700)));
        assert_eq!(
            b.update(Duration::from_micros(500)),
            Some(Duration::from_micros(500))
        );
        assert_eq!(b.update(ms(1)), None);
    }

    /// What `log::emit` would write for these fields.
    fn emitted(fields: serde_json::Value, time: &str) -> Vec<u8> {
        let mut m = fields.as_object().unwrap().clone();
        m.insert("time".into(), time.into());
        m.insert("level".into(), "info".into());
        let mut text = serde_json::Value::Object(m).to_string();
        text.push('\n');
        text.into_bytes()
    }

    #[test]
    fn access_log_has_exactly_the_agreed_fields() {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_768_478_400_123);
        let time = crate::time::rfc3339_millis(at);
        let time = time.as_str();
        let line = |remote: &Peer, fields: Fields| {
            let mut v = Vec::new();
            access_line(&mut v, &Remote::new(remote.clone()).text, fields, at);
            v
        };
        let peer = Peer::Tcp("10.0.0.5:4000".parse().unwrap());
        let fields = (
            Some(("GET", "/v1/nodes")),
            200,
            42,
            Duration::from_micros(1500),
            Some("admin"),
        );
        let l = line(&peer, fields);
        let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "msg",
            "remote",
            "method",
            "path",
            "status",
            "bytes",
            "durationMs",
            "subject",
            "time",
            "level",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(v["remote"], "10.0.0.5:4000");
        assert_eq!(v["subject"], "admin");
        assert_eq!(v["durationMs"], 1.5);
        // Byte for byte the line the generic logger writes, so log readers see one format.
        let expected = serde_json::json!({
            "msg": "request", "remote": "10.0.0.5:4000", "method": "GET",
            "path": "/v1/nodes", "status": 200, "bytes": 42, "durationMs": 1.5,
            "subject": "admin",
        });
        assert_eq!(
            String::from_utf8(l).unwrap(),
            String::from_utf8(emitted(expected, time)).unwrap()
        );

        let fields = (None, 400, 0, Duration::ZERO, None);
        let l = line(&Peer::Unix { uid: Some(7) }, fields);
        let expected = serde_json::json!({
            "msg": "request", "remote": "unix:uid=7", "method": null, "path": null,
            "status": 400, "bytes": 0, "durationMs": 0.0, "subject": null,
        });
        assert_eq!(l, emitted(expected, time));
        // Quotes and control characters in a path stay inside the JSON string.
        let fields = (Some(("GET", "/a\"b\n")), 404, 0, Duration::ZERO, None);
        let l = line(&Peer::Unix { uid: None }, fields);
        let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(
            (&v["path"], &v["remote"]),
            (&"/a\"b\n".into(), &"unix".into())
        );
        // Every number as serde_json writes it (the generic logger's format).
        let mut durations: Vec<u64> = (0..20_000).collect();
        durations.extend([99_999, 100_000, 123_456_789, 3_600_000_000, u32::MAX.into()]);
        for micros in durations {
            let mut v = Vec::new();
            push_millis(&mut v, Duration::from_micros(micros));
            let want = serde_json::to_string(&(micros as f64 / 1000.0)).unwrap();
            assert_eq!(String::from_utf8(v).unwrap(), want, "{micros} µs");
        }
        for n in [0, 7, 10, 200, 65_535, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n, 0);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }
}
