//! The check engine's HTTP/1.1 response reader: the hot path, hand-written over httparse.
//!
//! One buffer per check, [`MAX_HEAD`] at most (1 KiB to start): the head must fit in it
//! whole (it is parsed only when a read brought what can end a head); the body then
//! streams through it [`BODY_READ`] bytes at a time, is de-framed (`Content-Length`,
//! chunked, or until close) by a state machine that keeps no more than its current line's
//! counters, and is scanned through a window that keeps only the tail a split match needs.
//! Every byte is looked at a bounded number of times, whatever the read sizes; nothing a
//! peer sends sizes an allocation or an index unchecked.

// Bytes from the network and from lists meet no unchecked arithmetic or indexing here.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::deadline::within;
use super::reason::{Failure, Reason};

/// Largest response head accepted; an endless header is a protocol error, not a hang.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most bytes read at once from a body (the buffer shrinks to this after a long head).
pub const BODY_READ: usize = 4096;
/// Most (decoded) body bytes scanned for the judge's answer. A judge echo is about 1 KiB.
pub const MAX_BODY: u64 = 64 * 1024;
/// Most raw body bytes read (framing included): tiny chunks cannot stretch the scan.
pub const MAX_RAW_BODY: u64 = 4 * MAX_BODY;
/// Most header fields in one head.
pub const MAX_HEADERS: usize = 64;
/// Most interim (1xx) answers skipped before the final one.
pub const MAX_INTERIM: u8 = 8;
/// Longest chunk-size line (extensions included) and longest trailer section.
pub const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 8 * 1024;

/// How the body after a head is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Offset of the first body byte in the buffer.
    pub len: usize,
    pub framing: Framing,
    /// The connection may carry another request after this answer (RFC 9112 §9.3):
    /// HTTP/1.1 without `close`, or HTTP/1.0 with `keep-alive`, in `Connection` or the
    /// `Proxy-Connection` old proxies still send.
    pub persistent: bool,
}

/// Parses a head from `buf`. `Ok(None)`: incomplete. Conflicting or malformed framing
/// (two different lengths, a length that is not digits, a length beside a
/// transfer-coding) is a protocol error: such answers are how smuggling starts.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Reason> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Err(Reason::ProxyProtocolError),
    };
    let status = resp.code.ok_or(Reason::ProxyProtocolError)?;
    let mut length: Option<u64> = None;
    let mut last_coding: Option<&[u8]> = None;
    // HTTP/1.1 persists by default, HTTP/1.0 only when asked; `close` anywhere wins.
    let (mut close, mut keep_alive) = (false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") || h.name.eq_ignore_ascii_case("proxy-connection") {
            for option in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
            continue;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            for item in h.value.split(|&b| b == b',') {
                let n = content_length(item.trim_ascii())?;
                if length.is_some_and(|l| l != n) {
                    return Err(Reason::ProxyProtocolError);
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty()) {
                last_coding = Some(coding);
            }
        }
    }
    let framing = match (last_coding, length) {
        (Some(_), Some(_)) => return Err(Reason::ProxyProtocolError),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
        (Some(_), None) => Framing::Close,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Close,
    };
    let persistent = !close && (resp.version == Some(1) || keep_alive);
    Ok(Some(Head { status, len, framing, persistent }))
}

/// `1*DIGIT`, fitting in a `u64`.
fn content_length(v: &[u8]) -> Result<u64, Reason> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(Reason::ProxyProtocolError);
    }
    v.iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d.wrapping_sub(b'0'))))
        .ok_or(Reason::ProxyProtocolError)
}

/// Reads one more piece into `buf`, growing it (doubling, at least 1 KiB) only up to
/// `cap`, and always leaving room for at least one byte. `Ok(0)` is end of stream.
async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, cap: usize) -> Result<usize, Failure> {
    if buf.len() == buf.capacity() {
        let room = cap.saturating_sub(buf.len()).max(1);
        buf.reserve_exact(buf.capacity().max(1024).min(room));
    }
    s.read_buf(buf).await.map_err(Failure::io)
}

