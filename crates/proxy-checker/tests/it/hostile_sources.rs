//! Hostile sources: each is cut off by a size, time, count or redirect cap (or the SSRF
//! guard) with its own per-source error, and the other sources' proxies are still checked
//! and served.

use std::sync::Arc;
use std::time::Duration;

use proxy_checker::check::engine;
use proxy_checker::source::{self, FetchSettings, Location, SourceError, SourceSpec};
use proxy_farm::{Behavior, Farm, FarmSpec, Group, HostileSource, Protocol, SourceBody};
use serde_json::{Value, json};

use crate::common::*;

const CAP: u64 = 32 << 20;
const MAX_PROXIES: usize = 10_000;

/// A hostile source: its name, its URL, and the error it must end in.
type Hostile = (&'static str, String, fn(&SourceError) -> bool);

/// The hostile sources of the issue.
fn hostile(farm: &Farm) -> Vec<Hostile> {
    let list_line = Arc::new(b"203.0.113.9:8080\n".repeat(4096));
    // 1M fake addresses, one HTML list item per line: ~24 MB, under the byte cap, so the
    // proxy-count cap is what stops it.
    let mut html = b"<html><body><ul>\n".to_vec();
    for i in 0..1_000_000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        html.extend_from_slice(format!("<li>1.{b}.{c}.{d}:80</li>\n").as_bytes());
    }
    let mut binary = vec![0u8; 64 << 10];
    for (i, b) in binary.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    let srcs: Vec<Hostile> = vec![
        (
            "ten_gigabytes",
            farm.add_hostile_source("10g.txt", HostileSource::Huge { len: 10 << 30, chunk: list_line }),
            |e| matches!(e, SourceError::TooLarge(CAP)),
        ),
        (
            "one_byte_a_second",
            farm.add_hostile_source(
                "trickle.txt",
                HostileSource::Trickle {
                    body: Arc::new(b"198.51.100.1:80\n".repeat(100)),
                    every: Duration::from_secs(1),
                },
            ),
            |e| matches!(e, SourceError::Timeout(_)),
        ),
        (
            "binary",
            farm.add_source(
                "blob.bin",
                SourceBody { body: Arc::new(binary), status: 200, gzip: false, delay: Duration::ZERO },
            ),
            |e| matches!(e, SourceError::Binary(_)),
        ),
        (
            "gzip_bomb",
            farm.add_source(
                "bomb.gz",
                SourceBody { body: Arc::new(vec![b'0'; 64 << 20]), status: 200, gzip: true, delay: Duration::ZERO },
            ),
            |e| matches!(e, SourceError::TooLarge(CAP)),
        ),
        (
            "hundred_megabyte_line",
            farm.add_hostile_source(
                "line.txt",
                HostileSource::Huge { len: 100 << 20, chunk: Arc::new(b"1.2.3.4:80 ".repeat(6000)) },
            ),
            |e| matches!(e, SourceError::TooLarge(CAP)),
        ),
        ("redirects_forever", farm.add_hostile_source("loop.txt", HostileSource::RedirectLoop), |e| {
            matches!(e, SourceError::Redirects(_))
        }),
        (
            "html_with_a_million_addresses",
            farm.add_source(
                "million.html",
                SourceBody { body: Arc::new(html), status: 200, gzip: false, delay: Duration::ZERO },
            ),
            |e| matches!(e, SourceError::TooManyProxies(MAX_PROXIES)),
        ),
        (
            "dies_mid_body",
            farm.add_hostile_source(
                "dies.txt",
                HostileSource::DieMidBody { body: Arc::new(b"198.51.100.7:80\n".repeat(10_000)), sent: 5000 },
            ),
            |e| matches!(e, SourceError::Io(_)),
        ),
    ];
    srcs
}

fn settings(allow_private: bool) -> FetchSettings {
    FetchSettings {
        timeout: Duration::from_secs(3),
        max_bytes: CAP,
        retries: 0,
        backoff: Duration::from_millis(10),
        max_proxies: MAX_PROXIES,
        allow_private,
    }
}

