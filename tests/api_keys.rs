//! API keys through the whole gateway: created, listed and revoked through
//! the real admin API and the command line, on SQLite and on Redis; what a
//! route with `api_keys = true` lets in and forwards, what every other
//! route does with a key, the contract's codes for missing, unknown,
//! expired and revoked keys, the failure throttle, and a revocation seen
//! by a second instance sharing Redis within `max_staleness`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::gateway::ADMIN_TOKEN;
use crate::support::redis::RedisServer;
use crate::support::*;

/// The standard routes, plus three that take keys.
fn config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"{}
[[routes]]
path = "/svc"
upstream = "echo"
auth = "required"
api_keys = true

[[routes]]
path = "/svc-admin"
upstream = "echo"
auth = "required"
roles = ["admin"]
api_keys = true

[[routes]]
path = "/svc-reports"
upstream = "echo"
auth = "required"
scopes = ["reports:read"]
api_keys = true

{extra}
"#,
        standard_config(upstream)
    )
}

fn admin(gateway: &TestGateway, method: &str, path: &str, body: Option<&Value>) -> Response {
    let body = body.map(Value::to_string).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send(gateway.admin, &raw)
}

/// Creates a key through the admin API: `(id, key)`.
fn create(gateway: &TestGateway, body: Value) -> (String, String) {
    let created = admin(gateway, "POST", "/admin/api-keys", Some(&body));
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    let key = body["key"]
        .as_str()
        .expect("the key, shown once")
        .to_owned();
    (body["id"].as_str().expect("id").to_owned(), key)
}

fn with_key(key: &str) -> String {
    format!("X-Api-Key: {key}")
}

fn code(response: &Response) -> (u16, Option<&str>) {
    (response.status, response.header("x-portcullis-error"))
}

/// The key's identity reaches the upstream like a token's, with its kind;
/// the key itself never does; the list shows it without its hash and with
/// its use; a revocation refuses it at once with `token_revoked`.
#[test]
fn a_key_lets_its_service_in_until_it_is_revoked() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config(upstream.addr, ""));
    let (id, key) = create(
        &gateway,
        json!({"sub": "svc-backup", "roles": ["backup", "reader"], "scope": "files:read",
               "label": "nightly backup", "expires_in": 3600}),
    );
    assert!(key.starts_with(&format!("pck_{id}_")), "{key}");

    let header = with_key(&key);
    let authorization = format!("Authorization: ApiKey {key}");
    for presented in [&header, &authorization] {
        upstream.clear();
        let response = get(gateway.addr, "/svc/files?x=1", &[presented.as_str()]);
        assert_eq!(response.status, 200, "{}", response.text());
        let seen = upstream.only();
        assert_eq!(seen.values("x-user-id"), ["svc-backup"]);
        assert_eq!(seen.values("x-user-roles"), ["backup,reader"]);
        assert_eq!(seen.values("x-user-scopes"), ["files:read"]);
        assert_eq!(seen.values("x-user-credential"), ["api_key"]);
        assert!(seen.values("x-session-id").is_empty());
        assert!(seen.folded("x-api-key").is_empty(), "the key went upstream");
        assert!(
            seen.values("authorization").is_empty(),
            "the key went upstream"
        );
    }

    let listed = admin(&gateway, "GET", "/admin/api-keys", None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let text = listed.text();
    assert!(!text.contains(&key[20..]), "the key is shown once only");
    let entry = &listed.json()["api_keys"][0];
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["prefix"], format!("pck_{id}"));
    assert_eq!(entry["label"], "nightly backup");
    assert_eq!(entry["status"], "active");
    assert!(entry["last_used"].as_u64().is_some(), "{entry}");
    assert!(entry["expires"].as_u64() > entry["created"].as_u64());
    assert!(entry.get("hash").is_none(), "{entry}");

    let revoked = admin(&gateway, "DELETE", &format!("/admin/api-keys/{id}"), None);
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json()["status"], "revoked");
    upstream.clear();
    let refused = get(gateway.addr, "/svc/files", &[&header]);
    assert_refused(&refused, 401, "token_revoked", &upstream);
    let unknown = admin(&gateway, "DELETE", "/admin/api-keys/0000000000000000", None);
    assert_eq!(code(&unknown), (404, Some("not_found")));
}

