//! The pingora side: routing, authentication dispatch, header rewrite and
//! the responses the gateway writes itself. What it routes on (the compiled
//! route table, header rules, CORS policies) comes from `config::runtime`;
//! assembling the server around it is `crate::server`'s job.
//!
//! Each hook is a short dispatcher; the decisions live in `auth` and in the
//! pure helpers of this module's children.

pub mod chunked;
pub mod client_addr;
pub mod cors;
pub mod edge;
pub mod endpoints;
pub mod head;
pub mod headers;
pub mod proxy_protocol;
pub mod respond;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::header::{AUTHORIZATION, CONNECTION, HOST};
use http::Method;
use pingora_core::modules::http::compression::ResponseCompressionBuilder;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::auth::extract::query_has_access_token;
use crate::auth::{extract_bearer, unix_now, AuthError, VerifiedToken};
use crate::config::raw::AuthMode;
use crate::config::runtime::cors::{is_preflight, CorsPolicy};
use crate::config::runtime::path;
use crate::config::runtime::router::Route;
use crate::config::Runtime;
use crate::metrics::UNROUTED;
use crate::state::AppState;
use crate::store::RevocationView;
use respond::{Refusal, ERROR_HEADER, REQUEST_ID_HEADER};

pub const TOKEN_EXPIRES_IN_HEADER: &str = "x-token-expires-in";

