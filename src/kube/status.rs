//! Non-2xx answers → [`Error`]: the Kubernetes `Status` object, mapped on `code` and
//! `reason` (never on `message`, which is for humans and changes between releases).
//!
//! Pure: takes the HTTP status, the body bytes and the `Retry-After` header value.

use serde::Deserialize;

use super::Error;

/// Longest API-server message we carry into an error (and so into logs and responses).
const MAX_MESSAGE: usize = 512;

/// The parts of `meta/v1.Status` we read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    kind: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
    message: Option<String>,
    details: Option<StatusDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusDetails {
    retry_after_seconds: Option<u64>,
}

/// Map a non-2xx response to an error.
pub(crate) fn error_from_response(http: u16, body: &[u8], retry_after: Option<&str>) -> Error {
    let status: Status = serde_json::from_slice::<Status>(body)
        .ok()
        .filter(|s| s.kind.as_deref() == Some("Status"))
        .unwrap_or_default();
    error_from_status(http, status, retry_after)
}

/// Map a watch stream's `ERROR` event (`{"type":"ERROR","object":STATUS}`) to an error.
pub(crate) fn error_from_event(line: &[u8]) -> Error {
    #[derive(Deserialize)]
    struct ErrorEvent {
        object: Option<Status>,
    }
    let status = serde_json::from_slice::<ErrorEvent>(line)
        .ok()
        .and_then(|e| e.object)
        .unwrap_or_default();
    let code = status.code.unwrap_or(500);
    error_from_status(code, status, None)
}

fn error_from_status(http: u16, status: Status, retry_after: Option<&str>) -> Error {
    // The Status code and the HTTP code agree on a real API server; prefer the body's.
    let code = status
        .code
        .filter(|c| (100..600).contains(c))
        .unwrap_or(http);
    let reason = status.reason.as_deref().unwrap_or("");
    let message = || {
        let m = status
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(reason);
        cap(if m.is_empty() { "no message" } else { m })
    };
    match code {
        401 => Error::Unauthorized,
        403 => Error::Forbidden { message: message() },
        404 => Error::NotFound,
        409 if reason == "AlreadyExists" => Error::AlreadyExists,
        409 => Error::Conflict,
        410 => Error::Gone,
        400 | 422 => Error::Invalid(message()),
        429 => Error::TooManyRequests {
            retry_after: retry_after
                .and_then(parse_retry_after)
                .or(status.details.and_then(|d| d.retry_after_seconds)),
        },
        500..=599 => Error::Unavailable(format!(
            "api server answered {code}{}{}",
            if reason.is_empty() { "" } else { " " },
            reason
        )),
        _ => Error::Protocol(format!(
            "api server answered {code}{}{}",
            if reason.is_empty() { "" } else { " " },
            reason
        )),
    }
}

/// `Retry-After` as delay-seconds. Kubernetes sends an integer; an HTTP-date (legal, but
/// never sent by the API server) is ignored rather than guessed at.
pub(crate) fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Absurd values are clamped: a day is already "come back much later".
    Some(v.parse::<u64>().unwrap_or(u64::MAX).min(86_400))
}

fn cap(m: &str) -> String {
    if m.len() <= MAX_MESSAGE {
        return m.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &m[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, extra: &str) -> String {
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"msg {reason}","reason":"{reason}","code":{code}{extra}}}"#
        )
    }

    fn check(http: u16, body: &str, retry_after: Option<&str>, want: Error) {
        assert_eq!(
            error_from_response(http, body.as_bytes(), retry_after),
            want,
            "http {http} body {body}"
        );
    }

    #[test]
    fn status_table() {
        check(404, &status(404, "NotFound", ""), None, Error::NotFound);
        check(
            401,
            &status(401, "Unauthorized", ""),
            None,
            Error::Unauthorized,
        );
        check(
            403,
            &status(403, "Forbidden", ""),
            None,
            Error::Forbidden {
                message: "msg Forbidden".into(),
            },
        );
        check(
            409,
            &status(409, "AlreadyExists", ""),
            None,
            Error::AlreadyExists,
        );
        check(409, &status(409, "Conflict", ""), None, Error::Conflict);
        check(410, &status(410, "Expired", ""), None, Error::Gone);
        check(
            422,
            &status(422, "Invalid", ""),
            None,
            Error::Invalid("msg Invalid".into()),
        );
        check(
            400,
            &status(400, "BadRequest", ""),
            None,
            Error::Invalid("msg BadRequest".into()),
        );
        check(
            503,
            &status(503, "ServiceUnavailable", ""),
            None,
            Error::Unavailable("api server answered 503 ServiceUnavailable".into()),
        );
        check(
            504,
            &status(504, "Timeout", ""),
            None,
            Error::Unavailable("api server answered 504 Timeout".into()),
        );
        check(
            405,
            &status(405, "MethodNotAllowed", ""),
            None,
            Error::Protocol("api server answered 405 MethodNotAllowed".into()),
        );
    }

    #[test]
    fn reason_decides_409_not_message() {
        // A Conflict whose message mentions "already exists" is still a Conflict.
        let body =
            r#"{"kind":"Status","code":409,"reason":"Conflict","message":"object already exists"}"#;
        check(409, body, None, Error::Conflict);
    }

    #[test]
    fn non_status_bodies_map_by_http_code() {
        check(404, "404 page not found", None, Error::NotFound);
        check(
            502,
            "<html>bad gateway</html>",
            None,
            Error::Unavailable("api server answered 502".into()),
        );
        check(
            403,
            "",
            None,
            Error::Forbidden {
                message: "no message".into(),
            },
        );
    }

    #[test]
    fn too_many_requests_reads_header_then_details() {
        let details = r#","details":{"retryAfterSeconds":7}"#;
        let body = status(429, "TooManyRequests", details);
        check(
            429,
            &body,
            Some("2"),
            Error::TooManyRequests {
                retry_after: Some(2),
            },
        );
        check(
            429,
            &body,
            None,
            Error::TooManyRequests {
                retry_after: Some(7),
            },
        );
        check(
            429,
            &body,
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            Error::TooManyRequests {
                retry_after: Some(7),
            },
        );
        check(
            429,
            &status(429, "TooManyRequests", ""),
            None,
            Error::TooManyRequests { retry_after: None },
        );
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after("5"), Some(5));
        assert_eq!(parse_retry_after(" 0 "), Some(0));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1.5"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("99999999999999999999999"), Some(86_400));
    }

    #[test]
    fn long_messages_are_capped() {
        let long = "é".repeat(1000);
        let body =
            format!(r#"{{"kind":"Status","code":403,"reason":"Forbidden","message":"{long}"}}"#);
        match error_from_response(403, body.as_bytes(), None) {
            Error::Forbidden { message } => assert!(message.len() <= MAX_MESSAGE + 3),
            e => panic!("{e:?}"),
        }
    }
}
