//! The immutable pool the API serves: live proxies of the last complete round, their
//! verdicts, indexes for the API's filters, pre-rendered hot responses, and the round's
//! summary. Built off to the side after a round and swapped in whole (`ArcSwap`), so
//! readers never block and never see a half-built pool.
//!
//! [`SnapshotData`] is the persisted form (JSON in the file store and Redis, rows in
//! SQLite); [`Snapshot`] adds the derived indexes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::check::{Mode, Verdict};
use crate::round::RoundReport;

/// Version of the persisted layout.
pub const FORMAT_VERSION: u32 = 1;

/// One live proxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyEntry {
    /// `scheme://host:port` (no credentials).
    pub proxy: String,
    pub protocol: String,
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub latency_ms: u32,
    pub connect_ms: u32,
    /// Forwards plain HTTP requests.
    pub forward: bool,
    /// Tunnels (CONNECT or SOCKS): usable for HTTPS.
    pub tunnel: bool,
    /// The source that listed it first.
    pub source: String,
    /// `transparent`, `anonymous`, `elite` or `unknown` (also what snapshots from before
    /// it was kept load with).
    #[serde(default = "unknown")]
    pub anonymity: String,
    /// The address the judge saw the proxy's requests come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_ip: Option<String>,
    /// Share of its last checks (up to [`crate::history::WINDOW`]) that found it alive;
    /// from the history, 0 in snapshots from before it was kept.
    #[serde(default)]
    pub uptime: f64,
    /// Checks recorded in its history (rounds and rechecks).
    #[serde(default)]
    pub checks: u32,
    /// When it was first seen (Unix seconds).
    #[serde(default)]
    pub first_seen: f64,
    /// Its last successful check (Unix seconds).
    #[serde(default)]
    pub last_ok: f64,
    /// [`score`], computed when the snapshot is built.
    #[serde(default)]
    pub score: f64,
}

/// How good a proxy is to hand out, in 0..=1: `uptime × 1000 / (1000 + latency_ms) ×
/// (0.5 + 0.5 × min(1, known / 24 h))`, where `known` is the time since it was first
/// seen. A proxy always alive, fast and known for a day scores near 1; one seen once
/// scores at most 0.5; one second of latency halves it (two: a third).
pub fn score(uptime: f64, latency_ms: u32, first_seen: f64, now: f64) -> f64 {
    let known = if first_seen > 0.0 { (now - first_seen).max(0.0) } else { 0.0 };
    let track = 0.5 + 0.5 * (known / 86_400.0).min(1.0);
    uptime.clamp(0.0, 1.0) * 1000.0 / (1000.0 + f64::from(latency_ms)) * track
}

/// Unix milliseconds → seconds.
fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn unknown() -> String {
    crate::check::Anonymity::Unknown.as_str().to_string()
}

/// What one source contributed to a round.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub name: String,
    pub fetched_at: Option<f64>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Fetch attempts made (1 + retries used); 0 in snapshots from before it was kept.
    #[serde(default)]
    pub attempts: u32,
    pub bytes: u64,
    pub lines: u64,
    pub valid: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    pub alive: u64,
    /// Proxies found to speak another protocol than this source said (checked as the one
    /// they speak); 0 in snapshots from before it was kept.
    #[serde(default)]
    pub relabelled: u64,
}

impl SourceSummary {
    /// What a source did in a round, as `/stat` and the store show it.
    pub fn new(s: &crate::source::SourceStats, alive: u64, relabelled: u64) -> Self {
        SourceSummary {
            name: s.name.clone(),
            fetched_at: s.fetched_at.map(unix),
            ok: s.error.is_none(),
            error: s.error.as_ref().map(|e| e.to_string()),
            duration_ms: u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX),
            attempts: s.attempts,
            bytes: s.bytes,
            lines: s.lines,
            valid: s.valid,
            duplicates: s.duplicates,
            rejected: s.rejected.iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect(),
            alive,
            relabelled,
        }
    }
}

/// The round a snapshot came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub round_id: u64,
    pub mode: String,
    pub started_at: f64,
    pub finished_at: f64,
    pub duration_ms: u64,
    pub scraped: u64,
    pub unique: u64,
    pub checked: u64,
    pub alive: u64,
    pub dead: u64,
    pub dead_by_reason: BTreeMap<String, u64>,
    pub retries: u64,
    pub local_requeues: u64,
    pub concurrency: usize,
    pub sources: Vec<SourceSummary>,
}

