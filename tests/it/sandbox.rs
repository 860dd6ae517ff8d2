//! The unit `joinery install` writes, run the way systemd runs it: its `ExecStart=`
//! inside an emulation of the unit's own filesystem sandbox, built with a mount
//! namespace (`unshare -m`) from the rendered unit text.
//!
//! `systemd-analyze verify` accepts a unit whose sandbox leaves the daemon nowhere to
//! put its socket (issue 13, item 1: a restart loop on day one), so this test reads the
//! sandbox settings from the installed unit and rebuilds them: the whole tree read-only
//! (`ProtectSystem=strict`) except `ReadWritePaths=`, `StateDirectory=` and
//! `RuntimeDirectory=` (created as systemd creates them), a private `/tmp`, then runs
//! the `ExecStart=` command line with the unit's `UMask=`. A setting of the unit that
//! changes what the daemon may see or write and that this emulation does not know fails
//! the test, so the emulation cannot silently fall behind the unit.
//!
//! What install wrote under `--root` is laid over the host's directories as read-only
//! overlays inside the namespace, so the daemon finds its binary, kubeconfig and data
//! dir at the paths the unit names, and nothing on the host changes.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

/// The `[Service]` settings of a unit: key to every value given, in order.
fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("key=value");
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

/// Splits a command line the way systemd splits `ExecStart=`: words separated by
/// blanks, double quotes with `\"` and `\\`, `%%` for `%` and `$$` for `$`.
fn exec_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return words;
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next().expect("unterminated quote in ExecStart") {
                    '"' => break,
                    '\\' => word.push(chars.next().expect("escape")),
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word.replace("%%", "%").replace("$$", "$"));
    }
}

/// Space-separated values of every occurrence of `key`.
fn list(settings: &BTreeMap<String, Vec<String>>, key: &str) -> Vec<String> {
    settings
        .get(key)
        .into_iter()
        .flatten()
        .flat_map(|v| exec_words(v))
        .collect()
}

/// Settings that do not change which files the daemon can see or write.
const NOT_ABOUT_FILES: &[&str] = &[
    "Type",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
    "LimitNOFILE",
    "NoNewPrivileges",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "RestrictSUIDSGID",
    "RestrictRealtime",
    "RestrictNamespaces",
    "RestrictAddressFamilies",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "SystemCallArchitectures",
];

/// Settings this emulation builds.
const EMULATED: &[&str] = &[
    "ExecStart",
    "UMask",
    "ProtectSystem",
    "ProtectHome",
    "ReadWritePaths",
    "StateDirectory",
    "StateDirectoryMode",
    "RuntimeDirectory",
    "RuntimeDirectoryMode",
    "PrivateTmp",
];

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell script that builds the sandbox inside `unshare -m` and then runs
/// `ExecStart=` (given to it as "$@"). `root` is where install wrote.
fn sandbox_script(settings: &BTreeMap<String, Vec<String>>, root: &Path) -> String {
    for key in settings.keys() {
        assert!(
            NOT_ABOUT_FILES.contains(&key.as_str()) || EMULATED.contains(&key.as_str()),
            "the unit sets {key}=, which this sandbox emulation does not know: teach it \
             (tests/it/sandbox.rs) what {key}= does to the files the daemon sees"
        );
    }
    let one = |key: &str| settings.get(key).and_then(|v| v.last()).cloned();
    let mut s = String::from("set -eu\n");
    // 1. What install wrote, at the paths the unit names: each top-level directory of
    //    the root laid read-only over the host's.
    for e in std::fs::read_dir(root).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let layer = root.join(&name);
        s += &format!(
            "mount -t overlay joinery-root -o lowerdir={}:/{name} /{name}\n",
            layer.display()
        );
    }
    // 2. A fresh /run, as at boot, so RuntimeDirectory= can be created without touching
    //    the host's.
    s += "mount -t tmpfs -o mode=0755 joinery-run /run\n";
    let mut writable: Vec<PathBuf> = Vec::new();
    for dir in list(settings, "RuntimeDirectory") {
        let mode = one("RuntimeDirectoryMode").unwrap_or("0755".into());
        let p = Path::new("/run").join(&dir);
        s += &format!(
            "mkdir -p {p}\nmount -t tmpfs -o mode={mode} joinery-rundir {p}\n",
            p = quoted(&p.display().to_string())
        );
        writable.push(p);
    }
    // 3. StateDirectory= and ReadWritePaths=: writable binds of what install made (or
    //    systemd creates for StateDirectory=).
    let mut binds: Vec<(PathBuf, bool)> = list(settings, "StateDirectory")
        .iter()
        .map(|d| (Path::new("/var/lib").join(d), true))
        .collect();
    for p in list(settings, "ReadWritePaths") {
        match p.strip_prefix('-') {
            Some(p) => binds.push((PathBuf::from(p), false)),
            None => binds.push((PathBuf::from(p), true)),
        }
    }
    for (p, required) in binds {
        let inside = root.join(p.strip_prefix("/").unwrap());
        if !inside.exists() && !p.exists() {
            assert!(
                !required || settings.get("StateDirectory").is_some(),
                "ReadWritePaths={} does not exist: systemd would refuse to start the unit",
                p.display()
            );
            if !required {
                continue;
            }
            // StateDirectory=: systemd creates it.
            std::fs::create_dir_all(&inside).unwrap();
        }
        let source = if inside.exists() { inside } else { p.clone() };
        s += &format!(
            "mount --bind {} {}\n",
            quoted(&source.display().to_string()),
            quoted(&p.display().to_string())
        );
        writable.push(p);
    }
    // 4. ProtectSystem=strict: every mount read-only but the API file systems and the
    //    writable paths.
    match one("ProtectSystem").as_deref() {
        Some("strict") => {
            let keep: Vec<String> = ["/proc", "/sys", "/dev"]
                .iter()
                .map(|p| p.to_string())
                .chain(writable.iter().map(|p| p.display().to_string()))
                .collect();
            s += "awk '{print $5}' /proc/self/mountinfo | while read -r m; do\n";
            s += "  m=$(printf '%b' \"$m\")\n  case \"$m\" in\n";
            for k in &keep {
                s += &format!("    {q}|{q}/*) continue ;;\n", q = quoted(k));
            }
            s += "  esac\n  mount -o remount,bind,ro \"$m\"\ndone\n";
        }
        None | Some("no") => {}
        Some(other) => panic!("ProtectSystem={other} is not emulated here"),
    }
    match one("ProtectHome").as_deref() {
        // Read-only already under ProtectSystem=strict.
        Some("read-only") if one("ProtectSystem").as_deref() == Some("strict") => {}
        None | Some("no") => {}
        Some(other) => panic!("ProtectHome={other} is not emulated here"),
    }
    // 5. PrivateTmp=yes.
    match one("PrivateTmp").as_deref() {
        Some("yes" | "true") => {
            s += "mount -t tmpfs -o mode=1777 joinery-tmp /tmp\n";
            s += "mount -t tmpfs -o mode=1777 joinery-vartmp /var/tmp\n";
        }
        None | Some("no" | "false") => {}
        Some(other) => panic!("PrivateTmp={other} is not emulated here"),
    }
    if let Some(umask) = one("UMask") {
        s += &format!("umask {umask}\n");
    }
    s += "cd /\nexec \"$@\"\n";
    s
}

