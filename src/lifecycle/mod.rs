//! The node lifecycle: drain, resume, remove, and cluster health.
//!
//! A drain's state lives on the Node, in annotations, never in memory: the API handler
//! writes `drain-state: draining` (with the cordon, in one patch) and the drain worker
//! of whichever daemon holds the node's Lease does the evictions, so a daemon restarted
//! mid-drain, or another controller's daemon, carries on where it stopped.
//!
//! Map:
//! - `planner.rs`: which of a node's pods to evict (pure).
//! - `drain.rs`: the drain state written on the Node (start, finish, resume).
//! - `lease.rs`: one driver per node, through a `coordination.k8s.io` Lease.
//! - `worker.rs`: the drain worker thread, owned by the daemon, stopped on SIGTERM.
//! - `removal.rs`: the checks before removing a node (pure) and the removal sequence.
//! - `health.rs`: quorum, failure tolerance and the leader (pure).
//! - `time.rs`: RFC 3339 to and from seconds (pure).

pub mod drain;
pub mod health;
pub mod lease;
pub mod planner;
pub mod removal;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::kube;

pub use worker::WorkerHandle;

/// Annotation holding `draining` or `drained`; absent means active.
pub const STATE_ANNOTATION: &str = "joinery.replicated.com/drain-state";
/// When a drain gives up on the pods left (RFC 3339 UTC).
pub const DEADLINE_ANNOTATION: &str = "joinery.replicated.com/drain-deadline";
/// When the drain started (RFC 3339 UTC).
pub const STARTED_ANNOTATION: &str = "joinery.replicated.com/drain-started";
/// JSON array of `namespace/name` of the pods still there when the deadline passed.
pub const REMAINING_ANNOTATION: &str = "joinery.replicated.com/drain-remaining";

/// The longest deadline a caller may ask for, and the one a synchronous drain gets.
pub const MAX_DEADLINE_SECONDS: u64 = 3600;
/// How long `deadlineSeconds: 0` keeps the request open before answering 202.
pub const SYNC_DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Where a node is in its drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    Active,
    Draining,
    Drained,
}

impl DrainState {
    pub fn as_str(self) -> &'static str {
        match self {
            DrainState::Active => "active",
            DrainState::Draining => "draining",
            DrainState::Drained => "drained",
        }
    }
}

/// The drain annotations of a node, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainInfo {
    pub state: DrainState,
    pub deadline: Option<String>,
    pub started: Option<String>,
    /// Pods left when the deadline passed (`namespace/name`).
    pub remaining: Vec<String>,
}

/// Reads a node's drain annotations. An unknown state value counts as draining, so a
/// worker looks at the node rather than ignoring it.
pub fn drain_info(annotations: &BTreeMap<String, String>) -> DrainInfo {
    let state = match annotations.get(STATE_ANNOTATION).map(String::as_str) {
        None | Some("") | Some("active") => DrainState::Active,
        Some("drained") => DrainState::Drained,
        Some(_) => DrainState::Draining,
    };
    DrainInfo {
        state,
        deadline: annotations.get(DEADLINE_ANNOTATION).cloned(),
        started: annotations.get(STARTED_ANNOTATION).cloned(),
        remaining: annotations
            .get(REMAINING_ANNOTATION)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default(),
    }
}

/// Whether a node runs a k0s controller: `node.k0sproject.io/role=control-plane` or the
/// `node-role.kubernetes.io/control-plane` key (its value differs between distributions).
pub fn is_controller(labels: &BTreeMap<String, String>) -> bool {
    crate::roles::is_controller(labels, None)
}

/// What the drain handlers and the drain worker share: the client, where joinery's own
/// Leases live, this daemon's identity, and the stop/wake signal.
pub struct Lifecycle {
    pub kube: kube::Client,
    /// The watch-fed view: the worker's scan for draining nodes reads it when in sync.
    pub cache: crate::cache::Cache,
    /// joinery's namespace (the drain Leases live there).
    pub namespace: String,
    /// This daemon's Lease holder identity.
    pub identity: String,
    signal: Mutex<Signal>,
    wake: Condvar,
}

#[derive(Default)]
struct Signal {
    stop: bool,
    kick: bool,
}

