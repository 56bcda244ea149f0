//! The batch DAG: ingest → refine → aggregate, for one snapshot date.
//!
//! Each stage reads only the layer above it and replaces only the date being
//! built, so rerunning a date recomputes every stage and gives the same
//! tables. A stage that fails for a transient reason (connection reset,
//! timeout) is retried with exponential backoff; bad credentials, a missing
//! table or bad SQL fail at once. Every stage, successful or failed, is
//! recorded in `gold.pipeline_runs` (see `runs`).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::bronze;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::session::SessionBuilder;
use crate::lake::{Lake, Layer};
use crate::lineage::openlineage::{self, Events};
use crate::models::{self, ModelSet};
use crate::progress::Progress;
use crate::runs::{self, RunRecord, RunStatus};
use crate::source::dump::Dump;
use crate::source::postgres::PostgresSource;
use crate::source::NORTHWIND_TABLES;
use crate::tables::{self, details_json, StageDetails};

/// Where `ingest` reads from.
pub enum BatchSource {
    Postgres(PostgresSource),
    Dump(Dump),
}

impl BatchSource {
    /// The source the configuration names: `DATABASE_URL`, else an error
    /// that says how to set it (or to use `--from-dump` / `demo`).
    pub fn from_config(config: &Config) -> Result<BatchSource> {
        match &config.database_url {
            Some(url) => Ok(BatchSource::Postgres(PostgresSource::new(url, config.extract_parallelism))),
            None => Err(Error::Config(
                "no source database: set DATABASE_URL (or --database-url), or use --from-dump FILE, or try `medallion demo`"
                    .into(),
            )),
        }
    }
}

/// What one stage did.
#[derive(Debug, Clone, Default)]
pub struct StageReport {
    pub stage: String,
    pub duration: Duration,
    pub attempts: u32,
    /// Rows written per table.
    pub tables: Vec<(String, u64)>,
    /// Bytes read from the source (ingest only).
    pub source_bytes: u64,
    /// Time spent reading and decoding the source (ingest only).
    pub extract_duration: Duration,
    /// Failures per expectation (refine only).
    pub failures_by_rule: BTreeMap<String, u64>,
    pub quarantined: u64,
    /// Where each table's time went (`--profile`): table, one line.
    pub profiles: Vec<(String, String)>,
}

impl StageReport {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, rows)| rows).sum()
    }
}

