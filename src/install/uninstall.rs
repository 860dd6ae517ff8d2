//! `joinery uninstall`: removes what the manifest lists while its content is unchanged,
//! then the directories install created once empty; the data dir only with `--purge`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::manifest::{sha256_hex, Kind, Manifest, MANIFEST_PATH};
use super::{
    failed, must_be_root, read_manifest, root_note, systemctl, unit, InstallError, UninstallArgs,
    KEPT_MANIFEST,
};
use crate::fsutil::under;

/// The data dir a manifest's data entries live in.
fn manifest_data_dir(m: &Manifest) -> Option<PathBuf> {
    m.entries.iter().find_map(|e| match &e.kind {
        Kind::DataDir => Some(e.path.clone()),
        Kind::Data(_) => e.path.parent().map(Path::to_path_buf),
        _ => None,
    })
}

/// `joinery uninstall`. Prints each step to `out`.
///
/// Without `--purge` the data dir stays, and the entries for it (and for the parent
/// directories install created) move to `<data-dir>/install.manifest`, so a later
/// `install` reuses the certificate and still knows it made it, and a later
/// `uninstall --purge [--data-dir DIR]` can finish the job.
pub fn uninstall(args: &UninstallArgs, out: &mut dyn Write) -> Result<(), InstallError> {
    if args.root.is_none() && !args.dry_run {
        must_be_root("uninstall")?;
    }
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let main_real = under(&root, Path::new(MANIFEST_PATH));
    let kept_path = args.data_dir.join(KEPT_MANIFEST);
    let (manifest, manifest_path) = match read_manifest(&main_real, "uninstall")? {
        Some(m) => (m, PathBuf::from(MANIFEST_PATH)),
        None => match read_manifest(&under(&root, &kept_path), "uninstall")? {
            Some(m) => (m, kept_path),
            None => {
                // Automation runs uninstall whether or not install ran: not an error.
                writeln!(
                    out,
                    "nothing to do: joinery is not installed (no install manifest at \
                     {MANIFEST_PATH} or {}{})",
                    kept_path.display(),
                    root_note(&root)
                )
                .map_err(|e| failed(format!("uninstall: writing output: {e}")))?;
                return Ok(());
            }
        },
    };
    let say = |out: &mut dyn Write, line: String| {
        writeln!(out, "{line}").map_err(|e| failed(format!("uninstall: writing output: {e}")))
    };
    let would = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    if args.root.is_none() && !args.dry_run && manifest_path == Path::new(MANIFEST_PATH) {
        // Stop it before its unit disappears; failing here (not running) is fine.
        let _ = systemctl(&["disable", "--now", unit::UNIT_NAME], out);
    }
    // Files first (newest first), then the manifest, then directories once empty.
    for e in manifest.entries.iter().rev() {
        let (sum, data) = match &e.kind {
            Kind::File(s) => (s, false),
            Kind::Data(s) => (s, true),
            _ => continue,
        };
        if data && !args.purge {
            say(
                out,
                format!("kept {} (--purge removes it)", e.path.display()),
            )?;
            continue;
        }
        let real = under(&root, &e.path);
        match fs::read(&real) {
            Ok(bytes) if &sha256_hex(&bytes) == sum => {
                if !args.dry_run {
                    fs::remove_file(&real).map_err(|err| {
                        failed(format!(
                            "uninstall: cannot remove {}: {err}",
                            real.display()
                        ))
                    })?;
                }
                say(out, format!("{would} {}", e.path.display()))?;
            }
            Ok(_) => say(
                out,
                format!("kept {}: changed since install", e.path.display()),
            )?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                say(out, format!("{} was already gone", e.path.display()))?
            }
            Err(err) => {
                return Err(failed(format!(
                    "uninstall: cannot read {}: {err}",
                    real.display()
                )))
            }
        }
    }
    let manifest_real = under(&root, &manifest_path);
    if !args.dry_run {
        match fs::remove_file(&manifest_real) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(failed(format!(
                    "uninstall: cannot remove {}: {e}",
                    manifest_real.display()
                )))
            }
        }
    }
    say(out, format!("{would} {}", manifest_path.display()))?;
    let mut kept = Manifest::default();
    for e in manifest.entries.iter().rev() {
        let real = under(&root, &e.path);
        match e.kind {
            Kind::DataDir if args.purge => {
                if !args.dry_run {
                    match fs::remove_dir_all(&real) {
                        Ok(()) => {}
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => {
                            return Err(failed(format!(
                                "uninstall: cannot remove {}: {err}",
                                real.display()
                            )))
                        }
                    }
                }
                say(
                    out,
                    format!("{would} {} and everything in it", e.path.display()),
                )?;
            }
            Kind::DataDir => say(
                out,
                format!("kept {} (--purge removes it)", e.path.display()),
            )?,
            Kind::Dir if args.dry_run => {}
            Kind::Dir => match fs::remove_dir(&real) {
                Ok(()) => say(out, format!("removed {}", e.path.display()))?,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                // Not empty: something else lives there now; leave it.
                Err(_) => {}
            },
            _ => {}
        }
        if !args.purge && real.exists() && !matches!(e.kind, Kind::File(_)) {
            kept.entries.insert(0, e.clone());
        }
    }
    if !args.purge && !args.dry_run {
        if let Some(dir) = manifest_data_dir(&kept).filter(|d| under(&root, d).is_dir()) {
            let path = dir.join(KEPT_MANIFEST);
            crate::fsutil::write_atomic(&under(&root, &path), kept.render().as_bytes(), 0o600)
                .map_err(|e| failed(format!("uninstall: cannot write {}: {e}", path.display())))?;
            say(
                out,
                format!(
                    "wrote {} (a later install reuses the certificate; \
                     `joinery uninstall --purge` removes the rest)",
                    path.display()
                ),
            )?;
        }
    }
    if args.root.is_none() && !args.dry_run {
        let _ = systemctl(&["daemon-reload"], out);
    }
    Ok(())
}
