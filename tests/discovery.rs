//! Upstream targets that follow DNS: names resolved again while the
//! gateway runs, without a reload.
//!
//! A name cannot be made to resolve differently over time on a test
//! machine without owning its DNS, so the moving-backend tests give the
//! gateway a resolver whose table they change; everything else (discovery,
//! pools, health, the proxy) is the code `serve` runs with the system
//! resolver, which the last tests use with real names.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use portcullis::config::runtime::discovery::Resolve;

use crate::support::gateway::config_with_routes;
use crate::support::http::{echo_ok, Recorded};
use crate::support::{assert_refused, get, EchoUpstream, TestGateway};

/// A resolver whose answers the test changes; unknown names fail as
/// NXDOMAIN would.
#[derive(Default)]
struct Names {
    table: Mutex<HashMap<String, Vec<IpAddr>>>,
    lookups: AtomicUsize,
}

impl Names {
    fn set(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|ip| ip.parse().expect("ip")).collect();
        self.table
            .lock()
            .expect("lock")
            .insert(name.to_owned(), ips);
    }

    fn forget(&self, name: &str) {
        self.table.lock().expect("lock").remove(name);
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Resolve for Names {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let table = self.table.lock().expect("lock");
        match table.get(host) {
            Some(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such name")),
        }
    }
}

/// Waits (bounded, so a broken gateway fails instead of hanging) until
/// `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// One upstream `echo` whose only target is `target`, re-resolved every
/// second, and a public route to it.
fn config_for(target: &str, upstream_extra: &str) -> String {
    crate::support::gateway::config_with_target(
        target,
        &format!(
            "resolve_interval = \"1s\"\n{upstream_extra}\n\n[[routes]]\npath = \"/\"\nupstream = \"echo\"\nauth = \"none\"\n"
        ),
    )
}

/// The old address holds `/slow` until the test lets it go.
static SLOW_ARRIVED: AtomicBool = AtomicBool::new(false);
static SLOW_RELEASED: AtomicBool = AtomicBool::new(false);

/// Lets a held `/slow` go however the test ends, so no thread is left
/// waiting on a failed test.
struct ReleaseSlow;

impl Drop for ReleaseSlow {
    fn drop(&mut self) {
        SLOW_RELEASED.store(true, Ordering::SeqCst);
    }
}

fn holds_slow(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    if request.target == "/slow" {
        SLOW_ARRIVED.store(true, Ordering::SeqCst);
        while !SLOW_RELEASED.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
        return (200, vec![], b"old finished".to_vec());
    }
    echo_ok(request)
}

#[test]
fn a_backend_that_moves_gets_traffic_at_its_new_address_without_a_reload_and_the_old_one_drains() {
    let _release = ReleaseSlow;
    let old = EchoUpstream::start_with(holds_slow);
    // The same port on another loopback address: the name's new address.
    let moved = SocketAddr::new("127.0.0.2".parse().expect("ip"), old.addr.port());
    let new = EchoUpstream::start_at(moved, echo_ok);
    let names = Arc::new(Names::default());
    names.set("backend.test", &["127.0.0.1"]);
    let port = old.addr.port();
    // An upstream name of its own: the metrics registry is the process's.
    let config = config_for(&format!("backend.test:{port}"), "").replace("\"echo\"", "\"moving\"");
    let gateway = TestGateway::start_resolving(&config, Arc::clone(&names) as Arc<dyn Resolve>);
    assert_eq!(get(gateway.addr, "/before", &[]).status, 200);
    assert_eq!(old.count(), 1, "served at the first address");
    let series = |ip: &str| {
        format!(
            "portcullis_upstream_target_healthy{{target=\"{ip}:{port}\",upstream=\"moving\"}} 1"
        )
    };
    let metrics = get(gateway.admin, "/metrics", &[]).text();
    assert!(metrics.contains(&series("127.0.0.1")), "{metrics}");

    // A request in flight at the old address when the name moves.
    let addr = gateway.addr;
    let in_flight = thread::spawn(move || get(addr, "/slow", &[]));
    eventually("/slow reached the old address", || {
        SLOW_ARRIVED.load(Ordering::SeqCst)
    });

    names.set("backend.test", &["127.0.0.2"]);
    eventually("a request reached the new address", || {
        get(gateway.addr, "/probe", &[]).status == 200 && new.count() > 0
    });
    // From now on every request goes to the new address; the old one gets
    // no new request (its count only grows when /slow finishes).
    let old_before = old.count();
    for i in 0..6 {
        let response = get(gateway.addr, &format!("/after/{i}"), &[]);
        assert_eq!(response.status, 200);
    }
    assert_eq!(old.count(), old_before, "no new request at the old address");
    let after: Vec<String> = new
        .requests()
        .into_iter()
        .map(|r| r.target)
        .filter(|t| t.starts_with("/after/"))
        .collect();
    assert_eq!(after.len(), 6, "{after:?}");

    // The gone address is no longer a target in the metrics either (an
    // alert on unhealthy targets would otherwise watch it forever).
    let metrics = get(gateway.admin, "/metrics", &[]).text();
    assert!(metrics.contains(&series("127.0.0.2")), "{metrics}");
    assert!(!metrics.contains(&format!("127.0.0.1:{port}")), "{metrics}");

    // The request already sent to the old address finishes there.
    SLOW_RELEASED.store(true, Ordering::SeqCst);
    let slow = in_flight.join().expect("in-flight request");
    assert_eq!(slow.status, 200);
    assert_eq!(slow.text(), "old finished");
    assert!(old.requests().iter().any(|r| r.target == "/slow"));
}

#[test]
fn a_name_that_does_not_resolve_yet_is_refused_503_until_it_does() {
    let upstream = EchoUpstream::start();
    let names = Arc::new(Names::default());
    let port = upstream.addr.port();
    // An upstream name of its own: the metrics registry is the process's.
    let config = config_for(&format!("later.test:{port}"), "").replace("\"echo\"", "\"later\"");
    let gateway = TestGateway::start_resolving(&config, Arc::clone(&names) as Arc<dyn Resolve>);
    // The gateway started; the upstream is unhealthy meanwhile, and the
    // metrics say so (an alert on unhealthy targets fires).
    let refused = get(gateway.addr, "/x", &[]);
    assert_refused(&refused, 503, "no_healthy_upstream", &upstream);
    let ready = get(gateway.admin, "/readyz", &[]);
    assert_eq!(ready.status, 200, "the gateway itself is ready");
    let series = |target: &str, value: u8| {
        format!(
            "portcullis_upstream_target_healthy{{target=\"{target}\",upstream=\"later\"}} {value}"
        )
    };
    let unresolved = series(&format!("later.test:{port}"), 0);
    let metrics = get(gateway.admin, "/metrics", &[]).text();
    assert!(metrics.contains(&unresolved), "{metrics}");

    names.set("later.test", &["127.0.0.1"]);
    eventually("the name is used once it resolves", || {
        get(gateway.addr, "/x", &[]).status == 200
    });
    assert!(upstream.count() > 0);
    let metrics = get(gateway.admin, "/metrics", &[]).text();
    assert!(
        metrics.contains(&series(&format!("127.0.0.1:{port}"), 1)),
        "{metrics}"
    );
    assert!(!metrics.contains("later.test"), "{metrics}");
}

#[test]
fn a_name_that_stops_resolving_keeps_its_last_addresses() {
    let upstream = EchoUpstream::start();
    let names = Arc::new(Names::default());
    names.set("flaky.test", &["127.0.0.1"]);
    let gateway = TestGateway::start_resolving(
        &config_for(&format!("flaky.test:{}", upstream.addr.port()), ""),
        Arc::clone(&names) as Arc<dyn Resolve>,
    );
    assert_eq!(get(gateway.addr, "/x", &[]).status, 200);
    names.forget("flaky.test");
    // Two failed lookups later, the pool still has the address.
    let failed_from = names.lookups();
    eventually("the gateway looked the name up again twice", || {
        names.lookups() >= failed_from + 2
    });
    assert_eq!(get(gateway.addr, "/y", &[]).status, 200);
    assert_eq!(upstream.count(), 2);
}

fn health_503(request: &Recorded) -> (u16, Vec<String>, Vec<u8>) {
    match request.target.as_str() {
        "/health" => (503, vec![], Vec::new()),
        _ => echo_ok(request),
    }
}

#[test]
fn health_checks_follow_the_resolved_targets() {
    let healthy = EchoUpstream::start();
    let moved = SocketAddr::new("127.0.0.2".parse().expect("ip"), healthy.addr.port());
    let failing = EchoUpstream::start_at(moved, health_503);
    let names = Arc::new(Names::default());
    names.set("checked.test", &["127.0.0.1"]);
    let check = r#"health_check = { path = "/health", interval = "200ms", healthy_threshold = 1, unhealthy_threshold = 1 }"#;
    let gateway = TestGateway::start_resolving(
        &config_for(&format!("checked.test:{}", healthy.addr.port()), check),
        Arc::clone(&names) as Arc<dyn Resolve>,
    );
    assert_eq!(get(gateway.addr, "/x", &[]).status, 200);

    // The name moves to a target whose check fails: the check runs on the
    // new target and leaves it out.
    names.set("checked.test", &["127.0.0.2"]);
    eventually("the new target is checked and left out", || {
        let response = get(gateway.addr, "/y", &[]);
        response.status == 503
            && response.header("x-portcullis-error") == Some("no_healthy_upstream")
    });
    assert!(failing.requests().iter().any(|r| r.target == "/health"));
    assert!(
        failing
            .requests()
            .iter()
            .all(|r| r.target == "/health" || r.target == "/y"),
        "only checks and requests sent before the check failed"
    );
}

#[test]
fn names_resolve_through_the_system_resolver() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config_for(
        &format!("localhost:{}", upstream.addr.port()),
        "",
    ));
    let response = get(gateway.addr, "/through/localhost", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.only().target, "/through/localhost");
}

