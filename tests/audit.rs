//! The audit trail (`[audit]`): one JSON line per decision and per admin
//! action, with a pinned set of fields (a format operators parse), the
//! rule that decided, the admin caller's address, never a secret, a file
//! that is reopened on reload, and a full queue that drops and counts.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use portcullis::audit::{self, Credential, Decision, Verdict};

use crate::support::gateway::ADMIN_TOKEN;
use crate::support::sink::StalledSink;
use crate::support::{
    assert_refused, bearer, claims, claims_with, get, post, send, sign, standard_config,
    EchoUpstream, TestGateway,
};

/// The fields of a decision line, all of them always present (`missing`
/// only when something was missing). Renaming one breaks every parser.
const DECISION_FIELDS: [&str; 13] = [
    "time",
    "target",
    "event",
    "request_id",
    "client",
    "subject",
    "credential",
    "route",
    "method",
    "decision",
    "code",
    "rule",
    "missing",
];

/// The fields of an admin action line, all always present.
const ADMIN_FIELDS: [&str; 9] = [
    "time",
    "target",
    "event",
    "request_id",
    "source",
    "caller",
    "action",
    "resource",
    "outcome",
];

fn audited(upstream: &EchoUpstream) -> TestGateway {
    let config = format!(
        "{}\n[audit]\nenabled = true\ndestination = \"audit.log\"\n",
        standard_config(upstream.addr)
    );
    TestGateway::start(&config)
}

fn trail_path(gateway: &TestGateway) -> std::path::PathBuf {
    gateway.dir.path().join("audit.log")
}

