//! The embedded store: one SQLite file in WAL mode.
//!
//! Every call runs on tokio's blocking pool, so a slow disk never stalls the
//! proxy's async workers. The change log is a table with an increasing row
//! id; local writes wake a waiting reader at once, other processes sharing
//! the file are seen when the reader polls.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::Notify;

use super::{
    session_marker, ApiKeyRecord, Batch, Change, Cursor, Retention, RotateOutcome, Rotation,
    SessionRecord, SessionStatus, Store, StoreError, UserRecord,
};

/// Each entry migrates the schema from its index to the next version.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE users (
        sub TEXT PRIMARY KEY,
        version INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER NOT NULL DEFAULT 0,
        revision INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE revoked_tokens (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL);
    CREATE INDEX revoked_tokens_exp ON revoked_tokens (exp);
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER NOT NULL DEFAULT 0,
        revision INTEGER NOT NULL DEFAULT 0,
        exp INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('trimmed_through', 0);
"#,
    r#"
    CREATE TABLE sessions (
        sid TEXT PRIMARY KEY,
        sub TEXT NOT NULL,
        device TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_refresh INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        idle_ttl INTEGER NOT NULL,
        current_hash TEXT NOT NULL,
        previous_hash TEXT,
        rotated_at_ms INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        grants TEXT NOT NULL,
        sealed_pair BLOB
    );
    CREATE INDEX sessions_sub ON sessions (sub);
    CREATE TABLE refresh_index (hash TEXT PRIMARY KEY, sid TEXT NOT NULL);
    CREATE INDEX refresh_index_sid ON refresh_index (sid);
"#,
    // Sessions opened before `auth_time` existed were last authenticated
    // when they were opened.
    r#"
    ALTER TABLE sessions ADD COLUMN auth_time INTEGER NOT NULL DEFAULT 0;
    UPDATE sessions SET auth_time = created;
"#,
    // API keys: the record (with the key's SHA-256, never the key) as the
    // change log carries it, and when it was last used.
    r#"
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        last_used INTEGER
    );
    ALTER TABLE changes ADD COLUMN data TEXT;
"#,
];

const SESSION_COLUMNS: &str =
    "sid, sub, device, created, last_refresh, expires_at, idle_ttl, current_hash, \
    previous_hash, rotated_at_ms, version, status, grants, sealed_pair, auth_time";

fn read_session(row: &rusqlite::Row) -> rusqlite::Result<(SessionRecord, String)> {
    let status: String = row.get(11)?;
    Ok((
        SessionRecord {
            sid: row.get(0)?,
            sub: row.get(1)?,
            device: row.get(2)?,
            created: row.get(3)?,
            last_refresh: row.get(4)?,
            expires_at: row.get(5)?,
            idle_ttl: row.get(6)?,
            current_hash: row.get(7)?,
            previous_hash: row.get(8)?,
            rotated_at_ms: row.get(9)?,
            version: row.get(10)?,
            status: SessionStatus::Active,
            grants: row.get(12)?,
            sealed_pair: row.get(13)?,
            auth_time: row.get(14)?,
        },
        status,
    ))
}

fn finish_session(read: (SessionRecord, String)) -> Result<SessionRecord, StoreError> {
    let (mut session, status) = read;
    session.status = SessionStatus::parse(&status)?;
    Ok(session)
}

fn session_by_sid(conn: &Connection, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE sid = ?1");
    conn.query_row(&sql, [sid], read_session)
        .optional()?
        .map(finish_session)
        .transpose()
}

/// Revokes `key` (a jti or a session marker) inside a write transaction.
fn revoke_in(tx: &Transaction, key: &str, exp: u64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO revoked_tokens (jti, exp) VALUES (?1, ?2) ON CONFLICT (jti) DO UPDATE SET exp = MAX(exp, ?2)",
        params![key, exp],
    )?;
    tx.execute(
        "INSERT INTO changes (kind, key, exp) VALUES ('token', ?1, ?2)",
        params![key, exp],
    )?;
    Ok(())
}

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    changed: Arc<Notify>,
    retention: Retention,
}

