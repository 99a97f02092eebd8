//! sortd: a JSON API that sorts numbers exactly.
//!
//! - [`input`] and [`number`] and [`sort`]: the domain, pure functions;
//! - [`filters`], [`handlers`], [`error`], [`reply`]: the HTTP API;
//! - [`metrics`]: Prometheus metrics and the access log;
//! - [`config`] and [`startup`]: settings, binding and serving.

pub mod config;
pub mod error;
pub mod filters;
pub mod handlers;
pub mod input;
pub mod metrics;
pub mod number;
pub mod reply;
pub mod sort;
pub mod startup;
