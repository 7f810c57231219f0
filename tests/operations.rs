//! What an operator relies on: metrics after real traffic, health.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::*;

#[test]
fn metrics_cover_every_family_after_real_traffic_and_pass_promtool() {
    // Metrics are per process and tests share one: this test's routes have
    // names of their own, so their counts are exact.
    let upstream = EchoUpstream::start();
    let config = standard_config(upstream.addr)
        .replace(
            "path = \"/\"\nupstream",
            "name = \"metrics-api\"\npath = \"/\"\nupstream",
        )
        .replace(
            "path = \"/public\"\nupstream",
            "name = \"metrics-public\"\npath = \"/public\"\nupstream",
        );
    let gateway = TestGateway::start(&config);
    let token = sign("test-eddsa", &claims("alice"));
    assert_eq!(get(gateway.addr, "/orders", &[&bearer(&token)]).status, 200);
    assert_eq!(get(gateway.addr, "/orders", &[&bearer(&token)]).status, 200);
    assert_eq!(get(gateway.addr, "/orders", &[]).status, 401);
    assert_eq!(get(gateway.addr, "/public", &[]).status, 200);
    let expired = sign(
        "test-eddsa",
        &claims_with("alice", json!({"iat": 1, "exp": 2})),
    );
    assert_eq!(
        get(gateway.addr, "/orders", &[&bearer(&expired)]).status,
        401
    );
    let refresh = post(
        gateway.addr,
        "/auth/token",
        &["Content-Type: application/x-www-form-urlencoded"],
        "grant_type=refresh_token&refresh_token=prt_x",
    );
    assert_eq!(refresh.status, 400);

    let page = get(gateway.admin, "/metrics", &[]);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let text = page.text();
    for exact in [
        "portcullis_requests_total{route=\"metrics-api\",status_class=\"2xx\"} 2",
        "portcullis_requests_total{route=\"metrics-api\",status_class=\"4xx\"} 2",
        "portcullis_requests_total{route=\"metrics-public\",status_class=\"2xx\"} 1",
        "portcullis_upstream_duration_seconds_count{route=\"metrics-api\"} 2",
        "portcullis_request_duration_seconds_count{route=\"metrics-api\"} 4",
    ] {
        assert!(
            text.lines().any(|l| l == exact),
            "missing {exact:?} in:\n{text}"
        );
    }
    // Shared with the other tests of this process: at least this test's own.
    for (series, at_least) in [
        ("portcullis_auth_decisions_total{outcome=\"ok\"}", 2.0),
        (
            "portcullis_auth_decisions_total{outcome=\"token_missing\"}",
            1.0,
        ),
        (
            "portcullis_auth_decisions_total{outcome=\"token_expired\"}",
            1.0,
        ),
        ("portcullis_verified_token_cache_hits_total", 1.0),
        ("portcullis_verified_token_cache_misses_total", 2.0),
        ("portcullis_refreshes_total{outcome=\"invalid_grant\"}", 1.0),
        ("portcullis_revocation_view_staleness_seconds", 0.0),
        ("portcullis_revoked_tokens", 0.0),
    ] {
        let value = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse::<f64>().ok())
            })
            .unwrap_or_else(|| panic!("missing {series} in:\n{text}"));
        assert!(
            value >= at_least,
            "{series} = {value}, expected at least {at_least}"
        );
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("alice"), "no user in a label: {line}");
    }

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed ({e}); scripts/test.sh installs Debian's prometheus package")
        });
    std::io::Write::write_all(promtool.stdin.as_mut().expect("stdin"), text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
