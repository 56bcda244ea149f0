//! `medallion up`: the whole lakehouse as one supervised service.
//!
//! ```text
//!                    ┌─ stream      [stream] source → bronze → live   (waits for its topic)
//!   up::run ─ Supervisor ─ serve       dashboard, API, PostgreSQL     (sees the stream's live state)
//!                    ├─ schedule:N  one per [[up.schedule]] → LakeJobs (pipeline DAG, optimize, vacuum)
//!                    ├─ upkeep      [maintenance]: compact + checkpoint the streaming tables, vacuum
//!                    └─ freshness   [freshness]: levels from the Delta logs, one alert per breach
//! ```
//!
//! A part that fails is restarted with a growing pause and reported (log,
//! alert, `/api/status`); it never takes the others down. On SIGTERM or
//! Ctrl-C every part is told to stop: the stream finishes the batch in
//! flight, a scheduled run stops at its next commit boundary, the server
//! drains; what does not stop within `[up] grace` is abandoned, and since
//! every write is one Delta commit, an abandoned part leaves no half-written
//! table.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::alerts::{Alert, AlertEvent, Alerter, DeliveryPolicy};
use super::freshness::{age_text, Freshness, FreshnessChange, FreshnessRule, FreshnessWatch};
use super::scheduler::{Job, JobFailure, JobRunner, ScheduleLoop, ScheduleStatus, ScheduleStatuses, Trigger};
use super::supervisor::{PartStatus, RestartPolicy, Shutdown, Supervisor};
use crate::config::Config;
use crate::error::{one_line, Error, Result};
use crate::jobs;
use crate::lake::upkeep::{self, OptimizeOptions, VacuumOptions};
use crate::lake::session::SessionBuilder;
use crate::lake::{Lake, TableName};
use crate::live::LiveHandle;
use crate::pipeline::{self, BatchSource};
use crate::progress::Progress;
use crate::runs::{self, RunRecord, RunStatus};
use crate::serve::{self, ServiceReport};
use crate::tables::{self, RunTrigger, StageDetails};

/// How often freshness is checked, at most: a quarter of the shortest
/// limit, within these bounds.
const FRESHNESS_EVERY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(15));
/// The micro-batch interval of `up`'s stream when `[stream] interval` is unset.
const DEFAULT_STREAM_INTERVAL: Duration = Duration::from_secs(1);

/// What `up` reports while it runs and when it stops.
#[derive(Clone, Default)]
pub struct UpStatus {
    started_at: Option<DateTime<Utc>>,
    parts: Arc<Mutex<BTreeMap<String, PartStatus>>>,
    schedules: ScheduleStatuses,
    freshness: Arc<Mutex<Vec<Freshness>>>,
    upkeep: Arc<Mutex<UpkeepStatus>>,
    live: Option<LiveHandle>,
}

/// The last upkeep pass.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpkeepStatus {
    pub last_optimize: Option<DateTime<Utc>>,
    pub last_vacuum: Option<DateTime<Utc>>,
    pub files_compacted: u64,
    pub files_deleted: u64,
    pub last_error: Option<String>,
}

impl UpStatus {
    pub fn parts(&self) -> BTreeMap<String, PartStatus> {
        self.parts.lock().expect("status lock").clone()
    }

    pub fn schedules(&self) -> BTreeMap<String, ScheduleStatus> {
        self.schedules.lock().expect("status lock").clone()
    }

    pub fn freshness(&self) -> Vec<Freshness> {
        self.freshness.lock().expect("status lock").clone()
    }
}

impl ServiceReport for UpStatus {
    fn status(&self) -> serde_json::Value {
        let lag = self.live.as_ref().map(|live| live.current().lag.clone()).unwrap_or_default();
        serde_json::json!({
            "service": "medallion up",
            "started_at": self.started_at,
            "parts": self.parts(),
            "schedules": self.schedules(),
            "upkeep": self.upkeep.lock().expect("status lock").clone(),
            "stream_lag": lag,
            "freshness": self.freshness(),
        })
    }

