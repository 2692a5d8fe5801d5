//! The deployment artifacts against the real service: every metric the dashboard and the
//! alerts name is exported; the OpenAPI document lists exactly the routes and parameters
//! the server has; docker-compose's services, ports, volumes and environment match the
//! service's real config keys and variables; the Dockerfile builds what CI builds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxy_checker::api::{GET_PROXY_PARAMS, OPENAPI, ROUTES};
use proxy_checker::config::Config;
use proxy_checker::server::{self, Options, Server};
use yaml_rust2::{Yaml, YamlLoader};

const KEY: &str = "deploy-test-key-0123456789";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

async fn server(dir: &Path) -> Server {
    let cfg = serde_json::json!({
        "sources": [],
        "api": {"listen": "127.0.0.1:0", "api_keys": [KEY]},
        "storage": {"path": dir.join("s.json")},
        "log": {"level": "warn"}
    });
    let config = Config::from_json(&cfg.to_string(), "deploy test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    server::start(config, listener, Options { fd_budget: 100, max_connections: 64, ..Options::default() })
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    proxy_checker::source::fetch::client(proxy_checker::check::engine::tls_config(None).unwrap(), true).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let base = format!("http://{}", s.addr);
    let http = client();
    http.get(format!("{base}/health")).send().await.unwrap();
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    // Series names, plus family names (`# TYPE x histogram` exports x_bucket, x_sum, x_count).
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(t) => t.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .collect();
    let name = regex::Regex::new(r"\b(?:proxychecker|process)_[a-z_]+\b").unwrap();
    for file in [
        "deploy/grafana/dashboards/proxy-checker.json",
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
    ] {
        let body = read(file);
        let used: BTreeSet<&str> = name.find_iter(&body).map(|m| m.as_str()).collect();
        assert!(!used.is_empty(), "{file} names no metric");
        let missing: Vec<_> = used.iter().filter(|m| !exported.contains(*m)).collect();
        assert!(missing.is_empty(), "{file} names metrics the service does not export: {missing:?}");
    }
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/dashboards/proxy-checker.json")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let titles: Vec<String> = panels.iter().map(|p| p["title"].as_str().unwrap().to_lowercase()).collect();
    for topic in [
        "alive proxies",
        "alive percent",
        "checks per second",
        "latency",
        "round duration",
        "api requests",
        "api p99",
        "rate-limited",
        "memory",
        "file descriptors",
        "in-flight",
    ] {
        assert!(titles.iter().any(|t| t.contains(topic)), "no panel about {topic}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_exactly_the_routes_and_parameters() {
    let spec: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    let mut documented = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routes: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, routes);
    let params: BTreeSet<&str> = spec["paths"]["/get-proxy"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, GET_PROXY_PARAMS.iter().copied().collect());

    // Every documented route exists on the real server with a documented status.
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let http = client();
    for (method, path) in ROUTES {
        let url = format!("http://{}{path}", s.addr);
        let req = if *method == "POST" { http.post(url) } else { http.get(url) };
        let r = req.header("X-Api-Key", KEY).send().await.unwrap();
        let status = r.status().as_u16().to_string();
        let op = &spec["paths"][*path][method.to_lowercase()];
        assert!(op["responses"].get(&status).is_some(), "{method} {path} answered {status}, not documented");
    }
    let served: serde_json::Value = serde_json::from_str(
        &http.get(format!("http://{}/openapi.json", s.addr)).send().await.unwrap().text().await.unwrap(),
    )
    .unwrap();
    assert_eq!(served, spec);
    s.shutdown().await;
}

fn yaml(rel: &str) -> Yaml {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")).remove(0)
}

#[test]
fn compose_matches_the_service() {
    let c = yaml("docker-compose.yml");
    let svc = &c["services"]["proxy-checker"];
    // The config it mounts is a valid config with the real keys.
    let volumes: Vec<&str> = svc["volumes"].as_vec().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let cfg_mount = volumes.iter().find(|v| v.contains(":/etc/proxy-checker/config.json")).expect("config mounted");
    let host_path = cfg_mount.split(':').next().unwrap().trim_start_matches("./");
    let config = Config::load(&root().join(host_path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.storage.kind, proxy_checker::config::StorageKind::Redis);
    // The data volume sits where the image's user writes.
    assert!(volumes.iter().any(|v| v.ends_with(":/var/lib/proxy-checker")));
    assert!(read("Dockerfile").contains("WORKDIR /var/lib/proxy-checker"));
    // The published port is the one the config listens on, on all interfaces.
    assert_eq!(config.api.listen.to_string(), "0.0.0.0:8080");
    let ports: Vec<&str> = svc["ports"].as_vec().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(ports, ["8080:8080"]);
    // Every variable is one the binary reads (documented in `serve --help`).
    let help =
        std::process::Command::new(env!("CARGO_BIN_EXE_proxy-checker")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let env = svc["environment"].as_hash().unwrap();
    assert!(!env.is_empty());
    for (k, v) in env {
        let k = k.as_str().unwrap();
        assert!(help.contains(&format!("env: {k}")), "{k} is not a variable the service reads");
        if k == "PROXY_CHECKER_REDIS_URL" {
            let host = url::Url::parse(v.as_str().unwrap()).unwrap().host_str().unwrap().to_string();
            assert!(!c["services"][host.as_str()].is_badvalue(), "Redis host {host} is not a compose service");
        }
    }
    assert_eq!(svc["ulimits"]["nofile"]["soft"].as_i64(), Some(65535));
    assert!(
        svc["healthcheck"]["test"].as_vec().unwrap().iter().any(|t| t.as_str() == Some("http://127.0.0.1:8080/health"))
    );
    // Monitoring profile: files it mounts exist.
    for name in ["prometheus", "grafana"] {
        let s = &c["services"][name];
        assert_eq!(s["profiles"][0].as_str(), Some("monitoring"), "{name}");
        for v in s["volumes"].as_vec().unwrap() {
            let host = v.as_str().unwrap().split(':').next().unwrap().trim_start_matches("./");
            assert!(root().join(host).exists(), "{name} mounts missing {host}");
        }
    }
    let env_example = read("env.example");
    for (k, _) in env {
        assert!(env_example.contains(&format!("{}=", k.as_str().unwrap())), "env.example lacks {k:?}");
    }
}

#[test]
fn dockerfile_builds_what_ci_builds() {
    let build = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("cargo build") && !l.trim_start().starts_with('#'))
            .map(|l| l.trim().trim_start_matches("RUN ").to_string())
            .collect()
    };
    let docker = build(&read("Dockerfile"));
    let ci = build(&read(".ci/run"));
    assert_eq!(docker.len(), 1, "{docker:?}");
    assert!(ci.contains(&docker[0]), "the Dockerfile builds `{}` but .ci/run builds {ci:?}", docker[0]);
    let systemd = read("deploy/systemd/proxy-checker.service");
    for line in [
        "LimitNOFILE=65535",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "StateDirectory=",
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
    ] {
        assert!(systemd.contains(line), "systemd unit lacks {line}");
    }
    let _ = Duration::ZERO;
}
