//! Full-snapshot extraction from PostgreSQL through binary `COPY`.
//!
//! A `Snapshot` opens several connections that share one exported snapshot
//! (`pg_export_snapshot`, as `pg_dump -j` does), so every table and every key
//! range is read as of the same instant. A large table is split on the first
//! column of its integer primary key into one range per connection; the
//! ranges are copied and decoded in parallel tasks.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use indicatif::ProgressBar;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::columns::{arrow_schema, ColumnSpec, ColumnType};
use super::pg_binary::{copy_expression, BinaryCopyDecoder};
use super::ExtractedTable;
use crate::config::describe_database;
use crate::error::{one_line, Error, Result};

/// Rows per Arrow batch produced by extraction.
const BATCH_ROWS: usize = 65_536;
/// Key span below which a table is read in one piece.
const SPLIT_THRESHOLD: i64 = 50_000;

/// A PostgreSQL database to read from.
#[derive(Clone)]
pub struct PostgresSource {
    url: String,
    target: String,
    parallelism: usize,
    schema: String,
}

impl PostgresSource {
    pub fn new(url: &str, parallelism: usize) -> Self {
        PostgresSource {
            url: url.to_string(),
            target: describe_database(url),
            parallelism: parallelism.max(1),
            schema: "public".to_string(),
        }
    }

    /// `host:port/db`, safe to print.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// One connection, with its driver task spawned.
    pub async fn connect(&self) -> Result<Client> {
        connect(&self.url).await
    }

    /// Opens the connections of a consistent snapshot.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let coordinator = self.connect().await?;
        let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
        coordinator.batch_execute(begin).await.map_err(|e| self.read_error("(snapshot)", e))?;
        let exported: Option<String> =
            match coordinator.query_one("SELECT pg_export_snapshot()", &[]).await {
                Ok(row) => Some(row.get(0)),
                Err(_) => None,
            };
        let mut clients = vec![Arc::new(coordinator)];
        if let Some(snapshot_id) = exported {
            for _ in 1..self.parallelism {
                let worker = self.connect().await?;
                worker
                    .batch_execute(&format!("{begin}; SET TRANSACTION SNAPSHOT '{snapshot_id}'"))
                    .await
                    .map_err(|e| self.read_error("(snapshot)", e))?;
                clients.push(Arc::new(worker));
            }
        }
        Ok(Snapshot { source: self.clone(), clients })
    }

    fn read_error(&self, table: &str, err: tokio_postgres::Error) -> Error {
        let (reason, transient) = classify(&err);
        Error::SourceRead { target: self.target.clone(), table: table.to_string(), reason, transient }
    }
}

/// Connects, spawning the connection driver; errors name the target only.
pub async fn connect(url: &str) -> Result<Client> {
    let target = describe_database(url);
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        Error::Config(format!("invalid DATABASE_URL ({}): use postgres://user:password@host:port/database", one_line(&e.to_string())))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("medallion");
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let (reason, transient) = classify(&e);
        Error::SourceConnect { target: target.clone(), reason, transient }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection closed: {}", one_line(&e.to_string()));
        }
    });
    Ok(client)
}

/// A one-line reason and whether a retry may help, decided by type: the
/// SQLSTATE of a server error, the kind of the I/O error under a connection
/// failure, or a connection the server closed.
pub fn classify(err: &tokio_postgres::Error) -> (String, bool) {
    if let Some(db) = err.as_db_error() {
        let state = db.code();
        let reason = if *state == SqlState::INVALID_PASSWORD || *state == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            format!("{} (check the user and password in DATABASE_URL)", db.message())
        } else if *state == SqlState::INVALID_CATALOG_NAME {
            format!("{} (check the database name in DATABASE_URL)", db.message())
        } else {
            db.message().to_string()
        };
        return (reason, is_transient_state(state));
    }
    let mut reason = one_line(&err.to_string());
    let mut transient = err.is_closed();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        reason = format!("{reason}: {}", one_line(&inner.to_string()));
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            transient |= crate::error::is_transient_io(io.kind());
        }
        source = inner.source();
    }
    // Advice only: whether to retry was decided above.
    if reason.contains("TLS") || reason.contains("ssl") {
        reason.push_str(" (TLS connections are not supported yet: use sslmode=disable or prefer)");
    }
    (reason, transient)
}

