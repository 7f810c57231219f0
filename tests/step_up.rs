//! Step-up authentication at the edge (RFC 9470): the gateway's tokens
//! carry `auth_time`, a route's `max_auth_age` refuses an older login with
//! `401 reauthentication_required`, refresh keeps the login's time, and a
//! login that presents the session's refresh token renews it for the same
//! session and device. On SQLite, Redis and a Redis Cluster.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::support::gateway::{standard_config, ADMIN_TOKEN};
use crate::support::http::Recorded;
use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::*;

/// The backend's credential check: alice/secret (form or JSON) and
/// root/toor.
fn login_backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let body = String::from_utf8_lossy(&request.body).into_owned();
    let ok = |sub: &str, roles: &str| {
        let lines = vec![
            format!("X-Auth-Subject: {sub}"),
            format!("X-Auth-Roles: {roles}"),
        ];
        (200, lines, b"welcome".to_vec())
    };
    let json: Value = serde_json::from_str(&body).unwrap_or_default();
    let json_alice = json["username"] == "alice" && json["password"] == "secret";
    if body.contains("username=alice&password=secret") || json_alice {
        return ok("alice", "user");
    }
    if body.contains("username=root&password=toor") {
        return ok("root", "admin");
    }
    (401, vec![], b"wrong password".to_vec())
}

/// Routes beyond the standard ones: `/account` wants a login of the last
/// ten minutes, `/recent` of the last second, `/maybe-recent` is optional
/// with a ten-minute bound.
const STEP_UP_ROUTES: &str = r#"
[[routes]]
path = "/account"
upstream = "echo"
auth = "required"
max_auth_age = "10m"

[[routes]]
path = "/recent"
upstream = "echo"
auth = "required"
max_auth_age = "1s"

[[routes]]
path = "/maybe-recent"
upstream = "echo"
auth = "optional"
max_auth_age = "10m"
"#;

struct Setup {
    upstream: EchoUpstream,
    login: EchoUpstream,
    gateway: TestGateway,
    _redis: Option<RedisServer>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Sqlite,
    Redis,
    /// The shared cluster, under a key prefix of the test's own.
    Cluster,
}

fn setup(store: Store) -> Setup {
    setup_with(store, "")
}

/// `sessions` adds lines to `[sessions]`.
fn setup_with(store: Store, sessions: &str) -> Setup {
    let upstream = EchoUpstream::start();
    let login = EchoUpstream::start_with(login_backend);
    let redis = (store == Store::Redis).then(RedisServer::start);
    let store_table = match (store, &redis) {
        (_, Some(r)) => format!("[store]\nurl = \"{}\"\n", r.url()),
        (Store::Cluster, None) => format!(
            "[store]\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
            RedisCluster::shared().url(),
            RedisCluster::fresh_prefix()
        ),
        _ => String::new(),
    };
    let config = format!(
        "{}{STEP_UP_ROUTES}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n\n[sessions]\nreuse_grace = \"5s\"\n{sessions}\n\n{store_table}",
        standard_config(upstream.addr),
        login.addr
    );
    Setup {
        gateway: TestGateway::start(&config),
        upstream,
        login,
        _redis: redis,
    }
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
    a_fresh_login_passes_and_an_old_one_is_refused_after_refresh,
    a_login_with_the_refresh_token_keeps_the_session_and_renews_auth_time,
    a_login_as_another_user_with_the_refresh_token_changes_nothing,
    a_login_with_a_dead_refresh_token_opens_a_new_session,
);

/// A login; `extra` is appended to the form body (`&refresh_token=…`).
fn login(s: &Setup, credentials: &str, extra: &str) -> Response {
    post(
        s.gateway.addr,
        "/auth/login",
        &[
            "Content-Type: application/x-www-form-urlencoded",
            "User-Agent: Alice's phone",
        ],
        &format!("{credentials}{extra}"),
    )
}

fn pair(response: &Response) -> (String, String) {
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    let field = |name: &str| body[name].as_str().expect(name).to_owned();
    (field("access_token"), field("refresh_token"))
}

fn refresh(s: &Setup, refresh_token: &str) -> Response {
    post(
        s.gateway.addr,
        "/auth/token",
        &["Content-Type: application/x-www-form-urlencoded"],
        &format!("grant_type=refresh_token&refresh_token={refresh_token}"),
    )
}

fn call(s: &Setup, path: &str, access_token: &str) -> Response {
    get(s.gateway.addr, path, &[&bearer(access_token)])
}

