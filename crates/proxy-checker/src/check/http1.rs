//! The check engine's HTTP/1.1 response reader: the hot path, hand-written over httparse.
//!
//! One growable buffer per check (1 KiB to start, capped), no per-response allocation
//! beyond it. Reads the head, then only as much body as validation needs: with a needle
//! it stops as soon as the needle is seen.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::reason::{Failure, Reason};

/// Largest response head accepted; an endless header is a protocol error, not a hang.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body read while looking for the judge's answer. A judge echo is about 1 KiB.
pub const MAX_BODY: usize = 64 * 1024;
const MAX_HEADERS: usize = 48;

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Offset of the first body byte in the buffer.
    pub len: usize,
    pub content_length: Option<u64>,
    pub chunked: bool,
}

/// Parses a head from `buf`. `Ok(None)`: incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Reason> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.ok_or(Reason::ProxyProtocolError)?;
            let mut content_length = None;
            let mut chunked = false;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    let v = std::str::from_utf8(h.value).map_err(|_| Reason::ProxyProtocolError)?;
                    content_length = Some(v.trim().parse::<u64>().map_err(|_| Reason::ProxyProtocolError)?);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = h.value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked"));
                }
            }
            Ok(Some(Head { status, len, content_length, chunked }))
        }
        Err(_) => Err(Reason::ProxyProtocolError),
    }
}

/// Reads one more piece into `buf`. `Ok(0)` is end of stream.
async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, cap: usize) -> Result<usize, Failure> {
    if buf.len() == buf.capacity() {
        // Double, at least 1 KiB, never past the cap (and always room for one byte).
        let room = cap.saturating_sub(buf.len()).max(1);
        buf.reserve(buf.capacity().max(1024).min(room));
    }
    s.read_buf(buf).await.map_err(Failure::io)
}

/// Reads until a complete head is in `buf`. Silence until the deadline is `silent`
/// (the proxy never answered); a partial answer is [`Reason::Timeout`].
pub async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    deadline: Instant,
    silent: Reason,
) -> Result<Head, Failure> {
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err(Reason::ProxyProtocolError.into());
        }
        let on_timeout = if buf.is_empty() { silent } else { Reason::Timeout };
        let n = super::probe::within(deadline, on_timeout, read_more(s, buf, MAX_HEAD)).await?;
        if n == 0 {
            return Err(Reason::ProxyClosed.into());
        }
    }
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
    /// How far back from new bytes a match may start: the needle, and for an echoed
    /// parameter its `"name": "` prefix with some whitespace.
    fn overlap(&self) -> usize {
        match *self {
            Expect::Text(t) => t.len(),
            Expect::Echoed { name, value } => name.len() + value.len() + 64,
        }
    }

    pub fn found(&self, body: &[u8]) -> bool {
        match *self {
            Expect::Text(t) => memchr::memmem::find(body, t).is_some(),
            Expect::Echoed { name, value } => memchr::memmem::find_iter(body, value).any(|i| {
                let before = body[..i].strip_suffix(b"\"").unwrap_or_default();
                let before = before.trim_ascii_end().strip_suffix(b":").unwrap_or_default();
                let before = before.trim_ascii_end().strip_suffix(b"\"").unwrap_or_default();
                before.ends_with(name.as_bytes())
                    && before[..before.len() - name.len()].ends_with(b"\"")
                    && body.get(i + value.len()) == Some(&b'"')
            }),
        }
    }
}

/// Reads the body after `head` until `expect` is satisfied (alive), or the body ends
/// without it ([`Reason::ContentMismatch`]).
pub async fn expect_in_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    head: Head,
    expect: Expect<'_>,
    deadline: Instant,
) -> Result<(), Failure> {
    // Each read is scanned once (plus an overlap for a match split across reads), so a
    // proxy dribbling its body byte by byte costs linear, not quadratic, work.
    let mut scanned: usize = 0;
    loop {
        let body = &buf[head.len..];
        if head.chunked {
            // Decoding is tried when a read brings what can end a chunked body.
            if memchr::memmem::find(&body[scanned.saturating_sub(3)..], b"\r\n\r\n").is_some()
                && let Some(done) = chunked_verdict(body, expect)
            {
                return done;
            }
        } else {
            if expect.found(&body[scanned.saturating_sub(expect.overlap())..]) {
                return Ok(());
            }
            if head.content_length.is_some_and(|cl| body.len() as u64 >= cl) {
                return Err(Reason::ContentMismatch.into());
            }
        }
        scanned = body.len();
        if body.len() >= MAX_BODY {
            let verdict = if head.chunked { chunked_verdict(body, expect) } else { None };
            return verdict.unwrap_or(Err(Reason::ContentMismatch.into()));
        }
        let n = super::probe::within(deadline, Reason::Timeout, read_more(s, buf, head.len + MAX_BODY)).await?;
        if n == 0 {
            let body = &buf[head.len..];
            if head.chunked {
                return chunked_verdict(body, expect).unwrap_or(Err(Reason::ProxyClosed.into()));
            }
            // A body delimited by close ends here; a declared one was cut short.
            let delimited_by_close = head.content_length.is_none();
            return Err(if delimited_by_close { Reason::ContentMismatch } else { Reason::ProxyClosed }.into());
        }
    }
}

