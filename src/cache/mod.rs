//! The watch-fed view of the cluster: Nodes, the Leases in `kube-node-lease` (one per
//! node, and k0s's leader leases) and k0s's EtcdMembers, each kept by one reflector
//! thread (`reflector.rs`: list, then watch from the list's resourceVersion with
//! bookmarks; list again on 410 Gone; back off on failures).
//!
//! Readers never get an answer from a view that is out of sync: every read returns
//! `None` until the first list has completed, and again while the watch has been broken
//! for longer than [`STALE_AFTER`]; callers then list live, as before the cache existed
//! (so an unreachable API server still answers 503 `kubernetes_unavailable`).
//!
//! Nodes are kept slim (name, labels, annotations, InternalIP, the Ready condition):
//! what the readers use. Node changes are also kept as a short numbered history, which waiters
//! (`?waitFor=`) and streams (`?watch=true`) follow without any API-server traffic;
//! every change wakes them through one condition variable.

mod reflector;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kube::{self, EtcdMember, Lease, Node};

/// A view whose watch has been broken this long is out of sync: readers list live.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Node changes kept for streams; a stream that falls further behind is ended.
const HISTORY: usize = 4096;
/// The namespace whose Leases are watched (node heartbeats and k0s's leader leases).
pub const LEASE_NAMESPACE: &str = crate::lifecycle::health::LEASE_NAMESPACE;

/// What happened to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

/// One resource's copy and its sync state.
struct View<K> {
    /// Shared with the node history, so a change costs a pointer there, not a copy.
    items: BTreeMap<String, Arc<K>>,
    /// The first list has completed.
    listed: bool,
    /// When the watch (or list) last failed and has not been re-established since.
    broken_since: Option<Instant>,
    /// When the copy was last confirmed current (list, event or bookmark).
    confirmed: Option<Instant>,
}

impl<K> Default for View<K> {
    fn default() -> Self {
        View {
            items: BTreeMap::new(),
            listed: false,
            broken_since: None,
            confirmed: None,
        }
    }
}

impl<K> View<K> {
    fn in_sync(&self, now: Instant) -> bool {
        self.listed
            && self
                .broken_since
                .is_none_or(|t| now.saturating_duration_since(t) < STALE_AFTER)
    }
}

#[derive(Default)]
struct State {
    nodes: View<Node>,
    leases: View<Lease>,
    etcd: View<EtcdMember>,
    /// Bumped on every node change; the serialised answer below is for this number.
    node_generation: u64,
    /// `(generation, body)`: the last answer built by [`Cache::nodes_body`].
    node_body: Option<(u64, Arc<Vec<u8>>)>,
    /// Recent node changes, numbered by `node_generation`.
    history: VecDeque<(u64, Change, Arc<Node>)>,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    events: AtomicU64,
    relists: AtomicU64,
    /// Open waiters and streams, and their cap.
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// The view, shared by the API handlers and the drain worker. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    shared: Arc<Shared>,
}

