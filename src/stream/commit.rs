//! The bronze commits of a micro-batch: its events to `bronze.sales_events`,
//! then its rejects to `bronze.sales_events_rejected`, each one Delta commit
//! that also records the source positions it covers.
//!
//! A batch's commits run on a task of their own while the loop reads and
//! classifies the next batch; commits run one after the other, and each
//! table's `lake::Appender` keeps its Delta state between them. The failure
//! points (`FailurePoint`) are where a test can stop a commit as a crash
//! would: `MEDALLION_CRASH_POINT=<name>` aborts the process there,
//! `StreamOptions::fail_at` makes the commit, and so the run, fail there.
//!
//! A batch without rejects makes no rejects commit, except to record the
//! positions once every `REJECTS_POSITIONS_EVERY` (and at the end of a run,
//! `flush`): a clean stream would otherwise add an empty version to the
//! rejects table with every batch. Until then the rejects table's positions
//! lag behind the events table's, which recovery already handles (after a
//! crash it rereads that stretch and writes only the rejects it lacks), so
//! the lag costs a restart at most that much rereading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

use super::message::{Committed, Positions};
use super::options::{FailAt, FailurePoint};
use super::sink::{self, EVENTS_TABLE, REJECTS_TABLE};
use crate::error::{Error, Result};
use crate::lake::{Appender, Lake};

/// What one batch writes to bronze.
pub struct BronzeRows {
    /// The accepted events (possibly none).
    pub events: Vec<RecordBatch>,
    /// The rejected messages (possibly none).
    pub rejects: RecordBatch,
}

/// The counts and event times of a batch, taken in once it is committed.
pub struct BatchSummary {
    pub messages: u64,
    pub events: u64,
    pub rejected: u64,
    pub late: u64,
    pub event_times: Vec<DateTime<Utc>>,
}

/// A micro-batch whose commits are running.
pub struct InFlight {
    /// Ends with the positions the two commits recorded.
    pub task: JoinHandle<Result<Committed>>,
    pub summary: BatchSummary,
}

/// Longest the rejects table's recorded positions lag behind while batches
/// have no rejects.
const REJECTS_POSITIONS_EVERY: Duration = Duration::from_secs(60);

/// The appenders of the two bronze tables, shared by the commit tasks.
struct BronzeAppenders {
    events: Appender,
    rejects: Appender,
    /// The positions the rejects table last recorded in this run, and when;
    /// `None` before its first commit of the run (which is never skipped).
    rejects_recorded: Option<(Positions, Instant)>,
    /// Positions of batches whose empty rejects commit was skipped.
    rejects_unrecorded: Option<Positions>,
}

/// Starts the commits of each batch, in order.
pub struct BronzeCommits {
    appenders: Arc<Mutex<BronzeAppenders>>,
    fail_at: Option<FailAt>,
    /// Batches whose commits have started.
    started: u64,
}

impl BronzeCommits {
    pub fn new(lake: &Lake, fail_at: Option<FailAt>) -> BronzeCommits {
        let appenders = BronzeAppenders {
            events: lake.appender("bronze", EVENTS_TABLE, sink::EVENT_DATE, &["event_id"], &["event_time", "offset"]),
            rejects: lake.appender("bronze", REJECTS_TABLE, sink::EVENT_DATE, &["payload"], &["offset"]),
            rejects_recorded: None,
            rejects_unrecorded: None,
        };
        BronzeCommits { appenders: Arc::new(Mutex::new(appenders)), fail_at, started: 0 }
    }

