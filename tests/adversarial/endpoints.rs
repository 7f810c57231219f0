//! Attacks on the gateway's own endpoints and on the credentials a client
//! hands it: bodies announced too large or sent too slowly (the endpoints
//! and the admin API), cookie-mode requests no browser sends, and the
//! gateway's tokens in places a backend would see them (a query name, an
//! `Authorization` on a public route).

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::gateway::ADMIN_TOKEN;
use crate::support::http::{connect, read_response, Recorded};
use crate::support::*;

const FORM: &str = "Content-Type: application/x-www-form-urlencoded";
const APP: &str = "https://app.example.com";

/// A head announcing a 100 MB body, and no body: the answer must not wait
/// for it.
fn announced_too_large(addr: SocketAddr, target: &str, extra: &str) -> (Response, Duration) {
    let started = Instant::now();
    let mut stream = connect(addr);
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: gateway.test\r\n{extra}Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write head");
    let response = read_response(&mut BufReader::new(stream));
    (response, started.elapsed())
}

/// Every gateway endpoint that takes a body, and the admin API, refuse a
/// body announced above their 64 KiB limit at once (the engine would
/// otherwise wait up to a minute for bytes that never come).
#[test]
fn bodies_announced_too_large_are_refused_at_once() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let admin = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let cases = [
        (gateway.addr, "/auth/token", ""),
        (gateway.addr, "/auth/login", ""),
        (gateway.addr, "/auth/logout", ""),
        (gateway.admin, "/admin/tokens/revoke", admin.as_str()),
        (gateway.admin, "/admin/sessions", admin.as_str()),
        (gateway.admin, "/admin/reload", ""),
    ];
    for (addr, target, extra) in cases {
        eprintln!("case {target}");
        let (response, took) = announced_too_large(addr, target, extra);
        assert_refused(&response, 413, "request_too_large", &upstream);
        assert!(took < Duration::from_secs(5), "{target} took {took:?}");
    }
}

/// Writes `head`, then one body byte every 200 ms (for at most 10 s) on
/// another thread, and reads the answer.
fn trickle(addr: SocketAddr, head: &str) -> (Response, Duration) {
    let started = Instant::now();
    let mut stream = connect(addr);
    stream.write_all(head.as_bytes()).expect("write head");
    let mut writer = stream.try_clone().expect("clone");
    std::thread::spawn(move || {
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            if writer.write_all(b"a").is_err() {
                return;
            }
        }
    });
    let response = read_response(&mut BufReader::new(stream));
    (response, started.elapsed())
}

/// A body that trickles in (5 bytes a second) meets the head's deadline
/// (`header_read_timeout`, 2 s here) as a whole, on the endpoints and the
/// admin API: 408 `request_timeout`, nothing forwarded.
#[test]
fn a_trickling_body_meets_the_head_deadline() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &standard_config(upstream.addr),
        "header_read_timeout = \"2s\"",
    );
    let admin = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    for (addr, target, extra) in [
        (gateway.addr, "/auth/token", ""),
        (gateway.admin, "/admin/tokens/revoke", admin.as_str()),
    ] {
        eprintln!("case {target}");
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: gateway.test\r\n{extra}{FORM}\r\nContent-Length: 1000\r\n\r\n"
        );
        let (response, took) = trickle(addr, &head);
        assert_refused(&response, 408, "request_timeout", &upstream);
        assert!(took < Duration::from_secs(9), "{target} took {took:?}");
    }
}

/// A body proxied to a route that trickles in (5 bytes a second) is cut
/// off once it falls below 500 bytes a second after the head's deadline
/// (2 s here): 408 `request_timeout`, and the upstream, which saw the head,
/// never gets a complete request.
#[test]
fn a_trickling_body_to_a_route_is_cut_off() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &standard_config(upstream.addr),
        "header_read_timeout = \"2s\"",
    );
    let head = "POST /public HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 1000\r\n\r\n";
    let (response, took) = trickle(gateway.addr, head);
    assert_refused(&response, 408, "request_timeout", &upstream);
    assert!(took < Duration::from_secs(9), "took {took:?}");
}

fn login_backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    if String::from_utf8_lossy(&request.body).contains("username=alice&password=secret") {
        return (200, vec!["X-Auth-Subject: alice".into()], b"ok".to_vec());
    }
    (401, Vec::new(), b"wrong password".to_vec())
}

/// A gateway in cookie mode with `APP` allowed, and its login backend.
fn cookie_gateway() -> (EchoUpstream, EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let login = EchoUpstream::start_with(login_backend);
    let config = format!(
        "{}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n\n[sessions]\ncookie = true\nallowed_origins = [\"{APP}\"]\n",
        standard_config(upstream.addr),
        login.addr
    );
    let gateway = TestGateway::start(&config);
    (upstream, login, gateway)
}

