//! Time travel: a table's commit history, a table opened as of a version or a
//! time, and `restore` (a new version with the content of an old one).
//!
//! Times are the modification times of the commit files in `_delta_log`,
//! the clock deltalake's time travel uses too: a time read from `history`
//! given back to `--as-of` opens that very version. Old versions stay
//! readable until `vacuum` deletes the files only they use.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::{DeltaTable, ObjectMeta, ObjectStore, Path};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde_json::Value;

use super::upkeep::{existing, version_of};
use super::Lake;
use crate::error::{Error, Result};

/// Commit files read at once when listing history.
const HISTORY_READ_CONCURRENCY: usize = 8;

/// Which state of a table to read: `--as-of 12` or `--as-of 2026-11-30T21:00:00Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    /// The newest version committed at or before this time.
    Timestamp(DateTime<Utc>),
}

impl AsOf {
    /// An integer is a version; otherwise an RFC 3339 time
    /// (`2026-11-30T21:00:00Z`, `2026-11-30T22:00:00+01:00`) or
    /// `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC.
    pub fn parse(text: &str) -> Result<AsOf> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(AsOf::Version).map_err(|_| bad_as_of(text));
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(text) {
            return Ok(AsOf::Timestamp(time.with_timezone(&Utc)));
        }
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .map(|time| AsOf::Timestamp(time.and_utc()))
            .map_err(|_| bad_as_of(text))
    }
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsOf::Version(version) => write!(f, "version {version}"),
            AsOf::Timestamp(time) => write!(f, "{}", time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }
}

fn bad_as_of(text: &str) -> Error {
    Error::Config(format!(
        "as-of '{text}' is neither a table version (an integer such as 12) nor a time \
         (RFC 3339 such as 2026-11-30T21:00:00Z, or 2026-11-30 21:00:00 taken as UTC)"
    ))
}

impl Lake {
    /// `layer.table` as it was at `as_of`. `None` when the table does not
    /// exist, or did not exist yet at that time; a version newer than the
    /// newest, or one whose log entries were cleaned up, is an error.
    pub async fn table_as_of(&self, layer: &str, table: &str, as_of: AsOf) -> Result<Option<DeltaTable>> {
        let name = format!("{layer}.{table}");
        let Some(mut delta) = self.existing_table(layer, table).await? else { return Ok(None) };
        let newest = version_of(&delta);
        match as_of {
            AsOf::Version(version) if version > newest => Err(Error::Other {
                context: format!("{name} as of version {version}"),
                reason: format!("the newest version is {newest}: pick one from `history`"),
            }),
            AsOf::Version(version) if version == newest => Ok(Some(delta)),
            AsOf::Version(version) => {
                delta.load_version(version).await.map_err(|e| Error::lake(&name, e))?;
                Ok(Some(delta))
            }
            AsOf::Timestamp(time) => {
                delta.load_with_datetime(time).await.map_err(|e| Error::lake(&name, e))?;
                // deltalake falls back to the oldest version for a time before it.
                let committed = newest_commit_time(&delta).await;
                Ok(committed.is_none_or(|committed| committed <= time).then_some(delta))
            }
        }
    }
}

/// Registers `layer.table` as of `as_of` in a session under its usual name
/// (`bronze.sales_events`), as `catalog::register_table` does for the newest
/// version. Returns the version registered, `None` when the table did not
/// exist then (nothing is registered).
pub async fn register_as_of(ctx: &SessionContext, lake: &Lake, layer: &str, table: &str, as_of: AsOf) -> Result<Option<u64>> {
    let Some(delta) = lake.table_as_of(layer, table, as_of).await? else { return Ok(None) };
    let name = format!("{layer}.{table}");
    delta.update_datafusion_session(&ctx.state()).map_err(|e| Error::lake(&name, e))?;
    let provider = delta.table_provider().with_session(Arc::new(ctx.state())).await.map_err(|e| Error::lake(&name, e))?;
    ctx.deregister_table(name.as_str())?;
    ctx.register_table(name.as_str(), provider)?;
    Ok(Some(version_of(&delta)))
}

