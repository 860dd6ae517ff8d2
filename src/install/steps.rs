//! The steps of `joinery install`, in order: directories, certificate, binary, unit,
//! manifest, then systemctl. [`Installer`] does each one or, with `--dry-run`, says what
//! it would do, so the two never drift apart; every file it writes is recorded in the
//! manifest with its checksum, and conflicts are refused before the first write.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::manifest::{sha256_hex, Entry, Kind, Manifest, MANIFEST_PATH};
use super::plan::plan;
use super::{
    failed, must_be_root, read_manifest, systemctl, unit, usage, InstallArgs, InstallError,
    KEPT_MANIFEST, UNIT_DIR,
};
use crate::config::Config;
use crate::fsutil::under;
use crate::http::tls;

/// What install does, step by step, so `--dry-run` and the real run share one list.
struct Installer<'a> {
    root: PathBuf,
    dry_run: bool,
    force: bool,
    old: Manifest,
    new: Manifest,
    out: &'a mut dyn Write,
}

impl Installer<'_> {
    fn say(&mut self, line: &str) -> Result<(), InstallError> {
        writeln!(self.out, "{line}").map_err(|e| failed(format!("install: writing output: {e}")))
    }

    /// Creates `dir` and its missing parents (parents 0755, `dir` itself `mode`),
    /// recording each one created.
    fn ensure_dir(&mut self, dir: &Path, mode: u32, kind: Kind) -> Result<(), InstallError> {
        let mut path = PathBuf::from("/");
        let parts: Vec<_> = dir.components().skip(1).collect();
        for (i, c) in parts.iter().enumerate() {
            path.push(c);
            let last = i + 1 == parts.len();
            let real = under(&self.root, &path);
            if real.is_dir() || (self.dry_run && self.new.get(&path).is_some()) {
                // Already there: still ours if an earlier install made it.
                if let Some(e) = self.old.get(&path).cloned() {
                    self.new.record(e);
                }
                continue;
            }
            let m = if last { mode } else { 0o755 };
            if self.dry_run {
                self.say(&format!("would create {} ({m:04o})", path.display()))?;
            } else {
                fs::DirBuilder::new()
                    .mode(m)
                    .create(&real)
                    .and_then(|_| fs::set_permissions(&real, fs::Permissions::from_mode(m)))
                    .map_err(|e| {
                        failed(format!("install: cannot create {}: {e}", real.display()))
                    })?;
                self.say(&format!("created {} ({m:04o})", path.display()))?;
            }
            self.new.record(Entry {
                kind: if last { kind.clone() } else { Kind::Dir },
                path: path.clone(),
            });
        }
        Ok(())
    }

    /// Whether `data` can go to `path`: `Ok(None)` when the same bytes are already
    /// there, `Ok(Some(exists))` when it can be written; refuses to replace a file install
    /// did not write (or that changed since) without `--force`.
    fn check_file(&self, path: &Path, data: &[u8]) -> Result<Option<bool>, InstallError> {
        let real = under(&self.root, path);
        let current = match fs::read(&real) {
            Ok(bytes) => sha256_hex(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(false)),
            Err(e) => {
                return Err(failed(format!(
                    "install: cannot read {}: {e}",
                    real.display()
                )))
            }
        };
        if current == sha256_hex(data) {
            return Ok(None);
        }
        let owned =
            matches!(self.old.get(path), Some(Entry { kind: Kind::File(s), .. }) if *s == current);
        if !owned && !self.force {
            return Err(failed(format!(
                "install: {} exists and was not written by joinery install (or changed \
                 since); move it away or pass --force to replace it",
                path.display()
            )));
        }
        Ok(Some(true))
    }

    /// Writes `data` to `path` unless it is already there (see [`Installer::check_file`]).
    fn write_file(
        &mut self,
        path: &Path,
        data: &[u8],
        mode: u32,
        what: &str,
    ) -> Result<(), InstallError> {
        let real = under(&self.root, path);
        let sum = sha256_hex(data);
        let Some(exists) = self.check_file(path, data)? else {
            // Same bytes: nothing to write. It stays in the manifest only if we wrote it.
            if let Some(e) = self.old.get(path).cloned() {
                self.new.record(e);
            }
            self.say(&format!("{what} {} is already there", path.display()))?;
            return Ok(());
        };
        let verb = if exists { "replace" } else { "write" };
        if self.dry_run {
            self.say(&format!(
                "would {verb} {what} {} ({mode:04o})",
                path.display()
            ))?;
        } else {
            crate::fsutil::write_atomic(&real, data, mode)
                .map_err(|e| failed(format!("install: cannot write {}: {e}", real.display())))?;
            let done = if verb == "write" { "wrote" } else { "replaced" };
            self.say(&format!("{done} {what} {} ({mode:04o})", path.display()))?;
        }
        self.new.record(Entry {
            kind: Kind::File(sum),
            path: path.to_path_buf(),
        });
        Ok(())
    }

    /// The certificate pin, generating the pair in the data dir when none is configured.
    fn certificate(&mut self, cfg: &Config) -> Result<Option<String>, InstallError> {
        if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
            let loaded = tls::load(&under(&self.root, cert), &under(&self.root, key))
                .map_err(|e| usage(format!("install: {e}")))?;
            self.say(&format!("using the certificate {}", cert.display()))?;
            return Ok(Some(loaded.pin));
        }
        let (cert, key) = tls::pair_paths(&cfg.data_dir);
        if under(&self.root, &cert).exists() {
            if let Some(e) = self.old.get(&key).cloned() {
                self.new.record(e);
            }
            if let Some(e) = self.old.get(&cert).cloned() {
                self.new.record(e);
            }
            let loaded = tls::load(&under(&self.root, &cert), &under(&self.root, &key))
                .map_err(|e| failed(format!("install: {e}")))?;
            self.say(&format!("kept the existing certificate {}", cert.display()))?;
            return Ok(Some(loaded.pin));
        }
        if self.dry_run {
            self.say(&format!(
                "would generate a self-signed certificate {} and key {} (0600)",
                cert.display(),
                key.display()
            ))?;
            return Ok(None);
        }
        let real_dir = under(&self.root, &cfg.data_dir);
        let loaded = tls::load_or_generate(&real_dir, &certificate_names(cfg))
            .map_err(|e| failed(format!("install: {e}")))?;
        for p in [&key, &cert] {
            let bytes = fs::read(under(&self.root, p))
                .map_err(|e| failed(format!("install: cannot read back {}: {e}", p.display())))?;
            self.new.record(Entry {
                kind: Kind::Data(sha256_hex(&bytes)),
                path: p.clone(),
            });
        }
        self.say(&format!(
            "generated a self-signed certificate {} and key {} (0600)",
            cert.display(),
            key.display()
        ))?;
        Ok(Some(loaded.pin))
    }
}