/// The cache's reflector threads; stopped (and joined) by [`Threads::stop`].
pub struct Threads {
    cache: Cache,
    /// Shared by the reflectors: one stop cuts all their streams.
    watcher: kube::Watcher,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// Figures for `/metrics`.
pub struct Stats {
    pub nodes: usize,
    pub in_sync: bool,
    /// Seconds since the node view was last confirmed current (list, event, bookmark).
    pub age_seconds: Option<f64>,
    pub events: u64,
    pub relists: u64,
    pub waiting: usize,
}

/// A slot for one waiter or stream, given back when dropped.
pub struct WaitSlot {
    cache: Cache,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.cache.shared.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a wait for a node came to.
pub enum Waited {
    /// The condition held; the node as it was then (`None`: it does not exist).
    Met(Option<Node>),
    /// Time ran out; the node as it is now.
    TimedOut(Option<Node>),
    /// Time ran out while the view was out of sync: the node's state is unknown.
    Unsynced,
    /// The daemon is stopping.
    Stopping,
}

/// What a stream gets next.
pub enum Next {
    Events(Vec<(Change, Arc<Node>)>),
    /// Nothing happened within the poll interval.
    Idle,
    /// The stream fell behind the history, the view went out of sync, or the daemon is
    /// stopping: end the stream cleanly.
    End,
}

impl Cache {
    /// An empty view (out of sync until its threads have listed) allowing at most
    /// `max_waiting` open waiters and streams.
    pub fn new(max_waiting: usize) -> Cache {
        Cache {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                events: AtomicU64::new(0),
                relists: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                max_waiting,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps until the view changes, `stopping` is set, or `pause` has passed.
    fn wait_change<'a>(&self, st: MutexGuard<'a, State>, pause: Duration) -> MutexGuard<'a, State> {
        self.shared
            .changed
            .wait_timeout(st, pause)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Start one reflector thread per resource.
    pub fn start(&self, kube: &kube::Client) -> std::io::Result<Threads> {
        let watcher = kube::Watcher::new(kube);
        let mut threads = Threads {
            cache: self.clone(),
            watcher: watcher.clone(),
            handles: Vec::new(),
        };
        for resource in reflector::Resource::ALL {
            let watcher = watcher.clone();
            let (cache, kube) = (self.clone(), kube.clone());
            let handle = std::thread::Builder::new()
                .name(format!("watch-{}", resource.name()))
                .spawn(move || reflector::run(&cache, &kube, &watcher, resource));
            match handle {
                Ok(h) => threads.handles.push(h),
                Err(e) => {
                    threads.stop();
                    return Err(e);
                }
            }
        }
        Ok(threads)
    }

    /// Whether every view is in sync.
    pub fn in_sync(&self) -> bool {
        let st = self.lock();
        let now = Instant::now();
        st.nodes.in_sync(now) && st.leases.in_sync(now) && st.etcd.in_sync(now)
    }

    /// Every node, if the node view is in sync.
    pub fn nodes(&self) -> Option<Vec<Node>> {
        let st = self.lock();
        st.nodes.in_sync(Instant::now()).then(|| {
            st.nodes
                .items
                .values()
                .map(|n| n.as_ref().clone())
                .collect()
        })
    }

    /// The names of the nodes `keep` selects, if the node view is in sync.
    pub fn node_names(&self, keep: impl Fn(&Node) -> bool) -> Option<Vec<String>> {
        let st = self.lock();
        st.nodes.in_sync(Instant::now()).then(|| {
            st.nodes
                .items
                .values()
                .filter(|n| keep(n))
                .map(|n| n.name.clone())
                .collect()
        })
    }

    /// Every node and every Lease in [`LEASE_NAMESPACE`], if both views are in sync.
    pub fn nodes_and_leases(&self) -> Option<(Vec<Node>, Vec<Lease>)> {
        let st = self.lock();
        let now = Instant::now();
        (st.nodes.in_sync(now) && st.leases.in_sync(now)).then(|| {
            (
                st.nodes
                    .items
                    .values()
                    .map(|n| n.as_ref().clone())
                    .collect(),
                st.leases
                    .items
                    .values()
                    .map(|l| l.as_ref().clone())
                    .collect(),
            )
        })
    }

    /// k0s's EtcdMember named `name` (`Some(None)`: there is none), if in sync.
    pub fn etcd_member(&self, name: &str) -> Option<Option<EtcdMember>> {
        let st = self.lock();
        st.etcd
            .in_sync(Instant::now())
            .then(|| st.etcd.items.get(name).map(|m| m.as_ref().clone()))
    }

    /// The serialised answer over every node (in name order), built by `build` at most
    /// once per change, if the node view is in sync. `build` runs under the cache's lock.
    pub fn nodes_body(
        &self,
        build: impl FnOnce(&mut dyn Iterator<Item = &Node>) -> Vec<u8>,
    ) -> Option<Arc<Vec<u8>>> {
        let mut st = self.lock();
        if !st.nodes.in_sync(Instant::now()) {
            return None;
        }
        if let Some((generation, body)) = &st.node_body {
            if *generation == st.node_generation {
                return Some(body.clone());
            }
        }
        let body = Arc::new(build(&mut st.nodes.items.values().map(Arc::as_ref)));
        st.node_body = Some((st.node_generation, body.clone()));
        Some(body)
    }

    /// A slot for one waiter or stream, or `None` when `max_waiting` are open.
    pub fn wait_slot(&self) -> Option<WaitSlot> {
        let s = &self.shared;
        s.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < s.max_waiting).then_some(n + 1)
            })
            .ok()
            .map(|_| WaitSlot {
                cache: self.clone(),
            })
    }