/// The claims of a token, read without checking it.
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn devices(s: &Setup, access_token: &str) -> Vec<Value> {
    let listed = get(s.gateway.addr, "/auth/sessions", &[&bearer(access_token)]);
    assert_eq!(listed.status, 200, "{}", listed.text());
    listed.json()["sessions"]
        .as_array()
        .expect("sessions")
        .clone()
}

/// Long enough that a login is older than `/recent`'s one second.
fn outlive_recent() {
    std::thread::sleep(Duration::from_millis(2100));
}

/// The refusal exactly as RFC 9470 §3 and the contract give it.
#[track_caller]
fn assert_step_up(response: &Response, max_age: u64, upstream: &EchoUpstream) {
    assert_refused(response, 401, "reauthentication_required", upstream);
    assert_eq!(
        response.header("www-authenticate"),
        Some(format!(
            "Bearer realm=\"portcullis\", error=\"insufficient_user_authentication\", \
             error_description=\"a more recent login is required\", max_age={max_age}"
        ))
        .as_deref()
    );
}

fn a_fresh_login_passes_and_an_old_one_is_refused_after_refresh(store: Store) {
    let s = setup(store);
    let (access, refresh_token) = pair(&login(&s, "username=alice&password=secret", ""));
    let auth_time = payload(&access)["auth_time"].as_u64().expect("auth_time");
    assert!(auth_time.abs_diff(tokens::now()) <= 2, "{auth_time}");
    assert_eq!(call(&s, "/account", &access).status, 200);
    assert_eq!(s.upstream.only().values("x-user-id"), ["alice"]);

    outlive_recent();
    let (refreshed, _) = pair(&refresh(&s, &refresh_token));
    assert_eq!(
        payload(&refreshed)["auth_time"],
        auth_time,
        "refresh carries the login's time forward"
    );
    s.upstream.clear();
    assert_step_up(&call(&s, "/recent", &refreshed), 1, &s.upstream);
    assert_eq!(
        call(&s, "/account", &refreshed).status,
        200,
        "still within ten minutes"
    );
}

fn a_login_with_the_refresh_token_keeps_the_session_and_renews_auth_time(store: Store) {
    let s = setup(store);
    let (access, refresh_token) = pair(&login(&s, "username=alice&password=secret", ""));
    let sid = payload(&access)["sid"].clone();
    outlive_recent();
    assert_step_up(&call(&s, "/recent", &access), 1, &s.upstream);

    let again = login(
        &s,
        "username=alice&password=secret",
        &format!("&refresh_token={refresh_token}"),
    );
    let (renewed, renewed_refresh) = pair(&again);
    let backend_saw = s
        .login
        .requests()
        .pop()
        .expect("the backend was asked")
        .body;
    assert_eq!(
        backend_saw, b"username=alice&password=secret",
        "the refresh token is the gateway's credential, not the backend's"
    );
    assert_ne!(
        renewed_refresh, refresh_token,
        "the refresh token is rotated"
    );
    let claims = payload(&renewed);
    assert_eq!(claims["sid"], sid, "the same session");
    assert!(claims["auth_time"].as_u64() > payload(&access)["auth_time"].as_u64());
    assert_eq!(call(&s, "/recent", &renewed).status, 200);
    let listed = devices(&s, &renewed);
    assert_eq!(listed.len(), 1, "no new device entry: {listed:?}");
    assert_eq!(listed[0]["sid"], sid);

    // The new refresh token carries the renewed time forward.
    let (refreshed, newest_refresh) = pair(&refresh(&s, &renewed_refresh));
    assert_eq!(payload(&refreshed)["auth_time"], claims["auth_time"]);

    // The replaced token counts as rotated, without a replay grace:
    // presented again, it is reuse and ends the session.
    let replayed = refresh(&s, &refresh_token);
    assert_eq!(replayed.status, 400, "{}", replayed.text());
    assert_eq!(replayed.header("x-portcullis-error"), Some("invalid_grant"));
    s.upstream.clear();
    assert_refused(
        &call(&s, "/", &refreshed),
        401,
        "token_revoked",
        &s.upstream,
    );
    assert_eq!(refresh(&s, &newest_refresh).status, 400);
}

