//! The seed document's endpoints, their success paths and every error they answer.

use base64::Engine;
use serde_json::{json, Value};

use crate::support::*;

fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn health_and_version_need_no_token() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let r = d.curl("GET", "/v1/health", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let v = d.curl("GET", "/v1/version", &[]).json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let commit = v["commit"].as_str().unwrap();
    assert!(
        commit == "unknown" || (commit.len() == 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    let date = v["buildDate"].as_str().unwrap();
    // The seed's format: 2026-01-15_12:00:00
    let shape: String = date
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99_99:99:99", "{date}");
}

#[test]
fn login_issues_a_24_hour_admin_token() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let token = d.login();
    let c = claims(&token);
    assert_eq!(c["sub"], "admin");
    assert_eq!(c["iss"], "joinery");
    assert_eq!(c["aud"], "joinery");
    assert_eq!(c["scope"], "admin");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        86_400
    );
    assert!(c["jti"].as_str().unwrap().len() >= 16);
    // The header is exactly HS256/JWT.
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&header).unwrap(),
        json!({"alg": "HS256", "typ": "JWT"})
    );
}

#[test]
fn login_refusals() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let r = d.post_json("/v1/auth/token", None, r#"{"password":"wrong"}"#);
    r.assert_error(401, "invalid_password");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));

    d.post_json("/v1/auth/token", None, r#"{"password":""}"#)
        .assert_error(400, "invalid_body");
    d.post_json("/v1/auth/token", None, r#"{"password":"#)
        .assert_error(400, "invalid_body");
    d.post_json("/v1/auth/token", None, r#"{"pasword":"x"}"#)
        .assert_error(400, "invalid_body");
    // A password sent as a number is refused without echoing it back.
    let r = d.post_json("/v1/auth/token", None, r#"{"password":918273645}"#);
    let msg = r.assert_error(400, "invalid_body");
    assert!(!msg.contains("918273645"), "{msg}");
    // curl -d without a JSON content type.
    d.curl("POST", "/v1/auth/token", &["-d", r#"{"password":"x"}"#])
        .assert_error(415, "unsupported_media_type");
    let big = format!(r#"{{"password":"{}"}}"#, "a".repeat(70 * 1024));
    d.post_json("/v1/auth/token", None, &big)
        .assert_error(413, "body_too_large");
    let r = d.curl("GET", "/v1/auth/token", &[]);
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn login_reads_the_embedded_cluster_password_secret() {
    let fake = FakeKube::with_password(1);
    let d = Daemon::start_with(
        &fake,
        DaemonOpts {
            password_file: false,
            ..Default::default()
        },
    );
    let token = d.login();
    assert_eq!(d.get("/v1/nodes", &token).status, 200);
    d.post_json("/v1/auth/token", None, r#"{"password":"nope"}"#)
        .assert_error(401, "invalid_password");
}

#[test]
fn login_without_a_password_secret_says_so() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start_with(
        &fake,
        DaemonOpts {
            password_file: false,
            ..Default::default()
        },
    );
    d.post_json("/v1/auth/token", None, r#"{"password":"x"}"#)
        .assert_error(503, "auth_unavailable");
    // The log line may trail the response by a moment: wait for it (bounded).
    d.output.wait_for("the log naming the missing Secret", |l| {
        l.contains("kotsadm-password")
    });
}

#[test]
fn nodes_in_the_seed_shape() {
    let fake = FakeKube::start(4, &[]);
    fake.control(
        "POST",
        "/_fake/node-ready",
        Some(json!({"name": "node-3", "ready": false})),
    );
    let d = Daemon::start(&fake);
    let token = d.login();
    let r = d.get("/v1/nodes", &token);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    let by_name = |n: &str| nodes.iter().find(|x| x["name"] == n).cloned().unwrap();
    let c = by_name("node-1");
    let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "annotations",
            "internalIP",
            "labels",
            "name",
            "ready",
            "roles"
        ]
    );
    assert_eq!(c["roles"], json!(["controller"]));
    assert_eq!(c["internalIP"], "10.0.0.11");
    assert_eq!(c["ready"], true);
    assert!(c["labels"]
        .as_object()
        .unwrap()
        .contains_key("node-role.kubernetes.io/control-plane"));
    assert!(c["annotations"].is_object());
    assert_eq!(by_name("node-2")["roles"], json!(["worker"]));
    assert_eq!(by_name("node-3")["ready"], false);
    // A node without Embedded Cluster role labels has no roles.
    assert!(nodes.iter().any(|n| n["roles"] == json!([])), "{v}");
}

#[test]
fn nodes_are_paged_from_kubernetes() {
    let fake = FakeKube::start(1203, &[]);
    let d = Daemon::start(&fake);
    let token = d.login();
    let r = d.get("/v1/nodes", &token);
    assert_eq!(r.status, 200);
    let v = r.json();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1203);
    let mut names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1203, "duplicates across pages");
    let lists: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/api/v1/nodes")
        .collect();
    assert!(lists.len() >= 3, "expected several pages: {lists:?}");
    assert!(lists
        .iter()
        .all(|r| r["query"].as_str().unwrap_or("").contains("limit=")));
    assert!(lists
        .iter()
        .any(|r| r["query"].as_str().unwrap_or("").contains("continue=")));
}

#[test]
fn tokens_are_checked() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let r = d.curl("GET", "/v1/nodes", &[]);
    r.assert_error(401, "missing_token");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    d.curl(
        "GET",
        "/v1/nodes",
        &["-H", "Authorization: Basic YWRtaW46eA=="],
    )
    .assert_error(401, "invalid_token");
    let token = d.login();
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    // Tampered payload: scope changed, old signature.
    let mut c = claims(&token);
    c["sub"] = json!("mallory");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
    let r = d.get("/v1/nodes", &parts.join("."));
    r.assert_error(401, "invalid_token");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    // alg none with no signature.
    let none =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let forged = format!("{none}.{}.", parts[1]);
    d.get("/v1/nodes", &forged)
        .assert_error(401, "invalid_token");
    // Oversized.
    d.get("/v1/nodes", &"a".repeat(9000))
        .assert_error(401, "invalid_token");
}

#[test]
fn unknown_paths_and_methods() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    d.curl("GET", "/v1/nope", &[])
        .assert_error(404, "not_found");
    d.curl("GET", "/", &[]).assert_error(404, "not_found");
    let r = d.curl("DELETE", "/v1/health", &[]);
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // With -I curl prints the headers as its output: a body would follow them.
    let r = d.curl("HEAD", "/v1/health", &["-I"]);
    assert_eq!(r.status, 200);
    assert!(
        !r.text().contains("\"status\""),
        "HEAD sent a body: {}",
        r.text()
    );
}

#[test]
fn tokens_work_on_every_controller_sharing_the_cluster() {
    let fake = FakeKube::start(1, &[]);
    // Two daemons starting at once race to create the signing key Secret.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Daemon::start(&fake));
        let b = s.spawn(|| Daemon::start(&fake));
        (a.join().unwrap(), b.join().unwrap())
    });
    let from_a = a.login();
    let from_b = b.login();
    assert_eq!(b.get("/v1/nodes", &from_a).status, 200);
    assert_eq!(a.get("/v1/nodes", &from_b).status, 200);
    let creates = fake
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"].as_str().unwrap_or("").ends_with("/secrets"))
        .count();
    assert!(creates >= 1);
}