/// Missing, unknown, malformed, expired and revoked keys get the codes a
/// token would, and the upstream sees nothing.
#[test]
fn bad_keys_get_the_token_codes_and_reach_nothing() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config(upstream.addr, ""));
    let (_, short) = create(&gateway, json!({"sub": "svc-probe", "expires_in": 1}));
    let (_, key) = create(&gateway, json!({"sub": "svc-probe"}));
    let unknown = format!("pck_{}{}", "0".repeat(16), &key[20..]);
    let cases = [
        (None, 401, "token_missing"),
        (Some(with_key(&unknown)), 401, "token_invalid"),
        (Some(with_key("pck_short")), 401, "token_invalid"),
        (Some(with_key(&format!("{key}x"))), 401, "token_invalid"),
        (Some("X-Api-Key: ".to_owned()), 400, "invalid_request"),
        (
            Some(format!("{}\r\nX-Api-Key: {key}", with_key(&key))),
            400,
            "invalid_request",
        ),
        (
            Some(format!(
                "{}\r\nAuthorization: Bearer {}",
                with_key(&key),
                sign("test-eddsa", &claims("alice"))
            )),
            400,
            "invalid_request",
        ),
    ];
    for (header, status, expected) in &cases {
        upstream.clear();
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        eprintln!("case {header:?}");
        assert_refused(
            &get(gateway.addr, "/svc", &headers),
            *status,
            expected,
            &upstream,
        );
    }
    std::thread::sleep(Duration::from_millis(2100));
    upstream.clear();
    let expired = get(gateway.addr, "/svc", &[&with_key(&short)]);
    assert_refused(&expired, 401, "token_invalid", &upstream);
}

/// A route without `api_keys = true` does not read keys: a request with
/// only a key has no credential there. A key on a public route still never
/// reaches the upstream, in any spelling.
#[test]
fn a_route_without_api_keys_refuses_keys() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config(upstream.addr, ""));
    let (_, key) = create(&gateway, json!({"sub": "svc-probe", "roles": ["admin"]}));
    assert_refused(
        &get(gateway.addr, "/orders", &[&with_key(&key)]),
        401,
        "token_missing",
        &upstream,
    );
    let authorization = format!("Authorization: ApiKey {key}");
    assert_refused(
        &get(gateway.addr, "/orders", &[&authorization]),
        401,
        "token_missing",
        &upstream,
    );
    let spelled = format!("X_Api_Key: {key}");
    let public = get(
        gateway.addr,
        "/public",
        &[&with_key(&key), &authorization, &spelled],
    );
    assert_eq!(public.status, 200, "{}", public.text());
    let seen = upstream.only();
    assert!(seen.folded("x-api-key").is_empty(), "{:?}", seen.headers);
    assert!(
        seen.values("authorization").is_empty(),
        "{:?}",
        seen.headers
    );
}

/// A key's roles and scope meet the route's policy as a token's do, and a
/// token still passes a key route, told apart by the credential header,
/// whatever the client claimed.
#[test]
fn roles_and_scopes_decide_for_keys_as_for_tokens() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config(upstream.addr, ""));
    let (_, reader) = create(
        &gateway,
        json!({"sub": "svc-r", "roles": ["reader"], "scope": "reports:read"}),
    );
    let (_, boss) = create(&gateway, json!({"sub": "svc-a", "roles": ["admin"]}));
    assert_refused(
        &get(gateway.addr, "/svc-admin", &[&with_key(&reader)]),
        403,
        "insufficient_scope",
        &upstream,
    );
    assert_refused(
        &get(gateway.addr, "/svc-reports", &[&with_key(&boss)]),
        403,
        "insufficient_scope",
        &upstream,
    );
    assert_eq!(
        get(gateway.addr, "/svc-admin", &[&with_key(&boss)]).status,
        200
    );
    assert_eq!(
        get(gateway.addr, "/svc-reports", &[&with_key(&reader)]).status,
        200
    );
    upstream.clear();
    let token = sign("test-eddsa", &claims("alice"));
    let response = get(
        gateway.addr,
        "/svc",
        &[
            &bearer(&token),
            "X-User-Credential: api_key",
            "x_user_credential: api_key",
        ],
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        upstream.only().folded("x-user-credential"),
        [("x-user-credential", "token")]
    );
}

