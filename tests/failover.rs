//! The shared store without a single point of failure: a Sentinel-managed
//! primary is killed and a replica promoted while two gateway instances
//! keep every acknowledged revocation; a write no replica confirms is not
//! reported as done.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::gateway::{standard_config, ADMIN_TOKEN};
use crate::support::redis::{RedisServer, Sentinels};
use crate::support::*;

fn admin(gateway: &TestGateway, method: &str, path: &str, body: &Value) -> Response {
    let body = body.to_string();
    send(
        gateway.admin,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn revoke(gateway: &TestGateway, claims: &Value) -> Response {
    let body = json!({"jti": claims["jti"], "exp": claims["exp"]});
    admin(gateway, "POST", "/admin/tokens/revoke", &body)
}

/// A session issued through the admin API: `(access, refresh)`.
fn issue(gateway: &TestGateway, sub: &str) -> (String, String) {
    let issued = admin(
        gateway,
        "POST",
        "/admin/sessions",
        &json!({"sub": sub, "roles": ["user"], "device": "test"}),
    );
    assert_eq!(issued.status, 200, "{}", issued.text());
    let body = issued.json();
    (
        body["access_token"].as_str().expect("access").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

fn refresh(gateway: &TestGateway, refresh_token: &str) -> Response {
    post(
        gateway.addr,
        "/auth/token",
        &["Content-Type: application/x-www-form-urlencoded"],
        &format!("grant_type=refresh_token&refresh_token={refresh_token}"),
    )
}

fn code(gateway: &TestGateway, token: &str) -> (u16, Option<String>) {
    let response = get(gateway.addr, "/orders", &[&bearer(token)]);
    let code = response.header("x-portcullis-error").map(str::to_owned);
    (response.status, code)
}

fn config(upstream: std::net::SocketAddr, url: &str, store: &str) -> String {
    format!(
        "{}\n[sessions]\nreuse_grace = \"60s\"\n\n[store]\nurl = \"{url}\"\nmax_staleness = \"1s\"\n{store}\n",
        standard_config(upstream)
    )
}

/// Retries `attempt` until it returns `Some`, up to `limit`.
fn until<T>(limit: Duration, what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(done) = attempt() {
            return done;
        }
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Redis replication is asynchronous: without `WAIT`, a revocation the
/// admin API acknowledged can vanish when a replica that never received it
/// is promoted. With `min_replicas = 1` every acknowledged revocation is on
/// a replica before the 200, so it survives the primary's SIGKILL, and
/// the gateways follow the new primary without a restart.
#[test]
fn killing_the_primary_loses_no_acknowledged_revocation_and_needs_no_restart() {
    let mut primary = RedisServer::start();
    let replicas = [
        RedisServer::replica_of(&primary),
        RedisServer::replica_of(&primary),
    ];
    let sentinels = Sentinels::watch(&primary);
    let upstream = EchoUpstream::start();
    let store = "min_replicas = 1\nreplica_timeout = \"2s\"\n";
    let config = config(upstream.addr, &sentinels.url(), store);
    let (a, b) = (TestGateway::start(&config), TestGateway::start(&config));

    // Acknowledged revocations, through both instances.
    let revoked: Vec<Value> = (0..20).map(|i| claims(&format!("user{i}"))).collect();
    for (i, claims) in revoked.iter().enumerate() {
        let gateway = if i % 2 == 0 { &a } else { &b };
        let answer = revoke(gateway, claims);
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let (_, refresh_token) = issue(&a, "kate");
    let kept = sign("test-eddsa", &claims("kept"));
    assert_eq!(code(&b, &kept).0, 200);

    primary.kill();
    let killed = Instant::now();
    // The first revocation written after the kill that is acknowledged
    // marks the end of the write outage (retried as a client would).
    let late = claims("late");
    until(Duration::from_secs(60), "a revocation acknowledged", || {
        (revoke(&b, &late).status == 200).then_some(())
    });
    let writes_back = killed.elapsed();
    let promoted = sentinels.primary().expect("a primary");
    assert!(
        replicas.iter().any(|r| r.addr == promoted),
        "a replica was promoted"
    );

    // Every acknowledged revocation is enforced on both instances.
    let late_token = sign("test-eddsa", &late);
    for gateway in [&a, &b] {
        until(Duration::from_secs(30), "requests answered again", || {
            (code(gateway, &kept).0 == 200).then_some(())
        });
        for claims in &revoked {
            let token = sign("test-eddsa", claims);
            assert_eq!(
                code(gateway, &token),
                (401, Some("token_revoked".to_owned())),
                "an acknowledged revocation was lost in the failover"
            );
        }
        until(
            Duration::from_secs(5),
            "the new revocation everywhere",
            || (code(gateway, &late_token).1.as_deref() == Some("token_revoked")).then_some(()),
        );
    }
    let requests_back = killed.elapsed();

    // Refresh works again on the new primary.
    let refreshed = until(Duration::from_secs(30), "a refresh", || {
        let answer = refresh(&b, &refresh_token);
        (answer.status == 200).then_some(answer)
    });
    let new_refresh = refreshed.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    assert_eq!(refresh(&a, &new_refresh).status, 200);
    eprintln!(
        "failover: writes acknowledged again after {writes_back:?}, \
         both instances answering with every revocation after {requests_back:?}"
    );
}

/// A write no replica confirms within `replica_timeout` is not reported as
/// done: the admin API answers 503 `not_replicated` (repeat it; every admin
/// write is idempotent), a refresh 503 `auth_unavailable`, and repeating
/// the refresh once the replica is back returns the rotation's pair (the
/// reuse grace makes the retry a replay, not a reuse).
#[test]
fn a_write_no_replica_confirms_is_not_acknowledged() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let upstream = EchoUpstream::start();
    let store = "min_replicas = 1\nreplica_timeout = \"300ms\"\n";
    let gateway = TestGateway::start(&config(upstream.addr, &primary.url(), store));
    let (_, refresh_token) = issue(&gateway, "kate");
    let victim = claims("victim");

    replica.pause();
    assert_refused(&revoke(&gateway, &victim), 503, "not_replicated", &upstream);
    let bump = admin(&gateway, "POST", "/admin/users/kate/revoke", &json!({}));
    assert_refused(&bump, 503, "not_replicated", &upstream);
    let (_, rotated) = issue(&gateway, "leo");
    let answer = refresh(&gateway, &rotated);
    assert_refused(&answer, 503, "auth_unavailable", &upstream);
    replica.resume();

    // Repeated as the answers say, until the replica has caught up.
    until(
        Duration::from_secs(20),
        "the revocation acknowledged",
        || (revoke(&gateway, &victim).status == 200).then_some(()),
    );
    let token = sign("test-eddsa", &victim);
    assert_eq!(code(&gateway, &token), (401, Some("token_revoked".into())));
    // The retried refresh is the same rotation's replay, and its refresh
    // token is the session's current one.
    let retried = until(Duration::from_secs(20), "the refresh repeated", || {
        let answer = refresh(&gateway, &rotated);
        assert_ne!(
            answer.status,
            400,
            "a repeated refresh is no reuse: {}",
            answer.text()
        );
        (answer.status == 200).then_some(answer)
    });
    let next = retried.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    assert_eq!(refresh(&gateway, &next).status, 200);
    // kate's sessions died with the bump that was applied on the primary.
    assert_eq!(refresh(&gateway, &refresh_token).status, 400);
}

/// A promoted replica's change log can lack the last entries a follower
/// read from the old primary, and then carry new entries after them under
/// later ids, so a plain read from the old position would go on as if
/// nothing happened, with user records applied whose revisions the new
/// primary never had. The new replication id sends the follower to a
/// snapshot instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_resyncs_when_a_promoted_replica_lacks_entries_it_read() {
    use portcullis::store::{self, Batch, Retention, StoreLocation};

    let mut primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let sentinels = Sentinels::watch(&primary);
    let retention = Retention {
        after_expiry: Duration::from_secs(30),
        log_entries: 1000,
    };
    let location = StoreLocation::Sentinel(sentinels.url());
    let store = store::open(&location, retention).await.expect("open");
    let exp = crate::support::tokens::now() + 600;
    let start = store.head().await.expect("head");
    store.revoke_token("a", exp).await.expect("a");
    store.revoke_token("b", exp).await.expect("b");
    let synced: u64 = ::redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut primary.connection())
        .expect("wait");
    assert_eq!(synced, 1);

    // Entries the replica never gets, read by the follower.
    replica.pause();
    store.revoke_token("c", exp).await.expect("c");
    store.revoke_token("d", exp).await.expect("d");
    let read = match store
        .changes_since(start, Duration::ZERO, 100)
        .await
        .expect("read")
    {
        Batch::Changes { changes, cursor } => {
            assert_eq!(changes.len(), 4);
            cursor
        }
        other => panic!("no resync before the failover: {other:?}"),
    };

    primary.kill();
    replica.resume();
    until(Duration::from_secs(60), "the replica promoted", || {
        (sentinels.primary() == Some(replica.addr)).then_some(())
    });
    // More entries on the new primary than the follower had read.
    for jti in ["e", "f", "g"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.revoke_token(jti, exp).await.is_err() {
            assert!(Instant::now() < deadline, "writes reach the new primary");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The follower's own connection learns of the failover on its first
    // read, which fails; the follower retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    let batch = loop {
        match store.changes_since(read, Duration::ZERO, 100).await {
            Ok(batch) => break batch,
            Err(e) => assert!(
                Instant::now() < deadline,
                "reads reach the new primary: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        matches!(batch, Batch::Diverged),
        "a follower must not continue from a position the new primary never had: {batch:?}"
    );
    // So does the command connection (writes have their own): the
    // follower's resync is retried the same way.
    let deadline = Instant::now() + Duration::from_secs(30);
    let revoked = loop {
        match store.revoked_tokens(crate::support::tokens::now()).await {
            Ok(revoked) => break revoked,
            Err(e) => assert!(Instant::now() < deadline, "the snapshot: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let snapshot: Vec<String> = revoked.into_iter().map(|(jti, _)| jti).collect();
    for jti in ["a", "b", "e", "f", "g"] {
        assert!(
            snapshot.contains(&jti.to_owned()),
            "{jti} in the snapshot {snapshot:?}"
        );
    }
}

/// Options that cannot take effect are refused at load rather than
/// silently ignored: a SQLite store has no replicas to wait for and no
/// key names, and a prefix with a brace would break the hash tag that
/// keeps every key in one Cluster slot.
#[test]
fn store_options_that_cannot_take_effect_are_config_errors() {
    let upstream: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let load = |store: &str| {
        let text = format!("{}\n[store]\n{store}\n", standard_config(upstream)).replace(
            "{fixtures}",
            &crate::support::tokens::fixtures_dir().display().to_string(),
        );
        portcullis::config::load_str(&text, std::path::Path::new("store.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let sqlite = load("url = \"sqlite://x.db\"\nmin_replicas = 1\nkey_prefix = \"app\"");
    assert!(
        sqlite.contains("store.min_replicas needs a Redis store"),
        "{sqlite}"
    );
    assert!(
        sqlite.contains("store.key_prefix needs a Redis store"),
        "{sqlite}"
    );
    let brace = load("url = \"redis+cluster://127.0.0.1:7000\"\nkey_prefix = \"a}b\"");
    assert!(
        brace.contains("store.key_prefix must be printable"),
        "{brace}"
    );
    let no_master = load("url = \"redis+sentinel://127.0.0.1:26379\"");
    assert!(
        no_master.contains("master's name is missing"),
        "{no_master}"
    );
    let fine = load(
        "url = \"redis+sentinel://127.0.0.1:26379/main\"\nmin_replicas = 1\nkey_prefix = \"app\"",
    );
    assert_eq!(fine, "", "a valid Sentinel store table loads");
}

/// A gateway as its own process: the metrics registry is the process's,
/// so two instances in this test binary would share their counters.
struct Instance {
    child: std::process::Child,
    admin: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Instance {
    fn start(config: &str) -> Self {
        use crate::support::gateway::free_addr;
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, admin) = (free_addr(), free_addr());
        std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).expect("admin token");
        let fixtures = crate::support::tokens::fixtures_dir();
        let text = format!(
            "[server]\nlisten = [\"{addr}\"]\nadmin_listen = \"{admin}\"\n\
             admin_token_env = \"PORTCULLIS_TEST_UNSET_VARIABLE\"\n\
             admin_token_file = \"admin.token\"\nthreads = 1\nshutdown_grace = \"0s\"\n\n{}",
            config.replace("{fixtures}", &fixtures.display().to_string())
        );
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, text).expect("config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config", path.to_str().expect("utf-8")])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("serve");
        let instance = Self { child, admin, dir };
        until(Duration::from_secs(20), "the instance listening", || {
            std::net::TcpStream::connect(admin).ok()
        });
        instance
    }

    /// `portcullis_change_log_resyncs_total{reason}` as its `/metrics` says.
    fn resyncs(&self, reason: &str) -> u64 {
        let metrics = get(self.admin, "/metrics", &[]).text();
        let series = format!("portcullis_change_log_resyncs_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failover that loses nothing still puts each follower on another
/// primary's history: every instance resyncs and counts it once under
/// `reason="primary_changed"`, the series the `PortcullisChangeLogResyncs`
/// alert fires on. (The lag gauge's reads of the log's head, which reach
/// the new primary first, used to record its replication id for the
/// follower, which then saw no change and counted nothing.)
#[test]
fn a_clean_failover_is_counted_as_a_resync_on_every_instance() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let sentinels = Sentinels::watch(&primary);
    let upstream = EchoUpstream::start();
    let config = config(upstream.addr, &sentinels.url(), "");
    let instances = [Instance::start(&config), Instance::start(&config)];
    for instance in &instances {
        assert_eq!(instance.resyncs("primary_changed"), 0, "{}", instance.log());
    }
    // Let the lag gauge read the head a few times, as between scrapes.
    std::thread::sleep(Duration::from_millis(1500));

    primary.kill();
    until(Duration::from_secs(60), "the replica promoted", || {
        (sentinels.primary() == Some(replica.addr)).then_some(())
    });
    for instance in &instances {
        until(Duration::from_secs(30), "the failover counted", || {
            (instance.resyncs("primary_changed") == 1).then_some(())
        });
        // Nothing was lost or trimmed: the only resync is the move.
        assert_eq!(instance.resyncs("trimmed"), 0, "{}", instance.log());
    }
}

/// The configured `replica_timeout` bounds a write's answer: several
/// durable writes at once while the replica is stopped each answer
/// `not_replicated` within it (plus a margin for round trips, Redis's
/// 100 ms timer tick and a loaded machine). On one shared connection each
/// `WAIT` held up the writes queued behind it, and the sixth answer came
/// after six timeouts.
#[test]
fn a_write_no_replica_confirms_is_answered_within_replica_timeout() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let upstream = EchoUpstream::start();
    let timeout = Duration::from_millis(500);
    let store = "min_replicas = 1\nreplica_timeout = \"500ms\"\n";
    let gateway = TestGateway::start(&config(upstream.addr, &primary.url(), store));
    // The script is loaded, and the connection has a confirmed write.
    assert_eq!(revoke(&gateway, &claims("warm")).status, 200);

    replica.pause();
    let answers: Vec<(Response, Duration)> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..6)
            .map(|i| {
                let gateway = &gateway;
                scope.spawn(move || {
                    let started = Instant::now();
                    let answer = revoke(gateway, &claims(&format!("victim{i}")));
                    (answer, started.elapsed())
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect()
    });
    replica.resume();
    for (answer, took) in &answers {
        assert_refused(answer, 503, "not_replicated", &upstream);
        assert!(
            *took < timeout + Duration::from_secs(1),
            "a not_replicated answer took {took:?} with replica_timeout = {timeout:?}"
        );
    }
}
