//! The hostile behaviours send what they claim: their bytes as built (checked with an
//! independent strict reader where it matters), and on the wire through every path a
//! checker takes (forward, CONNECT, SOCKS), plus the shape of their ground truth.

use std::time::Duration;

use proxy_farm::hostile::{self, Reply, STALE_NONCE};
use proxy_farm::http::Request;
use proxy_farm::{Behavior, Farm, FarmProxy, FarmSpec, Group, Protocol, expect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NONCE: &str = "0123456789abcdef76543210";
const PROTOCOLS: [Protocol; 4] = [Protocol::Http, Protocol::Https, Protocol::Socks4, Protocol::Socks5];
/// Bound on any single wait in these tests: generous, never a sleep.
const PATIENCE: Duration = Duration::from_secs(10);

fn request() -> Request {
    Request {
        method: "GET".into(),
        target: format!("http://127.0.0.1:9/get?pc_nonce={NONCE}"),
        headers: vec![("Host".into(), "127.0.0.1:9".into()), ("Connection".into(), "close".into())],
    }
}

/// The bytes a behaviour sends first (`Once` bytes, or an endless reply's head).
fn bytes_of(b: Behavior) -> Vec<u8> {
    match hostile::reply(b, &request(), "127.1.0.7").unwrap_or_else(|| panic!("{b:?} corrupts no answer")) {
        Reply::Once(bytes) | Reply::ThenSilence(bytes) => bytes,
        Reply::Endless { head, filler, .. } => [head, filler].concat(),
    }
}

/// The judge's nonce as a JSON member, the only form a checker may accept.
fn echoed(body: &[u8]) -> bool {
    let compact = format!("\"pc_nonce\":\"{NONCE}\"");
    body.windows(compact.len()).any(|w| w == compact.as_bytes())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits an answer at its blank line: (head, body).
fn split(answer: &[u8]) -> (&[u8], &[u8]) {
    let at = find(answer, b"\r\n\r\n").expect("a blank line") + 4;
    answer.split_at(at)
}

/// A strict chunked decoder: size lines of at most 1 KiB, 1..=16 hex digits and an
/// optional extension; CRLF after the data.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(body, b"\r\n").filter(|eol| *eol <= 1024)?;
        let (line, rest) = body.split_at(eol);
        let size = line.split(|b| *b == b';').next()?;
        if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()?;
        let rest = rest.get(2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// Header fields as (name, value).
type Fields = Vec<(String, Vec<u8>)>;

/// Parses a complete response head with room for `room` headers: status and fields.
fn parse_head(bytes: &[u8], room: usize) -> Result<(u16, Fields), httparse::Error> {
    let mut headers = vec![httparse::EMPTY_HEADER; room];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(bytes)? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => panic!("incomplete head"),
    }
    let fields = resp.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect();
    Ok((resp.code.unwrap_or_default(), fields))
}

fn values<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice()).collect()
}

#[test]
fn every_hostile_behaviour_has_a_ground_truth() {
    let reasons = [
        "proxy_closed",
        "proxy_protocol_error",
        "proxy_auth_failed",
        "proxy_rejected",
        "tls_error",
        "bad_status",
        "content_mismatch",
        "timeout",
    ];
    let mut dead = 0;
    for b in Behavior::HOSTILE {
        assert_eq!(Behavior::HOSTILE.iter().filter(|x| **x == b).count(), 1, "{b:?} listed twice");
        assert!(PROTOCOLS.iter().any(|p| b.applies_to(*p)), "{b:?} applies to no protocol");
        for p in PROTOCOLS {
            for https in [false, true] {
                assert!(expect(p, b, false, https).alive, "{p:?} {b:?}: connect-only sees a listening port");
                let want = expect(p, b, true, https);
                match want.reason {
                    Some(r) => assert!(reasons.contains(&r) && !want.alive, "{p:?} {b:?}: {want:?}"),
                    None => assert!(want.alive && want.tunnel && want.forward == (p.is_http() && !https)),
                }
                if !b.applies_to(p) {
                    assert!(want.alive, "{p:?} {b:?} does not apply, so the proxy works");
                }
            }
        }
        dead += usize::from(
            !expect(Protocol::Http, b, true, false).alive || !expect(Protocol::Socks5, b, true, false).alive,
        );
    }
    assert!(dead >= 30, "{dead} hostile behaviours kill a proxy");
}

