//! TLS: certificates from files, or a self-signed one made at first start and kept in the
//! data dir (its SHA-256 fingerprint is logged so clients can pin it). ALPN offers h2 and
//! http/1.1. The certificate sits behind a [`Certificate`] resolver, so a reload swaps it
//! for new handshakes while open connections keep the one they started with.

use crate::config::Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What can go wrong setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("making the self-signed certificate: {0}")]
    Generate(String),
    #[error("the certificate and key do not fit together: {0}")]
    Config(String),
}

/// The certificate served to new handshakes; [`Certificate::replace`] swaps it.
#[derive(Debug)]
pub struct Certificate {
    current: RwLock<Loaded>,
}

#[derive(Clone, Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl Certificate {
    /// The SHA-256 fingerprint of the certificate being served.
    pub fn fingerprint(&self) -> String {
        self.loaded().fingerprint
    }

    /// Loads the certificate `tls` names and serves it from the next handshake on. On an
    /// error the current one stays. Returns the new fingerprint.
    pub fn replace(&self, tls: &Tls, data_dir: &Path) -> Result<String, Error> {
        let loaded = load(tls, data_dir)?.ok_or_else(|| Error::Config("TLS is off".into()))?;
        let fingerprint = loaded.fingerprint.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(fingerprint)
    }

    fn loaded(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded().key)
    }
}

/// A server configuration and the certificate it serves.
pub type Served = (Arc<ServerConfig>, Arc<Certificate>);

/// The server configuration for `tls` and its swappable certificate, or None when TLS is off.
pub fn server_config(tls: &Tls, data_dir: &Path) -> Result<Option<Served>, Error> {
    let Some(loaded) = load(tls, data_dir)? else {
        return Ok(None);
    };
    let certificate = Arc::new(Certificate {
        current: RwLock::new(loaded),
    });
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((Arc::new(config), certificate)))
}

/// Reads and checks the certificate and key `tls` names (making the auto one if needed).
fn load(tls: &Tls, data_dir: &Path) -> Result<Option<Loaded>, Error> {
    let (cert, key) = match tls {
        Tls::Off => return Ok(None),
        Tls::Files { cert, key } => (cert.clone(), key.clone()),
        Tls::Auto => ensure_auto_certificate(data_dir)?,
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| read_error(&cert, err))?;
    if chain.is_empty() {
        return Err(read_error(&cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|err| read_error(&key, err))?;
    let fingerprint = fingerprint(&chain[0]);
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider)
        .map_err(|err| Error::Config(err.to_string()))?;
    tracing::info!(cert = %cert.display(), sha256 = %fingerprint, "TLS certificate loaded");
    Ok(Some(Loaded {
        key: Arc::new(certified),
        fingerprint,
    }))
}

fn read_error(path: &Path, err: impl std::fmt::Display) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}

/// SHA-256 of the certificate, as colon-separated uppercase hex (as browsers show it).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The auto certificate's files, made on first use.
fn ensure_auto_certificate(data_dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let dir = crate::data_dir::tls_dir(data_dir);
    let cert = crate::data_dir::tls_cert(data_dir);
    let key = crate::data_dir::tls_key(data_dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    crate::data_dir::create_dir(&dir).map_err(|err| read_error(&dir, err))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(hostname) = crate::hostname::hostname().filter(|h| h != "localhost") {
        names.push(format!("{hostname}.local"));
        names.push(hostname);
    }
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| Error::Generate(e.to_string()))?;
    crate::data_dir::write_private(&key, made.signing_key.serialize_pem().as_bytes())
        .map_err(|err| read_error(&key, err))?;
    std::fs::write(&cert, made.cert.pem()).map_err(|err| read_error(&cert, err))?;
    tracing::info!(cert = %cert.display(), "made a self-signed TLS certificate");
    Ok((cert, key))
}
