//! Where a judge echoes what it was sent, learned once per run ([`calibrate`]) from a
//! direct request carrying two nonces — one in the query (`pc_nonce=`), one in the
//! [`NONCE_HEADER`] header — and then required of every answer through a proxy
//! ([`Place::found`]).
//!
//! Judges people run answer in a few shapes: httpbin's `/get` (`"args": {"pc_nonce": …}`,
//! `"headers": {"X-Pc-Nonce": …}`), path-and-headers JSON echoes (`"path": "/x?pc_nonce=…"`,
//! lower-case header names), azenv pages (`QUERY_STRING = pc_nonce=…`,
//! `HTTP_X_PC_NONCE = …` lines, often inside `<pre>`), and this service's own `/judge`.
//! Each place is a *key* and a *form*; an answer through a proxy counts only if the fresh
//! nonce comes back under the same key in the same form. A captive portal repeating the URL
//! in a link, a cached page with an old nonce and a page of another shape do not.
//!
//! When the judge echoes headers, checks carry the nonce in the header only, so the URL a
//! proxy sees holds nothing to forge an answer from.

// Bytes from the network meet no unchecked arithmetic or indexing here.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::net::IpAddr;

use super::{Anonymity, Echo};

/// The request header carrying the header nonce.
pub const NONCE_HEADER: &str = "X-Pc-Nonce";

/// Where the nonce goes in a check's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// `?pc_nonce=…` in the URL.
    Query,
    /// The [`NONCE_HEADER`] header only: the URL carries no nonce.
    Header,
}

/// Where and how a judge's answer holds the nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A JSON member whose whole value is the nonce: `"key": "NONCE"`.
    JsonMember { key: Vec<u8> },
    /// A JSON string, under `key`, that holds the nonce among other text (a path, a URL):
    /// `"key": "/judge?pc_nonce=NONCE"`.
    JsonString { key: Vec<u8> },
    /// A line `KEY = …NONCE…` (or `KEY: …`), HTML tags before the key ignored.
    Line { key: Vec<u8> },
}

/// What calibration learned about one judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calibration {
    pub carrier: Carrier,
    pub place: Place,
    /// The address the judge saw the direct request come from: this machine's, as far as
    /// the judge can tell (`None`: the judge does not show it).
    pub own_ip: Option<IpAddr>,
    /// Proxy-revealing headers the judge shows even for a direct request (its own front
    /// proxies add them), with how many list entries (hops) each held: held against a
    /// proxy only when it carries more hops than that.
    pub baseline: Vec<(&'static str, usize)>,
}

/// Headers that tell a site a proxy is in between (lower case).
pub const REVEALING: &[&str] = &[
    "via",
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "proxy-connection",
    "x-proxy-id",
    "client-ip",
    "x-client-ip",
    "x-originating-ip",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-bluecoat-via",
    "x-proxyuser-ip",
    "proxy-client-ip",
    "wl-proxy-client-ip",
    "x-cluster-client-ip",
    "forwarded-for",
    "x-forwarded",
];

/// Keys under which judges show the client's address.
const ORIGIN_KEYS: &str = "origin|remote_addr|remoteaddr|remote-addr|ip|client_ip|clientip|remote_ip";

fn origin_re() -> &'static regex::bytes::Regex {
    static RE: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        let json = format!(r#"(?i)"(?:{ORIGIN_KEYS})"\s*:\s*"([0-9A-Fa-f:.\[\], ]{{2,80}})""#);
        let line = r"(?m)^\s*(?:<[^>\n]*>\s*)*REMOTE_ADDR\s*[=:]\s*([0-9A-Fa-f:.]{2,45})";
        regex::bytes::Regex::new(&format!("{json}|{line}")).expect("a valid regex")
    })
}

fn revealing_re() -> &'static regex::bytes::Regex {
    static RE: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        let names = REVEALING.join("|");
        let underscored = REVEALING.iter().map(|n| n.replace('-', "_")).collect::<Vec<_>>().join("|");
        // A JSON member `"Via": "…"`, or an azenv line `HTTP_VIA = …`; the value captured.
        let pattern = format!(
            r#"(?i)"({names})"\s*:\s*"([^"\n]{{0,512}})"|(?m)^\s*(?:<[^>\n]*>\s*)*HTTP_({underscored})\s*[=:][ \t]*([^\n<]{{0,512}})"#
        );
        regex::bytes::Regex::new(&pattern).expect("a valid regex")
    })
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|ip| ip.to_canonical())
}

