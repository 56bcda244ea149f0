//! The table contracts, in one place: the names of the tables code relies
//! on, the Arrow schemas of the tables Rust writes itself
//! (`gold.pipeline_runs`, the live tables) with their writers and typed
//! readers, the keys of `gold.pipeline_runs.details`, and the queries of the
//! dashboard API.
//!
//! Tables built by SQL models take their shape from their model file; the
//! streaming bronze tables take theirs from `stream::sink`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::lake::{Layer, TableName};
use crate::live::CountryTotals;

// ------------------------------------------------------------------ names --

/// `bronze.<table>`: the raw copy of one source table.
pub fn bronze(table: &str) -> TableName {
    TableName::owned(Layer::Bronze, table)
}

/// Every valid streamed event once.
pub const SALES_EVENTS: TableName = TableName::new(Layer::Bronze, "sales_events");
/// Invalid or duplicate streamed messages, with the raw payload.
pub const SALES_EVENTS_REJECTED: TableName = TableName::new(Layer::Bronze, "sales_events_rejected");
/// One row per order line (the silver model).
pub const SALES_MASTER: TableName = TableName::new(Layer::Silver, "sales_master");
pub const KPI_CATEGORY_SALES: TableName = TableName::new(Layer::Gold, "kpi_category_sales");
pub const KPI_COUNTRY_SALES: TableName = TableName::new(Layer::Gold, "kpi_country_sales");
pub const KPI_REVENUE: TableName = TableName::new(Layer::Gold, "kpi_revenue");
pub const KPI_TOP_COUNTRIES: TableName = TableName::new(Layer::Gold, "kpi_top_countries");
pub const RFM_CUSTOMERS: TableName = TableName::new(Layer::Gold, "rfm_customers");
pub const RFM_SEGMENTS: TableName = TableName::new(Layer::Gold, "rfm_segments");
/// Run history: one row per stage of every command.
pub const PIPELINE_RUNS: TableName = TableName::new(Layer::Gold, "pipeline_runs");
/// The persisted copy of `live.sales_by_country`.
pub const LIVE_SALES_BY_COUNTRY: TableName = TableName::new(Layer::Gold, "live_sales_by_country");
/// 1-minute tumbling windows per country.
pub const SALES_BY_COUNTRY_MINUTE: TableName = TableName::new(Layer::Gold, "sales_by_country_minute");
/// The stream's running totals per country, in memory.
pub const LIVE_SALES: TableName = TableName::new(Layer::Live, "sales_by_country");
/// Batch revenue per country ∪ live totals (a view).
pub const SERVING_SALES_BY_COUNTRY: TableName = TableName::new(Layer::Serving, "sales_by_country");
/// Column statistics of each table's newest snapshot (see `profiles`).
pub const TABLE_PROFILES: TableName = TableName::new(Layer::Gold, "table_profiles");
/// Every query on every endpoint and every failed login (see `audit`);
/// admins only.
pub const AUDIT_QUERIES: TableName = TableName::new(Layer::Audit, "queries");
/// Country spellings → standard names, from configuration.
pub const COUNTRY_MAP: TableName = TableName::new(Layer::Ref, "country_map");

// ------------------------------------------------------- gold.pipeline_runs --

/// The schema of `gold.pipeline_runs` (written by `runs::to_batch`).
pub fn pipeline_runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("command", DataType::Utf8, false),
        Field::new("snapshot_date", DataType::Date32, true),
        Field::new("stage", DataType::Utf8, false),
        Field::new("started_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("quarantined", DataType::Int64, false),
        Field::new("details", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// `details` of a batch stage (`ingest`, `refine`, `aggregate`), as JSON.
/// Fields are in the order they are written.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct StageDetails {
    /// Attempts the stage took (retries after transient failures).
    pub attempts: u32,
    /// Failures per expectation (refine).
    pub failures_by_rule: BTreeMap<String, u64>,
    /// Bytes read from the source (ingest).
    pub source_bytes: u64,
    /// Rows written per table (`layer.table`).
    pub tables: BTreeMap<String, u64>,
    /// Why the stage ran: by hand, or a schedule of `medallion up`.
    pub trigger: RunTrigger,
}

/// Why a command ran, kept in the `details` of each of its stages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunTrigger {
    /// The `[[up.schedule]]` name; `None` for a run started by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The time the schedule fired for (a catch-up run has a past one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<chrono::DateTime<chrono::Utc>>,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
}

impl Default for RunTrigger {
    fn default() -> Self {
        RunTrigger::manual()
    }
}

