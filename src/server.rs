//! Building and running the pingora server that hosts the gateway: the
//! proxy, the admin API, and the background loops (the store's follower and
//! maintenance, upstream health checks and DNS, SIGHUP reloads).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service as ListeningService;
use tokio::sync::Notify;

use crate::admin::AdminApi;
use crate::audit::{AdminAction, AuditTrail};
use crate::config::runtime::tls::ReloadableCert;
use crate::config::runtime::{ServerSettings, TlsFiles};
use crate::config::Runtime;
use crate::metrics::METRICS;
use crate::proxy::edge::EdgeApp;
use crate::proxy::proxy_protocol::{BeforeTls, PlainListeners};
use crate::proxy::Gateway;
use crate::state::AppState;
use crate::store::{self, follower, Retention, RevocationView, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the store runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot load the TLS certificate or key: {0}")]
    Tls(String),
    #[error("cannot open the audit trail: {0}")]
    Audit(std::io::Error),
}

/// A gateway ready to run: the pingora server, the shared state, and the
/// runtime where the store's connections and the follower live.
pub struct Instance {
    pub server: Server,
    pub state: Arc<AppState>,
    background: Background,
}

/// The store's own tokio runtime. Store connections are bound to the
/// runtime that opened them, so they get one that lives exactly as long as
/// the gateway, independent of pingora's per-service runtimes.
struct Background {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Arc<Notify>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.notify_waiters();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Opens the store, loads the revocation view, starts the background
/// loops, and builds the server with the proxy and admin services.
pub fn build(
    runtime: Runtime,
    config_path: Option<std::path::PathBuf>,
) -> Result<Instance, StartError> {
    let settings = runtime.server.clone();
    let background = Background::start()?;
    let view = background.open_view(&runtime)?;
    // Upstream names, resolved before the first request; one that does
    // not resolve yet is retried by `follow_dns`.
    background.block_on(runtime.resolve_upstreams());
    let certificate = match &settings.tls {
        Some(files) => Some(Arc::new(
            ReloadableCert::load(files).map_err(StartError::Tls)?,
        )),
        None => None,
    };
    let audit = AuditTrail::start(&runtime.audit).map_err(StartError::Audit)?;
    let state =
        Arc::new(AppState::new(runtime, view, config_path, certificate.clone()).with_audit(audit));
    background.start_loops(&state);
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, server_conf(&settings));
    server.bootstrap();
    let proxy = proxy_service(&server, &settings, &state, certificate.as_ref())?;
    server.add_service(proxy);
    server.add_service(admin_service(&settings, &state));
    Ok(Instance {
        server,
        state,
        background,
    })
}

impl Background {
    /// The store's runtime: one worker, so the revocation view's follower
    /// is never queued behind request work.
    fn start() -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portcullis-store")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
            stop: Arc::new(Notify::new()),
        })
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("running").block_on(future)
    }

    /// Runs `task` on the store's runtime until the gateway stops.
    fn spawn_until_stop<F, T>(&self, task: F)
    where
        F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> T,
        T: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = Arc::clone(&self.stop);
        let stopped = Box::pin(async move { stop.notified().await });
        self.runtime.as_ref().expect("running").spawn(task(stopped));
    }

    /// Opens the store, loads the revocation view from it, and starts the
    /// follower (changes) and the maintenance (expired entries) on it.
    fn open_view(&self, runtime: &Runtime) -> Result<Arc<RevocationView>, StartError> {
        let settings = &runtime.server.store;
        let retention = Retention {
            after_expiry: runtime.leeway,
            log_entries: settings.change_log_entries,
        };
        let store = self.block_on(store::open_with(
            &settings.location,
            retention,
            settings.redis.clone(),
        ))?;
        let view = Arc::new(RevocationView::new(store, settings.view.clone()));
        let initial = self.block_on(follower::resync(&view))?;
        let follow_view = Arc::clone(&view);
        self.spawn_until_stop(move |stopped| {
            follower::run_from(follow_view, Some(initial), stopped)
        });
        let (maintain_view, leeway) = (Arc::clone(&view), runtime.leeway);
        self.spawn_until_stop(move |stopped| {
            follower::maintain_until(maintain_view, leeway, stopped)
        });
        Ok(view)
    }

    /// Health checks and ejection, DNS re-resolution, SIGHUP reloads.
    fn start_loops(&self, state: &Arc<AppState>) {
        let pools = Arc::clone(state);
        self.spawn_until_stop(move |stopped| maintain_upstreams(pools, stopped));
        let names = Arc::clone(state);
        self.spawn_until_stop(move |stopped| follow_dns(names, stopped));
        let reloads = Arc::clone(state);
        self.spawn_until_stop(move |stopped| reload_on_sighup(reloads, stopped));
    }
}

