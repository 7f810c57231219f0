//! CORS at the edge and the per-request choice between cookie and body
//! refresh tokens: what a browser app on another origin can read, and what
//! it can never make the gateway do.

use std::process::Command;

use crate::support::gateway::config_with_routes;
use crate::support::http::{request, Recorded, Response};
use crate::support::tokens;
use crate::support::*;

const APP: &str = "https://app.example.com";
const EXPOSED: &str =
    "X-Portcullis-Error, X-Token-Expires-In, X-Request-Id, WWW-Authenticate, Retry-After, \
     RateLimit, RateLimit-Policy";

/// A protected route and a public one, `[cors]` for `APP` with
/// credentials, and whatever else `rest` adds.
fn cors_config(upstream: std::net::SocketAddr, rest: &str) -> String {
    config_with_routes(
        upstream,
        &format!(
            r#"
[cors]
allowed_origins = ["{APP}"]
allow_credentials = true

[[routes]]
path = "/"
upstream = "echo"
auth = "required"

[[routes]]
path = "/public"
upstream = "echo"
auth = "none"
{rest}
"#
        ),
    )
}

fn token() -> String {
    bearer(&sign("test-eddsa", &claims("alice")))
}

fn cors_headers(response: &Response) -> Vec<(String, String)> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-"))
        .cloned()
        .collect()
}

#[track_caller]
fn assert_cors_for(response: &Response, origin: &str) {
    assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        response.header("access-control-expose-headers"),
        Some(EXPOSED)
    );
    assert!(
        response
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("vary") && v.contains("Origin")),
        "Vary: Origin in {:?}",
        response.headers
    );
}

#[test]
fn preflight_is_answered_at_the_edge_before_authentication() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&cors_config(upstream.addr, ""));
    let response = send(
        gateway.addr,
        &request(
            "OPTIONS",
            "/orders",
            &[
                &format!("Origin: {APP}"),
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: Authorization, Content-Type",
            ],
        ),
    );
    assert_eq!(response.status, 204, "{}", response.text());
    assert_cors_for(&response, APP);
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("POST")
    );
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(response.header("access-control-max-age"), Some("600"));
    assert!(response.body.is_empty());
    assert_eq!(
        upstream.count(),
        0,
        "a preflight never reaches the upstream"
    );

    // The gateway's own endpoints answer preflights the same way.
    let token_preflight = send(
        gateway.addr,
        &request(
            "OPTIONS",
            "/auth/token",
            &[
                &format!("Origin: {APP}"),
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: X-Portcullis-CSRF",
            ],
        ),
    );
    assert_eq!(token_preflight.status, 204);
    assert_cors_for(&token_preflight, APP);
}

#[test]
fn preflight_from_a_disallowed_origin_is_granted_nothing() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&cors_config(upstream.addr, ""));
    let preflight = |origin: &str, method: &str, headers: &str| {
        send(
            gateway.addr,
            &request(
                "OPTIONS",
                "/orders",
                &[
                    &format!("Origin: {origin}"),
                    &format!("Access-Control-Request-Method: {method}"),
                    &format!("Access-Control-Request-Headers: {headers}"),
                ],
            ),
        )
    };
    let foreign = preflight("https://evil.example", "GET", "authorization");
    assert_refused(&foreign, 403, "cors_rejected", &upstream);
    assert!(cors_headers(&foreign).is_empty(), "{:?}", foreign.headers);
    // A prefix or a different scheme of an allowed origin is another origin.
    for origin in [
        "https://app.example.com.evil.example",
        "http://app.example.com",
    ] {
        let near = preflight(origin, "GET", "authorization");
        assert_refused(&near, 403, "cors_rejected", &upstream);
        assert!(cors_headers(&near).is_empty());
    }
    let method = preflight(APP, "TRACE", "authorization");
    assert_refused(&method, 403, "cors_rejected", &upstream);
    assert!(cors_headers(&method).is_empty(), "{:?}", method.headers);
    let header = preflight(APP, "GET", "x-user-id");
    assert_refused(&header, 403, "cors_rejected", &upstream);
    assert!(cors_headers(&header).is_empty(), "{:?}", header.headers);
}

