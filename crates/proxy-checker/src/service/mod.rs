//! The long-running service: the served snapshot, the round scheduler, and the state the
//! API reads (`/stat`, `/ready`, `POST /reload`).
//!
//! Rounds run one at a time: fetch → check → build a snapshot off to the side → swap it in
//! whole → persist it. A failed round (no usable source, judge down, cancelled, a panic)
//! keeps the old snapshot, returns the phase to idle, says why in `last_error`, and the
//! next round is scheduled as usual. A scheduler that stops, or a round that makes no
//! progress for [`Service::stall_limit`], is a [`Fault`]: `/health` and `/ready` answer
//! 503 naming it and the systemd watchdog is no longer fed. The API never waits on a
//! round: it reads `ArcSwap`s and atomics.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod recheck;

pub use recheck::{PassSummary, REPORT_MIN_GAP, ReportOutcome};

use crate::check::Progress;
use crate::config::Config;
use crate::history::{History, Key, Observation, now_ms};
use crate::metrics::Metrics;
use crate::round::{RoundContext, RoundError};
use crate::snapshot::{Snapshot, SnapshotData, SourceSummary, unix};
use crate::source::SourceStats;
use crate::store::Store;

/// Where the scheduler is.
#[derive(Clone)]
pub enum Phase {
    Idle,
    /// `POST /reload` asked for this round; it starts as soon as the scheduler wakes.
    Requested(u64),
    Running {
        id: u64,
        started: SystemTime,
        progress: Arc<Progress>,
        /// Cancels this round alone (a stalled round is ended this way).
        cancel: CancellationToken,
    },
}

/// Why the service is unhealthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The round scheduler ended (a panic outside any round, or a bug): no round will
    /// ever run again in this process.
    SchedulerStopped(String),
    /// The running round's counters did not move for longer than the stall limit. The
    /// round is cancelled; the fault clears when the scheduler moves on.
    RoundStalled { round_id: u64, secs: u64 },
    /// Between rounds, the next round is overdue by more than the stall limit (or none was
    /// scheduled after a round ended): the scheduler is stuck.
    SchedulerLate { secs: u64 },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::SchedulerStopped(why) => write!(f, "the round scheduler stopped: {why}"),
            Fault::RoundStalled { round_id, secs } => {
                write!(f, "round {round_id} made no progress for {secs} s and was cancelled")
            }
            Fault::SchedulerLate { secs } => write!(f, "no round has started for {secs} s past its time"),
        }
    }
}

impl Fault {
    /// What the unauthenticated probes (`/health`, `/ready`) say: the kind of fault, with
    /// no error text (that may name sources or hosts; `/stat` and the logs have it).
    pub fn summary(&self) -> String {
        match self {
            Fault::SchedulerStopped(_) => "the round scheduler stopped (see the logs or /stat)".to_string(),
            other => other.to_string(),
        }
    }
}

/// A round that failed, as `/stat.last_failed_round` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FailedRound {
    pub round_id: u64,
    pub started_at: f64,
    pub finished_at: f64,
    pub error: String,
    /// Per source, when the round got as far as fetching them.
    pub sources: Vec<SourceSummary>,
}

