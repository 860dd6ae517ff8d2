//! Every bound the server enforces: deadlines, size caps, and pool size.
//!
//! One plain struct so the daemon can tune them from config and tests can shrink them to
//! milliseconds; [`Limits::default`] holds the production values.

use std::time::Duration;

/// Deadlines and caps for the server. All deadlines are totals, not per-read timeouts, so a
/// client trickling one byte at a time cannot stretch them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once (parked between requests or served); past this a new
    /// connection gets a 503 and is closed. Worker threads never outnumber them.
    pub max_connections: usize,
    /// Connections one address (an IPv6 /64) may hold at once; past it, 503.
    pub max_connections_per_address: usize,
    /// Stack size of each worker thread. Workers run handlers too, so this must hold the
    /// deepest handler (debug builds need more than release).
    pub worker_stack: usize,
    /// From accept to a completed TLS handshake.
    pub handshake_timeout: Duration,
    /// From the first byte of a request (or from the handshake, for the first request) to
    /// its complete head.
    pub head_timeout: Duration,
    /// From the end of the head to the end of the body.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// How long one write may make no progress before the connection is dropped.
    pub write_timeout: Duration,
    /// The slowest a client may take a response, in bytes per second of time the
    /// server is blocked on it (`src/http/rate.rs`); 0 turns the rule off.
    pub min_transfer_rate: u64,
    /// Blocked time every response is allowed before the rate applies.
    pub min_rate_grace: Duration,
    /// After shutdown, how long in-flight requests may take before `run` returns anyway.
    pub grace: Duration,
    /// Request line plus headers, in bytes (431 past it).
    pub max_head: usize,
    /// Number of header fields (431 past it).
    pub max_headers: usize,
    /// Request target length in bytes (414 past it).
    pub max_url: usize,
    /// Request body after de-chunking, in bytes (413 past it).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_connections_per_address: 64,
            worker_stack: 512 * 1024,
            handshake_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            min_transfer_rate: 1024,
            min_rate_grace: Duration::from_secs(10),
            grace: Duration::from_secs(10),
            max_head: 16 * 1024,
            max_headers: 100,
            max_url: 8 * 1024,
            max_body: 64 * 1024,
        }
    }
}
