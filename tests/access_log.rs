//! The access log's cost and shape: lines leave through a bounded queue
//! that drops (and counts) rather than block a request, plain text has no
//! colour codes outside a terminal, successful requests can be sampled,
//! and what is queued is written before the process exits.

use std::io::Write;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use portcullis::log_queue;

use crate::support::binary::{RunningGateway, PATIENCE};
use crate::support::gateway::{free_addr, standard_config};
use crate::support::sink::StalledSink;
use crate::support::tokens::fixtures_dir;
use crate::support::{assert_refused, get, EchoUpstream};

/// The text log used to carry ANSI colour codes into files and pipes
/// (`ESC[2m…ESC[0m` around every field name): a log shipper saw escape
/// bytes, and each line cost the formatting twice over.
#[test]
fn text_log_has_no_escape_codes_when_stderr_is_not_a_terminal() {
    let upstream = EchoUpstream::start();
    let gateway = RunningGateway::standard(upstream.addr).start();
    let ok = get(gateway.addr, "/public/page", &[]);
    assert_eq!(ok.status, 200);
    let id = ok.header("x-request-id").expect("id").to_owned();
    let line = gateway.wait_for_line(
        |l| l.contains("portcullis::access") && l.contains(&id),
        PATIENCE,
    );
    assert!(line.contains(&format!("request_id={id}")), "{line}");
    assert!(line.contains("status=200"), "{line}");
    let log = gateway.stop();
    assert!(!log.contains('\u{1b}'), "an escape code in the log:\n{log}");
}

/// `access_log_sample = 0.0` keeps the line of every refusal and drops the
/// lines of successful requests, which are still counted in the metrics.
#[test]
fn sampling_drops_successful_lines_but_keeps_every_refusal() {
    let upstream = EchoUpstream::start();
    let gateway = RunningGateway::standard(upstream.addr)
        .server("shutdown_grace = \"0s\"\naccess_log_sample = 0.0")
        .json()
        .start();
    let (addr, admin) = (gateway.addr, gateway.admin);
    let refused = get(addr, "/orders", &[]);
    assert_refused(&refused, 401, "token_missing", &upstream);
    let refused_id = refused.header("x-request-id").expect("id").to_owned();
    let mut ok_ids = Vec::new();
    for _ in 0..5 {
        let ok = get(addr, "/public/page", &[]);
        assert_eq!(ok.status, 200);
        ok_ids.push(ok.header("x-request-id").expect("id").to_owned());
    }
    // Counted when each request's logging hook has run, just after its answer.
    let counted = r#"portcullis_requests_total{code="ok",route="/public",status_class="2xx"} 5"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut metrics = get(admin, "/metrics", &[]).text();
    while !metrics.contains(counted) {
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        thread::sleep(Duration::from_millis(50));
        metrics = get(admin, "/metrics", &[]).text();
    }
    assert!(
        metrics.contains("portcullis_log_lines_dropped_total 0"),
        "{metrics}"
    );
    // Lines leave in order: once a later refusal's line is written, a
    // line of any successful request before it would have been too.
    let last = get(addr, "/orders", &[]);
    assert_eq!(last.status, 401);
    let refusal = gateway.wait_for_access_line(&refused_id);
    assert_eq!(
        (&refusal["outcome"], &refusal["status"]),
        (&json!("token_missing"), &json!(401))
    );
    gateway.wait_for_access_line(last.header("x-request-id").expect("id"));
    let log = gateway.stop();
    let access = access_lines(&log);
    for id in &ok_ids {
        assert!(
            !access.iter().any(|l| l["request_id"] == id.as_str()),
            "a successful request was logged at sample 0.0:\n{log}"
        );
    }
}

fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "portcullis::access")
        .collect()
}

/// A share outside 0.0..=1.0 is a configuration error with its position,
/// not a silently clamped value.
#[test]
fn access_log_sample_outside_zero_to_one_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = free_addr();
    let text = format!(
        "[server]\naccess_log_sample = 1.5\n\n{}",
        standard_config(upstream).replace("{fixtures}", &fixtures_dir().display().to_string())
    );
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", path.to_str().expect("utf-8")])
        .output()
        .expect("check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("portcullis.toml:2:") && stderr.contains("access_log_sample"),
        "{stderr}"
    );
}

