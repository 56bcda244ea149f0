//! Arrow shapes of the streaming tables: `bronze.sales_events`,
//! `bronze.sales_events_rejected` and `gold.sales_by_country_minute`
//! (`gold.live_sales_by_country` shares `live::sales_by_country_schema`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    BooleanArray, Date32Array, Date32Builder, Float64Array, Float64Builder, Int32Array, Int32Builder,
    Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::array::ArrayBuilder;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::event::SalesEvent;
use super::message::RawMessage;
use super::state::StreamState;

/// The bronze table of accepted events (`bronze.sales_events`).
pub const EVENTS_TABLE: &str = "sales_events";
/// The bronze table of rejected messages (`bronze.sales_events_rejected`).
pub const REJECTS_TABLE: &str = "sales_events_rejected";

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

/// The `Date32` value (days since 1970-01-01) of a UTC time in microseconds.
fn day_of(micros: i64) -> i32 {
    const DAY_MICROS: i64 = 86_400_000_000;
    micros.div_euclid(DAY_MICROS) as i32
}

fn micros_array(values: impl Iterator<Item = i64>) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC")
}

/// The columns of `bronze.sales_events`, built row by row while events are
/// decoded (on the decoding threads, while each payload is still in cache).
/// Whether a row is late, and which rows the batch then drops (duplicates,
/// replays), is decided afterwards by the loop and applied by `finish`.
pub struct EventColumns {
    event_id: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    pays: StringBuilder,
    client_id: StringBuilder,
    produit: StringBuilder,
    categorie: StringBuilder,
    quantite: Int64Builder,
    prix_unitaire: Float64Builder,
    montant: Float64Builder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    event_date: Date32Builder,
}

impl EventColumns {
    pub fn with_capacity(rows: usize) -> EventColumns {
        let strings = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        EventColumns {
            event_id: strings(32),
            event_time: TimestampMicrosecondBuilder::with_capacity(rows).with_data_type(utc_micros()),
            pays: strings(8),
            client_id: strings(8),
            produit: strings(24),
            categorie: strings(16),
            quantite: Int64Builder::with_capacity(rows),
            prix_unitaire: Float64Builder::with_capacity(rows),
            montant: Float64Builder::with_capacity(rows),
            topic: strings(24),
            partition: Int32Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            event_date: Date32Builder::with_capacity(rows),
        }
    }

    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, event: &SalesEvent<'_>, message: &RawMessage) {
        let micros = event.event_time.timestamp_micros();
        self.event_id.append_value(&event.event_id);
        self.event_time.append_value(micros);
        self.pays.append_value(&event.pays);
        self.client_id.append_option(event.client_id.as_deref());
        self.produit.append_option(event.produit.as_deref());
        self.categorie.append_option(event.categorie.as_deref());
        self.quantite.append_option(event.quantite);
        self.prix_unitaire.append_option(event.prix_unitaire);
        self.montant.append_value(event.montant);
        self.topic.append_value(&message.topic);
        self.partition.append_value(message.partition);
        self.offset.append_value(message.offset);
        self.event_date.append_value(day_of(micros));
    }

    /// The rows whose `keep` flag is set, with their `late` flag (one flag
    /// of each per row pushed).
    pub fn finish(mut self, ingested_at: DateTime<Utc>, keep: &[bool], late: &[bool]) -> RecordBatch {
        assert_eq!(keep.len(), self.len(), "one keep flag per event row");
        assert_eq!(late.len(), self.len(), "one late flag per event row");
        let rows = self.len();
        let at = ingested_at.timestamp_micros();
        let batch = RecordBatch::try_new(
            events_schema(),
            vec![
                Arc::new(self.event_id.finish()),
                Arc::new(self.event_time.finish()),
                Arc::new(self.pays.finish()),
                Arc::new(self.client_id.finish()),
                Arc::new(self.produit.finish()),
                Arc::new(self.categorie.finish()),
                Arc::new(self.quantite.finish()),
                Arc::new(self.prix_unitaire.finish()),
                Arc::new(self.montant.finish()),
                Arc::new(BooleanArray::from(late.to_vec())),
                Arc::new(self.topic.finish()),
                Arc::new(self.partition.finish()),
                Arc::new(self.offset.finish()),
                Arc::new(micros_array(std::iter::repeat_n(at, rows))),
                Arc::new(self.event_date.finish()),
            ],
        )
        .expect("columns match the events schema");
        if keep.iter().all(|k| *k) {
            return batch;
        }
        filter_record_batch(&batch, &BooleanArray::from(keep.to_vec())).expect("a mask as long as the batch")
    }
}

/// Rejected messages of one batch, with their raw payload and reason.
pub fn rejects_batch(rejects: &[(&RawMessage, String)], ingested_at: DateTime<Utc>) -> RecordBatch {
    let at = ingested_at.timestamp_micros();
    let day = day_of(at);
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Date32Type, Int64Type};

    #[test]
    fn event_columns_keep_the_flagged_rows_with_their_dates() {
        let countries = crate::config::CountryConfig::default().lookup();
        let message = |offset: i64, payload: &str| RawMessage {
            topic: "t".into(),
            partition: 2,
            offset,
            key: "t:2".into(),
            next_position: offset + 1,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        };
        let messages = [
            message(7, r#"{"event_id":"a","timestamp":"2026-11-25T23:59:59Z","pays":"france","montant":1}"#),
            message(8, r#"{"event_id":"b","timestamp":"2026-11-26T00:00:00Z","pays":"UK","montant":2}"#),
            message(9, r#"{"event_id":"c","timestamp":"1969-12-31T23:00:00Z","pays":"UK","montant":3,"quantite":4}"#),
        ];
        let mut columns = EventColumns::with_capacity(2);
        for m in &messages {
            columns.push(&super::super::event::parse(&m.payload, &countries).unwrap(), m);
        }
        let batch = columns.finish(Utc::now(), &[true, false, true], &[false, false, true]);
        assert_eq!(batch.num_rows(), 2);
        let ids: Vec<_> = batch.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(ids, ["a", "c"]);
        let dates: Vec<_> = batch.column(14).as_primitive::<Date32Type>().values().to_vec();
        // python: (date(2026,11,25) - date(1970,1,1)).days == 20782
        assert_eq!(dates, [20782, -1]);
        let offsets: Vec<_> = batch.column(12).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(offsets, [7, 9]);
        assert_eq!(batch.column(9).as_boolean().iter().collect::<Vec<_>>(), [Some(false), Some(true)]);
        assert_eq!(batch.column(2).as_string::<i32>().value(0), "France");
        assert!(batch.column(6).is_null(0) && !batch.column(6).is_null(1));
    }
}
