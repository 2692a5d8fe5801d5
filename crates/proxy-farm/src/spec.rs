//! What the farm simulates: groups of proxies with a protocol and a behaviour, laid out
//! on consecutive loopback addresses, and the ground truth a correct checker must reach.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Protocol a simulated proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
    Socks4,
    Socks5,
}

impl Protocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Socks4 => "socks4",
            Protocol::Socks5 => "socks5",
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

/// How a simulated proxy behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behavior {
    /// Forwards and tunnels; answers after the group's latency.
    Working,
    /// HTTP family: forwards, refuses CONNECT (405).
    ForwardOnly,
    /// HTTP family: tunnels, refuses absolute-URI GET (403).
    TunnelOnly,
    /// Nothing listens: the SYN gets a reset.
    Refused,
    /// The SYN is dropped (a listener whose accept queue is full).
    Blackhole,
    /// Accepts and never says anything.
    Silent,
    /// Accepts and closes at once.
    CloseAtOnce,
    /// Answers with bytes that are no protocol.
    Garbage,
    /// Answers every request with its own page, status 200 (a captive portal).
    WrongPage,
    /// A captive portal whose page repeats the requested URL (nonce included) in a
    /// `?redirect=` link.
    PortalWithUrl,
    /// Requires `user{i}`/`pass{i}`; the list carries the right ones.
    AuthGood,
    /// Requires credentials; the list carries a wrong password.
    AuthBad,
    /// Takes an hour to answer the judge request.
    TooSlow,
    /// Sends the judge answer one byte every 200 ms.
    Trickle,
    /// Closes the first connection at once, then works.
    Flaky,
    /// Tunnels, but terminates TLS itself with a certificate nobody trusts.
    Mitm,
    /// Works, the old way: HTTP/1.0 answers delimited by close, SOCKS4 replies with
    /// version byte 4 (common in the wild).
    OldStyle,
    /// Works; the judge answer comes chunked, in pieces that split the nonce.
    Chunked,
    /// Answers the judge request with a status line and then header lines forever.
    EndlessHeader,
    /// Answers 200 with `Content-Length: 4294967296` and streams filler until hung up on.
    HugeBody,
    /// SOCKS5: a reply whose address length (255) runs past what is sent before the
    /// close. SOCKS4: an HTTP error page where the 8-byte reply belongs. HTTP proxies of
    /// this behaviour work.
    BogusSocks,
    /// Inside a tunnel to the TLS judge, answers the ClientHello with garbage.
    TlsGarbage,
}

/// Consecutive proxies with one protocol and behaviour.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    pub count: u32,
    pub protocol: Protocol,
    pub behavior: Behavior,
    /// Delay before the judge answer (Working, Flaky, Auth*, Forward/TunnelOnly).
    #[serde(default)]
    pub latency_ms: u64,
}

impl Group {
    pub fn new(count: u32, protocol: Protocol, behavior: Behavior) -> Self {
        Self { count, protocol, behavior, latency_ms: 0 }
    }

    pub fn latency(mut self, d: Duration) -> Self {
        self.latency_ms = d.as_millis() as u64;
        self
    }
}

/// The whole farm.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FarmSpec {
    pub groups: Vec<Group>,
}

/// First proxy address: 127.1.0.0; proxy `i` is 127.1.0.0 + i.
pub const FIRST_IP: u32 = u32::from_be_bytes([127, 1, 0, 0]);
/// Addresses available for proxies.
pub const MAX_PROXIES: u32 = u32::from_be_bytes([127, 255, 255, 254]) - FIRST_IP;

/// The address of proxy `i`.
pub fn ip_of(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_IP + i)
}

/// The index of the proxy at `ip`, if it is one.
pub fn index_of(ip: Ipv4Addr) -> Option<u32> {
    u32::from(ip).checked_sub(FIRST_IP).filter(|i| *i < MAX_PROXIES)
}

/// What a correct checker concludes about one proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub alive: bool,
    /// Reason name (proxy-checker's `Reason::as_str`) when dead.
    pub reason: Option<&'static str>,
    pub forward: bool,
    pub tunnel: bool,
}

impl Expect {
    fn alive(forward: bool, tunnel: bool) -> Self {
        Self { alive: true, reason: None, forward, tunnel }
    }

    fn dead(reason: &'static str) -> Self {
        Self { alive: false, reason: Some(reason), forward: false, tunnel: false }
    }
}

/// Ground truth for a proxy of `protocol` and `behavior`.
/// `full`: full-http mode (else connect-only); `https_judge`: the judge URL is https.
/// Assumes at least one retry (Flaky) and a timeout under an hour (TooSlow).
pub fn expect(protocol: Protocol, behavior: Behavior, full: bool, https_judge: bool) -> Expect {
    use Behavior::*;
    if !full {
        return match behavior {
            Refused => Expect::dead("connect_refused"),
            Blackhole => Expect::dead("connect_timeout"),
            _ => Expect::alive(false, false),
        };
    }
    let http = protocol.is_http();
    // Forwarding is only tried for an http:// judge.
    let fwd = http && !https_judge;
    match behavior {
        Working | Flaky | AuthGood | OldStyle | Chunked => Expect::alive(fwd, true),
        ForwardOnly if fwd => Expect::alive(true, false),
        ForwardOnly if http => Expect::dead("proxy_rejected"),
        TunnelOnly if http => Expect::alive(false, true),
        ForwardOnly | TunnelOnly => Expect::alive(false, true),
        Refused => Expect::dead("connect_refused"),
        Blackhole => Expect::dead("connect_timeout"),
        Silent => Expect::dead("proxy_timeout"),
        CloseAtOnce => Expect::dead("proxy_closed"),
        Garbage => Expect::dead("proxy_protocol_error"),
        WrongPage | PortalWithUrl => Expect::dead("content_mismatch"),
        AuthBad => Expect::dead("proxy_auth_failed"),
        TooSlow | Trickle => Expect::dead("timeout"),
        Mitm | TlsGarbage if https_judge => Expect::dead("tls_error"),
        Mitm | TlsGarbage => Expect::alive(fwd, true),
        EndlessHeader => Expect::dead("proxy_protocol_error"),
        HugeBody => Expect::dead("content_mismatch"),
        BogusSocks => match protocol {
            Protocol::Socks5 => Expect::dead("proxy_closed"),
            Protocol::Socks4 => Expect::dead("proxy_protocol_error"),
            Protocol::Http | Protocol::Https => Expect::alive(fwd, true),
        },
    }
}
