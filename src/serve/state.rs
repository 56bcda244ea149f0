//! The state every endpoint shares: one DataFusion session over the lake,
//! kept current by a background task, and response caches keyed by the Delta
//! versions they were computed from.
//!
//! The session is built by `lake::session::SessionBuilder` (every name a user
//! can query, `live.*` from the `LiveHandle`). Every `refresh_interval` the
//! task lists the lake's tables and brings each known Delta table up to its
//! latest version (reading only the new commits). A changed table is swapped
//! into the session atomically (queries in flight keep the version they
//! planned with) and the combined views are rebuilt.
//! Each restricted role of a configured token (reader, analyst) has a session
//! of its own, built `for_role` (PII hidden, see `lake::pii`) and kept current
//! the same way; `session_for` picks it.
//! With a cluster engine (`ServeOptions::engine`), the admin and every role
//! that sees the lake in clear also have a session on the cluster
//! (`SessionBuilder::on`), kept current the same way, in which `/api/sql`
//! runs their queries (`query_session_for`).
//! The audit log (`audit.queries`) is registered in the admin's session only,
//! and is not followed every interval: it moves at every flush of the log
//! (each second while queries come in) and only admins read it, so an
//! admin's query that names it, and the catalog an admin asks for, bring it
//! up to date first (`follow_audit`). When no stream runs in this process, the same task follows
//! `gold.live_sales_by_country` and publishes it to the `LiveHandle`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use tokio::sync::{watch, Mutex, RwLock};

use super::ServeOptions;
use crate::audit::AuditLog;
use crate::config::{Config, Engine, PiiConfig, Role, Tokens};
use crate::error::Result;
use crate::lake::session::{self, SessionBuilder};
use crate::lake::{catalog, views, Lake, Layer, TableName};
use crate::live::{LiveHandle, LiveSnapshot};
use crate::tables::{self, LIVE_SALES, LIVE_SALES_BY_COUNTRY, PIPELINE_RUNS};

/// One table as the catalog panel and `/api/tables` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableInfo {
    pub layer: Layer,
    pub table: String,
    /// `delta`, `live` (in memory) or `view`.
    pub kind: &'static str,
    pub rows: Option<u64>,
    pub version: Option<i64>,
    pub last_commit: Option<DateTime<Utc>>,
}

impl TableInfo {
    fn is(&self, name: &TableName) -> bool {
        self.layer == name.layer && self.table == name.table()
    }
}

/// A Delta table the session serves, and what the catalog shows of it.
struct Tracked {
    name: TableName,
    delta: DeltaTable,
    info: TableInfo,
}

impl Tracked {
    fn new(name: TableName, delta: DeltaTable) -> Tracked {
        let info = TableInfo {
            layer: name.layer,
            table: name.table().to_string(),
            kind: "delta",
            rows: None,
            version: None,
            last_commit: None,
        };
        Tracked { name, delta, info }
    }

    /// Reads the table's new commits (only those); whether its version
    /// moved, as it always has for a table not described yet. A failed read
    /// is said in the log and counts as no move.
    async fn catch_up(&mut self) -> bool {
        let before = self.info.version;
        if before.is_some() {
            if let Err(err) = self.delta.update_incremental(None).await {
                tracing::warn!("cannot refresh {}: {}", self.name, crate::error::one_line(&err.to_string()));
                return false;
            }
        }
        self.delta.version().map(|v| v as i64) != before
    }

    /// Reads version, rows and commit time from the table's current state.
    fn describe(&mut self) {
        let version = self.delta.version().map(|v| v as i64);
        let snapshot = self.delta.snapshot().ok();
        self.info.version = version;
        self.info.rows = snapshot.map(|s| s.log_data().iter().map(|f| f.num_records().unwrap_or(0) as u64).sum());
        self.info.last_commit = version
            .and_then(|v| snapshot.and_then(|s| s.version_timestamp(v as u64)))
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    }
}

