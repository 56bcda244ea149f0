//! The library's error type: one variant per kind of failure a user can act on.
//!
//! Every message is one line that says what failed and what to do about it, and
//! never carries a secret: connection targets are shown as `host:port/db`,
//! never as the full URL. `is_transient` tells the pipeline which failures are
//! worth a retry (a reset connection, a lost commit race) and which are not (a
//! bad password).
//!
//! Lake failures keep the dependency's error as their `source` and are
//! classified by its type (`classify`): deltalake's `VersionAlreadyExists` and
//! `CommitConflict`, object_store's `PermissionDenied` / `Unauthenticated` and
//! the kind of its `HttpError`, the kind of an `std::io::Error`. Nothing that
//! drives a retry depends on the wording of a dependency's message.

use std::fmt;

use deltalake::kernel::transaction::TransactionError;
use deltalake::DeltaTableError;
use object_store::client::{HttpError, HttpErrorKind};

/// A dependency's error, kept as the source of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a failure means for the operation that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Another writer committed the same table version first: nothing of
    /// this write was kept, running it again is safe.
    CommitConflict,
    /// The network or the server failed; a later attempt may succeed.
    Transient,
    /// The storage refused the credentials or the permissions.
    Credentials,
    /// Anything else: retrying gives the same result.
    Permanent,
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (bad URL, bad date, unreadable config file).
    #[error("{0}")]
    Config(String),

    /// PostgreSQL could not be reached or refused us.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    SourceConnect { target: String, reason: String, transient: bool },

    /// A source table is missing from the database.
    #[error("table {table} not found in PostgreSQL database {target}: load the data first (`medallion source load`) or point DATABASE_URL at the Northwind database")]
    SourceTableMissing { target: String, table: String },

    /// A query against the source failed after connecting.
    #[error("reading {table} from PostgreSQL at {target} failed: {reason}")]
    SourceRead { target: String, table: String, reason: String, transient: bool },

    /// A dump file could not be read or parsed.
    #[error("dump {path}: {reason}")]
    Dump { path: String, reason: String },

    /// The lake could not be read or written.
    #[error("lake table {table}: {reason}")]
    Lake {
        table: String,
        reason: String,
        kind: FailureKind,
        #[source]
        source: BoxError,
    },

    /// The lake's storage (an S3 endpoint or bucket) failed or refused us.
    #[error("{what}: {reason}")]
    Storage { what: String, reason: String, transient: bool },

    /// A SQL model failed to plan or run.
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },

    /// A fail-the-run expectation found offending rows.
    #[error("expectation {rule} of model {model} failed for {rows} row(s) and is declared on_fail = \"fail\": fix the source data or relax the rule in {model}.expectations.toml")]
    ExpectationFailed { model: String, rule: String, rows: u64 },

    /// A Kafka broker refused the client: bad credentials, a failed TLS
    /// handshake, a denied ACL. Never transient: librdkafka would retry
    /// forever, medallion stops at once (see `kafka`).
    #[error("Kafka at {brokers} refused the connection: {reason}")]
    KafkaRefused { brokers: String, reason: String },

    /// A user query failed.
    #[error("query failed: {0}")]
    Query(String),

    /// Another stream recorded source positions this one was about to
    /// record (two streams read the same partition): nothing of this commit
    /// was kept.
    #[error("{table}: another stream recorded the positions of {keys} meanwhile — read a topic with one stream, or share it between streams with --group NAME (or split it with --partitions)")]
    PositionsTaken { table: String, keys: String },

    /// A Ballista cluster (`--engine ballista://`, `medallion cluster`) that
    /// cannot take the work.
    #[error("Ballista cluster at {scheduler}: {reason}")]
    Cluster { scheduler: String, reason: String },

    /// Anything else, with context.
    #[error("{context}: {reason}")]
    Other { context: String, reason: String },
}

impl Error {
    /// Whether retrying the same operation later may succeed (connection reset,
    /// timeout, server restarting). Bad credentials, missing tables and bad SQL
    /// are never transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::SourceConnect { transient, .. }
            | Error::SourceRead { transient, .. }
            | Error::Storage { transient, .. } => *transient,
            Error::Lake { kind, .. } => matches!(kind, FailureKind::Transient | FailureKind::CommitConflict),
            _ => false,
        }
    }

    /// Whether this is a Delta commit that lost the race against another
    /// writer of the same table.
    pub fn is_commit_conflict(&self) -> bool {
        matches!(self, Error::Lake { kind: FailureKind::CommitConflict, .. })
    }

    /// Wraps a lake (Delta / object store / DataFusion) failure for `table`,
    /// classified by the type of `err` and its sources, adding what to do for
    /// the failures a user can fix (credentials, a missing bucket, a
    /// concurrent writer, an unreachable server).
    pub fn lake(table: impl fmt::Display, err: impl Into<BoxError>) -> Self {
        let source: BoxError = err.into();
        let kind = classify(source.as_ref());
        let reason = one_line(&source.to_string());
        // The advice comes first: a long dependency message (an S3 URL, a
        // retry report) is what gets cut when the line is too long.
        let reason = match lake_advice(kind, &reason) {
            Some(advice) => format!("{advice} — {reason}"),
            None => reason,
        };
        Error::Lake { table: table.to_string(), reason, kind, source }
    }

    /// Wraps a model failure.
    pub fn model(model: impl fmt::Display, err: impl fmt::Display) -> Self {
        Error::Model { model: model.to_string(), reason: one_line(&err.to_string()) }
    }

    /// Generic context wrapper.
    pub fn other(context: impl fmt::Display, err: impl fmt::Display) -> Self {
        Error::Other { context: context.to_string(), reason: one_line(&err.to_string()) }
    }
}