#[test]
fn chunk_sizes_are_what_they_claim() {
    let size_line = |b| {
        let bytes = bytes_of(b);
        let (_, body) = split(&bytes);
        let eol = find(body, b"\r\n").expect("a size line");
        String::from_utf8(body[..eol].to_vec()).unwrap()
    };
    let len = proxy_farm::http::judge_body(&request(), "127.1.0.7").len() as u128;
    assert_eq!(size_line(Behavior::ChunkSizeMax), "ffffffffffffffff");
    let too_long = size_line(Behavior::ChunkSizeTooLong);
    assert_eq!(too_long.len(), 17);
    assert_eq!(u128::from_str_radix(&too_long, 16).unwrap(), (1u128 << 64) + len, "wraps to the real size");
    assert_eq!(size_line(Behavior::ChunkSizePrefixed), format!("0x{len:x}"));
    assert_eq!(size_line(Behavior::ChunkSizeSigned), format!("+{len:x}"));
    assert!(size_line(Behavior::ChunkExtensionFlood).len() > 100_000);
    assert_eq!(size_line(Behavior::HugeChunkThenClose), "80000000");

    // Data not followed by CRLF: the last chunk comes straight after it.
    let bytes = bytes_of(Behavior::ChunkMissingCrlf);
    assert!(bytes.ends_with(b"}0\r\n\r\n"), "{}", String::from_utf8_lossy(&bytes));
    for b in [
        Behavior::ChunkSizeTooLong,
        Behavior::ChunkSizePrefixed,
        Behavior::ChunkSizeSigned,
        Behavior::ChunkExtensionFlood,
        Behavior::ChunkMissingCrlf,
    ] {
        let bytes = bytes_of(b);
        assert_eq!(dechunk(split(&bytes).1), None, "{b:?} must not decode strictly");
        assert!(echoed(&bytes), "{b:?} carries the real answer for a lenient reader to find");
    }

    // Valid: extensions and trailers decode to the judge's echo.
    let bytes = bytes_of(Behavior::ChunkedTrailers);
    let (head, body) = split(&bytes);
    assert!(echoed(&dechunk(body).expect("well-formed chunks")));
    assert!(!echoed(body), "the chunking splits the nonce");
    assert!(find(body, b";farm=1\r\n").is_some() && bytes.ends_with(b"X-Farm: trailer\r\n\r\n"));
    assert_eq!(parse_head(head, 8).unwrap().0, 200);
}