impl RunTrigger {
    /// A run started by hand (`medallion run`, `ingest`, …).
    pub fn manual() -> RunTrigger {
        RunTrigger { schedule: None, scheduled_for: None, attempt: 1 }
    }
}

/// `details` of a stream run, as JSON: what one run of the stream did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct StreamRun {
    pub batches: u64,
    pub events: u64,
    pub rejected: u64,
    pub events_per_second: f64,
    /// Messages not yet consumed, per source partition.
    pub lag: BTreeMap<String, i64>,
}

/// The JSON text stored in `details` (`{}` if it cannot be encoded).
pub fn details_json(details: &impl serde::Serialize) -> String {
    serde_json::to_string(details).unwrap_or_else(|_| "{}".into())
}

/// The details of the stream's latest run recorded in `gold.pipeline_runs`,
/// if any.
pub async fn read_last_stream_run(ctx: &SessionContext) -> Result<Option<StreamRun>> {
    let sql = format!("SELECT details FROM {PIPELINE_RUNS} WHERE command = 'stream' ORDER BY started_at DESC LIMIT 1");
    let batches = ctx.sql(&sql).await?.collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let details = conform(batch.column(0), &DataType::Utf8, &PIPELINE_RUNS)?;
    let text = details.as_string::<i32>();
    if text.is_null(0) {
        return Ok(None);
    }
    serde_json::from_str(text.value(0)).map(Some).map_err(|e| Error::lake(&PIPELINE_RUNS, format!("details of the last stream run: {e}")))
}

/// The `details` of every stage a schedule of `medallion up` ran (stream
/// runs left out), newest first.
pub async fn read_scheduled_run_details(ctx: &SessionContext) -> Result<Vec<String>> {
    if !ctx.table_exist(PIPELINE_RUNS.to_string().as_str()).unwrap_or(false) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT details FROM {PIPELINE_RUNS} WHERE command <> 'stream' AND details LIKE '%\"schedule\":%' ORDER BY started_at DESC"
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut details = Vec::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let column = conform(batch.column(0), &DataType::Utf8, &PIPELINE_RUNS)?;
        let text = column.as_string::<i32>();
        details.extend((0..text.len()).filter(|i| !text.is_null(*i)).map(|i| text.value(i).to_string()));
    }
    Ok(details)
}

// ------------------------------------------------------ gold.table_profiles --

/// The schema of `gold.table_profiles` (written by `profiles::store`): one
/// row per profiled table × column, partitioned by `snapshot_date` (the
/// date of the profile run).
pub fn table_profiles_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("snapshot_date", DataType::Date32, false),
        Field::new("table_name", DataType::Utf8, false),
        // The partition of the table profiled (its newest), NULL when unpartitioned.
        Field::new("table_snapshot", DataType::Utf8, true),
        Field::new("table_version", DataType::Int64, true),
        Field::new("ordinal", DataType::Int64, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("data_type", DataType::Utf8, false),
        Field::new("row_count", DataType::Int64, false),
        Field::new("null_count", DataType::Int64, false),
        Field::new("distinct_count", DataType::Int64, false),
        // `exact` (COUNT DISTINCT) or `approximate` (approx_distinct, HyperLogLog).
        Field::new("distinct_method", DataType::Utf8, false),
        Field::new("min_value", DataType::Utf8, true),
        Field::new("max_value", DataType::Utf8, true),
        Field::new("mean", DataType::Float64, true),
        Field::new("stddev", DataType::Float64, true),
        // JSON: [{"value": "...", "count": n}, ...], most frequent first.
        Field::new("top_values", DataType::Utf8, false),
        Field::new("min_length", DataType::Int64, true),
        Field::new("max_length", DataType::Int64, true),
        Field::new("profiled_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]))
}

// ------------------------------------------------------- live sales tables --

/// The schema of `live.sales_by_country` and of its persisted copy
/// `gold.live_sales_by_country`.
pub fn sales_by_country_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pays", DataType::Utf8, false),
        Field::new("total_ventes_live", DataType::Float64, false),
        Field::new("nb_transactions", DataType::Int64, false),
        Field::new("last_event_time", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]))
}

