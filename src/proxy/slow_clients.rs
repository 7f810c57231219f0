//! Deadlines for clients that hold connections without finishing requests
//! (slowloris): the engine's own read timeout restarts with every byte, so
//! one byte every few seconds would keep a connection forever.
//!
//! Wraps the HTTP application: each request's header must be complete
//! within `header_read_timeout` of the gateway starting to wait for it (on
//! a kept-alive connection, `keepalive_timeout` + `header_read_timeout`
//! after the previous response); otherwise the connection is closed without
//! an answer, as NGINX does for `client_header_timeout`. The gateway marks
//! the header as read ([`header_read`]) when its first hook runs. Idle
//! keep-alive connections (HTTP/1.1 and HTTP/2) close after
//! `keepalive_timeout`. What comes after the header (bodies, upstream
//! waits) has its own timeouts and is not covered here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;

/// Requests served on one connection before it is closed (NGINX's
/// `keepalive_requests` default); it also tells a kept-alive connection
/// from a new one.
pub const REQUESTS_PER_CONNECTION: u32 = 1000;

tokio::task_local! {
    static HEADER_READ: AtomicBool;
}

/// Called by the gateway's first hook: the request header has arrived.
pub fn header_read() {
    let _ = HEADER_READ.try_with(|read| read.store(true, Ordering::Relaxed));
}

pub struct SlowClients<A> {
    inner: Arc<A>,
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    options: HttpServerOptions,
}

impl<A: HttpServerApp> SlowClients<A> {
    pub fn new(inner: A, header_read_timeout: Duration, keepalive_timeout: Duration) -> Self {
        let mut options = inner.server_options().cloned().unwrap_or_default();
        options.keepalive_request_limit = Some(REQUESTS_PER_CONNECTION);
        options.h2_idle_timeout = Some(keepalive_timeout);
        Self {
            inner: Arc::new(inner),
            header_read_timeout,
            keepalive_timeout,
            options,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for SlowClients<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let kept_alive = session
            .get_keepalive_reuses_remaining()
            .is_some_and(|left| left < REQUESTS_PER_CONNECTION);
        // `None` means the server is shutting down: leave it off.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.keepalive_timeout.as_secs()));
        }
        let deadline = match kept_alive {
            true => self.keepalive_timeout + self.header_read_timeout,
            false => self.header_read_timeout,
        };
        let inner = Arc::clone(&self.inner);
        HEADER_READ
            .scope(AtomicBool::new(false), async move {
                let work = inner.process_new_http(session, shutdown);
                tokio::pin!(work);
                tokio::select! {
                    biased;
                    done = &mut work => return done,
                    () = tokio::time::sleep(deadline) => {}
                }
                if HEADER_READ.with(|read| read.load(Ordering::Relaxed)) {
                    work.await
                } else {
                    tracing::debug!("request header not complete in time; connection closed");
                    None // dropping the request closes the connection
                }
            })
            .await
    }

    fn h2_options(&self) -> Option<pingora_core::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}
