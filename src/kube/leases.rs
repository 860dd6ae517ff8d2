//! `coordination.k8s.io/v1` Leases: read, list, and writes preconditioned on
//! resourceVersion (the drain worker's one-driver-per-node locks).

use serde_json::json;
use ureq::http::Method;

use super::client::Listed;
use super::paging::{segment, VIEW_PAGE_LIMIT};
use super::types::Lease;
use super::wire::{self, lease_body};
use super::{Client, Error};

/// Cap on one Lease body.
const OBJECT_LIMIT: u64 = 1 << 20;

pub(crate) fn lease_path(ns: &str, name: Option<&str>) -> Result<String, Error> {
    let base = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
        segment(ns, "namespace")?
    );
    Ok(match name {
        Some(n) => format!("{base}/{}", segment(n, "lease")?),
        None => base,
    })
}

impl Client {
    /// A Lease, or `None` if there is none of that name.
    pub fn get_lease(&self, ns: &str, name: &str) -> Result<Option<Lease>, Error> {
        let path = lease_path(ns, Some(name))?;
        self.get_if_exists(&path)
    }

    /// Every Lease in a namespace (`kube-node-lease` holds one per node and k0s's own).
    pub fn list_leases(&self, ns: &str) -> Result<Vec<Lease>, Error> {
        self.list(&lease_path(ns, None)?, "")
    }

    /// Every Lease in a namespace passed through `keep` page by page, and the list's
    /// resourceVersion, where a watch starts.
    pub fn list_leases_versioned<U>(
        &self,
        ns: &str,
        keep: impl FnMut(Lease) -> U,
    ) -> Result<Listed<U>, Error> {
        self.list_map_by(&lease_path(ns, None)?, "", VIEW_PAGE_LIMIT, keep)
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
        wire::parse_one(&b)
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
        wire::parse_one(&b)
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
}
