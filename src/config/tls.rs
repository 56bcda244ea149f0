//! `[tls]`: the certificate and key the serving layer's two endpoints (HTTPS
//! dashboard/API, the PostgreSQL wire endpoint) present, and whether the
//! PostgreSQL endpoint refuses unencrypted connections.
//!
//! ```toml
//! [tls]
//! cert = "server.crt"     # MEDALLION_TLS_CERT: PEM, the chain (leaf first)
//! key = "server.key"      # MEDALLION_TLS_KEY: PEM, PKCS#8, PKCS#1 or SEC1
//! require_tls = false     # MEDALLION_REQUIRE_TLS
//! ```
//!
//! Only the paths are read here; the files are loaded once when `serve`
//! starts (`serve::tls`), so a command that does not serve never reads them.

use std::path::PathBuf;

use serde::Deserialize;

use super::{text, FileValue, Setting, Sources, BOOLEAN};
use crate::error::{Error, Result};

const TLS_CERT: Setting = Setting { key: "tls.cert", flag: None, env: &["MEDALLION_TLS_CERT"] };
const TLS_KEY: Setting = Setting { key: "tls.key", flag: None, env: &["MEDALLION_TLS_KEY"] };
const TLS_REQUIRE: Setting = Setting { key: "tls.require_tls", flag: None, env: &["MEDALLION_REQUIRE_TLS"] };

/// `[tls]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    require_tls: Option<FileValue>,
}

/// TLS of the serving layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    /// The certificate and its key, when TLS is on: the HTTP endpoint then
    /// speaks HTTPS only, the PostgreSQL endpoint accepts `sslmode=require`.
    pub identity: Option<TlsIdentity>,
    /// Refuse PostgreSQL clients that do not encrypt (needs `identity`).
    pub require_tls: bool,
}

/// Where the certificate chain and the private key are (PEM files).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsConfig {
    /// `https` when TLS is on, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.identity.is_some() { "https" } else { "http" }
    }

    /// What the PostgreSQL endpoint's banner line adds about TLS.
    pub fn pg_note(&self) -> &'static str {
        match (&self.identity, self.require_tls) {
            (None, _) => "",
            (Some(_), false) => " (TLS offered: sslmode=require)",
            (Some(_), true) => " (TLS required: sslmode=require)",
        }
    }

    pub(super) fn resolve(file: TlsFile, sources: &Sources) -> Result<TlsConfig> {
        let cert = sources.find(&TLS_CERT, None, file.cert);
        let key = sources.find(&TLS_KEY, None, file.key);
        let require_tls = sources.parsed(&TLS_REQUIRE, None, text(file.require_tls), BOOLEAN)?.unwrap_or(false);
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsIdentity { cert: cert.text.into(), key: key.text.into() }),
            (None, None) => None,
            (Some(given), None) => {
                return Err(Error::Config(format!(
                    "a TLS certificate is given ({}) but no key: set MEDALLION_TLS_KEY or key under [tls]",
                    given.origin
                )))
            }
            (None, Some(given)) => {
                return Err(Error::Config(format!(
                    "a TLS key is given ({}) but no certificate: set MEDALLION_TLS_CERT or cert under [tls]",
                    given.origin
                )))
            }
        };
        if require_tls && identity.is_none() {
            return Err(Error::Config(
                "require_tls is on but TLS has no certificate: set MEDALLION_TLS_CERT and MEDALLION_TLS_KEY \
                 (or cert and key under [tls]), or turn require_tls off"
                    .into(),
            ));
        }
        Ok(TlsConfig { identity, require_tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml: &str, env: &[(&str, &str)]) -> Result<TlsConfig> {
        let file: TlsFile = toml::from_str(toml).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        TlsConfig::resolve(file, &Sources { env: &lookup, file_name: "medallion.toml".into() })
    }

    #[test]
    fn tls_is_off_unless_a_certificate_and_key_are_given() {
        assert_eq!(resolve("", &[]).unwrap(), TlsConfig::default());
        let config = resolve("cert = \"a.pem\"\nkey = \"k.pem\"\nrequire_tls = true\n", &[]).unwrap();
        assert_eq!(config.identity, Some(TlsIdentity { cert: "a.pem".into(), key: "k.pem".into() }));
        assert!(config.require_tls);
        // The environment wins over the file.
        let env = [("MEDALLION_TLS_CERT", "env.pem"), ("MEDALLION_REQUIRE_TLS", "false")];
        let config = resolve("cert = \"a.pem\"\nkey = \"k.pem\"\nrequire_tls = true\n", &env).unwrap();
        assert_eq!(config.identity.unwrap().cert, PathBuf::from("env.pem"));
        assert!(!config.require_tls);
    }

    #[test]
    fn half_a_tls_setup_is_one_line_naming_what_is_missing() {
        let err = resolve("cert = \"a.pem\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("tls.cert in medallion.toml") && err.contains("MEDALLION_TLS_KEY"), "{err}");
        let err = resolve("", &[("MEDALLION_TLS_KEY", "k.pem")]).unwrap_err().to_string();
        assert!(err.contains("MEDALLION_TLS_KEY") && err.contains("MEDALLION_TLS_CERT"), "{err}");
        let err = resolve("require_tls = true\n", &[]).unwrap_err().to_string();
        assert!(err.contains("require_tls") && err.lines().count() == 1, "{err}");
        let err = resolve("require_tls = \"maybe\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("tls.require_tls in medallion.toml") && err.contains("true or false"), "{err}");
    }
}
