//! Admission by API key on a route with `api_keys = true`: the key read
//! from `X-Api-Key` or `Authorization: ApiKey`, checked against this
//! instance's copy of the keys (no store round trip), and the identity it
//! stands for put through the route's policy like a token's.
//!
//! A refused key is counted (`portcullis_api_key_failures_total`) and its
//! id (the key's visible prefix) throttled like a failing refresh token:
//! after `sessions.max_failures` failures within `sessions.failure_window`
//! further wrong keys naming that id are answered 429 until the window
//! ends. The throttle is consulted only for a key that failed, so the
//! valid key itself is never refused, from its own address or any other,
//! however many wrong guesses others make at its prefix.

use std::sync::Arc;

use pingora_http::RequestHeader;

use super::context::RequestContext;
use super::respond::Refusal;
use crate::auth::api_key::{extract_api_key, key_id};
use crate::auth::identity::CredentialKind;
use crate::auth::{extract_bearer, AuthError, VerifiedToken};
use crate::clock::unix_now;
use crate::config::runtime::router::Route;
use crate::config::Runtime;
use crate::metrics::METRICS;
use crate::session::ratelimit::TokenKey;
use crate::state::AppState;

/// The throttle's bucket for keys that name no id at all.
const MALFORMED_BUCKET: &str = "malformed";

/// `None` when the request presents no API key (the token path decides);
/// otherwise the key's decision, written into `ctx` like a token's.
pub(super) async fn admit(
    runtime: &Runtime,
    state: &AppState,
    route: &Route,
    request: &RequestHeader,
    ctx: &mut RequestContext,
) -> Option<Result<(), Refusal>> {
    let decided = match extract_api_key(&request.headers) {
        Ok(None) => return None,
        Ok(Some(key)) => checked(runtime, state, route, request, key).await,
        Err(e) => Err(Refusal::auth(&e, &runtime.realm)),
    };
    ctx.api_key = true;
    ctx.decision = Some(match &decided {
        Ok(_) => "ok",
        Err(refusal) => refusal.code,
    });
    Some(decided.map(|identity| ctx.identity = Some(identity)))
}

/// The key's identity, checked and put through the route's policy.
async fn checked(
    runtime: &Runtime,
    state: &AppState,
    route: &Route,
    request: &RequestHeader,
    key: &str,
) -> Result<Arc<VerifiedToken>, Refusal> {
    let auth = |e: AuthError| Refusal::auth(&e, &runtime.realm);
    // One credential per request: which one the client meant is not ours
    // to guess.
    if extract_bearer(&request.headers, runtime.max_token_bytes)
        .map_err(auth)?
        .is_some()
    {
        return Err(auth(AuthError::InvalidRequest("token_and_api_key")));
    }
    let claims = match state.view.check_api_key(key, unix_now()).await {
        Ok(claims) => claims,
        Err(e @ (AuthError::Invalid(_) | AuthError::Revoked)) => {
            return Err(failed(state, key, e, &runtime.realm))
        }
        Err(e) => return Err(auth(e)),
    };
    let forwarded = runtime
        .identity
        .headers_for_kind(&claims, CredentialKind::ApiKey)
        .ok_or_else(|| auth(AuthError::Invalid("api_key_subject_unforwardable")))?;
    route.requirement.check(&claims).map_err(auth)?;
    Ok(Arc::new(VerifiedToken {
        claims,
        forwarded,
        algorithm: None,
    }))
}

/// A key that failed: counted, and throttled by the id it names.
fn failed(state: &AppState, key: &str, error: AuthError, realm: &str) -> Refusal {
    let reason = match &error {
        AuthError::Revoked => "api_key_revoked",
        other => other.reason(),
    };
    METRICS.api_key_failures.with_label_values(&[reason]).inc();
    let bucket = TokenKey::of(key_id(key).unwrap_or(MALFORMED_BUCKET));
    if let Some(wait) = state.api_key_failures.blocked(&bucket) {
        return Refusal::api_key_throttled(wait);
    }
    state.api_key_failures.record_failure(bucket);
    Refusal::auth(&error, realm)
}