/// A key in the query string is refused like `access_token=`, on every
/// route, before anything reaches the upstream.
#[test]
fn a_key_in_the_query_string_is_refused() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config(upstream.addr, ""));
    let (_, key) = create(&gateway, json!({"sub": "svc-probe"}));
    for target in [
        format!("/svc?api_key={key}"),
        format!("/svc?X-Api-Key={key}"),
        format!("/public?apikey={key}"),
        format!("/public?x=1&API_KEY={key}"),
    ] {
        upstream.clear();
        eprintln!("case {target}");
        assert_refused(
            &get(gateway.addr, &target, &[]),
            400,
            "invalid_request",
            &upstream,
        );
    }
}

/// Wrong keys are counted; after `max_failures` the id they name is
/// answered 429 with `Retry-After`, and the valid key of that id still
/// passes (it is checked before the throttle).
#[test]
fn wrong_keys_are_counted_and_throttled_but_the_valid_key_passes() {
    let upstream = EchoUpstream::start();
    let extra = "[sessions]\nmax_failures = 3\nfailure_window = \"60s\"\n";
    let gateway = TestGateway::start(&config(upstream.addr, extra));
    let (id, key) = create(&gateway, json!({"sub": "svc-probe"}));
    let last = if key.ends_with('A') { "B" } else { "A" };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    let counted = || {
        portcullis::metrics::METRICS
            .api_key_failures
            .with_label_values(&["api_key_wrong"])
            .get()
    };
    let before = counted();
    for _ in 0..3 {
        assert_refused(
            &get(gateway.addr, "/svc", &[&with_key(&wrong)]),
            401,
            "token_invalid",
            &upstream,
        );
    }
    let throttled = get(gateway.addr, "/svc", &[&with_key(&wrong)]);
    assert_refused(&throttled, 429, "too_many_requests", &upstream);
    let wait: u64 = throttled
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait));
    assert!(counted() >= before + 4, "wrong keys are counted");
    assert_eq!(
        get(gateway.addr, "/svc", &[&with_key(&key)]).status,
        200,
        "the valid key of {id}"
    );
    let page = get(gateway.admin, "/metrics", &[]).text();
    assert!(
        page.contains("portcullis_api_key_failures_total{reason=\"api_key_wrong\"}"),
        "{page}"
    );
}

/// A disabled subject's keys are refused like its tokens.
#[test]
fn a_disabled_subject_is_refused_with_its_key() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config(upstream.addr, ""));
    let (_, key) = create(&gateway, json!({"sub": "svc-old"}));
    let disabled = admin(&gateway, "POST", "/admin/users/svc-old/disable", None);
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_refused(
        &get(gateway.addr, "/svc", &[&with_key(&key)]),
        403,
        "account_disabled",
        &upstream,
    );
}

/// The admin API refuses keys it could not forward or keep.
#[test]
fn the_admin_api_refuses_keys_it_cannot_issue() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config(upstream.addr, ""));
    for body in [
        json!({}),
        json!({"sub": ""}),
        json!({"sub": "svc", "roles": ["a,b"]}),
        json!({"sub": "svc", "expires_in": 0}),
        json!({"sub": "svc", "unknown": 1}),
    ] {
        let refused = admin(&gateway, "POST", "/admin/api-keys", Some(&body));
        assert_eq!(code(&refused), (400, Some("invalid_request")), "{body}");
    }
    let put = admin(&gateway, "PUT", "/admin/api-keys", None);
    assert_eq!(put.status, 405);
}

