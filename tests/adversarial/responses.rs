//! What an upstream may send back: a `Set-Cookie` for the gateway's own
//! refresh cookie (session fixation through a page behind the gateway) is
//! removed from routes and from the login backend's answers, and an
//! HTTP/1.0 upstream's answer reaches an HTTP/1.1 client as HTTP/1.1,
//! correctly framed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::support::gateway::config_with_routes;
use crate::support::http::{connect, read_response, Recorded};
use crate::support::*;

const PLANTED: &str = "Set-Cookie: portcullis_refresh=prt_attacker; Path=/auth; HttpOnly";

fn planting(_: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let lines = vec![
        PLANTED.to_owned(),
        "Set-Cookie: theme=dark".to_owned(),
        "Set-Cookie:  portcullis_refresh =x".to_owned(),
        // A nameless cookie whose value the browser sends back as the
        // refresh cookie (RFC 6265bis §5.6).
        "Set-Cookie: =portcullis_refresh=prt_attacker; Path=/auth/token".to_owned(),
    ];
    (200, lines, b"page".to_vec())
}

fn planting_login(_: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let lines = vec![PLANTED.to_owned(), "Set-Cookie: legacy=1".to_owned()];
    (401, lines, b"wrong password".to_vec())
}

fn cookies(response: &Response) -> Vec<&str> {
    response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.as_str())
        .collect()
}

/// A route's upstream and the login backend cannot set the refresh cookie
/// in the client's browser: those `Set-Cookie` lines are removed (and
/// counted), the others pass.
#[test]
fn upstreams_cannot_plant_the_refresh_cookie() {
    let upstream = EchoUpstream::start_with(planting);
    let login = EchoUpstream::start_with(planting_login);
    let config = format!(
        "{}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n\n[sessions]\ncookie = true\n",
        standard_config(upstream.addr),
        login.addr
    );
    let gateway = TestGateway::start(&config);
    let before = portcullis::metrics::METRICS.planted_cookies_stripped.get();

    let page = get(gateway.addr, "/public", &[]);
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(cookies(&page), ["theme=dark"]);

    let refused = post(
        gateway.addr,
        "/auth/login",
        &["Content-Type: application/x-www-form-urlencoded"],
        "username=alice&password=wrong",
    );
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(cookies(&refused), ["legacy=1"]);
    assert_eq!(refused.text(), "wrong password");

    let after = portcullis::metrics::METRICS.planted_cookies_stripped.get();
    assert!(after >= before + 4, "counted: {before} -> {after}");
}

/// An upstream that speaks HTTP/1.0 (Python's `http.server`): it answers
/// with `HTTP/1.0`, no length, and closes.
fn http10_upstream(with_length: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = "hello from 1.0";
            let length = match with_length {
                true => format!("Content-Length: {}\r\n", body.len()),
                false => String::new(),
            };
            let answer =
                format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n{length}\r\n{body}");
            let mut stream = stream;
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    addr
}

fn public_route_to(addr: SocketAddr) -> TestGateway {
    TestGateway::start(&config_with_routes(
        addr,
        "[[routes]]\npath = \"/\"\nupstream = \"echo\"\nauth = \"none\"\n",
    ))
}

/// RFC 9110 §2.5 and RFC 9112 §2.3: an intermediary sends its own HTTP
/// version. The answer of an HTTP/1.0 upstream goes to an HTTP/1.1 client
/// as `HTTP/1.1`, framed (its close-delimited body re-framed), and the
/// client's connection stays usable for the next request.
#[test]
fn an_http10_upstream_is_answered_as_http11() {
    for with_length in [false, true] {
        eprintln!("case content-length: {with_length}");
        let gateway = public_route_to(http10_upstream(with_length));
        let stream = connect(gateway.addr);
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        for _ in 0..2 {
            writer
                .write_all(b"GET /x HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
                .expect("write");
            let head = reader.fill_buf().expect("answer").to_vec();
            assert!(
                head.starts_with(b"HTTP/1.1 200 "),
                "{}",
                String::from_utf8_lossy(&head)
            );
            let response = read_response(&mut reader);
            assert_eq!(response.text(), "hello from 1.0");
            assert_ne!(response.header("connection"), Some("close"));
        }
    }
}

/// An HTTP/1.0 client cannot read chunked (RFC 9112 §6.1): the
/// close-delimited answer of an HTTP/1.0 upstream reaches it as HTTP/1.1
/// without `Transfer-Encoding`, ended by closing the connection.
#[test]
fn an_http10_client_gets_a_close_delimited_answer() {
    let gateway = public_route_to(http10_upstream(false));
    let mut stream = connect(gateway.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /x HTTP/1.0\r\nHost: gateway.test\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read until close");
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 "), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello from 1.0"), "{text}");
}

fn hinting(_: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    (
        200,
        vec!["X-Token-Expires-In: 0".to_owned()],
        b"page".to_vec(),
    )
}

/// Only the gateway tells a client when to refresh: an upstream's
/// `X-Token-Expires-In: 0` would make `portcullis-client` refresh after
/// every answer. It is removed; a token far from its end gets no hint.
#[test]
fn an_upstream_cannot_tell_clients_to_refresh() {
    let upstream = EchoUpstream::start_with(hinting);
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let token = bearer(&sign("test-eddsa", &claims("alice")));
    let page = get(gateway.addr, "/api/x", &[&token]);
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.header("x-token-expires-in"), None);
    let public = get(gateway.addr, "/public", &[]);
    assert_eq!(public.header("x-token-expires-in"), None);
}
