//! The network edge: what reaches the upstream when it misbehaves, who the
//! client is behind load balancers, slow clients, and reloads that must not
//! stall revocation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::support::binary::Launch;
use crate::support::gateway::{config_with_routes, free_addr};
use crate::support::*;

/// One request as a [`HangupUpstream`] read it.
#[derive(Debug, Clone)]
struct Arrival {
    connection: usize,
    method: String,
    target: String,
    request_id: String,
}

/// An upstream that answers `/warm` with a keep-alive 200 and, for any
/// other target, reads the whole request and then closes the connection
/// without a word: the request was delivered, the answer never comes.
struct HangupUpstream {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl HangupUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&arrivals);
        thread::spawn(move || {
            for (connection, stream) in listener.incoming().flatten().enumerate() {
                let seen = Arc::clone(&seen);
                thread::spawn(move || hang_up_after_reading(stream, connection, &seen));
            }
        });
        Self { addr, arrivals }
    }

    fn arrivals(&self, target: &str) -> Vec<Arrival> {
        let all = self.arrivals.lock().expect("lock");
        all.iter().filter(|a| a.target == target).cloned().collect()
    }
}

fn hang_up_after_reading(stream: TcpStream, connection: usize, seen: &Mutex<Vec<Arrival>>) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (mut length, mut request_id) = (0usize, String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-request-id" => request_id = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().expect("lock").push(Arrival {
            connection,
            method: method.to_owned(),
            target: target.to_owned(),
            request_id,
        });
        if target != "/warm" {
            return; // read completely, never answered: the connection closes
        }
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
        if writer.write_all(ok.as_bytes()).is_err() {
            return;
        }
    }
}

/// A request the upstream has read may have been acted on, so it is never
/// sent again, whatever its method (RFC 9110 §9.2.2: a retry of a request
/// that may have been processed is the client's decision, not a proxy's).
/// The upstream's keep-alive connection is warm, the case where the
/// engine's default policy retries on a fresh connection.
#[test]
fn a_request_the_upstream_read_is_never_sent_twice() {
    let upstream = HangupUpstream::start();
    let gateway = TestGateway::start(&config_with_routes(
        upstream.addr,
        r#"
[[routes]]
path = "/public"
upstream = "echo"
auth = "none"

[[routes]]
path = "/warm"
upstream = "echo"
auth = "none"

[[routes]]
path = "/"
upstream = "echo"
auth = "required"
"#,
    ));
    let token = sign("test-eddsa", &claims("alice"));
    let auth = bearer(&token);
    let cases: [(&str, &str, &[&str]); 2] = [
        ("GET", "/public/report", &[]),
        ("DELETE", "/orders/7", &[&auth]),
    ];
    for (method, target, headers) in cases {
        let mut client = crate::support::http::connect(gateway.addr);
        let mut reader = BufReader::new(client.try_clone().expect("clone"));
        let warm = crate::support::http::request("GET", "/warm", headers);
        client.write_all(warm.as_bytes()).expect("write");
        let warmed = crate::support::http::read_response(&mut reader);
        assert_eq!(warmed.status, 200, "{}", warmed.text());
        let request = crate::support::http::request(method, target, headers);
        client.write_all(request.as_bytes()).expect("write");
        let response = crate::support::http::read_response(&mut reader);
        assert_eq!(response.status, 502, "{method}: {}", response.text());
        assert_eq!(response.header("x-portcullis-error"), Some("bad_gateway"));
        assert_eq!(response.json()["error"], "bad_gateway");
        let arrived = upstream.arrivals(target);
        assert_eq!(
            arrived.len(),
            1,
            "{method} {target} reached the upstream more than once: {arrived:#?}"
        );
        assert_eq!(arrived[0].method, method);
        assert_eq!(
            Some(arrived[0].request_id.as_str()),
            response.header("x-request-id")
        );
        let warm_connection = upstream.arrivals("/warm").last().map(|a| a.connection);
        assert_eq!(
            warm_connection,
            Some(arrived[0].connection),
            "the request went on the warm connection"
        );
    }
}

