//! CORS at the edge (Fetch standard, "CORS protocol"): the policy compiled
//! from `[cors]` and each route's `cors`, the gateway's answer to
//! preflights, and a downstream module that puts the headers on every
//! response to an allowed origin, proxied or written by the gateway itself.
//!
//! On a route with CORS the gateway is the one authority: the upstream's
//! `Access-Control-*` headers are removed, never merged. Not here: the
//! cookie-mode cross-site check (`endpoints::same_site_call`), which reads
//! the same origin list from the compiled session settings.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_LENGTH, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora_core::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::respond::{Refusal, REQUEST_ID_HEADER, SERVER_NAME};
use super::router::Route;

/// What a script on an allowed origin may read besides the safelisted
/// headers: everything a client needs to follow the contract.
pub const EXPOSED_HEADERS: &str =
    "X-Portcullis-Error, X-Token-Expires-In, X-Request-Id, WWW-Authenticate, Retry-After";

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

    /// The extra headers granting a preflight, or `None` when the origin,
    /// the method or one of the headers asked for is not allowed.
    pub fn grant(&self, request: &HeaderMap) -> Option<Vec<(HeaderName, HeaderValue)>> {
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
        let mut granted = self.response_headers(origin);
        if granted.is_empty() || !method_ok || !headers_ok {
            return None;
        }
        let value = |s: String| HeaderValue::from_str(&s).ok();
        granted.extend(
            [
                (ACCESS_CONTROL_ALLOW_METHODS, value(method.to_owned())),
                (ACCESS_CONTROL_ALLOW_HEADERS, value(asked.join(", "))),
                (ACCESS_CONTROL_MAX_AGE, value(self.max_age_secs.to_string())),
            ]
            .into_iter()
            .filter_map(|(name, v)| v.filter(|v| !v.is_empty()).map(|v| (name, v))),
        );
        Some(granted)
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

    /// The policy of a route (its own `cors`, else `[cors]`).
    pub fn for_route(&self, route: &Route) -> &Arc<CorsPolicy> {
        self.routes
            .get(&(route.host.clone(), route.prefix.clone()))
            .unwrap_or(&self.global)
    }
}

/// Removes the upstream's CORS headers where the gateway is the authority.
pub fn strip_upstream(response: &mut ResponseHeader, policy: &CorsPolicy) {
    if !policy.enabled() {
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

/// The per-request state of the module: the policy that applies and the
/// request's `Origin`.
#[derive(Default)]
pub struct CorsModule {
    policy: Option<Arc<CorsPolicy>>,
    origin: Option<HeaderValue>,
}

/// Registers [`CorsModule`] with the proxy's downstream modules.
pub struct CorsModuleBuilder;

impl HttpModuleBuilder for CorsModuleBuilder {
    fn init(&self) -> Module {
        Box::<CorsModule>::default()
    }
}

#[async_trait]
impl HttpModule for CorsModule {
    async fn response_header_filter(
        &mut self,
        response: &mut ResponseHeader,
        _end_of_stream: bool,
    ) -> pingora_core::Result<()> {
        let Some(policy) = self.policy.as_ref().filter(|p| p.enabled()) else {
            return Ok(());
        };
        if let Some(origin) = &self.origin {
            for (name, value) in policy.response_headers(origin) {
                response.insert_header(name, value)?;
            }
        }
        add_vary_origin(response)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Answers differ by `Origin`, so shared caches must key on it.
fn add_vary_origin(response: &mut ResponseHeader) -> pingora_core::Result<()> {
    let present = response
        .headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "origin" | "*"));
    if !present {
        response.append_header(VARY, "Origin")?;
    }
    Ok(())
}

/// Makes `policy` the one applied to every response of this request.
pub fn attach(session: &mut Session, policy: &Arc<CorsPolicy>) {
    let origin = session.req_header().headers.get(ORIGIN).cloned();
    if let Some(module) = session.downstream_modules_ctx.get_mut::<CorsModule>() {
        module.policy = Some(Arc::clone(policy));
        module.origin = origin;
    }
}

/// No CORS header on this request's responses (a refused preflight).
pub fn detach(session: &mut Session) {
    if let Some(module) = session.downstream_modules_ctx.get_mut::<CorsModule>() {
        module.policy = None;
    }
}

/// Answers a preflight itself, before any authentication (a browser sends
/// no credentials on one): 204 with the grant, or a 403 refusal without any
/// CORS header, so the browser never sends the actual request.
pub async fn answer_preflight(
    session: &mut Session,
    policy: &CorsPolicy,
    request_id: &str,
) -> Result<(), Refusal> {
    let Some(granted) = policy.grant(&session.req_header().headers) else {
        detach(session);
        return Err(Refusal::other(
            StatusCode::FORBIDDEN,
            "cors_rejected",
            "the origin, method or headers are not allowed for cross-origin calls",
        ));
    };
    let written = async {
        let mut header = ResponseHeader::build(StatusCode::NO_CONTENT, Some(8))?;
        for (name, value) in granted {
            header.insert_header(name, value)?;
        }
        header.insert_header(CONTENT_LENGTH, "0")?;
        header.insert_header(http::header::SERVER, SERVER_NAME)?;
        header.insert_header(REQUEST_ID_HEADER, request_id)?;
        session.write_response_header(Box::new(header), true).await
    };
    if let Err(e) = written.await {
        tracing::debug!(error = %e, "could not answer the preflight");
    }
    Ok(())
}
