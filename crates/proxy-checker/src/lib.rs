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

// The library never prints (the binaries and logs do), never unwraps outside tests (an
// `expect` says why it cannot fail), and clones only what it must.
#![deny(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::redundant_clone)]

pub mod api;
pub mod check;
pub mod config;
pub mod fuzzing;
pub mod guard;
pub mod history;
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

/// An error shown with its causes, `a: b: c`, each said once: layers that repeat their
/// cause's text (hyper, reqwest) do not make it appear twice. Errors keep their causes as
/// `source()`; logs, `/stat` and exit messages show them through this.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        let mut cur = self.0.source();
        while let Some(c) = cur {
            let text = c.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cur = c.source();
        }
        f.write_str(&shown)
    }
}

/// [`Chain`] as a `String`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    Chain(e).to_string()
}

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