/// Every line of the trail so far, each parsed (a line that is not one
/// JSON object fails the test).
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The line `pred` picks, waited for (the writer batches for a few ms).
fn wait_line(path: &Path, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = lines(path).into_iter().find(|l| pred(l)) {
            return line;
        }
        assert!(Instant::now() < deadline, "no such line in {path:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn decision_for(path: &Path, request_id: &str) -> Value {
    wait_line(path, |l| {
        l["event"] == "decision" && l["request_id"] == request_id
    })
}

fn id_of(response: &crate::support::Response) -> String {
    response.header("x-request-id").expect("id").to_owned()
}

#[track_caller]
fn assert_fields(line: &Value, expected: &[&str]) {
    let have: BTreeSet<&str> = line
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(have, want, "{line}");
}

/// What a decision line says, beside its time and id.
fn summary(line: &Value) -> Value {
    json!({
        "client": line["client"], "subject": line["subject"],
        "credential": line["credential"], "route": line["route"],
        "method": line["method"], "decision": line["decision"],
        "code": line["code"], "rule": line["rule"], "missing": line.get("missing"),
    })
}

#[test]
fn allowed_and_refused_decisions_name_the_route_the_code_and_the_rule() {
    let upstream = EchoUpstream::start();
    let gateway = audited(&upstream);
    let path = trail_path(&gateway);
    let token = sign("test-eddsa", &claims("alice"));
    let scoped = sign(
        "test-eddsa",
        &claims_with("bob", json!({"scope": "reports:read"})),
    );
    let expired = sign(
        "test-eddsa",
        &claims_with("carol", json!({"exp": 1_000_000})),
    );
    let cases: Vec<(String, &str, Option<String>, Value)> = vec![
        (
            "/public/page".into(),
            "GET",
            None,
            json!([
                "anonymous",
                "none",
                "/public",
                "allowed",
                "ok",
                "public",
                null
            ]),
        ),
        (
            "/orders".into(),
            "GET",
            Some(token.clone()),
            json!([
                "alice",
                "token",
                "/",
                "allowed",
                "ok",
                "authenticated",
                null
            ]),
        ),
        (
            "/admin/users".into(),
            "GET",
            Some(token.clone()),
            json!([
                "alice",
                "token",
                "/admin",
                "refused",
                "insufficient_scope",
                "roles",
                ["admin"]
            ]),
        ),
        (
            "/reports/q3".into(),
            "GET",
            Some(scoped),
            json!([
                "bob",
                "token",
                "/reports",
                "refused",
                "insufficient_scope",
                "scopes",
                ["reports:export"]
            ]),
        ),
        (
            "/orders".into(),
            "GET",
            None,
            json!([
                "anonymous",
                "none",
                "/",
                "refused",
                "token_missing",
                "token",
                null
            ]),
        ),
        (
            "/orders".into(),
            "GET",
            Some(expired),
            json!([
                "anonymous",
                "token",
                "/",
                "refused",
                "token_expired",
                "token",
                null
            ]),
        ),
        (
            "/maybe/x".into(),
            "GET",
            None,
            json!([
                "anonymous",
                "none",
                "/maybe",
                "allowed",
                "ok",
                "anonymous",
                null
            ]),
        ),
    ];
    for (target, method, token, expected) in cases {
        let headers: Vec<String> = token.iter().map(|t| bearer(t)).collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let response = get(gateway.addr, &target, &headers);
        let line = decision_for(&path, &id_of(&response));
        let e = expected.as_array().expect("row");
        let subject = if e[0] == "anonymous" {
            Value::Null
        } else {
            e[0].clone()
        };
        let want = json!({
            "client": "127.0.0.1", "subject": subject, "credential": e[1],
            "route": e[2], "method": method, "decision": e[3], "code": e[4],
            "rule": e[5], "missing": if e[6].is_null() { None } else { Some(&e[6]) },
        });
        assert_eq!(summary(&line), want, "{target}: {line}");
        let mut fields = DECISION_FIELDS.to_vec();
        if e[6].is_null() {
            fields.retain(|f| *f != "missing");
        }
        assert_fields(&line, &fields);
        assert_eq!(line["target"], "portcullis::audit");
        let time = line["time"].as_str().expect("time");
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    }
    // A path no route serves, refused before any token is looked at.
    let config = format!(
        "{}\n[audit]\nenabled = true\ndestination = \"audit.log\"\n",
        crate::support::gateway::config_with_routes(
            upstream.addr,
            "[[routes]]\npath = \"/only\"\nupstream = \"echo\"\nauth = \"none\"\n"
        )
    );
    let narrow = TestGateway::start(&config);
    upstream.clear();
    let response = get(narrow.addr, "/elsewhere", &[]);
    assert_refused(&response, 404, "not_found", &upstream);
    let line = decision_for(&trail_path(&narrow), &id_of(&response));
    assert_eq!(
        (&line["route"], &line["rule"], &line["decision"]),
        (&json!("_unrouted"), &json!("no_route"), &json!("refused"))
    );
}

/// `POST /admin/…` with the test admin token and `body`.
fn admin_post(gateway: &TestGateway, target: &str, body: &str) -> crate::support::Response {
    post(
        gateway.admin,
        target,
        &[&format!("Authorization: Bearer {ADMIN_TOKEN}")],
        body,
    )
}

fn admin_line(path: &Path, request_id: &str) -> Value {
    wait_line(path, |l| {
        l["event"] == "admin" && l["request_id"] == request_id
    })
}

#[test]
fn admin_actions_are_recorded_with_the_callers_address() {
    let upstream = EchoUpstream::start();
    let gateway = audited(&upstream);
    let path = trail_path(&gateway);
    let token_claims = claims("dave");
    let jti = token_claims["jti"].as_str().expect("jti").to_owned();
    let token = sign("test-eddsa", &token_claims);
    let revoked = admin_post(
        &gateway,
        "/admin/tokens/revoke",
        &json!({"token": token}).to_string(),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let cases = [
        (revoked, "token_revoke", Some(jti.as_str()), "ok"),
        (
            admin_post(&gateway, "/admin/users/erin/revoke", ""),
            "user_revoke",
            Some("erin"),
            "ok",
        ),
        (
            admin_post(&gateway, "/admin/users/erin/disable", ""),
            "user_disable",
            Some("erin"),
            "ok",
        ),
        (
            admin_post(&gateway, "/admin/users/erin/enable", ""),
            "user_enable",
            Some("erin"),
            "ok",
        ),
        (
            admin_post(&gateway, "/admin/reload", ""),
            "reload",
            None,
            "ok",
        ),
    ];
    for (response, action, target, outcome) in cases {
        let line = admin_line(&path, &id_of(&response));
        assert_fields(&line, &ADMIN_FIELDS);
        assert_eq!(
            (&line["action"], &line["resource"], &line["outcome"]),
            (&json!(action), &json!(target), &json!(outcome)),
            "{line}"
        );
        assert_eq!(line["caller"], "127.0.0.1", "{line}");
        assert_eq!(line["source"], "admin_api", "{line}");
    }
    // A session that is not there, and a caller without the admin token:
    // both recorded, with their codes.
    let raw = "DELETE /admin/sessions/no-such-session HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
        .to_owned()
        + ADMIN_TOKEN + "\r\n\r\n";
    let missing = send(gateway.admin, &raw);
    assert_eq!(missing.status, 404);
    let line = admin_line(&path, &id_of(&missing));
    assert_eq!(
        (&line["action"], &line["resource"], &line["outcome"]),
        (
            &json!("session_end"),
            &json!("no-such-session"),
            &json!("not_found")
        )
    );
    let intruder = post(
        gateway.admin,
        "/admin/users/erin/revoke",
        &["Authorization: Bearer not-the-admin-token"],
        "",
    );
    assert_eq!(intruder.status, 401);
    let line = admin_line(&path, &id_of(&intruder));
    assert_eq!(
        (&line["action"], &line["outcome"], &line["caller"]),
        (
            &json!("user_revoke"),
            &json!("token_invalid"),
            &json!("127.0.0.1")
        )
    );
    // The revoked token is then refused, and the trail says by what.
    let refused = get(gateway.addr, "/orders", &[&bearer(&token)]);
    assert_refused(&refused, 401, "token_revoked", &upstream);
    let line = decision_for(&path, &id_of(&refused));
    assert_eq!(
        (&line["rule"], &line["subject"]),
        (&json!("revocation"), &json!("dave"))
    );
}

/// Nothing a client sends as a secret reaches the trail: not the token,
/// a cookie, a query string, a header value, a password, or the path.
#[test]
fn no_token_cookie_query_header_value_or_password_reaches_the_trail() {
    let upstream = EchoUpstream::start();
    let gateway = audited(&upstream);
    let path = trail_path(&gateway);
    let token = sign("test-eddsa", &claims("frank"));
    let secrets = [
        "QUERYSECRET0451",
        "COOKIESECRET0451",
        "HEADERSECRET0451",
        "PATHSECRET0451",
        "PASSWORDSECRET0451",
    ];
    let mut ids = Vec::new();
    let cookie = format!("Cookie: session={}", secrets[1]);
    let header = format!("X-Api-Key: {}", secrets[2]);
    let basic = format!(
        "Authorization: Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("frank:{}", secrets[4])
        )
    );
    let auth = bearer(&token);
    let requests: [(String, Vec<&str>); 5] = [
        (
            format!("/orders/{}?q={}", secrets[3], secrets[0]),
            vec![&auth, &cookie, &header],
        ),
        (format!("/orders?access_token={}", token), vec![]),
        (
            format!("/public/x?code={}", secrets[0]),
            vec![&cookie, &header],
        ),
        ("/orders".to_owned(), vec![&basic]),
        ("/admin/x".to_owned(), vec![&auth, &header]),
    ];
    for (target, headers) in &requests {
        ids.push(id_of(&get(gateway.addr, target, headers)));
    }
    let login = post(
        gateway.addr,
        "/auth/token",
        &["Content-Type: application/x-www-form-urlencoded"],
        &format!("grant_type=refresh_token&refresh_token={}", secrets[4]),
    );
    ids.push(id_of(&login));
    let revoke = admin_post(
        &gateway,
        "/admin/tokens/revoke",
        &json!({"token": token}).to_string(),
    );
    ids.push(id_of(&revoke));
    for id in &ids {
        wait_line(&path, |l| l["request_id"] == id.as_str());
    }
    let text = std::fs::read_to_string(&path).expect("trail");
    assert_eq!(text.lines().count(), ids.len(), "{text}");
    for secret in secrets.iter().copied().chain([token.as_str(), ADMIN_TOKEN]) {
        assert!(!text.contains(secret), "{secret} in the trail:\n{text}");
    }
    // The token's parts (a signature alone is a secret too).
    for part in token.split('.') {
        assert!(!text.contains(part), "a part of the token in the trail");
    }
}

/// The trail's file is opened again on reload (and SIGHUP, the same
/// reload): after logrotate renames it, new lines go to a new file.
#[test]
fn a_reload_reopens_the_file_after_a_rename() {
    let upstream = EchoUpstream::start();
    let gateway = audited(&upstream);
    let path = trail_path(&gateway);
    let first = get(gateway.addr, "/public/a", &[]);
    decision_for(&path, &id_of(&first));
    let rotated = gateway.dir.path().join("audit.log.1");
    std::fs::rename(&path, &rotated).expect("rotate");
    let reload = gateway.reload();
    assert_eq!(reload.status, 200, "{}", reload.text());
    let second = get(gateway.addr, "/public/b", &[]);
    decision_for(&path, &id_of(&second));
    admin_line(&path, &id_of(&reload));
    assert_eq!(lines(&rotated).len(), 1);
}

/// `destination = "stderr"`: the lines share the process's standard error
/// with the log, each whole and marked with its target.
#[test]
fn the_stderr_destination_writes_whole_lines_beside_the_log() {
    let upstream = EchoUpstream::start();
    let config = format!(
        "{}\n[audit]\nenabled = true\ndestination = \"stderr\"\n",
        standard_config(upstream.addr)
    );
    let gateway = crate::support::binary::Launch::new(&config).json().start();
    let response = get(gateway.addr, "/orders", &[]);
    let id = id_of(&response);
    let line = gateway
        .wait_for_json(|l| l["target"] == "portcullis::audit" && l["request_id"] == id.as_str());
    assert_eq!(
        (&line["rule"], &line["code"]),
        (&json!("token"), &json!("token_missing"))
    );
    // The access line of the same request is the log's, apart.
    let access = gateway.wait_for_access_line(&id);
    assert_eq!(access["outcome"], "token_missing");
}

/// A stalled audit writer never blocks a caller: once its queue is full,
/// each further line is dropped and counted in its own metric; what was
/// queued is written whole.
#[test]
fn a_full_audit_queue_drops_and_counts_lines() {
    let (release, released) = mpsc::channel();
    let (written, chunks) = mpsc::channel();
    let sink = StalledSink {
        release: released,
        written,
    };
    let trail = audit::to_writer(sink, 2000).expect("writer thread");
    let before = portcullis::metrics::METRICS.audit_lines_dropped.get();
    let decision = Decision {
        request_id: "0123456789abcdef",
        client: None,
        subject: Some("someone"),
        credential: Credential::Token,
        route: "/orders",
        method: "GET",
        decision: Verdict::Refused,
        code: "token_revoked",
        rule: "revocation",
        missing: &[],
        trace_id: None,
    };
    for _ in 0..100 {
        trail.record(&decision);
    }
    let dropped = trail.dropped();
    assert!(dropped >= 50, "{dropped} dropped");
    assert!(portcullis::metrics::METRICS.audit_lines_dropped.get() >= before + dropped);
    for _ in 0..200 {
        let _ = release.send(());
    }
    trail.close();
    let bytes: Vec<u8> = chunks.try_iter().flatten().collect();
    let text = String::from_utf8(bytes).expect("utf-8");
    assert_eq!(text.lines().count() as u64, 100 - dropped);
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).expect("whole JSON lines");
        assert_eq!(value["rule"], "revocation");
    }
}

