//! Per-route requirements on a verified token: roles and scopes.

use super::{AccessClaims, AuthError};

/// What a route asks of a token beyond being valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    /// The token must carry at least one of these roles.
    pub any_role: Vec<String>,
    /// The token must carry every one of these scopes (RFC 6749 §3.3).
    pub all_scopes: Vec<String>,
}

impl Requirement {
    pub fn is_empty(&self) -> bool {
        self.any_role.is_empty() && self.all_scopes.is_empty()
    }

    pub fn check(&self, claims: &AccessClaims) -> Result<(), AuthError> {
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
