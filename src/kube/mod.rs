//! The Kubernetes client: the only code in joinery that speaks to the API server.
//!
//! Synchronous HTTPS through ureq 3 and rustls (ring), always verifying the server against
//! the cluster CA. The rest of the crate sees [`Client`], the plain domain structs
//! ([`Node`], [`Secret`], ...) and one [`Error`]; the JSON wire types stay private here.
//! What joinery reads is decoded in `wire.rs` (objects, lists, watch events) and
//! `status.rs` (a `Status` error body); what it writes (merge patches, an Eviction, a
//! Secret) is built beside the call that sends it, in the resource's own file.
//!
//! Map:
//! - `target.rs`: where the server is and which credentials to use (in-cluster env; pure).
//! - `kubeconfig.rs`: kubeconfig YAML → target (pure).
//! - `wire.rs`: JSON wire types ↔ domain structs (pure).
//! - `status.rs`: non-2xx `Status` → [`Error`], `Retry-After` (pure).
//! - `paging.rs`: list paging decisions, path and query encoding (pure).
//! - `client.rs`: the request loop and the one generic resource path (get,
//!   get-if-exists, paged list restarted on 410), Secrets and ConfigMaps.
//! - `watch.rs`: a watch stream (from a list's resourceVersion, with bookmarks) on its
//!   own connection that another thread can cut.
//! - `nodes.rs`, `pods.rs`, `leases.rs`, `etcd.rs`, `secret_writes.rs`: each resource's
//!   calls, written on the generic path.

mod client;
mod error;
mod etcd;
mod kubeconfig;
mod leases;
mod nodes;
mod paging;
mod pods;
mod secret_writes;
mod status;
mod target;
mod types;
mod watch;
mod wire;

pub use client::{Client, Listed};
pub use error::Error;
pub use nodes::NodePatch;
pub use watch::{Event, Watcher};
/// Parses kubeconfig text as `joinery serve --kubeconfig` would, reading no file (paths
/// it names resolve against `/nonexistent`). For the fuzz target in `fuzz/`.
#[doc(hidden)]
pub fn parse_kubeconfig(text: &str) -> Result<(), Error> {
    kubeconfig::parse(text, std::path::Path::new("/nonexistent/kubeconfig")).map(|_| ())
}

pub use types::{
    Condition, EtcdMember, Eviction, Lease, NewSecret, Node, Pod, Secret, Source, Timeouts,
};
