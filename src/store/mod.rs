//! The shared state behind revocation: user records, revoked tokens and an
//! ordered change log, behind one trait with a SQLite and a Redis backend.
//!
//! Requests never read the store directly: `view` keeps a local copy that
//! `follower` keeps current from the change log. This module does not know
//! pingora.

pub mod api_keys;
pub mod follower;
pub mod location;
mod open;
pub mod rate_limit;
pub mod redis;
pub mod redis_link;
mod redis_log;
mod redis_rate_limit;
mod redis_records;
mod redis_writes;
pub mod sqlite;
pub mod view;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub use api_keys::ApiKeyRecord;
pub use location::StoreLocation;
pub use open::{open, open_with};
pub use redis_link::RedisOptions;
pub use view::{RevocationView, ViewSettings};

/// What the gateway knows about a user. A user with no record has
/// version 0, is enabled and has no cut-off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    /// Bumped by "log out everywhere"; tokens carrying a lower `ver` die.
    pub version: u64,
    pub disabled: bool,
    /// Tokens issued (`iat`) before this Unix time die; 0 = no cut-off.
    pub not_before: u64,
    /// Increases with every write, so an older copy never replaces a newer one.
    #[serde(skip)]
    pub revision: u64,
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    User {
        sub: String,
        record: UserRecord,
    },
    TokenRevoked {
        jti: String,
        exp: u64,
    },
    /// An API key created or revoked: its whole record (boxed: it is
    /// larger than the other changes).
    ApiKey(Box<ApiKeyRecord>),
}

/// A position in the change log, in the terms of the backend that gave it.
/// A position from one backend means nothing to another: it reads as
/// behind, and the follower resyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// SQLite: the `seq` (row id) of the last entry read, 0 before the first.
    Row { seq: u64 },
    /// Redis: the last stream id read (`ms-seq`), and how many entries the
    /// stream had taken in up to it (`entries-added`, which trimming keeps).
    Stream { ms: u64, seq: u64, added: u64 },
}

impl Cursor {
    /// How many log entries lie between this position and a later one.
    pub fn entries_until(&self, later: &Cursor) -> u64 {
        match (self, later) {
            (Self::Row { seq: from }, Self::Row { seq: to }) => to.saturating_sub(*from),
            (Self::Stream { added: from, .. }, Self::Stream { added: to, .. }) => {
                to.saturating_sub(*from)
            }
            _ => 0,
        }
    }
}

/// The answer of [`Store::changes_since`].
#[derive(Debug)]
pub enum Batch {
    /// Changes after the cursor, oldest first, and the cursor after them.
    Changes {
        changes: Vec<Change>,
        cursor: Cursor,
    },
    /// Entries after the cursor were trimmed: the reader must resync.
    Behind,
    /// The log no longer continues the history the cursor was read in:
    /// another primary holds it (a failover, a restart), or it went
    /// backwards. The reader must resync, even when nothing was lost, so
    /// the move is seen (and counted) on every instance.
    Diverged,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("store task failed: {0}")]
    Task(String),
    #[error("store holds unreadable data: {0}")]
    Corrupt(String),
    /// A durable write reached the primary but fewer than `min_replicas`
    /// replicas confirmed it within `replica_timeout`: a failover now could
    /// lose it. Retrying is safe (the durable writes are idempotent).
    #[error("the write reached {acked} of {wanted} replicas in time")]
    NotReplicated { acked: u64, wanted: u32 },
    /// The node Sentinel named as primary answers as a replica now.
    #[error("the primary was demoted; asking the sentinels again")]
    Demoted,
}

impl From<api_keys::UnreadableRecord> for StoreError {
    fn from(unreadable: api_keys::UnreadableRecord) -> Self {
        Self::Corrupt(unreadable.to_string())
    }
}

