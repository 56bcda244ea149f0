//! Full-snapshot extraction from PostgreSQL through binary `COPY`.
//!
//! A `Snapshot` opens several connections that share one exported snapshot
//! (`pg_export_snapshot`, as `pg_dump -j` does), so every table and every key
//! range is read as of the same instant. A large table is split on the first
//! column of its integer primary key into one range per connection; the
//! ranges are copied and decoded in parallel tasks, each a few batches ahead
//! of the writer that drains it, so a table never sits whole in memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use indicatif::ProgressBar;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::columns::{arrow_schema, ColumnSpec, ColumnType};
use super::pg_binary::{copy_expression, BinaryCopyDecoder};
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
    let (mut config, ssl) = super::tls::parse(url)?;
    let tls = ssl.connector()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("medallion");
    let (client, connection) = config.connect(tls).await.map_err(|e| {
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
    if reason.contains("certificate") || reason.contains("CertificateError") {
        reason.push_str(" (check sslrootcert and sslmode in DATABASE_URL: sslrootcert must be the CA that signed the server's certificate)");
    } else if reason.contains("TLS") || reason.contains("ssl") {
        reason.push_str(" (check sslmode in DATABASE_URL: the server may not offer TLS)");
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

    /// Starts extracting one table: each COPY part is read and decoded by a
    /// task of its own, a few batches ahead of whoever drains its stream
    /// (`TableExtraction::parts`), advancing `progress` by rows.
    pub fn extract(&self, plan: TablePlan, progress: &ProgressBar) -> TableExtraction {
        let TablePlan { table, columns, statements, .. } = plan;
        let schema = arrow_schema(&columns);
        let mut parts = Vec::new();
        let mut tasks = Vec::new();
        for (i, statement) in statements.into_iter().enumerate() {
            let client = self.clients[i % self.clients.len()].clone();
            let columns = columns.clone();
            let progress = progress.clone();
            let (sender, receiver) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
            parts.push(PartStream { receiver, finished: false });
            tasks.push(tokio::spawn(async move { copy_part(&client, &statement, columns, &progress, sender).await }));
        }
        TableExtraction {
            origin: format!("{}/{}.{table}", self.source.target, self.source.schema),
            name: table,
            schema,
            parts,
            tasks,
            source: self.source.clone(),
        }
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.source.schema), quote_ident(table))
    }
}

/// Failure of one COPY: a PostgreSQL error, or a stream we could not decode.
enum PartError {
    Postgres(tokio_postgres::Error),
    Decode(String),
    /// The consumer stopped draining (it failed on its own account).
    Abandoned,
}

/// Batches a part decodes ahead of its consumer (at most this many wait in
/// memory per part).
const BATCHES_AHEAD: usize = 4;

/// What a COPY part sends: its batches, then `Done` or `Failed`. A stream
/// that ends without either was cut (its task died), never complete.
enum PartMessage {
    Batch(RecordBatch),
    Done,
    Failed,
}

/// One table being extracted (see `Snapshot::extract`).
pub struct TableExtraction {
    pub name: String,
    /// Printable origin: `host:port/db/schema.table`.
    pub origin: String,
    pub schema: SchemaRef,
    parts: Vec<PartStream>,
    tasks: Vec<tokio::task::JoinHandle<std::result::Result<PartRead, PartFailure>>>,
    source: PostgresSource,
}

/// What extracting a table read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractionDone {
    pub rows: u64,
    /// Bytes received from PostgreSQL.
    pub source_bytes: u64,
    /// The slowest part's time reading and decoding, not counting the time
    /// it waited for its consumer.
    pub read_time: Duration,
}

impl TableExtraction {
    /// The parts' batch streams, to be drained at the same time. A part that
    /// fails ends its stream with an error; `finish` says why.
    pub fn parts(&mut self) -> Vec<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        std::mem::take(&mut self.parts)
            .into_iter()
            .map(|part| {
                let rows = futures::stream::unfold(part, |mut part| async move {
                    let item = part.next().await?;
                    Some((item, part))
                });
                Box::pin(RecordBatchStreamAdapter::new(schema.clone(), rows)) as SendableRecordBatchStream
            })
            .collect()
    }

    /// Waits for every part; the first failure as the error the source gives.
    pub async fn finish(self) -> Result<ExtractionDone> {
        let mut done = ExtractionDone::default();
        let mut failure = None;
        for task in self.tasks {
            match task.await {
                Ok(Ok(part)) => {
                    done.rows += part.rows;
                    done.source_bytes += part.bytes;
                    done.read_time = done.read_time.max(part.busy);
                }
                // The writer's own error says why it stopped.
                Ok(Err(PartFailure(PartError::Abandoned))) => {}
                Ok(Err(e)) => failure = failure.or(Some(self.source.part_error(&self.name, e))),
                Err(e) => failure = failure.or(Some(Error::other(format!("extracting {}", self.name), e))),
            }
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(done),
        }
    }
}

