//! Hardening of tokens, claims and the admin API: the same-second cut-off,
//! time claims out of range, query-token dodges, `crit` in any form, and
//! unbounded admin inputs. Every refusal is asserted in the contract's exact
//! shape, with nothing reaching the upstream.

use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

use crate::support::gateway::ADMIN_TOKEN;
use crate::support::http::Response;
use crate::support::tokens::now;
use crate::support::*;

fn setup() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    (upstream, gateway)
}

fn admin_call(gateway: &TestGateway, method: &str, path: &str, body: Option<&Value>) -> Response {
    let body = body.map(Value::to_string).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send(gateway.admin, &raw)
}

fn call(gateway: &TestGateway, token: &str) -> Response {
    get(gateway.addr, "/orders", &[&bearer(token)])
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

// ---- item: "log out everywhere" within the cut-off's second ----

/// `portcullis token` minted without `ver`, so a revoke-user in the same
/// second left it working. It now carries the user's current version read
/// from the store: the bump kills it whatever the clock says, and a token
/// minted after the bump (same second or not) works.
#[test]
fn portcullis_token_carries_the_current_ver_so_revoke_user_kills_it_in_the_same_second() {
    let (upstream, gateway) = setup();
    let config = gateway.dir.path().join("portcullis.toml");
    let mint = || {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["token", "--config", config.to_str().expect("utf-8")])
            .args(["--sub", "hank"])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run portcullis token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let token = mint();
    assert_eq!(
        payload(&token)["ver"],
        0,
        "the user's version before the bump"
    );
    assert_eq!(call(&gateway, &token).status, 200);
    upstream.clear();

    let bumped = admin_call(&gateway, "POST", "/admin/users/hank/revoke", None);
    assert_eq!(bumped.status, 200, "{}", bumped.text());
    assert_refused(&call(&gateway, &token), 401, "token_revoked", &upstream);

    let after = mint();
    assert_eq!(
        payload(&after)["ver"],
        1,
        "the user's version after the bump"
    );
    assert_eq!(call(&gateway, &after).status, 200, "issued after the bump");
}

/// The cut-off is kept in whole seconds: a token without the user's
/// current `ver` whose `iat` is the cut-off's own second may predate the
/// bump, so it is refused; one carrying the current `ver` was minted after
/// it and works.
#[test]
fn a_token_without_the_current_ver_from_the_cut_off_second_is_revoked() {
    let (upstream, gateway) = setup();
    // The bump's second is the gateway's clock: retry until the tokens'
    // `iat` and the recorded cut-off fall in the same second.
    for attempt in 0..20 {
        let sub = format!("ida-{attempt}");
        let second = now();
        let without_ver = sign("test-eddsa", &claims_with(&sub, json!({"iat": second})));
        let current_ver = sign(
            "test-eddsa",
            &claims_with(&sub, json!({"iat": second, "ver": 1})),
        );
        let bumped = admin_call(
            &gateway,
            "POST",
            &format!("/admin/users/{sub}/revoke"),
            None,
        );
        assert_eq!(bumped.status, 200, "{}", bumped.text());
        if bumped.json()["user"]["not_before"] != second {
            continue;
        }
        assert_refused(
            &call(&gateway, &without_ver),
            401,
            "token_revoked",
            &upstream,
        );
        let ok = call(&gateway, &current_ver);
        assert_eq!(ok.status, 200, "{}", ok.text());
        return;
    }
    panic!("never minted a token in the same second as the cut-off");
}

// ---- item: time claims out of range ----

/// An `exp` at or past 2^63 could never be revoked (the revocation write
/// overflowed and answered 503 forever); a far-future `exp` pins a
/// revocation for as long. Tokens outside `max_token_lifetime` are
/// token_invalid.
#[test]
fn tokens_with_times_out_of_range_are_token_invalid() {
    let (upstream, gateway) = setup();
    let now = now();
    let day = 24 * 3600;
    for changes in [
        json!({"exp": 1u64 << 63}),
        json!({"exp": u64::MAX}),
        json!({"exp": now + day + 120}),
        json!({"iat": now - 10, "exp": now + day}),
        json!({"iat": now - day, "exp": now + 60}),
        json!({"iat": now + 20, "exp": now + 10}),
        json!({"nbf": now + 20, "exp": now + 10}),
        json!({"exp": -1}),
        json!({"iat": -1}),
        json!({"exp": 1e30}),
    ] {
        let token = sign("test-eddsa", &claims_with("alice", changes.clone()));
        let response = call(&gateway, &token);
        assert_refused(&response, 401, "token_invalid", &upstream);
    }
    let whole_day = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now, "exp": now + day})),
    );
    assert_eq!(
        call(&gateway, &whole_day).status,
        200,
        "exactly the maximum"
    );
    upstream.clear();

    // Handing such a token to the admin API is a 400, not a 503.
    let huge = sign(
        "test-eddsa",
        &claims_with("alice", json!({"exp": u64::MAX})),
    );
    let answer = admin_call(
        &gateway,
        "POST",
        "/admin/tokens/revoke",
        Some(&json!({ "token": huge })),
    );
    assert_refused(&answer, 400, "invalid_request", &upstream);
}

