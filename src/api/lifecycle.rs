//! Node lifecycle endpoints: inspect, relabel, drain, resume and remove a node, and the
//! cluster's health. All admin scope; every change writes an audit line (who, what,
//! which node, result). The work itself is in `crate::lifecycle`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::nodes::NodeSummary;
use super::{json_body, json_response, Access, ApiError, Code, Context, Identity, Route};
use crate::auth::Scope;
use crate::http::query::Params;
use crate::http::{Request, Response};
use crate::kube::{self, NodePatch};
use crate::labels;
use crate::lifecycle::{
    drain, drain_info, health, is_controller, removal, DrainState, MAX_DEADLINE_SECONDS,
    SYNC_DRAIN_LIMIT,
};
use crate::log;

/// How long a controller removal waits for k0s to report the etcd member gone.
const ETCD_LEAVE_WAIT: Duration = Duration::from_secs(60);
/// How often a synchronous drain looks at the node's state.
const SYNC_POLL: Duration = Duration::from_millis(250);

/// Label keys only a join may set (403 `protected_label`): Kubernetes' own prefixes
/// (and their subdomains, as Kubernetes treats them), k0s's and Embedded Cluster's roles.
fn protected(key: &str) -> bool {
    let Some((prefix, name)) = key.split_once('/') else {
        return false;
    };
    let under = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    under("kubernetes.io")
        || under("k8s.io")
        || under("node.k0sproject.io")
        || (prefix == "kots.io" && name.starts_with("embedded-cluster-role"))
        // joinery's own bookkeeping is not for callers either.
        || under("joinery.replicated.com")
}

/// The `{name}` segment of `/v1/nodes/{name}[/...]`, checked as a DNS subdomain.
fn node_name(req: &Request) -> Result<&str, ApiError> {
    let name = req.path.split('/').nth(3).unwrap_or("");
    labels::check_dns_subdomain(name).map_err(|problem| {
        ApiError::new(
            Code::InvalidNodeName,
            format!(
                "the node name in the path is not a valid Kubernetes node name: {problem}; \
                 see GET /v1/nodes for the names"
            ),
        )
    })?;
    Ok(name)
}

fn node_not_found(name: &str) -> ApiError {
    ApiError::new(
        Code::NodeNotFound,
        format!("there is no node named {name:?}; see GET /v1/nodes for the names"),
    )
}

fn get_node(ctx: &Context, name: &str) -> Result<kube::Node, ApiError> {
    match ctx.kube.get_node(name) {
        Ok(n) => Ok(n),
        Err(kube::Error::NotFound) => Err(node_not_found(name)),
        Err(e) => Err(ApiError::from_kube(&e)),
    }
}

// ---- GET /v1/nodes/{name} ----------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    #[serde(flatten)]
    summary: NodeSummary,
    unschedulable: bool,
    taints: Vec<Value>,
    conditions: Vec<Value>,
    addresses: Vec<Value>,
    node_info: Value,
    capacity: Value,
    drain_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_deadline: Option<String>,
    drain_remaining: Vec<String>,
    /// Controllers only: their etcd membership (`null` when k0s has no EtcdMember).
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd: Option<Value>,
}

fn detail(ctx: &Context, node: kube::Node) -> Result<Value, ApiError> {
    let etcd = if is_controller(&node.labels) {
        // The rest of the detail stands without it; the log says why it is missing.
        let cached = ctx.cache.etcd_member(&node.name);
        let m = cached
            .map(Ok)
            .unwrap_or_else(|| ctx.kube.get_etcd_member(&node.name));
        let m = m.unwrap_or_else(|e| {
            log::warn(
                "cannot read the node's EtcdMember",
                &[
                    ("node", node.name.clone().into()),
                    ("error", e.to_string().into()),
                ],
            );
            None
        });
        Some(match m {
            Some(m) => json!({
                "memberId": m.member_id,
                "peerAddress": m.peer_address,
                "joined": m.joined.as_deref() == Some("True"),
                "leaveRequested": m.leave,
            }),
            None => Value::Null,
        })
    } else {
        None
    };
    let info = drain_info(&node.annotations);
    let d = Detail {
        unschedulable: node.unschedulable,
        taints: node
            .taints
            .iter()
            .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect, "timeAdded": t.time_added}))
            .collect(),
        conditions: node
            .conditions
            .iter()
            .map(|c| {
                json!({"type": c.type_, "status": c.status, "reason": c.reason,
                       "lastTransitionTime": c.last_transition_time})
            })
            .collect(),
        addresses: node
            .addresses
            .iter()
            .map(|a| json!({"type": a.type_, "address": a.address}))
            .collect(),
        node_info: json!({
            "osImage": node.node_info.os_image,
            "kernelVersion": node.node_info.kernel_version,
            "kubeletVersion": node.node_info.kubelet_version,
            "containerRuntimeVersion": node.node_info.container_runtime_version,
            "architecture": node.node_info.architecture,
            "operatingSystem": node.node_info.operating_system,
        }),
        capacity: json!({"cpu": node.capacity_cpu, "memory": node.capacity_memory}),
        drain_state: info.state.as_str(),
        drain_started: info.started,
        drain_deadline: info.deadline,
        drain_remaining: info.remaining,
        etcd,
        summary: NodeSummary::from_node(node),
    };
    serde_json::to_value(&d).map_err(|_| ApiError::internal())
}

