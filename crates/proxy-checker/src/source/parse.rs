//! Proxy list parsing: plain lines, HTML pages and JSON, mixed formats, never panicking.
//!
//! The parser is pure (no I/O): it turns a document into proxies and reports every line
//! it rejects, with its line number and a [`RejectReason`], through a callback. The
//! target guard is applied to IP literals here; hostnames are checked after resolution.

// Bytes from the network and from lists meet no unchecked arithmetic or indexing here.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use percent_encoding::percent_decode_str;
use regex::Regex;

use crate::guard::{self, Blocked};
use crate::proxy::{Credentials, Host, Protocol, Proxy};

/// Why a line or item produced no candidate. The names are stable: they are metric label
/// values and `/stat` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not an address in any accepted form.
    Syntax,
    /// Port missing its digits, zero, or above 65535.
    InvalidPort,
    /// A `scheme://` that is not a proxy protocol.
    UnknownScheme,
    /// 0.0.0.0/8, multicast, broadcast, reserved.
    Unroutable,
    /// Loopback, private, CGNAT or link-local, and `allow_private` is off.
    Private,
    /// A cloud metadata or host endpoint (refused even with `allow_private`).
    Metadata,
    /// Seen before (same protocol family, host, port and credentials), in any source.
    Duplicate,
    /// A hostname that did not resolve (within its deadline).
    Unresolvable,
    /// A hostname left unresolved: the round's lookup budget was spent.
    ResolveBudget,
}

impl RejectReason {
    pub const ALL: [RejectReason; 9] = [
        Self::Syntax,
        Self::InvalidPort,
        Self::UnknownScheme,
        Self::Unroutable,
        Self::Private,
        Self::Metadata,
        Self::Duplicate,
        Self::Unresolvable,
        Self::ResolveBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "invalid_syntax",
            Self::InvalidPort => "invalid_port",
            Self::UnknownScheme => "unknown_scheme",
            Self::Unroutable => "unroutable",
            Self::Private => "private",
            Self::Metadata => "metadata",
            Self::Duplicate => "duplicate",
            Self::Unresolvable => "unresolvable",
            Self::ResolveBudget => "resolve_budget",
        }
    }
}

impl From<Blocked> for RejectReason {
    fn from(b: Blocked) -> Self {
        match b {
            Blocked::Unroutable => Self::Unroutable,
            Blocked::Private => Self::Private,
            Blocked::Metadata => Self::Metadata,
        }
    }
}

/// A rejected line or item. `text` is cut to a short prefix so a hostile 100 MB line
/// cannot be copied around.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// 1-based line number (for JSON documents: 1-based item index).
    pub line: u32,
    pub reason: RejectReason,
    pub text: String,
}

/// The document shape the parser recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Lines,
    Html,
    Json,
}

/// Options for one document.
#[derive(Clone, Copy, Debug)]
pub struct ParseOptions {
    /// Protocol for lines without a scheme.
    pub default_protocol: Protocol,
    pub allow_private: bool,
    /// Parsing stops once the document has listed more proxies than this.
    pub max_proxies: usize,
}

/// What [`parse_document`] found. Candidates carry their line number.
#[derive(Debug, Default)]
pub struct Parsed {
    pub proxies: Vec<(Proxy, u32)>,
    /// Lines that were not blank or comments.
    pub lines: u64,
    /// Parsing stopped at `max_proxies + 1` proxies.
    pub truncated: bool,
}

impl Parsed {
    /// Keeps a proxy; false once the document has gone over `max`.
    fn push(&mut self, p: Proxy, line: u32, max: usize) -> bool {
        self.proxies.push((p, line));
        self.truncated = self.proxies.len() > max;
        !self.truncated
    }
}

const MAX_REJECT_TEXT: usize = 80;

/// Parses one document, detecting its format. Rejections go to `on_reject`.
pub fn parse_document(body: &[u8], opts: ParseOptions, on_reject: &mut dyn FnMut(Reject)) -> (Parsed, Format) {
    let text = String::from_utf8_lossy(body);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    parse_text(text, is_json(text), opts, on_reject)
}

/// [`parse_document`] on the text, `json` telling whether it is valid JSON.
fn parse_text(text: &str, json: bool, opts: ParseOptions, on_reject: &mut dyn FnMut(Reject)) -> (Parsed, Format) {
    // Validated first without building anything, then streamed item by item: a JSON list
    // costs its text and one item at a time, never a whole `Value` tree.
    if json && let Ok(parsed) = parse_json(text, opts, on_reject) {
        return (parsed, Format::Json);
    }
    if is_html(text) {
        return (parse_html(text, opts, on_reject), Format::Html);
    }
    (parse_lines(text, opts, on_reject), Format::Lines)
}

