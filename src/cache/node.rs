//! How the view keeps a node: as the exact bytes `GET /v1/nodes` sends for it, plus
//! the little the other readers need that those bytes do not show (the Ready
//! condition's status, reason and lastTransitionTime; the drain state, precomputed).
//!
//! One allocation per node. Kept as Rust structs (BTreeMap labels and annotations, a
//! `String` per key and value) 5,000 nodes took 9.6 times the size of the `/v1/nodes`
//! answer; kept like this, about the answer's size (see BENCHMARKS.md). `/v1/nodes`
//! and the node stream send the bytes as they are; the rare reader that needs labels
//! or annotations as a map (Flux inputs, cluster health, a wait's message) parses one
//! node at a time with [`CachedNode::node`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::api::NodeSummary;
use crate::kube::{Condition, Node};
use crate::lifecycle::{drain_info, DrainState};

/// One node in the view.
#[derive(Debug, PartialEq, Eq)]
pub struct CachedNode {
    /// `/v1/nodes`'s JSON for the node, then the Ready condition's status, reason and
    /// lastTransitionTime, back to back.
    data: Box<[u8]>,
    json_len: u32,
    status_len: u32,
    reason_len: u32,
    flags: u8,
    drain: DrainState,
}

const READY: u8 = 1;
const HAS_CONDITION: u8 = 2;
const HAS_REASON: u8 = 4;
const HAS_SINCE: u8 = 8;

/// The fields of `/v1/nodes`'s JSON that [`CachedNode::node`] reads back (`roles` is
/// derived from the labels).
#[derive(Deserialize)]
struct Shown {
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    #[serde(rename = "internalIP")]
    internal_ip: String,
}

/// A length that fits the `u32` it is kept in: the API server's objects are far smaller
/// (its request limit is 3 MiB), so a larger one is cut to nothing rather than panic.
fn len32(s: &[u8]) -> (u32, &[u8]) {
    match u32::try_from(s.len()) {
        Ok(n) => (n, s),
        Err(_) => (0, &[]),
    }
}

