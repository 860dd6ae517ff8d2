//! The `joinery` command line: parses the subcommand and hands off to the library.

use std::io::Read;
use std::process::ExitCode;

use joinery::config::{self, Config, Sources};
use joinery::{auth, daemon, install, version};

const USAGE: &str = "\
joinery: the node-management API of an air-gapped embedded Kubernetes cluster

USAGE:
    joinery serve [FLAGS]        serve the HTTPS API (flags below)
    joinery install [FLAGS]      set up the systemd service on this controller (install --help)
    joinery uninstall            remove what install wrote
    joinery hash-password        read a password on stdin, print its bcrypt hash
    joinery version              print the version
    joinery help                 print this help
";

fn main() -> ExitCode {
    let mut args = pico_args::Arguments::from_env();
    let sub = args.subcommand().ok().flatten();
    match sub.as_deref() {
        Some("serve") => serve(args),
        Some("hash-password") => hash_password(args),
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