/// How the last round (successful or not) ended.
#[derive(Clone, Debug)]
pub struct RoundEnd {
    pub round_id: u64,
    pub finished_at: SystemTime,
    /// `ok`, `failed` or `cancelled` (the `rounds_total` label).
    pub result: &'static str,
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical
/// section here assigns whole values, or builds its new state aside and installs it at
/// the end, as a recheck pass's `apply` does).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared service state. Cheap to read from any thread.
pub struct Service {
    pub config: ArcSwap<Config>,
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn Store>,
    /// Checks the fd budget allows; configured concurrency is clamped to it.
    pub fd_budget: usize,
    phase: Mutex<Phase>,
    last_id: AtomicU64,
    /// When `POST /reload` last started a round (for `api.reload_min_interval_secs`).
    last_manual: Mutex<Option<Instant>>,
    wake: Notify,
    ready: AtomicBool,
    last_error: Mutex<Option<String>>,
    next_round_at: Mutex<Option<SystemTime>>,
    last_round_end: Mutex<Option<RoundEnd>>,
    fault: Mutex<Option<Fault>>,
    /// (round id, progress counters' sum, when they last moved), for stall detection.
    progress_seen: Mutex<(u64, u64, Instant)>,
    /// Why the running round was cancelled by the stall detector, for its `last_error`.
    stall_note: Mutex<Option<String>>,
    last_failed: Mutex<Option<FailedRound>>,
    /// Every proxy's track record: rounds and rechecks write it, the snapshot builder,
    /// `/proxy` and `/report` read it. Short critical sections only.
    pub history: Arc<Mutex<History>>,
    /// Proxies a failed recheck pulled out of the served pool. Held while a new snapshot
    /// is built and swapped in: rounds and recheck passes swap one at a time.
    pool: Mutex<recheck::Pool>,
    reports: Mutex<recheck::Reports>,
    /// Wakes the recheck loop (a report came in).
    recheck_wake: Notify,
    last_pass: Mutex<Option<PassSummary>>,
    history_saved: Mutex<Option<Instant>>,
    /// One snapshot write at a time (see [`Service::persist`]); one history write.
    persisting: tokio::sync::Mutex<()>,
    persisting_history: tokio::sync::Mutex<()>,
}

/// What `POST /reload` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    Started(u64),
    AlreadyRunning(u64),
    /// The last manual round started less than `api.reload_min_interval_secs` ago: retry
    /// after this long.
    TooSoon(Duration),
}

