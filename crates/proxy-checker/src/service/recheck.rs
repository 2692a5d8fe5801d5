//! Rechecks between rounds: the served proxies (and those a failed recheck pulled out)
//! are rechecked on their own cadence, `checker.recheck_interval_secs`, and at once when
//! a client reports one (`POST /report`). A recheck is a small run of the same engine —
//! one exchange per proxy (the capability it is served for), same judges and
//! validation, no retries. A proxy that fails is pulled from the served snapshot at once
//! (a new snapshot is swapped in; readers never wait); a pulled one that passes comes
//! back; one that failed `checker.recheck_drop_after` times in a row is dropped until a
//! round finds it again.
//!
//! Checks of a proxy are at most a *due age* apart — the interval less a lead (one tick
//! and one check timeout, at most half the interval) — so the last successful check of
//! anything served is at most about one interval old. Within that, each proxy keeps its
//! own *phase* (a hash of its address; see [`is_due`]): a pool that a round (or a
//! restart, or turning rechecks on) checked all at once is rechecked spread evenly, not
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
use crate::proxy::{Credentials, DedupKey, Host, Protocol, Proxy};
use crate::snapshot::{ProxyEntry, Snapshot, SnapshotData};

/// A proxy rechecked because of a report is not rechecked for another report this soon.
pub const REPORT_MIN_GAP: Duration = Duration::from_secs(10);
/// The history is persisted after passes at most this often (and after every round).
const HISTORY_SAVE_GAP: Duration = Duration::from_secs(300);

/// Entries out of the served pool that rechecks still follow, by entry, with their
/// failed rechecks in a row; and entries a pass could not dial (a hostname that does not
/// resolve here, an address the guard now refuses), not due again before a time (Unix
/// ms). Both are emptied when a round's pool replaces the served one.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) pulled: HashMap<DedupKey, (ProxyEntry, u16)>,
    pub(super) skipped: HashMap<DedupKey, u64>,
}

impl Pool {
    pub(super) fn clear(&mut self) {
        self.pulled.clear();
        self.skipped.clear();
    }
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

/// One served or pulled entry to recheck.
struct Target {
    /// Its history record (where it listens).
    key: Key,
    /// Which entry (protocol family, host, port, credentials): two entries may share a
    /// `host:port`.
    ident: DedupKey,
    proxy: Proxy,
    entry: ProxyEntry,
}

/// What a finished pass found: per entry, when, and alive or not.
type Outcomes = Vec<(DedupKey, Key, u64, Option<Alive>)>;

/// Rechecks in flight when periodic rechecks are off (a pass then only serves reports).
const REPORT_ONLY_CONCURRENCY: usize = 16;
/// Passes start at most this often (a stream of reports wakes the loop each time).
const MIN_PASS_GAP: Duration = Duration::from_secs(1);
/// An entry a pass could not dial is not due again for this long.
const SKIP_FOR_MS: u64 = 60_000;

/// What a pass leaves to write.
#[derive(Default)]
struct Persist {
    snapshot: bool,
    history: bool,
}

/// The proxy a served entry describes (`None` for an entry no round could have written).
fn entry_proxy(e: &ProxyEntry) -> Option<Proxy> {
    let protocol: Protocol = e.protocol.parse().ok()?;
    let key = e.key()?;
    let credentials = e
        .username
        .as_ref()
        .map(|u| Arc::new(Credentials { username: u.clone(), password: e.password.clone().unwrap_or_default() }));
    Some(Proxy { protocol, host: key.host, port: e.port, credentials })
}

impl Service {
    /// How often the recheck loop looks for due proxies.
    fn recheck_tick(interval: Option<Duration>) -> Duration {
        interval
            .map_or(Duration::from_secs(3600), |i| (i / 4).clamp(Duration::from_millis(250), Duration::from_secs(5)))
    }

    /// Rechecks in flight at most, taken from the fd budget (rounds get the rest, see
    /// [`Service::round_concurrency`]): the configured number, at most a quarter of the
    /// budget; a few when periodic rechecks are off (passes then only serve reports).
    pub fn recheck_concurrency(&self) -> usize {
        let cfg = self.config.load();
        let wanted = match cfg.checker.recheck.interval {
            Some(_) => cfg.checker.recheck.concurrency,
            None => REPORT_ONLY_CONCURRENCY,
        };
        wanted.min(self.fd_budget / 4).max(1)
    }

