//! Pure request framing: request head parsing and chunked body decoding.
//!
//! Nothing here touches a socket or a clock, so the same bytes always give the same
//! answer; that makes it table-testable and callable from a fuzz target. Every rejection
//! is a [`Reject`], whose status, code and message come from one exhaustive match.

use super::limits::Limits;
use std::mem::MaybeUninit;

/// The HTTP version of a request (httparse accepts only 1.0 and 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// Path part of the target (before `?`), not percent-decoded.
    pub path: String,
    /// Raw query after `?`, `""` when absent.
    pub query: String,
    pub version: Version,
    /// Names lowercased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// Whether the client allows the connection to stay open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
}

/// Every error the server itself answers, as opposed to what a handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Syntax error in the request line or headers; the detail names the part.
    Malformed(&'static str),
    /// Content-Length is not digits, overflows u64, or appears with different values.
    BadContentLength,
    /// Both Transfer-Encoding and Content-Length: a request-smuggling shape.
    LengthAndChunked,
    /// A transfer coding other than a lone `chunked`.
    UnsupportedTransferEncoding,
    /// A chunked body that does not follow the grammar.
    BadChunk(&'static str),
    UriTooLong,
    HeadTooLarge,
    TooManyHeaders,
    BodyTooLarge,
    /// A method longer than [`MAX_METHOD`]: longer than any method joinery implements
    /// (RFC 9112 §3 suggests 501), and never echoed or logged whole.
    MethodTooLong,
    /// An HTTP/1.1 request without a `Host` header, or with more than one (RFC 9112 §3.2).
    BadHost,
    /// An `Expect` other than `100-continue`.
    UnsupportedExpectation,
    /// The head or body did not arrive before its deadline.
    Timeout,
    /// Every connection slot is taken.
    Busy,
    /// The handler panicked or returned something unsendable.
    Internal,
}

#[cfg(test)]
impl Reject {
    /// Every refusal once, for the tests that must cover them all (here and the error
    /// catalogue's); `index` stops compiling when a variant is added and not listed.
    pub(crate) const ALL: [Reject; 15] = [
        Reject::Malformed("x"),
        Reject::BadContentLength,
        Reject::LengthAndChunked,
        Reject::UnsupportedTransferEncoding,
        Reject::BadChunk("x"),
        Reject::UriTooLong,
        Reject::HeadTooLarge,
        Reject::TooManyHeaders,
        Reject::BodyTooLarge,
        Reject::MethodTooLong,
        Reject::BadHost,
        Reject::UnsupportedExpectation,
        Reject::Timeout,
        Reject::Busy,
        Reject::Internal,
    ];

    fn index(&self) -> usize {
        match self {
            Reject::Malformed(_) => 0,
            Reject::BadContentLength => 1,
            Reject::LengthAndChunked => 2,
            Reject::UnsupportedTransferEncoding => 3,
            Reject::BadChunk(_) => 4,
            Reject::UriTooLong => 5,
            Reject::HeadTooLarge => 6,
            Reject::TooManyHeaders => 7,
            Reject::BodyTooLarge => 8,
            Reject::MethodTooLong => 9,
            Reject::BadHost => 10,
            Reject::UnsupportedExpectation => 11,
            Reject::Timeout => 12,
            Reject::Busy => 13,
            Reject::Internal => 14,
        }
    }
}

impl Reject {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Reject::Malformed(_) => 400,
            Reject::BadContentLength => 400,
            Reject::LengthAndChunked => 400,
            Reject::UnsupportedTransferEncoding => 501,
            Reject::BadChunk(_) => 400,
            Reject::UriTooLong => 414,
            Reject::HeadTooLarge => 431,
            Reject::TooManyHeaders => 431,
            Reject::BodyTooLarge => 413,
            Reject::MethodTooLong => 501,
            Reject::BadHost => 400,
            Reject::UnsupportedExpectation => 417,
            Reject::Timeout => 408,
            Reject::Busy => 503,
            Reject::Internal => 500,
        }
    }

    /// The stable snake_case code of the JSON error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::Malformed(_) => "bad_request",
            Reject::BadContentLength => "bad_content_length",
            Reject::LengthAndChunked => "conflicting_framing",
            Reject::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            Reject::BadChunk(_) => "bad_chunked_body",
            Reject::UriTooLong => "uri_too_long",
            Reject::HeadTooLarge => "headers_too_large",
            Reject::TooManyHeaders => "too_many_headers",
            Reject::BodyTooLarge => "body_too_large",
            Reject::MethodTooLong => "method_not_implemented",
            Reject::BadHost => "bad_host",
            Reject::UnsupportedExpectation => "expectation_failed",
            Reject::Timeout => "request_timeout",
            Reject::Busy => "server_busy",
            Reject::Internal => "internal_error",
        }
    }

    /// A sentence a person can act on; never echoes request bytes.
    pub fn message(&self, limits: &Limits) -> String {
        match self {
            Reject::Malformed(detail) => format!(
                "The request could not be parsed ({detail}); send a well-formed HTTP/1.1 request."
            ),
            Reject::BadContentLength => "The Content-Length header must be a single non-negative \
                 decimal number; fix or remove it."
                .into(),
            Reject::LengthAndChunked => "The request has both Transfer-Encoding and \
                 Content-Length; send only one of them."
                .into(),
            Reject::UnsupportedTransferEncoding => "Only 'Transfer-Encoding: chunked' is \
                 supported; send the body with Content-Length or chunked."
                .into(),
            Reject::BadChunk(detail) => format!(
                "The chunked request body is malformed ({detail}); resend it with valid chunked encoding."
            ),
            Reject::UriTooLong => format!(
                "The request target is longer than {} bytes; shorten the URL.",
                limits.max_url
            ),
            Reject::HeadTooLarge => format!(
                "The request headers exceed {} bytes; send fewer or smaller headers.",
                limits.max_head
            ),
            Reject::TooManyHeaders => format!(
                "The request has more than {} header fields; send fewer headers.",
                limits.max_headers
            ),
            Reject::BodyTooLarge => format!(
                "The request body exceeds {} bytes; send a smaller body.",
                limits.max_body
            ),
            Reject::MethodTooLong => format!(
                "The request method is longer than {MAX_METHOD} bytes, longer than any this \
                 server implements; use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS."
            ),
            Reject::BadHost => "An HTTP/1.1 request needs exactly one Host header; send one \
                 (curl and HTTP libraries do)."
                .into(),
            Reject::UnsupportedExpectation => {
                "Only 'Expect: 100-continue' is supported; remove the Expect header.".into()
            }
            Reject::Timeout => {
                "The request did not arrive in time; send the whole request promptly.".into()
            }
            Reject::Busy => {
                "The server is handling too many connections; retry in a few seconds.".into()
            }
            Reject::Internal => "The server failed while handling the request; retry, and \
                 check the server log if it keeps failing."
                .into(),
        }
    }
}

