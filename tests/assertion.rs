//! The signed identity assertion to upstreams: present on every forwarded
//! request of a route whose upstream asks for one, verifiable with the
//! gateway's JWKS, never taken from a client, scoped to one backend's
//! audience, no longer-lived than the token, cached per token unless bound
//! to its request. The backend's side is the README's own snippets
//! (`examples/verify/`, PyJWT and jose), run here against the real gateway.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::support::tokens::{encoding_key, fixtures_dir, now, sign_with_header, ISSUER};
use crate::support::*;

const HEADER: &str = "x-portcullis-assertion";
const REPORTS_HEADER: &str = "x-portcullis-reports-assertion";
const BILLING: &str = "billing.internal";
const REPORTS: &str = "reports.internal";
const TYP: &str = "portcullis-assertion+jwt";

/// Two backends, each with its own audience; `reports` also its own header.
fn config(billing: SocketAddr, reports: SocketAddr) -> String {
    format!(
        r#"
[tokens]
issuer = "https://issuer.test"
audience = "api.test"
leeway = "30s"
signing_key = "test-eddsa"

[[tokens.keys]]
kid = "test-eddsa"
algorithm = "EdDSA"
private_key_file = "{{fixtures}}/test-eddsa.pem"

[identity]
claims = {{ email = "X-User-Email" }}

[[upstreams]]
name = "billing"
targets = ["{billing}"]
assertion = {{ audience = "{BILLING}" }}

[[upstreams]]
name = "reports"
targets = ["{reports}"]
assertion = {{ audience = "{REPORTS}", header = "X-Portcullis-Reports-Assertion", ttl = "30s" }}

[[routes]]
path = "/"
upstream = "billing"

[[routes]]
path = "/public"
upstream = "billing"
auth = "none"

[[routes]]
path = "/maybe"
upstream = "billing"
auth = "optional"

[[routes]]
path = "/pay"
upstream = "billing"
assertion_binds_request = true

[[routes]]
path = "/reports"
upstream = "reports"

[[routes]]
path = "/override"
upstream = "reports"
assertion = {{ audience = "override.internal" }}
"#
    )
}

struct Setup {
    billing: EchoUpstream,
    reports: EchoUpstream,
    gateway: TestGateway,
}

fn setup() -> Setup {
    let (billing, reports) = (EchoUpstream::start(), EchoUpstream::start());
    let gateway = TestGateway::start(&config(billing.addr, reports.addr));
    Setup {
        billing,
        reports,
        gateway,
    }
}

/// A token of alice's, with roles, scope, session and an extra claim.
fn alice(changes: Value) -> String {
    let mut claims = json!({
        "roles": ["user", "admin"], "scope": "orders:read", "sid": "s-1",
        "email": "alice@example.com", "ver": 0,
    });
    for (k, v) in changes.as_object().expect("object") {
        claims[k] = v.clone();
    }
    sign("test-eddsa", &claims_with("alice", claims))
}

/// The one assertion `upstream` got in `header` on its last request.
fn assertion_of(upstream: &EchoUpstream, header: &str) -> String {
    let last = upstream
        .requests()
        .pop()
        .expect("a request reached the upstream");
    let values = last.folded(header);
    assert_eq!(values.len(), 1, "one {header}: {:?}", last.headers);
    values[0].1.to_owned()
}

/// The claims of an assertion, verified with the gateway's public key.
fn verified(assertion: &str, audience: &str) -> (Header, Value) {
    let pem = std::fs::read(fixtures_dir().join("test-eddsa.pub.pem")).expect("fixture");
    let key = DecodingKey::from_ed_pem(&pem).expect("key");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(assertion, &key, &validation).expect("verifies");
    (data.header, data.claims)
}

/// The claims without checking the signature or the time.
fn payload(assertion: &str) -> Value {
    let part = assertion.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

#[test]
fn a_forwarded_request_carries_an_assertion_naming_the_user() {
    let s = setup();
    let response = get(s.gateway.addr, "/orders?x=1", &[&bearer(&alice(json!({})))]);
    assert_eq!(response.status, 200);
    let request_id = response
        .header("x-request-id")
        .expect("request id")
        .to_owned();
    let (header, claims) = verified(&assertion_of(&s.billing, HEADER), BILLING);
    assert_eq!(header.kid.as_deref(), Some("test-eddsa"));
    assert_eq!(header.typ.as_deref(), Some(TYP));
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], BILLING);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["roles"], json!(["user", "admin"]));
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["sid"], "s-1");
    assert_eq!(claims["email"], "alice@example.com");
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    let (iat, exp) = (iat.expect("iat"), exp.expect("exp"));
    assert!(iat.abs_diff(now()) <= 2 && exp == iat + 60, "{claims}");
    // A cached assertion serves several requests: their id travels in
    // X-Request-Id, as before; only a bound assertion names it.
    assert!(claims.get("request_id").is_none() && claims.get("auth").is_none());
    assert_eq!(
        s.billing.only().values("x-request-id"),
        [request_id.as_str()]
    );
}

