//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their
//! corpus: each takes arbitrary bytes and must return without panicking, hanging or
//! allocating without bound.

use crate::check::http1::{self, BodyReader, Expect};
use crate::proxy::Protocol;
use crate::source::parse::{self, ParseOptions};

/// A proxy list in any format.
pub fn parse_list(data: &[u8]) {
    for allow_private in [false, true] {
        let opts = ParseOptions { default_protocol: Protocol::Socks5, allow_private, max_proxies: 100_000 };
        let mut rejects = 0u64;
        let (parsed, _) = parse::parse_document(data, opts, &mut |r| {
            assert!(r.text.len() <= 80);
            rejects += 1;
        });
        assert!(parsed.proxies.len() as u64 + rejects <= parsed.lines.max(1) * 64 + data.len() as u64);
    }
}

/// A JSON source (the bytes after a `[`).
pub fn parse_json(data: &[u8]) {
    let mut doc = Vec::with_capacity(data.len() + 1);
    doc.push(b'[');
    doc.extend_from_slice(data);
    parse_list(&doc);
}

/// A config file.
pub fn config(data: &[u8]) {
    let _ = crate::config::Config::from_json(&String::from_utf8_lossy(data), "fuzz");
}

/// What a proxy or judge answers over HTTP: head, body framing, nonce echo; then the
/// same answer through the async readers the probes use, arriving in pieces of the size
/// the first byte says, into a buffer whose starting capacity the second byte says.
pub fn http_response(data: &[u8]) {
    if let Ok(Some(head)) = http1::parse_head(data) {
        let body = data.get(head.len..).expect("a head ends inside what was parsed");
        let mut out = Vec::new();
        let _ = BodyReader::new(head.framing).take(body, &mut out);
        assert!(out.len() <= body.len(), "decoding never grows a body");
        let _ = Expect::Echoed { name: "pc_nonce", value: b"0123456789abcdef" }.found(body);
    }
    read_in_pieces(data, true);
}

/// The head reader alone, fed in pieces (see [`http_response`]): 1xx answers, framing
/// headers, caps.
pub fn http_head(data: &[u8]) {
    let _ = http1::parse_head(data);
    read_in_pieces(data, false);
}

/// The chunked decoder: in one piece and in pieces of the size the first byte says, the
/// outcome is the same, and the output is never longer than the input.
pub fn chunked(data: &[u8]) {
    let Some((&piece, rest)) = data.split_first() else { return };
    let whole = http1::dechunk(rest);
    if let Ok(Some(out)) = &whole {
        assert!(out.len() <= rest.len());
    }
    let mut d = http1::Dechunker::default();
    let mut out = Vec::new();
    let mut pieces = Ok(false);
    for p in rest.chunks(usize::from(piece).max(1)) {
        pieces = d.decode(p, &mut out);
        if !matches!(pieces, Ok(false)) {
            break;
        }
    }
    let pieces = pieces.map(|done| done.then_some(out));
    assert_eq!(whole, pieces, "decoding depends on how the bytes arrive");
}

fn read_in_pieces(data: &[u8], body: bool) {
    use tokio::io::AsyncWriteExt;
    let Some(([piece, capacity], rest)) = data.split_first_chunk::<2>() else { return };
    let (piece, capacity) = (usize::from(*piece).max(1), usize::from(*capacity).saturating_mul(64));
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    rt.block_on(async {
        let (mut tx, mut rx) = tokio::io::duplex(piece);
        let answer = rest.to_vec();
        // The writer stops when the reader is done and drops its end.
        let feed = async move {
            let _ = tx.write_all(&answer).await;
        };
        let read = async move {
            let mut buf = Vec::with_capacity(capacity);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            let silent = crate::check::Reason::ProxyTimeout;
            if let Ok(head) = http1::read_head(&mut rx, &mut buf, deadline, silent).await
                && body
            {
                let expect = Expect::Echoed { name: "pc_nonce", value: b"0123456789abcdef" };
                let _ = http1::expect_in_body(&mut rx, &mut buf, head, expect, deadline).await;
            }
            assert!(buf.capacity() <= http1::MAX_HEAD.max(capacity), "buffer past its cap: {}", buf.capacity());
        };
        tokio::join!(feed, read);
    });
}

/// SOCKS replies: SOCKS4 (our reader) and a SOCKS5 server's whole side of a handshake
/// (tokio-socks, over an in-memory pipe).
pub fn socks_reply(data: &[u8]) {
    if let Some(r) = data.first_chunk::<8>() {
        let _ = crate::check::probe::socks4_reply(r);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(4096);
        let reply = data.get(..2048).unwrap_or(data).to_vec();
        let feed = async move {
            let _ = server.write_all(&reply).await;
            let _ = server.shutdown().await;
            // Keep our end open so the client sees the bytes, then EOF.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            drop(server);
        };
        let handshake =
            tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(client, ("1.2.3.4", 80), "u", "p");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async { tokio::join!(feed, handshake) }).await;
    });
}

/// A judge's answer: calibrated as if it came from a direct request, then looked at as if
/// it came through a proxy — every kind of place, the anonymity assessment, the exit
/// address, the revealing headers — and sniffed as a foreign protocol's first bytes.
pub fn judge_echo(data: &[u8]) {
    use crate::check::echo::{self, Place};
    let (q, h) = (b"0a1b2c3d4e5f60718293a4b5".as_slice(), b"ffee00112233445566778899".as_slice());
    let cal = echo::calibrate(data, q, h);
    for key in [b"X-Pc-Nonce".as_slice(), b"pc_nonce", b"path", b"QUERY_STRING", b""] {
        for place in [
            Place::JsonMember { key: key.to_vec() },
            Place::JsonString { key: key.to_vec() },
            Place::Line { key: key.to_vec() },
        ] {
            let _ = place.found(data, q);
            let _ = place.found(data, b"a");
        }
    }
    if let Some(c) = &cal {
        let _ = echo::assess(c, data);
        assert!(c.place.found(data, if c.carrier == echo::Carrier::Header { h } else { q }));
    }
    let _ = echo::origin(data, None);
    assert!(echo::revealing(data).len() <= echo::REVEALING.len());
    let _ = crate::check::reason::sniff(data);
}

/// Forwarding headers (one value per line of `data`) from a trusted peer, both kinds.
pub fn forwarded(data: &[u8]) {
    use crate::api::forwarded::{ForwardedHeader, client_ip};
    let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "::1/128"].iter().map(|n| n.parse().expect("valid")).collect();
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let mut headers = axum::http::HeaderMap::new();
        for line in data.split(|b| *b == b'\n').take(64) {
            if let Ok(v) = axum::http::HeaderValue::from_bytes(line) {
                headers.append(header.name(), v);
            }
        }
        for peer in ["10.0.0.5", "::1", "203.0.113.9"] {
            let peer = peer.parse().expect("valid");
            let ip = client_ip(peer, &headers, &trusted, header);
            // An untrusted peer is its own client, whatever the headers say.
            if !trusted.iter().any(|n| n.contains(&peer)) {
                assert_eq!(ip, peer);
            }
        }
    }
}