/// Longest message kept from a dependency: some (DataFusion plans) run to
/// tens of kilobytes.
const MAX_MESSAGE: usize = 400;

/// Collapses a multi-line message from a dependency into one short line.
pub fn one_line(message: &str) -> String {
    let joined: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = joined.join(" ");
    if line.chars().count() <= MAX_MESSAGE {
        return line;
    }
    let cut: String = line.chars().take(MAX_MESSAGE).collect();
    format!("{cut}…")
}

/// What `err` means, from its type and the types of its sources: the first
/// error in the chain that says something decides.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> FailureKind {
    classify_chain(err).unwrap_or(FailureKind::Permanent)
}

/// The meaning of one error of a chain, when its type tells it.
fn classify_one(error: &(dyn std::error::Error + 'static)) -> Option<FailureKind> {
    if let Some(delta) = error.downcast_ref::<DeltaTableError>() {
        return match delta {
            DeltaTableError::VersionAlreadyExists(_) => Some(FailureKind::CommitConflict),
            _ => None,
        };
    }
    if let Some(transaction) = error.downcast_ref::<TransactionError>() {
        return match transaction {
            TransactionError::VersionAlreadyExists(_)
            | TransactionError::CommitConflict(_)
            | TransactionError::MaxCommitAttempts(_) => Some(FailureKind::CommitConflict),
            _ => None,
        };
    }
    if let Some(store) = error.downcast_ref::<object_store::Error>() {
        return match store {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                Some(FailureKind::Credentials)
            }
            object_store::Error::Generic { source, .. } => match hidden_status(source.as_ref()) {
                Some(401 | 403) => Some(FailureKind::Credentials),
                Some(500..=599) => Some(FailureKind::Transient),
                _ => None,
            },
            _ => None,
        };
    }
    // The Delta kernel keeps the object store's error without exposing it
    // as a source.
    if let Some(delta_kernel::Error::ObjectStore(store)) = error.downcast_ref::<delta_kernel::Error>() {
        return Some(classify(store));
    }
    if let Some(http) = error.downcast_ref::<HttpError>() {
        return match http.kind() {
            HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted => {
                Some(FailureKind::Transient)
            }
            _ => Some(FailureKind::Permanent),
        };
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        // An io::Error made from another error (a Parquet file written to
        // S3 wraps object_store's error so) hides that error from
        // `source()`, which returns the wrapped error's own source: it is
        // classified first.
        if let Some(kind) = io.get_ref().and_then(|wrapped| classify_chain(wrapped)) {
            return Some(kind);
        }
        return Some(if is_transient_io(io.kind()) { FailureKind::Transient } else { FailureKind::Permanent });
    }
    None
}

/// `classify`, or `None` when no error of the chain says anything.
fn classify_chain(err: &(dyn std::error::Error + 'static)) -> Option<FailureKind> {
    let mut current = Some(err);
    while let Some(error) = current {
        if let Some(kind) = classify_one(error) {
            return Some(kind);
        }
        current = error.source();
    }
    None
}

/// Network-level failures of a socket or file: worth another attempt.
pub fn is_transient_io(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe | TimedOut | UnexpectedEof | Interrupted
    )
}

