//! How fast a revocation reaches another instance: two gateways share one
//! redis-server on loopback; each of N tokens is revoked through instance
//! A's admin API and instance B is polled until it refuses the token.
//! Prints p50, p99 and max (from A's acknowledgement to B's first refusal)
//! next to `max_staleness`.
//!
//! Run: `cargo bench --bench propagation` (N=1000; `PROPAGATION_N` to change).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::{standard_config, TestGateway, ADMIN_TOKEN};
use support::http::{connect, read_response, EchoUpstream};
use support::redis::RedisServer;
use support::tokens::{claims, sign};

const MAX_STALENESS_MS: u64 = 1000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list here.
    }
    let n: usize = std::env::var("PROPAGATION_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let config = format!(
        "{}\n[store]\nurl = \"{}\"\nmax_staleness = \"{MAX_STALENESS_MS}ms\"\n",
        standard_config(upstream.addr),
        redis.url()
    );
    let (a, b) = (TestGateway::start(&config), TestGateway::start(&config));
    let mut admin = Client::new(a.admin);
    let mut probe = Client::new(b.addr);

    let mut delays = Vec::with_capacity(n);
    for i in 0..n {
        let claims = claims(&format!("user-{i}"));
        let token = sign("test-hs256", &claims);
        let auth = format!("Authorization: Bearer {token}");
        assert_eq!(
            probe.call("GET", "/orders", &auth, ""),
            200,
            "B admits the token before revocation"
        );
        let body = json!({"jti": claims["jti"], "exp": claims["exp"]}).to_string();
        let admin_auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
        assert_eq!(
            admin.call("POST", "/admin/tokens/revoke", &admin_auth, &body),
            200
        );
        let acknowledged = Instant::now();
        while probe.call("GET", "/orders", &auth, "") != 401 {
            assert!(
                acknowledged.elapsed() < Duration::from_secs(10),
                "B never refused token {i}"
            );
        }
        delays.push(acknowledged.elapsed());
    }
    delays.sort();
    let pct =
        |p: f64| delays[((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| revocations | p50 ms | p99 ms | max ms | max_staleness ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| {n} | {:.2} | {:.2} | {:.2} | {MAX_STALENESS_MS} |",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*delays.last().expect("n > 0"))
    );
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    writer: std::net::TcpStream,
    reader: BufReader<std::net::TcpStream>,
}

impl Client {
    fn new(addr: std::net::SocketAddr) -> Self {
        let stream = connect(addr);
        stream.set_nodelay(true).expect("nodelay");
        Self {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn call(&mut self, method: &str, path: &str, header: &str, body: &str) -> u16 {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\n{header}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(request.as_bytes()).expect("write");
        read_response(&mut self.reader).status
    }
}
