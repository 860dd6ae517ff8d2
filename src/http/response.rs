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
    let tchar = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
    };
    !name.is_empty()
        && name.bytes().all(tchar)
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Does the handler ask for the connection to close after this response?
pub(crate) fn wants_close(resp: &Response) -> bool {
    resp.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection")
            && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
}

thread_local! {
    /// The response head buffer, reused by every response of this thread.
    static HEAD_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// This second's `Date: ...\r\n` line, formatted once per second per thread.
    static DATE_LINE: std::cell::RefCell<(u64, Vec<u8>)> =
        const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
}

/// The thread's head buffer, handed back when dropped unless a large body made it
/// big (a buffer kept per connection must stay small).
struct HeadBuf(Vec<u8>);

impl HeadBuf {
    fn take() -> HeadBuf {
        let mut v = HEAD_BUF.with(|b| b.take());
        v.clear();
        HeadBuf(v)
    }
}

impl Drop for HeadBuf {
    fn drop(&mut self) {
        if self.0.capacity() <= 16 * 1024 {
            let v = std::mem::take(&mut self.0);
            HEAD_BUF.with(|b| b.set(v));
        }
    }
}

impl std::ops::Deref for HeadBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for HeadBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Append the `Date` header line for now.
fn date_line(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    DATE_LINE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            d.1.clear();
            let _ = write!(d.1, "Date: {}\r\n", crate::time::http_date(now));
            d.0 = secs;
        }
        out.extend_from_slice(&d.1);
    });
}

/// How a response goes out on its connection: what the request allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyMode {
    /// HTTP/1.1: unsized streams are chunked (HTTP/1.0 clients get them delimited by
    /// closing the connection).
    pub http11: bool,
    /// A HEAD request: headers only.
    pub head_only: bool,
    /// The connection stays open afterwards (unless an unsized stream to an HTTP/1.0
    /// client must be delimited by close).
    pub keep_alive: bool,
}

impl ReplyMode {
    /// The server's own answers that end the connection (refusals, busy): HTTP/1.1
    /// framing, a body, `Connection: close`.
    pub(crate) const CLOSE: ReplyMode = ReplyMode {
        http11: true,
        head_only: false,
        keep_alive: false,
    };
}

/// Write `resp`, framed as `mode` says.
pub(crate) fn write_response<W: Write>(
    w: &mut W,
    mut resp: Response,
    mode: ReplyMode,
) -> Result<Written, WriteError> {
    let ReplyMode {
        http11,
        head_only,
        keep_alive,
    } = mode;
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

    // The thread's buffer from its last response: each connection has its own
    // thread, so this is a per-connection buffer, with no allocation per request.
    let mut head = HeadBuf::take();
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason(status));
    date_line(&mut head);
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

/// Plaintext bytes per TLS record (the TLS maximum, and what rustls fills).
pub(crate) const TLS_RECORD: usize = 16 * 1024;
/// Bytes handed to the writer per write: four full records, which rustls encrypts and
/// sends in one `writev`. Files are read in pieces of this size too.
pub(crate) const WRITE_SIZE: usize = 4 * TLS_RECORD;
/// Chunk framing of a full chunk: `fff8\r\n` before and `\r\n` after its data.
const FULL_CHUNK_FRAMING: usize = 8;
/// Room kept in front of the data for the chunk-size line.
const SIZE_ROOM: usize = 16;

