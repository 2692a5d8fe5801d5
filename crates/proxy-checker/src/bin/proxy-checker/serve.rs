//! `proxy-checker serve`: sets up logs and the fd budget, binds the API, runs the service
//! until SIGTERM or SIGINT, then stops gracefully (exit 0).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use proxy_checker::check::fdbudget;
use proxy_checker::config::{Config, ConfigError, LogFormat};
use proxy_checker::server::{self, Options};

/// Options of `serve`. Secrets may come from the environment instead of the config file.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// JSON config file, watched for changes (also reloaded on SIGHUP). Without it, the
    /// embedded `config.example.json` runs (file storage under ./data).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Extra API keys, comma-separated (added to `api.api_keys`).
    #[arg(long, env = "PROXY_API_KEY", hide_env_values = true, value_name = "KEYS")]
    pub api_keys: Option<String>,
    /// Redis URL for `storage.type = redis` (overrides `storage.redis_url`).
    #[arg(long, env = "PROXY_CHECKER_REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Log filter overriding `log.level` (e.g. `info,proxy_checker=debug`); `--log` is an
    /// alias.
    #[arg(long, alias = "log", env = "PROXY_CHECKER_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format overriding `log.format`: `auto` (text on a terminal, JSON otherwise),
    /// `text` or `json`.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Seconds in-flight API requests get after SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub grace_secs: u64,
}

/// Why `serve` could not start; each says which exit code it gives.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading RLIMIT_NOFILE")]
    FdLimit(#[source] std::io::Error),
    #[error("api.listen {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] server::StartError),
}

impl ServeError {
    /// 2 for bad input (config, keys), 1 for everything else.
    fn exit_code(&self) -> u8 {
        match self {
            ServeError::Config(_) | ServeError::Start(server::StartError::Key { .. }) => 2,
            _ => 1,
        }
    }
}

pub fn main(args: ServeArgs) -> ExitCode {
    let result = load_config(&args).and_then(|(config, path)| {
        let set_log_level = init_logs(&args, &config);
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
        runtime.block_on(run(&args, config, path, set_log_level))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", proxy_checker::Chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// The config file (or the embedded example), with the secrets from the environment and
/// the command line applied.
fn load_config(args: &ServeArgs) -> Result<(Config, Option<PathBuf>), ServeError> {
    let (mut config, path) = match &args.config {
        Some(p) => (Config::load(p)?, Some(p.clone())),
        None => (Config::embedded(), None),
    };
    server::apply_env(&mut config);
    if let Some(url) = &args.redis_url {
        config.storage.redis_url = Some(url.clone());
    }
    Ok((config, path))
}

/// Logs on stdout. A level given on the command line (or `PROXY_CHECKER_LOG`) is pinned:
/// config reloads do not change it.
fn init_logs(args: &ServeArgs, config: &Config) -> server::LogLevelSetter {
    let format = args.log_format.unwrap_or(config.log.format);
    let filter = args.log_level.as_deref().unwrap_or(&config.log.level);
    let setter = crate::logs::init(filter, "info", format, crate::logs::Stream::Stdout);
    let pinned = args.log_level.is_some();
    Arc::new(move |level: &str| {
        if !pinned {
            setter(level);
        }
    })
}

/// Sizes the fd budget, binds the API, starts the service, serves until SIGTERM or
/// SIGINT, then stops it gracefully.
async fn run(
    args: &ServeArgs,
    config: Config,
    path: Option<PathBuf>,
    set_log_level: server::LogLevelSetter,
) -> Result<(), ServeError> {
    let budget = fdbudget::raise_and_compute(config.checker.concurrency_requested, config.checker.fd_reserve)
        .map_err(ServeError::FdLimit)?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: config.api.listen, source })?;
    let opts = Options {
        config_path: path,
        env_keys: args.api_keys.clone(),
        fd_budget: budget.checks,
        // Half the reserve: the rest is for storage, source fetches, logs and stdio.
        max_connections: usize::try_from(budget.reserve / 2).unwrap_or(512).max(16),
        set_log_level: Some(set_log_level),
        sighup: true,
        grace: Duration::from_secs(args.grace_secs),
        ..Options::default()
    };
    let server = server::start(config, listener, opts).await?;
    let notifier = notify_systemd(&server);
    wait_for_stop_signal().await;
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// systemd: READY once the API listens; watchdog pings from the API runtime while the
/// service is healthy, so a wedged runtime, a stopped scheduler or a stalled round stops
/// them and systemd restarts the service.
fn notify_systemd(server: &server::Server) -> Option<Arc<proxy_checker::notify::Notifier>> {
    let n = Arc::new(proxy_checker::notify::Notifier::from_env()?);
    n.send(&format!("READY=1\nSTATUS=serving on {}", server.addr));
    if let Some(every) = proxy_checker::notify::watchdog_interval() {
        let pinger = n.clone();
        let watched = server.state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            loop {
                tick.tick().await;
                match watched.service.fault() {
                    None => pinger.send("WATCHDOG=1"),
                    Some(fault) => pinger.send(&format!("STATUS=unhealthy: {fault}")),
                }
            }
        });
    }
    Some(n)
}

async fn wait_for_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
