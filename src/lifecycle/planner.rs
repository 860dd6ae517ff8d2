//! Which of a node's pods a drain evicts, the way `kubectl drain --ignore-daemonsets
//! --force` decides (pure).
//!
//! Left alone: pods a DaemonSet controls (its controller would put them straight back,
//! and they tolerate the cordon) and mirror pods (the API's copy of a kubelet static pod;
//! deleting it does nothing). Finished pods (Succeeded, Failed) hold nothing and need no
//! eviction. Pods already terminating are not evicted again, only waited for. Bare pods
//! with no controller are evicted too (kubectl's `--force`): removing the node would lose
//! them anyway.

use crate::kube::Pod;

/// Why a pod is left where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    DaemonSet,
    Mirror,
    Finished,
}

/// What a drain does with one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Skip(Skip),
    /// Terminating already: wait until it is gone.
    Wait,
    Evict,
}

/// The decision for one pod.
pub fn action(pod: &Pod) -> Action {
    if pod.mirror {
        Action::Skip(Skip::Mirror)
    } else if pod.controller_kind.as_deref() == Some("DaemonSet") {
        Action::Skip(Skip::DaemonSet)
    } else if matches!(pod.phase.as_str(), "Succeeded" | "Failed") {
        Action::Skip(Skip::Finished)
    } else if pod.terminating {
        Action::Wait
    } else {
        Action::Evict
    }
}

/// A drain's view of a node's pods.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// To evict now.
    pub evict: Vec<&'a Pod>,
    /// Evicted already, not gone yet.
    pub waiting: Vec<&'a Pod>,
}

impl Plan<'_> {
    /// The node is drained when nothing is left to evict or to wait for.
    pub fn done(&self) -> bool {
        self.evict.is_empty() && self.waiting.is_empty()
    }

    /// `namespace/name` of every pod still in the way, sorted.
    pub fn remaining(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .evict
            .iter()
            .chain(&self.waiting)
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        v.sort();
        v
    }
}

pub fn plan(pods: &[Pod]) -> Plan<'_> {
    let mut p = Plan::default();
    for pod in pods {
        match action(pod) {
            Action::Evict => p.evict.push(pod),
            Action::Wait => p.waiting.push(pod),
            Action::Skip(_) => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, f: impl FnOnce(&mut Pod)) -> Pod {
        let mut p = Pod {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            phase: "Running".into(),
            ..Pod::default()
        };
        f(&mut p);
        p
    }

    #[test]
    fn kubectl_drain_rules() {
        let pods = vec![
            pod("web", |p| p.controller_kind = Some("ReplicaSet".into())),
            pod("bare", |_| {}),
            pod("proxy", |p| p.controller_kind = Some("DaemonSet".into())),
            pod("etcd", |p| p.mirror = true),
            pod("job-done", |p| p.phase = "Succeeded".into()),
            pod("job-failed", |p| p.phase = "Failed".into()),
            pod("pending", |p| p.phase = "Pending".into()),
            pod("leaving", |p| p.terminating = true),
            // A DaemonSet pod that is terminating is still the DaemonSet's business.
            pod("proxy-old", |p| {
                p.controller_kind = Some("DaemonSet".into());
                p.terminating = true;
            }),
        ];
        let plan = plan(&pods);
        let names = |v: &[&Pod]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&plan.evict), ["web", "bare", "pending"]);
        assert_eq!(names(&plan.waiting), ["leaving"]);
        assert!(!plan.done());
        assert_eq!(
            plan.remaining(),
            [
                "default/bare",
                "default/leaving",
                "default/pending",
                "default/web"
            ]
        );
    }

    #[test]
    fn only_daemonsets_and_mirrors_left_means_done() {
        let pods = vec![
            pod("proxy", |p| p.controller_kind = Some("DaemonSet".into())),
            pod("etcd", |p| p.mirror = true),
        ];
        assert!(plan(&pods).done());
        assert!(plan(&[]).done());
    }
}
