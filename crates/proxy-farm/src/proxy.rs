//! Simulated proxies: one listener stands for every proxy; the address a connection was
//! dialed on (127.1.0.0 + i) says which proxy it reached and so how to behave.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Shared;
use crate::hostile;
use crate::http::{self, Delivery, Request};
use crate::spec::{Behavior, Protocol};

const PORTAL: &[u8] =
    b"<html><head><title>Welcome</title></head><body>Please log in to use this network.</body></html>";
const GARBAGE: &[u8] = b"\xde\xad\xbe\xef\x00\x01garbage that is no protocol\r\n\r\n";

pub fn credentials(i: u32) -> (String, String) {
    (format!("user{i}"), format!("pass{i}"))
}

/// Writes what is left, closes our side, and drains the peer so no reset eats our bytes.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let _ = s.flush().await;
    let _ = s.shutdown().await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

struct Ctx {
    shared: Arc<Shared>,
    index: u32,
    protocol: Protocol,
    behavior: Behavior,
    latency: Duration,
    origin: String,
}

/// Handles one connection to a simulated proxy.
pub async fn handle(shared: Arc<Shared>, mut s: TcpStream) {
    let Ok(local) = s.local_addr() else { return };
    let ip = match local.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return,
        },
    };
    let Some(index) = crate::spec::index_of(ip) else {
        return;
    };
    let Some(group) = shared.group_of(index) else {
        return;
    };
    shared.count_connection(index);
    if shared.is_killed(index) {
        return;
    }
    let ctx = Ctx {
        index,
        protocol: group.protocol,
        behavior: group.behavior,
        latency: Duration::from_millis(group.latency_ms),
        origin: ip.to_string(),
        shared,
    };
    match ctx.behavior {
        Behavior::CloseAtOnce => return,
        Behavior::Flaky if ctx.shared.first_visit(index) => return,
        Behavior::Silent => {
            let mut sink = [0u8; 512];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            return;
        }
        _ => {}
    }
    let Ok(first) = s.read_u8().await else {
        return;
    };
    if ctx.behavior == Behavior::Garbage {
        let _ = s.write_all(GARBAGE).await;
        return finish(&mut s).await;
    }
    match (first, ctx.protocol) {
        (5, Protocol::Socks5) => socks5(&ctx, s).await,
        (4, Protocol::Socks4) => socks4(&ctx, s).await,
        (4 | 5, _) if ctx.protocol.is_http() => {
            http::write_response(&mut s, "400 Bad Request", "text/plain", "", b"not a SOCKS proxy", Delivery::Normal)
                .await;
            finish(&mut s).await;
        }
        (_, p) if p.is_http() => http_proxy(&ctx, s, first).await,
        // What SOCKS servers commonly answer bytes of another protocol with: SOCKS5 "no
        // acceptable methods", SOCKS4 "request rejected". A checker that reads them can
        // tell a mislabelled proxy.
        (_, Protocol::Socks5) => {
            let _ = s.write_all(&[5, 0xff]).await;
            finish(&mut s).await;
        }
        (_, Protocol::Socks4) => {
            let _ = s.write_all(&[0, 0x5b, 0, 0, 0, 0, 0, 0]).await;
            finish(&mut s).await;
        }
        _ => {}
    }
}

fn basic_ok(ctx: &Ctx, req: &Request) -> bool {
    use base64::Engine as _;
    let (u, p) = credentials(ctx.index);
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    ctx.behavior == Behavior::AuthGood
        && req.header("proxy-authorization").is_some_and(|v| v.strip_prefix("Basic ").is_some_and(|t| t.trim() == want))
}

fn needs_auth(ctx: &Ctx) -> bool {
    matches!(ctx.behavior, Behavior::AuthGood | Behavior::AuthBad)
}

/// How long a kept connection waits for its next request.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(30);

