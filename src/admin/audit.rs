//! Which admin requests are actions for the audit trail, their names and
//! what they act on. An action is recorded once it is answered, refused
//! or not (a wrong admin token is recorded too), with the caller's
//! address: the admin listener's peer, never a forwarded one. A new
//! admin endpoint gets its name here (`action_of`) and is then recorded
//! like the others.

use std::net::IpAddr;

use http::Method;
use pingora_core::protocols::http::ServerSession;

use crate::audit::{AdminAction, AuditTrail};

/// What the trail is told about an admin request as it is served.
#[derive(Default)]
pub(super) struct Note {
    pub(super) action: Option<&'static str>,
    /// A subject, session id or token id; never a token.
    pub(super) resource: Option<String>,
}

/// The action `method` on `/admin/{segments}` takes, if it is one.
pub(super) fn action_of(method: &Method, segments: &[&str]) -> Option<&'static str> {
    Some(match (method, segments) {
        (&Method::POST, ["tokens", "revoke"]) => "token_revoke",
        (&Method::POST, ["sessions"]) => "session_issue",
        (&Method::GET, ["users", _, "sessions"]) => "sessions_list",
        (&Method::DELETE, ["sessions", _]) => "session_end",
        (&Method::POST, ["users", _, "revoke"]) => "user_revoke",
        (&Method::POST, ["users", _, "disable"]) => "user_disable",
        (&Method::POST, ["users", _, "enable"]) => "user_enable",
        (&Method::POST, ["reload"]) => "reload",
        (&Method::POST, ["api-keys"]) => "api_key_create",
        (&Method::GET, ["api-keys"]) => "api_keys_list",
        (&Method::DELETE, ["api-keys", _]) => "api_key_revoke",
        _ => return None,
    })
}

/// The subject or session a path names.
pub(super) fn resource_of(segments: &[&str]) -> Option<String> {
    match segments {
        ["users", sub, _] | ["sessions", sub] | ["api-keys", sub] => Some((*sub).to_owned()),
        _ => None,
    }
}

/// The admin listener's peer.
pub(super) fn caller_of(session: &ServerSession) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip().to_canonical())
}

/// Records `note`'s action, if the request was one, with `outcome`.
pub(super) fn record(
    trail: &AuditTrail,
    note: &Note,
    request_id: &str,
    caller: Option<IpAddr>,
    outcome: &str,
) {
    if let Some(action) = note.action {
        trail.admin_action(&AdminAction {
            request_id: Some(request_id),
            source: "admin_api",
            caller,
            action,
            resource: note.resource.as_deref(),
            outcome,
        });
    }
}
