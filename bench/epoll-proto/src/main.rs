//! Issue 16's prototype (not part of joinery): serves one fixed HTTP response (the
//! bytes of joinery's `GET /v1/health` answer, given in a file) over TLS with the
//! same rustls configuration as joinery (ring provider, AES-128-GCM first, server
//! order, TLS 1.3 and 1.2, ALPN http/1.1), from one epoll loop per thread over
//! non-blocking sockets. Every thread has its own listening socket on the one port
//! (SO_REUSEPORT) and owns the connections it accepted. It answers every complete request on a connection
//! (keep-alive, pipelining), parsed with httparse; any path other than `/v1/health`
//! gets a 404, and request bodies are not supported: it measures the per-request cost
//! of the design, nothing else.
//!
//!     epoll-proto --cert tls.crt --key tls.key --response health.http [--threads N]
//!
//! Prints `listening on 127.0.0.1:PORT` once it accepts.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use rustls::crypto::ring::cipher_suite as suites;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

const LISTENER: u64 = u64::MAX;
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";

struct Conn {
    sock: TcpStream,
    tls: ServerConnection,
    /// Plaintext received and not yet parsed (a partial request).
    input: Vec<u8>,
    /// Whether EPOLLOUT is registered (TLS output waits for room in the socket).
    writing: bool,
    peer: std::net::SocketAddr,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(cert), Some(key), Some(resp)) = (flag("--cert"), flag("--key"), flag("--response"))
    else {
        eprintln!("usage: epoll-proto --cert FILE --key FILE --response FILE [--threads N]");
        std::process::exit(2);
    };
    let threads: usize = flag("--threads")
        .map(|t| t.parse().expect("--threads: a number"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let response: &'static [u8] = Box::leak(std::fs::read(resp).expect("--response").into());

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .expect("--cert")
        .collect::<Result<_, _>>()
        .expect("--cert");
    let key = PrivateKeyDer::from_pem_file(&key).expect("--key");
    // joinery's order (src/http/tls.rs, `provider`), ECDSA suites only: the
    // certificate is joinery's P-256 one.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        suites::TLS13_AES_128_GCM_SHA256,
        suites::TLS13_AES_256_GCM_SHA384,
        suites::TLS13_CHACHA20_POLY1305_SHA256,
        suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    let config = Arc::new(config);

    // One listening socket per thread on the same port (SO_REUSEPORT): the kernel
    // spreads connections over them evenly, where threads sharing one socket can see
    // one of them accept every connection of a burst.
    let first = reuseport_listener(0).expect("bind");
    let port = first.local_addr().expect("address").port();
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(reuseport_listener(port).expect("bind"));
    }
    println!("listening on 127.0.0.1:{port}");
    io::stdout().flush().ok();
    let workers: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let config = config.clone();
            std::thread::spawn(move || event_loop(&listener, &config, response))
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

/// A non-blocking listening socket on 127.0.0.1:`port` with SO_REUSEPORT set.
fn reuseport_listener(port: u16) -> io::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls on a descriptor this function owns until it is
    // handed to TcpListener, which closes it.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            len,
        ) < 0
            || libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) < 0
            || libc::listen(fd, 1024) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(listener)
    }
}

fn ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn event_loop(listener: &TcpListener, config: &Arc<ServerConfig>, response: &[u8]) {
    // SAFETY: plain system call.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
    let lfd = listener.as_raw_fd();
    ctl(
        ep,
        libc::EPOLL_CTL_ADD,
        lfd,
        (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
        LISTENER,
    )
    .expect("epoll_ctl listener");
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        // SAFETY: `events` has room for the 256 events asked for.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {e}");
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            if token == LISTENER {
                while let Ok((sock, peer)) = listener.accept() {
                    let Ok(tls) = ServerConnection::new(config.clone()) else {
                        continue;
                    };
                    if sock.set_nonblocking(true).is_err() || sock.set_nodelay(true).is_err() {
                        continue;
                    }
                    let fd = sock.as_raw_fd();
                    let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
                    if ctl(ep, libc::EPOLL_CTL_ADD, fd, events, fd as u64).is_ok() {
                        let input = Vec::with_capacity(4096);
                        conns.insert(
                            fd as u64,
                            Conn {
                                sock,
                                tls,
                                input,
                                writing: false,
                                peer,
                            },
                        );
                    }
                }
                continue;
            }
            let Some(c) = conns.get_mut(&token) else {
                continue;
            };
            match serve(c, response) {
                Ok(true) => {
                    let writing = c.tls.wants_write();
                    if writing != c.writing {
                        c.writing = writing;
                        let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
                        if writing {
                            events |= libc::EPOLLOUT as u32;
                        }
                        let _ = ctl(ep, libc::EPOLL_CTL_MOD, token as RawFd, events, token);
                    }
                }
                Ok(false) | Err(_) => {
                    // Closing the socket removes it from the epoll set.
                    conns.remove(&token);
                }
            }
        }
    }
}

/// One JSON access line per request on stderr, with the keys joinery's has
/// (src/http/conn.rs, `access_line`), written by one write(2) as joinery does.
fn access_line(
    peer: std::net::SocketAddr,
    path: &str,
    status: u16,
    bytes: usize,
    started: std::time::Instant,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!(
        "{{\"bytes\":{bytes},\"durationMs\":{},\"level\":\"info\",\"method\":\"GET\",\
         \"msg\":\"request\",\"path\":{path:?},\"remote\":\"{peer}\",\"status\":{status},\
         \"subject\":null,\"time\":\"{}.{:03}\"}}\n",
        started.elapsed().as_micros() as f64 / 1000.0,
        now.as_secs(),
        now.subsec_millis()
    );
    // SAFETY: writes the bytes of a live buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Read what the socket holds, answer every complete request, write what fits.
/// `Ok(false)`: the connection is over.
fn serve(c: &mut Conn, response: &[u8]) -> io::Result<bool> {
    let mut open = true;
    loop {
        match c.tls.read_tls(&mut c.sock) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(_) => {
                let state = c
                    .tls
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let n = state.plaintext_bytes_to_read();
                if n > 0 {
                    let at = c.input.len();
                    c.input.resize(at + n, 0);
                    c.tls.reader().read_exact(&mut c.input[at..])?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let mut used = 0;
    let mut close = false;
    while !close {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&c.input[used..]) {
            Ok(httparse::Status::Complete(len)) => {
                used += len;
                close = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
                let started = std::time::Instant::now();
                let (answer, status) = if req.path == Some("/v1/health") {
                    (response, 200)
                } else {
                    (NOT_FOUND, 404)
                };
                c.tls.writer().write_all(answer)?;
                access_line(
                    c.peer,
                    req.path.unwrap_or(""),
                    status,
                    answer.len(),
                    started,
                );
            }
            Ok(httparse::Status::Partial) => break,
            Err(_) => return Ok(false),
        }
    }
    c.input.drain(..used);
    if close {
        c.tls.send_close_notify();
    }
    while c.tls.wants_write() {
        match c.tls.write_tls(&mut c.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    // A closing connection stays until its last bytes are out.
    Ok(open && (!close || c.tls.wants_write()))
}
