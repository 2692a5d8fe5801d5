//! Sources: where proxy lists come from, how they are fetched and parsed, and what each
//! one contributed (per-source stats).
//!
//! [`collect`] fetches and parses one source (with retries) and says what it held;
//! [`Dedupe`] drops what an earlier-parsed source already listed. A round runs one
//! `collect` per source at once and feeds each source's proxies to the checks as soon as
//! that source is parsed. [`gather`] does all sources and the dedupe in one call (tests,
//! tools). A failing source is reported with its reason and never stops the others.

// Bytes from the network and from lists meet no unchecked arithmetic or indexing here.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

pub mod fetch;
pub mod parse;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

pub use fetch::FetchSettings;
pub use parse::{Format, ParseOptions, Reject, RejectReason};

use crate::proxy::{Protocol, Proxy};

/// Where a source lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Url(url::Url),
    File(PathBuf),
}

impl fmt::Display for Location {
    /// URLs are shown without their user part and query values, which may be tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Url(u) => f.write_str(&redacted(u)),
            Location::File(p) => write!(f, "{}", p.display()),
        }
    }
}

pub use crate::redact::{redacted, redacted_str};

impl Location {
    /// `http://…` and `https://…` are URLs; anything else is a file path
    /// (`file://` URLs are accepted as paths).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = url::Url::parse(s).map_err(|e| format!("invalid URL `{}`: {e}", redacted_str(s)))?;
            if url.host_str().is_none() {
                return Err(format!("URL `{}` has no host", redacted_str(s)));
            }
            return Ok(Location::Url(url));
        }
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(Location::File(PathBuf::from(path)));
        }
        if s.contains("://") {
            return Err(format!("`{}`: only http://, https:// and file paths are sources", redacted_str(s)));
        }
        if s.trim().is_empty() {
            return Err("empty source".into());
        }
        Ok(Location::File(PathBuf::from(s)))
    }
}

/// A configured source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    pub location: Location,
    /// Protocol for lines without a scheme (default `http`).
    pub protocol: Option<Protocol>,
    /// What users see for this source (`/stat`, logs, metrics, the `source` field): the
    /// configured `name`, else the redacted location.
    pub name: Option<String>,
}

impl SourceSpec {
    pub fn new(location: Location, protocol: Option<Protocol>) -> Self {
        Self { location, protocol, name: None }
    }

    /// The name users see: the configured one, else the location with secrets redacted.
    pub fn shown(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.location.to_string())
    }
}

/// Why a source produced nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("HTTP status {0}")]
    Status(u16),
    /// A local file that cannot be read (missing, a directory, no permission): not retried.
    #[error("cannot read the file: {0}")]
    File(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("body larger than the {0}-byte cap")]
    TooLarge(u64),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("read failed: {0}")]
    Io(String),
    #[error("HTTP client could not be built: {0}")]
    Client(String),
    /// The SSRF guard refused the URL, a redirect or every address its host resolves to.
    #[error("refused: {0}")]
    Blocked(String),
    #[error("redirected more than {0} times")]
    Redirects(usize),
    #[error("binary content at byte {0}, not a proxy list (a compressed file needs a Content-Encoding header)")]
    Binary(usize),
    #[error("lists more than {0} proxies (aggregation.source_max_proxies)")]
    TooManyProxies(usize),
    /// The parser failed on this body (a bug to report): the source is skipped.
    #[error("the list parser failed: {0}")]
    Parser(String),
}

impl SourceError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        // The source's name (its URL, password redacted) is shown beside the error already.
        let e = e.without_url();
        if e.is_timeout() {
            // The whole-fetch deadline is ours (see `fetch`); reqwest's own is the connect's.
            SourceError::Timeout(fetch::CONNECT_TIMEOUT)
        } else if e.is_connect() {
            SourceError::Connect(error_chain(&e))
        } else {
            SourceError::Io(error_chain(&e))
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Status(s) => *s >= 500 || *s == 429 || *s == 408,
            SourceError::Timeout(_) | SourceError::Connect(_) | SourceError::Io(_) => true,
            SourceError::TooLarge(_)
            | SourceError::File(_)
            | SourceError::Client(_)
            | SourceError::Blocked(_)
            | SourceError::Redirects(_)
            | SourceError::Binary(_)
            | SourceError::TooManyProxies(_)
            | SourceError::Parser(_) => false,
        }
    }

    /// Stable short name for stats and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Status(_) => "http_status",
            SourceError::File(_) => "file",
            SourceError::Timeout(_) => "timeout",
            SourceError::TooLarge(_) => "too_large",
            SourceError::Connect(_) => "connect",
            SourceError::Io(_) => "io",
            SourceError::Client(_) => "client",
            SourceError::Blocked(_) => "blocked",
            SourceError::Redirects(_) => "redirects",
            SourceError::Binary(_) => "binary",
            SourceError::TooManyProxies(_) => "too_many_proxies",
            SourceError::Parser(_) => "parser",
        }
    }
}

