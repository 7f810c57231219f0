//! Claims whose shape the gateway must not guess at: a `ver` that is not a
//! version number, and `roles` in every shape a token can give it. Each
//! refusal is asserted in the contract's exact shape, with nothing reaching
//! the upstream.

use serde_json::{json, Value};

use crate::support::*;

fn setup() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    (upstream, gateway)
}

/// The gateway's own claims with `member` set to `value`, `null` included
/// (`claims_with` reads `null` as "remove").
fn own_claims(member: &str, value: Value) -> Value {
    let mut claims = claims_with("mallory", json!({}));
    claims
        .as_object_mut()
        .expect("object")
        .insert(member.to_owned(), value);
    claims
}

/// `ver` exists for logout everywhere (a token below the user's version is
/// revoked). One that reads as no version at all (a string, a fraction, a
/// negative number, `null`) or one the store cannot hold (2^63 and above)
/// would skip that check, so the gateway's own tokens carrying one are
/// token_invalid; before, they were accepted and the `ver` ignored.
#[test]
fn own_tokens_with_a_ver_that_is_no_version_number_are_token_invalid() {
    let (upstream, gateway) = setup();
    for ver in [
        json!("1"),
        json!("2.0"),
        json!(""),
        json!(1.0),
        json!(1.5),
        json!(-1),
        json!(i64::MIN),
        json!(1u64 << 63),
        json!(u64::MAX),
        json!(1e19),
        json!(null),
        json!(true),
        json!([1]),
        json!({"v": 1}),
    ] {
        eprintln!("case ver = {ver}");
        upstream.clear();
        let token = sign("test-eddsa", &own_claims("ver", ver));
        assert_refused(
            &get(gateway.addr, "/orders", &[&bearer(&token)]),
            401,
            "token_invalid",
            &upstream,
        );
    }
    for ver in [json!(0), json!(7), json!(i64::MAX)] {
        let token = sign("test-eddsa", &own_claims("ver", ver.clone()));
        let ok = get(gateway.addr, "/orders", &[&bearer(&token)]);
        assert_eq!(ok.status, 200, "ver = {ver}: {}", ok.text());
    }
}

/// `roles` as one string is one role, as identity providers write it and
/// oauth2-proxy and Spring Security read it; it is never split, so a
/// space-separated string does not grant the roles it lists, and a comma
/// (the roles header's separator) makes the token token_invalid. Any other
/// shape is token_invalid.
#[test]
fn roles_as_a_string_is_one_role_and_every_other_shape_is_token_invalid() {
    let (upstream, gateway) = setup();
    let admin = |roles: Value| {
        let token = sign("test-eddsa", &own_claims("roles", roles));
        get(gateway.addr, "/admin/x", &[&bearer(&token)])
    };

    let one = admin(json!("admin"));
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(upstream.only().values("x-user-roles"), ["admin"]);

    for roles in [json!("user admin"), json!("ADMIN"), json!(" admin")] {
        eprintln!("case roles = {roles}");
        upstream.clear();
        assert_refused(&admin(roles), 403, "insufficient_scope", &upstream);
    }
    for roles in [
        json!("user,admin"),
        json!(["user,admin"]),
        json!(""),
        json!(null),
        json!(1),
        json!(true),
        json!({"admin": true}),
        json!([1]),
        json!(["admin", null]),
        json!([["admin"]]),
    ] {
        eprintln!("case roles = {roles}");
        upstream.clear();
        assert_refused(&admin(roles), 401, "token_invalid", &upstream);
    }
}
