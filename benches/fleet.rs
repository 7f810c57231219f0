//! What a fleet of gateway instances costs one Redis: one redis-server on
//! loopback, N followers (each a Redis store, a revocation view and the
//! change-log follower, as in every instance, without the proxy) and a
//! writer revoking R tokens per second. Reports, per (N, R), how long a
//! revocation took to reach the followers (from the start of the write to
//! the follower's read returning it; p50/p99/max over every follower and
//! revocation), the Redis CPU it took (from `INFO cpu`), in all and per
//! follower, and the memory each revocation added (`INFO memory`).
//!
//! Run: `cargo bench --bench fleet` (N = 10, 100, 300; R = 0 (idle), 10,
//! 100, 1000; 3 s of writes each). `FLEET_N="10 50"`, `FLEET_R="100"` and
//! `FLEET_SECONDS=5` change them.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use portcullis::store::view::OnUnavailable;
use portcullis::store::{
    self, follower, ApiKeyRecord, Batch, Change, Cursor, Retention, RevocationView, RotateOutcome,
    Rotation, SessionRecord, Store, StoreError, StoreLocation, UserRecord, ViewSettings,
};
use support::redis::RedisServer;

const RETENTION: Retention = Retention {
    after_expiry: Duration::from_secs(30),
    log_entries: 100_000,
};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list here.
    }
    let list = |name: &str, default: &[usize]| -> Vec<usize> {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_else(|| default.to_vec())
    };
    let fleets = list("FLEET_N", &[10, 100, 300]);
    let rates = list("FLEET_R", &[0, 10, 100, 1000]);
    let seconds = list("FLEET_SECONDS", &[3])[0] as u64;
    // Production-like durability: the AOF fsynced once a second.
    let redis = RedisServer::start_with(&["--appendfsync", "everysec"]);
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url = redis.url();
    let before = redis_info(&redis, "memory", &["used_memory"]);
    let revocations = 20_000;
    let start = Instant::now();
    write_at(&url, 1_000_000, Duration::ZERO, start, revocations);
    let bytes = (redis_info(&redis, "memory", &["used_memory"]) - before) / revocations as f64;
    println!("Redis memory per revocation (key with TTL, sorted-set and stream entries): {bytes:.0} bytes\n");
    println!("| followers N | revocations/s R (done) | p50 ms | p99 ms | max ms | Redis CPU % | Redis CPU % per follower | reads/s per follower | followers' process CPU % |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &fleets {
        for &r in &rates {
            let row = io.block_on(run(&redis, n, r, Duration::from_secs(seconds)));
            println!("{row}");
        }
    }
}

/// Arrival delays in microseconds, and how many reads returned.
#[derive(Default)]
struct Sink {
    delays: Vec<u64>,
    reads: u64,
}

/// The Redis store, timing every revocation it hands to the follower: the
/// writer names each token by the microsecond it started writing it.
struct Timed {
    inner: Arc<dyn Store>,
    base: Instant,
    sink: Arc<Mutex<Sink>>,
}

async fn run(redis: &RedisServer, n: usize, rate: usize, writing: Duration) -> String {
    let location = StoreLocation::Redis(redis.url());
    let base = Instant::now();
    let sink = Arc::new(Mutex::new(Sink::default()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..n {
        let inner = store::open(&location, RETENTION).await.expect("open");
        let timed = Timed {
            inner,
            base,
            sink: Arc::clone(&sink),
        };
        let settings = ViewSettings {
            max_staleness: Duration::from_secs(1),
            on_unavailable: OnUnavailable::Deny,
            user_cache_entries: 1000,
        };
        let view = Arc::new(RevocationView::new(Arc::new(timed), settings));
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(follower::run_from(view, None, async move {
            stop.notified().await
        })));
    }
    // Let every follower load its snapshot and settle into waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Ok(mut sink) = sink.lock() {
        *sink = Sink::default();
    }

    let cpu_before = redis_cpu(redis);
    let own_before = own_cpu();
    let started = Instant::now();
    // The writer has a thread and runtime of its own, so the followers'
    // work does not slow its pace.
    let url = redis.url();
    let written = tokio::task::spawn_blocking(move || write_at(&url, rate, writing, base, 0))
        .await
        .expect("writer");
    // Wait for the stragglers, bounded.
    let expected = written * n as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.lock().map_or(0, |s| s.delays.len() as u64) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let cpu = redis_cpu(redis) - cpu_before;
    let own = own_cpu() - own_before;
    stop.notify_waiters();
    for task in tasks {
        let _ = task.await;
    }

    let (mut delays, reads) = sink
        .lock()
        .map(|s| (s.delays.clone(), s.reads))
        .unwrap_or_default();
    let received = delays.len() as u64;
    delays.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len().max(1)) - 1;
        delays.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let cpu_percent = cpu / wall.as_secs_f64() * 100.0;
    let missing = if received < expected {
        format!(" ({} of {expected} arrived)", received)
    } else {
        String::new()
    };
    format!(
        "| {n} | {rate} ({:.0}) | {:.2} | {:.2} | {:.2}{missing} | {cpu_percent:.1} | {:.3} | {:.0} | {:.0} |",
        written as f64 / writing.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        cpu_percent / n as f64,
        reads as f64 / wall.as_secs_f64() / n as f64,
        own / wall.as_secs_f64() * 100.0,
    )
}

