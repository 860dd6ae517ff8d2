//! Waiting as an API, served from the watch-fed view (`crate::cache`) without any
//! API-server request while waiting:
//! - `GET /v1/nodes/{name}?waitFor=ready|drained|deleted&timeoutSeconds=N` answers as soon
//!   as the node is in that state, or with 504 `wait_timeout` naming its state when time
//!   is up;
//! - `GET /v1/nodes?watch=true` streams newline-delimited JSON events, the current nodes
//!   first as `ADDED`, then `ADDED`/`MODIFIED`/`DELETED`, and a `BOOKMARK` line after
//!   each [`HEARTBEAT`] without a change (so a client that has gone is noticed).
//!
//! Both hold a connection; at most `--max-waiters` are open at once (503 `server_busy`
//! past it), never more than half of `--max-connections`, so ordinary requests always
//! find a worker. On SIGTERM every one ends at once: a waiter with 503 `shutting_down`,
//! a stream with a clean end (the chunked terminator).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{ApiError, Code, Context};
use crate::cache::{CachedNode, Next, WaitSlot, Waited};
use crate::http::query::Params;
use crate::http::{Body, Flush, Response};
use crate::kube::Node;
use crate::lifecycle::{drain_info, DrainState};

/// Longest wait a caller may ask for, and the wait when it does not say.
pub const MAX_WAIT_SECONDS: u64 = 600;
const DEFAULT_WAIT_SECONDS: u64 = 60;
/// A stream with nothing to say sends a `BOOKMARK` line this often.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    Ready,
    Drained,
    Deleted,
}

impl WaitFor {
    fn as_str(self) -> &'static str {
        match self {
            WaitFor::Ready => "ready",
            WaitFor::Drained => "drained",
            WaitFor::Deleted => "deleted",
        }
    }

    fn met(self, node: Option<&CachedNode>) -> bool {
        match (self, node) {
            (WaitFor::Deleted, n) => n.is_none(),
            (WaitFor::Ready, Some(n)) => n.ready(),
            (WaitFor::Drained, Some(n)) => n.drain() == DrainState::Drained,
            (_, None) => false,
        }
    }
}

/// `waitFor` and `timeoutSeconds` from a node's query; `None` when not waiting.
pub fn wait_params(query: &str) -> Result<Option<(WaitFor, u64)>, ApiError> {
    let q = Params::parse(query, &["waitFor", "timeoutSeconds"])?;
    let wait = match q.get("waitFor") {
        None => None,
        Some("ready") => Some(WaitFor::Ready),
        Some("drained") => Some(WaitFor::Drained),
        Some("deleted") => Some(WaitFor::Deleted),
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidQuery,
                "waitFor must be ready, drained or deleted",
            ))
        }
    };
    let timeout = match q.number("timeoutSeconds", MAX_WAIT_SECONDS)? {
        Some(0) => {
            return Err(ApiError::new(
                Code::InvalidQuery,
                format!("timeoutSeconds must be a whole number from 1 to {MAX_WAIT_SECONDS}"),
            ))
        }
        t => t,
    };
    match (wait, timeout) {
        (None, Some(_)) => Err(ApiError::new(
            Code::InvalidQuery,
            "timeoutSeconds needs waitFor (ready, drained or deleted)",
        )),
        (None, None) => Ok(None),
        (Some(w), t) => Ok(Some((w, t.unwrap_or(DEFAULT_WAIT_SECONDS)))),
    }
}

/// `watch` from the node list's query.
pub fn watch_param(query: &str) -> Result<bool, ApiError> {
    Ok(Params::parse(query, &["watch"])?
        .bool("watch")?
        .unwrap_or(false))
}

fn busy() -> ApiError {
    ApiError::new(
        Code::ServerBusy,
        "too many waits and node streams are open on this daemon (--max-waiters); \
         try again shortly or ask another controller",
    )
    .with_header("Retry-After", "5")
}

fn shutting_down() -> ApiError {
    ApiError::new(
        Code::ShuttingDown,
        "this daemon is stopping; ask again (another controller, or this one once restarted)",
    )
    .with_header("Retry-After", "2")
}

/// Wait for node `name`. `Ok(Some(node))` for ready/drained, `Ok(None)` for deleted.
pub fn wait_node(
    ctx: &Context,
    name: &str,
    wait: WaitFor,
    seconds: u64,
) -> Result<Option<Arc<CachedNode>>, ApiError> {
    let slot = ctx.cache.wait_slot().ok_or_else(busy)?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    match ctx.cache.wait_node(&slot, name, deadline, |n| wait.met(n)) {
        Waited::Met(node) => Ok(node),
        Waited::TimedOut(node) => Err(ApiError::new(
            Code::WaitTimeout,
            format!(
                "node {name:?} is not {} after {seconds} s: {}",
                wait.as_str(),
                describe(name, node.map(|n| n.node()).as_ref())
            ),
        )),
        Waited::Unsynced => Err(ApiError::new(
            Code::KubernetesUnavailable,
            format!(
                "node {name:?}'s state could not be seen for the whole {seconds} s: the \
                 Kubernetes API server is not answering; try again when it is"
            ),
        )
        .with_header("Retry-After", "5")),
        Waited::Stopping => Err(shutting_down()),
    }
}

