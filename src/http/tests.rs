//! Behaviour tests: a real [`Server`] on 127.0.0.1:0 with a self-signed certificate,
//! driven by a raw rustls client (so tests control every byte and the TLS close) and by
//! curl. Each test is named after what a user would notice, several after a tiny_http
//! failure this server must never repeat.

use super::*;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};

use super::parse::ChunkedDecoder;

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("joinery-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tls() -> &'static tls::LoadedTls {
    static TLS: OnceLock<tls::LoadedTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = temp_dir("cert");
        tls::load_or_generate(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap()
    })
}

fn client_config() -> Arc<ClientConfig> {
    static CFG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add(tls().cert_der.clone()).unwrap();
        let mut cfg = ClientConfig::builder_with_provider(Arc::new(tls::provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    })
    .clone()
}

/// A body reader that hands out its data in several reads, like a file or a pipe.
struct Pieces(Vec<&'static [u8]>);

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Ok(0);
        }
        let piece = self.0.remove(0);
        let n = piece.len().min(buf.len());
        buf[..n].copy_from_slice(&piece[..n]);
        Ok(n)
    }
}

/// A reader handing out at most 1000 bytes per read, like a pipe.
struct Trickle<R>(R);

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1000);
        self.0.read(&mut buf[..n])
    }
}

/// A client socket that notes the length of every TLS record the server sends.
struct RecordCounter {
    sock: TcpStream,
    /// Header bytes of the record being read, and what is left of its body.
    header: Vec<u8>,
    left: usize,
    /// (content type, length) of each record.
    records: Vec<(u8, usize)>,
}

impl Read for RecordCounter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            if self.left > 0 {
                let k = self.left.min(rest.len());
                self.left -= k;
                rest = &rest[k..];
                continue;
            }
            let k = (5 - self.header.len()).min(rest.len());
            self.header.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
            if self.header.len() == 5 {
                let len = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                self.records.push((self.header[0], len));
                self.left = len;
                self.header.clear();
            }
        }
        Ok(n)
    }
}

