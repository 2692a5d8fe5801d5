//! Property tests of the list parser: it never panics on any input, and every address it
//! is given in any accepted form comes back as the same proxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proxy_checker::proxy::{Host, Protocol};
use proxy_checker::source::parse::{ParseOptions, parse_document, parse_line};

const OPTS: ParseOptions =
    ParseOptions { default_protocol: Protocol::Http, allow_private: false, max_proxies: usize::MAX };

fn protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(Protocol::ALL.to_vec())
}

fn public_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (1u8..=223, any::<[u8; 3]>()).prop_map(|(a, r)| IpAddr::V4(Ipv4Addr::new(a, r[0], r[1], r[2]))),
        any::<[u16; 7]>().prop_map(|s| IpAddr::V6(Ipv6Addr::new(0x2001, s[0], s[1], s[2], s[3], s[4], s[5], s[6]))),
    ]
    .prop_filter("public", |ip| proxy_checker::guard::check(*ip, false).is_ok())
}

fn cred() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,12}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut n = 0;
        let (parsed, _) = parse_document(&bytes, OPTS, &mut |_| n += 1);
        prop_assert!(parsed.proxies.len() as u64 <= parsed.lines.max(1) * 64);
    }

    #[test]
    fn never_panics_on_near_miss_text(s in "[0-9a-z:/@\\[\\]\\.\\s,;#<>{}\"-]{0,300}") {
        let _ = parse_document(s.as_bytes(), OPTS, &mut |_| {});
        for line in s.lines() {
            let _ = parse_line(line, OPTS);
        }
    }

    #[test]
    fn every_form_round_trips(
        proto in protocol(),
        ip in public_ip(),
        port in 1u16..=65535,
        creds in prop::option::of((cred(), cred())),
        form in 0usize..4,
        annotation in prop::option::of("[A-Z]{2} [0-9]{1,4}ms"),
    ) {
        let host = match ip { IpAddr::V6(v6) => format!("[{v6}]"), IpAddr::V4(v4) => v4.to_string() };
        let line = match (&creds, form) {
            (Some((u, p)), 0) => format!("{proto}://{u}:{p}@{host}:{port}"),
            (Some((u, p)), 1) if ip.is_ipv4() => format!("{proto}://{host}:{port}:{u}:{p}"),
            (Some((u, p)), _) => format!("{proto}://{u}:{p}@{host}:{port}"),
            (None, 2) => format!("  {proto}://{host}:{port}/  "),
            (None, _) => format!("{proto}://{host}:{port}"),
        };
        let line = match &annotation { Some(a) => format!("{line} {a}"), None => line };
        let p = parse_line(line.trim(), OPTS).map_err(|e| TestCaseError::fail(format!("{line}: {e:?}")))?;
        prop_assert_eq!(p.protocol, proto);
        prop_assert_eq!(&p.host, &Host::Ip(ip));
        prop_assert_eq!(p.port, port);
        let got = p.credentials.as_ref().map(|c| (c.username.clone(), c.password.clone()));
        prop_assert_eq!(got, creds);
    }

    #[test]
    fn a_document_of_lines_keeps_every_proxy(ips in prop::collection::vec((public_ip(), 1u16..=65535), 1..50)) {
        let body: String = ips.iter().map(|(ip, port)| match ip {
            IpAddr::V6(v6) => format!("[{v6}]:{port}\r\n"),
            IpAddr::V4(v4) => format!("{v4}:{port}\n"),
        }).collect();
        let mut rejects = 0;
        let (parsed, _) = parse_document(body.as_bytes(), OPTS, &mut |_| rejects += 1);
        prop_assert_eq!(rejects, 0);
        prop_assert_eq!(parsed.proxies.len(), ips.len());
    }
}
