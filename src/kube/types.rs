//! The plain domain structs the rest of joinery sees; nothing here knows the wire format.
//!
//! `Secret` and `NewSecret` print only their data keys in `Debug`, so a stray `{:?}` in a
//! log line cannot leak a secret value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Bounds on every call to the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// One whole request, retries included: send, wait, read the body.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(10),
        }
    }
}

/// Where the client finds the API server and its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A kubeconfig file; its `current-context` is used. On a k0s controller:
    /// `/var/lib/k0s/pki/admin.conf`.
    Kubeconfig(PathBuf),
    /// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT` and the files in
    /// `/var/run/secrets/kubernetes.io/serviceaccount` (or `$JOINERY_SA_DIR` if set).
    InCluster,
}

/// A cluster node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub name: String,
    pub uid: String,
    /// `metadata.resourceVersion`, for preconditioned patches.
    pub resource_version: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The first `status.addresses` entry of type `InternalIP`.
    pub internal_ip: Option<String>,
    /// True only when the `Ready` condition has status `"True"`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned); false when absent.
    pub unschedulable: bool,
    pub taints: Vec<Taint>,
    pub conditions: Vec<Condition>,
    pub addresses: Vec<Address>,
    pub node_info: NodeInfo,
    /// `status.capacity.cpu`, a Kubernetes quantity such as `"4"`.
    pub capacity_cpu: Option<String>,
    /// `status.capacity.memory`, a quantity such as `"8165556Ki"`.
    pub capacity_memory: Option<String>,
    /// `metadata.creationTimestamp` (RFC 3339).
    pub created: Option<String>,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    pub time_added: Option<String>,
}

/// A node condition (`Ready`, `MemoryPressure`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Condition {
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_heartbeat_time: Option<String>,
    pub last_transition_time: Option<String>,
}

/// A node address (`InternalIP`, `ExternalIP`, `Hostname`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    pub type_: String,
    pub address: String,
}

/// `status.nodeInfo`; fields the API server omits are empty strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
    pub container_runtime_version: String,
    /// On k0s: `v1.x.y+k0s`.
    pub kubelet_version: String,
    pub kube_proxy_version: String,
    pub operating_system: String,
    pub architecture: String,
}

/// A Secret as read back; `data` values are decoded bytes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub resource_version: String,
    /// `type`, e.g. `Opaque` or `bootstrap.kubernetes.io/token`.
    pub type_: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, Vec<u8>>,
    /// `metadata.creationTimestamp` (RFC 3339).
    pub created: Option<String>,
}

/// A Secret to create; `data` values are raw bytes (encoded on the wire by the client).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NewSecret {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, Vec<u8>>,
    /// `type`; `None` lets the API server default it to `Opaque`.
    pub type_: Option<String>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("uid", &self.uid)
            .field("resource_version", &self.resource_version)
            .field("type_", &self.type_)
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("created", &self.created)
            .finish()
    }
}

impl fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSecret")
            .field("name", &self.name)
            .field("type_", &self.type_)
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_hides_values() {
        let mut s = Secret::default();
        s.data
            .insert("token-secret".into(), b"hunter2hunter2xx".to_vec());
        let mut n = NewSecret::default();
        n.data
            .insert("passwordBcrypt".into(), b"$2b$10$abc".to_vec());
        let d = format!("{s:?} {n:?}");
        assert!(
            d.contains("token-secret") && d.contains("passwordBcrypt"),
            "{d}"
        );
        assert!(!d.contains("hunter2") && !d.contains("$2b$"), "{d}");
    }

    #[test]
    fn default_timeouts() {
        let t = Timeouts::default();
        assert_eq!((t.connect.as_secs(), t.request.as_secs()), (3, 10));
    }
}