fn a_login_as_another_user_with_the_refresh_token_changes_nothing(store: Store) {
    let s = setup(store);
    let (access, refresh_token) = pair(&login(&s, "username=alice&password=secret", ""));
    let other = login(
        &s,
        "username=root&password=toor",
        &format!("&refresh_token={refresh_token}"),
    );
    assert_eq!(other.status, 400, "{}", other.text());
    assert_eq!(other.header("x-portcullis-error"), Some("invalid_request"));
    assert_eq!(other.json()["error"], "invalid_request");
    assert!(other.json().get("access_token").is_none());

    let root = send(
        s.gateway.admin,
        &format!("GET /admin/users/root/sessions HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"),
    );
    assert_eq!(root.json()["sessions"], json!([]), "no session for root");
    assert_eq!(devices(&s, &access).len(), 1);
    let (after, _) = pair(&refresh(&s, &refresh_token));
    assert_eq!(
        payload(&after)["sub"],
        "alice",
        "alice's token was not rotated"
    );
}

fn a_login_with_a_dead_refresh_token_opens_a_new_session(store: Store) {
    let s = setup(store);
    let (access, refresh_token) = pair(&login(&s, "username=alice&password=secret", ""));
    let ended = payload(&access)["sid"].clone();
    let out = post(s.gateway.addr, "/auth/logout", &[&bearer(&access)], "");
    assert_eq!(out.status, 200, "{}", out.text());
    for dead in [refresh_token.as_str(), "not-a-refresh-token"] {
        let fresh = login(
            &s,
            "username=alice&password=secret",
            &format!("&refresh_token={dead}"),
        );
        let (access, _) = pair(&fresh);
        assert_ne!(payload(&access)["sid"], ended, "a new session");
        assert_eq!(call(&s, "/account", &access).status, 200);
    }
}

/// The same with a JSON body: the field is read there, and taken out of
/// what the backend gets.
#[test]
fn a_json_login_with_the_refresh_token_keeps_the_session() {
    let s = setup(Store::Sqlite);
    let json_login = |body: Value| {
        post(
            s.gateway.addr,
            "/auth/login",
            &["Content-Type: application/json"],
            &body.to_string(),
        )
    };
    let credentials = json!({"username": "alice", "password": "secret"});
    let (access, refresh_token) = pair(&json_login(credentials.clone()));
    let mut again = credentials.clone();
    again["refresh_token"] = json!(refresh_token);
    let (renewed, _) = pair(&json_login(again));
    assert_eq!(payload(&renewed)["sid"], payload(&access)["sid"]);
    let seen = s
        .login
        .requests()
        .pop()
        .expect("the backend was asked")
        .body;
    let seen: Value = serde_json::from_slice(&seen).expect("JSON");
    assert_eq!(seen, credentials);
}

/// A browser re-authenticates with the refresh cookie it holds: the same
/// session, a rotated cookie, a token that passes the step-up route.
#[test]
fn a_browser_login_with_the_refresh_cookie_keeps_the_session() {
    let s = setup_with(
        Store::Sqlite,
        "cookie = true\nallowed_origins = [\"https://app.example.com\"]",
    );
    let form = "Content-Type: application/x-www-form-urlencoded";
    let origin = "Origin: https://app.example.com";
    let browser_login = |cookie: &str| {
        let mut headers = vec![form, origin];
        if !cookie.is_empty() {
            headers.push(cookie);
        }
        post(
            s.gateway.addr,
            "/auth/login",
            &headers,
            "username=alice&password=secret",
        )
    };
    let cookie_of = |response: &Response| {
        assert_eq!(response.status, 200, "{}", response.text());
        let set = response.header("set-cookie").expect("Set-Cookie");
        format!("Cookie: {}", set.split(';').next().expect("name=value"))
    };
    let access_of = |response: &Response| {
        response.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    };
    let first = browser_login("");
    let cookie = cookie_of(&first);
    let access = access_of(&first);
    outlive_recent();
    assert_step_up(&call(&s, "/recent", &access), 1, &s.upstream);

    let again = browser_login(&cookie);
    assert_ne!(cookie_of(&again), cookie, "the cookie is rotated");
    let renewed = access_of(&again);
    assert_eq!(payload(&renewed)["sid"], payload(&access)["sid"]);
    assert_eq!(call(&s, "/recent", &renewed).status, 200);
    assert_eq!(devices(&s, &renewed).len(), 1);
}

