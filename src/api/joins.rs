//! `GET /v1/joins` (the ledger of join commands) and `DELETE /v1/joins/{id}`
//! (revocation). Both read the tickets every controller shares, so any controller
//! answers for all of them; a revocation stops the join everywhere at once.

use serde::Serialize;

use super::{json_response, Access, ApiError, Code, Context, Identity, Route};
use crate::auth::Scope;
use crate::http::{Request, Response};
use crate::join::k0s;
use crate::join::ticket::{self, State, Ticket};
use crate::join::JoinService;
use crate::kube;
use crate::time::now;

/// One join in the ledger (the JSON shape `joinery joins` prints).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub id: String,
    pub roles: Vec<String>,
    pub requested_by: String,
    pub created: String,
    pub expires: String,
    /// `issued`, `downloading`, `downloaded`, `expired`, `revoked` or `joined`.
    pub state: &'static str,
    pub client: Option<String>,
    pub bytes_sent: u64,
    pub download_started: Option<String>,
    pub download_completed: Option<String>,
    pub revoked: Option<String>,
    /// The node that joined: it appeared after the download began, with the
    /// downloading client's address as its InternalIP.
    pub node: Option<String>,
}

fn ts(t: i64) -> String {
    crate::time::rfc3339(t)
}

/// The node a join made, if any: created after the download started, with the
/// client's address as InternalIP.
fn joined_node<'a>(t: &Ticket, nodes: &'a [kube::Node]) -> Option<&'a str> {
    let client = t.client.as_deref()?;
    let since = ts(t.started?);
    nodes
        .iter()
        .find(|n| {
            n.internal_ip.as_deref() == Some(client)
                && n.created.as_deref().is_some_and(|c| c >= since.as_str())
        })
        .map(|n| n.name.as_str())
}

fn entry(t: &Ticket, nodes: &[kube::Node], now: i64) -> LedgerEntry {
    let node = joined_node(t, nodes).map(String::from);
    let state = match t.state {
        State::Revoked => "revoked",
        State::Issued if t.expires <= now => "expired",
        State::Issued => "issued",
        State::Downloading if node.is_some() => "joined",
        State::Downloading if t.completed.is_some() => "downloaded",
        State::Downloading => "downloading",
    };
    LedgerEntry {
        id: t.id.clone(),
        roles: t.roles.clone(),
        requested_by: t.requested_by.clone(),
        created: ts(t.created),
        expires: ts(t.expires),
        state,
        client: t.client.clone(),
        bytes_sent: t.bytes,
        download_started: t.started.map(ts),
        download_completed: t.completed.map(ts),
        revoked: t.revoked_at.map(ts),
        node,
    }
}

fn service(ctx: &Context) -> Result<&JoinService, ApiError> {
    ctx.join.as_ref().ok_or_else(|| {
        ApiError::new(
            Code::JoinsNotConfigured,
            "this daemon was started without --ec-config, --license and --artifacts-dir, so \
             it keeps no joins; restart it with all three",
        )
    })
}

pub fn list(ctx: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let svc = service(ctx)?;
    let now = now();
    svc.tickets.sweep(now);
    let tickets = svc.tickets.list().map_err(|e| ApiError::from_kube(&e))?;
    let nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
    let joins: Vec<LedgerEntry> = tickets.iter().map(|t| entry(t, &nodes, now)).collect();
    Ok(json_response(200, &serde_json::json!({ "joins": joins })))
}

fn join_id(req: &Request) -> Result<&str, ApiError> {
    let id = req.path.split('/').nth(3).unwrap_or("");
    if ticket::valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::new(
            Code::InvalidJoinId,
            "a join id is 32 lowercase hex digits; see GET /v1/joins for the ids",
        ))
    }
}

pub fn revoke(ctx: &Context, req: &Request, who: Option<&Identity>) -> Result<Response, ApiError> {
    let svc = service(ctx)?;
    let id = join_id(req)?;
    let now = now();
    let not_found = || {
        ApiError::new(
            Code::JoinNotFound,
            "no join with this id (finished joins are kept 7 days); see GET /v1/joins",
        )
    };
    let nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
    // A few rounds: a download starting at the same moment may write the ticket.
    for _ in 0..5 {
        let t = svc
            .tickets
            .get(id)
            .map_err(|e| ApiError::from_kube(&e))?
            .ok_or_else(not_found)?;
        let current = entry(&t, &nodes, now);
        match current.state {
            "revoked" => return Ok(json_response(200, &current)),
            "expired" | "joined" => {
                return Err(ApiError::new(
                    Code::JoinFinished,
                    format!(
                        "this join is {}; there is nothing left to revoke",
                        current.state
                    ),
                ))
            }
            _ => {}
        }
        let mut next = t.clone();
        next.state = State::Revoked;
        next.revoked_at = Some(now);
        // The k0s token goes with the bootstrap token below.
        next.members = None;
        match svc.tickets.write(&next) {
            Ok(done) => {
                if let Some(m) = &t.members {
                    k0s::delete(&ctx.kube, &m.bootstrap_id).map_err(|e| ApiError::from_kube(&e))?;
                }
                crate::log::audit("join.revoke", Identity::subject_of(who), id, "revoked", &[]);
                return Ok(json_response(200, &entry(&done, &nodes, now)));
            }
            Err(kube::Error::Conflict) => continue,
            Err(kube::Error::NotFound) => return Err(not_found()),
            Err(e) => return Err(ApiError::from_kube(&e)),
        }
    }
    Err(ApiError::new(
        Code::Conflict,
        "the join kept changing while it was being revoked; try again",
    ))
}

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/joins",
        access: Access::Needs(Scope::Admin),
        handler: list,
    },
    Route {
        method: "DELETE",
        path: "/v1/joins/{id}",
        access: Access::Needs(Scope::Admin),
        handler: revoke,
    },
];