/// Names for the generated certificate: what the daemon itself would put there, plus
/// this host's addresses (the daemon uses its node's InternalIP, which install cannot
/// ask Kubernetes for), so `curl --cacert tls.crt https://<ip>:30081` verifies too.
fn certificate_names(cfg: &Config) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    names.extend(cfg.node_name.clone().or(host));
    if let Some(ip) = cfg.bind_address.filter(|ip| !ip.is_unspecified()) {
        names.push(ip.to_string());
    }
    for ip in crate::sys::host_addresses() {
        if !ip.is_loopback() && !names.contains(&ip.to_string()) {
            names.push(ip.to_string());
        }
    }
    names
}

/// `joinery install`. Prints each step to `out`.
pub fn install(args: &InstallArgs, out: &mut dyn Write) -> Result<(), InstallError> {
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if args.root.is_some() && !root.is_dir() {
        return Err(usage(format!(
            "install: --root {}: no such directory",
            root.display()
        )));
    }
    if args.root.is_none() && !args.dry_run {
        must_be_root("install")?;
    }
    let plan = plan(args, &root)?;
    let manifest_real = under(&root, Path::new(MANIFEST_PATH));
    // What an earlier uninstall kept in the data dir comes first: its directories are
    // the parents of everything else.
    let kept_real = under(&root, &plan.cfg.data_dir.join(KEPT_MANIFEST));
    let mut old = read_manifest(&kept_real, "install")?.unwrap_or_default();
    for e in read_manifest(&manifest_real, "install")?
        .unwrap_or_default()
        .entries
    {
        old.record(e);
    }
    let unit_path = Path::new(UNIT_DIR).join(unit::UNIT_NAME);
    let unit_text = unit::render(&unit::UnitSpec {
        binary: &args.binary_path,
        serve_args: &plan.serve_args,
        data_dir: &plan.cfg.data_dir,
        socket: plan.cfg.socket.as_deref(),
        max_connections: plan.cfg.max_connections,
    })
    .map_err(|e| usage(format!("install: {e}")))?;
    // Read the binary before writing anything, so a failure leaves nothing behind.
    let exe = std::env::current_exe()
        .map_err(|e| failed(format!("install: cannot find the running binary: {e}")))?;
    let exe_bytes = fs::read(&exe)
        .map_err(|e| failed(format!("install: cannot read {}: {e}", exe.display())))?;

    let mut ins = Installer {
        root: root.clone(),
        dry_run: args.dry_run,
        force: args.force,
        old,
        new: Manifest::default(),
        out,
    };
    if args.root.is_some() {
        ins.say(&format!("installing under {}", root.display()))?;
    }
    for w in &plan.warnings {
        ins.say(&format!("warning: {w}"))?;
    }
    // Earlier installs' entries stay first: their directories are parents of ours.
    ins.new.entries = ins.old.entries.clone();
    let same_file =
        fs::canonicalize(&exe).ok() == fs::canonicalize(under(&root, &args.binary_path)).ok();
    // Refuse conflicts before anything is written.
    if !same_file {
        ins.check_file(&args.binary_path, &exe_bytes)?;
    }
    // A unit that changes leaves the running service on its old flags until restarted.
    let unit_changes = ins.check_file(&unit_path, unit_text.as_bytes())? == Some(true);
    let steps = |ins: &mut Installer<'_>| -> Result<Option<String>, InstallError> {
        ins.ensure_dir(Path::new("/etc/joinery"), 0o755, Kind::Dir)?;
        ins.ensure_dir(&plan.cfg.data_dir, 0o700, Kind::DataDir)?;
        let pin = ins.certificate(&plan.cfg)?;
        if let Some(dir) = args.binary_path.parent() {
            ins.ensure_dir(dir, 0o755, Kind::Dir)?;
        }
        if same_file {
            ins.say(&format!(
                "the binary is already {}",
                args.binary_path.display()
            ))?;
        } else {
            ins.write_file(&args.binary_path, &exe_bytes, 0o755, "binary")?;
        }
        ins.ensure_dir(Path::new(UNIT_DIR), 0o755, Kind::Dir)?;
        ins.write_file(&unit_path, unit_text.as_bytes(), 0o644, "unit")?;
        Ok(pin)
    };
    let pin = match steps(&mut ins) {
        Ok(pin) => pin,
        Err(e) => {
            // Record what was done so far, so `joinery uninstall` can take it back.
            if !args.dry_run && ins.new != ins.old {
                let _ =
                    crate::fsutil::write_atomic(&manifest_real, ins.new.render().as_bytes(), 0o644);
            }
            return Err(e);
        }
    };
    if args.dry_run {
        ins.say(&format!(
            "\n--- {} ---\n{unit_text}---",
            unit_path.display()
        ))?;
        ins.say(&format!("would write {MANIFEST_PATH}"))?;
        return Ok(());
    }
    let text = ins.new.render();
    crate::fsutil::write_atomic(&manifest_real, text.as_bytes(), 0o644).map_err(|e| {
        failed(format!(
            "install: cannot write {}: {e}",
            manifest_real.display()
        ))
    })?;
    ins.say(&format!(
        "wrote {MANIFEST_PATH} (what `joinery uninstall` removes)"
    ))?;
    // Its entries now live in the main manifest.
    let _ = fs::remove_file(&kept_real);
    let out = ins.out;

    let mut next = String::new();
    if args.root.is_none() {
        if let Err(e) = systemctl(&["daemon-reload"], out) {
            let _ = writeln!(out, "warning: {e}; run `systemctl daemon-reload` yourself");
        }
        if args.now {
            systemctl(&["enable", "--now", unit::UNIT_NAME], out)?;
            if unit_changes {
                systemctl(&["restart", unit::UNIT_NAME], out)?;
            }
        }
    }
    let _ = writeln!(next, "\nNext steps:");
    if args.root.is_some() {
        let _ = writeln!(
            next,
            "  systemctl daemon-reload        # on the system under {}",
            root.display()
        );
    }
    if !args.now {
        let _ = writeln!(next, "  systemctl enable --now joinery");
        if unit_changes {
            let _ = writeln!(
                next,
                "  systemctl restart joinery      # the unit changed: a running service \
                 keeps the old flags until restarted"
            );
        }
    }
    let _ = writeln!(
        next,
        "  journalctl -u joinery -n 20    # the \"listening\" line: address and pin"
    );
    let port = plan.cfg.api_port;
    if let Some(pin) = &pin {
        let _ = writeln!(
            next,
            "  curl -k --pinnedpubkey '{pin}' https://<controller-ip>:{port}/v1/health"
        );
        let _ = writeln!(next, "\nCertificate pin: {pin}");
    }
    write!(out, "{next}").map_err(|e| failed(format!("install: writing output: {e}")))
}
