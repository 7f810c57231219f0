//! The shared store for several gateway instances: Redis.
//!
//! Writes are Lua scripts, so a record and its change-log entry land
//! together or not at all. The change log is a stream trimmed to about
//! `log_entries` from the front; a reader knows how many entries the stream
//! had taken in up to its position, and `XINFO STREAM` (`entries-added`,
//! `length`, Redis 7) tells whether the next entry it needs is still
//! there, else it is told to resync; so is a reader after a failover (a new
//! replication id). Durable writes wait for `min_replicas` replicas.
//! Connections (one server, Sentinel or Cluster: `redis_link`) reconnect
//! by themselves; the follower has its own connection because a blocking
//! `XREAD` would hold up every command queued behind it, and each durable
//! write takes one of its own for the same reason (`WAIT` blocks too).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use redis::streams::StreamReadReply;
use redis::{AsyncCommands, Script, ScriptInvocation, Value};

use super::redis_link::{cluster_nodes, key_base, Keys, Link, RedisOptions, SentinelSpec, Target};
use super::redis_log::{parse_change, parse_id, parse_log_state, LogInfo, Replication};
use super::redis_records::{
    parse_session, session_fields, BUMP_KEEPING, END_SESSION, PUT_API_KEY, RECORD_API_KEY_USES,
    REVOKE_TOKEN, ROTATE, UPDATE_USER,
};
use super::redis_writes::WriteLinks;
use super::{
    session_marker, ApiKeyRecord, Batch, Cursor, Retention, RotateOutcome, Rotation, SessionRecord,
    Store, StoreError, StoreLocation, UserRecord,
};

pub struct RedisStore {
    commands: Link,
    follower: Link,
    /// Durable writes, one connection each (`redis_writes`).
    writes: WriteLinks,
    keys: Keys,
    options: RedisOptions,
    /// The replication id of the primary the follower last read from (or,
    /// before its first read, the first head was read from): a new one
    /// means a failover or a restart, after which the log may not continue
    /// from a position read before.
    replication_id: Mutex<Option<String>>,
    update_user: Script,
    bump_keeping: Script,
    revoke_token: Script,
    rotate: Script,
    end_session: Script,
    put_api_key: Script,
    record_api_key_uses: Script,
    retention: Retention,
}

impl RedisStore {
    pub async fn open(
        location: &StoreLocation,
        retention: Retention,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let (target, cluster) = match location {
            StoreLocation::Sentinel(url) => {
                let spec = SentinelSpec::parse(url).map_err(|e| StoreError::Task(e.0))?;
                (Target::Sentinel(spec), false)
            }
            StoreLocation::Cluster(url) => {
                let nodes = cluster_nodes(url).map_err(|e| StoreError::Task(e.0))?;
                (Target::Cluster(nodes), true)
            }
            StoreLocation::Redis(url) => (Target::Single(url.clone()), false),
            StoreLocation::Sqlite(_) => {
                return Err(StoreError::Task("not a Redis location".into()))
            }
        };
        let commands = Link::open(&target, Duration::from_secs(5), 3).await?;
        // The follower's reads block for up to 5 s (a quarter of
        // max_staleness, capped): its timeout must outlast them.
        let follower = Link::open(&target, Duration::from_secs(15), 3).await?;
        // A durable write's answer includes its `WAIT`.
        let writes =
            WriteLinks::open(target, Duration::from_secs(5) + options.replica_timeout).await?;
        Ok(Self {
            commands,
            follower,
            writes,
            keys: Keys::new(key_base(options.key_prefix.as_deref(), cluster)),
            options,
            replication_id: Mutex::new(None),
            update_user: Script::new(UPDATE_USER),
            bump_keeping: Script::new(BUMP_KEEPING),
            revoke_token: Script::new(REVOKE_TOKEN),
            rotate: Script::new(ROTATE),
            end_session: Script::new(END_SESSION),
            put_api_key: Script::new(PUT_API_KEY),
            record_api_key_uses: Script::new(RECORD_API_KEY_USES),
            retention,
        })
    }

    async fn update_user(&self, sub: &str, op: &str, now: u64) -> Result<UserRecord, StoreError> {
        let mut invocation = self.update_user.prepare_invoke();
        invocation
            .key(self.keys.user(sub))
            .key(self.keys.changes())
            .arg(op)
            .arg(now)
            .arg(sub)
            .arg(self.retention.log_entries);
        let (version, disabled, not_before, revision): (u64, u64, u64, u64) = self
            .durable(&self.update_user, &invocation, |_| true)
            .await?;
        Ok(UserRecord {
            version,
            disabled: disabled != 0,
            not_before,
            revision,
        })
    }

