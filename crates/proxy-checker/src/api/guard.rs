//! Who may call what: API keys (SHA-256 digests compared in constant time), admin keys,
//! the two rate limits (per key, per client IP) and who the client is behind trusted
//! reverse proxies. Rebuilt from config on every reload.
//!
//! The per-IP limiter's memory is bounded without a shared overflow bucket: see
//! [`super::clients`].

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::clients::ClientTable;
use crate::config::{ApiConfig, ForwardedHeader};

/// Environment variable holding extra API keys, comma-separated.
pub const API_KEY_ENV: &str = "PROXY_API_KEY";

/// Why a request is refused.
#[derive(Debug)]
pub enum Refusal {
    Unauthorized,
    /// A valid key that is not one of `api.admin_keys`, on an admin route.
    Forbidden,
    Limited {
        limiter: &'static str,
        retry_after: Duration,
    },
}

/// Keys and limiters of one config generation.
pub struct Guard {
    pub auth: bool,
    pub metrics_auth: bool,
    trusted_proxies: Vec<IpNet>,
    forwarded_header: ForwardedHeader,
    /// Digests of every key; `admin[i]` says whether key `i` is an admin key.
    keys: Vec<[u8; 32]>,
    admin: Vec<bool>,
    /// `api.admin_keys` is set: admin routes need one of them.
    admin_required: bool,
    per_key: DefaultKeyedRateLimiter<usize>,
    per_ip: RateLimiter<IpAddr, ClientTable, DefaultClock>,
    /// `POST /report` per key; per client address with auth off (in a bounded table,
    /// as the per-IP limit).
    reports: DefaultKeyedRateLimiter<usize>,
    reports_by_ip: RateLimiter<IpAddr, ClientTable, DefaultClock>,
    last_sweep: std::sync::Mutex<Instant>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("max(1)"))
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// IPv6 clients are keyed by their /64: one host usually owns the whole prefix.
pub fn limiter_key(ip: IpAddr) -> IpAddr {
    match ip {
        // NAT64 (64:ff9b::/96): the IPv4 client inside, not the gateway's /64.
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::from([a, b, c, d])
        }
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

impl Guard {
    /// Keys come from the config and from [`API_KEY_ENV`] (passed in as `env_keys`).
    pub fn new(api: &ApiConfig, env_keys: Option<&str>) -> Self {
        let env = env_keys.into_iter().flat_map(|e| e.split(',')).map(str::trim).filter(|k| !k.is_empty());
        let plain = api.api_keys.iter().map(String::as_str).chain(env).map(|k| (digest(k), false));
        let admin = api.admin_keys.iter().map(|k| (digest(k), true));
        // One entry per distinct key (listed twice, it is an admin key if either says so).
        let (mut keys, mut admin_marks): (Vec<[u8; 32]>, Vec<bool>) = (Vec::new(), Vec::new());
        for (d, is_admin) in plain.chain(admin) {
            match keys.iter().position(|have| *have == d) {
                Some(i) => admin_marks[i] |= is_admin,
                None => {
                    keys.push(d);
                    admin_marks.push(is_admin);
                }
            }
        }
        let admin = admin_marks;
        Self {
            auth: api.auth,
            metrics_auth: api.metrics_require_auth,
            trusted_proxies: api.trusted_proxies.clone(),
            forwarded_header: api.forwarded_header,
            keys,
            admin,
            admin_required: !api.admin_keys.is_empty(),
            per_key: RateLimiter::keyed(per_minute(api.rate_limit_per_minute)),
            per_ip: RateLimiter::new(
                per_minute(api.rate_limit_per_ip_per_minute),
                ClientTable::default(),
                DefaultClock::default(),
            ),
            reports: RateLimiter::keyed(per_minute(api.report_per_minute)),
            reports_by_ip: RateLimiter::new(
                per_minute(api.report_per_minute),
                ClientTable::default(),
                DefaultClock::default(),
            ),
            last_sweep: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// The index of the matching key. Every key is compared, in constant time each.
    fn key_index(&self, presented: &str) -> Option<usize> {
        let d = digest(presented);
        let mut found = None;
        for (i, k) in self.keys.iter().enumerate() {
            if bool::from(k.ct_eq(&d)) {
                found = Some(i);
            }
        }
        found
    }

    /// Authenticates, checks the admin mark if `admin` is asked, and applies the per-key
    /// limit.
    pub fn authorize(&self, presented: Option<&str>, admin: bool) -> Result<(), Refusal> {
        // With auth off, admin routes still need an admin key when admin keys are set.
        let key_needed = self.auth || (admin && self.admin_required);
        if !key_needed {
            return Ok(());
        }
        let i = presented.and_then(|k| self.key_index(k)).ok_or(Refusal::Unauthorized)?;
        if admin && self.admin_required && !self.admin[i] {
            return Err(Refusal::Forbidden);
        }
        self.per_key.check_key(&i).map_err(|n| Refusal::Limited {
            limiter: "key",
            retry_after: n.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// The client's address: the peer, or behind `api.trusted_proxies` the first
    /// untrusted forwarded hop (see [`super::forwarded`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.trusted_proxies.is_empty() {
            return peer;
        }
        super::forwarded::client_ip(peer, headers, &self.trusted_proxies, self.forwarded_header)
    }

    /// Applies the `POST /report` limit: per key, or per client address when no key is
    /// needed (the route's key was already checked by [`Self::authorize`]).
    pub fn admit_report(&self, presented: Option<&str>, ip: IpAddr) -> Result<(), Refusal> {
        let verdict = match presented.and_then(|k| self.key_index(k)) {
            Some(i) if self.auth => self.reports.check_key(&i),
            _ => self.reports_by_ip.check_key(&limiter_key(ip)),
        };
        verdict.map_err(|n| Refusal::Limited {
            limiter: "report",
            retry_after: n.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// Applies the per-IP limit.
    pub fn admit_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.per_ip.check_key(&limiter_key(ip)).map_err(|n| Refusal::Limited {
            limiter: "ip",
            retry_after: n.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// Forgets clients whose bucket is full again; at most once per `min_gap`.
    pub fn sweep(&self, min_gap: Duration) {
        {
            let mut last = self.last_sweep.lock().expect("sweep lock");
            if last.elapsed() < min_gap {
                return;
            }
            *last = Instant::now();
        }
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_key.retain_recent();
        self.reports.retain_recent();
        self.reports_by_ip.retain_recent();
    }

    pub fn tracked_ips(&self) -> usize {
        self.per_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(per_ip: u32) -> ApiConfig {
        let mut a = crate::config::Config::defaults().api;
        a.api_keys = vec!["0123456789abcdef".into()];
        a.rate_limit_per_minute = 10;
        a.rate_limit_per_ip_per_minute = per_ip;
        a
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::from(i.to_be_bytes())
    }

    #[test]
    fn a_flood_of_distinct_ips_neither_grows_the_table_nor_locks_anyone_out() {
        let g = Guard::new(&api(2), None);
        // A known client: seen twice, so established; it has one request left this minute.
        let known = v4(0xc633_6401);
        assert!(g.admit_ip(known).is_ok() && g.admit_ip(known).is_ok());
        // 1M one-shot addresses: IPv4 and IPv6 /64s. Each is admitted (its own bucket).
        for i in 0..500_000u32 {
            assert!(g.admit_ip(v4(0x0b00_0000 + i)).is_ok(), "flood address {i} refused");
            let v6 = Ipv6Addr::new(0x2a00, 0x1450, (i >> 16) as u16, i as u16, 0, 0, 0, 1);
            assert!(g.admit_ip(IpAddr::V6(v6)).is_ok(), "flood /64 {i} refused");
        }
        assert!(g.tracked_ips() <= super::super::clients::MAX_TRACKED_IPS, "{} tracked", g.tracked_ips());
        // The known client kept its own bucket through the flood: not reset (it is still
        // limited after using its last token), and not locked out.
        assert!(g.admit_ip(known).is_err(), "the flood reset a known client's bucket");
        // A client arriving after the flood is admitted, and its second request too.
        let late = v4(0xc633_6402);
        assert!(g.admit_ip(late).is_ok() && g.admit_ip(late).is_ok());
        assert!(g.admit_ip(late).is_err(), "a late client is limited by its own bucket only");
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(limiter_key(a), limiter_key(b));
        assert_ne!(limiter_key(a), limiter_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(limiter_key("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(limiter_key("64:ff9b::1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_ne!(limiter_key("64:ff9b::1.2.3.4".parse().unwrap()), limiter_key("64:ff9b::1.2.3.5".parse().unwrap()));
        let g = Guard::new(&api(1), None);
        assert!(g.admit_ip(a).is_ok());
        assert!(matches!(g.admit_ip(b), Err(Refusal::Limited { limiter: "ip", .. })));
    }

    #[test]
    fn keys_from_config_and_environment_and_admin_keys() {
        let g = Guard::new(&api(100), Some(" env-key-0123456789 , ,"));
        assert!(g.authorize(Some("0123456789abcdef"), false).is_ok());
        assert!(g.authorize(Some("env-key-0123456789"), false).is_ok());
        assert!(g.authorize(Some("env-key-0123456789"), true).is_ok(), "no admin keys: every key may reload");
        assert!(matches!(g.authorize(Some("nope"), false), Err(Refusal::Unauthorized)));
        assert!(matches!(g.authorize(None, false), Err(Refusal::Unauthorized)));
        let mut a = api(100);
        a.admin_keys = vec!["admin-key-0123456789".into(), "0123456789abcdef".into()];
        let g = Guard::new(&a, Some("env-key-0123456789"));
        assert!(matches!(g.authorize(Some("env-key-0123456789"), true), Err(Refusal::Forbidden)));
        assert!(g.authorize(Some("env-key-0123456789"), false).is_ok());
        assert!(g.authorize(Some("admin-key-0123456789"), true).is_ok());
        assert!(g.authorize(Some("admin-key-0123456789"), false).is_ok(), "an admin key is a key");
        assert!(g.authorize(Some("0123456789abcdef"), true).is_ok(), "a config key marked admin");
        assert!(matches!(g.authorize(Some("nope"), true), Err(Refusal::Unauthorized)));
        // A key listed twice (config and environment) and as an admin key: admin.
        let g = Guard::new(&a, Some("admin-key-0123456789"));
        assert!(g.authorize(Some("admin-key-0123456789"), true).is_ok());
        // Auth off: every route is open but the admin ones, which still need an admin key.
        a.auth = false;
        let g = Guard::new(&a, None);
        assert!(g.authorize(None, false).is_ok());
        assert!(matches!(g.authorize(None, true), Err(Refusal::Unauthorized)));
        assert!(matches!(g.authorize(Some("0123456789abcdef0"), true), Err(Refusal::Unauthorized)));
        assert!(g.authorize(Some("admin-key-0123456789"), true).is_ok());
    }
}
