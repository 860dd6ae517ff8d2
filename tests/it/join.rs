//! Headless joins: the seed's create-join-command flow run verbatim with sh, curl and
//! tar; single use across controllers; every refusal; memory with a 2 GiB artifact.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

use crate::support::*;

/// The stand-in application binary: records how it was called.
const APP: &str = "#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/app-called-with\"\n";

/// A directory with the EC config, license and artifacts a join needs.
pub(crate) struct JoinInputs {
    pub(crate) dir: tempfile::TempDir,
}

impl JoinInputs {
    pub(crate) fn new(multi_node: bool) -> JoinInputs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("license.yaml"),
            format!(
                "apiVersion: kots.io/v1beta1\nkind: License\nspec:\n  appSlug: my-app\n  \
                 licenseID: lic-123\n  isEmbeddedClusterMultiNodeEnabled: {multi_node}\n"
            ),
        )
        .unwrap();
        let art = dir.path().join("artifacts");
        std::fs::create_dir_all(art.join("images")).unwrap();
        std::fs::write(art.join("my-app"), APP).unwrap();
        // Something big enough to get its own cached gzip member.
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(art.join("images/airgap.bin"), big).unwrap();
        JoinInputs { dir }
    }

    pub(crate) fn artifacts(&self) -> PathBuf {
        self.dir.path().join("artifacts")
    }

    pub(crate) fn args(&self) -> Vec<String> {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        vec![
            "--ec-config".into(),
            ec_config().display().to_string(),
            "--license".into(),
            p("license.yaml"),
            "--artifacts-dir".into(),
            p("artifacts"),
        ]
    }
}

pub(crate) fn joining_daemon(fake: &FakeKube, inputs: &JoinInputs) -> Daemon {
    Daemon::start_with(
        fake,
        DaemonOpts {
            args: inputs.args(),
            ..Default::default()
        },
    )
}

pub(crate) fn create_command(d: &Daemon, token: &str, roles: Value) -> Reply {
    d.post_json(
        "/v1/create-join-command",
        Some(token),
        &json!({ "roles": roles }).to_string(),
    )
}

