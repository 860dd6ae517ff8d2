//! `GET /v1/flux/nodes`: the nodes as inputs for Flux Operator's
//! `ResourceSetInputProvider` of type `ExternalService`.
//!
//! The operator's contract: a 2xx JSON body with a top-level `inputs` array whose items
//! each carry a unique string `id`, at most 900 KiB (it refuses anything larger, to stay
//! under the etcd object size). Node names are unique, so the id is the node name. The
//! body is built whole and measured before it is sent: past the limit the answer is 422
//! `inputs_too_large`, naming the filters (`role`, `ready`) that would narrow it, rather
//! than a body the operator would refuse with a vaguer error.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Access, ApiError, Code, Context, Identity, Route};
use crate::auth::Scope;
use crate::http::query::Params;
use crate::http::{Body, Request, Response};
use crate::roles::roles_from_labels;
use crate::{kube, labels};

/// The largest body Flux Operator accepts from an ExternalService (900 KiB).
pub const MAX_INPUTS_BYTES: usize = 900 * 1024;

/// One node as a Flux input. The fields are in name order because the body was once
/// built through `json!` (a sorted map): clients digest it, so its bytes stay the same.
#[derive(Serialize)]
struct Input<'a> {
    id: &'a str,
    #[serde(rename = "internalIP")]
    internal_ip: &'a str,
    labels: &'a BTreeMap<String, String>,
    name: &'a str,
    ready: bool,
    roles: Vec<String>,
}

/// The query's filters; absent ones keep every node.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filters {
    role: Option<String>,
    ready: Option<bool>,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(Code::InvalidFilter, message)
}

/// Reads `role=<role>` and `ready=true|false` through the shared query parser, which
/// refuses anything else by name, so a typo (`roles=`, `Ready=`) never silently returns
/// every node.
fn parse_filters(query: &str) -> Result<Filters, ApiError> {
    let q = Params::parse(query, &["role", "ready"])?;
    let role = match q.get("role") {
        None => None,
        Some(value) => {
            labels::check_name(value).map_err(|p| {
                invalid(format!(
                    "role {:?} is not a role name ({p}); e.g. role=controller",
                    clip(value)
                ))
            })?;
            Some(value.to_string())
        }
    };
    // A JSON-style boolean, as the OpenAPI document says (not the 1/0 `force` takes).
    let ready = match q.get("ready") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(invalid("ready must be true or false".into())),
    };
    Ok(Filters { role, ready })
}

/// At most 64 characters of client input, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The body for these nodes (given in name order: the operator digests the inputs, and
/// a reshuffle would look like a change) and filters, or 422 when it would exceed
/// `limit` bytes. Built one node at a time and never past the limit, so a large cluster
/// costs one node's maps and at most `limit` bytes, however many nodes there are.
fn render(
    nodes: impl Iterator<Item = kube::Node>,
    f: &Filters,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    const CLOSE: &[u8] = b"]}\n";
    let mut body = b"{\"inputs\":[".to_vec();
    let (mut size, mut count) = (body.len() + CLOSE.len(), 0);
    let mut one = Vec::new();
    for n in nodes {
        let roles = roles_from_labels(&n.labels);
        if !(f.role.as_ref().is_none_or(|r| roles.contains(r))
            && f.ready.is_none_or(|r| n.ready == r))
        {
            continue;
        }
        one.clear();
        let input = Input {
            id: &n.name,
            internal_ip: n.internal_ip.as_deref().unwrap_or(""),
            labels: &n.labels,
            name: &n.name,
            ready: n.ready,
            roles,
        };
        serde_json::to_writer(&mut one, &input).map_err(|_| ApiError::internal())?;
        let comma = usize::from(count > 0);
        size += comma + one.len();
        count += 1;
        if size <= limit {
            body.extend_from_slice(&b","[..comma]);
            body.extend_from_slice(&one);
        }
    }
    body.extend_from_slice(CLOSE);
    if size <= limit {
        return Ok(body);
    }
    let mut narrower = Vec::new();
    if f.role.is_none() {
        narrower.push("role=<role>");
    }
    if f.ready.is_none() {
        narrower.push("ready=true");
    }
    let advice = if narrower.is_empty() {
        "even with both filters; point several ResourceSetInputProviders at narrower roles, \
         or keep fewer and shorter labels on the nodes"
            .to_string()
    } else {
        format!(
            "narrow them with {} (one ResourceSetInputProvider per role, say)",
            narrower.join(" and ")
        )
    };
    Err(ApiError::new(
        Code::InputsTooLarge,
        format!(
            "the inputs for {} nodes take {} bytes, over the {} bytes (900 KiB) Flux \
             Operator accepts from an ExternalService; {advice}",
            count, size, limit
        ),
    ))
}

pub fn nodes(ctx: &Context, req: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let filters = parse_filters(&req.query)?;
    let body = match ctx.cache.nodes() {
        // One node's maps at a time, read back from the view's compact form.
        Some(nodes) => render(nodes.iter().map(|n| n.node()), &filters, MAX_INPUTS_BYTES)?,
        None => {
            let mut nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            render(nodes.into_iter(), &filters, MAX_INPUTS_BYTES)?
        }
    };
    Ok(Response {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: Body::Bytes(body),
        subject: None,
    })
}