#[test]
fn serve_starts_with_a_name_that_does_not_resolve_and_the_other_upstreams_work() {
    let upstream = EchoUpstream::start();
    // RFC 6761 §6.4: names under .invalid never resolve.
    let config = config_with_routes(
        upstream.addr,
        r#"
[[upstreams]]
name = "later"
targets = ["backend.invalid:8081"]

[[routes]]
path = "/later"
upstream = "later"
auth = "none"

[[routes]]
path = "/now"
upstream = "echo"
auth = "none"
"#,
    );
    let gateway = TestGateway::start(&config);
    assert_eq!(get(gateway.addr, "/now", &[]).status, 200);
    upstream.clear();
    let refused = get(gateway.addr, "/later", &[]);
    assert_refused(&refused, 503, "no_healthy_upstream", &upstream);
}

#[test]
fn a_reload_resolves_new_names_before_it_swaps() {
    let upstream = EchoUpstream::start();
    let names = Arc::new(Names::default());
    names.set("first.test", &["127.0.0.1"]);
    names.set("second.test", &["127.0.0.1"]);
    let port = upstream.addr.port();
    let gateway = TestGateway::start_resolving(
        &config_for(&format!("first.test:{port}"), ""),
        Arc::clone(&names) as Arc<dyn Resolve>,
    );
    assert_eq!(get(gateway.addr, "/x", &[]).status, 200);

    // The new pool's name is only ever resolved by the reload itself
    // (the background would wait an hour): the first request after it
    // must find the pool filled.
    let path = gateway.dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text
        .replace("first.test", "second.test")
        .replace("resolve_interval = \"1s\"", "resolve_interval = \"1h\"");
    std::fs::write(&path, text).expect("write config");
    let done = gateway.reload();
    assert_eq!(done.status, 200, "{}", done.text());
    let response = get(gateway.addr, "/after-reload", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        upstream.requests().last().map(|r| r.target.clone()),
        Some("/after-reload".to_owned())
    );
}

