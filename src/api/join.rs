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
    json_body, json_response, Access, ApiError, Code, Context, Identity, Route, SESSION_AUDIENCE,
};
use crate::auth::join::{self as join_token, JoinTokenError, JOIN_TTL_SECS};
use crate::auth::{self, jwt, Scope};
use crate::http::query::Params;
use crate::http::{Body, Peer, Request, Response};
use crate::join::assemble::{self, ClusterView};
use crate::join::command::{self, CommandInputs};
use crate::join::k0s;
use crate::join::ticket::{self, Members, State, Ticket, DOWNLOAD_WINDOW_SECS};
use crate::join::JoinService;
use crate::kube;
use crate::roles;
use crate::time::now;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJoinCommand {
    roles: Vec<String>,
}

fn service(ctx: &Context) -> Result<&JoinService, ApiError> {
    ctx.join.as_ref().ok_or_else(|| {
        ApiError::new(
            Code::JoinsNotConfigured,
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
            Code::LicenseNotMultiNode,
            "the license does not allow multi-node clusters \
             (spec.isEmbeddedClusterMultiNodeEnabled is false); ask the vendor for a \
             multi-node license",
        ))
    }
}

fn invalid_roles(message: String) -> ApiError {
    ApiError::new(Code::InvalidRoles, message)
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
            Code::AddressUnknown,
            "joinery has no one bind address and cannot find this node's InternalIP, so it \
             does not know which address to put in the join command; start it with \
             --bind-address or --node-name",
        )
    })
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
    if !nodes
        .iter()
        .any(|n| n.ready && roles::is_controller(&n.labels, Some(ctl)))
    {
        return Err(ApiError::new(
            Code::NoReadyController,
            "no controller node is Ready yet; wait for one with \
             GET /v1/nodes/NAME?waitFor=ready&timeoutSeconds=600 (NAME: a controller, see \
             GET /v1/nodes), then ask again",
        ));
    }
    let address = advertise_address(ctx, &nodes)?;
    let now = now();
    let jti = ticket::new_id()?;
    let expires = now + JOIN_TTL_SECS;
    let requested_by = who.map(|w| w.subject.clone()).unwrap_or_default();
    // The ticket first: a token is never handed out without one.
    svc.tickets
        .issue(&jti, &body.roles, &requested_by, expires, now)
        .map_err(|e| ApiError::from_kube(&e))?;
    crate::pause::point("join-ticket-issued");
    let key = ctx.keys.get().map_err(|e| e.to_api_error())?;
    let token = join_token::issue(key.as_bytes(), &jti, &body.roles, now, SESSION_AUDIENCE);
    let steps = command::join_steps(&CommandInputs {
        app_slug: &svc.license.app_slug,
        roles: &body.roles,
        address,
        port: ctx.server.port,
        token: &token,
        pin: &ctx.server.pin,
        self_signed: ctx.server.self_signed,
        stamp: &assemble::stamp(now),
    });
    crate::log::audit(
        "join.create",
        Identity::subject_of(who),
        &jti,
        "issued",
        &[("roles", body.roles.join(",").into())],
    );
    crate::metrics::global().join_command_issued();
    Ok(json_response(
        200,
        &serde_json::json!({ "joinSteps": steps, "joinId": jti }),
    ))
}

