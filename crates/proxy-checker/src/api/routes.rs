//! The handlers. Each reads one snapshot (`ArcSwap::load`) and answers from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::{ApiError, AppState};
use crate::history::Key;
use crate::service::{Phase, ReloadOutcome, ReportOutcome};
use crate::snapshot::{Filter, Selector, Snapshot, unix};

/// 200 `ok` unless the service has a fault (the scheduler stopped, a round stalled).
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.service.fault() {
        None => "ok".into_response(),
        Some(fault) => ApiError::Unhealthy(fault).into_response(),
    }
}

/// What `/ready` says before the first good round.
const NOT_READY: &str = "no snapshot yet: no round has succeeded so far (GET /stat with a key says why)";

/// 200 once a snapshot is served and while the service is healthy.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.service.fault() {
        Some(fault) => ApiError::Unhealthy(fault).into_response(),
        None if state.service.is_ready() => (StatusCode::OK, "ready").into_response(),
        // A fixed text: this probe needs no key, and why rounds fail may name sources or
        // hosts (`/stat` and `/get-proxy`, with a key, say it).
        None => ApiError::NotReady(NOT_READY.to_string()).into_response(),
    }
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "not_found", "message": "no such endpoint: see /openapi.json"})),
    )
        .into_response()
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.service.refresh_gauges();
    state.service.metrics.rate_limiter_clients.set(state.guard.load().tracked_ips() as i64);
    let m = &state.service.metrics;
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    m.runtime_alive_tasks.with_label_values(&["api"]).set(tasks as i64);
    if let Some(checker) = m.checker_runtime.get() {
        m.runtime_alive_tasks.with_label_values(&["checker"]).set(checker.metrics().num_alive_tasks() as i64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.service.metrics.render()).into_response()
}

/// Longest query `/judge` echoes (a judge URL with a nonce is far shorter).
const JUDGE_MAX_QUERY: usize = 2048;
/// Headers `/judge` echoes at most, and bytes of each value.
const JUDGE_MAX_HEADERS: usize = 48;
const JUDGE_MAX_VALUE: usize = 512;

/// The service as its own judge: echoes query, headers and client address — never the
/// credentials and cookies the caller sent (`api.judge_hide_headers` adds to that list),
/// and only so much of each. 404 when `api.judge_enabled` is off.
pub async fn judge(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let cfg = state.service.config.load();
    if !cfg.api.judge_enabled {
        return not_found().await;
    }
    echo(peer, q, &headers, &cfg.api.judge_hide_headers)
}

/// The judge's answer (the service's `/judge` and `proxy-checker judge`): query, headers
/// but `hidden` (lower-case names), capped, and the caller's address.
pub fn echo(peer: SocketAddr, q: Option<String>, headers: &HeaderMap, hidden: &[String]) -> Response {
    let q = q.unwrap_or_default();
    if q.len() > JUDGE_MAX_QUERY {
        return ApiError::BadParam {
            param: "query".into(),
            message: format!("the judge echoes queries up to {JUDGE_MAX_QUERY} bytes ({} sent)", q.len()),
        }
        .into_response();
    }
    // The API key never comes back, from the query either.
    let args: BTreeMap<String, String> =
        url::form_urlencoded::parse(q.as_bytes()).into_owned().filter(|(k, _)| k != "api_key").collect();
    let q: String = q.split('&').filter(|kv| kv.split('=').next() != Some("api_key")).collect::<Vec<_>>().join("&");
    let mut echoed: BTreeMap<&str, String> = BTreeMap::new();
    let mut truncated = false;
    for (k, v) in headers.iter().filter(|(k, _)| !hidden.iter().any(|h| h == k.as_str())) {
        if echoed.len() == JUDGE_MAX_HEADERS && !echoed.contains_key(k.as_str()) {
            truncated = true;
            continue;
        }
        let bytes = v.as_bytes();
        truncated |= bytes.len() > JUDGE_MAX_VALUE;
        let mut value = String::from_utf8_lossy(&bytes[..bytes.len().min(JUDGE_MAX_VALUE)]).into_owned();
        // Replacement characters take 3 bytes each: cap again after the conversion.
        let mut end = value.len().min(JUDGE_MAX_VALUE);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        // A repeated header is echoed once per name (its first value); the rest is dropped.
        echoed.entry(k.as_str()).or_insert(value);
    }
    Json(serde_json::json!({
        "args": args, "query": q, "headers": echoed, "origin": peer.ip().to_string(), "truncated": truncated,
    }))
    .into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Csv,
    Curl,
    Requests,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    RoundRobin,
    Random,
    Fastest,
    /// Best [`crate::snapshot::score`] first.
    Score,
}