/// The client address a judge's answer shows. A `remote_addr`/`REMOTE_ADDR` (the socket's
/// peer) is preferred to an `origin` (which httpbin builds from `X-Forwarded-For`); of a
/// list (`"origin": "client, proxy"`), the last entry that is not `own` — the hop nearest
/// the judge.
pub fn origin(body: &[u8], own: Option<IpAddr>) -> Option<IpAddr> {
    let mut best: Option<(bool, IpAddr)> = None;
    for caps in origin_re().captures_iter(body) {
        let whole = caps.get(0).map(|m| m.as_bytes()).unwrap_or_default();
        let peer_key = memchr::memmem::find(&whole.to_ascii_lowercase(), b"remote").is_some();
        let Some(value) = caps.get(1).or_else(|| caps.get(2)).and_then(|m| std::str::from_utf8(m.as_bytes()).ok())
        else {
            continue;
        };
        let entries: Vec<IpAddr> = value.split(',').filter_map(parse_ip).collect();
        let pick = entries.iter().rev().find(|ip| Some(**ip) != own).or(entries.last()).copied();
        if let Some(ip) = pick
            && best.is_none_or(|(was_peer, _)| peer_key && !was_peer)
        {
            best = Some((peer_key, ip));
        }
    }
    best.map(|(_, ip)| ip)
}