/// Tokens signed with the fixture key: an old `auth_time`, none at all, or
/// one that is not a number are refused on a step-up route and pass the
/// routes without one. On an optional step-up route an anonymous request
/// passes and an old token is refused.
#[test]
fn an_old_or_missing_auth_time_is_refused_before_the_upstream() {
    let s = setup(Store::Sqlite);
    let now = tokens::now();
    let old = sign(
        "test-eddsa",
        &claims_with("alice", json!({"auth_time": now - 601})),
    );
    let recent = sign(
        "test-eddsa",
        &claims_with("alice", json!({"auth_time": now - 590})),
    );
    let without = sign("test-eddsa", &claims("alice"));
    let text = sign(
        "test-eddsa",
        &claims_with("alice", json!({"auth_time": "yesterday"})),
    );
    for token in [&old, &without, &text] {
        assert_step_up(&call(&s, "/account", token), 600, &s.upstream);
        assert_step_up(&call(&s, "/maybe-recent", token), 600, &s.upstream);
        assert_eq!(call(&s, "/orders", token).status, 200, "no step-up there");
        s.upstream.clear();
    }
    assert_eq!(call(&s, "/account", &recent).status, 200);
    assert_eq!(
        get(s.gateway.addr, "/maybe-recent", &[]).status,
        200,
        "an anonymous request to an optional route"
    );
}

#[test]
fn trusted_issuance_counts_as_a_login_now() {
    let s = setup(Store::Sqlite);
    let body = json!({"sub": "sam", "device": "kiosk"}).to_string();
    let issued = send(
        s.gateway.admin,
        &format!(
            "POST /admin/sessions HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let (access, _) = pair(&issued);
    let auth_time = payload(&access)["auth_time"].as_u64().expect("auth_time");
    assert!(auth_time.abs_diff(tokens::now()) <= 2);
    assert_eq!(call(&s, "/account", &access).status, 200);
}

#[test]
fn check_refuses_a_zero_unreadable_or_unusable_max_auth_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    let text = r#"[tokens]
issuer = "https://issuer.test"
audience = "api"

[[upstreams]]
name = "legacy"
targets = ["127.0.0.1:8081"]

[[routes]]
path = "/a"
upstream = "legacy"
max_auth_age = "0s"

[[routes]]
path = "/b"
upstream = "legacy"
auth = "none"
max_auth_age = "10m"
"#;
    std::fs::write(&path, text).expect("write");
    let file = path.display().to_string();
    let err = check(&path);
    for expected in [
        format!("{file}:12:16: max_auth_age must be at least one second"),
        format!("{file}:18:16: max_auth_age needs auth = \"required\" or \"optional\""),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in:\n{err}"
        );
    }
    std::fs::write(&path, text.replace("\"0s\"", "\"soon\"")).expect("write");
    let err = check(&path);
    assert!(
        err.starts_with(&format!("{file}:12:16: invalid duration")),
        "{err}"
    );
}

/// `portcullis check`'s standard error; it must fail.
fn check(path: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run portcullis");
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An external issuer's `auth_time` is used when it sends one; a token of
/// it without one is refused on a step-up route and passes elsewhere.
#[test]
fn an_external_issuers_auth_time_is_used() {
    let upstream = EchoUpstream::start();
    let config = format!(
        "{}{STEP_UP_ROUTES}\n[[issuers]]\nissuer = \"https://idp.test/\"\naudience = \"api.test\"\ntyp = [\"JWT\"]\n\n[[issuers.keys]]\nkid = \"idp-es256\"\nalgorithm = \"ES256\"\npublic_key_file = \"{{fixtures}}/test-es256.pub.pem\"\n",
        standard_config(upstream.addr)
    );
    let gateway = TestGateway::start(&config);
    let now = tokens::now();
    let idp_token = |auth_time: Option<u64>| {
        let mut claims = json!({"iss": "https://idp.test/", "aud": "api.test", "sub": "erin", "iat": now - 5, "exp": now + 300});
        if let Some(at) = auth_time {
            claims["auth_time"] = json!(at);
        }
        let (alg, key) = tokens::encoding_key("test-es256");
        let mut header = jsonwebtoken::Header::new(alg);
        header.typ = Some("JWT".into());
        header.kid = Some("idp-es256".into());
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    };
    let at = |path: &str, token: &str| get(gateway.addr, path, &[&bearer(token)]);
    assert_eq!(at("/account", &idp_token(Some(now - 60))).status, 200);
    assert_eq!(upstream.only().values("x-user-id"), ["erin"]);
    upstream.clear();
    assert_step_up(
        &at("/account", &idp_token(Some(now - 3600))),
        600,
        &upstream,
    );
    assert_step_up(&at("/account", &idp_token(None)), 600, &upstream);
    assert_eq!(at("/orders", &idp_token(None)).status, 200);
}
