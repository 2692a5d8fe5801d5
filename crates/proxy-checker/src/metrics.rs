//! Every Prometheus metric the service exports, defined in one place. Names are
//! `proxychecker_<what>_<unit>[_total]`; labels come from small fixed sets (protocol,
//! reason, route template, status, limiter) — never a proxy address or a raw URL.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::check::Verdict;

/// Buckets for a check's latency: judges through proxies answer in 50 ms to 10 s.
const CHECK_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0];
/// Buckets for API requests: the target is a p99 well under 10 ms.
const API_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The service's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub alive_proxies: IntGauge,
    /// Proxies in the served snapshot by anonymity level.
    pub pool_proxies: IntGaugeVec,
    pub checks_total: IntCounterVec,
    pub check_duration_seconds: HistogramVec,
    pub api_requests_total: IntCounterVec,
    pub api_request_duration_seconds: HistogramVec,
    pub round_duration_seconds: Histogram,
    pub rounds_total: IntCounterVec,
    pub last_round_timestamp_seconds: Gauge,
    /// When the last round ended, successful or not: a scheduler that stopped shows here.
    pub last_round_finished_timestamp_seconds: Gauge,
    pub round_interval_seconds: Gauge,
    /// 1 while the service is healthy (`/health` 200), 0 with a fault.
    pub healthy: IntGauge,
    /// Checks that panicked (each also counted in `checks_total{result="internal_error"}`).
    pub check_internal_errors_total: IntCounter,
    pub sources_fetched_total: IntCounter,
    pub sources_failed_total: IntCounter,
    pub checks_in_flight: IntGauge,
    pub effective_concurrency: IntGauge,
    pub snapshot_age_seconds: Gauge,
    pub rate_limited_total: IntCounterVec,
    pub rate_limiter_clients: IntGauge,
    /// Tasks alive on each tokio runtime (`api`, `checker`): a leak shows as growth.
    pub runtime_alive_tasks: IntGaugeVec,
    /// The runtime rounds run on, read at scrape time for `runtime_alive_tasks`.
    pub checker_runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    pub store_writes_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    /// Rechecks of served (and pulled) proxies between rounds, by result.
    pub rechecks_total: IntCounterVec,
    /// Pool changes made by rechecks: `pulled` (failed, out of the served pool),
    /// `returned` (a pulled one passed again), `dropped` (failed too often to recheck).
    pub pool_changes_total: IntCounterVec,
    /// `POST /report` answers by outcome.
    pub reports_total: IntCounterVec,
    pub history_entries: IntGauge,
    pub history_writes_total: IntCounterVec,
    /// Age of the oldest successful check among the served proxies.
    pub pool_oldest_check_age_seconds: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self::register();
        m.initialise();
        m
    }

    fn register() -> Self {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registers once");
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(&registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        Self {
            alive_proxies: reg(
                &registry,
                IntGauge::new("proxychecker_alive_proxies", "Proxies in the served snapshot").expect("valid"),
            ),
            checks_total: counter_vec(
                "proxychecker_checks_total",
                "Verdicts by protocol and result (alive or the dead reason)",
                &["protocol", "result"],
            ),
            check_duration_seconds: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "proxychecker_check_duration_seconds",
                        "Latency of live proxies: connect to judge answer head",
                    )
                    .buckets(CHECK_BUCKETS.to_vec()),
                    &["protocol"],
                )
                .expect("valid"),
            ),
            api_requests_total: counter_vec(
                "proxychecker_api_requests_total",
                "API requests by route template and status",
                &["route", "status"],
            ),
            api_request_duration_seconds: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "proxychecker_api_request_duration_seconds",
                        "API request handling time by route",
                    )
                    .buckets(API_BUCKETS.to_vec()),
                    &["route"],
                )
                .expect("valid"),
            ),
            round_duration_seconds: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("proxychecker_round_duration_seconds", "Duration of finished rounds")
                        .buckets(vec![1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]),
                )
                .expect("valid"),
            ),
            rounds_total: counter_vec("proxychecker_rounds_total", "Rounds by result", &["result"]),
            last_round_timestamp_seconds: reg(
                &registry,
                Gauge::new("proxychecker_last_round_timestamp_seconds", "Unix time the last successful round ended")
                    .expect("valid"),
            ),
            last_round_finished_timestamp_seconds: reg(
                &registry,
                Gauge::new(
                    "proxychecker_last_round_finished_timestamp_seconds",
                    "Unix time the last round ended, whatever its result",
                )
                .expect("valid"),
            ),
            healthy: reg(
                &registry,
                IntGauge::new("proxychecker_healthy", "1 while /health answers 200; 0 once a fault is seen")
                    .expect("valid"),
            ),
            check_internal_errors_total: reg(
                &registry,
                IntCounter::new(
                    "proxychecker_check_internal_errors_total",
                    "Checks that panicked: each is a dead verdict with internal_error and a bug to report",
                )
                .expect("valid"),
            ),
            round_interval_seconds: reg(
                &registry,
                Gauge::new(
                    "proxychecker_round_interval_seconds",
                    "Configured time between rounds (aggregation.interval_secs)",
                )
                .expect("valid"),
            ),
            sources_fetched_total: reg(
                &registry,
                IntCounter::new("proxychecker_sources_fetched_total", "Source fetches that succeeded").expect("valid"),
            ),
            sources_failed_total: reg(
                &registry,
                IntCounter::new("proxychecker_sources_failed_total", "Source fetches that failed").expect("valid"),
            ),
            checks_in_flight: reg(
                &registry,
                IntGauge::new("proxychecker_checks_in_flight", "Checks in flight right now").expect("valid"),
            ),
            effective_concurrency: reg(
                &registry,
                IntGauge::new(
                    "proxychecker_effective_concurrency",
                    "Current concurrency limit (after fd clamp and AIMD)",
                )
                .expect("valid"),
            ),
            snapshot_age_seconds: reg(
                &registry,
                Gauge::new("proxychecker_snapshot_age_seconds", "Age of the served snapshot").expect("valid"),
            ),
            rate_limited_total: counter_vec(
                "proxychecker_rate_limited_total",
                "Requests refused with 429, by limiter",
                &["limiter"],
            ),
            rate_limiter_clients: reg(
                &registry,
                IntGauge::new("proxychecker_rate_limiter_clients", "Client IPs tracked by the per-IP limiter")
                    .expect("valid"),
            ),
            checker_runtime: std::sync::OnceLock::new(),
            pool_proxies: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("proxychecker_pool_proxies", "Proxies in the served snapshot, by anonymity level"),
                    &["anonymity"],
                )
                .expect("valid"),
            ),
            runtime_alive_tasks: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("proxychecker_runtime_alive_tasks", "Tasks alive on the tokio runtime"),
                    &["runtime"],
                )
                .expect("valid"),
            ),
            store_writes_total: counter_vec(
                "proxychecker_store_writes_total",
                "Snapshot writes to the store by result",
                &["result"],
            ),
            config_reloads_total: counter_vec(
                "proxychecker_config_reloads_total",
                "Config reloads by result",
                &["result"],
            ),
            rechecks_total: counter_vec(
                "proxychecker_rechecks_total",
                "Rechecks of served and pulled proxies between rounds, by result (alive or dead)",
                &["result"],
            ),
            pool_changes_total: counter_vec(
                "proxychecker_pool_changes_total",
                "Proxies pulled from the served pool by a failed recheck, returned by a passed one, or dropped",
                &["change"],
            ),
            reports_total: counter_vec("proxychecker_reports_total", "POST /report answers by outcome", &["outcome"]),
            history_entries: reg(
                &registry,
                IntGauge::new("proxychecker_history_entries", "Proxies with a track record in the history")
                    .expect("valid"),
            ),
            history_writes_total: counter_vec(
                "proxychecker_history_writes_total",
                "History writes to the store by result",
                &["result"],
            ),
            pool_oldest_check_age_seconds: reg(
                &registry,
                Gauge::new(
                    "proxychecker_pool_oldest_check_age_seconds",
                    "Age of the oldest last successful check among the served proxies",
                )
                .expect("valid"),
            ),
            registry,
        }
    }

    /// Creates the series alerts and dashboards query, at 0, so that `rate()` and
    /// `increase()` work from the first scrape (a counter that never appeared cannot rise).
    fn initialise(&self) {
        for a in crate::check::Anonymity::ALL {
            self.pool_proxies.with_label_values(&[a.as_str()]);
        }
        self.healthy.set(1);
        for protocol in crate::proxy::Protocol::ALL {
            let p = protocol.as_str();
            self.checks_total.with_label_values(&[p, "alive"]);
            for r in crate::check::Reason::ALL {
                self.checks_total.with_label_values(&[p, r.as_str()]);
            }
            self.check_duration_seconds.with_label_values(&[p]);
        }
        for result in ["ok", "failed", "cancelled"] {
            self.rounds_total.with_label_values(&[result]);
        }
        for result in ["ok", "error"] {
            self.store_writes_total.with_label_values(&[result]);
            self.history_writes_total.with_label_values(&[result]);
        }
        for result in ["ok", "rejected"] {
            self.config_reloads_total.with_label_values(&[result]);
        }
        for limiter in ["ip", "key", "report"] {
            self.rate_limited_total.with_label_values(&[limiter]);
        }
        for result in ["alive", "dead"] {
            self.rechecks_total.with_label_values(&[result]);
        }
        for change in ["pulled", "returned", "dropped"] {
            self.pool_changes_total.with_label_values(&[change]);
        }
        for outcome in crate::service::ReportOutcome::LABELS {
            self.reports_total.with_label_values(&[outcome]);
        }
    }

    /// Counts one verdict.
    pub fn observe(&self, v: &Verdict) {
        let protocol = v.candidate.proxy.protocol.as_str();
        match &v.outcome {
            Ok(a) => {
                self.checks_total.with_label_values(&[protocol, "alive"]).inc();
                self.check_duration_seconds.with_label_values(&[protocol]).observe(a.latency.as_secs_f64());
            }
            Err(r) => {
                self.checks_total.with_label_values(&[protocol, r.as_str()]).inc();
                if *r == crate::check::Reason::InternalError {
                    self.check_internal_errors_total.inc();
                }
            }
        }
    }

    /// The exposition text.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
