//! Rechecks between rounds: the served proxies (and those a failed recheck pulled out)
//! are rechecked on their own cadence, `checker.recheck_interval_secs`, and at once when
//! a client reports one (`POST /report`). A recheck is a small run of the same engine —
//! one exchange per proxy (the capability it is served for), same judges and
//! validation, no retries. A proxy that fails is pulled from the served snapshot at once
//! (a new snapshot is swapped in; readers never wait); a pulled one that passes comes
//! back; one that failed `checker.recheck_drop_after` times in a row is dropped until a
//! round finds it again.
//!
//! A pass takes the proxies whose last check is older than their due age: the interval
//! less a lead (one tick and one check timeout, at most half the interval), so that the
//! last successful check of anything served is at most about one interval old — less up
//! to half of that, by a fraction fixed per proxy (a hash of its address), so that a
//! pool checked by one round at once is rechecked spread over the interval rather than
//! in one burst per interval.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Service, lock};
use crate::check::{Alive, Candidate, Engine, Progress, Scope, Verdict};
use crate::history::{Key, Observation, now_ms};
use crate::proxy::{Credentials, Host, Protocol, Proxy};
use crate::snapshot::{ProxyEntry, Snapshot, SnapshotData};

/// A proxy rechecked because of a report is not rechecked for another report this soon.
pub const REPORT_MIN_GAP: Duration = Duration::from_secs(10);
/// The history is persisted after passes at most this often (and after every round).
const HISTORY_SAVE_GAP: Duration = Duration::from_secs(300);

/// Proxies out of the served pool that rechecks still follow.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) pulled: HashMap<Key, ProxyEntry>,
}

/// Reported proxies waiting for the next pass, those in the running pass, and those a
/// report had rechecked less than [`REPORT_MIN_GAP`] ago (at most the served pool).
#[derive(Default)]
pub(super) struct Reports {
    queued: HashSet<Key>,
    running: HashSet<Key>,
    done: HashMap<Key, Instant>,
}

/// What `POST /report` did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReportOutcome {
    /// Rechecked in the next pass, which starts now.
    Queued,
    /// Already waiting for, or in, a recheck.
    AlreadyQueued,
    /// Rechecked for a report less than [`REPORT_MIN_GAP`] ago, and passed (Unix seconds
    /// of its last check).
    RecentlyChecked(f64),
    /// Out of the served pool already (a failed recheck pulled it).
    Pulled,
    /// Not in the served pool: nothing to recheck (the service never dials an address
    /// a client names).
    NotServed,
}

impl ReportOutcome {
    pub const LABELS: [&'static str; 5] = ["queued", "already_queued", "recently_checked", "pulled", "not_served"];

    pub fn label(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::AlreadyQueued => "already_queued",
            Self::RecentlyChecked(_) => "recently_checked",
            Self::Pulled => "pulled",
            Self::NotServed => "not_served",
        }
    }
}

/// What one pass did, for `/stat`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PassSummary {
    pub finished_at: f64,
    pub duration_ms: u64,
    pub checked: u64,
    pub alive: u64,
    pub reported: u64,
    pub pulled: u64,
    pub returned: u64,
    pub dropped: u64,
    /// Set when the pass could not run (judges down, cancelled): nothing was pulled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One proxy to recheck.
struct Target {
    key: Key,
    entry: ProxyEntry,
}

impl Service {
    /// How often the recheck loop looks for due proxies.
    fn recheck_tick(interval: Option<Duration>) -> Duration {
        interval
            .map_or(Duration::from_secs(3600), |i| (i / 4).clamp(Duration::from_millis(250), Duration::from_secs(5)))
    }

    /// Rechecks in flight at most: the configured number, at most a quarter of the fd
    /// budget (rounds get the rest, see [`Service::round_concurrency`]).
    pub fn recheck_concurrency(&self) -> usize {
        self.config.load().checker.recheck.concurrency.min(self.fd_budget / 4).max(1)
    }

    /// `POST /report`: queue a served proxy for a recheck now, once.
    pub fn report(&self, key: Key) -> ReportOutcome {
        let outcome = self.report_outcome(key);
        self.metrics.reports_total.with_label_values(&[outcome.label()]).inc();
        outcome
    }