struct Params {
    limit: usize,
    all: bool,
    format: Format,
    filter: Filter,
    order: Order,
    /// `dns=remote`: SOCKS URLs as `socks5h://`/`socks4a://` (the proxy resolves names).
    dns_remote: bool,
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadParam { param: param.to_string(), message: message.into() }
}

const MAX_LIMIT: usize = 100_000;

fn parse_params(q: Option<&str>) -> Result<Params, ApiError> {
    let mut p = Params {
        limit: 1,
        all: false,
        format: Format::Text,
        filter: Filter::default(),
        order: Order::RoundRobin,
        dns_remote: false,
    };
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => {
                p.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad("limit", format!("`{v}`: must be an integer from 1 to {MAX_LIMIT}")))?
            }
            "all" => {
                p.all = match v.as_ref() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(bad("all", format!("`{v}`: use all=1 or all=0"))),
                }
            }
            "format" => {
                p.format = match v.as_ref() {
                    "text" => Format::Text,
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    "curl" => Format::Curl,
                    "requests" => Format::Requests,
                    _ => return Err(bad("format", format!("`{v}`: allowed: text, json, csv, curl, requests"))),
                }
            }
            "protocol" => {
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let s = Selector::parse(item)
                        .ok_or_else(|| bad("protocol", format!("`{item}`: allowed: http, https, socks4, socks5")))?;
                    if !p.filter.selectors.contains(&s) {
                        p.filter.selectors.push(s);
                    }
                }
            }
            "max_latency_ms" => {
                p.filter.max_latency_ms = Some(
                    v.parse::<u32>()
                        .map_err(|_| bad("max_latency_ms", format!("`{v}`: must be a non-negative integer")))?,
                )
            }
            "order" => {
                p.order = match v.as_ref() {
                    "rr" => Order::RoundRobin,
                    "random" => Order::Random,
                    "fastest" => Order::Fastest,
                    "score" => Order::Score,
                    _ => return Err(bad("order", format!("`{v}`: allowed: rr, random, fastest, score"))),
                }
            }
            "anonymity" => {
                for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let a = crate::check::Anonymity::parse(item).ok_or_else(|| {
                        bad("anonymity", format!("`{item}`: allowed: transparent, anonymous, elite, unknown"))
                    })?;
                    if !p.filter.anonymity.contains(&a) {
                        p.filter.anonymity.push(a);
                    }
                }
            }
            "min_uptime" => {
                p.filter.min_uptime = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|u| (0.0..=1.0).contains(u))
                        .ok_or_else(|| bad("min_uptime", format!("`{v}`: must be a number from 0 to 1")))?,
                )
            }
            "min_checks" => {
                p.filter.min_checks = Some(
                    v.parse::<u32>()
                        .map_err(|_| bad("min_checks", format!("`{v}`: must be a non-negative integer")))?,
                )
            }
            "dns" => {
                p.dns_remote = match v.as_ref() {
                    "remote" => true,
                    "local" => false,
                    _ => return Err(bad("dns", format!("`{v}`: allowed: local, remote"))),
                }
            }
            "api_key" => {}
            other => {
                return Err(bad(other, format!("unknown parameter (allowed: {})", super::GET_PROXY_PARAMS.join(", "))));
            }
        }
    }
    Ok(p)
}

