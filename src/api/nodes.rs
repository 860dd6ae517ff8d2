//! `GET /v1/nodes`: every node with its labels, annotations, roles, InternalIP and
//! readiness, in the seed document's field names.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use serde::Serialize;

use super::{json_bytes_response, Access, ApiError, Context, Identity, Route};
use crate::auth::Scope;
use crate::cache::CachedNode;
use crate::http::{Body, Flush, Request, Response};
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
    // From the watch-fed view when it is in sync, at no cost to the API server: each
    // node is kept as the bytes this answer sends for it, and the body is streamed from
    // them (never a second copy of every node, per call or kept).
    if let Some(nodes) = ctx.cache.nodes() {
        let body = NodesBody::new(nodes);
        let mut resp = json_bytes_response(200, Vec::new());
        resp.body = Body::Stream {
            len: Some(body.len()),
            reader: Box::new(body),
            flush: Flush::AtEnd,
        };
        return Ok(resp);
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

/// `{"nodes":[...]}\n` read from the view's nodes: the bytes [`join_parts`] and
/// `json_bytes_response` would make of them, without making them.
struct NodesBody {
    nodes: Vec<Arc<CachedNode>>,
    /// The piece being sent (see [`NodesBody::piece`]) and how much of it is sent.
    piece: usize,
    pos: usize,
}

impl NodesBody {
    fn new(nodes: Vec<Arc<CachedNode>>) -> NodesBody {
        NodesBody {
            nodes,
            piece: 0,
            pos: 0,
        }
    }

    fn len(&self) -> u64 {
        (0..)
            .map_while(|k| self.piece(k))
            .map(|p| p.len() as u64)
            .sum()
    }

    /// Piece `k`: the opening, then each node's JSON followed by a comma or, after the
    /// last, the closing.
    fn piece(&self, k: usize) -> Option<&[u8]> {
        const CLOSE: &[u8] = b"]}\n";
        let n = self.nodes.len();
        match k {
            0 => Some(b"{\"nodes\":["),
            _ if n == 0 => (k == 1).then_some(CLOSE),
            _ if k % 2 == 1 => self.nodes.get(k / 2).map(|c| c.json()),
            _ if k / 2 < n => Some(b","),
            _ if k / 2 == n => Some(CLOSE),
            _ => None,
        }
    }
}

impl Read for NodesBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let Some(piece) = self.piece(self.piece) else {
                break;
            };
            let n = (piece.len() - self.pos).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&piece[self.pos..self.pos + n]);
            let done = self.pos + n == piece.len();
            filled += n;
            if done {
                self.piece += 1;
                self.pos = 0;
            } else {
                self.pos += n;
            }
        }
        Ok(filled)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamed_body_is_the_joined_one() {
        for count in [0, 1, 2, 5] {
            let nodes: Vec<kube::Node> = (0..count)
                .map(|i| kube::Node {
                    name: format!("node-{i}"),
                    ready: i % 2 == 0,
                    ..Default::default()
                })
                .collect();
            let mut want = join_parts(nodes.iter().cloned().map(summary_json).collect());
            want.push(b'\n');
            let cached = nodes.into_iter().map(|n| Arc::new(CachedNode::new(n)));
            let mut body = NodesBody::new(cached.collect());
            assert_eq!(body.len(), want.len() as u64);
            // Small reads cross every piece boundary.
            let mut got = Vec::new();
            let mut buf = [0u8; 7];
            loop {
                let n = body.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, want, "{count} nodes");
        }
    }
}