/// The longest method accepted (bytes); the longest standard one (`OPTIONS`, `CONNECT`)
/// has 7, WebDAV's `PROPPATCH` 9.
pub const MAX_METHOD: usize = 16;

/// Header slots [`parse_head`] keeps on the stack (the default `max_headers`).
const STACK_HEADERS: usize = 100;

/// Parse a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (the caller caps `buf` at `limits.max_head`, and this
/// function rejects a full buffer). `Ok(Some((head, n)))`: the head took `n` bytes; what
/// follows is body or the next request.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, Reject> {
    // Called for every request (and every partial read of one): the default limit's
    // header slots live on the stack; a larger configured limit falls back to the heap.
    // Left uninitialised for httparse to fill: setting 100 empty slots first was the
    // largest part of parsing a small request.
    let mut on_stack = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_HEADERS];
    let mut on_heap: Vec<MaybeUninit<httparse::Header>>;
    let headers = if limits.max_headers <= STACK_HEADERS {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap = (0..limits.max_headers)
            .map(|_| MaybeUninit::uninit())
            .collect();
        &mut on_heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            let line_done = buf.contains(&b'\n');
            // A request line with no end in sight is a long URL, not long headers.
            if !line_done && buf.len() > limits.max_url.saturating_add(32) {
                return Err(Reject::UriTooLong);
            }
            if buf.len() >= limits.max_head {
                return Err(if line_done {
                    Reject::HeadTooLarge
                } else {
                    Reject::UriTooLong
                });
            }
            return Ok(None);
        }
        Err(e) => return Err(httparse_reject(e)),
    };
    if n > limits.max_head {
        return Err(Reject::HeadTooLarge);
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(Reject::Malformed("unsupported HTTP version")),
    };
    let method = req.method.unwrap_or_default();
    if method.len() > MAX_METHOD {
        return Err(Reject::MethodTooLong);
    }
    let method = method.to_string();
    let target = req.path.unwrap_or_default();
    if target.len() > limits.max_url {
        return Err(Reject::UriTooLong);
    }
    let (path, query) = split_target(&method, target)?;

    let mut out_headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| Reject::Malformed("header value is not valid UTF-8"))?;
        out_headers.push((
            h.name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }

    if version == Version::Http11 && out_headers.iter().filter(|(n, _)| n == "host").count() != 1 {
        return Err(Reject::BadHost);
    }
    let framing = framing(&out_headers, version)?;
    let mut keep_alive = version == Version::Http11;
    let mut expect_continue = false;
    for (name, value) in &out_headers {
        match name.as_str() {
            "connection" if tokens(value).any(|t| t.eq_ignore_ascii_case("close")) => {
                keep_alive = false;
            }
            // RFC 9110: an HTTP/1.0 server must ignore 100-continue.
            "expect" if version == Version::Http11 => {
                if value.eq_ignore_ascii_case("100-continue") {
                    expect_continue = true;
                } else {
                    return Err(Reject::UnsupportedExpectation);
                }
            }
            _ => {}
        }
    }

    let head = Head {
        method,
        path,
        query,
        version,
        headers: out_headers,
        framing,
        keep_alive,
        expect_continue,
    };
    Ok(Some((head, n)))
}

