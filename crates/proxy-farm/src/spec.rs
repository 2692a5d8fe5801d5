//! What the farm simulates: groups of proxies with a protocol and a behaviour, laid out
//! on consecutive loopback addresses, and the ground truth a correct checker must reach.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Protocol a simulated proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
    Socks4,
    Socks5,
}

impl Protocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Socks4 => "socks4",
            Protocol::Socks5 => "socks5",
        }
    }

    /// The scheme a client uses in a URL for this proxy: an `https` proxy of a list is an
    /// HTTP proxy that tunnels, spoken to in plain HTTP.
    pub fn client_scheme(self) -> &'static str {
        match self {
            Protocol::Http | Protocol::Https => "http",
            other => other.scheme(),
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

/// How a simulated proxy behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behavior {
    /// Forwards and tunnels; answers after the group's latency.
    Working,
    /// HTTP family: forwards, refuses CONNECT (405).
    ForwardOnly,
    /// HTTP family: tunnels, refuses absolute-URI GET (403).
    TunnelOnly,
    /// Nothing listens: the SYN gets a reset.
    Refused,
    /// The SYN is dropped (a listener whose accept queue is full).
    Blackhole,
    /// Accepts and never says anything.
    Silent,
    /// Accepts and closes at once.
    CloseAtOnce,
    /// Answers with bytes that are no protocol.
    Garbage,
    /// Answers every request with its own page, status 200 (a captive portal).
    WrongPage,
    /// A captive portal whose page repeats the requested URL (nonce included) in a
    /// `?redirect=` link.
    PortalWithUrl,
    /// Requires `user{i}`/`pass{i}`; the list carries the right ones.
    AuthGood,
    /// Requires credentials; the list carries a wrong password.
    AuthBad,
    /// Takes an hour to answer the judge request.
    TooSlow,
    /// Sends the judge answer one byte every 200 ms.
    Trickle,
    /// Closes the first connection at once, then works.
    Flaky,
    /// Tunnels, but terminates TLS itself with a certificate nobody trusts.
    Mitm,
    /// Works, the old way: HTTP/1.0 answers delimited by close, SOCKS4 replies with
    /// version byte 4 (common in the wild).
    OldStyle,
    /// Works; the judge answer comes chunked, in pieces that split the nonce.
    Chunked,
    /// Works; adds `Via` and `X-Forwarded-For: <client address>` to the requests it
    /// forwards: a transparent proxy.
    Transparent,
    /// Works; adds `Via` to the requests it forwards: an anonymous proxy.
    Anonymous,
    /// Answers the judge request with a status line and then header lines forever.
    EndlessHeader,
    /// Answers 200 with `Content-Length: 4294967296` and streams filler until hung up on.
    HugeBody,
    /// SOCKS5: a reply whose address length (255) runs past what is sent before the
    /// close. SOCKS4: an HTTP error page where the 8-byte reply belongs. HTTP proxies of
    /// this behaviour work.
    BogusSocks,
    /// Inside a tunnel to the TLS judge, answers the ClientHello with garbage.
    TlsGarbage,

    // Hostile answers ([`Behavior::HOSTILE`]). Unless said otherwise the judge's answer is
    // corrupted wherever it is given: forwarded, inside a CONNECT tunnel and inside a SOCKS
    // tunnel, plain or TLS.
    //
    // Chunked framing.
    /// Chunk size `ffffffffffffffff` (u64::MAX), then filler without the nonce, forever.
    ChunkSizeMax,
    /// The judge answer in one chunk whose size has 17 hex digits: 2^64 + the real size,
    /// so a reader that wraps around reads the right chunk.
    ChunkSizeTooLong,
    /// The judge answer in one chunk whose size is written `0x…`.
    ChunkSizePrefixed,
    /// The judge answer in one chunk whose size is written `+…`.
    ChunkSizeSigned,
    /// The judge answer in one chunk whose size line carries 100 KB of extensions.
    ChunkExtensionFlood,
    /// The judge answer in one chunk not followed by CRLF.
    ChunkMissingCrlf,
    /// Well-formed 1 KiB chunks of filler, forever, never the nonce nor a last chunk.
    EndlessChunks,
    /// Declares a 2 GiB chunk, sends 1 KiB of filler and closes.
    HugeChunkThenClose,
    /// Works: chunked with chunk extensions and trailer fields (odd but valid).
    ChunkedTrailers,
    // Content-Length.
    /// `Content-Length: 99999999999999999999999` (past u64).
    ContentLengthOverflow,
    /// `Content-Length: -1`.
    ContentLengthNegative,
    /// `Content-Length: +N`.
    ContentLengthSigned,
    /// Two different Content-Lengths.
    ContentLengthConflict,
    /// `Content-Length: 2`: the judge answer comes after the declared end.
    ContentLengthShort,
    /// Declares 4 KiB more than it sends (no nonce in what it sends), then closes.
    ContentLengthLong,
    /// Content-Length and `Transfer-Encoding: chunked` together (a smuggling shape).
    ContentLengthAndChunked,
    /// Works: the same Content-Length twice (odd but valid).
    ContentLengthTwice,
    // Transfer-Encoding.
    /// `Transfer-Encoding: gzip`, the answer gzip-compressed and delimited by close.
    TransferEncodingGzip,
    /// `Transfer-Encoding: xchunkedx` over a chunked answer: not chunked, so the framing
    /// stays in the body and splits the nonce.
    TransferEncodingUnknown,
    // Interim answers.
    /// `100 Continue`, forever.
    ContinueFlood,
    /// Works: one `100 Continue` before the 200 (odd but valid).
    OneContinue,
    /// Works: `102 Processing` and `103 Early Hints` with a `Link` before the 200.
    EarlyHints,
    /// `101 Switching Protocols`, then the judge answer.
    SwitchingProtocols,
    // The head.
    /// A NUL byte in a header value.
    NulInHead,
    /// Status code `2000`.
    StatusFourDigits,
    /// `HTTP/9.9 200 OK`.
    HttpVersion99,
    /// HTTP/0.9: the judge's body with no status line at all.
    Http09,
    /// The HTTP/2 connection preface and a SETTINGS frame.
    Http2Preface,
    /// 1000 short headers (12 KB: under the head-size limit, over the header count).
    ThousandHeaders,
    /// Works: 60 headers (odd but valid).
    SixtyHeaders,
    /// One header whose value is 1 MB.
    HugeHeaderValue,
    /// Works: every line ends in a bare LF (odd but valid).
    BareLf,
    // Timing and connection handling.
    /// A head that never ends, one byte every 100 ms.
    SlowlorisHead,
    /// 200 delimited by close, then 16 bytes of filler every 100 ms, forever.
    EndlessSlowBody,
    /// The whole head, then silence with the connection open.
    StallAfterHead,
    /// Resets the connection (SO_LINGER 0) right after reading the request (HTTP request,
    /// CONNECT or SOCKS request).
    ResetAfterRequest,
    /// Part of the status line and a header, then a half-close (FIN, still reading).
    HalfCloseMidHead,
    // Content.
    /// A cached judge answer: the echo of an earlier request, with its stale nonce.
    StaleNonce,
    /// Sends our own request back as the "response".
    EchoRequest,
    /// `302 Found` to a login page.
    RedirectLogin,
    /// A 200 portal form carrying each query value in a hidden `<input value="…">`.
    NonceInAttribute,
    /// A 200 JSON page with each query value under other keys (`x_K`, `K_seen`, `value`).
    NonceUnderOtherKey,
    // Handshakes.
    /// A banner line right after the CONNECT 200 or SOCKS reply (before we send), and
    /// ahead of a forwarded answer's status line.
    Banner,
    /// Completes the CONNECT (200) or SOCKS handshake, then closes; a forwarded request
    /// is closed on unanswered.
    CloseAfterHandshake,
    /// Works: HTTP family, CONNECT answered 200 with headers (`Proxy-Agent`,
    /// `Content-Length: 0`, which a client must ignore).
    ChattyConnect,
    /// SOCKS5: method reply with version byte 4.
    Socks5WrongVersion,
    /// SOCKS5: picks username/password although only "no auth" was offered.
    Socks5UnofferedAuth,
    /// SOCKS5: method 0xFF, no acceptable methods.
    Socks5NoMethods,
    /// SOCKS5: connect reply with address type 0x09.
    Socks5BadAddressType,
    /// SOCKS5: connect reply REP=1, general failure.
    Socks5Failure,
    /// SOCKS5: an HTTP error page where the method reply belongs.
    Socks5HttpReply,
    /// SOCKS5: one byte of the method reply, then silence.
    Socks5OneByte,
    /// Works: SOCKS5 connect reply with a domain address of length 0 (the bound address
    /// is informational; the reply is well framed).
    Socks5EmptyDomain,
    /// SOCKS4: 4 of the 8 reply bytes, then a close.
    Socks4ShortReply,
    /// SOCKS4: reply 0x5b, request rejected.
    Socks4Rejected,
    // Keep-alive (HTTP family; SOCKS proxies of these behaviours work). Each answers the
    // first forwarded request as persistent (HTTP/1.1, no `Connection: close`) and then
    // breaks its word; a fresh connection works. A checker that sends its CONNECT on the
    // kept connection must not take what follows for the proxy's verdict.
    /// Closes the connection right after the answer.
    KeepAliveThenClose,
    /// Keeps the connection open and never answers on it again.
    KeepAliveThenMute,
    /// Answers the next request on the connection `400 Bad Request`.
    KeepAliveThenRefuse,
    /// Answers the next request on the connection with bytes that are no protocol.
    KeepAliveThenGarbage,
    /// Sends a second, unasked-for answer (`200 Connection established`) right behind the
    /// first, in the same write.
    KeepAliveExtraAnswer,
}

