//! The per-IP limiter under a flood of ~1M distinct client addresses (IPv4 and IPv6 /64s)
//! arriving through a trusted reverse proxy's `X-Forwarded-For`: its heap stays under the
//! stated bound, a client it already knew keeps its own bucket (neither reset nor locked
//! out), and a client arriving after the flood gets its own. Heap is measured by a
//! counting allocator (its own test binary).
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv6Addr};

use axum::http::{HeaderMap, HeaderValue};
use proxy_checker::api::{BYTES_PER_CLIENT, Guard, MAX_TRACKED_IPS};
use proxy_checker::config::Config;

#[path = "shared/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

const LB: [u8; 4] = [10, 0, 0, 5];

/// One request from `client` through the load balancer, behind a spoofed left entry.
fn through_lb(g: &Guard, client: &str) -> bool {
    let mut h = HeaderMap::new();
    let chain = format!("1.1.1.1, {client}");
    h.insert("x-forwarded-for", HeaderValue::from_str(&chain).unwrap());
    g.admit_ip(g.client_ip(IpAddr::from(LB), &h)).is_ok()
}

#[test]
fn a_million_addresses_through_a_trusted_proxy() {
    let api = Config::from_json(
        r#"{"api": {"trusted_proxies": ["10.0.0.0/8"], "rate_limit_per_ip_per_minute": 3,
                    "api_keys": ["0123456789abcdef"]}}"#,
        "test",
    )
    .unwrap()
    .api;
    let g = Guard::new(&api, None);
    // A known client spends 2 of its 3 tokens before the flood.
    let known = "198.51.100.1";
    assert!(through_lb(&g, known) && through_lb(&g, known));

    let before = counting_alloc::reset_peak();
    let mut refused = 0u32;
    for i in 0..500_000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        refused += u32::from(!through_lb(&g, &format!("11.{b}.{c}.{d}")));
        let v6 = Ipv6Addr::new(0x2a00, 0x1450, (i >> 16) as u16, i as u16, 0xdead, 0, 0, 1);
        refused += u32::from(!through_lb(&g, &v6.to_string()));
    }
    let grown = counting_alloc::now() - before;
    let peak = counting_alloc::peak() - before;
    let bound = MAX_TRACKED_IPS * BYTES_PER_CLIENT;
    eprintln!(
        "1,000,000 addresses: {} tracked, heap +{grown} B ({} B per tracked client), peak +{peak} B, bound {bound} B",
        g.tracked_ips(),
        grown / g.tracked_ips().max(1)
    );
    assert_eq!(refused, 0, "flood addresses were refused: a shared bucket");
    assert!(g.tracked_ips() <= MAX_TRACKED_IPS, "{} tracked", g.tracked_ips());
    assert!(peak <= bound, "the limiter's heap peaked at {peak} B, over the stated {bound} B");

    // The known client kept its bucket: one token left, then refused (not reset, not locked out).
    assert!(through_lb(&g, known), "a known client was locked out by the flood");
    assert!(!through_lb(&g, known), "the flood reset a known client's bucket");
    // A client arriving after the flood has a bucket of its own.
    let late = "198.51.100.2";
    assert!((0..3).all(|_| through_lb(&g, late)), "a late client was limited by the flood");
    assert!(!through_lb(&g, late));

    // A flood that comes back (two requests per address) fills the established table too:
    // the heap still stays under the bound, and whoever it pushes out is forgotten — given
    // a fresh bucket, never locked out.
    for i in 0..200_000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        let addr = format!("12.{b}.{c}.{d}");
        assert!(through_lb(&g, &addr) && through_lb(&g, &addr), "returning flood address {i} refused");
    }
    let grown = counting_alloc::now() - before;
    let peak = counting_alloc::peak() - before;
    eprintln!(
        "+400,000 returning requests: {} tracked, heap +{grown} B ({} B per tracked client), peak +{peak} B",
        g.tracked_ips(),
        grown / g.tracked_ips().max(1)
    );
    // Both tables full (shards fill unevenly: within 1 %).
    assert!(g.tracked_ips() >= MAX_TRACKED_IPS * 99 / 100, "{} tracked", g.tracked_ips());
    assert!(peak <= bound, "the limiter's heap peaked at {peak} B, over the stated {bound} B");
    assert!(through_lb(&g, known) && through_lb(&g, late), "a client pushed out was locked out");
}