/// Cookie mode where no browser goes: two `Origin` headers, a foreign
/// `Origin` that `Sec-Fetch-Site: same-origin` tries to vouch for, and a
/// browser (any `Origin` or `Sec-Fetch-*`) presenting a refresh token in the
/// body, which a browser keeps in its `HttpOnly` cookie only. The token
/// refused stays valid: nothing was rotated.
#[test]
fn cookie_mode_refuses_what_no_browser_sends() {
    let (upstream, login, gateway) = cookie_gateway();
    let cli = post(
        gateway.addr,
        "/auth/login",
        &[FORM],
        "username=alice&password=secret",
    );
    assert_eq!(cli.status, 200, "{}", cli.text());
    let token = cli.json()["refresh_token"]
        .as_str()
        .expect("refresh token in the body")
        .to_owned();
    let cookie = format!("Cookie: portcullis_refresh={token}");
    let grant = "grant_type=refresh_token";
    let in_body = format!("grant_type=refresh_token&refresh_token={token}");
    let origin = format!("Origin: {APP}");
    let cases: [(&str, Vec<&str>, &str, u16, &str); 6] = [
        (
            "two_origins",
            vec![&origin, &origin, &cookie],
            grant,
            403,
            "cross_site_request",
        ),
        (
            "foreign_origin_same_origin_fetch",
            vec![
                "Origin: https://evil.example",
                "Sec-Fetch-Site: same-origin",
                &cookie,
            ],
            grant,
            403,
            "cross_site_request",
        ),
        (
            "browser_body_token",
            vec![&origin],
            &in_body,
            400,
            "invalid_request",
        ),
        (
            "browser_body_token_same_origin",
            vec![
                "Origin: https://gateway.test",
                "Sec-Fetch-Site: same-origin",
            ],
            &in_body,
            400,
            "invalid_request",
        ),
        (
            "fetch_metadata_body_token",
            vec!["Sec-Fetch-Mode: cors", "X-Portcullis-CSRF: 1"],
            &in_body,
            400,
            "invalid_request",
        ),
        (
            "browser_body_and_cookie",
            vec![&origin, &cookie],
            &in_body,
            400,
            "invalid_request",
        ),
    ];
    for (name, headers, body, status, code) in cases {
        eprintln!("case {name}");
        let mut all = vec![FORM];
        all.extend(headers);
        let response = post(gateway.addr, "/auth/token", &all, body);
        assert_refused(&response, status, code, &upstream);
    }
    let twice = post(
        gateway.addr,
        "/auth/login",
        &[FORM, &origin, &origin],
        "username=alice&password=secret",
    );
    assert_refused(&twice, 403, "cross_site_request", &upstream);
    assert_eq!(login.count(), 1, "only the first login reached the backend");
    let still_valid = post(gateway.addr, "/auth/token", &[FORM], &in_body);
    assert_eq!(still_valid.status, 200, "{}", still_valid.text());
}

/// Query names a backend might read as one of the gateway's credentials:
/// `refresh_token` like `access_token`, a bracketed member
/// (`a[access_token]`) and fullwidth letters (NFKC folds `ａ` to `a`).
#[test]
fn credential_query_names_are_refused_in_every_spelling() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    for target in [
        "/public?refresh_token=abc",
        "/public?x=1&Refresh.Token=abc",
        "/public?x=%26refresh_token%3Dabc",
        "/public?a[access_token]=abc",
        "/public?access[token=abc",
        "/public?refresh]token=abc",
        "/public?a%5Baccess_token%5D=abc",
        "/public?a[b][refresh_token]=abc",
        "/public?%EF%BD%81ccess_token=abc",
        "/public?%EF%BC%A1%EF%BC%A3%EF%BC%A3%EF%BC%A5%EF%BC%B3%EF%BC%B3_token=abc",
        "/auth/token?refresh_token=abc",
    ] {
        upstream.clear();
        eprintln!("case {target}");
        assert_refused(
            &get(gateway.addr, target, &[]),
            400,
            "invalid_request",
            &upstream,
        );
    }
    assert_eq!(
        get(gateway.addr, "/public?a[x]=1&refresh=2", &[]).status,
        200
    );
}

/// `Bearer<TAB>token` is a malformed bearer credential (RFC 6750 §2.1
/// allows spaces only), refused like the other malformed schemes.
#[test]
fn a_tab_after_bearer_is_invalid_request() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let token = sign("test-eddsa", &claims("alice"));
    for target in ["/orders", "/maybe"] {
        upstream.clear();
        eprintln!("case {target}");
        let line = format!("Authorization: Bearer\t{token}");
        assert_refused(
            &get(gateway.addr, target, &[&line]),
            400,
            "invalid_request",
            &upstream,
        );
    }
}

/// With `forward_token = false` (the default) the gateway's bearer token
/// never reaches a backend, on `auth = "none"` routes too, however the
/// scheme is spelled; another scheme is the backend's own and passes.
#[test]
fn the_bearer_token_never_reaches_a_public_backend() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let token = sign("test-eddsa", &claims("alice"));
    for line in [
        format!("Authorization: Bearer {token}"),
        format!("Authorization: bearer  {token}"),
        format!("Authorization: BEARER\t{token}"),
        "Authorization: Bearer not-a-valid-token".to_owned(),
    ] {
        upstream.clear();
        eprintln!("case {line}");
        assert_eq!(get(gateway.addr, "/public", &[&line]).status, 200);
        assert!(
            upstream.only().values("authorization").is_empty(),
            "{line} reached the backend"
        );
    }
    upstream.clear();
    let basic = "Authorization: Basic dXNlcjpwYXNz";
    assert_eq!(get(gateway.addr, "/public", &[basic]).status, 200);
    assert_eq!(
        upstream.only().values("authorization"),
        ["Basic dXNlcjpwYXNz"]
    );
}
