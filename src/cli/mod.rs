//! The `joinery` command line: each subcommand's flags, help and exit code.
//!
//! Conventions every subcommand keeps: `--help`/`-h` prints that subcommand's help on
//! stdout and exits 0 before anything else is looked at; every flag is checked before
//! any file or network is touched; a message names what the user typed (the flag or
//! the `JOINERY_*` variable) and what would be accepted; help lines fit in 80 columns.
//! Exit codes are [`Exit`]: 2 for anything the command line or configuration must fix
//! (systemd does not restart on it), 1 for failures at run time, and the operator
//! commands' own codes for "not found", "refused" and "unreachable".

use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;

use crate::auth::apitoken::{self, ApiTokens, TokenError, TokenInfo};
use crate::config::{self, Config, ConfigError, KubeAccess, Sources};
use crate::{auth, daemon, install, version};

mod client;
mod ops;

/// How a `joinery` command ends. The numbers are documented in `joinery help` and
/// docs/; scripts rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// Failed at run time (retrying may help).
    Failed = 1,
    /// A usage or configuration error: fix the command line, variables or files.
    Usage = 2,
    /// The node (or other named thing) does not exist.
    NotFound = 3,
    /// The API refused: bad credentials, not allowed, or the request conflicts with
    /// the cluster's state (e.g. a removal that would cost etcd its quorum).
    Refused = 4,
    /// The API could not be reached (socket, connection, TLS or pin).
    Unreachable = 5,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

const USAGE: &str = "\
joinery: the node-management API of an air-gapped embedded Kubernetes cluster

Usage: joinery COMMAND [FLAGS]   (joinery COMMAND --help for each command)

The daemon and its set-up:
  serve          serve the HTTPS API and the local socket
  install        set up the systemd service on this controller
  uninstall      remove what install wrote
  hash-password  read a password on stdin, print its bcrypt hash
  token          create, list or revoke API tokens (through Kubernetes)
  key rotate     a new token signing key for every controller

Operating the cluster (through the local socket, or --api URL from anywhere):
  health         cluster health: etcd quorum, nodes ready
  nodes          list the nodes
  node NAME      one node in detail
  join-command   the steps that join a new host
  joins          the ledger of join commands
  drain NODE     evict a node's pods (--wait to follow it)
  resume NODE    make a drained node schedulable again
  remove NODE    remove a node from the cluster
  pin            the pin of the serving certificate (read from its file)

  version        print the version (also --version, -V)
  help           print this help (also --help, -h)

Exit codes: 0 done; 1 failed at run time; 2 usage or configuration error;
3 not found; 4 refused by the API; 5 API unreachable.
";

/// Runs `joinery ARGS...` (without the program name).
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let mut argv = argv.into_iter();
    let Some(cmd) = argv.next() else {
        eprint!("{USAGE}");
        return Exit::Usage.into();
    };
    let rest: Vec<OsString> = argv.collect();
    let cmd = cmd.to_string_lossy().into_owned();
    if let Some(help) = help_for(&cmd) {
        if wants_help(&rest) {
            print!("{help}");
            return Exit::Ok.into();
        }
    }
    let exit = match cmd.as_str() {
        "serve" => serve(rest),
        "install" => install_cmd(rest),
        "uninstall" => uninstall_cmd(rest),
        "hash-password" => hash_password(rest),
        "token" => token(rest),
        "key" => key(rest),
        op if ops::names().any(|n| n == op) => Ok(ops::run(op, rest)),
        "version" | "--version" | "-V" => no_args(&cmd, rest).map(|()| {
            println!(
                "joinery {} (commit {}, built {})",
                version::VERSION,
                version::COMMIT,
                version::BUILD_DATE
            );
            Exit::Ok
        }),
        "help" | "--help" | "-h" => no_args(&cmd, rest).map(|()| {
            print!("{USAGE}");
            Exit::Ok
        }),
        other => {
            let known = COMMANDS.iter().map(|(c, _)| *c).chain(ops::names());
            let hint = config::nearest(other, known)
                .map(|c| format!("; did you mean `joinery {c}`?"))
                .unwrap_or_default();
            Err(format!(
                "unknown command {other:?}{hint} (`joinery help` lists the commands)"
            ))
        }
    };
    match exit {
        Ok(code) => code.into(),
        Err(message) => {
            eprintln!("joinery: {message}");
            Exit::Usage.into()
        }
    }
}