/// How long entries outlive what they describe, and how long the log is.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Revoked tokens are kept until `exp + after_expiry` (the leeway).
    pub after_expiry: Duration,
    /// The change log keeps about this many entries.
    pub log_entries: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `redis`, for logs and metrics.
    fn kind(&self) -> &'static str;

    async fn user(&self, sub: &str) -> Result<UserRecord, StoreError>;

    /// Logout everywhere: version + 1 and `not_before = now`, atomically,
    /// with its change log entry.
    async fn bump_user(&self, sub: &str, now: u64) -> Result<UserRecord, StoreError>;

    /// Logout everywhere but on one device (a password change made on
    /// it): as [`Store::bump_user`], and in the same atomic write the
    /// session `keep`, when it is an active session of `sub`, moves to the
    /// new version, so its refresh token goes on working. Returns the new
    /// record and whether `keep` was kept.
    async fn bump_user_keeping(
        &self,
        sub: &str,
        keep: &str,
        now: u64,
    ) -> Result<(UserRecord, bool), StoreError>;

    async fn set_disabled(&self, sub: &str, disabled: bool) -> Result<UserRecord, StoreError>;

    /// Revokes `jti` until `exp` (plus the retention's leeway).
    async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError>;

    /// Every revoked token that is still live at `now`.
    async fn revoked_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError>;

    /// The newest position of the change log.
    async fn head(&self) -> Result<Cursor, StoreError>;

    /// Changes after `cursor`, waiting up to `wait` for the first one.
    async fn changes_since(
        &self,
        cursor: Cursor,
        wait: Duration,
        limit: usize,
    ) -> Result<Batch, StoreError>;

    /// Removes expired revocations and trims the log; returns rows removed.
    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new session and indexes its refresh token.
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// The session a refresh token (by hash) belongs to, for any of its
    /// generations.
    async fn session_by_refresh(&self, hash: &str) -> Result<Option<SessionRecord>, StoreError>;

    async fn session(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// The user's sessions, newest first, expired ones left out.
    async fn sessions_of(&self, sub: &str, now: u64) -> Result<Vec<SessionRecord>, StoreError>;

    /// Rotates, replays or revokes, atomically (see [`RotateOutcome`]).
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError>;

    /// Sessions neither ended nor revoked nor past their absolute end.
    async fn active_sessions(&self, now: u64) -> Result<u64, StoreError>;

    /// Ends an active session and revokes its access tokens until
    /// `revoke_until`; returns the session as it was, if it existed.
    async fn end_session(
        &self,
        sid: &str,
        revoke_until: u64,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// One rate-limit decision on state every instance shares (`rate_limit`);
    /// `Ok(None)` from a store local to this instance (SQLite): the caller
    /// decides in its own memory.
    async fn rate_limit(
        &self,
        _key: &[u8; 16],
        _gcra: &rate_limit::Gcra,
    ) -> Result<Option<rate_limit::Verdict>, StoreError> {
        Ok(None)
    }
    /// Stores a new API key (by hash) with its change log entry.
    async fn create_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError>;

    /// Marks a key revoked at `now` (kept at its first revocation), with
    /// its change log entry; `None` when no key has that id.
    async fn revoke_api_key(&self, id: &str, now: u64) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every key, revoked and expired ones included, with its last use.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Records when keys were last used, `(id, Unix seconds)`; an older
    /// time never replaces a newer one.
    async fn record_api_key_uses(&self, uses: &[(String, u64)]) -> Result<(), StoreError>;
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    /// Logged out, or signed out from another device.
    Ended,
    /// Killed by refresh-token reuse (theft detection).
    Revoked,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Ended => "ended",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(Self::Active),
            "ended" => Ok(Self::Ended),
            "revoked" => Ok(Self::Revoked),
            other => Err(StoreError::Corrupt(format!("session status {other:?}"))),
        }
    }
}

/// A refresh family: one login on one device. Refresh tokens are kept
/// only as SHA-256 hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub sid: String,
    pub sub: String,
    pub device: String,
    /// Unix seconds.
    pub created: u64,
    /// When the user last proved their credentials for this session (the
    /// login that opened it, or a later re-authentication), Unix seconds.
    /// Records written before it existed read it as `created`.
    pub auth_time: u64,
    pub last_refresh: u64,
    /// Absolute end: `created + max_age`, never extended by rotation.
    pub expires_at: u64,
    /// Idle lifetime in seconds: the session ends `idle_ttl` after the last refresh.
    pub idle_ttl: u64,
    pub current_hash: String,
    pub previous_hash: Option<String>,
    /// When `previous_hash` was rotated out, in Unix milliseconds.
    pub rotated_at_ms: u64,
    /// The user's token version at login.
    pub version: u64,
    pub status: SessionStatus,
    /// JSON: the roles, scope and claims every access token of the session carries.
    pub grants: String,
    /// The latest rotation's token pair, sealed under a key derived from
    /// the refresh token it replaced (for concurrent refreshes in the grace period).
    pub sealed_pair: Option<Vec<u8>>,
}

impl SessionRecord {
    /// Active, and neither past its absolute end nor idle for too long.
    pub fn is_live(&self, now: u64) -> bool {
        self.status == SessionStatus::Active
            && now < self.expires_at
            && now < self.last_refresh.saturating_add(self.idle_ttl)
    }
}

/// One refresh-token rotation, decided atomically by the store.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub sid: String,
    pub presented_hash: String,
    pub new_hash: String,
    pub now: u64,
    pub now_ms: u64,
    pub grace_ms: u64,
    /// Empty: the presented token gets no replay (a re-authentication),
    /// so presenting it again counts as reuse at once.
    pub sealed_pair: Vec<u8>,
    /// On reuse, the session's access tokens are revoked until then.
    pub revoke_until: u64,
    /// A re-authentication: the session's new `auth_time`.
    pub auth_time: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented token was current: it is now the previous one.
    Rotated,
    /// The presented token was rotated out within the grace period: here is
    /// the pair the winning rotation sealed.
    Replay { sealed_pair: Vec<u8> },
    /// A rotated-out token came back: the whole family is now revoked.
    Reused,
    /// The session is ended, revoked, expired or unknown.
    Inactive,
}

/// The marker a session's revocation is stored under in the revoked set;
/// every access token carrying that `sid` is refused while it is there.
pub fn session_marker(sid: &str) -> String {
    format!("sid:{sid}")
}

/// A store URL that did not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreUrlError(pub String);
