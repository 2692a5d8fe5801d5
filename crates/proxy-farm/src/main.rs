//! `proxy-farm`: runs a farm until killed, for benchmarks and manual runs.
//!
//! Prints one JSON line with its ports and URLs, writes the proxy list, the ground truth
//! (`truth.json`) and the TLS judge's CA into `--out`, and serves the list at `/sources/all.txt`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol};

#[derive(Parser)]
#[command(about = "Loopback proxy farm: a judge, source lists and simulated proxies")]
struct Args {
    /// A JSON FarmSpec (`{"groups": [{"count", "protocol", "behavior", "latency_ms"}]}`).
    /// When given, the count flags below are ignored.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Working proxies.
    #[arg(long, default_value_t = 0)]
    working: u32,
    /// Proxies whose SYN is answered with a reset.
    #[arg(long, default_value_t = 0)]
    refused: u32,
    /// Proxies whose SYN is dropped (connect times out).
    #[arg(long, default_value_t = 0)]
    blackhole: u32,
    /// Proxies that accept and never answer.
    #[arg(long, default_value_t = 0)]
    silent: u32,
    /// Delay of working proxies before the judge answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Protocol of the flag-built groups: http, https, socks4, socks5.
    #[arg(long, default_value = "http")]
    protocol: String,
    /// Directory for proxies.txt and ca.pem.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A demo: 300 proxies of every protocol and of the kinds public lists hold (working,
    /// slow, dead, captive portals, liars, hostile), and `check.json` in `--out`, a config
    /// for `proxy-checker check --config` against this farm.
    #[arg(long)]
    demo: bool,
    /// Share of the still-living proxies killed per minute, at random, spread over the
    /// minute (0.1: a tenth of them each minute): proxies that die between checks. A
    /// killed proxy closes every connection at once; `/farm/killed` on the judge lists
    /// them with the Unix time of their death.
    #[arg(long, default_value_t = 0.0)]
    kill_per_minute: f64,
}

/// The demo's mix: what a public list holds, on every protocol.
fn demo_spec() -> FarmSpec {
    use Behavior::*;
    let mut groups = Vec::new();
    for protocol in [Protocol::Http, Protocol::Socks4, Protocol::Socks5] {
        for (count, behavior, latency) in [
            (25, Working, 80),
            (5, Working, 900),
            (5, AuthGood, 150),
            (15, Refused, 0),
            (10, Blackhole, 0),
            (10, Silent, 0),
            (5, CloseAtOnce, 0),
            (5, WrongPage, 0),
            (5, PortalWithUrl, 0),
            (5, AuthBad, 0),
            (5, Garbage, 0),
            (5, Trickle, 0),
        ] {
            groups.push(Group::new(count, protocol, behavior).latency(Duration::from_millis(latency)));
        }
    }
    FarmSpec { groups }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let spec = match &args.spec {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None if args.demo => demo_spec(),
        None => {
            let protocol: Protocol = serde_json::from_value(serde_json::Value::String(args.protocol.clone()))?;
            let latency = Duration::from_millis(args.latency_ms);
            let groups = [
                (args.working, Behavior::Working),
                (args.refused, Behavior::Refused),
                (args.blackhole, Behavior::Blackhole),
                (args.silent, Behavior::Silent),
            ]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, b)| Group::new(n, protocol, b).latency(latency))
            .collect();
            FarmSpec { groups }
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    rt.block_on(async move {
        let farm = Farm::start(spec).await?;
        std::fs::create_dir_all(&args.out)?;
        let list = farm.list_urls();
        let count = list.lines().count();
        let list_file = args.out.join("proxies.txt");
        std::fs::write(&list_file, &list)?;
        let truth_file = args.out.join("truth.json");
        std::fs::write(&truth_file, serde_json::to_vec_pretty(&farm.truth())?)?;
        let ca_file = args.out.join("ca.pem");
        std::fs::write(&ca_file, farm.ca_pem())?;
        let list_url = farm.add_list("all.txt", list);
        if args.demo {
            // A config for `proxy-checker check --config`: this farm's list and judge, which
            // live on loopback (hence allow_private), and timeouts that finish in seconds.
            let config = serde_json::json!({
                "sources": [list_url],
                "aggregation": {"allow_private_sources": true, "source_retries": 0},
                "checker": {"judge_url": farm.judge_url(), "allow_private": true, "timeout_ms": 5000,
                            "connect_timeout_ms": 1500, "retries": 1, "concurrency_total": 500},
                "storage": {"type": "file", "path": args.out.join("snapshot.json")},
            });
            std::fs::write(args.out.join("check.json"), serde_json::to_vec_pretty(&config)?)?;
        }
        let info = serde_json::json!({
            "count": count,
            "proxy_port": farm.proxy_port,
            "judge_url": farm.judge_url(),
            "judge_tls_url": farm.judge_tls_url(),
            "list_url": list_url,
            "list_file": list_file,
            "ca_file": ca_file,
            "truth_file": truth_file,
        });
        println!("{info}");
        if args.kill_per_minute > 0.0 {
            let mut living: Vec<std::net::Ipv4Addr> = farm.proxies().map(|p| p.ip).collect();
            let mut owed = 0.0;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let share = args.kill_per_minute.min(1.0) / 120.0;
            let killing = async {
                loop {
                    tick.tick().await;
                    owed += living.len() as f64 * share;
                    while owed >= 1.0 && !living.is_empty() {
                        owed -= 1.0;
                        let ip = living.swap_remove(fastrand::usize(..living.len()));
                        farm.kill(ip);
                    }
                }
            };
            tokio::select! {
                r = tokio::signal::ctrl_c() => r?,
                () = killing => {}
            }
        } else {
            tokio::signal::ctrl_c().await?;
        }
        drop(farm);
        Ok(())
    })
}
