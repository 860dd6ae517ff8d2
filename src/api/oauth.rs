//! `POST /oauth/token`: the OAuth 2.0 token endpoint (RFC 6749) for the `password` and
//! `refresh_token` grants, so standard OAuth2 client libraries can log in.
//!
//! Access tokens are our session JWTs, valid [`ACCESS_TTL_SECS`] (1 hour: shorter than a
//! JSON login's 24 hours, since a JWT cannot be revoked and the refresh token makes a
//! new one cheap). Refresh tokens rotate and are single-use; see
//! [`crate::auth::refresh`]. Clients are public (RFC 6749 §2.1): `client_id` is optional
//! and any value is accepted, by form field or HTTP Basic with an empty secret; a
//! client secret is refused, since joinery has no confidential clients.
//!
//! Errors use OAuth's own shape (§5.2), `{"error","error_description"}`, not joinery's
//! envelope, because OAuth2 libraries parse them. Every answer carries
//! `Cache-Control: no-store` and `Pragma: no-cache` (§5.1).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::session;
use super::{Access, ApiError, Context, Identity, Route};
use crate::auth::refresh::{RefreshError, REFRESH_TTL_SECS};
use crate::auth::throttle::Refusal;
use crate::auth::{jwt, password, Scope};
use crate::http::query::{self, Params};
use crate::http::{Request, Response};
use crate::time::now;

/// How long an access token from this endpoint is valid (the policy is in `auth::session`).
pub use crate::auth::session::ACCESS_TTL_SECS;
/// The only resource owner: the installer password belongs to `admin`.
pub const USERNAME: &str = "admin";

/// An RFC 6749 §5.2 error.
#[derive(Debug, PartialEq, Eq)]
struct OAuthError {
    status: u16,
    error: &'static str,
    description: String,
    /// Seconds for `Retry-After` (503s and throttled password guesses).
    retry_after: Option<u64>,
}

fn oauth_error(error: &'static str, description: impl Into<String>) -> OAuthError {
    let status = match error {
        "invalid_client" => 401,
        "temporarily_unavailable" => 503,
        "server_error" => 500,
        _ => 400,
    };
    OAuthError {
        status,
        error,
        description: description.into(),
        retry_after: (status == 503).then_some(5),
    }
}

impl OAuthError {
    /// From one of our own errors (Kubernetes down, an auth Secret unusable).
    fn from_api(e: ApiError) -> OAuthError {
        let error = if e.status() == 503 {
            "temporarily_unavailable"
        } else {
            "server_error"
        };
        oauth_error(error, e.message)
    }

    /// A password check the throttle refused: RFC 6749 has no code for it, so the
    /// status (429 or 503) and `Retry-After` carry the meaning, as in the JSON login.
    fn throttled(r: Refusal) -> OAuthError {
        OAuthError::throttled_as(session::refusal(r))
    }

    /// Like [`OAuthError::throttled`], for an address over its budget of bad refresh
    /// (bearer) tokens.
    fn bearer_throttled(r: Refusal) -> OAuthError {
        OAuthError::throttled_as(session::bearer_refusal(r))
    }

    fn throttled_as(api: ApiError) -> OAuthError {
        let secs = api
            .headers
            .iter()
            .find(|(n, _)| n == "Retry-After")
            .and_then(|(_, v)| v.parse().ok());
        OAuthError {
            status: api.status(),
            error: "temporarily_unavailable",
            description: api.message,
            retry_after: secs,
        }
    }