    fn freshness(&self) -> serde_json::Value {
        serde_json::json!({ "tables": UpStatus::freshness(self) })
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        text.push_str("# HELP medallion_table_age_seconds Seconds since the table's last Delta commit.\n");
        text.push_str("# TYPE medallion_table_age_seconds gauge\n");
        for table in UpStatus::freshness(self) {
            if let Some(age) = table.age_seconds {
                text.push_str(&format!("medallion_table_age_seconds{{table=\"{}\"}} {age}\n", table.table));
            }
        }
        text.push_str("# HELP medallion_table_freshness_breach 1 when the table is past a [freshness] limit.\n");
        text.push_str("# TYPE medallion_table_freshness_breach gauge\n");
        for table in UpStatus::freshness(self) {
            text.push_str(&format!(
                "medallion_table_freshness_breach{{table=\"{}\",level=\"{}\"}} {}\n",
                table.table,
                table.colour,
                u8::from(table.level.is_breach())
            ));
        }
        text.push_str("# HELP medallion_part_restarts_total Restarts of each part of medallion up.\n");
        text.push_str("# TYPE medallion_part_restarts_total counter\n");
        for (part, status) in self.parts() {
            text.push_str(&format!("medallion_part_restarts_total{{part=\"{part}\"}} {}\n", status.restarts));
        }
        text
    }
}

/// What `up` did, for its summary line.
pub struct UpReport {
    pub duration: Duration,
    pub parts: BTreeMap<String, PartStatus>,
    pub schedules: BTreeMap<String, ScheduleStatus>,
    /// Parts that had not stopped within the grace period.
    pub abandoned: Vec<String>,
}

/// Where the server listens, once started.
pub struct Started {
    pub http: Option<std::net::SocketAddr>,
    pub pg: Option<std::net::SocketAddr>,
    pub parts: Vec<String>,
}

