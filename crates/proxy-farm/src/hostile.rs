//! Hostile proxies ([`Behavior::HOSTILE`]): the malformed and adversarial answers and
//! handshake replies, built as plain bytes (testable without a socket) and sent the way
//! each behaviour sends them.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{self, Request};
use crate::spec::Behavior;

/// A greeting some proxies send where only protocol bytes belong.
pub const BANNER: &[u8] = b"220 FarmProxy 1.0 ready\r\n";
/// A CONNECT 200 with [`BANNER`] right behind it, in one write.
const ESTABLISHED_BANNER: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n220 FarmProxy 1.0 ready\r\n";
const ESTABLISHED_CHATTY: &[u8] = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: FarmProxy/1.0\r\n\
Content-Length: 0\r\nX-Cache: MISS from farm\r\n\r\n";

const JSON: &str = "Content-Type: application/json";
const CHUNKED_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// The client connection preface of HTTP/2, then an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// The start of a judge echo, before any query value: what a cut-short answer holds.
const CUT_SHORT: &[u8] = b"{\"args\":{";
/// The nonce of an earlier request, as a cache replays it.
pub const STALE_NONCE: &str = "5ca1ab1e5ca1ab1e5ca1ab1e";

/// How a hostile answer goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// These bytes; then the connection is closed as usual.
    Once(Vec<u8>),
    /// `head`, then `filler` again and again, `every` apart, until the peer hangs up.
    Endless { head: Vec<u8>, filler: Vec<u8>, every: Duration },
    /// These bytes, then silence with the connection open until the peer hangs up.
    ThenSilence(Vec<u8>),
}

