//! What install will write, decided before anything is: the serve flags validated the
//! way `joinery serve` validates them, plus what only matters under systemd (absolute
//! paths, none under the service's private /tmp), and the files they name read by
//! [`crate::preflight`].

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::unit;
use super::{root_note, usage, InstallArgs, InstallError, K0S_ADMIN_KUBECONFIG};
use crate::config::{Config, KubeSource, Sources};
use crate::fsutil::under;

/// Whether the user gave `flag` (as `--flag V` or `--flag=V`).
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter()
        .any(|a| a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
}

/// The validated flags and what the unit runs with.
pub(super) struct Plan {
    pub cfg: Config,
    /// Defaults made explicit, then the operator's flags.
    pub serve_args: Vec<String>,
    pub warnings: Vec<String>,
}

/// Validates the serve flags the way `joinery serve` will, plus what only matters under
/// systemd. `root` is where the named files are looked for.
pub(super) fn plan(args: &InstallArgs, root: &Path) -> Result<Plan, InstallError> {
    let no_env = |_: &str| None;
    let pa = pico_args::Arguments::from_vec(args.serve_args.iter().map(OsString::from).collect());
    let mut src = Sources {
        args: pa,
        env: &no_env,
    };
    let cfg = Config::from_sources(&mut src, || {
        Ok(KubeSource::Kubeconfig(K0S_ADMIN_KUBECONFIG.into()))
    })
    .and_then(|cfg| src.finish().map(|_| cfg))
    .map_err(|e| usage(format!("install: {e}")))?;

    let mut serve_args = Vec::new();
    if !has_flag(&args.serve_args, "--kubeconfig") {
        serve_args.extend(["--kubeconfig".to_string(), K0S_ADMIN_KUBECONFIG.to_string()]);
    }
    if !has_flag(&args.serve_args, "--data-dir") {
        serve_args.extend(["--data-dir".to_string(), cfg.data_dir.display().to_string()]);
    }
    serve_args.extend(args.serve_args.iter().cloned());
    for a in &serve_args {
        unit::quote(a).map_err(|e| usage(format!("install: {e}")))?;
    }

    // (flag, path, must it exist already?)
    let mut paths: Vec<(&str, PathBuf, bool)> = vec![("--data-dir", cfg.data_dir.clone(), false)];
    if let KubeSource::Kubeconfig(p) = &cfg.kube {
        paths.push((
            "--kubeconfig",
            p.clone(),
            has_flag(&args.serve_args, "--kubeconfig"),
        ));
    }
    for (flag, p) in [
        ("--tls-cert", &cfg.tls_cert),
        ("--tls-key", &cfg.tls_key),
        ("--password-hash-file", &cfg.password_hash_file),
        ("--signing-key-file", &cfg.signing_key_file),
    ] {
        if let Some(p) = p {
            paths.push((flag, p.clone(), true));
        }
    }
    // A socket outside /run and the data dir is in a ReadWritePaths= directory, which
    // must exist when the unit starts.
    if let Some(dir) = cfg.socket.as_deref().and_then(Path::parent) {
        if !dir.starts_with("/run") && !dir.starts_with(&cfg.data_dir) {
            paths.push(("--socket", dir.to_path_buf(), true));
        }
    }
    if let Some(j) = &cfg.join {
        paths.push(("--ec-config", j.ec_config.clone(), true));
        paths.push(("--license", j.license.clone(), true));
        paths.push(("--artifacts-dir", j.artifacts_dir.clone(), true));
    }
    let mut warnings = Vec::new();
    for (flag, p, must_exist) in &paths {
        if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return Err(usage(format!(
                "install: {flag} {}: give an absolute path without `..` (the service runs \
                 from /)",
                p.display()
            )));
        }
        if p.starts_with("/tmp") || p.starts_with("/var/tmp") {
            return Err(usage(format!(
                "install: {flag} {}: the service has a private /tmp and would not see it; \
                 use a path such as /etc/joinery/... or /var/lib/joinery/...",
                p.display()
            )));
        }
        let exists = under(root, p).exists();
        if *must_exist && !exists {
            return Err(usage(format!(
                "install: {flag} {}: no such file{}",
                p.display(),
                root_note(root)
            )));
        }
        if *flag == "--kubeconfig" && !exists {
            warnings.push(format!(
                "{} does not exist yet{}: the service refuses to start without it (exit \
                 2, not restarted); once k0s has written it, `systemctl restart joinery` \
                 (or pass --kubeconfig FILE)",
                p.display(),
                root_note(root)
            ));
        }
    }
    // The files themselves, as `serve` will read them.
    crate::preflight::check(&cfg, root, false).map_err(|e| usage(format!("install: {e}")))?;
    Ok(Plan {
        cfg,
        serve_args,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn serve_flags_are_checked_like_serve_does() {
        let root = tempfile::tempdir().unwrap();
        let check = |args: &[&str]| {
            let a = super::super::parse_install_args(os(args)).unwrap();
            plan(&a, root.path()).map(|p| p.serve_args)
        };
        let e = check(&["--api-prot", "1"]).unwrap_err();
        assert!(e.usage && e.message.contains("unknown flag"), "{e}");
        let e = check(&["--api-port", "70000"]).unwrap_err();
        assert!(e.message.contains("--api-port"), "{e}");
        let e = check(&["--data-dir", "state"]).unwrap_err();
        assert!(e.message.contains("absolute"), "{e}");
        let e = check(&["--password-hash-file", "/tmp/hash"]).unwrap_err();
        assert!(e.message.contains("private /tmp"), "{e}");
        let e = check(&["--password-hash-file", "/etc/joinery/hash"]).unwrap_err();
        assert!(e.message.contains("no such file"), "{e}");
        // Defaults made explicit, the operator's flags after them, verbatim.
        assert_eq!(
            check(&["--api-port=9443"]).unwrap(),
            [
                "--kubeconfig",
                K0S_ADMIN_KUBECONFIG,
                "--data-dir",
                "/var/lib/joinery",
                "--api-port=9443"
            ]
        );
        assert_eq!(
            check(&["--data-dir=/srv/j"]).unwrap(),
            ["--kubeconfig", K0S_ADMIN_KUBECONFIG, "--data-dir=/srv/j"]
        );
    }
}
