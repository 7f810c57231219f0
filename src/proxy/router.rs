//! Route selection: host routes first, then routes for any host; within
//! each, the longest prefix that matches on a segment boundary wins, so
//! `/admin` matches `/admin` and `/admin/x` but not `/administrator`.
//!
//! A host route always beats a route without a host, whatever the prefix
//! lengths: a host's own rules are never overridden by a generic one.

use std::collections::HashMap;
use std::sync::Arc;

use pingora_core::upstreams::peer::PeerOptions;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::LoadBalancer;

use crate::auth::Requirement;
use crate::config::raw::AuthMode;

/// A pool of upstream targets with round-robin selection.
pub struct UpstreamPool {
    pub name: String,
    pub balancer: LoadBalancer<RoundRobin>,
    pub options: PeerOptions,
}

pub struct Route {
    /// Bounded label for logs and metrics: the configured name, or the path.
    pub name: String,
    pub host: Option<String>,
    pub prefix: String,
    pub auth: AuthMode,
    pub requirement: Requirement,
    pub upstream: Arc<UpstreamPool>,
    pub metrics: crate::metrics::RouteMetrics,
}

#[derive(Default)]
pub struct Router {
    by_host: HashMap<String, Vec<Arc<Route>>>,
    any_host: Vec<Arc<Route>>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut router = Router::default();
        for route in routes {
            let route = Arc::new(route);
            match &route.host {
                Some(host) => router.by_host.entry(host.clone()).or_default().push(route),
                None => router.any_host.push(route),
            }
        }
        for routes in router.by_host.values_mut().chain([&mut router.any_host]) {
            routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        }
        router
    }

    /// The route for a normalised path; `host` may carry a port and any case.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let candidates = host
            .map(strip_port)
            .and_then(|h| self.by_host.get(h.to_ascii_lowercase().as_str()))
            .unwrap_or(&self.any_host);
        candidates
            .iter()
            .find(|route| prefix_matches(&route.prefix, path))
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_host.values().flatten().chain(self.any_host.iter())
    }
}

/// `prefix` is normalised: `/` or a path without a trailing slash.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// The host name without port, brackets or the root's trailing dot
/// (`api.example.com.` is `api.example.com` to DNS and to most backends).
fn strip_port(host: &str) -> &str {
    let name = match host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// Config spelling → the form `prefix_matches` expects.
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/admin", "/admin"));
        assert!(prefix_matches("/admin", "/admin/users"));
        assert!(!prefix_matches("/admin", "/administrator"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn ports_and_brackets_are_stripped() {
        assert_eq!(strip_port("api.example.com:8080"), "api.example.com");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("api.example.com.:8080"), "api.example.com");
    }
}
