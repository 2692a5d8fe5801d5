//! Wiring of the service: opens the store, loads the last snapshot, starts the round
//! scheduler, the API, the limiter sweeper and the config watcher; stops them all on
//! shutdown within a grace period.
//!
//! `start(config, listener, options)` is what `proxy-checker serve` and the tests call.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Guard};
use crate::config::{Config, StorageKind};
use crate::listener::{CappedListener, Limits};
use crate::service::Service;
use crate::store::{self, StoreError};

/// Environment variable for the Redis URL (overrides `storage.redis_url`).
pub const REDIS_URL_ENV: &str = "PROXY_CHECKER_REDIS_URL";

/// Applies the secrets that may come from the environment.
pub fn apply_env(config: &mut Config) {
    if let Ok(url) = std::env::var(REDIS_URL_ENV)
        && !url.is_empty()
    {
        config.storage.redis_url = Some(url);
    }
}

/// Applies a new log filter (from `log.level`).
pub type LogLevelSetter = Arc<dyn Fn(&str) + Send + Sync>;

/// How the server is started.
#[derive(Clone, Default)]
pub struct Options {
    /// The config file, watched for changes (and reloaded on SIGHUP).
    pub config_path: Option<PathBuf>,
    /// Extra API keys (the value of `PROXY_API_KEY`).
    pub env_keys: Option<String>,
    /// Checks the fd budget allows.
    pub fd_budget: usize,
    /// API connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Applies a new log level.
    pub set_log_level: Option<LogLevelSetter>,
    /// Reload the config on SIGHUP.
    pub sighup: bool,
    /// How long in-flight requests may take after shutdown starts.
    pub grace: Duration,
    /// Worker threads of the round runtime (default: one per core).
    pub checker_threads: Option<usize>,
    /// API connections silent this long either way are closed (default 30 s).
    pub idle_timeout: Option<Duration>,
    /// A request must be read and answered within this of its first byte (default 10 s).
    pub request_timeout: Option<Duration>,
    /// A round whose counters stay still this long is a fault (default: from the config,
    /// see [`Service::stall_limit`]).
    pub stall_limit: Option<Duration>,
}

/// See [`Options::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// See [`Options::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("listener: {0}")]
    Io(#[from] io::Error),
    #[error("config watcher on {path}: {error}")]
    Watch { path: String, error: String },
    /// An API key from `--api-keys`/`PROXY_API_KEY` or the key file breaks the key rule.
    #[error("{origin}: {why}")]
    Key { origin: String, why: String },
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
    api: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
    checker_rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.checker_rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Server {
    /// Whether the service is healthy (what `/health` says; the watchdog follows it).
    pub fn is_healthy(&self) -> bool {
        self.state.service.fault().is_none()
    }

    /// Graceful stop: no new connections, in-flight requests get the grace period, the
    /// running round is cancelled (the last complete snapshot is already persisted).
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.api).await;
        if tokio::time::timeout(Service::SHUTDOWN_GRACE, &mut self.scheduler).await.is_err() {
            tracing::warn!("round did not stop within the grace period");
        }
        // Track records gathered since the last save (rechecks, a cancelled round).
        if tokio::time::timeout(Service::SHUTDOWN_GRACE, self.state.service.persist_history()).await.is_err() {
            tracing::warn!("the history was not persisted within the grace period");
        }
        for t in self.background.drain(..) {
            t.abort();
        }
        if let Some(rt) = self.checker_rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts everything. The listener is already bound (tests pass `127.0.0.1:0`).
pub async fn start(config: Config, listener: TcpListener, opts: Options) -> Result<Server, StartError> {
    if let Some(list) = &opts.env_keys {
        crate::config::parse_key_list(list)
            .map_err(|why| StartError::Key { origin: "--api-keys / PROXY_API_KEY".into(), why })?;
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let store = store::open(&config.storage)?;
    let mut env_keys = opts.env_keys.clone();
    if config.api.auth && config.api.api_keys.is_empty() && env_keys.as_deref().is_none_or(|k| k.trim().is_empty()) {
        env_keys = Some(generated_key(&config)?);
    }
    let service = Service::start(config, store, opts.fd_budget.max(1)).await;
    let state = AppState::new(service.clone(), env_keys.clone());
    let shutdown = CancellationToken::new();
    let addr = listener.local_addr()?;

    // Rounds run on their own runtime: thousands of check tasks never queue in front of
    // API requests (the OS shares the cores between the two sets of threads).
    let checker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            opts.checker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        )
        .thread_name("checker")
        .enable_all()
        .build()?;
    let rounds = checker_rt.spawn(service.clone().run_scheduler(shutdown.clone()));
    let scheduler = checker_rt.spawn(supervise_scheduler(service.clone(), shutdown.clone(), rounds));
    let rechecks = checker_rt.spawn(service.clone().run_rechecks(shutdown.clone()));
    let _ = service.metrics.checker_runtime.set(checker_rt.handle().clone());
    let mut background = vec![rechecks];
    let watched = service;
    let stall_limit = opts.stall_limit;
    background.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            watched.watch_progress(stall_limit.unwrap_or_else(|| watched.stall_limit()));
        }
    }));
    let sweeper_state = state.clone();
    background.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let g = sweeper_state.guard.load();
            g.sweep(Duration::from_secs(5));
            sweeper_state.service.metrics.rate_limiter_clients.set(g.tracked_ips() as i64);
        }
    }));

    let reloader = Arc::new(Reloader { state: state.clone(), env_keys, set_log_level: opts.set_log_level.clone() });
    let mut watcher = None;
    if let Some(path) = opts.config_path.clone() {
        let (w, task) = watch(path.clone(), reloader.clone())
            .map_err(|e| StartError::Watch { path: path.display().to_string(), error: e.to_string() })?;
        watcher = Some(w);
        background.push(task);
        if opts.sighup {
            let r = reloader;
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            background.push(tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the config");
                    r.reload(&path);
                }
            }));
        }
    }

    let app = api::router(state.clone());
    let idle = opts.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let limits = Limits {
        max_connections: opts.max_connections.max(16),
        idle,
        request_timeout: opts.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
    };
    let capped = CappedListener::new(listener, limits);
    let grace = if opts.grace.is_zero() { Duration::from_secs(10) } else { opts.grace };
    let api = tokio::spawn(api::front::serve(capped, app, state.clone(), shutdown.clone(), grace));
    tracing::info!(%addr, "API listening");
    Ok(Server { addr, state, shutdown, api, scheduler, background, _watcher: watcher, checker_rt: Some(checker_rt) })
}

