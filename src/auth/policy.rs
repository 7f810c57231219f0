//! Per-route requirements on a verified token: roles, scopes, claim
//! conditions and how recent the user's login must be (RFC 9470).

use std::time::Duration;

use super::conditions::ClaimCondition;
use super::{AccessClaims, AuthError};
use crate::clock::unix_now;

/// What a route asks of a token beyond being valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    /// The token must carry at least one of these roles.
    pub any_role: Vec<String>,
    /// The token must carry every one of these scopes (RFC 6749 §3.3).
    pub all_scopes: Vec<String>,
    /// `max_auth_age`: the token's `auth_time` must be at most this old.
    pub max_auth_age: Option<Duration>,
    /// `require_claims`: every condition must hold.
    pub claims: Vec<ClaimCondition>,
}

impl Requirement {
    pub fn is_empty(&self) -> bool {
        self.any_role.is_empty()
            && self.all_scopes.is_empty()
            && self.max_auth_age.is_none()
            && self.claims.is_empty()
    }

    /// Roles and scopes first, then claim conditions: a token that fails
    /// them is not helped by a new login (`insufficient_scope`, 403). Then
    /// the login's age.
    pub fn check(&self, claims: &AccessClaims) -> Result<(), AuthError> {
        self.check_entitlements(claims)?;
        self.check_claims(claims)?;
        // The clock is read only where a route bounds the login's age.
        match self.max_auth_age {
            Some(_) => self.check_auth_age(claims, unix_now()),
            None => Ok(()),
        }
    }

    /// RFC 9470 §3: a token without `auth_time`, or whose `auth_time` lies
    /// more than `max_auth_age` before `now`, must log in again. An
    /// `auth_time` in the future (a clock ahead) counts as now.
    pub fn check_auth_age(&self, claims: &AccessClaims, now: u64) -> Result<(), AuthError> {
        let Some(max) = self.max_auth_age else {
            return Ok(());
        };
        let max_age = max.as_secs();
        match claims.auth_time {
            Some(at) if now.saturating_sub(at) <= max_age => Ok(()),
            _ => Err(AuthError::ReauthenticationRequired { max_age }),
        }
    }

    /// The first condition that fails is named in the challenge's `scope`
    /// as `claim:NAME` (RFC 6750 §3 has no attribute of its own for it).
    fn check_claims(&self, claims: &AccessClaims) -> Result<(), AuthError> {
        match self.claims.iter().find(|c| !c.holds(claims)) {
            None => Ok(()),
            Some(failed) => Err(AuthError::InsufficientScope {
                required: failed.missing().to_owned(),
            }),
        }
    }

    fn check_entitlements(&self, claims: &AccessClaims) -> Result<(), AuthError> {
        let role_ok =
            self.any_role.is_empty() || self.any_role.iter().any(|r| claims.roles.contains(r));
        let scopes_ok = self
            .all_scopes
            .iter()
            .all(|s| claims.scopes().any(|have| have == s));
        if role_ok && scopes_ok {
            return Ok(());
        }
        // RFC 6750 §3: `scope` lists what the resource needs.
        let required = if self.all_scopes.is_empty() {
            &self.any_role
        } else {
            &self.all_scopes
        };
        Err(AuthError::InsufficientScope {
            required: required.join(" "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::Audience;

    fn claims(auth_time: Option<u64>) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            aud: Audience::One("a".into()),
            sub: "alice".into(),
            jti: String::new(),
            iat: 0,
            exp: 0,
            nbf: None,
            sid: None,
            ver: None,
            auth_time,
            roles: Vec::new(),
            scope: None,
            extra: serde_json::Map::new(),
        }
    }

    /// `max_auth_age` is inclusive: exactly that old passes, a second more
    /// does not; no `auth_time` never passes; one ahead of the clock is now.
    #[test]
    fn the_login_age_is_bounded_inclusively() {
        let requirement = Requirement {
            max_auth_age: Some(Duration::from_secs(600)),
            ..Requirement::default()
        };
        let now = 10_000;
        let refused = Err(AuthError::ReauthenticationRequired { max_age: 600 });
        assert_eq!(
            requirement.check_auth_age(&claims(Some(now - 600)), now),
            Ok(())
        );
        assert_eq!(
            requirement.check_auth_age(&claims(Some(now - 601)), now),
            refused
        );
        assert_eq!(requirement.check_auth_age(&claims(None), now), refused);
        assert_eq!(
            requirement.check_auth_age(&claims(Some(now + 5)), now),
            Ok(())
        );
        let none = Requirement::default();
        assert_eq!(none.check_auth_age(&claims(None), now), Ok(()));
    }
}
