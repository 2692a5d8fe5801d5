//! proxy-farm: a loopback stand-in for the internet's proxies, a judge and proxy-list
//! sources, for proxy-checker's tests and benchmarks.
//!
//! One process, a handful of sockets:
//! - one proxy listener on `0.0.0.0:P` answers for every simulated proxy: proxy `i`
//!   lives at `127.1.0.0 + i`, and the address a connection was dialed on picks the
//!   proxy's protocol and behaviour ([`spec`]);
//! - a port bound but never listening answers SYNs with resets (refused proxies);
//! - a listener whose accept queue is kept full drops SYNs (silent proxies);
//! - a judge on `127.0.0.1` (plain and TLS) echoes path, headers and client address,
//!   and serves source lists under `/sources/NAME`.
//!
//! Non-loopback peers are dropped at once: the wildcard listener serves loopback only.

pub mod hostile;
pub mod http;
pub mod proxy;
pub mod spec;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub use http::{HostileSource, SourceBody};
pub use spec::{Behavior, Expect, FarmSpec, Group, Protocol, expect};

/// Where a tunnel leads, inside the farm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Judge,
    JudgeTls,
}

/// State shared by every connection of a farm.
pub struct Shared {
    groups: Vec<Group>,
    /// Cumulative end index of each group.
    ends: Vec<u32>,
    judge: SocketAddr,
    judge_tls: SocketAddr,
    judge_down: AtomicBool,
    /// Judge answers given (direct and through proxies).
    pub judge_hits: AtomicU64,
    /// Proxy connections accepted.
    pub connections: AtomicU64,
    /// Connections that reached each proxy, by index.
    per_proxy: Vec<std::sync::atomic::AtomicU32>,
    sources: Mutex<HashMap<String, SourceBody>>,
    /// Sources whose requests wait until the gate opens ([`Farm::hold_source`]).
    gates: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    hostile: Mutex<HashMap<String, HostileSource>>,
    source_hits: Mutex<HashMap<String, u64>>,
    tls: tls::FarmTls,
    flaky_seen: Mutex<HashSet<u32>>,
    /// Proxies killed after the start ([`Farm::kill`]): index → Unix time of the kill.
    killed: Mutex<HashMap<u32, f64>>,
}

impl Shared {
    fn group_of(&self, i: u32) -> Option<&Group> {
        let g = self.ends.partition_point(|end| *end <= i);
        self.groups.get(g)
    }

    /// Notes a connection that reached proxy `i`.
    pub(crate) fn count_connection(&self, i: u32) {
        if let Some(n) = self.per_proxy.get(i as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True the first time proxy `i` is visited.
    fn first_visit(&self, i: u32) -> bool {
        self.flaky_seen.lock().expect("flaky").insert(i)
    }

    /// Whether proxy `i` was killed: it then closes every connection at once.
    fn is_killed(&self, i: u32) -> bool {
        self.killed.lock().expect("killed").contains_key(&i)
    }

    /// `ip unix_time` per killed proxy, one per line (the `/farm/killed` page).
    fn killed_list(&self) -> String {
        let killed = self.killed.lock().expect("killed");
        let mut lines: Vec<String> = killed.iter().map(|(i, at)| format!("{} {at:.3}\n", spec::ip_of(*i))).collect();
        lines.sort();
        lines.concat()
    }

    fn is_judge_down(&self) -> bool {
        self.judge_down.load(Ordering::Relaxed)
    }

    /// Resolves `host:port` to one of the farm's judges.
    fn farm_target(&self, authority: &str) -> Option<Target> {
        let (host, port) = authority.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let local = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip == self.judge.ip());
        match port {
            p if local && p == self.judge.port() => Some(Target::Judge),
            p if local && p == self.judge_tls.port() => Some(Target::JudgeTls),
            _ => None,
        }
    }
}

/// One simulated proxy as a list shows it.
#[derive(Clone, Debug)]
pub struct FarmProxy {
    pub index: u32,
    pub protocol: Protocol,
    pub behavior: Behavior,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl FarmProxy {
    /// `scheme://[user:pass@]ip:port`
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((u, p)) => format!("{}://{u}:{p}@{}:{}", self.protocol.scheme(), self.ip, self.port),
            None => format!("{}://{}:{}", self.protocol.scheme(), self.ip, self.port),
        }
    }

