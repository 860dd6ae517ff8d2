//! Injects the commit and build date that `GET /v1/version` reports.
//!
//! `JOINERY_COMMIT` / `JOINERY_BUILD_DATE` in the environment win (for packagers);
//! otherwise git and the clock are asked, and anything unknown is `unknown`.

use std::process::Command;

fn main() {
    let commit = std::env::var("JOINERY_COMMIT")
        .ok()
        .or_else(|| run("git", &["rev-parse", "--short=7", "HEAD"]));
    // SOURCE_DATE_EPOCH makes the date reproducible when a packager sets it.
    let date = std::env::var("JOINERY_BUILD_DATE").ok().or_else(|| {
        let mut args = vec!["-u".to_string(), "+%Y-%m-%d_%H:%M:%S".to_string()];
        if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
            args.push(format!("--date=@{epoch}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("date", &args)
    });
    println!(
        "cargo:rustc-env=JOINERY_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=JOINERY_BUILD_DATE={}",
        date.unwrap_or_else(|| "unknown".into())
    );
    // A new commit changes HEAD or the ref it points to.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-env-changed=JOINERY_COMMIT");
    println!("cargo:rerun-if-env-changed=JOINERY_BUILD_DATE");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
