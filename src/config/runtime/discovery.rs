//! Upstream targets that follow DNS: each `host:port` target is resolved
//! again every `resolve_interval` through pingora's service discovery, so a
//! backend that moves (a container restarted with a new address, a
//! Kubernetes headless service scaled) gets traffic at its new address
//! without a reload. Not responsible for choosing a target (the pool's
//! round robin) nor for health (the pool's checks and ejection).
//!
//! Loading a configuration never resolves a name: `check` must pass in CI
//! where `backend:8081` means nothing. The gateway resolves when it starts
//! and on reload, then keeps re-resolving in the background.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::{Backend, Extensions};

/// The log target operators know these lines by (the module's path
/// before it moved under `config::runtime`).
const TARGET: &str = "portcullis::proxy::discovery";

/// Longest wait for one name; a resolver that hangs must not hold up the
/// other pools or the start.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns a host name into addresses. The gateway uses [`SystemResolver`];
/// the trait is the seam where an embedder (or a test) puts another.
#[async_trait]
pub trait Resolve: Send + Sync {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS
/// as `nsswitch.conf` says), run off the async workers.
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A configured target: an address, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

impl Target {
    /// Parses `host:port` or `[v6]:port` without resolving anything.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Addr(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("{text:?} is not host:port"));
        };
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("{text:?}: {port:?} is not a port (1-65535)")),
        };
        if host.contains(':') || host.starts_with('[') {
            return Err(format!("{text:?}: an IPv6 address is written [addr]:port"));
        }
        if !is_host_name(host) {
            return Err(format!("{text:?}: {host:?} is not a host name"));
        }
        Ok(Self::Name {
            host: host.to_owned(),
            port,
        })
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1 to 63
/// characters (RFC 1123 §2.1; `_` for names like Kubernetes' SRV-style
/// ones), with an optional final dot.
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The discovery of one upstream: its targets, resolved on each call.
///
/// A name that fails to resolve keeps the addresses it last resolved to (a
/// resolver hiccup must not empty a pool; a target that is really gone is
/// left out by passive ejection and health checks). A name that never
/// resolved contributes nothing until it does.
#[derive(Clone)]
pub struct DnsDiscovery(Arc<Inner>);

struct Inner {
    upstream: String,
    targets: Vec<Target>,
    resolver: RwLock<Arc<dyn Resolve>>,
    /// Per name target (by index): the last addresses it resolved to, and
    /// whether its last attempt failed (to log changes, not every retry).
    last: Mutex<HashMap<usize, (Vec<SocketAddr>, bool)>>,
}

impl DnsDiscovery {
    pub fn new(upstream: &str, targets: Vec<Target>) -> Self {
        Self(Arc::new(Inner {
            upstream: upstream.to_owned(),
            targets,
            resolver: RwLock::new(Arc::new(SystemResolver)),
            last: Mutex::default(),
        }))
    }

    /// Starts from the addresses `previous` last knew for the same names
    /// (on reload), so a name that fails to resolve at the swap keeps them.
    pub fn inherit(&self, previous: &DnsDiscovery) {
        let (Ok(theirs), Ok(mut ours)) = (previous.0.last.lock(), self.0.last.lock()) else {
            return;
        };
        for (index, target) in self.0.targets.iter().enumerate() {
            let known = previous
                .0
                .targets
                .iter()
                .position(|t| t == target)
                .and_then(|i| theirs.get(&i));
            if let (Target::Name { .. }, Some((addresses, _))) = (target, known) {
                ours.insert(index, (addresses.clone(), false));
            }
        }
    }

    /// Whether any target is a name (otherwise there is nothing to follow).
    pub fn has_names(&self) -> bool {
        self.0
            .targets
            .iter()
            .any(|t| matches!(t, Target::Name { .. }))
    }

    /// The name targets (`host:port`) that have no address: never
    /// resolved, or not yet tried.
    pub fn unresolved(&self) -> Vec<String> {
        let Ok(last) = self.0.last.lock() else {
            return Vec::new();
        };
        let empty = |index: &usize| last.get(index).is_none_or(|(addrs, _)| addrs.is_empty());
        self.0
            .targets
            .iter()
            .enumerate()
            .filter_map(|(index, target)| match target {
                Target::Name { host, port } if empty(&index) => Some(format!("{host}:{port}")),
                _ => None,
            })
            .collect()
    }

    /// Resolves with `resolver` from now on.
    pub fn set_resolver(&self, resolver: Arc<dyn Resolve>) {
        if let Ok(mut current) = self.0.resolver.write() {
            *current = resolver;
        }
    }

    pub fn resolver(&self) -> Arc<dyn Resolve> {
        match self.0.resolver.read() {
            Ok(resolver) => Arc::clone(&resolver),
            Err(_) => Arc::new(SystemResolver),
        }
    }

    /// The addresses of name target `index` now: fresh ones, or the last
    /// known after a failure (logged when the name's state changes).
    async fn addresses(&self, index: usize, host: &str, port: u16) -> Vec<SocketAddr> {
        let resolver = self.resolver();
        let outcome = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(host, port))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
        let Ok(mut last) = self.0.last.lock() else {
            return Vec::new();
        };
        let entry = last.entry(index).or_insert((Vec::new(), false));
        let upstream = &self.0.upstream;
        match outcome {
            Ok(mut fresh) if !fresh.is_empty() => {
                fresh.sort_unstable();
                fresh.dedup();
                if entry.1 || entry.0 != fresh {
                    tracing::info!(target: TARGET, upstream, target = %format!("{host}:{port}"), addresses = ?fresh, "upstream target resolved");
                }
                *entry = (fresh, false);
            }
            failed => {
                if !entry.1 {
                    let reason = failed
                        .err()
                        .map_or("no addresses".to_owned(), |e| e.to_string());
                    tracing::warn!(target: TARGET, upstream, target = %format!("{host}:{port}"), reason, kept = ?entry.0, "upstream target does not resolve; retrying");
                }
                entry.1 = true;
            }
        }
        entry.0.clone()
    }
}

fn backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: PeerAddr::Inet(addr),
        weight: 1,
        ext: Extensions::new(),
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora_core::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        for (index, target) in self.0.targets.iter().enumerate() {
            match target {
                Target::Addr(addr) => {
                    backends.insert(backend(*addr));
                }
                Target::Name { host, port } => {
                    let addresses = self.addresses(index, host, *port).await;
                    backends.extend(addresses.into_iter().map(backend));
                }
            }
        }
        Ok((backends, HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_without_resolving() {
        let name = |host: &str, port| Target::Name {
            host: host.to_owned(),
            port,
        };
        assert_eq!(Target::parse("backend:8081"), Ok(name("backend", 8081)));
        assert_eq!(
            Target::parse("legacy.default.svc.cluster.local.:80"),
            Ok(name("legacy.default.svc.cluster.local.", 80))
        );
        assert!(matches!(Target::parse("[::1]:80"), Ok(Target::Addr(_))));
        assert!(matches!(Target::parse("127.0.0.1:80"), Ok(Target::Addr(_))));
        for bad in [
            "backend",
            "backend:0",
            "backend:http",
            "::1:80",
            "-x:80",
            "a..b:80",
            ":80",
            "ba ck:80",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
