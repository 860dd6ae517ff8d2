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
    // (arguments, environment, stdin, what the message must name)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], vec![], "", "Usage"),
        (vec!["nodez".into()], vec![], "", "unknown command"),
        (
            vec!["version".into(), "x".into()],
            vec![],
            "",
            "no arguments",
        ),
        (
            serve(&[
                "--ec-config",
                &bad_yaml,
                "--license",
                lic,
                "--artifacts-dir",
                art,
            ]),
            vec![],
            "",
            "--ec-config",
        ),
        (
            serve(&[
                "--ec-config",
                ec,
                "--license",
                &bad_yaml,
                "--artifacts-dir",
                art,
            ]),
            vec![],
            "",
            "--license",
        ),
        (
            serve(&[
                "--ec-config",
                ec,
                "--license",
                lic,
                "--artifacts-dir",
                &no_app,
            ]),
            vec![],
            "",
            "my-app",
        ),
        (
            serve(&["--ec-config", ec, "--license", lic]),
            vec![],
            "",
            "--artifacts-dir",
        ),
        (
            serve(&["--kubeconfig", "/nonexistent/kubeconfig"]),
            vec![],
            "",
            "/nonexistent/kubeconfig",
        ),
        (
            serve(&["--kubeconfig", &bad_yaml]),
            vec![],
            "",
            "--kubeconfig",
        ),
        (
            serve(&["--tls-cert", &cert, "--tls-key", "/nonexistent/key"]),
            vec![],
            "",
            "/nonexistent/key",
        ),
        (
            serve(&["--tls-cert", &cert, "--tls-key", d.to_str().unwrap()]),
            vec![],
            "",
            "cannot read",
        ),
        (
            serve(&["--password-hash-file", &hash]),
            vec![],
            "",
            "--password-hash-file",
        ),
        (
            serve(&["--password-hash-file", "/nonexistent/hash"]),
            vec![],
            "",
            "--password-hash-file",
        ),
        (serve(&["--signing-key-file", &key]), vec![], "", "signing"),
        (
            serve(&["--api-prot", "1"]),
            vec![],
            "",
            "did you mean --api-port",
        ),
        (
            serve(&["--api-port", "1", "--api-port", "2"]),
            vec![],
            "",
            "given twice",
        ),
        (
            serve(&["--api-port"]),
            vec![],
            "",
            "--api-port needs a value",
        ),
        (
            vec!["serve".into(), "--kubeconfig".into(), kc.clone()],
            vec![("JOINERY_SOCKET", "rel")],
            "",
            "JOINERY_SOCKET",
        ),
        (
            vec!["serve".into(), "--api-prot".into(), "1".into()],
            vec![],
            "",
            "--api-prot",
        ),
        (
            vec!["install".into(), "--root".into(), "/nonexistent".into()],
            vec![],
            "",
            "--root",
        ),
        (
            vec!["install".into(), "--api-port=x".into()],
            vec![],
            "",
            "--api-port",
        ),
        (
            vec!["uninstall".into(), "--purgee".into()],
            vec![],
            "",
            "--purgee",
        ),
        (vec!["hash-password".into()], vec![], "", "stdin"),
        (
            vec!["hash-password".into(), "pw".into()],
            vec![],
            "pw\n",
            "no arguments",
        ),
        (vec!["token".into()], vec![], "", "create, list or revoke"),
        (vec!["token".into(), "mint".into()], vec![], "", "mint"),
        (
            vec![
                "token".into(),
                "create".into(),
                "--scope".into(),
                "read".into(),
                "--kubeconfig".into(),
                kc.clone(),
            ],
            vec![],
            "",
            "--name",
        ),
        (
            vec![
                "token".into(),
                "create".into(),
                "--name".into(),
                "a".into(),
                "--scope".into(),
                "root".into(),
                "--kubeconfig".into(),
                kc.clone(),
            ],
            vec![],
            "",
            "--scope",
        ),
        (
            vec![
                "token".into(),
                "create".into(),
                "--name".into(),
                "a".into(),
                "--scope".into(),
                "read".into(),
                "--expires-in".into(),
                "1w".into(),
            ],
            vec![],
            "",
            "12h",
        ),
        (
            vec![
                "token".into(),
                "list".into(),
                "--kubeconfg".into(),
                kc.clone(),
            ],
            vec![],
            "",
            "did you mean --kubeconfig",
        ),
        (
            vec!["token".into(), "list".into(), "-o".into(), "yaml".into()],
            vec![],
            "",
            "table, json",
        ),
        (
            vec!["token".into(), "list".into()],
            vec![],
            "",
            "no Kubernetes API found",
        ),
        (vec!["key".into()], vec![], "", "key rotate"),
        (
            vec![
                "key".into(),
                "rotate".into(),
                "--revoke-old".into(),
                "--revoke-old".into(),
            ],
            vec![],
            "",
            "given twice",
        ),
        (
            vec![
                "key".into(),
                "rotate".into(),
                "--kubeconfig".into(),
                "/nonexistent".into(),
            ],
            vec![],
            "",
            "/nonexistent",
        ),
        (
            vec!["nodes".into(), "--api".into(), "http://x".into()],
            vec![],
            "",
            "https://",
        ),
        (
            vec!["nodes".into()],
            vec![
                ("JOINERY_API", "https://x"),
                ("JOINERY_PIN", "sha256//short"),
            ],
            "",
            "JOINERY_PIN",
        ),
        (
            vec![
                "nodes".into(),
                "--api".into(),
                "https://x".into(),
                "--cacert".into(),
                "/nonexistent".into(),
                "--token-file".into(),
                "/t".into(),
            ],
            vec![],
            "",
            "/nonexistent",
        ),
        (
            vec!["nodes".into(), "--socket".into(), "rel.sock".into()],
            vec![],
            "",
            "--socket",
        ),
        (
            vec!["drain".into(), "n".into(), "--deadline".into(), "0".into()],
            vec![],
            "",
            "1 to 3600",
        ),
        (
            vec!["join-command".into(), "--roles".into(), ",".into()],
            vec![],
            "",
            "--roles",
        ),
        (vec!["join-command".into()], vec![], "", "--roles"),
        (
            vec!["pin".into(), "--tls-cert".into(), "/nonexistent".into()],
            vec![],
            "",
            "/nonexistent",
        ),
        (
            vec![
                "token".into(),
                "list".into(),
                "--kubeconfig".into(),
                "/nonexistent".into(),
            ],
            vec![],
            "",
            "/nonexistent",
        ),
        (
            vec![
                "token".into(),
                "revoke".into(),
                "--kubeconfig".into(),
                kc.clone(),
            ],
            vec![],
            "",
            "ID",
        ),
        (
            vec![
                "token".into(),
                "revoke".into(),
                "a".into(),
                "b".into(),
                "--kubeconfig".into(),
                kc.clone(),
            ],
            vec![],
            "",
            "\"b\"",
        ),
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