impl SqliteStore {
    pub async fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || open_and_migrate(&path))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            changed: Arc::new(Notify::new()),
            retention,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| StoreError::Task("connection lock poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T, StoreError> + Send + 'static,
    {
        let out = self
            .with(move |conn| {
                // IMMEDIATE: take the write lock up front, so a writer in
                // another process sharing the file makes us wait (busy
                // timeout) instead of failing a read-then-write transaction.
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            })
            .await?;
        self.changed.notify_waiters();
        Ok(out)
    }
}

fn open_and_migrate(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Task(format!("{}: {e}", dir.display())))?;
    }
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Plans fixed at prepare time. Otherwise this SQLite (built with STAT4)
    // compiles a cached statement again whenever a value bound to its
    // LIMIT or to an indexed comparison is bound anew: the change feed's
    // read, every poll, cost as much as parsing it afresh.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Durable at commit in WAL mode except on power loss; an acknowledged
    // revocation survives a crash of the process.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let current: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "schema version {current} is newer than this portcullis"
        )));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(conn)
}

fn read_user(conn: &Connection, sub: &str) -> Result<UserRecord, StoreError> {
    let record = conn
        .query_row(
            "SELECT version, disabled, not_before, revision FROM users WHERE sub = ?1",
            [sub],
            |row| {
                Ok(UserRecord {
                    version: row.get(0)?,
                    disabled: row.get(1)?,
                    not_before: row.get(2)?,
                    revision: row.get(3)?,
                })
            },
        )
        .optional()?;
    Ok(record.unwrap_or_default())
}

fn log_user(tx: &Transaction, sub: &str, r: &UserRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO changes (kind, key, version, disabled, not_before, revision) VALUES ('user', ?1, ?2, ?3, ?4, ?5)",
        params![sub, r.version, r.disabled, r.not_before, r.revision],
    )?;
    Ok(())
}

/// Applies `change` to the user's row (created on first write) and logs it.
fn update_user(
    tx: &Transaction,
    sub: &str,
    change: impl FnOnce(&mut UserRecord),
) -> Result<UserRecord, StoreError> {
    let mut record = read_user(tx, sub)?;
    change(&mut record);
    record.revision += 1;
    tx.execute(
        "INSERT INTO users (sub, version, disabled, not_before, revision) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (sub) DO UPDATE SET version = ?2, disabled = ?3, not_before = ?4, revision = ?5",
        params![sub, record.version, record.disabled, record.not_before, record.revision],
    )?;
    log_user(tx, sub, &record)?;
    Ok(record)
}

fn head(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<u64> = conn.query_row("SELECT MAX(seq) FROM changes", [], |row| row.get(0))?;
    let trimmed: u64 = conn.query_row(
        "SELECT value FROM meta WHERE key = 'trimmed_through'",
        [],
        |r| r.get(0),
    )?;
    Ok(max.unwrap_or(0).max(trimmed))
}

