//! The one error envelope: `{"error":"<stable_snake_code>","message":"<sentence>"}`.
//!
//! Every failure a handler can answer is an [`ApiError`]. Codes are stable (scripts match
//! on them); messages are sentences a person can act on. A 5xx message stays generic and
//! the detail goes to the log, so nothing internal (let alone a secret) reaches a client.

use crate::auth::store::StoreError;
use crate::http::{Body, Response};
use crate::kube;

/// A failed request, ready to become a response.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> ApiError {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message)
    }

    /// 401 with the `WWW-Authenticate` challenge of RFC 6750.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        let challenge = if code == "missing_token" {
            r#"Bearer realm="joinery""#
        } else {
            r#"Bearer realm="joinery", error="invalid_token""#
        };
        ApiError::new(401, code, message).with_header("WWW-Authenticate", challenge)
    }

    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            404,
            "not_found",
            // The path is client text (up to the 8 KiB URL cap): quoted in part only.
            format!(
                "no endpoint at {}; see the API reference in docs/api.md",
                crate::log::clip(path)
            ),
        )
    }

    pub fn method_not_allowed(method: &str, allow: &str) -> ApiError {
        ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not supported here; use {allow}"),
        )
        .with_header("Allow", allow)
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            415,
            "unsupported_media_type",
            "send the body as JSON with the header 'Content-Type: application/json'",
        )
    }

    /// A bug or an unexpected state: the client learns nothing internal.
    pub fn internal() -> ApiError {
        ApiError::new(
            500,
            "internal_error",
            "joinery hit an internal error; the daemon's log has the details",
        )
    }

    /// Maps a Kubernetes failure to what the client of joinery should hear.
    ///
    /// Handlers that expect a particular failure (a missing node, say) match it first;
    /// whatever reaches this function is the Kubernetes API misbehaving from the point
    /// of view of our client.
    pub fn from_kube(err: &kube::Error) -> ApiError {
        use kube::Error as K;
        crate::metrics::global().kube_error(err);
        crate::log::warn(
            "kubernetes call failed",
            &[("error", err.to_string().into())],
        );
        match err {
            K::Unavailable(_) => ApiError::new(
                503,
                "kubernetes_unavailable",
                "the Kubernetes API did not answer in time; check that the API server is \
                 running, then try again",
            )
            .with_header("Retry-After", "5"),
            K::TooManyRequests { retry_after } => ApiError::new(
                503,
                "kubernetes_unavailable",
                "the Kubernetes API is throttling requests; try again shortly",
            )
            .with_header("Retry-After", retry_after.unwrap_or(5).to_string()),
            K::Unauthorized => ApiError::new(
                502,
                "kubernetes_unauthorized",
                "the Kubernetes API refused joinery's credentials; check the service account \
                 token or the kubeconfig joinery was started with",
            ),
            // The API server's text names joinery's service account and the permission:
            // logged above, never sent (5xx bodies stay generic).
            K::Forbidden { .. } => ApiError::new(
                502,
                "kubernetes_forbidden",
                "joinery lacks a Kubernetes permission it needs; the daemon's log names it; \
                 grant it, e.g. with scripts/rbac.yaml",
            ),
            K::Config(_)
            | K::NotFound
            | K::AlreadyExists
            | K::Conflict
            | K::Gone
            | K::Invalid(_)
            | K::Protocol(_) => ApiError::new(
                502,
                "kubernetes_error",
                "the Kubernetes API gave an answer joinery did not expect; the daemon's log \
                 has the details",
            ),
        }
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        let mut resp = json_response(self.status, &body);
        resp.headers.extend(self.headers);
        resp
    }
}

/// A JSON response with the given status.
pub fn json_response(status: u16, value: &impl serde::Serialize) -> Response {
    // Serializing our own plain structs cannot fail; fall back to an empty object anyway.
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    json_bytes_response(status, bytes)
}

/// [`json_response`] for a JSON document already serialised (a newline is added).
pub fn json_bytes_response(status: u16, mut bytes: Vec<u8>) -> Response {
    bytes.push(b'\n');
    Response {
        status,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: Body::Bytes(bytes),
        subject: None,
    }
}

/// Every endpoint's query refusals: 400 with the parser's own code and sentence.
impl From<crate::http::query::QueryError> for ApiError {
    fn from(e: crate::http::query::QueryError) -> ApiError {
        ApiError::bad_request(e.code(), e.message())
    }
}

// The auth layer never speaks in API errors; its errors are translated here.
impl StoreError {
    /// What a client hears: Kubernetes trouble as usual, a missing or broken secret as 503
    /// (the daemon is not ready to authenticate anyone) with the detail in the log.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            StoreError::Kube(e) => ApiError::from_kube(e),
            StoreError::Missing(m) | StoreError::Corrupt(m) => {
                crate::log::error("auth secret unusable", &[("detail", m.as_str().into())]);
                ApiError::new(
                    503,
                    "auth_unavailable",
                    "joinery cannot check credentials right now: an auth secret is missing or \
                     unusable; the daemon's log says which",
                )
            }
        }
    }
}
