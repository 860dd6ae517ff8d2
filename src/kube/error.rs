//! The one error type of the Kubernetes client.
//!
//! Variants say what the caller must do, not how the failure happened. `Display` is
//! lowercase `kubernetes: ...` and never carries a token, key or secret value: messages are
//! built only from file names, field paths, status codes, reasons and the API server's own
//! Status message (which names verbs, resources and users, never credentials).

use std::fmt;

/// Everything that can go wrong talking to (or configuring access to) the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The kubeconfig or in-cluster environment is unusable. Raised only at start-up
    /// ([`Client::new`](super::Client::new)); the text names the file or variable, what is
    /// wrong, and how to fix it.
    Config(String),
    /// The API server could not be reached or answered 5xx: connection refused or reset,
    /// timeout, TLS failure, a dropped response. Callers answer 503 `kubernetes_unavailable`.
    Unavailable(String),
    /// The API server refused our credentials (401), even after re-reading the token file.
    Unauthorized,
    /// RBAC denied the request (403). `message` is the API server's own sentence naming the
    /// verb, resource and user.
    Forbidden {
        /// The API server's Status message, capped in length.
        message: String,
    },
    /// The object does not exist (404).
    NotFound,
    /// A create found an object of the same name (409, reason `AlreadyExists`).
    AlreadyExists,
    /// A precondition (uid, resourceVersion) did not hold (409, any other reason).
    Conflict,
    /// A list continue token or a watch's resourceVersion expired (410); list again.
    Gone,
    /// The API server is shedding load (429). Wait `retry_after` seconds when given.
    TooManyRequests {
        /// From the `Retry-After` header, else `details.retryAfterSeconds`.
        retry_after: Option<u64>,
    },
    /// The API server rejected the request as invalid (422, or 400 Bad Request), e.g. a bad
    /// label selector or object name. Carries the API server's message.
    Invalid(String),
    /// The API server answered something we cannot understand: a body that is not the
    /// expected JSON shape, an unexpected status, a response over the size cap.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "kubernetes: configuration: {m}"),
            Error::Unavailable(m) => write!(f, "kubernetes: api server unavailable: {m}"),
            Error::Unauthorized => write!(f, "kubernetes: unauthorized (401): credentials refused"),
            Error::Forbidden { message } => write!(f, "kubernetes: forbidden (403): {message}"),
            Error::NotFound => write!(f, "kubernetes: not found (404)"),
            Error::AlreadyExists => write!(f, "kubernetes: already exists (409)"),
            Error::Conflict => write!(f, "kubernetes: conflict (409): precondition failed"),
            Error::Gone => write!(f, "kubernetes: gone (410): version expired, list again"),
            Error::TooManyRequests {
                retry_after: Some(s),
            } => write!(f, "kubernetes: too many requests (429): retry after {s} s"),
            Error::TooManyRequests { retry_after: None } => {
                write!(f, "kubernetes: too many requests (429)")
            }
            Error::Invalid(m) => write!(f, "kubernetes: invalid request: {m}"),
            Error::Protocol(m) => write!(f, "kubernetes: unexpected response: {m}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn display_is_lowercase_and_prefixed() {
        let all = [
            Error::Config("x".into()),
            Error::Unavailable("connection refused".into()),
            Error::Unauthorized,
            Error::Forbidden {
                message: "nodes is forbidden".into(),
            },
            Error::NotFound,
            Error::AlreadyExists,
            Error::Conflict,
            Error::Gone,
            Error::TooManyRequests {
                retry_after: Some(3),
            },
            Error::TooManyRequests { retry_after: None },
            Error::Invalid("bad".into()),
            Error::Protocol("bad".into()),
        ];
        for e in all {
            let s = e.to_string();
            assert!(s.starts_with("kubernetes: "), "{s}");
            assert!(s.chars().nth(12).unwrap().is_lowercase(), "{s}");
        }
    }
}
