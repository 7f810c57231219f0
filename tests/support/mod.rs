//! Shared test harness: real gateway, real upstream, real sockets.
#![allow(dead_code)]

pub mod binary;
pub mod gateway;
pub mod http;
pub mod redis;
pub mod tokens;

pub use gateway::{standard_config, TestGateway};
pub use http::{curl_https, get, post, send, tls_fixtures, tls_listener, EchoUpstream, Response};
pub use tokens::{bearer, claims, claims_with, sign};

/// Asserts a gateway refusal in the contract's exact shape, and that the
/// upstream saw nothing.
#[track_caller]
pub fn assert_refused(response: &Response, status: u16, code: &str, upstream: &EchoUpstream) {
    assert_eq!(response.status, status, "status; body: {}", response.text());
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
