//! Replays every fuzz corpus input and every saved regression input through the same
//! functions the fuzz targets call (`proxy_checker::fuzzing`), so a crash found once
//! stays fixed. Fuzzing itself runs outside the suite: see fuzz/Cargo.toml.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            f(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn parse_list() {
    replay("parse_list", proxy_checker::fuzzing::parse_list);
}

#[test]
fn parse_json() {
    replay("parse_json", proxy_checker::fuzzing::parse_json);
}

#[test]
fn config() {
    replay("config", proxy_checker::fuzzing::config);
}

#[test]
fn http_response() {
    replay("http_response", proxy_checker::fuzzing::http_response);
}

#[test]
fn socks_reply() {
    replay("socks_reply", proxy_checker::fuzzing::socks_reply);
}

#[test]
fn chunked() {
    replay("chunked", proxy_checker::fuzzing::chunked);
}

#[test]
fn http_head() {
    replay("http_head", proxy_checker::fuzzing::http_head);
}

#[test]
fn judge_echo() {
    replay("judge_echo", proxy_checker::fuzzing::judge_echo);
}

#[test]
fn forwarded() {
    replay("forwarded", proxy_checker::fuzzing::forwarded);
}
