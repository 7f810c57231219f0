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
    pub change_log_resyncs: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub reuse_detections: IntCounter,
    pub api_key_failures: IntCounterVec,
    pub sessions_opened: IntCounter,
    pub config_reloads: IntCounterVec,
    pub revoked_tokens: IntGauge,
    pub cached_users: IntGauge,
    pub upstream_target_healthy: prometheus::IntGaugeVec,
    pub jwks_fetches: IntCounterVec,
    pub change_log_lag: IntGauge,
    pub active_sessions: IntGauge,
    pub jwks_key_age: prometheus::GaugeVec,
    pub build_info: prometheus::IntGaugeVec,
    pub log_lines_dropped: IntCounter,
    pub trace_spans_dropped: IntCounter,
    pub audit_lines_dropped: IntCounter,
    pub planted_cookies_stripped: IntCounter,
    pub session_control: IntCounterVec,
    pub rate_limit_decisions: IntCounterVec,
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
    // is a programming error that every test run would catch. One entry per
    // metric family, read top to bottom: a table, longer than a function.
    #[allow(clippy::too_many_lines)]
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
        let metrics = Self {
            requests: counter_vec(
                r,
                "portcullis_requests_total",
                "Requests by route, status class and outcome (ok, or the contract code of the gateway's refusal)",
                &["route", "status_class", "code"],
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
                "Authentication decisions by route and outcome (a contract code, or ok / anonymous)",
                &["route", "outcome"],
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
            change_log_resyncs: counter_vec(
                r,
                "portcullis_change_log_resyncs_total",
                "Snapshots the follower reloaded, by reason: primary_changed (a failover or a restart \
                 put another primary in place), trimmed (the log was trimmed past its position), \
                 unreadable_entry",
                &["reason"],
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
            api_key_failures: counter_vec(
                r,
                "portcullis_api_key_failures_total",
                "API keys refused, by reason: api_key_malformed, api_key_unknown, api_key_wrong, \
                 api_key_expired, api_key_revoked",
                &["reason"],
            ),
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
            build_info: {
                let opts = Opts::new(
                    "portcullis_build_info",
                    "Always 1; the labels say which build is running",
                );
                let g = prometheus::IntGaugeVec::new(opts, &["version"])
                    .unwrap_or_else(|e| panic!("{e}"));
                registry
                    .register(Box::new(g.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                g
            },
            log_lines_dropped: counter(
                r,
                "portcullis_log_lines_dropped_total",
                "Log lines dropped because the log writer's queue was full",
            ),
            trace_spans_dropped: counter(
                r,
                "portcullis_trace_spans_dropped_total",
                "Finished trace spans dropped because the export queue was full",
            ),
            audit_lines_dropped: counter(
                r,
                "portcullis_audit_lines_dropped_total",
                "Audit trail lines dropped because the audit writer's queue was full",
            ),
            planted_cookies_stripped: counter(
                r,
                "portcullis_planted_cookies_stripped_total",
                "Set-Cookie headers for the gateway's own refresh cookie removed from upstream and login-backend responses",
            ),
            session_control: counter_vec(
                r,
                "portcullis_session_control_total",
                "X-Portcullis-Session-Control answers from upstreams, by route, action and outcome \
                 (applied, failed, or why it was ignored: route_not_opted_in, not_2xx, no_session, invalid)",
                &["route", "action", "outcome"],
            ),
            rate_limit_decisions: counter_vec(
                r,
                "portcullis_rate_limit_decisions_total",
                "Rate-limit decisions by route and outcome (allowed, limited, exempt, unavailable)",
                &["route", "outcome"],
            ),
            registry,
        };
        metrics.initialise_series();
        metrics
    }

    /// Creates at zero every labelled series that operators alert on, so
    /// `rate()` and `increase()` see the first event instead of a series
    /// that appears with it.
    fn initialise_series(&self) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for outcome in ["ok", "error"] {
            self.config_reloads.with_label_values(&[outcome]);
            self.jwks_fetches.with_label_values(&[outcome]);
        }
        for operation in STORE_OPERATIONS {
            self.store_errors.with_label_values(&[operation]);
        }
        for outcome in REFRESH_OUTCOMES {
            self.refreshes.with_label_values(&[outcome]);
        }
        for reason in RESYNC_REASONS {
            self.change_log_resyncs.with_label_values(&[reason]);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> Vec<u8> {
        // The gateway's own series exist from the first scrape, at zero.
        LazyLock::force(&UNROUTED);
        LazyLock::force(&ENDPOINTS);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The `operation` labels of `portcullis_store_errors_total`.
pub const STORE_OPERATIONS: [&str; 7] = [
    "admin",
    "load_user",
    "follow",
    "refresh",
    "endpoint",
    "session_control",
    "rate_limit",
];

/// The `reason` labels of `portcullis_change_log_resyncs_total`.
pub const RESYNC_REASONS: [&str; 3] = ["primary_changed", "trimmed", "unreadable_entry"];

/// The `outcome` labels of `portcullis_refreshes_total`.
pub const REFRESH_OUTCOMES: [&str; 5] = [
    "ok",
    "invalid_grant",
    "too_many_requests",
    "unavailable",
    "error",
];

/// The outcomes of an authentication decision: created at zero for every
/// route so an alert on, say, `token_revoked` sees its first event.
const DECISION_OUTCOMES: [&str; 11] = [
    "ok",
    "anonymous",
    "token_missing",
    "invalid_request",
    "token_invalid",
    "token_expired",
    "token_revoked",
    "account_disabled",
    "insufficient_scope",
    "reauthentication_required",
    "auth_unavailable",
];

/// Status classes, indexed by `status / 100 - 1`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A route's pre-resolved counters and latencies: the request path pays an
/// atomic add for a success, and a label lookup only for a refusal.
#[derive(Clone)]
pub struct RouteMetrics {
    route: String,
    /// Requests the gateway let through (`code="ok"`), by status class.
    ok_by_class: [IntCounter; 5],
    decisions: Vec<(&'static str, IntCounter)>,
    pub duration: Histogram,
    pub upstream: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        let m = &*METRICS;
        let class = |c: &str| m.requests.with_label_values(&[route, c, "ok"]);
        Self {
            route: route.to_owned(),
            ok_by_class: STATUS_CLASSES.map(class),
            decisions: DECISION_OUTCOMES
                .iter()
                .map(|o| (*o, m.auth_decisions.with_label_values(&[route, o])))
                .collect(),
            duration: m.request_duration.with_label_values(&[route]),
            upstream: m.upstream_duration.with_label_values(&[route]),
        }
    }

    /// Counts a finished request: `code` is `ok` or the contract code the
    /// gateway answered with.
    pub fn count(&self, status: u16, code: &str) {
        let Some(class) = (status / 100).checked_sub(1).map(usize::from) else {
            return;
        };
        if code == "ok" {
            if let Some(counter) = self.ok_by_class.get(class) {
                counter.inc();
            }
        } else if let Some(class) = STATUS_CLASSES.get(class) {
            METRICS
                .requests
                .with_label_values(&[self.route.as_str(), class, code])
                .inc();
        }
    }

    /// Counts an authentication decision on this route.
    pub fn decide(&self, outcome: &'static str) {
        match self.decisions.iter().find(|(code, _)| *code == outcome) {
            Some((_, counter)) => counter.inc(),
            None => METRICS
                .auth_decisions
                .with_label_values(&[self.route.as_str(), outcome])
                .inc(),
        }
    }
}

/// Metrics for requests that matched no route.
pub static UNROUTED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new(UNROUTED_LABEL));
/// The route label of a request no route or endpoint took: its metrics
/// and its access line.
pub const UNROUTED_LABEL: &str = "_unrouted";

/// The gateway's own endpoints, each under its own route label, and the
/// admin API's refusals.
pub const ENDPOINT_ROUTES: [&str; 7] = [
    "_auth_login",
    "_auth_token",
    "_auth_logout",
    "_auth_sessions",
    "_jwks",
    "_admin",
    "_cors_preflight",
];

static ENDPOINTS: LazyLock<Vec<RouteMetrics>> = LazyLock::new(|| {
    ENDPOINT_ROUTES
        .iter()
        .map(|r| RouteMetrics::new(r))
        .collect()
});

/// The metrics of one of the gateway's endpoints, by its route label.
pub fn endpoint(route: &str) -> &'static RouteMetrics {
    let i = ENDPOINT_ROUTES.iter().position(|r| *r == route);
    i.and_then(|i| ENDPOINTS.get(i)).unwrap_or(&UNROUTED)
}
