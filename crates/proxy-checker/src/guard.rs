//! The target guard: which addresses the checker may dial (proxies, sources, the judge
//! health probe).
//!
//! Proxy lists come from strangers. Without this guard a list could turn the checker into
//! an internal port scanner (cloud metadata, admin ports on the LAN). Three classes:
//!
//! - **unroutable** (0.0.0.0/8, multicast, broadcast, reserved, the documentation
//!   TEST-NETs, benchmarking and discard ranges): always refused;
//! - **metadata** (the instance-metadata and host endpoints of the large clouds): always
//!   refused, even with `allow_private` — nothing in a proxy list has a reason to be there;
//! - **private** (loopback, RFC 1918, CGNAT, link-local, unique-local, …): refused unless
//!   `allow_private` is set (tests, benchmarks, a LAN of your own).
//!
//! IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`, translated
//! `::ffff:0:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`,
//! Teredo `2001::/32`) are judged by the IPv4 address they lead to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address may not be dialed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Not an address on the internet (see the module docs): always refused.
    Unroutable,
    /// A cloud metadata or host endpoint: always refused.
    Metadata,
    /// Loopback, RFC 1918, CGNAT, link-local, unique-local: allowed only with `allow_private`.
    Private,
}

/// Cloud instance-metadata and host endpoints, refused even with `allow_private`.
const METADATA: &[(IpAddr, &str)] = &[
    (
        IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
        "instance metadata (AWS, GCP, Azure, OCI, DigitalOcean, OpenStack)",
    ),
    (IpAddr::V4(Ipv4Addr::new(169, 254, 169, 253)), "AWS VPC DNS resolver (host service)"),
    (IpAddr::V4(Ipv4Addr::new(169, 254, 169, 123)), "AWS time sync (host service)"),
    (IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)), "AWS ECS task metadata"),
    (IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)), "AWS EKS pod identity"),
    (IpAddr::V4(Ipv4Addr::new(169, 254, 0, 23)), "Tencent Cloud metadata"),
    (IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), "Alibaba Cloud metadata"),
    (IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)), "Azure host endpoint (WireServer)"),
    (IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)), "Oracle Cloud legacy metadata"),
    (IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), "AWS instance metadata (IPv6)"),
    (IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)), "AWS EKS pod identity (IPv6)"),
    (IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253)), "AWS VPC DNS resolver (IPv6, host service)"),
    (IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x123)), "AWS time sync (IPv6, host service)"),
    (IpAddr::V6(Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)), "GCP instance metadata (IPv6)"),
];

/// Decides whether `ip` may be dialed.
pub fn check(ip: IpAddr, allow_private: bool) -> Result<(), Blocked> {
    match classify(ip) {
        None => Ok(()),
        Some((Blocked::Private, _)) if allow_private => Ok(()),
        Some((b, _)) => Err(b),
    }
}

/// The class of `ip` and the range it falls in (for messages and the table test), or
/// `None` for an ordinary internet address.
pub fn classify(ip: IpAddr) -> Option<(Blocked, &'static str)> {
    if let Some((_, why)) = METADATA.iter().find(|(m, _)| *m == ip) {
        return Some((Blocked::Metadata, why));
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some((v4, _)) if classify(IpAddr::V4(v4)).is_some() => classify(IpAddr::V4(v4)),
            Some((_, form)) if form.is_some() => form,
            Some(_) => None,
            None => classify_v6(v6),
        },
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32u32.saturating_sub(len)).unwrap_or(0);
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> Option<(Blocked, &'static str)> {
    use Blocked::{Private, Unroutable};
    const TABLE: &[([u8; 4], u32, Blocked, &str)] = &[
        ([0, 0, 0, 0], 8, Unroutable, "0.0.0.0/8: this network"),
        ([192, 0, 2, 0], 24, Unroutable, "192.0.2.0/24: documentation (TEST-NET-1)"),
        ([198, 51, 100, 0], 24, Unroutable, "198.51.100.0/24: documentation (TEST-NET-2)"),
        ([203, 0, 113, 0], 24, Unroutable, "203.0.113.0/24: documentation (TEST-NET-3)"),
        ([192, 88, 99, 0], 24, Unroutable, "192.88.99.0/24: deprecated 6to4 relay anycast"),
        ([224, 0, 0, 0], 4, Unroutable, "224.0.0.0/4: multicast"),
        ([240, 0, 0, 0], 4, Unroutable, "240.0.0.0/4: reserved and broadcast"),
        ([127, 0, 0, 0], 8, Private, "127.0.0.0/8: loopback"),
        ([10, 0, 0, 0], 8, Private, "10.0.0.0/8: private (RFC 1918)"),
        ([172, 16, 0, 0], 12, Private, "172.16.0.0/12: private (RFC 1918)"),
        ([192, 168, 0, 0], 16, Private, "192.168.0.0/16: private (RFC 1918)"),
        ([100, 64, 0, 0], 10, Private, "100.64.0.0/10: carrier-grade NAT"),
        ([169, 254, 0, 0], 16, Private, "169.254.0.0/16: link-local"),
        ([192, 0, 0, 0], 24, Private, "192.0.0.0/24: IETF protocol assignments"),
        ([198, 18, 0, 0], 15, Private, "198.18.0.0/15: benchmarking"),
    ];
    TABLE.iter().find(|(net, len, _, _)| in_v4(ip, *net, *len)).map(|(_, _, b, why)| (*b, *why))
}