impl Behavior {
    /// The behaviours that attack a checker's reader: malformed and adversarial answers,
    /// and odd-but-valid ones a checker must not kill a working proxy for.
    pub const HOSTILE: [Behavior; 60] = {
        use Behavior::*;
        [
            ChunkSizeMax,
            ChunkSizeTooLong,
            ChunkSizePrefixed,
            ChunkSizeSigned,
            ChunkExtensionFlood,
            ChunkMissingCrlf,
            EndlessChunks,
            HugeChunkThenClose,
            ChunkedTrailers,
            ContentLengthOverflow,
            ContentLengthNegative,
            ContentLengthSigned,
            ContentLengthConflict,
            ContentLengthShort,
            ContentLengthLong,
            ContentLengthAndChunked,
            ContentLengthTwice,
            TransferEncodingGzip,
            TransferEncodingUnknown,
            ContinueFlood,
            OneContinue,
            EarlyHints,
            SwitchingProtocols,
            NulInHead,
            StatusFourDigits,
            HttpVersion99,
            Http09,
            Http2Preface,
            ThousandHeaders,
            SixtyHeaders,
            HugeHeaderValue,
            BareLf,
            SlowlorisHead,
            EndlessSlowBody,
            StallAfterHead,
            ResetAfterRequest,
            HalfCloseMidHead,
            StaleNonce,
            EchoRequest,
            RedirectLogin,
            NonceInAttribute,
            NonceUnderOtherKey,
            Banner,
            CloseAfterHandshake,
            ChattyConnect,
            Socks5WrongVersion,
            Socks5UnofferedAuth,
            Socks5NoMethods,
            Socks5BadAddressType,
            Socks5Failure,
            Socks5HttpReply,
            Socks5OneByte,
            Socks5EmptyDomain,
            Socks4ShortReply,
            Socks4Rejected,
            KeepAliveThenClose,
            KeepAliveThenMute,
            KeepAliveThenRefuse,
            KeepAliveThenGarbage,
            KeepAliveExtraAnswer,
        ]
    };

