//! The scheduler of `medallion up`: `[[up.schedule]]` entries, each a cron
//! expression or a period (`every = "10m"`), a job (`run`, `ingest`,
//! `refine`, `aggregate`, `optimize`, `vacuum`) and what to do about the
//! times missed while `up` was down.
//!
//! Each schedule runs in a loop of its own, one job at a time: a time that
//! comes while the previous run still goes is skipped (and logged), never
//! doubled. A failed run is tried again per `[up.retry]` (exponential
//! pauses); when the last attempt fails an alert goes out, and the first
//! success after that sends a recovery alert. What a job does is up to the
//! `JobRunner` (the pipeline, the upkeep), so this module holds only time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::alerts::{Alert, AlertEvent, Alerter};
use super::cron::Cron;
use super::supervisor::Shutdown;
use crate::error::{Error, Result};

/// What a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Job {
    Run,
    Ingest,
    Refine,
    Aggregate,
    Optimize,
    Vacuum,
}

impl Job {
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Run => "run",
            Job::Ingest => "ingest",
            Job::Refine => "refine",
            Job::Aggregate => "aggregate",
            Job::Optimize => "optimize",
            Job::Vacuum => "vacuum",
        }
    }
}

/// What to do at start about the times a schedule missed while `up` was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Run once, for the latest missed time.
    #[default]
    Latest,
    /// Run once for every missed time, oldest first (at most `MAX_CATCH_UP`).
    All,
    /// Forget them; wait for the next time.
    None,
}

/// The most missed runs `catch_up = "all"` replays.
pub const MAX_CATCH_UP: usize = 100;

/// How many missed times are looked at, at most (a minute schedule down
/// for two months).
const MISSED_SCAN_LIMIT: usize = 100_000;

/// When a schedule fires: at the times of a cron expression, or every
/// `period` (at whole multiples of it since the Unix epoch, so a restart
/// keeps the same times and catch-up knows which it missed).
#[derive(Debug, Clone)]
pub enum When {
    Cron(Cron),
    Every(Duration),
}

impl When {
    /// The first time strictly after `after`; `None` when it never fires.
    pub fn next_after(&self, after: DateTime<Utc>, zone: &Tz) -> Option<DateTime<Utc>> {
        match self {
            When::Cron(cron) => cron.next_after(after, zone),
            When::Every(period) => {
                let period_ms = i64::try_from(period.as_millis()).ok()?.max(1);
                let next = (after.timestamp_millis().div_euclid(period_ms) + 1).checked_mul(period_ms)?;
                DateTime::from_timestamp_millis(next)
            }
        }
    }

    /// Every time it fired in `(after, until]`, oldest first, at most `limit`.
    pub fn fired_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, zone: &Tz, limit: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::new();
        let mut cursor = after;
        while times.len() < limit {
            match self.next_after(cursor, zone) {
                Some(next) if next <= until => {
                    times.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        times
    }
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            When::Cron(cron) => write!(f, "{cron}"),
            When::Every(period) => write!(f, "every {period:?}"),
        }
    }
}

/// One `[[up.schedule]]`.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub when: When,
    pub zone: Tz,
    pub job: Job,
    pub catch_up: CatchUp,
}

/// `[up.retry]`: attempts per scheduled run, and the first pause (doubled
/// after each failed attempt).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 3, backoff: Duration::from_secs(30) }
    }
}

/// Why and when a job runs, recorded with its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The schedule's name.
    pub schedule: String,
    /// The time the schedule fired for (a catch-up run has a past one).
    pub scheduled_for: DateTime<Utc>,
    /// The snapshot date built: the scheduled time's date in the schedule's zone.
    pub date: NaiveDate,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// A failed attempt, as the alert shows it.
#[derive(Debug, Clone)]
pub struct JobFailure {
    pub stage: Option<String>,
    pub error: String,
    pub run_id: Option<String>,
}

/// Runs jobs, and remembers when each schedule last fired.
#[async_trait]
pub trait JobRunner: Send + Sync + 'static {
    /// One attempt of `job`.
    async fn run(&self, job: Job, trigger: &Trigger) -> std::result::Result<(), JobFailure>;
    /// The time the schedule last fired for, from the run history.
    async fn last_fired(&self, schedule: &str) -> Option<DateTime<Utc>>;
}

