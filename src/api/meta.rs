//! `GET /v1/health` and `GET /v1/version`: unauthenticated, and independent of Kubernetes
//! so a liveness probe never fails because the API server is slow.

use super::{json_response, Access, ApiError, Context, Identity, Route};
use crate::http::{Request, Response};
use crate::version;

pub fn health(_: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    /// A struct, not `json!`: no map is built per check (probes call this often).
    #[derive(serde::Serialize)]
    struct Health {
        status: &'static str,
    }
    Ok(json_response(200, &Health { status: "ok" }))
}

pub fn version(_: &Context, _: &Request, _: Option<&Identity>) -> Result<Response, ApiError> {
    /// Field order as in the seed document.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Version {
        version: &'static str,
        commit: &'static str,
        build_date: &'static str,
    }
    Ok(json_response(
        200,
        &Version {
            version: version::VERSION,
            commit: version::COMMIT,
            build_date: version::BUILD_DATE,
        },
    ))
}

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/health",
        access: Access::Public,
        handler: health,
    },
    Route {
        method: "GET",
        path: "/v1/version",
        access: Access::Public,
        handler: version,
    },
];
