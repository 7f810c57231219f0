//! Prometheus metrics, named `portcullis_*` after Prometheus conventions
//! (base units in names, `_total` counters).
//!
//! Labels are bounded: routes by their configured name, outcomes by the
//! contract's codes, never paths or users. Handles on the request path are
//! resolved once (per route at config compile time, per outcome here), so
//! counting costs an atomic add, not a label lookup.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub auth_decisions: IntCounterVec,
    pub verified_cache_hits: IntCounter,
    pub verified_cache_misses: IntCounter,
    pub view_staleness: prometheus::Gauge,
    pub change_log_behind: IntCounter,
    pub store_errors: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub reuse_detections: IntCounter,
    pub sessions_opened: IntCounter,
    pub config_reloads: IntCounterVec,
    pub revoked_tokens: IntGauge,
    pub cached_users: IntGauge,
    pub upstream_target_healthy: prometheus::IntGaugeVec,
    pub jwks_fetches: IntCounterVec,
    pub change_log_lag: IntGauge,
    pub active_sessions: IntGauge,
    pub jwks_key_age: prometheus::GaugeVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    vec
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let vec = HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    vec
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    g
}

impl Metrics {
    // The names and labels below are constants: a failure to register them
    // is a programming error that every test run would catch.
    fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let staleness = prometheus::Gauge::new(
            "portcullis_revocation_view_staleness_seconds",
            "Seconds since the revocation view was last confirmed fresh against the store",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        registry
            .register(Box::new(staleness.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let refreshes = counter_vec(
            r,
            "portcullis_refreshes_total",
            "Refresh-token grants by outcome",
            &["outcome"],
        );
        Self {
            requests: counter_vec(
                r,
                "portcullis_requests_total",
                "Requests by route and status class",
                &["route", "status_class"],
            ),
            request_duration: histogram_vec(
                r,
                "portcullis_request_duration_seconds",
                "Time from request to response",
                &["route"],
            ),
            upstream_duration: histogram_vec(
                r,
                "portcullis_upstream_duration_seconds",
                "Time from connecting to the upstream to its response header",
                &["route"],
            ),
            auth_decisions: counter_vec(
                r,
                "portcullis_auth_decisions_total",
                "Authentication decisions by outcome (a contract code, or ok / anonymous)",
                &["outcome"],
            ),
            verified_cache_hits: counter(
                r,
                "portcullis_verified_token_cache_hits_total",
                "Tokens found in the verified-token cache",
            ),
            verified_cache_misses: counter(
                r,
                "portcullis_verified_token_cache_misses_total",
                "Tokens verified in full (signature and claims)",
            ),
            view_staleness: staleness,
            change_log_behind: counter(
                r,
                "portcullis_change_log_resyncs_total",
                "Times the follower fell behind the change log's retention and reloaded a snapshot",
            ),
            store_errors: counter_vec(
                r,
                "portcullis_store_errors_total",
                "Failed store operations",
                &["operation"],
            ),
            reuse_detections: counter(
                r,
                "portcullis_refresh_reuse_detections_total",
                "Rotated-out refresh tokens presented again: sessions revoked as stolen",
            ),
            refreshes,
            sessions_opened: counter(
                r,
                "portcullis_sessions_opened_total",
                "Sessions opened by login or trusted issuance",
            ),
            config_reloads: counter_vec(
                r,
                "portcullis_config_reloads_total",
                "Configuration reloads by outcome",
                &["outcome"],
            ),
            revoked_tokens: int_gauge(
                r,
                "portcullis_revoked_tokens",
                "Live revocations held in this instance's view",
            ),
            cached_users: int_gauge(
                r,
                "portcullis_cached_users",
                "User records cached in this instance's view",
            ),
            change_log_lag: int_gauge(
                r,
                "portcullis_change_log_lag_entries",
                "Change log entries written but not yet applied to this instance's view",
            ),
            active_sessions: int_gauge(
                r,
                "portcullis_active_sessions",
                "Sessions neither ended nor past their absolute end",
            ),
            jwks_fetches: counter_vec(
                r,
                "portcullis_jwks_fetches_total",
                "JWKS fetches by outcome",
                &["outcome"],
            ),
            jwks_key_age: {
                let opts = Opts::new(
                    "portcullis_jwks_key_age_seconds",
                    "Seconds since the issuer's keys were last fetched",
                );
                let g =
                    prometheus::GaugeVec::new(opts, &["issuer"]).unwrap_or_else(|e| panic!("{e}"));
                registry
                    .register(Box::new(g.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                g
            },
            upstream_target_healthy: {
                let opts = Opts::new(
                    "portcullis_upstream_target_healthy",
                    "1 when the target may receive traffic",
                );
                let g = prometheus::IntGaugeVec::new(opts, &["upstream", "target"])
                    .unwrap_or_else(|e| panic!("{e}"));
                registry
                    .register(Box::new(g.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                g
            },
            registry,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// A route's pre-resolved request counters (by status class) and latency.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [IntCounter; 5],
    pub duration: Histogram,
    pub upstream: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        let m = &*METRICS;
        let class = |c: &str| m.requests.with_label_values(&[route, c]);
        Self {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: m.request_duration.with_label_values(&[route]),
            upstream: m.upstream_duration.with_label_values(&[route]),
        }
    }

    pub fn count(&self, status: u16) {
        if let Some(counter) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.by_class.get(usize::from(i)))
        {
            counter.inc();
        }
    }
}

/// Outcome counters resolved once.
pub struct Decisions {
    codes: Vec<(&'static str, IntCounter)>,
}

impl Decisions {
    pub fn count(&self, outcome: &'static str) {
        match self.codes.iter().find(|(code, _)| *code == outcome) {
            Some((_, counter)) => counter.inc(),
            None => METRICS.auth_decisions.with_label_values(&[outcome]).inc(),
        }
    }
}

pub static DECISIONS: LazyLock<Decisions> = LazyLock::new(|| {
    let codes = [
        "ok",
        "anonymous",
        "token_missing",
        "invalid_request",
        "token_invalid",
        "token_expired",
        "token_revoked",
        "account_disabled",
        "insufficient_scope",
        "auth_unavailable",
    ];
    Decisions {
        codes: codes
            .iter()
            .map(|c| (*c, METRICS.auth_decisions.with_label_values(&[c])))
            .collect(),
    }
});

/// Metrics for requests that matched no route, and for the gateway's own
/// endpoints.
pub static UNROUTED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new("_unrouted"));
pub static GATEWAY_ENDPOINTS: LazyLock<RouteMetrics> =
    LazyLock::new(|| RouteMetrics::new("_gateway"));
