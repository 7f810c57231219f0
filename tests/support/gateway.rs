//! Starts a real gateway in-process on a free loopback port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use portcullis::config::runtime::discovery::Resolve;
use portcullis::server::{self, ShutdownTrigger};

use super::tokens::fixtures_dir;

/// A gateway that runs until dropped.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Holds the SQLite file unless the configuration names another store.
    pub dir: tempfile::TempDir,
    trigger: ShutdownTrigger,
    thread: Option<JoinHandle<()>>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

impl TestGateway {
    /// `POST /admin/reload` with the test admin token.
    pub fn reload(&self) -> crate::support::Response {
        let raw = format!(
            "POST /admin/reload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n"
        );
        crate::support::send(self.admin, &raw)
    }

    /// Starts a gateway from a configuration without a `[server]` table;
    /// the harness adds one that listens on free ports. `{fixtures}` in the
    /// text is replaced with the fixture key folder. Without a `[store]`
    /// table the store is a SQLite file in the gateway's own folder.
    pub fn start(config: &str) -> Self {
        Self::start_in(config, tempfile::tempdir().expect("tempdir"))
    }

    /// Starts with `dir` as the folder of the configuration file, so a
    /// restart on the same folder finds the same SQLite store.
    pub fn start_in(config: &str, dir: tempfile::TempDir) -> Self {
        Self::start_full(config, "", dir)
    }

    /// Starts with extra lines in the `[server]` table (e.g. `tls = …`).
    pub fn start_with_server(config: &str, server_lines: &str) -> Self {
        Self::start_full(config, server_lines, tempfile::tempdir().expect("tempdir"))
    }

    /// Starts with upstream names resolved by `resolver` instead of the
    /// system's (the gateway's code is otherwise the same).
    pub fn start_resolving(config: &str, resolver: Arc<dyn Resolve>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_inner(config, "", dir, Some(resolver))
    }

    fn start_full(config: &str, server_lines: &str, dir: tempfile::TempDir) -> Self {
        Self::start_inner(config, server_lines, dir, None)
    }

    fn start_inner(
        config: &str,
        server_lines: &str,
        dir: tempfile::TempDir,
        resolver: Option<Arc<dyn Resolve>>,
    ) -> Self {
        let (addr, admin) = (free_addr(), free_addr());
        std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).expect("admin token");
        let mut text = format!(
            r#"[server]
listen = ["{addr}"]
admin_listen = "{admin}"
admin_token_env = "PORTCULLIS_TEST_UNSET_VARIABLE"
admin_token_file = "admin.token"
threads = 1
shutdown_grace = "0s"
shutdown_timeout = "1s"
{server_lines}

{}"#,
            config.replace("{fixtures}", &fixtures_dir().display().to_string())
        );
        if !text.contains("[store]") {
            text.push_str("\n[store]\nurl = \"sqlite://gateway.db\"\n");
        }
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, &text).expect("write config");
        let runtime = portcullis::config::load(&path)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{text}"));
        if let Some(resolver) = &resolver {
            for pool in runtime.pools() {
                pool.set_resolver(Arc::clone(resolver));
            }
        }
        let instance = server::build(runtime, Some(path)).expect("gateway starts");
        let trigger = ShutdownTrigger::default();
        let stop = trigger.clone();
        let thread = thread::spawn(move || instance.run_until_triggered(stop));
        wait_until_listening(addr);
        wait_until_listening(admin);
        Self {
            addr,
            admin,
            dir,
            trigger,
            thread: Some(thread),
        }
    }

    /// Stops the gateway and hands back its folder (for restart tests).
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    fn shutdown(&mut self) {
        self.trigger.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A loopback address nothing listens on, for a server to bind next.
///
/// Ports come from below the kernel's ephemeral range (32768+), where the
/// tests' own outgoing connections take theirs, and each is handed out
/// once per process: a port released by one test and grabbed by another
/// before the first binds it would let two tests share a server.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 5_000) as u16,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::AcqRel);
        if port >= 32_000 {
            NEXT.store(20_000, Ordering::Release);
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("addr");
        }
    }
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
    config_with_target(&upstream.to_string(), rest)
}

/// One EdDSA key and the `echo` upstream with the one target given (an
/// address or a name); `rest` follows its `targets` line, so it may begin
/// with more keys of the upstream.
pub fn config_with_target(upstream: &str, rest: &str) -> String {
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