fn redis_config(upstream: SocketAddr, redis: &RedisServer) -> String {
    config(
        upstream,
        &format!(
            "[store]\nurl = \"{}\"\nmax_staleness = \"500ms\"\n",
            redis.url()
        ),
    )
}

/// Two instances on one Redis: a key created on one lets its service in
/// at the other, and its revocation is honoured by the other within
/// `max_staleness` (each request sent later than the bound is refused:
/// `token_revoked`, or 503 from an instance that cannot confirm its view).
#[test]
fn a_revocation_reaches_a_second_instance_sharing_redis_within_the_bound() {
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let a = TestGateway::start(&redis_config(upstream.addr, &redis));
    let b = TestGateway::start(&redis_config(upstream.addr, &redis));
    let (id, key) = create(&a, json!({"sub": "svc-sync", "label": "shared"}));
    let started = Instant::now();
    while get(b.addr, "/svc", &[&with_key(&key)]).status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the key never reached b"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let listed = admin(&b, "GET", "/admin/api-keys", None).json();
    assert_eq!(listed["api_keys"][0]["id"], id.as_str());
    assert!(
        listed["api_keys"][0]["last_used"].as_u64().is_some(),
        "{listed}"
    );

    let written = Instant::now();
    let revoked = admin(&a, "DELETE", &format!("/admin/api-keys/{id}"), None);
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let bound = Duration::from_millis(500);
    loop {
        let sent = written.elapsed();
        let response = get(b.addr, "/svc", &[&with_key(&key)]);
        if code(&response) == (401, Some("token_revoked")) {
            break;
        }
        if sent > bound {
            assert_eq!(
                code(&response),
                (503, Some("auth_unavailable")),
                "sent {sent:?} after"
            );
        }
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "never revoked on b"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A restarted instance on Redis loads its keys from the snapshot.
#[test]
fn a_new_instance_loads_the_keys_from_redis() {
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let first = TestGateway::start(&redis_config(upstream.addr, &redis));
    let (id, key) = create(&first, json!({"sub": "svc-boot"}));
    let (_, revoked) = create(&first, json!({"sub": "svc-boot"}));
    let revoked_id = &revoked[4..20];
    assert_eq!(
        admin(
            &first,
            "DELETE",
            &format!("/admin/api-keys/{revoked_id}"),
            None
        )
        .status,
        200
    );
    drop(first);
    let second = TestGateway::start(&redis_config(upstream.addr, &redis));
    assert_eq!(
        get(second.addr, "/svc", &[&with_key(&key)]).status,
        200,
        "{id}"
    );
    upstream.clear();
    assert_refused(
        &get(second.addr, "/svc", &[&with_key(&revoked)]),
        401,
        "token_revoked",
        &upstream,
    );
}

/// `portcullis admin api-key create|list|revoke` against a running gateway.
#[test]
fn the_command_line_creates_lists_and_revokes_keys() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config(upstream.addr, ""));
    let url = format!("http://{}", gateway.admin);
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["admin", "--url", &url])
            .args(args)
            .env("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn")
            .output()
            .expect("portcullis admin");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text)
    };
    let (status, created) = cli(&[
        "--json",
        "api-key",
        "create",
        "--sub",
        "svc-cron",
        "--roles",
        "reader,backup",
        "--scope",
        "reports:read",
        "--expires",
        "90d",
        "--label",
        "cron job",
    ]);
    assert_eq!(status, Some(0), "{created}");
    let created: Value = serde_json::from_str(&created).expect("JSON");
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    let expires = created["expires"].as_u64().expect("expires");
    let created_at = created["created"].as_u64().expect("created");
    assert_eq!(expires - created_at, 90 * 86400);
    assert_eq!(
        get(gateway.addr, "/svc-reports", &[&with_key(&key)]).status,
        200
    );

    let (status, sentence) = cli(&["api-key", "create", "--sub", "svc-other"]);
    assert_eq!(status, Some(0), "{sentence}");
    assert!(
        sentence.contains("shown once") && sentence.contains("pck_"),
        "{sentence}"
    );

    let (status, listed) = cli(&["api-key", "list"]);
    assert_eq!(status, Some(0), "{listed}");
    assert!(listed.starts_with("2 API key(s)"), "{listed}");
    let line = listed
        .lines()
        .find(|l| l.contains(&id))
        .expect("the key's line");
    assert!(
        line.contains(&format!("pck_{id}")) && line.contains("cron job"),
        "{line}"
    );
    assert!(
        line.contains("active") && !line.contains("last used never"),
        "{line}"
    );
    assert!(!listed.contains(&key[21..]), "the key is never listed");

    let (status, revoked) = cli(&["api-key", "revoke", &id]);
    assert_eq!(
        (status, revoked.trim()),
        (Some(0), format!("API key {id} is revoked").as_str())
    );
    upstream.clear();
    assert_refused(
        &get(gateway.addr, "/svc", &[&with_key(&key)]),
        401,
        "token_revoked",
        &upstream,
    );
    let (status, missing) = cli(&["api-key", "revoke", "0000000000000000"]);
    assert_eq!(status, Some(1), "{missing}");
}

