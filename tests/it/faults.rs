//! Kubernetes faults, injected through the fake API server: every endpoint answers a
//! clear error in bounded time, POSTs are never retried, the daemon recovers by itself
//! when the API comes back, and `/v1/health` answers throughout.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{join_inputs, Daemon, DaemonOpts, FakeKube, Reply};

/// `--kube-timeout` of these daemons, in seconds.
const KUBE_TIMEOUT: u64 = 2;
/// What "bounded" means here: the timeout plus generous slack for a busy machine.
const BOUND: Duration = Duration::from_secs(KUBE_TIMEOUT + 12);

fn start(fake: &FakeKube, inputs: &tempfile::TempDir, password_file: bool) -> Daemon {
    let mut args = join_inputs(inputs.path());
    args.extend(["--kube-timeout".into(), KUBE_TIMEOUT.to_string()]);
    Daemon::start_with(
        fake,
        DaemonOpts {
            password_file,
            args,
            ..DaemonOpts::default()
        },
    )
}

fn timed(what: &str, f: impl FnOnce() -> Reply) -> Reply {
    let t = Instant::now();
    let r = f();
    assert!(
        t.elapsed() < BOUND,
        "{what} took {:?} (status {})",
        t.elapsed(),
        r.status
    );
    r
}

fn create_command(d: &Daemon, token: &str) -> Reply {
    d.post_json(
        "/v1/create-join-command",
        Some(token),
        r#"{"roles":["app"]}"#,
    )
}

fn bundle(d: &Daemon, token: &str) -> Reply {
    d.get("/v1/join-bundle?roles=app", token)
}

fn login(d: &Daemon) -> Reply {
    d.post_json(
        "/v1/auth/token",
        None,
        &json!({ "password": crate::support::PASSWORD }).to_string(),
    )
}

fn posts(fake: &FakeKube) -> Vec<Value> {
    fake.requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect()
}

/// Every endpoint, with the API unreachable in one way, answers an error envelope in
/// bounded time; health stays up; POSTs reach the API at most once per request.
#[test]
fn every_endpoint_fails_clearly_in_bounded_time_and_recovers() {
    let fake = FakeKube::with_password(3);
    let inputs = tempfile::tempdir().unwrap();
    let d = start(&fake, &inputs, false);
    let token = d.login();
    assert_eq!(create_command(&d, &token).status, 200);

    let faults = [
        json!({"kind": "latency", "delayMs": (KUBE_TIMEOUT + 3) * 1000}),
        json!({"kind": "status", "code": 503}),
        json!({"kind": "status", "code": 500}),
        json!({"kind": "reset"}),
        json!({"kind": "drop"}),
        json!({"kind": "status", "code": 429, "retryAfter": 7}),
    ];
    for mut fault in faults {
        fault["path"] = json!("^/api");
        fake.control("DELETE", "/_fake/requests", None);
        fake.control("POST", "/_fake/faults", Some(json!([fault.clone()])));
        // Login reads the password Secret (cached for a while, so it may still work).
        let r = timed("login", || login(&d));
        if r.status != 200 {
            r.assert_error(503, "kubernetes_unavailable");
        }
        for (what, r) in [
            // `/v1/nodes` answers from the watch-fed view while it is fresh (its outage
            // behaviour is in watch.rs); one node's detail always asks the API server.
            ("node", timed("node", || d.get("/v1/nodes/node-1", &token))),
            (
                "create-join-command",
                timed("create", || create_command(&d, &token)),
            ),
            ("join-bundle", timed("bundle", || bundle(&d, &token))),
        ] {
            assert!(
                r.status == 503 || r.status == 502,
                "{what} under {fault}: {} {}",
                r.status,
                r.text()
            );
            let v = r.json();
            assert!(
                v["error"].as_str().unwrap().starts_with("kubernetes_"),
                "{v}"
            );
            if r.status == 503 {
                let ra: u64 = r.header("retry-after").unwrap().parse().unwrap();
                if fault["code"] == 429 {
                    assert_eq!(ra, 7, "Retry-After passed on from the API server");
                }
            }
        }
        let health = timed("health", || d.curl("GET", "/v1/health", &[]));
        assert_eq!(health.status, 200, "health under {fault}");
        // POSTs (ticket and bootstrap-token Secrets) are never retried: one
        // create-join-command and one bundle make at most one POST each.
        let p = posts(&fake);
        assert!(p.len() <= 2, "POSTs under {fault}: {p:?}");
        fake.control("DELETE", "/_fake/faults", None);
        // Recovery without a restart.
        assert_eq!(d.get("/v1/nodes", &token).status, 200, "after {fault}");
    }
    let r = create_command(&d, &token);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = bundle(&d, &token);
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 1 << 20);
}