/// Who is downloading: an admin session, or a join token (with its claims).
enum Downloader {
    Admin(String),
    Join {
        ticket: String,
        /// The token's time is up: only a download already under way may go on.
        expired: bool,
    },
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
                Code::MissingToken,
                "this endpoint needs the join token from POST /v1/create-join-command, or a \
                 session token, as 'Authorization: Bearer TOKEN'",
            )
        })?;
    let now = now();
    let key = ctx.keys.key_for(token, now).map_err(|e| e.to_api_error())?;
    let refused = |e: jwt::JwtError| {
        ApiError::unauthorized(
            Code::InvalidToken,
            format!("the token was refused ({e}); ask for a new join command"),
        )
    };
    match join_token::verify(key.as_bytes(), token, roles, now) {
        Ok(claims) => Ok(Downloader::Join {
            ticket: claims.jti,
            expired: false,
        }),
        Err(JoinTokenError::Expired(claims)) => Ok(Downloader::Join {
            ticket: claims.jti,
            expired: true,
        }),
        Err(JoinTokenError::Roles(theirs)) => Err(ApiError::new(
            Code::RolesMismatch,
            format!(
                "this join token is for roles={}; download with exactly those roles",
                theirs.join(",")
            ),
        )),
        Err(JoinTokenError::NotJoin) => {
            let claims =
                crate::auth::session::verify(key.as_bytes(), token, now).map_err(refused)?;
            match Scope::parse(&claims.scope) {
                Some(Scope::Admin) => Ok(Downloader::Admin(claims.sub)),
                _ => Err(ApiError::new(
                    Code::InsufficientScope,
                    "downloading a join bundle needs a join token or an admin token",
                )),
            }
        }
        Err(JoinTokenError::Refused(e)) => Err(refused(e)),
    }
}

fn token_used() -> ApiError {
    ApiError::new(
        Code::JoinTokenUsed,
        "this join token was already used (each works once, and only the host that started \
         a download may resume it); ask for a new join command with \
         POST /v1/create-join-command",
    )
}

fn token_expired() -> ApiError {
    ApiError::new(
        Code::JoinTokenExpired,
        "this join token has expired (join commands work for one hour); ask for a new join \
         command with POST /v1/create-join-command",
    )
}

pub(super) fn join_revoked() -> ApiError {
    ApiError::new(
        Code::JoinRevoked,
        "this join was revoked by an administrator; ask for a new join command",
    )
}

/// The downloading client, as the ledger and the resume rule know it.
fn client_of(req: &Request) -> String {
    match &req.peer {
        Peer::Tcp(a) => a.ip().to_canonical().to_string(),
        Peer::Unix { .. } => "local".to_string(),
    }
}

/// What a join token's request may do with its ticket, decided without writing.
enum Verdict {
    /// An issued ticket: win it, then make the bundle's members.
    Start(Ticket),
    /// This client's own download: go on with the ticket as it is.
    Continue(Ticket),
}

fn judge(t: Option<Ticket>, expired: bool, client: &str, now: i64) -> Result<Verdict, ApiError> {
    let Some(t) = t else {
        return Err(if expired {
            token_expired()
        } else {
            token_used()
        });
    };
    match t.state {
        State::Revoked => Err(join_revoked()),
        State::Issued if expired || t.expires <= now => Err(token_expired()),
        State::Issued => Ok(Verdict::Start(t)),
        State::Downloading if t.resumable_by(client, now) => Ok(Verdict::Continue(t)),
        State::Downloading => Err(token_used()),
    }
}

/// Everything a bundle needs from the cluster, read (never written) before a ticket is
/// spent.
struct Gathered {
    nodes: Vec<kube::Node>,
    cluster_id: String,
    k0s_address: IpAddr,
}

fn artifacts_unchanged(svc: &JoinService) -> Result<(), ApiError> {
    svc.check_artifacts().map_err(|why| {
        crate::log::error(
            "an artifact changed since start-up",
            &[("error", why.clone().into())],
        );
        ApiError::new(
            Code::ArtifactsChanged,
            format!(
                "an artifact is not the file joinery scanned at start-up ({why}); restart \
                 joinery so it scans the artifacts again, then retry (the join command is \
                 still good)"
            ),
        )
    })
}