/// `portcullis check` refuses `api_keys` where no key could ever be read,
/// and a value that is no boolean, each at its position; it shows which
/// routes take keys.
#[test]
fn check_refuses_api_keys_it_could_never_honour_at_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = crate::support::tokens::fixtures_dir().join("test-eddsa-2.pub.pem");
    let head = format!(
        "[tokens]\nissuer = \"https://issuer.test\"\naudience = \"api\"\n\n\
         [[tokens.keys]]\nkid = \"k\"\nalgorithm = \"EdDSA\"\npublic_key_file = {:?}\n\n\
         [[upstreams]]\nname = \"legacy\"\ntargets = [\"127.0.0.1:8081\"]\n\n",
        key.display().to_string()
    );
    let check = |text: &str| {
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "check",
                "--skip-files",
                "--config",
                path.to_str().expect("utf-8"),
            ])
            .output()
            .expect("check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text, path.display().to_string())
    };
    let none = format!("{head}[[routes]]\npath = \"/p\"\nupstream = \"legacy\"\nauth = \"none\"\napi_keys = true\n");
    let (status, text, file) = check(&none);
    assert_eq!(status, Some(2), "{text}");
    let expected = format!("{file}:18:12: api_keys needs auth = \"required\" or \"optional\"");
    assert!(
        text.lines().any(|l| l.starts_with(&expected)),
        "{expected:?} in:\n{text}"
    );

    let typo =
        format!("{head}[[routes]]\npath = \"/p\"\nupstream = \"legacy\"\napi_keys = \"yes\"\n");
    let (status, text, file) = check(&typo);
    assert_eq!(status, Some(2), "{text}");
    assert!(text.contains(&format!("{file}:17:")), "{text}");

    let twice = format!("{head}[identity]\ncredential = \"X-User-Id\"\n");
    let (status, text, file) = check(&twice);
    assert_eq!(status, Some(2), "{text}");
    let expected = format!("{file}:15:14: header \"X-User-Id\" is used twice in [identity]");
    assert!(
        text.lines().any(|l| l.starts_with(&expected)),
        "{expected:?} in:\n{text}"
    );

    let fine = format!("{head}[[routes]]\npath = \"/p\"\nupstream = \"legacy\"\napi_keys = true\n");
    let (status, text, _) = check(&fine);
    assert_eq!(status, Some(0), "{text}");
    assert!(text.contains("required+key"), "{text}");
}
