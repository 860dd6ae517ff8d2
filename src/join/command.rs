//! The join command a remote host runs: which roles were asked for, and the three shell
//! steps (download, extract, `node join`).
//!
//! Every value put into a command is validated by the grammar of its kind and then
//! single-quoted, so no role name, slug, address or token can break out of it.

use std::net::IpAddr;

use super::inputs::Roles;
use crate::labels;

/// At most this many roles in one join.
pub const MAX_ROLES: usize = 16;

/// Checks a list of requested roles against the configured ones: non-empty, no
/// duplicates, every name known. The error is a sentence naming the problem and the
/// valid roles.
pub fn check_roles(requested: &[String], known: &Roles) -> Result<(), String> {
    let valid = known.names().join(", ");
    if requested.is_empty() {
        return Err(format!("give at least one role; valid roles: {valid}"));
    }
    if requested.len() > MAX_ROLES {
        return Err(format!("at most {MAX_ROLES} roles can be joined at once"));
    }
    for (i, r) in requested.iter().enumerate() {
        if labels::check_name(r).is_err() {
            return Err(format!(
                "{:?} is not a role name (letters, digits, '-', '_' and '.'); valid roles: {valid}",
                truncate(r)
            ));
        }
        if requested[..i].contains(r) {
            return Err(format!("role {r:?} is listed twice"));
        }
        if known.get(r).is_none() {
            return Err(format!("unknown role {r:?}; valid roles: {valid}"));
        }
    }
    Ok(())
}

/// Splits the decoded `roles` query parameter (`roles=a,b`; the shared query parser has
/// already refused a repeat). Only the grammar is checked here; [`check_roles`] checks
/// the names.
pub fn roles_from_param(value: Option<&str>) -> Result<Vec<String>, String> {
    let raw = value.ok_or("the roles query parameter is missing (roles=a,b)")?;
    if raw.is_empty() {
        return Err("the roles query parameter is empty (roles=a,b)".into());
    }
    Ok(raw.split(',').map(str::to_string).collect())
}

/// Quotes a string for POSIX `sh`: inside single quotes nothing is special but `'`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One step of a join.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub description: String,
    pub command: String,
}

/// Everything the three steps need.
pub struct CommandInputs<'a> {
    pub app_slug: &'a str,
    pub roles: &'a [String],
    pub address: IpAddr,
    pub port: u16,
    pub token: &'a str,
    /// `sha256//...` of the daemon's TLS key.
    pub pin: &'a str,
    /// The certificate is self-signed: curl needs `-k` beside the pin.
    pub self_signed: bool,
    /// UTC `YYYYMMDD-HHMMSS` of the request.
    pub stamp: &'a str,
}

/// The bundle's file name: `APP_SLUG-join-<roles joined by ->-<YYYYMMDD-HHMMSS>.tar.gz`.
pub fn bundle_file_name(app_slug: &str, roles: &[String], stamp: &str) -> String {
    format!("{app_slug}-join-{}-{stamp}.tar.gz", roles.join("-"))
}

/// The download step: one pasteable command for POSIX `sh` and curl >= 7.44.
///
/// - The token reaches curl on standard input as a config line written by the shell
///   builtin `printf`, so it is in no process's argv (`/proc/PID/cmdline` is readable
///   by every local user); curl's `-K -` reads it (`-H @-` would need curl 7.55).
/// - Quiet on success (`-sS`, no progress meter). On a refusal it prints the server's
///   sentence, which the server also sends in the `Joinery-Error` header because curl
///   does not keep the body of an error answered to a resumed request (and
///   `--fail-with-body` needs curl 7.76).
/// - A cut transfer resumes where it stopped (`-C -`, up to 5 attempts, 2-8 s apart);
///   the server lets the client that started a download resume it for an hour.
/// - It runs in a subshell, so `exit` ends the step, not the shell it was pasted into.
fn download_step(i: &CommandInputs<'_>, url: &str, file: &str) -> String {
    let insecure = if i.self_signed { " -k" } else { "" };
    format!(
        "(f={file}; n=0; while :; do p=0; [ -s \"$f\" ] && p=1; r=0; \
         s=$(printf 'header = \"Authorization: Bearer %s\"\\n' {token} | \
         curl -sS --proto =https{insecure} --pinnedpubkey {pin} -K - -C - -D \"$f.h\" \
         -o \"$f\" -w '%{{http_code}}' {url} 2>\"$f.e\") || r=$?; \
         case $s in 200|206|416) if [ $r = 0 ]; then rm -f \"$f.h\" \"$f.e\"; exit 0; fi;; \
         4??) m=$(sed -n 's/^Joinery-Error: //p' \"$f.h\" | tr -d '\\r'); \
         echo \"join bundle download refused: ${{m:-HTTP $s}}\" >&2; \
         rm -f \"$f\" \"$f.h\" \"$f.e\"; exit 1;; \
         5??) [ $p = 1 ] || rm -f \"$f\";; esac; \
         case $r in 51|58|60|77|83|90) cat \"$f.e\" >&2; rm -f \"$f.h\" \"$f.e\"; exit 1;; esac; \
         n=$((n+1)); if [ $n -ge 5 ]; then \
         m=$(sed -n 's/^Joinery-Error: //p' \"$f.h\" 2>/dev/null | tr -d '\\r'); \
         if [ -n \"$m\" ]; then echo \"join bundle download failed: $m\" >&2; else cat \"$f.e\" >&2; fi; \
         rm -f \"$f.h\" \"$f.e\"; exit 1; fi; sleep $((n*2)); done)",
        file = shell_quote(file),
        token = shell_quote(i.token),
        pin = shell_quote(i.pin),
        url = shell_quote(url),
    )
}

