//! Minting access tokens with the configured signing key.

use std::time::Duration;

use serde_json::Map;

use super::claims::Audience;
use super::keys::{KeyError, SigningKey};
use super::AccessClaims;
use crate::clock::unix_now;

/// Who a token is for and what it may do.
#[derive(Debug, Clone, Default)]
pub struct Issuance {
    pub sub: String,
    pub roles: Vec<String>,
    pub scope: Option<String>,
    pub sid: Option<String>,
    /// The user's token version now: every token the gateway mints carries
    /// one, so "log out everywhere" catches it even within the same second.
    pub ver: u64,
    /// When the user last proved their credentials, if the gateway saw it.
    pub auth_time: Option<u64>,
    pub extra: Map<String, serde_json::Value>,
}

/// Claims for a new access token with a fresh random `jti`.
pub fn claims_for(issuance: Issuance, issuer: &str, audience: &str, ttl: Duration) -> AccessClaims {
    let now = unix_now();
    AccessClaims {
        iss: issuer.to_owned(),
        aud: Audience::One(audience.to_owned()),
        sub: issuance.sub,
        jti: format!("{:032x}", rand::random::<u128>()),
        iat: now,
        exp: now + ttl.as_secs(),
        nbf: None,
        sid: issuance.sid,
        ver: Some(issuance.ver),
        auth_time: issuance.auth_time,
        roles: issuance.roles,
        scope: issuance.scope,
        extra: issuance.extra,
    }
}

/// Signs a new access token; returns the token and its claims.
pub fn mint(
    signer: &SigningKey,
    issuance: Issuance,
    issuer: &str,
    audience: &str,
    ttl: Duration,
) -> Result<(String, AccessClaims), KeyError> {
    let claims = claims_for(issuance, issuer, audience, ttl);
    Ok((signer.sign(&claims)?, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::frozen_at;

    #[test]
    fn a_token_is_dated_by_the_clock() {
        let grant = Issuance {
            sub: "alice".to_owned(),
            ..Issuance::default()
        };
        let ttl = Duration::from_secs(300);
        let claims = frozen_at(1_700_000_000_999, || {
            claims_for(grant, "https://issuer", "api", ttl)
        });
        assert_eq!(claims.iat, 1_700_000_000);
        assert_eq!(claims.exp, 1_700_000_300);
    }
}
