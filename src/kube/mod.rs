//! The Kubernetes client: the only code in joinery that speaks to the API server.
//!
//! Synchronous HTTPS through ureq 3 and rustls (ring), always verifying the server against
//! the cluster CA. The rest of the crate sees [`Client`], the plain domain structs
//! ([`Node`], [`Secret`], ...) and one [`Error`]; the JSON wire types stay private here.
//!
//! Map:
//! - `target.rs`: where the server is and which credentials to use (in-cluster env; pure).
//! - `kubeconfig.rs`: kubeconfig YAML → target (pure).
//! - `wire.rs`: JSON wire types ↔ domain structs (pure).
//! - `status.rs`: non-2xx `Status` → [`Error`], `Retry-After` (pure).
//! - `paging.rs`: list paging decisions, path and query encoding (pure).
//! - `client.rs`: all I/O: files, TLS, the request loop, the typed calls.
//! - `secret_writes.rs`: resourceVersion-checked Secret replace, annotation patch.
//! - `lifecycle.rs`: node patch/delete, pods and eviction, Leases, EtcdMembers.

mod client;
mod error;
mod kubeconfig;
mod lifecycle;
mod paging;
mod secret_writes;
mod status;
mod target;
mod types;
mod wire;

pub use client::Client;
pub use error::Error;
pub use lifecycle::{EtcdMember, Eviction, Lease, NodePatch, Pod};
/// Parses kubeconfig text as `joinery serve --kubeconfig` would, reading no file (paths
/// it names resolve against `/nonexistent`). For the fuzz target in `fuzz/`.
#[doc(hidden)]
pub fn parse_kubeconfig(text: &str) -> Result<(), Error> {
    kubeconfig::parse(text, std::path::Path::new("/nonexistent/kubeconfig")).map(|_| ())
}

pub use types::{Address, Condition, NewSecret, Node, NodeInfo, Secret, Source, Taint, Timeouts};
