//! The compiled `[[rate_limits]]` policies and a route's use of one: the
//! GCRA arithmetic, whom it counts, who is exempt, the `RateLimit-Policy`
//! field it announces, and the route's decision counters.

use std::sync::Arc;

use prometheus::IntCounter;

use crate::auth::AccessClaims;
use crate::config::raw::RateLimitKey;
use crate::metrics::METRICS;
use crate::store::rate_limit::Gcra;

#[derive(Debug)]
pub struct RateLimitPolicy {
    pub name: String,
    pub gcra: Gcra,
    pub key: RateLimitKey,
    pub exempt_roles: Vec<String>,
    pub exempt_scopes: Vec<String>,
    /// What decides while the shared store cannot.
    pub on_unavailable: crate::config::raw::RateLimitFallback,
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers):
    /// `"NAME";q=COUNT;w=SECONDS`, the rate as configured.
    pub policy_field: String,
}

impl RateLimitPolicy {
    /// A token holding any exempt role or scope is not limited.
    pub fn exempts(&self, claims: &AccessClaims) -> bool {
        claims.roles.iter().any(|r| self.exempt_roles.contains(r))
            || claims
                .scopes()
                .any(|s| self.exempt_scopes.iter().any(|e| e == s))
    }

    /// `RateLimit`: `"NAME";r=REMAINING;t=SECONDS`.
    pub fn limit_field(&self, remaining: u64, reset: u64) -> String {
        format!("\"{}\";r={remaining};t={reset}", self.name)
    }
}

/// The outcomes counted by `portcullis_rate_limit_decisions_total`.
pub const RATE_LIMIT_OUTCOMES: [&str; 4] = ["allowed", "limited", "exempt", "unavailable"];

/// A route's policy, with its counters resolved once.
#[derive(Debug)]
pub struct RouteLimit {
    pub policy: Arc<RateLimitPolicy>,
    /// The route as its limiter keys name it: host (or empty), prefix,
    /// methods (or empty). Names need not be unique; these are, together.
    pub scope: [String; 3],
    counters: [IntCounter; 4],
}

impl RouteLimit {
    /// `route` labels the counters; `scope` is [`Self::scope`], made once
    /// here rather than on every request.
    pub fn new(policy: Arc<RateLimitPolicy>, route: &str, scope: [String; 3]) -> Self {
        let counters = RATE_LIMIT_OUTCOMES.map(|outcome| {
            METRICS
                .rate_limit_decisions
                .with_label_values(&[route, outcome])
        });
        Self {
            policy,
            scope,
            counters,
        }
    }

    /// Counts one decision; `outcome` is one of [`RATE_LIMIT_OUTCOMES`].
    pub fn count(&self, outcome: &str) {
        if let Some(i) = RATE_LIMIT_OUTCOMES.iter().position(|o| *o == outcome) {
            self.counters[i].inc();
        }
    }
}
