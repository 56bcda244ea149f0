//! Kafka clients: librdkafka's settings built in one place, and a broker's
//! refusal turned into one typed error.
//!
//! `Connection` holds the brokers (`[stream] brokers`) and the security of
//! `[kafka]` (`config::KafkaConfig`); `Connection::client_config` is the one
//! builder of librdkafka settings, used by the stream's consumer
//! (`stream::kafka`) and by `medallion produce`: brokers and security first,
//! then the client's own tuning, then `[kafka.properties]` (the user's word
//! is last).
//!
//! librdkafka never gives up on a broker that refuses it: bad credentials, a
//! TLS handshake that fails or a denied ACL are reported as an error event,
//! and it reconnects forever. medallion gives up at once instead, the
//! failure being one a retry cannot fix. `KafkaContext` watches what
//! librdkafka reports: an error whose `RDKafkaErrorCode` says refusal
//! (`refusal_kind`, decided by the code, never by the wording) is kept in
//! `Diagnostics`, with the last error line librdkafka logged to explain it;
//! `Connection::refused` makes it `Error::KafkaRefused`, one line with every
//! password scrubbed. `metadata` asks for a topic's metadata in short slices
//! and checks for a refusal between them, so a wrong password fails in about
//! a second rather than after the whole metadata timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::FutureProducer;

use crate::config::KafkaConfig;
use crate::error::{one_line, Error, Result};

/// Where a client connects and how it authenticates.
#[derive(Clone, Debug)]
pub struct Connection {
    brokers: String,
    kafka: KafkaConfig,
}

/// What makes a broker refuse a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// SASL: wrong user or password, a mechanism the broker does not enable.
    Authentication,
    /// The TLS handshake failed: a certificate that does not verify, a port
    /// that does not speak TLS.
    Tls,
    /// Authenticated, but an ACL denies the topic, the group or the cluster.
    Authorization,
}

/// A refusal reported by librdkafka, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// librdkafka's words (its error string, else its last error log line).
    pub detail: Option<String>,
}

/// Whether `err` is a broker refusing the client, by its error code.
pub fn refusal_kind(err: &KafkaError) -> Option<RefusalKind> {
    match err.rdkafka_error_code()? {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::UnsupportedSASLMechanism
        | RDKafkaErrorCode::IllegalSASLState => Some(RefusalKind::Authentication),
        RDKafkaErrorCode::SSL => Some(RefusalKind::Tls),
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::GroupAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => Some(RefusalKind::Authorization),
        _ => None,
    }
}

/// What librdkafka reported about a client's brokers: the first refusal,
/// and the last error line it logged.
#[derive(Debug, Default)]
pub struct Diagnostics {
    refusal: Mutex<Option<Refusal>>,
    last_error_line: Mutex<Option<String>>,
}

impl Diagnostics {
    /// Keeps `err` when it is the first refusal; `reason` is librdkafka's
    /// explanation when it gave one. Returns whether it is a refusal.
    pub fn note(&self, err: &KafkaError, reason: Option<&str>) -> bool {
        let Some(kind) = refusal_kind(err) else { return false };
        let detail = reason
            .filter(|r| !r.trim().is_empty())
            .map(str::to_string)
            .or_else(|| self.last_error_line.lock().ok().and_then(|line| line.clone()));
        if let Ok(mut refusal) = self.refusal.lock() {
            refusal.get_or_insert(Refusal { kind, detail });
        }
        true
    }

    /// The first refusal reported, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal.lock().ok().and_then(|refusal| refusal.clone())
    }

    fn log_error_line(&self, line: &str) {
        if let Ok(mut last) = self.last_error_line.lock() {
            *last = Some(line.to_string());
        }
    }
}

/// The context of medallion's Kafka clients: librdkafka's log lines and
/// error events go to `Diagnostics` (and to the debug log), not to stderr.
pub struct KafkaContext {
    diagnostics: Arc<Diagnostics>,
    assignment: Arc<Assignment>,
}