/// Reads until a complete final head is in `buf`, skipping up to [`MAX_INTERIM`]
/// interim (1xx) answers. Silence until the deadline is `silent` (the proxy never
/// answered); a partial answer is [`Reason::Timeout`].
pub fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    deadline: Instant,
    silent: Reason,
) -> impl Future<Output = Result<Head, Failure>> {
    async move {
        let mut interim: u8 = 0;
        // Bytes already known not to end a head: a head trickled in small reads is parsed
        // once it can be complete, not once per read (which would be quadratic).
        let mut scanned: usize = 0;
        loop {
            if !buf.is_empty()
                && may_end_head(buf, scanned)
                && let Some(head) = parse_head(buf)?
            {
                if !(100..200).contains(&head.status) || head.status == 101 {
                    return Ok(head);
                }
                interim = interim.saturating_add(1);
                if interim > MAX_INTERIM {
                    return Err(Reason::ProxyProtocolError.into());
                }
                buf.drain(..head.len.min(buf.len()));
                scanned = 0;
                continue;
            }
            scanned = buf.len();
            if buf.len() >= MAX_HEAD {
                return Err(Reason::ProxyProtocolError.into());
            }
            let on_timeout = if buf.is_empty() && interim == 0 { silent } else { Reason::Timeout };
            let n = within(deadline, on_timeout, read_more(s, buf, MAX_HEAD)).await?;
            if n == 0 {
                return Err(Reason::ProxyClosed.into());
            }
        }
    }
}

/// Whether a parse is worth trying: the first bytes (garbage fails at once), or a new
/// line end. A long line trickled a byte at a time costs no parse until it ends: at most
/// one parse per line of a head capped at [`MAX_HEAD`].
fn may_end_head(buf: &[u8], scanned: usize) -> bool {
    scanned == 0 || memchr::memchr(b'\n', buf.get(scanned..).unwrap_or_default()).is_some()
}

/// What the body of a valid judge answer must contain.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    /// This text anywhere.
    Text(&'a [u8]),
    /// The query parameter `name` echoed back as a JSON member `"name": "value"`, as echo
    /// judges (httpbin's `/get`, our `/judge`) print it. A page that merely repeats the
    /// requested URL (a captive portal's `?redirect=…`) contains `name=value` instead and
    /// does not pass.
    Echoed { name: &'a str, value: &'a [u8] },
}

impl Expect<'_> {
    /// How many trailing bytes of scanned body a match may still start in: the needle,
    /// and for an echoed parameter its `"name": "` prefix with some whitespace.
    fn overlap(&self) -> usize {
        match *self {
            Expect::Text(t) => t.len(),
            Expect::Echoed { name, value } => name.len().saturating_add(value.len()).saturating_add(64),
        }
    }

    pub fn found(&self, body: &[u8]) -> bool {
        match *self {
            Expect::Text(t) => memchr::memmem::find(body, t).is_some(),
            Expect::Echoed { name, value } => memchr::memmem::find_iter(body, value).any(|i| {
                let (before, after) = body.split_at(i);
                let member = before
                    .strip_suffix(b"\"")
                    .map(<[u8]>::trim_ascii_end)
                    .and_then(|b| b.strip_suffix(b":"))
                    .map(<[u8]>::trim_ascii_end)
                    .and_then(|b| b.strip_suffix(b"\""))
                    .and_then(|b| b.strip_suffix(name.as_bytes()))
                    .is_some_and(|b| b.ends_with(b"\""));
                member && after.get(value.len()) == Some(&b'"')
            }),
        }
    }
}

/// A body as [`read_body`] read it.
#[derive(Debug)]
pub struct Body {
    /// De-framed, at most the cap.
    pub bytes: Vec<u8>,
    /// `false`: the deadline came first, and `bytes` is what had arrived (a proxy that
    /// sends the answer and then stalls).
    pub complete: bool,
    /// The body ended where its framing said, with no byte after it: the connection may
    /// carry another exchange (if the head said it persists).
    pub clean_end: bool,
}

