//! The shared store for several gateway instances: Redis.
//!
//! Writes are Lua scripts, so a record and its change-log entry land
//! together or not at all. The change log is a stream trimmed to about
//! `log_entries` from the front; a reader knows how many entries the stream
//! had taken in up to its position, and `XINFO STREAM` (`entries-added`,
//! `length`, Redis 7) tells whether the next entry it needs is still
//! there, else it is told to resync. Connections reconnect with exponential
//! backoff; the follower has its own connection because a blocking `XREAD`
//! would hold up every command queued behind it.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamReadReply;
use redis::{AsyncCommands, Script, Value};

use super::{
    session_marker, Batch, Change, Cursor, Retention, RotateOutcome, Rotation, SessionRecord,
    SessionStatus, Store, StoreError, UserRecord,
};

const CHANGES: &str = "portcullis:changes";
const REVOKED_INDEX: &str = "portcullis:revoked";

fn user_key(sub: &str) -> String {
    format!("portcullis:user:{sub}")
}

fn revoked_key(jti: &str) -> String {
    format!("portcullis:revoked:{jti}")
}

fn session_key(sid: &str) -> String {
    format!("portcullis:session:{sid}")
}

fn refresh_key(hash: &str) -> String {
    format!("portcullis:refresh:{hash}")
}

/// Active sessions by absolute expiry, for counting them.
const ACTIVE_SESSIONS: &str = "portcullis:active-sessions";

fn user_sessions_key(sub: &str) -> String {
    format!("portcullis:user-sessions:{sub}")
}

/// KEYS: session, new refresh index key, marker key, revoked index, stream,
/// active sessions.
/// ARGV: presented, new_hash, now, now_ms, grace_ms, sealed, sid, marker,
/// revoke_until, revoke_expire_at, maxlen.
const ROTATE: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'status', 'current_hash', 'previous_hash', 'rotated_at_ms',
  'expires_at', 'last_refresh', 'idle_ttl', 'sealed_pair')
if not s[1] or s[1] ~= 'active' then return {'inactive'} end
local now = tonumber(ARGV[3])
if now >= tonumber(s[5]) or now >= tonumber(s[6]) + tonumber(s[7]) then return {'inactive'} end
if ARGV[1] == s[2] then
  redis.call('HSET', KEYS[1], 'current_hash', ARGV[2], 'previous_hash', ARGV[1], 'rotated_at_ms', ARGV[4],
    'last_refresh', ARGV[3], 'sealed_pair', ARGV[6])
  redis.call('SET', KEYS[2], ARGV[7], 'EXAT', s[5])
  return {'rotated'}
end
-- A refresh that read the clock before a concurrent one rotated sees the
-- rotation in its future: that counts as no time since, not as negative.
local since = math.max(0, tonumber(ARGV[4]) - tonumber(s[4]))
if s[3] and ARGV[1] == s[3] and since < tonumber(ARGV[5]) and s[8] and s[8] ~= '' then
  return {'replay', s[8]}
end
redis.call('HSET', KEYS[1], 'status', 'revoked', 'sealed_pair', '')
redis.call('ZREM', KEYS[6], ARGV[7])
redis.call('SET', KEYS[3], ARGV[9], 'EXAT', ARGV[10])
redis.call('ZADD', KEYS[4], 'GT', ARGV[9], ARGV[8])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[11], '*', 'kind', 'token', 'key', ARGV[8], 'exp', ARGV[9])
return {'reused'}
"#;

/// KEYS: session, marker key, revoked index, stream, active sessions.
/// ARGV: marker, revoke_until, revoke_expire_at, maxlen, sid.
const END_SESSION: &str = r#"
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'active' then
  redis.call('HSET', KEYS[1], 'status', 'ended', 'sealed_pair', '')
  redis.call('ZREM', KEYS[5], ARGV[5])
  redis.call('SET', KEYS[2], ARGV[2], 'EXAT', ARGV[3])
  redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[1])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'token', 'key', ARGV[1], 'exp', ARGV[2])
end
return status
"#;

