//! The Redis store's Lua scripts (a record and its change-log entry land
//! together or not at all) and how a session is laid out in a hash. Key
//! names are in `redis_link`; connections and the log in `redis`.

use std::collections::HashMap;

use super::{SessionRecord, SessionStatus, StoreError};

/// KEYS: session, new refresh index key, marker key, revoked index, stream,
/// active sessions.
/// ARGV: presented, new_hash, now, now_ms, grace_ms, sealed, sid, marker,
/// revoke_until, revoke_expire_at, maxlen, auth_time (empty: unchanged).
pub(super) const ROTATE: &str = r#"
local s = redis.call('HMGET', KEYS[1], 'status', 'current_hash', 'previous_hash', 'rotated_at_ms',
  'expires_at', 'last_refresh', 'idle_ttl', 'sealed_pair')
if not s[1] or s[1] ~= 'active' then return {'inactive'} end
local now = tonumber(ARGV[3])
if now >= tonumber(s[5]) or now >= tonumber(s[6]) + tonumber(s[7]) then return {'inactive'} end
if ARGV[1] == s[2] then
  redis.call('HSET', KEYS[1], 'current_hash', ARGV[2], 'previous_hash', ARGV[1], 'rotated_at_ms', ARGV[4],
    'last_refresh', ARGV[3], 'sealed_pair', ARGV[6])
  if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'auth_time', ARGV[12]) end
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
pub(super) const END_SESSION: &str = r#"
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

pub(super) fn session_fields(session: &SessionRecord) -> Vec<(&'static str, Vec<u8>)> {
    let text = |v: &str| v.as_bytes().to_vec();
    let number = |v: u64| v.to_string().into_bytes();
    vec![
        ("sid", text(&session.sid)),
        ("sub", text(&session.sub)),
        ("device", text(&session.device)),
        ("created", number(session.created)),
        ("auth_time", number(session.auth_time)),
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

pub(super) fn parse_session(
    fields: &HashMap<String, Vec<u8>>,
) -> Result<Option<SessionRecord>, StoreError> {
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
    // Written before sessions had it: authenticated when opened.
    let auth_time = match fields.get("auth_time") {
        Some(_) => number("auth_time")?,
        None => number("created")?,
    };
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
        auth_time,
    }))
}

/// KEYS: user hash, stream. ARGV: op, now, sub, maxlen.
pub(super) const UPDATE_USER: &str = r#"
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

/// KEYS: user hash, stream, kept session. ARGV: now, sub, maxlen.
/// [`UPDATE_USER`]'s bump, and the kept session (when it is an active
/// session of the user) moved to the new version; the answer ends with 1
/// when it was.
pub(super) const BUMP_KEEPING: &str = r#"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') + 1
local d = tonumber(redis.call('HGET', KEYS[1], 'disabled') or '0')
local nb = tonumber(ARGV[1])
local rev = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0') + 1
redis.call('HSET', KEYS[1], 'version', v, 'disabled', d, 'not_before', nb, 'revision', rev)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'kind', 'user', 'key', ARGV[2],
  'version', v, 'disabled', d, 'not_before', nb, 'revision', rev)
local s = redis.call('HMGET', KEYS[3], 'status', 'sub')
local kept = 0
if s[1] == 'active' and s[2] == ARGV[2] then
  redis.call('HSET', KEYS[3], 'version', v)
  kept = 1
end
return {v, d, nb, rev, kept}
"#;

/// KEYS: revoked key, revoked index, stream. ARGV: jti, exp, expire_at, maxlen.
pub(super) const REVOKE_TOKEN: &str = r#"
redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'kind', 'token', 'key', ARGV[1], 'exp', ARGV[2])
return 1
"#;

/// KEYS: api key hash, stream. ARGV: id, record, maxlen, `new` (the id
/// must be unused) or `existing` (it must be held).
pub(super) const PUT_API_KEY: &str = r#"
local held = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if held == (ARGV[4] == 'new') then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'kind', 'api_key', 'key', ARGV[1], 'data', ARGV[2])
return 1
"#;

/// KEYS: api key uses hash. ARGV: id, time, id, time, … (a time never
/// replaces a later one).
pub(super) const RECORD_API_KEY_USES: &str = r#"
for i = 1, #ARGV, 2 do
  local held = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > held then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"#;
