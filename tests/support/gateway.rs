//! Starts a real gateway in-process on a free loopback port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use portcullis::proxy::server::{self, ShutdownTrigger};

use super::tokens::fixtures_dir;

/// A gateway that runs until dropped.
pub struct TestGateway {
    pub addr: SocketAddr,
    trigger: ShutdownTrigger,
    thread: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Starts a gateway from a configuration without a `[server]` table;
    /// the harness adds one that listens on a free port. `{fixtures}` in the
    /// text is replaced with the fixture key folder.
    pub fn start(config: &str) -> Self {
        let addr = free_addr();
        let text = format!(
            "[server]\nlisten = [\"{addr}\"]\nthreads = 1\nshutdown_grace = \"0s\"\nshutdown_timeout = \"1s\"\n\n{}",
            config.replace("{fixtures}", &fixtures_dir().display().to_string())
        );
        let runtime = portcullis::config::load_str(&text, Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{text}"));
        let pingora = server::build(Arc::new(ArcSwap::from_pointee(runtime)));
        let trigger = ShutdownTrigger::default();
        let stop = trigger.clone();
        let thread = thread::spawn(move || server::run_until_triggered(pingora, stop));
        wait_until_listening(addr);
        Self {
            addr,
            trigger,
            thread: Some(thread),
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.trigger.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn wait_until_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "gateway did not listen on {addr}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The configuration most tests share: every algorithm, a public route, a
/// role route, a scope route and an optional route.
pub fn standard_config(upstream: SocketAddr) -> String {
    format!(
        r#"
[tokens]
issuer = "https://issuer.test"
audience = "api.test"
leeway = "30s"
refresh_hint = "60s"
signing_key = "test-eddsa"

[[tokens.keys]]
kid = "test-eddsa"
algorithm = "EdDSA"
private_key_file = "{{fixtures}}/test-eddsa.pem"

[[tokens.keys]]
kid = "test-eddsa-2"
algorithm = "EdDSA"
public_key_file = "{{fixtures}}/test-eddsa-2.pub.pem"

[[tokens.keys]]
kid = "test-es256"
algorithm = "ES256"
public_key_file = "{{fixtures}}/test-es256.pub.pem"

[[tokens.keys]]
kid = "test-rs256"
algorithm = "RS256"
public_key_file = "{{fixtures}}/test-rs256.pub.pem"

[[tokens.keys]]
kid = "test-hs256"
algorithm = "HS256"
secret_file = "{{fixtures}}/test-hs256.secret"

[identity]
forward_token = false
claims = {{ email = "X-User-Email" }}

[[upstreams]]
name = "echo"
targets = ["{upstream}"]
connect_timeout = "1s"
read_timeout = "5s"

[[routes]]
path = "/"
upstream = "echo"
auth = "required"

[[routes]]
path = "/public"
upstream = "echo"
auth = "none"

[[routes]]
path = "/admin"
upstream = "echo"
auth = "required"
roles = ["admin"]

[[routes]]
path = "/reports"
upstream = "echo"
auth = "required"
scopes = ["reports:read", "reports:export"]

[[routes]]
path = "/maybe"
upstream = "echo"
auth = "optional"
"#
    )
}

/// One EdDSA key, the `echo` upstream, and the routes given.
pub fn config_with_routes(upstream: SocketAddr, rest: &str) -> String {
    format!(
        r#"
[tokens]
issuer = "https://issuer.test"
audience = "api.test"
signing_key = "test-eddsa"

[[tokens.keys]]
kid = "test-eddsa"
algorithm = "EdDSA"
private_key_file = "{{fixtures}}/test-eddsa.pem"

[[upstreams]]
name = "echo"
targets = ["{upstream}"]

{rest}
"#
    )
}
