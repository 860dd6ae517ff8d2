//! Removing a node: the checks that refuse it (pure) and the sequence that does it.
//!
//! Refusals, in order: the daemon's own node (never), a node not drained (unless forced),
//! and a controller whose removal would leave fewer ready controllers than etcd's quorum
//! (never overridden: a cluster without quorum cannot even record the removal). A
//! controller leaves etcd first (k0s's `EtcdMember` `spec.leave: true`, then `Joined` turns
//! `False`), and only then is its Node object deleted.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::health::keeps_quorum_without;
use super::{drain_info, is_controller, DrainState};
use crate::kube::{self, Node};

/// How often the EtcdMember is read while waiting for `Joined=False`.
const POLL: Duration = Duration::from_millis(250);

/// Why a removal is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    IsSelf,
    NotDrained(DrainState),
    WouldLoseQuorum { controllers: usize, ready: usize },
}

/// Checks a removal of `target` against every node, this daemon's node and `force`.
pub fn check(
    target: &Node,
    nodes: &[Node],
    self_name: Option<&str>,
    force: bool,
) -> Result<(), Refusal> {
    if self_name == Some(target.name.as_str()) {
        return Err(Refusal::IsSelf);
    }
    let state = drain_info(&target.annotations).state;
    if state != DrainState::Drained && !force {
        return Err(Refusal::NotDrained(state));
    }
    if is_controller(&target.labels) {
        let controllers: Vec<&Node> = nodes.iter().filter(|n| is_controller(&n.labels)).collect();
        // The target is a controller even if the list (read a moment apart) missed it.
        let listed = controllers.iter().any(|n| n.name == target.name);
        let count = controllers.len() + usize::from(!listed);
        let ready =
            controllers.iter().filter(|n| n.ready).count() + usize::from(!listed && target.ready);
        if !keeps_quorum_without(count, ready, target.ready) {
            return Err(Refusal::WouldLoseQuorum {
                controllers: count,
                ready,
            });
        }
    }
    Ok(())
}

/// One step of a removal, as reported to the caller.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    pub step: &'static str,
    pub result: String,
}

fn step(step: &'static str, result: impl Into<String>) -> Step {
    Step {
        step,
        result: result.into(),
    }
}

/// A removal that stopped part way; `steps` says how far it got.
#[derive(Debug)]
pub enum Failure {
    Kube(kube::Error, Vec<Step>),
    /// etcd did not report the member gone within the wait; the Node was kept.
    EtcdTimeout(Vec<Step>),
}

/// Removes `target`: for a controller, its etcd membership first (waiting up to
/// `etcd_wait` for `Joined=False`), then the Node object.
pub fn remove(
    kube: &kube::Client,
    target: &Node,
    etcd_wait: Duration,
) -> Result<Vec<Step>, Failure> {
    let mut steps = Vec::new();
    let name = target.name.as_str();
    if is_controller(&target.labels) {
        let member = match kube.get_etcd_member(name) {
            Ok(m) => m,
            Err(e) => return Err(Failure::Kube(e, steps)),
        };
        match member {
            None => steps.push(step(
                "etcd-leave",
                "skipped: this controller has no EtcdMember object",
            )),
            Some(m) if m.joined.as_deref() == Some("False") => steps.push(step(
                "etcd-leave",
                "skipped: the member has already left etcd",
            )),
            Some(m) => {
                if m.leave {
                    steps.push(step("etcd-leave", "already requested (spec.leave: true)"));
                } else {
                    if let Err(e) = kube.etcd_member_leave(name) {
                        return Err(Failure::Kube(e, steps));
                    }
                    steps.push(step("etcd-leave", "requested (spec.leave: true)"));
                }
                let started = Instant::now();
                loop {
                    match kube.get_etcd_member(name) {
                        Ok(Some(m)) if m.joined.as_deref() != Some("False") => {}
                        Ok(_) => break,
                        Err(e) => return Err(Failure::Kube(e, steps)),
                    }
                    if started.elapsed() >= etcd_wait {
                        steps.push(step(
                            "etcd-left",
                            format!("still joined after {} s", etcd_wait.as_secs()),
                        ));
                        return Err(Failure::EtcdTimeout(steps));
                    }
                    std::thread::sleep(POLL);
                }
                steps.push(step(
                    "etcd-left",
                    format!(
                        "Joined=False after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                ));
            }
        }
    }
    match kube.delete_node(name) {
        Ok(()) => steps.push(step("delete-node", "deleted")),
        Err(kube::Error::NotFound) => steps.push(step("delete-node", "already gone")),
        Err(e) => return Err(Failure::Kube(e, steps)),
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::super::STATE_ANNOTATION;
    use super::*;

    fn node(name: &str, controller: bool, ready: bool, state: Option<&str>) -> Node {
        let mut n = Node {
            name: name.into(),
            ready,
            ..Node::default()
        };
        if controller {
            n.labels
                .insert("node.k0sproject.io/role".into(), "control-plane".into());
        }
        if let Some(s) = state {
            n.annotations.insert(STATE_ANNOTATION.into(), s.into());
        }
        n
    }

    #[test]
    fn refusals() {
        let nodes = vec![
            node("c1", true, true, None),
            node("c2", true, true, Some("drained")),
            node("c3", true, false, Some("drained")),
            node("w1", false, true, None),
        ];
        // Self comes first, even with force.
        assert_eq!(
            check(&nodes[0], &nodes, Some("c1"), true),
            Err(Refusal::IsSelf)
        );
        // A worker that is not drained; force skips only that.
        assert_eq!(
            check(&nodes[3], &nodes, Some("c1"), false),
            Err(Refusal::NotDrained(DrainState::Active))
        );
        assert_eq!(check(&nodes[3], &nodes, Some("c1"), true), Ok(()));
        // 3 controllers, 2 ready: removing a ready one leaves 1 ready of 2 (quorum 2).
        assert_eq!(
            check(&nodes[1], &nodes, Some("c1"), false),
            Err(Refusal::WouldLoseQuorum {
                controllers: 3,
                ready: 2
            })
        );
        // Removing the one that is not ready leaves 2 ready of 2.
        assert_eq!(check(&nodes[2], &nodes, Some("c1"), false), Ok(()));
        // Quorum is never overridden by force.
        assert!(matches!(
            check(&nodes[1], &nodes, None, true),
            Err(Refusal::WouldLoseQuorum { .. })
        ));
        // The last controller can never go.
        let one = vec![node("c1", true, true, Some("drained"))];
        assert!(matches!(
            check(&one[0], &one, None, false),
            Err(Refusal::WouldLoseQuorum { .. })
        ));
    }
}
