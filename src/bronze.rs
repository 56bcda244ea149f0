//! Bronze: the raw landing of source tables, with technical metadata.
//!
//! Every source column is kept with its faithful type; three columns are
//! added: `_ingestion_timestamp` (UTC), `_source` (host:port/db/schema.table,
//! never a password) and `_ingestion_date`, the partition. Landing a date
//! replaces exactly that date's partition in one Delta commit. Rows read
//! from PostgreSQL stream into the table as they arrive.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::lake::{Lake, PartitionWrite, Rows, WriteProfile};
use crate::source::postgres::TableExtraction;
use crate::source::ExtractedTable;
use crate::tables;

/// The partition column of bronze tables.
pub const PARTITION_COLUMN: &str = "_ingestion_date";

/// What landing one table did.
#[derive(Debug, Clone)]
pub struct LandedTable {
    pub table: String,
    pub rows: u64,
    /// Bytes received from the source.
    pub source_bytes: u64,
    /// Time reading and decoding the source.
    pub read_time: std::time::Duration,
    pub version: i64,
    pub profile: WriteProfile,
}

/// The technical columns added to every row of one landing.
struct Stamp {
    schema: SchemaRef,
    ingested_at: i64,
    origin: String,
    days: i32,
}

impl Stamp {
    fn new(source: &SchemaRef, origin: &str, date: NaiveDate, ingested_at: DateTime<Utc>) -> Stamp {
        Stamp {
            schema: bronze_schema(source),
            ingested_at: ingested_at.timestamp_micros(),
            origin: origin.to_string(),
            days: Date32Type::from_naive_date(date),
        }
    }

    /// `batch` with the technical columns.
    fn apply(&self, batch: &RecordBatch) -> std::result::Result<RecordBatch, ArrowError> {
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(TimestampMicrosecondArray::from(vec![self.ingested_at; rows]).with_timezone("UTC")));
        columns.push(Arc::new(StringArray::from(vec![self.origin.as_str(); rows])));
        columns.push(Arc::new(Date32Array::from(vec![self.days; rows])));
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

/// Writes one table read in full (a dump) as the `date` partition of
/// `bronze.<table>`.
pub async fn land(
    lake: &Lake,
    extracted: ExtractedTable,
    date: NaiveDate,
    ingested_at: DateTime<Utc>,
) -> Result<LandedTable> {
    let name = tables::bronze(&extracted.name);
    let stamp = Stamp::new(&extracted.schema, &extracted.origin, date, ingested_at);
    let batches = extracted
        .batches
        .iter()
        .map(|batch| stamp.apply(batch))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::lake(&name, e))?;
    let rows = extracted.rows() as u64;
    let written = lake
        .replace_partition(PartitionWrite::to(&name, PARTITION_COLUMN, date, Rows::Batches { schema: stamp.schema, batches }))
        .await?;
    Ok(LandedTable {
        table: extracted.name,
        rows,
        source_bytes: extracted.source_bytes,
        read_time: std::time::Duration::ZERO,
        version: written.version,
        profile: written.profile,
    })
}

/// Writes a table as it is extracted from PostgreSQL: each part of the
/// extraction streams into a writer of its own. A failed read leaves the
/// table as it was and is reported as the source's error.
pub async fn land_streaming(
    lake: &Lake,
    mut extraction: TableExtraction,
    date: NaiveDate,
    ingested_at: DateTime<Utc>,
) -> Result<LandedTable> {
    let name = tables::bronze(&extraction.name);
    let stamp = Arc::new(Stamp::new(&extraction.schema, &extraction.origin, date, ingested_at));
    let streams: Vec<SendableRecordBatchStream> = extraction
        .parts()
        .into_iter()
        .map(|part| {
            let schema = stamp.schema.clone();
            let stamp = stamp.clone();
            let stamped = part.map(move |batch| batch.and_then(|b| stamp.apply(&b).map_err(DataFusionError::from)));
            Box::pin(RecordBatchStreamAdapter::new(schema, stamped)) as SendableRecordBatchStream
        })
        .collect();
    let written =
        lake.replace_partition(PartitionWrite::to(&name, PARTITION_COLUMN, date, Rows::Streams { schema: stamp.schema.clone(), streams })).await;
    // A failed read makes the write fail too: the source's error says why.
    let read = extraction.finish().await?;
    let written = written?;
    Ok(LandedTable {
        table: name.table().to_string(),
        rows: read.rows,
        source_bytes: read.source_bytes,
        read_time: read.read_time,
        version: written.version,
        profile: written.profile,
    })
}

/// The source schema plus the technical columns.
pub fn bronze_schema(source: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_ingestion_timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false));
    fields.push(Field::new("_source", DataType::Utf8, false));
    fields.push(Field::new(PARTITION_COLUMN, DataType::Date32, false));
    Arc::new(Schema::new(fields))
}
