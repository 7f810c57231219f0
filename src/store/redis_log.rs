//! Reading the Redis change log: the stream's state (`XINFO STREAM`, with
//! `INFO replication` for failovers), entry ids as cursors, and entries as
//! [`Change`]s. Writing it is the Lua scripts' job (`redis_records`).

use std::collections::HashMap;

use redis::Value;

use super::{ApiKeyRecord, Change, Cursor, StoreError, UserRecord};

/// The answers to [`RedisStore::log_state_commands`].
pub(super) fn parse_log_state(
    mut replies: impl Iterator<Item = Value>,
) -> Result<(LogInfo, Replication), StoreError> {
    let info = match replies.next() {
        Some(Value::ServerError(e)) if e.details().is_some_and(|d| d.contains("no such key")) => {
            // No stream yet: nothing was ever added.
            LogInfo::default()
        }
        Some(value) => LogInfo::parse(value)?,
        None => return Err(StoreError::Corrupt("XINFO gave no answer".into())),
    };
    let replication: String = match replies.next() {
        Some(Value::ServerError(e)) => return Err(redis::RedisError::from(e).into()),
        Some(value) => redis::from_redis_value(value)
            .map_err(|e| StoreError::Corrupt(format!("INFO replication: {e}")))?,
        None => return Err(StoreError::Corrupt("INFO gave no answer".into())),
    };
    let field = |name: &str| {
        replication
            .lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .unwrap_or_default()
            .to_owned()
    };
    Ok((
        info,
        Replication {
            id: field("master_replid:"),
            replica: field("role:") == "slave",
        },
    ))
}

/// What `INFO replication` says about the node that answered.
pub(super) struct Replication {
    /// `master_replid`: a new one means another history.
    pub(super) id: String,
    /// The node is a replica (a demoted primary).
    pub(super) replica: bool,
}

#[derive(Debug, Default)]
pub(super) struct LogInfo {
    /// The last stream id, `(ms, seq)`.
    pub(super) last: (u64, u64),
    pub(super) added: u64,
    length: u64,
}

impl LogInfo {
    /// `(last-generated-id, entries-added, length)` of an `XINFO STREAM` answer.
    fn parse(value: Value) -> Result<Self, StoreError> {
        let info: HashMap<String, Value> = redis::from_redis_value(value)
            .map_err(|e| StoreError::Corrupt(format!("XINFO: {e}")))?;
        let number = |name: &str| -> Result<u64, StoreError> {
            let value = info
                .get(name)
                .ok_or_else(|| StoreError::Corrupt(format!("XINFO without {name}")))?;
            redis::from_redis_value_ref(value)
                .map_err(|e| StoreError::Corrupt(format!("XINFO {name}: {e}")))
        };
        Ok(Self {
            last: info
                .get("last-generated-id")
                .and_then(parse_id_value)
                .unwrap_or_default(),
            added: number("entries-added")?,
            length: number("length")?,
        })
    }

    /// Whether the entry after `cursor` may be gone. Trimming removes
    /// entries from the front only, so the entries present are the last
    /// `length` of the `added`.
    pub(super) fn trimmed_past(&self, cursor: Cursor) -> bool {
        let Cursor::Stream { added, .. } = cursor else {
            return true;
        };
        let first_present = self.added.saturating_sub(self.length) + 1;
        first_present > added + 1
    }

    /// Whether the log ends before `cursor`: its ids went backwards, as on
    /// a promoted replica that never received the last entries, or fewer
    /// entries were ever added than the cursor counted (the stream itself
    /// was reset).
    pub(super) fn ends_before(&self, cursor: Cursor) -> bool {
        let Cursor::Stream { ms, seq, added } = cursor else {
            return true;
        };
        self.last < (ms, seq) || self.added < added
    }
}

/// A stream id, `(ms, seq)`.
pub(super) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn parse_id_value(value: &Value) -> Option<(u64, u64)> {
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

pub(super) fn parse_change(map: &HashMap<String, Value>) -> Result<Change, StoreError> {
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
        "api_key" => {
            let data: String = field(map, "data")?;
            Ok(Change::ApiKey(Box::new(ApiKeyRecord::from_log(&data)?)))
        }
        other => Err(StoreError::Corrupt(format!("change kind {other:?}"))),
    }
}
