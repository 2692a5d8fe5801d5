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
    /// `transparent`, `anonymous`, `elite` or `unknown` (judge echo without headers,
    /// connect-only mode).
    pub anonymity: &'static str,
    /// The address the judge saw the request come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_ip: Option<String>,
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
            anonymity: a.anonymity.as_str(),
            exit_ip: a.exit_ip.map(|ip| ip.to_string()),
            attempts: v.attempts,
            username: p.credentials.as_deref().map(|c| c.username.as_str()),
        })
    }
}

/// Writes live proxies (already sorted fastest first).
pub fn write<'a>(out: &mut dyn Write, format: Format, alive: impl IntoIterator<Item = &'a Verdict>) -> io::Result<()> {
    let records = alive.into_iter().filter_map(ProxyRecord::from_verdict);
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
            writeln!(out, "proxy,protocol,host,port,latency_ms,connect_ms,forward,tunnel,attempts,anonymity,exit_ip")?;
            for r in records {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{}",
                    r.proxy,
                    r.protocol,
                    r.host,
                    r.port,
                    r.latency_ms,
                    r.connect_ms,
                    r.forward,
                    r.tunnel,
                    r.attempts,
                    r.anonymity,
                    r.exit_ip.as_deref().unwrap_or("")
                )?;
            }
        }
    }
    out.flush()
}

/// Whether a live proxy goes in a list.
pub type Keep = fn(&Verdict) -> bool;

/// The per-protocol files `check --output-dir` writes, as the tools its users come from
/// lay them out: which live proxies go in each (already sorted fastest first).
pub const FILES: [(&str, Keep); 5] = [
    // HTTP proxies that forward plain HTTP.
    ("http.txt", |v| is_http(v) && v.outcome.as_ref().is_ok_and(|a| a.forward)),
    // HTTP proxies that tunnel (CONNECT): usable for HTTPS.
    ("https.txt", |v| is_http(v) && v.outcome.as_ref().is_ok_and(|a| a.tunnel)),
    ("socks4.txt", |v| v.candidate.proxy.protocol == crate::proxy::Protocol::Socks4),
    ("socks5.txt", |v| v.candidate.proxy.protocol == crate::proxy::Protocol::Socks5),
    ("all.txt", |_| true),
];

fn is_http(v: &Verdict) -> bool {
    matches!(v.candidate.proxy.protocol, crate::proxy::Protocol::Http | crate::proxy::Protocol::Https)
}

/// Writes [`FILES`] (text, one proxy per line) and `proxies.json` into `dir`, creating it.
/// Each file is written to a temporary name and renamed: a reader never sees half a list.
pub fn write_dir(dir: &std::path::Path, alive: &[Verdict]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let save = |name: &str, format: Format, keep: Keep| -> io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        let mut w = io::BufWriter::new(tmp.as_file_mut());
        write(&mut w, format, alive.iter().filter(|v| keep(v)))?;
        drop(w);
        tmp.persist(dir.join(name)).map_err(|e| e.error)?;
        Ok(())
    };
    for (name, keep) in FILES {
        save(name, Format::Text, keep)?;
    }
    save("proxies.json", Format::Json, |_| true)
}
