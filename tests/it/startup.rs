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
    // In flight: the slow request and the metrics request reading this.
    wait_until(10, "the slow request in flight", || {
        (d.metric(&token, "joinery_http_open_connections") == 2.0).then_some(())
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

#[test]
fn bind_address_falls_back_to_all_addresses_and_says_why() {
    let fake = FakeKube::start(1, &[]);
    let data = tempfile::tempdir().unwrap();
    let hash = data.path().join("hash");
    std::fs::write(&hash, password_hash()).unwrap();
    let mut cmd = Command::new(joinery_bin());
    cmd.args(["serve", "--api-port", "0", "--node-name", "ghost"])
        .arg("--kubeconfig")
        .arg(fake.kubeconfig())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--password-hash-file")
        .arg(&hash)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(std::process::Stdio::piped());
    let d = Daemon::spawn_command(cmd);
    assert!(d.url.starts_with("https://0.0.0.0:"), "{}", d.url);
    let why = d
        .output
        .json_lines()
        .into_iter()
        .find(|l| l["msg"] == "listening on all addresses: this node's InternalIP is unknown")
        .expect("the fallback is logged");
    assert!(why["reason"].as_str().unwrap().contains("ghost"), "{why}");
    // Reachable on loopback through the wildcard address.
    let r = curl_at(
        &d.cert(),
        &format!("https://127.0.0.1:{}/v1/health", d.port),
        &[],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn bind_address_defaults_to_this_nodes_internal_ip() {
    let fake = FakeKube::start(1, &[]);
    // Any 127/8 address is local on Linux: a node whose InternalIP this host owns.
    fake.control(
        "POST",
        "/_fake/objects",
        Some(json!([{
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "local-ctl"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }])),
    );
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(joinery_bin());
    cmd.args(["serve", "--api-port", "0", "--node-name", "local-ctl"])
        .arg("--kubeconfig")
        .arg(fake.kubeconfig())
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(std::process::Stdio::piped());
    let d = Daemon::spawn_command(cmd);
    assert!(d.url.starts_with("https://127.0.0.5:"), "{}", d.url);
    assert!(d
        .output
        .lines()
        .iter()
        .any(|l| l.contains("bind address is this node's InternalIP")));
    let r = curl_at(&d.cert(), &format!("{}/v1/health", d.url), &[]);
    assert_eq!(r.status, 200);
}
