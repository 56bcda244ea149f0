//! The streaming path: sales events → `bronze.sales_events` (+ rejects) →
//! live sales by country, exactly once.
//!
//! Each micro-batch is decoded and validated, then written in two Delta
//! commits: first the events (`bronze.sales_events`), then the rejects
//! (`bronze.sales_events_rejected`), each commit carrying the source positions
//! it covers as Delta application transactions. On start the stream reads
//! those positions back, seeks the source there, and skips for each table
//! what that table already holds, so a crash at any point (between batches,
//! between the two commits, in the middle of one) loses nothing and writes
//! nothing twice. The live aggregate, the event-time windows and the dedupe
//! memory are rebuilt from bronze, then kept in memory (`live.sales_by_country`)
//! and persisted behind the bronze commits, at most once per second and at
//! the end (`gold.live_sales_by_country`, `gold.sales_by_country_minute`).
//!
//! The parts, in the order a message meets them: `source` (with `kafka`,
//! `files`) reads it as a `message::RawMessage`; `read_ahead` polls and
//! `decode`s batches (`event`, `flat_json`) ahead of the loop;
//! `stream_loop` classifies each message against the `state` (`dedupe`,
//! lateness), then `commit`s the batch to bronze (`sink` shapes the rows)
//! and has `gold` rewrite the live tables; `recovery` is where a run
//! starts; `report` counts.

mod commit;
pub mod decode;
pub mod dedupe;
pub mod event;
pub mod files;
pub mod flat_json;
mod gold;
pub mod kafka;
pub mod message;
mod options;
mod read_ahead;
mod recovery;
mod report;
pub mod sink;
pub mod source;
pub mod state;
mod stream_loop;
#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::live::LiveHandle;
use crate::progress::Progress;
pub use options::{FailAt, FailurePoint, StreamOptions, StreamReport, Trigger};
use source::StreamSource;
use stream_loop::StreamLoop;

/// Runs the stream until the trigger says stop or `stop` is set.
pub async fn run(
    config: &Config,
    lake: &Lake,
    source: StreamSource,
    options: &StreamOptions,
    live: &LiveHandle,
    progress: &Progress,
    stop: Arc<AtomicBool>,
) -> Result<StreamReport> {
    let mut source = source;
    let mut report: Option<StreamReport> = None;
    loop {
        let ended = StreamLoop::start(config, lake, source, options, live, progress, stop.clone()).await?.run().await;
        source = ended.source;
        let part = match ended.report {
            Ok(part) => part,
            // Another stream of the group committed one of our partitions
            // first: it is theirs now; start over from the lake.
            Err(Error::PositionsTaken { .. }) if source.partitions_can_move() => {
                StreamReport { reassigned: true, ..StreamReport::default() }
            }
            Err(error) => return Err(error),
        };
        let again = part.reassigned && !stop.load(std::sync::atomic::Ordering::SeqCst);
        match &mut report {
            Some(report) => report.absorb(part),
            None => report = Some(part),
        }
        if !again {
            return Ok(report.unwrap_or_default());
        }
        tracing::info!("stream: partitions reassigned by the consumer group; starting over from the lake's positions");
    }
}