/// A browser hides a response without CORS headers from the app: every
/// refusal must carry them, or the app cannot tell "refresh" from "log in".
#[test]
fn refusals_and_gateway_answers_carry_cors_for_an_allowed_origin() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&cors_config(upstream.addr, ""));
    let origin = format!("Origin: {APP}");
    let missing = get(gateway.addr, "/orders", &[&origin]);
    assert_refused(&missing, 401, "token_missing", &upstream);
    assert_cors_for(&missing, APP);

    let expired = sign(
        "test-eddsa",
        &claims_with("alice", serde_json::json!({"exp": tokens::now() - 120})),
    );
    let expired = get(gateway.addr, "/orders", &[&origin, &bearer(&expired)]);
    assert_refused(&expired, 401, "token_expired", &upstream);
    assert_cors_for(&expired, APP);

    let unrouted = get(gateway.addr, "/%2e%2e/%2f", &[&origin]);
    assert_eq!(unrouted.status, 400);
    assert_cors_for(&unrouted, APP);

    let grant = post(
        gateway.addr,
        "/auth/token",
        &[&origin, "Content-Type: application/x-www-form-urlencoded"],
        "grant_type=refresh_token&refresh_token=prt_unknown",
    );
    assert_refused(&grant, 400, "invalid_grant", &upstream);
    assert_cors_for(&grant, APP);

    let jwks = get(gateway.addr, "/.well-known/jwks.json", &[&origin]);
    assert_eq!(jwks.status, 200);
    assert_cors_for(&jwks, APP);

    let foreign = get(gateway.addr, "/orders", &["Origin: https://evil.example"]);
    assert_refused(&foreign, 401, "token_missing", &upstream);
    assert!(cors_headers(&foreign).is_empty(), "{:?}", foreign.headers);
}

fn upstream_with_its_own_cors(_: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let lines = [
        "Access-Control-Allow-Origin: *",
        "Access-Control-Allow-Methods: TRACE",
        "Access-Control-Expose-Headers: X-Internal",
        "Vary: Accept-Encoding",
    ];
    (200, lines.map(str::to_owned).to_vec(), b"ok".to_vec())
}

/// The gateway is the one CORS authority on a route with `[cors]`: an
/// upstream that answers `*` must not open the route to every site.
#[test]
fn upstream_cors_headers_are_replaced_not_merged() {
    let upstream = EchoUpstream::start_with(upstream_with_its_own_cors);
    let gateway = TestGateway::start(&cors_config(upstream.addr, ""));
    let token = token();
    let allowed = get(
        gateway.addr,
        "/orders",
        &[&token, &format!("Origin: {APP}")],
    );
    assert_eq!(allowed.status, 200);
    assert_cors_for(&allowed, APP);
    let mut names: Vec<String> = cors_headers(&allowed)
        .into_iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "access-control-allow-credentials",
            "access-control-allow-origin",
            "access-control-expose-headers"
        ]
    );
    assert!(allowed
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("vary") && v == "Accept-Encoding"));

    let foreign = get(
        gateway.addr,
        "/orders",
        &[&token, "Origin: https://evil.example"],
    );
    assert_eq!(foreign.status, 200);
    assert!(cors_headers(&foreign).is_empty(), "{:?}", foreign.headers);
}

