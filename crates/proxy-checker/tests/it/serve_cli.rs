//! `proxy-checker serve` as a process: JSON logs on stdout, SIGHUP reloads the config,
//! SIGTERM stops it gracefully with exit code 0; `check-config` validates without starting.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol};

use crate::common::HANG_GUARD;

const BIN: &str = env!("CARGO_BIN_EXE_proxy-checker");
const KEY: &str = "serve-cli-key-0123456789";

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig}");
}

/// A child process killed when the test ends, panics included, so a failed test never
/// leaves a server running (holding the test harness's output pipe open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client.get(url).header("X-Api-Key", KEY).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_json_reloads_on_sighup_and_exits_zero_on_sigterm() {
    let farm = Farm::start(FarmSpec { groups: vec![Group::new(5, Protocol::Http, Behavior::Working)] }).await.unwrap();
    let list = farm.add_list("l.txt", farm.list_urls());
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("c.json");
    let cfg = |level: &str, interval: u64| {
        serde_json::json!({
            "sources": [list.clone()],
            "aggregation": {"interval_secs": interval, "allow_private_sources": true},
            "checker": {"judge_url": farm.judge_url(), "allow_private": true, "timeout_ms": 2000, "connect_timeout_ms": 1000},
            "api": {"listen": "127.0.0.1:0", "api_keys": [KEY]},
            "storage": {"type": "sqlite", "path": dir.path().join("p.sqlite3")},
            "log": {"level": level, "format": "json"}
        })
    };
    std::fs::write(&cfg_path, cfg("info", 3600).to_string()).unwrap();
    let out = Command::new(BIN).args(["check-config", cfg_path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut child = Command::new(BIN)
        .args(["serve", "--config", cfg_path.to_str().unwrap()])
        .env_remove("PROXY_CHECKER_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let wait_for = |msg: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no log line `{msg}`"));
            if v["message"].as_str().is_some_and(|m| m.contains(msg)) {
                return v;
            }
        }
    };
    let listening = wait_for("API listening");
    let base = format!("http://{}", listening["addr"].as_str().unwrap());
    let round = wait_for("round finished");
    assert_eq!(round["alive"], 5);
    assert!(round["level"] == "INFO" && round["dead_by_reason"].is_string());

    let client =
        proxy_checker::source::fetch::client(proxy_checker::check::engine::tls_config(None).unwrap(), true).unwrap();
    assert_eq!(get(&client, &format!("{base}/get-proxy?all=1")).await.1.lines().count(), 5);

    // SIGHUP re-reads the file (here: a new interval).
    std::fs::write(&cfg_path, cfg("info", 1800).to_string()).unwrap();
    signal(child.id(), "HUP");
    wait_for("config reloaded");

    signal(child.id(), "TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < HANG_GUARD, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn serve_refuses_a_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    std::fs::write(&p, r#"{"storage": {"type": "mongo"}}"#).unwrap();
    let out = Command::new(BIN).args(["serve", "--config", p.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.type") && err.contains("file, sqlite, redis"), "{err}");
}

/// One key rule for every way a key arrives: the config, `--api-keys`, `PROXY_API_KEY`
/// and the generated key file each refuse a short key and the env.example placeholder,
/// with exit 2 and a message that names where the key came from (never the key).
#[tokio::test]
async fn serve_refuses_a_bad_key_from_every_channel() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |name: &str, extra: &str| {
        let p = dir.path().join(name);
        let body = format!(
            r#"{{"sources": ["l.txt"], "api": {{"listen": "127.0.0.1:0"{extra}}}, "storage": {{"type": "file", "path": "{}"}}}}"#,
            dir.path().join("d/snap.json").display()
        );
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let run = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(BIN);
        c.env_remove("PROXY_API_KEY").args(args);
        if let Some(k) = env {
            c.env("PROXY_API_KEY", k);
        }
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let plain = cfg("plain.json", "");
    for bad in ["short", "change-me-to-a-long-random-key", "a key with spaces in it"] {
        let (code, err) = run(&["serve", "--config", &plain, "--api-keys", &format!("0123456789abcdef,{bad}")], None);
        assert_eq!(code, Some(2), "--api-keys {bad}: {err}");
        assert!(err.contains("--api-keys / PROXY_API_KEY: key 2"), "{err}");
        assert!(!err.contains(bad) || bad.len() < 6, "the key is never printed: {err}");
        let (code, err) = run(&["serve", "--config", &plain], Some(bad));
        assert_eq!(code, Some(2), "PROXY_API_KEY={bad}: {err}");
        let (code, err) = run(&["serve", "--config", &cfg("keyed.json", &format!(r#", "api_keys": ["{bad}"]"#))], None);
        assert_eq!(code, Some(2), "api.api_keys {bad}: {err}");
        assert!(err.contains("api.api_keys[0]"), "{err}");
    }
    // A key file that breaks the rule is refused, not used.
    std::fs::create_dir_all(dir.path().join("d")).unwrap();
    let key_file = dir.path().join("d/api_key");
    std::fs::write(&key_file, "short\n").unwrap();
    let mode = |m| std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
    mode(0o600);
    let (code, err) = run(&["serve", "--config", &plain], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("api_key") && err.contains("at least 16"), "{err}");
    // A good key in a file others may read is refused too: it may have leaked.
    std::fs::write(&key_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    mode(0o644);
    let (code, err) = run(&["serve", "--config", &plain], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("api_key: has mode 0644") && err.contains("chmod 600"), "{err}");
}

/// systemd's protocol, with a fake notify socket: READY once the API listens, WATCHDOG
/// pings within the interval systemd asked for, STOPPING on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_sd_notify_and_pings_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let cfg_path = dir.path().join("c.json");
    let cfg = serde_json::json!({
        "sources": [dir.path().join("empty.txt")],
        "api": {"listen": "127.0.0.1:0", "api_keys": [KEY]},
        "storage": {"path": dir.path().join("s.json")},
        "log": {"level": "warn"}
    });
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    std::fs::write(dir.path().join("empty.txt"), "").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", cfg_path.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.starts_with("READY=1\nSTATUS=serving on 127.0.0.1:"), "{ready}");
    // Pings keep coming (each `recv` is bounded by the socket's read timeout).
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    signal(child.id(), "TERM");
    loop {
        let m = next();
        if m == "STOPPING=1" {
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
