//! Source fetching and gathering against the farm's list server: caps after decoding,
//! timeouts, retries only for transient failures, files, cross-source dedupe, per-source
//! stats, and hostname resolution under the target guard.

use std::sync::Arc;
use std::time::Duration;

use proxy_checker::check::{CheckSettings, Engine, Mode, Progress, Validation, engine};
use proxy_checker::proxy::Protocol;
use proxy_checker::round::RoundContext;
use proxy_checker::source::{self, FetchSettings, Location, RejectReason, SourceError, SourceSpec};
use proxy_farm::{Farm, FarmSpec, SourceBody};
use tokio_util::sync::CancellationToken;

fn client() -> reqwest::Client {
    source::fetch::client(engine::tls_config(None).unwrap(), true).unwrap()
}

fn spec(url: &str, protocol: Option<Protocol>) -> SourceSpec {
    SourceSpec::new(Location::parse(url).unwrap(), protocol)
}

fn settings() -> FetchSettings {
    FetchSettings {
        timeout: Duration::from_millis(500),
        max_bytes: 1 << 20,
        retries: 1,
        backoff: Duration::from_millis(10),
        max_proxies: 1000,
        allow_private: true,
    }
}

fn body(bytes: Vec<u8>, status: u16, gzip: bool, delay: Duration) -> SourceBody {
    SourceBody { body: Arc::new(bytes), status, gzip, delay }
}

#[tokio::test]
async fn failing_sources_are_reported_and_never_stop_the_others() {
    let farm = Farm::start(FarmSpec::default()).await.unwrap();
    let good = farm.add_list("good.txt", "1.2.3.4:80\n5.6.7.8:3128\n");
    // 40 MiB of zeros, gzip-compressed to ~40 KiB: must stop at the 1 MiB cap.
    let bomb = farm.add_source("bomb.gz", body(vec![b'0'; 40 << 20], 200, true, Duration::ZERO));
    let big = farm.add_source("big.txt", body(vec![b'\n'; 2 << 20], 200, false, Duration::ZERO));
    // Never answers: only the deadline can end it, and nothing else races that deadline.
    let slow = farm.add_source("slow.txt", body(b"1.1.1.1:80\n".to_vec(), 200, false, Duration::from_secs(3600)));
    let e500 = farm.add_source("e500.txt", body(vec![], 500, false, Duration::ZERO));
    let e404 = farm.add_source("e404.txt", body(vec![], 404, false, Duration::ZERO));
    let specs: Vec<_> = [&bomb, &big, &slow, &e500, &e404, &good].iter().map(|u| spec(u, None)).collect();

    // The caps are what must stop the bomb and the big body, however slow the machine: the
    // deadline is a minute (only the silent source reaches it).
    let mut settings = settings();
    settings.timeout = Duration::from_secs(60);
    let mut g = source::gather(&client(), &specs[..2], &settings, false).await;
    settings.timeout = Duration::from_millis(500);
    let rest = source::gather(&client(), &specs[2..], &settings, false).await;
    g.stats.extend(rest.stats);
    g.found.extend(rest.found);
    let errors: Vec<_> = g.stats.iter().map(|s| s.error.clone()).collect();
    assert_eq!(errors[0], Some(SourceError::TooLarge(1 << 20)), "gzip bomb stops at the cap after decoding");
    assert_eq!(errors[1], Some(SourceError::TooLarge(1 << 20)));
    assert_eq!(errors[2], Some(SourceError::Timeout(Duration::from_millis(500))));
    assert_eq!(g.stats[2].attempts, 2);
    assert_eq!(errors[3], Some(SourceError::Status(500)));
    assert_eq!(errors[4], Some(SourceError::Status(404)));
    assert_eq!(errors[5], None);
    assert_eq!(g.found.len(), 2, "the good source's proxies survive");
    // Transient failures are retried once; a 404 or an oversize body is not.
    assert_eq!(farm.source_hits("e500.txt"), 2);
    assert_eq!(farm.source_hits("slow.txt"), 2);
    assert_eq!(farm.source_hits("e404.txt"), 1);
    assert_eq!(farm.source_hits("bomb.gz"), 1);
}

