//! Data profiles: per-column statistics of a table's newest snapshot, kept
//! in `gold.table_profiles` (the role data-profiling reports play).
//!
//! For each column: rows, nulls, distinct values (exact below
//! `EXACT_DISTINCT_BELOW` rows, else DataFusion's `approx_distinct`, and the
//! row says which), min/max as text, mean and standard deviation (sample)
//! of numbers, min/max length of strings and the five most frequent values
//! of columns with at most `TOP_VALUES_MAX_DISTINCT` distinct values.
//! A table costs two scans of its newest partition, whatever its width: one
//! aggregate query computes every column's statistics, one `UNION ALL`
//! query every column's top values (plus two tiny queries for the newest
//! partition and its row count).
//!
//! `medallion profile` profiles the tables named (default: silver and gold);
//! `run`, `refine` and `aggregate` profile the tables they wrote unless
//! `[profile] after_run = false`. Each profile run replaces the partition of
//! its date in one commit, keeping the rows of the tables it did not profile.
//!
//! A column the PII policy protects (`[pii]`, see `lake::pii`) keeps its
//! counts and lengths but no value: its min, max and top values are left
//! empty, since `gold.table_profiles` is readable by every role.

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};

use crate::config::{PiiConfig, Role};
use crate::error::{Error, Result};
use crate::lake::pii::Protection;
use crate::lake::session::SessionBuilder;
use crate::lake::{Lake, Layer, PartitionWrite, Rows, TableName};
use crate::output;
use crate::tables::{table_profiles_schema, TABLE_PROFILES};

/// Below this many rows distinct values are counted exactly; from it on,
/// estimated with HyperLogLog (`approx_distinct`).
pub const EXACT_DISTINCT_BELOW: i64 = 1_000_000;

/// Top values kept per column.
pub const TOP_VALUES: usize = 5;

/// Top values are looked for only in columns with at most this many
/// distinct values. Past it (identifiers, amounts, timestamps) the most
/// frequent values are ones seen a handful of times, and finding them
/// costs a grouping with one group per distinct value: at scale 1000 that
/// was most of a run's profiling time.
pub const TOP_VALUES_MAX_DISTINCT: i64 = 10_000;

/// The statistics of one column.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColumnProfile {
    pub ordinal: i64,
    pub column_name: String,
    pub data_type: String,
    pub row_count: i64,
    pub null_count: i64,
    pub distinct_count: i64,
    /// `exact` or `approximate`.
    pub distinct_method: String,
    pub min_value: Option<String>,
    pub max_value: Option<String>,
    pub mean: Option<f64>,
    pub stddev: Option<f64>,
    /// (value as text, rows), most frequent first, ties by value.
    pub top_values: Vec<(String, i64)>,
    pub min_length: Option<i64>,
    pub max_length: Option<i64>,
}

/// The profile of one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableProfile {
    pub table: String,
    /// The partition profiled (the newest), when the table has one.
    pub snapshot: Option<NaiveDate>,
    pub version: Option<i64>,
    pub columns: Vec<ColumnProfile>,
}

/// The date partition column of a table of this lake, if it has one.
fn partition_column(schema: &datafusion::arrow::datatypes::Schema) -> Option<&'static str> {
    [crate::models::SNAPSHOT_COLUMN, crate::bronze::PARTITION_COLUMN]
        .into_iter()
        .find(|name| schema.field_with_name(name).is_ok_and(|f| f.data_type() == &DataType::Date32))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Whether min/max and grouping make sense for the type.
fn is_comparable(t: &DataType) -> bool {
    t.is_primitive() || is_string(t) || matches!(t, DataType::Boolean)
}

/// Rows of `sql` as JSON objects.
async fn json(ctx: &SessionContext, table: &str, sql: &str) -> Result<Vec<Map<String, Value>>> {
    let frame = ctx.sql(sql).await.map_err(|e| Error::lake(table, e))?;
    output::json_rows(&frame.collect().await.map_err(|e| Error::lake(table, e))?)
}

fn int(row: &Map<String, Value>, key: &str) -> Option<i64> {
    row.get(key).and_then(Value::as_i64)
}

