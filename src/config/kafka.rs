//! `[kafka]`: how medallion's Kafka clients (the stream's consumer, the
//! producer of `medallion produce`) authenticate and encrypt.
//!
//! ```toml
//! [kafka]
//! security_protocol = "SASL_SSL"        # KAFKA_SECURITY_PROTOCOL: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
//! sasl_mechanism = "SCRAM-SHA-512"      # KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
//! sasl_username = "medallion"           # KAFKA_SASL_USERNAME
//! sasl_password = "..."                 # KAFKA_SASL_PASSWORD (a secret: never a flag)
//! ssl_ca_location = "ca.pem"            # KAFKA_SSL_CA_LOCATION: CA certificates the broker's must chain to
//! ssl_certificate_location = "me.pem"   # KAFKA_SSL_CERTIFICATE_LOCATION: client certificate (mutual TLS)
//! ssl_key_location = "me.key"           # KAFKA_SSL_KEY_LOCATION
//! ssl_key_password = "..."              # KAFKA_SSL_KEY_PASSWORD (a secret)
//!
//! [kafka.properties]                    # any other librdkafka property, as is
//! "socket.keepalive.enable" = "true"
//! ```
//!
//! The brokers themselves stay `brokers` under `[stream]` (`--brokers`,
//! `KAFKA_BOOTSTRAP_SERVERS`). Values are checked here, whichever layer they
//! came from: a protocol or mechanism that does not exist, SASL without a
//! user or a mechanism, credentials or certificates for a protocol that does
//! not use them, a property that a typed key or medallion itself owns, each
//! is one line naming the setting. The passwords (and any property whose
//! name says password or secret) are secrets: `Config::secrets` scrubs them,
//! `Debug` shows `***`. `crate::kafka` turns this into librdkafka settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Form, Given, Setting, Sources};
use crate::error::{Error, Result};

const SECURITY_PROTOCOL: Setting =
    Setting { key: "kafka.security_protocol", flag: Some("--security-protocol"), env: &["KAFKA_SECURITY_PROTOCOL"] };
const SASL_MECHANISM: Setting = Setting {
    key: "kafka.sasl_mechanism",
    flag: Some("--sasl-mechanism"),
    env: &["KAFKA_SASL_MECHANISM", "KAFKA_SASL_MECHANISMS"],
};
const SASL_USERNAME: Setting =
    Setting { key: "kafka.sasl_username", flag: Some("--sasl-username"), env: &["KAFKA_SASL_USERNAME"] };
const SASL_PASSWORD: Setting = Setting { key: "kafka.sasl_password", flag: None, env: &["KAFKA_SASL_PASSWORD"] };
const SSL_CA_LOCATION: Setting =
    Setting { key: "kafka.ssl_ca_location", flag: Some("--ssl-ca-location"), env: &["KAFKA_SSL_CA_LOCATION"] };
const SSL_CERTIFICATE_LOCATION: Setting =
    Setting { key: "kafka.ssl_certificate_location", flag: None, env: &["KAFKA_SSL_CERTIFICATE_LOCATION"] };
const SSL_KEY_LOCATION: Setting =
    Setting { key: "kafka.ssl_key_location", flag: None, env: &["KAFKA_SSL_KEY_LOCATION"] };
const SSL_KEY_PASSWORD: Setting =
    Setting { key: "kafka.ssl_key_password", flag: None, env: &["KAFKA_SSL_KEY_PASSWORD"] };

const PROTOCOL_FORM: Form<SecurityProtocol> =
    Form { parse: SecurityProtocol::parse, expected: "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" };
const MECHANISM_FORM: Form<SaslMechanism> =
    Form { parse: SaslMechanism::parse, expected: "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" };

