//! OpenTelemetry traces (`[tracing]`) through the whole gateway, read back
//! by a receiver that decodes OTLP/HTTP with the official definitions
//! (PyPI's `opentelemetry-proto`, `tests/fixtures/otlp_receiver.py`): the
//! span tree, the trace context continued or not, the `traceparent` the
//! next hop receives, and no secret in any attribute.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::gateway::free_addr;
use crate::support::*;

/// The trace id and parent span id a client sends.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// The OTLP/HTTP receiver, stopped on drop.
struct Receiver {
    addr: SocketAddr,
    output: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("spans.jsonl");
        let addr = free_addr();
        let script = repo().join("tests/fixtures/otlp_receiver.py");
        let child = tool::spawn(
            Command::new(venv_python())
                .arg(script)
                .arg(addr.port().to_string())
                .arg(&output),
        );
        let began = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(15),
                "the OTLP receiver did not start (is opentelemetry-proto in target/venv? scripts/test.sh installs it)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            addr,
            output,
            child,
            _dir: dir,
        }
    }

    /// The `[tracing]` table that exports here.
    fn table(&self, extra: &str) -> String {
        format!(
            "\n[tracing]\nenabled = true\nendpoint = \"http://{}/v1/traces\"\n{extra}\n",
            self.addr
        )
    }

    fn spans(&self) -> Vec<Value> {
        read_spans(&self.output)
    }

    /// Waits until the spans received satisfy `done`.
    fn wait_for(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let began = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "spans never arrived; got {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_spans(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv scripts/test.sh makes holds opentelemetry-proto.
fn venv_python() -> PathBuf {
    repo().join("target/venv/bin/python3")
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

/// The request span: the one of kind SERVER (2).
fn request_span(spans: &[Value]) -> &Value {
    let found: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 2).collect();
    assert_eq!(found.len(), 1, "one server span in {spans:#?}");
    found[0]
}

/// `00-<trace>-<parent>-<flags>` split.
fn traceparent_parts(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value}");
    assert_eq!(parts[0], "00");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

#[track_caller]
fn assert_no_secret(spans: &[Value], secrets: &[&str]) {
    for span in spans {
        let text = span.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} in a span: {span:#}");
        }
    }
}

const TRUST_LOOPBACK: &str = "trusted_proxies = [\"127.0.0.0/8\"]";