/// Runs the scheduler as its own task and watches it: if it ever ends while the service
/// is not shutting down (a panic outside any round, or a bug), the service records a
/// [`crate::service::Fault`] so `/health` fails and the watchdog stops, and systemd
/// restarts the process. Rounds themselves cannot end it: each is guarded.
async fn supervise_scheduler(service: Arc<Service>, shutdown: CancellationToken, scheduler: JoinHandle<()>) {
    let ended = scheduler.await;
    if shutdown.is_cancelled() {
        return;
    }
    let why = match ended {
        Ok(()) => "it returned".to_string(),
        Err(e) if e.is_panic() => {
            format!("it panicked: {}", crate::panic_message(&*e.into_panic()))
        }
        Err(e) => format!("its task ended: {e}"),
    };
    service.scheduler_stopped(why);
}

/// With auth on and no key anywhere, the service makes one and writes it next to its data
/// (see [`crate::keyfile`]), so a first run is usable and never open. The key itself is
/// never logged.
fn generated_key(config: &Config) -> Result<String, StartError> {
    let dir = match config.storage.kind {
        StorageKind::Redis => PathBuf::from("data"),
        _ => config
            .storage
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let path = dir.join("api_key");
    let (key, origin) = crate::keyfile::load_or_create(&path)
        .map_err(|e| StartError::Key { origin: "the generated key file".into(), why: e.to_string() })?;
    match origin {
        crate::keyfile::Origin::Existing => {
            tracing::warn!(path = %path.display(), "no API key configured: using the generated key stored in this file")
        }
        crate::keyfile::Origin::Generated => tracing::warn!(
            path = %path.display(),
            "no API key configured: generated one (256 bits) and wrote it to this file (mode 0600)"
        ),
    }
    Ok(key)
}

/// Applies a changed config file.
struct Reloader {
    state: Arc<AppState>,
    env_keys: Option<String>,
    set_log_level: Option<LogLevelSetter>,
}

impl Reloader {
    fn reload(&self, path: &Path) {
        let metrics = &self.state.service.metrics;
        let mut config = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                metrics.config_reloads_total.with_label_values(&["rejected"]).inc();
                tracing::warn!(error = %crate::Chain(&e), "config reload rejected; the running config stays");
                return;
            }
        };
        apply_env(&mut config);
        self.state.guard.store(Arc::new(Guard::new(&config.api, self.env_keys.as_deref())));
        if let Some(set) = &self.set_log_level {
            set(&config.log.level);
        }
        let summary = config.checker.summary();
        for field in self.state.service.apply_config(config) {
            tracing::warn!(field, "changed in the config file: takes effect after a restart");
        }
        metrics.config_reloads_total.with_label_values(&["ok"]).inc();
        tracing::info!(checker = %summary, "config reloaded: sources, interval, checker, keys, limits and log level apply from now");
    }
}

/// Watches the config file's directory (editors replace files by rename) and reloads
/// 300 ms after the last change to that file.
fn watch(path: PathBuf, reloader: Arc<Reloader>) -> notify::Result<(notify::RecommendedWatcher, JoinHandle<()>)> {
    use notify::Watcher;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && ev.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: editors write in several steps.
            loop {
                match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            reloader.reload(&path);
        }
    });
    Ok((watcher, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;

    /// A scheduler that dies is a fault that `/health` and `/ready` name, with 503.
    #[tokio::test]
    async fn a_scheduler_that_stops_fails_health() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"sources": ["l.txt"], "storage": {{"type": "file", "path": "{}/s.json"}}}}"#,
            dir.path().display()
        );
        let config = Config::from_json(&text, "test").unwrap();
        let store = store::open(&config.storage).unwrap();
        let service = Service::start(config, store, 100).await;
        let state = AppState::new(service.clone(), Some("k".repeat(16)));
        assert_eq!(api::routes::health(State(state.clone())).await.status(), 200);

        let dying = tokio::spawn(async { panic!("a bug outside any round") });
        supervise_scheduler(service.clone(), CancellationToken::new(), dying).await;
        let fault = service.fault().expect("a fault").to_string();
        assert!(fault.contains("a bug outside any round"), "{fault}");
        for resp in [api::routes::health(State(state.clone())).await, api::routes::ready(State(state.clone())).await] {
            assert_eq!(resp.status(), 503);
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains("\"unhealthy\"") && body.contains("the round scheduler stopped"), "{body}");
        }

        // Stopping on shutdown is no fault.
        let service = Service::start(
            Config::from_json(&text, "test").unwrap(),
            store::open(&service.config.load().storage).unwrap(),
            100,
        )
        .await;
        let token = CancellationToken::new();
        token.cancel();
        supervise_scheduler(service.clone(), token, tokio::spawn(async {})).await;
        assert!(service.fault().is_none());
    }
}