/// Reads the whole body after `head` (its first bytes already in `buf`), de-framed, up to
/// `cap` bytes (what is past the cap is not read).
pub fn read_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    head: Head,
    cap: usize,
    deadline: Instant,
) -> impl Future<Output = Result<Body, Failure>> {
    async move {
        buf.drain(..head.len.min(buf.len()));
        // A long head grew the buffer; the body never needs more than one read's worth.
        buf.shrink_to(BODY_READ);
        let mut body = BodyReader::new(head.framing);
        let mut out = Vec::with_capacity(buf.len().clamp(256, BODY_READ).min(cap));
        loop {
            let end = body.take(buf, &mut out).map_err(|BadChunk| Failure::Dead(Reason::ProxyProtocolError))?;
            buf.clear();
            if end || out.len() >= cap {
                let clean_end = end && !body.overrun && out.len() <= cap;
                if out.len() > cap {
                    out.truncate(cap);
                    out.shrink_to(cap);
                }
                return Ok(Body { bytes: out, complete: true, clean_end });
            }
            let read = within(deadline, Reason::Timeout, read_more(s, buf, BODY_READ)).await;
            let n = match (read, body.framing) {
                (Ok(n), _) => n,
                // A close-delimited body may end without TLS's close_notify: that is its end.
                (Err(Failure::Dead(Reason::ProxyClosed)), Framing::Close) => 0,
                (Err(Failure::Dead(Reason::Timeout)), _) if !out.is_empty() => {
                    return Ok(Body { bytes: out, complete: false, clean_end: false });
                }
                (Err(e), _) => return Err(e),
            };
            if n == 0 {
                return match body.framing {
                    Framing::Close => Ok(Body { bytes: out, complete: true, clean_end: false }),
                    Framing::Length(_) | Framing::Chunked => Err(Reason::ProxyClosed.into()),
                };
            }
        }
    }
}

/// Reads the body after `head` (its first bytes already in `buf`) until `expect` is
/// satisfied (alive), or the body ends without it ([`Reason::ContentMismatch`]), or
/// [`MAX_BODY`] bytes were scanned in vain (also a mismatch). A body cut short is
/// [`Reason::ProxyClosed`]; broken chunked framing is [`Reason::ProxyProtocolError`].
/// `Ok(true)`: the body had also ended cleanly (see [`Body::clean_end`]).
pub fn expect_in_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    head: Head,
    expect: Expect<'_>,
    deadline: Instant,
) -> impl Future<Output = Result<bool, Failure>> {
    async move {
        buf.drain(..head.len.min(buf.len()));
        // A long head grew the buffer; the body never needs more than one read's worth.
        buf.shrink_to(BODY_READ);
        let mut body = BodyReader::new(head.framing);
        let mut window = Vec::with_capacity(buf.len().clamp(256, BODY_READ));
        let keep = expect.overlap();
        loop {
            let end = body.take(buf, &mut window).map_err(|BadChunk| Failure::Dead(Reason::ProxyProtocolError))?;
            buf.clear();
            if expect.found(&window) {
                return Ok(end && !body.overrun);
            }
            if end || body.decoded >= MAX_BODY || body.raw >= MAX_RAW_BODY {
                return Err(Reason::ContentMismatch.into());
            }
            // Only the tail a split match can start in is kept: the window stays small.
            window.drain(..window.len().saturating_sub(keep));
            let n = within(deadline, Reason::Timeout, read_more(s, buf, BODY_READ)).await?;
            if n == 0 {
                return Err(match body.framing {
                    Framing::Close => Reason::ContentMismatch,
                    Framing::Length(_) | Framing::Chunked => Reason::ProxyClosed,
                }
                .into());
            }
        }
    }
}

/// De-frames a body as its raw bytes arrive.
#[derive(Debug)]
pub struct BodyReader {
    framing: Framing,
    chunks: Dechunker,
    /// Body bytes decoded so far.
    pub decoded: u64,
    /// Raw body bytes seen so far (framing included).
    pub raw: u64,
    /// Bytes came after the body's end (ignored; but the connection is not reusable).
    pub overrun: bool,
}

impl BodyReader {
    pub fn new(framing: Framing) -> Self {
        Self { framing, chunks: Dechunker::default(), decoded: 0, raw: 0, overrun: false }
    }

