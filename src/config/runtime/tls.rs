//! The listeners' TLS certificate, swappable at run time: a reload reads
//! the certificate and key files again, and new handshakes use the new
//! pair while established connections keep theirs.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{load_certs_and_key_files, ClientHello, CryptoProvider, ResolvesServerCert};

use crate::config::runtime::TlsFiles;

#[derive(Debug)]
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        Ok(Self {
            current: ArcSwap::new(certified(files)?),
        })
    }

    /// Reads the files again; on failure the current pair stays.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), String> {
        self.current.store(certified(files)?);
        Ok(())
    }
}

fn certified(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let (cert, key) = (files.cert.to_string_lossy(), files.key.to_string_lossy());
    let (chain, private) = load_certs_and_key_files(&cert, &key)
        .map_err(|e| format!("{cert}, {key}: {e}"))?
        .ok_or_else(|| format!("{cert}, {key}: no certificate or no private key"))?;
    pingora_rustls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("{key}: {e}"))?;
    let pair = CertifiedKey::new(chain, signing);
    // A key that is not the certificate's would fail every handshake.
    pair.keys_match().map_err(|_| {
        format!("{key}: this private key does not belong to the certificate in {cert}")
    })?;
    Ok(Arc::new(pair))
}

/// Whether the files hold a certificate chain and the private key that
/// belongs to it, as the listener will load them: `check` reports what a
/// start or a reload would otherwise refuse.
pub fn check_pair(files: &TlsFiles) -> Result<(), String> {
    certified(files).map(|_| ())
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
