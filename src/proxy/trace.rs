//! A request's trace on the pingora side: where it begins (whose context
//! is continued), the spans of the hooks that call out (the upstream), the
//! trace headers the next hop gets, and the attributes the request span
//! ends with. Making spans and exporting them is `telemetry`'s job.
//!
//! Attributes name the route, the method, the status, the outcome and the
//! contract code, never a path, query, token, cookie or header value.

use std::borrow::Cow;
use std::future::Future;
use std::time::SystemTime;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::KeyValue;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::context::{RequestContext, Traced, Tracing};
use crate::state::AppState;
use crate::telemetry::{self, Outgoing, RequestTrace, TRACEPARENT, TRACESTATE};

/// Begins a request's trace: the client's context is continued when its
/// peer is a trusted proxy (the rule `X-Forwarded-For` follows) or every
/// client is trusted (`trust_client_context`); otherwise a new trace.
pub(super) fn begin(state: &AppState, session: &Session, ctx: &RequestContext) -> Tracing {
    let Some(traces) = &state.traces else {
        return Tracing::Off;
    };
    let trusted = traces.trusts_every_client() || peer_is_trusted(session, ctx);
    let headers = &session.req_header().headers;
    let parent = trusted.then(|| telemetry::incoming(headers)).flatten();
    match traces.begin(parent, Cow::Borrowed("request"), SystemTime::now()) {
        Some(request) => Tracing::Traced(Box::new(Traced {
            request,
            upstream: None,
        })),
        None => Tracing::Untraced,
    }
}

fn peer_is_trusted(session: &Session, ctx: &RequestContext) -> bool {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let trusted = ctx.runtime.as_ref().map(|r| &r.server.trusted_proxies);
    matches!((peer, trusted), (Some(ip), Some(t)) if t.contains(ip))
}

/// The upstream call's span begins with the first attempt's peer.
pub(super) fn upstream_chosen(ctx: &mut RequestContext) {
    // The pool's name is copied only for a traced request: an untraced
    // one pays nothing here.
    if let Tracing::Traced(traced) = &mut ctx.tracing {
        if traced.upstream.is_none() {
            let mut span = traced.request.child("upstream", SpanKind::Client);
            if let Some(route) = &ctx.route {
                use opentelemetry::trace::Span as _;
                let pool = route.upstream.name.clone();
                span.set_attribute(KeyValue::new("portcullis.upstream", pool));
            }
            traced.upstream = Some(span);
        }
    }
}

/// The upstream's answer has begun: its span ends with its status.
pub(super) fn upstream_answered(ctx: &mut RequestContext, status: u16) {
    if let Tracing::Traced(traced) = &mut ctx.tracing {
        if let Some(span) = traced.upstream.take() {
            telemetry::finish(span, || {
                vec![KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                )]
            });
        }
    }
}

/// The trace headers for the upstream: the client's removed when tracing
/// is on, the gateway's upstream span named as the parent.
pub(super) fn to_upstream(ctx: &RequestContext) -> Outgoing {
    ctx.tracing.to_upstream()
}

/// Writes `outgoing` into a request for the next hop.
pub fn apply(upstream: &mut RequestHeader, outgoing: &Outgoing) -> Result<()> {
    let Outgoing::Replace(fields) = outgoing else {
        return Ok(());
    };
    upstream.remove_header(&TRACEPARENT);
    upstream.remove_header(&TRACESTATE);
    for (name, value) in fields {
        upstream.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// The request is done: the request span ends with what it came to.
pub(super) fn end(ctx: &mut RequestContext, method: &http::Method, status: u16) {
    if let Tracing::Traced(traced) = &mut ctx.tracing {
        if let Some(span) = traced.upstream.take() {
            telemetry::finish(span, || vec![KeyValue::new("error.type", "no_answer")]);
        }
    }
    let Tracing::Traced(traced) = &ctx.tracing else {
        return;
    };
    let route = super::access_log::route_label(ctx);
    let request = &traced.request;
    if request.recording() {
        request.rename(format!("{method} {route}"));
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("portcullis.outcome", ctx.outcome),
        ];
        if ctx.outcome != "ok" {
            attributes.push(KeyValue::new("portcullis.error_code", ctx.outcome));
        }
        request.annotate(attributes);
        if status >= 500 || status == 0 {
            request.set_status(Status::error(ctx.outcome));
        }
    }
    request.end();
}

/// Runs `work` inside a child span of the request's trace, if it has one,
/// ended with the attributes `describe` gives its outcome.
pub(crate) async fn in_span<F: Future>(
    trace: Option<&RequestTrace>,
    name: &'static str,
    kind: SpanKind,
    work: F,
    describe: impl FnOnce(&F::Output) -> Vec<KeyValue>,
) -> F::Output {
    let Some(trace) = trace else {
        return work.await;
    };
    let span = trace.child(name, kind);
    let output = work.await;
    telemetry::finish(span, || describe(&output));
    output
}
