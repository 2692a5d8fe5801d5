//! Hostile proxies (proxy-farm's `Behavior::HOSTILE`: malformed framing, broken heads,
//! floods, slowloris, resets, decoy pages, SOCKS faults, and odd-but-valid answers) against
//! the engine, the `check` binary and the service. Every verdict must be the farm's ground
//! truth; a hostile proxy must never pass for alive, nor a merely unusual one for dead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use proxy_checker::check::{Candidate, CheckSettings, Engine, Mode, Progress, Validation, Verdict, engine};
use proxy_checker::proxy::Protocol as P;
use proxy_checker::source::parse::{ParseOptions, parse_token};
use proxy_farm::{Behavior, Farm, FarmProxy, FarmSpec, Group, Protocol, expect};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common;

const PROTOCOLS: [Protocol; 4] = [Protocol::Http, Protocol::Https, Protocol::Socks4, Protocol::Socks5];
/// Generous for a slow, loaded machine: no verdict below may depend on its speed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(3);
/// Engine runs at once (one per behaviour); bounds the TLS handshakes in flight.
const RUNS_AT_ONCE: usize = 8;
/// Bound on waiting for a whole round or process (never a sleep).
const PATIENCE: Duration = Duration::from_secs(180);

/// Every hostile behaviour on every protocol it applies to, and working proxies of each
/// protocol among them.
fn hostile_farm() -> FarmSpec {
    let mut groups: Vec<_> = PROTOCOLS.iter().map(|p| Group::new(2, *p, Behavior::Working)).collect();
    for b in Behavior::HOSTILE {
        groups.extend(PROTOCOLS.iter().filter(|p| b.applies_to(**p)).map(|p| Group::new(1, *p, b)));
    }
    FarmSpec { groups }
}

fn settings(judge: String, ca_file: Option<std::path::PathBuf>) -> CheckSettings {
    CheckSettings {
        mode: Mode::FullHttp,
        judges: vec![judge.parse().unwrap()],
        expect_status: 200,
        validation: Validation::Nonce,
        connect_timeout: CONNECT_TIMEOUT,
        timeout: TIMEOUT,
        // One attempt: the first verdict is the one compared.
        retries: 0,
        backoff: Duration::from_millis(10),
        concurrency: 64,
        adaptive: true,
        ca_file,
        detect_protocol: true,
    }
}

fn candidate(p: &FarmProxy) -> Candidate {
    let opts = ParseOptions { default_protocol: P::Http, allow_private: true, max_proxies: usize::MAX };
    Candidate {
        proxy: parse_token(&p.url(), opts).expect("farm URLs parse"),
        addr: SocketAddr::new(IpAddr::V4(p.ip), p.port),
        source: 0,
        scope: Default::default(),
    }
}

/// What went wrong with one proxy's verdict, if anything.
fn mismatch(p: &FarmProxy, got: Option<&Verdict>, https_judge: bool) -> Option<String> {
    let want = expect(p.protocol, p.behavior, true, https_judge);
    let Some(v) = got else {
        return Some(format!("{:?} × {:?}: no verdict", p.behavior, p.protocol));
    };
    let (alive, reason, fwd, tun) = match &v.outcome {
        Ok(a) => (true, None, a.forward, a.tunnel),
        Err(r) => (false, Some(r.as_str()), false, false),
    };
    let same = alive == want.alive && reason == want.reason && (fwd, tun) == (want.forward, want.tunnel);
    let show = |alive: bool, reason: Option<&str>, fwd: bool, tun: bool| match reason {
        Some(r) => r.to_string(),
        None if alive => format!("alive(forward={fwd}, tunnel={tun})"),
        None => "dead".to_string(),
    };
    (!same).then(|| {
        format!(
            "{:?} × {:?}: got {}, want {}",
            p.behavior,
            p.protocol,
            show(alive, reason, fwd, tun),
            show(want.alive, want.reason, want.forward, want.tunnel)
        )
    })
}

