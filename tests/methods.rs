//! Per-method routes and claim conditions: several routes share a path
//! with different methods and policies, a method none of them serves is
//! `405` with `Allow` (and reaches nothing), and `require_claims` admits
//! a token only when each listed claim holds — by type, an array claim by
//! one of its members. `check` names every mistake at file:line:col.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::support::gateway::config_with_routes;
use crate::support::http::{connect, request};
use crate::support::*;

/// `/orders`: anyone with a token reads, `user` writes, `admin` deletes.
/// `/claims/*`: one condition of each type; `/claims/all` two at once.
pub(crate) const POLICY_ROUTES: &str = r#"
[[routes]]
path = "/orders"
upstream = "echo"
auth = "required"
methods = ["GET"]

[[routes]]
name = "orders-write"
path = "/orders"
upstream = "echo"
auth = "required"
roles = ["user", "admin"]
methods = ["POST", "PUT"]

[[routes]]
path = "/orders"
upstream = "echo"
auth = "required"
roles = ["admin"]
methods = ["DELETE"]

[[routes]]
path = "/open"
upstream = "echo"
auth = "none"

[[routes]]
path = "/claims/text"
upstream = "echo"
require_claims = { tenant = ["acme", "globex"] }

[[routes]]
path = "/claims/bool"
upstream = "echo"
require_claims = { email_verified = [true] }

[[routes]]
path = "/claims/number"
upstream = "echo"
require_claims = { level = [2, 3] }

[[routes]]
path = "/claims/array"
upstream = "echo"
require_claims = { groups = ["ops"] }

[[routes]]
path = "/claims/subject"
upstream = "echo"
require_claims = { sub = ["svc-backup"] }

[[routes]]
path = "/claims/namespaced"
upstream = "echo"
require_claims = { "https://example.com/tenant" = ["acme"] }

[[routes]]
path = "/claims/all"
upstream = "echo"
roles = ["user"]
require_claims = { tenant = ["acme"], email_verified = [true] }
"#;

pub(crate) fn start() -> (EchoUpstream, TestGateway) {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, POLICY_ROUTES));
    (upstream, gateway)
}

/// A token of `sub` with `extra` claims, signed with the gateway's key.
pub(crate) fn token(sub: &str, extra: Value) -> String {
    bearer(&sign("test-eddsa", &claims_with(sub, extra)))
}

fn call(gateway: &TestGateway, method: &str, target: &str, headers: &[&str]) -> Response {
    let mut headers = headers.to_vec();
    if method != "GET" && method != "HEAD" {
        headers.push("Content-Length: 0");
    }
    send(gateway.addr, &request(method, target, &headers))
}

/// A `HEAD` answer has no body: read its status line and headers only.
fn head_status(gateway: &TestGateway, target: &str, headers: &[&str]) -> (u16, String) {
    let mut stream = connect(gateway.addr);
    let text = request("HEAD", target, headers);
    stream.write_all(text.as_bytes()).expect("write");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        if line.trim().is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    (status.expect("status"), head)
}

#[test]
fn each_method_reaches_its_own_route_and_policy() {
    let (upstream, gateway) = start();
    let user = token("alice", json!({"roles": ["user"]}));
    let admin = token("root", json!({"roles": ["admin"]}));
    let reader = token("bob", json!({}));
    for (method, who, status) in [
        ("GET", &reader, 200),
        ("POST", &user, 200),
        ("PUT", &admin, 200),
        ("DELETE", &admin, 200),
    ] {
        upstream.clear();
        let response = call(&gateway, method, "/orders/7", &[who.as_str()]);
        assert_eq!(response.status, status, "{method}: {}", response.text());
        assert_eq!(upstream.only().method, method);
    }
    for (method, who) in [("POST", &reader), ("DELETE", &user)] {
        upstream.clear();
        let response = call(&gateway, method, "/orders/7", &[who.as_str()]);
        assert_refused(&response, 403, "insufficient_scope", &upstream);
    }
    // Each route still asks for its token.
    upstream.clear();
    let response = call(&gateway, "DELETE", "/orders", &[]);
    assert_refused(&response, 401, "token_missing", &upstream);
}