    /// Writes a key's record with its change log entry; false when the id
    /// was `new` but taken, or `existing` but unknown.
    async fn put_api_key(&self, record: &ApiKeyRecord, mode: &str) -> Result<bool, StoreError> {
        let mut invocation = self.put_api_key.prepare_invoke();
        invocation
            .key(self.keys.api_keys())
            .key(self.keys.changes())
            .arg(&record.id)
            .arg(record.to_log())
            .arg(self.retention.log_entries)
            .arg(mode);
        let wrote: i64 = self
            .durable(&self.put_api_key, &invocation, |wrote: &i64| *wrote == 1)
            .await?;
        Ok(wrote == 1)
    }

    /// Runs a write script and, when `min_replicas` is set, `WAIT` in the
    /// same pipeline, on a connection of its own (`WAIT` counts from the
    /// connection's last write, and holds the connection while it waits).
    /// `wrote` says whether the answer changed anything; only then must
    /// the replicas confirm it. The answer comes within `replica_timeout`
    /// (plus round trips and Redis's timer tick): a script Redis had to
    /// load first waits only for what is left of it.
    async fn durable<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        invocation: &ScriptInvocation<'_>,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError> {
        let mut conn = self.writes.take().await?;
        let deadline = Instant::now() + self.options.replica_timeout;
        let pipeline = |load: bool| {
            let mut pipe = redis::pipe();
            if load {
                pipe.load_script(script).ignore();
            }
            pipe.invoke_script(invocation);
            if self.options.min_replicas > 0 {
                // `WAIT 0` would wait for ever: at least a millisecond.
                let left = deadline.saturating_duration_since(Instant::now());
                pipe.cmd("WAIT")
                    .arg(self.options.min_replicas)
                    .arg(left.as_millis().max(1) as u64);
            }
            pipe
        };
        let values: Vec<Value> = match pipeline(false).query_async(&mut conn).await {
            Err(e) if e.code() == Some("NOSCRIPT") => pipeline(true).query_async(&mut conn).await,
            other => other,
        }
        .inspect_err(|_| self.writes.forget_idle())?;
        self.writes.give_back(conn);
        self.confirmed(values, wrote)
    }

    /// The script's answer, or `NotReplicated` when fewer replicas than
    /// `min_replicas` confirmed a write that changed something.
    fn confirmed<T: redis::FromRedisValue>(
        &self,
        values: Vec<Value>,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<T, StoreError> {
        let mut values = values.into_iter();
        let answer = values
            .next()
            .ok_or_else(|| StoreError::Corrupt("a write script gave no answer".into()))?;
        let answer: T = redis::from_redis_value(answer)
            .map_err(|e| StoreError::Corrupt(format!("write script answer: {e}")))?;
        if let Some(acked) = values.next() {
            let acked: u64 = redis::from_redis_value(acked)
                .map_err(|e| StoreError::Corrupt(format!("WAIT answer: {e}")))?;
            if acked < u64::from(self.options.min_replicas) && wrote(&answer) {
                return Err(StoreError::NotReplicated {
                    acked,
                    wanted: self.options.min_replicas,
                });
            }
        }
        Ok(answer)
    }

    /// The change log's counters and the primary's replication id, read
    /// together from the node that holds the log.
    async fn log_state(&self, conn: &mut Link) -> Result<(LogInfo, Replication), StoreError> {
        let mut pipe = redis::pipe();
        self.log_state_commands(&mut pipe);
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        parse_log_state(replies.into_iter())
    }

    /// `XINFO STREAM` and `INFO replication`, answered by [`parse_log_state`].
    fn log_state_commands(&self, pipe: &mut redis::Pipeline) {
        pipe.ignore_errors()
            .cmd("XINFO")
            .arg("STREAM")
            .arg(self.keys.changes())
            .cmd("INFO")
            .arg("replication");
    }

    /// Records the replication id the first position was read under.
    /// Later heads (the lag is measured every second on the command
    /// connection, which may reach a new primary first) must not record
    /// theirs: that would hide a failover from the follower, which then
    /// neither resyncs nor counts it.
    fn replication_first_seen(&self, id: String) {
        if let Ok(mut known) = self.replication_id.lock() {
            if known.as_ref().is_some_and(|k| *k != id) {
                self.writes.forget_idle();
            }
            known.get_or_insert(id);
        }
    }

    /// Records the replication id the follower read the log under; true
    /// when it differs from the one before (and then the idle write
    /// connections, which may reach the old primary, are dropped).
    fn replication_changed(&self, id: String) -> bool {
        let Ok(mut known) = self.replication_id.lock() else {
            return true;
        };
        let changed = known.as_ref().is_some_and(|k| *k != id);
        *known = Some(id);
        if changed {
            self.writes.forget_idle();
        }
        changed
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn rate_limit(
        &self,
        key: &[u8; 16],
        gcra: &super::rate_limit::Gcra,
    ) -> Result<Option<super::rate_limit::Verdict>, StoreError> {
        let key = super::redis_rate_limit::key_of(self.options.key_prefix.as_deref(), key);
        let mut conn = self.commands.clone();
        super::redis_rate_limit::decide(&mut conn, key, gcra)
            .await
            .map(Some)
    }

    async fn user(&self, sub: &str) -> Result<UserRecord, StoreError> {
        let mut conn = self.commands.clone();
        let fields: HashMap<String, u64> = conn.hgetall(self.keys.user(sub)).await?;
        let get = |name: &str| fields.get(name).copied().unwrap_or(0);
        Ok(UserRecord {
            version: get("version"),
            disabled: get("disabled") != 0,
            not_before: get("not_before"),
            revision: get("revision"),
        })
    }

    async fn bump_user(&self, sub: &str, now: u64) -> Result<UserRecord, StoreError> {
        self.update_user(sub, "bump", now).await
    }

    async fn bump_user_keeping(
        &self,
        sub: &str,
        keep: &str,
        now: u64,
    ) -> Result<(UserRecord, bool), StoreError> {
        let mut invocation = self.bump_keeping.prepare_invoke();
        invocation
            .key(self.keys.user(sub))
            .key(self.keys.changes())
            .key(self.keys.session(keep))
            .arg(now)
            .arg(sub)
            .arg(self.retention.log_entries);
        let (version, disabled, not_before, revision, kept): (u64, u64, u64, u64, u64) = self
            .durable(&self.bump_keeping, &invocation, |_| true)
            .await?;
        let record = UserRecord {
            version,
            disabled: disabled != 0,
            not_before,
            revision,
        };
        Ok((record, kept == 1))
    }

    async fn set_disabled(&self, sub: &str, disabled: bool) -> Result<UserRecord, StoreError> {
        self.update_user(sub, if disabled { "disable" } else { "enable" }, 0)
            .await
    }

    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let expire_at = exp + self.retention.after_expiry.as_secs();
        let mut invocation = self.revoke_token.prepare_invoke();
        invocation
            .key(self.keys.revoked(jti))
            .key(self.keys.revoked_index())
            .key(self.keys.changes())
            .arg(jti)
            .arg(exp)
            .arg(expire_at.max(1))
            .arg(self.retention.log_entries);
        let _: i64 = self
            .durable(&self.revoke_token, &invocation, |_| true)
            .await?;
        Ok(())
    }

    async fn revoked_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.commands.clone();
        let keep_after = now.saturating_sub(self.retention.after_expiry.as_secs());
        let entries: Vec<(String, u64)> = conn
            .zrangebyscore_withscores(self.keys.revoked_index(), keep_after, "+inf")
            .await?;
        Ok(entries)
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        let mut conn = self.commands.clone();
        let (info, replication) = self.log_state(&mut conn).await?;
        self.replication_first_seen(replication.id);
        Ok(Cursor::Stream {
            ms: info.last.0,
            seq: info.last.1,
            added: info.added,
        })
    }

    async fn changes_since(
        &self,
        cursor: Cursor,
        wait: Duration,
        limit: usize,
    ) -> Result<Batch, StoreError> {
        let Cursor::Stream { ms, seq, added } = cursor else {
            return Ok(Batch::Behind);
        };
        let mut conn = self.follower.clone();
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(limit);
        if !wait.is_zero() {
            read.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
        }
        read.arg("STREAMS")
            .arg(self.keys.changes())
            .arg(format!("{ms}-{seq}"));
        // One round trip: Redis answers the log's state once the read
        // returns, so it is checked after the read: had the next entry
        // been trimmed before the read, it is still gone now. (A trim
        // between the two only costs a needless resync.) After a failover
        // the new primary's log may lack entries read here, or hold others
        // under the same ids: a new replication id, ids going backwards or
        // fewer entries ever added all mean the position no longer holds.
        let mut pipe = redis::pipe();
        pipe.add_command(read);
        self.log_state_commands(&mut pipe);
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        let mut replies = replies.into_iter();
        let reply: Option<StreamReadReply> = match replies.next() {
            Some(Value::ServerError(e)) => return Err(redis::RedisError::from(e).into()),
            Some(value) => redis::from_redis_value(value)
                .map_err(|e| StoreError::Corrupt(format!("XREAD: {e}")))?,
            None => return Err(StoreError::Corrupt("XREAD gave no answer".into())),
        };
        let (info, replication) = parse_log_state(replies)?;
        if replication.replica && conn.forget() {
            // A demoted primary still answers reads: ask the sentinels
            // for the new one rather than follow a replica.
            self.writes.forget_idle();
            return Err(StoreError::Demoted);
        }
        if self.replication_changed(replication.id) || info.ends_before(cursor) {
            return Ok(Batch::Diverged);
        }
        if info.trimmed_past(cursor) {
            return Ok(Batch::Behind);
        }
        let mut changes = Vec::new();
        let (mut last, mut added) = ((ms, seq), added);
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            last = parse_id(&entry.id)
                .ok_or_else(|| StoreError::Corrupt(format!("stream id {}", entry.id)))?;
            added += 1;
            changes.push(parse_change(&entry.map)?);
        }
        Ok(Batch::Changes {
            changes,
            cursor: Cursor::Stream {
                ms: last.0,
                seq: last.1,
                added,
            },
        })
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        let mut conn = self.commands.clone();
        let keep_after = now.saturating_sub(self.retention.after_expiry.as_secs());
        let removed: u64 = conn
            .zrembyscore(self.keys.revoked_index(), "-inf", format!("({keep_after}"))
            .await?;
        let sessions: u64 = conn
            .zrembyscore(self.keys.active_sessions(), "-inf", now)
            .await?;
        Ok(removed + sessions)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        let key = self.keys.session(&session.sid);
        let user_sessions = self.keys.user_sessions(&session.sub);
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(&key, &session_fields(session))
            .ignore()
            .expire_at(&key, session.expires_at as i64)
            .ignore()
            .cmd("SET")
            .arg(self.keys.refresh(&session.current_hash))
            .arg(&session.sid)
            .arg("EXAT")
            .arg(session.expires_at)
            .ignore()
            .sadd(&user_sessions, &session.sid)
            .ignore()
            // The index lives as long as its longest session (absolute
            // expiry): set when it has no expiry yet, else only extended.
            .cmd("EXPIREAT")
            .arg(&user_sessions)
            .arg(session.expires_at)
            .arg("NX")
            .ignore()
            .cmd("EXPIREAT")
            .arg(&user_sessions)
            .arg(session.expires_at)
            .arg("GT")
            .ignore()
            .zadd(
                self.keys.active_sessions(),
                &session.sid,
                session.expires_at,
            )
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn session_by_refresh(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.commands.clone();
        let sid: Option<String> = conn.get(self.keys.refresh(hash)).await?;
        match sid {
            Some(sid) => self.session(&sid).await,
            None => Ok(None),
        }
    }

    async fn session(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.commands.clone();
        let fields: HashMap<String, Vec<u8>> = conn.hgetall(self.keys.session(sid)).await?;
        parse_session(&fields)
    }

    async fn sessions_of(&self, sub: &str, now: u64) -> Result<Vec<SessionRecord>, StoreError> {
        let mut conn = self.commands.clone();
        let sids: Vec<String> = conn.smembers(self.keys.user_sessions(sub)).await?;
        if sids.is_empty() {
            // An empty pipeline has no key, so no node on a Cluster.
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sid in &sids {
            pipe.hgetall(self.keys.session(sid));
        }
        let all: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(&mut conn).await?;
        let mut sessions = Vec::new();
        for (sid, fields) in sids.iter().zip(all) {
            match parse_session(&fields)? {
                Some(session) if session.expires_at > now => sessions.push(session),
                // Expired (the hash is gone with its TTL): forget it.
                _ => {
                    let _: i64 = conn.srem(self.keys.user_sessions(sub), sid).await?;
                }
            }
        }
        sessions.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.sid.cmp(&b.sid)));
        Ok(sessions)
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let marker = session_marker(&r.sid);
        let mut invocation = self.rotate.prepare_invoke();
        invocation
            .key(self.keys.session(&r.sid))
            .key(self.keys.refresh(&r.new_hash))
            .key(self.keys.revoked(&marker))
            .key(self.keys.revoked_index())
            .key(self.keys.changes())
            .key(self.keys.active_sessions())
            .arg(&r.presented_hash)
            .arg(&r.new_hash)
            .arg(r.now)
            .arg(r.now_ms)
            .arg(r.grace_ms)
            .arg(&r.sealed_pair)
            .arg(&r.sid)
            .arg(&marker)
            .arg(r.revoke_until)
            .arg(r.revoke_until + self.retention.after_expiry.as_secs())
            .arg(self.retention.log_entries)
            .arg(r.auth_time.map(|t| t.to_string()).unwrap_or_default());
        // A replay hands out the pair of a rotation that may itself still
        // be unconfirmed (a retry after a failed wait): it waits too.
        let reply: Vec<Vec<u8>> = self
            .durable(&self.rotate, &invocation, |reply: &Vec<Vec<u8>>| {
                reply.first().map(Vec::as_slice) != Some(b"inactive")
            })
            .await?;
        match reply.first().map(Vec::as_slice) {
            Some(b"rotated") => Ok(RotateOutcome::Rotated),
            Some(b"replay") => {
                let sealed_pair = reply.get(1).cloned().unwrap_or_default();
                Ok(RotateOutcome::Replay { sealed_pair })
            }
            Some(b"reused") => Ok(RotateOutcome::Reused),
            _ => Ok(RotateOutcome::Inactive),
        }
    }

    async fn end_session(
        &self,
        sid: &str,
        revoke_until: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let before = self.session(sid).await?;
        if before.is_none() {
            return Ok(None);
        }
        let marker = session_marker(sid);
        let mut invocation = self.end_session.prepare_invoke();
        invocation
            .key(self.keys.session(sid))
            .key(self.keys.revoked(&marker))
            .key(self.keys.revoked_index())
            .key(self.keys.changes())
            .key(self.keys.active_sessions())
            .arg(&marker)
            .arg(revoke_until)
            .arg(revoke_until + self.retention.after_expiry.as_secs())
            .arg(self.retention.log_entries)
            .arg(sid);
        // Waited for even when the session had already ended: a retry
        // after an unconfirmed end must learn whether it is durable now.
        let _: Option<String> = self
            .durable(&self.end_session, &invocation, |_| true)
            .await?;
        Ok(before)
    }

    async fn create_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        match self.put_api_key(record, "new").await? {
            true => Ok(()),
            false => Err(StoreError::Corrupt(format!(
                "API key id {} is taken",
                record.id
            ))),
        }
    }

    async fn revoke_api_key(&self, id: &str, now: u64) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut conn = self.commands.clone();
        let held: Option<String> = conn.hget(self.keys.api_keys(), id).await?;
        let Some(mut record) = held.as_deref().map(ApiKeyRecord::from_log).transpose()? else {
            return Ok(None);
        };
        // Written again even when already revoked: a retry after an
        // unconfirmed revocation must learn whether it is durable now.
        record.revoked.get_or_insert(now);
        self.put_api_key(&record, "existing").await?;
        Ok(Some(record))
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut conn = self.commands.clone();
        let (records, uses): (HashMap<String, String>, HashMap<String, u64>) = redis::pipe()
            .hgetall(self.keys.api_keys())
            .hgetall(self.keys.api_key_uses())
            .query_async(&mut conn)
            .await?;
        let mut keys = records
            .values()
            .map(|data| {
                ApiKeyRecord::from_log(data).map(|record| ApiKeyRecord {
                    last_used: uses.get(&record.id).copied(),
                    ..record
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    async fn record_api_key_uses(&self, uses: &[(String, u64)]) -> Result<(), StoreError> {
        let mut invocation = self.record_api_key_uses.prepare_invoke();
        invocation.key(self.keys.api_key_uses());
        for (id, at) in uses {
            invocation.arg(id).arg(*at);
        }
        let mut conn = self.commands.clone();
        let _: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }

    async fn active_sessions(&self, now: u64) -> Result<u64, StoreError> {
        let mut conn = self.commands.clone();
        let count: u64 = conn
            .zcount(self.keys.active_sessions(), format!("({now}"), "+inf")
            .await?;
        Ok(count)
    }
}
