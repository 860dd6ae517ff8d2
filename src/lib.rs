//! joinery: the node-management API of an air-gapped, embedded Kubernetes cluster.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; the library is split so
//! fuzz targets and unit tests can reach the pure parts. See `ARCHITECTURE.md` for the map.

pub mod addr;
pub mod api;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod http;
pub mod install;
pub mod join;
pub mod kube;
pub mod labels;
pub mod lifecycle;
pub mod log;
pub mod metrics;
pub mod preflight;
pub mod random;
pub mod roles;
pub mod time;
pub mod version;
