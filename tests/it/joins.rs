//! Joins an attacker cannot steal or burn: the token never in any argv, nothing written
//! to Kubernetes for a spent, expired or revoked token, HEAD spends nothing, failures
//! before the bundle starts leave the join usable, artifacts swapped after start-up are
//! refused, and the step says the server's message when it fails.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::join::{create_command, joining_daemon, steps, token_in, JoinInputs};
use crate::support::*;

/// Scans every process's `/proc/PID/cmdline` in a loop, recording any argv holding one
/// of the `secrets`, and any argv holding a JWT (join, session or refresh) among the
/// processes of the watched process group (other tests' curl runs carry tokens).
pub(crate) struct ArgvWatch {
    stop: Arc<AtomicBool>,
    scans: Arc<AtomicUsize>,
    group: Arc<AtomicI32>,
    hits: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The process group of `pid` (field 5 of `/proc/PID/stat`, after the command name).
fn pgid_of(dir: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(2)?.parse().ok()
}

impl ArgvWatch {
    /// `notice`: argv substrings whose sighting in the watched group is recorded in
    /// the result, to show the watcher really saw the processes it should have.
    /// `group_secrets`: like `secrets`, looked for in the watched group only (a
    /// password other tests put on their own command lines, say).
    pub(crate) fn start(
        secrets: Vec<String>,
        group_secrets: Vec<String>,
        notice: Vec<String>,
    ) -> ArgvWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let scans = Arc::new(AtomicUsize::new(0));
        let group = Arc::new(AtomicI32::new(-1));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let me = std::process::id().to_string();
        let thread = {
            let (stop, scans, group, hits, seen) = (
                stop.clone(),
                scans.clone(),
                group.clone(),
                hits.clone(),
                seen.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                        let pid = e.file_name().to_string_lossy().into_owned();
                        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                            continue;
                        }
                        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                            continue;
                        };
                        let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
                        let watched = pgid_of(&e.path()) == Some(group.load(Ordering::Relaxed));
                        if secrets.iter().any(|x| argv.contains(x))
                            || (watched
                                && (!jwts_in(&raw).is_empty()
                                    || group_secrets.iter().any(|x| argv.contains(x))))
                        {
                            hits.lock().unwrap().push(format!("pid {pid}: {argv}"));
                        }
                        for n in notice
                            .iter()
                            .filter(|n| watched && argv.contains(n.as_str()))
                        {
                            seen.lock().unwrap().push(n.clone());
                        }
                    }
                    scans.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        ArgvWatch {
            stop,
            scans,
            group,
            hits,
            seen,
            thread: Some(thread),
        }
    }

    /// How many argvs with a secret were seen so far.
    pub(crate) fn hits_so_far(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// Watches the process group `pgid` from now on.
    pub(crate) fn group(&self, pgid: u32) {
        self.group.store(pgid as i32, Ordering::Relaxed);
    }

    /// Stops the watcher; returns (argvs that held a secret, notices seen, scans done).
    pub(crate) fn finish(mut self) -> (Vec<String>, Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let hits = std::mem::take(&mut *self.hits.lock().unwrap());
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (hits, seen, self.scans.load(Ordering::Relaxed))
    }
}

impl Drop for ArgvWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Pastes `script` into `sh` (the way a person pastes the steps into a shell), in `dir`,
/// with a `sudo` shim on PATH. Returns (exit code, stdout, stderr).
pub(crate) fn paste_into_sh(dir: &Path, script: &str) -> (i32, String, String) {
    paste_into_sh_watched(dir, script, None)
}

