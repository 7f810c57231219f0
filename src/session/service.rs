//! Opening, refreshing and ending sessions, and logout.

use std::time::Duration;

use super::ratelimit::{FailureLimiter, TokenKey};
use super::secrets::{self, hash_refresh_token, new_refresh_token, new_session_id};
use super::{Entitlements, SessionSettings, TokenPair};
use crate::auth::issue::{mint, Issuance};
use crate::auth::{AccessClaims, SigningKey};
use crate::clock::{unix_now, unix_now_ms};
use crate::metrics::METRICS;
use crate::store::{
    RevocationView, RotateOutcome, Rotation, SessionRecord, SessionStatus, Store, StoreError,
};

/// What signs the access tokens of a session.
pub struct Issuer<'a> {
    pub signer: &'a SigningKey,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub access_ttl: Duration,
}

/// A session to open: who, what they may do, on which device.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub sub: String,
    pub entitlements: Entitlements,
    pub device: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the account is disabled")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(&'static str),
}

/// Why a login that presented a refresh token was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReauthError {
    /// The credentials proved another user than the session's.
    #[error("the refresh token belongs to another user")]
    OtherUser,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    /// Neither a session to end nor a `jti` to revoke: only revoking the
    /// user (a version bump) can take this token back.
    #[error("the token carries no jti and belongs to no live session")]
    NoJti,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// RFC 6749 §5.2 `invalid_grant`; the reason is for logs and metrics.
    #[error("invalid grant: {0}")]
    InvalidGrant(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(&'static str),
    /// This refresh token failed too often lately: retry after this many
    /// seconds.
    #[error("too many failed refreshes")]
    Limited(u64),
}

impl RefreshError {
    /// The `outcome` label of `portcullis_refreshes_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidGrant(_) => "invalid_grant",
            Self::Store(_) => "unavailable",
            Self::Internal(_) => "error",
            Self::Limited(_) => "too_many_requests",
        }
    }
}

pub struct Sessions {
    pub settings: SessionSettings,
}

impl Sessions {
    pub fn new(settings: SessionSettings) -> Self {
        Self { settings }
    }

    /// Opens a session for a user who just proved who they are.
    pub async fn open(
        &self,
        store: &dyn Store,
        issuer: &Issuer<'_>,
        new: NewSession,
    ) -> Result<(TokenPair, SessionRecord), SessionError> {
        let user = store.user(&new.sub).await?;
        if user.disabled {
            return Err(SessionError::Disabled);
        }
        let now = unix_now();
        let refresh_token =
            new_refresh_token().map_err(|_| SessionError::Internal("random source failed"))?;
        let session = SessionRecord {
            sid: new_session_id().map_err(|_| SessionError::Internal("random source failed"))?,
            sub: new.sub,
            device: new.device,
            created: now,
            auth_time: now,
            last_refresh: now,
            expires_at: now + self.settings.max_age.as_secs(),
            idle_ttl: self.settings.refresh_ttl.as_secs(),
            current_hash: hash_refresh_token(&refresh_token),
            previous_hash: None,
            rotated_at_ms: 0,
            version: user.version,
            status: SessionStatus::Active,
            grants: serde_json::to_string(&new.entitlements)
                .map_err(|_| SessionError::Internal("entitlements"))?,
            sealed_pair: None,
        };
        let pair = access_pair(
            issuer,
            &session,
            &new.entitlements,
            user.version,
            refresh_token,
            now,
        )
        .map_err(SessionError::Internal)?;
        store.create_session(&session).await?;
        METRICS.sessions_opened.inc();
        Ok((pair, session))
    }

    /// [`Self::refresh`], unless this token failed too often lately. Only
    /// the presented token's own failures count: a valid token is never
    /// slowed down by what other clients (behind the same address)
    /// presented. Counted in `portcullis_refreshes_total` by outcome.
    pub async fn refresh_limited(
        &self,
        view: &RevocationView,
        issuer: &Issuer<'_>,
        failures: &FailureLimiter,
        presented: &str,
    ) -> Result<TokenPair, RefreshError> {
        let key = TokenKey::of(presented);
        let refreshed = match failures.blocked(&key) {
            Some(wait) => Err(RefreshError::Limited(wait)),
            None => self.refresh(view, issuer, presented).await,
        };
        let outcome = refreshed
            .as_ref()
            .map_or_else(RefreshError::outcome, |_| "ok");
        METRICS.refreshes.with_label_values(&[outcome]).inc();
        if let Err(RefreshError::InvalidGrant(reason)) = &refreshed {
            tracing::info!(target: "portcullis::session", reason, "refresh refused");
            failures.record_failure(key);
        }
        refreshed
    }

