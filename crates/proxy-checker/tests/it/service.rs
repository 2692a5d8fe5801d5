//! The service end to end: the real server on an ephemeral port, the farm in process, real
//! files, real SQLite, the real Redis. Every endpoint and parameter, auth both ways, both
//! rate limits, empty pools, reloads during rounds, snapshot swaps under readers, restart
//! recovery for each backend, config reloads good and bad, graceful shutdown.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use proxy_checker::config::Config;
use proxy_checker::server::{self, Options};
use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol, SourceBody};
use serde_json::{Value, json};

use crate::common::*;

fn lines(body: &str) -> Vec<String> {
    body.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_parameter() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h = start(&config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path()), dir.path()).await;
    h.wait_round(1).await;
    let want = alive_set(&farm);

    assert_eq!(h.get("/health").await.1, "ok");
    assert_eq!(h.get("/ready").await.0, 200);
    let (s, body, _) = h.get("/judge?pc_nonce=abc&x=1").await;
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((s, j["args"]["pc_nonce"].as_str(), j["origin"].as_str()), (200, Some("abc"), Some("127.0.0.1")));
    assert!(j["query"].as_str().unwrap().contains("pc_nonce=abc"));

    // Default: one proxy, text.
    let (s, body) = h.authed("/get-proxy").await;
    assert_eq!(s, 200);
    assert_eq!(lines(&body).len(), 1);
    assert!(want.contains(&lines(&body)[0]));
    // limit, all
    assert_eq!(lines(&h.authed("/get-proxy?limit=3").await.1).len(), 3);
    let all: BTreeSet<String> = lines(&h.authed("/get-proxy?all=1").await.1).into_iter().collect();
    assert_eq!(all, want);
    // round-robin is shared: consecutive single picks walk the pool
    let mut seen = BTreeSet::new();
    for _ in 0..want.len() {
        seen.insert(h.authed("/get-proxy?order=rr").await.1);
    }
    assert_eq!(seen.len(), want.len(), "round-robin visits every proxy once per turn");
    // fastest: sorted by latency
    let (_, body) = h.authed("/get-proxy?order=fastest&all=1&format=json").await;
    let v: Vec<Value> = serde_json::from_str(&body).unwrap();
    let lat: Vec<u64> = v.iter().map(|e| e["latency_ms"].as_u64().unwrap()).collect();
    assert!(lat.windows(2).all(|w| w[0] <= w[1]));
    for key in ["proxy", "protocol", "host", "port", "latency_ms", "connect_ms", "forward", "tunnel", "source"] {
        assert!(!v[0][key].is_null(), "{key}");
    }
    // random
    let (s, body) = h.authed("/get-proxy?order=random&limit=4").await;
    assert_eq!((s, lines(&body).len()), (200, 4));
    // csv
    let (_, body) = h.authed("/get-proxy?format=csv&limit=2").await;
    assert!(body.starts_with("proxy,protocol,host,port,latency_ms"));
    assert_eq!(body.lines().count(), 3);
    // protocol filters: single, comma list, repeated
    let socks: Vec<String> = lines(&h.authed("/get-proxy?protocol=socks5&all=1").await.1);
    assert_eq!(socks.len(), 4);
    assert!(socks.iter().all(|p| p.starts_with("socks5://")));
    assert_eq!(lines(&h.authed("/get-proxy?protocol=socks5,http&all=1").await.1).len(), 10);
    assert_eq!(lines(&h.authed("/get-proxy?protocol=socks5&protocol=https&all=1").await.1).len(), 10);
    // max_latency_ms: the SOCKS5 group answers after 120 ms
    let fast = lines(&h.authed("/get-proxy?max_latency_ms=100&all=1").await.1);
    assert_eq!(fast.len(), 6, "{fast:?}");
    let (s, body) = h.authed("/get-proxy?protocol=socks4").await;
    assert_eq!(s, 503);
    assert!(body.contains("no_proxy") && body.contains("protocol=socks4"), "{body}");
    // bad parameters name themselves
    for (q, param) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("format=xml", "format"),
        ("protocol=ftp", "protocol"),
        ("order=best", "order"),
        ("max_latency_ms=-1", "max_latency_ms"),
        ("all=maybe", "all"),
        ("colour=red", "colour"),
    ] {
        let (s, body) = h.authed(&format!("/get-proxy?{q}")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((s, v["parameter"].as_str()), (400, Some(param)), "{q}: {body}");
    }
    // stat
    let st = h.stat().await;
    assert_eq!(st["pool"]["alive"], 10);
    assert_eq!(st["pool"]["stale"], false);
    let r = &st["last_round"];
    assert_eq!((r["scraped"].as_u64(), r["unique"].as_u64(), r["checked"].as_u64()), (Some(16), Some(16), Some(16)));
    assert_eq!((r["alive"].as_u64(), r["dead"].as_u64()), (Some(10), Some(6)));
    assert_eq!(r["dead_by_reason"]["content_mismatch"], 3);
    assert_eq!(r["dead_by_reason"]["connect_refused"], 3);
    assert_eq!(r["alive_percent"], 62.5);
    assert_eq!(r["sources"][0]["alive"], 10);
    assert!(r["sources"][0]["fetched_at"].as_f64().unwrap() > 0.0);
    for k in ["started_at", "finished_at", "duration_ms"] {
        assert!(!r[k].is_null(), "{k}");
    }
    assert!(st["next_round_at"].as_f64().is_some());
    assert!(st["effective_concurrency"].as_u64().unwrap() > 0);
    assert!(st["pool"]["snapshot_age_secs"].as_f64().is_some());
    // metrics: names and labels, no proxy addresses
    let (s, m, _) = h.get("/metrics").await;
    assert_eq!(s, 200);
    for name in [
        "proxychecker_alive_proxies 10",
        "proxychecker_checks_total{protocol=\"http\",result=\"content_mismatch\"} 3",
        "proxychecker_check_duration_seconds_bucket",
        "proxychecker_api_requests_total{route=\"/get-proxy\",status=\"400\"}",
        "proxychecker_round_duration_seconds",
        "proxychecker_last_round_timestamp_seconds",
        "proxychecker_sources_fetched_total 1",
        "proxychecker_checks_in_flight",
        "proxychecker_effective_concurrency",
        "proxychecker_snapshot_age_seconds",
        "proxychecker_store_writes_total{result=\"ok\"} 1",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(m.contains(name), "metrics lack {name}");
    }
    assert!(!m.contains("127.1."), "a proxy address leaked into a metric label");
    let (s, body, _) = h.get("/nope").await;
    assert_eq!(s, 404);
    assert!(body.contains("not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_both_ways() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["api"]["metrics_require_auth"] = json!(true);
    let env_key = "from-the-environment-key-42";
    let h = start_opts(&cfg, dir.path(), Some(&format!(" ,{env_key}"))).await;
    h.wait_round(1).await;
    for path in ["/get-proxy", "/stat", "/metrics"] {
        let (s, body, _) = h.get(path).await;
        assert_eq!(s, 401, "{path}");
        assert!(body.contains("X-Api-Key"), "{body}");
        let (s, _, _) = h.get(&format!("{path}?api_key=wrong-key-wrong-key")).await;
        assert_eq!(s, 401);
        let (s, _, _) = h.get(&format!("{path}?api_key={KEY}")).await;
        assert_eq!(s, 200, "{path} with the query key");
        let (s, _, _) = h.get(&format!("{path}?api_key={env_key}")).await;
        assert_eq!(s, 200, "{path} with the key from PROXY_API_KEY");
    }
    let r = h.http.post(format!("{}/reload", h.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Probes and the judge need no key.
    assert_eq!(h.get("/health").await.0, 200);
    assert_eq!(h.get("/judge").await.0, 200);

    // Auth off: no key needed.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l2.txt", farm.list_urls())], dir2.path());
    cfg["api"]["enable_api_key_auth"] = json!(false);
    let h2 = start(&cfg, dir2.path()).await;
    h2.wait_round(1).await;
    assert_eq!(h2.get("/get-proxy").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_rate_limits_with_retry_after() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["api"]["rate_limit_per_minute"] = json!(3);
    cfg["api"]["rate_limit_per_ip_per_minute"] = json!(6);
    let h = start(&cfg, dir.path()).await;
    // Per key: the 4th authed request within the minute is refused.
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(h.authed("/stat").await.0);
    }
    assert_eq!(codes, [200, 200, 200, 429]);
    let r = h.http.get(format!("{}/stat", h.base)).header("X-Api-Key", KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["limiter"], "key");
    // Per IP: 5 requests so far from this IP; the 7th is refused, whatever the route.
    assert_eq!(h.get("/judge").await.0, 200);
    let (s, body, headers) = h.get("/judge").await;
    assert_eq!(s, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(body.contains("\"limiter\":\"ip\""));
    // X-Forwarded-For is not trusted by default: spoofing it does not help.
    let r = h.http.get(format!("{}/judge", h.base)).header("X-Forwarded-For", "203.0.113.9").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    // Probes are never limited.
    assert_eq!(h.get("/health").await.0, 200);
    let (_, m, _) = h.get("/health").await;
    assert_eq!(m, "ok");

    // Trusted XFF (behind a proxy): each forwarded client has its own bucket.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l2.txt", farm.list_urls())], dir2.path());
    cfg["api"]["rate_limit_per_ip_per_minute"] = json!(2);
    cfg["api"]["trusted_proxies"] = json!(["127.0.0.1"]);
    let h2 = start(&cfg, dir2.path()).await;
    let mut codes = Vec::new();
    for client in ["198.51.100.1", "198.51.100.1", "198.51.100.1", "198.51.100.2"] {
        let r = h2.http.get(format!("{}/judge", h2.base)).header("X-Forwarded-For", client).send().await.unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 429, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_and_empty_pool_answer_503() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The source is held: until the first round ends there is nothing to serve.
    let slow = farm.add_list("slow.txt", farm.list_urls());
    let gate = farm.hold_source("slow.txt");
    let h = start(&config(&farm, vec![slow], dir.path()), dir.path()).await;
    let (s, body, _) = h.get("/ready").await;
    assert_eq!(s, 503, "{body}");
    let (s, body) = h.authed("/get-proxy").await;
    assert_eq!(s, 503);
    assert!(body.contains("first round has not finished"), "{body}");
    h.until("round 1 to run", async |h| h.stat().await["round_in_progress"]["round_id"].as_u64() == Some(1)).await;
    gate.open();
    h.wait_round(1).await;
    assert_eq!(h.get("/ready").await.0, 200);

    // A round that finds nobody alive: 503 saying so.
    let dir2 = tempfile::tempdir().unwrap();
    let dead = farm.add_list(
        "dead.txt",
        farm.proxies().filter(|p| p.behavior != Behavior::Working).map(|p| p.url() + "\n").collect::<String>(),
    );
    let h2 = start(&config(&farm, vec![dead], dir2.path()), dir2.path()).await;
    h2.wait_round(1).await;
    let (s, body) = h2.authed("/get-proxy").await;
    assert_eq!(s, 503);
    assert!(body.contains("found no live proxy"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_while_a_round_runs_serves_the_old_snapshot_until_the_new_one_is_whole() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = farm.list_urls();
    let url = farm.add_list("l.txt", list.clone());
    let h = start(&config(&farm, vec![url], dir.path()), dir.path()).await;
    h.wait_round(1).await;
    let before = h.authed("/get-proxy?all=1").await.1;
    // Hold the next fetch of the source until the test has looked, then ask for a round twice.
    let gate = farm.hold_source("l.txt");
    let first = h.post_reload().await;
    assert_eq!(first["status"], "started");
    let id = first["round_id"].as_u64().unwrap();
    assert_eq!(id, 2);
    let second = h.post_reload().await;
    assert_eq!((second["status"].as_str(), second["round_id"].as_u64()), (Some("running"), Some(id)));
    // While it runs, the old snapshot is served, whole.
    // (`round_in_progress` first says `starting`, until the scheduler picks the request up.)
    h.until("the round to run", async |h| h.stat().await["round_in_progress"]["total"].is_u64()).await;
    let st = h.stat().await;
    assert_eq!(st["round_in_progress"]["round_id"], 2, "{st}");
    assert_eq!(h.authed("/get-proxy?all=1").await.1, before);
    gate.open();
    h.wait_round(2).await;
    assert_eq!(h.post_reload().await["round_id"], 3, "a new round may start once the last ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_mix_of_two_snapshots() {
    let farm = Arc::new(Farm::start(farm_spec()).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<_> = farm.proxies().filter(|p| p.behavior == Behavior::Working).collect();
    let (a, b): (Vec<_>, Vec<_>) = all.iter().partition(|p| p.protocol == Protocol::Http);
    let list_a: String = a.iter().map(|p| p.url() + "\n").collect();
    let list_b: String = b.iter().map(|p| p.url() + "\n").collect();
    let set = |v: &Vec<&proxy_farm::FarmProxy>| {
        v.iter().map(|p| format!("{}://{}", p.protocol.client_scheme(), p.addr())).collect::<BTreeSet<_>>()
    };
    let (set_a, set_b) = (set(&a), set(&b));
    let url = farm.add_list("flip.txt", list_a.clone());
    let h = Arc::new(start(&config(&farm, vec![url], dir.path()), dir.path()).await);
    h.wait_round(1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (h, stop, reads, set_a, set_b) = (h.clone(), stop.clone(), reads.clone(), set_a.clone(), set_b.clone());
        readers.push(tokio::spawn(async move {
            let mut kinds = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let got: BTreeSet<String> =
                    lines(&h.authed("/get-proxy?all=1&order=random").await.1).into_iter().collect();
                assert!(got == set_a || got == set_b, "a reader saw a mixed pool: {got:?}");
                kinds.insert(got == set_a);
                reads.fetch_add(1, Ordering::Relaxed);
            }
            kinds
        }));
    }
    for round in 2..=7u64 {
        farm.add_list("flip.txt", if round % 2 == 0 { list_b.clone() } else { list_a.clone() });
        assert_eq!(h.post_reload().await["round_id"], round);
        h.wait_round(round).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut saw_both = false;
    for r in readers {
        saw_both |= r.await.unwrap().len() == 2;
    }
    assert!(saw_both, "readers observed both pools");
    assert!(reads.load(Ordering::Relaxed) > 20);
}

/// Restart recovery: a restarted service serves the persisted pool at once, marked stale,
/// even when its sources are down.
async fn restart_recovers(storage: Value) {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = farm.list_urls();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", list.clone())], dir.path());
    cfg["storage"] = storage;
    let mut h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let before: BTreeSet<String> = lines(&h.authed("/get-proxy?all=1").await.1).into_iter().collect();
    assert_eq!(before, alive_set(&farm));
    h.until("the snapshot to be persisted", async |h| {
        h.get("/metrics").await.1.contains("proxychecker_store_writes_total{result=\"ok\"} 1")
    })
    .await;
    h.shutdown().await;

    // The source now fails: the persisted pool must still be served.
    farm.add_source("l.txt", SourceBody { body: Arc::new(vec![]), status: 500, gzip: false, delay: Duration::ZERO });
    let h = start(&cfg, dir.path()).await;
    assert_eq!(h.get("/ready").await.0, 200, "ready at once from the store");
    let after: BTreeSet<String> = lines(&h.authed("/get-proxy?all=1").await.1).into_iter().collect();
    assert_eq!(after, before);
    let st = h.stat().await;
    assert_eq!(st["pool"]["stale"], true);
    assert_eq!(st["last_round"]["round_id"], 1);
    // The failed round keeps the loaded pool.
    h.until("the failing round to end", async |h| !h.stat().await["last_error"].is_null()).await;
    let st = h.stat().await;
    assert!(st["last_error"].as_str().unwrap().contains("500"), "{st}");
    assert_eq!(lines(&h.authed("/get-proxy?all=1").await.1).len(), before.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovery_file() {
    let dir = tempfile::tempdir().unwrap();
    restart_recovers(json!({"type": "file", "path": dir.path().join("nested/snap.json")})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovery_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    restart_recovers(json!({"type": "sqlite", "path": dir.path().join("pool.sqlite3")})).await;
}

/// The Redis URL tests use: `REDIS_URL`, default the local one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovery_redis() {
    if !redis_available().await {
        return;
    }
    let prefix = format!("pctest:{:x}:", fastrand::u64(..));
    restart_recovers(json!({"type": "redis", "redis_url": redis_url(), "redis_key_prefix": prefix})).await;
    // Only the pointer, one snapshot and the history remain.
    let keys = redis_keys_drop(&prefix).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_good_and_bad() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let new_key = "rotated-key-abcdefghijklmnop";

    // A bad file (unknown key) is rejected: the running config stays.
    let mut bad = cfg.clone();
    bad["checker"]["timeot_ms"] = json!(5);
    bad["api"]["api_keys"] = json!([new_key]);
    std::fs::write(&h.cfg_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    h.until("the bad reload to be rejected", async |h| {
        h.get("/metrics").await.1.contains("proxychecker_config_reloads_total{result=\"rejected\"} 1")
    })
    .await;
    assert_eq!(h.authed("/stat").await.0, 200, "old key still works");
    assert_eq!(h.get(&format!("/stat?api_key={new_key}")).await.0, 401);

    // A good file, written the way editors do (new file renamed over the old one).
    cfg["api"]["api_keys"] = json!([new_key]);
    cfg["aggregation"]["interval_secs"] = json!(3000);
    let tmp = dir.path().join(".config.json.swp");
    std::fs::write(&tmp, serde_json::to_vec(&cfg).unwrap()).unwrap();
    std::fs::rename(&tmp, &h.cfg_path).unwrap();
    h.until("the new key to work", async |h| h.get(&format!("/stat?api_key={new_key}")).await.0 == 200).await;
    assert_eq!(h.authed("/stat").await.0, 401, "the old key is revoked");
    assert!(
        h.get(&format!("/metrics?api_key={new_key}"))
            .await
            .1
            .contains("proxychecker_config_reloads_total{result=\"ok\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_cancels_the_round_and_keeps_the_last_snapshot() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = farm.list_urls();
    let cfg = config(&farm, vec![farm.add_list("l.txt", list.clone())], dir.path());
    let mut h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    h.until("persisted", async |h| h.get("/metrics").await.1.contains("store_writes_total{result=\"ok\"} 1")).await;
    // A round that would never end on its own (its source answers in an hour) is running
    // when shutdown comes: shutdown cancels it rather than waiting for it.
    farm.add_source(
        "l.txt",
        SourceBody { body: Arc::new(list.into_bytes()), status: 200, gzip: false, delay: Duration::from_secs(3600) },
    );
    h.post_reload().await;
    h.until("round 2 to run", async |h| h.stat().await["round_in_progress"]["round_id"] == 2).await;
    tokio::time::timeout(HANG_GUARD, h.shutdown()).await.expect("shutdown waited for the round");
    assert!(h.http.get(format!("{}/health", h.base)).send().await.is_err(), "no longer accepting");
    let saved: Value = serde_json::from_slice(&std::fs::read(dir.path().join("snap.json")).unwrap()).unwrap();
    assert_eq!(saved["round"]["round_id"], 1);
    assert_eq!(saved["proxies"].as_array().unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_never_stops_rounds_or_the_api() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"a file where the store wants a directory").unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["storage"] = json!({"type": "file", "path": blocker.join("snap.json")});
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    h.until("the write failure to be counted", async |h| {
        h.get("/metrics").await.1.contains("proxychecker_store_writes_total{result=\"error\"} 1")
    })
    .await;
    assert_eq!(lines(&h.authed("/get-proxy?all=1").await.1).len(), 10, "the pool is served anyway");
    h.post_reload().await;
    h.wait_round(2).await;
    h.until("the retry on the next swap", async |h| {
        h.get("/metrics").await.1.contains("proxychecker_store_writes_total{result=\"error\"} 2")
    })
    .await;
    // The history's writes fail the same way, counted apart.
    h.until("the history write failures to be counted", async |h| {
        h.get("/metrics").await.1.contains("proxychecker_history_writes_total{result=\"error\"} 2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_is_a_judge_the_engine_accepts() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h = start(&config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path()), dir.path()).await;
    let mut cfg = Config::from_json(&config(&farm, vec![], dir.path()).to_string(), "t").unwrap();
    cfg.checker.settings.judges = vec![format!("{}/judge?from=test", h.base).parse().unwrap()];
    let tls = proxy_checker::check::engine::tls_config(None).unwrap();
    let engine = proxy_checker::check::Engine::new(cfg.checker.settings, tls).unwrap();
    // The same direct probe that guards every run: status 200 and the fresh nonce echoed.
    let judges = engine.healthy_judges().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(judges.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_connections_are_closed_and_cannot_hold_every_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    std::fs::write(dir.path().join("c.json"), cfg.to_string()).unwrap();
    let config = Config::load(&dir.path().join("c.json")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = Options {
        fd_budget: 100,
        max_connections: 16,
        idle_timeout: Some(Duration::from_millis(300)),
        ..Options::default()
    };
    let server = server::start(config, listener, opts).await.unwrap();
    // Take every slot: half of them idle, half with a header that never ends.
    let mut hogs = Vec::new();
    for i in 0..16 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        }
        hogs.push(s);
    }
    // A good client still gets an answer once the hogs time out.
    let http =
        proxy_checker::source::fetch::client(proxy_checker::check::engine::tls_config(None).unwrap(), true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), http.get(format!("http://{}/health", server.addr)).send())
        .await
        .expect("served despite 16 hogs")
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for mut s in hogs {
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b)).await.expect("hog closed");
        assert!(matches!(n, Ok(0) | Err(_)), "a hog got {n:?}");
    }
    server.shutdown().await;
}

/// A first start where every source fails: no pretend pool, no placeholder round, and
/// every number says so: `/stat.last_round` is null, `last_failed_round` has each source's
/// error, `/get-proxy` names the failure, the failed round's sources are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_round_that_fails_says_so_everywhere() {
    let farm = Farm::start(farm_spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e500 = farm
        .add_source("e500.txt", SourceBody { body: Arc::new(vec![]), status: 500, gzip: false, delay: Duration::ZERO });
    let missing = dir.path().join("missing.txt").display().to_string();
    let private = farm.add_list("private.txt", "127.0.0.1:80\n10.1.2.3:8080\n192.168.1.1:3128\n");
    let mut cfg = config(&farm, vec![e500, missing, private], dir.path());
    cfg["checker"]["allow_private"] = json!(false);
    let h = start(&cfg, dir.path()).await;
    h.until("the first round to fail", async |h| !h.stat().await["last_failed_round"].is_null()).await;
    let st = h.stat().await;
    assert_eq!(st["last_round"], Value::Null, "{st}");
    let failed = &st["last_failed_round"];
    assert_eq!(failed["round_id"], 1);
    let sources = failed["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 3, "{failed}");
    assert!(sources[0]["error"].as_str().unwrap().contains("500"), "{failed}");
    assert_eq!(sources[0]["attempts"], 1, "no retries configured");
    assert!(sources[1]["error"].as_str().unwrap().starts_with("cannot read the file"), "{failed}");
    assert_eq!(sources[1]["attempts"], 1, "a missing file is not retried");
    assert_eq!(sources[2]["ok"], true);
    assert_eq!(sources[2]["rejected"]["private"], 3);
    assert!(failed["error"].as_str().unwrap().contains("--allow-private"), "{failed}");
    assert_eq!(st["last_error"], failed["error"]);
    assert_eq!(st["last_round_ended"]["result"], "failed");

    let (status, body) = h.authed("/get-proxy").await;
    assert_eq!(status, 503);
    assert!(body.contains("no round has succeeded yet; the last one (round 1) failed: no usable source"), "{body}");
    let (status, body, _) = h.get("/ready").await;
    assert_eq!(status, 503, "nothing to serve");
    // The unauthenticated probe says so without the error's text (it names sources).
    assert!(body.contains("no round has succeeded so far") && !body.contains("no usable source"), "{body}");
    assert_eq!(h.get("/health").await.0, 200, "a failed round is no fault");
    let metrics = h.get("/metrics").await.1;
    for line in [
        "proxychecker_sources_failed_total 2",
        "proxychecker_sources_fetched_total 1",
        "proxychecker_rounds_total{result=\"failed\"} 1",
        "proxychecker_last_round_timestamp_seconds 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in:\n{metrics}");
    }
}

/// A snapshot written by a newer binary (a higher format version) is refused by every
/// store with an error that says so, and the service starts empty instead of serving
/// fields it does not understand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_a_newer_binary_is_refused_by_every_store() {
    use proxy_checker::snapshot::{FORMAT_VERSION, SnapshotData};
    use proxy_checker::store::{self, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let mut storages = vec![
        json!({"type": "file", "path": dir.path().join("snap.json")}),
        json!({"type": "sqlite", "path": dir.path().join("pool.sqlite3")}),
    ];
    let prefix = format!("pctest:{:x}:", fastrand::u64(..));
    if redis_available().await {
        storages.push(json!({"type": "redis", "redis_url": redis_url(), "redis_key_prefix": prefix}));
    }
    for storage in storages {
        let cfg = proxy_checker::config::Config::from_json(&json!({"storage": storage}).to_string(), "c.json").unwrap();
        let s = store::open(&cfg.storage).unwrap();
        let newer = SnapshotData { version: FORMAT_VERSION + 1, ..Default::default() };
        s.save(Arc::new(newer)).await.unwrap();
        let err = s.load().await.unwrap_err();
        assert!(matches!(err, StoreError::NewerFormat { .. }), "{storage}: {err}");
        let text = err.to_string();
        assert!(text.contains(&format!("format version {}", FORMAT_VERSION + 1)) && text.contains("newer"), "{text}");
        // The current version loads.
        s.save(Arc::new(SnapshotData { version: FORMAT_VERSION, ..Default::default() })).await.unwrap();
        assert!(s.load().await.unwrap().is_some(), "{storage}");
    }
    if redis_available().await {
        redis_keys_drop(&prefix).await;
    }
}

/// Errors keep their causes: a store that cannot write says which store, where, and the
/// OS's reason, through the whole chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_keep_their_cause() {
    use proxy_checker::snapshot::SnapshotData;
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file cannot be created.
    std::fs::write(dir.path().join("afile"), b"x").unwrap();
    let cfg = proxy_checker::config::Config::from_json(
        &json!({"storage": {"type": "file", "path": dir.path().join("afile/snap.json")}}).to_string(),
        "c.json",
    )
    .unwrap();
    let s = proxy_checker::store::open(&cfg.storage).unwrap();
    let err = s.save(Arc::new(SnapshotData::default())).await.unwrap_err();
    let source = std::error::Error::source(&err).expect("the cause is kept");
    assert!(source.downcast_ref::<std::io::Error>().is_some(), "{source:?}");
    let shown = proxy_checker::error_chain(&err);
    assert!(shown.starts_with("file at ") && shown.contains("(os error "), "{shown}");
}

/// Each live proxy carries its anonymity and exit address through every store and answer:
/// `/get-proxy` (json, csv, the `anonymity` filter), `/stat` counts and a metric label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymity_and_exit_address_are_served_and_filtered() {
    let farm = Farm::start(FarmSpec {
        groups: vec![
            Group::new(3, Protocol::Http, Behavior::Working),
            Group::new(2, Protocol::Http, Behavior::Anonymous),
            Group::new(2, Protocol::Http, Behavior::Transparent),
            Group::new(2, Protocol::Socks5, Behavior::Transparent),
        ],
    })
    .await
    .unwrap();
    let prefix = format!("pctest:{:x}:", fastrand::u64(..));
    let mut storages = vec!["file", "sqlite"];
    if redis_available().await {
        storages.push("redis");
    }
    for storage in storages {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
        cfg["storage"] = json!({"type": storage, "path": dir.path().join("pool.db"), "redis_url": redis_url(), "redis_key_prefix": prefix});
        let mut h = start(&cfg, dir.path()).await;
        h.wait_round(1).await;
        let (_, body) = h.authed("/get-proxy?all=1&format=json").await;
        let pool: Vec<Value> = serde_json::from_str(&body).unwrap();
        let count = |level: &str| pool.iter().filter(|e| e["anonymity"] == level).count();
        // SOCKS proxies tunnel: nothing is added to what they carry.
        assert_eq!((count("elite"), count("anonymous"), count("transparent")), (5, 2, 2), "{storage}: {body}");
        for e in &pool {
            assert_eq!(e["exit_ip"], e["host"], "{storage}: the farm's proxies exit where they listen: {e}");
        }
        let (s, elite) = h.authed("/get-proxy?all=1&anonymity=elite,anonymous").await;
        assert_eq!((s, elite.lines().count()), (200, 7), "{elite}");
        let (s, csv) = h.authed("/get-proxy?all=1&format=csv&anonymity=transparent").await;
        assert_eq!(s, 200);
        assert!(
            csv.starts_with("proxy,protocol,host,port,latency_ms,connect_ms,forward,tunnel,source,anonymity,exit_ip,")
        );
        assert_eq!(csv.lines().filter(|l| l.contains(",transparent,127.1.")).count(), 2, "{csv}");
        let (s, bad) = h.authed("/get-proxy?anonymity=secret").await;
        assert!(s == 400 && bad.contains("allowed: transparent, anonymous, elite, unknown"), "{bad}");
        let st = h.stat().await;
        assert_eq!(st["pool"]["by_anonymity"], json!({"anonymous": 2, "elite": 5, "transparent": 2, "unknown": 0}));
        let metrics = h.get("/metrics").await.1;
        assert!(metrics.contains("proxychecker_pool_proxies{anonymity=\"transparent\"} 2"), "{metrics}");
        // A restart loads the same from the store.
        h.until("persisted", async |h| h.get("/metrics").await.1.contains("store_writes_total{result=\"ok\"} 1")).await;
        h.shutdown().await;
        let cfg_loaded = proxy_checker::config::Config::load(&dir.path().join("config.json")).unwrap();
        let loaded = proxy_checker::store::open(&cfg_loaded.storage).unwrap().load().await.unwrap().unwrap();
        assert_eq!(loaded.proxies.iter().filter(|e| e.anonymity == "transparent").count(), 2, "{storage}");
        assert!(loaded.proxies.iter().all(|e| e.exit_ip.as_deref() == Some(e.host.as_str())), "{storage}");
    }
    if redis_available().await {
        redis_keys_drop(&prefix).await;
    }
}

/// A SQLite snapshot written before anonymity was kept opens, and its proxies are served
/// as `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_sqlite_snapshot_opens_with_anonymity_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE proxies (proxy TEXT NOT NULL, protocol TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL,
                 username TEXT, password TEXT, latency_ms INTEGER NOT NULL, connect_ms INTEGER NOT NULL,
                 forward INTEGER NOT NULL, tunnel INTEGER NOT NULL, source TEXT NOT NULL);
             INSERT INTO proxies VALUES ('http://1.2.3.4:80', 'http', '1.2.3.4', 80, NULL, NULL, 50, 10, 1, 1, 'old');",
        )
        .unwrap();
        let round = proxy_checker::snapshot::RoundSummary { round_id: 7, ..Default::default() };
        c.execute("INSERT INTO meta VALUES ('round', ?1)", [serde_json::to_string(&round).unwrap()]).unwrap();
    }
    let cfg = proxy_checker::config::Config::from_json(
        &json!({"storage": {"type": "sqlite", "path": path}}).to_string(),
        "c.json",
    )
    .unwrap();
    let loaded = proxy_checker::store::open(&cfg.storage).unwrap().load().await.unwrap().unwrap();
    assert_eq!(loaded.round.round_id, 7);
    assert_eq!((loaded.proxies[0].anonymity.as_str(), loaded.proxies[0].exit_ip.as_deref()), ("unknown", None));
}

/// A source with `protocol: "auto"` lists bare addresses: each proxy's protocol is sniffed
/// (tried as SOCKS5, relabelled from what it answers), served as what it speaks, and the
/// source says how many were relabelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_source_is_sniffed_and_counts_its_relabelled_proxies() {
    let farm = Farm::start(FarmSpec {
        groups: vec![
            Group::new(2, Protocol::Http, Behavior::Working),
            Group::new(2, Protocol::Socks4, Behavior::Working),
            Group::new(3, Protocol::Socks5, Behavior::Working),
        ],
    })
    .await
    .unwrap();
    let bare: String = farm.proxies().map(|p| format!("{}\n", p.addr())).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&farm, vec![], dir.path());
    let mut cfg = cfg;
    cfg["sources"] = json!([{"url": farm.add_list("bare.txt", bare), "protocol": "auto", "name": "bare"}]);
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let served: BTreeSet<String> = lines(&h.authed("/get-proxy?all=1").await.1).into_iter().collect();
    assert_eq!(served, alive_set(&farm), "each served as the protocol it speaks");
    let st = h.stat().await;
    assert_eq!(st["last_round"]["sources"][0]["relabelled"], 4, "{st}");
    // `auto` needs the detection.
    let mut off = cfg.clone();
    off["checker"]["detect_protocol"] = json!(false);
    let err = proxy_checker::config::Config::from_json(&off.to_string(), "c.json").unwrap_err().to_string();
    assert!(err.contains("sources[0].protocol") && err.contains("detect_protocol"), "{err}");
}

/// A proxy one source lists right and another mislabels is relabelled to the same proxy:
/// the pool serves it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_proxy_listed_right_elsewhere_is_served_once() {
    let farm =
        Farm::start(FarmSpec { groups: vec![Group::new(3, Protocol::Socks5, Behavior::Working)] }).await.unwrap();
    let right = farm.list_urls();
    let wrong: String = farm.proxies().map(|p| format!("http://{}\n", p.addr())).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&farm, vec![farm.add_list("right.txt", right), farm.add_list("wrong.txt", wrong)], dir.path());
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let served = lines(&h.authed("/get-proxy?all=1").await.1);
    assert_eq!(served.len(), 3, "{served:?}");
    assert!(served.iter().all(|u| u.starts_with("socks5://")), "{served:?}");
    let st = h.stat().await;
    assert_eq!(st["last_round"]["sources"][1]["relabelled"], 3, "{st}");
    assert_eq!((st["last_round"]["checked"].as_u64(), st["last_round"]["alive"].as_u64()), (Some(3), Some(3)), "{st}");
}
