//! Kubernetes calls for the node lifecycle: node patches and deletion, a node's pods and
//! their eviction, coordination Leases, and k0s's `EtcdMember` objects.
//!
//! Wire types stay private here; callers get [`Pod`], [`Lease`], [`EtcdMember`] and
//! [`Eviction`]. Patches are JSON merge patches (`application/merge-patch+json`), which
//! every resource accepts, CRDs included; `null` removes a key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use ureq::http::Method;

use super::paging::{encode, list_path, next_page, segment, Next};
use super::status::error_from_response;
use super::types::Node;
use super::{wire, Client, Error};

/// Cap on one object body (pods and leases are small; a node can be large).
const OBJECT_LIMIT: u64 = 16 << 20;
/// Cap on one page of a pod list.
const LIST_LIMIT: u64 = 64 << 20;
const MERGE_PATCH: &str = "application/merge-patch+json";

/// A pod, reduced to what a drain decides on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `status.phase`: `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    /// The kind of the owner reference marked `controller: true` (`DaemonSet`, ...).
    pub controller_kind: Option<String>,
    /// Carries the `kubernetes.io/config.mirror` annotation (a static pod's API copy).
    pub mirror: bool,
    /// Has a `deletionTimestamp`: already on its way out.
    pub terminating: bool,
}

/// A `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    pub namespace: String,
    pub name: String,
    /// Empty for a Lease not yet created.
    pub resource_version: String,
    pub holder: Option<String>,
    pub duration_seconds: Option<i64>,
    /// RFC 3339 with microseconds (`MicroTime`).
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub transitions: i64,
}

/// k0s's `etcd.k0sproject.io/v1beta1` EtcdMember (cluster-scoped, named after the node).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdMember {
    pub name: String,
    /// `spec.leave`: removal from etcd was requested.
    pub leave: bool,
    /// The `Joined` condition's status (`"True"`, `"False"`), if reported.
    pub joined: Option<String>,
    pub member_id: Option<String>,
    pub peer_address: Option<String>,
}

/// What an eviction request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// Accepted (201): the pod is now terminating.
    Evicted,
    /// The pod was already gone (404).
    Gone,
    /// A PodDisruptionBudget refused it (429 with cause `DisruptionBudget`); try later.
    /// Carries the API server's message, which names the budget.
    Blocked(String),
}

/// A merge patch of a node's labels, annotations and cordon flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePatch {
    /// `Some(v)` sets, `None` removes.
    pub labels: BTreeMap<String, Option<String>>,
    /// `Some(v)` sets, `None` removes.
    pub annotations: BTreeMap<String, Option<String>>,
    /// `Some(true)` cordons, `Some(false)` uncordons (the field is removed), `None` leaves it.
    pub unschedulable: Option<bool>,
    /// When set, the patch applies only to this version ([`Error::Conflict`] otherwise).
    pub resource_version: Option<String>,
}

impl NodePatch {
    fn body(&self) -> Value {
        let mut meta = Map::new();
        if !self.labels.is_empty() {
            meta.insert("labels".into(), json!(self.labels));
        }
        if !self.annotations.is_empty() {
            meta.insert("annotations".into(), json!(self.annotations));
        }
        if let Some(rv) = &self.resource_version {
            meta.insert("resourceVersion".into(), json!(rv));
        }
        let mut body = Map::new();
        if !meta.is_empty() {
            body.insert("metadata".into(), Value::Object(meta));
        }
        if let Some(u) = self.unschedulable {
            // Absent means schedulable, as the API server writes it.
            let v = if u { json!(true) } else { Value::Null };
            body.insert("spec".into(), json!({ "unschedulable": v }));
        }
        Value::Object(body)
    }
}

// ---- wire types --------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerRef>>,
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct OwnerRef {
    kind: Option<String>,
    controller: Option<bool>,
}

#[derive(Deserialize, Default)]
struct WirePod {
    metadata: Option<Meta>,
    status: Option<PodStatus>,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    phase: Option<String>,
}

