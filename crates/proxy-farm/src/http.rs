//! The farm's HTTP side: the judge (direct and through proxies), source lists, and the
//! small request reader every HTTP-speaking part of the farm shares.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Shared;

/// A parsed request head.
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one request head (bytes already read are in `buf`). `None` on EOF or garbage.
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let r = Request {
                    method: req.method?.to_string(),
                    target: req.path?.to_string(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect(),
                };
                buf.drain(..n);
                return Some(r);
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
            _ => return None,
        }
        let mut chunk = [0u8; 2048];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// How a judge answer is delivered.
#[derive(Clone, Copy)]
pub enum Delivery {
    Normal,
    /// One byte every 200 ms.
    Trickle,
}

/// Writes a response that ends the connection (`Connection: close`).
pub async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: &str,
    ctype: &str,
    extra: &str,
    body: &[u8],
    how: Delivery,
) {
    let extra = format!("Connection: close\r\n{extra}");
    write_framed(s, status, ctype, &extra, body, how).await
}

/// Writes a response delimited by its `Content-Length`, saying nothing of the connection
/// unless `extra` does (HTTP/1.1: it persists).
pub async fn write_framed<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: &str,
    ctype: &str,
    extra: &str,
    body: &[u8],
    how: Delivery,
) {
    let all = render(status, ctype, extra, body);
    match how {
        Delivery::Normal => {
            let _ = s.write_all(&all).await;
        }
        Delivery::Trickle => {
            for b in all {
                if s.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = s.flush().await;
}

/// A response delimited by its `Content-Length`, as bytes.
pub fn render(status: &str, ctype: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}\r\n", body.len());
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    all
}

/// The judge families the farm answers as, by path: what judges people run look like.
pub const JUDGE_FAMILIES: &[(&str, &str)] = &[
    // httpbin `/get`: `args`, Title-Case `headers`, `origin`, `url`.
    ("httpbin", "/get"),
    // azenv.php: `KEY = value` lines in a `<pre>` (REQUEST_URI, QUERY_STRING, HTTP_*).
    ("azenv", "/azenv.php"),
    // A path-and-headers JSON echo: `path`, lower-case `headers`, `remote_addr`.
    ("path-echo", "/echo"),
    // This service's own `/judge`: `args`, `query`, lower-case `headers`, `origin`.
    ("service", "/judge"),
];

/// A page that echoes nothing: calibration must refuse it.
pub const NO_ECHO_PATH: &str = "/static";

/// The judge's echo of `req` in the family its path selects (httpbin's by default), with
/// `origin` as the address the request came from.
pub fn judge_body(req: &Request, origin: &str) -> Vec<u8> {
    let path = match req.target.find("://") {
        Some(i) => req.target[i + 3..].find('/').map_or("/".to_string(), |p| req.target[i + 3 + p..].to_string()),
        None => req.target.clone(),
    };
    let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
    let args: std::collections::BTreeMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let lower = |n: &str| n.to_ascii_lowercase();
    match route {
        "/azenv.php" => {
            let mut page = format!(
                "<html><head><title>AZ Environment variables 1.04</title></head><body><pre>\nREMOTE_ADDR = {origin}\nREMOTE_PORT = 51234\nREQUEST_METHOD = GET\nREQUEST_URI = {path}\nQUERY_STRING = {query}\nREQUEST_TIME = 1764590000\n"
            );
            for (n, v) in &req.headers {
                page.push_str(&format!("HTTP_{} = {v}\n", n.to_ascii_uppercase().replace('-', "_")));
            }
            page.push_str("</pre></body></html>");
            page.into_bytes()
        }
        "/echo" => {
            let headers: HashMap<String, &str> = req.headers.iter().map(|(n, v)| (lower(n), v.as_str())).collect();
            serde_json::to_vec(&serde_json::json!({ "path": path, "headers": headers, "remote_addr": origin }))
                .expect("json")
        }
        "/judge" => {
            let headers: HashMap<String, &str> = req.headers.iter().map(|(n, v)| (lower(n), v.as_str())).collect();
            serde_json::to_vec(
                &serde_json::json!({ "args": args, "query": query, "headers": headers, "origin": origin }),
            )
            .expect("json")
        }
        NO_ECHO_PATH => b"<html><body><h1>It works!</h1></body></html>".to_vec(),
        _ => {
            let headers: HashMap<&str, &str> = req.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let host = req.header("host").unwrap_or("judge");
            serde_json::to_vec(&serde_json::json!({
                "args": args, "headers": headers, "origin": origin, "url": format!("http://{host}{path}"),
            }))
            .expect("json")
        }
    }
}

/// Answers a judge request (direct, or inline through a proxy) honouring judge-down.
/// `keep`: the connection stays open for another request (else `Connection: close`).
pub async fn answer_judge<S: AsyncWrite + Unpin>(
    shared: &Shared,
    s: &mut S,
    req: &Request,
    origin: &str,
    how: Delivery,
    keep: bool,
) {
    shared.judge_hits.fetch_add(1, Ordering::Relaxed);
    let conn = if keep { "" } else { "Connection: close\r\n" };
    if shared.judge_down.load(Ordering::Relaxed) {
        write_framed(s, "503 Service Unavailable", "text/plain", conn, b"judge down", Delivery::Normal).await;
        return;
    }
    let body = judge_body(req, origin);
    write_framed(s, "200 OK", "application/json", conn, &body, how).await;
}

/// A source list served by the farm.
#[derive(Clone)]
pub struct SourceBody {
    pub body: Arc<Vec<u8>>,
    pub status: u16,
    pub gzip: bool,
    pub delay: Duration,
}

/// A source that misbehaves on purpose.
#[derive(Clone, Debug)]
pub enum HostileSource {
    /// Declares `len` bytes (Content-Length) and streams `chunk` repeated until then or
    /// until the client hangs up: a 10 GB list, a 100 MB single line.
    Huge { len: u64, chunk: Arc<Vec<u8>> },
    /// Sends the head, then `body` one byte per `every`.
    Trickle { body: Arc<Vec<u8>>, every: Duration },
    /// Redirects to itself (with a counter in the query) forever.
    RedirectLoop,
    /// Redirects once, to `location`.
    RedirectTo(String),
    /// Declares all of `body`, sends the first `sent` bytes, then closes.
    DieMidBody { body: Arc<Vec<u8>>, sent: usize },
}

async fn serve_hostile<S: AsyncWrite + Unpin>(s: &mut S, name: &str, target: &str, h: HostileSource) {
    let head = |len: u64| {
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match h {
        HostileSource::Huge { len, chunk } => {
            if s.write_all(head(len).as_bytes()).await.is_err() || chunk.is_empty() {
                return;
            }
            let mut left = len;
            while left > 0 {
                let n = (chunk.len() as u64).min(left) as usize;
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
        }
        HostileSource::Trickle { body, every } => {
            if s.write_all(head(body.len() as u64).as_bytes()).await.is_err() {
                return;
            }
            for b in body.iter() {
                tokio::time::sleep(every).await;
                if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
                    return;
                }
            }
        }
        HostileSource::RedirectLoop => {
            let n: u64 = target.rsplit_once("?n=").and_then(|(_, n)| n.parse().ok()).unwrap_or(0);
            let extra = format!("Location: /sources/{name}?n={}\r\n", n + 1);
            write_response(s, "302 Found", "text/plain", &extra, b"", Delivery::Normal).await;
        }
        HostileSource::RedirectTo(location) => {
            let extra = format!("Location: {location}\r\n");
            write_response(s, "302 Found", "text/plain", &extra, b"", Delivery::Normal).await;
        }
        HostileSource::DieMidBody { body, sent } => {
            let _ = s.write_all(head(body.len() as u64).as_bytes()).await;
            let _ = s.write_all(&body[..sent.min(body.len())]).await;
        }
    }
    let _ = s.flush().await;
}

/// Serves the judge and the sources on one plain-HTTP listener (and the judge over TLS).
pub async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(shared: Arc<Shared>, mut s: S, peer: SocketAddr) {
    let mut buf = Vec::new();
    let Some(req) = read_request(&mut s, &mut buf).await else {
        return;
    };
    if req.target == "/farm/killed" {
        let body = shared.killed_list();
        write_response(&mut s, "200 OK", "text/plain", "", body.as_bytes(), Delivery::Normal).await;
        return;
    }
    if let Some(path) = req.target.strip_prefix("/sources/") {
        let name = path.split_once('?').map_or(path, |(n, _)| n);
        *shared.source_hits.lock().expect("hits").entry(name.to_string()).or_default() += 1;
        let hostile = shared.hostile.lock().expect("hostile").get(name).cloned();
        if let Some(h) = hostile {
            serve_hostile(&mut s, name, &req.target, h).await;
            return;
        }
        let gate = shared.gates.lock().expect("gates").get(name).cloned();
        if let Some(gate) = gate {
            // Closed when the gate opens: the acquire fails and the request goes on.
            let _ = gate.acquire().await;
        }
        let src = shared.sources.lock().expect("sources").get(name).cloned();
        match src {
            None => {
                write_response(&mut s, "404 Not Found", "text/plain", "", b"no such source", Delivery::Normal).await
            }
            Some(src) => {
                tokio::time::sleep(src.delay).await;
                let status = match src.status {
                    200 => "200 OK".to_string(),
                    code => format!("{code} Error"),
                };
                if src.gzip {
                    use std::io::Write;
                    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    let _ = enc.write_all(&src.body);
                    let gz = enc.finish().unwrap_or_default();
                    write_response(&mut s, &status, "text/plain", "Content-Encoding: gzip\r\n", &gz, Delivery::Normal)
                        .await;
                } else {
                    write_response(&mut s, &status, "text/plain", "", &src.body, Delivery::Normal).await;
                }
            }
        }
        return;
    }
    answer_judge(&shared, &mut s, &req, &peer.ip().to_string(), Delivery::Normal, false).await;
}
