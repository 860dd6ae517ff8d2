//! The one error envelope: `{"error":"<stable_snake_code>","message":"<sentence>"}`.
//!
//! Every failure a handler can answer is an [`ApiError`]. Codes are stable (scripts match
//! on them) and all listed in [`Code`], the catalogue, which fixes each one's status;
//! messages are sentences a person can act on. A 5xx message stays generic and the
//! detail goes to the log, so nothing internal (let alone a secret) reaches a client.

use crate::auth::store::StoreError;
use crate::http::{Body, Response};
use crate::kube;

/// Declares [`Code`] with its exhaustive `status()` and `code()` from one table, so a
/// code cannot exist without its status or be left out of `Code::ALL` (the
/// tests' list of every code).
macro_rules! catalogue {
    ($($(#[doc = $doc:literal])* $variant:ident = $status:literal, $code:literal;)*) => {
        /// Every code of the error envelope, the HTTP server's own refusals included
        /// ([`crate::http::parse::Reject`] and [`crate::http::query::QueryError`] answer
        /// with the same codes and statuses; a test checks). docs/api.md ("Error codes")
        /// and the `Error` schema of openapi.yaml list exactly these (tests below).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[cfg_attr(not(test), expect(dead_code, reason = "the HTTP server's own refusals \
            (http::parse::Reject, http::query::QueryError) answer with these codes without \
            naming them, since the HTTP layer knows nothing of the API; they stay in the \
            catalogue so that its tests hold them to the same status and to the docs"))]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// Every code, in the catalogue's order.
            #[cfg(test)]
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The HTTP status this code is always answered with.
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// The stable snake_case code scripts match on.
            pub fn code(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }
        }
    };
}

catalogue! {
    // 400: the request is wrong; the message says what to send instead.
    /// The HTTP server could not parse the request.
    BadRequest = 400, "bad_request";
    /// A Content-Length header that is not one non-negative number.
    BadContentLength = 400, "bad_content_length";
    /// Both Transfer-Encoding and Content-Length.
    ConflictingFraming = 400, "conflicting_framing";
    /// A chunked body that breaks the chunked grammar.
    BadChunkedBody = 400, "bad_chunked_body";
    /// An HTTP/1.1 request without exactly one Host header.
    BadHost = 400, "bad_host";
    /// A JSON body that is malformed or has the wrong fields.
    InvalidBody = 400, "invalid_body";
    /// A query string that is malformed, repeats a key or has a bad value.
    InvalidQuery = 400, "invalid_query";
    /// A query parameter the endpoint does not take.
    UnknownParameter = 400, "unknown_parameter";
    /// Roles that are not in the Embedded Cluster config, or none.
    InvalidRoles = 400, "invalid_roles";
    /// A `GET /v1/flux/nodes` filter with a bad value.
    InvalidFilter = 400, "invalid_filter";
    /// A scope other than `admin` or `read`.
    InvalidScope = 400, "invalid_scope";
    /// A node name that is not a Kubernetes name.
    InvalidNodeName = 400, "invalid_node_name";
    /// A drain deadline outside 0..3600 seconds.
    InvalidDeadline = 400, "invalid_deadline";
    /// A join id that is not 32 lowercase hex digits.
    InvalidJoinId = 400, "invalid_join_id";
    // 401: who is asking is unknown.
    /// No bearer token.
    MissingToken = 401, "missing_token";
    /// A token that is malformed, forged, expired or revoked.
    InvalidToken = 401, "invalid_token";
    /// Not the installer password.
    InvalidPassword = 401, "invalid_password";
    // 403: known, and not allowed.
    /// The token's scope does not cover the endpoint.
    InsufficientScope = 403, "insufficient_scope";
    /// A local-socket caller other than `--socket-uid`.
    LocalUserRefused = 403, "local_user_refused";
    /// The license does not allow more than one node.
    LicenseNotMultiNode = 403, "license_not_multi_node";
    /// A join token used for other roles than its own.
    RolesMismatch = 403, "roles_mismatch";
    /// A label key joinery or Kubernetes owns.
    ProtectedLabel = 403, "protected_label";
    // 404, 405: nothing there.
    /// No endpoint at this path.
    NotFound = 404, "not_found";
    /// No node of that name.
    NodeNotFound = 404, "node_not_found";
    /// No API token with that id.
    TokenNotFound = 404, "token_not_found";
    /// No join with that id (finished joins are kept 7 days).
    JoinNotFound = 404, "join_not_found";
    /// The path exists, the method does not.
    MethodNotAllowed = 405, "method_not_allowed";
    /// The head or body did not arrive in time.
    RequestTimeout = 408, "request_timeout";
    // 409: the cluster's state forbids it now.
    /// No controller is Ready, so no node can join yet.
    NoReadyController = 409, "no_ready_controller";
    /// The node this joinery runs on cannot remove itself.
    NodeIsSelf = 409, "node_is_self";
    /// Removing a node that is not drained (without `force=true`).
    NodeNotDrained = 409, "node_not_drained";
    /// Removing this controller would leave etcd without quorum.
    WouldLoseQuorum = 409, "would_lose_quorum";
    /// Revoking a join that already expired or joined.
    JoinFinished = 409, "join_finished";
    /// The object kept changing under a read-modify-write; try again.
    Conflict = 409, "conflict";
    /// A resume of a join's bundle whose artifacts changed since the download started.
    BundleChanged = 409, "bundle_changed";
    // 410: a join token that worked, or could have, and no longer does.
    /// This join command was already used.
    JoinTokenUsed = 410, "join_token_used";
    /// This join command expired.
    JoinTokenExpired = 410, "join_token_expired";
    /// This join command was revoked.
    JoinRevoked = 410, "join_revoked";
    // 413-431: over the HTTP server's limits.
    /// A body over the server's limit.
    BodyTooLarge = 413, "body_too_large";
    /// A request target over the URL limit.
    UriTooLong = 414, "uri_too_long";
    /// A body that is not JSON where JSON is wanted.
    UnsupportedMediaType = 415, "unsupported_media_type";
    /// A byte range outside the bundle.
    RangeNotSatisfiable = 416, "range_not_satisfiable";
    /// An `Expect` other than `100-continue`.
    ExpectationFailed = 417, "expectation_failed";
    /// A label that is not valid Kubernetes label syntax.
    InvalidLabel = 422, "invalid_label";
    /// The Flux inputs would be over the operator's 900 KiB limit.
    InputsTooLarge = 422, "inputs_too_large";
    /// Too many wrong passwords from this address; wait `Retry-After`.
    TooManyAttempts = 429, "too_many_attempts";
    /// A request head over the server's limit.
    HeadersTooLarge = 431, "headers_too_large";
    /// More headers than the server takes.
    TooManyHeaders = 431, "too_many_headers";
    // 5xx: joinery or what it depends on failed; the log has the detail.
    /// A bug; the daemon's log has the details.
    InternalError = 500, "internal_error";
    /// A method longer than any joinery implements.
    MethodNotImplemented = 501, "method_not_implemented";
    /// A transfer coding other than `chunked`.
    UnsupportedTransferEncoding = 501, "unsupported_transfer_encoding";
    /// The Kubernetes API refused joinery's credentials.
    KubernetesUnauthorized = 502, "kubernetes_unauthorized";
    /// joinery lacks a Kubernetes permission.
    KubernetesForbidden = 502, "kubernetes_forbidden";
    /// The Kubernetes API answered something joinery did not expect.
    KubernetesError = 502, "kubernetes_error";
    /// The Kubernetes API is down, slow or throttling.
    KubernetesUnavailable = 503, "kubernetes_unavailable";
    /// Every connection slot is taken.
    ServerBusy = 503, "server_busy";
    /// Every password-check slot stayed busy.
    Busy = 503, "busy";
    /// The password or signing-key Secret is missing or unusable.
    AuthUnavailable = 503, "auth_unavailable";
    /// Started without the join inputs.
    JoinsNotConfigured = 503, "joins_not_configured";
    /// joinery does not know which address to put in a join command.
    AddressUnknown = 503, "address_unknown";
    /// An artifact is not the file joinery scanned at start-up; restart joinery.
    ArtifactsChanged = 503, "artifacts_changed";
    /// A readiness check failed.
    NotReady = 503, "not_ready";
    /// The daemon is stopping.
    ShuttingDown = 503, "shutting_down";
    /// A node did not leave etcd in time.
    EtcdLeaveTimeout = 504, "etcd_leave_timeout";
    /// A wait ended before the node reached the state asked for.
    WaitTimeout = 504, "wait_timeout";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A failed request, ready to become a response.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The HTTP status, fixed by the code.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> ApiError {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// 401 with the `WWW-Authenticate` challenge of RFC 6750.
    pub fn unauthorized(code: Code, message: impl Into<String>) -> ApiError {
        debug_assert_eq!(code.status(), 401, "{code:?} is not a 401");
        let challenge = if code == Code::MissingToken {
            r#"Bearer realm="joinery""#
        } else {
            r#"Bearer realm="joinery", error="invalid_token""#
        };
        ApiError::new(code, message).with_header("WWW-Authenticate", challenge)
    }

    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            Code::NotFound,
            // The path is client text (up to the 8 KiB URL cap): quoted in part only.
            format!(
                "no endpoint at {}; see the API reference in docs/api.md",
                crate::log::clip(path)
            ),
        )
    }

    pub fn method_not_allowed(method: &str, allow: &str) -> ApiError {
        ApiError::new(
            Code::MethodNotAllowed,
            format!("{method} is not supported here; use {allow}"),
        )
        .with_header("Allow", allow)
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            Code::UnsupportedMediaType,
            "send the body as JSON with the header 'Content-Type: application/json'",
        )
    }

    /// A bug or an unexpected state: the client learns nothing internal.
    pub fn internal() -> ApiError {
        ApiError::new(
            Code::InternalError,
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
                Code::KubernetesUnavailable,
                "the Kubernetes API did not answer in time; check that the API server is \
                 running, then try again",
            )
            .with_header("Retry-After", "5"),
            K::TooManyRequests { retry_after } => ApiError::new(
                Code::KubernetesUnavailable,
                "the Kubernetes API is throttling requests; try again shortly",
            )
            .with_header("Retry-After", retry_after.unwrap_or(5).to_string()),
            K::Unauthorized => ApiError::new(
                Code::KubernetesUnauthorized,
                "the Kubernetes API refused joinery's credentials; check the service account \
                 token or the kubeconfig joinery was started with",
            ),
            // The API server's text names joinery's service account and the permission:
            // logged above, never sent (5xx bodies stay generic).
            K::Forbidden { .. } => ApiError::new(
                Code::KubernetesForbidden,
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
                Code::KubernetesError,
                "the Kubernetes API gave an answer joinery did not expect; the daemon's log \
                 has the details",
            ),
        }
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code.code(), "message": self.message});
        let mut resp = json_response(self.status(), &body);
        resp.headers.extend(self.headers);
        resp
    }
}

