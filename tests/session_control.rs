//! Session control from the backend: an upstream's 2xx answer on a route
//! with `session_control = true` ends the sessions of the request's own
//! user (`X-Portcullis-Session-Control`), acknowledged by the store before
//! the answer is released; everywhere else the header is ignored and
//! removed. Each action on SQLite and Redis, the refusals to honour it, a
//! store that cannot take the write, and a second instance on one Redis.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::support::http::Recorded;
use crate::support::redis::RedisServer;
use crate::support::*;

/// The header under test, as a backend writes it.
const CONTROL: &str = "X-Portcullis-Session-Control";

/// The backend's credential check: alice/secret. Its refusal carries a
/// session-control header of its own, which must not reach the client.
fn login_backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    if String::from_utf8_lossy(&request.body).contains("username=alice&password=secret") {
        let lines = vec!["X-Auth-Subject: alice".into(), "X-Auth-Roles: user".into()];
        return (200, lines, b"welcome".to_vec());
    }
    let lines = vec![format!("{CONTROL}: logout-everywhere")];
    (401, lines, b"wrong password".to_vec())
}

/// Every upstream route: answers with the status in `X-Test-Status`
/// (200 without) and one session-control line per `X-Test-Control`.
fn backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let status = request
        .values("x-test-status")
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let lines = request
        .values("x-test-control")
        .iter()
        .map(|value| format!("{CONTROL}: {value}"))
        .collect();
    (status, lines, b"password changed".to_vec())
}

/// `/account` opts in; `/maybe-account` opts in and takes anonymous
/// requests; every other route (`/`, `/public`, ...) does not. The two
/// are named `account-N` and `maybe-account-N` after the gateway's `tag`:
/// the metrics are the process's, shared by the tests running beside.
fn routes(tag: usize) -> String {
    format!(
        r#"
[[routes]]
name = "account-{tag}"
path = "/account"
upstream = "echo"
auth = "required"
session_control = true

[[routes]]
name = "maybe-account-{tag}"
path = "/maybe-account"
upstream = "echo"
auth = "optional"
session_control = true
"#
    )
}

/// A tag no other gateway of this process has.
fn fresh_tag() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Setup {
    /// The opted-in routes' names: `account-N`, `maybe-account-N`.
    account: String,
    maybe_account: String,
    upstream: EchoUpstream,
    login: EchoUpstream,
    gateway: TestGateway,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Sqlite,
    Redis,
}

/// The gateway's configuration: `store` is the `[store]` table's body
/// (none: SQLite in the gateway's folder).
fn config(
    tag: usize,
    upstream: &EchoUpstream,
    login: &EchoUpstream,
    store: Option<&str>,
) -> String {
    let store = store.map(|s| format!("[store]\n{s}\n")).unwrap_or_default();
    format!(
        "{}{}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\n\n{store}",
        standard_config(upstream.addr),
        routes(tag),
        login.addr
    )
}

fn setup_with(store: Option<&str>) -> Setup {
    let upstream = EchoUpstream::start_with(backend);
    let login = EchoUpstream::start_with(login_backend);
    let tag = fresh_tag();
    let gateway = TestGateway::start(&config(tag, &upstream, &login, store));
    Setup {
        account: format!("account-{tag}"),
        maybe_account: format!("maybe-account-{tag}"),
        upstream,
        login,
        gateway,
    }
}

/// A gateway on `store`; the Redis server lives as long as the setup.
fn setup(store: Store) -> (Setup, Option<RedisServer>) {
    let redis = (store == Store::Redis).then(RedisServer::start);
    let table = redis.as_ref().map(|r| format!("url = \"{}\"", r.url()));
    (setup_with(table.as_deref()), redis)
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[test] fn $name() { super::$name(super::Store::Sqlite) } )* }
        mod on_redis { $( #[test] fn $name() { super::$name(super::Store::Redis) } )* }
    };
}

on_both_stores!(
    end_other_sessions_keeps_this_device_and_ends_every_other,
    logout_everywhere_ends_every_session_this_one_included,
    end_this_session_ends_this_device_only,
);