fn session_fields(session: &SessionRecord) -> Vec<(&'static str, Vec<u8>)> {
    let text = |v: &str| v.as_bytes().to_vec();
    let number = |v: u64| v.to_string().into_bytes();
    vec![
        ("sid", text(&session.sid)),
        ("sub", text(&session.sub)),
        ("device", text(&session.device)),
        ("created", number(session.created)),
        ("last_refresh", number(session.last_refresh)),
        ("expires_at", number(session.expires_at)),
        ("idle_ttl", number(session.idle_ttl)),
        ("current_hash", text(&session.current_hash)),
        (
            "previous_hash",
            text(session.previous_hash.as_deref().unwrap_or("")),
        ),
        ("rotated_at_ms", number(session.rotated_at_ms)),
        ("version", number(session.version)),
        ("status", text(session.status.as_str())),
        ("grants", text(&session.grants)),
        (
            "sealed_pair",
            session.sealed_pair.clone().unwrap_or_default(),
        ),
    ]
}

fn parse_session(fields: &HashMap<String, Vec<u8>>) -> Result<Option<SessionRecord>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let text = |name: &str| -> Result<String, StoreError> {
        let bytes = fields
            .get(name)
            .ok_or_else(|| StoreError::Corrupt(format!("session without {name}")))?;
        String::from_utf8(bytes.clone())
            .map_err(|_| StoreError::Corrupt(format!("session {name} is not UTF-8")))
    };
    let number = |name: &str| -> Result<u64, StoreError> {
        text(name)?
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("session {name} is not a number")))
    };
    let previous = text("previous_hash")?;
    let sealed = fields.get("sealed_pair").filter(|b| !b.is_empty()).cloned();
    Ok(Some(SessionRecord {
        sid: text("sid")?,
        sub: text("sub")?,
        device: text("device")?,
        created: number("created")?,
        last_refresh: number("last_refresh")?,
        expires_at: number("expires_at")?,
        idle_ttl: number("idle_ttl")?,
        current_hash: text("current_hash")?,
        previous_hash: (!previous.is_empty()).then_some(previous),
        rotated_at_ms: number("rotated_at_ms")?,
        version: number("version")?,
        status: SessionStatus::parse(&text("status")?)?,
        grants: text("grants")?,
        sealed_pair: sealed,
    }))
}

/// KEYS: user hash, stream. ARGV: op, now, sub, maxlen.
const UPDATE_USER: &str = r#"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local d = tonumber(redis.call('HGET', KEYS[1], 'disabled') or '0')
local nb = tonumber(redis.call('HGET', KEYS[1], 'not_before') or '0')
local rev = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0') + 1
if ARGV[1] == 'bump' then v = v + 1; nb = tonumber(ARGV[2])
elseif ARGV[1] == 'disable' then d = 1
else d = 0 end
redis.call('HSET', KEYS[1], 'version', v, 'disabled', d, 'not_before', nb, 'revision', rev)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'user', 'key', ARGV[3],
  'version', v, 'disabled', d, 'not_before', nb, 'revision', rev)
return {v, d, nb, rev}
"#;

/// KEYS: revoked key, revoked index, stream. ARGV: jti, exp, expire_at, maxlen.
const REVOKE_TOKEN: &str = r#"
redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'token', 'key', ARGV[1], 'exp', ARGV[2])
return 1
"#;

pub struct RedisStore {
    commands: ConnectionManager,
    follower: ConnectionManager,
    update_user: Script,
    revoke_token: Script,
    rotate: Script,
    end_session: Script,
    retention: Retention,
}

impl RedisStore {
    pub async fn open(url: &str, retention: Retention) -> Result<Self, StoreError> {
        // Commands are small writes: never let one wait for a delayed ACK.
        let info = redis::IntoConnectionInfo::into_connection_info(url)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let config = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_secs(2))
        };
        let commands = client.get_connection_manager_with_config(config()).await?;
        // The follower's reads block for up to 5 s (a quarter of
        // max_staleness, capped): its timeout must outlast them.
        let follower = client
            .get_connection_manager_with_config(
                config().set_response_timeout(Some(Duration::from_secs(15))),
            )
            .await?;
        Ok(Self {
            commands,
            follower,
            update_user: Script::new(UPDATE_USER),
            revoke_token: Script::new(REVOKE_TOKEN),
            rotate: Script::new(ROTATE),
            end_session: Script::new(END_SESSION),
            retention,
        })
    }

    async fn update_user(&self, sub: &str, op: &str, now: u64) -> Result<UserRecord, StoreError> {
        let mut conn = self.commands.clone();
        let (version, disabled, not_before, revision): (u64, u64, u64, u64) = self
            .update_user
            .key(user_key(sub))
            .key(CHANGES)
            .arg(op)
            .arg(now)
            .arg(sub)
            .arg(self.retention.log_entries)
            .invoke_async(&mut conn)
            .await?;
        Ok(UserRecord {
            version,
            disabled: disabled != 0,
            not_before,
            revision,
        })
    }

    /// `(last-generated-id, entries-added, length)` of the change log.
    async fn log_info(conn: &mut ConnectionManager) -> Result<LogInfo, StoreError> {
        let info: Result<HashMap<String, Value>, _> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(CHANGES)
            .query_async(conn)
            .await;
        let info = match info {
            Ok(info) => info,
            // No stream yet: nothing was ever added.
            Err(e) if e.to_string().contains("no such key") => return Ok(LogInfo::default()),
            Err(e) => return Err(e.into()),
        };
        let number = |name: &str| -> Result<u64, StoreError> {
            let value = info
                .get(name)
                .ok_or_else(|| StoreError::Corrupt(format!("XINFO without {name}")))?;
            redis::from_redis_value_ref(value)
                .map_err(|e| StoreError::Corrupt(format!("XINFO {name}: {e}")))
        };
        Ok(LogInfo {
            last: info
                .get("last-generated-id")
                .and_then(parse_id_value)
                .unwrap_or_default(),
            added: number("entries-added")?,
            length: number("length")?,
        })
    }
}

