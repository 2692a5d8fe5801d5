//! The check engine against the in-process farm: every protocol × behaviour, in both
//! modes and with both judge schemes, must end with the verdict and reason the farm's
//! ground truth gives.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use proxy_checker::check::{Candidate, CheckSettings, Engine, Mode, Progress, RunError, Validation, Verdict, engine};
use proxy_checker::proxy::Protocol as P;
use proxy_checker::source::parse::{ParseOptions, parse_token};
use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol};

use crate::common::HANG_GUARD;
use tokio_util::sync::CancellationToken;

const BEHAVIORS: [Behavior; 24] = [
    Behavior::Working,
    Behavior::ForwardOnly,
    Behavior::TunnelOnly,
    Behavior::Refused,
    Behavior::Blackhole,
    Behavior::Silent,
    Behavior::CloseAtOnce,
    Behavior::Garbage,
    Behavior::WrongPage,
    Behavior::PortalWithUrl,
    Behavior::AuthGood,
    Behavior::AuthBad,
    Behavior::TooSlow,
    Behavior::Trickle,
    Behavior::Flaky,
    Behavior::Mitm,
    Behavior::OldStyle,
    Behavior::Chunked,
    Behavior::EndlessHeader,
    Behavior::HugeBody,
    Behavior::BogusSocks,
    Behavior::TlsGarbage,
    Behavior::Transparent,
    Behavior::Anonymous,
];
const PROTOCOLS: [Protocol; 4] = [Protocol::Http, Protocol::Https, Protocol::Socks4, Protocol::Socks5];

fn matrix(per_cell: u32) -> FarmSpec {
    let mut groups = Vec::new();
    for p in PROTOCOLS {
        for b in BEHAVIORS {
            groups.push(Group::new(per_cell, p, b).latency(Duration::from_millis(5)));
        }
    }
    FarmSpec { groups }
}

fn settings(mode: Mode, judges: Vec<String>, ca_file: Option<std::path::PathBuf>) -> CheckSettings {
    CheckSettings {
        mode,
        judges: judges.iter().map(|j| j.parse().unwrap()).collect(),
        expect_status: 200,
        validation: Validation::Nonce,
        connect_timeout: Duration::from_millis(400),
        timeout: Duration::from_millis(1000),
        retries: 1,
        backoff: Duration::from_millis(10),
        concurrency: 500,
        adaptive: true,
        ca_file,
        detect_protocol: true,
    }
}

fn candidates(farm: &Farm) -> Vec<Candidate> {
    let opts = ParseOptions { default_protocol: P::Http, allow_private: true, max_proxies: usize::MAX };
    farm.proxies()
        .map(|p| Candidate {
            proxy: parse_token(&p.url(), opts).expect("farm URLs parse"),
            addr: SocketAddr::new(IpAddr::V4(p.ip), p.port),
            source: 0,
            scope: Default::default(),
        })
        .collect()
}

async fn run(settings: CheckSettings, cands: Vec<Candidate>) -> Result<(Vec<Verdict>, Arc<Progress>), RunError> {
    let tls = engine::tls_config(settings.ca_file.as_deref()).unwrap();
    let engine = Engine::new(settings, tls).unwrap();
    let progress = Arc::new(Progress::default());
    let mut out = Vec::new();
    engine
        .run(futures_util::stream::iter(cands), progress.clone(), CancellationToken::new(), &mut |v| out.push(v))
        .await?;
    Ok((out, progress))
}

fn by_ip(verdicts: &[Verdict]) -> HashMap<IpAddr, &Verdict> {
    verdicts.iter().map(|v| (v.candidate.addr.ip(), v)).collect()
}

