//! The drain state written on a Node: start (cordon and mark draining), finish (mark
//! drained, with the pods left if the deadline passed), resume (uncordon and clear).
//!
//! Starting and finishing carry the Node's resourceVersion, so a resume that lands in
//! between is never overwritten by a worker's late "drained", and two drain requests at
//! once start one drain.

use std::collections::BTreeMap;

use super::{
    drain_info, DrainState, DEADLINE_ANNOTATION, REMAINING_ANNOTATION, STARTED_ANNOTATION,
    STATE_ANNOTATION,
};
use crate::kube::{self, NodePatch};
use crate::time;

/// At most this many pods are named in the remaining-pods annotation.
pub const MAX_REMAINING: usize = 100;
/// Attempts of a preconditioned write before giving up on a busy Node.
const ATTEMPTS: usize = 5;

/// What a drain request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The node was active: it is now cordoned and draining.
    Started,
    /// Already draining or drained: nothing was changed.
    Already(DrainState),
}

/// Cordon `name` and mark it draining until `deadline_secs` from now, unless a drain is
/// already under way or done.
pub fn start(kube: &kube::Client, name: &str, deadline_secs: u64) -> Result<Start, kube::Error> {
    for _ in 0..ATTEMPTS {
        let node = kube.get_node(name)?;
        let state = drain_info(&node.annotations).state;
        if state != DrainState::Active {
            return Ok(Start::Already(state));
        }
        let now = time::now();
        let mut annotations = BTreeMap::new();
        annotations.insert(STATE_ANNOTATION.into(), Some("draining".into()));
        annotations.insert(
            DEADLINE_ANNOTATION.into(),
            Some(time::rfc3339(now + deadline_secs as i64)),
        );
        annotations.insert(STARTED_ANNOTATION.into(), Some(time::rfc3339(now)));
        annotations.insert(REMAINING_ANNOTATION.into(), None);
        let patch = NodePatch {
            annotations,
            unschedulable: Some(true),
            resource_version: Some(node.resource_version),
            ..NodePatch::default()
        };
        match kube.patch_node(name, &patch) {
            Ok(_) => return Ok(Start::Started),
            Err(kube::Error::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Conflict)
}

/// Mark a draining node drained, naming the pods left (if any). Returns false when the
/// node is no longer draining (resumed, or gone), in which case nothing is written.
pub fn finish(kube: &kube::Client, name: &str, remaining: &[String]) -> Result<bool, kube::Error> {
    for _ in 0..ATTEMPTS {
        let node = match kube.get_node(name) {
            Ok(n) => n,
            Err(kube::Error::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        if drain_info(&node.annotations).state != DrainState::Draining {
            return Ok(false);
        }
        let left = (!remaining.is_empty()).then(|| {
            let names: Vec<&String> = remaining.iter().take(MAX_REMAINING).collect();
            serde_json::to_string(&names).unwrap_or_else(|_| "[]".into())
        });
        let mut annotations = BTreeMap::new();
        annotations.insert(STATE_ANNOTATION.into(), Some("drained".into()));
        annotations.insert(REMAINING_ANNOTATION.into(), left);
        let patch = NodePatch {
            annotations,
            resource_version: Some(node.resource_version),
            ..NodePatch::default()
        };
        match kube.patch_node(name, &patch) {
            Ok(_) => return Ok(true),
            Err(kube::Error::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Conflict)
}

/// Uncordon and clear the drain state. Returns whether anything changed (a node that is
/// active and schedulable is left untouched).
pub fn resume(kube: &kube::Client, name: &str) -> Result<bool, kube::Error> {
    let node = kube.get_node(name)?;
    let info = drain_info(&node.annotations);
    let has_any = [
        STATE_ANNOTATION,
        DEADLINE_ANNOTATION,
        STARTED_ANNOTATION,
        REMAINING_ANNOTATION,
    ]
    .iter()
    .any(|k| node.annotations.contains_key(*k));
    if info.state == DrainState::Active && !has_any && !node.unschedulable {
        return Ok(false);
    }
    let annotations = [
        STATE_ANNOTATION,
        DEADLINE_ANNOTATION,
        STARTED_ANNOTATION,
        REMAINING_ANNOTATION,
    ]
    .iter()
    .map(|k| (k.to_string(), None))
    .collect();
    kube.patch_node(
        name,
        &NodePatch {
            annotations,
            unschedulable: Some(false),
            ..NodePatch::default()
        },
    )?;
    Ok(true)
}