#[test]
fn kubernetes_down_is_a_clear_503_and_health_stays_up() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start_args(&fake, &["--kube-timeout", "2"]);
    let token = d.login();
    assert_eq!(d.get("/v1/nodes", &token).status, 200);
    // The API server goes away: open watches are cut and every request is reset. The
    // view answers for at most a few seconds, then reads list live and fail clearly.
    fake.control("POST", "/_fake/down", Some(json!({"seconds": 10})));
    let r = wait_until(9, "reads to fail while the API server is down", || {
        let r = d.get("/v1/nodes", &token);
        (r.status != 200).then_some(r)
    });
    r.assert_error(503, "kubernetes_unavailable");
    assert!(r.header("retry-after").is_some());
    assert_eq!(d.curl("GET", "/v1/health", &[]).status, 200);
    wait_until(40, "reads to recover by themselves", || {
        (d.get("/v1/nodes", &token).status == 200).then_some(())
    });
}

#[test]
fn kubernetes_forbidden_is_generic_and_the_log_names_the_permission() {
    let fake = FakeKube::start(1, &[]);
    // Denied from the start, so the watch-fed view never syncs and reads list live.
    fake.control(
        "POST",
        "/_fake/deny",
        Some(json!([{"verb": "list", "resource": "nodes"}])),
    );
    let d = Daemon::start(&fake);
    let token = d.login();
    let msg = d
        .get("/v1/nodes", &token)
        .assert_error(502, "kubernetes_forbidden");
    // Issue 12 item 8: the body repeated the API server's text, the service account's
    // identity included, to any client. It stays generic; the log names the permission.
    assert!(!msg.contains("system:") && !msg.contains("cannot"), "{msg}");
    assert!(msg.contains("log"), "{msg}");
    d.output.wait_for("the permission in the log", |l| {
        l.contains("kubernetes call failed") && l.contains("list") && l.contains("nodes")
    });
}