/// RFC 9110 §9.3.2: `GET` implies `HEAD`, with `GET`'s policy.
#[test]
fn get_implies_head_under_the_get_routes_policy() {
    let (upstream, gateway) = start();
    let reader = token("bob", json!({}));
    let (status, _) = head_status(&gateway, "/orders", &[reader.as_str()]);
    assert_eq!(status, 200);
    assert_eq!(upstream.only().method, "HEAD");
    upstream.clear();
    let (status, head) = head_status(&gateway, "/orders", &[]);
    assert_eq!(status, 401, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-portcullis-error: token_missing"), "{head}");
    assert_eq!(upstream.count(), 0);
}

#[test]
fn a_method_no_route_of_the_path_serves_is_405_with_allow_before_any_token() {
    let (upstream, gateway) = start();
    let admin = token("root", json!({"roles": ["admin"]}));
    for (method, headers) in [
        ("PATCH", vec![admin.as_str()]),
        ("PATCH", vec![]),
        ("OPTIONS", vec![admin.as_str()]),
        ("TRACE", vec![]),
        ("PROPFIND", vec![admin.as_str()]),
    ] {
        upstream.clear();
        let response = call(&gateway, method, "/orders/7", &headers);
        eprintln!("case {method}");
        assert_refused(&response, 405, "method_not_allowed", &upstream);
        assert_eq!(
            response.header("allow"),
            Some("GET, HEAD, POST, PUT, DELETE"),
            "{method}"
        );
    }
    // A path without methods keeps serving every method.
    upstream.clear();
    let response = call(&gateway, "PATCH", "/open", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(upstream.only().method, "PATCH");
}

/// The longest prefix chooses the path; its methods decide, with no
/// fallback to a shorter prefix that would serve the method.
#[test]
fn a_wrong_method_does_not_fall_back_to_a_shorter_prefix() {
    let upstream = EchoUpstream::start();
    let routes = r#"
[[routes]]
path = "/"
upstream = "echo"
auth = "none"

[[routes]]
path = "/admin"
upstream = "echo"
auth = "required"
roles = ["admin"]
methods = ["DELETE"]
"#;
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, routes));
    let response = call(&gateway, "GET", "/admin/users", &[]);
    assert_refused(&response, 405, "method_not_allowed", &upstream);
    assert_eq!(response.header("allow"), Some("DELETE"));
    let response = call(&gateway, "GET", "/elsewhere", &[]);
    assert_eq!(response.status, 200);
}

/// A public `GET` beside an admin-only `DELETE`, with another prefix of
/// the same length configured between them: the table keeps a path's
/// routes together, so the second still finds its method.
#[test]
fn a_public_read_and_a_protected_delete_share_a_path() {
    let upstream = EchoUpstream::start();
    let routes = r#"
[[routes]]
path = "/aaa"
upstream = "echo"
auth = "none"
methods = ["GET"]

[[routes]]
path = "/bbb"
upstream = "echo"
auth = "none"

[[routes]]
path = "/aaa"
upstream = "echo"
auth = "required"
roles = ["admin"]
methods = ["DELETE"]
"#;
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, routes));
    let response = call(&gateway, "GET", "/aaa/1", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
    upstream.clear();
    let response = call(&gateway, "DELETE", "/aaa/1", &[]);
    assert_refused(&response, 401, "token_missing", &upstream);
    let admin = token("root", json!({"roles": ["admin"]}));
    let response = call(&gateway, "DELETE", "/aaa/1", &[admin.as_str()]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.only().method, "DELETE");
}

