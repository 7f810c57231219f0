//! Whether a request may pass, and where to: its path normalised and its
//! query checked for tokens, the route, and
//! the bearer token verified and checked against the revocation view and
//! the route's policy. Writes the decision into the request's context;
//! answering a refusal is the caller's job.

use std::sync::Arc;

use http::header::HOST;
use pingora_http::RequestHeader;

use super::context::RequestContext;
use super::respond::Refusal;
use super::trace::in_span;
use crate::auth::extract::query_has_access_token;
use crate::auth::{extract_bearer, AuthError, VerifiedToken};
use crate::config::raw::AuthMode;
use crate::config::runtime::path;
use crate::config::runtime::router::{Route, Routed};
use crate::config::Runtime;
use crate::state::AppState;
use crate::store::RevocationView;
use crate::telemetry::{self, RequestTrace};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

/// The normalised path and the query of a request.
pub(super) struct Target {
    pub(super) path: String,
    pub(super) query: Option<String>,
    /// Normalising changed the path: the upstream gets the new one.
    pub(super) path_changed: bool,
}

/// Normalises the path and refuses tokens in the query string.
pub(super) fn target_of(runtime: &Runtime, request: &RequestHeader) -> Result<Target, Refusal> {
    // HTTP/1.x heads had their `Host` judged at the edge; an HTTP/2
    // request's `:authority` is judged by the same rule here.
    let h2_authority = (request.version == http::Version::HTTP_2)
        .then(|| request.uri.authority())
        .flatten();
    if h2_authority.is_some_and(|a| !super::head::valid_host(a.as_str().as_bytes())) {
        return Err(Refusal::bad_request());
    }
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
    let path_changed = path.as_bytes() != raw_path;
    Ok(Target {
        path,
        query,
        path_changed,
    })
}

/// Route and token checks: `Ok` lets the request through to the upstream.
pub(super) async fn admit(
    runtime: &Runtime,
    state: &AppState,
    request: &RequestHeader,
    target: Target,
    ctx: &mut RequestContext,
) -> Result<(), Refusal> {
    let path = path::without_parameters(&target.path);
    let route = match runtime
        .router
        .route(host_of(request), &path, &request.method)
    {
        Routed::Route(route) => route,
        Routed::WrongMethod { allow, path } => return Err(wrong_method(allow, path, request)),
        Routed::NotFound => return Err(Refusal::no_route()),
    };
    if runtime.router.is_ambiguous(host_of(request), &target.path) {
        return Err(Refusal::bad_path());
    }
    if route.methods.is_some()
        && super::method_override::overrides_method(request, target.query.as_deref())
    {
        return Err(super::method_override::refusal());
    }
    ctx.route = Some(Arc::clone(route));
    // An unchanged path goes upstream as the client sent it, without a
    // second URI built and parsed.
    if target.path_changed {
        ctx.upstream_uri = Some(upstream_uri(&target.path, target.query.as_deref())?);
    }
    if route.auth == AuthMode::None {
        return Ok(());
    }
    if route.api_keys {
        // Boxed: inline, the key's future would grow every request's.
        let admitting = Box::pin(super::api_key::admit(runtime, state, route, request, ctx));
        if let Some(decided) = admitting.await {
            return decided;
        }
    }
    let view = &state.view;
    let trace = ctx.tracing.request();
    let decided = authenticate(runtime, view, route, request, &mut ctx.verified, trace).await;
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
    trace: Option<&RequestTrace>,
) -> Result<Option<Arc<VerifiedToken>>, AuthError> {
    let Some(token) = extract_bearer(&request.headers, runtime.max_token_bytes)? else {
        return match route.auth {
            AuthMode::Required => Err(AuthError::Missing),
            _ => Ok(None),
        };
    };
    let verified = verify_then_check(runtime, view, token, verified_out, trace).await?;
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
    verify_then_check(runtime, view, token, &mut None, None).await
}

