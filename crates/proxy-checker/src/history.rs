//! Each proxy's track record across rounds and rechecks: first seen, last seen alive,
//! checks, successes, consecutive failures, uptime over the last [`WINDOW`] checks and as
//! an EWMA, latency EWMA and median, protocol and capability changes.
//!
//! State that outlives rounds, kept beside the snapshot: the service records every
//! verdict here (full rounds and rechecks), the snapshot builder and the API read it, the
//! store persists it. Bounded by construction: at most `max_entries` records (plus an
//! eighth of slack before a prune), the least recently alive evicted first, and dead
//! proxies forgotten `retention` after they were last alive (or first seen).
//!
//! Times are Unix milliseconds; 0 means never.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::check::{Alive, Verdict};
use crate::proxy::{Host, Protocol};

/// Checks the windowed uptime covers.
pub const WINDOW: u8 = 32;
/// Successful latencies the median is taken over.
const LATENCIES: usize = 8;
/// Weight of the newest check in the uptime EWMA.
const UPTIME_ALPHA: f32 = 0.2;
/// Weight of the newest latency in the latency EWMA.
const LATENCY_ALPHA: f32 = 0.3;
/// An observation this much older than the last one means the clock stepped back.
const CLOCK_STEP_MS: u64 = 60_000;
/// Version of the persisted rows.
pub const FORMAT_VERSION: u32 = 1;

/// A proxy's identity in the history: where it listens. Protocol and credentials are
/// attributes (a proxy found to speak another protocol keeps its record).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub host: Host,
    pub port: u16,
}

impl Key {
    pub fn new(host: Host, port: u16) -> Self {
        Self { host, port }
    }

    /// From a host as shown (`1.2.3.4`, `[::1]`, `proxy.example`) and a port.
    pub fn parse(host: &str, port: u16) -> Option<Self> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if bare.is_empty() {
            return None;
        }
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(Arc::from(bare.to_ascii_lowercase())),
        };
        Some(Self { host, port })
    }

    /// From `host:port`, `[v6]:port` or a proxy URL (`scheme://user:pass@host:port`).
    pub fn parse_address(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.split_once("://").map_or(s, |(_, rest)| rest);
        let s = s.rsplit_once('@').map_or(s, |(_, rest)| rest);
        let s = s.trim_end_matches('/');
        let (host, port) = s.rsplit_once(':')?;
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        if host.contains(':') && !host.starts_with('[') {
            return None;
        }
        Self::parse(host, port)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One proxy's record (≈ 72 bytes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub first_seen: u64,
    /// Last successful check.
    pub last_ok: u64,
    pub last_checked: u64,
    pub checks: u32,
    pub successes: u32,
    pub consecutive_failures: u16,
    /// Times a full check found another protocol or other capabilities than the last.
    pub changes: u16,
    /// Outcomes of the last `recent_len` checks, newest in bit 0 (1 = alive).
    pub recent: u32,
    pub recent_len: u8,
    /// Protocol and capabilities of the last full check that found it alive
    /// ([`Protocol`] index + 1, 0 = never; bit 0 forward, bit 1 tunnel).
    pub protocol: u8,
    pub caps: u8,
    pub uptime_ewma: f32,
    /// Over successful checks; 0 before the first.
    pub latency_ewma_ms: f32,
    /// The last successful latencies (ms, saturating), a ring.
    pub latencies: [u16; LATENCIES],
    pub latencies_len: u8,
    pub latencies_next: u8,
}

/// What one check found, as the history records it.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub at: u64,
    /// Latency in ms when alive.
    pub ok: Option<u32>,
    /// Protocol and (forward, tunnel) from a full check (rechecks test one capability
    /// and leave these alone).
    pub found: Option<(Protocol, bool, bool)>,
}

impl Observation {
    /// A round's verdict (a full check).
    pub fn of_round(v: &Verdict, at: u64) -> Self {
        let alive = v.outcome.as_ref().ok();
        Self { at, ok: alive.map(latency_ms), found: alive.map(|a| (v.candidate.proxy.protocol, a.forward, a.tunnel)) }
    }

