//! The micro-batch loop: read a batch, classify its messages, add it to the
//! state, commit it to bronze, show it.
//!
//! `StreamLoop` holds everything the loop carries from one batch to the
//! next (positions, the commit in flight, the gold writes, timers, the
//! report), and each step is one of its methods. The commits of batch n run
//! on a task while batch n+1 is read and classified; batch n is taken in
//! (positions, counters, the live view) just before batch n+1 is added to
//! the state and committed.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::commit::{BatchSummary, BronzeCommits, BronzeRows, InFlight};
use super::decode::{self, Decoded, DecodedBatch, DecodedChunk};
use super::gold::GoldWrites;
use super::message::{Committed, Positions, RawMessage};
use super::options::{StreamOptions, StreamReport, Trigger};
use super::read_ahead::{batch_size, extend_read_to, prepare, Prepared, ReadAhead, ReadPlan};
use super::recovery::{self, MessageId, Recovered};
use super::report::{publish, LoopProgress};
use super::sink::{self, EventColumns};
use super::source::StreamSource;
use super::state::{Outcome, StreamState};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::live::LiveHandle;
use crate::progress::Progress;

/// How many events ahead the loop prefetches the dedupe memory.
const PREFETCH_AHEAD: usize = 8;

/// How long an `--available-now` run waits for messages it knows exist.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// The loop's state from one batch to the next.
pub struct StreamLoop<'a> {
    options: &'a StreamOptions,
    live: &'a LiveHandle,
    source: StreamSource,
    stop: Arc<AtomicBool>,
    /// Country aliases → standard names.
    countries: Arc<BTreeMap<String, String>>,
    /// Totals, windows, watermark and dedupe memory.
    state: StreamState,
    /// What each bronze table has committed (as of the last batch taken in).
    committed: Committed,
    /// Messages of a replayed batch already in bronze events (see `recovery`).
    replay_accepted: HashSet<MessageId>,
    /// Where an `--available-now` run stops: the end positions at start.
    targets: Option<Arc<Positions>>,
    /// How far the source has been read (committed or not).
    read_to: Positions,
    /// The next batches, read and decoded on background tasks (Kafka).
    read_ahead: Option<ReadAhead>,
    commits: BronzeCommits,
    /// The batch whose commits are running.
    in_flight: Option<InFlight>,
    gold: GoldWrites,
    report: StreamReport,
    progress: LoopProgress,
    bar: indicatif::ProgressBar,
    started: Instant,
    /// When the first read could start (source positioned, end positions
    /// known): the sustained rate's window opens here.
    consuming_since: Instant,
    /// Since when polls have come back empty.
    idle_since: Option<Instant>,
    /// The source's assignment epoch at recovery: when it moves (a shared
    /// stream's partitions were reassigned), the loop ends and the run
    /// starts over from the lake.
    epoch: u64,
}

/// How a loop ended: its report, and the source to start over with.
pub struct Ended {
    pub report: Result<StreamReport>,
    pub source: StreamSource,
}

