//! Signing and verification keys, each pinned to one algorithm.
//!
//! Keys come from PEM files (PKCS#8 private, SPKI public) or, for HS256,
//! from raw secret bytes. A `kid` only ever selects among configured keys:
//! it never names a file or a URL.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};

use super::AccessClaims;
use crate::config::raw::KeyAlgorithm;

/// The smallest RSA modulus we accept (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// The shortest HS256 secret we accept (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM file")]
    NotPem,
    #[error("expected a PEM block {expected:?}, found {found:?}")]
    WrongPemTag {
        expected: &'static str,
        found: String,
    },
    #[error("not a valid {0} key")]
    Rejected(&'static str),
    #[error("RSA key has fewer than {MIN_RSA_BITS} bits")]
    RsaTooSmall,
    #[error("HS256 secret has {0} bytes; at least {MIN_HMAC_SECRET_BYTES} are required")]
    SecretTooShort(usize),
    #[error("signing failed")]
    Signing,
}

/// Where a key's bytes came from.
pub enum KeyMaterial<'a> {
    /// PKCS#8 PEM: signs and verifies.
    PrivatePem(&'a [u8]),
    /// SPKI PEM: verifies only.
    PublicPem(&'a [u8]),
    /// HS256 secret bytes: signs and verifies.
    Secret(&'a [u8]),
}

pub fn jwt_algorithm(algorithm: KeyAlgorithm) -> Algorithm {
    match algorithm {
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// A key that verifies tokens carrying its `kid` and its algorithm only.
pub struct VerificationKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
    /// The public key as a JWK (RFC 7517); `None` for HS256 secrets, which
    /// are never published.
    pub jwk: Option<serde_json::Value>,
}

/// The key new access tokens are signed with.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    /// An Ed25519 key parsed once, for what is signed per request (bound
    /// assertions): jsonwebtoken parses the PKCS#8 key and derives its
    /// public half again for every signature.
    ed25519: Option<signature::Ed25519KeyPair>,
}

impl SigningKey {
    /// Signs claims as an RFC 9068 access token (`typ: at+jwt`, with `kid`).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| KeyError::Signing)
    }

    /// Signs other claims under their own `typ` (with `kid`): the identity
    /// assertions the gateway sends upstreams (`auth::assertion`).
    /// Ed25519 signatures are deterministic, so this writes the bytes
    /// `jsonwebtoken::encode` would (tested).
    pub fn sign_typed<T: serde::Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, KeyError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use base64::Engine;
        let mut header = Header::new(self.algorithm);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        let Some(pair) = &self.ed25519 else {
            return jsonwebtoken::encode(&header, claims, &self.encoding)
                .map_err(|_| KeyError::Signing);
        };
        let part = |json: serde_json::Result<Vec<u8>>| {
            json.map(|bytes| B64.encode(bytes))
                .map_err(|_| KeyError::Signing)
        };
        let mut jws = part(serde_json::to_vec(&header))?;
        jws.push('.');
        jws.push_str(&part(serde_json::to_vec(claims))?);
        let signature = pair.sign(jws.as_bytes());
        jws.push('.');
        jws.push_str(&B64.encode(signature.as_ref()));
        Ok(jws)
    }

    /// Whether what this key signs can be verified by anyone with the
    /// JWKS: not an HS256 secret, which is never published.
    pub fn is_public(&self) -> bool {
        self.algorithm != Algorithm::HS256
    }
}

/// Every configured key by `kid`, and which one signs.
#[derive(Default)]
pub struct Keyring {
    verification: HashMap<String, VerificationKey>,
    signing: HashMap<String, SigningKey>,
}

