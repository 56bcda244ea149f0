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

use super::{Lake, Layer, TableName};
use crate::error::{Error, Result};

/// A fresh session with one empty schema per layer (`Layer::ALL`).
pub fn new_session() -> SessionContext {
    new_session_within(None)
}

/// `new_session`, whose queries hold at most `memory_limit` bytes in their
/// hash tables and sort buffers when given: past it, aggregates and sorts
/// spill to temporary files (a fair share per operator), and a join whose
/// build side does not fit fails in one line naming the limit.
pub fn new_session_within(memory_limit: Option<usize>) -> SessionContext {
    new_session_for(memory_limit, None)
}

/// `new_session_within`, whose Delta tables are registered through
/// `protection` (a role's view of PII, see `pii`) when given.
pub fn new_session_for(memory_limit: Option<usize>, protection: Option<super::pii::Protection>) -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true).with_target_partitions(
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
    );
    // Plain Utf8/Binary arrays instead of views: results written back to Delta
    // would otherwise carry whole Parquet pages per batch (measured: 10 GiB
    // peak for silver at scale 1000).
    config.options_mut().execution.parquet.schema_force_view_types = false;
    // As delta-rs configures its own sessions: hash-join IN-list pushdown can
    // panic on dictionary-encoded partition keys.
    config.options_mut().optimizer.hash_join_inlist_pushdown_max_size = 0;
    config.options_mut().optimizer.hash_join_inlist_pushdown_max_distinct_values = 0;
    if let Some(protection) = protection {
        config = config.with_extension(Arc::new(protection));
    }
    // delta-rs's planner, so write plans built from this session can run.
    let mut state = SessionStateBuilder::new();
    if let Some(limit) = memory_limit {
        let pool = Arc::new(datafusion::execution::memory_pool::FairSpillPool::new(limit));
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
/// as `name`. The scan is built from the session so it follows its settings
/// (plain string arrays, see `new_session`); a session on a cluster gets the
/// files of the opened version instead (`cluster::scan`).
pub async fn register_delta(ctx: &SessionContext, name: &TableName, delta: &DeltaTable) -> Result<()> {
    let state = ctx.state();
    delta.update_datafusion_session(&state).map_err(|e| Error::lake(name, e))?;
    let provider: Arc<dyn TableProvider> =
        delta.table_provider().with_session(Arc::new(state.clone())).await.map_err(|e| Error::lake(name, e))?;
    // On a cluster, the files of this version, which executors can read.
    let provider: Arc<dyn TableProvider> = if crate::cluster::on_cluster(&state) {
        Arc::new(crate::cluster::scan::SnapshotFiles::of(name, delta, provider.schema())?)
    } else {
        provider
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
