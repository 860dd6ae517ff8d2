//! Hostile and broken clients: each tiny_http failure that made us write our own server
//! has a regression test here, against the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client that trusts the daemon's self-signed certificate.
fn tls_connect(d: &Daemon) -> Tls {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(d.cert()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Sends raw bytes (ignoring write errors: the server may hang up early) and reads
/// whatever comes back until the server closes or 10 s pass.
fn exchange(d: &Daemon, request: &[u8]) -> String {
    let mut tls = tls_connect(d);
    for chunk in request.chunks(16 * 1024) {
        if tls.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = tls.flush();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn healthy(d: &Daemon) -> bool {
    d.curl("GET", "/v1/health", &[]).status == 200
}

/// How long a well-behaved client's health check takes right now (the best of three):
/// the baseline that timing assertions scale from, so that a loaded machine, which
/// slows both the baseline and the check, does not fail them.
fn baseline(d: &Daemon) -> Duration {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            assert!(healthy(d));
            t.elapsed()
        })
        .min()
        .unwrap()
}

/// What a check that a working server answers about as fast as the baseline may take:
/// ten times `base`, and never less than `floor` (the bound on an idle machine). The
/// failures these tests guard against take for ever, not ten times longer.
fn allowed(base: Duration, floor: Duration) -> Duration {
    (base * 10).max(floor)
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

#[test]
fn regression_huge_content_length_does_not_kill_the_process() {
    let fake = FakeKube::start(1, &[]);
    let mut d = Daemon::start(&fake);
    let reply = exchange(
        &d,
        b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 18446744073709551615\r\n\r\n{}",
    );
    assert_eq!(status_of(&reply), 413, "{reply}");
    assert!(reply.contains("\"error\""), "{reply}");
    let reply = exchange(
        &d,
        b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n",
    );
    assert_eq!(status_of(&reply), 400, "{reply}");
    let reply = exchange(
        &d,
        b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    );
    assert_eq!(status_of(&reply), 400, "{reply}");
    assert!(d.alive());
    assert!(healthy(&d));
}

#[test]
fn regression_one_mebibyte_header_is_refused_without_buffering_it() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    // The cache's threads and first lists allocate as they start: measure after them.
    d.wait_cache_synced();
    let before = rss_kib(d.pid());
    let mut req = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 1 << 20));
    req.extend_from_slice(b"\r\n\r\n");
    let reply = exchange(&d, &req);
    assert_eq!(status_of(&reply), 431, "{reply}");
    let grown = rss_kib(d.pid()).saturating_sub(before);
    assert!(
        grown < 1024,
        "RSS grew by {grown} KiB for one refused header"
    );
    assert!(healthy(&d));
}

#[test]
fn regression_accept_survives_running_out_of_descriptors() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start_with(
        &fake,
        DaemonOpts {
            nofile: Some(64),
            ..Default::default()
        },
    );
    // Far more connections than descriptors: accept fails with EMFILE for a while.
    let socks: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", d.port)).ok())
        .collect();
    d.output
        .wait_for("the accept errors logged", |l| l.contains("accept failed"));
    drop(socks);
    // Once descriptors are free again the daemon answers.
    wait_until(15, "the accept loop to recover", || {
        healthy(&d).then_some(())
    });
}

#[test]
fn regression_close_notify_and_hold_does_not_spin() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut tls = tls_connect(&d);
        tls.conn.send_close_notify();
        tls.conn.complete_io(&mut tls.sock).unwrap();
        held.push(tls); // the socket stays open
    }
    let before = cpu_seconds(d.pid());
    // The window is the thing under test: a spinning worker would burn most of a core
    // in it, an idle daemon next to nothing (no baseline needed: load slows a spin).
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(d.pid()) - before;
    assert!(
        used < 0.5,
        "daemon used {used} s of CPU in 2 s while clients held"
    );
    assert!(healthy(&d));
    drop(held);
}

#[test]
fn regression_idle_connections_never_starve_the_rest() {
    let fake = FakeKube::start(1, &[]);
    // All 500 come from one address: lift the per-address cap, which has its own test.
    let d = Daemon::start_args(&fake, &["--max-connections-per-address", "512"]);
    let base = baseline(&d);
    let mut idle = Vec::new();
    for _ in 0..500 {
        let mut tls = tls_connect(&d);
        tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tls.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(tls); // kept alive and idle
    }
    let t = Instant::now();
    assert!(healthy(&d));
    assert!(
        t.elapsed() < allowed(base, Duration::from_secs(1)),
        "health took {:?} beside 500 idle connections, {base:?} without",
        t.elapsed()
    );
    eprintln!("RSS with 500 idle connections: {} KiB", rss_kib(d.pid()));
    drop(idle);
}

#[test]
fn past_max_connections_a_new_client_gets_503() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start_args(&fake, &["--max-connections", "3"]);
    // Each returns once its handshake is done: the three hold every slot.
    let held: Vec<Tls> = (0..3).map(|_| tls_connect(&d)).collect();
    let r = d.curl("GET", "/v1/health", &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "server_busy");
    drop(held);
    wait_until(5, "a free slot", || healthy(&d).then_some(()));
}

