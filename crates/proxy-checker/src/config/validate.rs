//! Raw config → validated [`Config`]: pure, and every error names its field and what is
//! allowed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{OneOrMany, RawAggregation, RawApi, RawChecker, RawConfig, RawHistory, RawLog, RawSource, RawStorage};
use super::{
    ApiConfig, CheckerConfig, Config, DEFAULT_JUDGES, ForwardedHeader, JUDGE_ALWAYS_HIDDEN, LogConfig, LogFormat,
    RecheckConfig, StorageConfig, StorageKind,
};
use crate::check::{CheckSettings, Mode, Validation};
use crate::proxy::Protocol;
use crate::source::{FetchSettings, Location, SourceSpec};

/// A field that is not valid: which one (`checker.timeout_ms`, `sources[2].protocol`) and
/// what is wrong or allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

type Invalid = FieldError;

/// The placeholder `env.example` ships with: never a key, wherever it comes from.
pub const PLACEHOLDER_KEY: &str = "change-me-to-a-long-random-key";

/// The one rule for an API key, wherever it comes from (config, `--api-keys`,
/// `PROXY_API_KEY`, the generated key file): at least 16 characters, printable ASCII
/// without spaces (it travels in a header), not the shipped placeholder.
pub fn check_api_key(key: &str) -> Result<(), &'static str> {
    if key.len() < 16 {
        return Err("keys must be at least 16 characters");
    }
    if key.contains(',') {
        return Err("keys must not contain commas (key lists are comma-separated)");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("keys must be printable ASCII without spaces");
    }
    if key == PLACEHOLDER_KEY {
        return Err("this is the placeholder from env.example: generate a key (openssl rand -hex 32)");
    }
    Ok(())
}

/// Splits a comma-separated key list (`--api-keys`, `PROXY_API_KEY`) and checks each key;
/// the error names the key's position (never the key).
pub fn parse_key_list(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
        .map(|(i, k)| check_api_key(k).map(|()| k.to_string()).map_err(|why| format!("key {}: {why}", i + 1)))
        .collect()
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    FieldError { field: field.into(), message: message.into() }
}

fn ranged<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    v: Option<T>,
    default: T,
    lo: T,
    hi: T,
) -> Result<T, Invalid> {
    let v = v.unwrap_or(default);
    if v < lo || v > hi {
        return Err(bad(field, format!("must be between {lo} and {hi} (got {v})")));
    }
    Ok(v)
}

/// Validates a raw config, one section after another; the error names the field.
pub fn validate(raw: RawConfig) -> Result<Config, Invalid> {
    let sources = sources(&raw.sources, raw.checker.detect_protocol)?;
    let (interval, fetch) = aggregation(&raw.aggregation)?;
    Ok(Config {
        sources,
        interval,
        fetch,
        checker: checker(&raw.checker)?,
        api: api(&raw.api)?,
        storage: storage(&raw.storage)?,
        log: log(&raw.log)?,
        history: history(&raw.history)?,
    })
}

fn sources(raw: &[RawSource], detect_protocol: Option<bool>) -> Result<Vec<SourceSpec>, Invalid> {
    let mut sources = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let field = format!("sources[{i}]");
        let (loc, proto, name) = match s {
            RawSource::Plain(s) => (s.as_str(), None, None),
            RawSource::Full(o) => (o.url.as_str(), o.protocol.as_deref(), o.name.as_deref()),
        };
        let name = match name {
            None => None,
            Some(n) if n.trim().is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) => {
                return Err(bad(format!("{field}.name"), "must be 1 to 64 characters without control characters"));
            }
            Some(n) => {
                if let Some(j) = sources.iter().position(|s: &SourceSpec| s.name.as_deref() == Some(n)) {
                    return Err(bad(format!("{field}.name"), format!("`{n}` is already the name of sources[{j}]")));
                }
                Some(n.to_string())
            }
        };
        let location = Location::parse(loc).map_err(|m| bad(&field, m))?;
        let protocol = match proto {
            // Unlabelled lines are sniffed: tried as SOCKS5 first (an HTTP proxy answers a
            // SOCKS greeting with a status line, a SOCKS4 one with its reply) and
            // relabelled by the protocol detection.
            Some("auto") => Some(Protocol::Socks5),
            Some(p) => Some(p.parse::<Protocol>().map_err(|e| {
                bad(format!("{field}.protocol"), format!("{e} (allowed: http, https, socks4, socks5, auto)"))
            })?),
            None => None,
        };
        if proto == Some("auto") && detect_protocol == Some(false) {
            return Err(bad(
                format!("{field}.protocol"),
                "`auto` sniffs each proxy's protocol, which needs `checker.detect_protocol` (on by default)",
            ));
        }
        sources.push(SourceSpec { location, protocol, name });
    }
    Ok(sources)
}

