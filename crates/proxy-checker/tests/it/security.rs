//! The security review's items against the real server (and, for what reaches logs, the
//! real binary): routes by access level, who the client is behind proxies, what `/judge`
//! echoes, the manual-round gap and admin keys, and secrets in source and Redis URLs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxy_checker::api::{Access, ROUTES};
use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol};
use serde_json::{Value, json};

use crate::common::*;

const ADMIN: &str = "admin-key-0123456789abcdef";

async fn small_farm() -> Farm {
    Farm::start(FarmSpec { groups: vec![Group::new(3, Protocol::Http, Behavior::Working)] }).await.unwrap()
}

async fn send(h: &H, method: &str, path: &str, key: Option<&str>, headers: &[(&str, &str)]) -> (u16, String) {
    let url = format!("{}{path}", h.base);
    let mut r = if method == "POST" { h.http.post(url) } else { h.http.get(url) };
    if let Some(k) = key {
        r = r.header("X-Api-Key", k);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Every route, with its access level: what it answers without a key, with a plain key and
/// with an admin key. A route added without a level cannot be routed at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_by_its_access_level() {
    let farm = small_farm().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["api"]["admin_keys"] = json!([ADMIN]);
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let levels: Vec<(&str, Access)> = ROUTES.iter().map(|r| (r.path, r.access)).collect();
    assert_eq!(
        levels,
        [
            ("/health", Access::Public),
            ("/ready", Access::Public),
            ("/openapi.json", Access::Public),
            ("/metrics", Access::Metrics),
            ("/judge", Access::Open),
            ("/get-proxy", Access::Key),
            ("/stat", Access::Key),
            ("/reload", Access::Admin),
            ("/report", Access::Key),
            ("/proxy/{address}", Access::Key),
        ],
        "a route changed its access level: update this table on purpose"
    );
    let served = farm.proxies().next().unwrap().addr();
    for r in ROUTES {
        // Routes with a parameter get a real one; a report of a proxy that is not served
        // is 404 once admitted (nothing is dialed).
        let (path, admitted) = match r.path {
            "/proxy/{address}" => (format!("/proxy/{served}"), 200),
            "/report" => ("/report?proxy=127.9.9.9:1".to_string(), 404),
            p => (p.to_string(), 200),
        };
        let (none, _) = send(&h, r.method, &path, None, &[]).await;
        let (plain, _) = send(&h, r.method, &path, Some(KEY), &[]).await;
        let (admin, _) = send(&h, r.method, &path, Some(ADMIN), &[]).await;
        let want = match r.access {
            Access::Public | Access::Open | Access::Metrics => [200, 200, 200],
            Access::Key => [401, admitted, admitted],
            Access::Admin => [401, 403, 202],
        };
        assert_eq!([none, plain, admin], want, "{} {} ({:?})", r.method, r.path, r.access);
    }
    // /metrics behind a key when asked.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg2 = config(&farm, vec![farm.add_list("l2.txt", farm.list_urls())], dir2.path());
    cfg2["api"]["metrics_require_auth"] = json!(true);
    let h2 = start(&cfg2, dir2.path()).await;
    assert_eq!(send(&h2, "GET", "/metrics", None, &[]).await.0, 401);
    assert_eq!(send(&h2, "GET", "/metrics", Some(KEY), &[]).await.0, 200);
    // No admin keys configured: every key may start a round.
    assert_eq!(send(&h2, "POST", "/reload", Some(KEY), &[]).await.0, 202);
}

/// Forwarding headers are believed only from `api.trusted_proxies`, walked from the right:
/// a client cannot pick a fresh per-IP bucket by writing a new left entry each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_the_first_untrusted_hop_from_the_right() {
    let farm = small_farm().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["api"]["rate_limit_per_ip_per_minute"] = json!(2);
    cfg["api"]["trusted_proxies"] = json!(["127.0.0.1/32", "10.0.0.0/8"]);
    let h = start(&cfg, dir.path()).await;
    // The test is the trusted proxy (127.0.0.1), and 10.9.9.9 a second trusted hop.
    let mut codes = Vec::new();
    for i in 0..4 {
        let chain = format!("{i}.{i}.{i}.{i}, 203.0.113.7, 10.9.9.9");
        codes.push(send(&h, "GET", "/judge", None, &[("X-Forwarded-For", &chain)]).await.0);
    }
    assert_eq!(codes, [200, 200, 429, 429], "spoofed left entries gave fresh buckets");
    // Another client behind the same proxies has its own bucket; IPv6 by its /64.
    for chain in ["203.0.113.8", "2001:db8:1:2::1", "[2001:db8:1:2::99]:4711"] {
        codes.clear();
        codes.push(send(&h, "GET", "/judge", None, &[("X-Forwarded-For", chain)]).await.0);
    }
    assert_eq!(codes, [200]);
    assert_eq!(send(&h, "GET", "/judge", None, &[("X-Forwarded-For", "2001:db8:1:2::5")]).await.0, 429);

    // Without trusted proxies the headers are ignored: the peer is the client.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg2 = config(&farm, vec![farm.add_list("l2.txt", farm.list_urls())], dir2.path());
    cfg2["api"]["rate_limit_per_ip_per_minute"] = json!(2);
    let h2 = start(&cfg2, dir2.path()).await;
    codes.clear();
    for i in 0..3 {
        codes.push(send(&h2, "GET", "/judge", None, &[("X-Forwarded-For", &format!("198.51.100.{i}"))]).await.0);
    }
    assert_eq!(codes, [200, 200, 429], "X-Forwarded-For was believed from an untrusted peer");

    // The old switch is refused with a message that says what replaced it.
    let mut old = cfg2.clone();
    old["api"]["trust_forwarded_for"] = json!(true);
    let err = proxy_checker::config::Config::from_json(&old.to_string(), "c.json").unwrap_err().to_string();
    assert!(err.contains("api.trust_forwarded_for") && err.contains("api.trusted_proxies"), "{err}");
}

