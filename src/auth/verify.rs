//! Access token verification with a cache of verified tokens.
//!
//! A miss checks the header (`typ`, `crit`, `kid`, `alg`), the signature
//! and the claims, against the gateway's own keys or, when `iss` names an
//! external issuer, against that issuer's keys and rules. A hit only
//! checks the clock. Revocation and version checks are not done here: they
//! must run on every request, hit or miss.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use moka::sync::Cache;

use super::external::{ExternalIssuer, JwksSource};
use super::{AccessClaims, AuthError, IdentityHeaders, Keyring};
use crate::clock::unix_now;
use crate::metrics::METRICS;

/// A token whose signature and claims have been checked, with the identity
/// headers it maps to, computed once.
#[derive(Debug)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    pub forwarded: Vec<super::identity::ForwardedHeader>,
    /// The algorithm the signature was checked with (`None` for a
    /// credential that is not a JWT): kept so a traced request reports it
    /// without reading the token's header again.
    pub algorithm: Option<Algorithm>,
}

/// What a verifier checks beyond the keys.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    /// The longest lifetime (`exp - iat`) a token may claim, and how far
    /// beyond now its `exp` may lie.
    pub max_lifetime: Duration,
    /// Entries in the verified-token cache.
    pub cache_entries: u64,
}

pub struct Verifier {
    keyring: Keyring,
    validations: HashMap<Algorithm, Validation>,
    own_issuer: String,
    external: Vec<Arc<ExternalIssuer>>,
    identity: Arc<IdentityHeaders>,
    leeway_secs: u64,
    max_lifetime_secs: u64,
    /// Keyed by the token with aHash (randomly seeded, so tokens cannot
    /// be chosen to collide): SipHash over a whole token was half of a
    /// cache hit's cost.
    cache: Cache<String, Arc<VerifiedToken>, ahash::RandomState>,
}

impl Verifier {
    pub fn new(
        keyring: Keyring,
        external: Vec<Arc<ExternalIssuer>>,
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
            .build_with_hasher(ahash::RandomState::new());
        Self {
            keyring,
            validations,
            own_issuer: settings.issuer.clone(),
            external,
            identity,
            leeway_secs,
            max_lifetime_secs: settings.max_lifetime.as_secs(),
            cache,
        }
    }

