//! API keys as the store keeps them, and the local copy every request is
//! checked against.
//!
//! The store holds each key's record (its SHA-256, never the key); the
//! change log carries every creation and revocation, so each instance's
//! copy follows the same feed, within the same `max_staleness`, as the
//! revoked tokens. A request reads memory only: one map lookup by the id
//! the key names and one SHA-256. When a key was last used is noted in
//! memory and written to the store in batches by the maintenance loop
//! (`follower`), never on the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::auth::api_key::{hash_key, key_id, same_hash};
use crate::auth::claims::Audience;
use crate::auth::{AccessClaims, AuthError};

/// The issuer an API key's identity reads as: no token issuer can have it.
pub const API_KEY_ISSUER: &str = "portcullis:api-key";

/// A stored key record this version cannot read.
#[derive(Debug, thiserror::Error)]
#[error("API key record: {0}")]
pub struct UnreadableRecord(String);

/// One API key as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// 16 hex digits, also the key's visible prefix (`pck_<id>_…`).
    pub id: String,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub label: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; `None`: the key does not expire.
    #[serde(default)]
    pub expires: Option<u64>,
    /// When the key was revoked; `None` while it is not.
    #[serde(default)]
    pub revoked: Option<u64>,
    /// When some instance last let a request in with it (recorded in
    /// batches, so up to a maintenance period late); not in the change log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
}

impl ApiKeyRecord {
    /// The record as the change log carries it: without `last_used`.
    pub fn to_log(&self) -> String {
        let record = Self {
            last_used: None,
            ..self.clone()
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    pub fn from_log(text: &str) -> Result<Self, UnreadableRecord> {
        serde_json::from_str(text).map_err(|e| UnreadableRecord(e.to_string()))
    }

    /// The prefix a person sees in lists and logs: what the key starts with.
    pub fn prefix(&self) -> String {
        format!("{}{}", crate::auth::api_key::KEY_PREFIX, self.id)
    }

    /// The identity a request presenting this key gets: the claims a token
    /// for `sub` with these roles and scope would carry, no session.
    fn claims(&self) -> AccessClaims {
        AccessClaims {
            iss: API_KEY_ISSUER.to_owned(),
            aud: Audience::Many(Vec::new()),
            sub: self.sub.clone(),
            jti: self.id.clone(),
            iat: self.created,
            exp: self.expires.unwrap_or(u64::MAX),
            nbf: None,
            sid: None,
            ver: None,
            auth_time: None,
            roles: self.roles.clone(),
            scope: self.scope.clone(),
            extra: Map::new(),
        }
    }
}

/// A key held in memory, with when it was last used here.
struct LiveKey {
    record: ApiKeyRecord,
    hash: [u8; 32],
    last_used: AtomicU64,
    /// The `last_used` already written to the store.
    written: AtomicU64,
}

impl LiveKey {
    fn new(record: ApiKeyRecord) -> Option<Self> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&record.hash, &mut hash).ok()?;
        Some(Self {
            record,
            hash,
            last_used: AtomicU64::new(0),
            written: AtomicU64::new(0),
        })
    }
}

/// Why a presented key was refused, for the log and the metric; each
/// reads as the token refusal the contract gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Malformed,
    Unknown,
    Wrong,
    Expired,
    Revoked,
}

impl KeyRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "api_key_malformed",
            Self::Unknown => "api_key_unknown",
            Self::Wrong => "api_key_wrong",
            Self::Expired => "api_key_expired",
            Self::Revoked => "api_key_revoked",
        }
    }

    /// Unknown, wrong and expired keys are `token_invalid` (a key cannot
    /// be refreshed, so `token_expired` would send the client the wrong
    /// way); a revoked key is `token_revoked`.
    pub fn auth_error(self) -> AuthError {
        match self {
            Self::Revoked => AuthError::Revoked,
            other => AuthError::Invalid(other.reason()),
        }
    }
}

/// Every key this instance knows, by id.
#[derive(Default)]
pub struct ApiKeySet {
    keys: RwLock<HashMap<Box<str>, Arc<LiveKey>>>,
}

