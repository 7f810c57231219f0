//! The pingora side: routing, authentication dispatch, header rewrite and
//! the responses the gateway writes itself. What it routes on (the compiled
//! route table, header rules, CORS policies) comes from `config::runtime`;
//! assembling the server around it is `crate::server`'s job.
//!
//! Each hook is a short dispatcher; the decisions live in `auth` and in the
//! pure helpers of this module's children.

pub mod access_log;
pub mod admission;
mod api_key;
pub mod assertion;
mod audit;
pub mod chunked;
pub mod client_addr;
pub mod context;
pub mod cors;
pub mod edge;
pub mod endpoints;
pub mod h2_guard;
pub mod head;
pub mod header_names;
pub mod headers;
mod method_override;
pub mod proxy_protocol;
pub mod rate_limit;
pub mod respond;
pub mod session_control;
mod stream_traits;
pub mod trace;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_core::modules::http::compression::ResponseCompressionBuilder;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::clock::unix_now;
use crate::config::Runtime;
use crate::state::AppState;
use crate::vocabulary::{REQUEST_ID, TOKEN_EXPIRES_IN, TOKEN_EXPIRES_IN_HEADER};
pub use context::RequestContext;
use respond::Refusal;

/// The proxy: reads the current configuration (swapped whole on reload)
/// and the revocation view from the shared state.
pub struct Gateway {
    state: Arc<AppState>,
}

impl Gateway {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    // Boxed: the engine moves its per-request future (which holds the
    // context) around; a pointer moves cheaper than the context's 400 bytes.
    type CTX = Box<RequestContext>;

    fn new_ctx(&self) -> Box<RequestContext> {
        Box::new(RequestContext::new())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestContext>,
    ) -> Result<bool> {
        let runtime = self.state.runtime.load_full();
        ctx.request_id = request_id_of(session.req_header());
        ctx.runtime = Some(Arc::clone(&runtime));
        ctx.tracing = trace::begin(&self.state, session, ctx);
        // A policy is attached (the module looked up) only when one is on,
        // or to replace one that is.
        let global_cors = runtime.cors.global.enabled();
        if global_cors {
            cors::attach(session, &runtime.cors.global);
        }
        // Before anything reads a header: HTTP/2 requests reach this hook
        // without the edge's head check.
        let underscores = runtime.server.headers_with_underscores;
        if let Err(refusal) = header_names::screen(session.req_header_mut(), underscores) {
            return Box::pin(refuse(session, refusal, ctx)).await;
        }
        // The gateway's own answers (preflights, endpoints, refusals) are
        // boxed futures of their own: this hook's future is allocated and
        // moved for every request, and inlining them made it kilobytes.
        if let Some(policy) = cors::preflight_policy(&runtime, session.req_header()) {
            ctx.endpoint = Some("_cors_preflight");
            return Box::pin(answer_preflight(session, &policy, ctx)).await;
        }
        let decision = match admission::target_of(&runtime, session.req_header()) {
            Err(refusal) => Err(refusal),
            Ok(target) => match endpoints::endpoint_for(&target.path) {
                Some(endpoint) => {
                    Box::pin(serve_endpoint(
                        &self.state,
                        &runtime,
                        endpoint,
                        session,
                        ctx,
                    ))
                    .await
                }
                None => {
                    match admission::admit(&runtime, &self.state, session.req_header(), target, ctx)
                        .await
                    {
                        Ok(()) if rate_limit::applies(ctx) => {
                            Box::pin(rate_limit::check(&self.state, session, ctx))
                                .await
                                .map(|()| false)
                        }
                        other => other.map(|()| false),
                    }
                }
            },
        };
        if let Some(route) = ctx
            .route
            .as_ref()
            .filter(|r| global_cors || r.cors.enabled())
        {
            cors::attach(session, &route.cors);
        }
        match decision {
            Ok(responded) => Ok(responded),
            Err(refusal) => Box::pin(refuse(session, refusal, ctx)).await,
        }
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // pingora's default: compression, added but off.
        modules.add_module(ResponseCompressionBuilder::enable(0));
        modules.add_module(Box::new(cors::CorsModuleBuilder));
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<RequestContext>,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_started = Some(Instant::now());
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let Some(backend) = route.upstream.select() else {
            ctx.no_healthy_target = true;
            return Error::e_explain(ErrorType::ConnectNoRoute, "no healthy upstream target");
        };
        let peer = route.upstream.peer(&backend);
        ctx.backend = Some(backend);
        ctx.connect_attempts += 1;
        trace::upstream_chosen(ctx);
        Ok(Box::new(peer))
    }