async fn http_proxy(ctx: &Ctx, mut s: TcpStream, first: u8) {
    let mut buf = vec![first];
    // Requests answered on this connection (HTTP/1.1 keep-alive).
    let mut answered: u32 = 0;
    loop {
        let req = match answered {
            0 => http::read_request(&mut s, &mut buf).await,
            _ => tokio::time::timeout(KEEP_ALIVE_IDLE, http::read_request(&mut s, &mut buf)).await.ok().flatten(),
        };
        let Some(req) = req else {
            return;
        };
        if answered > 0 {
            match ctx.behavior {
                Behavior::KeepAliveThenMute => {
                    let mut sink = [0u8; 512];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                    return;
                }
                Behavior::KeepAliveThenRefuse => {
                    http::write_response(&mut s, "400 Bad Request", "text/plain", "", b"bad request", Delivery::Normal)
                        .await;
                    return finish(&mut s).await;
                }
                Behavior::KeepAliveThenGarbage => {
                    let _ = s.write_all(GARBAGE).await;
                    return finish(&mut s).await;
                }
                _ => {}
            }
        }
        if !http_request(ctx, &mut s, req).await {
            return;
        }
        answered = answered.saturating_add(1);
    }
}

/// Answers one request on a proxy connection. `false`: the connection is done (closed,
/// or handed to a tunnel); `true`: it stays open for the next request.
async fn http_request(ctx: &Ctx, s: &mut TcpStream, req: Request) -> bool {
    if ctx.behavior == Behavior::ResetAfterRequest {
        // The caller drops the connection: a reset.
        hostile::linger_zero(s);
        return false;
    }
    if needs_auth(ctx) && !basic_ok(ctx, &req) {
        let extra = "Proxy-Authenticate: Basic realm=\"farm\"\r\n";
        http::write_response(s, "407 Proxy Authentication Required", "text/plain", extra, b"auth", Delivery::Normal)
            .await;
        finish(s).await;
        return false;
    }
    if req.method.eq_ignore_ascii_case("CONNECT") {
        connect(ctx, s, &req).await;
        return false;
    }
    if ctx.behavior == Behavior::TunnelOnly || !req.target.starts_with("http://") {
        http::write_response(s, "403 Forbidden", "text/plain", "", b"forwarding refused", Delivery::Normal).await;
        finish(s).await;
        return false;
    }
    let authority = req.target["http://".len()..].split('/').next().unwrap_or_default();
    if ctx.shared.farm_target(authority).is_none() {
        http::write_response(s, "502 Bad Gateway", "text/plain", "", b"unknown target", Delivery::Normal).await;
        finish(s).await;
        return false;
    }
    if ctx.shared.is_judge_down() {
        http::write_response(s, "502 Bad Gateway", "text/plain", "", b"upstream down", Delivery::Normal).await;
        finish(s).await;
        return false;
    }
    match ctx.behavior {
        Behavior::CloseAfterHandshake => {
            finish(s).await;
            return false;
        }
        Behavior::Banner if s.write_all(hostile::BANNER).await.is_err() => return false,
        _ => {}
    }
    let client = s.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let keep = ctx.behavior.keeps_alive()
        && !req.header("connection").is_some_and(|v| v.split(',').any(|o| o.trim().eq_ignore_ascii_case("close")));
    answer(ctx, s, &forwarded(ctx.behavior, req, &client), keep).await;
    if !keep || ctx.behavior == Behavior::KeepAliveThenClose {
        finish(s).await;
        return false;
    }
    true
}