    /// `ip:port` (the form a list without schemes carries).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// A running farm. Dropping it stops every listener.
pub struct Farm {
    shared: Arc<Shared>,
    pub proxy_port: u16,
    pub refused_port: u16,
    pub blackhole_port: u16,
    cancel: CancellationToken,
    _refused: socket2::Socket,
    _blackhole: (TcpListener, Vec<TcpStream>),
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Listeners sharing the simulated proxies' port (see [`Farm::start`]).
const PROXY_LISTENERS: usize = 8;

async fn accept_loop<F, Fut>(listener: TcpListener, cancel: CancellationToken, on_conn: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((s, peer)) if loopback(peer) => {
                let cancel = cancel.clone();
                let fut = on_conn(s, peer);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = fut => {}
                    }
                });
            }
            Ok(_) => {}
            // EMFILE and friends: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

impl Farm {
    /// Starts the farm on ephemeral ports.
    pub async fn start(spec: FarmSpec) -> anyhow::Result<Farm> {
        let total: u64 = spec.groups.iter().map(|g| u64::from(g.count)).sum();
        anyhow::ensure!(total <= u64::from(spec::MAX_PROXIES), "at most {} proxies", spec::MAX_PROXIES);
        let mut ends = Vec::with_capacity(spec.groups.len());
        let mut acc = 0u32;
        for g in &spec.groups {
            acc += g.count;
            ends.push(acc);
        }

        let judge_l = TcpListener::bind("127.0.0.1:0").await?;
        let judge_tls_l = TcpListener::bind("127.0.0.1:0").await?;
        // Several listeners on the proxies' one port (SO_REUSEPORT): the kernel spreads
        // connections over their accept queues, each capped at `net.core.somaxconn`
        // (4,096 here), so a checker's burst of tens of thousands of SYNs is not dropped by
        // the farm (which the checker would rightly call connect timeouts).
        let mut proxy_ls = Vec::with_capacity(PROXY_LISTENERS);
        let mut proxy_port = 0;
        for _ in 0..PROXY_LISTENERS {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], proxy_port)).into())?;
            s.listen(65_535)?;
            let l = TcpListener::from_std(s.into())?;
            proxy_port = l.local_addr()?.port();
            proxy_ls.push(l);
        }
        // Bound, never listening: every SYN is answered with a reset.
        let refused = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        refused.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
        let refused_port = refused.local_addr()?.as_socket().map(|a| a.port()).unwrap_or_default();
        // Accept queue of one, filled by us and never accepted: further SYNs are dropped.
        let blackhole = {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
            s.listen(0)?;
            TcpListener::from_std(s.into())?
        };
        let blackhole_port = blackhole.local_addr()?.port();
        let mut fillers = Vec::new();
        for _ in 0..2 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(("127.0.0.1", blackhole_port)))
                    .await
            {
                fillers.push(s);
            }
        }

        let total = ends.last().copied().unwrap_or(0) as usize;
        let shared = Arc::new(Shared {
            per_proxy: (0..total).map(|_| std::sync::atomic::AtomicU32::new(0)).collect(),
            groups: spec.groups,
            ends,
            judge: judge_l.local_addr()?,
            judge_tls: judge_tls_l.local_addr()?,
            judge_down: AtomicBool::new(false),
            judge_hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            sources: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            hostile: Mutex::new(HashMap::new()),
            source_hits: Mutex::new(HashMap::new()),
            tls: tls::FarmTls::generate()?,
            flaky_seen: Mutex::new(HashSet::new()),
            killed: Mutex::new(HashMap::new()),
        });
        let cancel = CancellationToken::new();
        for proxy_l in proxy_ls {
            let sh = shared.clone();
            tokio::spawn(accept_loop(proxy_l, cancel.clone(), move |s, _| {
                sh.connections.fetch_add(1, Ordering::Relaxed);
                proxy::handle(sh.clone(), s)
            }));
        }
        let sh = shared.clone();
        tokio::spawn(accept_loop(judge_l, cancel.clone(), move |s, peer| http::serve_conn(sh.clone(), s, peer)));
        let sh = shared.clone();
        tokio::spawn(accept_loop(judge_tls_l, cancel.clone(), move |s, peer| {
            let sh = sh.clone();
            async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(sh.tls.judge.clone());
                if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await {
                    http::serve_conn(sh, tls, peer).await;
                }
            }
        }));

        Ok(Farm {
            shared,
            proxy_port,
            refused_port,
            blackhole_port,
            cancel,
            _refused: refused,
            _blackhole: (blackhole, fillers),
        })
    }

    /// Every simulated proxy, in index order.
    pub fn proxies(&self) -> impl Iterator<Item = FarmProxy> + '_ {
        let mut start = 0u32;
        self.shared.groups.iter().flat_map(move |g| {
            let range = start..start + g.count;
            start += g.count;
            range.map(move |index| self.proxy(index, g))
        })
    }

    fn proxy(&self, index: u32, g: &Group) -> FarmProxy {
        let port = match g.behavior {
            Behavior::Refused => self.refused_port,
            Behavior::Blackhole => self.blackhole_port,
            _ => self.proxy_port,
        };
        let credentials = match g.behavior {
            Behavior::AuthGood => Some(proxy::credentials(index)),
            Behavior::AuthBad => Some((proxy::credentials(index).0, "wrong".into())),
            _ => None,
        };
        FarmProxy { index, protocol: g.protocol, behavior: g.behavior, ip: spec::ip_of(index), port, credentials }
    }

    /// The ground truth per group: address range and what a correct checker concludes in
    /// each mode and with each judge scheme.
    pub fn truth(&self) -> serde_json::Value {
        let mut first = 0u32;
        let groups: Vec<_> = self
            .shared
            .groups
            .iter()
            .map(|g| {
                let (lo, hi) = (first, first + g.count.saturating_sub(1));
                first += g.count;
                serde_json::json!({
                    "first_ip": spec::ip_of(lo).to_string(), "last_ip": spec::ip_of(hi).to_string(), "count": g.count,
                    "protocol": g.protocol, "behavior": g.behavior, "latency_ms": g.latency_ms,
                    "connect_only": expect(g.protocol, g.behavior, false, false),
                    "full_http": expect(g.protocol, g.behavior, true, false),
                    "full_http_https_judge": expect(g.protocol, g.behavior, true, true),
                })
            })
            .collect();
        let alive = |full, https| -> u64 {
            self.shared
                .groups
                .iter()
                .filter(|g| expect(g.protocol, g.behavior, full, https).alive)
                .map(|g| u64::from(g.count))
                .sum()
        };
        serde_json::json!({
            "groups": groups,
            "alive": { "connect_only": alive(false, false), "full_http": alive(true, false), "full_http_https_judge": alive(true, true) },
        })
    }

    /// The proxy at an address, if it belongs to the farm.
    pub fn proxy_at(&self, ip: Ipv4Addr) -> Option<FarmProxy> {
        let index = spec::index_of(ip)?;
        let g = self.shared.group_of(index)?;
        Some(self.proxy(index, g))
    }

    /// One proxy per line as `scheme://[user:pass@]ip:port`.
    pub fn list_urls(&self) -> String {
        self.proxies().map(|p| p.url() + "\n").collect()
    }

    pub fn judge_url(&self) -> String {
        format!("http://{}/get", self.shared.judge)
    }

    /// The plain judge at `path` (one of [`http::JUDGE_FAMILIES`], or [`http::NO_ECHO_PATH`]).
    pub fn judge_url_at(&self, path: &str) -> String {
        format!("http://{}{path}", self.shared.judge)
    }

    /// The TLS judge at `path`.
    pub fn judge_tls_url_at(&self, path: &str) -> String {
        format!("https://{}{path}", self.shared.judge_tls)
    }

    pub fn judge_tls_url(&self) -> String {
        format!("https://{}/get", self.shared.judge_tls)
    }

    /// PEM of the CA behind the TLS judge's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.shared.tls.ca_pem
    }

    /// The TLS judge's certificate chain and private key, PEM: a certificate for
    /// `localhost`/127.0.0.1 that [`Farm::ca_pem`] vouches for.
    pub fn judge_cert_and_key_pem(&self) -> (&str, &str) {
        (&self.shared.tls.judge_chain_pem, &self.shared.tls.judge_key_pem)
    }

    /// Serves `body` at `/sources/NAME`; returns its URL.
    pub fn add_source(&self, name: &str, body: SourceBody) -> String {
        self.shared.sources.lock().expect("sources").insert(name.to_string(), body);
        format!("http://{}/sources/{name}", self.shared.judge)
    }

    /// Holds every request for `/sources/NAME` until the returned gate is opened (or
    /// dropped): a test can keep a round in progress for exactly as long as it needs,
    /// whatever the machine's speed.
    pub fn hold_source(&self, name: &str) -> SourceGate {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        self.shared.gates.lock().expect("gates").insert(name.to_string(), gate.clone());
        SourceGate { gate, name: name.to_string(), shared: self.shared.clone() }
    }

    /// Serves a source that misbehaves (see [`HostileSource`]).
    pub fn add_hostile_source(&self, name: &str, how: HostileSource) -> String {
        self.shared.hostile.lock().expect("hostile").insert(name.to_string(), how);
        format!("http://{}/sources/{name}", self.shared.judge)
    }

    /// Serves a plain 200 list.
    pub fn add_list(&self, name: &str, body: impl Into<Vec<u8>>) -> String {
        self.add_source(
            name,
            SourceBody { body: Arc::new(body.into()), status: 200, gzip: false, delay: Duration::ZERO },
        )
    }

    /// Requests served for `/sources/NAME`.
    pub fn source_hits(&self, name: &str) -> u64 {
        self.shared.source_hits.lock().expect("hits").get(name).copied().unwrap_or(0)
    }

    /// Kills the proxy at `ip`: from now on it closes every connection at once, as a
    /// proxy that died between two checks. Returns false for an address of no proxy.
    pub fn kill(&self, ip: Ipv4Addr) -> bool {
        let Some(i) = spec::index_of(ip).filter(|i| self.shared.group_of(*i).is_some()) else { return false };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.shared.killed.lock().expect("killed").entry(i).or_insert(now.as_secs_f64());
        true
    }

    /// Brings a killed proxy back.
    pub fn revive(&self, ip: Ipv4Addr) {
        if let Some(i) = spec::index_of(ip) {
            self.shared.killed.lock().expect("killed").remove(&i);
        }
    }

    /// Killed proxies and when, as `/farm/killed` lists them.
    pub fn killed(&self) -> String {
        self.shared.killed_list()
    }

    pub fn set_judge_down(&self, down: bool) {
        self.shared.judge_down.store(down, Ordering::Relaxed);
    }

    pub fn judge_hits(&self) -> u64 {
        self.shared.judge_hits.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections that reached the proxy at `ip` (0 for an address that is none).
    pub fn connections_to(&self, ip: Ipv4Addr) -> u32 {
        spec::index_of(ip).and_then(|i| self.shared.per_proxy.get(i as usize)).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// See [`Farm::hold_source`]: the held requests go on when this is opened or dropped.
pub struct SourceGate {
    gate: Arc<tokio::sync::Semaphore>,
    name: String,
    shared: Arc<Shared>,
}

impl SourceGate {
    pub fn open(self) {}
}

impl Drop for SourceGate {
    fn drop(&mut self) {
        self.shared.gates.lock().expect("gates").remove(&self.name);
        self.gate.close();
    }
}