fn is_json(text: &str) -> bool {
    let head = text.trim_start();
    (head.starts_with('[') || head.starts_with('{')) && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

fn is_html(text: &str) -> bool {
    looks_like_html(text.as_bytes().get(..4096).unwrap_or(text.as_bytes()))
}

/// [`parse_document`], handing each proxy to `on_proxy` (which returns `false` to stop)
/// instead of collecting them: a million-line list is never held as a second list. A
/// document that goes over `max_proxies` hands over nothing (it is refused whole): a list
/// of lines — at most one proxy a line — is streamed as it is parsed when it has no more
/// lines than that; any other document is parsed whole first. Returns the lines counted,
/// whether the document went over, and its format.
pub fn parse_document_with(
    body: &[u8],
    opts: ParseOptions,
    on_reject: &mut dyn FnMut(Reject),
    on_proxy: &mut dyn FnMut(Proxy, u32) -> bool,
) -> (u64, bool, Format) {
    let text = String::from_utf8_lossy(body);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let json = is_json(text);
    // What `str::lines` can yield at most: one line per `\n`, and one after the last
    // unless the text ends with it.
    let newlines = memchr::memchr_iter(b'\n', text.as_bytes()).count();
    let lines_at_most = newlines.saturating_add(usize::from(!text.ends_with('\n')));
    if lines_at_most <= opts.max_proxies && !json && !is_html(text) {
        return (lines_into(text, opts, on_reject, on_proxy), false, Format::Lines);
    }
    let (parsed, format) = parse_text(text, json, opts, on_reject);
    if !parsed.truncated {
        for (p, line) in parsed.proxies {
            if !on_proxy(p, line) {
                break;
            }
        }
    }
    (parsed.lines, parsed.truncated, format)
}

fn looks_like_html(head: &[u8]) -> bool {
    let lower = head.to_ascii_lowercase();
    [&b"<html"[..], b"<!doctype", b"<table", b"<body", b"<td", b"<div", b"<pre"]
        .iter()
        .any(|tag| lower.windows(tag.len()).any(|w| w == *tag))
}

fn cut(s: &str) -> String {
    let end = (0..=s.len().min(MAX_REJECT_TEXT)).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    s.get(..end).unwrap_or_default().to_string()
}

fn line_no(i: usize) -> u32 {
    u32::try_from(i.saturating_add(1)).unwrap_or(u32::MAX)
}

fn parse_lines(text: &str, opts: ParseOptions, on_reject: &mut dyn FnMut(Reject)) -> Parsed {
    let mut out = Parsed::default();
    let lines = lines_into(text, opts, on_reject, &mut |p, line| out.push(p, line, opts.max_proxies));
    out.lines = lines;
    out
}

/// Parses a list of lines, handing each proxy to `on_proxy` until it returns `false`.
/// Returns the lines that were not blank or comments.
fn lines_into(
    text: &str,
    opts: ParseOptions,
    on_reject: &mut dyn FnMut(Reject),
    on_proxy: &mut dyn FnMut(Proxy, u32) -> bool,
) -> u64 {
    let mut lines: u64 = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") || line.starts_with(';') {
            continue;
        }
        lines = lines.saturating_add(1);
        match parse_line(line, opts) {
            Ok(p) => {
                if !on_proxy(p, line_no(i)) {
                    break;
                }
            }
            Err(reason) => on_reject(Reject { line: line_no(i), reason, text: cut(line) }),
        }
    }
    lines
}

/// Parses one non-empty, trimmed line: the address is its first token, the rest is an
/// annotation (`1.2.3.4:80 US 120ms`). Also takes `ip port` and `ip,port,...` layouts.
pub fn parse_line(line: &str, opts: ParseOptions) -> Result<Proxy, RejectReason> {
    let mut tokens = line.split_whitespace();
    let first = tokens.next().ok_or(RejectReason::Syntax)?;
    let first = first.trim_end_matches([',', ';']);
    if !first.contains(':') {
        // `ip,port[,..]` or `ip port`
        let mut fields = first.split([',', ';', '|']);
        let host = fields.next().unwrap_or_default();
        let port = match fields.next() {
            Some(p) if !p.is_empty() => p,
            _ => tokens.next().ok_or(RejectReason::Syntax)?,
        };
        if !port.bytes().all(|b| b.is_ascii_digit()) || !host.contains(['.', ':']) {
            return Err(RejectReason::Syntax);
        }
        return build(opts.default_protocol, host, port, None, opts);
    }
    parse_token(first, opts)
}

