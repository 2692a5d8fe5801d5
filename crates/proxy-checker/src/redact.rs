//! URLs as they may be shown (logs, metrics, `/stat`, errors): tokens and passwords in
//! URLs are never shown. Used for source URLs, judge URLs and the Redis URL.

/// A parsed URL as it may be shown: the user part (`https://TOKEN@host/`,
/// `user:password@`) and every query value (`?key=…`, `?token=…`) replaced by `redacted`,
/// the fragment dropped. Scheme, host, port, path and the query's parameter names stay, so
/// the URL can still be recognised. (A token in the path cannot be told from a path: give
/// such a source a `name`.)
pub fn redacted(u: &url::Url) -> String {
    let mut u = u.clone();
    if !u.username().is_empty() {
        let _ = u.set_username("redacted");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    if let Some(q) = u.query().filter(|q| !q.is_empty()) {
        let shown: Vec<String> = q
            .split('&')
            .filter(|part| !part.is_empty())
            .map(|part| match part.split_once('=') {
                Some((name, _)) => format!("{name}=redacted"),
                None => "redacted".to_string(),
            })
            .collect();
        u.set_query(Some(&shown.join("&")));
    }
    u.set_fragment(None);
    u.to_string()
}

/// A string that should have been a URL but did not parse, as it may be shown. A malformed
/// URL may still carry a password, which may itself hold `/`, `?` or `#`: everything
/// from `://` to the last `@` is replaced, and everything from the first `?` or `#` after
/// that.
pub fn redacted_str(s: &str) -> String {
    let s = s.trim();
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, s),
    };
    let (user, rest) = match rest.rfind('@') {
        Some(at) => ("redacted@", rest.get(at.saturating_add(1)..).unwrap_or("")),
        None => ("", rest),
    };
    let rest = match rest.find(['?', '#']) {
        Some(q) => format!("{}?redacted", rest.get(..q).unwrap_or("")),
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{user}{rest}"),
        None => format!("{user}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_urls_lose_their_user_part_query_values_and_fragment() {
        let r = |s: &str| redacted(&url::Url::parse(s).unwrap());
        assert_eq!(r("https://TOKEN@h.example/l.txt"), "https://redacted@h.example/l.txt");
        assert_eq!(
            r("https://u:p@h.example:8443/a/b?key=K&token=T&flag#frag"),
            "https://redacted:redacted@h.example:8443/a/b?key=redacted&token=redacted&redacted"
        );
        assert_eq!(r("http://h.example/list"), "http://h.example/list");
        assert_eq!(r("redis://:pw@127.0.0.1:6379/0"), "redis://:redacted@127.0.0.1:6379/0");
    }

    #[test]
    fn unparsed_urls_lose_everything_that_may_be_a_secret() {
        for (raw, want) in [
            ("redis://:ab/cd+ef==@redis:notaport", "redis://redacted@redis:notaport"),
            ("https://u:ab/cd@host/list?key=K", "https://redacted@host/list?redacted"),
            ("https://u:a?b#c@host/list", "https://redacted@host/list"),
            ("socks5://u:TOKEN@h/x", "socks5://redacted@h/x"),
            ("  https://TOKEN@h  ", "https://redacted@h"),
            ("https://exa mple.com/a?key=SECRET#f", "https://exa mple.com/a?redacted"),
            ("no scheme:pw@host", "redacted@host"),
        ] {
            let got = redacted_str(raw);
            assert_eq!(got, want, "{raw}");
            for secret in ["ab/cd", "TOKEN", "SECRET", "pw", "a?b"] {
                assert!(!got.contains(secret), "{raw} → {got}");
            }
        }
    }
}