/// A connection the target refused carried nothing, so the request goes to
/// the next target, for every method, a POST with its body included.
#[test]
fn a_refused_connection_fails_over_for_every_method() {
    let alive = EchoUpstream::start();
    let dead = free_addr();
    let gateway = TestGateway::start(&config_with_routes(
        alive.addr,
        &format!(
            r#"
[[upstreams]]
name = "pool"
targets = ["{dead}", "{}"]
connect_timeout = "1s"

[[routes]]
path = "/"
upstream = "pool"
auth = "none"
"#,
            alive.addr
        ),
    ));
    for i in 0..4 {
        let body = format!("order={i}");
        let response = post(gateway.addr, "/orders", &[], &body);
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let posts = alive.requests();
    assert_eq!(posts.len(), 4, "each POST arrived exactly once: {posts:#?}");
    for (i, post) in posts.iter().enumerate() {
        assert_eq!(post.method, "POST");
        assert_eq!(post.body, format!("order={i}").into_bytes());
    }
}

/// Opens the FIFO for writing once a reader waits on it (`O_NONBLOCK`
/// fails with ENXIO until then).
fn writer_when_read(fifo: &std::path::Path) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(fifo);
        if let Ok(file) = opened {
            return file;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never opened the key file"
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A SIGHUP reload that hangs on a file (here a FIFO whose writer waits)
/// must not hold up the change-log follower: requests keep being answered
/// (not 503 for a view older than `max_staleness`), and a revocation made
/// through another instance still arrives. The reload then completes.
#[test]
fn a_stalled_reload_does_not_stall_revocation() {
    let upstream = EchoUpstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shared.db");
    let store = format!(
        "[store]\nurl = \"sqlite://{}\"\nmax_staleness = \"300ms\"\n",
        db.display()
    );
    let config = format!("{store}\n{}", standard_config(upstream.addr));
    let stalled = Launch::new(&config).log("warn").start();
    let other = TestGateway::start(&config);

    let doomed = sign("test-eddsa", &claims("alice"));
    let fine = sign("test-eddsa", &claims("bob"));
    assert_eq!(
        get(stalled.addr, "/orders", &[&bearer(&doomed)]).status,
        200
    );

    // The next configuration makes /public protected and reads a key from
    // a FIFO: the reload blocks in that read until the test writes.
    let fifo = dir.path().join("slow-key.pem");
    assert!(crate::support::tool::succeeds(
        std::process::Command::new("mkfifo").arg(&fifo)
    ));
    let path = stalled.config_path();
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text
        .replace(
            "path = \"/public\"\nupstream = \"echo\"\nauth = \"none\"",
            "path = \"/public\"\nupstream = \"echo\"\nauth = \"required\"",
        )
        .replace(
            "[identity]",
            &format!(
                "[[tokens.keys]]\nkid = \"slow\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"{}\"\n\n[identity]",
                fifo.display()
            ),
        );
    std::fs::write(&path, text).expect("rewrite");
    stalled.signal("HUP");
    let mut key_writer = writer_when_read(&fifo);

    // The reload is stuck; the instance must stay fresh and answer.
    for _ in 0..20 {
        let response = get(stalled.addr, "/orders", &[&bearer(&fine)]);
        assert_eq!(response.status, 200, "{}", response.text());
        thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        get(stalled.addr, "/public", &[]).status,
        200,
        "not reloaded yet"
    );
    let revoked = send(other.admin, &{
        let body = serde_json::json!({ "token": doomed }).to_string();
        format!(
                "POST /admin/tokens/revoke HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                crate::support::gateway::ADMIN_TOKEN,
                body.len()
            )
    });
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = get(stalled.addr, "/orders", &[&bearer(&doomed)]);
        match response.status {
            401 => {
                assert_eq!(response.header("x-portcullis-error"), Some("token_revoked"));
                break;
            }
            200 => assert!(
                std::time::Instant::now() < deadline,
                "the revocation never reached the instance whose reload is stuck"
            ),
            _ => panic!("{}: {}", response.status, response.text()),
        }
        thread::sleep(std::time::Duration::from_millis(20));
    }

    // Let the reload finish: it applies.
    let key = std::fs::read(crate::support::tokens::fixtures_dir().join("test-eddsa-2.pub.pem"))
        .expect("key");
    key_writer.write_all(&key).expect("write key");
    drop(key_writer);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(stalled.addr, "/public", &[]).status != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload did not complete"
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn public_routes(upstream: SocketAddr) -> String {
    config_with_routes(
        upstream,
        r#"
[[routes]]
path = "/public"
upstream = "echo"
auth = "none"
"#,
    )
}

/// Behind trusted proxies the client is the rightmost address they did not
/// add themselves; what the client wrote left of it is not believed
/// (spoofing X-Forwarded-For, as NGINX `real_ip_recursive` and Envoy's
/// `xff_num_trusted_hops` prevent).
#[test]
fn a_trusted_proxy_names_the_client_and_only_its_own_hops_are_believed() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &public_routes(upstream.addr),
        "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
    );
    let chain = "X-Forwarded-For: 6.6.6.6, 198.51.100.7, 10.1.1.1";
    assert_eq!(get(gateway.addr, "/public/a", &[chain]).status, 200);
    let seen = upstream.only();
    assert_eq!(
        seen.values("x-forwarded-for"),
        ["198.51.100.7, 10.1.1.1, 127.0.0.1"]
    );
    upstream.clear();
    let forwarded = "Forwarded: for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https";
    assert_eq!(get(gateway.addr, "/public/b", &[forwarded]).status, 200);
    let seen = upstream.only();
    assert_eq!(seen.values("x-forwarded-for"), ["2001:db8::7, 127.0.0.1"]);
    assert!(
        seen.values("forwarded").is_empty(),
        "Forwarded is not passed on"
    );
}

