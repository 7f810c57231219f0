//! Tokens from an external identity provider, keys from a JWKS served on
//! loopback that rotates, goes down and comes back.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::auth::keys::KeyMaterial;
use portcullis::auth::Keyring;
use portcullis::config::raw::KeyAlgorithm;
use serde_json::{json, Value};

use crate::support::gateway::{standard_config, ADMIN_TOKEN};
use crate::support::tokens::{encoding_key, fixtures_dir, now};
use crate::support::*;

const IDP: &str = "https://idp.test/";

/// A JWKS endpoint whose answer the test changes; "down" answers 503, a
/// redirect answers 302 to its location.
struct JwksServer {
    addr: SocketAddr,
    state: Arc<Mutex<JwksState>>,
}

struct JwksState {
    body: String,
    up: bool,
    hits: usize,
    redirect: Option<String>,
}

impl JwksServer {
    fn start(keys: &[(&str, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(JwksState {
            body: jwks(keys),
            up: true,
            hits: 0,
            redirect: None,
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let (body, up, redirect) = {
                    let mut s = shared.lock().expect("lock");
                    s.hits += 1;
                    (s.body.clone(), s.up, s.redirect.clone())
                };
                let response = if let Some(location) = redirect {
                    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                } else if up {
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: max-age=3600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                };
                let _ = (&stream).write_all(response.as_bytes());
            }
        });
        Self { addr, state }
    }

    fn publish(&self, keys: &[(&str, &str)]) {
        self.state.lock().expect("lock").body = jwks(keys);
    }

    fn set_up(&self, up: bool) {
        self.state.lock().expect("lock").up = up;
    }

    fn redirect_to(&self, location: Option<String>) {
        self.state.lock().expect("lock").redirect = location;
    }

    fn hits(&self) -> usize {
        self.state.lock().expect("lock").hits
    }
}

/// A JWK set of fixture keys: (published kid, fixture kid). The JWKs come
/// from the same conversion the gateway publishes its own keys with, which
/// the session tests check against jsonwebtoken's own reader.
fn jwks(keys: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, fixture)| {
            let algorithm = match *fixture {
                "test-rs256" => KeyAlgorithm::RS256,
                "test-es256" => KeyAlgorithm::ES256,
                _ => KeyAlgorithm::EdDSA,
            };
            let pem =
                std::fs::read(fixtures_dir().join(format!("{fixture}.pub.pem"))).expect("fixture");
            let mut ring = Keyring::default();
            ring.add(kid, algorithm, KeyMaterial::PublicPem(&pem))
                .expect("key");
            let jwk = ring.get(kid).and_then(|k| k.jwk.clone()).expect("jwk");
            let _: Jwk = serde_json::from_value(jwk.clone()).expect("a valid JWK");
            jwk
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn idp_token(kid: &str, fixture: &str, sub: &str) -> String {
    let (alg, key) = encoding_key(fixture);
    idp_token_with(
        kid,
        alg,
        &key,
        json!({"iss": IDP, "aud": "api.test", "sub": sub, "iat": now() - 5, "exp": now() + 300}),
    )
}

fn idp_token_with(kid: &str, alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.typ = Some("JWT".into());
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

fn setup(jwks: &JwksServer) -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&issuer_config(&upstream, jwks));
    (upstream, gateway)
}

/// The standard configuration plus the provider at `jwks`.
fn issuer_config(upstream: &EchoUpstream, jwks: &JwksServer) -> String {
    format!(
        "{}\n[[issuers]]\nissuer = \"{IDP}\"\naudience = \"api.test\"\njwks_url = \"http://{}/jwks.json\"\ntyp = [\"JWT\", \"at+jwt\"]\nunknown_kid_cooldown = \"1s\"\n",
        standard_config(upstream.addr),
        jwks.addr
    )
}

fn status(gateway: &TestGateway, token: &str) -> (u16, Option<String>) {
    let response = get(gateway.addr, "/orders", &[&bearer(token)]);
    (
        response.status,
        response.header("x-portcullis-error").map(str::to_owned),
    )
}

#[test]
fn a_provider_that_rotates_goes_down_and_comes_back() {
    let jwks = JwksServer::start(&[("idp-1", "test-rs256")]);
    let (upstream, gateway) = setup(&jwks);
    assert_eq!(
        status(&gateway, &idp_token("idp-1", "test-rs256", "erin")).0,
        200
    );
    assert_eq!(upstream.only().values("x-user-id"), ["erin"]);

    // Rotation: a new kid is fetched on first sight.
    jwks.publish(&[("idp-2", "test-es256")]);
    let rotated = idp_token("idp-2", "test-es256", "erin");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&gateway, &rotated).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the rotated key was never fetched"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Down: the last good keys keep serving; an unknown kid cannot be fetched.
    jwks.set_up(false);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(status(&gateway, &rotated).0, 200, "last good keys");
    let newer = idp_token("idp-3", "test-eddsa-2", "erin");
    assert_eq!(
        status(&gateway, &newer),
        (401, Some("token_invalid".into()))
    );

