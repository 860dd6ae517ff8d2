//! `POST /v1/auth/token`: the installer password in, a 24-hour session JWT out.

use serde::Deserialize;

use super::{
    json_body, json_response, now, Access, ApiError, Context, Identity, Route, SESSION_AUDIENCE,
};
use crate::auth::{jwt, password, Scope};
use crate::http::{Request, Response};

/// How long a session token lives.
pub const SESSION_TTL_SECS: i64 = 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    password: String,
}

pub fn login(ctx: &Context, req: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let body: Login = json_body(req, r#"{"password": "<installer password>"}"#)?;
    if body.password.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the password must not be empty",
        ));
    }
    let hash = ctx.passwords.current().map_err(|e| e.to_api_error())?;
    if !password::verify_password(&body.password, &hash) {
        return Err(ApiError::unauthorized(
            "invalid_password",
            "the password is not the installer password of this cluster",
        ));
    }
    let key = ctx.keys.get().map_err(|e| e.to_api_error())?;
    let token = jwt::sign(
        key.as_bytes(),
        &session_claims("admin", Scope::Admin, now()),
    );
    let mut resp = json_response(200, &serde_json::json!({ "token": token }));
    resp.subject = Some("admin".into());
    Ok(resp)
}

/// The claims of a session token for `subject`.
pub fn session_claims(subject: &str, scope: Scope, now: i64) -> jwt::Claims {
    jwt::Claims {
        iss: SESSION_AUDIENCE.into(),
        sub: subject.into(),
        aud: SESSION_AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp: now + SESSION_TTL_SECS,
        jti: jwt::random_id(),
        scope: scope.as_str().into(),
        roles: Vec::new(),
    }
}

pub(super) const ROUTES: &[Route] = &[Route {
    method: "POST",
    path: "/v1/auth/token",
    access: Access::Public,
    handler: login,
}];
