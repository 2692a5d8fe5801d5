//! Latency as what the proxy cost, not our queueing: the kernel's clock at the socket.
//!
//! With 19,000 checks in flight an answer can sit in its socket for a while before its
//! task runs, and a connect can complete long before its task learns of it; a latency
//! taken with `Instant::now()` after the read counts that wait as the proxy's. A
//! [`Stamped`] socket asks the kernel for each received segment's arrival time
//! (`SO_TIMESTAMPNS`) and notes how long the ball was in our court: from each arrival (and
//! from the connect's completion, told by the kernel's handshake RTT in `TCP_INFO`) to our
//! next write. [`Stamped::span`] is then the time from a [`Mark`] to an arrival, less
//! those turns of ours: the proxy's (and the judge's) share of the exchange only.
//!
//! Where the kernel gives no timestamp (an old kernel, another OS), the arrival is the
//! time the read returned: the old measure, never a wrong one.
//!
//! The one module with `unsafe`: three system calls (`setsockopt`, `getsockopt(TCP_INFO)`,
//! `recvmsg` with its control messages) that neither tokio, socket2 nor rustix wrap. Each
//! block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A TCP stream that timestamps arrivals and our turns (see the module doc).
#[derive(Debug)]
pub struct Stamped {
    io: TcpStream,
    /// The times below are microseconds after this ([`NONE`]: not yet), kept small: a
    /// probe's future holds its socket, and 19,000 wait at once.
    base: Instant,
    /// When the last bytes arrived, by the kernel's clock if it told.
    last_arrival: u32,
    /// Since when the ball is ours (an arrival or the connect's completion) and no write
    /// has answered it yet.
    our_turn: u32,
    /// The sum of our turns that ended in a write, in microseconds.
    ours: u32,
    /// When our last write began: an answer we read arrived after it.
    last_write: u32,
    /// The earliest arrival read since the last [`Stamped::mark`], as the kernel told it
    /// (not moved after our writes).
    first_since_mark: u32,
    /// The kernel gives arrival timestamps on this socket.
    kernel_clock: bool,
}

/// "Not yet" for a time of a [`Stamped`].
const NONE: u32 = u32::MAX;

/// The start of a measured span: a time, and our turns until then.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    at: Instant,
    ours: Duration,
}

impl Mark {
    /// A span from `at` on a socket made after it (nothing of ours counted yet).
    pub fn start(at: Instant) -> Self {
        Self { at, ours: Duration::ZERO }
    }
}

impl Stamped {
    /// Wraps a connected stream; `connected`: when the connect completed (see
    /// [`connect_completed`]), from which on the ball is ours.
    pub fn new(io: TcpStream, connected: Instant) -> Self {
        let kernel_clock = enable_timestamps(&io);
        Self {
            io,
            base: connected,
            last_arrival: NONE,
            our_turn: 0,
            ours: 0,
            last_write: NONE,
            first_since_mark: NONE,
            kernel_clock,
        }
    }

    /// `t` as microseconds after the base (a time before it counts as the base; 71
    /// minutes after it is as far as it goes, far past any check's deadline).
    fn micros(&self, t: Instant) -> u32 {
        u32::try_from(t.saturating_duration_since(self.base).as_micros()).unwrap_or(NONE - 1).min(NONE - 1)
    }

    fn instant(&self, micros: u32) -> Option<Instant> {
        (micros != NONE).then(|| self.base.checked_add(Duration::from_micros(u64::from(micros)))).flatten()
    }

    /// Starts a span now, on a socket already in use: a turn of ours in progress counts
    /// from here.
    pub fn mark(&mut self) -> Mark {
        let now = Instant::now();
        if self.our_turn != NONE {
            self.our_turn = self.micros(now);
        }
        self.first_since_mark = NONE;
        Mark { at: now, ours: Duration::from_micros(u64::from(self.ours)) }
    }

    /// The earliest arrival among the bytes read since the last mark, as the kernel told
    /// it: bytes that were there before a request was sent are no answer to it.
    pub fn first_arrival_since_mark(&self) -> Option<Instant> {
        self.instant(self.first_since_mark)
    }

