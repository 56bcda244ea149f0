//! Table upkeep: compaction (`optimize`), removal of files no version needs
//! any more (`vacuum`) and log checkpoints (`checkpoint`).
//!
//! A stream at a short interval adds one small Parquet file and one commit
//! per micro-batch, and every rewrite of a table leaves its old files on
//! storage. `optimize` merges the small files of each partition into files of
//! the target size in one Delta commit that changes no data (readers see the
//! same rows before and after, and time travel still reaches the old files);
//! `vacuum` then deletes the files that only versions older than the
//! retention need.
//!
//! Checkpoints need no call on the write paths: deltalake's commit writes a
//! checkpoint after every `delta.checkpointInterval` commits (100 by default)
//! and removes log entries older than `delta.logRetentionDuration` (30 days)
//! that a checkpoint covers. `Lake::replace_partition`, `Lake::overwrite`,
//! `Lake::append` and `Appender` (the stream) all commit that way.
//! `checkpoint` writes one now, for a table that needs it earlier.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use deltalake::checkpoints::{cleanup_metadata, create_checkpoint};
use deltalake::kernel::transaction::TransactionError;
use deltalake::operations::optimize::Metrics;
use deltalake::operations::vacuum::VacuumBuilder;
use deltalake::table::config::TablePropertiesExt;
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;

use super::{Lake, LAYERS};
use crate::error::{Error, Result};

/// How many times `optimize` starts over after a commit conflict with a
/// writer that removed files it was compacting (a partition replaced
/// meanwhile). Concurrent appends never conflict with it.
const OPTIMIZE_ATTEMPTS: u32 = 5;
/// Pause before the next attempt, times the attempt number.
const OPTIMIZE_BACKOFF: Duration = Duration::from_millis(200);

/// What `optimize` does.
#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    /// Files of a partition are merged until they reach about this size.
    pub target_file_bytes: u64,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions { target_file_bytes: super::TARGET_FILE_BYTES }
    }
}

/// What `optimize` did. Counts are of the table's live files; `files_after`
/// includes files that concurrent writers added meanwhile.
#[derive(Debug, Clone)]
pub struct OptimizeReport {
    pub table: String,
    /// The version read and the version after (equal when nothing was
    /// worth compacting: then no commit is made).
    pub read_version: u64,
    pub version: u64,
    pub files_before: usize,
    pub files_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Files merged away and files written by the compaction itself.
    pub files_removed: u64,
    pub files_added: u64,
    pub partitions_touched: u64,
    /// 1 unless a commit conflict made it start over.
    pub attempts: u32,
    pub duration: Duration,
}

/// Compacts the small files of `layer.table` into files of about
/// `options.target_file_bytes`, partition by partition, in one Delta commit
/// marked as changing no data. Safe while a stream appends to the table:
/// deltalake resolves the race with appends on either side, and a real
/// conflict (a writer removed files being compacted) starts over, at most
/// `OPTIMIZE_ATTEMPTS` times.
pub async fn optimize(lake: &Lake, layer: &str, table: &str, options: &OptimizeOptions) -> Result<OptimizeReport> {
    let name = format!("{layer}.{table}");
    let started = Instant::now();
    let target = NonZeroU64::new(options.target_file_bytes.max(1)).expect("at least 1");
    let mut attempt = 1;
    loop {
        let delta = existing(lake, layer, table).await?;
        let read_version = version_of(&delta);
        let (files_before, bytes_before) = live_files(&delta, &name)?;
        let properties = super::writer_properties(&text_columns_of(&delta, &name)?.iter().map(String::as_str).collect::<Vec<_>>());
        let outcome = delta
            .optimize()
            .with_target_size(target)
            .with_writer_properties(properties)
            .await;
        match outcome {
            Ok((optimized, metrics)) => {
                let (files_after, bytes_after) = live_files(&optimized, &name)?;
                let version = optimize_commit_version(lake, layer, table, read_version, version_of(&optimized)).await;
                return Ok(OptimizeReport {
                    table: name,
                    read_version,
                    version,
                    files_before,
                    files_after,
                    bytes_before,
                    bytes_after,
                    files_removed: metrics.num_files_removed,
                    files_added: metrics.num_files_added,
                    partitions_touched: partitions_touched(&metrics),
                    attempts: attempt,
                    duration: started.elapsed(),
                });
            }
            Err(err) if is_commit_conflict(&err) && attempt < OPTIMIZE_ATTEMPTS => {
                tracing::info!(table = %name, attempt, "optimize lost a commit race; starting over");
                tokio::time::sleep(OPTIMIZE_BACKOFF * attempt).await;
                attempt += 1;
            }
            Err(err) => return Err(Error::lake(&name, err)),
        }
    }
}