    /// `POST /report`: queue a served proxy for a recheck now, once.
    pub fn report(&self, key: Key) -> ReportOutcome {
        let outcome = self.report_outcome(key);
        self.metrics.reports_total.with_label_values(&[outcome.label()]).inc();
        outcome
    }

    fn report_outcome(&self, key: Key) -> ReportOutcome {
        if self.snapshot.load().find(&key).is_none() {
            let pulled = lock(&self.pool).pulled.values().any(|(e, _)| e.key().as_ref() == Some(&key));
            return if pulled { ReportOutcome::Pulled } else { ReportOutcome::NotServed };
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
    /// a proxy is reported (at most one pass per [`MIN_PASS_GAP`]). A pass that panics is
    /// logged and the loop goes on.
    pub async fn run_rechecks(self: Arc<Self>, cancel: CancellationToken) {
        use futures_util::FutureExt;
        let mut last_start: Option<Instant> = None;
        loop {
            let tick = Self::recheck_tick(self.config.load().checker.recheck.interval);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
                _ = self.recheck_wake.notified() => {}
            }
            if let Some(gap) = last_start.and_then(|t| MIN_PASS_GAP.checked_sub(t.elapsed())) {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(gap) => {}
                }
            }
            last_start = Some(Instant::now());
            let pass = std::panic::AssertUnwindSafe(self.recheck_pass(&cancel)).catch_unwind().await;
            match pass {
                // Written beside the loop (one write at a time each), so the next pass is
                // not late for a slow store.
                Ok(persist) => {
                    if persist.snapshot {
                        let me = self.clone();
                        tokio::spawn(async move { me.persist().await });
                    }
                    if persist.history {
                        let me = self.clone();
                        tokio::spawn(async move { me.persist_history().await });
                    }
                }
                Err(payload) => {
                    let what = crate::panic_message(&*payload);
                    tracing::error!(panic = what, "a recheck pass panicked (a bug; please report it)");
                    lock(&self.reports).running.clear();
                }
            }
        }
    }

    /// The entries due now, with the round id of the pool they were taken from: served
    /// and pulled ones that their phase makes due ([`is_due`]), served ones with a
    /// failure on record since their last success (a round saw them fail: confirmed or
    /// cleared at once), and every entry of a reported `host:port`; not those skipped
    /// for now.
    fn due(&self, reported: &HashSet<Key>) -> (Vec<Target>, u64) {
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
        let is_due = |key: &Key, served: bool| {
            if reported.contains(key) {
                return true;
            }
            let Some(period) = due_age else { return false };
            let Some(r) = history.get(key) else { return true };
            (served && r.consecutive_failures > 0) || is_due(r.last_checked, now, period, spread(key))
        };
        let served = snap.data.proxies.iter().map(|e| (e, true));
        let pulled = pool.pulled.values().map(|(e, _)| (e, false));
        let mut out = Vec::new();
        for (entry, is_served) in served.chain(pulled) {
            let (Some(key), Some(proxy)) = (entry.key(), entry_proxy(entry)) else { continue };
            let ident = proxy.dedup_key();
            if pool.skipped.get(&ident).is_some_and(|until| *until > now) {
                continue;
            }
            if is_due(&key, is_served) {
                out.push(Target { ident, key, proxy, entry: entry.clone() });
            }
        }
        (out, snap.data.round.round_id)
    }

