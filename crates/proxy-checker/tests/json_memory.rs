//! What a JSON list costs to parse, measured by a counting allocator (its own test binary,
//! so nothing else allocates beside it): however the document is shaped, the peak heap
//! while parsing stays within the document's size plus what the parse returns.
// A counting allocator is the one way to measure this; it only forwards to `System`.
#![allow(unsafe_code)]

use proxy_checker::proxy::Protocol;
use proxy_checker::source::parse::{Format, ParseOptions, parse_document};

#[path = "shared/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

/// Parses `doc`; returns (peak heap above the start, heap still held by the result).
fn measure(doc: &[u8]) -> (usize, usize, usize) {
    let opts = ParseOptions { default_protocol: Protocol::Http, allow_private: false, max_proxies: 10_000_000 };
    let before = counting_alloc::reset_peak();
    let mut rejects = 0usize;
    let (parsed, format) = parse_document(doc, opts, &mut |_| rejects += 1);
    assert_eq!(format, Format::Json);
    let peak = counting_alloc::peak() - before;
    let kept = counting_alloc::now() - before;
    let n = parsed.proxies.len();
    drop(parsed);
    (peak, kept, n)
}

#[test]
fn a_json_list_costs_about_its_size_whatever_its_shape() {
    let mb = 8 << 20;
    let repeat = |open: &str, unit: &str, close: &str| {
        let mut s = String::with_capacity(mb + 64);
        s.push_str(open);
        while s.len() < mb {
            s.push_str(unit);
        }
        s.push_str(close);
        s.into_bytes()
    };
    let shapes = [
        // One item that is a huge array of numbers: 2 bytes of text, 32 as a `Value`.
        ("nested array", repeat("[[", "0,", "0]]"), 0),
        // One object with a million members.
        ("wide object", repeat("[{", "\"a\":0,", "\"z\":0}]"), 0),
        // An object holding the list, with a huge member before it.
        ("big member first", repeat("{\"junk\":[", "0,", "0],\"data\":[\"1.2.3.4:80\"]}"), 1),
    ];
    for (name, doc, proxies) in shapes {
        let (peak, kept, n) = measure(&doc);
        assert_eq!(n, proxies, "{name}");
        let size = doc.len();
        assert!(peak - kept <= size, "{name}: parsing {size} bytes took {peak} bytes at peak ({kept} kept)");
    }

    // Many valid proxies: the result is the proxies; parsing adds at most the text again.
    let mut list = String::from("[");
    let mut i = 0u32;
    while list.len() < mb {
        let [a, b, c] = [(i >> 16) as u8, (i >> 8) as u8, i as u8];
        list.push_str(&format!("\"{}.{a}.{b}.{c}:8080\",{{\"ip\":\"9.{a}.{b}.{c}\",\"port\":3128}},", 1 + i % 200));
        i += 1;
    }
    list.push_str("\"1.1.1.1:1\"]");
    let (peak, kept, n) = measure(list.as_bytes());
    // A few land in private ranges (10/8, 127/8, 172.16/12, …) and are rejected.
    assert!(n as u32 > 2 * i * 9 / 10, "{n} of {}", 2 * i + 1);
    // The result's vector doubles as it grows: for a moment, its old half lives beside it.
    let growth = kept / 2;
    assert!(
        peak - kept <= list.len() + growth,
        "{} bytes took {peak} at peak, {kept} kept for {n} proxies",
        list.len()
    );
}
