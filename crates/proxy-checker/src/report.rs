//! Rendering live proxies for people and scripts: `text` (one `scheme://host:port` per
//! line, fastest first), `json` and `csv`. These are output types, separate from the
//! engine's.

use std::io::{self, Write};

use serde::Serialize;

use crate::check::Verdict;

/// Output formats of the `check` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Csv,
}

/// One live proxy as written to JSON.
#[derive(Debug, Serialize)]
pub struct ProxyRecord<'a> {
    pub proxy: String,
    pub protocol: &'static str,
    pub host: String,
    pub port: u16,
    pub latency_ms: u64,
    pub connect_ms: u64,
    /// Forwards plain HTTP (absolute-URI GET).
    pub forward: bool,
    /// Tunnels (CONNECT or SOCKS): usable for HTTPS.
    pub tunnel: bool,
    pub attempts: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<&'a str>,
}

impl<'a> ProxyRecord<'a> {
    pub fn from_verdict(v: &'a Verdict) -> Option<Self> {
        let a = v.outcome.as_ref().ok()?;
        let p = &v.candidate.proxy;
        Some(Self {
            proxy: p.to_string(),
            protocol: p.protocol.as_str(),
            host: p.host.to_string(),
            port: p.port,
            latency_ms: a.latency.as_millis() as u64,
            connect_ms: a.connect.as_millis() as u64,
            forward: a.forward,
            tunnel: a.tunnel,
            attempts: v.attempts,
            username: p.credentials.as_deref().map(|c| c.username.as_str()),
        })
    }
}

/// Writes live proxies (already sorted fastest first).
pub fn write(out: &mut dyn Write, format: Format, alive: &[Verdict]) -> io::Result<()> {
    let records = alive.iter().filter_map(ProxyRecord::from_verdict);
    match format {
        Format::Text => {
            for r in records {
                writeln!(out, "{}", r.proxy)?;
            }
        }
        Format::Json => {
            let all: Vec<_> = records.collect();
            serde_json::to_writer_pretty(&mut *out, &all)?;
            writeln!(out)?;
        }
        Format::Csv => {
            writeln!(out, "proxy,protocol,host,port,latency_ms,connect_ms,forward,tunnel,attempts")?;
            for r in records {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{}",
                    r.proxy, r.protocol, r.host, r.port, r.latency_ms, r.connect_ms, r.forward, r.tunnel, r.attempts
                )?;
            }
        }
    }
    out.flush()
}