fn httparse_reject(e: httparse::Error) -> Reject {
    match e {
        httparse::Error::TooManyHeaders => Reject::TooManyHeaders,
        httparse::Error::HeaderName => Reject::Malformed("invalid header name"),
        httparse::Error::HeaderValue => Reject::Malformed("invalid header value"),
        httparse::Error::NewLine => Reject::Malformed("invalid line ending"),
        httparse::Error::Status => Reject::Malformed("invalid status"),
        httparse::Error::Token => Reject::Malformed("invalid method or request target"),
        httparse::Error::Version => Reject::Malformed("unsupported HTTP version"),
    }
}

/// Split a request target into path and query. Accepts origin-form (`/p?q`), absolute-form
/// (`http://host/p?q`, which RFC 9112 requires servers to accept) and `*` for OPTIONS.
fn split_target(method: &str, target: &str) -> Result<(String, String), Reject> {
    let rest = if target.starts_with('/') {
        target
    } else if target == "*" && method == "OPTIONS" {
        return Ok(("*".into(), String::new()));
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let after = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return Err(Reject::Malformed("invalid request target"));
        };
        match after.find(['/', '?']) {
            Some(i) if after.as_bytes()[i] == b'/' => &after[i..],
            Some(i) => return Ok(("/".into(), after[i + 1..].into())),
            None => "/",
        }
    };
    Ok(match rest.split_once('?') {
        Some((p, q)) => (p.into(), q.into()),
        None => (rest.into(), String::new()),
    })
}

fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(|t| t.trim()).filter(|t| !t.is_empty())
}

