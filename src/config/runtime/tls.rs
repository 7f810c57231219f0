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
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