/// The judge's answer as a hostile `behavior` gives it (`origin`: the client address the
/// judge echoes), or `None` when the behaviour leaves the answer alone.
pub fn reply(behavior: Behavior, req: &Request, origin: &str) -> Option<Reply> {
    use Behavior::*;
    let judge = || http::judge_body(req, origin);
    let once = Reply::Once;
    Some(match behavior {
        ChunkSizeMax => endless([CHUNKED_HEAD, b"ffffffffffffffff\r\n"].concat(), vec![b'x'; 8192]),
        ChunkSizeTooLong => once(sized_chunk(|n| format!("1{n:016x}"), &judge(), b"\r\n")),
        ChunkSizePrefixed => once(sized_chunk(|n| format!("0x{n:x}"), &judge(), b"\r\n")),
        ChunkSizeSigned => once(sized_chunk(|n| format!("+{n:x}"), &judge(), b"\r\n")),
        ChunkExtensionFlood => {
            once(sized_chunk(|n| format!("{n:x}{}", ";farm=flood".repeat(10_000)), &judge(), b"\r\n"))
        }
        ChunkMissingCrlf => once(sized_chunk(|n| format!("{n:x}"), &judge(), b"")),
        EndlessChunks => endless(CHUNKED_HEAD.to_vec(), [b"400\r\n".as_slice(), &[b'x'; 1024], b"\r\n"].concat()),
        HugeChunkThenClose => once([CHUNKED_HEAD, b"80000000\r\n", &[b'x'; 1024]].concat()),
        ChunkedTrailers => {
            once([CHUNKED_HEAD, &chunks(&judge(), 7, ";farm=1"), b"X-Checksum: 0\r\nX-Farm: trailer\r\n\r\n"].concat())
        }
        ContentLengthOverflow => once(message("200 OK", &[JSON, "Content-Length: 99999999999999999999999"], &judge())),
        ContentLengthNegative => once(message("200 OK", &[JSON, "Content-Length: -1"], &judge())),
        ContentLengthSigned => with_judge(judge(), |n| vec![format!("Content-Length: +{n}")]),
        ContentLengthConflict => {
            with_judge(judge(), |n| vec![format!("Content-Length: {n}"), format!("Content-Length: {}", n + 1)])
        }
        ContentLengthShort => {
            once(message("200 OK", &[JSON, "Content-Length: 2"], &[b"{}".as_slice(), &judge()].concat()))
        }
        ContentLengthLong => {
            let declared = format!("Content-Length: {}", CUT_SHORT.len() + 4096);
            once(message("200 OK", &[JSON, &declared], CUT_SHORT))
        }
        ContentLengthAndChunked => {
            let body = [chunks(&judge(), 7, ""), b"\r\n".to_vec()].concat();
            let declared = format!("Content-Length: {}", body.len());
            once(message("200 OK", &[JSON, &declared, "Transfer-Encoding: chunked"], &body))
        }
        ContentLengthTwice => {
            with_judge(judge(), |n| vec![format!("Content-Length: {n}"), format!("Content-Length: {n}")])
        }
        TransferEncodingGzip => once(message("200 OK", &[JSON, "Transfer-Encoding: gzip"], &gzip(&judge()))),
        TransferEncodingUnknown => {
            let body = [chunks(&judge(), 7, ""), b"\r\n".to_vec()].concat();
            once(message("200 OK", &[JSON, "Transfer-Encoding: xchunkedx"], &body))
        }
        ContinueFlood => endless(Vec::new(), CONTINUE.repeat(40)),
        OneContinue => once([CONTINUE, &ok(&judge())].concat()),
        EarlyHints => once(
            [
                b"HTTP/1.1 102 Processing\r\n\r\n".as_slice(),
                b"HTTP/1.1 103 Early Hints\r\nLink: </judge.css>; rel=preload; as=style\r\n\r\n",
                &ok(&judge()),
            ]
            .concat(),
        ),
        SwitchingProtocols => once(
            [
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".as_slice(),
                &ok(&judge()),
            ]
            .concat(),
        ),
        NulInHead => with_judge(judge(), |n| vec!["X-Farm: nul\0here".into(), format!("Content-Length: {n}")]),
        StatusFourDigits => once(message_raw("HTTP/1.1 2000 OK", &judge())),
        HttpVersion99 => once(message_raw("HTTP/9.9 200 OK", &judge())),
        Http09 => once(judge()),
        Http2Preface => once(H2_PREFACE.to_vec()),
        ThousandHeaders => with_judge(judge(), |n| {
            let mut h: Vec<String> = (0..1000).map(|i| format!("X-{i:03}: v")).collect();
            h.push(format!("Content-Length: {n}"));
            h
        }),
        // 60 header fields in all: Content-Type, Content-Length, Connection and 57 more.
        SixtyHeaders => with_judge(judge(), |n| {
            let mut h: Vec<String> = (0..57).map(|i| format!("X-Farm-{i}: {i}")).collect();
            h.extend([format!("Content-Length: {n}"), "Connection: close".into()]);
            h
        }),
        HugeHeaderValue => {
            with_judge(judge(), |n| vec![format!("X-Big: {}", "a".repeat(1 << 20)), format!("Content-Length: {n}")])
        }
        BareLf => {
            let body = judge();
            let head = format!("HTTP/1.1 200 OK\n{JSON}\nContent-Length: {}\nConnection: close\n\n", body.len());
            once([head.into_bytes(), body].concat())
        }
        SlowlorisHead => Reply::Endless {
            head: b"HTTP/1.1 200 OK\r\nX-Slow: ".to_vec(),
            filler: b"a".to_vec(),
            every: Duration::from_millis(100),
        },
        EndlessSlowBody => Reply::Endless {
            head: message("200 OK", &["Content-Type: text/plain", "Connection: close"], b""),
            filler: b"still loading...".to_vec(),
            every: Duration::from_millis(100),
        },
        StallAfterHead => Reply::ThenSilence(message("200 OK", &[JSON, "Content-Length: 512"], b"")),
        HalfCloseMidHead => once(b"HTTP/1.1 200 OK\r\nContent-Ty".to_vec()),
        StaleNonce => once(ok(&stale_answer(req, origin))),
        EchoRequest => once(echo(req)),
        RedirectLogin => {
            let location = format!("Location: http://login.farm.invalid/portal?continue={}", req.target);
            once(message("302 Found", &[&location, "Content-Length: 0"], b""))
        }
        NonceInAttribute => {
            let page = portal_form(req);
            let declared = format!("Content-Length: {}", page.len());
            once(message("200 OK", &["Content-Type: text/html", &declared], page.as_bytes()))
        }
        NonceUnderOtherKey => once(ok(&shadow_json(req))),
        _ => return None,
    })
}