    /// A recheck's outcome (one capability).
    pub fn of_recheck(alive: Option<&Alive>, at: u64) -> Self {
        Self { at, ok: alive.map(latency_ms), found: None }
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn latency_ms(a: &Alive) -> u32 {
    u32::try_from(a.latency.as_millis()).unwrap_or(u32::MAX)
}

impl Record {
    fn observe(&mut self, o: &Observation) {
        if self.first_seen == 0 || self.first_seen > o.at {
            self.first_seen = o.at;
        }
        let first = self.checks == 0;
        // An observation older than the last one (a pass's verdict recorded after a
        // round's newer one) leaves the times and the failure streak alone, unless it is
        // so much older that the clock must have stepped back: then it sets them (a time
        // in the future would keep the proxy from being due until the clock caught up).
        let current = o.at >= self.last_checked || self.last_checked - o.at > CLOCK_STEP_MS;
        if current {
            self.last_checked = o.at;
        }
        self.checks = self.checks.saturating_add(1);
        self.recent = (self.recent << 1) | u32::from(o.ok.is_some());
        self.recent_len = self.recent_len.saturating_add(1).min(WINDOW);
        let up = if o.ok.is_some() { 1.0 } else { 0.0 };
        self.uptime_ewma = if first { up } else { self.uptime_ewma + UPTIME_ALPHA * (up - self.uptime_ewma) };
        match o.ok {
            Some(ms) => {
                self.successes = self.successes.saturating_add(1);
                if current {
                    self.consecutive_failures = 0;
                    self.last_ok = o.at;
                }
                let ms16 = u16::try_from(ms).unwrap_or(u16::MAX);
                let slot = usize::from(self.latencies_next) % LATENCIES;
                if let Some(s) = self.latencies.get_mut(slot) {
                    *s = ms16;
                }
                self.latencies_next = ((slot + 1) % LATENCIES) as u8;
                self.latencies_len = self.latencies_len.saturating_add(1).min(LATENCIES as u8);
                self.latency_ewma_ms = if self.latency_ewma_ms == 0.0 {
                    ms as f32
                } else {
                    self.latency_ewma_ms + LATENCY_ALPHA * (ms as f32 - self.latency_ewma_ms)
                };
            }
            None if current => self.consecutive_failures = self.consecutive_failures.saturating_add(1),
            None => {}
        }
        if let Some((protocol, forward, tunnel)) = o.found {
            let p = protocol_code(protocol);
            let caps = u8::from(forward) | (u8::from(tunnel) << 1);
            if self.protocol != 0 && (self.protocol != p || self.caps != caps) {
                self.changes = self.changes.saturating_add(1);
            }
            (self.protocol, self.caps) = (p, caps);
        }
    }

    /// Share of the last `recent_len` checks that found it alive (0 with none).
    pub fn uptime(&self) -> f64 {
        if self.recent_len == 0 {
            return 0.0;
        }
        let mask = if self.recent_len >= 32 { u32::MAX } else { (1u32 << self.recent_len) - 1 };
        f64::from((self.recent & mask).count_ones()) / f64::from(self.recent_len)
    }

    /// Median of the last successful latencies (ms).
    pub fn latency_median_ms(&self) -> Option<u32> {
        let n = usize::from(self.latencies_len).min(LATENCIES);
        let mut v: Vec<u16> = self.latencies.get(..n)?.to_vec();
        v.sort_unstable();
        match n {
            0 => None,
            n if n % 2 == 1 => v.get(n / 2).map(|x| u32::from(*x)),
            n => Some((u32::from(v[n / 2 - 1]) + u32::from(v[n / 2])) / 2),
        }
    }

    /// The protocol of the last full check that found it alive.
    pub fn protocol(&self) -> Option<Protocol> {
        Protocol::ALL.get(usize::from(self.protocol).checked_sub(1)?).copied()
    }

    /// When it was last alive, or first seen if never: what retention and eviction use.
    fn activity(&self) -> u64 {
        if self.last_ok > 0 { self.last_ok } else { self.first_seen }
    }

    /// Eviction order: never alive before ever alive, then by when.
    fn rank(&self) -> u64 {
        const EVER_ALIVE: u64 = 1 << 62;
        if self.last_ok > 0 { EVER_ALIVE | self.last_ok.min(EVER_ALIVE - 1) } else { self.last_checked }
    }
}

fn protocol_code(p: Protocol) -> u8 {
    Protocol::ALL.iter().position(|x| *x == p).map_or(0, |i| i as u8 + 1)
}

/// Bounds of the history (`history.*` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    /// Dead proxies are forgotten this long after they were last alive (or first seen).
    pub retention_ms: u64,
}

/// Every proxy's record. An `IndexMap` (records in a `Vec`, an index of positions): its
/// `retain` compacts the records in place and rebuilds the index without leaving
/// tombstones, so evicting never makes the table grow (a `HashMap` that is pruned and
/// refilled doubles: its deleted slots are not reused until it rehashes).
#[derive(Debug)]
pub struct History {
    records: indexmap::IndexMap<Key, Record>,
    limits: Limits,
    /// Records evicted for room (not by retention), since start.
    pub evicted: u64,
}

/// Bytes one record costs in the table's `Vec` (its hash, key and record); the index
/// adds 9 bytes per slot (a position and a control byte), with 8 slots per 7 records.
pub const BYTES_PER_ENTRY: usize =
    std::mem::size_of::<usize>() + std::mem::size_of::<Key>() + std::mem::size_of::<Record>();

impl History {
    pub fn new(limits: Limits) -> Self {
        Self { records: indexmap::IndexMap::new(), limits, evicted: 0 }
    }

