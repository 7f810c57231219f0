//! Framing rows of issue #20: header names that fold to framing, routing
//! or forwarding headers (`Transfer_Encoding`), `Host` ports out of range,
//! chunked bodies already malformed in the bytes sent with the head, and
//! `Expect: 100-continue`. Refused rows are checked against an upstream
//! that records every byte and connection, not only complete requests, so
//! "nothing reached the upstream" includes a head without its body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{host, public_and_admin, raw, run, Case};
use crate::support::http::{connect, read_response};
use crate::support::*;

/// An upstream that never answers and records each connection's bytes,
/// and whether the gateway closed it.
pub(super) struct RawUpstream {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<Arc<Mutex<Seen>>>>>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct Seen {
    pub bytes: Vec<u8>,
    pub closed: bool,
}

impl RawUpstream {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(Mutex::new(Vec::new()));
        let all = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = Arc::new(Mutex::new(Seen::default()));
                all.lock().expect("lock").push(Arc::clone(&seen));
                std::thread::spawn(move || record(stream, &seen));
            }
        });
        Self { addr, connections }
    }

    pub fn seen(&self) -> Vec<Seen> {
        let all = self.connections.lock().expect("lock");
        all.iter()
            .map(|s| s.lock().expect("lock").clone())
            .collect()
    }

    /// Waits until some connection has received at least `bytes` bytes.
    pub fn wait_for(&self, bytes: usize) -> Seen {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Some(seen) = self.seen().into_iter().find(|s| s.bytes.len() >= bytes) {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the upstream never got {bytes} bytes: {:?}", self.seen());
    }
}

fn record(mut stream: TcpStream, seen: &Mutex<Seen>) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => seen
                .lock()
                .expect("lock")
                .bytes
                .extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    seen.lock().expect("lock").closed = true;
}

