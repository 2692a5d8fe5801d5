//! Logs for humans and machines, set up the same way for every subcommand: text on a
//! terminal, JSON lines otherwise (`auto`, the default), or as asked; ANSI colours only
//! when the stream is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;

use proxy_checker::config::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

/// Where logs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

/// Installs the global subscriber with `filter` (falling back to `fallback` if it does not
/// parse). Returns a setter for a new filter (config reloads).
pub fn init(filter: &str, fallback: &str, format: LogFormat, stream: Stream) -> Arc<dyn Fn(&str) + Send + Sync> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(fallback));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let terminal = stream.is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let writer = move || -> Box<dyn std::io::Write> {
        match stream {
            Stream::Stdout => Box::new(std::io::stdout()),
            Stream::Stderr => Box::new(std::io::stderr()),
        }
    };
    if json {
        let layer = tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false);
        registry.with(layer.with_writer(writer)).init();
    } else {
        registry.with(tracing_subscriber::fmt::layer().with_ansi(terminal).with_writer(writer)).init();
    }
    Arc::new(move |level: &str| {
        if let Ok(f) = EnvFilter::try_new(level) {
            let _ = handle.modify(|cur| *cur = f);
        }
    })
}