#[test]
fn content_lengths_are_what_they_claim() {
    let cl = |b| {
        let bytes = bytes_of(b);
        let (head, _) = split(&bytes);
        let (_, fields) = parse_head(head, 16).unwrap();
        values(&fields, "content-length").iter().map(|v| String::from_utf8(v.to_vec()).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(cl(Behavior::ContentLengthOverflow), ["99999999999999999999999"]);
    assert_eq!(cl(Behavior::ContentLengthNegative), ["-1"]);
    assert!(cl(Behavior::ContentLengthSigned)[0].starts_with('+'));
    let conflict = cl(Behavior::ContentLengthConflict);
    assert!(conflict.len() == 2 && conflict[0] != conflict[1], "{conflict:?}");
    let twice = cl(Behavior::ContentLengthTwice);
    assert!(twice.len() == 2 && twice[0] == twice[1], "{twice:?}");

    // Short: the nonce only after the declared end.
    let bytes = bytes_of(Behavior::ContentLengthShort);
    let (_, body) = split(&bytes);
    assert_eq!(cl(Behavior::ContentLengthShort), ["2"]);
    assert!(!echoed(&body[..2]) && echoed(body));

    // Long: declares more than it sends, and no nonce in what it sends.
    let bytes = bytes_of(Behavior::ContentLengthLong);
    let (_, body) = split(&bytes);
    assert!(cl(Behavior::ContentLengthLong)[0].parse::<usize>().unwrap() > body.len() && !echoed(body));

    // Both framings: the declared length is the raw chunked body, which splits the nonce.
    let bytes = bytes_of(Behavior::ContentLengthAndChunked);
    let (head, body) = split(&bytes);
    let (_, fields) = parse_head(head, 16).unwrap();
    assert_eq!(values(&fields, "transfer-encoding"), [b"chunked".as_slice()]);
    assert_eq!(cl(Behavior::ContentLengthAndChunked), [body.len().to_string()]);
    assert!(!echoed(body) && echoed(&dechunk(body).unwrap()));
}

#[test]
fn transfer_encodings_hide_the_nonce_from_a_raw_reader() {
    use std::io::Read;
    let bytes = bytes_of(Behavior::TransferEncodingGzip);
    let (head, body) = split(&bytes);
    let (_, fields) = parse_head(head, 16).unwrap();
    assert_eq!(values(&fields, "transfer-encoding"), [b"gzip".as_slice()]);
    assert!(values(&fields, "content-length").is_empty(), "delimited by close");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut plain).unwrap();
    assert!(echoed(&plain) && find(body, NONCE.as_bytes()).is_none());

    let bytes = bytes_of(Behavior::TransferEncodingUnknown);
    let (head, body) = split(&bytes);
    let (_, fields) = parse_head(head, 16).unwrap();
    assert_eq!(values(&fields, "transfer-encoding"), [b"xchunkedx".as_slice()]);
    assert!(!echoed(body) && echoed(&dechunk(body).unwrap()), "only a reader that takes it for chunked finds it");
}

#[test]
fn heads_are_what_they_claim() {
    let bytes = bytes_of(Behavior::ThousandHeaders);
    let (head, _) = split(&bytes);
    assert!(head.len() < 16 * 1024, "under the head-size limit: {}", head.len());
    assert_eq!(parse_head(head, 1100).unwrap().1.len(), 1002);
    assert_eq!(parse_head(head, 64).unwrap_err(), httparse::Error::TooManyHeaders);

    let bytes = bytes_of(Behavior::SixtyHeaders);
    let (head, body) = split(&bytes);
    assert_eq!(parse_head(head, 64).unwrap().1.len(), 60);
    assert!(echoed(body));

    let bytes = bytes_of(Behavior::HugeHeaderValue);
    assert!(split(&bytes).0.len() > 1 << 20);

    let bytes = bytes_of(Behavior::BareLf);
    let at = find(&bytes, b"\n\n").unwrap() + 2;
    assert!(!bytes[..at].contains(&b'\r'));
    assert_eq!(parse_head(&bytes[..at], 8).unwrap().0, 200);
    assert!(echoed(&bytes[at..]));

    for (b, err) in [
        (Behavior::NulInHead, httparse::Error::HeaderValue),
        (Behavior::StatusFourDigits, httparse::Error::Status),
        (Behavior::HttpVersion99, httparse::Error::Version),
        (Behavior::Http09, httparse::Error::Version),
        (Behavior::Http2Preface, httparse::Error::Version),
        (Behavior::EchoRequest, httparse::Error::Version),
    ] {
        assert_eq!(parse_head(&bytes_of(b), 16).unwrap_err(), err, "{b:?}");
    }
    assert!(echoed(&bytes_of(Behavior::Http09)));
    assert!(bytes_of(Behavior::Http2Preface).starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
}

#[test]
fn interim_answers_come_before_the_real_one() {
    for (b, codes) in [
        (Behavior::OneContinue, vec![100, 200]),
        (Behavior::EarlyHints, vec![102, 103, 200]),
        (Behavior::SwitchingProtocols, vec![101, 200]),
    ] {
        let bytes = bytes_of(b);
        let mut rest = bytes.as_slice();
        let mut seen = Vec::new();
        while let Some(at) = find(rest, b"\r\n\r\n") {
            let (head, tail) = rest.split_at(at + 4);
            seen.push(parse_head(head, 16).unwrap().0);
            rest = tail;
            if seen.last() == Some(&200) {
                break;
            }
        }
        assert_eq!(seen, codes, "{b:?}");
        assert!(echoed(rest), "{b:?}: the real answer follows");
    }
    let flood = bytes_of(Behavior::ContinueFlood);
    assert_eq!(flood.len() % b"HTTP/1.1 100 Continue\r\n\r\n".len(), 0);
    assert!(find(&flood, b" 200 ").is_none());
}

#[test]
fn content_pages_never_echo_the_nonce_as_the_member() {
    let stale = bytes_of(Behavior::StaleNonce);
    let (_, body) = split(&stale);
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["args"]["pc_nonce"], STALE_NONCE);
    assert!(find(body, NONCE.as_bytes()).is_none());

    let form = bytes_of(Behavior::NonceInAttribute);
    assert!(find(&form, format!("name=\"pc_nonce\" value=\"{NONCE}\"").as_bytes()).is_some());
    assert!(!echoed(&form));

    let shadow = bytes_of(Behavior::NonceUnderOtherKey);
    let (_, body) = split(&shadow);
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["args"]["x_pc_nonce"], NONCE);
    assert_eq!(json["pc_nonce_seen"], NONCE);
    assert!(!echoed(body));

    let redirect = bytes_of(Behavior::RedirectLogin);
    let (code, fields) = parse_head(split(&redirect).0, 8).unwrap();
    assert_eq!(code, 302);
    assert!(find(values(&fields, "location")[0], b"login").is_some());
}