impl Service {
    /// Opens the store and serves its last snapshot at once (marked stale) if it has one.
    pub async fn start(config: Config, store: Arc<dyn Store>, fd_budget: usize) -> Arc<Self> {
        let loaded = match store.load().await {
            Ok(Some(data)) => {
                tracing::info!(
                    proxies = data.proxies.len(),
                    round_id = data.round.round_id,
                    store = store.kind(),
                    "serving the persisted snapshot until the first round finishes"
                );
                Some(data)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %crate::Chain(&e), "could not load the persisted snapshot; starting empty");
                None
            }
        };
        let mut history = History::new(config.history);
        match store.load_history().await {
            Ok(rows) => {
                let (n, bad) = (rows.len(), history.load(rows));
                if n > 0 {
                    tracing::info!(records = n - bad, unreadable = bad, store = store.kind(), "history loaded");
                }
            }
            Err(e) => tracing::warn!(error = %crate::Chain(&e), "could not load the history; starting without"),
        }
        let ready = loaded.is_some();
        let last_id = loaded.as_ref().map_or(0, |d| d.round.round_id);
        let snapshot = match loaded {
            Some(mut d) => {
                annotate(&mut d.proxies, &history);
                Snapshot::new(d, true)
            }
            None => Snapshot::empty(),
        };
        let metrics = Arc::new(Metrics::new());
        metrics.alive_proxies.set(snapshot.len() as i64);
        metrics.last_round_timestamp_seconds.set(snapshot.data.round.finished_at);
        metrics.round_interval_seconds.set(config.interval.as_secs_f64());
        Arc::new(Self {
            config: ArcSwap::from_pointee(config),
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            store,
            fd_budget,
            phase: Mutex::new(Phase::Idle),
            last_id: AtomicU64::new(last_id),
            last_manual: Mutex::new(None),
            wake: Notify::new(),
            ready: AtomicBool::new(ready),
            last_error: Mutex::new(None),
            next_round_at: Mutex::new(None),
            last_round_end: Mutex::new(None),
            fault: Mutex::new(None),
            progress_seen: Mutex::new((0, 0, Instant::now())),
            stall_note: Mutex::new(None),
            last_failed: Mutex::new(None),
            history: Arc::new(Mutex::new(history)),
            pool: Mutex::new(recheck::Pool::default()),
            reports: Mutex::new(recheck::Reports::default()),
            recheck_wake: Notify::new(),
            last_pass: Mutex::new(None),
            history_saved: Mutex::new(None),
            persisting: tokio::sync::Mutex::new(()),
            persisting_history: tokio::sync::Mutex::new(()),
        })
    }

    /// Why the service is unhealthy, if it is.
    pub fn fault(&self) -> Option<Fault> {
        lock(&self.fault).clone()
    }

    /// Records that the scheduler ended. Called by its supervisor (see `server`).
    pub fn scheduler_stopped(&self, why: String) {
        tracing::error!(reason = %why, "the round scheduler stopped: /health now answers 503 and the watchdog is no longer fed");
        self.metrics.healthy.set(0);
        *lock(&self.fault) = Some(Fault::SchedulerStopped(why));
    }

    /// How long a round may go without any counter moving before it counts as stalled:
    /// long enough for every source's attempts (hostname lookups move a counter too), the
    /// longest retry backoff and a judge outage; never under 10 min.
    pub fn stall_limit(&self) -> Duration {
        let c = self.config.load();
        let attempts = c.fetch.retries.saturating_add(1);
        let sources = c
            .fetch
            .timeout
            .saturating_mul(attempts)
            .saturating_add(c.fetch.backoff.saturating_mul(1 << attempts.min(10)));
        let s = &c.checker.settings;
        let backoff = s.backoff.saturating_mul(1 << s.retries.min(16)).mul_f64(1.5);
        let checks = s.timeout.saturating_mul(20).saturating_add(backoff);
        sources.saturating_mul(2).saturating_add(checks).max(Duration::from_secs(600))
    }

    /// Looks at the scheduler once (every second, from the server): a running round whose
    /// counters (candidates queued, names looked up, probes, verdicts) stayed still for
    /// longer than `limit` is cancelled and is a fault until the scheduler moves on; so is
    /// a next round overdue by more than `limit`.
    pub fn watch_progress(&self, limit: Duration) {
        let now = Instant::now();
        let phase = self.phase();
        let key = match &phase {
            Phase::Running { id, progress: p, .. } => {
                let sum = [&p.total, &p.lookups, &p.probes, &p.checked]
                    .iter()
                    .fold(0u64, |a, c| a.wrapping_add(c.load(Ordering::Relaxed)));
                (*id, sum)
            }
            _ => (0, 0),
        };
        let mut seen = lock(&self.progress_seen);
        if (seen.0, seen.1) != key {
            *seen = (key.0, key.1, now);
        }
        let still = now.saturating_duration_since(seen.2);
        drop(seen);
        let stuck = match phase {
            _ if still <= limit => None,
            Phase::Running { id, cancel, .. } => {
                let fault = Fault::RoundStalled { round_id: id, secs: still.as_secs() };
                if !cancel.is_cancelled() {
                    *lock(&self.stall_note) = Some(fault.to_string());
                    cancel.cancel();
                }
                Some(fault)
            }
            Phase::Idle | Phase::Requested(_) => {
                let due = self.next_round_at().unwrap_or(SystemTime::UNIX_EPOCH);
                let late = SystemTime::now().duration_since(due).unwrap_or_default();
                (late > limit).then(|| Fault::SchedulerLate { secs: late.min(still).as_secs() })
            }
        };
        let mut fault = lock(&self.fault);
        if matches!(*fault, Some(Fault::SchedulerStopped(_))) {
            return;
        }
        match (&*fault, stuck) {
            (None, Some(new)) => {
                tracing::error!(fault = %new, "the scheduler is stuck: /health answers 503");
                self.metrics.healthy.set(0);
                *fault = Some(new);
            }
            (Some(_), Some(new)) => *fault = Some(new),
            (Some(old), None) => {
                tracing::info!(fault = %old, "the scheduler moves again");
                self.metrics.healthy.set(1);
                *fault = None;
            }
            (None, None) => {}
        }
    }

    /// How the last round ended (successful or not).
    pub fn last_round_end(&self) -> Option<RoundEnd> {
        lock(&self.last_round_end).clone()
    }

    /// A snapshot (loaded or fresh) is being served.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn phase(&self) -> Phase {
        lock(&self.phase).clone()
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    pub fn next_round_at(&self) -> Option<SystemTime> {
        *lock(&self.next_round_at)
    }

    /// `POST /reload`: start a round now unless one is running or already requested, or
    /// the last manual round started less than `api.reload_min_interval_secs` ago.
    pub fn request_round(&self) -> ReloadOutcome {
        let min_gap = self.config.load().api.reload_min_interval;
        let mut phase = lock(&self.phase);
        match &*phase {
            Phase::Running { id, .. } | Phase::Requested(id) => ReloadOutcome::AlreadyRunning(*id),
            Phase::Idle => {
                let mut last = lock(&self.last_manual);
                if let Some(wait) = last.and_then(|t| min_gap.checked_sub(t.elapsed())).filter(|w| !w.is_zero()) {
                    return ReloadOutcome::TooSoon(wait);
                }
                *last = Some(Instant::now());
                drop(last);
                let id = self.last_id.load(Ordering::Acquire) + 1;
                *phase = Phase::Requested(id);
                drop(phase);
                self.wake.notify_one();
                ReloadOutcome::Started(id)
            }
        }
    }

    /// Installs a new validated config. Returns the settings that need a restart.
    pub fn apply_config(&self, new: Config) -> Vec<&'static str> {
        let old = self.config.load();
        let mut restart = Vec::new();
        if old.api.listen != new.api.listen {
            restart.push("api.listen");
        }
        if old.storage.kind != new.storage.kind
            || old.storage.path != new.storage.path
            || old.storage.redis_url != new.storage.redis_url
        {
            restart.push("storage");
        }
        lock(&self.history).set_limits(new.history);
        self.config.store(Arc::new(new));
        // The intervals may have changed: let the scheduler and the rechecks recompute
        // their waits.
        self.wake.notify_one();
        self.recheck_wake.notify_one();
        restart
    }

    /// Runs rounds until `cancel`: the first at once, then every `aggregation.interval_secs`
    /// after the previous one ends, or when `POST /reload` asks.
    pub async fn run_scheduler(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_end: Option<Instant> = None;
        loop {
            let interval = self.config.load().interval;
            let due = last_end.map_or_else(Instant::now, |t| t + interval);
            *lock(&self.next_round_at) = Some(SystemTime::now() + due.saturating_duration_since(Instant::now()));
            let requested = matches!(self.phase(), Phase::Requested(_));
            if !requested && due > Instant::now() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => {}
                    _ = self.wake.notified() => continue,
                }
            }
            if cancel.is_cancelled() {
                return;
            }
            let id = self.last_id.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
            // Boxed: a round's state is large and lives once, not per check.
            Box::pin(self.guarded_round(id, self.run_round(id, &cancel))).await;
            last_end = Some(Instant::now());
        }
    }

    /// Runs one round's future; whatever happens in it (a panic included), the round has
    /// ended when this returns: the phase is idle, `last_error` says why it failed, and its
    /// end is recorded. Returns the round's `rounds_total` label.
    async fn guarded_round(&self, id: u64, round: impl Future<Output = &'static str>) -> &'static str {
        let result = match AssertUnwindSafe(round).catch_unwind().await {
            Ok(result) => result,
            Err(payload) => {
                let what = crate::panic_message(&*payload);
                tracing::error!(round_id = id, panic = what, "round panicked (a bug; please report it)");
                self.round_failed(id, format!("round {id} panicked: {what}"), "failed");
                "failed"
            }
        };
        let now = SystemTime::now();
        *lock(&self.last_round_end) = Some(RoundEnd { round_id: id, finished_at: now, result });
        self.metrics.last_round_finished_timestamp_seconds.set(unix(now));
        result
    }

    /// A round ended without a new pool: the phase returns to idle and `last_error` says why.
    fn round_failed(&self, id: u64, error: String, label: &'static str) {
        let snap = self.snapshot.load();
        if self.is_ready() {
            tracing::warn!(
                round_id = id, error = %error, serving_round = snap.data.round.round_id,
                serving_since = snap.data.round.finished_at, proxies = snap.len(),
                "round failed; the last good round's pool stays served"
            );
        } else {
            tracing::warn!(round_id = id, error = %error, "round failed; no pool is served yet (no round has succeeded)");
        }
        self.metrics.rounds_total.with_label_values(&[label]).inc();
        *lock(&self.last_error) = Some(error);
        *lock(&self.phase) = Phase::Idle;
    }

    /// One round, start to end; returns its `rounds_total` label.
    async fn run_round(&self, id: u64, cancel: &CancellationToken) -> &'static str {
        let config = self.config.load_full();
        let mut cfg = (*config).clone();
        let concurrency = self.round_concurrency();
        cfg.checker.settings.concurrency = concurrency;
        let progress = Arc::new(Progress::default());
        let started = SystemTime::now();
        let round_cancel = cancel.child_token();
        *lock(&self.phase) = Phase::Running { id, started, progress: progress.clone(), cancel: round_cancel.clone() };
        *lock(&self.next_round_at) = None;
        tracing::info!(round_id = id, sources = cfg.sources.len(), concurrency, "round started");

        let result = match RoundContext::from_config(&cfg) {
            Ok(mut ctx) => {
                let metrics = self.metrics.clone();
                let history = self.history.clone();
                ctx.observer = Some(Arc::new(move |v: &crate::check::Verdict| {
                    metrics.observe(v);
                    let key = Key::new(v.candidate.proxy.host.clone(), v.candidate.proxy.port);
                    lock(&history).observe(key, &Observation::of_round(v, now_ms()));
                }));
                ctx.run(progress, round_cancel).await.map_err(|e| match e {
                    RoundError::NoUsableSource { why, sources } => (format!("no usable source: {why}"), sources),
                    other => (crate::error_chain(&other), Vec::new()),
                })
            }
            Err(e) => Err((crate::error_chain(&e), Vec::new())),
        };
        match result {
            Ok(report) => {
                self.count_sources(&report.sources);
                let mut data = SnapshotData::from_report(&report, id, cfg.checker.settings.mode, concurrency);
                {
                    let mut history = lock(&self.history);
                    annotate(&mut data.proxies, &history);
                    history.prune(now_ms());
                }
                let snapshot = Arc::new(Snapshot::new(data, false));
                let r = &snapshot.data.round;
                let secs = (r.duration_ms as f64 / 1000.0).max(1e-3);
                self.metrics.round_duration_seconds.observe(secs);
                self.metrics.rounds_total.with_label_values(&["ok"]).inc();
                self.metrics.last_round_timestamp_seconds.set(r.finished_at);
                self.metrics.alive_proxies.set(snapshot.len() as i64);
                {
                    // The round's verdicts replace what rechecks had pulled.
                    let mut pool = lock(&self.pool);
                    pool.clear();
                    self.snapshot.store(snapshot.clone());
                }
                self.ready.store(true, Ordering::Release);
                *lock(&self.last_error) = None;
                *lock(&self.phase) = Phase::Idle;
                // Logged once the new pool is served: a reader of this line sees it.
                tracing::info!(
                    round_id = id, checked = r.checked, alive = r.alive, dead = r.dead,
                    dead_by_reason = ?r.dead_by_reason, duration_ms = r.duration_ms,
                    checks_per_sec = (r.checked as f64 / secs).round(), retries = r.retries,
                    local_requeues = r.local_requeues, "round finished"
                );
                self.persist().await;
                self.persist_history().await;
                "ok"
            }
            Err((e, sources)) => {
                // Cancelled by the stall detector: a failure, with its reason.
                let (e, label) = match lock(&self.stall_note).take() {
                    Some(stalled) => (stalled, "failed"),
                    None if cancel.is_cancelled() => (e, "cancelled"),
                    None => (e, "failed"),
                };
                self.count_sources(&sources);
                let summary = sources.iter().map(|s| SourceSummary::new(s, 0, 0)).collect();
                *lock(&self.last_failed) = Some(FailedRound {
                    round_id: id,
                    started_at: unix(started),
                    finished_at: unix(SystemTime::now()),
                    error: e.clone(),
                    sources: summary,
                });
                self.round_failed(id, e, label);
                label
            }
        }
    }

    /// Counts a round's source fetches, whether the round succeeded or not (a source that
    /// failed in a failed round is exactly what the source alert is for).
    fn count_sources(&self, sources: &[SourceStats]) {
        for s in sources {
            if s.error.is_some() {
                self.metrics.sources_failed_total.inc();
            } else {
                self.metrics.sources_fetched_total.inc();
            }
        }
    }

    /// The last round that failed, with its per-source errors, if any did.
    pub fn last_failed(&self) -> Option<FailedRound> {
        lock(&self.last_failed).clone()
    }

    /// Writes the snapshot served now. One write at a time, each of what is served
    /// when it starts: rounds and recheck passes both persist, and an older pool can
    /// never be written after a newer one.
    async fn persist(&self) {
        let _one = self.persisting.lock().await;
        let data = Arc::new(self.snapshot.load().data.clone());
        match self.store.save(data).await {
            Ok(()) => self.metrics.store_writes_total.with_label_values(&["ok"]).inc(),
            Err(e) => {
                self.metrics.store_writes_total.with_label_values(&["error"]).inc();
                tracing::warn!(error = %crate::Chain(&e), "persisting the snapshot failed; retried after the next round");
            }
        }
    }

    /// Writes the history to the store (after rounds, after passes at most every
    /// `recheck::HISTORY_SAVE_GAP`, at shutdown).
    pub async fn persist_history(&self) {
        let _one = self.persisting_history.lock().await;
        let rows = Arc::new(lock(&self.history).rows());
        match self.store.save_history(rows).await {
            Ok(()) => self.metrics.history_writes_total.with_label_values(&["ok"]).inc(),
            Err(e) => {
                self.metrics.history_writes_total.with_label_values(&["error"]).inc();
                tracing::warn!(error = %crate::Chain(&e), "persisting the history failed; retried later");
            }
        }
    }

    /// Checks in flight at most in a round: the configured concurrency within the fd
    /// budget, less what rechecks may hold while the round runs.
    pub fn round_concurrency(&self) -> usize {
        // Rechecks take theirs from the budget (a few with periodic rechecks off).
        let requested = self.config.load().checker.concurrency_requested;
        requested.min(self.fd_budget.saturating_sub(self.recheck_concurrency())).max(1)
    }

    /// Refreshes the gauges that are read rather than counted.
    pub fn refresh_gauges(&self) {
        self.metrics.round_interval_seconds.set(self.config.load().interval.as_secs_f64());
        let snap = self.snapshot.load();
        self.metrics.snapshot_age_seconds.set(if snap.data.round.finished_at > 0.0 {
            snap.age().as_secs_f64()
        } else {
            0.0
        });
        self.metrics.alive_proxies.set(snap.len() as i64);
        let oldest = if snap.oldest_ok > 0.0 { (unix(SystemTime::now()) - snap.oldest_ok).max(0.0) } else { 0.0 };
        self.metrics.pool_oldest_check_age_seconds.set(oldest);
        self.metrics.history_entries.set(lock(&self.history).len() as i64);
        for (anonymity, n) in snap.count_by_anonymity() {
            self.metrics.pool_proxies.with_label_values(&[anonymity]).set(*n as i64);
        }
        match self.phase() {
            Phase::Running { progress, .. } => {
                self.metrics.checks_in_flight.set(progress.in_flight.load(Ordering::Relaxed) as i64);
                self.metrics.effective_concurrency.set(progress.limit.load(Ordering::Relaxed) as i64);
            }
            _ => {
                self.metrics.checks_in_flight.set(0);
                self.metrics.effective_concurrency.set(self.round_concurrency() as i64);
            }
        }
    }

    /// How long shutdown waits for the scheduler to stop (the running round is cancelled).
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
}