/// Points the lake tables `sql` reads at their state as of `as_of`, in a
/// session that has them at their newest version (`medallion sql
/// --as-of`). A version belongs to one table, so with a version the query
/// must read exactly one lake table; a time applies to every table it
/// reads. Returns each table and the version it now reads; a table that
/// did not exist yet at that time is an error naming it.
pub async fn point_query_as_of(ctx: &SessionContext, lake: &Lake, sql: &str, as_of: AsOf) -> Result<Vec<(String, u64)>> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect)?;
    let mut tables: Vec<(String, String)> = Vec::new();
    for reference in state.resolve_table_references(&statement)? {
        let Some(schema) = reference.schema() else { continue };
        let Ok(layer) = schema.parse::<super::Layer>() else { continue };
        // The audit log travels in time for admins only (a role's session carries its `Protection`).
        let admin = state.config().get_extension::<super::pii::Protection>().is_none();
        if !super::Layer::STORED.contains(&layer) && !(layer == super::Layer::Audit && admin) {
            continue;
        }
        let pair = (layer.as_str().to_string(), reference.table().to_string());
        if !tables.contains(&pair) {
            tables.push(pair);
        }
    }
    if tables.is_empty() {
        return Err(Error::Config("--as-of needs a query that reads a lake table (bronze.*, silver.* or gold.*)".into()));
    }
    if matches!(as_of, AsOf::Version(_)) && tables.len() > 1 {
        let names: Vec<String> = tables.iter().map(|(l, t)| format!("{l}.{t}")).collect();
        return Err(Error::Config(format!(
            "--as-of with a version names one table's version, but the query reads {}: give a time instead",
            names.join(", ")
        )));
    }
    let mut pointed = Vec::new();
    for (layer, table) in tables {
        match register_as_of(ctx, lake, &layer, &table, as_of).await? {
            Some(version) => pointed.push((format!("{layer}.{table}"), version)),
            None => {
                return Err(Error::Config(format!("{layer}.{table} did not exist yet at {as_of}: pick a later time")));
            }
        }
    }
    Ok(pointed)
}

/// When the newest commit of `layer.table` was written (the clock `history`
/// and `--as-of` use): one open of the table and one `HEAD` of its newest
/// commit file. `None` when the table does not exist.
pub async fn last_commit_time(lake: &Lake, layer: &str, table: &str) -> Result<Option<DateTime<Utc>>> {
    let Some(delta) = lake.existing_table(layer, table).await? else { return Ok(None) };
    Ok(newest_commit_time(&delta).await)
}

/// When the loaded version of `delta` was committed; `None` once log
/// cleanup removed its commit file.
pub(super) async fn newest_commit_time(delta: &DeltaTable) -> Option<DateTime<Utc>> {
    commit_time(&delta.object_store(), version_of(delta)).await
}

/// The modification time of a version's commit file; `None` once log
/// cleanup removed it.
async fn commit_time(store: &Arc<dyn ObjectStore>, version: u64) -> Option<DateTime<Utc>> {
    store.head(&commit_path(version)).await.ok().map(|meta| meta.last_modified)
}

fn commit_path(version: u64) -> Path {
    Path::from(format!("_delta_log/{version:020}.json"))
}

/// One commit of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub version: u64,
    /// When the commit file was written (the clock `--as-of` uses).
    pub timestamp: DateTime<Utc>,
    /// Delta's operation name: `WRITE`, `OPTIMIZE`, `RESTORE`,
    /// `VACUUM START`, `CREATE TABLE`…; empty when the commit has no
    /// commit info.
    pub operation: String,
    /// Data files added and removed (compaction's included).
    pub files_added: u64,
    pub files_removed: u64,
    /// Rows the commit added and removed as data changes (a compaction
    /// moves rows without changing them: 0 and 0). `None` when a file's row
    /// count is unknown (no statistics, or its log entry was cleaned up).
    pub rows_added: Option<u64>,
    pub rows_removed: Option<u64>,
}

/// The last `limit` commits of `layer.table` (all when `None`), newest first.
pub async fn history(lake: &Lake, layer: &str, table: &str, limit: Option<usize>) -> Result<Vec<HistoryEntry>> {
    let name = format!("{layer}.{table}");
    let delta = existing(lake, layer, table).await?;
    let store = delta.object_store();
    let mut commits = commit_files(&store, &name).await?;
    let keep = limit.unwrap_or(usize::MAX).min(commits.len());
    commits.drain(..commits.len() - keep);
    let parsed: Vec<ParsedCommit> = futures::stream::iter(commits)
        .map(|(version, meta)| read_commit(&store, version, meta))
        .buffered(HISTORY_READ_CONCURRENCY)
        .try_collect()
        .await
        .map_err(|e| Error::other(format!("history of {name}"), e))?;
    let mut rows_of = rows_of_files_before(delta, &parsed).await;
    let mut entries: Vec<HistoryEntry> = parsed.into_iter().map(|commit| commit.entry(&mut rows_of)).collect();
    entries.reverse();
    Ok(entries)
}