fn gather(ctx: &Context, svc: &JoinService) -> Result<Gathered, ApiError> {
    artifacts_unchanged(svc)?;
    let nodes = ctx.kube.list_nodes().map_err(|e| ApiError::from_kube(&e))?;
    let address = advertise_address(ctx, &nodes)?;
    let cluster_id = ctx
        .kube
        .namespace_uid(k0s::NAMESPACE)
        .map_err(|e| ApiError::from_kube(&e))?;
    // k0s listens on the controller's InternalIP, which may differ from joinery's
    // bind address (e.g. 0.0.0.0 or a dedicated interface).
    let k0s_address = own_internal_ip(ctx, &nodes).unwrap_or(address);
    Ok(Gathered {
        nodes,
        cluster_id,
        k0s_address,
    })
}

fn k0s_error(e: k0s::CreateError) -> ApiError {
    match e {
        k0s::CreateError::Kube(e) => ApiError::from_kube(&e),
        k0s::CreateError::NoCa => {
            crate::log::error("ConfigMap kube-system/kube-root-ca.crt has no ca.crt", &[]);
            ApiError::new(
                Code::KubernetesError,
                "the cluster CA (ConfigMap kube-system/kube-root-ca.crt) is missing; the \
                 daemon's log has the details",
            )
        }
        k0s::CreateError::Random(e) => e.into(),
    }
}

/// Makes the per-join members: the signed seed and a fresh k0s bootstrap token.
fn make_members(
    ctx: &Context,
    svc: &JoinService,
    g: &Gathered,
    roles: &[String],
    now: i64,
    until: i64,
) -> Result<Members, ApiError> {
    let kind = if assemble::joins_controller(svc, roles) {
        k0s::Kind::Controller
    } else {
        k0s::Kind::Worker
    };
    let seed = assemble::seed(
        svc,
        &ClusterView {
            nodes: &g.nodes,
            cluster_id: g.cluster_id.clone(),
        },
        roles,
        now,
        until,
    );
    let signed = svc.seed_signer.sign(&seed).map_err(|e| {
        crate::log::error("signing the cluster seed failed", &[("error", e.into())]);
        ApiError::internal()
    })?;
    let created = k0s::create(
        &ctx.kube,
        g.k0s_address,
        kind,
        &crate::time::rfc3339(until),
        &format!("joinery: join with roles {}", roles.join(",")),
    )
    .map_err(k0s_error)?;
    Ok(Members {
        seed: signed,
        k0s_token: created.token,
        bootstrap_id: created.id,
        time: now,
    })
}

/// Deletes a bootstrap token this request made and no bundle will carry.
fn discard_bootstrap(ctx: &Context, id: &str) {
    if let Err(e) = k0s::delete(&ctx.kube, id) {
        crate::log::warn(
            "deleting an unused bootstrap token failed; it expires by itself",
            &[("token_id", id.into()), ("error", e.to_string().into())],
        );
    }
}

/// Takes the ticket of a join token to where its bundle can be streamed: won by this
/// client, its members made and stored. Nothing is written unless the ticket is issued
/// (won here) or already this client's.
/// Who asks to download with a join token.
struct Claimant<'a> {
    ticket: &'a str,
    /// The token's time is up.
    expired: bool,
    client: &'a str,
    roles: &'a [String],
}

