//! One probe: dial one proxy, speak its protocol, fetch the judge through it, validate.
//!
//! This is the engine's hot path and is written by hand over `TcpStream` (see
//! docs/BENCHMARKS.md for why): one socket, one small buffer, no client object per proxy.
//! SOCKS handshakes use tokio-socks on our own connected socket, so the connect timeout
//! and the latency stay ours.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::Validation;
use super::http1::{self, Head};
use super::judge::Judge;
use super::reason::{Failure, Local, Reason};
use crate::proxy::Credentials;

/// A timer that fires this much after its deadline means our runtime is starved: the
/// timeout says nothing about the proxy.
const LATE_TIMER: Duration = Duration::from_millis(500);

/// What a probe measured on success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Success {
    /// From the start of the TCP connect to the end of the judge's response head.
    pub latency: Duration,
    pub connect: Duration,
}

/// Shared, immutable context for every probe of a run.
#[derive(Clone)]
pub struct Exchange {
    pub tls: TlsConnector,
    pub expect_status: u16,
    pub validation: Validation,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// Runs `fut` until `deadline`; on expiry fails with `on_timeout`, or with a local
/// failure if the timer fired late (an overloaded runtime, not a slow proxy).
pub async fn within<T>(
    deadline: Instant,
    on_timeout: Reason,
    fut: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(expired(deadline, on_timeout)),
    }
}

fn expired(deadline: Instant, reason: Reason) -> Failure {
    let late = Instant::now().saturating_duration_since(deadline);
    if late > LATE_TIMER {
        Failure::Local(Local(std::io::Error::other(format!("timer fired {late:?} late: runtime overloaded"))))
    } else {
        Failure::Dead(reason)
    }
}

/// A fresh, unguessable token for the judge URL.
pub fn nonce() -> String {
    format!("{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

/// Opens a TCP connection with its own timeout. Socket creation failures (EMFILE…) are
/// local, never a verdict.
pub async fn tcp_connect(addr: SocketAddr, ex: &Exchange, start: Instant) -> Result<(TcpStream, Duration), Failure> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
    let socket = socket.map_err(|e| Failure::Local(Local(e)))?;
    let _ = socket.set_nodelay(true);
    let deadline = start + ex.connect_timeout.min(ex.timeout);
    let stream =
        within(deadline, Reason::ConnectTimeout, async { socket.connect(addr).await.map_err(Failure::connect) })
            .await?;
    Ok((stream, start.elapsed()))
}

/// `connect-only`: alive when the TCP connect completes.
pub async fn connect_only(addr: SocketAddr, ex: &Exchange) -> Result<Success, Failure> {
    let start = Instant::now();
    let (_s, connect) = tcp_connect(addr, ex, start).await?;
    Ok(Success { latency: connect, connect })
}

async fn write(
    s: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    deadline: Instant,
    on_timeout: Reason,
) -> Result<(), Failure> {
    within(deadline, on_timeout, async { s.write_all(bytes).await.map_err(Failure::io) }).await
}

fn status(head: &Head, expect: u16) -> Result<(), Failure> {
    match head.status {
        s if s == expect => Ok(()),
        407 => Err(Reason::ProxyAuthFailed.into()),
        _ => Err(Reason::BadStatus.into()),
    }
}

impl Exchange {
    /// Checks status and body of a judge answer whose head is in `buf`.
    pub(crate) async fn validate<S: AsyncRead + Unpin>(
        &self,
        s: &mut S,
        buf: &mut Vec<u8>,
        head: Head,
        nonce: &str,
        deadline: Instant,
    ) -> Result<(), Failure> {
        match head.status {
            s if s == self.expect_status => {}
            _ => return Err(Reason::BadStatus.into()),
        }
        match &self.validation {
            Validation::None => Ok(()),
            Validation::Nonce => {
                let expect = http1::Expect::Echoed { name: super::judge::NONCE_PARAM, value: nonce.as_bytes() };
                http1::expect_in_body(s, buf, head, expect, deadline).await
            }
            Validation::Contains(text) => {
                http1::expect_in_body(s, buf, head, http1::Expect::Text(text.as_bytes()), deadline).await
            }
        }
    }

    /// HTTP forward proxy: absolute-URI GET of an `http://` judge.
    pub async fn forward(
        &self,
        addr: SocketAddr,
        creds: Option<&Credentials>,
        judge: &Judge,
    ) -> Result<Success, Failure> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let (mut s, connect) = tcp_connect(addr, self, start).await?;
        let nonce = nonce();
        write(&mut s, &judge.forward_request(Some(&nonce), creds), deadline, Reason::ProxyTimeout).await?;
        let mut buf = Vec::with_capacity(1024);
        let head = http1::read_head(&mut s, &mut buf, deadline, Reason::ProxyTimeout).await?;
        let latency = start.elapsed();
        status(&head, self.expect_status)?;
        self.validate(&mut s, &mut buf, head, &nonce, deadline).await?;
        Ok(Success { latency, connect })
    }

    /// HTTP CONNECT tunnel to the judge, then the request inside (TLS for `https://`).
    pub async fn tunnel(
        &self,
        addr: SocketAddr,
        creds: Option<&Credentials>,
        judge: &Judge,
    ) -> Result<Success, Failure> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let (mut s, connect) = tcp_connect(addr, self, start).await?;
        write(&mut s, &judge.connect_request(creds), deadline, Reason::ProxyTimeout).await?;
        let mut buf = Vec::with_capacity(1024);
        let head = http1::read_head(&mut s, &mut buf, deadline, Reason::ProxyTimeout).await?;
        match head.status {
            200..=299 => {}
            407 => return Err(Reason::ProxyAuthFailed.into()),
            _ => return Err(Reason::ProxyRejected.into()),
        }
        if buf.len() > head.len {
            // Bytes from "the judge" before we sent anything: not a tunnel.
            return Err(Reason::ProxyProtocolError.into());
        }
        buf.clear();
        let latency = self.through(s, judge, buf, deadline).await?;
        Ok(Success { latency: latency.duration_since(start), connect })
    }

    /// SOCKS4 or SOCKS5 handshake to the judge, then the request inside.
    pub async fn socks(
        &self,
        addr: SocketAddr,
        v5: bool,
        creds: Option<&Credentials>,
        judge: &Judge,
    ) -> Result<Success, Failure> {
        use tokio_socks::tcp::Socks5Stream;
        let start = Instant::now();
        let deadline = start + self.timeout;
        let (s, connect) = tcp_connect(addr, self, start).await?;
        let target = judge.addr;
        // Boxed: a handshake's state is only needed while it runs, and plain HTTP checks
        // should not carry its size.
        let stream = within(
            deadline,
            Reason::ProxyTimeout,
            Box::pin(async {
                if !v5 {
                    return socks4(s, judge, creds).await;
                }
                let r = match creds {
                    None => Socks5Stream::connect_with_socket(s, target).await,
                    Some(c) => {
                        Socks5Stream::connect_with_password_and_socket(s, target, &c.username, &c.password).await
                    }
                };
                r.map(Socks5Stream::into_inner).map_err(socks_failure)
            }),
        )
        .await?;
        let latency = self.through(stream, judge, Vec::with_capacity(1024), deadline).await?;
        Ok(Success { latency: latency.duration_since(start), connect })
    }

    /// Speaks to the judge over an established tunnel. Returns when the head arrived.
    async fn through(
        &self,
        s: TcpStream,
        judge: &Judge,
        mut buf: Vec<u8>,
        deadline: Instant,
    ) -> Result<Instant, Failure> {
        if judge.https {
            let handshake = async {
                self.tls.connect(judge.server_name(), s).await.map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                        Failure::Dead(Reason::ProxyClosed)
                    }
                    _ => Failure::Dead(Reason::TlsError),
                })
            };
            // Boxed: TLS state is large and only HTTPS judges need it.
            let mut tls = Box::new(within(deadline, Reason::Timeout, Box::pin(handshake)).await?);
            Box::pin(self.request(&mut *tls, judge, &mut buf, deadline)).await
        } else {
            let mut s = s;
            self.request(&mut s, judge, &mut buf, deadline).await
        }
    }

    async fn request<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut S,
        judge: &Judge,
        buf: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<Instant, Failure> {
        let nonce = nonce();
        write(s, &judge.origin_request(Some(&nonce)), deadline, Reason::Timeout).await?;
        let head = http1::read_head(s, buf, deadline, Reason::Timeout).await?;
        let at = Instant::now();
        self.validate(s, buf, head, &nonce, deadline).await?;
        Ok(at)
    }
}

