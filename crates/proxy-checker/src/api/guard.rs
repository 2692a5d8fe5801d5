//! Who may call what: API keys (SHA-256 digests compared in constant time) and the two
//! rate limits (per key, per client IP). Rebuilt from config on every reload.
//!
//! The per-IP limiter's memory is bounded: idle clients are swept every few seconds, and
//! past [`MAX_TRACKED_IPS`] new clients share one overflow bucket instead of growing it.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiConfig;

/// Client IPs the per-IP limiter tracks at most.
pub const MAX_TRACKED_IPS: usize = 100_000;

/// Environment variable holding extra API keys, comma-separated.
pub const API_KEY_ENV: &str = "PROXY_API_KEY";

/// Why a request is refused.
pub enum Refusal {
    Unauthorized,
    Limited { limiter: &'static str, retry_after: Duration },
}

/// Keys and limiters of one config generation.
pub struct Guard {
    pub auth: bool,
    pub metrics_auth: bool,
    pub trust_forwarded_for: bool,
    keys: Vec<[u8; 32]>,
    per_key: DefaultKeyedRateLimiter<usize>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    overflow: DefaultDirectRateLimiter,
    ip_quota_per_minute: u32,
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
        let mut keys: Vec<[u8; 32]> = api.api_keys.iter().map(|k| digest(k)).collect();
        if let Some(env) = env_keys {
            keys.extend(env.split(',').map(str::trim).filter(|k| !k.is_empty()).map(digest));
        }
        Self {
            auth: api.auth,
            metrics_auth: api.metrics_require_auth,
            trust_forwarded_for: api.trust_forwarded_for,
            keys,
            per_key: RateLimiter::keyed(per_minute(api.rate_limit_per_minute)),
            per_ip: RateLimiter::keyed(per_minute(api.rate_limit_per_ip_per_minute)),
            overflow: RateLimiter::direct(per_minute(api.rate_limit_per_ip_per_minute.saturating_mul(100))),
            ip_quota_per_minute: api.rate_limit_per_ip_per_minute,
            last_sweep: std::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
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

    /// Authenticates and applies the per-key limit.
    pub fn authorize(&self, presented: Option<&str>) -> Result<(), Refusal> {
        if !self.auth {
            return Ok(());
        }
        let i = presented.and_then(|k| self.key_index(k)).ok_or(Refusal::Unauthorized)?;
        self.per_key.check_key(&i).map_err(|n| Refusal::Limited {
            limiter: "key",
            retry_after: n.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// Applies the per-IP limit.
    pub fn admit_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let key = limiter_key(ip);
        let limited = |n: governor::NotUntil<_>| Refusal::Limited {
            limiter: "ip",
            retry_after: n.wait_time_from(DefaultClock::default().now()),
        };
        if self.per_ip.len() >= MAX_TRACKED_IPS {
            self.sweep(Duration::from_secs(1));
            if self.per_ip.len() >= MAX_TRACKED_IPS {
                return self.overflow.check().map_err(limited);
            }
        }
        self.per_ip.check_key(&key).map_err(limited)
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
    }

    pub fn tracked_ips(&self) -> usize {
        self.per_ip.len()
    }

    pub fn ip_quota_per_minute(&self) -> u32 {
        self.ip_quota_per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(per_ip: u32) -> ApiConfig {
        ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            auth: true,
            api_keys: vec!["0123456789abcdef".into()],
            rate_limit_per_minute: 10,
            rate_limit_per_ip_per_minute: per_ip,
            trust_forwarded_for: false,
            metrics_require_auth: false,
        }
    }

    #[test]
    fn a_flood_of_distinct_ips_does_not_grow_the_limiter_without_bound() {
        let g = Guard::new(&api(1), None);
        // Each IP spends its only token, so none is "recent-free" for a sweep to drop.
        for i in 0..(MAX_TRACKED_IPS as u32 + 50_000) {
            let _ = g.admit_ip(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()));
        }
        assert!(g.tracked_ips() <= MAX_TRACKED_IPS, "{} tracked", g.tracked_ips());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(limiter_key(a), limiter_key(b));
        assert_ne!(limiter_key(a), limiter_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(limiter_key("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
        let g = Guard::new(&api(1), None);
        assert!(g.admit_ip(a).is_ok());
        assert!(matches!(g.admit_ip(b), Err(Refusal::Limited { limiter: "ip", .. })));
    }

    #[test]
    fn keys_from_config_and_environment() {
        let g = Guard::new(&api(100), Some(" env-key-0123456789 , ,"));
        assert!(g.authorize(Some("0123456789abcdef")).is_ok());
        assert!(g.authorize(Some("env-key-0123456789")).is_ok());
        assert!(matches!(g.authorize(Some("nope")), Err(Refusal::Unauthorized)));
        assert!(matches!(g.authorize(None), Err(Refusal::Unauthorized)));
    }
}
