//! Token verification through the whole gateway: algorithms, keys, claims
//! and the attacks a JWT verifier must refuse (RFC 8725).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::tokens::{encoding_key, now, raw_token, rsa_public_pem, sign_with_header};
use crate::support::*;

fn setup() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    (upstream, gateway)
}

#[track_caller]
fn assert_invalid(gateway: &TestGateway, upstream: &EchoUpstream, token: &str) {
    let response = get(gateway.addr, "/orders", &[&bearer(token)]);
    assert_refused(&response, 401, "token_invalid", upstream);
}

#[test]
fn every_algorithm_verifies_and_selects_its_key_by_kid() {
    let (upstream, gateway) = setup();
    for kid in [
        "test-eddsa",
        "test-eddsa-2",
        "test-es256",
        "test-rs256",
        "test-hs256",
    ] {
        upstream.clear();
        let token = sign(kid, &claims(&format!("user-{kid}")));
        let response = get(gateway.addr, "/orders", &[&bearer(&token)]);
        assert_eq!(response.status, 200, "{kid}: {}", response.text());
        assert_eq!(
            upstream.only().values("x-user-id"),
            [format!("user-{kid}").as_str()],
            "{kid}"
        );
    }
}

#[test]
fn a_token_signed_by_one_key_but_naming_another_kid_is_refused() {
    let (upstream, gateway) = setup();
    // Signed by test-eddsa-2 but claiming to be test-eddsa: rotation must
    // not mean "try every key".
    let (alg, key) = encoding_key("test-eddsa-2");
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some("test-eddsa".into());
    assert_invalid(
        &gateway,
        &upstream,
        &sign_with_header(&header, &key, &claims("alice")),
    );
}

#[test]
fn unknown_kid_is_refused() {
    let (upstream, gateway) = setup();
    let (alg, key) = encoding_key("test-eddsa");
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some("../../etc/passwd".into());
    assert_invalid(
        &gateway,
        &upstream,
        &sign_with_header(&header, &key, &claims("alice")),
    );
}

#[test]
fn missing_kid_is_refused_when_several_keys_exist() {
    let (upstream, gateway) = setup();
    let (alg, key) = encoding_key("test-eddsa");
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    assert_invalid(
        &gateway,
        &upstream,
        &sign_with_header(&header, &key, &claims("alice")),
    );
}

/// RFC 8725 §2.1: `alg: none` must never be accepted.
#[test]
fn alg_none_is_refused() {
    let (upstream, gateway) = setup();
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": "test-eddsa"});
    assert_invalid(
        &gateway,
        &upstream,
        &raw_token(&header, &claims("alice"), b""),
    );
    assert_invalid(
        &gateway,
        &upstream,
        &raw_token(&header, &claims("alice"), b"x"),
    );
}

/// RFC 8725 §2.1 / CVE-2016-10555: an HS256 token whose HMAC key is the
/// RSA public key, naming the RSA key's kid.
#[test]
fn hs256_signed_with_an_rsa_public_key_is_refused() {
    let (upstream, gateway) = setup();
    let key = EncodingKey::from_secret(&rsa_public_pem());
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("test-rs256".into());
    assert_invalid(
        &gateway,
        &upstream,
        &sign_with_header(&header, &key, &claims("alice")),
    );
}

/// RFC 9068 §4 / RFC 8725 §3.11: explicit typing keeps ID tokens and other
/// JWTs from being replayed as access tokens.
#[test]
fn wrong_or_missing_typ_is_refused() {
    let (upstream, gateway) = setup();
    let (alg, key) = encoding_key("test-eddsa");
    for typ in [Some("JWT"), Some("id_token+jwt"), None] {
        let mut header = Header::new(alg);
        header.typ = typ.map(Into::into);
        header.kid = Some("test-eddsa".into());
        assert_invalid(
            &gateway,
            &upstream,
            &sign_with_header(&header, &key, &claims("alice")),
        );
    }
    let mut header = Header::new(alg);
    header.typ = Some("application/AT+JWT".into());
    header.kid = Some("test-eddsa".into());
    let token = sign_with_header(&header, &key, &claims("alice"));
    assert_eq!(get(gateway.addr, "/orders", &[&bearer(&token)]).status, 200);
}