/// The live totals as one Arrow batch of `sales_by_country_schema`.
pub fn sales_by_country_batch(countries: &[CountryTotals]) -> RecordBatch {
    RecordBatch::try_new(
        sales_by_country_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(countries.iter().map(|c| c.pays.as_str()))),
            Arc::new(Float64Array::from_iter_values(countries.iter().map(|c| c.total_ventes_live))),
            Arc::new(Int64Array::from_iter_values(countries.iter().map(|c| c.nb_transactions))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(countries.iter().map(|c| c.last_event_time.timestamp_micros()))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .expect("columns match the schema")
}

/// Reads a table of `sales_by_country_schema` (the persisted copy, say)
/// back into totals, sorted by country. Rows without a country are skipped.
pub async fn read_sales_by_country(ctx: &SessionContext, table: &TableName) -> Result<Vec<CountryTotals>> {
    let schema = sales_by_country_schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY pays", columns.join(", "));
    let batches = ctx.sql(&sql).await?.collect().await?;
    sales_by_country_rows(&batches, table)
}

/// Rows of `sales_by_country_schema` as totals. Each column is found by its
/// contract name and read as its contract type (a scan may hand strings back
/// as views, or timestamps in another unit).
fn sales_by_country_rows(batches: &[RecordBatch], table: &TableName) -> Result<Vec<CountryTotals>> {
    let schema = sales_by_country_schema();
    let mut out = Vec::new();
    for batch in batches {
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column = batch
                .column_by_name(field.name())
                .ok_or_else(|| Error::lake(table, format!("column {} is missing", field.name())))?;
            columns.push(conform(column, field.data_type(), table)?);
        }
        let pays = columns[0].as_string::<i32>();
        let total = columns[1].as_primitive::<Float64Type>();
        let count = columns[2].as_primitive::<Int64Type>();
        let at = columns[3].as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            if pays.is_null(i) {
                continue;
            }
            out.push(CountryTotals {
                pays: pays.value(i).to_string(),
                total_ventes_live: if total.is_null(i) { 0.0 } else { total.value(i) },
                nb_transactions: if count.is_null(i) { 0 } else { count.value(i) },
                last_event_time: Utc.timestamp_micros(at.value(i)).single().unwrap_or_else(Utc::now),
            });
        }
    }
    Ok(out)
}

/// `column` as `target` (unchanged when it already is).
fn conform(column: &ArrayRef, target: &DataType, table: &TableName) -> Result<ArrayRef> {
    if column.data_type() == target {
        return Ok(column.clone());
    }
    cast(column, target).map_err(|e| Error::lake(table, format!("a column is not {target}: {e}")))
}

// ------------------------------------------------------- dashboard queries --

/// The queries behind the dashboard API, each on the latest snapshot of its
/// gold table.
pub mod dashboard {
    use super::*;

    /// The tables `/api/kpis` reads.
    pub const KPI_TABLES: [TableName; 4] = [KPI_REVENUE, KPI_TOP_COUNTRIES, KPI_CATEGORY_SALES, RFM_SEGMENTS];
    /// The tables `/api/rfm` reads.
    pub const RFM_TABLES: [TableName; 2] = [RFM_CUSTOMERS, RFM_SEGMENTS];

    /// `snapshot_date = <latest of that table>`.
    fn latest(table: &TableName) -> String {
        format!("snapshot_date = (SELECT MAX(snapshot_date) FROM {table})")
    }

    /// One row: revenue, orders, customers, average order value.
    pub fn revenue() -> String {
        format!(
            "SELECT CAST(snapshot_date AS VARCHAR) AS snapshot_date, total_revenue, orders, customers, avg_order_value
         FROM {KPI_REVENUE} WHERE {}",
            latest(&KPI_REVENUE)
        )
    }

    /// The top countries by rank.
    pub fn top_countries() -> String {
        format!(
            "SELECT \"rank\", country, revenue FROM {KPI_TOP_COUNTRIES} WHERE {} ORDER BY \"rank\"",
            latest(&KPI_TOP_COUNTRIES)
        )
    }

    /// Revenue, quantity and orders per category, highest revenue first.
    pub fn category_sales() -> String {
        format!(
            "SELECT category_name, revenue, quantity, orders FROM {KPI_CATEGORY_SALES} WHERE {} ORDER BY revenue DESC",
            latest(&KPI_CATEGORY_SALES)
        )
    }

    /// The RFM segments, highest revenue first.
    pub fn segments() -> String {
        format!(
            "SELECT segment, customers, revenue, share_of_revenue FROM {RFM_SEGMENTS} WHERE {} ORDER BY revenue DESC",
            latest(&RFM_SEGMENTS)
        )
    }

    /// Every customer's RFM scores, highest monetary value first.
    pub fn rfm_customers() -> String {
        format!(
            "SELECT CAST(snapshot_date AS VARCHAR) AS snapshot_date, customer_id, company_name, country, recency_days,
                        frequency, monetary, r_score, f_score, m_score, segment
                 FROM {RFM_CUSTOMERS} WHERE {} ORDER BY monetary DESC",
            latest(&RFM_CUSTOMERS)
        )
    }