    // Back, with the newer key.
    jwks.publish(&[("idp-3", "test-eddsa-2")]);
    jwks.set_up(true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&gateway, &newer).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the provider came back but its key was not fetched"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn unknown_kids_cannot_hammer_the_provider() {
    let jwks = JwksServer::start(&[("idp-1", "test-rs256")]);
    let (_upstream, gateway) = setup(&jwks);
    assert_eq!(
        status(&gateway, &idp_token("idp-1", "test-rs256", "fay")).0,
        200
    );
    let before = jwks.hits();
    for i in 0..20 {
        let token = idp_token(&format!("forged-{i}"), "test-rs256", "fay");
        assert_eq!(
            status(&gateway, &token),
            (401, Some("token_invalid".into()))
        );
    }
    assert!(
        jwks.hits() - before <= 2,
        "{} fetches for 20 unknown kids within the cooldown",
        jwks.hits() - before
    );
}

#[test]
fn no_keys_at_all_is_auth_unavailable_not_invalid() {
    let jwks = JwksServer::start(&[("idp-1", "test-rs256")]);
    jwks.set_up(false);
    let (upstream, gateway) = setup(&jwks);
    let response = get(
        gateway.addr,
        "/orders",
        &[&bearer(&idp_token("idp-1", "test-rs256", "gus"))],
    );
    assert_refused(&response, 503, "auth_unavailable", &upstream);
    assert_eq!(
        get(gateway.admin, "/readyz", &[]).status,
        503,
        "not ready without the issuer's keys"
    );
}

#[test]
fn external_tokens_go_through_revocation_and_their_issuers_rules() {
    let jwks = JwksServer::start(&[("idp-1", "test-rs256")]);
    let (upstream, gateway) = setup(&jwks);
    let token = idp_token("idp-1", "test-rs256", "hank");
    assert_eq!(status(&gateway, &token).0, 200);
    let revoke = send(
        gateway.admin,
        &format!("POST /admin/users/hank/revoke HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n"),
    );
    assert_eq!(revoke.status, 200);
    assert_eq!(
        status(&gateway, &token),
        (401, Some("token_revoked".into())),
        "cut-off by iat"
    );

    let (alg, key) = encoding_key("test-rs256");
    let no_iat = idp_token_with(
        "idp-1",
        alg,
        &key,
        json!({"iss": IDP, "aud": "api.test", "sub": "ivy", "exp": now() + 300}),
    );
    upstream.clear();
    assert_refused(
        &get(gateway.addr, "/orders", &[&bearer(&no_iat)]),
        401,
        "token_invalid",
        &upstream,
    );
    let mut header = Header::new(alg);
    header.typ = Some("id_token+jwt".into());
    header.kid = Some("idp-1".into());
    let wrong_typ = jsonwebtoken::encode(
        &header,
        &json!({"iss": IDP, "aud": "api.test", "sub": "ivy", "iat": now(), "exp": now() + 300}),
        &key,
    )
    .expect("sign");
    assert_refused(
        &get(gateway.addr, "/orders", &[&bearer(&wrong_typ)]),
        401,
        "token_invalid",
        &upstream,
    );
}

