//! One reflector per resource: list, then watch from the list's resourceVersion; on a
//! 410 Gone list again; on any other failure mark the view broken, back off, and watch
//! again from the last version seen (a 410 then leads to a list). As client-go's
//! reflector, with its back-off from 0.2 s doubling to 10 s, reset by a watch that opened.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cache, Change, State, View, HISTORY, LEASE_NAMESPACE};
use crate::kube::{self, EtcdMember, Event, Lease, Listed, Node};
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
trait Item: Clone + PartialEq + Send + 'static {
    fn key(&self) -> String;
    fn view(st: &mut State) -> &mut View<Self>;
    /// Called for each change, with the lock held (nodes keep a history).
    fn changed(_st: &mut State, _change: Change, _item: &Arc<Self>) {}
    /// What the view keeps of an object (readers' fields only: memory per node counts).
    fn slim(self) -> Self {
        self
    }
}

impl Item for Node {
    fn key(&self) -> String {
        self.name.clone()
    }
    /// The view's readers (node lists, Flux inputs, cluster health, waits, streams) use
    /// the name, labels, annotations, InternalIP and the Ready condition; a node's
    /// detail is read live. The rest (other conditions and their messages, nodeInfo,
    /// addresses, taints, capacity) would be most of the memory of 5,000 nodes.
    fn slim(self) -> Node {
        Node {
            conditions: self
                .conditions
                .into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| crate::kube::Condition {
                    message: None,
                    last_heartbeat_time: None,
                    ..c
                })
                .collect(),
            name: self.name,
            labels: self.labels,
            annotations: self.annotations,
            internal_ip: self.internal_ip,
            ready: self.ready,
            unschedulable: self.unschedulable,
            ..Node::default()
        }
    }
    fn view(st: &mut State) -> &mut View<Node> {
        &mut st.nodes
    }
    fn changed(st: &mut State, change: Change, node: &Arc<Node>) {
        // Before the first list nobody can be following (streams start in sync).
        if !st.nodes.listed {
            return;
        }
        st.node_generation += 1;
        let generation = st.node_generation;
        if st.history.len() == HISTORY {
            st.history.pop_front();
        }
        st.history.push_back((generation, change, node.clone()));
    }
}

impl Item for Lease {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    fn view(st: &mut State) -> &mut View<Lease> {
        &mut st.leases
    }
}

impl Item for EtcdMember {
    fn key(&self) -> String {
        self.name.clone()
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
            // Slimmed page by page: a list of full nodes is never held whole.
            || kube.list_nodes_versioned(Item::slim),
            |v, on| watcher.nodes(v, on),
        ),
        Resource::Leases => reflect(
            cache,
            r,
            || kube.list_leases_versioned(LEASE_NAMESPACE),
            |v, on| watcher.leases(LEASE_NAMESPACE, v, on),
        ),
        Resource::EtcdMembers => reflect(
            cache,
            r,
            || kube.list_etcd_members_versioned(),
            |v, on| watcher.etcd_members(v, on),
        ),
    }
    log::info("cache reflector stopped", &[("resource", r.name().into())]);
}

fn reflect<K: Item>(
    cache: &Cache,
    r: Resource,
    list: impl Fn() -> Result<Listed<K>, kube::Error>,
    watch: impl Fn(&str, &mut dyn FnMut(Event<K>)) -> Result<(), kube::Error>,
) {
    let mut backoff = BACKOFF_FIRST;
    let mut version: Option<String> = None;
    while !cache.lock().stopping {
        let Some(from) = version.clone() else {
            match list() {
                Ok(listed) => {
                    version = Some(replace(cache, listed));
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
fn replace<K: Item>(cache: &Cache, listed: Listed<K>) -> String {
    let mut fresh: BTreeMap<String, Arc<K>> = listed
        .items
        .into_iter()
        .map(|k| (k.key(), Arc::new(k.slim())))
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
            Some(o) if !same(o.as_ref(), item.as_ref()) => {
                K::changed(&mut st, Change::Modified, item)
            }
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

fn same<K: Item>(a: &K, b: &K) -> bool {
    a == b
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
        Event::Added(k) | Event::Modified(k) => {
            let k = Arc::new(k.slim());
            let change = if K::view(&mut st).items.contains_key(&k.key()) {
                Change::Modified
            } else {
                Change::Added
            };
            K::changed(&mut st, change, &k);
            K::view(&mut st).items.insert(k.key(), k);
        }
        Event::Deleted(k) => {
            let k = Arc::new(k.slim());
            if K::view(&mut st).items.remove(&k.key()).is_some() {
                K::changed(&mut st, Change::Deleted, &k);
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
