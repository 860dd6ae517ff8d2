//! Writing responses: status line, server-owned headers, and the three body shapes.
//!
//! The server owns framing: `Content-Length`, `Transfer-Encoding`, `Date` and `Connection`
//! from a handler are dropped and written here, so a handler cannot desynchronise a
//! keep-alive connection. A streamed body that ends early is reported as an error so the
//! caller aborts the connection rather than ending it cleanly.

use std::io::{self, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use super::parse::Reject;
use super::{Body, Flush, Limits, Response};

/// How a response was written, for the access log and the keep-alive decision.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Body bytes written (not counting chunk framing).
    pub bytes: u64,
}

/// Why writing stopped early. Either way the connection must be dropped without a clean end.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The client went away or stalled past the write timeout.
    Client,
    /// The handler's body reader failed or ended before its declared length.
    Source { written: u64, detail: String },
}

impl Response {
    /// A JSON response with the given status.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(value.to_string().into_bytes()),
            subject: None,
        }
    }

    /// The JSON error envelope `{"error": code, "message": message}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        )
    }
}

/// The error envelope for a server-generated rejection.
pub(crate) fn reject_response(r: &Reject, limits: &Limits) -> Response {
    Response::error(r.status(), r.code(), &r.message(limits))
}

/// The reason phrase for a status code (RFC 9110 names; "Unknown" otherwise).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The current time as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (y, m, d, hh, mm, ss) = crate::log::civil_parts(secs);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        [secs.div_euclid(86_400).rem_euclid(7) as usize];
    let month_names = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = month_names[(m - 1).clamp(0, 11) as usize];
    format!("{weekday}, {d:02} {month} {y:04} {hh:02}:{mm:02}:{ss:02} GMT")
}

/// Headers the server writes itself; a handler's copies are dropped.
fn server_owned(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "date",
        "connection",
        "keep-alive",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// A header a handler may send: a token name and a value without CR, LF or NUL (which
/// would let it split the response).
fn sendable(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Does the handler ask for the connection to close after this response?
pub(crate) fn wants_close(resp: &Response) -> bool {
    resp.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection")
            && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
}

/// Write `resp`. `http11` selects chunked framing for unsized streams (HTTP/1.0 clients get
/// the stream delimited by close); `head_only` writes headers only (HEAD requests).
pub(crate) fn write_response<W: Write>(
    w: &mut W,
    mut resp: Response,
    http11: bool,
    head_only: bool,
    keep_alive: bool,
) -> Result<Written, WriteError> {
    let status = if (200..=999).contains(&resp.status) {
        resp.status
    } else {
        // 1xx cannot carry a final response and <100 is not a status: a handler bug.
        crate::log::error(
            "handler returned an invalid status",
            &[("status", resp.status.into())],
        );
        resp.body = Body::Empty;
        500
    };
    let no_body_status = status == 204 || status == 304;

    let mut head = Vec::with_capacity(256);
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason(status));
    let _ = write!(head, "Date: {}\r\n", http_date(SystemTime::now()));
    for (name, value) in &resp.headers {
        if server_owned(name) {
            continue;
        }
        if !sendable(name, value) {
            crate::log::warn("dropped an unsendable response header", &[]);
            continue;
        }
        let _ = write!(head, "{name}: {value}\r\n");
    }

    // Unsized streams to HTTP/1.0 clients are delimited by closing the connection.
    let unsized_stream = matches!(resp.body, Body::Stream { len: None, .. });
    let keep_alive = keep_alive && (http11 || !unsized_stream);
    let length = match &resp.body {
        Body::Empty => Some(0),
        Body::Bytes(b) => Some(b.len() as u64),
        Body::Stream { len, .. } => *len,
    };
    if !no_body_status {
        match length {
            Some(n) => {
                let _ = write!(head, "Content-Length: {n}\r\n");
            }
            None if http11 && !head_only => {
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
            }
            None => {}
        }
    }
    head.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n"
    } else {
        b"Connection: close\r\n\r\n"
    });

    if head_only || no_body_status {
        w.write_all(&head).map_err(|_| WriteError::Client)?;
        w.flush().map_err(|_| WriteError::Client)?;
        return Ok(Written::default());
    }

    match resp.body {
        Body::Empty => {
            w.write_all(&head).map_err(|_| WriteError::Client)?;
            w.flush().map_err(|_| WriteError::Client)?;
            Ok(Written::default())
        }
        Body::Bytes(bytes) => {
            // One write for head and body: fewer TLS records and syscalls.
            head.extend_from_slice(&bytes);
            w.write_all(&head).map_err(|_| WriteError::Client)?;
            w.flush().map_err(|_| WriteError::Client)?;
            Ok(Written {
                bytes: bytes.len() as u64,
            })
        }
        Body::Stream { reader, len, flush } => {
            w.write_all(&head).map_err(|_| WriteError::Client)?;
            if flush == Flush::EachRead {
                // The client sees the head before the first event, however long it takes.
                w.flush().map_err(|_| WriteError::Client)?;
            }
            let chunked = len.is_none() && http11;
            stream_body(w, reader, len, chunked, flush)
        }
    }
}