/// The commit files (`<version>.json`) under `_delta_log`, oldest first.
async fn commit_files(store: &Arc<dyn ObjectStore>, name: &str) -> Result<Vec<(u64, ObjectMeta)>> {
    let listing: Vec<ObjectMeta> =
        store.list(Some(&Path::from("_delta_log"))).try_collect().await.map_err(|e| Error::lake(name, e))?;
    let mut commits: Vec<(u64, ObjectMeta)> =
        listing.into_iter().filter_map(|meta| Some((commit_version(&meta)?, meta))).collect();
    commits.sort_by_key(|(version, _)| *version);
    Ok(commits)
}

/// The version of a commit file (`00000000000000000012.json`); `None` for
/// checkpoints and other files of the log.
fn commit_version(meta: &ObjectMeta) -> Option<u64> {
    let digits = meta.location.filename()?.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A data file named by an `add` or `remove` action.
struct FileAction {
    path: String,
    data_change: bool,
    /// `numRecords` of an add's statistics.
    rows: Option<u64>,
}

/// What `history` needs of one commit file.
struct ParsedCommit {
    version: u64,
    timestamp: DateTime<Utc>,
    operation: String,
    adds: Vec<FileAction>,
    removes: Vec<FileAction>,
}

async fn read_commit(store: &Arc<dyn ObjectStore>, version: u64, meta: ObjectMeta) -> std::result::Result<ParsedCommit, String> {
    let bytes = store.get(&meta.location).await.map_err(|e| e.to_string())?.bytes().await.map_err(|e| e.to_string())?;
    let mut commit =
        ParsedCommit { version, timestamp: meta.last_modified, operation: String::new(), adds: Vec::new(), removes: Vec::new() };
    for line in bytes.split(|b| *b == b'\n').filter(|line| !line.trim_ascii().is_empty()) {
        let action: Value = serde_json::from_slice(line).map_err(|e| format!("version {version}: {e}"))?;
        if let Some(info) = action.get("commitInfo") {
            commit.operation = info.get("operation").and_then(Value::as_str).unwrap_or_default().to_string();
        } else if let Some(add) = action.get("add") {
            commit.adds.push(file_action(add, rows_in_stats(add)));
        } else if let Some(remove) = action.get("remove") {
            commit.removes.push(file_action(remove, None));
        }
    }
    Ok(commit)
}

fn file_action(action: &Value, rows: Option<u64>) -> FileAction {
    FileAction {
        path: decoded_path(action.get("path").and_then(Value::as_str).unwrap_or_default()),
        data_change: action.get("dataChange").and_then(Value::as_bool).unwrap_or(true),
        rows,
    }
}

/// `numRecords` from an add action's statistics (a JSON string).
fn rows_in_stats(add: &Value) -> Option<u64> {
    let stats: Value = serde_json::from_str(add.get("stats")?.as_str()?).ok()?;
    stats.get("numRecords")?.as_u64()
}

/// The path of a log action as the table's snapshot shows it (log paths are
/// URL-encoded).
fn decoded_path(raw: &str) -> String {
    Path::from_url_path(raw).map(|path| path.to_string()).unwrap_or_else(|_| raw.to_string())
}

impl ParsedCommit {
    /// The entry of this commit; `rows_of` learns the files it adds.
    fn entry(self, rows_of: &mut HashMap<String, Option<u64>>) -> HistoryEntry {
        for add in &self.adds {
            rows_of.insert(add.path.clone(), add.rows);
        }
        let rows_added = data_change_rows(&self.adds, |add| add.rows);
        let rows_removed = data_change_rows(&self.removes, |remove| rows_of.get(&remove.path).copied().flatten());
        HistoryEntry {
            version: self.version,
            timestamp: self.timestamp,
            operation: self.operation,
            files_added: self.adds.len() as u64,
            files_removed: self.removes.len() as u64,
            rows_added,
            rows_removed,
        }
    }
}

/// Rows of the files that change data; `None` when one count is unknown.
fn data_change_rows(files: &[FileAction], rows: impl Fn(&FileAction) -> Option<u64>) -> Option<u64> {
    files.iter().filter(|file| file.data_change).map(rows).sum()
}

/// Row counts of the files live just before the first listed commit, when a
/// listed commit removes a file it did not see added (a partition replaced,
/// a table overwritten). Empty when not needed or no longer readable: those
/// removals then count as unknown.
async fn rows_of_files_before(mut delta: DeltaTable, commits: &[ParsedCommit]) -> HashMap<String, Option<u64>> {
    let mut rows_of = HashMap::new();
    let Some(first) = commits.first() else { return rows_of };
    let added: HashSet<&str> = commits.iter().flat_map(|c| &c.adds).map(|add| add.path.as_str()).collect();
    let needs_older = commits.iter().flat_map(|c| &c.removes).any(|r| r.data_change && !added.contains(r.path.as_str()));
    if !needs_older || first.version == 0 || delta.load_version(first.version - 1).await.is_err() {
        return rows_of;
    }
    if let Ok(state) = delta.snapshot() {
        for file in state.log_data().iter() {
            rows_of.insert(file.path().into_owned(), file.num_records().map(|n| n as u64));
        }
    }
    rows_of
}

/// What `restore` did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub table: String,
    /// The version whose content was restored, and the new version holding it.
    pub restored_version: u64,
    pub version: u64,
    pub files_removed: usize,
    pub files_restored: usize,
    pub duration: Duration,
}

