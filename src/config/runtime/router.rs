//! Route selection. A request whose host has routes of its own is matched
//! against those only; any other host against the routes without a host.
//! There is no fallback from a host's table to the generic one: a host's
//! own rules are never overridden, nor completed, by a generic route.
//! Within a table the longest prefix that matches on a segment boundary
//! wins, so `/admin` matches `/admin` and `/admin/x` but not
//! `/administrator`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::cors::CorsPolicy;
use super::upstream::UpstreamPool;

use crate::auth::Requirement;
use crate::config::raw::{AuthMode, PathMatch};

pub struct Route {
    /// Bounded label for logs and metrics: the configured name, or the path.
    pub name: String,
    pub host: Option<String>,
    pub prefix: String,
    pub auth: AuthMode,
    pub requirement: Requirement,
    pub upstream: Arc<UpstreamPool>,
    pub metrics: crate::metrics::RouteMetrics,
    pub paths: PathMatch,
    /// `session_control`: the upstream's `X-Portcullis-Session-Control`
    /// is honoured (else ignored, and always removed).
    pub session_control: bool,
    /// The route's CORS policy (its own `cors`, else `[cors]`).
    pub cors: Arc<CorsPolicy>,
    /// Its `rate_limit` policy.
    pub rate_limit: Option<super::rate_limit::RouteLimit>,
    /// Requests may present an API key instead of a token.
    pub api_keys: bool,
    /// The signed identity assertion its upstream gets, if any.
    pub assertion: Option<crate::auth::assertion::RouteAssertion>,
}

impl Route {
    /// Whether this route serves `path` (normalised, parameters cut).
    pub fn matches(&self, path: &str) -> bool {
        match self.paths {
            PathMatch::Standard => prefix_matches(&self.prefix, path),
            PathMatch::Legacy => legacy_prefix_matches(&self.prefix, path),
        }
    }
}

#[derive(Default)]
pub struct Router {
    by_host: HashMap<String, Vec<Arc<Route>>>,
    any_host: Vec<Arc<Route>>,
    /// The hosts whose table has a `match = "legacy"` route.
    legacy_hosts: HashSet<String>,
    /// The table without a host has one.
    legacy_any_host: bool,
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
        let legacy = |routes: &[Arc<Route>]| routes.iter().any(|r| r.paths == PathMatch::Legacy);
        router.legacy_hosts = (router.by_host.iter())
            .filter(|(_, routes)| legacy(routes))
            .map(|(host, _)| host.clone())
            .collect();
        router.legacy_any_host = legacy(&router.any_host);
        router
    }

    /// Whether a backend behind this host's table could read `path` as
    /// another one: any spelling [`super::path::legacy_ambiguous`] lists,
    /// once the table has a legacy route. Judged for the table, not for
    /// the route the path falls on: `/admin::$DATA/x` falls on `/`, and a
    /// Windows backend reads it as `/admin/x`, whatever `/` says.
    pub fn is_ambiguous(&self, host: Option<&str>, path: &str) -> bool {
        // Nothing to judge (and nothing allocated) without a legacy route.
        if self.legacy_hosts.is_empty() && !self.legacy_any_host {
            return false;
        }
        if !super::path::legacy_ambiguous(path) {
            return false;
        }
        match host.map(table_key).filter(|h| self.by_host.contains_key(h)) {
            Some(host) => self.legacy_hosts.contains(&host),
            None => self.legacy_any_host,
        }
    }

    /// The route for a normalised path; `host` may carry a port and any case.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let candidates = host
            .map(strip_port)
            .and_then(|h| self.by_host.get(h.to_ascii_lowercase().as_str()))
            .unwrap_or(&self.any_host);
        candidates.iter().find(|route| route.matches(path))
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

/// `prefix_matches` in any ASCII case.
pub fn legacy_prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// The key of a host's table: its name without port, in lower case.
fn table_key(host: &str) -> String {
    strip_port(host).to_ascii_lowercase()
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
        assert!(!prefix_matches("/admin", "/ADMIN"));
        assert!(legacy_prefix_matches("/admin", "/ADMIN/x"));
        assert!(legacy_prefix_matches("/admin", "/aDmIn"));
        assert!(!legacy_prefix_matches("/admin", "/ADMINISTRATOR"));
    }

    #[test]
    fn ports_and_brackets_are_stripped() {
        assert_eq!(strip_port("api.example.com:8080"), "api.example.com");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("api.example.com.:8080"), "api.example.com");
    }
}
