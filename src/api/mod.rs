//! The API's routes and handlers.
//!
//! [`Api`] is the [`Handler`] the HTTP server calls. It finds the route, checks the
//! caller's token when the route needs one, and runs the handler. Handlers take the
//! shared [`Context`] and the parsed [`Request`] and return a [`Response`] or an
//! [`ApiError`]; they never touch a socket. One file per area of the API.

mod error;
mod meta;
mod nodes;
mod session;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::{json_response, ApiError};

use crate::auth::store::{PasswordHashes, SigningKeys};
use crate::auth::{self, jwt, Scope};
use crate::http::{Handler, Request, Response};
use crate::kube;

/// The audience and issuer of session tokens.
pub const SESSION_AUDIENCE: &str = "joinery";

/// What every handler shares: the Kubernetes client and the auth state.
pub struct Context {
    pub kube: kube::Client,
    pub passwords: PasswordHashes,
    pub keys: SigningKeys,
}

/// Who made a request, once their token checked out.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub scope: Scope,
}

/// What a route needs from the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    Needs(Scope),
}

type HandlerFn = fn(&Context, &Request, Option<&Identity>) -> Result<Response, ApiError>;

/// One row of the routing table. `path` segments written `{name}` match any one segment.
struct Route {
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: HandlerFn,
}

const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/health",
        access: Access::Public,
        handler: meta::health,
    },
    Route {
        method: "GET",
        path: "/v1/version",
        access: Access::Public,
        handler: meta::version,
    },
    Route {
        method: "POST",
        path: "/v1/auth/token",
        access: Access::Public,
        handler: session::login,
    },
    Route {
        method: "GET",
        path: "/v1/nodes",
        access: Access::Needs(Scope::Read),
        handler: nodes::list,
    },
];

/// The HTTP handler of the whole API.
pub struct Api {
    ctx: Arc<Context>,
}

impl Api {
    pub fn new(ctx: Arc<Context>) -> Api {
        Api { ctx }
    }

    fn dispatch(&self, req: &Request) -> Result<Response, ApiError> {
        // HEAD is served as GET; the server drops the body.
        let method = if req.method == "HEAD" {
            "GET"
        } else {
            req.method.as_str()
        };
        let matching: Vec<&Route> = ROUTES
            .iter()
            .filter(|r| path_matches(r.path, &req.path))
            .collect();
        let Some(route) = matching.iter().find(|r| r.method == method) else {
            if matching.is_empty() {
                return Err(ApiError::not_found(&req.path));
            }
            let mut allow: Vec<&str> = matching.iter().map(|r| r.method).collect();
            if allow.contains(&"GET") {
                allow.push("HEAD");
            }
            return Err(ApiError::method_not_allowed(&req.method, &allow.join(", ")));
        };
        let identity = match route.access {
            Access::Public => None,
            Access::Needs(scope) => {
                let id = authenticate(&self.ctx, req)?;
                if !id.scope.allows(scope) {
                    return Err(ApiError::new(
                        403,
                        "insufficient_scope",
                        format!(
                            "this token has the '{}' scope and this endpoint needs '{}'",
                            id.scope.as_str(),
                            scope.as_str()
                        ),
                    ));
                }
                Some(id)
            }
        };
        let mut resp = (route.handler)(&self.ctx, req, identity.as_ref())?;
        resp.subject = identity.map(|i| i.subject);
        Ok(resp)
    }
}

impl Handler for Api {
    fn handle(&self, req: Request) -> Response {
        match self.dispatch(&req) {
            Ok(resp) => resp,
            Err(err) => err.into_response(),
        }
    }
}

/// Checks the bearer token of a request.
fn authenticate(ctx: &Context, req: &Request) -> Result<Identity, ApiError> {
    let Some(header) = req.header("authorization") else {
        return Err(ApiError::unauthorized(
            "missing_token",
            "this endpoint needs a token: get one from POST /v1/auth/token and send it as \
             'Authorization: Bearer TOKEN'",
        ));
    };
    let Some(token) = auth::bearer_token(header) else {
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the Authorization header must be 'Bearer TOKEN'",
        ));
    };
    let key = ctx.keys.get().map_err(|e| e.to_api_error())?;
    let claims = jwt::verify(key.as_bytes(), token, SESSION_AUDIENCE, now()).map_err(|e| {
        ApiError::unauthorized(
            "invalid_token",
            format!("the token was refused ({e}); log in again with POST /v1/auth/token"),
        )
    })?;
    let scope = Scope::parse(&claims.scope).ok_or_else(|| {
        ApiError::unauthorized("invalid_token", "the token carries no scope joinery knows")
    })?;
    Ok(Identity {
        subject: claims.sub,
        scope,
    })
}

/// Whether a route pattern such as `/v1/nodes/{name}` matches a request path.
fn path_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// Parses a JSON request body into `T`.
///
/// The message never quotes serde's text, which can echo the offending value (a
/// password sent as a number, say); it names the expected shape and the position.
fn json_body<T: serde::de::DeserializeOwned>(req: &Request, shape: &str) -> Result<T, ApiError> {
    let content_type = req.header("content-type").unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::unsupported_media_type());
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        let at = if e.line() > 0 {
            format!(" (problem at line {}, column {})", e.line(), e.column())
        } else {
            String::new()
        };
        ApiError::bad_request(
            "invalid_body",
            format!("the body must be a JSON object of the form {shape}{at}"),
        )
    })
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::path_matches;

    #[test]
    fn route_patterns() {
        for (pattern, path, expected) in [
            ("/v1/nodes", "/v1/nodes", true),
            ("/v1/nodes", "/v1/nodes/", false),
            ("/v1/nodes/{name}", "/v1/nodes/n1", true),
            ("/v1/nodes/{name}", "/v1/nodes/", false),
            ("/v1/nodes/{name}", "/v1/nodes/n1/drain", false),
            ("/v1/nodes/{name}/drain", "/v1/nodes/n1/drain", true),
            ("/v1/health", "/v1/healthz", false),
        ] {
            assert_eq!(path_matches(pattern, path), expected, "{pattern} vs {path}");
        }
    }
}
