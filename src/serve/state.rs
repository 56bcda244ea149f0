//! The state every endpoint shares: one DataFusion session over the lake,
//! kept current by a background task, and response caches keyed by the Delta
//! versions they were computed from.
//!
//! Every `refresh_interval` the task lists the lake's tables and brings each
//! known Delta table up to its latest version (reading only the new commits).
//! A changed table is swapped into the session atomically (queries in flight
//! keep the version they planned with) and the combined views are rebuilt.
//! When no stream runs in this process, the same task follows
//! `gold.live_sales_by_country` and publishes it to the `LiveHandle`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use tokio::sync::{watch, Mutex, RwLock};

use super::{views, ServeOptions};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::{catalog, Lake, LAYERS};
use crate::live::{CountryTotals, LiveHandle, LiveSnapshot};

/// The schema of the combined views.
pub const SERVING_SCHEMA: &str = "serving";

/// One table as the catalog panel and `/api/tables` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableInfo {
    pub layer: String,
    pub table: String,
    /// `delta`, `live` (in memory) or `view`.
    pub kind: &'static str,
    pub rows: Option<u64>,
    pub version: Option<i64>,
    pub last_commit: Option<DateTime<Utc>>,
}

struct Tracked {
    delta: DeltaTable,
    info: TableInfo,
}

/// Shared by every request handler and the PostgreSQL endpoint.
pub struct AppState {
    pub ctx: Arc<SessionContext>,
    pub lake: Lake,
    pub live: LiveHandle,
    pub options: ServeOptions,
    pub token: Option<String>,
    pub started_at: Instant,
    /// Set to true to stop every task and close open event streams.
    pub shutdown: watch::Sender<bool>,
    tables: Mutex<BTreeMap<String, Tracked>>,
    catalog: RwLock<Vec<TableInfo>>,
    cache: RwLock<HashMap<&'static str, (Vec<Option<i64>>, Bytes)>>,
    follower: Mutex<Follower>,
}

/// What the live follower saw last.
#[derive(Default)]
struct Follower {
    version: Option<i64>,
    transactions: i64,
    seen_at: Option<Instant>,
}

impl AppState {
    /// A session with every table of the lake, the live tables and the views.
    pub async fn new(config: &Config, lake: Lake, live: LiveHandle, options: ServeOptions) -> Result<Arc<AppState>> {
        let ctx = catalog::new_session();
        let default_catalog = ctx.catalog("datafusion").expect("the default catalog exists");
        for schema in LAYERS.iter().chain(catalog::EXTRA_SCHEMAS.iter()).chain([SERVING_SCHEMA].iter()) {
            default_catalog
                .register_schema(schema, Arc::new(SwapSchema::default()))
                .map_err(|e| Error::other("serving session", e))?;
        }
        crate::models::register_reference_tables(&ctx, config)?;
        live.register(&ctx)?;
        let state = Arc::new(AppState {
            ctx: Arc::new(ctx),
            lake,
            live,
            options,
            token: config.token.clone(),
            started_at: Instant::now(),
            shutdown: watch::channel(false).0,
            tables: Mutex::new(BTreeMap::new()),
            catalog: RwLock::new(Vec::new()),
            cache: RwLock::new(HashMap::new()),
            follower: Mutex::new(Follower::default()),
        });
        state.refresh().await?;
        views::register(&state.ctx).await;
        state.rebuild_catalog().await;
        Ok(state)
    }