#[derive(Deserialize)]
struct PodList {
    metadata: Option<ListMeta>,
    items: Option<Vec<WirePod>>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "continue")]
    continue_: Option<String>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct LeaseSpecWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    holder_identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_duration_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquire_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renew_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_transitions: Option<i64>,
}

#[derive(Deserialize)]
struct WireLease {
    metadata: Option<Meta>,
    spec: Option<LeaseSpecWire>,
}

#[derive(Deserialize)]
struct LeaseList {
    items: Option<Vec<WireLease>>,
}

#[derive(Deserialize)]
struct WireEtcdMember {
    metadata: Option<Meta>,
    spec: Option<EtcdSpec>,
    status: Option<EtcdStatus>,
}

#[derive(Deserialize)]
struct EtcdSpec {
    leave: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EtcdStatus {
    #[serde(rename = "memberID")]
    member_id: Option<String>,
    peer_address: Option<String>,
    conditions: Option<Vec<EtcdCondition>>,
}

#[derive(Deserialize)]
struct EtcdCondition {
    #[serde(rename = "type")]
    type_: Option<String>,
    status: Option<String>,
}

/// The parts of a 429 Status that say whether a disruption budget refused an eviction.
#[derive(Deserialize, Default)]
struct EvictionStatus {
    message: Option<String>,
    details: Option<EvictionDetails>,
}

#[derive(Deserialize, Default)]
struct EvictionDetails {
    causes: Option<Vec<Cause>>,
}

#[derive(Deserialize)]
struct Cause {
    reason: Option<String>,
    message: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Protocol(format!(
            "{what}: unexpected JSON at line {} column {}",
            e.line(),
            e.column()
        ))
    })
}

fn pod_from_wire(w: WirePod) -> Pod {
    let meta = w.metadata.unwrap_or_default();
    Pod {
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        uid: meta.uid.unwrap_or_default(),
        phase: w.status.and_then(|s| s.phase).unwrap_or_default(),
        controller_kind: meta
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .find(|o| o.controller == Some(true))
            .and_then(|o| o.kind),
        mirror: meta
            .annotations
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
        terminating: meta.deletion_timestamp.is_some(),
    }
}

fn lease_from_wire(w: WireLease) -> Lease {
    let meta = w.metadata.unwrap_or_default();
    let spec = w.spec.unwrap_or_default();
    Lease {
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        resource_version: meta.resource_version.unwrap_or_default(),
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        duration_seconds: spec.lease_duration_seconds,
        acquire_time: spec.acquire_time,
        renew_time: spec.renew_time,
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn lease_body(l: &Lease) -> Vec<u8> {
    let mut meta = json!({ "name": l.name, "namespace": l.namespace });
    if !l.resource_version.is_empty() {
        meta["resourceVersion"] = json!(l.resource_version);
    }
    let spec = LeaseSpecWire {
        holder_identity: l.holder.clone(),
        lease_duration_seconds: l.duration_seconds,
        acquire_time: l.acquire_time.clone(),
        renew_time: l.renew_time.clone(),
        lease_transitions: Some(l.transitions),
    };
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": spec,
    })
    .to_string()
    .into_bytes()
}

fn etcd_from_wire(w: WireEtcdMember) -> EtcdMember {
    let status = w.status;
    let (member_id, peer_address, joined) = match status {
        Some(s) => (
            s.member_id,
            s.peer_address,
            s.conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_.as_deref() == Some("Joined"))
                .and_then(|c| c.status),
        ),
        None => (None, None, None),
    };
    EtcdMember {
        name: w.metadata.and_then(|m| m.name).unwrap_or_default(),
        leave: w.spec.and_then(|s| s.leave).unwrap_or(false),
        joined,
        member_id,
        peer_address,
    }
}

