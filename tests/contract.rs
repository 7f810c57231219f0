//! Every row of the client contract (shared/DESIGN.md), exactly.

use serde_json::json;

use crate::support::*;

fn setup() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    (upstream, gateway)
}

#[test]
fn no_token_on_a_protected_route_is_token_missing() {
    let (upstream, gateway) = setup();
    let response = get(gateway.addr, "/orders", &[]);
    assert_refused(&response, 401, "token_missing", &upstream);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );
}

#[test]
fn another_scheme_counts_as_no_token() {
    let (upstream, gateway) = setup();
    let response = get(
        gateway.addr,
        "/orders",
        &["Authorization: Basic dXNlcjpwYXNz"],
    );
    assert_refused(&response, 401, "token_missing", &upstream);
}

#[test]
fn malformed_requests_are_invalid_request() {
    let (upstream, gateway) = setup();
    let token = sign("test-eddsa", &claims("alice"));
    let two_headers = [bearer(&token), bearer(&token)];
    let cases: Vec<(String, Vec<String>)> = vec![
        ("/orders".into(), two_headers.to_vec()),
        (format!("/orders?access_token={token}"), vec![]),
        (format!("/public?ACCESS_TOKEN={token}"), vec![]),
        ("/orders".into(), vec!["Authorization: Bearer".into()]),
        ("/orders".into(), vec!["Authorization: Bearer a b".into()]),
        (
            "/orders".into(),
            vec![format!("Authorization: Bearer {token}, Bearer {token}")],
        ),
    ];
    for (target, headers) in cases {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let response = get(gateway.addr, &target, &headers);
        assert_refused(&response, 400, "invalid_request", &upstream);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"portcullis\", error=\"invalid_request\""),
            "{target} {headers:?}"
        );
    }
}

#[test]
fn expired_token_is_token_expired_with_its_description() {
    let (upstream, gateway) = setup();
    let now = tokens_now();
    let token = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now - 400, "exp": now - 31})),
    );
    let response = get(gateway.addr, "/orders", &[&bearer(&token)]);
    assert_refused(&response, 401, "token_expired", &upstream);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"token expired\"")
    );
}

#[test]
fn bad_token_is_token_invalid() {
    let (upstream, gateway) = setup();
    let token = sign("test-eddsa", &claims("alice"));
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let response = get(gateway.addr, "/orders", &[&bearer(&tampered)]);
    assert_refused(&response, 401, "token_invalid", &upstream);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\", error=\"invalid_token\"")
    );
}

#[test]
fn missing_role_is_insufficient_scope() {
    let (upstream, gateway) = setup();
    let token = sign(
        "test-eddsa",
        &claims_with("alice", json!({"roles": ["user"]})),
    );
    let response = get(gateway.addr, "/admin/users", &[&bearer(&token)]);
    assert_refused(&response, 403, "insufficient_scope", &upstream);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"admin\"")
    );
    let admin = sign(
        "test-eddsa",
        &claims_with("root", json!({"roles": ["user", "admin"]})),
    );
    assert_eq!(
        get(gateway.addr, "/admin/users", &[&bearer(&admin)]).status,
        200
    );
}

#[test]
fn scopes_must_all_be_present() {
    let (upstream, gateway) = setup();
    let partial = sign(
        "test-eddsa",
        &claims_with("alice", json!({"scope": "reports:read"})),
    );
    let response = get(gateway.addr, "/reports/q3", &[&bearer(&partial)]);
    assert_refused(&response, 403, "insufficient_scope", &upstream);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"reports:read reports:export\"")
    );
    let full = sign(
        "test-eddsa",
        &claims_with(
            "alice",
            json!({"scope": "openid reports:export reports:read"}),
        ),
    );
    assert_eq!(
        get(gateway.addr, "/reports/q3", &[&bearer(&full)]).status,
        200
    );
}

