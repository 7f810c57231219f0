//! Route selection: host routes first, then routes for any host; within
//! each, the longest prefix that matches on a segment boundary wins, so
//! `/admin` matches `/admin` and `/admin/x` but not `/administrator`.
//!
//! A host route always beats a route without a host, whatever the prefix
//! lengths: a host's own rules are never overridden by a generic one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_core::upstreams::peer::PeerOptions;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use super::discovery::{DnsDiscovery, Resolve};

use crate::auth::Requirement;
use crate::config::raw::{AuthMode, PathMatch};

/// A pool of upstream targets with round-robin selection, active health
/// checks (when configured) and passive ejection of targets that refuse
/// connections.
pub struct UpstreamPool {
    pub name: String,
    pub balancer: LoadBalancer<RoundRobin>,
    pub options: PeerOptions,
    /// How often the active health check runs; `None` without one.
    pub check_interval: Option<Duration>,
    pub ejection: Duration,
    /// `Some(sni)` when the targets speak TLS.
    pub tls_sni: Option<String>,
    /// Targets left out after a failed connection, and since when.
    ejected: Mutex<Vec<(Backend, Instant)>>,
    last_check: Mutex<Option<Instant>>,
    /// Where the targets come from; names are resolved again every
    /// `resolve_interval` (see `discovery`).
    discovery: DnsDiscovery,
    resolve_interval: Duration,
    last_resolve: Mutex<Option<Instant>>,
}

impl UpstreamPool {
    /// A pool over `discovery`'s targets. Addresses are known at once;
    /// names stay unresolved until [`Self::resolve`] (loading a
    /// configuration never touches DNS).
    pub fn new(
        name: String,
        discovery: DnsDiscovery,
        options: PeerOptions,
        ejection: Duration,
        resolve_interval: Duration,
    ) -> Self {
        let balancer = LoadBalancer::from_backends(Backends::new(Box::new(discovery.clone())));
        if !discovery.has_names() {
            // Addresses only: discovery is ready on the first poll.
            let mut update = std::pin::pin!(balancer.update());
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = update.as_mut().poll(&mut context);
        }
        Self {
            name,
            balancer,
            options,
            check_interval: None,
            ejection,
            tls_sni: None,
            ejected: Mutex::default(),
            last_check: Mutex::default(),
            discovery,
            resolve_interval,
            last_resolve: Mutex::default(),
        }
    }

    /// Whether some targets are names that the pool re-resolves.
    pub fn follows_dns(&self) -> bool {
        self.discovery.has_names()
    }

    /// Resolves the pool's names with `resolver` from now on (an embedder's
    /// own resolver, or a test's).
    pub fn set_resolver(&self, resolver: Arc<dyn Resolve>) {
        self.discovery.set_resolver(resolver);
    }

    /// On reload: the addresses `previous` (the same upstream in the
    /// running configuration) last resolved its names to.
    pub fn inherit_addresses(&self, previous: &UpstreamPool) {
        self.discovery.inherit(&previous.discovery);
    }

    /// The resolver the pool's names go through.
    pub fn resolver(&self) -> Arc<dyn Resolve> {
        self.discovery.resolver()
    }

    /// Resolves the targets now and swaps in the new set: new addresses get
    /// requests from the next selection on; addresses that are gone get no
    /// new ones, and requests already sent to them finish.
    pub async fn resolve(&self) {
        if !self.follows_dns() {
            return;
        }
        if let Ok(mut last) = self.last_resolve.lock() {
            *last = Some(Instant::now());
        }
        // The discovery never fails: a name that does not resolve keeps
        // its last addresses (see `discovery`).
        let _ = self.balancer.update().await;
    }

    /// [`Self::resolve`] when `resolve_interval` has passed since the last.
    pub async fn follow_dns(&self) {
        let due = self.follows_dns()
            && self
                .last_resolve
                .lock()
                .is_ok_and(|last| last.is_none_or(|t| t.elapsed() >= self.resolve_interval));
        if due {
            self.resolve().await;
        }
    }

    /// The peer for a target, with this pool's timeouts and TLS.
    pub fn peer(&self, backend: &Backend) -> pingora_core::upstreams::peer::HttpPeer {
        let (tls, sni) = match &self.tls_sni {
            Some(sni) => (true, sni.clone()),
            None => (false, String::new()),
        };
        let mut peer = pingora_core::upstreams::peer::HttpPeer::new(backend, tls, sni);
        peer.options = self.options.clone();
        peer
    }

    /// A healthy, not ejected target, round robin.
    pub fn select(&self) -> Option<Backend> {
        self.balancer.select(b"", 256)
    }

    /// Leaves `backend` out for the ejection period (passive health).
    pub fn eject(&self, backend: &Backend) {
        self.balancer.backends().set_enable(backend, false);
        if let Ok(mut ejected) = self.ejected.lock() {
            ejected.retain(|(b, _)| b != backend);
            ejected.push((backend.clone(), Instant::now()));
        }
        tracing::warn!(upstream = %self.name, target = %backend.addr, "target refused a connection; ejected");
    }

    /// Brings back ejected targets whose period is over and runs the
    /// active health check when it is due. Called about once a second.
    pub async fn maintain(&self) {
        let now = Instant::now();
        if let Ok(mut ejected) = self.ejected.lock() {
            ejected.retain(|(backend, since)| {
                let over = now.duration_since(*since) >= self.ejection;
                if over {
                    self.balancer.backends().set_enable(backend, true);
                }
                !over
            });
        }
        let Some(interval) = self.check_interval else {
            return;
        };
        let due = self
            .last_check
            .lock()
            .map(|mut last| {
                let due = last.is_none_or(|t| now.duration_since(t) >= interval);
                if due {
                    *last = Some(now);
                }
                due
            })
            .unwrap_or(false);
        if due {
            self.balancer.backends().run_health_check(true).await;
        }
    }

    /// Target names that have no address yet.
    pub fn unresolved(&self) -> Vec<String> {
        self.discovery.unresolved()
    }

    /// The targets, each with whether it may receive traffic now.
    pub fn health(&self) -> Vec<(String, bool)> {
        let backends = self.balancer.backends();
        backends
            .get_backend()
            .iter()
            .map(|b| (b.addr.to_string(), backends.ready(b)))
            .collect()
    }
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
    pub paths: PathMatch,
}

impl Route {
    /// Whether this route serves `path` (normalised, parameters cut).
    pub fn matches(&self, path: &str) -> bool {
        match self.paths {
            PathMatch::Standard => prefix_matches(&self.prefix, path),
            PathMatch::Legacy => legacy_prefix_matches(&self.prefix, path),
        }
    }

    /// Whether the backend could read `path` as another one: on a legacy
    /// route, a segment (or `;` piece) ending in `.` or a space.
    pub fn is_ambiguous(&self, path: &str) -> bool {
        self.paths == PathMatch::Legacy
            && path
                .split(['/', ';'])
                .any(|piece| piece.ends_with('.') || piece.ends_with("%20"))
    }
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