/// Runs `attempt` until it succeeds, fails for good, or runs out of tries.
pub async fn with_retry<T, F, Fut>(what: &str, mut attempt: F) -> Result<(T, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    const ATTEMPTS: u32 = 3;
    let mut delay = Duration::from_millis(500);
    for number in 1..=ATTEMPTS {
        match attempt().await {
            Ok(value) => return Ok((value, number)),
            Err(err) if err.is_transient() && number < ATTEMPTS => {
                tracing::warn!("{what} failed ({err}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(err) => return Err(err),
        }
    }
    unreachable!("the last attempt returns")
}

/// Bronze: full snapshots of the source tables as the `date` partition
/// (recorded in the run history as command `ingest`).
pub async fn ingest(config: &Config, lake: &Lake, source: &BatchSource, progress: &Progress) -> Result<StageReport> {
    with_lineage(config, lake, |events| async move {
        let mut recorder = Recorder::new(config, lake, "ingest");
        recorder.stage("ingest", ingest_stage(config, lake, source, progress, &events)).await
    })
    .await
}

/// Runs a batch command's `work` with the OpenLineage events `[lineage]`
/// asks for, then waits for their delivery whether `work` succeeded or
/// failed, and returns its outcome unchanged. `work` owns the events, so
/// they are dropped (ending the queue) before the delivery is awaited. A
/// `[lineage]` that cannot be set up fails before `work` starts.
async fn with_lineage<T, Work, WorkFuture>(config: &Config, lake: &Lake, work: Work) -> Result<T>
where
    Work: FnOnce(Events) -> WorkFuture,
    WorkFuture: Future<Output = Result<T>>,
{
    let (events, delivery) = Events::from_config(config, lake)?;
    let outcome = work(events).await;
    delivery.finish().await;
    outcome
}

async fn ingest_stage(
    config: &Config,
    lake: &Lake,
    source: &BatchSource,
    progress: &Progress,
    events: &Events,
) -> Result<StageReport> {
    let started = Instant::now();
    let (mut report, attempts) = with_retry("ingest", || ingest_once(config, lake, source, progress, events)).await?;
    report.duration = started.elapsed();
    report.attempts = attempts;
    Ok(report)
}

async fn ingest_once(
    config: &Config,
    lake: &Lake,
    source: &BatchSource,
    progress: &Progress,
    events: &Events,
) -> Result<StageReport> {
    lake.check_writable().await?;
    let ingested_at = Utc::now();
    let mut report = StageReport { stage: "ingest".into(), ..Default::default() };
    match source {
        BatchSource::Postgres(postgres) => {
            let snapshot = postgres.snapshot().await?;
            // Check every table before writing any, so a missing table leaves
            // the lake exactly as it was.
            let mut plans = Vec::new();
            for table in NORTHWIND_TABLES {
                plans.push((table, snapshot.prepare(table).await?));
            }
            for (table, plan) in plans {
                let name = tables::bronze(table);
                let bar = progress.bar(&name.to_string(), plan.estimated_rows, "rows");
                let started = Instant::now();
                let run = landing_run(config, events, table, &name);
                let extraction = snapshot.extract(plan, &bar);
                let landed = landing_done(config, lake, events, &run, &name, bronze::land_streaming(lake, extraction, config.date, ingested_at).await).await?;
                report.extract_duration += landed.read_time;
                report.source_bytes += landed.source_bytes;
                bar.finish_with_message(format!("v{}", landed.version));
                report.profiles.push((name.to_string(), landing_profile(&landed, started.elapsed())));
                report.tables.push((name.to_string(), landed.rows));
            }
        }
        BatchSource::Dump(dump) => {
            for table in NORTHWIND_TABLES {
                let extract_started = Instant::now();
                let extracted = dump.extract(table)?;
                report.extract_duration += extract_started.elapsed();
                let name = tables::bronze(table);
                let bar = progress.bar(&name.to_string(), extracted.rows() as u64, "rows");
                report.source_bytes += extracted.source_bytes;
                let started = Instant::now();
                let run = landing_run(config, events, table, &name);
                let landed = landing_done(config, lake, events, &run, &name, bronze::land(lake, extracted, config.date, ingested_at).await).await?;
                report.profiles.push((name.to_string(), landing_profile(&landed, started.elapsed())));
                bar.set_position(landed.rows);
                bar.finish_with_message(format!("v{}", landed.version));
                report.tables.push((name.to_string(), landed.rows));
            }
        }
    }
    Ok(report)
}

/// The OpenLineage run of landing source `table` as `name`, started.
fn landing_run(config: &Config, events: &Events, table: &str, name: &crate::lake::TableName) -> openlineage::JobRun {
    let input = match &config.database_url {
        Some(url) => openlineage::postgres_dataset(url, table),
        None => openlineage::Dataset {
            namespace: "file".into(),
            name: format!("northwind_dump.{table}"),
            schema: Vec::new(),
            columns: None,
        },
    };
    let run = events.run(name, vec![input], None);
    events.start(&run);
    run
}

/// Ends the OpenLineage run of a landing: `COMPLETE` with the bronze
/// table's schema and its columns copied from the source, or `FAIL`.
async fn landing_done(
    config: &Config,
    lake: &Lake,
    events: &Events,
    run: &openlineage::JobRun,
    name: &crate::lake::TableName,
    landed: Result<bronze::LandedTable>,
) -> Result<bronze::LandedTable> {
    if !events.enabled() {
        return landed;
    }
    match &landed {
        Ok(_) => {
            let mut output = events.written(lake, name, None).await;
            let technical = ["_ingestion_timestamp", "_source", bronze::PARTITION_COLUMN];
            output.columns = Some(openlineage::copied_columns(&run.inputs[0], &output.schema, &technical));
            events.complete(run, &[output]);
        }
        Err(err) => events.fail(run, &config.secrets().scrub(&crate::error::one_line(&err.to_string()))),
    }
    landed
}

/// One line saying where a table's landing time went.
fn landing_profile(landed: &bronze::LandedTable, wall: Duration) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let profile = &landed.profile;
    format!(
        "read {:.0}ms  encode {:.0}ms  commit {:.0}ms | {}",
        ms(landed.read_time),
        ms(profile.encode),
        ms(profile.commit),
        profile.wall_line(landed.rows, wall)
    )
}

/// The stage that builds a layer: `refine` for silver, `aggregate` for gold.
pub fn stage_of(layer: Layer) -> &'static str {
    if layer == Layer::Silver {
        "refine"
    } else {
        "aggregate"
    }
}

