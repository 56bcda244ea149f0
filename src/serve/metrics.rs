//! `GET /metrics`: Prometheus text exposition.
//!
//! Batch figures come from the run history (`gold.pipeline_runs`): rows
//! processed, the last duration / rows / quarantined rows of each stage, runs
//! per status. Stream figures come from the live state: events/s, events,
//! rejects, batches committed, lag per partition. Table figures come from
//! the Delta logs: rows and version of every table. The audit log reports
//! the records it wrote and dropped.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::response::{text_response, ApiError};
use super::state::AppState;
use crate::error::Error;
use crate::output::json_rows;
use crate::tables::{AUDIT_QUERIES, LIVE_SALES, PIPELINE_RUNS, SALES_EVENTS_REJECTED};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn handle(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let batch = state.cached("metrics-runs", &[PIPELINE_RUNS], || run_metrics(&state)).await?;
    let mut out = String::from_utf8_lossy(&batch).into_owned();
    live_metrics(&state, &mut out);
    audit_metrics(&state, &mut out);
    table_metrics(&state, &mut out).await;
    if let Some(service) = state.service.get() {
        out.push_str(&service.metrics());
    }
    Ok(text_response(StatusCode::OK, CONTENT_TYPE, out))
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ")
}

fn number(row: &serde_json::Map<String, Value>, key: &str) -> f64 {
    row.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text<'a>(row: &'a serde_json::Map<String, Value>, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or("")
}