/// Runs every part the configuration asks for until `stop_requested`
/// resolves; `on_started` is told where the server listens.
pub async fn run(
    config: &Config,
    lake: Lake,
    stop_requested: impl Future<Output = ()>,
    on_started: impl FnOnce(&Started),
) -> Result<UpReport> {
    let clock = Instant::now();
    let alerter = match &config.up.webhook {
        Some(webhook) => Alerter::start(webhook, DeliveryPolicy::default())?,
        None => Alerter::log_only(),
    };
    let live = LiveHandle::new();
    let mut supervisor = Supervisor::new();
    let status = UpStatus {
        started_at: Some(Utc::now()),
        parts: supervisor.statuses(),
        live: config.up.stream.then(|| live.clone()),
        ..UpStatus::default()
    };
    let lake_name = lake.location().describe();
    {
        let alerter = alerter.clone();
        let lake_name = lake_name.clone();
        supervisor.on_failure(Arc::new(move |part: &str, error: &str| {
            alerter.send(Alert {
                text: format!("medallion up: {part} failed and is restarted: {error}"),
                event: AlertEvent::Failure,
                pipeline: part.to_string(),
                stage: None,
                error: Some(error.to_string()),
                run_id: None,
                table: None,
                lake: lake_name.clone(),
                at: Utc::now(),
            });
        }));
    }

    let mut started = Started { http: None, pg: None, parts: Vec::new() };
    // The server binds before anything else runs: an address in use is an
    // error at start, not a part restarting forever.
    let mut server = None;
    if config.up.serve {
        let options = serve::ServeOptions { follow_lake_live: !config.up.stream, ..config.serve_options() };
        let running = serve::start(config, lake.clone(), live.clone(), options).await?;
        let report: Arc<dyn ServiceReport> = Arc::new(status.clone());
        let _ = running.state().service.set(report);
        started.http = Some(running.http_addr());
        started.pg = running.pg_addr();
        server = Some(running);
    }

    if config.up.stream {
        let (config, lake, live) = (stream_config(config), lake.clone(), live.clone());
        supervisor.add("stream", RestartPolicy::default(), move |shutdown| {
            let (config, lake, live) = (config.clone(), lake.clone(), live.clone());
            async move { stream_part(&config, &lake, &live, shutdown).await }
        });
        started.parts.push("stream".into());
    }
    if let Some(server) = server {
        let slot = Arc::new(Mutex::new(Some(server)));
        supervisor.add("serve", RestartPolicy::default(), move |shutdown| {
            let slot = slot.clone();
            async move {
                let Some(server) = slot.lock().expect("server slot").take() else { return Ok(()) };
                shutdown.stopped().await;
                server.shutdown().await;
                Ok(())
            }
        });
        started.parts.push("serve".into());
    }
    let jobs = Arc::new(LakeJobs { config: config.clone(), lake: lake.clone() });
    for schedule in &config.up.schedules {
        let part = format!("schedule:{}", schedule.name);
        let (schedule, jobs, alerter, statuses) =
            (schedule.clone(), jobs.clone(), alerter.clone(), status.schedules.clone());
        let (retry, lake_name) = (config.up.retry, lake_name.clone());
        supervisor.add(&part, RestartPolicy::default(), move |shutdown| {
            let schedule_loop = ScheduleLoop {
                schedule: schedule.clone(),
                retry,
                runner: jobs.clone(),
                alerter: alerter.clone(),
                lake: lake_name.clone(),
                statuses: statuses.clone(),
            };
            schedule_loop.run(shutdown)
        });
        started.parts.push(part);
    }
    // The stream's tables and the audit log (one commit per flush while the server is queried) gather small files.
    let upkeep_on = (config.up.stream || (config.up.serve && config.audit.enabled))
        && (config.up.maintenance.optimize_every.is_some() || config.up.maintenance.vacuum_every.is_some());
    if upkeep_on {
        let (config, lake, upkeep) = (config.clone(), lake.clone(), status.upkeep.clone());
        supervisor.add("upkeep", RestartPolicy::default(), move |shutdown| {
            let (config, lake, upkeep) = (config.clone(), lake.clone(), upkeep.clone());
            async move { upkeep_part(&config, &lake, &upkeep, shutdown).await }
        });
        started.parts.push("upkeep".into());
    }
    if !config.up.freshness.is_empty() {
        let (rules, lake, alerter, shared) =
            (config.up.freshness.clone(), lake.clone(), alerter.clone(), status.freshness.clone());
        supervisor.add("freshness", RestartPolicy::default(), move |shutdown| {
            let (rules, lake, alerter, shared) = (rules.clone(), lake.clone(), alerter.clone(), shared.clone());
            async move { freshness_part(&rules, &lake, &alerter, &shared, shutdown).await }
        });
        started.parts.push("freshness".into());
    }
    if started.parts.is_empty() {
        return Err(Error::Config(
            "medallion up has nothing to run: set [up] stream = true or serve = true, or add an [[up.schedule]]".into(),
        ));
    }
    on_started(&started);
    let abandoned = supervisor.run(stop_requested, config.up.grace).await;
    Ok(UpReport { duration: clock.elapsed(), parts: status.parts(), schedules: status.schedules(), abandoned })
}

/// `up`'s stream runs continuously: `[stream] interval`, else one second.
fn stream_config(config: &Config) -> Config {
    let mut config = config.clone();
    if config.stream.interval.is_none() {
        config.stream.interval = Some(DEFAULT_STREAM_INTERVAL);
    }
    config
}