/// Revokes `rate` tokens a second for `writing`, each named by the
/// microsecond after `base` when its write began, and returns how many
/// (or, with `writing` zero, `count` tokens at once).
fn write_at(url: &str, rate: usize, writing: Duration, base: Instant, count: u64) -> u64 {
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("writer runtime");
    io.block_on(async {
        let location = StoreLocation::Redis(url.to_owned());
        let writer = store::open(&location, RETENTION).await.expect("writer");
        let exp = support::tokens::now() + 600;
        if rate == 0 {
            // The idle fleet: followers waiting on an empty log.
            tokio::time::sleep(writing).await;
            return 0;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut written = 0u64;
        while started.elapsed() < writing || (writing.is_zero() && written < count) {
            if !writing.is_zero() {
                tick.tick().await;
            }
            let jti = base.elapsed().as_micros().to_string();
            writer.revoke_token(&jti, exp).await.expect("revoke");
            written += 1;
        }
        written
    })
}

/// This process's CPU seconds (user + system) so far, from /proc.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields 14 and 15 (utime, stime), counted after the command's ")".
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// Redis's own CPU seconds (user + system) so far.
fn redis_cpu(redis: &RedisServer) -> f64 {
    redis_info(redis, "cpu", &["used_cpu_sys", "used_cpu_user"])
}

/// The sum of some numeric fields of an `INFO` section.
fn redis_info(redis: &RedisServer, section: &str, fields: &[&str]) -> f64 {
    let info: String = ::redis::cmd("INFO")
        .arg(section)
        .query(&mut redis.connection())
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            fields
                .contains(&name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[async_trait]
impl Store for Timed {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn changes_since(
        &self,
        cursor: Cursor,
        wait: Duration,
        limit: usize,
    ) -> Result<Batch, StoreError> {
        let batch = self.inner.changes_since(cursor, wait, limit).await?;
        let now = self.base.elapsed().as_micros() as u64;
        if let (Batch::Changes { changes, .. }, Ok(mut sink)) = (&batch, self.sink.lock()) {
            if !changes.is_empty() {
                sink.reads += 1;
            }
            for change in changes {
                if let Change::TokenRevoked { jti, .. } = change {
                    if let Ok(written) = jti.parse::<u64>() {
                        sink.delays.push(now.saturating_sub(written));
                    }
                }
            }
        }
        Ok(batch)
    }

    async fn user(&self, sub: &str) -> Result<UserRecord, StoreError> {
        self.inner.user(sub).await
    }
    async fn bump_user(&self, sub: &str, now: u64) -> Result<UserRecord, StoreError> {
        self.inner.bump_user(sub, now).await
    }
    async fn rate_limit(
        &self,
        key: &[u8; 16],
        gcra: &store::rate_limit::Gcra,
    ) -> Result<Option<store::rate_limit::Verdict>, StoreError> {
        self.inner.rate_limit(key, gcra).await
    }
    async fn bump_user_keeping(
        &self,
        sub: &str,
        keep: &str,
        now: u64,
    ) -> Result<(UserRecord, bool), StoreError> {
        self.inner.bump_user_keeping(sub, keep, now).await
    }
    async fn set_disabled(&self, sub: &str, disabled: bool) -> Result<UserRecord, StoreError> {
        self.inner.set_disabled(sub, disabled).await
    }
    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        self.inner.revoke_token(jti, exp).await
    }
    async fn revoked_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.revoked_tokens(now).await
    }
    async fn head(&self) -> Result<Cursor, StoreError> {
        self.inner.head().await
    }
    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        self.inner.purge_expired(now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.inner.create_session(session).await
    }
    async fn session_by_refresh(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.session_by_refresh(hash).await
    }
    async fn session(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.session(sid).await
    }
    async fn sessions_of(&self, sub: &str, now: u64) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner.sessions_of(sub, now).await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(rotation).await
    }
    async fn active_sessions(&self, now: u64) -> Result<u64, StoreError> {
        self.inner.active_sessions(now).await
    }
    async fn end_session(
        &self,
        sid: &str,
        revoke_until: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.end_session(sid, revoke_until).await
    }
    async fn create_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.inner.create_api_key(record).await
    }
    async fn revoke_api_key(&self, id: &str, now: u64) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.inner.revoke_api_key(id, now).await
    }
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.inner.api_keys().await
    }
    async fn record_api_key_uses(&self, uses: &[(String, u64)]) -> Result<(), StoreError> {
        self.inner.record_api_key_uses(uses).await
    }
}
