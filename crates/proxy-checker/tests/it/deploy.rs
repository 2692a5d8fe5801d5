//! The deployment artifacts against the real service: every metric the dashboard and the
//! alerts name is exported; the OpenAPI document lists exactly the routes and parameters
//! the server has; docker-compose's services, ports, volumes and environment match the
//! service's real config keys and variables; the Dockerfile builds what CI builds.
//! And their defaults are safe: compose publishes on loopback only, has no default
//! password, runs every container without privileges on a read-only root; the build
//! context holds no secret; the systemd unit bounds memory and tasks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    let routes: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
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
    for route in ROUTES {
        let (method, path) = (&route.method, &route.path);
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
    // The published container port is the one the config listens on, on every interface of
    // the container (Docker forwards to it); the host side is loopback
    // (`compose_publishes_ports_on_loopback_only_by_default`).
    assert_eq!(config.api.listen.to_string(), "0.0.0.0:8080");
    let ports: Vec<&str> = svc["ports"].as_vec().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(ports.len() == 1 && ports[0].ends_with(":8080:8080"), "{ports:?}");
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
    // Monitoring profile: files it mounts exist, volumes it mounts are declared.
    for name in ["prometheus", "grafana"] {
        let s = &c["services"][name];
        assert_eq!(s["profiles"][0].as_str(), Some("monitoring"), "{name}");
        for v in s["volumes"].as_vec().unwrap() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            match host.strip_prefix("./") {
                Some(path) => assert!(root().join(path).exists(), "{name} mounts missing {path}"),
                None => assert!(!c["volumes"][host].is_badvalue(), "{name} mounts undeclared volume {host}"),
            }
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

/// Compose's interpolation of one value: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?error}` and `${VAR?error}` (not nested). `Err` is the error
/// compose stops with.
fn interpolate(s: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let get = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let name_len = |s: &str| s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let (expr, after) = (&r[..end], &r[end + 1..]);
            rest = after;
            let (name, op) = expr.split_at(name_len(expr));
            let (value, set) = (get(name), get(name).is_some_and(|v| !v.is_empty()));
            let v = if op.is_empty() {
                value.unwrap_or("")
            } else if let Some(default) = op.strip_prefix(":-") {
                if set { value.unwrap_or_default() } else { default }
            } else if let Some(default) = op.strip_prefix('-') {
                value.unwrap_or(default)
            } else if let Some(error) = op.strip_prefix(":?") {
                value.filter(|_| set).ok_or_else(|| format!("required variable {name} is missing a value: {error}"))?
            } else if let Some(error) = op.strip_prefix('?') {
                value.ok_or_else(|| format!("required variable {name} is missing a value: {error}"))?
            } else {
                return Err(format!("unsupported ${{{expr}}}"));
            };
            out.push_str(v);
        } else {
            let (name, after) = rest.split_at(name_len(rest));
            out.push_str(get(name).unwrap_or(""));
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolated(y: &Yaml, env: &[(&str, &str)]) -> Result<Yaml, String> {
    Ok(match y {
        Yaml::String(s) => Yaml::String(interpolate(s, env)?),
        Yaml::Array(a) => Yaml::Array(a.iter().map(|v| interpolated(v, env)).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            Yaml::Hash(h.iter().map(|(k, v)| Ok((k.clone(), interpolated(v, env)?))).collect::<Result<_, String>>()?)
        }
        other => other.clone(),
    })
}

/// docker-compose.yml as compose reads it with only these variables set (and no `.env`).
/// Like compose, it interpolates every service, whether its profile is active or not.
fn compose_with(env: &[(&str, &str)]) -> Result<Yaml, String> {
    interpolated(&yaml("docker-compose.yml"), env)
}

fn strings(y: &Yaml) -> Vec<&str> {
    y.as_vec().map_or_else(Vec::new, |v| v.iter().map(|s| s.as_str().expect("a string")).collect())
}

#[test]
fn compose_publishes_ports_on_loopback_only_by_default() {
    // (service, host address) of every published port.
    let published = |env: &[(&str, &str)]| -> Vec<(String, String)> {
        let c = compose_with(env).unwrap();
        let mut out = Vec::new();
        for (name, svc) in c["services"].as_hash().unwrap() {
            let name = name.as_str().unwrap();
            assert_ne!(svc["network_mode"].as_str(), Some("host"), "{name} uses the host's network");
            for p in svc["ports"].as_vec().map_or(&[][..], Vec::as_slice) {
                let ip = match p {
                    // [ip:]host:container[/protocol]; without the address Docker publishes on
                    // every interface (and past host firewalls such as ufw).
                    Yaml::String(s) => {
                        let parts: Vec<&str> = s.rsplitn(3, ':').collect();
                        assert_eq!(parts.len(), 3, "{name} publishes {s:?} on every interface");
                        parts[2].to_string()
                    }
                    Yaml::Hash(_) => p["host_ip"].as_str().unwrap_or("0.0.0.0").to_string(),
                    other => panic!("{name} publishes {other:?} on every interface"),
                };
                out.push((name.to_string(), ip));
            }
        }
        out
    };
    let default = published(&[("PROXY_API_KEY", KEY)]);
    let services: BTreeSet<&str> = default.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(services, BTreeSet::from(["proxy-checker", "prometheus", "grafana"]));
    for (service, ip) in &default {
        assert_eq!(ip, "127.0.0.1", "{service} is published beyond this machine by default");
    }
    // Publishing the API further is a deliberate, documented setting; the rest stays local.
    for (service, ip) in published(&[("PROXY_API_KEY", KEY), ("PROXY_CHECKER_BIND", "10.1.2.3")]) {
        assert_eq!(ip, if service == "proxy-checker" { "10.1.2.3" } else { "127.0.0.1" }, "{service}");
    }
    assert!(read("env.example").contains("PROXY_CHECKER_BIND="));
    assert!(read("docker-compose.yml").contains("reverse proxy"), "say how to publish on purpose");
}

#[test]
fn grafana_admin_password_comes_from_the_environment() {
    // Without the monitoring profile nothing more than the API key is required: compose
    // interpolates every service even when its profile is off, so a `${VAR:?}` for Grafana
    // would stop a plain `docker compose up` as well.
    let c = compose_with(&[("PROXY_API_KEY", KEY)]).expect("the default profile needs only PROXY_API_KEY");
    let grafana = &c["services"]["grafana"];
    assert_eq!(grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].as_str(), Some(""), "a default password");
    let set = compose_with(&[("PROXY_API_KEY", KEY), ("GRAFANA_ADMIN_PASSWORD", "Xq7-generated")]).unwrap();
    assert_eq!(set["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].as_str(), Some("Xq7-generated"));
    assert!(read("env.example").lines().any(|l| l.starts_with("GRAFANA_ADMIN_PASSWORD=")), "env.example lacks it");
    // No service carries a well-known password.
    for (name, svc) in c["services"].as_hash().unwrap() {
        for (k, v) in svc["environment"].as_hash().into_iter().flatten() {
            let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap_or_default());
            if k.contains("PASSWORD") {
                assert!(!["admin", "password", "changeme"].contains(&v), "{}: {k}={v}", name.as_str().unwrap());
            }
        }
    }
    // Grafana refuses to start while the password is empty or `admin`: its entrypoint, as
    // compose hands it to the container (`$$` already turned into `$`), run here.
    let entrypoint = strings(&grafana["entrypoint"]);
    assert_eq!(entrypoint[..2], ["/bin/sh", "-c"], "{entrypoint:?}");
    for (password, refused) in [("", true), ("admin", true), ("Xq7-generated", false)] {
        let out = Command::new(entrypoint[0])
            .args(&entrypoint[1..])
            .env_clear()
            .env("GF_SECURITY_ADMIN_PASSWORD", password)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stderr.contains("set GRAFANA_ADMIN_PASSWORD");
        if refused {
            assert!(out.status.code() == Some(1) && said, "password {password:?}: {:?} {stderr}", out.status);
        } else {
            // It goes on to exec Grafana's /run.sh (absent here).
            assert!(out.status.code() != Some(1) && !said, "password {password:?}: {:?} {stderr}", out.status);
        }
    }
}

/// `.dockerignore` (anchored at the root) or `.gitignore` (a pattern without a slash
/// matches at any depth) rules as (negated, regex); a rule matching a path or any of its
/// parent directories decides, the last one winning.
fn ignore_rules(text: &str, dockerignore: bool) -> Vec<(bool, regex::Regex)> {
    let mut rules = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (negated, pattern) = line.strip_prefix('!').map_or((false, line), |p| (true, p));
        let pattern = pattern.trim_end_matches('/');
        let anchored = dockerignore || pattern.contains('/');
        let mut re = String::from(if anchored { "^" } else { "^(?:.*/)?" });
        let mut chars = pattern.trim_start_matches('/').chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    re.push_str(if chars.next_if_eq(&'/').is_some() { "(?:.*/)?" } else { ".*" });
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        rules.push((negated, regex::Regex::new(&re).unwrap()));
    }
    rules
}

fn ignored(rules: &[(bool, regex::Regex)], path: &str) -> bool {
    let prefixes: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).chain([path]).collect();
    let mut ignored = false;
    for (negated, re) in rules {
        if prefixes.iter().any(|p| re.is_match(p)) {
            ignored = !negated;
        }
    }
    ignored
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files_under(&path, out) } else { out.push(path) }
    }
}

