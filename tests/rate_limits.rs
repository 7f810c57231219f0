//! Rate limits per route (`[[rate_limits]]`) and login throttling, through
//! the whole gateway: the 429 contract and its fields, whom a limit counts,
//! exemptions, one limit across instances on Redis and on a Cluster, a
//! store outage, and `/auth/login` slowing a credential-stuffing run
//! while the real user still logs in.

use std::time::{Duration, Instant};

use crate::support::http::Recorded;
use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::*;

/// `standard_config` plus the policies and routes given.
fn with_limits(upstream: std::net::SocketAddr, limits: &str) -> String {
    format!("{}\n{limits}\n", standard_config(upstream))
}

/// A public route limited per client address to two a minute.
const PER_CLIENT: &str = r#"
[[rate_limits]]
name = "per-client"
rate = "2/m"
key = "client"

[[routes]]
name = "limited"
path = "/limited"
upstream = "echo"
auth = "none"
rate_limit = "per-client"
"#;

/// The address the gateway takes as the client: `from`, forwarded by a
/// trusted proxy on loopback.
fn from(address: &str) -> String {
    format!("X-Forwarded-For: {address}")
}

const TRUST_LOOPBACK: &str = "trusted_proxies = [\"127.0.0.0/8\"]";

#[track_caller]
fn assert_limited(response: &Response, upstream: &EchoUpstream, policy: &str) {
    assert_refused(response, 429, "rate_limited", upstream);
    let retry: u64 = (response.header("retry-after"))
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(response.header("ratelimit-policy"), Some(policy));
    let name = policy.split(';').next().unwrap_or_default();
    let left = response.header("ratelimit").expect("RateLimit");
    assert!(left.starts_with(&format!("{name};r=0;t=")), "{left}");
}

#[test]
fn a_route_over_its_limit_answers_429_with_the_fields_and_nothing_goes_upstream() {
    let upstream = EchoUpstream::start();
    // Metrics are per process: this route's name is this test's own.
    let limits = PER_CLIENT.replace("name = \"limited\"", "name = \"limited-once\"");
    let gateway = TestGateway::start(&with_limits(upstream.addr, &limits));
    let first = get(gateway.addr, "/limited/a", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"per-client\";q=2;w=60")
    );
    assert_eq!(first.header("ratelimit"), Some("\"per-client\";r=1;t=30"));
    let second = get(gateway.addr, "/limited/b", &[]);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("ratelimit"), Some("\"per-client\";r=0;t=60"));
    upstream.clear();

    let refused = get(gateway.addr, "/limited/c", &[]);
    assert_limited(&refused, &upstream, "\"per-client\";q=2;w=60");
    // Two a minute: the next one may pass 30 seconds after the second.
    let retry: u64 =
        (refused.header("retry-after").and_then(|v| v.parse().ok())).expect("Retry-After");
    assert!((29..=30).contains(&retry), "Retry-After {retry}");
    // Routes without a limit are not counted and carry no fields.
    let other = get(gateway.addr, "/public/x", &[]);
    assert_eq!(other.status, 200);
    assert_eq!(other.header("ratelimit"), None);

    let decided =
        r#"portcullis_rate_limit_decisions_total{outcome="limited",route="limited-once"} 1"#;
    let outcome = r#"portcullis_requests_total{code="rate_limited",route="limited-once",status_class="4xx"} 1"#;
    // Requests are counted by their logging hook, just after the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut metrics = get(gateway.admin, "/metrics", &[]).text();
    while !(metrics.contains(decided) && metrics.contains(outcome)) {
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
        metrics = get(gateway.admin, "/metrics", &[]).text();
    }
}

