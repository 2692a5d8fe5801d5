//! `raw-loop`: the floor the check engine is measured against. For each proxy of a list
//! it does the same exchanges as a full-http check of an HTTP proxy — an absolute-URI GET,
//! then (with `--tunnel`) a CONNECT and a GET inside, on a second connection or (with
//! `--keep-alive` too) on the first — with nothing else: no validation, no retries, no
//! classification, no verdicts. Prints one JSON line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
struct Args {
    /// Proxy list, one `http://ip:port` (or `ip:port`) per line.
    #[arg(long)]
    list: std::path::PathBuf,
    /// Judge authority, `127.0.0.1:PORT`.
    #[arg(long)]
    judge: String,
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Also open a CONNECT tunnel and fetch through it, as a full check of an HTTP proxy does.
    #[arg(long)]
    tunnel: bool,
    /// With `--tunnel`: the CONNECT goes on the GET's connection (HTTP/1.1 keep-alive).
    #[arg(long)]
    keep_alive: bool,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

async fn exchange(addr: SocketAddr, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    buf.clear();
    s.read_to_end(buf).await?;
    Ok(())
}

async fn tunnel(addr: SocketAddr, connect: &[u8], inner: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(connect).await?;
    buf.clear();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    s.write_all(inner).await?;
    buf.clear();
    s.read_to_end(buf).await?;
    Ok(())
}

/// Reads one answer delimited by its `Content-Length` (0 when it has none) into `buf`.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// The GET, then the CONNECT and the GET inside, all on one connection.
async fn kept(addr: SocketAddr, get: &[u8], connect: &[u8], inner: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(get).await?;
    read_answer(&mut s, buf).await?;
    s.write_all(connect).await?;
    read_answer(&mut s, buf).await?;
    s.write_all(inner).await?;
    buf.clear();
    s.read_to_end(buf).await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let text = std::fs::read_to_string(&args.list)?;
    let addrs: Vec<SocketAddr> =
        text.lines().filter_map(|l| l.trim().rsplit("://").next()).filter_map(|a| a.parse().ok()).collect();
    let judge = args.judge.clone();
    let forward = Arc::new(
        format!("GET http://{judge}/get?x=1 HTTP/1.1\r\nHost: {judge}\r\nConnection: close\r\n\r\n").into_bytes(),
    );
    let forward_kept = Arc::new(format!("GET http://{judge}/get?x=1 HTTP/1.1\r\nHost: {judge}\r\n\r\n").into_bytes());
    let connect = Arc::new(format!("CONNECT {judge} HTTP/1.1\r\nHost: {judge}\r\n\r\n").into_bytes());
    let inner = Arc::new(format!("GET /get?x=1 HTTP/1.1\r\nHost: {judge}\r\nConnection: close\r\n\r\n").into_bytes());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?;
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let sem = Arc::new(Semaphore::new(args.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for addr in addrs.iter().copied() {
            let permit = sem.clone().acquire_owned().await?;
            let (forward, connect, inner, ok) = (forward.clone(), connect.clone(), inner.clone(), ok.clone());
            let forward_kept = forward_kept.clone();
            let (with_tunnel, keep_alive) = (args.tunnel, args.keep_alive);
            tasks.spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let good = match (with_tunnel, keep_alive) {
                    (true, true) => kept(addr, &forward_kept, &connect, &inner, &mut buf).await.is_ok(),
                    (true, false) => {
                        exchange(addr, &forward, &mut buf).await.is_ok()
                            && tunnel(addr, &connect, &inner, &mut buf).await.is_ok()
                    }
                    (false, _) => exchange(addr, &forward, &mut buf).await.is_ok(),
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        anyhow::Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "proxies": addrs.len(), "ok": ok.load(Ordering::Relaxed), "secs": secs,
            "per_sec": addrs.len() as f64 / secs, "tunnel": args.tunnel, "keep_alive": args.keep_alive,
            "concurrency": args.concurrency,
        })
    );
    Ok(())
}
