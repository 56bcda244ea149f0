//! The audit log: every query on every endpoint, and every failed login,
//! appended to `audit.queries`, a Delta table of the lake outside the
//! medallion that only admins can read.
//!
//! ```text
//!  /api/sql ─┐                                    ┌─ one Delta commit per flush
//!  as_of ────┤ AuditLog::record ─▶ bounded ─▶ writer thread ─▶ audit.queries
//!  pg wire ──┤  (never waits)       channel    (batches)      (partitioned by query_date)
//!  sql (CLI) ┘
//! ```
//!
//! A record holds when the query started, the token's name and role, the
//! endpoint (`http` for `/api/sql`, `time_travel` for `/api/sql` with
//! `as_of`, `pg`, `cli`), the statement as the client sent it (never a
//! header: tokens and passwords are not statements), the rows returned, the
//! duration and the outcome (`ok`, `error`, `refused`, `timeout`) with the
//! error's one line. A failed login is a record with no token name, no
//! statement, outcome `refused` and what failed (never the secret presented).
//!
//! Recording never blocks a query: `AuditLog::record` puts the record on a
//! bounded channel; when it is full the record is dropped, counted
//! (`/metrics`) and said in the log. The writer (a thread of its own, so
//! its commits never hold a server worker) gathers records and
//! appends them every `[audit] flush_interval` (or sooner past
//! `MAX_BATCH`), one commit for all of them; a failed append is retried at
//! the next flush. `close` writes what is left (graceful stop of `serve` and
//! `up`). `medallion sql`, one query per process, appends its record itself
//! (`append`).
//!
//! Only admins read the log: `audit.queries` is registered in admin
//! sessions only (`lake::session`), and `refusal` gives the one line every
//! endpoint answers a reader or analyst who names it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::TableReference;
use datafusion::execution::context::SessionState;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, Identity, Role, Secrets};
use crate::error::{one_line, Error, Result};
use crate::lake::{Appender, Lake, Layer};
use crate::tables::AUDIT_QUERIES;

/// Records the channel holds before `record` drops them.
const CHANNEL_CAPACITY: usize = 65_536;
/// The writer appends as soon as it holds this many records.
const MAX_BATCH: usize = 50_000;
/// Records kept for the next attempt while appends fail; older ones are dropped.
const MAX_PENDING: usize = 200_000;
/// Longest statement stored; a longer one is cut and marked.
const MAX_STATEMENT_CHARS: usize = 64 * 1024;
/// The partition column of `audit.queries`.
pub const PARTITION_COLUMN: &str = "query_date";

/// Where a query came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/sql`.
    Http,
    /// `POST /api/sql` with `as_of`.
    TimeTravel,
    /// The PostgreSQL wire endpoint.
    Pg,
    /// `medallion sql`.
    Cli,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Http => "http",
            Endpoint::TimeTravel => "time_travel",
            Endpoint::Pg => "pg",
            Endpoint::Cli => "cli",
        }
    }
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Failed while planned or run (a bad column, a missing table…).
    Error,
    /// Not run: not read-only, not for this role, no free slot, a failed login.
    Refused,
    /// Stopped at its time limit.
    Timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
        }
    }
}

/// One row of `audit.queries`.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// When the query arrived.
    pub at: DateTime<Utc>,
    /// The token's name; `None` for a failed login.
    pub token_name: Option<String>,
    pub role: Option<Role>,
    pub endpoint: Endpoint,
    /// The statement as sent; `None` for a failed login.
    pub statement: Option<String>,
    /// Rows returned to the client (`None` when it got no result).
    pub rows: Option<u64>,
    pub duration: Duration,
    pub outcome: Outcome,
    /// The one-line error the client got.
    pub error: Option<String>,
}