/// Compares every verdict with the farm's ground truth; reports all mismatches at once.
fn assert_truth(farm: &Farm, verdicts: &[Verdict], full: bool, https_judge: bool) {
    let got = by_ip(verdicts);
    let mut wrong = Vec::new();
    let mut count = 0;
    for p in farm.proxies() {
        count += 1;
        let want = proxy_farm::expect(p.protocol, p.behavior, full, https_judge);
        let Some(v) = got.get(&IpAddr::V4(p.ip)) else {
            wrong.push(format!("{:?} {:?}: no verdict", p.protocol, p.behavior));
            continue;
        };
        let (alive, reason, fwd, tun, anon) = match &v.outcome {
            Ok(a) => (true, None, a.forward, a.tunnel, a.anonymity.as_str()),
            Err(r) => (false, Some(r.as_str()), false, false, "unknown"),
        };
        let caps_ok = !full || (fwd == want.forward && tun == want.tunnel);
        if alive != want.alive || reason != want.reason || !caps_ok || anon != want.anonymity {
            wrong.push(format!(
                "{:?} {:?}: got alive={alive} reason={reason:?} fwd={fwd} tun={tun} anonymity={anon}, want {want:?}",
                p.protocol, p.behavior
            ));
        }
        // The judge saw the request come from the proxy's own address (the farm's
        // proxies exit where they listen).
        if let Ok(a) = &v.outcome
            && full
        {
            assert_eq!(a.exit_ip, Some(IpAddr::V4(p.ip)), "{:?} {:?}: exit address", p.protocol, p.behavior);
        }
    }
    assert_eq!(verdicts.len(), count, "one verdict per candidate");
    assert!(wrong.is_empty(), "{} wrong verdicts:\n{}", wrong.len(), wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_http_every_protocol_and_behaviour_http_judge() {
    let farm = Farm::start(matrix(2)).await.unwrap();
    let (verdicts, progress) =
        run(settings(Mode::FullHttp, vec![farm.judge_url()], None), candidates(&farm)).await.unwrap();
    assert_truth(&farm, &verdicts, true, false);
    assert!(
        progress.retries.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "flaky and timing-out proxies are retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_http_every_protocol_and_behaviour_https_judge() {
    let farm = Farm::start(matrix(2)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, farm.ca_pem()).unwrap();
    let (verdicts, _) =
        run(settings(Mode::FullHttp, vec![farm.judge_tls_url()], Some(ca)), candidates(&farm)).await.unwrap();
    assert_truth(&farm, &verdicts, true, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_only_every_protocol_and_behaviour() {
    let farm = Farm::start(matrix(2)).await.unwrap();
    let (verdicts, _) = run(settings(Mode::ConnectOnly, vec![], None), candidates(&farm)).await.unwrap();
    assert_truth(&farm, &verdicts, false, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_judge_without_its_ca_is_refused_before_any_check() {
    let farm = Farm::start(matrix(1)).await.unwrap();
    let err = run(settings(Mode::FullHttp, vec![farm.judge_tls_url()], None), candidates(&farm)).await.unwrap_err();
    assert!(matches!(err, RunError::JudgeDown(_)), "{err}");
    assert_eq!(farm.connections(), 0, "no proxy was dialed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_down_before_the_run_stops_it_with_no_verdicts() {
    let farm = Farm::start(matrix(1)).await.unwrap();
    farm.set_judge_down(true);
    let err = run(settings(Mode::FullHttp, vec![farm.judge_url()], None), candidates(&farm)).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("is down") && msg.contains("no proxy was marked dead"), "{msg}");
    assert_eq!(farm.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_down_mid_run_marks_no_proxy_dead() {
    let spec = FarmSpec {
        groups: vec![Group::new(300, Protocol::Http, Behavior::Working).latency(Duration::from_millis(300))],
    };
    let farm = Arc::new(Farm::start(spec).await.unwrap());
    let mut s = settings(Mode::FullHttp, vec![farm.judge_url()], None);
    s.concurrency = 20;
    let f = farm.clone();
    let flip = tokio::spawn(async move {
        while f.judge_hits() < 40 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        f.set_judge_down(true);
    });
    let tls = engine::tls_config(None).unwrap();
    let engine = Engine::new(s, tls).unwrap();
    let mut dead = Vec::new();
    let mut alive = 0;
    let result = engine
        .run(
            futures_util::stream::iter(candidates(&farm)),
            Arc::new(Progress::default()),
            CancellationToken::new(),
            &mut |v| match v.outcome {
                Ok(_) => alive += 1,
                Err(r) => dead.push(r),
            },
        )
        .await;
    flip.await.unwrap();
    assert!(matches!(result, Err(RunError::JudgeDown(_))), "{result:?}");
    assert!(dead.is_empty(), "dead verdicts emitted while the judge was down: {dead:?}");
    assert!(alive > 0 && alive < 300, "alive before the outage: {alive}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_judge_is_skipped_and_checks_spread_over_the_others() {
    let a = Farm::start(matrix(1)).await.unwrap();
    let b = Farm::start(FarmSpec::default()).await.unwrap();
    b.set_judge_down(true);
    let judges = vec![b.judge_url(), a.judge_url()];
    let (verdicts, _) = run(settings(Mode::FullHttp, judges, None), candidates(&a)).await.unwrap();
    assert_truth(&a, &verdicts, true, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contains_and_none_validation() {
    let spec = FarmSpec {
        groups: vec![
            Group::new(3, Protocol::Http, Behavior::Working),
            Group::new(3, Protocol::Socks5, Behavior::WrongPage),
        ],
    };
    let farm = Farm::start(spec).await.unwrap();
    let mut s = settings(Mode::FullHttp, vec![farm.judge_url()], None);
    s.validation = Validation::Contains("\"origin\"".into());
    let (v, _) = run(s.clone(), candidates(&farm)).await.unwrap();
    assert_eq!(v.iter().filter(|v| v.is_alive()).count(), 3);
    assert!(v.iter().filter(|v| !v.is_alive()).all(|v| v.outcome.unwrap_err().as_str() == "content_mismatch"));
    s.validation = Validation::None;
    let (v, _) = run(s, candidates(&farm)).await.unwrap();
    assert_eq!(v.iter().filter(|v| v.is_alive()).count(), 6, "status-only validation takes the portal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_or_times_out_is_dialed_once_per_attempt() {
    let spec = FarmSpec {
        groups: vec![
            Group::new(20, Protocol::Http, Behavior::Refused),
            Group::new(20, Protocol::Https, Behavior::Blackhole),
            Group::new(20, Protocol::Http, Behavior::Working),
        ],
    };
    let farm = Farm::start(spec).await.unwrap();
    let mut s = settings(Mode::FullHttp, vec![farm.judge_url()], None);
    s.retries = 0;
    let (verdicts, progress) = run(s, candidates(&farm)).await.unwrap();
    assert_truth(&farm, &verdicts, true, false);
    // 40 unreachable proxies: one probe each; 20 working: forward, and the tunnel on the
    // same connection (they keep it alive).
    assert_eq!(progress.probes.load(std::sync::atomic::Ordering::Relaxed), 40 + 20);
}

/// Proxies that attack the reader (an endless head, a 4 GB body, a slowloris trickle,
/// bogus SOCKS replies, TLS garbage) end dead with their own reason, each within the check
/// timeout (no retries here), and the run does not hang on any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_proxies_end_dead_with_the_right_reason_and_never_hang() {
    let mut groups = Vec::new();
    for p in PROTOCOLS {
        for b in [Behavior::EndlessHeader, Behavior::HugeBody, Behavior::Trickle, Behavior::TlsGarbage] {
            groups.push(Group::new(10, p, b));
        }
    }
    groups.push(Group::new(10, Protocol::Socks4, Behavior::BogusSocks));
    groups.push(Group::new(10, Protocol::Socks5, Behavior::BogusSocks));
    let farm = Farm::start(FarmSpec { groups }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, farm.ca_pem()).unwrap();
    let mut s = settings(Mode::FullHttp, vec![farm.judge_tls_url()], Some(ca));
    s.retries = 0;
    // Debug-build TLS on a shared 2-core machine: room for 180 handshakes at once.
    s.timeout = Duration::from_secs(3);
    // All 180 run at once; a reader that ignored its deadline would hang here for the
    // farm's hour-long streams. The guard only catches a hang: it is no speed target.
    let (verdicts, _) = tokio::time::timeout(HANG_GUARD, run(s, candidates(&farm)))
        .await
        .expect("the run hung: a reader ignored its deadline")
        .unwrap();
    assert_truth(&farm, &verdicts, true, true);
    assert!(verdicts.iter().all(|v| v.outcome.is_err() && v.attempts == 1));
}

/// A proxy that reads the nonce in a plain request can forge the judge's answer without
/// forwarding anything (the farm's `Mitm` proxies answer plain requests themselves and
/// have no certificate for the judge). With a plain and an `https://` judge configured,
/// forward tests use the plain one and every tunnel (CONNECT, SOCKS) the `https://` one:
/// the forger keeps its (unprovable) forward capability and never gets the tunnel one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_https_judge_beside_a_plain_one_the_tunnel_cannot_be_forged() {
    let farm = Farm::start(FarmSpec {
        groups: vec![
            Group::new(8, Protocol::Http, Behavior::Working),
            Group::new(8, Protocol::Http, Behavior::Mitm),
            Group::new(4, Protocol::Socks5, Behavior::Working),
            Group::new(4, Protocol::Socks5, Behavior::Mitm),
        ],
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, farm.ca_pem()).unwrap();
    let judges = vec![farm.judge_url(), farm.judge_tls_url()];
    let (verdicts, _) = run(settings(Mode::FullHttp, judges, Some(ca)), candidates(&farm)).await.unwrap();
    let got = by_ip(&verdicts);
    for p in farm.proxies() {
        let v = &got[&IpAddr::V4(p.ip)].outcome;
        let shown = format!("{:?} {:?}: {v:?}", p.protocol, p.behavior);
        match (p.protocol, p.behavior) {
            (Protocol::Http, Behavior::Working) => assert!(v.as_ref().is_ok_and(|a| a.forward && a.tunnel), "{shown}"),
            (Protocol::Http, _) => assert!(v.as_ref().is_ok_and(|a| a.forward && !a.tunnel), "{shown}"),
            (_, Behavior::Working) => assert!(v.as_ref().is_ok_and(|a| a.tunnel), "{shown}"),
            _ => assert_eq!(v.as_ref().err().map(|r| r.as_str()), Some("tls_error"), "{shown}"),
        }
    }
}

/// With an `https://` judge configured, tunnels are never checked on a plain one: when no
/// `https://` judge answers, the run fails (no proxy is marked, and nothing can be forged)
/// instead of quietly falling back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_never_fall_back_to_a_plain_judge() {
    let farm = Farm::start(FarmSpec { groups: vec![Group::new(4, Protocol::Socks5, Behavior::Mitm)] }).await.unwrap();
    // The https judge's CA is not given: it fails its probe; the plain judge answers.
    let judges = vec![farm.judge_url(), farm.judge_tls_url()];
    let err = run(settings(Mode::FullHttp, judges, None), candidates(&farm)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RunError::JudgeDown(_)), "{text}");
    assert!(text.contains("https:// judges") && text.contains("forged"), "{text}");
    assert_eq!(farm.connections(), 0, "no proxy was dialed");
}

/// Every judge family people run (httpbin `/get`, azenv pages, path-and-headers JSON
/// echoes, this service's `/judge`), plain and over TLS: calibrated before the checks, each
/// gives every protocol × behaviour the farm's verdict, and connect-only is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_judge_family_every_protocol_and_behaviour() {
    let farm = Farm::start(matrix(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, farm.ca_pem()).unwrap();
    for (family, path) in proxy_farm::http::JUDGE_FAMILIES {
        let (verdicts, _) = run(settings(Mode::FullHttp, vec![farm.judge_url_at(path)], None), candidates(&farm))
            .await
            .unwrap_or_else(|e| panic!("{family} (http): {e}"));
        assert_truth(&farm, &verdicts, true, false);
        let (verdicts, _) =
            run(settings(Mode::FullHttp, vec![farm.judge_tls_url_at(path)], Some(ca.clone())), candidates(&farm))
                .await
                .unwrap_or_else(|e| panic!("{family} (https): {e}"));
        assert_truth(&farm, &verdicts, true, true);
        let (verdicts, _) =
            run(settings(Mode::ConnectOnly, vec![farm.judge_url_at(path)], None), candidates(&farm)).await.unwrap();
        assert_truth(&farm, &verdicts, false, false);
    }
}

/// A judge that echoes nothing the checker can verify fails calibration before any proxy
/// is dialed, quoting the start of its answer and naming the way out; with that way out
/// (`contains`) the same judge works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_that_echoes_nothing_fails_calibration_and_says_what_to_do() {
    let farm = Farm::start(FarmSpec { groups: vec![Group::new(3, Protocol::Http, Behavior::Working)] }).await.unwrap();
    let judge = farm.judge_url_at(proxy_farm::http::NO_ECHO_PATH);
    let err = run(settings(Mode::FullHttp, vec![judge.clone()], None), candidates(&farm)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("It works!") && text.contains("`contains`") && text.contains("expect_body"), "{text}");
    assert_eq!(farm.connections(), 0, "no proxy was dialed");
    let mut s = settings(Mode::FullHttp, vec![judge], None);
    s.validation = Validation::Contains("It works!".into());
    let (verdicts, _) = run(s, candidates(&farm)).await.unwrap();
    assert!(verdicts.iter().all(|v| v.outcome.is_ok()), "{verdicts:?}");
}

/// Candidates for the farm's proxies, each listed as `listed` instead of what it speaks.
fn listed_as(farm: &Farm, listed: &str) -> Vec<Candidate> {
    let opts = ParseOptions { default_protocol: P::Http, allow_private: true, max_proxies: usize::MAX };
    farm.proxies()
        .filter(|p| p.protocol.scheme() != listed && !(p.protocol.is_http() && listed.starts_with("http")))
        .map(|p| Candidate {
            proxy: parse_token(&format!("{listed}://{}", p.addr()), opts).unwrap(),
            addr: SocketAddr::new(IpAddr::V4(p.ip), p.port),
            source: 0,
            scope: Default::default(),
        })
        .collect()
}

/// Lists mislabel proxies (HTTP listed as SOCKS5, SOCKS4 listed as HTTP, …). The checker
/// tells from the answer which protocol a proxy speaks, checks it as that within the same
/// attempt, and reports it relabelled — for one extra connection per mislabelled proxy.
/// With detection off, they are dead with `proxy_protocol_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mislabelled_proxies_are_checked_as_what_they_speak() {
    let farm = Farm::start(FarmSpec {
        groups: vec![
            Group::new(3, Protocol::Http, Behavior::Working),
            Group::new(3, Protocol::Socks4, Behavior::Working),
            Group::new(3, Protocol::Socks5, Behavior::Working),
            Group::new(2, Protocol::Socks5, Behavior::Refused),
        ],
    })
    .await
    .unwrap();
    let judge = vec![farm.judge_url()];
    // Correctly labelled, for the connection count a right label costs.
    let before = farm.connections();
    let (right, _) = run(settings(Mode::FullHttp, judge.clone(), None), candidates(&farm)).await.unwrap();
    // The working proxies, by address.
    let right_cost: std::collections::HashMap<IpAddr, P> =
        right.iter().filter(|v| v.is_alive()).map(|v| (v.candidate.addr.ip(), v.candidate.proxy.protocol)).collect();
    let per_label = farm.connections() - before;
    for listed in ["http", "socks4", "socks5"] {
        let cands = listed_as(&farm, listed);
        let mislabelled = cands.iter().filter(|c| right_cost.contains_key(&c.addr.ip())).count() as u64;
        let before = farm.connections();
        let (verdicts, _) = run(settings(Mode::FullHttp, judge.clone(), None), cands.clone()).await.unwrap();
        let used = farm.connections() - before;
        for v in &verdicts {
            let real = farm.proxies().find(|p| IpAddr::V4(p.ip) == v.candidate.addr.ip()).unwrap();
            if real.behavior == Behavior::Refused {
                assert_eq!(v.outcome.as_ref().unwrap_err().as_str(), "connect_refused", "{v:?}");
                continue;
            }
            assert!(v.outcome.is_ok(), "listed {listed}, speaks {:?}: {v:?}", real.protocol);
            assert_eq!(v.candidate.proxy.protocol.as_str(), real.protocol.scheme(), "{v:?}");
            assert_eq!(v.relabelled_from.map(|p| p.as_str()), Some(listed), "{v:?}");
            assert_eq!(v.attempts, 1, "relabelled within the same attempt: {v:?}");
        }
        // Correctly labelled, every proxy of the farm cost `per_label` connections in all;
        // mislabelled, each costs at most one more.
        assert!(used <= per_label + mislabelled, "listed {listed}: {used} connections, {mislabelled} mislabelled");
        // Detection off: mislabelled proxies are dead, as before.
        let mut off = settings(Mode::FullHttp, judge.clone(), None);
        off.detect_protocol = false;
        let (verdicts, _) = run(off, cands).await.unwrap();
        for v in verdicts.iter().filter(|v| right_cost.contains_key(&v.candidate.addr.ip())) {
            let r = v.outcome.as_ref().unwrap_err().as_str();
            assert!(r == "proxy_protocol_error" || r == "proxy_closed", "listed {listed}, detection off: {v:?}");
            assert_eq!(v.relabelled_from, None);
        }
    }
}

/// A full check of an HTTP proxy that keeps its connection alive costs one connection: the
/// tunnel test's CONNECT goes on the forward test's connection. Proxies that break their
/// keep-alive word (close, go mute, refuse or garble the next request, send an answer
/// nobody asked for) and proxies that never keep one cost two — and every verdict is the
/// one a fresh connection gives. Counted per proxy by the farm: a count, not a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_proxy_that_keeps_alive_is_checked_on_one_connection() {
    use Behavior::*;
    let http = [
        Working,
        AuthGood,
        Chunked,
        Transparent,
        ForwardOnly,
        TunnelOnly,
        OldStyle,
        KeepAliveThenClose,
        KeepAliveThenMute,
        KeepAliveThenRefuse,
        KeepAliveThenGarbage,
        KeepAliveExtraAnswer,
    ];
    let mut groups: Vec<Group> = http.iter().map(|b| Group::new(2, Protocol::Http, *b)).collect();
    groups.push(Group::new(2, Protocol::Https, Working));
    groups.push(Group::new(2, Protocol::Socks5, Working));
    let farm = Farm::start(FarmSpec { groups }).await.unwrap();
    // A plain judge (forward and tunnel on it), then a TLS judge for the tunnel beside it.
    for https in [false, true] {
        let before: HashMap<_, _> = farm.proxies().map(|p| (p.ip, farm.connections_to(p.ip))).collect();
        let mut judges = vec![farm.judge_url()];
        let mut ca = None;
        if https {
            judges.push(farm.judge_tls_url());
            let path = std::env::temp_dir().join(format!("pc-keepalive-ca-{}.pem", std::process::id()));
            std::fs::write(&path, farm.ca_pem()).unwrap();
            ca = Some(path);
        }
        let mut s = settings(Mode::FullHttp, judges, ca);
        // One attempt: a retry would dial again.
        s.retries = 0;
        s.timeout = Duration::from_secs(4);
        s.connect_timeout = Duration::from_secs(2);
        let (verdicts, progress) = run(s, candidates(&farm)).await.unwrap();
        assert_truth(&farm, &verdicts, true, false);
        let mut wrong = Vec::new();
        let mut total = 0;
        for p in farm.proxies() {
            let used = farm.connections_to(p.ip) - before[&p.ip];
            total += u64::from(used);
            let want = match p.behavior {
                _ if !p.protocol.is_http() => 1,
                // No forward test, or no tunnel test to keep a connection for.
                TunnelOnly => 2,
                // The CONNECT on the kept connection is refused (405): a fresh one must
                // say so before the proxy is called forward-only.
                ForwardOnly => 2,
                // They break their word; a fresh connection works.
                KeepAliveThenClose | KeepAliveThenMute | KeepAliveThenRefuse | KeepAliveThenGarbage
                | KeepAliveExtraAnswer => 2,
                b if b.keeps_alive() => 1,
                _ => 2,
            };
            if used != want {
                wrong.push(format!("{:?} {:?}: {used} connections, want {want}", p.protocol, p.behavior));
            }
        }
        assert!(wrong.is_empty(), "https judge {https}:\n{}", wrong.join("\n"));
        // The run's own count of connections made is the farm's.
        assert_eq!(progress.probes.load(std::sync::atomic::Ordering::Relaxed), total, "https judge {https}");
    }
}
