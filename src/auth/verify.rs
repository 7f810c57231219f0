//! Access token verification with a cache of verified tokens.
//!
//! A miss checks the header (`typ`, `crit`, `kid`, `alg`), the signature
//! and the claims; a hit only checks the clock. Revocation and version
//! checks are not done here: they must run on every request, hit or miss.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use moka::sync::Cache;

use super::{unix_now, AccessClaims, AuthError, IdentityHeaders, Keyring};
use crate::metrics::METRICS;

/// A token whose signature and claims have been checked, with the identity
/// headers it maps to, computed once.
#[derive(Debug)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    pub forwarded: Vec<(HeaderName, HeaderValue)>,
}

/// What a verifier checks beyond the keys.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    /// Entries in the verified-token cache.
    pub cache_entries: u64,
}

pub struct Verifier {
    keyring: Keyring,
    validations: HashMap<Algorithm, Validation>,
    identity: Arc<IdentityHeaders>,
    leeway_secs: u64,
    cache: Cache<String, Arc<VerifiedToken>>,
}

impl Verifier {
    pub fn new(
        keyring: Keyring,
        identity: Arc<IdentityHeaders>,
        settings: &VerifierSettings,
    ) -> Self {
        let leeway_secs = settings.leeway.as_secs();
        let validations = keyring
            .keys()
            .map(|key| (key.algorithm, validation(key.algorithm, settings)))
            .collect();
        let cache = Cache::builder()
            .max_capacity(settings.cache_entries)
            .expire_after(UntilTokenExpiry { leeway_secs })
            .build();
        Self {
            keyring,
            validations,
            identity,
            leeway_secs,
            cache,
        }
    }

    /// Verifies a bearer token, from the cache when this exact token was
    /// verified before and has not expired since.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        if let Some(hit) = self.cache.get(token) {
            METRICS.verified_cache_hits.inc();
            if unix_now() > hit.claims.exp.saturating_add(self.leeway_secs) {
                return Err(AuthError::Expired);
            }
            return Ok(hit);
        }
        METRICS.verified_cache_misses.inc();
        let claims = self.verify_uncached(token)?;
        let forwarded = self
            .identity
            .headers_for(&claims)
            .ok_or(AuthError::Invalid("identity"))?;
        let verified = Arc::new(VerifiedToken { claims, forwarded });
        self.cache.insert(token.to_owned(), Arc::clone(&verified));
        Ok(verified)
    }

    /// The full check: header, key selection, signature, claims.
    pub fn verify_uncached(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed"))?;
        // RFC 9068 §4: `at+jwt`, with or without the `application/` prefix (RFC 7515 §4.1.9).
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(AuthError::Invalid("typ"));
        }
        // RFC 7515 §4.1.11: we understand no extensions, so any `crit` is fatal.
        if header.crit.is_some() {
            return Err(AuthError::Invalid("crit"));
        }
        let key = match header.kid.as_deref() {
            Some(kid) => self
                .keyring
                .get(kid)
                .ok_or(AuthError::Invalid("unknown_kid"))?,
            None => self
                .keyring
                .sole()
                .ok_or(AuthError::Invalid("missing_kid"))?,
        };
        // The key's pinned algorithm decides, never the token (RFC 8725 §3.1).
        if header.alg != key.algorithm {
            return Err(AuthError::Invalid("alg"));
        }
        let validation = self
            .validations
            .get(&key.algorithm)
            .ok_or(AuthError::Invalid("alg"))?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, validation)
            .map(|data| data.claims)
            .map_err(|e| classify(e.kind()))?;
        // A token "issued" in the future would outlive every logout-everywhere
        // cut-off (which compares against `iat`).
        if claims.iat > unix_now().saturating_add(self.leeway_secs) {
            return Err(AuthError::Invalid("iat"));
        }
        Ok(claims)
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Verified tokens held in the cache (approximate, for metrics and benches).
    pub fn cached_tokens(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

fn validation(algorithm: Algorithm, settings: &VerifierSettings) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = settings.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[&settings.issuer]);
    validation.set_audience(&[&settings.audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::Invalid("signature"),
        ErrorKind::InvalidIssuer => AuthError::Invalid("iss"),
        ErrorKind::InvalidAudience => AuthError::Invalid("aud"),
        ErrorKind::ImmatureSignature => AuthError::Invalid("nbf"),
        ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing_claim"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::Invalid("alg"),
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => AuthError::Invalid("claims"),
        _ => AuthError::Invalid("malformed"),
    }
}

/// Cache entries live exactly as long as the token they hold is acceptable.
struct UntilTokenExpiry {
    leeway_secs: u64,
}

impl moka::Expiry<String, Arc<VerifiedToken>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        token: &Arc<VerifiedToken>,
        _: Instant,
    ) -> Option<Duration> {
        let until = token.claims.exp.saturating_add(self.leeway_secs);
        Some(Duration::from_secs(until.saturating_sub(unix_now())))
    }
}