    /// A target that refuses the connection is left out for a while, and
    /// the request, which was not sent, goes to the next target.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<RequestContext>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(route), Some(backend)) = (&ctx.route, ctx.backend.take()) {
            route.upstream.eject(&backend);
            let targets = route.upstream.health().len();
            e.set_retry(ctx.connect_attempts < targets);
        }
        e
    }

    /// A failure after the connection was made is final, whatever the
    /// method: the upstream may have read the request and acted on it, so
    /// sending it again is the client's call (RFC 9110 §9.2.2). The
    /// engine's default would resend on a fresh connection when a reused
    /// one fails. Only `fail_to_connect` retries: nothing was sent.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        _session: &mut Session,
        e: Box<Error>,
        _ctx: &mut Box<RequestContext>,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        e.set_retry(false);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Box<RequestContext>,
    ) -> Result<()> {
        ctx.resolve_client(session);
        let Some(runtime) = ctx.runtime.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no runtime");
        };
        // A body read that makes no progress for the head's deadline ends
        // the request (the engine's own wait is a minute per read).
        session.set_read_timeout(Some(runtime.server.header_read_timeout));
        let identity = ctx.identity.as_ref().map_or(&[][..], |i| &i.forwarded);
        let client = ctx.client.as_ref();
        headers::to_upstream(
            runtime,
            session,
            upstream,
            identity,
            &ctx.request_id,
            client,
            &trace::to_upstream(ctx),
        )?;
        if let Some(auth) = ctx
            .route
            .as_ref()
            .and_then(|r| r.upstream.upstream_auth.as_ref())
        {
            let subject = ctx.identity.as_ref().map(|i| i.claims.sub.as_str());
            headers::present_upstream_auth(upstream, auth, subject)?;
        }
        // Cloned, not taken: on a retry pingora runs this hook again on a
        // fresh copy of the client's request, which must be rewritten too.
        if let Some(uri) = &ctx.upstream_uri {
            upstream.set_uri(uri.clone());
        }
        if let Some(route) = &ctx.route {
            assertion::attach(
                runtime,
                route,
                ctx.identity.as_ref(),
                &ctx.request_id,
                upstream,
            )?;
        }
        Ok(())
    }

    /// A proxied body must keep coming: after the head's deadline it must
    /// have averaged `MIN_BODY_RATE`, or the request ends with 408 and the
    /// upstream's connection is cut, never completed. A client sending a
    /// few bytes a second would otherwise hold a client and an upstream
    /// connection for as long as it likes.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<RequestContext>,
    ) -> Result<()> {
        let Some(runtime) = ctx.runtime.as_ref() else {
            return Ok(());
        };
        let grace = runtime.server.header_read_timeout;
        if !end_of_stream && body_too_slow(ctx.started.elapsed(), grace, session.body_bytes_read())
        {
            return Error::e_explain(ErrorType::HTTPStatus(408), "request body too slow");
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Box<RequestContext>,
    ) -> Result<()> {
        trace::upstream_answered(ctx, response.status.as_u16());
        if let (Some(started), Some(route)) = (ctx.upstream_started, &ctx.route) {
            route
                .metrics
                .upstream
                .observe(started.elapsed().as_secs_f64());
        }
        if let Some(route) = &ctx.route {
            headers::note_refused_upstream_auth(&route.upstream, response.status);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Box<RequestContext>,
    ) -> Result<()> {
        // The gateway's own names are looked for in one pass over the
        // answer's few headers; most answers carry none of them.
        if headers::names_gateway_headers(response) {
            // Only the gateway tells a client when to refresh (`0` makes
            // `portcullis-client` refresh at once): an upstream's hint goes.
            response.remove_header(&TOKEN_EXPIRES_IN);
            // Then, before `from_upstream` removes its header: the store's
            // write is acknowledged before the answer goes on.
            if session_control::asked_for(response) {
                Box::pin(session_control::apply(&self.state.view, response, ctx)).await?;
            }
        }
        let (Some(runtime), Some(route)) = (&ctx.runtime, &ctx.route) else {
            // Only a routed request reaches an upstream (`upstream_peer`).
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let http2 = session.is_http2();
        if !http2 {
            speak_http11(session, response);
        }
        headers::from_upstream(
            runtime,
            &route.cors,
            response,
            &route.name,
            &ctx.request_id,
            http2,
        )?;
        if let Some(fields) = ctx.rate_limit.take() {
            rate_limit::announce(response, route, fields)?;
        }
        // Applied session control has set its own hint (refresh now).
        if let Some(identity) = ctx
            .identity
            .as_ref()
            .filter(|_| ctx.outcome != session_control::OUTCOME)
        {
            let left = identity.claims.exp.saturating_sub(unix_now());
            if left < runtime.refresh_hint_secs {
                response.insert_header(TOKEN_EXPIRES_IN_HEADER, left.to_string())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestContext>,
    ) -> FailToProxy {
        let refusal = if ctx.no_healthy_target {
            Some(Refusal::no_healthy_upstream())
        } else if ctx.session_control_failed {
            Some(Refusal::auth_unavailable())
        } else {
            refusal_for(e)
        };
        let Some(refusal) = refusal else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        ctx.outcome = refusal.code;
        // The connection is not reused after a failed proxy attempt, so the
        // answer says so rather than promising keep-alive.
        session.set_keepalive(None);
        if let Err(write_error) = refusal.send(session, &ctx.request_id).await {
            tracing::debug!(error = %write_error, "could not write the error response");
        }
        FailToProxy {
            error_code: refusal.status.as_u16(),
            can_reuse_downstream: false,
        }
    }

    /// What the engine's own log lines say about a request: never its path,
    /// query or header values, which may carry secrets (a reset code in a
    /// query string, a token in a header).
    fn request_summary(&self, session: &Session, ctx: &Box<RequestContext>) -> String {
        format!(
            "method={} route={} request_id={}",
            session.req_header().method,
            access_log::route_label(ctx),
            ctx.request_id
        )
    }

    /// The engine's final "Fail to proxy" line is replaced by the access
    /// log's own failure line (see `logging`), which knows the outcome and
    /// puts a client that went away at debug, not ERROR.
    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &Box<RequestContext>,
        _e: &Error,
    ) -> bool {
        true
    }

    async fn logging(
        &self,
        session: &mut Session,
        error: Option<&Error>,
        ctx: &mut Box<RequestContext>,
    ) {
        access_log::record(session, error, ctx);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // Before the trace ends: the audit line names its trace.
        audit::record(&self.state.audit, session, ctx);
        trace::end(ctx, &session.req_header().method, status);
    }
}

/// The slowest average rate a proxied body may arrive at once the head's
/// deadline has passed: Apache's `mod_reqtimeout` default (`MinRate=500`),
/// far below any real uplink.
const MIN_BODY_RATE: u64 = 500;

/// Whether a body with `read` bytes so far, `elapsed` after its request
/// began, is slower than `grace` plus one second per `MIN_BODY_RATE` bytes.
fn body_too_slow(elapsed: std::time::Duration, grace: std::time::Duration, read: usize) -> bool {
    let earned = std::time::Duration::from_secs(read as u64 / MIN_BODY_RATE);
    elapsed > grace + earned
}

/// An HTTP/1.x client gets the gateway's own version, `HTTP/1.1`, whatever
/// the upstream spoke: an intermediary sends its own (RFC 9110 §2.5, RFC
/// 9112 §2.3), and an `HTTP/1.0` status line beside `Connection:
/// keep-alive` would leave a client unsure how the body ends. The engine
/// already frames a close-delimited upstream body as chunked for the
/// client; an HTTP/1.0 client cannot read chunked (RFC 9112 §6.1), so its
/// answer is close-delimited instead, and the connection closes after it.
fn speak_http11(session: &mut Session, response: &mut ResponseHeader) {
    response.set_version(http::Version::HTTP_11);
    let chunked = response
        .headers
        .get(http::header::TRANSFER_ENCODING)
        .is_some();
    if chunked && session.req_header().version < http::Version::HTTP_11 {
        response.remove_header(&http::header::TRANSFER_ENCODING);
        session.set_keepalive(None);
    }
}

/// A CORS preflight, granted or refused; `Ok(true)`: it has been answered.
async fn answer_preflight(
    session: &mut Session,
    policy: &crate::config::runtime::cors::CorsPolicy,
    ctx: &mut RequestContext,
) -> Result<bool> {
    if let Err(refusal) = cors::answer_preflight(session, policy, &ctx.request_id).await {
        return refuse(session, refusal, ctx).await;
    }
    Ok(true)
}

/// One of the gateway's own endpoints; `Ok(true)`: it has answered.
async fn serve_endpoint(
    state: &AppState,
    runtime: &Arc<Runtime>,
    endpoint: endpoints::Endpoint,
    session: &mut Session,
    ctx: &mut RequestContext,
) -> Result<bool, Refusal> {
    ctx.endpoint = Some(endpoint.route_label());
    endpoint.check_method(&session.req_header().method)?;
    let outcome = endpoints::serve(endpoint, state, runtime, session, ctx).await?;
    ctx.outcome = outcome;
    Ok(true)
}

/// Answers a refusal; `Ok(true)`: the request is done.
async fn refuse(session: &mut Session, refusal: Refusal, ctx: &mut RequestContext) -> Result<bool> {
    ctx.outcome = refusal.code;
    refusal.send(session, &ctx.request_id).await?;
    Ok(true)
}

fn request_id_of(request: &RequestHeader) -> String {
    request
        .headers
        .get(REQUEST_ID)
        .filter(|v| headers::acceptable_request_id(v.as_bytes()))
        .and_then(|v| v.to_str().ok())
        .map_or_else(headers::new_request_id, str::to_owned)
}

/// The contract response for a proxying failure, `None` when the client is gone.
fn refusal_for(e: &Error) -> Option<Refusal> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(408)) => Some(Refusal::request_timeout()),
        (_, HTTPStatus(code)) if *code < 500 => Some(Refusal::bad_request()),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout | ConnectTimedout) => {
            Some(Refusal::gateway_timeout())
        }
        (ErrorSource::Upstream, _) => Some(Refusal::bad_gateway()),
        // A chunked body the edge found malformed after the head went
        // upstream: the client gets its 400 if no answer has started.
        (ErrorSource::Downstream, ReadError) if chunked::is_malformed_body(e) => {
            Some(Refusal::bad_request())
        }
        (ErrorSource::Downstream, WriteError | ReadError | ConnectionClosed) => None,
        (ErrorSource::Downstream, ReadTimedout) => Some(Refusal::request_timeout()),
        (ErrorSource::Downstream, _) => Some(Refusal::bad_request()),
        (_, ConnectNoRoute | ConnectRefused | ConnectError) => Some(Refusal::bad_gateway()),
        _ => Some(Refusal::internal()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::body_too_slow;

    #[test]
    fn a_body_earns_a_second_per_500_bytes_after_the_grace() {
        let grace = Duration::from_secs(10);
        assert!(!body_too_slow(Duration::from_secs(9), grace, 0));
        assert!(body_too_slow(Duration::from_secs(11), grace, 0));
        assert!(!body_too_slow(Duration::from_secs(11), grace, 1000));
        assert!(body_too_slow(Duration::from_secs(80), grace, 5 * 75));
        assert!(!body_too_slow(Duration::from_secs(80), grace, 1_000_000));
    }
}
