//! Table upkeep and time travel on a local lake: hundreds of small appends
//! (as the stream makes them, through `lake::Appender`) compacted by
//! `optimize` with the same content, old files freed by `vacuum`, old
//! versions read back and restored, checkpoints written on the way, and a
//! compaction racing an appender with nothing lost. Expected row counts and
//! sums are computed here from the rows the test writes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Date32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use medallion::lake::history::{self, AsOf};
use medallion::lake::upkeep::{self, OptimizeOptions, VacuumOptions};
use medallion::lake::{catalog, Appender, Lake};

use crate::support::*;

/// 2026-11-29 and 2026-11-30 as days since 1970-01-01
/// (python: (date(2026,11,29) - date(1970,1,1)).days == 20786).
const DAYS: [i32; 2] = [20786, 20787];
const ROWS_PER_APPEND: i64 = 5;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount_cents", DataType::Int64, false),
        Field::new("day", DataType::Date32, false),
    ]))
}

/// What the test wrote: the row count and the sum of `amount_cents`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Content {
    rows: i64,
    amount: i64,
}

/// Appends batch number `n` (`ROWS_PER_APPEND` rows on one of the two days,
/// alternately) and adds its rows to `written`.
async fn append_batch(appender: &mut Appender, n: i64, written: &mut Content) -> u64 {
    let ids: Vec<i64> = (0..ROWS_PER_APPEND).map(|i| n * ROWS_PER_APPEND + i).collect();
    let amounts: Vec<i64> = ids.iter().map(|id| (id * 37) % 1000 + 1).collect();
    written.rows += ids.len() as i64;
    written.amount += amounts.iter().sum::<i64>();
    let day = DAYS[(n % 2) as usize];
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from(amounts)),
            Arc::new(Date32Array::from(vec![day; ids.len()])),
        ],
    )
    .unwrap();
    appender.append(schema(), vec![batch], &BTreeMap::new(), &BTreeMap::new()).await.unwrap() as u64
}

fn appender(lake: &Lake, table: &str) -> Appender {
    lake.appender("bronze", table, "day", &[], &["id"])
}

/// `count` appends numbered from `first`; returns the last version.
async fn append_many(appender: &mut Appender, first: i64, count: i64, written: &mut Content) -> u64 {
    let mut version = 0;
    for n in first..first + count {
        version = append_batch(appender, n, written).await;
    }
    version
}

/// Row count and amount of `bronze.<table>`, newest or as of a version.
async fn read(lake: &Lake, table: &str, as_of: Option<AsOf>) -> Content {
    let ctx = catalog::new_session();
    match as_of {
        None => assert!(catalog::register_table(&ctx, lake, "bronze", table).await.unwrap()),
        Some(as_of) => {
            history::register_as_of(&ctx, lake, "bronze", table, as_of).await.unwrap().expect("the table existed then");
        }
    }
    let sql = format!("SELECT count(*), coalesce(sum(amount_cents), 0) FROM bronze.{table}");
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let row = &rows(&batches)[0];
    Content { rows: row[0].i64(), amount: row[1].i64() }
}

/// Count and total size of the Parquet files under a folder (data files;
/// checkpoints live in `_delta_log`, which is skipped).
fn parquet_on_disk(dir: &Path) -> (usize, u64) {
    let (mut count, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name == "_delta_log") {
            continue;
        }
        if path.is_dir() {
            let (files, size) = parquet_on_disk(&path);
            count += files;
            bytes += size;
        } else if path.extension().is_some_and(|ext| ext == "parquet") {
            count += 1;
            bytes += std::fs::metadata(&path).unwrap().len();
        }
    }
    (count, bytes)
}

fn parquet_files(dir: &Path) -> usize {
    parquet_on_disk(dir).0
}

fn table_dir(lake: &TestLake, table: &str) -> std::path::PathBuf {
    lake.dir.path().join("bronze").join(table)
}

fn checkpoints(lake: &TestLake, table: &str) -> Vec<String> {
    let log = table_dir(lake, table).join("_delta_log");
    let mut names: Vec<String> = std::fs::read_dir(log)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".checkpoint.parquet"))
        .collect();
    names.sort();
    names
}

fn force_now() -> VacuumOptions {
    VacuumOptions { retention: Some(Duration::ZERO), force: true, dry_run: false }
}