    /// Wait until `met` holds for node `name` (given `None` while it does not exist),
    /// or until `deadline`. Costs no API-server request: woken by the reflector.
    pub fn wait_node(
        &self,
        _slot: &WaitSlot,
        name: &str,
        deadline: Instant,
        met: impl Fn(Option<&Node>) -> bool,
    ) -> Waited {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if st.stopping {
                return Waited::Stopping;
            }
            // Out of sync, the copy proves nothing either way: keep waiting for the
            // reflector to catch up, and say so if time runs out first.
            let synced = st.nodes.in_sync(now);
            let node = st.nodes.items.get(name).map(Arc::as_ref);
            if synced && met(node) {
                return Waited::Met(node.cloned());
            }
            if now >= deadline {
                return if synced {
                    Waited::TimedOut(node.cloned())
                } else {
                    Waited::Unsynced
                };
            }
            // Wake at least once a second to notice a view gone stale without events.
            let pause = (deadline - now).min(Duration::from_secs(1));
            st = self.wait_change(st, pause);
        }
    }

    /// The start of a stream: every node now (as ADDED) and the number to follow from.
    pub fn subscribe(&self, _slot: &WaitSlot) -> Option<(Vec<Arc<Node>>, u64)> {
        let st = self.lock();
        st.nodes.in_sync(Instant::now()).then(|| {
            (
                st.nodes.items.values().cloned().collect(),
                st.node_generation,
            )
        })
    }

    /// The changes after `*cursor`, waiting up to `pause` for one.
    pub fn next_changes(&self, cursor: &mut u64, pause: Duration) -> Next {
        let mut st = self.lock();
        let until = Instant::now() + pause;
        loop {
            let now = Instant::now();
            if st.stopping || !st.nodes.in_sync(now) {
                return Next::End;
            }
            if st.node_generation > *cursor {
                let oldest = st.history.front().map_or(u64::MAX, |h| h.0);
                if oldest > *cursor + 1 {
                    return Next::End; // fell behind: the client lists again
                }
                let out: Vec<_> = st
                    .history
                    .iter()
                    .filter(|h| h.0 > *cursor)
                    .map(|h| (h.1, h.2.clone()))
                    .collect();
                *cursor = st.node_generation;
                return Next::Events(out);
            }
            if now >= until {
                return Next::Idle;
            }
            st = self.wait_change(st, until - now);
        }
    }

    /// Wake every waiter and stream to end (SIGTERM).
    pub fn release_waiters(&self) {
        self.lock().stopping = true;
        self.shared.changed.notify_all();
    }

    pub fn stats(&self) -> Stats {
        let st = self.lock();
        let now = Instant::now();
        Stats {
            nodes: st.nodes.items.len(),
            in_sync: st.nodes.in_sync(now) && st.leases.in_sync(now) && st.etcd.in_sync(now),
            age_seconds: st
                .nodes
                .confirmed
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            events: self.shared.events.load(Ordering::Relaxed),
            relists: self.shared.relists.load(Ordering::Relaxed),
            waiting: self.shared.waiting.load(Ordering::Relaxed),
        }
    }
}

impl Threads {
    /// Stop every reflector: cut their watch streams and join them.
    pub fn stop(self) {
        self.cache.release_waiters();
        self.watcher.stop();
        for h in self.handles {
            let _ = h.join();
        }
    }
}
