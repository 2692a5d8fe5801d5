//! The `proxy-checker` binary end to end: sources in every format from the farm, output
//! formats, exit codes and one-line causes, and the fd-exhaustion proof (a child with a
//! tiny `RLIMIT_NOFILE` checks more proxies than it has descriptors and loses none).

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol, SourceBody};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-checker");

async fn run(args: &[&str]) -> Output {
    run_with(None, args).await
}

async fn run_with(prefix: Option<&[&str]>, args: &[&str]) -> Output {
    let mut cmd = match prefix {
        Some(p) => {
            let mut c = tokio::process::Command::new(p[0]);
            c.args(&p[1..]).arg(BIN);
            c
        }
        None => tokio::process::Command::new(BIN),
    };
    let out = cmd.args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(120), out).await.expect("check finished").expect("spawned")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mixed_farm() -> FarmSpec {
    let mut groups = Vec::new();
    for p in [Protocol::Http, Protocol::Socks4, Protocol::Socks5] {
        for b in [Behavior::Working, Behavior::WrongPage, Behavior::Refused, Behavior::AuthGood, Behavior::AuthBad] {
            groups.push(Group::new(4, p, b));
        }
    }
    FarmSpec { groups }
}

/// Lays the farm's proxies out over sources of every format: scheme URLs, bare lines of a
/// declared protocol, JSON objects, an HTML table, and a gzip-encoded copy (all duplicates).
fn publish(farm: &Farm) -> Vec<String> {
    let all: Vec<_> = farm.proxies().collect();
    let mut urls_list = String::from("# scheme URLs\r\n\r\n");
    let mut bare_socks5 = String::new();
    let mut json = Vec::new();
    let mut html = String::from("<html><body><table>\n");
    for (i, p) in all.iter().enumerate() {
        match (i % 4, p.protocol, &p.credentials) {
            (1, Protocol::Socks5, None) => bare_socks5.push_str(&format!("  {}   BR 12ms\n", p.addr())),
            (2, _, creds) => json.push(serde_json::json!({
                "ip": p.ip.to_string(), "port": p.port, "protocol": p.protocol.scheme(),
                "username": creds.as_ref().map(|c| c.0.clone()), "password": creds.as_ref().map(|c| c.1.clone()),
            })),
            (3, Protocol::Http, None) => html.push_str(&format!("<tr><td>{}</td><td>{}</td></tr>\n", p.ip, p.port)),
            _ => urls_list.push_str(&format!("{}\n", p.url())),
        }
    }
    html.push_str("</table></body></html>\n");
    bare_socks5.push_str("not-a-proxy\n1.2.3.4:0\n");
    vec![
        farm.add_list("urls.txt", urls_list),
        format!("socks5={}", farm.add_list("bare.txt", bare_socks5)),
        farm.add_list("list.json", serde_json::to_vec(&json).unwrap()),
        farm.add_list("page.html", html),
        farm.add_source(
            "copy.gz",
            SourceBody {
                body: Arc::new(farm.list_urls().into_bytes()),
                status: 200,
                gzip: true,
                delay: Duration::ZERO,
            },
        ),
    ]
}

