//! The long-running service: the served snapshot, the round scheduler, and the state the
//! API reads (`/stat`, `/ready`, `POST /reload`).
//!
//! Rounds run one at a time: fetch → check → build a snapshot off to the side → swap it in
//! whole → persist it. A failed round (no usable source, judge down, cancelled) keeps the
//! old snapshot. The API never waits on a round: it reads `ArcSwap`s and atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::check::Progress;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::round::RoundContext;
use crate::snapshot::{Snapshot, SnapshotData};
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
    },
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
    wake: Notify,
    ready: AtomicBool,
    last_error: Mutex<Option<String>>,
    next_round_at: Mutex<Option<SystemTime>>,
}

/// What `POST /reload` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    Started(u64),
    AlreadyRunning(u64),
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
                tracing::warn!(error = %e, "could not load the persisted snapshot; starting empty");
                None
            }
        };
        let ready = loaded.is_some();
        let last_id = loaded.as_ref().map_or(0, |d| d.round.round_id);
        let snapshot = match loaded {
            Some(d) => Snapshot::new(d, true),
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
            wake: Notify::new(),
            ready: AtomicBool::new(ready),
            last_error: Mutex::new(None),
            next_round_at: Mutex::new(None),
        })
    }

    /// A snapshot (loaded or fresh) is being served.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().expect("phase lock").clone()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("error lock").clone()
    }

    pub fn next_round_at(&self) -> Option<SystemTime> {
        *self.next_round_at.lock().expect("next lock")
    }

    /// `POST /reload`: start a round now unless one is running or already requested.
    pub fn request_round(&self) -> ReloadOutcome {
        let mut phase = self.phase.lock().expect("phase lock");
        match &*phase {
            Phase::Running { id, .. } | Phase::Requested(id) => ReloadOutcome::AlreadyRunning(*id),
            Phase::Idle => {
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
        self.config.store(Arc::new(new));
        // The interval may have changed: let the scheduler recompute its wait.
        self.wake.notify_one();
        restart
    }

    /// Runs rounds until `cancel`: the first at once, then every `aggregation.interval_secs`
    /// after the previous one ends, or when `POST /reload` asks.
    pub async fn run_scheduler(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_end: Option<Instant> = None;
        loop {
            let interval = self.config.load().interval;
            let due = last_end.map_or_else(Instant::now, |t| t + interval);
            *self.next_round_at.lock().expect("next lock") =
                Some(SystemTime::now() + due.saturating_duration_since(Instant::now()));
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
            let id = self.last_id.fetch_add(1, Ordering::AcqRel) + 1;
            self.run_round(id, &cancel).await;
            last_end = Some(Instant::now());
        }
    }

    async fn run_round(&self, id: u64, cancel: &CancellationToken) {
        let config = self.config.load_full();
        let mut cfg = (*config).clone();
        let concurrency = cfg.checker.concurrency_requested.min(self.fd_budget).max(1);
        cfg.checker.settings.concurrency = concurrency;
        let progress = Arc::new(Progress::default());
        let started = SystemTime::now();
        *self.phase.lock().expect("phase lock") = Phase::Running { id, started, progress: progress.clone() };
        *self.next_round_at.lock().expect("next lock") = None;
        tracing::info!(round_id = id, sources = cfg.sources.len(), concurrency, "round started");

        let result = match RoundContext::from_config(&cfg) {
            Ok(mut ctx) => {
                let metrics = self.metrics.clone();
                ctx.observer = Some(Arc::new(move |v: &crate::check::Verdict| metrics.observe(v)));
                ctx.run(progress, cancel.child_token()).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(report) => {
                for s in &report.sources {
                    if s.error.is_some() {
                        self.metrics.sources_failed_total.inc();
                    } else {
                        self.metrics.sources_fetched_total.inc();
                    }
                }
                let data = Arc::new(SnapshotData::from_report(&report, id, cfg.checker.settings.mode, concurrency));
                let r = &data.round;
                let secs = (r.duration_ms as f64 / 1000.0).max(1e-3);
                self.metrics.round_duration_seconds.observe(secs);
                self.metrics.rounds_total.with_label_values(&["ok"]).inc();
                self.metrics.last_round_timestamp_seconds.set(r.finished_at);
                self.metrics.alive_proxies.set(data.proxies.len() as i64);
                self.snapshot.store(Arc::new(Snapshot::new((*data).clone(), false)));
                self.ready.store(true, Ordering::Release);
                *self.last_error.lock().expect("error lock") = None;
                *self.phase.lock().expect("phase lock") = Phase::Idle;
                // Logged once the new pool is served: a reader of this line sees it.
                tracing::info!(
                    round_id = id, checked = r.checked, alive = r.alive, dead = r.dead,
                    dead_by_reason = ?r.dead_by_reason, duration_ms = r.duration_ms,
                    checks_per_sec = (r.checked as f64 / secs).round(), retries = r.retries,
                    local_requeues = r.local_requeues, "round finished"
                );
                self.persist(data).await;
            }
            Err(e) => {
                tracing::warn!(round_id = id, error = %e, "round failed; the previous snapshot stays served");
                let label = if cancel.is_cancelled() { "cancelled" } else { "error" };
                self.metrics.rounds_total.with_label_values(&[label]).inc();
                *self.last_error.lock().expect("error lock") = Some(e);
                *self.phase.lock().expect("phase lock") = Phase::Idle;
            }
        }
    }

    async fn persist(&self, data: Arc<SnapshotData>) {
        match self.store.save(data).await {
            Ok(()) => self.metrics.store_writes_total.with_label_values(&["ok"]).inc(),
            Err(e) => {
                self.metrics.store_writes_total.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "persisting the snapshot failed; retried after the next round");
            }
        }
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
        match self.phase() {
            Phase::Running { progress, .. } => {
                self.metrics.checks_in_flight.set(progress.in_flight.load(Ordering::Relaxed) as i64);
                self.metrics.effective_concurrency.set(progress.limit.load(Ordering::Relaxed) as i64);
            }
            _ => {
                self.metrics.checks_in_flight.set(0);
                let c = self.config.load().checker.concurrency_requested.min(self.fd_budget);
                self.metrics.effective_concurrency.set(c as i64);
            }
        }
    }

    /// How long shutdown waits for the scheduler to stop (the running round is cancelled).
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
}
