//! A user's devices: the label a session is known by, the listing its user
//! (or an operator) sees, and ending one device's session by its user.
//!
//! The gateway's `/auth/sessions` endpoints and the admin API both call
//! these; how a request names the device or the session is theirs.

use std::time::Duration;

use serde::Serialize;

use super::Sessions;
use crate::clock::unix_now;
use crate::store::{RevocationView, SessionRecord, Store, StoreError};

/// Longest device label kept.
const MAX_DEVICE_CHARS: usize = 128;

/// A device label as kept: printable characters only (it is shown in
/// listings and written to the store as it is), at most 128 of them.
pub fn clean_device_label(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(MAX_DEVICE_CHARS)
        .collect()
}

/// A user's live sessions, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceList {
    pub sessions: Vec<DeviceSession>,
}

/// One live session as its user sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSession {
    pub sid: String,
    pub device: String,
    pub created: u64,
    pub last_used: u64,
    /// The sooner of the absolute end and the idle end.
    pub expires_at: u64,
    /// The session of the token that asked.
    pub current: bool,
}

impl DeviceSession {
    fn of(session: &SessionRecord, current: Option<&str>) -> Self {
        Self {
            sid: session.sid.clone(),
            device: session.device.clone(),
            created: session.created,
            last_used: session.last_refresh,
            expires_at: session
                .expires_at
                .min(session.last_refresh + session.idle_ttl),
            current: current == Some(session.sid.as_str()),
        }
    }
}

impl Sessions {
    /// The user's live sessions, newest first (the store's order), the
    /// caller's own (`current`) marked.
    pub async fn list(
        &self,
        store: &dyn Store,
        sub: &str,
        current: Option<&str>,
    ) -> Result<DeviceList, StoreError> {
        let now = unix_now();
        let sessions = store.sessions_of(sub, now).await?;
        // A logout everywhere (version bump) ended every older session.
        let version = store.user(sub).await?.version;
        let sessions = sessions
            .iter()
            .filter(|s| s.is_live(now) && s.version >= version)
            .map(|s| DeviceSession::of(s, current))
            .collect();
        Ok(DeviceList { sessions })
    }

    /// Signs out one of `sub`'s devices; `false` when `sid` is none of
    /// `sub`'s sessions. Another user's session is treated exactly like a
    /// missing one, so its id cannot be probed for.
    pub async fn end_own(
        &self,
        view: &RevocationView,
        sub: &str,
        sid: &str,
        access_ttl: Duration,
    ) -> Result<bool, StoreError> {
        let owned = view.store().session(sid).await?.filter(|s| s.sub == sub);
        if owned.is_none() {
            return Ok(false);
        }
        self.end(view, sid, access_ttl).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_labels_keep_printable_characters_up_to_the_bound() {
        assert_eq!(clean_device_label("Fire\u{1b}[31mfox\n"), "Fire[31mfox");
        assert_eq!(clean_device_label(&"é".repeat(200)).chars().count(), 128);
    }
}
