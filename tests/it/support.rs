//! The harness every integration test uses: the fake Kubernetes API server
//! (`tests/support/fake_kube.py`), the real `joinery` binary, and `curl`.
//!
//! Processes are killed in `Drop`, and their output is printed when a test fails so the
//! failure shows what the daemon said. Nothing sleeps to wait for start-up: the harness
//! reads the "listening" line each process prints.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

pub const PASSWORD: &str = "correct horse battery staple";

/// The repository root (where Cargo.toml is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the built `joinery` binary.
pub fn joinery_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_joinery"))
}

/// A bcrypt hash of [`PASSWORD`], made once by `joinery hash-password`.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut child = Command::new(joinery_bin())
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run joinery hash-password");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// Lines a child process printed, kept for the failure report, and how many of its
/// streams are still open.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>);

impl Output {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Parsed JSON log lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (at most 30 s) for a line matching `pred`. (On a timeout the daemon's
    /// `Drop` prints its output.)
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_until(30, what, || self.lines().into_iter().find(|l| pred(l)))
    }

    /// Waits (at most 5 s) until every stream of the (exited) process has been read to
    /// its end, so `lines` holds all it printed.
    pub fn wait_closed(&self) {
        wait_until(5, "the process's output to end", || {
            (self.1.load(Ordering::SeqCst) == 0).then_some(())
        });
    }
}

/// Reads a child's stream line by line into `out`; sends the first line matching
/// `ready` on `tx`.
fn pump(
    stream: impl std::io::Read + Send + 'static,
    out: Output,
    ready: impl Fn(&str) -> bool + Send + 'static,
    tx: Option<mpsc::Sender<String>>,
) {
    out.1.fetch_add(1, Ordering::SeqCst);
    std::thread::spawn(move || {
        let mut tx = tx;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.is_some() && ready(&line) {
                let _ = tx.take().unwrap().send(line.clone());
            }
            out.0.lock().unwrap().push(line);
        }
        out.1.fetch_sub(1, Ordering::SeqCst);
    });
}

/// The fake Kubernetes API server.
pub struct FakeKube {
    child: Child,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub output: Output,
}

impl FakeKube {
    /// Starts the fake with `nodes` generated nodes and extra arguments.
    pub fn start(nodes: usize, extra: &[&str]) -> FakeKube {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(root().join("tests/support/fake_kube.py"))
            .args(["--port", "0", "--nodes", &nodes.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3 tests/support/fake_kube.py");
        let output = Output::default();
        let (tx, rx) = mpsc::channel();
        pump(
            child.stdout.take().unwrap(),
            output.clone(),
            |l| l.starts_with("listening on "),
            Some(tx),
        );
        pump(
            child.stderr.take().unwrap(),
            output.clone(),
            |_| false,
            None,
        );
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("fake kube did not start:\n{}", output.lines().join("\n")));
        let url = line.trim_start_matches("listening on ").trim().to_string();
        FakeKube {
            child,
            dir,
            url,
            output,
        }
    }

    /// Starts the fake holding the installer password Secret, as Embedded Cluster does.
    pub fn with_password(nodes: usize) -> FakeKube {
        FakeKube::start(nodes, &["--password-bcrypt", password_hash()])
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Calls the fake's control API (`/_fake/...`) and returns the JSON answer.
    pub fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "-X", method])
            .arg("--cacert")
            .arg(self.dir.path().join("ca.crt"))
            .arg(format!("{}{}", self.url, path));
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "control {path}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Requests the fake served, as it logged them (for asserting on what joinery did).
    pub fn requests(&self) -> Vec<Value> {
        match self.control("GET", "/_fake/requests", None) {
            Value::Array(v) => v,
            Value::Object(o) => o
                .get("requests")
                .and_then(|r| r.as_array().cloned())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- fake kube output ---\n{}",
                self.output.lines().join("\n")
            );
        }
    }
}

/// A running `joinery serve`.
pub struct Daemon {
    child: Option<Child>,
    /// Owns the temporary directory (removed on drop).
    _tmp: tempfile::TempDir,
    /// The daemon's `--data-dir`.
    pub data_dir: PathBuf,
    pub url: String,
    pub port: u16,
    pub pin: String,
    /// The certificate the daemon serves (from its "listening" log line).
    cert: PathBuf,
    pub output: Output,
    /// Secrets this daemon must never print: [`PASSWORD`], every JWT any reply carried
    /// (session and join tokens), and whatever a test registers. Checked in `Drop`.
    secrets: Arc<Mutex<Vec<String>>>,
}