/// Reads the rows first and checks for trimming after, inside one read
/// transaction: a purge by another process sharing the file cannot slip
/// between the two and hide a gap.
fn read_changes(conn: &mut Connection, after: u64, limit: usize) -> Result<Batch, StoreError> {
    let tx = conn.transaction()?;
    let batch = read_rows(&tx, after, limit)?;
    let trimmed: u64 = tx.query_row(
        "SELECT value FROM meta WHERE key = 'trimmed_through'",
        [],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(if trimmed > after {
        Batch::Behind
    } else {
        batch
    })
}

/// The change log's entries after a position, oldest first, at most a limit.
const CHANGES_AFTER: &str =
    "SELECT seq, kind, key, version, disabled, not_before, revision, exp, data \
     FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2";

fn read_rows(conn: &Connection, after: u64, limit: usize) -> Result<Batch, StoreError> {
    let mut stmt = conn.prepare_cached(CHANGES_AFTER)?;
    let mut cursor = Cursor::Row { seq: after };
    let mut changes = Vec::new();
    let mut rows = stmt.query(params![after, limit as u64])?;
    while let Some(row) = rows.next()? {
        cursor = Cursor::Row { seq: row.get(0)? };
        let kind: String = row.get(1)?;
        let key: String = row.get(2)?;
        changes.push(match kind.as_str() {
            "user" => Change::User {
                sub: key,
                record: UserRecord {
                    version: row.get(3)?,
                    disabled: row.get(4)?,
                    not_before: row.get(5)?,
                    revision: row.get(6)?,
                },
            },
            "token" => Change::TokenRevoked {
                jti: key,
                exp: row.get(7)?,
            },
            "api_key" => {
                let data: Option<String> = row.get(8)?;
                Change::ApiKey(Box::new(ApiKeyRecord::from_log(&data.unwrap_or_default())?))
            }
            other => return Err(StoreError::Corrupt(format!("change kind {other:?}"))),
        });
    }
    Ok(Batch::Changes { changes, cursor })
}

/// Writes a key's record (a new one, or over the one held) and its
/// change log entry. A new key whose id is taken fails.
fn put_api_key(tx: &Transaction, record: &ApiKeyRecord, new: bool) -> Result<(), StoreError> {
    let data = record.to_log();
    let sql = match new {
        true => "INSERT INTO api_keys (id, record) VALUES (?1, ?2)",
        false => "UPDATE api_keys SET record = ?2 WHERE id = ?1",
    };
    tx.execute(sql, params![record.id, data])?;
    tx.execute(
        "INSERT INTO changes (kind, key, data) VALUES ('api_key', ?1, ?2)",
        params![record.id, data],
    )?;
    Ok(())
}

/// A stored record with its last use.
fn with_use(data: &str, last_used: Option<u64>) -> Result<ApiKeyRecord, StoreError> {
    let record = ApiKeyRecord::from_log(data)?;
    Ok(ApiKeyRecord {
        last_used,
        ..record
    })
}

fn read_api_key(conn: &Connection, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
    let row: Option<(String, Option<u64>)> = conn
        .query_row(
            "SELECT record, last_used FROM api_keys WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    row.map(|(data, last_used)| with_use(&data, last_used))
        .transpose()
}

fn all_api_keys(conn: &Connection) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT record, last_used FROM api_keys ORDER BY id")?;
    let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?;
    rows.map(|row| {
        let (data, last_used) = row?;
        with_use(&data, last_used)
    })
    .collect()
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn user(&self, sub: &str) -> Result<UserRecord, StoreError> {
        let sub = sub.to_owned();
        self.with(move |conn| read_user(conn, &sub)).await
    }

    async fn bump_user(&self, sub: &str, now: u64) -> Result<UserRecord, StoreError> {
        let sub = sub.to_owned();
        self.write(move |tx| {
            update_user(tx, &sub, |r| {
                r.version += 1;
                r.not_before = now;
            })
        })
        .await
    }

    async fn bump_user_keeping(
        &self,
        sub: &str,
        keep: &str,
        now: u64,
    ) -> Result<(UserRecord, bool), StoreError> {
        let (sub, keep) = (sub.to_owned(), keep.to_owned());
        self.write(move |tx| {
            let record = update_user(tx, &sub, |r| {
                r.version += 1;
                r.not_before = now;
            })?;
            let kept = tx.execute(
                "UPDATE sessions SET version = ?3 WHERE sid = ?1 AND sub = ?2 AND status = 'active'",
                params![keep, sub, record.version],
            )?;
            Ok((record, kept == 1))
        })
        .await
    }

    async fn set_disabled(&self, sub: &str, disabled: bool) -> Result<UserRecord, StoreError> {
        let sub = sub.to_owned();
        self.write(move |tx| update_user(tx, &sub, |r| r.disabled = disabled))
            .await
    }

    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        self.write(move |tx| revoke_in(tx, &jti, exp)).await
    }

    async fn revoked_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let keep_after = now.saturating_sub(self.retention.after_expiry.as_secs());
        self.with(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT jti, exp FROM revoked_tokens WHERE exp >= ?1")?;
            let rows = stmt.query_map([keep_after], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        self.with(|conn| Ok(Cursor::Row { seq: head(conn)? })).await
    }

    async fn changes_since(
        &self,
        cursor: Cursor,
        wait: Duration,
        limit: usize,
    ) -> Result<Batch, StoreError> {
        let Cursor::Row { seq: after } = cursor else {
            return Ok(Batch::Behind);
        };
        // Register for the wake-up before reading, so a write between the
        // read and the wait is not missed.
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let first = self
            .with(move |conn| read_changes(conn, after, limit))
            .await?;
        if !matches!(&first, Batch::Changes { changes, .. } if changes.is_empty()) || wait.is_zero()
        {
            return Ok(first);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.with(move |conn| read_changes(conn, after, limit))
            .await
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        let keep_after = now.saturating_sub(self.retention.after_expiry.as_secs());
        let keep_entries = self.retention.log_entries;
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let tokens = tx.execute("DELETE FROM revoked_tokens WHERE exp < ?1", [keep_after])?;
            tx.execute(
                "DELETE FROM refresh_index WHERE sid IN (SELECT sid FROM sessions WHERE expires_at < ?1)",
                [now],
            )?;
            let sessions = tx.execute("DELETE FROM sessions WHERE expires_at < ?1", [now])?;
            let last = head(&tx)?;
            let cut = last.saturating_sub(keep_entries);
            let entries = tx.execute("DELETE FROM changes WHERE seq <= ?1", [cut])?;
            if entries > 0 {
                tx.execute(
                    "UPDATE meta SET value = MAX(value, ?1) WHERE key = 'trimmed_through'",
                    [cut],
                )?;
            }
            tx.commit()?;
            Ok((tokens + sessions + entries) as u64)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let session = session.clone();
        self.write(move |tx| {
            tx.execute(
                &format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
                params![
                    session.sid,
                    session.sub,
                    session.device,
                    session.created,
                    session.last_refresh,
                    session.expires_at,
                    session.idle_ttl,
                    session.current_hash,
                    session.previous_hash,
                    session.rotated_at_ms,
                    session.version,
                    session.status.as_str(),
                    session.grants,
                    session.sealed_pair,
                    session.auth_time,
                ],
            )?;
            tx.execute(
                "INSERT INTO refresh_index (hash, sid) VALUES (?1, ?2)",
                params![session.current_hash, session.sid],
            )?;
            Ok(())
        })
        .await
    }

    async fn session_by_refresh(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let hash = hash.to_owned();
        self.with(move |conn| {
            let sid: Option<String> = conn
                .query_row(
                    "SELECT sid FROM refresh_index WHERE hash = ?1",
                    [&hash],
                    |row| row.get(0),
                )
                .optional()?;
            match sid {
                Some(sid) => session_by_sid(conn, &sid),
                None => Ok(None),
            }
        })
        .await
    }

    async fn session(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sid = sid.to_owned();
        self.with(move |conn| session_by_sid(conn, &sid)).await
    }

    async fn sessions_of(&self, sub: &str, now: u64) -> Result<Vec<SessionRecord>, StoreError> {
        let sub = sub.to_owned();
        self.with(move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE sub = ?1 AND expires_at > ?2 ORDER BY created DESC, sid"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![sub, now], read_session)?;
            rows.map(|row| finish_session(row?)).collect()
        })
        .await
    }

    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let r = rotation.clone();
        self.write(move |tx| {
            let Some(session) = session_by_sid(tx, &r.sid)? else {
                return Ok(RotateOutcome::Inactive);
            };
            if !session.is_live(r.now) {
                return Ok(RotateOutcome::Inactive);
            }
            if r.presented_hash == session.current_hash {
                let sealed = (!r.sealed_pair.is_empty()).then_some(&r.sealed_pair);
                let auth_time = r.auth_time.unwrap_or(session.auth_time);
                tx.execute(
                    "UPDATE sessions SET current_hash = ?2, previous_hash = ?3, rotated_at_ms = ?4, last_refresh = ?5, \
                     sealed_pair = ?6, auth_time = ?7 WHERE sid = ?1",
                    params![r.sid, r.new_hash, r.presented_hash, r.now_ms, r.now, sealed, auth_time],
                )?;
                tx.execute("INSERT INTO refresh_index (hash, sid) VALUES (?1, ?2)", params![r.new_hash, r.sid])?;
                return Ok(RotateOutcome::Rotated);
            }
            let in_grace = r.now_ms.saturating_sub(session.rotated_at_ms) < r.grace_ms;
            if session.previous_hash.as_deref() == Some(r.presented_hash.as_str()) && in_grace {
                if let Some(sealed_pair) = session.sealed_pair {
                    return Ok(RotateOutcome::Replay { sealed_pair });
                }
            }
            tx.execute("UPDATE sessions SET status = 'revoked', sealed_pair = NULL WHERE sid = ?1", [&r.sid])?;
            revoke_in(tx, &session_marker(&r.sid), r.revoke_until)?;
            Ok(RotateOutcome::Reused)
        })
        .await
    }

    async fn end_session(
        &self,
        sid: &str,
        revoke_until: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sid = sid.to_owned();
        self.write(move |tx| {
            let session = session_by_sid(tx, &sid)?;
            if session
                .as_ref()
                .is_some_and(|s| s.status == SessionStatus::Active)
            {
                tx.execute(
                    "UPDATE sessions SET status = 'ended', sealed_pair = NULL WHERE sid = ?1",
                    [&sid],
                )?;
                revoke_in(tx, &session_marker(&sid), revoke_until)?;
            }
            Ok(session)
        })
        .await
    }

    async fn create_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.write(move |tx| put_api_key(tx, &record, true)).await
    }

    async fn revoke_api_key(&self, id: &str, now: u64) -> Result<Option<ApiKeyRecord>, StoreError> {
        let id = id.to_owned();
        self.write(move |tx| {
            let Some(mut record) = read_api_key(tx, &id)? else {
                return Ok(None);
            };
            if record.revoked.is_none() {
                record.revoked = Some(now);
                put_api_key(tx, &record, false)?;
            }
            Ok(Some(record))
        })
        .await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.with(|conn| all_api_keys(conn)).await
    }

    async fn record_api_key_uses(&self, uses: &[(String, u64)]) -> Result<(), StoreError> {
        let uses = uses.to_vec();
        // Not through `write`: no change log entry, nobody to wake.
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (id, at) in &uses {
                tx.execute(
                    "UPDATE api_keys SET last_used = MAX(COALESCE(last_used, 0), ?2) WHERE id = ?1",
                    params![id, at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn active_sessions(&self, now: u64) -> Result<u64, StoreError> {
        self.with(move |conn| {
            let count: u64 = conn.query_row(
                "SELECT COUNT(*) FROM sessions WHERE status = 'active' AND expires_at > ?1",
                [now],
                |row| row.get(0),
            )?;
            Ok(count)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    #[test]
    fn a_poll_of_the_change_log_reuses_its_compiled_statement() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut conn = open_and_migrate(&dir.path().join("state.db")).expect("store");
        // New values for both parameters, as the follower binds after each
        // batch and a resync binds another limit.
        for (after, limit) in [(0, 1000), (7, 1000), (7, 10), (42, 1)] {
            assert!(matches!(
                read_changes(&mut conn, after, limit).expect("read"),
                Batch::Changes { .. }
            ));
        }
        let stmt = conn
            .prepare_cached(CHANGES_AFTER)
            .expect("cached statement");
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
        assert_eq!(stmt.get_status(StatementStatus::Run), 4);
    }

    /// A store written before sessions had `auth_time`: opened by this
    /// version, its sessions read `auth_time` as their `created`.
    #[test]
    fn a_session_from_before_auth_time_reads_it_as_created() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).expect("open");
            for migration in &MIGRATIONS[..2] {
                conn.execute_batch(migration).expect("old schema");
            }
            conn.pragma_update(None, "user_version", 2)
                .expect("version");
            conn.execute(
                "INSERT INTO sessions (sid, sub, device, created, last_refresh, expires_at, idle_ttl, \
                 current_hash, version, status, grants) VALUES ('s', 'u', 'd', 1000, 1000, 9000, 60, 'h', 0, 'active', '{}')",
                [],
            )
            .expect("old session");
        }
        let conn = open_and_migrate(&path).expect("migrated");
        let session = session_by_sid(&conn, "s").expect("read").expect("session");
        assert_eq!(session.auth_time, 1000);
    }
}