fn stream_body<W: Write>(
    w: &mut W,
    mut reader: Box<dyn Read + Send>,
    len: Option<u64>,
    chunked: bool,
    flush: Flush,
) -> Result<Written, WriteError> {
    const CHUNK: usize = 16 * 1024;
    let mut buf = vec![0u8; CHUNK + 32];
    let mut written: u64 = 0;
    loop {
        // Leave room in front for the chunk-size line so each chunk is one write.
        let want = match len {
            Some(total) => (total - written).min(CHUNK as u64) as usize,
            None => CHUNK,
        };
        if want == 0 {
            break;
        }
        let n = match reader.read(&mut buf[16..16 + want]) {
            Ok(0) => {
                if len.is_some() {
                    return Err(WriteError::Source {
                        written,
                        detail: "body ended before its declared length".into(),
                    });
                }
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(WriteError::Source {
                    written,
                    detail: e.to_string(),
                })
            }
        };
        if chunked {
            let size_line = format!("{n:x}\r\n");
            let start = 16 - size_line.len();
            buf[start..16].copy_from_slice(size_line.as_bytes());
            buf[16 + n..16 + n + 2].copy_from_slice(b"\r\n");
            w.write_all(&buf[start..16 + n + 2])
                .map_err(|_| WriteError::Client)?;
        } else {
            w.write_all(&buf[16..16 + n])
                .map_err(|_| WriteError::Client)?;
        }
        written += n as u64;
        if flush == Flush::EachRead {
            w.flush().map_err(|_| WriteError::Client)?;
        }
    }
    if chunked {
        w.write_all(b"0\r\n\r\n").map_err(|_| WriteError::Client)?;
    }
    w.flush().map_err(|_| WriteError::Client)?;
    Ok(Written { bytes: written })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn render(resp: Response, http11: bool, head_only: bool, keep_alive: bool) -> String {
        let mut out = Vec::new();
        write_response(&mut out, resp, http11, head_only, keep_alive).unwrap();
        let text = String::from_utf8(out).unwrap();
        // Drop the Date line, which changes with the clock.
        text.lines()
            .filter(|l| !l.starts_with("Date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stream(data: &'static [u8], len: Option<u64>) -> Response {
        Response {
            status: 200,
            headers: vec![],
            body: Body::Stream {
                reader: Box::new(data),
                len,
                flush: Flush::AtEnd,
            },
            subject: None,
        }
    }

    /// Counts writes and flushes.
    #[derive(Default)]
    struct Recorder {
        out: Vec<u8>,
        flushes: Vec<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.out.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushes.push(self.out.len());
            Ok(())
        }
    }

    /// A source that hands out one small event per read.
    struct Events(Vec<&'static [u8]>);

    impl Read for Events {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let e = self.0.remove(0);
            buf[..e.len()].copy_from_slice(e);
            Ok(e.len())
        }
    }

    #[test]
    fn each_read_of_an_event_stream_is_flushed_at_once() {
        for (flush, expected) in [(Flush::EachRead, 4), (Flush::AtEnd, 1)] {
            let mut w = Recorder::default();
            let resp = Response {
                status: 200,
                headers: vec![],
                body: Body::Stream {
                    reader: Box::new(Events(vec![b"{\"a\":1}\n", b"{\"b\":2}\n"])),
                    len: None,
                    flush,
                },
                subject: None,
            };
            write_response(&mut w, resp, true, false, true).unwrap();
            // EachRead: after the head, after each event, and at the end.
            assert_eq!(w.flushes.len(), expected, "{flush:?}");
            let text = String::from_utf8(w.out).unwrap();
            assert!(
                text.ends_with("8\r\n{\"a\":1}\n\r\n8\r\n{\"b\":2}\n\r\n0\r\n\r\n"),
                "{text}"
            );
        }
    }

    #[test]
    fn http_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn bytes_body_with_length_and_owned_headers_replaced() {
        let resp = Response {
            status: 201,
            headers: vec![
                ("Content-Length".into(), "999".into()),
                ("X-Ok".into(), "yes".into()),
                ("X-Bad".into(), "a\r\nInjected: 1".into()),
                ("Bad Name".into(), "x".into()),
            ],
            body: Body::Bytes(b"hi".to_vec()),
            subject: None,
        };
        assert_eq!(
            render(resp, true, false, true),
            "HTTP/1.1 201 Created\nX-Ok: yes\nContent-Length: 2\nConnection: keep-alive\n\nhi"
        );
    }

    #[test]
    fn unsized_stream_is_chunked_for_11_and_close_delimited_for_10() {
        assert_eq!(
            render(stream(b"hello", None), true, false, true),
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nConnection: keep-alive\n\n5\n\
             hello\n0\n"
        );
        assert_eq!(
            render(stream(b"hello", None), false, false, true),
            "HTTP/1.1 200 OK\nConnection: close\n\nhello"
        );
    }

    #[test]
    fn head_writes_length_but_no_body() {
        assert_eq!(
            render(stream(b"hello", Some(5)), true, true, true),
            "HTTP/1.1 200 OK\nContent-Length: 5\nConnection: keep-alive\n"
        );
    }

    #[test]
    fn short_stream_is_an_error_not_a_clean_end() {
        let mut out = Vec::new();
        let got = write_response(&mut out, stream(b"abc", Some(10)), true, false, true);
        assert!(matches!(got, Err(WriteError::Source { written: 3, .. })));
    }

    #[test]
    fn long_stream_is_cut_at_its_declared_length() {
        let text = render(stream(b"abcdef", Some(4)), true, false, true);
        assert!(text.ends_with("\n\nabcd"), "{text}");
    }

    #[test]
    fn invalid_status_becomes_500() {
        let resp = Response {
            status: 101,
            headers: vec![],
            body: Body::Empty,
            subject: None,
        };
        assert!(render(resp, true, false, false).starts_with("HTTP/1.1 500 Internal Server Error"));
    }
}