#[test]
fn a_trusted_clients_trace_is_continued_and_the_upstream_gets_the_gateways_span_as_parent() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let config = format!("{}{}", standard_config(upstream.addr), receiver.table(""));
    let gateway = TestGateway::start_with_server(&config, TRUST_LOOPBACK);
    let token = sign("test-eddsa", &claims("alice"));
    let response = get(
        gateway.addr,
        "/maybe/page?code=query-secret-value",
        &[
            &bearer(&token),
            &client_traceparent(),
            "tracestate: vendor=opaque1",
            "Cookie: theme=cookie-secret-value",
        ],
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let spans = receiver.wait_for(|s| s.iter().any(|s| s["kind"] == 2));
    let request = request_span(&spans);
    assert_eq!(
        request["trace_id"], CLIENT_TRACE,
        "the client's trace continued"
    );
    assert_eq!(
        request["parent_span_id"], CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(request["service"], "portcullis");
    let attributes = &request["attributes"];
    assert_eq!(attributes["http.request.method"], "GET");
    assert_eq!(attributes["http.response.status_code"], 200);
    assert_eq!(attributes["portcullis.outcome"], "ok");
    assert!(attributes["http.route"].is_string(), "{request:#}");
    let request_id = request["span_id"].as_str().expect("span id");
    for child in ["verify_token", "revocation_check", "upstream"] {
        let span = one(&spans, child);
        assert_eq!(span["trace_id"], CLIENT_TRACE, "{child}");
        assert_eq!(span["parent_span_id"], request_id, "{child}'s parent");
    }
    let verify = &one(&spans, "verify_token")["attributes"];
    assert_eq!(verify["jwt.alg"], "EdDSA");
    assert_eq!(verify["portcullis.cache"], "miss");
    assert_eq!(verify["portcullis.outcome"], "ok");
    let call = one(&spans, "upstream");
    assert_eq!(call["kind"], 3, "the upstream call is a CLIENT span");
    assert_eq!(call["attributes"]["http.response.status_code"], 200);
    // What the upstream received: the same trace, the gateway's own
    // upstream span as its parent, the client's tracestate kept.
    let recorded = upstream.only();
    let sent = recorded.values("traceparent");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (trace, parent, flags) = traceparent_parts(sent[0]);
    assert_eq!(trace, CLIENT_TRACE);
    assert_eq!(parent, call["span_id"].as_str().expect("span id"));
    assert_eq!(flags, "01");
    assert_eq!(recorded.values("tracestate"), vec!["vendor=opaque1"]);
    assert_no_secret(
        &spans,
        &[&token, "query-secret-value", "cookie-secret-value", "page"],
    );
}

#[test]
fn a_second_request_with_the_same_token_is_a_cache_hit() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let config = format!("{}{}", standard_config(upstream.addr), receiver.table(""));
    let gateway = TestGateway::start(&config);
    let token = sign("test-eddsa", &claims("alice"));
    for _ in 0..2 {
        assert_eq!(get(gateway.addr, "/maybe", &[&bearer(&token)]).status, 200);
    }
    let spans = receiver.wait_for(|s| named(s, "verify_token").len() == 2);
    let mut caches: Vec<String> = named(&spans, "verify_token")
        .iter()
        .map(|s| {
            s["attributes"]["portcullis.cache"]
                .as_str()
                .unwrap_or("-")
                .to_owned()
        })
        .collect();
    caches.sort();
    assert_eq!(caches, ["hit", "miss"]);
}

#[test]
fn an_untrusted_clients_trace_context_is_not_continued_nor_passed_on() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let config = format!("{}{}", standard_config(upstream.addr), receiver.table(""));
    // No trusted proxies: the loopback client is just a client.
    let gateway = TestGateway::start(&config);
    let response = get(
        gateway.addr,
        "/public/x",
        &[&client_traceparent(), "tracestate: forged=1"],
    );
    assert_eq!(response.status, 200);
    let spans = receiver.wait_for(|s| s.iter().any(|s| s["kind"] == 2));
    let request = request_span(&spans);
    assert_ne!(request["trace_id"], CLIENT_TRACE, "a new trace");
    assert_eq!(request["parent_span_id"], "", "a root span");
    let recorded = upstream.only();
    let sent = recorded.values("traceparent");
    assert_eq!(sent.len(), 1, "only the gateway's traceparent: {sent:?}");
    let (trace, parent, _) = traceparent_parts(sent[0]);
    assert_eq!(trace, request["trace_id"].as_str().expect("trace id"));
    assert_eq!(
        parent,
        one(&spans, "upstream")["span_id"].as_str().expect("id")
    );
    assert!(
        recorded.values("tracestate").is_empty(),
        "the client's tracestate removed"
    );
}

#[test]
fn trust_client_context_continues_any_clients_trace() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let table = receiver.table("trust_client_context = true");
    let gateway = TestGateway::start(&format!("{}{table}", standard_config(upstream.addr)));
    let response = get(gateway.addr, "/public/x", &[&client_traceparent()]);
    assert_eq!(response.status, 200);
    let spans = receiver.wait_for(|s| s.iter().any(|s| s["kind"] == 2));
    assert_eq!(request_span(&spans)["trace_id"], CLIENT_TRACE);
    assert_eq!(request_span(&spans)["parent_span_id"], CLIENT_SPAN);
}