fn float(row: &Map<String, Value>, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

fn text(row: &Map<String, Value>, key: &str) -> Option<String> {
    row.get(key).and_then(|v| v.as_str().map(str::to_string))
}

/// The statistics query of one relation (`base`) over `columns`: one row,
/// named `c<i>_<stat>` per column.
pub fn stats_sql(base: &str, columns: &[(String, DataType)], exact: bool) -> String {
    let mut select = vec!["COUNT(*) AS row_count".to_string()];
    for (i, (name, data_type)) in columns.iter().enumerate() {
        let q = quote(name);
        select.push(format!("COUNT({q}) AS c{i}_values"));
        if exact {
            select.push(format!("COUNT(DISTINCT {q}) AS c{i}_distinct"));
        } else if is_float(data_type) {
            // HyperLogLog takes no floats: their bits are as distinct (and
            // cheaper than their text, which cost a third of a table's stats).
            select.push(format!("CAST(approx_distinct({FLOAT_BITS}(CAST({q} AS DOUBLE))) AS BIGINT) AS c{i}_distinct"));
        } else {
            select.push(format!("CAST(approx_distinct({q}) AS BIGINT) AS c{i}_distinct"));
        }
        if is_comparable(data_type) {
            select.push(format!("CAST(MIN({q}) AS VARCHAR) AS c{i}_min"));
            select.push(format!("CAST(MAX({q}) AS VARCHAR) AS c{i}_max"));
        }
        if data_type.is_numeric() {
            select.push(format!("AVG(CAST({q} AS DOUBLE)) AS c{i}_mean"));
            select.push(format!("STDDEV(CAST({q} AS DOUBLE)) AS c{i}_stddev"));
        }
        if is_string(data_type) {
            select.push(format!("CAST(MIN(character_length({q})) AS BIGINT) AS c{i}_min_length"));
            select.push(format!("CAST(MAX(character_length({q})) AS BIGINT) AS c{i}_max_length"));
        }
    }
    format!("SELECT {} FROM {base}", select.join(", "))
}

/// The top-values query: the `TOP_VALUES` most frequent non-null values of
/// every comparable column whose ordinal `wanted` accepts, as rows
/// (ordinal, value, n, rank); ties are ranked by the value in its own
/// type's order.
pub fn top_values_sql(base: &str, columns: &[(String, DataType)], wanted: impl Fn(usize) -> bool) -> Option<String> {
    let parts: Vec<String> = columns
        .iter()
        .enumerate()
        .filter(|(i, (_, t))| is_comparable(t) && wanted(*i))
        .map(|(i, (name, _))| {
            let q = quote(name);
            format!(
                "SELECT ordinal, value, n, r FROM (SELECT CAST({i} AS BIGINT) AS ordinal, CAST(k AS VARCHAR) AS value, n, \
                 CAST(ROW_NUMBER() OVER (ORDER BY n DESC, k) AS BIGINT) AS r \
                 FROM (SELECT {q} AS k, COUNT(*) AS n FROM {base} WHERE {q} IS NOT NULL GROUP BY {q}) AS groups) AS ranked \
                 WHERE r <= {TOP_VALUES}"
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" UNION ALL "))
}

/// The name of `FloatBits` in a profiling session.
const FLOAT_BITS: &str = "medallion_float_bits";

/// A float's bits as a BIGINT, one value per distinct float (-0 counted as
/// 0, every NaN as one): what HyperLogLog can count.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FloatBits {
    signature: Signature,
}

impl ScalarUDFImpl for FloatBits {
    fn name(&self) -> &str {
        FLOAT_BITS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let floats = arrays[0]
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| datafusion::error::DataFusionError::Internal(format!("{FLOAT_BITS} takes DOUBLE")))?;
        let bits: Int64Array = floats.unary(|x| float_bits(x) as i64);
        Ok(ColumnarValue::Array(Arc::new(bits) as ArrayRef))
    }
}

/// Makes `FloatBits` callable in `ctx` (what `stats_sql` needs).
pub fn register_float_bits(ctx: &SessionContext) {
    let signature = Signature::exact(vec![DataType::Float64], Volatility::Immutable);
    ctx.register_udf(ScalarUDF::new_from_impl(FloatBits { signature }));
}

fn float_bits(x: f64) -> u64 {
    if x == 0.0 {
        0
    } else if x.is_nan() {
        f64::NAN.to_bits()
    } else {
        x.to_bits()
    }
}