/// librdkafka properties that `[kafka.properties]` may not set, and why: a
/// typed key of `[kafka]` or a setting of `[stream]` gives it, or the
/// stream's exactly-once reading depends on its value (positions live in the
/// lake, never in the consumer group).
const OWNED_PROPERTIES: [(&str, &str); 15] = [
    ("bootstrap.servers", "use brokers under [stream] (or KAFKA_BOOTSTRAP_SERVERS)"),
    ("metadata.broker.list", "use brokers under [stream] (or KAFKA_BOOTSTRAP_SERVERS)"),
    ("group.id", "use group under [stream]"),
    ("security.protocol", "use security_protocol under [kafka]"),
    ("sasl.mechanism", "use sasl_mechanism under [kafka]"),
    ("sasl.mechanisms", "use sasl_mechanism under [kafka]"),
    ("sasl.username", "use sasl_username under [kafka]"),
    ("sasl.password", "use sasl_password under [kafka] (or KAFKA_SASL_PASSWORD)"),
    ("ssl.ca.location", "use ssl_ca_location under [kafka]"),
    ("ssl.certificate.location", "use ssl_certificate_location under [kafka]"),
    ("ssl.key.location", "use ssl_key_location under [kafka]"),
    ("ssl.key.password", "use ssl_key_password under [kafka] (or KAFKA_SSL_KEY_PASSWORD)"),
    ("enable.auto.commit", "the stream keeps its positions in the lake, so it stays false"),
    ("enable.auto.offset.store", "the stream keeps its positions in the lake, so it stays false"),
    ("auto.offset.reset", "a partition the lake has no position for is read from its beginning, always"),
];

/// `[kafka]` as written in the file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KafkaFile {
    security_protocol: Option<String>,
    sasl_mechanism: Option<String>,
    sasl_username: Option<String>,
    sasl_password: Option<String>,
    ssl_ca_location: Option<String>,
    ssl_certificate_location: Option<String>,
    ssl_key_location: Option<String>,
    ssl_key_password: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, super::FileValue>,
}

/// Without the passwords, should a parse error ever print the file's value.
impl std::fmt::Debug for KafkaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaFile").field("security_protocol", &self.security_protocol).finish_non_exhaustive()
    }
}

/// The flags of `stream` and `produce` that set `[kafka]` (no password: a
/// flag shows in the process list and the shell's history).
#[derive(Debug, Default, Clone)]
pub struct KafkaFlags {
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub ssl_ca_location: Option<String>,
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn parse(text: &str) -> Option<SecurityProtocol> {
        match text.to_ascii_uppercase().replace('-', "_").as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// The name librdkafka and Kafka's listeners use.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the client authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }

    /// Whether the connection is encrypted with TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`, among those medallion supports (user and
/// password; GSSAPI and OAUTHBEARER can go through `[kafka.properties]`
/// only when librdkafka was built for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    fn parse(text: &str) -> Option<SaslMechanism> {
        match text.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
            _ => None,
        }
    }

    /// The name librdkafka and Kafka use.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL user and password (checked present together with the mechanism).
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// TLS files of the client (all optional: without a CA, the system's).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaTls {
    pub ca_location: Option<PathBuf>,
    pub certificate_location: Option<PathBuf>,
    pub key_location: Option<PathBuf>,
    pub key_password: Option<String>,
}

impl std::fmt::Debug for KafkaTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTls")
            .field("ca_location", &self.ca_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field("key_password", &self.key_password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The resolved `[kafka]`: checked, so a client built from it has
/// everything its protocol needs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaConfig {
    pub security_protocol: SecurityProtocol,
    /// Set exactly when the protocol uses SASL.
    pub sasl: Option<SaslCredentials>,
    /// Used only when the protocol uses TLS.
    pub tls: KafkaTls,
    /// Other librdkafka properties, as given (`[kafka.properties]`).
    pub properties: BTreeMap<String, String>,
}

/// Everything but the secrets (passwords, secret-looking properties).
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(key, value)| (key.as_str(), if is_secret_property(key) { "***" } else { value.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("security_protocol", &self.security_protocol)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls)
            .field("properties", &properties)
            .finish()
    }
}

/// A librdkafka property whose value is a secret (`ssl.keystore.password`,
/// `sasl.oauthbearer.client.secret`, ...).
fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret")
}