    fn report_outcome(&self, key: Key) -> ReportOutcome {
        if self.snapshot.load().find(&key).is_none() {
            return if lock(&self.pool).pulled.contains_key(&key) {
                ReportOutcome::Pulled
            } else {
                ReportOutcome::NotServed
            };
        }
        let mut reports = lock(&self.reports);
        if reports.queued.contains(&key) || reports.running.contains(&key) {
            return ReportOutcome::AlreadyQueued;
        }
        if reports.done.get(&key).is_some_and(|t| t.elapsed() < REPORT_MIN_GAP) {
            let last = lock(&self.history).get(&key).map_or(0, |r| r.last_checked);
            return ReportOutcome::RecentlyChecked(last as f64 / 1000.0);
        }
        reports.queued.insert(key);
        drop(reports);
        self.recheck_wake.notify_one();
        ReportOutcome::Queued
    }

    /// Runs recheck passes until `cancel`: every tick when rechecks are on, at once when
    /// a proxy is reported. A pass that panics is logged and the loop goes on.
    pub async fn run_rechecks(self: Arc<Self>, cancel: CancellationToken) {
        use futures_util::FutureExt;
        loop {
            let tick = Self::recheck_tick(self.config.load().checker.recheck.interval);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
                _ = self.recheck_wake.notified() => {}
            }
            let pass = std::panic::AssertUnwindSafe(self.recheck_pass(&cancel)).catch_unwind().await;
            if let Err(payload) = pass {
                let what = crate::panic_message(&*payload);
                tracing::error!(panic = what, "a recheck pass panicked (a bug; please report it)");
                lock(&self.reports).running.clear();
            }
        }
    }

    /// The proxies due now: served and pulled ones whose last check is old enough, and
    /// the reported ones.
    fn due(&self, reported: &HashSet<Key>) -> Vec<Target> {
        let cfg = self.config.load();
        let now = now_ms();
        let due_age = cfg.checker.recheck.interval.map(|interval| {
            let tick = Self::recheck_tick(Some(interval));
            let lead = (tick + cfg.checker.settings.timeout).min(interval / 2);
            u64::try_from((interval - lead).as_millis()).unwrap_or(u64::MAX)
        });
        let snap = self.snapshot.load();
        let pool = lock(&self.pool);
        let history = lock(&self.history);
        let is_due = |key: &Key| {
            let Some(age) = due_age else { return reported.contains(key) };
            // Up to half the due age earlier, by a fraction fixed per proxy.
            let early = age / 2 * (spread(key) % 1024) / 1024;
            let last = history.get(key).map_or(0, |r| r.last_checked);
            reported.contains(key) || now.saturating_sub(last) >= age - early
        };
        let mut out = Vec::new();
        let served = snap.data.proxies.iter().filter_map(|e| Some((e.key()?, e)));
        for (key, entry) in served.chain(pool.pulled.iter().map(|(k, e)| (k.clone(), e))) {
            if is_due(&key) {
                out.push(Target { key, entry: entry.clone() });
            }
        }
        out
    }

    /// One pass: due proxies rechecked, the history updated, the served pool rebuilt.
    async fn recheck_pass(&self, cancel: &CancellationToken) {
        let reported: HashSet<Key> = {
            let mut r = lock(&self.reports);
            let taken = std::mem::take(&mut r.queued);
            r.running.extend(taken.iter().cloned());
            taken
        };
        let targets = self.due(&reported);
        if targets.is_empty() {
            let mut r = lock(&self.reports);
            r.running.clear();
            r.done.retain(|_, t| t.elapsed() < REPORT_MIN_GAP);
            return;
        }
        let started = Instant::now();
        let (results, error) = self.recheck(&targets, cancel).await;
        for (_, alive) in &results {
            let result = if alive.is_some() { "alive" } else { "dead" };
            self.metrics.rechecks_total.with_label_values(&[result]).inc();
        }
        let mut summary = if results.is_empty() { PassSummary::default() } else { self.apply(results) };
        summary.reported = reported.len() as u64;
        summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        summary.finished_at = now_ms() as f64 / 1000.0;
        summary.error = error;
        {
            let mut r = lock(&self.reports);
            r.running.clear();
            r.done.retain(|_, t| t.elapsed() < REPORT_MIN_GAP);
            let now = Instant::now();
            r.done.extend(reported.into_iter().map(|k| (k, now)));
        }
        if let Some(e) = &summary.error {
            tracing::warn!(error = %e, proxies = targets.len(), "recheck pass failed; the pool stays as it was");
        } else {
            tracing::debug!(
                checked = summary.checked,
                alive = summary.alive,
                pulled = summary.pulled,
                returned = summary.returned,
                dropped = summary.dropped,
                reported = summary.reported,
                duration_ms = summary.duration_ms,
                "recheck pass"
            );
        }
        let changed = summary.pulled + summary.returned + summary.dropped > 0;
        *lock(&self.last_pass) = Some(summary);
        if changed {
            let data = Arc::new(self.snapshot.load().data.clone());
            self.persist(data).await;
        }
        let save = lock(&self.history_saved).is_none_or(|t| t.elapsed() >= HISTORY_SAVE_GAP);
        if save {
            self.persist_history().await;
        }
    }

    /// Rechecks `targets` with the engine (one exchange each); records every verdict in
    /// the history. Returns each key's outcome (`None`: failed) and, if the run could not
    /// finish, why (verdicts it gave before are kept: they are real).
    async fn recheck(
        &self,
        targets: &[Target],
        cancel: &CancellationToken,
    ) -> (Vec<(Key, Option<Alive>)>, Option<String>) {
        let cfg = self.config.load_full();
        let mut results = Vec::with_capacity(targets.len());
        let mut candidates = Vec::with_capacity(targets.len());
        let mut keys: HashMap<(IpAddr, u16, Protocol), Key> = HashMap::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(crate::round::RESOLVE_SLOTS));
        for t in targets {
            match candidate(&t.entry, cfg.checker.allow_private, &slots).await {
                Some(c) => {
                    keys.insert((c.addr.ip(), c.addr.port(), c.proxy.protocol), t.key.clone());
                    candidates.push(c);
                }
                // Unresolvable now, or an address the guard refuses: a failed recheck.
                None => {
                    self.record(&t.key, None);
                    results.push((t.key.clone(), None));
                }
            }
        }
        let mut settings = cfg.checker.settings.clone();
        settings.retries = 0;
        settings.concurrency = self.recheck_concurrency();
        let engine = match crate::check::engine::tls_config(settings.ca_file.as_deref())
            .and_then(|tls| Engine::new(settings, tls))
        {
            Ok(e) => e,
            Err(e) => return (results, Some(crate::error_chain(&e))),
        };
        let progress = Arc::new(Progress::default());
        progress.total.store(candidates.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let metrics = self.metrics.clone();
        let mut sink = |v: Verdict| {
            metrics.observe(&v);
            let p = &v.candidate;
            let key = keys
                .get(&(p.addr.ip(), p.addr.port(), p.proxy.protocol))
                .or_else(|| v.relabelled_from.and_then(|from| keys.get(&(p.addr.ip(), p.addr.port(), from))))
                .cloned()
                .unwrap_or_else(|| Key::new(p.proxy.host.clone(), p.proxy.port));
            let alive = v.outcome.ok();
            lock(&self.history).observe(key.clone(), &Observation::of_recheck(&v, now_ms()));
            results.push((key, alive));
        };
        let run = engine.run(futures_util::stream::iter(candidates), progress, cancel.child_token(), &mut sink).await;
        (results, run.err().map(|e| crate::error_chain(&e)))
    }

    fn record(&self, key: &Key, ok: Option<u32>) {
        lock(&self.history).observe(key.clone(), &Observation { at: now_ms(), ok, found: None });
    }

    /// Applies a pass's outcomes to the pool now served (a round may have replaced the
    /// one the pass started from): failed ones are pulled, passed pulled ones return,
    /// pulled ones that failed too often are dropped; every entry's track record is
    /// refreshed; the new snapshot is swapped in.
    fn apply(&self, results: Vec<(Key, Option<Alive>)>) -> PassSummary {
        let drop_after = self.config.load().checker.recheck.drop_after;
        let mut s = PassSummary {
            checked: results.len() as u64,
            alive: results.iter().filter(|(_, a)| a.is_some()).count() as u64,
            ..PassSummary::default()
        };
        let outcome: HashMap<Key, Option<Alive>> = results.into_iter().collect();
        let mut pool = lock(&self.pool);
        let snap = self.snapshot.load_full();
        let mut proxies = Vec::with_capacity(snap.len());
        for e in &snap.data.proxies {
            match e.key().and_then(|k| outcome.get(&k).map(|o| (k, o))) {
                Some((key, None)) => {
                    pool.pulled.insert(key, e.clone());
                    s.pulled += 1;
                }
                Some((_, Some(a))) => proxies.push(refreshed(e, a)),
                None => proxies.push(e.clone()),
            }
        }
        let history = lock(&self.history);
        pool.pulled.retain(|key, e| match outcome.get(key) {
            Some(Some(a)) => {
                proxies.push(refreshed(e, a));
                s.returned += 1;
                false
            }
            Some(None) if history.get(key).is_some_and(|r| r.consecutive_failures >= drop_after) => {
                s.dropped += 1;
                false
            }
            _ => true,
        });
        super::annotate(&mut proxies, &history);
        self.metrics.history_entries.set(history.len() as i64);
        drop(history);
        let data = SnapshotData { version: snap.data.version, round: snap.data.round.clone(), proxies };
        let new = Arc::new(Snapshot::new(data, snap.loaded));
        self.metrics.alive_proxies.set(new.len() as i64);
        self.snapshot.store(new);
        drop(pool);
        for (change, n) in [("pulled", s.pulled), ("returned", s.returned), ("dropped", s.dropped)] {
            self.metrics.pool_changes_total.with_label_values(&[change]).inc_by(n);
        }
        if s.pulled + s.returned + s.dropped > 0 {
            tracing::info!(
                pulled = s.pulled,
                returned = s.returned,
                dropped = s.dropped,
                "rechecks changed the served pool"
            );
        }
        s
    }

    /// Proxies pulled out of the served pool and still rechecked.
    pub fn pulled(&self) -> usize {
        lock(&self.pool).pulled.len()
    }

    /// Whether `key` is pulled (out of the served pool, still rechecked).
    pub fn is_pulled(&self, key: &Key) -> bool {
        lock(&self.pool).pulled.contains_key(key)
    }

    /// The last recheck pass, if one ran.
    pub fn last_pass(&self) -> Option<PassSummary> {
        lock(&self.last_pass).clone()
    }

    /// Writes the history to the store (after rounds, after passes at most every
    /// [`HISTORY_SAVE_GAP`], at shutdown).
    pub async fn persist_history(&self) {
        *lock(&self.history_saved) = Some(Instant::now());
        let rows = Arc::new(lock(&self.history).rows());
        match self.store.save_history(rows).await {
            Ok(()) => self.metrics.history_writes_total.with_label_values(&["ok"]).inc(),
            Err(e) => {
                self.metrics.history_writes_total.with_label_values(&["error"]).inc();
                tracing::warn!(error = %crate::Chain(&e), "persisting the history failed; retried later");
            }
        }
    }
}