#[test]
fn plain_http_on_the_tls_port_is_just_closed() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let base = baseline(&d);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let t = Instant::now();
    let _ = s.read_to_end(&mut buf);
    let took = t.elapsed();
    assert!(
        took < allowed(base, Duration::from_secs(2)),
        "not closed promptly: {took:?}, a health check {base:?}"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200"));
    assert!(healthy(&d));
}

/// Issue 12 item 7: a 12,000-byte method was accepted, echoed in the 405 body and
/// logged whole; HTTP/1.1 without Host, or with two, was served.
#[test]
fn regression_long_method_is_501_and_host_is_required() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let method = "X".repeat(12_000);
    let reply = exchange(
        &d,
        format!("{method} /v1/health HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_of(&reply), 501, "{}", &reply[..reply.len().min(300)]);
    assert!(reply.contains("method_not_implemented"));
    assert!(!reply.contains("XXXXXXXXXXXXXXXX"), "the method was echoed");
    for (raw, what) in [
        ("GET /v1/health HTTP/1.1\r\n\r\n", "no Host"),
        (
            "GET /v1/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "two Hosts",
        ),
    ] {
        let reply = exchange(&d, raw.as_bytes());
        assert_eq!(status_of(&reply), 400, "{what}: {reply}");
        assert!(reply.contains("bad_host"), "{what}: {reply}");
    }
    // HTTP/1.0 needs no Host.
    let reply = exchange(&d, b"GET /v1/health HTTP/1.0\r\n\r\n");
    assert_eq!(status_of(&reply), 200, "{reply}");
    // A long path (under the 8 KiB URL cap) is logged clipped, not whole.
    let path = format!("/v1/{}", "p".repeat(8000));
    let reply = exchange(
        &d,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_of(&reply), 404, "{}", &reply[..reply.len().min(300)]);
    let line = d.output.wait_for("the access line of the long path", |l| {
        l.contains("\"status\":404") && l.contains("pppp")
    });
    assert!(line.len() < 1024, "a {}-byte log line", line.len());
    assert!(d
        .output
        .lines()
        .iter()
        .all(|l| l.len() < 2048 && !l.contains("XXXXXXXXXXXXXXXX")));
}

/// Issue 12 item 2: 512 idle TCP connections from one address (no TLS bytes) gave 503 to
/// every other client while they were held, and past 530 the refusals were resets.
#[test]
fn regression_one_address_cannot_take_every_connection_slot() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let base = baseline(&d);
    let hog: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(("127.0.0.1", d.port)).unwrap())
        .collect();
    // Another address is served at once, while the hog holds its sockets.
    let t = Instant::now();
    let r = d.curl("GET", "/v1/health", &["--interface", "127.0.0.2"]);
    assert_eq!(r.status, 200, "{r:?}");
    let took = t.elapsed();
    assert!(
        took < allowed(base, Duration::from_secs(5)),
        "{took:?}, {base:?} before the hog"
    );
    // The hogging address itself gets a clean 503 envelope, never a reset.
    for _ in 0..5 {
        let r = d.curl("GET", "/v1/health", &["--interface", "127.0.0.1"]);
        assert_eq!((r.status, r.exit), (503, 0), "{r:?}");
        assert_eq!(r.json()["error"], "server_busy");
    }
    assert!(d
        .output
        .lines()
        .iter()
        .any(|l| l.contains("per-address connection cap")));
    drop(hog);
    wait_until(10, "the hogging address served again", || {
        let r = d.curl("GET", "/v1/health", &["--interface", "127.0.0.1"]);
        (r.status == 200).then_some(())
    });
}

/// Issue 12 item 3: the write deadline was per write, so a client reading a bundle a
/// few bytes at a time kept its worker for ever. Below `--min-transfer-rate` (counted
/// while the daemon is blocked on the client, after 10 s of slack) it is cut off.
#[test]
fn regression_a_slow_bundle_reader_is_cut_off_and_logged() {
    let fake = FakeKube::start(2, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut args = join_inputs(dir.path());
    args.extend(["--min-transfer-rate".into(), "1048576".into()]);
    let d = Daemon::start_with(
        &fake,
        DaemonOpts {
            args,
            ..Default::default()
        },
    );
    let admin = d.login();
    let mut tls = tls_connect(&d);
    tls.write_all(
        format!(
            "GET /v1/join-bundle?roles=app HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
             {admin}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    // About 20 KB/s: far below 1 MiB/s, yet every read well inside the write timeout.
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    let mut got = 0usize;
    let cut = |l: &str| l.contains("slow reader") && l.contains("/v1/join-bundle");
    while !d.output.lines().iter().any(|l| cut(l)) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "still served after {got} bytes"
        );
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        // The slow reading is the thing under test.
        std::thread::sleep(Duration::from_millis(50));
    }
    d.output.wait_for("the slow-reader log line", cut);
    assert!(got < 8 << 20, "the whole bundle arrived at {got} bytes");
    assert!(healthy(&d));
}
