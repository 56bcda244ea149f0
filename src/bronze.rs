//! Bronze: the raw landing of source tables, with technical metadata.
//!
//! Every source column is kept with its faithful type; three columns are
//! added: `_ingestion_timestamp` (UTC), `_source` (host:port/db/schema.table,
//! never a password) and `_ingestion_date`, the partition. Landing a date
//! replaces exactly that date's partition in one Delta commit.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};
use crate::lake::{Lake, PartitionWrite, Rows};
use crate::source::ExtractedTable;
use crate::tables;

/// The partition column of bronze tables.
pub const PARTITION_COLUMN: &str = "_ingestion_date";

/// What landing one table did.
#[derive(Debug, Clone)]
pub struct LandedTable {
    pub table: String,
    pub rows: u64,
    /// Bytes of Arrow data landed (in memory size).
    pub bytes: u64,
    pub version: i64,
}

/// Writes one extracted table as the `date` partition of `bronze.<table>`.
pub async fn land(
    lake: &Lake,
    extracted: ExtractedTable,
    date: NaiveDate,
    ingested_at: DateTime<Utc>,
) -> Result<LandedTable> {
    let name = tables::bronze(&extracted.name);
    let schema = bronze_schema(&extracted.schema);
    let days = date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
    let mut batches = Vec::with_capacity(extracted.batches.len());
    let mut bytes = 0u64;
    for batch in &extracted.batches {
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![ingested_at.timestamp_micros(); rows]).with_timezone("UTC"),
        ));
        columns.push(Arc::new(StringArray::from(vec![extracted.origin.as_str(); rows])));
        columns.push(Arc::new(Date32Array::from(vec![days; rows])));
        let with_metadata = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| Error::lake(&name, e))?;
        bytes += batch.get_array_memory_size() as u64;
        batches.push(with_metadata);
    }
    let rows = extracted.rows() as u64;
    let version = lake
        .replace_partition(PartitionWrite::to(&name, PARTITION_COLUMN, date, Rows::Batches { schema, batches }))
        .await?;
    Ok(LandedTable { table: extracted.name, rows, bytes, version })
}

/// The source schema plus the technical columns.
pub fn bronze_schema(source: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_ingestion_timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false));
    fields.push(Field::new("_source", DataType::Utf8, false));
    fields.push(Field::new(PARTITION_COLUMN, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}
