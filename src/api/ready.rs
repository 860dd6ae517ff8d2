//! `GET /v1/ready`: the readiness probe. Unlike `/v1/health` (liveness, which never
//! looks past the process), it answers 200 only when this daemon can do its work: the
//! Kubernetes API answers, logins can be served (the password hash is loaded), and the
//! token signing key is loaded and the same as the stored one (so its tokens are
//! accepted by every controller). The body says whether the watch-fed view is in sync
//! (`cacheInSync`). Public, as probes need.

use super::{json_response, Access, ApiError, Code, Context, Identity, Route};
use crate::http::{Request, Response};

pub fn ready(ctx: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    let not_ready = |what: &str| {
        ApiError::new(Code::NotReady, format!("not ready: {what}")).with_header("Retry-After", "5")
    };
    if let Err(e) = ctx.kube.ping() {
        crate::log::warn("not ready", &[("kubernetes", e.to_string().into())]);
        return Err(not_ready(
            "the Kubernetes API does not answer (the daemon's log says why)",
        ));
    }
    // Reads the stored key now (loading it on first use): a daemon whose key differs
    // from the stored one would sign tokens the other controllers refuse.
    match ctx.keys.matches_stored() {
        Ok(true) => {}
        Ok(false) => {
            return Err(not_ready(
                "this daemon's token signing key differed from the one stored in Kubernetes \
                 (it was recreated or rotated); the daemon has re-read it, so retry",
            ))
        }
        Err(e) => {
            crate::log::warn("not ready", &[("signingKey", e.to_string().into())]);
            return Err(not_ready(
                "the token signing key is not loaded (the daemon's log says why)",
            ));
        }
    }
    if let Err(e) = ctx.passwords.current() {
        crate::log::warn("not ready", &[("passwordHash", e.to_string().into())]);
        return Err(not_ready(
            "the installer password hash cannot be read (the daemon's log says why)",
        ));
    }
    // Reads still work while the view syncs (they list live), so this is reported,
    // not refused.
    Ok(json_response(
        200,
        &serde_json::json!({"status": "ok", "cacheInSync": ctx.cache.in_sync()}),
    ))
}

pub(super) const ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/v1/ready",
    access: Access::Public,
    handler: ready,
}];