/// Parses a single address token in any accepted form.
pub fn parse_token(token: &str, opts: ParseOptions) -> Result<Proxy, RejectReason> {
    let (protocol, rest) = match token.split_once("://") {
        Some((scheme, rest)) => (scheme.parse::<Protocol>().map_err(|_| RejectReason::UnknownScheme)?, rest),
        None => (opts.default_protocol, token),
    };
    // Drop a trailing path such as `http://1.2.3.4:8080/`.
    let rest = match rest.find('/') {
        Some(i) => &rest[..i],
        None => rest,
    };
    if let Some((userinfo, hostport)) = rest.rsplit_once('@') {
        let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (host, port) = split_host_port(hostport)?;
        return build(protocol, host, port, Some((user, pass)), opts);
    }
    if !rest.starts_with('[') && rest.matches(':').count() == 3 {
        // host:port:user:pass
        let mut it = rest.splitn(4, ':');
        let (host, port, user, pass) = (it.next(), it.next(), it.next(), it.next());
        if let (Some(h), Some(p), Some(u), Some(pw)) = (host, port, user, pass) {
            return build(protocol, h, p, Some((u, pw)), opts);
        }
    }
    let (host, port) = split_host_port(rest)?;
    build(protocol, host, port, None, opts)
}

fn split_host_port(s: &str) -> Result<(&str, &str), RejectReason> {
    if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or(RejectReason::Syntax)?;
        let port = after.strip_prefix(':').ok_or(RejectReason::Syntax)?;
        return Ok((host, port));
    }
    let (host, port) = s.rsplit_once(':').ok_or(RejectReason::Syntax)?;
    if host.contains(':') {
        // A bare IPv6 address without brackets is ambiguous.
        return Err(RejectReason::Syntax);
    }
    Ok((host, port))
}

fn parse_port(s: &str) -> Result<u16, RejectReason> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RejectReason::InvalidPort);
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(RejectReason::InvalidPort),
    }
}

fn parse_host(s: &str) -> Result<Host, RejectReason> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let name = s.strip_suffix('.').unwrap_or(s);
    let labels_ok = !name.is_empty() && name.len() <= 253 && name.split('.').all(valid_label);
    // All-numeric names are malformed IPv4 addresses (`1.2.3.999`), not hostnames.
    let last_has_alpha = name.rsplit('.').next().is_some_and(|l| l.bytes().any(|b| b.is_ascii_alphabetic()));
    if labels_ok && last_has_alpha {
        Ok(Host::Name(Arc::from(name.to_ascii_lowercase())))
    } else {
        Err(RejectReason::Syntax)
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn build(
    protocol: Protocol,
    host: &str,
    port: &str,
    creds: Option<(&str, &str)>,
    opts: ParseOptions,
) -> Result<Proxy, RejectReason> {
    let host = parse_host(host)?;
    let port = parse_port(port)?;
    if let Host::Ip(ip) = host {
        guard::check(ip, opts.allow_private)?;
    }
    let credentials = match creds {
        Some((u, p)) if !u.is_empty() => Some(Arc::new(Credentials { username: decode(u), password: decode(p) })),
        Some(_) => return Err(RejectReason::Syntax),
        None => None,
    };
    Ok(Proxy { protocol, host, port, credentials })
}

static HTML_ADDR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:\b(https?|socks4a?|socks5h?)://)?(?:([A-Za-z0-9._~%!$&'()*+,;=-]+):([A-Za-z0-9._~%!$&'()*+,;=-]*)@)?\b(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\])(?:\s*:\s*|\s+)(\d{1,6})\b",
    )
    .expect("static regex")
});
static HTML_TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<[^>]{0,1024}>").expect("static regex"));
/// A protocol named in a table cell (`SOCKS5`, `HTTPS`, `socks4/5`…).
static HTML_PROTOCOL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(socks5|socks4|socks|https|http)\b").expect("static regex"));
/// A table cell's content.
static HTML_CELL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)<td[^>]{0,256}>(.{0,512}?)</td>").expect("static regex"));
/// A cell that holds protocol names and nothing else (`SOCKS4, SOCKS5`, `HTTP/HTTPS`).
static PROTOCOL_CELL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(socks5|socks4|socks|https|http)(\s*[,/&|]\s*(socks5|socks4|socks|https|http))*\s*$")
        .expect("static regex")
});