pub(crate) use crate::error_chain;

/// What one source contributed in one round.
#[derive(Clone, Debug, Default)]
pub struct SourceStats {
    /// The source as shown to users: its configured name, else its redacted location.
    pub name: String,
    pub fetched_at: Option<SystemTime>,
    /// From the first request to the parsed list, retries and backoff included.
    pub duration: Duration,
    /// Fetch attempts made (1 + retries used).
    pub attempts: u32,
    pub bytes: u64,
    pub format: Option<Format>,
    /// Lines (or JSON items) that were not blank or comments.
    pub lines: u64,
    /// Candidates this source added (after dedupe and guards).
    pub valid: u64,
    pub duplicates: u64,
    /// Rejected lines by reason (duplicates included).
    pub rejected: BTreeMap<RejectReason, u64>,
    /// The first few rejected lines, for the report.
    pub samples: Vec<Reject>,
    pub error: Option<SourceError>,
}

impl SourceStats {
    pub(crate) fn reject(&mut self, r: Reject) {
        let n = self.rejected.entry(r.reason).or_default();
        *n = n.saturating_add(1);
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(r);
        }
    }

    /// Adds what was counted beside the parser (valid, duplicates and their rejects).
    pub(crate) fn absorb(&mut self, other: SourceStats) {
        self.valid = self.valid.saturating_add(other.valid);
        self.duplicates = self.duplicates.saturating_add(other.duplicates);
        for (reason, n) in other.rejected {
            let total = self.rejected.entry(reason).or_default();
            *total = total.saturating_add(n);
        }
        let room = MAX_SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }
}

const MAX_SAMPLES: usize = 20;

/// One candidate for checking: the proxy, and which source brought it first.
#[derive(Clone, Debug)]
pub struct Found {
    pub proxy: Proxy,
    pub source: u16,
}

/// Proxies seen so far in a round, across sources: the first source parsed wins.
///
/// It keeps a 64-bit fingerprint per proxy (a keyed SipHash of its dedupe key, the key
/// random per process), not the key: 8 bytes a proxy instead of a copy of it, which matters
/// because the set lives while checks run. Two different proxies share a fingerprint with
/// a chance of about n²/2⁶⁵ (3·10⁻⁸ for a million), and would then be counted as one.
///
/// The fingerprints are spread over [`DEDUPE_SHARDS`] sets by their top bits: a set that
/// grows copies itself into one twice its size, and one set of a million would hold
/// 9 MiB and 18 MiB at once at that moment; a shard's growth costs 1/64 of that. (Each
/// insert also takes one shard's lock, not the whole set's.)
#[derive(Debug)]
pub struct Dedupe {
    shards: Box<[Mutex<HashSet<u64>>]>,
    keys: std::hash::RandomState,
}

/// See [`Dedupe`].
pub const DEDUPE_SHARDS: usize = 64;
/// A fingerprint shifted right by this is its shard: its top 6 bits.
const SHARD_SHIFT: u32 = 58;
const _: () = assert!(DEDUPE_SHARDS == 1 << (u64::BITS - SHARD_SHIFT));

impl Default for Dedupe {
    fn default() -> Self {
        Self { shards: (0..DEDUPE_SHARDS).map(|_| Mutex::default()).collect(), keys: Default::default() }
    }
}

impl Dedupe {
    /// Whether `proxy` is new (and now seen). The lock is held for one insert.
    pub fn admit(&self, proxy: &Proxy) -> bool {
        use std::hash::BuildHasher;
        let fingerprint = self.keys.hash_one(proxy.dedup_key());
        // The top bits pick the shard. The set hashes the fingerprint again for its own
        // buckets (keep it so: with a pass-through hasher every entry of a shard would
        // share its top bits, which hashbrown's control bytes are made of).
        let shard = fingerprint.checked_shr(SHARD_SHIFT).and_then(|s| usize::try_from(s).ok()).unwrap_or(0);
        self.shards
            .get(shard)
            .map(|set| set.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(fingerprint))
            .unwrap_or(true)
    }

    /// Forgets everything (every source is in): the memory goes back before checks end.
    pub fn release(&self) {
        for set in &self.shards {
            *set.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = HashSet::new();
        }
    }

