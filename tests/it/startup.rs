//! Start-up and shutdown: flags, environment, certificates, pins, signals.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// The pin of a PEM certificate, computed by openssl the way curl's docs show.
fn openssl_pin(cert: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$0\" -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
        )
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    format!("sha256//{}", String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn self_signed_certificate_is_made_once_and_pinned() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    assert_eq!(d.pin, openssl_pin(&d.cert()));
    let key = d.data_dir.join("tls.key");
    let mode = std::fs::metadata(&key).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    // curl with only the pin (-k plus --pinnedpubkey) reaches it; a wrong pin does not.
    let ok = Command::new("curl")
        .args(["-sS", "-k", "--pinnedpubkey", &d.pin])
        .arg(format!("{}/v1/health", d.url))
        .output()
        .unwrap();
    assert!(ok.status.success());
    let bad = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--pinnedpubkey",
            "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ])
        .arg(format!("{}/v1/health", d.url))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(90));

    // A restart on the same data dir reuses the certificate.
    let first_pin = d.pin.clone();
    let d2 = Daemon::start_with(
        &fake,
        DaemonOpts {
            data_dir: Some(d.data_dir.clone()),
            ..Default::default()
        },
    );
    assert_eq!(d2.pin, first_pin);
}

/// Makes a certificate and key with openssl in the given key format.
fn openssl_cert(dir: &std::path::Path, kind: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join(format!("{kind}.key"));
    let cert = dir.join(format!("{kind}.crt"));
    let keygen = match kind {
        "pkcs8" => "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1\"",
        "pkcs1" => "openssl genrsa -traditional -out \"$1\" 2048",
        "sec1" => "openssl ecparam -name prime256v1 -genkey -noout -out \"$1\"",
        _ => unreachable!(),
    };
    let script = format!(
        "{keygen} && openssl req -x509 -key \"$1\" -out \"$2\" -days 2 -subj /CN=joinery-test \
         -addext subjectAltName=IP:127.0.0.1 2>/dev/null"
    );
    let st = Command::new("sh")
        .args(["-c", &script, "sh"])
        .arg(&key)
        .arg(&cert)
        .status()
        .unwrap();
    assert!(st.success(), "openssl {kind}");
    (cert, key)
}

#[test]
fn configured_certificates_in_every_key_format() {
    let fake = FakeKube::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    for (kind, marker) in [
        ("pkcs8", "BEGIN PRIVATE KEY"),
        ("pkcs1", "BEGIN RSA PRIVATE KEY"),
        ("sec1", "BEGIN EC PRIVATE KEY"),
    ] {
        let (cert, key) = openssl_cert(dir.path(), kind);
        assert!(std::fs::read_to_string(&key).unwrap().contains(marker));
        let d = Daemon::start_with(
            &fake,
            DaemonOpts {
                args: vec![
                    "--tls-cert".into(),
                    cert.display().to_string(),
                    "--tls-key".into(),
                    key.display().to_string(),
                ],
                ..Default::default()
            },
        );
        assert_eq!(d.pin, openssl_pin(&cert), "{kind}");
        let r = curl_at(&cert, &format!("{}/v1/health", d.url), &[]);
        assert_eq!(r.status, 200, "{kind}");
    }
}