/// Makes a command's help text.
type Help = fn() -> String;

/// Each command and its help text.
const COMMANDS: &[(&str, Help)] = &[
    ("serve", serve_help),
    ("install", || install::INSTALL_USAGE.to_string()),
    ("uninstall", || install::UNINSTALL_USAGE.to_string()),
    ("hash-password", || HASH_USAGE.to_string()),
    ("token", || TOKEN_USAGE.to_string()),
    ("key", || KEY_USAGE.to_string()),
    ("version", || {
        "Usage: joinery version\n\nPrints the version.\n".into()
    }),
    ("help", || USAGE.to_string()),
];

fn help_for(cmd: &str) -> Option<String> {
    COMMANDS
        .iter()
        .find(|(c, _)| *c == cmd)
        .map(|(_, f)| f())
        .or_else(|| ops::help(cmd))
}

/// Whether `--help` or `-h` is among the arguments (before a `--`).
pub fn wants_help(args: &[OsString]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--help" || a == "-h")
}

/// Refuses arguments to a command that takes none.
fn no_args(cmd: &str, rest: Vec<OsString>) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(a) => Err(format!(
            "{cmd} takes no arguments (got {:?})",
            a.to_string_lossy()
        )),
    }
}

/// Wraps `text` to `width` columns, each line starting with `indent` spaces.
pub fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            out += &format!("{:indent$}{line}\n", "");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out += &format!("{:indent$}{line}\n", "");
    }
    out
}

fn serve_help() -> String {
    let mut text = String::from(
        "\
Usage: joinery serve [FLAGS]

Serves the HTTPS API, and the API without TLS on a local Unix socket. Each flag
can also be set by its environment variable; the flag wins.

Flags:
",
    );
    for f in config::FLAGS {
        text += &format!("  {}  ({})\n", f.name, f.env);
        text += &wrap(&format!("{} Default: {}.", f.help, f.default), 6, 80);
    }
    text += "\nExit codes: 0 stopped by SIGTERM or SIGINT; 1 failed at run time; 2 a flag,\n\
             variable or file it names is wrong (systemd does not restart on 2).\n";
    text
}

fn serve(args: Vec<OsString>) -> Result<Exit, String> {
    let env = |k: &str| std::env::var(k).ok();
    let mut src = Sources {
        args: pico_args::Arguments::from_vec(args),
        env: &env,
    };
    let cfg = Config::from_sources(&mut src, || {
        config::default_kube_source(&env, &|p| std::path::Path::new(p).exists())
    })
    .and_then(|cfg| crate::preflight::check(&cfg, "/".as_ref(), true).map(|()| cfg))
    .map_err(|e| e.to_string())?;
    match daemon::serve(cfg) {
        Ok(()) => Ok(Exit::Ok),
        Err(e) => {
            eprintln!("joinery: {e}");
            Ok(Exit::Failed)
        }
    }
}

fn install_cmd(rest: Vec<OsString>) -> Result<Exit, String> {
    let mut out = std::io::stdout().lock();
    let result = install::parse_install_args(rest).and_then(|a| install::install(&a, &mut out));
    Ok(install_exit(result))
}

fn uninstall_cmd(rest: Vec<OsString>) -> Result<Exit, String> {
    let mut out = std::io::stdout().lock();
    let result = install::parse_uninstall_args(rest).and_then(|a| install::uninstall(&a, &mut out));
    Ok(install_exit(result))
}

fn install_exit(result: Result<(), install::InstallError>) -> Exit {
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("joinery {e}");
            if e.usage {
                Exit::Usage
            } else {
                Exit::Failed
            }
        }
    }
}

const HASH_USAGE: &str = "\
Usage: printf '%s' \"$PASSWORD\" | joinery hash-password

Reads a password on stdin (one line, at most 4 KiB) and prints its bcrypt hash,
for --password-hash-file. The password is never an argument: argv is visible to
every user of the host.
";