    fn into_response(self) -> Response {
        let mut resp = reply(
            self.status,
            &serde_json::json!({"error": self.error, "error_description": self.description}),
        );
        if self.status == 401 {
            resp.headers
                .push(("WWW-Authenticate".into(), r#"Basic realm="joinery""#.into()));
        }
        if let Some(secs) = self.retry_after {
            resp.headers.push(("Retry-After".into(), secs.to_string()));
        }
        resp
    }
}

/// A JSON answer with the no-store headers every token-endpoint answer needs (RFC 6749
/// §5.1 asks for `Pragma: no-cache` beside `Cache-Control: no-store`).
fn reply(status: u16, body: &serde_json::Value) -> Response {
    let mut resp = super::json_bytes_response(status, body.to_string().into_bytes());
    resp.headers.push(("Pragma".into(), "no-cache".into()));
    resp
}

pub fn token(ctx: &Context, req: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    Ok(match grant(ctx, req) {
        Ok(resp) => resp,
        Err(e) => {
            crate::log::audit("oauth.token", "", "", e.error, &[]);
            e.into_response()
        }
    })
}

fn grant(ctx: &Context, req: &Request) -> Result<Response, OAuthError> {
    let media = req
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(oauth_error(
            "invalid_request",
            "send the parameters as 'Content-Type: application/x-www-form-urlencoded'",
        ));
    }
    let form = parse_form(&req.body).map_err(|m| oauth_error("invalid_request", m))?;
    check_client(req.header("authorization"), &form)?;
    let wanted = match form.get("scope").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(parse_scope(s)?),
    };
    match form.get("grant_type").map(String::as_str) {
        Some("password") => password_grant(ctx, req, &form, wanted),
        Some("refresh_token") => refresh_grant(ctx, req, &form, wanted),
        Some(other) => Err(oauth_error(
            "unsupported_grant_type",
            format!(
                "grant_type {:?} is not supported; use \"password\" or \"refresh_token\"",
                other.chars().take(40).collect::<String>()
            ),
        )),
        None => Err(oauth_error(
            "invalid_request",
            "grant_type is missing; use \"password\" or \"refresh_token\"",
        )),
    }
}

fn password_grant(
    ctx: &Context,
    req: &Request,
    form: &BTreeMap<String, String>,
    wanted: Option<Scope>,
) -> Result<Response, OAuthError> {
    let (Some(username), Some(pw)) = (form.get("username"), form.get("password")) else {
        return Err(oauth_error(
            "invalid_request",
            "the password grant needs username and password",
        ));
    };
    let hash = ctx
        .passwords
        .current()
        .map_err(|e| OAuthError::from_api(e.to_api_error()))?;
    // Guesses here count against the same per-address budget as POST /v1/auth/token.
    let ip = session::client_ip(req);
    let attempt = ctx.throttle.check(ip).map_err(OAuthError::throttled)?;
    // The hash is checked even for a wrong username, so both cost the same time.
    let password_ok = !pw.is_empty() && password::verify_password(pw, &hash);
    if username != USERNAME || !password_ok {
        attempt.failed();
        return Err(oauth_error(
            "invalid_grant",
            "the username must be \"admin\" and the password the installer password",
        ));
    }
    attempt.succeeded();
    let scope = wanted.unwrap_or(Scope::Admin);
    let refresh = ctx.refresh.issue(USERNAME, scope, now()).map_err(refused)?;
    issue(ctx, USERNAME, scope, &refresh, "oauth.password")
}

fn refresh_grant(
    ctx: &Context,
    req: &Request,
    form: &BTreeMap<String, String>,
    wanted: Option<Scope>,
) -> Result<Response, OAuthError> {
    let Some(presented) = form.get("refresh_token") else {
        return Err(oauth_error(
            "invalid_request",
            "the refresh_token grant needs refresh_token",
        ));
    };
    // A refresh token can cost a Kubernetes GET: the same per-address budget of failed
    // bearer credentials as API tokens.
    let ip = session::client_ip(req);
    ctx.throttle
        .bearer_allowed(ip)
        .map_err(OAuthError::bearer_throttled)?;
    let rotated = ctx.refresh.rotate(presented, wanted, now());
    // Only tokens of our shape were looked up; others cost nothing.
    let looked_up = crate::auth::refresh::parse(presented).is_some();
    if looked_up
        && matches!(
            rotated,
            Err(RefreshError::Unknown | RefreshError::Reused | RefreshError::Expired)
        )
    {
        ctx.throttle.bearer_failed(ip);
    }
    let rotated = rotated.map_err(refused)?;
    let scope = wanted.unwrap_or(rotated.scope);
    issue(
        ctx,
        &rotated.subject,
        scope,
        &rotated.refresh_token,
        "oauth.refresh",
    )
}