/// A reload while a name fails to resolve keeps the addresses the running
/// pool knew for it: the swap never empties a pool.
#[test]
fn a_reload_during_a_resolver_failure_keeps_the_last_addresses() {
    let upstream = EchoUpstream::start();
    let names = Arc::new(Names::default());
    names.set("steady.test", &["127.0.0.1"]);
    let gateway = TestGateway::start_resolving(
        &config_for(&format!("steady.test:{}", upstream.addr.port()), ""),
        Arc::clone(&names) as Arc<dyn Resolve>,
    );
    assert_eq!(get(gateway.addr, "/x", &[]).status, 200);
    names.forget("steady.test");
    let done = gateway.reload();
    assert_eq!(done.status, 200, "{}", done.text());
    let response = get(gateway.addr, "/after-reload", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.count(), 2);
}

/// The production path end to end, with a name that really moves:
/// `portcullis serve` runs in a mount namespace of its own where
/// `/etc/hosts` is a file the test rewrites (the machine's is untouched),
/// and the system resolver (`getaddrinfo`) reads it on every lookup.
#[test]
fn with_the_system_resolver_a_name_that_moves_is_followed_without_a_reload() {
    use crate::support::gateway::free_addr;
    use crate::support::tokens::fixtures_dir;
    let old = EchoUpstream::start();
    let port = old.addr.port();
    let new = EchoUpstream::start_at(
        SocketAddr::new("127.0.0.2".parse().expect("ip"), port),
        echo_ok,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.1 backend.test\n").expect("hosts");
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        "[server]\nlisten = [\"{listen}\"]\nadmin_listen = \"{admin}\"\n\
         admin_token_env = \"PORTCULLIS_TEST_UNSET_VARIABLE\"\nthreads = 1\n\n\
         [store]\nurl = \"sqlite://gateway.db\"\n{}",
        config_for(&format!("backend.test:{port}"), "")
            .replace("{fixtures}", &fixtures_dir().display().to_string())
    );
    let config_path = dir.path().join("portcullis.toml");
    std::fs::write(&config_path, config).expect("config");
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--mount", "--map-root-user", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/hosts && exec \"$2\" serve --config \"$3\"")
        .arg("sh")
        .args([
            &hosts,
            Path::new(env!("CARGO_BIN_EXE_portcullis")),
            &config_path,
        ])
        .env("RUST_LOG", "error");
    // unshare (util-linux) runs the gateway in a mount namespace of its
    // own; that needs root or user namespaces (its error is in the log).
    let mut serving = crate::support::binary::RunningBinary::spawn(command, false);
    serving.wait_listening(listen);
    assert_eq!(get(listen, "/first", &[]).status, 200);
    assert_eq!(old.only().target, "/first");

    // Rewritten in place: the bind mount follows the file, not its name.
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 backend.test\n").expect("hosts");
    eventually("a request reached the new address", || {
        get(listen, "/probe", &[]).status == 200 && new.count() > 0
    });
    let old_before = old.count();
    for _ in 0..4 {
        assert_eq!(get(listen, "/after", &[]).status, 200);
    }
    assert_eq!(old.count(), old_before, "no new request at the old address");
    assert_eq!(
        new.requests()
            .iter()
            .filter(|r| r.target == "/after")
            .count(),
        4
    );
}

#[test]
fn a_resolved_address_that_refuses_connections_is_ejected_and_the_request_retried() {
    let upstream = EchoUpstream::start();
    let names = Arc::new(Names::default());
    // Two addresses; nothing listens on the second.
    names.set("two.test", &["127.0.0.1", "127.0.0.2"]);
    let gateway = TestGateway::start_resolving(
        &config_for(&format!("two.test:{}", upstream.addr.port()), ""),
        Arc::clone(&names) as Arc<dyn Resolve>,
    );
    for i in 0..4 {
        let response = get(gateway.addr, &format!("/r/{i}"), &[]);
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(upstream.count(), 4);
}