/// The persisted snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub version: u32,
    pub round: RoundSummary,
    /// Fastest first.
    pub proxies: Vec<ProxyEntry>,
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Characters kept as they are in a URL's user and password (RFC 3986 unreserved).
const USERINFO: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

impl ProxyEntry {
    /// The scheme a client speaks to this proxy: `http` for HTTP proxies whatever the list
    /// said (`https` there means "tunnels"); `socks5h`/`socks4a` with `dns_remote` (the
    /// client lets the proxy resolve names).
    pub fn scheme(&self, dns_remote: bool) -> &'static str {
        match (self.protocol.as_str(), dns_remote) {
            ("socks5", true) => "socks5h",
            ("socks5", false) => "socks5",
            ("socks4", true) => "socks4a",
            ("socks4", false) => "socks4",
            _ => "http",
        }
    }

    /// `scheme://[user:pass@]host:port`: what a client needs to use the proxy, as given.
    pub fn url(&self, dns_remote: bool) -> Cow<'_, str> {
        let scheme = self.scheme(dns_remote);
        // `proxy` already is this URL when there is nothing to add (the hot case).
        if self.username.is_none()
            && self.proxy.starts_with(scheme)
            && self.proxy.get(scheme.len()..).is_some_and(|r| r.starts_with("://"))
        {
            return Cow::Borrowed(&self.proxy);
        }
        match &self.username {
            Some(u) => {
                let enc = |s: &str| percent_encoding::utf8_percent_encode(s, USERINFO).to_string();
                let p = self.password.as_deref().unwrap_or("");
                Cow::Owned(format!("{scheme}://{}:{}@{}:{}", enc(u), enc(p), self.host, self.port))
            }
            None => Cow::Owned(format!("{scheme}://{}:{}", self.host, self.port)),
        }
    }

    fn from_verdict(v: &Verdict, sources: &[SourceSummary]) -> Option<Self> {
        let a = v.outcome.as_ref().ok()?;
        let p = &v.candidate.proxy;
        Some(Self {
            proxy: p.to_string(),
            protocol: p.protocol.as_str().to_string(),
            host: p.host.to_string(),
            port: p.port,
            username: p.credentials.as_ref().map(|c| c.username.clone()),
            password: p.credentials.as_ref().map(|c| c.password.clone()),
            latency_ms: ms(a.latency),
            connect_ms: ms(a.connect),
            forward: a.forward,
            tunnel: a.tunnel,
            source: sources.get(usize::from(v.candidate.source)).map(|s| s.name.clone()).unwrap_or_default(),
            anonymity: a.anonymity.as_str().to_string(),
            exit_ip: a.exit_ip.map(|ip| ip.to_string()),
            uptime: 0.0,
            checks: 0,
            first_seen: 0.0,
            last_ok: 0.0,
            score: 0.0,
        })
    }

    /// Its key in the history.
    pub fn key(&self) -> Option<crate::history::Key> {
        crate::history::Key::parse(&self.host, self.port)
    }

    /// Copies its track record from the history.
    pub fn annotate(&mut self, r: &crate::history::Record) {
        self.uptime = r.uptime();
        self.checks = r.checks;
        self.first_seen = secs(r.first_seen);
        self.last_ok = secs(r.last_ok);
    }
}

impl SnapshotData {
    /// The persisted form of a finished round.
    pub fn from_report(r: &RoundReport, round_id: u64, mode: Mode, concurrency: usize) -> Self {
        let sources: Vec<SourceSummary> = r
            .sources
            .iter()
            .zip(r.alive_per_source.iter().zip(&r.relabelled_per_source))
            .map(|(s, (alive, relabelled))| SourceSummary::new(s, *alive, *relabelled))
            .collect();
        let proxies = r.alive.iter().filter_map(|v| ProxyEntry::from_verdict(v, &sources)).collect();
        let run = &r.run;
        Self {
            version: FORMAT_VERSION,
            round: RoundSummary {
                round_id,
                mode: mode.as_str().to_string(),
                started_at: unix(r.started),
                finished_at: unix(r.finished),
                duration_ms: r.finished.duration_since(r.started).unwrap_or_default().as_millis() as u64,
                scraped: r.scraped,
                unique: r.unique,
                checked: run.checked,
                alive: run.alive,
                dead: run.checked - run.alive,
                dead_by_reason: run.dead_by_reason.iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect(),
                retries: run.retries,
                local_requeues: run.local_requeues,
                concurrency,
                sources,
            },
            proxies,
        }
    }
}

