//! One round: every source fetched and parsed at once; each source's proxies, deduped
//! and guarded (hostnames resolved under a deadline and a budget), enter the check
//! engine as soon as that source is parsed, so a slow or hanging source delays only its
//! own proxies. Used by the one-shot `check` command and by the service.
//!
//! Everything a round starts is a future inside [`RoundContext::run`] (or a task the
//! engine owns): dropping or cancelling the round stops all of it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::check::{Candidate, Engine, Progress, RunError, RunStats, Scope, Verdict};
use crate::guard;
use crate::proxy::{Host, Proxy};
use crate::source::{self, Dedupe, FetchSettings, Reject, RejectReason, SourceSpec, SourceStats};

/// Why a round produced no verdicts.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// Nothing to check: every source failed or listed nothing usable. `sources` says why,
    /// per source.
    #[error("no usable source: {why}")]
    NoUsableSource { why: String, sources: Vec<SourceStats> },
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What a round found. Only live proxies are kept; dead ones are counted by reason.
#[derive(Debug)]
pub struct RoundReport {
    pub started: SystemTime,
    pub finished: SystemTime,
    pub sources: Vec<SourceStats>,
    /// Alive proxies per source (same order as `sources`).
    pub alive_per_source: Vec<u64>,
    /// Proxies per source found to speak another protocol than the list said.
    pub relabelled_per_source: Vec<u64>,
    /// Lines scraped across sources.
    pub scraped: u64,
    /// Candidates after dedupe and guards.
    pub unique: u64,
    /// Live proxies, fastest first.
    pub alive: Vec<Verdict>,
    pub run: RunStats,
}

/// A callback that sees every verdict of a round.
pub type VerdictObserver = Arc<dyn Fn(&Verdict) + Send + Sync>;

/// One hostname's lookup may take this long; then it is `unresolvable` for this round.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Distinct hostnames looked up per round at most; the rest are `resolve_budget`. Each
/// source may use its share (the budget over the number of sources, at least 100), so a
/// list of junk names cannot spend the budget of the others.
pub const RESOLVE_BUDGET: usize = 10_000;
/// Lookups in flight at most. The system resolver blocks a thread per lookup; a slot is
/// held until the lookup really returns (a timed-out one included), so a list of names in
/// a slow zone occupies at most this many of the runtime's blocking threads.
pub const RESOLVE_SLOTS: usize = 64;
/// Candidates parsed but not yet taken by the engine, at most (backpressure on sources).
const QUEUE: usize = 4096;
/// Batches of parsed proxies a source's parser may run ahead of the dedupe and the queue
/// (of `source::BATCH` each).
const PARSED_BATCHES: usize = 4;

/// Inputs of a round that do not change between rounds.
pub struct RoundContext {
    pub client: reqwest::Client,
    pub engine: Engine,
    pub sources: Vec<SourceSpec>,
    pub fetch: FetchSettings,
    pub allow_private: bool,
    /// Hostnames resolved concurrently (across sources).
    pub resolve_concurrency: usize,
    /// Sees every verdict (metrics).
    pub observer: Option<VerdictObserver>,
}

/// What the sources of one round share: the dedupe set and the resolver's cache, slots
/// and budget.
struct Feed<'a> {
    seen: Dedupe,
    resolved: Mutex<HashMap<Arc<str>, Result<IpAddr, RejectReason>>>,
    resolving: Arc<Semaphore>,
    names_left: AtomicUsize,
    /// Names one source may look up.
    names_per_source: usize,
    progress: &'a Progress,
}

