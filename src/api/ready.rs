//! `GET /v1/ready`: the readiness probe. Unlike `/v1/health` (liveness, which never
//! looks past the process), it answers 200 only when this daemon can do its work: the
//! Kubernetes API answers and the token signing key is loaded. Public, as probes need.

use super::{json_response, Access, ApiError, Context, Identity, Route};
use crate::http::{Request, Response};

pub fn ready(ctx: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let not_ready = |what: &str| {
        ApiError::new(503, "not_ready", format!("not ready: {what}"))
            .with_header("Retry-After", "5")
    };
    if let Err(e) = ctx.kube.ping() {
        crate::log::warn("not ready", &[("kubernetes", e.to_string().into())]);
        return Err(not_ready(
            "the Kubernetes API does not answer (the daemon's log says why)",
        ));
    }
    // Loads the key on first use (it may not have been loadable at start-up).
    if let Err(e) = ctx.keys.get() {
        crate::log::warn("not ready", &[("signingKey", e.to_string().into())]);
        return Err(not_ready(
            "the token signing key is not loaded (the daemon's log says why)",
        ));
    }
    Ok(json_response(200, &serde_json::json!({"status": "ok"})))
}

pub(super) const ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/v1/ready",
    access: Access::Public,
    handler: ready,
}];