/// The verdict on a chunked body if it is complete or malformed; `None` while incomplete.
fn chunked_verdict(body: &[u8], expect: Expect<'_>) -> Option<Result<(), Failure>> {
    match dechunk(body) {
        Ok(Some(decoded)) => Some(if expect.found(&decoded) { Ok(()) } else { Err(Reason::ContentMismatch.into()) }),
        Ok(None) => None,
        Err(BadChunk) => Some(Err(Reason::ProxyProtocolError.into())),
    }
}

/// A chunked body that does not follow RFC 9112's framing.
#[derive(Debug, PartialEq, Eq)]
pub struct BadChunk;

/// Decodes a chunked body. `Ok(None)`: incomplete; `Err`: malformed.
pub fn dechunk(mut input: &[u8]) -> Result<Option<Vec<u8>>, BadChunk> {
    let mut out = Vec::with_capacity(input.len());
    loop {
        let Some(eol) = memchr::memmem::find(input, b"\r\n") else {
            return if input.len() > 64 { Err(BadChunk) } else { Ok(None) };
        };
        let size_field = &input[..eol];
        let size_hex = size_field.split(|&b| b == b';').next().unwrap_or_default();
        let size_str = std::str::from_utf8(size_hex).map_err(|_| BadChunk)?.trim();
        let size = usize::from_str_radix(size_str, 16).map_err(|_| BadChunk)?;
        input = &input[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if input.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&input[..size]);
        if &input[size..size + 2] != b"\r\n" {
            return Err(BadChunk);
        }
        input = &input[size + 2..];
    }
}

#[cfg(test)]
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
        huge.resize(4 * MAX_BODY, b'x');
        let expect = Expect::Text(b"nonce");
        for start in [0, 1000, 3000] {
            for chunk in [3, 1000, 4096] {
                let (mut tx, mut rx) = tokio::io::duplex(chunk);
                let data = endless.clone();
                let writer = tokio::spawn(async move {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut tx, &data).await;
                });
                let mut buf = Vec::with_capacity(start);
                let deadline = Instant::now() + std::time::Duration::from_secs(5);
                let r = read_head(&mut rx, &mut buf, deadline, Reason::ProxyTimeout).await;
                assert!(matches!(r, Err(Failure::Dead(Reason::ProxyProtocolError))), "{start}/{chunk}: {r:?}");
                assert!(buf.len() <= MAX_HEAD + chunk, "{start}/{chunk}: {}", buf.len());
                writer.abort();

                let (mut tx, mut rx) = tokio::io::duplex(chunk);
                let data = huge.clone();
                let writer = tokio::spawn(async move {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut tx, &data).await;
                });
                let mut buf = Vec::with_capacity(start);
                let head = read_head(&mut rx, &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
                assert_eq!(head.content_length, Some(1 << 32));
                let r = expect_in_body(&mut rx, &mut buf, head, expect, deadline).await;
                assert!(matches!(r, Err(Failure::Dead(Reason::ContentMismatch))), "{start}/{chunk}: {r:?}");
                assert!(buf.len() <= huge_head.len() + MAX_BODY + chunk, "{start}/{chunk}: {}", buf.len());
                writer.abort();
            }
        }
    }

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!((h.status, h.len, h.content_length, h.chunked), (200, 38, Some(5), false));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert_eq!(parse_head(b"\x05\x00garbage"), Err(Reason::ProxyProtocolError));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), Err(Reason::ProxyProtocolError));
        let h = parse_head(b"HTTP/1.0 407 Auth\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap().unwrap();
        assert!(h.chunked && h.status == 407);
    }

    #[test]
    fn echoed_parameter_must_be_a_json_member() {
        let e = Expect::Echoed { name: "pc_nonce", value: b"abc123" };
        assert!(e.found(br#"{"args": {"pc_nonce": "abc123"}, "url": "http://j/get?pc_nonce=abc123"}"#));
        assert!(e.found(br#"{"args":{"pc_nonce":"abc123"}}"#));
        // A portal repeating the URL, or the bare value, is not an echo.
        assert!(!e.found(b"<a href=\"/login?redirect=http://j/get?pc_nonce=abc123\">log in</a>"));
        assert!(!e.found(b"abc123"));
        assert!(!e.found(br#"{"x_pc_nonce": "abc123"}"#));
        assert!(!e.found(br#"{"pc_nonce": "abc1234"}"#));
    }

    #[test]
    fn chunks() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"), Ok(Some(b"abcde".to_vec())));
        assert_eq!(dechunk(b"3\r\nab"), Ok(None));
        assert_eq!(dechunk(b"zz\r\n"), Err(BadChunk));
        assert_eq!(dechunk(b"3\r\nabcXX0\r\n\r\n"), Err(BadChunk));
    }

    #[tokio::test]
    async fn needle_split_across_reads_and_chunks() {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nxxNO\r\n4\r\nNCEy\r\n0\r\n\r\n";
        let text = Expect::Text(b"NONCE");
        let mut s = tokio_test_reader(body);
        let mut buf = Vec::with_capacity(8);
        let head = read_head(&mut s, &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
        expect_in_body(&mut s, &mut buf, head, text, deadline).await.unwrap();

        let body = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nportal!!!";
        let mut s = tokio_test_reader(body);
        let mut buf = Vec::new();
        let head = read_head(&mut s, &mut buf, deadline, Reason::ProxyTimeout).await.unwrap();
        let err = expect_in_body(&mut s, &mut buf, head, text, deadline).await.unwrap_err();
        assert!(matches!(err, Failure::Dead(Reason::ContentMismatch)));
    }

    /// A reader that hands out 3 bytes per read.
    fn tokio_test_reader(data: &'static [u8]) -> impl AsyncRead + Unpin {
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