/// How to start a daemon.
pub struct DaemonOpts {
    pub password_file: bool,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Runs the daemon under `sh -c 'ulimit -n N; exec ...'`.
    pub nofile: Option<u32>,
    /// Reuse this data directory (e.g. a previous daemon's) instead of a fresh one.
    pub data_dir: Option<PathBuf>,
    /// Another kubeconfig than the fake's token one.
    pub kubeconfig: Option<PathBuf>,
}

impl Default for DaemonOpts {
    fn default() -> Self {
        DaemonOpts {
            password_file: true,
            args: Vec::new(),
            env: Vec::new(),
            nofile: None,
            data_dir: None,
            kubeconfig: None,
        }
    }
}

impl Daemon {
    /// Starts joinery against `fake` with a password hash file.
    pub fn start(fake: &FakeKube) -> Daemon {
        Daemon::start_with(fake, DaemonOpts::default())
    }

    /// Starts joinery against `fake` with a password hash file and extra `args`.
    pub fn start_args(fake: &FakeKube, args: &[&str]) -> Daemon {
        let args = args.iter().map(|a| a.to_string()).collect();
        Daemon::start_with(
            fake,
            DaemonOpts {
                args,
                ..DaemonOpts::default()
            },
        )
    }

    pub fn start_with(fake: &FakeKube, opts: DaemonOpts) -> Daemon {
        let data_dir = tempfile::tempdir().unwrap();
        let data_path = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| data_dir.path().to_path_buf());
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--api-port".into(),
            "0".into(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--data-dir".into(),
            data_path.display().to_string(),
        ];
        // Defaults a test may override in `opts.args` (a flag given twice is refused).
        for (flag, value) in [
            (
                "--kubeconfig",
                opts.kubeconfig
                    .clone()
                    .unwrap_or_else(|| fake.kubeconfig())
                    .display()
                    .to_string(),
            ),
            ("--node-name", "node-1".to_string()),
        ] {
            if !opts.args.iter().any(|a| a == flag) {
                args.push(flag.into());
                args.push(value);
            }
        }
        if opts.password_file {
            let f = data_dir.path().join("password.hash");
            std::fs::write(&f, format!("{}\n", password_hash())).unwrap();
            args.push("--password-hash-file".into());
            args.push(f.display().to_string());
        }
        // Test daemons keep off the host's /run/joinery unless a test asks for a socket.
        if !opts.args.iter().any(|a| a.starts_with("--socket")) {
            args.push("--socket=none".into());
        }
        args.extend(opts.args.iter().cloned());
        let mut cmd = match opts.nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(joinery_bin());
                c
            }
            None => Command::new(joinery_bin()),
        };
        cmd.args(&args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(opts.env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Daemon::spawn(cmd, data_dir, data_path)
    }

    /// Starts a daemon from a prepared command (its own flags, environment and data
    /// dir); stderr must be piped.
    pub fn spawn_command(mut cmd: Command) -> Daemon {
        // As in `start_with`: keep off the host's /run/joinery unless a test asks for a
        // socket (two daemons on the default path refuse each other).
        if !cmd
            .get_args()
            .any(|a| a.to_string_lossy().starts_with("--socket"))
        {
            cmd.arg("--socket=none");
        }
        Daemon::spawn_exact(cmd)
    }

    /// Starts a daemon from a prepared command exactly as given (its socket included);
    /// stderr must be piped.
    pub fn spawn_exact(cmd: Command) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().to_path_buf();
        Daemon::spawn(cmd, tmp, path)
    }

    fn spawn(mut cmd: Command, data_dir: tempfile::TempDir, data_path: PathBuf) -> Daemon {
        let mut child = cmd.spawn().expect("start joinery");
        let output = Output::default();
        let (tx, rx) = mpsc::channel();
        pump(
            child.stderr.take().unwrap(),
            output.clone(),
            |l| l.contains("\"msg\":\"listening\""),
            Some(tx),
        );
        if let Some(out) = child.stdout.take() {
            pump(out, output.clone(), |_| false, None);
        }
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("joinery did not start:\n{}", output.lines().join("\n"))
            });
        let v: Value = serde_json::from_str(&line).unwrap();
        let url = v["address"].as_str().unwrap().to_string();
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        let pin = v["pin"].as_str().unwrap().to_string();
        let cert = PathBuf::from(v["certificate"].as_str().unwrap());
        Daemon {
            cert,
            child: Some(child),
            _tmp: data_dir,
            data_dir: data_path,
            url,
            port,
            pin,
            output,
            secrets: Arc::new(Mutex::new(vec![PASSWORD.to_string()])),
        }
    }

    /// Registers a secret the daemon must never print (checked when it is dropped).
    pub fn register_secret(&self, secret: &str) {
        if secret.len() >= 8 {
            self.secrets.lock().unwrap().push(secret.to_string());
        }
    }

    /// Forgets every registered secret (for the harness's own self-test only).
    pub fn forget_secrets(&self) {
        self.secrets.lock().unwrap().clear();
    }

    /// Panics if any registered secret appears in the daemon's output so far.
    pub fn assert_no_secret_logged(&self) {
        let lines = self.output.lines();
        let secrets = self.secrets.lock().unwrap().clone();
        for secret in &secrets {
            if let Some(line) = lines.iter().find(|l| l.contains(secret.as_str())) {
                // Never print the secret itself, only where it leaked.
                let at = line.find(secret.as_str()).unwrap_or(0);
                panic!(
                    "a secret ({} bytes) appeared in the daemon's log at byte {at} of:\n{}",
                    secret.len(),
                    line.replace(secret.as_str(), "<SECRET>")
                );
            }
        }
    }

    /// The daemon's certificate, usable as curl's `--cacert` when self-signed.
    pub fn cert(&self) -> PathBuf {
        self.cert.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal (e.g. "TERM") and waits for the exit status (bounded).
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .unwrap();
        // On a timeout the child is still ours: `Drop` kills it and prints its output.
        let status = wait_until(15, &format!("joinery to exit after SIG{sig}"), || {
            self.child.as_mut().unwrap().try_wait().unwrap()
        });
        self.child = None;
        status
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `curl` against this daemon, trusting its certificate. `path` may hold a query.
    pub fn curl(&self, method: &str, path: &str, extra: &[&str]) -> Reply {
        let mut args: Vec<String> = vec!["-X".into(), method.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let reply = curl_at(&self.cert(), &format!("{}{}", self.url, path), &args);
        for jwt in jwts_in(&reply.body) {
            self.register_secret(&jwt);
        }
        reply
    }

    /// GET with a bearer token.
    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.curl(
            "GET",
            path,
            &["-H", &format!("Authorization: Bearer {token}")],
        )
    }

    /// GET with a bearer token from another local address (`127.0.0.2`, say): another
    /// host, as far as the daemon can tell.
    pub fn get_from(&self, source: &str, path: &str, token: &str) -> Reply {
        self.curl(
            "GET",
            path,
            &[
                "-H",
                &format!("Authorization: Bearer {token}"),
                "--interface",
                source,
            ],
        )
    }

    /// POST of a JSON body with an optional bearer token.
    pub fn post_json(&self, path: &str, token: Option<&str>, body: &str) -> Reply {
        let mut extra = vec!["-H".to_string(), "Content-Type: application/json".into()];
        if let Some(t) = token {
            extra.push("-H".into());
            extra.push(format!("Authorization: Bearer {t}"));
        }
        extra.push("--data-binary".into());
        extra.push(body.into());
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.curl("POST", path, &extra)
    }

    /// Waits (at most 20 s) until `/v1/ready` says the watch-fed view is in sync, so
    /// the cache's start-up (threads, first lists) is over.
    pub fn wait_cache_synced(&self) {
        wait_until(20, "the watch-fed view to sync", || {
            let ready = self.curl("GET", "/v1/ready", &[]).json();
            (ready["cacheInSync"] == serde_json::json!(true)).then_some(())
        });
    }

    /// The unlabelled metric `name` from `/metrics`, read with `token`.
    pub fn metric(&self, token: &str, name: &str) -> f64 {
        metric_in(&self.get("/metrics", token).text(), name)
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// Logs in with the installer password and returns the session token.
    pub fn login(&self) -> String {
        let r = self.post_json(
            "/v1/auth/token",
            None,
            &serde_json::json!({ "password": PASSWORD }).to_string(),
        );
        assert_eq!(r.status, 200, "login failed: {}", r.text());
        r.json()["token"].as_str().unwrap().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- joinery output ---\n{}", self.output.lines().join("\n"));
        } else {
            // Every test checks the log for secrets without having to ask, once the
            // output pumps have taken the last lines of the killed process.
            self.output.wait_closed();
            self.assert_no_secret_logged();
        }
    }
}

