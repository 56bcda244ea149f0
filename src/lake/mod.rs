//! The lake: every table is a Delta Lake table under one lake URL.
//!
//! `Lake` turns `(layer, table)` into a Delta table URL (see `location`) and
//! writes partitions atomically (one Delta commit that replaces exactly one
//! date). `session::SessionBuilder` builds the DataFusion sessions that show
//! every table as `<layer>.<table>` (see `names`, `catalog`, `views`). The
//! same code path serves `file://` and `s3://`: nothing here assumes a local
//! filesystem.

pub mod at_rest;
pub mod catalog;
pub mod history;
pub mod location;
pub mod memory_pool;
pub mod names;
pub mod partition_write;
pub mod pii;
pub mod plain_types;
pub mod s3;
pub mod upkeep;
pub mod session;
pub mod snapshot_files;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Once};

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, BooleanArray, Date32Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use deltalake::kernel::transaction::CommitProperties;
use delta_kernel::expressions::Scalar;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::Transaction;
use deltalake::parquet::basic::{Compression, Encoding};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use deltalake::protocol::SaveMode;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableBuilder, ObjectStore};
use indexmap::IndexMap;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

pub use partition_write::{PartitionWritten, WriteProfile};

use crate::config::Config;
use crate::error::{Error, Result};
pub use location::LakeLocation;
pub use names::{Layer, TableName};

/// The folders of the stored layers (`Layer::STORED`), top to bottom.
pub const LAYERS: [&str; 3] = [Layer::Bronze.as_str(), Layer::Silver.as_str(), Layer::Gold.as_str()];

/// One table write: the rows of one date partition of `layer.table`.
pub struct PartitionWrite<'a> {
    pub layer: &'a str,
    pub table: &'a str,
    /// Date-typed partition column (`_ingestion_date` or `snapshot_date`).
    pub partition_column: &'a str,
    pub date: NaiveDate,
    pub rows: Rows,
}

impl<'a> PartitionWrite<'a> {
    /// The rows of partition `date` of the table `name`.
    pub fn to(name: &'a TableName, partition_column: &'a str, date: NaiveDate, rows: Rows) -> PartitionWrite<'a> {
        PartitionWrite { layer: name.layer.as_str(), table: name.table(), partition_column, date, rows }
    }
}

/// The rows of a write: already in memory, or streams of rows written as
/// they come (a query's partitions, a source being extracted), each stream
/// by its own writer, so large writes never sit whole in memory.
pub enum Rows {
    Batches { schema: SchemaRef, batches: Vec<RecordBatch> },
    Streams { schema: SchemaRef, streams: Vec<SendableRecordBatchStream> },
}

/// Handle on the lake. Cheap to clone.
#[derive(Clone)]
pub struct Lake {
    location: LakeLocation,
    storage_options: HashMap<String, String>,
    /// Create missing S3 buckets instead of failing (`--create-buckets`).
    create_buckets: bool,
    /// The PII columns' stored form when `[pii] encrypt_at_rest` is on.
    at_rest: Option<at_rest::AtRest>,
}

/// Shows where the lake is, never the storage options (they hold secrets).
impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("location", &self.location.describe()).finish_non_exhaustive()
    }
}

/// Retries of one S3 request inside object_store, kept small so that an
/// unreachable server fails in seconds; the pipeline retries whole stages.
const S3_MAX_RETRIES: &str = "3";
const S3_RETRY_TIMEOUT: &str = "15s";
const S3_CONNECT_TIMEOUT: &str = "5s";

/// The object_store / deltalake options of an S3 lake (`AWS_*` keys, with
/// secrets: never print), from `[s3]` and the `AWS_*` variables: the lake's,
/// and a cluster executor's (`crate::cluster`).
pub fn s3_storage_options(s3: &crate::config::S3Config) -> HashMap<String, String> {
    let mut storage_options = HashMap::new();
    let mut put = |key: &str, value: Option<&String>| {
        if let Some(value) = value {
            storage_options.insert(key.to_string(), value.clone());
        }
    };
    put("AWS_ENDPOINT_URL", s3.endpoint.as_ref());
    put("AWS_ACCESS_KEY_ID", s3.access_key_id.as_ref());
    put("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.as_ref());
    put("AWS_REGION", s3.region.as_ref().or(Some(&"us-east-1".to_string())));
    storage_options.insert("AWS_ALLOW_HTTP".into(), s3.allow_http.to_string());
    storage_options.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), s3.virtual_hosted_style.to_string());
    // Atomic put-if-absent (If-None-Match: *) makes concurrent Delta
    // commits safe without a DynamoDB lock table.
    storage_options.insert("aws_conditional_put".into(), "etag".into());
    storage_options.insert("max_retries".into(), S3_MAX_RETRIES.into());
    storage_options.insert("retry_timeout".into(), S3_RETRY_TIMEOUT.into());
    storage_options.insert("connect_timeout".into(), S3_CONNECT_TIMEOUT.into());
    storage_options
}