/// Shared by every request handler and the PostgreSQL endpoint.
pub struct AppState {
    /// The admin's session (clear text), which the dashboard API reads.
    pub ctx: Arc<SessionContext>,
    /// One session per restricted role a configured token has (reader,
    /// analyst), PII hidden (`lake::pii`), kept current with `ctx`.
    pub role_sessions: Vec<(Role, Arc<SessionContext>)>,
    /// With a cluster engine: a session on the cluster for the admin and
    /// each role that sees the lake in clear, kept current with `ctx`.
    cluster_sessions: Vec<(Role, Arc<SessionContext>)>,
    /// `[pii]`, for the sessions of their own (time travel) of a role.
    pub pii: PiiConfig,
    pub lake: Lake,
    pub live: LiveHandle,
    pub options: ServeOptions,
    /// The models (`--models`) and date the lineage is derived for.
    pub models_dir: Option<std::path::PathBuf>,
    pub date: chrono::NaiveDate,
    /// The tokens the server accepts (`[[auth.tokens]]` and `token`); none: open.
    pub tokens: Tokens,
    pub started_at: Instant,
    /// The `max_concurrent_queries` slots of `POST /api/sql`.
    pub sql_slots: Arc<tokio::sync::Semaphore>,
    /// Where every endpoint records its queries (`crate::audit`).
    pub audit: AuditLog,
    /// Set to true to stop every task and close open event streams.
    pub shutdown: watch::Sender<bool>,
    /// What the process around the server reports (`medallion up`), once set.
    pub service: std::sync::OnceLock<Arc<dyn ServiceReport>>,
    /// Keyed by `layer.table`, so the catalog lists tables in name order.
    tables: Mutex<BTreeMap<String, Tracked>>,
    catalog: RwLock<Vec<TableInfo>>,
    cache: RwLock<HashMap<&'static str, (Vec<Option<i64>>, Bytes)>>,
    follower: Mutex<Follower>,
}

/// What a process that runs the server beside other work (`medallion up`)
/// reports through it: `/api/status`, `/api/freshness`, and lines added to
/// `/metrics`.
pub trait ServiceReport: Send + Sync {
    /// The parts, schedules, upkeep and stream lag, as JSON.
    fn status(&self) -> serde_json::Value;
    /// `{"tables": [...]}`: the freshness of every `[freshness]` table.
    fn freshness(&self) -> serde_json::Value;
    /// Prometheus text appended to `/metrics`.
    fn metrics(&self) -> String;
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
    pub async fn new(config: &Config, lake: Lake, live: LiveHandle, options: ServeOptions, audit: AuditLog) -> Result<Arc<AppState>> {
        let session = SessionBuilder::full(&lake, config).with_live(live.clone()).build().await?;
        let mut tables = BTreeMap::new();
        for (name, delta) in session.tables {
            let mut tracked = Tracked::new(name, delta);
            tracked.describe();
            tables.insert(tracked.name.to_string(), tracked);
        }
        let sql_slots = Arc::new(tokio::sync::Semaphore::new(options.max_concurrent_queries.max(1)));
        let tokens = config.auth.tokens(config.token.as_deref());
        let mut role_sessions = Vec::new();
        for role in tokens.restricted_roles() {
            if role == Role::Analyst && config.pii.key.is_none() {
                tracing::warn!("MEDALLION_PII_KEY is not set: analysts see PII columns masked, as readers do");
            }
            let session = SessionBuilder::full(&lake, config).with_live(live.clone()).for_role(role, &config.pii).build().await?;
            role_sessions.push((role, Arc::new(session.ctx)));
        }
        let cluster_sessions = cluster_sessions(config, &lake, &live, &tokens, &options.engine).await?;
        let state = Arc::new(AppState {
            ctx: Arc::new(session.ctx),
            role_sessions,
            cluster_sessions,
            pii: config.pii.clone(),
            lake,
            live,
            options,
            models_dir: config.models_dir.clone(),
            date: config.date,
            tokens,
            started_at: Instant::now(),
            sql_slots,
            audit,
            shutdown: watch::channel(false).0,
            service: std::sync::OnceLock::new(),
            tables: Mutex::new(tables),
            catalog: RwLock::new(Vec::new()),
            cache: RwLock::new(HashMap::new()),
            follower: Mutex::new(Follower::default()),
        });
        state.rebuild_catalog().await;
        if state.options.follow_lake_live && state.has_table(&LIVE_SALES_BY_COUNTRY) {
            state.follow_live().await;
        }
        Ok(state)
    }