#[test]
fn a_subject_limit_counts_each_user_and_a_client_limit_each_address() {
    let upstream = EchoUpstream::start();
    let limits = r#"
[[rate_limits]]
name = "per-user"
rate = "1/h"

[[routes]]
path = "/mine"
upstream = "echo"
auth = "optional"
rate_limit = "per-user"
"#;
    let config = with_limits(upstream.addr, &format!("{PER_CLIENT}{limits}"));
    let gateway = TestGateway::start_with_server(&config, TRUST_LOOPBACK);
    let alice = bearer(&sign("test-eddsa", &claims("alice")));
    let bob = bearer(&sign("test-eddsa", &claims("bob")));
    let here = from("198.51.100.1");
    assert_eq!(get(gateway.addr, "/mine", &[&alice, &here]).status, 200);
    upstream.clear();
    let again = get(gateway.addr, "/mine", &[&alice, &from("198.51.100.2")]);
    assert_limited(&again, &upstream, "\"per-user\";q=1;w=3600");
    assert_eq!(
        get(gateway.addr, "/mine", &[&bob, &here]).status,
        200,
        "another user from the same address has a limit of their own"
    );
    // Without a token, a subject limit counts the address.
    assert_eq!(get(gateway.addr, "/mine", &[&here]).status, 200);
    upstream.clear();
    assert_limited(
        &get(gateway.addr, "/mine", &[&here]),
        &upstream,
        "\"per-user\";q=1;w=3600",
    );

    for _ in 0..2 {
        assert_eq!(
            get(gateway.addr, "/limited", &[&from("203.0.113.5")]).status,
            200
        );
    }
    upstream.clear();
    let limited = get(gateway.addr, "/limited", &[&from("203.0.113.5")]);
    assert_limited(&limited, &upstream, "\"per-client\";q=2;w=60");
    assert_eq!(
        get(gateway.addr, "/limited", &[&from("203.0.113.6")]).status,
        200,
        "another address is not limited"
    );
}

#[test]
fn exempt_roles_and_scopes_pass_without_counting() {
    let upstream = EchoUpstream::start();
    let limits = r#"
[[rate_limits]]
name = "strict"
rate = "1/h"
roles = ["ops"]
scopes = ["bulk"]

[[routes]]
path = "/strict"
upstream = "echo"
rate_limit = "strict"
"#;
    let gateway = TestGateway::start(&with_limits(upstream.addr, limits));
    let ops = bearer(&sign(
        "test-eddsa",
        &claims_with("olga", serde_json::json!({"roles": ["user", "ops"]})),
    ));
    let bulk = bearer(&sign(
        "test-eddsa",
        &claims_with("bert", serde_json::json!({"scope": "read bulk"})),
    ));
    for _ in 0..3 {
        for token in [&ops, &bulk] {
            let passed = get(gateway.addr, "/strict", &[token]);
            assert_eq!(passed.status, 200);
            assert_eq!(
                passed.header("ratelimit"),
                None,
                "an exempt caller is not counted"
            );
        }
    }
    let plain = bearer(&sign("test-eddsa", &claims("paul")));
    assert_eq!(get(gateway.addr, "/strict", &[&plain]).status, 200);
    upstream.clear();
    assert_limited(
        &get(gateway.addr, "/strict", &[&plain]),
        &upstream,
        "\"strict\";q=1;w=3600",
    );
}

/// Sends `total` requests alternately to `a` and `b`; returns how many passed.
fn passed_across(
    a: &TestGateway,
    b: &TestGateway,
    path: &str,
    headers: &[&str],
    total: usize,
) -> usize {
    (0..total)
        .map(|i| if i % 2 == 0 { a.addr } else { b.addr })
        .filter(|addr| get(*addr, path, headers).status == 200)
        .count()
}

#[test]
fn two_instances_on_one_redis_enforce_one_limit() {
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let limits = r#"
[[rate_limits]]
name = "fleet"
rate = "3/h"
key = "client"

[[routes]]
path = "/fleet"
upstream = "echo"
auth = "none"
rate_limit = "fleet"
"#;
    let config = format!(
        "{}\n[store]\nurl = \"{}\"\n",
        with_limits(upstream.addr, limits),
        redis.url()
    );
    let (a, b) = (TestGateway::start(&config), TestGateway::start(&config));
    assert_eq!(
        passed_across(&a, &b, "/fleet", &[], 8),
        3,
        "3 in all, not 3 each"
    );
    upstream.clear();
    assert_limited(
        &get(b.addr, "/fleet", &[]),
        &upstream,
        "\"fleet\";q=3;w=3600",
    );
    // The state is Redis's, and it expires by itself.
    let mut conn = redis.connection();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("portcullis:ratelimit:*")
        .query(&mut conn)
        .expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&keys[0])
        .query(&mut conn)
        .expect("pttl");
    assert!(ttl > 0 && ttl <= 3_600_000, "PTTL {ttl}");
}