/// The contract's refusal with `Connection: close`, and not one byte or
/// connection at the upstream.
#[track_caller]
fn assert_refused_closing(response: &Response, status: u16, code: &str, upstream: &RawUpstream) {
    assert_eq!(response.status, status, "status; body: {}", response.text());
    assert_eq!(response.header("x-portcullis-error"), Some(code));
    crate::support::assert_challenge(response, code);
    assert_eq!(response.json()["error"], code);
    assert_eq!(response.header("connection"), Some("close"));
    std::thread::sleep(Duration::from_millis(50));
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

/// `(name, chunked body sent with its head)`.
fn malformed_bodies() -> Vec<(&'static str, &'static str)> {
    vec![
        // Item 2: a size line without a digit was read as size 0.
        ("size_empty", "\r\nhello\r\n0\r\n\r\n"),
        ("size_extension_only", ";x\r\nhello\r\n0\r\n\r\n"),
        ("size_space_only", " \r\nhello\r\n0\r\n\r\n"),
        ("size_extension_bare_lf", "5;a\nb\r\nhello\r\n0\r\n\r\n"),
        // Item 3: caught by the engine only after the head went upstream.
        ("size_bare_lf", "5\nhello\r\n0\r\n\r\n"),
        ("size_17_digits", "00000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("size_overflow", "FFFFFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n"),
        ("size_16_f", "ffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("size_0x", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("size_minus", "-5\r\nhello\r\n0\r\n\r\n"),
        ("size_plus", "+5\r\nhello\r\n0\r\n\r\n"),
        ("size_g", "g\r\nhello\r\n0\r\n\r\n"),
        ("size_cr_without_lf", "5\rhello\r\n0\r\n\r\n"),
        ("data_overrun", "5\r\nhelloXX\r\n0\r\n\r\n"),
        ("no_crlf_after_data", "5\r\nhello0\r\n\r\n"),
        ("data_bare_lf", "5\r\nhello\n0\r\n\r\n"),
        ("data_bare_cr", "5\r\nhello\r0\r\n\r\n"),
        ("last_chunk_bare_lf", "5\r\nhello\r\n0\n\n"),
        ("final_bare_lf", "5\r\nhello\r\n0\r\n\n"),
        ("trailer_bare_lf", "5\r\nhello\r\n0\r\nX-A: b\n\r\n"),
        ("trailer_bare_cr", "5\r\nhello\r\n0\r\nX-A: b\rc\r\n\r\n"),
        (
            "good_chunk_then_bad_size",
            "5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ]
}

/// RFC 9112 §7.1: framing the edge can already see is malformed, in the
/// bytes that came with the head, is refused before the head is forwarded
/// (pingora writes the head upstream before it reads the body), with
/// `Connection: close`; the upstream gets no connection at all.
#[test]
fn chunked_bodies_malformed_in_the_first_bytes_never_reach_the_upstream() {
    let upstream = RawUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    for (name, body) in malformed_bodies() {
        eprintln!("case {name}");
        let request = format!(
            "{}Transfer-Encoding: chunked\r\n\r\n{body}",
            host("POST /public/x HTTP/1.1")
        );
        let response = raw(gateway.addr, request.as_bytes());
        assert_refused_closing(&response, 400, "invalid_request", &upstream);
    }
}

/// What can still reach the upstream: a chunked body whose malformed
/// part arrives after the head was forwarded. The upstream has the head
/// and the chunks before it, then its connection is closed without the
/// last chunk, so it never has a complete request; the client gets the
/// contract's 400 with `Connection: close`, and a request pipelined
/// behind it is never forwarded.
#[test]
fn a_chunk_found_malformed_later_cuts_the_upstream_off() {
    // `zz` the engine would refuse too; an empty size it read as 0, and
    // completed the request with the client's body cut short.
    for bad_size in ["zz\r\n", "\r\n", ";x\r\n"] {
        eprintln!("case {bad_size:?}");
        a_late_malformed_size_line(bad_size);
    }
}

fn a_late_malformed_size_line(bad_size: &str) {
    let upstream = RawUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let mut stream = connect(gateway.addr);
    let head = format!(
        "{}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        host("POST /public/late HTTP/1.1")
    );
    stream.write_all(head.as_bytes()).expect("write");
    upstream.wait_for(b"hello".len());
    let next = host("GET /public/next HTTP/1.1");
    let rest = format!("{bad_size}hello\r\n0\r\n\r\n{next}\r\n");
    stream.write_all(rest.as_bytes()).expect("write");
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader);
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(
        response.header("x-portcullis-error"),
        Some("invalid_request")
    );
    assert_eq!(response.header("connection"), Some("close"));
    let mut after = Vec::new();
    let _ = reader.read_to_end(&mut after);
    assert!(after.is_empty(), "nothing more is answered: {after:?}");
    let until = Instant::now() + Duration::from_secs(5);
    while !upstream.seen().iter().all(|s| s.closed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].closed, "the upstream connection is cut");
    let text = String::from_utf8_lossy(&seen[0].bytes);
    assert!(text.starts_with("POST /public/late HTTP/1.1\r\n"), "{text}");
    assert!(!text.contains("\r\n0\r\n\r\n"), "never completed: {text:?}");
    assert!(!text.contains("/public/next"), "{text}");
}

/// Issue #20's smuggling request: against a backend that folds `_` into
/// `-`, `Transfer_Encoding: chunked` beside `Content-Length` made the body
/// a second request, run as root.
fn smuggling_request() -> String {
    let smuggled =
        "GET /admin/x HTTP/1.1\r\nHost: gw\r\nX-User-Id: root\r\nX-User-Roles: admin\r\n\r\n";
    let body = format!("0\r\n\r\n{smuggled}");
    format!(
        "POST /public/a HTTP/1.1\r\nHost: gw\r\nTransfer_Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn underscore_cases() -> Vec<Case> {
    let post = |line: &str| {
        format!(
            "{}{line}\r\nContent-Length: 5\r\n\r\nhello",
            host("POST /public HTTP/1.1")
        )
    };
    let get = |line: &str| format!("{}{line}\r\n\r\n", host("GET /public HTTP/1.1"));
    let refused = |name, request| (name, request, 400, "invalid_request");
    let upgrade = format!(
        "{}Upgrade: websocket\r\nConnection: upgrade\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
        host("POST /public HTTP/1.1")
    );
    vec![
        refused("issue_20_smuggling", smuggling_request()),
        // The engine alone would read this body, an empty size as 0.
        refused("upgrade_with_chunked_body", upgrade),
        // After a 101 the connection would speak HTTP/2 straight to the
        // backend, past every route's policy (h2c smuggling).
        refused(
            "upgrade_h2c",
            get("Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings"),
        ),
        refused("upgrade_websocket_and_h2c", get("Upgrade: websocket, h2c\r\nConnection: upgrade")),
        refused("upgrade_twice", get("Upgrade: websocket\r\nUpgrade: websocket\r\nConnection: upgrade")),
        refused("upgrade_tls", get("Upgrade: TLS/1.2\r\nConnection: upgrade")),
        refused("transfer_encoding", post("Transfer_Encoding: chunked")),
        refused(
            "transfer_encoding_lower",
            post("transfer_encoding: chunked"),
        ),
        refused(
            "transfer_encoding_upper",
            post("TRANSFER_ENCODING: chunked"),
        ),
        refused(
            "transfer_encoding_mixed",
            post("Transfer-Encoding_x: 1\r\nTransfer_encoding: chunked"),
        ),
        refused("content_length", post("Content_Length: 0")),
        refused("content_length_on_get", get("Content_Length: 5")),
        refused(
            "content_length_half",
            get("Content-length_: 5\r\nContent_Length: 5"),
        ),
        refused("keep_alive", get("Keep_Alive: timeout=5")),
        refused("proxy_connection", get("Proxy_Connection: keep-alive")),
        refused(
            "proxy_authorization",
            get("Proxy_Authorization: Basic eDp5"),
        ),
        refused("x_forwarded_port", get("X_Forwarded_Port: 1")),
        refused("x_forwarded_prefix", get("x_forwarded_prefix: /admin")),
        refused(
            "host_port_zero",
            "GET /public HTTP/1.1\r\nHost: gateway.test:0\r\n\r\n".into(),
        ),
        refused(
            "host_port_65536",
            "GET /public HTTP/1.1\r\nHost: gateway.test:65536\r\n\r\n".into(),
        ),
        refused(
            "host_port_99999",
            "GET /public HTTP/1.1\r\nHost: gateway.test:99999\r\n\r\n".into(),
        ),
        refused(
            "host_ipv6_port_zero",
            "GET /public HTTP/1.1\r\nHost: [::1]:0\r\n\r\n".into(),
        ),
        refused(
            "host_ipv6_port_65536",
            "GET /public HTTP/1.1\r\nHost: [::1]:65536\r\n\r\n".into(),
        ),
    ]
}

/// A header name that folds (any case, `_` for `-`) to a framing, routing
/// or forwarding header is refused before anything goes upstream, and so
/// are a `Host` port outside 1–65535 (RFC 9110 §4.2.1) and an upgrade
/// with a chunked body, which the edge would not follow.
#[test]
fn names_folding_to_framing_headers_and_bad_ports_are_refused() {
    let (upstream, gateway) = public_and_admin();
    run(&gateway, &upstream, &underscore_cases());
    // Whatever the setting says.
    for setting in ["allow", "drop", "reject"] {
        let upstream = EchoUpstream::start();
        let line = format!("headers_with_underscores = \"{setting}\"");
        let gateway = TestGateway::start_with_server(&standard_config(upstream.addr), &line);
        let response = raw(gateway.addr, smuggling_request().as_bytes());
        eprintln!("setting {setting}");
        assert_refused(&response, 400, "invalid_request", &upstream);
    }
}

/// The same smuggling request never opens a connection upstream.
#[test]
fn the_smuggling_request_sends_no_byte_upstream() {
    let upstream = RawUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let response = raw(gateway.addr, smuggling_request().as_bytes());
    assert_refused_closing(&response, 400, "invalid_request", &upstream);
}

/// A port in range still passes.
#[test]
fn host_ports_in_range_pass() {
    let (upstream, gateway) = public_and_admin();
    for port in ["1", "8080", "65535"] {
        let request = format!("GET /public HTTP/1.1\r\nHost: gateway.test:{port}\r\n\r\n");
        assert_eq!(raw(gateway.addr, request.as_bytes()).status, 200, "{port}");
    }
    assert_eq!(upstream.count(), 3);
}

/// `[server] headers_with_underscores`: other names with `_` are dropped
/// (the default, as nginx), refused, or forwarded.
#[test]
fn other_underscore_names_follow_the_setting() {
    let send_custom = |gateway: &TestGateway| get(gateway.addr, "/public", &["X_Custom: v"]);
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let response = send_custom(&gateway);
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(upstream.only().folded("x-custom").is_empty(), "dropped");

    let upstream = EchoUpstream::start();
    let config = standard_config(upstream.addr);
    let gateway = TestGateway::start_with_server(&config, "headers_with_underscores = \"reject\"");
    assert_refused(&send_custom(&gateway), 400, "invalid_request", &upstream);

    let upstream = EchoUpstream::start();
    let config = standard_config(upstream.addr);
    let gateway = TestGateway::start_with_server(&config, "headers_with_underscores = \"allow\"");
    assert_eq!(send_custom(&gateway).status, 200);
    assert_eq!(upstream.only().values("x_custom"), ["v"]);
}

/// Over HTTP/2 the edge's head check does not run; the proxy refuses the
/// same names before anything goes upstream.
#[test]
fn http2_refuses_names_folding_to_framing_headers() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(&standard_config(upstream.addr), &tls_listener());
    for line in [
        "transfer_encoding: chunked",
        "content_length: 5",
        "x_forwarded_port: 1",
    ] {
        let answer = curl_https(
            gateway.addr.port(),
            "/public",
            "%{http_version} %{http_code} %header{x-portcullis-error}",
            &["--http2", "-H", line],
        );
        assert_eq!(answer, "2 400 invalid_request", "{line}");
        assert_eq!(upstream.count(), 0, "{line}");
    }
    let answer = curl_https(
        gateway.addr.port(),
        "/public",
        "%{http_version} %{http_code}",
        &["--http2", "-H", "x_custom: v"],
    );
    assert_eq!(answer, "2 200");
    assert!(upstream.only().folded("x-custom").is_empty());
}

/// An HTTP/2 `:authority` meets the same port rule as an HTTP/1.1 `Host`.
#[test]
fn http2_authorities_with_a_port_out_of_range_are_refused() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(&standard_config(upstream.addr), &tls_listener());
    for host in ["gateway.test:0", "gateway.test:65536", "gateway.test:99999"] {
        let answer = curl_https(
            gateway.addr.port(),
            "/public",
            "%{http_version} %{http_code} %header{x-portcullis-error}",
            &["--http2", "-H", &format!("Host: {host}")],
        );
        assert_eq!(answer, "2 400 invalid_request", "{host}");
        assert_eq!(upstream.count(), 0, "{host}");
    }
    let answer = curl_https(
        gateway.addr.port(),
        "/public",
        "%{http_version} %{http_code}",
        &["--http2", "-H", "Host: gateway.test:65535"],
    );
    assert_eq!(answer, "2 200");
}

/// Reads until the end of one response head, or `None` after `wait`.
fn head_within(stream: &TcpStream, wait: Duration) -> Option<String> {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => head.push_str(&line),
            _ => return None,
        }
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// RFC 9110 §10.1.1: a client that sent `Expect: 100-continue` gets
/// `100 Continue` within a second once the request is admitted (the
/// gateway sends it when the body is first read), then the answer.
#[test]
fn expect_continue_gets_100_within_a_second() {
    let (upstream, gateway) = public_and_admin();
    let mut stream = connect(gateway.addr);
    let head = format!(
        "{}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        host("POST /public/upload HTTP/1.1")
    );
    stream.write_all(head.as_bytes()).expect("write");
    let interim = head_within(&stream, Duration::from_secs(1)).expect("100 within 1 s");
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").expect("body");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let response = read_response(&mut BufReader::new(stream));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.only().body, b"hello");
}

/// A request refused before its body is read gets the final answer at
/// once, with no `100 Continue` first, and sends no body.
#[test]
fn expect_continue_on_a_refused_request_gets_the_final_answer() {
    let (upstream, gateway) = public_and_admin();
    let stream = connect(gateway.addr);
    let head = format!(
        "{}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        host("POST /admin/upload HTTP/1.1")
    );
    (&stream).write_all(head.as_bytes()).expect("write");
    let answer = head_within(&stream, Duration::from_secs(1)).expect("answer within 1 s");
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert_eq!(upstream.count(), 0);
}