/// [`paste_into_sh`] in a process group of its own, which `watch` then watches.
pub(crate) fn paste_into_sh_watched(
    dir: &Path,
    script: &str,
    watch: Option<&ArgvWatch>,
) -> (i32, String, String) {
    use std::os::unix::process::CommandExt;
    let shim = dir.join(".shim");
    std::fs::create_dir_all(&shim).unwrap();
    std::fs::write(shim.join("sudo"), "#!/bin/sh\nexec \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shim.join("sudo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
    let mut child = Command::new("sh")
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    if let Some(w) = watch {
        w.group(child.id());
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The requests that wrote a Secret (any namespace), from the fake's log.
fn secret_writes(fake: &FakeKube) -> Vec<Value> {
    fake.requests()
        .into_iter()
        .filter(|r| {
            r["method"] != "GET" && r["path"].as_str().is_some_and(|p| p.contains("/secrets"))
        })
        .collect()
}

fn bootstrap_secrets(fake: &FakeKube) -> usize {
    secret_writes(fake)
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/api/v1/namespaces/kube-system/secrets")
        .count()
}

#[test]
fn regression_join_token_is_never_in_any_argv() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let cmds = steps(&create_command(&d, &admin, json!(["worker"])));
    let token = token_in(&cmds[0]);
    // Slow Kubernetes down so curl lives long enough to be seen many times over.
    fake.control("POST", "/_fake/config", Some(json!({"latencyMs": 300})));
    let watch = ArgvWatch::start(vec![token.clone()], vec![], vec!["/v1/join-bundle".into()]);
    // The watcher works: a process with the token in its argv is caught.
    let mut bait = Command::new("sh")
        .args(["-c", "sleep 60", "bait", &token])
        .spawn()
        .unwrap();
    wait_until(60, "the watcher catching the bait", || {
        (watch.hits_so_far() > 0).then_some(())
    });
    bait.kill().unwrap();
    bait.wait().unwrap();
    let host = tempfile::tempdir().unwrap();
    let (code, out, err) =
        paste_into_sh_watched(host.path(), &(cmds.join("\n") + "\n"), Some(&watch));
    fake.control("POST", "/_fake/config", Some(json!({"latencyMs": 0})));
    let (hits, seen, scans) = watch.finish();
    assert_eq!(code, 0, "steps failed:\n{out}\n{err}");
    assert!(
        hits.iter().all(|h| h.contains("bait")) && hits.iter().any(|h| h.contains("bait")),
        "a secret was in an argv (scans: {scans}):\n{hits:#?}"
    );
    assert!(
        !seen.is_empty(),
        "the watcher never saw curl run ({scans} scans)"
    );
    assert_sums_verify(host.path());
}

#[test]
fn regression_the_step_is_quiet_and_shows_the_servers_message() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let cmds = steps(&create_command(&d, &admin, json!(["worker"])));
    let host = tempfile::tempdir().unwrap();
    let (code, out, err) = paste_into_sh(host.path(), &format!("{}\n", cmds[0]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!((out.as_str(), err.as_str()), ("", ""), "quiet on success");
    // Used elsewhere (another host, 127.0.0.2, downloaded it first): the step fails
    // with the server's sentence and code, without curl's noise, and leaves no file.
    let cmds = steps(&create_command(&d, &admin, json!(["worker"])));
    let first = d.curl(
        "GET",
        "/v1/join-bundle?roles=worker",
        &[
            "-H",
            &format!("Authorization: Bearer {}", token_in(&cmds[0])),
            "--interface",
            "127.0.0.2",
        ],
    );
    assert_eq!(first.status, 200);
    let other = tempfile::tempdir().unwrap();
    let (code, out, err) = paste_into_sh(other.path(), &format!("{}\n", cmds[0]));
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("this join token was already used") && err.contains("join_token_used"),
        "{err}"
    );
    assert!(!err.contains("curl:"), "{err}");
    let left: Vec<_> = std::fs::read_dir(other.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".shim")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A failing step in a pasted sequence stops there: `&&` chains are not needed.
    let (code, _, _) = paste_into_sh(other.path(), &format!("set -e\n{}\necho after\n", cmds[0]));
    assert_ne!(code, 0);
}

#[test]
fn regression_spent_expired_and_forged_tokens_write_nothing_to_kubernetes() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let key_file = inputs.dir.path().join("signing.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    let mut args = inputs.args();
    args.extend(["--signing-key-file".into(), key_file.display().to_string()]);
    let d = Daemon::start_with(
        &fake,
        DaemonOpts {
            args,
            ..Default::default()
        },
    );
    let admin = d.login();
    let cmds = steps(&create_command(&d, &admin, json!(["controller"])));
    let token = token_in(&cmds[0]);
    assert_eq!(
        d.get("/v1/join-bundle?roles=controller", &token).status,
        200
    );
    assert_eq!(bootstrap_secrets(&fake), 1);
    // Twenty replays from another address (127.0.0.2; the first download came from
    // 127.0.0.1, the only client that may resume it).
    fake.control("DELETE", "/_fake/requests", None);
    for _ in 0..20 {
        let r = d.curl(
            "GET",
            "/v1/join-bundle?roles=controller",
            &[
                "-H",
                &format!("Authorization: Bearer {token}"),
                "--interface",
                "127.0.0.2",
            ],
        );
        r.assert_error(410, "join_token_used");
    }
    assert_eq!(secret_writes(&fake), Vec::<Value>::new());

    // A well-signed token whose time is up (its ticket unused): 410
    // join_token_expired, nothing written.
    let fresh = token_in(&steps(&create_command(&d, &admin, json!(["controller"])))[0]);
    fake.control("DELETE", "/_fake/requests", None);
    let key = joinery::SigningKey::from_file(&key_file).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = joinery::jwt_verify(key.as_bytes(), &fresh, "join-bundle", now)
        .unwrap_or_else(|e| panic!("{e}"));
    claims.iat = now - 7200;
    claims.nbf = now - 7200;
    claims.exp = now - 3600;
    let expired = joinery::jwt_sign(key.as_bytes(), &claims);
    d.register_secret(&expired);
    let msg = d
        .get("/v1/join-bundle?roles=controller", &expired)
        .assert_error(410, "join_token_expired");
    assert!(msg.contains("new join command"), "{msg}");
    assert_eq!(secret_writes(&fake), Vec::<Value>::new());
}

#[test]
fn regression_head_spends_nothing() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let cmds = steps(&create_command(&d, &admin, json!(["worker"])));
    let token = token_in(&cmds[0]);
    fake.control("DELETE", "/_fake/requests", None);
    for _ in 0..3 {
        let r = d.curl(
            "HEAD",
            "/v1/join-bundle?roles=worker",
            &["-I", "-H", &format!("Authorization: Bearer {token}")],
        );
        assert_eq!(r.status, 200, "{:?}", r.headers);
        assert_eq!(r.header("content-type"), Some("application/gzip"));
    }
    assert_eq!(secret_writes(&fake), Vec::<Value>::new());
    assert_eq!(d.get("/v1/join-bundle?roles=worker", &token).status, 200);
}

#[test]
fn regression_failures_before_the_bundle_starts_leave_the_join_usable() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let token = |roles: Value| token_in(&steps(&create_command(&d, &admin, roles))[0]);

    // An artifact removed after start-up: an error naming no secret, the join intact,
    // and no bootstrap token left behind.
    let t = token(json!(["worker"]));
    let app = inputs.artifacts().join("my-app");
    let saved = std::fs::read(&app).unwrap();
    std::fs::remove_file(&app).unwrap();
    fake.control("DELETE", "/_fake/requests", None);
    let r = d.get("/v1/join-bundle?roles=worker", &t);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "artifacts_changed");
    assert_eq!(secret_writes(&fake), Vec::<Value>::new());
    std::fs::write(&app, &saved).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Put back, and joinery restarted on it (as the message says): the join works.
    let d2 = joining_daemon(&fake, &inputs);
    assert_eq!(d2.get("/v1/join-bundle?roles=worker", &t).status, 200);

    // The consume's write lands but its answer is lost: the same client's retry gets
    // its bundle; someone else's gets 410.
    let t = token(json!(["worker"]));
    fake.control(
        "POST",
        "/_fake/faults",
        Some(json!([
            {"method": "PUT", "path": "/secrets/joinery-ticket-", "kind": "lost", "times": 1},
            {"method": "DELETE", "path": "/secrets/joinery-ticket-", "kind": "lost", "times": 1}
        ])),
    );
    let r = d2.get("/v1/join-bundle?roles=worker", &t);
    assert_eq!(r.status, 503, "{}", r.text());
    let r = d2.get("/v1/join-bundle?roles=worker", &t);
    assert_eq!(r.status, 200, "{}", r.text());
    extract_verified(&r.body);
    let r = d2.curl(
        "GET",
        "/v1/join-bundle?roles=worker",
        &[
            "-H",
            &format!("Authorization: Bearer {t}"),
            "--interface",
            "127.0.0.2",
        ],
    );
    r.assert_error(410, "join_token_used");
}