/// The HTTP status of an S3 answer that object_store reports as a generic
/// error (a list request, or a status it has no variant for). object_store
/// keeps the status in a type it does not export (its `RetryError`), so
/// this one case reads it from the message that type formats:
/// "Server returned non-2xx status code: 503 …".
fn hidden_status(source: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let text = source.to_string();
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// What to do about a lake failure.
fn lake_advice(kind: FailureKind, reason: &str) -> Option<&'static str> {
    match kind {
        FailureKind::CommitConflict => Some(
            "another writer committed to this table at the same time; nothing of this write was kept: run the command again",
        ),
        FailureKind::Credentials => {
            Some("the S3 server rejected the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        }
        FailureKind::Transient => {
            Some("the storage server did not answer: check that it runs and the endpoint (AWS_ENDPOINT_URL)")
        }
        // A job of a Ballista cluster (`--engine ballista://`) that failed
        // there: its message is the executor's text, so read as text.
        FailureKind::Permanent if reason.contains("Job ") && reason.contains("failed: Cancelled") => Some(
            "the Ballista cluster cancelled the job (an executor was lost and the job stalled, or it was cancelled by hand: \
             `medallion cluster status` says which); nothing was written: run the command again",
        ),
        FailureKind::Permanent
            if reason.contains("Job ") && (reason.contains("Object Store error") || reason.contains("Failed to fetch metadata")) =>
        {
            Some(
                "an executor of the Ballista cluster could not read the lake's files: give every executor the lake's storage \
                 settings (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, or [s3] in its medallion.toml)",
            )
        }
        FailureKind::Permanent
            if reason.contains("h2 protocol error")
                || (reason.contains("tcp connect error") && reason.contains("service is currently unavailable")) =>
        {
            Some(
                "the connection to the Ballista scheduler broke during the job (it stopped or restarted: \
                 `medallion cluster status`); nothing was written: run the command again once it is back",
            )
        }
        // Advice only, never a decision: the bucket's name is in S3's answer.
        FailureKind::Permanent if reason.contains("NoSuchBucket") => {
            Some("the bucket does not exist: create it or rerun with --create-buckets")
        }
        FailureKind::Permanent => None,
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(err: datafusion::error::DataFusionError) -> Self {
        Error::Query(one_line(&err.to_string()))
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(err: datafusion::arrow::error::ArrowError) -> Self {
        Error::Query(one_line(&err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_lines_and_caps_length() {
        assert_eq!(one_line("a\n  b\n\nc"), "a b c");
        assert_eq!(one_line(&"x".repeat(5000)).chars().count(), MAX_MESSAGE + 1);
    }

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::new(kind, "test")
    }

    #[test]
    fn network_failures_are_transient_and_others_not() {
        assert!(Error::lake("bronze.orders", io(std::io::ErrorKind::ConnectionRefused)).is_transient());
        assert!(!Error::lake("bronze.orders", io(std::io::ErrorKind::PermissionDenied)).is_transient());
        assert!(!Error::Config("bad".into()).is_transient());
    }

    #[test]
    fn classification_follows_the_source_chain() {
        // A reset connection seen through deltalake and DataFusion wrappers.
        let store = object_store::Error::Generic { store: "S3", source: Box::new(io(std::io::ErrorKind::ConnectionReset)) };
        let delta = DeltaTableError::ObjectStore { source: store };
        let wrapped = datafusion::error::DataFusionError::External(Box::new(delta));
        assert_eq!(classify(&wrapped), FailureKind::Transient);
        // A message that reads like a network failure is not one.
        let plain = DeltaTableError::Generic("connection reset by peer".into());
        assert_eq!(classify(&plain), FailureKind::Permanent);
    }

    #[test]
    fn lake_failures_carry_advice() {
        let conflict = Error::lake("bronze.orders", DeltaTableError::VersionAlreadyExists(3));
        assert!(conflict.is_transient() && conflict.is_commit_conflict());
        assert!(conflict.to_string().contains("another writer"), "{conflict}");
        let lost = DeltaTableError::Transaction { source: TransactionError::MaxCommitAttempts(15) };
        assert!(Error::lake("bronze.orders", lost).is_commit_conflict());
        let denied = object_store::Error::PermissionDenied { path: "bronze/x".into(), source: "403 Forbidden".into() };
        let denied = Error::lake("layer bronze", denied);
        assert!(!denied.is_transient());
        assert!(denied.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{denied}");
        let unavailable =
            object_store::Error::Generic { store: "S3", source: "Server returned non-2xx status code: 503 Service Unavailable: ".into() };
        let down = Error::lake("layer bronze", unavailable);
        assert!(down.is_transient());
        assert!(down.to_string().contains("AWS_ENDPOINT_URL"), "{down}");
        // The advice survives the cut of a long dependency message.
        let long = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "x".repeat(2 * MAX_MESSAGE));
        let cut = one_line(&format!("error: {}", Error::lake("bronze.order_details", long)));
        assert!(cut.contains("AWS_ENDPOINT_URL"), "{cut}");
        // A list request refused: object_store reports it as generic.
        let refused = object_store::Error::Generic { store: "S3", source: "Server returned non-2xx status code: 403 Forbidden: SignatureDoesNotMatch".into() };
        assert!(Error::lake("layer bronze", refused).to_string().contains("AWS_SECRET_ACCESS_KEY"));
        // An unreachable server seen through the Delta kernel, which hides its source.
        let store = object_store::Error::Generic { store: "S3", source: Box::new(io(std::io::ErrorKind::ConnectionRefused)) };
        let kernel = DeltaTableError::KernelError(delta_kernel::Error::ObjectStore(store));
        assert!(Error::lake("bronze.employees", kernel).is_transient());
        // A Parquet file written to a server that stopped: object_store's
        // error inside an io::Error inside Parquet's (seen in a test run).
        let store = object_store::Error::Generic { store: "S3", source: Box::new(io(std::io::ErrorKind::ConnectionRefused)) };
        let write = deltalake::parquet::errors::ParquetError::External(Box::new(std::io::Error::other(store)));
        let stopped = Error::lake("bronze.order_details", DeltaTableError::Parquet { source: write });
        assert!(stopped.is_transient());
        assert!(stopped.to_string().contains("AWS_ENDPOINT_URL"), "{stopped}");
    }
}
