//! One reflector per resource: list, then watch from the list's resourceVersion; on a
//! 410 Gone list again; on any other failure mark the view broken, back off, and watch
//! again from the last version seen (a 410 then leads to a list). As client-go's
//! reflector, with its back-off from 0.2 s doubling to 10 s, reset by a watch that opened.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cache, CachedNode, Change, State, View, HISTORY, HISTORY_BYTES, LEASE_NAMESPACE};
use crate::kube::{self, EtcdMember, Event, Lease, Listed, Node};
use crate::lifecycle::health::{CONTROLLER_LEASE_PREFIX, LEADER_LEASE};
use crate::log;

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub(super) enum Resource {
    Nodes,
    Leases,
    EtcdMembers,
}

impl Resource {
    pub(super) const ALL: [Resource; 3] =
        [Resource::Nodes, Resource::Leases, Resource::EtcdMembers];

    pub(super) fn name(self) -> &'static str {
        match self {
            Resource::Nodes => "nodes",
            Resource::Leases => "leases",
            Resource::EtcdMembers => "etcdmembers",
        }
    }
}

/// How the cache files one kind of object.
trait Item: Sized + Send + 'static {
    /// What the view keeps of an object (readers' fields only: memory per node counts).
    type Kept: PartialEq + Send + Sync + 'static;
    /// The object's key and what the view keeps of it; `None`: the view does not keep
    /// objects like it.
    fn keep(self) -> Option<(String, Self::Kept)>;
    fn view(st: &mut State) -> &mut View<Self::Kept>;
    /// Called for each change, with the lock held (nodes keep a history).
    fn changed(_st: &mut State, _change: Change, _item: &Arc<Self::Kept>) {}
}

impl Item for Node {
    /// The bytes `/v1/nodes` sends for the node and the few fields other readers use
    /// (`node.rs`); a node's detail is read live.
    type Kept = CachedNode;
    fn keep(self) -> Option<(String, CachedNode)> {
        Some((self.name.clone(), CachedNode::new(self)))
    }
    fn view(st: &mut State) -> &mut View<CachedNode> {
        &mut st.nodes
    }
    fn changed(st: &mut State, change: Change, node: &Arc<CachedNode>) {
        // Before the first list nobody can be following (streams start in sync).
        if !st.nodes.listed {
            return;
        }
        st.node_generation += 1;
        let generation = st.node_generation;
        // Bounded by count and by bytes: each entry may be the only holder of a node's
        // old version.
        while st.history.len() >= HISTORY || st.history_bytes > HISTORY_BYTES {
            match st.history.pop_front() {
                Some((_, _, old)) => st.history_bytes -= old.json().len(),
                None => break,
            }
        }
        st.history_bytes += node.json().len();
        st.history.push_back((generation, change, node.clone()));
    }
}

impl Item for Lease {
    type Kept = Lease;
    /// Only k0s's leader leases: cluster health reads no other, and the node heartbeat
    /// Leases (one per node) would cost as much memory as the nodes.
    fn keep(self) -> Option<(String, Lease)> {
        (self.name == LEADER_LEASE || self.name.starts_with(CONTROLLER_LEASE_PREFIX))
            .then(|| (format!("{}/{}", self.namespace, self.name), self))
    }
    fn view(st: &mut State) -> &mut View<Lease> {
        &mut st.leases
    }
}

impl Item for EtcdMember {
    type Kept = EtcdMember;
    fn keep(self) -> Option<(String, EtcdMember)> {
        Some((self.name.clone(), self))
    }
    fn view(st: &mut State) -> &mut View<EtcdMember> {
        &mut st.etcd
    }
}

/// The reflector thread's body: runs until the cache is stopped.
pub(super) fn run(cache: &Cache, kube: &kube::Client, watcher: &kube::Watcher, r: Resource) {
    match r {
        Resource::Nodes => reflect(
            cache,
            r,
            // Made compact page by page: a list of full nodes is never held whole.
            || kube.list_nodes_versioned(Item::keep),
            |v, on| watcher.nodes(v, on),
        ),
        Resource::Leases => reflect(
            cache,
            r,
            || kube.list_leases_versioned(LEASE_NAMESPACE, Item::keep),
            |v, on| watcher.leases(LEASE_NAMESPACE, v, on),
        ),
        Resource::EtcdMembers => reflect(
            cache,
            r,
            || kube.list_etcd_members_versioned(Item::keep),
            |v, on| watcher.etcd_members(v, on),
        ),
    }
    log::info("cache reflector stopped", &[("resource", r.name().into())]);
}

