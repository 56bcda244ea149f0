//! The DataFusion side of the lake: a session with one schema per `Layer`,
//! and Delta tables registered in it as `<layer>.<table>` (`bronze.orders`,
//! `silver.sales_master`, `gold.kpi_revenue`).
//!
//! Sessions are built by `session::SessionBuilder`; this module holds its
//! parts: the session settings (`new_session`), the registration of one
//! Delta table with those settings (`register_delta`), and `SwapSchema`, the
//! schema provider of every session, which replaces a table in one step so a
//! query never finds a table missing while a newer version is swapped in.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::DeltaTable;

use super::snapshot_files::SnapshotFiles;
use super::{Lake, Layer, TableName};
use crate::error::{Error, Result};

/// A fresh session with one empty schema per layer (`Layer::ALL`).
pub fn new_session() -> SessionContext {
    new_session_within(None)
}

/// `new_session`, whose queries hold at most `memory_limit` bytes in their
/// hash tables and sort buffers when given: past it, aggregates and sorts
/// spill to temporary files (first come first served, the last eighth
/// kept for operators that cannot spill, see `memory_pool`), and a join
/// whose build side does not fit fails in one line naming the limit.
pub fn new_session_within(memory_limit: Option<usize>) -> SessionContext {
    new_session_for(memory_limit, None)
}

/// `new_session_within`, whose Delta tables are registered through
/// `protection` (a role's view of PII, see `pii`) when given.
pub fn new_session_for(memory_limit: Option<usize>, protection: Option<super::pii::Protection>) -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true).with_target_partitions(
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
    );
    // Parquet files read without a declared schema keep plain Utf8/Binary.
    // The lake's tables declare theirs (`SnapshotFiles`: text as Utf8View),
    // and every write turns views back into plain arrays
    // (`plain_types`): a view batch keeps the Parquet pages it points
    // into alive, which once cost 10 GiB for silver at scale 1000.
    config.options_mut().execution.parquet.schema_force_view_types = false;
    // As delta-rs configures its own sessions: hash-join IN-list pushdown can
    // panic on dictionary-encoded partition keys.
    config.options_mut().optimizer.hash_join_inlist_pushdown_max_size = 0;
    config.options_mut().optimizer.hash_join_inlist_pushdown_max_distinct_values = 0;
    // An aggregate first pre-aggregates each input partition, then merges
    // the partial results by key. When the first 100 000 rows of a
    // partition leave more than a tenth as many groups (DataFusion's default:
    // four fifths), the pre-aggregation is skipped: on a few cores it costs
    // more than the rows it saves. gold.rfm_customers' COUNT(DISTINCT
    // order_id) per customer (830 000 groups from 2.16 M rows at scale 1000)
    // took 0.92 s with the default, 0.6 s with this.
    config.options_mut().execution.skip_partial_aggregation_probe_ratio_threshold = 0.1;
    if let Some(protection) = protection {
        config = config.with_extension(Arc::new(protection));
    }
    // delta-rs's planner, so write plans built from this session can run.
    let mut state = SessionStateBuilder::new();
    if let Some(limit) = memory_limit {
        let pool = Arc::new(super::memory_pool::SpillLastPool::new(limit));
        match datafusion::execution::runtime_env::RuntimeEnvBuilder::new().with_memory_pool(pool).build_arc() {
            Ok(runtime) => state = state.with_runtime_env(runtime),
            Err(e) => tracing::warn!("memory_limit_mb not applied, queries are unbounded: {}", crate::error::one_line(&e.to_string())),
        }
    }
    let state = state
        .with_config(config)
        .with_default_features()
        .with_query_planner(DeltaPlanner::new())
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog = ctx.catalog("datafusion").expect("the default catalog exists");
    for layer in Layer::ALL {
        let provider: Arc<dyn SchemaProvider> = Arc::new(SwapSchema::default());
        catalog.register_schema(layer.as_str(), provider).expect("the default catalog accepts schemas");
    }
    ctx
}

/// Registers (or replaces, to show a newer version) an opened Delta table
/// as `name`: as the Parquet files of the opened version
/// (`snapshot_files`), or, for a table only Delta's own reader can read, as
/// delta-rs's provider built from the session (refused on a cluster). The
/// session's object store registry gets the table's store either way.
pub async fn register_delta(ctx: &SessionContext, name: &TableName, delta: &DeltaTable) -> Result<()> {
    let state = ctx.state();
    delta.update_datafusion_session(&state).map_err(|e| Error::lake(name, e))?;
    let provider: Arc<dyn TableProvider> =
        delta.table_provider().with_session(Arc::new(state.clone())).await.map_err(|e| Error::lake(name, e))?;
    // The files of this version, read by a plain Parquet scan (locally and
    // on a cluster's executors); Delta's own scan only where the table needs it.
    let provider: Arc<dyn TableProvider> = match SnapshotFiles::unreadable(delta) {
        None => Arc::new(SnapshotFiles::of(name, delta, provider.schema())?),
        Some(reason) if crate::cluster::on_cluster(&state) => {
            return Err(Error::lake(name, format!("a cluster cannot read this table: {reason}")));
        }
        Some(_) => provider,
    };
    // A session built for a role hides the PII columns (see `pii`).
    let provider = match ctx.state().config().get_extension::<super::pii::Protection>() {
        Some(protection) => protection.wrap(name, provider),
        None => provider,
    };
    ctx.register_table(name.to_string(), provider)?;
    Ok(())
}

/// Opens `name` in the lake and registers it; `None` when the table does
/// not exist.
pub async fn open_and_register(ctx: &SessionContext, lake: &Lake, name: &TableName) -> Result<Option<DeltaTable>> {
    let Some(delta) = lake.existing_table(name.layer.as_str(), name.table()).await? else {
        return Ok(None);
    };
    register_delta(ctx, name, &delta).await?;
    Ok(Some(delta))
}

/// `open_and_register` for a table named by strings (the stream's call);
/// returns false when the table does not exist.
pub async fn register_table(ctx: &SessionContext, lake: &Lake, layer: &str, table: &str) -> Result<bool> {
    let name = TableName::owned(layer.parse()?, table);
    Ok(open_and_register(ctx, lake, &name).await?.is_some())
}

/// A schema whose `register_table` replaces an existing table in one step.
#[derive(Debug, Default)]
pub struct SwapSchema {
    tables: std::sync::RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

#[async_trait]
impl SchemaProvider for SwapSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.read().expect("lock").keys().cloned().collect();
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> std::result::Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self.tables.read().expect("lock").get(name).cloned())
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.tables.write().expect("lock").insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.tables.write().expect("lock").remove(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.read().expect("lock").contains_key(name)
    }
}
