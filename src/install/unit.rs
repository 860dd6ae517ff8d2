//! The systemd unit `joinery install` writes: rendered from the binary path and the
//! `serve` flags, quoted the way systemd splits `ExecStart=`.
//!
//! Pure text. `scripts/joinery.service` is this rendering for the default flags (a test
//! keeps them equal), so the example in the repository never drifts from what install
//! writes.

use std::path::Path;

/// What the unit is made from.
#[derive(Debug, Clone)]
pub struct UnitSpec<'a> {
    /// The installed binary (`/usr/local/bin/joinery`).
    pub binary: &'a Path,
    /// Everything after `serve` on the command line, as the operator gave it plus the
    /// defaults install makes explicit.
    pub serve_args: &'a [String],
    /// The daemon's `--data-dir`: where it keeps its certificate and caches.
    pub data_dir: &'a Path,
    /// The daemon's `--socket`, when on: the other path it writes.
    pub socket: Option<&'a Path>,
    /// `--max-connections`, to size `LimitNOFILE`.
    pub max_connections: usize,
}

/// The unit's file name under `/etc/systemd/system`.
pub const UNIT_NAME: &str = "joinery.service";

/// Renders the unit. Fails only when a value cannot be written into a unit file at all
/// (a control character such as a newline).
pub fn render(spec: &UnitSpec<'_>) -> Result<String, String> {
    let mut exec = vec![quote(&spec.binary.to_string_lossy())?, "serve".to_string()];
    for arg in spec.serve_args {
        exec.push(quote(arg)?);
    }
    let writable = writable_paths(spec)?;
    // One descriptor per connection, its Kubernetes call, files being streamed, and
    // headroom; never below the 4096 the daemon is tested with.
    let nofile = (spec.max_connections.saturating_mul(2).saturating_add(256)).max(4096);
    Ok(format!(
        "\
# Written by `joinery install`; `joinery uninstall` removes it. To change the flags, run
# `joinery install [serve flags...]` again rather than editing this file.
[Unit]
Description=joinery node-management API
After=network-online.target k0scontroller.service
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec}
Restart=on-failure
RestartSec=2
# Exit status 2 is a configuration error: restarting cannot fix it.
RestartPreventExitStatus=2
LimitNOFILE={nofile}
UMask=0077
NoNewPrivileges=yes
# The whole tree is read-only to the service but for these: its data dir and the
# directory of its socket (systemd creates them).
ProtectSystem=strict
{writable}# Read-only rather than hidden: operators keep license files under /root.
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
",
        exec = exec.join(" "),
    ))
}

/// The lines that let the daemon write its data dir and socket under
/// `ProtectSystem=strict`: `StateDirectory=` for a data dir in /var/lib and
/// `RuntimeDirectory=` for a socket in /run (systemd creates both, with the modes the
/// daemon would use), else `ReadWritePaths=`, which must exist when the unit starts.
fn writable_paths(spec: &UnitSpec<'_>) -> Result<String, String> {
    let mut out = String::new();
    match below(spec.data_dir, "/var/lib") {
        Some(rel) => {
            out += &format!("StateDirectory={}\nStateDirectoryMode=0700\n", quote(&rel)?);
        }
        None => {
            out += &format!(
                "ReadWritePaths={}\n",
                quote(&spec.data_dir.to_string_lossy())?
            )
        }
    }
    if let Some(dir) = spec.socket.and_then(Path::parent) {
        match below(dir, "/run") {
            Some(rel) => {
                out += &format!(
                    "RuntimeDirectory={}\nRuntimeDirectoryMode=0755\n",
                    quote(&rel)?
                );
            }
            None if dir.starts_with(spec.data_dir) => {}
            None => out += &format!("ReadWritePaths={}\n", quote(&dir.to_string_lossy())?),
        }
    }
    Ok(out)
}

/// `path` relative to `base` when it is strictly below it, without `..`.
fn below(path: &Path, base: &str) -> Option<String> {
    let rel = path.strip_prefix(base).ok()?;
    let plain = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && !rel.as_os_str().is_empty()).then(|| rel.to_string_lossy().into_owned())
}