/// The node's state now, in a sentence.
fn describe(name: &str, node: Option<&Node>) -> String {
    let Some(n) = node else {
        return format!("there is no node named {name:?}");
    };
    let ready = match n.conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => "Ready".to_string(),
        Some(c) => format!(
            "not Ready (Ready={}{})",
            c.status,
            c.reason
                .as_deref()
                .map(|r| format!(", reason {r}"))
                .unwrap_or_default()
        ),
        None => "not Ready yet (no Ready condition reported)".to_string(),
    };
    let info = drain_info(&n.annotations);
    let drain = match info.state {
        DrainState::Active => String::new(),
        s if info.remaining.is_empty() => format!("; its drain state is {}", s.as_str()),
        s => format!(
            "; its drain state is {}, {} pods remaining",
            s.as_str(),
            info.remaining.len()
        ),
    };
    format!("it exists and is {ready}{drain}")
}

/// The `?watch=true` stream: 200 with a body that ends only on shutdown, on a broken
/// view, or when the client falls too far behind (it then lists again).
pub fn node_stream(ctx: &Context) -> Result<Response, ApiError> {
    let slot = ctx.cache.wait_slot().ok_or_else(busy)?;
    let (nodes, cursor) = match ctx.cache.subscribe(&slot) {
        Some(start) => start,
        None => {
            return Err(ApiError::new(
                Code::KubernetesUnavailable,
                "the node view is not in sync with the Kubernetes API server yet (or it \
                 stopped answering); try again in a few seconds",
            )
            .with_header("Retry-After", "5"))
        }
    };
    let mut pending = Vec::new();
    for n in nodes {
        pending.extend(event_line("ADDED", &n));
    }
    Ok(Response {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/x-ndjson".into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: Body::Stream {
            reader: Box::new(NodeStream {
                cache: ctx.cache.clone(),
                _slot: slot,
                cursor,
                pending,
                pos: 0,
                quiet_since: Instant::now(),
            }),
            len: None,
            flush: Flush::EachRead,
        },
        subject: None,
    })
}

/// One event as the stream sends it. The node's keys come out sorted (`json!` builds a
/// sorted map), unlike in `/v1/nodes`: as the stream has always sent them.
pub(crate) fn event_line(kind: &str, node: &CachedNode) -> Vec<u8> {
    let node: serde_json::Value = serde_json::from_slice(node.json()).unwrap_or_default();
    let mut line = serde_json::to_vec(&json!({"type": kind, "node": node})).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The stream's body: each read hands out what is pending, else blocks for changes.
struct NodeStream {
    cache: crate::cache::Cache,
    _slot: WaitSlot,
    cursor: u64,
    pending: Vec<u8>,
    pos: usize,
    quiet_since: Instant,
}

impl Read for NodeStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            let pause = HEARTBEAT.saturating_sub(self.quiet_since.elapsed());
            match self.cache.next_changes(&mut self.cursor, pause) {
                Next::Events(events) => {
                    for (change, node) in events {
                        self.pending.extend(event_line(change.as_str(), &node));
                    }
                    self.quiet_since = Instant::now();
                }
                Next::Idle => {
                    if self.quiet_since.elapsed() >= HEARTBEAT {
                        self.pending.extend_from_slice(b"{\"type\":\"BOOKMARK\"}\n");
                        self.quiet_since = Instant::now();
                    }
                }
                Next::End => return Ok(0),
            }
        }
        let n = (self.pending.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_queries() {
        assert_eq!(wait_params("").unwrap(), None);
        assert_eq!(
            wait_params("waitFor=ready").unwrap(),
            Some((WaitFor::Ready, DEFAULT_WAIT_SECONDS))
        );
        assert_eq!(
            wait_params("waitFor=deleted&timeoutSeconds=600").unwrap(),
            Some((WaitFor::Deleted, 600))
        );
        for bad in [
            "waitFor=up",
            "waitFor=ready&timeoutSeconds=601",
            "waitFor=ready&timeoutSeconds=0",
            "waitFor=ready&timeoutSeconds=-1",
            "timeoutSeconds=5",
            "waitFor=ready&waitFor=ready",
            "waitFor=re%zzdy",
            "wait=ready",
        ] {
            assert!(wait_params(bad).is_err(), "{bad}");
        }
        assert!(watch_param("watch=true").unwrap());
        assert!(!watch_param("").unwrap());
        assert!(watch_param("watch=yes").is_err());
        assert!(watch_param("limit=5").is_err());
    }

    #[test]
    fn conditions() {
        let mut n = Node {
            name: "n".into(),
            ready: true,
            ..Node::default()
        };
        let met = |w: WaitFor, n: &Node| w.met(Some(&CachedNode::new(n.clone())));
        assert!(met(WaitFor::Ready, &n));
        assert!(!WaitFor::Ready.met(None));
        assert!(WaitFor::Deleted.met(None) && !met(WaitFor::Deleted, &n));
        assert!(!met(WaitFor::Drained, &n));
        n.annotations
            .insert(crate::lifecycle::STATE_ANNOTATION.into(), "drained".into());
        assert!(met(WaitFor::Drained, &n));
        n.ready = false;
        assert!(!met(WaitFor::Ready, &n));
        assert_eq!(describe("x", None), "there is no node named \"x\"");
    }
}
