//! The compiled configuration: everything the request path reads, and the
//! types it is made of (routes and upstream pools, header rules, trusted
//! proxies, CORS policies, path normalisation, the listeners' certificate).
//!
//! These types sit below `proxy` and `admin`, which read them, and above
//! `auth`, `session` and `store`, whose plain types they hold.

pub mod cors;
pub mod discovery;
pub mod headers;
pub mod methods;
pub mod path;
pub mod rate_limit;
pub mod router;
pub mod tls;
pub mod trusted;
pub mod upstream;
pub mod upstream_auth;

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{IdentityHeaders, SigningKey, Verifier};
use crate::config::raw::AuthMode;
use crate::session::Sessions;
use crate::store::{RedisOptions, StoreLocation, ViewSettings};
use headers::HeaderRules;
use http::HeaderName;
use router::Router;
use upstream::UpstreamPool;

/// Listener, process and store settings; changing them needs a restart.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<String>,
    pub admin_listen: String,
    /// The admin token, read at load; `None` disables `/admin/*`.
    pub admin_token: Option<AdminToken>,
    pub store: StoreSettings,
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub shutdown_timeout: Duration,
    pub upstream_keepalive_pool: usize,
    /// Certificate and key files: every listener speaks TLS (and HTTP/2).
    pub tls: Option<TlsFiles>,
    /// Peers whose forwarding headers name the client.
    pub trusted_proxies: trusted::TrustedProxies,
    /// Every listener expects a PROXY protocol header first.
    pub proxy_protocol: bool,
    /// The whole request header must arrive within this.
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections close after this (whole seconds).
    pub keepalive_timeout: Duration,
    /// The share of successful requests that get an access log line.
    pub access_log_sample: f64,
    /// The engine's work-stealing runtime for the proxy.
    pub work_stealing: bool,
    /// Request headers named with `_` (see `proxy::header_names`).
    pub headers_with_underscores: crate::config::raw::HeadersWithUnderscores,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub location: StoreLocation,
    pub view: ViewSettings,
    pub change_log_entries: u64,
    /// Key names and durable-write confirmation on Redis.
    pub redis: RedisOptions,
    /// Rate-limit keys this instance keeps in memory.
    pub rate_limit_entries: u64,
}

/// The bearer token of the admin API. Not `Debug`-printable by accident.
#[derive(Clone)]
pub struct AdminToken(pub Vec<u8>);

impl AdminToken {
    /// Shortest admin token accepted at load: 256 bits if random.
    pub const MIN_BYTES: usize = 32;

    /// Whether `presented` is the admin token, in constant time. The SHA-256
    /// digests are compared, not the tokens: comparing bytes of differing
    /// lengths ends early and would tell a prober the token's length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use aws_lc_rs::constant_time::verify_slices_are_equal;
        use aws_lc_rs::digest::{digest, SHA256};
        let expected = digest(&SHA256, &self.0);
        verify_slices_are_equal(digest(&SHA256, presented).as_ref(), expected.as_ref()).is_ok()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

pub struct Runtime {
    pub server: ServerSettings,
    pub realm: String,
    pub max_token_bytes: usize,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub leeway: Duration,
    /// `[tokens] max_token_lifetime`: the longest lifetime a token may claim.
    pub max_token_lifetime: Duration,
    /// Successful responses carry `X-Token-Expires-In` when fewer seconds remain.
    pub refresh_hint_secs: u64,
    pub verifier: Verifier,
    pub signer: Option<SigningKey>,
    pub identity: Arc<IdentityHeaders>,
    pub header_rules: HeaderRules,
    pub router: Router,
    pub sessions: Sessions,
    /// `[login]`: where `POST /auth/login` is delegated.
    pub login: Option<LoginSettings>,
    /// `[cors]` and each route's `cors`.
    pub cors: cors::CorsTable,
    /// `[tracing]`: read at start; a change takes effect on restart.
    pub tracing: crate::telemetry::TraceSettings,
    /// `[audit]`: read at start; a reload reopens its file.
    pub audit: crate::audit::AuditSettings,
}

/// `[login]`, compiled.
pub struct LoginSettings {
    pub upstream: Arc<UpstreamPool>,
    pub path: String,
    pub subject_header: HeaderName,
    pub roles_header: HeaderName,
    pub claims_header: HeaderName,
    pub timeout: Duration,
    /// `throttle…`: failed logins slow down; `None` when turned off.
    pub throttle: Option<crate::session::login_throttle::ThrottleSettings>,
}

impl Runtime {
    /// Resolves every pool once, before this configuration serves: at
    /// start and on reload. Names that fail are retried by the server's DNS
    /// loop (`server::follow_dns`).
    pub async fn resolve_upstreams(&self) {
        for pool in self.pools() {
            pool.resolve().await;
        }
    }