/// The schema of `audit.queries`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query_time", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("token_name", DataType::Utf8, true),
        Field::new("role", DataType::Utf8, true),
        Field::new("endpoint", DataType::Utf8, false),
        Field::new("statement", DataType::Utf8, true),
        Field::new("rows_returned", DataType::Int64, true),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new(PARTITION_COLUMN, DataType::Date32, false),
    ]))
}

/// The records as one batch of `schema()`.
pub fn to_batch(records: &[AuditRecord]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| r.at.timestamp_micros())).with_timezone("UTC")),
        strings(records, |r| r.token_name.as_deref()),
        strings(records, |r| r.role.map(Role::as_str)),
        strings(records, |r| Some(r.endpoint.as_str())),
        strings(records, |r| r.statement.as_deref()),
        Arc::new(records.iter().map(|r| r.rows.map(|n| n as i64)).collect::<Int64Array>()),
        Arc::new(Float64Array::from_iter_values(records.iter().map(|r| r.duration.as_secs_f64() * 1e3))),
        strings(records, |r| Some(r.outcome.as_str())),
        strings(records, |r| r.error.as_deref()),
        Arc::new(Date32Array::from_iter_values(records.iter().map(|r| Date32Type::from_naive_date(r.at.date_naive())))),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// One text column of `records`.
fn strings<'a>(records: &'a [AuditRecord], value: impl Fn(&'a AuditRecord) -> Option<&'a str>) -> ArrayRef {
    Arc::new(records.iter().map(value).collect::<StringArray>())
}

// ------------------------------------------------------------- access ----

/// The one line a reader or analyst gets for a statement that reads the
/// audit log; `None` when `role` may run it (admins, or no audit table named).
pub fn refusal<'a>(role: Role, references: impl IntoIterator<Item = &'a TableReference>) -> Option<String> {
    if role == Role::Admin {
        return None;
    }
    let named = references.into_iter().find(|r| r.schema() == Some(Layer::Audit.as_str()))?;
    Some(format!(
        "{}.{} is the audit log, readable by admin tokens only; this token's role is {role}",
        Layer::Audit,
        named.table()
    ))
}

/// `refusal` for SQL text as a session parses it (a statement that does not
/// parse is left to the planner's own error).
pub fn refusal_of_sql(role: Role, state: &SessionState, sql: &str) -> Option<String> {
    if role == Role::Admin {
        return None;
    }
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect).ok()?;
    let references = state.resolve_table_references(&statement).ok()?;
    refusal(role, &references)
}

/// `refusal` for a parsed statement (the PostgreSQL endpoint's hooks).
pub fn refusal_of_statement(role: Role, statement: &SqlStatement) -> Option<String> {
    if role == Role::Admin {
        return None;
    }
    refusal_of_parsed(role, &datafusion::sql::parser::Statement::Statement(Box::new(statement.clone())))
}

/// `refusal` for a statement as DataFusion's parser gives it (`/api/sql`,
/// which parses once and plans what it parsed).
pub fn refusal_of_parsed(role: Role, statement: &datafusion::sql::parser::Statement) -> Option<String> {
    if role == Role::Admin {
        return None;
    }
    let (references, _) = datafusion::sql::resolve::resolve_table_references(statement, true).ok()?;
    refusal(role, &references)
}

