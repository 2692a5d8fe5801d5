//! The farm's own promises, which every engine test and benchmark relies on: addresses
//! map to proxies, refused ports reset, blackholes drop SYNs, the judge echoes the nonce,
//! sources are served, and the ground truth adds up.

use std::time::Duration;

use proxy_farm::spec::{index_of, ip_of};
use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn addresses_round_trip() {
    for i in [0, 1, 255, 256, 65_535, 1_000_000, 16_000_000] {
        assert_eq!(index_of(ip_of(i)), Some(i));
    }
    assert_eq!(ip_of(0).to_string(), "127.1.0.0");
    assert_eq!(index_of("127.0.0.1".parse().unwrap()), None);
}

fn spec() -> FarmSpec {
    FarmSpec {
        groups: vec![
            Group::new(3, Protocol::Http, Behavior::Working),
            Group::new(2, Protocol::Socks5, Behavior::Refused),
            Group::new(2, Protocol::Http, Behavior::Blackhole),
        ],
    }
}

#[tokio::test]
async fn refused_resets_and_blackhole_drops_the_syn() {
    let farm = Farm::start(spec()).await.unwrap();
    let proxies: Vec<_> = farm.proxies().collect();
    assert_eq!(proxies.len(), 7);
    let refused = &proxies[3];
    let err = TcpStream::connect((refused.ip, refused.port)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let hole = &proxies[5];
    let r = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect((hole.ip, hole.port))).await;
    assert!(r.is_err(), "connect to a blackhole must hang until our timeout");
}

#[tokio::test]
async fn a_working_proxy_forwards_to_the_judge_which_echoes_the_request() {
    let farm = Farm::start(spec()).await.unwrap();
    let p = farm.proxies().next().unwrap();
    let judge = farm.judge_url();
    let mut s = TcpStream::connect((p.ip, p.port)).await.unwrap();
    let req = format!("GET {judge}?pc_nonce=XYZ123 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("XYZ123") && out.contains(&format!("\"origin\":\"{}\"", p.ip)), "{out}");
    assert_eq!(farm.judge_hits(), 1);
}

#[tokio::test]
async fn sources_and_truth() {
    let farm = Farm::start(spec()).await.unwrap();
    let url = farm.add_list("l.txt", "1.2.3.4:80\n");
    let authority = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let mut s = TcpStream::connect(authority).await.unwrap();
    s.write_all(b"GET /sources/l.txt HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.ends_with("1.2.3.4:80\n"), "{out}");
    assert_eq!(farm.source_hits("l.txt"), 1);
    let truth = farm.truth();
    assert_eq!(truth["alive"]["full_http"], 3);
    assert_eq!(truth["alive"]["connect_only"], 3);
    assert_eq!(truth["groups"][1]["first_ip"], "127.1.0.3");
    assert_eq!(farm.list_urls().lines().count(), 7);
}