/// The proxy-revealing headers a judge's answer shows, with how many list entries (hops)
/// each holds.
pub fn revealing(body: &[u8]) -> Vec<(&'static str, usize)> {
    let mut found: Vec<(&'static str, usize)> = Vec::new();
    for caps in revealing_re().captures_iter(body) {
        let (Some(m), value) = (caps.get(1).or_else(|| caps.get(3)), caps.get(2).or_else(|| caps.get(4))) else {
            continue;
        };
        let name = String::from_utf8_lossy(m.as_bytes()).to_ascii_lowercase().replace('_', "-");
        let hops =
            value.map_or(0, |v| v.as_bytes().split(|b| *b == b',').filter(|e| !e.trim_ascii().is_empty()).count());
        if let Some(known) = REVEALING.iter().find(|r| **r == name)
            && !found.iter().any(|(n, _)| n == known)
        {
            found.push((known, hops));
        }
    }
    found
}

/// Whether `ip` appears in `body` as a whole token (not inside a longer address), in its
/// IPv4 and IPv4-mapped forms alike; an echoed `Host` header (the judge's own address,
/// when it is ours) does not count.
fn mentions(body: &[u8], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let mut forms = vec![ip.to_string()];
    if let IpAddr::V4(v4) = ip {
        forms.push(v4.to_ipv6_mapped().to_string());
    }
    let token = |b: &u8| b.is_ascii_hexdigit() || matches!(b, b'.' | b':');
    forms.iter().any(|text| {
        memchr::memmem::find_iter(body, text.as_bytes()).any(|i| {
            let before = body.get(..i).unwrap_or_default();
            let after = body.get(i.saturating_add(text.len())..).unwrap_or_default();
            let whole = !before.last().is_some_and(token) && !after.first().is_some_and(token);
            let host_echo = json_key_before_value(before.strip_suffix(b"\"").unwrap_or(before))
                .or_else(|| line_key(before))
                .is_some_and(|k| k.eq_ignore_ascii_case(b"host") || k.eq_ignore_ascii_case(b"HTTP_HOST"));
            whole && !host_echo
        })
    })
}

/// What an answer through a proxy says: how anonymous the proxy is and where it exits.
/// A judge that does not echo headers tells nothing about anonymity (`Unknown`).
pub fn assess(cal: &Calibration, body: &[u8]) -> Echo {
    let exit_ip = origin(body, cal.own_ip);
    // A header the judge shows anyway counts only with more hops than it had then.
    let adds = |(name, hops): &(&'static str, usize)| {
        cal.baseline.iter().find(|(b, _)| b == name).is_none_or(|(_, base)| hops > base)
    };
    let anonymity = if cal.carrier != Carrier::Header {
        Anonymity::Unknown
    } else if cal.own_ip.is_some_and(|own| mentions(body, own)) {
        Anonymity::Transparent
    } else if revealing(body).iter().any(adds) {
        Anonymity::Anonymous
    } else {
        Anonymity::Elite
    };
    Echo { anonymity, exit_ip }
}

/// Longest line or JSON string a placed nonce is looked for in.
const MAX_CONTEXT: usize = 1024;

fn is_nonce_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

impl Place {
    /// Whether `body` holds `nonce` at this place, in this form.
    pub fn found(&self, body: &[u8], nonce: &[u8]) -> bool {
        if nonce.is_empty() {
            return false;
        }
        memchr::memmem::find_iter(body, nonce).any(|i| {
            let (before, rest) = body.split_at(i);
            let after = rest.get(nonce.len()..).unwrap_or_default();
            // The whole token: `abc` must not match inside `abcd`.
            if before.last().is_some_and(|b| is_nonce_byte(*b)) || after.first().is_some_and(|b| is_nonce_byte(*b)) {
                return false;
            }
            // Keys compare without case: a proxy may re-case the headers it forwards.
            self.classify_at(before, after).is_some_and(|p| p.same_as(self))
        })
    }

    fn same_as(&self, other: &Place) -> bool {
        match (self, other) {
            (Place::JsonMember { key: a }, Place::JsonMember { key: b })
            | (Place::JsonString { key: a }, Place::JsonString { key: b })
            | (Place::Line { key: a }, Place::Line { key: b }) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }

    /// The place of this kind a nonce found between `before` and `after` is at.
    fn classify_at(&self, before: &[u8], after: &[u8]) -> Option<Place> {
        match self {
            Place::JsonMember { .. } => json_member(before, after).map(|key| Place::JsonMember { key }),
            Place::JsonString { .. } => json_string(before).map(|key| Place::JsonString { key }),
            Place::Line { .. } => line_key(before).map(|key| Place::Line { key }),
        }
    }
}

/// `…"key"␣:␣"` before and `"` after: the member's key.
fn json_member(before: &[u8], after: &[u8]) -> Option<Vec<u8>> {
    if after.first() != Some(&b'"') {
        return None;
    }
    json_key_before_value(before.strip_suffix(b"\"")?)
}

/// `"key": "` ending `before_value` (the value's opening quote already stripped): the key.
fn json_key_before_value(before_value: &[u8]) -> Option<Vec<u8>> {
    let b = before_value.trim_ascii_end().strip_suffix(b":")?.trim_ascii_end().strip_suffix(b"\"")?;
    let start = memchr::memrchr(b'"', b)?;
    let key = b.get(start.checked_add(1)?..)?;
    (!key.is_empty() && key.len() <= 128 && !key.contains(&b'\\')).then(|| key.to_vec())
}

/// The nonce inside a JSON string (not its whole value) under some key: the key.
fn json_string(before: &[u8]) -> Option<Vec<u8>> {
    let floor = before.len().saturating_sub(MAX_CONTEXT);
    let window = before.get(floor..)?;
    let open = memchr::memrchr(b'"', window)?;
    let inside = window.get(open.checked_add(1)?..)?;
    if inside.is_empty() || inside.contains(&b'\n') {
        return None;
    }
    // An escaped quote is not the opening one.
    if open.checked_sub(1).and_then(|p| window.get(p)) == Some(&b'\\') {
        return None;
    }
    json_key_before_value(window.get(..open)?)
}

/// The key of the line the nonce is on: `KEY = …` or `KEY: …`, after any HTML tags and
/// whitespace at the start of the line.
fn line_key(before: &[u8]) -> Option<Vec<u8>> {
    let floor = before.len().saturating_sub(MAX_CONTEXT);
    let window = before.get(floor..)?;
    let start = memchr::memrchr(b'\n', window).map_or(0, |n| n.saturating_add(1));
    if start == 0 && floor > 0 {
        return None;
    }
    let mut line = window.get(start..)?.trim_ascii_start();
    // `<pre>`, `<br>`, `<b>`… before the key.
    while let Some(rest) = line.strip_prefix(b"<") {
        let close = memchr::memchr(b'>', rest)?;
        line = rest.get(close.checked_add(1)?..)?.trim_ascii_start();
    }
    let end = line.iter().position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))?;
    let (key, rest) = line.split_at(end);
    let rest = rest.trim_ascii_start();
    let sep = rest.first()?;
    (!key.is_empty() && matches!(sep, b'=' | b':')).then(|| key.to_vec())
}

