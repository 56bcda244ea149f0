//! Live tables: the in-memory state of the streaming path, shared between the
//! stream runtime (which publishes a new snapshot after every committed
//! micro-batch) and the readers (SQL sessions, the HTTP API, server-sent
//! events), which see it as `live.sales_by_country`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use tokio::sync::watch;

use crate::tables::LIVE_SALES;
/// The contract of the live tables lives in `tables`; re-exported for the
/// stream, which writes them.
pub use crate::tables::{sales_by_country_batch, sales_by_country_schema};

/// Live totals of one country.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CountryTotals {
    pub pays: String,
    pub total_ventes_live: f64,
    pub nb_transactions: i64,
    pub last_event_time: DateTime<Utc>,
}

/// Everything the live views show at one instant.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LiveSnapshot {
    /// Complete-mode aggregate, sorted by country.
    pub countries: Vec<CountryTotals>,
    /// Events per second over the last micro-batches.
    pub events_per_second: f64,
    /// Micro-batches committed since the stream started.
    pub batches_committed: u64,
    /// Valid events and rejected messages counted so far.
    pub events: u64,
    pub rejected: u64,
    /// Lag (messages not yet consumed) per source partition.
    pub lag: BTreeMap<String, i64>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Handle shared by the producer of live state and its readers.
#[derive(Clone)]
pub struct LiveHandle {
    sender: Arc<watch::Sender<Arc<LiveSnapshot>>>,
}

impl Default for LiveHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveHandle {
    pub fn new() -> LiveHandle {
        let (sender, _) = watch::channel(Arc::new(LiveSnapshot::default()));
        LiveHandle { sender: Arc::new(sender) }
    }

    /// Replaces the live state; subscribers are woken.
    pub fn publish(&self, snapshot: LiveSnapshot) {
        self.sender.send_replace(Arc::new(snapshot));
    }

    /// The current state.
    pub fn current(&self) -> Arc<LiveSnapshot> {
        self.sender.borrow().clone()
    }

    /// A receiver that wakes on every publish (for server-sent events).
    pub fn subscribe(&self) -> watch::Receiver<Arc<LiveSnapshot>> {
        self.sender.subscribe()
    }

    /// Registers `live.sales_by_country` in a session (one from
    /// `lake::catalog`, whose schemas replace a table in one step); every
    /// scan reads the state current at that moment.
    pub fn register(&self, ctx: &SessionContext) -> datafusion::error::Result<()> {
        ctx.register_table(LIVE_SALES.to_string(), Arc::new(LiveTable { handle: self.clone() }))?;
        Ok(())
    }
}

#[derive(Debug)]
struct LiveTable {
    handle: LiveHandle,
}

impl LiveTable {
    /// The rows published last, as an in-memory table.
    fn current_rows(&self) -> datafusion::error::Result<MemTable> {
        let batch = sales_by_country_batch(&self.handle.current().countries);
        MemTable::try_new(sales_by_country_schema(), vec![vec![batch]])
    }
}

/// When `provider` is a live table, the rows it holds now as an in-memory
/// table: a plan sent to a cluster carries them so (`cluster::codec`).
pub fn current_rows(provider: &dyn TableProvider) -> Option<datafusion::error::Result<MemTable>> {
    provider.downcast_ref::<LiveTable>().map(LiveTable::current_rows)
}

impl std::fmt::Debug for LiveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveHandle")
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        sales_by_country_schema()
    }
    fn table_type(&self) -> TableType {
        TableType::Temporary
    }
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.current_rows()?.scan(state, projection, filters, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[tokio::test]
    async fn sql_sees_the_latest_published_state() {
        let handle = LiveHandle::new();
        let ctx = crate::lake::catalog::new_session();
        handle.register(&ctx).unwrap();
        let count = |ctx: SessionContext| async move {
            let batches = ctx.sql("SELECT COUNT(*) FROM live.sales_by_country").await.unwrap().collect().await.unwrap();
            batches[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0)
        };
        assert_eq!(count(ctx.clone()).await, 0);
        handle.publish(LiveSnapshot {
            countries: vec![CountryTotals {
                pays: "France".into(),
                total_ventes_live: 54.0,
                nb_transactions: 1,
                last_event_time: Utc::now(),
            }],
            ..Default::default()
        });
        assert_eq!(count(ctx).await, 1);
    }
}