#[test]
fn a_client_cannot_send_an_assertion_of_its_own() {
    let s = setup();
    let forged = [
        "X-Portcullis-Assertion: forged",
        "x_portcullis_assertion: forged",
        "X-PORTCULLIS-ASSERTION: forged",
        "X-Portcullis-Reports-Assertion: forged",
        // A nomination as hop-by-hop cannot take the gateway's one away.
        "Connection: keep-alive, X-Portcullis-Assertion",
    ];
    let token = bearer(&alice(json!({})));
    let mut with_token = forged.to_vec();
    with_token.push(&token);
    for (path, headers) in [("/orders", &with_token[..]), ("/public/x", &forged[..])] {
        s.billing.clear();
        assert_eq!(get(s.gateway.addr, path, headers).status, 200, "{path}");
        let seen = s.billing.only();
        let values = seen.folded(HEADER);
        assert_eq!(values.len(), 1, "{path}: {:?}", seen.headers);
        assert_ne!(values[0].1, "forged");
        verified(values[0].1, BILLING);
        // Another upstream's header name is the gateway's too, everywhere.
        assert!(seen.folded(REPORTS_HEADER).is_empty(), "{path}");
    }
}

/// The default name is the gateway's even where no upstream asks for an
/// assertion: a backend that checks for one never finds a client's.
#[test]
fn the_default_header_is_stripped_without_any_assertion_configured() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let forged = "X-Portcullis-Assertion: forged";
    assert_eq!(get(gateway.addr, "/public/x", &[forged]).status, 200);
    assert!(upstream.only().folded(HEADER).is_empty());
}

#[test]
fn public_and_optional_requests_without_a_token_say_so() {
    let s = setup();
    for (path, mode) in [("/public/page", "none"), ("/maybe/page", "optional")] {
        assert_eq!(get(s.gateway.addr, path, &[]).status, 200);
        let (_, claims) = verified(&assertion_of(&s.billing, HEADER), BILLING);
        assert_eq!(claims["auth"], mode, "{path}");
        assert!(claims.get("sub").is_none(), "{path}: {claims}");
    }
    let token = bearer(&alice(json!({})));
    assert_eq!(get(s.gateway.addr, "/maybe/page", &[&token]).status, 200);
    let (_, claims) = verified(&assertion_of(&s.billing, HEADER), BILLING);
    assert_eq!(claims["sub"], "alice");
    assert!(claims.get("auth").is_none());
}

#[test]
fn each_upstream_gets_its_own_audience_and_a_route_may_override_it() {
    let s = setup();
    let token = bearer(&alice(json!({})));
    assert_eq!(get(s.gateway.addr, "/reports/q", &[&token]).status, 200);
    let reports = assertion_of(&s.reports, REPORTS_HEADER);
    let (_, claims) = verified(&reports, REPORTS);
    assert_eq!(
        claims["exp"].as_u64(),
        claims["iat"].as_u64().map(|t| t + 30)
    );
    assert!(s.reports.requests()[0].folded(HEADER).is_empty());
    assert_eq!(get(s.gateway.addr, "/override", &[&token]).status, 200);
    verified(&assertion_of(&s.reports, HEADER), "override.internal");
}

#[test]
fn an_assertion_never_outlives_its_token() {
    let s = setup();
    let exp = now() + 20;
    let token = bearer(&alice(json!({ "exp": exp })));
    assert_eq!(get(s.gateway.addr, "/orders", &[&token]).status, 200);
    let (_, claims) = verified(&assertion_of(&s.billing, HEADER), BILLING);
    assert_eq!(claims["exp"], exp);
}

#[test]
fn an_assertion_is_reused_for_a_token_and_a_bound_one_is_signed_per_request() {
    let s = setup();
    let token = bearer(&alice(json!({})));
    let mut seen = Vec::new();
    for _ in 0..2 {
        assert_eq!(get(s.gateway.addr, "/orders", &[&token]).status, 200);
        seen.push(assertion_of(&s.billing, HEADER));
    }
    assert_eq!(seen[0], seen[1], "the same token, the same assertion");
    let other = bearer(&alice(json!({ "sid": "s-2" })));
    assert_eq!(get(s.gateway.addr, "/orders", &[&other]).status, 200);
    assert_ne!(assertion_of(&s.billing, HEADER), seen[0]);
    let mut bound = Vec::new();
    for _ in 0..2 {
        let response = post(s.gateway.addr, "/pay/42?cur=eur", &[&token], "{}");
        assert_eq!(response.status, 200);
        let assertion = assertion_of(&s.billing, HEADER);
        let (_, claims) = verified(&assertion, BILLING);
        assert_eq!(
            (claims["htm"].as_str(), claims["htu"].as_str()),
            (Some("POST"), Some("/pay/42"))
        );
        assert_eq!(
            claims["request_id"].as_str(),
            response.header("x-request-id")
        );
        assert!(claims["jti"].is_string());
        bound.push(assertion);
    }
    assert_ne!(
        bound[0], bound[1],
        "a bound assertion is signed per request"
    );
}