#[test]
fn max_token_lifetime_is_configurable_and_bounds_the_access_ttl() {
    let upstream = EchoUpstream::start();
    let config = standard_config(upstream.addr).replace(
        "refresh_hint = \"60s\"",
        "refresh_hint = \"60s\"\nmax_token_lifetime = \"1h\"",
    );
    let gateway = TestGateway::start(&config);
    let now = now();
    let long = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now, "exp": now + 7200})),
    );
    assert_refused(&call(&gateway, &long), 401, "token_invalid", &upstream);
    let short = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": now, "exp": now + 3000})),
    );
    assert_eq!(call(&gateway, &short).status, 200);

    let bad = config.replace("max_token_lifetime = \"1h\"", "max_token_lifetime = \"1m\"");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        bad.replace(
            "{fixtures}",
            &crate::support::tokens::fixtures_dir().display().to_string(),
        ),
    )
    .expect("write");
    let err = portcullis::config::load(&path)
        .err()
        .expect("an access_ttl above the maximum is refused");
    assert!(
        err.to_string()
            .contains("tokens.access_ttl must not exceed tokens.max_token_lifetime"),
        "{err}"
    );
}

// ---- item: query-token dodges ----

/// RFC 6750 §2.3 tokens in URLs leak through logs and `Referer`; every
/// spelling a backend might read as `access_token` is refused, not only
/// the canonical one.
#[test]
fn query_token_dodges_are_refused_before_the_upstream() {
    let (upstream, gateway) = setup();
    let token = sign("test-eddsa", &claims("alice"));
    for query in [
        format!("x=1;access_token={token}"),
        format!("access_token[]={token}"),
        format!("access_token%5B%5D={token}"),
        format!("access_token%00={token}"),
        format!("access_token+={token}"),
        format!("access_token%20={token}"),
        format!("access.token={token}"),
        format!("Access_Token={token}"),
        format!("accessToken={token}"),
        format!("%2561ccess_token={token}"),
        format!("%25252561ccess_token={token}"),
    ] {
        for path in ["/orders", "/public"] {
            let response = get(gateway.addr, &format!("{path}?{query}"), &[&bearer(&token)]);
            assert_refused(&response, 400, "invalid_request", &upstream);
        }
    }
    let hint = get(
        gateway.addr,
        "/orders?access_token_hint=x;b=2",
        &[&bearer(&token)],
    );
    assert_eq!(hint.status, 200, "other parameters pass");
}

// ---- item: `crit` whatever its value ----