fn framing(headers: &[(String, String)], version: Version) -> Result<Framing, Reject> {
    let mut length: Option<u64> = None;
    let mut codings: Vec<&str> = Vec::new();
    let mut saw_te = false;
    for (name, value) in headers {
        match name.as_str() {
            "content-length" => {
                for part in value.split(',') {
                    let part = part.trim();
                    // u64::from_str accepts a leading '+'; the grammar is DIGIT only.
                    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(Reject::BadContentLength);
                    }
                    let n: u64 = part.parse().map_err(|_| Reject::BadContentLength)?;
                    match length {
                        Some(prev) if prev != n => return Err(Reject::BadContentLength),
                        _ => length = Some(n),
                    }
                }
            }
            "transfer-encoding" => {
                saw_te = true;
                codings.extend(tokens(value));
            }
            _ => {}
        }
    }
    if saw_te {
        if length.is_some() {
            return Err(Reject::LengthAndChunked);
        }
        if version == Version::Http10 {
            return Err(Reject::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        return match codings.as_slice() {
            [c] if c.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            [] => Err(Reject::Malformed("empty Transfer-Encoding")),
            _ => Err(Reject::UnsupportedTransferEncoding),
        };
    }
    Ok(match length {
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// Longest chunk-size line (size plus extensions) or trailer section we accept.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    TrailerEndLf,
    Done,
}

/// Incremental de-chunker: feed it bytes as they arrive; decoded data goes to `out`,
/// which it never lets grow past `max_body`. Strict CRLF only (bare LF is a smuggling
/// vector); extensions and trailers are skipped, bounded in size.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    digits: u32,
    line: usize,
    max_body: usize,
}

impl ChunkedDecoder {
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            line: 0,
            max_body,
        }
    }

    /// True once the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consume bytes from `input`, returning how many were used (fewer than `input.len()`
    /// only when the body ended: the rest belongs to the next request).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Reject> {
        let mut i = 0;
        while i < input.len() && self.state != ChunkState::Done {
            let b = input[i];
            match self.state {
                ChunkState::Data => {
                    let take =
                        (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + take]);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::Size => {
                    if let Some(d) = (b as char).to_digit(16) {
                        self.digits += 1;
                        if self.digits > 16 {
                            return Err(Reject::BadChunk("chunk size too long"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                    } else if self.digits == 0 {
                        return Err(Reject::BadChunk("invalid chunk size"));
                    } else if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = ChunkState::Ext;
                    } else {
                        return Err(Reject::BadChunk("invalid chunk size"));
                    }
                    self.bump_line()?;
                }
                ChunkState::Ext => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if b.is_ascii_control() && b != b'\t' {
                        return Err(Reject::BadChunk("invalid chunk extension"));
                    }
                    self.bump_line()?;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(Reject::BadChunk("chunk size line must end in CRLF"));
                    }
                    self.line = 0;
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = ChunkState::TrailerStart;
                    } else {
                        let room = self.max_body.saturating_sub(out.len()) as u64;
                        if self.size > room {
                            return Err(Reject::BodyTooLarge);
                        }
                        self.state = ChunkState::Data;
                    }
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(Reject::BadChunk("chunk data must end in CRLF"));
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(Reject::BadChunk("chunk data must end in CRLF"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    self.state = if b == b'\r' {
                        ChunkState::TrailerEndLf
                    } else {
                        ChunkState::TrailerLine
                    };
                    self.bump_line()?;
                }
                ChunkState::TrailerLine => {
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLineLf;
                    } else if b == b'\n' {
                        return Err(Reject::BadChunk("trailer lines must end in CRLF"));
                    }
                    self.bump_line()?;
                }
                ChunkState::TrailerLineLf => {
                    if b != b'\n' {
                        return Err(Reject::BadChunk("trailer lines must end in CRLF"));
                    }
                    // `line` keeps counting across trailer lines: it bounds the section.
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::TrailerEndLf => {
                    if b != b'\n' {
                        return Err(Reject::BadChunk("trailer section must end in CRLF"));
                    }
                    self.state = ChunkState::Done;
                }
                ChunkState::Done => break,
            }
            i += 1;
        }
        Ok(i)
    }

    fn bump_line(&mut self) -> Result<(), Reject> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(Reject::BadChunk("chunk line or trailer section too long"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    /// Parses `raw`, adding the `Host` header HTTP/1.1 requires when a complete
    /// request line lacks one (the Host rule has its own test, which calls `raw_head`).
    fn head(raw: &str) -> Result<Option<(Head, usize)>, Reject> {
        let with_host;
        let raw = match raw.split_once("\r\n") {
            Some((line, rest))
                if line.ends_with(" HTTP/1.1") && !raw.to_ascii_lowercase().contains("\nhost:") =>
            {
                with_host = format!("{line}\r\nHost: t\r\n{rest}");
                &with_host
            }
            _ => raw,
        };
        raw_head(raw)
    }

    fn raw_head(raw: &str) -> Result<Option<(Head, usize)>, Reject> {
        parse_head(raw.as_bytes(), &limits())
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        let ok = |raw: &str| assert!(matches!(raw_head(raw), Ok(Some(_))), "{raw:?}");
        ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // Empty is allowed: RFC 9112 §3.2 has clients send it when there is no authority.
        ok("GET / HTTP/1.1\r\nHost:\r\n\r\n");
        ok("GET / HTTP/1.0\r\n\r\n");
        for raw in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n",
        ] {
            assert_eq!(raw_head(raw), Err(Reject::BadHost), "{raw:?}");
        }
        assert_eq!(Reject::BadHost.status(), 400);
    }

    #[test]
    fn long_methods_are_501_and_never_echoed() {
        let at_cap = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(MAX_METHOD));
        assert!(matches!(raw_head(&at_cap), Ok(Some(_))));
        let long = "M".repeat(12_000);
        let raw = format!("{long} / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = parse_head(
            raw.as_bytes(),
            &Limits {
                max_head: 64 * 1024,
                max_url: 64 * 1024,
                ..Limits::default()
            },
        );
        assert_eq!(r, Err(Reject::MethodTooLong));
        assert_eq!(Reject::MethodTooLong.status(), 501);
        assert!(!Reject::MethodTooLong.message(&limits()).contains("MMMM"));
    }

    fn framing_of(raw: &str) -> Result<Framing, Reject> {
        head(raw).map(|h| h.expect("complete head").0.framing)
    }

    #[test]
    fn parses_a_simple_get() {
        let raw = "GET /v1/nodes?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Thing:  v \r\n\r\nrest";
        let (h, n) = head(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 4);
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/v1/nodes");
        assert_eq!(h.query, "x=1&y=2");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.headers[1], ("x-thing".into(), "v".into()));
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
    }

    #[test]
    fn incomplete_head_asks_for_more() {
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(head("GE"), Ok(None));
    }

    #[test]
    fn content_length_table() {
        let cases: &[(&str, Result<Framing, Reject>)] = &[
            ("5", Ok(Framing::Length(5))),
            ("0", Ok(Framing::None)),
            ("5, 5", Ok(Framing::Length(5))),
            ("18446744073709551615", Ok(Framing::Length(u64::MAX))),
            ("18446744073709551616", Err(Reject::BadContentLength)),
            ("99999999999999999999999", Err(Reject::BadContentLength)),
            ("+5", Err(Reject::BadContentLength)),
            ("-1", Err(Reject::BadContentLength)),
            ("5a", Err(Reject::BadContentLength)),
            ("0x10", Err(Reject::BadContentLength)),
            ("", Err(Reject::BadContentLength)),
            ("5, 6", Err(Reject::BadContentLength)),
        ];
        for (value, want) in cases {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(&framing_of(&raw), want, "Content-Length: {value:?}");
        }
        let raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n";
        assert_eq!(framing_of(raw), Err(Reject::BadContentLength));
        let raw = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(framing_of(raw), Ok(Framing::Length(5)));
    }

    #[test]
    fn transfer_encoding_table() {
        let cases: &[(&str, Result<Framing, Reject>)] = &[
            ("Transfer-Encoding: chunked", Ok(Framing::Chunked)),
            ("Transfer-Encoding: Chunked", Ok(Framing::Chunked)),
            (
                "Transfer-Encoding: gzip, chunked",
                Err(Reject::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: identity",
                Err(Reject::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                Err(Reject::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 3",
                Err(Reject::LengthAndChunked),
            ),
            (
                "Content-Length: 3\r\nTransfer-Encoding: chunked",
                Err(Reject::LengthAndChunked),
            ),
        ];
        for (headers, want) in cases {
            let raw = format!("POST / HTTP/1.1\r\n{headers}\r\n\r\n");
            assert_eq!(&framing_of(&raw), want, "{headers:?}");
        }
    }

    #[test]
    fn connection_and_version() {
        let h = |raw: &str| head(raw).unwrap().unwrap().0;
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive);
        assert!(h("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(h("POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
        assert!(!h("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert_eq!(
            head("POST / HTTP/1.1\r\nExpect: later\r\n\r\n"),
            Err(Reject::UnsupportedExpectation)
        );
    }

    #[test]
    fn targets() {
        let t = |raw: &str| {
            head(raw)
                .map(|h| h.map(|(h, _)| (h.path, h.query)))
                .map(|o| o.unwrap())
        };
        assert_eq!(
            t("GET http://h:1/a/b?c HTTP/1.1\r\n\r\n"),
            Ok(("/a/b".into(), "c".into()))
        );
        assert_eq!(
            t("GET HTTPS://h HTTP/1.1\r\n\r\n"),
            Ok(("/".into(), "".into()))
        );
        assert_eq!(t("OPTIONS * HTTP/1.1\r\n\r\n"), Ok(("*".into(), "".into())));
        assert_eq!(
            t("GET * HTTP/1.1\r\n\r\n"),
            Err(Reject::Malformed("invalid request target"))
        );
        assert_eq!(
            t("GET ftp://x/ HTTP/1.1\r\n\r\n"),
            Err(Reject::Malformed("invalid request target"))
        );
    }

    #[test]
    fn syntax_errors_are_400() {
        for raw in [
            "GET / HTTP/2.0\r\n\r\n",
            "GET /\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
        ] {
            let got = head(raw);
            assert!(
                matches!(got, Err(ref r) if r.status() == 400),
                "{raw:?} gave {got:?}"
            );
        }
        let raw = b"GET / HTTP/1.1\r\nX: \xff\xfe\r\n\r\n";
        assert_eq!(
            parse_head(raw, &limits()),
            Err(Reject::Malformed("header value is not valid UTF-8"))
        );
    }

    #[test]
    fn size_caps() {
        let l = limits();
        // A long URL with no end of line yet is a 414 as soon as it passes the URL cap.
        let long = format!("GET /{}", "a".repeat(l.max_url + 100));
        assert_eq!(head(&long), Err(Reject::UriTooLong));
        // A complete request line with a long URL.
        let raw = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(l.max_url));
        assert_eq!(head(&raw), Err(Reject::UriTooLong));
        // Headers filling the buffer without an end.
        let raw = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(l.max_head - 19));
        assert_eq!(raw.len(), l.max_head);
        assert_eq!(head(&raw), Err(Reject::HeadTooLarge));
        let raw = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(l.max_headers + 1)
        );
        assert_eq!(head(&raw), Err(Reject::TooManyHeaders));
        // `head` adds Host: one of the max_headers fields.
        let raw = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(l.max_headers - 1)
        );
        assert!(head(&raw).unwrap().is_some());
    }

    fn dechunk(input: &[u8], max: usize) -> Result<(Vec<u8>, usize, bool), Reject> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        // Feed one byte at a time as well as whole, and insist both agree.
        let mut d1 = ChunkedDecoder::new(max);
        let mut out1 = Vec::new();
        let mut used1 = 0;
        for i in 0..input.len() {
            if d1.is_done() {
                break;
            }
            match d1.feed(&input[i..i + 1], &mut out1) {
                Ok(n) => used1 += n,
                Err(e) => {
                    assert_eq!(d.feed(input, &mut out).err(), Some(e.clone()));
                    return Err(e);
                }
            }
        }
        let used = d.feed(input, &mut out)?;
        assert_eq!((&out, used, d.is_done()), (&out1, used1, d1.is_done()));
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn chunked_table() {
        let ok = |input: &str, body: &str, used: usize| {
            assert_eq!(
                dechunk(input.as_bytes(), 100),
                Ok((body.as_bytes().to_vec(), used, true)),
                "{input:?}"
            );
        };
        ok("5\r\nhello\r\n0\r\n\r\n", "hello", 15);
        ok("5\r\nhello\r\n0\r\n\r\nGET /", "hello", 15);
        ok(
            "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
            "abcde",
            34,
        );
        ok("A\r\n0123456789\r\n000\r\n\r\n", "0123456789", 22);
        let partial = dechunk(b"5\r\nhel", 100).unwrap();
        assert_eq!(partial, (b"hel".to_vec(), 6, false));

        let bad = |input: &[u8], want: Reject| {
            assert_eq!(dechunk(input, 100), Err(want), "{input:?}");
        };
        bad(b"x\r\n", Reject::BadChunk("invalid chunk size"));
        bad(b"\r\n", Reject::BadChunk("invalid chunk size"));
        bad(b"5\nhello", Reject::BadChunk("invalid chunk size"));
        bad(
            b"5\r\nhelloXY",
            Reject::BadChunk("chunk data must end in CRLF"),
        );
        bad(
            b"11111111111111111\r\n",
            Reject::BadChunk("chunk size too long"),
        );
        bad(b"ffffffffffffffff\r\n", Reject::BodyTooLarge);
        bad(b"65\r\n", Reject::BodyTooLarge);
        bad(
            b"0\r\nX: 1\n",
            Reject::BadChunk("trailer lines must end in CRLF"),
        );
        bad(
            format!("1;{}\r\n", "e".repeat(5000)).as_bytes(),
            Reject::BadChunk("chunk line or trailer section too long"),
        );
        // The cap counts across chunks.
        let many = "a\r\n0123456789\r\n".repeat(11);
        bad(many.as_bytes(), Reject::BodyTooLarge);
    }

    #[test]
    fn every_reject_has_an_envelope() {
        let indexes: std::collections::BTreeSet<usize> =
            Reject::ALL.iter().map(Reject::index).collect();
        assert_eq!(
            indexes,
            (0..Reject::ALL.len()).collect(),
            "list every Reject once"
        );
        let l = limits();
        for r in Reject::ALL {
            assert!((400..600).contains(&r.status()));
            assert!(r
                .code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(r.message(&l).ends_with('.'));
        }
    }
}