/// Per-request state, written by `request_filter` and read by later hooks.
pub struct RequestContext {
    pub request_id: String,
    pub started: Instant,
    /// The configuration this request started with, kept until it ends.
    pub runtime: Option<Arc<Runtime>>,
    pub route: Option<Arc<Route>>,
    /// Written only by authentication, read only by header injection.
    pub identity: Option<Arc<VerifiedToken>>,
    /// The normalised path plus the original query, for the upstream.
    pub upstream_uri: Option<http::Uri>,
    /// The contract code of a refusal, or `ok`.
    pub outcome: &'static str,
    /// The gateway answered one of its own endpoints: its route label.
    pub endpoint: Option<&'static str>,
    /// A token whose signature and claims verified, kept even when a later
    /// check refused it, so the log names whom a refusal concerned.
    pub verified: Option<Arc<VerifiedToken>>,
    /// The authentication decision on a route that looks at tokens.
    pub decision: Option<&'static str>,
    /// When the upstream was chosen, for the upstream latency.
    pub upstream_started: Option<Instant>,
    /// The target of the current attempt.
    pub backend: Option<pingora_load_balancing::Backend>,
    pub connect_attempts: usize,
    /// Every target of the pool is down: 503, not 502.
    pub no_healthy_target: bool,
    /// The client address, resolved once through the trusted proxies for
    /// both `X-Forwarded-For` and the access log.
    pub client: Option<client_addr::ClientAddress>,
}

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
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            request_id: String::new(),
            started: Instant::now(),
            runtime: None,
            route: None,
            identity: None,
            upstream_uri: None,
            outcome: "ok",
            endpoint: None,
            verified: None,
            decision: None,
            upstream_started: None,
            backend: None,
            connect_attempts: 0,
            no_healthy_target: false,
            client: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<bool> {
        let runtime = self.state.runtime.load_full();
        ctx.request_id = request_id_of(session.req_header());
        ctx.runtime = Some(Arc::clone(&runtime));
        cors::attach(session, &runtime.cors.global);
        if let Some(policy) = preflight_policy(&runtime, session.req_header()) {
            ctx.endpoint = Some("_cors_preflight");
            if let Err(refusal) = cors::answer_preflight(session, &policy, &ctx.request_id).await {
                ctx.outcome = refusal.code;
                refusal.send(session, &ctx.request_id).await?;
            }
            return Ok(true);
        }
        let decision = match target_of(&runtime, session.req_header()) {
            Err(refusal) => Err(refusal),
            Ok(target) => match endpoints::endpoint_for(&session.req_header().method, &target.path)
            {
                Some(endpoint) => {
                    ctx.endpoint = Some(endpoint_route(&target.path));
                    let served = match endpoint {
                        Ok(endpoint) => {
                            endpoints::serve(endpoint, &self.state, &runtime, session, ctx).await
                        }
                        Err(refusal) => Err(refusal),
                    };
                    served.map(|outcome| {
                        ctx.outcome = outcome;
                        true
                    })
                }
                None => admit(
                    &runtime,
                    &self.state.view,
                    session.req_header(),
                    target,
                    ctx,
                )
                .await
                .map(|()| false),
            },
        };
        if let Some(route) = &ctx.route {
            cors::attach(session, runtime.cors.for_route(route));
        }
        match decision {
            Ok(responded) => Ok(responded),
            Err(refusal) => {
                ctx.outcome = refusal.code;
                refusal.send(session, &ctx.request_id).await?;
                Ok(true)
            }
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
        ctx: &mut RequestContext,
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
        Ok(Box::new(peer))
    }

    /// A target that refuses the connection is left out for a while, and
    /// the request, which was not sent, goes to the next target.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
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
        _ctx: &mut RequestContext,
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
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let Some(runtime) = ctx.runtime.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no runtime");
        };
        strip_reserved(runtime, upstream)?;
        if runtime.sessions.settings.cookie.is_some() {
            headers::strip_gateway_credentials(upstream, runtime, false);
        }
        if let Some(identity) = &ctx.identity {
            for (name, value) in &identity.forwarded {
                upstream.insert_header(name.clone(), value.clone())?;
            }
            if !runtime.identity.forward_token {
                upstream.remove_header(&AUTHORIZATION);
            }
        }
        resolve_client(session, ctx);
        set_forwarding(session, upstream, &ctx.request_id, ctx.client.as_ref())?;
        // Cloned, not taken: on a retry pingora runs this hook again on a
        // fresh copy of the client's request, which must be rewritten too.
        if let Some(uri) = &ctx.upstream_uri {
            upstream.set_uri(uri.clone());
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if let (Some(started), Some(route)) = (ctx.upstream_started, &ctx.route) {
            route
                .metrics
                .upstream
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        // Only the gateway speaks with this header, so clients can trust it.
        response.remove_header(ERROR_HEADER);
        if let (Some(route), Some(runtime)) = (&ctx.route, &ctx.runtime) {
            cors::strip_upstream(response, runtime.cors.for_route(route));
        }
        response.insert_header(REQUEST_ID_HEADER, ctx.request_id.as_str())?;
        if let (Some(identity), Some(runtime)) = (&ctx.identity, &ctx.runtime) {
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
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        let refusal = if ctx.no_healthy_target {
            Some(Refusal::no_healthy_upstream())
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
    fn request_summary(&self, session: &Session, ctx: &RequestContext) -> String {
        format!(
            "method={} route={} request_id={}",
            session.req_header().method,
            route_label(ctx),
            ctx.request_id
        )
    }

    /// The engine's final "Fail to proxy" line is replaced by the access
    /// log's own failure line (see `logging`), which knows the outcome and
    /// puts a client that went away at debug, not ERROR.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestContext, _e: &Error) -> bool {
        true
    }

    async fn logging(
        &self,
        session: &mut Session,
        error: Option<&Error>,
        ctx: &mut RequestContext,
    ) {
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
        if !tracing::enabled!(target: "portcullis::access", tracing::Level::INFO)
            || !sampled(ctx, status, error.is_some())
        {
            return;
        }
        resolve_client(session, ctx);
        let subject = ctx.identity.as_ref().or(ctx.verified.as_ref());
        let client = ctx.client.as_ref().map(|c| c.ip);
        tracing::info!(
            target: "portcullis::access",
            request_id = %ctx.request_id,
            client = %OrDash(client),
            method = %session.req_header().method,
            route = route_label(ctx),
            status,
            outcome = ctx.outcome,
            subject = subject.map_or("-", |i| i.claims.sub.as_str()),
            upstream = ctx.route.as_ref().filter(|_| ctx.upstream_started.is_some()).map_or("-", |r| r.upstream.name.as_str()),
            latency_us = elapsed.as_micros() as u64,
            error = error.map(|e| e.etype().as_str()),
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
fn route_label(ctx: &RequestContext) -> &str {
    match (&ctx.route, ctx.endpoint) {
        (_, Some(endpoint)) => endpoint,
        (Some(route), None) => route.name.as_str(),
        (None, None) => "_unrouted",
    }
}

/// The route label of a gateway endpoint, by its normalised path.
fn endpoint_route(path: &str) -> &'static str {
    match path {
        "/auth/login" => "_auth_login",
        "/auth/token" => "_auth_token",
        "/auth/logout" => "_auth_logout",
        "/.well-known/jwks.json" => "_jwks",
        _ => "_auth_sessions",
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
    let target = ctx.backend.as_ref().map(|b| b.addr.to_string());
    let target = target.as_deref().unwrap_or("-");
    let id = ctx.request_id.as_str();
    match error.esource() {
        ErrorSource::Downstream => {
            tracing::debug!(request_id = id, %method, route, kind, "client connection failed")
        }
        ErrorSource::Upstream => {
            tracing::warn!(request_id = id, %method, route, target, kind, outcome = ctx.outcome, "upstream failed")
        }
        _ => {
            tracing::error!(request_id = id, %method, route, kind, outcome = ctx.outcome, "request failed")
        }
    }
}

/// The normalised path and the query of a request.
struct Target {
    path: String,
    query: Option<String>,
}

/// Normalises the path and refuses tokens in the query string.
fn target_of(runtime: &Runtime, request: &RequestHeader) -> Result<Target, Refusal> {
    let raw = request.raw_path();
    let (raw_path, query) = match raw.iter().position(|b| *b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let path = path::normalize_path(raw_path).map_err(|_| Refusal::bad_path())?;
    let query = query
        .map(|q| {
            std::str::from_utf8(q)
                .map(str::to_owned)
                .map_err(|_| Refusal::bad_path())
        })
        .transpose()?;
    if query.as_deref().is_some_and(query_has_access_token) {
        return Err(Refusal::auth(
            &AuthError::InvalidRequest("query_token"),
            &runtime.realm,
        ));
    }
    Ok(Target { path, query })
}

/// The CORS policy that answers this request as a preflight: the route's,
/// or `[cors]` for the gateway's own endpoints and unrouted paths; `None`
/// when it is no preflight or no policy is on (the request goes on as usual).
fn preflight_policy(runtime: &Runtime, request: &RequestHeader) -> Option<Arc<CorsPolicy>> {
    if !is_preflight(&request.method, &request.headers) {
        return None;
    }
    let target = target_of(runtime, request).ok()?;
    let routed = endpoints::endpoint_for(&Method::GET, &target.path)
        .is_none()
        .then(|| {
            runtime
                .router
                .find(host_of(request), &path::without_parameters(&target.path))
        })
        .flatten();
    let policy = match routed {
        Some(route) => runtime.cors.for_route(route),
        None => &runtime.cors.global,
    };
    policy.enabled().then(|| Arc::clone(policy))
}

/// Route and token checks: `Ok` lets the request through to the upstream.
async fn admit(
    runtime: &Runtime,
    view: &RevocationView,
    request: &RequestHeader,
    target: Target,
    ctx: &mut RequestContext,
) -> Result<(), Refusal> {
    let route = runtime
        .router
        .find(host_of(request), &path::without_parameters(&target.path))
        .ok_or(Refusal::no_route())?;
    if route.is_ambiguous(&target.path) {
        return Err(Refusal::bad_path());
    }
    ctx.route = Some(Arc::clone(route));
    ctx.upstream_uri = Some(upstream_uri(&target.path, target.query.as_deref())?);
    if route.auth == AuthMode::None {
        return Ok(());
    }
    let decided = authenticate(runtime, view, route, request, &mut ctx.verified).await;
    ctx.decision = Some(match &decided {
        Ok(Some(_)) => "ok",
        Ok(None) => "anonymous",
        Err(e) => e.code(),
    });
    ctx.identity = decided.map_err(|e| Refusal::auth(&e, &runtime.realm))?;
    Ok(())
}

/// The verified identity, `None` for an anonymous request to an optional
/// route. Revocation runs on every request, whether the signature check
/// came from the cache or not, and before the route's policy: a revoked
/// token is told to refresh, not that it lacks a role.
async fn authenticate(
    runtime: &Runtime,
    view: &RevocationView,
    route: &Route,
    request: &RequestHeader,
    verified_out: &mut Option<Arc<VerifiedToken>>,
) -> Result<Option<Arc<VerifiedToken>>, AuthError> {
    let Some(token) = extract_bearer(&request.headers, runtime.max_token_bytes)? else {
        return match route.auth {
            AuthMode::Required => Err(AuthError::Missing),
            _ => Ok(None),
        };
    };
    let verified = verify_then_check(runtime, view, token, verified_out).await?;
    route.requirement.check(&verified.claims)?;
    Ok(Some(verified))
}

/// Signature and claims (cached or not), then the revocation, version and
/// account checks: what every bearer token goes through, on routes and on
/// the gateway's own endpoints alike.
pub(crate) async fn verify_and_check(
    runtime: &Runtime,
    view: &RevocationView,
    token: &str,
) -> Result<Arc<VerifiedToken>, AuthError> {
    verify_then_check(runtime, view, token, &mut None).await
}

/// `verify_and_check`, keeping the verified token in `seen` even when a
/// later check refuses it.
async fn verify_then_check(
    runtime: &Runtime,
    view: &RevocationView,
    token: &str,
    seen: &mut Option<Arc<VerifiedToken>>,
) -> Result<Arc<VerifiedToken>, AuthError> {
    let verified = runtime.verifier.verify_fetching_keys(token).await?;
    *seen = Some(Arc::clone(&verified));
    view.check(&verified.claims).await?;
    Ok(verified)
}

fn upstream_uri(path: &str, query: Option<&str>) -> Result<http::Uri, Refusal> {
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    target.parse().map_err(|_| Refusal::bad_path())
}

fn host_of(request: &RequestHeader) -> Option<&str> {
    request
        .uri
        .host()
        .or_else(|| request.headers.get(HOST).and_then(|h| h.to_str().ok()))
}

fn request_id_of(request: &RequestHeader) -> String {
    request
        .headers
        .get(REQUEST_ID_HEADER)
        .filter(|v| headers::acceptable_request_id(v.as_bytes()))
        .and_then(|v| v.to_str().ok())
        .map_or_else(headers::new_request_id, str::to_owned)
}

fn strip_reserved(runtime: &Runtime, upstream: &mut RequestHeader) -> Result<()> {
    let plan = runtime.header_rules.plan(&upstream.headers);
    for name in &plan.remove {
        upstream.remove_header(name.as_str());
    }
    match plan.connection {
        Some(Some(value)) => {
            upstream.insert_header(CONNECTION, value)?;
        }
        Some(None) => {
            upstream.remove_header(&CONNECTION);
        }
        None => {}
    }
    Ok(())
}

/// Resolves the request's client into `ctx.client` on first use: a retry
/// and the access log ask again.
pub(crate) fn resolve_client(session: &Session, ctx: &mut RequestContext) {
    if ctx.client.is_none() {
        if let Some(runtime) = &ctx.runtime {
            ctx.client = client_addr::of_session(session, &runtime.server.trusted_proxies);
        }
    }
}

/// `X-Forwarded-*` describe this hop only: a client's own values are never
/// trusted or appended to. `X-Forwarded-For` is the client and the trusted
/// proxies between it and the gateway (`[server] trusted_proxies`).
pub(crate) fn set_forwarding(
    session: &Session,
    upstream: &mut RequestHeader,
    request_id: &str,
    client: Option<&client_addr::ClientAddress>,
) -> Result<()> {
    if let Some(client) = client {
        upstream.insert_header("x-forwarded-for", client.forwarded_for())?;
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    upstream.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
    // HTTP/2 carries the host in the `:authority` pseudo-header, which
    // pingora puts in the URI rather than in `Host`.
    let request = session.req_header();
    let host = request.headers.get(HOST).cloned().or_else(|| {
        let authority = request.uri.authority()?;
        http::HeaderValue::from_str(authority.as_str()).ok()
    });
    if let Some(host) = host {
        upstream.insert_header("x-forwarded-host", host)?;
    }
    upstream.insert_header(REQUEST_ID_HEADER, request_id)?;
    Ok(())
}

/// The contract response for a proxying failure, `None` when the client is gone.
fn refusal_for(e: &Error) -> Option<Refusal> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(code)) if *code < 500 => Some(Refusal::bad_request()),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout | ConnectTimedout) => {
            Some(Refusal::gateway_timeout())
        }
        (ErrorSource::Upstream, _) => Some(Refusal::bad_gateway()),
        (ErrorSource::Downstream, WriteError | ReadError | ConnectionClosed) => None,
        (ErrorSource::Downstream, _) => Some(Refusal::bad_request()),
        (_, ConnectNoRoute | ConnectRefused | ConnectError) => Some(Refusal::bad_gateway()),
        _ => Some(Refusal::internal()),
    }
}
