//! Rounds against strangers' sources and slow proxies: a hanging source holds back only its
//! own proxies and is reported honestly; a cancelled round leaves no task behind; a round
//! that stops moving turns `/health` red in the real server.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proxy_checker::check::{Progress, RunError, Verdict};
use proxy_checker::config::Config;
use proxy_checker::round::{RoundContext, RoundError};
use proxy_checker::source::SourceError;
use proxy_farm::{Behavior, Farm, FarmSpec, Group, HostileSource, Protocol};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A source that sends its head and then one byte an hour: it never finishes.
fn hanging(farm: &Farm) -> String {
    farm.add_hostile_source(
        "hang.txt",
        HostileSource::Trickle { body: Arc::new(b"1.2.3.4:80\n".to_vec()), every: Duration::from_secs(3600) },
    )
}

fn round_config(farm: &Farm, sources: Vec<String>, source_timeout_ms: u64, source_retries: u32) -> Config {
    let cfg = json!({
        "sources": sources,
        "aggregation": {"source_timeout_ms": source_timeout_ms, "source_retries": source_retries,
                        "allow_private_sources": true},
        "checker": {"judge_url": farm.judge_url(), "allow_private": true, "timeout_ms": 3000,
                    "connect_timeout_ms": 2000, "retries": 0, "concurrency_total": 200},
        "storage": {"type": "file", "path": "unused.json"}
    });
    Config::from_json(&cfg.to_string(), "test").unwrap()
}