#[test]
fn a_route_can_override_or_turn_off_cors() {
    let upstream = EchoUpstream::start();
    let rest = r#"
[[routes]]
path = "/partner"
upstream = "echo"
auth = "required"
cors = { allowed_origins = ["https://partner.example"], allow_credentials = false }

[[routes]]
path = "/internal"
upstream = "echo"
auth = "required"
cors = { allowed_origins = [] }
"#;
    let gateway = TestGateway::start(&cors_config(upstream.addr, rest));
    let preflight = |path: &str, origin: &str| {
        send(
            gateway.addr,
            &request(
                "OPTIONS",
                path,
                &[
                    &format!("Origin: {origin}"),
                    "Access-Control-Request-Method: GET",
                ],
            ),
        )
    };
    let partner = preflight("/partner/x", "https://partner.example");
    assert_eq!(partner.status, 204);
    assert_eq!(partner.header("access-control-allow-credentials"), None);
    assert_refused(
        &preflight("/partner/x", APP),
        403,
        "cors_rejected",
        &upstream,
    );
    // Without CORS the preflight is an ordinary request to a protected route.
    let internal = preflight("/internal", APP);
    assert_refused(&internal, 401, "token_missing", &upstream);
    assert!(cors_headers(&internal).is_empty());
}

/// Fetch standard: `Access-Control-Allow-Origin: *` is never honoured with
/// credentials; a configuration asking for both is refused at `check`.
#[test]
fn check_refuses_a_wildcard_origin_with_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_with_routes(
        "127.0.0.1:1".parse().expect("addr"),
        r#"
[cors]
allowed_origins = ["*"]
allow_credentials = true

[[routes]]
path = "/"
upstream = "echo"
cors = { allowed_origins = ["https://app.example.com/"] }
"#,
    );
    let fixtures = tokens::fixtures_dir().display().to_string();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, text.replace("{fixtures}", &fixtures)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .output()
        .expect("run portcullis");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display();
    for expected in [
        format!("{file}:18:20: allowed_origins = \"*\" cannot be combined with allow_credentials = true"),
        format!("{file}:24:29: \"https://app.example.com/\" is not an origin"),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{err}"
        );
    }
}

/// The legacy backend's credential check: alice/secret.
fn login_backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    if String::from_utf8_lossy(&request.body).contains("username=alice&password=secret") {
        return (
            200,
            vec!["X-Auth-Subject: alice".to_owned()],
            b"ok".to_vec(),
        );
    }
    (401, Vec::new(), b"wrong password".to_vec())
}

fn cookie_gateway(upstream: &EchoUpstream, login: &EchoUpstream) -> TestGateway {
    let rest = format!(
        "[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n\n[sessions]\ncookie = true\n",
        login.addr
    );
    TestGateway::start(&cors_config(upstream.addr, &rest))
}

const FORM: &str = "Content-Type: application/x-www-form-urlencoded";
const CREDENTIALS: &str = "username=alice&password=secret";

