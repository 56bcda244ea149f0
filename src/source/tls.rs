//! TLS to the source PostgreSQL, as libpq's `sslmode` means it.
//!
//! | `sslmode` in DATABASE_URL | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default) | when the server offers it | no |
//! | `require` | yes | no |
//! | `verify-ca` | yes | chain to `sslrootcert` |
//! | `verify-full` | yes | chain to `sslrootcert` and the host name |
//!
//! tokio-postgres knows `disable`, `prefer` and `require` only, and no
//! `sslrootcert`: `parse` takes both out of the URL (either form,
//! `postgres://…?sslmode=verify-full&sslrootcert=/ca.pem` or `host=…
//! sslmode=verify-full`), hands the rest to tokio-postgres, and builds the
//! rustls connector the mode asks for.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

use crate::error::{one_line, Error, Result};

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode> {
        Ok(match text {
            "disable" => Mode::Disable,
            "prefer" | "allow" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "invalid sslmode '{other}' in DATABASE_URL: use disable, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }
}

/// The TLS part of a DATABASE_URL.
#[derive(Debug, Clone, PartialEq)]
pub struct SslSettings {
    pub mode: Mode,
    pub root_cert: Option<PathBuf>,
}

/// Splits `url` into what tokio-postgres reads and our TLS settings. The
/// error never repeats the URL (it may hold the password).
pub fn parse(url: &str) -> Result<(tokio_postgres::Config, SslSettings)> {
    let (rest, mode, root_cert) = strip_ssl_params(url);
    let mode = match mode {
        Some(text) => Mode::parse(&text)?,
        None => Mode::Prefer,
    };
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
        Error::Config(format!(
            "invalid DATABASE_URL ({}): use postgres://user:password@host:port/database",
            one_line(&e.to_string())
        ))
    })?;
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
    });
    Ok((config, SslSettings { mode, root_cert: root_cert.map(PathBuf::from) }))
}

/// `url` without its `sslmode` and `sslrootcert` parameters, and their values.
fn strip_ssl_params(url: &str) -> (String, Option<String>, Option<String>) {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| match key {
        "sslmode" => mode = Some(value),
        "sslrootcert" => root = Some(value),
        _ => {}
    };
    let is_ours = |key: &str| key == "sslmode" || key == "sslrootcert";
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None, None);
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap_or_default();
            if is_ours(key) {
                let (_, value) = url::form_urlencoded::parse(pair.as_bytes()).next().unwrap_or_default();
                take(key, value.into_owned());
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        (rest, mode, root)
    } else {
        // key=value form: values of ours hold no spaces (a mode, a path).
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((key, value)) if is_ours(key) => take(key, value.trim_matches('\'').to_string()),
                _ => kept.push(word),
            }
        }
        (kept.join(" "), mode, root)
    }
}

impl SslSettings {
    /// The connector for these settings (also for `disable`: tokio-postgres
    /// then never calls it).
    pub fn connector(&self) -> Result<MakeRustls> {
        let provider = crate::tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            Mode::Disable | Mode::Prefer | Mode::Require => Arc::new(Unverified(provider)),
            Mode::VerifyCa | Mode::VerifyFull => {
                let Some(path) = &self.root_cert else {
                    return Err(Error::Config(format!(
                        "sslmode={} needs sslrootcert=/path/to/ca.pem in DATABASE_URL: the certificate of the CA \
                         that signed the server's certificate",
                        if self.mode == Mode::VerifyCa { "verify-ca" } else { "verify-full" }
                    )));
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in crate::tls::load_certs(path, "root certificate (sslrootcert)")? {
                    roots.add(cert).map_err(|e| {
                        Error::Config(format!("root certificate {} (sslrootcert) is not usable: {e}", path.display()))
                    })?;
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| Error::Config(format!("root certificate {} (sslrootcert): {e}", path.display())))?;
                if self.mode == Mode::VerifyCa {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        Ok(MakeRustls { config: Arc::new(config) })
    }
}

/// `require` / `prefer`: encrypted, the certificate not checked (as libpq);
/// the handshake signatures are still verified.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to `sslrootcert`; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS hook over rustls.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("'{host}' is not a valid TLS server name")))?;
        Ok(RustlsConnect { config: self.config.clone(), name })
    }
}

/// One connection's handshake.
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            let stream = connector.connect(self.name, socket).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// An encrypted connection to PostgreSQL.
pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl AsyncRead for RustlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl TlsStream for RustlsStream {
    /// No channel binding: SCRAM authenticates without it (SCRAM-SHA-256,
    /// not -PLUS), as libpq does with `channel_binding=prefer` when none is offered.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_are_taken_out_of_both_url_forms() {
        let (rest, mode, root) =
            strip_ssl_params("postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem");
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!((mode.as_deref(), root.as_deref()), (Some("verify-full"), Some("/tmp/ca.pem")));
        let (rest, mode, root) = strip_ssl_params("host=h port=5 sslmode=verify-ca sslrootcert=/ca.pem user=u");
        assert_eq!(rest, "host=h port=5 user=u");
        assert_eq!((mode.as_deref(), root.as_deref()), (Some("verify-ca"), Some("/ca.pem")));
        let (rest, mode, _) = strip_ssl_params("postgres://u@h/db");
        assert_eq!((rest.as_str(), mode), ("postgres://u@h/db", None));
    }

    #[test]
    fn modes_map_to_what_tokio_postgres_enforces() {
        let (config, ssl) = parse("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(ssl, SslSettings { mode: Mode::VerifyFull, root_cert: Some("/ca.pem".into()) });
        let (config, ssl) = parse("postgres://u:p@h/db").unwrap();
        assert_eq!((config.get_ssl_mode(), ssl.mode), (SslMode::Prefer, Mode::Prefer));
        let (config, _) = parse("host=h sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        let err = parse("postgres://u:s3cret@h/db?sslmode=sometimes").unwrap_err().to_string();
        assert!(err.contains("sslmode 'sometimes'") && !err.contains("s3cret"), "{err}");
        let err = parse("postgres://u:s3cret@h/db?sslmode=verify-ca").unwrap().1.connector().err().unwrap().to_string();
        assert!(err.contains("sslrootcert"), "{err}");
    }
}