#[test]
fn optional_route_admits_anonymous_but_not_a_bad_token() {
    let (upstream, gateway) = setup();
    assert_eq!(get(gateway.addr, "/maybe", &[]).status, 200);
    assert!(upstream.only().values("x-user-id").is_empty());
    upstream.clear();
    let response = get(
        gateway.addr,
        "/maybe",
        &["Authorization: Bearer not.a.token"],
    );
    assert_refused(&response, 401, "token_invalid", &upstream);
}

#[test]
fn refresh_hint_appears_only_near_expiry() {
    let (_upstream, gateway) = setup();
    let now = tokens_now();
    let fresh = sign(
        "test-eddsa",
        &claims_with("alice", json!({"exp": now + 300})),
    );
    let response = get(gateway.addr, "/orders", &[&bearer(&fresh)]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-token-expires-in"), None);

    let ending = sign(
        "test-eddsa",
        &claims_with("alice", json!({"exp": now + 45})),
    );
    let response = get(gateway.addr, "/orders", &[&bearer(&ending)]);
    assert_eq!(response.status, 200);
    let left: u64 = response
        .header("x-token-expires-in")
        .expect("hint")
        .parse()
        .expect("seconds");
    assert!((40..=45).contains(&left), "{left}");
}

#[test]
fn unknown_route_is_not_found_and_unreachable_upstream_is_bad_gateway() {
    let upstream = EchoUpstream::start();
    let dead = crate::support::gateway::free_addr();
    let routes = format!(
        r#"
[[upstreams]]
name = "dead"
targets = ["{dead}"]
connect_timeout = "1s"

[[routes]]
path = "/gone"
upstream = "dead"
auth = "none"

[[routes]]
path = "/api"
upstream = "echo"
"#
    );
    let gateway = TestGateway::start(&crate::support::gateway::config_with_routes(
        upstream.addr,
        &routes,
    ));
    assert_refused(
        &get(gateway.addr, "/nowhere", &[]),
        404,
        "not_found",
        &upstream,
    );
    assert_refused(
        &get(gateway.addr, "/apix", &[]),
        404,
        "not_found",
        &upstream,
    );
    let response = get(gateway.addr, "/gone", &[]);
    assert_refused(&response, 502, "bad_gateway", &upstream);
    assert!(
        !response.text().to_ascii_lowercase().contains("refused"),
        "generic text only: {}",
        response.text()
    );
}

#[test]
fn descriptions_are_generic() {
    let (_upstream, gateway) = setup();
    let garbage = [
        "Authorization: Bearer eyJhbGciOiJub25lIn0.eyJ9.",
        "Authorization: Bearer a.b.c",
    ];
    for header in garbage {
        let body = get(gateway.addr, "/orders", &[header])
            .text()
            .to_ascii_lowercase();
        for leak in [
            "base64",
            "json",
            "jsonwebtoken",
            "utf",
            "error(",
            "kind",
            "eof",
        ] {
            assert!(!body.contains(leak), "{leak} in {body}");
        }
    }
}

#[test]
fn upstream_cannot_forge_a_gateway_refusal() {
    let (upstream, gateway) = setup();
    upstream.respond_with_header("X-Portcullis-Error: token_revoked");
    let response = get(gateway.addr, "/public", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-portcullis-error"), None);
}

/// A refused request without a body leaves the connection usable; one with
/// an unread body is closed rather than read unauthenticated.
#[test]
fn connection_stays_open_after_a_refusal_without_body() {
    use std::io::{BufReader, Write};
    let (upstream, gateway) = setup();
    let mut stream = crate::support::http::connect(gateway.addr);
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    stream
        .write_all(b"GET /orders HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let first = crate::support::http::read_response(&mut reader);
    assert_eq!(first.status, 401);
    assert_eq!(
        first
            .header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("keep-alive")
    );
    stream
        .write_all(b"GET /public HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let second = crate::support::http::read_response(&mut reader);
    assert_eq!(second.status, 200);
    assert_eq!(upstream.count(), 1);

    let body = "{\"a\":1}";
    let with_body = format!(
        "POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let refused = send(gateway.addr, &with_body);
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused
            .header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close")
    );
}

fn tokens_now() -> u64 {
    crate::support::tokens::now()
}
