//! SIGKILL at the worst moments of a join: a join token is either usable exactly once
//! or never handed out, and the bundle cache never serves a torn file after a restart.
//!
//! Each test asserts that its kill landed inside the window it is about: through a
//! pause point (`JOINERY_TEST_PAUSE`, src/pause.rs: the daemon writes a marker file and
//! waits there to be killed) where nothing outside the daemon can see the moment, else
//! through what the fake API server and the client saw before the kill.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{
    extract_verified, join_inputs, wait_until, Daemon, DaemonOpts, FakeKube, Reply,
};

fn start(fake: &FakeKube, inputs: &Path, data_dir: Option<&Path>) -> Daemon {
    start_paused(fake, inputs, data_dir, None)
}

/// Starts a daemon that holds at pause point `pause.0` once reached, after writing the
/// marker file `pause.1` (see src/pause.rs).
fn start_paused(
    fake: &FakeKube,
    inputs: &Path,
    data_dir: Option<&Path>,
    pause: Option<(&str, &Path)>,
) -> Daemon {
    let env = pause
        .map(|(point, marker)| {
            let spec = format!("{point}:{}", marker.display());
            ("JOINERY_TEST_PAUSE".to_string(), spec)
        })
        .into_iter()
        .collect();
    Daemon::start_with(
        fake,
        DaemonOpts {
            args: join_inputs(inputs),
            data_dir: data_dir.map(Path::to_path_buf),
            env,
            ..DaemonOpts::default()
        },
    )
}

/// Waits (bounded) for the daemon to reach its pause point.
fn wait_paused(marker: &Path) {
    wait_until(30, "the daemon to reach its pause point", || {
        marker.exists().then_some(())
    });
}

fn ticket_secrets(fake: &FakeKube) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(fake.dir.path().join("ca.crt"))
        .args([
            "-H",
            &format!(
                "Authorization: Bearer {}",
                std::fs::read_to_string(fake.dir.path().join("token"))
                    .unwrap()
                    .trim()
            ),
        ])
        .arg(format!("{}/api/v1/secrets", fake.url))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("joinery-ticket-")
        })
        .count()
}

/// Downloads and checks a bundle: `tar` extracts it and `sha256sum -c SHA256SUMS` passes.
fn assert_bundle_sound(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text());
    let dir = extract_verified(&r.body);
    assert_eq!(
        std::fs::metadata(dir.path().join("images/air.tar"))
            .unwrap()
            .len(),
        8 << 20
    );
}

fn create(d: &Daemon, token: &str) -> Reply {
    d.post_json(
        "/v1/create-join-command",
        Some(token),
        r#"{"roles":["app"]}"#,
    )
}

fn join_token(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    crate::support::jwts_in(&r.body)
        .into_iter()
        .next()
        .expect("a join token in the steps")
}

#[test]
fn killed_during_the_first_cache_build_then_bundles_are_sound() {
    let fake = FakeKube::start(3, &[]);
    let inputs = tempfile::tempdir().unwrap();
    let marker = inputs.path().join("paused");
    let pause = ("cache-member-half-written", marker.as_path());
    // The cache warms at start-up: the daemon holds with a member half written.
    let mut d1 = start_paused(&fake, inputs.path(), None, Some(pause));
    wait_paused(&marker);
    let cache = d1.data_dir.join("bundle-cache");
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("m-") && n.contains(".tmp-"))
            && !names
                .iter()
                .any(|n| n.starts_with("m-") && n.ends_with(".gz")),
        "paused without a half-written member: {names:?}"
    );
    d1.signal_and_wait("KILL");
    let d2 = start(&fake, inputs.path(), Some(&d1.data_dir));
    let token = d2.login();
    // Twice: once built (or taken from what survived), once from the cache.
    assert_bundle_sound(&d2.get("/v1/join-bundle?roles=app", &token));
    assert_bundle_sound(&d2.get("/v1/join-bundle?roles=app", &token));
    // (d1 owns the data directory, so it lives until here.)
    drop(d1);
}

#[test]
fn killed_while_streaming_a_bundle_then_restart_serves_sound_bundles() {
    let fake = FakeKube::start(3, &[]);
    let inputs = tempfile::tempdir().unwrap();
    let mut d1 = start(&fake, inputs.path(), None);
    let admin = d1.login();
    let join = join_token(&create(&d1, &admin));
    // A slow download with the join token: the ticket is won before the first byte,
    // so after the kill only this client may download again (a resume), no other.
    let mut slow = Command::new("curl")
        .args([
            "-sS",
            "--limit-rate",
            "200k",
            "--max-time",
            "30",
            "--cacert",
        ])
        .arg(d1.cert())
        .args([
            "-H",
            &format!("Authorization: Bearer {join}"),
            "-o",
            "/dev/null",
        ])
        .arg(format!("{}/v1/join-bundle?roles=app", d1.url))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The window: the ticket is won (the fake answered its replacement) and the bundle
    // is still streaming (8 MiB at 200 kB/s: curl is still reading when we kill).
    wait_until(20, "the ticket won", || {
        fake.requests()
            .iter()
            .any(|r| {
                r["method"] == "PUT"
                    && r["path"]
                        .as_str()
                        .unwrap_or("")
                        .contains("/joinery-ticket-")
                    && r["status"] == 200
            })
            .then_some(())
    });
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the download ended first"
    );
    d1.signal_and_wait("KILL");
    let _ = slow.wait();
    let d2 = start(&fake, inputs.path(), Some(&d1.data_dir));
    d2.register_secret(&join);
    let r = d2.get_from("127.0.0.2", "/v1/join-bundle?roles=app", &join);
    r.assert_error(410, "join_token_used");
    assert_bundle_sound(&d2.get("/v1/join-bundle?roles=app", &join));
    // A new token works exactly once, and its bundle is sound.
    let admin = d2.login();
    let join = join_token(&create(&d2, &admin));
    assert_bundle_sound(&d2.get("/v1/join-bundle?roles=app", &join));
    d2.get_from("127.0.0.2", "/v1/join-bundle?roles=app", &join)
        .assert_error(410, "join_token_used");
}

#[test]
fn killed_during_create_join_command_issues_no_usable_token() {
    let fake = FakeKube::start(3, &[]);
    let inputs = tempfile::tempdir().unwrap();
    let before = ticket_secrets(&fake);
    let marker = inputs.path().join("paused");
    // The worst moment: the ticket exists in Kubernetes, its token not yet handed out.
    let pause = ("join-ticket-issued", marker.as_path());
    let mut d1 = start_paused(&fake, inputs.path(), None, Some(pause));
    let admin = d1.login();
    let pid = d1.pid().to_string();
    let body = std::thread::scope(|s| {
        let h = s.spawn(|| create(&d1, &admin));
        wait_paused(&marker);
        Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        h.join().unwrap()
    });
    d1.signal_and_wait("KILL"); // reaps it
    assert_ne!(body.status, 200, "a killed daemon answered");
    assert!(crate::support::jwts_in(&body.body).is_empty());
    // The ticket exists but no token for it was ever handed out; it expires unused.
    assert_eq!(ticket_secrets(&fake), before + 1);
    let d2 = start(&fake, inputs.path(), Some(&d1.data_dir));
    let admin = d2.login();
    let join = join_token(&create(&d2, &admin));
    assert_eq!(d2.get("/v1/join-bundle?roles=app", &join).status, 200);
    d2.get_from("127.0.0.2", "/v1/join-bundle?roles=app", &join)
        .assert_error(410, "join_token_used");
}
