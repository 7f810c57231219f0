//! Route selection. A request whose host has routes of its own is matched
//! against those only; any other host against the routes without a host.
//! There is no fallback from a host's table to the generic one: a host's
//! own rules are never overridden, nor completed, by a generic route.
//! Within a table the longest prefix that matches on a segment boundary
//! wins, so `/admin` matches `/admin` and `/admin/x` but not
//! `/administrator`.
//!
//! Several routes may share a host and prefix when their `methods` are
//! disjoint (checked when the configuration loads): the path is chosen
//! first, then the method among that path's routes, with no fallback to a
//! shorter prefix. A method none of them serves is `405` (see
//! [`Routed::WrongMethod`]), as nginx's `limit_except` refuses inside the
//! `location` the path chose.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::Method;

use super::cors::CorsPolicy;
use super::methods::RouteMethods;
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
    /// `methods`: `None` serves every method.
    pub methods: Option<RouteMethods>,
}

/// What the table says to a request.
pub enum Routed<'a> {
    Route(&'a Arc<Route>),
    /// The path has routes, none of which serves the method: `allow` is
    /// the `Allow` header of the `405`.
    WrongMethod {
        allow: &'a str,
        /// The path's first route, whose CORS policy is the path's.
        path: &'a Arc<Route>,
    },
    NotFound,
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
    pub fn new(mut routes: Vec<Route>) -> Self {
        set_allow(&mut routes);
        let mut router = Router::default();
        for route in routes {
            let route = Arc::new(route);
            match &route.host {
                Some(host) => router.by_host.entry(host.clone()).or_default().push(route),
                None => router.any_host.push(route),
            }
        }
        // Longest first; a prefix's routes next to each other (in the
        // file's order), so `route` finds them all after the first.
        for routes in router.by_host.values_mut().chain([&mut router.any_host]) {
            routes.sort_by(|a, b| (b.prefix.len(), &a.prefix).cmp(&(a.prefix.len(), &b.prefix)));
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

    /// The first route of a normalised path, whatever the method (its
    /// routes share one CORS policy: a preflight is answered by it); `host`
    /// may carry a port and any case.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.table(host).iter().find(|route| route.matches(path))
    }

    /// The route for a normalised path and a method. A route without
    /// `methods` is the only one of its path: it is taken at once.
    pub fn route(&self, host: Option<&str>, path: &str, method: &Method) -> Routed<'_> {
        let table = self.table(host);
        let Some(at) = table.iter().position(|route| route.matches(path)) else {
            return Routed::NotFound;
        };
        let first = &table[at];
        let Some(methods) = &first.methods else {
            return Routed::Route(first);
        };
        (table[at..].iter())
            .take_while(|route| route.prefix == first.prefix)
            .find(|route| route.methods.as_ref().is_some_and(|m| m.allows(method)))
            .map_or(
                Routed::WrongMethod {
                    allow: methods.allow(),
                    path: first,
                },
                Routed::Route,
            )
    }

    fn table(&self, host: Option<&str>) -> &[Arc<Route>] {
        // Without host-bound routes there is nothing to look up: the host
        // is not folded into a new string on every request.
        if self.by_host.is_empty() {
            return &self.any_host;
        }
        host.map(strip_port)
            .and_then(|h| self.by_host.get(h.to_ascii_lowercase().as_str()))
            .unwrap_or(&self.any_host)
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_host.values().flatten().chain(self.any_host.iter())
    }
}

/// Gives each route with `methods` the `Allow` of its host and path: every
/// method its routes serve, in the file's order.
fn set_allow(routes: &mut [Route]) {
    let mut by_path: HashMap<(Option<String>, String), Vec<Method>> = HashMap::new();
    for route in routes.iter() {
        let served = by_path
            .entry((route.host.clone(), route.prefix.clone()))
            .or_default();
        for method in route.methods.iter().flat_map(RouteMethods::list) {
            if !served.contains(method) {
                served.push(method.clone());
            }
        }
    }
    for route in routes.iter_mut() {
        let key = (route.host.clone(), route.prefix.clone());
        let (Some(methods), Some(served)) = (&mut route.methods, by_path.get(&key)) else {
            continue;
        };
        let names: Vec<&str> = served.iter().map(Method::as_str).collect();
        methods.set_allow(Arc::from(names.join(", ")));
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
