//! `POST /auth/logout`: ends the caller's session and revokes its access
//! token (the rule is `session::Sessions::logout`), and clears the refresh
//! cookie in cookie mode.

use std::sync::Arc;

use http::header::SET_COOKIE;
use http::StatusCode;
use pingora_proxy::Session;
use serde_json::json;

use super::common::caller;
use crate::config::Runtime;
use crate::proxy::respond::{Refusal, Reply};
use crate::state::AppState;

pub async fn serve(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    id: &str,
) -> Result<Reply, Refusal> {
    let caller = caller(runtime, state, session).await?;
    let claims = &caller.claims;
    runtime
        .sessions
        .logout(&state.view, claims, runtime.access_ttl)
        .await
        .map_err(Refusal::logout_failed)?;
    tracing::info!(target: "portcullis::session", request_id = id, sub = %claims.sub, sid = claims.sid.as_deref().unwrap_or("-"), "logout");
    let reply = Reply::json(StatusCode::OK, &json!({"logged_out": true}), id);
    Ok(match &runtime.sessions.settings.cookie {
        Some(cookie) => reply.with_header(SET_COOKIE, cookie.set_cookie("", 0)),
        None => reply,
    })
}
