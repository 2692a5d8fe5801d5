//! The config file as written: serde types with `deny_unknown_fields` and defaults.
//! No validation happens here; see [`super::validate`].

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub sources: Vec<RawSource>,
    #[serde(default)]
    pub aggregation: RawAggregation,
    #[serde(default)]
    pub checker: RawChecker,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub history: RawHistory,
    #[serde(default)]
    pub log: RawLog,
}

/// A source: `"URL or path"` or `{"url": ..., "protocol": ...}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSource {
    Plain(String),
    Full(RawSourceObject),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSourceObject {
    pub url: String,
    /// Shown instead of the URL in `/stat`, logs, metrics and the `source` field.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One or several strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregation {
    pub interval_secs: Option<u64>,
    pub source_timeout_ms: Option<u64>,
    pub source_max_bytes: Option<u64>,
    pub source_retries: Option<u32>,
    pub source_max_proxies: Option<usize>,
    pub allow_private_sources: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChecker {
    pub mode: Option<String>,
    pub judge_url: Option<OneOrMany>,
    pub expect_status: Option<u16>,
    pub validation: Option<String>,
    pub expect_body: Option<String>,
    pub timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub concurrency_total: Option<usize>,
    pub batch_size: Option<usize>,
    pub enable_adaptive_concurrency: Option<bool>,
    pub allow_private: Option<bool>,
    pub ca_file: Option<String>,
    pub fd_reserve: Option<u64>,
    pub detect_protocol: Option<bool>,
    /// Seconds between rechecks of a served proxy; 0 turns periodic rechecks off.
    pub recheck_interval_secs: Option<u64>,
    pub recheck_concurrency: Option<usize>,
    pub recheck_drop_after: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHistory {
    pub retention_hours: Option<u64>,
    pub max_entries: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub listen: Option<String>,
    pub enable_api_key_auth: Option<bool>,
    pub api_keys: Option<Vec<String>>,
    pub rate_limit_per_minute: Option<u32>,
    pub rate_limit_per_ip_per_minute: Option<u32>,
    /// Replaced by `trusted_proxies`; kept only to say so.
    pub trust_forwarded_for: Option<serde_json::Value>,
    pub trusted_proxies: Option<Vec<String>>,
    pub forwarded_header: Option<String>,
    pub metrics_require_auth: Option<bool>,
    pub admin_keys: Option<Vec<String>>,
    pub reload_min_interval_secs: Option<u64>,
    pub judge_enabled: Option<bool>,
    pub judge_hide_headers: Option<Vec<String>>,
    pub report_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
    pub redis_url: Option<String>,
    pub redis_key_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}