fn show(ctx: &Context, req: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let name = node_name(req)?;
    if let Some((wait, seconds)) = super::wait::wait_params(&req.query)? {
        return match super::wait::wait_node(ctx, name, wait, seconds)? {
            // The view keeps only what waits need; the detail is read live (one request,
            // after the wait).
            Some(_) => Ok(json_response(200, &detail(ctx, get_node(ctx, name)?)?)),
            None => Ok(json_response(
                200,
                &json!({"name": name, "state": "deleted"}),
            )),
        };
    }
    let node = get_node(ctx, name)?;
    Ok(json_response(200, &detail(ctx, node)?))
}

// ---- PATCH /v1/nodes/{name} --------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsBody {
    labels: BTreeMap<String, Option<String>>,
}

/// A key or value for a message, shortened so a huge one cannot flood it.
fn quoted(s: &str) -> String {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{:?}...", &s[..end])
    } else {
        format!("{s:?}")
    }
}

fn relabel(ctx: &Context, req: &Request, who: Option<&Identity>) -> Result<Response, ApiError> {
    let name = node_name(req)?;
    let body: LabelsBody = json_body(req, r#"{"labels":{"key":"value","removed-key":null}}"#)?;
    for (key, value) in &body.labels {
        labels::check_key(key).map_err(|p| {
            ApiError::new(
                Code::InvalidLabel,
                format!("label key {} is invalid: {p}", quoted(key)),
            )
        })?;
        if let Some(v) = value {
            labels::check_value(v).map_err(|p| {
                ApiError::new(
                    Code::InvalidLabel,
                    format!("the value of label {} is invalid: {p}", quoted(key)),
                )
            })?;
        }
    }
    if let Some(key) = body.labels.keys().find(|k| protected(k)) {
        log::audit(
            "node.relabel",
            Identity::subject_of(who),
            name,
            "refused: protected label",
            &[],
        );
        return Err(ApiError::new(
            Code::ProtectedLabel,
            format!(
                "label {} is managed by Kubernetes, k0s or Embedded Cluster and cannot be \
                 changed here; roles change only by joining the node again with other roles",
                quoted(key)
            ),
        ));
    }
    get_node(ctx, name)?;
    let patch = NodePatch {
        labels: body.labels.clone(),
        ..NodePatch::default()
    };
    let node = match ctx.kube.patch_node(name, &patch) {
        Ok(n) => n,
        Err(kube::Error::NotFound) => return Err(node_not_found(name)),
        Err(kube::Error::Invalid(m)) => {
            return Err(ApiError::new(
                Code::InvalidLabel,
                format!("Kubernetes refused the labels: {m}"),
            ))
        }
        Err(e) => {
            log::audit(
                "node.relabel",
                Identity::subject_of(who),
                name,
                "failed",
                &[],
            );
            return Err(ApiError::from_kube(&e));
        }
    };
    let (set, removed): (Vec<_>, Vec<_>) = body.labels.iter().partition(|(_, v)| v.is_some());
    log::audit(
        "node.relabel",
        Identity::subject_of(who),
        name,
        &format!(
            "labels set: [{}]; removed: [{}]",
            set.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            removed
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &[],
    );
    Ok(json_response(200, &detail(ctx, node)?))
}

// ---- POST /v1/nodes/{name}/drain ---------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DrainBody {
    /// `None`: absent; `Some(None)`: an explicit `null`, which is refused rather than
    /// read as "absent" (it once started a synchronous drain).
    #[serde(default, deserialize_with = "explicit")]
    deadline_seconds: Option<Option<i64>>,
}

/// Keeps an explicit JSON `null` apart from an absent field.
fn explicit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

fn drain_reply(state: DrainState) -> Response {
    let status = if state == DrainState::Drained {
        200
    } else {
        202
    };
    json_response(status, &json!({ "drainState": state.as_str() }))
}

fn start_drain(ctx: &Context, req: &Request, who: Option<&Identity>) -> Result<Response, ApiError> {
    let name = node_name(req)?;
    let body: DrainBody = if req.body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        json_body(req, r#"{"deadlineSeconds": 0..3600}"#)?
    };
    let deadline = match body.deadline_seconds {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => {
            return Err(ApiError::new(
                Code::InvalidDeadline,
                format!(
                    "deadlineSeconds must be a number, 0 (drain now and wait) to \
                     {MAX_DEADLINE_SECONDS}, not null; omit it to drain now and wait"
                ),
            ))
        }
    };
    if !(0..=MAX_DEADLINE_SECONDS as i64).contains(&deadline) {
        return Err(ApiError::new(
            Code::InvalidDeadline,
            format!("deadlineSeconds must be 0 (drain now and wait) to {MAX_DEADLINE_SECONDS}"),
        ));
    }
    let sync = deadline == 0;
    // A synchronous drain answers within SYNC_DRAIN_LIMIT; the worker may go on to the max.
    let recorded = if sync {
        MAX_DEADLINE_SECONDS
    } else {
        deadline as u64
    };
    let started = match drain::start(&ctx.kube, name, recorded) {
        Ok(s) => s,
        Err(kube::Error::NotFound) => return Err(node_not_found(name)),
        Err(e) => {
            log::audit("node.drain", Identity::subject_of(who), name, "failed", &[]);
            return Err(ApiError::from_kube(&e));
        }
    };
    match started {
        drain::Start::Already(state) => {
            log::audit(
                "node.drain",
                Identity::subject_of(who),
                name,
                &format!("unchanged: already {}", state.as_str()),
                &[],
            );
            return Ok(drain_reply(state));
        }
        drain::Start::Started => log::audit(
            "node.drain",
            Identity::subject_of(who),
            name,
            &format!("started: cordoned, deadline {recorded} s"),
            &[],
        ),
    }
    let lc = &ctx.lifecycle;
    lc.kick();
    if !sync {
        return Ok(drain_reply(DrainState::Draining));
    }
    let until = Instant::now() + SYNC_DRAIN_LIMIT;
    while Instant::now() < until {
        if !lc.pause(SYNC_POLL) {
            break;
        }
        match ctx.kube.get_node(name) {
            Ok(n) => match drain_info(&n.annotations).state {
                DrainState::Draining => {}
                state => return Ok(drain_reply(state)),
            },
            Err(kube::Error::NotFound) => return Err(node_not_found(name)),
            // Transient: the worker carries on either way; look again.
            Err(_) => {}
        }
    }
    Ok(drain_reply(DrainState::Draining))
}

// ---- POST /v1/nodes/{name}/resume --------------------------------------------------

fn resume(ctx: &Context, req: &Request, who: Option<&Identity>) -> Result<Response, ApiError> {
    let name = node_name(req)?;
    match drain::resume(&ctx.kube, name) {
        Ok(changed) => {
            log::audit(
                "node.resume",
                Identity::subject_of(who),
                name,
                if changed {
                    "resumed: uncordoned, drain state cleared"
                } else {
                    "unchanged: already active"
                },
                &[],
            );
            Ok(json_response(200, &json!({ "drainState": "active" })))
        }
        Err(kube::Error::NotFound) => Err(node_not_found(name)),
        Err(e) => {
            log::audit(
                "node.resume",
                Identity::subject_of(who),
                name,
                "failed",
                &[],
            );
            Err(ApiError::from_kube(&e))
        }
    }
}

// ---- DELETE /v1/nodes/{name}?force= ------------------------------------------------

fn force_param(query: &str) -> Result<bool, ApiError> {
    Ok(Params::parse(query, &["force"])?
        .bool("force")?
        .unwrap_or(false))
}

fn remove(ctx: &Context, req: &Request, who: Option<&Identity>) -> Result<Response, ApiError> {
    let name = node_name(req)?;
    let force = force_param(&req.query)?;
    let target = get_node(ctx, name)?;
    let nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
    let self_name = ctx.server.node_name.as_deref();
    if let Err(refusal) = removal::check(&target, &nodes, self_name, force) {
        let err = match refusal {
            removal::Refusal::IsSelf => ApiError::new(
                Code::NodeIsSelf,
                format!(
                    "{name} is the node this joinery runs on; remove it through another \
                     controller's joinery"
                ),
            ),
            removal::Refusal::NotDrained(state) => ApiError::new(
                Code::NodeNotDrained,
                format!(
                    "{name} is {}, not drained; drain it first (POST /v1/nodes/{name}/drain) \
                     or pass force=true",
                    state.as_str()
                ),
            ),
            removal::Refusal::WouldLoseQuorum { controllers, ready } => ApiError::new(
                Code::WouldLoseQuorum,
                format!(
                    "removing controller {name} would leave etcd without quorum ({ready} of \
                     {controllers} controllers are ready); bring the other controllers back \
                     to Ready first"
                ),
            ),
        };
        log::audit(
            "node.remove",
            Identity::subject_of(who),
            name,
            &format!("refused: {}", err.code),
            &[],
        );
        return Err(err);
    }
    match removal::remove(&ctx.kube, &target, ETCD_LEAVE_WAIT) {
        Ok(steps) => {
            log::audit(
                "node.remove",
                Identity::subject_of(who),
                name,
                "removed",
                &[],
            );
            Ok(json_response(
                200,
                &json!({ "removed": name, "steps": steps }),
            ))
        }
        Err(removal::Failure::EtcdTimeout(steps)) => {
            log::audit(
                "node.remove",
                Identity::subject_of(who),
                name,
                "failed: etcd member still joined",
                &[],
            );
            log::warn(
                "node removal stopped: etcd member still joined",
                &[("node", name.into()), ("steps", json!(steps))],
            );
            Err(ApiError::new(
                Code::EtcdLeaveTimeout,
                format!(
                    "k0s did not report {name}'s etcd member as removed within {} s, so the \
                     node was kept; check k0s on the controllers, then call DELETE again \
                     (it picks up where it stopped)",
                    ETCD_LEAVE_WAIT.as_secs()
                ),
            ))
        }
        Err(removal::Failure::Kube(e, steps)) => {
            log::audit(
                "node.remove",
                Identity::subject_of(who),
                name,
                "failed",
                &[],
            );
            log::warn(
                "node removal stopped",
                &[("node", name.into()), ("steps", json!(steps))],
            );
            Err(ApiError::from_kube(&e))
        }
    }
}

// ---- GET /v1/cluster/health --------------------------------------------------------

fn cluster_health(ctx: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    if let Some((nodes, leases)) = ctx.cache.nodes_and_leases() {
        return Ok(json_response(200, &health::cluster_health(&nodes, &leases)));
    }
    let nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
    // Without the leases the leader is unknown; the rest of the answer still stands.
    let leases = ctx
        .kube
        .list_leases(health::LEASE_NAMESPACE)
        .unwrap_or_else(|e| {
            log::warn(
                "cannot read k0s leases; leader unknown",
                &[("error", e.to_string().into())],
            );
            Vec::new()
        });
    Ok(json_response(200, &health::cluster_health(&nodes, &leases)))
}

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/nodes/{name}",
        // Reads, like GET /v1/nodes: the read scope may look (docs/api.md, Scopes).
        access: Access::Needs(Scope::Read),
        handler: show,
    },
    Route {
        method: "PATCH",
        path: "/v1/nodes/{name}",
        access: Access::Needs(Scope::Admin),
        handler: relabel,
    },
    Route {
        method: "DELETE",
        path: "/v1/nodes/{name}",
        access: Access::Needs(Scope::Admin),
        handler: remove,
    },
    Route {
        method: "POST",
        path: "/v1/nodes/{name}/drain",
        access: Access::Needs(Scope::Admin),
        handler: start_drain,
    },
    Route {
        method: "POST",
        path: "/v1/nodes/{name}/resume",
        access: Access::Needs(Scope::Admin),
        handler: resume,
    },
    Route {
        method: "GET",
        path: "/v1/cluster/health",
        access: Access::Needs(Scope::Read),
        handler: cluster_health,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_keys() {
        for (key, expected) in [
            ("kubernetes.io/hostname", true),
            ("node-role.kubernetes.io/control-plane", true),
            ("x.kubernetes.io/anything", true),
            ("k8s.io/x", true),
            ("sub.k8s.io/x", true),
            ("node.k0sproject.io/role", true),
            ("kots.io/embedded-cluster-role", true),
            ("kots.io/embedded-cluster-role-0", true),
            ("joinery.replicated.com/drain-state", true),
            ("kots.io/app", false),
            ("example.com/kubernetes.io", false),
            ("notkubernetes.io/x", false),
            ("kubernetes.io", false),
            ("gpu", false),
        ] {
            assert_eq!(protected(key), expected, "{key}");
        }
    }

    #[test]
    fn force_values() {
        assert!(!force_param("").unwrap());
        assert!(force_param("force=true").unwrap());
        assert!(!force_param("force=false").unwrap());
        assert!(force_param("force=yes").is_err());
        // One rule for every endpoint: an unknown key is refused, not ignored.
        assert!(force_param("force=false&x=1").is_err());
    }

    #[test]
    fn quoting_is_bounded() {
        assert_eq!(quoted("ab"), "\"ab\"");
        assert!(quoted(&"é".repeat(100)).len() < 200);
    }
}