impl Write for RecordCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[test]
fn regression_a_long_response_fills_its_tls_records() {
    // Issue 16: each 16 KiB chunk plus its 8 bytes of framing went out as a full TLS
    // record and an 8-byte one, so the client decrypted twice as many records as
    // needed. Now a long body's records are full whatever the source's read sizes.
    let srv = start(short_limits());
    for query in ["", "?sized=1"] {
        let sock = TcpStream::connect(srv.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn =
            ClientConnection::new(client_config(), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let counter = RecordCounter {
            sock,
            header: Vec::new(),
            left: 0,
            records: Vec::new(),
        };
        let mut s = StreamOwned::new(conn, counter);
        let req = format!("GET /trickle{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.len() > 300_000, "{query}: {} bytes", got.len());
        // Application data records (type 23; TLS 1.3 also carries session tickets and
        // the close_notify in them): 16 KiB of plaintext, its content type and the
        // 16-byte tag make a full one.
        let full = 16 * 1024 + 1 + 16;
        let data: Vec<usize> = s
            .sock
            .records
            .iter()
            .filter(|r| r.0 == 23)
            .map(|r| r.1)
            .collect();
        let partial = data.iter().filter(|&&n| n != full).count();
        let needed = got.len().div_ceil(16 * 1024);
        // Head, last piece, close_notify and up to two session tickets.
        assert!(
            data.len() <= needed + 5 && partial <= 5,
            "{query}: {} records for {} bytes ({partial} not full): {data:?}",
            data.len(),
            got.len()
        );
    }
}

/// A stream with nothing to send for `gap` before each of its pieces.
struct Drip {
    left: usize,
    gap: Duration,
}

impl Read for Drip {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        thread::sleep(self.gap);
        self.left -= 1;
        buf[..5].copy_from_slice(b"drip\n");
        Ok(5)
    }
}

struct TestHandler;

impl Handler for TestHandler {
    fn handle(&self, req: &Request) -> Response {
        let param = |name: &str| {
            req.query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
        };
        match req.path.as_str() {
            "/health" => Response::json(200, &json!({"status": "ok"})),
            "/echo" => Response::json(
                200,
                &json!({
                    "method": req.method,
                    "query": req.query,
                    "body": String::from_utf8_lossy(&req.body),
                    "peer": format!("{:?}", req.peer),
                }),
            ),
            "/stream" => Response {
                status: 200,
                headers: vec![],
                body: Body::Stream {
                    reader: Box::new(Pieces(vec![b"one,", b"two,", b"three"])),
                    len: None,
                    flush: Flush::AtEnd,
                },
                subject: None,
            },
            "/short" => Response {
                status: 200,
                headers: vec![],
                body: Body::Stream {
                    reader: Box::new(&b"abc"[..]),
                    len: Some(10),
                    flush: Flush::AtEnd,
                },
                subject: None,
            },
            // 256 MiB of zeros, sized: more than any socket buffer holds.
            "/big" => Response {
                status: 200,
                headers: vec![],
                body: Body::Stream {
                    reader: Box::new(io::repeat(0).take(256 << 20)),
                    len: Some(256 << 20),
                    flush: Flush::AtEnd,
                },
                subject: None,
            },
            // Three small pieces `ms` apart: a stream idle by design, like a watch.
            "/drip" => Response {
                status: 200,
                headers: vec![],
                body: Body::Stream {
                    reader: Box::new(Drip {
                        left: 3,
                        gap: Duration::from_millis(param("ms").unwrap_or(300)),
                    }),
                    len: None,
                    flush: Flush::EachRead,
                },
                subject: None,
            },
            // 300,000 bytes in reads of at most 1000, unsized or sized (`?sized=1`).
            "/trickle" => Response {
                status: 200,
                headers: vec![],
                body: Body::Stream {
                    reader: Box::new(Trickle(io::repeat(7).take(300_000))),
                    len: param("sized").map(|_| 300_000),
                    flush: Flush::AtEnd,
                },
                subject: None,
            },
            "/panic" => panic!("secret-token-do-not-show"),
            "/slow" => {
                thread::sleep(Duration::from_millis(param("ms").unwrap_or(500)));
                Response::json(200, &json!({"slept": true}))
            }
            _ => Response::error(404, "not_found", "No such route."),
        }
    }
}

/// A server running on its own thread, shut down and joined on drop.
struct Running {
    addr: std::net::SocketAddr,
    handle: ShutdownHandle,
    stats: Stats,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Shut down and return how long `run` took to return.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.handle.shutdown();
        if let Some(th) = self.thread.take() {
            th.join().unwrap().unwrap();
        }
        t.elapsed()
    }

    fn wait_active(&self, want: usize, within: Duration) -> bool {
        wait_until(within, || self.stats.active_connections() == want)
    }
}

/// Polls `f` every 5 ms until it is true or `within` has passed; its last answer.
fn wait_until(within: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    f()
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(th) = self.thread.take() {
            let _ = th.join();
        }
    }
}

fn start(limits: Limits) -> Running {
    let server =
        Server::bind("127.0.0.1:0".parse().unwrap(), tls().config.clone(), limits).unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let stats = server.stats();
    let thread = thread::spawn(move || server.run(Arc::new(TestHandler)));
    Running {
        addr,
        handle,
        stats,
        thread: Some(thread),
    }
}

