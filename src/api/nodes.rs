//! `GET /v1/nodes`: every node with its labels, annotations, roles, InternalIP and
//! readiness, in the seed document's field names.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{json_response, Access, ApiError, Context, Identity, Route};
use crate::auth::Scope;
use crate::http::{Request, Response};
use crate::kube;
use crate::roles::roles_from_labels;

/// One node as `GET /v1/nodes` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub roles: Vec<String>,
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
    pub ready: bool,
}

/// The body of `GET /v1/nodes` (a struct, so fields keep the seed's order).
#[derive(Serialize)]
struct NodeList {
    nodes: Vec<NodeSummary>,
}

impl NodeSummary {
    pub fn from_node(node: kube::Node) -> NodeSummary {
        NodeSummary {
            roles: roles_from_labels(&node.labels),
            name: node.name,
            labels: node.labels,
            annotations: node.annotations,
            internal_ip: node.internal_ip.unwrap_or_default(),
            ready: node.ready,
        }
    }
}

pub fn list(ctx: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
    let nodes: Vec<NodeSummary> = nodes.into_iter().map(NodeSummary::from_node).collect();
    Ok(json_response(200, &NodeList { nodes }))
}

pub(super) const ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/v1/nodes",
    access: Access::Needs(Scope::Read),
    handler: list,
}];
