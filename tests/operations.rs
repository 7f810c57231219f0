//! What an operator relies on: metrics after real traffic, health.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::binary::RunningGateway;
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
    let wrong_admin = get(
        gateway.admin,
        "/admin/users/alice/sessions",
        &[&bearer("not-the-admin-token")],
    );
    assert_eq!(wrong_admin.status, 401);

    // A request is counted when its access line is written, just after
    // its answer: scrape until the last one is in (or a deadline passes).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let page = get(gateway.admin, "/metrics", &[]);
        assert_eq!(page.status, 200);
        assert!(page
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")));
        let text = page.text();
        let counted = text.lines().any(|l| {
            l.starts_with("portcullis_requests_total{code=\"invalid_grant\",route=\"_auth_token\"")
        });
        if counted || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for exact in [
        "portcullis_requests_total{code=\"ok\",route=\"metrics-api\",status_class=\"2xx\"} 2",
        "portcullis_requests_total{code=\"token_missing\",route=\"metrics-api\",status_class=\"4xx\"} 1",
        "portcullis_requests_total{code=\"token_expired\",route=\"metrics-api\",status_class=\"4xx\"} 1",
        "portcullis_requests_total{code=\"ok\",route=\"metrics-public\",status_class=\"2xx\"} 1",
        "portcullis_auth_decisions_total{outcome=\"ok\",route=\"metrics-api\"} 2",
        "portcullis_auth_decisions_total{outcome=\"token_missing\",route=\"metrics-api\"} 1",
        "portcullis_auth_decisions_total{outcome=\"token_expired\",route=\"metrics-api\"} 1",
        // Created at zero, so `increase()` sees the first revocation.
        "portcullis_auth_decisions_total{outcome=\"token_revoked\",route=\"metrics-api\"} 0",
        "portcullis_upstream_duration_seconds_count{route=\"metrics-api\"} 2",
        "portcullis_request_duration_seconds_count{route=\"metrics-api\"} 4",
        concat!("portcullis_build_info{version=\"", env!("CARGO_PKG_VERSION"), "\"} 1"),
    ] {
        assert!(
            text.lines().any(|l| l == exact),
            "missing {exact:?} in:\n{text}"
        );
    }
    // Shared with the other tests of this process: at least this test's own.
    for (series, at_least) in [
        (
            "portcullis_requests_total{code=\"invalid_grant\",route=\"_auth_token\",status_class=\"4xx\"}",
            1.0,
        ),
        (
            "portcullis_requests_total{code=\"token_invalid\",route=\"_admin\",status_class=\"4xx\"}",
            1.0,
        ),
        // Alerted on: present from the start, even at zero.
        ("portcullis_config_reloads_total{outcome=\"error\"}", 0.0),
        ("portcullis_store_errors_total{operation=\"follow\"}", 0.0),
        ("portcullis_store_errors_total{operation=\"load_user\"}", 0.0),
        ("portcullis_requests_total{code=\"ok\",route=\"_jwks\",status_class=\"2xx\"}", 0.0),
        ("portcullis_verified_token_cache_hits_total", 1.0),
        ("portcullis_verified_token_cache_misses_total", 2.0),
        ("portcullis_refreshes_total{outcome=\"invalid_grant\"}", 1.0),
        ("portcullis_revocation_view_staleness_seconds", 0.0),
        ("portcullis_revoked_tokens", 0.0),
        ("portcullis_change_log_lag_entries", 0.0),
        ("portcullis_active_sessions", 0.0),
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

    let mut promtool = Command::new("promtool");
    promtool
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut promtool = crate::support::tool::spawn(&mut promtool);
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

/// Rewrites the gateway's configuration file.
fn rewrite(gateway: &TestGateway, change: impl Fn(&str) -> String) {
    let path = gateway.dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, change(&text)).expect("write config");
}

#[test]
fn reload_swaps_a_good_file_and_keeps_serving_on_a_bad_one() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    assert_eq!(get(gateway.addr, "/public", &[]).status, 200);

    rewrite(&gateway, |t| {
        t.replace(
            "path = \"/public\"\nupstream = \"echo\"\nauth = \"none\"",
            "path = \"/public\"\nupstream = \"echo\"\nauth = \"required\"",
        )
    });
    let done = gateway.reload();
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["reloaded"], true);
    assert_eq!(
        get(gateway.addr, "/public", &[]).status,
        401,
        "the new route table is in force"
    );

    rewrite(&gateway, |t| {
        t.replace("[tokens]\n", "[tokens]\nlifetime = \"5m\"\n")
    });
    let refused = gateway.reload();
    assert_eq!(refused.status, 400);
    let body = refused.json();
    assert_eq!(body["reloaded"], false);
    let error = body["errors"][0].as_str().expect("error").to_owned();
    let path = gateway.dir.path().join("portcullis.toml");
    assert!(
        error.starts_with(&format!("{}:", path.display()))
            && error.contains("unknown field `lifetime`"),
        "{error}"
    );
    assert_eq!(
        get(gateway.addr, "/public", &[]).status,
        401,
        "the previous configuration stays"
    );
    let token = sign("test-eddsa", &claims("alice"));
    assert_eq!(get(gateway.addr, "/orders", &[&bearer(&token)]).status, 200);
    let metrics = get(gateway.admin, "/metrics", &[]).text();
    assert!(metrics.contains("portcullis_config_reloads_total{outcome=\"error\"}"));
}