/// One word of `ExecStart=` (or one path of `ReadWritePaths=`): bare when it holds only
/// characters systemd takes literally, else double-quoted with `\` and `"` escaped.
/// `%` (specifiers) and `$` (variable expansion) are doubled either way.
pub fn quote(word: &str) -> Result<String, String> {
    if word.chars().any(char::is_control) {
        return Err(format!(
            "{word:?} holds a control character, which a systemd unit cannot carry"
        ));
    }
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=,@+-".contains(&b));
    if plain {
        return Ok(word.to_string());
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_unit() -> String {
        let args: Vec<String> = [
            "--kubeconfig",
            "/var/lib/k0s/pki/admin.conf",
            "--data-dir",
            "/var/lib/joinery",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        render(&UnitSpec {
            binary: Path::new("/usr/local/bin/joinery"),
            serve_args: &args,
            data_dir: Path::new("/var/lib/joinery"),
            socket: Some(Path::new("/run/joinery/joinery.sock")),
            max_connections: 512,
        })
        .unwrap()
    }

    /// The example unit in the repository is exactly what install writes by default.
    #[test]
    fn example_unit_is_the_default_rendering() {
        let example = include_str!("../../scripts/joinery.service");
        assert_eq!(
            example,
            default_unit(),
            "scripts/joinery.service differs from the rendering: regenerate it with \
             `joinery install --root /tmp/x --dry-run` or update install/unit.rs"
        );
    }

    #[test]
    fn unit_has_the_hardening_and_restart_policy() {
        let u = default_unit();
        for line in [
            "ExecStart=/usr/local/bin/joinery serve --kubeconfig /var/lib/k0s/pki/admin.conf --data-dir /var/lib/joinery",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "StateDirectory=joinery",
            "StateDirectoryMode=0700",
            "RuntimeDirectory=joinery",
            "RuntimeDirectoryMode=0755",
            "LimitNOFILE=4096",
            "WantedBy=multi-user.target",
        ] {
            assert!(u.lines().any(|l| l == line), "missing {line:?} in\n{u}");
        }
    }

    #[test]
    fn nofile_grows_with_max_connections() {
        let args = vec![];
        let u = render(&UnitSpec {
            binary: Path::new("/usr/local/bin/joinery"),
            serve_args: &args,
            data_dir: Path::new("/d"),
            socket: None,
            max_connections: 10_000,
        })
        .unwrap();
        assert!(u.contains("\nLimitNOFILE=20256\n"), "{u}");
    }

    /// What the daemon writes is writable under `ProtectSystem=strict` wherever the
    /// flags put it.
    #[test]
    fn writable_paths_follow_the_data_dir_and_socket() {
        for (data_dir, socket, lines) in [
            (
                "/var/lib/j/x",
                Some("/run/a/b/s.sock"),
                "StateDirectory=j/x\nStateDirectoryMode=0700\nRuntimeDirectory=a/b\nRuntimeDirectoryMode=0755\n",
            ),
            ("/srv/j", None, "ReadWritePaths=/srv/j\n"),
            ("/srv/j", Some("/srv/j/s.sock"), "ReadWritePaths=/srv/j\n"),
            (
                "/var/lib/joinery",
                Some("/srv/sock/s"),
                "StateDirectory=joinery\nStateDirectoryMode=0700\nReadWritePaths=/srv/sock\n",
            ),
            ("/var/lib", None, "ReadWritePaths=/var/lib\n"),
        ] {
            let spec = UnitSpec {
                binary: Path::new("/b"),
                serve_args: &[],
                data_dir: Path::new(data_dir),
                socket: socket.map(Path::new),
                max_connections: 1,
            };
            assert_eq!(writable_paths(&spec).unwrap(), lines, "{data_dir} {socket:?}");
        }
    }

    #[test]
    fn quoting_follows_systemd_rules() {
        assert_eq!(quote("--api-port=9443").unwrap(), "--api-port=9443");
        assert_eq!(
            quote("/etc/my app/l.yaml").unwrap(),
            "\"/etc/my app/l.yaml\""
        );
        assert_eq!(quote("50%").unwrap(), "\"50%%\"");
        assert_eq!(quote("$HOME").unwrap(), "\"$$HOME\"");
        assert_eq!(quote("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("").unwrap(), "\"\"");
        assert!(quote("a\nb").unwrap_err().contains("control character"));
    }
}
