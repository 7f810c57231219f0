//! One contract, every backend: the same assertions against a SQLite file,
//! a real redis-server, a Sentinel-managed primary with a replica (every
//! durable write confirmed by it) and a three-primary Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use portcullis::clock::unix_now;
use portcullis::store::{
    self, Batch, Change, Cursor, Retention, RotateOutcome, Rotation, SessionRecord, Store,
    StoreLocation,
};

use crate::support::redis::{RedisCluster, RedisServer, SharedSentinel};

const RETENTION: Retention = Retention {
    after_expiry: Duration::from_secs(30),
    log_entries: 100,
};

struct Backend {
    store: Arc<dyn Store>,
    redis: Option<RedisServer>,
    /// On the shared cluster: this test's key prefix.
    cluster_prefix: Option<String>,
    /// On the shared Sentinel deployment: this test's key prefix.
    sentinel_prefix: Option<String>,
    _dir: tempfile::TempDir,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = StoreLocation::Sqlite(dir.path().join("contract.db"));
    Backend {
        store: store::open(&location, RETENTION)
            .await
            .expect("open sqlite"),
        redis: None,
        cluster_prefix: None,
        sentinel_prefix: None,
        _dir: dir,
    }
}

async fn redis() -> Backend {
    let server = RedisServer::start();
    let location = StoreLocation::Redis(server.url());
    let store = store::open(&location, RETENTION).await.expect("open redis");
    Backend {
        store,
        redis: Some(server),
        cluster_prefix: None,
        sentinel_prefix: None,
        _dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// The shared Sentinel deployment, under a key prefix of this test's own.
async fn sentinel() -> Backend {
    let shared = tokio::task::spawn_blocking(SharedSentinel::get)
        .await
        .expect("sentinel");
    let prefix = RedisCluster::fresh_prefix();
    let location = StoreLocation::Sentinel(shared.sentinels.url());
    let options = store::RedisOptions {
        key_prefix: Some(prefix.clone()),
        min_replicas: 1,
        replica_timeout: Duration::from_secs(5),
    };
    let store = store::open_with(&location, RETENTION, options)
        .await
        .expect("open sentinel");
    Backend {
        store,
        redis: None,
        cluster_prefix: None,
        sentinel_prefix: Some(prefix),
        _dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// The shared cluster, under a key prefix of this test's own.
async fn cluster() -> Backend {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .expect("cluster");
    let prefix = RedisCluster::fresh_prefix();
    let location = StoreLocation::Cluster(cluster.url());
    let options = store::RedisOptions {
        key_prefix: Some(prefix.clone()),
        ..Default::default()
    };
    let store = store::open_with(&location, RETENTION, options)
        .await
        .expect("open cluster");
    Backend {
        store,
        redis: None,
        cluster_prefix: Some(prefix),
        sentinel_prefix: None,
        _dir: tempfile::tempdir().expect("tempdir"),
    }
}

/// Runs each contract function against both backends as separate tests.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { super::$name(super::sqlite().await).await } )* }
        mod on_redis { $( #[tokio::test] async fn $name() { super::$name(super::redis().await).await } )* }
        mod on_cluster { $( #[tokio::test] async fn $name() { super::$name(super::cluster().await).await } )* }
        mod on_sentinel { $( #[tokio::test] async fn $name() { super::$name(super::sentinel().await).await } )* }
    };
}

contract!(
    unknown_user_has_defaults,
    bump_increments_version_and_sets_cut_off,
    disable_and_enable,
    revoked_tokens_are_listed_until_expiry,
    change_log_is_ordered_and_resumable,
    a_waiting_reader_gets_a_change_written_meanwhile,
    reader_behind_a_trimmed_log_is_told_to_resync,
    a_position_from_the_other_backend_is_behind,
    active_sessions_are_counted,
    a_refresh_that_read_the_clock_before_a_rotation_is_no_replay_without_grace,
    a_reauthentication_sets_auth_time_and_leaves_no_replay,
    a_bump_keeping_one_session_moves_only_that_active_session_of_the_user,
    api_keys_are_kept_by_hash_logged_revoked_once_and_their_uses_recorded,
);

fn session(sid: &str, expires_at: u64) -> SessionRecord {
    crate::support::session_record("kate", sid, expires_at)
}

/// Two concurrent refreshes of one token: the loser read the clock before
/// the winner rotated, so the rotation lies in its future. With no grace
/// that is reuse (the family dies), never a replay of the winner's pair —
/// RFC 9700 §4.14.2. A negative "time since rotation" once counted as
/// inside a grace of zero on Redis.
async fn a_refresh_that_read_the_clock_before_a_rotation_is_no_replay_without_grace(
    backend: Backend,
) {
    let store = Arc::clone(&backend.store);
    let now = unix_now();
    store
        .create_session(&session("race", now + 3600))
        .await
        .expect("create");
    let rotation = |new_hash: &str, now_ms: u64| Rotation {
        sid: "race".into(),
        presented_hash: "hash-race".into(),
        new_hash: new_hash.into(),
        now,
        now_ms,
        grace_ms: 0,
        sealed_pair: b"sealed".to_vec(),
        revoke_until: now + 300,
        auth_time: None,
    };
    let winner_clock = now * 1000 + 500;
    assert_eq!(
        store
            .rotate(&rotation("hash-winner", winner_clock))
            .await
            .expect("rotate"),
        RotateOutcome::Rotated
    );
    assert_eq!(
        store
            .rotate(&rotation("hash-loser", winner_clock - 3))
            .await
            .expect("rotate"),
        RotateOutcome::Reused
    );
}

/// A re-authentication (step-up) rotates with the session's new
/// `auth_time` and no sealed pair: the replaced token presented again,
/// even within the grace period, is reuse. A plain rotation keeps the
/// `auth_time` the session had.
async fn a_reauthentication_sets_auth_time_and_leaves_no_replay(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let now = unix_now();
    let mut record = session("step", now + 3600);
    record.auth_time = now - 100;
    store.create_session(&record).await.expect("create");
    let rotation = |presented: &str, new_hash: &str, sealed: &[u8], auth_time| Rotation {
        sid: "step".into(),
        presented_hash: presented.into(),
        new_hash: new_hash.into(),
        now,
        now_ms: now * 1000,
        grace_ms: 60_000,
        sealed_pair: sealed.to_vec(),
        revoke_until: now + 300,
        auth_time,
    };
    let auth_time = |store: Arc<dyn Store>| async move {
        let session = store.session("step").await.expect("read");
        session.expect("session").auth_time
    };
    let plain = rotation("hash-step", "hash-2", b"sealed", None);
    assert_eq!(
        store.rotate(&plain).await.expect("rotate"),
        RotateOutcome::Rotated
    );
    assert_eq!(auth_time(Arc::clone(&store)).await, now - 100, "kept");
    let step_up = rotation("hash-2", "hash-3", b"", Some(now));
    assert_eq!(
        store.rotate(&step_up).await.expect("rotate"),
        RotateOutcome::Rotated
    );
    assert_eq!(auth_time(Arc::clone(&store)).await, now, "renewed");
    let again = rotation("hash-2", "hash-4", b"sealed", None);
    assert_eq!(
        store.rotate(&again).await.expect("rotate"),
        RotateOutcome::Reused
    );
}

/// A session written before sessions had `auth_time` reads it as its
/// `created`.
#[tokio::test]
async fn a_redis_session_without_auth_time_reads_it_as_created() {
    let backend = redis().await;
    let now = unix_now();
    let mut record = session("legacy", now + 3600);
    record.created = now - 50;
    record.auth_time = now;
    backend.store.create_session(&record).await.expect("create");
    let redis = backend.redis.as_ref().expect("redis");
    let _: i64 = ::redis::cmd("HDEL")
        .arg(crate::support::redis::key("session:legacy"))
        .arg("auth_time")
        .query(&mut redis.connection())
        .expect("hdel");
    let read = backend.store.session("legacy").await.expect("read");
    assert_eq!(read.expect("session").auth_time, now - 50);
}

async fn active_sessions_are_counted(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let now = unix_now();
    for sid in ["s1", "s2", "s3"] {
        store
            .create_session(&session(sid, now + 3600))
            .await
            .expect("create");
    }
    store
        .create_session(&session("old", now - 10))
        .await
        .expect("create");
    assert_eq!(
        store.active_sessions(now).await.expect("count"),
        3,
        "the expired one is not counted"
    );
    store.end_session("s1", now + 300).await.expect("end");
    assert_eq!(store.active_sessions(now).await.expect("count"), 2);
    assert!(store
        .session_by_refresh("hash-s2")
        .await
        .expect("lookup")
        .is_some());
}

async fn changes_after(store: &dyn Store, cursor: Cursor) -> (Vec<Change>, Cursor) {
    match store
        .changes_since(cursor, Duration::ZERO, 1000)
        .await
        .expect("read log")
    {
        Batch::Changes { changes, cursor } => (changes, cursor),
        other => panic!("unexpectedly told to resync: {other:?}"),
    }
}

async fn unknown_user_has_defaults(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let user = store.user("nobody").await.expect("user");
    assert_eq!(
        (user.version, user.disabled, user.not_before),
        (0, false, 0)
    );
}

async fn bump_increments_version_and_sets_cut_off(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let now = unix_now();
    let first = store.bump_user("alice", now).await.expect("bump");
    let second = store.bump_user("alice", now + 5).await.expect("bump");
    assert_eq!((first.version, first.not_before), (1, now));
    assert_eq!((second.version, second.not_before), (2, now + 5));
    assert!(second.revision > first.revision);
    assert_eq!(store.user("alice").await.expect("user"), second);
    assert_eq!(
        store.user("bob").await.expect("user").version,
        0,
        "other users untouched"
    );
}

async fn disable_and_enable(backend: Backend) {
    let store = Arc::clone(&backend.store);
    store.bump_user("carol", 100).await.expect("bump");
    let disabled = store.set_disabled("carol", true).await.expect("disable");
    assert!(disabled.disabled);
    assert_eq!(disabled.version, 1, "disabling keeps the version");
    let enabled = store.set_disabled("carol", false).await.expect("enable");
    assert!(!enabled.disabled);
    assert!(!store.user("carol").await.expect("user").disabled);
}

async fn revoked_tokens_are_listed_until_expiry(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let now = unix_now();
    store.revoke_token("live", now + 300).await.expect("revoke");
    store
        .revoke_token("in-leeway", now - 10)
        .await
        .expect("revoke");
    store
        .revoke_token("long-gone", now - 3600)
        .await
        .expect("revoke");
    let mut listed: Vec<String> = store
        .revoked_tokens(now)
        .await
        .expect("list")
        .into_iter()
        .map(|(j, _)| j)
        .collect();
    listed.sort();
    assert_eq!(listed, ["in-leeway", "live"]);
    store.purge_expired(now).await.expect("purge");
    let mut after: Vec<String> = store
        .revoked_tokens(0)
        .await
        .expect("list")
        .into_iter()
        .map(|(j, _)| j)
        .collect();
    after.sort();
    assert_eq!(
        after,
        ["in-leeway", "live"],
        "purge removes only what expired"
    );
}

async fn change_log_is_ordered_and_resumable(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let start = store.head().await.expect("head");
    store
        .revoke_token("j1", unix_now() + 60)
        .await
        .expect("revoke");
    let record = store.bump_user("dave", 7).await.expect("bump");
    store
        .revoke_token("j2", unix_now() + 60)
        .await
        .expect("revoke");
    let (changes, cursor) = changes_after(&*store, start).await;
    assert_eq!(changes.len(), 3);
    assert!(matches!(&changes[0], Change::TokenRevoked { jti, .. } if jti == "j1"));
    assert_eq!(
        changes[1],
        Change::User {
            sub: "dave".into(),
            record
        }
    );
    assert!(matches!(&changes[2], Change::TokenRevoked { jti, .. } if jti == "j2"));
    assert_eq!(cursor, store.head().await.expect("head"));
    let (none, same) = changes_after(&*store, cursor).await;
    assert!(none.is_empty());
    assert_eq!(same, cursor);
}

/// A change-log position means something only to the backend that gave
/// it (a SQLite row, a Redis stream id and entry count): one from the
/// other backend is behind, so the follower resyncs rather than read from
/// a position that names nothing here.
async fn a_position_from_the_other_backend_is_behind(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let foreign = match store.head().await.expect("head") {
        Cursor::Row { seq } => Cursor::Stream {
            ms: seq,
            seq: 0,
            added: seq,
        },
        Cursor::Stream { added, .. } => Cursor::Row { seq: added },
    };
    let batch = store
        .changes_since(foreign, Duration::ZERO, 1000)
        .await
        .expect("read log");
    assert!(matches!(batch, Batch::Behind), "{batch:?}");
    assert_eq!(foreign.entries_until(&store.head().await.expect("head")), 0);
}

async fn a_waiting_reader_gets_a_change_written_meanwhile(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let start = store.head().await.expect("head");
    let writer = Arc::clone(&store);
    let write = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer
            .revoke_token("late", unix_now() + 60)
            .await
            .expect("revoke");
    });
    // One read that may wait 10 s: it must come back with the change as
    // soon as it is written, not when the wait runs out.
    let started = std::time::Instant::now();
    let batch = store
        .changes_since(start, Duration::from_secs(10), 10)
        .await
        .expect("read");
    let waited = started.elapsed();
    write.await.expect("writer");
    assert!(
        matches!(&batch, Batch::Changes { changes, .. } if matches!(changes.as_slice(), [Change::TokenRevoked { jti, .. }] if jti == "late")),
        "{batch:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the reader was not woken by the write ({waited:?})"
    );
}

async fn reader_behind_a_trimmed_log_is_told_to_resync(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let start = store.head().await.expect("head");
    for i in 0..150 {
        store
            .revoke_token(&format!("bulk-{i}"), unix_now() + 600)
            .await
            .expect("revoke");
    }
    trim(&backend).await;
    let batch = store
        .changes_since(start, Duration::ZERO, 1000)
        .await
        .expect("read");
    assert!(
        matches!(batch, Batch::Behind),
        "a reader at the start must resync, got {batch:?}"
    );
    let head = store.head().await.expect("head");
    assert!(matches!(
        store
            .changes_since(head, Duration::ZERO, 10)
            .await
            .expect("read"),
        Batch::Changes { .. }
    ));
    assert_eq!(
        store
            .revoked_tokens(unix_now())
            .await
            .expect("snapshot")
            .len(),
        150,
        "the snapshot is whole"
    );
}

/// Trims the log past its beginning the way each backend does in service:
/// SQLite by purging beyond `log_entries`, Redis by `XTRIM` (exact here,
/// where `MAXLEN ~` in service trims in whole nodes).
async fn trim(backend: &Backend) {
    backend
        .store
        .purge_expired(unix_now())
        .await
        .expect("purge");
    let mut xtrim = ::redis::cmd("XTRIM");
    if let Some(redis) = &backend.redis {
        xtrim.arg(crate::support::redis::key("changes"));
        let _: i64 = xtrim
            .arg("MAXLEN")
            .arg(0)
            .query(&mut redis.connection())
            .expect("xtrim");
    }
    if let Some(prefix) = &backend.sentinel_prefix {
        let mut xtrim = ::redis::cmd("XTRIM");
        xtrim.arg(format!(
            "{}:changes",
            store::redis_link::key_base(Some(prefix), false)
        ));
        let mut conn = SharedSentinel::get().primary.connection();
        let _: i64 = xtrim.arg("MAXLEN").arg(0).query(&mut conn).expect("xtrim");
    }
    if let Some(prefix) = &backend.cluster_prefix {
        xtrim.arg(format!(
            "{}:changes",
            store::redis_link::key_base(Some(prefix), true)
        ));
        let mut conn = RedisCluster::shared().connection();
        let _: i64 = xtrim.arg("MAXLEN").arg(0).query(&mut conn).expect("xtrim");
    }
}

/// Session control's `end-other-sessions`: the bump and the kept session's
/// new version land together, with the bump's change-log entry; a session
/// that is another user's, or no longer active, is not kept.
async fn a_bump_keeping_one_session_moves_only_that_active_session_of_the_user(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let now = unix_now();
    for sid in ["kept", "other", "ended"] {
        store
            .create_session(&session(sid, now + 3600))
            .await
            .expect("session");
    }
    store.end_session("ended", now + 60).await.expect("end");
    let before = store.head().await.expect("head");
    let (record, kept) = store
        .bump_user_keeping("kate", "kept", now)
        .await
        .expect("bump");
    assert!(kept);
    assert_eq!((record.version, record.not_before), (1, now));
    assert_eq!(store.user("kate").await.expect("user"), record);
    let version = |sid: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .session(sid)
                .await
                .expect("read")
                .expect("session")
                .version
        }
    };
    assert_eq!(version("kept").await, 1);
    assert_eq!(version("other").await, 0, "the others stay behind the bump");
    let (changes, _) = changes_after(store.as_ref(), before).await;
    assert!(
        changes.iter().any(
            |c| matches!(c, Change::User { sub, record: r } if sub == "kate" && r.version == 1)
        ),
        "{changes:?}"
    );

    let (_, kept) = store
        .bump_user_keeping("kate", "ended", now)
        .await
        .expect("bump");
    assert!(!kept, "an ended session is not revived");
    assert_eq!(version("ended").await, 0);
    let (_, kept) = store
        .bump_user_keeping("mallory", "kept", now)
        .await
        .expect("bump");
    assert!(!kept, "another user's session is not theirs to keep");
    assert_eq!(version("kept").await, 1);
}

/// API keys: a new key is listed and in the change log (whole record, so
/// a follower needs no read), a taken id is refused, a revocation keeps
/// its first time and is logged, uses keep the latest time, and an
/// unknown id is nobody's.
async fn api_keys_are_kept_by_hash_logged_revoked_once_and_their_uses_recorded(backend: Backend) {
    let store = Arc::clone(&backend.store);
    let now = unix_now();
    let record = store::ApiKeyRecord {
        id: "0123456789abcdef".into(),
        hash: "ab".repeat(32),
        sub: "svc-backup".into(),
        roles: vec!["backup".into()],
        scope: Some("files:read".into()),
        label: "nightly".into(),
        created: now,
        expires: Some(now + 3600),
        revoked: None,
        last_used: None,
    };
    let start = store.head().await.expect("head");
    store.create_api_key(&record).await.expect("create");
    assert!(store.create_api_key(&record).await.is_err(), "a taken id");
    assert_eq!(
        store.api_keys().await.expect("list"),
        std::slice::from_ref(&record)
    );
    let revoked = store
        .revoke_api_key(&record.id, now + 5)
        .await
        .expect("revoke");
    assert_eq!(revoked.as_ref().and_then(|r| r.revoked), Some(now + 5));
    let again = store
        .revoke_api_key(&record.id, now + 9)
        .await
        .expect("again");
    assert_eq!(
        again.and_then(|r| r.revoked),
        Some(now + 5),
        "kept at the first"
    );
    assert_eq!(
        store
            .revoke_api_key("fedcba9876543210", now)
            .await
            .expect("unknown"),
        None
    );
    let Batch::Changes { changes, .. } = store
        .changes_since(start, Duration::ZERO, 100)
        .await
        .expect("changes")
    else {
        panic!("the log continues from its head");
    };
    let logged: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            Change::ApiKey(logged) => Some(logged.revoked),
            _ => None,
        })
        .collect();
    assert_eq!(logged.first(), Some(&None), "the creation");
    assert!(
        logged.contains(&Some(now + 5)),
        "the revocation: {logged:?}"
    );
    let id = record.id.clone();
    store
        .record_api_key_uses(&[(id.clone(), now + 50)])
        .await
        .expect("use");
    store
        .record_api_key_uses(&[(id, now + 40)])
        .await
        .expect("older use");
    let listed = store.api_keys().await.expect("list");
    assert_eq!(listed[0].last_used, Some(now + 50));
    assert_eq!(listed[0].revoked, Some(now + 5));
}