fn short_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(2),
        head_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(2),
        grace: Duration::from_secs(3),
        ..Limits::default()
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A raw HTTP/1.1-over-TLS client that keeps unread bytes between responses.
struct Client {
    s: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: std::net::SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn =
            ClientConnection::new(client_config(), ServerName::try_from("localhost").unwrap())
                .unwrap();
        Client {
            s: StreamOwned::new(conn, sock),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.s.write_all(raw)?;
        self.s.flush()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.s.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read one response; `head_only` for HEAD requests.
    fn response(&mut self, head_only: bool) -> io::Result<Resp> {
        let (status, headers, n) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                let headers = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (r.code.unwrap(), headers, n);
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        self.buf.drain(..n);
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 100 {
            return Ok(resp);
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp.header("transfer-encoding") == Some("chunked") {
            let mut dec = ChunkedDecoder::new(usize::MAX);
            loop {
                let used = dec.feed(&self.buf, &mut resp.body).unwrap();
                self.buf.drain(..used);
                if dec.is_done() {
                    break;
                }
                if self.fill()? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        } else {
            while self.fill()? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    fn request(&mut self, raw: &str) -> Resp {
        self.send(raw.as_bytes()).unwrap();
        self.response(raw.starts_with("HEAD ")).unwrap()
    }

    /// True when the server ends the connection (EOF or error) within `within`.
    /// Did the server close the connection (EOF, or a reset) within `within`? A read
    /// that merely timed out is a connection still open.
    fn closed_within(&mut self, within: Duration) -> bool {
        self.s.sock.set_read_timeout(Some(within)).unwrap();
        let t = Instant::now();
        loop {
            match self.fill() {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Ok(0) | Err(_) => return t.elapsed() <= within + Duration::from_millis(50),
                Ok(_) => {}
            }
        }
    }
}

fn get(addr: std::net::SocketAddr, path: &str) -> Resp {
    let mut c = Client::connect(addr);
    c.request(&format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ))
}

fn assert_envelope(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("connection"), Some("close"));
    let v = r.json();
    assert_eq!(v["error"], code);
    assert!(v["message"].as_str().unwrap().len() > 10);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    for i in 0..3 {
        let r = c.request(&format!("GET /echo?i={i} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert!(r.header("date").unwrap().ends_with(" GMT"));
        assert_eq!(r.json()["query"], format!("i={i}"));
    }
    let r = c.request("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.json()["body"], "hello");
    // HEAD: the length GET would have, but no body (the next response parses cleanly).
    let r = c.request("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("15"));
    let r = c.request("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    assert_eq!(r.json()["body"], "abcde");
    // Two pipelined requests in one write.
    c.send(b"GET /echo?p=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?p=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(c.response(false).unwrap().json()["query"], "p=1");
    let last = c.response(false).unwrap();
    assert_eq!(last.json()["query"], "p=2");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(1)));
    assert_eq!(srv.stats.accepted(), 1);
}

#[test]
fn unsized_stream_is_sent_chunked_and_to_http10_by_close() {
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    let r = c.request("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, b"one,two,three");
    // Still usable afterwards.
    assert_eq!(
        c.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );

    let mut c = Client::connect(srv.addr);
    let r = c.request("GET /stream HTTP/1.0\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"one,two,three");
}

#[test]
fn sized_stream_that_ends_early_is_torn_not_truncated_cleanly() {
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    c.send(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // The client must see an error (no close_notify, fewer bytes than promised).
    assert!(c.response(false).is_err());
    // curl reports it too.
    let out = curl(srv.addr, &["/short"]);
    assert!(!out.status.success());
}

#[test]
fn content_length_of_u64_max_is_refused_and_server_lives() {
    // tiny_http aborted the whole process on this header.
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    let r =
        c.request("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n");
    assert_envelope(&r, 413, "body_too_large");
    let mut c = Client::connect(srv.addr);
    let r =
        c.request("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n");
    assert_envelope(&r, 400, "bad_content_length");
    let mut c = Client::connect(srv.addr);
    let r = c.request(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    );
    assert_envelope(&r, 400, "bad_content_length");
    assert_eq!(get(srv.addr, "/health").status, 200);
}

#[test]
fn transfer_encoding_with_content_length_is_400() {
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    let r = c.request(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_envelope(&r, 400, "conflicting_framing");
    let mut c = Client::connect(srv.addr);
    let r = c.request("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_envelope(&r, 501, "unsupported_transfer_encoding");
    let mut c = Client::connect(srv.addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    assert_envelope(&r, 400, "bad_request");
}

#[test]
fn one_mib_header_is_431_without_waiting_for_all_of_it() {
    let srv = start(short_limits());
    // Send 20 KiB of a header that would be 1 MiB and then stall: the answer must come
    // anyway, so the server cannot be buffering the whole header.
    let mut c = Client::connect(srv.addr);
    let mut partial = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    partial.resize(20 * 1024, b'a');
    c.send(&partial).unwrap();
    let t = Instant::now();
    let r = c.response(false).unwrap();
    assert_envelope(&r, 431, "headers_too_large");
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );

    // And a client that insists on sending the whole 1 MiB still gets its answer.
    let mut c = Client::connect(srv.addr);
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(1024 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    // The server drains unread input briefly after answering, so this send completes
    // and the answer is not lost to a TCP reset.
    let _ = c.send(&big);
    let r = c.response(false).unwrap();
    assert_envelope(&r, 431, "headers_too_large");
    let r = get(srv.addr, &format!("/{}", "u".repeat(9000)));
    assert_envelope(&r, 414, "uri_too_long");
}

#[test]
fn body_over_64_kib_is_413() {
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    let body = vec![b'x'; 64 * 1024 + 1];
    let mut raw = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let _ = c.send(&raw);
    assert_envelope(&c.response(false).unwrap(), 413, "body_too_large");

    // The same cap applies after de-chunking.
    let mut c = Client::connect(srv.addr);
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..17 {
        raw.extend_from_slice(b"1000\r\n");
        raw.extend_from_slice(&[b'y'; 4096]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let _ = c.send(&raw);
    assert_envelope(&c.response(false).unwrap(), 413, "body_too_large");

    // Exactly at the cap is fine.
    let mut c = Client::connect(srv.addr);
    let body = vec![b'z'; 64 * 1024];
    let mut raw = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    c.send(&raw).unwrap();
    assert_eq!(c.response(false).unwrap().status, 200);
}

#[test]
fn more_than_100_headers_is_431() {
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    let r = c.request(&format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(101)
    ));
    assert_envelope(&r, 431, "too_many_headers");
    let mut c = Client::connect(srv.addr);
    let r = c.request(&format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(99)
    ));
    assert_eq!(r.status, 200);
}

#[test]
fn slowloris_head_trickled_past_the_deadline_is_closed() {
    let srv = start(short_limits()); // head_timeout 500 ms
    let mut c = Client::connect(srv.addr);
    c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    // One byte every 50 ms: every read makes progress, only a total deadline stops it.
    let mut got = None;
    for _ in 0..40 {
        if c.send(b"X").is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
        c.s.sock.set_nonblocking(true).unwrap();
        let r = c.fill();
        c.s.sock.set_nonblocking(false).unwrap();
        if matches!(r, Ok(n) if n > 0) || matches!(r, Ok(0)) {
            got = Some(t.elapsed());
            break;
        }
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::WouldBlock {
                got = Some(t.elapsed());
                break;
            }
        }
    }
    let elapsed = got.expect("server never gave up on a trickled head");
    assert!(elapsed < Duration::from_millis(1200), "{elapsed:?}");
    assert!(srv.wait_active(0, Duration::from_secs(2)));
}

#[test]
fn close_notify_then_holding_the_socket_releases_the_worker() {
    // tiny_http spun a core at 100% on this.
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    assert_eq!(
        c.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    assert_eq!(srv.stats.active_connections(), 1);
    c.s.conn.send_close_notify();
    c.s.conn.complete_io(&mut c.s.sock).unwrap();
    // The TCP socket stays open; the worker must still be let go at once (a spinning
    // worker would keep the connection counted as active).
    assert!(srv.wait_active(0, Duration::from_millis(500)));
    // And the server closed its side: our read sees the end.
    assert!(c.closed_within(Duration::from_millis(500)));
}

#[test]
fn past_max_connections_a_client_gets_503_and_service_resumes_after() {
    let srv = start(Limits {
        max_connections: 2,
        ..short_limits()
    });
    let mut a = Client::connect(srv.addr);
    let mut b = Client::connect(srv.addr);
    assert_eq!(
        a.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    assert_eq!(
        b.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    let mut c = Client::connect(srv.addr);
    let r = c.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_envelope(&r, 503, "server_busy");
    assert!(srv.stats.rejected_busy() >= 1);
    drop(a);
    assert!(srv.wait_active(1, Duration::from_secs(2)));
    assert_eq!(get(srv.addr, "/health").status, 200);
    assert_eq!(
        b.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
}

#[test]
fn five_hundred_idle_connections_do_not_delay_a_health_check() {
    // Room for all of them (one address, none past its handshake): this is about the
    // cost of idle sockets, not about the caps.
    let srv = start(short_limits_with(|l| {
        l.handshake_timeout = Duration::from_secs(10);
        l.max_connections = 1000;
        l.max_connections_per_address = 1000;
    }));
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    assert!(srv.wait_active(500, Duration::from_secs(10)));
    let t = Instant::now();
    assert_eq!(get(srv.addr, "/health").status, 200);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    drop(idle);
    // The idle connections' workers are freed when their clients leave.
    assert!(srv.wait_active(0, Duration::from_secs(5)));
}

/// Issue 12 item 2: idle TCP connections held every slot, and past the busy queue the
/// refusals were resets. Now connections still handshaking hold at most three quarters
/// of the slots and the oldest gives way to a newcomer, so a real client gets in.
#[test]
fn sockets_that_never_speak_cannot_keep_a_real_client_out() {
    let srv = start(short_limits_with(|l| {
        l.handshake_timeout = Duration::from_secs(30);
        l.max_connections = 8;
        l.max_connections_per_address = 100;
    }));
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    // Six of eight slots may be handshaking; the other two were refused.
    assert!(srv.wait_active(6, Duration::from_secs(5)));
    // A real client gets in (once the idle ones are older than EVICT_AFTER).
    let t = Instant::now();
    let status = loop {
        let r = get(srv.addr, "/health");
        if r.status == 200 || t.elapsed() > Duration::from_secs(5) {
            break r.status;
        }
        assert_envelope(&r, 503, "server_busy");
    };
    assert_eq!(status, 200, "after {:?}", t.elapsed());
    drop(idle);
}

/// One address holds at most `max_connections_per_address`; past it, a clean 503.
#[test]
fn one_address_gets_its_share_and_then_a_clean_503() {
    let srv = start(short_limits_with(|l| {
        l.handshake_timeout = Duration::from_secs(30);
        l.max_connections_per_address = 4;
    }));
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    assert!(srv.wait_active(4, Duration::from_secs(5)));
    for _ in 0..20 {
        assert_envelope(&get(srv.addr, "/health"), 503, "server_busy");
    }
    drop(idle);
    assert!(srv.wait_active(0, Duration::from_secs(5)));
    assert_eq!(get(srv.addr, "/health").status, 200);
}

/// Issue 12 item 3: the write deadline was per write, so a client taking a few bytes
/// at a time held its worker for ever. Now it is cut off below the minimum rate.
#[test]
fn a_slow_reader_is_cut_off_below_the_minimum_rate() {
    let srv = start(short_limits_with(|l| {
        l.min_transfer_rate = 1 << 20;
        l.min_rate_grace = Duration::from_millis(500);
    }));
    let mut c = Client::connect(srv.addr);
    c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Take about 20 KB/s, far below 1 MiB/s; every read well inside the write timeout.
    // The server lets go of the connection (its worker is free) while we still read
    // what the socket buffers hold.
    assert!(srv.wait_active(1, Duration::from_secs(2)));
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    let mut got = 0usize;
    while srv.stats.active_connections() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "still served after {got} bytes"
        );
        match c.s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        srv.wait_active(0, Duration::from_secs(2)),
        "worker still held"
    );
    assert!(got < 256 << 20, "the whole body arrived");
    eprintln!("slow reader let go after {:?} and {got} bytes", t.elapsed());
}

/// The rate counts only time the server is blocked on the client: a stream that is idle
/// because the server has nothing to send (a watch, a long poll) is never cut off.
#[test]
fn a_stream_idle_by_design_is_not_cut_off() {
    let srv = start(short_limits_with(|l| {
        l.min_transfer_rate = 1 << 20;
        l.min_rate_grace = Duration::from_millis(100);
    }));
    let mut c = Client::connect(srv.addr);
    let r = c.request("GET /drip?ms=400 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"drip\ndrip\ndrip\n");
}

fn short_limits_with(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = short_limits();
    f(&mut l);
    l
}

#[test]
fn handler_panic_is_a_500_and_the_server_carries_on() {
    let srv = start(short_limits());
    let r = get(srv.addr, "/panic");
    assert_envelope(&r, 500, "internal_error");
    assert!(!String::from_utf8_lossy(&r.body).contains("secret"));
    for _ in 0..3 {
        assert_eq!(get(srv.addr, "/health").status, 200);
    }
}

#[test]
fn shutdown_lets_an_in_flight_request_finish() {
    let mut srv = start(short_limits());
    let addr = srv.addr;
    let slow = thread::spawn(move || get(addr, "/slow?ms=600"));
    // An idle keep-alive connection must not hold shutdown up.
    let mut idle = Client::connect(addr);
    assert_eq!(
        idle.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    assert!(srv.wait_active(2, Duration::from_secs(2)));
    thread::sleep(Duration::from_millis(100));
    let took = srv.stop();
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["slept"], true);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(idle.closed_within(Duration::from_millis(200)));
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn shutdown_gives_up_on_a_request_slower_than_grace() {
    let mut srv = start(short_limits_with(|l| l.grace = Duration::from_millis(300)));
    let addr = srv.addr;
    let _slow = thread::spawn(move || {
        let mut c = Client::connect(addr);
        let _ = c.send(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = c.response(false);
    });
    assert!(srv.wait_active(1, Duration::from_secs(2)));
    thread::sleep(Duration::from_millis(100));
    let took = srv.stop();
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn plain_http_on_the_tls_port_is_just_closed() {
    let srv = start(short_limits());
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(!String::from_utf8_lossy(&out).contains("HTTP/1.1"));
    assert!(srv.wait_active(0, Duration::from_secs(1)));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .unwrap();
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 100);
    c.send(b"ping").unwrap();
    let r = c.response(false).unwrap();
    assert_eq!(r.json()["body"], "ping");
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let srv = start(short_limits_with(|l| {
        l.idle_timeout = Duration::from_millis(300)
    }));
    let mut c = Client::connect(srv.addr);
    assert_eq!(
        c.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    assert!(c.closed_within(Duration::from_secs(1)));
    assert!(srv.wait_active(0, Duration::from_millis(500)));
}

fn curl(addr: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    let (path, rest) = args.split_first().unwrap();
    std::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "5", "--pinnedpubkey", &tls().pin])
        .args(rest)
        .arg(format!("https://127.0.0.1:{}{path}", addr.port()))
        .output()
        .unwrap()
}

#[test]
fn curl_talks_to_it_with_the_pinned_key() {
    let srv = start(short_limits());
    let out = curl(srv.addr, &["/health"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"status":"ok"}"#);

    let out = curl(srv.addr, &["/echo?a=b", "--data-binary", "payload"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["method"].as_str(), v["body"].as_str()),
        (Some("POST"), Some("payload"))
    );

    let out = curl(
        srv.addr,
        &[
            "/echo",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "chunky",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["body"], "chunky");

    let out = curl(srv.addr, &["/stream"]);
    assert_eq!(out.stdout, b"one,two,three");

    // A different key fails the pin (curl exit 90).
    let wrong = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = std::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "5", "--pinnedpubkey", wrong])
        .arg(format!("https://127.0.0.1:{}/health", srv.addr.port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(90));
}

#[test]
fn unix_socket_serves_plain_http_with_the_peer_uid() {
    let dir = temp_dir("unix");
    let path = dir.join("api.sock");
    let server = Server::bind_unix(&path, short_limits()).unwrap();
    let handle = server.shutdown_handle();
    let th = thread::spawn(move || server.run(Arc::new(TestHandler)));
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let uid = crate::sys::uid();
    assert!(
        out.contains(&format!("Unix {{ uid: Some({uid}) }}")),
        "{out}"
    );
    handle.shutdown();
    th.join().unwrap().unwrap();
    assert!(!path.exists());
}

#[test]
fn sigterm_stops_the_server() {
    let mut srv = start(short_limits());
    install_signal_handlers(srv.handle.clone()).unwrap();
    // The handler just installed only writes a byte to a pipe.
    crate::sys::raise(libc::SIGTERM);
    // Seen without a poll of the pipe (the handler notes which pipe it poked).
    assert!(srv.handle.is_shutdown());
    let th = srv.thread.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !th.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(th.is_finished(), "SIGTERM did not stop the server");
    th.join().unwrap().unwrap();
}

/// The test handler, counting [`Handler::shutting_down`] calls.
struct Counting(Arc<std::sync::atomic::AtomicUsize>);

impl Handler for Counting {
    fn handle(&self, req: &Request) -> Response {
        TestHandler.handle(req)
    }
    fn shutting_down(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn one_shutdown_handle_stops_both_servers_and_every_thread_they_started() {
    let dir = temp_dir("shared-shutdown");
    let path = dir.join("api.sock");
    let tcp = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        tls().config.clone(),
        short_limits(),
    )
    .unwrap();
    let addr = tcp.local_addr().unwrap();
    let handle = tcp.shutdown_handle();
    let unix = Server::bind_unix(&path, short_limits())
        .unwrap()
        .sharing_shutdown(&handle);
    let stats = [tcp.stats(), unix.stats()];
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = Arc::new(Counting(calls.clone()));
    let h = handler.clone();
    let runs = [
        thread::spawn(move || tcp.run(h)),
        thread::spawn(move || unix.run(handler)),
    ];
    // A request in flight on each server when shutdown is asked for.
    let slow_tcp = thread::spawn(move || get(addr, "/slow?ms=600"));
    let p = path.clone();
    let slow_unix = thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
        s.write_all(b"GET /slow?ms=600 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert!(wait_until(Duration::from_secs(2), || stats
        .iter()
        .all(|s| s.active_connections() == 1)));
    handle.shutdown();
    for run in runs {
        run.join().unwrap().unwrap();
    }
    assert_eq!(slow_tcp.join().unwrap().status, 200);
    let out = slow_unix.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    // `run` returned only once its workers had ended (the busy thread is joined).
    assert_eq!(stats.each_ref().map(|s| s.workers()), [0, 0]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(!path.exists());
}

/// Issue 16: every keep-alive connection held a worker thread, asleep in poll(2)
/// between requests and woken for each (a sleep and a wake-up per request, 0.56x
/// nginx's rate). Now a connection waiting for its next request is parked in the epoll
/// set and holds no thread; a handler that blocks still stalls nobody else, and
/// shutdown closes the parked connections at once.
#[test]
fn regression_idle_keep_alive_connections_hold_no_thread() {
    let mut srv = start(short_limits());
    let health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(srv.addr)).collect();
    for c in &mut clients {
        assert_eq!(c.request(health).status, 200);
    }
    assert_eq!(srv.stats.active_connections(), 16);
    let workers = srv.stats.workers();
    assert!(
        workers <= 4,
        "{workers} worker threads for 16 idle connections"
    );
    // One connection's handler blocks; every other one is still answered at once.
    let mut slow = clients.pop().unwrap();
    let blocked = thread::spawn(move || {
        let r = slow.request("GET /slow?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n");
        (r.status, slow)
    });
    assert!(wait_until(Duration::from_secs(2), || srv.stats.workers() >= 2));
    let t = Instant::now();
    for c in clients.iter_mut().rev() {
        assert_eq!(c.request(health).status, 200);
    }
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    let (status, slow) = blocked.join().unwrap();
    assert_eq!(status, 200);
    clients.push(slow);
    // Shutdown closes them all cleanly (close_notify: EOF, not an error) at once.
    assert!(srv.stop() < Duration::from_secs(1));
    for c in &mut clients {
        c.s.sock
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(c.fill().unwrap(), 0);
    }
}

/// Connections are registered edge-triggered: input that arrives while a worker holds
/// the connection is reported once, to whichever worker waits. It must not be lost: a
/// request sent while the one before is still being handled is answered right after it,
/// not when the client gives up (nor at the idle deadline).
#[test]
fn a_request_sent_while_its_connection_is_served_is_answered_next() {
    let srv = start(short_limits());
    let mut c = Client::connect(srv.addr);
    assert_eq!(
        c.request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    // Another parked connection keeps a second worker waiting for reports, so the
    // report of the second request goes to that worker, not to the one holding it.
    let mut other = Client::connect(srv.addr);
    assert_eq!(
        other
            .request("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    for _ in 0..3 {
        c.send(b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // The first request is in its handler (its read emptied the socket) when the
        // second one arrives.
        thread::sleep(Duration::from_millis(100));
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.s.sock
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        assert_eq!(c.response(false).unwrap().status, 200);
        let t = Instant::now();
        let second = c
            .response(false)
            .expect("the second request was not answered");
        assert_eq!(second.status, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
}

/// A client that half-closes after its last request (`printf ... | nc` does) gets its
/// answer and then its connection closed, not held open until the idle deadline: an
/// edge-triggered epoll set reports the end of its input once, together with the
/// request when both arrive at once (here, while the connection is busy with the
/// request before).
#[test]
fn regression_a_client_that_half_closes_is_closed_after_its_answer() {
    let srv = start(short_limits_with(|l| {
        l.idle_timeout = Duration::from_secs(20)
    }));
    for round in 0..3 {
        let mut c = Client::connect(srv.addr);
        c.send(b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(100));
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.s.sock.shutdown(std::net::Shutdown::Write).unwrap();
        c.s.sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(c.response(false).unwrap().status, 200);
        assert_eq!(c.response(false).unwrap().status, 200);
        assert!(
            c.closed_within(Duration::from_secs(2)),
            "round {round}: still open after its answers"
        );
    }
}

/// Workers start at once only up to the cores; past them the accept thread adds some
/// when none has finished anything for a tick. So handlers blocking every worker (long
/// polls) hold up a new request for about a tick, not until one of them returns.
#[test]
fn handlers_blocking_every_worker_hold_up_nobody_else() {
    let srv = start(short_limits());
    let blocking = thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    let slow: Vec<_> = (0..blocking)
        .map(|_| {
            let addr = srv.addr;
            thread::spawn(move || get(addr, "/slow?ms=2000").status)
        })
        .collect();
    assert!(srv.wait_active(blocking, Duration::from_secs(2)));
    let t = Instant::now();
    assert_eq!(get(srv.addr, "/health").status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    for s in slow {
        assert_eq!(s.join().unwrap(), 200);
    }
}
