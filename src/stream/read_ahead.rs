//! Reading the source a batch ahead of the loop.
//!
//! A polled batch is cut to the run's end positions and decoded (on every
//! core) into a `Prepared` batch. For a source that can be polled from
//! another task (Kafka), `ReadAhead` does this on a background task, so
//! that batch n+1 is read and decoded while the loop classifies and commits
//! batch n; other sources are polled by the loop itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::decode::{self, DecodedBatch};
use super::message::{Positions, RawMessage};
use super::source::BackgroundReader;
use crate::error::{Error, Result};

/// A polled batch, ready for the loop: how far it read each position key,
/// and its messages (those the run is to consume) decoded.
pub struct Prepared {
    pub reached: Vec<(Arc<str>, i64)>,
    pub batch: DecodedBatch,
}

/// Moves `read_to` forward to what a batch `reached`.
pub fn extend_read_to(read_to: &mut Positions, reached: &[(Arc<str>, i64)]) {
    for (key, next) in reached {
        let read = read_to.entry(key.to_string()).or_insert(0);
        *read = (*read).max(*next);
    }
}

/// Keeps the messages within `targets` (when the run stops at them) and
/// decodes them.
pub fn prepare(mut messages: Vec<RawMessage>, targets: Option<&Positions>, countries: &BTreeMap<String, String>) -> Prepared {
    let mut reached: Vec<(Arc<str>, i64)> = Vec::new();
    for message in &messages {
        match reached.iter_mut().find(|(key, _)| Arc::ptr_eq(key, &message.key) || *key == message.key) {
            Some((_, next)) => *next = (*next).max(message.next_position),
            None => reached.push((message.key.clone(), message.next_position)),
        }
    }
    if let Some(targets) = targets {
        // Only what existed at start (each key's end looked up once).
        let ends: Vec<(&Arc<str>, Option<i64>)> = reached.iter().map(|(key, _)| (key, targets.get(key.as_ref()).copied())).collect();
        messages.retain(|m| {
            let end = ends.iter().find(|(key, _)| Arc::ptr_eq(key, &m.key) || **key == m.key).and_then(|(_, end)| *end);
            end.is_some_and(|end| m.next_position <= end)
        });
    }
    Prepared { reached, batch: decode::decode(messages, countries) }
}

/// How many messages the next poll asks for: `max_batch`, or no more than
/// is left before `targets`; `None` once they are all read.
pub fn batch_size(targets: Option<&Positions>, max_batch: usize, read_to: &Positions) -> Option<usize> {
    match targets {
        Some(targets) => {
            let remaining: i64 =
                targets.iter().map(|(key, end)| (end - read_to.get(key).copied().unwrap_or(0)).max(0)).sum();
            // No more than is left, so the last poll need not linger.
            (remaining > 0).then(|| max_batch.min(usize::try_from(remaining).unwrap_or(usize::MAX)))
        }
        None => Some(max_batch),
    }
}

/// What the background reader reads, and how.
pub struct ReadPlan {
    /// Where the source is positioned.
    pub read_to: Positions,
    pub targets: Option<Arc<Positions>>,
    pub max_batch: usize,
    /// How long a poll waits for a first message, then lingers for more.
    pub timing: (Duration, Duration),
    pub countries: Arc<BTreeMap<String, String>>,
    pub stop: Arc<AtomicBool>,
}

/// Batches read and decoded ahead of the loop, on a background task: while
/// the loop handles batch n, batch n+1 is polled and decoded. The task
/// waits for the loop to take a batch before it reads the next one, so one
/// batch at most waits ahead.
///
/// (Polling n+2 while decoding n+1, in a second stage, was measured: no
/// faster on two cores, and more memory.)
pub struct ReadAhead {
    batches: tokio::sync::mpsc::Receiver<Result<Prepared>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    pub fn start(reader: BackgroundReader, plan: ReadPlan) -> ReadAhead {
        let ReadPlan { mut read_to, targets, max_batch, timing: (wait, linger), countries, stop } = plan;
        let (prepared_tx, prepared_rx) = tokio::sync::mpsc::channel::<Result<Prepared>>(1);
        let task = tokio::spawn(async move {
            // The first batch is a quarter of the others, so that the loop
            // and the commits start working sooner on a catch-up.
            let mut first = true;
            while let Some(size) = batch_size(targets.as_deref(), max_batch, &read_to) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let size = if first { size.div_ceil(4) } else { size };
                first = false;
                let Ok(room) = prepared_tx.reserve().await else { break };
                let prepared = match reader.poll(size, wait, linger).await {
                    Ok(messages) => {
                        let (targets, countries) = (targets.clone(), countries.clone());
                        tokio::task::spawn_blocking(move || prepare(messages, targets.as_deref(), &countries))
                            .await
                            .map_err(|e| Error::other("stream decoding", e))
                    }
                    Err(error) => Err(error),
                };
                let failed = prepared.is_err();
                if let Ok(prepared) = &prepared {
                    extend_read_to(&mut read_to, &prepared.reached);
                }
                room.send(prepared);
                if failed {
                    break;
                }
            }
        });
        ReadAhead { batches: prepared_rx, task }
    }

    /// The next batch; `None` once the reader has stopped (all read, or told
    /// to stop).
    pub async fn next(&mut self) -> Option<Result<Prepared>> {
        self.batches.recv().await
    }
}

impl Drop for ReadAhead {
    /// The loop is done: nothing more is read (what was read and not
    /// committed is read again by the next run).
    fn drop(&mut self) {
        self.task.abort();
    }
}