/// Answers a CONNECT and serves the judge through the tunnel.
async fn connect(ctx: &Ctx, s: &mut TcpStream, req: &Request) {
    if ctx.behavior == Behavior::ForwardOnly {
        http::write_response(s, "405 Method Not Allowed", "text/plain", "", b"no CONNECT", Delivery::Normal).await;
        return finish(s).await;
    }
    let Some(target) = ctx.shared.farm_target(&req.target) else {
        http::write_response(s, "502 Bad Gateway", "text/plain", "", b"unknown target", Delivery::Normal).await;
        return finish(s).await;
    };
    if ctx.shared.is_judge_down() {
        http::write_response(s, "502 Bad Gateway", "text/plain", "", b"upstream down", Delivery::Normal).await;
        return finish(s).await;
    }
    let established = match ctx.behavior {
        Behavior::OldStyle => b"HTTP/1.0 200 Connection established\r\n\r\n".as_slice(),
        b => hostile::established(b).unwrap_or(b"HTTP/1.1 200 Connection established\r\n\r\n"),
    };
    if s.write_all(established).await.is_err() {
        return;
    }
    if ctx.behavior == Behavior::CloseAfterHandshake {
        return finish(s).await;
    }
    tunnel(ctx, s, target).await
}

/// The request as the judge receives it from a forwarding proxy: transparent and
/// anonymous proxies add their headers.
fn forwarded(behavior: Behavior, mut req: Request, client: &str) -> Request {
    match behavior {
        Behavior::Transparent => {
            req.headers.push(("Via".into(), "1.1 farm-proxy".into()));
            req.headers.push(("X-Forwarded-For".into(), client.to_string()));
        }
        Behavior::Anonymous => req.headers.push(("Via".into(), "1.1 farm-proxy".into())),
        _ => {}
    }
    req
}

/// The judge's answer as this proxy delivers it.
/// `keep`: answered as persistent (no `Connection: close`), where the behaviour has a say.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(ctx: &Ctx, s: &mut S, req: &Request, keep: bool) {
    match ctx.behavior {
        Behavior::TooSlow => tokio::time::sleep(Duration::from_secs(3600)).await,
        _ => tokio::time::sleep(ctx.latency).await,
    }
    if let Some(reply) = hostile::reply(ctx.behavior, req, &ctx.origin) {
        ctx.shared.judge_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return hostile::send(s, reply).await;
    }
    match ctx.behavior {
        Behavior::EndlessHeader => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
            for i in 0u64.. {
                let line = format!("X-Filler-{i}: {}\r\n", "a".repeat(64));
                if s.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
        Behavior::HugeBody => {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4294967296\r\n\r\n").await;
            let filler = [b'x'; 8192];
            let mut left: u64 = 1 << 32;
            while left > 0 && s.write_all(&filler).await.is_ok() {
                left = left.saturating_sub(filler.len() as u64);
            }
        }
        Behavior::OldStyle | Behavior::Chunked if ctx.shared.is_judge_down() => {
            http::write_response(s, "502 Bad Gateway", "text/plain", "", b"upstream down", Delivery::Normal).await
        }
        Behavior::OldStyle => {
            ctx.shared.judge_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut out = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n".to_vec();
            out.extend_from_slice(&http::judge_body(req, &ctx.origin));
            let _ = s.write_all(&out).await;
        }
        Behavior::Chunked => {
            ctx.shared.judge_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = http::judge_body(req, &ctx.origin);
            let conn = if keep { "" } else { "Connection: close\r\n" };
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{conn}\r\n"
            )
            .into_bytes();
            for piece in body.chunks(7) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            let _ = s.write_all(&out).await;
        }
        Behavior::WrongPage => http::write_response(s, "200 OK", "text/html", "", PORTAL, Delivery::Normal).await,
        Behavior::PortalWithUrl => {
            let page =
                format!("<html><body><a href=\"/login?redirect={}\">Log in to continue</a></body></html>", req.target);
            http::write_response(s, "200 OK", "text/html", "", page.as_bytes(), Delivery::Normal).await
        }
        Behavior::Trickle => http::answer_judge(&ctx.shared, s, req, &ctx.origin, Delivery::Trickle, keep).await,
        Behavior::KeepAliveExtraAnswer => {
            ctx.shared.judge_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut out = http::render("200 OK", "application/json", "", &http::judge_body(req, &ctx.origin));
            out.extend_from_slice(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let _ = s.write_all(&out).await;
        }
        _ => http::answer_judge(&ctx.shared, s, req, &ctx.origin, Delivery::Normal, keep).await,
    }
}

