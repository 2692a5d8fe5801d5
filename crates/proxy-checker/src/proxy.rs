//! The proxy model: protocol, host, port and optional credentials.
//!
//! A [`Proxy`] is what a source line describes. It is small (the engine keeps one per
//! candidate in memory) and its `Display` never shows the password.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The protocol a proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// An HTTP forward proxy (absolute-URI GET).
    Http,
    /// An HTTP proxy that must support CONNECT tunnels.
    Https,
    /// SOCKS4 (and 4a).
    Socks4,
    /// SOCKS5 (RFC 1928), with user/password auth (RFC 1929).
    Socks5,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Self::Http, Self::Https, Self::Socks4, Self::Socks5];

    /// The scheme written in lists and in `scheme://host:port` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Socks4 => "socks4",
            Self::Socks5 => "socks5",
        }
    }

    /// The scheme a client must use in a proxy URL: what it speaks to the proxy. A list's
    /// `https` means an HTTP proxy that tunnels (CONNECT) — clients speak plain HTTP to
    /// it, and read `https://` as "TLS to the proxy" — so it is `http`.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Http | Self::Https => "http",
            Self::Socks4 => "socks4",
            Self::Socks5 => "socks5",
        }
    }

    /// HTTP and HTTPS proxies are the same kind of server; they differ only in what is
    /// asked of them. Deduplication treats them as one.
    pub fn is_http_family(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown protocol name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol `{0}` (allowed: http, https, socks4, socks4a, socks5, socks5h)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Ok(Self::Http),
            "https" | "connect" => Ok(Self::Https),
            "socks4" | "socks4a" => Ok(Self::Socks4),
            "socks5" | "socks5h" | "socks" => Ok(Self::Socks5),
            _ => Err(UnknownProtocol(s.to_string())),
        }
    }
}

/// Where a proxy lives: an IP literal or a hostname resolved once per round.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    Ip(IpAddr),
    Name(Arc<str>),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// User and password for a proxy. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// One proxy as described by a source.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Proxy {
    pub protocol: Protocol,
    pub host: Host,
    pub port: u16,
    /// Shared: lists often repeat one credential pair on thousands of lines.
    pub credentials: Option<Arc<Credentials>>,
}

impl Proxy {
    /// The deduplication key: protocol family, host, port and credentials.
    pub fn dedup_key(&self) -> DedupKey {
        DedupKey {
            family: if self.protocol.is_http_family() { Protocol::Http } else { self.protocol },
            host: self.host.clone(),
            port: self.port,
            credentials: self.credentials.clone(),
        }
    }
}

/// See [`Proxy::dedup_key`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DedupKey {
    family: Protocol,
    host: Host,
    port: u16,
    credentials: Option<Arc<Credentials>>,
}

/// `scheme://host:port` — never the credentials, which must not reach logs or API output.
impl fmt::Display for Proxy {
    /// The proxy's URL as a client takes it (see [`Protocol::scheme`]), without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.protocol.scheme(), self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_hides_credentials_and_brackets_v6() {
        let p = Proxy {
            protocol: Protocol::Socks5,
            host: Host::Ip("::1".parse().unwrap()),
            port: 1080,
            credentials: Some(Arc::new(Credentials { username: "u".into(), password: "secret".into() })),
        };
        assert_eq!(p.to_string(), "socks5://[::1]:1080");
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[test]
    fn http_and_https_share_a_dedup_key() {
        let mk = |protocol| Proxy { protocol, host: Host::Ip([1, 2, 3, 4].into()), port: 80, credentials: None };
        assert_eq!(mk(Protocol::Http).dedup_key(), mk(Protocol::Https).dedup_key());
        assert_ne!(mk(Protocol::Http).dedup_key(), mk(Protocol::Socks5).dedup_key());
    }

    #[test]
    fn protocol_names() {
        for (s, p) in [
            ("HTTP", Protocol::Http),
            ("socks5h", Protocol::Socks5),
            ("socks4a", Protocol::Socks4),
            ("https", Protocol::Https),
        ] {
            assert_eq!(s.parse::<Protocol>().unwrap(), p);
        }
        assert!("ftp".parse::<Protocol>().is_err());
    }
}