/// The partitions the consumer group gave a consumer that subscribed (see
/// `stream::kafka`), and how many times that changed. Partitions are
/// paused as they are assigned: the stream positions them from the lake
/// before it reads them.
#[derive(Debug, Default)]
pub struct Assignment {
    partitions: Mutex<Vec<i32>>,
    /// Bumped at every assignment and revocation.
    epoch: AtomicU64,
}

impl Assignment {
    /// The partitions assigned now.
    pub fn partitions(&self) -> Vec<i32> {
        self.partitions.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// How many assignments and revocations there have been.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn set(&self, partitions: Vec<i32>) {
        if let Ok(mut current) = self.partitions.lock() {
            *current = partitions;
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Error as i32) {
            self.diagnostics.log_error_line(line);
        }
        tracing::debug!("librdkafka {facility}: {line}");
    }

    /// Error events of producers (a consumer's come through its `poll`).
    /// Transport errors are retried by librdkafka itself.
    fn error(&self, error: KafkaError, reason: &str) {
        if !self.diagnostics.note(&error, Some(reason)) {
            tracing::debug!("Kafka: {error}: {reason}");
        }
    }
}

impl KafkaContext {
    /// What the consumer group assigned (a subscribed consumer's).
    pub fn assignment(&self) -> Arc<Assignment> {
        self.assignment.clone()
    }
}

impl ConsumerContext for KafkaContext {
    /// The group moved partitions: a new assignment is paused and recorded,
    /// a revocation recorded (the stream notices the epoch and starts over
    /// from the lake's positions).
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                if let Err(err) = consumer.pause(partitions) {
                    tracing::warn!("Kafka: pausing the assigned partitions: {}", one_line(&err.to_string()));
                }
                self.assignment.set(partitions.elements().iter().map(|p| p.partition()).collect());
            }
            Rebalance::Revoke(_) => self.assignment.set(Vec::new()),
            Rebalance::Error(err) => tracing::warn!("Kafka: rebalance failed: {}", one_line(&err.to_string())),
        }
    }
}

impl Connection {
    /// Clients of `brokers` (`host:port[,host:port]`) with `kafka`'s security.
    pub fn new(kafka: &KafkaConfig, brokers: &str) -> Connection {
        Connection { brokers: brokers.to_string(), kafka: kafka.clone() }
    }