#[test]
fn on_a_cluster_instances_share_one_limit_and_keys_spread_over_slots() {
    let cluster = RedisCluster::shared();
    let prefix = RedisCluster::fresh_prefix();
    let upstream = EchoUpstream::start();
    let limits = r#"
[[rate_limits]]
name = "fleet"
rate = "2/h"

[[routes]]
name = "fleet"
path = "/fleet"
upstream = "echo"
auth = "none"
rate_limit = "fleet"
"#;
    let config = format!(
        "{}\n[store]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n",
        with_limits(upstream.addr, limits),
        cluster.url()
    );
    let a = TestGateway::start_with_server(&config, TRUST_LOOPBACK);
    let b = TestGateway::start_with_server(&config, TRUST_LOOPBACK);
    let addresses: Vec<String> = (1..=6).map(|i| format!("192.0.2.{i}")).collect();
    for address in &addresses {
        let header = from(address);
        assert_eq!(
            passed_across(&a, &b, "/fleet", &[&header], 5),
            2,
            "{address}"
        );
    }
    let mut conn = cluster.connection();
    let slots: std::collections::HashSet<i64> = addresses
        .iter()
        .map(|address| {
            // The policy, the route's host (none), path and methods (all), the caller.
            let key = portcullis::store::rate_limit::limit_key(&[
                "fleet",
                "",
                "/fleet",
                "",
                &format!("ip:{address}"),
            ]);
            let name = format!("{prefix}:ratelimit:{}", hex::encode(key));
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(&name)
                .query(&mut conn)
                .expect("pttl");
            assert!(ttl > 0, "{name} expires by itself: {ttl}");
            ::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&name)
                .query(&mut conn)
                .expect("keyslot")
        })
        .collect();
    assert!(
        slots.len() > 1,
        "six callers' keys all in one slot: {slots:?}"
    );
}

/// The policy's `on_unavailable` decides while the shared store cannot,
/// whatever `[store] on_unavailable` says (here its default, `deny`): a
/// limit on a public route must not turn an outage into a total one unless
/// the operator asked for that.
#[test]
fn a_store_outage_follows_the_policys_on_unavailable() {
    for (on_unavailable, during) in [("deny", 503), ("local", 200), ("", 200)] {
        let setting = if on_unavailable.is_empty() {
            String::new()
        } else {
            format!("on_unavailable = \"{on_unavailable}\"\n")
        };
        let limits = format!(
            "[[rate_limits]]\nname = \"fleet\"\nrate = \"2/h\"\nkey = \"route\"\n{setting}\n\
             [[routes]]\npath = \"/fleet\"\nupstream = \"echo\"\nauth = \"none\"\nrate_limit = \"fleet\"\n"
        );
        let mut redis = RedisServer::start();
        let upstream = EchoUpstream::start();
        let config = format!(
            "{}\n[store]\nurl = \"{}\"\n",
            with_limits(upstream.addr, &limits),
            redis.url()
        );
        let gateway = TestGateway::start(&config);
        assert_eq!(get(gateway.addr, "/fleet", &[]).status, 200);
        redis.kill();
        upstream.clear();
        let answer = get(gateway.addr, "/fleet", &[]);
        if during == 503 {
            assert_refused(&answer, 503, "auth_unavailable", &upstream);
            continue;
        }
        // Decided by this instance alone: the limit still holds.
        assert_eq!(answer.status, 200, "{on_unavailable:?}");
        assert_eq!(get(gateway.addr, "/fleet", &[]).status, 200);
        upstream.clear();
        assert_limited(
            &get(gateway.addr, "/fleet", &[]),
            &upstream,
            "\"fleet\";q=2;w=3600",
        );
    }
}

// Login throttling.

/// The legacy backend: `alice` / `secret` logs in, anything else is refused.
fn login_backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let body = String::from_utf8_lossy(&request.body).into_owned();
    if body.contains("username=alice&password=secret") {
        return (
            200,
            vec!["X-Auth-Subject: alice".to_owned()],
            b"ok".to_vec(),
        );
    }
    (401, Vec::new(), b"wrong password".to_vec())
}