/// Profiles the newest partition of `table`, registered in `ctx`.
pub async fn profile_table(ctx: &SessionContext, table: &TableName, version: Option<i64>) -> Result<TableProfile> {
    register_float_bits(ctx);
    let name = table.to_string();
    let frame = ctx.table(name.as_str()).await.map_err(|e| Error::lake(&name, e))?;
    let schema = frame.schema().as_arrow().clone();
    let partition = partition_column(&schema);
    let mut snapshot = None;
    let base = match partition {
        Some(column) => {
            let rows = json(ctx, &name, &format!("SELECT CAST(MAX({}) AS VARCHAR) AS newest FROM {name}", quote(column))).await?;
            snapshot = rows.first().and_then(|r| text(r, "newest")).and_then(|d| d.parse::<NaiveDate>().ok());
            match snapshot {
                Some(date) => format!("(SELECT * FROM {name} WHERE {} = DATE '{date}') AS base", quote(column)),
                None => format!("{name} AS base"),
            }
        }
        None => format!("{name} AS base"),
    };
    let columns: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .filter(|f| Some(f.name().as_str()) != partition)
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let counted = json(ctx, &name, &format!("SELECT COUNT(*) AS n FROM {base}")).await?;
    let rows = counted.first().and_then(|r| int(r, "n")).unwrap_or(0);
    let exact = rows < EXACT_DISTINCT_BELOW;
    let stats = json(ctx, &name, &stats_sql(&base, &columns, exact)).await?;
    let stats = stats.into_iter().next().unwrap_or_default();
    let mut tops: Vec<Vec<(String, i64)>> = vec![Vec::new(); columns.len()];
    let few_distinct = |i: usize| int(&stats, &format!("c{i}_distinct")).is_some_and(|n| n <= TOP_VALUES_MAX_DISTINCT);
    if let Some(sql) = top_values_sql(&base, &columns, few_distinct) {
        let mut found: Vec<(usize, i64, String, i64)> = json(ctx, &name, &sql)
            .await?
            .iter()
            .filter_map(|r| Some((int(r, "ordinal")? as usize, int(r, "r")?, text(r, "value")?, int(r, "n")?)))
            .collect();
        found.sort_by_key(|(ordinal, rank, _, _)| (*ordinal, *rank));
        for (ordinal, _, value, n) in found {
            if let Some(top) = tops.get_mut(ordinal) {
                top.push((value, n));
            }
        }
    }
    let columns = columns
        .iter()
        .enumerate()
        .zip(tops)
        .map(|((i, (column, data_type)), top_values)| {
            let values = int(&stats, &format!("c{i}_values")).unwrap_or(0);
            ColumnProfile {
                ordinal: i as i64,
                column_name: column.clone(),
                data_type: data_type.to_string(),
                row_count: rows,
                null_count: rows - values,
                distinct_count: int(&stats, &format!("c{i}_distinct")).unwrap_or(0),
                distinct_method: if exact { "exact" } else { "approximate" }.to_string(),
                min_value: text(&stats, &format!("c{i}_min")),
                max_value: text(&stats, &format!("c{i}_max")),
                mean: float(&stats, &format!("c{i}_mean")),
                stddev: float(&stats, &format!("c{i}_stddev")),
                top_values,
                min_length: int(&stats, &format!("c{i}_min_length")),
                max_length: int(&stats, &format!("c{i}_max_length")),
            }
        })
        .collect();
    Ok(TableProfile { table: name, snapshot, version, columns })
}

/// The tables `medallion profile` looks at unless named: every silver and
/// gold table (bronze too with `all`), `gold.table_profiles` left out.
pub async fn default_tables(lake: &Lake, all: bool) -> Result<Vec<TableName>> {
    Ok(lake
        .every_table()
        .await?
        .into_iter()
        .filter(|t| (all || t.layer != Layer::Bronze) && *t != TABLE_PROFILES)
        .collect())
}

