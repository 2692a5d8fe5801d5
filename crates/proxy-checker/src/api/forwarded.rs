//! Who the client is behind reverse proxies.
//!
//! `X-Forwarded-For` and `Forwarded` are lists that every hop appends to, and whose left
//! part the client writes itself. Only the hops we trust (`api.trusted_proxies`) are
//! believed: the list is walked from the right, skipping trusted addresses, and the first
//! address that is not trusted is the client. A peer we do not trust is the client, and its
//! headers are ignored. An entry that is not an address (garbage, `unknown`, an obfuscated
//! `_name`) where the client should be means the hop before it cannot be believed either:
//! the client is then the last trusted hop (all such clients share its limit).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

pub use crate::config::ForwardedHeader;

/// Hops walked at most, from the right (a chain of trusted proxies is short).
const MAX_HOPS: usize = 32;

/// The client's address: `peer` unless `peer` is a trusted proxy, then the first untrusted
/// hop from the right of `header`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet], header: ForwardedHeader) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    // Walked lazily from the right: a long spoofed left part costs nothing.
    let mut client = peer;
    let mut walked = 0;
    for value in headers.get_all(header.name()).iter().rev() {
        // Split on the raw bytes: a hop that is not UTF-8 is one garbage hop, and it does
        // not taint the hops a proxy appended to the right of it on the same line.
        for hop in value.as_bytes().rsplit(|b| *b == b',') {
            if walked == MAX_HOPS {
                return client;
            }
            walked += 1;
            let addr = std::str::from_utf8(hop).ok().and_then(|hop| match header {
                ForwardedHeader::XForwardedFor => parse_addr(hop.trim()),
                ForwardedHeader::Forwarded => forwarded_for(hop),
            });
            match addr {
                Some(ip) if is_trusted(&ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses compare as IPv4 (a dual-stack listener reports them so).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(|v6| canonical(IpAddr::V6(v6)))
}

/// The `for=` parameter of one `Forwarded` element (`for=1.2.3.4;proto=https`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    parse_addr(unquoted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LB: &str = "10.0.0.5";

    #[test]
    fn chains_of_one_to_three_hops() {
        let trusted = nets(&["10.0.0.0/8", "192.168.7.0/24", "fd00::/8"]);
        let xff = ForwardedHeader::XForwardedFor;
        // One hop: the load balancer appended the client.
        assert_eq!(client_ip(ip(LB), &headers("x-forwarded-for", &["203.0.113.9"]), &trusted, xff), ip("203.0.113.9"));
        // Two hops: CDN edge (trusted) → LB (peer).
        let h = headers("x-forwarded-for", &["198.51.100.4, 192.168.7.20"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip("198.51.100.4"));
        // Three hops, split over two header lines, with ports and IPv6.
        let h = headers("x-forwarded-for", &["[2001:db8::77]:5555, 10.1.1.1:80", "fd00::3"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip("2001:db8::77"));
        // IPv6 peer that is trusted, IPv4-mapped entries.
        let h = headers("x-forwarded-for", &["::ffff:203.0.113.50"]);
        assert_eq!(client_ip(ip("fd00::1"), &h, &trusted, xff), ip("203.0.113.50"));
        assert_eq!(client_ip(ip("::ffff:10.0.0.5"), &h, &trusted, xff), ip("203.0.113.50"));
    }

    #[test]
    fn spoofed_left_entries_are_never_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        let xff = ForwardedHeader::XForwardedFor;
        // The client wrote "1.1.1.1, 2.2.2.2"; the LB appended what it saw.
        let h = headers("x-forwarded-for", &["1.1.1.1, 2.2.2.2, 203.0.113.9"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip("203.0.113.9"));
        // A client that writes a trusted address on the left gains nothing.
        let h = headers("x-forwarded-for", &["10.9.9.9, 203.0.113.9"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip("203.0.113.9"));
        // Untrusted peer: its headers are ignored, whatever they say.
        let h = headers("x-forwarded-for", &["10.0.0.1", "8.8.8.8"]);
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &trusted, xff), ip("203.0.113.9"));
        // No trusted proxies configured: headers are ignored, even from loopback.
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &[], xff), ip("127.0.0.1"));
        // The other header is not believed: the LB writes X-Forwarded-For only.
        let h = headers("forwarded", &["for=8.8.8.8"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip(LB));
    }

    #[test]
    fn garbage_where_the_client_should_be_falls_back_to_the_last_trusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let xff = ForwardedHeader::XForwardedFor;
        for bad in ["unknown", "", "not an ip", "1.2.3.4.5", "[::1", "999.1.1.1", "1.2.3.4:99999", "_hidden"] {
            let h = headers("x-forwarded-for", &[&format!("8.8.8.8, {bad}, 10.3.3.3")]);
            assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip("10.3.3.3"), "{bad:?}");
        }
        // Garbage left of the client does not matter.
        let h = headers("x-forwarded-for", &["garbage, 203.0.113.9"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip("203.0.113.9"));
        // Non-ASCII bytes where the client should be: the peer; left of it: ignored (the
        // client wrote them, the proxy appended the real address on the same line).
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_bytes(b"8.8.8.8, \xff").unwrap());
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip(LB));
        h.insert("x-forwarded-for", HeaderValue::from_bytes(b"\x80\xff, 203.0.113.9").unwrap());
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip("203.0.113.9"));
        // Every hop trusted (an internal client): the leftmost.
        let h = headers("x-forwarded-for", &["10.7.7.7, 10.8.8.8"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, xff), ip("10.7.7.7"));
        // No header at all: the peer.
        assert_eq!(client_ip(ip(LB), &HeaderMap::new(), &trusted, xff), ip(LB));
        // A thousand spoofed entries cost nothing and change nothing.
        let long = vec!["1.1.1.1"; 1000].join(",") + ", 203.0.113.9";
        assert_eq!(client_ip(ip(LB), &headers("x-forwarded-for", &[&long]), &trusted, xff), ip("203.0.113.9"));
    }

    #[test]
    fn rfc_7239_forwarded() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let fwd = ForwardedHeader::Forwarded;
        let h = headers("forwarded", &["for=1.1.1.1, for=192.0.2.60;proto=http;by=203.0.113.43"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, fwd), ip("192.0.2.60"));
        let h = headers("forwarded", &[r#"for="[2001:db8:cafe::17]:4711", For="[2001:db8:ffff::1]""#]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, fwd), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=unknown;proto=https", "for=10.2.2.2"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, fwd), ip("10.2.2.2"));
        let h = headers("forwarded", &["proto=https;by=10.0.0.1"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, fwd), ip(LB));
        // X-Forwarded-For is not believed when the proxies write Forwarded.
        let h = headers("x-forwarded-for", &["8.8.8.8"]);
        assert_eq!(client_ip(ip(LB), &h, &trusted, fwd), ip(LB));
    }
}
