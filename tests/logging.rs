//! What the gateway writes about requests: no query, header value or token
//! in any line (the engine's included), a client that leaves is no error,
//! and every refusal is logged and counted with its real outcome.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::support::binary::{Launch, RunningGateway};
use crate::support::http::Recorded;
use crate::support::{bearer, claims, get, post, sign, EchoUpstream};

/// An upstream that reads each request and closes the connection without
/// answering: the gateway answers 502 and the engine reports a failure.
fn closing_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
        }
    });
    addr
}

/// Stops the gateway once every line about the test's requests is
/// written, and returns its log, as text and as JSON. Lines leave through
/// one queue in order: once the access line of one more request (a
/// refusal that reaches no upstream) is written, every earlier line is.
/// That request's own lines are left out.
fn stop_and_read_log(gateway: RunningGateway) -> (String, Vec<Value>) {
    let last = get(gateway.addr, "/orders", &[]);
    assert_eq!(last.status, 401, "{}", last.text());
    let id = last.header("x-request-id").expect("id").to_owned();
    gateway.wait_for_access_line(&id);
    read_log(&gateway.stop(), Some(&id))
}

/// The log as text and as JSON, without the lines of request `skip`.
fn read_log(log: &str, skip: Option<&str>) -> (String, Vec<Value>) {
    let kept: Vec<&str> = log
        .lines()
        .filter(|l| skip.is_none_or(|id| !l.contains(id)))
        .collect();
    let lines = kept
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    (kept.join("\n"), lines)
}

fn access_line<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["target"] == "portcullis::access" && l["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no access line for {request_id}"))
}

/// An upstream failure used to be logged by the engine as
/// `Fail to proxy: … GET /public/reset-password?email=…&code=…`: the query
/// string (a password-reset code here) reached the log. Even at `debug`,
/// where the engine's parser quotes the raw bytes of a bad request, no
/// line carries a query, a header value or a path.
#[test]
fn failure_lines_never_carry_the_query_a_header_or_the_path() {
    let gateway = RunningGateway::standard(closing_upstream())
        .json()
        .log("debug")
        .start();
    let addr = gateway.addr;
    let failed = get(
        addr,
        "/public/reset-password?email=victim%40example.com&code=QUERYSECRET",
        &["X-Note: HEADERSECRET"],
    );
    assert_eq!(failed.status, 502);
    assert_eq!(failed.header("x-portcullis-error"), Some("bad_gateway"));
    let mut raw = TcpStream::connect(addr).expect("connect");
    raw.write_all(
        b"GET /public?code=PARSESECRET HTTP/1.1\r\nHost: t\r\nBad Header: PARSEHEADER\r\n\r\n",
    )
    .expect("write");
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 400"),
        "malformed header refused"
    );

    let (log, lines) = stop_and_read_log(gateway);
    for secret in [
        "QUERYSECRET",
        "HEADERSECRET",
        "PARSESECRET",
        "PARSEHEADER",
        "reset-password",
    ] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
    let id = failed.header("x-request-id").expect("request id");
    let failure = lines
        .iter()
        .find(|l| l["fields"]["message"] == "upstream failed" || l["message"] == "upstream failed")
        .filter(|l| l["request_id"] == id || l["fields"]["request_id"] == id)
        .unwrap_or_else(|| panic!("the failure is logged by the gateway:\n{log}"));
    assert_eq!(failure["level"], "WARN");
    assert_eq!(failure["route"], "/public");
    let access = access_line(&lines, id);
    assert_eq!(access["outcome"], "bad_gateway");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["status"], 502);
}

/// The `h2` crate quotes a malformed `:path` or `:authority` at `debug`
/// (`malformed headers: malformed path ("/x?access_token=…")`), and TLS
/// libraries trace the records they read: every crate that reads a
/// client's bytes is capped at `warn`, even when `RUST_LOG` names it.
#[test]
fn malformed_http2_and_tls_input_never_reaches_the_log() {
    let upstream = EchoUpstream::start();
    let log = "trace,h2=trace,rustls=trace,tokio_rustls=trace,pingora_core=debug,[conn]=trace";
    let served = RunningGateway::standard(upstream.addr)
        .server(&crate::support::tls_listener())
        .json()
        .log(log)
        .start();
    send_malformed_http2(served.addr.port());
    for garbage in [
        &b"GET /public?access_token=TLSPLAINSECRET HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        // A handshake record whose ClientHello is the secret itself.
        &[
            &[0x16, 0x03, 0x01, 0x00, 0x16, 0x01, 0x00, 0x00, 0x12][..],
            b"TLSHELLOSECRET....",
        ]
        .concat(),
    ] {
        let mut raw = TcpStream::connect(served.addr).expect("connect");
        raw.write_all(garbage).expect("write");
        let _ = raw.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = raw.read_to_end(&mut Vec::new());
    }
    assert_eq!(
        upstream.count(),
        0,
        "nothing malformed reached the upstream"
    );
    // A last request, refused: once its line is written, every earlier
    // line is (one queue, in order).
    let last = crate::support::curl_https(served.addr.port(), "/orders", "%{http_code}", &[]);
    assert_eq!(last, "401");
    served
        .wait_for_json(|v| v["target"] == "portcullis::access" && v["outcome"] == "token_missing");
    let log = served.stop();
    assert!(!log.is_empty(), "the gateway logged nothing at all");
    for secret in [
        "H2PATHSECRET",
        "H2AUTHSECRET",
        "H2HEADERSECRET",
        "TLSPLAINSECRET",
        "TLSHELLOSECRET",
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(lines.is_empty(), "{secret} reached the log:\n{lines:#?}");
    }
}

