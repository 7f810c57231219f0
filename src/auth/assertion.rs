//! The signed identity assertion the gateway sends an upstream: a short
//! JWT, signed with the gateway's own (published) signing key, that lets a
//! backend tell a request that came through the gateway from one sent
//! straight to its port with forged identity headers, and that names the
//! backend as its audience, so that one backend cannot replay it to
//! another (the answer of Google IAP, Pomerium and Cloudflare Access).
//!
//! Cheap on the hot path: the assertion for a verified token is signed
//! once and reused until three quarters of its life have passed, so a
//! warm request costs a cache lookup, not a signature. A route with
//! `assertion_binds_request` signs one per request instead, naming the
//! method and path (as DPoP's `htm`/`htu` do), so that an assertion
//! captured from one request is refused for another path.
//!
//! Which header carries it, and stripping a client's copy, is the
//! configuration's and the proxy's job; this module only says what it is.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{HeaderName, HeaderValue};
use moka::sync::Cache;
use serde::Serialize;
use serde_json::{Map, Value};

use super::keys::{KeyError, SigningKey};
use super::VerifiedToken;
use crate::clock::unix_now;
use crate::config::raw::AuthMode;

/// The JOSE `typ` of an assertion: neither an access token (`at+jwt`,
/// which the gateway alone accepts) nor anything else a verifier reads.
pub const ASSERTION_TYP: &str = "portcullis-assertion+jwt";

/// Claims an assertion sets itself; a configured extra claim of one of
/// these names is left out rather than allowed to replace it.
const OWN_CLAIMS: [&str; 15] = [
    "iss",
    "aud",
    "iat",
    "exp",
    "nbf",
    "jti",
    "sub",
    "roles",
    "scope",
    "sid",
    "auth_time",
    "auth",
    "htm",
    "htu",
    "request_id",
];

/// One upstream's (or one route's) `assertion` setting, with the
/// assertions it has signed for verified tokens.
pub struct AssertionPolicy {
    pub header: HeaderName,
    audience: String,
    issuer: String,
    ttl_secs: u64,
    /// The token claims forwarded beyond the standard ones: `[identity]
    /// claims`, as the identity headers forward them.
    extra_claims: Vec<String>,
    /// Keyed by the verified token itself (by address, holding it alive
    /// so that the address cannot be reused while the entry lives).
    by_token: Cache<TokenKey, Minted, ahash::RandomState>,
    /// The assertions of requests without a token, by route mode.
    anonymous_none: ArcSwapOption<Minted>,
    anonymous_optional: ArcSwapOption<Minted>,
}

/// What an assertion is about: a verified token, or no token on a route
/// of the given mode (`none`, or `optional` without one).
#[derive(Clone, Copy)]
pub enum Subject<'a> {
    Token(&'a Arc<VerifiedToken>),
    Anonymous(AuthMode),
}

/// The request an assertion is bound to (`assertion_binds_request`).
#[derive(Clone, Copy)]
pub struct Binding<'a> {
    pub method: &'a str,
    /// The path as the upstream gets it, without the query.
    pub path: &'a str,
    pub request_id: &'a str,
}

/// A signed assertion and when to sign a new one.
#[derive(Clone)]
struct Minted {
    value: HeaderValue,
    /// Unix seconds from which it is signed anew.
    renew_at: u64,
}

/// A verified token as a cache key: the same `Arc`, not an equal token.
#[derive(Clone)]
struct TokenKey(Arc<VerifiedToken>);

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for TokenKey {}
impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<u64>,
    /// The route's mode, on an assertion without a user only.
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    htm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    htu: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// The settings of one `assertion` table, checked.
pub struct PolicySettings {
    pub header: HeaderName,
    pub audience: String,
    pub issuer: String,
    pub ttl: Duration,
    pub extra_claims: Vec<String>,
    /// Tokens whose assertion is kept at once.
    pub cache_entries: u64,
}

