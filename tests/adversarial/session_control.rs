//! What a careless or compromised backend may send back to end sessions:
//! `X-Portcullis-Session-Control` where the route did not opt in, on an
//! answer that is no success, for a request without a gateway session, or
//! in a shape that names no single action. None of it ends a session, and
//! the header never reaches the client.

use crate::support::http::Recorded;
use crate::support::*;

/// Answers with the status in `X-Test-Status` and every `X-Test-Line` as
/// a raw header line of its own.
fn backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let status = request
        .values("x-test-status")
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let lines = request
        .values("x-test-line")
        .iter()
        .map(|line| (*line).to_owned())
        .collect();
    (status, lines, b"page".to_vec())
}

/// The credential a row's request carries.
#[derive(Clone, Copy)]
enum Caller {
    /// The victim's own session token.
    Session,
    /// A token signed with the gateway's key, outside any session.
    Sessionless,
    Anonymous,
}

/// `(name, path, caller, upstream status, the upstream's header lines)`.
type Row = (
    &'static str,
    &'static str,
    Caller,
    u16,
    &'static [&'static str],
);

const CONTROL: &str = "X-Portcullis-Session-Control";

const ROWS: &[Row] = &[
    (
        "a route that did not opt in",
        "/orders",
        Caller::Session,
        200,
        &["X-Portcullis-Session-Control: logout-everywhere"],
    ),
    (
        "a public route",
        "/public/x",
        Caller::Anonymous,
        200,
        &["X-Portcullis-Session-Control: logout-everywhere"],
    ),
    (
        "an optional route, no token",
        "/maybe-account",
        Caller::Anonymous,
        200,
        &["X-Portcullis-Session-Control: logout-everywhere"],
    ),
    (
        "a token outside any session",
        "/account",
        Caller::Sessionless,
        200,
        &["X-Portcullis-Session-Control: logout-everywhere"],
    ),
    (
        "a redirect",
        "/account",
        Caller::Session,
        303,
        &[
            "X-Portcullis-Session-Control: logout-everywhere",
            "Location: /",
        ],
    ),
    (
        "a client error",
        "/account",
        Caller::Session,
        403,
        &["X-Portcullis-Session-Control: end-this-session"],
    ),
    (
        "a server error",
        "/account",
        Caller::Session,
        500,
        &["X-Portcullis-Session-Control: end-other-sessions"],
    ),
    (
        "a list of actions",
        "/account",
        Caller::Session,
        200,
        &["X-Portcullis-Session-Control: end-other-sessions, logout-everywhere"],
    ),
    (
        "a value naming another user",
        "/account",
        Caller::Session,
        200,
        &["X-Portcullis-Session-Control: logout-everywhere; sub=bob"],
    ),
    (
        "two header lines",
        "/account",
        Caller::Session,
        200,
        &[
            "X-Portcullis-Session-Control: end-this-session",
            "x-portcullis-session-control: end-this-session",
        ],
    ),
    (
        "an empty value",
        "/account",
        Caller::Session,
        200,
        &["X-Portcullis-Session-Control: "],
    ),
    (
        "an underscore spelling",
        "/account",
        Caller::Session,
        200,
        &["X_Portcullis_Session_Control: logout-everywhere"],
    ),
];

/// Logs alice in; her token pair.
fn login(gateway: &TestGateway) -> (String, String) {
    let response = post(
        gateway.addr,
        "/auth/login",
        &["Content-Type: application/x-www-form-urlencoded"],
        "username=alice&password=secret",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    let field = |name: &str| body[name].as_str().expect(name).to_owned();
    (field("access_token"), field("refresh_token"))
}

fn login_backend(_: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let lines = vec!["X-Auth-Subject: alice".to_owned()];
    (200, lines, b"welcome".to_vec())
}

#[test]
fn a_backend_cannot_end_sessions_where_it_was_not_asked_to() {
    let upstream = EchoUpstream::start_with(backend);
    let login_upstream = EchoUpstream::start_with(login_backend);
    let config = format!(
        "{}\n[[routes]]\npath = \"/account\"\nupstream = \"echo\"\nsession_control = true\n\n[[routes]]\npath = \"/maybe-account\"\nupstream = \"echo\"\nauth = \"optional\"\nsession_control = true\n\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n",
        standard_config(upstream.addr),
        login_upstream.addr
    );
    let gateway = TestGateway::start(&config);
    let (victim, victim_refresh) = login(&gateway);
    let (other, _) = login(&gateway);
    let sessionless = sign("test-eddsa", &claims("alice"));
    for (name, path, caller, status, lines) in ROWS {
        let token = match caller {
            Caller::Session => Some(bearer(&victim)),
            Caller::Sessionless => Some(bearer(&sessionless)),
            Caller::Anonymous => None,
        };
        let status_line = format!("X-Test-Status: {status}");
        let mut headers: Vec<String> = lines.iter().map(|l| format!("X-Test-Line: {l}")).collect();
        headers.push(status_line);
        headers.extend(token);
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let response = get(gateway.addr, path, &headers);
        assert_eq!(response.status, *status, "{name}: {}", response.text());
        assert_eq!(response.header(CONTROL), None, "{name}: reached the client");
        assert_eq!(response.header("x-portcullis-error"), None, "{name}");
        for token in [&victim, &other] {
            let still = get(gateway.addr, "/orders", &[&bearer(token)]);
            assert_eq!(still.status, 200, "{name}: a session was ended");
        }
    }
    let refreshed = post(
        gateway.addr,
        "/auth/token",
        &["Content-Type: application/x-www-form-urlencoded"],
        &format!("grant_type=refresh_token&refresh_token={victim_refresh}"),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
}
