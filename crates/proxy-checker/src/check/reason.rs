//! Why a check failed — a closed set — and how I/O errors map onto it.
//!
//! Classification uses error kinds and OS error numbers, never message text. Errors that
//! mean *we* are short of resources are not reasons at all: they are [`Local`] and the
//! check is requeued instead of judged.

use std::io;

/// Why a proxy was judged dead. `as_str()` is stable: metric label, `/stat` key, JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// TCP connect did not finish within the connect timeout.
    ConnectTimeout,
    /// The proxy's host answered the SYN with a reset.
    ConnectRefused,
    /// Any other connect failure (unreachable, reset during connect).
    ConnectError,
    /// Connected, but the proxy sent nothing within the check timeout.
    ProxyTimeout,
    /// The proxy closed the connection before a complete answer.
    ProxyClosed,
    /// The proxy answered with something that is not its protocol.
    ProxyProtocolError,
    /// The proxy wants credentials we do not have, or refused ours (407, SOCKS auth).
    ProxyAuthFailed,
    /// The proxy (SOCKS reply, CONNECT status) refused to reach the judge.
    ProxyRejected,
    /// TLS to the judge through the tunnel failed (bad certificate, garbage, MITM).
    TlsError,
    /// The judge answer had the wrong status.
    BadStatus,
    /// The judge answer did not contain what the judge returns (captive portal, cache).
    ContentMismatch,
    /// The proxy started answering but did not finish within the check timeout.
    Timeout,
    /// The check itself failed (a panic in our code): a bug to report, never the proxy's
    /// fault, but a verdict so that one proxy cannot stall a round.
    InternalError,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Self::ConnectTimeout,
        Self::ConnectRefused,
        Self::ConnectError,
        Self::ProxyTimeout,
        Self::ProxyClosed,
        Self::ProxyProtocolError,
        Self::ProxyAuthFailed,
        Self::ProxyRejected,
        Self::TlsError,
        Self::BadStatus,
        Self::ContentMismatch,
        Self::Timeout,
        Self::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectRefused => "connect_refused",
            Self::ConnectError => "connect_error",
            Self::ProxyTimeout => "proxy_timeout",
            Self::ProxyClosed => "proxy_closed",
            Self::ProxyProtocolError => "proxy_protocol_error",
            Self::ProxyAuthFailed => "proxy_auth_failed",
            Self::ProxyRejected => "proxy_rejected",
            Self::TlsError => "tls_error",
            Self::BadStatus => "bad_status",
            Self::ContentMismatch => "content_mismatch",
            Self::Timeout => "timeout",
            Self::InternalError => "internal_error",
        }
    }

    /// One line for people: what the reason says about the proxy.
    pub fn explain(self) -> &'static str {
        match self {
            Self::ConnectTimeout => "no TCP answer in time: the host is down or drops us",
            Self::ConnectRefused => "nothing listens on that port any more",
            Self::ConnectError => "the connection failed (unreachable network or host)",
            Self::ProxyTimeout => "accepted the connection, then said nothing",
            Self::ProxyClosed => "hung up before a complete answer",
            Self::ProxyProtocolError => "answered, but not in its protocol (or with broken framing)",
            Self::ProxyAuthFailed => "wants credentials we lack, or refused ours",
            Self::ProxyRejected => "refused to reach the judge (CONNECT status, SOCKS reply)",
            Self::TlsError => "TLS to the judge failed through it (garbage, or a certificate not the judge's)",
            Self::BadStatus => "the judge's answer came back with the wrong status (a redirect, an error page)",
            Self::ContentMismatch => "a 200 that is not the judge's answer: a captive portal, a cache, an ad page",
            Self::Timeout => "started answering, too slowly to finish in time",
            Self::InternalError => "our check failed on this proxy: a bug, please report it",
        }
    }

    /// Worth another attempt: timeouts and resets. Never auth failures or wrong content.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout | Self::ConnectError | Self::ProxyTimeout | Self::ProxyClosed | Self::Timeout
        )
    }

    /// The failure happened after the proxy connected, where an unreachable judge would
    /// look the same. Such verdicts are held until a direct judge probe clears the judge.
    pub fn may_be_judge(self) -> bool {
        matches!(
            self,
            Self::ProxyTimeout
                | Self::ProxyClosed
                | Self::ProxyRejected
                | Self::BadStatus
                | Self::ContentMismatch
                | Self::Timeout
        )
    }

    /// Whether the proxy's host never accepted a TCP connection. Such a proxy is not
    /// dialed again for its second capability in the same attempt.
    pub fn is_connect_failure(self) -> bool {
        matches!(self, Self::ConnectTimeout | Self::ConnectRefused | Self::ConnectError)
    }

    /// Whether the failure used up the attempt's deadline: the proxy's other capability
    /// is not tried in the same attempt (one timeout per attempt, not one per test).
    pub fn spent_the_deadline(self) -> bool {
        matches!(self, Self::ConnectTimeout | Self::ProxyTimeout | Self::Timeout)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure on our side (fd, port or buffer exhaustion, an overloaded runtime). It says
/// nothing about the proxy.
#[derive(Debug)]
pub struct Local(pub io::Error);

/// Whether an I/O error means we ran out of something.
pub fn is_local(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL | libc::EAGAIN)
    )
}