/// Serves the judge inside an established tunnel (TLS for the TLS judge).
async fn tunnel(ctx: &Ctx, s: &mut TcpStream, target: crate::Target) {
    match target {
        crate::Target::JudgeTls if ctx.behavior == Behavior::TlsGarbage => {
            let mut hello = [0u8; 512];
            let _ = s.read(&mut hello).await;
            let _ = s.write_all(GARBAGE).await;
            finish(s).await;
        }
        crate::Target::JudgeTls => {
            let config =
                if ctx.behavior == Behavior::Mitm { ctx.shared.tls.mitm.clone() } else { ctx.shared.tls.judge.clone() };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await else {
                return;
            };
            inline_judge(ctx, &mut tls).await;
        }
        crate::Target::Judge => inline_judge(ctx, s).await,
    }
}

async fn inline_judge<S: AsyncRead + AsyncWrite + Unpin>(ctx: &Ctx, s: &mut S) {
    let mut buf = Vec::new();
    let Some(req) = http::read_request(s, &mut buf).await else {
        return;
    };
    answer(ctx, s, &req, false).await;
    finish(s).await;
}

async fn socks5(ctx: &Ctx, s: TcpStream) {
    // A client that hangs up mid-handshake ends the session: there is no one to answer.
    let _ = socks5_session(ctx, s).await;
}

/// Reads exactly `N` bytes.
async fn read_array<const N: usize>(s: &mut TcpStream) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    s.read_exact(&mut b).await?;
    Ok(b)
}

/// Reads exactly `n` bytes (a length the client sent: at most 255 here).
async fn read_vec(s: &mut TcpStream, n: u8) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; usize::from(n)];
    s.read_exact(&mut b).await?;
    Ok(b)
}