    /// One pass: due entries rechecked; if the run finished, every verdict recorded in
    /// the history and the served pool rebuilt from them. A run that could not finish
    /// (judges down, cancelled) changes nothing: its verdicts are not all-or-nothing,
    /// and one that fails for our own reasons must not pull a proxy.
    async fn recheck_pass(&self, cancel: &CancellationToken) -> Persist {
        let reported: HashSet<Key> = {
            let mut r = lock(&self.reports);
            let taken = std::mem::take(&mut r.queued);
            r.running.extend(taken.iter().cloned());
            taken
        };
        let (targets, round_before) = self.due(&reported);
        if targets.is_empty() {
            let mut r = lock(&self.reports);
            r.running.clear();
            r.done.retain(|_, t| t.elapsed() < REPORT_MIN_GAP);
            return Persist::default();
        }
        let started = Instant::now();
        let ran = self.recheck(targets, cancel).await;
        let finished = ran.is_ok();
        let mut summary = match ran {
            Ok((outcomes, skipped)) => {
                {
                    let mut history = lock(&self.history);
                    for (_, key, at, alive) in &outcomes {
                        history.observe(key.clone(), &Observation::of_recheck(alive.as_ref(), *at));
                    }
                }
                for (.., alive) in &outcomes {
                    let result = if alive.is_some() { "alive" } else { "dead" };
                    self.metrics.rechecks_total.with_label_values(&[result]).inc();
                }
                if !skipped.is_empty() {
                    // Not dialable now: not due again for a while (never a verdict).
                    let until = now_ms().saturating_add(SKIP_FOR_MS);
                    let mut pool = lock(&self.pool);
                    pool.skipped.retain(|_, t| *t > now_ms());
                    pool.skipped.extend(skipped.into_iter().map(|i| (i, until)));
                }
                let checked = outcomes.len() as u64;
                if outcomes.is_empty() {
                    PassSummary::default()
                } else {
                    // `None`: a round replaced the pool during the pass. Its verdicts
                    // stand; a proxy it kept and this pass saw fail is due again at once
                    // (its failure is on record).
                    self.apply(outcomes, round_before).unwrap_or(PassSummary { checked, ..PassSummary::default() })
                }
            }
            Err(e) => PassSummary { error: Some(e), ..PassSummary::default() },
        };
        summary.reported = reported.len() as u64;
        summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        summary.finished_at = now_ms() as f64 / 1000.0;
        {
            let mut r = lock(&self.reports);
            r.running.clear();
            r.done.retain(|_, t| t.elapsed() < REPORT_MIN_GAP);
            if finished {
                let now = Instant::now();
                r.done.extend(reported.into_iter().map(|k| (k, now)));
            }
        }
        if let Some(e) = &summary.error {
            tracing::warn!(error = %e, "recheck pass could not run; the pool stays as it was");
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
        let history = {
            let mut saved = lock(&self.history_saved);
            let due = saved.is_none_or(|t| t.elapsed() >= HISTORY_SAVE_GAP);
            if due {
                *saved = Some(Instant::now());
            }
            due
        };
        Persist { snapshot: changed, history }
    }

    /// Rechecks `targets` with the engine: one exchange each (the capability it is
    /// served for), no retries, no relabelling (an entry that now speaks another
    /// protocol fails: it is not what is served). Hostnames are looked up again,
    /// concurrently and once per name; one that does not resolve now, or whose address
    /// the guard refuses, is skipped (a local failure is never a verdict).
    /// Returns the outcomes and the entries skipped.
    async fn recheck(
        &self,
        targets: Vec<Target>,
        cancel: &CancellationToken,
    ) -> Result<(Outcomes, Vec<DedupKey>), String> {
        use futures_util::StreamExt;
        let cfg = self.config.load_full();
        let allow_private = cfg.checker.allow_private;
        let names: HashSet<Arc<str>> = targets
            .iter()
            .filter_map(|t| match &t.proxy.host {
                Host::Name(n) => Some(n.clone()),
                Host::Ip(_) => None,
            })
            .collect();
        let slots = Arc::new(tokio::sync::Semaphore::new(crate::round::RESOLVE_SLOTS));
        let resolved: HashMap<Arc<str>, IpAddr> = futures_util::stream::iter(names)
            .map(|name| {
                let slots = slots.clone();
                async move {
                    let ips = crate::round::lookup(name.clone(), slots).await?;
                    ips.iter().try_for_each(|ip| crate::guard::check(*ip, allow_private)).ok()?;
                    Some((name, *ips.first()?))
                }
            })
            .buffer_unordered(crate::round::RESOLVE_SLOTS)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let mut keys: HashMap<DedupKey, Key> = HashMap::with_capacity(targets.len());
        let mut candidates = Vec::with_capacity(targets.len());
        let mut skipped = Vec::new();
        for t in targets {
            let ip = match &t.proxy.host {
                Host::Ip(ip) => Some(*ip),
                Host::Name(n) => resolved.get(n).copied(),
            };
            let Some(ip) = ip.filter(|ip| crate::guard::check(*ip, allow_private).is_ok()) else {
                skipped.push(t.ident);
                continue;
            };
            let scope = match (t.proxy.protocol.is_http_family(), t.entry.tunnel) {
                (false, _) => Scope::Full,
                (true, true) => Scope::Tunnel,
                (true, false) => Scope::Forward,
            };
            keys.insert(t.ident, t.key);
            candidates.push(Candidate { addr: SocketAddr::new(ip, t.proxy.port), proxy: t.proxy, source: 0, scope });
        }
        if candidates.is_empty() {
            return Ok((Vec::new(), skipped));
        }
        let mut settings = cfg.checker.settings.clone();
        settings.retries = 0;
        settings.detect_protocol = false;
        settings.concurrency = self.recheck_concurrency();
        let engine = crate::check::engine::tls_config(settings.ca_file.as_deref())
            .and_then(|tls| Engine::new(settings, tls))
            .map_err(|e| crate::error_chain(&e))?;
        let progress = Arc::new(Progress::default());
        progress.total.store(candidates.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let metrics = self.metrics.clone();
        let mut outcomes = Vec::with_capacity(candidates.len());
        let mut sink = |v: Verdict| {
            metrics.observe(&v);
            let ident = v.candidate.proxy.dedup_key();
            if let Some(key) = keys.get(&ident) {
                outcomes.push((ident, key.clone(), now_ms(), v.outcome.ok()));
            }
        };
        engine
            .run(futures_util::stream::iter(candidates), progress, cancel.child_token(), &mut sink)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        Ok((outcomes, skipped))
    }

    /// Applies a pass's outcomes to the pool now served, unless a round replaced the pool
    /// the pass was taken from (`None`: checked under the pool lock, which a round's swap
    /// takes too). Failed served entries are pulled (or dropped at once when
    /// `recheck_drop_after` is 1), pulled ones that pass return, pulled ones that failed
    /// `drop_after` rechecks in a row are dropped; every entry's track record is
    /// refreshed; the new snapshot is swapped in. The new pulled set is built aside and
    /// installed with the snapshot, so a panic halfway leaves both as they were.
    fn apply(&self, outcomes: Outcomes, round: u64) -> Option<PassSummary> {
        let drop_after = self.config.load().checker.recheck.drop_after;
        let mut s = PassSummary {
            checked: outcomes.len() as u64,
            alive: outcomes.iter().filter(|o| o.3.is_some()).count() as u64,
            ..PassSummary::default()
        };
        let outcome: HashMap<DedupKey, Option<Alive>> =
            outcomes.into_iter().map(|(ident, _, _, alive)| (ident, alive)).collect();
        let mut pool = lock(&self.pool);
        let snap = self.snapshot.load_full();
        if snap.data.round.round_id != round {
            return None;
        }
        let mut pulled = pool.pulled.clone();
        let mut proxies = Vec::with_capacity(snap.len());
        for e in &snap.data.proxies {
            let ident = entry_proxy(e).map(|p| p.dedup_key());
            match ident.and_then(|i| outcome.get(&i).map(|o| (i, o))) {
                Some((_, None)) if drop_after <= 1 => s.dropped += 1,
                Some((ident, None)) => {
                    pulled.insert(ident, (e.clone(), 1));
                    s.pulled += 1;
                }
                Some((_, Some(a))) => proxies.push(refreshed(e, a)),
                None => proxies.push(e.clone()),
            }
        }
        pulled.retain(|ident, (e, failures)| match outcome.get(ident) {
            Some(Some(a)) => {
                proxies.push(refreshed(e, a));
                s.returned += 1;
                false
            }
            // Pulled by this pass: its first failure.
            Some(None) if *failures == 1 && !pool.pulled.contains_key(ident) => true,
            Some(None) => {
                *failures = failures.saturating_add(1);
                let keep = *failures < drop_after;
                s.dropped += u64::from(!keep);
                keep
            }
            None => true,
        });
        let history = lock(&self.history);
        super::annotate(&mut proxies, &history);
        drop(history);
        let data = SnapshotData { version: snap.data.version, round: snap.data.round.clone(), proxies };
        let new = Arc::new(Snapshot::new(data, snap.loaded));
        pool.pulled = pulled;
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
        Some(s)
    }

    /// Proxies pulled out of the served pool and still rechecked.
    pub fn pulled(&self) -> usize {
        lock(&self.pool).pulled.len()
    }

    /// Whether an entry at `key` is pulled (out of the served pool, still rechecked).
    pub fn is_pulled(&self, key: &Key) -> bool {
        lock(&self.pool).pulled.values().any(|(e, _)| e.key().as_ref() == Some(key))
    }

    /// The last recheck pass, if one ran.
    pub fn last_pass(&self) -> Option<PassSummary> {
        lock(&self.last_pass).clone()
    }
}

/// Whether a proxy last checked at `last` is due at `now` (Unix ms), so that checks are
/// never more than `most` apart and each proxy keeps its own phase (`phase`, a hash):
/// rechecks come once per period P = 4/5 × `most`, at the proxy's phase within it; a
/// check less than P/4 before its phase (a round's) skips that one, so the longest gap
/// is P + P/4 = `most`. A pool checked all at once is rechecked spread over P. A last
/// check in the future (the clock stepped back) is due at once.
fn is_due(last: u64, now: u64, most: u64, phase: u64) -> bool {
    if last > now {
        // The clock stepped back: recheck now (which records a time that is not ahead).
        return true;
    }
    let period = (most / 5 * 4).max(1);
    // The latest time ≤ now that is ≡ phase (mod period) (none this close to the epoch).
    let Some(slot) = now.checked_sub((now % period + period - phase % period) % period) else {
        return false;
    };
    last.saturating_add(period / 4) <= slot
}

/// A hash of where a proxy listens, fixed for the process (its recheck phase).
fn spread(key: &Key) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key)
}

/// `e` with the latency of the recheck that passed.
fn refreshed(e: &ProxyEntry, a: &Alive) -> ProxyEntry {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    ProxyEntry { latency_ms: ms(a.latency), connect_ms: ms(a.connect), ..e.clone() }
}

#[cfg(test)]
mod tests {
    use super::is_due;

