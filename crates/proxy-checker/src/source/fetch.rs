//! Fetching one source: an http(s) URL through one shared reqwest client, or a local file.
//!
//! Bodies are capped *after* gzip/deflate decoding, so a decompression bomb stops at the
//! cap. Transient failures (connect errors, timeouts, 5xx, 429) are retried with backoff.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{Location, SourceError};

/// How sources are fetched.
#[derive(Clone, Debug)]
pub struct FetchSettings {
    /// Whole-fetch deadline for one attempt.
    pub timeout: Duration,
    /// Cap on the decoded body.
    pub max_bytes: u64,
    /// Extra attempts after a transient failure.
    pub retries: u32,
    /// First backoff; doubles per attempt, with jitter.
    pub backoff: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), max_bytes: 32 << 20, retries: 2, backoff: Duration::from_millis(500) }
    }
}

/// Builds the one client every URL source shares.
pub fn client(tls: std::sync::Arc<rustls::ClientConfig>) -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .no_proxy()
        .user_agent(concat!("proxy-checker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| SourceError::Client(e.to_string()))
}

/// Fetches a source with retries; returns the body.
pub async fn fetch(client: &reqwest::Client, location: &Location, s: &FetchSettings) -> Result<Vec<u8>, SourceError> {
    let mut attempt = 0;
    loop {
        let result = match location {
            Location::Url(url) => match tokio::time::timeout(s.timeout, fetch_url(client, url, s.max_bytes)).await {
                Ok(r) => r,
                Err(_) => Err(SourceError::Timeout(s.timeout)),
            },
            Location::File(path) => read_file(path, s.max_bytes).await,
        };
        match result {
            Err(e) if e.is_transient() && attempt < s.retries => {
                let base = s.backoff.saturating_mul(1 << attempt.min(10));
                let jitter = base.mul_f64(fastrand::f64() * 0.5);
                tracing::debug!(source = %location, error = %e, attempt, "source fetch failed; retrying");
                tokio::time::sleep(base + jitter).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn fetch_url(client: &reqwest::Client, url: &url::Url, max: u64) -> Result<Vec<u8>, SourceError> {
    let mut resp = client.get(url.clone()).send().await.map_err(SourceError::from_reqwest)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(SourceError::Status(status.as_u16()));
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0).min(max).min(1 << 20) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(SourceError::from_reqwest)? {
        if body.len() as u64 + chunk.len() as u64 > max {
            return Err(SourceError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_file(path: &Path, max: u64) -> Result<Vec<u8>, SourceError> {
    let file = tokio::fs::File::open(path).await.map_err(|e| SourceError::Io(e.to_string()))?;
    let mut body = Vec::new();
    file.take(max + 1).read_to_end(&mut body).await.map_err(|e| SourceError::Io(e.to_string()))?;
    if body.len() as u64 > max {
        return Err(SourceError::TooLarge(max));
    }
    Ok(body)
}
