//! `[[routes]]` → the [`Route`]s of the route table: each route's host and
//! path prefix in the form requests are matched in, its auth mode and
//! requirement (roles, scopes, `max_auth_age`, `require_claims`), its
//! `methods`, whether its backend may control sessions, its rate limit,
//! and the pool it forwards to.

use std::sync::Arc;
use std::time::Duration;

use super::policy::{self, PathTable, RouteKey};
use super::rate_limits::Policies;
use super::upstreams::{named_pool, Pools};
use crate::auth::Requirement;
use crate::config::raw::{AuthMode, RawRoute};
use crate::config::runtime::methods::RouteMethods;
use crate::config::runtime::rate_limit::{RateLimitPolicy, RouteLimit};
use crate::config::runtime::router::{normalize_prefix, Route};
use crate::config::Diagnostics;
use toml::Spanned;

pub(super) fn routes(
    raw: &[RawRoute],
    pools: &Pools,
    policies: &Policies,
    sink: &mut Diagnostics,
) -> Vec<Route> {
    let mut paths = PathTable::default();
    raw.iter()
        .filter_map(|entry| route(entry, pools, policies, &mut paths, sink))
        .collect()
}

/// One `[[routes]]` entry; `paths` holds the routes before it.
fn route(
    raw: &RawRoute,
    pools: &Pools,
    policies: &Policies,
    paths: &mut PathTable,
    sink: &mut Diagnostics,
) -> Option<Route> {
    let prefix = route_prefix(&raw.path, sink)?;
    let host = route_host(raw.host.as_ref(), sink)?;
    let methods = policy::methods(raw, sink);
    if !paths.admit(
        (host.clone(), prefix.clone()),
        raw,
        methods.as_deref(),
        sink,
    ) {
        return None;
    }
    // An optional route would let a request without a token past the
    // very roles it asks of a request with one.
    if raw.auth != AuthMode::Required && !(raw.roles.is_empty() && raw.scopes.is_empty()) {
        sink.at(raw.path.span(), "roles and scopes need auth = \"required\"");
    }
    let max_auth_age = max_auth_age(raw, sink);
    let claims = policy::claim_conditions(raw, sink);
    let session_control = session_control(raw, sink);
    let limit = rate_limit_of(raw, policies, sink);
    let api_keys = api_keys(raw, sink);
    let upstream = named_pool(&raw.upstream, pools, sink)?;
    let methods = methods.map(|m| RouteMethods::new(&m));
    // Routes sharing a path are told apart by their methods.
    let name = raw.name.clone().unwrap_or_else(|| match &methods {
        Some(methods) => format!("{} {prefix}", methods.joined(",")),
        None => prefix.clone(),
    });
    Some(Route {
        metrics: crate::metrics::RouteMetrics::new(&name),
        rate_limit: limit.map(|p| {
            let methods = methods.as_ref().map_or_else(String::new, |m| m.joined(","));
            let host_name = host.clone().unwrap_or_default();
            RouteLimit::new(p, &name, [host_name, prefix.clone(), methods])
        }),
        name,
        host,
        prefix,
        auth: raw.auth,
        requirement: Requirement {
            any_role: raw.roles.clone(),
            all_scopes: raw.scopes.clone(),
            max_auth_age,
            claims,
        },
        upstream,
        paths: raw.paths,
        session_control,
        api_keys,
        // Set by `compile` once `[cors]` is compiled (after the routes, so
        // that diagnostics keep the file's order).
        cors: std::sync::Arc::default(),
        // Set by `compile` too, from `assertion::assertions`.
        assertion: None,
        methods,
    })
}

/// The `[[rate_limits]]` policy the route names, which must exist.
fn rate_limit_of(
    raw: &RawRoute,
    policies: &Policies,
    sink: &mut Diagnostics,
) -> Option<Arc<RateLimitPolicy>> {
    let name = raw.rate_limit.as_ref()?;
    let policy = policies.get(name.get_ref()).cloned();
    if policy.is_none() {
        sink.at(
            name.span(),
            format!(
                "unknown rate limit {:?}: no [[rate_limits]] entry has that name",
                name.get_ref()
            ),
        );
    }
    policy
}