/// Requests `h2` refuses while decoding them, each carrying a secret: a
/// space in `:path`, a space in `:authority`, an upper-case header name.
fn send_malformed_http2(port: u16) {
    use crate::adversarial::http2::{connect_h2, read_frame, request, settings, PREFACE};
    let base = |path: &'static str, authority: &'static str| {
        vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
        ]
    };
    let mut header = base("/public", "localhost");
    header.push(("X-Upper", "H2HEADERSECRET"));
    let requests = [
        base("/public?access_token=H2PATHSECRET b", "localhost"),
        base("/public", "local host H2AUTHSECRET"),
        header,
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for fields in requests {
            let mut conn = connect_h2(port).await;
            let bytes = [PREFACE, &settings(), &request(1, &fields)].concat();
            tokio::io::AsyncWriteExt::write_all(&mut conn, &bytes)
                .await
                .expect("write");
            // Until the stream is reset or the connection ends.
            let read = async {
                while let Some((kind, ..)) = read_frame(&mut conn).await {
                    if kind == 0x3 || kind == 0x7 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
        }
    });
}

/// Requests `slow_ok` has begun to answer (only one test uses it).
static SLOW_BEGUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn slow_ok(_: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    SLOW_BEGUN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    thread::sleep(Duration::from_millis(800));
    (200, vec![], b"late".to_vec())
}

/// A client that hangs up before its answer is routine traffic, not an
/// operator's error: nothing about it is logged at ERROR.
#[test]
fn a_client_that_leaves_before_its_answer_is_not_an_error() {
    let upstream = EchoUpstream::start_with(slow_ok);
    let gateway = RunningGateway::standard(upstream.addr).json().start();
    let addr = gateway.addr;
    for i in 1..=3 {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"GET /public/slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        // Hang up once the upstream has the request, before its answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while SLOW_BEGUN.load(std::sync::atomic::Ordering::SeqCst) < i {
            assert!(
                std::time::Instant::now() < deadline,
                "request {i} never arrived"
            );
            thread::sleep(Duration::from_millis(10));
        }
        drop(stream);
    }
    gateway.wait_for_json_lines(|l| l["target"] == "portcullis::access", 3);
    // The upstream records each request once it has answered it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while upstream.count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} answered",
            upstream.count()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let (log, lines) = stop_and_read_log(gateway);
    assert!(
        lines.iter().all(|l| l["level"] != "ERROR"),
        "a client that left was logged as an error:\n{log}"
    );
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "portcullis::access")
        .collect();
    assert_eq!(access.len(), 3, "one access line per request:\n{log}");
}

/// A refusal of a verified token names whom it concerned, with the method
/// and the route, and is counted with its code.
#[test]
fn refusals_of_verified_tokens_name_the_subject_and_are_counted_by_code() {
    let upstream = EchoUpstream::start();
    let gateway = RunningGateway::standard(upstream.addr).json().start();
    let addr = gateway.addr;
    let token = sign("test-eddsa", &claims("mallory"));
    let refused = get(addr, "/admin/panel", &[&bearer(&token)]);
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("x-portcullis-error"),
        Some("insufficient_scope")
    );
    assert_eq!(upstream.count(), 0);
    let (log, lines) = stop_and_read_log(gateway);
    let access = access_line(&lines, refused.header("x-request-id").expect("id"));
    assert_eq!(access["subject"], "mallory", "{log}");
    assert_eq!(access["outcome"], "insufficient_scope");
    assert_eq!(access["route"], "/admin");
    assert_eq!(access["method"], "GET");
}

/// Startup says which build runs, where it listens, which store it uses,
/// how many routes it serves, and that the admin API is off.
#[test]
fn startup_names_the_build_listeners_store_and_routes() {
    let upstream = EchoUpstream::start();
    let gateway = RunningGateway::standard(upstream.addr).json().start();
    let addr = gateway.addr;
    let (log, lines) = stop_and_read_log(gateway);
    let start = lines
        .iter()
        .find(|l| l["message"] == "portcullis starting")
        .unwrap_or_else(|| panic!("no startup line:\n{log}"));
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(start["listen"], addr.to_string());
    assert_eq!(start["routes"], 5);
    assert!(start["store"]
        .as_str()
        .is_some_and(|s| s.starts_with("sqlite:///") && s.ends_with("/g.db")));
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the admin API is disabled"))),
        "{log}"
    );
}