/// A stalled log writer must never block a request: once the queue is full
/// each further line is dropped and counted, and every line is either
/// written whole or counted as dropped.
#[test]
fn a_full_log_queue_drops_and_counts_lines_instead_of_blocking() {
    let (release, released) = mpsc::channel();
    let (written, lines) = mpsc::channel();
    let sink = StalledSink {
        release: released,
        written,
    };
    let (queue, guard) = log_queue::start(sink, 1000).expect("writer thread");
    let dropped_before = portcullis::metrics::METRICS.log_lines_dropped.get();
    let line = [b'x'; 99];
    let mut pushed = Vec::new();
    for i in 0..100u8 {
        let mut one = line.to_vec();
        one.push(i);
        pushed.push(queue.push(&one));
    }
    // At most one batch is in the writer's hands and ten lines fit in the
    // queue, so most of the hundred were dropped, not waited for.
    let accepted = pushed.iter().filter(|p| **p).count() as u64;
    assert!(accepted <= 20, "{accepted} lines accepted");
    assert_eq!(queue.dropped(), 100 - accepted);
    assert!(
        portcullis::metrics::METRICS.log_lines_dropped.get() >= dropped_before + queue.dropped()
    );
    // Let the writer go: what was accepted is written, whole, at exit.
    for _ in 0..200 {
        let _ = release.send(());
    }
    drop(guard);
    let bytes: Vec<u8> = lines.try_iter().flatten().collect();
    assert_eq!(bytes.len() as u64, accepted * 100);
    assert!(bytes.chunks(100).all(|l| l[..99] == line));
}

/// Lines still queued when the gateway is told to stop (SIGTERM) are
/// written before it exits.
#[test]
fn queued_lines_are_written_before_a_graceful_exit() {
    let upstream = EchoUpstream::start();
    let mut gateway = RunningGateway::standard(upstream.addr).json().start();
    let addr = gateway.addr;
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let ok = get(addr, "/public/page", &[]);
            ok.header("x-request-id").expect("id").to_owned()
        })
        .collect();
    gateway.signal("TERM");
    let exit = gateway.wait_exit(PATIENCE);
    assert!(exit.success(), "exit: {exit:?}");
    let log = gateway.log();
    let access = access_lines(&log);
    for id in &ids {
        assert!(
            access.iter().any(|l| l["request_id"] == id.as_str()),
            "{id} missing:\n{log}"
        );
    }
}

/// A head the edge refuses gets the same access line as a request the
/// proxy refuses: one writer, one field set (issue #22), the outcome
/// naming the refusal where the edge's line once had a message of its own.
#[test]
fn a_head_refused_at_the_edge_gets_the_same_access_line_as_the_proxy() {
    use std::io::Read;
    let upstream = EchoUpstream::start();
    let gateway = RunningGateway::standard(upstream.addr).json().start();
    let addr = gateway.addr;
    let refused = get(addr, "/orders", &[]);
    assert_refused(&refused, 401, "token_missing", &upstream);
    let proxy_id = refused.header("x-request-id").expect("id").to_owned();
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let edge_id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id:\n{answer}"))
        .trim()
        .to_owned();
    // Lines leave through the log queue: wait for each, then compare.
    let (proxy, edge) = (
        gateway.wait_for_access_line(&proxy_id),
        gateway.wait_for_access_line(&edge_id),
    );
    let keys = |l: &Value| {
        let mut keys: Vec<String> = l.as_object().expect("object").keys().cloned().collect();
        keys.retain(|k| k != "error" && k != "timestamp");
        keys.sort();
        keys
    };
    assert_eq!(keys(&edge), keys(&proxy), "edge {edge}\nproxy {proxy}");
    assert!(edge.get("message").is_none(), "{edge}");
    assert_eq!(edge["route"], "_unrouted");
    assert_eq!(edge["outcome"], "method_not_allowed");
    assert_eq!(edge["status"], 405);
    assert_eq!(edge["method"], "-");
    assert_eq!(edge["subject"], "-");
    assert_eq!(upstream.count(), 0);
}
