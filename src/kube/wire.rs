//! The Kubernetes JSON wire format (core/v1 Node, Secret, ConfigMap, lists) and its
//! conversion to the domain structs in `types.rs`. Only this file knows field names.
//!
//! Pure: bytes in, domain values out. Every field is optional on the way in, because the
//! API server omits empty ones (`spec.unschedulable`, `labels`, ...). JSON errors are
//! reported by position only: serde's message may quote a value, and a value may be secret.

use std::collections::BTreeMap;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::types::{
    Address, Condition, EtcdMember, Lease, NewSecret, Node, NodeInfo, Pod, Secret, Taint,
};
use super::Error;

type Map = BTreeMap<String, String>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<String>,
    labels: Option<Map>,
    annotations: Option<Map>,
    owner_references: Option<Vec<OwnerRef>>,
    deletion_timestamp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(rename = "continue")]
    continue_: Option<String>,
    resource_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct List<T> {
    metadata: Option<ListMeta>,
    items: Option<Vec<T>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireNode {
    metadata: Option<ObjectMeta>,
    spec: Option<NodeSpec>,
    status: Option<NodeStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeSpec {
    unschedulable: Option<bool>,
    taints: Option<Vec<WireTaint>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTaint {
    key: Option<String>,
    value: Option<String>,
    effect: Option<String>,
    time_added: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeStatus {
    capacity: Option<Map>,
    conditions: Option<Vec<WireCondition>>,
    addresses: Option<Vec<WireAddress>>,
    node_info: Option<WireNodeInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCondition {
    #[serde(rename = "type")]
    type_: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    last_heartbeat_time: Option<String>,
    last_transition_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireAddress {
    #[serde(rename = "type")]
    type_: Option<String>,
    address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNodeInfo {
    #[serde(rename = "machineID")]
    machine_id: Option<String>,
    #[serde(rename = "systemUUID")]
    system_uuid: Option<String>,
    #[serde(rename = "bootID")]
    boot_id: Option<String>,
    kernel_version: Option<String>,
    os_image: Option<String>,
    container_runtime_version: Option<String>,
    kubelet_version: Option<String>,
    kube_proxy_version: Option<String>,
    operating_system: Option<String>,
    architecture: Option<String>,
}

#[derive(Default, Deserialize)]
pub(crate) struct WireSecret {
    metadata: Option<ObjectMeta>,
    #[serde(rename = "type")]
    type_: Option<String>,
    data: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireConfigMap {
    data: Option<Map>,
}

/// One page of a list: the converted items and the `continue` token, if any.
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    pub continue_token: Option<String>,
    /// The list's `metadata.resourceVersion`: where a watch of the same list starts.
    pub resource_version: Option<String>,
}

/// A resource the generic path in `client.rs` can get, list and watch: its name in
/// messages, its wire type and the conversion to its domain struct.
pub(crate) trait Kind: Sized {
    /// Singular, lowercase, for messages: `"node"`.
    const WHAT: &'static str;
    type Wire: DeserializeOwned;
    fn from_wire(w: Self::Wire) -> Result<Self, Error>;
}

/// Decode one object of kind `K`.
pub(crate) fn parse_one<K: Kind>(body: &[u8]) -> Result<K, Error> {
    K::from_wire(decode(body, K::WHAT)?)
}

/// Decode one list page of kind `K`.
pub(crate) fn parse_page<K: Kind>(body: &[u8]) -> Result<Page<K>, Error> {
    page(body, &format!("{} list", K::WHAT), K::from_wire)
}

/// Decode JSON without letting serde's message (which may quote a value) escape.
fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        Error::Protocol(format!(
            "{what}: {kind} at line {} column {}",
            e.line(),
            e.column()
        ))
    })
}

/// Decode a list page and convert each item.
fn page<W: DeserializeOwned, T>(
    body: &[u8],
    what: &str,
    convert: impl Fn(W) -> Result<T, Error>,
) -> Result<Page<T>, Error> {
    let list: List<W> = decode(body, what)?;
    let items = list
        .items
        .unwrap_or_default()
        .into_iter()
        .map(convert)
        .collect::<Result<Vec<T>, Error>>()?;
    let meta = list.metadata.unwrap_or_default();
    Ok(Page {
        items,
        continue_token: meta.continue_.filter(|c| !c.is_empty()),
        resource_version: meta.resource_version.filter(|v| !v.is_empty()),
    })
}

impl Kind for Node {
    const WHAT: &'static str = "node";
    type Wire = WireNode;
    fn from_wire(w: WireNode) -> Result<Node, Error> {
        node_from_wire(w)
    }
}

impl Kind for Secret {
    const WHAT: &'static str = "secret";
    type Wire = WireSecret;
    fn from_wire(w: WireSecret) -> Result<Secret, Error> {
        secret_from_wire(w)
    }
}

/// `metadata.uid` of any object.
pub(crate) fn parse_object_uid(body: &[u8]) -> Result<String, Error> {
    #[derive(Deserialize)]
    struct Meta {
        #[serde(default)]
        uid: String,
    }
    #[derive(Deserialize)]
    struct Object {
        metadata: Meta,
    }
    let o: Object = decode(body, "object")?;
    if o.metadata.uid.is_empty() {
        return Err(Error::Protocol("object has no metadata.uid".into()));
    }
    Ok(o.metadata.uid)
}

pub(crate) fn parse_configmap_data(body: &[u8]) -> Result<Map, Error> {
    let cm: WireConfigMap = decode(body, "configmap")?;
    Ok(cm.data.unwrap_or_default())
}

pub(crate) fn node_from_wire(w: WireNode) -> Result<Node, Error> {
    let meta = w.metadata.unwrap_or_default();
    let name = meta
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Protocol("node without metadata.name".into()))?;
    let spec = w.spec.unwrap_or_default();
    let status = w.status.unwrap_or_default();

    let conditions: Vec<Condition> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| Condition {
            type_: c.type_.unwrap_or_default(),
            status: c.status.unwrap_or_default(),
            reason: c.reason,
            message: c.message,
            last_heartbeat_time: c.last_heartbeat_time,
            last_transition_time: c.last_transition_time,
        })
        .collect();
    let addresses: Vec<Address> = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|a| Address {
            type_: a.type_.unwrap_or_default(),
            address: a.address.unwrap_or_default(),
        })
        .collect();
    let ready = conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let internal_ip = addresses
        .iter()
        .find(|a| a.type_ == "InternalIP" && !a.address.is_empty())
        .map(|a| a.address.clone());
    let info = status.node_info.unwrap_or_default();
    let mut capacity = status.capacity.unwrap_or_default();

    Ok(Node {
        name,
        uid: meta.uid.unwrap_or_default(),
        resource_version: meta.resource_version.unwrap_or_default(),
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        internal_ip,
        ready,
        unschedulable: spec.unschedulable.unwrap_or(false),
        taints: spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| Taint {
                key: t.key.unwrap_or_default(),
                value: t.value,
                effect: t.effect.unwrap_or_default(),
                time_added: t.time_added,
            })
            .collect(),
        conditions,
        addresses,
        node_info: NodeInfo {
            machine_id: info.machine_id.unwrap_or_default(),
            system_uuid: info.system_uuid.unwrap_or_default(),
            boot_id: info.boot_id.unwrap_or_default(),
            kernel_version: info.kernel_version.unwrap_or_default(),
            os_image: info.os_image.unwrap_or_default(),
            container_runtime_version: info.container_runtime_version.unwrap_or_default(),
            kubelet_version: info.kubelet_version.unwrap_or_default(),
            kube_proxy_version: info.kube_proxy_version.unwrap_or_default(),
            operating_system: info.operating_system.unwrap_or_default(),
            architecture: info.architecture.unwrap_or_default(),
        },
        capacity_cpu: capacity.remove("cpu"),
        capacity_memory: capacity.remove("memory"),
        created: meta.creation_timestamp,
    })
}