/// A `/get-proxy` answer: its content type and bytes (status 200).
pub(crate) struct Answer {
    pub content_type: &'static str,
    pub body: Bytes,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, self.content_type)], self.body).into_response()
    }
}

/// Serialized (our own types cannot fail to).
fn json(value: &impl serde::Serialize) -> Answer {
    Answer { content_type: JSON, body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()) }
}

fn render(snap: &Snapshot, picked: &[u32], format: Format, dns_remote: bool) -> Answer {
    let url = |i: &u32| snap.entry(*i).url(dns_remote);
    let text = |out: String| Answer { content_type: TEXT, body: Bytes::from(out) };
    match format {
        Format::Text => {
            let mut out = String::with_capacity(picked.len() * 28);
            for i in picked {
                out.push_str(&url(i));
                out.push('\n');
            }
            text(out)
        }
        // One `-x URL` per line: `curl $(… | head -1) https://example.com`.
        Format::Curl => {
            let mut out = String::with_capacity(picked.len() * 32);
            for i in picked {
                let _ = writeln!(out, "-x {}", url(i));
            }
            text(out)
        }
        // Python requests' `proxies=` argument, one per proxy.
        Format::Requests => {
            let all: Vec<serde_json::Value> =
                picked.iter().map(|i| serde_json::json!({"http": url(i), "https": url(i)})).collect();
            json(&all)
        }
        // The entries' JSON, each rendered once per snapshot: what `serde_json` writes
        // for the list.
        Format::Json => {
            let mut out = Vec::with_capacity(picked.iter().map(|i| snap.entry_json(*i).len() + 1).sum::<usize>() + 2);
            out.push(b'[');
            for (k, i) in picked.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(snap.entry_json(*i));
            }
            out.push(b']');
            Answer { content_type: JSON, body: Bytes::from(out) }
        }
        Format::Csv => {
            let mut out = String::from(
                "proxy,protocol,host,port,latency_ms,connect_ms,forward,tunnel,source,anonymity,exit_ip,uptime,checks,\
                 first_seen,last_ok,score\n",
            );
            for i in picked {
                let e = snap.entry(*i);
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{:.3},{},{:.3},{:.3},{:.4}",
                    e.url(dns_remote),
                    e.protocol,
                    e.host,
                    e.port,
                    e.latency_ms,
                    e.connect_ms,
                    e.forward,
                    e.tunnel,
                    e.source.replace(',', "%2C"),
                    e.anonymity,
                    e.exit_ip.as_deref().unwrap_or(""),
                    e.uptime,
                    e.checks,
                    e.first_seen,
                    e.last_ok,
                    e.score
                );
            }
            Answer { content_type: "text/csv; charset=utf-8", body: Bytes::from(out) }
        }
    }
}

