//! sortd: a JSON API that sorts numbers exactly.
//!
//! - [`input`] and [`number`] and [`sort`]: the domain, pure functions;
//! - [`filters`], [`handlers`], [`error`], [`reply`]: the HTTP API;
//! - [`metrics`]: Prometheus metrics and the access log;
//! - [`budget`] and [`memory`]: the body bytes all requests in flight may
//!   hold together, and memory given back after a burst;
//! - [`config`] and [`startup`]: settings, binding and serving.

pub mod budget;
pub mod config;
pub mod error;
pub mod filters;
pub mod handlers;
pub mod input;
pub mod memory;
pub mod metrics;
pub mod number;
pub mod reply;
pub mod sort;
pub mod startup;

/// The version sortd reports (`--version`, every answer's `X-Sortd-Version`
/// header): the full Debian package version when built by `debian/build`
/// (which sets `SORTD_VERSION`), so every build can be told apart during a
/// rolling upgrade; the crate version otherwise.
pub const VERSION: &str = match option_env!("SORTD_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};
