//! Writing one date partition of a table from several row streams at once.
//!
//! Each stream gets a Delta writer of its own on its own task, so the Parquet
//! encoding of one partition runs on every core while the streams' producer
//! (a query, a source extraction) keeps running; no stream is ever held whole
//! in memory: a writer keeps at most one file in progress. When every stream
//! has ended, one Delta commit removes the partition's old files and adds
//! the new ones (or, for a new table, creates it with them), so readers see
//! the old partition or the new one. A stream
//! that fails leaves the table as it was (its finished files are not in the
//! log; `vacuum` removes them).
//!
//! `Lake::replace_partition` is built on this; `WriteProfile` says where the
//! time of a write went (`medallion run --profile`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Date32Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use delta_kernel::expressions::Scalar;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use delta_kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::schema::cast::normalize_for_delta;
use deltalake::kernel::{Action, Add, StructType};
use deltalake::operations::create::CreateBuilder;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use indexmap::IndexMap;

use crate::error::{Error, Result};

/// Where the time of one partition write went.
#[derive(Debug, Clone, Default)]
pub struct WriteProfile {
    /// Time spent encoding Parquet and storing the files, summed over the
    /// writers (they run at the same time, so it can exceed the wall time).
    pub encode: Duration,
    /// The Delta commit (listing the partition's old files, the log entry).
    pub commit: Duration,
    /// Writers that ran at the same time.
    pub writers: usize,
    pub files: usize,
}

impl WriteProfile {
    /// The end of a `--profile` line: wall time, files, writers, rows/s.
    pub fn wall_line(&self, rows: u64, wall: Duration) -> String {
        format!(
            "wall {:.0}ms, {} files by {} writers, {:.0} rows/s",
            wall.as_secs_f64() * 1000.0,
            self.files,
            self.writers,
            rows as f64 / wall.as_secs_f64().max(1e-9)
        )
    }
}

/// The outcome of a partition write.
#[derive(Debug, Clone, Default)]
pub struct PartitionWritten {
    pub version: i64,
    pub profile: WriteProfile,
}

/// One partition write, resolved by `Lake::replace_partition`.
pub(super) struct PartitionTarget<'a> {
    pub name: &'a str,
    /// The table's URL and storage options, for a table that does not exist yet.
    pub url: url::Url,
    pub storage_options: HashMap<String, String>,
    pub partition_column: &'a str,
    /// The partition's date, days since 1970-01-01.
    pub days: i32,
    pub date_text: String,
    pub properties: WriterProperties,
    pub target_file_bytes: u64,
    pub commit: CommitProperties,
}

/// `batches` as `parts` streams of about equal rows, so they are encoded on
/// `parts` writers at once.
pub fn batches_as_streams(schema: SchemaRef, batches: Vec<RecordBatch>, parts: usize) -> Vec<SendableRecordBatchStream> {
    let parts = parts.clamp(1, batches.len().max(1));
    let mut groups: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
    let mut rows = vec![0usize; parts];
    for batch in batches {
        let smallest = (0..parts).min_by_key(|i| rows[*i]).expect("at least one part");
        rows[smallest] += batch.num_rows();
        groups[smallest].push(batch);
    }
    groups
        .into_iter()
        .map(|group| {
            let stream = futures::stream::iter(group.into_iter().map(Ok));
            Box::pin(RecordBatchStreamAdapter::new(schema.clone(), stream)) as SendableRecordBatchStream
        })
        .collect()
}

/// Writes `streams` (rows of `schema`) as the target partition of `table`
/// and commits them in place of the partition's old files. A table that
/// does not exist yet is created by the same commit (version 0).
pub(super) async fn write(
    table: DeltaTable,
    schema: SchemaRef,
    target: PartitionTarget<'_>,
    streams: Vec<SendableRecordBatchStream>,
) -> Result<PartitionWritten> {
    let name = target.name;
    let exists = table.version().is_some();
    let partition = IndexMap::from([(target.partition_column.to_string(), Scalar::Date(target.days))]);
    let mut tasks = tokio::task::JoinSet::new();
    let writers = streams.len();
    for rows in streams {
        let writer = if exists {
            RecordBatchWriter::for_table(&table)
        } else {
            RecordBatchWriter::try_new(
                target.url.as_str(),
                schema.clone(),
                Some(vec![target.partition_column.to_string()]),
                Some(target.storage_options.clone()),
            )
        };
        let writer = writer
            .map_err(|e| Error::lake(name, e))?
            .with_writer_properties(target.properties.clone())
            .with_target_file_size(target.target_file_bytes);
        let stream_write = StreamWrite {
            writer,
            partition: partition.clone(),
            column: target.partition_column.to_string(),
            days: target.days,
            date_text: target.date_text.clone(),
        };
        tasks.spawn(stream_write.run(rows));
    }
    let mut adds = Vec::new();
    let mut profile = WriteProfile { writers, ..WriteProfile::default() };
    while let Some(joined) = tasks.join_next().await {
        let written = joined.map_err(|e| Error::other(format!("writing {name}"), e))?.map_err(|e| e.into_error(name))?;
        profile.encode += written.encode;
        adds.extend(written.adds);
    }
    profile.files = adds.len();

    let started = Instant::now();
    let version = if exists {
        commit_replacing(&table, adds, &target).await?
    } else {
        match create_with(&table, &schema, adds.clone(), &target).await {
            Ok(version) => version,
            Err(create_failed) => {
                // Another writer may have created the table meanwhile: then
                // this write replaces the partition in it like any other.
                let mut reloaded = table.clone();
                match reloaded.load().await {
                    Ok(()) if reloaded.version().is_some() => commit_replacing(&reloaded, adds, &target).await?,
                    _ => return Err(create_failed),
                }
            }
        }
    };
    profile.commit = started.elapsed();
    Ok(PartitionWritten { version, profile })
}

