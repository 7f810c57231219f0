//! A request's trace on the pingora side: where it begins (whose context
//! is continued), the spans of the hooks that call out (the upstream), the
//! trace headers the next hop gets, and the attributes the request span
//! ends with. Making spans and exporting them is `telemetry`'s job.
//!
//! Attributes name the route, the method, the status, the outcome and the
//! contract code, never a path, query, token, cookie or header value.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;

use opentelemetry::KeyValue;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::context::{RequestContext, Traced, Tracing};
use crate::config::runtime::router::Route;
use crate::config::runtime::upstream::UpstreamPool;
use crate::metrics::UNROUTED_LABEL;
use crate::state::AppState;
use crate::telemetry::{
    self, Label, Named, Outgoing, RequestTrace, SpanKind, TRACEPARENT, TRACESTATE,
};

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
    match traces.begin(parent) {
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

/// A route's name goes into its spans shared, not copied.
impl Named for Route {
    fn name(&self) -> &str {
        &self.name
    }
}

/// So does an upstream pool's.
impl Named for UpstreamPool {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The upstream call's span begins with the first attempt's peer.
pub(super) fn upstream_chosen(ctx: &mut RequestContext) {
    let RequestContext { route, tracing, .. } = ctx;
    let Tracing::Traced(traced) = tracing else {
        return;
    };
    if traced.upstream.is_none() {
        let mut span = traced.request.child("upstream", SpanKind::Client);
        if let Some(route) = route.as_ref().filter(|_| span.is_recording()) {
            let pool: Arc<dyn Named> = route.upstream.clone();
            span.set_label("portcullis.upstream", Label::Shared(pool));
        }
        traced.upstream = Some(span);
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
    // The client's copies, if it sent any, found in one pass over the
    // request's few names: a hashed removal of a name nearly no request
    // carries cost more than the pass.
    let (mut client_parent, mut client_state) = (false, false);
    for name in upstream.headers.keys() {
        client_parent |= *name == TRACEPARENT;
        client_state |= *name == TRACESTATE;
    }
    // An insert replaces every value the client sent under the name. The
    // names are `&'static str`: the engine copies a `HeaderName`'s bytes.
    let state = fields.as_ref().and_then(|fields| fields.tracestate());
    match fields {
        Some(fields) => upstream.insert_header("traceparent", fields.traceparent())?,
        None if client_parent => drop(upstream.remove_header(&TRACEPARENT)),
        None => {}
    }
    match state {
        Some(state) => upstream.insert_header("tracestate", state)?,
        None if client_state => drop(upstream.remove_header(&TRACESTATE)),
        None => {}
    }
    Ok(())
}

/// The request is done: the request span ends with what it came to.
pub(super) fn end(ctx: &mut RequestContext, method: &http::Method, status: u16) {
    let recording = matches!(&ctx.tracing, Tracing::Traced(t) if t.request.recording());
    let route = recording.then(|| route_label(ctx));
    let outcome = ctx.outcome;
    let Tracing::Traced(traced) = &mut ctx.tracing else {
        return;
    };
    if let Some(span) = traced.upstream.take() {
        telemetry::finish(span, || vec![KeyValue::new("error.type", "no_answer")]);
    }
    if let Some(route) = route {
        traced.request.end(method, route, status, outcome);
    }
}

/// The request span's route: the access log's label
/// (`access_log::route_label`), the route's own name shared.
fn route_label(ctx: &RequestContext) -> Label {
    match (&ctx.route, ctx.endpoint) {
        (_, Some(endpoint)) => Label::Static(endpoint),
        (Some(route), None) => {
            let named: Arc<dyn Named> = route.clone();
            Label::Shared(named)
        }
        (None, None) => Label::Static(UNROUTED_LABEL),
    }
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

/// The algorithms a JWS header may name (RFC 7518 §3.1, RFC 8037 §3.1),
/// as the verification span reports them.
#[cfg(test)]
const ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384",
    "PS512", "EdDSA",
];

/// The name a verified token's algorithm has in a JWS header (RFC 7518
/// §3.1, RFC 8037 §3.1), as the verification span reports it.
pub(crate) fn algorithm_name(algorithm: jsonwebtoken::Algorithm) -> &'static str {
    use jsonwebtoken::Algorithm as A;
    match algorithm {
        A::HS256 => "HS256",
        A::HS384 => "HS384",
        A::HS512 => "HS512",
        A::ES256 => "ES256",
        A::ES384 => "ES384",
        A::RS256 => "RS256",
        A::RS384 => "RS384",
        A::RS512 => "RS512",
        A::PS256 => "PS256",
        A::PS384 => "PS384",
        A::PS512 => "PS512",
        A::EdDSA => "EdDSA",
    }
}

/// The algorithm a token's header names, for the span of a refused
/// token (a verified one keeps the algorithm it was checked with): the
/// header alone is decoded, and only its `alg` is read (never a claim or
/// the signature). `None` for a malformed header or an algorithm no
/// verifier knows. This is what `jsonwebtoken::decode_header` would say,
/// without building its whole `Header` on every traced request.
pub(crate) fn token_algorithm(token: &str) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    struct Header<'a> {
        #[serde(borrow)]
        alg: Cow<'a, str>,
    }
    let encoded = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    let header: Header<'_> = serde_json::from_slice(&json).ok()?;
    let algorithm: jsonwebtoken::Algorithm = header.alg.parse().ok()?;
    Some(algorithm_name(algorithm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str) -> String {
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
        format!("{encoded}.eyJzdWIiOiJhbGljZSJ9.c2ln")
    }

    #[test]
    fn an_algorithms_name_is_the_one_its_header_gives() {
        for name in ALGORITHMS {
            let token = token(&format!(r#"{{"alg":"{name}"}}"#));
            let header = jsonwebtoken::decode_header(&token).ok();
            let algorithm = header.map(|h| h.alg);
            assert_eq!(algorithm.map(algorithm_name), Some(name));
        }
    }

    #[test]
    fn a_tokens_algorithm_is_read_from_its_header_as_jsonwebtoken_reads_it() {
        for header in [
            r#"{"alg":"HS256","typ":"at+jwt","kid":"k1"}"#,
            r#"{"typ":"JWT","alg":"EdDSA"}"#,
            r#"{"kid":"a\"b","alg":"ES384","x5t":"abc"}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS257"}"#,
            r#"{"typ":"JWT"}"#,
            "not json",
        ] {
            let token = token(header);
            let theirs = jsonwebtoken::decode_header(&token)
                .ok()
                .map(|h| format!("{:?}", h.alg));
            assert_eq!(
                token_algorithm(&token).map(str::to_owned),
                theirs,
                "{header}"
            );
        }
        assert_eq!(token_algorithm("%%%.x.y"), None);
    }
}
