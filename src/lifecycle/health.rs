//! Cluster health from the nodes and k0s's leases (pure).
//!
//! etcd runs on the controllers, so the cluster stays writable while a majority of them,
//! `floor(n/2) + 1`, is up. `failureTolerance` is how many more ready controllers can be
//! lost before that majority is gone: ready controllers minus the quorum, never below 0.
//! `healthy` means there is at least one controller and every controller is Ready: the
//! cluster has the whole failure tolerance its size allows. (One or two controllers are
//! healthy with a tolerance of 0; that is what such a cluster can offer.) Workers' readiness
//! is reported per node and does not make the cluster unhealthy.

use serde::Serialize;

use super::{drain_info, is_controller};
use crate::kube::{Lease, Node};
use crate::roles::roles_from_labels;

/// The k0s lease held by the leading controller.
pub const LEADER_LEASE: &str = "k0s-endpoint-reconciler";
/// Each controller's own lease is this prefix plus its node name.
pub const CONTROLLER_LEASE_PREFIX: &str = "k0s-ctrl-";
/// The namespace of both.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Members etcd needs up to accept writes.
pub fn quorum(controllers: usize) -> usize {
    controllers / 2 + 1
}

/// Ready controllers beyond the quorum; 0 when there are no controllers.
pub fn failure_tolerance(controllers: usize, ready: usize) -> usize {
    if controllers == 0 {
        return 0;
    }
    ready.min(controllers).saturating_sub(quorum(controllers))
}

/// At least one controller, and all of them Ready.
pub fn healthy(controllers: usize, ready: usize) -> bool {
    controllers > 0 && ready >= controllers
}

/// Whether etcd keeps its quorum once one controller (ready or not) is removed: the
/// ready controllers left must be at least the quorum of the controllers left, and at
/// least one must be left.
pub fn keeps_quorum_without(controllers: usize, ready: usize, removed_is_ready: bool) -> bool {
    let left = controllers.saturating_sub(1);
    let ready_left = ready.saturating_sub(usize::from(removed_is_ready));
    left > 0 && ready_left >= quorum(left)
}

/// The leader's node name: the controller whose `k0s-ctrl-<name>` lease has the holder
/// of the `k0s-endpoint-reconciler` lease.
pub fn leader(leases: &[Lease], controllers: &[String]) -> Option<String> {
    let holder = leases
        .iter()
        .find(|l| l.name == LEADER_LEASE)
        .and_then(|l| l.holder.as_deref())?;
    controllers
        .iter()
        .find(|c| {
            let name = format!("{CONTROLLER_LEASE_PREFIX}{c}");
            leases
                .iter()
                .any(|l| l.name == name && l.holder.as_deref() == Some(holder))
        })
        .cloned()
}

/// One node in the health report.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealth {
    pub name: String,
    pub roles: Vec<String>,
    pub controller: bool,
    pub ready: bool,
    /// The Ready condition's `lastTransitionTime`: since when `ready` has held.
    pub stable_since: Option<String>,
    pub drain_state: &'static str,
}

/// `GET /v1/cluster/health`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    pub healthy: bool,
    pub failure_tolerance: usize,
    pub quorum: usize,
    pub leader: Option<String>,
    pub controllers: Vec<String>,
    pub ready_controllers: usize,
    pub nodes: Vec<NodeHealth>,
}

/// The report from every node and the leases of `kube-node-lease`.
/// `nodes` one at a time (from the watch-fed view, each parsed back as it comes), in
/// name order.
pub fn cluster_health(nodes: impl IntoIterator<Item = Node>, leases: &[Lease]) -> ClusterHealth {
    let nodes = nodes.into_iter();
    let mut controllers = Vec::new();
    let mut ready_controllers = 0;
    let mut report = Vec::with_capacity(nodes.size_hint().0);
    for n in nodes {
        let controller = is_controller(&n.labels);
        if controller {
            controllers.push(n.name.clone());
            ready_controllers += usize::from(n.ready);
        }
        report.push(NodeHealth {
            name: n.name.clone(),
            roles: roles_from_labels(&n.labels),
            controller,
            ready: n.ready,
            stable_since: n
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .and_then(|c| c.last_transition_time.clone()),
            drain_state: drain_info(&n.annotations).state.as_str(),
        });
    }
    let count = controllers.len();
    ClusterHealth {
        healthy: healthy(count, ready_controllers),
        failure_tolerance: failure_tolerance(count, ready_controllers),
        quorum: if count == 0 { 0 } else { quorum(count) },
        leader: leader(leases, &controllers),
        controllers,
        ready_controllers,
        nodes: report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_tolerance_table() {
        // (controllers, ready, tolerance, healthy)
        for (n, r, ft, ok) in [
            (0, 0, 0, false),
            (1, 1, 0, true),
            (1, 0, 0, false),
            (2, 2, 0, true),
            (2, 1, 0, false),
            (2, 0, 0, false),
            (3, 3, 1, true),
            (3, 2, 0, false),
            (3, 1, 0, false),
            (5, 5, 2, true),
            (5, 4, 1, false),
            (5, 3, 0, false),
            (5, 2, 0, false),
            (5, 0, 0, false),
        ] {
            assert_eq!(failure_tolerance(n, r), ft, "tolerance of {r}/{n}");
            assert_eq!(healthy(n, r), ok, "healthy {r}/{n}");
        }
        assert_eq!([1, 2, 3, 4, 5].map(quorum), [1, 2, 2, 3, 3], "floor(n/2)+1");
    }

    #[test]
    fn quorum_after_removing_a_controller() {
        // (controllers, ready, removed is ready, allowed)
        for (n, r, removed_ready, ok) in [
            (1, 1, true, false), // the last controller
            (2, 2, true, true),  // 1 left, needs 1
            (2, 1, false, true), // removing the dead one of two
            (2, 1, true, false), // the survivor would be the dead one
            (3, 3, true, true),  // 2 left, both ready
            (3, 2, true, false), // 2 left, 1 ready, needs 2
            (3, 2, false, true), // removing the dead one
            (5, 4, true, true),  // 4 left, 3 ready, needs 3
            (5, 3, true, false), // 4 left, 2 ready
            (5, 3, false, true), // 4 left, 3 ready
        ] {
            assert_eq!(
                keeps_quorum_without(n, r, removed_ready),
                ok,
                "{n} {r} {removed_ready}"
            );
        }
    }

    fn lease(name: &str, holder: &str) -> Lease {
        Lease {
            name: name.into(),
            namespace: LEASE_NAMESPACE.into(),
            holder: Some(holder.into()),
            ..Lease::default()
        }
    }

    #[test]
    fn leader_from_leases() {
        let c = vec!["node-1".to_string(), "node-2".to_string()];
        let leases = vec![
            lease("node-1", "node-1"),
            lease("k0s-ctrl-node-1", "aaa"),
            lease("k0s-ctrl-node-2", "bbb"),
            lease(LEADER_LEASE, "bbb"),
        ];
        assert_eq!(leader(&leases, &c).as_deref(), Some("node-2"));
        assert_eq!(leader(&leases[..3], &c), None);
        assert_eq!(leader(&leases, &c[..1]), None);
    }
}