#[test]
fn every_request_is_logged_without_secrets() {
    let fake = FakeKube::start(1, &[]);
    let d = Daemon::start(&fake);
    let token = d.login();
    // An unknown parameter is refused (400), and its value is not logged either way.
    d.get("/v1/nodes?secret=querystring", &token)
        .assert_error(400, "unknown_parameter");
    assert_eq!(d.get("/v1/nodes?watch=false", &token).status, 200);
    d.post_json("/v1/auth/token", None, r#"{"password":"wrong-guess-123"}"#);
    let lines = d.output.json_lines();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["msg"] == "request").collect();
    let nodes = requests
        .iter()
        .find(|l| l["path"] == "/v1/nodes" && l["status"] == 200)
        .expect("a log line for /v1/nodes");
    for field in ["time", "remote", "method", "status", "bytes", "durationMs"] {
        assert!(!nodes[field].is_null(), "missing {field}: {nodes}");
    }
    assert_eq!(nodes["subject"], "admin");
    let all = d.output.lines().join("\n");
    for secret in [PASSWORD, "wrong-guess-123", token.as_str(), "querystring"] {
        assert!(!all.contains(secret), "log leaks {secret:?}");
    }
}

#[test]
fn client_certificate_kubeconfig_like_k0s_admin_conf() {
    let fake = FakeKube::start(2, &[]);
    let d = Daemon::start_with(
        &fake,
        DaemonOpts {
            kubeconfig: Some(fake.dir.path().join("kubeconfig-cert")),
            ..Default::default()
        },
    );
    let token = d.login();
    let r = d.get("/v1/nodes", &token);
    assert_eq!(r.status, 200, "{}", r.text());
    let users: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r["path"] == "/api/v1/nodes")
        .map(|r| r["user"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(users.iter().all(|u| u == "kubernetes-admin"), "{users:?}");
}

#[test]
fn in_cluster_service_account_token_is_reread_after_rotation() {
    let fake = FakeKube::start(2, &[]);
    // A service-account directory as a pod would have it.
    let sa = tempfile::tempdir().unwrap();
    std::fs::copy(fake.dir.path().join("ca.crt"), sa.path().join("ca.crt")).unwrap();
    std::fs::copy(fake.dir.path().join("token"), sa.path().join("token")).unwrap();
    std::fs::write(sa.path().join("namespace"), "kotsadm").unwrap();
    let port = fake.url.rsplit(':').next().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let hash = data.path().join("hash");
    std::fs::write(&hash, password_hash()).unwrap();
    // No --kubeconfig: the pod's environment decides.
    let mut cmd = std::process::Command::new(joinery_bin());
    cmd.args(["serve", "--api-port", "0", "--bind-address", "127.0.0.1"])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--password-hash-file")
        .arg(&hash)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", &port)
        .env("JOINERY_SA_DIR", sa.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let d = Daemon::spawn_command(cmd);
    let token = d.login();
    assert_eq!(d.get("/v1/nodes", &token).status, 200);
    // The API server rotates the token; the kubelet writes the new one into the file.
    let new = fake.control("POST", "/_fake/rotate-token", Some(json!({})));
    std::fs::write(sa.path().join("token"), new["token"].as_str().unwrap()).unwrap();
    let r = d.get("/v1/nodes", &token);
    assert_eq!(r.status, 200, "after rotation: {}", r.text());
}