    /// Appends the body bytes in `raw` to `out`. `Ok(true)`: the body is complete (bytes
    /// past its end are ignored, and noted in [`Self::overrun`]).
    pub fn take(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<bool, BadChunk> {
        self.raw = self.raw.saturating_add(raw.len() as u64);
        let before = out.len();
        let end = match &mut self.framing {
            Framing::Close => {
                out.extend_from_slice(raw);
                false
            }
            Framing::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(raw.len());
                out.extend_from_slice(raw.get(..n).unwrap_or_default());
                *left = left.saturating_sub(n as u64);
                self.overrun |= n < raw.len();
                *left == 0
            }
            Framing::Chunked => {
                let (end, rest) = self.chunks.decode_rest(raw, out)?;
                self.overrun |= rest > 0;
                end
            }
        };
        self.decoded = self.decoded.saturating_add(out.len().saturating_sub(before) as u64);
        Ok(end)
    }
}

/// A chunked body that does not follow RFC 9112's framing.
#[derive(Debug, PartialEq, Eq)]
pub struct BadChunk;

/// Where the chunked decoder is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// In a chunk-size line: the size so far, its digits, and whether an extension (or
    /// whitespace) began.
    #[default]
    SizeStart,
    Size {
        value: u64,
        digits: u8,
        ext: bool,
    },
    /// A CR ended the size line; LF must follow.
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    /// After a chunk's data: CRLF (or a bare LF) must follow.
    DataCr,
    DataLf,
    /// In the trailer section; `empty` while the current line has no byte yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// An incremental chunked decoder: feed it the raw bytes as they come, in any pieces;
/// it is linear in the bytes fed and keeps only counters between calls.
#[derive(Clone, Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
    /// Bytes in the current size line, and in the trailer section.
    line: usize,
    trailers: usize,
}

impl Dechunker {
    /// Decodes `input`, appending chunk data to `out`. `Ok(true)` once the last chunk and
    /// the trailer section ended (later bytes are ignored).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, BadChunk> {
        self.decode_rest(input, out).map(|(end, _)| end)
    }

    /// [`Self::decode`], and how many bytes of `input` came after the end.
    pub fn decode_rest(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(bool, usize), BadChunk> {
        loop {
            if self.state == ChunkState::Done {
                return Ok((true, input.len()));
            }
            if input.is_empty() {
                return Ok((false, 0));
            }
            if let ChunkState::Data { left } = self.state {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                let (data, rest) = input.split_at(n);
                out.extend_from_slice(data);
                input = rest;
                let left = left.saturating_sub(n as u64);
                self.state = if left == 0 { ChunkState::DataCr } else { ChunkState::Data { left } };
                continue;
            }
            let Some((&b, rest)) = input.split_first() else { return Ok((false, 0)) };
            input = rest;
            self.state = self.step(b)?;
        }
    }

    /// One framing byte.
    fn step(&mut self, b: u8) -> Result<ChunkState, BadChunk> {
        use ChunkState as S;
        Ok(match self.state {
            S::SizeStart | S::Size { .. } => {
                self.line = self.line.saturating_add(1);
                if self.line > MAX_CHUNK_LINE {
                    return Err(BadChunk);
                }
                let (value, digits, ext) = match self.state {
                    S::Size { value, digits, ext } => (value, digits, ext),
                    _ => (0, 0, false),
                };
                match (b, ext) {
                    (b'\r', _) if digits > 0 => S::SizeLf { value },
                    (b'\n', _) if digits > 0 => self.chunk(value),
                    (b';' | b' ' | b'\t', _) if digits > 0 => S::Size { value, digits, ext: true },
                    (_, true) if b != b'\r' && b != b'\n' => S::Size { value, digits, ext },
                    (_, false) => {
                        let d = (b as char).to_digit(16).ok_or(BadChunk)?;
                        // 16 hex digits fill a u64; more is an overflow, not a size.
                        let digits = digits.checked_add(1).filter(|d| *d <= 16).ok_or(BadChunk)?;
                        let value = value.checked_mul(16).and_then(|v| v.checked_add(u64::from(d))).ok_or(BadChunk)?;
                        S::Size { value, digits, ext }
                    }
                    _ => return Err(BadChunk),
                }
            }
            S::SizeLf { value } if b == b'\n' => self.chunk(value),
            S::DataCr if b == b'\r' => S::DataLf,
            S::DataCr | S::DataLf if b == b'\n' => S::SizeStart,
            S::Trailer { empty } | S::TrailerLf { empty } => {
                self.trailers = self.trailers.saturating_add(1);
                if self.trailers > MAX_TRAILERS {
                    return Err(BadChunk);
                }
                match (b, self.state) {
                    (b'\n', _) if empty => S::Done,
                    (b'\n', _) => S::Trailer { empty: true },
                    (b'\r', S::Trailer { .. }) => S::TrailerLf { empty },
                    (_, S::Trailer { .. }) => S::Trailer { empty: false },
                    _ => return Err(BadChunk),
                }
            }
            S::SizeLf { .. } | S::DataCr | S::DataLf | S::Data { .. } | S::Done => return Err(BadChunk),
        })
    }

    /// The size line ended: data follows, or the trailer section after the last chunk.
    fn chunk(&mut self, size: u64) -> ChunkState {
        self.line = 0;
        if size == 0 { ChunkState::Trailer { empty: true } } else { ChunkState::Data { left: size } }
    }
}

