//! One round: fetch every source → parse → dedupe → resolve hostnames and guard them →
//! check → report. Used by the one-shot `check` command and by the service.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::check::{Candidate, Engine, Progress, RunError, RunStats, Verdict};
use crate::guard;
use crate::proxy::Host;
use crate::source::{self, FetchSettings, Reject, RejectReason, SourceSpec, SourceStats};

/// Why a round produced no verdicts.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("no usable source: {0}")]
    NoUsableSource(String),
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

/// Inputs of a round that do not change between rounds.
pub struct RoundContext {
    pub client: reqwest::Client,
    pub engine: Engine,
    pub sources: Vec<SourceSpec>,
    pub fetch: FetchSettings,
    pub allow_private: bool,
    /// Hostnames resolved concurrently.
    pub resolve_concurrency: usize,
    /// Sees every verdict (metrics).
    pub observer: Option<VerdictObserver>,
}

impl RoundContext {
    pub async fn run(&self, progress: Arc<Progress>, cancel: CancellationToken) -> Result<RoundReport, RoundError> {
        let started = SystemTime::now();
        let mut gathered = tokio::select! {
            g = source::gather(&self.client, &self.sources, &self.fetch, self.allow_private) => g,
            _ = cancel.cancelled() => return Err(RunError::Cancelled.into()),
        };
        let scraped = gathered.scraped();
        if gathered.found.is_empty() {
            return Err(no_usable_source(&gathered.stats));
        }

        let resolved = resolve_names(&gathered.found, self.resolve_concurrency).await;
        let allow_private = self.allow_private;
        let stats = &mut gathered.stats;
        gathered.found.retain(|f| match &f.proxy.host {
            Host::Ip(_) => true,
            Host::Name(n) => {
                let verdict = match resolved.get(n.as_ref()) {
                    Some(Ok(ips)) => {
                        ips.iter().try_for_each(|ip| guard::check(*ip, allow_private)).map_err(RejectReason::from)
                    }
                    _ => Err(RejectReason::Unresolvable),
                };
                if let Err(reason) = verdict {
                    let st = &mut stats[usize::from(f.source)];
                    st.valid -= 1;
                    *st.rejected.entry(reason).or_default() += 1;
                    if st.samples.len() < 20 {
                        st.samples.push(Reject { line: 0, reason, text: n.to_string() });
                    }
                }
                verdict.is_ok()
            }
        });
        if gathered.found.is_empty() {
            return Err(no_usable_source(&gathered.stats));
        }
        let unique = gathered.found.len() as u64;
        progress.total.store(unique, Ordering::Relaxed);

        let candidates = gathered.found.into_iter().map(|f| {
            let ip = match &f.proxy.host {
                Host::Ip(ip) => *ip,
                Host::Name(n) => resolved
                    .get(n.as_ref())
                    .and_then(|r| r.as_ref().ok())
                    .and_then(|v| v.first().copied())
                    .expect("kept only resolved names"),
            };
            Candidate { addr: SocketAddr::new(ip, f.proxy.port), proxy: f.proxy, source: f.source }
        });

        let mut alive = Vec::new();
        let mut alive_per_source = vec![0u64; self.sources.len()];
        let run = self
            .engine
            .run(candidates, progress, cancel, &mut |v: Verdict| {
                if let Some(observe) = &self.observer {
                    observe(&v);
                }
                if v.is_alive() {
                    if let Some(n) = alive_per_source.get_mut(usize::from(v.candidate.source)) {
                        *n += 1;
                    }
                    alive.push(v);
                }
            })
            .await?;
        alive.sort_by_key(|v| v.outcome.as_ref().map(|a| a.latency).unwrap_or_default());
        Ok(RoundReport {
            started,
            finished: SystemTime::now(),
            sources: gathered.stats,
            alive_per_source,
            scraped,
            unique,
            alive,
            run,
        })
    }
}

/// Says, per source, why nothing could be checked.
fn no_usable_source(stats: &[SourceStats]) -> RoundError {
    let why: Vec<String> = stats
        .iter()
        .map(|s| match &s.error {
            Some(e) => format!("{}: {e}", s.name),
            None => {
                let rejected: Vec<String> = s.rejected.iter().map(|(r, n)| format!("{} {n}", r.as_str())).collect();
                format!("{}: no valid proxies in {} lines (rejected: {})", s.name, s.lines, rejected.join(", "))
            }
        })
        .collect();
    RoundError::NoUsableSource(if why.is_empty() { "no sources configured".into() } else { why.join("; ") })
}

/// Resolves every distinct hostname once, concurrently.
async fn resolve_names(found: &[source::Found], concurrency: usize) -> HashMap<String, Result<Vec<IpAddr>, String>> {
    let mut names: Vec<&str> = found
        .iter()
        .filter_map(|f| match &f.proxy.host {
            Host::Name(n) => Some(n.as_ref()),
            Host::Ip(_) => None,
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let names: Vec<String> = names.into_iter().map(str::to_string).collect();
    futures_util::stream::iter(names)
        .map(|name: String| async move {
            let r = match tokio::net::lookup_host((name.as_str(), 0)).await {
                Ok(addrs) => {
                    let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    if ips.is_empty() { Err("no addresses".to_string()) } else { Ok(ips) }
                }
                Err(e) => Err(e.to_string()),
            };
            (name, r)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
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
