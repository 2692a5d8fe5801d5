//! Configuration in three steps: [`raw`] (serde, unknown keys are errors) →
//! [`validate`] (pure, every error names its field) → the typed [`Config`] used by the
//! rest of the crate. Nothing here opens sockets or files other than the config itself.

pub mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::{FieldError, PLACEHOLDER_KEY, check_api_key, parse_key_list, validate};

use crate::check::{CheckSettings, Mode, Validation};
use crate::source::{FetchSettings, SourceSpec};

/// An invalid config: which field, and what is allowed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {error}")]
    Field {
        path: String,
        #[source]
        error: FieldError,
    },
    #[error("{path}: cannot read the file")]
    Read {
        path: String,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

/// Where the validated checker settings come from and what the fd clamp did to them.
#[derive(Clone, Debug)]
pub struct CheckerConfig {
    pub settings: CheckSettings,
    /// Concurrency asked for, before the fd clamp.
    pub concurrency_requested: usize,
    /// Hostnames resolved concurrently per round.
    pub batch_size: usize,
    pub allow_private: bool,
    /// Fds kept for everything but checks; `None`: 5% (64..=1024).
    pub fd_reserve: Option<u64>,
    pub recheck: RecheckConfig,
}

/// Rechecks of the served pool between rounds (`checker.recheck_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecheckConfig {
    /// How often each served (or pulled) proxy is rechecked; `None`: only on reports.
    pub interval: Option<Duration>,
    /// Rechecks in flight at most (taken from the fd budget, at most a quarter of it).
    pub concurrency: usize,
    /// Consecutive failures after which a pulled proxy is no longer rechecked (a full
    /// round can find it again).
    pub drop_after: u16,
}

/// Storage backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageKind {
    File,
    Sqlite,
    Redis,
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub kind: StorageKind,
    pub path: PathBuf,
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (several instances may share one Redis).
    pub redis_prefix: String,
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub auth: bool,
    pub api_keys: Vec<String>,
    pub rate_limit_per_minute: u32,
    pub rate_limit_per_ip_per_minute: u32,
    /// Reverse proxies whose forwarding header is believed (`api.trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header they write (`api.forwarded_header`).
    pub forwarded_header: ForwardedHeader,
    pub metrics_require_auth: bool,
    /// Keys that may call `POST /reload` (empty: every key may).
    pub admin_keys: Vec<String>,
    /// Minimum time between two rounds started by `POST /reload`.
    pub reload_min_interval: Duration,
    /// Whether `/judge` answers.
    pub judge_enabled: bool,
    /// Request headers `/judge` never echoes, lower-case (the built-in list plus
    /// `api.judge_hide_headers`).
    pub judge_hide_headers: Vec<String>,
    /// `POST /report` calls per key (per client address with auth off) per minute.
    pub report_per_minute: u32,
}

/// Headers `/judge` never echoes, whatever the config says.
pub const JUDGE_ALWAYS_HIDDEN: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    // Identity tokens that access proxies in front of a service add.
    "x-forwarded-access-token",
    "x-auth-request-access-token",
    "cf-access-jwt-assertion",
    "x-amzn-oidc-data",
    "x-amzn-oidc-accesstoken",
    "x-goog-iap-jwt-assertion",
];

/// Which header the trusted proxies write (only one can be trusted: a proxy that writes
/// one passes the other through from the client untouched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:443"`.
    Forwarded,
}

impl ForwardedHeader {
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

impl std::str::FromStr for ForwardedHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err(format!("`{s}` is not a forwarding header (allowed: x-forwarded-for, forwarded)")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON lines otherwise (the default).
    Auto,
    Json,
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(format!("`{other}` is not a log format (allowed: auto, json, text)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub sources: Vec<SourceSpec>,
    pub interval: Duration,
    pub fetch: FetchSettings,
    pub checker: CheckerConfig,
    pub api: ApiConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    /// Bounds of each proxy's track record (`history.*`).
    pub history: crate::history::Limits,
}

/// The example config shipped at the repository root, embedded.
pub const EXAMPLE: &str = include_str!("../../../../config.example.json");

/// The built-in judges (what `config.example.json` spells out): a plain one for the
/// forward test and an `https://` one for tunnels, which a proxy cannot forge.
pub const DEFAULT_JUDGES: &[&str] = &["http://httpbin.org/get", "https://httpbin.org/get"];

impl Config {
    /// Parses and validates a JSON document; `path` is only used in messages.
    pub fn from_json(text: &str, path: &str) -> Result<Self, ConfigError> {
        from_raw(parse_raw(text, path)?, path)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        from_raw(load_raw(path)?, &path.display().to_string())
    }

    /// `config.example.json`, compiled in: what `serve` runs without `--config`.
    pub fn embedded() -> Self {
        Self::from_json(EXAMPLE, "embedded config.example.json").expect("config.example.json is valid (tested)")
    }

    /// The built-in defaults of every key: no sources, file storage.
    pub fn defaults() -> Self {
        validate(raw::RawConfig::default()).expect("the defaults are valid")
    }
}

impl Config {
    /// Settings that work but weaken what a check proves; logged at start and by
    /// `config check`.
    pub fn warnings(&self) -> Vec<String> {
        let s = &self.checker.settings;
        let mut out = Vec::new();
        if s.mode == Mode::FullHttp && !s.judges.is_empty() && s.judges.iter().all(|j| j.scheme() == "http") {
            out.push(
                "checker.judge_url: every judge is plain http://, so a proxy that reads the nonce in the request can \
                 forge the judge's answer without forwarding anything; add an https:// judge beside it: tunnel and \
                 SOCKS checks then use that one, and their capability cannot be forged"
                    .to_string(),
            );
        }
        out
    }
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "connect-only" => Some(Mode::ConnectOnly),
            "full-http" => Some(Mode::FullHttp),
            _ => None,
        }
    }
}

impl Validation {
    fn describe(&self) -> &'static str {
        match self {
            Validation::Nonce => "nonce",
            Validation::Contains(_) => "contains",
            Validation::None => "none",
        }
    }
}

impl CheckerConfig {
    /// Short description for logs.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        format!(
            "mode={} validation={} timeout={:?} connect_timeout={:?} retries={} concurrency={}",
            s.mode.as_str(),
            s.validation.describe(),
            s.timeout,
            s.connect_timeout,
            s.retries,
            s.concurrency
        )
    }
}

/// Reads and parses a config file into its raw form (for callers that overlay flags
/// before validating).
pub fn load_raw(path: &Path) -> Result<raw::RawConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read { path: shown.clone(), source: std::sync::Arc::new(e) })?;
    parse_raw(&text, &shown)
}

fn parse_raw(text: &str, path: &str) -> Result<raw::RawConfig, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        // serde quotes the offending value (`invalid type: string "…"`): a key or a token
        // pasted in the wrong place must not be echoed into logs.
        let inner = quoted_strings().replace_all(&inner.to_string(), "a string").into_owned();
        let message = if at == "." { inner } else { format!("at `{at}`: {inner}") };
        ConfigError::Syntax { path: path.to_string(), message }
    })
}

fn quoted_strings() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r#"string "(?:[^"\\]|\\.)*""#).expect("a valid regex"))
}

/// Validates a raw config; `path` names its origin in messages.
pub fn from_raw(raw: raw::RawConfig, path: &str) -> Result<Config, ConfigError> {
    validate(raw).map_err(|error| ConfigError::Field { path: path.to_string(), error })
}