struct Login {
    backend: EchoUpstream,
    gateway: TestGateway,
    _upstream: EchoUpstream,
}

/// Two free failures per pair, four per address, then 30 s, doubling.
fn login_gateway() -> Login {
    login_gateway_with(login_backend)
}

fn login_gateway_with(backend: crate::support::http::Responder) -> Login {
    let upstream = EchoUpstream::start();
    let backend = EchoUpstream::start_with(backend);
    let config = format!(
        "{}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\nthrottle_failures = 2\nthrottle_address_failures = 4\nthrottle_delay = \"30s\"\n",
        standard_config(upstream.addr),
        backend.addr
    );
    Login {
        gateway: TestGateway::start_with_server(&config, TRUST_LOOPBACK),
        backend,
        _upstream: upstream,
    }
}

fn log_in(login: &Login, user: &str, password: &str, address: &str) -> Response {
    post(
        login.gateway.addr,
        "/auth/login",
        &[
            "Content-Type: application/x-www-form-urlencoded",
            &from(address),
        ],
        &format!("username={user}&password={password}"),
    )
}

#[track_caller]
fn assert_throttled(response: &Response, backend: &EchoUpstream) {
    assert_refused(response, 429, "rate_limited", backend);
    let retry: u64 = (response.header("retry-after"))
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
}

#[test]
fn wrong_passwords_for_one_account_from_one_address_slow_down() {
    let login = login_gateway();
    let attacker = "198.51.100.66";
    for _ in 0..3 {
        assert_eq!(log_in(&login, "alice", "guess", attacker).status, 401);
    }
    login.backend.clear();
    // Even the right password waits: the backend is not asked.
    assert_throttled(&log_in(&login, "alice", "secret", attacker), &login.backend);
    assert_throttled(&log_in(&login, "Alice", "guess", attacker), &login.backend);
}

#[test]
fn a_spray_over_many_accounts_from_one_address_slows_down() {
    let login = login_gateway();
    let sprayer = "203.0.113.99";
    for user in ["ann", "ben", "cat", "dan", "eve"] {
        assert_eq!(log_in(&login, user, "Summer2026!", sprayer).status, 401);
    }
    login.backend.clear();
    assert_throttled(
        &log_in(&login, "fay", "Summer2026!", sprayer),
        &login.backend,
    );
}

#[test]
fn the_real_user_from_their_own_address_is_not_locked_out_by_others() {
    let login = login_gateway();
    for _ in 0..6 {
        log_in(&login, "alice", "guess", "198.51.100.66");
    }
    let home = log_in(&login, "alice", "secret", "192.0.2.10");
    assert_eq!(home.status, 200, "{}", home.text());
    assert!(home.json()["access_token"].is_string());
}

#[test]
fn a_success_clears_the_pair() {
    let login = login_gateway();
    let address = "192.0.2.20";
    for _ in 0..2 {
        assert_eq!(log_in(&login, "alice", "typo", address).status, 401);
    }
    assert_eq!(log_in(&login, "alice", "secret", address).status, 200);
    // Without the reset, a third failure would start the delay.
    assert_eq!(log_in(&login, "alice", "typo", address).status, 401);
    assert_eq!(log_in(&login, "alice", "typo", address).status, 401);
    let started = Instant::now();
    let third = log_in(&login, "alice", "secret", address);
    assert_eq!(third.status, 200, "{}", third.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered, not held"
    );
}

/// `file:line:col` of `value` on the first line of `text` that holds `line`.
fn position_of(text: &str, line: &str, value: &str) -> String {
    let (line, column) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(line))
        .and_then(|(i, l)| l.find(value).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("{line} not in the config"));
    format!("rl.toml:{line}:{column}")
}

