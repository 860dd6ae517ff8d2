//! Nodes: read, list (whole or reduced page by page), merge-patch and delete.
//!
//! Patches are JSON merge patches (`application/merge-patch+json`); `null` removes a key.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use ureq::http::Method;

use super::client::Listed;
use super::paging::{segment, VIEW_PAGE_LIMIT};
use super::types::Node;
use super::{wire, Client, Error};

const MERGE_PATCH: &str = "application/merge-patch+json";
/// Cap on one node body (a node with many images is large).
const OBJECT_LIMIT: u64 = 16 << 20;
pub(crate) const NODES: &str = "/api/v1/nodes";

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

impl Client {
    /// All nodes, fetched 500 per page.
    pub fn list_nodes(&self) -> Result<Vec<Node>, Error> {
        self.list(NODES, "")
    }

    /// Every node, each passed through `keep` as soon as its page is read, so only what
    /// `keep` returns outlives the page: memory stays at one page of full [`Node`]s plus
    /// the kept parts, however many nodes there are. If the list has to restart (an
    /// expired continue token), what was kept so far is dropped and `keep` sees those
    /// nodes again.
    pub fn list_nodes_map<U>(&self, keep: impl FnMut(Node) -> U) -> Result<Vec<U>, Error> {
        Ok(self.list_map(NODES, "", keep)?.items)
    }

    /// Every node passed through `keep` page by page (as [`list_nodes_map`]), and the
    /// list's resourceVersion, where a watch starts.
    ///
    /// [`list_nodes_map`]: Client::list_nodes_map
    pub fn list_nodes_versioned<U>(&self, keep: impl FnMut(Node) -> U) -> Result<Listed<U>, Error> {
        self.list_map_by(NODES, "", VIEW_PAGE_LIMIT, keep)
    }

    /// One node; [`Error::NotFound`] if there is none of that name.
    pub fn get_node(&self, name: &str) -> Result<Node, Error> {
        self.get(&format!("{NODES}/{}", segment(name, "node")?))
    }

    /// Merge-patch a node; answers the node as written.
    pub fn patch_node(&self, name: &str, patch: &NodePatch) -> Result<Node, Error> {
        let path = format!("{NODES}/{}", segment(name, "node")?);
        let body = patch.body().to_string();
        wire::parse_one(&self.fetch(
            Method::PATCH,
            &path,
            Some((MERGE_PATCH, body.as_bytes())),
            OBJECT_LIMIT,
        )?)
    }

    /// Delete a node object; [`Error::NotFound`] if it is already gone.
    pub fn delete_node(&self, name: &str) -> Result<(), Error> {
        let path = format!("{NODES}/{}", segment(name, "node")?);
        self.fetch(Method::DELETE, &path, None, OBJECT_LIMIT)
            .map(drop)
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
}