fn hash_password(args: Vec<OsString>) -> Result<Exit, String> {
    if let Some(extra) = args.first() {
        return Err(format!(
            "hash-password takes no arguments (got {:?}); it reads the password on stdin",
            extra.to_string_lossy()
        ));
    }
    let mut input = Vec::new();
    // One line is a password; more than 4 KiB is not.
    if let Err(e) = std::io::stdin().take(4096).read_to_end(&mut input) {
        eprintln!("joinery: reading stdin: {e}");
        return Ok(Exit::Failed);
    }
    let text = String::from_utf8_lossy(&input);
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(
            "no password on stdin; try: printf '%s' \"$PASSWORD\" | joinery hash-password".into(),
        );
    }
    match auth::password::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("joinery: {e}");
            Ok(Exit::Failed)
        }
    }
}

const TOKEN_USAGE: &str = "\
Usage:
  joinery token create --name NAME --scope read|admin[,..] [--expires-in TIME]
  joinery token list [-o table|json]
  joinery token revoke ID

API tokens (jnr_...), stored as Kubernetes Secrets that every controller reads.
create prints the token once, on stdout; keep it in a file and pass it with
--token-file. list shows id, name, scopes, times and the token's last four.

  --name NAME        what the token is for (shown by list)
  --scope SCOPE      read or admin; repeat it or separate with commas
  --expires-in TIME  seconds, or a number with s, m, h or d (e.g. 3600, 90m,
                     12h, 30d); 0 or absent: never
  -o, --output FMT   list as a table (default) or as JSON
  --kubeconfig FILE  (JOINERY_KUBECONFIG) as for serve
  --namespace NS     (JOINERY_NAMESPACE) as for serve; default kotsadm
  --kube-timeout S   (JOINERY_KUBE_TIMEOUT) as for serve; default 10

Exit codes: 0 done; 1 Kubernetes failed; 2 usage or configuration error;
3 no such token (revoke).
";

/// `--expires-in`: seconds, or a number with a unit (s, m, h, d).
fn parse_duration(flag: &str, raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&raw[..i], c),
        _ => (raw, 's'),
    };
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(secs) if mult > 0 && !digits.is_empty() => Ok(secs),
        _ => Err(format!(
            "{flag}: {raw:?} is not a duration: give seconds, or a number with s, m, h or d \
             (e.g. 3600, 90m, 12h, 30d); 0 means never"
        )),
    }
}

/// Takes a flag's value, refusing the flag twice.
pub fn value_once(
    args: &mut pico_args::Arguments,
    flag: &'static str,
) -> Result<Option<String>, String> {
    let mut take = || {
        args.opt_value_from_str::<_, String>(flag)
            .map_err(|_| format!("{flag} needs a value"))
    };
    let first = take()?;
    if let (Some(a), Some(b)) = (&first, take()?) {
        return Err(format!(
            "{flag} is given twice ({a:?} and {b:?}); give it once"
        ));
    }
    Ok(first)
}

/// `-o`/`--output FMT`, one of `allowed` (the first is the default).
pub fn output_format(
    args: &mut pico_args::Arguments,
    allowed: &[&'static str],
) -> Result<&'static str, String> {
    let short = value_once(args, "-o")?;
    let long = value_once(args, "--output")?;
    let raw = match (short, long) {
        (Some(_), Some(_)) => return Err("-o and --output are the same flag; give it once".into()),
        (a, b) => a.or(b),
    };
    match raw {
        None => Ok(allowed[0]),
        Some(v) => allowed.iter().find(|a| **a == v).copied().ok_or_else(|| {
            format!(
                "-o: {v:?} is not an output format; use {}",
                allowed.join(", ")
            )
        }),
    }
}