/// Outcome of one failed step of a probe.
#[derive(Debug)]
pub enum Failure {
    Dead(Reason),
    Local(Local),
    /// The proxy answered in another protocol's bytes (a SOCKS reply to an HTTP request,
    /// an HTTP status line to a SOCKS greeting): the list mislabelled it. Without protocol
    /// detection this counts as [`Reason::ProxyProtocolError`].
    Speaks(crate::proxy::Protocol),
}

/// The protocol the first bytes of an answer are in, if they are clearly another
/// protocol's: an HTTP status line (or its first two bytes), a SOCKS5 method reply, a
/// SOCKS4 reply.
pub fn sniff(first: &[u8]) -> Option<crate::proxy::Protocol> {
    use crate::proxy::Protocol;
    // A SOCKS client may have read only two bytes of a status line (`HT`).
    let http_prefix = first.get(..first.len().min(5)).is_some_and(|p| p.len() >= 2 && b"HTTP/".starts_with(p));
    match first {
        _ if http_prefix => Some(Protocol::Http),
        [5, 0 | 1 | 2 | 0xff, ..] => Some(Protocol::Socks5),
        [0, 0x5a..=0x5d, ..] => Some(Protocol::Socks4),
        _ => None,
    }
}

impl From<Reason> for Failure {
    fn from(r: Reason) -> Self {
        Failure::Dead(r)
    }
}

impl Failure {
    /// Classifies an error of the TCP connect.
    pub fn connect(e: io::Error) -> Self {
        if is_local(&e) {
            return Failure::Local(Local(e));
        }
        Failure::Dead(match e.kind() {
            io::ErrorKind::ConnectionRefused => Reason::ConnectRefused,
            io::ErrorKind::TimedOut => Reason::ConnectTimeout,
            _ => Reason::ConnectError,
        })
    }

    /// Classifies an error while talking to a connected proxy.
    pub fn io(e: io::Error) -> Self {
        if is_local(&e) {
            return Failure::Local(Local(e));
        }
        Failure::Dead(match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Reason::ProxyClosed,
            io::ErrorKind::TimedOut => Reason::Timeout,
            io::ErrorKind::InvalidData => Reason::ProxyProtocolError,
            _ => Reason::ProxyClosed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::sniff;
    use crate::proxy::Protocol;

    #[test]
    fn another_protocols_first_bytes() {
        assert_eq!(sniff(b"HTTP/1.1 400 Bad Request"), Some(Protocol::Http));
        assert_eq!(sniff(b"HT"), Some(Protocol::Http), "all a SOCKS5 client reads of it");
        assert_eq!(sniff(&[5, 0xff]), Some(Protocol::Socks5));
        assert_eq!(sniff(&[0, 0x5b, 0, 0, 0, 0, 0, 0]), Some(Protocol::Socks4));
        for other in [&b"H"[..], b"HX", b"", &[5, 7], &[0, 0x10], &[0x16, 3, 1], b"220 ftp"] {
            assert_eq!(sniff(other), None, "{other:?}");
        }
    }

    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let names: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn resource_errors_are_local() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::EADDRNOTAVAIL] {
            assert!(matches!(Failure::connect(io::Error::from_raw_os_error(errno)), Failure::Local(_)), "{errno}");
        }
        assert!(matches!(
            Failure::connect(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            Failure::Dead(Reason::ConnectRefused)
        ));
        assert!(matches!(
            Failure::connect(io::Error::from_raw_os_error(libc::EHOSTUNREACH)),
            Failure::Dead(Reason::ConnectError)
        ));
    }

    #[test]
    fn retry_policy() {
        assert!(Reason::ConnectTimeout.is_transient());
        assert!(Reason::ProxyClosed.is_transient());
        assert!(!Reason::ProxyAuthFailed.is_transient());
        assert!(!Reason::ContentMismatch.is_transient());
        assert!(!Reason::ConnectRefused.is_transient());
    }
}
