//! Upstream pools: round-robin over a pool's targets, active health checks,
//! passive ejection of targets that refuse connections, and the names
//! re-resolved through `discovery`. Which route uses which pool is the
//! router's business; finding addresses for names is `discovery`'s.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pingora_core::upstreams::peer::{HttpPeer, PeerOptions};
use pingora_core::utils::tls::CertKey;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use super::discovery::{DnsDiscovery, Resolve};
use super::upstream_auth::UpstreamAuth;
use crate::metrics::METRICS;

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
    /// The certificate presented to targets that ask for one (mTLS). It is
    /// part of the engine's connection-reuse key (by serial), so after a
    /// reload swaps it, connections made with the old one are not reused.
    pub client_cert: Option<Arc<CertKey>>,
    /// The backend's own credentials, in place of the client's
    /// `Authorization`; read again by every reload, like the keys.
    pub upstream_auth: Option<UpstreamAuth>,
    /// Targets left out after a failed connection, and since when.
    ejected: Mutex<Vec<(Backend, Instant)>>,
    last_check: Mutex<Option<Instant>>,
    /// Where the targets come from; names are resolved again every
    /// `resolve_interval` (see `discovery`).
    discovery: DnsDiscovery,
    resolve_interval: Duration,
    last_resolve: Mutex<Option<Instant>>,
    /// What every peer of this pool shares (see [`Self::peer`]).
    peer_template: OnceLock<HttpPeer>,
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
            client_cert: None,
            upstream_auth: None,
            ejected: Mutex::default(),
            last_check: Mutex::default(),
            discovery,
            resolve_interval,
            last_resolve: Mutex::default(),
            peer_template: OnceLock::new(),
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

    /// The peer for a target, with this pool's timeouts and TLS: a copy
    /// of the pool's template with the target's address, rather than the
    /// engine's default options built and then replaced on every request.
    pub fn peer(&self, backend: &Backend) -> HttpPeer {
        let mut peer = self.peer_template.get_or_init(|| self.new_peer()).clone();
        peer._address = backend.addr.clone();
        peer
    }

    /// The pool's peer, its address a placeholder. Made on first use, when
    /// the pool is complete (`tls_sni` and `client_cert` are set while it
    /// is compiled, before it is shared).
    fn new_peer(&self) -> HttpPeer {
        let (tls, sni) = match &self.tls_sni {
            Some(sni) => (true, sni.clone()),
            None => (false, String::new()),
        };
        let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let mut peer = HttpPeer::new(unspecified, tls, sni);
        peer.options = self.options.clone();
        peer.client_cert_key.clone_from(&self.client_cert);
        peer
    }

    /// A healthy, not ejected target, round robin.
    pub fn select(&self) -> Option<Backend> {
        // One target (the usual legacy backend): no rotation to make, and
        // the engine's selection sets up a duplicate filter per request.
        let targets = self.balancer.backends().get_backend();
        if let (1, Some(only)) = (targets.len(), targets.first()) {
            return self.balancer.backends().ready(only).then(|| only.clone());
        }
        self.balancer.select(b"", 256)
    }

    /// Leaves `backend` out for the ejection period (passive health).
    pub fn eject(&self, backend: &Backend) {
        self.balancer.backends().set_enable(backend, false);
        if let Ok(mut ejected) = self.ejected.lock() {
            ejected.retain(|(b, _)| b != backend);
            ejected.push((backend.clone(), Instant::now()));
        }
        tracing::warn!(target: "portcullis::proxy::router", upstream = %self.name, target = %backend.addr, "target refused a connection; ejected");
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

/// Sets `portcullis_upstream_target_healthy` for every target of `pools`
/// (a name without an address yet is a target at 0, as `host:port`) and
/// drops the series of addresses a pool no longer has (a name that moved):
/// an alert on an unhealthy target must not fire forever for an address
/// that is gone.
pub fn export_target_health(pools: &[Arc<UpstreamPool>]) {
    use prometheus::core::Collector;
    let gauge = &METRICS.upstream_target_healthy;
    for pool in pools {
        let mut current = pool.health();
        current.extend(pool.unresolved().into_iter().map(|name| (name, false)));
        for (target, healthy) in &current {
            gauge
                .with_label_values(&[pool.name.as_str(), target.as_str()])
                .set(i64::from(*healthy));
        }
        let exported: Vec<String> = gauge
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter_map(|metric| {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                };
                (label("upstream")? == pool.name).then(|| label("target"))?
            })
            .collect();
        for gone in exported
            .iter()
            .filter(|t| !current.iter().any(|(c, _)| c == *t))
        {
            let _ = gauge.remove_label_values(&[pool.name.as_str(), gone.as_str()]);
        }
    }
}
