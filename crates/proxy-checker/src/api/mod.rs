//! The HTTP API (axum): `/health`, `/ready`, `/metrics`, `/judge`, `/get-proxy`, `/stat`,
//! `POST /reload`, `POST /report`, `/proxy/{address}`. Handlers read the service's `ArcSwap`s and never wait on a round; they
//! know nothing of sockets to proxies.

mod clients;
pub mod forwarded;
pub(crate) mod front;
mod guard;
pub(crate) mod routes;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};

pub use clients::{BYTES_PER_CLIENT, ESTABLISHED, MAX_TRACKED_IPS, PROBATION};
pub use guard::{API_KEY_ENV, Guard, Refusal};

use crate::service::Service;

/// State shared by every handler.
pub struct AppState {
    pub service: Arc<Service>,
    /// Keys and limiters; replaced on config reload.
    pub guard: ArcSwap<Guard>,
    /// The round-robin cursor of `/get-proxy`, shared by all clients.
    pub cursor: AtomicUsize,
}

impl AppState {
    pub fn new(service: Arc<Service>, env_keys: Option<String>) -> Arc<Self> {
        let guard = Guard::new(&service.config.load().api, env_keys.as_deref());
        Arc::new(Self { service, guard: ArcSwap::from_pointee(guard), cursor: AtomicUsize::new(0) })
    }
}

/// Every error the API returns. 4xx bodies say what to fix; 5xx bodies are generic.
#[derive(Debug)]
pub enum ApiError {
    BadParam {
        param: String,
        message: String,
    },
    Unauthorized,
    /// A valid key that may not call this route (`api.admin_keys`).
    Forbidden,
    RateLimited {
        limiter: &'static str,
        retry_after: Duration,
    },
    NoProxy(String),
    /// A proxy the service does not know (`/proxy/{address}`, `POST /report`).
    UnknownProxy(String),
    /// No snapshot to serve yet; the message says whether rounds are failing.
    NotReady(String),
    /// The service has a fault (scheduler stopped, round stalled): `/health`, `/ready`.
    Unhealthy(crate::service::Fault),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadParam { param, message } => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "bad_parameter", "parameter": param, "message": message}),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "unauthorized", "message": "missing or wrong API key: send it in the X-Api-Key header or the api_key query parameter"}),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "forbidden", "message": "this key may not call this endpoint: it needs one of api.admin_keys"}),
            ),
            ApiError::RateLimited { limiter, retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"error": "rate_limited", "limiter": limiter, "retry_after_secs": retry_after.as_secs_f64().ceil() as u64}),
            ),
            ApiError::UnknownProxy(message) => {
                (StatusCode::NOT_FOUND, serde_json::json!({"error": "unknown_proxy", "message": message}))
            }
            ApiError::NoProxy(message) => {
                (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": "no_proxy", "message": message}))
            }
            ApiError::Unhealthy(fault) => {
                (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": "unhealthy", "message": fault.summary()}))
            }
            ApiError::NotReady(message) => {
                (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": "not_ready", "message": message}))
            }
        };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::RateLimited { limiter, retry_after } = self {
            resp.extensions_mut().insert(LimitedBy(limiter));
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthorized => ApiError::Unauthorized,
            Refusal::Forbidden => ApiError::Forbidden,
            Refusal::Limited { limiter, retry_after } => ApiError::RateLimited { limiter, retry_after },
        }
    }
}

/// The OpenAPI document served at `/openapi.json` (kept in sync by `tests/deploy.rs`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Who may call a route. Every route has one, in [`ROUTES`]: the router is built from
/// that table, so a route cannot be added without choosing its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Probes and the API document: no key, no limit.
    Public,
    /// The per-IP limit only.
    Open,
    /// `/metrics`: open, or keyed when `api.metrics_require_auth` is set.
    Metrics,
    /// The per-IP limit, a key, and the per-key limit.
    Key,
    /// As `Key`; when `api.admin_keys` is set, one of those keys.
    Admin,
}

/// One route: method, path and access level.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route { method, path, access }
}

/// Every route (the OpenAPI document must list exactly these).
pub const ROUTES: &[Route] = &[
    route("GET", "/health", Access::Public),
    route("GET", "/ready", Access::Public),
    route("GET", "/openapi.json", Access::Public),
    route("GET", "/metrics", Access::Metrics),
    route("GET", "/judge", Access::Open),
    route("GET", "/get-proxy", Access::Key),
    route("GET", "/stat", Access::Key),
    route("POST", "/reload", Access::Admin),
    route("POST", "/report", Access::Key),
    route("GET", "/proxy/{address}", Access::Key),
];