/// One gateway serves browsers (HttpOnly cookie, origin checked) and other
/// clients (refresh token in the JSON body): a request carrying `Origin` or
/// `Sec-Fetch-Site` is a browser's and is always checked (login CSRF and
/// refresh CSRF, RFC 9700 §4.2 / OWASP CSRF prevention); the `[cors]`
/// origins are the cookie mode's allowed origins.
#[test]
fn cookie_mode_serves_browsers_by_cookie_and_other_clients_by_body() {
    let (upstream, login) = (
        EchoUpstream::start(),
        EchoUpstream::start_with(login_backend),
    );
    let gateway = cookie_gateway(&upstream, &login);
    let origin = format!("Origin: {APP}");

    let browser = post(gateway.addr, "/auth/login", &[FORM, &origin], CREDENTIALS);
    assert_eq!(browser.status, 200, "{}", browser.text());
    assert!(browser.json().get("refresh_token").is_none());
    assert!(browser.header("set-cookie").is_some());
    assert_cors_for(&browser, APP);

    let cli = post(gateway.addr, "/auth/login", &[FORM], CREDENTIALS);
    assert_eq!(cli.status, 200, "{}", cli.text());
    assert_eq!(cli.header("set-cookie"), None);
    let refresh = cli.json()["refresh_token"]
        .as_str()
        .expect("refresh token in the body")
        .to_owned();
    let grant = format!("grant_type=refresh_token&refresh_token={refresh}");
    let rotated = post(gateway.addr, "/auth/token", &[FORM], &grant);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert!(rotated.json()["refresh_token"].is_string());
    assert_eq!(rotated.header("set-cookie"), None);

    // A cross-site browser request never skips the check, whatever it
    // carries: a body token, no Origin but Sec-Fetch-Site, a foreign Origin.
    let next = rotated.json()["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    let grant = format!("grant_type=refresh_token&refresh_token={next}");
    let evil = post(
        gateway.addr,
        "/auth/token",
        &[FORM, "Origin: https://evil.example"],
        &grant,
    );
    assert_refused(&evil, 403, "cross_site_request", &upstream);
    let fetch_cross_site = post(
        gateway.addr,
        "/auth/login",
        &[FORM, "Sec-Fetch-Site: cross-site"],
        CREDENTIALS,
    );
    assert_refused(&fetch_cross_site, 403, "cross_site_request", &upstream);
    let evil_login = post(
        gateway.addr,
        "/auth/login",
        &[
            FORM,
            "Origin: https://evil.example",
            "Sec-Fetch-Site: cross-site",
        ],
        CREDENTIALS,
    );
    assert_refused(&evil_login, 403, "cross_site_request", &upstream);
    assert_eq!(login.count(), 2, "refused logins never reach the backend");

    // A page on the gateway's own origin, by the browser's word.
    let same_origin = post(
        gateway.addr,
        "/auth/login",
        &[
            FORM,
            "Origin: https://gateway.test",
            "Sec-Fetch-Site: same-origin",
        ],
        CREDENTIALS,
    );
    assert_eq!(same_origin.status, 200, "{}", same_origin.text());
    assert!(same_origin.header("set-cookie").is_some());
    assert!(same_origin.json().get("refresh_token").is_none());

    // The cookie is `Secure`: a page on plain HTTP and the same host (one
    // a network attacker can serve) is not the gateway's origin.
    let plain = post(
        gateway.addr,
        "/auth/login",
        &[
            FORM,
            "Origin: http://gateway.test",
            "Sec-Fetch-Site: same-origin",
        ],
        CREDENTIALS,
    );
    assert_eq!(plain.status, 403, "{}", plain.text());
    assert_eq!(
        plain.header("x-portcullis-error"),
        Some("cross_site_request")
    );
}

/// A 429 must be readable cross-origin, `Retry-After` included, or a
/// browser client cannot back off as told.
#[test]
fn a_rate_limited_refresh_is_readable_from_an_allowed_origin() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&cors_config(
        upstream.addr,
        "[sessions]\nmax_failures = 1\nfailure_window = \"1m\"\n",
    ));
    let origin = format!("Origin: {APP}");
    let grant = "grant_type=refresh_token&refresh_token=prt_unknown";
    let refresh = || post(gateway.addr, "/auth/token", &[&origin, FORM], grant);
    assert_refused(&refresh(), 400, "invalid_grant", &upstream);
    let limited = refresh();
    assert_refused(&limited, 429, "too_many_requests", &upstream);
    assert_cors_for(&limited, APP);
    assert!(limited.header("retry-after").is_some());
}

/// An origin `[cors]` lets read responses but not send credentials must
/// not log a browser in or rotate its cookie (login CSRF from a
/// same-site page the operator only allowed to read).
#[test]
fn an_origin_allowed_without_credentials_cannot_use_the_cookie() {
    let (upstream, login) = (
        EchoUpstream::start(),
        EchoUpstream::start_with(login_backend),
    );
    let rest = format!(
        "[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n\n[sessions]\ncookie = true\n",
        login.addr
    );
    let config = cors_config(upstream.addr, &rest)
        .replace("allow_credentials = true", "allow_credentials = false");
    let gateway = TestGateway::start(&config);
    let origin = format!("Origin: {APP}");
    let refused = post(gateway.addr, "/auth/login", &[FORM, &origin], CREDENTIALS);
    assert_refused(&refused, 403, "cross_site_request", &upstream);
    assert_eq!(login.count(), 0, "the login backend was never asked");
}