    /// Verifies a bearer token, from the cache when this exact token was
    /// verified before and has not expired since.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        self.verify_noting_hit(token, &mut false)
    }

    /// [`Self::verify`], setting `hit` to whether the cache answered (for
    /// a trace's attribute: asking the cache again is not free).
    fn verify_noting_hit(
        &self,
        token: &str,
        hit: &mut bool,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        if let Some(cached) = self.cache.get(token) {
            *hit = true;
            METRICS.verified_cache_hits.inc();
            if unix_now() > cached.claims.exp.saturating_add(self.leeway_secs) {
                return Err(AuthError::Expired);
            }
            return Ok(cached);
        }
        *hit = false;
        METRICS.verified_cache_misses.inc();
        let (claims, algorithm) = self.verify_uncached_with_algorithm(token)?;
        let forwarded = self
            .identity
            .headers_for(&claims)
            .ok_or(AuthError::Invalid("identity"))?;
        let verified = Arc::new(VerifiedToken {
            claims,
            forwarded,
            algorithm: Some(algorithm),
        });
        self.cache.insert(token.to_owned(), Arc::clone(&verified));
        Ok(verified)
    }

    /// [`Self::verify`], fetching an external issuer's keys first when the
    /// token names a `kid` they do not hold yet (rate-limited) or when
    /// none were fetched so far.
    pub async fn verify_fetching_keys(&self, token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
        self.verify_fetching_keys_noting_hit(token, &mut false)
            .await
    }

    /// [`Self::verify_fetching_keys`], setting `hit` to whether the cache
    /// gave the answer returned.
    pub async fn verify_fetching_keys_noting_hit(
        &self,
        token: &str,
        hit: &mut bool,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let first = self.verify_noting_hit(token, hit);
        if !matches!(
            first,
            Err(AuthError::Invalid("unknown_kid") | AuthError::Unavailable)
        ) {
            return first;
        }
        let Some(source) = self.jwks_for(token) else {
            return first;
        };
        // Rate-limited whether keys are unknown or missing altogether, so
        // a provider outage cannot turn every request into a fetch.
        // Boxed: a fetch is rare, and its future would otherwise be part
        // of every request's.
        let fetched = Box::pin(source.refresh_for_unknown_kid()).await;
        // A provider that answered with nothing usable makes the token
        // invalid, not the gateway unavailable: judge it again.
        if fetched || source.answered() {
            self.verify_noting_hit(token, hit)
        } else {
            first
        }
    }

    /// The full check: header, issuer, key selection, signature, claims.
    pub fn verify_uncached(&self, token: &str) -> Result<AccessClaims, AuthError> {
        self.verify_uncached_with_algorithm(token)
            .map(|(claims, _)| claims)
    }

    /// [`Self::verify_uncached`], with the algorithm the signature was
    /// checked with (the key's pinned one, which the header must name).
    fn verify_uncached_with_algorithm(
        &self,
        token: &str,
    ) -> Result<(AccessClaims, Algorithm), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed"))?;
        refuse_header_members(token)?;
        let claims = match self.external_issuer(token) {
            Some(issuer) => self.verify_external(token, &header, &issuer)?,
            None => self.verify_own(token, &header)?,
        };
        self.check_time_range(&claims)?;
        Ok((claims, header.alg))
    }

    /// The latest `exp` a token checked at `now` may claim: the longest
    /// lifetime, plus the leeway.
    pub fn latest_exp(&self, now: u64) -> u64 {
        now.saturating_add(self.max_lifetime_secs)
            .saturating_add(self.leeway_secs)
    }

    /// Times a token may claim. A token "issued" in the future would
    /// outlive every logout-everywhere cut-off (which compares against
    /// `iat`); one that expires in a century could never be revoked, since
    /// its revocation would have to be kept as long (and an `exp` past
    /// 2^63 cannot even be stored).
    fn check_time_range(&self, claims: &AccessClaims) -> Result<(), AuthError> {
        let now = unix_now();
        if claims.iat > now.saturating_add(self.leeway_secs) {
            return Err(AuthError::Invalid("iat"));
        }
        if claims.exp > self.latest_exp(now) {
            return Err(AuthError::Invalid("exp_range"));
        }
        // `iat` 0 means an external issuer left it out: only `exp` is bounded.
        if claims.iat != 0
            && (claims.exp < claims.iat || claims.exp - claims.iat > self.max_lifetime_secs)
        {
            return Err(AuthError::Invalid("lifetime"));
        }
        if claims.nbf.is_some_and(|nbf| nbf > claims.exp) {
            return Err(AuthError::Invalid("nbf"));
        }
        Ok(())
    }

    fn verify_own(&self, token: &str, header: &Header) -> Result<AccessClaims, AuthError> {
        // RFC 9068 §4: `at+jwt`, with or without the `application/` prefix (RFC 7515 §4.1.9).
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(AuthError::Invalid("typ"));
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
        let validation = self
            .validations
            .get(&key.algorithm)
            .ok_or(AuthError::Invalid("alg"))?;
        let claims = decode(token, header, key.algorithm, &key.decoding, validation)?;
        if claims.jti.is_empty() || claims.iat == 0 {
            return Err(AuthError::Invalid("missing_claim"));
        }
        check_own_version(token, &claims)?;
        Ok(claims)
    }

    fn verify_external(
        &self,
        token: &str,
        header: &Header,
        issuer: &ExternalIssuer,
    ) -> Result<AccessClaims, AuthError> {
        if !issuer.typ_ok(header.typ.as_deref()) {
            return Err(AuthError::Invalid("typ"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or(AuthError::Invalid("missing_kid"))?;
        let static_key = issuer
            .static_keys
            .get(kid)
            .map(|k| (k.algorithm, &k.decoding));
        let published = issuer.jwks.as_ref().and_then(|j| j.key(kid));
        let key = static_key.or_else(|| published.as_deref().map(|k| (k.algorithm, &k.decoding)));
        let claims = if let Some((algorithm, decoding)) = key {
            decode(
                token,
                header,
                algorithm,
                decoding,
                &issuer.validation(algorithm),
            )?
        } else if issuer
            .jwks
            .as_ref()
            .is_some_and(|j| !j.has_keys() && !j.answered())
        {
            // No keys at all and no answer yet: the provider is
            // unreachable, not the token bad. (One that answered with no
            // usable key holds none this token could be signed with.)
            return Err(AuthError::Unavailable);
        } else {
            return Err(AuthError::Invalid("unknown_kid"));
        };
        // `ver` and `sid` mean something only in the gateway's own tokens:
        // an external token's values must not meet the user's version or a
        // gateway session.
        let mut claims = claims;
        claims.ver = None;
        claims.sid = None;
        let missing = issuer.required_claims.iter().any(|c| match c.as_str() {
            "jti" => claims.jti.is_empty(),
            "iat" => claims.iat == 0,
            _ => false,
        });
        if missing {
            return Err(AuthError::Invalid("missing_claim"));
        }
        Ok(claims)
    }

    /// The external issuer a token's (unverified) `iss` names, if any.
    fn external_issuer(&self, token: &str) -> Option<Arc<ExternalIssuer>> {
        if self.external.is_empty() {
            return None;
        }
        let iss = unverified_issuer(token)?;
        if iss == self.own_issuer {
            return None;
        }
        self.external.iter().find(|i| i.issuer == iss).cloned()
    }

    fn jwks_for(&self, token: &str) -> Option<Arc<JwksSource>> {
        self.external_issuer(token).and_then(|i| i.jwks.clone())
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn external_issuers(&self) -> &[Arc<ExternalIssuer>] {
        &self.external
    }

    /// Verified tokens held in the cache (approximate, for metrics and benches).
    pub fn cached_tokens(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

/// The `iss` of a token's payload, read without verification, only to
/// choose whose keys and rules verify it.
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok().map(|i| i.iss)
}

/// The largest `ver` a user record can hold (the stores keep it as a
/// signed 64-bit integer).
const MAX_VERSION: u64 = i64::MAX as u64;

/// `ver` in the gateway's own tokens is absent or a whole number in
/// 0..2^63. Anything else (`"1"`, `1.5`, `-1`, `null`, 2^63) would read
/// as no version at all and skip the logout-everywhere check that `ver`
/// exists for, so it is `token_invalid`. Claims hold `None` both for an
/// absent `ver` and for one that is not a `u64`: only then is the payload
/// read again, to tell the two apart (the gateway's tokens always carry
/// one, so a well-formed token never pays for it).
fn check_own_version(token: &str, claims: &AccessClaims) -> Result<(), AuthError> {
    match claims.ver {
        Some(ver) if ver > MAX_VERSION => Err(AuthError::Invalid("ver")),
        Some(_) => Ok(()),
        None if payload_has_member(token, "ver") => Err(AuthError::Invalid("ver")),
        None => Ok(()),
    }
}

/// Whether the (already verified) payload names `member`, whatever its value.
fn payload_has_member(token: &str, member: &str) -> bool {
    let payload = token.split('.').nth(1).unwrap_or("");
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok()
        })
        // Unreadable here after it decoded once: refuse rather than guess.
        .is_none_or(|map| map.contains_key(member))
}

/// Header members refused by their mere presence, whatever their value:
/// `jsonwebtoken` reads `"crit": null` as no `crit` at all, and a `kid` or
/// `typ` of `null` as absent, so these are looked up in the raw JSON.
fn refuse_header_members(token: &str) -> Result<(), AuthError> {
    let segment = token.split('.').next().unwrap_or("");
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Invalid("malformed"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Invalid("malformed"))?;
    // RFC 7515 §4.1.11: we understand no extensions, so any `crit` is fatal.
    if header.contains_key("crit") {
        return Err(AuthError::Invalid("crit"));
    }
    let not_a_string = |name: &str| header.get(name).is_some_and(|v| !v.is_string());
    if not_a_string("kid") || not_a_string("typ") {
        return Err(AuthError::Invalid("malformed"));
    }
    Ok(())
}

/// Signature and claims against one key; the key's pinned algorithm
/// decides, never the token (RFC 8725 §3.1).
fn decode(
    token: &str,
    header: &Header,
    algorithm: Algorithm,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<AccessClaims, AuthError> {
    if header.alg != algorithm {
        return Err(AuthError::Invalid("alg"));
    }
    jsonwebtoken::decode::<AccessClaims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| classify(e.kind()))
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
