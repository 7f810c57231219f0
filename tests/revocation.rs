//! Revocation through the whole gateway: the admin API, every check's
//! status and code, several instances on one Redis, restarts and outages.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::gateway::ADMIN_TOKEN;
use crate::support::http::{request, Response};
use crate::support::redis::{key, RedisServer};
use crate::support::tokens::now;
use crate::support::*;

fn admin_post(gateway: &TestGateway, path: &str, body: Option<&serde_json::Value>) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send(gateway.admin, &raw)
}

fn revoke_user(gateway: &TestGateway, sub: &str) {
    let response = admin_post(gateway, &format!("/admin/users/{sub}/revoke"), None);
    assert_eq!(response.status, 200, "{}", response.text());
}

fn status_and_code(gateway: &TestGateway, token: &str) -> (u16, Option<String>) {
    let response = get(gateway.addr, "/orders", &[&bearer(token)]);
    (
        response.status,
        response.header("x-portcullis-error").map(str::to_owned),
    )
}

/// Polls until `token` gets `code` at `gateway`.
fn wait_for_code(gateway: &TestGateway, token: &str, code: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        if status_and_code(gateway, token).1.as_deref() == Some(code) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{code} did not arrive within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The promise of `max_staleness` (`bound`) for a change written when
/// `written`: no request sent to `gateway` later than `bound` after the
/// write admits `token` (each gets `code`, or 503 `auth_unavailable` from
/// an instance that could not confirm its view fresh: fail closed), and
/// `code` does arrive. How fast it arrives is the propagation benchmark's
/// figure; a loaded machine only delays answers, which cannot turn a
/// refusal into an admission.
#[track_caller]
fn assert_honoured_within(
    gateway: &TestGateway,
    token: &str,
    code: &str,
    written: Instant,
    bound: Duration,
) {
    loop {
        let sent = written.elapsed();
        let answer = status_and_code(gateway, token);
        if answer.1.as_deref() == Some(code) {
            return;
        }
        if sent > bound {
            assert_eq!(
                answer,
                (503, Some("auth_unavailable".to_owned())),
                "a request sent {sent:?} after the write, past the {bound:?} bound"
            );
        }
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "{code} never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn redis_config(upstream: std::net::SocketAddr, redis: &RedisServer, extra: &str) -> String {
    format!(
        "{}\n[store]\nurl = \"{}\"\nmax_staleness = \"500ms\"\n{extra}\n",
        standard_config(upstream),
        redis.url()
    )
}

#[test]
fn revoked_jti_is_token_revoked_even_when_the_signature_was_cached() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let claims = claims("alice");
    let token = sign("test-eddsa", &claims);
    assert_eq!(
        get(gateway.addr, "/orders", &[&bearer(&token)]).status,
        200,
        "cached now"
    );
    upstream.clear();
    let body = json!({"jti": claims["jti"], "exp": claims["exp"]});
    let response = admin_post(&gateway, "/admin/tokens/revoke", Some(&body));
    assert_eq!(response.status, 200, "{}", response.text());
    let refused = get(gateway.addr, "/orders", &[&bearer(&token)]);
    assert_refused(&refused, 401, "token_revoked", &upstream);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"token revoked\"")
    );
    let other = sign("test-eddsa", &claims_with("alice", json!({})));
    assert_eq!(
        get(gateway.addr, "/orders", &[&bearer(&other)]).status,
        200,
        "only that token dies"
    );
}

#[test]
fn revoking_by_handing_the_token_works() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let token = sign("test-es256", &claims("bob"));
    let response = admin_post(
        &gateway,
        "/admin/tokens/revoke",
        Some(&json!({"token": token})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        status_and_code(&gateway, &token),
        (401, Some("token_revoked".into()))
    );
    let junk = admin_post(
        &gateway,
        "/admin/tokens/revoke",
        Some(&json!({"token": "not.a.token"})),
    );
    assert_eq!(
        (junk.status, junk.header("x-portcullis-error")),
        (400, Some("invalid_request"))
    );
}