/// A writer that only counts.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CachedNode {
    pub fn new(node: Node) -> CachedNode {
        let drain = drain_info(&node.annotations).state;
        let ready_condition = node.conditions.iter().find(|c| c.type_ == "Ready");
        let mut flags = if node.ready { READY } else { 0 };
        let (mut status, mut reason, mut since) = ("", None, None);
        if let Some(c) = ready_condition {
            flags |= HAS_CONDITION;
            status = &c.status;
            reason = c.reason.as_deref();
            since = c.last_transition_time.as_deref();
        }
        if reason.is_some() {
            flags |= HAS_REASON;
        }
        if since.is_some() {
            flags |= HAS_SINCE;
        }
        let (status_len, status) = len32(status.as_bytes());
        let (reason_len, reason) = len32(reason.unwrap_or_default().as_bytes());
        let (_, since) = len32(since.unwrap_or_default().as_bytes());
        let extra = [status, reason, since].concat();
        let summary = NodeSummary::from_node(node);
        // Measured first, then written into one allocation of exactly the right size: a
        // growing Vec's steps (and its spare capacity) would be left between the nodes
        // as holes the allocator cannot give back (see BENCHMARKS.md).
        let mut count = Count(0);
        let _ = serde_json::to_writer(&mut count, &summary);
        let mut data = Vec::with_capacity(count.0 + extra.len());
        let _ = serde_json::to_writer(&mut data, &summary);
        let (json_len, _) = len32(&data);
        data.extend_from_slice(&extra);
        CachedNode {
            data: data.into_boxed_slice(),
            json_len,
            status_len,
            reason_len,
            flags,
            drain,
        }
    }

    /// The node as `/v1/nodes` shows it: these bytes are sent as they are.
    pub fn json(&self) -> &[u8] {
        &self.data[..self.json_len as usize]
    }

    pub fn ready(&self) -> bool {
        self.flags & READY != 0
    }

    pub fn drain(&self) -> DrainState {
        self.drain
    }

    fn text(&self, from: usize, len: u32) -> &str {
        std::str::from_utf8(&self.data[from..from + len as usize]).unwrap_or_default()
    }

    /// The node's Ready condition: type, status, reason and lastTransitionTime (the
    /// message and heartbeat are not kept).
    pub fn ready_condition(&self) -> Option<Condition> {
        if self.flags & HAS_CONDITION == 0 {
            return None;
        }
        let at = self.json_len as usize;
        let status = self.text(at, self.status_len);
        let at = at + self.status_len as usize;
        let reason = self.text(at, self.reason_len);
        let since =
            std::str::from_utf8(&self.data[at + self.reason_len as usize..]).unwrap_or_default();
        let some = |flag: u8, s: &str| (self.flags & flag != 0).then(|| s.to_string());
        Some(Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: some(HAS_REASON, reason),
            last_transition_time: some(HAS_SINCE, since),
            ..Condition::default()
        })
    }

    /// The node as the view's readers know it: name, labels, annotations, InternalIP,
    /// readiness and the Ready condition (nothing else is kept). Parses the JSON: one
    /// node at a time, for the readers that need the maps.
    pub fn node(&self) -> Node {
        let shown: Shown = serde_json::from_slice(self.json()).unwrap_or_else(|_| Shown {
            name: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            internal_ip: String::new(),
        });
        Node {
            name: shown.name,
            labels: shown.labels,
            annotations: shown.annotations,
            internal_ip: Some(shown.internal_ip).filter(|ip| !ip.is_empty()),
            ready: self.ready(),
            conditions: self.ready_condition().into_iter().collect(),
            ..Node::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::{Address, Taint};

    /// A node with everything the view drops and everything JSON must escape.
    fn odd_node() -> Node {
        let mut n = Node {
            name: "node-\u{e9}\"1\"\\".into(),
            uid: "u-1".into(),
            resource_version: "42".into(),
            internal_ip: Some("10.0.0.7".into()),
            ready: true,
            unschedulable: true,
            taints: vec![Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: None,
                effect: "NoSchedule".into(),
                time_added: None,
            }],
            addresses: vec![
                Address {
                    type_: "InternalIP".into(),
                    address: "10.0.0.7".into(),
                },
                Address {
                    type_: "InternalIP".into(),
                    address: "fd00::7".into(),
                },
                Address {
                    type_: "Hostname".into(),
                    address: "node-1".into(),
                },
            ],
            conditions: vec![
                Condition {
                    type_: "MemoryPressure".into(),
                    status: "False".into(),
                    ..Condition::default()
                },
                Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("KubeletReady".into()),
                    message: Some("kubelet is posting ready status".into()),
                    last_heartbeat_time: Some("2026-12-04T10:00:00Z".into()),
                    last_transition_time: Some("2026-12-01T09:00:00Z".into()),
                },
            ],
            capacity_cpu: Some("4".into()),
            ..Node::default()
        };
        for (k, v) in [
            ("node-role.kubernetes.io/control-plane", "true"),
            ("kots.io/embedded-cluster-role-0", "controller"),
            ("kots.io/embedded-cluster-role", "total-1"),
            (
                "odd",
                "tab\there, newline\n, quote \" and \u{1f600} and \u{0}",
            ),
            ("empty", ""),
        ] {
            n.labels.insert(k.into(), v.into());
        }
        n.annotations
            .insert(crate::lifecycle::STATE_ANNOTATION.into(), "draining".into());
        n.annotations
            .insert("</script>".into(), "\u{2028}\u{7f}".into());
        n
    }

    /// The view before: the node slimmed to the readers' fields, shown by
    /// `NodeSummary` (in `/v1/nodes`) and inside `json!` (in the stream).
    fn old_forms(n: &Node) -> (Vec<u8>, Vec<u8>) {
        let summary = serde_json::to_vec(&NodeSummary::from_node(n.clone())).unwrap();
        let line = serde_json::to_vec(
            &serde_json::json!({"type": "ADDED", "node": NodeSummary::from_node(n.clone())}),
        )
        .unwrap();
        (summary, line)
    }

    #[test]
    fn the_compact_form_renders_exactly_what_the_structs_did() {
        let mut plain = odd_node();
        plain.name = "node-2".into();
        plain.labels.clear();
        plain.annotations.clear();
        plain.conditions.clear();
        plain.internal_ip = None;
        plain.ready = false;
        for n in [odd_node(), plain] {
            let (summary, line) = old_forms(&n);
            let c = CachedNode::new(n.clone());
            assert_eq!(c.json(), summary.as_slice());
            assert_eq!(
                crate::api::event_line("ADDED", &c),
                [line.as_slice(), b"\n"].concat()
            );
            // What the readers get back is what the slim struct held.
            let back = c.node();
            assert_eq!(back.name, n.name);
            assert_eq!(back.labels, n.labels);
            assert_eq!(back.annotations, n.annotations);
            assert_eq!(back.internal_ip, n.internal_ip);
            assert_eq!(back.ready, n.ready);
            let ready: Vec<_> = n
                .conditions
                .iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| Condition {
                    message: None,
                    last_heartbeat_time: None,
                    ..c.clone()
                })
                .collect();
            assert_eq!(back.conditions, ready);
            assert_eq!(c.ready(), n.ready);
            assert_eq!(c.drain(), drain_info(&n.annotations).state);
        }
    }

    #[test]
    fn a_condition_without_reason_or_time_stays_without() {
        let mut n = odd_node();
        n.conditions = vec![Condition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some(String::new()),
            ..Condition::default()
        }];
        let c = CachedNode::new(n).ready_condition().unwrap();
        assert_eq!(c.status, "Unknown");
        assert_eq!(c.reason.as_deref(), Some(""));
        assert_eq!(c.last_transition_time, None);
    }
}