/// What `protocol=` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Forwards plain HTTP.
    Http,
    /// HTTP proxy that tunnels (CONNECT): usable for HTTPS.
    Https,
    Socks4,
    Socks5,
}

impl Selector {
    pub const ALL: [Selector; 4] = [Self::Http, Self::Https, Self::Socks4, Self::Socks5];

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            "socks4" => Some(Self::Socks4),
            "socks5" => Some(Self::Socks5),
            _ => None,
        }
    }

    /// The `protocol=` value that selects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Socks4 => "socks4",
            Self::Socks5 => "socks5",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn matches(self, e: &ProxyEntry, connect_only: bool) -> bool {
        let http_family = e.protocol == "http" || e.protocol == "https";
        match self {
            // Capabilities are unknown after connect-only checks: trust the declared protocol.
            Self::Http if connect_only => e.protocol == "http",
            Self::Https if connect_only => e.protocol == "https",
            Self::Http => http_family && e.forward,
            Self::Https => http_family && e.tunnel,
            Self::Socks4 => e.protocol == "socks4",
            Self::Socks5 => e.protocol == "socks5",
        }
    }
}

/// First index in `0..n` where `pred` is false (`pred` must be true then false).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// The entries a query selected, by index into the snapshot, fastest first.
pub enum Selection<'a> {
    /// `0..n`.
    Range(usize),
    Slice(&'a [u32]),
    Owned(Vec<u32>),
}