fn common<'a>(farm_judge: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["check", "--quiet", "--allow-private", "--judge-url", farm_judge];
    v.extend_from_slice(&["--timeout-ms", "2000", "--connect-timeout-ms", "1000", "--retries", "1"]);
    v.extend_from_slice(extra);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_format_checked_and_written_as_json() {
    let farm = Farm::start(mixed_farm()).await.unwrap();
    let sources = publish(&farm);
    let judge = farm.judge_url();
    let mut args = common(&judge, &["--format", "json"]);
    for s in &sources {
        args.extend(["--source", s.as_str()]);
    }
    let out = run(&args).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let got: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json output");
    let got_set: BTreeSet<String> = got.iter().map(|v| v["proxy"].as_str().unwrap().to_string()).collect();
    let want: BTreeSet<String> = farm
        .proxies()
        .filter(|p| proxy_farm::expect(p.protocol, p.behavior, true, false).alive)
        .map(|p| format!("{}://{}", p.protocol.client_scheme(), p.addr()))
        .collect();
    assert_eq!(got_set, want);
    assert_eq!(got.len(), want.len(), "no duplicates in the output");
    for v in &got {
        for key in ["proxy", "protocol", "host", "port", "latency_ms", "connect_ms", "anonymity", "exit_ip"] {
            assert!(!v[key].is_null(), "{key} missing in {v}");
        }
        let p =
            farm.proxies().find(|p| format!("{}://{}", p.protocol.client_scheme(), p.addr()) == v["proxy"]).unwrap();
        assert_eq!(v["anonymity"], proxy_farm::expect(p.protocol, p.behavior, true, false).anonymity, "{v}");
        assert_eq!(v["exit_ip"], v["host"], "{v}");
    }
    let latencies: Vec<u64> = got.iter().map(|v| v["latency_ms"].as_u64().unwrap()).collect();
    assert!(latencies.windows(2).all(|w| w[0] <= w[1]), "fastest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_csv_output_and_summary() {
    let farm = Farm::start(mixed_farm()).await.unwrap();
    let list = farm.add_list("all.txt", farm.list_urls());
    let judge = farm.judge_url();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("alive.csv");
    let out_path = out_file.to_str().unwrap();
    let mut args = common(&judge, &["--source", &list, "--format", "csv", "--output", out_path]);
    args.retain(|a| *a != "--quiet");
    let out = run(&args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = std::fs::read_to_string(&out_file).unwrap();
    let alive = farm.proxies().filter(|p| proxy_farm::expect(p.protocol, p.behavior, true, false).alive).count();
    assert_eq!(csv.lines().count(), alive + 1);
    assert!(csv.starts_with("proxy,protocol,host,port,latency_ms,connect_ms"));
    let err = text(&out.stderr);
    for want in ["alive", "content_mismatch", "connect_refused", "proxy_auth_failed", "all.txt"] {
        assert!(err.contains(want), "summary lacks {want}:\n{err}");
    }

    let out = run(&common(&judge, &["--source", &list])).await;
    let lines: Vec<_> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), alive);
    assert!(lines.iter().all(|l| l.contains("://") && !l.contains('@')), "credentials never printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_nonzero_with_one_line_cause() {
    let farm = Farm::start(mixed_farm()).await.unwrap();
    let judge = farm.judge_url();
    let list = farm.add_list("all.txt", farm.list_urls());
    let missing = format!("{}-missing", list);

    // No usable source: 3, naming the source and its failure.
    let out = run(&common(&judge, &["--source", &missing])).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("no usable source") && err.contains("404"), "{err}");

    // A broken source does not stop the others.
    let out = run(&common(&judge, &["--source", &missing, "--source", &list])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!out.stdout.is_empty());

    // Judge down: 4, and no output.
    farm.set_judge_down(true);
    let out = run(&common(&judge, &["--source", &list])).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("judge"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    farm.set_judge_down(false);

    // Bad config: 2, naming the field.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.json");
    std::fs::write(&cfg, r#"{"checker": {"mode": "fast"}}"#).unwrap();
    let out = run(&["check", "--config", cfg.to_str().unwrap(), "--source", &list]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("checker.mode") && err.contains("connect-only, full-http"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let out = run(&["check-config", cfg.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["check", "--source", &list, "--timeout-ms", "1"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("checker.timeout_ms"));
}

/// The proof that a local failure is never a dead verdict: the child may open only 128
/// descriptors, keeps no reserve, and is asked for 2,000 concurrent checks of proxies that
/// each hold their answer for 200 ms. EMFILE must happen, and every proxy must still be
/// found alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_exhaustion_requeues_and_judges_no_one_dead() {
    let spec = FarmSpec {
        groups: vec![
            Group::new(1500, Protocol::Http, Behavior::Working).latency(Duration::from_millis(200)),
            Group::new(500, Protocol::Socks5, Behavior::Working).latency(Duration::from_millis(200)),
        ],
    };
    let farm = Farm::start(spec).await.unwrap();
    let list = farm.add_list("all.txt", farm.list_urls());
    let judge = farm.judge_url();
    let mut args = common(&judge, &["--source", &list, "--concurrency", "2000", "--fd-reserve", "0"]);
    args.retain(|a| *a != "--quiet");
    // No retries: a dead verdict could not hide behind a second attempt.
    let r = args.iter().position(|a| *a == "--retries").unwrap();
    args[r + 1] = "0";
    let out = run_with(Some(&["prlimit", "--nofile=128:128", "--"]), &args).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout).lines().count(), 2000, "every proxy alive:\n{err}");
    let requeues: u64 = err
        .split(" local requeues")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no requeue count in:\n{err}"));
    assert!(requeues > 0, "the test must actually exhaust descriptors:\n{err}");
    assert!(err.contains("clamped from 2000 by the fd limit 128"), "{err}");
}

/// Logs for machines when piped (JSON lines, no colour), for humans on a terminal (text,
/// colour), and as asked with `--log-format`; `--log` is an alias of `--log-level`.
#[test]
fn log_format_follows_the_terminal_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let base = ["check", "--mode", "connect-only", "--source", missing.to_str().unwrap(), "--quiet"];
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(BIN).args(base).args(extra).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "no usable source");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let piped = run(&["--log-level", "warn"]);
    let line = piped.lines().find(|l| l.contains("source failed")).unwrap_or_else(|| panic!("{piped}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "WARN");
    assert!(!piped.contains('\x1b'), "{piped}");
    let text = run(&["--log", "warn", "--log-format", "text"]);
    assert!(text.lines().any(|l| l.contains("WARN") && l.contains("source failed") && !l.starts_with('{')), "{text}");
    assert!(!text.contains('\x1b'), "no colour off a terminal: {text}");

    // On a terminal (a pty from `script`): text with colour.
    let cmd = format!("{BIN} {} --log-level warn", base.join(" "));
    let out = std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("source failed") && tty.contains('\x1b'), "{tty}");
    assert!(!tty.lines().any(|l| l.trim_start().starts_with('{')), "{tty}");
}

/// `--output-dir`: one list per protocol and capability, fastest first, and the JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_dir_writes_a_list_per_protocol() {
    let spec = FarmSpec {
        groups: vec![
            Group::new(3, Protocol::Http, Behavior::Working),
            Group::new(2, Protocol::Http, Behavior::ForwardOnly),
            Group::new(2, Protocol::Http, Behavior::TunnelOnly),
            Group::new(2, Protocol::Socks4, Behavior::Working),
            Group::new(2, Protocol::Socks5, Behavior::Working),
            Group::new(3, Protocol::Http, Behavior::Refused),
        ],
    };
    let farm = Farm::start(spec).await.unwrap();
    let list = farm.add_list("l.txt", farm.list_urls());
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let judge = farm.judge_url();
    let out = run(&[
        "check",
        "--allow-private",
        "--judge-url",
        &judge,
        "--source",
        &list,
        "--quiet",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "the lists go to the directory only");
    let read = |name: &str| -> Vec<String> {
        std::fs::read_to_string(out_dir.join(name)).unwrap().lines().map(str::to_string).collect()
    };
    let of = |b: Behavior, p: Protocol| -> BTreeSet<String> {
        farm.proxies()
            .filter(|x| x.behavior == b && x.protocol == p)
            .map(|x| format!("{}://{}", p.client_scheme(), x.addr()))
            .collect()
    };
    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    let http_working = of(Behavior::Working, Protocol::Http);
    let forward: BTreeSet<_> = http_working.union(&of(Behavior::ForwardOnly, Protocol::Http)).cloned().collect();
    let tunnel: BTreeSet<_> = http_working.union(&of(Behavior::TunnelOnly, Protocol::Http)).cloned().collect();
    assert_eq!(set(read("http.txt")), forward);
    assert_eq!(set(read("https.txt")), tunnel);
    assert_eq!(set(read("socks4.txt")), of(Behavior::Working, Protocol::Socks4));
    assert_eq!(set(read("socks5.txt")), of(Behavior::Working, Protocol::Socks5));
    let all = read("all.txt");
    assert_eq!(all.len(), 11);
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("proxies.json")).unwrap()).unwrap();
    let latencies: Vec<u64> = json.iter().map(|p| p["latency_ms"].as_u64().unwrap()).collect();
    assert!(latencies.windows(2).all(|w| w[0] <= w[1]), "fastest first: {latencies:?}");
    assert_eq!(json.iter().map(|p| p["proxy"].as_str().unwrap().to_string()).collect::<Vec<_>>(), all);
}