/// Polls `cond` every 20 ms for up to a minute: a bounded wait for a condition.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_source_delays_only_its_own_proxies() {
    let farm = Farm::start(FarmSpec { groups: vec![Group::new(8, Protocol::Http, Behavior::Working)] }).await.unwrap();
    let good = farm.add_list("good.txt", farm.list_urls());
    let config = round_config(&farm, vec![hanging(&farm), good], 600_000, 0);
    let mut ctx = RoundContext::from_config(&config).unwrap();
    let alive = Arc::new(AtomicU64::new(0));
    let seen = alive.clone();
    ctx.observer = Some(Arc::new(move |v: &Verdict| {
        if v.is_alive() {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let cancel = CancellationToken::new();
    let progress = Arc::new(Progress::default());
    let round = tokio::spawn({
        let cancel = cancel.clone();
        let progress = progress.clone();
        async move { ctx.run(progress, cancel).await }
    });
    // Every good proxy is checked while the other source still hangs (for an hour).
    until("the good source's proxies to be checked", || alive.load(Ordering::Relaxed) == 8).await;
    assert!(!round.is_finished(), "the round waits for the hanging source, as it should");
    assert_eq!(progress.checked.load(Ordering::Relaxed), 8);
    cancel.cancel();
    let r = round.await.unwrap();
    assert!(matches!(r, Err(RoundError::Run(RunError::Cancelled))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_times_out_says_how_long_and_how_often() {
    let farm = Farm::start(FarmSpec { groups: vec![Group::new(4, Protocol::Http, Behavior::Working)] }).await.unwrap();
    let good = farm.add_list("good.txt", farm.list_urls());
    let config = round_config(&farm, vec![hanging(&farm), good], 1000, 1);
    let ctx = RoundContext::from_config(&config).unwrap();
    let report = ctx.run(Arc::new(Progress::default()), CancellationToken::new()).await.unwrap();
    assert_eq!(report.run.alive, 4);
    let hang = &report.sources[0];
    assert_eq!(hang.error, Some(SourceError::Timeout(Duration::from_secs(1))));
    assert_eq!(hang.error.as_ref().unwrap().to_string(), "timed out after 1s");
    assert_eq!(hang.attempts, 2, "one retry");
    assert!(hang.duration >= Duration::from_secs(2), "two attempts of 1 s: {:?}", hang.duration);
    let good = &report.sources[1];
    assert_eq!((good.error.as_ref(), good.attempts, good.valid), (None, 1, 4));
}

/// Cancelling a round in the middle (checks in flight, held failures waiting for a judge
/// probe, a source still downloading) leaves no task alive on its runtime.
#[test]
fn cancelling_a_round_leaves_no_task_behind() {
    let farm_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let spec = FarmSpec {
        groups: vec![
            Group::new(20, Protocol::Http, Behavior::Working),
            Group::new(50, Protocol::Http, Behavior::Silent),
            Group::new(50, Protocol::Socks5, Behavior::TooSlow),
            Group::new(30, Protocol::Http, Behavior::WrongPage),
        ],
    };
    let farm = farm_rt.block_on(Farm::start(spec)).unwrap();
    let good = farm.add_list("all.txt", farm.list_urls());
    let config = round_config(&farm, vec![good, hanging(&farm)], 600_000, 0);

    let round_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    round_rt.block_on(async {
        let alive_tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        assert_eq!(alive_tasks(), 0);
        let ctx = RoundContext::from_config(&config).unwrap();
        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        let round = tokio::spawn({
            let (cancel, progress) = (cancel.clone(), progress.clone());
            async move {
                let r = ctx.run(progress, cancel).await;
                drop(ctx);
                r
            }
        });
        until("checks in flight and some verdicts", || {
            progress.in_flight.load(Ordering::Relaxed) >= 50 && progress.checked.load(Ordering::Relaxed) >= 20
        })
        .await;
        cancel.cancel();
        let r = round.await.unwrap();
        assert!(matches!(r, Err(RoundError::Run(RunError::Cancelled))), "{r:?}");
        until("every task of the round to end", || alive_tasks() == 0).await;
    });
}

/// A round that makes no progress for the stall limit turns `/health` and `/ready` into
/// 503s that name it, is cancelled, and the service is healthy again with the round's
/// failure in `last_error` and the next round scheduled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_round_fails_health_and_is_cancelled() {
    let farm = Farm::start(FarmSpec { groups: vec![Group::new(2, Protocol::Http, Behavior::Working)] }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(&farm, vec![hanging(&farm)], dir.path());
    cfg["aggregation"]["source_timeout_ms"] = json!(600_000);
    let opts = proxy_checker::server::Options {
        fd_budget: 1000,
        max_connections: 256,
        grace: Duration::from_secs(2),
        stall_limit: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let mut h = common::start_with(&cfg, dir.path(), opts).await;
    let seen = std::sync::Mutex::new(String::new());
    h.until("/health to report the stalled round", async |h| {
        let (status, body, _) = h.get("/health").await;
        *seen.lock().unwrap() = body;
        status == 503
    })
    .await;
    let body = seen.into_inner().unwrap();
    assert!(body.contains("round 1 made no progress for") && body.contains("cancelled"), "{body}");
    h.until("the stalled round to end and health to return", async |h| {
        let stat = h.stat().await;
        stat["last_error"].as_str().is_some_and(|e| e.starts_with("round 1 made no progress"))
            && stat["round_in_progress"].is_null()
            && stat["next_round_at"].is_number()
            && h.get("/health").await.0 == 200
    })
    .await;
    h.shutdown().await;
}

/// With the judge down the engine stops at once; the round must fail then, not wait for
/// its sources (one hangs here) nor block on a full queue (more candidates than it holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_down_fails_the_round_at_once_whatever_the_sources_do() {
    let farm =
        Farm::start(FarmSpec { groups: vec![Group::new(6000, Protocol::Http, Behavior::Working)] }).await.unwrap();
    farm.set_judge_down(true);
    let all = farm.add_list("all.txt", farm.list_urls());
    let config = round_config(&farm, vec![all, hanging(&farm)], 600_000, 0);
    let ctx = RoundContext::from_config(&config).unwrap();
    let round = ctx.run(Arc::new(Progress::default()), CancellationToken::new());
    // A bound for a hang, not a timing: the judge probe alone decides this round.
    let r = tokio::time::timeout(Duration::from_secs(60), round).await.expect("the round ended");
    assert!(matches!(r, Err(RoundError::Run(RunError::JudgeDown(_)))), "{r:?}");
}