#[test]
fn dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() {
    let docker = ignore_rules(&read(".dockerignore"), true);
    for path in [
        ".env",
        "deploy/.env",
        "api_key",
        "data/api_key",
        "data/proxies.sqlite3",
        "data/proxies.sqlite3-wal",
        "proxies.sqlite3",
        ".git/config",
        "target/release/proxy-checker",
        "fuzz/target/release/parse",
        "bench-out/report.json",
    ] {
        assert!(ignored(&docker, path), ".dockerignore lets {path} into the build context");
    }
    // What the build reads stays in: the workspace manifests and lock, every member's
    // sources and the files they include at compile time, and what the Dockerfile COPYs.
    let root = std::fs::canonicalize(root()).unwrap();
    let mut needed: Vec<PathBuf> = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    let cargo = read("Cargo.toml");
    let members = cargo.lines().find(|l| l.starts_with("members")).expect("a workspace");
    let members = members[members.find('[').unwrap() + 1..members.rfind(']').unwrap()]
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty());
    let include = regex::Regex::new(r#"include_(?:str|bytes)!\("([^"]+)"\)"#).unwrap();
    for member in members {
        needed.push(root.join(member).join("Cargo.toml"));
        let mut sources = Vec::new();
        files_under(&root.join(member).join("src"), &mut sources);
        for file in &sources {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for m in include.captures_iter(&text) {
                needed.push(std::fs::canonicalize(file.parent().unwrap().join(&m[1])).unwrap());
            }
        }
        needed.extend(sources);
    }
    let dockerfile = read("Dockerfile");
    let copies: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .filter(|args| !args.contains("--from="))
        .flat_map(|args| {
            let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    assert!(copies.contains(&"."), "the Dockerfile no longer copies the context: update this test");
    needed.extend(copies.iter().filter(|c| **c != ".").map(|c| root.join(c)));
    for path in needed {
        assert!(path.exists(), "{} is missing", path.display());
        let rel = path.strip_prefix(&root).unwrap().to_str().unwrap();
        assert!(!ignored(&docker, rel), ".dockerignore excludes {rel}, which the build needs");
    }
    // git keeps the same secrets out of commits.
    let git = ignore_rules(&read(".gitignore"), false);
    for path in [".env", "api_key", "data/api_key", "proxies.sqlite3", "target/debug/proxy-checker"] {
        assert!(ignored(&git, path), ".gitignore lets {path} be committed");
    }
}

#[test]
fn compose_containers_run_unprivileged_on_read_only_roots() {
    let c = compose_with(&[("PROXY_API_KEY", KEY)]).unwrap();
    // Where each service may write: its named volumes and tmpfs mounts, nothing else.
    let writable: [(&str, &[&str]); 4] = [
        ("proxy-checker", &["/var/lib/proxy-checker"]),
        ("redis", &["/data"]),
        ("prometheus", &["/prometheus"]),
        ("grafana", &["/var/lib/grafana", "/tmp"]),
    ];
    assert_eq!(c["services"].as_hash().unwrap().len(), writable.len(), "a new service: say where it writes");
    for (name, paths) in writable {
        let s = &c["services"][name];
        assert_eq!(s["read_only"].as_bool(), Some(true), "{name}: writable root filesystem");
        assert!(strings(&s["security_opt"]).contains(&"no-new-privileges:true"), "{name}: no no-new-privileges");
        assert_eq!(strings(&s["cap_drop"]), ["ALL"], "{name}: keeps capabilities");
        assert!(s["cap_add"].is_badvalue(), "{name} adds capabilities");
        assert_ne!(s["privileged"].as_bool(), Some(true), "{name} is privileged");
        let user = s["user"].as_str().unwrap_or_default();
        assert!(!["0", "root"].contains(&user.split(':').next().unwrap()), "{name} runs as root");
        let volumes = strings(&s["volumes"]);
        let tmpfs = strings(&s["tmpfs"]);
        for path in paths {
            let mount = volumes.iter().find(|v| v.split(':').nth(1) == Some(path));
            match mount {
                Some(v) => {
                    let source = v.split(':').next().unwrap();
                    assert!(!c["volumes"][source].is_badvalue(), "{name}: {path} is not a declared named volume");
                    assert!(!v.ends_with(":ro"), "{name}: {path} is read-only");
                }
                None => {
                    assert!(tmpfs.iter().any(|t| t.split(':').next() == Some(path)), "{name}: {path} is not writable")
                }
            }
        }
    }
    // Redis starts as its own user (uid 999, gid 1000 in the alpine image): started as
    // root, its entrypoint would chown /data and switch users, which needs capabilities.
    assert_eq!(c["services"]["redis"]["user"].as_str(), Some("999:1000"));
    // proxy-checker runs as the image's own user.
    assert!(c["services"]["proxy-checker"]["user"].is_badvalue());
    assert!(read("Dockerfile").contains("\nUSER proxy-checker\n"));
}

#[test]
fn systemd_unit_bounds_memory_and_tasks() {
    let unit = read("deploy/systemd/proxy-checker.service");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("systemd unit lacks {key}="))
    };
    let bytes = |v: &str| -> u64 {
        let (n, suffix) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
        n.parse::<u64>().unwrap()
            << match suffix {
                "K" => 10,
                "M" => 20,
                "G" => 30,
                _ => panic!("{v}: give MemoryHigh/MemoryMax in K, M or G"),
            }
    };
    const MIB: u64 = 1 << 20;
    // docs/BENCHMARKS.md: peak RSS ~80 MiB with 19,000 checks in flight, ~190 MiB for a
    // round of 1M candidates. Throttling starts well above that; the hard stop above it.
    let (high, max) = (bytes(setting("MemoryHigh")), bytes(setting("MemoryMax")));
    assert!(high >= 2 * 190 * MIB, "MemoryHigh {high} would throttle a measured round");
    assert!(max > high && max <= 4096 * MIB, "MemoryMax {max} vs MemoryHigh {high}");
    // Two tokio runtimes, each with tokio's default blocking pool of up to 512 threads (the
    // service does not lower it), plus a worker per core for each and the main thread.
    let tasks: u64 = setting("TasksMax").parse().expect("TasksMax as a number");
    assert!(tasks > 2 * (512 + 64), "TasksMax={tasks} leaves no room for the blocking pools");
}
