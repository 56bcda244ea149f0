//! The settings of `medallion up`: `[up]` (which parts run, the grace
//! period), `[[up.schedule]]`, `[up.retry]`, `[alerts]`, `[freshness]` and
//! `[maintenance]`.
//!
//! They are read with the rest of the configuration, so a misspelt cron
//! field, an unknown time zone or a bad duration stops every command at
//! start, with one line naming the key, not hours later when the schedule
//! would fire.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{text, FileValue, Form, Given, Sources, ALERTS_WEBHOOK, BOOLEAN, COUNT, DURATION, POSITIVE_DURATION};
use crate::error::{Error, Result};
use crate::up::cron::Cron;
use crate::up::freshness::FreshnessRule;
use crate::up::scheduler::{parse_zone, CatchUp, Job, RetryPolicy, Schedule, When};

/// `[up]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpFile {
    stream: Option<FileValue>,
    serve: Option<FileValue>,
    grace: Option<FileValue>,
    #[serde(default)]
    schedule: Vec<ScheduleFile>,
    #[serde(default)]
    retry: RetryFile,
}

/// One `[[up.schedule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    name: Option<String>,
    cron: Option<String>,
    every: Option<FileValue>,
    timezone: Option<String>,
    run: Option<String>,
    catch_up: Option<String>,
}

/// `[up.retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFile {
    attempts: Option<FileValue>,
    backoff: Option<FileValue>,
}

/// `[alerts]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertsFile {
    webhook: Option<String>,
}

/// One entry of `[freshness]`: `"gold.kpi_revenue" = { warn_after = "26h" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FreshnessFile {
    warn_after: Option<FileValue>,
    error_after: Option<FileValue>,
}

/// `[maintenance]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MaintenanceFile {
    optimize_every: Option<FileValue>,
    vacuum_every: Option<FileValue>,
    vacuum_retention: Option<FileValue>,
    target_file_size_mb: Option<FileValue>,
}

/// What `medallion up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// The continuous stream (`[stream]` gives its source and options); on
    /// by default when a source is configured (Kafka brokers or a folder).
    pub stream: bool,
    /// The dashboard, the API and the PostgreSQL endpoint (`[serve]`).
    pub serve: bool,
    /// Longest the parts are given to stop on SIGTERM / Ctrl-C.
    pub grace: Duration,
    pub schedules: Vec<Schedule>,
    pub retry: RetryPolicy,
    /// Webhook of the alerts (`[alerts] webhook`, `MEDALLION_ALERT_WEBHOOK`);
    /// `None` logs them only. It often holds a token: it is a secret.
    pub webhook: Option<String>,
    pub freshness: Vec<FreshnessRule>,
    pub maintenance: MaintenanceConfig,
}

/// Table upkeep while `up` runs.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// How often the streaming tables are compacted and checkpointed;
    /// `None` (`optimize_every = "0s"`) never.
    pub optimize_every: Option<Duration>,
    /// How often files older than the retention are deleted; `None` never.
    pub vacuum_every: Option<Duration>,
    /// Files removed from a table longer ago than this are deleted by vacuum.
    pub vacuum_retention: Duration,
    /// Size compaction aims for, per file.
    pub target_file_bytes: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            optimize_every: Some(Duration::from_secs(3600)),
            vacuum_every: Some(Duration::from_secs(24 * 3600)),
            vacuum_retention: Duration::from_secs(7 * 24 * 3600),
            target_file_bytes: 128 << 20,
        }
    }
}

/// A key of the file read with `form`; `origin` names it in messages.
fn file_value<T>(value: Option<FileValue>, origin: String, form: Form<T>) -> Result<Option<T>> {
    text(value).map(|text| form.read(&Given { text, origin })).transpose()
}

/// A duration where zero means "never".
fn every(value: Option<FileValue>, origin: String, default: Option<Duration>) -> Result<Option<Duration>> {
    Ok(match file_value(value, origin, DURATION)? {
        Some(duration) if duration.is_zero() => None,
        Some(duration) => Some(duration),
        None => default,
    })
}

const JOB_FORM: &str = "run, ingest, refine, aggregate, optimize or vacuum";

