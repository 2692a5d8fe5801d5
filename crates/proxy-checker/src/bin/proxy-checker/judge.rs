//! `proxy-checker judge`: a judge of your own (on a second machine, say), answering the
//! same echo as the service's `/judge`, over plain HTTP or TLS, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::ListenerExt;
use clap::Args;
use proxy_checker::config::LogFormat;
use proxy_checker::listener::{CappedListener, Limits};

/// Options of `judge`.
#[derive(Args, Debug)]
pub struct JudgeArgs {
    /// Address to listen on (port 0: any free port, logged).
    #[arg(long, default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// PEM certificate chain: serve HTTPS (with `--tls-key`).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// A request header never echoed, beside Authorization, Proxy-Authorization, Cookie,
    /// X-Api-Key and access-proxy tokens. Repeatable.
    #[arg(long = "hide-header", value_name = "NAME")]
    pub hide_headers: Vec<String>,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Log filter.
    #[arg(long, alias = "log", default_value = "info", value_name = "FILTER")]
    pub log_level: String,
    /// `auto` (text on a terminal, JSON otherwise), `text` or `json`.
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
enum JudgeError {
    #[error("--hide-header `{0}` is not a header name")]
    Header(String),
    #[error("TLS certificate or key `{path}`")]
    Tls {
        path: String,
        #[source]
        source: proxy_checker::BoxError,
    },
    #[error("--listen {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving")]
    Serve(#[source] std::io::Error),
}

impl JudgeError {
    fn exit_code(&self) -> u8 {
        match self {
            JudgeError::Header(_) | JudgeError::Tls { .. } => 2,
            _ => 1,
        }
    }
}

pub fn main(args: JudgeArgs) -> ExitCode {
    crate::logs::init(&args.log_level, "info", args.log_format, crate::logs::Stream::Stdout);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", proxy_checker::Chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(args: JudgeArgs) -> Result<(), JudgeError> {
    if let Some(bad) = args.hide_headers.iter().find(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()) {
        return Err(JudgeError::Header(bad.clone()));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| JudgeError::Bind { addr: args.listen, source })?;
    let addr = listener.local_addr().map_err(JudgeError::Serve)?;
    let app = proxy_checker::api::judge_router(args.hide_headers.clone());
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, url = %format!("{scheme}://{addr}/judge"), "judge listening");
    match tls {
        None => {
            let limits = Limits {
                max_connections: args.max_connections.max(16),
                idle: Duration::from_secs(30),
                request_timeout: Duration::from_secs(10),
            };
            let capped = CappedListener::new(listener, limits).tap_io(|_| {});
            axum::serve(capped, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(stop_signal())
                .await
                .map_err(JudgeError::Serve)
        }
        Some(config) => serve_tls(listener, app, config, args.max_connections.max(16)).await,
    }
}

/// HTTPS: rustls on each accepted connection, then hyper with the same router.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: Arc<rustls::ServerConfig>,
    max_connections: usize,
) -> Result<(), JudgeError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to be freed.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return Ok(()),
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // at the cap: the connection is dropped
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(ConnectInfo(peer))));
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // A request head must arrive within 10 s (no slowloris on a slot).
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, JudgeError> {
    fn err(p: &std::path::Path) -> impl Fn(proxy_checker::BoxError) -> JudgeError + '_ {
        move |source| JudgeError::Tls { path: p.display().to_string(), source }
    }
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| err(p)(e.into()));
    let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert)(e.into()))?;
    if chain.is_empty() {
        return Err(err(cert)("no PEM certificate in it".into()));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| err(key)(e.into()))?
        .ok_or_else(|| err(key)("no PEM private key in it".into()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert)(e.into()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| err(cert)(e.into()))?;
    Ok(Arc::new(config))
}

async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}
