//! `POST /auth/token`: the refresh grant (RFC 6749 §6), errors per §5.2.
//!
//! Reads the grant's parameters and writes the answer; which token was
//! presented (`session::cookie`), the failure limit and the rotation
//! (`session::Sessions::refresh_limited`) are the session rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use pingora_proxy::Session;

use super::common::{issuer, read_body, token_reply};
use crate::config::Runtime;
use crate::proxy::respond::{Refusal, Reply};
use crate::session::cookie::presented_refresh_token;
use crate::session::grant;
use crate::state::AppState;

pub async fn serve(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    id: &str,
) -> Result<Reply, Refusal> {
    let issuer = issuer(runtime)?;
    let fields = grant_fields(session, runtime.server.header_read_timeout).await?;
    let headers = &session.req_header().headers;
    let cookie = runtime.sessions.settings.cookie.as_ref();
    let in_body = fields.get("refresh_token").map(String::as_str);
    let presented = presented_refresh_token(headers, in_body, cookie)?;
    let pair = runtime
        .sessions
        .refresh_limited(
            &state.view,
            &issuer,
            &state.refresh_failures,
            presented.token,
        )
        .await
        .map_err(Refusal::refresh_failed)?;
    Ok(token_reply(runtime, &pair, presented.cookie_mode, id))
}

/// The grant's parameters, once `grant_type` is known to be `refresh_token`.
async fn grant_fields(
    session: &mut Session,
    deadline: Duration,
) -> Result<HashMap<String, String>, Refusal> {
    let body = read_body(session, deadline).await?;
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
