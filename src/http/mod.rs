//! Our HTTP/1.1 server: listener, TLS, framing, limits, worker pool.
//!
//! This is the only code that touches sockets. It knows nothing about Kubernetes or the
//! API's routes: it parses a request, hands it to a [`Handler`], and writes the
//! [`Response`] back.
//!
//! Map: `server` (listener, accept loop, worker pool, shutdown) → `conn` (one connection:
//! handshake, deadlines, request loop of read head, read body, dispatch; generic over the
//! stream) → `parse` (pure framing,
//! fuzzable), `query` (the one query-string parser) and `response` (writing, through
//! `rate`'s minimum-transfer-rate guard). `limits` holds every bound, `tls` the rustls
//! configuration and certificate files, `signals` the shutdown handle and SIGTERM/SIGINT.
//! The raw system calls (poll, epoll, pipe2, SO_PEERCRED, sigaction) are in [`crate::sys`].
//!
//! Invariants: every read runs under a total deadline; every buffer has a cap; at most
//! `Limits::max_connections` connections are open, and a connection holds a worker
//! thread only while its handshake or a request is in progress (between requests it
//! is parked in an epoll set); EOF (TLS close_notify included)
//! ends a connection; no error ends the accept loop; a handler panic costs one 500;
//! server-generated errors are the JSON envelope `{"error","message"}` with
//! `Connection: close`; logs never carry headers, query strings or bodies.

use std::io::Read;
use std::net::SocketAddr;

mod conn;
mod limits;
pub mod parse;
pub mod query;
mod rate;
mod response;
mod server;
mod signals;

pub mod tls;

#[cfg(test)]
mod tests;

pub use limits::Limits;
pub use server::{Server, Stats};
pub use signals::{install_signal_handlers, ShutdownHandle};

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client (always over TLS).
    Tcp(SocketAddr),
    /// A local client on the Unix socket; `uid` from SO_PEERCRED when known.
    Unix { uid: Option<u32> },
}

/// One parsed request, body included (bodies are small and capped by [`Limits`]).
#[derive(Debug)]
pub struct Request {
    /// The method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// The path part of the request target, before any `?`, not percent-decoded.
    pub path: String,
    /// The raw query string after `?`, `""` when there is none.
    pub query: String,
    /// Header names lowercased, values as sent (trimmed), in arrival order.
    pub headers: Vec<(String, String)>,
    /// The whole body (already de-chunked), at most `Limits::max_body` bytes.
    pub body: Vec<u8>,
    pub peer: Peer,
}

impl Request {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// Streamed from a reader: with a length it is sent with Content-Length, without one
    /// it is sent chunked. A read error mid-stream aborts the connection (never a
    /// clean end), so a client can tell a torn body from a complete one.
    Stream {
        reader: Box<dyn Read + Send>,
        len: Option<u64>,
        /// When what was read is sent on to the client.
        flush: Flush,
    },
}

/// When a streamed body's bytes leave for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Whenever the writer sees fit, and at the end (bulk data: files, bundles).
    AtEnd,
    /// After every read: each read is a unit (an event) the client must see before the
    /// source blocks for the next one. Time the source spends blocked is idle time.
    EachRead,
}

/// A response as a handler builds it. The server adds `Content-Length` or
/// `Transfer-Encoding`, `Date`, and `Connection` itself.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// The authenticated subject, for the access log only.
    pub subject: Option<String>,
}

/// What the server calls for each request. Implementations never see a socket.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Response;

    /// Called when a server stops accepting, before it waits for in-flight requests:
    /// a handler that holds requests open (long polls, streams) ends them here, so the
    /// grace period is not spent on them. Every server sharing the shutdown handle
    /// calls it, so it must be idempotent.
    fn shutting_down(&self) {}
}

/// Replace the default panic hook (which prints the panic message, and a message may
/// quote a secret) with one that logs only where the panic happened. Call once at start.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        let thread = std::thread::current().name().map(str::to_string);
        crate::log::error(
            "panic",
            &[("location", location.into()), ("thread", thread.into())],
        );
    }));
}
