//! The command lines of `joinery install` and `joinery uninstall`: install's own flags
//! are taken out and everything else is kept, in order, as the `serve` flags the unit
//! will run with (checked by [`super::plan`]).

use std::ffi::OsString;
use std::path::{Component, PathBuf};

use super::{usage, InstallError, DEFAULT_BINARY_PATH};

/// The command line of `joinery install`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallArgs {
    pub root: Option<PathBuf>,
    pub dry_run: bool,
    pub now: bool,
    pub force: bool,
    /// Where the binary goes, on the installed system.
    pub binary_path: PathBuf,
    /// The `serve` flags, as given.
    pub serve_args: Vec<String>,
}

/// The command line of `joinery uninstall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UninstallArgs {
    pub root: Option<PathBuf>,
    /// Where to look for the data dir's manifest when the main one is gone.
    pub data_dir: PathBuf,
    pub dry_run: bool,
    pub purge: bool,
}

/// Takes install's own flags out of `args`; the rest are `serve` flags.
pub fn parse_install_args(args: Vec<OsString>) -> Result<InstallArgs, InstallError> {
    let mut out = InstallArgs {
        root: None,
        dry_run: false,
        now: false,
        force: false,
        binary_path: PathBuf::from(DEFAULT_BINARY_PATH),
        serve_args: Vec::new(),
    };
    let mut it = args.into_iter();
    let mut seen: Vec<String> = Vec::new();
    while let Some(arg) = it.next() {
        let Some(s) = arg.to_str() else {
            return Err(usage(format!(
                "install: {:?} is not UTF-8, which a systemd unit cannot carry",
                arg.to_string_lossy()
            )));
        };
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (s, None),
        };
        let mut value = |flag: &str| -> Result<String, InstallError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| usage(format!("install: {flag} needs a value"))),
            }
        };
        let own = ["--root", "--binary-path", "--dry-run", "--now", "--force"];
        if own.contains(&name) {
            if seen.contains(&name.to_string()) {
                return Err(usage(format!(
                    "install: {name} is given twice; give it once"
                )));
            }
            seen.push(name.to_string());
        }
        match name {
            "--root" => out.root = Some(PathBuf::from(value("--root")?)),
            "--binary-path" => out.binary_path = PathBuf::from(value("--binary-path")?),
            "--dry-run" => out.dry_run = true,
            "--now" => out.now = true,
            "--force" => out.force = true,
            _ => out.serve_args.push(s.to_string()),
        }
    }
    if !out.binary_path.is_absolute()
        || out
            .binary_path
            .components()
            .any(|c| c == Component::ParentDir)
    {
        return Err(usage(format!(
            "install: --binary-path {}: give an absolute path",
            out.binary_path.display()
        )));
    }
    if out.now && out.root.is_some() {
        return Err(usage(
            "install: --now starts the service on this host, which --root is not; \
             leave out one of them",
        ));
    }
    Ok(out)
}

pub fn parse_uninstall_args(args: Vec<OsString>) -> Result<UninstallArgs, InstallError> {
    let mut pa = pico_args::Arguments::from_vec(args);
    let out = UninstallArgs {
        dry_run: pa.contains("--dry-run"),
        purge: pa.contains("--purge"),
        root: pa
            .opt_value_from_str::<_, PathBuf>("--root")
            .map_err(|e| usage(format!("uninstall: --root: {e}")))?,
        data_dir: pa
            .opt_value_from_str::<_, PathBuf>("--data-dir")
            .map_err(|e| usage(format!("uninstall: --data-dir: {e}")))?
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DATA_DIR)),
    };
    if !out.data_dir.is_absolute() {
        return Err(usage("uninstall: --data-dir: give an absolute path"));
    }
    if let Some(extra) = pa.finish().first() {
        return Err(usage(format!(
            "uninstall: unexpected argument {:?}; it takes --root DIR, --dry-run, --purge and --data-dir DIR",
            extra.to_string_lossy()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn install_flags_are_taken_out_and_serve_flags_kept_in_order() {
        let a = parse_install_args(os(&[
            "--root=/r",
            "--api-port",
            "9443",
            "--dry-run",
            "--binary-path",
            "/opt/bin/joinery",
            "--namespace=kotsadm",
        ]))
        .unwrap();
        assert_eq!(a.root, Some(PathBuf::from("/r")));
        assert!(a.dry_run && !a.now && !a.force);
        assert_eq!(a.binary_path, PathBuf::from("/opt/bin/joinery"));
        assert_eq!(a.serve_args, ["--api-port", "9443", "--namespace=kotsadm"]);
    }

    #[test]
    fn now_with_root_and_relative_binary_are_usage_errors() {
        let e = parse_install_args(os(&["--now", "--root", "/r"])).unwrap_err();
        assert!(e.usage && e.message.contains("--root"), "{e}");
        let e = parse_install_args(os(&["--root=/a", "--root", "/b"])).unwrap_err();
        assert!(
            e.usage && e.message.contains("--root is given twice"),
            "{e}"
        );
        let e = parse_install_args(os(&["--binary-path", "bin/joinery"])).unwrap_err();
        assert!(e.usage && e.message.contains("absolute"), "{e}");
        let e = parse_uninstall_args(os(&["--purgee"])).unwrap_err();
        assert!(e.usage && e.message.contains("--purgee"), "{e}");
    }
}
