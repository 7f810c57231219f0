//! Identity headers: set from the verified token, never passed through.

use serde_json::json;

use crate::support::*;

fn setup() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    (upstream, gateway)
}

const SPOOFS: [&str; 8] = [
    "X-User-Id: mallory",
    "x-user-id: mallory2",
    "X_User_Id: mallory3",
    "x_USER-id: mallory4",
    "X-User-Roles: admin",
    "x_user_roles: admin",
    "X-User-Email: boss@example.com",
    "X-Session-Id: stolen",
];

/// Header-smuggling of identity (the class of CVE-2021-32785 / nginx `_`
/// folding): every spelling of a configured name is removed.
#[test]
fn spoofed_identity_headers_never_reach_the_upstream() {
    let (upstream, gateway) = setup();
    let token = sign(
        "test-eddsa",
        &claims_with(
            "alice",
            json!({"roles": ["user"], "email": "alice@example.com"}),
        ),
    );
    let auth = bearer(&token);
    let mut headers: Vec<&str> = SPOOFS.to_vec();
    headers.push(&auth);
    assert_eq!(get(gateway.addr, "/orders", &headers).status, 200);
    let seen = upstream.only();
    assert_eq!(seen.folded("x-user-id"), [("x-user-id", "alice")]);
    assert_eq!(seen.folded("x-user-roles"), [("x-user-roles", "user")]);
    assert_eq!(
        seen.folded("x-user-email"),
        [("x-user-email", "alice@example.com")]
    );
    assert!(seen.folded("x-session-id").is_empty(), "token has no sid");
}

#[test]
fn public_routes_strip_identity_headers_too() {
    let (upstream, gateway) = setup();
    assert_eq!(get(gateway.addr, "/public/page", &SPOOFS).status, 200);
    let seen = upstream.only();
    for name in ["x-user-id", "x-user-roles", "x-user-email", "x-session-id"] {
        assert!(
            seen.folded(name).is_empty(),
            "{name} leaked: {:?}",
            seen.headers
        );
    }
}

/// RFC 9110 §7.6.1 hop-by-hop: a client naming the identity header in
/// `Connection` must not get a hop to drop the gateway's value.
#[test]
fn connection_header_cannot_remove_the_identity() {
    let (upstream, gateway) = setup();
    let token = sign("test-eddsa", &claims("alice"));
    let headers = [
        bearer(&token),
        "Connection: keep-alive, X-User-Id, x_user_roles".into(),
    ];
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let response = get(gateway.addr, "/orders", &headers);
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.only();
    assert_eq!(seen.values("x-user-id"), ["alice"]);
    for value in seen.values("connection") {
        let lower = value.to_ascii_lowercase();
        assert!(
            !lower.contains("x-user-id") && !lower.contains("x_user_roles"),
            "{value}"
        );
    }
}

/// Nominating a forwarding header is refused outright (the proxy engine's
/// own rule, answered in the contract's shape).
#[test]
fn connection_header_naming_a_forwarding_header_is_refused() {
    let (upstream, gateway) = setup();
    let token = sign("test-eddsa", &claims("alice"));
    let headers = [bearer(&token), "Connection: X-Forwarded-For".into()];
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let response = get(gateway.addr, "/orders", &headers);
    assert_refused(&response, 400, "invalid_request", &upstream);
}

#[test]
fn authorization_is_removed_unless_forward_token() {
    let (upstream, gateway) = setup();
    let token = sign("test-eddsa", &claims("alice"));
    assert_eq!(get(gateway.addr, "/orders", &[&bearer(&token)]).status, 200);
    assert!(upstream.only().values("authorization").is_empty());

    let upstream = EchoUpstream::start();
    let config =
        standard_config(upstream.addr).replace("forward_token = false", "forward_token = true");
    let gateway = TestGateway::start(&config);
    assert_eq!(get(gateway.addr, "/orders", &[&bearer(&token)]).status, 200);
    assert_eq!(
        upstream.only().values("authorization"),
        [format!("Bearer {token}").as_str()]
    );
}

#[test]
fn forwarding_headers_describe_this_hop_only() {
    let (upstream, gateway) = setup();
    let headers = [
        "X-Forwarded-For: 10.9.9.9",
        "X_Forwarded_For: 10.8.8.8",
        "Forwarded: for=10.7.7.7",
        "X-Real-IP: 10.6.6.6",
        "X-Forwarded-Proto: https",
    ];
    assert_eq!(get(gateway.addr, "/public", &headers).status, 200);
    let seen = upstream.only();
    assert_eq!(
        seen.folded("x-forwarded-for"),
        [("x-forwarded-for", "127.0.0.1")]
    );
    assert_eq!(seen.values("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.values("x-forwarded-host"), ["gateway.test"]);
    assert!(seen.values("forwarded").is_empty());
    assert!(seen.folded("x-real-ip").is_empty());
}

#[test]
fn request_id_is_kept_when_well_formed_and_replaced_otherwise() {
    let (upstream, gateway) = setup();
    let response = get(gateway.addr, "/public", &["X-Request-Id: abc-123.def"]);
    assert_eq!(response.header("x-request-id"), Some("abc-123.def"));
    assert_eq!(upstream.only().values("x-request-id"), ["abc-123.def"]);
    upstream.clear();

    let response = get(
        gateway.addr,
        "/public",
        &["X-Request-Id: <script>", "x_request_id: other"],
    );
    let id = response
        .header("x-request-id")
        .expect("generated")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        upstream.only().folded("x-request-id"),
        [("x-request-id", id.as_str())]
    );
}