/// pingora's shutdown, entered once `shutdown_grace` is over (see
/// [`DrainFirst`]): listeners stop accepting, keep-alive ends, HTTP/2
/// connections get GOAWAY, and requests in flight have its
/// `grace_period_seconds` (our `shutdown_timeout`) to finish before the
/// runtimes are stopped. pingora counts whole seconds, so a part is
/// rounded up.
fn server_conf(settings: &ServerSettings) -> ServerConf {
    ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(whole_seconds(settings.shutdown_timeout)),
        // Stopping a runtime drops its tasks at once; this only waits for
        // blocking work.
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: settings.upstream_keepalive_pool,
        work_stealing: settings.work_stealing,
        ..ServerConf::default()
    }
}

/// The proxy service on every `listen` address: PROXY protocol (plain
/// listeners), then the head check in front of pingora's proxy (see
/// `edge`); TLS listeners also speak HTTP/2.
fn proxy_service(
    server: &Server,
    settings: &ServerSettings,
    state: &Arc<AppState>,
    certificate: Option<&Arc<ReloadableCert>>,
) -> Result<ListeningService<PlainListeners<EdgeApp>>, StartError> {
    let mut proxy = ListeningService::new(
        "portcullis proxy".to_owned(),
        edge_app(server, settings, Gateway::new(Arc::clone(state))),
    );
    for addr in &settings.listen {
        match &settings.tls {
            Some(tls) => {
                let tls_settings = tls_settings(tls, certificate)?;
                proxy.add_listener(listener(addr, settings.proxy_protocol).tls(tls_settings));
            }
            None => proxy.add_listener(listener(addr, settings.proxy_protocol)),
        }
    }
    if settings.proxy_protocol && settings.tls.is_some() {
        let before_tls = BeforeTls {
            deadline: settings.header_read_timeout,
            trusted: settings.trusted_proxies.clone(),
        };
        proxy.endpoints().set_pre_tls_callback(Arc::new(before_tls));
    }
    Ok(proxy)
}

fn tls_settings(
    files: &TlsFiles,
    certificate: Option<&Arc<ReloadableCert>>,
) -> Result<TlsSettings, StartError> {
    let cert = files.cert.to_string_lossy();
    let key = files.key.to_string_lossy();
    let mut settings =
        TlsSettings::intermediate(&cert, &key).map_err(|e| StartError::Tls(e.to_string()))?;
    // The resolver, not the files, serves handshakes, so a reload can swap
    // the certificate.
    if let Some(resolver) = certificate {
        settings
            .set_cert_resolver(Arc::clone(resolver) as Arc<dyn pingora_rustls::ResolvesServerCert>);
    }
    // HTTP/2 by ALPN; clients without it keep HTTP/1.1.
    settings.enable_h2();
    Ok(settings)
}

/// The admin API: its own listener and one thread.
fn admin_service(settings: &ServerSettings, state: &Arc<AppState>) -> ListeningService<AdminApi> {
    let mut admin = ListeningService::new(
        "portcullis admin".to_owned(),
        AdminApi::new(Arc::clone(state)),
    );
    admin.add_tcp(&settings.admin_listen);
    admin.threads = Some(1);
    admin
}

/// A listener without the engine's 64 KiB read buffer, which every idle
/// connection would hold (issue #24): on a plain listener the edge reads
/// each request head into its own buffer, so it would only copy bytes once
/// more; under TLS, rustls reads whole records into its own buffer, and
/// HTTP/2's codec into its own. Reads go straight to the socket. A PROXY
/// protocol header is read in small pieces, so it keeps a small buffer.
fn listener(addr: &str, proxy_protocol: bool) -> ListenerConfig {
    let read = if proxy_protocol { 4096 } else { 0 };
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::default().read(read))
}

/// The proxy listener's application: the PROXY protocol header (on plain
/// listeners that ask for it), then each request head read and judged
/// with its deadlines, then pingora's proxy.
fn edge_app(
    server: &Server,
    settings: &ServerSettings,
    gateway: Gateway,
) -> PlainListeners<EdgeApp> {
    let proxy = pingora_proxy::http_proxy(&server.configuration, gateway);
    let edge = EdgeApp::new(
        proxy,
        settings.header_read_timeout,
        settings.keepalive_timeout,
    );
    let plain_proxy_protocol = settings.proxy_protocol && settings.tls.is_none();
    PlainListeners {
        inner: Arc::new(edge),
        deadline: plain_proxy_protocol.then_some(settings.header_read_timeout),
        trusted: settings.trusted_proxies.clone(),
    }
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl Instance {
    /// Runs until SIGTERM (graceful, see [`DrainFirst`]), SIGINT (fast) or
    /// SIGQUIT (graceful upgrade).
    pub fn run_until_signal(self) {
        let signals = DrainFirst {
            state: Arc::clone(&self.state),
            grace: self.state.runtime.load().server.shutdown_grace,
        };
        self.run(RunArgs {
            shutdown_signal: Box::new(signals),
        });
    }

    /// Runs until `trigger.stop()`; for tests and embedding.
    pub fn run_until_triggered(self, trigger: ShutdownTrigger) {
        self.run(RunArgs {
            shutdown_signal: Box::new(trigger),
        });
    }

    fn run(self, args: RunArgs) {
        let Instance {
            server,
            state,
            background,
        } = self;
        server.run(args);
        // What the trail holds is written before the process exits.
        state.audit.close();
        drop(state);
        drop(background);
    }
}

/// Re-resolves the current configuration's upstream names when each
/// pool's interval is due, until `shutdown`. Its own task, so a slow
/// resolver never delays health checks.
async fn follow_dns(state: Arc<AppState>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = every.tick() => {
                for pool in state.runtime.load_full().pools() {
                    pool.follow_dns().await;
                }
            }
        }
    }
}

