//! Per-method routes against method tricks: another case (`get`,
//! `Delete`), odd spacing in the request line, unknown methods, and the
//! method overrides (`X-HTTP-Method-Override` and kin, `_method` in the
//! query) that a legacy backend may honour and so run `DELETE` for a
//! `POST` admitted under the `POST` route's policy. Each is refused in
//! the contract's shape and the upstream receives nothing.

use serde_json::json;

use super::{raw, run, Case};
use crate::methods::{start, token, POLICY_ROUTES};
use crate::support::gateway::config_with_routes;
use crate::support::*;

fn line(request_line: &str, headers: &[&str]) -> String {
    let mut out = format!("{request_line}\r\nHost: gateway.test\r\n");
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

fn cases(reader: &str, user: &str) -> Vec<Case> {
    let allowed = "method_not_allowed";
    vec![
        // Methods are case-sensitive (RFC 9110 §9.1): no route serves these.
        (
            "lower-case get",
            line("get /orders HTTP/1.1", &[reader]),
            405,
            allowed,
        ),
        (
            "lower-case delete",
            line("delete /orders HTTP/1.1", &[user]),
            405,
            allowed,
        ),
        (
            "mixed-case Delete",
            line("Delete /orders HTTP/1.1", &[user]),
            405,
            allowed,
        ),
        (
            "unknown method",
            line("FOO /orders HTTP/1.1", &[user]),
            405,
            allowed,
        ),
        (
            "WebDAV method",
            line("PROPFIND /orders HTTP/1.1", &[user]),
            405,
            allowed,
        ),
        (
            "method with a dash",
            line("DELETE-X /orders HTTP/1.1", &[user]),
            405,
            allowed,
        ),
        // Request-line spacing the engine must not read as another method.
        (
            "two spaces",
            line("GET  /orders HTTP/1.1", &[reader]),
            400,
            "invalid_request",
        ),
        (
            "leading space",
            line(" DELETE /orders HTTP/1.1", &[user]),
            400,
            "invalid_request",
        ),
        (
            "tab after method",
            line("DELETE\t/orders HTTP/1.1", &[user]),
            400,
            "invalid_request",
        ),
        (
            "NUL in method",
            line("DEL\0ETE /orders HTTP/1.1", &[user]),
            400,
            "invalid_request",
        ),
        // A user may POST; an override would make it the admin's DELETE.
        (
            "X-HTTP-Method-Override",
            line(
                "POST /orders HTTP/1.1",
                &[user, "X-HTTP-Method-Override: DELETE"],
            ),
            400,
            "invalid_request",
        ),
        (
            "x-http-method-override lower case",
            line(
                "POST /orders HTTP/1.1",
                &[user, "x-http-method-override: DELETE"],
            ),
            400,
            "invalid_request",
        ),
        (
            "X-HTTP-Method",
            line("POST /orders HTTP/1.1", &[user, "X-HTTP-Method: DELETE"]),
            400,
            "invalid_request",
        ),
        (
            "X-Method-Override",
            line(
                "POST /orders HTTP/1.1",
                &[user, "X-Method-Override: DELETE"],
            ),
            400,
            "invalid_request",
        ),
        (
            "override on a GET",
            line(
                "GET /orders HTTP/1.1",
                &[reader, "X-HTTP-Method-Override: DELETE"],
            ),
            400,
            "invalid_request",
        ),
        (
            "_method in the query",
            line("POST /orders?_method=DELETE HTTP/1.1", &[user]),
            400,
            "invalid_request",
        ),
        (
            "_METHOD in the query",
            line("POST /orders/1?x=1&_METHOD=delete HTTP/1.1", &[user]),
            400,
            "invalid_request",
        ),
        (
            "%5Fmethod in the query",
            line("POST /orders?%5Fmethod=DELETE HTTP/1.1", &[user]),
            400,
            "invalid_request",
        ),
        (
            "double-encoded _method",
            line("POST /orders?%255Fmethod=DELETE HTTP/1.1", &[user]),
            400,
            "invalid_request",
        ),
        (
            "_method after a semicolon",
            line("POST /orders?a=1;_method=DELETE HTTP/1.1", &[user]),
            400,
            "invalid_request",
        ),
    ]
}

#[test]
fn method_tricks_are_refused_and_reach_nothing() {
    let (upstream, gateway) = start();
    let reader = token("bob", json!({}));
    let user = token("alice", json!({"roles": ["user"]}));
    run(&gateway, &upstream, &cases(&reader, &user));
}

/// `X_HTTP_Method_Override` is dropped by default (as nginx drops every
/// name with `_`); where `_` names are let through, it is refused like
/// its `-` spelling, since CGI backends read the two alike.
#[test]
fn an_underscore_override_is_dropped_or_refused_never_forwarded() {
    let (upstream, gateway) = start();
    let user = token("alice", json!({"roles": ["user"]}));
    let request = line(
        "POST /orders HTTP/1.1",
        &[&user, "X_HTTP_Method_Override: DELETE"],
    );
    let response = raw(gateway.addr, request.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.only();
    assert_eq!(seen.method, "POST");
    assert!(seen.folded("x-http-method-override").is_empty());

    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &config_with_routes(upstream.addr, POLICY_ROUTES),
        "headers_with_underscores = \"allow\"",
    );
    let response = raw(gateway.addr, request.as_bytes());
    assert_refused(&response, 400, "invalid_request", &upstream);
}

/// On a route without `methods` the policy is the same for every method:
/// an override passes through, as before.
#[test]
fn an_override_on_a_route_without_methods_passes_through() {
    let (upstream, gateway) = start();
    let request = line(
        "POST /open?_method=PUT HTTP/1.1",
        &["X-HTTP-Method-Override: PUT"],
    );
    let response = raw(gateway.addr, request.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.only().values("x-http-method-override"), ["PUT"]);
}

/// Over HTTP/2 (`:method` from HPACK, any bytes a token allows) the same
/// rules hold: `delete` is no `DELETE`, an override is refused, and the
/// upstream receives nothing.
#[test]
fn http2_methods_and_overrides_are_judged_alike() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(
        &config_with_routes(upstream.addr, POLICY_ROUTES),
        &crate::support::tls_listener(),
    );
    let user = token("alice", json!({"roles": ["user"]}));
    let port = gateway.addr.port();
    let out = "%{http_version} %{http_code} %header{x-portcullis-error} %header{allow}";
    let lower = ["--http2", "-X", "delete", "-H", user.as_str()];
    let answer = curl_https(port, "/orders/1", out, &lower);
    assert_eq!(
        answer,
        "2 405 method_not_allowed GET, HEAD, POST, PUT, DELETE"
    );
    let overridden = [
        "--http2",
        "-X",
        "POST",
        "-H",
        user.as_str(),
        "-H",
        "X-HTTP-Method-Override: DELETE",
    ];
    let answer = curl_https(port, "/orders/1", out, &overridden);
    assert_eq!(answer, "2 400 invalid_request ");
    assert_eq!(upstream.count(), 0);
    let allowed = ["--http2", "-X", "POST", "-H", user.as_str()];
    let answer = curl_https(port, "/orders/1", "%{http_version} %{http_code}", &allowed);
    assert_eq!(answer, "2 200");
    assert_eq!(upstream.only().method, "POST");
}