/// SQLSTATE classes worth a retry: 08 (connection exception), 57P
/// (operator intervention: shutdown, restart), 53 (insufficient resources),
/// 40001 (serialization failure) and 40P01 (deadlock).
fn is_transient_state(state: &SqlState) -> bool {
    let code = state.code();
    code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") || code == "40001" || code == "40P01"
}

/// How one table will be read.
pub struct TablePlan {
    table: String,
    columns: Vec<ColumnSpec>,
    statements: Vec<String>,
    /// The planner's row estimate (for progress bars).
    pub estimated_rows: u64,
}

/// Connections sharing one snapshot of the database.
pub struct Snapshot {
    source: PostgresSource,
    clients: Vec<Arc<Client>>,
}

impl Snapshot {
    /// Reads the columns of `table` from the catalog.
    async fn columns(&self, table: &str) -> Result<Vec<ColumnSpec>> {
        let rows = self.clients[0]
            .query(
                "SELECT a.attname::text, t.typname::text, a.atttypmod, NOT a.attnotnull \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&self.qualified(table)],
            )
            .await
            .map_err(|e| self.source.read_error(table, e))?;
        if rows.is_empty() {
            return Err(Error::SourceTableMissing {
                target: self.source.target.clone(),
                table: format!("{}.{table}", self.source.schema),
            });
        }
        Ok(rows
            .iter()
            .map(|r| ColumnSpec {
                name: r.get(0),
                column_type: ColumnType::from_pg(r.get::<_, String>(1).as_str(), r.get(2)),
                nullable: r.get(3),
            })
            .collect())
    }

    /// The integer key to split `table` on and its bounds, when worth it.
    async fn split_key(&self, table: &str, columns: &[ColumnSpec]) -> Result<Option<(String, i64, i64)>> {
        if self.clients.len() < 2 {
            return Ok(None);
        }
        let row = self.clients[0]
            .query_opt(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
                &[&self.qualified(table)],
            )
            .await
            .map_err(|e| self.source.read_error(table, e))?;
        let Some(key) = row.map(|r| r.get::<_, String>(0)) else { return Ok(None) };
        let is_integer = columns.iter().any(|c| {
            c.name == key && matches!(c.column_type, ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64)
        });
        if !is_integer {
            return Ok(None);
        }
        let quoted = quote_ident(&key);
        let bounds = self.clients[0]
            .query_one(
                &format!("SELECT min({quoted})::int8, max({quoted})::int8 FROM {}", self.qualified(table)),
                &[],
            )
            .await
            .map_err(|e| self.source.read_error(table, e))?;
        let (Some(low), Some(high)) = (bounds.get::<_, Option<i64>>(0), bounds.get::<_, Option<i64>>(1)) else {
            return Ok(None);
        };
        Ok((high - low >= SPLIT_THRESHOLD).then_some((quoted, low, high)))
    }

    /// Checks that `table` exists and plans how to read it: its columns and
    /// one `COPY` statement per key range.
    pub async fn prepare(&self, table: &str) -> Result<TablePlan> {
        let columns = self.columns(table).await?;
        let select_list: Vec<String> = columns.iter().map(copy_expression).collect();
        let select_list = select_list.join(", ");
        let qualified = self.qualified(table);
        let statements: Vec<String> = match self.split_key(table, &columns).await? {
            None => vec![format!("COPY (SELECT {select_list} FROM {qualified}) TO STDOUT (FORMAT binary)")],
            Some((key, low, high)) => {
                let parts = self.clients.len() as i64;
                let step = (high - low) / parts + 1;
                (0..parts)
                    .map(|i| {
                        let from = low + i * step;
                        let range = if i == 0 {
                            format!("{key} < {}", from + step)
                        } else if i == parts - 1 {
                            format!("{key} >= {from}")
                        } else {
                            format!("{key} >= {from} AND {key} < {}", from + step)
                        };
                        format!("COPY (SELECT {select_list} FROM {qualified} WHERE {range}) TO STDOUT (FORMAT binary)")
                    })
                    .collect()
            }
        };
        let estimated_rows = self.clients[0]
            .query_one("SELECT GREATEST(reltuples, 0)::int8 FROM pg_class WHERE oid = to_regclass($1)", &[&qualified])
            .await
            .map(|row| row.get::<_, i64>(0) as u64)
            .unwrap_or(0);
        Ok(TablePlan { table: table.to_string(), columns, statements, estimated_rows })
    }