/// `verify_and_check`, keeping the verified token in `seen` even when a
/// later check refuses it.
async fn verify_then_check(
    runtime: &Runtime,
    view: &RevocationView,
    token: &str,
    seen: &mut Option<Arc<VerifiedToken>>,
    trace: Option<&RequestTrace>,
) -> Result<Arc<VerifiedToken>, AuthError> {
    // A traced request's spans live in a boxed future of their own: held
    // inline, they would grow every request's future, traced or not.
    if let Some(trace) = trace {
        return Box::pin(verify_then_check_traced(runtime, view, token, seen, trace)).await;
    }
    let verified = runtime.verifier.verify_fetching_keys(token).await?;
    *seen = Some(Arc::clone(&verified));
    view.check(&verified.claims).await?;
    Ok(verified)
}

/// [`verify_then_check`] with the verification and the revocation check
/// each in a span of the request's trace.
async fn verify_then_check_traced(
    runtime: &Runtime,
    view: &RevocationView,
    token: &str,
    seen: &mut Option<Arc<VerifiedToken>>,
    trace: &RequestTrace,
) -> Result<Arc<VerifiedToken>, AuthError> {
    // Whether the cache answered comes from the verification itself, and
    // the algorithm from the verified token: nothing is looked up twice.
    let span = trace.child("verify_token", SpanKind::Internal);
    let mut hit = false;
    let verifier = &runtime.verifier;
    let verified = verifier
        .verify_fetching_keys_noting_hit(token, &mut hit)
        .await;
    telemetry::finish(span, || verify_attributes(token, hit, &verified));
    let verified = verified?;
    *seen = Some(Arc::clone(&verified));
    let checking = view.check(&verified.claims);
    in_span(
        Some(trace),
        "revocation_check",
        SpanKind::Internal,
        checking,
        |r| vec![KeyValue::new("portcullis.outcome", outcome_of(r))],
    )
    .await?;
    Ok(verified)
}

/// The verification span's attributes: the algorithm the token was
/// verified with (kept on the verified token; for a refused token, read
/// from its header, never the token), whether the cache answered, the
/// outcome.
fn verify_attributes(
    token: &str,
    hit: bool,
    result: &Result<Arc<VerifiedToken>, AuthError>,
) -> Vec<KeyValue> {
    // Room for all three at once: a vector grown from one is a second
    // allocation and a copy on every traced request.
    let mut attributes = Vec::with_capacity(3);
    attributes.push(KeyValue::new("portcullis.outcome", outcome_of(result)));
    let algorithm = match result {
        Ok(verified) => verified.algorithm.map(super::trace::algorithm_name),
        Err(_) => super::trace::token_algorithm(token),
    };
    if let Some(alg) = algorithm {
        attributes.push(KeyValue::new("jwt.alg", alg));
    }
    let label = if hit { "hit" } else { "miss" };
    attributes.push(KeyValue::new("portcullis.cache", label));
    attributes
}

fn outcome_of<T>(result: &Result<T, AuthError>) -> &'static str {
    result.as_ref().map_or_else(AuthError::code, |_| "ok")
}

/// `405` with `Allow` (RFC 9110 §15.5.6): the path's routes serve other
/// methods. Answered before authentication, as a `404` is: which route
/// (and so which auth) applies depends on the method. No route is chosen,
/// so the path's own CORS headers, which the route's policy would have
/// put on the answer, are added here: a script on an origin that the
/// path lets in can read the refusal.
fn wrong_method(allow: &str, path: &Route, request: &RequestHeader) -> Refusal {
    let mut extra = vec![(http::header::ALLOW, allow.to_owned())];
    let origin = request.headers.get(http::header::ORIGIN);
    if let Some(origin) = origin.filter(|_| path.cors.enabled()) {
        let cors = path.cors.response_headers(origin).into_iter();
        extra
            .extend(cors.filter_map(|(name, value)| Some((name, value.to_str().ok()?.to_owned()))));
        extra.push((http::header::VARY, "Origin".to_owned()));
    }
    Refusal {
        extra,
        ..Refusal::method_not_allowed()
    }
}

fn upstream_uri(path: &str, query: Option<&str>) -> Result<http::Uri, Refusal> {
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    target.parse().map_err(|_| Refusal::bad_path())
}

pub(super) fn host_of(request: &RequestHeader) -> Option<&str> {
    request
        .uri
        .host()
        .or_else(|| request.headers.get(HOST).and_then(|h| h.to_str().ok()))
}