/// Gives `layer.table` the content of an older version, in one new commit
/// (the versions in between stay in the history). Fails when files of that
/// version were vacuumed. The source positions a stream recorded stay as
/// they are: restoring `bronze.sales_events` does not make the stream read
/// the restored-away events again.
pub async fn restore(lake: &Lake, layer: &str, table: &str, version: u64) -> Result<RestoreReport> {
    let name = format!("{layer}.{table}");
    let started = Instant::now();
    let delta = existing(lake, layer, table).await?;
    let newest = version_of(&delta);
    if version >= newest {
        return Err(Error::Other {
            context: format!("restore of {name} to version {version}"),
            reason: format!("the newest version is {newest}: pick an older one from `history`"),
        });
    }
    let commit = CommitProperties::default().with_metadata([
        ("medallion.table".to_string(), serde_json::json!(name)),
        ("medallion.restored_version".to_string(), serde_json::json!(version)),
    ]);
    let (restored, metrics) = delta
        .restore()
        .with_version_to_restore(version)
        .with_commit_properties(commit)
        .await
        .map_err(|e| Error::lake(&name, e))?;
    Ok(RestoreReport {
        table: name,
        restored_version: version,
        version: version_of(&restored),
        files_removed: metrics.num_removed_file,
        files_restored: metrics.num_restored_file,
        duration: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn as_of_reads_a_version_or_a_time() {
        assert_eq!(AsOf::parse("12").unwrap(), AsOf::Version(12));
        assert_eq!(AsOf::parse(" 0 ").unwrap(), AsOf::Version(0));
        let nine_pm = Utc.with_ymd_and_hms(2026, 11, 30, 21, 0, 0).unwrap();
        assert_eq!(AsOf::parse("2026-11-30T21:00:00Z").unwrap(), AsOf::Timestamp(nine_pm));
        assert_eq!(AsOf::parse("2026-11-30T22:00:00+01:00").unwrap(), AsOf::Timestamp(nine_pm));
        assert_eq!(AsOf::parse("2026-11-30 21:00:00").unwrap(), AsOf::Timestamp(nine_pm));
        let later = nine_pm + chrono::Duration::milliseconds(250);
        assert_eq!(AsOf::parse("2026-11-30 21:00:00.250").unwrap(), AsOf::Timestamp(later));
    }

    #[test]
    fn a_bad_as_of_is_one_line_showing_both_forms() {
        for bad in ["", "-1", "yesterday", "2026-11-30", "2026-13-01 00:00:00", "99999999999999999999999"] {
            let err = AsOf::parse(bad).unwrap_err().to_string();
            assert!(err.contains("integer") && err.contains("RFC 3339") && !err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn commit_entries_count_rows_of_data_changes_only() {
        let file = |path: &str, data_change: bool, rows: Option<u64>| FileAction { path: path.into(), data_change, rows };
        let commit = |version, operation: &str, adds, removes| ParsedCommit {
            version,
            timestamp: Utc.timestamp_opt(0, 0).unwrap(),
            operation: operation.into(),
            adds,
            removes,
        };
        let mut rows_of = HashMap::from([("old".to_string(), Some(7))]);
        let write = commit(1, "WRITE", vec![file("a", true, Some(3)), file("b", true, Some(4))], vec![file("old", true, None)]);
        let entry = write.entry(&mut rows_of);
        assert_eq!((entry.rows_added, entry.rows_removed, entry.files_added, entry.files_removed), (Some(7), Some(7), 2, 1));

        let optimize = commit(2, "OPTIMIZE", vec![file("ab", false, Some(7))], vec![file("a", false, None), file("b", false, None)]);
        let entry = optimize.entry(&mut rows_of);
        assert_eq!((entry.rows_added, entry.rows_removed, entry.files_removed), (Some(0), Some(0), 2));

        let unknown = commit(3, "DELETE", vec![], vec![file("never-seen", true, None)]);
        assert_eq!(unknown.entry(&mut rows_of).rows_removed, None);
    }
}