#[test]
fn check_points_at_an_unknown_policy_a_bad_rate_and_bad_throttle_values() {
    let upstream = EchoUpstream::start();
    let limits = r#"
[[rate_limits]]
name = "api"
rate = "100/fortnight"

[[rate_limits]]
name = "api2"
rate = "5/s"
burst = 0

[[routes]]
path = "/x"
upstream = "echo"
rate_limit = "nope"

[[upstreams]]
name = "login"
targets = ["127.0.0.1:9"]

[login]
upstream = "login"
path = "/login"
throttle_delay = "0s"
"#;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
    let text = with_limits(upstream.addr, limits).replace("{fixtures}", fixtures);
    let error = match portcullis::config::load_str(&text, std::path::Path::new("rl.toml")) {
        Ok(_) => panic!("a bad policy must not load"),
        Err(e) => e.to_string(),
    };
    for (line, value, message) in [
        (
            "100/fortnight",
            "\"100",
            "rate \"100/fortnight\" is not COUNT/UNIT",
        ),
        ("burst = 0", "0", "burst must be at least 1"),
        ("\"nope\"", "\"nope\"", "unknown rate limit \"nope\""),
        (
            "throttle_delay",
            "\"0s\"",
            "login.throttle_delay must be at least 1s",
        ),
    ] {
        let expected = format!("{}: {message}", position_of(&text, line, value));
        assert!(error.contains(&expected), "{expected} not in:\n{error}");
    }
}

/// The backend, a little slow: attempts sent together overlap there.
fn slow_login_backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    std::thread::sleep(Duration::from_millis(300));
    login_backend(request)
}

#[test]
fn attempts_sent_in_parallel_are_counted_before_the_backend_answers() {
    let login = std::sync::Arc::new(login_gateway_with(slow_login_backend));
    let answers: Vec<u16> = (0..8)
        .map(|_| {
            let login = std::sync::Arc::clone(&login);
            std::thread::spawn(move || log_in(&login, "alice", "guess", "198.51.100.70").status)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("attempt"))
        .collect();
    let asked = login.backend.count();
    // Two free failures and the one that starts the delay; the checks of
    // attempts arriving within the same microsecond may add one more.
    assert!(asked <= 4, "{asked} of 8 reached the backend: {answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == 429).count(), 8 - asked);
}

/// The backend itself failing says nothing about the credentials.
fn failing_login_backend(_: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    (500, Vec::new(), b"down".to_vec())
}

#[test]
fn a_failing_login_backend_counts_no_failure() {
    let login = login_gateway_with(failing_login_backend);
    for _ in 0..6 {
        let answer = log_in(&login, "alice", "secret", "192.0.2.30");
        assert_eq!(answer.status, 500, "passed through, never throttled");
    }
}

#[test]
fn a_store_that_stops_answering_is_unavailable_within_half_a_second() {
    let redis = RedisServer::start();
    let upstream = EchoUpstream::start();
    let limits = "[[rate_limits]]\nname = \"fleet\"\nrate = \"5/h\"\n\n[[routes]]\npath = \"/fleet\"\nupstream = \"echo\"\nauth = \"none\"\nrate_limit = \"fleet\"\n";
    let config = format!(
        "{}\n[store]\nurl = \"{}\"\n",
        with_limits(upstream.addr, limits),
        redis.url()
    );
    let gateway = TestGateway::start(&config);
    assert_eq!(get(gateway.addr, "/fleet", &[]).status, 200);
    redis.pause();
    let started = Instant::now();
    let answer = get(gateway.addr, "/fleet", &[]);
    let took = started.elapsed();
    redis.resume();
    assert_eq!(
        answer.status, 200,
        "decided here, per the default local fallback"
    );
    assert!(took < Duration::from_secs(3), "held for {took:?}");
}

/// Without `trusted_proxies`, a forged `X-Forwarded-For` names no client:
/// a caller cannot step around a client limit or the login throttle by
/// writing a new address into each request.
#[test]
fn a_forged_forwarded_for_does_not_evade_a_limit_or_the_throttle() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&with_limits(upstream.addr, PER_CLIENT));
    for i in 1..=2 {
        let forged = from(&format!("203.0.113.{i}"));
        assert_eq!(get(gateway.addr, "/limited", &[&forged]).status, 200);
    }
    upstream.clear();
    let forged = get(gateway.addr, "/limited", &[&from("203.0.113.3")]);
    assert_limited(&forged, &upstream, "\"per-client\";q=2;w=60");

    let backend = EchoUpstream::start_with(login_backend);
    let config = format!(
        "{}\n[[upstreams]]\nname = \"login\"\ntargets = [\"{}\"]\n\n[login]\nupstream = \"login\"\npath = \"/login\"\nthrottle_failures = 2\nthrottle_delay = \"30s\"\n",
        standard_config(upstream.addr),
        backend.addr
    );
    let login = Login {
        gateway: TestGateway::start(&config),
        backend,
        _upstream: EchoUpstream::start(),
    };
    for i in 1..=3 {
        let answer = log_in(&login, "alice", "guess", &format!("198.51.100.{i}"));
        assert_eq!(answer.status, 401);
    }
    login.backend.clear();
    assert_throttled(
        &log_in(&login, "alice", "guess", "198.51.100.4"),
        &login.backend,
    );
}