/// A destination that cannot be a file is refused by `check`, at its
/// position.
#[test]
fn a_bad_destination_is_refused_with_its_position() {
    let upstream = EchoUpstream::start();
    let dir = tempfile::tempdir().expect("dir");
    for (destination, message) in [
        ("", "is \"stderr\" or the path of a file"),
        ("logs/", "is \"stderr\" or the path of a file"),
        (".", "a folder, not a file"),
        ("no/such/folder/audit.log", "the folder does not exist"),
    ] {
        let text = format!(
            "{}\n[audit]\nenabled = true\ndestination = \"{destination}\"\n",
            standard_config(upstream.addr).replace(
                "{fixtures}",
                &crate::support::tokens::fixtures_dir().display().to_string()
            )
        );
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, &text).expect("write");
        let error = portcullis::config::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{destination:?} accepted"))
            .to_string();
        let line = text.lines().count();
        let at = format!("{}:{line}:15: ", path.display());
        assert!(error.contains(&at), "{error}");
        assert!(error.contains(message), "{error}");
    }
}

/// Lines still queued when the gateway is told to stop (SIGTERM) are in
/// the file once it has exited.
#[test]
fn queued_lines_are_written_before_a_graceful_exit() {
    let upstream = EchoUpstream::start();
    let config = format!(
        "{}\n[audit]\nenabled = true\ndestination = \"audit.log\"\n",
        standard_config(upstream.addr)
    );
    let mut gateway = crate::support::binary::Launch::new(&config).start();
    let ids: Vec<String> = (0..3)
        .map(|_| id_of(&get(gateway.addr, "/public/page", &[])))
        .collect();
    gateway.signal("TERM");
    let exit = gateway.wait_exit(crate::support::binary::PATIENCE);
    assert!(exit.success(), "exit: {exit:?}");
    let written = lines(&gateway.dir.path().join("audit.log"));
    for id in &ids {
        assert!(
            written.iter().any(|l| l["request_id"] == id.as_str()),
            "{id} missing: {written:?}"
        );
    }
}