/// The stream part: waits for its source, then streams until shutdown.
async fn stream_part(config: &Config, lake: &Lake, live: &LiveHandle, shutdown: Shutdown) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let stopper = tokio::spawn(async move {
        shutdown.stopped().await;
        flag.store(true, Ordering::SeqCst);
    });
    let result = match jobs::wait_for_source(config, &stop).await {
        Ok(Some(source)) => jobs::stream(config, lake, source, live, &Progress::hidden(), stop).await.map(|_| ()),
        Ok(None) => Ok(()),
        Err(err) => Err(err),
    };
    stopper.abort();
    result
}

/// The tables `up` compacts: many small appends (the stream's, and the
/// audit log's, one per flush).
const COMPACTED: [TableName; 3] = [tables::SALES_EVENTS, tables::SALES_EVENTS_REJECTED, tables::AUDIT_QUERIES];

/// The tables `up` vacuums: the compacted tables and the gold live tables
/// the stream rewrites every second.
const VACUUMED: [TableName; 5] = [
    tables::SALES_EVENTS,
    tables::SALES_EVENTS_REJECTED,
    tables::AUDIT_QUERIES,
    tables::LIVE_SALES_BY_COUNTRY,
    tables::SALES_BY_COUNTRY_MINUTE,
];

/// The upkeep part: on its cadence, compaction and a checkpoint of the
/// streaming tables, and a vacuum. Optimize commits change no data and
/// are retried when they lose a race with the stream, which never waits
/// for them.
async fn upkeep_part(config: &Config, lake: &Lake, status: &Mutex<UpkeepStatus>, shutdown: Shutdown) -> Result<()> {
    let maintenance = &config.up.maintenance;
    let mut next_optimize = maintenance.optimize_every.map(|every| Instant::now() + every);
    let mut next_vacuum = maintenance.vacuum_every.map(|every| Instant::now() + every);
    loop {
        let next = [next_optimize, next_vacuum].into_iter().flatten().min();
        let Some(next) = next else { return Ok(()) };
        if !shutdown.sleep(next.saturating_duration_since(Instant::now())).await {
            return Ok(());
        }
        let now = Instant::now();
        if next_optimize.is_some_and(|at| at <= now) {
            let result = optimize_tables(lake, &COMPACTED, maintenance.target_file_bytes, true).await;
            record_upkeep(status, config, result, |s, files| {
                s.last_optimize = Some(Utc::now());
                s.files_compacted += files;
            });
            next_optimize = maintenance.optimize_every.map(|every| Instant::now() + every);
        }
        if next_vacuum.is_some_and(|at| at <= now) {
            let result = vacuum_tables(lake, &VACUUMED, maintenance.vacuum_retention).await;
            record_upkeep(status, config, result, |s, files| {
                s.last_vacuum = Some(Utc::now());
                s.files_deleted += files;
            });
            next_vacuum = maintenance.vacuum_every.map(|every| Instant::now() + every);
        }
    }
}

fn record_upkeep(
    status: &Mutex<UpkeepStatus>,
    config: &Config,
    result: Result<u64>,
    done: impl FnOnce(&mut UpkeepStatus, u64),
) {
    let mut status = status.lock().expect("status lock");
    match result {
        Ok(files) => {
            done(&mut status, files);
            status.last_error = None;
        }
        Err(err) => {
            let line = one_line(&config.secrets().scrub(&err.to_string()));
            tracing::warn!("upkeep: {line}");
            status.last_error = Some(line);
        }
    }
}

/// Compacts `tables` (those that exist), then checkpoints them when asked;
/// returns how many files were merged away.
async fn optimize_tables(lake: &Lake, tables: &[TableName], target_file_bytes: u64, checkpoint: bool) -> Result<u64> {
    let mut merged = 0;
    for table in tables {
        let (layer, name) = (table.layer.as_str(), table.table());
        if lake.existing_table(layer, name).await?.is_none() {
            continue;
        }
        let report = upkeep::optimize(lake, layer, name, &OptimizeOptions { target_file_bytes }).await?;
        merged += report.files_removed.saturating_sub(report.files_added);
        if checkpoint {
            upkeep::checkpoint(lake, layer, name).await?;
        }
    }
    Ok(merged)
}

