//! A pool that stays fresh between rounds (the real server over `proxy-farm`): rechecks
//! pull a proxy killed after the round without a new round, and return one that comes
//! back; client reports are rechecked at once, deduplicated, rate limited, and pull only
//! on a failed recheck; each proxy's history survives a restart on every store; the
//! history's filters and `order=score` behave as documented.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol, SourceBody};
use serde_json::{Value, json};

use crate::common::*;

fn lines(s: &str) -> BTreeSet<String> {
    s.lines().map(str::to_string).collect()
}

fn spec() -> FarmSpec {
    FarmSpec {
        groups: vec![
            Group::new(6, Protocol::Http, Behavior::Working),
            Group::new(3, Protocol::Socks5, Behavior::Working).latency(Duration::from_millis(120)),
            Group::new(2, Protocol::Socks4, Behavior::Refused),
        ],
    }
}

/// The farm's working proxies of `protocol`, as `/get-proxy` serves them.
fn working(farm: &Farm, protocol: Protocol) -> Vec<proxy_farm::FarmProxy> {
    farm.proxies().filter(|p| p.protocol == protocol && p.behavior == Behavior::Working).collect()
}

fn served_url(p: &proxy_farm::FarmProxy) -> String {
    format!("{}://{}", p.protocol.client_scheme(), p.addr())
}

async fn record(h: &H, addr: &str) -> Value {
    let (s, body) = h.authed(&format!("/proxy/{addr}")).await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn report(h: &H, proxy: &str) -> (u16, Value) {
    let r = h
        .http
        .post(format!("{}/report", h.base))
        .header("X-Api-Key", KEY)
        .header("content-type", "application/json")
        .body(json!({ "proxy": proxy }).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().await.unwrap()).unwrap())
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// The farm and a service over it with rechecks every `recheck_secs` (0: off), after
/// its first round.
async fn fresh(recheck_secs: u64, drop_after: u16) -> (Farm, tempfile::TempDir, H) {
    let farm = Farm::start(spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h = start(&fresh_config(&farm, dir.path(), recheck_secs, drop_after), dir.path()).await;
    h.wait_round(1).await;
    (farm, dir, h)
}

/// Starts a round (once the one before has ended: a reload while one runs starts none).
async fn new_round(h: &H) {
    h.until("a new round to start", async |h| h.post_reload().await["status"] == "started").await;
}

fn fresh_config(farm: &Farm, dir: &std::path::Path, recheck_secs: u64, drop_after: u16) -> Value {
    let mut cfg = config(farm, vec![farm.add_list("l.txt", farm.list_urls())], dir);
    cfg["checker"]["recheck_interval_secs"] = json!(recheck_secs);
    cfg["checker"]["recheck_drop_after"] = json!(drop_after);
    // Killed proxies close at once; a working one is never slow enough for this, even
    // on a busy machine, so rechecks many times a second find only what was killed.
    cfg["checker"]["timeout_ms"] = json!(10_000);
    cfg["checker"]["connect_timeout_ms"] = json!(5_000);
    cfg
}

/// A proxy that dies after the round leaves `/get-proxy` through rechecks alone (no new
/// round), is dropped after `recheck_drop_after` failures in a row, and the survivors'
/// track records grow with every recheck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_after_the_round_leaves_the_pool_without_a_round() {
    let (farm, _dir, mut h) = fresh(1, 2).await;
    let before = lines(&h.authed("/get-proxy?all=1").await.1);
    let victims = [working(&farm, Protocol::Http)[0].clone(), working(&farm, Protocol::Socks5)[0].clone()];
    for v in &victims {
        assert!(before.contains(&served_url(v)), "{before:?}");
        assert!(farm.kill(v.ip));
    }
    h.until("the killed proxies to leave the pool", async |h| {
        let now = lines(&h.authed("/get-proxy?all=1").await.1);
        victims.iter().all(|v| !now.contains(&served_url(v)))
    })
    .await;
    let after = lines(&h.authed("/get-proxy?all=1").await.1);
    let expected: BTreeSet<String> =
        before.iter().filter(|u| victims.iter().all(|v| **u != served_url(v))).cloned().collect();
    assert_eq!(after, expected, "only the killed ones left");
    let st = h.stat().await;
    assert_eq!(st["last_round"]["round_id"], 1, "no round ran: {st}");
    assert_eq!(st["freshness"]["recheck_interval_secs"], 1);

    // Two failures in a row: dropped (no longer rechecked, no longer pulled).
    for v in &victims {
        h.until("the killed proxy to be dropped", async |h| record(h, &v.addr()).await["state"] == "not_served").await;
        let r = record(&h, &v.addr()).await;
        assert!(r["history"]["consecutive_failures"].as_u64() >= Some(2), "{r}");
        assert!(r["entry"].is_null());
    }
    // The survivors were rechecked: more checks than the round's one, a recent last_ok.
    let alive = working(&farm, Protocol::Http)[1].clone();
    h.until("a survivor to be rechecked", async |h| {
        record(h, &alive.addr()).await["history"]["checks"].as_u64() >= Some(3)
    })
    .await;
    let r = record(&h, &alive.addr()).await;
    assert_eq!(r["state"], "served");
    assert_eq!(r["history"]["consecutive_failures"], 0);
    assert_eq!(r["history"]["uptime"], 1.0);
    let m = h.get("/metrics").await.1;
    assert!(metric(&m, "proxychecker_rechecks_total{result=\"alive\"}") >= 2.0, "{m}");
    assert!(metric(&m, "proxychecker_rechecks_total{result=\"dead\"}") >= 4.0);
    assert!(metric(&m, "proxychecker_pool_changes_total{change=\"pulled\"}") >= 2.0);
    assert!(metric(&m, "proxychecker_pool_changes_total{change=\"dropped\"}") >= 2.0);
    assert!(metric(&m, "proxychecker_history_entries") >= 11.0, "every proxy checked has a record");
    assert_eq!(st["last_round"]["round_id"], h.stat().await["last_round"]["round_id"]);
    h.shutdown().await;
}

/// A pulled proxy that passes a recheck again is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_proxy_that_comes_back_is_served_again() {
    let (farm, _dir, mut h) = fresh(1, 1000).await;
    let v = working(&farm, Protocol::Http)[2].clone();
    farm.kill(v.ip);
    h.until("the proxy to be pulled", async |h| record(h, &v.addr()).await["state"] == "pulled").await;
    assert!(!lines(&h.authed("/get-proxy?all=1").await.1).contains(&served_url(&v)));
    assert!(h.stat().await["freshness"]["pulled"].as_u64() >= Some(1));
    farm.revive(v.ip);
    h.until("the proxy to be served again", async |h| {
        lines(&h.authed("/get-proxy?all=1").await.1).contains(&served_url(&v))
    })
    .await;
    let r = record(&h, &v.addr()).await;
    assert_eq!(r["state"], "served");
    assert_eq!(r["history"]["consecutive_failures"], 0);
    assert!(r["history"]["uptime"].as_f64().unwrap() < 1.0, "its failures are on record: {r}");
    assert!(metric(&h.get("/metrics").await.1, "proxychecker_pool_changes_total{change=\"returned\"}") >= 1.0);
    assert_eq!(h.stat().await["last_round"]["round_id"], 1);
    h.shutdown().await;
}

