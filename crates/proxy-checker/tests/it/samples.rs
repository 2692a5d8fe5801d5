//! Lists in the shapes public lists really take (`tests/samples/`, copied from the shared
//! hand-made samples): each parses to the proxies a person reading it would find.

use proxy_checker::proxy::Protocol;
use proxy_checker::source::parse::{Format, ParseOptions, parse_document, parse_document_with};

fn parse(name: &str) -> (Vec<String>, Format, usize) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples").join(name);
    // The samples use the documentation ranges (192.0.2.0/24, …) for public addresses, and
    // the guard refuses those as targets: they are moved to public ranges for parsing and
    // back for the comparison.
    let body = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let body = DOC_TO_PUBLIC.iter().fold(body, |b, (doc, public)| b.replace(doc, public));
    let opts = ParseOptions { default_protocol: Protocol::Http, allow_private: false, max_proxies: 1000 };
    let mut rejects = 0;
    let (parsed, format) = parse_document(body.as_bytes(), opts, &mut |_| rejects += 1);
    // A round parses through `parse_document_with` (streamed for lists of lines): it must
    // hand over the same proxies, lines, format and rejects.
    let (mut streamed, mut streamed_rejects) = (Vec::new(), 0);
    let (lines, truncated, streamed_format) =
        parse_document_with(body.as_bytes(), opts, &mut |_| streamed_rejects += 1, &mut |p, line| {
            streamed.push((p.to_string(), line));
            true
        });
    let whole: Vec<_> = parsed.proxies.iter().map(|(p, line)| (p.to_string(), *line)).collect();
    assert_eq!(
        (streamed, lines, truncated, streamed_format, streamed_rejects),
        (whole, parsed.lines, parsed.truncated, format, rejects),
        "{name}"
    );
    let back = |p: String| DOC_TO_PUBLIC.iter().fold(p, |p, (doc, public)| p.replace(public, doc));
    (parsed.proxies.iter().map(|(p, _)| back(p.to_string())).collect(), format, rejects)
}

const DOC_TO_PUBLIC: [(&str, &str); 4] =
    [("192.0.2.", "11.0.2."), ("198.51.100.", "12.51.100."), ("203.0.113.", "13.0.113."), ("2001:db8:", "2a0f:db8:")];

#[test]
fn json_api_pages_with_geo_and_protocol_arrays() {
    let (got, format, _) = parse("api-geo.json");
    assert_eq!(format, Format::Json);
    assert_eq!(got, ["socks5://192.0.2.80:1080", "http://192.0.2.81:8080", "socks4://198.51.100.90:4153"]);
}

#[test]
fn flat_json_with_proxy_urls_and_nested_objects() {
    let (got, format, _) = parse("api-flat.json");
    assert_eq!(format, Format::Json);
    assert_eq!(got, ["http://192.0.2.100:3128", "socks5://198.51.100.101:9050", "socks4://203.0.113.102:1080"]);
}

#[test]
fn annotated_and_whitespace_text_lists() {
    let (got, format, _) = parse("annotated.txt");
    assert_eq!(format, Format::Lines);
    let want = ["192.0.2.50:8080", "192.0.2.51:3128", "198.51.100.60:80", "203.0.113.70:8888", "198.51.100.61:53281"];
    assert_eq!(got, want.map(|a| format!("http://{a}")));
    let (got, _, _) = parse("whitespace.txt");
    let want =
        ["192.0.2.120:8080", "192.0.2.121:3128", "198.51.100.122:1080", "203.0.113.123:80", "[2001:db8::7]:8080"];
    assert_eq!(got, want.map(|a| format!("http://{a}")));
}

/// HTML tables yield their addresses, and the protocol of a table that gives it in a
/// column of its own (`SOCKS4, SOCKS5` is taken as SOCKS5; the checker's detection corrects
/// a wrong guess).
#[test]
fn html_tables_yield_their_addresses_and_protocol_column() {
    let addrs = |name: &str| -> std::collections::BTreeSet<String> {
        let (got, format, _) = parse(name);
        assert_eq!(format, Format::Html, "{name}");
        got.iter().map(|u| u.split_once("://").unwrap().1.to_string()).collect()
    };
    let want = ["192.0.2.10:8080", "192.0.2.11:3128", "198.51.100.7:80", "203.0.113.200:999"];
    assert_eq!(addrs("table-separate-cells.html"), want.map(String::from).into());
    let want = ["192.0.2.30:1080", "192.0.2.31:8118", "198.51.100.44:4145", "203.0.113.9:3128"];
    assert_eq!(addrs("table-protocol-column.html"), want.map(String::from).into());
    let (got, _, _) = parse("table-protocol-column.html");
    assert_eq!(
        got,
        [
            "socks5://192.0.2.30:1080",
            "http://192.0.2.31:8118",
            "socks4://198.51.100.44:4145",
            "http://203.0.113.9:3128"
        ]
    );
    // A table without a protocol column: the source's default (http here).
    let (got, _, _) = parse("table-separate-cells.html");
    assert!(got.iter().all(|u| u.starts_with("http://")), "{got:?}");
}