/// The receiving end of one part.
struct PartStream {
    receiver: tokio::sync::mpsc::Receiver<PartMessage>,
    finished: bool,
}

impl PartStream {
    async fn next(&mut self) -> Option<datafusion::error::Result<RecordBatch>> {
        if self.finished {
            return None;
        }
        let failed = |why: &str| Some(Err(datafusion::error::DataFusionError::Execution(why.to_string())));
        match self.receiver.recv().await {
            Some(PartMessage::Batch(batch)) => Some(Ok(batch)),
            Some(PartMessage::Done) => {
                self.finished = true;
                None
            }
            Some(PartMessage::Failed) => {
                self.finished = true;
                failed("the source read failed")
            }
            None => {
                self.finished = true;
                failed("the source read stopped before its end")
            }
        }
    }
}

/// What one part read.
struct PartRead {
    rows: u64,
    bytes: u64,
    /// Wall time minus the time spent waiting for the consumer.
    busy: Duration,
}

/// Runs one `COPY ... TO STDOUT (FORMAT binary)`, decodes it and sends its
/// batches; sends `Failed` before returning an error.
async fn copy_part(
    client: &Client,
    statement: &str,
    columns: Vec<ColumnSpec>,
    progress: &ProgressBar,
    sender: tokio::sync::mpsc::Sender<PartMessage>,
) -> std::result::Result<PartRead, PartFailure> {
    let started = Instant::now();
    let mut waited = Duration::ZERO;
    let result = copy_and_send(client, statement, columns, progress, &sender, &mut waited).await;
    let last = if result.is_ok() { PartMessage::Done } else { PartMessage::Failed };
    let _ = sender.send(last).await;
    let (rows, bytes) = result?;
    Ok(PartRead { rows, bytes, busy: started.elapsed().saturating_sub(waited) })
}

async fn copy_and_send(
    client: &Client,
    statement: &str,
    columns: Vec<ColumnSpec>,
    progress: &ProgressBar,
    sender: &tokio::sync::mpsc::Sender<PartMessage>,
    waited: &mut Duration,
) -> std::result::Result<(u64, u64), PartFailure> {
    let stream = client.copy_out(statement).await.map_err(PartFailure::postgres)?;
    futures::pin_mut!(stream);
    let mut decoder = BinaryCopyDecoder::new(columns, BATCH_ROWS);
    let mut bytes = 0u64;
    let mut reported = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(PartFailure::postgres)?;
        bytes += chunk.len() as u64;
        for batch in decoder.feed(&chunk).map_err(|e| PartFailure::decode(e.to_string()))? {
            send_batch(sender, batch, waited).await?;
        }
        if decoder.rows() - reported >= 8192 {
            progress.inc(decoder.rows() - reported);
            reported = decoder.rows();
        }
    }
    progress.inc(decoder.rows() - reported);
    let rows = decoder.rows();
    if let Some(last) = decoder.finish().map_err(|e| PartFailure::decode(e.to_string()))? {
        send_batch(sender, last, waited).await?;
    }
    Ok((rows, bytes))
}

/// Sends one batch, adding the time it waited for room to `waited`.
async fn send_batch(
    sender: &tokio::sync::mpsc::Sender<PartMessage>,
    batch: RecordBatch,
    waited: &mut Duration,
) -> std::result::Result<(), PartFailure> {
    let started = Instant::now();
    // A closed channel means the consumer gave up: stop reading.
    let sent = sender.send(PartMessage::Batch(batch)).await.is_ok();
    *waited += started.elapsed();
    if sent {
        Ok(())
    } else {
        Err(PartFailure(PartError::Abandoned))
    }
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
            PartError::Abandoned => Error::SourceRead {
                target: self.target.clone(),
                table: table.to_string(),
                reason: "the bronze writer stopped reading".to_string(),
                transient: true,
            },
        }
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