// On the wire.

fn spec(behaviors: &[(Protocol, Behavior)]) -> FarmSpec {
    FarmSpec { groups: behaviors.iter().map(|(p, b)| Group::new(1, *p, *b)).collect() }
}

async fn connect(p: &FarmProxy) -> TcpStream {
    TcpStream::connect((p.ip, p.port)).await.unwrap()
}

/// Reads until EOF, an error, or `limit` bytes; the error kind if the read failed.
async fn read_upto(s: &mut TcpStream, limit: usize) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < limit {
        match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await.expect("the proxy answers") {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e.kind())),
        }
    }
    (out, None)
}

/// Nothing arrives for a while (bounded; the proxy is meant to stay silent).
async fn stays_silent(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await.is_err()
}

fn forward_request(farm: &Farm) -> String {
    format!("GET {}?pc_nonce={NONCE} HTTP/1.1\r\nHost: judge\r\nConnection: close\r\n\r\n", farm.judge_url())
}

fn judge_authority(farm: &Farm) -> String {
    farm.judge_url().trim_start_matches("http://").trim_end_matches("/get").to_string()
}

/// CONNECT to the plain judge; returns the stream and what came back before we sent more.
async fn connect_tunnel(farm: &Farm, p: &FarmProxy) -> (TcpStream, Vec<u8>) {
    let mut s = connect(p).await;
    let authority = judge_authority(farm);
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while find(&got, b"\r\n\r\n").is_none() {
        let (more, _) = read_upto(&mut s, 1).await;
        assert!(!more.is_empty(), "CONNECT answered: {}", String::from_utf8_lossy(&got));
        got.extend(more);
    }
    (s, got)
}

