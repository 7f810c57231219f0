//! The floor for every load figure: a bare pingora proxy with nothing of
//! portcullis in it. One `ProxyHttp` whose `request_filter` is empty and
//! whose peer is a fixed upstream, on the same engine version, allocator
//! (mimalloc) and server settings as the gateway. `scripts/bench-load.sh`
//! runs it in the same run as the gateway, so "portcullis costs N× the
//! engine" is a ratio from one run.
//!
//! With `BARE_PROMISES=1` it also does, through the engine's API, the
//! per-request work the README promises on every route and the engine
//! does not do by itself: `X-Forwarded-For`/`-Proto`/`-Host` and a fresh
//! `X-Request-Id` to the upstream, the request id on the response, and the
//! upstream's connect, read, write and idle timeouts (the gateway's
//! defaults). The gap between the two floors is what those promises cost
//! in the engine; the gap above the second is the gateway's own code.
//! `BARE_PROMISES=headers` or `=timeouts` keeps only one kind, to tell
//! their costs apart.
//!
//! Usage: `bare_proxy LISTEN UPSTREAM [CERT KEY]` (with a certificate and
//! key: TLS with HTTP/2 by ALPN, like the gateway). `BARE_THREADS` (default
//! 1) and `BARE_WORK_STEALING` (default 1) set the engine's server options.

use std::time::Duration;

use async_trait::async_trait;
use http::header::HOST;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::upstreams::peer::{HttpPeer, PeerOptions};
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: std::net::SocketAddr,
    /// The forwarding headers and request ids, set.
    headers: bool,
    /// The upstream timeouts, set.
    timeouts: Option<PeerOptions>,
}

#[async_trait]
impl ProxyHttp for Bare {
    /// The request id, when the headers are kept.
    type CTX = String;

    fn new_ctx(&self) -> String {
        String::new()
    }

    async fn request_filter(
        &self,
        _session: &mut Session,
        request_id: &mut String,
    ) -> Result<bool> {
        if self.headers {
            let mut digits = [0u8; 32];
            let _ = hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut digits);
            request_id.push_str(std::str::from_utf8(&digits).unwrap_or_default());
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut String,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if let Some(options) = &self.timeouts {
            peer.options = options.clone();
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        request_id: &mut String,
    ) -> Result<()> {
        if !self.headers {
            return Ok(());
        }
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream.insert_header("x-forwarded-for", client.ip().to_string())?;
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        upstream.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
        // HTTP/2 carries the host in `:authority`, which the engine puts in
        // the URI, not in `Host`.
        let request = session.req_header();
        let host = request
            .headers
            .get(HOST)
            .cloned()
            .or_else(|| http::HeaderValue::from_str(request.uri.authority()?.as_str()).ok());
        if let Some(host) = host {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        upstream.insert_header("x-request-id", request_id.as_str())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        request_id: &mut String,
    ) -> Result<()> {
        if self.headers {
            response.insert_header("x-request-id", request_id.as_str())?;
        }
        Ok(())
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The gateway's default upstream timeouts (`[[upstreams]]`).
fn promised_timeouts() -> PeerOptions {
    let mut options = PeerOptions::new();
    options.connection_timeout = Some(Duration::from_secs(2));
    options.read_timeout = Some(Duration::from_secs(30));
    options.write_timeout = Some(Duration::from_secs(30));
    options.idle_timeout = Some(Duration::from_secs(60));
    options
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: bare_proxy LISTEN UPSTREAM [CERT KEY]");
    };
    let conf = ServerConf {
        threads: env_number("BARE_THREADS", 1),
        work_stealing: env_number("BARE_WORK_STEALING", 1) == 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    let promises = std::env::var("BARE_PROMISES").unwrap_or_default();
    let (headers, timeouts) = match promises.as_str() {
        "" | "0" => (false, false),
        "1" => (true, true),
        "headers" => (true, false),
        "timeouts" => (false, true),
        other => anyhow::bail!("BARE_PROMISES={other}: expected 0, 1, headers or timeouts"),
    };
    let bare = Bare {
        upstream: upstream.parse()?,
        headers,
        timeouts: timeouts.then(promised_timeouts),
    };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, bare);
    match (args.get(2), args.get(3)) {
        (Some(cert), Some(key)) => {
            let mut tls = TlsSettings::intermediate(cert, key)?;
            tls.enable_h2();
            proxy.add_tls_with_settings(listen, None, tls);
        }
        _ => proxy.add_tcp(listen),
    }
    server.add_service(proxy);
    server.run(RunArgs::default());
    Ok(())
}
