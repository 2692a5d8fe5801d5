//! `proxy-checker check`: one round from the command line.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use proxy_checker::check::{Progress, RunError, fdbudget};
use proxy_checker::config::{self, ConfigError, raw};
use proxy_checker::round::{RoundContext, RoundError, RoundReport};

use crate::CheckArgs;

/// A failed `check`, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("--source `{0}`: {1}")]
    SourceFlag(String, String),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl CheckError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckError::Config(_) | CheckError::SourceFlag(..) => 2,
            CheckError::Round(RoundError::NoUsableSource { .. }) => 3,
            CheckError::Round(RoundError::Run(RunError::JudgeDown(_))) => 4,
            _ => 1,
        }
    }
}

/// Overlays the flags on the raw config, so validation names the same fields.
fn overlay(args: &CheckArgs, raw: &mut raw::RawConfig) -> Result<(), CheckError> {
    for s in &args.sources {
        let (protocol, url) = match s.split_once('=') {
            Some((p, rest)) if p.parse::<proxy_checker::proxy::Protocol>().is_ok() => {
                (Some(p.to_string()), rest.to_string())
            }
            _ => (None, s.clone()),
        };
        if url.is_empty() {
            return Err(CheckError::SourceFlag(s.clone(), "empty location".into()));
        }
        raw.sources.push(raw::RawSource::Full(raw::RawSourceObject { url, protocol, name: None }));
    }
    if args.allow_private {
        raw.aggregation.allow_private_sources = Some(true);
    }
    raw.aggregation.source_max_proxies = args.max_proxies_per_source.or(raw.aggregation.source_max_proxies);
    let c = &mut raw.checker;
    if args.mode.is_some() {
        c.mode = args.mode.clone();
    }
    if !args.judge_urls.is_empty() {
        c.judge_url = Some(raw::OneOrMany::Many(args.judge_urls.clone()));
    }
    if let Some(t) = &args.expect_body {
        c.validation = Some("contains".into());
        c.expect_body = Some(t.clone());
    }
    c.timeout_ms = args.timeout_ms.or(c.timeout_ms);
    c.connect_timeout_ms = args.connect_timeout_ms.or(c.connect_timeout_ms);
    c.concurrency_total = args.concurrency.or(c.concurrency_total);
    c.retries = args.retries.or(c.retries);
    c.fd_reserve = args.fd_reserve.or(c.fd_reserve);
    if args.allow_private {
        c.allow_private = Some(true);
    }
    if let Some(ca) = &args.ca_file {
        c.ca_file = Some(ca.display().to_string());
    }
    Ok(())
}

pub async fn run(args: CheckArgs) -> Result<(), CheckError> {
    let (mut raw, origin) = match &args.config {
        Some(path) => (config::load_raw(path)?, path.display().to_string()),
        None => (raw::RawConfig::default(), "command line".to_string()),
    };
    overlay(&args, &mut raw)?;
    let mut cfg = config::from_raw(raw, &origin)?;
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    if cfg.sources.is_empty() {
        return Err(RoundError::NoUsableSource {
            why: "no sources given (use --source or a config with `sources`)".into(),
            sources: Vec::new(),
        }
        .into());
    }
    let budget = fdbudget::raise_and_compute(cfg.checker.concurrency_requested, cfg.checker.fd_reserve)
        .map_err(|e| CheckError::Setup(format!("reading RLIMIT_NOFILE: {e}")))?;
    cfg.checker.settings.concurrency = budget.checks;
    let ctx = RoundContext::from_config(&cfg).map_err(|e| CheckError::Setup(e.to_string()))?;

    let interactive = !args.quiet && std::io::stderr().is_terminal();
    let progress = Arc::new(Progress::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let bar = interactive.then(|| crate::progress::Bar::start(progress.clone()));
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let report = ctx.run(progress.clone(), cancel).await;
    if let Some(bar) = bar {
        bar.finish().await;
    }
    let report = report?;

    if let Some(dir) = &args.output_dir {
        proxy_checker::report::write_dir(dir, &report.alive)
            .map_err(|e| CheckError::Setup(format!("--output-dir {}: {e}", dir.display())))?;
    }
    match &args.output {
        _ if args.output_dir.is_some() && args.output.is_none() => {}
        Some(path) => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
            proxy_checker::report::write(&mut f, args.format, &report.alive)?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            proxy_checker::report::write(&mut lock, args.format, &report.alive)?;
        }
    }
    if !args.quiet {
        summary(&mut std::io::stderr().lock(), &report, &budget)?;
    }
    Ok(())
}

fn summary(out: &mut dyn Write, r: &RoundReport, budget: &fdbudget::FdBudget) -> std::io::Result<()> {
    let run = &r.run;
    let secs = run.duration.as_secs_f64().max(1e-9);
    writeln!(
        out,
        "\nchecked {} in {:.1}s ({:.0}/s): {} alive, {} dead; {} retries, {} local requeues, {} probes; concurrency {}{}",
        run.checked,
        secs,
        run.checked as f64 / secs,
        run.alive,
        run.checked - run.alive,
        run.retries,
        run.local_requeues,
        run.probes,
        budget.checks,
        if budget.clamped() {
            format!(" (clamped from {} by the fd limit {})", budget.requested, budget.soft)
        } else {
            String::new()
        },
    )?;
    if run.min_limit < budget.checks {
        writeln!(out, "  adaptive limit went down to {} on local resource shortages", run.min_limit)?;
    }
    for (reason, n) in &run.dead_by_reason {
        writeln!(out, "  {:<22} {n:>7}  {}", reason.as_str(), reason.explain())?;
    }
    writeln!(out, "sources (scraped {}, unique {}):", r.scraped, r.unique)?;
    for ((s, alive), relabelled) in r.sources.iter().zip(&r.alive_per_source).zip(&r.relabelled_per_source) {
        let mut tries = if s.attempts > 1 { format!(" ({} attempts)", s.attempts) } else { String::new() };
        if *relabelled > 0 {
            tries.push_str(&format!(", {relabelled} relabelled"));
        }
        match &s.error {
            Some(e) => writeln!(out, "  {}: FAILED after {:.1}s{tries}: {e}", s.name, s.duration.as_secs_f64())?,
            None => {
                let rejected: Vec<String> = s.rejected.iter().map(|(k, v)| format!("{} {v}", k.as_str())).collect();
                writeln!(
                    out,
                    "  {}: {} lines, {} valid, {} alive, {:.1}s{tries}{}{}",
                    s.name,
                    s.lines,
                    s.valid,
                    alive,
                    s.duration.as_secs_f64(),
                    if rejected.is_empty() { "" } else { "; rejected: " },
                    rejected.join(", ")
                )?;
                for sample in s.samples.iter().filter(|x| x.line > 0).take(3) {
                    writeln!(out, "    line {}: {} `{}`", sample.line, sample.reason.as_str(), sample.text)?;
                }
            }
        }
    }
    Ok(())
}