impl KafkaConfig {
    /// The secret values: passwords and secret-looking properties.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self.sasl.iter().map(|s| s.password.clone()).collect();
        secrets.extend(self.tls.key_password.clone());
        secrets.extend(self.properties.iter().filter(|(k, _)| is_secret_property(k)).map(|(_, v)| v.clone()));
        secrets
    }

    /// What the connection uses, for messages: `SASL_SSL, SCRAM-SHA-512 as user 'x'`.
    pub fn describe(&self) -> String {
        match &self.sasl {
            Some(sasl) => format!("{}, {} as user '{}'", self.security_protocol.name(), sasl.mechanism.name(), sasl.username),
            None => self.security_protocol.name().to_string(),
        }
    }

    pub(super) fn resolve(flags: KafkaFlags, file: KafkaFile, sources: &Sources) -> Result<KafkaConfig> {
        let protocol_given = sources.find(&SECURITY_PROTOCOL, flags.security_protocol, file.security_protocol);
        let security_protocol = protocol_given.as_ref().map(|given| PROTOCOL_FORM.read(given)).transpose()?.unwrap_or_default();
        let protocol_origin = protocol_given.map(|g| g.origin).unwrap_or_else(|| "the default".into());
        let mechanism = sources.find(&SASL_MECHANISM, flags.sasl_mechanism, file.sasl_mechanism);
        let username = sources.find(&SASL_USERNAME, flags.sasl_username, file.sasl_username);
        let password = sources.find(&SASL_PASSWORD, None, file.sasl_password);
        let tls = [
            sources.find(&SSL_CA_LOCATION, flags.ssl_ca_location, file.ssl_ca_location),
            sources.find(&SSL_CERTIFICATE_LOCATION, None, file.ssl_certificate_location),
            sources.find(&SSL_KEY_LOCATION, None, file.ssl_key_location),
            sources.find(&SSL_KEY_PASSWORD, None, file.ssl_key_password),
        ];

        let sasl = if security_protocol.uses_sasl() {
            let needs = |what: &str, setting: &Setting| {
                Error::Config(format!(
                    "security protocol {} ({protocol_origin}) needs a SASL {what}: set {} (or {} under [kafka])",
                    security_protocol.name(),
                    setting.env[0],
                    setting.key.trim_start_matches("kafka.")
                ))
            };
            let mechanism = mechanism.ok_or_else(|| needs("mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", &SASL_MECHANISM))?;
            Some(SaslCredentials {
                mechanism: MECHANISM_FORM.read(&mechanism)?,
                username: username.ok_or_else(|| needs("user name", &SASL_USERNAME))?.text,
                password: password.ok_or_else(|| needs("password", &SASL_PASSWORD))?.text,
            })
        } else {
            if let Some(given) = mechanism.iter().chain(&username).chain(&password).next() {
                return Err(unused(given, security_protocol, &protocol_origin, "SASL_PLAINTEXT or SASL_SSL"));
            }
            None
        };

        let [ca, certificate, key, key_password] = tls;
        if !security_protocol.uses_tls() {
            if let Some(given) = [&ca, &certificate, &key, &key_password].into_iter().flatten().next() {
                return Err(unused(given, security_protocol, &protocol_origin, "SSL or SASL_SSL"));
            }
        }
        if certificate.is_some() != key.is_some() {
            let (given, missing) = match &certificate {
                Some(given) => (given, &SSL_KEY_LOCATION),
                None => (key.as_ref().expect("one of the two"), &SSL_CERTIFICATE_LOCATION),
            };
            return Err(Error::Config(format!(
                "a Kafka client {} is given ({}) without its {}: set {} (or {} under [kafka])",
                if certificate.is_some() { "certificate" } else { "key" },
                given.origin,
                if certificate.is_some() { "key" } else { "certificate" },
                missing.env[0],
                missing.key.trim_start_matches("kafka.")
            )));
        }
        let path = |given: Option<Given>| given.map(|g| PathBuf::from(g.text));
        let tls = KafkaTls {
            ca_location: path(ca),
            certificate_location: path(certificate),
            key_location: path(key),
            key_password: key_password.map(|g| g.text),
        };

        let mut properties = BTreeMap::new();
        for (key, value) in file.properties {
            let name = key.trim().to_ascii_lowercase();
            if let Some((_, instead)) = OWNED_PROPERTIES.iter().find(|(owned, _)| *owned == name) {
                return Err(Error::Config(format!(
                    "[kafka.properties] in {} sets '{key}', which medallion does not take from there: {instead}",
                    sources.file_name
                )));
            }
            properties.insert(name, value.text());
        }
        Ok(KafkaConfig { security_protocol, sasl, tls, properties })
    }
}