async fn socks5_session(ctx: &Ctx, mut s: TcpStream) -> std::io::Result<()> {
    let n = s.read_u8().await?;
    let methods = read_vec(&mut s, n).await?;
    if let Some(reply) = hostile::socks5_method(ctx.behavior) {
        hostile::send(&mut s, reply).await;
        finish(&mut s).await;
        return Ok(());
    }
    if needs_auth(ctx) {
        if !methods.contains(&2) {
            let _ = s.write_all(&[5, 0xff]).await;
            finish(&mut s).await;
            return Ok(());
        }
        s.write_all(&[5, 2]).await?;
        let [_version, ulen] = read_array::<2>(&mut s).await?;
        let user = read_vec(&mut s, ulen).await?;
        let plen = s.read_u8().await?;
        let pass = read_vec(&mut s, plen).await?;
        let (u, p) = credentials(ctx.index);
        let ok = ctx.behavior == Behavior::AuthGood && user == u.as_bytes() && pass == p.as_bytes();
        let _ = s.write_all(&[1, if ok { 0 } else { 1 }]).await;
        if !ok {
            finish(&mut s).await;
            return Ok(());
        }
    } else if methods.contains(&0) {
        s.write_all(&[5, 0]).await?;
    } else {
        let _ = s.write_all(&[5, 0xff]).await;
        finish(&mut s).await;
        return Ok(());
    }
    let req = read_array::<4>(&mut s).await?;
    let host = match req[3] {
        1 => std::net::Ipv4Addr::from(read_array::<4>(&mut s).await?).to_string(),
        3 => {
            let len = s.read_u8().await?;
            String::from_utf8_lossy(&read_vec(&mut s, len).await?).into_owned()
        }
        4 => format!("[{}]", std::net::Ipv6Addr::from(read_array::<16>(&mut s).await?)),
        _ => return Ok(()),
    };
    let port = u16::from_be_bytes(read_array::<2>(&mut s).await?);
    let target = ctx.shared.farm_target(&format!("{host}:{port}"));
    let code = match target {
        _ if req[1] != 1 => 7,
        None => 4,
        Some(_) if ctx.shared.is_judge_down() => 5,
        Some(_) => 0,
    };
    if ctx.behavior == Behavior::ResetAfterRequest {
        hostile::reset(s);
        return Ok(());
    }
    if ctx.behavior == Behavior::BogusSocks {
        // Address type "domain", length 255, then 8 bytes and a close.
        let _ = s.write_all(&[5, 0, 0, 3, 255, b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h']).await;
        finish(&mut s).await;
        return Ok(());
    }
    if let Some(reply) = hostile::socks5_failure(ctx.behavior) {
        let _ = s.write_all(reply).await;
        finish(&mut s).await;
        return Ok(());
    }
    let usual = [5, code, 0, 1, 0, 0, 0, 0, 0, 0];
    let reply = match hostile::socks5_success(ctx.behavior) {
        Some(odd) if code == 0 => odd,
        _ => &usual,
    };
    s.write_all(reply).await?;
    match target {
        Some(t) if code == 0 => after_reply(ctx, s, t).await,
        _ => finish(&mut s).await,
    }
    Ok(())
}

/// Enters the tunnel after a successful SOCKS reply, unless the behaviour spoils it first.
async fn after_reply(ctx: &Ctx, mut s: TcpStream, target: crate::Target) {
    match ctx.behavior {
        Behavior::CloseAfterHandshake => return finish(&mut s).await,
        Behavior::Banner if s.write_all(hostile::BANNER).await.is_err() => return,
        _ => {}
    }
    tunnel(ctx, &mut s, target).await
}

async fn socks4(ctx: &Ctx, mut s: TcpStream) {
    let Ok(head) = read_array::<7>(&mut s).await else {
        return;
    };
    let port = u16::from_be_bytes([head[1], head[2]]);
    let ip = std::net::Ipv4Addr::new(head[3], head[4], head[5], head[6]);
    let Some(user) = read_cstr(&mut s).await else {
        return;
    };
    let host = if ip.octets()[..3] == [0, 0, 0] && ip.octets()[3] != 0 {
        let Some(name) = read_cstr(&mut s).await else {
            return;
        };
        String::from_utf8_lossy(&name).into_owned()
    } else {
        ip.to_string()
    };
    if ctx.behavior == Behavior::ResetAfterRequest {
        return hostile::reset(s);
    }
    if ctx.behavior == Behavior::BogusSocks {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
        return finish(&mut s).await;
    }
    if let Some(reply) = hostile::socks4_failure(ctx.behavior) {
        let _ = s.write_all(reply).await;
        return finish(&mut s).await;
    }
    let vn = if ctx.behavior == Behavior::OldStyle { 4 } else { 0 };
    let reply = |code: u8| [vn, code, head[1], head[2], head[3], head[4], head[5], head[6]];
    if needs_auth(ctx) {
        let (u, _) = credentials(ctx.index);
        if !(ctx.behavior == Behavior::AuthGood && user == u.as_bytes()) {
            let _ = s.write_all(&reply(0x5d)).await;
            return finish(&mut s).await;
        }
    }
    let target = ctx.shared.farm_target(&format!("{host}:{port}"));
    match target {
        Some(t) if head[0] == 1 && !ctx.shared.is_judge_down() => {
            if s.write_all(&reply(0x5a)).await.is_err() {
                return;
            }
            after_reply(ctx, s, t).await
        }
        _ => {
            let _ = s.write_all(&reply(0x5b)).await;
            finish(&mut s).await
        }
    }
}

async fn read_cstr(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        s.read_exact(&mut b).await.ok()?;
        if b[0] == 0 {
            return Some(out);
        }
        if out.len() > 255 {
            return None;
        }
        out.push(b[0]);
    }
}

/// Where a connection came from, for the direct judge.
pub fn peer_of(s: &TcpStream) -> SocketAddr {
    s.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
