//! Watches: a stream of changes to one resource, from a list's resourceVersion, with
//! bookmarks, as client-go's reflector and kube-rs's watcher use them.
//!
//! A [`Watcher`] has an HTTP agent of its own, so [`Watcher::stop`] can cut a stream
//! blocked in a read (ureq's `Agent::shutdown`) without touching other calls: the thread
//! that owns the watch then returns at once instead of waiting for the next event.
//! What to do after a stream ends (watch again, list again, back off) is the caller's.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use super::etcd::ETCD_MEMBERS;
use super::leases::lease_path;
use super::nodes::NODES;
use super::paging::watch_path;
use super::types::{EtcdMember, Lease, Node};
use super::wire::{parse_event, Kind, WireEvent};
use super::{Client, Error};

/// The server ends each watch after this long (plus up to as much again, at random,
/// so controllers restarted together do not re-watch together), as client-go does.
const WATCH_SECONDS: u64 = 300;
/// Longest event line accepted (one object; a node with many images is large).
const MAX_EVENT: u64 = 16 << 20;

/// What a watch reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<K> {
    /// The server accepted the watch: events follow from the requested version.
    Open,
    Added(K),
    Modified(K),
    Deleted(K),
    /// The stream is current up to this resourceVersion (a bookmark, or after any event).
    Version(String),
}

/// Watch connections on an agent of their own. Cheap to clone; clones share the agent,
/// so one [`Watcher::stop`] cuts every stream of every clone.
#[derive(Clone)]
pub struct Watcher {
    client: Client,
    agent: ureq::Agent,
}

impl Watcher {
    pub fn new(client: &Client) -> Watcher {
        Watcher {
            client: client.clone(),
            agent: client.stream_agent(),
        }
    }

    /// Cut the stream now (from any thread); every later watch fails at once.
    pub fn stop(&self) {
        self.agent.clone().shutdown();
    }

    /// Watch nodes from `version` until the server ends the stream (`Ok`) or it fails.
    pub fn nodes(&self, version: &str, on: &mut dyn FnMut(Event<Node>)) -> Result<(), Error> {
        self.watch(NODES, version, on)
    }

    /// Watch the Leases in `ns` from `version`.
    pub fn leases(
        &self,
        ns: &str,
        version: &str,
        on: &mut dyn FnMut(Event<Lease>),
    ) -> Result<(), Error> {
        self.watch(&lease_path(ns, None)?, version, on)
    }

    /// Watch k0s's EtcdMembers from `version`.
    pub fn etcd_members(
        &self,
        version: &str,
        on: &mut dyn FnMut(Event<EtcdMember>),
    ) -> Result<(), Error> {
        self.watch(ETCD_MEMBERS, version, on)
    }

    fn watch<K: Kind>(
        &self,
        base: &str,
        version: &str,
        on: &mut dyn FnMut(Event<K>),
    ) -> Result<(), Error> {
        let seconds = WATCH_SECONDS + jitter(WATCH_SECONDS);
        let path = watch_path(base, "", version, seconds);
        // The server closes the stream at `seconds`; the margin covers a slow close.
        let budget = Duration::from_secs(seconds + 30);
        let body = self.client.open_stream(&self.agent, &path, budget)?;
        on(Event::Open);
        read_events(body.into_reader(), on)
    }
}

/// Feed each line of a watch stream to `on` until the stream ends.
fn read_events<K: Kind>(body: impl Read, on: &mut dyn FnMut(Event<K>)) -> Result<(), Error> {
    let mut reader = BufReader::with_capacity(8 << 10, body);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_EVENT + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::Unavailable(format!("watch stream broken: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        if line.len() as u64 > MAX_EVENT {
            return Err(Error::Protocol(format!(
                "watch event larger than {MAX_EVENT} bytes"
            )));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (event, version) = parse_event::<K>(&line)?;
        match event {
            WireEvent::Added(k) => on(Event::Added(k)),
            WireEvent::Modified(k) => on(Event::Modified(k)),
            WireEvent::Deleted(k) => on(Event::Deleted(k)),
            WireEvent::Bookmark => {}
        }
        if let Some(v) = version {
            on(Event::Version(v));
        }
    }
}

/// A random whole number of seconds below `max`. Jitter only spreads reconnects, so
/// without randomness the watch reconnects unspread rather than not at all.
fn jitter(max: u64) -> u64 {
    crate::random::below(max).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &str) -> (Vec<String>, Result<(), Error>) {
        let mut seen = Vec::new();
        let r = read_events::<Node>(stream.as_bytes(), &mut |e| {
            seen.push(match e {
                Event::Open => "open".to_string(),
                Event::Added(n) => format!("+{}", n.name),
                Event::Modified(n) => format!("~{}", n.name),
                Event::Deleted(n) => format!("-{}", n.name),
                Event::Version(v) => format!("@{v}"),
            })
        });
        (seen, r)
    }

    #[test]
    fn stream_of_events_bookmarks_and_gone() {
        let (seen, r) = events(concat!(
            r#"{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"5"}}}"#,
            "\n\n",
            r#"{"type":"BOOKMARK","object":{"kind":"Node","metadata":{"resourceVersion":"8"}}}"#,
            "\n",
            r#"{"type":"DELETED","object":{"metadata":{"name":"a","resourceVersion":"9"}}}"#,
            "\n",
        ));
        assert_eq!(seen, ["+a", "@5", "@8", "-a", "@9"]);
        assert_eq!(r, Ok(()));
        let (seen, r) = events(concat!(
            r#"{"type":"MODIFIED","object":{"metadata":{"name":"b","resourceVersion":"6"}}}"#,
            "\n",
            r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}"#,
            "\n",
        ));
        assert_eq!(seen, ["~b", "@6"]);
        assert_eq!(r, Err(Error::Gone));
    }

    #[test]
    fn torn_event_is_an_error() {
        let (_, r) = events(r#"{"type":"ADDED","object":{"metad"#);
        assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
    }
}
