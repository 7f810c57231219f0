//! `POST /auth/token`: the refresh grant (RFC 6749 §6), errors per §5.2.
//!
//! Which token was presented (body or cookie) and how the answer travels
//! are decided here; the rotation itself is `session::Sessions::refresh`.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::CONTENT_TYPE;
use pingora_proxy::Session;

use super::common::{browser_request, issuer, read_body, same_site_call, token_reply};
use crate::config::Runtime;
use crate::metrics::METRICS;
use crate::proxy::respond::{Refusal, Reply};
use crate::session::grant;
use crate::session::ratelimit::TokenKey;
use crate::session::{RefreshError, TokenPair};
use crate::state::AppState;

pub async fn serve(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    id: &str,
) -> Result<Reply, Refusal> {
    let issuer = issuer(runtime)?;
    let fields = grant_fields(session).await?;
    let (presented, cookie_mode) = presented_token(session, runtime, &fields)?;
    // Only this token's own failures count: a valid token is never slowed
    // down by what other clients (behind the same address) presented.
    let key = TokenKey::of(&presented);
    if let Some(wait) = state.refresh_failures.blocked(&key) {
        count("too_many_requests");
        return Err(Refusal::too_many_requests(wait));
    }
    let refreshed = runtime
        .sessions
        .refresh(&state.view, &issuer, &presented)
        .await;
    count(outcome(&refreshed));
    match refreshed {
        Ok(pair) => Ok(token_reply(runtime, &pair, cookie_mode, id)),
        Err(error) => {
            if let RefreshError::InvalidGrant(reason) = error {
                tracing::info!(target: "portcullis::session", reason, "refresh refused");
                state.refresh_failures.record_failure(key);
            }
            Err(error.into())
        }
    }
}

/// The grant's parameters, once `grant_type` is known to be `refresh_token`.
async fn grant_fields(session: &mut Session) -> Result<HashMap<String, String>, Refusal> {
    let body = read_body(session).await?;
    let content_type = session
        .req_header()
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let fields = grant::parameters(content_type, &body)
        .map_err(|e| Refusal::invalid_request(e.description()))?;
    match fields.get("grant_type").map(String::as_str) {
        None => Err(Refusal::invalid_request("grant_type is required")),
        Some("refresh_token") => Ok(fields),
        Some(_) => Err(Refusal::unsupported_grant_type()),
    }
}

/// The presented refresh token, and whether the answer goes in the cookie.
/// Per request: a browser's refresh (one that sends `Origin` or
/// `Sec-Fetch-Site`) is always checked for its origin and answered in the
/// cookie; another client's token travels in the body both ways, unless it
/// presents the cookie (then the same-site check applies).
fn presented_token(
    session: &Session,
    runtime: &Runtime,
    fields: &HashMap<String, String>,
) -> Result<(String, bool), Refusal> {
    let headers = &session.req_header().headers;
    let cookie = runtime.sessions.settings.cookie.as_ref();
    let browser = browser_request(headers);
    let in_body = fields.get("refresh_token");
    let required = || Refusal::invalid_request("refresh_token is required");
    let (presented, checked) = match (in_body, cookie) {
        (Some(token), Some(cookie)) if browser => (token.as_str(), Some(cookie)),
        (Some(token), _) => (token.as_str(), None),
        (None, Some(cookie)) => (
            cookie.refresh_token(headers).ok_or_else(required)?,
            Some(cookie),
        ),
        (None, None) => return Err(required()),
    };
    if checked.is_some_and(|cookie| !same_site_call(headers, cookie)) {
        return Err(Refusal::cross_site());
    }
    Ok((presented.to_owned(), browser || in_body.is_none()))
}

/// The `outcome` label of `portcullis_refreshes_total`.
fn outcome(refreshed: &Result<TokenPair, RefreshError>) -> &'static str {
    match refreshed {
        Ok(_) => "ok",
        Err(RefreshError::InvalidGrant(_)) => "invalid_grant",
        Err(RefreshError::Store(_)) => "unavailable",
        Err(RefreshError::Internal(_)) => "error",
    }
}

fn count(outcome: &str) {
    METRICS.refreshes.with_label_values(&[outcome]).inc();
}