#[test]
fn reload_under_load_fails_no_request() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let token = sign("test-eddsa", &claims("alice"));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut failed = Vec::new();
                    let mut sent = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) || sent < 20 {
                        let status = get(gateway.addr, "/orders", &[&bearer(&token)]).status;
                        if status != 200 {
                            failed.push(status);
                        }
                        sent += 1;
                    }
                    failed
                })
            })
            .collect();
        for i in 0..20 {
            rewrite(&gateway, |t| {
                t.replace("refresh_hint = ", &format!("# reload {i}\nrefresh_hint = "))
            });
            assert_eq!(gateway.reload().status, 200);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect::<Vec<_>>()
    });
    assert!(
        failures.is_empty(),
        "requests failed during reloads: {failures:?}"
    );
}

#[test]
fn access_log_is_json_per_request_and_never_holds_a_token() {
    let upstream = EchoUpstream::start();
    let gateway = RunningGateway::standard(upstream.addr)
        .json()
        .log("debug")
        .start();
    let addr = gateway.addr;
    let token = sign("test-eddsa", &claims("alice"));
    assert_eq!(get(addr, "/orders", &[&bearer(&token)]).status, 200);
    assert_eq!(
        get(addr, &format!("/orders?access_token={token}"), &[]).status,
        400
    );
    let refresh = "prt_secretsecretsecretsecretsecretsecretsecret";
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    assert_eq!(
        post(
            addr,
            "/auth/token",
            &form,
            &format!("grant_type=refresh_token&refresh_token={refresh}")
        )
        .status,
        400
    );
    // Lines leave in order, and the three requests were answered in turn.
    gateway.wait_for_json_lines(|v| v["target"] == "portcullis::access", 3);
    let log = gateway.stop();
    let signature = token.rsplit('.').next().expect("signature");
    assert!(
        !log.contains(signature) && !log.contains(&token[..40]),
        "a token reached the log"
    );
    assert!(
        !log.contains("secretsecret"),
        "a refresh token reached the log"
    );
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "portcullis::access")
        .collect();
    assert_eq!(access.len(), 3, "{log}");
    assert_eq!(access[0]["subject"], "alice");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[1]["outcome"], "invalid_request");
    for line in &access {
        for field in [
            "request_id",
            "route",
            "status",
            "outcome",
            "subject",
            "latency_us",
            "upstream",
        ] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
    }
}