/// A hash of where a proxy listens, fixed for the process (spreads due ages).
fn spread(key: &Key) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key)
}

/// `e` with the latency of the recheck that passed.
fn refreshed(e: &ProxyEntry, a: &Alive) -> ProxyEntry {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    ProxyEntry { latency_ms: ms(a.latency), connect_ms: ms(a.connect), ..e.clone() }
}

/// The engine's candidate for a served entry: the capability it is served for (tunnel
/// when it tunnels, else forward), its address (a hostname looked up again, every
/// address guarded). `None` when it cannot be dialed now.
async fn candidate(e: &ProxyEntry, allow_private: bool, slots: &Arc<tokio::sync::Semaphore>) -> Option<Candidate> {
    let protocol: Protocol = e.protocol.parse().ok()?;
    let key = e.key()?;
    let ip = match &key.host {
        Host::Ip(ip) => *ip,
        Host::Name(name) => {
            let ips = crate::round::lookup(name.clone(), slots.clone()).await?;
            ips.iter().try_for_each(|ip| crate::guard::check(*ip, allow_private)).ok()?;
            *ips.first()?
        }
    };
    crate::guard::check(ip, allow_private).ok()?;
    let credentials = e
        .username
        .as_ref()
        .map(|u| Arc::new(Credentials { username: u.clone(), password: e.password.clone().unwrap_or_default() }));
    let scope = match (protocol.is_http_family(), e.tunnel) {
        (false, _) => Scope::Full,
        (true, true) => Scope::Tunnel,
        (true, false) => Scope::Forward,
    };
    Some(Candidate {
        proxy: Proxy { protocol, host: key.host, port: e.port, credentials },
        addr: SocketAddr::new(ip, e.port),
        source: 0,
        scope,
    })
}