/// Which backend code to run: the README's own snippets.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Python,
    Node,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn backend_command(backend: Backend) -> Command {
    let dir = repo().join("examples/verify");
    match backend {
        Backend::Python => {
            let python = repo().join("target/venv/bin/python3");
            assert!(
                python.exists(),
                "{} is missing: scripts/test.sh makes the venv with PyJWT",
                python.display()
            );
            let mut command = Command::new(python);
            command.arg(dir.join("verify.py"));
            command
        }
        Backend::Node => {
            assert!(
                Path::new(&dir.join("node_modules/jose")).exists(),
                "examples/verify/node_modules is missing: run `npm ci` there (scripts/test.sh does)"
            );
            let mut command = Command::new("node");
            command.arg(dir.join("verify.mjs"));
            command
        }
    }
}

/// Runs a backend's verification on one request's headers: the claims it
/// accepted, or the reason it refused.
fn backend_verifies(
    backend: Backend,
    gateway: SocketAddr,
    audience: &str,
    headers: &Value,
    (method, path): (&str, &str),
) -> Result<Value, String> {
    let mut command = backend_command(backend);
    command
        .env(
            "PORTCULLIS_JWKS_URL",
            format!("http://{gateway}/.well-known/jwks.json"),
        )
        .env("PORTCULLIS_ISSUER", ISSUER)
        .env("BACKEND_AUDIENCE", audience)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tool::spawn(&mut command);
    let request = json!({ "headers": headers, "method": method, "path": path });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write request");
    let out = child.wait_with_output().expect("backend ran");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("claims as JSON"))
    } else {
        assert!(
            stderr.contains("refused: "),
            "{backend:?} failed, not refused: {stderr}"
        );
        Err(stderr)
    }
}

/// An assertion with the gateway's claims, signed by a key the gateway
/// does not publish (under its own `kid`, or one the JWKS lacks).
fn signed_elsewhere(genuine: &str, kid: &str) -> String {
    let (alg, key) = encoding_key("test-eddsa-2");
    let mut header = Header::new(alg);
    header.typ = Some(TYP.into());
    header.kid = Some(kid.into());
    sign_with_header(&header, &key, &payload(genuine))
}

#[test]
fn the_readme_backends_accept_the_gateway_and_refuse_everything_else() {
    let s = setup();
    let gw = s.gateway.addr;
    let token = bearer(&alice(json!({})));
    assert_eq!(get(gw, "/orders", &[&token]).status, 200);
    let genuine = assertion_of(&s.billing, HEADER);
    assert_eq!(get(gw, "/reports", &[&token]).status, 200);
    let for_reports = assertion_of(&s.reports, REPORTS_HEADER);
    // Within the gateway's leeway, so forwarded, with its assertion
    // expiring when the token did: 20 s ago.
    let late = bearer(&alice(json!({ "iat": now() - 300, "exp": now() - 20 })));
    assert_eq!(get(gw, "/orders", &[&late]).status, 200);
    let expired = assertion_of(&s.billing, HEADER);
    assert_eq!(get(gw, "/pay/1", &[&token]).status, 200);
    let bound = assertion_of(&s.billing, HEADER);
    // Each case, with why PyJWT and jose refuse it: the reason proves the
    // refusal is the one the case is about, not a failure to fetch keys.
    let refused = [
        (
            "another audience",
            json!({ HEADER: for_reports }),
            "/orders",
            ["Audience doesn't match", "ERR_JWT_CLAIM_VALIDATION_FAILED"],
        ),
        (
            "expired",
            json!({ HEADER: expired }),
            "/orders",
            ["Signature has expired", "ERR_JWT_EXPIRED"],
        ),
        (
            "another key, the gateway's kid",
            json!({ HEADER: signed_elsewhere(&genuine, "test-eddsa") }),
            "/orders",
            [
                "Signature verification failed",
                "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
            ],
        ),
        (
            "another key, an unknown kid",
            json!({ HEADER: signed_elsewhere(&genuine, "test-eddsa-2") }),
            "/orders",
            ["Unable to find a signing key", "ERR_JWKS_NO_MATCHING_KEY"],
        ),
        (
            "a forged X-User-Id, no assertion",
            json!({ "x-user-id": "admin", "x-user-roles": "admin" }),
            "/orders",
            ["no assertion", "no assertion"],
        ),
        (
            "a bound assertion replayed to another path",
            json!({ HEADER: bound.clone() }),
            "/pay/2",
            ["for another request", "for another request"],
        ),
    ];
    for backend in [Backend::Python, Backend::Node] {
        let request = json!({ HEADER: genuine, "x-user-id": "alice" });
        let claims = backend_verifies(backend, gw, BILLING, &request, ("GET", "/orders"))
            .unwrap_or_else(|e| panic!("{backend:?} refused the gateway's assertion: {e}"));
        assert_eq!(
            (claims["sub"].as_str(), claims["email"].as_str()),
            (Some("alice"), Some("alice@example.com"))
        );
        let claims = backend_verifies(
            backend,
            gw,
            BILLING,
            &json!({ HEADER: bound }),
            ("GET", "/pay/1"),
        )
        .unwrap_or_else(|e| panic!("{backend:?} refused the bound assertion: {e}"));
        assert_eq!(claims["htu"], "/pay/1");
        for (case, headers, path, reasons) in &refused {
            let outcome = backend_verifies(backend, gw, BILLING, headers, ("GET", path));
            let reason = reasons[backend as usize];
            match outcome {
                Err(e) => assert!(e.contains(reason), "{backend:?}, {case}: {e}"),
                Ok(claims) => panic!("{backend:?} accepted {case}: {claims}"),
            }
        }
    }
}