#[derive(Debug, Default)]
struct LogInfo {
    last: Cursor,
    added: u64,
    length: u64,
}

impl LogInfo {
    /// Whether the entry after `cursor` may be gone. Trimming removes
    /// entries from the front only, so the entries present are the last
    /// `length` of the `added`; fewer than the cursor's count means the
    /// stream itself was reset.
    fn trimmed_past(&self, cursor: Cursor) -> bool {
        let first_present = self.added.saturating_sub(self.length) + 1;
        first_present > cursor.2 + 1 || self.added < cursor.2
    }
}

/// A stream id; the entry count is filled in by the caller.
fn parse_id(id: &str) -> Option<Cursor> {
    let (ms, seq) = id.split_once('-')?;
    Some(Cursor(ms.parse().ok()?, seq.parse().ok()?, 0))
}

fn parse_id_value(value: &Value) -> Option<Cursor> {
    match value {
        Value::BulkString(bytes) => parse_id(std::str::from_utf8(bytes).ok()?),
        Value::SimpleString(s) => parse_id(s),
        _ => None,
    }
}

fn field<T: redis::FromRedisValue>(
    map: &HashMap<String, Value>,
    name: &str,
) -> Result<T, StoreError> {
    let value = map
        .get(name)
        .ok_or_else(|| StoreError::Corrupt(format!("change without {name}")))?;
    redis::from_redis_value_ref(value)
        .map_err(|e| StoreError::Corrupt(format!("change field {name}: {e}")))
}