/// Profiles `tables` and stores the profiles under `date` in
/// `gold.table_profiles`, without the values of the columns `policy`
/// protects; returns them.
pub async fn profile_and_store(lake: &Lake, tables: &[TableName], date: NaiveDate, policy: &PiiConfig) -> Result<Vec<TableProfile>> {
    let protection = Protection::for_role(Role::Reader, policy);
    let session = SessionBuilder::new(lake).only(tables).build().await?;
    let mut profiles = Vec::new();
    for table in tables {
        let Some((_, delta)) = session.tables.iter().find(|(name, _)| name == table) else {
            return Err(Error::Config(format!("{table} does not exist: `medallion status` lists the tables")));
        };
        let mut profile = profile_table(&session.ctx, table, delta.version().map(|v| v as i64)).await?;
        if let Some(protection) = &protection {
            withhold_protected_values(&mut profile, table, protection);
        }
        profiles.push(profile);
    }
    store(lake, date, &profiles).await?;
    Ok(profiles)
}

/// Empties min, max and top values of the protected columns: a profile
/// must not show personal data to roles that see it masked.
fn withhold_protected_values(profile: &mut TableProfile, table: &TableName, protection: &Protection) {
    for column in profile.columns.iter_mut().filter(|c| protection.covers(table, &c.column_name)) {
        column.min_value = None;
        column.max_value = None;
        column.top_values.clear();
    }
}

/// Profiles the tables a run wrote, with a warning (never an error) when
/// it cannot; nothing when `[profile] after_run = false`.
pub async fn after_run(config: &crate::config::Config, lake: &Lake, written: &[String]) {
    if !config.profile.after_run {
        return;
    }
    let mut tables: Vec<TableName> = Vec::new();
    for name in written {
        let Some((layer, table)) = name.split_once('.') else { continue };
        let Ok(layer) = layer.parse::<Layer>() else { continue };
        let table = TableName::owned(layer, table);
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    // A quarantine table a run left empty may not exist: profile what does.
    let existing = match lake.every_table().await {
        Ok(every) => every,
        Err(err) => {
            tracing::warn!("no profile after the run: {err}");
            return;
        }
    };
    tables.retain(|t| existing.contains(t));
    if tables.is_empty() {
        return;
    }
    if let Err(err) = profile_and_store(lake, &tables, config.date, &config.pii).await {
        tracing::warn!("no profile after the run ({} left unchanged): {err}", TABLE_PROFILES);
    }
}

/// Profiles as rows of `table_profiles_schema`.
pub fn to_batch(date: NaiveDate, profiles: &[TableProfile]) -> Result<RecordBatch> {
    let rows: Vec<(&TableProfile, &ColumnProfile)> =
        profiles.iter().flat_map(|p| p.columns.iter().map(move |c| (p, c))).collect();
    let now = Utc::now().timestamp_micros();
    let texts = |f: &dyn Fn(&TableProfile, &ColumnProfile) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(|(p, c)| f(p, c))))
    };
    let ints = |f: &dyn Fn(&TableProfile, &ColumnProfile) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(rows.iter().map(|(p, c)| f(p, c))))
    };
    let floats = |f: &dyn Fn(&ColumnProfile) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(|(_, c)| f(c).filter(|x| x.is_finite()))))
    };
    let top = |c: &ColumnProfile| {
        let values: Vec<Value> =
            c.top_values.iter().map(|(value, count)| serde_json::json!({ "value": value, "count": count })).collect();
        Value::Array(values).to_string()
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Date32Array::from(vec![Date32Type::from_naive_date(date); rows.len()])),
        texts(&|p, _| Some(p.table.clone())),
        texts(&|p, _| p.snapshot.map(|d| d.to_string())),
        ints(&|p, _| p.version),
        ints(&|_, c| Some(c.ordinal)),
        texts(&|_, c| Some(c.column_name.clone())),
        texts(&|_, c| Some(c.data_type.clone())),
        ints(&|_, c| Some(c.row_count)),
        ints(&|_, c| Some(c.null_count)),
        ints(&|_, c| Some(c.distinct_count)),
        texts(&|_, c| Some(c.distinct_method.clone())),
        texts(&|_, c| c.min_value.clone()),
        texts(&|_, c| c.max_value.clone()),
        floats(&|c| c.mean),
        floats(&|c| c.stddev),
        texts(&|_, c| Some(top(c))),
        ints(&|_, c| c.min_length),
        ints(&|_, c| c.max_length),
        Arc::new(TimestampMicrosecondArray::from(vec![now; rows.len()]).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(table_profiles_schema(), columns)?)
}