#[test]
fn claim_conditions_match_by_type_and_arrays_by_a_member() {
    let (upstream, gateway) = start();
    let admitted = [
        ("/claims/text", json!({"tenant": "acme"})),
        ("/claims/text", json!({"tenant": "globex"})),
        ("/claims/text", json!({"tenant": ["initech", "acme"]})),
        ("/claims/bool", json!({"email_verified": true})),
        ("/claims/number", json!({"level": 3})),
        ("/claims/array", json!({"groups": ["dev", "ops"]})),
        (
            "/claims/namespaced",
            json!({"https://example.com/tenant": "acme"}),
        ),
        (
            "/claims/all",
            json!({"roles": ["user"], "tenant": "acme", "email_verified": true}),
        ),
    ];
    for (path, extra) in admitted {
        upstream.clear();
        let response = get(gateway.addr, path, &[&token("alice", extra.clone())]);
        assert_eq!(response.status, 200, "{path} {extra}: {}", response.text());
        assert_eq!(upstream.count(), 1);
    }
    let subject = get(
        gateway.addr,
        "/claims/subject",
        &[&token("svc-backup", json!({}))],
    );
    assert_eq!(subject.status, 200);
    let refused = [
        ("/claims/text", json!({}), "claim:tenant"),
        ("/claims/text", json!({"tenant": "ACME"}), "claim:tenant"),
        ("/claims/text", json!({"tenant": null}), "claim:tenant"),
        (
            "/claims/text",
            json!({"tenant": {"name": "acme"}}),
            "claim:tenant",
        ),
        (
            "/claims/text",
            json!({"tenant": [["acme"]]}),
            "claim:tenant",
        ),
        (
            "/claims/bool",
            json!({"email_verified": "true"}),
            "claim:email_verified",
        ),
        (
            "/claims/bool",
            json!({"email_verified": false}),
            "claim:email_verified",
        ),
        (
            "/claims/bool",
            json!({"email_verified": 1}),
            "claim:email_verified",
        ),
        ("/claims/number", json!({"level": "3"}), "claim:level"),
        ("/claims/number", json!({"level": 3.0}), "claim:level"),
        ("/claims/number", json!({"level": 4}), "claim:level"),
        ("/claims/array", json!({"groups": []}), "claim:groups"),
        ("/claims/array", json!({"groups": ["dev"]}), "claim:groups"),
        // A namespaced claim is one name, not a path into an object.
        (
            "/claims/namespaced",
            json!({"https://example.com": {"tenant": "acme"}}),
            "claim:https://example.com/tenant",
        ),
        (
            "/claims/all",
            json!({"roles": ["user"], "tenant": "acme"}),
            "claim:email_verified",
        ),
        // The first condition in the file's order is named.
        ("/claims/all", json!({"roles": ["user"]}), "claim:tenant"),
        // Roles are judged first, and named first.
        (
            "/claims/all",
            json!({"tenant": "acme", "email_verified": true}),
            "user",
        ),
    ];
    for (path, extra, missing) in refused {
        upstream.clear();
        let response = get(gateway.addr, path, &[&token("alice", extra.clone())]);
        eprintln!("case {path} {extra}");
        assert_refused(&response, 403, "insufficient_scope", &upstream);
        let expected = format!(
            "Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"{missing}\""
        );
        assert_eq!(response.header("www-authenticate"), Some(expected.as_str()));
        // Never a listed value: another tenant's name is not told.
        assert!(!response.text().contains("globex"));
    }
    upstream.clear();
    let other = get(
        gateway.addr,
        "/claims/subject",
        &[&token("alice", json!({}))],
    );
    assert_refused(&other, 403, "insufficient_scope", &upstream);
}

/// A preflight is answered for the path by the gateway, before the method
/// is known (its `cors` is one for every route of the path); a plain
/// `OPTIONS` is a method like any other, and its 405 carries the path's
/// CORS headers for an allowed origin.
#[test]
fn preflights_are_answered_for_the_path_and_plain_options_is_routed_by_method() {
    let upstream = EchoUpstream::start();
    let routes = r#"
[[routes]]
path = "/orders"
upstream = "echo"
auth = "required"
methods = ["GET"]
cors = { allowed_origins = ["https://app.test"], allowed_methods = ["GET", "DELETE"] }

[[routes]]
path = "/orders"
upstream = "echo"
auth = "required"
roles = ["admin"]
methods = ["DELETE"]
"#;
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, routes));
    let preflight = call(
        &gateway,
        "OPTIONS",
        "/orders/1",
        &[
            "Origin: https://app.test",
            "Access-Control-Request-Method: DELETE",
        ],
    );
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(upstream.count(), 0);
    let plain = call(
        &gateway,
        "OPTIONS",
        "/orders/1",
        &["Origin: https://app.test"],
    );
    assert_refused(&plain, 405, "method_not_allowed", &upstream);
    assert_eq!(plain.header("allow"), Some("GET, HEAD, DELETE"));
    // The path's CORS policy is on the 405, so the script can read it.
    assert_eq!(
        plain.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    let exposed = plain
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.contains("X-Portcullis-Error"), "{exposed}");
    let foreign = call(
        &gateway,
        "PATCH",
        "/orders/1",
        &["Origin: https://evil.test"],
    );
    assert_refused(&foreign, 405, "method_not_allowed", &upstream);
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run portcullis")
}