fn parse_change(map: &HashMap<String, Value>) -> Result<Change, StoreError> {
    let kind: String = field(map, "kind")?;
    let key: String = field(map, "key")?;
    match kind.as_str() {
        "user" => Ok(Change::User {
            sub: key,
            record: UserRecord {
                version: field(map, "version")?,
                disabled: field::<u64>(map, "disabled")? != 0,
                not_before: field(map, "not_before")?,
                revision: field(map, "revision")?,
            },
        }),
        "token" => Ok(Change::TokenRevoked {
            jti: key,
            exp: field(map, "exp")?,
        }),
        other => Err(StoreError::Corrupt(format!("change kind {other:?}"))),
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn user(&self, sub: &str) -> Result<UserRecord, StoreError> {
        let mut conn = self.commands.clone();
        let fields: HashMap<String, u64> = conn.hgetall(user_key(sub)).await?;
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

    async fn set_disabled(&self, sub: &str, disabled: bool) -> Result<UserRecord, StoreError> {
        self.update_user(sub, if disabled { "disable" } else { "enable" }, 0)
            .await
    }

    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        let expire_at = exp + self.retention.after_expiry.as_secs();
        let _: i64 = self
            .revoke_token
            .key(revoked_key(jti))
            .key(REVOKED_INDEX)
            .key(CHANGES)
            .arg(jti)
            .arg(exp)
            .arg(expire_at.max(1))
            .arg(self.retention.log_entries)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn revoked_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.commands.clone();
        let keep_after = now.saturating_sub(self.retention.after_expiry.as_secs());
        let entries: Vec<(String, u64)> = conn
            .zrangebyscore_withscores(REVOKED_INDEX, keep_after, "+inf")
            .await?;
        Ok(entries)
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        let mut conn = self.commands.clone();
        let info = Self::log_info(&mut conn).await?;
        Ok(Cursor(info.last.0, info.last.1, info.added))
    }

    async fn changes_since(
        &self,
        cursor: Cursor,
        wait: Duration,
        limit: usize,
    ) -> Result<Batch, StoreError> {
        let mut conn = self.follower.clone();
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(limit);
        if !wait.is_zero() {
            read.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
        }
        read.arg("STREAMS")
            .arg(CHANGES)
            .arg(format!("{}-{}", cursor.0, cursor.1));
        let reply: Option<StreamReadReply> = read.query_async(&mut conn).await?;
        // Checked after the read: had the next entry been trimmed before
        // the read, it is still gone now. (A trim between the two only
        // costs a needless resync.)
        if Self::log_info(&mut conn).await?.trimmed_past(cursor) {
            return Ok(Batch::Behind);
        }
        let mut changes = Vec::new();
        let mut last = cursor;
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let id = parse_id(&entry.id)
                .ok_or_else(|| StoreError::Corrupt(format!("stream id {}", entry.id)))?;
            last = Cursor(id.0, id.1, last.2 + 1);
            changes.push(parse_change(&entry.map)?);
        }
        Ok(Batch::Changes {
            changes,
            cursor: last,
        })
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        let mut conn = self.commands.clone();
        let keep_after = now.saturating_sub(self.retention.after_expiry.as_secs());
        let removed: u64 = conn
            .zrembyscore(REVOKED_INDEX, "-inf", format!("({keep_after}"))
            .await?;
        let sessions: u64 = conn.zrembyscore(ACTIVE_SESSIONS, "-inf", now).await?;
        Ok(removed + sessions)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut conn = self.commands.clone();
        let key = session_key(&session.sid);
        let user_sessions = user_sessions_key(&session.sub);
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(&key, &session_fields(session))
            .ignore()
            .expire_at(&key, session.expires_at as i64)
            .ignore()
            .cmd("SET")
            .arg(refresh_key(&session.current_hash))
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
            .zadd(ACTIVE_SESSIONS, &session.sid, session.expires_at)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn session_by_refresh(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.commands.clone();
        let sid: Option<String> = conn.get(refresh_key(hash)).await?;
        match sid {
            Some(sid) => self.session(&sid).await,
            None => Ok(None),
        }
    }

    async fn session(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.commands.clone();
        let fields: HashMap<String, Vec<u8>> = conn.hgetall(session_key(sid)).await?;
        parse_session(&fields)
    }

    async fn sessions_of(&self, sub: &str, now: u64) -> Result<Vec<SessionRecord>, StoreError> {
        let mut conn = self.commands.clone();
        let sids: Vec<String> = conn.smembers(user_sessions_key(sub)).await?;
        let mut pipe = redis::pipe();
        for sid in &sids {
            pipe.hgetall(session_key(sid));
        }
        let all: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(&mut conn).await?;
        let mut sessions = Vec::new();
        for (sid, fields) in sids.iter().zip(all) {
            match parse_session(&fields)? {
                Some(session) if session.expires_at > now => sessions.push(session),
                // Expired (the hash is gone with its TTL): forget it.
                _ => {
                    let _: i64 = conn.srem(user_sessions_key(sub), sid).await?;
                }
            }
        }
        sessions.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.sid.cmp(&b.sid)));
        Ok(sessions)
    }

    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let mut conn = self.commands.clone();
        let marker = session_marker(&r.sid);
        let reply: Vec<Vec<u8>> = self
            .rotate
            .key(session_key(&r.sid))
            .key(refresh_key(&r.new_hash))
            .key(revoked_key(&marker))
            .key(REVOKED_INDEX)
            .key(CHANGES)
            .key(ACTIVE_SESSIONS)
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
            .invoke_async(&mut conn)
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
        let mut conn = self.commands.clone();
        let marker = session_marker(sid);
        let _: Option<String> = self
            .end_session
            .key(session_key(sid))
            .key(revoked_key(&marker))
            .key(REVOKED_INDEX)
            .key(CHANGES)
            .key(ACTIVE_SESSIONS)
            .arg(&marker)
            .arg(revoke_until)
            .arg(revoke_until + self.retention.after_expiry.as_secs())
            .arg(self.retention.log_entries)
            .arg(sid)
            .invoke_async(&mut conn)
            .await?;
        Ok(before)
    }

    async fn active_sessions(&self, now: u64) -> Result<u64, StoreError> {
        let mut conn = self.commands.clone();
        let count: u64 = conn
            .zcount(ACTIVE_SESSIONS, format!("({now}"), "+inf")
            .await?;
        Ok(count)
    }
}