/// Whether `statement` names a table of the audit layer (`audit.queries`),
/// however it is written (`audit.queries`, `AUDIT.queries`, a catalog
/// prefix). An admin's query that does is answered from the log's newest
/// version: the server follows the log on such a query only
/// (`serve::state::AppState::follow_audit`), not every second.
pub fn names_audit_log(statement: &SqlStatement) -> bool {
    use std::ops::ControlFlow;
    datafusion::sql::sqlparser::ast::visit_relations(statement, |name| {
        let parts = &name.0;
        let schema = parts.len().checked_sub(2).and_then(|i| parts[i].as_ident());
        if schema.is_some_and(|ident| ident.value.eq_ignore_ascii_case(Layer::Audit.as_str())) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// `names_audit_log` for a statement as DataFusion's parser gives it.
pub fn parsed_names_audit_log(statement: &datafusion::sql::parser::Statement) -> bool {
    match statement {
        datafusion::sql::parser::Statement::Statement(statement) => names_audit_log(statement),
        datafusion::sql::parser::Statement::Explain(explain) => parsed_names_audit_log(&explain.statement),
        _ => false,
    }
}

// ----------------------------------------------------------------- log ----

/// What the log counted since it started (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditCounts {
    /// Records appended to `audit.queries`.
    pub written: u64,
    /// Records lost: the channel was full or closed, or appends kept failing.
    pub dropped: u64,
    /// Appends that failed (their records are retried).
    pub failed_appends: u64,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed_appends: AtomicU64,
}

impl Counters {
    /// Counts `n` lost records, saying so in the log the first time and at
    /// every power of two after.
    fn drop_records(&self, n: u64, why: &str) {
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if before == 0 || after.next_power_of_two() != before.next_power_of_two() {
            tracing::warn!("audit log: {after} record(s) dropped so far ({why}); see medallion_audit_records_dropped_total");
        }
    }
}

enum Message {
    Record(Box<AuditRecord>),
    /// Append what is gathered now, then answer.
    Flush(oneshot::Sender<()>),
    /// Append what is gathered, answer and stop.
    Close(oneshot::Sender<()>),
}

struct Shared {
    sender: mpsc::Sender<Message>,
    counters: Counters,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    secrets: Secrets,
}

/// The handle every endpoint records through. Cheap to clone; a disabled
/// log (`[audit] enabled = false`) records nothing and costs nothing.
#[derive(Clone, Default)]
pub struct AuditLog {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("enabled", &self.is_enabled()).finish()
    }
}

/// Lowers the calling thread's scheduling priority (nice 10; the threads
/// it starts, such as its runtime's blocking pool, inherit it), so that
/// on a server whose cores the queries keep busy the log's encoding and
/// commits take the idle moments instead of stretching queries: the
/// records wait in memory, the queries do not. Linux only (elsewhere the
/// thread keeps the default priority).
fn yield_to_queries() {
    #[cfg(target_os = "linux")]
    {
        const AUDIT_WRITER_NICE: libc::c_int = 10;
        // SAFETY: gettid and setpriority take no pointers; on Linux the nice
        // value of a thread id is that thread's alone.
        let lowered = unsafe {
            let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, thread, AUDIT_WRITER_NICE)
        };
        if lowered != 0 {
            tracing::debug!("audit log: the writer keeps the default priority");
        }
    }
}

impl AuditLog {
    /// A log that records nothing.
    pub fn disabled() -> AuditLog {
        AuditLog { shared: None }
    }