    /// The most memory the table takes with these limits: up to `max_entries` + 1/8
    /// records, in an index of a power of two of slots (8 per 7 records) and a `Vec` of
    /// as many records as the index can hold, × [`BYTES_PER_ENTRY`]; half as much again
    /// while it grows (the old `Vec` lives beside the new one during the move).
    /// Hostnames add their text.
    pub fn bound_bytes(limits: Limits) -> usize {
        let most = limits.max_entries.saturating_add(limits.max_entries / 8).saturating_add(1);
        let slots = most.saturating_mul(8).div_ceil(7).next_power_of_two();
        let table = (slots / 8 * 7).saturating_mul(BYTES_PER_ENTRY).saturating_add(slots.saturating_mul(9));
        table.saturating_add(table / 2)
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, key: &Key) -> Option<&Record> {
        self.records.get(key)
    }

    /// Records one check.
    pub fn observe(&mut self, key: Key, o: &Observation) {
        self.records.entry(key).or_default().observe(o);
        if self.records.len() > self.limits.max_entries.saturating_add(self.limits.max_entries / 8) {
            self.shrink_to(self.limits.max_entries);
        }
    }

    /// Forgets dead proxies past retention, then the least recently alive beyond
    /// `max_entries`. Returns how many were forgotten.
    pub fn prune(&mut self, now: u64) -> usize {
        let before = self.records.len();
        let horizon = now.saturating_sub(self.limits.retention_ms);
        self.records.retain(|_, r| r.activity() >= horizon);
        let by_age = before - self.records.len();
        by_age + self.shrink_to(self.limits.max_entries)
    }

    /// Evicts by [`Record::rank`] down to at most `target` entries. The cut-off comes
    /// from a sample of at most 4,096 ranks (no copy of the table); ties at the cut-off
    /// go with it. Each pass removes at least the sampled record at the cut-off.
    fn shrink_to(&mut self, target: usize) -> usize {
        let n = self.records.len();
        while self.records.len() > target {
            let len = self.records.len();
            let mut sample: Vec<u64> = self.records.values().step_by((len / 4096).max(1)).map(Record::rank).collect();
            sample.sort_unstable();
            let at =
                ((len - target) * sample.len()).div_ceil(len).saturating_sub(1).min(sample.len().saturating_sub(1));
            let cut = sample.get(at).copied().unwrap_or(u64::MAX);
            self.records.retain(|_, r| r.rank() > cut);
        }
        let gone = n - self.records.len();
        self.evicted = self.evicted.saturating_add(gone as u64);
        gone
    }

