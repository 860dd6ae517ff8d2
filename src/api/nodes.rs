//! `GET /v1/nodes`: every node with its labels, annotations, roles, InternalIP and
//! readiness, in the seed document's field names.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{json_bytes_response, Access, ApiError, Context, Identity, Route};
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

pub fn list(ctx: &Context, req: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    if super::wait::watch_param(&req.query)? {
        return super::wait::node_stream(ctx);
    }
    // From the watch-fed view when it is in sync: the body is kept serialised and only
    // rebuilt after a change, so a call costs the API server nothing.
    if let Some(body) = ctx
        .cache
        .nodes_body(|nodes| join_parts(nodes.map(|n| summary_json(n.clone())).collect()))
    {
        return Ok(json_bytes_response(200, body.as_ref().clone()));
    }
    // Out of sync: list live. Each node is serialised as soon as its page is read, so
    // the request holds one page of full nodes plus the answer's bytes, never every
    // node's parsed form at once (which took 25 MiB for 5,000 nodes).
    let parts = ctx
        .kube
        .list_nodes_map(summary_json)
        .map_err(|e| ApiError::from_kube(&e))?;
    Ok(json_bytes_response(200, join_parts(parts)))
}

/// One node as `/v1/nodes` shows it. Serialising our own plain struct cannot fail.
pub(super) fn summary_json(n: kube::Node) -> Vec<u8> {
    serde_json::to_vec(&NodeSummary::from_node(n)).unwrap_or_default()
}

/// `{"nodes":[...]}` around serialised nodes.
fn join_parts(parts: Vec<Vec<u8>>) -> Vec<u8> {
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 16);
    body.extend_from_slice(b"{\"nodes\":[");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(part);
    }
    body.extend_from_slice(b"]}");
    body
}

pub(super) const ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/v1/nodes",
    access: Access::Needs(Scope::Read),
    handler: list,
}];