#[test]
fn version_bump_kills_older_tokens_and_only_those() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let before = sign(
        "test-eddsa",
        &claims_with("carol", json!({"ver": 0, "iat": now() - 5})),
    );
    let external = sign(
        "test-eddsa",
        &claims_with("carol", json!({"iat": now() - 5})),
    );
    revoke_user(&gateway, "carol");
    upstream.clear();
    let response = get(gateway.addr, "/orders", &[&bearer(&before)]);
    assert_refused(&response, 401, "token_revoked", &upstream);
    assert_refused(
        &get(gateway.addr, "/orders", &[&bearer(&external)]),
        401,
        "token_revoked",
        &upstream,
    );

    std::thread::sleep(Duration::from_millis(1100));
    let after = sign("test-eddsa", &claims_with("carol", json!({"ver": 1})));
    assert_eq!(
        status_and_code(&gateway, &after).0,
        200,
        "a token of the new version works"
    );
    let dave = sign(
        "test-eddsa",
        &claims_with("dave", json!({"iat": now() - 5})),
    );
    assert_eq!(
        status_and_code(&gateway, &dave).0,
        200,
        "other users are untouched"
    );
}

#[test]
fn disabled_user_is_account_disabled_until_enabled() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let token = sign("test-eddsa", &claims("erin"));
    assert_eq!(
        admin_post(&gateway, "/admin/users/erin/disable", None).status,
        200
    );
    upstream.clear();
    let response = get(gateway.addr, "/orders", &[&bearer(&token)]);
    assert_refused(&response, 403, "account_disabled", &upstream);
    assert_eq!(response.header("www-authenticate"), None);
    assert_eq!(
        admin_post(&gateway, "/admin/users/erin/enable", None).status,
        200
    );
    assert_eq!(status_and_code(&gateway, &token).0, 200);
}

#[test]
fn admin_api_needs_the_admin_token_and_bounds_bodies() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let none = send(
        gateway.admin,
        &request("POST", "/admin/users/x/revoke", &["Content-Length: 0"]),
    );
    assert_eq!(
        (none.status, none.header("x-portcullis-error")),
        (401, Some("token_missing"))
    );
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"portcullis-admin\"")
    );
    let wrong = send(
        gateway.admin,
        &request(
            "POST",
            "/admin/users/x/revoke",
            &["Content-Length: 0", "Authorization: Bearer nope"],
        ),
    );
    assert_eq!(
        (wrong.status, wrong.header("x-portcullis-error")),
        (401, Some("token_invalid"))
    );

    let huge = json!({"jti": "x".repeat(70_000), "exp": 1});
    let too_big = admin_post(&gateway, "/admin/tokens/revoke", Some(&huge));
    assert_eq!(
        (too_big.status, too_big.header("x-portcullis-error")),
        (413, Some("request_too_large"))
    );
    let bad = admin_post(&gateway, "/admin/tokens/revoke", Some(&json!({"jti": "x"})));
    assert_eq!(
        (bad.status, bad.header("x-portcullis-error")),
        (400, Some("invalid_request"))
    );
    let unknown = admin_post(&gateway, "/admin/users/x/explode", None);
    assert_eq!(unknown.status, 404);

    assert_eq!(get(gateway.admin, "/healthz", &[]).json()["status"], "ok");
    let ready = get(gateway.admin, "/readyz", &[]);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);
}

#[test]
fn sqlite_state_survives_a_restart() {
    let upstream = EchoUpstream::start();
    let config = standard_config(upstream.addr);
    let gateway = TestGateway::start(&config);
    let claims = claims("frank");
    let token = sign("test-eddsa", &claims);
    admin_post(
        &gateway,
        "/admin/tokens/revoke",
        Some(&json!({"jti": claims["jti"], "exp": claims["exp"]})),
    );
    let disabled = sign("test-eddsa", &claims_with("grace", json!({})));
    admin_post(&gateway, "/admin/users/grace/disable", None);
    let dir = gateway.stop();

    let restarted = TestGateway::start_in(&config, dir);
    assert_eq!(
        status_and_code(&restarted, &token),
        (401, Some("token_revoked".into()))
    );
    assert_eq!(
        status_and_code(&restarted, &disabled),
        (403, Some("account_disabled".into()))
    );
}