    /// Starts the writer (a thread of its own) when `[audit]` is
    /// enabled; a disabled log otherwise.
    pub fn start(config: &Config, lake: &Lake) -> AuditLog {
        if !config.audit.enabled {
            return AuditLog::disabled();
        }
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = Arc::new(Shared {
            sender,
            counters: Counters::default(),
            writer: Mutex::new(None),
            secrets: config.secrets(),
        });
        let writer = Writer { appender: appender(lake), pending: Vec::new(), shared: Arc::downgrade(&shared) };
        // The writer has a thread and a one-thread runtime of its own: its
        // Parquet encoding and Delta commits never hold a worker of the
        // server's runtime, where queries would wait behind them.
        let every = config.audit.flush_interval;
        let spawned = std::thread::Builder::new().name("medallion-audit".into()).spawn(move || {
            yield_to_queries();
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(writer.run(receiver, every)),
                // The receiver goes with it: records are then counted as dropped.
                Err(err) => tracing::warn!("audit log: no writer ({}); records will be dropped", one_line(&err.to_string())),
            }
        });
        match spawned {
            Ok(thread) => *shared.writer.lock().expect("audit writer lock") = Some(thread),
            Err(err) => tracing::warn!("audit log: no writer thread ({}); records will be dropped", one_line(&err.to_string())),
        }
        AuditLog { shared: Some(shared) }
    }

    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Hands a record to the writer without waiting: a full channel drops
    /// it (counted and logged). Error lines are scrubbed of the
    /// configuration's secrets.
    pub fn record(&self, record: AuditRecord) {
        let Some(shared) = &self.shared else { return };
        let record = record.cleaned(&shared.secrets);
        match shared.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => shared.counters.drop_records(1, "the writer is behind and the channel is full"),
            Err(mpsc::error::TrySendError::Closed(_)) => shared.counters.drop_records(1, "the log is closed"),
        }
    }

    /// Starts timing a query of `identity` on `endpoint`; `Query::finish`
    /// records it.
    pub fn query(&self, identity: &Identity, endpoint: Endpoint, statement: &str) -> Query {
        Query { log: self.clone(), started: self.is_enabled().then(|| Started::now(identity, endpoint, statement)) }
    }

    /// Records a failed login on `endpoint`: what failed, in one line
    /// (never the secret presented).
    pub fn failed_login(&self, endpoint: Endpoint, what: String) {
        if !self.is_enabled() {
            return;
        }
        self.record(AuditRecord {
            at: Utc::now(),
            token_name: None,
            role: None,
            endpoint,
            statement: None,
            rows: None,
            duration: Duration::ZERO,
            outcome: Outcome::Refused,
            error: Some(what),
        });
    }

    /// Appends every record handed over so far, and waits for the commit.
    pub async fn flush(&self) {
        let Some(shared) = &self.shared else { return };
        let (done, wait) = oneshot::channel();
        if shared.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Appends what is left and stops the writer; records handed over
    /// afterwards are dropped (counted). Every clone shares the writer.
    pub async fn close(&self) {
        let Some(shared) = &self.shared else { return };
        let (done, wait) = oneshot::channel();
        if shared.sender.send(Message::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
        let task = shared.writer.lock().expect("audit writer lock").take();
        if let Some(thread) = task {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// What the log counted.
    pub fn counts(&self) -> AuditCounts {
        let Some(shared) = &self.shared else { return AuditCounts::default() };
        AuditCounts {
            written: shared.counters.written.load(Ordering::Relaxed),
            dropped: shared.counters.dropped.load(Ordering::Relaxed),
            failed_appends: shared.counters.failed_appends.load(Ordering::Relaxed),
        }
    }
}

impl AuditRecord {
    /// The record as stored: the error in one line without the
    /// configuration's secrets, the statement cut past `MAX_STATEMENT_CHARS`.
    fn cleaned(mut self, secrets: &Secrets) -> AuditRecord {
        if let Some(error) = self.error.take() {
            self.error = Some(one_line(&secrets.scrub(&error)));
        }
        if let Some(statement) = self.statement.as_mut() {
            if statement.chars().count() > MAX_STATEMENT_CHARS {
                let cut: String = statement.chars().take(MAX_STATEMENT_CHARS).collect();
                *statement = format!("{cut}… [cut at {MAX_STATEMENT_CHARS} characters]");
            }
        }
        self
    }
}

/// The appender of `audit.queries` (created by its first append).
fn appender(lake: &Lake) -> Appender {
    lake.appender(AUDIT_QUERIES.layer.as_str(), AUDIT_QUERIES.table(), PARTITION_COLUMN, &[], &["query_time"])
}

/// Appends `records` now, in one commit, without a writer task: for a
/// process that runs one query (`medallion sql`).
pub async fn append(lake: &Lake, secrets: &Secrets, records: Vec<AuditRecord>) -> Result<()> {
    let records: Vec<AuditRecord> = records.into_iter().map(|r| r.cleaned(secrets)).collect();
    appender(lake).append(schema(), vec![to_batch(&records)?], &BTreeMap::new(), &BTreeMap::new()).await.map(|_| ())
}

/// A query being timed (nothing when the log is disabled).
pub struct Query {
    log: AuditLog,
    started: Option<Started>,
}

struct Started {
    at: DateTime<Utc>,
    clock: Instant,
    token_name: String,
    role: Role,
    endpoint: Endpoint,
    statement: String,
}

impl Started {
    fn now(identity: &Identity, endpoint: Endpoint, statement: &str) -> Started {
        Started {
            at: Utc::now(),
            clock: Instant::now(),
            token_name: identity.name.clone(),
            role: identity.role,
            endpoint,
            statement: statement.to_string(),
        }
    }
}

impl Query {
    /// Times a query that no log records: `record` gives its record (see
    /// `append`).
    pub fn timed(identity: &Identity, endpoint: Endpoint, statement: &str) -> Query {
        Query { log: AuditLog::disabled(), started: Some(Started::now(identity, endpoint, statement)) }
    }

    /// The query's record: `rows` returned (when it answered), its outcome
    /// and the one-line error the client got.
    pub fn record(self, outcome: Outcome, rows: Option<u64>, error: Option<String>) -> Option<AuditRecord> {
        let started = self.started?;
        Some(AuditRecord {
            at: started.at,
            token_name: Some(started.token_name),
            role: Some(started.role),
            endpoint: started.endpoint,
            statement: Some(started.statement),
            rows,
            duration: started.clock.elapsed(),
            outcome,
            error,
        })
    }

    /// Records the query in its log (see `record`).
    pub fn finish(self, outcome: Outcome, rows: Option<u64>, error: Option<String>) {
        let log = self.log.clone();
        if let Some(record) = self.record(outcome, rows, error) {
            log.record(record);
        }
    }

    /// Answered with `rows` rows.
    pub fn ok(self, rows: u64) {
        self.finish(Outcome::Ok, Some(rows), None);
    }

    /// Failed with `outcome` and the client's one line.
    pub fn failed(self, outcome: Outcome, error: impl Into<String>) {
        self.finish(outcome, None, Some(error.into()));
    }
}

/// The writer: gathers records, appends them in one commit per flush, on
/// its own thread and one-thread runtime (see `AuditLog::start`).
struct Writer {
    appender: Appender,
    pending: Vec<AuditRecord>,
    /// Weak, so the log's counters go when the last handle does.
    shared: std::sync::Weak<Shared>,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Message>, every: Duration) {
        // The first tick is one interval away: `interval`'s own comes at
        // once, and appended the first record on its own (a commit more
        // than the flushes asked for; seen failing the commit-count test).
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = receiver.recv() => match message {
                    Some(Message::Record(record)) => {
                        self.pending.push(*record);
                        if self.pending.len() >= MAX_BATCH {
                            self.append().await;
                        }
                    }
                    Some(Message::Flush(done)) => {
                        self.append().await;
                        let _ = done.send(());
                    }
                    Some(Message::Close(done)) => {
                        receiver.close();
                        while let Ok(Message::Record(record)) = receiver.try_recv() {
                            self.pending.push(*record);
                        }
                        self.append().await;
                        self.give_up_pending("the log closed while appends failed");
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.append().await;
                        self.give_up_pending("the log closed while appends failed");
                        return;
                    }
                },
                _ = ticker.tick() => self.append().await,
            }
        }
    }

    /// Appends the pending records in one commit; on failure they stay for
    /// the next attempt (the oldest dropped past `MAX_PENDING`).
    async fn append(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let result = match to_batch(&self.pending) {
            Ok(batch) => self.appender.append(schema(), vec![batch], &BTreeMap::new(), &BTreeMap::new()).await,
            Err(err) => Err(err),
        };
        let Some(shared) = self.shared.upgrade() else { return };
        match result {
            Ok(_) => {
                shared.counters.written.fetch_add(self.pending.len() as u64, Ordering::Relaxed);
                self.pending.clear();
            }
            Err(err) => {
                shared.counters.failed_appends.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "audit log: cannot append {} record(s) to {AUDIT_QUERIES}, retried at the next flush: {}",
                    self.pending.len(),
                    one_line(&shared.secrets.scrub(&err.to_string()))
                );
                if self.pending.len() > MAX_PENDING {
                    let excess = self.pending.len() - MAX_PENDING;
                    self.pending.drain(..excess);
                    shared.counters.drop_records(excess as u64, "appends keep failing");
                }
            }
        }
    }

    fn give_up_pending(&mut self, why: &str) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.counters.drop_records(self.pending.len() as u64, why);
        }
        self.pending.clear();
    }
}