/// `/judge` echoes what a judge must (query, the headers a proxy adds) and never the
/// credentials or cookies the caller sent; it caps its echo and can be turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_hides_credentials_caps_its_echo_and_can_be_off() {
    let farm = small_farm().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["api"]["judge_hide_headers"] = json!(["X-Internal-Token"]);
    let h = start(&cfg, dir.path()).await;
    let secrets = [
        ("Authorization", "Bearer s3cret-authorization"),
        ("Proxy-Authorization", "Basic s3cret-proxy-auth"),
        ("Cookie", "session=s3cret-cookie"),
        ("X-Api-Key", "s3cret-api-key-0123456789"),
        ("X-Internal-Token", "s3cret-internal"),
    ];
    let mut headers: Vec<(&str, &str)> = secrets.to_vec();
    headers.extend([("Via", "1.1 proxy"), ("X-Forwarded-For", "198.51.100.9")]);
    let (status, body) = send(&h, "GET", "/judge?pc_nonce=abc123&api_key=s3cret-query-key", None, &headers).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("s3cret"), "the judge echoed a secret: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["args"]["pc_nonce"], "abc123");
    assert_eq!(v["headers"]["via"], "1.1 proxy");
    assert_eq!(v["headers"]["x-forwarded-for"], "198.51.100.9");
    assert_eq!(v["truncated"], false);

    // Caps: 48 headers, 512 bytes per value, a 2 KiB query.
    let many: Vec<(String, String)> = (0..80).map(|i| (format!("X-Many-{i:02}"), "v".repeat(2000))).collect();
    let many_refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, body) = send(&h, "GET", "/judge", None, &many_refs).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["truncated"], true);
    assert!(v["headers"].as_object().unwrap().len() <= 48);
    assert!(v["headers"].as_object().unwrap().values().all(|s| s.as_str().unwrap().len() <= 512));
    assert!(body.len() < 48 * 600, "{} bytes echoed", body.len());
    let (status, body) = send(&h, "GET", &format!("/judge?q={}", "x".repeat(3000)), None, &[]).await;
    assert_eq!(status, 400, "{body}");

    // Off: 404, like any unknown path.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg2 = config(&farm, vec![farm.add_list("l2.txt", farm.list_urls())], dir2.path());
    cfg2["api"]["judge_enabled"] = json!(false);
    let h2 = start(&cfg2, dir2.path()).await;
    assert_eq!(send(&h2, "GET", "/judge?pc_nonce=abc", None, &[]).await.0, 404);
}

