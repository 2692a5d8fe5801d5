//! The check engine: candidates in, honest verdicts out.
//!
//! - [`probe`] speaks each protocol to one proxy (the hot path), [`http1`] reads answers.
//! - [`engine`] runs probes concurrently under the [`limit`] (AIMD over a semaphore),
//!   retries transient failures with backoff, requeues local failures, and holds
//!   judge-shaped failures until a direct [`judge`] probe clears the judge.
//! - [`fdbudget`] raises `RLIMIT_NOFILE` and turns it into the concurrency budget.
//!
//! The engine knows nothing of configuration files, JSON, the API or storage.
//!
//! The probes and their readers are plain functions that return an `async move` block
//! where an `async fn` would do: an `async fn` keeps its arguments twice in its future
//! (rust-lang/rust#62958), and these futures are what 19,000 checks in flight hold
//! (`engine::tests::check_task_stays_small`).
#![allow(clippy::manual_async_fn)]

pub mod deadline;
pub mod echo;
pub mod engine;
pub mod fdbudget;
pub mod http1;
pub mod judge;
pub mod limit;
pub mod probe;
pub mod reason;
pub mod stamp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use engine::{Engine, EngineError, RunError, RunStats};
pub use reason::Reason;

use crate::proxy::Proxy;

/// How much of a proxy is exercised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Alive = the TCP connect completes.
    ConnectOnly,
    /// Alive = the judge's answer comes back through the proxy, validated.
    FullHttp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ConnectOnly => "connect-only",
            Mode::FullHttp => "full-http",
        }
    }
}

/// How the judge's answer is validated beyond its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validation {
    /// The body must contain the fresh nonce added to the judge URL (echo judges).
    Nonce,
    /// The body must contain this text.
    Contains(String),
    /// Status only.
    None,
}

/// Everything the engine needs for a run. Built from config; no I/O.
#[derive(Clone, Debug)]
pub struct CheckSettings {
    pub mode: Mode,
    /// Judges; checks are spread over the healthy ones. Unused in `connect-only`.
    pub judges: Vec<url::Url>,
    pub expect_status: u16,
    pub validation: Validation,
    pub connect_timeout: Duration,
    /// Deadline of one attempt at a proxy: connect, handshakes, both HTTP capabilities.
    pub timeout: Duration,
    /// Extra attempts after a transient failure.
    pub retries: u32,
    /// First retry delay; doubles per attempt, with up to 50% jitter.
    pub backoff: Duration,
    /// Checks in flight at most (already clamped to the fd budget).
    pub concurrency: usize,
    /// Let local failures lower the concurrency (AIMD).
    pub adaptive: bool,
    /// Extra PEM roots for HTTPS judges, on top of the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// When a proxy answers in another protocol's bytes than its list said, check it
    /// again as that protocol in the same attempt (and report it relabelled).
    pub detect_protocol: bool,
}

/// One proxy to check, with the address to dial (resolved once per round).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub proxy: Proxy,
    pub addr: SocketAddr,
    /// Index of the source that listed it first.
    pub source: u16,
    /// What the check exercises.
    pub scope: Scope,
}

/// How much of an HTTP proxy one check exercises (SOCKS proxies have one test anyway).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every capability: forward and tunnel (a round's check).
    #[default]
    Full,
    /// One exchange, the forward test (a recheck of a proxy that only forwards).
    Forward,
    /// One exchange, the tunnel test (a recheck of a proxy that tunnels).
    Tunnel,
}

/// How much a proxy tells the sites it fetches about its client, from the judge's echo.
/// Ordered from least to most anonymous; `Unknown` when the judge echoes no headers (or
/// in connect-only mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Anonymity {
    /// This machine's own address appears in what the judge saw.
    Transparent,
    /// No own address, but headers that say a proxy is in between (`Via`, `X-Forwarded-For`…).
    Anonymous,
    /// Neither.
    Elite,
    #[default]
    Unknown,
}

impl Anonymity {
    pub const ALL: [Anonymity; 4] = [Self::Transparent, Self::Anonymous, Self::Elite, Self::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transparent => "transparent",
            Self::Anonymous => "anonymous",
            Self::Elite => "elite",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The less anonymous of two findings (what a client must assume); `Unknown` only
    /// when both are.
    pub fn worst(self, other: Self) -> Self {
        match (self, other) {
            (Self::Unknown, x) | (x, Self::Unknown) => x,
            (a, b) => a.min(b),
        }
    }
}

/// What the judge's echo said about one successful probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Echo {
    pub anonymity: Anonymity,
    /// The address the judge saw the request come from (the proxy's exit).
    pub exit_ip: Option<std::net::IpAddr>,
}

/// What a live proxy can do, and how fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alive {
    /// Start of TCP connect to end of the judge's response head (best capability).
    pub latency: Duration,
    pub connect: Duration,
    /// Forwards absolute-URI requests (HTTP proxies).
    pub forward: bool,
    /// Tunnels (CONNECT or SOCKS): usable for HTTPS.
    pub tunnel: bool,
    /// The least anonymous of what its successful probes showed.
    pub anonymity: Anonymity,
    /// The address the judge saw (may differ from the proxy's host: chained or
    /// multi-homed proxies).
    pub exit_ip: Option<std::net::IpAddr>,
}

/// The verdict on one candidate.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub candidate: Candidate,
    pub outcome: Result<Alive, Reason>,
    /// Attempts made (1 + retries used).
    pub attempts: u8,
    /// The protocol the list gave, when the proxy turned out to speak another
    /// (`candidate.proxy.protocol` is the one it speaks).
    pub relabelled_from: Option<crate::proxy::Protocol>,
}

impl Verdict {
    pub fn is_alive(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// Live counters of a run, shared with progress bars and `/stat`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Candidates known so far (set by the caller).
    pub total: AtomicU64,
    pub checked: AtomicU64,
    pub alive: AtomicU64,
    pub in_flight: AtomicU64,
    /// Probes (connections to a proxy) made; an HTTP proxy takes up to two per attempt.
    pub probes: AtomicU64,
    pub retries: AtomicU64,
    /// Checks put back because we, not the proxy, failed.
    pub local_requeues: AtomicU64,
    /// Checks that panicked (what they had not finished failed with `internal_error`).
    pub internal_errors: AtomicU64,
    /// Hostname lookups finished (set by the round, before the engine sees the names).
    pub lookups: AtomicU64,
    /// The engine's current concurrency limit.
    pub limit: AtomicUsize,
    dead: [AtomicU64; Reason::ALL.len()],
}

impl Progress {
    pub fn dead_by_reason(&self) -> Vec<(Reason, u64)> {
        Reason::ALL
            .iter()
            .zip(&self.dead)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn record(&self, v: &Verdict) {
        self.checked.fetch_add(1, Ordering::Relaxed);
        match v.outcome {
            Ok(_) => self.alive.fetch_add(1, Ordering::Relaxed),
            Err(r) => self.dead[Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)].fetch_add(1, Ordering::Relaxed),
        };
    }
}