/// Silver (`layer = "silver"`) or gold (`"gold"`) models for the date
/// (recorded in the run history as command `refine` or `aggregate`).
pub async fn run_models(
    config: &Config,
    lake: &Lake,
    models: &ModelSet,
    layer: &str,
    progress: &Progress,
) -> Result<StageReport> {
    let layer: Layer = layer.parse()?;
    let stage = stage_of(layer);
    let report = with_lineage(config, lake, |events| async move {
        let mut recorder = Recorder::new(config, lake, stage);
        recorder.stage(stage, models_stage(config, lake, models, layer, progress, &events)).await
    })
    .await?;
    profile_written(config, lake, std::slice::from_ref(&report)).await;
    Ok(report)
}

/// Profiles the tables the stages wrote (`[profile] after_run`; a failure
/// is a warning).
async fn profile_written(config: &Config, lake: &Lake, reports: &[StageReport]) {
    let written: Vec<String> = reports.iter().flat_map(|r| r.tables.iter().map(|(name, _)| name.clone())).collect();
    crate::profiles::after_run(config, lake, &written).await;
}

async fn models_stage(
    config: &Config,
    lake: &Lake,
    models: &ModelSet,
    layer: Layer,
    progress: &Progress,
    events: &Events,
) -> Result<StageReport> {
    let stage = stage_of(layer);
    let started = Instant::now();
    let ((tables, failures, quarantined, profiles), attempts) = with_retry(stage, || async {
        lake.ensure_buckets().await?;
        let ctx = model_session(config, lake).await?;
        check_inputs(&ctx, layer, config)?;
        let bar = progress.bar(layer.as_str(), 0, "models");
        let outcomes = models::run_layer(&ctx, lake, models, layer, config.date, &bar, events).await?;
        bar.finish_with_message("done");
        let mut tables = Vec::new();
        let mut failures = BTreeMap::new();
        let mut quarantined = 0;
        let mut profiles = Vec::new();
        for outcome in outcomes {
            profiles.push((outcome.table.to_string(), outcome.profile.summary(outcome.rows)));
            tables.push((outcome.table.to_string(), outcome.rows));
            if !outcome.failures_by_rule.is_empty() || outcome.quarantined > 0 {
                tables.push((outcome.table.with_suffix(models::QUARANTINE_SUFFIX).to_string(), outcome.quarantined));
            }
            quarantined += outcome.quarantined;
            failures.extend(outcome.failures_by_rule);
        }
        Ok((tables, failures, quarantined, profiles))
    })
    .await?;
    Ok(StageReport {
        stage: stage.into(),
        duration: started.elapsed(),
        attempts,
        tables,
        source_bytes: 0,
        extract_duration: Duration::ZERO,
        failures_by_rule: failures,
        quarantined,
        profiles,
    })
}

/// The session models run in (refine, aggregate, explain): the lake, `ref.*`,
/// the configured memory limit, on the configured engine.
async fn model_session(config: &Config, lake: &Lake) -> Result<datafusion::prelude::SessionContext> {
    Ok(SessionBuilder::new(lake)
        .with_reference_tables(config)
        .within_memory(config.memory_limit)
        .on(&config.engine)
        .build()
        .await?
        .ctx)
}

/// Fails with advice when the layer above has not been built.
fn check_inputs(ctx: &datafusion::prelude::SessionContext, layer: Layer, config: &Config) -> Result<()> {
    let (above, command) =
        if layer == Layer::Silver { (Layer::Bronze, "medallion ingest") } else { (Layer::Silver, "medallion refine") };
    let exists = ctx
        .catalog("datafusion")
        .and_then(|c| c.schema(above.as_str()))
        .map(|s| !s.table_names().is_empty())
        .unwrap_or(false);
    if !exists {
        return Err(Error::Config(format!(
            "the {above} layer is empty: run `{command} --date {}` first (or `medallion run`)",
            config.date
        )));
    }
    Ok(())
}

/// The whole DAG for one date (recorded as command `run`, one record per stage).
pub async fn run(config: &Config, lake: &Lake, source: &BatchSource, progress: &Progress) -> Result<Vec<StageReport>> {
    let reports = with_lineage(config, lake, |events| async move {
        run_stages(config, lake, source, progress, &events).await
    })
    .await?;
    profile_written(config, lake, &reports).await;
    Ok(reports)
}

/// The three stages of `run`, recorded, with their lineage events.
async fn run_stages(
    config: &Config,
    lake: &Lake,
    source: &BatchSource,
    progress: &Progress,
    events: &Events,
) -> Result<Vec<StageReport>> {
    let mut recorder = Recorder::new(config, lake, "run");
    let models = match ModelSet::load(config.models_dir.as_deref()) {
        Ok(models) => models,
        Err(err) => {
            recorder.failed("load models", Utc::now(), Duration::ZERO, &err).await;
            return Err(err);
        }
    };
    let mut reports = Vec::new();
    reports.push(recorder.stage("ingest", ingest_stage(config, lake, source, progress, events)).await?);
    reports.push(recorder.stage("refine", models_stage(config, lake, &models, Layer::Silver, progress, events)).await?);
    reports.push(recorder.stage("aggregate", models_stage(config, lake, &models, Layer::Gold, progress, events)).await?);
    Ok(reports)
}

