//! The listeners' TLS certificate, swappable at run time: a reload reads
//! the certificate and key files again, and new handshakes use the new
//! pair while established connections keep theirs. Also the client
//! certificate an upstream pool presents (mTLS), read with the pool, so a
//! reload's new pools carry the new pair.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::utils::tls::CertKey;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{
    load_certs_and_key_files, ClientHello, CryptoProvider, PrivateKeyDer, ResolvesServerCert,
    RootCertStore,
};

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
    let (chain, private) = read_pair(files)?;
    certified_key(files, chain, private)
}

type Chain = Vec<pingora_rustls::CertificateDer<'static>>;

/// The certificate chain and private key in the files.
fn read_pair(files: &TlsFiles) -> Result<(Chain, PrivateKeyDer<'static>), String> {
    let (cert, key) = (files.cert.to_string_lossy(), files.key.to_string_lossy());
    load_certs_and_key_files(&cert, &key)
        .map_err(|e| format!("{cert}, {key}: {e}"))?
        .ok_or_else(|| format!("{cert}, {key}: no certificate or no private key"))
}

/// The pair as rustls signs with it, once the key is known to be the
/// certificate's.
fn certified_key(
    files: &TlsFiles,
    chain: Chain,
    private: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let (cert, key) = (files.cert.to_string_lossy(), files.key.to_string_lossy());
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

/// The client certificate and key an upstream pool presents, checked as
/// the listener's pair is: the engine builds its TLS client from these
/// bytes at each new connection and panics on ones it cannot parse, so
/// every certificate is parsed here and the key must be the leaf's.
pub fn client_cert_key(files: &TlsFiles) -> Result<Arc<CertKey>, String> {
    let (chain, private) = read_pair(files)?;
    let cert = files.cert.display();
    for der in &chain {
        // Parsing as a trust anchor reads the whole certificate.
        RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| format!("{cert}: not a valid certificate: {e}"))?;
    }
    let key_der = private.secret_der().to_vec();
    // The engine re-reads the key's format from its bytes alone.
    PrivateKeyDer::try_from(key_der.clone())
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let ders = chain.iter().map(|c| c.as_ref().to_vec()).collect();
    certified_key(files, chain, private)?;
    Ok(Arc::new(CertKey::new(ders, key_der)))
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