fn claim(
    ctx: &Context,
    svc: &JoinService,
    g: &Gathered,
    who: &Claimant<'_>,
    now: i64,
) -> Result<Ticket, ApiError> {
    let (id, expired, client, roles) = (who.ticket, who.expired, who.client, who.roles);
    let first = svc.tickets.get(id).map_err(|e| ApiError::from_kube(&e))?;
    let mut t = match judge(first, expired, client, now)? {
        Verdict::Continue(t) => t,
        Verdict::Start(t) => match svc.tickets.start(&t, client, now) {
            Ok(t) => {
                crate::metrics::global().join_ticket_consumed();
                t
            }
            // Another request wrote the ticket first: it may have been this client's
            // own earlier attempt (whose answer was lost), so judge again.
            Err(kube::Error::Conflict) | Err(kube::Error::NotFound) => {
                let again = svc.tickets.get(id).map_err(|e| ApiError::from_kube(&e))?;
                match judge(again, expired, client, now)? {
                    Verdict::Continue(t) => t,
                    Verdict::Start(_) => return Err(token_used()),
                }
            }
            // Ambiguous (the write may have landed): this client's retry finds the
            // ticket its own and goes on.
            Err(e) => return Err(ApiError::from_kube(&e)),
        },
    };
    if t.members.is_none() {
        let until = t.started.unwrap_or(now) + DOWNLOAD_WINDOW_SECS;
        let members = make_members(ctx, svc, g, roles, now, until)?;
        let mut next = t.clone();
        next.members = Some(members.clone());
        t = match svc.tickets.write(&next) {
            Ok(t) => t,
            Err(e) => {
                discard_bootstrap(ctx, &members.bootstrap_id);
                // A racing attempt of the same client stored its members first.
                if matches!(e, kube::Error::Conflict) {
                    match svc.tickets.get(id).map_err(|e| ApiError::from_kube(&e))? {
                        Some(t) if t.members.is_some() && t.resumable_by(client, now) => t,
                        Some(t) if t.state == State::Revoked => return Err(join_revoked()),
                        _ => return Err(token_used()),
                    }
                } else {
                    return Err(ApiError::from_kube(&e));
                }
            }
        };
    }
    Ok(t)
}

/// The server's refusal, also in a header: the join step prints it when curl, resuming,
/// does not keep the body.
fn with_message_header(e: ApiError) -> ApiError {
    let line = format!("{} ({} {})", e.message, e.status(), e.code);
    e.with_header("Joinery-Error", line)
}

pub fn bundle(ctx: &Context, req: &Request, who: Option<&Identity>) -> Result<Response, ApiError> {
    bundle_inner(ctx, req, who).map_err(with_message_header)
}

