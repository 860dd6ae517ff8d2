//! `joinery install` and `joinery uninstall`: set joinery up as a systemd service on an
//! Embedded Cluster / k0s controller, and take exactly that back out.
//!
//! Install validates the `serve` flags with the daemon's own [`Config`](crate::config::Config) parsing (plus
//! what a unit needs: absolute paths, none under the service's private /tmp, the files
//! they name present, the join inputs loadable), creates the data dir (0700), generates
//! the self-signed certificate when no `--tls-cert` is given, copies this binary to
//! `/usr/local/bin/joinery`, writes the unit ([`unit`](mod@unit)) and records everything it
//! created in a manifest ([`manifest`]) with checksums. Uninstall removes only manifest
//! entries whose content still matches and directories install created that are empty;
//! the data dir (certificate, key, caches) is kept unless `--purge`, because clients
//! pin the key and a re-install should not change it.
//!
//! `--root DIR` does all of it under another root (for tests and image builds) and never
//! runs systemctl; `--dry-run` prints what would happen and touches nothing.
//!
//! The rooms, in the order a run goes through them: [`arguments`] (install's own flags
//! taken out, the rest are serve flags), [`plan`] (the serve flags and the files they
//! name validated as `serve` will, before anything is written), [`steps`] (directories,
//! certificate, binary, unit and manifest, shared by the real run and `--dry-run`) and
//! [`uninstall`](mod@uninstall) (the reversal). This file holds what they share: the paths, the help
//! texts and the error type.

mod arguments;
pub mod manifest;
mod plan;
mod steps;
mod uninstall;
pub mod unit;

pub use arguments::{parse_install_args, parse_uninstall_args, InstallArgs, UninstallArgs};
pub use steps::install;
pub use uninstall::uninstall;

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use manifest::Manifest;

/// k0s's admin kubeconfig on a controller: the unit's default `--kubeconfig`.
pub const K0S_ADMIN_KUBECONFIG: &str = "/var/lib/k0s/pki/admin.conf";
/// Where install puts the binary unless `--binary-path` says otherwise.
pub const DEFAULT_BINARY_PATH: &str = "/usr/local/bin/joinery";
const UNIT_DIR: &str = "/etc/systemd/system";
/// What uninstall leaves in the data dir it keeps: the entries for what is still there.
const KEPT_MANIFEST: &str = "install.manifest";

pub const INSTALL_USAGE: &str = "\
Usage: joinery install [--root DIR] [--dry-run] [--now] [--force]
                       [--binary-path PATH] [serve flags...]

Run as root on a controller: validates the serve flags (joinery serve --help)
and the files they name, creates the data dir (0700), generates the TLS
certificate unless --tls-cert is given, copies this binary to
/usr/local/bin/joinery, writes /etc/systemd/system/joinery.service and records
what it wrote in /etc/joinery/install.manifest. Defaults fit an Embedded
Cluster controller: --kubeconfig /var/lib/k0s/pki/admin.conf, --data-dir
/var/lib/joinery, port 30081, socket /run/joinery/joinery.sock. Run it again
with other flags to change them, then restart the service.

  --root DIR          write under DIR instead of / (never runs systemctl)
  --dry-run           print what would be written; change nothing
  --now               also `systemctl enable --now joinery` (not with --root)
  --force             overwrite a unit or binary that install did not write
  --binary-path PATH  where the binary goes (default /usr/local/bin/joinery)

Exit codes: 0 done; 1 failed while writing (what was written is in the
manifest, for uninstall); 2 a flag or a file it names is wrong, or not root.
";

pub const UNINSTALL_USAGE: &str = "\
Usage: joinery uninstall [--root DIR] [--dry-run] [--purge] [--data-dir DIR]

Stops and disables the service, then removes what the install manifest lists
while its content is unchanged, and the directories install created once empty.
The data dir (certificate, key, caches) is kept so clients' pins stay valid,
with a note of what install made there (<data-dir>/install.manifest).
With nothing installed it says so and exits 0.

  --root DIR      work under DIR instead of / (never runs systemctl)
  --dry-run       print what would be removed; change nothing
  --purge         remove the data dir too
  --data-dir DIR  find a kept data dir other than /var/lib/joinery once the
                  rest is gone

Exit codes: 0 done (or nothing to do); 1 failed while removing; 2 usage error.
";

/// A failed install or uninstall: `usage` ones exit 2 (fix the command line), the rest 1.
#[derive(Debug)]
pub struct InstallError {
    pub usage: bool,
    pub message: String,
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub(crate) fn usage(message: impl Into<String>) -> InstallError {
    InstallError {
        usage: true,
        message: message.into(),
    }
}

pub(crate) fn failed(message: impl Into<String>) -> InstallError {
    InstallError {
        usage: false,
        message: message.into(),
    }
}

/// " under ROOT" for messages, or nothing for `/`.
fn root_note(root: &Path) -> String {
    if root == Path::new("/") {
        String::new()
    } else {
        format!(" under {}", root.display())
    }
}

/// Runs `systemctl ARGS`, saying so on `out`.
fn systemctl(args: &[&str], out: &mut dyn Write) -> Result<(), InstallError> {
    let _ = writeln!(out, "running systemctl {}", args.join(" "));
    match Command::new("systemctl").args(args).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(failed(format!(
            "install: systemctl {} failed ({s})",
            args.join(" ")
        ))),
        Err(e) => Err(failed(format!("install: cannot run systemctl: {e}"))),
    }
}

/// Refuses to run as another user than root: install and uninstall write where only
/// root can, and "Permission denied" halfway through helps nobody.
fn must_be_root(cmd: &str) -> Result<(), InstallError> {
    if crate::sys::euid() != 0 {
        return Err(usage(format!(
            "{cmd}: run as root (e.g. sudo joinery {cmd} ...): it writes /usr/local/bin, \
             /etc and the data dir; --dry-run and --root DIR work as any user"
        )));
    }
    Ok(())
}

/// Reads a manifest file; `Ok(None)` when there is none.
fn read_manifest(real: &Path, cmd: &str) -> Result<Option<Manifest>, InstallError> {
    match fs::read_to_string(real) {
        Ok(text) => Manifest::parse(&text)
            .map(Some)
            .map_err(|e| failed(format!("{cmd}: {}: {e}", real.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(format!(
            "{cmd}: cannot read {}: {e}",
            real.display()
        ))),
    }
}
