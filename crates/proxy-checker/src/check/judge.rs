//! Judges: the URLs fetched through each proxy, resolved once per run, and the request
//! bytes sent to them (with a fresh nonce). The direct health probe lives in `probe`.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::ServerName;

use crate::proxy::Credentials;

/// How long a judge's name may take to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The query parameter carrying the nonce.
pub const NONCE_PARAM: &str = "pc_nonce";

/// Why a judge cannot be used. URLs are shown redacted; causes are kept as `source()`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JudgeError {
    #[error("judge URL `{0}`: only http:// and https:// judges are supported")]
    Scheme(String),
    #[error("judge URL `{0}` has no host")]
    NoHost(String),
    #[error("judge `{url}`: host does not resolve")]
    Resolve {
        url: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("judge `{url}`: host does not resolve: no answer in {after:?}")]
    ResolveTimeout { url: String, after: std::time::Duration },
    #[error("judge `{url}` is down: {reason}")]
    Down { url: String, reason: String },
    /// The judge answers, but echoes neither nonce in a form the checker can verify.
    #[error(
        "judge `{url}` does not echo the request in a form the checker can verify (the `pc_nonce` query \
         parameter as a JSON member, a JSON string or a `KEY = value` line, or the `X-Pc-Nonce` header); \
         its answer starts: `{answer}`. For a judge like this, set `checker.validation` to `contains` with \
         `checker.expect_body`"
    )]
    Uncalibrated { url: String, answer: String },
    /// Probing the judge kept failing on our side (no free descriptor or port).
    #[error("judge `{url}` could not be probed: local error")]
    Local {
        url: String,
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// A judge URL, resolved.
#[derive(Debug)]
pub struct Judge {
    pub url: url::Url,
    /// The URL as it may be shown (logs, errors, `/stat`): no user part or query values.
    pub shown: String,
    pub https: bool,
    pub addr: SocketAddr,
    /// `host[:port]` as written in `Host` and `CONNECT`.
    authority: String,
    connect_target: String,
    /// Path and query, without the nonce.
    target: String,
    server_name: ServerName<'static>,
    /// Host without brackets, as resolved.
    host: String,
    /// Where this judge echoes the nonce, learned before the run's checks (`None` before
    /// calibration, and with `contains`/`none` validation: the nonce then goes in the
    /// query, unchecked).
    pub calibration: Option<super::echo::Calibration>,
}

impl Judge {
    /// Parses and resolves a judge URL (once per run).
    pub async fn resolve(url: &url::Url) -> Result<Self, JudgeError> {
        let shown = crate::redact::redacted(url);
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(JudgeError::Scheme(shown.clone())),
        };
        let host = url.host_str().ok_or_else(|| JudgeError::NoHost(shown.clone()))?;
        let port = url.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)));
        let addr = lookup
            .await
            .map_err(|_| JudgeError::ResolveTimeout { url: shown.clone(), after: RESOLVE_TIMEOUT })?
            .map_err(|e| JudgeError::Resolve { url: shown.clone(), source: Arc::new(e) })?
            .next()
            .ok_or_else(|| JudgeError::Resolve {
                url: shown.clone(),
                source: Arc::new(std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses")),
            })?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let connect_target = format!("{host}:{port}");
        let mut target = url.path().to_string();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let server_name = ServerName::try_from(bare.to_string()).map_err(|_| JudgeError::NoHost(shown.clone()))?;
        Ok(Self {
            url: url.clone(),
            shown,
            https,
            addr,
            authority,
            connect_target,
            target,
            server_name,
            host: bare.to_string(),
            calibration: None,
        })
    }

    /// The host as written in the URL, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }

    /// `host:port` for CONNECT (the port is always written).
    pub fn connect_authority(&self) -> &str {
        &self.connect_target
    }

    /// Where a check's nonce goes — `(query, header)`: the header when the judge echoes it
    /// (the URL then holds nothing a proxy could forge an answer from), else the query.
    fn split<'n>(&self, nonce: Option<&'n str>) -> (Option<&'n str>, Option<&'n str>) {
        match self.calibration.as_ref().map(|c| c.carrier) {
            Some(super::echo::Carrier::Header) => (None, nonce),
            _ => (nonce, None),
        }
    }

    fn push_target(&self, out: &mut Vec<u8>, query_nonce: Option<&str>) {
        out.extend_from_slice(self.target.as_bytes());
        if let Some(n) = query_nonce {
            out.push(if self.target.contains('?') { b'&' } else { b'?' });
            out.extend_from_slice(NONCE_PARAM.as_bytes());
            out.push(b'=');
            out.extend_from_slice(n.as_bytes());
        }
    }

    /// The request line's end and the common headers. `close`: ask for the connection to
    /// end with the answer; else say nothing (HTTP/1.1 persists), never `Proxy-Connection`,
    /// which judges echo and which tells a site a proxy is in between.
    fn push_common(&self, out: &mut Vec<u8>, header_nonce: Option<&str>, close: bool) {
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.authority.as_bytes());
        out.extend_from_slice(
            concat!("\r\nUser-Agent: proxy-checker/", env!("CARGO_PKG_VERSION"), "\r\nAccept: */*\r\n").as_bytes(),
        );
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if let Some(n) = header_nonce {
            out.extend_from_slice(super::echo::NONCE_HEADER.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// A request in origin form, for a tunnel or a direct probe.
    pub fn origin_request(&self, nonce: Option<&str>) -> Vec<u8> {
        let (query, header) = self.split(nonce);
        let mut out = Vec::with_capacity(192);
        out.extend_from_slice(b"GET ");
        self.push_target(&mut out, query);
        self.push_common(&mut out, header, true);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The calibration request: one nonce in the query, another in the header.
    pub fn calibration_request(&self, query_nonce: &str, header_nonce: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(224);
        out.extend_from_slice(b"GET ");
        self.push_target(&mut out, Some(query_nonce));
        self.push_common(&mut out, Some(header_nonce), true);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A request in absolute form, for an HTTP forward proxy. `keep_alive`: the
    /// connection is wanted for a CONNECT after the answer.
    pub fn forward_request(&self, nonce: Option<&str>, creds: Option<&Credentials>, keep_alive: bool) -> Vec<u8> {
        let (query, header) = self.split(nonce);
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"GET http://");
        out.extend_from_slice(self.authority.as_bytes());
        self.push_target(&mut out, query);
        self.push_common(&mut out, header, !keep_alive);
        push_proxy_auth(&mut out, creds);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A CONNECT request to the judge.
    pub fn connect_request(&self, creds: Option<&Credentials>) -> Vec<u8> {
        let authority = self.connect_target.as_str();
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"CONNECT ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
        push_proxy_auth(&mut out, creds);
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A fresh, unguessable token for the judge URL.
pub fn nonce() -> String {
    format!("{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

fn push_proxy_auth(out: &mut Vec<u8>, creds: Option<&Credentials>) {
    if let Some(c) = creds {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
        out.extend_from_slice(b"Proxy-Authorization: Basic ");
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A judge that echoes headers gets the nonce in the header only: the URL a forward
    /// proxy sees holds nothing to forge an answer from.
    #[tokio::test]
    async fn the_nonce_stays_out_of_the_url_for_a_header_echo_judge() {
        use crate::check::echo::{Calibration, Carrier, Place};
        let mut j = Judge::resolve(&"http://127.0.0.1:8080/get".parse().unwrap()).await.unwrap();
        let cal = String::from_utf8(j.calibration_request("Q1", "H1")).unwrap();
        assert!(
            cal.starts_with("GET /get?pc_nonce=Q1 HTTP/1.1\r\n") && cal.contains("\r\nX-Pc-Nonce: H1\r\n"),
            "{cal}"
        );
        j.calibration = Some(Calibration {
            carrier: Carrier::Header,
            place: Place::JsonMember { key: b"X-Pc-Nonce".to_vec() },
            own_ip: None,
            baseline: Vec::new(),
        });
        let fwd = String::from_utf8(j.forward_request(Some("N1"), None, false)).unwrap();
        assert!(
            fwd.starts_with("GET http://127.0.0.1:8080/get HTTP/1.1\r\n") && fwd.contains("X-Pc-Nonce: N1\r\n"),
            "{fwd}"
        );
        assert!(!fwd.contains("pc_nonce"), "{fwd}");
        let origin = String::from_utf8(j.origin_request(Some("N2"))).unwrap();
        assert!(origin.starts_with("GET /get HTTP/1.1") && origin.contains("X-Pc-Nonce: N2"), "{origin}");
        j.calibration = Some(Calibration {
            carrier: Carrier::Query,
            place: Place::JsonMember { key: b"pc_nonce".to_vec() },
            own_ip: None,
            baseline: Vec::new(),
        });
        let fwd = String::from_utf8(j.forward_request(Some("N3"), None, false)).unwrap();
        assert!(fwd.contains("/get?pc_nonce=N3 ") && !fwd.contains("X-Pc-Nonce"), "{fwd}");
    }

    #[tokio::test]
    async fn requests() {
        let j = Judge::resolve(&"http://127.0.0.1:8080/get?a=1".parse().unwrap()).await.unwrap();
        let creds = Credentials { username: "u".into(), password: "p".into() };
        let fwd = String::from_utf8(j.forward_request(Some("N1"), Some(&creds), false)).unwrap();
        assert!(
            fwd.starts_with("GET http://127.0.0.1:8080/get?a=1&pc_nonce=N1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
            "{fwd}"
        );
        assert!(fwd.contains("Proxy-Authorization: Basic dTpw\r\n") && fwd.ends_with("\r\n\r\n"));
        assert!(fwd.contains("\r\nConnection: close\r\n"), "{fwd}");
        // Kept for a CONNECT: nothing said (HTTP/1.1 persists), and never a header a judge
        // would echo as a proxy's.
        let kept = String::from_utf8(j.forward_request(Some("N1"), None, true)).unwrap();
        assert!(!kept.to_ascii_lowercase().contains("connection:"), "{kept}");
        let c = String::from_utf8(j.connect_request(None)).unwrap();
        assert!(c.starts_with("CONNECT 127.0.0.1:8080 HTTP/1.1\r\n"), "{c}");
        let j = Judge::resolve(&"https://localhost/".parse().unwrap()).await.unwrap();
        assert_eq!(j.connect_authority(), "localhost:443");
        assert!(
            String::from_utf8(j.origin_request(Some("x")))
                .unwrap()
                .starts_with("GET /?pc_nonce=x HTTP/1.1\r\nHost: localhost\r\n")
        );
        let j = Judge::resolve(&"http://[::1]:81/".parse().unwrap()).await.unwrap();
        assert_eq!(j.connect_authority(), "[::1]:81");
    }
}
