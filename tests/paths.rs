//! Path normalisation: a protected prefix cannot be reached by spelling it
//! differently, and the upstream receives the normalised form.

use crate::support::gateway::config_with_routes;
use crate::support::*;

/// `/` is public; `/admin` needs a token.
fn setup() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let routes = r#"
[[routes]]
path = "/"
upstream = "echo"
auth = "none"

[[routes]]
path = "/admin"
upstream = "echo"
auth = "required"
"#;
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, routes));
    (upstream, gateway)
}

/// The path-confusion class of CVE-2021-22112 / Tomcat `..;`: every
/// spelling of `/admin` is judged as `/admin`.
#[test]
fn protected_prefix_cannot_be_reached_by_another_spelling() {
    let (upstream, gateway) = setup();
    for target in [
        "/admin",
        "//admin",
        "/./admin",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/%2e/admin",
        "///admin//users",
        "/public/./../admin",
        "/%61dmin",
    ] {
        let response = get(gateway.addr, target, &[]);
        assert_refused(&response, 401, "token_missing", &upstream);
    }
}

#[test]
fn encoded_separators_and_servlet_dot_segments_are_refused() {
    let (upstream, gateway) = setup();
    for target in [
        "/admin%2fusers",
        "/public%2F..%2Fadmin",
        "/x%5cadmin",
        "/x%00",
        "/public/..;/admin",
        "/%zz",
    ] {
        let response = get(gateway.addr, target, &[]);
        assert_refused(&response, 400, "invalid_request", &upstream);
    }
}

#[test]
fn upstream_receives_the_normalised_path_and_the_query() {
    let (upstream, gateway) = setup();
    assert_eq!(
        get(gateway.addr, "//docs/./a/../b//c?x=1&y=%2F", &[]).status,
        200
    );
    assert_eq!(upstream.only().target, "/docs/b/c?x=1&y=%2F");
    upstream.clear();
    assert_eq!(
        get(gateway.addr, "/administrator", &[]).status,
        200,
        "prefix matches whole segments only"
    );
}

#[test]
fn host_routes_take_precedence() {
    let upstream = EchoUpstream::start();
    let routes = r#"
[[routes]]
path = "/"
upstream = "echo"
auth = "none"

[[routes]]
host = "api.example.com"
path = "/"
upstream = "echo"
auth = "required"
"#;
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, routes));
    let api = send(
        gateway.addr,
        "GET /x HTTP/1.1\r\nHost: API.example.com:8080\r\n\r\n",
    );
    assert_refused(&api, 401, "token_missing", &upstream);
    let other = send(
        gateway.addr,
        "GET /x HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    );
    assert_eq!(other.status, 200);
}

/// Servlet containers ignore `;parameters` in a segment: `/admin;x/users`
/// is `/admin/users` to Tomcat, so the gateway must judge it so.
#[test]
fn path_parameters_cannot_hide_a_protected_prefix() {
    let (upstream, gateway) = setup();
    for target in ["/admin;jsessionid=x/users", "/admin;/users", "/admin;x"] {
        assert_refused(
            &get(gateway.addr, target, &[]),
            401,
            "token_missing",
            &upstream,
        );
    }
    assert_eq!(get(gateway.addr, "/docs;v=2/a", &[]).status, 200);
    assert_eq!(
        upstream.only().target,
        "/docs;v=2/a",
        "parameters still reach the upstream"
    );
}

#[test]
fn a_trailing_dot_in_host_still_selects_the_host_routes() {
    let upstream = EchoUpstream::start();
    let routes = r#"
[[routes]]
path = "/"
upstream = "echo"
auth = "none"

[[routes]]
host = "api.example.com"
path = "/"
upstream = "echo"
auth = "required"
"#;
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, routes));
    let dotted = send(
        gateway.addr,
        "GET /x HTTP/1.1\r\nHost: api.example.com.\r\n\r\n",
    );
    assert_refused(&dotted, 401, "token_missing", &upstream);
}
