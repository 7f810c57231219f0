//! API keys: their form, their hash, and where a request presents one.
//!
//! A key is `pck_` + a 16-hex-digit id + `_` + 256 random bits
//! (base64url): the id names the key in lists, revocations, logs and the
//! failure throttle; only the whole key's SHA-256 is stored. A fast hash
//! is enough because the secret part is 256 bits from the OS CSPRNG: a
//! leaked hash cannot be searched back to the key however fast the hash,
//! whereas a password hash (Argon2) exists to slow down guessing of
//! low-entropy secrets and would cost tens of milliseconds and megabytes
//! on every request, turning a flood of wrong keys into a denial of
//! service. Matching and the store are `store::api_keys`' job.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::HeaderMap;

use super::AuthError;
use crate::vocabulary::API_KEY_HEADER;

/// What every key begins with, so a leaked one is easy to spot.
pub const KEY_PREFIX: &str = "pck_";
/// Hex digits of a key's id.
const ID_LEN: usize = 16;
/// Base64url characters of 32 random bytes.
const SECRET_LEN: usize = 43;
/// The whole key's length.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN;

/// The `Authorization` scheme a key may be presented under.
const SCHEME: &[u8] = b"apikey";

/// A new key, as it is shown once: its id and the key itself.
pub struct NewKey {
    pub id: String,
    pub key: String,
}

impl NewKey {
    /// `None` when the system's random source failed.
    pub fn generate() -> Option<Self> {
        let rng = SystemRandom::new();
        let mut id = [0u8; ID_LEN / 2];
        let mut secret = [0u8; 32];
        rng.fill(&mut id).ok()?;
        rng.fill(&mut secret).ok()?;
        let id = hex::encode(id);
        let key = format!("{KEY_PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
        Some(Self { id, key })
    }
}

/// The form of a key stored and compared: SHA-256.
pub fn hash_key(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, key.as_bytes()).as_ref());
    out
}

/// Whether two key hashes are equal, in constant time.
pub fn same_hash(presented: &[u8; 32], stored: &[u8; 32]) -> bool {
    verify_slices_are_equal(presented, stored).is_ok()
}

/// The id a well-formed key names; `None` for anything else.
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
    let secret = secret.strip_prefix('_')?;
    let id_ok = id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let secret_ok = secret.len() == SECRET_LEN
        && (secret.bytes()).all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    (id_ok && secret_ok).then_some(id)
}

/// Whether an id is one this gateway could have made (16 lower-case hex
/// digits): anything else names no key.
pub fn is_key_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The key a request presents, in `X-Api-Key` or `Authorization: ApiKey`;
/// `Ok(None)` when there is none. Two of them, in one header or both, or
/// an empty one, are a client bug: 400 `invalid_request`.
pub fn extract_api_key(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut found = None;
    for value in headers.get_all(API_KEY_HEADER) {
        found = Some(one_more(found, value.as_bytes())?);
    }
    for value in headers.get_all(AUTHORIZATION) {
        if let Some(key) = under_scheme(value.as_bytes()) {
            found = Some(one_more(found, key)?);
        }
    }
    found
        .map(|key| std::str::from_utf8(key).map_err(|_| AuthError::Invalid("api_key_malformed")))
        .transpose()
}

fn one_more<'a>(found: Option<&'a [u8]>, value: &'a [u8]) -> Result<&'a [u8], AuthError> {
    let value = value.trim_ascii();
    if found.is_some() {
        return Err(AuthError::InvalidRequest("several_api_keys"));
    }
    if value.is_empty() {
        return Err(AuthError::InvalidRequest("empty_api_key"));
    }
    Ok(value)
}

/// The credential of an `Authorization: ApiKey …` value (the scheme in
/// any case, RFC 9110 §11.1); `None` for another scheme.
fn under_scheme(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let scheme = value.get(..SCHEME.len())?;
    let rest = &value[SCHEME.len()..];
    let separated = rest.first().is_none_or(|b| matches!(b, b' ' | b'\t'));
    (scheme.eq_ignore_ascii_case(SCHEME) && separated).then_some(rest)
}

/// Whether any `Authorization` header names the `ApiKey` scheme: such a
/// header never goes upstream.
pub fn has_api_key_authorization(headers: &HeaderMap) -> bool {
    (headers.get_all(AUTHORIZATION).iter()).any(|v| under_scheme(v.as_bytes()).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn a_new_key_names_its_id_and_matches_only_its_hash() {
        let new = NewKey::generate().expect("random");
        assert_eq!(new.key.len(), KEY_LEN);
        assert_eq!(key_id(&new.key), Some(new.id.as_str()));
        let stored = hash_key(&new.key);
        assert!(same_hash(&hash_key(&new.key), &stored));
        let other = NewKey::generate().expect("random");
        assert!(!same_hash(&hash_key(&other.key), &stored));
        assert_ne!(new.id, other.id);
    }

    #[test]
    fn malformed_keys_name_no_id() {
        let good = NewKey::generate().expect("random").key;
        for bad in [
            "",
            "pck_",
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replacen("pck_", "pcx_", 1),
            &good.to_ascii_uppercase(),
        ] {
            assert_eq!(key_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_key_is_read_from_either_header_and_never_twice() {
        let key = "pck_0123456789abcdef_x";
        for spelling in [
            vec![("x-api-key", key)],
            vec![("authorization", &format!("ApiKey {key}") as &str)],
            vec![("authorization", &format!("apikey\t {key} ") as &str)],
        ] {
            assert_eq!(extract_api_key(&headers(&spelling)), Ok(Some(key)));
        }
        assert_eq!(
            extract_api_key(&headers(&[("authorization", "Bearer abc")])),
            Ok(None)
        );
        assert_eq!(
            extract_api_key(&headers(&[("authorization", "ApiKeyX abc")])),
            Ok(None)
        );
        let both = [
            ("x-api-key", key),
            ("authorization", &format!("ApiKey {key}") as &str),
        ];
        assert_eq!(
            extract_api_key(&headers(&both)),
            Err(AuthError::InvalidRequest("several_api_keys"))
        );
        assert_eq!(
            extract_api_key(&headers(&[("x-api-key", " ")])),
            Err(AuthError::InvalidRequest("empty_api_key"))
        );
        assert_eq!(
            extract_api_key(&headers(&[("authorization", "ApiKey")])),
            Err(AuthError::InvalidRequest("empty_api_key"))
        );
    }
}