#[test]
fn an_untrusted_peer_forwarding_headers_are_ignored() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &public_routes(upstream.addr),
        "trusted_proxies = [\"10.0.0.0/8\"]",
    );
    let spoofs = [
        "X-Forwarded-For: 10.0.0.5",
        "Forwarded: for=10.0.0.6",
        "X-Real-IP: 10.0.0.7",
    ];
    assert_eq!(get(gateway.addr, "/public/a", &spoofs).status, 200);
    let seen = upstream.only();
    assert_eq!(seen.values("x-forwarded-for"), ["127.0.0.1"]);
    assert!(seen.values("forwarded").is_empty());
    assert!(seen.values("x-real-ip").is_empty());
}

/// Sends `bytes` then reads everything until the gateway closes.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = crate::support::http::connect(addr);
    stream.write_all(bytes).expect("write");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => answer,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => answer,
        Err(e) => panic!("the gateway neither answered nor closed: {e}"),
    }
}

fn proxy_v2_ipv6(source: &str, port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]);
    let ip: std::net::Ipv6Addr = source.parse().expect("ip");
    header.extend_from_slice(&ip.octets());
    header.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header
}

/// PROXY protocol v1 and v2 (HAProxy's spec) on a listener that asks for it:
/// the header names the client; a connection without a valid one is
/// dropped before any HTTP is read.
#[test]
fn proxy_protocol_headers_name_the_client_and_bad_ones_drop_the_connection() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &public_routes(upstream.addr),
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let request = "GET /public/a HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n";

    let v1 = format!("PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n{request}");
    let answer = exchange(gateway.addr, v1.as_bytes());
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.only().values("x-forwarded-for"), ["203.0.113.7"]);
    upstream.clear();

    let mut v2 = proxy_v2_ipv6("2001:db8::7", 4711);
    v2.extend_from_slice(request.as_bytes());
    let answer = exchange(gateway.addr, &v2);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.only().values("x-forwarded-for"), ["2001:db8::7"]);
    upstream.clear();

    let bad: [Vec<u8>; 4] = [
        request.as_bytes().to_vec(),
        format!("PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n{request}").into_bytes(),
        format!("PROXY TCP6 203.0.113.7 127.0.0.1 5555 80\r\n{request}").into_bytes(),
        [
            &b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04\x01\x02\x03\x04"[..],
            request.as_bytes(),
        ]
        .concat(),
    ];
    for bytes in bad {
        let answer = exchange(gateway.addr, &bytes);
        assert!(
            answer.is_empty(),
            "{:?} was answered: {}",
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(
        upstream.count(),
        0,
        "nothing without a valid header went upstream"
    );
}

/// A PROXY header names any address its sender likes: from a peer that is
/// not a listed balancer it is refused (the connection dropped), and a
/// listener that asks for it without any trusted balancer does not load.
#[test]
fn proxy_protocol_is_believed_only_from_trusted_proxies() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &public_routes(upstream.addr),
        "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]",
    );
    let request = "GET /public/a HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n";
    let spoofed = format!("PROXY TCP4 10.0.0.5 127.0.0.1 5555 80\r\n{request}");
    let answer = exchange(gateway.addr, spoofed.as_bytes());
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(upstream.count(), 0);

    let config = crate::support::gateway::config_with_routes(
        upstream.addr,
        "[server]\nproxy_protocol = true\n\n[[routes]]\npath = \"/\"\nupstream = \"echo\"\nauth = \"none\"\n",
    );
    let error = match portcullis::config::load_str(
        &config.replace("{fixtures}", "/nonexistent"),
        std::path::Path::new("p.toml"),
    ) {
        Ok(_) => panic!("proxy_protocol without trusted_proxies must not load"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("server.proxy_protocol needs server.trusted_proxies"),
        "{error}"
    );
}

