//! `/v1/auth/tokens`: create, list and revoke `jnr_` API tokens (admin scope).
//!
//! The token itself is in the create response only; listings show its last four
//! characters. Storage, caching and revocation are in [`crate::auth::apitoken`].

use serde::Deserialize;

use super::{json_body, json_response, Access, ApiError, Code, Context, Identity, Route};
use crate::auth::apitoken::{self, TokenError, TokenInfo};
use crate::auth::Scope;
use crate::http::{Body, Request, Response};
use crate::log;
use crate::time::now;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewToken {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires_in_seconds: u64,
}

const SHAPE: &str = r#"{"name": "ci", "scopes": ["read"], "expiresInSeconds": 0}"#;

pub fn create(ctx: &Context, req: &Request, who: Option<&Identity>) -> Result<Response, ApiError> {
    let body: NewToken = json_body(req, SHAPE)?;
    let scopes =
        apitoken::parse_scopes(&body.scopes).map_err(|m| ApiError::new(Code::InvalidScope, m))?;
    let (token, info) = ctx
        .api_tokens
        .create(&body.name, &scopes, body.expires_in_seconds, now())
        .map_err(token_error)?;
    log::audit(
        "token.create",
        Identity::subject_of(who),
        &info.id,
        "ok",
        &[],
    );
    let mut v = view(&info);
    v["token"] = serde_json::Value::String(token);
    let mut resp = json_response(201, &v);
    resp.headers
        .push(("Cache-Control".into(), "no-store".into()));
    Ok(resp)
}

pub fn list(ctx: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let all = ctx.api_tokens.list().map_err(|e| ApiError::from_kube(&e))?;
    let tokens: Vec<serde_json::Value> = all.iter().map(view).collect();
    Ok(json_response(200, &serde_json::json!({ "tokens": tokens })))
}

pub fn revoke(ctx: &Context, req: &Request, who: Option<&Identity>) -> Result<Response, ApiError> {
    let id = req.path.rsplit('/').next().unwrap_or("");
    let info = ctx.api_tokens.revoke(id).map_err(token_error)?;
    log::audit(
        "token.revoke",
        Identity::subject_of(who),
        &info.id,
        "ok",
        &[],
    );
    Ok(Response {
        status: 204,
        headers: Vec::new(),
        body: Body::Empty,
        subject: None,
    })
}

/// What clients see of a token (never the token or its hash).
pub fn view(t: &TokenInfo) -> serde_json::Value {
    let scopes: Vec<&str> = t.scopes.iter().map(Scope::as_str).collect();
    serde_json::json!({
        "id": t.id,
        "name": t.name,
        "scopes": scopes,
        "created": crate::time::rfc3339(t.created),
        "expires": t.expires.map(crate::time::rfc3339),
        "lastFour": t.last_four,
        "lastUsed": t.last_used.map(crate::time::rfc3339),
    })
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Invalid(m) => ApiError::new(Code::InvalidBody, m),
        TokenError::NotFound => ApiError::new(
            Code::TokenNotFound,
            "no API token has that id; list them with GET /v1/auth/tokens",
        ),
        TokenError::Refused(m) => ApiError::new(Code::InvalidBody, m),
        TokenError::Kube(e) => ApiError::from_kube(&e),
        TokenError::Random(e) => e.into(),
    }
}

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v1/auth/tokens",
        access: Access::Needs(Scope::Admin),
        handler: create,
    },
    Route {
        method: "GET",
        path: "/v1/auth/tokens",
        access: Access::Needs(Scope::Admin),
        handler: list,
    },
    Route {
        method: "DELETE",
        path: "/v1/auth/tokens/{id}",
        access: Access::Needs(Scope::Admin),
        handler: revoke,
    },
];
