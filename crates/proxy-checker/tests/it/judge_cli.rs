//! `proxy-checker judge`: a judge of your own, plain and over TLS, answering the echo the
//! checker calibrates on, without the caller's credentials.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use proxy_checker::check::echo::{self, Carrier};
use proxy_farm::{Farm, FarmSpec};

const BIN: &str = env!("CARGO_BIN_EXE_proxy-checker");

struct Judge(Child);

impl Drop for Judge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `judge` with `extra` arguments on a free port; returns it and its base URL.
fn start(extra: &[&str]) -> (Judge, String) {
    let mut child = Command::new(BIN)
        .args(["judge", "--listen", "127.0.0.1:0", "--log-format", "json", "--hide-header", "X-Secret"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let judge = Judge(child);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if let Some(url) = v["url"].as_str() {
            return (judge, url.to_string());
        }
    }
    panic!("the judge never said where it listens");
}

async fn calibrates(client: &reqwest::Client, url: &str) {
    let (q, h) = ("0a1b2c3d4e5f60718293a4b5", "ffee00112233445566778899");
    let r = client
        .get(format!("{url}?pc_nonce={q}"))
        .header("X-Pc-Nonce", h)
        .header("Authorization", "Bearer s3cret")
        .header("X-Secret", "s3cret-too")
        .header("Via", "1.1 someproxy")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains("s3cret"), "{body}");
    assert!(body.contains("someproxy"), "{body}");
    let c = echo::calibrate(body.as_bytes(), q.as_bytes(), h.as_bytes()).expect("the checker calibrates on it");
    assert_eq!(c.carrier, Carrier::Header);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_of_your_own_plain_and_tls() {
    let plain_client =
        proxy_checker::source::fetch::client(proxy_checker::check::engine::tls_config(None).unwrap(), true).unwrap();
    let (_j, url) = start(&[]);
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/judge"), "{url}");
    calibrates(&plain_client, &url).await;

    // TLS, with the farm's judge certificate (its CA trusted by the client).
    let farm = Farm::start(FarmSpec::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (chain, key) = farm.judge_cert_and_key_pem();
    let (cert_path, key_path, ca_path) =
        (dir.path().join("c.pem"), dir.path().join("k.pem"), dir.path().join("ca.pem"));
    std::fs::write(&cert_path, chain).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&ca_path, farm.ca_pem()).unwrap();
    let (_t, url) = start(&["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let tls_client =
        proxy_checker::source::fetch::client(proxy_checker::check::engine::tls_config(Some(&ca_path)).unwrap(), true)
            .unwrap();
    calibrates(&tls_client, &url).await;

    // A key file that is not a key: exit 2, naming it.
    let out = Command::new(BIN)
        .args(["judge", "--listen", "127.0.0.1:0", "--tls-cert", cert_path.to_str().unwrap(), "--tls-key"])
        .arg(&ca_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ca.pem") && err.contains("no PEM private key"), "{err}");
}