/// Copy the body to `w`. Each write is [`WRITE_SIZE`] bytes *on the wire*, framing
/// included, so every TLS record is full: a chunked body carries `WRITE_SIZE - 8`
/// bytes of data per chunk (with 16 KiB of data plus its 8 bytes of framing, rustls
/// sent a full record and an 8-byte one, and the client decrypted twice as many
/// records). Short reads are gathered until a write is full, except for
/// [`Flush::EachRead`], where each read goes out at once; the end of the chunked
/// stream rides in the last chunk's write.
fn stream_body<W: Write>(
    w: &mut W,
    mut reader: Box<dyn Read + Send>,
    len: Option<u64>,
    chunked: bool,
    flush: Flush,
) -> Result<Written, WriteError> {
    let data_max = if chunked {
        WRITE_SIZE - FULL_CHUNK_FRAMING
    } else {
        WRITE_SIZE
    };
    // Size-line room in front, CRLF and the last-chunk marker `0\r\n\r\n` behind.
    let mut buf = vec![0u8; SIZE_ROOM + data_max + 2 + 5];
    let mut written: u64 = 0;
    let mut ended = false;
    while !ended {
        let want = match len {
            Some(total) => (total - written).min(data_max as u64) as usize,
            None => data_max,
        };
        if want == 0 {
            break;
        }
        let mut n = 0;
        while n < want {
            match reader.read(&mut buf[SIZE_ROOM + n..SIZE_ROOM + want]) {
                Ok(0) if len.is_some() => {
                    let detail = "body ended before its declared length";
                    return torn(w, &mut buf, n, chunked, written, detail);
                }
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(got) => {
                    n += got;
                    if flush == Flush::EachRead {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return torn(w, &mut buf, n, chunked, written, &e.to_string()),
            }
        }
        send(w, &mut buf, n, chunked, ended && chunked)?;
        written += n as u64;
        if flush == Flush::EachRead && !ended {
            w.flush().map_err(|_| WriteError::Client)?;
        }
    }
    w.flush().map_err(|_| WriteError::Client)?;
    Ok(Written { bytes: written })
}

/// The source failed or ended early after `n` more bytes were read: send those (the
/// client keeps what it got, and a resumable download resumes after it), then report
/// the failure so the connection is dropped without a clean end.
fn torn<W: Write>(
    w: &mut W,
    buf: &mut [u8],
    n: usize,
    chunked: bool,
    written: u64,
    detail: &str,
) -> Result<Written, WriteError> {
    send(w, buf, n, chunked, false)?;
    Err(WriteError::Source {
        written: written + n as u64,
        detail: detail.into(),
    })
}

/// Write the `n` data bytes at `buf[SIZE_ROOM..]` in one write: as a chunk when
/// `chunked`, followed by the last-chunk marker when `last`.
fn send<W: Write>(
    w: &mut W,
    buf: &mut [u8],
    n: usize,
    chunked: bool,
    last: bool,
) -> Result<(), WriteError> {
    if !chunked {
        if n > 0 {
            w.write_all(&buf[SIZE_ROOM..SIZE_ROOM + n])
                .map_err(|_| WriteError::Client)?;
        }
        return Ok(());
    }
    let mut start = SIZE_ROOM;
    let mut end = SIZE_ROOM + n;
    if n > 0 {
        let mut line = [0u8; SIZE_ROOM];
        let mut cur = io::Cursor::new(&mut line[..]);
        let _ = write!(cur, "{n:x}\r\n");
        let size_len = cur.position() as usize;
        start -= size_len;
        buf[start..SIZE_ROOM].copy_from_slice(&line[..size_len]);
        buf[end..end + 2].copy_from_slice(b"\r\n");
        end += 2;
    }
    if last {
        buf[end..end + 5].copy_from_slice(b"0\r\n\r\n");
        end += 5;
    }
    if start == end {
        return Ok(());
    }
    w.write_all(&buf[start..end])
        .map_err(|_| WriteError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/1.1 GET on a keep-alive connection.
    const KEEP_ALIVE: ReplyMode = ReplyMode {
        http11: true,
        head_only: false,
        keep_alive: true,
    };
    const HTTP10: ReplyMode = ReplyMode {
        http11: false,
        ..KEEP_ALIVE
    };
    const HEAD: ReplyMode = ReplyMode {
        head_only: true,
        ..KEEP_ALIVE
    };

    fn render(resp: Response, mode: ReplyMode) -> String {
        let mut out = Vec::new();
        write_response(&mut out, resp, mode).unwrap();
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
        // EachRead: one chunk per event. AtEnd: reads are gathered into full records,
        // so both events share one chunk (and its write carries the last-chunk marker).
        let each = "8\r\n{\"a\":1}\n\r\n8\r\n{\"b\":2}\n\r\n0\r\n\r\n";
        let gathered = "10\r\n{\"a\":1}\n{\"b\":2}\n\r\n0\r\n\r\n";
        for (flush, expected, tail) in [(Flush::EachRead, 4, each), (Flush::AtEnd, 1, gathered)] {
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
            write_response(&mut w, resp, KEEP_ALIVE).unwrap();
            // EachRead: after the head, after each event, and at the end.
            assert_eq!(w.flushes.len(), expected, "{flush:?}");
            let text = String::from_utf8(w.out).unwrap();
            assert!(text.ends_with(tail), "{flush:?}: {text}");
        }
    }

    /// Records every write's length.
    #[derive(Default)]
    struct Writes(Vec<usize>, Vec<u8>);

    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.push(b.len());
            self.1.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A source that hands out at most 1000 bytes per read, like a pipe or a socket.
    struct Trickle(io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1000);
            self.0.read(&mut buf[..n])
        }
    }

    fn body_writes(len: Option<u64>, total: usize) -> (Vec<usize>, Vec<u8>) {
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut w = Writes::default();
        let resp = Response {
            status: 200,
            headers: vec![],
            body: Body::Stream {
                reader: Box::new(Trickle(io::Cursor::new(data))),
                len,
                flush: Flush::AtEnd,
            },
            subject: None,
        };
        write_response(&mut w, resp, KEEP_ALIVE).unwrap();
        // The first write is the head.
        let head = w.0[0];
        (w.0[1..].to_vec(), w.1[head..].to_vec())
    }

    #[test]
    fn regression_every_tls_record_of_a_long_body_is_full() {
        // Issue 16: a 16 KiB chunk plus its 8 bytes of framing went out as one full
        // TLS record and one 8-byte record. Every write but the last must now be a
        // whole number of records, framing included, gathered from short reads.
        let total = 300_000;
        for len in [None, Some(total as u64)] {
            let (writes, body) = body_writes(len, total);
            let (last, full) = writes.split_last().unwrap();
            assert!(full.iter().all(|&n| n == WRITE_SIZE), "{len:?}: {writes:?}");
            assert!(*last <= WRITE_SIZE, "{len:?}: {writes:?}");
            assert_eq!(writes.iter().sum::<usize>(), body.len());
            if len.is_none() {
                // Chunks of 0xfff8 bytes, the marker riding with the last one.
                assert!(body.starts_with(b"fff8\r\n"));
                assert!(body.ends_with(b"\r\n0\r\n\r\n"));
                assert_eq!(writes.len(), total.div_ceil(WRITE_SIZE - 8));
            } else {
                assert_eq!(writes.len(), total.div_ceil(WRITE_SIZE));
            }
        }
    }

    #[test]
    fn a_gathered_chunked_body_decodes_to_the_source_bytes() {
        for total in [0, 1, WRITE_SIZE - 8, WRITE_SIZE - 7, 3 * WRITE_SIZE + 5] {
            let (_, body) = body_writes(None, total);
            let mut dec = super::super::parse::ChunkedDecoder::new(usize::MAX);
            let mut out = Vec::new();
            let used = dec.feed(&body, &mut out).unwrap();
            assert!(dec.is_done(), "{total}");
            assert_eq!(used, body.len(), "{total}");
            let want: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            assert_eq!(out, want, "{total}");
        }
    }

    #[test]
    fn a_source_failing_mid_stream_sends_what_it_read_then_tears() {
        struct Fails(bool);
        impl Read for Fails {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(io::Error::other("disk gone"));
                }
                buf[..3].copy_from_slice(b"abc");
                Ok(3)
            }
        }
        for (len, sent) in [(None, "3\r\nabc\r\n"), (Some(10), "abc")] {
            let mut out = Vec::new();
            let resp = Response {
                status: 200,
                headers: vec![],
                body: Body::Stream {
                    reader: Box::new(Fails(false)),
                    len,
                    flush: Flush::AtEnd,
                },
                subject: None,
            };
            let got = write_response(&mut out, resp, KEEP_ALIVE);
            assert!(matches!(got, Err(WriteError::Source { written: 3, .. })));
            let text = String::from_utf8(out).unwrap();
            // Framed as a chunk when chunked, never followed by the last-chunk marker.
            assert!(text.ends_with(&format!("\r\n\r\n{sent}")), "{text}");
        }
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
            render(resp, KEEP_ALIVE),
            "HTTP/1.1 201 Created\nX-Ok: yes\nContent-Length: 2\nConnection: keep-alive\n\nhi"
        );
    }

    #[test]
    fn unsized_stream_is_chunked_for_11_and_close_delimited_for_10() {
        assert_eq!(
            render(stream(b"hello", None), KEEP_ALIVE),
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nConnection: keep-alive\n\n5\n\
             hello\n0\n"
        );
        assert_eq!(
            render(stream(b"hello", None), HTTP10),
            "HTTP/1.1 200 OK\nConnection: close\n\nhello"
        );
    }

    #[test]
    fn head_writes_length_but_no_body() {
        assert_eq!(
            render(stream(b"hello", Some(5)), HEAD),
            "HTTP/1.1 200 OK\nContent-Length: 5\nConnection: keep-alive\n"
        );
    }

    #[test]
    fn short_stream_is_an_error_not_a_clean_end() {
        let mut out = Vec::new();
        let got = write_response(&mut out, stream(b"abc", Some(10)), KEEP_ALIVE);
        assert!(matches!(got, Err(WriteError::Source { written: 3, .. })));
    }

    #[test]
    fn long_stream_is_cut_at_its_declared_length() {
        let text = render(stream(b"abcdef", Some(4)), KEEP_ALIVE);
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
        assert!(render(resp, ReplyMode::CLOSE).starts_with("HTTP/1.1 500 Internal Server Error"));
    }
}