/// The version of the compaction's commit. The table deltalake hands back
/// may already hold a concurrent writer's next commit (seen: an append at
/// 133 reported as the compaction, committed at 132), so the commit is
/// looked up in the versions after `read_version`; `newest` when the log
/// cannot tell.
async fn optimize_commit_version(lake: &Lake, layer: &str, table: &str, read_version: u64, newest: u64) -> u64 {
    // The versions since the read, and room for appends since `newest`.
    let recent = (newest.saturating_sub(read_version) + 64) as usize;
    match super::history::history(lake, layer, table, Some(recent)).await {
        Ok(entries) => entries
            .iter()
            .filter(|e| e.version > read_version && e.operation == "OPTIMIZE")
            .map(|e| e.version)
            .min()
            .unwrap_or(newest),
        Err(_) => newest,
    }
}

/// Partitions with files merged (deltalake counts none for an unpartitioned
/// table; one is reported when anything was merged there).
fn partitions_touched(metrics: &Metrics) -> u64 {
    if metrics.partitions_optimized == 0 && metrics.num_files_removed > 0 {
        1
    } else {
        metrics.partitions_optimized
    }
}

/// Whether a deltalake failure is a lost commit race (another writer
/// committed first and the two cannot both stand), by type, never by text.
pub fn is_commit_conflict(err: &DeltaTableError) -> bool {
    matches!(
        err,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::VersionAlreadyExists(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
    )
}

/// What `vacuum` does.
#[derive(Debug, Clone, Default)]
pub struct VacuumOptions {
    /// Files removed from the table longer ago than this are deleted; `None`
    /// is the table's own minimum (`delta.deletedFileRetentionDuration`).
    pub retention: Option<Duration>,
    /// Allow a retention under the table's minimum: time travel to the
    /// versions in between, and readers still planning on them, fail.
    pub force: bool,
    /// List what would be deleted, delete nothing.
    pub dry_run: bool,
}

/// What `vacuum` deleted (or, in a dry run, would delete).
#[derive(Debug, Clone)]
pub struct VacuumReport {
    pub table: String,
    pub dry_run: bool,
    /// The retention applied and the table's minimum.
    pub retention: Duration,
    pub minimum_retention: Duration,
    /// Data files deleted (or to delete), relative to the table's folder.
    pub files: Vec<String>,
    pub bytes: u64,
    /// Log entries past `delta.logRetentionDuration` that a checkpoint
    /// covers, removed too (none in a dry run).
    pub expired_logs_removed: usize,
    pub duration: Duration,
}

/// Deletes the data files of `layer.table` that no version within the
/// retention needs (files removed by a commit older than the retention), then
/// the expired log entries. Refuses a retention under the table's minimum
/// unless `force`.
pub async fn vacuum(lake: &Lake, layer: &str, table: &str, options: &VacuumOptions) -> Result<VacuumReport> {
    let name = format!("{layer}.{table}");
    let started = Instant::now();
    let delta = existing(lake, layer, table).await?;
    let minimum_retention = delta.snapshot().map_err(|e| Error::lake(&name, e))?.table_config().deleted_file_retention_duration();
    let retention = options.retention.unwrap_or(minimum_retention);
    if retention < minimum_retention && !options.force {
        return Err(retention_refused(&name, retention, minimum_retention));
    }
    // deltalake lists every expired tombstone, also the files an earlier
    // vacuum deleted already: plan first, and keep the files still there.
    let sizes = file_sizes(&delta, &name).await?;
    let planned = vacuum_builder(delta.clone(), retention, options.force, true)?
        .await
        .map_err(|e| Error::lake(&name, e))?
        .1
        .files_deleted;
    let files: Vec<String> = planned.into_iter().filter(|path| sizes.contains_key(path)).collect();
    let bytes = files.iter().map(|path| sizes[path]).sum();
    let mut expired_logs_removed = 0;
    if !options.dry_run {
        let vacuumed = if files.is_empty() {
            delta
        } else {
            vacuum_builder(delta, retention, options.force, false)?.await.map_err(|e| Error::lake(&name, e))?.0
        };
        expired_logs_removed = cleanup_metadata(&vacuumed, None).await.map_err(|e| Error::lake(&name, e))?;
    }
    Ok(VacuumReport {
        table: name,
        dry_run: options.dry_run,
        retention,
        minimum_retention,
        files,
        bytes,
        expired_logs_removed,
        duration: started.elapsed(),
    })
}

/// deltalake's vacuum of `delta` with our retention (checked by the caller).
fn vacuum_builder(delta: DeltaTable, retention: Duration, force: bool, dry_run: bool) -> Result<VacuumBuilder> {
    let retention = chrono::Duration::from_std(retention)
        .map_err(|e| Error::other(format!("vacuum retention {}", hours(retention)), e))?;
    Ok(delta.vacuum().with_retention_period(retention).with_enforce_retention_duration(!force).with_dry_run(dry_run))
}

/// The one-line refusal of a retention under the table's minimum.
fn retention_refused(name: &str, retention: Duration, minimum: Duration) -> Error {
    Error::Config(format!(
        "vacuum of {name} refused: a retention of {} is under the table's minimum of {} (delta.deletedFileRetentionDuration), \
         so time travel to the versions in between and readers still using them would fail; pass --force to vacuum anyway",
        hours(retention),
        hours(minimum)
    ))
}

/// A duration in whole hours, as retentions are usually given.
fn hours(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else {
        format!("{:.2}h", seconds as f64 / 3600.0)
    }
}

/// Size of every object under the table's folder, by path relative to it
/// (the paths vacuum reports).
async fn file_sizes(delta: &DeltaTable, name: &str) -> Result<HashMap<String, u64>> {
    let store = delta.object_store();
    let listing: Vec<_> = store.list(None).try_collect().await.map_err(|e| Error::lake(name, e))?;
    Ok(listing.into_iter().map(|meta| (meta.location.to_string(), meta.size)).collect())
}

/// What `checkpoint` did.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    pub table: String,
    /// The version the checkpoint covers (the newest).
    pub version: u64,
    pub expired_logs_removed: usize,
}