/// Learns where a judge echoes the nonces of a direct request: the header nonce first
/// (checks then keep the nonce out of the URL), then the query nonce. `None`: the judge
/// echoes neither in a form this checker can tell from a page that merely repeats it.
pub fn calibrate(body: &[u8], query_nonce: &[u8], header_nonce: &[u8]) -> Option<Calibration> {
    let place_of = |nonce: &[u8]| -> Option<Place> {
        let mut best: Option<Place> = None;
        for i in memchr::memmem::find_iter(body, nonce) {
            let (before, rest) = body.split_at(i);
            let after = rest.get(nonce.len()..).unwrap_or_default();
            if before.last().is_some_and(|b| is_nonce_byte(*b)) || after.first().is_some_and(|b| is_nonce_byte(*b)) {
                continue;
            }
            let here = json_member(before, after)
                .map(|key| Place::JsonMember { key })
                .or_else(|| line_key(before).map(|key| Place::Line { key }))
                .or_else(|| json_string(before).map(|key| Place::JsonString { key }));
            best = match (best, here) {
                (Some(b @ Place::JsonMember { .. }), _) => Some(b),
                (_, Some(h @ Place::JsonMember { .. })) => Some(h),
                (Some(b @ Place::Line { .. }), _) => Some(b),
                (b, h) => h.or(b),
            };
        }
        best
    };
    let (carrier, place) = match place_of(header_nonce) {
        Some(place) => (Carrier::Header, place),
        None => (Carrier::Query, place_of(query_nonce)?),
    };
    Some(Calibration { carrier, place, own_ip: origin(body, None), baseline: revealing(body) })
}