    /// On reload, from the reload's own thread (outside any async
    /// runtime): this configuration takes the resolver `current` uses and
    /// the addresses it already knows, then resolves its names.
    pub fn resolve_upstreams_after(&self, current: &Runtime) {
        let pools = self.pools();
        if !pools.iter().any(|pool| pool.follows_dns()) {
            return;
        }
        if let Some(resolver) = current.pools().first().map(|pool| pool.resolver()) {
            for pool in &pools {
                pool.set_resolver(Arc::clone(&resolver));
            }
        }
        let before = current.pools();
        for pool in &pools {
            if let Some(previous) = before.iter().find(|p| p.name == pool.name) {
                pool.inherit_addresses(previous);
            }
        }
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(resolving) => resolving.block_on(self.resolve_upstreams()),
            Err(e) => {
                tracing::warn!(target: "portcullis::proxy::discovery", "cannot resolve upstream names now ({e}); retrying in the background")
            }
        }
    }

    /// Every upstream pool in use: by routes and by `[login]`, each once.
    pub fn pools(&self) -> Vec<Arc<UpstreamPool>> {
        let mut pools: Vec<Arc<UpstreamPool>> = Vec::new();
        let used = self
            .router
            .routes()
            .map(|r| &r.upstream)
            .chain(self.login.as_ref().map(|l| &l.upstream));
        for pool in used {
            if !pools.iter().any(|p| Arc::ptr_eq(p, pool)) {
                pools.push(Arc::clone(pool));
            }
        }
        pools
    }

    /// A table of the routes for `portcullis check`.
    pub fn route_table(&self) -> String {
        let mut routes: Vec<_> = self.router.routes().collect();
        routes.sort_by(|a, b| (&a.host, &a.prefix).cmp(&(&b.host, &b.prefix)));
        let mut out = format!(
            "{:<24} {:<24} {:<14} {:<9} {:<20} {}\n",
            "HOST", "PATH", "METHODS", "AUTH", "REQUIRES", "UPSTREAM"
        );
        for route in routes {
            let auth = match route.auth {
                AuthMode::None => "none",
                AuthMode::Optional => "optional",
                AuthMode::Required => "required",
            };
            let auth = match route.api_keys {
                true => format!("{auth}+key"),
                false => auth.to_owned(),
            };
            let mut requires = String::new();
            if !route.requirement.any_role.is_empty() {
                let _ = write!(requires, "role:{}", route.requirement.any_role.join("|"));
            }
            if !route.requirement.all_scopes.is_empty() {
                let sep = if requires.is_empty() { "" } else { " " };
                let _ = write!(
                    requires,
                    "{sep}scope:{}",
                    route.requirement.all_scopes.join("+")
                );
            }
            if let Some(age) = route.requirement.max_auth_age {
                let sep = if requires.is_empty() { "" } else { " " };
                let _ = write!(requires, "{sep}auth_age:{}s", age.as_secs());
            }
            for condition in &route.requirement.claims {
                let sep = if requires.is_empty() { "" } else { " " };
                let _ = write!(requires, "{sep}{}", condition.missing());
            }
            let methods =
                (route.methods.as_ref()).map_or_else(|| "*".to_owned(), |m| m.joined(","));
            let _ = writeln!(
                out,
                "{:<24} {:<24} {:<14} {:<9} {:<20} {}",
                route.host.as_deref().unwrap_or("*"),
                route.prefix,
                methods,
                auth,
                if requires.is_empty() { "-" } else { &requires },
                route.upstream.name,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::AdminToken;

    #[test]
    fn the_admin_token_matches_itself_only() {
        let token = AdminToken(b"a-long-enough-admin-token-of-32-bytes".to_vec());
        assert!(token.matches(b"a-long-enough-admin-token-of-32-bytes"));
        for other in [
            &b"a-long-enough-admin-token-of-32-byteS"[..],
            b"a-long-enough-admin-token-of-32-bytes ",
            b"a-long-enough-admin-token-of-32-byte",
            b"",
        ] {
            assert!(!token.matches(other), "{other:?}");
        }
    }
}