/// Slowloris: a client that sends its header one line at a time, never
/// finishing, is cut off after `header_read_timeout` (the engine's own
/// timeout restarts with each byte), while another client is served.
#[test]
fn a_client_dribbling_its_header_is_cut_off_while_others_are_served() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &public_routes(upstream.addr),
        "header_read_timeout = \"1s\"\nkeepalive_timeout = \"60s\"",
    );
    let mut slow = crate::support::http::connect(gateway.addr);
    slow.write_all(b"GET /public/slow HTTP/1.1\r\nHost: gateway.test\r\n")
        .expect("write");
    let mut dripper = slow.try_clone().expect("clone");
    let drip = thread::spawn(move || {
        for _ in 0..100 {
            thread::sleep(std::time::Duration::from_millis(100));
            if dripper.write_all(b"X-Drip: 1\r\n").is_err() {
                return;
            }
        }
    });
    assert_eq!(get(gateway.addr, "/public/fast", &[]).status, 200);
    let mut reader = BufReader::new(slow.try_clone().expect("clone"));
    let answer = crate::support::http::read_response(&mut reader);
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(answer.header("x-portcullis-error"), Some("request_timeout"));
    assert_eq!(answer.header("connection"), Some("close"));
    let _ = slow.shutdown(std::net::Shutdown::Both);
    drip.join().expect("dripper");
    let seen: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(seen, ["/public/fast"]);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
    let upstream = EchoUpstream::start();
    let gateway =
        TestGateway::start_with_server(&public_routes(upstream.addr), "keepalive_timeout = \"1s\"");
    let mut client = crate::support::http::connect(gateway.addr);
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let request = crate::support::http::request("GET", "/public/a", &[]);
    client.write_all(request.as_bytes()).expect("write");
    let response = crate::support::http::read_response(&mut reader);
    assert_eq!(response.status, 200);
    assert_ne!(response.header("connection"), Some("close"));
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

/// On a TLS listener the PROXY header comes before the handshake (curl's
/// `--haproxy-protocol` sends v1); without it the connection is dropped.
#[test]
fn proxy_protocol_on_a_tls_listener_comes_before_the_handshake() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &public_routes(upstream.addr),
        &format!(
            "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n{}",
            tls_listener()
        ),
    );
    let curl = |extra: &[&str]| curl_https(gateway.addr.port(), "/public/a", "%{http_code}", extra);
    assert_eq!(curl(&["--haproxy-protocol"]), "200");
    assert_eq!(upstream.only().values("x-forwarded-proto"), ["https"]);
    assert_eq!(curl(&[]), "000", "no PROXY header: no handshake, no answer");
    assert_eq!(upstream.count(), 1);
}
