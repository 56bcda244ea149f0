//! Rows written to the lake carry plain Arrow types. Reads give text as
//! `Utf8View` (see `snapshot_files`); a query's result keeps that type, so
//! every write (`Lake::replace_partition`, `overwrite`, `append`,
//! `Appender::append`) turns view columns back into `Utf8` / `Binary`
//! first: Delta's writer matches the table's schema by type, and a view
//! batch would keep alive every Parquet page its strings point into.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

/// The plain type of a view type; `None` for a type that is already plain.
fn plain(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    }
}

/// `schema` with every top-level view column given its plain type (the
/// same `Arc` when there is none).
pub fn schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|field| plain(field.data_type()).is_some()) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| match plain(field.data_type()) {
            Some(data_type) => field.as_ref().clone().with_data_type(data_type),
            None => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with its view columns cast to their plain types.
pub fn batch(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let target = schema(batch.schema_ref());
    if Arc::ptr_eq(&target, batch.schema_ref()) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|column| match plain(column.data_type()) {
            Some(data_type) => cast(column, &data_type),
            None => Ok(column.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target, columns)
}

/// `batch` for each batch of a list.
pub fn batches(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, ArrowError> {
    batches.into_iter().map(batch).collect()
}

/// `stream`, whose batches come out with plain types.
pub fn stream(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let target = schema(&stream.schema());
    if Arc::ptr_eq(&target, &stream.schema()) {
        return stream;
    }
    let converted = stream.map(|rows| rows.and_then(|rows| batch(rows).map_err(Into::into)));
    Box::pin(RecordBatchStreamAdapter::new(target, converted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int32Array, StringArray, StringViewArray};

    #[test]
    fn view_columns_become_plain_and_others_stay() {
        let viewed = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8View, true),
            Field::new("n", DataType::Int32, false),
        ]));
        let rows = RecordBatch::try_new(
            viewed.clone(),
            vec![
                Arc::new(StringViewArray::from(vec![Some("a name longer than twelve bytes"), None])),
                Arc::new(Int32Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let plain_rows = batch(rows).unwrap();
        assert_eq!(plain_rows.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(plain_rows.schema().field(1).data_type(), &DataType::Int32);
        let names = plain_rows.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(names.value(0), "a name longer than twelve bytes");
        assert!(names.is_null(1));
        assert_eq!(schema(&viewed).field(0).data_type(), &DataType::Utf8);
        let already_plain = plain_rows.schema();
        assert!(Arc::ptr_eq(&schema(&already_plain), &already_plain));
    }
}
