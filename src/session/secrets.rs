//! Refresh tokens, their hashes, and the sealed pair kept for the grace
//! period of a rotation.
//!
//! A refresh token is 256 bits from the OS CSPRNG; the store only ever sees
//! its SHA-256. During the grace period the winning rotation's token pair
//! is kept sealed (AES-256-GCM) under a key derived (HKDF-SHA256) from the
//! token it replaced: whoever presents that token can open it, and nothing
//! usable is stored in clear.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Prefix that makes leaked refresh tokens easy to spot in logs and repos.
pub const REFRESH_PREFIX: &str = "prt_";
const SEAL_INFO: &[u8] = b"portcullis grace pair v1";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the system random source failed")]
    Random,
    #[error("the sealed pair cannot be opened")]
    Seal,
}

/// `n` random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(bytes)
}

/// A new refresh token: `prt_` and 256 random bits, base64url.
pub fn new_refresh_token() -> Result<String, SecretError> {
    Ok(format!(
        "{REFRESH_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
    ))
}

/// A new session id: 128 random bits, base64url.
pub fn new_session_id() -> Result<String, SecretError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<16>()?))
}

/// The only form of a refresh token the store holds: SHA-256, hex.
pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(digest(&SHA256, token.as_bytes()))
}

fn key_for(token: &str) -> Result<LessSafeKey, SecretError> {
    let prk = Salt::new(HKDF_SHA256, b"").extract(token.as_bytes());
    let info = [SEAL_INFO];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| SecretError::Seal)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Seals `plaintext` under a key derived from `token`: nonce ‖ ciphertext ‖ tag.
pub fn seal(token: &str, plaintext: &[u8]) -> Result<Vec<u8>, SecretError> {
    let key = key_for(token)?;
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;
    let mut data = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::empty(),
        &mut data,
    )
    .map_err(|_| SecretError::Seal)?;
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

/// Opens what [`seal`] produced with the same token.
pub fn open(token: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
    if sealed.len() < NONCE_LEN {
        return Err(SecretError::Seal);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Seal)?;
    let mut data = ciphertext.to_vec();
    let plain = key_for(token)?
        .open_in_place(nonce, Aad::empty(), &mut data)
        .map_err(|_| SecretError::Seal)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_long_random_and_hashed() {
        let a = new_refresh_token().expect("token");
        let b = new_refresh_token().expect("token");
        assert_ne!(a, b);
        assert!(a.starts_with(REFRESH_PREFIX));
        assert_eq!(a.len(), REFRESH_PREFIX.len() + 43, "256 bits, base64url");
        let hash = hash_refresh_token(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[REFRESH_PREFIX.len()..]));
    }

    #[test]
    fn sealed_pairs_open_only_with_the_same_token() {
        let sealed = seal("prt_old", b"the pair").expect("seal");
        assert_eq!(open("prt_old", &sealed).expect("open"), b"the pair");
        assert!(open("prt_other", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(open("prt_old", &tampered).is_err());
        assert!(
            !sealed.windows(8).any(|w| w == b"the pair"),
            "not stored in clear"
        );
    }
}