/// `joinery token create|list|revoke`: API tokens from the controller's shell, through
/// the same Kubernetes Secrets the daemons read.
fn token(args: Vec<OsString>) -> Result<Exit, String> {
    let mut args = pico_args::Arguments::from_vec(args);
    let action = args.subcommand().ok().flatten().unwrap_or_default();
    let cmd = format!("token {action}");
    let usage = |m: String| format!("{cmd}: {m}");
    let (mut name, mut scopes, mut expires_in, mut format) = (None, Vec::new(), 0, "table");
    let positional = match action.as_str() {
        "create" => {
            name = value_once(&mut args, "--name").map_err(usage)?;
            let raw: Vec<String> = args
                .values_from_str("--scope")
                .map_err(|_| usage("--scope needs a value".into()))?;
            scopes = raw
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::to_string)
                .collect();
            if let Some(raw) = value_once(&mut args, "--expires-in").map_err(usage)? {
                expires_in = parse_duration("--expires-in", &raw).map_err(usage)?;
            }
            0
        }
        "list" => {
            format = output_format(&mut args, &["table", "json"]).map_err(usage)?;
            0
        }
        "revoke" => 1,
        "" => {
            return Err(
                "token needs an action: create, list or revoke (`joinery token --help`)".into(),
            )
        }
        other => {
            return Err(format!(
            "token: unknown action {other:?}; use create, list or revoke (`joinery token --help`)"
        ))
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let mut src = Sources { args, env: &env };
    let (access, words) = KubeAccess::from_sources(&mut src, "token", positional, || {
        config::default_kube_source(&env, &|p| std::path::Path::new(p).exists())
    })
    .map_err(|e: ConfigError| usage(e.to_string()))?;
    let scopes = if action == "create" {
        let Some(n) = &name else {
            return Err(usage("--name NAME is required".into()));
        };
        name = Some(n.clone());
        apitoken::parse_scopes(&scopes).map_err(|e| usage(format!("--scope: {e}")))?
    } else {
        Vec::new()
    };
    if action == "revoke" && words.is_empty() {
        return Err(usage(
            "give the token's ID (see `joinery token list`)".into(),
        ));
    }
    let client = match daemon::kube_client(&access.kube, access.kube_timeout) {
        Ok(c) => c,
        // The kubeconfig named is wrong: that is configuration.
        Err(e) => return Err(usage(e.to_string())),
    };
    let tokens = ApiTokens::new(client, &access.namespace);
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!("joinery {cmd}: {e}");
        Ok(Exit::Failed)
    };
    match action.as_str() {
        "create" => {
            let name = name.unwrap_or_default();
            match tokens.create(&name, &scopes, expires_in, crate::time::now()) {
                Ok((token, info)) => {
                    eprintln!(
                        "created API token {} ({}, scopes {}, expires {}); it is shown only once:",
                        info.id,
                        info.name,
                        scope_list(&info),
                        info.expires.map_or("never".into(), crate::time::rfc3339)
                    );
                    println!("{token}");
                    Ok(Exit::Ok)
                }
                Err(TokenError::Invalid(m)) => Err(usage(m)),
                Err(e) => failed(&e),
            }
        }
        "list" => match tokens.list() {
            // The same JSON as `GET /v1/auth/tokens`.
            Ok(all) if format == "json" => {
                let items: Vec<_> = all.iter().map(crate::api::tokens::view).collect();
                println!("{}", serde_json::json!({ "tokens": items }));
                Ok(Exit::Ok)
            }
            Ok(all) => {
                let rows = all
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            scope_list(t),
                            crate::time::rfc3339(t.created),
                            t.expires.map_or("never".into(), crate::time::rfc3339),
                            t.last_four.clone(),
                            t.last_used.map_or("never".into(), crate::time::rfc3339),
                        ]
                    })
                    .collect::<Vec<_>>();
                print!(
                    "{}",
                    table(
                        &[
                            "ID",
                            "NAME",
                            "SCOPES",
                            "CREATED",
                            "EXPIRES",
                            "LAST",
                            "LAST USED"
                        ],
                        &rows
                    )
                );
                Ok(Exit::Ok)
            }
            Err(e) => failed(&e),
        },
        _ => match tokens.revoke(&words[0]) {
            Ok(info) => {
                eprintln!("revoked API token {} ({})", info.id, info.name);
                Ok(Exit::Ok)
            }
            Err(TokenError::NotFound) => {
                eprintln!(
                    "joinery {cmd}: no API token {:?} (see `joinery token list`)",
                    words[0]
                );
                Ok(Exit::NotFound)
            }
            Err(e) => failed(&e),
        },
    }
}