    /// Brings the session up to the lake's latest versions; returns whether
    /// anything changed.
    pub async fn refresh(&self) -> Result<bool> {
        let mut tables = self.tables.lock().await;
        let mut changed = Vec::new();
        for layer in Layer::IN_LAKE {
            for table in self.lake.list_tables(layer.as_str()).await? {
                let name = TableName::owned(layer, table);
                let key = name.to_string();
                if tables.contains_key(&key) {
                    continue;
                }
                if let Some(delta) = self.lake.existing_table(layer.as_str(), name.table()).await? {
                    tables.insert(key, Tracked::new(name.clone(), delta));
                    changed.push(name);
                }
            }
        }
        for tracked in tables.values_mut() {
            // Followed when read (`follow_audit`), once it is in the session.
            if tracked.name.layer == Layer::Audit && tracked.info.version.is_some() {
                continue;
            }
            if tracked.catch_up().await {
                for (_, ctx) in self.sessions_seeing(&tracked.name) {
                    catalog::register_delta(ctx, &tracked.name, &tracked.delta).await?;
                }
                tracked.describe();
                if !changed.contains(&tracked.name) {
                    changed.push(tracked.name.clone());
                }
            }
        }
        drop(tables);
        if changed.is_empty() {
            return Ok(false);
        }
        // The views read the medallion, never the audit log, which moves at every flush.
        if changed.iter().any(|name| name.layer != Layer::Audit) {
            for (_, ctx) in self.sessions() {
                views::register(ctx).await;
            }
        }
        self.rebuild_catalog().await;
        if self.options.follow_lake_live && changed.contains(&LIVE_SALES_BY_COUNTRY) {
            self.follow_live().await;
        }
        Ok(true)
    }

    /// Brings the audit log up to its newest version (an admin is about to
    /// read it; see the module doc).
    pub async fn follow_audit(&self) {
        let mut tables = self.tables.lock().await;
        let mut moved = false;
        for tracked in tables.values_mut().filter(|t| t.name.layer == Layer::Audit) {
            if tracked.catch_up().await {
                let mut registered = true;
                for (_, ctx) in self.sessions_seeing(&tracked.name) {
                    if let Err(err) = catalog::register_delta(ctx, &tracked.name, &tracked.delta).await {
                        tracing::warn!("cannot refresh {}: {err}", tracked.name);
                        registered = false;
                    }
                }
                if !registered {
                    continue;
                }
                tracked.describe();
                moved = true;
            }
        }
        drop(tables);
        if moved {
            self.rebuild_catalog().await;
        }
    }