impl AssertionPolicy {
    pub fn new(settings: PolicySettings) -> Self {
        let by_token = Cache::builder()
            .max_capacity(settings.cache_entries)
            .time_to_live(settings.ttl)
            .build_with_hasher(ahash::RandomState::new());
        Self {
            header: settings.header,
            audience: settings.audience,
            issuer: settings.issuer,
            ttl_secs: settings.ttl.as_secs(),
            extra_claims: (settings.extra_claims.into_iter())
                .filter(|claim| !OWN_CLAIMS.contains(&claim.as_str()))
                .collect(),
            by_token,
            anonymous_none: ArcSwapOption::empty(),
            anonymous_optional: ArcSwapOption::empty(),
        }
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The assertion for a request about `subject`: bound to `binding`
    /// and signed now when one is given, else the cached one while it is
    /// fresh enough.
    pub fn assertion(
        &self,
        signer: &SigningKey,
        subject: Subject<'_>,
        binding: Option<Binding<'_>>,
    ) -> Result<HeaderValue, KeyError> {
        if binding.is_some() {
            return Ok(self.mint(signer, subject, binding, unix_now())?.value);
        }
        let now = unix_now();
        match subject {
            Subject::Token(token) => self.for_token(signer, token, now),
            Subject::Anonymous(mode) => self.for_anonymous(signer, mode, now),
        }
    }

    fn for_token(
        &self,
        signer: &SigningKey,
        token: &Arc<VerifiedToken>,
        now: u64,
    ) -> Result<HeaderValue, KeyError> {
        let key = TokenKey(Arc::clone(token));
        if let Some(hit) = self.by_token.get(&key).filter(|m| now < m.renew_at) {
            return Ok(hit.value);
        }
        let minted = self.mint(signer, Subject::Token(token), None, now)?;
        self.by_token.insert(key, minted.clone());
        Ok(minted.value)
    }

    fn for_anonymous(
        &self,
        signer: &SigningKey,
        mode: AuthMode,
        now: u64,
    ) -> Result<HeaderValue, KeyError> {
        let slot = match mode {
            AuthMode::Optional => &self.anonymous_optional,
            _ => &self.anonymous_none,
        };
        if let Some(hit) = slot.load().as_ref().filter(|m| now < m.renew_at) {
            return Ok(hit.value.clone());
        }
        let minted = self.mint(signer, Subject::Anonymous(mode), None, now)?;
        slot.store(Some(Arc::new(minted.clone())));
        Ok(minted.value)
    }

    /// Signs a new assertion at `now`. Its `exp` is `ttl` away but never
    /// past the token's own: an assertion so bounded is as good as it will
    /// get and is kept until its cache entry ends.
    fn mint(
        &self,
        signer: &SigningKey,
        subject: Subject<'_>,
        binding: Option<Binding<'_>>,
        now: u64,
    ) -> Result<Minted, KeyError> {
        let mut claims = self.claims(subject, now);
        if let Some(binding) = binding {
            claims.htm = Some(binding.method);
            claims.htu = Some(binding.path);
            claims.request_id = Some(binding.request_id);
            claims.jti = Some(format!("{:032x}", rand::random::<u128>()));
        }
        let jwt = signer.sign_typed(ASSERTION_TYP, &claims)?;
        let value = HeaderValue::from_str(&jwt).map_err(|_| KeyError::Signing)?;
        let full = now.saturating_add(self.ttl_secs);
        let renew_at = if claims.exp < full {
            u64::MAX
        } else {
            now.saturating_add(self.ttl_secs * 3 / 4).max(now + 1)
        };
        Ok(Minted { value, renew_at })
    }

    fn claims<'a>(&'a self, subject: Subject<'a>, now: u64) -> AssertionClaims<'a> {
        let mut claims = AssertionClaims {
            iss: &self.issuer,
            aud: &self.audience,
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            sub: None,
            roles: &[],
            scope: None,
            sid: None,
            auth_time: None,
            auth: None,
            htm: None,
            htu: None,
            request_id: None,
            jti: None,
            extra: Map::new(),
        };
        match subject {
            Subject::Token(token) => {
                let user = &token.claims;
                claims.exp = claims.exp.min(user.exp);
                claims.sub = Some(&user.sub);
                claims.roles = &user.roles;
                claims.scope = user.scope.as_deref();
                claims.sid = user.sid.as_deref();
                claims.auth_time = user.auth_time;
                for name in &self.extra_claims {
                    if let Some(value) = user.extra.get(name).filter(|v| !v.is_null()) {
                        claims.extra.insert(name.clone(), value.clone());
                    }
                }
            }
            Subject::Anonymous(mode) => claims.auth = Some(mode_name(mode)),
        }
        claims
    }
}

/// How the assertion names a route's mode.
pub fn mode_name(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::None => "none",
        AuthMode::Optional => "optional",
        AuthMode::Required => "required",
    }
}