/// RFC 7515 §4.1.11: portcullis understands no extensions, so `crit` is
/// refused by its presence; `jsonwebtoken` alone reads `"crit": null` as
/// absent. A `kid` or `typ` that is present but not a string is malformed.
#[test]
fn crit_in_any_form_and_non_string_kid_or_typ_are_refused() {
    let (upstream, gateway) = setup();
    let claims = claims("alice");
    let header = |extra: Value| {
        let mut h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "test-eddsa"});
        for (k, v) in extra.as_object().expect("object") {
            h[k] = v.clone();
        }
        h
    };
    let fine = crate::support::tokens::sign_raw_header("test-eddsa", &header(json!({})), &claims);
    assert_eq!(call(&gateway, &fine).status, 200, "the raw signer works");
    upstream.clear();
    for extra in [
        json!({"crit": null}),
        json!({"crit": []}),
        json!({"crit": "exp"}),
        json!({"crit": {}}),
        json!({"kid": null}),
        json!({"typ": null}),
        json!({"kid": 1}),
    ] {
        let token =
            crate::support::tokens::sign_raw_header("test-eddsa", &header(extra.clone()), &claims);
        assert_refused(&call(&gateway, &token), 401, "token_invalid", &upstream);
    }
}

// ---- item: bounded admin inputs ----

