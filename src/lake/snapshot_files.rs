//! `SnapshotFiles`: a Delta table as the list of Parquet files of one
//! snapshot, resolved once when the table is opened. It is how every session
//! reads the lake (`catalog::register_delta`), locally and on a Ballista
//! cluster, where a query planned on the scheduler and run on the executors
//! reads exactly that version.
//!
//! Its scan is a plain DataFusion Parquet scan: files of partitions a filter
//! rules out are left out, row counts come from the log as statistics, and
//! the text columns of bronze are read as `Utf8View` (Arrow's string views,
//! which point into the Parquet pages instead of copying every string; see
//! `text_as_views`): grouping, joining and filtering on them is cheaper, and
//! `lake::plain_types` turns them back into plain strings when rows are
//! written. Why not delta-rs's own scan: it adds a per-batch pass (file ids,
//! partition values, casts) that cost more than the Parquet decoding itself
//! (scale 1000: aggregate 2.29 → 1.37 s without it).
//! Tables whose protocol needs Delta's own reader (deletion vectors, column
//! mapping: medallion writes neither) keep it locally (`SnapshotFiles::unreadable`).
//!
//! The table provider serializes to a small JSON document (see
//! `cluster::codec`): the object store URL (`file://` or `s3://bucket`,
//! never a credential), each file's path, size, row count and partition
//! values. Ballista ships its scan to the executors with its default codec.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, filter_partitioned_file};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::TableName;

/// One Delta snapshot as files; see the module documentation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotFiles {
    /// `layer.table`, for messages.
    pub table: String,
    /// The Delta version the files belong to.
    pub version: u64,
    /// The object store holding the files: `file://` or `s3://bucket`.
    pub store: String,
    /// The partition columns, in the table's order of partitioning.
    pub partition_columns: Vec<String>,
    pub files: Vec<SnapshotFile>,
    /// The table's columns (given again when decoded, so not serialized).
    #[serde(skip, default = "empty_schema")]
    pub schema: SchemaRef,
}

/// One data file of the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// The object path from the store's root.
    pub path: String,
    pub size: u64,
    /// Rows in the file, when the Delta log records it.
    pub rows: Option<u64>,
    /// One value per partition column (Delta's text form; `None` is null).
    pub partition: Vec<Option<String>>,
}

/// Whether the text columns of `table` are read as `Utf8View`: those of
/// bronze, the raw tables that refine's joins and ad-hoc queries scan,
/// filter and group (measured at scale 1000: refine 2.20 → 1.53 s; the
/// query `SELECT pays, SUM(montant) … GROUP BY pays` on 12 M streamed events
/// 0.45 → 0.27 s). Silver and gold keep plain `Utf8`: their readers are
/// aggregations followed by sorts, and DataFusion 55's sort counts every
/// slice of an aggregate's view output as holding all of its strings
/// (gold.rfm_customers asked for 1.26 GB at scale 1000 and failed its
/// memory limit).
fn text_as_views(table: &TableName) -> bool {
    table.layer == crate::lake::Layer::Bronze
}

/// Reader features that change nothing in how a data file is read.
const PLAIN_READER_FEATURES: [&str; 3] = ["timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"];

fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}

