//! Run history: one `RunRecord` per stage of every command, appended to the
//! Delta table `gold.pipeline_runs` (its schema and the keys of its
//! `details` are in `tables`).
//!
//! The batch commands (`run`, `ingest`, `refine`, `aggregate`) record each
//! stage they run, successful or failed (with the one-line error); the stream
//! records its own runs with `stream_record` (batches, events, rejects, lag).
//! The dashboard's run history and `/metrics` read this table. Recording is
//! best effort: a run never fails because its record could not be written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::Date32Type;

use crate::error::Result;
use crate::lake::Lake;
use crate::tables::{details_json, pipeline_runs_schema, PIPELINE_RUNS};
/// What one stream run did (the `details` of its record).
pub use crate::tables::StreamRun;

/// Whether a stage succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
        }
    }
}

/// One stage of one command.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    /// Shared by every stage of one command invocation.
    pub run_id: String,
    /// `run`, `ingest`, `refine`, `aggregate`, `stream`.
    pub command: String,
    pub snapshot_date: Option<NaiveDate>,
    /// `ingest`, `refine`, `aggregate`, `stream`.
    pub stage: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status: RunStatus,
    /// Rows written (or events consumed, for the stream).
    pub rows: i64,
    /// Rows sent to quarantine (or rejected messages, for the stream).
    pub quarantined: i64,
    /// JSON text: `tables::StageDetails` or `tables::StreamRun` (`{}` for a
    /// failed stage).
    pub details: String,
    /// The one-line error of a failed stage.
    pub error: Option<String>,
}

/// A run id unique across processes: UTC time, process id and a counter.
pub fn new_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{n}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"), std::process::id())
}

/// A record of a stream run (micro-batches since `started_at`).
pub fn stream_record(run_id: &str, started_at: DateTime<Utc>, run: &StreamRun, error: Option<String>) -> RunRecord {
    RunRecord {
        run_id: run_id.to_string(),
        command: "stream".into(),
        snapshot_date: Some(started_at.date_naive()),
        stage: "stream".into(),
        started_at,
        duration_ms: (Utc::now() - started_at).num_milliseconds().max(0),
        status: if error.is_some() { RunStatus::Failed } else { RunStatus::Ok },
        rows: run.events as i64,
        quarantined: run.rejected as i64,
        details: details_json(run),
        error,
    }
}

/// Records as one Arrow batch.
pub fn to_batch(records: &[RunRecord]) -> RecordBatch {
    let text = |f: fn(&RunRecord) -> &str| StringArray::from_iter_values(records.iter().map(f));
    RecordBatch::try_new(
        pipeline_runs_schema(),
        vec![
            Arc::new(text(|r| r.run_id.as_str())),
            Arc::new(text(|r| r.command.as_str())),
            Arc::new(Date32Array::from_iter(
                records.iter().map(|r| r.snapshot_date.map(Date32Type::from_naive_date)),
            )),
            Arc::new(text(|r| r.stage.as_str())),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| r.started_at.timestamp_micros()))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.duration_ms))),
            Arc::new(text(|r| r.status.as_str())),
            Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.rows))),
            Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.quarantined))),
            Arc::new(text(|r| r.details.as_str())),
            Arc::new(StringArray::from_iter(records.iter().map(|r| r.error.as_deref()))),
        ],
    )
    .expect("columns match the schema")
}

/// Appends records to `gold.pipeline_runs` in one commit.
pub async fn append(lake: &Lake, records: &[RunRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    lake.append(PIPELINE_RUNS.layer.as_str(), PIPELINE_RUNS.table(), vec![to_batch(records)]).await?;
    Ok(())
}

/// Appends records, logging (never failing) when the lake refuses them.
pub async fn append_best_effort(lake: &Lake, records: &[RunRecord]) {
    if let Err(err) = append(lake, records).await {
        tracing::warn!("could not record the run in {PIPELINE_RUNS}: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_and_stream_records_carry_lag() {
        assert_ne!(new_run_id(), new_run_id());
        let mut run = StreamRun { batches: 3, events: 120, rejected: 2, ..Default::default() };
        run.lag.insert("ventes-temps-reel/0".into(), 5);
        let record = stream_record("r1", Utc::now(), &run, None);
        assert_eq!(record.status, RunStatus::Ok);
        assert_eq!((record.rows, record.quarantined), (120, 2));
        let details: serde_json::Value = serde_json::from_str(&record.details).unwrap();
        assert_eq!(details["lag"]["ventes-temps-reel/0"], 5);
        let batch = to_batch(&[record]);
        assert_eq!(batch.num_rows(), 1);
    }
}