/// Replaces the `date` partition of `gold.table_profiles` in one commit:
/// the new profiles, plus the rows already there for the other tables.
pub async fn store(lake: &Lake, date: NaiveDate, profiles: &[TableProfile]) -> Result<()> {
    let schema = table_profiles_schema();
    let mut batches = vec![to_batch(date, profiles)?];
    let session = SessionBuilder::new(lake).only(&[TABLE_PROFILES]).build().await?;
    if !session.tables.is_empty() {
        let names: Vec<String> = profiles.iter().map(|p| format!("'{}'", p.table.replace('\'', "''"))).collect();
        let mut sql = format!("SELECT * FROM {TABLE_PROFILES} WHERE snapshot_date = DATE '{date}'");
        if !names.is_empty() {
            sql.push_str(&format!(" AND table_name NOT IN ({})", names.join(", ")));
        }
        let kept = session.ctx.sql(&sql).await?.collect().await?;
        for batch in kept.iter().filter(|b| b.num_rows() > 0) {
            let mut columns = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let column = batch
                    .column_by_name(field.name())
                    .ok_or_else(|| Error::lake(&TABLE_PROFILES, format!("column {} is missing", field.name())))?;
                columns.push(cast(column, field.data_type())?);
            }
            batches.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
    }
    lake.replace_partition(PartitionWrite::to(
        &TABLE_PROFILES,
        crate::models::SNAPSHOT_COLUMN,
        date,
        Rows::Batches { schema, batches },
    ))
    .await?;
    Ok(())
}

