//! One probe: dial one proxy, speak its protocol, fetch the judge through it, validate.
//!
//! This is the engine's hot path and is written by hand over `TcpStream` (see
//! docs/BENCHMARKS.md for why): one socket, one small buffer, no client object per proxy.
//! SOCKS handshakes use tokio-socks on our own connected socket, so the connect timeout
//! and the latency stay ours.

// Bytes from the network and from lists meet no unchecked arithmetic or indexing here.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::deadline::{expired, within};
use super::echo::{self, Calibration};
use super::http1::{self, Head};
use super::judge::{Judge, JudgeError, nonce};
use super::reason::{Failure, Local, Reason};
use super::stamp::{self, Mark, Stamped};
use super::{Echo, Validation};
use crate::proxy::Credentials;

/// What a probe measured on success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Success {
    /// From the start of the TCP connect to the arrival of the judge's response head, less
    /// the time the ball was in our court ([`stamp`]): what the proxy cost, not our
    /// queueing.
    pub latency: Duration,
    pub connect: Duration,
    /// What the judge's echo told (anonymity, exit address).
    pub echo: Echo,
}

/// Shared, immutable context for every probe of a run.
#[derive(Clone)]
pub struct Exchange {
    pub tls: TlsConnector,
    pub expect_status: u16,
    pub validation: Validation,
    pub connect_timeout: Duration,
    /// See [`super::CheckSettings::detect_protocol`].
    pub detect_protocol: bool,
}

/// Opens a TCP connection within the connect timeout (and the check's `deadline`), its
/// arrivals stamped. Returns it and the connect's duration as the kernel saw it (the
/// handshake's RTT; see [`stamp::connect_completed`]). Socket creation failures (EMFILE…)
/// are local, never a verdict.
pub fn tcp_connect(
    addr: SocketAddr,
    ex: &Exchange,
    start: Instant,
    deadline: Instant,
) -> impl Future<Output = Result<(Stamped, Duration), Failure>> {
    async move {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
        let socket = socket.map_err(|e| Failure::Local(Local(e)))?;
        let _ = socket.set_nodelay(true);
        let deadline = start.checked_add(ex.connect_timeout).map_or(deadline, |d| d.min(deadline));
        let stream =
            within(deadline, Reason::ConnectTimeout, async { socket.connect(addr).await.map_err(Failure::connect) })
                .await?;
        let connected = stamp::connect_completed(&stream, start);
        Ok((Stamped::new(stream, connected), connected.saturating_duration_since(start)))
    }
}

/// `connect-only`: alive when the TCP connect completes.
pub fn connect_only(
    addr: SocketAddr,
    ex: &Exchange,
    deadline: Instant,
) -> impl Future<Output = Result<Success, Failure>> {
    async move {
        let start = Instant::now();
        let (_s, connect) = tcp_connect(addr, ex, start, deadline).await?;
        Ok(Success { latency: connect, connect, echo: Echo::default() })
    }
}

async fn write(
    s: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    deadline: Instant,
    on_timeout: Reason,
) -> Result<(), Failure> {
    within(deadline, on_timeout, async { s.write_all(bytes).await.map_err(Failure::io) }).await
}

/// A failed HTTP answer whose first bytes are another protocol's (a SOCKS server's reply
/// to our request): [`Failure::Speaks`] that protocol.
fn spoke(e: Failure, first: &[u8]) -> Failure {
    match (&e, super::reason::sniff(first)) {
        (Failure::Dead(Reason::ProxyProtocolError | Reason::ProxyClosed), Some(p)) if !p.is_http_family() => {
            Failure::Speaks(p)
        }
        _ => e,
    }
}

fn status(head: &Head, expect: u16) -> Result<(), Failure> {
    match head.status {
        s if s == expect => Ok(()),
        407 => Err(Reason::ProxyAuthFailed.into()),
        _ => Err(Reason::BadStatus.into()),
    }
}

/// What the probes ask of a stream besides reading and writing.
pub(crate) trait Arrivals {
    /// Where the last bytes arrived: the kernel's clock for a [`Stamped`] socket (also
    /// under TLS), unknown for a plain one.
    fn last_arrival(&self) -> Option<Instant>;