/// Runs a shell command in `dir` with a `sudo` shim on PATH (the test runs unprivileged
/// or as root without sudo installed). Returns (exit code, stderr).
pub(crate) fn sh(dir: &Path, command: &str) -> (i32, String) {
    let shim = dir.join(".shim");
    std::fs::create_dir_all(&shim).unwrap();
    std::fs::write(shim.join("sudo"), "#!/bin/sh\nexec \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shim.join("sudo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn steps(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    let steps = v["joinSteps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{v}");
    for s in steps {
        assert!(s["description"].as_str().unwrap().len() > 5);
    }
    steps
        .iter()
        .map(|s| s["command"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The bearer token inside a download command.
pub(crate) fn token_in(download: &str) -> String {
    let start = download.find("eyJ").expect("a JWT in the download step");
    download[start..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn join_steps_run_verbatim_and_the_bundle_verifies() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let cmds = steps(&create_command(&d, &admin, json!(["controller", "gpu"])));

    assert!(
        cmds[0].contains("| curl -sS --proto =https -k --pinnedpubkey "),
        "{}",
        cmds[0]
    );
    assert!(cmds[0].contains(&format!("'{}'", d.pin)));
    assert!(cmds[0].contains(&format!(
        "https://127.0.0.1:{}/v1/join-bundle?roles=controller,gpu",
        d.port
    )));
    let file = cmds[1]
        .strip_prefix("tar xzf ")
        .unwrap()
        .trim_matches('\'')
        .to_string();
    assert!(
        file.starts_with("my-app-join-controller-gpu-") && file.ends_with(".tar.gz"),
        "{file}"
    );
    let stamp = &file["my-app-join-controller-gpu-".len()..file.len() - ".tar.gz".len()];
    assert_eq!(stamp.len(), 15, "YYYYMMDD-HHMMSS: {stamp}");
    assert_eq!(cmds[2], "sudo ./'my-app' node join");

    let claims = claims_of(&token_in(&cmds[0]));
    assert_eq!(claims["aud"], "join-bundle");
    assert_eq!(claims["roles"], json!(["controller", "gpu"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );

    let host = tempfile::tempdir().unwrap();
    for c in &cmds {
        let (code, err) = sh(host.path(), c);
        assert_eq!(code, 0, "step failed: {c}\n{err}");
    }
    let called = std::fs::read_to_string(host.path().join("app-called-with")).unwrap();
    assert_eq!(called.trim(), "node join");
    let (code, err) = sh(host.path(), "sha256sum -c --strict SHA256SUMS");
    assert_eq!(code, 0, "{err}");
    let sums = std::fs::read_to_string(host.path().join("SHA256SUMS")).unwrap();
    for f in [
        "my-app",
        "images/airgap.bin",
        "license.yaml",
        "cluster-seed.json",
        "k0s-join-token",
    ] {
        assert!(
            sums.contains(&format!("  {f}\n")),
            "{f} missing from SHA256SUMS:\n{sums}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(host.path().join("my-app"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read(host.path().join("images/airgap.bin")).unwrap(),
        std::fs::read(inputs.artifacts().join("images/airgap.bin")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("license.yaml")).unwrap(),
        std::fs::read_to_string(inputs.dir.path().join("license.yaml")).unwrap()
    );

    // The k0s token: base64 of gzip of a kubeconfig for a controller join.
    let token = std::fs::read_to_string(host.path().join("k0s-join-token")).unwrap();
    assert!(token.starts_with("H4sI"));
    let gz = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .unwrap();
    let mut kubeconfig = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut kubeconfig)
        .unwrap();
    let kc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kubeconfig).unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://10.0.0.11:9443")
    );
    assert_eq!(
        kc["users"][0]["name"].as_str(),
        Some("controller-bootstrap")
    );
    let ca = std::fs::read_to_string(fake.dir.path().join("ca.crt")).unwrap();
    let ca_in = base64::engine::general_purpose::STANDARD
        .decode(
            kc["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(String::from_utf8(ca_in).unwrap(), ca);
    let user_token = kc["users"][0]["user"]["token"].as_str().unwrap();
    let (id, secret) = user_token.split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16));
    // ...and the bootstrap-token Secret exists in kube-system with controller usages.
    let created: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/api/v1/namespaces/kube-system/secrets")
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");

    // The seed: a flattened JWS whose payload names the roles and their labels.
    let seed: Value =
        serde_json::from_slice(&std::fs::read(host.path().join("cluster-seed.json")).unwrap())
            .unwrap();
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seed["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["roles"], json!(["controller", "gpu"]));
    assert_eq!(
        payload["nodeLabels"]["kots.io/embedded-cluster-role"],
        "total-2"
    );
    assert_eq!(
        payload["nodeLabels"]["kots.io/embedded-cluster-role-1"],
        "gpu"
    );
    assert_eq!(payload["nodeLabels"]["accelerator"], "nvidia");
    assert_eq!(payload["controllers"][0]["internalIP"], "10.0.0.11");
    assert!(payload["connections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["port"] == 2380));

    // The same token from another host: spent.
    let r = d.get_from(
        "127.0.0.2",
        "/v1/join-bundle?roles=controller,gpu",
        &token_in(&cmds[0]),
    );
    r.assert_error(410, "join_token_used");
}

#[test]
fn a_join_token_is_single_use_across_controllers() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let a = joining_daemon(&fake, &inputs);
    let b = joining_daemon(&fake, &inputs);
    let admin = a.login();
    let cmds = steps(&create_command(&a, &admin, json!(["worker"])));
    let token = token_in(&cmds[0]);
    // Both controllers race the same token.
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.get("/v1/join-bundle?roles=worker", &token));
        // From another host: the same one may resume its own download.
        let tb = s.spawn(|| b.get_from("127.0.0.2", "/v1/join-bundle?roles=worker", &token));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let statuses = [ra.status, rb.status];
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    let loser = if ra.status == 200 { &rb } else { &ra };
    loser.assert_error(410, "join_token_used");
    let winner = if ra.status == 200 { &ra } else { &rb };
    assert_eq!(winner.header("content-type"), Some("application/gzip"));
    assert!(winner
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment; filename=\"my-app-join-worker-"));
    // A worker's k0s token points at 6443 as kubelet-bootstrap.
    let dir = extract_verified(&winner.body);
    let token = std::fs::read_to_string(dir.path().join("k0s-join-token")).unwrap();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .unwrap();
    let mut kc = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut kc)
        .unwrap();
    assert!(kc.contains("server: https://10.0.0.11:6443"), "{kc}");
    assert!(kc.contains("name: kubelet-bootstrap"), "{kc}");
}

#[test]
fn the_bundle_extracts_with_gnu_tar_busybox_and_python() {
    let fake = FakeKube::start(2, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    // An admin token downloads directly, as often as needed.
    for round in 0..2 {
        let r = d.get("/v1/join-bundle?roles=worker", &admin);
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.tgz"), &r.body).unwrap();
        for (tool, cmd) in [
            ("gnu", "mkdir gnu && tar xzf b.tgz -C gnu && cd gnu && sha256sum -c SHA256SUMS >/dev/null"),
            ("busybox", "mkdir bb && busybox tar xzf b.tgz -C bb && cd bb && sha256sum -c SHA256SUMS >/dev/null"),
            (
                "python",
                "python3 -c 'import tarfile; tarfile.open(\"b.tgz\", \"r:gz\").extractall(\"py\", filter=\"data\")' \
                 && cd py && sha256sum -c SHA256SUMS >/dev/null",
            ),
        ] {
            let (code, err) = sh(dir.path(), cmd);
            assert_eq!(code, 0, "{tool} (round {round}): {err}");
        }
    }
}

#[test]
fn join_refusals() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();

    let msg = create_command(&d, &admin, json!(["nope"])).assert_error(400, "invalid_roles");
    assert!(
        msg.contains("\"nope\"") && msg.contains("controller, worker, gpu, app"),
        "{msg}"
    );
    create_command(&d, &admin, json!([])).assert_error(400, "invalid_roles");
    create_command(&d, &admin, json!(["gpu", "gpu"])).assert_error(400, "invalid_roles");
    create_command(&d, &admin, json!(["x'; reboot; '"])).assert_error(400, "invalid_roles");
    d.post_json(
        "/v1/create-join-command",
        Some(&admin),
        r#"{"roles":"controller"}"#,
    )
    .assert_error(400, "invalid_body");
    d.post_json(
        "/v1/create-join-command",
        None,
        r#"{"roles":["controller"]}"#,
    )
    .assert_error(401, "missing_token");

    for q in [
        "",
        "?roles=",
        "?roles=nope",
        "?roles=worker,worker",
        "?roles=a%20b",
    ] {
        d.get(&format!("/v1/join-bundle{q}"), &admin)
            .assert_error(400, "invalid_roles");
    }
    // The shared query parser's one rule: a repeat or an unknown key is refused.
    d.get("/v1/join-bundle?roles=worker&roles=gpu", &admin)
        .assert_error(400, "invalid_query");
    d.get("/v1/join-bundle?roles=worker&role=gpu", &admin)
        .assert_error(400, "unknown_parameter");
    d.curl("GET", "/v1/join-bundle?roles=worker", &[])
        .assert_error(401, "missing_token");

    // A join token is good for its roles and the bundle only.
    let cmds = steps(&create_command(&d, &admin, json!(["worker"])));
    let join = token_in(&cmds[0]);
    d.get("/v1/nodes", &join).assert_error(401, "invalid_token");
    d.post_json(
        "/v1/create-join-command",
        Some(&join),
        r#"{"roles":["worker"]}"#,
    )
    .assert_error(401, "invalid_token");
    d.get("/v1/join-bundle?roles=gpu", &join)
        .assert_error(403, "roles_mismatch");
    // ...and refusing it did not spend it.
    assert_eq!(d.get("/v1/join-bundle?roles=worker", &join).status, 200);

    // No Ready controller: poll /v1/nodes first.
    fake.control(
        "POST",
        "/_fake/node-ready",
        Some(json!({"name": "node-1", "ready": false})),
    );
    let msg =
        create_command(&d, &admin, json!(["worker"])).assert_error(409, "no_ready_controller");
    assert!(msg.contains("GET /v1/nodes"), "{msg}");
}

#[test]
fn single_node_license_refuses_joins() {
    let fake = FakeKube::start(2, &[]);
    let inputs = JoinInputs::new(false);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    create_command(&d, &admin, json!(["worker"])).assert_error(403, "license_not_multi_node");
    d.get("/v1/join-bundle?roles=worker", &admin)
        .assert_error(403, "license_not_multi_node");
}

#[test]
fn joins_need_their_inputs() {
    let fake = FakeKube::start(2, &[]);
    let d = Daemon::start(&fake);
    let admin = d.login();
    let msg =
        create_command(&d, &admin, json!(["worker"])).assert_error(503, "joins_not_configured");
    assert!(msg.contains("--ec-config"), "{msg}");
    // A bad input file is a start-up error naming the flag.
    let inputs = JoinInputs::new(true);
    std::fs::remove_file(inputs.artifacts().join("my-app")).unwrap();
    let args = inputs.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = serve_fails(&fake, &args);
    assert!(
        err.contains("--artifacts-dir") && err.contains("my-app"),
        "{err}"
    );
}

#[test]
fn a_two_gib_artifact_streams_in_bounded_memory() {
    let fake = FakeKube::start(2, &[]);
    let inputs = JoinInputs::new(true);
    // A sparse 2 GiB file: real bytes to read, hash and compress, no disk to fill.
    let big = inputs.artifacts().join("airgap-2g.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "600", "--cacert"])
        .arg(d.cert())
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .arg(format!("{}/v1/join-bundle?roles=worker", d.url))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(out.status.success());
    // The archive really holds the 2 GiB entry.
    let mut gz = flate2::read::MultiGzDecoder::new(&out.stdout[..]);
    let mut archive = tar::Archive::new(&mut gz);
    let size = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("airgap-2g.bin"))
        .map(|e| e.header().size().unwrap())
        .unwrap();
    assert_eq!(size, 2 << 30);
    let peak = proc_status_kib(d.pid(), "VmHWM");
    assert!(peak < 32 * 1024, "peak RSS {peak} KiB");
}
