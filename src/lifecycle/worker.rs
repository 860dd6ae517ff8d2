//! The drain worker: one thread per daemon that finds nodes marked draining and drives
//! each (under its Lease) until no evictable pod is left or the deadline passes.
//!
//! The daemon owns it through [`WorkerHandle`] and stops it on SIGTERM: the thread
//! finishes the call in flight, gives up its Leases (so another controller's daemon can
//! carry on at once) and ends. It scans at start, every [`SCAN_EVERY`], and when a drain
//! request kicks it; nodes it drives are looked at every [`TICK`]. A pass never blocks on
//! one pod: evictions a PodDisruptionBudget refuses are retried with a back-off from 1 s
//! up to 5 s (kubectl waits 5 s), and evicted pods are waited for on later passes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lease::{self, Acquired, Held};
use super::planner::plan;
use super::{drain, drain_info, DrainState, Lifecycle};
use crate::kube::{self, Eviction};
use crate::log;
use crate::time;

/// How often a node being drained is looked at.
pub const TICK: Duration = Duration::from_secs(1);
/// How often all nodes are listed to find drains to take on.
pub const SCAN_EVERY: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The running worker. Dropping it (or [`WorkerHandle::shutdown`]) stops and joins it.
pub struct WorkerHandle {
    lc: Arc<Lifecycle>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts the worker thread.
    pub fn start(lc: Arc<Lifecycle>) -> std::io::Result<WorkerHandle> {
        let for_thread = lc.clone();
        let thread = std::thread::Builder::new()
            .name("drain-worker".into())
            .spawn(move || run(&for_thread))?;
        Ok(WorkerHandle {
            lc,
            thread: Some(thread),
        })
    }

    /// Stops the worker and waits for it (it releases its Leases first).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.lc.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// What the worker remembers about one node it is draining (a cache: all of it can be
/// lost with no harm beyond a retry).
#[derive(Default)]
struct Driving {
    held: Option<Held>,
    /// Per pod uid: when to try evicting again, and the current back-off.
    backoff: HashMap<String, (Instant, Duration)>,
    /// The other daemon driving this node, as last logged.
    other: Option<String>,
}

fn run(lc: &Lifecycle) {
    log::info(
        "drain worker started",
        &[("identity", lc.identity.clone().into())],
    );
    let mut nodes: BTreeMap<String, Driving> = BTreeMap::new();
    let mut next_scan = Instant::now();
    while !lc.stopping() {
        let kicked = lc.take_kick();
        if kicked || Instant::now() >= next_scan {
            scan(lc, &mut nodes, kicked);
            next_scan = Instant::now() + SCAN_EVERY;
        }
        let names: Vec<String> = nodes.keys().cloned().collect();
        for name in names {
            if lc.stopping() {
                break;
            }
            let Some(d) = nodes.get_mut(&name) else {
                continue;
            };
            // A bug in one pass must not end every drain this daemon drives.
            let keep =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tick(lc, &name, d)))
                    .unwrap_or_else(|_| {
                        log::error(
                            "drain worker pass failed; will retry",
                            &[("node", name.clone().into())],
                        );
                        true
                    });
            if !keep {
                if let Some(h) = nodes.remove(&name).and_then(|d| d.held) {
                    lease::release(&lc.kube, &h);
                }
            }
        }
        if !lc.wait(TICK) {
            break;
        }
    }
    for d in nodes.into_values() {
        if let Some(h) = d.held {
            lease::release(&lc.kube, &h);
        }
    }
    log::info("drain worker stopped", &[]);
}

/// Adds every node marked draining to `nodes`. The periodic scan reads the watch-fed
/// view when it is in sync (no API-server request); a scan after a kick (this daemon
/// just wrote a drain, which the view may not show yet) and a scan while the view is out
/// of sync list live, keeping only names from each page, so a scan of a large cluster
/// holds one page of parsed nodes at a time.
fn scan(lc: &Lifecycle, nodes: &mut BTreeMap<String, Driving>, kicked: bool) {
    let draining = |n: &kube::Node| drain_info(&n.annotations).state == DrainState::Draining;
    let cached = if kicked {
        None
    } else {
        lc.cache.node_names(draining)
    };
    let names = match cached {
        Some(names) => Ok(names),
        None => lc
            .kube
            .list_nodes_map(|n| draining(&n).then_some(n.name))
            .map(|names| names.into_iter().flatten().collect()),
    };
    match names {
        Ok(names) => {
            for name in names {
                nodes.entry(name).or_default();
            }
        }
        Err(e) => log::warn(
            "drain worker could not list nodes; will retry",
            &[("error", e.to_string().into())],
        ),
    }
}

