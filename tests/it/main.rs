//! Integration tests: the real `joinery` binary over real TLS, against the fake
//! Kubernetes API server, called with curl and raw TLS clients.

mod support;

mod api;
mod cli;
mod crash;
mod faults;
mod hostile;
mod join;
mod joins;
mod kit;
mod lifecycle;
mod ops;
mod sandbox;
mod startup;
mod throttle;
mod tokens;
mod watch;