/// SOCKS5 greeting ("no auth") and CONNECT to the plain judge, the reply left unread.
async fn socks5_tunnel(farm: &Farm, p: &FarmProxy) -> TcpStream {
    let mut s = connect(p).await;
    let judge: std::net::SocketAddr = judge_authority(farm).parse().unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0]);
    let std::net::SocketAddr::V4(v4) = judge else { panic!("IPv4 judge") };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    s
}

fn origin_request() -> String {
    format!("GET /get?pc_nonce={NONCE} HTTP/1.1\r\nHost: judge\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn the_corruption_is_the_same_forwarded_and_through_each_tunnel() {
    let b = Behavior::ContentLengthShort;
    let farm = Farm::start(spec(&[(Protocol::Http, b), (Protocol::Socks5, b)])).await.unwrap();
    let proxies: Vec<_> = farm.proxies().collect();
    let check = |answer: &[u8]| {
        let (head, body) = split(answer);
        assert!(find(head, b"Content-Length: 2\r\n").is_some(), "{}", String::from_utf8_lossy(head));
        assert!(!echoed(&body[..2]) && echoed(body));
    };

    let mut s = connect(&proxies[0]).await;
    s.write_all(forward_request(&farm).as_bytes()).await.unwrap();
    check(&read_upto(&mut s, usize::MAX).await.0);

    let (mut s, head) = connect_tunnel(&farm, &proxies[0]).await;
    assert_eq!(head, b"HTTP/1.1 200 Connection established\r\n\r\n");
    s.write_all(origin_request().as_bytes()).await.unwrap();
    check(&read_upto(&mut s, usize::MAX).await.0);

    let mut s = socks5_tunnel(&farm, &proxies[1]).await;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..2], [5, 0]);
    s.write_all(origin_request().as_bytes()).await.unwrap();
    check(&read_upto(&mut s, usize::MAX).await.0);
}

#[tokio::test]
async fn endless_answers_never_bring_the_nonce_or_an_end() {
    let farm = Farm::start(spec(&[
        (Protocol::Http, Behavior::ChunkSizeMax),
        (Protocol::Http, Behavior::EndlessChunks),
        (Protocol::Http, Behavior::ContinueFlood),
    ]))
    .await
    .unwrap();
    for p in farm.proxies() {
        let mut s = connect(&p).await;
        s.write_all(forward_request(&farm).as_bytes()).await.unwrap();
        let (got, err) = read_upto(&mut s, 256 * 1024).await;
        assert!(got.len() >= 256 * 1024 && err.is_none(), "{:?}: {} bytes, {err:?}", p.behavior, got.len());
        assert!(find(&got, NONCE.as_bytes()).is_none(), "{:?}", p.behavior);
        assert!(find(&got, b"\r\n0\r\n").is_none(), "{:?}: no last chunk", p.behavior);
        let first = match p.behavior {
            Behavior::ContinueFlood => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100".as_slice(),
            _ => b"HTTP/1.1 200 OK\r\n",
        };
        assert!(got.starts_with(first), "{:?}", p.behavior);
    }
}

#[tokio::test]
async fn slow_answers_start_and_never_finish() {
    let farm = Farm::start(spec(&[
        (Protocol::Http, Behavior::SlowlorisHead),
        (Protocol::Http, Behavior::StallAfterHead),
        (Protocol::Http, Behavior::EndlessSlowBody),
    ]))
    .await
    .unwrap();
    for p in farm.proxies() {
        let mut s = connect(&p).await;
        s.write_all(forward_request(&farm).as_bytes()).await.unwrap();
        let (got, _) = read_upto(&mut s, 40).await;
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", p.behavior);
        match p.behavior {
            Behavior::SlowlorisHead => assert!(find(&got, b"\r\n\r\n").is_none() && got.ends_with(b"aaa")),
            Behavior::StallAfterHead => assert!(stays_silent(&mut s).await, "silent after the head"),
            _ => assert!(find(&got, NONCE.as_bytes()).is_none()),
        }
    }
}