#[test]
fn a_refused_request_is_one_span_with_its_contract_code_and_nothing_upstream() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let config = format!("{}{}", standard_config(upstream.addr), receiver.table(""));
    let gateway = TestGateway::start(&config);
    let expired = sign(
        "test-eddsa",
        &claims_with("alice", serde_json::json!({"exp": 1000})),
    );
    let response = get(gateway.addr, "/reports", &[&bearer(&expired)]);
    let code = response
        .header("x-portcullis-error")
        .expect("a refusal")
        .to_owned();
    assert_refused(&response, 401, &code, &upstream);
    let spans = receiver.wait_for(|s| s.iter().any(|s| s["kind"] == 2));
    let request = request_span(&spans);
    assert_eq!(request["attributes"]["http.response.status_code"], 401);
    assert_eq!(request["attributes"]["portcullis.outcome"], code);
    assert_eq!(request["attributes"]["portcullis.error_code"], code);
    assert_eq!(
        one(&spans, "verify_token")["attributes"]["portcullis.outcome"],
        code
    );
    assert!(
        named(&spans, "upstream").is_empty(),
        "no upstream call: {spans:#?}"
    );
    assert_no_secret(&spans, &[&expired]);
}

#[test]
fn at_sample_ratio_0_nothing_is_exported_and_a_clients_traceparent_is_removed() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let table = receiver.table("sample_ratio = 0.0");
    let gateway = TestGateway::start(&format!("{}{table}", standard_config(upstream.addr)));
    let token = sign("test-eddsa", &claims("alice"));
    assert_eq!(get(gateway.addr, "/maybe", &[&bearer(&token)]).status, 200);
    assert_eq!(
        get(gateway.addr, "/public/x", &[&client_traceparent()]).status,
        200
    );
    assert_eq!(get(gateway.addr, "/reports", &[]).status, 401);
    // The export thread sends a batch a second after its first span:
    // three of those seconds pass.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.spans(), Vec::<Value>::new());
    for recorded in upstream.requests() {
        assert!(recorded.values("traceparent").is_empty(), "{recorded:?}");
    }
}

#[test]
fn the_login_backend_gets_the_gateways_span_as_parent() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let config = format!(
        "{}\n[login]\nupstream = \"echo\"\npath = \"/login\"\n{}",
        standard_config(upstream.addr),
        receiver.table("")
    );
    let gateway = TestGateway::start_with_server(&config, TRUST_LOOPBACK);
    let form = "Content-Type: application/x-www-form-urlencoded";
    let body = "username=alice&password=login-secret-value";
    let _ = post(
        gateway.addr,
        "/auth/login",
        &[form, &client_traceparent()],
        body,
    );
    let spans = receiver.wait_for(|s| s.iter().any(|s| s["kind"] == 2));
    let backend = one(&spans, "login_backend");
    assert_eq!(backend["kind"], 3, "a CLIENT span");
    assert_eq!(backend["trace_id"], CLIENT_TRACE);
    assert_eq!(backend["parent_span_id"], request_span(&spans)["span_id"]);
    let recorded = upstream.only();
    let sent = recorded.values("traceparent");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (trace, parent, _) = traceparent_parts(sent[0]);
    assert_eq!(trace, CLIENT_TRACE);
    assert_eq!(parent, backend["span_id"].as_str().expect("span id"));
    assert_no_secret(&spans, &["login-secret-value", "alice"]);
}

#[test]
fn the_access_line_carries_the_trace_id() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let trail = tempfile::tempdir().expect("tempdir");
    let audit = trail.path().join("audit.log");
    let config = format!(
        "{}{}\n[audit]\nenabled = true\ndestination = \"{}\"\n",
        standard_config(upstream.addr),
        receiver.table(""),
        audit.display()
    );
    let gateway = crate::support::binary::Launch::new(&config)
        .server("shutdown_grace = \"0s\"\ntrusted_proxies = [\"127.0.0.0/8\"]")
        .json()
        .start();
    let response = get(gateway.addr, "/public/x", &[&client_traceparent()]);
    assert_eq!(response.status, 200);
    let id = response.header("x-request-id").expect("id").to_owned();
    let line = gateway.process.wait_for_access_line(&id);
    assert_eq!(line["trace_id"], CLIENT_TRACE, "{line}");
    // The audit trail's decision line names the same trace.
    let decision = wait_for_audit_line(&audit, &id);
    assert_eq!(decision["trace_id"], CLIENT_TRACE, "{decision}");
}