/// A route's assertion: its upstream's policy (or its own) and whether it
/// is bound to each request.
#[derive(Clone)]
pub struct RouteAssertion {
    pub policy: Arc<AssertionPolicy>,
    pub binds_request: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::Audience;
    use crate::auth::{AccessClaims, Keyring};
    use crate::clock::frozen_at;
    use crate::config::raw::KeyAlgorithm;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

    fn signer() -> (SigningKey, DecodingKey) {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/test-eddsa.pem"
        ))
        .expect("fixture");
        let mut ring = Keyring::default();
        ring.add(
            "k",
            KeyAlgorithm::EdDSA,
            crate::auth::keys::KeyMaterial::PrivatePem(&pem),
        )
        .expect("key");
        let decoding = ring.get("k").expect("key").decoding.clone();
        (ring.take_signing("k").expect("signs"), decoding)
    }

    fn policy(ttl: u64) -> AssertionPolicy {
        AssertionPolicy::new(PolicySettings {
            header: HeaderName::from_static("x-portcullis-assertion"),
            audience: "billing".into(),
            issuer: "https://gw".into(),
            ttl: Duration::from_secs(ttl),
            extra_claims: vec!["email".into(), "sub".into()],
            cache_entries: 100,
        })
    }

    fn token(exp: u64) -> Arc<VerifiedToken> {
        let mut extra = Map::new();
        extra.insert("email".into(), "a@example.com".into());
        Arc::new(VerifiedToken {
            claims: AccessClaims {
                iss: "https://gw".into(),
                aud: Audience::One("api".into()),
                sub: "alice".into(),
                jti: "j".into(),
                iat: 1_700_000_000,
                exp,
                nbf: None,
                sid: Some("s1".into()),
                ver: Some(0),
                auth_time: None,
                roles: vec!["admin".into()],
                scope: Some("read".into()),
                extra,
            },
            forwarded: Vec::new(),
            algorithm: None,
        })
    }

    fn read(value: &HeaderValue, key: &DecodingKey) -> Value {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["billing"]);
        validation.validate_exp = false;
        decode::<Value>(value.to_str().expect("ascii"), key, &validation)
            .expect("verifies")
            .claims
    }

    #[test]
    fn an_assertion_names_the_user_and_is_reused_until_three_quarters_of_its_life() {
        let (signer, key) = signer();
        let policy = policy(60);
        let user = token(1_700_001_000);
        let at = |ms: u64| {
            frozen_at(ms, || {
                policy
                    .assertion(&signer, Subject::Token(&user), None)
                    .expect("signed")
            })
        };
        let first = at(1_700_000_000_000);
        let claims = read(&first, &key);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["exp"], 1_700_000_060);
        assert_eq!(claims["email"], "a@example.com");
        assert_eq!(claims["roles"], serde_json::json!(["admin"]));
        assert!(claims.get("auth").is_none() && claims.get("request_id").is_none());
        assert_eq!(at(1_700_000_044_000), first);
        assert_ne!(at(1_700_000_045_000), first);
    }

    #[test]
    fn an_assertion_never_outlives_its_token_and_anonymous_ones_name_the_mode() {
        let (signer, key) = signer();
        let policy = policy(60);
        let user = token(1_700_000_010);
        let value = frozen_at(1_700_000_000_000, || {
            policy
                .assertion(&signer, Subject::Token(&user), None)
                .expect("signed")
        });
        assert_eq!(read(&value, &key)["exp"], 1_700_000_010);
        let anonymous = policy
            .assertion(&signer, Subject::Anonymous(AuthMode::Optional), None)
            .expect("signed");
        let claims = read(&anonymous, &key);
        assert_eq!(claims["auth"], "optional");
        assert!(claims.get("sub").is_none());
    }

    #[test]
    fn a_bound_assertion_is_signed_per_request() {
        let (signer, key) = signer();
        let policy = policy(60);
        let user = token(u64::MAX / 2);
        let binding = Binding {
            method: "POST",
            path: "/pay",
            request_id: "r1",
        };
        let one = policy.assertion(&signer, Subject::Token(&user), Some(binding));
        let two = policy.assertion(&signer, Subject::Token(&user), Some(binding));
        let (one, two) = (one.expect("signed"), two.expect("signed"));
        assert_ne!(one, two);
        let claims = read(&one, &key);
        assert_eq!(
            (&claims["htm"], &claims["htu"], &claims["request_id"]),
            (&"POST".into(), &"/pay".into(), &"r1".into())
        );
    }
}