#[tokio::test]
async fn connections_reset_half_close_and_echo() {
    let farm = Farm::start(spec(&[
        (Protocol::Http, Behavior::ResetAfterRequest),
        (Protocol::Socks5, Behavior::ResetAfterRequest),
        (Protocol::Http, Behavior::HalfCloseMidHead),
        (Protocol::Http, Behavior::EchoRequest),
        (Protocol::Http, Behavior::CloseAfterHandshake),
    ]))
    .await
    .unwrap();
    let p: Vec<_> = farm.proxies().collect();

    let mut s = connect(&p[0]).await;
    s.write_all(forward_request(&farm).as_bytes()).await.unwrap();
    assert_eq!(read_upto(&mut s, usize::MAX).await, (Vec::new(), Some(std::io::ErrorKind::ConnectionReset)));

    let mut s = socks5_tunnel(&farm, &p[1]).await;
    assert_eq!(read_upto(&mut s, usize::MAX).await, (Vec::new(), Some(std::io::ErrorKind::ConnectionReset)));

    // Half-close: the partial head, then EOF, and the proxy still reads what we send.
    let mut s = connect(&p[2]).await;
    s.write_all(forward_request(&farm).as_bytes()).await.unwrap();
    assert_eq!(read_upto(&mut s, usize::MAX).await, (b"HTTP/1.1 200 OK\r\nContent-Ty".to_vec(), None));
    s.write_all(b"still there?").await.unwrap();

    let mut s = connect(&p[3]).await;
    let req = forward_request(&farm);
    s.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(String::from_utf8(read_upto(&mut s, usize::MAX).await.0).unwrap(), req);

    let (mut s, head) = connect_tunnel(&farm, &p[4]).await;
    assert_eq!(head, b"HTTP/1.1 200 Connection established\r\n\r\n");
    assert_eq!(read_upto(&mut s, usize::MAX).await, (Vec::new(), None), "closed after the 200");
    let mut s = connect(&p[4]).await;
    s.write_all(forward_request(&farm).as_bytes()).await.unwrap();
    assert_eq!(read_upto(&mut s, usize::MAX).await, (Vec::new(), None), "a forward request goes unanswered");
}

#[tokio::test]
async fn banners_come_before_we_send_and_chatty_connects_work() {
    let farm = Farm::start(spec(&[
        (Protocol::Http, Behavior::Banner),
        (Protocol::Socks4, Behavior::Banner),
        (Protocol::Http, Behavior::ChattyConnect),
    ]))
    .await
    .unwrap();
    let p: Vec<_> = farm.proxies().collect();

    let (mut s, mut got) = connect_tunnel(&farm, &p[0]).await;
    while got.len() < b"HTTP/1.1 200 Connection established\r\n\r\n".len() + hostile::BANNER.len() {
        got.extend(read_upto(&mut s, 1).await.0);
    }
    assert_eq!(got, [b"HTTP/1.1 200 Connection established\r\n\r\n".as_slice(), hostile::BANNER].concat());

    let mut s = connect(&p[0]).await;
    s.write_all(forward_request(&farm).as_bytes()).await.unwrap();
    let got = read_upto(&mut s, usize::MAX).await.0;
    assert!(got.starts_with(hostile::BANNER) && echoed(&got), "the banner, then the real answer");

    // SOCKS4: the banner right behind the 8-byte reply, before the tunnel's data.
    let mut s = connect(&p[1]).await;
    let judge: std::net::SocketAddrV4 = judge_authority(&farm).parse().unwrap();
    let mut req = vec![4, 1];
    req.extend_from_slice(&judge.port().to_be_bytes());
    req.extend_from_slice(&judge.ip().octets());
    req.push(0);
    s.write_all(&req).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 8 + hostile::BANNER.len() {
        got.extend(read_upto(&mut s, 1).await.0);
    }
    assert_eq!(got[..2], [0, 0x5a]);
    assert_eq!(&got[8..], hostile::BANNER);

    let (mut s, head) = connect_tunnel(&farm, &p[2]).await;
    assert!(find(&head, b"Proxy-Agent:").is_some() && find(&head, b"Content-Length: 0").is_some());
    s.write_all(origin_request().as_bytes()).await.unwrap();
    assert!(echoed(&read_upto(&mut s, usize::MAX).await.0), "the tunnel works");
}

