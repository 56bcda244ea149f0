//! Arrow shapes of the streaming tables: `bronze.sales_events`,
//! `bronze.sales_events_rejected` and `gold.sales_by_country_minute`
//! (`gold.live_sales_by_country` shares `live::sales_by_country_schema`).

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{
    BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::event::SalesEvent;
use super::source::RawMessage;
use super::state::StreamState;

/// Partition column of both bronze event tables.
pub const EVENT_DATE: &str = "event_date";

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("event_time", utc_micros(), false),
        Field::new("pays", DataType::Utf8, false),
        Field::new("client_id", DataType::Utf8, true),
        Field::new("produit", DataType::Utf8, true),
        Field::new("categorie", DataType::Utf8, true),
        Field::new("quantite", DataType::Int64, true),
        Field::new("prix_unitaire", DataType::Float64, true),
        Field::new("montant", DataType::Float64, false),
        Field::new("is_late", DataType::Boolean, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("_ingestion_timestamp", utc_micros(), false),
        Field::new(EVENT_DATE, DataType::Date32, false),
    ]))
}

pub fn rejects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("payload", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("_ingestion_timestamp", utc_micros(), false),
        Field::new(EVENT_DATE, DataType::Date32, false),
    ]))
}

pub fn windows_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("window_start", utc_micros(), false),
        Field::new("window_end", utc_micros(), false),
        Field::new("pays", DataType::Utf8, false),
        Field::new("total_ventes", DataType::Float64, false),
        Field::new("nb_transactions", DataType::Int64, false),
    ]))
}

fn days(date: NaiveDate) -> i32 {
    date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

fn micros_array(values: impl Iterator<Item = i64>) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC")
}

/// Accepted events of one batch.
pub fn events_batch(events: &[(&SalesEvent<'_>, &RawMessage, bool)], ingested_at: DateTime<Utc>) -> RecordBatch {
    let at = ingested_at.timestamp_micros();
    RecordBatch::try_new(
        events_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(events.iter().map(|(e, _, _)| e.event_id.as_ref()))),
            Arc::new(micros_array(events.iter().map(|(e, _, _)| e.event_time.timestamp_micros()))),
            Arc::new(StringArray::from_iter_values(events.iter().map(|(e, _, _)| e.pays.as_ref()))),
            Arc::new(events.iter().map(|(e, _, _)| e.client_id.as_deref()).collect::<StringArray>()),
            Arc::new(events.iter().map(|(e, _, _)| e.produit.as_deref()).collect::<StringArray>()),
            Arc::new(events.iter().map(|(e, _, _)| e.categorie.as_deref()).collect::<StringArray>()),
            Arc::new(events.iter().map(|(e, _, _)| e.quantite).collect::<Int64Array>()),
            Arc::new(events.iter().map(|(e, _, _)| e.prix_unitaire).collect::<Float64Array>()),
            Arc::new(Float64Array::from_iter_values(events.iter().map(|(e, _, _)| e.montant))),
            Arc::new(events.iter().map(|(_, _, late)| Some(*late)).collect::<BooleanArray>()),
            Arc::new(StringArray::from_iter_values(events.iter().map(|(_, m, _)| m.topic.as_ref()))),
            Arc::new(Int32Array::from_iter_values(events.iter().map(|(_, m, _)| m.partition))),
            Arc::new(Int64Array::from_iter_values(events.iter().map(|(_, m, _)| m.offset))),
            Arc::new(micros_array(events.iter().map(|_| at))),
            Arc::new(Date32Array::from_iter_values(events.iter().map(|(e, _, _)| days(e.event_time.date_naive())))),
        ],
    )
    .expect("columns match the events schema")
}

/// Rejected messages of one batch, with their raw payload and reason.
pub fn rejects_batch(rejects: &[(&RawMessage, String)], ingested_at: DateTime<Utc>) -> RecordBatch {
    let at = ingested_at.timestamp_micros();
    let day = days(ingested_at.date_naive());
    RecordBatch::try_new(
        rejects_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rejects.iter().map(|(m, _)| String::from_utf8_lossy(&m.payload).into_owned()))),
            Arc::new(StringArray::from_iter_values(rejects.iter().map(|(_, reason)| reason.as_str()))),
            Arc::new(StringArray::from_iter_values(rejects.iter().map(|(m, _)| m.topic.as_ref()))),
            Arc::new(Int32Array::from_iter_values(rejects.iter().map(|(m, _)| m.partition))),
            Arc::new(Int64Array::from_iter_values(rejects.iter().map(|(m, _)| m.offset))),
            Arc::new(micros_array(rejects.iter().map(|_| at))),
            Arc::new(Date32Array::from_iter_values(rejects.iter().map(|_| day))),
        ],
    )
    .expect("columns match the rejects schema")
}

/// The 1-minute windows of the state.
pub fn windows_batch(state: &StreamState) -> RecordBatch {
    let minute = 60_000_000i64;
    let windows: Vec<_> = state
        .windows
        .iter()
        .flat_map(|(start, countries)| countries.iter().map(move |(pays, totals)| (start.timestamp_micros(), pays, totals)))
        .collect();
    RecordBatch::try_new(
        windows_schema(),
        vec![
            Arc::new(micros_array(windows.iter().map(|(start, _, _)| *start))),
            Arc::new(micros_array(windows.iter().map(|(start, _, _)| start + minute))),
            Arc::new(StringArray::from_iter_values(windows.iter().map(|(_, pays, _)| pays.as_str()))),
            Arc::new(Float64Array::from_iter_values(windows.iter().map(|(_, _, (sum, _))| *sum))),
            Arc::new(Int64Array::from_iter_values(windows.iter().map(|(_, _, (_, count))| *count))),
        ],
    )
    .expect("columns match the windows schema")
}