fn endless(head: Vec<u8>, filler: Vec<u8>) -> Reply {
    Reply::Endless { head, filler, every: Duration::ZERO }
}

/// `HTTP/1.1 {status}`, the header lines, a blank line, the body.
fn message(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    [out.into_bytes(), body.to_vec()].concat()
}

/// A hand-written status line, the usual headers, the body.
fn message_raw(status_line: &str, body: &[u8]) -> Vec<u8> {
    let head = format!("{status_line}\r\n{JSON}\r\nContent-Length: {}\r\n\r\n", body.len());
    [head.into_bytes(), body.to_vec()].concat()
}

/// The plain 200 a working proxy gives.
fn ok(body: &[u8]) -> Vec<u8> {
    message("200 OK", &[JSON, &format!("Content-Length: {}", body.len()), "Connection: close"], body)
}

/// A 200 carrying the judge's `body`, with the header lines `headers(body length)`.
fn with_judge(body: Vec<u8>, headers: impl FnOnce(usize) -> Vec<String>) -> Reply {
    let mut lines = vec![JSON.to_string()];
    lines.extend(headers(body.len()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    Reply::Once(message("200 OK", &lines, &body))
}

/// `body` as well-formed chunks of `piece` bytes (each size line carrying `ext`) and the
/// last chunk's size line; the caller ends the trailer section.
fn chunks(body: &[u8], piece: usize, ext: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 2 + 16);
    for part in body.chunks(piece.max(1)) {
        out.extend_from_slice(format!("{:x}{ext}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    out
}

/// A chunked 200 with all of `body` in one chunk whose size line is `size_line(len)`,
/// then `after` (the CRLF that should end the data) and the last chunk.
fn sized_chunk(size_line: impl FnOnce(usize) -> String, body: &[u8], after: &[u8]) -> Vec<u8> {
    [CHUNKED_HEAD, size_line(body.len()).as_bytes(), b"\r\n", body, after, b"0\r\n\r\n"].concat()
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// The query arguments of a request target, in order.
pub fn query_args(target: &str) -> Vec<(&str, &str)> {
    target.split_once('?').map(|(_, q)| q.split('&').filter_map(|kv| kv.split_once('=')).collect()).unwrap_or_default()
}

/// The header that may carry a nonce (proxy-checker's `X-Pc-Nonce`).
const NONCE_HEADER: &str = "x-pc-nonce";

/// Every value a nonce may be in: the query arguments and the nonce header.
fn nonce_values(req: &Request) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> =
        query_args(&req.target).iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if let Some(h) = req.header(NONCE_HEADER) {
        v.push((NONCE_HEADER.to_string(), h.to_string()));
    }
    v
}

/// The judge's echo of an earlier request: every query value and the nonce header are
/// [`STALE_NONCE`].
fn stale_answer(req: &Request, origin: &str) -> Vec<u8> {
    let target = match req.target.split_once('?') {
        Some((path, query)) => {
            let args: Vec<String> = query
                .split('&')
                .map(|kv| kv.split_once('=').map_or(kv.to_string(), |(k, _)| format!("{k}={STALE_NONCE}")))
                .collect();
            format!("{path}?{}", args.join("&"))
        }
        None => req.target.clone(),
    };
    let headers = req
        .headers
        .iter()
        .map(|(n, v)| {
            (n.clone(), if n.eq_ignore_ascii_case(NONCE_HEADER) { STALE_NONCE.to_string() } else { v.clone() })
        })
        .collect();
    let earlier = Request { method: req.method.clone(), target, headers };
    http::judge_body(&earlier, origin)
}

/// Our request, written back.
fn echo(req: &Request) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (name, value) in &req.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A login form keeping each query value in a hidden field.
fn portal_form(req: &Request) -> String {
    let fields: String =
        nonce_values(req).iter().map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{v}\">")).collect();
    format!("<html><body><form action=\"/login\" method=\"post\">{fields}<button>Log in</button></form></body></html>")
}

/// A JSON page with each query value under keys that are not the argument's name.
fn shadow_json(req: &Request) -> Vec<u8> {
    let args = nonce_values(req);
    let mut page = serde_json::Map::new();
    let shadowed: serde_json::Map<_, _> = args.iter().map(|(k, v)| (format!("x_{k}"), v.as_str().into())).collect();
    page.insert("args".into(), shadowed.into());
    for (k, v) in &args {
        page.insert(format!("{k}_seen"), v.as_str().into());
    }
    page.insert("values".into(), args.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().into());
    page.insert("url".into(), req.target.as_str().into());
    serde_json::to_vec(&page).unwrap_or_default()
}

/// Sends a hostile answer.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, reply: Reply) {
    match reply {
        Reply::Once(bytes) => {
            let _ = s.write_all(&bytes).await;
            let _ = s.flush().await;
        }
        Reply::Endless { head, filler, every } => {
            if s.write_all(&head).await.is_err() {
                return;
            }
            while s.write_all(&filler).await.is_ok() && s.flush().await.is_ok() {
                if !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
            }
        }
        Reply::ThenSilence(bytes) => {
            if s.write_all(&bytes).await.is_ok() && s.flush().await.is_ok() {
                silence(s).await;
            }
        }
    }
}

/// Reads and discards until the peer hangs up, saying nothing.
pub async fn silence<S: AsyncRead + Unpin>(s: &mut S) {
    let mut sink = [0u8; 512];
    while let Ok(n) = s.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Aborts the connection: with SO_LINGER 0 the close is a reset.
pub fn reset(s: TcpStream) {
    linger_zero(&s);
    drop(s);
}

/// Makes the close of `s` a reset (SO_LINGER 0).
pub fn linger_zero(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// The CONNECT 200 of a hostile proxy, when it is not the usual one.
pub fn established(behavior: Behavior) -> Option<&'static [u8]> {
    match behavior {
        Behavior::Banner => Some(ESTABLISHED_BANNER),
        Behavior::ChattyConnect => Some(ESTABLISHED_CHATTY),
        _ => None,
    }
}

/// What a hostile SOCKS5 proxy says instead of its method reply (the connection ends
/// after it).
pub fn socks5_method(behavior: Behavior) -> Option<Reply> {
    Some(match behavior {
        Behavior::Socks5WrongVersion => Reply::Once(vec![4, 0]),
        Behavior::Socks5UnofferedAuth => Reply::Once(vec![5, 2]),
        Behavior::Socks5NoMethods => Reply::Once(vec![5, 0xff]),
        Behavior::Socks5HttpReply => Reply::Once(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\nnot a SOCKS proxy"
                .to_vec(),
        ),
        Behavior::Socks5OneByte => Reply::ThenSilence(vec![5]),
        _ => return None,
    })
}

/// A hostile SOCKS5 connect reply that fails (the connection ends after it).
pub fn socks5_failure(behavior: Behavior) -> Option<&'static [u8]> {
    match behavior {
        Behavior::Socks5Failure => Some(&[5, 1, 0, 1, 0, 0, 0, 0, 0, 0]),
        Behavior::Socks5BadAddressType => Some(&[5, 0, 0, 9, 0, 0, 0, 0, 0, 0]),
        _ => None,
    }
}

/// An odd but well-framed SOCKS5 success reply (the tunnel follows).
pub fn socks5_success(behavior: Behavior) -> Option<&'static [u8]> {
    match behavior {
        Behavior::Socks5EmptyDomain => Some(&[5, 0, 0, 3, 0, 0, 0]),
        _ => None,
    }
}

/// A hostile SOCKS4 reply (the connection ends after it).
pub fn socks4_failure(behavior: Behavior) -> Option<&'static [u8]> {
    match behavior {
        Behavior::Socks4ShortReply => Some(&[0, 0x5a, 0, 0]),
        Behavior::Socks4Rejected => Some(&[0, 0x5b, 0, 0, 0, 0, 0, 0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_follows_the_connect_200() {
        assert!(ESTABLISHED_BANNER.ends_with(BANNER));
        assert!(ESTABLISHED_BANNER.starts_with(b"HTTP/1.1 200 Connection established\r\n\r\n"));
    }
}
