//! joinery: the node-management API of an air-gapped, embedded Kubernetes cluster.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library. Every module is private to
//! the crate, so the dead-code lint sees everything; the short list of re-exports below is
//! all that the binary, the fuzz targets (`fuzz/`) and the integration tests (`tests/it/`)
//! reach. See `ARCHITECTURE.md` for the map.
#![deny(unsafe_code)]

pub(crate) mod addr;
pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod bind;
pub(crate) mod cache;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod fsutil;
pub(crate) mod http;
pub(crate) mod install;
pub(crate) mod join;
pub(crate) mod kube;
pub(crate) mod labels;
pub(crate) mod lifecycle;
pub(crate) mod log;
pub(crate) mod metrics;
mod pause;
pub(crate) mod preflight;
pub(crate) mod random;
pub(crate) mod roles;
pub(crate) mod sys;
// The global allocator (its own `unsafe`, like `sys`): keeps freed TLS-record blocks.
pub(crate) mod alloc;
pub(crate) mod time;
pub(crate) mod version;

// The binary.
pub use cli::main as run;

// Fuzz targets: the parsers of untrusted input.
pub use http::parse::{parse_head, ChunkedDecoder};
pub use http::query::{Params, CLIP as QUERY_CLIP};
pub use http::Limits;
pub use join::command::{check_roles, roles_from_param};
pub use join::inputs::{parse_license, parse_roles, Roles};
pub use kube::parse_kubeconfig;

// Fuzz targets and integration tests: tokens signed and checked as the daemon does.
pub use auth::jwt::{sign as jwt_sign, verify as jwt_verify};
pub use auth::key::SigningKey;

// Integration tests: where the daemon listens for local callers by default.
pub use config::DEFAULT_SOCKET;
