//! `X-Portcullis-Session-Control` on an upstream's answer: removed from
//! every answer on every route, and honoured only where the route opted in
//! (`session_control = true`), on a 2xx answer, to a request made with a
//! session token the gateway issued, for that request's own subject and
//! session. The store acknowledges the write before the answer is
//! released; when it cannot, the client gets `503 auth_unavailable`
//! rather than a success page for a password change that left a thief
//! signed in.
//!
//! What each action does to the sessions is `session::control`'s; this
//! module decides whether an answer may ask, and logs and counts each
//! outcome.

use http::StatusCode;
use pingora_core::{Error, ErrorType};
use pingora_http::ResponseHeader;

use super::context::RequestContext;
use crate::auth::VerifiedToken;
use crate::config::runtime::router::Route;
use crate::config::Runtime;
use crate::metrics::METRICS;
use crate::session::SessionControl;
use crate::store::RevocationView;
use crate::vocabulary::{SESSION_CONTROL, TOKEN_EXPIRES_IN_HEADER};

/// The `outcome` label of an applied action.
const APPLIED: &str = "applied";

/// The access log's outcome of a request whose answer ended sessions.
pub const OUTCOME: &str = "session_control";

/// The store did not acknowledge the write: the answer must be withheld.
struct NotStored;

/// What the gateway needs to decide about one answer.
struct Answer<'a> {
    runtime: &'a Runtime,
    view: &'a RevocationView,
    route: &'a Route,
    /// The request's verified token, if it had one.
    identity: Option<&'a VerifiedToken>,
    request_id: &'a str,
}

/// Whether an upstream's answer carries the header at all: only then is
/// [`apply`]'s future made (boxed, so that the answers without it, nearly
/// all, do not move it about).
pub(super) fn asked_for(response: &ResponseHeader) -> bool {
    response.headers.contains_key(SESSION_CONTROL)
}

/// Removes the header from an upstream's `response` and, when the answer
/// may ask, applies the action before the answer goes on: the outcome is
/// then `session_control`, and a device that stays signed in is told to
/// refresh at once (`X-Token-Expires-In: 0`). An error means the store
/// did not take the write: the request is marked so that `fail_to_proxy`
/// answers `503 auth_unavailable` in the answer's stead.
pub(super) async fn apply(
    view: &RevocationView,
    response: &mut ResponseHeader,
    ctx: &mut RequestContext,
) -> pingora_core::Result<()> {
    if !response.headers.contains_key(SESSION_CONTROL) {
        return Ok(());
    }
    let (Some(runtime), Some(route)) = (&ctx.runtime, &ctx.route) else {
        response.remove_header(&SESSION_CONTROL);
        return Ok(());
    };
    let answer = Answer {
        runtime,
        view,
        route,
        identity: ctx.identity.as_deref(),
        request_id: &ctx.request_id,
    };
    // The store's write, timed in the request's trace.
    let deciding = decide(&answer, response);
    let decided = super::trace::in_span(
        ctx.tracing.request(),
        "session_write",
        opentelemetry::trace::SpanKind::Internal,
        deciding,
        |r| {
            let outcome = if r.is_ok() { "ok" } else { "not_stored" };
            vec![opentelemetry::KeyValue::new("portcullis.outcome", outcome)]
        },
    )
    .await;
    match decided {
        Ok(false) => Ok(()),
        Ok(true) => {
            ctx.outcome = OUTCOME;
            Ok(())
        }
        Err(NotStored) => {
            ctx.session_control_failed = true;
            Error::e_explain(ErrorType::InternalError, "session control not stored")
        }
    }
}

/// [`apply`] on one answer: `Ok(true)` when applied.
async fn decide(answer: &Answer<'_>, response: &mut ResponseHeader) -> Result<bool, NotStored> {
    let asked = asked(response);
    response.remove_header(&SESSION_CONTROL);
    let action_label = asked.map_or("invalid", SessionControl::as_str);
    let (action, session) = match admissible(answer, asked, response.status) {
        Ok(admitted) => admitted,
        Err(reason) => {
            count(answer.route, action_label, reason);
            tracing::warn!(
                request_id = answer.request_id,
                route = %answer.route.name,
                action = action_label,
                reason,
                "the upstream's X-Portcullis-Session-Control was ignored"
            );
            return Ok(false);
        }
    };
    write(answer, action, session, response).await?;
    Ok(true)
}

/// The one action the answer names; `None` for no valid value, or more
/// than one header line.
fn asked(response: &ResponseHeader) -> Option<SessionControl> {
    let mut values = response.headers.get_all(SESSION_CONTROL).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => SessionControl::parse(value.as_bytes()),
        _ => None,
    }
}

/// The action and the session (`sub`, `sid`) it applies to, or why the
/// answer may not ask (the `outcome` label).
fn admissible<'a>(
    answer: &Answer<'a>,
    asked: Option<SessionControl>,
    status: StatusCode,
) -> Result<(SessionControl, (&'a str, &'a str)), &'static str> {
    if !answer.route.session_control {
        return Err("route_not_opted_in");
    }
    let action = asked.ok_or("invalid")?;
    if !status.is_success() {
        return Err("not_2xx");
    }
    // A token of the gateway's own sessions: external issuers' tokens have
    // their `sid` cleared, and the issuer is checked besides.
    let session = answer
        .identity
        .map(|token| &token.claims)
        .filter(|claims| claims.iss == answer.runtime.issuer)
        .and_then(|claims| Some((claims.sub.as_str(), claims.sid.as_deref()?)))
        .ok_or("no_session")?;
    Ok((action, session))
}

/// Applies `action` in the store and waits for its acknowledgement.
async fn write(
    answer: &Answer<'_>,
    action: SessionControl,
    (sub, sid): (&str, &str),
    response: &mut ResponseHeader,
) -> Result<(), NotStored> {
    let runtime = answer.runtime;
    let applied = runtime
        .sessions
        .control(answer.view, action, sub, sid, runtime.access_ttl)
        .await;
    let applied = match applied {
        Ok(applied) => applied,
        Err(error) => {
            count(answer.route, action.as_str(), "failed");
            METRICS
                .store_errors
                .with_label_values(&["session_control"])
                .inc();
            tracing::warn!(
                request_id = answer.request_id,
                route = %answer.route.name,
                action = action.as_str(),
                %error,
                "session control not stored: the upstream's answer is withheld"
            );
            return Err(NotStored);
        }
    };
    count(answer.route, action.as_str(), APPLIED);
    tracing::info!(
        target: "portcullis::session",
        request_id = answer.request_id,
        route = %answer.route.name,
        sub,
        sid,
        action = action.as_str(),
        "session control applied"
    );
    if applied.refresh_now {
        // This device's access token predates the new version: refresh now.
        let _ = response.insert_header(TOKEN_EXPIRES_IN_HEADER, "0");
    }
    Ok(())
}

fn count(route: &Route, action: &str, outcome: &str) {
    METRICS
        .session_control
        .with_label_values(&[route.name.as_str(), action, outcome])
        .inc();
}