/// An IPv6 host is usually given a /64: a client limit counts the block,
/// so a new address for every request buys no fresh burst.
#[test]
fn a_client_limit_counts_an_ipv6_client_by_its_64() {
    let upstream = EchoUpstream::start();
    let gateway =
        TestGateway::start_with_server(&with_limits(upstream.addr, PER_CLIENT), TRUST_LOOPBACK);
    for host in ["2001:db8:7:1::1", "2001:db8:7:1::2"] {
        assert_eq!(get(gateway.addr, "/limited", &[&from(host)]).status, 200);
    }
    upstream.clear();
    assert_limited(
        &get(gateway.addr, "/limited", &[&from("2001:db8:7:1:ffff::3")]),
        &upstream,
        "\"per-client\";q=2;w=60",
    );
    assert_eq!(
        get(gateway.addr, "/limited", &[&from("2001:db8:7:2::1")]).status,
        200,
        "another /64 is another client"
    );
}

/// Two routes may carry one name (it defaults to the path): each still
/// has its own count, told apart by host and path.
#[test]
fn routes_sharing_a_name_keep_counts_of_their_own() {
    let upstream = EchoUpstream::start();
    let limits = r#"
[[rate_limits]]
name = "whole-route"
rate = "1/h"
key = "route"

[[routes]]
name = "twin"
path = "/one"
upstream = "echo"
auth = "none"
rate_limit = "whole-route"

[[routes]]
name = "twin"
path = "/two"
upstream = "echo"
auth = "none"
rate_limit = "whole-route"
"#;
    let gateway = TestGateway::start(&with_limits(upstream.addr, limits));
    assert_eq!(get(gateway.addr, "/one", &[]).status, 200);
    assert_eq!(get(gateway.addr, "/two", &[]).status, 200, "its own count");
    upstream.clear();
    assert_limited(
        &get(gateway.addr, "/one", &[]),
        &upstream,
        "\"whole-route\";q=1;w=3600",
    );
}

/// Many form logins answer a wrong password with a redirect back to the
/// form: such a refusal counts like a 401.
fn redirecting_login_backend(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    let (status, headers, body) = login_backend(request);
    if status == 200 {
        return (status, headers, body);
    }
    (303, vec!["Location: /login?error=1".to_owned()], Vec::new())
}

#[test]
fn a_login_backend_that_redirects_on_failure_is_throttled_too() {
    let login = login_gateway_with(redirecting_login_backend);
    let attacker = "198.51.100.77";
    for _ in 0..3 {
        assert_eq!(log_in(&login, "alice", "guess", attacker).status, 303);
    }
    login.backend.clear();
    assert_throttled(&log_in(&login, "alice", "guess", attacker), &login.backend);
}

/// Backends differ on which of two fields of one name they read: a body
/// naming the user twice could keep the count under a decoy while the
/// backend checks the victim, so it is refused before the backend.
#[test]
fn a_login_naming_the_user_twice_is_refused() {
    let login = login_gateway();
    let answer = post(
        login.gateway.addr,
        "/auth/login",
        &[
            "Content-Type: application/x-www-form-urlencoded",
            &from("198.51.100.78"),
        ],
        "username=alice&username=decoy1&password=guess",
    );
    assert_refused(&answer, 400, "invalid_request", &login.backend);
}