impl Lake {
    /// Opens the lake described by the configuration (no I/O yet).
    pub fn new(config: &Config) -> Result<Lake> {
        let location = LakeLocation::parse(&config.lake, &config.s3.buckets)?;
        let mut storage_options = HashMap::new();
        if location.is_s3() {
            static REGISTER_S3: Once = Once::new();
            REGISTER_S3.call_once(|| deltalake::aws::register_handlers(None));
            storage_options = s3_storage_options(&config.s3);
        }
        Ok(Lake {
            location,
            storage_options,
            create_buckets: config.s3.create_buckets,
            at_rest: at_rest::AtRest::from_policy(&config.pii),
        })
    }

    /// How PII is stored, when it is encrypted at rest (see `at_rest`).
    pub fn at_rest(&self) -> Option<&at_rest::AtRest> {
        self.at_rest.as_ref()
    }

    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// Storage options handed to deltalake / object_store (contains secrets:
    /// never print).
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// The Delta table handle for `layer.table`; it may not exist yet
    /// (`version()` is then `None`). A local table's folder is created.
    pub async fn table(&self, layer: &str, table: &str) -> Result<DeltaTable> {
        let url = self.location.table_url(layer, table);
        if let Some(path) = local_path(&url) {
            std::fs::create_dir_all(&path).map_err(|e| Error::lake(format!("{layer}.{table}"), e))?;
        }
        DeltaTable::try_from_url_with_storage_options(url, self.storage_options.clone())
            .await
            .map_err(|e| Error::lake(format!("{layer}.{table}"), e))
    }

    /// The table if it exists.
    pub async fn existing_table(&self, layer: &str, table: &str) -> Result<Option<DeltaTable>> {
        let url = self.location.table_url(layer, table);
        if local_path(&url).is_some_and(|path| !path.join("_delta_log").exists()) {
            return Ok(None);
        }
        let handle = self.table(layer, table).await?;
        Ok(handle.version().is_some().then_some(handle))
    }

    /// Replaces exactly one date partition of a table in one Delta commit:
    /// readers see the old partition or the new one, other dates stay, and a
    /// rerun of the same date gives the same table content. The rows are
    /// encoded by several writers at once (see `partition_write`). A table
    /// that does not exist yet is created by the same commit.
    pub async fn replace_partition(&self, write: PartitionWrite<'_>) -> Result<PartitionWritten> {
        let name = format!("{}.{}", write.layer, write.table);
        let table = self.table(write.layer, write.table).await?;
        let days = datafusion::arrow::datatypes::Date32Type::from_naive_date(write.date);
        let (schema, streams) = match write.rows {
            Rows::Batches { schema, batches } => {
                let rows = batches.iter().map(|b| b.num_rows()).sum();
                let streams = partition_write::batches_as_streams(schema.clone(), batches, partition_write::writers_for(rows));
                (schema, streams)
            }
            Rows::Streams { schema, streams } => (schema, streams),
        };
        let (schema, streams) = (plain_types::schema(&schema), streams.into_iter().map(plain_types::stream).collect());
        let (schema, streams) = match &self.at_rest {
            Some(at_rest) => {
                let table_name = TableName::owned(write.layer.parse()?, write.table);
                check_stored_as_text(&table, &name, &at_rest.encrypted_columns(&table_name, &schema), &schema)?;
                at_rest.encrypt_streams(&table_name, schema, streams)
            }
            None => (schema, streams),
        };
        let commit = CommitProperties::default().with_metadata([
            ("medallion.table".to_string(), serde_json::json!(name)),
            ("medallion.partition".to_string(), serde_json::json!(write.date.to_string())),
        ]);
        let target = partition_write::PartitionTarget {
            name: &name,
            url: self.location.table_url(write.layer, write.table),
            storage_options: self.storage_options.clone(),
            partition_column: write.partition_column,
            days,
            date_text: write.date.to_string(),
            properties: writer_properties(&text_columns(&schema)),
            target_file_bytes: TARGET_FILE_BYTES,
            commit,
        };
        partition_write::write(table, schema, target, streams).await
    }

    /// An appender for `layer.table` (partitioned by the `Date32` column
    /// `partition_column`); see `Appender`. `unique_columns` (ids, raw
    /// payloads) are written without a Parquet dictionary, which would only
    /// cost time there; `increasing_columns` (integers or timestamps that
    /// mostly grow, like offsets) are delta-encoded: a few bits per value
    /// instead of eight bytes.
    pub fn appender(
        &self,
        layer: &str,
        table: &str,
        partition_column: &str,
        unique_columns: &[&str],
        increasing_columns: &[&str],
    ) -> Appender {
        Appender {
            lake: self.clone(),
            layer: layer.to_string(),
            table: table.to_string(),
            partition_column: partition_column.to_string(),
            properties: appender_properties(unique_columns, increasing_columns),
            handle: None,
            verified: std::collections::BTreeSet::new(),
            interrupt_next: false,
        }
    }