/// A device's token pair.
struct Device {
    access: String,
    refresh: String,
}

fn login(gateway: &TestGateway, device: &str) -> Device {
    let response = post(
        gateway.addr,
        "/auth/login",
        &["Content-Type: application/x-www-form-urlencoded"],
        &format!("username=alice&password=secret&device_name={device}"),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    let field = |name: &str| body[name].as_str().expect(name).to_owned();
    Device {
        access: field("access_token"),
        refresh: field("refresh_token"),
    }
}

fn refresh(gateway: &TestGateway, refresh_token: &str) -> Response {
    post(
        gateway.addr,
        "/auth/token",
        &["Content-Type: application/x-www-form-urlencoded"],
        &format!("grant_type=refresh_token&refresh_token={refresh_token}"),
    )
}

fn call(gateway: &TestGateway, path: &str, access: &str) -> Response {
    get(gateway.addr, path, &[&bearer(access)])
}

/// A request whose answer carries `control`, with status `status`.
fn answered_with(
    gateway: &TestGateway,
    path: &str,
    token: Option<&str>,
    control: &str,
    status: u16,
) -> Response {
    let control = format!("X-Test-Control: {control}");
    let status = format!("X-Test-Status: {status}");
    let mut headers = vec![control.as_str(), status.as_str()];
    let authorization = token.map(bearer);
    headers.extend(authorization.as_deref());
    post(gateway.addr, path, &headers, "new_password=hunter2")
}

/// The claims of a token, read without checking it.
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The backend's answer went through: its status and body, and no
/// session-control header.
#[track_caller]
fn assert_passed(response: &Response, status: u16) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.text(), "password changed");
    assert_eq!(response.header("x-portcullis-session-control"), None);
    assert_eq!(response.header("x-portcullis-error"), None);
}

#[track_caller]
fn assert_revoked(response: &Response) {
    assert_eq!(
        (response.status, response.header("x-portcullis-error")),
        (401, Some("token_revoked")),
        "{}",
        response.text()
    );
}

#[track_caller]
fn assert_invalid_grant(response: &Response) {
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_grant");
}