/// Runs the upstream pools' health work (active checks when due, the end
/// of passive ejections) and the JWKS refreshes about once a second, on
/// whatever configuration is current, so what a reload adds is covered.
async fn maintain_upstreams(state: Arc<AppState>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = every.tick() => {
                ticks += 1;
                measure_store(&state, ticks % 15 == 1).await;
                let runtime = state.runtime.load_full();
                for pool in runtime.pools() {
                    pool.maintain().await;
                }
                // External issuers' keys, refreshed ahead of need.
                for issuer in runtime.verifier.external_issuers() {
                    if let Some(jwks) = issuer.jwks.as_ref().filter(|j| j.refresh_due()) {
                        let _ = jwks.refresh().await;
                    }
                }
            }
        }
    }
}

/// The change-log lag (every second) and, when `count_sessions`, the
/// number of active sessions (a count query, so less often).
async fn measure_store(state: &AppState, count_sessions: bool) {
    let store = state.view.store();
    if let (Ok(head), Some(position)) = (store.head().await, state.view.position()) {
        METRICS
            .change_log_lag
            .set(position.entries_until(&head) as i64);
    }
    if count_sessions {
        if let Ok(count) = store.active_sessions(crate::clock::unix_now()).await {
            METRICS.active_sessions.set(count as i64);
        }
    }
}

/// SIGHUP reloads the configuration, like `POST /admin/reload`.
async fn reload_on_sighup(state: Arc<AppState>, shutdown: impl std::future::Future<Output = ()>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!(target: "portcullis::proxy::server", "cannot listen for SIGHUP; reload with POST /admin/reload");
        return;
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            Some(()) = hangups.recv() => {
                // Off this runtime, whose worker the follower needs; a
                // failed reload is logged and counted inside.
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let outcome = state.reload_detached().await;
                    state.audit.admin_action(&AdminAction {
                        request_id: None,
                        source: "sighup",
                        caller: None,
                        action: "reload",
                        resource: None,
                        outcome: if outcome.is_ok() { "ok" } else { "config_invalid" },
                    });
                });
            }
        }
    }
}

/// SIGTERM as a Kubernetes rollout needs it. The pod leaves the Service's
/// endpoints while it is told to stop, and the two happen in no set order:
/// kube-proxies, ingress controllers and load balancers keep sending new
/// connections for a few seconds after SIGTERM. So for `shutdown_grace`
/// the gateway keeps accepting and serving while `/readyz` answers 503 at
/// once (no new traffic is routed to it); only then does pingora's
/// shutdown begin (see [`server_conf`]): no new connections, requests in
/// flight get `shutdown_timeout`, then the process exits. A connection
/// refused during a rollout would be an error every client sees.
///
/// SIGINT stops at once, also during the grace; SIGQUIT is pingora's
/// graceful upgrade, unchanged.
struct DrainFirst {
    state: Arc<AppState>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainFirst {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut interrupt), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            return pingora_core::server::UnixShutdownSignalWatch.recv().await;
        };
        tokio::select! {
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = interrupt.recv() => return fast_shutdown(),
            _ = term.recv() => {}
        }
        self.state.start_draining();
        tracing::info!(
            target: "portcullis::server",
            grace_ms = self.grace.as_millis() as u64,
            "SIGTERM: not ready; serving new connections until the grace ends, then draining"
        );
        tokio::select! {
            () = tokio::time::sleep(self.grace) => {}
            _ = interrupt.recv() => return fast_shutdown(),
        }
        tracing::info!(
            target: "portcullis::server",
            "shutdown grace over: no longer accepting; draining requests in flight"
        );
        ShutdownSignal::GracefulTerminate
    }
}

/// SIGINT: the process stops now, and says so.
fn fast_shutdown() -> ShutdownSignal {
    tracing::info!(target: "portcullis::server", "SIGINT: stopping now");
    ShutdownSignal::FastShutdown
}

/// A shutdown signal that code can pull (fast shutdown).
#[derive(Clone, Default)]
pub struct ShutdownTrigger(Arc<Notify>);

impl ShutdownTrigger {
    pub fn stop(&self) {
        self.0.notify_one();
    }
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownTrigger {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}
