//! What the gateway's endpoints share: the caller's bearer token, the token
//! issuer, request bodies and the token response. A leaf: it imports nothing from the endpoints beside it.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, SET_COOKIE};
use http::StatusCode;
use pingora_core::protocols::http::ServerSession;
use pingora_proxy::Session;
use serde_json::json;

use crate::auth::{extract_bearer, AuthError, VerifiedToken};
use crate::config::Runtime;
use crate::proxy::respond::{Refusal, Reply};
use crate::session::service::Issuer;
use crate::session::TokenPair;
use crate::state::AppState;

/// Largest body the gateway reads for its own endpoints.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Writes an answer; a failed write is the client's loss, not a refusal.
pub async fn deliver(session: &mut Session, reply: Reply) {
    if let Err(e) = reply.send(session).await {
        tracing::debug!(error = %e, "could not write the answer");
    }
}

/// The caller's identity from its bearer token, checked like a request to
/// a protected route.
pub async fn caller(
    runtime: &Runtime,
    state: &AppState,
    session: &Session,
) -> Result<Arc<VerifiedToken>, Refusal> {
    let refuse = |e: AuthError| Refusal::auth(&e, &runtime.realm);
    let token = extract_bearer(&session.req_header().headers, runtime.max_token_bytes)
        .map_err(refuse)?
        .ok_or_else(|| refuse(AuthError::Missing))?;
    crate::proxy::admission::verify_and_check(runtime, &state.view, token)
        .await
        .map_err(refuse)
}

/// What signs this gateway's tokens; 404 when it has no signing key.
pub fn issuer(runtime: &Runtime) -> Result<Issuer<'_>, Refusal> {
    let signer = runtime.signer.as_ref().ok_or(Refusal::no_signing_key())?;
    Ok(Issuer {
        signer,
        issuer: &runtime.issuer,
        audience: &runtime.audience,
        access_ttl: runtime.access_ttl,
    })
}

/// Reads the whole request body, refusing more than `MAX_BODY_BYTES`; the
/// admin listener reads its bodies with this too.
///
/// A body announced larger (`Content-Length`) is refused at once, before a
/// byte of it is read: waiting for it would hold the connection for
/// nothing. The whole body must arrive within `deadline` (the head's
/// `header_read_timeout`: these bodies are no larger than a head), so one
/// that trickles in cannot hold the connection either; a slow body is
/// refused with 408. Both refusals leave the body unread, and the engine
/// closes the connection after them.
pub async fn read_body(
    session: &mut ServerSession,
    deadline: Duration,
) -> Result<Vec<u8>, Refusal> {
    refuse_announced_too_large(session)?;
    tokio::time::timeout(deadline, read_all(session))
        .await
        .map_err(|_| Refusal::request_timeout())?
}

/// 413 for a request whose `Content-Length` announces more than
/// `MAX_BODY_BYTES`, whether or not its endpoint reads a body.
pub fn refuse_announced_too_large(session: &ServerSession) -> Result<(), Refusal> {
    match announced_length(session) {
        Some(length) if length > MAX_BODY_BYTES as u64 => Err(Refusal::request_too_large()),
        _ => Ok(()),
    }
}

/// The request's `Content-Length`, when it has one the edge let through
/// (plain digits, one value).
fn announced_length(session: &ServerSession) -> Option<u64> {
    let value = session.req_header().headers.get(CONTENT_LENGTH)?;
    std::str::from_utf8(value.as_bytes()).ok()?.parse().ok()
}

async fn read_all(session: &mut ServerSession) -> Result<Vec<u8>, Refusal> {
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| Refusal::bad_request())?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Refusal::request_too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The token response: in cookie mode (`cookie_mode`, chosen per request)
/// the refresh token goes to the cookie only, never to script-readable JSON.
pub fn token_reply(runtime: &Runtime, pair: &TokenPair, cookie_mode: bool, id: &str) -> Reply {
    let settings = &runtime.sessions.settings;
    match settings.cookie.as_ref().filter(|_| cookie_mode) {
        Some(cookie) => {
            let body = json!({"access_token": pair.access_token, "token_type": pair.token_type, "expires_in": pair.expires_in});
            let max_age = settings.refresh_ttl.as_secs();
            Reply::json(StatusCode::OK, &body, id)
                .with_header(SET_COOKIE, cookie.set_cookie(&pair.refresh_token, max_age))
        }
        None => Reply::json(StatusCode::OK, pair, id),
    }
}
