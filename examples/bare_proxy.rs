//! The floor for every load figure: a bare pingora proxy with nothing of
//! portcullis in it. One `ProxyHttp` whose `request_filter` is empty and
//! whose peer is a fixed upstream, on the same engine version, allocator
//! (mimalloc) and server settings as the gateway. `scripts/bench-load.sh`
//! runs it in the same run as the gateway, so "portcullis costs N× the
//! engine" is a ratio from one run.
//!
//! Usage: `bare_proxy LISTEN UPSTREAM [CERT KEY]` (with a certificate and
//! key: TLS with HTTP/2 by ALPN, like the gateway). `BARE_THREADS` (default
//! 1) and `BARE_WORK_STEALING` (default 1) set the engine's server options.

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, _session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
    let bare = Bare {
        upstream: upstream.parse()?,
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
