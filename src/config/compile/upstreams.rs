//! `[[upstreams]]` → one [`UpstreamPool`] per name: its targets, peer
//! timeouts, TLS to the targets and health check. Each entry is checked
//! first (every diagnostic comes from there), then its pool is built from
//! the checked values.
//!
//! Targets are parsed, not resolved: names are resolved when the gateway
//! starts, and by `check --resolve`. Building a pool dials nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::upstreams::peer::PeerOptions;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use pingora_load_balancing::health_check::HttpHealthCheck;
use toml::Spanned;

use crate::config::raw::{RawHealthCheck, RawUpstream};
use crate::config::runtime::discovery::{DnsDiscovery, Target};
use crate::config::runtime::upstream::UpstreamPool;
use crate::config::runtime::upstream_auth::UpstreamAuth;
use crate::config::runtime::TlsFiles;
use crate::config::Diagnostics;

/// The pools by upstream name, for the routes and `[login]` that name them.
pub(super) type Pools = HashMap<String, Arc<UpstreamPool>>;

/// Every upstream with a unique name becomes a pool, even one with errors
/// (the load fails on those anyway), so its routes never get follow-on
/// "unknown upstream" errors.
pub(super) fn upstream_pools(raw: &[RawUpstream], base: &Path, sink: &mut Diagnostics) -> Pools {
    let mut pools = Pools::new();
    for upstream in raw {
        let name = upstream.name.get_ref();
        if pools.contains_key(name) {
            sink.at(
                upstream.name.span(),
                format!("upstream {name:?} is defined twice"),
            );
            continue;
        }
        let checked = check_upstream(upstream, base, sink);
        pools.insert(name.clone(), Arc::new(upstream_pool(upstream, checked)));
    }
    pools
}

/// The pool `name` refers to; an unknown name is an error at its position.
pub(super) fn named_pool(
    name: &Spanned<String>,
    pools: &Pools,
    sink: &mut Diagnostics,
) -> Option<Arc<UpstreamPool>> {
    let pool = pools.get(name.get_ref()).cloned();
    if pool.is_none() {
        sink.at(
            name.span(),
            format!("unknown upstream {:?}", name.get_ref()),
        );
    }
    pool
}

/// One `[[upstreams]]` entry, checked, in the types its pool is built from.
struct CheckedUpstream {
    /// The targets that parsed; the others are reported.
    targets: Vec<Target>,
    options: PeerOptions,
    /// The SNI to send, when the targets speak TLS.
    tls_sni: Option<String>,
    /// The client certificate to present, when the targets ask for one.
    client_cert: Option<Arc<CertKey>>,
    /// The health check, and how often it runs.
    health_check: Option<(HttpHealthCheck, Duration)>,
    /// The backend's own credentials.
    upstream_auth: Option<UpstreamAuth>,
}

fn check_upstream(upstream: &RawUpstream, base: &Path, sink: &mut Diagnostics) -> CheckedUpstream {
    let name = upstream.name.get_ref();
    if upstream.targets.is_empty() {
        sink.at(
            upstream.name.span(),
            format!("upstream {name:?} has no targets"),
        );
    }
    if upstream.resolve_interval.get_ref().0.is_zero() {
        sink.at(
            upstream.resolve_interval.span(),
            "resolve_interval must be positive",
        );
    }
    let targets = (upstream.targets.iter())
        .filter_map(|target| parsed_target(target, sink))
        .collect();
    let mut options = peer_options(upstream);
    let tls_sni = upstream_tls(upstream, &mut options, base, sink);
    let client_cert = client_cert(upstream, base, sink);
    let upstream_auth = (upstream.upstream_auth.as_ref())
        .and_then(|auth| super::upstream_auth::upstream_auth(auth, base, sink));
    // Checks speak to the targets as requests do: TLS, SNI, CAs, client
    // certificate, and a fixed `upstream_auth` (a backend that wants Basic
    // auth on every path would fail every check without it).
    let health_check = upstream.health_check.as_ref().and_then(|check| {
        let mut built = health_check(check, tls_sni.as_deref(), &options, sink)?;
        built.peer_template.client_cert_key.clone_from(&client_cert);
        if let Some(value) = upstream_auth.as_ref().and_then(|a| a.authorization(None)) {
            let _ = built.req.insert_header(http::header::AUTHORIZATION, value);
        }
        Some((built, check.interval.0))
    });
    CheckedUpstream {
        targets,
        options,
        tls_sni,
        client_cert,
        health_check,
        upstream_auth,
    }
}

/// The pool of a checked entry. A pool whose targets are all addresses
/// knows them at once; one with names waits for the gateway's first
/// resolve.
fn upstream_pool(upstream: &RawUpstream, checked: CheckedUpstream) -> UpstreamPool {
    let name = upstream.name.get_ref();
    let mut pool = UpstreamPool::new(
        name.clone(),
        DnsDiscovery::new(name, checked.targets),
        checked.options,
        upstream.ejection.0,
        upstream.resolve_interval.get_ref().0,
    );
    if let Some((check, interval)) = checked.health_check {
        pool.balancer.set_health_check(Box::new(check));
        pool.check_interval = Some(interval);
    }
    pool.tls_sni = checked.tls_sni;
    pool.client_cert = checked.client_cert;
    pool.upstream_auth = checked.upstream_auth;
    pool
}

