//! CORS at the edge (Fetch standard, "CORS protocol"): the gateway's answer
//! to preflights, and a downstream module that puts the headers on every
//! response to an allowed origin, proxied or written by the gateway itself.
//! The policies themselves are compiled in `config::runtime::cors`.
//!
//! On a route with CORS the gateway is the one authority: the upstream's
//! `Access-Control-*` headers are removed, never merged. Not here: the
//! cookie-mode cross-site check (`session::CookieSettings::same_site_call`), which reads
//! the same origin list from the compiled session settings.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use http::header::{ORIGIN, VARY};
use http::HeaderValue;
use pingora_core::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::admission::{host_of, target_of};
use super::endpoints;
use super::respond::{Refusal, Reply};
use crate::config::runtime::cors::{is_preflight, CorsPolicy};
use crate::config::runtime::path;
use crate::config::Runtime;

/// The CORS policy that answers this request as a preflight: the route's,
/// or `[cors]` for the gateway's own endpoints and unrouted paths; `None`
/// when it is no preflight or no policy is on (the request goes on as usual).
pub(super) fn preflight_policy(
    runtime: &Runtime,
    request: &pingora_http::RequestHeader,
) -> Option<Arc<CorsPolicy>> {
    if !is_preflight(&request.method, &request.headers) {
        return None;
    }
    let target = target_of(runtime, request).ok()?;
    let routed = endpoints::endpoint_for(&target.path)
        .is_none()
        .then(|| {
            runtime
                .router
                .find(host_of(request), &path::without_parameters(&target.path))
        })
        .flatten();
    let policy = match routed {
        Some(route) => &route.cors,
        None => &runtime.cors.global,
    };
    policy.enabled().then(|| Arc::clone(policy))
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
/// no credentials on one): 204 with the preflight answer, or a 403 refusal without any
/// CORS header, so the browser never sends the actual request.
pub async fn answer_preflight(
    session: &mut Session,
    policy: &CorsPolicy,
    request_id: &str,
) -> Result<(), Refusal> {
    let Some(answer) = policy.preflight_answer(&session.req_header().headers) else {
        detach(session);
        return Err(Refusal::cors_rejected());
    };
    let written = Reply::preflight(answer, request_id).send(session);
    if let Err(e) = written.await {
        tracing::debug!(error = %e, "could not answer the preflight");
    }
    Ok(())
}