impl SnapshotFiles {
    /// The files of `delta`'s loaded snapshot, with `schema` (the columns of
    /// Delta's own provider for the table; dictionary-encoded partition
    /// columns are given their plain type, bronze's text `Utf8View`).
    pub fn of(name: &TableName, delta: &DeltaTable, schema: SchemaRef) -> Result<SnapshotFiles> {
        let state = delta.snapshot().map_err(|e| Error::lake(name, e))?;
        let partition_columns: Vec<String> = state.metadata().partition_columns().to_vec();
        let root = delta.table_url();
        let (store, prefix) = store_and_prefix(root).map_err(|reason| Error::lake(name, reason))?;
        let files = state
            .log_data()
            .iter()
            .map(|file| {
                let values = file.partition_values_map();
                let relative = file.object_store_path();
                SnapshotFile {
                    path: if prefix.is_empty() { relative.to_string() } else { format!("{prefix}/{relative}") },
                    size: file.size().max(0) as u64,
                    rows: file.num_records().map(|rows| rows as u64),
                    partition: partition_columns.iter().map(|column| values.get(column).cloned().flatten()).collect(),
                }
            })
            .collect();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Dictionary(_, value) if partition_columns.contains(field.name()) => {
                    field.as_ref().clone().with_data_type(value.as_ref().clone())
                }
                DataType::Utf8 | DataType::LargeUtf8 if text_as_views(name) && !partition_columns.contains(field.name()) => {
                    field.as_ref().clone().with_data_type(DataType::Utf8View)
                }
                _ => field.as_ref().clone(),
            })
            .collect();
        Ok(SnapshotFiles {
            table: name.to_string(),
            version: delta.version().unwrap_or_default(),
            store,
            partition_columns,
            files,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// Why `delta` cannot be read from its files alone, if it cannot: its
    /// protocol needs a reader feature this scan does not apply (deletion
    /// vectors, column mapping), which only Delta's own reader knows, or its
    /// files are on a store other than a folder or S3.
    pub fn unreadable(delta: &DeltaTable) -> Option<String> {
        if let Err(reason) = store_and_prefix(delta.table_url()) {
            return Some(reason);
        }
        let snapshot = delta.snapshot().ok()?;
        let protocol = snapshot.protocol();
        if protocol.min_reader_version() == 2 {
            return Some("its protocol (reader version 2) maps column names".to_string());
        }
        let needed: Vec<&str> = protocol
            .reader_features()
            .unwrap_or_default()
            .iter()
            .map(|feature| feature.as_ref())
            .filter(|feature| !PLAIN_READER_FEATURES.contains(feature))
            .collect();
        (!needed.is_empty()).then(|| format!("it uses Delta reader features {}", needed.join(", ")))
    }

    /// The columns of the Parquet files (the table's, less the partition
    /// columns) and the partition columns, and where each table column sits
    /// in that order (files first, as DataFusion's file scans put them).
    fn layout(&self) -> DfResult<(SchemaRef, Vec<FieldRef>, Vec<usize>)> {
        let is_partition = |field: &FieldRef| self.partition_columns.contains(field.name());
        let file_fields: Vec<FieldRef> = self.schema.fields().iter().filter(|f| !is_partition(f)).cloned().collect();
        let partition_fields = self
            .partition_columns
            .iter()
            .map(|column| Ok(Arc::new(self.schema.field_with_name(column)?.clone())))
            .collect::<DfResult<Vec<FieldRef>>>()?;
        let scan_order: Vec<&str> = file_fields.iter().chain(&partition_fields).map(|f| f.name().as_str()).collect();
        let position = self
            .schema
            .fields()
            .iter()
            .map(|field| scan_order.iter().position(|name| *name == field.name()).expect("every column is in the scan"))
            .collect();
        Ok((Arc::new(Schema::new(file_fields)), partition_fields, position))
    }

    /// The files a scan reads: those whose partition values pass the
    /// filters that only name partition columns.
    /// Each comes with its row count when the log records it.
    fn files_passing(&self, partition_fields: &[FieldRef], filters: &[Expr]) -> DfResult<Vec<(PartitionedFile, Option<u64>)>> {
        let names: Vec<&str> = self.partition_columns.iter().map(String::as_str).collect();
        let on_partitions: Vec<Expr> =
            filters.iter().filter(|filter| expr_applicable_for_cols(&names, filter)).cloned().collect();
        let partition_schema = DFSchema::try_from(Schema::new(partition_fields.to_vec()))?;
        let mut passing = Vec::with_capacity(self.files.len());
        for file in &self.files {
            let mut scanned = PartitionedFile::new(file.path.clone(), file.size);
            scanned.partition_values = partition_fields
                .iter()
                .zip(&file.partition)
                .map(|(field, value)| match value {
                    Some(text) => ScalarValue::try_from_string(text.clone(), field.data_type()),
                    None => ScalarValue::try_from(field.data_type()),
                })
                .collect::<DfResult<_>>()?;
            if on_partitions.is_empty() || partition_fields.is_empty() {
                passing.push((scanned, file.rows));
            } else if let Some(kept) = filter_partitioned_file(scanned, &on_partitions, &partition_schema)? {
                passing.push((kept, file.rows));
            }
        }
        Ok(passing)
    }
}

/// The object store URL of a table root and the path of the root inside it:
/// `file:///lake/silver/t/` → (`file://`, `lake/silver/t`),
/// `s3://silver/t/` → (`s3://silver`, `t`).
fn store_and_prefix(root: &url::Url) -> std::result::Result<(String, String), String> {
    let prefix = root.path().trim_matches('/').to_string();
    match root.scheme() {
        "file" => Ok(("file://".to_string(), prefix)),
        "s3" | "s3a" => {
            let bucket = root.host_str().ok_or_else(|| format!("no bucket in {root}"))?;
            Ok((format!("s3://{bucket}"), prefix))
        }
        other => Err(format!("its files are on {other}://, which only Delta's own reader opens")),
    }
}

/// Splits files into at most `groups` groups of about equal bytes.
fn balanced_groups(mut files: Vec<PartitionedFile>, groups: usize) -> Vec<FileGroup> {
    files.sort_by_key(|file| std::cmp::Reverse(file.object_meta.size));
    let mut buckets: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups.max(1).min(files.len().max(1))];
    for file in files {
        let lightest = buckets.iter_mut().min_by_key(|(bytes, _)| *bytes).expect("at least one group");
        lightest.0 += file.object_meta.size;
        lightest.1.push(file);
    }
    buckets.into_iter().filter(|(_, files)| !files.is_empty()).map(|(_, files)| FileGroup::new(files)).collect()
}

