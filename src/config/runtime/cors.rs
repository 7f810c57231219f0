//! The compiled CORS policies (Fetch standard, "CORS protocol"): the one
//! from `[cors]` and each route's own, and what each grants an origin.
//! Answering preflights and putting the headers on responses is
//! `proxy::cors`'s job.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The headers that allow a CORS preflight (`Access-Control-Allow-*`, `Max-Age`).
pub type PreflightAnswer = Vec<(HeaderName, HeaderValue)>;

/// What a script on an allowed origin may read besides the safelisted
/// headers: everything a client needs to follow the contract.
pub const EXPOSED_HEADERS: &str =
    "X-Portcullis-Error, X-Token-Expires-In, X-Request-Id, WWW-Authenticate, Retry-After, \
     RateLimit, RateLimit-Policy";

/// One compiled CORS policy; with no origins it is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Exact origins, compared byte for byte with the `Origin` header.
    pub origins: Vec<String>,
    /// `"*"` was configured (never together with credentials).
    pub any_origin: bool,
    pub credentials: bool,
    /// Upper-case methods; `*` allows any.
    pub methods: Vec<String>,
    /// Lower-case header names; `*` allows any.
    pub headers: Vec<String>,
    pub max_age_secs: u64,
}

impl CorsPolicy {
    pub fn enabled(&self) -> bool {
        self.any_origin || !self.origins.is_empty()
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    /// Removes an upstream's `Access-Control-*` headers when this policy is
    /// on: the gateway is then the one authority, never merged with it.
    pub fn strip_upstream(&self, response: &mut pingora_http::ResponseHeader) {
        if !self.enabled() {
            return;
        }
        let names: Vec<HeaderName> = response
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in names {
            response.remove_header(&name);
        }
    }

    /// The headers of an actual (non-preflight) response to `origin`:
    /// none when the origin is not allowed.
    pub fn response_headers(&self, origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        if !origin.to_str().is_ok_and(|o| self.allows(o)) {
            return Vec::new();
        }
        let mut headers = vec![
            (ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            ),
        ];
        if self.credentials {
            headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        headers
    }

    /// The extra headers of a preflight's 204, or `None` when the origin,
    /// the method or one of the headers asked for is not allowed.
    pub fn preflight_answer(&self, request: &HeaderMap) -> Option<PreflightAnswer> {
        let origin = request.get(ORIGIN)?;
        let method = request.get(ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
        let asked = request
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect::<Vec<_>>();
        let method_ok = self.methods.iter().any(|m| m == "*" || m == method);
        let headers_ok =
            self.headers.iter().any(|h| h == "*") || asked.iter().all(|h| self.headers.contains(h));
        let mut answer = self.response_headers(origin);
        if answer.is_empty() || !method_ok || !headers_ok {
            return None;
        }
        let value = |s: String| HeaderValue::from_str(&s).ok();
        answer.extend(
            [
                (ACCESS_CONTROL_ALLOW_METHODS, value(method.to_owned())),
                (ACCESS_CONTROL_ALLOW_HEADERS, value(asked.join(", "))),
                (ACCESS_CONTROL_MAX_AGE, value(self.max_age_secs.to_string())),
            ]
            .into_iter()
            .filter_map(|(name, v)| v.filter(|v| !v.is_empty()).map(|v| (name, v))),
        );
        Some(answer)
    }
}

/// A preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The global policy and each route's, keyed like the route table.
#[derive(Debug, Default)]
pub struct CorsTable {
    pub global: Arc<CorsPolicy>,
    routes: HashMap<(Option<String>, String), Arc<CorsPolicy>>,
}

impl CorsTable {
    pub fn new(
        global: CorsPolicy,
        routes: HashMap<(Option<String>, String), Arc<CorsPolicy>>,
    ) -> Self {
        Self {
            global: Arc::new(global),
            routes,
        }
    }

    /// The policy of the route with this host and prefix (its own `cors`,
    /// else `[cors]`). Looked up once, when the route is compiled: each
    /// route then carries its policy.
    pub fn policy_of(&self, host: Option<&str>, prefix: &str) -> &Arc<CorsPolicy> {
        self.routes
            .get(&(host.map(str::to_owned), prefix.to_owned()))
            .unwrap_or(&self.global)
    }
}