/// `medallion explain TABLE`: the plan of the model that builds `table`,
/// run (`analyze`) or not, over the lake as it is; nothing is written.
pub async fn explain(config: &Config, lake: &Lake, models: &ModelSet, table: &str, analyze: bool) -> Result<String> {
    let Some(model) = models.find(table) else {
        return Err(Error::Config(format!(
            "no model builds {table}: the models build {}",
            models.table_names().join(", ")
        )));
    };
    let ctx = model_session(config, lake).await?;
    check_inputs(&ctx, model.layer, config)?;
    models::explain(&ctx, model, config.date, analyze).await
}

/// Writes one `RunRecord` per stage of one command to `gold.pipeline_runs`.
struct Recorder<'a> {
    lake: &'a Lake,
    run_id: String,
    command: String,
    date: chrono::NaiveDate,
    secrets: crate::config::Secrets,
    trigger: crate::tables::RunTrigger,
}

impl<'a> Recorder<'a> {
    fn new(config: &Config, lake: &'a Lake, command: &str) -> Recorder<'a> {
        Recorder {
            lake,
            run_id: runs::new_run_id(),
            command: command.to_string(),
            date: config.date,
            secrets: config.secrets(),
            trigger: config.trigger.clone(),
        }
    }

    /// Runs a stage and records its outcome; returns the outcome unchanged.
    async fn stage(&mut self, stage: &str, work: impl Future<Output = Result<StageReport>>) -> Result<StageReport> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let outcome = work.await;
        match &outcome {
            Ok(report) => self.write(self.record_ok(stage, started_at, report)).await,
            Err(err) => self.failed(stage, started_at, clock.elapsed(), err).await,
        }
        outcome
    }

    fn record_ok(&self, stage: &str, started_at: DateTime<Utc>, report: &StageReport) -> RunRecord {
        let details = StageDetails {
            attempts: report.attempts,
            failures_by_rule: report.failures_by_rule.clone(),
            source_bytes: report.source_bytes,
            tables: report.tables.iter().cloned().collect(),
            trigger: self.trigger.clone(),
        };
        RunRecord {
            run_id: self.run_id.clone(),
            command: self.command.clone(),
            snapshot_date: Some(self.date),
            stage: stage.to_string(),
            started_at,
            duration_ms: report.duration.as_millis() as i64,
            status: RunStatus::Ok,
            rows: report.rows() as i64,
            quarantined: report.quarantined as i64,
            details: details_json(&details),
            error: None,
        }
    }

    async fn failed(&mut self, stage: &str, started_at: DateTime<Utc>, took: Duration, err: &Error) {
        let message = crate::error::one_line(&self.secrets.scrub(&err.to_string()));
        let record = RunRecord {
            run_id: self.run_id.clone(),
            command: self.command.clone(),
            snapshot_date: Some(self.date),
            stage: stage.to_string(),
            started_at,
            duration_ms: took.as_millis() as i64,
            status: RunStatus::Failed,
            rows: 0,
            quarantined: 0,
            details: details_json(&StageDetails { trigger: self.trigger.clone(), ..StageDetails::default() }),
            error: Some(message),
        };
        self.write(record).await;
    }

    async fn write(&self, record: RunRecord) {
        runs::append_best_effort(self.lake, &[record]).await;
    }
}

/// For unit tests: a lake in `dir` built from the built-in Northwind dump
/// through every layer, snapshot 2026-11-25, and its configuration.
#[cfg(test)]
pub(crate) async fn built_demo_lake(dir: &std::path::Path) -> (Config, Lake) {
    let config = Config::load(crate::config::Overrides {
        lake: Some(dir.to_string_lossy().into_owned()),
        date: Some("2026-11-25".into()),
        ..Default::default()
    })
    .unwrap();
    let lake = Lake::new(&config).unwrap();
    let dump = BatchSource::Dump(Dump::northwind().unwrap());
    run(&config, &lake, &dump, &Progress::hidden()).await.unwrap();
    (config, lake)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let calls = AtomicU32::new(0);
        let result = with_retry("x", || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(Error::lake("t", std::io::Error::from(std::io::ErrorKind::ConnectionReset)))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!(result, (7, 2));

        let calls = AtomicU32::new(0);
        let err = with_retry("x", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::Config("bad password".into()))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