/// RFC 7515 §4.1.11: unknown critical extensions must be rejected.
#[test]
fn crit_header_is_refused() {
    let (upstream, gateway) = setup();
    let (alg, key) = encoding_key("test-eddsa");
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some("test-eddsa".into());
    header.crit = Some(vec!["exp".into()]);
    assert_invalid(
        &gateway,
        &upstream,
        &sign_with_header(&header, &key, &claims("alice")),
    );
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let (upstream, gateway) = setup();
    for changes in [
        json!({"iss": "https://evil.test"}),
        json!({"aud": "another-api"}),
        json!({"aud": ["another-api", "third"]}),
        json!({"iss": null}),
        json!({"aud": null}),
    ] {
        assert_invalid(
            &gateway,
            &upstream,
            &sign("test-eddsa", &claims_with("alice", changes)),
        );
    }
    let multi = sign(
        "test-eddsa",
        &claims_with("alice", json!({"aud": ["other", "api.test"]})),
    );
    assert_eq!(get(gateway.addr, "/orders", &[&bearer(&multi)]).status, 200);
}

#[test]
fn required_claims_must_be_present() {
    let (upstream, gateway) = setup();
    for claim in ["sub", "exp", "iat", "jti"] {
        let token = sign("test-eddsa", &claims_with("alice", json!({ claim: null })));
        assert_invalid(&gateway, &upstream, &token);
    }
}

#[test]
fn leeway_edges_for_exp_and_nbf() {
    let (upstream, gateway) = setup();
    let now = now();
    let within = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now - 300, "exp": now - 20})),
    );
    assert_eq!(
        get(gateway.addr, "/orders", &[&bearer(&within)]).status,
        200,
        "inside leeway"
    );
    let beyond = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now - 300, "exp": now - 40})),
    );
    let response = get(gateway.addr, "/orders", &[&bearer(&beyond)]);
    assert_eq!(response.header("x-portcullis-error"), Some("token_expired"));

    let soon = sign(
        "test-eddsa",
        &claims_with("alice", json!({"nbf": now + 20})),
    );
    assert_eq!(
        get(gateway.addr, "/orders", &[&bearer(&soon)]).status,
        200,
        "nbf inside leeway"
    );
    upstream.clear();
    let later = sign(
        "test-eddsa",
        &claims_with("alice", json!({"nbf": now + 120})),
    );
    assert_invalid(&gateway, &upstream, &later);
}

#[test]
fn oversized_and_malformed_tokens_are_refused() {
    let (upstream, gateway) = setup();
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(4000),
        "b".repeat(4000),
        "c".repeat(400)
    );
    assert_invalid(&gateway, &upstream, &huge);
    for garbage in ["abc", "a.b", "a.b.c.d", "....", "eyJ.eyJ.sig"] {
        assert_invalid(&gateway, &upstream, garbage);
    }
}

#[test]
fn cached_token_still_expires() {
    let (upstream, gateway) = setup();
    // exp at the leeway edge: valid now, expired two seconds later. The
    // first request caches it; the second must not be answered from cache.
    let now = now();
    let token = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now - 300, "exp": now - 29})),
    );
    assert_eq!(get(gateway.addr, "/orders", &[&bearer(&token)]).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    upstream.clear();
    let response = get(gateway.addr, "/orders", &[&bearer(&token)]);
    assert_refused(&response, 401, "token_expired", &upstream);
}

/// A token "issued" in the future would survive every logout-everywhere
/// cut-off, which compares against `iat`.
#[test]
fn iat_in_the_future_is_refused() {
    let (upstream, gateway) = setup();
    let now = now();
    let future = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now + 3600, "exp": now + 7200})),
    );
    assert_invalid(&gateway, &upstream, &future);
    let skewed = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now + 20})),
    );
    assert_eq!(
        get(gateway.addr, "/orders", &[&bearer(&skewed)]).status,
        200,
        "within leeway"
    );
}

/// A subject that cannot be a header value would reach the upstream as an
/// authenticated request without a user; a role with a comma would add
/// roles the token does not hold.
#[test]
fn identities_that_cannot_be_forwarded_faithfully_are_refused() {
    let (upstream, gateway) = setup();
    for changes in [
        json!({"sub": "alice\u{1}"}),
        json!({"sub": ""}),
        json!({"roles": ["user,admin"]}),
    ] {
        assert_invalid(
            &gateway,
            &upstream,
            &sign("test-eddsa", &claims_with("alice", changes)),
        );
    }
}