impl Keyring {
    /// Loads one key; a private key or secret also becomes able to sign.
    pub fn add(
        &mut self,
        kid: &str,
        algorithm: KeyAlgorithm,
        material: KeyMaterial,
    ) -> Result<(), KeyError> {
        let (decoding, encoding) = decode_material(algorithm, material)?;
        let algorithm = jwt_algorithm(algorithm);
        let kid = kid.to_owned();
        if let Some(encoding) = encoding {
            let ed25519 = (algorithm == Algorithm::EdDSA)
                .then(|| signature::Ed25519KeyPair::from_pkcs8(encoding.inner()).ok())
                .flatten();
            self.signing.insert(
                kid.clone(),
                SigningKey {
                    kid: kid.clone(),
                    algorithm,
                    encoding,
                    ed25519,
                },
            );
        }
        let jwk = public_jwk(&kid, algorithm, decoding.as_bytes());
        let key = VerificationKey {
            kid: kid.clone(),
            algorithm,
            decoding,
            jwk,
        };
        self.verification.insert(kid, key);
        Ok(())
    }

    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.verification.get(kid)
    }

    /// The only key, for tokens that carry no `kid` while one key is configured.
    pub fn sole(&self) -> Option<&VerificationKey> {
        let mut keys = self.verification.values();
        match (keys.next(), keys.next()) {
            (Some(key), None) => Some(key),
            _ => None,
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &VerificationKey> {
        self.verification.values()
    }

    pub fn can_sign(&self, kid: &str) -> bool {
        self.signing.contains_key(kid)
    }

    pub fn take_signing(&mut self, kid: &str) -> Option<SigningKey> {
        self.signing.remove(kid)
    }
}

fn decode_material(
    algorithm: KeyAlgorithm,
    material: KeyMaterial,
) -> Result<(DecodingKey, Option<EncodingKey>), KeyError> {
    match (algorithm, material) {
        (KeyAlgorithm::HS256, KeyMaterial::Secret(secret)) => {
            if secret.len() < MIN_HMAC_SECRET_BYTES {
                return Err(KeyError::SecretTooShort(secret.len()));
            }
            Ok((
                DecodingKey::from_secret(secret),
                Some(EncodingKey::from_secret(secret)),
            ))
        }
        (KeyAlgorithm::HS256, _) => Err(KeyError::Rejected("HS256 secret")),
        (_, KeyMaterial::Secret(_)) => Err(KeyError::Rejected("asymmetric")),
        (algorithm, KeyMaterial::PrivatePem(pem)) => private_key(algorithm, pem),
        (algorithm, KeyMaterial::PublicPem(pem)) => public_key(algorithm, pem).map(|d| (d, None)),
    }
}

fn pem_block(pem: &[u8], expected: &'static str) -> Result<Vec<u8>, KeyError> {
    let block = pem::parse(pem).map_err(|_| KeyError::NotPem)?;
    if block.tag() != expected {
        return Err(KeyError::WrongPemTag {
            expected,
            found: block.tag().to_owned(),
        });
    }
    Ok(block.into_contents())
}

/// Parses a PKCS#8 private key with aws-lc (which checks the curve and the
/// key's consistency) and derives the public half from it.
fn private_key(
    algorithm: KeyAlgorithm,
    pem: &[u8],
) -> Result<(DecodingKey, Option<EncodingKey>), KeyError> {
    let der = pem_block(pem, "PRIVATE KEY")?;
    let pair = match algorithm {
        KeyAlgorithm::EdDSA => {
            let pair = signature::Ed25519KeyPair::from_pkcs8(&der)
                .map_err(|_| KeyError::Rejected("Ed25519"))?;
            let decoding = DecodingKey::from_ed_der(pair.public_key().as_ref());
            (decoding, EncodingKey::from_ed_pem(pem))
        }
        KeyAlgorithm::ES256 => {
            let pair = signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &der,
            )
            .map_err(|_| KeyError::Rejected("P-256"))?;
            let decoding = DecodingKey::from_ec_der(pair.public_key().as_ref());
            (decoding, EncodingKey::from_ec_pem(pem))
        }
        KeyAlgorithm::RS256 => {
            let pair =
                signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| match e.description_() {
                    "TooSmall" => KeyError::RsaTooSmall,
                    _ => KeyError::Rejected("RSA"),
                })?;
            if pair.public_modulus_len() * 8 < MIN_RSA_BITS {
                return Err(KeyError::RsaTooSmall);
            }
            let decoding = DecodingKey::from_rsa_der(pair.public_key().as_ref());
            (decoding, EncodingKey::from_rsa_pem(pem))
        }
        KeyAlgorithm::HS256 => return Err(KeyError::Rejected("HS256 secret")),
    };
    let (decoding, encoding) = pair;
    let encoding = encoding.map_err(|_| KeyError::Rejected("PKCS#8 private"))?;
    Ok((decoding, Some(encoding)))
}

