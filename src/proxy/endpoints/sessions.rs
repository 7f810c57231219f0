//! `GET /auth/sessions` and `DELETE /auth/sessions/{sid}`: the caller's
//! devices. Which sessions are listed, and whose may be ended, is
//! `session::devices`.

use std::sync::Arc;

use http::StatusCode;
use pingora_proxy::Session;
use serde_json::json;

use super::common::caller;
use crate::config::Runtime;
use crate::proxy::respond::{Refusal, Reply, StoreCaller};
use crate::state::AppState;

/// The caller's live sessions, the current one marked.
pub async fn list(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    id: &str,
) -> Result<Reply, Refusal> {
    let caller = caller(runtime, state, session).await?;
    let claims = &caller.claims;
    let devices = runtime
        .sessions
        .list(
            state.view.store().as_ref(),
            &claims.sub,
            claims.sid.as_deref(),
        )
        .await
        .map_err(|e| Refusal::store_failed(&e, StoreCaller::Endpoint))?;
    Ok(Reply::json(StatusCode::OK, &devices, id))
}

/// Signs out one of the caller's devices.
pub async fn end(
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    sid: &str,
    id: &str,
) -> Result<Reply, Refusal> {
    let caller = caller(runtime, state, session).await?;
    let sub = &caller.claims.sub;
    let ended = runtime
        .sessions
        .end_own(&state.view, sub, sid, runtime.access_ttl)
        .await
        .map_err(|e| Refusal::store_failed(&e, StoreCaller::Endpoint))?;
    if !ended {
        return Err(Refusal::no_such_session());
    }
    tracing::info!(target: "portcullis::session", request_id = id, sub = %sub, sid, "session ended by its user");
    Ok(Reply::json(StatusCode::OK, &json!({"ended": sid}), id))
}