    async fn rebuild_catalog(&self) {
        let tables = self.tables.lock().await;
        let mut infos: Vec<TableInfo> = tables.values().map(|t| t.info.clone()).collect();
        drop(tables);
        let live_rows = self.live.current().countries.len() as u64;
        infos.push(TableInfo {
            layer: LIVE_SALES.layer,
            table: LIVE_SALES.table().to_string(),
            kind: "live",
            rows: Some(live_rows),
            version: None,
            last_commit: self.live.current().updated_at,
        });
        for view in views::registered(&self.ctx) {
            infos.push(TableInfo { layer: Layer::Serving, table: view, kind: "view", rows: None, version: None, last_commit: None });
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

    /// `catalog` as `role` may see it: the audit log only for admins.
    pub async fn catalog_for(&self, role: Role) -> Vec<TableInfo> {
        if role == Role::Admin {
            self.follow_audit().await;
        }
        let mut infos = self.catalog().await;
        if role != Role::Admin {
            infos.retain(|info| info.layer != Layer::Audit);
        }
        infos
    }

    /// The Delta version of a table, `None` when it does not exist.
    pub async fn version_of(&self, table: &TableName) -> Option<i64> {
        self.catalog.read().await.iter().find(|i| i.is(table)).and_then(|i| i.version)
    }

    /// A response computed once per set of table versions: `compute` runs
    /// only when one of `tables` moved to a new Delta version.
    pub async fn cached<F, Fut>(&self, key: &'static str, tables: &[TableName], compute: F) -> Result<Bytes>
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

    /// The session `role` queries: its own (PII hidden) or the admin's.
    pub fn session_for(&self, role: Role) -> &Arc<SessionContext> {
        self.role_sessions.iter().find(|(r, _)| *r == role).map(|(_, ctx)| ctx).unwrap_or(&self.ctx)
    }

    /// The session `/api/sql` runs `role`'s queries in: on the cluster when
    /// the server has one and `role` sees the lake in clear, else
    /// `session_for`.
    pub fn query_session_for(&self, role: Role) -> &Arc<SessionContext> {
        self.cluster_sessions.iter().find(|(r, _)| *r == role).map(|(_, ctx)| ctx).unwrap_or_else(|| self.session_for(role))
    }

    /// Every session the server keeps (local and on a cluster), with the
    /// role whose queries it runs.
    fn sessions(&self) -> impl Iterator<Item = (Role, &SessionContext)> {
        let others = self.role_sessions.iter().chain(&self.cluster_sessions).map(|(role, ctx)| (*role, ctx.as_ref()));
        std::iter::once((Role::Admin, self.ctx.as_ref())).chain(others)
    }

    /// The sessions `name` is registered in: all, but the audit log is the
    /// admin's alone.
    fn sessions_seeing<'a>(&'a self, name: &'a TableName) -> impl Iterator<Item = (Role, &'a SessionContext)> {
        self.sessions().filter(move |(role, _)| name.layer != Layer::Audit || *role == Role::Admin)
    }

    /// Whether a table is in the session.
    pub fn has_table(&self, name: &TableName) -> bool {
        self.ctx.table_exist(name.to_string()).unwrap_or(false)
    }

    /// Publishes `gold.live_sales_by_country` (written by a stream in another
    /// process) to the live handle, with the stream's last recorded lag.
    async fn follow_live(&self) {
        let countries = match tables::read_sales_by_country(&self.ctx, &LIVE_SALES_BY_COUNTRY).await {
            Ok(countries) => countries,
            Err(err) => {
                tracing::warn!("cannot read {LIVE_SALES_BY_COUNTRY}: {err}");
                return;
            }
        };
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
        follower.version = self.version_of(&LIVE_SALES_BY_COUNTRY).await;
        drop(follower);
        let mut snapshot = LiveSnapshot {
            countries,
            events_per_second,
            events: transactions.max(0) as u64,
            updated_at: Some(Utc::now()),
            ..Default::default()
        };
        if let Some(run) = self.last_stream_run().await {
            snapshot.batches_committed = run.batches;
            snapshot.rejected = run.rejected;
            snapshot.lag = run.lag;
        }
        self.live.publish(snapshot);
    }

    /// The details of the stream's latest run record, if any.
    async fn last_stream_run(&self) -> Option<tables::StreamRun> {
        if !self.has_table(&PIPELINE_RUNS) {
            return None;
        }
        match tables::read_last_stream_run(&self.ctx).await {
            Ok(run) => run,
            Err(err) => {
                tracing::warn!("cannot read the last stream run: {err}");
                None
            }
        }
    }
}

/// With a cluster `engine`, a session on it for the admin and for each role
/// of `tokens` that sees the lake in clear; none for a local engine. The
/// admin's is always built, so a server over an encrypted lake refuses the
/// cluster at start, in one line, as `medallion sql --engine` does.
async fn cluster_sessions(
    config: &Config,
    lake: &Lake,
    live: &LiveHandle,
    tokens: &Tokens,
    engine: &Engine,
) -> Result<Vec<(Role, Arc<SessionContext>)>> {
    if *engine == Engine::Local {
        return Ok(Vec::new());
    }
    let roles = std::iter::once(Role::Admin).chain(tokens.restricted_roles().into_iter().filter(|role| session::sees_in_clear(lake, *role, &config.pii)));
    let mut sessions = Vec::new();
    for role in roles {
        let built = SessionBuilder::full(lake, config).with_live(live.clone()).for_role(role, &config.pii).on(engine).build().await?;
        sessions.push((role, Arc::new(built.ctx)));
    }
    Ok(sessions)
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