fn bundle_inner(ctx: &Context, req: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let svc = service(ctx)?;
    let query = Params::parse(&req.query, &["roles"])?;
    let roles = command::roles_from_param(query.get("roles")).map_err(invalid_roles)?;
    command::check_roles(&roles, &svc.roles).map_err(invalid_roles)?;
    let who = authenticate_download(ctx, req, &roles)?;
    require_multi_node(svc)?;
    let now = now();
    let client = client_of(req);
    let head = req.method == "HEAD";

    let (subject, members, ticket) = match &who {
        Downloader::Join {
            ticket: id,
            expired,
        } => {
            if head {
                // HEAD says what a GET would get, and spends nothing.
                let t = svc.tickets.get(id).map_err(|e| ApiError::from_kube(&e))?;
                judge(t, *expired, &client, now)?;
                artifacts_unchanged(svc)?;
                return Ok(bundle_head(svc, &roles, now));
            }
            let g = gather(ctx, svc)?;
            let who = Claimant {
                ticket: id,
                expired: *expired,
                client: &client,
                roles: &roles,
            };
            let t = claim(ctx, svc, &g, &who, now)?;
            let m = t.members.clone().ok_or_else(ApiError::internal)?;
            (format!("join:{id}"), m, Some(t))
        }
        Downloader::Admin(sub) => {
            if head {
                return Ok(bundle_head(svc, &roles, now));
            }
            let g = gather(ctx, svc)?;
            let m = make_members(ctx, svc, &g, &roles, now, now + JOIN_TTL_SECS)?;
            (sub.clone(), m, None)
        }
    };

    let built = assemble::entries(svc, &members.seed, &members.k0s_token).and_then(|e| {
        let mut s = crate::join::stream_at(e.clone(), &svc.cache, members.time.max(0) as u64)?;
        // A join's bundle is measured, so it has a length and can be resumed.
        let total = match ticket {
            Some(_) => Some(s.measure()?),
            None => None,
        };
        Ok((e, s, total))
    });
    let (entries, mut stream, total) = match built {
        Ok(b) => b,
        Err(e) => {
            crate::log::error(
                "starting the bundle failed",
                &[("error", e.to_string().into())],
            );
            // A bootstrap token no bundle carries is deleted; a join's ticket keeps its
            // members, so this client's retry gets the same bundle.
            if ticket.is_none() {
                discard_bootstrap(ctx, &members.bootstrap_id);
            }
            return Err(ApiError::internal());
        }
    };
    let file = assemble::file_name(svc, &roles, members.time);
    let mut headers = bundle_headers(&file);
    let mut status = 200;
    let mut len = None;
    let reader: Box<dyn std::io::Read + Send> = match (&ticket, total) {
        (Some(t), Some(total)) => {
            let etag = assemble::etag(&t.id, members.time, &entries, total);
            let if_range_ok = req.header("if-range").is_none_or(|v| v == etag);
            let (first, last) = match req.header("range").and_then(assemble::parse_range) {
                Some((first, _)) if if_range_ok && first >= total => {
                    return Err(ApiError::new(
                        Code::RangeNotSatisfiable,
                        format!(
                            "the bundle is {total} bytes, so it has nothing from byte {first} \
                             on; the download is complete"
                        ),
                    )
                    .with_header("Content-Range", format!("bytes */{total}")));
                }
                Some((first, last)) if if_range_ok => {
                    status = 206;
                    let last = last.map_or(total - 1, |l| l.min(total - 1));
                    headers.push((
                        "Content-Range".into(),
                        format!("bytes {first}-{last}/{total}"),
                    ));
                    (first, last)
                }
                _ => (0, total.saturating_sub(1)),
            };
            // A resume must continue the very bundle it started: if the artifacts
            // changed since (joinery restarted on new ones), its bytes would not fit.
            if first > 0 && t.etag.as_ref().is_some_and(|e| *e != etag) {
                return Err(ApiError::new(
                    Code::BundleChanged,
                    "the bundle changed since this download started (the artifacts were \
                     replaced); delete the partial file and download it again (the step does \
                     both when run again)",
                ));
            }
            if t.etag.as_deref() != Some(etag.as_str()) {
                svc.tickets.record_etag(&t.id, &etag);
            }
            headers.push(("ETag".into(), etag));
            headers.push(("Accept-Ranges".into(), "bytes".into()));
            if let Err(e) = stream.skip(first) {
                crate::log::error(
                    "resuming the bundle failed",
                    &[("error", e.to_string().into())],
                );
                return Err(ApiError::internal());
            }
            let n = if total == 0 { 0 } else { last + 1 - first };
            len = Some(n);
            Box::new(crate::join::watch::Watched::new(
                crate::metrics::CountingReader::bundle(stream).range(n, last + 1 >= total),
                svc.tickets.handle(),
                t.id.clone(),
                first,
                (last + 1 >= total).then_some(total),
            ))
        }
        _ => Box::new(crate::metrics::CountingReader::bundle(stream)),
    };
    crate::log::audit(
        "join.bundle",
        &subject,
        ticket.as_ref().map_or("", |t| t.id.as_str()),
        if status == 206 {
            "resuming"
        } else {
            "streaming"
        },
        &[
            ("roles", roles.join(",").into()),
            ("client", client.clone().into()),
        ],
    );
    Ok(Response {
        status,
        headers,
        body: Body::Stream {
            reader,
            len,
            flush: crate::http::Flush::AtEnd,
        },
        subject: Some(subject),
    })
}

fn bundle_headers(file: &str) -> Vec<(String, String)> {
    vec![
        ("Content-Type".into(), "application/gzip".into()),
        (
            "Content-Disposition".into(),
            format!("attachment; filename=\"{file}\""),
        ),
        ("Cache-Control".into(), "no-store".into()),
    ]
}

fn bundle_head(svc: &JoinService, roles: &[String], now: i64) -> Response {
    Response {
        status: 200,
        headers: bundle_headers(&assemble::file_name(svc, roles, now)),
        body: Body::Empty,
        subject: None,
    }
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