/// A series of `/metrics` once it reaches `wanted` (a request is counted
/// in `portcullis_requests_total` just after its answer), or whatever it
/// is after a deadline.
fn metric_reaching(gateway: &TestGateway, series: &str, wanted: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(gateway, series);
        if value == wanted || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A series of `/metrics`, 0 when absent.
fn metric(gateway: &TestGateway, series: &str) -> f64 {
    let page = get(gateway.admin, "/metrics", &[]).text();
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn counted(gateway: &TestGateway, route: &str, action: &str, outcome: &str) -> f64 {
    metric(
        gateway,
        &format!(
            "portcullis_session_control_total{{action=\"{action}\",outcome=\"{outcome}\",route=\"{route}\"}}"
        ),
    )
}

fn end_other_sessions_keeps_this_device_and_ends_every_other(store: Store) {
    let (s, _redis) = setup(store);
    let (a, b) = (login(&s.gateway, "laptop"), login(&s.gateway, "phone"));
    let before = payload(&a.access)["ver"].as_u64().expect("ver");
    assert_eq!(call(&s.gateway, "/orders", &b.access).status, 200);

    let changed = answered_with(
        &s.gateway,
        "/account/password",
        Some(&a.access),
        "end-other-sessions",
        200,
    );
    assert_passed(&changed, 200);
    assert_eq!(
        changed.header("x-token-expires-in"),
        Some("0"),
        "refresh now"
    );
    assert_eq!(
        s.upstream.requests().last().map(|r| r.values("x-user-id")),
        Some(vec!["alice"])
    );

    assert_revoked(&call(&s.gateway, "/orders", &b.access));
    assert_invalid_grant(&refresh(&s.gateway, &b.refresh));
    assert_revoked(&call(&s.gateway, "/orders", &a.access));
    let renewed = refresh(&s.gateway, &a.refresh);
    assert_eq!(
        renewed.status,
        200,
        "this device stays signed in: {}",
        renewed.text()
    );
    let access = renewed.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(payload(&access)["ver"].as_u64(), Some(before + 1));
    assert_eq!(payload(&access)["sid"], payload(&a.access)["sid"]);
    assert_eq!(call(&s.gateway, "/orders", &access).status, 200);
    let listed = call(&s.gateway, "/auth/sessions", &access).json();
    let devices: Vec<&str> = listed["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|d| d["device"].as_str().expect("device"))
        .collect();
    assert_eq!(devices, ["laptop"]);
    assert_eq!(
        counted(&s.gateway, &s.account, "end-other-sessions", "applied"),
        1.0
    );
    assert_eq!(
        metric_reaching(
            &s.gateway,
            &format!(
                "portcullis_requests_total{{code=\"session_control\",route=\"{}\",status_class=\"2xx\"}}",
                s.account
            ),
            1.0
        ),
        1.0,
        "counted as its own outcome"
    );
}

fn logout_everywhere_ends_every_session_this_one_included(store: Store) {
    let (s, _redis) = setup(store);
    let (a, b) = (login(&s.gateway, "laptop"), login(&s.gateway, "phone"));
    let changed = answered_with(
        &s.gateway,
        "/account",
        Some(&a.access),
        "logout-everywhere",
        200,
    );
    assert_passed(&changed, 200);
    assert_ne!(changed.header("x-token-expires-in"), Some("0"));
    for device in [&a, &b] {
        assert_revoked(&call(&s.gateway, "/orders", &device.access));
        assert_invalid_grant(&refresh(&s.gateway, &device.refresh));
    }
    assert_eq!(
        counted(&s.gateway, &s.account, "logout-everywhere", "applied"),
        1.0
    );
}

fn end_this_session_ends_this_device_only(store: Store) {
    let (s, _redis) = setup(store);
    let (a, b) = (login(&s.gateway, "laptop"), login(&s.gateway, "phone"));
    let changed = answered_with(
        &s.gateway,
        "/account",
        Some(&a.access),
        "end-this-session",
        201,
    );
    assert_eq!(changed.status, 201);
    assert_eq!(changed.header("x-portcullis-session-control"), None);
    assert_revoked(&call(&s.gateway, "/orders", &a.access));
    assert_invalid_grant(&refresh(&s.gateway, &a.refresh));
    assert_eq!(call(&s.gateway, "/orders", &b.access).status, 200);
    assert_eq!(refresh(&s.gateway, &b.refresh).status, 200);
}

/// Nothing was ended: both devices call and refresh as before.
#[track_caller]
fn assert_untouched(gateway: &TestGateway, devices: &[&Device]) {
    for device in devices {
        assert_eq!(call(gateway, "/orders", &device.access).status, 200);
    }
}

#[test]
fn a_route_that_did_not_opt_in_ignores_the_header_and_removes_it() {
    let s = setup_with(None);
    let (a, b) = (login(&s.gateway, "laptop"), login(&s.gateway, "phone"));
    // The standard routes' series are shared with other tests of this
    // process (the adversarial table sends to `/public` too): count from here.
    let ignored_before = [
        counted(&s.gateway, "/", "end-other-sessions", "route_not_opted_in"),
        counted(
            &s.gateway,
            "/public",
            "logout-everywhere",
            "route_not_opted_in",
        ),
    ];
    assert_passed(
        &answered_with(
            &s.gateway,
            "/orders",
            Some(&a.access),
            "end-other-sessions",
            200,
        ),
        200,
    );
    assert_passed(
        &answered_with(&s.gateway, "/public/x", None, "logout-everywhere", 200),
        200,
    );
    assert_untouched(&s.gateway, &[&a, &b]);
    let ignored_after = [
        counted(&s.gateway, "/", "end-other-sessions", "route_not_opted_in"),
        counted(
            &s.gateway,
            "/public",
            "logout-everywhere",
            "route_not_opted_in",
        ),
    ];
    for (before, after) in ignored_before.into_iter().zip(ignored_after) {
        assert!(after >= before + 1.0, "counted: {before} → {after}");
    }

    // The login backend's refusal, passed through, loses it too.
    let refused = post(
        s.gateway.addr,
        "/auth/login",
        &["Content-Type: application/x-www-form-urlencoded"],
        "username=alice&password=wrong",
    );
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("x-portcullis-session-control"), None);
    assert_untouched(&s.gateway, &[&a, &b]);
}

#[test]
fn an_invalid_value_is_ignored_and_removed() {
    let s = setup_with(None);
    let (a, b) = (login(&s.gateway, "laptop"), login(&s.gateway, "phone"));
    for value in [
        "end-all-sessions",
        "end-other-sessions, logout-everywhere",
        "sub=bob",
    ] {
        assert_passed(
            &answered_with(&s.gateway, "/account", Some(&a.access), value, 200),
            200,
        );
    }
    // Two header lines, each valid alone, name no one action.
    let two = post(
        s.gateway.addr,
        "/account",
        &[
            &bearer(&a.access),
            "X-Test-Control: end-this-session",
            "X-Test-Control: end-this-session",
        ],
        "",
    );
    assert_passed(&two, 200);
    assert_untouched(&s.gateway, &[&a, &b]);
    assert_eq!(counted(&s.gateway, &s.account, "invalid", "invalid"), 4.0);
}

#[test]
fn an_answer_other_than_2xx_is_ignored() {
    let s = setup_with(None);
    let (a, b) = (login(&s.gateway, "laptop"), login(&s.gateway, "phone"));
    for status in [303, 400, 403, 500] {
        let response = answered_with(
            &s.gateway,
            "/account",
            Some(&a.access),
            "logout-everywhere",
            status,
        );
        assert_passed(&response, status);
    }
    assert_untouched(&s.gateway, &[&a, &b]);
    assert_eq!(
        counted(&s.gateway, &s.account, "logout-everywhere", "not_2xx"),
        4.0
    );
}

#[test]
fn a_token_without_a_session_is_ignored() {
    let s = setup_with(None);
    let (a, b) = (login(&s.gateway, "laptop"), login(&s.gateway, "phone"));
    // Signed with the gateway's own key, but issued outside any session.
    let sessionless = sign("test-eddsa", &claims("alice"));
    assert_passed(
        &answered_with(
            &s.gateway,
            "/account",
            Some(&sessionless),
            "logout-everywhere",
            200,
        ),
        200,
    );
    assert_passed(
        &answered_with(&s.gateway, "/maybe-account", None, "logout-everywhere", 200),
        200,
    );
    assert_untouched(&s.gateway, &[&a, &b]);
    assert_eq!(call(&s.gateway, "/orders", &sessionless).status, 200);
    assert_eq!(
        counted(&s.gateway, &s.account, "logout-everywhere", "no_session"),
        1.0
    );
    assert_eq!(
        counted(
            &s.gateway,
            &s.maybe_account,
            "logout-everywhere",
            "no_session"
        ),
        1.0
    );
}

const STORE_ERRORS: &str = "portcullis_store_errors_total{operation=\"session_control\"}";

/// The client gets the contract's 503 instead of the backend's success:
/// status, code, body, and not one byte of the upstream's answer.
#[track_caller]
fn assert_withheld(response: &Response) {
    assert_eq!(response.status, 503, "{}", response.text());
    assert_challenge(response, "auth_unavailable");
    assert_eq!(
        response.header("x-portcullis-error"),
        Some("auth_unavailable")
    );
    assert_eq!(response.json()["error"], "auth_unavailable");
    assert!(!response.text().contains("password changed"));
    assert_eq!(response.header("x-portcullis-session-control"), None);
    assert_eq!(response.header("x-token-expires-in"), None);
}

#[test]
fn a_store_that_cannot_take_the_write_withholds_the_answer() {
    let mut redis = RedisServer::start();
    let store = format!(
        "url = \"{}\"\non_unavailable = \"allow_cached\"",
        redis.url()
    );
    let s = setup_with(Some(&store));
    let (a, b) = (login(&s.gateway, "laptop"), login(&s.gateway, "phone"));
    assert_untouched(&s.gateway, &[&a, &b]);

    let errors_before = metric(&s.gateway, STORE_ERRORS);
    redis.kill();
    s.upstream.clear();
    let response = answered_with(
        &s.gateway,
        "/account",
        Some(&a.access),
        "end-other-sessions",
        200,
    );
    assert_withheld(&response);
    assert_eq!(
        s.upstream.count(),
        1,
        "the backend answered; the client never saw it"
    );
    assert_eq!(
        counted(&s.gateway, &s.account, "end-other-sessions", "failed"),
        1.0
    );
    // The process's counter, which the test beside also counts on.
    assert!(metric(&s.gateway, STORE_ERRORS) >= errors_before + 1.0);

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while refresh(&s.gateway, &b.refresh).status != 200 {
        assert!(
            Instant::now() < deadline,
            "the other device was ended after all"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With `min_replicas = 1` and no replica, the primary takes the write
/// but no replica confirms it: that is no acknowledgement either.
#[test]
fn a_write_no_replica_confirmed_withholds_the_answer() {
    let redis = RedisServer::start();
    let store = format!(
        "url = \"{}\"\nmin_replicas = 1\nreplica_timeout = \"200ms\"",
        redis.url()
    );
    let s = setup_with(Some(&store));
    let a = login(&s.gateway, "laptop");
    let response = answered_with(
        &s.gateway,
        "/account",
        Some(&a.access),
        "logout-everywhere",
        200,
    );
    assert_withheld(&response);
    assert_eq!(
        counted(&s.gateway, &s.account, "logout-everywhere", "failed"),
        1.0
    );
}

#[test]
fn a_second_instance_on_one_redis_honours_it_within_the_bound() {
    let redis = RedisServer::start();
    let store = format!("url = \"{}\"\nmax_staleness = \"500ms\"", redis.url());
    let s = setup_with(Some(&store));
    let other = TestGateway::start(&config(fresh_tag(), &s.upstream, &s.login, Some(&store)));
    let a = login(&s.gateway, "laptop");
    let b = login(&other, "phone");
    assert_eq!(
        call(&other, "/orders", &b.access).status,
        200,
        "warms the other instance"
    );

    let written = Instant::now();
    let changed = answered_with(
        &s.gateway,
        "/account",
        Some(&a.access),
        "end-other-sessions",
        200,
    );
    assert_passed(&changed, 200);
    let bound = Duration::from_millis(500);
    loop {
        let sent = written.elapsed();
        let response = call(&other, "/orders", &b.access);
        if response.header("x-portcullis-error") == Some("token_revoked") {
            break;
        }
        if sent > bound {
            assert_eq!(
                response.header("x-portcullis-error"),
                Some("auth_unavailable"),
                "a request sent {sent:?} after the write, past the bound, was admitted"
            );
        }
        assert!(written.elapsed() < Duration::from_secs(10), "never revoked");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The device that changed the password refreshes at the other instance.
    let renewed = refresh(&other, &a.refresh);
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let access = renewed.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(call(&other, "/orders", &access).status, 200);
    assert_invalid_grant(&refresh(&other, &b.refresh));
}

/// Another issuer's token names no session of the gateway's, whatever
/// `sid` it carries: its answer cannot end one.
#[test]
fn an_external_issuers_token_is_ignored() {
    let upstream = EchoUpstream::start_with(backend);
    let login_upstream = EchoUpstream::start_with(login_backend);
    let tag = fresh_tag();
    let config = format!(
        "{}\n[[issuers]]\nissuer = \"https://idp.test/\"\naudience = \"api.test\"\ntyp = [\"JWT\"]\n\n[[issuers.keys]]\nkid = \"idp-es256\"\nalgorithm = \"ES256\"\npublic_key_file = \"{{fixtures}}/test-es256.pub.pem\"\n",
        config(tag, &upstream, &login_upstream, None)
    );
    let gateway = TestGateway::start(&config);
    let a = login(&gateway, "laptop");
    let now = crate::support::tokens::now();
    let sid = payload(&a.access)["sid"].clone();
    let claims = serde_json::json!({"iss": "https://idp.test/", "aud": "api.test", "sub": "alice", "sid": sid, "iat": now, "exp": now + 300});
    let (alg, key) = crate::support::tokens::encoding_key("test-es256");
    let mut header = jsonwebtoken::Header::new(alg);
    header.typ = Some("JWT".into());
    header.kid = Some("idp-es256".into());
    let external = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
    assert_passed(
        &answered_with(
            &gateway,
            "/account",
            Some(&external),
            "end-this-session",
            200,
        ),
        200,
    );
    assert_untouched(&gateway, &[&a]);
    let route = format!("account-{tag}");
    assert_eq!(
        counted(&gateway, &route, "end-this-session", "no_session"),
        1.0
    );
}

#[test]
fn check_refuses_session_control_where_no_session_can_ask() {
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
auth = "none"
session_control = true
"#;
    std::fs::write(&path, text).expect("write");
    let file = path.display().to_string();
    let expected =
        format!("{file}:13:19: session_control needs auth = \"required\" or \"optional\"");
    let err = check(&path);
    assert!(
        err.lines().any(|l| l.starts_with(&expected)),
        "missing {expected:?} in:\n{err}"
    );
    std::fs::write(&path, text.replace("= true", "= \"yes\"")).expect("write");
    let err = check(&path);
    assert!(
        err.starts_with(&format!("{file}:13:19: invalid type")),
        "{err}"
    );
}

/// `portcullis check`'s standard error; it must fail.
fn check(path: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run portcullis");
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The demo backend's password-change page through a real gateway: it
/// checks the current password, and its answer ends the other device
/// while the changing one refreshes into the new version.
#[test]
fn the_demo_backends_password_change_signs_out_the_other_devices() {
    let (_backend, backend) = crate::support::binary::demo_backend();
    let config = crate::support::gateway::config_with_routes(
        backend,
        "\n[login]\nupstream = \"echo\"\npath = \"/login\"\n\n[[routes]]\npath = \"/account\"\nupstream = \"echo\"\nauth = \"required\"\nsession_control = true\n\n[[routes]]\npath = \"/\"\nupstream = \"echo\"\nauth = \"required\"\n",
    );
    let gateway = TestGateway::start(&config);
    let demo_login = |password: &str| {
        post(
            gateway.addr,
            "/auth/login",
            &["Content-Type: application/x-www-form-urlencoded"],
            &format!("username=alice&password={password}"),
        )
    };
    let device = |response: Response| {
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        let field = |name: &str| body[name].as_str().expect(name).to_owned();
        Device {
            access: field("access_token"),
            refresh: field("refresh_token"),
        }
    };
    let (a, b) = (
        device(demo_login("wonderland")),
        device(demo_login("wonderland")),
    );
    let change = |current: &str| {
        post(
            gateway.addr,
            "/account/password",
            &[
                &bearer(&a.access),
                "Content-Type: application/x-www-form-urlencoded",
            ],
            &format!("current_password={current}&new_password=looking-glass"),
        )
    };
    let wrong = change("guess");
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    assert_untouched(&gateway, &[&a, &b]);

    let changed = change("wonderland");
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(changed.json()["changed"], true);
    assert_eq!(changed.header("x-token-expires-in"), Some("0"));
    assert_eq!(changed.header("x-portcullis-session-control"), None);
    assert_revoked(&call(&gateway, "/echo", &b.access));
    assert_invalid_grant(&refresh(&gateway, &b.refresh));
    let renewed = refresh(&gateway, &a.refresh);
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let access = renewed.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(call(&gateway, "/echo", &access).status, 200);
    assert_eq!(demo_login("wonderland").status, 401, "the old password");
    device(demo_login("looking-glass"));
}