/// Every JWT-shaped string (`eyJ` + base64url, three dot-separated parts) in `bytes`.
pub fn jwts_in(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut found = Vec::new();
    let mut rest: &str = &text;
    while let Some(at) = rest.find("eyJ") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(tail.len());
        let candidate = &tail[..len];
        if candidate.split('.').count() == 3 {
            found.push(candidate.to_string());
        }
        rest = &tail[len.max(3)..];
    }
    found
}

/// What curl got back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub exit: i32,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an error envelope with this status and code; returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error"], code, "body: {v}");
        let msg = v["message"].as_str().expect("message").to_string();
        assert!(msg.len() > 10, "message too short to act on: {msg:?}");
        assert_eq!(
            v.as_object().unwrap().len(),
            2,
            "envelope has extra fields: {v}"
        );
        msg
    }
}

/// Runs curl with `--cacert cert` against `url`; reads status, headers and body.
pub fn curl_at(cert: &Path, url: &str, extra: &[String]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let body = dir.path().join("b");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(cert)
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let headers = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        exit: out.status.code().unwrap_or(-1),
    }
}

/// Runs `joinery serve` expecting a start-up failure; returns stderr.
pub fn serve_fails(fake: &FakeKube, args: &[&str]) -> String {
    serve_failure(fake, args).1
}