#[test]
fn two_instances_on_one_redis_see_each_others_revocations_within_the_bound() {
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let config = redis_config(upstream.addr, &redis, "");
    let (a, b) = (TestGateway::start(&config), TestGateway::start(&config));
    let heidi = claims("heidi");
    let token = sign("test-eddsa", &heidi);
    assert_eq!(
        status_and_code(&b, &token).0,
        200,
        "B caches the token and the user"
    );

    let bound = Duration::from_millis(500);
    admin_post(
        &a,
        "/admin/tokens/revoke",
        Some(&json!({"jti": heidi["jti"], "exp": heidi["exp"]})),
    );
    assert_honoured_within(&b, &token, "token_revoked", Instant::now(), bound);

    let other = sign(
        "test-eddsa",
        &claims_with("ivan", json!({"iat": now() - 5})),
    );
    assert_eq!(status_and_code(&b, &other).0, 200);
    revoke_user(&a, "ivan");
    assert_honoured_within(&b, &other, "token_revoked", Instant::now(), bound);

    let judy = sign("test-eddsa", &claims("judy"));
    assert_eq!(status_and_code(&b, &judy).0, 200);
    admin_post(&a, "/admin/users/judy/disable", None);
    assert_honoured_within(&b, &judy, "account_disabled", Instant::now(), bound);
}

#[test]
fn redis_outage_fails_closed_then_recovers_without_losing_a_revocation() {
    let mut redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&redis_config(upstream.addr, &redis, ""));
    let revoked_claims = claims("kim");
    let revoked = sign("test-eddsa", &revoked_claims);
    let good = sign("test-eddsa", &claims("leo"));
    admin_post(
        &gateway,
        "/admin/tokens/revoke",
        Some(&json!({"jti": revoked_claims["jti"], "exp": revoked_claims["exp"]})),
    );
    assert_eq!(
        status_and_code(&gateway, &good).0,
        200,
        "warms the user cache"
    );

    redis.kill();
    let killed = Instant::now();
    // Within the bound the view is fresh (it was confirmed at most a
    // quarter of the bound before the kill, so for 375 ms after it):
    // decisions go on from memory. An answer that came later (a loaded
    // machine) says nothing about that promise, and is not judged here.
    let fresh = status_and_code(&gateway, &good).0;
    if killed.elapsed() < Duration::from_millis(375) {
        assert_eq!(fresh, 200, "a fresh view keeps answering");
    }
    assert_eq!(
        status_and_code(&gateway, &revoked),
        (401, Some("token_revoked".into()))
    );

    // Freshness dates from the start of the last good poll; how soon the
    // 503 comes depends on scheduling, so only that it comes is asserted
    // (the propagation benchmark measures the timing).
    wait_for_code(&gateway, &good, "auth_unavailable", Duration::from_secs(10));
    upstream.clear();
    let refused = get(gateway.addr, "/orders", &[&bearer(&good)]);
    assert_refused(&refused, 503, "auth_unavailable", &upstream);
    let write = admin_post(&gateway, "/admin/users/leo/revoke", None);
    assert_eq!(
        (write.status, write.header("x-portcullis-error")),
        (503, Some("auth_unavailable"))
    );
    assert_eq!(
        get(gateway.admin, "/readyz", &[]).status,
        503,
        "not ready while stale"
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_and_code(&gateway, &good).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the gateway did not recover after redis came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status_and_code(&gateway, &revoked),
        (401, Some("token_revoked".into())),
        "nothing was lost"
    );
    assert_eq!(get(gateway.admin, "/readyz", &[]).status, 200);
    assert_eq!(
        admin_post(&gateway, "/admin/users/leo/revoke", None).status,
        200,
        "writes work again"
    );
}