/// A 429 body's DisruptionBudget cause, if that is why the eviction was refused.
fn disruption_budget_cause(body: &[u8]) -> Option<String> {
    let st: EvictionStatus = serde_json::from_slice(body).unwrap_or_default();
    let causes = st.details.and_then(|d| d.causes).unwrap_or_default();
    let cause = causes
        .into_iter()
        .find(|c| c.reason.as_deref() == Some("DisruptionBudget"))?;
    let mut m = cause
        .message
        .or(st.message)
        .unwrap_or_else(|| "a PodDisruptionBudget refused the eviction".into());
    if m.len() > 300 {
        let mut end = 300;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
    }
    Some(m)
}

fn not_found_is_none<T>(r: Result<T, Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn lease_path(ns: &str, name: Option<&str>) -> Result<String, Error> {
    let base = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
        segment(ns, "namespace")?
    );
    Ok(match name {
        Some(n) => format!("{base}/{}", segment(n, "lease")?),
        None => base,
    })
}

fn etcd_path(name: &str) -> Result<String, Error> {
    Ok(format!(
        "/apis/etcd.k0sproject.io/v1beta1/etcdmembers/{}",
        segment(name, "etcdmember")?
    ))
}

impl Client {
    /// Merge-patch a node; answers the node as written.
    pub fn patch_node(&self, name: &str, patch: &NodePatch) -> Result<Node, Error> {
        let path = format!("/api/v1/nodes/{}", segment(name, "node")?);
        let body = patch.body().to_string();
        wire::parse_node(&self.fetch(
            Method::PATCH,
            &path,
            Some((MERGE_PATCH, body.as_bytes())),
            OBJECT_LIMIT,
        )?)
    }

    /// Delete a node object; [`Error::NotFound`] if it is already gone.
    pub fn delete_node(&self, name: &str) -> Result<(), Error> {
        let path = format!("/api/v1/nodes/{}", segment(name, "node")?);
        self.fetch(Method::DELETE, &path, None, OBJECT_LIMIT)
            .map(drop)
    }