/// A provider cannot hand out a shared secret: `oct` keys in a JWKS are
/// ignored, so an HS256 token signed with it is refused as invalid (the
/// provider answered; it is not unavailable), the fetch is logged and
/// counted as failed (no usable signing key), and `/readyz` says the
/// issuer has no keys.
#[test]
fn symmetric_keys_from_a_jwks_are_never_used() {
    let jwks = JwksServer::start(&[("idp-1", "test-rs256")]);
    let secret = b"0123456789abcdef0123456789abcdef";
    let oct = json!({"keys": [{"kty": "oct", "kid": "shared", "alg": "HS256", "k": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret)}]});
    jwks.state.lock().expect("lock").body = oct.to_string();
    let upstream = EchoUpstream::start();
    let gateway = crate::support::binary::Launch::new(&issuer_config(&upstream, &jwks))
        .json()
        .start();
    let token = idp_token_with(
        "shared",
        Algorithm::HS256,
        &EncodingKey::from_secret(secret),
        json!({"iss": IDP, "aud": "api.test", "sub": "jo", "iat": now(), "exp": now() + 300}),
    );
    let response = get(gateway.addr, "/orders", &[&bearer(&token)]);
    assert_refused(&response, 401, "token_invalid", &upstream);
    assert!(jwks.hits() >= 1, "the JWKS was fetched");
    let failed = gateway.wait_for_json(|l| {
        l["level"] == "WARN"
            && l["error"]
                .as_str()
                .is_some_and(|e| e.ends_with("holds no usable signing key"))
    });
    assert_eq!(
        failed["message"],
        "JWKS fetch failed; serving the last good keys"
    );
    let metrics = get(gateway.admin, "/metrics", &[]).text();
    let fetches = |outcome: &str| -> u64 {
        let series = format!("portcullis_jwks_fetches_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
            .unwrap_or_else(|| panic!("no {series}"))
    };
    assert!(fetches("error") >= 1, "the fetch is counted as failed");
    assert_eq!(fetches("ok"), 0);
    assert_eq!(get(gateway.admin, "/readyz", &[]).status, 503);
}

/// Other issuers use `ver` and `sid` for their own purposes: a string
/// `ver` must not break the token, and neither may meet the gateway's own
/// versions or sessions. Such a token without `jti` cannot be logged out
/// one by one.
#[test]
fn foreign_ver_and_sid_are_not_the_gateways() {
    let jwks = JwksServer::start(&[("idp-1", "test-rs256")]);
    let (_upstream, gateway) = setup(&jwks);
    let (alg, key) = encoding_key("test-rs256");
    let claims = json!({"iss": IDP, "aud": "api.test", "sub": "kim", "iat": now() - 5, "exp": now() + 300, "ver": "2.0", "sid": "idp-session"});
    let token = idp_token_with("idp-1", alg, &key, claims);
    assert_eq!(
        status(&gateway, &token).0,
        200,
        "a string ver is not the gateway's"
    );
    let out = post(gateway.addr, "/auth/logout", &[&bearer(&token)], "");
    assert_eq!(
        (out.status, out.header("x-portcullis-error")),
        (400, Some("invalid_request")),
        "{}",
        out.text()
    );
    assert_eq!(status(&gateway, &token).0, 200);
}

/// A JWKS fetch never follows a redirect: whoever can answer for the
/// configured URL (or an http:// hop it points to) must not be able to
/// swap the keys. A 3xx is a failed fetch and the last good keys stay.
/// (RFC 8725 §3.10: fetch keys only from the configured location.)
#[test]
fn jwks_redirects_are_never_followed_and_the_last_good_keys_stay() {
    let elsewhere = JwksServer::start(&[("idp-evil", "test-es256")]);
    let jwks = JwksServer::start(&[("idp-1", "test-rs256")]);
    let evil_location = format!("http://{}/jwks.json", elsewhere.addr);
    jwks.redirect_to(Some(evil_location.clone()));
    let (upstream, gateway) = setup(&jwks);
    let evil = idp_token("idp-evil", "test-es256", "mallory");
    assert_refused(
        &get(gateway.addr, "/orders", &[&bearer(&evil)]),
        503,
        "auth_unavailable",
        &upstream,
    );

    // The provider serves its own keys again; they are fetched.
    jwks.redirect_to(None);
    let good = idp_token("idp-1", "test-rs256", "erin");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&gateway, &good).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the good keys were never fetched"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // It redirects again: the unknown kid makes the gateway refetch (seen
    // by the provider), the redirect fails that fetch, the good keys stay.
    jwks.redirect_to(Some(evil_location));
    upstream.clear();
    let before = jwks.hits();
    let deadline = Instant::now() + Duration::from_secs(5);
    while jwks.hits() == before {
        assert!(Instant::now() < deadline, "no refetch for the unknown kid");
        assert_refused(
            &get(gateway.addr, "/orders", &[&bearer(&evil)]),
            401,
            "token_invalid",
            &upstream,
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_refused(
        &get(gateway.addr, "/orders", &[&bearer(&evil)]),
        401,
        "token_invalid",
        &upstream,
    );
    assert_eq!(status(&gateway, &good).0, 200, "last good keys");
    assert_eq!(elsewhere.hits(), 0, "the redirect target was never asked");
}
