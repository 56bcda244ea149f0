//! Encoders of query results, one per format, shared by `medallion sql`
//! (`render`) and the HTTP API (`json_rows`, `csv`, `arrow_ipc`): an aligned
//! text table, CSV with a header row, JSON (an array of objects) and the
//! Arrow IPC stream format.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Output format of `medallion sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Whether JSON objects carry the fields that are null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    /// Left out (`medallion sql --format json`).
    Omitted,
    /// Written as `null` (the HTTP API).
    Explicit,
}

/// Renders batches in `format`, as `medallion sql` prints them.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => table(batches),
        Format::Csv => String::from_utf8(csv(batches, None)?).map_err(|e| Error::other("CSV output", e)),
        Format::Json => {
            let text = String::from_utf8(json_array(batches, Nulls::Omitted)?).map_err(|e| Error::other("JSON output", e))?;
            Ok(if text.is_empty() { "[]".to_string() } else { text })
        }
    }
}

/// An aligned text table with borders.
pub fn table(batches: &[RecordBatch]) -> Result<String> {
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

/// CSV with a header row. With no batch at all, the header is the column
/// names of `empty_header` (nothing when `None`).
pub fn csv(batches: &[RecordBatch], empty_header: Option<&Schema>) -> Result<Vec<u8>> {
    if batches.is_empty() {
        let Some(schema) = empty_header else { return Ok(Vec::new()) };
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Ok(format!("{}\n", names.join(",")).into_bytes());
    }
    let mut out = Vec::new();
    {
        let mut writer = arrow_csv::WriterBuilder::new().with_header(true).build(&mut out);
        for batch in batches {
            writer.write(batch)?;
        }
    }
    Ok(out)
}

/// A JSON array of one object per row; empty (no bytes) with no batch.
pub fn json_array(batches: &[RecordBatch], nulls: Nulls) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(nulls == Nulls::Explicit)
            .build::<_, arrow_json::writer::JsonArray>(&mut out);
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        writer.write_batches(&refs)?;
        writer.finish()?;
    }
    Ok(out)
}

/// Rows as JSON objects with their nulls, for API responses built around them.
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>> {
    let out = json_array(batches, Nulls::Explicit)?;
    if out.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&out).map_err(|e| Error::other("JSON encoding", e))
}

/// The Arrow IPC stream format (schema, then every batch).
pub fn arrow_ipc(schema: &Schema, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    /// Countries and their orders (3, 1, …); the column is nullable when a country is missing.
    fn batch_of(countries: Vec<Option<&str>>) -> RecordBatch {
        let nullable = countries.iter().any(Option::is_none);
        let orders: Vec<i32> = [3, 1].into_iter().cycle().take(countries.len()).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("country", DataType::Utf8, nullable),
            Field::new("orders", DataType::Int32, false),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(countries)), Arc::new(Int32Array::from(orders))]).unwrap()
    }

    fn batch() -> RecordBatch {
        batch_of(vec![Some("USA"), Some("UK")])
    }

    fn batch_with_a_null() -> RecordBatch {
        batch_of(vec![Some("USA"), None])
    }

    #[test]
    fn csv_has_a_header_row() {
        assert_eq!(render(&[batch()], Format::Csv).unwrap(), "country,orders\nUSA,3\nUK,1\n");
    }

    #[test]
    fn json_is_an_array_of_objects() {
        let text = render(&[batch()], Format::Json).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value[0]["country"], "USA");
        assert_eq!(value[1]["orders"], 1);
        assert_eq!(render(&[], Format::Json).unwrap(), "[]");
    }

    #[test]
    fn with_no_batch_the_cli_prints_no_csv_and_the_api_a_header() {
        assert_eq!(render(&[], Format::Csv).unwrap(), "");
        assert_eq!(csv(&[], Some(batch().schema().as_ref())).unwrap(), b"country,orders\n");
    }

    #[test]
    fn the_cli_leaves_nulls_out_and_the_api_writes_them() {
        assert_eq!(render(&[batch_with_a_null()], Format::Json).unwrap(), r#"[{"country":"USA","orders":3},{"orders":1}]"#);
        let rows = json_rows(&[batch_with_a_null()]).unwrap();
        assert_eq!(rows[1]["country"], Value::Null);
        assert!(json_rows(&[]).unwrap().is_empty());
    }

    #[test]
    fn arrow_ipc_reads_back() {
        let bytes = arrow_ipc(&batch().schema(), &[batch()]).unwrap();
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
    }
}