    /// Brings the session up to the lake's latest versions; returns whether
    /// anything changed.
    pub async fn refresh(&self) -> Result<bool> {
        let mut tables = self.tables.lock().await;
        let mut changed = Vec::new();
        for layer in LAYERS {
            for name in self.lake.list_tables(layer).await? {
                let key = format!("{layer}.{name}");
                if tables.contains_key(&key) {
                    continue;
                }
                if let Some(delta) = self.lake.existing_table(layer, &name).await? {
                    let info = TableInfo {
                        layer: layer.to_string(),
                        table: name.clone(),
                        kind: "delta",
                        rows: None,
                        version: None,
                        last_commit: None,
                    };
                    tables.insert(key.clone(), Tracked { delta, info });
                    changed.push(key);
                }
            }
        }
        for (key, tracked) in tables.iter_mut() {
            let before = tracked.info.version;
            if before.is_some() {
                if let Err(err) = tracked.delta.update_incremental(None).await {
                    tracing::warn!("cannot refresh {key}: {}", crate::error::one_line(&err.to_string()));
                    continue;
                }
            }
            let version = tracked.delta.version().map(|v| v as i64);
            if version != before {
                self.register(key, tracked).await?;
                if !changed.contains(key) {
                    changed.push(key.clone());
                }
            }
        }
        drop(tables);
        if changed.is_empty() {
            return Ok(false);
        }
        views::register(&self.ctx).await;
        self.rebuild_catalog().await;
        if self.options.follow_lake_live && changed.iter().any(|k| k == "gold.live_sales_by_country") {
            self.follow_live().await;
        }
        Ok(true)
    }

    async fn register(&self, key: &str, tracked: &mut Tracked) -> Result<()> {
        let delta = &tracked.delta;
        delta.update_datafusion_session(&self.ctx.state()).map_err(|e| Error::lake(key, e))?;
        let provider = delta.table_provider().await.map_err(|e| Error::lake(key, e))?;
        self.ctx.register_table(key, provider)?;
        let version = delta.version().map(|v| v as i64);
        let snapshot = delta.snapshot().ok();
        tracked.info.version = version;
        tracked.info.rows = snapshot.map(|s| s.log_data().iter().map(|f| f.num_records().unwrap_or(0) as u64).sum());
        tracked.info.last_commit = version
            .and_then(|v| snapshot.and_then(|s| s.version_timestamp(v as u64)))
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        Ok(())
    }

    async fn rebuild_catalog(&self) {
        let tables = self.tables.lock().await;
        let mut infos: Vec<TableInfo> = tables.values().map(|t| t.info.clone()).collect();
        drop(tables);
        let live_rows = self.live.current().countries.len() as u64;
        infos.push(TableInfo {
            layer: "live".into(),
            table: "sales_by_country".into(),
            kind: "live",
            rows: Some(live_rows),
            version: None,
            last_commit: self.live.current().updated_at,
        });
        for view in views::registered(&self.ctx) {
            infos.push(TableInfo { layer: SERVING_SCHEMA.into(), table: view, kind: "view", rows: None, version: None, last_commit: None });
        }
        *self.catalog.write().await = infos;
    }

    /// Every table and view the session serves.
    pub async fn catalog(&self) -> Vec<TableInfo> {
        let mut infos = self.catalog.read().await.clone();
        let live = self.live.current();
        for info in infos.iter_mut().filter(|i| i.kind == "live") {
            info.rows = Some(live.countries.len() as u64);
            info.last_commit = live.updated_at;
        }
        infos
    }

    /// The Delta version of a table, `None` when it does not exist.
    pub async fn version_of(&self, table: &str) -> Option<i64> {
        self.catalog.read().await.iter().find(|i| format!("{}.{}", i.layer, i.table) == table).and_then(|i| i.version)
    }

    /// A response computed once per set of table versions: `compute` runs
    /// only when one of `tables` moved to a new Delta version.
    pub async fn cached<F, Fut>(&self, key: &'static str, tables: &[&str], compute: F) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes>>,
    {
        let mut versions = Vec::with_capacity(tables.len());
        for table in tables {
            versions.push(self.version_of(table).await);
        }
        if let Some((seen, bytes)) = self.cache.read().await.get(key) {
            if *seen == versions {
                return Ok(bytes.clone());
            }
        }
        let bytes = compute().await?;
        self.cache.write().await.insert(key, (versions, bytes.clone()));
        Ok(bytes)
    }

    /// Runs SQL on the shared session.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let frame = self.ctx.sql(sql).await?;
        Ok(frame.collect().await?)
    }

    /// Whether `layer.table` is in the session.
    pub fn has_table(&self, name: &str) -> bool {
        self.ctx.table_exist(name).unwrap_or(false)
    }