/// A configuration with one public key, an upstream, and `routes` from
/// line 11 on.
fn check(dir: &Path, routes: &str) -> (Output, PathBuf) {
    let fixtures = crate::support::tokens::fixtures_dir();
    let text = format!(
        "[tokens]\nissuer = \"i\"\naudience = \"a\"\n\n[[tokens.keys]]\nkid = \"k\"\nalgorithm = \"EdDSA\"\n\
         public_key_file = \"{}/test-eddsa.pub.pem\"\n\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n{routes}",
        fixtures.display()
    );
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).expect("write");
    let out = portcullis(&["check", "--config", path.to_str().expect("utf-8")]);
    (out, path)
}

#[test]
fn check_prints_each_routes_methods_and_claim_conditions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = "\n[[routes]]\npath = \"/orders\"\nupstream = \"u\"\nmethods = [\"GET\"]\n\
                  \n[[routes]]\npath = \"/orders\"\nupstream = \"u\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n\
                  require_claims = { tenant = [\"acme\"] }\n\n[[routes]]\npath = \"/\"\nupstream = \"u\"\n";
    let (out, _) = check(dir.path(), routes);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |path: &str, methods: &str| {
        stdout.lines().find(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.get(1) == Some(&path) && cells.get(2) == Some(&methods)
        })
    };
    assert!(stdout.contains("METHODS"), "{stdout}");
    assert!(row("/orders", "GET,HEAD").is_some(), "{stdout}");
    let delete = row("/orders", "DELETE").unwrap_or_else(|| panic!("{stdout}"));
    assert!(delete.contains("role:admin claim:tenant"), "{delete}");
    assert!(row("/", "*").is_some(), "{stdout}");
}

/// Every mistake in `methods` and `require_claims`, at its position.
#[test]
fn check_names_each_method_and_claim_mistake_at_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = r#"
[[routes]]
path = "/a"
upstream = "u"
methods = ["GET", "POST"]

[[routes]]
path = "/a"
upstream = "u"
methods = ["DELETE", "POST"]

[[routes]]
path = "/a"
upstream = "u"
methods = ["HEAD"]

[[routes]]
path = "/a"
upstream = "u"

[[routes]]
path = "/b"
upstream = "u"
methods = ["get", "CONNECT", "PUT", "PUT", "GE T"]

[[routes]]
path = "/c"
upstream = "u"
methods = []

[[routes]]
path = "/d"
upstream = "u"
auth = "optional"
require_claims = { tenant = ["acme"] }

[[routes]]
path = "/e"
upstream = "u"
require_claims = { level = [1.5], roles = ["admin"], tenant = [], org = [{ a = 1 }] }

[[routes]]
path = "/f"
upstream = "u"
methods = ["GET"]
cors = { allowed_origins = ["https://a.test"] }

[[routes]]
path = "/f"
upstream = "u"
methods = ["POST"]
cors = { allowed_origins = ["https://b.test"] }

[[routes]]
path = "/g"
upstream = "u"

[[routes]]
path = "/g/"
upstream = "u"
"#;
    let (out, path) = check(dir.path(), routes);
    assert_eq!(out.status.code(), Some(2));
    let file = path.display();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!("{file}:22:11: duplicate route: another route of the same host and path \"/a\" also serves POST"),
        format!("{file}:27:11: duplicate route: another route of the same host and path \"/a\" also serves HEAD (GET implies HEAD)"),
        format!("{file}:30:8: duplicate route: routes of the same host and path \"/a\" must each list methods"),
        format!("{file}:36:12: method \"get\" must be upper case"),
        format!("{file}:36:19: CONNECT never reaches a route"),
        format!("{file}:36:37: method PUT is listed twice"),
        format!("{file}:36:44: \"GE T\" is not a method name"),
        format!("{file}:41:11: methods = [] would serve nothing"),
        format!("{file}:47:18: require_claims needs auth = \"required\""),
        format!("{file}:52:29: a float is never compared exactly"),
        format!("{file}:52:43: roles cannot be a claim condition: use the route's roles"),
        format!("{file}:52:63: require_claims.tenant = [] can never hold"),
        format!("{file}:52:74: a claim's value is a string, a boolean or an integer"),
        format!("{file}:64:8: only one route of a host and path may set cors"),
        format!("{file}:71:8: duplicate route: another route has the same host and path \"/g\""),
    ];
    // In the file's order, claim conditions included.
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "{want}\n{stderr}");
    }
}
