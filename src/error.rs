//! The library's error type: one variant per kind of failure a user can act on.
//!
//! Every message is one line that says what failed and what to do about it, and
//! never carries a secret: connection targets are shown as `host:port/db`,
//! never as the full URL. `is_transient` tells the pipeline which failures are
//! worth a retry (a reset connection) and which are not (a bad password).

use std::fmt;

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
    Lake { table: String, reason: String, transient: bool },

    /// The lake's storage (an S3 endpoint or bucket) failed or refused us.
    #[error("{what}: {reason}")]
    Storage { what: String, reason: String, transient: bool },

    /// A SQL model failed to plan or run.
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },

    /// A fail-the-run expectation found offending rows.
    #[error("expectation {rule} of model {model} failed for {rows} row(s) and is declared on_fail = \"fail\": fix the source data or relax the rule in {model}.expectations.toml")]
    ExpectationFailed { model: String, rule: String, rows: u64 },

    /// A user query failed.
    #[error("query failed: {0}")]
    Query(String),

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
            | Error::Lake { transient, .. }
            | Error::Storage { transient, .. } => *transient,
            _ => false,
        }
    }

    /// Wraps a lake (Delta / object store / DataFusion) failure for `table`,
    /// adding what to do for the failures a user can fix (credentials, a
    /// missing bucket, a concurrent writer, an unreachable server).
    pub fn lake(table: impl fmt::Display, err: impl fmt::Display) -> Self {
        let reason = one_line(&err.to_string());
        let transient = looks_transient(&reason) || is_commit_conflict(&reason);
        let reason = match lake_advice(&reason) {
            Some(advice) => format!("{reason}; {advice}"),
            None => reason,
        };
        Error::Lake { table: table.to_string(), reason, transient }
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

/// Heuristic for errors surfaced as text by object_store / deltalake: network
/// level failures are worth a retry, everything else is not.
fn looks_transient(reason: &str) -> bool {
    let lower = reason.to_ascii_lowercase();
    ["connection reset", "connection refused", "timed out", "timeout", "broken pipe", "error sending request", "connection closed"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// A Delta commit lost the race against another writer of the same table.
fn is_commit_conflict(reason: &str) -> bool {
    ["Failed to commit transaction", "Tried committing existing table version"].iter().any(|n| reason.contains(n))
}

/// What to do about a lake failure, when the message shows a known cause.
fn lake_advice(reason: &str) -> Option<&'static str> {
    let lower = reason.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(&n.to_ascii_lowercase()));
    if is_commit_conflict(reason) {
        Some("another writer committed to this table at the same time; nothing of this write was kept: run the command again")
    } else if has(&["SignatureDoesNotMatch", "InvalidAccessKeyId", "403 Forbidden", "status 403", "AccessDenied", "InvalidToken"]) {
        Some("the S3 server rejected the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    } else if has(&["NoSuchBucket"]) {
        Some("the bucket does not exist: create it or rerun with --create-buckets")
    } else if looks_transient(reason) {
        Some("the storage server did not answer: check that it runs and the endpoint (AWS_ENDPOINT_URL)")
    } else {
        None
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

    #[test]
    fn network_failures_are_transient_and_others_not() {
        assert!(Error::lake("bronze.orders", "error sending request: connection refused").is_transient());
        assert!(!Error::lake("bronze.orders", "Permission denied (os error 13)").is_transient());
        assert!(!Error::Config("bad".into()).is_transient());
    }

    #[test]
    fn lake_failures_carry_advice() {
        let conflict = Error::lake("bronze.orders", "Transaction failed: Failed to commit transaction: concurrent append");
        assert!(conflict.is_transient());
        assert!(conflict.to_string().contains("another writer"), "{conflict}");
        let denied = Error::lake("layer bronze", "Client error with status 403 Forbidden: SignatureDoesNotMatch");
        assert!(!denied.is_transient());
        assert!(denied.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{denied}");
        let down = Error::lake("layer bronze", "error sending request for url (http://127.0.0.1:1/bronze/x)");
        assert!(down.to_string().contains("AWS_ENDPOINT_URL"), "{down}");
    }
}