impl Lifecycle {
    /// `node_name` makes the identity (`joinery@NODE`), so a daemon restarted on the
    /// same controller resumes its own Leases at once; without one it is random, and
    /// with no randomness there is no lifecycle (the daemon does not start).
    pub fn new(
        kube: kube::Client,
        cache: crate::cache::Cache,
        namespace: &str,
        node_name: Option<&str>,
    ) -> Result<Arc<Lifecycle>, crate::random::Unavailable> {
        let identity = identity(node_name, || crate::random::hex(8))?;
        Ok(Arc::new(Lifecycle {
            kube,
            cache,
            namespace: namespace.to_string(),
            identity,
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
        }))
    }

    /// Ask the worker to look for draining nodes now rather than at its next scan.
    pub fn kick(&self) {
        let mut s = self.signal.lock().unwrap_or_else(|p| p.into_inner());
        s.kick = true;
        self.wake.notify_all();
    }

    /// Ask every waiter (the worker, synchronous drains) to stop.
    pub fn stop(&self) {
        let mut s = self.signal.lock().unwrap_or_else(|p| p.into_inner());
        s.stop = true;
        self.wake.notify_all();
    }

    pub fn stopping(&self) -> bool {
        self.signal.lock().unwrap_or_else(|p| p.into_inner()).stop
    }

    /// Sleep up to `d`, waking early on stop or kick. Returns false once stopping.
    pub fn wait(&self, d: Duration) -> bool {
        let s = self.signal.lock().unwrap_or_else(|p| p.into_inner());
        if s.stop {
            return false;
        }
        let (s, _) = self
            .wake
            .wait_timeout_while(s, d, |s| !s.stop && !s.kick)
            .unwrap_or_else(|p| p.into_inner());
        !s.stop
    }

    /// Sleep up to `d`, waking early only on stop. Returns false once stopping.
    pub fn pause(&self, d: Duration) -> bool {
        let s = self.signal.lock().unwrap_or_else(|p| p.into_inner());
        let (s, _) = self
            .wake
            .wait_timeout_while(s, d, |s| !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        !s.stop
    }

    /// Takes a pending kick (the worker scans when there was one).
    fn take_kick(&self) -> bool {
        std::mem::take(&mut self.signal.lock().unwrap_or_else(|p| p.into_inner()).kick)
    }
}

/// The Lease holder name: `joinery@NODE`, or `joinery@` and 16 random hex digits.
fn identity(
    node_name: Option<&str>,
    random_hex: impl FnOnce() -> Result<String, crate::random::Unavailable>,
) -> Result<String, crate::random::Unavailable> {
    Ok(format!(
        "joinery@{}",
        match node_name {
            Some(n) => n.to_string(),
            None => random_hex()?,
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_the_node_or_random_and_never_a_zero_value() {
        let os = || crate::random::hex(8);
        assert_eq!(identity(Some("ctl-1"), os).unwrap(), "joinery@ctl-1");
        let a = identity(None, os).unwrap();
        assert_eq!(a.len(), "joinery@".len() + 16);
        assert_ne!(a, identity(None, os).unwrap());
        // Regression: a failed draw used to give every such daemon joinery@0000000000000000.
        let broken = || Err(crate::random::Unavailable::for_test());
        assert!(identity(None, broken).is_err());
    }

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn drain_info_from_annotations() {
        assert_eq!(drain_info(&map(&[])).state, DrainState::Active);
        let i = drain_info(&map(&[
            (STATE_ANNOTATION, "drained"),
            (REMAINING_ANNOTATION, r#"["default/web-1"]"#),
        ]));
        assert_eq!(i.state, DrainState::Drained);
        assert_eq!(i.remaining, vec!["default/web-1".to_string()]);
        assert_eq!(
            drain_info(&map(&[(STATE_ANNOTATION, "weird")])).state,
            DrainState::Draining
        );
        assert!(drain_info(&map(&[(REMAINING_ANNOTATION, "not json")]))
            .remaining
            .is_empty());
    }

    #[test]
    fn controllers_by_label() {
        assert!(is_controller(&map(&[(
            "node.k0sproject.io/role",
            "control-plane"
        )])));
        assert!(is_controller(&map(&[(
            "node-role.kubernetes.io/control-plane",
            ""
        )])));
        assert!(!is_controller(&map(&[(
            "node.k0sproject.io/role",
            "worker"
        )])));
        assert!(!is_controller(&map(&[])));
    }
}