    /// Resolves when an answer is there to read, so a check waiting for a proxy holds no
    /// read buffer (thousands wait at once). At once where that cannot be told from the
    /// socket (TLS may hold what it read already).
    fn answer_ready(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl Arrivals for Stamped {
    fn last_arrival(&self) -> Option<Instant> {
        Stamped::last_arrival(self)
    }

    fn answer_ready(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        self.readable()
    }
}

impl Arrivals for TcpStream {
    fn last_arrival(&self) -> Option<Instant> {
        None
    }

    fn answer_ready(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

impl<T: Arrivals + Send + Sync> Arrivals for tokio_rustls::client::TlsStream<T> {
    fn last_arrival(&self) -> Option<Instant> {
        self.get_ref().0.last_arrival()
    }

    fn answer_ready(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Waits (within `deadline`, `silent` if nothing comes) until `s` has an answer to read,
/// then gives the read buffer: allocated only once there is something to read.
async fn answer_buffer<S: Arrivals>(s: &S, deadline: Instant, silent: Reason) -> Result<Vec<u8>, Failure> {
    within(deadline, silent, async { s.answer_ready().await.map_err(Failure::io) }).await?;
    Ok(Vec::with_capacity(1024))
}

/// A connection to an HTTP proxy kept after a forward test for the tunnel test's CONNECT:
/// one connection per proxy where the proxy allows it. Kept only when the forward answer
/// said the connection persists and its body ended exactly where its framing said (no
/// byte after it), so the next bytes on it are the CONNECT's answer.
pub struct Kept {
    /// Taken by a TLS exchange inside the tunnel.
    stream: Option<Stamped>,
    connect: Duration,
    /// The forward test's latency: how long this proxy takes to answer through itself.
    forward: Duration,
}

/// How long a kept connection may leave the CONNECT unanswered before the tunnel test
/// goes to a fresh one: twice the time the proxy took to answer the forward test (it has
/// to reach the judge either way) and a margin, at most half the time left.
fn reuse_wait(forward: Duration, left: Duration) -> Duration {
    forward.saturating_mul(2).saturating_add(Duration::from_millis(250)).min(left.checked_div(2).unwrap_or_default())
}

/// What a tunnel test on a kept connection came to.
pub enum Reused {
    /// The proxy answered the CONNECT with a 2xx there: the test's result.
    Done(Result<Success, Failure>),
    /// No tunnel on the kept connection: the test is owed a fresh one.
    Stale,
}

/// Sends a CONNECT to the judge over `s` and reads the proxy's answer; returns its head.
fn open_tunnel(
    s: &mut Stamped,
    creds: Option<&Credentials>,
    judge: &Judge,
    deadline: Instant,
) -> impl Future<Output = Result<Head, Failure>> {
    async move {
        write(s, &judge.connect_request(creds), deadline, Reason::ProxyTimeout).await?;
        let mut buf = answer_buffer(s, deadline, Reason::ProxyTimeout).await?;
        let head = http1::read_head(s, &mut buf, deadline, Reason::ProxyTimeout).await.map_err(|e| spoke(e, &buf))?;
        match head.status {
            200..=299 => {}
            407 => return Err(Reason::ProxyAuthFailed.into()),
            _ => return Err(Reason::ProxyRejected.into()),
        }
        if buf.len() > head.len {
            // Bytes from "the judge" before we sent anything: not a tunnel.
            return Err(Reason::ProxyProtocolError.into());
        }
        Ok(head)
    }
}

impl Exchange {
    /// Checks status and body of a judge answer whose head is in `buf`.
    pub(crate) async fn validate<S: AsyncRead + Unpin>(
        &self,
        s: &mut S,
        buf: &mut Vec<u8>,
        head: Head,
        judge: &Judge,
        nonce: &str,
        deadline: Instant,
    ) -> Result<(Echo, bool), Failure> {
        match head.status {
            s if s == self.expect_status => {}
            _ => return Err(Reason::BadStatus.into()),
        }
        // With it, whether the body ended cleanly (the connection may be used again).
        match (&self.validation, &judge.calibration) {
            (Validation::None, _) => Ok((Echo::default(), false)),
            // A calibrated judge: the whole (capped) answer, the nonce in its place, and
            // what the rest of the echo says about the proxy.
            (Validation::Nonce, Some(cal)) => {
                let body = http1::read_body(s, buf, head, ANSWER_CAP, deadline).await?;
                if !cal.place.found(&body.bytes, nonce.as_bytes()) {
                    // Cut short by the deadline: slow, not wrong (the rest might have held it).
                    return Err(if body.complete { Reason::ContentMismatch } else { Reason::Timeout }.into());
                }
                Ok((echo::assess(cal, &body.bytes), body.clean_end))
            }
            (Validation::Nonce, None) => {
                let expect = http1::Expect::Echoed { name: super::judge::NONCE_PARAM, value: nonce.as_bytes() };
                http1::expect_in_body(s, buf, head, expect, deadline).await.map(|clean| (Echo::default(), clean))
            }
            (Validation::Contains(text), _) => {
                http1::expect_in_body(s, buf, head, http1::Expect::Text(text.as_bytes()), deadline)
                    .await
                    .map(|clean| (Echo::default(), clean))
            }
        }
    }

    /// HTTP forward proxy: absolute-URI GET of an `http://` judge. `keep`: a tunnel test
    /// follows; the connection is asked to persist and, if the answer allows it (see
    /// [`Kept`]), returned for the CONNECT.
    pub fn forward(
        &self,
        addr: SocketAddr,
        creds: Option<&Credentials>,
        judge: &Judge,
        deadline: Instant,
        keep: bool,
    ) -> impl Future<Output = Result<(Success, Option<Kept>), Failure>> {
        async move {
            let start = Instant::now();
            let (mut s, connect) = tcp_connect(addr, self, start, deadline).await?;
            let nonce = nonce();
            write(&mut s, &judge.forward_request(Some(&nonce), creds, keep), deadline, Reason::ProxyTimeout).await?;
            let mut buf = answer_buffer(&s, deadline, Reason::ProxyTimeout).await?;
            let head =
                http1::read_head(&mut s, &mut buf, deadline, Reason::ProxyTimeout).await.map_err(|e| spoke(e, &buf))?;
            let latency = s.span(Mark::start(start), s.last_arrival().unwrap_or_else(Instant::now));
            status(&head, self.expect_status)?;
            // Boxed, as in `judge_exchange`: only while the answer is read.
            let (echo, clean_end) = Box::pin(self.validate(&mut s, &mut buf, head, judge, &nonce, deadline)).await?;
            let kept =
                (keep && clean_end && head.persistent).then_some(Kept { stream: Some(s), connect, forward: latency });
            Ok((Success { latency, connect, echo }, kept))
        }
    }

    /// HTTP CONNECT tunnel to the judge, then the request inside (TLS for `https://`).
    pub fn tunnel(
        &self,
        addr: SocketAddr,
        creds: Option<&Credentials>,
        judge: &Judge,
        deadline: Instant,
    ) -> impl Future<Output = Result<Success, Failure>> {
        async move {
            let start = Instant::now();
            // In an `Option` from the start, as `through` takes it: a second copy of the
            // stream would be kept across every wait (19,000 checks wait at once).
            let (mut s, connect) = tcp_connect(addr, self, start, deadline).await.map(|(s, c)| (Some(s), c))?;
            if let Some(s) = s.as_mut() {
                open_tunnel(s, creds, judge, deadline).await?;
            }
            let (latency, echo) = self.through(&mut s, judge, deadline, Mark::start(start)).await?;
            Ok(Success { latency, connect, echo })
        }
    }

    /// The tunnel test on the connection a forward test kept. Only a 2xx answer to the
    /// CONNECT that arrived after it was sent and carries no body framing (RFC 9110 §9.3.6:
    /// a 2xx to CONNECT has none) is taken from it. A proxy that closes, stays silent
    /// ([`reuse_wait`]), garbles, or refuses there is owed a fresh connection
    /// ([`Reused::Stale`]), within the same deadline. The latency is the kept connection's
    /// connect time plus the CONNECT's exchange and the judge's, as on a connection of its
    /// own.
    pub fn tunnel_reusing(
        &self,
        kept: &mut Option<Kept>,
        creds: Option<&Credentials>,
        judge: &Judge,
        deadline: Instant,
    ) -> impl Future<Output = Reused> {
        async move {
            let Some(Kept { stream: Some(stream), connect, forward }) = kept.as_mut() else {
                return Reused::Stale;
            };
            let (connect, forward) = (*connect, *forward);
            // Anything already there (a close, bytes nobody asked for) and this connection
            // cannot carry the CONNECT's answer: a fresh one, without writing to this.
            if stream.readable_now() {
                return Reused::Stale;
            }
            let mark = stream.mark();
            let sent = Instant::now();
            let wait = reuse_wait(forward, deadline.saturating_duration_since(sent));
            let answered_by = sent.checked_add(wait).unwrap_or(deadline);
            match open_tunnel(stream, creds, judge, answered_by).await {
                Ok(head) if head.framing != http1::Framing::Close => return Reused::Stale,
                // An answer whose bytes were there before we asked: not the CONNECT's.
                Ok(_) if stream.first_arrival_since_mark().is_some_and(|at| at < sent) => return Reused::Stale,
                Ok(_) => {}
                Err(Failure::Local(l)) => return Reused::Done(Err(Failure::Local(l))),
                Err(Failure::Dead(_) | Failure::Speaks(_)) => return Reused::Stale,
            }
            let Some(Kept { stream, .. }) = kept.as_mut() else { return Reused::Stale };
            Reused::Done(self.through(stream, judge, deadline, mark).await.map(|(span, echo)| Success {
                latency: connect.saturating_add(span),
                connect,
                echo,
            }))
        }
    }

    /// SOCKS4 or SOCKS5 handshake to the judge, then the request inside.
    pub fn socks(
        &self,
        addr: SocketAddr,
        v5: bool,
        creds: Option<&Credentials>,
        judge: &Judge,
        deadline: Instant,
    ) -> impl Future<Output = Result<Success, Failure>> {
        async move {
            use tokio_socks::tcp::Socks5Stream;
            let start = Instant::now();
            let heard = HeardBytes::default();
            // The stream goes straight into the boxed handshake: no copy of it stays here.
            let (handshake, connect) = {
                let (s, connect) = tcp_connect(addr, self, start, deadline).await?;
                let s = Heard { inner: s, heard: &heard };
                let target = judge.addr;
                // Boxed: a handshake's state is only needed while it runs, and plain HTTP
                // checks should not carry its size.
                let handshake = Box::pin(async move {
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
                });
                (handshake, connect)
            };
            let mut stream = match tokio::time::timeout_at(deadline, handshake).await {
                Ok(r) => Some(r.map_err(|e| heard.spoke(e, v5))?.inner),
                // A proxy that started its reply and stalled is slow, not silent.
                Err(_) => {
                    let reason = if heard.any() { Reason::Timeout } else { Reason::ProxyTimeout };
                    return Err(expired(deadline, reason));
                }
            };
            let (latency, echo) = self.through(&mut stream, judge, deadline, Mark::start(start)).await?;
            Ok(Success { latency, connect, echo })
        }
    }

    /// Speaks to the judge over the tunnel established in `s`. Returns the span from `mark`
    /// to the arrival of the answer's head (see [`Stamped::span`]) and what the answer
    /// told. The stream is taken for TLS (which wraps it), borrowed otherwise.
    fn through<'a>(
        &'a self,
        s: &'a mut Option<Stamped>,
        judge: &'a Judge,
        deadline: Instant,
        mark: Mark,
    ) -> impl Future<Output = Result<(Duration, Echo), Failure>> + 'a {
        async move {
            if judge.https {
                let Some(s) = s.take() else { return Err(Failure::Dead(Reason::InternalError)) };
                // Boxed: TLS state is large and only HTTPS judges need it.
                return Box::pin(self.through_tls(s, judge, deadline, mark)).await;
            }
            let Some(s) = s.as_mut() else { return Err(Failure::Dead(Reason::InternalError)) };
            let mut buf = Vec::new();
            let (at, echo) = self.judge_exchange(s, judge, &mut buf, deadline).await?;
            Ok((s.span(mark, at), echo))
        }
    }

    /// [`Self::through`] with TLS to the judge inside the tunnel.
    async fn through_tls(
        &self,
        s: Stamped,
        judge: &Judge,
        deadline: Instant,
        mark: Mark,
    ) -> Result<(Duration, Echo), Failure> {
        let handshake = async {
            self.tls.connect(judge.server_name(), s).await.map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                    Failure::Dead(Reason::ProxyClosed)
                }
                _ => Failure::Dead(Reason::TlsError),
            })
        };
        let mut tls = within(deadline, Reason::Timeout, handshake).await?;
        let mut buf = Vec::new();
        let (at, echo) = self.judge_exchange(&mut tls, judge, &mut buf, deadline).await?;
        Ok((tls.get_ref().0.span(mark, at), echo))
    }

    /// Sends the judge an origin-form request with a fresh nonce over `s` (a tunnel, or a
    /// direct connection for a health probe) and validates its answer. Returns when the
    /// answer's head arrived (by the kernel's clock where `s` has one).
    pub(crate) fn judge_exchange<S: AsyncRead + AsyncWrite + Arrivals + Unpin>(
        &self,
        s: &mut S,
        judge: &Judge,
        buf: &mut Vec<u8>,
        deadline: Instant,
    ) -> impl Future<Output = Result<(Instant, Echo), Failure>> {
        async move {
            let nonce = nonce();
            write(s, &judge.origin_request(Some(&nonce)), deadline, Reason::Timeout).await?;
            if buf.capacity() == 0 {
                *buf = answer_buffer(s, deadline, Reason::Timeout).await?;
            }
            let head = http1::read_head(s, buf, deadline, Reason::Timeout).await?;
            let at = s.last_arrival().unwrap_or_else(Instant::now);
            // Boxed: reading and checking the body is the largest state of a check, and needed
            // only once the answer is there; a check waiting for its proxy does not carry it
            // (19,000 wait at once). Live briefly, so one size of block is reused.
            let (echo, _) = Box::pin(self.validate(s, buf, head, judge, &nonce, deadline)).await?;
            Ok((at, echo))
        }
    }

    /// The calibration exchange: both nonces, the whole answer (up to [`ANSWER_CAP`]),
    /// and where the judge echoed them. `Err(answer)` when it echoed neither usably.
    async fn calibration_exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut S,
        judge: &Judge,
        deadline: Instant,
    ) -> Result<Result<Calibration, Vec<u8>>, Failure> {
        let (query_nonce, header_nonce) = (nonce(), nonce());
        write(s, &judge.calibration_request(&query_nonce, &header_nonce), deadline, Reason::Timeout).await?;
        let mut buf = Vec::with_capacity(1024);
        let head = http1::read_head(s, &mut buf, deadline, Reason::Timeout).await?;
        if head.status != self.expect_status {
            return Err(Reason::BadStatus.into());
        }
        let body = http1::read_body(s, &mut buf, head, ANSWER_CAP, deadline).await?.bytes;
        Ok(echo::calibrate(&body, query_nonce.as_bytes(), header_nonce.as_bytes()).ok_or(body))
    }
}

