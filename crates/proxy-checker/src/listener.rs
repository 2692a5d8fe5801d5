//! The API's listener: at most N connections at once, so the API can never take the
//! descriptors the checker and storage need, and no client behaviour can hold them:
//!
//! - a connection silent for `idle` either way is closed;
//! - a request must be answered within `request_timeout` of its first byte, so a client
//!   that trickles its head or body (slowloris) is closed, trickle or not;
//! - when every slot is taken and another client connects, the connection idle for
//!   longest (between requests, or never sent one) is closed to make room; if none is
//!   idle, the one whose request started longest ago (over a second) is. Keep-alive pools
//!   and thousands of idle sockets cannot lock good clients out.
//!
//! Accept errors (EMFILE) back off 10 ms (`axum::serve` waited 1 s).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How the listener treats its connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub idle: Duration,
    pub request_timeout: Duration,
}

/// A request older than this may be evicted when no idle connection is left.
const EVICT_BUSY_AFTER: Duration = Duration::from_secs(1);

/// What the listener knows of one open connection (shared with its [`Conn`]).
struct ConnState {
    /// Milliseconds since the listener started.
    last_activity: AtomicU64,
    /// When the request being read started (ms since start + 1); 0 between requests.
    request_started: AtomicU64,
    evicted: AtomicBool,
    waker: AtomicWaker,
}

struct Registry {
    started: Instant,
    next_id: AtomicU64,
    conns: Mutex<std::collections::HashMap<u64, Arc<ConnState>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Closes the best candidate to make room; false when every connection is busy with a
    /// fresh request.
    fn evict_one(&self) -> bool {
        let conns = self.conns.lock().expect("registry lock");
        let now = self.now_ms();
        let busy_after = u64::try_from(EVICT_BUSY_AFTER.as_millis()).unwrap_or(u64::MAX);
        let victim = conns
            .values()
            .filter(|c| !c.evicted.load(Ordering::Relaxed))
            .filter_map(|c| {
                let started = c.request_started.load(Ordering::Relaxed);
                match started {
                    // Idle: rank before any busy one, oldest activity first.
                    0 => Some(((0u8, c.last_activity.load(Ordering::Relaxed)), c)),
                    s if now.saturating_sub(s - 1) >= busy_after => Some(((1u8, s), c)),
                    _ => None,
                }
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, c)| c.clone());
        drop(conns);
        match victim {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                c.waker.wake();
                true
            }
            None => false,
        }
    }
}

/// The API's listener (served by `api::front`).
pub struct CappedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    limits: Limits,
    registry: Arc<Registry>,
}

impl CappedListener {
    pub fn new(inner: TcpListener, limits: Limits) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            registry: Arc::new(Registry {
                started: Instant::now(),
                next_id: AtomicU64::new(0),
                conns: Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// A slot for a connection that is already accepted, evicting if all are taken.
    async fn slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.slots.clone().try_acquire_owned() {
                return p;
            }
            let evicted = self.registry.evict_one();
            let wait = if evicted { Duration::from_secs(1) } else { Duration::from_millis(100) };
            if let Ok(Ok(p)) = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
                return p;
            }
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let slot = self.slot().await;
                    return (Conn::new(stream, slot, self.limits, self.registry.clone()), addr);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An API connection holding its slot until dropped.
pub struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    limits: Limits,
    id: u64,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// When `timer` fires (ms since the listener started). It is moved earlier only when a
    /// request starts; otherwise it fires and is re-armed lazily, so the hot path does not
    /// touch the timer wheel on every read.
    armed: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.registry.conns.lock().expect("registry lock").remove(&self.id);
    }
}

impl Conn {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, limits: Limits, registry: Arc<Registry>) -> Self {
        let state = Arc::new(ConnState {
            last_activity: AtomicU64::new(registry.now_ms()),
            request_started: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
        registry.conns.lock().expect("registry lock").insert(id, state.clone());
        let armed = registry.now_ms().saturating_add(u64::try_from(limits.idle.as_millis()).unwrap_or(u64::MAX));
        let timer = Box::pin(tokio::time::sleep(limits.idle));
        Self { stream, _slot: slot, limits, id, state, registry, timer, armed }
    }

    fn on_read(&self, n: usize) {
        let now = self.registry.now_ms();
        self.state.last_activity.store(now, Ordering::Relaxed);
        if n > 0 && self.state.request_started.load(Ordering::Relaxed) == 0 {
            self.state.request_started.store(now + 1, Ordering::Relaxed);
        }
    }

    fn on_write(&self, n: usize) {
        self.state.last_activity.store(self.registry.now_ms(), Ordering::Relaxed);
        if n > 0 {
            self.state.request_started.store(0, Ordering::Relaxed);
        }
    }

    /// Pending while the connection may stay; an error once it is idle too long, its
    /// request too slow, or it was evicted.
    fn poll_limits(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.state.waker.register(cx.waker());
        loop {
            if self.state.evicted.load(Ordering::Relaxed) {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "API connection evicted for a new one"));
            }
            let now = self.registry.now_ms();
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let idle_end = self.state.last_activity.load(Ordering::Relaxed).saturating_add(ms(self.limits.idle));
            let request_end = match self.state.request_started.load(Ordering::Relaxed) {
                0 => u64::MAX,
                s => (s - 1).saturating_add(ms(self.limits.request_timeout)),
            };
            let end = idle_end.min(request_end);
            if now >= end {
                let what = if end == request_end { "request not complete in time" } else { "API connection idle" };
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
            }
            if end < self.armed {
                self.armed = end;
                self.timer.as_mut().reset(self.registry.started + Duration::from_millis(end));
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Fired: re-arm for the current end (activity may have moved it later).
            self.armed = end;
            self.timer.as_mut().reset(self.registry.started + Duration::from_millis(end));
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.state.evicted.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "API connection evicted")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let n = buf.filled().len() - before;
                self.on_read(n);
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_limits(cx).map(Err),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.on_write(*r.as_ref().unwrap_or(&0));
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_limits(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.on_write(*r.as_ref().unwrap_or(&0));
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_limits(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