    /// Fingerprints held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|set| set.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a source's proxies go as they are parsed, on the blocking pool (a sink may block
/// its thread; never call it from async code).
pub(crate) trait ProxySink: Send + 'static {
    /// Takes one proxy and its line number; `false`: no more are wanted.
    fn take(&mut self, proxy: Proxy, line: u32) -> bool;
    /// The parse is over and the source is good: hand over anything still held.
    fn finish(&mut self) {}
    /// Time spent waiting for the receiver rather than parsing.
    fn waited(&self) -> Duration {
        Duration::ZERO
    }
}

impl ProxySink for Vec<(Proxy, u32)> {
    fn take(&mut self, proxy: Proxy, line: u32) -> bool {
        self.push((proxy, line));
        true
    }
}

/// Proxies per hand-over from a parser to its round.
pub(crate) const BATCH: usize = 256;

/// A round's feed from one parser: proxies in batches of [`BATCH`] (one hand-over, and
/// one wake of the round, per batch), each waiting for room in the channel: backpressure
/// from the engine down to the parser. A closed channel stops the parse.
pub(crate) struct Batches {
    tx: tokio::sync::mpsc::Sender<Vec<(Proxy, u32)>>,
    batch: Vec<(Proxy, u32)>,
    waited: Duration,
}