/// Checks the proxies of one behaviour in a run of their own, so that an engine that
/// panics on one behaviour is reported for that behaviour and the others still count.
async fn run_one(settings: CheckSettings, proxies: Vec<FarmProxy>, https_judge: bool) -> Vec<String> {
    let cands: Vec<_> = proxies.iter().map(candidate).collect();
    let run = tokio::spawn(async move {
        let tls = engine::tls_config(settings.ca_file.as_deref()).unwrap();
        let engine = Engine::new(settings, tls).unwrap();
        let mut out = Vec::new();
        let r = engine
            .run(futures_util::stream::iter(cands), Arc::new(Progress::default()), CancellationToken::new(), &mut |v| {
                out.push(v)
            })
            .await;
        r.map(|_| out).map_err(|e| e.to_string())
    });
    let verdicts = match run.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return proxies.iter().map(|p| format!("{:?} × {:?}: run failed: {e}", p.behavior, p.protocol)).collect();
        }
        Err(e) => {
            let why = match e.try_into_panic() {
                Ok(panic) => format!("the engine panicked: {}", panic_message(panic.as_ref())),
                Err(_) => "the run was cancelled".to_string(),
            };
            return proxies.iter().map(|p| format!("{:?} × {:?}: {why}", p.behavior, p.protocol)).collect();
        }
    };
    let by_ip: HashMap<IpAddr, &Verdict> = verdicts.iter().map(|v| (v.candidate.addr.ip(), v)).collect();
    let mut wrong: Vec<_> =
        proxies.iter().filter_map(|p| mismatch(p, by_ip.get(&IpAddr::V4(p.ip)).copied(), https_judge)).collect();
    if verdicts.len() != proxies.len() {
        wrong.push(format!("{} verdicts for {} proxies", verdicts.len(), proxies.len()));
    }
    wrong
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<String>(), panic.downcast_ref::<&str>()) {
        (Some(s), _) => s,
        (None, Some(s)) => s,
        (None, None) => "(no message)",
    }
}