#[test]
fn bad_start_up_input_is_a_clear_error() {
    let fake = FakeKube::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_cert(dir.path(), "sec1");
    let (_, other_key) = openssl_cert(dir.path(), "pkcs8");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a pem file\n").unwrap();
    let c = cert.display().to_string();
    let k = key.display().to_string();
    let j = junk.display().to_string();
    let ok = other_key.display().to_string();
    for (args, needle) in [
        (vec!["--tls-cert", &j, "--tls-key", &k], "junk.pem"),
        (vec!["--tls-cert", &c, "--tls-key", &j], "junk.pem"),
        (vec!["--tls-cert", &c, "--tls-key", &ok], "match"),
        (
            vec!["--tls-cert", "/nonexistent.crt", "--tls-key", &k],
            "/nonexistent.crt",
        ),
        (vec!["--tls-cert", &c], "--tls-key"),
        (vec!["--api-port", "99999"], "--api-port"),
        (vec!["--password-hash-file", &j], "junk.pem"),
        (vec!["--signing-key-file", &j], "junk.pem"),
        (vec!["--no-such-flag"], "no-such-flag"),
    ] {
        let err = serve_fails(&fake, &args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let bad_kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&bad_kubeconfig, "apiVersion: v1\nclusters: [\n").unwrap();
    let err = serve_fails(
        &fake,
        &["--kubeconfig", &bad_kubeconfig.display().to_string()],
    );
    assert!(err.contains("kubeconfig"), "{err}");
}

#[test]
fn flags_read_their_environment_variables() {
    use base64::Engine;
    use hmac::Mac;
    let fake = FakeKube::start(1, &[]);
    // A bad value in the environment is a start-up error naming the variable.
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(joinery_bin())
        .args(["serve", "--bind-address", "127.0.0.1"])
        .arg("--kubeconfig")
        .arg(fake.kubeconfig())
        .arg("--data-dir")
        .arg(data.path())
        .env("JOINERY_MAX_CONNECTIONS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JOINERY_MAX_CONNECTIONS"));

    // JOINERY_SIGNING_KEY_FILE is honoured: tokens are signed with that key.
    let key = [7u8; 32];
    let key_file = data.path().join("signing.key");
    std::fs::write(
        &key_file,
        base64::engine::general_purpose::STANDARD.encode(key),
    )
    .unwrap();
    let d = Daemon::start_with(
        &fake,
        DaemonOpts {
            env: vec![(
                "JOINERY_SIGNING_KEY_FILE".into(),
                key_file.display().to_string(),
            )],
            ..Default::default()
        },
    );
    let token = d.login();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(input.as_bytes());
    let expected =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    assert_eq!(sig, expected);
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let fake = FakeKube::start(1, &[]);
    let mut d = Daemon::start(&fake);
    let token = d.login();
    // Listing API tokens reads Secrets live (node reads come from the watch-fed view).
    fake.control(
        "POST",
        "/_fake/faults",
        Some(json!([{"method": "GET", "path": "/secrets", "kind": "latency", "delayMs": 1500}])),
    );
    let (url, cert, t) = (d.url.clone(), d.cert(), token.clone());
    let slow = std::thread::spawn(move || {
        curl_at(
            &cert,
            &format!("{url}/v1/auth/tokens"),
            &["-H".into(), format!("Authorization: Bearer {t}")],
        )
    });
    // In flight: its handler is waiting on the fake's Secret list (an open connection
    // alone is not enough: one whose request has not arrived yet is idle, and closed).
    wait_until(10, "the slow request in flight", || {
        let now = fake.control("GET", "/_fake/inflight", None);
        let held = now.as_array().is_some_and(|v| {
            v.iter()
                .any(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/secrets")))
        });
        held.then_some(())
    });
    let t = Instant::now();
    let status = d.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(9));
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request was cut: {r:?}");
    // No longer accepting.
    let after = d.curl("GET", "/v1/health", &[]);
    assert_ne!(after.status, 200);
}

