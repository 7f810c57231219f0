//! What a finished request leaves behind: its route's metrics, the failure
//! line in the engine's stead, and the access line (`portcullis::access`),
//! which names the route, the outcome and the subject, never the path,
//! query or header values. Every access line, the edge's for a refused
//! head included, is written by [`AccessLine::write`], with one field set.

use std::net::IpAddr;
use std::time::Duration;

use pingora_core::{Error, ErrorSource};
use pingora_proxy::Session;

use super::context::RequestContext;
use crate::metrics::{UNROUTED, UNROUTED_LABEL};

pub use crate::log_queue::ACCESS_TARGET;

/// The failure lines' target: operators filter on it (`RUST_LOG`), so it
/// stays what it has always been, wherever the code lives.
const FAILURE_TARGET: &str = "portcullis::proxy";

/// Counts a finished request in its route's metrics and writes its lines:
/// the failure line when it failed, the access line when it is sampled.
pub(super) fn record(session: &Session, error: Option<&Error>, ctx: &mut RequestContext) {
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let elapsed = ctx.started.elapsed();
    let metrics = match (&ctx.route, ctx.endpoint) {
        (_, Some(endpoint)) => crate::metrics::endpoint(endpoint),
        (Some(route), None) => &route.metrics,
        (None, None) => &*UNROUTED,
    };
    metrics.count(status, ctx.outcome);
    metrics.duration.observe(elapsed.as_secs_f64());
    if let Some(decision) = ctx.decision {
        metrics.decide(decision);
    }
    if let Some(error) = error {
        log_failure(session, error, ctx);
    }
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
        || !sampled(ctx, status, error.is_some())
    {
        return;
    }
    ctx.resolve_client(session);
    let subject = ctx.identity.as_ref().or(ctx.verified.as_ref());
    let upstream = ctx
        .route
        .as_ref()
        .filter(|_| ctx.upstream_started.is_some());
    AccessLine {
        request_id: &ctx.request_id,
        trace_id: ctx.tracing.request().map(|t| t.trace_id()),
        client: ctx.client.as_ref().map(|c| c.ip),
        method: session.req_header().method.as_str(),
        route: route_label(ctx),
        status,
        outcome: ctx.outcome,
        subject: subject.map(|i| i.claims.sub.as_str()),
        upstream: upstream.map(|r| r.upstream.name.as_str()),
        latency: elapsed,
        error: error.map(|e| e.etype().as_str()),
    }
    .write();
}

/// One request's access line: the same fields for every request, whoever
/// answered it (`-` for what is not known).
pub(super) struct AccessLine<'a> {
    pub request_id: &'a str,
    /// The request's trace (`[tracing]`), when it has one.
    pub trace_id: Option<crate::telemetry::TraceId>,
    /// The client through the trusted proxies (`[server] trusted_proxies`).
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    /// `ok`, or the contract code of the refusal.
    pub outcome: &'a str,
    pub subject: Option<&'a str>,
    /// The upstream pool, once one was chosen.
    pub upstream: Option<&'a str>,
    pub latency: Duration,
    /// The kind of failure, if any.
    pub error: Option<&'a str>,
}

impl AccessLine<'_> {
    /// Writes the line at info under `portcullis::access`. Its fields are
    /// what the direct writer (`log_line`) and the README describe: no
    /// `message`.
    pub(super) fn write(&self) {
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %self.request_id,
            // Only on a traced request: with tracing off the line is unchanged.
            trace_id = self.trace_id.map(tracing::field::display),
            client = %OrDash(self.client),
            method = %self.method,
            route = self.route,
            status = self.status,
            outcome = self.outcome,
            subject = self.subject.unwrap_or("-"),
            upstream = self.upstream.unwrap_or("-"),
            latency_us = self.latency.as_micros() as u64,
            error = self.error,
        );
    }
}

/// Whether a finished request gets its access line: always for a refusal,
/// a failure or an error status; for a success, with the configured
/// share (`[server] access_log_sample`).
fn sampled(ctx: &RequestContext, status: u16, failed: bool) -> bool {
    let share = ctx
        .runtime
        .as_ref()
        .map_or(1.0, |r| r.server.access_log_sample);
    let success = ctx.outcome == "ok" && !failed && (1..400).contains(&status);
    !success || share >= 1.0 || (share > 0.0 && rand::random::<f64>() < share)
}

/// A value in a log line, or `-` when there is none.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The route a request is logged and counted under: the configured route,
/// one of the gateway's endpoints, or `_unrouted`.
pub(super) fn route_label(ctx: &RequestContext) -> &str {
    match (&ctx.route, ctx.endpoint) {
        (_, Some(endpoint)) => endpoint,
        (Some(route), None) => route.name.as_str(),
        (None, None) => UNROUTED_LABEL,
    }
}

/// A failed request, in the engine's stead: the error's kind and side, the
/// route and the request id, never the request's path or headers. A client
/// that went away is routine (debug); an upstream that failed is an
/// operator's concern (warn); anything else is the gateway's own (error).
fn log_failure(session: &Session, error: &Error, ctx: &RequestContext) {
    let kind = error.etype().as_str();
    let method = &session.req_header().method;
    let route = route_label(ctx);
    // Formatted only if the line is written (an upstream failure).
    let target = OrDash(ctx.backend.as_ref().map(|b| &b.addr));
    let id = ctx.request_id.as_str();
    match error.esource() {
        ErrorSource::Downstream => {
            tracing::debug!(target: FAILURE_TARGET, request_id = id, %method, route, kind, "client connection failed")
        }
        ErrorSource::Upstream => {
            tracing::warn!(target: FAILURE_TARGET, request_id = id, %method, route, %target, kind, outcome = ctx.outcome, "upstream failed")
        }
        _ => {
            tracing::error!(target: FAILURE_TARGET, request_id = id, %method, route, kind, outcome = ctx.outcome, "request failed")
        }
    }
}