    /// Rows for the store, in no particular order.
    pub fn rows(&self) -> Vec<Row> {
        self.records.iter().map(|(k, r)| Row::new(k, r)).collect()
    }

    /// Loads rows from the store (unreadable ones are skipped and counted); times in
    /// the future are taken as now.
    pub fn load(&mut self, rows: Vec<Row>) -> usize {
        let mut bad = 0;
        let now = now_ms();
        for row in rows {
            match row.into_parts(now) {
                Some((k, r)) => {
                    self.records.insert(k, r);
                }
                None => bad += 1,
            }
        }
        self.shrink_to(self.limits.max_entries);
        bad
    }
}

/// One record as stored (JSON in the file and Redis stores, a row in SQLite). Short
/// names: a history holds up to `max_entries` of these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub host: String,
    pub port: u16,
    #[serde(rename = "fs")]
    pub first_seen: u64,
    #[serde(rename = "ok")]
    pub last_ok: u64,
    #[serde(rename = "lc")]
    pub last_checked: u64,
    #[serde(rename = "n")]
    pub checks: u32,
    #[serde(rename = "s")]
    pub successes: u32,
    #[serde(rename = "cf")]
    pub consecutive_failures: u16,
    #[serde(rename = "ch", default)]
    pub changes: u16,
    #[serde(rename = "r")]
    pub recent: u32,
    #[serde(rename = "rl")]
    pub recent_len: u8,
    #[serde(rename = "p", default)]
    pub protocol: u8,
    #[serde(rename = "c", default)]
    pub caps: u8,
    #[serde(rename = "ue")]
    pub uptime_ewma: f32,
    #[serde(rename = "le")]
    pub latency_ewma_ms: f32,
    /// Oldest first.
    #[serde(rename = "l", default)]
    pub latencies: Vec<u16>,
}

impl Row {
    fn new(k: &Key, r: &Record) -> Self {
        let n = usize::from(r.latencies_len).min(LATENCIES);
        let start = (usize::from(r.latencies_next) + LATENCIES - n) % LATENCIES;
        let latencies = (0..n).filter_map(|i| r.latencies.get((start + i) % LATENCIES).copied()).collect();
        Row {
            host: k.host.to_string(),
            port: k.port,
            first_seen: r.first_seen,
            last_ok: r.last_ok,
            last_checked: r.last_checked,
            checks: r.checks,
            successes: r.successes,
            consecutive_failures: r.consecutive_failures,
            changes: r.changes,
            recent: r.recent,
            recent_len: r.recent_len,
            protocol: r.protocol,
            caps: r.caps,
            uptime_ewma: r.uptime_ewma,
            latency_ewma_ms: r.latency_ewma_ms,
            latencies,
        }
    }

    /// Back to key and record; `None` for a row no version of this code could write.
    fn into_parts(self, now: u64) -> Option<(Key, Record)> {
        let key = Key::parse(&self.host, self.port)?;
        let finite = |x: f32| if x.is_finite() { x } else { 0.0 };
        let mut r = Record {
            first_seen: self.first_seen.min(now),
            last_ok: self.last_ok.min(now),
            last_checked: self.last_checked.min(now),
            checks: self.checks,
            successes: self.successes.min(self.checks),
            consecutive_failures: self.consecutive_failures,
            changes: self.changes,
            recent: self.recent,
            recent_len: self.recent_len.min(WINDOW),
            protocol: if usize::from(self.protocol) <= Protocol::ALL.len() { self.protocol } else { 0 },
            caps: self.caps & 3,
            uptime_ewma: finite(self.uptime_ewma).clamp(0.0, 1.0),
            latency_ewma_ms: finite(self.latency_ewma_ms).max(0.0),
            ..Record::default()
        };
        for (i, l) in self.latencies.iter().rev().take(LATENCIES).rev().enumerate() {
            if let Some(s) = r.latencies.get_mut(i) {
                *s = *l;
            }
            r.latencies_len = (i + 1) as u8;
        }
        r.latencies_next = r.latencies_len % LATENCIES as u8;
        Some((key, r))
    }
}