/// Bytes of a judge's answer read at most, at calibration and through a proxy: judges
/// answer in a few KiB (httpbin ~0.5, azenv ~2); a proxy's endless body stops here.
const ANSWER_CAP: usize = 16 * 1024;

// Direct judge health probes: no proxy, same validation, so a dead judge is told apart
// from dead proxies.

/// Fetches the judge directly and validates its answer like a check would. A local
/// failure (no free fd or port) is retried: it says nothing about the judge.
pub async fn probe_direct(judge: &Judge, ex: &Exchange, timeout: Duration) -> Result<Duration, JudgeError> {
    direct(judge, ex, timeout, false).await.map(|(d, _)| d)
}

/// Calibrates a judge ([`echo`]): a direct request with a nonce in the query and one in a
/// header, and where its answer echoes them. A judge that echoes neither usably fails with
/// the start of its answer and the way out (`contains` validation).
pub async fn calibrate_direct(judge: &Judge, ex: &Exchange, timeout: Duration) -> Result<Calibration, JudgeError> {
    match direct(judge, ex, timeout, true).await? {
        (_, Some(c)) => Ok(c),
        (_, None) => Err(JudgeError::Down { url: judge.shown.clone(), reason: "calibration gave no answer".into() }),
    }
}

async fn direct(
    judge: &Judge,
    ex: &Exchange,
    timeout: Duration,
    calibrate: bool,
) -> Result<(Duration, Option<Calibration>), JudgeError> {
    let mut tries: u32 = 0;
    loop {
        match probe_once(judge, ex, timeout, calibrate).await {
            Err(Probe::Local(e)) if tries < 50 => {
                tracing::debug!(judge = %judge.shown, error = %e, "local failure probing the judge; retrying");
                tries = tries.saturating_add(1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(Probe::Local(e)) => {
                return Err(JudgeError::Local { url: judge.shown.clone(), source: Arc::new(e) });
            }
            Err(Probe::Down(e)) => return Err(e),
            Ok(d) => return Ok(d),
        }
    }
}

enum Probe {
    Local(std::io::Error),
    Down(JudgeError),
}

async fn probe_once(
    judge: &Judge,
    ex: &Exchange,
    timeout: Duration,
    calibrate: bool,
) -> Result<(Duration, Option<Calibration>), Probe> {
    let down = |reason: String| Probe::Down(JudgeError::Down { url: judge.shown.clone(), reason });
    let start = Instant::now();
    let deadline = start.checked_add(timeout).unwrap_or(start);
    let stream = match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(judge.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if super::reason::is_local(&e) => return Err(Probe::Local(e)),
        Ok(Err(e)) => return Err(down(format!("connect: {e}"))),
        // Our own late timer says nothing about the judge: a local failure, retried.
        Err(_) => return Err(late_or(deadline, down(format!("connect timed out after {timeout:?}")))),
    };
    let result = if judge.https {
        match tokio::time::timeout_at(deadline, ex.tls.connect(judge.server_name(), stream)).await {
            Ok(Ok(mut tls)) => exchange(ex, &mut tls, judge, deadline, calibrate).await,
            Ok(Err(e)) => return Err(down(format!("TLS: {e}"))),
            Err(_) => return Err(late_or(deadline, down("TLS handshake timed out".into()))),
        }
    } else {
        let mut s = stream;
        let r = exchange(ex, &mut s, judge, deadline, calibrate).await;
        let _ = s.shutdown().await;
        r
    };
    match result {
        Ok(Ok(c)) => Ok((start.elapsed(), c)),
        Ok(Err(answer)) => Err(Probe::Down(JudgeError::Uncalibrated {
            url: judge.shown.clone(),
            answer: echo::quote_start(&answer, 200),
        })),
        Err(Failure::Dead(r)) => Err(down(describe(r, ex))),
        Err(Failure::Speaks(_)) => Err(down(describe(Reason::ProxyProtocolError, ex))),
        Err(Failure::Local(l)) => Err(Probe::Local(l.0)),
    }
}

/// One direct exchange: a health check (validated like a check), or a calibration.
async fn exchange<S: AsyncRead + AsyncWrite + Arrivals + Unpin>(
    ex: &Exchange,
    s: &mut S,
    judge: &Judge,
    deadline: Instant,
    calibrate: bool,
) -> Result<Result<Option<Calibration>, Vec<u8>>, Failure> {
    if calibrate {
        return ex.calibration_exchange(s, judge, deadline).await.map(|r| r.map(Some));
    }
    ex.judge_exchange(s, judge, &mut Vec::with_capacity(1024), deadline).await.map(|_| Ok(None))
}

/// `down`, unless the deadline's timer fired late (an overloaded runtime).
fn late_or(deadline: Instant, down: Probe) -> Probe {
    match expired(deadline, Reason::Timeout) {
        Failure::Local(l) => Probe::Local(l.0),
        Failure::Dead(_) | Failure::Speaks(_) => down,
    }
}

fn describe(r: Reason, ex: &Exchange) -> String {
    match r {
        Reason::BadStatus => format!("status is not {}", ex.expect_status),
        Reason::ContentMismatch => "answer does not contain the nonce or expected text".into(),
        other => other.as_str().to_string(),
    }
}

/// The healthy judges of a run, probed up front.
pub async fn probe_all(urls: &[url::Url], ex: &Exchange, timeout: Duration) -> Result<Vec<Arc<Judge>>, JudgeError> {
    let mut healthy = Vec::new();
    // Per scheme (plain, https): whether one is configured, and the last error.
    let mut configured = [false; 2];
    let mut last_err: [Option<JudgeError>; 2] = [None, None];
    for url in urls {
        let role = usize::from(url.scheme() == "https");
        if let Some(c) = configured.get_mut(role) {
            *c = true;
        }
        let judge = Judge::resolve(url).await;
        let result = match judge {
            // Nonce validation learns where this judge echoes the nonce first.
            Ok(mut j) if matches!(ex.validation, Validation::Nonce) => {
                calibrate_direct(&j, ex, timeout).await.map(|c| {
                    tracing::debug!(judge = %j.shown, calibration = ?c, "judge calibrated");
                    j.calibration = Some(c);
                    j
                })
            }
            Ok(j) => probe_direct(&j, ex, timeout).await.map(|_| j),
            Err(e) => Err(e),
        };
        match result {
            Ok(j) => healthy.push(Arc::new(j)),
            Err(e) => {
                tracing::warn!(judge = %crate::redact::redacted(url), error = %crate::Chain(&e), "judge skipped for this run");
                if let Some(slot) = last_err.get_mut(role) {
                    *slot = Some(e);
                }
            }
        }
    }
    // Each role needs a judge: forward tests a plain one, tunnel tests an https one when
    // one is configured (a plain judge's answer can be forged by the proxy).
    for (role, what) in [
        (0, "forward tests need an http:// judge"),
        (
            1,
            "tunnel and SOCKS tests use only the https:// judges when one is configured (a plain judge's answer can be forged by the proxy)",
        ),
    ] {
        let missing =
            configured.get(role).copied().unwrap_or(false) && !healthy.iter().any(|j| usize::from(j.https) == role);
        if missing {
            return Err(match last_err.get_mut(role).and_then(Option::take) {
                Some(JudgeError::Down { url, reason }) => JudgeError::Down { url, reason: format!("{reason}; {what}") },
                Some(other) => other,
                None => JudgeError::Down { url: String::new(), reason: what.to_string() },
            });
        }
    }
    if healthy.is_empty() {
        return Err(JudgeError::Down { url: String::new(), reason: "no judge configured".into() });
    }
    Ok(healthy)
}

/// SOCKS4 (SOCKS4a for a judge without an IPv4 address), written here rather than with
/// tokio-socks because servers in the wild answer with version byte 4 as often as the 0
/// the protocol asks for, and tokio-socks rejects the former: a working proxy must not be
/// judged dead for that.
async fn socks4<S>(mut s: S, judge: &Judge, creds: Option<&Credentials>) -> Result<S, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let user = creds.map_or("", |c| c.username.as_str());
    let mut req = Vec::with_capacity(user.len().saturating_add(judge.host().len()).saturating_add(16));
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

/// The first bytes a peer sent (up to 8), noted as they pass.
#[derive(Default)]
struct HeardBytes {
    first: AtomicU64,
    len: AtomicU8,
}

impl HeardBytes {
    fn note(&self, bytes: &[u8]) {
        let len = usize::from(self.len.load(Ordering::Relaxed));
        if len >= 8 {
            return;
        }
        let mut first = self.first.load(Ordering::Relaxed).to_le_bytes();
        let take = bytes.len().min(8usize.saturating_sub(len));
        for (slot, b) in first.iter_mut().skip(len).zip(bytes.iter().take(take)) {
            *slot = *b;
        }
        self.first.store(u64::from_le_bytes(first), Ordering::Relaxed);
        self.len.store(u8::try_from(len.saturating_add(take)).unwrap_or(8), Ordering::Relaxed);
    }

    fn any(&self) -> bool {
        self.len.load(Ordering::Relaxed) > 0
    }

    /// A failed SOCKS handshake whose answer is another protocol's (an HTTP proxy's
    /// status line, the other SOCKS version's reply): [`Failure::Speaks`] that protocol.
    fn spoke(&self, e: Failure, v5: bool) -> Failure {
        let bytes = self.first.load(Ordering::Relaxed).to_le_bytes();
        let len = usize::from(self.len.load(Ordering::Relaxed)).min(8);
        let listed = if v5 { crate::proxy::Protocol::Socks5 } else { crate::proxy::Protocol::Socks4 };
        match super::reason::sniff(bytes.get(..len).unwrap_or_default()) {
            Some(p) if p != listed && matches!(e, Failure::Dead(_)) => Failure::Speaks(p),
            _ => e,
        }
    }
}

/// A stream that notes the first bytes the peer sent.
struct Heard<'a, S> {
    inner: S,
    heard: &'a HeardBytes,
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(new) = buf.filled().get(before..).filter(|n| !n.is_empty()) {
            self.heard.note(new);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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