    /// `serving.sales_by_country` with one row per country: batch, live and total revenue.
    pub fn combined_by_country() -> String {
        format!(
            "SELECT country,
                COALESCE(SUM(CASE WHEN source = 'batch' THEN revenue END), 0) AS batch_revenue,
                COALESCE(SUM(CASE WHEN source = 'live' THEN revenue END), 0)  AS live_revenue,
                COALESCE(SUM(revenue), 0)                                       AS total_revenue
         FROM {SERVING_SALES_BY_COUNTRY} GROUP BY country ORDER BY total_revenue DESC, country"
        )
    }

    /// The newest `limit` run records.
    pub fn runs(limit: usize) -> String {
        format!(
            "SELECT run_id, command, CAST(snapshot_date AS VARCHAR) AS snapshot_date, stage, started_at, duration_ms,
                status, \"rows\", quarantined, details, error
         FROM {PIPELINE_RUNS} ORDER BY started_at DESC LIMIT {limit}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(pays: &str, total: f64, count: i64, micros: i64) -> CountryTotals {
        CountryTotals {
            pays: pays.into(),
            total_ventes_live: total,
            nb_transactions: count,
            last_event_time: Utc.timestamp_micros(micros).unwrap(),
        }
    }

    #[tokio::test]
    async fn live_totals_written_by_the_contract_read_back_equal() {
        let written = vec![totals("France", 54.5, 2, 1_764_000_000_000_000), totals("Spain", 10.0, 1, 1_764_000_060_000_000)];
        let ctx = crate::lake::catalog::new_session();
        let table = datafusion::datasource::MemTable::try_new(sales_by_country_schema(), vec![vec![sales_by_country_batch(&written)]])
            .unwrap();
        ctx.register_table(LIVE_SALES_BY_COUNTRY.to_string(), Arc::new(table)).unwrap();
        assert_eq!(read_sales_by_country(&ctx, &LIVE_SALES_BY_COUNTRY).await.unwrap(), written);
    }

    #[test]
    fn string_views_are_read_as_strings_and_a_missing_column_is_an_error() {
        let batch = sales_by_country_batch(&[totals("France", 1.0, 1, 0)]);
        let mut columns = batch.columns().to_vec();
        columns[0] = cast(&columns[0], &DataType::Utf8View).unwrap();
        let fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), false))
            .collect();
        let viewed = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        assert_eq!(sales_by_country_rows(&[viewed], &LIVE_SALES).unwrap()[0].pays, "France");
        let without_count = batch.project(&[0, 1, 3]).unwrap();
        let err = sales_by_country_rows(&[without_count], &LIVE_SALES).unwrap_err().to_string();
        assert!(err.contains("nb_transactions"), "{err}");
    }

    #[test]
    fn stage_details_keep_the_key_order_they_always_had() {
        let details = StageDetails {
            attempts: 1,
            failures_by_rule: BTreeMap::from([("positive_quantity".to_string(), 2)]),
            source_bytes: 10,
            tables: BTreeMap::from([("bronze.orders".to_string(), 830)]),
            trigger: RunTrigger::manual(),
        };
        // What `json!({"tables", "failures_by_rule", "attempts", "source_bytes"})` printed (keys sorted),
        // then the trigger.
        assert_eq!(
            details_json(&details),
            r#"{"attempts":1,"failures_by_rule":{"positive_quantity":2},"source_bytes":10,"tables":{"bronze.orders":830},"trigger":{"attempt":1}}"#
        );
        let scheduled = RunTrigger { schedule: Some("nightly".into()), scheduled_for: None, attempt: 2 };
        let read: StageDetails =
            serde_json::from_str(&details_json(&StageDetails { trigger: scheduled.clone(), ..details })).unwrap();
        assert_eq!(read.trigger, scheduled);
        // Records written before triggers existed read as manual runs.
        assert_eq!(serde_json::from_str::<StageDetails>(r#"{"attempts":1}"#).unwrap().trigger, RunTrigger::manual());
        let run = StreamRun { batches: 2, lag: BTreeMap::from([("t/0".to_string(), 5)]), ..Default::default() };
        assert_eq!(serde_json::from_str::<StreamRun>(&details_json(&run)).unwrap(), run);
        assert_eq!(serde_json::from_str::<StreamRun>("{}").unwrap(), StreamRun::default());
    }
}