/// The installed unit and its root, with the fake's kubeconfig where the unit reads it.
fn install_for(fake: &FakeKube) -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().unwrap();
    let kubeconfig = root.path().join("etc/joinery/kubeconfig");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    std::fs::copy(fake.kubeconfig(), &kubeconfig).unwrap();
    // The defaults but two: the fake's kubeconfig, and a free port (other daemons on
    // this machine may hold 30081).
    let out = Command::new(joinery_bin())
        .args(["install", "--root"])
        .arg(root.path())
        .args(["--kubeconfig", "/etc/joinery/kubeconfig", "--api-port", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/joinery.service")).unwrap();
    (root, unit)
}

#[test]
fn regression_installed_unit_serves_inside_its_own_sandbox() {
    let fake = FakeKube::with_password(1);
    let (root, unit) = install_for(&fake);
    let settings = service_settings(&unit);
    let exec = exec_words(&settings["ExecStart"][0]);
    assert!(
        !exec[0].starts_with(['-', '@', '+', '!', ':']),
        "ExecStart prefixes are not emulated: {}",
        exec[0]
    );
    let script = sandbox_script(&settings, root.path());
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .args(&exec)
        // systemd's clean environment for a system service.
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let daemon = Daemon::spawn_exact(cmd);

    // It serves over TLS with the certificate it generated in its (writable) data dir.
    let cert = root.path().join("var/lib/joinery/tls.crt");
    let health = curl_at(
        &cert,
        &format!("https://127.0.0.1:{}/v1/health", daemon.port),
        &[],
    );
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok", "{}", health.text());

    // It made its socket where the unit's RuntimeDirectory= is, seen through the
    // daemon's own mount namespace, and it answers there too.
    let socket = PathBuf::from(format!(
        "/proc/{}/root{}",
        daemon.pid(),
        joinery::DEFAULT_SOCKET
    ));
    let meta =
        std::fs::symlink_metadata(&socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    assert!(meta.file_type().is_socket());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/v1/health")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\""));
}

#[test]
fn exec_words_undo_the_units_quoting() {
    for (line, words) in [
        (
            "/usr/local/bin/joinery serve",
            vec!["/usr/local/bin/joinery", "serve"],
        ),
        (
            "a \"/etc/my app/l.yaml\" \"50%%\" \"$$HOME\" \"a\\\"b\\\\c\"",
            vec!["a", "/etc/my app/l.yaml", "50%", "$HOME", "a\"b\\c"],
        ),
    ] {
        assert_eq!(exec_words(line), words, "{line}");
    }
}