/// Copies each entry's track record from the history.
fn annotate(proxies: &mut [crate::snapshot::ProxyEntry], history: &History) {
    for e in proxies {
        if let Some(r) = e.key().and_then(|k| history.get(&k)) {
            e.annotate(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn service(dir: &std::path::Path) -> Arc<Service> {
        let text = format!(
            r#"{{"sources": ["{}/list.txt"], "storage": {{"type": "file", "path": "{}/snap.json"}}}}"#,
            dir.display(),
            dir.display()
        );
        let config = Config::from_json(&text, "test").unwrap();
        let store = crate::store::open(&config.storage).unwrap();
        Service::start(config, store, 100).await
    }

    /// A round that panics (here after it set its phase) is a failed round: idle again,
    /// `last_error` says so, counted, its end recorded; nothing is served in its place.
    #[tokio::test]
    async fn a_round_that_panics_is_a_round_that_ended() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let result = svc
            .guarded_round(7, async {
                let progress = Arc::new(Progress::default());
                let cancel = CancellationToken::new();
                *lock(&svc.phase) = Phase::Running { id: 7, started: SystemTime::now(), progress, cancel };
                panic!("a bug in a round");
            })
            .await;
        assert_eq!(result, "failed");
        assert!(matches!(svc.phase(), Phase::Idle));
        assert_eq!(svc.last_error().as_deref(), Some("round 7 panicked: a bug in a round"));
        assert_eq!(svc.metrics.rounds_total.with_label_values(&["failed"]).get(), 1);
        let end = svc.last_round_end().unwrap();
        assert_eq!((end.round_id, end.result), (7, "failed"));
        assert!(svc.metrics.last_round_finished_timestamp_seconds.get() > 0.0);
        assert!(svc.fault().is_none(), "a failed round is not a fault");
        assert!(matches!(svc.request_round(), ReloadOutcome::Started(_)), "the next round can start");
    }

    /// A round whose counters stay still past the limit is cancelled and a fault until
    /// the scheduler moves on; a scheduler idle past its next round's time is one too.
    #[tokio::test(start_paused = true)]
    async fn a_round_without_progress_is_a_fault_until_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let limit = Duration::from_secs(60);
        *lock(&svc.next_round_at) = Some(SystemTime::now() + Duration::from_secs(3600));
        svc.watch_progress(limit);
        tokio::time::advance(limit * 2).await;
        svc.watch_progress(limit);
        assert_eq!(svc.fault(), None, "idle before the next round's time is not stuck");

        let progress = Arc::new(Progress::default());
        let cancel = CancellationToken::new();
        let running =
            Phase::Running { id: 3, started: SystemTime::now(), progress: progress.clone(), cancel: cancel.clone() };
        *lock(&svc.phase) = running.clone();
        svc.watch_progress(limit);
        tokio::time::advance(limit / 2).await;
        progress.lookups.fetch_add(1, Ordering::Relaxed);
        svc.watch_progress(limit);
        tokio::time::advance(limit / 2 + limit / 4).await;
        svc.watch_progress(limit);
        assert_eq!(svc.fault(), None, "a hostname lookup is progress");
        tokio::time::advance(limit).await;
        svc.watch_progress(limit);
        assert!(matches!(svc.fault(), Some(Fault::RoundStalled { round_id: 3, .. })), "{:?}", svc.fault());
        assert!(cancel.is_cancelled(), "a stalled round is cancelled");
        assert_eq!(svc.metrics.healthy.get(), 0);
        assert!(lock(&svc.stall_note).as_deref().is_some_and(|n| n.starts_with("round 3 made no progress")));
        // The round ends; the scheduler waits for the next one: healthy again.
        *lock(&svc.phase) = Phase::Idle;
        svc.watch_progress(limit);
        assert_eq!(svc.fault(), None);
        assert_eq!(svc.metrics.healthy.get(), 1);

        // A next round overdue by more than the limit: the scheduler is stuck.
        *lock(&svc.next_round_at) = Some(SystemTime::now() - limit * 2);
        tokio::time::advance(limit * 2).await;
        svc.watch_progress(limit);
        assert!(matches!(svc.fault(), Some(Fault::SchedulerLate { .. })), "{:?}", svc.fault());

        svc.scheduler_stopped("it panicked: test".into());
        *lock(&svc.next_round_at) = Some(SystemTime::now() + limit);
        svc.watch_progress(limit);
        assert!(matches!(svc.fault(), Some(Fault::SchedulerStopped(_))), "a stopped scheduler stays a fault");
    }
}
