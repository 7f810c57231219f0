//! Sessions served by the gateway, on SQLite, Redis and a Redis Cluster: login through the
//! backend, refresh with rotation and reuse detection, logout, devices,
//! browsers, trusted issuance and the JWKS.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::gateway::{standard_config, ADMIN_TOKEN};
use crate::support::http::Recorded;
use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::*;

/// The legacy backend's own credential check: alice/secret and root/toor.
fn login_backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let body = String::from_utf8_lossy(&request.body).into_owned();
    let ok = |sub: &str, roles: &str, claims: &str| {
        let lines = vec![
            format!("X-Auth-Subject: {sub}"),
            format!("X-Auth-Roles: {roles}"),
            format!("X-Auth-Claims: {claims}"),
            "Set-Cookie: legacy=1".to_owned(),
        ];
        (200, lines, b"<html>welcome</html>".to_vec())
    };
    if body.contains("username=alice&password=secret") {
        return ok(
            "alice",
            "user",
            r#"{"email":"alice@example.com","sub":"mallory"}"#,
        );
    }
    if body.contains("username=root&password=toor") {
        return ok("root", "admin, user", r#"{"email":"root@example.com"}"#);
    }
    let lines = vec![
        "Content-Type: text/plain".to_owned(),
        "X-Auth-Subject: mallory".to_owned(),
        "X-Legacy: kept".to_owned(),
    ];
    (401, lines, b"wrong password".to_vec())
}

/// A gateway with `[login]` and `[sessions]`, on SQLite or on `redis`.
struct Setup {
    upstream: EchoUpstream,
    login: EchoUpstream,
    gateway: TestGateway,
    _redis: Option<RedisServer>,
    /// On the shared cluster: this test's key prefix.
    cluster_prefix: Option<String>,
}