pub(crate) fn secret_from_wire(w: WireSecret) -> Result<Secret, Error> {
    let meta = w.metadata.unwrap_or_default();
    let name = meta
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Protocol("secret without metadata.name".into()))?;
    let mut data = BTreeMap::new();
    for (key, value) in w.data.unwrap_or_default() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.unwrap_or_default())
            .map_err(|_| {
                Error::Protocol(format!(
                    "secret {name}: data key {key:?} is not valid base64"
                ))
            })?;
        data.insert(key, decoded);
    }
    Ok(Secret {
        name,
        namespace: meta.namespace.unwrap_or_default(),
        uid: meta.uid.unwrap_or_default(),
        resource_version: meta.resource_version.unwrap_or_default(),
        type_: w.type_,
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        data,
        created: meta.creation_timestamp,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewSecretWire<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: NewMeta<'a>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<&'a str>,
    data: BTreeMap<&'a str, String>,
}

#[derive(Serialize)]
struct NewMeta<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a Map,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a Map,
}

/// The JSON body of a Secret create.
pub(crate) fn new_secret_body(s: &NewSecret) -> Vec<u8> {
    let wire = NewSecretWire {
        api_version: "v1",
        kind: "Secret",
        metadata: NewMeta {
            name: &s.name,
            labels: &s.labels,
            annotations: &s.annotations,
        },
        type_: s.type_.as_deref(),
        data: s
            .data
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                )
            })
            .collect(),
    };
    // Serialising maps of strings cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// The JSON body of a DELETE carrying a uid precondition.