/// One look at one node. Returns false when the worker is done with it.
fn tick(lc: &Lifecycle, name: &str, d: &mut Driving) -> bool {
    let kube = &lc.kube;
    let node = match kube.get_node(name) {
        Ok(n) => n,
        Err(kube::Error::NotFound) => return false,
        Err(e) => {
            log::warn(
                "drain worker could not read a node; will retry",
                &[("node", name.into()), ("error", e.to_string().into())],
            );
            return true;
        }
    };
    let info = drain_info(&node.annotations);
    if info.state != DrainState::Draining {
        return false;
    }
    if !hold(lc, name, d) {
        return true;
    }
    let pods = match kube.list_pods_on_node(name) {
        Ok(p) => p,
        Err(e) => {
            log::warn(
                "drain worker could not list a node's pods; will retry",
                &[("node", name.into()), ("error", e.to_string().into())],
            );
            return true;
        }
    };
    let plan = plan(&pods);
    let expired = info
        .deadline
        .as_deref()
        .and_then(time::parse_rfc3339)
        .is_some_and(|t| time::now_f64() >= t);
    if plan.done() || expired {
        let remaining = plan.remaining();
        match drain::finish(kube, name, &remaining) {
            Ok(true) => log::audit(
                "node.drain.finish",
                &lc.identity,
                name,
                &if remaining.is_empty() {
                    "drained".to_string()
                } else {
                    format!(
                        "drained: deadline passed with {} pods remaining",
                        remaining.len()
                    )
                },
                &[],
            ),
            Ok(false) => {}
            Err(e) => {
                log::warn(
                    "drain worker could not mark a node drained; will retry",
                    &[("node", name.into()), ("error", e.to_string().into())],
                );
                return true;
            }
        }
        return false;
    }
    let live: std::collections::HashSet<&str> = plan.evict.iter().map(|p| p.uid.as_str()).collect();
    d.backoff.retain(|uid, _| live.contains(uid.as_str()));
    for pod in plan.evict {
        if lc.stopping() {
            break;
        }
        if d.backoff
            .get(&pod.uid)
            .is_some_and(|(at, _)| Instant::now() < *at)
        {
            continue;
        }
        // A long pass must not outlive the Lease: renew (cheaply) before each eviction.
        if !hold(lc, name, d) {
            return true;
        }
        let result = kube.evict_pod(&pod.namespace, &pod.name);
        let pod_ref = format!("{}/{}", pod.namespace, pod.name);
        match result {
            Ok(Eviction::Evicted) => {
                d.backoff.remove(&pod.uid);
                log::info(
                    "evicted pod",
                    &[("node", name.into()), ("pod", pod_ref.into())],
                );
            }
            Ok(Eviction::Gone) => {
                d.backoff.remove(&pod.uid);
            }
            Ok(Eviction::Blocked(why)) => {
                if !d.backoff.contains_key(&pod.uid) {
                    log::info(
                        "eviction refused by a PodDisruptionBudget; retrying",
                        &[
                            ("node", name.into()),
                            ("pod", pod_ref.into()),
                            ("reason", why.into()),
                        ],
                    );
                }
                back_off(&mut d.backoff, &pod.uid);
            }
            Err(e) => {
                log::warn(
                    "eviction failed; retrying",
                    &[
                        ("node", name.into()),
                        ("pod", pod_ref.into()),
                        ("error", e.to_string().into()),
                    ],
                );
                back_off(&mut d.backoff, &pod.uid);
            }
        }
    }
    true
}

/// Holds (or renews) the node's Lease. False when another daemon drives the node.
fn hold(lc: &Lifecycle, name: &str, d: &mut Driving) -> bool {
    let was_held = d.held.is_some();
    match lease::acquire(&lc.kube, &lc.namespace, name, &lc.identity, d.held.take()) {
        Ok(Acquired::Drive(h)) => {
            if !was_held {
                log::info(
                    "driving drain",
                    &[
                        ("node", name.into()),
                        ("lease", h.lease.name.clone().into()),
                        ("transitions", h.lease.transitions.into()),
                    ],
                );
            }
            d.held = Some(h);
            d.other = None;
            true
        }
        Ok(Acquired::LeaveTo(holder)) => {
            if d.other.as_deref() != Some(holder.as_str()) {
                log::info(
                    "drain is driven by another daemon",
                    &[("node", name.into()), ("holder", holder.clone().into())],
                );
                d.other = Some(holder);
            }
            false
        }
        Err(e) => {
            log::warn(
                "drain worker could not take the drain lease; will retry",
                &[("node", name.into()), ("error", e.to_string().into())],
            );
            false
        }
    }
}

fn back_off(map: &mut HashMap<String, (Instant, Duration)>, uid: &str) {
    let next = match map.get(uid) {
        Some((_, d)) => (*d * 2).min(BACKOFF_MAX),
        None => BACKOFF_FIRST,
    };
    map.insert(uid.to_string(), (Instant::now() + next, next));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_the_cap() {
        let mut m = HashMap::new();
        let seen: Vec<u64> = (0..5)
            .map(|_| {
                back_off(&mut m, "u");
                m["u"].1.as_secs()
            })
            .collect();
        assert_eq!(seen, [1, 2, 4, 5, 5]);
    }
}