/// The IPv4 address an IPv6 form leads to, and the verdict for the form itself when the
/// IPv4 address is an ordinary one (`None`: judged by the IPv4 address alone).
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, Option<(Blocked, &'static str)>)> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, (s[6] & 0xff) as u8, (s[7] >> 8) as u8, (s[7] & 0xff) as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated, RFC 2765)
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some((low, None)),
        // ::a.b.c.d (IPv4-compatible, deprecated): no host answers there on the internet.
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_unspecified() && !ip.is_loopback() => {
            Some((low, Some((Blocked::Private, "::/96: IPv4-compatible (deprecated)"))))
        }
        // NAT64 well-known prefix: the gateway dials the IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some((low, None)),
        // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        [0x2002, hi, lo, ..] => {
            Some((Ipv4Addr::new((hi >> 8) as u8, (hi & 0xff) as u8, (lo >> 8) as u8, (lo & 0xff) as u8), None))
        }
        // Teredo: the client's IPv4 address, inverted, in the last 32 bits (the server's in
        // segments 2–3 is checked too).
        [0x2001, 0, srv_hi, srv_lo, ..] => {
            let server =
                Ipv4Addr::new((srv_hi >> 8) as u8, (srv_hi & 0xff) as u8, (srv_lo >> 8) as u8, (srv_lo & 0xff) as u8);
            let client = Ipv4Addr::from(!u32::from(low));
            match classify(IpAddr::V4(server)) {
                Some(_) => Some((server, None)),
                None => Some((client, None)),
            }
        }
        _ => None,
    }
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128u32.saturating_sub(len)).unwrap_or(0);
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

