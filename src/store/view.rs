//! The local view of the store that every request is checked against.
//!
//! Requests read memory only: the live revoked-jti set and a moka cache of
//! user records. A user missing from the cache is loaded once (concurrent
//! misses for one user wait for the same load). The follower keeps both
//! current from the change log and says when the view was last confirmed
//! fresh; `max_staleness` is the promise built on that.
//!
//! A write made on this instance goes through the view (`revoke_token`,
//! `end_session`, `bump_user`, `bump_user_keeping`, `set_disabled`,
//! `rotate`): the store first, so nothing is confirmed that the store did
//! not accept, then the view at once, before the change log brings the
//! write back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::ops::compute::Op;

use super::api_keys::{ApiKeyRecord, ApiKeySet};
use super::{
    session_marker, Change, RotateOutcome, Rotation, SessionRecord, Store, StoreError, UserRecord,
};
use crate::auth::{AccessClaims, AuthError};
pub use crate::config::raw::OnUnavailable;

#[derive(Debug, Clone)]
pub struct ViewSettings {
    pub max_staleness: Duration,
    pub on_unavailable: OnUnavailable,
    pub user_cache_entries: u64,
}

/// Whether the token may have been issued before the user's cut-off.
/// `not_before` and `iat` are whole seconds, so a token of the cut-off's
/// own second may predate it: only the user's current `ver` proves it was
/// issued after the bump. Without it, that second counts as before.
fn before_cut_off(claims: &AccessClaims, user: &UserRecord) -> bool {
    claims.iat < user.not_before
        || (user.not_before != 0
            && claims.iat == user.not_before
            && claims.ver != Some(user.version))
}

/// A user record and the view generation it was loaded in.
#[derive(Debug, Clone, Copy)]
struct CachedUser {
    record: UserRecord,
    generation: u64,
}

pub struct RevocationView {
    store: Arc<dyn Store>,
    settings: ViewSettings,
    revoked: RwLock<HashMap<Box<str>, u64>>,
    users: Cache<String, CachedUser>,
    /// Bumped by every resync: entries of older generations count as misses,
    /// so a load that raced a resync cannot leave a stale record behind.
    generation: AtomicU64,
    started: Instant,
    /// One plus the nanoseconds after `started` when the view was last
    /// confirmed fresh; 0 until the first confirmation.
    fresh_at: AtomicU64,
    /// How far into the change log the follower has applied.
    position: std::sync::Mutex<Option<super::Cursor>>,
    /// The API keys, fed by the same change log.
    api_keys: ApiKeySet,
}

impl RevocationView {
    pub fn new(store: Arc<dyn Store>, settings: ViewSettings) -> Self {
        let users = Cache::builder()
            .max_capacity(settings.user_cache_entries)
            .build();
        Self {
            store,
            settings,
            revoked: RwLock::new(HashMap::new()),
            users,
            generation: AtomicU64::new(0),
            started: Instant::now(),
            fresh_at: AtomicU64::new(0),
            position: std::sync::Mutex::new(None),
            api_keys: ApiKeySet::default(),
        }
    }

    /// The revocation, version and account checks, run on every request
    /// after the token itself was verified (cached or not).
    pub async fn check(&self, claims: &AccessClaims) -> Result<(), AuthError> {
        if !self.is_fresh() && self.settings.on_unavailable == OnUnavailable::Deny {
            return Err(AuthError::Unavailable);
        }
        // A logged-out or stolen session revokes every token it issued at
        // once, through one marker for its `sid`.
        // One read of the set for both; a poisoned lock counts as revoked.
        let revoked = self.revoked.read().map_or(true, |set| {
            let session = claims.sid.as_deref();
            session.is_some_and(|sid| set.contains_key(session_marker(sid).as_str()))
                || (!claims.jti.is_empty() && set.contains_key(claims.jti.as_str()))
        });
        if revoked {
            return Err(AuthError::Revoked);
        }
        let user = self.user(&claims.sub).await.map_err(|e| {
            crate::metrics::METRICS
                .store_errors
                .with_label_values(&["load_user"])
                .inc();
            tracing::warn!(error = %e, "user record unavailable");
            AuthError::Unavailable
        })?;
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        // Tokens from external issuers carry no `ver`; `iat` covers them.
        if claims.ver.is_some_and(|ver| ver < user.version) || before_cut_off(claims, &user) {
            return Err(AuthError::Revoked);
        }
        Ok(())
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .map(|set| set.contains_key(jti))
            .unwrap_or(true)
    }

