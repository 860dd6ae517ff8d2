//! `joinery install` and `joinery uninstall`: set joinery up as a systemd service on an
//! Embedded Cluster / k0s controller, and take exactly that back out.
//!
//! Install validates the `serve` flags with the daemon's own [`Config`] parsing (plus
//! what a unit needs: absolute paths, none under the service's private /tmp, the files
//! they name present, the join inputs loadable), creates the data dir (0700), generates
//! the self-signed certificate when no `--tls-cert` is given, copies this binary to
//! `/usr/local/bin/joinery`, writes the unit ([`unit`]) and records everything it
//! created in a manifest ([`manifest`]) with checksums. Uninstall removes only manifest
//! entries whose content still matches and directories install created that are empty;
//! the data dir (certificate, key, caches) is kept unless `--purge`, because clients
//! pin the key and a re-install should not change it.
//!
//! `--root DIR` does all of it under another root (for tests and image builds) and never
//! runs systemctl; `--dry-run` prints what would happen and touches nothing.

pub mod manifest;
pub mod unit;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::config::{Config, KubeSource, Sources};
use crate::fsutil::under;
use crate::http::tls;
use manifest::{sha256_hex, Entry, Kind, Manifest, MANIFEST_PATH};

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

fn usage(message: impl Into<String>) -> InstallError {
    InstallError {
        usage: true,
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> InstallError {
    InstallError {
        usage: false,
        message: message.into(),
    }
}

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
    pub help: bool,
}

/// The command line of `joinery uninstall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UninstallArgs {
    pub root: Option<PathBuf>,
    /// Where to look for the data dir's manifest when the main one is gone.
    pub data_dir: PathBuf,
    pub dry_run: bool,
    pub purge: bool,
    pub help: bool,
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
        help: false,
    };
    let mut it = args.into_iter();
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
        match name {
            "--root" => out.root = Some(PathBuf::from(value("--root")?)),
            "--binary-path" => out.binary_path = PathBuf::from(value("--binary-path")?),
            "--dry-run" => out.dry_run = true,
            "--now" => out.now = true,
            "--force" => out.force = true,
            "-h" | "--help" => out.help = true,
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
        help: pa.contains(["-h", "--help"]),
        dry_run: pa.contains("--dry-run"),
        purge: pa.contains("--purge"),
        root: pa
            .opt_value_from_str::<_, PathBuf>("--root")
            .map_err(|e| usage(format!("uninstall: --root: {e}")))?,
        data_dir: pa
            .opt_value_from_str::<_, PathBuf>("--data-dir")
            .map_err(|e| usage(format!("uninstall: --data-dir: {e}")))?
            .unwrap_or_else(|| PathBuf::from("/var/lib/joinery")),
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

/// Whether the user gave `flag` (as `--flag V` or `--flag=V`).
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter()
        .any(|a| a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
}

/// The validated flags and what the unit runs with.
struct Plan {
    cfg: Config,
    /// Defaults made explicit, then the operator's flags.
    serve_args: Vec<String>,
    warnings: Vec<String>,
}

/// Validates the serve flags the way `joinery serve` will, plus what only matters under
/// systemd. `root` is where the named files are looked for.
fn plan(args: &InstallArgs, root: &Path) -> Result<Plan, InstallError> {
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
                "{} does not exist yet{}: the service starts once k0s has written it \
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

fn root_note(root: &Path) -> String {
    if root == Path::new("/") {
        String::new()
    } else {
        format!(" under {}", root.display())
    }
}

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
    for ip in host_addresses() {
        if !ip.is_loopback() && !names.contains(&ip.to_string()) {
            names.push(ip.to_string());
        }
    }
    names
}

/// The host's interface addresses (IPv4 and global IPv6); empty when unknown.
fn host_addresses() -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: the family says which sockaddr type the pointer refers to.
            let ip = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))))
                    }
                    libc::AF_INET6 => {
                        let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        let v6 = Ipv6Addr::from(sa.sin6_addr.s6_addr);
                        // Link-local addresses need a zone; clients cannot use them in a URL.
                        (v6.segments()[0] & 0xffc0 != 0xfe80).then_some(IpAddr::V6(v6))
                    }
                    _ => None,
                }
            };
            if let Some(ip) = ip.filter(|ip| !out.contains(ip)) {
                out.push(ip);
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    out
}

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
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(usage(format!(
            "{cmd}: run as root (e.g. sudo joinery {cmd} ...): it writes /usr/local/bin, \
             /etc and the data dir; --dry-run and --root DIR work as any user"
        )));
    }
    Ok(())
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
        let e = parse_install_args(os(&["--binary-path", "bin/joinery"])).unwrap_err();
        assert!(e.usage && e.message.contains("absolute"), "{e}");
        let e = parse_uninstall_args(os(&["--purgee"])).unwrap_err();
        assert!(e.usage && e.message.contains("--purgee"), "{e}");
    }

    #[test]
    fn serve_flags_are_checked_like_serve_does() {
        let root = tempfile::tempdir().unwrap();
        let check = |args: &[&str]| {
            let a = parse_install_args(os(args)).unwrap();
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

    #[test]
    fn rooted_paths_stay_under_the_root() {
        assert_eq!(
            under(Path::new("/r"), Path::new("/etc/x")),
            PathBuf::from("/r/etc/x")
        );
        assert_eq!(
            under(Path::new("/r"), Path::new("/../etc")),
            PathBuf::from("/r/etc")
        );
        assert_eq!(
            under(Path::new("/"), Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
    }
}