pub async fn get_proxy(State(state): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Result<Answer, ApiError> {
    get_proxy_answer(&state, q.as_deref())
}

/// `/get-proxy`'s answer from the served snapshot (also called by [`super::front`]'s hot
/// path, which reaches it without the router).
pub(crate) fn get_proxy_answer(state: &AppState, q: Option<&str>) -> Result<Answer, ApiError> {
    let p = parse_params(q)?;
    let snap = state.service.snapshot.load();
    if snap.is_empty() {
        return Err(ApiError::NoProxy(empty_pool(&state.service)));
    }
    // The hot case, pre-rendered: every proxy, fastest first, as text.
    let f = &p.filter;
    if p.all
        && f.selectors.is_empty()
        && f.max_latency_ms.is_none()
        && f.anonymity.is_empty()
        && f.min_uptime.is_none()
        && f.min_checks.is_none()
        && !p.dns_remote
        && p.format == Format::Text
        && matches!(p.order, Order::RoundRobin | Order::Fastest)
        && !snap.has_credentials
    {
        return Ok(Answer { content_type: TEXT, body: Bytes::clone(&snap.text_all) });
    }
    let matching = snap.select_filtered(f);
    if matching.is_empty() {
        let mut why = Vec::new();
        if !f.selectors.is_empty() {
            let names: Vec<&str> = f.selectors.iter().map(|s| s.as_str()).collect();
            why.push(format!("protocol={}", names.join(",")));
        }
        if let Some(m) = f.max_latency_ms {
            why.push(format!("max_latency_ms={m}"));
        }
        if !f.anonymity.is_empty() {
            let names: Vec<&str> = f.anonymity.iter().map(|a| a.as_str()).collect();
            why.push(format!("anonymity={}", names.join(",")));
        }
        if let Some(m) = f.min_uptime {
            why.push(format!("min_uptime={m}"));
        }
        if let Some(m) = f.min_checks {
            why.push(format!("min_checks={m}"));
        }
        return Err(ApiError::NoProxy(format!("no proxy matches {} ({} in the pool)", why.join(" and "), snap.len())));
    }
    let len = matching.len();
    let n = if p.all { len } else { p.limit.min(len) };
    let picked: Vec<u32> = match p.order {
        Order::Score => snap.best_by_score(&matching, n),
        _ if p.all && p.order != Order::Random => (0..len).map(|k| matching.get(k)).collect(),
        Order::Fastest => (0..n).map(|k| matching.get(k)).collect(),
        Order::RoundRobin => {
            let start = state.cursor.fetch_add(n, Ordering::Relaxed);
            (0..n).map(|k| matching.get((start + k) % len)).collect()
        }
        Order::Random => fastrand::choose_multiple(0..len, n).into_iter().map(|k| matching.get(k)).collect(),
    };
    Ok(render(&snap, &picked, p.format, p.dns_remote))
}

pub async fn stat(State(state): State<Arc<AppState>>) -> Response {
    let svc = &state.service;
    let snap = svc.snapshot.load();
    let r = &snap.data.round;
    let checked = r.checked.max(1) as f64;
    let progress = match svc.phase() {
        Phase::Running { id, started, progress, .. } => {
            let secs = started.elapsed().unwrap_or_default().as_secs_f64().max(1e-3);
            let checked = progress.checked.load(Ordering::Relaxed);
            serde_json::json!({
                "round_id": id, "started_at": unix(started),
                "checked": checked, "total": progress.total.load(Ordering::Relaxed),
                "alive": progress.alive.load(Ordering::Relaxed),
                "in_flight": progress.in_flight.load(Ordering::Relaxed),
                "checks_per_sec": (checked as f64 / secs).round(),
                "concurrency": progress.limit.load(Ordering::Relaxed),
            })
        }
        Phase::Requested(id) => serde_json::json!({"round_id": id, "state": "starting"}),
        Phase::Idle => serde_json::Value::Null,
    };
    let cfg = svc.config.load();
    let now = unix(std::time::SystemTime::now());
    Json(serde_json::json!({
        "freshness": {
            "oldest_ok_age_secs": if snap.oldest_ok > 0.0 { serde_json::json!(((now - snap.oldest_ok).max(0.0) * 10.0).round() / 10.0) } else { serde_json::Value::Null },
            "recheck_interval_secs": cfg.checker.recheck.interval.map(|i| i.as_secs()),
            "pulled": svc.pulled(),
            "history_entries": crate::service::lock(&svc.history).len(),
            "last_recheck": svc.last_pass(),
        },
        "pool": {
            "alive": snap.len(),
            "stale": snap.loaded,
            "snapshot_age_secs": if r.finished_at > 0.0 { snap.age().as_secs_f64().round() } else { 0.0 },
            "by_protocol": Selector::ALL.iter().map(|s| (s.as_str(), snap.select(&[*s], None).len())).collect::<BTreeMap<_, _>>(),
            "by_anonymity": snap.count_by_anonymity(),
        },
        "last_round": if !svc.is_ready() { serde_json::Value::Null } else { serde_json::json!({
            "round_id": r.round_id,
            "mode": r.mode,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "duration_ms": r.duration_ms,
            "scraped": r.scraped,
            "unique": r.unique,
            "checked": r.checked,
            "alive": r.alive,
            "dead": r.dead,
            "alive_percent": (r.alive as f64 * 1000.0 / checked).round() / 10.0,
            "dead_by_reason": r.dead_by_reason,
            "retries": r.retries,
            "local_requeues": r.local_requeues,
            "concurrency": r.concurrency,
            "sources": r.sources,
        })},
        "last_failed_round": svc.last_failed(),
        "round_in_progress": progress,
        "last_round_ended": svc.last_round_end().map(|e| serde_json::json!({
            "round_id": e.round_id, "finished_at": unix(e.finished_at), "result": e.result,
        })),
        "health": svc.fault().map_or_else(|| "ok".to_string(), |f| f.to_string()),
        "last_error": svc.last_error(),
        "next_round_at": svc.next_round_at().map(unix),
        "effective_concurrency": svc.round_concurrency(),
        "fd_budget": svc.fd_budget,
    }))
    .into_response()
}

/// Why `/get-proxy` has nothing to give: no round yet, the rounds so far failed (and
/// why), or the last good round found nothing alive.
fn empty_pool(svc: &crate::service::Service) -> String {
    let failed = svc.last_failed();
    match (svc.is_ready(), failed) {
        (false, None) => "no snapshot yet: the first round has not finished and none was persisted".into(),
        (false, Some(f)) => {
            format!("no round has succeeded yet; the last one (round {}) failed: {}", f.round_id, f.error)
        }
        (true, Some(f)) if f.round_id > svc.snapshot.load().data.round.round_id => format!(
            "the pool is empty: the last good round found no live proxy, and round {} failed since: {}",
            f.round_id, f.error
        ),
        (true, _) => "the pool is empty: the last round found no live proxy".into(),
    }
}

pub async fn reload(State(state): State<Arc<AppState>>) -> Response {
    let (status, id) = match state.service.request_round() {
        ReloadOutcome::Started(id) => ("started", id),
        ReloadOutcome::AlreadyRunning(id) => ("running", id),
        ReloadOutcome::TooSoon(retry_after) => {
            return ApiError::RateLimited { limiter: "reload", retry_after }.into_response();
        }
    };
    (StatusCode::ACCEPTED, Json(serde_json::json!({"status": status, "round_id": id}))).into_response()
}

/// The proxy a `POST /report` names: `?proxy=` or a JSON body `{"proxy": "..."}`, as
/// `host:port` or a proxy URL.
fn reported_proxy(query: Option<&str>, body: &[u8]) -> Result<Key, ApiError> {
    let mut from_query = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "proxy" => from_query = Some(v.into_owned()),
            "api_key" => {}
            other => return Err(bad(other, "unknown parameter (allowed: proxy, api_key)")),
        }
    }
    let given = match from_query {
        Some(p) => p,
        None if body.iter().all(u8::is_ascii_whitespace) => {
            return Err(bad("proxy", "missing: send ?proxy=HOST:PORT or a JSON body {\"proxy\": \"HOST:PORT\"}"));
        }
        None => {
            #[derive(serde::Deserialize)]
            struct Body {
                proxy: String,
            }
            serde_json::from_slice::<Body>(body)
                .map_err(|e| bad("proxy", format!("the body is not {{\"proxy\": \"HOST:PORT\"}}: {e}")))?
                .proxy
        }
    };
    Key::parse_address(&given).ok_or_else(|| {
        let shown: String = given.chars().take(80).collect();
        bad("proxy", format!("`{}`: expected HOST:PORT or a proxy URL", crate::redact::redacted_str(&shown)))
    })
}