    /// RFC 6749 §6 with rotation (RFC 9700 §4.14.2): a refresh token works
    /// once; its immediate predecessor presented again within the grace
    /// period gets the same new pair; any other old token kills the family.
    pub async fn refresh(
        &self,
        view: &RevocationView,
        issuer: &Issuer<'_>,
        presented: &str,
    ) -> Result<TokenPair, RefreshError> {
        let store = view.store().as_ref();
        let presented_hash = hash_refresh_token(presented);
        let session = store
            .session_by_refresh(&presented_hash)
            .await?
            .ok_or(RefreshError::InvalidGrant("unknown_token"))?;
        let now = unix_now();
        if !session.is_live(now) {
            return Err(RefreshError::InvalidGrant("session_inactive"));
        }
        let user = store.user(&session.sub).await?;
        if user.disabled || user.version > session.version {
            return Err(RefreshError::InvalidGrant("user_revoked"));
        }
        let entitlements: Entitlements = serde_json::from_str(&session.grants)
            .map_err(|_| RefreshError::Internal("stored entitlements unreadable"))?;
        let refresh_token =
            new_refresh_token().map_err(|_| RefreshError::Internal("random source failed"))?;
        let new_hash = hash_refresh_token(&refresh_token);
        let pair = access_pair(
            issuer,
            &session,
            &entitlements,
            user.version,
            refresh_token,
            now,
        )
        .map_err(RefreshError::Internal)?;
        let plain = serde_json::to_vec(&pair).map_err(|_| RefreshError::Internal("pair"))?;
        let sealed_pair =
            secrets::seal(presented, &plain).map_err(|_| RefreshError::Internal("seal"))?;
        let rotation = Rotation {
            sid: session.sid.clone(),
            presented_hash,
            new_hash,
            now,
            now_ms: unix_now_ms(),
            grace_ms: self.settings.reuse_grace.as_millis() as u64,
            sealed_pair,
            revoke_until: now + issuer.access_ttl.as_secs(),
            auth_time: None,
        };
        match view.rotate(&rotation).await? {
            RotateOutcome::Rotated => Ok(pair),
            RotateOutcome::Replay { sealed_pair } => {
                let plain = secrets::open(presented, &sealed_pair)
                    .map_err(|_| RefreshError::InvalidGrant("replay_unreadable"))?;
                serde_json::from_slice(&plain).map_err(|_| RefreshError::Internal("pair"))
            }
            RotateOutcome::Reused => {
                METRICS.reuse_detections.inc();
                tracing::warn!(sid = %session.sid, sub = %session.sub, "refresh token reuse: session revoked");
                Err(RefreshError::InvalidGrant("reuse_detected"))
            }
            RotateOutcome::Inactive => Err(RefreshError::InvalidGrant("session_inactive")),
        }
    }

    /// A login that presented the current refresh token of a live session:
    /// the user proved their credentials again on this device, so the
    /// session keeps its `sid` and device entry and gets `auth_time = now`
    /// and a new token pair. The presented token is rotated out without a
    /// replay grace: presenting it again is reuse.
    ///
    /// `Ok(None)` when the token gives no session to keep (unknown, not the
    /// current one, the session over or its user revoked): the caller
    /// opens a new session, as for a login without one. A live session of
    /// another user is refused and left as it was.
    pub async fn reauthenticate(
        &self,
        view: &RevocationView,
        issuer: &Issuer<'_>,
        presented: &str,
        sub: &str,
    ) -> Result<Option<(TokenPair, SessionRecord)>, ReauthError> {
        let presented_hash = hash_refresh_token(presented);
        let now = unix_now();
        let store = view.store().as_ref();
        let Some((mut session, version)) = live_session(store, &presented_hash, now).await? else {
            return Ok(None);
        };
        if session.sub != sub {
            return Err(ReauthError::OtherUser);
        }
        let entitlements: Entitlements = serde_json::from_str(&session.grants)
            .map_err(|_| ReauthError::Internal("stored entitlements unreadable"))?;
        let refresh_token =
            new_refresh_token().map_err(|_| ReauthError::Internal("random source failed"))?;
        let new_hash = hash_refresh_token(&refresh_token);
        session.auth_time = now;
        let pair = access_pair(issuer, &session, &entitlements, version, refresh_token, now)
            .map_err(ReauthError::Internal)?;
        let rotation = Rotation {
            sid: session.sid.clone(),
            presented_hash,
            new_hash,
            now,
            now_ms: unix_now_ms(),
            grace_ms: self.settings.reuse_grace.as_millis() as u64,
            sealed_pair: Vec::new(),
            revoke_until: now + issuer.access_ttl.as_secs(),
            auth_time: Some(now),
        };
        match view.rotate(&rotation).await? {
            RotateOutcome::Rotated => Ok(Some((pair, session))),
            // Another request rotated or ended it meanwhile: nothing to keep.
            _ => Ok(None),
        }
    }

    /// Ends a session; its access tokens are refused from now on, on this
    /// instance at once and on the others through the change log.
    pub async fn end(
        &self,
        view: &RevocationView,
        sid: &str,
        access_ttl: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let revoke_until = unix_now() + access_ttl.as_secs();
        view.end_session(sid, revoke_until).await
    }

