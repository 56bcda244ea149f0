//! Where the stream reads from: a Kafka topic, or a folder of JSON-lines
//! files (the embedded mode `--source file:///dir`, each file read once).
//!
//! Every message carries a *position key* (a Kafka partition, or the folder)
//! and the position just after it. The sink commits, with each Delta write,
//! the next position of every key it covers; a restart seeks to those
//! positions, so nothing is lost and nothing is counted twice.

use std::time::Duration;

use super::files::FileSource;
use super::kafka::{KafkaSource, Membership};
use crate::error::Result;
pub use super::message::{Positions, RawMessage};

/// A stream source.
pub enum StreamSource {
    Kafka(KafkaSource),
    Files(FileSource),
}

impl StreamSource {
    /// Whether a position is a message count (Kafka offsets) rather than a
    /// count of whole files.
    pub fn positions_count_messages(&self) -> bool {
        matches!(self, StreamSource::Kafka(_))
    }

    /// Joins the consumer group of a shared Kafka stream and waits for its
    /// first assignment; nothing for the others.
    pub async fn join(&self) -> Result<()> {
        match self {
            StreamSource::Kafka(kafka) => kafka.join().await,
            StreamSource::Files(_) => Ok(()),
        }
    }

    /// Whether other streams may write this topic's events to bronze too
    /// (this one reads a part of it: `--partitions` or `--group`).
    pub fn shares_topic(&self) -> bool {
        match self {
            StreamSource::Kafka(kafka) => kafka.membership() != &Membership::AllPartitions,
            StreamSource::Files(_) => false,
        }
    }

    /// Whether a consumer group may move this stream's partitions to
    /// another stream (`--group`).
    pub fn partitions_can_move(&self) -> bool {
        match self {
            StreamSource::Kafka(kafka) => kafka.membership() == &Membership::Shared,
            StreamSource::Files(_) => false,
        }
    }

    /// Every position key this stream reads (its partitions, or the folder).
    pub async fn keys(&self) -> Result<Vec<String>> {
        match self {
            StreamSource::Kafka(kafka) => kafka.keys().await,
            StreamSource::Files(files) => Ok(vec![files.key()]),
        }
    }

    /// Starts reading at `positions` (keys absent: from the beginning).
    pub async fn seek(&mut self, positions: &Positions) -> Result<()> {
        match self {
            StreamSource::Kafka(kafka) => kafka.seek(positions).await,
            StreamSource::Files(files) => files.seek(positions),
        }
    }

    /// The end positions now (for `--available-now` and lag).
    pub async fn end_positions(&self) -> Result<Positions> {
        match self {
            StreamSource::Kafka(kafka) => kafka.end_positions().await,
            StreamSource::Files(files) => files.end_positions(),
        }
    }

    /// The end positions, fetched on a background task.
    pub fn end_positions_in_background(&self) -> tokio::task::JoinHandle<Result<Positions>> {
        match self {
            StreamSource::Kafka(kafka) => {
                let kafka = kafka.clone();
                tokio::spawn(async move { kafka.end_positions().await })
            }
            StreamSource::Files(files) => {
                let ends = files.end_positions();
                tokio::spawn(async move { ends })
            }
        }
    }

    /// A handle that polls on background tasks, for sources that can read
    /// ahead while earlier batches are processed (Kafka); `None` for the
    /// others, which are polled through `poll`.
    pub fn background_reader(&self) -> Option<BackgroundReader> {
        match self {
            StreamSource::Kafka(kafka) => Some(BackgroundReader::Kafka(kafka.clone())),
            StreamSource::Files(_) => None,
        }
    }

    /// Up to `max` messages, waiting at most `wait` for the first one and
    /// then at most `linger` for more.
    pub async fn poll(&mut self, max: usize, wait: Duration, linger: Duration) -> Result<Vec<RawMessage>> {
        match self {
            StreamSource::Kafka(kafka) => kafka.poll(max, wait, linger).await,
            StreamSource::Files(files) => {
                let _ = (wait, linger); // files are read whole: nothing to wait for
                files.poll(max)
            }
        }
    }

    /// SQL predicate over bronze event columns (`topic`, `partition`,
    /// `offset`) selecting the messages of `key` between positions `from`
    /// (included) and `to` (excluded).
    pub fn region_predicate(&self, key: &str, from: i64, to: i64) -> Result<String> {
        match self {
            StreamSource::Kafka(kafka) => Ok(kafka.region_predicate(key, from, to)),
            StreamSource::Files(files) => files.region_predicate(from, to),
        }
    }

    /// Changes whenever the partitions this stream reads are reassigned (a
    /// shared Kafka stream's group moved them); constant otherwise.
    pub fn assignment_epoch(&self) -> u64 {
        match self {
            StreamSource::Kafka(kafka) => kafka.assignment_epoch(),
            StreamSource::Files(_) => 0,
        }
    }

    /// A printable name.
    pub fn describe(&self) -> String {
        match self {
            StreamSource::Kafka(kafka) => kafka.describe(),
            StreamSource::Files(files) => files.key(),
        }
    }
}

/// A source handle that can be moved to a background task and polled there.
pub enum BackgroundReader {
    Kafka(KafkaSource),
}

impl BackgroundReader {
    /// As `StreamSource::poll`.
    pub async fn poll(&self, max: usize, wait: Duration, linger: Duration) -> Result<Vec<RawMessage>> {
        match self {
            BackgroundReader::Kafka(kafka) => kafka.poll(max, wait, linger).await,
        }
    }
}