impl Batches {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<Vec<(Proxy, u32)>>) -> Self {
        Self { tx, batch: Vec::new(), waited: Duration::ZERO }
    }

    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(batch)) => {
                let since = Instant::now();
                let sent = self.tx.blocking_send(batch).is_ok();
                self.waited = self.waited.saturating_add(since.elapsed());
                sent
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl ProxySink for Batches {
    fn take(&mut self, proxy: Proxy, line: u32) -> bool {
        self.batch.push((proxy, line));
        self.batch.len() < BATCH || self.flush()
    }

    fn finish(&mut self) {
        self.flush();
    }

    fn waited(&self) -> Duration {
        self.waited
    }
}

/// Fetches and parses one source. Returns its proxies with their line numbers (nothing
/// on error) and its stats so far (`valid` and `duplicates` are the caller's to count).
pub async fn collect(
    client: &reqwest::Client,
    spec: &SourceSpec,
    settings: &FetchSettings,
    allow_private: bool,
) -> (Vec<(Proxy, u32)>, SourceStats) {
    let (found, st) = fetch_into(client, spec, settings, allow_private, Vec::new()).await;
    (found.unwrap_or_default(), st)
}

/// Fetches one source and parses it into `sink` as it goes (see
/// [`parse::parse_document_with`]: a source refused whole hands over nothing). Returns the
/// sink (`None` if the parser panicked: what it had handed over stays handed over) and the
/// source's stats so far (`valid` and `duplicates` are the caller's to count; `duration`
/// leaves out the time the parser waited for the sink's receiver).
pub(crate) async fn fetch_into<K: ProxySink>(
    client: &reqwest::Client,
    spec: &SourceSpec,
    settings: &FetchSettings,
    allow_private: bool,
    sink: K,
) -> (Option<K>, SourceStats) {
    let started = Instant::now();
    let name = spec.shown();
    let mut st = SourceStats { name: name.clone(), fetched_at: Some(SystemTime::now()), ..Default::default() };
    let (body, attempts) = fetch::fetch(client, &spec.location, &name, settings).await;
    st.attempts = attempts;
    let opts = ParseOptions {
        default_protocol: spec.protocol.unwrap_or(Protocol::Http),
        allow_private,
        max_proxies: settings.max_proxies,
    };
    // Parsing a 32 MiB page is seconds of CPU: on the blocking pool, not on the runtime
    // that runs the checks (whose timers would fire late).
    let parsing = tokio::task::spawn_blocking(move || {
        let mut sink = sink;
        let parsed = body.and_then(|body| parse_body(&body, opts, &mut st, &mut sink));
        (parsed, st, sink)
    });
    let (parsed, mut st, sink) = match parsing.await {
        Ok((parsed, st, sink)) => (parsed, st, Some(sink)),
        // The parser panicked: the sink went with it.
        Err(e) => {
            let st = SourceStats { name: name.clone(), attempts, ..Default::default() };
            (Err(SourceError::Parser(e.to_string())), st, None)
        }
    };
    st.duration = started.elapsed().saturating_sub(sink.as_ref().map_or(Duration::ZERO, |k| k.waited()));
    if let Err(e) = parsed {
        tracing::warn!(source = %name, error = %e, attempts, "source failed");
        st.error = Some(e);
    }
    (sink, st)
}

/// Parses a fetched body into `sink`, and `st` (format, lines, rejects).
fn parse_body(
    body: &[u8],
    opts: ParseOptions,
    st: &mut SourceStats,
    sink: &mut dyn ProxySink,
) -> Result<(), SourceError> {
    st.bytes = body.len() as u64;
    if let Some(at) = fetch::binary_offset(body) {
        return Err(SourceError::Binary(at));
    }
    let name = st.name.clone();
    let (lines, truncated, format) = parse::parse_document_with(
        body,
        opts,
        &mut |r| {
            tracing::debug!(source = %name, line = r.line, reason = r.reason.as_str(), text = %r.text, "line rejected");
            st.reject(r);
        },
        &mut |p, line| sink.take(p, line),
    );
    st.format = Some(format);
    st.lines = lines;
    if truncated {
        return Err(SourceError::TooManyProxies(opts.max_proxies));
    }
    sink.finish();
    Ok(())
}

/// Result of [`gather`].
#[derive(Debug, Default)]
pub struct Gathered {
    pub found: Vec<Found>,
    pub stats: Vec<SourceStats>,
}

impl Gathered {
    /// Total lines scraped across sources.
    pub fn scraped(&self) -> u64 {
        self.stats.iter().map(|s| s.lines).sum()
    }
}

/// Collects every source at once and dedupes them in their configured order (a round,
/// which feeds each source as soon as it is parsed, lets the first source parsed win).
pub async fn gather(
    client: &reqwest::Client,
    specs: &[SourceSpec],
    settings: &FetchSettings,
    allow_private: bool,
) -> Gathered {
    let all = futures_util::future::join_all(specs.iter().map(|s| collect(client, s, settings, allow_private))).await;
    let seen = Dedupe::default();
    let mut out = Gathered::default();
    for (i, (proxies, mut st)) in all.into_iter().enumerate() {
        let source = u16::try_from(i).unwrap_or(u16::MAX);
        for (proxy, line) in proxies {
            if seen.admit(&proxy) {
                st.valid = st.valid.saturating_add(1);
                out.found.push(Found { proxy, source });
            } else {
                st.duplicates = st.duplicates.saturating_add(1);
                st.reject(Reject { line, reason: RejectReason::Duplicate, text: String::new() });
            }
        }
        out.stats.push(st);
    }
    out
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Each distinct proxy is admitted once, however the sources repeat it (the same
    /// address under another protocol is another proxy); the fingerprints spread over
    /// every shard; a release forgets them all.
    #[test]
    fn dedupe_admits_each_proxy_once_across_its_shards() {
        let opts = ParseOptions { default_protocol: Protocol::Http, allow_private: true, max_proxies: usize::MAX };
        let proxy = |i: u32, scheme: &str| {
            let [_, a, b, c] = i.to_be_bytes();
            parse::parse_token(&format!("{scheme}://10.{a}.{b}.{c}:8080"), opts).unwrap()
        };
        let seen = Dedupe::default();
        let n = 20_000;
        assert!((0..n).all(|i| seen.admit(&proxy(i, "http"))), "each new proxy is admitted");
        assert!((0..n).all(|i| !seen.admit(&proxy(i, "http"))), "and never again");
        assert!(seen.admit(&proxy(7, "socks5")), "another protocol is another proxy");
        assert_eq!(seen.len(), 20_001);
        let per_shard: Vec<usize> = seen.shards.iter().map(|s| s.lock().unwrap().len()).collect();
        // 312 a shard on average; every shard used, none with a share far from it.
        assert!(per_shard.iter().all(|&k| (150..600).contains(&k)), "{per_shard:?}");
        seen.release();
        assert!(seen.is_empty());
        assert!(seen.admit(&proxy(1, "http")), "forgotten after a release");
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let repeated = E("connect failed: connection refused", Some(Box::new(E("connection refused", None))));
        assert_eq!(error_chain(&repeated), "connect failed: connection refused");
        let layered =
            E("client error (Connect)", Some(Box::new(E("tcp connect error", Some(Box::new(E("refused", None)))))));
        assert_eq!(error_chain(&layered), "client error (Connect): tcp connect error: refused");
    }

    #[test]
    fn locations() {
        assert!(matches!(Location::parse("https://example.com/list.txt"), Ok(Location::Url(_))));
        assert_eq!(Location::parse("lists/a.txt"), Ok(Location::File("lists/a.txt".into())));
        assert_eq!(Location::parse("file:///tmp/a.txt"), Ok(Location::File("/tmp/a.txt".into())));
        assert!(Location::parse("ftp://x/y").is_err());
        assert!(Location::parse("http://").is_err());
        let shown = Location::parse("https://u:tok@example.com/l").unwrap().to_string();
        assert!(!shown.contains("tok"), "{shown}");
    }
}