fn scope_list(t: &TokenInfo) -> String {
    t.scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

const KEY_USAGE: &str = "\
Usage: joinery key rotate [--revoke-old]

A planned rotation of the token signing key (docs/security.md): every controller
signs with the new key within 30 s. Tokens the old key signed keep verifying
until they expire (24 h), or are refused at once with --revoke-old.

  --revoke-old       refuse tokens signed with the old key from now on
  --kubeconfig FILE  (JOINERY_KUBECONFIG) as for serve
  --namespace NS     (JOINERY_NAMESPACE) as for serve; default kotsadm
  --kube-timeout S   (JOINERY_KUBE_TIMEOUT) as for serve; default 10

Exit codes: 0 done; 1 Kubernetes failed; 2 usage or configuration error.
";

/// `joinery key rotate`: a planned rotation of the token signing key (docs/security.md).
/// Every controller signs with the new key within 30 s; tokens the old key signed keep
/// verifying until they expire (24 h), then the old key is dropped.
fn key(args: Vec<OsString>) -> Result<Exit, String> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.subcommand().ok().flatten().as_deref() != Some("rotate") {
        return Err("key: the only key command is `joinery key rotate [--revoke-old]`".into());
    }
    let revoke_old = args.contains("--revoke-old");
    if revoke_old && args.contains("--revoke-old") {
        return Err("key rotate: --revoke-old is given twice; give it once".into());
    }
    let env = |k: &str| std::env::var(k).ok();
    let mut src = Sources { args, env: &env };
    let (access, _) = KubeAccess::from_sources(&mut src, "key", 0, || {
        config::default_kube_source(&env, &|p| std::path::Path::new(p).exists())
    })
    .map_err(|e| format!("key rotate: {e}"))?;
    let client = daemon::kube_client(&access.kube, access.kube_timeout)
        .map_err(|e| format!("key rotate: {e}"))?;
    let now = crate::time::now();
    match auth::store::rotate_signing_key(&client, &access.namespace, now, revoke_old) {
        Ok(r) => {
            let old = match r.old_accepted_until {
                Some(until) => format!(
                    "tokens signed with {} are accepted until {}",
                    r.old_kid,
                    crate::time::rfc3339(until)
                ),
                None => format!("tokens signed with {} are refused from now on", r.old_kid),
            };
            eprintln!(
                "rotated the token signing key: kid {} (was {}); every controller signs with \
                 it within 30 s, and {old}",
                r.new_kid, r.old_kid
            );
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("joinery key rotate: {e}");
            Ok(Exit::Failed)
        }
    }
}

/// A table as kubectl prints one: upper-case headers, columns padded to the widest
/// cell plus three spaces, no borders.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l += &format!("{cell:<w$}   ", w = widths[i]);
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_seconds() {
        for (raw, want) in [
            ("0", 0),
            ("3600", 3600),
            ("90m", 5400),
            ("12h", 43_200),
            ("30d", 2_592_000),
            ("5s", 5),
        ] {
            assert_eq!(parse_duration("--x", raw), Ok(want), "{raw}");
        }
        for raw in ["1w", "h", "", "-1", "1.5h", "99999999999999999999d"] {
            let e = parse_duration("--expires-in", raw).unwrap_err();
            assert!(
                e.contains("--expires-in") && e.contains("12h"),
                "{raw}: {e}"
            );
        }
    }

    #[test]
    fn wrap_keeps_to_the_width() {
        let text = "word ".repeat(50);
        for line in wrap(&text, 6, 80).lines() {
            assert!(
                line.len() <= 80 && line.starts_with("      word"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn tables_align_like_kubectl() {
        let t = table(
            &["NAME", "STATUS"],
            &[
                vec!["node-1".into(), "Ready".into()],
                vec!["n".into(), "NotReady".into()],
            ],
        );
        assert_eq!(t, "NAME     STATUS\nnode-1   Ready\nn        NotReady\n");
    }
}