/// What the client hears when a refresh token is refused or cannot be made.
fn refused(e: RefreshError) -> OAuthError {
    match e {
        RefreshError::Unknown => oauth_error(
            "invalid_grant",
            "the refresh token is unknown, expired or revoked; log in again",
        ),
        RefreshError::Expired => oauth_error(
            "invalid_grant",
            format!(
                "the refresh token expired (they last {} days); log in again",
                REFRESH_TTL_SECS / 86_400
            ),
        ),
        RefreshError::Reused => oauth_error(
            "invalid_grant",
            "the refresh token was already used, so every token from that login is \
             revoked; log in again",
        ),
        RefreshError::Scope(granted) => oauth_error(
            "invalid_scope",
            format!("this refresh token was granted only the '{granted}' scope"),
        ),
        RefreshError::Kube(e) => OAuthError::from_api(ApiError::from_kube(&e)),
        RefreshError::Random(e) => OAuthError::from_api(e.into()),
    }
}

/// Signs the access token and writes the §5.1 answer.
fn issue(
    ctx: &Context,
    subject: &str,
    scope: Scope,
    refresh: &str,
    action: &str,
) -> Result<Response, OAuthError> {
    let key = ctx
        .keys
        .get()
        .map_err(|e| OAuthError::from_api(e.to_api_error()))?;
    let now = now();
    let claims = crate::auth::session::claims(subject, scope, now, ACCESS_TTL_SECS)
        .map_err(|e| OAuthError::from_api(e.into()))?;
    let access = jwt::sign(key.as_bytes(), &claims);
    crate::log::audit(
        action,
        subject,
        subject,
        "ok",
        &[("scope", scope.as_str().into())],
    );
    let mut resp = reply(
        200,
        &serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ACCESS_TTL_SECS,
            "refresh_token": refresh,
            "scope": scope.as_str(),
        }),
    );
    resp.subject = Some(subject.to_string());
    Ok(resp)
}

/// A space-separated scope list (§3.3) to the one scope it amounts to.
fn parse_scope(s: &str) -> Result<Scope, OAuthError> {
    let mut best: Option<Scope> = None;
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let scope = Scope::parse(word).ok_or_else(|| {
            oauth_error(
                "invalid_scope",
                "the scopes are \"admin\" (everything) and \"read\" (read-only endpoints)",
            )
        })?;
        best = Some(match best {
            Some(Scope::Admin) => Scope::Admin,
            _ => scope,
        });
    }
    best.ok_or_else(|| oauth_error("invalid_scope", "the scope parameter names no scope"))
}

/// Public clients only: any `client_id`, from the form or HTTP Basic, with no secret.
fn check_client(
    authorization: Option<&str>,
    form: &BTreeMap<String, String>,
) -> Result<(), OAuthError> {
    if form.get("client_secret").is_some_and(|s| !s.is_empty()) {
        return Err(oauth_error(
            "invalid_client",
            "joinery has no confidential clients: send client_id without client_secret",
        ));
    }
    let Some(header) = authorization else {
        return Ok(());
    };
    let bad = || {
        oauth_error(
            "invalid_client",
            "client authentication must be HTTP Basic with a client id and an empty secret, \
             or none",
        )
    };
    let (scheme, rest) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    // §2.3.1: the id and secret are form-urlencoded inside Basic.
    let id = query::decode_component(id).map_err(|_| bad())?;
    if !secret.is_empty() {
        return Err(oauth_error(
            "invalid_client",
            "joinery has no confidential clients: send the client id with an empty secret",
        ));
    }
    if form.get("client_id").is_some_and(|f| *f != id) {
        return Err(oauth_error(
            "invalid_request",
            "client_id in the body differs from the one in the Authorization header",
        ));
    }
    Ok(())
}