#[test]
fn regression_an_artifact_swapped_for_a_symlink_or_link_is_refused() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let big = inputs.artifacts().join("images/airgap.bin");
    let key = d.data_dir.join("tls.key");
    let secret = std::fs::read(&key).unwrap();
    for swap in ["symlink", "hardlink"] {
        let t = token_in(&steps(&create_command(&d, &admin, json!(["worker"])))[0]);
        let saved = big.with_extension("saved");
        std::fs::rename(&big, &saved).unwrap();
        match swap {
            "symlink" => std::os::unix::fs::symlink(&key, &big).unwrap(),
            _ => std::fs::hard_link(&key, &big).unwrap(),
        }
        let r = d.get("/v1/join-bundle?roles=worker", &t);
        let mut sent = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(&r.body[..]).read_to_end(&mut sent);
        sent.extend_from_slice(&r.body);
        assert!(
            !sent.windows(32).any(|w| w == &secret[..32]),
            "{swap}: the key's bytes were sent"
        );
        r.assert_error(503, "artifacts_changed");
        std::fs::remove_file(&big).unwrap();
        std::fs::rename(&saved, &big).unwrap();
        // Back in place (same inode): the join was not spent.
        assert_eq!(
            d.get("/v1/join-bundle?roles=worker", &t).status,
            200,
            "{swap}"
        );
    }
}