/// A JSON response with the given status.
pub fn json_response(status: u16, value: &impl serde::Serialize) -> Response {
    // Serializing our own plain structs cannot fail; fall back to an empty object anyway.
    // Room for a small document and its newline up front: growing from empty cost a
    // few reallocations per response.
    let mut bytes = Vec::with_capacity(256);
    if serde_json::to_writer(&mut bytes, value).is_err() {
        bytes = b"{}".to_vec();
    }
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
/// No randomness at request time: a 500 with the cause in the log (see `random.rs`).
impl From<crate::random::Unavailable> for ApiError {
    fn from(e: crate::random::Unavailable) -> ApiError {
        crate::log::error("request failed", &[("error", e.to_string().into())]);
        ApiError::internal()
    }
}

impl From<crate::http::query::QueryError> for ApiError {
    fn from(e: crate::http::query::QueryError) -> ApiError {
        ApiError::new(query_code(&e), e.message())
    }
}

/// The catalogue's code for a query refusal (the same string `e.code()` gives; a test
/// checks).
fn query_code(e: &crate::http::query::QueryError) -> Code {
    use crate::http::query::QueryError as Q;
    match e {
        Q::Unknown { .. } => Code::UnknownParameter,
        Q::Malformed | Q::NotUtf8 | Q::Repeated(_) | Q::Invalid { .. } => Code::InvalidQuery,
    }
}

// The auth layer never speaks in API errors; its errors are translated here.
impl StoreError {
    /// What a client hears: Kubernetes trouble as usual, a missing or broken secret as 503
    /// (the daemon is not ready to authenticate anyone) with the detail in the log.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            StoreError::Kube(e) => ApiError::from_kube(e),
            StoreError::Random(e) => e.clone().into(),
            StoreError::Missing(m) | StoreError::Corrupt(m) => {
                crate::log::error("auth secret unusable", &[("detail", m.as_str().into())]);
                ApiError::new(
                    Code::AuthUnavailable,
                    "joinery cannot check credentials right now: an auth secret is missing or \
                     unusable; the daemon's log says which",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The catalogue against what answers with it (the HTTP server's refusals) and what
    //! documents it (docs/api.md, openapi.yaml, and every status-and-code pair the docs
    //! mention).

    use std::collections::{BTreeMap, BTreeSet};

    use super::Code;
    use crate::http::parse::Reject;
    use crate::http::query::QueryError;

    fn catalogue() -> BTreeMap<&'static str, u16> {
        Code::ALL.iter().map(|c| (c.code(), c.status())).collect()
    }

    fn repo_file(rel: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The codes of `POST /oauth/token`'s own error shape (RFC 6749), not the envelope.
    fn oauth_codes() -> BTreeSet<String> {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(super::super::observe::OPENAPI_YAML).unwrap();
        doc["components"]["schemas"]["OAuthError"]["properties"]["error"]["enum"]
            .as_sequence()
            .expect("OAuthError.error has an enum")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn codes_are_unique_snake_case_with_an_error_status() {
        let mut seen = BTreeSet::new();
        for c in Code::ALL {
            let code = c.code();
            assert!(seen.insert(code), "{code} is in the catalogue twice");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code} is not snake_case"
            );
            assert!((400..600).contains(&c.status()), "{code}: {}", c.status());
            assert_eq!(c.to_string(), code);
        }
    }

    /// Each refusal of the HTTP server answers a catalogue code with its status.
    #[test]
    fn the_http_servers_refusals_are_catalogue_codes() {
        // Reject::ALL lists every variant once (parse.rs's tests make sure of that).
        let all = Reject::ALL;
        let cat = catalogue();
        for r in &all {
            assert_eq!(
                cat.get(r.code()),
                Some(&r.status()),
                "{r:?} answers {} {}",
                r.status(),
                r.code()
            );
        }
    }

    #[test]
    fn query_refusals_are_catalogue_codes() {
        let all = [
            QueryError::Malformed,
            QueryError::NotUtf8,
            QueryError::Repeated("a".into()),
            QueryError::Unknown {
                keys: vec!["a".into()],
                known: &["b"],
            },
            QueryError::Invalid {
                key: "a".into(),
                expected: "b",
            },
        ];
        for e in all {
            let code = super::query_code(&e);
            assert_eq!((code.code(), code.status()), (e.code(), 400), "{e:?}");
        }
    }

    /// docs/api.md's "Error codes" table is the catalogue: every code, its status, no other.
    #[test]
    fn the_api_reference_lists_exactly_the_catalogue() {
        let doc = repo_file("docs/api.md");
        let section = doc
            .split("\n## Error codes\n")
            .nth(1)
            .expect("docs/api.md has a '## Error codes' section");
        let section = section.split("\n## ").next().unwrap();
        let mut documented = BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells[1].trim_matches('`');
            let status: u16 = cells[2]
                .parse()
                .unwrap_or_else(|_| panic!("bad status in: {line}"));
            assert!(
                documented.insert(code, status).is_none(),
                "{code} is listed twice"
            );
        }
        let cat = catalogue();
        let missing: Vec<_> = cat
            .iter()
            .filter(|(c, s)| documented.get(*c) != Some(s))
            .collect();
        let extra: Vec<_> = documented
            .iter()
            .filter(|(c, s)| cat.get(*c) != Some(s))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/api.md's Error codes table and Code disagree:\n  not documented (or another \
             status): {missing:?}\n  documented but not answered so: {extra:?}"
        );
    }

    /// The `Error` schema's enum in openapi.yaml is the catalogue.
    #[test]
    fn the_openapi_error_schema_lists_exactly_the_catalogue() {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(super::super::observe::OPENAPI_YAML).unwrap();
        let listed: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
            ["enum"]
            .as_sequence()
            .expect("the Error schema's error property has an enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let cat: BTreeSet<&str> = catalogue().keys().copied().collect();
        assert_eq!(
            listed.symmetric_difference(&cat).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "openapi.yaml's Error enum and Code disagree"
        );
    }

    /// Every "STATUS `code`" the docs mention (README.md, docs/*.md, and the response
    /// descriptions of openapi.yaml) is a catalogue code with that status, or one of
    /// OAuth's own codes; a code without a status beside it must still be one of those
    /// when it follows a status in a list ("409 `a` / `b`").
    #[test]
    fn every_status_and_code_the_docs_mention_is_answered() {
        let cat = catalogue();
        let oauth = oauth_codes();
        let mut texts = vec![("README.md".to_string(), repo_file("README.md"))];
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let mut names: Vec<_> = std::fs::read_dir(&docs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".md"))
            .collect();
        names.sort();
        for n in names {
            texts.push((format!("docs/{n}"), repo_file(&format!("docs/{n}"))));
        }
        texts.push((
            "src/api/openapi.yaml".into(),
            super::super::observe::OPENAPI_YAML.to_string(),
        ));
        let mut wrong = Vec::new();
        for (file, text) in &texts {
            for (status, code) in status_code_pairs(text) {
                let ok = cat.get(code.as_str()) == Some(&status) || oauth.contains(&code);
                if !ok {
                    wrong.push(format!("{file}: {status} `{code}`"));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "the docs mention error codes joinery does not answer with that status (see \
             Code in src/api/error.rs):\n{}",
            wrong.join("\n")
        );
    }

    /// openapi.yaml's error responses name only catalogue codes, each under its own
    /// status (or OAuth's codes, for `POST /oauth/token`).
    #[test]
    fn openapi_error_responses_name_catalogue_codes_under_their_status() {
        use serde_yaml_ng::Value;
        let cat = catalogue();
        let oauth = oauth_codes();
        let doc: Value = serde_yaml_ng::from_str(super::super::observe::OPENAPI_YAML).unwrap();
        let codes_in = |r: &Value| -> Vec<String> {
            let desc = r["description"].as_str().unwrap_or("");
            desc.split('`')
                .skip(1)
                .step_by(2)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .map(str::to_string)
                .collect()
        };
        let mut wrong = Vec::new();
        for (path, ops) in doc["paths"].as_mapping().unwrap() {
            for (method, op) in ops.as_mapping().unwrap() {
                let Some(responses) = op["responses"].as_mapping() else {
                    continue;
                };
                for (status, r) in responses {
                    let status: u16 = match status.as_str().and_then(|s| s.parse().ok()) {
                        Some(s) if s >= 400 => s,
                        _ => continue,
                    };
                    for code in codes_in(r) {
                        if cat.get(code.as_str()) != Some(&status) && !oauth.contains(&code) {
                            wrong.push(format!("{method:?} {path:?} {status}: `{code}`"));
                        }
                    }
                }
            }
        }
        for (name, r) in doc["components"]["responses"].as_mapping().unwrap() {
            for code in codes_in(r) {
                if !cat.contains_key(code.as_str()) {
                    wrong.push(format!("components.responses.{name:?}: `{code}`"));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "openapi.yaml names codes joinery does not answer so:\n{}",
            wrong.join("\n")
        );
    }

    /// "NNN `code`", and the codes listed after it with " / " or ", " (without a new
    /// status), as (status, code) pairs.
    fn status_code_pairs(text: &str) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i + 5 < b.len() {
            let is_status = b[i..i + 3].iter().all(u8::is_ascii_digit)
                && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
                && b[i + 3] == b' '
                && b[i + 4] == b'`';
            if !is_status {
                i += 1;
                continue;
            }
            let status: u16 = text[i..i + 3].parse().unwrap();
            let mut j = i + 4;
            while let Some((code, end)) = backticked_code(text, j) {
                if (400..600).contains(&status) {
                    out.push((status, code));
                }
                j = end;
                // The list goes on only with another code, not a new status.
                let rest = &text[j..];
                let sep = [" / ", ", ", "/"].iter().find(|s| rest.starts_with(**s));
                match sep {
                    Some(s) if text[j + s.len()..].starts_with('`') => j += s.len(),
                    _ => break,
                }
            }
            i = j.max(i + 1);
        }
        out
    }

    /// A `snake_case` code starting at `at` (its opening backtick), and where it ends.
    fn backticked_code(text: &str, at: usize) -> Option<(String, usize)> {
        let rest = text.get(at..)?.strip_prefix('`')?;
        let end = rest.find('`')?;
        let code = &rest[..end];
        let is_code = !code.is_empty()
            && code.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')
            && code.as_bytes()[0].is_ascii_lowercase();
        is_code.then(|| (code.to_string(), at + end + 2))
    }
}