/// A 409 on the ticket's creation is a clear error, not retried, and no token is given.
#[test]
fn conflict_on_ticket_creation_issues_no_token() {
    let fake = FakeKube::start(3, &[]);
    let inputs = tempfile::tempdir().unwrap();
    let d = start(&fake, &inputs, true);
    let token = d.login();
    fake.control("DELETE", "/_fake/requests", None);
    fake.control(
        "POST",
        "/_fake/faults",
        Some(json!([{"method": "POST", "path": "/secrets", "kind": "status", "code": 409}])),
    );
    let r = timed("create", || create_command(&d, &token));
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    assert!(
        !r.text().contains("eyJ"),
        "a token was handed out: {}",
        r.text()
    );
    assert_eq!(posts(&fake).len(), 1, "the POST was retried");
    fake.control("DELETE", "/_fake/faults", None);
    assert_eq!(create_command(&d, &token).status, 200);
}

/// Token rotation: with an inline `token:` the daemon answers a clear 502 until it is
/// restarted with new credentials; with `tokenFile` it re-reads the file on 401 and
/// recovers by itself.
#[test]
fn token_rotation_inline_fails_clearly_and_token_file_recovers() {
    let fake = FakeKube::start(3, &[]);
    let inputs = tempfile::tempdir().unwrap();
    // A kubeconfig whose user reads the fake's token file (rewritten on rotation).
    let inline = std::fs::read_to_string(fake.kubeconfig()).unwrap();
    let user_at = inline.find("    token: ").unwrap();
    let with_file = format!(
        "{}    tokenFile: {}\n",
        &inline[..user_at],
        fake.dir.path().join("token").display()
    );
    let file_kc = inputs.path().join("kubeconfig-file");
    std::fs::write(&file_kc, with_file).unwrap();
    let inline_kc = inputs.path().join("kubeconfig-inline");
    std::fs::write(&inline_kc, &inline).unwrap();

    let start_with = |kc: &std::path::Path| {
        Daemon::start_with(
            &fake,
            DaemonOpts {
                kubeconfig: Some(kc.to_path_buf()),
                ..DaemonOpts::default()
            },
        )
    };
    let d_inline = start_with(&inline_kc);
    let d_file = start_with(&file_kc);
    let (t_inline, t_file) = (d_inline.login(), d_file.login());
    assert_eq!(d_inline.get("/v1/nodes", &t_inline).status, 200);
    assert_eq!(d_file.get("/v1/nodes", &t_file).status, 200);

    let old = std::fs::read_to_string(fake.dir.path().join("token")).unwrap();
    let new = fake.control("POST", "/_fake/rotate-token", Some(json!({})))["token"]
        .as_str()
        .unwrap()
        .to_string();
    for d in [&d_inline, &d_file] {
        d.register_secret(old.trim());
        d.register_secret(&new);
    }
    // One node's detail is always read live (`/v1/nodes` comes from an open watch).
    timed("inline", || d_inline.get("/v1/nodes/node-1", &t_inline))
        .assert_error(502, "kubernetes_unauthorized");
    let r = timed("file", || d_file.get("/v1/nodes/node-1", &t_file));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Login reads the installer password's Secret: with the API down before the first
/// login, it answers 503 with `Retry-After` in bounded time (not 401, and no lockout is
/// counted), then works once the API is back. The daemon loads the Secret in the
/// background from start-up on (and keeps it 30 s), so each fault is in place before
/// its daemon starts.
#[test]
fn login_from_the_password_secret_fails_clearly_then_recovers() {
    let fake = FakeKube::with_password(3);
    let inputs = tempfile::tempdir().unwrap();
    let mut last = None;
    for fault in [
        json!({"path": "/secrets/", "kind": "reset"}),
        json!({"path": "/secrets/", "kind": "latency", "delayMs": (KUBE_TIMEOUT + 3) * 1000}),
        json!({"path": "/secrets/", "kind": "status", "code": 503}),
    ] {
        fake.control("POST", "/_fake/faults", Some(json!([fault.clone()])));
        let d = start(&fake, &inputs, false);
        for _ in 0..6 {
            let r = timed("login", || login(&d));
            assert_eq!(r.status, 503, "under {fault}: {}", r.text());
            assert!(r.header("retry-after").is_some(), "under {fault}");
        }
        fake.control("DELETE", "/_fake/faults", None);
        last = Some(d);
    }
    let d = last.unwrap();
    // Eighteen refused logins, none of them a wrong password: not locked out.
    let r = login(&d);
    assert_eq!(r.status, 200, "{}", r.text());
}
