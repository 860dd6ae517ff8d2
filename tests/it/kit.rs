//! The operator kit: `joinery install`/`uninstall` under a scratch root (tree restored
//! exactly, unit accepted by `systemd-analyze verify`), and `scripts/headless-join.sh`
//! against the real daemon on the fake Kubernetes API, with a local stand-in for ssh,
//! with and without jq, and one test per documented exit code.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::*;

// ---- joinery install / uninstall -------------------------------------------------------

/// Every path under `root` with its type, mode and (for files) SHA-256.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, format!("dir {mode:o}"));
                walk(root, &p, out);
            } else {
                let sum = Sha256::digest(std::fs::read(&p).unwrap());
                out.insert(rel, format!("file {mode:o} {sum:x}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A root that already holds things install must not touch.
fn lived_in_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::write(r.join("etc/hostname"), "cp-1\n").unwrap();
    std::fs::write(
        r.join("etc/systemd/system/k0scontroller.service"),
        "[Unit]\n",
    )
    .unwrap();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::write(r.join("usr/local/bin/k0s"), "#!/bin/sh\n").unwrap();
    std::fs::create_dir_all(r.join("var/lib/k0s/pki")).unwrap();
    std::fs::write(r.join("var/lib/k0s/pki/admin.conf"), "apiVersion: v1\n").unwrap();
    root
}

fn joinery(args: &[&str]) -> Output {
    Command::new(joinery_bin()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn pin_of(o: &Output) -> String {
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    t.lines()
        .find_map(|l| l.strip_prefix("Certificate pin: "))
        .unwrap_or_else(|| panic!("no pin in:\n{t}"))
        .to_string()
}

#[test]
fn install_then_uninstall_purge_leaves_the_root_as_it_was() {
    let root = lived_in_root();
    let r = root.path().to_str().unwrap();
    let before = tree(root.path());

    let o = joinery(&[
        "install",
        "--root",
        r,
        "--api-port",
        "9443",
        "--node-name=cp-1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("systemctl enable --now joinery"), "{out}");
    let pin = pin_of(&o);
    assert!(pin.starts_with("sha256//"), "{pin}");

    let after = tree(root.path());
    assert_eq!(after["var/lib/joinery"], "dir 700", "{after:#?}");
    assert!(after["var/lib/joinery/tls.key"].starts_with("file 600 "));
    assert!(after["usr/local/bin/joinery"].starts_with("file 755 "));
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/joinery.service")).unwrap();
    assert!(
        unit.contains(
            "\nExecStart=/usr/local/bin/joinery serve --kubeconfig /var/lib/k0s/pki/admin.conf \
             --data-dir /var/lib/joinery --api-port 9443 --node-name=cp-1\n"
        ),
        "{unit}"
    );
    // The installed binary is this one, and the pin is the generated certificate's.
    let v = Command::new(root.path().join("usr/local/bin/joinery"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("joinery "));

    // systemd accepts the unit as installed under the root.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .arg(format!("--root={r}"))
        .arg("/etc/systemd/system/joinery.service")
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        text(&verify)
    );

    // Installing again with the same flags changes nothing and keeps the pin.
    let again = joinery(&[
        "install",
        "--root",
        r,
        "--api-port",
        "9443",
        "--node-name=cp-1",
    ]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(pin_of(&again), pin);
    assert_eq!(tree(root.path()), after);

    let o = joinery(&["uninstall", "--root", r, "--purge"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(tree(root.path()), before, "{}", text(&o));
}

#[test]
fn uninstall_keeps_the_certificate_and_what_changed_and_a_reinstall_reuses_it() {
    let root = lived_in_root();
    let r = root.path().to_str().unwrap();
    let before = tree(root.path());
    let o = joinery(&["install", "--root", r]);
    assert!(o.status.success(), "{}", text(&o));
    let pin = pin_of(&o);

    // An operator edits the unit by hand: uninstall must leave the edit alone.
    let unit = root.path().join("etc/systemd/system/joinery.service");
    std::fs::write(&unit, "# mine now\n").unwrap();
    let o = joinery(&["uninstall", "--root", r]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("kept /etc/systemd/system/joinery.service: changed since install"));
    let mut left = tree(root.path());
    for gone in ["usr/local/bin/joinery", "etc/joinery"] {
        assert!(!left.contains_key(gone), "{gone} left behind: {left:#?}");
    }
    assert_eq!(
        left.remove("etc/systemd/system/joinery.service")
            .unwrap()
            .split(' ')
            .next(),
        Some("file")
    );
    for kept in [
        "var/lib/joinery",
        "var/lib/joinery/tls.crt",
        "var/lib/joinery/tls.key",
        "var/lib/joinery/install.manifest",
    ] {
        assert!(left.remove(kept).is_some(), "{kept} not kept");
    }
    assert_eq!(left, before);
    std::fs::remove_file(&unit).unwrap();

    // A re-install reuses the key (clients' pins stay valid) and still knows it made it.
    let o = joinery(&["install", "--root", r]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(pin_of(&o), pin);
    let o = joinery(&["uninstall", "--root", r, "--purge"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(tree(root.path()), before, "{}", text(&o));
}

#[test]
fn install_refuses_mistakes_and_a_dry_run_writes_nothing() {
    let root = lived_in_root();
    let r = root.path().to_str().unwrap();
    let before = tree(root.path());
    for (args, needle) in [
        (vec!["--api-prot", "1"], "did you mean --api-port?"),
        (vec!["--api-port", "99999"], "--api-port"),
        (
            vec!["--license", "/etc/joinery/license.yaml"],
            "--artifacts-dir",
        ),
        (
            vec!["--password-hash-file", "/etc/joinery/hash"],
            "no such file",
        ),
        (vec!["--data-dir", "/tmp/j"], "private /tmp"),
        (vec!["--now"], "--root"),
    ] {
        let mut all = vec!["install", "--root", r];
        all.extend(args.iter().copied());
        let o = joinery(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
        assert_eq!(tree(root.path()), before, "{args:?} wrote something");
    }
    // A unit install did not write is not overwritten.
    std::fs::write(
        root.path().join("etc/systemd/system/joinery.service"),
        "# by hand\n",
    )
    .unwrap();
    let o = joinery(&["install", "--root", r]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    std::fs::remove_file(root.path().join("etc/systemd/system/joinery.service")).unwrap();

    let o = joinery(&["install", "--root", r, "--dry-run", "--idle-timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("would write unit /etc/systemd/system/joinery.service"),
        "{out}"
    );
    assert!(out.contains("--idle-timeout 60\n"), "{out}");
    assert_eq!(tree(root.path()), before);
}

#[test]
fn regression_uninstall_with_nothing_installed_exits_0() {
    let root = lived_in_root();
    let r = root.path().to_str().unwrap();
    let before = tree(root.path());
    let o = joinery(&["uninstall", "--root", r]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing to do"), "{}", text(&o));
    assert_eq!(tree(root.path()), before);
}

#[test]
fn regression_install_as_another_user_says_run_as_root() {
    for cmd in ["install", "uninstall"] {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(joinery_bin())
            .arg(cmd)
            .output()
            .expect("setpriv (util-linux)");
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        assert!(text(&o).contains("run as root"), "{cmd}: {}", text(&o));
    }
}

#[test]
fn regression_reinstall_with_new_flags_says_to_restart() {
    let root = lived_in_root();
    let r = root.path().to_str().unwrap();
    let o = joinery(&["install", "--root", r]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("systemctl restart joinery"),
        "{}",
        text(&o)
    );
    // Same flags: nothing changed, nothing to restart.
    let o = joinery(&["install", "--root", r]);
    assert!(
        !text(&o).contains("systemctl restart joinery"),
        "{}",
        text(&o)
    );
    let o = joinery(&["install", "--root", r, "--idle-timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("replaced unit"), "{}", text(&o));
    assert!(
        text(&o).contains("systemctl restart joinery"),
        "{}",
        text(&o)
    );
}

// ---- scripts/headless-join.sh ------------------------------------------------------------

/// A cluster to join: the fake API with a password, joinery serving joins, and an
/// application binary that "joins" by registering the node `new-node` with the fake
/// (Ready or not, as asked).
struct Cluster {
    fake: FakeKube,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(new_node_ready: bool) -> Cluster {
        let fake = FakeKube::with_password(3);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("license.yaml"),
            "apiVersion: kots.io/v1beta1\nkind: License\nspec:\n  appSlug: my-app\n  \
             licenseID: lic-1\n  isEmbeddedClusterMultiNodeEnabled: true\n",
        )
        .unwrap();
        let art = d.join("artifacts");
        std::fs::create_dir_all(&art).unwrap();
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "new-node", "labels": {"kubernetes.io/hostname": "new-node"}},
            "status": {
                "conditions": [{"type": "Ready", "status": if new_node_ready { "True" } else { "False" }}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.50"}]
            }
        });
        std::fs::write(art.join("node.json"), node.to_string()).unwrap();
        std::fs::write(
            art.join("my-app"),
            format!(
                "#!/bin/sh\n# Stand-in for the app binary: `node join` registers this node.\n\
                 echo \"$@\" > called-with\n\
                 exec curl -sSf --cacert {ca} -X POST -H 'Content-Type: application/json' \
                 --data-binary @node.json {url}/_fake/objects -o /dev/null\n",
                ca = fake.dir.path().join("ca.crt").display(),
                url = fake.url
            ),
        )
        .unwrap();
        let p = |n: &str| d.join(n).display().to_string();
        let daemon = Daemon::start_with(
            &fake,
            DaemonOpts {
                args: vec![
                    "--ec-config".into(),
                    ec_config().display().to_string(),
                    "--license".into(),
                    p("license.yaml"),
                    "--artifacts-dir".into(),
                    p("artifacts"),
                ],
                ..Default::default()
            },
        );
        std::fs::write(d.join("password"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(d.join("wrong-password"), "not it\n").unwrap();
        // The ssh stand-in: runs `sh -s` here, in a "remote" with a sudo shim, and notes
        // which host it was asked for.
        let shim = d.join("remote-bin");
        std::fs::create_dir_all(&shim).unwrap();
        write_exec(&shim.join("sudo"), "#!/bin/sh\nexec \"$@\"\n");
        write_exec(
            &d.join("fake-ssh"),
            &format!(
                "#!/bin/sh\necho \"$1\" > {host}\nshift\nPATH={shim}:$PATH exec \"$@\"\n",
                host = d.join("ssh-host").display(),
                shim = shim.display()
            ),
        );
        Cluster { fake, daemon, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The script's arguments for this cluster, then `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--api".into(),
            self.daemon.url.clone(),
            "--pin".into(),
            self.daemon.pin.clone(),
            "--roles".into(),
            "worker".into(),
            "--interval".into(),
            "1".into(),
            // Bounds every wait; a test that wants another passes its own (the last wins).
            "--timeout".into(),
            "30".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn ssh_args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = self.args(&[
            "--password-file",
            self.path("password").to_str().unwrap(),
            "--ssh",
            "admin@new-node",
            "--ssh-command",
            self.path("fake-ssh").to_str().unwrap(),
            "--remote-dir",
            self.path("remote").to_str().unwrap(),
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
}

fn write_exec(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the script with `sh` (dash on Debian), optionally with another PATH.
fn headless_join(args: &[String], path: Option<&str>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(root().join("scripts/headless-join.sh")).args(args);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A PATH with only the tools the script and the join steps use: no jq.
fn path_without_jq(dir: &Path) -> String {
    let bin = dir.join("no-jq-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "sh", "curl", "awk", "sed", "tr", "mktemp", "rm", "cat", "date", "sleep", "mkdir", "tar",
        "gzip", "env",
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap();
        let target = String::from_utf8(found.stdout).unwrap().trim().to_string();
        assert!(!target.is_empty(), "{tool} is not installed");
        let _ = std::os::unix::fs::symlink(target, bin.join(tool));
    }
    bin.display().to_string()
}

fn joined_host_checks(c: &Cluster) {
    let remote = c.path("remote");
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&remote)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", text(&sums));
    assert_eq!(
        std::fs::read_to_string(remote.join("called-with"))
            .unwrap()
            .trim(),
        "node join"
    );
    assert_eq!(
        std::fs::read_to_string(c.path("ssh-host")).unwrap().trim(),
        "admin@new-node"
    );
}

#[test]
fn ssh_join_runs_the_steps_and_waits_for_the_node_with_jq() {
    let c = Cluster::new(true);
    let o = headless_join(&c.ssh_args(&["--timeout", "60"]), None);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "joined new-node (roles worker)"
    );
    joined_host_checks(&c);
    // The password never reached a command line, so never a log either.
    assert!(!text(&o).contains(PASSWORD));
}

#[test]
fn ssh_join_works_without_jq_and_finds_the_node_by_ip() {
    let c = Cluster::new(true);
    let path = path_without_jq(c.dir.path());
    let probe = Command::new("sh")
        .args(["-c", "command -v jq"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(!probe.status.success(), "jq is still on the PATH");
    let o = headless_join(
        &c.ssh_args(&["--node-name", "10.0.0.50", "--timeout", "60"]),
        Some(&path),
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("joined new-node"));
    joined_host_checks(&c);
}

#[test]
fn printed_steps_run_with_sh_and_the_bundle_checks_out() {
    let c = Cluster::new(true);
    let o = headless_join(
        &c.args(&[
            "--password-file",
            c.path("password").to_str().unwrap(),
            "--print",
        ]),
        None,
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let steps = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(steps.starts_with("#!/bin/sh\n"), "{steps}");
    let host = c.path("print-host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("steps.sh"), &steps).unwrap();
    let path = format!(
        "{}:{}",
        c.path("remote-bin").display(),
        std::env::var("PATH").unwrap()
    );
    let run = Command::new("sh")
        .arg("steps.sh")
        .current_dir(&host)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}\n{steps}", text(&run));
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&host)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", text(&sums));
}

#[test]
fn every_failure_has_its_exit_code() {
    let c = Cluster::new(true);
    let pw = c.path("password").display().to_string();

    // --help documents every code.
    let o = headless_join(&["--help".into()], None);
    assert_eq!(code(&o), 0);
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    for n in 1..=7 {
        assert!(
            help.contains(&format!("\n  {n}  ")),
            "exit code {n} undocumented:\n{help}"
        );
    }

    // 2: usage.
    let o = headless_join(&["--roles".into(), "worker".into()], None);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let o = headless_join(
        &c.args(&["--password-file", &pw, "--print", "--roles", "a b"]),
        None,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));

    // 1: the controller's key is not the pinned one (no retrying that).
    let mut a = c.args(&["--password-file", &pw, "--print"]);
    a[3] = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let o = headless_join(&a, None);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("TLS identity"), "{}", text(&o));

    // 3: wrong password; and a token that is not one.
    let o = headless_join(
        &c.args(&[
            "--password-file",
            c.path("wrong-password").to_str().unwrap(),
            "--print",
        ]),
        None,
    );
    assert_eq!(code(&o), 3, "{}", text(&o));
    std::fs::write(c.path("bad-token"), "eyJhbGciOiJIUzI1NiJ9.e30.AAAA\n").unwrap();
    let o = headless_join(
        &c.args(&[
            "--token-file",
            c.path("bad-token").to_str().unwrap(),
            "--print",
        ]),
        None,
    );
    assert_eq!(code(&o), 3, "{}", text(&o));

    // 5: a role the cluster does not have.
    let mut a = c.args(&["--password-file", &pw, "--print"]);
    a[5] = "tpu".into();
    let o = headless_join(&a, None);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("invalid_roles"), "{}", text(&o));

    // 6: a step fails on the new host (its sudo refuses).
    let shim = c.path("remote-bin/sudo");
    write_exec(
        &shim,
        "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n",
    );
    let o = headless_join(&c.ssh_args(&["--timeout", "30"]), None);
    assert_eq!(code(&o), 6, "{}", text(&o));
    assert!(text(&o).contains("a password is required"), "{}", text(&o));

    // 4: no Ready controller within --timeout.
    c.fake.control(
        "POST",
        "/_fake/node-ready",
        Some(json!({"name": "node-1", "ready": false})),
    );
    let o = headless_join(
        &c.args(&["--password-file", &pw, "--print", "--timeout", "2"]),
        None,
    );
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(
        text(&o).contains("waiting for a Ready controller"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_node_that_never_becomes_ready_exits_7() {
    let c = Cluster::new(false);
    let o = headless_join(&c.ssh_args(&["--timeout", "3"]), None);
    assert_eq!(code(&o), 7, "{}", text(&o));
    // The daemon's wait_timeout message names the node's state.
    assert!(
        text(&o).contains("it exists and is not Ready (Ready=False"),
        "{}",
        text(&o)
    );
    // --wait bounds that wait alone (one long call, not a poll of the node list).
    let t = std::time::Instant::now();
    let o = headless_join(&c.ssh_args(&["--timeout", "60", "--wait", "2"]), None);
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(text(&o).contains("not Ready after 2s"), "{}", text(&o));
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    let pw = c.path("password").display().to_string();
    let o = headless_join(
        &c.args(&["--password-file", &pw, "--print", "--wait"]),
        None,
    );
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("--wait needs --ssh"), "{}", text(&o));
}

#[test]
fn regression_headless_join_puts_no_token_in_any_argv() {
    use std::os::unix::process::CommandExt;
    let c = Cluster::new(true);
    // Slow Kubernetes down so the download's curl lives long enough to be seen.
    c.fake
        .control("POST", "/_fake/config", Some(json!({"latencyMs": 150})));
    let watch = crate::joins::ArgvWatch::start(
        vec![],
        vec![PASSWORD.to_string()],
        vec!["/v1/join-bundle".to_string()],
    );
    let child = Command::new("sh")
        .arg(root().join("scripts/headless-join.sh"))
        .args(c.ssh_args(&["--timeout", "60"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    watch.group(child.id());
    let o = child.wait_with_output().unwrap();
    let (hits, seen, scans) = watch.finish();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        hits.is_empty(),
        "a secret in an argv ({scans} scans):\n{hits:#?}"
    );
    assert!(
        !seen.is_empty(),
        "the watcher never saw the download ({scans} scans)"
    );
    joined_host_checks(&c);
}