/// Issue 15, every thread has an owner: SIGTERM while two waits are held open on the
/// local socket, the signing key is still being retried (its Secret answers 503) and the
/// bundle cache may still be warming. The daemon exits 0 promptly, logs nothing above
/// info after the signal, and its "stopped" line counts one thread left (itself): the
/// servers' workers, the busy thread, the socket server, the cache, the drain worker,
/// the auth loader and the warm-up were all joined.
#[test]
fn sigterm_with_work_in_flight_joins_every_thread() {
    let fake = FakeKube::start(3, &[]);
    fake.control(
        "POST",
        "/_fake/faults",
        Some(json!([{"path": "/secrets", "kind": "status", "code": 503}])),
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("j.sock");
    let mut args = join_inputs(dir.path());
    args.push(format!("--socket={}", socket.display()));
    args.push(format!("--socket-uid={}", uid()));
    let mut d = Daemon::start_with(
        &fake,
        DaemonOpts {
            args,
            ..DaemonOpts::default()
        },
    );
    d.output
        .wait_for("the signing key retry", |l| l.contains("will retry"));
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                unix_curl(
                    &socket,
                    "GET",
                    "/v1/nodes/node-8?waitFor=ready&timeoutSeconds=600",
                    &[],
                )
            })
        })
        .collect();
    wait_until(10, "two open waits", || {
        let (_, text) = unix_curl_text(&socket, "GET", "/metrics", &[]);
        (metric_in(&text, "joinery_cache_waiters") == Some(2.0)).then_some(())
    });

    let before = d.output.lines().len();
    let t = Instant::now();
    let status = d.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    for w in waiters {
        let (status, body) = w.join().unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("shutting_down"))
        );
    }
    let stopped = d
        .output
        .wait_for("the stopped line", |l| l.contains(r#""msg":"stopped""#));
    let stopped: serde_json::Value = serde_json::from_str(&stopped).unwrap();
    assert_eq!(stopped["threads"], 1, "threads left at exit: {stopped}");
    let after = &d.output.lines()[before..];
    let loud: Vec<_> = after
        .iter()
        .filter(|l| l.contains(r#""level":"warn""#) || l.contains(r#""level":"error""#))
        .collect();
    assert!(loud.is_empty(), "logged on shutdown: {loud:#?}");
    assert!(!socket.exists());
}

#[test]
fn hash_password_output_verifies() {
    let hash = password_hash();
    assert!(hash.starts_with("$2"), "{hash}");
    assert_eq!(hash.len(), 60);
    let out = Command::new(joinery_bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin"));
}

/// `joinery serve` without `--bind-address`, against `fake`, as node `node`; and its data
/// directory, removed when dropped.
fn serve_without_bind_address(
    fake: &FakeKube,
    node: &str,
    extra: &[&str],
) -> (Daemon, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let hash = data.path().join("hash");
    std::fs::write(&hash, password_hash()).unwrap();
    let mut cmd = Command::new(joinery_bin());
    cmd.args(["serve", "--api-port", "0", "--node-name", node])
        .args(extra)
        .arg("--kubeconfig")
        .arg(fake.kubeconfig())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--password-hash-file")
        .arg(&hash)
        // No k0s configuration: the address is not known locally.
        .env("JOINERY_K0S_CONFIG", "/nonexistent/k0s.yaml")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(std::process::Stdio::piped());
    (Daemon::spawn_command(cmd), data)
}

/// A node whose InternalIP this host owns (any 127/8 address is local on Linux).
fn add_local_node(fake: &FakeKube, name: &str, ip: &str) {
    fake.control(
        "POST",
        "/_fake/objects",
        Some(json!([{
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }])),
    );
}

/// `/v1/health` through the listener on `ip`, checking the certificate for `localhost`
/// (which it always names; an address learned after it was made may not be).
fn health_at(d: &Daemon, ip: &str) -> Reply {
    let port = d.port;
    curl_at(
        &d.cert(),
        &format!("https://localhost:{port}/v1/health"),
        &[
            "--connect-to".into(),
            format!("localhost:{port}:{ip}:{port}"),
            "--connect-timeout".into(),
            "5".into(),
        ],
    )
}

/// Regression (issue 14): without `--bind-address` the daemon looked up its node's
/// InternalIP before listening, so `/v1/health` waited for the API server (minutes
/// after a reboot). Now it listens on loopback at once and adds the InternalIP listener
/// when the lookup succeeds. `Daemon::spawn_command` waits 30 s for "listening"; the
/// lookup would wait out the 60 s `--kube-timeout`.
#[test]
fn regression_health_answers_while_kubernetes_is_down_without_bind_address() {
    let fake = FakeKube::start(1, &[]);
    add_local_node(&fake, "local-ctl", "127.0.0.6");
    fake.control("POST", "/_fake/down", Some(json!({"seconds": 600})));
    let (d, _data) = serve_without_bind_address(&fake, "local-ctl", &["--kube-timeout", "60"]);
    assert!(d.url.starts_with("https://127.0.0.1:"), "{}", d.url);
    assert_eq!(health_at(&d, "127.0.0.1").status, 200);
    // Kubernetes is back: the InternalIP listener follows, on the same port.
    fake.control("POST", "/_fake/down", Some(json!({"seconds": 0})));
    let line = d.output.wait_for("the InternalIP listener", |l| {
        l.contains("listening on this node's InternalIP")
    });
    assert!(line.contains("127.0.0.6"), "{line}");
    assert_eq!(health_at(&d, "127.0.0.6").status, 200);
    assert_eq!(health_at(&d, "127.0.0.1").status, 200);
}

/// The same with an API server that answers, but only after 40 s.
#[test]
fn regression_health_answers_while_kubernetes_is_slow_without_bind_address() {
    let fake = FakeKube::start(1, &[]);
    fake.control("POST", "/_fake/config", Some(json!({"latencyMs": 40_000})));
    let (d, _data) = serve_without_bind_address(&fake, "node-1", &["--kube-timeout", "60"]);
    assert_eq!(health_at(&d, "127.0.0.1").status, 200);
}

#[test]
fn without_a_known_internal_ip_it_stays_on_loopback_and_says_why() {
    let fake = FakeKube::start(1, &[]);
    let (d, _data) = serve_without_bind_address(&fake, "ghost", &[]);
    assert!(d.url.starts_with("https://127.0.0.1:"), "{}", d.url);
    let why = d.output.wait_for("the reason", |l| {
        l.contains("listening on loopback only until this node's InternalIP is known")
    });
    assert!(
        why.contains("ghost") && why.contains("--bind-address"),
        "{why}"
    );
    assert_eq!(health_at(&d, "127.0.0.1").status, 200);
    // Never all addresses: another local address is not served.
    assert_eq!(health_at(&d, "127.0.0.2").status, 0);
}

#[test]
fn bind_address_defaults_to_this_nodes_internal_ip() {
    let fake = FakeKube::start(1, &[]);
    add_local_node(&fake, "local-ctl", "127.0.0.5");
    let (d, _data) = serve_without_bind_address(&fake, "local-ctl", &[]);
    d.output.wait_for("the InternalIP listener", |l| {
        l.contains("listening on this node's InternalIP") && l.contains("127.0.0.5")
    });
    assert_eq!(health_at(&d, "127.0.0.5").status, 200);
}