/// The audit line of request `id`, once its writer has written it.
fn wait_for_audit_line(path: &std::path::Path, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["request_id"] == id);
        if let Some(line) = found {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit line for {id}: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every `[tracing]` key is checked by `portcullis check`, each problem
/// at its line and column.
#[test]
fn bad_tracing_values_are_refused_at_their_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = crate::support::tokens::fixtures_dir();
    let text = format!(
        "{}\n[tracing]\nenabled = true\nendpoint = \"ftp://collector\"\nprotocol = \"grpc\"\nsample_ratio = 1.5\nservice_name = \" \"\nqueue_size = 0\n",
        standard_config(free_addr()).replace("{fixtures}", &fixtures.display().to_string())
    );
    let line_of = |key: &str| {
        1 + text
            .lines()
            .position(|l| l.starts_with(key))
            .expect("the key")
    };
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, &text).expect("write");
    let out = tool::output(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--config"])
            .arg(&path),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (key, column) in [
        ("endpoint", 12),
        ("protocol", 12),
        ("sample_ratio", 16),
        ("service_name", 16),
        ("queue_size", 14),
    ] {
        let at = format!("portcullis.toml:{}:{column}: tracing.{key}", line_of(key));
        assert!(stderr.contains(&at), "{at} in:\n{stderr}");
    }
    let unknown = text.replace("queue_size = 0", "queue = 1");
    std::fs::write(&path, &unknown).expect("write");
    let out = tool::output(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--config"])
            .arg(&path),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("queue"),
        "an unknown key named"
    );
}

#[test]
fn a_repeated_traceparent_is_not_continued() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start();
    let config = format!("{}{}", standard_config(upstream.addr), receiver.table(""));
    let gateway = TestGateway::start_with_server(&config, TRUST_LOOPBACK);
    let other = format!("traceparent: 00-{}-{CLIENT_SPAN}-01", "1".repeat(32));
    let response = get(gateway.addr, "/public/x", &[&client_traceparent(), &other]);
    assert_eq!(response.status, 200);
    let spans = receiver.wait_for(|s| s.iter().any(|s| s["kind"] == 2));
    let request = request_span(&spans);
    assert_eq!(request["parent_span_id"], "", "a new trace: {request:#}");
    assert_eq!(upstream.only().values("traceparent").len(), 1);
}

/// A login backend that vouches for everyone as `alice`.
fn vouches(_: &crate::support::http::Recorded) -> (u16, Vec<String>, Vec<u8>) {
    (200, vec!["X-Auth-Subject: alice".to_owned()], Vec::new())
}

#[test]
fn a_login_times_the_backend_and_the_session_write() {
    let receiver = Receiver::start();
    let upstream = EchoUpstream::start_with(vouches);
    let config = format!(
        "{}\n[login]\nupstream = \"echo\"\npath = \"/login\"\n{}",
        standard_config(upstream.addr),
        receiver.table("")
    );
    let gateway = TestGateway::start(&config);
    let form = "Content-Type: application/x-www-form-urlencoded";
    let response = post(
        gateway.addr,
        "/auth/login",
        &[form],
        "username=a&password=pw-secret",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let spans = receiver.wait_for(|s| s.iter().any(|s| s["kind"] == 2));
    let request = request_span(&spans);
    assert_eq!(request["attributes"]["http.route"], "_auth_login");
    for child in ["login_backend", "session_write"] {
        assert_eq!(
            one(&spans, child)["parent_span_id"],
            request["span_id"],
            "{child}"
        );
    }
    assert_eq!(
        one(&spans, "session_write")["attributes"]["portcullis.outcome"],
        "ok"
    );
    let tokens = response.json();
    let access = tokens["access_token"].as_str().expect("an access token");
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token");
    assert_no_secret(&spans, &["pw-secret", access, refresh]);
}