#[test]
fn allow_cached_keeps_deciding_from_the_view_during_an_outage() {
    let mut redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&redis_config(
        upstream.addr,
        &redis,
        "on_unavailable = \"allow_cached\"",
    ));
    let revoked_claims = claims("mia");
    let revoked = sign("test-eddsa", &revoked_claims);
    let known = sign("test-eddsa", &claims("ned"));
    admin_post(
        &gateway,
        "/admin/tokens/revoke",
        Some(&json!({"jti": revoked_claims["jti"], "exp": revoked_claims["exp"]})),
    );
    assert_eq!(status_and_code(&gateway, &known).0, 200);

    redis.kill();
    // Until the view is stale (`/readyz` says so), any answer would come
    // from a fresh view and prove nothing about `allow_cached`.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(gateway.admin, "/readyz", &[]).status != 503 {
        assert!(Instant::now() < deadline, "the view never went stale");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        status_and_code(&gateway, &known).0,
        200,
        "a cached user is still decided"
    );
    assert_eq!(
        status_and_code(&gateway, &revoked),
        (401, Some("token_revoked".into()))
    );
    let stranger = sign("test-eddsa", &claims("olga"));
    assert_eq!(
        status_and_code(&gateway, &stranger),
        (503, Some("auth_unavailable".into())),
        "no cached answer"
    );
}

#[test]
fn follower_resyncs_after_the_log_was_trimmed_past_its_position() {
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&redis_config(upstream.addr, &redis, ""));
    let claims = claims("pat");
    let token = sign("test-eddsa", &claims);
    assert_eq!(status_and_code(&gateway, &token).0, 200);

    // Another writer revokes the token and its log entry is trimmed away
    // in the same transaction: the follower never sees the entry and must
    // notice the gap, then resync from the snapshot.
    let jti = claims["jti"].as_str().expect("jti").to_owned();
    let exp = claims["exp"].as_u64().expect("exp");
    let mut conn = redis.connection();
    let _: () = ::redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(key(&format!("revoked:{jti}")))
        .arg(exp)
        .arg("EXAT")
        .arg(exp + 30)
        .ignore()
        .cmd("ZADD")
        .arg(key("revoked"))
        .arg(exp)
        .arg(&jti)
        .ignore()
        .cmd("XADD")
        .arg(key("changes"))
        .arg("*")
        .arg("kind")
        .arg("token")
        .arg("key")
        .arg(&jti)
        .arg("exp")
        .arg(exp)
        .ignore()
        .cmd("XTRIM")
        .arg(key("changes"))
        .arg("MAXLEN")
        .arg(0)
        .ignore()
        .query(&mut conn)
        .expect("trimmed write");
    wait_for_code(&gateway, &token, "token_revoked", Duration::from_secs(5));
}

#[test]
fn the_admin_command_line_drives_the_api() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let url = format!("http://{}", gateway.admin);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["admin", "--url", &url])
            .args(args)
            .env_remove("PORTCULLIS_ADMIN_TOKEN")
            .output()
            .expect("run portcullis admin")
    };
    let token = sign(
        "test-eddsa",
        &claims_with("quinn", json!({"iat": now() - 5})),
    );
    assert_eq!(status_and_code(&gateway, &token).0, 200);

    let out = run(&["--token", ADMIN_TOKEN, "revoke-user", "quinn"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "quinn is logged out everywhere (token version now 1)"
    );
    assert_eq!(
        status_and_code(&gateway, &token),
        (401, Some("token_revoked".into()))
    );

    let out = run(&[
        "--token",
        ADMIN_TOKEN,
        "--json",
        "revoke-token",
        "--access-token",
        &sign("test-eddsa", &claims("rita")),
    ]);
    assert!(out.status.success());
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(answer["revoked"], true);

    let out = run(&["--token", "wrong", "disable", "quinn"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("portcullis: wrong admin token: the gateway at {url} refused it")
    );

    let out = run(&["health"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ready (store sqlite"));
}
