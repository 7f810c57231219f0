//! Tokens from external identity providers (`[[issuers]]`): keys from a
//! JWKS URL or static files, the issuer's own `typ` and required claims.
//!
//! The JWKS is fetched in the background and cached for as long as its
//! `Cache-Control: max-age` says (within bounds); one fetch runs at a time;
//! a token with an unknown `kid` triggers at most one refetch per cooldown;
//! when the provider is down the last good keys keep serving. Redirects
//! are never followed. Only
//! asymmetric keys are taken from a JWKS: a provider cannot publish a
//! shared secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{
    AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm as JwkAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::Keyring;
use crate::metrics::METRICS;

/// Bounds on how long a fetched JWKS is trusted without a refetch.
const MIN_CACHE: Duration = Duration::from_secs(60);
const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
/// After a failed fetch, try again this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A key published by a provider.
pub struct PublishedKey {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// The keys of a JWKS URL and when to fetch them again.
pub struct JwksSource {
    pub url: String,
    keys: ArcSwap<HashMap<String, Arc<PublishedKey>>>,
    /// One fetch at a time; waiters re-check after taking it.
    fetching: tokio::sync::Mutex<()>,
    next_refresh: Mutex<Option<Instant>>,
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    unknown_kid_cooldown: Duration,
    default_ttl: Duration,
    fetched_at: Mutex<Option<Instant>>,
    /// The provider has answered with a JWK set at least once, usable or
    /// not: without keys, it is then not unreachable but publishing
    /// nothing the gateway accepts (a shared secret, say).
    answered: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} holds no usable signing key")]
    Empty { url: String },
}

/// Sources by URL, so a reload keeps the keys already fetched (and the
/// last good keys through a provider outage) instead of starting empty.
static SOURCES: std::sync::LazyLock<Mutex<HashMap<String, std::sync::Weak<JwksSource>>>> =
    std::sync::LazyLock::new(Mutex::default);

/// Whether a JWKS URL may be fetched: `https://`, or `http://` on loopback
/// only, where nobody on the path could swap the keys.
pub fn acceptable_jwks_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl JwksSource {
    /// The live source for `url`, or a new one.
    pub fn shared(url: &str, default_ttl: Duration, unknown_kid_cooldown: Duration) -> Arc<Self> {
        let Ok(mut sources) = SOURCES.lock() else {
            return Arc::new(Self::new(url.to_owned(), default_ttl, unknown_kid_cooldown));
        };
        sources.retain(|_, weak| weak.strong_count() > 0);
        if let Some(live) = sources.get(url).and_then(std::sync::Weak::upgrade) {
            return live;
        }
        let source = Arc::new(Self::new(url.to_owned(), default_ttl, unknown_kid_cooldown));
        sources.insert(url.to_owned(), Arc::downgrade(&source));
        source
    }

    pub fn new(url: String, default_ttl: Duration, unknown_kid_cooldown: Duration) -> Self {
        Self {
            url,
            keys: ArcSwap::from_pointee(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            next_refresh: Mutex::new(None),
            last_unknown_kid_fetch: Mutex::new(None),
            unknown_kid_cooldown,
            default_ttl,
            fetched_at: Mutex::new(None),
            answered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn key(&self, kid: &str) -> Option<Arc<PublishedKey>> {
        self.keys.load().get(kid).cloned()
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.load().is_empty()
    }

    /// Whether the provider ever answered with a JWK set (see `answered`).
    pub fn answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Seconds since the keys were last fetched successfully.
    pub fn key_age(&self) -> Option<Duration> {
        self.fetched_at
            .lock()
            .ok()
            .and_then(|t| t.map(|t| t.elapsed()))
    }

    pub fn refresh_due(&self) -> bool {
        self.next_refresh
            .lock()
            .map(|n| n.is_none_or(|at| Instant::now() >= at))
            .unwrap_or(true)
    }

    /// Fetches again for a token whose `kid` is unknown, at most once per
    /// cooldown; `true` when a fetch ran (so the caller may look again).
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let allowed = self
            .last_unknown_kid_fetch
            .lock()
            .map(|mut last| {
                let allowed = last.is_none_or(|t| t.elapsed() >= self.unknown_kid_cooldown);
                if allowed {
                    *last = Some(Instant::now());
                }
                allowed
            })
            .unwrap_or(false);
        allowed && self.refresh().await.is_ok()
    }

    /// Fetches the JWKS now (one fetch at a time) and keeps the last good
    /// keys when it fails.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let started = Instant::now();
        let _one_at_a_time = self.fetching.lock().await;
        // Someone else fetched while we waited: that answer is ours too.
        if self
            .fetched_at
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t >= started)
        {
            return Ok(());
        }
        let url = self.url.clone();
        let fetched = tokio::task::spawn_blocking(move || fetch(&url))
            .await
            .map_err(|e| JwksError::Fetch {
                url: self.url.clone(),
                reason: e.to_string(),
            })
            .and_then(|r| r);
        let outcome = fetched.and_then(|(set, max_age)| {
            self.answered
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let keys = usable_keys(&set);
            if keys.is_empty() {
                return Err(JwksError::Empty {
                    url: self.url.clone(),
                });
            }
            self.keys.store(Arc::new(keys));
            Ok(max_age)
        });
        let next = match &outcome {
            Ok(max_age) => max_age
                .unwrap_or(self.default_ttl)
                .clamp(MIN_CACHE, MAX_CACHE),
            Err(_) => RETRY_AFTER_FAILURE,
        };
        if let Ok(mut at) = self.next_refresh.lock() {
            *at = Some(Instant::now() + next);
        }
        let label = if outcome.is_ok() { "ok" } else { "error" };
        METRICS.jwks_fetches.with_label_values(&[label]).inc();
        match outcome {
            Ok(_) => {
                if let Ok(mut at) = self.fetched_at.lock() {
                    *at = Some(Instant::now());
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS fetch failed; serving the last good keys");
                Err(e)
            }
        }
    }
}

/// GET the JWKS; returns it with the `max-age` of its `Cache-Control`.
fn fetch(url: &str) -> Result<(JwkSet, Option<Duration>), JwksError> {
    let failed = |reason: String| JwksError::Fetch {
        url: url.to_owned(),
        reason,
    };
    // No redirects: a 3xx is a failed fetch (the last good keys stay), so
    // nobody who can answer for the configured URL can point the gateway
    // at other keys, or from https down to plain http.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .max_redirects(0)
        .https_only(url.starts_with("https://"))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("answered {}", response.status())));
    }
    let max_age = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    let body = response
        .body_mut()
        .with_config()
        .limit(1024 * 1024)
        .read_to_vec()
        .map_err(|e| failed(e.to_string()))?;
    let set = serde_json::from_slice(&body).map_err(|_| failed("not a JWK set".to_owned()))?;
    Ok((set, max_age))
}