pub(crate) fn delete_options_body(uid: &str) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": { "uid": uid },
    })
    .to_string()
    .into_bytes()
}

// ---- watch events -------------------------------------------------------------------

/// One event of a watch stream, as the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WireEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// Nothing changed; the stream has reached the carried resourceVersion.
    Bookmark,
}

/// The parts of every watch event read first: its type and the version it carries.
#[derive(Deserialize)]
struct EventHead {
    #[serde(rename = "type")]
    type_: String,
    object: Option<HeadObject>,
}

#[derive(Deserialize)]
struct HeadObject {
    metadata: Option<HeadMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadMeta {
    resource_version: Option<String>,
}

/// The object of an ADDED/MODIFIED/DELETED event, decoded as a list item is (the same
/// decoder code, so the static binary does not carry a second one per kind).
#[derive(Deserialize)]
#[serde(bound = "W: DeserializeOwned")]
struct EventObject<W> {
    object: W,
}

/// Decode one line of a watch stream and the resourceVersion it carries. An `ERROR`
/// event is the Status object it holds, as an error (410 Expired: [`Error::Gone`]).
pub(crate) fn parse_event<K: Kind>(line: &[u8]) -> Result<(WireEvent<K>, Option<String>), Error> {
    let head: EventHead = decode(line, "watch event")?;
    let version = head
        .object
        .and_then(|o| o.metadata)
        .and_then(|m| m.resource_version)
        .filter(|v| !v.is_empty());
    let object = || -> Result<K, Error> {
        let e: EventObject<K::Wire> = decode(line, K::WHAT)?;
        K::from_wire(e.object)
    };
    let event = match head.type_.as_str() {
        "ADDED" => WireEvent::Added(object()?),
        "MODIFIED" => WireEvent::Modified(object()?),
        "DELETED" => WireEvent::Deleted(object()?),
        "BOOKMARK" => WireEvent::Bookmark,
        "ERROR" => return Err(super::status::error_from_event(line)),
        _ => {
            return Err(Error::Protocol(
                "watch event of an unknown type".to_string(),
            ))
        }
    };
    Ok((event, version))
}

// ---- pods, leases, etcd members ---------------------------------------------------

#[derive(Debug, Deserialize)]
struct OwnerRef {
    kind: Option<String>,
    controller: Option<bool>,
}

#[derive(Deserialize, Default)]
pub(crate) struct WirePod {
    metadata: Option<ObjectMeta>,
    status: Option<PodStatus>,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    phase: Option<String>,
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
pub(crate) struct WireLease {
    metadata: Option<ObjectMeta>,
    spec: Option<LeaseSpecWire>,
}

#[derive(Deserialize)]
pub(crate) struct WireEtcdMember {
    metadata: Option<ObjectMeta>,
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

impl Kind for Pod {
    const WHAT: &'static str = "pod";
    type Wire = WirePod;
    fn from_wire(w: WirePod) -> Result<Pod, Error> {
        Ok(pod_from_wire(w))
    }
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

impl Kind for Lease {
    const WHAT: &'static str = "lease";
    type Wire = WireLease;
    fn from_wire(w: WireLease) -> Result<Lease, Error> {
        Ok(lease_from_wire(w))
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

pub(crate) fn lease_body(l: &Lease) -> Vec<u8> {
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

impl Kind for EtcdMember {
    const WHAT: &'static str = "etcdmember";
    type Wire = WireEtcdMember;
    fn from_wire(w: WireEtcdMember) -> Result<EtcdMember, Error> {
        Ok(etcd_from_wire(w))
    }
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
pub(crate) fn disruption_budget_cause(body: &[u8]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const KIND_LIST: &str = include_str!("testdata/kind_nodelist.json");
    const MINIKUBE_NODE: &str = include_str!("testdata/minikube_node.json");

    #[test]
    fn kind_node_list_converts() {
        let page = parse_page::<Node>(KIND_LIST.as_bytes()).unwrap();
        assert_eq!(page.continue_token, None);
        assert_eq!(page.items.len(), 1);
        let n = &page.items[0];
        assert_eq!(n.name, "onprem-control-plane");
        assert_eq!(n.uid, "d9c2edc6-d34e-437f-96ff-24cff807df21");
        assert!(n.ready);
        assert!(!n.unschedulable);
        assert_eq!(n.internal_ip.as_deref(), Some("172.18.0.2"));
        // kubeadm marks the role with an empty value: the key is what matters.
        assert_eq!(
            n.labels.get("node-role.kubernetes.io/control-plane"),
            Some(&String::new())
        );
        assert_eq!(
            n.annotations
                .get("node.alpha.kubernetes.io/ttl")
                .map(String::as_str),
            Some("0")
        );
        assert_eq!(n.conditions.len(), 4);
        assert_eq!(n.addresses.len(), 2);
        assert!(n.taints.is_empty());
        assert_eq!(n.node_info.kubelet_version, "v1.25.3");
        assert_eq!(n.node_info.architecture, "arm64");
        assert_eq!(n.node_info.machine_id, "a38b913a7769497f97b9b76ac75aba12");
        assert_eq!(n.node_info.boot_id, "affd12b5-dd4e-4981-b46b-bcb322754471");
        assert_eq!(n.capacity_cpu.as_deref(), Some("6"));
        assert_eq!(n.capacity_memory.as_deref(), Some("8039820Ki"));
        assert_eq!(n.created.as_deref(), Some("2023-03-30T21:30:05Z"));
    }

    #[test]
    fn minikube_node_converts() {
        let n = parse_one::<Node>(MINIKUBE_NODE.as_bytes()).unwrap();
        assert_eq!(n.name, "minikube");
        assert!(n.ready);
        assert!(
            !n.unschedulable,
            "spec is {{}}: unschedulable absent means false"
        );
        assert_eq!(n.internal_ip.as_deref(), Some("192.168.64.107"));
        assert_eq!(n.capacity_cpu.as_deref(), Some("4"));
        assert_eq!(n.capacity_memory.as_deref(), Some("8165556Ki"));
        assert_eq!(n.node_info.kubelet_version, "v1.15.2");
    }

    fn node_json(spec: &str, conditions: &str, addresses: &str) -> String {
        format!(
            r#"{{"metadata":{{"name":"n1"}},"spec":{spec},"status":{{"conditions":{conditions},"addresses":{addresses}}}}}"#
        )
    }

    #[test]
    fn ready_only_when_ready_condition_is_true() {
        let cases = [
            (r#"[{"type":"Ready","status":"True"}]"#, true),
            (r#"[{"type":"Ready","status":"False"}]"#, false),
            (r#"[{"type":"Ready","status":"Unknown"}]"#, false),
            (r#"[{"type":"MemoryPressure","status":"True"}]"#, false),
            (r#"[{"type":"Ready","status":"true"}]"#, false),
            ("[]", false),
            ("null", false),
        ];
        for (conds, want) in cases {
            let n = parse_one::<Node>(node_json("{}", conds, "[]").as_bytes()).unwrap();
            assert_eq!(n.ready, want, "{conds}");
        }
    }

    #[test]
    fn internal_ip_cordon_and_taints() {
        let n = parse_one::<Node>(
            node_json(
                r#"{"unschedulable":true,"taints":[{"key":"node.kubernetes.io/unschedulable","effect":"NoSchedule","timeAdded":"2024-01-01T00:00:00Z"},{"key":"k","value":"v","effect":"NoExecute"}]}"#,
                "[]",
                r#"[{"type":"Hostname","address":"h"},{"type":"ExternalIP","address":"1.2.3.4"},{"type":"InternalIP","address":"10.0.0.7"},{"type":"InternalIP","address":"fd00::7"}]"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(n.unschedulable);
        assert_eq!(n.internal_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(n.taints.len(), 2);
        assert_eq!(n.taints[0].effect, "NoSchedule");
        assert_eq!(n.taints[0].value, None);
        assert_eq!(n.taints[1].value.as_deref(), Some("v"));
        let n = parse_one::<Node>(
            node_json("{}", "[]", r#"[{"type":"Hostname","address":"h"}]"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(n.internal_ip, None);
    }

    #[test]
    fn node_without_name_is_a_protocol_error() {
        assert!(matches!(
            parse_one::<Node>(br#"{"metadata":{}}"#),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            parse_one::<Node>(b"[1,2]"),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn secret_round_trip_and_base64() {
        let mut new = NewSecret {
            name: "bootstrap-token-abcdef".into(),
            type_: Some("bootstrap.kubernetes.io/token".into()),
            ..Default::default()
        };
        new.data
            .insert("token-secret".into(), b"0123456789abcdef".to_vec());
        new.labels.insert("app".into(), "joinery".into());
        let body: serde_json::Value = serde_json::from_slice(&new_secret_body(&new)).unwrap();
        assert_eq!(body["kind"], "Secret");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(body["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(body["metadata"]["labels"]["app"], "joinery");
        assert_eq!(body["data"]["token-secret"], "MDEyMzQ1Njc4OWFiY2RlZg==");
        assert!(body["metadata"].get("annotations").is_none());

        let read = format!(
            r#"{{"kind":"Secret","metadata":{{"name":"s","namespace":"kube-system","uid":"u1","resourceVersion":"9"}},"type":"Opaque","data":{}}}"#,
            body["data"]
        );
        let s = parse_one::<Secret>(read.as_bytes()).unwrap();
        assert_eq!(s.data["token-secret"], b"0123456789abcdef");
        assert_eq!((s.uid.as_str(), s.resource_version.as_str()), ("u1", "9"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
    }

    #[test]
    fn secret_bad_base64_names_key_not_value() {
        let e =
            parse_one::<Secret>(br#"{"metadata":{"name":"s"},"data":{"k":"not base64 SEKRIT!"}}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("\"k\"") && !e.contains("SEKRIT"), "{e}");
        // A shape error must not quote the value either.
        let e = parse_one::<Secret>(br#"{"metadata":{"name":"s"},"data":{"k":["SEKRIT"]}}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SEKRIT"), "{e}");
    }

    #[test]
    fn list_pages_carry_continue() {
        let p = parse_page::<Secret>(
            br#"{"kind":"SecretList","metadata":{"continue":"abc"},"items":[{"metadata":{"name":"a"}}]}"#,
        )
        .unwrap();
        assert_eq!(p.continue_token.as_deref(), Some("abc"));
        assert_eq!(p.items.len(), 1);
        let p = parse_page::<Secret>(br#"{"metadata":{"continue":""},"items":null}"#).unwrap();
        assert_eq!(p.continue_token, None);
        assert!(p.items.is_empty());
    }

    #[test]
    fn configmap_data() {
        let d = parse_configmap_data(
            br#"{"kind":"ConfigMap","metadata":{"name":"kube-root-ca.crt"},"data":{"ca.crt":"PEM"}}"#,
        )
        .unwrap();
        assert_eq!(d["ca.crt"], "PEM");
        assert!(parse_configmap_data(br#"{"metadata":{"name":"x"}}"#)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn delete_options_carry_uid() {
        let v: serde_json::Value = serde_json::from_slice(&delete_options_body("u-1")).unwrap();
        assert_eq!(v["preconditions"]["uid"], "u-1");
        assert_eq!(v["kind"], "DeleteOptions");
    }

    #[test]
    fn pods_from_the_wire() {
        let list: Page<Pod> = parse_page::<Pod>(
            br#"{"metadata":{},"items":[
              {"metadata":{"name":"kp","namespace":"kube-system","uid":"u1",
                "ownerReferences":[{"kind":"ReplicaSet"},{"kind":"DaemonSet","controller":true}]},
               "status":{"phase":"Running"}},
              {"metadata":{"name":"etcd","namespace":"kube-system","uid":"u2",
                "annotations":{"kubernetes.io/config.mirror":"abc"},"deletionTimestamp":"2026-01-01T00:00:00Z"}}
            ]}"#,
        )
        .unwrap();
        let pods = list.items;
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
        let back = parse_one::<Lease>(&lease_body(&l)).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn etcd_members() {
        let m = parse_one::<EtcdMember>(
            br#"{"metadata":{"name":"node-2"},"spec":{"leave":true},"status":{"peerAddress":"10.0.0.12",
              "memberID":"ab12","conditions":[{"type":"Joined","status":"False"}]}}"#,
        )
        .unwrap();
        assert!(m.leave);
        assert_eq!(m.joined.as_deref(), Some("False"));
        assert_eq!(m.member_id.as_deref(), Some("ab12"));
    }

    #[test]
    fn watch_events() {
        let (e, v) = parse_event::<Node>(
            br#"{"type":"ADDED","object":{"kind":"Node","metadata":{"name":"n1","resourceVersion":"7"}}}"#,
        )
        .unwrap();
        assert!(matches!(e, WireEvent::Added(n) if n.name == "n1"));
        assert_eq!(v.as_deref(), Some("7"));
        let (e, v) = parse_event::<Node>(
            br#"{"type":"BOOKMARK","object":{"kind":"Node","metadata":{"resourceVersion":"9"}}}"#,
        )
        .unwrap();
        assert_eq!((e, v.as_deref()), (WireEvent::Bookmark, Some("9")));
        let gone = parse_event::<Node>(
            br#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (5)","reason":"Expired","code":410}}"#,
        );
        assert_eq!(gone.unwrap_err(), Error::Gone);
        assert!(matches!(
            parse_event::<Node>(br#"{"type":"DELETED","object":{"metadata":{}}}"#),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            parse_event::<Node>(br#"{"type":"WHAT","object":{}}"#),
            Err(Error::Protocol(_))
        ));
    }
}