/// The start of an answer as an error may quote it: at most `max` bytes, control bytes
/// escaped.
pub fn quote_start(body: &[u8], max: usize) -> String {
    let cut = body.get(..max.min(body.len())).unwrap_or_default();
    let mut s = String::from_utf8_lossy(cut).escape_debug().to_string();
    if body.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const Q: &str = "0a1b2c3d4e5f60718293a4b5";
    const H: &str = "ffee00112233445566778899";

    /// What a test compares: where the nonce goes and where it comes back.
    #[derive(Debug, PartialEq)]
    struct Calibration {
        carrier: Carrier,
        place: Place,
    }

    fn cal(body: &str) -> Option<Calibration> {
        calibrate(body.as_bytes(), Q.as_bytes(), H.as_bytes())
            .map(|c| Calibration { carrier: c.carrier, place: c.place })
    }

    fn member(k: &str) -> Place {
        Place::JsonMember { key: k.as_bytes().to_vec() }
    }

    #[test]
    fn each_judge_family_is_recognised() {
        // httpbin /get: the header echo wins (the URL then carries no nonce).
        let httpbin = format!(
            r#"{{"args": {{"pc_nonce": "{Q}"}}, "headers": {{"Host": "j", "X-Pc-Nonce": "{H}"}}, "origin": "1.2.3.4", "url": "http://j/get?pc_nonce={Q}"}}"#
        );
        assert_eq!(cal(&httpbin), Some(Calibration { carrier: Carrier::Header, place: member("X-Pc-Nonce") }));
        // httpbin without the header (a proxy in front of it strips X- headers): the args.
        let args_only = format!(r#"{{"args": {{"pc_nonce": "{Q}"}}, "url": "http://j/get?pc_nonce={Q}"}}"#);
        assert_eq!(cal(&args_only), Some(Calibration { carrier: Carrier::Query, place: member("pc_nonce") }));
        // A path-and-headers echo, lower-case names.
        let echo =
            format!(r#"{{"path":"/echo?pc_nonce={Q}","headers":{{"x-pc-nonce":"{H}"}},"remote_addr":"1.2.3.4"}}"#);
        assert_eq!(cal(&echo), Some(Calibration { carrier: Carrier::Header, place: member("x-pc-nonce") }));
        // The same with the path only.
        let path_only = format!(r#"{{"path": "/echo?pc_nonce={Q}", "remote_addr": "1.2.3.4"}}"#);
        assert_eq!(
            cal(&path_only),
            Some(Calibration { carrier: Carrier::Query, place: Place::JsonString { key: b"path".to_vec() } })
        );
        // azenv, in <pre>, with the header.
        let azenv = format!(
            "<html><body><pre>\nREMOTE_ADDR = 1.2.3.4\nREQUEST_URI = /azenv.php?pc_nonce={Q}\nQUERY_STRING = pc_nonce={Q}\nHTTP_X_PC_NONCE = {H}\n</pre></body></html>"
        );
        assert_eq!(
            cal(&azenv),
            Some(Calibration { carrier: Carrier::Header, place: Place::Line { key: b"HTTP_X_PC_NONCE".to_vec() } })
        );
        // azenv that drops unknown headers: the query, on its line (before the JSON-less URI).
        let azenv_q = format!("<pre>REQUEST_URI = /azenv.php?pc_nonce={Q}<br>\n<b>QUERY_STRING</b> = pc_nonce={Q}\n");
        let c = cal(&azenv_q).unwrap();
        assert_eq!(c.carrier, Carrier::Query);
        assert!(matches!(c.place, Place::Line { .. }), "{c:?}");
        // Nothing usable: the URL in a link, or no echo at all.
        assert_eq!(cal(&format!("<a href=\"/login?next=/get?pc_nonce={Q}\">login</a>")), None);
        assert_eq!(cal("<html>It works!</html>"), None);
    }

    #[test]
    fn an_answer_counts_only_in_the_calibrated_place_and_form() {
        let n = "9f8e7d6c5b4a39281706f5e4";
        let m = member("X-Pc-Nonce");
        assert!(m.found(format!(r#"{{"headers": {{"X-Pc-Nonce": "{n}"}}}}"#).as_bytes(), n.as_bytes()));
        // A proxy that lower-cases the headers it forwards: the same key.
        assert!(m.found(format!(r#"{{"headers": {{"x-pc-nonce": "{n}"}}}}"#).as_bytes(), n.as_bytes()));
        assert!(m.found(format!(r#"{{"headers":{{"X-Pc-Nonce" : "{n}"}}}}"#).as_bytes(), n.as_bytes()));
        // Another key, a longer token, a portal link, a stale nonce: no.
        assert!(!m.found(format!(r#"{{"X-Other": "{n}"}}"#).as_bytes(), n.as_bytes()));
        assert!(!m.found(format!(r#"{{"X-Pc-Nonce": "{n}0"}}"#).as_bytes(), n.as_bytes()));
        assert!(!m.found(format!("<a href=\"/x?X-Pc-Nonce={n}\">").as_bytes(), n.as_bytes()));
        assert!(!m.found(br#"{"X-Pc-Nonce": "5ca1ab1e5ca1ab1e5ca1ab1e"}"#, n.as_bytes()));
        let path = Place::JsonString { key: b"path".to_vec() };
        assert!(path.found(format!(r#"{{"path": "/echo?pc_nonce={n}&x=1"}}"#).as_bytes(), n.as_bytes()));
        assert!(!path.found(format!(r#"{{"url": "/echo?pc_nonce={n}"}}"#).as_bytes(), n.as_bytes()));
        assert!(!path.found(format!("<a href=\"/echo?pc_nonce={n}\">").as_bytes(), n.as_bytes()));
        let line = Place::Line { key: b"QUERY_STRING".to_vec() };
        assert!(line.found(format!("<pre>\nQUERY_STRING = pc_nonce={n}\n").as_bytes(), n.as_bytes()));
        assert!(!line.found(format!("REQUEST_URI = /a?pc_nonce={n}\n").as_bytes(), n.as_bytes()));
        assert!(!line.found(format!("see /a?QUERY_STRING=pc_nonce={n}").as_bytes(), n.as_bytes()));
    }

    #[test]
    fn anonymity_and_exit_address_from_each_family() {
        let direct = format!(r#"{{"headers": {{"X-Pc-Nonce": "{H}"}}, "origin": "203.0.113.5"}}"#);
        let c = calibrate(direct.as_bytes(), Q.as_bytes(), H.as_bytes()).unwrap();
        assert_eq!(c.own_ip, Some("203.0.113.5".parse().unwrap()));
        assert!(c.baseline.is_empty());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let elite = br#"{"headers": {"Host": "j"}, "origin": "198.51.100.7"}"#;
        assert_eq!(assess(&c, elite), Echo { anonymity: Anonymity::Elite, exit_ip: ip("198.51.100.7") });
        let anon = br#"{"headers": {"Via": "1.1 squid"}, "origin": "198.51.100.7"}"#;
        assert_eq!(assess(&c, anon).anonymity, Anonymity::Anonymous);
        let transparent = br#"{"headers": {"X-Forwarded-For": "203.0.113.5"}, "origin": "198.51.100.7"}"#;
        assert_eq!(assess(&c, transparent).anonymity, Anonymity::Transparent);
        // A longer address is not ours.
        let other = br#"{"headers": {"X-Note": "203.0.113.50"}, "origin": "198.51.100.7"}"#;
        assert_eq!(assess(&c, other).anonymity, Anonymity::Elite);
        // azenv lines.
        let az = b"<pre>\nREMOTE_ADDR = 198.51.100.9\nHTTP_VIA = 1.1 proxy\nHTTP_X_FORWARDED_FOR = 203.0.113.5\n</pre>";
        assert_eq!(assess(&c, az), Echo { anonymity: Anonymity::Transparent, exit_ip: ip("198.51.100.9") });
        // path-echo with remote_addr and a port; httpbin's list of origins: the hop nearest
        // the judge that is not us; the socket's peer before an origin built from headers.
        let own = ip("203.0.113.5");
        assert_eq!(origin(br#"{"remote_addr": "198.51.100.9:4711"}"#, own), ip("198.51.100.9"));
        assert_eq!(origin(br#"{"origin": "203.0.113.5, 198.51.100.9"}"#, own), ip("198.51.100.9"));
        assert_eq!(origin(br#"{"origin": "2001:db8::1"}"#, own), ip("2001:db8::1"));
        assert_eq!(origin(br#"{"origin": "10.1.1.1", "remote_addr": "198.51.100.9"}"#, own), ip("198.51.100.9"));
        assert_eq!(origin(br#"{"origin": "::ffff:198.51.100.9"}"#, own), ip("198.51.100.9"));
        let via_httpbin = br#"{"headers": {"X-Forwarded-For": "203.0.113.5"}, "origin": "203.0.113.5, 198.51.100.7"}"#;
        assert_eq!(assess(&c, via_httpbin), Echo { anonymity: Anonymity::Transparent, exit_ip: ip("198.51.100.7") });
        // Our address in its IPv4-mapped form; echoed only as the judge's Host; learned mapped.
        let mapped = br#"{"headers": {"X-Forwarded-For": "::ffff:203.0.113.5"}, "origin": "198.51.100.7"}"#;
        assert_eq!(assess(&c, mapped).anonymity, Anonymity::Transparent);
        let host_only = br#"{"headers": {"Host": "203.0.113.5"}, "origin": "198.51.100.7"}"#;
        assert_eq!(assess(&c, host_only).anonymity, Anonymity::Elite);
        let direct_mapped = format!(r#"{{"headers": {{"X-Pc-Nonce": "{H}"}}, "remote_addr": "::ffff:203.0.113.5"}}"#);
        let cm = calibrate(direct_mapped.as_bytes(), Q.as_bytes(), H.as_bytes()).unwrap();
        assert_eq!(cm.own_ip, ip("203.0.113.5"));
        assert_eq!(assess(&cm, transparent).anonymity, Anonymity::Transparent);
        // Headers the judge's own front proxy adds for everyone are not held against
        // proxies — unless a proxy adds hops to them.
        let fronted = format!(
            r#"{{"headers": {{"X-Pc-Nonce": "{H}", "Via": "1.1 vegur", "X-Forwarded-For": "203.0.113.5"}}, "origin": "203.0.113.5"}}"#
        );
        let c2 = calibrate(fronted.as_bytes(), Q.as_bytes(), H.as_bytes()).unwrap();
        assert_eq!(c2.baseline, [("via", 1), ("x-forwarded-for", 1)]);
        let through =
            br#"{"headers": {"Via": "1.1 vegur", "X-Forwarded-For": "198.51.100.7"}, "origin": "198.51.100.7"}"#;
        assert_eq!(assess(&c2, through).anonymity, Anonymity::Elite);
        let more_hops = br#"{"headers": {"Via": "1.1 squid, 1.1 vegur", "X-Forwarded-For": "198.51.100.7"}, "origin": "198.51.100.7"}"#;
        assert_eq!(assess(&c2, more_hops).anonymity, Anonymity::Anonymous);
        // A judge that echoes no headers: unknown.
        let q_only = format!(r#"{{"args": {{"pc_nonce": "{Q}"}}, "origin": "203.0.113.5"}}"#);
        let c3 = calibrate(q_only.as_bytes(), Q.as_bytes(), H.as_bytes()).unwrap();
        assert_eq!(assess(&c3, transparent).anonymity, Anonymity::Unknown);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let n = b"abc";
        for body in [&b""[..], b"\"", b"abc", b"\"abc\"", b":\"abc\"", b"\n<abc", b"<<<<abc", b"\"\\\"abc"] {
            for p in [member("k"), Place::JsonString { key: b"k".to_vec() }, Place::Line { key: b"k".to_vec() }] {
                let _ = p.found(body, n);
            }
            let _ = calibrate(body, n, n);
        }
    }
}