    /// Whether a proxy of this behaviour answers a forwarded request as persistent and
    /// reads another request on the connection (the others close after one answer).
    pub fn keeps_alive(self) -> bool {
        use Behavior::*;
        matches!(
            self,
            Working
                | ForwardOnly
                | Flaky
                | AuthGood
                | Chunked
                | Transparent
                | Anonymous
                | Mitm
                | TlsGarbage
                | BogusSocks
                | KeepAliveThenClose
                | KeepAliveThenMute
                | KeepAliveThenRefuse
                | KeepAliveThenGarbage
                | KeepAliveExtraAnswer
        )
    }

    /// Whether a proxy of `protocol` shows this behaviour at all; where it does not (a
    /// SOCKS-only fault on an HTTP proxy, CONNECT-only on SOCKS) the proxy works.
    pub fn applies_to(self, protocol: Protocol) -> bool {
        use Behavior::*;
        match self {
            ForwardOnly | TunnelOnly | ChattyConnect => protocol.is_http(),
            KeepAliveThenClose | KeepAliveThenMute | KeepAliveThenRefuse | KeepAliveThenGarbage
            | KeepAliveExtraAnswer => protocol.is_http(),
            BogusSocks => !protocol.is_http(),
            Socks5WrongVersion | Socks5UnofferedAuth | Socks5NoMethods | Socks5BadAddressType | Socks5Failure
            | Socks5HttpReply | Socks5OneByte | Socks5EmptyDomain => protocol == Protocol::Socks5,
            Socks4ShortReply | Socks4Rejected => protocol == Protocol::Socks4,
            _ => true,
        }
    }
}