impl Selection<'_> {
    pub fn len(&self) -> usize {
        match self {
            Selection::Range(n) => *n,
            Selection::Slice(s) => s.len(),
            Selection::Owned(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k`-th selected entry index.
    pub fn get(&self, k: usize) -> u32 {
        match self {
            Selection::Range(_) => k as u32,
            Selection::Slice(s) => s[k],
            Selection::Owned(v) => v[k],
        }
    }
}

/// The served pool: data plus indexes and pre-rendered answers.
#[derive(Debug)]
pub struct Snapshot {
    pub data: SnapshotData,
    /// Loaded from the store at start and not yet replaced by a fresh round.
    pub loaded: bool,
    by_selector: [Vec<u32>; 4],
    /// `all=1` as text, pre-rendered.
    pub text_all: Bytes,
    /// Some entries carry credentials (the pre-rendered text omits them).
    pub has_credentials: bool,
    /// Live proxies by anonymity level (counted once, for `/stat` and `/metrics`).
    by_anonymity: std::collections::BTreeMap<&'static str, usize>,
    /// Position of each entry when ordered by score, best first.
    score_rank: Vec<u32>,
    /// The oldest `last_ok` in the pool (Unix seconds; 0 when empty or unknown).
    pub oldest_ok: f64,
    /// Entry index by where the proxy listens.
    by_key: std::collections::HashMap<crate::history::Key, u32>,
    /// Each entry as JSON, rendered the first time it is asked for (a pool served as
    /// text never pays for it).
    json: Box<[std::sync::OnceLock<Box<[u8]>>]>,
}

/// What `/get-proxy` filters on, beyond the protocol selectors.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub selectors: Vec<Selector>,
    pub max_latency_ms: Option<u32>,
    pub anonymity: Vec<crate::check::Anonymity>,
    /// At least this share of its recent checks alive (0..=1).
    pub min_uptime: Option<f64>,
    /// At least this many checks on record.
    pub min_checks: Option<u32>,
}

impl Snapshot {
    pub fn new(mut data: SnapshotData, loaded: bool) -> Self {
        data.proxies.sort_by_key(|e| e.latency_ms);
        // Snapshots from before the scheme fix wrote `https://` for HTTP proxies that tunnel.
        for e in &mut data.proxies {
            if let Some(rest) = e.proxy.strip_prefix("https://") {
                e.proxy = format!("http://{rest}");
            }
        }
        let connect_only = data.round.mode == Mode::ConnectOnly.as_str();
        let by_selector = Selector::ALL.map(|s| {
            data.proxies.iter().enumerate().filter(|(_, e)| s.matches(e, connect_only)).map(|(i, _)| i as u32).collect()
        });
        let mut text = String::with_capacity(data.proxies.len() * 28);
        for e in &data.proxies {
            text.push_str(&e.proxy);
            text.push('\n');
        }
        let has_credentials = data.proxies.iter().any(|e| e.username.is_some());
        let now = unix(SystemTime::now());
        for e in &mut data.proxies {
            e.score = score(e.uptime, e.latency_ms, e.first_seen, now);
        }
        let mut order: Vec<u32> = (0..data.proxies.len() as u32).collect();
        order.sort_by(|a, b| data.proxies[*b as usize].score.total_cmp(&data.proxies[*a as usize].score));
        let mut score_rank = vec![0u32; order.len()];
        for (rank, i) in order.iter().enumerate() {
            score_rank[*i as usize] = rank as u32;
        }
        let by_key = data.proxies.iter().enumerate().filter_map(|(i, e)| Some((e.key()?, i as u32))).collect();
        // An entry without a track record (a snapshot from before the history) counts as
        // checked when its round ended.
        let finished = data.round.finished_at;
        let oldest_ok = data
            .proxies
            .iter()
            .map(|e| if e.last_ok > 0.0 { e.last_ok } else { finished })
            .filter(|t| *t > 0.0)
            .min_by(f64::total_cmp)
            .unwrap_or(0.0);
        let mut by_anonymity: std::collections::BTreeMap<&'static str, usize> =
            crate::check::Anonymity::ALL.iter().map(|a| (a.as_str(), 0)).collect();
        for e in &data.proxies {
            if let Some(n) = crate::check::Anonymity::parse(&e.anonymity).and_then(|a| by_anonymity.get_mut(a.as_str()))
            {
                *n += 1;
            }
        }
        let json = data.proxies.iter().map(|_| std::sync::OnceLock::new()).collect();
        Self {
            json,
            data,
            loaded,
            by_selector,
            text_all: Bytes::from(text),
            has_credentials,
            by_anonymity,
            score_rank,
            oldest_ok,
            by_key,
        }
    }

    pub fn empty() -> Self {
        Self::new(SnapshotData { version: FORMAT_VERSION, ..Default::default() }, false)
    }

    /// Age: time since the round that produced it ended.
    pub fn age(&self) -> Duration {
        let finished = UNIX_EPOCH + Duration::from_secs_f64(self.data.round.finished_at.max(0.0));
        SystemTime::now().duration_since(finished).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.data.proxies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.proxies.is_empty()
    }

    /// Entries (fastest first) matching any of `selectors` (all if empty) and at most
    /// `max_latency_ms`. With at most one selector nothing is copied: entries are kept in
    /// latency order, so a latency bound is a prefix.
    pub fn select(&self, selectors: &[Selector], max_latency_ms: Option<u32>) -> Selection<'_> {
        let within = |n: usize, at: &dyn Fn(usize) -> u32| match max_latency_ms {
            None => n,
            Some(m) => partition_point(n, |i| at(i) <= m),
        };
        match selectors {
            [] => Selection::Range(within(self.data.proxies.len(), &|i| self.data.proxies[i].latency_ms)),
            [one] => {
                let list = &self.by_selector[one.index()];
                let n = within(list.len(), &|i| self.data.proxies[list[i] as usize].latency_ms);
                Selection::Slice(&list[..n])
            }
            many => {
                let mut v: Vec<u32> = many
                    .iter()
                    .flat_map(|s| self.by_selector[s.index()].iter().copied())
                    .filter(|i| max_latency_ms.is_none_or(|m| self.data.proxies[*i as usize].latency_ms <= m))
                    .collect();
                v.sort_unstable();
                v.dedup();
                Selection::Owned(v)
            }
        }
    }

    /// [`Self::select`], then only the proxies that pass the rest of `f`: anonymity one
    /// of `f.anonymity` (all when empty), uptime and checks at least the minimums.
    pub fn select_filtered(&self, f: &Filter) -> Selection<'_> {
        let all = self.select(&f.selectors, f.max_latency_ms);
        if f.anonymity.is_empty() && f.min_uptime.is_none() && f.min_checks.is_none() {
            return all;
        }
        let wanted = |i: u32| {
            let e = self.entry(i);
            (f.anonymity.is_empty() || f.anonymity.iter().any(|a| a.as_str() == e.anonymity))
                && f.min_uptime.is_none_or(|m| e.uptime >= m)
                && f.min_checks.is_none_or(|m| e.checks >= m)
        };
        Selection::Owned((0..all.len()).map(|k| all.get(k)).filter(|i| wanted(*i)).collect())
    }

    /// The first `n` of `picked` by score, best first (ties: faster first).
    pub fn best_by_score(&self, sel: &Selection<'_>, n: usize) -> Vec<u32> {
        let mut v: Vec<u32> = (0..sel.len()).map(|k| sel.get(k)).collect();
        let rank = |i: &u32| self.score_rank.get(*i as usize).copied().unwrap_or(u32::MAX);
        if n < v.len() {
            v.select_nth_unstable_by_key(n, rank);
            v.truncate(n);
        }
        v.sort_unstable_by_key(rank);
        v
    }

    /// The served entry listening at `key`.
    pub fn find(&self, key: &crate::history::Key) -> Option<&ProxyEntry> {
        self.by_key.get(key).map(|i| self.entry(*i))
    }

    /// Live proxies by anonymity level.
    pub fn count_by_anonymity(&self) -> &std::collections::BTreeMap<&'static str, usize> {
        &self.by_anonymity
    }

    pub fn entry(&self, i: u32) -> &ProxyEntry {
        &self.data.proxies[i as usize]
    }

    /// Entry `i` as JSON, exactly as `serde_json` writes it (rendered once).
    pub fn entry_json(&self, i: u32) -> &[u8] {
        self.json[i as usize].get_or_init(|| {
            serde_json::to_vec(self.entry(i)).expect("a ProxyEntry always serializes").into_boxed_slice()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(proxy: &str, protocol: &str, latency: u32, forward: bool, tunnel: bool) -> ProxyEntry {
        let (host, port) = proxy.split_once("://").and_then(|(_, a)| a.rsplit_once(':')).unwrap();
        ProxyEntry {
            proxy: proxy.into(),
            protocol: protocol.into(),
            host: host.into(),
            port: port.parse().unwrap(),
            username: None,
            password: None,
            latency_ms: latency,
            connect_ms: 1,
            forward,
            tunnel,
            source: "s".into(),
            anonymity: "elite".into(),
            exit_ip: None,
            uptime: 1.0,
            checks: 1,
            first_seen: 0.0,
            last_ok: 0.0,
            score: 0.0,
        }
    }

    #[test]
    fn selectors_and_order() {
        let data = SnapshotData {
            version: 1,
            round: RoundSummary { mode: "full-http".into(), ..Default::default() },
            proxies: vec![
                entry("http://a:1", "http", 50, true, true),
                entry("http://b:1", "http", 10, true, false),
                entry("https://c:1", "https", 30, false, true),
                entry("socks5://d:1", "socks5", 20, false, true),
            ],
        };
        // `c` was written by a version that gave tunnelling HTTP proxies an `https://` URL:
        // it loads as `http://` (clients read `https://` as TLS to the proxy), and is still
        // selected as a tunnelling HTTP proxy.
        let s = Snapshot::new(data, false);
        let names = |v: Selection<'_>| (0..v.len()).map(|k| s.entry(v.get(k)).proxy.clone()).collect::<Vec<_>>();
        assert_eq!(names(s.select(&[], None)), ["http://b:1", "socks5://d:1", "http://c:1", "http://a:1"]);
        assert_eq!(names(s.select(&[Selector::Http], None)), ["http://b:1", "http://a:1"]);
        assert_eq!(names(s.select(&[Selector::Https], None)), ["http://c:1", "http://a:1"]);
        assert_eq!(names(s.select(&[Selector::Https, Selector::Socks5], Some(30))), ["socks5://d:1", "http://c:1"]);
        assert_eq!(names(s.select(&[Selector::Http], Some(49))), ["http://b:1"]);
        assert_eq!(names(s.select(&[], Some(20))), ["http://b:1", "socks5://d:1"]);
        assert!(s.select(&[], Some(5)).is_empty());
        assert!(s.select(&[Selector::Socks4], None).is_empty());
        assert_eq!(&s.text_all[..], b"http://b:1\nsocks5://d:1\nhttp://c:1\nhttp://a:1\n");
        let c = s.entry(2);
        assert_eq!((c.url(false), c.url(true)), ("http://c:1".into(), "http://c:1".into()));
        let d = s.entry(1);
        assert_eq!((d.url(false), d.url(true)), ("socks5://d:1".into(), "socks5h://d:1".into()));
        let mut with_creds = d.clone();
        (with_creds.username, with_creds.password) = (Some("u ser@x".into()), Some("p:a+ss/1".into()));
        assert_eq!(with_creds.url(false), "socks5://u%20ser%40x:p%3Aa%2Bss%2F1@d:1");
    }

    /// Each entry's JSON, rendered once and joined, is what serde writes for the list
    /// (credentials, an exit address, a source that needs escaping, odd floats).
    #[test]
    fn entry_json_is_what_serde_writes() {
        let mut odd = entry("socks5://d:1", "socks5", 20, false, true);
        (odd.username, odd.password, odd.exit_ip) =
            (Some("u\"ser".into()), Some("p\\w".into()), Some("1.2.3.4".into()));
        odd.source = "file:///lists/\"quoted\"\u{7f}\n\u{1}é.txt".into();
        (odd.uptime, odd.first_seen, odd.score) = (1.0 / 3.0, 1.7e9 + 0.125, 1e-300);
        let data = SnapshotData {
            version: 1,
            round: RoundSummary::default(),
            proxies: vec![entry("http://a:1", "http", 50, true, true), odd],
        };
        let s = Snapshot::new(data, false);
        let joined = format!(
            "[{}]",
            (0..2).map(|i| String::from_utf8(s.entry_json(i).to_vec()).unwrap()).collect::<Vec<_>>().join(",")
        );
        assert_eq!(joined, serde_json::to_string(&s.data.proxies).unwrap());
        assert!(std::ptr::eq(s.entry_json(1), s.entry_json(1)), "rendered once");
    }

    #[test]
    fn the_score_is_what_the_docs_say() {
        let now = 1_000_000.0;
        let day = 86_400.0;
        assert_eq!(score(1.0, 0, now - day, now), 1.0);
        assert_eq!(score(1.0, 0, now, now), 0.5, "seen once: at most half");
        assert_eq!(score(1.0, 1000, now - 2.0 * day, now), 0.5, "a second of latency halves it");
        assert!((score(0.5, 0, now - day / 2.0, now) - 0.375).abs() < 1e-12);
        assert_eq!(score(0.0, 10, now - day, now), 0.0);
        assert_eq!(score(1.0, 0, 0.0, now), 0.5, "unknown first sight counts as new");
    }

    #[test]
    fn filters_and_score_order() {
        let now = unix(SystemTime::now());
        let mut proxies = vec![
            entry("http://a:1", "http", 10, true, true),
            entry("http://b:1", "http", 20, true, true),
            entry("socks5://c:1", "socks5", 30, false, true),
            entry("socks5://d:1", "socks5", 40, false, true),
        ];
        // a: flaky; b: steady, new; c: steady, known for a day; d: one check only, slower.
        for (e, (uptime, checks, known)) in
            proxies.iter_mut().zip([(0.5, 10, 0.0), (1.0, 10, 0.0), (1.0, 10, 86_400.0), (1.0, 1, 0.0)])
        {
            (e.uptime, e.checks, e.first_seen, e.last_ok) = (uptime, checks, now - known, now - 5.0);
        }
        let data = SnapshotData {
            version: 1,
            round: RoundSummary { mode: "full-http".into(), ..Default::default() },
            proxies,
        };
        let s = Snapshot::new(data, false);
        let hosts = |v: &[u32]| v.iter().map(|i| s.entry(*i).host.clone()).collect::<Vec<_>>();
        let all = s.select(&[], None);
        // c 0.971, b 0.490, d 0.481, a 0.248.
        assert_eq!(hosts(&s.best_by_score(&all, 4)), ["c", "b", "d", "a"]);
        assert_eq!(hosts(&s.best_by_score(&all, 2)), ["c", "b"]);
        let f = |min_uptime, min_checks| Filter { min_uptime, min_checks, ..Filter::default() };
        let sel = |f: &Filter| {
            let v = s.select_filtered(f);
            hosts(&(0..v.len()).map(|k| v.get(k)).collect::<Vec<_>>())
        };
        assert_eq!(sel(&f(Some(0.9), None)), ["b", "c", "d"]);
        assert_eq!(sel(&f(Some(0.5), Some(2))), ["a", "b", "c"]);
        assert_eq!(sel(&Filter { selectors: vec![Selector::Socks5], ..f(None, Some(10)) }), ["c"]);
        assert!((now - s.oldest_ok - 5.0).abs() < 1.0);
        assert_eq!(s.find(&crate::history::Key::parse("c", 1).unwrap()).map(|e| e.latency_ms), Some(30));
        assert!(s.find(&crate::history::Key::parse("c", 2).unwrap()).is_none());
    }
}
