//! Shared test harness: real gateway, real upstream, real sockets.
#![allow(dead_code)]

pub mod binary;
pub mod gateway;
pub mod http;
pub mod redis;
pub mod sink;
pub mod tokens;
pub mod tool;

pub use gateway::{standard_config, TestGateway};
pub use http::{curl_https, get, post, send, tls_fixtures, tls_listener, EchoUpstream, Response};
pub use tokens::{bearer, claims, claims_with, sign};

/// Asserts a gateway refusal in the contract's exact shape (status, code,
/// `WWW-Authenticate` challenge, body), and that the upstream saw nothing.
#[track_caller]
pub fn assert_refused(response: &Response, status: u16, code: &str, upstream: &EchoUpstream) {
    assert_eq!(response.status, status, "status; body: {}", response.text());
    assert_challenge(response, code);
    assert_eq!(
        response.header("x-portcullis-error"),
        Some(code),
        "X-Portcullis-Error"
    );
    let body = response.json();
    assert_eq!(body["error"], code, "body.error");
    let request_id = response.header("x-request-id").expect("X-Request-Id");
    assert_eq!(body["request_id"], request_id, "body.request_id");
    let description = body["error_description"]
        .as_str()
        .expect("error_description");
    assert!(!description.is_empty());
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(3),
        "only error, error_description, request_id"
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(
        upstream.count(),
        0,
        "a refused request must not reach the upstream"
    );
}

/// An active session of `sub`, created now, for store-level tests.
pub fn session_record(sub: &str, sid: &str, expires_at: u64) -> portcullis::store::SessionRecord {
    let now = portcullis::auth::unix_now();
    portcullis::store::SessionRecord {
        sid: sid.into(),
        sub: sub.into(),
        device: "phone".into(),
        created: now,
        auth_time: now,
        last_refresh: now,
        expires_at,
        idle_ttl: 3600,
        current_hash: format!("hash-{sid}"),
        previous_hash: None,
        rotated_at_ms: 0,
        version: 0,
        status: portcullis::store::SessionStatus::Active,
        grants: "{}".into(),
        sealed_pair: None,
    }
}

/// The `WWW-Authenticate` challenge the README's refusal table gives
/// `code`, after `Bearer realm="…"` (the realm is the route's or the admin
/// API's): the token outcomes name their error (and an expiry or a
/// revocation its description), `insufficient_scope` the scope, every
/// other code none. `invalid_request` has two rows: a malformed token
/// request is challenged (`error="invalid_request"`), a bad path, head or
/// body is not; either is accepted here, and nothing else.
#[track_caller]
pub fn assert_challenge(response: &Response, code: &str) {
    let challenge = response.header("www-authenticate");
    let after_realm = challenge.map(|c| {
        let rest = c
            .strip_prefix("Bearer realm=\"")
            .unwrap_or_else(|| panic!("not a Bearer challenge with a realm first: {c}"));
        let (realm, rest) = rest
            .split_once('"')
            .unwrap_or_else(|| panic!("an unterminated realm: {c}"));
        assert!(!realm.is_empty(), "an empty realm: {c}");
        rest
    });
    let expected = match code {
        "token_missing" => "",
        "token_invalid" => ", error=\"invalid_token\"",
        "token_expired" => ", error=\"invalid_token\", error_description=\"token expired\"",
        "token_revoked" => ", error=\"invalid_token\", error_description=\"token revoked\"",
        "invalid_request" => {
            if after_realm.is_none() {
                return;
            }
            ", error=\"invalid_request\""
        }
        "insufficient_scope" => {
            let rest = after_realm.unwrap_or_else(|| panic!("no challenge for {code}"));
            let scope = rest
                .strip_prefix(", error=\"insufficient_scope\", scope=\"")
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no scope in the challenge: {challenge:?}"));
            assert!(!scope.is_empty(), "an empty scope: {challenge:?}");
            return;
        }
        "reauthentication_required" => {
            let rest = after_realm.unwrap_or_else(|| panic!("no challenge for {code}"));
            let max_age = rest
                .strip_prefix(", error=\"insufficient_user_authentication\", error_description=\"a more recent login is required\", max_age=")
                .unwrap_or_else(|| panic!("not an RFC 9470 challenge: {challenge:?}"));
            assert!(
                max_age.parse::<u64>().is_ok_and(|n| n > 0),
                "max_age: {challenge:?}"
            );
            return;
        }
        _ => {
            assert_eq!(challenge, None, "{code} is not challenged");
            return;
        }
    };
    let rest = after_realm.unwrap_or_else(|| panic!("no WWW-Authenticate for {code}"));
    assert_eq!(rest, expected, "WWW-Authenticate for {code}: {challenge:?}");
}
