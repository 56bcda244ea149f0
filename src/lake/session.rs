//! `SessionBuilder`: the one way a DataFusion session over the lake is built,
//! so `medallion sql`, the server (HTTP and PostgreSQL), the model runs and
//! the stream see the same names.
//!
//! ```text
//! SessionBuilder::full(&lake, &config)       everything a user can query:
//!     bronze.* silver.* gold.*                 every Delta table of the lake
//!     ref.country_map                          from configuration
//!     live.sales_by_country                    gold.live_sales_by_country read back,
//!                                              or the stream's state `.with_live(handle)`
//!     serving.*                                the combined views
//! SessionBuilder::new(&lake)                 the Delta tables only
//!     .only(&[tables::SALES_EVENTS])           …or just these
//!     .with_reference_tables(&config)          + ref.*
//! ```
//!
//! `.on(&config.engine)` runs the session's queries on a Ballista cluster
//! when the engine names one (see `crate::cluster`): the Delta tables are
//! then registered as the files of the version opened, which the cluster's
//! executors read.
//!
//! `.for_role(role, &config.pii)` hides PII columns from readers and analysts
//! (`pii`). The audit log (`audit.queries`) joins the lake's tables in an
//! admin's session only: a session built for a reader or analyst has an empty
//! `audit` schema (see `crate::audit`). Delta tables are always registered with the session's settings (see
//! `catalog::register_delta`). Every schema is a `catalog::SwapSchema`, so a
//! server can swap newer table versions in while queries run.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

use super::pii::Protection;
use super::{catalog, views, Lake, Layer, TableName};
use crate::config::{Config, Engine, PiiConfig, Role};
use crate::error::{Error, Result};
use crate::live::{LiveHandle, LiveSnapshot};
use crate::tables::{self, COUNTRY_MAP, LIVE_SALES_BY_COUNTRY};

/// Where `live.*` comes from.
enum LiveSource {
    /// No live tables.
    Absent,
    /// The state a stream in this process publishes.
    Handle(LiveHandle),
    /// The stream's persisted copy, read once when the session is built.
    Persisted,
}

/// Builds a session over the lake; see the module documentation.
pub struct SessionBuilder<'a> {
    lake: &'a Lake,
    only: Option<Vec<TableName>>,
    reference: Option<&'a Config>,
    live: LiveSource,
    views: bool,
    memory_limit: Option<usize>,
    protection: Option<Protection>,
    engine: Engine,
}

/// A built session and the Delta tables registered in it, as opened (a
/// server keeps them to follow new versions).
pub struct LakeSession {
    pub ctx: SessionContext,
    pub tables: Vec<(TableName, DeltaTable)>,
}

impl<'a> SessionBuilder<'a> {
    /// Every Delta table of the lake, nothing else.
    pub fn new(lake: &'a Lake) -> SessionBuilder<'a> {
        SessionBuilder {
            lake,
            only: None,
            reference: None,
            live: LiveSource::Absent,
            views: false,
            memory_limit: None,
            protection: None,
            engine: Engine::Local,
        }
    }

    /// Every name a user can query: the lake, `ref.*`, `live.*` (from the
    /// persisted copy unless `with_live` gives the stream's state) and the
    /// `serving.*` views.
    pub fn full(lake: &'a Lake, config: &'a Config) -> SessionBuilder<'a> {
        SessionBuilder::new(lake).with_reference_tables(config).with_persisted_live().with_views()
    }