    /// The user's record from the cache, loading it on a miss.
    pub async fn user(&self, sub: &str) -> Result<UserRecord, StoreError> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(cached) = self
            .users
            .get(sub)
            .await
            .filter(|c| c.generation == generation)
        {
            return Ok(cached.record);
        }
        // Boxed: the store's future is large and every request's check
        // would otherwise carry it, hit or miss.
        Box::pin(self.load_user(sub, generation)).await
    }

    /// A cache miss: one load from the store per user, however many
    /// requests wait for it.
    async fn load_user(&self, sub: &str, generation: u64) -> Result<UserRecord, StoreError> {
        let store = Arc::clone(&self.store);
        let result = self
            .users
            .entry(sub.to_owned())
            .and_try_compute_with(|existing| async move {
                if existing.is_some_and(|e| e.value().generation == generation) {
                    return Ok(Op::Nop);
                }
                let record = store.user(sub).await?;
                Ok::<_, StoreError>(Op::Put(CachedUser { record, generation }))
            })
            .await?;
        let entry = result
            .into_entry()
            .ok_or_else(|| StoreError::Task("user cache entry vanished".into()))?;
        Ok(entry.into_value().record)
    }

    /// Revokes one token until `exp`.
    pub async fn revoke_token(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        self.store.revoke_token(jti, exp).await?;
        let jti = jti.to_owned();
        self.apply(&Change::TokenRevoked { jti, exp }).await;
        Ok(())
    }

    /// Ends a session and refuses its access tokens until `revoke_until`
    /// (through its marker); `None` when it was not active.
    pub async fn end_session(
        &self,
        sid: &str,
        revoke_until: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let ended = self.store.end_session(sid, revoke_until).await?;
        if ended.is_some() {
            let jti = session_marker(sid);
            self.apply(&Change::TokenRevoked {
                jti,
                exp: revoke_until,
            })
            .await;
        }
        Ok(ended)
    }

    /// Rotates a session's refresh token in the store; when the store found
    /// the token reused and revoked the session, its access tokens are
    /// refused here at once.
    pub async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let outcome = self.store.rotate(rotation).await?;
        if matches!(outcome, RotateOutcome::Reused) {
            let jti = session_marker(&rotation.sid);
            self.apply(&Change::TokenRevoked {
                jti,
                exp: rotation.revoke_until,
            })
            .await;
        }
        Ok(outcome)
    }

    /// Logout everywhere for `sub` (see [`Store::bump_user`]).
    pub async fn bump_user(&self, sub: &str, now: u64) -> Result<UserRecord, StoreError> {
        let record = self.store.bump_user(sub, now).await?;
        self.apply_user(sub, record).await;
        Ok(record)
    }

    /// Logout everywhere for `sub` but the session `keep` (see
    /// [`Store::bump_user_keeping`]).
    pub async fn bump_user_keeping(
        &self,
        sub: &str,
        keep: &str,
        now: u64,
    ) -> Result<(UserRecord, bool), StoreError> {
        let (record, kept) = self.store.bump_user_keeping(sub, keep, now).await?;
        self.apply_user(sub, record).await;
        Ok((record, kept))
    }

    pub async fn set_disabled(&self, sub: &str, disabled: bool) -> Result<UserRecord, StoreError> {
        let record = self.store.set_disabled(sub, disabled).await?;
        self.apply_user(sub, record).await;
        Ok(record)
    }

    async fn apply_user(&self, sub: &str, record: UserRecord) {
        let sub = sub.to_owned();
        self.apply(&Change::User { sub, record }).await;
    }

    /// The identity an API key stands for, checked like a token: against
    /// a fresh view (else per `on_unavailable`), then its own state, then
    /// its subject's account. Memory only, unless the subject's record is
    /// not cached.
    pub async fn check_api_key(
        &self,
        presented: &str,
        now: u64,
    ) -> Result<AccessClaims, AuthError> {
        if !self.is_fresh() && self.settings.on_unavailable == OnUnavailable::Deny {
            return Err(AuthError::Unavailable);
        }
        let claims = self
            .api_keys
            .check(presented, now)
            .map_err(|refused| refused.auth_error())?;
        let user = self.user(&claims.sub).await.map_err(|e| {
            crate::metrics::METRICS
                .store_errors
                .with_label_values(&["load_user"])
                .inc();
            tracing::warn!(error = %e, "user record unavailable");
            AuthError::Unavailable
        })?;
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        Ok(claims)
    }

    /// Stores a new key, then holds it here at once.
    pub async fn create_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.store.create_api_key(record).await?;
        self.api_keys.apply(record);
        Ok(())
    }

    /// Revokes a key in the store, then refuses it here at once.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let revoked = self.store.revoke_api_key(id, now).await?;
        if let Some(record) = &revoked {
            self.api_keys.apply(record);
        }
        Ok(revoked)
    }

    /// Replaces nothing: every key of a snapshot is applied (revocations
    /// held are kept, see [`ApiKeySet::apply`]).
    pub fn load_api_keys(&self, records: &[ApiKeyRecord]) {
        for record in records {
            self.api_keys.apply(record);
        }
    }

    /// Writes the uses noted since the last call to the store (the
    /// maintenance loop's job).
    pub async fn write_api_key_uses(&self) -> Result<(), StoreError> {
        let uses = self.api_keys.unwritten_uses();
        if uses.is_empty() {
            return Ok(());
        }
        self.store.record_api_key_uses(&uses).await
    }

    /// API keys held (for metrics).
    pub fn api_keys_len(&self) -> usize {
        self.api_keys.len()
    }

    /// Applies one change from the log (or from a local write).
    pub async fn apply(&self, change: &Change) {
        match change {
            Change::TokenRevoked { jti, exp } => {
                if let Ok(mut set) = self.revoked.write() {
                    let entry = set.entry(Box::from(jti.as_str())).or_insert(*exp);
                    *entry = (*entry).max(*exp);
                }
            }
            Change::ApiKey(record) => self.api_keys.apply(record),
            Change::User { sub, record } => {
                let generation = self.generation.load(Ordering::Acquire);
                let record = *record;
                self.users
                    .entry(sub.clone())
                    .and_compute_with(|existing| async move {
                        let newer = existing.is_none_or(|e| {
                            e.value().generation != generation
                                || e.value().record.revision < record.revision
                        });
                        if newer {
                            Op::Put(CachedUser { record, generation })
                        } else {
                            Op::Nop
                        }
                    })
                    .await;
            }
        }
    }

    /// Replaces the whole view with a snapshot of the store.
    ///
    /// Revocations already held are kept: a revocation is never undone
    /// (only its expiry removes it), and one written after the snapshot was
    /// read may already be applied here.
    pub fn reset(&self, revoked: Vec<(String, u64)>) {
        if let Ok(mut set) = self.revoked.write() {
            for (jti, exp) in revoked {
                let entry = set.entry(jti.into_boxed_str()).or_insert(exp);
                *entry = (*entry).max(exp);
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.users.invalidate_all();
    }

    /// Drops revocations of tokens that expired (plus the leeway) anyway.
    pub fn sweep_expired(&self, now: u64, leeway: Duration) {
        let cut = now.saturating_sub(leeway.as_secs());
        if let Ok(mut set) = self.revoked.write() {
            set.retain(|_, exp| *exp >= cut);
        }
    }

    /// Everything up to the store's state at `as_of` is applied.
    pub fn confirm_fresh(&self, as_of: Instant) {
        let nanos = as_of.saturating_duration_since(self.started).as_nanos() as u64;
        self.fresh_at
            .fetch_max(nanos.saturating_add(1), Ordering::AcqRel);
    }

    /// How long ago the view was last confirmed fresh; `None` if never.
    pub fn staleness(&self) -> Option<Duration> {
        let at = self.fresh_at.load(Ordering::Acquire);
        (at != 0).then(|| {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_nanos(at - 1))
        })
    }

    pub fn is_fresh(&self) -> bool {
        self.staleness()
            .is_some_and(|age| age <= self.settings.max_staleness)
    }

    pub fn set_position(&self, cursor: super::Cursor) {
        if let Ok(mut position) = self.position.lock() {
            *position = Some(cursor);
        }
    }

    pub fn position(&self) -> Option<super::Cursor> {
        self.position.lock().ok().and_then(|p| *p)
    }

    pub fn max_staleness(&self) -> Duration {
        self.settings.max_staleness
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Revoked tokens held (for metrics and benches).
    pub fn revoked_len(&self) -> usize {
        self.revoked.read().map_or(0, |set| set.len())
    }

    /// Cached user records (approximate).
    pub fn cached_users(&self) -> u64 {
        self.users.entry_count()
    }
}
