//! TLS plumbing shared by the serving layer (HTTPS, PostgreSQL wire) and the
//! PostgreSQL source client: the one crypto provider (ring), and PEM
//! certificates and keys read with errors of one line that name the file and
//! what is wrong with it (never its content).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsIdentity;
use crate::error::{Error, Result};

/// The crypto provider of every TLS connection we make or accept. Two
/// providers are compiled in (the AWS SDK brings aws-lc-rs), so rustls cannot
/// pick a process default by itself: we name ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file; `what` names the file's role in messages
/// ("TLS certificate", "root certificate").
pub fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(e, what, path))?;
    let certs = iter.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| pem_error(e, what, path))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{what} {shown} holds no certificate: expected a PEM file with a -----BEGIN CERTIFICATE----- block"
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::Config(format!(
            "TLS key {} holds no private key: expected a PEM file with a -----BEGIN PRIVATE KEY----- \
             (or RSA / EC PRIVATE KEY) block",
            path.display()
        )),
        other => pem_error(other, "TLS key", path),
    })
}

fn pem_error(error: pem::Error, what: &str, path: &Path) -> Error {
    let shown = path.display();
    match error {
        pem::Error::Io(e) => Error::Config(format!("cannot read {what} {shown}: {e}")),
        pem::Error::NoItemsFound => Error::Config(format!("{what} {shown} holds no certificate")),
        _ => Error::Config(format!("{what} {shown} is not a valid PEM file")),
    }
}

/// The server side of TLS for one endpoint: the certificate chain and key of
/// `identity`, offering the ALPN protocols `alpn` (e.g. `http/1.1`,
/// `postgresql`). A key that does not belong to the certificate is refused here.
pub fn server_config(identity: &TlsIdentity, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
    let certs = load_certs(&identity.cert, "TLS certificate")?;
    let key = load_key(&identity.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::Config(format!(
                "TLS certificate {} and key {} cannot be used together: {e}",
                identity.cert.display(),
                identity.key.display()
            ))
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