/// SOCKS4 (SOCKS4a for a judge without an IPv4 address), written here rather than with
/// tokio-socks because servers in the wild answer with version byte 4 as often as the 0
/// the protocol asks for, and tokio-socks rejects the former: a working proxy must not be
/// judged dead for that.
async fn socks4(mut s: TcpStream, judge: &Judge, creds: Option<&Credentials>) -> Result<TcpStream, Failure> {
    use tokio::io::AsyncReadExt;
    let user = creds.map_or("", |c| c.username.as_str());
    let mut req = Vec::with_capacity(16 + user.len() + judge.host().len());
    req.extend_from_slice(&[4, 1]);
    req.extend_from_slice(&judge.addr.port().to_be_bytes());
    match judge.addr {
        SocketAddr::V4(v4) => req.extend_from_slice(&v4.ip().octets()),
        SocketAddr::V6(_) => req.extend_from_slice(&[0, 0, 0, 1]),
    }
    req.extend_from_slice(user.as_bytes());
    req.push(0);
    if judge.addr.is_ipv6() {
        req.extend_from_slice(judge.host().as_bytes());
        req.push(0);
    }
    s.write_all(&req).await.map_err(Failure::io)?;
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.map_err(Failure::io)?;
    socks4_reply(&reply).map(|()| s).map_err(Failure::Dead)
}

/// Interprets a SOCKS4 reply (version byte 0, or 4 as many servers send).
pub fn socks4_reply(reply: &[u8; 8]) -> Result<(), Reason> {
    match reply {
        [0 | 4, 0x5a, ..] => Ok(()),
        [0 | 4, 0x5b, ..] => Err(Reason::ProxyRejected),
        [0 | 4, 0x5c | 0x5d, ..] => Err(Reason::ProxyAuthFailed),
        _ => Err(Reason::ProxyProtocolError),
    }
}

/// Maps a tokio-socks error onto the closed set, by variant.
fn socks_failure(e: tokio_socks::Error) -> Failure {
    use tokio_socks::Error as E;
    Failure::Dead(match e {
        E::Io(io) => return Failure::io(io),
        E::NoAcceptableAuthMethods
        | E::PasswordAuthFailure(_)
        | E::AuthorizationRequired
        | E::IdentdAuthFailure
        | E::InvalidUserIdAuthFailure
        | E::InvalidAuthValues(_) => Reason::ProxyAuthFailed,
        E::GeneralSocksServerFailure
        | E::ConnectionNotAllowedByRuleset
        | E::NetworkUnreachable
        | E::HostUnreachable
        | E::ConnectionRefused
        | E::TtlExpired
        | E::CommandNotSupported
        | E::AddressTypeNotSupported
        | E::ProxyServerUnreachable
        | E::InvalidTargetAddress(_) => Reason::ProxyRejected,
        _ => Reason::ProxyProtocolError,
    })
}