fn spec(url: &str) -> SourceSpec {
    SourceSpec::new(Location::parse(url).unwrap(), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_source_is_cut_off_with_its_own_error() {
    let farm = Farm::start(FarmSpec::default()).await.unwrap();
    let good = farm.add_list("good.txt", "1.2.3.4:80\n5.6.7.8:3128\n");
    let hostile = hostile(&farm);
    let mut specs: Vec<_> = hostile.iter().map(|(_, url, _)| spec(url)).collect();
    specs.push(spec(&good));
    let client = source::fetch::client(engine::tls_config(None).unwrap(), true).unwrap();

    // Concurrent fetches, each bounded by the 3 s timeout (the trickle is the slowest);
    // the guard only catches a fetch that ignores it (the trickle goes on for hours).
    let g = tokio::time::timeout(HANG_GUARD, source::gather(&client, &specs, &settings(true), false))
        .await
        .expect("a hostile source held the fetch past every deadline");
    for ((name, _, ok), st) in hostile.iter().zip(&g.stats) {
        let e = st.error.as_ref().unwrap_or_else(|| panic!("{name}: no error"));
        assert!(ok(e), "{name}: unexpected error {e:?}");
        assert!(!e.to_string().is_empty());
        assert_eq!(st.valid, 0, "{name} contributed proxies");
    }
    let last = g.stats.last().unwrap();
    assert!(last.error.is_none());
    assert_eq!(g.found.len(), 2, "the good source's proxies survive");
    // The messages name the cap or the cause.
    let msg = |i: usize| g.stats[i].error.as_ref().unwrap().to_string();
    assert!(msg(0).contains("33554432-byte cap"), "{}", msg(0));
    assert!(msg(2).contains("binary content at byte"), "{}", msg(2));
    assert!(msg(5).contains("redirected more than 5 times"), "{}", msg(5));
    assert!(msg(6).contains("more than 10000 proxies") && msg(6).contains("source_max_proxies"), "{}", msg(6));
    // A redirect loop is not retried, and stops after the cap.
    assert!(farm.source_hits("loop.txt") <= 7, "{}", farm.source_hits("loop.txt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_private_sources_by_literal_name_and_redirect() {
    let farm = Farm::start(FarmSpec::default()).await.unwrap();
    let direct = farm.add_list("private.txt", "1.2.3.4:80\n");
    let port = url::Url::parse(&direct).unwrap().port().unwrap();
    let by_name = format!("http://localhost:{port}/sources/private.txt");
    let v6 = format!("http://[::1]:{port}/sources/private.txt");
    let redirect = farm.add_hostile_source("hop.txt", HostileSource::RedirectTo(direct.clone()));
    let specs: Vec<_> = [&direct, &by_name, &v6, &redirect].iter().map(|u| spec(u)).collect();
    let client = source::fetch::client(engine::tls_config(None).unwrap(), false).unwrap();
    let hits_before = farm.source_hits("private.txt");

    let g = source::gather(&client, &specs, &settings(false), false).await;
    for st in &g.stats {
        let e = st.error.as_ref().unwrap_or_else(|| panic!("{}: fetched", st.name));
        assert!(matches!(e, SourceError::Blocked(_)), "{}: {e:?}", st.name);
        assert!(e.to_string().contains("allow_private_sources"), "{e}");
    }
    assert!(g.stats[0].error.as_ref().unwrap().to_string().contains("127.0.0.1"));
    assert!(g.stats[1].error.as_ref().unwrap().to_string().contains("`localhost` resolves to"));
    // The guard acts before a connection: the private list was never requested. (The
    // redirecting source itself is on loopback too, so its hop is never reached either.)
    assert_eq!(farm.source_hits("private.txt"), hits_before);
    assert_eq!(farm.source_hits("hop.txt"), 0);

    // Every hop is checked: here the guard is relaxed (all test addresses are loopback), so
    // the hop is followed; a hop to another scheme is refused whatever the setting.
    let relaxed = source::fetch::client(engine::tls_config(None).unwrap(), true).unwrap();
    let g = source::gather(&relaxed, &[spec(&redirect)], &settings(true), false).await;
    assert!(g.stats[0].error.is_none(), "{:?}", g.stats[0].error);
    assert_eq!(g.found.len(), 1);
    let to_file = farm.add_hostile_source("to-file.txt", HostileSource::RedirectTo("file:///etc/passwd".into()));
    let g = source::gather(&relaxed, &[spec(&to_file)], &settings(true), false).await;
    // reqwest does not follow it: the 302 itself is the answer, an error status.
    assert_eq!(g.stats[0].error, Some(SourceError::Status(302)));
}

fn service_config(farm: &Farm, sources: Vec<String>, dir: &std::path::Path) -> Value {
    let mut cfg = config(farm, sources, dir);
    cfg["aggregation"] = json!({
        "interval_secs": 3600, "source_timeout_ms": 3000, "source_retries": 0,
        "source_max_bytes": CAP, "source_max_proxies": MAX_PROXIES, "allow_private_sources": true
    });
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_the_good_sources_beside_hostile_ones() {
    let farm = Farm::start(FarmSpec {
        groups: vec![
            Group::new(5, Protocol::Http, Behavior::Working),
            Group::new(2, Protocol::Socks5, Behavior::Working),
            Group::new(2, Protocol::Http, Behavior::Refused),
        ],
    })
    .await
    .unwrap();
    let good = farm.add_list("good.txt", farm.list_urls());
    let hostile = hostile(&farm);
    let mut sources: Vec<String> = hostile.iter().map(|(_, url, _)| url.clone()).collect();
    sources.push(good);
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(&service_config(&farm, sources, dir.path()), dir.path()).await;
    h.wait_round(1).await;

    let (status, body) = h.authed("/get-proxy?all=1&format=text").await;
    assert_eq!(status, 200, "{body}");
    let got: std::collections::BTreeSet<String> = body.lines().map(str::to_string).collect();
    assert_eq!(got, alive_set(&farm), "the good source's working proxies are served");

    let stat = h.stat().await;
    let srcs = stat["last_round"]["sources"].as_array().unwrap();
    assert_eq!(srcs.len(), hostile.len() + 1);
    for ((name, _, _), s) in hostile.iter().zip(srcs) {
        assert_eq!(s["ok"], false, "{name}: {s}");
        assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: {s}");
    }
    assert_eq!(srcs.last().unwrap()["ok"], true);
    h.shutdown().await;
}
