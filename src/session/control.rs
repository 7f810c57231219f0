//! Session control from the backend: what a backend may ask the gateway to
//! do to the sessions of the user it just answered (the password-change
//! flow), and doing it in the store.
//!
//! Which answers may ask, and for whom, is the proxy's decision
//! (`proxy::session_control`); this module only parses the value and
//! writes. Every action names the request's own subject and session:
//! ending another user's sessions stays the admin API's job.

use std::time::Duration;

use super::Sessions;
use crate::clock::unix_now;
use crate::store::{RevocationView, StoreError};

/// One value of `X-Portcullis-Session-Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionControl {
    /// Every other session of the user ends and every access token issued
    /// before now dies (the version is bumped); this session moves to the
    /// new version, so its next refresh succeeds.
    EndOtherSessions,
    /// Every session of the user ends, this one included.
    LogoutEverywhere,
    /// This session ends.
    EndThisSession,
}

impl SessionControl {
    /// Every action, for metrics series created at zero.
    pub const ALL: [Self; 3] = [
        Self::EndOtherSessions,
        Self::LogoutEverywhere,
        Self::EndThisSession,
    ];

    /// The action a header value names (ASCII case and surrounding blanks
    /// ignored); `None` for anything else, a list included.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        Self::ALL
            .into_iter()
            .find(|action| value.eq_ignore_ascii_case(action.as_str().as_bytes()))
    }

    /// The value as the header spells it; also its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndOtherSessions => "end-other-sessions",
            Self::LogoutEverywhere => "logout-everywhere",
            Self::EndThisSession => "end-this-session",
        }
    }
}

/// What applying an action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The session that asked is still signed in and should refresh now:
    /// its access token was issued under the old version.
    pub refresh_now: bool,
}

impl Sessions {
    /// Applies `action` to `sub`'s sessions on behalf of the session `sid`
    /// that made the request. Returns once the store has acknowledged the
    /// write (with `min_replicas` where configured): the caller releases
    /// the backend's answer only then. Other instances learn of it
    /// through the change log, within `max_staleness`.
    pub async fn control(
        &self,
        view: &RevocationView,
        action: SessionControl,
        sub: &str,
        sid: &str,
        access_ttl: Duration,
    ) -> Result<Applied, StoreError> {
        match action {
            SessionControl::EndOtherSessions => {
                let (_, kept) = view.bump_user_keeping(sub, sid, unix_now()).await?;
                Ok(Applied { refresh_now: kept })
            }
            SessionControl::LogoutEverywhere => {
                view.bump_user(sub, unix_now()).await?;
                Ok(Applied { refresh_now: false })
            }
            SessionControl::EndThisSession => {
                self.end(view, sid, access_ttl).await?;
                Ok(Applied { refresh_now: false })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SessionControl;

    #[test]
    fn values_parse_in_any_case_and_nothing_else_does() {
        for action in SessionControl::ALL {
            assert_eq!(
                SessionControl::parse(action.as_str().as_bytes()),
                Some(action)
            );
        }
        assert_eq!(
            SessionControl::parse(b" End-Other-Sessions "),
            Some(SessionControl::EndOtherSessions)
        );
        for bad in [
            &b""[..],
            b"end-other-sessions, logout-everywhere",
            b"end_other_sessions",
            b"logout",
            b"end-other-sessions;user=bob",
        ] {
            assert_eq!(SessionControl::parse(bad), None, "{bad:?}");
        }
    }
}
