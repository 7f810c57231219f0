//! A route's rate limit, applied once the request is authenticated (a
//! `subject` limit needs the verified `sub`) and before anything goes
//! upstream: a limited request is answered 429 `rate_limited` here and
//! never reaches the upstream.
//!
//! Decided by the store when it is shared (Redis: one limit for every
//! instance), else in this instance's memory. When the shared store fails,
//! the policy's `on_unavailable` decides: `local` (the default) falls back
//! to this instance's own limit, so an outage loosens the limit to one per
//! instance but never lifts it, and never turns into a total outage of
//! the route; `deny` answers 503 `auth_unavailable`, for an operator who
//! asked for exactly that.

use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::context::RequestContext;
use super::respond::Refusal;
use crate::config::raw::{RateLimitFallback, RateLimitKey};
use crate::config::runtime::rate_limit::RouteLimit;
use crate::config::runtime::router::Route;
use crate::metrics::METRICS;
use crate::state::AppState;
use crate::store::rate_limit::{counted_address, limit_key, Verdict};
use crate::vocabulary::{RATE_LIMIT, RATE_LIMIT_POLICY};

/// How long a request waits for the shared store's decision: a decision
/// is one round trip, well under a millisecond on a healthy store; a
/// store that takes longer is treated as unavailable rather than holding
/// every limited request for the connection's own 5 s timeout.
const SHARED_DECISION_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether the request's route has a limit (checked before the limiter's
/// future is built).
pub(super) fn applies(ctx: &RequestContext) -> bool {
    ctx.route.as_ref().is_some_and(|r| r.rate_limit.is_some())
}

/// Counts the request against its route's limit; `Err` answers it.
pub(super) async fn check(
    state: &AppState,
    session: &Session,
    ctx: &mut RequestContext,
) -> Result<(), Refusal> {
    let Some(route) = ctx.route.clone() else {
        return Ok(());
    };
    let Some(limit) = &route.rate_limit else {
        return Ok(());
    };
    let policy = &limit.policy;
    if (ctx.identity.as_ref()).is_some_and(|id| policy.exempts(&id.claims)) {
        limit.count("exempt");
        return Ok(());
    }
    ctx.resolve_client(session);
    let caller = caller_of(policy.key, ctx);
    // The route by its host, prefix and methods: names need not be unique.
    let [host, prefix, methods] = &limit.scope;
    let key = limit_key(&[&policy.name, host, prefix, methods, &caller]);
    let verdict = decide(state, limit, &key).await?;
    let fields = policy.limit_field(verdict.remaining, verdict.reset);
    if verdict.allowed {
        limit.count("allowed");
        ctx.rate_limit = Some(fields);
        return Ok(());
    }
    limit.count("limited");
    let mut refusal = Refusal::rate_limited(verdict.retry_after);
    (refusal.extra).push((RATE_LIMIT_POLICY, policy.policy_field.clone()));
    refusal.extra.push((RATE_LIMIT, fields));
    Err(refusal)
}

/// Whom the request counts for: `sub:` the verified subject, `ip:` the
/// client address, or the route as a whole.
fn caller_of(key: RateLimitKey, ctx: &RequestContext) -> String {
    let address = || {
        ctx.client.as_ref().map_or_else(
            || "ip:unknown".to_owned(),
            |c| format!("ip:{}", counted_address(c.ip)),
        )
    };
    match key {
        // The issuer too: an `[[issuers]]` token whose `sub` equals a
        // gateway user's is another caller.
        RateLimitKey::Subject => ctx.identity.as_ref().map_or_else(address, |id| {
            let (iss, sub) = (&id.claims.iss, &id.claims.sub);
            format!("sub:{}:{iss}{sub}", iss.len())
        }),
        RateLimitKey::Client => address(),
        RateLimitKey::Route => String::new(),
    }
}

/// The shared store's verdict, or this instance's: on the embedded store,
/// and per `on_unavailable` when the shared one fails.
async fn decide(state: &AppState, limit: &RouteLimit, key: &[u8; 16]) -> Result<Verdict, Refusal> {
    let gcra = &limit.policy.gcra;
    let shared = tokio::time::timeout(
        SHARED_DECISION_TIMEOUT,
        state.view.store().rate_limit(key, gcra),
    );
    match shared.await {
        Ok(Ok(Some(verdict))) => Ok(verdict),
        Ok(Ok(None)) => Ok(state.rate_limits.decide(key, gcra)),
        Ok(Err(error)) => {
            METRICS
                .store_errors
                .with_label_values(&["rate_limit"])
                .inc();
            tracing::warn!(target: "portcullis::proxy::rate_limit", error = %error, policy = %limit.policy.name, "rate limit store unavailable");
            unavailable(state, key, limit)
        }
        Err(_elapsed) => {
            METRICS
                .store_errors
                .with_label_values(&["rate_limit"])
                .inc();
            tracing::warn!(target: "portcullis::proxy::rate_limit", policy = %limit.policy.name, "rate limit store too slow");
            unavailable(state, key, limit)
        }
    }
}

/// The answer when the shared store could not decide.
fn unavailable(state: &AppState, key: &[u8; 16], limit: &RouteLimit) -> Result<Verdict, Refusal> {
    limit.count("unavailable");
    match limit.policy.on_unavailable {
        RateLimitFallback::Deny => Err(Refusal::auth_unavailable()),
        RateLimitFallback::Local => Ok(state.rate_limits.decide(key, &limit.policy.gcra)),
    }
}

/// The limit's fields on a response that passed: the policy, and what is
/// left of it (an upstream's own fields, if any, are kept beside them).
pub(super) fn announce(
    response: &mut ResponseHeader,
    route: &Route,
    fields: String,
) -> pingora_core::Result<()> {
    if let Some(limit) = &route.rate_limit {
        response.append_header(RATE_LIMIT_POLICY, limit.policy.policy_field.as_str())?;
        response.append_header(RATE_LIMIT, fields)?;
    }
    Ok(())
}