/// One `host:port` target, checked for its form; with `check --resolve`
/// also resolved, and reported when it does not.
fn parsed_target(target: &Spanned<String>, sink: &mut Diagnostics) -> Option<Target> {
    let parsed = Target::parse(target.get_ref())
        .map_err(|message| sink.at(target.span(), message))
        .ok()?;
    if let (Target::Name { host, port }, true) = (&parsed, sink.resolve) {
        if let Some(reason) = resolve_failure(host, *port) {
            sink.at(
                target.span(),
                format!("{:?} does not resolve: {reason}", target.get_ref()),
            );
        }
    }
    Some(parsed)
}

/// Why `host` has no address, if it has none (`check --resolve` only).
fn resolve_failure(host: &str, port: u16) -> Option<String> {
    let found = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map(|mut addrs| addrs.next().is_some());
    match found {
        Ok(true) => None,
        Ok(false) => Some("no addresses".to_owned()),
        Err(e) => Some(e.to_string()),
    }
}

/// An HTTP check: `GET path` on each target, healthy on any 2xx.
fn health_check(
    raw: &RawHealthCheck,
    tls_sni: Option<&str>,
    options: &PeerOptions,
    sink: &mut Diagnostics,
) -> Option<HttpHealthCheck> {
    let path = raw.path.get_ref();
    if !path.starts_with('/') {
        sink.at(raw.path.span(), "health_check.path must start with '/'");
        return None;
    }
    let host = tls_sni.unwrap_or("localhost");
    let mut check = HttpHealthCheck::new(host, tls_sni.is_some());
    check.peer_template.options.ca = options.ca.clone();
    let request = pingora_http::RequestHeader::build("GET", path.as_bytes(), None)
        .and_then(|mut r| r.insert_header("Host", host).map(|_| r));
    match request {
        Ok(request) => check.req = request,
        Err(_) => {
            sink.at(
                raw.path.span(),
                format!("{path:?} is not a valid request path"),
            );
            return None;
        }
    }
    check.consecutive_success = raw.healthy_threshold.max(1);
    check.consecutive_failure = raw.unhealthy_threshold.max(1);
    check.peer_template.options.connection_timeout = Some(raw.timeout.0);
    check.peer_template.options.read_timeout = Some(raw.timeout.0);
    Some(check)
}

/// TLS to the targets: the SNI to send (`sni`, else the first target's
/// host), and the CAs to trust when given.
fn upstream_tls(
    upstream: &RawUpstream,
    options: &mut PeerOptions,
    base: &Path,
    sink: &mut Diagnostics,
) -> Option<String> {
    if !upstream.tls {
        if upstream.sni.is_some() || upstream.ca_file.is_some() {
            sink.at(upstream.name.span(), "sni and ca_file need tls = true");
        }
        return None;
    }
    if let Some(file) = &upstream.ca_file {
        options.ca = trusted_cas(file, base, sink);
    }
    let first_host = upstream.targets.first().map(|target| {
        let target = target.get_ref();
        target
            .rsplit_once(':')
            .map_or(target.as_str(), |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_owned()
    });
    upstream.sni.clone().or(first_host)
}

/// The client certificate and key from `client_cert` / `client_key`: both
/// or neither, only over TLS, and the key must be the certificate's (a
/// wrong one would fail every handshake, reported here at the key).
fn client_cert(
    upstream: &RawUpstream,
    base: &Path,
    sink: &mut Diagnostics,
) -> Option<Arc<CertKey>> {
    let (cert, key) = match (&upstream.client_cert, &upstream.client_key) {
        (None, None) => return None,
        (Some(cert), None) => {
            sink.at(cert.span(), "client_cert needs client_key");
            return None;
        }
        (None, Some(key)) => {
            sink.at(key.span(), "client_key needs client_cert");
            return None;
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    if !upstream.tls {
        sink.at(cert.span(), "client_cert and client_key need tls = true");
        return None;
    }
    let files = TlsFiles {
        cert: base.join(cert.get_ref()),
        key: base.join(key.get_ref()),
    };
    if sink.skips_file(&files.cert) || sink.skips_file(&files.key) {
        return None;
    }
    crate::config::runtime::tls::client_cert_key(&files)
        .map_err(|problem| sink.at(key.span(), problem))
        .ok()
}

/// The certificates in `ca_file`; a file that cannot be read or holds none
/// is one error, since either way there is nothing to trust.
fn trusted_cas(
    file: &Spanned<std::path::PathBuf>,
    base: &Path,
    sink: &mut Diagnostics,
) -> Option<Arc<[WrappedX509]>> {
    let full = base.join(file.get_ref());
    if sink.skips_file(&full) {
        return None;
    }
    let ders: Vec<Vec<u8>> = std::fs::read(&full)
        .ok()
        .and_then(|bytes| pem::parse_many(bytes).ok())
        .map(|blocks| {
            blocks
                .into_iter()
                .filter(|b| b.tag() == "CERTIFICATE")
                .map(pem::Pem::into_contents)
                .collect()
        })
        .unwrap_or_default();
    if ders.is_empty() {
        sink.at(
            file.span(),
            format!("{}: no PEM certificate to trust", full.display()),
        );
        return None;
    }
    let cas: Vec<WrappedX509> = ders
        .into_iter()
        .map(|der| WrappedX509::new(der, parse_x509))
        .collect();
    Some(Arc::from(cas.into_boxed_slice()))
}

fn peer_options(upstream: &RawUpstream) -> PeerOptions {
    let mut options = PeerOptions::new();
    options.connection_timeout = Some(upstream.connect_timeout.0);
    options.read_timeout = Some(upstream.read_timeout.0);
    options.write_timeout = Some(upstream.write_timeout.0);
    options.idle_timeout = Some(upstream.idle_timeout.0);
    options
}
