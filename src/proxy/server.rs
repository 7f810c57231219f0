//! Building and running the pingora server that hosts the gateway.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::Service;
use tokio::sync::Notify;

use super::Gateway;
use crate::config::Runtime;

/// A pingora server with the gateway's proxy service on every `listen`
/// address. More services (a demo backend, the admin API) can be added
/// before it runs.
pub fn build(runtime: Arc<ArcSwap<Runtime>>) -> Server {
    let settings = runtime.load().server.clone();
    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_timeout.as_secs()),
        upstream_keepalive_pool_size: settings.upstream_keepalive_pool,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(runtime),
        "portcullis proxy",
    );
    for addr in &settings.listen {
        proxy.add_tcp(addr);
    }
    server.add_service(proxy);
    server
}

/// Adds any extra service (used by `demo` for its backend).
pub fn add_service(server: &mut Server, service: impl Service + 'static) {
    server.add_service(service);
}

/// Runs until SIGTERM (graceful: drains in-flight requests), SIGINT (fast)
/// or SIGQUIT (graceful upgrade). Returns when every service has stopped.
pub fn run_until_signal(server: Server) {
    server.run(RunArgs::default());
}

/// Runs until `trigger.stop()`; for tests and embedding.
pub fn run_until_triggered(server: Server, trigger: ShutdownTrigger) {
    server.run(RunArgs {
        shutdown_signal: Box::new(trigger),
    });
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