/// The persisted history: what the file and Redis stores read. A row that does not
/// parse is kept as junk (and skipped on load), not a reason to lose the others.
#[derive(Debug, Default, Deserialize)]
pub struct Persisted {
    pub version: u32,
    pub rows: Vec<MaybeRow>,
}

/// A stored row, or something in its place that is not one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MaybeRow {
    Row(Row),
    Junk(serde::de::IgnoredAny),
}

impl Persisted {
    /// The rows that parsed, and how many did not.
    pub fn into_rows(self) -> (Vec<Row>, usize) {
        let total = self.rows.len();
        let rows: Vec<Row> = self
            .rows
            .into_iter()
            .filter_map(|r| match r {
                MaybeRow::Row(r) => Some(r),
                MaybeRow::Junk(_) => None,
            })
            .collect();
        let junk = total - rows.len();
        (rows, junk)
    }
}

/// What the file and Redis stores write (the rows borrowed, not copied).
#[derive(Serialize)]
pub struct PersistedRef<'a> {
    pub version: u32,
    pub rows: &'a [Row],
}

impl<'a> PersistedRef<'a> {
    pub fn new(rows: &'a [Row]) -> Self {
        Self { version: FORMAT_VERSION, rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        Key::new(Host::Ip(IpAddr::from(i.to_be_bytes())), 8080)
    }

    fn ok(at: u64, ms: u32) -> Observation {
        Observation { at, ok: Some(ms), found: None }
    }

    fn dead(at: u64) -> Observation {
        Observation { at, ok: None, found: None }
    }

    const LIMITS: Limits = Limits { max_entries: 1000, retention_ms: 3_600_000 };

    #[test]
    fn a_record_follows_its_checks() {
        let mut h = History::new(LIMITS);
        let k = key(1);
        h.observe(k.clone(), &Observation { at: 1000, ok: Some(100), found: Some((Protocol::Http, true, true)) });
        h.observe(k.clone(), &ok(2000, 300));
        h.observe(k.clone(), &dead(3000));
        h.observe(k.clone(), &dead(4000));
        h.observe(k.clone(), &Observation { at: 5000, ok: Some(200), found: Some((Protocol::Socks5, false, true)) });
        let r = h.get(&k).unwrap();
        assert_eq!((r.first_seen, r.last_ok, r.last_checked), (1000, 5000, 5000));
        assert_eq!((r.checks, r.successes, r.consecutive_failures), (5, 3, 0));
        assert_eq!(r.uptime(), 0.6);
        assert_eq!(r.latency_median_ms(), Some(200));
        assert_eq!(r.changes, 1, "http → socks5 is one change");
        assert_eq!(r.protocol(), Some(Protocol::Socks5));
        // EWMA: 1, 1, 0.8, 0.64, 0.712.
        assert!((r.uptime_ewma - 0.712).abs() < 1e-5, "{}", r.uptime_ewma);
        assert!(r.latency_ewma_ms > 100.0 && r.latency_ewma_ms < 300.0);
        h.observe(k.clone(), &dead(6000));
        assert_eq!(h.get(&k).unwrap().consecutive_failures, 1);
    }

    /// A verdict recorded after a newer one (a pass's, after a round's) counts as a check
    /// but does not move the times back or start a failure streak; one far older means
    /// the clock stepped back, and sets them.
    #[test]
    fn an_older_observation_does_not_move_the_times_back() {
        let mut h = History::new(LIMITS);
        let k = key(1);
        h.observe(k.clone(), &ok(500_000, 10));
        h.observe(k.clone(), &dead(499_000));
        let r = h.get(&k).unwrap();
        assert_eq!((r.last_checked, r.last_ok, r.consecutive_failures, r.checks), (500_000, 500_000, 0, 2));
        h.observe(k.clone(), &dead(300_000));
        let r = h.get(&k).unwrap();
        assert_eq!((r.last_checked, r.consecutive_failures), (300_000, 1), "the clock stepped back");
    }

    #[test]
    fn the_window_keeps_the_last_32_checks() {
        let mut h = History::new(LIMITS);
        let k = key(1);
        for i in 0..40 {
            h.observe(k.clone(), &dead(i));
        }
        for i in 40..48 {
            h.observe(k.clone(), &ok(i, 10));
        }
        let r = h.get(&k).unwrap();
        assert_eq!(r.recent_len, 32);
        assert_eq!(r.uptime(), 8.0 / 32.0);
        assert_eq!(r.checks, 48);
    }

    #[test]
    fn rows_round_trip_and_junk_rows_are_skipped() {
        let mut h = History::new(LIMITS);
        for i in 0..20 {
            h.observe(key(1), &ok(i * 10 + 1, i as u32 * 7));
        }
        h.observe(Key::parse("[::1]", 1080).unwrap(), &dead(5));
        h.observe(Key::parse("Proxy.Example", 3128).unwrap(), &ok(5, 70_000));
        let rows = h.rows();
        let json = serde_json::to_string(&PersistedRef::new(&rows)).unwrap();
        // A row of another shape and one with an out-of-range field: skipped, the rest kept.
        let json = json.replacen("\"rows\":[", "\"rows\":[{\"host\":1},{\"host\":\"1.2.3.4\",\"port\":99999},", 1);
        let (mut back, junk) = serde_json::from_str::<Persisted>(&json).unwrap().into_rows();
        assert_eq!(junk, 2);
        back.push(Row { host: String::new(), ..back[0].clone() });
        let mut h2 = History::new(LIMITS);
        assert_eq!(h2.load(back), 1);
        assert_eq!(h2.len(), 3);
        // The same records (the latency ring may start elsewhere: rows list it oldest first).
        let sorted = |h: &History| {
            let mut rows = h.rows();
            rows.sort_by(|a, b| a.host.cmp(&b.host));
            rows
        };
        assert_eq!(sorted(&h2), sorted(&h));
        let r = h2.get(&key(1)).unwrap();
        assert_eq!((r.latency_median_ms(), r.checks), (h.get(&key(1)).unwrap().latency_median_ms(), 20));
        assert_eq!(h2.get(&Key::parse("proxy.example", 3128).unwrap()).unwrap().latency_median_ms(), Some(65_535));
    }

    #[test]
    fn addresses_parse_in_the_forms_clients_send() {
        let want = key(0x01020304);
        for s in ["1.2.3.4:8080", "http://1.2.3.4:8080", "socks5://u:p@ss@1.2.3.4:8080/", " 1.2.3.4:8080 "] {
            assert_eq!(Key::parse_address(s), Some(want.clone()), "{s}");
        }
        assert_eq!(Key::parse_address("[::1]:1080"), Key::parse("::1", 1080));
        for s in ["1.2.3.4", "1.2.3.4:0", "1.2.3.4:99999", "::1:80", ":80", ""] {
            assert_eq!(Key::parse_address(s), None, "{s}");
        }
    }

    #[test]
    fn dead_proxies_are_forgotten_after_retention_and_the_table_stays_bounded() {
        let limits = Limits { max_entries: 1000, retention_ms: 10_000 };
        let mut h = History::new(limits);
        h.observe(key(0), &ok(1, 5));
        for i in 1..10_000u32 {
            h.observe(key(i), &dead(u64::from(i)));
            assert!(h.len() <= 1000 + 125, "{}", h.len());
        }
        assert!(h.get(&key(0)).is_some(), "the one ever alive outlives the never-alive");
        assert!(h.get(&key(9_999)).is_some(), "the newest stay");
        h.observe(key(0), &ok(20_000, 5));
        h.prune(25_000);
        assert_eq!(h.len(), 1, "only the one alive within retention remains");
        assert!(h.evicted >= 8_000);
    }
}
