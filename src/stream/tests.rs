//! The stream loop end to end on a folder of JSON-lines files and a local
//! `file://` lake, with no service: exactly once through a failure inside
//! the events commit, between the two commits and after them; runs and
//! replays that write nothing; late events; the dedupe horizon.
//!
//! Each test writes its source files itself and counts what the stream
//! must make of them from the lines it wrote, never from the stream's
//! output. Failures are injected at named points (`StreamOptions::fail_at`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::scalar::ScalarValue;

use super::files::FileSource;
use super::source::StreamSource;
use super::{run, FailAt, FailurePoint, StreamOptions, StreamReport};
use crate::config::{Config, Overrides};
use crate::error::Result;
use crate::lake::Lake;
use crate::live::LiveHandle;
use crate::progress::Progress;

/// One line of a source file, and what the stream must make of it.
struct Line {
    text: String,
    /// (event id, amount) when the line is an event that lands in bronze
    /// events; `None` when it must be rejected.
    lands: Option<(String, f64)>,
}

fn event_text(id: &str, time: &str, country: &str, amount: f64) -> String {
    format!(r#"{{"event_id":"{id}","timestamp":"2026-11-25T{time}Z","pays":"{country}","montant":{amount}}}"#)
}

/// A new, valid event (`time` is `HH:MM:SS` on 2026-11-25).
fn lands(id: &str, time: &str, country: &str, amount: f64) -> Line {
    Line { text: event_text(id, time, country, amount), lands: Some((id.to_string(), amount)) }
}

fn rejected(text: String) -> Line {
    Line { text, lands: None }
}

/// File `n` (from 1) of the failure tests: 20 valid events in minute `n`
/// (amounts in quarters, so every sum is exact), a malformed line, a
/// negative amount and, from the second file on, the first event of the
/// file before sent again (a duplicate).
fn sales_file(n: u32) -> Vec<Line> {
    let event = |n: u32, i: u32| {
        let country = ["France", "UK", "Germany"][i as usize % 3];
        (format!("f{n}-{i}"), format!("10:{n:02}:{i:02}"), country, f64::from(n * 100 + i) / 4.0)
    };
    let mut lines: Vec<Line> = (0..20)
        .map(|i| {
            let (id, time, country, amount) = event(n, i);
            lands(&id, &time, country, amount)
        })
        .collect();
    lines.insert(5, rejected(format!(r#"{{"event_id":"f{n}-bad","pays":"#)));
    lines.insert(11, rejected(event_text(&format!("f{n}-negative"), &format!("10:{n:02}:30"), "UK", -2.0)));
    if n > 1 {
        let (id, time, country, amount) = event(n - 1, 0);
        lines.push(rejected(event_text(&id, &time, country, amount)));
    }
    lines
}

/// A source folder and a lake, both temporary.
struct Fixture {
    folder: tempfile::TempDir,
    lake_dir: tempfile::TempDir,
    config: Config,
    lake: Lake,
    /// Every line written, per file name.
    files: Vec<(String, Vec<Line>)>,
}

impl Fixture {
    fn new() -> Fixture {
        let folder = tempfile::tempdir().unwrap();
        let lake_dir = tempfile::tempdir().unwrap();
        let config = Config::load(Overrides {
            lake: Some(format!("file://{}", lake_dir.path().display())),
            ..Default::default()
        })
        .unwrap();
        let lake = Lake::new(&config).unwrap();
        Fixture { folder, lake_dir, config, lake, files: Vec::new() }
    }

    fn write(&mut self, name: &str, lines: Vec<Line>) {
        let text: String = lines.iter().map(|line| format!("{}\n", line.text)).collect();
        std::fs::write(self.folder.path().join(name), text).unwrap();
        self.files.push((name.to_string(), lines));
    }

    async fn run(&self, options: &StreamOptions) -> Result<StreamReport> {
        let source = StreamSource::Files(FileSource::new(self.folder.path().to_path_buf())?);
        let stop = Arc::new(AtomicBool::new(false));
        run(&self.config, &self.lake, source, options, &LiveHandle::new(), &Progress::hidden(), stop).await
    }

    /// The rows of a query over the lake.
    async fn rows(&self, sql: &str) -> Vec<Vec<ScalarValue>> {
        let ctx = crate::lake::session::SessionBuilder::new(&self.lake).build().await.unwrap().ctx;
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut rows = Vec::new();
        for batch in batches {
            for row in 0..batch.num_rows() {
                rows.push(batch.columns().iter().map(|c| ScalarValue::try_from_array(c, row).unwrap()).collect());
            }
        }
        rows
    }

    /// The lines of the first `files` files written, or of all of them.
    fn lines(&self, files: Option<usize>) -> impl Iterator<Item = &Line> + '_ {
        self.files.iter().take(files.unwrap_or(usize::MAX)).flat_map(|(_, lines)| lines)
    }

    /// What bronze must hold after the first `files` files (all: `None`),
    /// counted from the lines written.
    fn hand_count(&self, files: Option<usize>) -> HandCount {
        let landed: Vec<&(String, f64)> = self.lines(files).filter_map(|line| line.lands.as_ref()).collect();
        let ids: std::collections::HashSet<&str> = landed.iter().map(|(id, _)| id.as_str()).collect();
        HandCount {
            events: landed.len() as i64,
            distinct_ids: ids.len() as i64,
            amount: landed.iter().map(|(_, amount)| amount).sum(),
            rejects: self.lines(files).filter(|line| line.lands.is_none()).count() as i64,
        }
    }

    /// Checks bronze against a hand count: each event once, each reject once.
    async fn assert_bronze_holds(&self, expected: &HandCount, what: &str) {
        assert_eq!(
            self.bronze_events().await,
            (expected.events, expected.distinct_ids, expected.amount),
            "bronze events of {what}: rows, distinct ids, amount"
        );
        assert_eq!(self.bronze_rejects().await, (expected.rejects, expected.rejects), "bronze rejects of {what}: rows, distinct messages");
    }

    /// (rows, distinct ids, amounts summed) of bronze events.
    async fn bronze_events(&self) -> (i64, i64, f64) {
        let rows = self.rows("SELECT COUNT(*), COUNT(DISTINCT event_id), SUM(montant) FROM bronze.sales_events").await;
        (int(&rows[0][0]), int(&rows[0][1]), float(&rows[0][2]))
    }

    /// (rows, distinct messages) of bronze rejects.
    async fn bronze_rejects(&self) -> (i64, i64) {
        let rows = self
            .rows("SELECT COUNT(*), COUNT(DISTINCT concat(topic, ':', CAST(\"offset\" AS VARCHAR))) FROM bronze.sales_events_rejected")
            .await;
        (int(&rows[0][0]), int(&rows[0][1]))
    }

    /// Every valid event written is in bronze once, every other line is
    /// rejected once, and the gold live totals add up to the same.
    async fn assert_exactly_once(&self) {
        let expected = self.hand_count(None);
        self.assert_bronze_holds(&expected, "every file").await;
        let gold = self.rows("SELECT SUM(nb_transactions), SUM(total_ventes_live) FROM gold.live_sales_by_country").await;
        assert_eq!((int(&gold[0][0]), float(&gold[0][1])), (expected.events, expected.amount), "gold live totals");
    }

    fn table_dir(&self, table: &str) -> PathBuf {
        self.lake_dir.path().join("bronze").join(table)
    }

    async fn version(&self, table: &str) -> i64 {
        self.lake.existing_table("bronze", table).await.unwrap().unwrap().version().unwrap() as i64
    }
}

/// What bronze must hold, counted by hand.
struct HandCount {
    events: i64,
    distinct_ids: i64,
    amount: f64,
    rejects: i64,
}

fn int(value: &ScalarValue) -> i64 {
    match value.cast_to(&DataType::Int64).unwrap() {
        ScalarValue::Int64(Some(n)) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn float(value: &ScalarValue) -> f64 {
    match value.cast_to(&DataType::Float64).unwrap() {
        ScalarValue::Float64(Some(x)) => x,
        other => panic!("not a number: {other:?}"),
    }
}

fn text(value: &ScalarValue) -> String {
    match value.cast_to(&DataType::Utf8).unwrap() {
        ScalarValue::Utf8(Some(s)) => s,
        other => panic!("not a string: {other:?}"),
    }
}

/// Data files added by the Delta log entry `version` of the table in `dir`.
fn files_added_at(dir: &Path, version: i64) -> usize {
    let entry = std::fs::read_to_string(dir.join("_delta_log").join(format!("{version:020}.json"))).unwrap();
    entry.lines().filter(|action| action.starts_with(r#"{"add""#)).count()
}

/// Data files added by every log entry of the table in `dir`.
fn files_in_log(dir: &Path) -> usize {
    let entries = std::fs::read_dir(dir.join("_delta_log")).unwrap();
    let versions = entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse::<i64>().ok());
    versions.map(|version| files_added_at(dir, version)).sum()
}

/// Data files under the table folder `dir`, at any depth (the partition
/// folders), the log's own folder left out.
fn parquet_files_on_disk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.ends_with("_delta_log"))
        .map(|path| match path.is_dir() {
            true => parquet_files_on_disk(&path),
            false => usize::from(path.extension().is_some_and(|x| x == "parquet")),
        })
        .sum()
}

/// One file per micro-batch (a file source polls whole files).
fn one_file_per_batch() -> StreamOptions {
    StreamOptions { max_batch: 1, dedupe_horizon: 10_000, ..StreamOptions::default() }
}

/// Four files, a run that fails at `point` of its second commit, and the
/// fixture to restart it.
async fn failed_run(point: FailurePoint) -> Fixture {
    let mut fixture = Fixture::new();
    for n in 1..=4 {
        fixture.write(&format!("{n:04}.jsonl"), sales_file(n));
    }
    let failing = StreamOptions { fail_at: Some(FailAt { point, commit: 2 }), ..one_file_per_batch() };
    let error = fixture.run(&failing).await.expect_err("the run stops at its failure point");
    assert!(error.to_string().contains(point.name()), "{error}");
    fixture
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_inside_the_events_commit_leaves_unlisted_files_and_a_restart_counts_each_event_once() {
    let fixture = failed_run(FailurePoint::InsideEventsCommit).await;
    // Only the first batch is committed; the second left data files that
    // no log entry lists.
    fixture.assert_bronze_holds(&fixture.hand_count(Some(1)), "file 1").await;
    let events_dir = fixture.table_dir("sales_events");
    assert!(
        parquet_files_on_disk(&events_dir) > files_in_log(&events_dir),
        "the interrupted commit wrote data files: {} on disk, {} in the log",
        parquet_files_on_disk(&events_dir),
        files_in_log(&events_dir)
    );

    let report = fixture.run(&one_file_per_batch()).await.unwrap();
    assert_eq!(report.batches, 3, "files 2 to 4");
    fixture.assert_exactly_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_the_commits_is_repaired_by_writing_only_the_missing_rejects() {
    let fixture = failed_run(FailurePoint::BetweenCommits).await;
    let HandCount { events, distinct_ids, amount, .. } = fixture.hand_count(Some(2));
    assert_eq!(fixture.bronze_events().await, (events, distinct_ids, amount), "events of files 1 and 2");
    let rejects = fixture.hand_count(Some(1)).rejects;
    assert_eq!(fixture.bronze_rejects().await, (rejects, rejects), "rejects of file 1");
    let events_version = fixture.version("sales_events").await;

    let report = fixture.run(&one_file_per_batch()).await.unwrap();
    assert_eq!(report.batches, 3, "file 2 again, then files 3 and 4");
    // The replayed batch commits no event (its commit only moves nothing
    // forward); its rejects are written once.
    assert_eq!(files_added_at(&fixture.table_dir("sales_events"), events_version + 1), 0);
    let second_file_rejects = fixture.files[1].1.iter().filter(|line| line.lands.is_none()).count() as i64;
    let replayed = fixture
        .rows("SELECT COUNT(*), COUNT(DISTINCT \"offset\") FROM bronze.sales_events_rejected WHERE topic = '0002.jsonl'")
        .await;
    assert_eq!((int(&replayed[0][0]), int(&replayed[0][1])), (second_file_rejects, second_file_rejects));
    let duplicate = fixture.rows("SELECT reason FROM bronze.sales_events_rejected WHERE topic = '0002.jsonl' AND reason LIKE 'duplicate%'").await;
    assert_eq!(duplicate.iter().map(|row| text(&row[0])).collect::<Vec<_>>(), ["duplicate event_id f1-0"]);
    fixture.assert_exactly_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_both_commits_replays_nothing() {
    let fixture = failed_run(FailurePoint::AfterCommits).await;
    let before = fixture.hand_count(Some(2));
    fixture.assert_bronze_holds(&before, "files 1 and 2").await;

    let report = fixture.run(&one_file_per_batch()).await.unwrap();
    assert_eq!(report.batches, 2, "files 3 and 4 only");
    let all = fixture.hand_count(None);
    assert_eq!((report.events as i64, report.rejected as i64), (all.events - before.events, all.rejects - before.rejects));
    fixture.assert_exactly_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_smaller_than_the_batch_size_are_read_in_one_batch() {
    let mut fixture = Fixture::new();
    for n in 1..=3 {
        fixture.write(&format!("{n:04}.jsonl"), sales_file(n));
    }
    // 3 files of 22 to 23 lines, far under the default batch of 50 000
    // messages: one poll takes them all, whatever the count of files left.
    let report = fixture.run(&StreamOptions::default()).await.unwrap();
    assert_eq!(report.batches, 1);
    fixture.assert_exactly_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_without_rejects_skip_the_rejects_commit_and_the_end_of_the_run_records_their_positions() {
    let mut fixture = Fixture::new();
    for n in 1..=4 {
        let clean = (0..10).map(|i| lands(&format!("c{n}-{i}"), &format!("10:{n:02}:{i:02}"), "France", f64::from(i))).collect();
        fixture.write(&format!("{n:04}.jsonl"), clean);
    }
    let report = fixture.run(&one_file_per_batch()).await.unwrap();
    assert_eq!((report.batches, report.events, report.rejected), (4, 40, 0));
    // Four event commits (versions 1 to 4, after the empty creation at 0);
    // the rejects table commits with the first batch and once more at the
    // end for the positions of the three skipped ones (versions 1 and 2).
    assert_eq!((fixture.version("sales_events").await, fixture.version("sales_events_rejected").await), (4, 2));
    fixture.assert_exactly_once().await;
    // The positions are recorded: a second run finds nothing to read again.
    let again = fixture.run(&one_file_per_batch()).await.unwrap();
    assert_eq!((again.batches, again.events, again.rejected), (0, 0, 0));
    assert_eq!((fixture.version("sales_events").await, fixture.version("sales_events_rejected").await), (4, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_a_consumed_source_commits_nothing_to_bronze() {
    let mut fixture = Fixture::new();
    fixture.write("0001.jsonl", sales_file(1));
    fixture.write("0002.jsonl", sales_file(2));
    let first = fixture.run(&one_file_per_batch()).await.unwrap();
    assert_eq!(first.batches, 2);
    fixture.assert_exactly_once().await;
    let versions = (fixture.version("sales_events").await, fixture.version("sales_events_rejected").await);

    let again = fixture.run(&one_file_per_batch()).await.unwrap();
    assert_eq!((again.batches, again.events, again.rejected), (0, 0, 0));
    assert_eq!((fixture.version("sales_events").await, fixture.version("sales_events_rejected").await), versions);
    fixture.assert_exactly_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_older_than_the_watermark_is_kept_as_late_and_left_out_of_the_minute_windows() {
    let mut fixture = Fixture::new();
    // The first batch sets the watermark: 10:05:30 − 60 s = 10:04:30.
    fixture.write("0001.jsonl", vec![lands("a1", "10:05:00", "UK", 10.0), lands("a2", "10:05:30", "France", 2.0)]);
    fixture.write(
        "0002.jsonl",
        vec![lands("b1", "10:04:00", "UK", 4.0), lands("b2", "10:04:45", "UK", 1.0), lands("b3", "10:03:59", "France", 8.0)],
    );
    let report = fixture.run(&one_file_per_batch()).await.unwrap();
    assert_eq!(report.late, 2);
    let flags = fixture.rows("SELECT event_id, is_late FROM bronze.sales_events ORDER BY event_id").await;
    let flags: Vec<(String, String)> = flags.iter().map(|row| (text(&row[0]), text(&row[1]))).collect();
    let expected = [("a1", "false"), ("a2", "false"), ("b1", "true"), ("b2", "false"), ("b3", "true")];
    assert_eq!(flags, expected.map(|(id, late)| (id.to_string(), late.to_string())));

    // By hand, on-time events only: 10:04 UK 1; 10:05 France 2, UK 10.
    let expected_windows: [(i64, String, f64, i64); 3] = [(4, "UK", 1.0, 1), (5, "France", 2.0, 1), (5, "UK", 10.0, 1)]
        .map(|(minute, country, total, count)| (minute, country.to_string(), total, count));
    // Late events still count in the totals: UK 10 + 4 + 1, France 2 + 8.
    let expected_totals: [(String, f64, i64); 2] = [("France", 10.0, 2), ("UK", 15.0, 3)].map(|(country, total, count)| (country.to_string(), total, count));
    for run in ["first run", "restart (state rebuilt from bronze)"] {
        if run != "first run" {
            fixture.run(&one_file_per_batch()).await.unwrap();
        }
        let windows = fixture
            .rows(
                "SELECT date_part('minute', window_start), pays, total_ventes, nb_transactions, \
                 date_part('epoch', window_end) - date_part('epoch', window_start) \
                 FROM gold.sales_by_country_minute ORDER BY 1, 2",
            )
            .await;
        assert!(windows.iter().all(|row| float(&row[4]) == 60.0), "{run}: one-minute windows");
        let windows: Vec<_> = windows.iter().map(|row| (int(&row[0]), text(&row[1]), float(&row[2]), int(&row[3]))).collect();
        assert_eq!(windows, expected_windows, "{run}");
        let totals = fixture.rows("SELECT pays, total_ventes_live, nb_transactions FROM gold.live_sales_by_country ORDER BY pays").await;
        let totals: Vec<_> = totals.iter().map(|row| (text(&row[0]), float(&row[1]), int(&row[2]))).collect();
        assert_eq!(totals, expected_totals, "{run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_inside_the_dedupe_horizon_is_rejected_and_one_outside_it_is_accepted() {
    let mut fixture = Fixture::new();
    let options = StreamOptions { dedupe_horizon: 3, ..one_file_per_batch() };
    let event = |id: &str, second: u32| lands(id, &format!("10:00:{second:02}"), "UK", 1.0);
    fixture.write("0001.jsonl", vec![event("d1", 1), event("d2", 2), event("d3", 3)]);
    // Remembered: d1 d2 d3. d3 is inside; then d4 and d5 push d1 and d2
    // out, so d1 is new again.
    let d3_again = rejected(event_text("d3", "10:00:10", "UK", 1.0));
    fixture.write("0002.jsonl", vec![d3_again, event("d4", 11), event("d5", 12), event("d1", 13)]);
    let report = fixture.run(&options).await.unwrap();
    assert_eq!(report.duplicates, 1);
    // After a restart the horizon holds the same ids, rebuilt from bronze:
    // d4 d5 d1. d5 is inside; d2 is outside.
    let d5_again = rejected(event_text("d5", "10:00:20", "UK", 1.0));
    fixture.write("0003.jsonl", vec![d5_again, event("d2", 21)]);
    fixture.run(&options).await.unwrap();

    fixture.assert_exactly_once().await;
    let reasons = fixture.rows("SELECT reason FROM bronze.sales_events_rejected ORDER BY topic").await;
    let reasons: Vec<String> = reasons.iter().map(|row| text(&row[0])).collect();
    assert_eq!(reasons, ["duplicate event_id d3", "duplicate event_id d5"]);
    let ids = fixture.rows("SELECT event_id, COUNT(*) FROM bronze.sales_events GROUP BY event_id ORDER BY event_id").await;
    let ids: Vec<(String, i64)> = ids.iter().map(|row| (text(&row[0]), int(&row[1]))).collect();
    let expected: [(String, i64); 5] = [("d1", 2), ("d2", 2), ("d3", 1), ("d4", 1), ("d5", 1)].map(|(id, n)| (id.to_string(), n));
    assert_eq!(ids, expected);
}