    /// Logout with an access token: ends its session. A token from outside
    /// any session, or whose session is already over, revokes just itself,
    /// which needs its `jti`.
    pub async fn logout(
        &self,
        view: &RevocationView,
        claims: &AccessClaims,
        access_ttl: Duration,
    ) -> Result<(), LogoutError> {
        if let Some(sid) = claims.sid.as_deref() {
            if self.end(view, sid, access_ttl).await?.is_some() {
                return Ok(());
            }
        }
        if claims.jti.is_empty() {
            return Err(LogoutError::NoJti);
        }
        view.revoke_token(&claims.jti, claims.exp).await?;
        Ok(())
    }
}

/// The live session whose current refresh token hashes to `hash`, with
/// its user's version; `None` when it is unknown, rotated out, over, or
/// its user was disabled or logged out everywhere since.
async fn live_session(
    store: &dyn Store,
    hash: &str,
    now: u64,
) -> Result<Option<(SessionRecord, u64)>, StoreError> {
    let Some(session) = store
        .session_by_refresh(hash)
        .await?
        .filter(|s| s.is_live(now) && s.current_hash == hash)
    else {
        return Ok(None);
    };
    let user = store.user(&session.sub).await?;
    if user.disabled || user.version > session.version {
        return Ok(None);
    }
    Ok(Some((session, user.version)))
}

/// A new access token for the session, never outliving it, with `refresh_token`.
fn access_pair(
    issuer: &Issuer<'_>,
    session: &SessionRecord,
    entitlements: &Entitlements,
    version: u64,
    refresh_token: String,
    now: u64,
) -> Result<TokenPair, &'static str> {
    let ttl = Duration::from_secs(
        issuer
            .access_ttl
            .as_secs()
            .min(session.expires_at.saturating_sub(now)),
    );
    let issuance = Issuance {
        sub: session.sub.clone(),
        roles: entitlements.roles.clone(),
        scope: entitlements.scope.clone(),
        sid: Some(session.sid.clone()),
        ver: version,
        auth_time: Some(session.auth_time),
        // Grants stored before `auth_time` was reserved may carry a claim
        // of that name: it must not stand beside the session's own.
        extra: entitlements.clone().without_reserved_claims().claims,
    };
    let (access_token, _) = mint(issuer.signer, issuance, issuer.issuer, issuer.audience, ttl)
        .map_err(|_| "signing failed")?;
    Ok(TokenPair {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: ttl.as_secs(),
        refresh_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{KeyMaterial, Keyring};
    use crate::config::raw::KeyAlgorithm;
    use crate::store::SessionStatus;

    /// The payload of a token as its JSON text, unchecked.
    fn payload_text(token: &str) -> String {
        use base64::Engine;
        let part = token.split('.').nth(1).expect("a JWS");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        String::from_utf8(bytes).expect("UTF-8")
    }

    /// Every token of a session carries the session's `auth_time`, once:
    /// a claim of that name in grants stored before it was reserved is
    /// dropped, not written beside it (a duplicate member no verifier reads).
    #[test]
    fn a_token_carries_the_sessions_auth_time_over_a_stored_claim() {
        let mut ring = Keyring::default();
        let secret = KeyMaterial::Secret(b"0123456789abcdef0123456789abcdef");
        ring.add("hs", KeyAlgorithm::HS256, secret).expect("key");
        let signer = ring.take_signing("hs").expect("signer");
        let issuer = Issuer {
            signer: &signer,
            issuer: "https://issuer.test",
            audience: "api",
            access_ttl: Duration::from_secs(300),
        };
        let mut claims = serde_json::Map::new();
        claims.insert("auth_time".into(), 1.into());
        claims.insert("email".into(), "a@example.com".into());
        let entitlements = Entitlements {
            claims,
            ..Entitlements::default()
        };
        let session = SessionRecord {
            sid: "s".into(),
            sub: "alice".into(),
            device: "phone".into(),
            created: 1_000,
            auth_time: 1_500,
            last_refresh: 1_500,
            expires_at: u64::MAX / 2,
            idle_ttl: 60,
            current_hash: "h".into(),
            previous_hash: None,
            rotated_at_ms: 0,
            version: 0,
            status: SessionStatus::Active,
            grants: String::new(),
            sealed_pair: None,
        };
        let pair =
            access_pair(&issuer, &session, &entitlements, 0, "r".into(), 2_000).expect("pair");
        let text = payload_text(&pair.access_token);
        assert_eq!(text.matches("\"auth_time\"").count(), 1, "{text}");
        let claims: serde_json::Value = serde_json::from_str(&text).expect("claims");
        assert_eq!(claims["auth_time"], 1_500);
        assert_eq!(claims["email"], "a@example.com");
    }
}