fn public_key(algorithm: KeyAlgorithm, pem: &[u8]) -> Result<DecodingKey, KeyError> {
    let der = pem_block(pem, "PUBLIC KEY")?;
    let decoding = match algorithm {
        KeyAlgorithm::EdDSA => {
            DecodingKey::from_ed_pem(pem).map_err(|_| KeyError::Rejected("Ed25519 public"))?
        }
        KeyAlgorithm::ES256 => {
            DecodingKey::from_ec_pem(pem).map_err(|_| KeyError::Rejected("P-256 public"))?
        }
        KeyAlgorithm::RS256 => {
            let key = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der)
                .map_err(|_| KeyError::Rejected("RSA public"))?;
            if key.key_size_bits() < MIN_RSA_BITS {
                return Err(KeyError::RsaTooSmall);
            }
            DecodingKey::from_rsa_pem(pem).map_err(|_| KeyError::Rejected("RSA public"))?
        }
        KeyAlgorithm::HS256 => return Err(KeyError::Rejected("HS256 secret")),
    };
    Ok(decoding)
}

/// The JWK of a public key from the bytes jsonwebtoken verifies with: the
/// raw Ed25519 key, the uncompressed P-256 point, or PKCS#1 `RSAPublicKey`.
fn public_jwk(kid: &str, algorithm: Algorithm, public: &[u8]) -> Option<serde_json::Value> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let params = match algorithm {
        Algorithm::EdDSA => {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(public)})
        }
        Algorithm::ES256 if public.len() == 65 && public[0] == 4 => serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..]),
        }),
        Algorithm::RS256 => {
            let (n, e) = rsa_public_components(public)?;
            serde_json::json!({"kty": "RSA", "n": B64.encode(n), "e": B64.encode(e)})
        }
        _ => return None,
    };
    let mut jwk = params;
    let object = jwk.as_object_mut()?;
    object.insert("kid".into(), kid.into());
    object.insert("alg".into(), format!("{algorithm:?}").into());
    object.insert("use".into(), "sig".into());
    Some(jwk)
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`
/// (RFC 8017 A.1.1), DER: the two integers without their sign bytes.
fn rsa_public_components(der: &[u8]) -> Option<(&[u8], &[u8])> {
    fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&first, rest) = input.split_first()?;
        if first != tag {
            return None;
        }
        let (&len_byte, rest) = rest.split_first()?;
        let (len, rest) = if len_byte < 0x80 {
            (usize::from(len_byte), rest)
        } else {
            let count = usize::from(len_byte & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[count..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    fn strip(int: &[u8]) -> &[u8] {
        let zeros = int.iter().take_while(|b| **b == 0).count();
        &int[zeros.min(int.len().saturating_sub(1))..]
    }
    let (sequence, _) = element(der, 0x30)?;
    let (n, rest) = element(sequence, 0x02)?;
    let (e, _) = element(rest, 0x02)?;
    Some((strip(n), strip(e)))
}

/// SPKI PEM of the public half of a PKCS#8 private key; used by `keygen`.
pub fn public_pem_of(algorithm: KeyAlgorithm, private_der: &[u8]) -> Result<String, KeyError> {
    let spki = match algorithm {
        KeyAlgorithm::EdDSA => signature::Ed25519KeyPair::from_pkcs8(private_der)
            .ok()
            .and_then(|p| p.public_key().as_der().ok().map(|d| d.as_ref().to_vec())),
        KeyAlgorithm::ES256 => signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            private_der,
        )
        .ok()
        .and_then(|p| p.public_key().as_der().ok().map(|d| d.as_ref().to_vec())),
        KeyAlgorithm::RS256 => signature::RsaKeyPair::from_pkcs8(private_der)
            .ok()
            .and_then(|p| p.public_key().as_der().ok().map(|d| d.as_ref().to_vec())),
        KeyAlgorithm::HS256 => None,
    };
    let spki = spki.ok_or(KeyError::Rejected("PKCS#8 private"))?;
    Ok(pem::encode(&pem::Pem::new("PUBLIC KEY", spki)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Ed25519 key parsed once signs exactly what jsonwebtoken would.
    #[test]
    fn a_typed_ed25519_signature_is_jsonwebtokens_own() {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys/test-eddsa.pem"
        ))
        .expect("fixture");
        let mut ring = Keyring::default();
        ring.add("k", KeyAlgorithm::EdDSA, KeyMaterial::PrivatePem(&pem))
            .expect("key");
        let key = ring.take_signing("k").expect("signs");
        assert!(key.ed25519.is_some());
        let claims = serde_json::json!({"sub": "alice", "roles": ["a"], "exp": 1});
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("x+jwt".into());
        header.kid = Some("k".into());
        let expected = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ed_pem(&pem).expect("pem"),
        )
        .expect("encode");
        assert_eq!(key.sign_typed("x+jwt", &claims).expect("signed"), expected);
    }
}
