//! The API's front door: serves each accepted connection with hyper, HTTP/1.1 only (the
//! listener's slowloris and eviction rules assume one request at a time on a connection;
//! `axum::serve` also took HTTP/2 with prior knowledge), and answers `GET /get-proxy`, the
//! route clients call once per request they make, itself: the same admission
//! ([`super::admission`]), handler ([`routes::get_proxy_answer`]) and metrics as through the
//! router, without the router's per-request machinery (route matching, boxed services cloned
//! per request, two middleware futures, a timer). Every other request — and a `/get-proxy`
//! that carries a body or is not a GET — goes to the axum router, which has the same route.
//!
//! Profile and figures: docs/PERFORMANCE.md ("Where `/get-proxy`'s time goes").

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, Response, header};
use axum::response::IntoResponse;
use axum::serve::Listener;
use bytes::Bytes;
use futures_util::TryFutureExt;
use futures_util::future::{self, Either, Ready};
use http_body_util::{Either as EitherBody, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use prometheus::{Histogram, IntCounter};
use tokio_util::sync::CancellationToken;

use super::routes::{self, Answer};
use super::{Access, ApiError, AppState, Refusal};
use crate::listener::CappedListener;

/// The hot route's path.
const GET_PROXY: &str = "/get-proxy";

/// What a response carries: a `/get-proxy` answer's bytes, or the router's body.
type Out = EitherBody<Full<Bytes>, Body>;

/// Serves `app` (with `state`'s hot route in front of it) on `listener` until `shutdown`;
/// then stops accepting, lets requests in flight finish and closes idle connections, and
/// after `grace` closes what is left.
pub(crate) async fn serve(
    mut listener: CappedListener,
    app: Router,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let front = Arc::new(Front {
        state,
        router: TowerToHyperService::new(app),
        hot: HotMetrics::default(),
        access: super::ROUTES
            .iter()
            .find(|r| (r.method, r.path) == ("GET", GET_PROXY))
            .map_or(Access::Key, |r| r.access),
    });
    let graceful = GracefulShutdown::new();
    // Ends the connections still open when the grace period is over.
    let hard = CancellationToken::new();
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let conn = http.serve_connection(TokioIo::new(io), Conn { front: front.clone(), peer });
        let conn = graceful.watch(conn);
        let hard = hard.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::trace!(error = %e, "API connection ended with an error");
                },
                () = hard.cancelled() => {}
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("API connections still open after the grace period; closing them");
            hard.cancel();
        }
    }
}

struct Front {
    state: Arc<AppState>,
    router: TowerToHyperService<Router>,
    hot: HotMetrics,
    /// The route's level in [`super::ROUTES`].
    access: Access,
}

/// The hot route's series of `proxychecker_api_requests_total{status="200"}` and of the
/// duration histogram, resolved once (each lookup hashes the label values).
#[derive(Default)]
struct HotMetrics {
    ok: OnceLock<IntCounter>,
    duration: OnceLock<Histogram>,
}

/// One connection's service: its peer is every request's client address.
#[derive(Clone)]
struct Conn {
    front: Arc<Front>,
    peer: SocketAddr,
}

type Routed = TowerToHyperServiceFuture<Router, Request<Incoming>>;
type ToOut = fn(Response<Body>) -> Response<Out>;

impl hyper::service::Service<Request<Incoming>> for Conn {
    type Response = Response<Out>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Out>, Infallible>>, futures_util::future::MapOk<Routed, ToOut>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if req.method() == Method::GET && req.uri().path() == GET_PROXY && req.body().is_end_stream() {
            return Either::Left(future::ready(Ok(self.front.get_proxy(self.peer, &req))));
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let to_out: ToOut = |r| r.map(EitherBody::Right);
        Either::Right(self.front.router.call(req).map_ok(to_out))
    }
}

impl Front {
    /// `GET /get-proxy`, as the router would answer it: admission at its level in
    /// [`super::ROUTES`], the handler, and the request counted and timed as `observe` does.
    fn get_proxy(&self, peer: SocketAddr, req: &Request<Incoming>) -> Response<Out> {
        let started = Instant::now();
        let state = &self.state;
        let guard = state.guard.load();
        let answer = super::admission(&guard, self.access, peer.ip(), req.headers(), req.uri())
            .map_err(|r| {
                if let Refusal::Limited { limiter, .. } = &r {
                    state.service.metrics.rate_limited_total.with_label_values(&[limiter]).inc();
                }
                ApiError::from(r)
            })
            .and_then(|()| routes::get_proxy_answer(state, req.uri().query()));
        let m = &state.service.metrics;
        let resp = match answer {
            Ok(Answer { content_type, body }) => {
                let mut resp = Response::new(EitherBody::Left(Full::new(body)));
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                self.hot.ok.get_or_init(|| m.api_requests_total.with_label_values(&[GET_PROXY, "200"])).inc();
                resp
            }
            Err(e) => {
                let resp = e.into_response();
                m.api_requests_total.with_label_values(&[GET_PROXY, resp.status().as_str()]).inc();
                resp.map(EitherBody::Right)
            }
        };
        self.hot
            .duration
            .get_or_init(|| m.api_request_duration_seconds.with_label_values(&[GET_PROXY]))
            .observe(started.elapsed().as_secs_f64());
        resp
    }
}
