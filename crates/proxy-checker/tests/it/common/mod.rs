//! The harness shared by the service-level tests: the real server on an ephemeral port,
//! started from a config file the test writes, and a client for it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxy_checker::config::Config;
use proxy_checker::server::{self, Options, Server};
use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol};
use serde_json::{Value, json};

pub const KEY: &str = "test-key-0123456789abcdef";

/// How long a test waits before calling something hung. Only a hang guard: no test
/// asserts how fast anything is (that is what the benchmarks are for), so this is far
/// above any duration a slow or busy machine could take.
pub const HANG_GUARD: Duration = Duration::from_secs(300);

pub fn farm_spec() -> FarmSpec {
    FarmSpec {
        groups: vec![
            Group::new(6, Protocol::Http, Behavior::Working),
            Group::new(4, Protocol::Socks5, Behavior::Working).latency(Duration::from_millis(120)),
            Group::new(3, Protocol::Http, Behavior::WrongPage),
            Group::new(3, Protocol::Socks4, Behavior::Refused),
        ],
    }
}

pub fn config(farm: &Farm, sources: Vec<String>, dir: &Path) -> Value {
    json!({
        "sources": sources,
        "aggregation": {"interval_secs": 3600, "source_timeout_ms": 10000, "source_retries": 0, "allow_private_sources": true},
        // Rechecks between rounds off: what a test sees is what its rounds found (the
        // freshness tests turn them on).
        "checker": {"judge_url": farm.judge_url(), "allow_private": true, "timeout_ms": 1500, "connect_timeout_ms": 500,
                    "retries": 0, "concurrency_total": 200, "recheck_interval_secs": 0},
        "api": {"listen": "127.0.0.1:0", "api_keys": [KEY], "rate_limit_per_minute": 100000, "rate_limit_per_ip_per_minute": 100000,
                "reload_min_interval_secs": 0},
        "storage": {"type": "file", "path": dir.join("snap.json")},
        "log": {"level": "warn"}
    })
}

pub struct H {
    pub server: Option<Server>,
    pub base: String,
    pub http: reqwest::Client,
    pub cfg_path: PathBuf,
}

pub async fn start(cfg: &Value, dir: &Path) -> H {
    start_opts(cfg, dir, None).await
}

pub async fn start_opts(cfg: &Value, dir: &Path, env_keys: Option<&str>) -> H {
    let opts = Options {
        env_keys: env_keys.map(str::to_string),
        fd_budget: 1000,
        max_connections: 256,
        grace: Duration::from_secs(2),
        ..Options::default()
    };
    start_with(cfg, dir, opts).await
}

/// Starts the server on the config written to `dir/config.json` (watched), with `opts`.
pub async fn start_with(cfg: &Value, dir: &Path, mut opts: Options) -> H {
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    let config = Config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    opts.config_path = Some(cfg_path.clone());
    let server = server::start(config, listener, opts).await.unwrap();
    let base = format!("http://{}", server.addr);
    let http =
        proxy_checker::source::fetch::client(proxy_checker::check::engine::tls_config(None).unwrap(), true).unwrap();
    H { server: Some(server), base, http, cfg_path }
}

impl H {
    pub async fn get(&self, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, r.text().await.unwrap(), headers)
    }

    pub async fn authed(&self, path: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{path}", self.base)).header("X-Api-Key", KEY).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post_reload(&self) -> Value {
        let r = self.http.post(format!("{}/reload", self.base)).header("X-Api-Key", KEY).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }

    pub async fn stat(&self) -> Value {
        let (s, body) = self.authed("/stat").await;
        assert_eq!(s, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls until `cond` holds (no fixed sleeps: a bounded wait for a condition).
    pub async fn until<F: AsyncFnMut(&H) -> bool>(&self, what: &str, mut cond: F) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !cond(self).await {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_round(&self, id: u64) {
        self.until("the round to finish", async |h| h.stat().await["last_round"]["round_id"].as_u64() >= Some(id))
            .await;
    }

    pub async fn shutdown(&mut self) {
        self.server.take().unwrap().shutdown().await;
    }
}

pub fn alive_set(farm: &Farm) -> BTreeSet<String> {
    farm.proxies()
        .filter(|p| proxy_farm::expect(p.protocol, p.behavior, true, false).alive)
        .map(|p| format!("{}://{}", p.protocol.client_scheme(), p.addr()))
        .collect()
}

/// Deletes every key under `prefix` from the test Redis; returns the keys it found.
pub async fn redis_keys_drop(prefix: &str) -> Vec<String> {
    let c = redis::Client::open(redis_url()).unwrap();
    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    }
    keys
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether Redis answers. In CI (`CI` set) a missing Redis fails the test; elsewhere the
/// test says so loudly and does not pretend to pass on its own merits.
pub async fn redis_available() -> bool {
    let ok = match redis::Client::open(redis_url()) {
        Ok(c) => tokio::time::timeout(Duration::from_secs(2), c.get_multiplexed_async_connection())
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    };
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "Redis at {} does not answer, and CI requires it", redis_url());
        eprintln!(
            "\n!!!!!!!! SKIPPED: Redis at {} does not answer; the Redis store was NOT tested !!!!!!!!\n",
            redis_url()
        );
    }
    ok
}
