//! What `GET /v1/version` and `joinery version` report, fixed at build time by `build.rs`.

/// The crate version from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Short git commit of the build, or `unknown` outside a git checkout.
pub const COMMIT: &str = env!("JOINERY_COMMIT");
/// UTC build time as `YYYY-MM-DD_HH:MM:SS`, or `unknown`.
pub const BUILD_DATE: &str = env!("JOINERY_BUILD_DATE");