    /// The source positions recorded by `Appender::append` for `keys`.
    pub async fn committed_positions(&self, layer: &str, table: &str, keys: &[String]) -> Result<BTreeMap<String, i64>> {
        let name = format!("{layer}.{table}");
        let mut positions = BTreeMap::new();
        let Some(delta) = self.existing_table(layer, table).await? else { return Ok(positions) };
        let snapshot = delta.snapshot().map_err(|e| Error::lake(&name, e))?;
        for key in keys {
            if let Some(next) = snapshot
                .transaction_version(delta.log_store().as_ref(), app_id(key))
                .await
                .map_err(|e| Error::lake(&name, e))?
            {
                positions.insert(key.clone(), next);
            }
        }
        Ok(positions)
    }

    /// Replaces a whole (small) table in one commit.
    pub async fn overwrite(&self, layer: &str, table: &str, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<i64> {
        let name = format!("{layer}.{table}");
        let delta = self.table(layer, table).await?;
        let batches = plain_types::batches(batches).map_err(|e| Error::lake(&name, e))?;
        let schema = plain_types::schema(&schema);
        let properties = writer_properties(&text_columns(&schema));
        let batches = batches_or_empty(schema, batches);
        let written = delta
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_writer_properties(properties)
            .await
            .map_err(|e| Error::lake(&name, e))?;
        Ok(written.version().unwrap_or_default() as i64)
    }

    /// Appends rows to a table (created on first use) in one Delta commit.
    /// Used for logs such as `gold.pipeline_runs`, where every write adds.
    pub async fn append(&self, layer: &str, table: &str, batches: Vec<RecordBatch>) -> Result<i64> {
        let name = format!("{layer}.{table}");
        let batches = plain_types::batches(batches).map_err(|e| Error::lake(&name, e))?;
        let handle = self.table(layer, table).await?;
        let creating = handle.version().is_none();
        match self.append_with(&name, handle, batches.clone(), creating).await {
            // Another writer created the table first: append to theirs.
            Err(_) if creating && self.table(layer, table).await?.version().is_some() => {
                let handle = self.table(layer, table).await?;
                self.append_with(&name, handle, batches, false).await
            }
            written => written,
        }
    }

    async fn append_with(&self, name: &str, handle: DeltaTable, batches: Vec<RecordBatch>, creating: bool) -> Result<i64> {
        let commit = if creating { create_once() } else { CommitProperties::default() }
            .with_metadata([("medallion.table".to_string(), serde_json::json!(name))]);
        let written = handle
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(commit)
            .await
            .map_err(|e| Error::lake(name, e))?;
        Ok(written.version().unwrap_or_default() as i64)
    }

    /// Every Delta table of the lake, layer by layer.
    pub async fn every_table(&self) -> Result<Vec<TableName>> {
        let mut every = Vec::new();
        for layer in Layer::STORED {
            for table in self.list_tables(layer.as_str()).await? {
                every.push(TableName::owned(layer, table));
            }
        }
        Ok(every)
    }

    /// `every_table` and the audit log's tables (`Layer::IN_LAKE`): what
    /// upkeep (`status`, `optimize`, `vacuum`) goes through. Never for a
    /// session: the audit log is for admins only (see `session`).
    pub async fn every_table_and_audit(&self) -> Result<Vec<TableName>> {
        let mut every = self.every_table().await?;
        for table in self.list_tables(Layer::Audit.as_str()).await? {
            every.push(TableName::owned(Layer::Audit, table));
        }
        Ok(every)
    }

    /// Names of the Delta tables in a layer (folders holding a `_delta_log`).
    pub async fn list_tables(&self, layer: &str) -> Result<Vec<String>> {
        let store = self.layer_store(layer)?;
        let listing = match store.list_with_delimiter(None).await {
            Ok(listing) => listing,
            Err(deltalake::ObjectStoreError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(Error::lake(format!("layer {layer}"), e)),
        };
        let mut names = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(name) = prefix.parts().last().map(|p| p.as_ref().to_string()) else { continue };
            let log = prefix.clone().join("_delta_log");
            let mut entries = store.list(Some(&log));
            if entries.try_next().await.map_err(|e| Error::lake(format!("{layer}.{name}"), e))?.is_some() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// On S3, checks that every bucket of the lake exists, creating the
    /// missing ones when asked (`--create-buckets`); otherwise fails naming
    /// the missing bucket. A no-op for local lakes.
    pub async fn ensure_buckets(&self) -> Result<()> {
        if !self.location.is_s3() {
            return Ok(());
        }
        let client = s3::BucketClient::new(&self.storage_options)?;
        client.ensure(&self.location.buckets(&LAYERS), self.create_buckets).await
    }

    /// Checks that the lake can be written, before any work starts: the S3
    /// buckets exist (see `ensure_buckets`), then a probe object is written
    /// and removed in each layer. Fails with one line naming the layer and
    /// the reason, leaving the lake as it was.
    pub async fn check_writable(&self) -> Result<()> {
        self.ensure_buckets().await?;
        for layer in LAYERS {
            let store = self.layer_store(layer)?;
            let probe = deltalake::Path::from("_medallion_write_probe");
            store
                .put(&probe, bytes::Bytes::from_static(b"probe").into())
                .await
                .map_err(|e| Error::lake(format!("layer {layer} at {}", self.location.layer_url(layer)), e))?;
            let _ = store.delete(&probe).await;
        }
        Ok(())
    }

    /// An object store rooted at a layer's folder.
    pub fn layer_store(&self, layer: &str) -> Result<Arc<dyn ObjectStore>> {
        let url = self.location.layer_url(layer);
        let builder = DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| Error::lake(format!("layer {layer}"), e))?
            .with_storage_options(self.storage_options.clone());
        let log_store = builder.build_storage().map_err(|e| Error::lake(format!("layer {layer}"), e))?;
        Ok(log_store.object_store(None))
    }
}

/// Appends rows to one table, each append one Delta commit that also
/// records, as Delta application transactions (`txn` actions), the source
/// position each key reached: the rows and the positions land together or
/// not at all.
///
/// Made for a writer that appends often (the stream): the table's Delta
/// state is kept from one commit to the next instead of being read back
/// from the log, and the rows of a batch that holds one date (the usual
/// case) go to their partition without being copied. The first append to a
/// table that does not exist yet creates it.
///
/// Positions are fenced, so that two writers of one key (two streams on one
/// partition, or one that lost it to another) never both land: when the
/// appender (re)reads the table, it checks that the table has recorded for
/// each key what the caller expects; between its own commits, Delta's
/// conflict check fails a commit when a concurrent one recorded one of its
/// keys. Either way the append fails with `Error::PositionsTaken`.
pub struct Appender {
    lake: Lake,
    layer: String,
    table: String,
    partition_column: String,
    properties: WriterProperties,
    /// The table as of our last commit; `None` until the first append and
    /// after a failed one (the next append reads it again).
    handle: Option<DeltaTable>,
    /// The position keys whose recorded positions were checked against the
    /// table since `handle` was read: a kept handle has seen no other
    /// writer's commit since, so a key met for the first time is checked
    /// against it (a stream reading a partition it had not read before; two
    /// streams on one topic once both landed a partition because of it).
    verified: std::collections::BTreeSet<String>,

    /// Test hook (see `interrupt_next_append`).
    interrupt_next: bool,
}

impl Appender {
    /// Test hook: the next append to the (existing) table writes its data
    /// files, then fails before its log entry, as a crash in the middle of
    /// a commit would.
    pub fn interrupt_next_append(&mut self) {
        self.interrupt_next = true;
    }

    /// Appends `batches` in one commit recording `positions` (key → next
    /// position); `expected` is what the caller knows the table has
    /// recorded for those keys (a key absent from it: nothing yet).
    pub async fn append(
        &mut self,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        positions: &BTreeMap<String, i64>,
        expected: &BTreeMap<String, i64>,
    ) -> Result<i64> {
        let name = format!("{}.{}", self.layer, self.table);
        let schema = plain_types::schema(&schema);
        let batches = plain_types::batches(batches).map_err(|e| Error::lake(&name, e))?;
        let mut handle = match self.handle.take() {
            Some(handle) => handle,
            None => {
                self.verified.clear();
                self.lake.table(&self.layer, &self.table).await?
            }
        };
        let unverified: BTreeMap<String, i64> =
            positions.iter().filter(|(key, _)| !self.verified.contains(*key)).map(|(key, next)| (key.clone(), *next)).collect();
        check_recorded_positions(&handle, &name, &unverified, expected).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let transactions: Vec<Transaction> =
            positions.iter().map(|(key, next)| Transaction::new_with_last_update(app_id(key), *next, Some(now))).collect();
        let commit = CommitProperties::default().with_application_transactions(transactions);
        if handle.version().is_none() {
            if self.interrupt_next {
                return Err(Error::lake(&name, "an append can be interrupted only once the table exists"));
            }
            handle = self.create(&name, schema.clone(), handle).await?;
            check_recorded_positions(&handle, &name, positions, expected).await?;
        }
        // Checked now, or earlier against this handle: from here on Delta's
        // conflict check fences every key (another writer's commit after
        // the handle's version that records one fails ours).
        self.verified.extend(positions.keys().cloned());
        let mut writer = RecordBatchWriter::for_table(&handle)
            .map_err(|e| Error::lake(&name, e))?
            .with_writer_properties(self.properties.clone())
            .with_commit_properties(commit);
        for batch in &batches {
            for (partition, rows) in split_by_date(batch, &self.partition_column).map_err(|e| Error::lake(&name, e))? {
                writer.write_partition(rows, &partition, WriteMode::Default).await.map_err(|e| Error::lake(&name, e))?;
            }
        }
        if std::mem::take(&mut self.interrupt_next) {
            writer.flush().await.map_err(|e| Error::lake(&name, e))?;
            return Err(Error::lake(&name, "append interrupted after its data files, before its log entry (test hook)"));
        }
        // With no rows this still commits: the positions must advance.
        let read = handle.version();
        let version = writer.flush_and_commit(&mut handle).await.map_err(|e| match is_concurrent_transaction(&e) {
            true => positions_taken(&name, positions.keys()),
            false => Error::lake(&name, e),
        })?;
        // Other writers committed between the version this commit read and
        // its own: Delta checked their positions against this commit's keys
        // only, and the handle may not hold what they recorded. The next
        // append reads the table again and checks all its keys.
        let others_committed = read.map(|read| read as i64 + 1) != Some(version as i64);
        self.handle = if others_committed { None } else { Some(handle) };
        Ok(version as i64)
    }
}

impl Appender {
    /// Creates the table, empty, with its schema and partitioning, in a
    /// commit of its own that records no position: a first append that
    /// created the table would record its positions unchecked (Delta has no
    /// earlier version to check a concurrent creator's against), so two
    /// streams starting on an empty lake could both land their first batch.
    /// Another writer creating it meanwhile is fine: the table is read again
    /// (see `create_once`: the creation is not retried on top of theirs).
    async fn create(&self, name: &str, schema: SchemaRef, handle: DeltaTable) -> Result<DeltaTable> {
        let created = handle
            .write(batches_or_empty(schema, Vec::new()))
            .with_save_mode(SaveMode::Append)
            .with_partition_columns([self.partition_column.as_str()])
            .with_writer_properties(self.properties.clone())
            .with_commit_properties(create_once())
            .await;
        let table = self.lake.table(&self.layer, &self.table).await?;
        match (created, table.version()) {
            (_, Some(_)) => Ok(table),
            (Err(err), None) => Err(Error::lake(name, err)),
            (Ok(_), None) => Err(Error::lake(name, "the table was created but cannot be read back")),
        }
    }
}

/// The commit properties of a write that creates a table: no retry. When
/// another writer created the table first, delta-rs would otherwise retry
/// the creation as the table's next version, a second schema and table id
/// on top of theirs, and every writer holding the first version then fails
/// with "Metadata changed since last commit" (two streams starting on an
/// empty lake: one of them failed now and then). Without a retry the
/// creation fails and the caller reads the table the other writer made.
fn create_once() -> CommitProperties {
    CommitProperties::default().with_max_retries(0)
}

/// Fails with `Error::PositionsTaken` unless `table` has recorded, for each
/// key of `positions`, the position `expected` gives (or none when absent).
async fn check_recorded_positions(
    table: &DeltaTable,
    name: &str,
    positions: &BTreeMap<String, i64>,
    expected: &BTreeMap<String, i64>,
) -> Result<()> {
    if table.version().is_none() || positions.is_empty() {
        return Ok(());
    }
    let snapshot = table.snapshot().map_err(|e| Error::lake(name, e))?;
    let mut moved = Vec::new();
    for key in positions.keys() {
        let recorded =
            snapshot.transaction_version(table.log_store().as_ref(), app_id(key)).await.map_err(|e| Error::lake(name, e))?;
        if recorded != expected.get(key).copied() {
            moved.push(key);
        }
    }
    match moved.is_empty() {
        true => Ok(()),
        false => Err(positions_taken(name, moved.into_iter())),
    }
}

fn positions_taken<'k>(name: &str, keys: impl Iterator<Item = &'k String>) -> Error {
    Error::PositionsTaken { table: name.to_string(), keys: keys.cloned().collect::<Vec<_>>().join(", ") }
}

/// Whether a commit failed because a concurrent commit recorded one of its
/// application transactions (by type).
fn is_concurrent_transaction(err: &deltalake::DeltaTableError) -> bool {
    matches!(
        err,
        deltalake::DeltaTableError::Transaction {
            source: deltalake::kernel::transaction::TransactionError::CommitConflict(
                deltalake::kernel::transaction::CommitConflictError::ConcurrentTransaction
            )
        }
    )
}

/// `batches`, or one empty batch of `schema` when there is none: a Delta
/// write needs at least one batch to know the schema, and a write of no rows
/// still commits (it replaces a partition with nothing, or moves positions).
/// Encryption at rest stores the protected columns as text; a table that
/// holds one of them with another type (written before encryption was
/// turned on) cannot take the encrypted rows: one line saying what to do.
fn check_stored_as_text(table: &DeltaTable, name: &str, encrypted: &[usize], schema: &SchemaRef) -> Result<()> {
    if encrypted.is_empty() || table.version().is_none() {
        return Ok(());
    }
    let stored = table.snapshot().map_err(|e| Error::lake(name, e))?.schema();
    for &index in encrypted {
        let column = schema.field(index).name();
        if let Some(field) = stored.field(column) {
            if *field.data_type() != deltalake::kernel::DataType::STRING {
                return Err(Error::Config(format!(
                    "{name}.{column} is stored as {} but [pii] encrypt_at_rest stores PII columns as encrypted text: \
                     rebuild {name} (remove its folder and rerun) or turn encrypt_at_rest off",
                    field.data_type()
                )));
            }
        }
    }
    Ok(())
}

fn batches_or_empty(schema: SchemaRef, mut batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    batches
}

/// The rows of `batch` per value of its `Date32` column `column`, each with
/// its Delta partition value: the batch itself when all rows share one date.
fn split_by_date(batch: &RecordBatch, column: &str) -> std::result::Result<Vec<(IndexMap<String, Scalar>, RecordBatch)>, String> {
    let Some(dates) = batch.column_by_name(column).and_then(|c| c.as_any().downcast_ref::<Date32Array>()) else {
        return Err(format!("partition column {column} is missing or not a date"));
    };
    if dates.null_count() > 0 {
        return Err(format!("partition column {column} has nulls"));
    }
    let partition_of = |rows: RecordBatch| -> std::result::Result<_, String> {
        let values = rows.column_by_name(column).expect("the column checked above");
        let value = Scalar::from_array(values.as_ref(), 0).ok_or_else(|| format!("partition column {column}: no value"))?;
        Ok((IndexMap::from([(column.to_string(), value)]), rows))
    };
    let values = dates.values();
    let Some(first) = values.first() else { return Ok(Vec::new()) };
    if values.iter().all(|d| d == first) {
        return Ok(vec![partition_of(batch.clone())?]);
    }
    let distinct: std::collections::BTreeSet<i32> = values.iter().copied().collect();
    distinct
        .into_iter()
        .map(|date| {
            let mask = BooleanArray::from_iter(values.iter().map(|d| Some(*d == date)));
            let rows = filter_record_batch(batch, &mask).map_err(|e| e.to_string())?;
            partition_of(rows)
        })
        .collect()
}

/// Rows per Parquet row group: small enough that a writer holds little in
/// memory, large enough for good compression and scans.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Parquet files are rolled over at about this size.
const TARGET_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// What every Parquet file of the lake shares: row groups of
/// `ROW_GROUP_ROWS`, Snappy. Alone, it is what the lake wrote before
/// `writer_properties` (every column in a dictionary, page statistics).
pub(crate) fn base_writer_properties() -> WriterPropertiesBuilder {
    WriterProperties::builder().set_max_row_group_row_count(Some(ROW_GROUP_ROWS)).set_compression(Compression::SNAPPY)
}

/// Text columns keep a Parquet dictionary up to this size per column chunk:
/// enough for dimension-like values (countries, categories, product names);
/// a column with more distinct text falls back to plain encoding early
/// instead of hashing every value of the row group first.
const TEXT_DICTIONARY_BYTES: usize = 32 * 1024;

/// Parquet settings of the tables written in one piece (bronze, silver,
/// gold), given their text columns. Measured on scale-1000 Northwind with
/// `medallion bench-encode` (BENCHMARKS.md, batch path, 2026-12-03 evening): arrow-rs spends most of its encoding
/// time hashing values into dictionaries and comparing text for min/max
/// statistics, for little gain here, so
///   * numbers, dates and timestamps: no dictionary (plain, then Snappy),
///     min/max statistics per column chunk (row-group pruning, Delta's data
///     skipping), none per page;
///   * text: a small dictionary (`TEXT_DICTIONARY_BYTES`), no statistics
///     (min/max of names and addresses prune nothing in unsorted data).
/// Silver's encoding took 1.86 s of one core with every column in a
/// dictionary and page statistics, 0.81 s with these; its files are a
/// third larger (48 → 64 MB).
pub(crate) fn writer_properties(text_columns: &[&str]) -> WriterProperties {
    let mut builder = base_writer_properties()
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for column in text_columns {
        let path = ColumnPath::from(*column);
        builder = builder
            .set_column_dictionary_enabled(path.clone(), true)
            .set_column_dictionary_page_size_limit(path.clone(), TEXT_DICTIONARY_BYTES)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    builder.build()
}

/// The top-level text columns of `schema`.
pub(crate) fn text_columns(schema: &Schema) -> Vec<&str> {
    schema
        .fields()
        .iter()
        .filter(|field| matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
        .map(|field| field.name().as_str())
        .collect()
}

/// The settings of an `Appender` (stream tables): every column in a
/// dictionary except `unique_columns`, delta encoding for `increasing_columns`.
fn appender_properties(unique_columns: &[&str], increasing_columns: &[&str]) -> WriterProperties {
    let mut builder = base_writer_properties();
    for column in unique_columns.iter().chain(increasing_columns) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(*column), false);
    }
    for column in increasing_columns {
        builder = builder.set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED);
    }
    builder.build()
}