#[tokio::test]
async fn socks_replies_are_what_they_claim() {
    use Behavior::*;
    let method_stage = [
        (Socks5WrongVersion, vec![4, 0]),
        (Socks5UnofferedAuth, vec![5, 2]),
        (Socks5NoMethods, vec![5, 0xff]),
        (Socks5HttpReply, b"HTTP/1.1 400 Bad Request\r\n".to_vec()),
        (Socks5OneByte, vec![5]),
    ];
    let reply_stage = [
        (Socks5Failure, vec![5, 1, 0, 1, 0, 0, 0, 0, 0, 0]),
        (Socks5BadAddressType, vec![5, 0, 0, 9, 0, 0, 0, 0, 0, 0]),
        (Socks5EmptyDomain, vec![5, 0, 0, 3, 0, 0, 0]),
    ];
    let mut groups: Vec<_> = method_stage.iter().chain(&reply_stage).map(|(b, _)| (Protocol::Socks5, *b)).collect();
    groups.extend([(Protocol::Socks4, Socks4ShortReply), (Protocol::Socks4, Socks4Rejected)]);
    let farm = Farm::start(spec(&groups)).await.unwrap();
    let p: Vec<_> = farm.proxies().collect();

    for (i, (b, want)) in method_stage.iter().enumerate() {
        let mut s = connect(&p[i]).await;
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, want, "{b:?}");
        if *b == Socks5OneByte {
            assert!(stays_silent(&mut s).await, "one byte, then silence with the connection open");
        }
    }
    for (i, (b, want)) in reply_stage.iter().enumerate() {
        let mut s = socks5_tunnel(&farm, &p[method_stage.len() + i]).await;
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, want, "{b:?}");
        if *b == Socks5EmptyDomain {
            s.write_all(origin_request().as_bytes()).await.unwrap();
            assert!(echoed(&read_upto(&mut s, usize::MAX).await.0), "the tunnel works");
        } else {
            assert_eq!(read_upto(&mut s, usize::MAX).await.0, b"", "{b:?}: closed after the reply");
        }
    }
    let judge: std::net::SocketAddrV4 = judge_authority(&farm).parse().unwrap();
    for (proxy, want) in p[8..].iter().zip([vec![0, 0x5a, 0, 0], vec![0, 0x5b, 0, 0, 0, 0, 0, 0]]) {
        let mut s = connect(proxy).await;
        let mut req = vec![4, 1];
        req.extend_from_slice(&judge.port().to_be_bytes());
        req.extend_from_slice(&judge.ip().octets());
        req.push(0);
        s.write_all(&req).await.unwrap();
        assert_eq!(read_upto(&mut s, usize::MAX).await, (want, None), "{:?}", proxy.behavior);
    }
}

#[tokio::test]
async fn behaviours_that_do_not_apply_leave_the_proxy_working() {
    let farm =
        Farm::start(spec(&[(Protocol::Http, Behavior::Socks5OneByte), (Protocol::Socks5, Behavior::ChattyConnect)]))
            .await
            .unwrap();
    let p: Vec<_> = farm.proxies().collect();
    let mut s = connect(&p[0]).await;
    s.write_all(forward_request(&farm).as_bytes()).await.unwrap();
    assert!(echoed(&read_upto(&mut s, usize::MAX).await.0));
    let mut s = socks5_tunnel(&farm, &p[1]).await;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    s.write_all(origin_request().as_bytes()).await.unwrap();
    assert!(echoed(&read_upto(&mut s, usize::MAX).await.0));
}