/// `POST /report`: a client found this served proxy failing. It is rechecked at once
/// (once, however many report it; at most `api.report_per_minute` reports per key) and
/// pulled only if that recheck fails.
pub async fn report(State(state): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    let guard = state.guard.load();
    let ip = super::client_ip(&req, &guard);
    let presented = super::presented_key(req.headers(), req.uri()).map(std::borrow::Cow::into_owned);
    let query = req.uri().query().map(str::to_string);
    let body = match axum::body::to_bytes(req.into_body(), super::BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return bad("proxy", "the body could not be read (at most 16 KiB)").into_response(),
    };
    let key = match reported_proxy(query.as_deref(), &body) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    if let Err(r) = guard.admit_report(presented.as_deref(), ip) {
        return ApiError::from(r).into_response();
    }
    let proxy = key.to_string();
    match state.service.report(key) {
        ReportOutcome::Queued => {
            (StatusCode::ACCEPTED, Json(serde_json::json!({"status": "queued", "proxy": proxy}))).into_response()
        }
        ReportOutcome::AlreadyQueued => {
            (StatusCode::ACCEPTED, Json(serde_json::json!({"status": "already_queued", "proxy": proxy})))
                .into_response()
        }
        ReportOutcome::RecentlyChecked(at) => Json(serde_json::json!({
            "status": "recently_checked", "proxy": proxy, "last_checked": at,
            "message": format!("checked less than {} s ago; report it again later if it still fails", crate::service::REPORT_MIN_GAP.as_secs()),
        }))
        .into_response(),
        ReportOutcome::Pulled => Json(serde_json::json!({
            "status": "pulled", "proxy": proxy, "message": "a failed recheck already took it out of the served pool",
        }))
        .into_response(),
        ReportOutcome::NotServed => ApiError::UnknownProxy(format!("{proxy} is not in the served pool")).into_response(),
    }
}

