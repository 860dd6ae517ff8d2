//! The `joinery` binary: everything it does is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    joinery::run(std::env::args_os().skip(1).collect())
}
