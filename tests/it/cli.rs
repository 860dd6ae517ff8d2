//! The command line's conventions, run through the real binary: each subcommand's help
//! on stdout with exit 0, exit 2 for every usage or configuration mistake (which
//! systemd does not restart on) and 1 for run-time failures, messages naming what the
//! user typed, and help that fits in 80 columns.

use crate::support::*;

use crate::support::run_joinery as run;

/// Every subcommand's help, however asked for.
const HELP_COMMANDS: &[&[&str]] = &[
    &["--help"],
    &["-h"],
    &["help"],
    &["serve", "--help"],
    &["serve", "--api-prot", "1", "-h"],
    &["install", "--help"],
    &["uninstall", "--help"],
    &["hash-password", "--help"],
    &["token", "--help"],
    &["token", "create", "--help"],
    &["token", "list", "-h"],
    &["version", "--help"],
    &["key", "--help"],
    &["key", "rotate", "-h"],
    &["health", "--help"],
    &["nodes", "--help"],
    &["node", "-h"],
    &["join-command", "--help"],
    &["joins", "--help"],
    &["drain", "--help"],
    &["resume", "--help"],
    &["remove", "--help"],
    &["pin", "--help"],
];

#[test]
fn regression_help_goes_to_stdout_exits_0_and_fits_80_columns() {
    for args in HELP_COMMANDS {
        // No Kubernetes anywhere: help must not need it.
        let (code, out, err) = run(args, &[("JOINERY_KUBECONFIG", "/nonexistent")], "");
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} wrote to stderr: {err}");
        assert!(out.contains("Usage"), "{args:?}: {out}");
        for line in out.lines() {
            assert!(
                line.chars().count() <= 80,
                "{args:?}: line wider than 80 columns:\n{line}"
            );
        }
    }
    // Each subcommand has its own help, not everything at once.
    let (_, serve, _) = run(&["serve", "--help"], &[], "");
    assert!(serve.contains("--api-port") && !serve.contains("uninstall"));
    let (_, token, _) = run(&["token", "--help"], &[], "");
    assert!(token.contains("--expires-in") && !token.contains("--api-port"));
    for v in [&["--version"][..], &["-V"], &["version"]] {
        let (code, out, err) = run(v, &[], "");
        assert_eq!(code, 0, "{v:?}: {err}");
        assert!(out.starts_with("joinery 0."), "{v:?}: {out}");
    }
}

/// A file with `text` in `dir`, as a path string.
fn file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A usage-error case: (arguments, environment, stdin, what the message must name).
type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str, &'a str);

/// A case's arguments: `line` split at spaces (no argument here holds one).
fn cmd(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// A case with no environment and no stdin.
fn plain(args: Vec<String>, needle: &str) -> Case<'_> {
    (args, vec![], "", needle)
}