/// `GET /proxy/{address}`: one proxy's record — whether it is served, pulled or neither,
/// its served entry, and its track record. 404 when the service has no record of it.
pub async fn proxy_record(
    State(state): State<Arc<AppState>>,
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Ok(axum::extract::Path(address)) = path else {
        return bad("address", "not a valid path segment").into_response();
    };
    let Some(key) = Key::parse_address(&address) else {
        return bad("address", "expected HOST:PORT (IPv6 in brackets: [::1]:1080)").into_response();
    };
    let svc = &state.service;
    let snap = svc.snapshot.load();
    let entry = snap.find(&key);
    let record = crate::service::lock(&svc.history).get(&key).cloned();
    let pulled = entry.is_none() && svc.is_pulled(&key);
    if entry.is_none() && record.is_none() && !pulled {
        return ApiError::UnknownProxy(format!("no record of {key}")).into_response();
    }
    let secs = |ms: u64| if ms == 0 { serde_json::Value::Null } else { serde_json::json!(ms as f64 / 1000.0) };
    let history = record.map(|r| {
        serde_json::json!({
            "first_seen": secs(r.first_seen),
            "last_ok": secs(r.last_ok),
            "last_checked": secs(r.last_checked),
            "checks": r.checks,
            "successes": r.successes,
            "consecutive_failures": r.consecutive_failures,
            "uptime": r.uptime(),
            "uptime_window": r.recent_len,
            "uptime_ewma": r.uptime_ewma,
            "latency_ewma_ms": if r.successes > 0 { serde_json::json!(r.latency_ewma_ms.round()) } else { serde_json::Value::Null },
            "latency_median_ms": r.latency_median_ms(),
            "protocol": r.protocol().map(|p| p.as_str()),
            "forward": r.caps & 1 != 0,
            "tunnel": r.caps & 2 != 0,
            "changes": r.changes,
        })
    });
    let state_name = if entry.is_some() {
        "served"
    } else if pulled {
        "pulled"
    } else {
        "not_served"
    };
    Json(serde_json::json!({
        "proxy": key.to_string(),
        "state": state_name,
        "entry": entry,
        "history": history,
    }))
    .into_response()
}
