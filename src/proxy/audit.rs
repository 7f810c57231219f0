//! A finished request as the audit trail records it: who (client address,
//! subject, the credential presented), what (route, method), the decision
//! and the rule that made it. Read from the request's context once the
//! answer is out, like the access line; the line itself is the `audit`
//! module's. Never the path, query string or a header value.
//!
//! The rule is named from a fixed vocabulary (README, "Audit trail"):
//! allowed by `public`, `anonymous`, `authenticated`, `requirement` or
//! `endpoint`; refused by `token`, `revocation`, `account`, `store`,
//! `roles`, `scopes`, `max_auth_age`, `no_route`, `method`, `cors`,
//! `endpoint` or `request`.

use pingora_proxy::Session;

use super::access_log::route_label;
use super::context::RequestContext;
use crate::audit::{AuditTrail, Credential, Decision, Verdict};
use crate::auth::AccessClaims;
use crate::config::raw::AuthMode;
use crate::config::runtime::router::Route;

/// The gateway's answers that decide nothing about anyone: the public keys
/// and CORS preflights are not recorded.
const NOT_DECISIONS: [&str; 2] = ["_jwks", "_cors_preflight"];

/// Records a finished request's decision, when the trail is on.
pub(super) fn record(trail: &AuditTrail, session: &Session, ctx: &mut RequestContext) {
    if !trail.is_enabled() || ctx.endpoint.is_some_and(|e| NOT_DECISIONS.contains(&e)) {
        return;
    }
    ctx.resolve_client(session);
    // Refused: the gateway answered with a code before any upstream was
    // asked. A request let through keeps `allowed` even if its upstream
    // then failed (`code` says how it ended).
    let allowed = ctx.outcome == "ok" || ctx.upstream_started.is_some();
    let (rule, missing) = match allowed {
        true => (allowed_by(ctx), Vec::new()),
        false => refused_by(ctx),
    };
    let subject = ctx.identity.as_ref().or(ctx.verified.as_ref());
    let trace_id = ctx.tracing.request().map(|t| t.trace_id().to_string());
    trail.record(&Decision {
        request_id: &ctx.request_id,
        client: ctx.client.as_ref().map(|c| c.ip),
        subject: subject.map(|i| i.claims.sub.as_str()),
        credential: credential_of(ctx),
        route: route_label(ctx),
        method: session.req_header().method.as_str(),
        decision: if allowed {
            Verdict::Allowed
        } else {
            Verdict::Refused
        },
        code: ctx.outcome,
        rule,
        missing: &missing,
        trace_id: trace_id.as_deref(),
    });
}

/// What the client presented. A route with `auth = "none"` looks at no
/// credential; elsewhere a token is named once one was sent, valid or not.
/// A presented API key is named as one, valid or not.
fn credential_of(ctx: &RequestContext) -> Credential {
    if ctx.api_key {
        return Credential::ApiKey;
    }
    match ctx.endpoint {
        Some("_auth_token") => return Credential::Session,
        Some("_auth_login") => return Credential::None,
        Some(_) => return Credential::Token,
        None => {}
    }
    match ctx.decision {
        None | Some("anonymous" | "token_missing") => Credential::None,
        Some(_) => Credential::Token,
    }
}

/// The rule that let a request through.
fn allowed_by(ctx: &RequestContext) -> &'static str {
    let Some(route) = ctx.route.as_ref().filter(|_| ctx.endpoint.is_none()) else {
        return "endpoint";
    };
    match (route.auth, ctx.decision) {
        (AuthMode::None, _) => "public",
        (_, Some("anonymous")) => "anonymous",
        _ if route.requirement.is_empty() => "authenticated",
        _ => "requirement",
    }
}

/// The rule that refused a request, and what the client lacked.
fn refused_by(ctx: &RequestContext) -> (&'static str, Vec<&str>) {
    let code = ctx.outcome;
    // Authentication decided it: the route looked at the token.
    if ctx.decision == Some(code) {
        return match (code, &ctx.route, &ctx.verified) {
            ("insufficient_scope", Some(route), Some(token)) => lacking(route, &token.claims),
            ("token_revoked", ..) => ("revocation", Vec::new()),
            ("account_disabled", ..) => ("account", Vec::new()),
            ("auth_unavailable", ..) => ("store", Vec::new()),
            ("reauthentication_required", ..) => ("max_auth_age", Vec::new()),
            ("insufficient_scope", ..) => ("requirement", Vec::new()),
            _ => ("token", Vec::new()),
        };
    }
    let rule = match code {
        _ if ctx.endpoint.is_some() => "endpoint",
        "not_found" if ctx.route.is_none() => "no_route",
        "method_not_allowed" => "method",
        "cors_rejected" => "cors",
        _ => "request",
    };
    (rule, Vec::new())
}

/// Which of the route's requirements the token fails: one of its roles
/// (all listed, any would do), or the scopes it lacks. A requirement of
/// another kind is named `requirement`; the challenge names what it needs.
fn lacking<'r>(route: &'r Route, claims: &AccessClaims) -> (&'static str, Vec<&'r str>) {
    let requirement = &route.requirement;
    let roles = &requirement.any_role;
    if !roles.is_empty() && !roles.iter().any(|r| claims.roles.contains(r)) {
        return ("roles", roles.iter().map(String::as_str).collect());
    }
    let scopes: Vec<&str> = requirement
        .all_scopes
        .iter()
        .map(String::as_str)
        .filter(|s| !claims.scopes().any(|have| have == *s))
        .collect();
    match scopes.is_empty() {
        true => ("requirement", scopes),
        false => ("scopes", scopes),
    }
}