impl RoundContext {
    pub async fn run(&self, progress: Arc<Progress>, cancel: CancellationToken) -> Result<RoundReport, RoundError> {
        let started = SystemTime::now();
        let (tx, mut rx) = mpsc::channel::<Candidate>(QUEUE);
        let feed = Feed {
            seen: Dedupe::default(),
            resolved: Mutex::new(HashMap::new()),
            resolving: Arc::new(Semaphore::new(self.resolve_concurrency.clamp(1, RESOLVE_SLOTS))),
            names_left: AtomicUsize::new(RESOLVE_BUDGET),
            names_per_source: (RESOLVE_BUDGET / self.sources.len().max(1)).max(100),
            progress: &progress,
        };
        let feeding = async {
            let tx = tx;
            let each = self.sources.iter().enumerate().map(|(i, spec)| self.feed_source(i, spec, &feed, &tx));
            let stats = futures_util::future::join_all(each).await;
            feed.seen.release();
            stats
        };

        let mut alive = Vec::new();
        let mut alive_per_source = vec![0u64; self.sources.len()];
        let mut relabelled_per_source = vec![0u64; self.sources.len()];
        // A relabelled proxy may turn out to be one another source listed under the right
        // protocol: the pool keeps it once. Fingerprints of the keys, as in `Dedupe`
        // (8 bytes a live proxy); two live proxies sharing one (a chance below 10⁻⁸ for a
        // pool of 100,000) would be kept as one.
        let fingerprints = std::hash::RandomState::new();
        let mut alive_keys: std::collections::HashSet<u64> = std::collections::HashSet::new();
        // Such duplicates: a duplicate listing, not a proxy of its own (not counted alive).
        let mut relabelled_duplicates: u64 = 0;
        let mut sink = |v: Verdict| {
            if let Some(observe) = &self.observer {
                observe(&v);
            }
            if v.relabelled_from.is_some()
                && let Some(n) = relabelled_per_source.get_mut(usize::from(v.candidate.source))
            {
                *n = n.saturating_add(1);
            }
            if v.is_alive()
                && !alive_keys.insert(std::hash::BuildHasher::hash_one(&fingerprints, v.candidate.proxy.dedup_key()))
            {
                relabelled_duplicates = relabelled_duplicates.saturating_add(1);
                return;
            }
            if v.is_alive() {
                if let Some(n) = alive_per_source.get_mut(usize::from(v.candidate.source)) {
                    *n = n.saturating_add(1);
                }
                alive.push(v);
            }
        };
        let (sources, run) = {
            // The engine owns the receiving end: once it returns, the channel closes and a
            // source blocked on a full queue stops at once.
            let input = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let checking = self.engine.run(input, progress.clone(), cancel.clone(), &mut sink);
            tokio::pin!(feeding, checking);
            tokio::select! {
                _ = cancel.cancelled() => return Err(RunError::Cancelled.into()),
                sources = &mut feeding => (sources, checking.await),
                // The engine can only end first with an error (judges down, overloaded):
                // the round fails now, not after the slowest source.
                run = &mut checking => match run {
                    Err(e) => return Err(e.into()),
                    Ok(stats) => (feeding.await, Ok(stats)),
                },
            }
        };

        let unique: u64 = sources.iter().map(|s| s.valid).sum();
        if unique == 0 {
            return Err(no_usable_source(sources));
        }
        let mut run = run?;
        run.checked = run.checked.saturating_sub(relabelled_duplicates);
        run.alive = run.alive.saturating_sub(relabelled_duplicates);
        alive.sort_by_key(|v| v.outcome.as_ref().map(|a| a.latency).unwrap_or_default());
        Ok(RoundReport {
            started,
            finished: SystemTime::now(),
            scraped: sources.iter().map(|s| s.lines).sum(),
            sources,
            alive_per_source,
            relabelled_per_source,
            unique,
            alive,
            run,
        })
    }

    /// Collects one source and sends its new proxies to the engine: IP addresses at once,
    /// hostnames as they resolve. Stops sending once the engine stopped taking candidates.
    async fn feed_source(
        &self,
        i: usize,
        spec: &SourceSpec,
        feed: &Feed<'_>,
        tx: &mpsc::Sender<Candidate>,
    ) -> SourceStats {
        let source = u16::try_from(i).unwrap_or(u16::MAX);
        // The parser hands each proxy over as it parses (a list of lines is never held as
        // a second list); IP addresses go straight to the engine's queue, so the parser
        // waits while the engine is full.
        let (parsed_tx, parsed) = mpsc::channel::<Vec<(Proxy, u32)>>(PARSED_BATCHES);
        let fetching = async {
            // The sender comes back with the stats: dropped here, so the channel closes
            // once the parse is done and the taking side below ends.
            let sink = source::Batches::new(parsed_tx);
            let (_sender, st) = source::fetch_into(&self.client, spec, &self.fetch, self.allow_private, sink).await;
            st
        };
        // What this side counts while the parser runs: valid, duplicates and their rejects.
        let mut mine = SourceStats::default();
        let mut named: Vec<(Proxy, u32)> = Vec::new();
        let taking = async {
            // Owned here: when this ends (the engine gone), the parser's next hand-over
            // fails and it stops.
            let mut parsed = parsed;
            while let Some(batch) = parsed.recv().await {
                for (proxy, line) in batch {
                    if !feed.seen.admit(&proxy) {
                        mine.duplicates = mine.duplicates.saturating_add(1);
                        mine.reject(Reject { line, reason: RejectReason::Duplicate, text: String::new() });
                        continue;
                    }
                    match proxy.host {
                        Host::Ip(ip) => {
                            let c =
                                Candidate { addr: SocketAddr::new(ip, proxy.port), proxy, source, scope: Scope::Full };
                            if !send(c, &mut mine, feed.progress, tx).await {
                                // The engine is gone: dropping the receiver stops the parser.
                                return false;
                            }
                        }
                        Host::Name(_) => named.push((proxy, line)),
                    }
                }
            }
            true
        };
        let (mut st, engine_there) = tokio::join!(fetching, taking);
        st.absorb(mine);
        if !engine_there {
            return st;
        }
        let share = AtomicUsize::new(feed.names_per_source);
        let share = &share;
        let lookups = named.into_iter().map(|(proxy, line)| async move {
            let verdict = self.resolve(&proxy, feed, share).await;
            (proxy, line, verdict)
        });
        let mut lookups = futures_util::stream::iter(lookups).buffer_unordered(RESOLVE_SLOTS);
        while let Some((proxy, line, verdict)) = lookups.next().await {
            feed.progress.lookups.fetch_add(1, Ordering::Relaxed);
            match verdict {
                Ok(ip) => {
                    let c = Candidate { addr: SocketAddr::new(ip, proxy.port), proxy, source, scope: Scope::Full };
                    if !send(c, &mut st, feed.progress, tx).await {
                        return st;
                    }
                }
                Err(reason) => {
                    let text = match &proxy.host {
                        Host::Name(n) => n.to_string(),
                        Host::Ip(ip) => ip.to_string(),
                    };
                    st.reject(Reject { line, reason, text });
                }
            }
        }
        st
    }