// ---------------------------------------------------------------- read ----

/// What `GET /api/audit` selects: the newest records first.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub token: Option<String>,
    pub role: Option<String>,
    pub endpoint: Option<String>,
    pub outcome: Option<String>,
    pub limit: Option<usize>,
}

/// Most records `recent` returns.
pub const MAX_RECENT: usize = 10_000;

/// The newest records of `audit.queries` matching `filter` (100 unless
/// `limit`, at most `MAX_RECENT`), newest first, read from the table as
/// it is now (empty when no record was ever written).
pub async fn recent(lake: &Lake, filter: &AuditFilter) -> Result<Vec<RecordBatch>> {
    use datafusion::prelude::{col, lit};
    let session = crate::lake::catalog::new_session();
    if crate::lake::catalog::open_and_register(&session, lake, &AUDIT_QUERIES).await?.is_none() {
        return Ok(Vec::new());
    }
    let mut frame = session.table(AUDIT_QUERIES.to_string().as_str()).await?;
    for (column, value) in [
        ("token_name", &filter.token),
        ("role", &filter.role),
        ("endpoint", &filter.endpoint),
        ("outcome", &filter.outcome),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            frame = frame.filter(col(column).eq(lit(value)))?;
        }
    }
    let limit = filter.limit.unwrap_or(100).clamp(1, MAX_RECENT);
    let frame = frame.sort(vec![col("query_time").sort(false, false)])?.limit(0, Some(limit))?;
    let frame = frame.drop_columns(&[PARTITION_COLUMN])?;
    frame.collect().await.map_err(Error::from)
}