#[tokio::test]
async fn small_appends_are_compacted_travelled_restored_and_vacuumed() {
    let test_lake = TestLake::new();
    let lake = Lake::new(&config(&test_lake.url(), None, "2026-11-30")).unwrap();
    let table = "events";
    let mut appender = appender(&lake, table);
    let mut written = Content::default();

    // 320 commits as a stream makes them, one small file each.
    let appends = 320;
    let last_append = append_many(&mut appender, 0, appends, &mut written).await;
    // Version 0 creates the table (empty, no positions), then one per append.
    assert_eq!(last_append, appends as u64);
    assert_eq!(parquet_files(&table_dir(&test_lake, table)), appends as usize);
    // deltalake checkpoints every 100 commits (versions 99, 199, 299) on the appender's path.
    assert_eq!(
        checkpoints(&test_lake, table),
        ["00000000000000000099.checkpoint.parquet", "00000000000000000199.checkpoint.parquet", "00000000000000000299.checkpoint.parquet"]
    );
    assert_eq!(read(&lake, table, None).await, written);

    let report = upkeep::optimize(&lake, "bronze", table, &OptimizeOptions::default()).await.unwrap();
    assert_eq!((report.files_before, report.read_version, report.version), (appends as usize, last_append, last_append + 1));
    assert!(report.files_before >= 10 * report.files_after, "{report:?}");
    // A few kilobytes per day: one file per partition.
    assert_eq!(report.files_after, DAYS.len(), "{report:?}");
    assert_eq!(report.partitions_touched, 2, "{report:?}");
    assert_eq!(report.files_removed, appends as u64, "{report:?}");
    let optimized = report.version;
    assert_eq!(read(&lake, table, None).await, written, "optimize changed the content");
    // Nothing is deleted yet: the old version still has its files.
    assert_eq!(parquet_files(&table_dir(&test_lake, table)), appends as usize + report.files_after);

    // History names the compaction; the log itself (read here) agrees.
    let entries = history::history(&lake, "bronze", table, Some(3)).await.unwrap();
    let versions: Vec<u64> = entries.iter().map(|e| e.version).collect();
    assert_eq!(versions, [optimized, optimized - 1, optimized - 2]);
    assert_eq!(entries[0].operation, "OPTIMIZE");
    assert_eq!((entries[0].rows_added, entries[0].rows_removed), (Some(0), Some(0)));
    assert_eq!(entries[0].files_removed, appends as u64);
    assert_eq!((entries[1].rows_added, entries[1].rows_removed), (Some(ROWS_PER_APPEND as u64), Some(0)));
    let from_log = table_history(&config(&test_lake.url(), None, "2026-11-30"), "bronze", table).await;
    assert_eq!(from_log.last().map(|(v, _, op)| (*v as u64, op.as_str())), Some((optimized, "OPTIMIZE")));
    assert_eq!(history::history(&lake, "bronze", table, None).await.unwrap().len(), from_log.len());

    // One more append, so the versions differ in content.
    let mut extra = Content::default();
    let with_extra = append_batch(&mut appender, appends, &mut extra).await;
    let everything = Content { rows: written.rows + extra.rows, amount: written.amount + extra.amount };
    assert_eq!(read(&lake, table, None).await, everything);

    // Time travel: before the compaction, by version and by the commit's time.
    assert_eq!(read(&lake, table, Some(AsOf::Version(optimized - 1))).await, written);
    let old = lake.table_as_of("bronze", table, AsOf::Version(optimized - 1)).await.unwrap().unwrap();
    assert_eq!(old.snapshot().unwrap().log_data().num_files(), appends as usize);
    let committed_at = entries[1].timestamp;
    let by_time = lake.table_as_of("bronze", table, AsOf::Timestamp(committed_at)).await.unwrap().unwrap();
    assert_eq!(by_time.version(), Some(optimized - 1));
    let before_first = committed_at - chrono::Duration::days(1);
    assert!(lake.table_as_of("bronze", table, AsOf::Timestamp(before_first)).await.unwrap().is_none());
    let too_new = lake.table_as_of("bronze", table, AsOf::Version(with_extra + 5)).await.unwrap_err().to_string();
    assert!(too_new.contains(&format!("newest version is {with_extra}")), "{too_new}");

    // Restore the compacted version: its content, in a new version.
    let restored = history::restore(&lake, "bronze", table, optimized).await.unwrap();
    assert_eq!((restored.restored_version, restored.version), (optimized, with_extra + 1));
    assert_eq!(read(&lake, table, None).await, written);
    assert_eq!(read(&lake, table, Some(AsOf::Version(with_extra))).await, everything);
    let newest = history::history(&lake, "bronze", table, Some(1)).await.unwrap();
    assert_eq!((newest[0].operation.as_str(), newest[0].rows_removed), ("RESTORE", Some(extra.rows as u64)));

    // Vacuum: a dry run deletes nothing; then every file no version needs
    // now goes (the 320 small files and the restored-away one).
    let (on_disk, bytes_on_disk) = parquet_on_disk(&table_dir(&test_lake, table));
    assert_eq!(on_disk, appends as usize + report.files_after + 1);
    let dry = upkeep::vacuum(&lake, "bronze", table, &VacuumOptions { dry_run: true, ..force_now() }).await.unwrap();
    assert_eq!(dry.files.len(), appends as usize + 1, "{:?}", &dry.files[..3.min(dry.files.len())]);
    assert_eq!(parquet_files(&table_dir(&test_lake, table)), on_disk);
    let vacuumed = upkeep::vacuum(&lake, "bronze", table, &force_now()).await.unwrap();
    assert_eq!(vacuumed.files.len(), appends as usize + 1);
    let (left, bytes_left) = parquet_on_disk(&table_dir(&test_lake, table));
    assert_eq!(left, report.files_after);
    assert_eq!(vacuumed.bytes, bytes_on_disk - bytes_left);
    assert_eq!(read(&lake, table, None).await, written, "the current version reads after vacuum");
    let again = upkeep::vacuum(&lake, "bronze", table, &force_now()).await.unwrap();
    assert_eq!(again.files.len(), 0, "files already deleted are not reported again");
}

