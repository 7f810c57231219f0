//! Test tokens signed with the fixed fixture keys, including broken ones.

use std::path::PathBuf;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "api.test";

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn now() -> u64 {
    portcullis::auth::unix_now()
}

/// Valid claims for `sub`, expiring in five minutes.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub,
        "jti": format!("{:032x}", rand::random::<u128>()),
        "iat": now, "exp": now + 300,
    })
}

/// Claims with fields replaced or added (`null` removes a field).
pub fn claims_with(sub: &str, changes: Value) -> Value {
    let mut base = claims(sub);
    let map = base.as_object_mut().expect("object");
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    base
}

/// The fixture key that signs for `kid`.
pub fn encoding_key(kid: &str) -> (Algorithm, EncodingKey) {
    let key = |r: Result<EncodingKey, _>| r.expect("fixture key");
    match kid {
        "test-eddsa" => (
            Algorithm::EdDSA,
            key(EncodingKey::from_ed_pem(&fixture("test-eddsa.pem"))),
        ),
        "test-eddsa-2" => (
            Algorithm::EdDSA,
            key(EncodingKey::from_ed_pem(&fixture("test-eddsa-2.pem"))),
        ),
        "test-es256" => (
            Algorithm::ES256,
            key(EncodingKey::from_ec_pem(&fixture("test-es256.pem"))),
        ),
        "test-rs256" => (
            Algorithm::RS256,
            key(EncodingKey::from_rsa_pem(&fixture("test-rs256.pem"))),
        ),
        "test-hs256" => (
            Algorithm::HS256,
            EncodingKey::from_secret(&fixture("test-hs256.secret")),
        ),
        other => panic!("no fixture key {other}"),
    }
}

/// A well-formed access token for `claims`, signed by `kid`.
pub fn sign(kid: &str, claims: &Value) -> String {
    let (alg, key) = encoding_key(kid);
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// Signs with a custom header.
pub fn sign_with_header(header: &Header, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign")
}

/// A token assembled by hand: header and payload JSON, signature bytes.
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The public key PEM bytes of the RSA fixture, for key-confusion attacks.
pub fn rsa_public_pem() -> Vec<u8> {
    fixture("test-rs256.pub.pem")
}

/// Signs `claims` under a header given as raw JSON, so the header can hold
/// what `jsonwebtoken::Header` cannot express (`"crit": null`).
pub fn sign_raw_header(kid: &str, header: &Value, claims: &Value) -> String {
    let (alg, key) = encoding_key(kid);
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).expect("sign");
    format!("{message}.{signature}")
}
