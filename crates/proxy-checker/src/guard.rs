//! The target guard: which addresses the checker may dial.
//!
//! Proxy lists come from strangers. Without this guard a list could turn the checker into
//! an internal port scanner (cloud metadata, admin ports on the LAN). Unroutable targets are
//! always refused; loopback, private, CGNAT and link-local ranges are refused unless
//! `allow_private` is set (tests and benchmarks set it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address may not be dialed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// 0.0.0.0/8, multicast, broadcast, reserved, documentation-only and unspecified.
    Unroutable,
    /// Loopback, RFC 1918, CGNAT, link-local, unique-local: allowed only with `allow_private`.
    Private,
}

/// Decides whether `ip` may be dialed.
pub fn check(ip: IpAddr, allow_private: bool) -> Result<(), Blocked> {
    let class = match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    };
    match class {
        None => Ok(()),
        Some(Blocked::Private) if allow_private => Ok(()),
        Some(b) => Err(b),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Blocked> {
    let [a, b, _, _] = ip.octets();
    if a == 0 || ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        return Some(Blocked::Unroutable);
    }
    if ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24 (IETF protocol assignments) and 198.18.0.0/15 (benchmarking)
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
    {
        return Some(Blocked::Private);
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Option<Blocked> {
    let seg0 = ip.segments()[0];
    if ip.is_unspecified() || ip.is_multicast() {
        return Some(Blocked::Unroutable);
    }
    if ip.is_loopback()
        || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg0 & 0xffc0) == 0xfec0 // deprecated site-local
        || ip.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::a.b.c.d
        || seg0 == 0x64 && ip.segments()[1] == 0xff9b
    // NAT64 can reach anything behind the gateway
    {
        return Some(Blocked::Private);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(s: &str, strict: Result<(), Blocked>, relaxed: Result<(), Blocked>) {
        let ip: IpAddr = s.parse().unwrap();
        assert_eq!(check(ip, false), strict, "{s} strict");
        assert_eq!(check(ip, true), relaxed, "{s} with allow_private");
    }

    #[test]
    fn table() {
        use Blocked::*;
        let ok = Ok(());
        for s in ["1.2.3.4", "8.8.8.8", "2001:4860::8888", "100.63.255.255", "100.128.0.1"] {
            case(s, ok, ok);
        }
        for s in ["0.0.0.0", "0.1.2.3", "224.0.0.1", "239.1.1.1", "255.255.255.255", "240.0.0.1", "::", "ff02::1"] {
            case(s, Err(Unroutable), Err(Unroutable));
        }
        for s in [
            "127.0.0.1",
            "127.5.6.7",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            case(s, Err(Private), ok);
        }
        case("::ffff:0.0.0.1", Err(Unroutable), Err(Unroutable));
    }
}