/// `portcullis check`'s standard error; it must fail.
fn check(path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run portcullis");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_lines(err: &str, expected: &[String]) {
    for line in expected {
        assert!(
            err.lines().any(|l| l.starts_with(line.as_str())),
            "missing {line:?} in:\n{err}"
        );
    }
}

const BAD_ASSERTIONS: &str = r#"[tokens]
issuer = "https://issuer.test"
audience = "api"
signing_key = "hs"

[[tokens.keys]]
kid = "hs"
algorithm = "HS256"
secret_file = "hs.secret"

[[upstreams]]
name = "a"
targets = ["127.0.0.1:8081"]
assertion = { audience = "api", header = "X-User-Id", ttl = "1s" }

[[upstreams]]
name = "b"
targets = ["127.0.0.1:8082"]

[[routes]]
path = "/a"
upstream = "a"

[[routes]]
path = "/b"
upstream = "b"
assertion_binds_request = true

[[routes]]
path = "/c"
upstream = "b"
assertion = { audience = " ", header = "X-Forwarded-For", ttl = "2h" }
"#;

#[test]
fn check_refuses_unusable_assertions_at_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("hs.secret");
    std::fs::write(&secret, [7u8; 32]).expect("secret");
    // Owner-only, as `keygen` writes it: no warning among the errors.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, BAD_ASSERTIONS).expect("write");
    let file = path.display().to_string();
    let at = |pos: &str, message: &str| format!("{file}:{pos}: {message}");
    assert_lines(
        &check(&path),
        &[
            at("14:26", "assertion audience must differ from [tokens] audience"),
            at("14:42", "\"X-User-Id\" cannot carry the assertion"),
            at("14:61", "assertion ttl must be whole seconds from 5s to 1h"),
            at("14:13", "an assertion needs an asymmetric signing key (EdDSA, ES256 or RS256): \"hs\" is an HS256 secret"),
            at("27:27", "assertion_binds_request needs an assertion on the route or its upstream"),
            at("32:26", "assertion audience must not be empty"),
            at("32:40", "\"X-Forwarded-For\" cannot carry the assertion"),
            at("32:65", "assertion ttl must be whole seconds"),
        ],
    );
    let without_signer = BAD_ASSERTIONS.replace("signing_key = \"hs\"\n", "");
    std::fs::write(&path, without_signer).expect("write");
    assert_lines(
        &check(&path),
        &[at("13:13", "an assertion needs [tokens] signing_key")],
    );
    let unreadable = BAD_ASSERTIONS.replace("ttl = \"1s\"", "ttl = \"soon\"");
    std::fs::write(&path, unreadable).expect("write");
    assert_lines(&check(&path), &[at("14:61", "invalid duration \"soon\"")]);
}

/// The README shows the very files the backends above ran.
#[test]
fn the_readme_shows_the_snippets_the_tests_run() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    for file in ["verify.py", "verify.mjs"] {
        let text = std::fs::read_to_string(repo().join("examples/verify").join(file)).expect(file);
        assert!(
            readme.contains(&text),
            "README.md lacks examples/verify/{file} as it stands"
        );
    }
}
