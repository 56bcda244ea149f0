//! `LakeCodec`: how the tables of a medallion session travel inside a
//! logical plan sent to the Ballista scheduler. Ballista's own codec handles
//! everything else; this one adds the two kinds of table our sessions hold:
//!
//! - a Delta table as `lake::snapshot_files::SnapshotFiles` (JSON: store URL, files,
//!   partition values), tagged `medallion.snapshot`;
//! - a small in-memory table (`ref.country_map`, and `live.sales_by_country`
//!   as it is when the plan is sent) as Arrow IPC, tagged `medallion.memory`.
//!
//! The client and the scheduler both use it (`scheduler::run` configures the
//! scheduler's); executors receive physical plans, whose Parquet scans
//! Ballista's default codec carries.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

use ballista_core::serde::BallistaLogicalExtensionCodec;

use crate::lake::snapshot_files::SnapshotFiles;

const SNAPSHOT_TAG: &[u8] = b"medallion.snapshot\n";
const MEMORY_TAG: &[u8] = b"medallion.memory\n";

/// Ballista's logical codec plus the tables of a medallion session.
#[derive(Debug, Default)]
pub struct LakeCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LakeCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> DfResult<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        if let Some(json) = buf.strip_prefix(SNAPSHOT_TAG) {
            return Ok(Arc::new(SnapshotFiles::from_json(json, schema)?));
        }
        if let Some(ipc) = buf.strip_prefix(MEMORY_TAG) {
            let batches = StreamReader::try_new(ipc, None)?.collect::<Result<Vec<RecordBatch>, _>>()?;
            return Ok(Arc::new(MemTable::try_new(schema, vec![batches])?));
        }
        self.ballista.try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        if let Some(files) = node.downcast_ref::<SnapshotFiles>() {
            buf.extend_from_slice(SNAPSHOT_TAG);
            buf.extend_from_slice(&files.to_json()?);
            return Ok(());
        }
        let live = crate::live::current_rows(node.as_ref()).transpose()?;
        if let Some(memory) = live.as_ref().or_else(|| node.downcast_ref::<MemTable>()) {
            buf.extend_from_slice(MEMORY_TAG);
            let mut writer = StreamWriter::try_new(&mut *buf, &memory.schema())?;
            for partition in &memory.batches {
                let batches = partition.try_read().map_err(|_| {
                    DataFusionError::Internal(format!("{table_ref} is being written while a plan is encoded"))
                })?;
                for batch in batches.iter() {
                    writer.write(batch)?;
                }
            }
            writer.finish()?;
            return Ok(());
        }
        self.ballista.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> DfResult<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn memory_tables_travel_whole() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["uk", "fr"])), Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(schema.clone(), vec![vec![batch.clone()]]).unwrap());
        let codec = LakeCodec::default();
        let name = TableReference::parse_str("ref.country_map");
        let mut buf = Vec::new();
        codec.try_encode_table_provider(&name, table, &mut buf).unwrap();
        let ctx = TaskContext::default();
        let back = codec.try_decode_table_provider(&buf, &name, schema, &ctx).unwrap();
        let back = back.downcast_ref::<MemTable>().unwrap();
        let batches = back.batches[0].try_read().unwrap();
        assert_eq!(batches.as_slice(), [batch]);
    }
}