    /// Every pod bound to `node`, in all namespaces (`fieldSelector=spec.nodeName=NODE`).
    pub fn list_pods_on_node(&self, node: &str) -> Result<Vec<Pod>, Error> {
        let selector = format!(
            "&fieldSelector={}",
            encode(&format!("spec.nodeName={node}"))
        );
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = list_path("/api/v1/pods", "", token.as_deref()) + &selector;
            let page: PodList = decode(
                &self.fetch(Method::GET, &path, None, LIST_LIMIT)?,
                "pod list",
            )?;
            pages += 1;
            items.extend(
                page.items
                    .unwrap_or_default()
                    .into_iter()
                    .map(pod_from_wire),
            );
            let next = page.metadata.and_then(|m| m.continue_);
            match next_page(next.as_deref(), token.as_deref(), pages, items.len())? {
                Next::Done => return Ok(items),
                Next::Fetch(t) => token = Some(t),
            }
        }
    }

    /// One pod, or `None` once it is gone.
    pub fn get_pod(&self, ns: &str, name: &str) -> Result<Option<Pod>, Error> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}",
            segment(ns, "namespace")?,
            segment(name, "pod")?
        );
        not_found_is_none(
            self.fetch(Method::GET, &path, None, OBJECT_LIMIT)
                .and_then(|b| decode::<WirePod>(&b, "pod").map(pod_from_wire)),
        )
    }

    /// Ask the API server to evict a pod (`POST .../pods/NAME/eviction`), honouring
    /// PodDisruptionBudgets. Never retried here: the caller decides when to try again.
    pub fn evict_pod(&self, ns: &str, name: &str) -> Result<Eviction, Error> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/eviction",
            segment(ns, "namespace")?,
            segment(name, "pod")?
        );
        let body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": { "name": name, "namespace": ns },
        })
        .to_string();
        let reply = self.call(
            &Method::POST,
            &path,
            Some(("application/json", body.as_bytes())),
            OBJECT_LIMIT,
        )?;
        match reply.status {
            200..=299 => Ok(Eviction::Evicted),
            404 => Ok(Eviction::Gone),
            429 => match disruption_budget_cause(&reply.body) {
                Some(m) => Ok(Eviction::Blocked(m)),
                None => Err(error_from_response(
                    429,
                    &reply.body,
                    reply.retry_after.as_deref(),
                )),
            },
            s => Err(error_from_response(
                s,
                &reply.body,
                reply.retry_after.as_deref(),
            )),
        }
    }

    /// A Lease, or `None` if there is none of that name.
    pub fn get_lease(&self, ns: &str, name: &str) -> Result<Option<Lease>, Error> {
        let path = lease_path(ns, Some(name))?;
        not_found_is_none(
            self.fetch(Method::GET, &path, None, OBJECT_LIMIT)
                .and_then(|b| decode::<WireLease>(&b, "lease").map(lease_from_wire)),
        )
    }

    /// Every Lease in a namespace (`kube-node-lease` holds one per node and k0s's own).
    pub fn list_leases(&self, ns: &str) -> Result<Vec<Lease>, Error> {
        // One page is enough to find the leader; a namespace of leases is one per node.
        let path = format!("{}?limit=10000", lease_path(ns, None)?);
        let list: LeaseList = decode(
            &self.fetch(Method::GET, &path, None, LIST_LIMIT)?,
            "lease list",
        )?;
        Ok(list
            .items
            .unwrap_or_default()
            .into_iter()
            .map(lease_from_wire)
            .collect())
    }

    /// Create a Lease; [`Error::AlreadyExists`] if another got there first.
    pub fn create_lease(&self, lease: &Lease) -> Result<Lease, Error> {
        let path = lease_path(&lease.namespace, None)?;
        segment(&lease.name, "lease")?;
        let body = lease_body(&Lease {
            resource_version: String::new(),
            ..lease.clone()
        });
        let b = self.fetch(
            Method::POST,
            &path,
            Some(("application/json", &body)),
            OBJECT_LIMIT,
        )?;
        decode::<WireLease>(&b, "lease").map(lease_from_wire)
    }

    /// Replace a Lease at `lease.resource_version`; [`Error::Conflict`] if it changed.
    pub fn update_lease(&self, lease: &Lease) -> Result<Lease, Error> {
        let path = lease_path(&lease.namespace, Some(&lease.name))?;
        let body = lease_body(lease);
        let b = self.fetch(
            Method::PUT,
            &path,
            Some(("application/json", &body)),
            OBJECT_LIMIT,
        )?;
        decode::<WireLease>(&b, "lease").map(lease_from_wire)
    }

    /// Delete a Lease only if it is still at `resource_version` (so a Lease another
    /// daemon took over is never removed). [`Error::Conflict`] or [`Error::NotFound`]
    /// when it changed or is gone.
    pub fn delete_lease(&self, ns: &str, name: &str, resource_version: &str) -> Result<(), Error> {
        let path = lease_path(ns, Some(name))?;
        let body = json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": { "resourceVersion": resource_version },
        })
        .to_string();
        self.fetch(
            Method::DELETE,
            &path,
            Some(("application/json", body.as_bytes())),
            OBJECT_LIMIT,
        )
        .map(drop)
    }

    /// The EtcdMember of a controller node, or `None` (a worker has none).
    pub fn get_etcd_member(&self, name: &str) -> Result<Option<EtcdMember>, Error> {
        let path = etcd_path(name)?;
        not_found_is_none(
            self.fetch(Method::GET, &path, None, OBJECT_LIMIT)
                .and_then(|b| decode::<WireEtcdMember>(&b, "etcdmember").map(etcd_from_wire)),
        )
    }

    /// Ask k0s to remove a controller from etcd: merge-patch `{"spec":{"leave":true}}`.
    pub fn etcd_member_leave(&self, name: &str) -> Result<EtcdMember, Error> {
        let path = etcd_path(name)?;
        let body = br#"{"spec":{"leave":true}}"#;
        let b = self.fetch(
            Method::PATCH,
            &path,
            Some((MERGE_PATCH, body.as_slice())),
            OBJECT_LIMIT,
        )?;
        decode::<WireEtcdMember>(&b, "etcdmember").map(etcd_from_wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_patch_bodies() {
        let mut p = NodePatch {
            unschedulable: Some(false),
            ..NodePatch::default()
        };
        p.labels.insert("a".into(), Some("1".into()));
        p.labels.insert("gone".into(), None);
        assert_eq!(
            p.body(),
            json!({"metadata":{"labels":{"a":"1","gone":null}},"spec":{"unschedulable":null}})
        );
        let p = NodePatch {
            unschedulable: Some(true),
            resource_version: Some("42".into()),
            ..NodePatch::default()
        };
        assert_eq!(
            p.body(),
            json!({"metadata":{"resourceVersion":"42"},"spec":{"unschedulable":true}})
        );
    }

    #[test]
    fn pods_from_the_wire() {
        let list: PodList = decode(
            br#"{"metadata":{},"items":[
              {"metadata":{"name":"kp","namespace":"kube-system","uid":"u1",
                "ownerReferences":[{"kind":"ReplicaSet"},{"kind":"DaemonSet","controller":true}]},
               "status":{"phase":"Running"}},
              {"metadata":{"name":"etcd","namespace":"kube-system","uid":"u2",
                "annotations":{"kubernetes.io/config.mirror":"abc"},"deletionTimestamp":"2026-01-01T00:00:00Z"}}
            ]}"#,
            "x",
        )
        .unwrap();
        let pods: Vec<Pod> = list.items.unwrap().into_iter().map(pod_from_wire).collect();
        assert_eq!(pods[0].controller_kind.as_deref(), Some("DaemonSet"));
        assert!(!pods[0].mirror && !pods[0].terminating);
        assert_eq!(pods[0].phase, "Running");
        assert!(pods[1].mirror && pods[1].terminating);
        assert_eq!(pods[1].controller_kind, None);
    }

    #[test]
    fn eviction_429_causes() {
        let pdb = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
          "message":"Cannot evict pod as it would violate the pod's disruption budget.",
          "reason":"TooManyRequests","details":{"causes":[{"reason":"DisruptionBudget",
          "message":"The disruption budget web needs 1 healthy pods and has 1 currently"}]},"code":429}"#;
        assert_eq!(
            disruption_budget_cause(pdb).as_deref(),
            Some("The disruption budget web needs 1 healthy pods and has 1 currently")
        );
        let throttled = br#"{"kind":"Status","code":429,"reason":"TooManyRequests","details":{"retryAfterSeconds":1}}"#;
        assert_eq!(disruption_budget_cause(throttled), None);
        assert_eq!(disruption_budget_cause(b"not json"), None);
    }

    #[test]
    fn leases_round_trip() {
        let l = Lease {
            namespace: "kotsadm".into(),
            name: "joinery-drain-n1".into(),
            resource_version: "7".into(),
            holder: Some("joinery@node-1".into()),
            duration_seconds: Some(15),
            acquire_time: Some("2026-01-01T00:00:00.000000Z".into()),
            renew_time: Some("2026-01-01T00:00:05.000000Z".into()),
            transitions: 2,
        };
        let back = lease_from_wire(decode(&lease_body(&l), "x").unwrap());
        assert_eq!(back, l);
    }

    #[test]
    fn etcd_members() {
        let m: WireEtcdMember = decode(
            br#"{"metadata":{"name":"node-2"},"spec":{"leave":true},"status":{"peerAddress":"10.0.0.12",
              "memberID":"ab12","conditions":[{"type":"Joined","status":"False"}]}}"#,
            "x",
        )
        .unwrap();
        let m = etcd_from_wire(m);
        assert!(m.leave);
        assert_eq!(m.joined.as_deref(), Some("False"));
        assert_eq!(m.member_id.as_deref(), Some("ab12"));
    }
}
