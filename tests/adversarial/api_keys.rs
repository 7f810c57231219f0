//! API keys under attack: a key smuggled in the query string under every
//! spelling a backend folds to `api_key`, forged and mangled keys, a key
//! passed as a bearer token, two credentials at once, and identity headers
//! planted beside a valid key. Each refusal in the contract's exact shape,
//! nothing reaching the upstream; an admitted request carries only the
//! key's own identity.

use serde_json::json;

use super::{host, run, Case};
use crate::support::gateway::ADMIN_TOKEN;
use crate::support::*;

fn setup() -> (EchoUpstream, TestGateway, String) {
    let upstream = EchoUpstream::start();
    let config = format!(
        "{}\n[[routes]]\npath = \"/svc\"\nupstream = \"echo\"\nauth = \"required\"\napi_keys = true\n",
        standard_config(upstream.addr)
    );
    let gateway = TestGateway::start(&config);
    let body = json!({"sub": "svc-victim", "roles": ["reader"]}).to_string();
    let created = send(
        gateway.admin,
        &format!(
            "POST /admin/api-keys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let key = created.json()["key"].as_str().expect("key").to_owned();
    (upstream, gateway, key)
}

fn get_with(target: &str, lines: &[String]) -> String {
    let mut request = host(&format!("GET {target} HTTP/1.1"));
    for line in lines {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

fn cases(key: &str) -> Vec<Case> {
    let (id, secret) = (&key[4..20], &key[21..]);
    let header = |value: &str| vec![format!("X-Api-Key: {value}")];
    let token = sign("test-eddsa", &claims("alice"));
    vec![
        // The query string, in the spellings `query_has_access_token` folds.
        (
            "query api_key",
            get_with(&format!("/svc?api_key={key}"), &[]),
            400,
            "invalid_request",
        ),
        (
            "query escaped name",
            get_with(&format!("/public?api%5Fkey={key}"), &[]),
            400,
            "invalid_request",
        ),
        (
            "query double escape",
            get_with(&format!("/public?x=%26api_key%3D{key}"), &[]),
            400,
            "invalid_request",
        ),
        (
            "query bracket member",
            get_with(&format!("/public?a[api_key]={key}"), &[]),
            400,
            "invalid_request",
        ),
        (
            "query fullwidth",
            get_with(&format!("/public?%EF%BD%81pi_key={key}"), &[]),
            400,
            "invalid_request",
        ),
        (
            "query semicolon",
            get_with(&format!("/public?x=1;X-API-KEY={key}"), &[]),
            400,
            "invalid_request",
        ),
        // Forged and mangled keys: nobody's.
        (
            "another id, same secret",
            get_with("/svc", &header(&format!("pck_{}_{secret}", "f".repeat(16)))),
            401,
            "token_invalid",
        ),
        (
            "upper-case id",
            get_with(
                "/svc",
                &header(&format!("pck_{}_{secret}", id.to_ascii_uppercase())),
            ),
            401,
            "token_invalid",
        ),
        (
            "truncated",
            get_with("/svc", &header(&key[..key.len() - 1])),
            401,
            "token_invalid",
        ),
        (
            "padded",
            get_with("/svc", &header(&format!("{key}="))),
            401,
            "token_invalid",
        ),
        (
            "id only",
            get_with("/svc", &header(&format!("pck_{id}"))),
            401,
            "token_invalid",
        ),
        (
            "oversized",
            get_with("/svc", &header(&"A".repeat(4000))),
            401,
            "token_invalid",
        ),
        (
            "key inside a list",
            get_with("/svc", &header(&format!("{key}, {key}"))),
            401,
            "token_invalid",
        ),
        // A key is no bearer token, and one credential per request.
        (
            "key as bearer",
            get_with("/svc", &[format!("Authorization: Bearer {key}")]),
            401,
            "token_invalid",
        ),
        (
            "key and bearer",
            get_with(
                "/svc",
                &[
                    format!("X-Api-Key: {key}"),
                    format!("Authorization: Bearer {token}"),
                ],
            ),
            400,
            "invalid_request",
        ),
        (
            "two X-Api-Key",
            get_with(
                "/svc",
                &[format!("X-Api-Key: {key}"), format!("x-api-key: {key}")],
            ),
            400,
            "invalid_request",
        ),
        (
            "header and scheme",
            get_with(
                "/svc",
                &[
                    format!("X-Api-Key: {key}"),
                    format!("Authorization: apikey {key}"),
                ],
            ),
            400,
            "invalid_request",
        ),
        (
            "empty scheme",
            get_with("/svc", &["Authorization: ApiKey".to_owned()]),
            400,
            "invalid_request",
        ),
        // A route that does not take keys has no credential in them.
        (
            "key on a token route",
            get_with("/orders", &header(key)),
            401,
            "token_missing",
        ),
    ]
}

#[test]
fn forged_smuggled_and_doubled_keys_are_refused() {
    let (upstream, gateway, key) = setup();
    run(&gateway, &upstream, &cases(&key));
}

/// Identity headers planted beside a valid key, in any spelling, never
/// reach the upstream: it sees the key's subject and kind only.
#[test]
fn planted_identity_beside_a_key_is_replaced_by_the_keys() {
    let (upstream, gateway, key) = setup();
    let response = get(
        gateway.addr,
        "/svc",
        &[
            &format!("X-Api-Key: {key}"),
            "X-User-Id: admin",
            "x_user_roles: admin",
            "X-User-Credential: token",
            "X-Session-Id: stolen",
        ],
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.only();
    assert_eq!(seen.folded("x-user-id"), [("x-user-id", "svc-victim")]);
    assert_eq!(seen.folded("x-user-roles"), [("x-user-roles", "reader")]);
    assert_eq!(
        seen.folded("x-user-credential"),
        [("x-user-credential", "api_key")]
    );
    assert!(seen.folded("x-session-id").is_empty());
    assert!(seen.folded("x-api-key").is_empty());
}
