//! `POST /v1/auth/token`: the installer password in, a 24-hour session JWT out.
//!
//! Password guessing is throttled per client address (see [`crate::auth::throttle`]);
//! [`client_ip`] and [`refusal`] are public so other password-checking endpoints answer
//! the same way.

use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;

use super::{json_body, json_response, Access, ApiError, Code, Context, Identity, Route};
use crate::auth::throttle::Refusal;
use crate::auth::{jwt, password, Scope};
use crate::http::{Peer, Request, Response};
use crate::time::now;

pub use crate::auth::session::SESSION_TTL_SECS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    password: String,
}

pub fn login(ctx: &Context, req: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let body: Login = json_body(req, r#"{"password": "<installer password>"}"#)?;
    if body.password.is_empty() {
        return Err(ApiError::new(
            Code::InvalidBody,
            "the password must not be empty",
        ));
    }
    let ip = client_ip(req);
    // The hash first: a slow Kubernetes API must not hold a bcrypt slot.
    let hash = ctx.passwords.current().map_err(|e| e.to_api_error())?;
    let attempt = ctx.throttle.check(ip).map_err(refusal)?;
    let ok = password::verify_password(&body.password, &hash);
    let (subject, result) = if ok {
        ("admin", "ok")
    } else {
        ("", "wrong_password")
    };
    let client = [("client", ip.to_string().into())];
    crate::log::audit("session.login", subject, "admin", result, &client);
    if ok {
        attempt.succeeded();
    } else {
        attempt.failed();
        return Err(ApiError::unauthorized(
            Code::InvalidPassword,
            "the password is not the installer password of this cluster",
        ));
    }
    let key = ctx.keys.get().map_err(|e| e.to_api_error())?;
    let token = jwt::sign(
        key.as_bytes(),
        &session_claims("admin", Scope::Admin, now())?,
    );
    let mut resp = json_response(200, &serde_json::json!({ "token": token }));
    resp.subject = Some("admin".into());
    Ok(resp)
}

/// The address a password guess is charged to. Local clients on the Unix socket share
/// one key (`0.0.0.0`), so they are throttled together.
pub fn client_ip(req: &Request) -> IpAddr {
    match req.peer {
        Peer::Tcp(addr) => addr.ip(),
        Peer::Unix { .. } => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// The answer to a password check the throttle refused: 429 for an address that
/// guessed too often, 503 when every bcrypt slot stayed busy. Both carry `Retry-After`.
pub fn refusal(r: Refusal) -> ApiError {
    let secs = r.retry_after_secs();
    let err = match r {
        Refusal::TooManyAttempts { .. } => ApiError::new(Code::TooManyAttempts,
            format!(
                "too many wrong passwords from this address; wait {secs} seconds before trying again"
            ),
        ),
        Refusal::Busy { .. } => ApiError::new(Code::Busy,
            "too many password checks are running at once; try again in a moment",
        ),
    };
    err.with_header("Retry-After", secs.to_string())
}

/// The answer to a bearer credential refused before its lookup: this address presented
/// too many bad ones (429 with `Retry-After`).
pub fn bearer_refusal(r: Refusal) -> ApiError {
    let secs = r.retry_after_secs();
    ApiError::new(
        Code::TooManyAttempts,
        format!(
            "too many unknown or revoked tokens from this address; wait {secs} seconds \
             before trying again"
        ),
    )
    .with_header("Retry-After", secs.to_string())
}

/// The claims of a session token for `subject` (the policy is in `auth::session`).
pub fn session_claims(
    subject: &str,
    scope: Scope,
    now: i64,
) -> Result<jwt::Claims, crate::random::Unavailable> {
    crate::auth::session::claims(subject, scope, now, SESSION_TTL_SECS)
}

pub(super) const ROUTES: &[Route] = &[Route {
    method: "POST",
    path: "/v1/auth/token",
    access: Access::Public,
    handler: login,
}];
