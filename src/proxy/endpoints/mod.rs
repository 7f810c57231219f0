//! The endpoints the gateway serves itself, one file each: login, refresh
//! (`token`), logout, devices (`sessions`) and the JWKS; `common` holds
//! what they share.
//!
//! Only the paths below are taken (each also with one trailing slash); any
//! other `/auth/...` path goes through the route table like every request.

pub mod common;
pub mod jwks;
pub mod login;
pub mod logout;
pub mod sessions;
pub mod token;

use std::sync::Arc;

use http::Method;
use pingora_proxy::Session;

use super::respond::Refusal;
use super::RequestContext;
use crate::config::Runtime;
use crate::state::AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Token,
    Logout,
    ListSessions,
    EndSession(String),
    Jwks,
}

/// The endpoint a normalised path names, if any; a known path with the
/// wrong method is refused with 405.
pub fn endpoint_for(method: &Method, path: &str) -> Option<Result<Endpoint, Refusal>> {
    // `/auth/sessions/{sid}/` is the same endpoint: many backends read a
    // trailing slash as the same resource, so such a path must not slip
    // past the gateway to an upstream (with the caller's credentials).
    let path = match path.strip_suffix('/') {
        Some(trimmed) if trimmed.starts_with("/auth/") || trimmed == "/.well-known/jwks.json" => {
            trimmed
        }
        _ => path,
    };
    let (expected, endpoint) = match path {
        "/auth/login" => (Method::POST, Endpoint::Login),
        "/auth/token" => (Method::POST, Endpoint::Token),
        "/auth/logout" => (Method::POST, Endpoint::Logout),
        "/auth/sessions" => (Method::GET, Endpoint::ListSessions),
        "/.well-known/jwks.json" => (Method::GET, Endpoint::Jwks),
        _ => {
            let sid = path
                .strip_prefix("/auth/sessions/")
                .filter(|s| !s.is_empty() && !s.contains('/'))?;
            (Method::DELETE, Endpoint::EndSession(sid.to_owned()))
        }
    };
    Some(
        if *method == expected || (expected == Method::GET && *method == Method::HEAD) {
            Ok(endpoint)
        } else {
            Err(Refusal::method_not_allowed())
        },
    )
}

/// Serves a gateway endpoint; the answer is written when this returns
/// `Ok`, with the outcome to log and count (`ok`, or login's
/// `login_refused`). A refusal is the caller's to write.
pub async fn serve(
    endpoint: Endpoint,
    state: &AppState,
    runtime: &Arc<Runtime>,
    session: &mut Session,
    ctx: &mut RequestContext,
) -> Result<&'static str, Refusal> {
    let id = ctx.request_id.as_str();
    let reply = match endpoint {
        Endpoint::Login => {
            // Resolved into the context: the access log reuses it.
            super::resolve_client(session, ctx);
            let client = ctx.client.as_ref();
            return login::serve(state, runtime, session, &ctx.request_id, client).await;
        }
        Endpoint::Token => token::serve(state, runtime, session, id).await?,
        Endpoint::Logout => logout::serve(state, runtime, session, id).await?,
        Endpoint::ListSessions => sessions::list(state, runtime, session, id).await?,
        Endpoint::EndSession(sid) => sessions::end(state, runtime, session, &sid, id).await?,
        Endpoint::Jwks => jwks::serve(runtime, id),
    };
    common::deliver(session, reply).await;
    Ok("ok")
}