/// Parses an `application/x-www-form-urlencoded` body with the shared query parser: a
/// parameter given twice is an error (§3.1), unknown ones are kept and ignored (§3.2).
fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let params = Params::parse_form(text).map_err(|e| e.message())?;
    Ok(params
        .pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

pub(super) const ROUTES: &[Route] = &[Route {
    method: "POST",
    path: "/oauth/token",
    access: Access::Public,
    handler: token,
}];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Body;

    fn form(s: &str) -> Result<BTreeMap<String, String>, String> {
        parse_form(s.as_bytes())
    }

    #[test]
    fn forms_decode() {
        let f = form("grant_type=password&username=admin&password=P%23%24%24w0rd+x%2B").unwrap();
        assert_eq!(f["grant_type"], "password");
        assert_eq!(f["password"], "P#$$w0rd x+");
        assert_eq!(form("a=&b").unwrap()["b"], "");
        assert_eq!(form("").unwrap().len(), 0);
        assert_eq!(form("x=%C3%A9").unwrap()["x"], "é");
        for bad in ["a=1&a=2", "a=%", "a=%4", "a=%zz", "a=%FF", "a=%C3"] {
            assert!(form(bad).is_err(), "{bad}");
        }
        assert!(parse_form(b"a=\xff").is_err());
    }

    #[test]
    fn scopes() {
        let ok = |s: &str| parse_scope(s).unwrap();
        assert_eq!(ok("admin"), Scope::Admin);
        assert_eq!(ok("read"), Scope::Read);
        assert_eq!(ok("read admin"), Scope::Admin);
        assert_eq!(ok("admin  read"), Scope::Admin);
        for bad in ["write", "Admin", "read,admin", " "] {
            assert_eq!(
                parse_scope(bad).unwrap_err().error,
                "invalid_scope",
                "{bad}"
            );
        }
    }

    #[test]
    fn public_clients_only() {
        let empty = BTreeMap::new();
        let basic = |s: &str| format!("Basic {}", STANDARD.encode(s));
        let check = |h: Option<&str>, f: &BTreeMap<String, String>| check_client(h, f);
        assert!(check(None, &empty).is_ok());
        assert!(check(Some(&basic("cli:")), &empty).is_ok());
        assert!(check(
            Some(&basic("my%20cli:")),
            &form("client_id=my+cli").unwrap()
        )
        .is_ok());
        for (h, f, code, status) in [
            (Some(basic("cli:secret")), "", "invalid_client", 401),
            (Some("Bearer abc".to_string()), "", "invalid_client", 401),
            (Some("Basic !!!".to_string()), "", "invalid_client", 401),
            (Some(basic("no-colon")), "", "invalid_client", 401),
            (None, "client_secret=s", "invalid_client", 401),
            (Some(basic("a:")), "client_id=b", "invalid_request", 400),
        ] {
            let e = check(h.as_deref(), &form(f).unwrap()).unwrap_err();
            assert_eq!((e.error, e.status), (code, status), "{h:?} {f}");
        }
    }

    #[test]
    fn errors_have_the_oauth_shape_and_no_store() {
        let resp = oauth_error("invalid_client", "x").into_response();
        assert_eq!(resp.status, 401);
        let has = |n: &str, v: &str| resp.headers.iter().any(|(a, b)| a == n && b == v);
        assert!(has("Cache-Control", "no-store") && has("Pragma", "no-cache"));
        assert!(has("WWW-Authenticate", r#"Basic realm="joinery""#));
        let Body::Bytes(b) = &resp.body else {
            panic!("a JSON body")
        };
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        assert_eq!(v["error"], "invalid_client");
        assert_eq!(v["error_description"], "x");
        assert!(v.get("message").is_none());
    }
}