    /// The address to dial for a hostname proxy: looked up once per round (with a
    /// deadline, within the round's budget and the source's `share` of it), every address
    /// it resolves to guarded.
    async fn resolve(&self, proxy: &Proxy, feed: &Feed<'_>, share: &AtomicUsize) -> Result<IpAddr, RejectReason> {
        let Host::Name(name) = &proxy.host else { return Err(RejectReason::Syntax) };
        let cached = feed.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).copied();
        if let Some(r) = cached {
            return r;
        }
        let take = |n: &AtomicUsize| n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        let verdict = if !take(share) || !take(&feed.names_left) {
            Err(RejectReason::ResolveBudget)
        } else {
            match lookup(name.clone(), feed.resolving.clone()).await {
                Some(ips) => match ips.iter().try_for_each(|ip| guard::check(*ip, self.allow_private)) {
                    Err(refused) => Err(RejectReason::from(refused)),
                    Ok(()) => ips.first().copied().ok_or(RejectReason::Unresolvable),
                },
                None => Err(RejectReason::Unresolvable),
            }
        };
        feed.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.clone(), verdict);
        verdict
    }
}

/// One system lookup within [`RESOLVE_TIMEOUT`]. It runs in a task that holds its slot
/// until the resolver thread returns, so abandoned lookups still count against
/// [`RESOLVE_SLOTS`] (that task, and only it, may outlive a cancelled round, as long as the
/// system resolver takes).
pub(crate) async fn lookup(name: Arc<str>, slots: Arc<Semaphore>) -> Option<Vec<IpAddr>> {
    let slot = slots.acquire_owned().await.ok()?;
    let task = tokio::spawn(async move {
        let _slot = slot;
        tokio::net::lookup_host((name.as_ref(), 0)).await.map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>())
    });
    match tokio::time::timeout(RESOLVE_TIMEOUT, task).await {
        Ok(Ok(Ok(ips))) => Some(ips),
        _ => None,
    }
}

/// Sends a candidate to the engine, counting it as valid. `false`: the engine is gone.
async fn send(c: Candidate, st: &mut SourceStats, progress: &Progress, tx: &mpsc::Sender<Candidate>) -> bool {
    if tx.send(c).await.is_err() {
        return false;
    }
    st.valid = st.valid.saturating_add(1);
    progress.total.fetch_add(1, Ordering::Relaxed);
    true
}

/// Says, per source, why nothing could be checked.
fn no_usable_source(stats: Vec<SourceStats>) -> RoundError {
    let why: Vec<String> = stats
        .iter()
        .map(|s| match &s.error {
            Some(e) => format!("{}: {e}", s.name),
            None => {
                let rejected: Vec<String> = s.rejected.iter().map(|(r, n)| format!("{} {n}", r.as_str())).collect();
                let hint = if s.rejected.keys().all(|r| *r == RejectReason::Private) && !s.rejected.is_empty() {
                    " — every address is private or loopback: allow them with --allow-private \
                     (checker.allow_private and aggregation.allow_private_sources)"
                } else {
                    ""
                };
                format!("{}: no valid proxies in {} lines (rejected: {}){hint}", s.name, s.lines, rejected.join(", "))
            }
        })
        .collect();
    let why = if why.is_empty() { "no sources configured".into() } else { why.join("; ") };
    RoundError::NoUsableSource { why, sources: stats }
}

/// Why a round context could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Engine(#[from] crate::check::EngineError),
    #[error("source client: {0}")]
    Client(#[from] source::SourceError),
}

impl RoundContext {
    /// Builds the engine and the source client from a validated config (concurrency
    /// already clamped by the caller).
    pub fn from_config(config: &crate::config::Config) -> Result<Self, BuildError> {
        let settings = config.checker.settings.clone();
        let tls = crate::check::engine::tls_config(settings.ca_file.as_deref())?;
        let client = source::fetch::client(tls.clone(), config.fetch.allow_private)?;
        Ok(Self {
            client,
            engine: Engine::new(settings, tls)?,
            sources: config.sources.clone(),
            fetch: config.fetch.clone(),
            allow_private: config.checker.allow_private,
            resolve_concurrency: config.checker.batch_size,
            observer: None,
        })
    }
}