/// Vacuums `tables` (those that exist); returns how many files were deleted.
async fn vacuum_tables(lake: &Lake, tables: &[TableName], retention: Duration) -> Result<u64> {
    let mut deleted = 0;
    for table in tables {
        let (layer, name) = (table.layer.as_str(), table.table());
        if lake.existing_table(layer, name).await?.is_none() {
            continue;
        }
        let options = VacuumOptions { retention: Some(retention), dry_run: false, force: false };
        deleted += upkeep::vacuum(lake, layer, name, &options).await?.files.len() as u64;
    }
    Ok(deleted)
}

/// The freshness part: levels of the `[freshness]` tables (checked four
/// times per shortest limit, at most every 15 s), an alert when a breach
/// starts and when it ends.
async fn freshness_part(
    rules: &[FreshnessRule],
    lake: &Lake,
    alerter: &Alerter,
    shared: &Mutex<Vec<Freshness>>,
    shutdown: Shutdown,
) -> Result<()> {
    let mut watch = FreshnessWatch::default();
    let shortest = rules.iter().flat_map(|r| [r.warn_after, r.error_after]).flatten().min().unwrap_or(FRESHNESS_EVERY.1);
    let every = (shortest / 4).clamp(FRESHNESS_EVERY.0, FRESHNESS_EVERY.1);
    loop {
        let levels = check_freshness(lake, rules).await?;
        for change in watch.observe(&levels) {
            alerter.send(freshness_alert(lake, &change));
        }
        *shared.lock().expect("status lock") = levels;
        if !shutdown.sleep(every).await {
            return Ok(());
        }
    }
}

/// Every rule's level now, from the last commit time of its table.
pub async fn check_freshness(lake: &Lake, rules: &[FreshnessRule]) -> Result<Vec<Freshness>> {
    let mut levels = Vec::new();
    for rule in rules {
        let (layer, table) = upkeep::split_table_name(&rule.table)?;
        let last_commit = crate::lake::history::last_commit_time(lake, layer, table).await?;
        levels.push(rule.evaluate(last_commit, Utc::now()));
    }
    Ok(levels)
}

fn freshness_alert(lake: &Lake, change: &FreshnessChange) -> Alert {
    let (event, text, table) = match change {
        FreshnessChange::Breach { table, level, age_seconds } => (
            AlertEvent::FreshnessBreach,
            format!("{table} is stale ({}): its last commit is {} old", level.colour(), age_text(*age_seconds)),
            table.clone(),
        ),
        FreshnessChange::Recovered { table } => {
            (AlertEvent::FreshnessRecovered, format!("{table} is fresh again"), table.clone())
        }
    };
    Alert {
        text,
        event,
        pipeline: "freshness".into(),
        stage: None,
        error: None,
        run_id: None,
        table: Some(table),
        lake: lake.location().describe(),
        at: Utc::now(),
    }
}

/// The jobs a schedule runs, on the lake: the pipeline's stages (each
/// attempt recorded in `gold.pipeline_runs` with its trigger) and table
/// upkeep.
pub struct LakeJobs {
    pub config: Config,
    pub lake: Lake,
}

#[async_trait]
impl JobRunner for LakeJobs {
    async fn run(&self, job: Job, trigger: &Trigger) -> std::result::Result<(), JobFailure> {
        let mut config = self.config.clone();
        config.date = trigger.date;
        config.trigger = RunTrigger {
            schedule: Some(trigger.schedule.clone()),
            scheduled_for: Some(trigger.scheduled_for),
            attempt: trigger.attempt,
        };
        let outcome = self.run_job(&config, job).await;
        outcome.map_err(|(stage, err)| JobFailure {
            stage,
            error: one_line(&config.secrets().scrub(&err.to_string())),
            run_id: None,
        })
    }