/// Who runs `medallion sql`: `cli:<user>` (the operating system's user
/// name) with the role of `--role`.
pub fn cli_identity(role: Role) -> Identity {
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_default();
    let name = if user.trim().is_empty() { "cli".to_string() } else { format!("cli:{}", user.trim()) };
    Identity { name, role }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn identity(name: &str, role: Role) -> Identity {
        Identity { name: name.into(), role }
    }

    #[tokio::test]
    async fn records_are_appended_in_one_commit_per_flush_and_read_back_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            Config::load_with(Overrides { lake: Some(dir.path().to_string_lossy().into_owned()), ..Default::default() }, &|_| None)
                .unwrap();
        config.audit.flush_interval = Duration::from_secs(3600);
        let lake = Lake::new(&config).unwrap();
        let log = AuditLog::start(&config, &lake);
        log.query(&identity("bi", Role::Reader), Endpoint::Http, "SELECT 1").ok(1);
        log.query(&identity("ops", Role::Admin), Endpoint::Pg, "SELECT nope").failed(Outcome::Error, "no column nope");
        log.failed_login(Endpoint::Pg, "login failed for user 'x': not a configured token".into());
        log.flush().await;
        log.query(&identity("bi", Role::Reader), Endpoint::Cli, "SELECT 2").ok(1);
        log.close().await;
        assert_eq!(log.counts(), AuditCounts { written: 4, dropped: 0, failed_appends: 0 });
        // Version 0 created the table (empty), then two flushes, two commits.
        let table = lake.existing_table("audit", "queries").await.unwrap().unwrap();
        assert_eq!(table.version(), Some(2));

        let rows = crate::output::json_rows(&recent(&lake, &AuditFilter::default()).await.unwrap()).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0]["statement"], "SELECT 2");
        assert_eq!(rows[0]["endpoint"], "cli");
        let bi = AuditFilter { token: Some("bi".into()), ..Default::default() };
        let rows = crate::output::json_rows(&recent(&lake, &bi).await.unwrap()).unwrap();
        assert_eq!(rows.len(), 2);
        let refused = AuditFilter { outcome: Some("refused".into()), ..Default::default() };
        let rows = crate::output::json_rows(&recent(&lake, &refused).await.unwrap()).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0]["token_name"].is_null() && rows[0]["statement"].is_null());
        // Closed: further records are dropped, and counted.
        log.query(&identity("bi", Role::Reader), Endpoint::Http, "SELECT 3").ok(1);
        assert_eq!(log.counts().dropped, 1);
    }

    #[test]
    fn only_admins_may_name_the_audit_schema() {
        let state = crate::lake::catalog::new_session().state();
        let sql = "SELECT a.token_name FROM audit.queries a JOIN gold.kpi_revenue k ON true";
        assert_eq!(refusal_of_sql(Role::Admin, &state, sql), None);
        let line = refusal_of_sql(Role::Reader, &state, sql).unwrap();
        assert!(line.contains("audit.queries") && line.contains("admin") && line.contains("reader"), "{line}");
        assert!(refusal_of_sql(Role::Analyst, &state, "WITH x AS (SELECT * FROM audit.queries) SELECT * FROM x").is_some());
        assert_eq!(refusal_of_sql(Role::Reader, &state, "SELECT * FROM gold.kpi_revenue"), None);
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        let parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, "SELECT count(*) FROM audit.queries").unwrap();
        assert!(refusal_of_statement(Role::Reader, &parsed[0]).is_some());
        assert!(refusal_of_statement(Role::Admin, &parsed[0]).is_none());
    }

    #[test]
    fn statements_that_name_the_audit_log_are_told_apart_from_those_that_do_not() {
        let names = |sql: &str| {
            let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
            let parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).unwrap();
            names_audit_log(&parsed[0])
        };
        assert!(names("SELECT count(*) FROM audit.queries"));
        assert!(names("SELECT * FROM AUDIT.queries"));
        assert!(names("SELECT * FROM datafusion.audit.queries"));
        assert!(names("SELECT k.* FROM gold.kpi_revenue k WHERE EXISTS (SELECT 1 FROM audit.queries)"));
        assert!(names("WITH x AS (SELECT * FROM audit.queries) SELECT * FROM x"));
        assert!(!names("SELECT * FROM gold.kpi_revenue"));
        assert!(!names("SELECT 'audit.queries' AS text, audit FROM gold.audit_like"));
        assert!(!names("SELECT * FROM queries"));
        let state = crate::lake::catalog::new_session().state();
        let dialect = state.config().options().sql_parser.dialect;
        let explain = state.sql_to_statement("EXPLAIN SELECT * FROM audit.queries", &dialect).unwrap();
        assert!(parsed_names_audit_log(&explain));
    }

    #[test]
    fn every_column_is_described_in_the_catalog() {
        let glossary = crate::glossary::Glossary::builtin().unwrap();
        let name = AUDIT_QUERIES.to_string();
        assert!(glossary.table(&name).is_some());
        for field in schema().fields() {
            assert!(glossary.column(&name, field.name()).is_some(), "{} is not described", field.name());
        }
    }

    #[test]
    fn a_disabled_log_records_nothing() {
        let log = AuditLog::disabled();
        log.query(&identity("bi", Role::Reader), Endpoint::Http, "SELECT 1").ok(1);
        assert_eq!(log.counts(), AuditCounts::default());
        assert!(!log.is_enabled());
    }
}