/// Like [`serve_fails`], with the exit code too.
pub fn serve_failure(fake: &FakeKube, args: &[&str]) -> (Option<i32>, String) {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(joinery_bin())
        .args(["serve", "--api-port", "0", "--bind-address", "127.0.0.1"])
        .arg("--kubeconfig")
        .arg(fake.kubeconfig())
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success(), "should have failed: {args:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.code(), err)
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The Embedded Cluster Config every join test serves: `tests/data/ec-config.yaml`
/// (roles `controller`, `worker`, `gpu` and `app`; the Python tests read it too).
pub fn ec_config() -> PathBuf {
    root().join("tests/data/ec-config.yaml")
}

/// Join inputs for a daemon: the shared [`ec_config`], a multi-node license for app
/// `my-app`, and an artifacts directory holding `my-app` and a larger `images/air.tar`.
/// Returns the `serve` arguments.
pub fn join_inputs(dir: &Path) -> Vec<String> {
    let license = dir.join("license.yaml");
    std::fs::write(
        &license,
        "apiVersion: kots.io/v1beta1\nkind: License\nspec:\n  appSlug: my-app\n  licenseID: \
         lic-123\n  isEmbeddedClusterMultiNodeEnabled: true\n",
    )
    .unwrap();
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(artifacts.join("images")).unwrap();
    std::fs::write(artifacts.join("my-app"), b"#!/bin/sh\necho my-app\n").unwrap();
    // Incompressible, so building its cached member takes a moment.
    let mut big = vec![0u8; 8 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(artifacts.join("images/air.tar"), &big).unwrap();
    vec![
        "--ec-config".into(),
        ec_config().display().to_string(),
        "--license".into(),
        license.display().to_string(),
        "--artifacts-dir".into(),
        artifacts.display().to_string(),
    ]
}

/// Runs `joinery ARGS` with `env` added and `stdin` fed; returns (exit code, stdout,
/// stderr). Bounded: a command that should have ended but serves instead is killed and
/// fails the test. The test runner's own Kubernetes and socket variables are not passed.
pub fn run_joinery(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(joinery_bin())
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("JOINERY_SOCKET")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run joinery");
    // A command that exits without reading its stdin closes the pipe: not an error.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!("joinery {args:?} still running after 60 s");
        }
    };
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

/// This test process's uid (the daemon's `--socket-uid` in socket tests).
pub fn uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// curl over a Unix socket: (status, body as JSON, or null).
pub fn unix_curl(socket: &Path, method: &str, path: &str, extra: &[&str]) -> (u16, Value) {
    let (status, body) = unix_curl_text(socket, method, path, extra);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// curl over a Unix socket: (status, body).
pub fn unix_curl_text(socket: &Path, method: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg("--unix-socket")
        .arg(socket)
        .args(extra)
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of the unlabelled metric `name` in a Prometheus text body.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `f` every 20 ms until it returns `Some`, failing the test after `secs` seconds
/// with `what`. The one way these tests wait for something to happen: never a fixed
/// sleep, which is too short on a loaded machine and wasted time on an idle one.
pub fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that `sha256sum -c --strict SHA256SUMS` passes in `dir` (an extracted
/// bundle), as the join steps check it.
pub fn assert_sums_verify(dir: &Path) {
    let out = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Extracts a downloaded bundle with `tar xzf` in a fresh directory (removed when the
/// returned guard drops) and asserts that its SHA256SUMS verify.
pub fn extract_verified(bundle: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.tgz"), bundle).unwrap();
    let tar = Command::new("tar")
        .args(["xzf", "b.tgz"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "tar xzf: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    assert_sums_verify(dir.path());
    dir
}