impl ApiKeySet {
    /// The identity `presented` stands for at `now`, or why it stands for
    /// none. A valid key costs a map lookup and a SHA-256; so does a wrong
    /// or unknown one (a malformed one costs less: it is refused unread).
    pub fn check(&self, presented: &str, now: u64) -> Result<AccessClaims, KeyRefusal> {
        let id = key_id(presented).ok_or(KeyRefusal::Malformed)?;
        // Hashed before the lookup: an id nobody holds costs what a held
        // one does, so timing tells no prober which ids exist.
        let hash = hash_key(presented);
        let live = self
            .keys
            .read()
            .map_err(|_| KeyRefusal::Unknown)?
            .get(id)
            .cloned()
            .ok_or(KeyRefusal::Unknown)?;
        if !same_hash(&hash, &live.hash) {
            return Err(KeyRefusal::Wrong);
        }
        if live.record.revoked.is_some() {
            return Err(KeyRefusal::Revoked);
        }
        if live.record.expires.is_some_and(|at| now >= at) {
            return Err(KeyRefusal::Expired);
        }
        live.last_used.fetch_max(now, Ordering::Relaxed);
        Ok(live.record.claims())
    }

    /// Applies a record from the change log, a snapshot or a local write.
    /// A revocation is never undone: a record that arrives late without it
    /// keeps the revocation already held.
    pub fn apply(&self, record: &ApiKeyRecord) {
        let Ok(mut keys) = self.keys.write() else {
            return;
        };
        let held = keys.get(record.id.as_str());
        let revoked = held.and_then(|h| h.record.revoked).or(record.revoked);
        if held.is_some_and(|h| h.record.revoked == revoked && h.record.hash == record.hash) {
            return;
        }
        let used = held.map_or(0, |h| h.last_used.load(Ordering::Relaxed));
        let merged = ApiKeyRecord {
            revoked,
            ..record.clone()
        };
        match LiveKey::new(merged) {
            Some(live) => {
                live.last_used.store(used, Ordering::Relaxed);
                keys.insert(Box::from(live.record.id.as_str()), Arc::new(live));
            }
            None => {
                tracing::warn!(id = %record.id, "API key record with an unreadable hash; ignored")
            }
        }
    }

    /// The uses not yet written to the store, `(id, last used)`, marked
    /// as written.
    pub fn unwritten_uses(&self) -> Vec<(String, u64)> {
        let Ok(keys) = self.keys.read() else {
            return Vec::new();
        };
        keys.values()
            .filter_map(|live| {
                let used = live.last_used.load(Ordering::Relaxed);
                let before = live.written.fetch_max(used, Ordering::Relaxed);
                (used > before).then(|| (live.record.id.clone(), used))
            })
            .collect()
    }

    /// Keys held (for metrics and readiness).
    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |keys| keys.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::api_key::NewKey;

    fn record(new: &NewKey, expires: Option<u64>) -> ApiKeyRecord {
        ApiKeyRecord {
            id: new.id.clone(),
            hash: hex::encode(hash_key(&new.key)),
            sub: "svc".into(),
            roles: vec!["probe".into()],
            scope: Some("read".into()),
            label: "probe".into(),
            created: 100,
            expires,
            revoked: None,
            last_used: None,
        }
    }

    #[test]
    fn a_key_is_let_in_until_it_expires_or_is_revoked() {
        let set = ApiKeySet::default();
        let new = NewKey::generate().expect("random");
        set.apply(&record(&new, Some(200)));
        let claims = set.check(&new.key, 150).expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.jti.as_str()),
            ("svc", new.id.as_str())
        );
        assert_eq!(set.check(&new.key, 200), Err(KeyRefusal::Expired));
        let last = if new.key.ends_with('A') { "B" } else { "A" };
        let wrong = format!("{}{last}", &new.key[..new.key.len() - 1]);
        assert_eq!(set.check(&wrong, 150), Err(KeyRefusal::Wrong));
        let revoked = ApiKeyRecord {
            revoked: Some(160),
            ..record(&new, Some(200))
        };
        set.apply(&revoked);
        // A late copy without the revocation does not undo it.
        set.apply(&record(&new, Some(200)));
        assert_eq!(set.check(&new.key, 170), Err(KeyRefusal::Revoked));
    }

    #[test]
    fn uses_are_handed_out_for_writing_once() {
        let set = ApiKeySet::default();
        let new = NewKey::generate().expect("random");
        set.apply(&record(&new, None));
        assert!(set.unwritten_uses().is_empty());
        set.check(&new.key, 150).expect("valid");
        assert_eq!(set.unwritten_uses(), vec![(new.id.clone(), 150)]);
        assert!(set.unwritten_uses().is_empty());
        let other = NewKey::generate().expect("random").key;
        let unknown = format!("pck_{}{}", "0".repeat(16), &other[20..]);
        assert_eq!(set.check(&unknown, 150), Err(KeyRefusal::Unknown));
        assert_eq!(set.check("pck_nope", 150), Err(KeyRefusal::Malformed));
    }
}