    /// Extracts one whole table as Arrow batches, advancing `progress` by rows.
    pub async fn extract(&self, plan: TablePlan, progress: &ProgressBar) -> Result<ExtractedTable> {
        let TablePlan { table, columns, statements, .. } = plan;
        let table = table.as_str();
        let schema = arrow_schema(&columns);
        let mut tasks = Vec::new();
        for (i, statement) in statements.into_iter().enumerate() {
            let client = self.clients[i % self.clients.len()].clone();
            let columns = columns.clone();
            let progress = progress.clone();
            tasks.push(tokio::spawn(async move { copy_part(&client, &statement, columns, &progress).await }));
        }
        let mut batches = Vec::new();
        let mut source_bytes = 0;
        for task in tasks {
            let (part, bytes) = task
                .await
                .map_err(|e| Error::other(format!("extracting {table}"), e))?
                .map_err(|e| self.source.part_error(table, e))?;
            batches.extend(part);
            source_bytes += bytes;
        }
        Ok(ExtractedTable {
            name: table.to_string(),
            origin: format!("{}/{}.{table}", self.source.target, self.source.schema),
            schema,
            batches,
            source_bytes,
        })
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.source.schema), quote_ident(table))
    }
}

/// Failure of one COPY: a PostgreSQL error, or a stream we could not decode.
enum PartError {
    Postgres(tokio_postgres::Error),
    Decode(String),
}

/// Runs one `COPY ... TO STDOUT (FORMAT binary)` and decodes it.
async fn copy_part(
    client: &Client,
    statement: &str,
    columns: Vec<ColumnSpec>,
    progress: &ProgressBar,
) -> std::result::Result<(Vec<RecordBatch>, u64), PartFailure> {
    let stream = client.copy_out(statement).await.map_err(PartFailure::postgres)?;
    futures::pin_mut!(stream);
    let mut decoder = BinaryCopyDecoder::new(columns, BATCH_ROWS);
    let mut batches = Vec::new();
    let mut bytes = 0u64;
    let mut reported = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(PartFailure::postgres)?;
        bytes += chunk.len() as u64;
        batches.extend(decoder.feed(&chunk).map_err(|e| PartFailure::decode(e.to_string()))?);
        if decoder.rows() - reported >= 8192 {
            progress.inc(decoder.rows() - reported);
            reported = decoder.rows();
        }
    }
    progress.inc(decoder.rows() - reported);
    if let Some(last) = decoder.finish().map_err(|e| PartFailure::decode(e.to_string()))? {
        batches.push(last);
    }
    Ok((batches, bytes))
}

/// Why a COPY part failed.
pub struct PartFailure(PartError);

impl PartFailure {
    fn postgres(e: tokio_postgres::Error) -> Self {
        PartFailure(PartError::Postgres(e))
    }
    fn decode(reason: String) -> Self {
        PartFailure(PartError::Decode(reason))
    }
}

impl PostgresSource {
    fn part_error(&self, table: &str, failure: PartFailure) -> Error {
        match failure.0 {
            PartError::Postgres(e) => self.read_error(table, e),
            PartError::Decode(reason) => {
                Error::SourceRead { target: self.target.clone(), table: table.to_string(), reason, transient: true }
            }
        }
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