    /// When the last bytes arrived, by the kernel's clock where it told.
    pub fn last_arrival(&self) -> Option<Instant> {
        self.instant(self.last_arrival)
    }

    /// The time from `mark` to `to` (an arrival), less our turns since `mark`: the peer's
    /// share. Read before anything is written after `to`.
    pub fn span(&self, mark: Mark, to: Instant) -> Duration {
        let ours = Duration::from_micros(u64::from(self.ours));
        to.saturating_duration_since(mark.at).saturating_sub(ours.saturating_sub(mark.ours))
    }

    /// Whether anything can be read at once: bytes nobody asked for, or the peer's close.
    /// It reads what it finds (one byte): only for a connection dropped when it says so.
    /// (May say `false` for what arrived since the runtime last polled the socket.)
    pub fn readable_now(&self) -> bool {
        !matches!(self.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Resolves when a byte (or the peer's close) is there to read, without reading it: a
    /// peek, since the runtime's readiness can stay set from the last read. Polled, not an
    /// `async fn` over `TcpStream::peek`: thousands of checks wait here at once, and this
    /// future is a reference (`peek`'s holds a waiter node and its own state).
    pub fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::poll_fn(move |cx| {
            let mut byte = [0u8; 1];
            self.io.poll_peek(cx, &mut ReadBuf::new(&mut byte)).map_ok(drop)
        })
    }

    /// Whether arrivals are stamped by the kernel (else by the read's return).
    pub fn kernel_clock(&self) -> bool {
        self.kernel_clock
    }

    /// Reads into `buf`'s unfilled part with `recvmsg`, returning the byte count and the
    /// kernel's arrival time of the data (when it gave one).
    fn recv(&self, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<(usize, Option<SystemTime>)> {
        recv_stamped(self.io.as_raw_fd(), buf, self.kernel_clock)
    }

    /// Every error here errs towards a longer latency, but for one: the kernel stamps by the
    /// wall clock, which time sync may slew against the monotonic clock while an answer
    /// waits (0.5 % seen here: 1.5 ms over 300 ms of waiting).
    fn arrived(&mut self, kernel: Option<SystemTime>) {
        // The kernel's wall-clock stamp mapped onto the monotonic clock: how long ago it
        // arrived, then now less that. The wall clock is read first, so a pause between
        // the two readings places the arrival later, not earlier. A stamp in the future (a
        // clock step) counts as now.
        let ago = kernel.and_then(|at| SystemTime::now().duration_since(at).ok()).unwrap_or_default();
        let now = Instant::now();
        let at = self.micros(now.checked_sub(ago).unwrap_or(now));
        if self.first_since_mark == NONE {
            self.first_since_mark = at;
        }
        // Never before our last write (what we read answers it; a clock step backwards
        // cannot make it older) nor before an earlier arrival.
        let at = [self.last_write, self.last_arrival].into_iter().filter(|t| *t != NONE).fold(at, u32::max);
        self.last_arrival = at;
        // Our turn starts at the latest arrival: the gaps between the pieces of an answer
        // are the peer's.
        self.our_turn = at;
    }

    /// A write that began at `began` returned `r`: noted when bytes went out.
    fn noted(&mut self, began: Instant, r: io::Result<usize>) -> io::Result<usize> {
        if matches!(r, Ok(n) if n > 0) {
            self.wrote(began);
        }
        r
    }

    /// A write that began at `began` went out: our turn ended when it began.
    fn wrote(&mut self, began: Instant) {
        let began = self.micros(began);
        if self.our_turn != NONE {
            self.ours = self.ours.saturating_add(began.saturating_sub(self.our_turn));
            self.our_turn = NONE;
        }
        self.last_write = began;
    }
}

impl AsyncRead for Stamped {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.io.poll_read_ready(cx))?;
            // SAFETY: `recvmsg` only writes into the spare bytes, never de-initialises any;
            // exactly the `n` it reports are marked initialised below.
            let dst = unsafe { buf.unfilled_mut() };
            // Readiness is cleared only by a read that would block (tokio's `try_io`), so
            // a short read costs one more `recvmsg` that says so; `readable_now` relies on
            // the readiness staying set until then.
            match this.io.try_io(Interest::READABLE, || this.recv(dst)) {
                Ok((n, at)) => {
                    // SAFETY: the kernel wrote `n` bytes at the start of the unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if n > 0 {
                        this.arrived(at);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let began = Instant::now();
        let r = ready!(Pin::new(&mut this.io).poll_write(cx, buf));
        Poll::Ready(this.noted(began, r))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let began = Instant::now();
        let r = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs));
        Poll::Ready(this.noted(began, r))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// When a connect that began at `start` completed, as far as the kernel can tell: `start`
/// plus the handshake's round-trip time from `TCP_INFO`, unless the SYN was sent again
/// (then the RTT says nothing of the wait) or the kernel does not say; then `now`.
pub fn connect_completed(s: &TcpStream, start: Instant) -> Instant {
    let now = Instant::now();
    match handshake_rtt(s) {
        Some(rtt) => start.checked_add(rtt).map_or(now, |at| at.min(now)),
        None => now,
    }
}

#[cfg(target_os = "linux")]
fn enable_timestamps(s: &TcpStream) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd for the duration of the call, and a pointer to a live c_int with
    // its true size, as setsockopt(2) requires.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn enable_timestamps(_: &TcpStream) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn handshake_rtt(s: &TcpStream) -> Option<Duration> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid fd, and a pointer to a live tcp_info with its size in `len`, which
    // the kernel may shorten (older kernels fill less; the rest stays zero).
    let r = unsafe {
        libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &raw mut len)
    };
    if r != 0 || info.tcpi_total_retrans > 0 || info.tcpi_retransmits > 0 || info.tcpi_rtt == 0 {
        return None;
    }
    Some(Duration::from_micros(u64::from(info.tcpi_rtt)))
}

#[cfg(not(target_os = "linux"))]
fn handshake_rtt(_: &TcpStream) -> Option<Duration> {
    None
}

/// Room for one `SCM_TIMESTAMPNS` control message (a timespec, 16 bytes, behind a 16-byte
/// cmsghdr), aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuf([u8; 64]);

#[cfg(target_os = "linux")]
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
    stamped: bool,
) -> io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = ControlBuf([0; 64]);
    // SAFETY: msghdr is plain old data; all-zero is "no name, no iov, no control".
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if stamped {
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len() as _;
    }
    // SAFETY: `msg` points at one iovec covering `buf` (live, writable, its true length) and
    // at `control` (live, aligned, its true length); both outlive the call.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    let Ok(n) = usize::try_from(n) else {
        return Err(io::Error::last_os_error());
    };
    if !stamped || msg.msg_controllen == 0 {
        return Ok((n, None));
    }
    let mut at = None;
    // SAFETY: the CMSG_* walk stays inside `msg.msg_control`/`msg_controllen` as the kernel
    // filled them; the timespec is read unaligned from inside a header the kernel wrote
    // with its own length checked against the timespec's size.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let h = &*cmsg;
            let want = libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) as usize;
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_TIMESTAMPNS && h.cmsg_len as usize >= want {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let secs = u64::try_from(ts.tv_sec).ok();
                let nanos = u32::try_from(ts.tv_nsec).ok().filter(|n| *n < 1_000_000_000);
                at = secs.zip(nanos).and_then(|(s, n)| {
                    SystemTime::UNIX_EPOCH
                        .checked_add(Duration::from_secs(s).saturating_add(Duration::from_nanos(u64::from(n))))
                });
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((n, at))
}

