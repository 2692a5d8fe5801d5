//! proxy-checker: turns public proxy lists into a small, trustworthy pool of working
//! proxies.
//!
//! Map of the crate (see ARCHITECTURE.md for the whole picture):
//! - [`proxy`]: the proxy model (protocol, host, port, credentials);
//! - [`guard`]: which target addresses may be dialed (SSRF guard);
//! - [`source`]: fetching and parsing proxy lists, per-source stats;
//! - [`check`]: the check engine (probes, retries, AIMD, judges, fd budget);
//! - [`round`]: one round — sources → dedupe → resolve → check → report;
//! - [`config`]: the JSON config, raw → validated;
//! - [`report`]: rendering verdicts as text, JSON or CSV.

pub mod api;
pub mod check;
pub mod config;
pub mod fuzzing;
pub mod guard;
pub mod keyfile;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod redact;
pub mod report;
pub mod round;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod source;
pub mod store;

/// The text of a panic payload (what `panic!` was given), for logs and `last_error`.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic payload")
}