/// Writes a checkpoint of `layer.table` at its newest version (opening the
/// table then reads it instead of every commit since the previous one), and
/// removes the log entries past `delta.logRetentionDuration` it covers.
pub async fn checkpoint(lake: &Lake, layer: &str, table: &str) -> Result<CheckpointReport> {
    let name = format!("{layer}.{table}");
    let delta = existing(lake, layer, table).await?;
    create_checkpoint(&delta, None).await.map_err(|e| Error::lake(&name, e))?;
    let expired_logs_removed = cleanup_metadata(&delta, None).await.map_err(|e| Error::lake(&name, e))?;
    Ok(CheckpointReport { version: version_of(&delta), table: name, expired_logs_removed })
}

/// Splits `layer.table` (as users write it) and checks the layer.
pub fn split_table_name(qualified: &str) -> Result<(&str, &str)> {
    let in_lake = |layer: &str| LAYERS.contains(&layer) || layer == super::Layer::Audit.as_str();
    match qualified.split_once('.') {
        Some((layer, table)) if in_lake(layer) && !table.is_empty() && !table.contains('.') => Ok((layer, table)),
        _ => Err(Error::Config(format!(
            "'{qualified}' is not a lake table: write <layer>.<table> with a layer among {}, audit, e.g. bronze.sales_events",
            LAYERS.join(", ")
        ))),
    }
}