    /// Starts committing `rows` on a task, recording `positions` (see
    /// `Committed::advanced_by`) where the tables have recorded `before`
    /// (what the run has taken in; see `lake::Appender` for the check);
    /// `committed` is signalled once both tables are. The task waits for the
    /// commits of the batches before.
    pub fn start(
        &mut self,
        rows: BronzeRows,
        positions: Committed,
        before: Committed,
        committed: oneshot::Sender<()>,
        summary: BatchSummary,
    ) -> InFlight {
        self.started += 1;
        let stop = StopAt::for_commit(self.started, self.fail_at);
        let appenders = self.appenders.clone();
        let task = tokio::spawn(async move {
            let mut appenders = appenders.lock().await;
            if stop.is_some_and(|s| s.point == FailurePoint::InsideEventsCommit) {
                appenders.events.interrupt_next_append();
            }
            let appended = appenders.events.append(sink::events_schema(), rows.events, &positions.events, &before.events).await;
            StopAt::check(stop, FailurePoint::InsideEventsCommit)?;
            appended?;
            StopAt::check(stop, FailurePoint::BetweenCommits)?;
            let recorded = match &appenders.rejects_recorded {
                Some((recorded, at)) if rows.rejects.num_rows() == 0 && at.elapsed() < REJECTS_POSITIONS_EVERY => {
                    Some(recorded.clone())
                }
                _ => None,
            };
            let positions = match recorded {
                Some(recorded) => {
                    appenders.rejects_unrecorded = Some(positions.rejects.clone());
                    Committed { events: positions.events, rejects: recorded }
                }
                None => {
                    appenders
                        .rejects
                        .append(sink::rejects_schema(), vec![rows.rejects], &positions.rejects, &before.rejects)
                        .await?;
                    appenders.rejects_recorded = Some((positions.rejects.clone(), Instant::now()));
                    appenders.rejects_unrecorded = None;
                    positions
                }
            };
            StopAt::check(stop, FailurePoint::AfterCommits)?;
            let _ = committed.send(());
            Ok::<_, Error>(positions)
        });
        InFlight { task, summary }
    }
}

impl BronzeCommits {
    /// Records the positions of skipped empty rejects commits, if any, in
    /// one commit; returns them. Called once the batches in flight are in.
    pub async fn flush(&self) -> Result<Option<Positions>> {
        let mut appenders = self.appenders.lock().await;
        let Some(positions) = appenders.rejects_unrecorded.take() else { return Ok(None) };
        let empty = RecordBatch::new_empty(sink::rejects_schema());
        // The rejects table was read at this run's first batch (never
        // skipped) and is fenced by Delta's conflict check since.
        let recorded = appenders.rejects_recorded.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
        appenders.rejects.append(sink::rejects_schema(), vec![empty], &positions, &recorded).await?;
        appenders.rejects_recorded = Some((positions.clone(), Instant::now()));
        Ok(Some(positions))
    }
}

/// Where one commit stops, and how.
#[derive(Debug, Clone, Copy)]
struct StopAt {
    point: FailurePoint,
    /// Abort the process (`MEDALLION_CRASH_POINT`), or fail the commit
    /// (`StreamOptions::fail_at`).
    abort: bool,
}

impl StopAt {
    /// Where commit number `commit` (from 1) stops, if anywhere.
    fn for_commit(commit: u64, fail_at: Option<FailAt>) -> Option<StopAt> {
        let crash = std::env::var("MEDALLION_CRASH_POINT").ok();
        let points = [FailurePoint::InsideEventsCommit, FailurePoint::BetweenCommits, FailurePoint::AfterCommits];
        match points.into_iter().find(|point| crash.as_deref() == Some(point.name())) {
            Some(point) => Some(StopAt { point, abort: true }),
            None => fail_at.filter(|f| f.commit == commit).map(|f| StopAt { point: f.point, abort: false }),
        }
    }

    /// Stops there if `stop` says this is the point.
    fn check(stop: Option<StopAt>, reached: FailurePoint) -> Result<()> {
        match stop {
            Some(StopAt { point, abort }) if point == reached => {
                if abort {
                    std::process::abort();
                }
                Err(Error::Other {
                    context: "stream commit".into(),
                    reason: format!("stopped at failure point {} (StreamOptions::fail_at)", point.name()),
                })
            }
            _ => Ok(()),
        }
    }
}