/// The protocol a table row gives in a cell of its own — a cell that holds protocol names
/// and nothing else, so a link (`https://t.me/…`) or a word in a note does not count.
/// When the cell names several (`SOCKS4, SOCKS5`), SOCKS5 wins over SOCKS4 over HTTP.
fn row_protocol(raw_row: &str) -> Option<Protocol> {
    let cell = HTML_CELL
        .captures_iter(raw_row)
        .filter_map(|c| c.get(1))
        .map(|m| HTML_TAG.replace_all(m.as_str(), " ").into_owned())
        .find(|text| PROTOCOL_CELL.is_match(text))?;
    let mut found: Option<Protocol> = None;
    for m in HTML_PROTOCOL.find_iter(&cell) {
        let p = match m.as_str().to_ascii_lowercase().as_str() {
            "socks5" | "socks" => Protocol::Socks5,
            "socks4" => Protocol::Socks4,
            _ => Protocol::Http,
        };
        found = Some(match (found, p) {
            (Some(Protocol::Socks5), _) | (_, Protocol::Socks5) => Protocol::Socks5,
            (Some(Protocol::Socks4), _) | (_, Protocol::Socks4) => Protocol::Socks4,
            _ => Protocol::Http,
        });
    }
    found
}

fn parse_html(text: &str, opts: ParseOptions, on_reject: &mut dyn FnMut(Reject)) -> Parsed {
    let mut out = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        if !raw.bytes().any(|b| b.is_ascii_digit()) {
            continue;
        }
        // Cells become spaces, so `<td>1.2.3.4</td><td>8080</td>` reads `1.2.3.4 8080`.
        let plain = HTML_TAG.replace_all(raw, " ");
        let plain = plain.replace("&nbsp;", " ").replace("&#58;", ":");
        // A table row may name the protocol in a cell of its own (its other cells hold no
        // address). Prose is left alone: `socks5` in a sentence is not a column.
        let is_row = raw.len() < 64 * 1024 && raw.to_ascii_lowercase().contains("<td");
        let addresses: Vec<_> = HTML_ADDR.captures_iter(&plain).collect();
        let row_default = match addresses.as_slice() {
            [_only] if is_row => row_protocol(raw),
            _ => None,
        };
        for c in addresses {
            out.lines = out.lines.saturating_add(1);
            let protocol = match c.get(1) {
                Some(s) => match s.as_str().parse::<Protocol>() {
                    Ok(p) => p,
                    Err(_) => {
                        on_reject(Reject { line: line_no(i), reason: RejectReason::UnknownScheme, text: cut(&c[0]) });
                        continue;
                    }
                },
                None => row_default.unwrap_or(opts.default_protocol),
            };
            let host = c[4].trim_start_matches('[').trim_end_matches(']');
            let creds = c.get(2).map(|u| (u.as_str(), c.get(3).map_or("", |p| p.as_str())));
            match build(protocol, host, &c[5], creds, opts) {
                Ok(p) => {
                    if !out.push(p, line_no(i), opts.max_proxies) {
                        return out;
                    }
                }
                Err(reason) => on_reject(Reject { line: line_no(i), reason, text: cut(&c[0]) }),
            }
        }
    }
    out
}