/// `max-age=N` of a `Cache-Control` value; `no-store`/`no-cache` mean 0.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        let (name, secs) = directive.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| secs.trim().parse().ok().map(Duration::from_secs))?
    })
}

/// The signing keys of a set: asymmetric, with a `kid`, and an algorithm
/// that is stated or follows from the key type.
fn usable_keys(set: &JwkSet) -> HashMap<String, Arc<PublishedKey>> {
    set.keys
        .iter()
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let algorithm = algorithm_of(jwk)?;
            let decoding = DecodingKey::from_jwk(jwk).ok()?;
            Some((
                kid,
                Arc::new(PublishedKey {
                    algorithm,
                    decoding,
                }),
            ))
        })
        .collect()
}

fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if format!("{:?}", ec.curve) == "P256" => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        // Shared secrets (`oct`) and other curves are never taken from a JWKS.
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(inferred),
        Some(JwkAlgorithm::RS256) if inferred == Algorithm::RS256 => Some(inferred),
        Some(JwkAlgorithm::ES256) if inferred == Algorithm::ES256 => Some(inferred),
        Some(JwkAlgorithm::EdDSA) if inferred == Algorithm::EdDSA => Some(inferred),
        Some(_) => None,
    }
}

/// An external identity provider.
pub struct ExternalIssuer {
    pub issuer: String,
    pub audience: String,
    /// Accepted `typ` values (case-insensitive); empty accepts any or none.
    pub typ: Vec<String>,
    pub required_claims: Vec<String>,
    pub static_keys: Keyring,
    pub jwks: Option<Arc<JwksSource>>,
    pub leeway: Duration,
}

impl ExternalIssuer {
    pub fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let spec: Vec<&str> = ["exp", "sub", "iss", "aud", "nbf"]
            .into_iter()
            .filter(|c| {
                matches!(*c, "exp" | "iss" | "aud") || self.required_claims.iter().any(|r| r == c)
            })
            .collect();
        validation.set_required_spec_claims(&spec);
        validation
    }

    pub fn typ_ok(&self, typ: Option<&str>) -> bool {
        self.typ.is_empty()
            || typ.is_some_and(|t| {
                self.typ
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(t))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_over_plain_http_only_on_loopback() {
        assert!(acceptable_jwks_url("https://idp.example.com/jwks"));
        assert!(acceptable_jwks_url("http://127.0.0.1:8080/jwks"));
        assert!(acceptable_jwks_url("http://localhost/jwks"));
        assert!(!acceptable_jwks_url("http://idp.example.com/jwks"));
        assert!(!acceptable_jwks_url("http://10.0.0.5/jwks"));
        assert!(!acceptable_jwks_url("ftp://idp.example.com/jwks"));
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }

    #[test]
    fn secrets_and_encryption_keys_are_never_taken() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "sig", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "lying", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}))
        .expect("set");
        let keys = usable_keys(&set);
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["sig"]);
    }
}
