//! The `joinery` command line: parses the subcommand and hands off to the library.

use std::io::Read;
use std::process::ExitCode;

use joinery::auth::apitoken::{self, ApiTokens, TokenError, TokenInfo};
use joinery::config::{self, Config, KubeAccess, Sources};
use joinery::{auth, daemon, install, log, version};

const USAGE: &str = "\
joinery: the node-management API of an air-gapped embedded Kubernetes cluster

USAGE:
    joinery serve [FLAGS]        serve the HTTPS API (flags below)
    joinery install [FLAGS]      set up the systemd service on this controller (install --help)
    joinery uninstall            remove what install wrote
    joinery hash-password        read a password on stdin, print its bcrypt hash
    joinery token create --name NAME --scope read|admin [--expires-in SECONDS]
                                 make an API token (printed once, on stdout)
    joinery token list           list API tokens (id, name, scopes, times, last four)
    joinery token revoke ID      revoke an API token on every controller
                                 (token commands take --kubeconfig, --namespace and
                                 --kube-timeout like serve)
    joinery key rotate           new token signing key; the old one verifies for 24 h
                                 more (same Kubernetes flags as token)
    joinery version              print the version
    joinery help                 print this help
";

fn main() -> ExitCode {
    let mut args = pico_args::Arguments::from_env();
    let sub = args.subcommand().ok().flatten();
    match sub.as_deref() {
        Some("serve") => serve(args),
        Some("hash-password") => hash_password(args),
        Some("token") => token(args),
        Some("key") => key(args),
        Some(cmd @ ("install" | "uninstall")) => install_cmd(cmd, args),
        Some("version") | Some("--version") | Some("-V") => {
            println!(
                "joinery {} (commit {}, built {})",
                version::VERSION,
                version::COMMIT,
                version::BUILD_DATE
            );
            ExitCode::SUCCESS
        }
        Some("help") | Some("--help") | Some("-h") => {
            print!("{}", help());
            ExitCode::SUCCESS
        }
        None => {
            eprint!("{}", help());
            ExitCode::from(2)
        }
        Some(other) => {
            eprintln!("joinery: unknown command {other:?}; run `joinery help`");
            ExitCode::from(2)
        }
    }
}

fn help() -> String {
    let mut text = String::from(USAGE);
    text.push_str("\nFLAGS OF `serve` (each also read from its environment variable):\n");
    for f in config::FLAGS {
        text.push_str(&format!(
            "    {:<22} {:<28} {}\n{:<56}default: {}\n",
            f.name, f.env, f.help, "", f.default
        ));
    }
    text
}

fn serve(args: pico_args::Arguments) -> ExitCode {
    if args.clone().contains(["-h", "--help"]) {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    let env = |k: &str| std::env::var(k).ok();
    let mut src = Sources { args, env: &env };
    let cfg = Config::from_sources(&mut src, || {
        config::default_kube_source(&env, &|p| std::path::Path::new(p).exists())
    })
    .and_then(|cfg| src.finish().map(|_| cfg));
    let cfg = match cfg {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("joinery: {e}");
            return ExitCode::from(2);
        }
    };
    match daemon::serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("joinery: {e}");
            ExitCode::FAILURE
        }
    }
}