    /// Publishes `gold.live_sales_by_country` (written by a stream in another
    /// process) to the live handle, with the stream's last recorded lag.
    async fn follow_live(&self) {
        let batches = match self
            .query("SELECT pays, total_ventes_live, nb_transactions, last_event_time FROM gold.live_sales_by_country ORDER BY pays")
            .await
        {
            Ok(batches) => batches,
            Err(err) => {
                tracing::warn!("cannot read gold.live_sales_by_country: {err}");
                return;
            }
        };
        let countries = countries_from(&batches);
        let transactions: i64 = countries.iter().map(|c| c.nb_transactions).sum();
        let mut follower = self.follower.lock().await;
        let now = Instant::now();
        let events_per_second = match follower.seen_at {
            Some(at) if transactions >= follower.transactions => {
                (transactions - follower.transactions) as f64 / now.duration_since(at).as_secs_f64().max(1e-3)
            }
            _ => 0.0,
        };
        follower.transactions = transactions;
        follower.seen_at = Some(now);
        follower.version = self.version_of("gold.live_sales_by_country").await;
        drop(follower);
        let mut snapshot = LiveSnapshot {
            countries,
            events_per_second,
            events: transactions.max(0) as u64,
            updated_at: Some(Utc::now()),
            ..Default::default()
        };
        if let Some(run) = self.last_stream_run().await {
            snapshot.batches_committed = run["batches"].as_u64().unwrap_or(0);
            snapshot.rejected = run["rejected"].as_u64().unwrap_or(0);
            if let Some(lag) = run["lag"].as_object() {
                snapshot.lag = lag.iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0))).collect();
            }
        }
        self.live.publish(snapshot);
    }

    /// The details of the stream's latest run record, if any.
    async fn last_stream_run(&self) -> Option<serde_json::Value> {
        if !self.has_table("gold.pipeline_runs") {
            return None;
        }
        let batches = self
            .query("SELECT details FROM gold.pipeline_runs WHERE command = 'stream' ORDER BY started_at DESC LIMIT 1")
            .await
            .ok()?;
        let rows = crate::output::json_rows(&batches).ok()?;
        let details = rows.first()?.get("details")?.as_str()?.to_string();
        serde_json::from_str(&details).ok()
    }
}

/// Live totals from rows of `gold.live_sales_by_country`.
fn countries_from(batches: &[RecordBatch]) -> Vec<CountryTotals> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
    let mut out = Vec::new();
    for batch in batches {
        let columns = (|| -> std::result::Result<_, datafusion::arrow::error::ArrowError> {
            Ok((
                cast(batch.column(0), &DataType::Utf8)?,
                cast(batch.column(1), &DataType::Float64)?,
                cast(batch.column(2), &DataType::Int64)?,
                cast(batch.column(3), &DataType::Timestamp(TimeUnit::Microsecond, None))?,
            ))
        })();
        let Ok((pays, total, count, at)) = columns else { continue };
        let (pays, total, count, at) = (
            pays.as_string::<i32>(),
            total.as_primitive::<Float64Type>(),
            count.as_primitive::<Int64Type>(),
            at.as_primitive::<TimestampMicrosecondType>(),
        );
        for i in 0..batch.num_rows() {
            if pays.is_null(i) {
                continue;
            }
            out.push(CountryTotals {
                pays: pays.value(i).to_string(),
                total_ventes_live: if total.is_null(i) { 0.0 } else { total.value(i) },
                nb_transactions: if count.is_null(i) { 0 } else { count.value(i) },
                last_event_time: Utc.timestamp_micros(at.value(i)).single().unwrap_or_else(Utc::now),
            });
        }
    }
    out
}

/// Refreshes the session every `refresh_interval` until shutdown.
pub async fn refresh_loop(state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
    let stop = super::stopped(shutdown);
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(state.options.refresh_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live_changes = state.live.subscribe();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(err) = state.refresh().await {
                    tracing::warn!("lake refresh failed: {err}");
                }
            }
            changed = live_changes.changed() => {
                if changed.is_err() {
                    break;
                }
                // The live table's row count shows in the catalog.
                state.rebuild_catalog().await;
            }
            _ = &mut stop => break,
        }
    }
}

/// A schema whose `register_table` replaces an existing table in one step,
/// so a query never finds a table missing while a new version is swapped in.
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
