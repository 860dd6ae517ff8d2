//! `POST /v1/create-join-command` and `GET /v1/join-bundle`: headless joins.
//!
//! The command embeds a join token (a JWT with audience `join-bundle`, the roles, one
//! hour) whose ticket is recorded in Kubernetes before the command is returned. The
//! bundle endpoint accepts that token once, across all controllers, or an admin session
//! token any number of times. Everything that can fail is checked before the first
//! byte of the bundle is sent, so a failure is always the JSON envelope and never a
//! partial tar that looks complete.

use std::net::IpAddr;

use serde::Deserialize;

use super::{
    json_body, json_response, now, Access, ApiError, Context, Identity, Route, SESSION_AUDIENCE,
};
use crate::auth::{self, jwt, JwtError, Scope};
use crate::http::query::Params;
use crate::http::{Body, Request, Response};
use crate::join::command::{self, CommandInputs};
use crate::join::k0s;
use crate::join::seed::{self, Endpoint, Seed};
use crate::join::ticket::{self, ConsumeError};
use crate::join::{Entry, JoinService};
use crate::kube;
use crate::roles::roles_from_labels;

/// Audience of join tokens.
pub const JOIN_AUDIENCE: &str = "join-bundle";
/// How long a join token (and its ticket, and the k0s token) lives.
pub const JOIN_TTL_SECS: i64 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJoinCommand {
    roles: Vec<String>,
}

fn service(ctx: &Context) -> Result<&JoinService, ApiError> {
    ctx.join.as_ref().ok_or_else(|| {
        ApiError::new(
            503,
            "joins_not_configured",
            "this daemon was started without --ec-config, --license and --artifacts-dir, so \
             it cannot make join commands; restart it with all three",
        )
    })
}

fn require_multi_node(svc: &JoinService) -> Result<(), ApiError> {
    if svc.license.multi_node {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            "license_not_multi_node",
            "the license does not allow multi-node clusters \
             (spec.isEmbeddedClusterMultiNodeEnabled is false); ask the vendor for a \
             multi-node license",
        ))
    }
}

fn invalid_roles(message: String) -> ApiError {
    ApiError::bad_request("invalid_roles", message)
}

/// Whether a node is a controller: it holds the configured controller role, or k0s
/// marks it as control plane.
fn is_controller(node: &kube::Node, controller_role: &str) -> bool {
    roles_from_labels(&node.labels)
        .iter()
        .any(|r| r == controller_role)
        || node
            .labels
            .contains_key("node-role.kubernetes.io/control-plane")
}

/// This controller's InternalIP, when its node is known.
fn own_internal_ip(ctx: &Context, nodes: &[kube::Node]) -> Option<IpAddr> {
    let name = ctx.server.node_name.as_deref()?;
    nodes
        .iter()
        .find(|n| n.name == name)?
        .internal_ip
        .as_deref()?
        .parse()
        .ok()
}

/// The address joining hosts reach this daemon at: the bind address when it is a
/// specific one, else this node's InternalIP.
fn advertise_address(ctx: &Context, nodes: &[kube::Node]) -> Result<IpAddr, ApiError> {
    if !ctx.server.bind_ip.is_unspecified() {
        return Ok(ctx.server.bind_ip);
    }
    own_internal_ip(ctx, nodes).ok_or_else(|| {
        ApiError::new(
            503,
            "address_unknown",
            "joinery listens on all addresses and cannot find this node's InternalIP, so it \
             does not know which address to put in the join command; start it with \
             --bind-address or --node-name",
        )
    })
}

fn stamp(now: i64) -> String {
    let (date, time) = crate::log::civil(now);
    format!("{}-{}", date.replace('-', ""), time.replace(':', ""))
}