fn install_cmd(cmd: &str, args: pico_args::Arguments) -> ExitCode {
    let rest = args.finish();
    let mut out = std::io::stdout().lock();
    let result = if cmd == "install" {
        install::parse_install_args(rest).and_then(|a| {
            if a.help {
                print!("{}", install::INSTALL_USAGE);
                return Ok(());
            }
            install::install(&a, &mut out)
        })
    } else {
        install::parse_uninstall_args(rest).and_then(|a| {
            if a.help {
                print!("{}", install::INSTALL_USAGE);
                return Ok(());
            }
            install::uninstall(&a, &mut out)
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("joinery {e}");
            ExitCode::from(if e.usage { 2 } else { 1 })
        }
    }
}

fn hash_password(args: pico_args::Arguments) -> ExitCode {
    if let Some(extra) = args.finish().first() {
        eprintln!(
            "joinery: hash-password takes no arguments (got {:?}); it reads the password on stdin",
            extra.to_string_lossy()
        );
        return ExitCode::from(2);
    }
    let mut input = Vec::new();
    // One line is a password; more than 4 KiB is not.
    if let Err(e) = std::io::stdin().take(4096).read_to_end(&mut input) {
        eprintln!("joinery: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    let text = String::from_utf8_lossy(&input);
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!(
            "joinery: no password on stdin; try: printf '%s' \"$PASSWORD\" | joinery hash-password"
        );
        return ExitCode::from(2);
    }
    match auth::password::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("joinery: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `joinery token create|list|revoke`: API tokens from the controller's shell, through
/// the same Kubernetes Secrets the daemons read.
fn token(mut args: pico_args::Arguments) -> ExitCode {
    let usage = |msg: &str| {
        eprintln!("joinery token: {msg}; run `joinery help`");
        ExitCode::from(2)
    };
    let action = args.subcommand().ok().flatten();
    let (name, scopes, expires_in) = if action.as_deref() == Some("create") {
        let name: Option<String> = match args.opt_value_from_str("--name") {
            Ok(v) => v,
            Err(e) => return usage(&format!("--name: {e}")),
        };
        let scopes: Vec<String> = match args.values_from_str::<_, String>("--scope") {
            Ok(v) => v
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::to_string)
                .collect(),
            Err(e) => return usage(&format!("--scope: {e}")),
        };
        let expires_in: u64 = match args.opt_value_from_str("--expires-in") {
            Ok(v) => v.unwrap_or(0),
            Err(e) => return usage(&format!("--expires-in: {e} (seconds; 0 = never)")),
        };
        let Some(name) = name else {
            return usage("create needs --name NAME");
        };
        let scopes = match apitoken::parse_scopes(&scopes) {
            Ok(s) => s,
            Err(e) => return usage(&format!("--scope: {e}")),
        };
        (name, scopes, expires_in)
    } else {
        (String::new(), Vec::new(), 0)
    };
    let env = |k: &str| std::env::var(k).ok();
    let mut src = Sources { args, env: &env };
    let access = match KubeAccess::from_sources(&mut src, || {
        config::default_kube_source(&env, &|p| std::path::Path::new(p).exists())
    }) {
        Ok(a) => a,
        Err(e) => return usage(&e.to_string()),
    };
    let id: Option<String> = if action.as_deref() == Some("revoke") {
        match src.args.opt_free_from_str() {
            Ok(v) => v,
            Err(e) => return usage(&e.to_string()),
        }
    } else {
        None
    };
    if let Err(e) = src.finish() {
        return usage(&e.to_string());
    }
    let client = match daemon::kube_client(&access.kube, access.kube_timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("joinery: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tokens = ApiTokens::new(client, &access.namespace);
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!("joinery token: {e}");
        ExitCode::FAILURE
    };
    match action.as_deref() {
        Some("create") => match tokens.create(&name, &scopes, expires_in, joinery::api::now()) {
            Ok((token, info)) => {
                eprintln!(
                    "created API token {} ({}, scopes {}, expires {}); it is shown only once:",
                    info.id,
                    info.name,
                    scope_list(&info),
                    info.expires.map_or("never".into(), log::rfc3339)
                );
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(TokenError::Invalid(m)) => usage(&m),
            Err(e) => failed(&e),
        },
        Some("list") => match tokens.list() {
            Ok(all) => {
                println!(
                    "{:<16}  {:<20}  {:<10}  {:<20}  {:<20}  {:<4}  LAST USED",
                    "ID", "NAME", "SCOPES", "CREATED", "EXPIRES", "LAST"
                );
                for t in all {
                    println!(
                        "{:<16}  {:<20}  {:<10}  {:<20}  {:<20}  {:<4}  {}",
                        t.id,
                        t.name,
                        scope_list(&t),
                        log::rfc3339(t.created),
                        t.expires.map_or("never".into(), log::rfc3339),
                        t.last_four,
                        t.last_used.map_or("never".into(), log::rfc3339),
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => failed(&e),
        },
        Some("revoke") => {
            let Some(id) = id else {
                return usage("revoke needs the token's ID (see `joinery token list`)");
            };
            match tokens.revoke(&id) {
                Ok(info) => {
                    eprintln!("revoked API token {} ({})", info.id, info.name);
                    ExitCode::SUCCESS
                }
                Err(e) => failed(&e),
            }
        }
        _ => usage("use `joinery token create`, `joinery token list` or `joinery token revoke ID`"),
    }
}

fn scope_list(t: &TokenInfo) -> String {
    t.scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// `joinery key rotate`: a planned rotation of the token signing key (docs/security.md).
/// Every controller signs with the new key within 30 s; tokens the old key signed keep
/// verifying until they expire (24 h), then the old key is dropped.
fn key(mut args: pico_args::Arguments) -> ExitCode {
    let usage = |msg: &str| {
        eprintln!("joinery key: {msg}; run `joinery help`");
        ExitCode::from(2)
    };
    if args.subcommand().ok().flatten().as_deref() != Some("rotate") {
        return usage("the only key command is `joinery key rotate`");
    }
    let env = |k: &str| std::env::var(k).ok();
    let mut src = Sources { args, env: &env };
    let access = match KubeAccess::from_sources(&mut src, || {
        config::default_kube_source(&env, &|p| std::path::Path::new(p).exists())
    }) {
        Ok(a) => a,
        Err(e) => return usage(&e.to_string()),
    };
    if let Err(e) = src.finish() {
        return usage(&e.to_string());
    }
    let client = match daemon::kube_client(&access.kube, access.kube_timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("joinery: {e}");
            return ExitCode::FAILURE;
        }
    };
    match auth::store::rotate_signing_key(&client, &access.namespace, joinery::api::now()) {
        Ok(r) => {
            eprintln!(
                "rotated the token signing key: kid {} (was {}); every controller signs with \
                 it within 30 s, and tokens signed with {} are accepted until {}",
                r.new_kid,
                r.old_kid,
                r.old_kid,
                log::rfc3339(r.old_accepted_until)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("joinery key rotate: {e}");
            ExitCode::FAILURE
        }
    }
}