/// A wrong password is the backend's answer, passed through unchanged, and
/// was once logged and counted as `ok`. Logins, logouts and sessions ended
/// by their user each get a line naming whom they concerned, as admin
/// actions do.
#[test]
fn logins_and_logouts_are_logged_with_their_real_outcome() {
    let (_backend, backend_addr) = crate::support::binary::demo_backend();
    let config = format!(
        "{}\n[login]\nupstream = \"echo\"\npath = \"/login\"\n",
        crate::support::standard_config(backend_addr)
    );
    let gateway = Launch::new(&config).json().start();
    let addr = gateway.addr;
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let wrong = post(addr, "/auth/login", &form, "username=alice&password=guess");
    assert_eq!(
        wrong.status,
        401,
        "the backend's own refusal: {}",
        wrong.text()
    );
    assert_eq!(
        wrong.header("x-portcullis-error"),
        None,
        "passed through, not the gateway's"
    );
    let right = post(
        addr,
        "/auth/login",
        &form,
        "username=alice&password=wonderland&device_name=laptop",
    );
    assert_eq!(right.status, 200, "{}", right.text());
    let access = right.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let out = post(addr, "/auth/logout", &[&bearer(&access)], "");
    assert_eq!(out.status, 200, "{}", out.text());

    let (log, lines) = stop_and_read_log(gateway);
    let id = |r: &crate::support::Response| r.header("x-request-id").expect("id").to_owned();
    let refused = access_line(&lines, &id(&wrong));
    assert_eq!(refused["outcome"], "login_refused", "{log}");
    assert_eq!(refused["route"], "_auth_login");
    assert_eq!(access_line(&lines, &id(&right))["outcome"], "ok");
    let session_line = |message: &str, request: &str| {
        lines
            .iter()
            .find(|l| {
                l["target"] == "portcullis::session"
                    && l["message"] == message
                    && l["request_id"] == request
            })
            .unwrap_or_else(|| panic!("no {message:?} line for {request}:\n{log}"))
            .clone()
    };
    assert_eq!(
        session_line("login refused by the backend", &id(&wrong))["status"],
        401
    );
    let login = session_line("login", &id(&right));
    assert_eq!(login["sub"], "alice");
    assert_eq!(
        login.get("device"),
        None,
        "a client-written label is no log field"
    );
    let logout = session_line("logout", &id(&out));
    assert_eq!(logout["sub"], "alice");
    assert_eq!(logout["sid"], login["sid"]);
}

/// Reads one request head (the gateway sends no body here); false at EOF.
fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// An upstream whose first connection sends a stray byte while idle in
/// the gateway's pool, and whose second connection is closed when its
/// second request arrives, unanswered; later connections answer 200.
fn pool_spoiling_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            thread::spawn(move || serve_spoiling(n, stream));
        }
    });
    addr
}

fn serve_spoiling(n: usize, mut stream: TcpStream) {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let mut answered = 0;
    while read_head(&mut stream) {
        if n == 1 && answered == 1 {
            return; // closed with the request unanswered
        }
        if stream.write_all(OK).is_err() {
            return;
        }
        answered += 1;
        if n == 0 {
            thread::sleep(Duration::from_millis(100));
            let _ = stream.write_all(b"X");
        }
    }
}

/// The engine's connection pool logs without a request: `failed to
/// acquire reusable stream` (an ERROR), data on an idle connection. Its
/// lines are left out, since the request goes on over a new connection;
/// a request whose pooled connection does fail is logged by the gateway
/// with its request id, method and route, so every line an operator reads
/// at warn or above names the request it concerns.
#[test]
fn upstream_pool_trouble_is_logged_with_the_request_it_concerns() {
    let gateway = RunningGateway::standard(pool_spoiling_upstream())
        .json()
        .start();
    let addr = gateway.addr;
    assert_eq!(get(addr, "/public/one", &[]).status, 200);
    // The stray byte reaches the idle pooled connection, which the engine
    // closes: the next request goes over a new one.
    thread::sleep(Duration::from_millis(600));
    assert_eq!(get(addr, "/public/two", &[]).status, 200);
    let failed = post(addr, "/public/three", &[], "");
    assert_eq!(failed.status, 502, "the reused connection was closed");
    assert_eq!(failed.header("x-portcullis-error"), Some("bad_gateway"));

    let (log, lines) = stop_and_read_log(gateway);
    let engine = |l: &&Value| {
        l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("pingora"))
    };
    let loud = |l: &&Value| l["level"] == "WARN" || l["level"] == "ERROR";
    assert!(
        !lines.iter().any(|l| engine(&l) && loud(&l)),
        "an engine line without a request at warn or above:\n{log}"
    );
    let id = failed.header("x-request-id").expect("request id");
    let failure = lines
        .iter()
        .find(|l| l["message"] == "upstream failed" && l["request_id"] == id)
        .unwrap_or_else(|| panic!("the failure names its request:\n{log}"));
    assert_eq!(failure["level"], "WARN");
    assert_eq!(failure["method"], "POST");
    assert_eq!(failure["route"], "/public");
}