pub fn create_command(
    ctx: &Context,
    req: &Request,
    who: Option<&Identity>,
) -> Result<Response, ApiError> {
    let svc = service(ctx)?;
    let body: CreateJoinCommand = json_body(req, r#"{"roles": ["<role>", ...]}"#)?;
    command::check_roles(&body.roles, &svc.roles).map_err(invalid_roles)?;
    require_multi_node(svc)?;
    let nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
    let ctl = svc.roles.controller.name.as_str();
    if !nodes.iter().any(|n| n.ready && is_controller(n, ctl)) {
        return Err(ApiError::new(
            409,
            "no_ready_controller",
            "no controller node is Ready yet; poll GET /v1/nodes until a node with the \
             controller role shows \"ready\": true, then ask again",
        ));
    }
    let address = advertise_address(ctx, &nodes)?;
    let now = now();
    let jti = ticket::new_id().map_err(|_| ApiError::internal())?;
    let expires = now + JOIN_TTL_SECS;
    // The ticket first: a token is never handed out without one.
    svc.tickets
        .issue(&jti, &body.roles, expires, now)
        .map_err(|e| ApiError::from_kube(&e))?;
    let key = ctx.keys.get().map_err(|e| e.to_api_error())?;
    let claims = jwt::Claims {
        iss: SESSION_AUDIENCE.into(),
        sub: "join".into(),
        aud: JOIN_AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp: expires,
        jti: jti.clone(),
        scope: JOIN_AUDIENCE.into(),
        roles: body.roles.clone(),
    };
    let token = jwt::sign(key.as_bytes(), &claims);
    let steps = command::join_steps(&CommandInputs {
        app_slug: &svc.license.app_slug,
        roles: &body.roles,
        address,
        port: ctx.server.port,
        token: &token,
        pin: &ctx.server.pin,
        self_signed: ctx.server.self_signed,
        stamp: &stamp(now),
    });
    crate::log::info(
        "audit",
        &[
            ("action", "create-join-command".into()),
            ("subject", who.map(|w| w.subject.clone()).into()),
            ("roles", body.roles.join(",").into()),
            ("ticket", jti.into()),
            ("result", "issued".into()),
        ],
    );
    crate::metrics::global().join_command_issued();
    Ok(json_response(
        200,
        &serde_json::json!({ "joinSteps": steps }),
    ))
}

/// Who is downloading: an admin session, or a join token (with its ticket id).
enum Downloader {
    Admin(String),
    Join { ticket: String },
}

fn authenticate_download(
    ctx: &Context,
    req: &Request,
    roles: &[String],
) -> Result<Downloader, ApiError> {
    let token = req
        .header("authorization")
        .and_then(auth::bearer_token)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "missing_token",
                "this endpoint needs the join token from POST /v1/create-join-command, or a \
                 session token, as 'Authorization: Bearer TOKEN'",
            )
        })?;
    let key = ctx.keys.get().map_err(|e| e.to_api_error())?;
    let now = now();
    let refused = |e: JwtError| {
        ApiError::unauthorized(
            "invalid_token",
            format!("the token was refused ({e}); ask for a new join command"),
        )
    };
    match jwt::verify(key.as_bytes(), token, JOIN_AUDIENCE, now) {
        Ok(claims) => {
            if claims.roles != roles {
                return Err(ApiError::new(
                    403,
                    "roles_mismatch",
                    format!(
                        "this join token is for roles={}; download with exactly those roles",
                        claims.roles.join(",")
                    ),
                ));
            }
            Ok(Downloader::Join { ticket: claims.jti })
        }
        Err(JwtError::Audience) => {
            let claims =
                jwt::verify(key.as_bytes(), token, SESSION_AUDIENCE, now).map_err(refused)?;
            match Scope::parse(&claims.scope) {
                Some(Scope::Admin) => Ok(Downloader::Admin(claims.sub)),
                _ => Err(ApiError::new(
                    403,
                    "insufficient_scope",
                    "downloading a join bundle needs a join token or an admin token",
                )),
            }
        }
        Err(e) => Err(refused(e)),
    }
}

