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

use super::context::RequestContext;
use super::respond::Refusal;
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

/// The endpoint a normalised path names, if any, whatever the method.
pub fn endpoint_for(path: &str) -> Option<Endpoint> {
    // `/auth/sessions/{sid}/` is the same endpoint: many backends read a
    // trailing slash as the same resource, so such a path must not slip
    // past the gateway to an upstream (with the caller's credentials).
    let path = match path.strip_suffix('/') {
        Some(trimmed) if trimmed.starts_with("/auth/") || trimmed == "/.well-known/jwks.json" => {
            trimmed
        }
        _ => path,
    };
    Some(match path {
        "/auth/login" => Endpoint::Login,
        "/auth/token" => Endpoint::Token,
        "/auth/logout" => Endpoint::Logout,
        "/auth/sessions" => Endpoint::ListSessions,
        "/.well-known/jwks.json" => Endpoint::Jwks,
        _ => {
            let sid = path
                .strip_prefix("/auth/sessions/")
                .filter(|s| !s.is_empty() && !s.contains('/'))?;
            Endpoint::EndSession(sid.to_owned())
        }
    })
}

impl Endpoint {
    /// `Ok` when `method` is this endpoint's (a GET endpoint also answers
    /// HEAD); 405 otherwise.
    pub fn check_method(&self, method: &Method) -> Result<(), Refusal> {
        let expected = match self {
            Self::Login | Self::Token | Self::Logout => Method::POST,
            Self::ListSessions | Self::Jwks => Method::GET,
            Self::EndSession(_) => Method::DELETE,
        };
        if *method == expected || (expected == Method::GET && *method == Method::HEAD) {
            Ok(())
        } else {
            Err(Refusal::method_not_allowed())
        }
    }

    /// The route label of this endpoint in logs and metrics.
    pub fn route_label(&self) -> &'static str {
        match self {
            Self::Login => "_auth_login",
            Self::Token => "_auth_token",
            Self::Logout => "_auth_logout",
            Self::ListSessions | Self::EndSession(_) => "_auth_sessions",
            Self::Jwks => "_jwks",
        }
    }
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
    common::refuse_announced_too_large(session)?;
    let id = ctx.request_id.as_str();
    let reply = match endpoint {
        Endpoint::Login => {
            // Resolved into the context: the access log reuses it.
            ctx.resolve_client(session);
            let client = ctx.client.as_ref();
            let (id, tracing) = (&ctx.request_id, &ctx.tracing);
            return login::serve(state, runtime, session, id, client, tracing).await;
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