impl UpConfig {
    pub(super) fn resolve(
        up: UpFile,
        alerts: AlertsFile,
        freshness: BTreeMap<String, FreshnessFile>,
        maintenance: MaintenanceFile,
        stream_configured: bool,
        sources: &Sources,
    ) -> Result<UpConfig> {
        let file = &sources.file_name;
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            attempts: file_value(up.retry.attempts, format!("up.retry.attempts in {file}"), COUNT)?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(defaults.attempts),
            backoff: file_value(up.retry.backoff, format!("up.retry.backoff in {file}"), DURATION)?
                .unwrap_or(defaults.backoff),
        };
        let mut schedules = Vec::new();
        for (index, entry) in up.schedule.into_iter().enumerate() {
            let schedule = schedule(entry, index, file)?;
            if schedules.iter().any(|s: &Schedule| s.name == schedule.name) {
                return Err(Error::Config(format!(
                    "two [[up.schedule]] entries in {file} are named '{}': give each its own name",
                    schedule.name
                )));
            }
            schedules.push(schedule);
        }
        let mut rules = Vec::new();
        for (table, limits) in freshness {
            crate::lake::upkeep::split_table_name(&table).map_err(|_| {
                Error::Config(format!(
                    "[freshness] in {file} names '{table}': use layer.table, such as \"gold.kpi_revenue\""
                ))
            })?;
            let warn_after = file_value(limits.warn_after, format!("freshness.\"{table}\".warn_after in {file}"), POSITIVE_DURATION)?;
            let error_after = file_value(limits.error_after, format!("freshness.\"{table}\".error_after in {file}"), POSITIVE_DURATION)?;
            if warn_after.is_none() && error_after.is_none() {
                return Err(Error::Config(format!(
                    "freshness.\"{table}\" in {file} has no limit: give warn_after, error_after or both"
                )));
            }
            rules.push(FreshnessRule { table, warn_after, error_after });
        }
        let default_upkeep = MaintenanceConfig::default();
        let maintenance = MaintenanceConfig {
            optimize_every: every(maintenance.optimize_every, format!("maintenance.optimize_every in {file}"), default_upkeep.optimize_every)?,
            vacuum_every: every(maintenance.vacuum_every, format!("maintenance.vacuum_every in {file}"), default_upkeep.vacuum_every)?,
            vacuum_retention: file_value(maintenance.vacuum_retention, format!("maintenance.vacuum_retention in {file}"), DURATION)?
                .unwrap_or(default_upkeep.vacuum_retention),
            target_file_bytes: file_value(maintenance.target_file_size_mb, format!("maintenance.target_file_size_mb in {file}"), COUNT)?
                .map(|mb| (mb as u64) << 20)
                .unwrap_or(default_upkeep.target_file_bytes),
        };
        Ok(UpConfig {
            stream: file_value(up.stream, format!("up.stream in {file}"), BOOLEAN)?.unwrap_or(stream_configured),
            serve: file_value(up.serve, format!("up.serve in {file}"), BOOLEAN)?.unwrap_or(true),
            grace: file_value(up.grace, format!("up.grace in {file}"), POSITIVE_DURATION)?.unwrap_or(Duration::from_secs(30)),
            schedules,
            retry,
            webhook: sources.text(&ALERTS_WEBHOOK, None, alerts.webhook),
            freshness: rules,
            maintenance,
        })
    }
}

/// One `[[up.schedule]]` entry, checked.
fn schedule(entry: ScheduleFile, index: usize, file: &str) -> Result<Schedule> {
    let name = entry.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| format!("schedule-{}", index + 1));
    let at = |key: &str| format!("up.schedule '{name}' {key} in {file}");
    let when = match (entry.cron, entry.every) {
        (Some(cron), None) => When::Cron(
            cron.parse::<Cron>().map_err(|e| Error::Config(format!("{}: {e}", at("cron"))))?,
        ),
        (None, Some(every)) => When::Every(
            file_value(Some(every), at("every"), POSITIVE_DURATION)?.expect("a value was given"),
        ),
        (Some(_), Some(_)) => {
            return Err(Error::Config(format!("{} has both cron and every: keep one", at("entry"))));
        }
        (None, None) => {
            return Err(Error::Config(format!(
                "{} says neither when nor how often: add cron = \"0 2 * * *\" or every = \"1h\"",
                at("entry")
            )));
        }
    };
    let zone = parse_zone(entry.timezone.as_deref().unwrap_or("UTC"))
        .map_err(|e| Error::Config(format!("{}: {e}", at("timezone"))))?;
    let job = match entry.run.as_deref().unwrap_or("run") {
        "run" => Job::Run,
        "ingest" => Job::Ingest,
        "refine" => Job::Refine,
        "aggregate" => Job::Aggregate,
        "optimize" => Job::Optimize,
        "vacuum" => Job::Vacuum,
        other => return Err(Error::Config(format!("invalid value '{other}' for {}: expected {JOB_FORM}", at("run")))),
    };
    let catch_up = match entry.catch_up.as_deref().unwrap_or("latest") {
        "latest" => CatchUp::Latest,
        "all" => CatchUp::All,
        "none" => CatchUp::None,
        other => {
            return Err(Error::Config(format!(
                "invalid value '{other}' for {}: expected latest, all or none",
                at("catch_up")
            )))
        }
    };
    Ok(Schedule { name, when, zone, job, catch_up })
}