/// Consecutive proxies with one protocol and behaviour.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    pub count: u32,
    pub protocol: Protocol,
    pub behavior: Behavior,
    /// Delay before the judge answer (Working, Flaky, Auth*, Forward/TunnelOnly).
    #[serde(default)]
    pub latency_ms: u64,
}

impl Group {
    pub fn new(count: u32, protocol: Protocol, behavior: Behavior) -> Self {
        Self { count, protocol, behavior, latency_ms: 0 }
    }

    pub fn latency(mut self, d: Duration) -> Self {
        self.latency_ms = d.as_millis() as u64;
        self
    }
}

/// The whole farm.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FarmSpec {
    pub groups: Vec<Group>,
}

/// First proxy address: 127.1.0.0; proxy `i` is 127.1.0.0 + i.
pub const FIRST_IP: u32 = u32::from_be_bytes([127, 1, 0, 0]);
/// Addresses available for proxies.
pub const MAX_PROXIES: u32 = u32::from_be_bytes([127, 255, 255, 254]) - FIRST_IP;

/// The address of proxy `i`.
pub fn ip_of(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_IP + i)
}

/// The index of the proxy at `ip`, if it is one.
pub fn index_of(ip: Ipv4Addr) -> Option<u32> {
    u32::from(ip).checked_sub(FIRST_IP).filter(|i| *i < MAX_PROXIES)
}

/// What a correct checker concludes about one proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub alive: bool,
    /// Reason name (proxy-checker's `Reason::as_str`) when dead.
    pub reason: Option<&'static str>,
    pub forward: bool,
    pub tunnel: bool,
    /// proxy-checker's `Anonymity::as_str` when alive: what the judge's header echo shows
    /// (the forwarded request carries what a proxy adds; a tunnel carries nothing).
    pub anonymity: &'static str,
}

impl Expect {
    fn alive(forward: bool, tunnel: bool) -> Self {
        Self { alive: true, reason: None, forward, tunnel, anonymity: "elite" }
    }

    fn dead(reason: &'static str) -> Self {
        Self { alive: false, reason: Some(reason), forward: false, tunnel: false, anonymity: "unknown" }
    }
}

/// Ground truth for a proxy of `protocol` and `behavior`.
/// `full`: full-http mode (else connect-only); `https_judge`: the judge URL is https.
/// Assumes at least one retry (Flaky) and a timeout under an hour (TooSlow).
pub fn expect(protocol: Protocol, behavior: Behavior, full: bool, https_judge: bool) -> Expect {
    let mut e = expect_verdict(protocol, behavior, full, https_judge);
    e.anonymity = match behavior {
        _ if !e.alive => "unknown",
        // No judge in connect-only mode: nothing is known.
        _ if !full => "unknown",
        Behavior::Transparent if e.forward => "transparent",
        Behavior::Anonymous if e.forward => "anonymous",
        _ => "elite",
    };
    e
}