/// Runs every behaviour's proxies (a run each, [`RUNS_AT_ONCE`] at a time) and fails with
/// every mismatch at once.
async fn engine_matches_the_truth(farm: &Farm, settings: CheckSettings, https_judge: bool) {
    let mut by_behavior: Vec<(Behavior, Vec<FarmProxy>)> = Vec::new();
    for p in farm.proxies() {
        match by_behavior.iter_mut().find(|(b, _)| *b == p.behavior) {
            Some((_, ps)) => ps.push(p),
            None => by_behavior.push((p.behavior, vec![p])),
        }
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(RUNS_AT_ONCE));
    let runs: Vec<_> = by_behavior
        .into_iter()
        .map(|(_, proxies)| {
            let (slots, settings) = (slots.clone(), settings.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.unwrap();
                run_one(settings, proxies, https_judge).await
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for run in runs {
        wrong.extend(run.await.unwrap());
    }
    assert!(wrong.is_empty(), "{} wrong verdicts:\n{}", wrong.len(), wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_every_hostile_behaviour_http_judge() {
    let farm = Farm::start(hostile_farm()).await.unwrap();
    engine_matches_the_truth(&farm, settings(farm.judge_url(), None), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_every_hostile_behaviour_https_judge() {
    let farm = Farm::start(hostile_farm()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, farm.ca_pem()).unwrap();
    engine_matches_the_truth(&farm, settings(farm.judge_tls_url(), Some(ca)), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_binary_lists_exactly_the_working_proxies() {
    let farm = Farm::start(hostile_farm()).await.unwrap();
    let list = farm.add_list("hostile.txt", farm.list_urls());
    let judge = farm.judge_url();
    let (connect_ms, timeout_ms) = (CONNECT_TIMEOUT.as_millis().to_string(), TIMEOUT.as_millis().to_string());
    let args = [
        "check",
        "--quiet",
        "--allow-private",
        "--judge-url",
        &judge,
        "--source",
        &list,
        "--timeout-ms",
        &timeout_ms,
        "--connect-timeout-ms",
        &connect_ms,
        "--retries",
        "0",
        "--format",
        "json",
    ];
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy-checker")).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(PATIENCE, out).await.expect("check finished").expect("spawned");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status.code());
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON output: {e}\n{stderr}"));
    let got: BTreeSet<String> = got.iter().map(|v| v["proxy"].as_str().unwrap_or_default().to_string()).collect();
    assert_exactly_the_working(&farm, &got, "the JSON output");
}

/// `got` (proxy URLs without credentials) lists exactly the proxies the truth calls alive.
fn assert_exactly_the_working(farm: &Farm, got: &BTreeSet<String>, what: &str) {
    let want = common::alive_set(farm);
    let wrongly_alive: Vec<_> = got.difference(&want).map(|u| describe(farm, u)).collect();
    let wrongly_dead: Vec<_> = want.difference(got).map(|u| describe(farm, u)).collect();
    assert!(
        wrongly_alive.is_empty() && wrongly_dead.is_empty(),
        "{what}: listed but hostile: {wrongly_alive:?}\nworking but missing: {wrongly_dead:?}"
    );
}

/// `Behavior × Protocol` of a proxy URL, for failure messages.
fn describe(farm: &Farm, url: &str) -> String {
    let ip = url.rsplit_once("://").and_then(|(_, a)| a.split(':').next()).and_then(|ip| ip.parse().ok());
    match ip.and_then(|ip| farm.proxy_at(ip)) {
        Some(p) => format!("{:?} × {:?}", p.behavior, p.protocol),
        None => url.to_string(),
    }
}

/// Polls `/stat` until round `id` has finished, checking `/health` on every poll.
async fn wait_round_healthy(h: &common::H, id: u64) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body, _) = h.get("/health").await;
        assert_eq!(status, 200, "/health while round {id} runs: {body}");
        let stat = h.stat().await;
        if stat["last_round"]["round_id"].as_u64() >= Some(id) {
            return stat;
        }
        assert!(tokio::time::Instant::now() < deadline, "round {id} did not finish: {stat}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_survives_three_reloads_of_hostile_rounds() {
    let farm = Farm::start(hostile_farm()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(&farm, vec![farm.add_list("hostile.txt", farm.list_urls())], dir.path());
    cfg["checker"]["timeout_ms"] = json!(TIMEOUT.as_millis() as u64);
    cfg["checker"]["connect_timeout_ms"] = json!(CONNECT_TIMEOUT.as_millis() as u64);
    let h = common::start(&cfg, dir.path()).await;
    let alive = common::alive_set(&farm).len() as u64;
    let total = farm.proxies().count() as u64;
    let mut dead_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for p in farm.proxies() {
        if let Some(r) = expect(p.protocol, p.behavior, true, false).reason {
            *dead_by_reason.entry(r.to_string()).or_default() += 1;
        }
    }
    // The round at start-up, then three in a row through POST /reload.
    for round in 0..4 {
        let id = match round {
            0 => 1,
            _ => h.post_reload().await["round_id"].as_u64().expect("a round id"),
        };
        let stat = wait_round_healthy(&h, id).await;
        let r = &stat["last_round"];
        assert_eq!(r["round_id"].as_u64(), Some(id), "{stat}");
        let (s, body) = h.authed("/get-proxy?all=1").await;
        assert_eq!(s, 200, "{body}");
        let pool: BTreeSet<String> = body.lines().map(str::to_string).collect();
        assert_exactly_the_working(&farm, &pool, &format!("round {id}'s pool"));
        let counts = (r["checked"].as_u64(), r["alive"].as_u64(), r["dead"].as_u64());
        assert_eq!(counts, (Some(total), Some(alive), Some(total - alive)), "round {id}: {r}");
        let reasons: BTreeMap<String, u64> = serde_json::from_value(r["dead_by_reason"].clone()).unwrap();
        assert_eq!(reasons, dead_by_reason, "round {id}: dead by reason");
        assert_eq!(stat["last_error"], Value::Null, "{stat}");
    }
    assert_eq!(h.get("/health").await.0, 200);
}