    /// Checked once per period at its phase, whenever its last check was; never more
    /// than `most` apart; a check just before its phase skips that slot.
    #[test]
    fn rechecks_keep_their_phase() {
        let most = 10_000;
        let period = most / 5 * 4;
        for phase in [0, 1, 2_500, 7_999, 9_999, 123_456_789] {
            // A round checks every proxy at t = 1,000,000; rechecks follow from the ticks.
            let mut last = 1_000_000u64;
            let mut checks = Vec::new();
            for now in (1_000_000..1_100_000).step_by(250) {
                if is_due(last, now, most, phase) {
                    checks.push(now);
                    last = now;
                }
            }
            let gaps: Vec<u64> = checks.windows(2).map(|w| w[1] - w[0]).collect();
            assert!(gaps.iter().all(|g| g.abs_diff(period) <= 250), "phase {phase}: {gaps:?}");
            assert!((period / 4..=most).contains(&(checks[0] - 1_000_000)), "{checks:?}");
            // At its phase, give or take a tick.
            for t in &checks[1..] {
                let off = (t % period).abs_diff(phase % period);
                assert!(off.min(period - off) <= 250, "phase {phase}: {t}");
            }
        }
        // Proxies checked all at once are rechecked at their phases, spread over the period.
        let firsts: Vec<u64> = (0..32u64)
            .map(|i| (1_000_000..).step_by(250).find(|now| is_due(1_000_000, *now, most, i * 250)).unwrap())
            .collect();
        let spread = firsts.iter().max().unwrap() - firsts.iter().min().unwrap();
        assert!(spread >= period - 500, "{firsts:?}");
        // A last check in the future (the clock stepped back): due now.
        assert!(is_due(2_000_000, 1_000_000, most, 0));
        // Too close to the epoch for a slot (a clock that reads 1970): not due, no panic.
        assert!(!is_due(0, 100, most, 5_000));
    }
}