    /// Clients of `brokers` without authentication or encryption.
    pub fn plaintext(brokers: &str) -> Connection {
        Connection::new(&KafkaConfig::default(), brokers)
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// librdkafka's settings: brokers and security, then `tuning` (the
    /// client's own), then `[kafka.properties]`.
    pub fn client_config(&self, tuning: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("security.protocol", self.kafka.security_protocol.name().to_ascii_lowercase());
        if let Some(sasl) = &self.kafka.sasl {
            config.set("sasl.mechanism", sasl.mechanism.name());
            config.set("sasl.username", &sasl.username);
            config.set("sasl.password", &sasl.password);
        }
        if self.kafka.security_protocol.uses_tls() {
            let tls = &self.kafka.tls;
            let files = [
                ("ssl.ca.location", &tls.ca_location),
                ("ssl.certificate.location", &tls.certificate_location),
                ("ssl.key.location", &tls.key_location),
            ];
            for (key, path) in files {
                if let Some(path) = path {
                    config.set(key, path.display().to_string());
                }
            }
            if let Some(password) = &tls.key_password {
                config.set("ssl.key.password", password);
            }
        }
        for (key, value) in tuning {
            config.set(*key, *value);
        }
        for (key, value) in &self.kafka.properties {
            config.set(key, value);
        }
        config
    }

    /// A consumer in `group` (which it never commits to), and what its
    /// context reports.
    pub fn consumer(&self, group: &str, tuning: &[(&str, &str)]) -> Result<(BaseConsumer<KafkaContext>, Arc<Diagnostics>)> {
        let diagnostics = Arc::new(Diagnostics::default());
        let context = KafkaContext { diagnostics: diagnostics.clone(), assignment: Arc::default() };
        let mut config = self.client_config(tuning);
        config.set("group.id", group);
        let consumer = config.create_with_context(context).map_err(|e| self.invalid(e))?;
        Ok((consumer, diagnostics))
    }

    /// A producer, and what its context reports.
    pub fn producer(&self, tuning: &[(&str, &str)]) -> Result<(FutureProducer<KafkaContext>, Arc<Diagnostics>)> {
        let diagnostics = Arc::new(Diagnostics::default());
        let context = KafkaContext { diagnostics: diagnostics.clone(), assignment: Arc::default() };
        let producer = self.client_config(tuning).create_with_context(context).map_err(|e| self.invalid(e))?;
        Ok((producer, diagnostics))
    }

    /// `text` without any password of the configuration.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in self.kafka.secrets().iter().filter(|s| s.len() >= 3) {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    /// librdkafka rejected the settings (an unknown property, a TLS file it
    /// cannot read, a mechanism it was built without).
    fn invalid(&self, err: KafkaError) -> Error {
        Error::Config(format!(
            "invalid Kafka settings ({}): {}",
            self.kafka.describe(),
            self.scrub(&one_line(&err.to_string()))
        ))
    }

    /// The error of a broker refusing this client: one line, what to check.
    pub fn refused(&self, refusal: &Refusal) -> Error {
        let what = match refusal.kind {
            RefusalKind::Authentication => "authentication failed",
            RefusalKind::Tls => "the TLS handshake failed",
            RefusalKind::Authorization => "access denied",
        };
        let advice = match refusal.kind {
            RefusalKind::Authentication => {
                "check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM \
                 (sasl_username, sasl_password, sasl_mechanism under [kafka])"
            }
            RefusalKind::Tls => {
                "check KAFKA_SSL_CA_LOCATION (ssl_ca_location under [kafka]) and that this port of the broker speaks TLS"
            }
            RefusalKind::Authorization => {
                "the user needs the Describe and Read (stream) or Write (produce) ACLs on the topic"
            }
        };
        let detail = refusal.detail.as_deref().map(|d| format!(": {}", self.scrub(&one_line(d)))).unwrap_or_default();
        Error::KafkaRefused {
            brokers: self.brokers.clone(),
            reason: format!("{what} ({}) — {advice}{detail}", self.kafka.describe()),
        }
    }
}

/// First slice of `metadata`'s wait; each next one is twice as long.
const FIRST_SLICE: Duration = Duration::from_millis(250);

/// A topic's metadata from `fetch` (a client's `fetch_metadata` with the
/// timeout given), asked in growing slices up to `timeout`. After each
/// failed slice `refused` says whether the broker refused the client
/// meanwhile: `Err` then, at once. `Ok(Err(_))`: no answer in `timeout`.
pub fn metadata(
    timeout: Duration,
    fetch: impl Fn(Duration) -> KafkaResult<Metadata>,
    mut refused: impl FnMut() -> Option<Error>,
) -> Result<KafkaResult<Metadata>> {
    let deadline = Instant::now() + timeout;
    let mut slice = FIRST_SLICE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let result = fetch(slice.min(left).max(Duration::from_millis(1)));
        if let Some(refusal) = refused() {
            return Err(refusal);
        }
        if result.is_ok() || Instant::now() >= deadline {
            return Ok(result);
        }
        slice *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SaslCredentials, SaslMechanism, SecurityProtocol};