fn setup(store: Store, sessions: &str) -> Setup {
    let upstream = EchoUpstream::start();
    let login = EchoUpstream::start_with(login_backend);
    let redis = (store == Store::Redis).then(RedisServer::start);
    let cluster_prefix = (store == Store::Cluster).then(RedisCluster::fresh_prefix);
    let store_table = match (&redis, &cluster_prefix) {
        (Some(r), _) => format!("[store]\nurl = \"{}\"\n", r.url()),
        (None, Some(prefix)) => format!(
            "[store]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
            RedisCluster::shared().url()
        ),
        (None, None) => String::new(),
    };
    let config = format!(
        "{}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n\n[sessions]\n{sessions}\n\n{store_table}",
        standard_config(upstream.addr),
        login.addr
    );
    let gateway = TestGateway::start(&config);
    Setup {
        upstream,
        login,
        gateway,
        _redis: redis,
        cluster_prefix,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Sqlite,
    Redis,
    Cluster,
}

/// Runs each flow on both stores as separate tests.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[test] fn $name() { super::$name(super::Store::Sqlite) } )* }
        mod on_redis { $( #[test] fn $name() { super::$name(super::Store::Redis) } )* }
        mod on_cluster { $( #[test] fn $name() { super::$name(super::Store::Cluster) } )* }
    };
}

on_both_stores!(
    full_flow_login_call_refresh_devices_logout,
    replayed_refresh_token_kills_the_family,
    concurrent_refreshes_without_grace_leave_one_winner_then_revoke,
    concurrent_refreshes_within_grace_all_get_the_winning_pair,
    absolute_lifetime_ends_the_session_mid_rotation,
    refresh_fails_after_bump_disable_and_device_revocation,
    no_refresh_token_is_stored_in_clear,
);

fn login(s: &Setup, user: &str, password: &str, device: &str) -> Response {
    post(
        s.gateway.addr,
        "/auth/login",
        &[
            "Content-Type: application/x-www-form-urlencoded",
            &format!("User-Agent: {device}"),
        ],
        &format!("username={user}&password={password}"),
    )
}

fn pair(response: &Response) -> (String, String) {
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    (
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
    )
}

fn refresh(s: &Setup, refresh_token: &str) -> Response {
    post(
        s.gateway.addr,
        "/auth/token",
        &["Content-Type: application/x-www-form-urlencoded"],
        &format!("grant_type=refresh_token&refresh_token={refresh_token}"),
    )
}

fn call(s: &Setup, access_token: &str) -> Response {
    get(s.gateway.addr, "/orders", &[&bearer(access_token)])
}

#[track_caller]
fn assert_invalid_grant(response: &Response) {
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_grant");
    assert_eq!(response.header("x-portcullis-error"), Some("invalid_grant"));
}

fn full_flow_login_call_refresh_devices_logout(store: Store) {
    let s = setup(store, "");
    let response = login(&s, "alice", "secret", "Alice's phone");
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(
        response.header("x-auth-subject"),
        None,
        "identity headers never reach the client"
    );
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let (access, refresh_token) = pair(&response);
    assert_eq!(
        s.login.only().body,
        b"username=alice&password=secret",
        "the backend got the client's body"
    );

    assert_eq!(call(&s, &access).status, 200);
    let seen = s.upstream.only();
    assert_eq!(seen.values("x-user-id"), ["alice"]);
    assert_eq!(seen.values("x-user-roles"), ["user"]);
    assert_eq!(seen.values("x-user-email"), ["alice@example.com"]);
    let sid = seen.values("x-session-id")[0].to_owned();

    let (access2, refresh2) = pair(&refresh(&s, &refresh_token));
    assert_ne!(refresh2, refresh_token, "every refresh rotates");
    assert_eq!(call(&s, &access2).status, 200);

    let second = login(&s, "alice", "secret", "Alice's laptop");
    let (laptop_access, _) = pair(&second);
    let devices = get(s.gateway.addr, "/auth/sessions", &[&bearer(&access2)]).json();
    let sessions = devices["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "{devices}");
    let current: Vec<&Value> = sessions.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["sid"], sid.as_str());
    assert_eq!(current[0]["device"], "Alice's phone");

    let out = post(s.gateway.addr, "/auth/logout", &[&bearer(&access2)], "");
    assert_eq!(out.status, 200, "{}", out.text());
    s.upstream.clear();
    assert_refused(&call(&s, &access2), 401, "token_revoked", &s.upstream);
    assert_refused(&call(&s, &access), 401, "token_revoked", &s.upstream);
    assert_invalid_grant(&refresh(&s, &refresh2));
    assert_eq!(
        call(&s, &laptop_access).status,
        200,
        "the other device stays logged in"
    );
}

#[test]
fn login_passes_a_backend_refusal_through_unchanged() {
    let s = setup(Store::Sqlite, "");
    let response = login(&s, "alice", "wrong", "phone");
    assert_eq!(response.status, 401);
    assert_eq!(response.text(), "wrong password");
    assert_eq!(response.header("x-legacy"), Some("kept"));
    assert_eq!(response.header("x-auth-subject"), None);
    assert_eq!(
        response.header("x-portcullis-error"),
        None,
        "not a gateway refusal"
    );
}

#[test]
fn a_disabled_user_cannot_log_in() {
    let s = setup(Store::Sqlite, "");
    let disable = send(
        s.gateway.admin,
        &format!("POST /admin/users/alice/disable HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n"),
    );
    assert_eq!(disable.status, 200);
    let response = login(&s, "alice", "secret", "phone");
    assert_eq!(
        (response.status, response.header("x-portcullis-error")),
        (403, Some("account_disabled"))
    );
}

fn replayed_refresh_token_kills_the_family(store: Store) {
    let s = setup(store, "reuse_grace = \"0s\"");
    let (_, first) = pair(&login(&s, "alice", "secret", "phone"));
    let (access, second) = pair(&refresh(&s, &first));
    assert_invalid_grant(&refresh(&s, &first));
    assert_invalid_grant(&refresh(&s, &second));
    s.upstream.clear();
    assert_refused(&call(&s, &access), 401, "token_revoked", &s.upstream);
}

/// 50 clients present the same refresh token at once.
fn refresh_all_at_once(s: &Setup, token: &str) -> Vec<Response> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50).map(|_| scope.spawn(|| refresh(s, token))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

fn concurrent_refreshes_without_grace_leave_one_winner_then_revoke(store: Store) {
    let s = setup(store, "reuse_grace = \"0s\"\nmax_failures = 1000");
    let (_, token) = pair(&login(&s, "alice", "secret", "phone"));
    let responses = refresh_all_at_once(&s, &token);
    let winners: Vec<&Response> = responses.iter().filter(|r| r.status == 200).collect();
    let outcomes: Vec<String> = responses
        .iter()
        .map(|r| format!("{} {}", r.status, r.text()))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one rotation wins: {outcomes:#?}");
    assert!(responses
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.json()["error"] == "invalid_grant"));
    let (access, next) = pair(winners[0]);
    assert_invalid_grant(&refresh(&s, &next));
    assert_eq!(
        call(&s, &access).header("x-portcullis-error"),
        Some("token_revoked"),
        "the family is revoked"
    );
}

fn concurrent_refreshes_within_grace_all_get_the_winning_pair(store: Store) {
    let s = setup(store, "");
    let (_, token) = pair(&login(&s, "alice", "secret", "phone"));
    let responses = refresh_all_at_once(&s, &token);
    let pairs: Vec<(String, String)> = responses.iter().map(pair).collect();
    assert!(
        pairs.iter().all(|p| p == &pairs[0]),
        "every tab gets the same, winning pair"
    );
    let (access, next) = &pairs[0];
    assert_eq!(call(&s, access).status, 200);
    let (_, after) = pair(&refresh(&s, next));
    assert_ne!(&after, next, "the session stays alive and keeps rotating");
}

fn absolute_lifetime_ends_the_session_mid_rotation(store: Store) {
    let s = setup(store, "max_age = \"3s\"\nrefresh_ttl = \"1h\"");
    let response = login(&s, "alice", "secret", "phone");
    assert!(
        response.json()["expires_in"].as_u64().expect("expires_in") <= 3,
        "no token outlives its session"
    );
    let (_, first) = pair(&response);
    let (_, second) = pair(&refresh(&s, &first));
    std::thread::sleep(Duration::from_millis(3100));
    assert_invalid_grant(&refresh(&s, &second));
}

fn refresh_fails_after_bump_disable_and_device_revocation(store: Store) {
    let s = setup(store, "");
    let admin = |method: &str, path: &str| {
        send(
            s.gateway.admin,
            &format!("{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n"),
        )
    };

    let (_, bumped) = pair(&login(&s, "alice", "secret", "phone"));
    assert_eq!(admin("POST", "/admin/users/alice/revoke").status, 200);
    assert_invalid_grant(&refresh(&s, &bumped));

    let (_, disabled) = pair(&login(&s, "root", "toor", "desk"));
    assert_eq!(admin("POST", "/admin/users/root/disable").status, 200);
    assert_invalid_grant(&refresh(&s, &disabled));

    std::thread::sleep(Duration::from_millis(1100)); // past the bump's cut-off second
    let (phone_access, phone) = pair(&login(&s, "alice", "secret", "phone"));
    let (tablet_access, tablet) = pair(&login(&s, "alice", "secret", "lost iPad"));
    let devices = get(s.gateway.addr, "/auth/sessions", &[&bearer(&phone_access)]).json();
    let ipad = devices["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["device"] == "lost iPad")
        .expect("iPad")["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let gone = send(
        s.gateway.addr,
        &format!("DELETE /auth/sessions/{ipad} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {phone_access}\r\n\r\n"),
    );
    assert_eq!(gone.status, 200, "{}", gone.text());
    assert_invalid_grant(&refresh(&s, &tablet));
    assert_eq!(
        call(&s, &tablet_access).header("x-portcullis-error"),
        Some("token_revoked")
    );

    let (_, phone2) = pair(&refresh(&s, &phone));
    let phone_sid = devices["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["current"] == true)
        .expect("current")["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    assert_eq!(
        admin("DELETE", &format!("/admin/sessions/{phone_sid}")).status,
        200
    );
    assert_invalid_grant(&refresh(&s, &phone2));
}

fn no_refresh_token_is_stored_in_clear(store: Store) {
    let s = setup(store, "");
    let mut secrets = Vec::new();
    for i in 0..100 {
        let (_, token) = pair(&login(&s, "alice", "secret", &format!("device {i}")));
        secrets.push(token["prt_".len()..].to_owned());
    }
    let stored: Vec<u8> = match (&s._redis, &s.cluster_prefix) {
        (Some(redis), _) => redis_dump(&mut redis.connection(), "*"),
        (None, Some(prefix)) => redis_dump(
            &mut RedisCluster::shared().connection(),
            &format!("{{{prefix}}}:*"),
        ),
        (None, None) => ["gateway.db", "gateway.db-wal"]
            .iter()
            .filter_map(|f| std::fs::read(s.gateway.dir.path().join(f)).ok())
            .flatten()
            .collect(),
    };
    assert!(stored.len() > 1000, "the store holds the 100 sessions");
    let text = String::from_utf8_lossy(&stored);
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a refresh token is stored in clear"
        );
    }
}

/// Every key matching `pattern` and its value, as bytes.
fn redis_dump(conn: &mut impl ::redis::ConnectionLike, pattern: &str) -> Vec<u8> {
    let keys: Vec<String> = ::redis::cmd("KEYS").arg(pattern).query(conn).expect("keys");
    let mut out = Vec::new();
    for key in keys {
        out.extend_from_slice(key.as_bytes());
        let dumped: Vec<u8> = ::redis::cmd("DUMP").arg(&key).query(conn).expect("dump");
        out.extend_from_slice(&dumped);
        if let Ok(fields) = ::redis::cmd("HGETALL")
            .arg(&key)
            .query::<Vec<Vec<u8>>>(conn)
        {
            out.extend(fields.into_iter().flatten());
        }
        if let Ok(value) = ::redis::cmd("GET").arg(&key).query::<Vec<u8>>(conn) {
            out.extend_from_slice(&value);
        }
    }
    out
}

#[test]
fn refresh_errors_follow_rfc_6749_and_repeated_failures_are_slowed() {
    let s = setup(Store::Sqlite, "max_failures = 3\nfailure_window = \"1m\"");
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let missing = post(s.gateway.addr, "/auth/token", &form, "refresh_token=x");
    assert_eq!(
        (missing.status, missing.json()["error"].clone()),
        (400, json!("invalid_request"))
    );
    let wrong = post(
        s.gateway.addr,
        "/auth/token",
        &form,
        "grant_type=password&username=a",
    );
    assert_eq!(
        (wrong.status, wrong.json()["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );

    let (_, token) = pair(&login(&s, "alice", "secret", "phone"));
    let as_json = post(
        s.gateway.addr,
        "/auth/token",
        &["Content-Type: application/json"],
        &json!({"grant_type": "refresh_token", "refresh_token": token}).to_string(),
    );
    assert_eq!(
        as_json.status,
        200,
        "JSON bodies are accepted too: {}",
        as_json.text()
    );

    for _ in 0..3 {
        assert_invalid_grant(&refresh(&s, "prt_not-a-real-token"));
    }
    let slowed = refresh(&s, "prt_not-a-real-token");
    assert_eq!(
        (slowed.status, slowed.header("x-portcullis-error")),
        (429, Some("too_many_requests"))
    );
    let wait: u64 = slowed
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait));
}

#[test]
fn cookie_mode_keeps_the_refresh_token_from_scripts_and_other_sites() {
    let s = setup(
        Store::Sqlite,
        "cookie = true\nallowed_origins = [\"https://app.example.com\"]",
    );
    let response = post(
        s.gateway.addr,
        "/auth/login",
        &[
            "Content-Type: application/x-www-form-urlencoded",
            "Origin: https://app.example.com",
        ],
        "username=alice&password=secret",
    );
    assert_eq!(response.status, 200);
    assert!(
        response.json().get("refresh_token").is_none(),
        "not readable by scripts"
    );
    let cookie = response
        .header("set-cookie")
        .expect("Set-Cookie")
        .to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/auth"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let pair_cookie = format!("Cookie: {}", cookie.split(';').next().expect("name=value"));
    let grant = "grant_type=refresh_token";
    let form = "Content-Type: application/x-www-form-urlencoded";
    let with = |headers: &[&str]| {
        let mut all = vec![form, &pair_cookie as &str];
        all.extend_from_slice(headers);
        post(s.gateway.addr, "/auth/token", &all, grant)
    };
    let evil = with(&["Origin: https://evil.example"]);
    assert_eq!(
        (evil.status, evil.header("x-portcullis-error")),
        (403, Some("cross_site_request"))
    );
    let bare = with(&[]);
    assert_eq!(
        (bare.status, bare.header("x-portcullis-error")),
        (403, Some("cross_site_request"))
    );
    let same_site = with(&["Origin: https://app.example.com"]);
    assert_eq!(same_site.status, 200, "{}", same_site.text());
    let next_cookie = format!(
        "Cookie: {}",
        same_site
            .header("set-cookie")
            .expect("rotated cookie")
            .split(';')
            .next()
            .expect("pair")
    );
    assert_ne!(next_cookie, pair_cookie);
    let custom_header = post(
        s.gateway.addr,
        "/auth/token",
        &[form, &next_cookie, "X-Portcullis-CSRF: 1"],
        grant,
    );
    assert_eq!(custom_header.status, 200, "{}", custom_header.text());
}

#[test]
fn trusted_issuance_and_admin_session_management() {
    let s = setup(Store::Sqlite, "");
    let admin = |method: &str, path: &str, body: &str| {
        send(
            s.gateway.admin,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let body = json!({"sub": "sam", "roles": ["admin"], "claims": {"email": "sam@example.com"}, "device": "kiosk"}).to_string();
    let issued = admin("POST", "/admin/sessions", &body);
    let (access, refresh_token) = pair(&issued);
    let sid = issued.json()["sid"].as_str().expect("sid").to_owned();
    assert_eq!(
        get(s.gateway.addr, "/admin/x", &[&bearer(&access)]).status,
        200,
        "roles carried"
    );
    assert_eq!(
        s.upstream.only().values("x-user-email"),
        ["sam@example.com"]
    );

    let listed = admin("GET", "/admin/users/sam/sessions", "").json();
    assert_eq!(listed["sessions"][0]["device"], "kiosk");
    assert_eq!(
        admin("DELETE", &format!("/admin/sessions/{sid}"), "").status,
        200
    );
    assert_eq!(
        call(&s, &access).header("x-portcullis-error"),
        Some("token_revoked")
    );
    assert_invalid_grant(&refresh(&s, &refresh_token));
    assert_eq!(admin("DELETE", "/admin/sessions/nope", "").status, 404);
}

#[test]
fn jwks_publishes_every_public_key_and_verifies_issued_tokens() {
    let s = setup(Store::Sqlite, "");
    let jwks = get(s.gateway.addr, "/.well-known/jwks.json", &[]);
    assert_eq!(jwks.status, 200);
    let keys: Vec<Value> = jwks.json()["keys"].as_array().expect("keys").clone();
    let kids: Vec<&str> = keys
        .iter()
        .map(|k| k["kid"].as_str().expect("kid"))
        .collect();
    assert_eq!(
        kids,
        ["test-eddsa", "test-eddsa-2", "test-es256", "test-rs256"],
        "no HS256 secret"
    );
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "no private parts"
    );

    let (access, _) = pair(&login(&s, "alice", "secret", "phone"));
    let header = jsonwebtoken::decode_header(&access).expect("header");
    let jwk_value = keys
        .iter()
        .find(|k| Some(k["kid"].as_str().expect("kid")) == header.kid.as_deref())
        .expect("signing key");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk_value.clone()).expect("a JWK");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["api.test"]);
    let data =
        jsonwebtoken::decode::<Value>(&access, &key, &validation).expect("an upstream can verify");
    assert_eq!(data.claims["sub"], "alice");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));

    for kid in ["test-es256", "test-rs256"] {
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(keys.iter().find(|k| k["kid"] == kid).expect("jwk").clone())
                .expect("jwk");
        let token = sign(kid, &claims("alice"));
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("key");
        let mut validation = jsonwebtoken::Validation::new(
            jwk.common
                .key_algorithm
                .map_or(jsonwebtoken::Algorithm::RS256, |a| {
                    format!("{a:?}").parse().expect("alg")
                }),
        );
        validation.set_audience(&["api.test"]);
        jsonwebtoken::decode::<Value>(&token, &key, &validation)
            .unwrap_or_else(|e| panic!("{kid}: {e}"));
    }
}

/// Key rotation across a rolling deploy: instances with the new signing
/// key and instances with the old one run side by side on one store, and
/// each accepts the other's tokens, so no request fails during the switch.
#[test]
fn key_rotation_accepts_both_generations_during_the_switch() {
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let login = EchoUpstream::start_with(login_backend);
    let base = |signing: &str| {
        format!(
            "{}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n\n[store]\nurl = \"{}\"\n",
            standard_config(upstream.addr).replace("signing_key = \"test-eddsa\"", &format!("signing_key = \"{signing}\"")),
            login.addr,
            redis.url()
        )
    };
    let old = TestGateway::start(&base("test-eddsa"));
    let new = TestGateway::start(&base("test-es256").replace(
        "public_key_file = \"{fixtures}/test-es256.pub.pem\"",
        "private_key_file = \"{fixtures}/test-es256.pem\"",
    ));
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let from_old = pair(&post(
        old.addr,
        "/auth/login",
        &form,
        "username=alice&password=secret",
    ))
    .0;
    let from_new = pair(&post(
        new.addr,
        "/auth/login",
        &form,
        "username=alice&password=secret",
    ))
    .0;
    assert_eq!(
        jsonwebtoken::decode_header(&from_new)
            .expect("header")
            .kid
            .as_deref(),
        Some("test-es256")
    );
    for gateway in [&old, &new] {
        for token in [&from_old, &from_new] {
            assert_eq!(get(gateway.addr, "/orders", &[&bearer(token)]).status, 200);
        }
    }
}

/// Login CSRF: a cross-site form must not log a browser into someone
/// else's account; and the refresh cookie never travels upstream.
#[test]
fn cookie_mode_guards_login_and_keeps_the_cookie_from_upstreams() {
    let s = setup(
        Store::Sqlite,
        "cookie = true\nallowed_origins = [\"https://app.example.com\"]",
    );
    let form = "Content-Type: application/x-www-form-urlencoded";
    let body = "username=alice&password=secret";
    let cross = post(
        s.gateway.addr,
        "/auth/login",
        &[form, "Origin: https://evil.example"],
        body,
    );
    assert_eq!(
        (cross.status, cross.header("x-portcullis-error")),
        (403, Some("cross_site_request"))
    );
    assert_eq!(s.login.count(), 0, "nothing reached the login backend");
    let ok = post(
        s.gateway.addr,
        "/auth/login",
        &[form, "Origin: https://app.example.com"],
        body,
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let login_request = s.login.only();
    let access = ok.json()["access_token"]
        .as_str()
        .expect("access")
        .to_owned();

    let cookie = "Cookie: portcullis_refresh=prt_secret; theme=dark";
    assert_eq!(
        get(s.gateway.addr, "/orders", &[&bearer(&access), cookie]).status,
        200
    );
    assert_eq!(s.upstream.only().values("cookie"), ["theme=dark"]);
    assert!(login_request.values("cookie").is_empty());
}

/// The login call carries none of the gateway's own credentials: the
/// browser sends the `/auth`-scoped refresh cookie with every re-login,
/// and a bearer token is the gateway's, not the backend's. Headers the
/// client nominates in `Connection` are hop-by-hop (RFC 9110 §7.6.1) and
/// stop here; nominating `Host` or `X-Forwarded-*` is refused, as on routes.
#[test]
fn login_backend_never_sees_gateway_credentials_or_hop_by_hop_headers() {
    let s = setup(
        Store::Sqlite,
        "cookie = true\nallowed_origins = [\"https://app.example.com\"]",
    );
    let token = sign("test-eddsa", &claims("alice"));
    let authorization = bearer(&token);
    let form = "Content-Type: application/x-www-form-urlencoded";
    let origin = "Origin: https://app.example.com";
    let body = "username=alice&password=secret";
    let response = post(
        s.gateway.addr,
        "/auth/login",
        &[
            form,
            origin,
            "User-Agent: phone",
            "Cookie: theme=dark; portcullis_refresh=prt_secret",
            "Cookie: portcullis_refresh =prt_spaced; lang=en",
            &authorization,
            "Connection: keep-alive, X-Drop-Me, x-also-dropped",
            "X-Drop-Me: 1",
            "X-Also-Dropped: 1",
            "Keep-Alive: timeout=5",
            "Proxy-Authorization: Basic cHJveHk6c2VjcmV0",
            "X-Kept: yes",
        ],
        body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = s.login.only();
    let mut names: Vec<String> = seen
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "content-length",
            "content-type",
            "cookie",
            "host",
            "origin",
            "user-agent",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-kept",
            "x-request-id",
        ],
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.values("cookie"), ["theme=dark; lang=en"]);
    assert_eq!(seen.body, body.as_bytes());

    // Another scheme is the backend's own credential check: it passes.
    s.login.clear();
    let basic = post(
        s.gateway.addr,
        "/auth/login",
        &[form, origin, "Authorization: Basic YWxpY2U6c2VjcmV0"],
        body,
    );
    assert_eq!(basic.status, 200, "{}", basic.text());
    assert_eq!(
        s.login.only().values("authorization"),
        ["Basic YWxpY2U6c2VjcmV0"]
    );

    for nominated in [
        "Connection: Host",
        "Connection: keep-alive, X-Forwarded-For",
        "Connection: x-forwarded-host",
        "Connection: X-Forwarded-Proto",
    ] {
        s.login.clear();
        let refused = post(
            s.gateway.addr,
            "/auth/login",
            &[form, origin, nominated],
            body,
        );
        assert_refused(&refused, 400, "invalid_request", &s.login);
    }
}

/// RFC 6749 §3.2: a parameter sent twice is `invalid_request`, never "the
/// last one wins" (two parsers on the path must not disagree about the
/// token presented); only a form or a JSON body is read.
#[test]
fn token_parameters_are_read_strictly() {
    let s = setup(Store::Sqlite, "");
    let (_, token) = pair(&login(&s, "alice", "secret", "phone"));
    let form = "Content-Type: application/x-www-form-urlencoded";
    let refused = |headers: &[&str], body: &str| {
        let response = post(s.gateway.addr, "/auth/token", headers, body);
        assert_refused(&response, 400, "invalid_request", &s.upstream);
    };
    refused(
        &[form],
        &format!("grant_type=refresh_token&refresh_token={token}&refresh_token=prt_other"),
    );
    refused(
        &[form],
        &format!("grant_type=refresh_token&grant_type=password&refresh_token={token}"),
    );
    refused(
        &["Content-Type: application/json"],
        &format!(
            r#"{{"grant_type":"refresh_token","refresh_token":"{token}","refresh_token":"prt_other"}}"#
        ),
    );
    let grant = format!("grant_type=refresh_token&refresh_token={token}");
    for content_type in [
        "Content-Type: text/plain",
        "Content-Type: multipart/form-data; boundary=x",
        "Content-Type: application/json-patch+json",
    ] {
        refused(&[content_type], &grant);
    }
    refused(&[], &grant);
    // None of these touched the token: it still refreshes, once.
    let charset = "Content-Type: application/x-www-form-urlencoded; charset=UTF-8";
    let ok = post(s.gateway.addr, "/auth/token", &[charset], &grant);
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// `/auth/sessions/{sid}/` is the gateway's endpoint too: a backend that
/// reads a trailing slash as the same path must never get the request.
#[test]
fn a_trailing_slash_does_not_take_session_endpoints_upstream() {
    let s = setup(Store::Sqlite, "");
    let (access, refresh_token) = pair(&login(&s, "alice", "secret", "phone"));
    let sid = jsonwebtoken::dangerous::insecure_decode::<Value>(&access)
        .expect("claims")
        .claims["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let path = format!("/auth/sessions/{sid}/");
    let request = |headers: &[&str]| {
        send(
            s.gateway.addr,
            &crate::support::http::request("DELETE", &path, headers),
        )
    };
    assert_refused(&request(&[]), 401, "token_missing", &s.upstream);
    let ended = request(&[&bearer(&access)]);
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert_eq!(ended.json(), json!({"ended": sid}));
    assert_eq!(s.upstream.count(), 0);
    assert_invalid_grant(&refresh(&s, &refresh_token));
    let listed = get(s.gateway.addr, "/auth/sessions/", &[&bearer(&access)]);
    assert_refused(&listed, 401, "token_revoked", &s.upstream);
}

/// One client address sending garbage (a stale tab, an attacker, everyone
/// behind one NAT) must not lock a valid refresh token out: failures count
/// per presented token, and only a token that keeps failing is slowed.
#[test]
fn fifty_failed_refreshes_from_one_address_never_refuse_a_valid_token() {
    let s = setup(Store::Sqlite, "");
    let (_, token) = pair(&login(&s, "alice", "secret", "phone"));
    for i in 0..25 {
        assert_invalid_grant(&refresh(&s, &format!("prt_garbage-{i}")));
    }
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let response = refresh(&s, "prt_one-dead-token");
        statuses.push(response.status);
        if response.status == 429 {
            assert_refused(&response, 429, "too_many_requests", &s.upstream);
            let wait: u64 = response
                .header("retry-after")
                .expect("Retry-After")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&wait), "{wait}");
        }
    }
    assert_eq!(
        statuses,
        [[400; 10].as_slice(), [429; 15].as_slice()].concat(),
        "the default limit: 10 failures of one token per minute"
    );
    let ok = refresh(&s, &token);
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// A 429 is logged with its code, like every refusal.
#[test]
fn a_slowed_refresh_is_logged_as_too_many_requests() {
    let upstream = EchoUpstream::start();
    let gateway = crate::support::binary::Launch::new(&format!(
        "[store]\nurl = \"sqlite://g.db\"\n\n[sessions]\nmax_failures = 2\n{}",
        standard_config(upstream.addr)
    ))
    .json()
    .start();
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            post(
                gateway.addr,
                "/auth/token",
                &form,
                "grant_type=refresh_token&refresh_token=prt_dead",
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [400, 400, 429]);
    // The access line is written after the answer: wait for all three.
    let access: Vec<(u64, String)> = gateway
        .wait_for_json_lines(|v| v["target"] == "portcullis::access", 3)
        .iter()
        .map(|v| {
            (
                v["status"].as_u64().unwrap_or_default(),
                v["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        access,
        [
            (400, "invalid_grant".to_owned()),
            (400, "invalid_grant".to_owned()),
            (429, "too_many_requests".to_owned()),
        ],
        "{}",
        gateway.log()
    );
}

/// A login backend that answers `103 Early Hints` (or `100 Continue`)
/// before its real answer: the gateway skips the informational answers
/// instead of failing on them, and never forwards the client's `Expect`.
#[test]
fn informational_answers_from_the_login_backend_are_skipped() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = Vec::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push(line.trim_end().to_owned());
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            record.lock().expect("lock").extend(head);
            let mut out = stream;
            let _ = out.write_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nX-Auth-Subject: alice\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    let upstream = EchoUpstream::start();
    let config = format!(
        "{}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{backend}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n",
        standard_config(upstream.addr)
    );
    let gateway = TestGateway::start(&config);
    let answer = post(
        gateway.addr,
        "/auth/login",
        &[
            "Content-Type: application/x-www-form-urlencoded",
            "Expect: 100-continue",
        ],
        "username=alice&password=wonderland",
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.json()["access_token"].is_string());
    let head = seen.lock().expect("lock").clone();
    assert!(
        !head
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("expect:")),
        "{head:?}"
    );
}
