//! Sets a route's signed identity assertion (`auth::assertion`) on the
//! request its upstream gets. A client's copy of the header is already
//! gone by then: the header rules reserve every assertion header, on
//! every route (`proxy::headers::to_upstream`).

use std::sync::Arc;

use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use crate::auth::assertion::{Binding, RouteAssertion, Subject};
use crate::auth::VerifiedToken;
use crate::config::runtime::router::Route;
use crate::config::Runtime;

/// Sets the assertion for `identity` (none: a request without a token),
/// after the upstream request's URI is final. A request the gateway cannot
/// sign for is not sent without one: the backend would refuse it, or,
/// worse, believe its headers.
pub fn attach(
    runtime: &Runtime,
    route: &Route,
    identity: Option<&Arc<VerifiedToken>>,
    request_id: &str,
    upstream: &mut RequestHeader,
) -> Result<()> {
    let Some(RouteAssertion {
        policy,
        binds_request,
    }) = &route.assertion
    else {
        return Ok(());
    };
    let Some(signer) = runtime.signer.as_ref() else {
        return Error::e_explain(ErrorType::InternalError, "no signing key for the assertion");
    };
    let subject = identity.map_or(Subject::Anonymous(route.auth), Subject::Token);
    let binding = binds_request.then(|| Binding {
        method: upstream.method.as_str(),
        path: upstream.uri.path(),
        request_id,
    });
    let value = policy.assertion(signer, subject, binding).map_err(|e| {
        tracing::warn!(route = %route.name, error = %e, "could not sign the upstream assertion");
        Error::explain(ErrorType::InternalError, "assertion signing failed")
    })?;
    upstream.insert_header(policy.header.clone(), value)
}
