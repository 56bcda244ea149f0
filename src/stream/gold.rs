//! The gold live tables of the stream: `gold.live_sales_by_country` (the
//! complete-mode aggregate) and `gold.sales_by_country_minute` (the minute
//! windows), rewritten whole from the stream state.
//!
//! They are derived (rebuilt from bronze on start), so they follow bronze
//! at most once per second, when the source goes quiet, and at the end.
//! When several streams share the topic (`--group`, `--partitions`), each holds only its
//! own partitions' events: the tables are then computed from bronze itself
//! at each write, and a write that races another stream's is done again.
//! Each write runs on its own task, after the previous one and after the
//! bronze commit it follows: the next batch never waits for them, and gold
//! never shows what bronze has not committed.

use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::options::StreamOptions;
use super::recovery;
use super::sink;
use super::state::StreamState;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::live::{sales_by_country_batch, sales_by_country_schema};

/// How often at most the gold live tables are rewritten while streaming.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// How many times a write computed from bronze is tried when other
/// streams' writes of the same tables keep winning the commit.
const SHARED_WRITE_ATTEMPTS: u32 = 5;

/// The chain of gold writes, and when the last was queued.
pub struct GoldWrites {
    lake: Lake,
    /// Set when the tables are computed from bronze (a shared topic): the
    /// allowed lateness of the windows.
    from_bronze: Option<chrono::Duration>,
    /// The last write queued (it waits for the ones before it).
    latest: Option<JoinHandle<Result<()>>>,
    last_queued: Instant,
    /// Whether the state has changed since the last write was queued.
    behind: bool,
}

impl GoldWrites {
    /// Starts with a write of `state` (as rebuilt from bronze). `shared`:
    /// the topic is shared with other streams (see the module doc).
    pub fn start(lake: &Lake, state: &StreamState, shared: Option<&StreamOptions>) -> GoldWrites {
        let from_bronze = shared.map(|options| options.allowed_lateness);
        let mut gold = GoldWrites { lake: lake.clone(), from_bronze, latest: None, last_queued: Instant::now(), behind: false };
        gold.queue(LiveTables::of(state), None);
        gold
    }

    /// After a batch is added to `state` and its commit started: fails with
    /// the error of a write that has finished, if any; then queues a write
    /// of `state`, to run once the commit signals `committed`, unless one
    /// was queued less than `PERSIST_EVERY` ago.
    pub async fn after_batch(&mut self, state: &StreamState, committed: oneshot::Receiver<()>) -> Result<()> {
        self.check().await?;
        self.behind = self.last_queued.elapsed() < PERSIST_EVERY;
        if !self.behind {
            self.last_queued = Instant::now();
            self.queue(LiveTables::of(state), Some(committed));
        }
        Ok(())
    }

    /// The source is quiet and every batch committed: brings the tables up
    /// to date now rather than at the next batch, which may be a long time
    /// coming.
    pub fn catch_up(&mut self, state: &StreamState) {
        if self.behind && self.last_queued.elapsed() >= PERSIST_EVERY {
            self.queue(LiveTables::of(state), None);
            self.last_queued = Instant::now();
            self.behind = false;
        }
    }

    /// At the end of a run (every batch committed): a last write if the
    /// tables are behind, then waits for every write.
    pub async fn finish(&mut self, state: &StreamState) -> Result<()> {
        if self.behind {
            self.queue(LiveTables::of(state), None);
        }
        self.flush().await
    }

    /// When a run fails: waits for the writes already queued, whatever
    /// their outcome, so that nothing of the run keeps writing after it.
    pub async fn settle(&mut self) {
        let _ = self.flush().await;
    }

    fn queue(&mut self, tables: LiveTables, after: Option<oneshot::Receiver<()>>) {
        let previous = self.latest.take();
        let lake = self.lake.clone();
        let from_bronze = self.from_bronze;
        self.latest = Some(tokio::spawn(async move {
            if let Some(previous) = previous {
                previous.await.map_err(|e| Error::other("gold live tables", e))??;
            }
            if let Some(after) = after {
                if after.await.is_err() {
                    return Ok(()); // the bronze commit failed, and says so itself
                }
            }
            match from_bronze {
                None => tables.write(&lake).await,
                Some(allowed_lateness) => write_from_bronze(&lake, allowed_lateness).await,
            }
        }));
    }

    /// The error of a finished write, if any.
    async fn check(&mut self) -> Result<()> {
        if self.latest.as_ref().is_some_and(|w| w.is_finished()) {
            return self.flush().await;
        }
        Ok(())
    }

    /// Waits for every queued write.
    async fn flush(&mut self) -> Result<()> {
        match self.latest.take() {
            Some(write) => write.await.map_err(|e| Error::other("gold live tables", e))?,
            None => Ok(()),
        }
    }
}

/// Computes both tables from bronze and writes them, again when another
/// stream's write of them committed first.
async fn write_from_bronze(lake: &Lake, allowed_lateness: chrono::Duration) -> Result<()> {
    let mut attempt = 1;
    loop {
        let state = recovery::rebuild_totals(lake, allowed_lateness).await?;
        match LiveTables::of(&state).write(lake).await {
            Err(err) if err.is_commit_conflict() && attempt < SHARED_WRITE_ATTEMPTS => attempt += 1,
            written => return written,
        }
    }
}

/// A snapshot of the live aggregate and the minute windows, to be written to
/// `gold.live_sales_by_country` and `gold.sales_by_country_minute`.
pub struct LiveTables {
    by_country: RecordBatch,
    by_minute: RecordBatch,
}

impl LiveTables {
    pub fn of(state: &StreamState) -> LiveTables {
        let countries: Vec<_> = state.countries.values().cloned().collect();
        LiveTables { by_country: sales_by_country_batch(&countries), by_minute: sink::windows_batch(state) }
    }

    /// Both tables at once (independent commits).
    async fn write(self, lake: &Lake) -> Result<()> {
        tokio::try_join!(
            lake.overwrite("gold", "live_sales_by_country", sales_by_country_schema(), vec![self.by_country]),
            lake.overwrite("gold", "sales_by_country_minute", sink::windows_schema(), vec![self.by_minute]),
        )?;
        Ok(())
    }
}