#[tokio::test]
async fn vacuum_under_the_minimum_retention_is_refused_without_force() {
    let test_lake = TestLake::new();
    let lake = Lake::new(&config(&test_lake.url(), None, "2026-11-30")).unwrap();
    let mut appender = appender(&lake, "small");
    let mut written = Content::default();
    append_many(&mut appender, 0, 4, &mut written).await;
    upkeep::optimize(&lake, "bronze", "small", &OptimizeOptions::default()).await.unwrap();

    let short = VacuumOptions { retention: Some(Duration::from_secs(3600)), force: false, dry_run: false };
    let refused = upkeep::vacuum(&lake, "bronze", "small", &short).await.unwrap_err().to_string();
    // The default minimum, delta.deletedFileRetentionDuration, is 7 days = 168 hours.
    assert!(refused.contains("1h") && refused.contains("168h") && refused.contains("--force"), "{refused}");
    assert!(!refused.contains('\n'), "{refused}");
    assert_eq!(parquet_files(&table_dir(&test_lake, "small")), 4 + 2, "a refused vacuum deletes nothing");

    // At the table's own retention the files removed just now are kept.
    let kept = upkeep::vacuum(&lake, "bronze", "small", &VacuumOptions::default()).await.unwrap();
    assert_eq!((kept.files.len(), kept.retention.as_secs()), (0, 7 * 24 * 3600));
    assert_eq!(parquet_files(&table_dir(&test_lake, "small")), 4 + 2);
    assert_eq!(read(&lake, "small", None).await, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_and_a_concurrent_appender_both_succeed_with_nothing_lost() {
    let test_lake = TestLake::new();
    let lake = Lake::new(&config(&test_lake.url(), None, "2026-11-30")).unwrap();
    let table = "racing";
    let mut appender = appender(&lake, table);
    let mut before = Content::default();
    let initial = 120;
    append_many(&mut appender, 0, initial, &mut before).await;

    // The appender keeps its table state between commits, as the stream
    // does, and goes on until the compaction is over (and a bit after).
    let appended = Arc::new(AtomicUsize::new(0));
    let optimize_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (appended, optimize_done) = (appended.clone(), optimize_done.clone());
        tokio::spawn(async move {
            let mut during = Content::default();
            let mut after_optimize = 0;
            let mut n = initial;
            while after_optimize < 3 && n < initial + 2000 {
                append_batch(&mut appender, n, &mut during).await;
                appended.fetch_add(1, Ordering::SeqCst);
                n += 1;
                if optimize_done.load(Ordering::SeqCst) {
                    after_optimize += 1;
                }
            }
            during
        })
    };
    while appended.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = upkeep::optimize(&lake, "bronze", table, &OptimizeOptions::default()).await.unwrap();
    optimize_done.store(true, Ordering::SeqCst);
    let during = writer.await.expect("the appender never fails");

    assert!(report.files_removed >= initial as u64, "{report:?}");
    assert!(
        report.version > report.read_version + 1,
        "no append landed between the compaction's read and its commit, so nothing raced: {report:?}"
    );
    let expected = Content { rows: before.rows + during.rows, amount: before.amount + during.amount };
    assert_eq!(read(&lake, table, None).await, expected);
    let entries = history::history(&lake, "bronze", table, None).await.unwrap();
    let compactions: Vec<u64> = entries.iter().filter(|e| e.operation == "OPTIMIZE").map(|e| e.version).collect();
    assert_eq!(compactions, [report.version]);
    let appended_rows: u64 = entries.iter().filter_map(|e| e.rows_added).sum();
    assert_eq!(appended_rows, expected.rows as u64);
}