fn reflect<K: Item>(
    cache: &Cache,
    r: Resource,
    list: impl Fn() -> Result<Listed<Option<(String, K::Kept)>>, kube::Error>,
    watch: impl Fn(&str, &mut dyn FnMut(Event<K>)) -> Result<(), kube::Error>,
) {
    let mut backoff = BACKOFF_FIRST;
    let mut version: Option<String> = None;
    while !cache.lock().stopping {
        let Some(from) = version.clone() else {
            match list() {
                Ok(listed) => {
                    version = Some(replace::<K>(cache, listed));
                    cache.shared.relists.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    broken::<K>(cache, r, "list", &e);
                    pause(cache, &mut backoff);
                }
            }
            continue;
        };
        let mut current = from.clone();
        let outcome = watch(&from, &mut |event| {
            apply(cache, event, &mut current);
        });
        // The watch may have moved on before it ended: resume from the last version.
        version = Some(current);
        match outcome {
            // The server ended the stream at its timeout: watch again at once.
            Ok(()) => backoff = BACKOFF_FIRST,
            Err(kube::Error::Gone) => {
                log::info(
                    "cache: watch version expired; listing again",
                    &[("resource", r.name().into())],
                );
                version = None;
            }
            Err(e) => {
                broken::<K>(cache, r, "watch", &e);
                pause(cache, &mut backoff);
            }
        }
    }
}

/// A fresh list replaces the copy; the differences are recorded as changes.
fn replace<K: Item>(cache: &Cache, listed: Listed<Option<(String, K::Kept)>>) -> String {
    let mut fresh: BTreeMap<String, Arc<K::Kept>> = listed
        .items
        .into_iter()
        .flatten()
        .map(|(key, kept)| (key, Arc::new(kept)))
        .collect();
    let mut st = cache.lock();
    let old = std::mem::take(&mut K::view(&mut st).items);
    for (key, item) in &old {
        if !fresh.contains_key(key) {
            K::changed(&mut st, Change::Deleted, item);
        }
    }
    for (key, item) in &fresh {
        match old.get(key) {
            None => K::changed(&mut st, Change::Added, item),
            Some(o) if o != item => K::changed(&mut st, Change::Modified, item),
            Some(_) => {}
        }
    }
    let view = K::view(&mut st);
    std::mem::swap(&mut view.items, &mut fresh);
    view.listed = true;
    view.broken_since = None;
    view.confirmed = Some(Instant::now());
    drop(st);
    drop(old);
    drop(fresh);
    cache.shared.changed.notify_all();
    listed.resource_version
}

fn apply<K: Item>(cache: &Cache, event: Event<K>, version: &mut String) {
    let mut st = cache.lock();
    let now = Instant::now();
    match event {
        Event::Open => {
            K::view(&mut st).broken_since = None;
            K::view(&mut st).confirmed = Some(now);
        }
        Event::Version(v) => {
            *version = v;
            K::view(&mut st).confirmed = Some(now);
            return;
        }
        // An object the view does not keep (a node's heartbeat Lease) changes nothing.
        Event::Added(k) | Event::Modified(k) => {
            if let Some((key, kept)) = k.keep() {
                let kept = Arc::new(kept);
                let change = if K::view(&mut st).items.contains_key(&key) {
                    Change::Modified
                } else {
                    Change::Added
                };
                K::changed(&mut st, change, &kept);
                K::view(&mut st).items.insert(key, kept);
            }
        }
        Event::Deleted(k) => {
            if let Some((key, kept)) = k.keep() {
                if K::view(&mut st).items.remove(&key).is_some() {
                    K::changed(&mut st, Change::Deleted, &Arc::new(kept));
                }
            }
        }
    }
    drop(st);
    cache.shared.events.fetch_add(1, Ordering::Relaxed);
    cache.shared.changed.notify_all();
}

fn broken<K: Item>(cache: &Cache, r: Resource, what: &str, e: &kube::Error) {
    let mut st = cache.lock();
    if st.stopping {
        return;
    }
    K::view(&mut st)
        .broken_since
        .get_or_insert_with(Instant::now);
    drop(st);
    log::warn(
        "cache: kubernetes call failed; will retry",
        &[
            ("resource", r.name().into()),
            ("call", what.into()),
            ("error", e.to_string().into()),
        ],
    );
}

/// Sleep the back-off (woken early by a stop), then double it.
fn pause(cache: &Cache, backoff: &mut Duration) {
    let until = Instant::now() + *backoff;
    let mut st = cache.lock();
    while !st.stopping {
        let now = Instant::now();
        if now >= until {
            break;
        }
        st = cache.wait_change(st, until - now);
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}