impl<'a> StreamLoop<'a> {
    /// Recovers from bronze (see `recovery`), positions the source, shows
    /// the rebuilt state, and starts reading and the first gold write.
    pub async fn start(
        config: &Config,
        lake: &Lake,
        mut source: StreamSource,
        options: &'a StreamOptions,
        live: &'a LiveHandle,
        progress: &Progress,
        stop: Arc<AtomicBool>,
    ) -> Result<StreamLoop<'a>> {
        let started = Instant::now();
        lake.ensure_buckets().await?;
        let countries = Arc::new(config.countries.lookup());
        let Recovered { committed, state, replay_accepted, start, epoch } = recovery::recover(lake, &mut source, options).await?;
        let targets = match options.trigger {
            Trigger::AvailableNow => Some(Arc::new(source.end_positions().await?)),
            Trigger::Interval(_) => None,
        };
        let consuming_since = Instant::now();
        let bar = progress.spinner(&format!("stream {}", source.describe()));
        let report = StreamReport::default();
        let loop_progress = LoopProgress::default();
        publish(live, &state, &report, &loop_progress.lag, 0.0);
        // The first batch is read while the gold live tables take the
        // rebuilt state.
        let read_ahead = source.background_reader().map(|reader| {
            ReadAhead::start(reader, ReadPlan {
                read_to: start.clone(),
                targets: targets.clone(),
                max_batch: options.max_batch,
                timing: options.trigger.poll_timing(),
                countries: countries.clone(),
                stop: stop.clone(),
            })
        });
        let commits = BronzeCommits::new(lake, options.fail_at);
        let gold = GoldWrites::start(lake, &state, source.shares_topic().then_some(options));
        Ok(StreamLoop {
            options,
            live,
            source,
            stop,
            countries,
            state,
            committed,
            replay_accepted,
            targets,
            read_to: start,
            read_ahead,
            commits,
            in_flight: None,
            gold,
            report,
            progress: loop_progress,
            bar,
            started,
            consuming_since,
            idle_since: None,
            epoch,
        })
    }

    /// Runs until the trigger says stop, `stop` is set or the source's
    /// partitions are reassigned (`StreamReport::reassigned`). On failure,
    /// the writes already started are waited for before the error is
    /// returned.
    pub async fn run(mut self) -> Ended {
        let consumed = match self.consume().await {
            Ok(()) => self.drain().await,
            Err(error) => Err(error),
        };
        let report = match consumed {
            Ok(()) => Ok(self.final_report().await),
            Err(error) => {
                self.settle().await;
                Err(error)
            }
        };
        Ended { report, source: self.source }
    }

    /// Whether the source's partitions were reassigned since recovery.
    fn reassigned(&mut self) -> bool {
        let moved = self.source.assignment_epoch() != self.epoch;
        if moved {
            self.report.reassigned = true;
        }
        moved
    }

    /// The loop itself: one batch per turn.
    async fn consume(&mut self) -> Result<()> {
        while let Some(max_batch) = self.next_batch_size() {
            if self.stop.load(Ordering::SeqCst) || self.reassigned() {
                break;
            }
            let Some(Prepared { reached, batch }) = self.read(max_batch).await? else {
                break; // the reader stopped: all read, or told to stop
            };
            if self.reassigned() {
                break; // the batch may hold partitions not positioned yet: read again after recovery
            }
            extend_read_to(&mut self.read_to, &reached);
            if batch.messages.is_empty() {
                if !self.source_quiet().await? {
                    break;
                }
                continue;
            }
            self.idle_since = None;
            self.process(batch).await?;
        }
        Ok(())
    }

    /// How many messages the next poll asks for; `None` once all is read.
    fn next_batch_size(&self) -> Option<usize> {
        let size = batch_size(self.targets.as_deref(), self.options.max_batch, &self.read_to)?;
        // A file source's positions count files, not messages: what is left
        // to read says nothing about how many messages a poll may take.
        Some(if self.source.positions_count_messages() { size } else { self.options.max_batch })
    }

    /// The next batch, read ahead or polled now; `None` once the reader
    /// has stopped.
    async fn read(&mut self, max_batch: usize) -> Result<Option<Prepared>> {
        match &mut self.read_ahead {
            Some(ahead) => ahead.next().await.transpose(),
            None => {
                let (wait, linger) = self.options.trigger.poll_timing();
                let messages = self.source.poll(max_batch, wait, linger).await?;
                Ok(Some(prepare(messages, self.targets.as_deref(), &self.countries)))
            }
        }
    }

    /// An empty poll: takes in the batch in flight and brings the gold live
    /// tables up to date. False when an `--available-now` run gives up
    /// waiting for the messages it expects.
    async fn source_quiet(&mut self) -> Result<bool> {
        self.take_in_committed().await?;
        self.gold.catch_up(&self.state);
        if self.targets.is_some() {
            let idle = *self.idle_since.get_or_insert_with(Instant::now);
            if idle.elapsed() > IDLE_LIMIT {
                tracing::warn!("no message for 30 s before reaching the end offsets seen at start; stopping");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One batch: classified, the previous batch taken in, added to the
    /// state, its commits started, the gold write queued behind them.
    async fn process(&mut self, batch: DecodedBatch) -> Result<()> {
        let DecodedBatch { messages, chunks, columns } = batch;
        let ingested_at = Utc::now();
        let classified = self.classify(&messages, &chunks, &columns);
        // The previous batch must be committed before this one is.
        self.take_in_committed().await?;
        let rows = self.add_to_state(&classified, columns, ingested_at);
        let (committed_tx, committed_rx) = oneshot::channel::<()>();
        self.gold.after_batch(&self.state, committed_rx).await?;
        let positions = self.committed.advanced_by(&classified.positions());
        let summary = classified.summary(messages.len());
        let before = self.committed.clone();
        self.in_flight = Some(self.commits.start(rows, positions, before, committed_tx, summary));
        // Freeing a batch (one allocation per message) is left to a
        // blocking thread, off the loop's path.
        drop(classified);
        tokio::task::spawn_blocking(move || drop((messages, chunks)));
        Ok(())
    }

    /// Decides each message of a batch, in message order: accepted (late or
    /// not), rejected (invalid, duplicate), or already in bronze (a replayed
    /// batch: only its missing rejects are written).
    fn classify<'b>(&mut self, messages: &'b [RawMessage], chunks: &'b [DecodedChunk], columns: &[EventColumns]) -> Classified<'b> {
        let state = &mut self.state;
        let countries = &*self.countries;
        let watermark = state.watermark();
        let mut accepted: Vec<(&str, &Decoded, bool)> = Vec::new();
        let mut rejected = Vec::new();
        let mut keep: Vec<Vec<bool>> = columns.iter().map(|c| Vec::with_capacity(c.len())).collect();
        let mut late: Vec<Vec<bool>> = columns.iter().map(|c| Vec::with_capacity(c.len())).collect();
        let mut keys: Vec<BatchKey> = Vec::new();
        let mut messages_in_order = messages.iter();
        // The dedupe memory is read a few events ahead (see `dedupe`).
        let mut upcoming = chunks.iter().flat_map(|c| c.results.iter().flatten()).map(|e| e.fingerprint).skip(PREFETCH_AHEAD);
        for ((chunk, keep), late) in chunks.iter().zip(keep.iter_mut()).zip(late.iter_mut()) {
            for result in &chunk.results {
                let message = messages_in_order.next().expect("one decoding result per message");
                let key = BatchKey::of(&mut keys, message, &self.committed);
                // Some(late) when the event is written to bronze.
                let written = if key.in_events(message) {
                    // Replayed after a crash between the two commits: bronze
                    // already decided; only its rejects may be missing.
                    let accepted_before =
                        || self.replay_accepted.contains(&(message.topic.to_string(), message.partition, message.offset));
                    if !key.in_rejects(message) && !accepted_before() {
                        let reason = match result {
                            Ok(_) => decode::duplicate_reason(message, countries),
                            Err(reason) => reason.clone(),
                        };
                        rejected.push((message, reason));
                    }
                    None
                } else {
                    match result {
                        Ok(event) => {
                            if let Some(fingerprint) = upcoming.next() {
                                state.prefetch(fingerprint);
                            }
                            match state.classify(event.fingerprint, event.event_time, watermark) {
                                Outcome::Accepted { late } => {
                                    accepted.push((chunk.country(event), event, late));
                                    Some(late)
                                }
                                Outcome::Duplicate => {
                                    self.report.duplicates += 1;
                                    rejected.push((message, decode::duplicate_reason(message, countries)));
                                    None
                                }
                            }
                        }
                        Err(reason) => {
                            rejected.push((message, reason.clone()));
                            None
                        }
                    }
                };
                if result.is_ok() {
                    keep.push(written.is_some());
                    late.push(written.unwrap_or(false));
                }
            }
        }
        Classified { accepted, rejected, keep, late, keys }
    }

    /// Adds the accepted events to the state while the bronze rows are
    /// built on another thread.
    fn add_to_state(&mut self, classified: &Classified<'_>, columns: Vec<EventColumns>, ingested_at: DateTime<Utc>) -> BronzeRows {
        std::thread::scope(|scope| {
            let building = scope.spawn(|| {
                let events: Vec<_> = columns
                    .into_iter()
                    .zip(classified.keep.iter().zip(&classified.late))
                    .map(|(columns, (keep, late))| columns.finish(ingested_at, keep, late))
                    .filter(|batch| batch.num_rows() > 0)
                    .collect();
                BronzeRows { events, rejects: sink::rejects_batch(&classified.rejected, ingested_at) }
            });
            let accepted = classified.accepted.iter();
            self.state.apply_batch(accepted.map(|(country, event, late)| (*country, event.event_time, event.montant, *late)));
            building.join().expect("batch builder thread")
        })
    }

    /// Waits for the commits of the batch in flight, if any, then makes it
    /// visible: positions, counters, the live view, the progress bar.
    async fn take_in_committed(&mut self) -> Result<()> {
        let Some(InFlight { task, summary }) = self.in_flight.take() else { return Ok(()) };
        let recorded = task.await.map_err(|e| Error::other("stream commit", e))??;
        self.committed.extend(recorded);
        self.report.batches += 1;
        self.report.events += summary.events;
        self.report.rejected += summary.rejected;
        self.report.late += summary.late;
        let rate = self.progress.batch_committed(summary.messages, &self.committed.events, &self.source).await;
        publish(self.live, &self.state, &self.report, &self.progress.lag, rate);
        self.progress.made_visible(&summary.event_times);
        self.bar.set_position(self.report.events + self.report.rejected);
        self.bar.set_message(format!(
            "{:.0} events/s · {} batches · {} rejected · lag {}",
            rate,
            self.report.batches,
            self.report.rejected,
            self.progress.lag.values().sum::<i64>()
        ));
        Ok(())
    }

    /// The loop is done: nothing more is read; the last batch is taken in
    /// and the gold live tables written a last time.
    async fn drain(&mut self) -> Result<()> {
        self.read_ahead = None;
        self.take_in_committed().await?;
        if let Some(rejects) = self.commits.flush().await? {
            self.committed.rejects = rejects;
        }
        self.gold.finish(&self.state).await
    }

    /// The run failed: nothing more is read, and the commits and gold
    /// writes under way are waited for (whatever their outcome), so that
    /// nothing of this run writes after it returns.
    async fn settle(&mut self) {
        self.read_ahead = None;
        if let Some(in_flight) = self.in_flight.take() {
            let _ = in_flight.task.await;
        }
        self.gold.settle().await;
    }

    /// Durations, lag and latencies of a finished run.
    async fn final_report(&mut self) -> StreamReport {
        self.report.consuming = self.consuming_since.elapsed();
        self.bar.finish_and_clear();
        let targets = self.targets.take().map(Arc::unwrap_or_clone);
        self.report.lag = self.progress.final_lag(targets, &self.committed.events, &self.source).await;
        self.report.duration = self.started.elapsed();
        (self.report.latency_p50, self.report.latency_p99) = self.progress.latency_quantiles();
        std::mem::take(&mut self.report)
    }
}

/// A batch's messages, decided.
struct Classified<'b> {
    /// Accepted events: (country, event, late).
    accepted: Vec<(&'b str, &'b Decoded, bool)>,
    /// Rejected messages, with their reason.
    rejected: Vec<(&'b RawMessage, String)>,
    /// Per chunk of the batch's `columns`: whether each of its rows (the
    /// valid events, in order) is written, and whether it is late.
    keep: Vec<Vec<bool>>,
    late: Vec<Vec<bool>>,
    /// The position keys the batch covers.
    keys: Vec<BatchKey>,
}

impl Classified<'_> {
    /// How far the batch goes, per key.
    fn positions(&self) -> Positions {
        self.keys.iter().map(|k| (k.key.to_string(), k.next)).collect()
    }

    fn summary(&self, messages: usize) -> BatchSummary {
        BatchSummary {
            messages: messages as u64,
            events: self.accepted.len() as u64,
            rejected: self.rejected.len() as u64,
            late: self.accepted.iter().filter(|(_, _, late)| *late).count() as u64,
            event_times: self.accepted.iter().map(|(_, event, _)| event.event_time).collect(),
        }
    }
}

/// One position key within a batch being classified (a batch has a
/// handful): what each table has committed, and how far the batch goes.
struct BatchKey {
    key: Arc<str>,
    events_at: Option<i64>,
    rejects_at: Option<i64>,
    /// The furthest next position of the key in the batch.
    next: i64,
}

impl BatchKey {
    /// The entry of `message`'s key, created on its first message and
    /// moved to its position. Looked up by the key's shared allocation
    /// first, so a message costs no string compare.
    fn of<'k>(keys: &'k mut Vec<BatchKey>, message: &RawMessage, committed: &Committed) -> &'k mut BatchKey {
        let slot = match keys.iter().position(|k| Arc::ptr_eq(&k.key, &message.key) || k.key == message.key) {
            Some(slot) => slot,
            None => {
                keys.push(BatchKey {
                    key: message.key.clone(),
                    events_at: committed.events.get(message.key.as_ref()).copied(),
                    rejects_at: committed.rejects.get(message.key.as_ref()).copied(),
                    next: message.next_position,
                });
                keys.len() - 1
            }
        };
        let key = &mut keys[slot];
        key.next = key.next.max(message.next_position);
        key
    }

    /// Whether bronze events already hold what `message` brings.
    fn in_events(&self, message: &RawMessage) -> bool {
        self.events_at.is_some_and(|p| p >= message.next_position)
    }

    /// Whether the rejects table is already past `message`.
    fn in_rejects(&self, message: &RawMessage) -> bool {
        self.rejects_at.is_some_and(|p| p >= message.next_position)
    }
}