/// The Delta application id under which a source position key is recorded.
fn app_id(key: &str) -> String {
    format!("medallion-stream/{key}")
}

/// The filesystem path of a `file://` URL.
fn local_path(url: &url::Url) -> Option<std::path::PathBuf> {
    (url.scheme() == "file").then(|| url.to_file_path().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false), Field::new("day", DataType::Date32, false)]))
    }

    fn rows(n: &[i64], days: &[i32]) -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(n.to_vec())), Arc::new(Date32Array::from(days.to_vec()))])
            .unwrap()
    }

    #[test]
    fn a_batch_is_split_by_date_with_its_partition_values() {
        let one_date = split_by_date(&rows(&[1, 2], &[20782, 20782]), "day").unwrap();
        assert_eq!(one_date.len(), 1);
        assert_eq!(one_date[0].1.num_rows(), 2);
        // python: date(1970,1,1) + timedelta(20782) == date(2026,11,25)
        assert_eq!(one_date[0].0["day"].serialize(), "2026-11-25");

        let split = split_by_date(&rows(&[1, 2, 3, 4], &[20783, 20782, 20783, -1]), "day").unwrap();
        let groups: Vec<(String, Vec<i64>)> = split
            .iter()
            .map(|(partition, rows)| {
                let n = rows.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec();
                (partition["day"].serialize(), n)
            })
            .collect();
        assert_eq!(
            groups,
            [("1969-12-31".to_string(), vec![4]), ("2026-11-25".to_string(), vec![2]), ("2026-11-26".to_string(), vec![1, 3])]
        );
        assert!(split_by_date(&rows(&[1], &[0]), "missing").is_err());
    }

    /// A lake in the folder `dir`.
    fn lake_in(dir: &std::path::Path) -> Lake {
        let config = Config::load(crate::config::Overrides {
            lake: Some(dir.to_string_lossy().into_owned()),
            ..Default::default()
        })
        .unwrap();
        Lake::new(&config).unwrap()
    }

    #[tokio::test]
    async fn appends_create_the_table_then_add_rows_and_positions_in_each_commit() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_in(dir.path());
        let mut appender = lake.appender("bronze", "t", "day", &[], &["n"]);
        let positions = |next: i64| BTreeMap::from([("topic:0".to_string(), next)]);
        let none = BTreeMap::new();
        appender.append(schema(), vec![rows(&[1, 2], &[20782, 20782])], &positions(2), &none).await.unwrap();
        appender.append(schema(), vec![rows(&[3, 4, 5], &[20782, 20783, 20783])], &positions(5), &positions(2)).await.unwrap();
        // A batch with no rows still records how far the source was read.
        appender.append(schema(), Vec::new(), &positions(9), &positions(5)).await.unwrap();
        let keys = ["topic:0".to_string(), "topic:1".to_string()];
        assert_eq!(lake.committed_positions("bronze", "t", &keys).await.unwrap(), positions(9));

        // A fresh handle (as after a restart) sees every row once, in its
        // partition; version 0 created the table, empty, recording nothing.
        let table = lake.existing_table("bronze", "t").await.unwrap().unwrap();
        assert_eq!(table.version(), Some(3));
        let session = catalog::new_session();
        assert!(catalog::register_table(&session, &lake, "bronze", "t").await.unwrap());
        let counted = session
            .sql("SELECT CAST(day AS VARCHAR) AS day, count(*) AS n, sum(n) AS total FROM bronze.t GROUP BY day ORDER BY day")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&counted).unwrap().to_string();
        assert!(text.contains("| 2026-11-25 | 3 | 6     |"), "{text}");
        assert!(text.contains("| 2026-11-26 | 2 | 9     |"), "{text}");
    }

    #[tokio::test]
    async fn two_writers_creating_one_table_at_once_leave_one_creation_and_both_append() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_in(dir.path());
        let none = BTreeMap::new();
        // Both found no table; the first creates it, then the second tries.
        let first = lake.appender("bronze", "t", "day", &[], &["n"]);
        let second = lake.appender("bronze", "t", "day", &[], &["n"]);
        let (seen_by_first, seen_by_second) = (lake.table("bronze", "t").await.unwrap(), lake.table("bronze", "t").await.unwrap());
        assert!(seen_by_first.version().is_none() && seen_by_second.version().is_none());
        first.create("bronze.t", schema(), seen_by_first).await.unwrap();
        let created = second.create("bronze.t", schema(), seen_by_second).await.unwrap();
        assert_eq!(created.version(), Some(0), "the second writer uses the first one's table");
        let log = dir.path().join("bronze/t/_delta_log");
        assert!(!log.join(format!("{:020}.json", 1)).exists(), "no second creation on top of the first");

        // Both append from the table as they read it: neither is refused.
        let (mut first, mut second) = (first, second);
        let positions = |key: &str| BTreeMap::from([(key.to_string(), 1)]);
        first.append(schema(), vec![rows(&[1], &[20782])], &positions("topic:0"), &none).await.unwrap();
        second.append(schema(), vec![rows(&[2], &[20782])], &positions("topic:1"), &none).await.unwrap();

        // The same for plain appends (pipeline_runs): one creation.
        let (a, b) = (lake.table("bronze", "logs").await.unwrap(), lake.table("bronze", "logs").await.unwrap());
        lake.append_with("bronze.logs", a, vec![rows(&[1], &[20782])], true).await.unwrap();
        assert!(lake.append_with("bronze.logs", b, vec![rows(&[2], &[20782])], true).await.is_err(), "a creation is not retried");
        lake.append("bronze", "logs", vec![rows(&[3], &[20782])]).await.unwrap();
        let logs = lake.existing_table("bronze", "logs").await.unwrap().unwrap();
        assert_eq!(logs.version(), Some(1));
    }

    #[tokio::test]
    async fn two_appenders_of_one_key_never_both_record_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_in(dir.path());
        let positions = |key: &str, next: i64| BTreeMap::from([(key.to_string(), next)]);
        let none = BTreeMap::new();
        let mut first = lake.appender("bronze", "t", "day", &[], &["n"]);
        first.append(schema(), vec![rows(&[1], &[20782])], &positions("topic:0", 1), &none).await.unwrap();

        // A second writer that believes partition 0 is unread is refused on
        // reading the table; one of another partition is not.
        let mut second = lake.appender("bronze", "t", "day", &[], &["n"]);
        let refused = second.append(schema(), vec![rows(&[2], &[20782])], &positions("topic:0", 2), &none).await;
        assert!(matches!(refused, Err(Error::PositionsTaken { .. })), "{refused:?}");
        let mut other = lake.appender("bronze", "t", "day", &[], &["n"]);
        other.append(schema(), vec![rows(&[3], &[20782])], &positions("topic:1", 1), &none).await.unwrap();

        // The second takes partition 0 over from where it stands; the first,
        // whose table state predates that, is refused by the conflict check.
        let mut second = lake.appender("bronze", "t", "day", &[], &["n"]);
        second.append(schema(), vec![rows(&[4], &[20782])], &positions("topic:0", 2), &positions("topic:0", 1)).await.unwrap();
        let stale = first.append(schema(), vec![rows(&[5], &[20782])], &positions("topic:0", 2), &positions("topic:0", 1)).await;
        assert!(matches!(stale, Err(Error::PositionsTaken { .. })), "{stale:?}");
        let keys = ["topic:0".to_string(), "topic:1".to_string()];
        let recorded = lake.committed_positions("bronze", "t", &keys).await.unwrap();
        assert_eq!(recorded, BTreeMap::from([("topic:0".to_string(), 2), ("topic:1".to_string(), 1)]));
        let session = catalog::new_session();
        assert!(catalog::register_table(&session, &lake, "bronze", "t").await.unwrap());
        let batches = session.sql("SELECT sum(n) FROM bronze.t").await.unwrap().collect().await.unwrap();
        let total = datafusion::arrow::compute::cast(batches[0].column(0), &datafusion::arrow::datatypes::DataType::Int64).unwrap();
        let total = total.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(0);
        assert_eq!(total, 1 + 3 + 4, "rows 2 and 5 were never committed");
    }

    #[tokio::test]
    async fn positions_recorded_by_another_writer_between_two_of_our_commits_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_in(dir.path());
        let positions = |key: &str, next: i64| BTreeMap::from([(key.to_string(), next)]);
        let none = BTreeMap::new();
        let mut first = lake.appender("bronze", "t", "day", &[], &["n"]);
        first.append(schema(), vec![rows(&[1], &[20782])], &positions("topic:1", 1), &none).await.unwrap();
        let mut second = lake.appender("bronze", "t", "day", &[], &["n"]);
        second.append(schema(), vec![rows(&[2], &[20782])], &positions("topic:0", 1), &none).await.unwrap();
        // Another partition: Delta lets it commit after the second's commit,
        // and the first's table state now holds what the second recorded.
        first.append(schema(), vec![rows(&[3], &[20782])], &positions("topic:2", 1), &none).await.unwrap();
        // The first still believes partition 0 unread: refused, not doubled.
        let doubled = first.append(schema(), vec![rows(&[4], &[20782])], &positions("topic:0", 1), &none).await;
        assert!(matches!(doubled, Err(Error::PositionsTaken { .. })), "{doubled:?}");
        let recorded = lake.committed_positions("bronze", "t", &["topic:0".to_string()]).await.unwrap();
        assert_eq!(recorded, BTreeMap::from([("topic:0".to_string(), 1)]));
    }

    #[tokio::test]
    async fn a_key_met_for_the_first_time_is_checked_even_when_no_one_committed_since_our_last_commit() {
        // As two streams without a group did: one recorded partition 0 long
        // before the other, busy with partition 1, reached it.
        let dir = tempfile::tempdir().unwrap();
        let lake = lake_in(dir.path());
        let positions = |key: &str, next: i64| BTreeMap::from([(key.to_string(), next)]);
        let none = BTreeMap::new();
        let mut first = lake.appender("bronze", "t", "day", &[], &["n"]);
        first.append(schema(), vec![rows(&[1], &[20782])], &positions("topic:0", 1), &none).await.unwrap();
        let mut second = lake.appender("bronze", "t", "day", &[], &["n"]);
        second.append(schema(), vec![rows(&[2], &[20782])], &positions("topic:1", 1), &none).await.unwrap();
        second.append(schema(), vec![rows(&[3], &[20782])], &positions("topic:1", 2), &positions("topic:1", 1)).await.unwrap();
        // Nobody committed between the second's two commits: its table state
        // is current, and it shows partition 0 taken.
        let both = BTreeMap::from([("topic:0".to_string(), 1), ("topic:1".to_string(), 3)]);
        let doubled = second.append(schema(), vec![rows(&[4], &[20782])], &both, &positions("topic:1", 2)).await;
        assert!(matches!(doubled, Err(Error::PositionsTaken { .. })), "{doubled:?}");
        let keys = ["topic:0".to_string(), "topic:1".to_string()];
        let recorded = lake.committed_positions("bronze", "t", &keys).await.unwrap();
        assert_eq!(recorded, BTreeMap::from([("topic:0".to_string(), 1), ("topic:1".to_string(), 2)]));
    }
}