/// What a schedule is doing, for `medallion status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScheduleStatus {
    /// The cron expression, or `every …`.
    pub when: String,
    pub job: String,
    pub next_run: Option<DateTime<Utc>>,
    pub running_since: Option<DateTime<Utc>>,
    pub last_run: Option<DateTime<Utc>>,
    pub last_ok: Option<bool>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub skipped: u64,
}

/// Shared view of every schedule's status.
pub type ScheduleStatuses = Arc<Mutex<BTreeMap<String, ScheduleStatus>>>;

/// One schedule's loop.
pub struct ScheduleLoop<R: JobRunner> {
    pub schedule: Schedule,
    pub retry: RetryPolicy,
    pub runner: Arc<R>,
    pub alerter: Alerter,
    pub lake: String,
    pub statuses: ScheduleStatuses,
}

impl<R: JobRunner> ScheduleLoop<R> {
    /// Catches up, then runs at every time of the schedule until shutdown.
    pub async fn run(self, shutdown: Shutdown) -> Result<()> {
        self.update(|s| {
            s.when = self.schedule.when.to_string();
            s.job = self.schedule.job.as_str().to_string();
        });
        for missed in self.missed_times().await {
            if shutdown.is_stopping() {
                return Ok(());
            }
            self.run_with_retries(missed, &shutdown).await;
        }
        let mut after = Utc::now();
        loop {
            let Some(next) = self.schedule.when.next_after(after, &self.schedule.zone) else {
                tracing::warn!("schedule {} never fires ({}): it is left idle", self.schedule.name, self.schedule.when);
                shutdown.stopped().await;
                return Ok(());
            };
            self.update(|s| s.next_run = Some(next));
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if !shutdown.sleep(wait).await {
                return Ok(());
            }
            self.run_with_retries(next, &shutdown).await;
            // Times that came while the run went on are skipped, not queued.
            let now = Utc::now();
            let skipped = self.schedule.when.fired_between(next, now, &self.schedule.zone, MAX_CATCH_UP);
            if !skipped.is_empty() {
                tracing::warn!(
                    "schedule {}: {} run(s) skipped while the previous one was still going",
                    self.schedule.name,
                    skipped.len()
                );
                self.update(|s| s.skipped += skipped.len() as u64);
            }
            after = now.max(next);
        }
    }

    /// The times to run at start, per the schedule's catch-up rule.
    async fn missed_times(&self) -> Vec<DateTime<Utc>> {
        if self.schedule.catch_up == CatchUp::None {
            return Vec::new();
        }
        let Some(last) = self.runner.last_fired(&self.schedule.name).await else {
            return Vec::new();
        };
        let mut missed = self.schedule.when.fired_between(last, Utc::now(), &self.schedule.zone, MISSED_SCAN_LIMIT);
        if self.schedule.catch_up == CatchUp::Latest {
            missed = missed.pop().into_iter().collect();
        } else if missed.len() > MAX_CATCH_UP {
            missed = missed.split_off(missed.len() - MAX_CATCH_UP);
        }
        missed
    }

    /// Every attempt of one scheduled run; alerts on the final failure and
    /// on the first success after failures.
    async fn run_with_retries(&self, scheduled_for: DateTime<Utc>, shutdown: &Shutdown) {
        let date = scheduled_for.with_timezone(&self.schedule.zone).date_naive();
        let attempts = self.retry.attempts.max(1);
        let mut pause = self.retry.backoff;
        self.update(|s| s.running_since = Some(Utc::now()));
        for attempt in 1..=attempts {
            let trigger = Trigger { schedule: self.schedule.name.clone(), scheduled_for, date, attempt };
            match self.runner.run(self.schedule.job, &trigger).await {
                Ok(()) => {
                    let was_failing = self.status().consecutive_failures > 0;
                    self.update(|s| {
                        s.running_since = None;
                        s.last_run = Some(scheduled_for);
                        s.last_ok = Some(true);
                        s.consecutive_failures = 0;
                    });
                    if was_failing {
                        self.alert(AlertEvent::Recovery, None, &format!("{} recovered: {} for {date} succeeded", self.schedule.name, self.schedule.job.as_str()));
                    }
                    return;
                }
                Err(failure) if attempt < attempts => {
                    tracing::warn!(
                        "schedule {}: attempt {attempt}/{attempts} failed: {}; next attempt in {pause:?}",
                        self.schedule.name,
                        failure.error
                    );
                    if !shutdown.sleep(pause).await {
                        self.update(|s| s.running_since = None);
                        return;
                    }
                    pause *= 2;
                }
                Err(failure) => {
                    self.update(|s| {
                        s.running_since = None;
                        s.last_run = Some(scheduled_for);
                        s.last_ok = Some(false);
                        s.last_error = Some(failure.error.clone());
                        s.consecutive_failures += 1;
                    });
                    let text = format!(
                        "{} failed after {attempts} attempt(s): {} for {date}{}: {}",
                        self.schedule.name,
                        self.schedule.job.as_str(),
                        failure.stage.as_deref().map(|s| format!(" (stage {s})")).unwrap_or_default(),
                        failure.error
                    );
                    self.alert(AlertEvent::Failure, Some(&failure), &text);
                }
            }
        }
    }

