//! What lives for the whole process: the current configuration (swapped
//! whole on reload), the revocation view with its store, and the refresh
//! failure counters.
//!
//! A reload reads files and resolves upstream names, which can take as
//! long as a slow disk or resolver likes, so it runs on a thread of its own
//! ([`AppState::reload_detached`]): never on the store's runtime, whose one
//! worker keeps the revocation view fresh, nor on the admin API's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::audit::AuditTrail;
use crate::config::runtime::tls::ReloadableCert;
use crate::config::{self, ConfigError, Runtime};
use crate::metrics::METRICS;
use crate::session::login_throttle::LoginThrottle;
use crate::session::ratelimit::FailureLimiter;
use crate::store::rate_limit::LocalLimits;
use crate::store::RevocationView;
use crate::telemetry::Traces;

pub struct AppState {
    pub runtime: ArcSwap<Runtime>,
    pub view: Arc<RevocationView>,
    /// Refresh failures per presented token; outlives reloads.
    pub refresh_failures: Arc<FailureLimiter>,
    /// Rate-limit state kept in memory (`store::rate_limit`); outlives reloads.
    pub rate_limits: LocalLimits,
    /// Failed logins per user name and address; outlives reloads.
    pub login_throttle: LoginThrottle,
    /// API key failures per key id (`proxy::api_key`); outlives reloads.
    pub api_key_failures: Arc<FailureLimiter>,
    /// The trace pipeline (`[tracing]`), `None` when off; built at start.
    pub traces: Option<Traces>,
    /// The file the configuration came from, read again on reload.
    pub config_path: Option<PathBuf>,
    /// The listeners' certificate, read again on reload.
    pub certificate: Option<Arc<ReloadableCert>>,
    /// One reload at a time, so the last one asked for is the one in force.
    reloading: Mutex<()>,
    /// Set by SIGTERM: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    /// The decision trail (`[audit]`), started once; a reload reopens its file.
    pub audit: AuditTrail,
}

/// What a successful reload changed, for the log and the admin answer.
#[derive(Debug)]
pub struct Reloaded {
    pub routes: usize,
    /// Settings that differ but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

impl AppState {
    pub fn new(
        runtime: Runtime,
        view: Arc<RevocationView>,
        config_path: Option<PathBuf>,
        certificate: Option<Arc<ReloadableCert>>,
    ) -> Self {
        let settings = &runtime.sessions.settings;
        let refresh_failures = FailureLimiter::new(settings.max_failures, settings.failure_window);
        let rate_limits = LocalLimits::new(runtime.server.store.rate_limit_entries);
        let api_key_failures = FailureLimiter::new(settings.max_failures, settings.failure_window);
        // Validated by `check`; a pipeline that still cannot be built
        // leaves the gateway serving, untraced, and says so.
        let traces = Traces::start(&runtime.tracing).unwrap_or_else(|e| {
            tracing::error!("tracing is off: {e}");
            None
        });
        Self {
            rate_limits,
            login_throttle: LoginThrottle::default(),
            traces,
            runtime: ArcSwap::from_pointee(runtime),
            view,
            refresh_failures,
            api_key_failures,
            config_path,
            certificate,
            reloading: Mutex::new(()),
            draining: AtomicBool::new(false),
            audit: AuditTrail::disabled(),
        }
    }

    /// This state with `audit` as its decision trail.
    pub fn with_audit(mut self, audit: AuditTrail) -> Self {
        self.audit = audit;
        self
    }

    /// The process is stopping: report not ready, so no new traffic is
    /// routed here while the requests already coming are served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// [`Self::reload`] on a thread of its own; the caller's runtime keeps
    /// running while files are read and names resolved.
    pub async fn reload_detached(self: &Arc<Self>) -> Result<Reloaded, ConfigError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let state = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("portcullis-reload".to_owned())
            .spawn(move || {
                let _ = done.send(state.reload());
            });
        let failed = |message: &str| ConfigError::Read {
            path: self.config_path.clone().unwrap_or_default(),
            source: std::io::Error::other(message.to_owned()),
        };
        if spawned.is_err() {
            return Err(failed("cannot start the reload thread"));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(failed("the reload stopped before it finished")))
    }

