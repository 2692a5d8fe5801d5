//! Fetching one source: an http(s) URL through one shared reqwest client, or a local file.
//!
//! Bodies are capped *after* gzip/deflate decoding, so a decompression bomb stops at the
//! cap. Transient failures (connect errors, timeouts, 5xx, 429) are retried with backoff.
//!
//! The SSRF guard: unless `allow_private` is set, a URL source may not reach loopback,
//! private, link-local or unroutable addresses — not by an IP literal, not by a hostname
//! that resolves there (the client's resolver drops such addresses), not by a redirect.
//! Redirects are followed at most [`MAX_REDIRECTS`] times (reqwest itself never follows one
//! to a scheme other than http(s): the redirect answer is returned, an error status).

// Bytes from the network and from lists meet no unchecked arithmetic or indexing here.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{Location, SourceError};
use crate::guard;

/// Redirect hops followed before a source fails with [`SourceError::Redirects`].
pub const MAX_REDIRECTS: usize = 5;
/// The client's TCP/TLS connect deadline (the whole fetch has `FetchSettings::timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Candidates one source may list; a longer list fails with [`SourceError::TooManyProxies`].
    pub max_proxies: usize,
    /// Whether URL sources may be on loopback/private/link-local addresses (SSRF guard off).
    pub allow_private: bool,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_bytes: 32 << 20,
            retries: 2,
            backoff: Duration::from_millis(500),
            max_proxies: 500_000,
            allow_private: false,
        }
    }
}