pub fn bundle(ctx: &Context, req: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let svc = service(ctx)?;
    let query = Params::parse(&req.query, &["roles"])?;
    let roles = command::roles_from_param(query.get("roles")).map_err(invalid_roles)?;
    command::check_roles(&roles, &svc.roles).map_err(invalid_roles)?;
    let who = authenticate_download(ctx, req, &roles)?;
    require_multi_node(svc)?;
    let now = now();

    // Gather everything the bundle needs before the ticket is spent.
    let nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
    let address = advertise_address(ctx, &nodes)?;
    let ctl_role = svc.roles.controller.name.as_str();
    let (controllers, workers): (Vec<&kube::Node>, Vec<&kube::Node>) =
        nodes.iter().partition(|n| is_controller(n, ctl_role));
    let endpoint = |n: &&kube::Node| Endpoint {
        name: n.name.clone(),
        internal_ip: n.internal_ip.clone().unwrap_or_default(),
    };
    let joins_controller = roles.iter().any(|r| r == ctl_role);
    let kind = if joins_controller {
        k0s::Kind::Controller
    } else {
        k0s::Kind::Worker
    };
    let cluster_id = ctx
        .kube
        .namespace_uid(k0s::NAMESPACE)
        .map_err(|e| ApiError::from_kube(&e))?;
    let expiration = crate::log::rfc3339(now + JOIN_TTL_SECS);
    let description = format!("joinery: join with roles {}", roles.join(","));
    // k0s listens on the controller's InternalIP, which may differ from joinery's
    // bind address (e.g. 0.0.0.0 or a dedicated interface).
    let k0s_address = own_internal_ip(ctx, &nodes).unwrap_or(address);
    let k0s_token = k0s::create(&ctx.kube, k0s_address, kind, &expiration, &description).map_err(
        |e| match e {
            k0s::CreateError::Kube(e) => ApiError::from_kube(&e),
            k0s::CreateError::NoCa => {
                crate::log::error("ConfigMap kube-system/kube-root-ca.crt has no ca.crt", &[]);
                ApiError::new(
                    502,
                    "kubernetes_error",
                    "the cluster CA (ConfigMap kube-system/kube-root-ca.crt) is missing; the \
                 daemon's log has the details",
                )
            }
            k0s::CreateError::Random(_) => ApiError::internal(),
        },
    )?;

    let subject = match &who {
        Downloader::Admin(sub) => sub.clone(),
        Downloader::Join { ticket: t } => {
            if let Err(e) = svc.tickets.consume(t, now) {
                // The bootstrap token made above is useless now; it expires by itself.
                return Err(match e {
                    ConsumeError::Used => ApiError::new(
                        410,
                        "join_token_used",
                        "this join token was already used (each works once); ask for a new \
                         join command with POST /v1/create-join-command",
                    ),
                    ConsumeError::Expired => ApiError::new(
                        410,
                        "join_token_expired",
                        "this join token has expired; ask for a new join command",
                    ),
                    ConsumeError::Kube(e) => ApiError::from_kube(&e),
                });
            }
            crate::metrics::global().join_ticket_consumed();
            format!("join:{t}")
        }
    };

    let mut versions = std::collections::BTreeMap::new();
    versions.insert("joinery".to_string(), crate::version::VERSION.to_string());
    if let Some(k) = controllers
        .iter()
        .map(|n| n.node_info.kubelet_version.clone())
        .find(|v| !v.is_empty())
    {
        versions.insert("kubernetes".to_string(), k);
    }
    let controller_eps: Vec<Endpoint> = controllers.iter().map(endpoint).collect();
    let worker_eps: Vec<Endpoint> = workers.iter().map(endpoint).collect();
    let seed = Seed {
        cluster_id,
        versions,
        connections: seed::connections(&controller_eps, &worker_eps, joins_controller),
        controllers: controller_eps,
        roles: seed::ordered_roles(&svc.roles, &roles)
            .into_iter()
            .map(String::from)
            .collect(),
        node_labels: seed::node_labels(&svc.roles, &roles),
        issued_at: now,
        expires_at: now + JOIN_TTL_SECS,
    };
    let key = ctx.keys.get().map_err(|e| e.to_api_error())?;
    let mut entries = svc.artifact_entries();
    entries.push(Entry::bytes("license.yaml", svc.license.raw.clone(), 0o644));
    entries.push(Entry::bytes(
        "cluster-seed.json",
        seed::sign(key.as_bytes(), &seed),
        0o644,
    ));
    entries.push(Entry::bytes(
        "k0s-join-token",
        format!("{k0s_token}\n"),
        0o600,
    ));
    let sums = svc.cache.sha256sums(&entries).map_err(|e| {
        crate::log::error(
            "hashing artifacts failed",
            &[("error", e.to_string().into())],
        );
        ApiError::internal()
    })?;
    entries.push(Entry::bytes("SHA256SUMS", sums, 0o644));
    let stream = crate::join::stream(entries, &svc.cache).map_err(|e| {
        crate::log::error(
            "starting the bundle failed",
            &[("error", e.to_string().into())],
        );
        ApiError::internal()
    })?;
    let file = command::bundle_file_name(&svc.license.app_slug, &roles, &stamp(now));
    crate::log::info(
        "audit",
        &[
            ("action", "join-bundle".into()),
            ("subject", subject.clone().into()),
            ("roles", roles.join(",").into()),
            ("result", "streaming".into()),
        ],
    );
    Ok(Response {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/gzip".into()),
            (
                "Content-Disposition".into(),
                format!("attachment; filename=\"{file}\""),
            ),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: Body::Stream {
            reader: Box::new(crate::metrics::CountingReader::bundle(stream)),
            len: None,
            flush: crate::http::Flush::AtEnd,
        },
        subject: Some(subject),
    })
}

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v1/create-join-command",
        access: Access::Needs(Scope::Admin),
        handler: create_command,
    },
    Route {
        method: "GET",
        path: "/v1/join-bundle",
        access: Access::Handler,
        handler: bundle,
    },
];