fn classify_v6(ip: Ipv6Addr) -> Option<(Blocked, &'static str)> {
    use Blocked::{Private, Unroutable};
    const TABLE: &[([u16; 8], u32, Blocked, &str)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 128, Unroutable, "::: unspecified"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Unroutable, "ff00::/8: multicast"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Unroutable, "2001:db8::/32: documentation"),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Unroutable, "3fff::/20: documentation"),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Unroutable, "100::/64: discard-only"),
        ([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, Unroutable, "2001:10::/28: ORCHID (deprecated)"),
        ([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, Unroutable, "2001:20::/28: ORCHIDv2"),
        ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, Private, "2001:2::/48: benchmarking"),
        ([0, 0, 0, 0, 0, 0, 0, 1], 128, Private, "::1: loopback"),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Private, "fc00::/7: unique local"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Private, "fe80::/10: link-local"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Private, "fec0::/10: site-local (deprecated)"),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Private, "64:ff9b:1::/48: local-use NAT64"),
    ];
    TABLE.iter().find(|(net, len, _, _)| in_v6(ip, *net, *len)).map(|(_, _, b, why)| (*b, *why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every range, with the reason it is blocked: (address, class, words the reason
    /// must contain). `None`: an ordinary address, allowed.
    #[test]
    fn table() {
        use Blocked::*;
        let cases: &[(&str, Option<Blocked>, &str)] = &[
            // Ordinary internet addresses, and the edges of the ranges around them.
            ("1.2.3.4", None, ""),
            ("8.8.8.8", None, ""),
            ("100.63.255.255", None, ""),
            ("100.128.0.1", None, ""),
            ("192.0.1.255", None, ""),
            ("192.0.3.0", None, ""),
            ("198.51.99.255", None, ""),
            ("203.0.114.0", None, ""),
            ("168.63.129.17", None, ""),
            ("2001:4860::8888", None, ""),
            ("2a00:1450::1", None, ""),
            ("::ffff:8.8.8.8", None, ""),
            ("::ffff:0:8.8.8.8", None, ""),
            ("64:ff9b::808:808", None, ""),
            ("2002:0808:0808::1", None, ""),
            // Teredo: server 65.54.227.120, client 8.8.8.8 (inverted: f7f7:f7f7).
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None, ""),
            // Unroutable, always.
            ("0.0.0.0", Some(Unroutable), "this network"),
            ("0.1.2.3", Some(Unroutable), "this network"),
            ("192.0.2.1", Some(Unroutable), "TEST-NET-1"),
            ("198.51.100.7", Some(Unroutable), "TEST-NET-2"),
            ("203.0.113.200", Some(Unroutable), "TEST-NET-3"),
            ("192.88.99.1", Some(Unroutable), "6to4 relay"),
            ("224.0.0.1", Some(Unroutable), "multicast"),
            ("239.1.1.1", Some(Unroutable), "multicast"),
            ("240.0.0.1", Some(Unroutable), "reserved"),
            ("255.255.255.255", Some(Unroutable), "broadcast"),
            ("::", Some(Unroutable), "unspecified"),
            ("ff02::1", Some(Unroutable), "multicast"),
            ("2001:db8::1", Some(Unroutable), "documentation"),
            ("3fff::1", Some(Unroutable), "documentation"),
            ("100::1", Some(Unroutable), "discard"),
            ("2001:10::1", Some(Unroutable), "ORCHID"),
            ("2001:20::1", Some(Unroutable), "ORCHIDv2"),
            ("::ffff:0.0.0.1", Some(Unroutable), "this network"),
            ("::ffff:203.0.113.5", Some(Unroutable), "TEST-NET-3"),
            // Metadata, always.
            ("169.254.169.254", Some(Metadata), "instance metadata"),
            ("169.254.170.2", Some(Metadata), "ECS"),
            ("169.254.169.253", Some(Metadata), "DNS"),
            ("169.254.169.123", Some(Metadata), "time sync"),
            ("fd00:ec2::253", Some(Metadata), "DNS"),
            ("169.254.170.23", Some(Metadata), "EKS"),
            ("169.254.0.23", Some(Metadata), "Tencent"),
            ("100.100.100.200", Some(Metadata), "Alibaba"),
            ("168.63.129.16", Some(Metadata), "Azure"),
            ("192.0.0.192", Some(Metadata), "Oracle"),
            ("fd00:ec2::254", Some(Metadata), "AWS"),
            ("fd00:ec2::23", Some(Metadata), "EKS"),
            ("fd20:ce::254", Some(Metadata), "GCP"),
            ("::ffff:169.254.169.254", Some(Metadata), "instance metadata"),
            ("::ffff:0:a9fe:a9fe", Some(Metadata), "instance metadata"),
            ("64:ff9b::a9fe:a9fe", Some(Metadata), "instance metadata"),
            ("2002:a9fe:a9fe::1", Some(Metadata), "instance metadata"),
            ("2002:a83f:8110::", Some(Metadata), "Azure"),
            // Private: refused unless allow_private.
            ("127.0.0.1", Some(Private), "loopback"),
            ("127.5.6.7", Some(Private), "loopback"),
            ("10.0.0.1", Some(Private), "RFC 1918"),
            ("172.16.0.1", Some(Private), "RFC 1918"),
            ("172.31.255.255", Some(Private), "RFC 1918"),
            ("192.168.1.1", Some(Private), "RFC 1918"),
            ("100.64.0.1", Some(Private), "carrier-grade NAT"),
            ("169.254.1.1", Some(Private), "link-local"),
            ("192.0.0.8", Some(Private), "IETF protocol"),
            ("198.18.0.1", Some(Private), "benchmarking"),
            ("198.19.255.255", Some(Private), "benchmarking"),
            ("::1", Some(Private), "loopback"),
            ("fd00::1", Some(Private), "unique local"),
            ("fe80::1", Some(Private), "link-local"),
            ("fec0::1", Some(Private), "site-local"),
            ("2001:2::1", Some(Private), "benchmarking"),
            ("64:ff9b:1::1", Some(Private), "local-use NAT64"),
            ("::ffff:10.0.0.1", Some(Private), "RFC 1918"),
            ("::ffff:127.0.0.1", Some(Private), "loopback"),
            ("::ffff:0:10.1.2.3", Some(Private), "RFC 1918"),
            ("::10.0.0.1", Some(Private), "RFC 1918"),
            ("::8.8.8.8", Some(Private), "IPv4-compatible"),
            ("64:ff9b::10.0.0.1", Some(Private), "RFC 1918"),
            ("64:ff9b::127.0.0.1", Some(Private), "loopback"),
            ("2002:c0a8:0101::1", Some(Private), "RFC 1918"),
            ("2002:7f00:0001::", Some(Private), "loopback"),
            // Teredo with client 192.168.1.1 (inverted 3f57:fefe) and with server 10.0.0.1.
            ("2001:0:4136:e378:8000:63bf:3f57:fefe", Some(Private), "RFC 1918"),
            ("2001:0:a00:1::1", Some(Private), "RFC 1918"),
        ];
        for (s, class, why) in cases {
            let ip: IpAddr = s.parse().unwrap();
            let got = classify(ip);
            assert_eq!(got.map(|g| g.0), *class, "{s}: {got:?}");
            if let Some((_, reason)) = got {
                assert!(reason.contains(why), "{s}: reason `{reason}` should say `{why}`");
            }
            let strict = class.map_or(Ok(()), Err);
            let relaxed = if *class == Some(Private) { Ok(()) } else { strict };
            assert_eq!(check(ip, false), strict, "{s} strict");
            assert_eq!(check(ip, true), relaxed, "{s} with allow_private");
        }
    }
}