fn aggregation(a: &RawAggregation) -> Result<(Duration, FetchSettings), Invalid> {
    let interval = Duration::from_secs(ranged("aggregation.interval_secs", a.interval_secs, 300, 5, 7 * 86_400)?);
    let fetch = FetchSettings {
        timeout: Duration::from_millis(ranged(
            "aggregation.source_timeout_ms",
            a.source_timeout_ms,
            30_000,
            100,
            600_000,
        )?),
        max_bytes: ranged("aggregation.source_max_bytes", a.source_max_bytes, 32 << 20, 1024, 1 << 30)?,
        retries: ranged("aggregation.source_retries", a.source_retries, 2, 0, 10)?,
        max_proxies: ranged("aggregation.source_max_proxies", a.source_max_proxies, 500_000, 1, 10_000_000)?,
        allow_private: a.allow_private_sources.unwrap_or(false),
        ..FetchSettings::default()
    };
    Ok((interval, fetch))
}

fn checker(c: &RawChecker) -> Result<CheckerConfig, Invalid> {
    let mode = match c.mode.as_deref() {
        None => Mode::FullHttp,
        Some(m) => Mode::parse(m)
            .ok_or_else(|| bad("checker.mode", format!("`{m}` is not a mode (allowed: connect-only, full-http)")))?,
    };
    let judges = judges(c)?;
    let validation = validation(c)?;
    let timeout_ms = ranged("checker.timeout_ms", c.timeout_ms, 10_000, 100, 600_000)?;
    let connect_timeout_ms =
        ranged("checker.connect_timeout_ms", c.connect_timeout_ms, 5_000.min(timeout_ms), 50, 600_000)?;
    if connect_timeout_ms > timeout_ms {
        return Err(bad("checker.connect_timeout_ms", format!("must not exceed checker.timeout_ms ({timeout_ms})")));
    }
    let concurrency = ranged("checker.concurrency_total", c.concurrency_total, 10_000, 1, 1_000_000)?;
    let settings = CheckSettings {
        mode,
        judges,
        expect_status: ranged("checker.expect_status", c.expect_status, 200, 100, 599)?,
        validation,
        connect_timeout: Duration::from_millis(connect_timeout_ms),
        timeout: Duration::from_millis(timeout_ms),
        retries: ranged("checker.retries", c.retries, 1, 0, 10)?,
        backoff: Duration::from_millis(ranged("checker.retry_backoff_ms", c.retry_backoff_ms, 250, 0, 60_000)?),
        concurrency,
        adaptive: c.enable_adaptive_concurrency.unwrap_or(true),
        ca_file: c.ca_file.as_ref().map(PathBuf::from),
        detect_protocol: c.detect_protocol.unwrap_or(true),
    };
    Ok(CheckerConfig {
        settings,
        concurrency_requested: concurrency,
        batch_size: ranged("checker.batch_size", c.batch_size, 256, 1, 100_000)?,
        allow_private: c.allow_private.unwrap_or(false),
        fd_reserve: c.fd_reserve,
        recheck: RecheckConfig {
            interval: match ranged("checker.recheck_interval_secs", c.recheck_interval_secs, 60, 0, 86_400)? {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            concurrency: ranged("checker.recheck_concurrency", c.recheck_concurrency, 1024, 1, 100_000)?,
            drop_after: ranged("checker.recheck_drop_after", c.recheck_drop_after, 3, 1, 1000)?,
        },
    })
}

/// `history.*`: how long dead proxies are remembered and how many records at most.
fn history(h: &RawHistory) -> Result<crate::history::Limits, Invalid> {
    let hours = ranged("history.retention_hours", h.retention_hours, 24, 1, 24 * 365)?;
    Ok(crate::history::Limits {
        max_entries: ranged("history.max_entries", h.max_entries, 100_000, 100, 10_000_000)?,
        retention_ms: hours * 3_600_000,
    })
}

/// `checker.judge_url`: one URL or several, http(s) with a host (default: httpbin's two).
fn judges(c: &RawChecker) -> Result<Vec<url::Url>, Invalid> {
    let judge_strings = match &c.judge_url {
        None => DEFAULT_JUDGES.iter().map(|j| j.to_string()).collect(),
        Some(OneOrMany::One(s)) => vec![s.clone()],
        Some(OneOrMany::Many(v)) => v.clone(),
    };
    if judge_strings.is_empty() {
        return Err(bad("checker.judge_url", "needs at least one URL"));
    }
    let mut judges = Vec::new();
    for s in &judge_strings {
        let shown = crate::redact::redacted_str(s);
        let url: url::Url = s.parse().map_err(|e| bad("checker.judge_url", format!("`{shown}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("checker.judge_url", format!("`{shown}`: must be an http:// or https:// URL with a host")));
        }
        judges.push(url);
    }
    Ok(judges)
}

/// `checker.validation` and `checker.expect_body`, which go together.
fn validation(c: &RawChecker) -> Result<Validation, Invalid> {
    Ok(match (c.validation.as_deref(), &c.expect_body) {
        (None | Some("nonce"), None) => Validation::Nonce,
        (None | Some("contains"), Some(text)) if !text.is_empty() => Validation::Contains(text.clone()),
        (Some("contains"), _) => {
            return Err(bad("checker.expect_body", "`contains` validation needs a non-empty expect_body"));
        }
        (Some("none"), None) => Validation::None,
        (Some(v @ ("nonce" | "none")), Some(_)) => {
            return Err(bad(
                "checker.expect_body",
                format!("only used with validation `contains` (validation is `{v}`)"),
            ));
        }
        (Some(v), _) => {
            return Err(bad(
                "checker.validation",
                format!("`{v}` is not a validation (allowed: nonce, contains, none)"),
            ));
        }
        (None, Some(_)) => return Err(bad("checker.expect_body", "must not be empty")),
    })
}

fn api(api: &RawApi) -> Result<ApiConfig, Invalid> {
    let listen_s = api.listen.clone().unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen: SocketAddr = listen_s
        .parse()
        .map_err(|_| bad("api.listen", format!("`{listen_s}` is not an address:port (for example 0.0.0.0:8080)")))?;
    let api_keys = keys("api.api_keys", api.api_keys.as_deref())?;
    let admin_keys = keys("api.admin_keys", api.admin_keys.as_deref())?;
    let trusted_proxies = trusted_proxies(api)?;
    let forwarded_header = match &api.forwarded_header {
        None => ForwardedHeader::XForwardedFor,
        Some(h) => h.parse().map_err(|e| bad("api.forwarded_header", e))?,
    };
    let judge_hide_headers = judge_hide_headers(api.judge_hide_headers.as_deref())?;
    Ok(ApiConfig {
        listen,
        auth: api.enable_api_key_auth.unwrap_or(true),
        api_keys,
        rate_limit_per_minute: ranged("api.rate_limit_per_minute", api.rate_limit_per_minute, 600, 1, 10_000_000)?,
        rate_limit_per_ip_per_minute: ranged(
            "api.rate_limit_per_ip_per_minute",
            api.rate_limit_per_ip_per_minute,
            1200,
            1,
            10_000_000,
        )?,
        trusted_proxies,
        forwarded_header,
        metrics_require_auth: api.metrics_require_auth.unwrap_or(false),
        admin_keys,
        reload_min_interval: Duration::from_secs(ranged(
            "api.reload_min_interval_secs",
            api.reload_min_interval_secs,
            30,
            0,
            86_400,
        )?),
        judge_enabled: api.judge_enabled.unwrap_or(true),
        judge_hide_headers,
        report_per_minute: ranged("api.report_per_minute", api.report_per_minute, 60, 1, 1_000_000)?,
    })
}

/// A key list (`api.api_keys`, `api.admin_keys`): every key by the one key rule.
fn keys(field: &str, keys: Option<&[String]>) -> Result<Vec<String>, Invalid> {
    let keys = keys.unwrap_or_default().to_vec();
    for (i, k) in keys.iter().enumerate() {
        check_api_key(k).map_err(|why| bad(format!("{field}[{i}]"), why))?;
    }
    Ok(keys)
}

/// `api.trusted_proxies`: addresses or CIDRs, never all of them (and the old switch is
/// refused, naming its replacement).
fn trusted_proxies(api: &RawApi) -> Result<Vec<ipnet::IpNet>, Invalid> {
    if api.trust_forwarded_for.is_some() {
        return Err(bad(
            "api.trust_forwarded_for",
            "was replaced by `api.trusted_proxies`: list your reverse proxies' addresses or CIDRs \
             (for example [\"127.0.0.1\", \"10.0.0.0/8\"]); forwarding headers from anyone else are ignored",
        ));
    }
    let mut trusted_proxies = Vec::new();
    for (i, s) in api.trusted_proxies.iter().flatten().enumerate() {
        let net = s
            .parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| bad(format!("api.trusted_proxies[{i}]"), format!("`{s}` is not an address or a CIDR")))?;
        if net.prefix_len() == 0 {
            return Err(bad(
                format!("api.trusted_proxies[{i}]"),
                format!("`{s}` trusts every address, so any client could write its own address; list your proxies"),
            ));
        }
        trusted_proxies.push(net.trunc());
    }
    Ok(trusted_proxies)
}

/// `api.judge_hide_headers`, added to the headers `/judge` always hides.
fn judge_hide_headers(extra: Option<&[String]>) -> Result<Vec<String>, Invalid> {
    let mut judge_hide_headers: Vec<String> = JUDGE_ALWAYS_HIDDEN.iter().map(|h| h.to_string()).collect();
    for (i, h) in extra.unwrap_or_default().iter().enumerate() {
        if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(bad(format!("api.judge_hide_headers[{i}]"), format!("`{h}` is not a header name")));
        }
        judge_hide_headers.push(h.to_ascii_lowercase());
    }
    Ok(judge_hide_headers)
}

fn storage(st: &RawStorage) -> Result<StorageConfig, Invalid> {
    let kind = match st.kind.as_deref() {
        None | Some("file") => StorageKind::File,
        Some("sqlite") => StorageKind::Sqlite,
        Some("redis") => StorageKind::Redis,
        Some(k) => {
            return Err(bad("storage.type", format!("`{k}` is not a storage type (allowed: file, sqlite, redis)")));
        }
    };
    let default_path = match kind {
        StorageKind::Sqlite => "data/proxies.sqlite3",
        _ => "data/proxies.json",
    };
    Ok(StorageConfig {
        path: PathBuf::from(st.path.clone().unwrap_or_else(|| default_path.into())),
        redis_url: st.redis_url.clone(),
        redis_prefix: match &st.redis_key_prefix {
            Some(p) if p.is_empty() || p.len() > 64 || p.contains(char::is_whitespace) => {
                return Err(bad("storage.redis_key_prefix", "must be 1 to 64 characters without spaces"));
            }
            Some(p) => p.clone(),
            None => "proxychecker:".into(),
        },
        kind,
    })
}

fn log(raw: &RawLog) -> Result<LogConfig, Invalid> {
    let level = raw.level.clone().unwrap_or_else(|| "info".into());
    if !matches!(level.as_str(), "error" | "warn" | "info" | "debug" | "trace") {
        return Err(bad("log.level", format!("`{level}` is not a level (allowed: error, warn, info, debug, trace)")));
    }
    let format = raw.format.as_deref().map_or(Ok(LogFormat::Auto), str::parse).map_err(|e| bad("log.format", e))?;
    Ok(LogConfig { level, format })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    fn err(json: &str) -> String {
        match Config::from_json(json, "c.json") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {json}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        for (json, want) in [
            (
                r#"{"checker": {"timeout_ms": 0}}"#,
                "c.json: `checker.timeout_ms`: must be between 100 and 600000 (got 0)",
            ),
            (
                r#"{"checker": {"mode": "fast"}}"#,
                "`checker.mode`: `fast` is not a mode (allowed: connect-only, full-http)",
            ),
            (
                r#"{"checker": {"timeot_ms": 5}}"#,
                "at `checker.timeot_ms`: unknown field `timeot_ms`, expected one of `mode`",
            ),
            (r#"{"sources": [{"url": "x.txt", "protocol": "ftp"}]}"#, "`sources[0].protocol`: unknown protocol `ftp`"),
            (r#"{"sources": ["ftp://a/b"]}"#, "`sources[0]`: `ftp://a/b`: only http://, https:// and file paths"),
            (r#"{"checker": {"judge_url": "ftp://x"}}"#, "`checker.judge_url`: `ftp://x`: must be an http://"),
            (r#"{"checker": {"timeout_ms": 1000, "connect_timeout_ms": 2000}}"#, "must not exceed checker.timeout_ms"),
            (
                r#"{"storage": {"type": "mongo"}}"#,
                "`storage.type`: `mongo` is not a storage type (allowed: file, sqlite, redis)",
            ),
            (r#"{"api": {"listen": "8080"}}"#, "`api.listen`"),
            (r#"{"checker": {"validation": "contains"}}"#, "needs a non-empty expect_body"),
            (r#"{"checker": {"retries": "two"}}"#, "at `checker.retries`: invalid type"),
            (r#"{"api": {"trusted_proxies": ["::/0"]}}"#, "`api.trusted_proxies[0]`: `::/0` trusts every address"),
            (
                r#"{"api": {"trusted_proxies": ["10.0.0.300"]}}"#,
                "`api.trusted_proxies[0]`: `10.0.0.300` is not an address",
            ),
            (
                r#"{"api": {"forwarded_header": "x-real-ip"}}"#,
                "`api.forwarded_header`: `x-real-ip` is not a forwarding header",
            ),
            (r#"{"api": {"judge_hide_headers": ["bad header"]}}"#, "`api.judge_hide_headers[0]`"),
            (r#"{"api": {"admin_keys": ["short"]}}"#, "`api.admin_keys[0]`: keys must be at least 16"),
            (r#"{"sources": [{"url": "a.txt", "name": ""}]}"#, "`sources[0].name`: must be 1 to 64"),
            (
                r#"{"sources": [{"url": "a.txt", "name": "x"}, {"url": "b.txt", "name": "x"}]}"#,
                "`sources[1].name`: `x` is already the name of sources[0]",
            ),
            ("{", "EOF while parsing"),
        ] {
            let got = err(json);
            assert!(got.contains(want), "{json}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn seed_keys_and_defaults() {
        let c = Config::from_json(
            r#"{"sources": ["lists/a.txt", {"url": "http://127.0.0.1:1/l", "protocol": "socks5"}],
                "checker": {"timeout_ms": 5000, "connect_timeout_ms": 3000, "concurrency_total": 20000, "batch_size": 500,
                            "retries": 1, "mode": "connect-only", "enable_adaptive_concurrency": false,
                            "judge_url": ["http://127.0.0.1:2/get", "https://127.0.0.1:3/get"], "allow_private": true},
                "api": {"rate_limit_per_minute": 60, "enable_api_key_auth": true, "listen": "0.0.0.0:9000", "api_keys": ["0123456789abcdef"]},
                "storage": {"type": "sqlite", "path": "/tmp/x.db", "redis_url": "redis://127.0.0.1:6379"}}"#,
            "c.json",
        )
        .unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.checker.settings.concurrency, 20_000);
        assert_eq!(c.checker.settings.judges.len(), 2);
        assert!(!c.checker.settings.adaptive && c.checker.allow_private);
        let d = Config::defaults();
        assert_eq!(d.checker.settings.mode, crate::check::Mode::FullHttp);
        assert_eq!(d.checker.settings.validation, crate::check::Validation::Nonce);
        assert!(matches!(Config::load("/nonexistent/x.json".as_ref()), Err(ConfigError::Read { .. })));
    }
}

#[cfg(test)]
mod keys {
    use super::{check_api_key, parse_key_list};

    /// Whatever `env.example` ships as `PROXY_API_KEY` can never become a key.
    #[test]
    fn the_env_example_placeholder_is_refused() {
        let env = include_str!("../../../../env.example");
        let value = env.lines().find_map(|l| l.strip_prefix("PROXY_API_KEY=")).expect("env.example sets PROXY_API_KEY");
        assert!(check_api_key(value).unwrap_err().contains("placeholder"), "{value}");
        assert!(parse_key_list(&format!("0123456789abcdef0,{value}")).unwrap_err().starts_with("key 2:"));
        assert!(parse_key_list("short").unwrap_err().contains("at least 16"));
        assert!(check_api_key("0123456789abcdef,x").unwrap_err().contains("commas"));
    }

    /// A key pasted where a list belongs is not echoed by the parse error.
    #[test]
    fn parse_errors_do_not_quote_string_values() {
        let e = crate::config::Config::from_json(r#"{"api": {"api_keys": "s3cret-key-0123456789"}}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at `api.api_keys`: invalid type: a string, expected a sequence"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn config_example_json_is_valid_and_matches_the_defaults() {
        let c = super::super::Config::embedded();
        let d = super::super::Config::defaults();
        assert_eq!(c.sources.len(), 3);
        let (a, b) = (&c.checker.settings, &d.checker.settings);
        assert_eq!(
            (a.mode, a.timeout, a.connect_timeout, a.retries, a.concurrency),
            (b.mode, b.timeout, b.connect_timeout, b.retries, b.concurrency)
        );
        assert_eq!(a.judges, b.judges);
        assert_eq!(c.interval, d.interval);
        assert_eq!(c.storage.path, d.storage.path);
    }
}