/// A JSON list, streamed: `[...]`, or the array-valued members of an object
/// (`{"data": [...]}`; every such member, so an `"errors": []` before the list loses
/// nothing). Each item is read into a [`json_stream::Item`] that keeps only
/// what a proxy needs (a string, or an object's few known fields); anything else in it is
/// skipped unbuilt, so no item costs more than its own text.
fn parse_json(text: &str, opts: ParseOptions, on_reject: &mut dyn FnMut(Reject)) -> Result<Parsed, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut out = Parsed::default();
    let mut index: usize = 0;
    let mut each = |item: json_stream::Item| {
        if out.truncated {
            return false;
        }
        let line = line_no(index);
        index = index.saturating_add(1);
        out.lines = out.lines.saturating_add(1);
        let result = match &item {
            json_stream::Item::Line(s) => parse_line(s.trim(), opts),
            json_stream::Item::Object(o) => json_object(o, opts),
            json_stream::Item::Other(_) => Err(RejectReason::Syntax),
        };
        match result {
            Ok(p) => out.push(p, line, opts.max_proxies),
            Err(reason) => {
                on_reject(Reject { line, reason, text: cut(&item.describe()) });
                true
            }
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    json_stream::Top { each: &mut each }.deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

fn json_object(o: &json_stream::Fields, opts: ParseOptions) -> Result<Proxy, RejectReason> {
    let host = o.get(json_stream::Field::Host).ok_or(RejectReason::Syntax)?;
    let protocol = match o.get(json_stream::Field::Protocol) {
        Some(p) => p.parse::<Protocol>().map_err(|_| RejectReason::UnknownScheme)?,
        None => opts.default_protocol,
    };
    let opts = ParseOptions { default_protocol: protocol, ..opts };
    let user = o.get(json_stream::Field::User);
    let pass = o.get(json_stream::Field::Pass);
    match o.get(json_stream::Field::Port) {
        Some(port) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            build(protocol, host, port, user.map(|u| (u, pass.unwrap_or(""))), opts)
        }
        // `{"ip": "1.2.3.4:8080"}`
        None => parse_token(host.trim(), opts),
    }
}

/// Serde visitors that hand a JSON list's items over one at a time, each reduced to what
/// a proxy needs.
mod json_stream {
    use serde::de::{DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// One list item.
    pub enum Item {
        /// `"1.2.3.4:80"`, `"socks5://…"`.
        Line(String),
        /// `{"ip": …, "port": …, …}`: the known fields only.
        Object(Fields),
        /// Anything else (a number, an array, …): what it was, for the reject.
        Other(&'static str),
    }

    impl Item {
        /// A short text for a rejected item.
        pub fn describe(&self) -> String {
            match self {
                Item::Line(s) => s.clone(),
                Item::Object(f) => f.describe(),
                Item::Other(what) => (*what).to_string(),
            }
        }
    }

    /// The proxy fields of an object item.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Field {
        Host,
        Port,
        Protocol,
        User,
        Pass,
    }

    /// The member names read for each field, most preferred first.
    const NAMES: [(Field, &[&str]); 5] = [
        (Field::Host, &["ip", "host", "address", "addr", "server"]),
        (Field::Port, &["port"]),
        (Field::Protocol, &["protocol", "type", "scheme", "protocols"]),
        (Field::User, &["username", "user", "login"]),
        (Field::Pass, &["password", "pass"]),
    ];

    /// Which field a member name is, and how preferred that name is.
    fn field_of(key: &str) -> Option<(Field, usize)> {
        NAMES.iter().find_map(|(f, names)| names.iter().position(|n| *n == key).map(|rank| (*f, rank)))
    }

    /// The known fields of an object: for each, the value of its most preferred name
    /// that held a string, a number, or an array starting with a string.
    #[derive(Default)]
    pub struct Fields([Option<(usize, String)>; 5]);

    impl Fields {
        pub fn get(&self, f: Field) -> Option<&str> {
            self.0.get(f as usize)?.as_ref().map(|(_, v)| v.as_str())
        }

        fn set(&mut self, f: Field, rank: usize, value: String) {
            if let Some(slot) = self.0.get_mut(f as usize)
                && slot.as_ref().is_none_or(|(r, _)| rank < *r)
            {
                *slot = Some((rank, value));
            }
        }

        fn describe(&self) -> String {
            let parts: Vec<String> = NAMES
                .iter()
                .filter(|(f, _)| *f != Field::Pass)
                .filter_map(|(f, names)| Some(format!("{}: {}", names.first()?, self.get(*f)?)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }

    /// Takes one item; `false` once no more are wanted (the rest is skipped unparsed).
    pub type Each<'f> = &'f mut dyn FnMut(Item) -> bool;

    /// The document: an array of items, or an object holding such arrays.
    pub struct Top<'f> {
        pub each: Each<'f>,
    }

    impl<'de> DeserializeSeed<'de> for Top<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Top<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array of proxies, or an object holding one")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
            items(seq, self.each)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key::<IgnoredAny>()?.is_some() {
                map.next_value_seed(Member { each: &mut *self.each })?;
            }
            Ok(())
        }
    }

    fn items<'de, A: SeqAccess<'de>>(mut seq: A, each: Each<'_>) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element_seed(ItemSeed)? {
            if !each(item) {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                break;
            }
        }
        Ok(())
    }

    /// One member of the top object: streamed if it is an array (`true`), skipped if not.
    /// Once `each` wants no more, the rest is skipped.
    struct Member<'f> {
        each: Each<'f>,
    }

    impl<'de> DeserializeSeed<'de> for Member<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Member<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
            items(seq, self.each).map(|()| true)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(false)
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E: Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }

    /// Reads one item.
    struct ItemSeed;

    impl<'de> DeserializeSeed<'de> for ItemSeed {
        type Value = Item;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for ItemSeed {
        type Value = Item;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a proxy: a string or an object")
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Item, E> {
            Ok(Item::Line(v.to_owned()))
        }
        fn visit_string<E: Error>(self, v: String) -> Result<Item, E> {
            Ok(Item::Line(v))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
            let mut fields = Fields::default();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match field_of(&key) {
                    Some((f, rank)) => {
                        if let Scalar(Some(v)) = map.next_value::<Scalar>()? {
                            fields.set(f, rank, v);
                        }
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(Item::Object(fields))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Item::Other("an array"))
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<Item, E> {
            Ok(Item::Other("a boolean"))
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<Item, E> {
            Ok(Item::Other("a number"))
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<Item, E> {
            Ok(Item::Other("a number"))
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<Item, E> {
            Ok(Item::Other("a number"))
        }
        fn visit_unit<E: Error>(self) -> Result<Item, E> {
            Ok(Item::Other("null"))
        }
    }

    /// A field's value as text: a string, a number, or an array's first string.
    struct Scalar(Option<String>);

    impl<'de> serde::Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ScalarVisitor)
        }
    }

    struct ScalarVisitor;

    impl<'de> Visitor<'de> for ScalarVisitor {
        type Value = Scalar;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Scalar, E> {
            Ok(Scalar(Some(v.to_owned())))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Scalar, E> {
            Ok(Scalar(Some(v.to_string())))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Scalar, E> {
            Ok(Scalar(Some(v.to_string())))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Scalar, E> {
            Ok(Scalar(Some(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string()))))
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<Scalar, E> {
            Ok(Scalar(None))
        }
        fn visit_unit<E: Error>(self) -> Result<Scalar, E> {
            Ok(Scalar(None))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
            let first = seq.next_element::<Scalar>()?.and_then(|s| s.0);
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Scalar(first))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Scalar(None))
        }
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const OPTS: ParseOptions =
        ParseOptions { default_protocol: Protocol::Http, allow_private: false, max_proxies: usize::MAX };

    fn ok(line: &str, expect: &str) {
        let p = parse_line(line, OPTS).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
        let creds = p.credentials.as_ref().map(|c| format!(" {}:{}", c.username, c.password)).unwrap_or_default();
        assert_eq!(format!("{p}{creds}"), expect, "{line:?}");
    }

    fn bad(line: &str, reason: RejectReason) {
        assert_eq!(parse_line(line, OPTS), Err(reason), "{line:?}");
    }

    #[test]
    fn line_forms() {
        ok("1.2.3.4:8080", "http://1.2.3.4:8080");
        ok("socks5://1.2.3.4:1080", "socks5://1.2.3.4:1080");
        ok("SOCKS4://1.2.3.4:1080", "socks4://1.2.3.4:1080");
        ok("socks5h://u:p@1.2.3.4:1080", "socks5://1.2.3.4:1080 u:p");
        ok("user:pa%40ss@1.2.3.4:3128", "http://1.2.3.4:3128 user:pa@ss");
        ok("1.2.3.4:3128:user:pass", "http://1.2.3.4:3128 user:pass");
        ok("https://1.2.3.4:3128:user:pass", "http://1.2.3.4:3128 user:pass");
        ok("[2a00:1450::1]:8080", "http://[2a00:1450::1]:8080");
        ok("socks5://[2606:4700::1111]:1080", "socks5://[2606:4700::1111]:1080");
        ok("1.2.3.4:80 US 120ms", "http://1.2.3.4:80");
        ok("1.2.3.4:80\tanonymous", "http://1.2.3.4:80");
        ok("1.2.3.4 8080", "http://1.2.3.4:8080");
        ok("1.2.3.4,8080,US", "http://1.2.3.4:8080");
        ok("http://1.2.3.4:8080/", "http://1.2.3.4:8080");
        ok("proxy.example.com:3128", "http://proxy.example.com:3128");
        ok("Proxy.Example.COM.:3128", "http://proxy.example.com:3128");
    }

    #[test]
    fn line_rejections() {
        bad("1.2.3.4", RejectReason::Syntax);
        bad("1.2.3.4:0", RejectReason::InvalidPort);
        bad("1.2.3.4:65536", RejectReason::InvalidPort);
        bad("1.2.3.4:http", RejectReason::InvalidPort);
        bad("1.2.3.999:80", RejectReason::Syntax);
        bad("ftp://1.2.3.4:21", RejectReason::UnknownScheme);
        bad("2a00:1450::1:8080", RejectReason::Syntax);
        bad("0.0.0.0:80", RejectReason::Unroutable);
        bad("224.0.0.1:80", RejectReason::Unroutable);
        bad("255.255.255.255:80", RejectReason::Unroutable);
        bad("127.0.0.1:80", RejectReason::Private);
        bad("10.1.2.3:80", RejectReason::Private);
        bad("100.64.1.1:80", RejectReason::Private);
        bad("169.254.169.254:80", RejectReason::Metadata);
        bad("169.254.1.1:80", RejectReason::Private);
        bad("192.0.2.1:80", RejectReason::Unroutable);
        bad("[::1]:80", RejectReason::Private);
        bad(":@1.2.3.4:80", RejectReason::Syntax);
        let relaxed = ParseOptions { allow_private: true, ..OPTS };
        assert!(parse_line("127.0.0.1:80", relaxed).is_ok());
        assert_eq!(parse_line("0.0.0.0:80", relaxed), Err(RejectReason::Unroutable));
    }

    fn doc(body: &str, proto: Protocol) -> (Vec<String>, Vec<(u32, RejectReason)>, Format) {
        let mut rejects = vec![];
        let (parsed, format) = parse_document(
            body.as_bytes(),
            ParseOptions { default_protocol: proto, allow_private: false, max_proxies: usize::MAX },
            &mut |r| rejects.push((r.line, r.reason)),
        );
        (parsed.proxies.iter().map(|(p, _)| p.to_string()).collect(), rejects, format)
    }

    #[test]
    fn mixed_document_with_line_numbers() {
        let body = "\u{feff}# list\r\n1.2.3.4:80\r\n\r\n  socks5://5.6.7.8:1080  \r\nnot a proxy\r\n9.9.9.9:0\r\n8.8.8.8:3128 # dns\n";
        let (got, rejects, format) = doc(body, Protocol::Socks4);
        assert_eq!(format, Format::Lines);
        assert_eq!(got, ["socks4://1.2.3.4:80", "socks5://5.6.7.8:1080", "socks4://8.8.8.8:3128"]);
        assert_eq!(rejects, [(5, RejectReason::Syntax), (6, RejectReason::InvalidPort)]);
    }

    #[test]
    fn v6_list_is_not_json() {
        let (got, _, format) = doc("[2a00:1450::1]:8080\n[2a00:1450::2]:8081\n", Protocol::Http);
        assert_eq!(format, Format::Lines);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_protocol_column_is_read_only_in_table_rows() {
        let body = "<table>\n<tr><td>1.2.3.4</td><td>1080</td><td>SOCKS5</td><td>DE</td></tr>\n<tr><td>HTTPS</td><td>5.6.7.8:3128</td></tr>\n<tr><td>9.9.9.9:1080</td><td>socks4</td></tr>\n<tr><td>8.8.4.4:80</td><td>fast</td></tr>\n</table>\n<p>we also list 7.7.7.7:1080 among socks5 proxies</p>";
        let (got, _, _) = doc(body, Protocol::Http);
        assert_eq!(
            got,
            [
                "socks5://1.2.3.4:1080",
                "http://5.6.7.8:3128",
                "socks4://9.9.9.9:1080",
                "http://8.8.4.4:80",
                "http://7.7.7.7:1080"
            ]
        );
    }

    #[test]
    fn html_table_and_text() {
        let body = "<html><body><table><tr><td>1.2.3.4</td><td>8080</td><td>US</td></tr>\n<tr><td>5.6.7.8</td><td>3128</td></tr>\n<p>Also socks5://9.9.9.9:1080 and 10.0.0.1:80</p></table></body></html>";
        let (got, rejects, format) = doc(body, Protocol::Http);
        assert_eq!(format, Format::Html);
        assert_eq!(got, ["http://1.2.3.4:8080", "http://5.6.7.8:3128", "socks5://9.9.9.9:1080"]);
        assert_eq!(rejects, [(3, RejectReason::Private)]);
    }

    #[test]
    fn json_strings_and_objects() {
        let body = r#"[ "1.2.3.4:80", {"ip": "5.6.7.8", "port": 1080, "protocol": "socks5", "username": "u", "password": "p"},
            {"host": "9.9.9.9", "port": "3128", "type": "https"}, {"ip": "8.8.8.8:8080"}, {"port": 1}, 17,
            {"ip": "1.1.1.1", "port": 80, "protocols": ["socks4"]} ]"#;
        let (got, rejects, format) = doc(body, Protocol::Http);
        assert_eq!(format, Format::Json);
        assert_eq!(
            got,
            [
                "http://1.2.3.4:80",
                "socks5://5.6.7.8:1080",
                "http://9.9.9.9:3128",
                "http://8.8.8.8:8080",
                "socks4://1.1.1.1:80"
            ]
        );
        assert_eq!(rejects, [(5, RejectReason::Syntax), (6, RejectReason::Syntax)]);
        let (got, _, _) = doc(r#"{"count": 1, "data": [{"ip": "1.2.3.4", "port": 80}]}"#, Protocol::Http);
        assert_eq!(got, ["http://1.2.3.4:80"]);
    }

    #[test]
    fn reject_text_is_cut() {
        let long = "x".repeat(10_000);
        let mut seen = vec![];
        parse_document(long.as_bytes(), OPTS, &mut |r| seen.push(r));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].text.len(), MAX_REJECT_TEXT);
    }

    /// Streaming hands over what the whole parse finds, in order, for every format; a
    /// document over the cap hands over nothing; the receiver can stop it.
    #[test]
    fn streaming_hands_over_what_a_whole_parse_finds() {
        let lines = "1.2.3.4:80\n# comment\nnot a proxy\nsocks5://5.6.7.8:1080\n\n9.9.9.9 8080 US\n";
        let json = r#"[{"ip": "1.2.3.4", "port": 80}, {"ip": "5.6.7.8", "port": "1080", "protocol": "socks5"}]"#;
        let html = "<table><tr><td>1.2.3.4</td><td>80</td><td>HTTP</td></tr><tr><td>5.6.7.8</td><td>1080</td><td>SOCKS5</td></tr></table>";
        for doc in [lines, json, html] {
            let mut whole_rejects = 0;
            let (whole, format) = parse_document(doc.as_bytes(), OPTS, &mut |_| whole_rejects += 1);
            let whole_lines = whole.lines;
            let mut streamed = Vec::new();
            let mut rejects = 0;
            let (n, truncated, f) = parse_document_with(doc.as_bytes(), OPTS, &mut |_| rejects += 1, &mut |p, line| {
                streamed.push((p.to_string(), line));
                true
            });
            let whole: Vec<_> = whole.proxies.iter().map(|(p, line)| (p.to_string(), *line)).collect();
            assert!(!whole.is_empty(), "{doc}");
            assert_eq!(
                (streamed, n, truncated, f, rejects),
                (whole, whole_lines, false, format, whole_rejects),
                "{doc}"
            );
        }
        // Over the cap: refused whole, nothing handed over (streamed or not).
        for (doc, max) in [(lines, 2), (json, 1), (html, 1)] {
            let opts = ParseOptions { max_proxies: max, ..OPTS };
            let mut got = 0;
            let (_, truncated, _) = parse_document_with(doc.as_bytes(), opts, &mut |_| {}, &mut |_, _| {
                got += 1;
                true
            });
            assert!(truncated && got == 0, "{doc}: {got} handed over");
        }
        // As many lines as the cap, ending in a newline: streamed (the parse stops where
        // the receiver does: one line counted), all of it handed over.
        let exact = "1.2.3.4:80\n5.6.7.8:81\n9.9.9.9:82\n";
        let opts = ParseOptions { max_proxies: 3, ..OPTS };
        let mut got = 0;
        let (n, truncated, _) = parse_document_with(exact.as_bytes(), opts, &mut |_| {}, &mut |_, _| {
            got += 1;
            true
        });
        assert!(!truncated && got == 3 && n == 3);
        let (n, _, _) = parse_document_with(exact.as_bytes(), opts, &mut |_| {}, &mut |_, _| false);
        assert_eq!(n, 1, "streamed: stopped at the first proxy");
        // One line more than the cap could hold: parsed whole first (all lines counted).
        let opts = ParseOptions { max_proxies: 2, ..OPTS };
        let (n, truncated, _) = parse_document_with(exact.as_bytes(), opts, &mut |_| {}, &mut |_, _| false);
        assert!(truncated && n == 3, "{n}");
        // The receiver stops the parse.
        let mut got = 0;
        parse_document_with(lines.as_bytes(), OPTS, &mut |_| {}, &mut |_, _| {
            got += 1;
            false
        });
        assert_eq!(got, 1);
    }
}
