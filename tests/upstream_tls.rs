//! Client certificates to upstreams (mTLS), against real servers that
//! require one: Debian's nginx with `ssl_verify_client on`, and
//! `openssl s_server -Verify`, which fails the handshake instead of
//! answering. The client certificates are made here by openssl, signed by
//! a CA of the test's own (the fixture CA's key is gone); the upstreams'
//! server certificate is the fixture's (`tests/fixtures/tls`).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::gateway::{config_with_routes, free_addr};
use crate::support::{assert_refused, get, tls_fixtures, tool, EchoUpstream, TestGateway};

/// A client CA and two client certificates it signed, in a temp dir.
struct ClientPki {
    dir: tempfile::TempDir,
}

impl ClientPki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ext = dir.path().join("client.ext");
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .expect("ext");
        openssl(
            dir.path(),
            &["req", "-x509", "-nodes", "-days", "2"],
            &["-keyout", "ca-key.pem", "-out", "ca.pem"],
            "/CN=portcullis-test-client-ca",
        );
        for (n, serial) in [(1, "1"), (2, "2")] {
            let (key, csr) = (format!("gateway-{n}-key.pem"), format!("gateway-{n}.csr"));
            let subject = format!("/CN=portcullis-gateway-{n}");
            openssl(
                dir.path(),
                &["req", "-new", "-nodes"],
                &["-keyout", &key, "-out", &csr],
                &subject,
            );
            run_openssl(
                Command::new("openssl")
                    .current_dir(dir.path())
                    .args(["x509", "-req", "-in", &csr, "-CA", "ca.pem"])
                    .args(["-CAkey", "ca-key.pem", "-set_serial", serial, "-days", "2"])
                    .args([
                        "-out",
                        &format!("gateway-{n}.pem"),
                        "-extfile",
                        "client.ext",
                    ]),
            );
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Client certificate `n` (1 or 2) and its key.
    fn pair(&self, n: u8) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("gateway-{n}.pem")),
            self.path(&format!("gateway-{n}-key.pem")),
        )
    }
}

/// `openssl <head> -newkey ec(P-256) <files> -subj <subject>` in `dir`.
fn openssl(dir: &Path, head: &[&str], files: &[&str], subject: &str) {
    run_openssl(
        Command::new("openssl")
            .current_dir(dir)
            .args(head)
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .args(files)
            .args(["-subj", subject]),
    );
}

/// Runs an openssl command quietly; its stderr is shown only if it fails.
#[track_caller]
fn run_openssl(command: &mut Command) {
    let out = tool::output(command);
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server process the test started, stopped (by its own handle) when
/// dropped.
struct Server {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn wait_listening(self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "no server on {}", self.addr);
            thread::sleep(Duration::from_millis(20));
        }
        self
    }
}

/// nginx on a free loopback port with the fixture server certificate,
/// requiring a client certificate signed by `client_ca`, answering
/// `ok <the client certificate's subject DN>`, with the number of the TLS
/// connection in `X-Connection` (to tell a reused connection from a new
/// one).
fn nginx(client_ca: &Path) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, fixtures, d) = (free_addr(), tls_fixtures(), dir.path().display());
    let conf = format!(
        // One process: a SIGKILL on drop then leaves no worker holding the
        // test's output pipe open.
        r#"master_process off;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        location / {{
            default_type text/plain;
            add_header X-Connection $connection always;
            return 200 "ok $ssl_client_s_dn";
        }}
    }}
}}
"#,
        cert = fixtures.join("test-cert.pem").display(),
        key = fixtures.join("test-key.pem").display(),
        ca = client_ca.display(),
    );
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, conf).expect("nginx.conf");
    let child = tool::spawn(
        Command::new("nginx")
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir.path())
            .args(["-e", &format!("{d}/error.log"), "-g", "daemon off;"]),
    );
    Server { addr, child, dir }.wait_listening()
}