#[test]
fn regression_an_artifact_name_with_a_backslash_fails_start_up() {
    let fake = FakeKube::start(2, &[]);
    let inputs = JoinInputs::new(true);
    std::fs::write(inputs.artifacts().join("notes\\back.txt"), "x").unwrap();
    let data = tempfile::tempdir().unwrap();
    // `timeout`: a daemon that accepts the name would serve for ever.
    let out = Command::new("timeout")
        .arg("20")
        .arg(joinery_bin())
        .args(["serve", "--api-port", "0", "--bind-address", "127.0.0.1"])
        .arg("--kubeconfig")
        .arg(fake.kubeconfig())
        .arg("--data-dir")
        .arg(data.path())
        .args(inputs.args())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(124), "it started: {err}");
    // A configuration error: 2, so systemd's RestartPreventExitStatus=2 stops retrying.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--artifacts-dir") && err.contains(r"notes\\back.txt"),
        "{err}"
    );
}

/// A `curl` on PATH that slows the real one down, so a download can be cut part-way.
fn slow_curl(dir: &Path, rate: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join(".slow");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v curl"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        bin.join("curl"),
        format!(
            "#!/bin/sh\nexec {} --limit-rate {rate} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("curl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

#[test]
fn a_cut_download_resumes_with_the_same_step_and_verifies() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    // 192 MiB of incompressible data: large enough to cut mid-way, small enough to
    // stay a few seconds on a shared machine.
    let ok = Command::new("sh")
        .args([
            "-c",
            "head -c 201326592 /dev/urandom > images/airgap-big.bin",
        ])
        .current_dir(inputs.artifacts())
        .status()
        .unwrap();
    assert!(ok.success());
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let cmds = steps(&create_command(&d, &admin, json!(["worker"])));
    let file = cmds[1]
        .strip_prefix("tar xzf ")
        .unwrap()
        .trim_matches('\'')
        .to_string();
    let host = tempfile::tempdir().unwrap();
    // First attempt through a slowed curl, killed (the whole process group, as a
    // dropped link or a Ctrl-C would) once 48 MiB arrived.
    let child = {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new("sh")
            .current_dir(host.path())
            .env("PATH", slow_curl(host.path(), "40M"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{}\n", cmds[0]).as_bytes())
            .unwrap();
        c
    };
    let part = host.path().join(&file);
    wait_until(60, "48 MiB downloaded", || {
        (std::fs::metadata(&part).is_ok_and(|m| m.len() > 48 << 20)).then_some(())
    });
    let killed = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = child.wait_with_output();
    let cut = std::fs::metadata(&part).unwrap().len();
    assert!(cut > 48 << 20 && cut < 190 << 20, "cut at {cut}");
    // The same step again: it resumes (206 from where it stopped) and completes.
    let (code, out, err) = paste_into_sh(host.path(), &(cmds.join("\n") + "\n"));
    assert_eq!(code, 0, "{out}\n{err}");
    let resumed = d.output.wait_for("a resumed download", |l| {
        l.contains("\"result\":\"resuming\"")
    });
    assert!(resumed.contains("\"client\":\"127.0.0.1\""), "{resumed}");
    assert_sums_verify(host.path());
    // From another host the token is spent; the resumed host got exactly one bundle.
    d.get_from(
        "127.0.0.2",
        "/v1/join-bundle?roles=worker",
        &token_in(&cmds[0]),
    )
    .assert_error(410, "join_token_used");
}

#[test]
fn the_ledger_shows_every_join_and_a_revocation_stops_a_download_on_every_controller() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    // 24 MiB that do not compress: 12 s at the slowed client's 2 MB/s, well beyond
    // what the socket buffers hold.
    let ok = Command::new("sh")
        .args(["-c", "head -c 25165824 /dev/urandom > images/random.bin"])
        .current_dir(inputs.artifacts())
        .status()
        .unwrap();
    assert!(ok.success());
    let a = joining_daemon(&fake, &inputs);
    let b = joining_daemon(&fake, &inputs);
    let admin = a.login();
    let done = token_in(&steps(&create_command(&a, &admin, json!(["worker"])))[0]);
    assert_eq!(a.get("/v1/join-bundle?roles=worker", &done).status, 200);
    let cmds = steps(&create_command(&b, &admin, json!(["gpu"])));
    let live = token_in(&cmds[0]);
    let id_of = |t: &str| {
        crate::join::claims_of(t)["jti"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // A slow download of the second join, revoked on the other controller mid-way.
    let host = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .current_dir(host.path())
        .env("PATH", slow_curl(host.path(), "2M"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", cmds[0]).as_bytes())
        .unwrap();
    let ledger = |d: &Daemon| -> Vec<Value> {
        let r = d.get("/v1/joins", &admin);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["joins"].as_array().unwrap().clone()
    };
    let state_of = |d: &Daemon, id: &str| -> Value {
        ledger(d)
            .into_iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in the ledger"))
    };
    wait_until(30, "the download under way", || {
        (state_of(&a, &id_of(&live))["state"] == "downloading").then_some(())
    });
    let r = a.curl(
        "DELETE",
        &format!("/v1/joins/{}", id_of(&live)),
        &["-H", &format!("Authorization: Bearer {admin}")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "revoked");
    let stopped = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("revoked by an administrator"), "{err}");
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(10),
        "the stream went on for {:?}",
        stopped.elapsed()
    );
    // Its token is refused on both controllers, from any host.
    for d in [&a, &b] {
        d.get("/v1/join-bundle?roles=gpu", &live)
            .assert_error(410, "join_revoked");
    }
    // Its bootstrap token is gone from kube-system.
    let deleted = fake
        .requests()
        .into_iter()
        .filter(|r| {
            r["method"] == "DELETE"
                && r["path"].as_str().is_some_and(|p| {
                    p.starts_with("/api/v1/namespaces/kube-system/secrets/bootstrap-token-")
                })
        })
        .count();
    assert_eq!(deleted, 1);

    // The ledger, from either controller: both joins, with their states.
    for d in [&a, &b] {
        let first = state_of(d, &id_of(&done));
        assert_eq!(first["state"], "downloaded", "{first}");
        assert_eq!(first["client"], "127.0.0.1");
        assert_eq!(first["requestedBy"], "admin");
        assert_eq!(first["roles"], json!(["worker"]));
        assert!(first["bytesSent"].as_u64().unwrap() > 3_000_000, "{first}");
        let second = state_of(d, &id_of(&live));
        assert_eq!(second["state"], "revoked", "{second}");
    }
    // A node with the client's address appearing after the download: joined.
    fake.control(
        "POST",
        "/_fake/objects",
        Some(json!([{
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-new"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}
        }])),
    );
    let first = state_of(&a, &id_of(&done));
    assert_eq!(
        (first["state"].as_str(), first["node"].as_str()),
        (Some("joined"), Some("node-new"))
    );
    // Revoking a finished join is refused; a bad id is a 400.
    let r = a.curl(
        "DELETE",
        &format!("/v1/joins/{}", id_of(&done)),
        &["-H", &format!("Authorization: Bearer {admin}")],
    );
    r.assert_error(409, "join_finished");
    a.curl(
        "DELETE",
        "/v1/joins/nope",
        &["-H", &format!("Authorization: Bearer {admin}")],
    )
    .assert_error(400, "invalid_join_id");
}

/// The `sh` block of docs/joins.md that checks a seed (the one after its marker).
fn seed_check_from_the_docs() -> String {
    let docs = std::fs::read_to_string(root().join("docs/joins.md")).unwrap();
    let at = docs
        .find("<!-- seed-verification")
        .expect("the marker in docs/joins.md");
    let rest = &docs[at..];
    let start = rest.find("```sh\n").unwrap() + 6;
    let len = rest[start..].find("```").unwrap();
    rest[start..start + len].to_string()
}

#[test]
fn the_documented_seed_check_verifies_with_openssl_against_the_pin() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let cmds = steps(&create_command(&d, &admin, json!(["worker"])));
    let demo = tempfile::tempdir().unwrap();
    let host = demo.path().join("joins/node-5");
    std::fs::create_dir_all(&host).unwrap();
    let (code, _, err) = paste_into_sh(&host, &format!("{}\n{}\n", cmds[0], cmds[1]));
    assert_eq!(code, 0, "{err}");
    let check = |what: &str| {
        Command::new("bash")
            .args([
                "-c",
                &format!("set -euo pipefail\n{}", seed_check_from_the_docs()),
            ])
            .env("JOINERY_DEMO_DIR", demo.path())
            .output()
            .map(|o| {
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr),
                )
            })
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let (ok, out) = check("genuine");
    assert!(ok, "{out}");
    assert!(out.contains("Verified OK"), "{out}");
    assert!(
        out.contains(&format!("seed signed by {}\n", d.pin)),
        "{out}"
    );
    // One changed character in the payload: refused.
    let seed = host.join("cluster-seed.json");
    let text = std::fs::read_to_string(&seed).unwrap();
    let at = text.find("\"payload\": \"").unwrap() + 20;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&seed, bytes).unwrap();
    let (ok, out) = check("tampered");
    assert!(!ok && !out.contains("Verified OK"), "{out}");
}

#[test]
fn a_resume_across_changed_artifacts_is_refused_and_a_fresh_download_works() {
    let fake = FakeKube::start(3, &[]);
    let inputs = JoinInputs::new(true);
    let d = joining_daemon(&fake, &inputs);
    let admin = d.login();
    let token = token_in(&steps(&create_command(&d, &admin, json!(["worker"])))[0]);
    let auth = format!("Authorization: Bearer {token}");
    let path = "/v1/join-bundle?roles=worker";
    let head = d.curl("GET", path, &["-H", &auth, "-r", "0-999"]);
    assert_eq!(head.status, 206, "{}", head.text());
    assert_eq!(head.body.len(), 1000);
    let etag = head.header("etag").unwrap().to_string();
    // The same range again, with If-Range: the same bytes.
    let again = d.curl(
        "GET",
        path,
        &[
            "-H",
            &auth,
            "-r",
            "0-999",
            "-H",
            &format!("If-Range: {etag}"),
        ],
    );
    assert_eq!((again.status, again.body == head.body), (206, true));
    // joinery restarted on a changed artifact: the rest of the old bundle does not exist.
    drop(d);
    let app = inputs.artifacts().join("my-app");
    let mut text = std::fs::read_to_string(&app).unwrap();
    text.push_str("# a new release\n");
    std::fs::write(&app, text).unwrap();
    let d2 = joining_daemon(&fake, &inputs);
    d2.curl("GET", path, &["-H", &auth, "-r", "1000-"])
        .assert_error(409, "bundle_changed");
    // A whole download by the same host works, and can be resumed in turn.
    let whole = d2.get(path, &token);
    assert_eq!(whole.status, 200);
    assert_ne!(whole.header("etag"), Some(etag.as_str()));
    let rest = d2.curl("GET", path, &["-H", &auth, "-r", "1000-"]);
    assert_eq!(rest.status, 206);
    assert!(rest.body == whole.body[1000..]);
}