#[tokio::test]
async fn stats_dedupe_and_files() {
    let farm = Farm::start(FarmSpec::default()).await.unwrap();
    let a = farm.add_list(
        "a.txt",
        "1.2.3.4:80\n1.2.3.4:80\nsocks5://5.6.7.8:1080\n10.0.0.1:80\n0.0.0.0:80\nbogus\n9.9.9.9:99999\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.txt");
    // `https` here shares its family with `http` above: a duplicate.
    std::fs::write(&file, "https://1.2.3.4:80\n5.6.7.8:1080\n8.8.4.4:8080\n").unwrap();
    let missing = dir.path().join("missing.txt");
    let specs = vec![
        spec(&a, None),
        spec(file.to_str().unwrap(), Some(Protocol::Socks5)),
        spec(missing.to_str().unwrap(), None),
    ];
    let g = source::gather(&client(), &specs, &settings(), false).await;
    let s = &g.stats;
    assert_eq!((s[0].lines, s[0].valid, s[0].duplicates), (7, 2, 1));
    let reasons = |i: usize| s[i].rejected.iter().map(|(r, n)| (r.as_str(), *n)).collect::<Vec<_>>();
    assert_eq!(
        reasons(0),
        [("invalid_syntax", 1), ("invalid_port", 1), ("unroutable", 1), ("private", 1), ("duplicate", 1)]
    );
    assert_eq!(s[0].samples.iter().find(|r| r.reason == RejectReason::Private).unwrap().line, 4);
    assert_eq!((s[1].lines, s[1].valid, s[1].duplicates), (3, 1, 2), "file source, socks5 default, deduped");
    // A missing file is an error of its own, tried once: no retry can make it appear.
    assert!(matches!(s[2].error, Some(SourceError::File(_))), "{:?}", s[2].error);
    assert_eq!(s[2].attempts, 1);
    assert_eq!((s[0].attempts, s[1].attempts), (1, 1));
    assert!(s[2].name.ends_with("missing.txt"));
    assert_eq!(g.found.len(), 3);
    assert_eq!(g.scraped(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostnames_resolve_once_and_the_guard_applies_to_their_addresses() {
    let farm = Farm::start(FarmSpec::default()).await.unwrap();
    let list = farm.add_list("names.txt", format!("localhost:{}\nno-such-host.invalid:80\n", farm.proxy_port));
    let engine = |allow| {
        let s = CheckSettings {
            mode: Mode::ConnectOnly,
            judges: vec![],
            expect_status: 200,
            validation: Validation::Nonce,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 0,
            backoff: Duration::ZERO,
            concurrency: 10,
            adaptive: false,
            ca_file: None,
            detect_protocol: true,
        };
        RoundContext {
            client: client(),
            engine: Engine::new(s, engine::tls_config(None).unwrap()).unwrap(),
            sources: vec![spec(&list, None)],
            fetch: settings(),
            allow_private: allow,
            resolve_concurrency: 4,
            observer: None,
        }
    };
    let report = engine(true).run(Arc::new(Progress::default()), CancellationToken::new()).await.unwrap();
    assert_eq!(report.unique, 1);
    assert_eq!(report.alive.len(), 1);
    assert_eq!(report.alive[0].candidate.proxy.to_string(), format!("http://localhost:{}", farm.proxy_port));
    assert_eq!(report.sources[0].rejected.get(&RejectReason::Unresolvable), Some(&1));

    // Without allow_private, `localhost` resolves to loopback and is refused.
    let err = engine(false).run(Arc::new(Progress::default()), CancellationToken::new()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no usable source") && msg.contains("private 1") && msg.contains("unresolvable 1"), "{msg}");
}