/// The handler of a route in [`ROUTES`]. A path missing here is a bug caught by the route
/// test; a handler missing from `ROUTES` is never routed (closed, not open).
fn handler(r: &Route) -> MethodRouter<Arc<AppState>> {
    match (r.method, r.path) {
        ("GET", "/health") => get(routes::health),
        ("GET", "/ready") => get(routes::ready),
        ("GET", "/openapi.json") => get(routes::openapi),
        ("GET", "/metrics") => get(routes::metrics),
        ("GET", "/judge") => get(routes::judge),
        ("GET", "/get-proxy") => get(routes::get_proxy),
        ("GET", "/stat") => get(routes::stat),
        ("POST", "/reload") => post(routes::reload),
        ("POST", "/report") => post(routes::report),
        ("GET", "/proxy/{address}") => get(routes::proxy_record),
        _ => unreachable!("route {} {} has no handler", r.method, r.path),
    }
}

/// Query parameters `/get-proxy` accepts.
pub const GET_PROXY_PARAMS: &[&str] = &[
    "limit",
    "all",
    "format",
    "protocol",
    "max_latency_ms",
    "order",
    "anonymity",
    "min_uptime",
    "min_checks",
    "dns",
    "api_key",
];

/// Largest request body accepted (the API takes none that matter).
pub(crate) const BODY_LIMIT: usize = 16 * 1024;
/// Deadline for handling one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A judge on its own (`proxy-checker judge`): `GET /judge` (and `GET /`) answer the same
/// echo as the service's `/judge`, hiding the built-in headers and `hidden`; 16 KiB bodies,
/// 10 s per request. Serve it with `into_make_service_with_connect_info`.
pub fn judge_router(hidden: Vec<String>) -> Router {
    let mut all: Vec<String> = crate::config::JUDGE_ALWAYS_HIDDEN.iter().map(|h| h.to_string()).collect();
    all.extend(hidden.into_iter().map(|h| h.to_ascii_lowercase()));
    let all = Arc::new(all);
    let handler = move |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                        axum::extract::RawQuery(q): axum::extract::RawQuery,
                        headers: axum::http::HeaderMap| {
        let all = all.clone();
        async move { routes::echo(peer, q, &headers, &all) }
    };
    Router::new()
        .route("/judge", get(handler.clone()))
        .route("/", get(handler))
        .fallback(routes::not_found)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
}

/// The router with all middleware. Serve it with `into_make_service_with_connect_info`.
///
/// `GET /get-proxy` without a body does not reach it when served by [`front`], which
/// answers it with the same admission, handler and metrics: a layer added here must be
/// added there too (`it/security.rs::get_proxy_answers_alike_by_the_hot_route_and_the_router`
/// compares the two answers, headers included).
pub fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new();
    for r in ROUTES {
        let one = Router::new().route(r.path, handler(r));
        app = app.merge(match r.access {
            Access::Public => one,
            level => one.route_layer(middleware::from_fn_with_state((state.clone(), level), admit)),
        });
    }
    app.fallback(routes::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .with_state(state)
}

fn route_of(req: &Request) -> String {
    req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string())
}

/// Counts requests by route template and status, and times them.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &state.service.metrics;
    m.api_requests_total.with_label_values(&[&route, resp.status().as_str()]).inc();
    m.api_request_duration_seconds.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    if resp.status() == StatusCode::TOO_MANY_REQUESTS
        && let Some(l) = resp.extensions().get::<LimitedBy>()
    {
        m.rate_limited_total.with_label_values(&[l.0]).inc();
    }
    resp
}

#[derive(Clone, Copy)]
pub(crate) struct LimitedBy(pub(crate) &'static str);

/// The client address: the peer, or behind trusted proxies the forwarded client.
pub(crate) fn client_ip(req: &Request, guard: &Guard) -> IpAddr {
    guard.client_ip(peer_ip(req), req.headers())
}

/// The connection's peer (put on each request by the server).
fn peer_ip(req: &Request) -> IpAddr {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// The key a request presents: the `X-Api-Key` header, else the `api_key` query parameter.
pub(crate) fn presented_key<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<Cow<'a, str>> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(Cow::Borrowed(v));
    }
    let q = uri.query()?;
    url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "api_key").map(|(_, v)| v)
}

/// The per-IP limit, and for keyed levels the key, its admin mark and the per-key limit:
/// what a request must pass at `access` (the router's middleware and [`front`]'s hot
/// route both ask here).
pub(crate) fn admission(
    guard: &Guard,
    access: Access,
    peer: IpAddr,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), Refusal> {
    let keyed = match access {
        Access::Public => return Ok(()),
        Access::Open => false,
        Access::Metrics => guard.metrics_auth,
        Access::Key | Access::Admin => true,
    };
    guard.admit_ip(guard.client_ip(peer, headers))?;
    if keyed { guard.authorize(presented_key(headers, uri).as_deref(), access == Access::Admin) } else { Ok(()) }
}

async fn admit(State((state, access)): State<(Arc<AppState>, Access)>, req: Request, next: Next) -> Response {
    let guard = state.guard.load();
    match admission(&guard, access, peer_ip(&req), req.headers(), req.uri()) {
        Ok(()) => next.run(req).await,
        Err(r) => ApiError::from(r).into_response(),
    }
}