/// `max_auth_age`: more than zero, and on a route that reads tokens. On
/// `auth = "none"` no token is ever read, so the setting could never be
/// met: a mistake, not a policy. On `optional` it applies to a request
/// that presents a token.
fn max_auth_age(raw: &RawRoute, sink: &mut Diagnostics) -> Option<Duration> {
    let spanned = raw.max_auth_age.as_ref()?;
    let age = spanned.get_ref().0;
    if age.as_secs() == 0 {
        sink.at(spanned.span(), "max_auth_age must be at least one second");
    } else if raw.auth == AuthMode::None {
        sink.at(
            spanned.span(),
            "max_auth_age needs auth = \"required\" or \"optional\"",
        );
    }
    Some(age)
}

/// `session_control = true` on a route that reads tokens: on `auth =
/// "none"` no request carries a session, so the backend's header could
/// never be honoured there (a mistake, not a policy).
fn session_control(raw: &RawRoute, sink: &mut Diagnostics) -> bool {
    let Some(spanned) = raw.session_control.as_ref() else {
        return false;
    };
    let on = *spanned.get_ref();
    if on && raw.auth == AuthMode::None {
        sink.at(
            spanned.span(),
            "session_control needs auth = \"required\" or \"optional\"",
        );
    }
    on
}

/// `api_keys = true`: on a route that reads credentials. On `auth =
/// "none"` no key would ever be read: a mistake, not a policy.
fn api_keys(raw: &RawRoute, sink: &mut Diagnostics) -> bool {
    let Some(spanned) = raw.api_keys.as_ref() else {
        return false;
    };
    if *spanned.get_ref() && raw.auth == AuthMode::None {
        sink.at(
            spanned.span(),
            "api_keys needs auth = \"required\" or \"optional\"",
        );
    }
    *spanned.get_ref()
}

/// Routes are matched against normalised request paths, so the configured
/// prefix must be in that form too.
fn route_prefix(path: &Spanned<String>, sink: &mut Diagnostics) -> Option<String> {
    let text = path.get_ref();
    if !text.starts_with('/') {
        sink.at(
            path.span(),
            format!("route path {text:?} must start with '/'"),
        );
        return None;
    }
    let prefix = normal_prefix(text);
    if prefix.is_none() {
        sink.at(
            path.span(),
            format!("route path {text:?} is not a plain normalised path"),
        );
    }
    prefix
}

/// The key of a route as configured, when its path is a plain one; the
/// per-route `cors` policies are keyed the same way, so that the policy a
/// request finds is its route's.
pub(super) fn route_key(raw: &RawRoute) -> Option<RouteKey> {
    let host = raw.host.as_ref().map(|h| h.get_ref().to_ascii_lowercase());
    Some((host, normal_prefix(raw.path.get_ref())?))
}

/// The table prefix of a configured path, if it is a plain path.
fn normal_prefix(path: &str) -> Option<String> {
    match crate::config::runtime::path::normalize_path(path.as_bytes()) {
        Ok(normal) if !normal.contains(';') => Some(normalize_prefix(&normal)),
        _ => None,
    }
}

/// The route's host in lower case: `Some(None)` for any host, `None` when
/// it is not a plain host name. Requests are matched on the host name
/// alone, so a port would never match.
fn route_host(host: Option<&Spanned<String>>, sink: &mut Diagnostics) -> Option<Option<String>> {
    let Some(spanned) = host else {
        return Some(None);
    };
    let lower = spanned.get_ref().to_ascii_lowercase();
    let plain = !lower.is_empty()
        && !lower.ends_with('.')
        && (lower.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !plain {
        sink.at(
            spanned.span(),
            format!("route host {lower:?} must be a plain host name, without port"),
        );
        return None;
    }
    Some(Some(lower))
}