    fn scram() -> KafkaConfig {
        KafkaConfig {
            security_protocol: SecurityProtocol::SaslPlaintext,
            sasl: Some(SaslCredentials {
                mechanism: SaslMechanism::ScramSha256,
                username: "medallion".into(),
                password: "Sekr3t-pw".into(),
            }),
            properties: [("socket.keepalive.enable".to_string(), "true".to_string())].into(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn one_builder_sets_brokers_security_tuning_then_properties() {
        let mut kafka = scram();
        kafka.properties.insert("linger.ms".into(), "50".into());
        let config = Connection::new(&kafka, "b1:9092,b2:9092").client_config(&[("linger.ms", "5"), ("client.id", "medallion")]);
        assert_eq!(config.get("bootstrap.servers"), Some("b1:9092,b2:9092"));
        assert_eq!(config.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(config.get("sasl.username"), Some("medallion"));
        assert_eq!(config.get("client.id"), Some("medallion"));
        assert_eq!(config.get("linger.ms"), Some("50"), "[kafka.properties] has the last word");
        assert_eq!(config.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(config.get("ssl.ca.location"), None, "no TLS file for a protocol without TLS");
        let plain = Connection::plaintext("b:1").client_config(&[]);
        assert_eq!((plain.get("security.protocol"), plain.get("sasl.username")), (Some("plaintext"), None));
    }

    #[test]
    fn refusals_are_recognised_by_their_code() {
        let global = |code| KafkaError::Global(code);
        assert_eq!(refusal_kind(&global(RDKafkaErrorCode::Authentication)), Some(RefusalKind::Authentication));
        assert_eq!(refusal_kind(&KafkaError::MessageConsumption(RDKafkaErrorCode::SSL)), Some(RefusalKind::Tls));
        assert_eq!(refusal_kind(&global(RDKafkaErrorCode::TopicAuthorizationFailed)), Some(RefusalKind::Authorization));
        assert_eq!(refusal_kind(&global(RDKafkaErrorCode::BrokerTransportFailure)), None);
        assert_eq!(refusal_kind(&global(RDKafkaErrorCode::AllBrokersDown)), None);
    }

    #[test]
    fn a_refusal_is_one_line_without_the_password() {
        let connection = Connection::new(&scram(), "127.0.0.1:29094");
        let diagnostics = Diagnostics::default();
        diagnostics.log_error_line("sasl_plaintext://127.0.0.1:29094/bootstrap: SASL authentication error:\nbad password Sekr3t-pw");
        assert!(!diagnostics.note(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), None));
        assert!(diagnostics.note(&KafkaError::MessageConsumption(RDKafkaErrorCode::Authentication), None));
        // The first refusal is kept.
        diagnostics.note(&KafkaError::Global(RDKafkaErrorCode::SSL), Some("later"));
        let refusal = diagnostics.refusal().unwrap();
        assert_eq!(refusal.kind, RefusalKind::Authentication);
        let message = connection.refused(&refusal).to_string();
        assert!(message.starts_with("Kafka at 127.0.0.1:29094 refused the connection: authentication failed"), "{message}");
        assert!(message.contains("SCRAM-SHA-256 as user 'medallion'") && message.contains("KAFKA_SASL_PASSWORD"), "{message}");
        assert!(message.contains("SASL authentication error") && !message.contains("Sekr3t-pw"), "{message}");
        assert_eq!(message.lines().count(), 1);
        assert!(!connection.refused(&refusal).is_transient());
    }

    #[test]
    fn metadata_stops_waiting_at_a_refusal() {
        let started = Instant::now();
        let calls = std::cell::Cell::new(0);
        let result = metadata(
            Duration::from_secs(10),
            |_| Err(KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure)),
            || {
                calls.set(calls.get() + 1);
                (calls.get() == 2).then(|| Error::Config("refused".into()))
            },
        );
        assert!(matches!(result, Err(Error::Config(_))));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // Without a refusal, it gives up at the timeout with the client's error.
        let result = metadata(
            Duration::from_millis(300),
            |slice| {
                std::thread::sleep(slice);
                Err(KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure))
            },
            || None,
        );
        assert!(matches!(result, Ok(Err(_))));
    }
}