#[test]
fn sighup_reloads_a_running_gateway() {
    let upstream = EchoUpstream::start();
    let gateway = RunningGateway::standard(upstream.addr).log("warn").start();
    let (addr, path) = (gateway.addr, gateway.config_path());
    let text = std::fs::read_to_string(&path).expect("config");
    assert_eq!(get(addr, "/public", &[]).status, 200);
    std::fs::write(
        &path,
        text.replace(
            "path = \"/public\"\nupstream = \"echo\"\nauth = \"none\"",
            "path = \"/public\"\nupstream = \"echo\"\nauth = \"required\"",
        ),
    )
    .expect("rewrite");
    gateway.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(addr, "/public", &[]).status != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn pool_config(upstream: std::net::SocketAddr, targets: &[std::net::SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    crate::support::gateway::config_with_routes(
        upstream,
        &format!(
            r#"
[[upstreams]]
name = "pool"
targets = [{}]
connect_timeout = "500ms"
ejection = "1s"
health_check = {{ path = "/health", interval = "200ms", healthy_threshold = 1, unhealthy_threshold = 1 }}

[[routes]]
path = "/"
upstream = "pool"
auth = "none"
"#,
            targets.join(", ")
        ),
    )
}

#[test]
fn a_health_checked_pool_ejects_a_dead_target_and_takes_it_back() {
    let alive = EchoUpstream::start();
    let dead = crate::support::gateway::free_addr();
    let gateway = TestGateway::start(&pool_config(alive.addr, &[alive.addr, dead]));
    for _ in 0..10 {
        let response = get(gateway.addr, "/x", &[]);
        assert_eq!(
            response.status,
            200,
            "a refused connection is retried on the other target: {}",
            response.text()
        );
    }
    assert_eq!(
        alive.requests().iter().filter(|r| r.target == "/x").count(),
        10
    );
    let health = |target: std::net::SocketAddr| {
        let page = get(gateway.admin, "/metrics", &[]).text();
        let series =
            format!("portcullis_upstream_target_healthy{{target=\"{target}\",upstream=\"pool\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(series.as_str()).map(str::to_owned))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while health(dead).as_deref() != Some("0") {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead target was never marked down: {:?}",
            health(dead)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(health(alive.addr).as_deref(), Some("1"));

    let back = EchoUpstream::start_at(dead, crate::support::http::echo_ok);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while back.requests().iter().all(|r| r.target == "/health") {
        assert!(
            std::time::Instant::now() < deadline,
            "the target that came back got no traffic"
        );
        assert_eq!(get(gateway.addr, "/x", &[]).status, 200);
    }
    assert_eq!(health(dead).as_deref(), Some("1"));
}

#[test]
fn a_pool_without_a_healthy_target_answers_503() {
    let upstream = EchoUpstream::start();
    let dead = crate::support::gateway::free_addr();
    let gateway = TestGateway::start(&pool_config(upstream.addr, &[dead]));
    // The first request may find the target still presumed healthy (502,
    // and it is ejected) or already checked (503); from then on: 503.
    let first = get(gateway.addr, "/x", &[]);
    assert!(
        matches!(
            first.header("x-portcullis-error"),
            Some("bad_gateway" | "no_healthy_upstream")
        ),
        "{}",
        first.text()
    );
    let response = get(gateway.addr, "/x", &[]);
    assert_refused(&response, 503, "no_healthy_upstream", &upstream);
}

/// TLS termination with HTTP/2 by ALPN, end to end, with curl as the client.
#[test]
fn tls_and_http2_end_to_end() {
    let upstream = EchoUpstream::start();
    let config = format!("{}\n", standard_config(upstream.addr));
    let gateway = TestGateway::start_with_server(&config, &tls_listener());
    let token = sign("test-eddsa", &claims("alice"));
    let port = gateway.addr.port();
    let curl = |extra: &[&str]| curl_https(port, "/orders", "%{http_version} %{http_code}", extra);
    let auth = format!("Authorization: Bearer {token}");
    assert_eq!(
        curl(&["--http2", "-H", &auth]),
        "2 200",
        "HTTP/2 over TLS, certificate verified"
    );
    assert_eq!(curl(&["--http1.1", "-H", &auth]), "1.1 200");
    assert_eq!(
        curl(&["--http2"]),
        "2 401",
        "the contract holds over HTTP/2 too"
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|r| r.values("x-forwarded-proto") == ["https"]));
    assert!(seen.iter().all(|r| r.values("x-user-id") == ["alice"]));
}

/// HTTP/2 answers carry the request id as a never-indexed literal (issue
/// #24): a client decoding several answers on one connection still reads
/// each answer's own id, the one its upstream request carried. The
/// upstream's own headers, which HPACK indexes, are copied out of the
/// upstream's read buffer first and still read as sent on every answer.
#[test]
fn each_http2_answer_on_one_connection_carries_its_own_request_id() {
    let upstream = EchoUpstream::start();
    let config = format!("{}\n", standard_config(upstream.addr));
    let gateway = TestGateway::start_with_server(&config, &tls_listener());
    let auth = format!(
        "Authorization: Bearer {}",
        sign("test-eddsa", &claims("alice"))
    );
    let port = gateway.addr.port();
    let again = format!("https://localhost:{port}/orders");
    let extra = [
        "--http2",
        "-H",
        &auth,
        &again,
        "-o",
        "/dev/null",
        &again,
        "-o",
        "/dev/null",
    ];
    let out = curl_https(
        port,
        "/orders",
        "%{http_version} %header{x-request-id} %header{content-type}\n",
        &extra,
    );
    let answers: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("2 ")).collect();
    assert_eq!(answers.len(), 3, "three HTTP/2 answers: {out}");
    let ids: Vec<&str> = answers
        .iter()
        .map(|a| {
            a.strip_suffix(" application/json")
                .unwrap_or("upstream header lost")
        })
        .collect();
    assert!(ids.iter().all(|id| id.len() == 32), "{out}");
    let seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.values("x-request-id").concat())
        .collect();
    assert_eq!(seen, ids, "each answer's id is its own request's");
}

/// Slow for `/public/slow`, at once for everything else.
fn slow_upstream(seen: &crate::support::http::Recorded) -> (u16, Vec<String>, Vec<u8>) {
    if seen.target == "/public/slow" {
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    (200, vec![], b"slow but complete".to_vec())
}

/// Whether a new connection to `addr` gets no answer (refused, closed, or
/// silent for a second).
fn unanswered(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return true;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(1)));
    let _ = stream.write_all(b"GET /public HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut answer = [0u8; 16];
    !matches!(stream.read(&mut answer), Ok(n) if n > 0)
}

/// SIGTERM in a rollout (see `server::DrainFirst`): for `shutdown_grace`
/// the gateway still accepts and serves new connections while `/readyz`
/// reports not ready; then it stops accepting, requests in flight finish
/// within `shutdown_timeout`, and the process exits.
#[test]
fn sigterm_serves_through_the_grace_then_drains_and_exits() {
    use std::time::{Duration, Instant};
    let upstream = EchoUpstream::start_with(slow_upstream);
    let mut served = RunningGateway::standard(upstream.addr)
        .server("shutdown_grace = \"2s\"\nshutdown_timeout = \"2s\"")
        .log("warn")
        .start();
    let addr = served.addr;
    let slow = move || std::thread::spawn(move || get(addr, "/public/slow", &[]));
    assert_eq!(get(served.admin, "/readyz", &[]).status, 200);
    let before = slow();
    std::thread::sleep(Duration::from_millis(300));
    served.signal("TERM");
    let signalled = Instant::now();

    std::thread::sleep(Duration::from_millis(500));
    let during = get(addr, "/public", &[]);
    assert_eq!(
        during.status, 200,
        "a new connection in the grace is served"
    );
    let ready = get(served.admin, "/readyz", &[]);
    assert_eq!(
        (ready.status, ready.json()["draining"].clone()),
        (503, json!(true))
    );
    // Begun in the grace, answered after it (1.5 s upstream).
    std::thread::sleep(Duration::from_millis(700));
    let across = slow();

    std::thread::sleep(Duration::from_secs(2).saturating_sub(signalled.elapsed()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        unanswered(addr),
        "a new connection after the grace is served"
    );
    for (name, request) in [("before", before), ("across", across)] {
        let response = request.join().expect("request");
        assert_eq!(
            (response.status, response.text()),
            (200, "slow but complete".to_owned()),
            "{name} SIGTERM"
        );
    }
    let exited = served.wait_exit(Duration::from_secs(20));
    assert!(exited.success(), "{exited:?}");
    // The grace and the drain period (4 s), and the runtimes' stop (one
    // second), are the promise: at least the first, and, with a generous
    // margin for a loaded machine, not much more than all three.
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

/// TLS to an upstream, its certificate verified against `ca_file`: the
/// upstream here is another gateway terminating TLS.
#[test]
fn tls_to_an_upstream_verifies_its_certificate() {
    let echo = EchoUpstream::start();
    let ca = tls_fixtures().join("test-ca.pem");
    let inner = TestGateway::start_with_server(
        &crate::support::gateway::config_with_routes(
            echo.addr,
            "[[routes]]\npath = \"/\"\nupstream = \"echo\"\nauth = \"none\"\n",
        ),
        &tls_listener(),
    );
    let routes = |ca: &str| {
        format!(
            "[[upstreams]]\nname = \"secure\"\ntargets = [\"127.0.0.1:{}\"]\ntls = true\nsni = \"localhost\"\n{ca}\n\n[[routes]]\npath = \"/\"\nupstream = \"secure\"\nauth = \"none\"\n",
            inner.addr.port()
        )
    };
    let trusting = TestGateway::start(&crate::support::gateway::config_with_routes(
        echo.addr,
        &routes(&format!("ca_file = \"{}\"", ca.display())),
    ));
    assert_eq!(get(trusting.addr, "/through", &[]).status, 200);
    let seen = echo.only();
    assert_eq!(seen.target, "/through");
    assert_eq!(
        seen.values("x-forwarded-proto"),
        ["https"],
        "the inner gateway got TLS"
    );

    // Without the CA the self-signed certificate is refused: 502, nothing sent.
    echo.clear();
    let untrusting = TestGateway::start(&crate::support::gateway::config_with_routes(
        echo.addr,
        &routes(""),
    ));
    let refused = get(untrusting.addr, "/through", &[]);
    assert_eq!(
        (refused.status, refused.header("x-portcullis-error")),
        (502, Some("bad_gateway"))
    );
    assert_eq!(echo.count(), 0);
}

/// A renewed certificate is picked up by a reload, without a restart.
#[test]
fn a_reload_swaps_the_tls_certificate() {
    let upstream = EchoUpstream::start();
    let fixtures = tls_fixtures();
    let live = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(fixtures.join("test-cert.pem"), &cert).expect("copy");
    std::fs::copy(fixtures.join("test-key.pem"), &key).expect("copy");
    let gateway = TestGateway::start_with_server(
        &standard_config(upstream.addr),
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        ),
    );
    let subject = || {
        let out = crate::support::tool::output(
            Command::new("curl")
                .args(["-sv", "-o", "/dev/null", "--cacert"])
                .arg(fixtures.join("test-ca.pem"))
                .arg(format!("https://localhost:{}/public", gateway.addr.port())),
        );
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        log.lines()
            .find_map(|l| {
                l.strip_prefix('*')
                    .map(str::trim)
                    .and_then(|l| l.strip_prefix("subject: "))
                    .map(str::to_owned)
            })
            .unwrap_or(log)
    };
    assert_eq!(subject(), "CN=localhost");
    std::fs::copy(fixtures.join("test-cert-2.pem"), &cert).expect("copy");
    std::fs::copy(fixtures.join("test-key-2.pem"), &key).expect("copy");
    assert_eq!(gateway.reload().status, 200);
    assert_eq!(subject(), "CN=localhost-2");
}