/// Decodes a whole chunked body. `Ok(None)`: incomplete; `Err`: malformed.
pub fn dechunk(input: &[u8]) -> Result<Option<Vec<u8>>, BadChunk> {
    let mut out = Vec::new();
    Ok(Dechunker::default().decode(input, &mut out)?.then_some(out))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    /// A head that never ends and a 4 GB body stop at their caps, whatever the read sizes
    /// and the buffer's starting capacity (growth near the cap once panicked).
    #[tokio::test]
    async fn an_endless_head_and_a_huge_body_stop_at_the_caps() {
        let mut endless = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
        endless.resize(4 * MAX_HEAD, b'a');
        let huge_head = b"HTTP/1.1 200 OK\r\nContent-Length: 4294967296\r\n\r\n";
        let mut huge = huge_head.to_vec();
        huge.resize(4 * MAX_BODY as usize, b'x');
        let expect = Expect::Text(b"nonce");
        for start in [0, 1000, 3000] {
            for chunk in [3, 1000, 4096] {
                let deadline = Instant::now() + std::time::Duration::from_secs(30);
                let mut rx = feed(endless.clone(), chunk);
                let mut buf = Vec::with_capacity(start);
                let r = read_head(&mut rx, &mut buf, deadline, Reason::ProxyTimeout).await;
                assert!(matches!(r, Err(Failure::Dead(Reason::ProxyProtocolError))), "{start}/{chunk}: {r:?}");
                assert!(buf.capacity() <= MAX_HEAD.max(start), "{start}/{chunk}: {}", buf.capacity());

                let mut rx = feed(huge.clone(), chunk);
                let mut buf = Vec::with_capacity(start);
                let head = read_head(&mut rx, &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
                assert_eq!(head.framing, Framing::Length(1 << 32));
                let r = expect_in_body(&mut rx, &mut buf, head, expect, deadline).await;
                assert!(matches!(r, Err(Failure::Dead(Reason::ContentMismatch))), "{start}/{chunk}: {r:?}");
                assert!(buf.capacity() <= MAX_HEAD.max(start), "{start}/{chunk}: {}", buf.capacity());
            }
        }
    }

    /// Writes `data` into a pipe of `chunk`-byte pieces from a task; the reader's end.
    fn feed(data: Vec<u8>, chunk: usize) -> tokio::io::DuplexStream {
        let (mut tx, rx) = tokio::io::duplex(chunk);
        tokio::spawn(async move {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut tx, &data).await;
        });
        rx
    }

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!((h.status, h.len, h.framing), (200, 38, Framing::Length(5)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        let h = parse_head(b"HTTP/1.0 407 Auth\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap().unwrap();
        assert!(h.framing == Framing::Chunked && h.status == 407);
        let h = parse_head(b"HTTP/1.1 200 OK\nContent-Length: 3, 3\nContent-Length: 3\n\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Length(3), "bare LF and equal duplicates are fine");
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Close, "not chunked last: delimited by close");
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunkedx\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Close);
        for bad in [
            &b"\x05\x00garbage"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/9.9 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), Err(Reason::ProxyProtocolError), "{}", String::from_utf8_lossy(bad));
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Err(Reason::ProxyProtocolError));
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_up_to_a_limit() {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let ok = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        let mut buf = Vec::new();
        let head = read_head(&mut trickle(ok), &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
        assert_eq!(head.status, 200);
        let flood: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(usize::from(MAX_INTERIM) + 1).leak();
        let r = read_head(&mut trickle(flood), &mut Vec::new(), deadline, Reason::ProxyTimeout).await;
        assert!(matches!(r, Err(Failure::Dead(Reason::ProxyProtocolError))), "{r:?}");
        let switching = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let head = read_head(&mut trickle(switching), &mut Vec::new(), deadline, Reason::ProxyTimeout).await.unwrap();
        assert_eq!(head.status, 101);
    }

    #[test]
    fn echoed_parameter_must_be_a_json_member() {
        let e = Expect::Echoed { name: "pc_nonce", value: b"abc123" };
        assert!(e.found(br#"{"args": {"pc_nonce": "abc123"}, "url": "http://j/get?pc_nonce=abc123"}"#));
        assert!(e.found(br#"{"args":{"pc_nonce":"abc123"}}"#));
        // A portal repeating the URL, or the bare value, is not an echo.
        assert!(!e.found(b"<a href=\"/login?redirect=http://j/get?pc_nonce=abc123\">log in</a>"));
        assert!(!e.found(b"abc123"));
        assert!(!e.found(b"\"abc123\""));
        assert!(!e.found(br#"{"x_pc_nonce": "abc123"}"#));
        assert!(!e.found(br#"{"pc_nonce": "abc1234"}"#));
    }

    #[test]
    fn chunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"), Ok(Some(b"abcde".to_vec())));
        assert_eq!(dechunk(b"3\nabc\n0\nTrailer: t\r\n\r\n"), Ok(Some(b"abc".to_vec())), "bare LF, trailers");
        assert_eq!(dechunk(b"3\r\nab"), Ok(None));
        assert_eq!(dechunk(b"0\r\n"), Ok(None), "trailer section not ended yet");
        assert_eq!(dechunk(b"zz\r\n"), Err(BadChunk));
        assert_eq!(dechunk(b"\r\n"), Err(BadChunk), "no size");
        assert_eq!(dechunk(b"3\r\nabcXX0\r\n\r\n"), Err(BadChunk));
        // The size that once overflowed `size + 2` and panicked.
        assert_eq!(dechunk(b"ffffffffffffffff\r\nabc"), Ok(None));
        assert_eq!(dechunk(b"10000000000000000\r\n"), Err(BadChunk), "17 hex digits");
        let mut long_ext = b"5;".to_vec();
        long_ext.resize(MAX_CHUNK_LINE + 1, b'x');
        assert_eq!(dechunk(&long_ext), Err(BadChunk));
    }

    /// Decoding in any pieces gives what decoding at once gives.
    #[test]
    fn chunked_decoding_does_not_depend_on_piece_sizes() {
        let body = b"4\r\nxxNO\r\n4;ext\r\nNCEy\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: 1\r\n\r\nafter";
        let whole = dechunk(body).unwrap().unwrap();
        assert_eq!(whole, b"xxNONCEyabcdefghijklmnopqrstuvwxyz");
        for piece in 1..body.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let mut done = false;
            for p in body.chunks(piece) {
                done = d.decode(p, &mut out).unwrap();
            }
            assert!(done && out == whole, "piece {piece}");
        }
    }

    #[tokio::test]
    async fn needle_split_across_reads_and_chunks() {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let text = Expect::Text(b"NONCE");
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nxxNO\r\n4\r\nNCEy\r\n0\r\n\r\n";
        check_body(body, text, deadline).await.unwrap();
        let cases: [(&'static [u8], Reason); 5] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nportal!!!", Reason::ContentMismatch),
            // Past the declared length is not the body.
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcNONCE", Reason::ContentMismatch),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\nabc", Reason::ProxyClosed),
            (b"HTTP/1.1 200 OK\r\n\r\nabc", Reason::ContentMismatch),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX", Reason::ProxyProtocolError),
        ];
        for (answer, reason) in cases {
            let err = check_body(answer, text, deadline).await.unwrap_err();
            assert!(matches!(err, Failure::Dead(r) if r == reason), "{}: {err:?}", String::from_utf8_lossy(answer));
        }
    }

    async fn check_body(answer: &'static [u8], expect: Expect<'_>, deadline: Instant) -> Result<bool, Failure> {
        let mut s = trickle(answer);
        let mut buf = Vec::with_capacity(8);
        let head = read_head(&mut s, &mut buf, deadline, Reason::ProxyTimeout).await?;
        expect_in_body(&mut s, &mut buf, head, expect, deadline).await
    }

    /// Whether an answer leaves the connection usable for another request: the head says
    /// it persists, and the body ended exactly where its framing said.
    #[tokio::test]
    async fn persistence_and_a_clean_end() {
        let persists = |head: &[u8]| parse_head(head).unwrap().unwrap().persistent;
        assert!(persists(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!persists(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"));
        assert!(!persists(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\n\r\n"));
        assert!(!persists(b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\n\r\n"));
        assert!(!persists(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(persists(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"));
        assert!(persists(b"HTTP/1.0 200 OK\r\nProxy-Connection: Keep-Alive\r\n\r\n"));
        assert!(!persists(b"HTTP/1.0 200 OK\r\nConnection: close\r\nProxy-Connection: keep-alive\r\n\r\n"));

        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let text = Expect::Text(b"NONCE");
        let cases: [(&'static [u8], bool); 5] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n-NONCE-", true),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nxxNO\r\n3\r\nNCE\r\n0\r\n\r\n", true),
            // Found before the end: the rest is unread.
            (b"HTTP/1.1 200 OK\r\nContent-Length: 700\r\n\r\n-NONCE-", false),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nNONCE\r\n", false),
            (b"HTTP/1.1 200 OK\r\n\r\n-NONCE-", false),
        ];
        // The scanner stops where it finds the needle: a clean end is seen when the body's
        // end came in the same read (as a judge's small answer does).
        for (answer, clean) in cases {
            let mut rx = feed(answer.to_vec(), 4096);
            let mut buf = Vec::with_capacity(4096);
            let head = read_head(&mut rx, &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
            let r = expect_in_body(&mut rx, &mut buf, head, text, deadline).await.unwrap();
            assert_eq!(r, clean, "{}", String::from_utf8_lossy(answer));
        }
        // Bytes after the end, in the same read: not clean (whole-body reader and scanner).
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n-NONCE-HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nNONCE\r\n0\r\n\r\nX".to_vec();
        for (answer, clean) in [(answer, false), (chunked, false)] {
            let mut rx = feed(answer.clone(), 4096);
            let mut buf = Vec::with_capacity(4096);
            let head = read_head(&mut rx, &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
            let mut copy = buf.clone();
            assert_eq!(expect_in_body(&mut rx, &mut buf, head, text, deadline).await.unwrap(), clean);
            let body = read_body(&mut rx, &mut copy, head, 1024, deadline).await.unwrap();
            assert!(body.complete && body.clean_end == clean && text.found(&body.bytes));
        }
        let mut rx = feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nNONCE".to_vec(), 4096);
        let mut buf = Vec::new();
        let head = read_head(&mut rx, &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
        let body = read_body(&mut rx, &mut buf, head, 1024, deadline).await.unwrap();
        assert!(body.complete && body.clean_end);
        // Cut at the cap: not the end.
        let mut rx = feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nNONCE".to_vec(), 4096);
        let mut buf = Vec::new();
        let head = read_head(&mut rx, &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
        let body = read_body(&mut rx, &mut buf, head, 3, deadline).await.unwrap();
        assert!(body.complete && !body.clean_end && body.bytes == b"NON");
    }

    /// A reader that hands out 3 bytes per read.
    fn trickle(data: &'static [u8]) -> impl AsyncRead + Unpin {
        struct Trickle(&'static [u8]);
        impl AsyncRead for Trickle {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let n = self.0.len().min(3).min(buf.remaining());
                buf.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                std::task::Poll::Ready(Ok(()))
            }
        }
        Trickle(data)
    }
}