fn expect_verdict(protocol: Protocol, behavior: Behavior, full: bool, https_judge: bool) -> Expect {
    use Behavior::*;
    if !full {
        return match behavior {
            Refused => Expect::dead("connect_refused"),
            Blackhole => Expect::dead("connect_timeout"),
            _ => Expect::alive(false, false),
        };
    }
    let http = protocol.is_http();
    // Forwarding is only tried for an http:// judge.
    let fwd = http && !https_judge;
    match behavior {
        Working | Flaky | AuthGood | OldStyle | Chunked | Transparent | Anonymous => Expect::alive(fwd, true),
        ForwardOnly if fwd => Expect::alive(true, false),
        ForwardOnly if http => Expect::dead("proxy_rejected"),
        TunnelOnly if http => Expect::alive(false, true),
        ForwardOnly | TunnelOnly => Expect::alive(false, true),
        Refused => Expect::dead("connect_refused"),
        Blackhole => Expect::dead("connect_timeout"),
        Silent => Expect::dead("proxy_timeout"),
        CloseAtOnce => Expect::dead("proxy_closed"),
        Garbage => Expect::dead("proxy_protocol_error"),
        WrongPage | PortalWithUrl => Expect::dead("content_mismatch"),
        AuthBad => Expect::dead("proxy_auth_failed"),
        // Forwarding is tried first: the proxy stays silent until the deadline, which the
        // check's one deadline then leaves no time of for the tunnel test.
        TooSlow if fwd => Expect::dead("proxy_timeout"),
        TooSlow | Trickle => Expect::dead("timeout"),
        Mitm | TlsGarbage if https_judge => Expect::dead("tls_error"),
        Mitm | TlsGarbage => Expect::alive(fwd, true),
        EndlessHeader => Expect::dead("proxy_protocol_error"),
        HugeBody => Expect::dead("content_mismatch"),
        BogusSocks => match protocol {
            Protocol::Socks5 => Expect::dead("proxy_closed"),
            Protocol::Socks4 => Expect::dead("proxy_protocol_error"),
            Protocol::Http | Protocol::Https => Expect::alive(fwd, true),
        },
        // The hostile behaviours. An HTTP proxy fails both its tests the same way, so the
        // deepest failure and a timeout shared by both tests give the same reason.
        ChunkedTrailers | ContentLengthTwice | OneContinue | EarlyHints | SixtyHeaders | BareLf | ChattyConnect
        | Socks5EmptyDomain => Expect::alive(fwd, true),
        // A fresh connection works.
        KeepAliveThenClose | KeepAliveThenMute | KeepAliveThenRefuse | KeepAliveThenGarbage | KeepAliveExtraAnswer => {
            Expect::alive(fwd, true)
        }
        b if !b.applies_to(protocol) => Expect::alive(fwd, true),
        ChunkSizeTooLong | ChunkSizePrefixed | ChunkSizeSigned | ChunkExtensionFlood | ChunkMissingCrlf => {
            Expect::dead("proxy_protocol_error")
        }
        ContentLengthOverflow
        | ContentLengthNegative
        | ContentLengthSigned
        | ContentLengthConflict
        | ContentLengthAndChunked => Expect::dead("proxy_protocol_error"),
        // More than 8 interim answers.
        ContinueFlood => Expect::dead("proxy_protocol_error"),
        NulInHead | StatusFourDigits | HttpVersion99 | Http09 | Http2Preface | ThousandHeaders | HugeHeaderValue
        | EchoRequest => Expect::dead("proxy_protocol_error"),
        // Bytes before the request through a tunnel: after a CONNECT 200 the checker sees
        // them first; through SOCKS they land where the TLS ServerHello belongs.
        Banner if https_judge && !http => Expect::dead("tls_error"),
        Banner => Expect::dead("proxy_protocol_error"),
        // 64 KiB of body scanned without the nonce; an unreadable (gzip) or mis-framed body.
        ChunkSizeMax | EndlessChunks | ContentLengthShort | TransferEncodingGzip | TransferEncodingUnknown => {
            Expect::dead("content_mismatch")
        }
        StaleNonce | NonceInAttribute | NonceUnderOtherKey => Expect::dead("content_mismatch"),
        // 101 is not an interim answer to skip: the judge was not reached.
        SwitchingProtocols | RedirectLogin => Expect::dead("bad_status"),
        HugeChunkThenClose | ContentLengthLong | HalfCloseMidHead | ResetAfterRequest | CloseAfterHandshake => {
            Expect::dead("proxy_closed")
        }
        SlowlorisHead | EndlessSlowBody | StallAfterHead => Expect::dead("timeout"),
        // The proxy started answering, then fell silent: `timeout`, not `proxy_timeout`
        // (which the contract keeps for a proxy silent from the start).
        Socks5OneByte => Expect::dead("timeout"),
        Socks5WrongVersion | Socks5BadAddressType | Socks5HttpReply => Expect::dead("proxy_protocol_error"),
        // The proxy wants credentials we do not have (it picked user/pass unasked, or
        // accepts none of "no auth"): an auth failure rather than a protocol error.
        Socks5UnofferedAuth | Socks5NoMethods => Expect::dead("proxy_auth_failed"),
        Socks5Failure | Socks4Rejected => Expect::dead("proxy_rejected"),
        Socks4ShortReply => Expect::dead("proxy_closed"),
    }
}