    async fn last_fired(&self, schedule: &str) -> Option<DateTime<Utc>> {
        match last_scheduled_run(&self.lake, schedule).await {
            Ok(last) => last,
            Err(err) => {
                tracing::warn!("schedule {schedule}: cannot read its last run from the run history: {err}");
                None
            }
        }
    }
}

impl LakeJobs {
    /// One attempt; a failure names its stage when one is known.
    async fn run_job(&self, config: &Config, job: Job) -> std::result::Result<(), (Option<String>, Error)> {
        let lake = &self.lake;
        let progress = Progress::hidden();
        let failed_in = |stage: &str| {
            let stage = stage.to_string();
            move |err: Error| (Some(stage), err)
        };
        match job {
            Job::Run => {
                let source = BatchSource::from_config(config).map_err(|e| (None, e))?;
                pipeline::run(config, lake, &source, &progress).await.map(|_| ()).map_err(|err| (None, err))
            }
            Job::Ingest => {
                let source = BatchSource::from_config(config).map_err(failed_in("ingest"))?;
                pipeline::ingest(config, lake, &source, &progress).await.map(|_| ()).map_err(failed_in("ingest"))
            }
            Job::Refine | Job::Aggregate => {
                let (layer, stage) = if job == Job::Refine { ("silver", "refine") } else { ("gold", "aggregate") };
                let models = crate::models::ModelSet::load(config.models_dir.as_deref()).map_err(failed_in(stage))?;
                pipeline::run_models(config, lake, &models, layer, &progress).await.map(|_| ()).map_err(failed_in(stage))
            }
            Job::Optimize | Job::Vacuum => {
                let started_at = Utc::now();
                let clock = Instant::now();
                let every = lake.every_table_and_audit().await.map_err(failed_in(job.as_str()))?;
                let outcome = if job == Job::Optimize {
                    let target = config.up.maintenance.target_file_bytes;
                    optimize_tables(lake, &every, target, true).await
                } else {
                    vacuum_tables(lake, &every, config.up.maintenance.vacuum_retention).await
                };
                let record = upkeep_record(config, job, started_at, clock.elapsed(), &outcome);
                runs::append_best_effort(lake, &[record]).await;
                outcome.map(|_| ()).map_err(failed_in(job.as_str()))
            }
        }
    }
}

/// The run record of a scheduled optimize or vacuum.
fn upkeep_record(config: &Config, job: Job, started_at: DateTime<Utc>, took: Duration, outcome: &Result<u64>) -> RunRecord {
    let details = StageDetails { trigger: config.trigger.clone(), ..StageDetails::default() };
    RunRecord {
        run_id: runs::new_run_id(),
        command: job.as_str().into(),
        snapshot_date: Some(config.date),
        stage: job.as_str().into(),
        started_at,
        duration_ms: took.as_millis() as i64,
        status: if outcome.is_ok() { RunStatus::Ok } else { RunStatus::Failed },
        rows: *outcome.as_ref().unwrap_or(&0) as i64,
        quarantined: 0,
        details: tables::details_json(&details),
        error: outcome.as_ref().err().map(|err| one_line(&config.secrets().scrub(&err.to_string()))),
    }
}

/// The newest time `schedule` fired for, from the triggers recorded in
/// `gold.pipeline_runs`.
pub async fn last_scheduled_run(lake: &Lake, schedule: &str) -> Result<Option<DateTime<Utc>>> {
    let session = SessionBuilder::new(lake).only(&[tables::PIPELINE_RUNS]).build().await?;
    let records = tables::read_scheduled_run_details(&session.ctx).await?;
    Ok(records
        .into_iter()
        .filter_map(|details| {
            let details: StageDetails = serde_json::from_str(&details).ok()?;
            (details.trigger.schedule.as_deref() == Some(schedule)).then_some(details.trigger.scheduled_for?)
        })
        .max())
}