    /// Only these Delta tables (those that exist), instead of every one.
    pub fn only(mut self, tables: &[TableName]) -> SessionBuilder<'a> {
        self.only = Some(tables.to_vec());
        self
    }

    /// The reference tables built from configuration (`ref.country_map`).
    pub fn with_reference_tables(mut self, config: &'a Config) -> SessionBuilder<'a> {
        self.reference = Some(config);
        self
    }

    /// `live.*` from the state a stream in this process publishes to `handle`.
    pub fn with_live(mut self, handle: LiveHandle) -> SessionBuilder<'a> {
        self.live = LiveSource::Handle(handle);
        self
    }

    /// `live.*` from `gold.live_sales_by_country`, read when the session is
    /// built (empty when no stream has written it).
    pub fn with_persisted_live(mut self) -> SessionBuilder<'a> {
        self.live = LiveSource::Persisted;
        self
    }

    /// The `serving.*` views (see `views`).
    pub fn with_views(mut self) -> SessionBuilder<'a> {
        self.views = true;
        self
    }

    /// Queries of the session spill past `limit` bytes (see
    /// `catalog::new_session_within`); `None` leaves them unbounded.
    pub fn within_memory(mut self, limit: Option<usize>) -> SessionBuilder<'a> {
        self.memory_limit = limit;
        self
    }

    /// What `role` may see of the PII columns `policy` names: masked
    /// (reader), pseudonyms (analyst), clear text (admin). Every Delta table,
    /// and so every view over one, is registered through it (see `pii`).
    pub fn for_role(mut self, role: Role, policy: &PiiConfig) -> SessionBuilder<'a> {
        self.protection = Protection::for_role(role, policy);
        self
    }

    /// Queries of the session run where `engine` says: in this process, or
    /// on a Ballista cluster (checked to answer, with an executor, when the
    /// session is built).
    pub fn on(mut self, engine: &Engine) -> SessionBuilder<'a> {
        self.engine = engine.clone();
        self
    }

    pub async fn build(self) -> Result<LakeSession> {
        // Over a lake with PII encrypted at rest every session decrypts.
        let protection = Protection::over_lake(self.protection.clone(), self.lake.at_rest());
        let on_cluster = matches!(self.engine, Engine::Ballista { .. });
        if on_cluster && !shows_as_stored(&protection) {
            return Err(Error::Config(format!(
                "--engine {} runs sessions that see PII in clear only (admins, or every role under `[pii] columns = []`) \
                 over lakes without encrypt_at_rest: PII masking, pseudonyms and decryption run in this process; \
                 drop --engine (or --role) for this command",
                self.engine
            )));
        }
        let mut ctx = catalog::new_session_for(self.memory_limit, protection);
        if let Engine::Ballista { host, port } = &self.engine {
            ctx = crate::cluster::connect(ctx, host, *port).await?;
        }
        let tables = self.register_delta_tables(&ctx).await?;
        if let Some(config) = self.reference {
            register_reference_tables(&ctx, config)?;
        }
        match self.live {
            LiveSource::Absent => {}
            LiveSource::Handle(handle) => handle.register(&ctx)?,
            LiveSource::Persisted => persisted_live(&ctx).await.register(&ctx)?,
        }
        if self.views {
            views::register(&ctx).await;
        }
        Ok(LakeSession { ctx, tables })
    }

    async fn register_delta_tables(&self, ctx: &SessionContext) -> Result<Vec<(TableName, DeltaTable)>> {
        let names = match &self.only {
            Some(names) => names.iter().filter(|name| self.may_read(name)).cloned().collect(),
            None => {
                let mut every = self.lake.every_table().await?;
                if self.may_read(&tables::AUDIT_QUERIES) {
                    every.push(tables::AUDIT_QUERIES);
                }
                every
            }
        };
        let mut registered = Vec::new();
        for name in names {
            if let Some(delta) = catalog::open_and_register(ctx, self.lake, &name).await? {
                registered.push((name, delta));
            }
        }
        Ok(registered)
    }
}

impl SessionBuilder<'_> {
    /// Whether the session's role may see `name`: the audit layer is for
    /// admins (sessions built with no protection) only.
    fn may_read(&self, name: &TableName) -> bool {
        name.layer != Layer::Audit || self.protection.is_none()
    }
}

/// Whether a session of `role` over `lake` shows every value as stored (no
/// masking, pseudonym or decryption in this process), which a session on a
/// cluster must: the server picks its cluster sessions with it.
pub fn sees_in_clear(lake: &Lake, role: Role, policy: &PiiConfig) -> bool {
    shows_as_stored(&Protection::over_lake(Protection::for_role(role, policy), lake.at_rest()))
}

fn shows_as_stored(protection: &Option<Protection>) -> bool {
    protection.as_ref().map_or(true, Protection::changes_nothing)
}

/// Registers the reference tables built from configuration
/// (`ref.country_map`: every known spelling → its standard country name).
fn register_reference_tables(ctx: &SessionContext, config: &Config) -> Result<()> {
    let lookup = config.countries.lookup();
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
    ]));
    let keys: Vec<&str> = lookup.keys().map(String::as_str).collect();
    let countries: Vec<&str> = lookup.values().map(String::as_str).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(keys)), Arc::new(StringArray::from(countries))],
    )?;
    let table = MemTable::try_new(schema, vec![vec![batch]])?;
    ctx.register_table(COUNTRY_MAP.to_string(), Arc::new(table))?;
    Ok(())
}

