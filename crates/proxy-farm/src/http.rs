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

pub async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: &str,
    ctype: &str,
    extra: &str,
    body: &[u8],
    how: Delivery,
) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
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

/// The judge's echo: path (with the nonce), query arguments, headers, and the address the
/// request came from.
pub fn judge_body(req: &Request, origin: &str) -> Vec<u8> {
    let path = match req.target.find("://") {
        Some(i) => req.target[i + 3..].find('/').map_or("/".to_string(), |p| req.target[i + 3 + p..].to_string()),
        None => req.target.clone(),
    };
    let args: HashMap<&str, &str> = path
        .split_once('?')
        .map(|(_, q)| q.split('&').filter_map(|kv| kv.split_once('=')).collect())
        .unwrap_or_default();
    let headers: HashMap<&str, &str> = req.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    serde_json::to_vec(&serde_json::json!({ "args": args, "headers": headers, "origin": origin, "path": path }))
        .expect("json")
}

/// Answers a judge request (direct, or inline through a proxy) honouring judge-down.
pub async fn answer_judge<S: AsyncWrite + Unpin>(
    shared: &Shared,
    s: &mut S,
    req: &Request,
    origin: &str,
    how: Delivery,
) {
    shared.judge_hits.fetch_add(1, Ordering::Relaxed);
    if shared.judge_down.load(Ordering::Relaxed) {
        write_response(s, "503 Service Unavailable", "text/plain", "", b"judge down", Delivery::Normal).await;
        return;
    }
    let body = judge_body(req, origin);
    write_response(s, "200 OK", "application/json", "", &body, how).await;
}

/// A source list served by the farm.
#[derive(Clone)]
pub struct SourceBody {
    pub body: Arc<Vec<u8>>,
    pub status: u16,
    pub gzip: bool,
    pub delay: Duration,
}

/// Serves the judge and the sources on one plain-HTTP listener (and the judge over TLS).
pub async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(shared: Arc<Shared>, mut s: S, peer: SocketAddr) {
    let mut buf = Vec::new();
    let Some(req) = read_request(&mut s, &mut buf).await else {
        return;
    };
    if let Some(name) = req.target.strip_prefix("/sources/") {
        *shared.source_hits.lock().expect("hits").entry(name.to_string()).or_default() += 1;
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
    answer_judge(&shared, &mut s, &req, &peer.ip().to_string(), Delivery::Normal).await;
}