#[test]
fn regression_every_usage_or_configuration_error_exits_2() {
    let fake = FakeKube::with_password(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kc = fake.kubeconfig().display().to_string();
    let join = join_inputs(d);
    let (ec, lic, art) = (join[1].as_str(), join[3].as_str(), join[5].as_str());
    let bad_yaml = file(d, "bad.yaml", "spec: [unclosed\n");
    let no_app = d.join("no-app");
    std::fs::create_dir_all(&no_app).unwrap();
    std::fs::write(no_app.join("other"), "x").unwrap();
    let no_app = no_app.display().to_string();
    let cert = file(d, "c.pem", "not a certificate\n");
    let hash = file(d, "hash", "not a bcrypt hash\n");
    let key = file(d, "key", "short\n");
    let data = d.join("data").display().to_string();
    let serve = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "serve",
            "--api-port",
            "0",
            "--bind-address",
            "127.0.0.1",
            "--socket=none",
            "--data-dir",
            &data,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--kubeconfig") {
            v.extend(["--kubeconfig".to_string(), kc.clone()]);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<Case> = vec![
        plain(vec![], "Usage"),
        plain(cmd("nodez"), "unknown command"),
        plain(cmd("version x"), "no arguments"),
        plain(
            serve(&[
                "--ec-config",
                &bad_yaml,
                "--license",
                lic,
                "--artifacts-dir",
                art,
            ]),
            "--ec-config",
        ),
        plain(
            serve(&[
                "--ec-config",
                ec,
                "--license",
                &bad_yaml,
                "--artifacts-dir",
                art,
            ]),
            "--license",
        ),
        plain(
            serve(&[
                "--ec-config",
                ec,
                "--license",
                lic,
                "--artifacts-dir",
                &no_app,
            ]),
            "my-app",
        ),
        plain(
            serve(&["--ec-config", ec, "--license", lic]),
            "--artifacts-dir",
        ),
        plain(
            serve(&["--kubeconfig", "/nonexistent/kubeconfig"]),
            "/nonexistent/kubeconfig",
        ),
        plain(serve(&["--kubeconfig", &bad_yaml]), "--kubeconfig"),
        plain(
            serve(&["--tls-cert", &cert, "--tls-key", "/nonexistent/key"]),
            "/nonexistent/key",
        ),
        plain(
            serve(&["--tls-cert", &cert, "--tls-key", d.to_str().unwrap()]),
            "cannot read",
        ),
        plain(
            serve(&["--password-hash-file", &hash]),
            "--password-hash-file",
        ),
        plain(
            serve(&["--password-hash-file", "/nonexistent/hash"]),
            "--password-hash-file",
        ),
        plain(serve(&["--signing-key-file", &key]), "signing"),
        plain(serve(&["--api-prot", "1"]), "did you mean --api-port"),
        plain(
            serve(&["--api-port", "1", "--api-port", "2"]),
            "given twice",
        ),
        plain(serve(&["--api-port"]), "--api-port needs a value"),
        (
            cmd(&format!("serve --kubeconfig {kc}")),
            vec![("JOINERY_SOCKET", "rel")],
            "",
            "JOINERY_SOCKET",
        ),
        plain(cmd("serve --api-prot 1"), "--api-prot"),
        plain(cmd("install --root /nonexistent"), "--root"),
        plain(cmd("install --api-port=x"), "--api-port"),
        plain(cmd("uninstall --purgee"), "--purgee"),
        plain(cmd("hash-password"), "stdin"),
        (cmd("hash-password pw"), vec![], "pw\n", "no arguments"),
        plain(cmd("token"), "create, list or revoke"),
        plain(cmd("token mint"), "mint"),
        plain(
            cmd(&format!("token create --scope read --kubeconfig {kc}")),
            "--name",
        ),
        plain(
            cmd(&format!(
                "token create --name a --scope root --kubeconfig {kc}"
            )),
            "--scope",
        ),
        plain(
            cmd("token create --name a --scope read --expires-in 1w"),
            "12h",
        ),
        plain(
            cmd(&format!("token list --kubeconfg {kc}")),
            "did you mean --kubeconfig",
        ),
        plain(cmd("token list -o yaml"), "table, json"),
        plain(cmd("token list"), "no Kubernetes API found"),
        plain(cmd("key"), "key rotate"),
        plain(cmd("key rotate --revoke-old --revoke-old"), "given twice"),
        plain(cmd("key rotate --kubeconfig /nonexistent"), "/nonexistent"),
        plain(cmd("nodes --api http://x"), "https://"),
        (
            cmd("nodes"),
            vec![
                ("JOINERY_API", "https://x"),
                ("JOINERY_PIN", "sha256//short"),
            ],
            "",
            "JOINERY_PIN",
        ),
        plain(
            cmd("nodes --api https://x --cacert /nonexistent --token-file /t"),
            "/nonexistent",
        ),
        plain(cmd("nodes --socket rel.sock"), "--socket"),
        plain(cmd("drain n --deadline 0"), "1 to 3600"),
        plain(cmd("join-command --roles ,"), "--roles"),
        plain(cmd("join-command"), "--roles"),
        plain(cmd("pin --tls-cert /nonexistent"), "/nonexistent"),
        plain(cmd("token list --kubeconfig /nonexistent"), "/nonexistent"),
        plain(cmd(&format!("token revoke --kubeconfig {kc}")), "ID"),
        plain(cmd(&format!("token revoke a b --kubeconfig {kc}")), "\"b\""),
    ];
    for (args, env, stdin, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run(&args, &env, stdin);
        assert_eq!(code, 2, "{args:?} {env:?}: exit {code}\n{out}{err}");
        assert!(
            err.contains(needle),
            "{args:?} {env:?}: no {needle:?} in:\n{err}"
        );
        assert!(
            !err.contains("ParseIntError") && !err.contains("Error {"),
            "{err}"
        );
    }
}

#[test]
fn runtime_failures_exit_1() {
    let fake = FakeKube::with_password(1);
    // The port is taken: a run-time failure (another process may free it).
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let data = tempfile::tempdir().unwrap();
    let kc = fake.kubeconfig().display().to_string();
    let (code, _, err) = run(
        &[
            "serve",
            "--api-port",
            &port,
            "--bind-address",
            "127.0.0.1",
            "--socket=none",
            "--kubeconfig",
            &kc,
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot listen"), "{err}");
    // Kubernetes does not answer: the token commands fail at run time.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fake.kubeconfig()).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let url = fake.url.clone();
    let kc = file(
        dir.path(),
        "kubeconfig",
        &text.replace(&url, &format!("https://127.0.0.1:{dead_port}")),
    );
    let (code, _, err) = run(&["token", "list", "--kubeconfig", &kc], &[], "");
    assert_eq!(code, 1, "{err}");
}

/// `serve --kubeconfig kc` (relative) was read as `/kc` by the start-up checks, so a
/// daemon started from its own directory with relative paths could not start.
#[test]
fn regression_relative_paths_are_read_from_the_working_directory() {
    let fake = FakeKube::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fake.kubeconfig(), dir.path().join("kc")).unwrap();
    std::fs::write(dir.path().join("ec.yaml"), "not: [an ec config").unwrap();
    std::fs::write(dir.path().join("license.yaml"), "x").unwrap();
    std::fs::create_dir(dir.path().join("art")).unwrap();
    // The relative kubeconfig is good, so the first complaint is about the EC config.
    let out = std::process::Command::new(joinery_bin())
        .current_dir(dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("JOINERY_SOCKET")
        .args([
            "serve",
            "--kubeconfig",
            "kc",
            "--ec-config",
            "ec.yaml",
            "--license",
            "license.yaml",
            "--artifacts-dir",
            "art",
            "--socket=none",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("kubeconfig"), "{err}");
    assert!(err.contains("ec.yaml"), "{err}");
}
