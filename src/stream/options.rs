//! What a stream run is asked to do (`Trigger`, `StreamOptions`) and what
//! it reports (`StreamReport`), plus the failure points tests use to stop a
//! run where a crash could.

use std::collections::BTreeMap;
use std::time::Duration;

/// When micro-batches run.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// Everything up to the end positions seen at start, then stop.
    AvailableNow,
    /// Continuously until stopped; a batch closes one interval after its
    /// first message, or when full.
    Interval(Duration),
}

impl Trigger {
    /// How long a poll waits for a first message, then for more to fill the
    /// batch: a catch-up fills whole batches; a live stream closes one per
    /// interval.
    pub fn poll_timing(&self) -> (Duration, Duration) {
        match self {
            Trigger::AvailableNow => (Duration::from_millis(500), Duration::from_millis(250)),
            Trigger::Interval(interval) => (*interval, *interval),
        }
    }
}

/// Stream settings.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub trigger: Trigger,
    /// Most messages in one micro-batch.
    pub max_batch: usize,
    /// Events older than (max event time − this) are late: kept, flagged,
    /// left out of the minute windows.
    pub allowed_lateness: chrono::Duration,
    /// How many recent event ids duplicates are checked against.
    pub dedupe_horizon: usize,
    /// Test hook: the run fails at this point of one of its commits, leaving
    /// the lake as a crash there would. `None` in production.
    pub fail_at: Option<FailAt>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            trigger: Trigger::AvailableNow,
            max_batch: 50_000,
            allowed_lateness: chrono::Duration::seconds(60),
            dedupe_horizon: 1_000_000,
            fail_at: None,
        }
    }
}

/// Where a micro-batch's commit can be interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePoint {
    /// The events commit has written its data files, not its log entry.
    InsideEventsCommit,
    /// The events are committed, the rejects are not.
    BetweenCommits,
    /// Both tables are committed; the run has not taken the batch in yet.
    AfterCommits,
}

impl FailurePoint {
    /// The name `MEDALLION_CRASH_POINT` gives the point (the kill -9 tests
    /// abort the process there).
    pub fn name(&self) -> &'static str {
        match self {
            FailurePoint::InsideEventsCommit => "inside-events-commit",
            FailurePoint::BetweenCommits => "between-commits",
            FailurePoint::AfterCommits => "after-commit",
        }
    }
}

/// A failure point of one commit: `commit` counts the run's micro-batch
/// commits from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailAt {
    pub point: FailurePoint,
    pub commit: u64,
}

/// What a stream run did.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    pub batches: u64,
    pub events: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub late: u64,
    pub duration: Duration,
    /// The part of `duration` from the first read (source positioned, end
    /// positions known) to the last commit: the sustained rate's window.
    pub consuming: Duration,
    pub lag: BTreeMap<String, i64>,
    /// Event time → visible in `live.sales_by_country`, in seconds.
    pub latency_p50: Option<f64>,
    pub latency_p99: Option<f64>,
    /// The run ended because the consumer group reassigned the partitions
    /// (a shared stream); `stream::run` then starts over.
    pub reassigned: bool,
}

impl StreamReport {
    /// Adds a later part of the same run (after a reassignment).
    pub fn absorb(&mut self, later: StreamReport) {
        self.batches += later.batches;
        self.events += later.events;
        self.rejected += later.rejected;
        self.duplicates += later.duplicates;
        self.late += later.late;
        self.duration += later.duration;
        self.consuming += later.consuming;
        self.lag = later.lag;
        self.latency_p50 = later.latency_p50.or(self.latency_p50);
        self.latency_p99 = match (self.latency_p99, later.latency_p99) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.reassigned = later.reassigned;
    }
}
