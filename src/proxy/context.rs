//! The per-request state the proxy's hooks share: written by
//! `request_filter` and read by the later hooks and the access log.

use std::sync::Arc;
use std::time::Instant;

use pingora_proxy::Session;

use super::client_addr::{self, ClientAddress};
use crate::auth::VerifiedToken;
use crate::config::runtime::router::Route;
use crate::config::Runtime;
use crate::telemetry::{Outgoing, RequestTrace};

/// Per-request state, written by `request_filter` and read by later hooks.
pub struct RequestContext {
    pub request_id: String,
    pub started: Instant,
    /// The configuration this request started with, kept until it ends.
    pub runtime: Option<Arc<Runtime>>,
    pub route: Option<Arc<Route>>,
    /// Written only by authentication, read only by header injection.
    pub identity: Option<Arc<VerifiedToken>>,
    /// The normalised path plus the original query, for the upstream.
    pub upstream_uri: Option<http::Uri>,
    /// The contract code of a refusal, or `ok`.
    pub outcome: &'static str,
    /// The gateway answered one of its own endpoints: its route label.
    pub endpoint: Option<&'static str>,
    /// A token whose signature and claims verified, kept even when a later
    /// check refused it, so the log names whom a refusal concerned.
    pub verified: Option<Arc<VerifiedToken>>,
    /// The authentication decision on a route that looks at tokens.
    pub decision: Option<&'static str>,
    /// The request presented an API key (the decision above is the key's).
    pub api_key: bool,
    /// When the upstream was chosen, for the upstream latency.
    pub upstream_started: Option<Instant>,
    /// The target of the current attempt.
    pub backend: Option<pingora_load_balancing::Backend>,
    pub connect_attempts: usize,
    /// Every target of the pool is down: 503, not 502.
    pub no_healthy_target: bool,
    /// The upstream's session control could not be stored: its answer is
    /// replaced with 503 `auth_unavailable`.
    pub session_control_failed: bool,
    /// The client address, resolved once through the trusted proxies for
    /// both `X-Forwarded-For` and the access log.
    pub client: Option<ClientAddress>,
    /// The `RateLimit` field of a request its route's limit let through.
    pub rate_limit: Option<String>,
    /// The request's trace (`proxy::trace`).
    pub tracing: Tracing,
}

impl RequestContext {
    /// A request that has not been looked at yet.
    pub fn new() -> Self {
        Self {
            request_id: String::new(),
            started: Instant::now(),
            runtime: None,
            route: None,
            identity: None,
            upstream_uri: None,
            outcome: "ok",
            endpoint: None,
            verified: None,
            decision: None,
            api_key: false,
            upstream_started: None,
            backend: None,
            connect_attempts: 0,
            no_healthy_target: false,
            session_control_failed: false,
            client: None,
            rate_limit: None,
            tracing: Tracing::Off,
        }
    }

    /// Resolves the request's client into `client` on first use: a retry
    /// and the access log ask again.
    pub(crate) fn resolve_client(&mut self, session: &Session) {
        if self.client.is_none() {
            if let Some(runtime) = &self.runtime {
                self.client = client_addr::of_session(session, &runtime.server.trusted_proxies);
            }
        }
    }
}

impl Default for RequestContext {
    fn default() -> Self {
        Self::new()
    }
}

/// A request's part in tracing.
#[derive(Default)]
pub enum Tracing {
    /// `[tracing]` is off.
    #[default]
    Off,
    /// On, but this request makes no span (sample ratio 0, no parent).
    Untraced,
    Traced(Box<Traced>),
}

/// The request span and the upstream call's, while it lasts.
pub struct Traced {
    pub request: RequestTrace,
    pub upstream: Option<crate::telemetry::Span>,
}

impl Tracing {
    /// The request's trace, when it has one.
    pub fn request(&self) -> Option<&RequestTrace> {
        match self {
            Self::Traced(traced) => Some(&traced.request),
            _ => None,
        }
    }

    pub fn is_on(&self) -> bool {
        !matches!(self, Self::Off)
    }

    /// The trace headers of the call to the upstream.
    pub(super) fn to_upstream(&self) -> Outgoing {
        match self {
            Self::Traced(traced) => Outgoing::of(true, traced.upstream.as_ref()),
            other => Outgoing::of(other.is_on(), None),
        }
    }
}