async fn run_metrics(state: &AppState) -> Result<Bytes, Error> {
    let mut out = String::new();
    if !state.has_table(&PIPELINE_RUNS) {
        return Ok(Bytes::new());
    }
    let totals = json_rows(&state.query(&format!(
        "SELECT stage, status, COUNT(*) AS runs, SUM(\"rows\") AS total_rows, SUM(quarantined) AS total_quarantined
         FROM {PIPELINE_RUNS} GROUP BY stage, status ORDER BY stage, status")).await?)?;
    family(&mut out, "medallion_runs_total", "counter", &format!("Stage runs recorded in {PIPELINE_RUNS}, by status."));
    for row in &totals {
        let _ = writeln!(out, "medallion_runs_total{{stage=\"{}\",status=\"{}\"}} {}", label(text(row, "stage")), label(text(row, "status")), number(row, "runs"));
    }
    family(&mut out, "medallion_rows_processed_total", "counter", "Rows written by every recorded stage run (events consumed, for the stream).");
    for row in totals.iter().filter(|r| text(r, "status") == "ok") {
        let _ = writeln!(out, "medallion_rows_processed_total{{stage=\"{}\"}} {}", label(text(row, "stage")), number(row, "total_rows"));
    }
    family(&mut out, "medallion_quarantined_rows_total", "counter", "Rows quarantined (rejected messages, for the stream) over every run.");
    for row in totals.iter().filter(|r| text(r, "status") == "ok") {
        let _ = writeln!(out, "medallion_quarantined_rows_total{{stage=\"{}\"}} {}", label(text(row, "stage")), number(row, "total_quarantined"));
    }
    let last = json_rows(&state.query(&format!(
        "SELECT stage, duration_ms, \"rows\", quarantined, status FROM (
             SELECT *, ROW_NUMBER() OVER (PARTITION BY stage ORDER BY started_at DESC) AS position FROM {PIPELINE_RUNS}
         ) WHERE position = 1 ORDER BY stage")).await?)?;
    family(&mut out, "medallion_stage_duration_seconds", "gauge", "Duration of the last run of each stage.");
    for row in &last {
        let _ = writeln!(out, "medallion_stage_duration_seconds{{stage=\"{}\"}} {}", label(text(row, "stage")), number(row, "duration_ms") / 1000.0);
    }
    family(&mut out, "medallion_stage_rows", "gauge", "Rows written by the last run of each stage.");
    for row in &last {
        let _ = writeln!(out, "medallion_stage_rows{{stage=\"{}\"}} {}", label(text(row, "stage")), number(row, "rows"));
    }
    family(&mut out, "medallion_stage_quarantined_rows", "gauge", "Rows quarantined by the last run of each stage.");
    for row in &last {
        let _ = writeln!(out, "medallion_stage_quarantined_rows{{stage=\"{}\"}} {}", label(text(row, "stage")), number(row, "quarantined"));
    }
    family(&mut out, "medallion_stage_last_run_ok", "gauge", "1 when the last run of the stage succeeded, 0 when it failed.");
    for row in &last {
        let ok = if text(row, "status") == "ok" { 1 } else { 0 };
        let _ = writeln!(out, "medallion_stage_last_run_ok{{stage=\"{}\"}} {ok}", label(text(row, "stage")));
    }
    Ok(Bytes::from(out))
}

fn live_metrics(state: &AppState, out: &mut String) {
    let live = state.live.current();
    family(out, "medallion_stream_events_per_second", "gauge", "Valid events per second over the last micro-batches.");
    let _ = writeln!(out, "medallion_stream_events_per_second {}", live.events_per_second);
    family(out, "medallion_stream_events_total", "counter", "Valid events consumed by the stream.");
    let _ = writeln!(out, "medallion_stream_events_total {}", live.events);
    family(out, "medallion_stream_rejected_total", "counter", &format!("Messages rejected to {SALES_EVENTS_REJECTED}."));
    let _ = writeln!(out, "medallion_stream_rejected_total {}", live.rejected);
    family(out, "medallion_stream_batches_committed_total", "counter", "Micro-batches committed.");
    let _ = writeln!(out, "medallion_stream_batches_committed_total {}", live.batches_committed);
    family(out, "medallion_stream_lag", "gauge", "Messages not yet consumed, per source partition.");
    for (partition, lag) in &live.lag {
        let _ = writeln!(out, "medallion_stream_lag{{partition=\"{}\"}} {lag}", label(partition));
    }
    family(out, "medallion_live_revenue", "gauge", &format!("Live revenue per country ({LIVE_SALES})."));
    for country in &live.countries {
        let _ = writeln!(out, "medallion_live_revenue{{country=\"{}\"}} {}", label(&country.pays), country.total_ventes_live);
    }
}

fn audit_metrics(state: &AppState, out: &mut String) {
    if !state.audit.is_enabled() {
        return;
    }
    let counts = state.audit.counts();
    family(out, "medallion_audit_records_written_total", "counter", &format!("Query records appended to {AUDIT_QUERIES}."));
    let _ = writeln!(out, "medallion_audit_records_written_total {}", counts.written);
    family(out, "medallion_audit_records_dropped_total", "counter", "Query records lost: the writer was behind (channel full) or appends kept failing.");
    let _ = writeln!(out, "medallion_audit_records_dropped_total {}", counts.dropped);
    family(out, "medallion_audit_append_failures_total", "counter", "Appends of the audit log that failed (their records are retried).");
    let _ = writeln!(out, "medallion_audit_append_failures_total {}", counts.failed_appends);
}

async fn table_metrics(state: &AppState, out: &mut String) {
    let catalog = state.catalog().await;
    family(out, "medallion_table_rows", "gauge", "Rows of each table (from the Delta log statistics).");
    for info in catalog.iter().filter(|i| i.rows.is_some()) {
        let _ = writeln!(out, "medallion_table_rows{{layer=\"{}\",table=\"{}\"}} {}", label(info.layer.as_str()), label(&info.table), info.rows.unwrap_or(0));
    }
    family(out, "medallion_table_version", "gauge", "Delta version of each table.");
    for info in catalog.iter().filter(|i| i.version.is_some()) {
        let _ = writeln!(out, "medallion_table_version{{layer=\"{}\",table=\"{}\"}} {}", label(info.layer.as_str()), label(&info.table), info.version.unwrap_or(0));
    }
}
