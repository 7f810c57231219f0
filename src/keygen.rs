//! `portcullis keygen`: new signing keys written with restrictive permissions.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature;
use base64::Engine;

use crate::auth::keys::public_pem_of;
use crate::config::raw::KeyAlgorithm;

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("key generation failed")]
    Generate,
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `keygen` wrote, and the `[[tokens.keys]]` entry that uses it.
#[derive(Debug)]
pub struct GeneratedKey {
    pub kid: String,
    pub private_path: PathBuf,
    pub public_path: Option<PathBuf>,
    pub snippet: String,
}

/// Writes a new key named `kid` into `dir`; never overwrites a file. The
/// entry it returns names the file relative to `config_dir` when the key
/// lies inside it (the configuration resolves paths against its own
/// folder), and absolutely otherwise.
pub fn generate(
    algorithm: KeyAlgorithm,
    dir: &Path,
    kid: &str,
    config_dir: Option<&Path>,
) -> Result<GeneratedKey, KeygenError> {
    fs::create_dir_all(dir).map_err(|source| KeygenError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let dir = &std::path::absolute(dir).map_err(|source| KeygenError::Write {
        path: dir.to_owned(),
        source,
    })?;
    if algorithm == KeyAlgorithm::HS256 {
        return generate_secret(dir, kid, config_dir);
    }
    let der = private_pkcs8(algorithm)?;
    let private_path = dir.join(format!("{kid}.pem"));
    let public_path = dir.join(format!("{kid}.pub.pem"));
    let private_pem = unix_pem(&pem::Pem::new("PRIVATE KEY", der.clone()));
    let public_pem = public_pem_of(algorithm, &der)
        .ok()
        .and_then(|text| pem::parse(text).ok())
        .map(|public| unix_pem(&public))
        .ok_or(KeygenError::Generate)?;
    write_new(&private_path, private_pem.as_bytes(), 0o600)?;
    write_new(&public_path, public_pem.as_bytes(), 0o644)?;
    let snippet = format!(
        "[[tokens.keys]]\nkid = \"{kid}\"\nalgorithm = \"{}\"\nprivate_key_file = \"{}\"\n",
        algorithm.name(),
        as_config_names_it(&private_path, config_dir).display()
    );
    Ok(GeneratedKey {
        kid: kid.to_owned(),
        private_path,
        public_path: Some(public_path),
        snippet,
    })
}

/// PEM with `\n` line ends, as OpenSSL writes it (the pem crate's default
/// is `\r\n`, which every reader accepts but diff and editors show).
fn unix_pem(block: &pem::Pem) -> String {
    pem::encode_config(
        block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn private_pkcs8(algorithm: KeyAlgorithm) -> Result<Vec<u8>, KeygenError> {
    let rng = SystemRandom::new();
    let der = match algorithm {
        // RFC 8410's form (PKCS#8 v1, no public key inside): OpenSSL 3,
        // PyJWT and every JOSE library read it; the v2 form aws-lc-rs
        // writes by default is one some of them refuse.
        KeyAlgorithm::EdDSA => {
            signature::Ed25519KeyPair::generate_pkcs8v1(&rng).map(|doc| doc.as_ref().to_vec())
        }
        KeyAlgorithm::ES256 => signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .map(|doc| doc.as_ref().to_vec()),
        KeyAlgorithm::RS256 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .and_then(|pair| pair.as_der().map(|d| d.as_ref().to_vec())),
        KeyAlgorithm::HS256 => return Err(KeygenError::Generate),
    };
    der.map_err(|_| KeygenError::Generate)
}

/// 384 random bits, base64url: printable, so it also fits an environment variable.
fn generate_secret(
    dir: &Path,
    kid: &str,
    config_dir: Option<&Path>,
) -> Result<GeneratedKey, KeygenError> {
    let mut bytes = [0u8; 48];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeygenError::Generate)?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let private_path = dir.join(format!("{kid}.secret"));
    write_new(&private_path, secret.as_bytes(), 0o600)?;
    let snippet = format!(
        "[[tokens.keys]]\nkid = \"{kid}\"\nalgorithm = \"HS256\"\nsecret_file = \"{}\"\n",
        as_config_names_it(&private_path, config_dir).display()
    );
    Ok(GeneratedKey {
        kid: kid.to_owned(),
        private_path,
        public_path: None,
        snippet,
    })
}

/// `key` (absolute) relative to the configuration's folder when inside it.
/// Both are compared as the file system resolves them, so `--config
/// portcullis.toml` (whose folder is the empty path) and `..` or symbolic
/// links in either argument still find the key inside.
fn as_config_names_it(key: &Path, config_dir: Option<&Path>) -> PathBuf {
    config_dir
        .map(|dir| match dir.as_os_str().is_empty() {
            true => Path::new("."),
            false => dir,
        })
        .and_then(|dir| relative_to(key, dir))
        .unwrap_or_else(|| key.to_owned())
}

fn relative_to(key: &Path, dir: &Path) -> Option<PathBuf> {
    let resolved = |path: &Path| fs::canonicalize(path).or_else(|_| std::path::absolute(path));
    let (key_dir, name) = (key.parent()?, key.file_name()?);
    let inside = resolved(key_dir).ok()?;
    let inside = inside.strip_prefix(resolved(dir).ok()?).ok()?;
    Some(inside.join(name))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeygenError> {
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| KeygenError::Write {
        path: path.to_owned(),
        source,
    })
}

/// A fresh `kid` such as `eddsa-5f2c9a1e`.
pub fn default_kid(algorithm: KeyAlgorithm) -> String {
    let mut suffix = [0u8; 4];
    let _ = SystemRandom::new().fill(&mut suffix);
    let suffix = hex::encode(suffix);
    format!("{}-{suffix}", algorithm.name().to_ascii_lowercase())
}