/// Builds the one client every URL source shares. With `allow_private` off, the client
/// never connects to an address the [`guard`] calls private or unroutable.
pub fn client(tls: Arc<rustls::ClientConfig>, allow_private: bool) -> Result<reqwest::Client, SourceError> {
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(TooManyRedirects);
        }
        match literal_blocked(attempt.url(), allow_private) {
            Some(e) => attempt.error(e),
            None => attempt.follow(),
        }
    });
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .no_proxy()
        .user_agent(concat!("proxy-checker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(redirects)
        .dns_resolver(GuardedResolver { allow_private })
        .build()
        .map_err(|e| SourceError::Client(e.to_string()))
}

/// A source URL aimed at an address the guard refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BlockedTarget(String);

#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct TooManyRedirects;

fn blocked_message(what: &str, ip: IpAddr) -> String {
    match guard::classify(ip) {
        Some((guard::Blocked::Private, why)) => {
            format!("{what} is {ip}, a private address ({why}; set aggregation.allow_private_sources to fetch it)")
        }
        Some((_, why)) => format!("{what} is {ip}, which is never fetched ({why})"),
        None => format!("{what} is {ip}"),
    }
}

/// The guard's verdict on a URL whose host is an IP literal (hostnames go through
/// [`GuardedResolver`]).
fn literal_blocked(url: &url::Url, allow_private: bool) -> Option<BlockedTarget> {
    let ip = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    guard::check(ip, allow_private).err().map(|_| BlockedTarget(blocked_message("the host", ip)))
}

/// The system resolver, minus the addresses the guard refuses. A name that resolves only
/// to refused addresses fails with [`BlockedTarget`].
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                all.iter().copied().filter(|a| guard::check(a.ip(), allow_private).is_ok()).collect();
            match (allowed.is_empty(), all.first()) {
                (true, Some(first)) => {
                    Err(Box::new(BlockedTarget(blocked_message(&format!("`{host}` resolves to"), first.ip()))) as _)
                }
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// Fetches a source with retries; returns the body and the attempts made. `shown` is the
/// source as logs may name it (its name, or its redacted URL).
pub async fn fetch(
    client: &reqwest::Client,
    location: &Location,
    shown: &str,
    s: &FetchSettings,
) -> (Result<Vec<u8>, SourceError>, u32) {
    let mut attempt: u32 = 0;
    loop {
        let result = match location {
            Location::Url(url) => match tokio::time::timeout(s.timeout, fetch_url(client, url, s)).await {
                Ok(r) => r,
                Err(_) => Err(SourceError::Timeout(s.timeout)),
            },
            Location::File(path) => read_file(path, s.max_bytes).await,
        };
        match result {
            Err(e) if e.is_transient() && attempt < s.retries => {
                let base = s.backoff.saturating_mul(1 << attempt.min(10));
                let jitter = base.mul_f64(fastrand::f64() * 0.5);
                tracing::debug!(source = shown, error = %e, attempt, "source fetch failed; retrying");
                tokio::time::sleep(base.saturating_add(jitter)).await;
                attempt = attempt.saturating_add(1);
            }
            other => return (other, attempt.saturating_add(1)),
        }
    }
}

async fn fetch_url(client: &reqwest::Client, url: &url::Url, s: &FetchSettings) -> Result<Vec<u8>, SourceError> {
    if let Some(blocked) = literal_blocked(url, s.allow_private) {
        return Err(SourceError::Blocked(blocked.0));
    }
    let max = s.max_bytes;
    let mut resp = client.get(url.clone()).send().await.map_err(classify)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(SourceError::Status(status.as_u16()));
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0).min(max).min(1 << 20) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if (body.len() as u64).saturating_add(chunk.len() as u64) > max {
            return Err(SourceError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Classifies a reqwest error, finding our own guard and redirect errors in its chain.
pub(super) fn classify(e: reqwest::Error) -> SourceError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cur {
        if let Some(b) = c.downcast_ref::<BlockedTarget>() {
            return SourceError::Blocked(b.0.clone());
        }
        if c.downcast_ref::<TooManyRedirects>().is_some() {
            return SourceError::Redirects(MAX_REDIRECTS);
        }
        cur = c.source();
    }
    if e.is_redirect() {
        return SourceError::Redirects(MAX_REDIRECTS);
    }
    SourceError::from_reqwest(e)
}

/// Where a body stops looking like text: a NUL byte or a run of control bytes in its
/// first 64 KiB. Proxy lists are text (lines, HTML or JSON); a binary body is an error,
/// not 10 MB of rejected "lines".
pub fn binary_offset(body: &[u8]) -> Option<usize> {
    let head = body.get(..64 << 10).unwrap_or(body);
    if let Some(i) = head.iter().position(|&b| b == 0) {
        return Some(i);
    }
    let control = |b: u8| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c);
    let bad = head.iter().filter(|&&b| control(b)).count();
    // A few stray control bytes happen in scraped pages; one in 32 does not.
    if bad.saturating_mul(32) > head.len().max(32) {
        return head.iter().position(|&b| control(b));
    }
    None
}

async fn read_file(path: &Path, max: u64) -> Result<Vec<u8>, SourceError> {
    // A missing or unreadable file stays so: no retry, a clear error.
    let file = tokio::fs::File::open(path).await.map_err(|e| SourceError::File(e.to_string()))?;
    let mut body = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut body).await.map_err(|e| SourceError::File(e.to_string()))?;
    if body.len() as u64 > max {
        return Err(SourceError::TooLarge(max));
    }
    Ok(body)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;
    use std::str::FromStr;

    #[test]
    fn ip_literals_are_guarded() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        for private in ["http://127.0.0.1/x", "http://10.1.2.3/", "http://[::1]:8080/", "http://[::ffff:10.0.0.1]/"] {
            assert!(literal_blocked(&url(private), false).is_some(), "{private}");
            assert!(literal_blocked(&url(private), true).is_none(), "{private}");
        }
        for never in
            ["http://0.0.0.0/", "http://169.254.169.254/latest", "http://[fd00:ec2::254]/", "http://192.0.2.1/"]
        {
            let e = literal_blocked(&url(never), true).unwrap_or_else(|| panic!("{never}: refused even when allowed"));
            assert!(e.0.contains("never fetched"), "{never}: {}", e.0);
        }
        assert!(literal_blocked(&url("http://1.1.1.1/"), false).is_none());
        assert!(literal_blocked(&url("http://example.com/"), false).is_none(), "names go through the resolver");
    }

    #[tokio::test]
    async fn the_resolver_drops_private_addresses() {
        let name = |s: &str| reqwest::dns::Name::from_str(s).unwrap();
        let strict = GuardedResolver { allow_private: false };
        let err = strict.resolve(name("localhost")).await.err().expect("localhost is refused");
        assert!(err.to_string().contains("`localhost` resolves to"), "{err}");
        let relaxed = GuardedResolver { allow_private: true };
        let addrs: Vec<_> = relaxed.resolve(name("localhost")).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    #[test]
    fn binary_bodies_are_recognised() {
        assert_eq!(binary_offset(b"1.2.3.4:80\r\n5.6.7.8:80\t# ok\n"), None);
        assert_eq!(binary_offset(b"1.2.3.4:80\n\0junk"), Some(11));
        assert!(binary_offset(&[0x1f, 0x8b, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05]).is_some(), "gzip magic");
        assert_eq!(binary_offset(&[]), None);
        let mut scraped = b"<td>1.2.3.4</td>".repeat(20);
        scraped.push(0x07);
        assert_eq!(binary_offset(&scraped), None, "one stray control byte is tolerated");
    }
}