/// `POST /report`: a reported proxy is rechecked at once, pulled only when the recheck
/// fails; a second report of one in flight is deduplicated; unknown proxies are 404 (the
/// service never dials what a client names); reports are limited per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_rechecked_at_once_and_pull_only_on_a_failed_recheck() {
    let farm = Farm::start(spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Periodic rechecks off: whatever is rechecked here was reported.
    let mut cfg = fresh_config(&farm, dir.path(), 0, 3);
    cfg["api"]["report_per_minute"] = json!(6);
    let mut h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let good = working(&farm, Protocol::Http)[0].clone();
    let bad = working(&farm, Protocol::Socks5)[1].clone();

    // A good proxy reported as bad: rechecked, and it stays.
    let (s, body) = report(&h, &good.addr()).await;
    assert_eq!((s, &body["status"]), (202, &json!("queued")), "{body}");
    h.until("the reported proxy to be rechecked", async |h| {
        record(h, &good.addr()).await["history"]["checks"].as_u64() == Some(2)
    })
    .await;
    let r = record(&h, &good.addr()).await;
    assert_eq!((r["state"].as_str(), r["history"]["successes"].as_u64()), (Some("served"), Some(2)), "{r}");

    // A dead one (as a URL, in the query): rechecked and pulled.
    farm.kill(bad.ip);
    let r = h
        .http
        .post(format!("{}/report?proxy=socks5://{}", h.base, bad.addr()))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    h.until("the dead proxy to be pulled", async |h| record(h, &bad.addr()).await["state"] == "pulled").await;
    assert!(!lines(&h.authed("/get-proxy?all=1").await.1).contains(&served_url(&bad)));
    let (s, body) = report(&h, &bad.addr()).await;
    assert_eq!((s, &body["status"]), (200, &json!("pulled")), "{body}");

    // Reported twice in a row: one recheck (the second is queued or just checked).
    let twice = working(&farm, Protocol::Http)[3].clone();
    assert_eq!(report(&h, &twice.addr()).await.0, 202);
    let (_, body) = report(&h, &twice.addr()).await;
    assert!(["already_queued", "recently_checked"].contains(&body["status"].as_str().unwrap()), "{body}");

    // Not served, or not an address: nothing is dialed.
    let (s, body) = report(&h, "127.9.9.9:3128").await;
    assert_eq!((s, &body["error"]), (404, &json!("unknown_proxy")), "{body}");
    let r = h
        .http
        .post(format!("{}/report?proxy={}&wait=1", h.base, good.addr()))
        .header("X-Api-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "unknown parameters are refused");
    let r = h.http.post(format!("{}/report", h.base)).header("X-Api-Key", KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(h.http.post(format!("{}/report?proxy=x", h.base)).send().await.unwrap().status().as_u16(), 401);

    // Six reports a minute per key: the rest are refused.
    let mut limited = None;
    for _ in 0..10 {
        let (s, body) = report(&h, &good.addr()).await;
        if s == 429 {
            limited = Some(body);
            break;
        }
    }
    let limited = limited.expect("the report limit refuses within 10 reports");
    assert_eq!(limited["limiter"], "report", "{limited}");
    let m = h.get("/metrics").await.1;
    assert!(metric(&m, "proxychecker_reports_total{outcome=\"queued\"}") >= 3.0, "{m}");
    assert_eq!(metric(&m, "proxychecker_reports_total{outcome=\"not_served\"}"), 1.0);
    assert!(metric(&m, "proxychecker_rate_limited_total{limiter=\"report\"}") >= 1.0);
    // The good proxy is still served after all this.
    assert!(lines(&h.authed("/get-proxy?all=1").await.1).contains(&served_url(&good)));
    assert_eq!(h.stat().await["last_round"]["round_id"], 1);
    h.shutdown().await;
}

/// A recheck pass that cannot run (the judge is down) pulls nothing and records
/// nothing: our failure is never the proxy's. Once the judge is back, the dead one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_with_the_judge_down_pulls_nothing() {
    let (farm, _dir, mut h) = fresh(1, 2).await;
    let before = lines(&h.authed("/get-proxy?all=1").await.1);
    let victim = working(&farm, Protocol::Http)[0].clone();
    farm.set_judge_down(true);
    // Passes run one at a time: once one has failed, none that began before is running.
    h.until("a recheck pass to fail", async |h| h.stat().await["freshness"]["last_recheck"]["error"].is_string()).await;
    let checks = record(&h, &victim.addr()).await["history"]["checks"].clone();
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    farm.kill(victim.ip);
    // A pass that ended after the kill, then one after that (which began after the kill).
    let finished = async |h: &H| h.stat().await["freshness"]["last_recheck"]["finished_at"].as_f64().unwrap_or(0.0);
    h.until("a pass after the kill", async |h| finished(h).await > killed_at).await;
    let first = finished(&h).await;
    h.until("a second pass after the kill", async |h| finished(h).await > first).await;
    assert!(h.stat().await["freshness"]["last_recheck"]["error"].is_string());
    assert_eq!(lines(&h.authed("/get-proxy?all=1").await.1), before, "nothing pulled");
    let r = record(&h, &victim.addr()).await;
    assert_eq!((&r["state"], &r["history"]["checks"]), (&json!("served"), &checks), "nothing recorded: {r}");
    assert_eq!(metric(&h.get("/metrics").await.1, "proxychecker_pool_changes_total{change=\"pulled\"}"), 0.0);
    farm.set_judge_down(false);
    h.until("the dead proxy to be pulled", async |h| record(h, &victim.addr()).await["state"] != "served").await;
    assert_eq!(h.authed("/get-proxy?all=1").await.1.lines().count(), before.len() - 1);
    h.shutdown().await;
}

/// Every proxy's track record (the live and the dead) survives a restart.
async fn history_survives_a_restart(storage: Value) {
    let farm = Farm::start(spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fresh_config(&farm, dir.path(), 0, 3);
    cfg["storage"] = storage;
    let mut h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    new_round(&h).await;
    h.wait_round(2).await;
    let live = working(&farm, Protocol::Socks5)[0].clone();
    let dead = farm.proxies().find(|p| p.behavior == Behavior::Refused).unwrap();
    let live_before = record(&h, &live.addr()).await;
    assert_eq!(live_before["history"]["checks"], 2, "{live_before}");
    let dead_before = record(&h, &dead.addr()).await;
    assert_eq!(dead_before["state"], "not_served");
    assert_eq!(
        (dead_before["history"]["checks"].as_u64(), dead_before["history"]["successes"].as_u64()),
        (Some(2), Some(0))
    );
    h.shutdown().await;

    // The source now fails: what is known comes from the store alone.
    farm.add_source("l.txt", SourceBody { body: Arc::new(vec![]), status: 500, gzip: false, delay: Duration::ZERO });
    let mut h = start(&cfg, dir.path()).await;
    assert_eq!(record(&h, &live.addr()).await["history"], live_before["history"]);
    assert_eq!(record(&h, &dead.addr()).await["history"], dead_before["history"]);
    let served: Value = serde_json::from_str(&h.authed("/get-proxy?all=1&format=json").await.1).unwrap();
    let entry = served.as_array().unwrap().iter().find(|e| e["host"] == live.ip.to_string()).unwrap().clone();
    assert_eq!(entry["checks"], 2, "{entry}");
    assert_eq!(entry["first_seen"], live_before["history"]["first_seen"]);

    // The first round (the source failing) ends; the source is back: the next round adds
    // to the same records.
    h.until("the failing round to end", async |h| !h.stat().await["last_error"].is_null()).await;
    farm.add_list("l.txt", farm.list_urls());
    new_round(&h).await;
    h.until("a round after the restart", async |h| record(h, &live.addr()).await["history"]["checks"] == 3).await;
    let r = record(&h, &live.addr()).await;
    assert_eq!(r["history"]["first_seen"], live_before["history"]["first_seen"]);
    assert_eq!(r["history"]["successes"], 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_file() {
    let dir = tempfile::tempdir().unwrap();
    history_survives_a_restart(json!({"type": "file", "path": dir.path().join("snap.json")})).await;
    assert!(dir.path().join("snap.history.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    history_survives_a_restart(json!({"type": "sqlite", "path": dir.path().join("pool.sqlite3")})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_redis() {
    if !redis_available().await {
        return;
    }
    let prefix = format!("pctest:{:x}:", fastrand::u64(..));
    history_survives_a_restart(json!({"type": "redis", "redis_url": redis_url(), "redis_key_prefix": prefix})).await;
    let keys = redis_keys_drop(&prefix).await;
    assert!(keys.contains(&format!("{prefix}history")), "{keys:?}");
    assert_eq!(keys.len(), 3, "pointer, one snapshot, the history: {keys:?}");
}

/// `min_uptime`, `min_checks` and `order=score` over a history with one proxy that
/// missed a round; json and csv carry the track record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_order_by_score_use_the_history() {
    let (farm, _dir, mut h) = fresh(0, 3).await;
    let flaky = working(&farm, Protocol::Http)[4].clone();
    farm.kill(flaky.ip);
    new_round(&h).await;
    h.wait_round(2).await;
    farm.revive(flaky.ip);
    new_round(&h).await;
    h.wait_round(3).await;
    let get = async |q: &str| {
        let (s, body) = h.authed(&format!("/get-proxy?{q}")).await;
        assert_eq!(s, 200, "{q}: {body}");
        lines(&body)
    };
    let all = get("all=1").await;
    assert_eq!(all.len(), 9);
    let steady = get("all=1&min_uptime=0.9").await;
    assert_eq!(steady.len(), 8);
    assert!(!steady.contains(&served_url(&flaky)));
    assert_eq!(get("all=1&min_uptime=0.6").await, all, "2 of 3 is 0.667");
    assert_eq!(get("all=1&min_checks=3").await, all);
    let (s, body) = h.authed("/get-proxy?all=1&min_checks=4").await;
    assert_eq!(s, 503);
    assert!(body.contains("min_checks=4"), "{body}");
    for bad in ["min_uptime=1.5", "min_uptime=x", "min_checks=-1", "order=best"] {
        assert_eq!(h.authed(&format!("/get-proxy?{bad}")).await.0, 400, "{bad}");
    }

    // Best score first: the proxy that missed a round is last.
    let (_, body) = h.authed("/get-proxy?limit=9&order=score&format=json").await;
    let entries: Vec<Value> = serde_json::from_str(&body).unwrap();
    let scores: Vec<f64> = entries.iter().map(|e| e["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(entries.last().unwrap()["host"], flaky.ip.to_string(), "{body}");
    for e in &entries {
        for field in ["uptime", "checks", "first_seen", "last_ok", "score"] {
            assert!(e[field].as_f64().is_some_and(|x| x > 0.0), "{field} in {e}");
        }
    }
    let (_, top) = h.authed("/get-proxy?limit=2&order=score&format=json").await;
    let top: Vec<Value> = serde_json::from_str(&top).unwrap();
    assert_eq!(top, entries[..2].to_vec(), "limit takes the best");
    let (_, csv) = h.authed("/get-proxy?all=1&format=csv&protocol=http").await;
    assert!(csv.starts_with("proxy,protocol,host,port,latency_ms,connect_ms,forward,tunnel,source,anonymity,exit_ip,uptime,checks,first_seen,last_ok,score\n"), "{csv}");
    let flaky_row = csv.lines().find(|l| l.contains(&flaky.addr())).unwrap();
    assert!(flaky_row.contains(",0.667,3,"), "{flaky_row}");
    assert_eq!(h.authed("/proxy/not-an-address").await.0, 400);
    assert_eq!(h.authed("/proxy/127.9.9.9:1").await.0, 404);
    h.shutdown().await;
}