pub(super) const ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/v1/flux/nodes",
    access: Access::Needs(Scope::Read),
    handler: nodes,
}];

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Option<&str>, ready: bool) -> kube::Node {
        let mut n = kube::Node {
            name: name.into(),
            ready,
            internal_ip: Some("10.0.0.1".into()),
            ..Default::default()
        };
        if let Some(r) = role {
            n.labels
                .insert("kots.io/embedded-cluster-role-0".into(), r.into());
            n.labels
                .insert("kots.io/embedded-cluster-role".into(), "total-1".into());
        }
        n
    }

    fn ids(body: &[u8]) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn filters_parse_or_say_what_is_wrong() {
        let ok = |q: &str| parse_filters(q).unwrap();
        assert_eq!(ok(""), Filters::default());
        assert_eq!(
            ok("role=controller&ready=false"),
            Filters {
                role: Some("controller".into()),
                ready: Some(false)
            }
        );
        assert_eq!(ok("ready=true&").ready, Some(true));
        assert!(
            parse_filters("ready=0").is_err(),
            "the schema says true or false"
        );
        assert_eq!(ok("role=gpu%2Dnode").role.as_deref(), Some("gpu-node"));
        for (q, code, needle) in [
            ("ready=yes", "invalid_filter", "true or false"),
            ("ready=", "invalid_filter", "true or false"),
            ("ready=true&ready=false", "invalid_query", "once"),
            ("role=", "invalid_filter", "not a role name"),
            ("role=a%20b", "invalid_filter", "not a role name"),
            ("role=a&role=b", "invalid_query", "once"),
            ("role=%zz", "invalid_query", "%-escape"),
            (
                "roles=a&limit=3",
                "unknown_parameter",
                r#""roles", "limit""#,
            ),
        ] {
            let e = parse_filters(q).unwrap_err();
            assert_eq!((e.status(), e.code.code()), (400, code), "{q}");
            assert!(e.message.contains(needle), "{q}: {}", e.message);
        }
    }

    #[test]
    fn inputs_are_filtered_and_sorted() {
        let nodes = [
            node("node-3", None, true),
            node("node-1", Some("controller"), true),
            node("node-2", Some("worker"), false),
        ];
        let sorted = || {
            let mut n = nodes.to_vec();
            n.sort_by(|a, b| a.name.cmp(&b.name));
            n.into_iter()
        };
        let all = render(sorted(), &Filters::default(), MAX_INPUTS_BYTES).unwrap();
        assert_eq!(ids(&all), ["node-1", "node-2", "node-3"]);
        let v: serde_json::Value = serde_json::from_slice(&all).unwrap();
        assert_eq!(
            v["inputs"][0],
            serde_json::json!({
                "id": "node-1", "name": "node-1", "roles": ["controller"],
                "labels": nodes[1].labels, "internalIP": "10.0.0.1", "ready": true
            })
        );
        let f = |role: Option<&str>, ready: Option<bool>| Filters {
            role: role.map(String::from),
            ready,
        };
        let got = |f: Filters| ids(&render(sorted(), &f, MAX_INPUTS_BYTES).unwrap());
        assert_eq!(got(f(Some("worker"), None)), ["node-2"]);
        assert_eq!(got(f(None, Some(true))), ["node-1", "node-3"]);
        assert_eq!(got(f(Some("worker"), Some(true))), Vec::<String>::new());
    }

    #[test]
    fn the_body_is_byte_for_byte_what_json_made() {
        let mut odd = node("node-\"2\"", Some("controller"), true);
        odd.labels
            .insert("z\u{e9}".into(), "tab\t, nul \u{0}".into());
        let nodes = vec![odd, node("node-1", None, false)];
        let inputs: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.name, "name": n.name, "roles": roles_from_labels(&n.labels),
                    "labels": n.labels, "internalIP": n.internal_ip.as_deref().unwrap_or(""),
                    "ready": n.ready
                })
            })
            .collect();
        let mut before = serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap();
        before.push(b'\n');
        let now = render(nodes.into_iter(), &Filters::default(), MAX_INPUTS_BYTES).unwrap();
        assert_eq!(
            String::from_utf8(now).unwrap(),
            String::from_utf8(before).unwrap()
        );
    }

    #[test]
    fn the_size_limit_is_exact_and_names_unused_filters() {
        let nodes = [node("node-1", Some("controller"), true)];
        let body = render(nodes.iter().cloned(), &Filters::default(), MAX_INPUTS_BYTES).unwrap();
        // Exactly at the limit is accepted (the operator refuses only more).
        assert!(render(nodes.iter().cloned(), &Filters::default(), body.len()).is_ok());
        let e = render(nodes.iter().cloned(), &Filters::default(), body.len() - 1).unwrap_err();
        assert_eq!(e.code, Code::InputsTooLarge);
        assert!(
            e.message.contains("role=<role> and ready=true"),
            "{}",
            e.message
        );
        let f = Filters {
            role: Some("controller".into()),
            ready: None,
        };
        let e = render(nodes.iter().cloned(), &f, 10).unwrap_err();
        assert!(e.message.contains("with ready=true"), "{}", e.message);
        assert!(!e.message.contains("role=<role>"), "{}", e.message);
    }
}