/// The three join steps of the seed document.
pub fn join_steps(i: &CommandInputs<'_>) -> Vec<Step> {
    let host = match i.address {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let url = format!(
        "https://{host}:{}/v1/join-bundle?roles={}",
        i.port,
        i.roles.join(",")
    );
    let file = bundle_file_name(i.app_slug, i.roles, i.stamp);
    let download = download_step(i, &url, &file);
    vec![
        Step {
            description: "Download the join bundle (resumes by itself if the link drops)".into(),
            command: download,
        },
        Step {
            description: "Extract the bundle".into(),
            command: format!("tar xzf {}", shell_quote(&file)),
        },
        Step {
            description: "Run the join command".into(),
            command: format!("sudo ./{} node join", shell_quote(i.app_slug)),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::inputs::parse_roles;

    fn roles() -> Roles {
        parse_roles("apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  roles:\n    custom:\n    - name: worker\n    - name: gpu\n").unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn role_checks() {
        let r = roles();
        assert!(check_roles(&s(&["controller"]), &r).is_ok());
        assert!(check_roles(&s(&["worker", "gpu"]), &r).is_ok());
        for (req, needle) in [
            (vec![], "at least one"),
            (
                vec!["nope"],
                "unknown role \"nope\"; valid roles: controller, worker, gpu",
            ),
            (vec!["gpu", "gpu"], "twice"),
            (vec!["a b"], "not a role name"),
            (vec![""], "not a role name"),
        ] {
            let err = check_roles(&s(&req), &r).unwrap_err();
            assert!(err.contains(needle), "{req:?}: {err}");
        }
    }

    #[test]
    fn roles_param() {
        assert_eq!(
            roles_from_param(Some("controller")).unwrap(),
            ["controller"]
        );
        assert_eq!(roles_from_param(Some("a,b")).unwrap(), ["a", "b"]);
        assert_eq!(roles_from_param(Some("a,,b")).unwrap(), ["a", "", "b"]);
        for v in [None, Some("")] {
            assert!(roles_from_param(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn quoting_survives_hostile_strings() {
        for hostile in ["a'b", "$(reboot)", "`id`", "x; rm -rf /", "'", "\n"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(hostile)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), hostile);
        }
    }

    #[test]
    fn steps_match_the_seed() {
        let roles = s(&["controller", "gpu"]);
        let steps = join_steps(&CommandInputs {
            app_slug: "my-app",
            roles: &roles,
            address: "10.0.0.11".parse().unwrap(),
            port: 30081,
            token: "eyJ.x.y",
            pin: "sha256//abc=",
            self_signed: true,
            stamp: "20260115-120000",
        });
        assert_eq!(steps.len(), 3);
        let d = &steps[0].command;
        assert!(
            d.starts_with("(f='my-app-join-controller-gpu-20260115-120000.tar.gz'; ")
                && d.ends_with("done)"),
            "{d}"
        );
        // The token goes to curl's stdin from printf, a builtin: never an argument.
        assert!(
            d.contains(
                r#"printf 'header = "Authorization: Bearer %s"\n' 'eyJ.x.y' | curl -sS --proto =https -k --pinnedpubkey 'sha256//abc=' -K - -C - "#
            ),
            "{d}"
        );
        assert!(d.contains("'https://10.0.0.11:30081/v1/join-bundle?roles=controller,gpu'"));
        assert!(!d.contains("-H ") && !d.contains("--fail"), "{d}");
        assert_eq!(
            steps[1].command,
            "tar xzf 'my-app-join-controller-gpu-20260115-120000.tar.gz'"
        );
        assert_eq!(steps[2].command, "sudo ./'my-app' node join");
    }
}