#[cfg(not(target_os = "linux"))]
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
    _: bool,
) -> io::Result<(usize, Option<SystemTime>)> {
    // A plain read, unstamped. SAFETY: `fd` is the live socket of the `Stamped` calling
    // (borrowed for the call), and `buf` is writable memory of its true length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map(|n| (n, None)).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stamped connection to a peer thread running `peer` on the accepted end; returns it,
    /// when the connect began, and the peer's thread.
    async fn stamped_to(
        peer: impl FnOnce(std::net::TcpStream) + Send + 'static,
    ) -> (Stamped, Instant, std::thread::JoinHandle<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let peer = std::thread::spawn(move || peer(l.accept().unwrap().0));
        let start = Instant::now();
        let io = TcpStream::connect(addr).await.unwrap();
        let connected = connect_completed(&io, start);
        (Stamped::new(io, connected), start, peer)
    }

    /// An answer that waits in the socket while we are busy is timed at its arrival; our
    /// delay before writing is not the peer's. Busy = the runtime's only thread blocked;
    /// every bound below follows from sleeps' lower bounds and the peer's signal, not from
    /// the machine's speed.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn arrivals_are_stamped_and_our_turns_left_out() {
        let (wrote, written) = std::sync::mpsc::channel();
        let (mut s, start, peer) = stamped_to(move |mut s| {
            let mut b = [0u8; 4];
            for _ in 0..2 {
                s.read_exact(&mut b).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                s.write_all(b"pong").unwrap();
                wrote.send(()).unwrap();
            }
        })
        .await;
        assert!(s.kernel_clock(), "SO_TIMESTAMPNS on TCP (Linux ≥ 2.6)");
        for round in 0..2 {
            // We dawdle 150 ms before writing: our turn.
            std::thread::sleep(Duration::from_millis(150));
            let mark = if round == 0 { Mark::start(start) } else { s.mark() };
            s.write_all(b"ping").await.unwrap();
            let wrote_at = Instant::now();
            // The answer is in our socket; we stay busy 300 ms more before reading it.
            written.recv().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            let read_at = Instant::now();
            let peer_share = s.span(mark, s.last_arrival().unwrap());
            // The peer took at least its 100 ms (less what the wall clock, which stamps
            // arrivals, may have been slewed by over the wait: 5 ms is 1 % of it); what we
            // add (the dawdle before the write when it falls inside the span, the 300 ms the
            // answer waited) is left out.
            assert!(peer_share >= Duration::from_millis(95), "round {round}: {peer_share:?}");
            let naive = read_at.duration_since(mark.at);
            let left_out = naive - peer_share;
            let ours = Duration::from_millis(if round == 0 { 150 + 300 } else { 300 });
            assert!(left_out >= ours, "round {round}: {peer_share:?} of {naive:?}, {left_out:?} left out");
            // And never more than what happened outside the peer's 100 ms.
            assert!(peer_share <= read_at.duration_since(wrote_at), "round {round}");
        }
        peer.join().unwrap();
    }

    /// Bytes that were in the socket before a request was sent are told apart from an
    /// answer to it (a kept connection's stale bytes are no CONNECT answer).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn bytes_there_before_a_request_are_told_apart() {
        let (early_sent, early) = std::sync::mpsc::channel();
        let (stamping, stamped) = std::sync::mpsc::channel::<()>();
        let (go, answer_now) = std::sync::mpsc::channel::<()>();
        let (mut s, _, peer) = stamped_to(move |mut s| {
            // Only once our socket stamps arrivals: bytes that came before nobody asked
            // for a stamp carry none (the kernel then tells nothing and the read's return
            // stands in, which is after the request).
            stamped.recv().unwrap();
            s.write_all(b"early").unwrap();
            early_sent.send(()).unwrap();
            answer_now.recv().unwrap();
            s.write_all(b"pong").unwrap();
            let mut b = [0u8; 8];
            let _ = s.read(&mut b);
        })
        .await;
        stamping.send(()).unwrap();
        early.recv().unwrap();
        // Margin for the two clock readings that place an arrival (they err later).
        std::thread::sleep(Duration::from_millis(100));
        let _ = s.mark();
        let sent = Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.unwrap();
        assert!(s.first_arrival_since_mark().unwrap() < sent, "the early bytes were there before the request");
        let _ = s.mark();
        let sent = Instant::now();
        go.send(()).unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert!(s.first_arrival_since_mark().unwrap() >= sent, "an answer sent after the request");
        peer.join().unwrap();
    }
}