/// The two newest profiles of `table` in `ctx` (which has
/// `gold.table_profiles`): `(latest, previous)`, each a list of column rows
/// in column order, empty when there is none.
pub async fn latest_two(ctx: &SessionContext, table: &str) -> Result<(Vec<Map<String, Value>>, Vec<Map<String, Value>>)> {
    let table = table.replace('\'', "''");
    let sql = format!(
        "SELECT CAST(snapshot_date AS VARCHAR) AS profile_date, table_name, table_snapshot, table_version, ordinal, column_name,
                data_type, row_count, null_count, distinct_count, distinct_method, min_value, max_value, mean, stddev,
                top_values, min_length, max_length, CAST(profiled_at AS VARCHAR) AS profiled_at
         FROM {TABLE_PROFILES}
         WHERE table_name = '{table}' AND snapshot_date IN (
             SELECT DISTINCT snapshot_date FROM {TABLE_PROFILES} WHERE table_name = '{table}' ORDER BY snapshot_date DESC LIMIT 2)
         ORDER BY snapshot_date DESC, ordinal"
    );
    let mut rows = json(ctx, &TABLE_PROFILES.to_string(), &sql).await?;
    for row in rows.iter_mut() {
        if let Some(Value::String(top)) = row.get("top_values") {
            let parsed = serde_json::from_str(top).unwrap_or(Value::Null);
            row.insert("top_values".into(), parsed);
        }
    }
    let newest = rows.first().and_then(|r| text(r, "profile_date"));
    let (latest, previous) = rows.into_iter().partition(|r| text(r, "profile_date") == newest);
    Ok((latest, previous))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use datafusion::arrow::datatypes::{Field, Schema};

    /// A local lake in `dir`, with the default configuration.
    fn lake_in(dir: &std::path::Path) -> Lake {
        let config = Config::load(Overrides { lake: Some(dir.to_string_lossy().into_owned()), ..Default::default() }).unwrap();
        Lake::new(&config).unwrap()
    }

    #[tokio::test]
    async fn a_profile_counts_nulls_distincts_and_tops_and_a_second_store_keeps_other_tables() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_in(dir.path());
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("ab"), Some("ab"), None, Some("xyz"), Some("ab")])),
                Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), Some(3.0), None, Some(6.0)])),
            ],
        )
        .unwrap();
        lake.overwrite("silver", "t", schema.clone(), vec![batch]).await.unwrap();
        lake.overwrite("gold", "u", schema, Vec::new()).await.unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let t = TableName::new(Layer::Silver, "t");
        let u = TableName::new(Layer::Gold, "u");
        assert_eq!(default_tables(&lake, false).await.unwrap(), vec![t.clone(), u.clone()]);

        let profiles = profile_and_store(&lake, &[t.clone(), u.clone()], date, &PiiConfig::default()).await.unwrap();
        let name = &profiles[0].columns[0];
        assert_eq!((name.row_count, name.null_count, name.distinct_count), (5, 1, 2));
        assert_eq!((name.min_value.as_deref(), name.max_value.as_deref()), (Some("ab"), Some("xyz")));
        assert_eq!((name.min_length, name.max_length), (Some(2), Some(3)));
        assert_eq!(name.top_values, vec![("ab".to_string(), 3), ("xyz".to_string(), 1)]);
        assert_eq!(name.distinct_method, "exact");
        let amount = &profiles[0].columns[1];
        assert_eq!(amount.mean, Some(3.0));
        // Sample standard deviation of 1, 2, 3, 6: sqrt(14 / 3).
        assert!((amount.stddev.unwrap() - (14.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(profiles[1].columns[0].row_count, 0);

        // Profiling t again the next day, then u alone the same day, keeps t.
        let next = date.succ_opt().unwrap();
        profile_and_store(&lake, &[t.clone()], next, &PiiConfig::default()).await.unwrap();
        profile_and_store(&lake, &[u.clone()], next, &PiiConfig::default()).await.unwrap();
        let ctx = SessionBuilder::new(&lake).only(&[TABLE_PROFILES]).build().await.unwrap().ctx;
        let (latest, previous) = latest_two(&ctx, "silver.t").await.unwrap();
        assert_eq!((latest.len(), previous.len()), (2, 2));
        assert_eq!(latest[0]["profile_date"], "2026-11-26");
        assert_eq!(previous[0]["profile_date"], "2026-11-25");
        assert_eq!(latest[0]["top_values"][0]["count"], 3);
        let (latest, previous) = latest_two(&ctx, "gold.u").await.unwrap();
        assert_eq!((latest.len(), previous.len()), (2, 2));
    }

    #[tokio::test]
    async fn large_tables_estimate_float_distincts_and_tops_skip_columns_of_many_values() {
        // The estimate a table of EXACT_DISTINCT_BELOW rows or more gets, over
        // a float column (HyperLogLog itself takes no floats).
        // -0 and 0 are one value, as every NaN is (as in PostgreSQL).
        let ctx = SessionContext::new();
        register_float_bits(&ctx);
        let floats = Arc::new(Schema::new(vec![Field::new("amount", DataType::Float64, true)]));
        let values = [Some(1.5), Some(2.5), Some(1.5), None, Some(0.0), Some(-0.0), Some(f64::NAN), Some(-f64::NAN)];
        let batch = RecordBatch::try_new(floats, vec![Arc::new(Float64Array::from(values.to_vec()))]).unwrap();
        ctx.register_batch("t", batch).unwrap();
        let row = json(&ctx, "t", &stats_sql("t", &[("amount".into(), DataType::Float64)], false)).await.unwrap();
        assert_eq!(int(&row[0], "c0_distinct"), Some(4));

        // One more distinct value than TOP_VALUES_MAX_DISTINCT: no top values
        // for that column; the two-valued column beside it has its own.
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_in(dir.path());
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("kind", DataType::Utf8, false),
        ]));
        let rows = TOP_VALUES_MAX_DISTINCT + 1;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter_values((0..rows).map(|i| if i % 3 == 0 { "a" } else { "b" }))),
            ],
        )
        .unwrap();
        lake.overwrite("silver", "wide", schema, vec![batch]).await.unwrap();
        let wide = TableName::new(Layer::Silver, "wide");
        let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let profiles = profile_and_store(&lake, &[wide], date, &PiiConfig::default()).await.unwrap();
        let (id, kind) = (&profiles[0].columns[0], &profiles[0].columns[1]);
        assert_eq!(id.distinct_count, rows);
        assert!(id.top_values.is_empty(), "{:?}", id.top_values);
        // 0, 3, …, 9999: 3334 multiples of 3 among 0..=10000.
        assert_eq!(kind.top_values, vec![("b".to_string(), rows - 3334), ("a".to_string(), 3334)]);
    }
}