/// The top-level text columns of a Delta table, from its schema.
fn text_columns_of(delta: &DeltaTable, name: &str) -> Result<Vec<String>> {
    let schema = delta.snapshot().map_err(|e| Error::lake(name, e))?.schema();
    Ok(schema
        .fields()
        .filter(|field| *field.data_type() == deltalake::kernel::DataType::STRING)
        .map(|field| field.name().to_string())
        .collect())
}

/// The table, or a one-line error when it does not exist.
pub(super) async fn existing(lake: &Lake, layer: &str, table: &str) -> Result<DeltaTable> {
    lake.existing_table(layer, table).await?.ok_or_else(|| Error::Other {
        context: format!("lake table {layer}.{table}"),
        reason: "does not exist: check the name with `medallion sql \"SHOW TABLES\"`".into(),
    })
}

/// The loaded version of an opened table.
pub(super) fn version_of(delta: &DeltaTable) -> u64 {
    delta.version().unwrap_or_default()
}

/// What a table holds now, for `medallion status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStats {
    pub table: String,
    pub version: u64,
    /// Live data files and their total size.
    pub files: usize,
    pub bytes: u64,
    /// When the newest commit was written.
    pub last_commit: Option<chrono::DateTime<chrono::Utc>>,
}

/// The stats of `layer.table`; `None` when it does not exist.
pub async fn table_stats(lake: &Lake, layer: &str, table: &str) -> Result<Option<TableStats>> {
    let name = format!("{layer}.{table}");
    let Some(delta) = lake.existing_table(layer, table).await? else { return Ok(None) };
    let (files, bytes) = live_files(&delta, &name)?;
    Ok(Some(TableStats {
        table: name,
        version: version_of(&delta),
        files,
        bytes,
        last_commit: super::history::newest_commit_time(&delta).await,
    }))
}

/// Number and total size of the table's live data files.
fn live_files(delta: &DeltaTable, name: &str) -> Result<(usize, u64)> {
    let state = delta.snapshot().map_err(|e| Error::lake(name, e))?;
    let files = state.log_data();
    let bytes = files.iter().map(|file| file.size().max(0) as u64).sum();
    Ok((files.num_files(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_split_into_a_known_layer_and_a_table() {
        assert_eq!(split_table_name("bronze.sales_events").unwrap(), ("bronze", "sales_events"));
        for bad in ["sales_events", "platinum.x", "gold.", "gold.a.b"] {
            let err = split_table_name(bad).unwrap_err().to_string();
            assert!(err.contains("<layer>.<table>") && !err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn a_short_retention_is_refused_in_one_line_naming_the_override() {
        let week = Duration::from_secs(7 * 24 * 3600);
        let err = retention_refused("bronze.sales_events", Duration::ZERO, week).to_string();
        assert!(err.contains("0h") && err.contains("168h") && err.contains("--force"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert_eq!(hours(Duration::from_secs(90 * 60)), "1.50h");
    }

    #[test]
    fn commit_races_are_told_apart_by_type() {
        assert!(is_commit_conflict(&DeltaTableError::VersionAlreadyExists(3)));
        assert!(is_commit_conflict(&TransactionError::MaxCommitAttempts(15).into()));
        assert!(!is_commit_conflict(&DeltaTableError::Generic("Failed to commit transaction".into())));
    }
}