    fn alert(&self, event: AlertEvent, failure: Option<&JobFailure>, text: &str) {
        self.alerter.send(Alert {
            text: text.to_string(),
            event,
            pipeline: self.schedule.name.clone(),
            stage: failure.and_then(|f| f.stage.clone()),
            error: failure.map(|f| f.error.clone()),
            run_id: failure.and_then(|f| f.run_id.clone()),
            table: None,
            lake: self.lake.clone(),
            at: Utc::now(),
        });
    }

    fn status(&self) -> ScheduleStatus {
        self.statuses.lock().expect("status lock").get(&self.schedule.name).cloned().unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut ScheduleStatus)) {
        let mut statuses = self.statuses.lock().expect("status lock");
        change(statuses.entry(self.schedule.name.clone()).or_default());
    }
}

/// Parses a time zone name (`UTC`, `Europe/Paris`).
pub fn parse_zone(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        Error::Config(format!("unknown time zone '{name}': use an IANA name such as UTC or Europe/Paris"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails the first `failures` attempts, records every trigger.
    struct FakeRunner {
        failures: u32,
        calls: AtomicU32,
        triggers: Mutex<Vec<Trigger>>,
        last_fired: Option<DateTime<Utc>>,
        run_time: Duration,
    }

    #[async_trait]
    impl JobRunner for FakeRunner {
        async fn run(&self, _job: Job, trigger: &Trigger) -> std::result::Result<(), JobFailure> {
            self.triggers.lock().unwrap().push(trigger.clone());
            tokio::time::sleep(self.run_time).await;
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                Err(JobFailure { stage: Some("ingest".into()), error: "cannot connect to PostgreSQL".into(), run_id: None })
            } else {
                Ok(())
            }
        }
        async fn last_fired(&self, _schedule: &str) -> Option<DateTime<Utc>> {
            self.last_fired
        }
    }

    fn runner(failures: u32, last_fired: Option<DateTime<Utc>>) -> Arc<FakeRunner> {
        Arc::new(FakeRunner {
            failures,
            calls: AtomicU32::new(0),
            triggers: Mutex::new(Vec::new()),
            last_fired,
            run_time: Duration::ZERO,
        })
    }

    fn schedule_loop(cron: &str, catch_up: CatchUp, runner: Arc<FakeRunner>) -> ScheduleLoop<FakeRunner> {
        ScheduleLoop {
            schedule: Schedule { name: "nightly".into(), when: When::Cron(cron.parse().unwrap()), zone: Tz::UTC, job: Job::Run, catch_up },
            retry: RetryPolicy { attempts: 3, backoff: Duration::from_millis(5) },
            runner,
            alerter: Alerter::log_only(),
            lake: "file:///tmp/lake".into(),
            statuses: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_failing_run_is_retried_then_succeeds() {
        let fake = runner(2, None);
        let schedule = schedule_loop("0 2 * * *", CatchUp::None, fake.clone());
        let (_keep, shutdown) = Shutdown::pair();
        schedule.run_with_retries(Utc::now(), &shutdown).await;
        let attempts: Vec<u32> = fake.triggers.lock().unwrap().iter().map(|t| t.attempt).collect();
        assert_eq!(attempts, vec![1, 2, 3]);
        assert_eq!(schedule.status().consecutive_failures, 0);
        assert_eq!(schedule.status().last_ok, Some(true));
    }

    #[tokio::test]
    async fn the_last_failure_is_counted_and_the_next_success_recovers() {
        let fake = runner(3, None);
        let schedule = schedule_loop("0 2 * * *", CatchUp::None, fake.clone());
        let (_keep, shutdown) = Shutdown::pair();
        schedule.run_with_retries(Utc::now(), &shutdown).await;
        assert_eq!(schedule.status().consecutive_failures, 1);
        assert_eq!(schedule.status().last_error.as_deref(), Some("cannot connect to PostgreSQL"));
        schedule.run_with_retries(Utc::now(), &shutdown).await;
        assert_eq!(schedule.status().consecutive_failures, 0);
        assert_eq!(fake.triggers.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn catch_up_runs_the_latest_or_every_missed_time_or_none() {
        let three_hours_ago = Utc::now() - chrono::Duration::minutes(179);
        for (rule, expected) in [(CatchUp::Latest, 1), (CatchUp::All, 3), (CatchUp::None, 0)] {
            let schedule = schedule_loop("0 * * * *", rule, runner(0, Some(three_hours_ago)));
            let missed = schedule.missed_times().await;
            // 179 minutes hold two or three whole hours, by when the test runs.
            let expected_range = if expected == 3 { 2..=3 } else { expected..=expected };
            assert!(expected_range.contains(&missed.len()), "{rule:?}: {}", missed.len());
            assert!(missed.windows(2).all(|w| w[0] < w[1]));
        }
        // A schedule that never ran before has nothing to catch up.
        assert!(schedule_loop("0 * * * *", CatchUp::All, runner(0, None)).missed_times().await.is_empty());
    }

    #[tokio::test]
    async fn the_date_built_is_the_scheduled_day_in_the_schedule_zone() {
        let fake = runner(0, None);
        let mut schedule = schedule_loop("0 0 * * *", CatchUp::None, fake.clone());
        schedule.schedule.zone = parse_zone("Asia/Tokyo").unwrap();
        let (_keep, shutdown) = Shutdown::pair();
        // 2026-11-30 15:00 UTC is 2026-12-01 00:00 in Tokyo.
        let at = DateTime::parse_from_rfc3339("2026-11-30T15:00:00Z").unwrap().with_timezone(&Utc);
        schedule.run_with_retries(at, &shutdown).await;
        assert_eq!(fake.triggers.lock().unwrap()[0].date.to_string(), "2026-12-01");
        assert!(parse_zone("Mars/Olympus").unwrap_err().to_string().contains("IANA"));
    }

    #[test]
    fn catch_up_lists_the_missed_times_of_a_cron() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let hourly = When::Cron("0 * * * *".parse().unwrap());
        let missed = hourly.fired_between(at("2026-11-30T09:30:00Z"), at("2026-11-30T12:00:00Z"), &Tz::UTC, 10);
        assert_eq!(missed, vec![at("2026-11-30T10:00:00Z"), at("2026-11-30T11:00:00Z"), at("2026-11-30T12:00:00Z")]);
        assert_eq!(hourly.fired_between(at("2026-11-30T09:30:00Z"), at("2026-11-30T12:00:00Z"), &Tz::UTC, 2).len(), 2);
    }

    #[test]
    fn a_period_fires_at_whole_multiples_of_itself() {
        let every = When::Every(Duration::from_secs(600));
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let zone = Tz::UTC;
        assert_eq!(every.next_after(at("2026-11-30T10:03:00Z"), &zone), Some(at("2026-11-30T10:10:00Z")));
        assert_eq!(every.next_after(at("2026-11-30T10:10:00Z"), &zone), Some(at("2026-11-30T10:20:00Z")));
        let missed = every.fired_between(at("2026-11-30T10:05:00Z"), at("2026-11-30T10:40:00Z"), &zone, 100);
        assert_eq!(missed, vec![at("2026-11-30T10:10:00Z"), at("2026-11-30T10:20:00Z"), at("2026-11-30T10:30:00Z"), at("2026-11-30T10:40:00Z")]);
    }
}