/// A live handle holding what the session's `gold.live_sales_by_country`
/// holds (nothing when the table is absent or unreadable, with a warning).
async fn persisted_live(ctx: &SessionContext) -> LiveHandle {
    let handle = LiveHandle::new();
    if !ctx.table_exist(LIVE_SALES_BY_COUNTRY.to_string()).unwrap_or(false) {
        return handle;
    }
    match tables::read_sales_by_country(ctx, &LIVE_SALES_BY_COUNTRY).await {
        Ok(countries) => handle.publish(LiveSnapshot { countries, ..Default::default() }),
        Err(err) => tracing::warn!("{} is left empty: {err}", tables::LIVE_SALES),
    }
    handle
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::live::CountryTotals;

    fn lake_in(dir: &std::path::Path) -> (Config, Lake) {
        let config =
            Config::load(Overrides { lake: Some(dir.to_string_lossy().into_owned()), ..Default::default() }).unwrap();
        let lake = Lake::new(&config).unwrap();
        (config, lake)
    }

    async fn names_in(ctx: &SessionContext, schemas: &str) -> Vec<String> {
        let sql = format!(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema IN ({schemas}) ORDER BY 1"
        );
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        crate::output::json_rows(&batches).unwrap().iter().flat_map(|row| row.values().map(|v| v.as_str().unwrap().to_string())).collect()
    }

    #[tokio::test]
    async fn full_sessions_show_the_lake_ref_live_and_serving_and_only_narrows_the_lake() {
        let dir = tempfile::tempdir().unwrap();
        let (config, lake) = lake_in(dir.path());
        let persisted = vec![CountryTotals {
            pays: "France".into(),
            total_ventes_live: 54.5,
            nb_transactions: 2,
            last_event_time: chrono::Utc::now(),
        }];
        let schema = tables::sales_by_country_schema();
        let batch = tables::sales_by_country_batch(&persisted);
        lake.overwrite(Layer::Gold.as_str(), LIVE_SALES_BY_COUNTRY.table(), schema.clone(), vec![batch]).await.unwrap();
        lake.overwrite(Layer::Bronze.as_str(), "t", schema, Vec::new()).await.unwrap();

        let full = SessionBuilder::full(&lake, &config).build().await.unwrap();
        assert_eq!(full.tables.len(), 2);
        assert_eq!(
            names_in(&full.ctx, "'bronze', 'silver', 'gold', 'ref', 'live', 'serving'").await,
            [
                "bronze.t",
                "gold.live_sales_by_country",
                "live.sales_by_country",
                "ref.country_map",
                "serving.sales_by_country"
            ]
        );
        // live.sales_by_country is the persisted copy, read back.
        let live = tables::read_sales_by_country(&full.ctx, &tables::LIVE_SALES).await.unwrap();
        assert_eq!((live[0].pays.as_str(), live[0].nb_transactions), ("France", 2));

        let narrow = SessionBuilder::new(&lake).only(&[TableName::new(Layer::Bronze, "t")]).build().await.unwrap();
        assert_eq!(names_in(&narrow.ctx, "'bronze', 'gold', 'live', 'ref', 'serving'").await, ["bronze.t"]);
    }

    #[tokio::test]
    async fn only_sessions_that_show_values_as_stored_go_to_a_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, lake) = lake_in(dir.path());
        assert!(sees_in_clear(&lake, Role::Admin, &config.pii));
        assert!(!sees_in_clear(&lake, Role::Reader, &config.pii), "Northwind's PII is masked by default");
        let nothing_masked = PiiConfig { columns: Vec::new(), ..config.pii.clone() };
        assert!(sees_in_clear(&lake, Role::Analyst, &nothing_masked));
        config.pii = PiiConfig { key: Some("k".into()), encrypt_at_rest: true, ..config.pii.clone() };
        assert!(!sees_in_clear(&Lake::new(&config).unwrap(), Role::Admin, &config.pii), "an encrypted lake decrypts in-process");

        // A masked session is refused before any scheduler is asked; one that masks nothing asks it.
        let nobody = Engine::Ballista { host: "127.0.0.1".into(), port: 1 };
        let masked = SessionBuilder::new(&lake).for_role(Role::Reader, &config.pii).on(&nobody).build().await;
        assert!(matches!(masked, Err(Error::Config(ref line)) if line.contains("--engine")), "{:?}", masked.err());
        let clear = SessionBuilder::new(&lake).for_role(Role::Reader, &nothing_masked).on(&nobody).build().await;
        assert!(matches!(clear, Err(Error::Cluster { .. })), "{:?}", clear.err());
    }

    #[tokio::test]
    async fn the_audit_log_is_in_admin_sessions_only() {
        let dir = tempfile::tempdir().unwrap();
        let (config, lake) = lake_in(dir.path());
        lake.overwrite("audit", "queries", crate::audit::schema(), Vec::new()).await.unwrap();
        lake.overwrite("bronze", "t", crate::audit::schema(), Vec::new()).await.unwrap();
        for role in [Role::Admin, Role::Analyst, Role::Reader] {
            let session = SessionBuilder::full(&lake, &config).for_role(role, &config.pii).build().await.unwrap();
            let names = names_in(&session.ctx, "'audit', 'bronze'").await;
            let only = SessionBuilder::new(&lake).only(&[tables::AUDIT_QUERIES]).for_role(role, &config.pii).build().await.unwrap();
            if role == Role::Admin {
                assert_eq!(names, ["audit.queries", "bronze.t"]);
                assert_eq!(only.tables.len(), 1);
            } else {
                assert_eq!(names, ["bronze.t"], "{role}");
                assert!(only.tables.is_empty(), "{role}");
            }
        }
    }
}