/// `openssl s_server` requiring a client certificate (`-Verify`): without
/// one it fails the TLS handshake rather than answering.
fn handshake_refusing_server(client_ca: &Path) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, fixtures) = (free_addr(), tls_fixtures());
    let child = tool::spawn(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(fixtures.join("test-cert.pem"))
            .arg("-key")
            .arg(fixtures.join("test-key.pem"))
            .arg("-CAfile")
            .arg(client_ca)
            .args(["-Verify", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    Server { addr, child, dir }.wait_listening()
}

/// The configuration: the `echo` upstream (unused), and `mtls` at
/// `target` over TLS to `localhost` with the fixture CA, plus `extra`
/// lines (the client certificate), routed at `/`.
fn config(echo: &EchoUpstream, target: SocketAddr, extra: &str) -> String {
    config_with_routes(
        echo.addr,
        &format!(
            "[[upstreams]]\nname = \"mtls\"\ntargets = [\"{target}\"]\ntls = true\nsni = \"localhost\"\nca_file = \"{ca}\"\n{extra}\n\n[[routes]]\npath = \"/\"\nupstream = \"mtls\"\nauth = \"none\"\n",
            ca = tls_fixtures().join("test-ca.pem").display(),
        ),
    )
}

fn client_cert_lines(cert: &Path, key: &Path) -> String {
    format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"",
        cert.display(),
        key.display()
    )
}

/// (a) An upstream that requires a client certificate and gets none
/// answers its own 400, which is the upstream's answer passed through,
/// not a gateway refusal; (c) with the certificate the request passes and
/// nginx saw its subject.
#[test]
fn a_client_certificate_is_presented_to_an_upstream_that_requires_one() {
    let pki = ClientPki::new();
    let server = nginx(&pki.path("ca.pem"));
    let echo = EchoUpstream::start();

    let without = TestGateway::start(&config(&echo, server.addr, ""));
    let refused = get(without.addr, "/hello", &[]);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("No required SSL certificate was sent"),
        "{}",
        refused.text()
    );
    assert_eq!(refused.header("x-portcullis-error"), None, "not a refusal");

    let (cert, key) = pki.pair(1);
    let with = TestGateway::start(&config(&echo, server.addr, &client_cert_lines(&cert, &key)));
    let passed = get(with.addr, "/hello", &[]);
    assert_eq!(
        (passed.status, passed.text()),
        (200, "ok CN=portcullis-gateway-1".to_owned())
    );
    assert_eq!(echo.count(), 0);
}

/// (b) A server that fails the handshake when no client certificate comes
/// gives the client the contract's 502 `bad_gateway`.
#[test]
fn an_upstream_that_fails_the_handshake_for_want_of_a_certificate_is_a_502() {
    let pki = ClientPki::new();
    let server = handshake_refusing_server(&pki.path("ca.pem"));
    let echo = EchoUpstream::start();
    let gateway = TestGateway::start(&config(&echo, server.addr, ""));
    let refused = get(gateway.addr, "/hello", &[]);
    assert_refused(&refused, 502, "bad_gateway", &echo);

    // The same server answers once the certificate is presented, so the
    // 502 above is the missing certificate's.
    let (cert, key) = pki.pair(1);
    let presenting =
        TestGateway::start(&config(&echo, server.addr, &client_cert_lines(&cert, &key)));
    assert_eq!(get(presenting.addr, "/hello", &[]).status, 200);
}

/// (d) A reload that swaps the client certificate and key files takes
/// effect without a restart: nginx sees the new subject.
#[test]
fn a_reload_swaps_the_client_certificate() {
    let pki = ClientPki::new();
    let server = nginx(&pki.path("ca.pem"));
    let echo = EchoUpstream::start();
    let live = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (
        live.path().join("client.pem"),
        live.path().join("client-key.pem"),
    );
    let install = |n: u8| {
        let (from_cert, from_key) = pki.pair(n);
        std::fs::copy(from_cert, &cert).expect("copy");
        std::fs::copy(from_key, &key).expect("copy");
    };
    install(1);
    let gateway = TestGateway::start(&config(&echo, server.addr, &client_cert_lines(&cert, &key)));
    let seen = || {
        let response = get(gateway.addr, "/who", &[]);
        let connection = response.header("x-connection").map(str::to_owned);
        (response.text(), connection.expect("X-Connection"))
    };
    let (first, connection) = seen();
    assert_eq!(first, "ok CN=portcullis-gateway-1");
    // The gateway keeps the connection: without the certificate in the
    // reuse key, the request after the reload would ride it.
    assert_eq!(seen(), (first, connection.clone()), "pooled and reused");
    install(2);
    assert_eq!(gateway.reload().status, 200);
    let (after, new_connection) = seen();
    assert_eq!(after, "ok CN=portcullis-gateway-2");
    assert_ne!(new_connection, connection);
    assert_eq!(seen().0, "ok CN=portcullis-gateway-2");
}

