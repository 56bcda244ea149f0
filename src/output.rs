//! Renders query results for people and programs: an aligned table, CSV
//! with a header row, or JSON (an array of objects).

use datafusion::arrow::array::RecordBatch;

use crate::error::{Error, Result};

/// Output format of `medallion sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Renders batches in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = arrow_csv::WriterBuilder::new().with_header(true).build(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            String::from_utf8(out).map_err(|e| Error::other("CSV output", e))
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut writer = arrow_json::ArrayWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            let text = String::from_utf8(out).map_err(|e| Error::other("JSON output", e))?;
            Ok(if text.is_empty() { "[]".to_string() } else { text })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("country", DataType::Utf8, false),
            Field::new("orders", DataType::Int32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["USA", "UK"])), Arc::new(Int32Array::from(vec![3, 1]))],
        )
        .unwrap()
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
}
