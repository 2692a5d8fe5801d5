//! Every URL `/get-proxy` serves works in a client as given: curl fetches the judge through
//! each one — plain HTTP through forwarding proxies, HTTPS through tunnelling ones, both
//! through SOCKS — with credentials, in the `text`, `curl` and `requests` formats, and with
//! `dns=remote`.

use std::process::Command;

use proxy_farm::{Behavior, Farm, FarmSpec, Group, Protocol};
use serde_json::Value;

use crate::common::*;

/// curl fetches `target` through `proxy_args` (`-x URL`); returns whether it got the judge.
fn curl(proxy_args: &[&str], target: &str, ca: &std::path::Path) -> Result<(), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args(proxy_args)
        .arg(target)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let body = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && body.contains("\"origin\"") {
        Ok(())
    } else {
        Err(format!("{proxy_args:?} → {target}: {} {body} {}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_url_works_in_curl_as_given() {
    let farm = Farm::start(FarmSpec {
        groups: vec![
            Group::new(2, Protocol::Http, Behavior::Working),
            // Listed `https://` (tunnels): served as `http://`.
            Group::new(2, Protocol::Https, Behavior::Working),
            Group::new(1, Protocol::Http, Behavior::ForwardOnly),
            Group::new(1, Protocol::Http, Behavior::TunnelOnly),
            Group::new(1, Protocol::Http, Behavior::AuthGood),
            Group::new(2, Protocol::Socks4, Behavior::Working),
            Group::new(2, Protocol::Socks5, Behavior::Working),
            Group::new(1, Protocol::Socks5, Behavior::AuthGood),
        ],
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, farm.ca_pem()).unwrap();
    let h = start(&config(&farm, vec![farm.add_list("l.txt", farm.list_urls())], dir.path()), dir.path()).await;
    h.wait_round(1).await;
    let (http_judge, https_judge) = (farm.judge_url(), farm.judge_tls_url());

    let mut tried = 0;
    let mut failed = Vec::new();
    // `protocol=http`: forwarding proxies, plain HTTP; `https`: tunnelling ones, HTTPS.
    for (selector, target) in
        [("http", &http_judge), ("https", &https_judge), ("socks4", &http_judge), ("socks5", &https_judge)]
    {
        for dns in ["local", "remote"] {
            let (s, text) = h.authed(&format!("/get-proxy?all=1&protocol={selector}&dns={dns}")).await;
            assert_eq!(s, 200, "{selector}: {text}");
            for url in text.lines() {
                assert!(!url.starts_with("https://"), "an HTTP proxy served as https: {url}");
                if dns == "remote" && selector.starts_with("socks") {
                    assert!(url.starts_with("socks5h://") || url.starts_with("socks4a://"), "{url}");
                }
                tried += 1;
                if let Err(e) = curl(&["-x", url], target, &ca) {
                    failed.push(e);
                }
            }
        }
        // The `curl` format is arguments to paste.
        let (_, lines) = h.authed(&format!("/get-proxy?all=1&protocol={selector}&format=curl")).await;
        for line in lines.lines() {
            let args: Vec<&str> = line.split(' ').collect();
            assert_eq!(args.first(), Some(&"-x"), "{line}");
            tried += 1;
            if let Err(e) = curl(&args, target, &ca) {
                failed.push(e);
            }
        }
        // The `requests` format: the URL for each scheme of the target.
        let (_, body) = h.authed(&format!("/get-proxy?all=1&protocol={selector}&format=requests")).await;
        let all: Vec<Value> = serde_json::from_str(&body).unwrap();
        for p in &all {
            let url = p[if target.starts_with("https") { "https" } else { "http" }].as_str().unwrap();
            tried += 1;
            if let Err(e) = curl(&["-x", url], target, &ca) {
                failed.push(e);
            }
        }
    }
    assert!(failed.is_empty(), "{} of {tried} URLs failed in curl:\n{}", failed.len(), failed.join("\n"));
    // Every working proxy was among them: 4 + 1 forward-only … (each selector × formats).
    assert!(tried >= 40, "only {tried} URLs tried");
    // With credentials, in the URL.
    let (_, all) = h.authed("/get-proxy?all=1").await;
    assert!(all.lines().any(|u| u.starts_with("http://user") && u.contains(":pass")), "{all}");
    assert!(all.lines().any(|u| u.starts_with("socks5://user")), "{all}");
}