/// `POST /reload` starts at most one round per `api.reload_min_interval_secs`; inside the
/// gap it answers 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rounds_keep_a_minimum_gap() {
    let farm = small_farm().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["api"]["reload_min_interval_secs"] = json!(120);
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let started = h.post_reload().await;
    assert_eq!(started["status"], "started");
    h.wait_round(2).await;
    let r = h.http.post(format!("{}/reload", h.base)).header("X-Api-Key", KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry), "Retry-After: {retry}");
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["limiter"], "reload");
    // The refused request started nothing.
    assert!(h.stat().await["round_in_progress"].is_null());
    assert_eq!(h.stat().await["last_round"]["round_id"], 2);
}

const BIN: &str = env!("CARGO_BIN_EXE_proxy-checker");

/// Runs `serve` on `cfg` with debug logs until `until` appears in them (or the process
/// exits), then stops it; returns every line it wrote (stdout and stderr).
fn serve_logs(cfg: &Value, dir: &std::path::Path, until: &str) -> Vec<String> {
    let path = dir.join("serve.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap(), "--log-level", "debug", "--log-format", "json"])
        .env_remove("PROXY_CHECKER_LOG")
        .env_remove("PROXY_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line.contains(until);
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // What was still in the pipes.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    lines
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in ["SECRETUSER", "SECRETPASS", "SECRETTOKEN", "SECRETKEY", "SECRETFRAG", "hunter2"] {
        assert!(!text.contains(secret), "{what} shows `{secret}`:\n{text}");
    }
}

/// Tokens in a source URL's user part, query or fragment reach no answer, log line,
/// metric or error message; a named source shows its name. A Redis URL is never printed
/// with its password, even when it does not parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_source_and_redis_urls_are_never_shown() {
    let farm = small_farm().await;
    let list = farm.add_list("l.txt", farm.list_urls());
    let with_secrets = |u: &str| {
        let mut u = url::Url::parse(u).unwrap();
        u.set_username("SECRETUSER").unwrap();
        u.set_password(Some("SECRETPASS")).unwrap();
        u.set_query(Some("token=SECRETTOKEN&key=SECRETKEY&format=txt"));
        u.set_fragment(Some("SECRETFRAG"));
        u.to_string()
    };
    // Port 1 (tcpmux): nothing listens there, so the connection is refused.
    let refused = "http://127.0.0.1:1/list.txt".to_string();
    let failing = farm.add_source(
        "500.txt",
        proxy_farm::SourceBody {
            body: std::sync::Arc::new(b"x".to_vec()),
            status: 500,
            gzip: false,
            delay: Duration::ZERO,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = json!({
        "sources": [
            with_secrets(&list),
            with_secrets(&refused),
            with_secrets(&failing),
            {"url": with_secrets(&farm.add_list("named.txt", farm.list_urls())), "name": "my vendor list"},
        ],
        "aggregation": {"interval_secs": 3600, "source_timeout_ms": 3000, "source_retries": 1, "allow_private_sources": true},
        "checker": {"judge_url": farm.judge_url(), "allow_private": true, "timeout_ms": 2000, "connect_timeout_ms": 1000},
        "api": {"listen": "127.0.0.1:0", "api_keys": [KEY], "rate_limit_per_minute": 100000},
        "storage": {"type": "file", "path": dir.path().join("snap.json")},
    });
    let lines = serve_logs(&cfg, dir.path(), "round finished");
    let logs = lines.join("\n");
    assert!(logs.contains("round finished"), "{logs}");
    assert_no_secret("the logs", &logs);
    assert!(logs.contains("source failed"), "the failing sources are logged: {logs}");

    // The same config served in process: its answers.
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let stat = h.stat().await;
    let stat_text = stat.to_string();
    assert_no_secret("/stat", &stat_text);
    let names: Vec<&str> =
        stat["last_round"]["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names[3], "my vendor list");
    assert!(
        names[0].contains("redacted@127.0.0.1") && names[0].contains("token=redacted&key=redacted&format=redacted"),
        "{names:?}"
    );
    let errors: Vec<&str> =
        stat["last_round"]["sources"].as_array().unwrap().iter().filter_map(|s| s["error"].as_str()).collect();
    assert_eq!(errors.len(), 2, "{stat_text}");
    for path in ["/get-proxy?all=1&format=json", "/get-proxy?all=1&format=csv", "/get-proxy?limit=5", "/metrics"] {
        let (status, body) = h.authed(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_no_secret(path, &body);
    }
    let (_, json_pool) = h.authed("/get-proxy?all=1&format=json").await;
    assert!(json_pool.contains("my vendor list") || json_pool.contains("redacted@"), "{json_pool}");
    let on_disk = std::fs::read_to_string(dir.path().join("snap.json")).unwrap();
    assert_no_secret("the persisted snapshot", &on_disk);

    // A Redis URL that does not parse, and one that parses but cannot connect.
    for redis_url in ["redis://:hunter2@127.0.0.1:notaport/0", "redis://user:hunter2@127.0.0.1:1/0"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = json!({
            "sources": [list.clone()],
            "aggregation": {"interval_secs": 3600, "allow_private_sources": true},
            "checker": {"judge_url": farm.judge_url(), "allow_private": true, "timeout_ms": 2000, "connect_timeout_ms": 1000},
            "api": {"listen": "127.0.0.1:0", "api_keys": [KEY]},
            "storage": {"type": "redis", "redis_url": redis_url},
        });
        let lines = serve_logs(&cfg, dir.path(), "persisting the snapshot failed");
        let logs = lines.join("\n");
        assert!(logs.contains("redis"), "{redis_url}: {logs}");
        assert_no_secret(redis_url, &logs);
    }
}

/// The sum of a metric's series whose line starts with `series`.
fn metric_sum(metrics: &str, series: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// `GET /get-proxy` is answered by the server's hot route, before the router; the same
/// request with a body goes through the router. Both must answer alike — status, headers
/// (but the date), bytes — for every key state and query, count in the same metric
/// series, and refuse by the same limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_proxy_answers_alike_by_the_hot_route_and_the_router() {
    let farm = small_farm().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path());
    cfg["api"]["api_keys"] = json!([KEY, "limited-key-0123456789abcdef"]);
    let h = start(&cfg, dir.path()).await;
    h.wait_round(1).await;
    let ask = async |query: &str, key: Option<&str>, body: bool| {
        let mut r = h.http.get(format!("{}/get-proxy{query}", h.base));
        if let Some(k) = key {
            r = r.header("X-Api-Key", k);
        }
        if body {
            r = r.body("x");
        }
        let r = r.send().await.unwrap();
        // Every header but the date (which may tick between the two).
        let mut headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str() != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), headers, retry, r.text().await.unwrap())
    };
    let (mut ok, mut refused) = (0.0, 0.0);
    for query in [
        "",
        "?order=fastest&limit=2",
        "?format=json&order=fastest&limit=3",
        "?format=json&all=1",
        "?format=csv&order=fastest",
        "?format=requests&order=fastest&limit=2",
        "?all=1",
        "?limit=0",
        "?protocol=socks4",
        &format!("?api_key={KEY}&order=fastest"),
    ] {
        for key in [Some(KEY), None, Some("wrong-key-0123456789abcdef")] {
            let mut hot = ask(query, key, false).await;
            let mut routed = ask(query, key, true).await;
            // Round-robin (the default order) moves on by one between the two.
            if !query.contains("order=") && hot.0 == 200 {
                assert_eq!(hot.3.lines().count(), routed.3.lines().count(), "{query}");
                (hot.3, routed.3) = (String::new(), String::new());
                // Another proxy's URL may be another length.
                for h in [&mut hot.1, &mut routed.1] {
                    h.retain(|(k, _)| k != "content-length");
                }
            }
            assert_eq!(hot, routed, "{query} with key {key:?}");
            match hot.0 {
                200 => ok += 2.0,
                401 => refused += 2.0,
                _ => {}
            }
        }
    }
    // The JSON list (its entries rendered once each) holds every live proxy. That its bytes
    // are the router's is checked above; that they are serde's, by
    // `snapshot::tests::entry_json_is_what_serde_writes` (a parse and a re-serialization
    // here could differ in a float's last digit: serde_json's default float parse is not
    // exact).
    let (_, _, _, listed) = ask("?format=json&all=1", Some(KEY), false).await;
    let v: Value = serde_json::from_str(&listed).unwrap();
    let alive = h.stat().await["pool"]["alive"].as_u64();
    assert_eq!(v.as_array().map(|a| a.len() as u64), alive, "{listed}");
    ok += 1.0;
    // Request shapes a library client does not send, written by hand: an absolute-form
    // target (as sent to a proxy), an empty chunked body (which goes to the router), a
    // lower-case key header, the key in the query percent-encoded. All answer as the plain
    // origin-form request does.
    let raw = async |head: &str| {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(h.base.trim_start_matches("http://")).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let status = answer.split(' ').nth(1).unwrap_or_default().to_string();
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    };
    let close = "Host: x\r\nConnection: close\r\n";
    let plain = raw(&format!("GET /get-proxy?order=fastest HTTP/1.1\r\n{close}X-Api-Key: {KEY}\r\n\r\n")).await;
    assert_eq!(plain.0, "200", "{plain:?}");
    let encoded_key: String = KEY.bytes().map(|b| format!("%{b:02X}")).collect();
    for head in [
        format!("GET http://x/get-proxy?order=fastest HTTP/1.1\r\n{close}X-Api-Key: {KEY}\r\n\r\n"),
        format!(
            "GET /get-proxy?order=fastest HTTP/1.1\r\n{close}X-Api-Key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!("GET /get-proxy?order=fastest HTTP/1.1\r\n{close}x-api-key: {KEY}\r\nContent-Length: 0\r\n\r\n"),
        format!("GET /get-proxy?order=fastest&api_key={encoded_key} HTTP/1.1\r\n{close}\r\n"),
    ] {
        assert_eq!(raw(&head).await, plain, "{head:?}");
        ok += 1.0;
    }
    ok += 1.0;
    // HEAD goes through the router: a 200 with the head only.
    let r = h.http.head(format!("{}/get-proxy", h.base)).header("X-Api-Key", KEY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    ok += 1.0;

    let (_, m, _) = h.get("/metrics").await;
    let series = |status: &str| format!("proxychecker_api_requests_total{{route=\"/get-proxy\",status=\"{status}\"}}");
    assert_eq!(metric_sum(&m, &series("200")), ok, "{m}");
    assert_eq!(metric_sum(&m, &series("401")), refused);
    let timed = "proxychecker_api_request_duration_seconds_count{route=\"/get-proxy\"}";
    assert_eq!(metric_sum(&m, timed), metric_sum(&m, "proxychecker_api_requests_total{route=\"/get-proxy\""));

    // The per-key limit refuses alike on both paths, with Retry-After, and is counted.
    cfg["api"]["rate_limit_per_minute"] = json!(2);
    std::fs::write(&h.cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let limited = "limited-key-0123456789abcdef";
    h.until("the config reload", async |h| {
        let (_, m, _) = h.get("/metrics").await;
        metric_sum(&m, "proxychecker_config_reloads_total{result=\"ok\"}") >= 1.0
    })
    .await;
    let mut answers = Vec::new();
    for body in [false, true, false, true] {
        answers.push(ask("?order=fastest", Some(limited), body).await);
    }
    assert_eq!((answers[0].0, answers[1].0), (200, 200), "{answers:?}");
    assert_eq!(answers[2].0, 429, "{answers:?}");
    assert!(answers[2].2.is_some(), "Retry-After on a refusal");
    assert_eq!(answers[2], answers[3], "the hot route refuses as the router does");
    let (_, m, _) = h.get("/metrics").await;
    assert_eq!(metric_sum(&m, "proxychecker_rate_limited_total{limiter=\"key\"}"), 2.0);
    assert_eq!(metric_sum(&m, &series("429")), 2.0);
}