/// An API key is named as one in the trail, valid or not, and the admin
/// API's key actions are recorded; the key itself appears nowhere.
#[test]
fn api_keys_are_named_as_such_and_their_admin_actions_recorded() {
    let upstream = EchoUpstream::start();
    let config = format!(
        "{}\n[[routes]]\npath = \"/svc\"\nupstream = \"echo\"\nauth = \"required\"\napi_keys = true\n\n\
         [audit]\nenabled = true\ndestination = \"audit.log\"\n",
        standard_config(upstream.addr)
    );
    let gateway = TestGateway::start(&config);
    let path = trail_path(&gateway);
    let body = json!({"sub": "svc-backup", "roles": ["reader"]}).to_string();
    let created = send(
        gateway.admin,
        &format!(
            "POST /admin/api-keys HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let key = created.json()["key"].as_str().expect("key").to_owned();
    let action = wait_line(&path, |l| {
        l["event"] == "admin" && l["action"] == "api_key_create"
    });
    assert_eq!(action["outcome"], "ok", "{action}");

    let passed = get(gateway.addr, "/svc/x", &[&format!("X-Api-Key: {key}")]);
    assert_eq!(passed.status, 200, "{}", passed.text());
    let line = decision_for(&path, &id_of(&passed));
    assert_eq!(
        (&line["credential"], &line["subject"], &line["decision"]),
        (&json!("api_key"), &json!("svc-backup"), &json!("allowed")),
        "{line}"
    );

    upstream.clear();
    let wrong = get(gateway.addr, "/svc/x", &[&format!("X-Api-Key: {key}x")]);
    assert_refused(&wrong, 401, "token_invalid", &upstream);
    let line = decision_for(&path, &id_of(&wrong));
    assert_eq!(
        (&line["credential"], &line["decision"], &line["code"]),
        (
            &json!("api_key"),
            &json!("refused"),
            &json!("token_invalid")
        ),
        "{line}"
    );
    let trail = std::fs::read_to_string(&path).expect("trail");
    // `pck_` + id + `_` + the secret, whose base64url may hold `_` too:
    // the whole secret, not what follows its last `_`, which can be a
    // character or two that any line might contain.
    let secret = key.splitn(3, '_').nth(2).expect("secret part");
    assert!(secret.len() >= 40, "{key}");
    assert!(!trail.contains(secret), "the key reached the trail");
}