/// A setting given for a protocol that does not use it.
fn unused(given: &Given, protocol: SecurityProtocol, protocol_origin: &str, wanted: &str) -> Error {
    Error::Config(format!(
        "{} is set but the Kafka security protocol is {} ({protocol_origin}), which does not use it: \
         set KAFKA_SECURITY_PROTOCOL (or security_protocol under [kafka]) to {wanted}, or unset it",
        given.origin,
        protocol.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: KafkaFlags, toml: &str, env: &[(&str, &str)]) -> Result<KafkaConfig> {
        let file: KafkaFile = toml::from_str(toml).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        KafkaConfig::resolve(flags, file, &Sources { env: &lookup, file_name: "medallion.toml".into() })
    }

    const SCRAM_FILE: &str = "security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-256\"\n\
                              sasl_username = \"from-file\"\nsasl_password = \"file-Pa55word\"\n";

    #[test]
    fn plaintext_without_settings() {
        let config = resolve(KafkaFlags::default(), "", &[]).unwrap();
        assert_eq!(config, KafkaConfig::default());
        assert_eq!(config.describe(), "PLAINTEXT");
        assert!(config.secrets().is_empty());
    }

    #[test]
    fn each_setting_is_taken_from_flag_then_environment_then_file() {
        let config = resolve(KafkaFlags::default(), SCRAM_FILE, &[]).unwrap();
        let sasl = config.sasl.clone().unwrap();
        assert_eq!(config.security_protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!((sasl.mechanism, sasl.username.as_str(), sasl.password.as_str()), (SaslMechanism::ScramSha256, "from-file", "file-Pa55word"));

        let env = [
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "from-env"),
            ("KAFKA_SASL_PASSWORD", "env-Pa55word"),
            ("KAFKA_SSL_CA_LOCATION", "/env/ca.pem"),
        ];
        let config = resolve(KafkaFlags::default(), SCRAM_FILE, &env).unwrap();
        let sasl = config.sasl.clone().unwrap();
        assert_eq!(config.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!((sasl.mechanism, sasl.username.as_str(), sasl.password.as_str()), (SaslMechanism::ScramSha512, "from-env", "env-Pa55word"));
        assert_eq!(config.tls.ca_location, Some(PathBuf::from("/env/ca.pem")));

        let flags = KafkaFlags {
            security_protocol: Some("SASL_PLAINTEXT".into()),
            sasl_mechanism: Some("PLAIN".into()),
            sasl_username: Some("from-flag".into()),
            ssl_ca_location: None,
        };
        let env_without_ca = &env[..4];
        let config = resolve(flags, SCRAM_FILE, env_without_ca).unwrap();
        let sasl = config.sasl.clone().unwrap();
        assert_eq!(config.security_protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!((sasl.mechanism, sasl.username.as_str(), sasl.password.as_str()), (SaslMechanism::Plain, "from-flag", "env-Pa55word"));
        assert_eq!(config.describe(), "SASL_PLAINTEXT, PLAIN as user 'from-flag'");
    }

    #[test]
    fn a_bad_protocol_or_mechanism_names_the_setting_and_the_values_allowed() {
        let err = resolve(KafkaFlags::default(), "", &[("KAFKA_SECURITY_PROTOCOL", "TLS")]).unwrap_err().to_string();
        assert!(err.contains("'TLS'") && err.contains("KAFKA_SECURITY_PROTOCOL") && err.contains("SASL_PLAINTEXT or SASL_SSL"), "{err}");
        let flags = KafkaFlags { sasl_mechanism: Some("GSSAPI".into()), ..Default::default() };
        let err = resolve(flags, SCRAM_FILE, &[]).unwrap_err().to_string();
        assert!(err.contains("--sasl-mechanism") && err.contains("PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn sasl_needs_a_mechanism_a_user_and_a_password() {
        for (missing, needle) in [("sasl_mechanism", "KAFKA_SASL_MECHANISM"), ("sasl_username", "KAFKA_SASL_USERNAME"), ("sasl_password", "KAFKA_SASL_PASSWORD")] {
            let toml: String = SCRAM_FILE.lines().filter(|l| !l.starts_with(missing)).map(|l| format!("{l}\n")).collect();
            let err = resolve(KafkaFlags::default(), &toml, &[]).unwrap_err().to_string();
            assert!(err.contains("SASL_PLAINTEXT") && err.contains(needle) && err.contains("kafka.security_protocol in medallion.toml"), "{err}");
            assert!(!err.contains("file-Pa55word"), "{err}");
        }
    }

    #[test]
    fn credentials_or_certificates_the_protocol_does_not_use_are_an_error() {
        let err = resolve(KafkaFlags::default(), "", &[("KAFKA_SASL_USERNAME", "bob")]).unwrap_err().to_string();
        assert!(err.contains("KAFKA_SASL_USERNAME is set") && err.contains("PLAINTEXT (the default)") && err.contains("SASL_SSL"), "{err}");
        let flags = KafkaFlags { ssl_ca_location: Some("ca.pem".into()), ..Default::default() };
        let err = resolve(flags, SCRAM_FILE, &[]).unwrap_err().to_string();
        assert!(err.contains("--ssl-ca-location is set") && err.contains("SASL_PLAINTEXT (kafka.security_protocol"), "{err}");
        let err = resolve(KafkaFlags::default(), "security_protocol = \"SSL\"\nssl_certificate_location = \"me.pem\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("without its key") && err.contains("KAFKA_SSL_KEY_LOCATION"), "{err}");
        let config = resolve(KafkaFlags::default(), "security_protocol = \"SSL\"\nssl_certificate_location = \"me.pem\"\n\
                                                     ssl_key_location = \"me.key\"\nssl_key_password = \"key-Secret\"\n", &[])
            .unwrap();
        assert!(config.sasl.is_none() && config.tls.key_location == Some(PathBuf::from("me.key")));
        assert_eq!(config.secrets(), vec!["key-Secret".to_string()]);
    }

    #[test]
    fn properties_pass_through_but_not_those_owned_elsewhere() {
        let toml = "[properties]\n\"socket.keepalive.enable\" = true\n\"fetch.max.bytes\" = 1048576\n\
                    \"ssl.keystore.password\" = \"ks-Secret\"\n";
        let config = resolve(KafkaFlags::default(), toml, &[]).unwrap();
        assert_eq!(config.properties["socket.keepalive.enable"], "true");
        assert_eq!(config.properties["fetch.max.bytes"], "1048576");
        assert_eq!(config.secrets(), vec!["ks-Secret".to_string()]);
        for (key, needle) in [("sasl.password", "sasl_password under [kafka]"), ("bootstrap.servers", "brokers under [stream]"),
                              ("enable.auto.commit", "positions in the lake")] {
            let err = resolve(KafkaFlags::default(), &format!("[properties]\n\"{key}\" = \"x\"\n"), &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(needle) && err.lines().count() == 1, "{err}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let toml = format!("{SCRAM_FILE}[properties]\n\"sasl.oauthbearer.client.secret\" = \"oauth-Secret\"\n");
        let config = resolve(KafkaFlags::default(), &toml, &[]).unwrap();
        let text = format!("{config:?}");
        assert!(!text.contains("file-Pa55word") && !text.contains("oauth-Secret") && text.contains("from-file"), "{text}");
        let file: KafkaFile = toml::from_str(&toml).unwrap();
        assert!(!format!("{file:?}").contains("Pa55word"));
    }
}
