//! The operator commands (`joinery nodes`, `node`, `health`, `join-command`, `drain`,
//! `resume`, `remove`, `pin`, `token list -o json`) against the real daemon: over its
//! local socket, and over TLS with the certificate's pin or its CA, logged in from a
//! password file or a token file. JSON output must equal the API's; exit codes must
//! tell "not found" (3), "refused" (4) and "unreachable" (5) apart.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::run_joinery as joinery;
use crate::support::*;

/// A daemon with joins configured and a local socket of its own.
struct Setup {
    fake: FakeKube,
    daemon: Daemon,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

fn setup() -> Setup {
    let fake = FakeKube::with_password(3);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("j.sock");
    let mut args = join_inputs(dir.path());
    args.push(format!("--socket={}", socket.display()));
    let daemon = Daemon::start_with(
        &fake,
        DaemonOpts {
            args,
            ..Default::default()
        },
    );
    Setup {
        fake,
        daemon,
        dir,
        socket,
    }
}

impl Setup {
    /// `joinery CMD --socket S ARGS`.
    fn local(&self, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        let s = self.socket.to_str().unwrap();
        all.extend(["--socket", s]);
        joinery(&all, &[], "")
    }

    /// What the API itself answers, for comparing with `-o json`.
    fn api(&self, method: &str, path: &str, token: &str) -> Value {
        let r = self.daemon.curl(
            method,
            path,
            &["-H", &format!("Authorization: Bearer {token}")],
        );
        assert!(r.status < 300, "{path}: {}", r.text());
        r.json()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn operator_commands_over_the_local_socket() {
    let s = setup();
    let token = s.daemon.login();

    // nodes: a kubectl-like table, and the API's JSON exactly.
    let (code, out, err) = s.local(&["nodes"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "ROLES", "INTERNAL-IP"]
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("node-1 ") && l.contains("Ready")),
        "{out}"
    );
    let (_, wide, _) = s.local(&["nodes", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().ends_with("LABELS"), "{wide}");
    let (code, out, _) = s.local(&["nodes", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json_of(&out), s.api("GET", "/v1/nodes", &token));

    // node NAME, health: the same JSON as the API; a name that is not there exits 3.
    let (code, out, _) = s.local(&["node", "node-2", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json_of(&out), s.api("GET", "/v1/nodes/node-2", &token));
    let (code, out, _) = s.local(&["node", "node-2"]);
    assert_eq!(code, 0);
    assert!(out.contains("Name:           node-2\n"), "{out}");
    let (code, _, err) = s.local(&["node", "node-9"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("node-9") && err.contains("404"), "{err}");
    let (code, out, _) = s.local(&["health", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json_of(&out), s.api("GET", "/v1/cluster/health", &token));
    let (code, out, _) = s.local(&["health"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("healthy: true\n"), "{out}");

    // join-command: a script to run (sh), or the API's JSON; an unknown role is the
    // caller's mistake (2).
    let (code, out, err) = s.local(&["join-command", "--roles", "app"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("#!/bin/sh\n"), "{out}");
    assert!(out.contains("curl"), "{out}");
    let (code, out, _) = s.local(&["join-command", "--roles", "app", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(
        json_of(&out)["joinSteps"].as_array().unwrap().len(),
        3,
        "{out}"
    );
    // joins: the ledger now holds those two, the API's JSON exactly.
    let (code, out, err) = s.local(&["joins"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID "), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains(" issued ")).count(),
        2,
        "{out}"
    );
    let (code, out, _) = s.local(&["joins", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json_of(&out), s.api("GET", "/v1/joins", &token));
    let (code, _, err) = s.local(&["join-command", "--roles", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid_roles"), "{err}");

    // drain --wait follows a drain a disruption budget holds up until its deadline.
    add_pod_behind_a_budget(&s.fake, "node-2");
    let (code, out, err) = s.local(&["drain", "node-2", "--deadline", "2", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "node-2: draining", "{out}");
    assert!(
        lines
            .last()
            .unwrap()
            .contains("drained; the deadline passed with 1 pod(s) left: default/web-1"),
        "{out}"
    );
    let (code, out, _) = s.local(&["resume", "node-2"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "node-2: resumed (schedulable again)\n")
    );

    // remove: refused while not drained (4), done with --force.
    let (code, _, err) = s.local(&["remove", "node-3"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("node_not_drained"), "{err}");
    let (code, out, err) = s.local(&["remove", "node-3", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("node-3: removed\n"), "{out}");

    // JOINERY_SOCKET is the default for --socket; no socket there is "unreachable".
    let socket = s.socket.to_str().unwrap();
    let (code, _, _) = joinery(&["nodes"], &[("JOINERY_SOCKET", socket)], "");
    assert_eq!(code, 0);
    let (code, _, err) = joinery(&["nodes", "--socket", "/nonexistent/j.sock"], &[], "");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("/nonexistent/j.sock"), "{err}");
}

/// A pod on `node` that a PodDisruptionBudget allowing no disruption protects.
fn add_pod_behind_a_budget(fake: &FakeKube, node: &str) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1,
                   "expectedPods": 1}});
    fake.control(
        "POST",
        "/_fake/objects",
        Some(json!({ "items": [pod, pdb] })),
    );
}

#[test]
fn operator_commands_over_tls_with_the_pin_or_the_ca() {
    let s = setup();
    let d = &s.daemon;
    let api = format!("https://127.0.0.1:{}", d.port);

    // `joinery pin` reads the certificate the daemon serves: the daemon's own pin.
    let data = d.data_dir.to_str().unwrap();
    let (code, out, err) = joinery(&["pin", "--data-dir", data], &[], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), d.pin);
    let cert = d.cert().display().to_string();
    let (_, out, _) = joinery(&["pin", "--tls-cert", &cert], &[], "");
    assert_eq!(out.trim(), d.pin);

    // `CMD --api API --pin PIN --password-file|--token-file FILE`, as an operator types it.
    let remote = |cmd: &[&str], api: &str, pin: &str, credential: [&str; 2]| {
        let mut args = cmd.to_vec();
        args.extend(["--api", api, "--pin", pin, credential[0], credential[1]]);
        joinery(&args, &[], "")
    };

    // Logged in from a password file, or from stdin, never from argv.
    let password = s.file("password", &format!("{PASSWORD}\n"));
    let (code, out, err) = remote(&["nodes"], &api, &d.pin, ["--password-file", &password]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("node-1 "), "{out}");
    let (code, _, err) = joinery(
        &[
            "health",
            "--api",
            &api,
            "--cacert",
            &cert,
            "--password-file",
            "-",
        ],
        &[],
        PASSWORD,
    );
    assert_eq!(code, 0, "{err}");

    // A session token from a file (via the variables); the same JSON as the API.
    let token = d.login();
    let token_file = s.file("token", &token);
    let env = [
        ("JOINERY_API", api.as_str()),
        ("JOINERY_PIN", d.pin.as_str()),
        ("JOINERY_TOKEN_FILE", token_file.as_str()),
    ];
    let (code, out, err) = joinery(&["node", "node-1", "-o", "json"], &env, "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&out), s.api("GET", "/v1/nodes/node-1", &token));

    // Everything in variables, as the demo's env file sets them: JOINERY_API wins over
    // JOINERY_SOCKET, the pin over the CA; --socket on the command line wins over both.
    let socket = s.socket.to_str().unwrap();
    let all = [
        ("JOINERY_API", api.as_str()),
        ("JOINERY_PIN", d.pin.as_str()),
        ("JOINERY_CACERT", cert.as_str()),
        ("JOINERY_PASSWORD_FILE", password.as_str()),
        ("JOINERY_SOCKET", "/nonexistent/j.sock"),
    ];
    let (code, _, err) = joinery(&["health"], &all, "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = joinery(&["health", "--socket", socket], &all, "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = joinery(&["health", "--socket", socket, "--pin", &d.pin], &[], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--pin is for --api"), "{err}");

    // Refused (4): a wrong password, a read-only token asking for an admin action.
    let wrong = s.file("wrong", "not the password\n");
    let (code, _, err) = remote(&["nodes"], &api, &d.pin, ["--password-file", &wrong]);
    assert_eq!(code, 4, "{err}");
    let created = d.post_json(
        "/v1/auth/tokens",
        Some(&token),
        &json!({"name": "ro", "scopes": ["read"]}).to_string(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let ro = created.json()["token"].as_str().unwrap().to_string();
    d.register_secret(&ro);
    let ro_file = s.file("ro", &ro);
    let (code, _, err) = remote(
        &["drain", "node-2"],
        &api,
        &d.pin,
        ["--token-file", &ro_file],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("403"), "{err}");

    // Unreachable (5): another server's pin, a port nobody listens on.
    let other = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (code, _, err) = remote(&["nodes"], &api, other, ["--token-file", &token_file]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not the --pin given"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (code, _, err) = remote(
        &["nodes"],
        &format!("https://127.0.0.1:{port}"),
        &d.pin,
        ["--token-file", &token_file],
    );
    assert_eq!(code, 5, "{err}");

    // No secret on the command line is possible: there is no flag for one.
    let (code, _, err) = joinery(&["nodes", "--password", PASSWORD], &[], "");
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

#[test]
fn token_list_json_is_the_apis() {
    let s = setup();
    let token = s.daemon.login();
    let created = s.daemon.post_json(
        "/v1/auth/tokens",
        Some(&token),
        &json!({"name": "backup", "scopes": ["read"]}).to_string(),
    );
    assert_eq!(created.status, 201);
    s.daemon
        .register_secret(created.json()["token"].as_str().unwrap());
    let kc = s.fake.kubeconfig();
    let (code, out, err) = joinery(
        &[
            "token",
            "list",
            "-o",
            "json",
            "--kubeconfig",
            kc.to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&out), s.api("GET", "/v1/auth/tokens", &token));
}
