//! `assertion` (on `[[upstreams]]`, overridable per route) and a route's
//! `assertion_binds_request` → each route's [`RouteAssertion`], and the
//! header names the gateway then owns: checked audience, header and
//! lifetime, and a signing key the upstream can verify with the JWKS.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use http::HeaderName;
use toml::Spanned;

use super::identity::{header_name, FORBIDDEN_IDENTITY_HEADERS};
use super::policy::RouteKey;
use super::routes::route_key;
use crate::auth::assertion::{AssertionPolicy, PolicySettings, RouteAssertion};
use crate::config::raw::{
    KeyAlgorithm, RawAssertion, RawIdentity, RawRoute, RawTokens, RawUpstream,
};
use crate::config::Diagnostics;
use crate::vocabulary::{ASSERTION_HEADER, CSRF_HEADER, FORWARDING, REQUEST_ID_HEADER};

/// The shortest assertion lifetime: below it, ordinary clock skew
/// between the gateway and a backend would refuse fresh assertions.
const MIN_TTL_SECS: u64 = 5;
/// The longest: an assertion is a proof of one moment, not a session.
const MAX_TTL_SECS: u64 = 3600;

/// Every route's assertion, by the route's key, and the header names they
/// use (stripped from every client request, on every route), the default
/// one always: a backend that checks for it must never find a client's.
pub(super) struct Assertions {
    pub by_route: HashMap<RouteKey, RouteAssertion>,
    pub headers: Vec<HeaderName>,
}

/// What the checks of one `assertion` table need from the rest of the file.
pub(super) struct Inputs<'a> {
    pub upstreams: &'a [RawUpstream],
    pub routes: &'a [RawRoute],
    pub tokens: &'a RawTokens,
    pub identity: &'a RawIdentity,
}

pub(super) fn assertions(inputs: &Inputs, sink: &mut Diagnostics) -> Assertions {
    let mut out = Assertions {
        by_route: HashMap::new(),
        headers: vec![HeaderName::from_static(ASSERTION_HEADER)],
    };
    let by_upstream = upstream_policies(inputs, sink);
    for route in inputs.routes {
        let Some(assertion) = route_assertion(route, &by_upstream, inputs, sink) else {
            continue;
        };
        if let Some(key) = route_key(route) {
            push_header(&mut out.headers, &assertion.policy.header);
            out.by_route.insert(key, assertion);
        }
    }
    let tables = (inputs.upstreams.iter().map(|u| &u.assertion))
        .chain(inputs.routes.iter().map(|r| &r.assertion));
    if let Some(first) = tables.flatten().next() {
        check_signing_key(inputs.tokens, first.span(), sink);
    }
    out
}

/// The policy of every upstream with a usable `assertion`, by name.
fn upstream_policies(
    inputs: &Inputs,
    sink: &mut Diagnostics,
) -> HashMap<String, Arc<AssertionPolicy>> {
    let mut by_upstream = HashMap::new();
    for upstream in inputs.upstreams {
        let policy = (upstream.assertion.as_ref()).and_then(|raw| policy(raw, inputs, sink));
        if let Some(policy) = policy {
            by_upstream.insert(upstream.name.get_ref().clone(), policy);
        }
    }
    by_upstream
}

/// A route's own `assertion`, else its upstream's, and whether it is bound
/// to each request.
fn route_assertion(
    route: &RawRoute,
    by_upstream: &HashMap<String, Arc<AssertionPolicy>>,
    inputs: &Inputs,
    sink: &mut Diagnostics,
) -> Option<RouteAssertion> {
    let own = (route.assertion.as_ref()).and_then(|raw| policy(raw, inputs, sink));
    let policy = own.or_else(|| by_upstream.get(route.upstream.get_ref()).cloned());
    let binds = route.assertion_binds_request.as_ref();
    let binds_request = binds.is_some_and(|b| *b.get_ref());
    // An assertion configured but unusable has its own error already.
    let configured = route.assertion.is_some()
        || (inputs.upstreams.iter())
            .any(|u| u.name.get_ref() == route.upstream.get_ref() && u.assertion.is_some());
    if let (Some(binds), false) = (binds.filter(|_| binds_request), configured) {
        sink.at(
            binds.span(),
            "assertion_binds_request needs an assertion on the route or its upstream",
        );
    }
    Some(RouteAssertion {
        policy: policy?,
        binds_request,
    })
}