/// The pool's health check presents the certificate too: a check that
/// went without it would get nginx's 400, mark the only target unhealthy
/// and turn every request into a 503.
#[test]
fn the_health_check_presents_the_client_certificate() {
    let pki = ClientPki::new();
    let server = nginx(&pki.path("ca.pem"));
    let echo = EchoUpstream::start();
    let (cert, key) = pki.pair(1);
    let lines = format!(
        "{}\nhealth_check = {{ path = \"/healthz\", interval = \"100ms\", unhealthy_threshold = 1 }}",
        client_cert_lines(&cert, &key)
    );
    let gateway = TestGateway::start(&config(&echo, server.addr, &lines));
    let log = server.dir.path().join("access.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Checks run about once a second; wait for two.
    while std::fs::read_to_string(&log).map_or(0, |l| l.matches("/healthz").count()) < 2 {
        assert!(Instant::now() < deadline, "no health check reached nginx");
        thread::sleep(Duration::from_millis(100));
    }
    let after = get(gateway.addr, "/hello", &[]);
    assert_eq!(
        (after.status, after.text()),
        (200, "ok CN=portcullis-gateway-1".to_owned())
    );
    let checks = std::fs::read_to_string(&log).expect("access log");
    assert!(
        checks
            .lines()
            .filter(|l| l.contains("/healthz"))
            .all(|l| l.contains("\" 200 ")),
        "{checks}"
    );
}

/// `portcullis check` on `text` (written to `dir`): the exit code and
/// stderr.
fn check(dir: &Path, text: &str) -> (Option<i32>, String, PathBuf) {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run portcullis");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, path)
}

/// (e) A client key that is not its certificate's, a certificate without
/// a key, a key without a certificate, and a client certificate without
/// TLS are each a `check` error at the file, line and column.
#[test]
fn client_certificate_mistakes_are_check_errors_at_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = tls_fixtures();
    let (cert, key_2) = (tls.join("test-cert.pem"), tls.join("test-key-2.pem"));
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    let upstream = |name: &str, tls: bool, lines: &str| {
        format!(
            "[[upstreams]]\nname = \"{name}\"\ntargets = [\"127.0.0.1:1\"]\ntls = {tls}\n{lines}\n"
        )
    };
    let text = [
        format!(
            "[tokens]\nissuer = \"i\"\naudience = \"a\"\n[[tokens.keys]]\nkid = \"v\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"{}\"\n",
            keys.join("test-eddsa.pub.pem").display()
        ),
        // Line 8.
        upstream("mismatch", true, &client_cert_lines(&cert, &key_2)),
        // Line 14.
        upstream("no-key", true, &format!("client_cert = \"{}\"", cert.display())),
        // Line 19.
        upstream("no-cert", true, "client_key = \"key.pem\""),
        // Line 24.
        upstream("plain", false, &client_cert_lines(&cert, &tls.join("test-key.pem"))),
    ]
    .concat();
    let (code, err, path) = check(dir.path(), &text);
    assert_eq!(code, Some(2), "{err}");
    let file = path.display();
    let expected = [
        format!(
            "{file}:13:14: {}: this private key does not belong to the certificate in {}",
            key_2.display(),
            cert.display()
        ),
        format!("{file}:18:15: client_cert needs client_key"),
        format!("{file}:23:14: client_key needs client_cert"),
        format!("{file}:28:15: client_cert and client_key need tls = true"),
    ];
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&*file.to_string()))
        .collect();
    assert_eq!(lines, expected, "{err}");

    // The matching pair checks clean.
    let good = [
        text.split("[[upstreams]]").next().expect("head").to_owned(),
        upstream(
            "mtls",
            true,
            &client_cert_lines(&cert, &tls.join("test-key.pem")),
        ),
    ]
    .concat();
    let (code, err, _) = check(dir.path(), &good);
    assert_eq!(code, Some(0), "{err}");
}