#[async_trait]
impl TableProvider for SnapshotFiles {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters prune partitions and row groups, and are applied again above.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (file_schema, partition_fields, position) = self.layout()?;
        let passing = self.files_passing(&partition_fields, filters)?;
        if passing.is_empty() {
            let projected = match projection {
                Some(columns) => Arc::new(self.schema.project(columns)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let mut statistics = Statistics::new_unknown(&self.schema);
        let kept_rows: Option<u64> = passing.iter().map(|(_, rows)| *rows).sum();
        let files: Vec<PartitionedFile> = passing.into_iter().map(|(file, _)| file).collect();
        if let Some(rows) = kept_rows {
            statistics.num_rows = Precision::Exact(rows as usize);
        }
        statistics.total_byte_size = Precision::Inexact(files.iter().map(|f| f.object_meta.size as usize).sum());
        // Statistics are in the scan's column order: files, then partitions.
        statistics.column_statistics = vec![Default::default(); self.schema.fields().len()];
        let projection: Vec<usize> = match projection {
            Some(columns) => columns.iter().map(|column| position[*column]).collect(),
            None => position.clone(),
        };
        // A plain Parquet source, with no reader of this process's object
        // stores in it: the scheduler plans without the lake's credentials,
        // each executor reads with its own (`stores`).
        let table_schema = TableSchema::builder(file_schema).with_table_partition_cols(partition_fields).build();
        let source = ParquetSource::new(table_schema).with_table_parquet_options(state.table_options().parquet.clone());
        let store = ObjectStoreUrl::parse(&self.store)?;
        let groups = balanced_groups(files, state.config().target_partitions());
        let config = FileScanConfigBuilder::new(store, Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(Some(projection))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

impl SnapshotFiles {
    /// The JSON form `codec` ships.
    pub fn to_json(&self) -> DfResult<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| DataFusionError::Internal(format!("encoding {}: {e}", self.table)))
    }

    /// Back from `to_json`, with the table's columns.
    pub fn from_json(json: &[u8], schema: SchemaRef) -> DfResult<SnapshotFiles> {
        let mut files: SnapshotFiles = serde_json::from_slice(json)
            .map_err(|e| DataFusionError::Internal(format!("decoding a lake table of the plan: {e}")))?;
        files.schema = schema;
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_roots_split_into_a_store_and_a_path_inside_it() {
        let local = url::Url::parse("file:///tmp/lake/silver/sales_master/").unwrap();
        assert_eq!(store_and_prefix(&local).unwrap(), ("file://".to_string(), "tmp/lake/silver/sales_master".to_string()));
        let bucket = url::Url::parse("s3://silver/sales_master/").unwrap();
        assert_eq!(store_and_prefix(&bucket).unwrap(), ("s3://silver".to_string(), "sales_master".to_string()));
        let prefixed = url::Url::parse("s3://lake/p/gold/kpi_revenue").unwrap();
        assert_eq!(store_and_prefix(&prefixed).unwrap(), ("s3://lake".to_string(), "p/gold/kpi_revenue".to_string()));
        assert!(store_and_prefix(&url::Url::parse("gs://x/y").unwrap()).is_err());
        assert!(store_and_prefix(&url::Url::parse("memory:///t").unwrap()).is_err());
    }

    #[test]
    fn groups_hold_about_equal_bytes() {
        let files: Vec<PartitionedFile> =
            [90, 50, 40, 30, 20, 10].iter().enumerate().map(|(i, size)| PartitionedFile::new(format!("f{i}"), *size)).collect();
        let groups = balanced_groups(files, 2);
        let bytes: Vec<u64> = groups.iter().map(|g| g.iter().map(|f| f.object_meta.size).sum()).collect();
        assert_eq!(bytes, [120, 120]);
        assert_eq!(balanced_groups(vec![PartitionedFile::new("one", 5)], 8).len(), 1);
    }
}