    /// Reads the configuration file again, checks it as a whole, and swaps
    /// it in. Requests in flight finish on the configuration they started
    /// with; a bad file changes nothing.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        // Whatever the file says: logrotate's SIGHUP must reach the trail
        // even when the configuration has a mistake in it.
        self.audit.reopen();
        let Some(path) = &self.config_path else {
            return Err(ConfigError::Read {
                path: PathBuf::from("(none)"),
                source: std::io::Error::other("this gateway was not started from a file"),
            });
        };
        let outcome = config::load(path)
            .and_then(|fresh| self.reload_certificate().map(|()| fresh))
            .map(|mut fresh| {
                let current = self.runtime.load();
                // Names resolved (by the resolver in use) before the swap,
                // so no request meets an empty pool.
                fresh.resolve_upstreams_after(&current);
                let needs_restart = restart_only_changes(&current, &fresh);
                // Listeners and the store stay as they are until a restart.
                fresh.server = current.server.clone();
                fresh.audit = current.audit.clone();
                let routes = fresh.router.routes().count();
                self.runtime.store(Arc::new(fresh));
                Reloaded {
                    routes,
                    needs_restart,
                }
            });
        let label = if outcome.is_ok() { "ok" } else { "error" };
        METRICS.config_reloads.with_label_values(&[label]).inc();
        match &outcome {
            Ok(done) => {
                tracing::info!(routes = done.routes, needs_restart = ?done.needs_restart, "configuration reloaded")
            }
            Err(e) => tracing::error!(
                "configuration reload failed; the previous configuration stays in force:\n{e}"
            ),
        }
        outcome
    }
}

impl AppState {
    /// The certificate files named at start, read again: a renewed
    /// certificate is picked up by a reload, not a restart.
    fn reload_certificate(&self) -> Result<(), ConfigError> {
        let (Some(certificate), Some(files)) = (&self.certificate, &self.runtime.load().server.tls)
        else {
            return Ok(());
        };
        certificate.reload(files).map_err(|message| {
            ConfigError::Invalid(vec![config::Diagnostic {
                file: files.cert.clone(),
                line: 1,
                column: 1,
                message,
            }])
        })
    }
}

fn restart_only_changes(current: &Runtime, fresh: &Runtime) -> Vec<&'static str> {
    let (a, b) = (&current.server, &fresh.server);
    let mut changed = Vec::new();
    if a.listen != b.listen {
        changed.push("server.listen");
    }
    if a.admin_listen != b.admin_listen {
        changed.push("server.admin_listen");
    }
    if a.threads != b.threads {
        changed.push("server.threads");
    }
    if a.store.location != b.store.location {
        changed.push("store.url");
    }
    if a.store.redis != b.store.redis {
        changed.push("store.key_prefix/min_replicas/replica_timeout");
    }
    let (va, vb) = (&a.store.view, &b.store.view);
    if va.max_staleness != vb.max_staleness || va.on_unavailable != vb.on_unavailable {
        changed.push("store.max_staleness/on_unavailable");
    }
    if va.user_cache_entries != vb.user_cache_entries
        || a.store.change_log_entries != b.store.change_log_entries
        || a.store.rate_limit_entries != b.store.rate_limit_entries
    {
        changed.push("store cache and log sizes");
    }
    if a.trusted_proxies != b.trusted_proxies || a.proxy_protocol != b.proxy_protocol {
        changed.push("server.trusted_proxies/proxy_protocol");
    }
    if a.header_read_timeout != b.header_read_timeout || a.keepalive_timeout != b.keepalive_timeout
    {
        changed.push("server.header_read_timeout/keepalive_timeout");
    }
    if a.tls != b.tls {
        changed.push("server.tls (files are re-read; their paths are not)");
    }
    if current.audit != fresh.audit {
        changed.push("audit");
    }
    if a.admin_token.as_ref().map(|t| &t.0) != b.admin_token.as_ref().map(|t| &t.0) {
        changed.push("the admin token");
    }
    if current.sessions.settings.max_failures != fresh.sessions.settings.max_failures
        || current.sessions.settings.failure_window != fresh.sessions.settings.failure_window
    {
        changed.push("sessions.max_failures/failure_window");
    }
    if current.tracing != fresh.tracing {
        changed.push("tracing");
    }
    changed
}