/// Commits `adds` to the existing `table`, removing the partition's old files.
async fn commit_replacing(table: &DeltaTable, adds: Vec<Add>, target: &PartitionTarget<'_>) -> Result<i64> {
    let name = target.name;
    let snapshot = table.snapshot().map_err(|e| Error::lake(name, e))?;
    let old_files: Vec<Action> = table
        .get_active_add_actions_by_partitions(&[])
        .try_filter(|file| {
            let in_partition = file
                .partition_values_map()
                .get(target.partition_column)
                .is_some_and(|value| value.as_deref() == Some(target.date_text.as_str()));
            futures::future::ready(in_partition)
        })
        .map_ok(|file| Action::Remove(file.remove_action(true)))
        .try_collect()
        .await
        .map_err(|e| Error::lake(name, e))?;
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    actions.extend(old_files);
    let operation = DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(vec![target.partition_column.to_string()]),
        predicate: Some(format!("{} = '{}'", target.partition_column, target.date_text)),
    };
    let committed = CommitBuilder::from(target.commit.clone())
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(|e| Error::lake(name, e))?;
    Ok(committed.version() as i64)
}

/// Creates `table` with `schema`, partitioned by the target's column, and
/// `adds` as its first content, in one commit.
async fn create_with(table: &DeltaTable, schema: &SchemaRef, adds: Vec<Add>, target: &PartitionTarget<'_>) -> Result<i64> {
    let name = target.name;
    let columns: StructType = normalize_for_delta(schema).as_ref().try_into_kernel().map_err(|e| Error::lake(name, e))?;
    let created = CreateBuilder::new()
        .with_log_store(table.log_store())
        .with_columns(columns.fields().cloned())
        .with_partition_columns([target.partition_column])
        .with_actions(adds.into_iter().map(Action::Add))
        .with_commit_properties(target.commit.clone())
        .await
        .map_err(|e| Error::lake(name, e))?;
    Ok(created.version().unwrap_or_default() as i64)
}

/// One writer draining one stream.
struct StreamWrite {
    writer: RecordBatchWriter,
    partition: IndexMap<String, Scalar>,
    column: String,
    days: i32,
    date_text: String,
}

/// What one writer wrote.
struct StreamWritten {
    adds: Vec<Add>,
    encode: Duration,
}

/// Why a writer stopped.
enum StreamWriteError {
    /// The stream failed (its query or source).
    Rows(datafusion::error::DataFusionError),
    /// A row of another date than the partition's.
    OtherDate { column: String, date: String },
    Delta(deltalake::DeltaTableError),
}

impl StreamWriteError {
    fn into_error(self, name: &str) -> Error {
        match self {
            StreamWriteError::Rows(e) if matches!(e.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_)) => {
                Error::lake(
                    name,
                    format!(
                        "the query needs more memory than memory_limit_mb allows: raise it (--memory-limit-mb, MEDALLION_MEMORY_LIMIT_MB or medallion.toml) and run again — {}",
                        crate::error::one_line(&e.find_root().to_string())
                    ),
                )
            }
            StreamWriteError::Rows(e) => Error::lake(name, e),
            StreamWriteError::OtherDate { column, date } => Error::lake(
                name,
                format!("a row's {column} is not {date}, the partition being written: a model must select its snapshot date only"),
            ),
            StreamWriteError::Delta(e) => Error::lake(name, e),
        }
    }
}

impl StreamWrite {
    async fn run(mut self, mut rows: SendableRecordBatchStream) -> std::result::Result<StreamWritten, StreamWriteError> {
        let mut written = StreamWritten { adds: Vec::new(), encode: Duration::ZERO };
        loop {
            let batch = match rows.next().await {
                None => break,
                Some(batch) => batch.map_err(StreamWriteError::Rows)?,
            };
            if batch.num_rows() == 0 {
                continue;
            }
            self.check_date(&batch)?;
            let encoding = Instant::now();
            self.writer.write_partition(batch, &self.partition, WriteMode::Default).await.map_err(StreamWriteError::Delta)?;
            written.encode += encoding.elapsed();
        }
        let encoding = Instant::now();
        written.adds = self.writer.flush().await.map_err(StreamWriteError::Delta)?;
        written.encode += encoding.elapsed();
        Ok(written)
    }

    /// Every row must belong to the partition being replaced.
    fn check_date(&self, batch: &RecordBatch) -> std::result::Result<(), StreamWriteError> {
        let other_date = || StreamWriteError::OtherDate { column: self.column.clone(), date: self.date_text.clone() };
        let Some(dates) = batch.column_by_name(&self.column).and_then(|c| c.as_any().downcast_ref::<Date32Array>()) else {
            return Err(other_date());
        };
        if dates.null_count() > 0 || dates.values().iter().any(|d| *d != self.days) {
            return Err(other_date());
        }
        Ok(())
    }
}

/// How many writers a write of `rows` rows gets: one per core, but one for
/// small writes (each writer makes at least one file).
pub fn writers_for(rows: usize) -> usize {
    const ROWS_PER_EXTRA_WRITER: usize = 256 * 1024;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (rows / ROWS_PER_EXTRA_WRITER).clamp(1, cores)
}