/// An `exp` past what any accepted token can have pinned a revocation
/// forever, and one past `i64::MAX` failed the SQLite write with 503.
#[test]
fn admin_revocation_exp_is_bounded_by_max_token_lifetime() {
    let (upstream, gateway) = setup();
    let now = now();
    for exp in [
        json!(1u64 << 63),
        json!(u64::MAX),
        json!(now + 30 * 24 * 3600),
    ] {
        let answer = admin_call(
            &gateway,
            "POST",
            "/admin/tokens/revoke",
            Some(&json!({"jti": "j-far", "exp": exp})),
        );
        assert_refused(&answer, 400, "invalid_request", &upstream);
    }
    for exp in [json!(-1), json!(1e30), json!("soon")] {
        let answer = admin_call(
            &gateway,
            "POST",
            "/admin/tokens/revoke",
            Some(&json!({"jti": "j-bad", "exp": exp})),
        );
        assert_refused(&answer, 400, "invalid_request", &upstream);
    }
    let ok = admin_call(
        &gateway,
        "POST",
        "/admin/tokens/revoke",
        Some(&json!({"jti": "j-ok", "exp": now + 3600})),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// The admin token is compared as SHA-256 digests, so neither a prefix
/// nor an extension of it gets in (and the comparison does not end early
/// on a length difference).
#[test]
fn admin_token_prefixes_and_extensions_are_refused() {
    let (upstream, gateway) = setup();
    for presented in [
        &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
        &format!("{ADMIN_TOKEN}0"),
        "t",
    ] {
        let raw = format!(
            "POST /admin/users/x/revoke HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {presented}\r\nContent-Length: 0\r\n\r\n"
        );
        assert_refused(&send(gateway.admin, &raw), 401, "token_invalid", &upstream);
    }
}

/// A short admin token can be guessed: the configuration is refused.
#[test]
fn an_admin_token_under_32_bytes_is_a_configuration_error() {
    let upstream = EchoUpstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[server]\nadmin_token_env = \"PORTCULLIS_TEST_UNSET_VARIABLE\"\nadmin_token_file = \"admin.token\"\n{}",
        standard_config(upstream.addr).replace(
            "{fixtures}",
            &crate::support::tokens::fixtures_dir().display().to_string()
        )
    );
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, &text).expect("write");
    std::fs::write(dir.path().join("admin.token"), "x".repeat(31)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the admin token has 31 bytes; at least 32 are needed"),
        "{err}"
    );
    std::fs::write(dir.path().join("admin.token"), "x".repeat(32)).expect("write");
    assert!(
        portcullis::config::load(&path).is_ok(),
        "32 bytes are enough"
    );
    // A character no `Bearer` header can carry would make every admin
    // request a 400: refused here, not found out at run time.
    std::fs::write(
        dir.path().join("admin.token"),
        format!("{}!", "x".repeat(32)),
    )
    .expect("write");
    let err = match portcullis::config::load(&path) {
        Ok(_) => panic!("an admin token with `!` was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("the admin token has a character a Bearer token cannot carry"),
        "{err}"
    );
}

/// A subject or role the gateway would refuse (or mangle) in a token is
/// refused when the admin API is asked to issue or manage it.
#[test]
fn admin_api_refuses_subjects_and_roles_no_token_could_carry() {
    let (upstream, gateway) = setup();
    let long_role = "r".repeat(300);
    let bodies = [
        json!({"sub": ""}),
        json!({"sub": "a\u{1}b"}),
        json!({"sub": "line\nbreak"}),
        json!({"sub": "tab\there"}),
        json!({"sub": "x".repeat(513)}),
        json!({"sub": "ok", "roles": ["user,admin"]}),
        json!({"sub": "ok", "roles": [""]}),
        json!({"sub": "ok", "roles": ["  "]}),
        json!({"sub": "ok", "roles": ["a\u{7f}"]}),
        json!({"sub": "ok", "roles": ["tab\there"]}),
        json!({"sub": "ok", "roles": [long_role]}),
        json!({"sub": "ok", "scope": "read\u{0}write"}),
        json!({"sub": "ok", "scope": "a\"b"}),
    ];
    for body in &bodies {
        let answer = admin_call(&gateway, "POST", "/admin/sessions", Some(body));
        assert_refused(&answer, 400, "invalid_request", &upstream);
    }
    for path in [
        "/admin/users/a%01b/revoke",
        "/admin/users/a%0Ab/disable",
        "/admin/users/a%09b/enable",
    ] {
        let answer = admin_call(&gateway, "POST", path, None);
        assert_refused(&answer, 400, "invalid_request", &upstream);
    }
    let answer = admin_call(&gateway, "GET", "/admin/users/a%00b/sessions", None);
    assert_refused(&answer, 400, "invalid_request", &upstream);

    let ok = admin_call(
        &gateway,
        "POST",
        "/admin/sessions",
        Some(&json!({"sub": "olga", "roles": ["admin", "user"], "scope": "reports:read"})),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let access = ok.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let admitted = get(gateway.addr, "/admin/panel", &[&bearer(&access)]);
    assert_eq!(admitted.status, 200, "{}", admitted.text());
    assert_eq!(upstream.only().values("x-user-roles"), ["admin,user"]);
}

/// Redis kept each user's session index forever; it now expires with the
/// longest absolute expiry among the sessions added to it.
#[tokio::test]
async fn redis_user_session_index_expires_with_its_longest_session() {
    use portcullis::store::{self, Retention, StoreLocation};
    let server = crate::support::redis::RedisServer::start();
    let retention = Retention {
        after_expiry: std::time::Duration::from_secs(30),
        log_entries: 100,
    };
    let store = store::open(&StoreLocation::Redis(server.url()), retention)
        .await
        .expect("open redis");
    let now = now();
    let session =
        |sid: &str, expires_at: u64| crate::support::session_record("lena", sid, expires_at);
    let client = ::redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let mut expire_time = || -> i64 {
        ::redis::cmd("EXPIRETIME")
            .arg("portcullis:user-sessions:lena")
            .query(&mut conn)
            .expect("EXPIRETIME")
    };
    for (sid, expires_at, expected) in [
        ("s1", now + 1000, now + 1000),
        ("s2", now + 5000, now + 5000),
        ("s3", now + 2000, now + 5000),
    ] {
        store
            .create_session(&session(sid, expires_at))
            .await
            .expect("create");
        assert_eq!(expire_time(), expected as i64, "after {sid}");
    }
}