fn push_header(headers: &mut Vec<HeaderName>, header: &HeaderName) {
    if !headers.contains(header) {
        headers.push(header.clone());
    }
}

/// One `assertion` table, checked; `None` when any value is unusable.
fn policy(
    raw: &Spanned<RawAssertion>,
    inputs: &Inputs,
    sink: &mut Diagnostics,
) -> Option<Arc<AssertionPolicy>> {
    let raw = raw.get_ref();
    let audience = audience(&raw.audience, inputs.tokens, sink);
    let header = header(&raw.header, inputs.identity, sink);
    let ttl = raw.ttl.get_ref().0;
    if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl.as_secs()) || ttl.subsec_nanos() != 0 {
        sink.at(
            raw.ttl.span(),
            format!("assertion ttl must be whole seconds from {MIN_TTL_SECS}s to 1h"),
        );
        return None;
    }
    Some(Arc::new(AssertionPolicy::new(PolicySettings {
        header: header?,
        audience: audience?,
        issuer: inputs.tokens.issuer.clone(),
        ttl,
        extra_claims: inputs.identity.claims.keys().cloned().collect(),
        cache_entries: inputs.tokens.verified_cache_entries.max(1),
    })))
}

/// The audience names the backend: not empty, and never the gateway's
/// own token audience, or an assertion (which a backend sees and may log)
/// would read as an access token's audience.
fn audience(raw: &Spanned<String>, tokens: &RawTokens, sink: &mut Diagnostics) -> Option<String> {
    let text = raw.get_ref();
    if text.trim().is_empty() {
        sink.at(raw.span(), "assertion audience must not be empty");
        return None;
    }
    if *text == tokens.audience {
        sink.at(
            raw.span(),
            "assertion audience must differ from [tokens] audience: an assertion is no access token",
        );
        return None;
    }
    Some(text.clone())
}

/// The header: a valid name that neither HTTP, the gateway nor the
/// identity gives another meaning.
fn header(
    raw: &Spanned<String>,
    identity: &RawIdentity,
    sink: &mut Diagnostics,
) -> Option<HeaderName> {
    let parsed = header_name(raw, sink)?;
    let folded = raw.get_ref().to_ascii_lowercase().replace('_', "-");
    let fold = |s: &Spanned<String>| s.get_ref().to_ascii_lowercase().replace('_', "-");
    let identity_names = [
        &identity.subject,
        &identity.roles,
        &identity.scopes,
        &identity.session,
    ]
    .into_iter()
    .chain(identity.claims.values())
    .map(fold);
    let taken = FORBIDDEN_IDENTITY_HEADERS.contains(&folded.as_str())
        || FORWARDING.contains(&folded.as_str())
        || [REQUEST_ID_HEADER, CSRF_HEADER].contains(&folded.as_str())
        || identity_names.into_iter().any(|name| name == folded);
    if taken {
        sink.at(
            raw.span(),
            format!(
                "{:?} cannot carry the assertion: the gateway or HTTP uses it",
                raw.get_ref()
            ),
        );
        return None;
    }
    Some(parsed)
}

/// Backends verify assertions with the published JWKS, so the signing
/// key must be one that is published: EdDSA, ES256 or RS256, never an
/// HS256 secret. Judged on the file, so that `check --skip-files` agrees.
fn check_signing_key(tokens: &RawTokens, span: Range<usize>, sink: &mut Diagnostics) {
    let Some(kid) = &tokens.signing_key else {
        sink.at(
            span,
            "an assertion needs [tokens] signing_key: an EdDSA, ES256 or RS256 key the backend verifies with the JWKS",
        );
        return;
    };
    let algorithm = (tokens.keys.iter())
        .find(|key| key.kid.get_ref() == kid.get_ref())
        .map(|key| key.algorithm);
    if algorithm == Some(KeyAlgorithm::HS256) {
        sink.at(
            span,
            format!(
                "an assertion needs an asymmetric signing key (EdDSA, ES256 or RS256): {:?} is an HS256 secret, which is never published",
                kid.get_ref()
            ),
        );
    }
}
