//! Registers the lake's Delta tables in a DataFusion session as
//! `<layer>.<table>` (`bronze.orders`, `silver.sales_master`, `gold.kpi_revenue`).
//!
//! Each layer is a DataFusion schema in the default catalog; `ref` holds
//! reference tables built from configuration (the country map) and `live` the
//! in-memory streaming tables.

use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::delta_datafusion::planner::DeltaPlanner;

use super::{Lake, LAYERS};
use crate::error::{Error, Result};

/// Schemas every session has, beside the lake layers.
pub const EXTRA_SCHEMAS: [&str; 2] = ["ref", "live"];

/// A fresh session with one empty schema per layer.
pub fn new_session() -> SessionContext {
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
    // delta-rs's planner, so write plans built from this session can run.
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_query_planner(DeltaPlanner::new())
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog = ctx.catalog("datafusion").expect("the default catalog exists");
    for schema in LAYERS.iter().chain(EXTRA_SCHEMAS.iter()) {
        let provider: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
        catalog.register_schema(schema, provider).expect("memory catalog accepts schemas");
    }
    ctx
}

/// Registers (or re-registers, to see the newest version) one table.
/// Returns false when the table does not exist in the lake.
pub async fn register_table(ctx: &SessionContext, lake: &Lake, layer: &str, table: &str) -> Result<bool> {
    let Some(delta) = lake.existing_table(layer, table).await? else {
        return Ok(false);
    };
    let name = format!("{layer}.{table}");
    delta.update_datafusion_session(&ctx.state()).map_err(|e| Error::lake(&name, e))?;
    // Built from the session so the scan follows its settings (plain string
    // arrays, see `new_session`).
    let provider =
        delta.table_provider().with_session(Arc::new(ctx.state())).await.map_err(|e| Error::lake(&name, e))?;
    ctx.deregister_table(name.as_str())?;
    ctx.register_table(name.as_str(), provider)?;
    Ok(true)
}

/// Registers every table of every layer; returns their qualified names.
pub async fn register_lake(ctx: &SessionContext, lake: &Lake) -> Result<Vec<String>> {
    let mut registered = Vec::new();
    for layer in LAYERS {
        for table in lake.list_tables(layer).await? {
            if register_table(ctx, lake, layer, &table).await? {
                registered.push(format!("{layer}.{table}"));
            }
        }
    }
    Ok(registered)
}

/// A session with every table of the lake registered.
pub async fn session_for(lake: &Lake) -> Result<SessionContext> {
    let ctx = new_session();
    register_lake(&ctx, lake).await?;
    Ok(ctx)
}
