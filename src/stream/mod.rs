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

pub mod decode;
pub mod dedupe;
pub mod event;
pub mod files;
pub mod flat_json;
pub mod kafka;
pub mod sink;
pub mod source;
pub mod state;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use datafusion::arrow::array::{Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::{catalog, Lake};
use crate::live::{sales_by_country_batch, sales_by_country_schema, LiveHandle, LiveSnapshot};
use crate::progress::Progress;
use source::{Positions, StreamSource};
use state::{Outcome, StreamState};

const EVENTS: &str = "sales_events";
const REJECTS: &str = "sales_events_rejected";

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
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            trigger: Trigger::AvailableNow,
            max_batch: 50_000,
            allowed_lateness: chrono::Duration::seconds(60),
            dedupe_horizon: 1_000_000,
        }
    }
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
}

/// Runs the stream until the trigger says stop or `stop` is set.
pub async fn run(
    config: &Config,
    lake: &Lake,
    mut source: StreamSource,
    options: &StreamOptions,
    live: &LiveHandle,
    progress: &Progress,
    stop: Arc<AtomicBool>,
) -> Result<StreamReport> {
    let started = Instant::now();
    lake.ensure_buckets().await?;
    let countries = Arc::new(config.countries.lookup());
    let keys = source.keys().await?;
    let mut events_at = lake.committed_positions("bronze", EVENTS, &keys).await?;
    let mut rejects_at = lake.committed_positions("bronze", REJECTS, &keys).await?;
    let mut state = rebuild_state(lake, options).await?;
    // Events are committed before rejects: after a crash between the two, the
    // last batch is read again, and its messages absent from bronze events
    // are the rejects still to write.
    let replay_regions: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            let events = *events_at.get(k)?;
            let rejects = rejects_at.get(k).copied().unwrap_or(0);
            (rejects < events).then(|| source.region_predicate(k, rejects, events))
        })
        .collect::<Result<_>>()?;
    let replay_accepted = committed_messages(lake, &replay_regions).await?;
    let start: Positions = keys
        .iter()
        .filter_map(|k| match (events_at.get(k), rejects_at.get(k)) {
            (Some(e), Some(r)) => Some((k.clone(), *e.min(r))),
            _ => None,
        })
        .collect();
    source.seek(&start).await?;
    let targets = match options.trigger {
        Trigger::AvailableNow => Some(Arc::new(source.end_positions().await?)),
        Trigger::Interval(_) => None,
    };
    // Consumption starts here (source positioned, end positions known).
    let consuming_since = Instant::now();

    let bar = progress.spinner(&format!("stream {}", source.describe()));
    let mut progress = LoopProgress::default();
    let mut report = StreamReport::default();
    let mut idle_since: Option<Instant> = None;
    publish(live, &state, &report, &progress.lag, 0.0);
    // The commit of batch n runs while batch n+1 is polled and decoded.
    let mut in_flight: Option<InFlight> = None;

    // How far the source has been read (committed or not).
    let mut read_to = start.clone();
    let (wait, linger) = options.trigger.poll_timing();
    // How many messages the next poll asks for; None once all is read.
    let next_batch_size = |read_to: &Positions| batch_size(targets.as_deref(), options.max_batch, read_to);
    // The next batches, read and decoded on background tasks while this one
    // is classified and committed. The first is read while the gold live
    // tables take the rebuilt state.
    let mut read_ahead = source.background_reader().map(|reader| {
        ReadAhead::start(reader, ReadPlan {
            read_to: read_to.clone(),
            targets: targets.clone(),
            max_batch: options.max_batch,
            timing: (wait, linger),
            countries: countries.clone(),
            stop: stop.clone(),
        })
    });
    // Commits run one after the other; the appenders keep each table's
    // Delta state between them.
    let appenders = Arc::new(tokio::sync::Mutex::new(BronzeAppenders {
        events: lake.appender("bronze", EVENTS, sink::EVENT_DATE, &["event_id"], &["event_time", "offset"]),
        rejects: lake.appender("bronze", REJECTS, sink::EVENT_DATE, &["payload"], &["offset"]),
    }));
    let mut gold = GoldWrites::default();
    gold.queue(lake, LiveTables::of(&state), None);
    let mut last_persist = Instant::now();
    let mut live_dirty = false;
    while let Some(max_batch) = next_batch_size(&read_to) {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Prepared { reached, batch } = match &mut read_ahead {
            Some(ahead) => match ahead.batches.recv().await {
                Some(prepared) => prepared?,
                None => break, // the reader stopped: all read, or told to stop
            },
            None => {
                let messages = source.poll(max_batch, wait, linger).await?;
                prepare(messages, targets.as_deref(), &countries)
            }
        };
        extend_read_to(&mut read_to, &reached);
        let decode::DecodedBatch { messages, chunks, columns } = batch;
        if messages.is_empty() {
            if let Some(batch) = in_flight.take() {
                let context = FinishContext { live, state: &state, source: &source, bar: &bar };
                finish(batch, context, &mut events_at, &mut rejects_at, &mut report, &mut progress).await?;
            }
            // Quiet source: bring the gold live tables up to date now rather
            // than at the next batch, which may be a long time coming.
            if live_dirty && last_persist.elapsed() >= PERSIST_EVERY {
                gold.queue(lake, LiveTables::of(&state), None);
                last_persist = Instant::now();
                live_dirty = false;
            }
            if targets.is_some() {
                let idle = *idle_since.get_or_insert_with(Instant::now);
                if idle.elapsed() > Duration::from_secs(30) {
                    tracing::warn!("no message for 30 s before reaching the end offsets seen at start; stopping");
                    break;
                }
            }
            continue;
        }
        idle_since = None;

        // Validate (decoding did), dedupe, flag late, in message order.
        let watermark = state.watermark();
        let ingested_at = Utc::now();
        // Accepted events: (country, event, late).
        let mut accepted: Vec<(&str, &decode::Decoded, bool)> = Vec::new();
        let mut rejected = Vec::new();
        // Per chunk of `columns`: whether each of its rows (the valid
        // events, in order) is written, and whether it is late.
        let mut keep: Vec<Vec<bool>> = columns.iter().map(|c| Vec::with_capacity(c.len())).collect();
        let mut late: Vec<Vec<bool>> = columns.iter().map(|c| Vec::with_capacity(c.len())).collect();
        // Per position key of the batch (a handful): what each table has
        // committed, and how far the batch goes. Looked up by the key's
        // shared allocation first, so a message costs no string compare.
        let mut keys: Vec<BatchKey> = Vec::new();
        let mut messages_in_order = messages.iter();
        // The dedupe memory is read a few events ahead (see `dedupe`).
        let mut upcoming = chunks.iter().flat_map(|c| c.results.iter().flatten()).map(|e| e.fingerprint).skip(PREFETCH_AHEAD);
        for ((chunk, keep), late) in chunks.iter().zip(keep.iter_mut()).zip(late.iter_mut()) {
            for result in &chunk.results {
                let message = messages_in_order.next().expect("one decoding result per message");
                let slot = match keys.iter().position(|k| Arc::ptr_eq(&k.key, &message.key) || k.key == message.key) {
                    Some(slot) => slot,
                    None => {
                        keys.push(BatchKey {
                            key: message.key.clone(),
                            events_at: events_at.get(message.key.as_ref()).copied(),
                            rejects_at: rejects_at.get(message.key.as_ref()).copied(),
                            next: message.next_position,
                        });
                        keys.len() - 1
                    }
                };
                let key = &mut keys[slot];
                key.next = key.next.max(message.next_position);
                let in_events = key.events_at.is_some_and(|p| p >= message.next_position);
                let in_rejects = key.rejects_at.is_some_and(|p| p >= message.next_position);
                // Some(late) when the event is written to bronze.
                let written = if in_events {
                    // Replayed after a crash between the two commits: bronze
                    // already decided; only its rejects may be missing.
                    if !in_rejects && !replay_accepted.contains(&(message.topic.to_string(), message.partition, message.offset)) {
                        let reason = match result {
                            Ok(_) => decode::duplicate_reason(message, &countries),
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
                                    report.duplicates += 1;
                                    rejected.push((message, decode::duplicate_reason(message, &countries)));
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

        // The previous batch must be committed before this one is.
        if let Some(batch) = in_flight.take() {
            let context = FinishContext { live, state: &state, source: &source, bar: &bar };
            finish(batch, context, &mut events_at, &mut rejects_at, &mut report, &mut progress).await?;
        }
        // Build the Arrow batches on another thread while the state takes in
        // the events.
        let (events_batches, rejects_batch) = std::thread::scope(|scope| {
            let building = scope.spawn(|| {
                let events: Vec<_> = columns
                    .into_iter()
                    .zip(keep.iter().zip(&late))
                    .map(|(columns, (keep, late))| columns.finish(ingested_at, keep, late))
                    .filter(|batch| batch.num_rows() > 0)
                    .collect();
                (events, sink::rejects_batch(&rejected, ingested_at))
            });
            state.apply_batch(accepted.iter().map(|(country, event, late)| (*country, event.event_time, event.montant, *late)));
            building.join().expect("batch builder thread")
        });
        // The gold live tables follow bronze at most once per second (and
        // once more at the end); they are derived, rebuilt on restart.
        gold.check().await?;
        let (bronze_committed, after_bronze) = tokio::sync::oneshot::channel::<()>();
        live_dirty = last_persist.elapsed() < PERSIST_EVERY;
        if !live_dirty {
            last_persist = Instant::now();
            gold.queue(lake, LiveTables::of(&state), Some(after_bronze));
        }
        let positions: Positions = keys.iter().map(|k| (k.key.to_string(), k.next)).collect();
        // Commit: events, then rejects, each with the positions it reached.
        let events_positions = advanced(&positions, &events_at);
        let rejects_positions = advanced(&positions, &rejects_at);
        let appenders = appenders.clone();
        let task = tokio::spawn(async move {
            let mut appenders = appenders.lock().await;
            appenders.events.append(sink::events_schema(), events_batches, &events_positions).await?;
            crash_point("between-commits");
            appenders.rejects.append(sink::rejects_schema(), vec![rejects_batch], &rejects_positions).await?;
            crash_point("after-commit");
            let _ = bronze_committed.send(());
            Ok::<_, Error>((events_positions, rejects_positions))
        });
        in_flight = Some(InFlight {
            task,
            messages: messages.len() as u64,
            events: accepted.len() as u64,
            rejected: rejected.len() as u64,
            late: accepted.iter().filter(|(_, _, late)| *late).count() as u64,
            event_times: accepted.iter().map(|(_, event, _)| event.event_time).collect(),
        });
        // Freeing a batch (one allocation per message) is left to a
        // blocking thread, off the loop's path.
        drop(accepted);
        drop(rejected);
        tokio::task::spawn_blocking(move || drop((messages, chunks)));
    }
    drop(read_ahead);
    if let Some(batch) = in_flight.take() {
        let context = FinishContext { live, state: &state, source: &source, bar: &bar };
        finish(batch, context, &mut events_at, &mut rejects_at, &mut report, &mut progress).await?;
    }
    if live_dirty {
        gold.queue(lake, LiveTables::of(&state), None);
    }
    gold.flush().await?;
    report.consuming = consuming_since.elapsed();
    let mut latencies = std::mem::take(&mut progress.latencies);
    bar.finish_and_clear();
    // Lag against the newest end positions known; asked for only when none are.
    progress.collect_ends().await;
    let ends = match progress.known_ends.take().or(targets.map(Arc::unwrap_or_clone)) {
        Some(ends) => Some(ends),
        None => source.end_positions().await.ok(),
    };
    report.lag = match ends {
        Some(ends) => lag_of(&ends, &events_at),
        None => progress.lag.clone(),
    };
    report.duration = started.elapsed();
    // Two order statistics, each found in linear time (no full sort).
    let mut quantile = |q: f64| {
        (!latencies.is_empty()).then(|| {
            let rank = ((latencies.len() - 1) as f64 * q) as usize;
            *latencies.select_nth_unstable_by(rank, |a, b| a.total_cmp(b)).1
        })
    };
    report.latency_p50 = quantile(0.5);
    report.latency_p99 = quantile(0.99);
    Ok(report)
}

/// The appenders of the two bronze tables a batch is committed to.
struct BronzeAppenders {
    events: crate::lake::Appender,
    rejects: crate::lake::Appender,
}

/// One position key within a batch being classified.
struct BatchKey {
    key: Arc<str>,
    events_at: Option<i64>,
    rejects_at: Option<i64>,
    /// The furthest next position of the key in the batch.
    next: i64,
}

/// A micro-batch whose commit is running.
struct InFlight {
    task: tokio::task::JoinHandle<Result<(Positions, Positions)>>,
    messages: u64,
    events: u64,
    rejected: u64,
    late: u64,
    event_times: Vec<chrono::DateTime<Utc>>,
}

/// Rate, lag and latency bookkeeping of the loop.
#[derive(Default)]
struct LoopProgress {
    latencies: Vec<f64>,
    recent: VecDeque<(Instant, u64)>,
    lag: BTreeMap<String, i64>,
    /// The newest end positions fetched, and the fetch under way (run in
    /// the background: a round trip to the broker must not stall batches).
    known_ends: Option<Positions>,
    ends_probe: Option<tokio::task::JoinHandle<Result<Positions>>>,
    last_probe: Option<Instant>,
}

impl LoopProgress {
    /// Starts a background fetch of the end positions, at most once a second.
    fn probe_ends(&mut self, source: &StreamSource) {
        if self.ends_probe.is_none() && self.last_probe.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last_probe = Some(Instant::now());
            self.ends_probe = Some(source.end_positions_in_background());
        }
    }

    /// Takes the result of a finished probe, if any.
    async fn collect_ends(&mut self) {
        if self.ends_probe.as_ref().is_some_and(|probe| probe.is_finished()) {
            if let Some(probe) = self.ends_probe.take() {
                if let Ok(Ok(ends)) = probe.await {
                    self.known_ends = Some(ends);
                }
            }
        }
    }
}

/// Messages not yet committed per position key.
fn lag_of(ends: &Positions, committed: &Positions) -> BTreeMap<String, i64> {
    ends.iter().map(|(k, end)| (k.clone(), (end - committed.get(k).copied().unwrap_or(0)).max(0))).collect()
}

/// What finishing a batch reads.
struct FinishContext<'a> {
    live: &'a LiveHandle,
    state: &'a StreamState,
    source: &'a StreamSource,
    bar: &'a indicatif::ProgressBar,
}

/// Waits for a batch's commits, then makes it visible: positions, gold
/// live tables, the live view, counters.
async fn finish(
    batch: InFlight,
    context: FinishContext<'_>,
    events_at: &mut Positions,
    rejects_at: &mut Positions,
    report: &mut StreamReport,
    progress: &mut LoopProgress,
) -> Result<()> {
    let (events_positions, rejects_positions) =
        batch.task.await.map_err(|e| Error::other("stream commit", e))??;
    events_at.extend(events_positions);
    rejects_at.extend(rejects_positions);
    report.batches += 1;
    report.events += batch.events;
    report.rejected += batch.rejected;
    report.late += batch.late;
    progress.collect_ends().await;
    if let Some(ends) = &progress.known_ends {
        progress.lag = lag_of(ends, events_at);
    }
    progress.probe_ends(context.source);
    progress.recent.push_back((Instant::now(), batch.messages));
    while progress.recent.len() > 1 && progress.recent.front().is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(5)) {
        progress.recent.pop_front();
    }
    let window = progress.recent.front().map(|(t, _)| t.elapsed().as_secs_f64()).unwrap_or(0.0).max(0.2);
    let rate = progress.recent.iter().map(|(_, n)| *n as f64).sum::<f64>() / window;
    publish(context.live, context.state, report, &progress.lag, rate);
    let visible = Utc::now();
    for time in &batch.event_times {
        if progress.latencies.len() < 2_000_000 {
            progress.latencies.push((visible - *time).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
    }
    context.bar.set_position(report.events + report.rejected);
    context.bar.set_message(format!(
        "{:.0} events/s · {} batches · {} rejected · lag {}",
        rate,
        report.batches,
        report.rejected,
        progress.lag.values().sum::<i64>()
    ));
    Ok(())
}

/// How many events ahead the loop prefetches the dedupe memory.
const PREFETCH_AHEAD: usize = 8;

/// A polled batch, ready for the loop: how far it read each position key,
/// and its messages (those the run is to consume) decoded.
struct Prepared {
    reached: Vec<(Arc<str>, i64)>,
    batch: decode::DecodedBatch,
}

/// Moves `read_to` forward to what a batch `reached`.
fn extend_read_to(read_to: &mut Positions, reached: &[(Arc<str>, i64)]) {
    for (key, next) in reached {
        let read = read_to.entry(key.to_string()).or_insert(0);
        *read = (*read).max(*next);
    }
}

/// Keeps the messages within `targets` (when the run stops at them) and
/// decodes them.
fn prepare(mut messages: Vec<source::RawMessage>, targets: Option<&Positions>, countries: &BTreeMap<String, String>) -> Prepared {
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
fn batch_size(targets: Option<&Positions>, max_batch: usize, read_to: &Positions) -> Option<usize> {
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
struct ReadPlan {
    /// Where the source is positioned.
    read_to: Positions,
    targets: Option<Arc<Positions>>,
    max_batch: usize,
    /// How long a poll waits for a first message, then lingers for more.
    timing: (Duration, Duration),
    countries: Arc<BTreeMap<String, String>>,
    stop: Arc<AtomicBool>,
}

/// Batches read and decoded ahead of the loop, on a background task: while
/// the loop handles batch n, batch n+1 is polled and decoded. The task
/// waits for the loop to take a batch before it reads the next one, so one
/// batch at most waits ahead.
///
/// (Polling n+2 while decoding n+1, in a second stage, was measured: no
/// faster on two cores, and more memory.)
struct ReadAhead {
    batches: tokio::sync::mpsc::Receiver<Result<Prepared>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    fn start(reader: source::BackgroundReader, plan: ReadPlan) -> ReadAhead {
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
}

impl Drop for ReadAhead {
    /// The loop is done: nothing more is read (what was read and not
    /// committed is read again by the next run).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The positions of `batch` that move `committed` forward (a replayed batch
/// never moves a table's recorded position back).
fn advanced(batch: &Positions, committed: &Positions) -> Positions {
    batch
        .iter()
        .map(|(key, next)| (key.clone(), committed.get(key).map_or(*next, |c| (*c).max(*next))))
        .collect()
}

/// (topic, partition, offset) of the committed events inside the regions
/// (SQL predicates from `StreamSource::region_predicate`).
async fn committed_messages(lake: &Lake, regions: &[String]) -> Result<HashSet<(String, i32, i64)>> {
    let ctx = catalog::new_session();
    let mut out = HashSet::new();
    if regions.is_empty() || !catalog::register_table(&ctx, lake, "bronze", EVENTS).await? {
        return Ok(out);
    }
    let sql = format!(
        "SELECT topic, \"partition\", \"offset\" FROM bronze.sales_events WHERE {}",
        regions.iter().map(|r| format!("({r})")).collect::<Vec<_>>().join(" OR ")
    );
    let batches = ctx.sql(&sql).await?.collect().await.map_err(|e| Error::lake(format!("bronze.{EVENTS}"), e))?;
    for batch in batches {
        let topics = strings(batch.column(0).as_ref());
        let partitions = cast(batch.column(1), &DataType::Int64).expect("int column");
        let partitions = partitions.as_any().downcast_ref::<Int64Array>().expect("int64");
        let offsets = batch.column(2).as_any().downcast_ref::<Int64Array>().expect("int64 offsets");
        for i in 0..batch.num_rows() {
            out.insert((topics[i].clone(), partitions.value(i) as i32, offsets.value(i)));
        }
    }
    Ok(out)
}

/// Test hook: `MEDALLION_CRASH_POINT=<point>` aborts the process there, as a
/// power cut would.
fn crash_point(point: &str) {
    if std::env::var("MEDALLION_CRASH_POINT").is_ok_and(|p| p == point) {
        std::process::abort();
    }
}

fn publish(live: &LiveHandle, state: &StreamState, report: &StreamReport, lag: &BTreeMap<String, i64>, rate: f64) {
    live.publish(LiveSnapshot {
        countries: state.countries.values().cloned().collect(),
        events_per_second: rate,
        batches_committed: report.batches,
        events: report.events,
        rejected: report.rejected,
        lag: lag.clone(),
        updated_at: Some(Utc::now()),
    });
}

/// How often at most the gold live tables are rewritten while streaming.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// The writes of the gold live tables: each runs on its own task, after the
/// previous one and, when given, after the bronze commit it follows, so the
/// next batch never waits for them and gold never shows what bronze has not
/// committed.
#[derive(Default)]
struct GoldWrites {
    latest: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl GoldWrites {
    fn queue(&mut self, lake: &Lake, tables: LiveTables, after: Option<tokio::sync::oneshot::Receiver<()>>) {
        let previous = self.latest.take();
        let lake = lake.clone();
        self.latest = Some(tokio::spawn(async move {
            if let Some(previous) = previous {
                previous.await.map_err(|e| Error::other("gold live tables", e))??;
            }
            if let Some(after) = after {
                if after.await.is_err() {
                    return Ok(()); // the bronze commit failed, and says so itself
                }
            }
            tables.write(&lake).await
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

/// A snapshot of the live aggregate and the minute windows, to be written to
/// `gold.live_sales_by_country` and `gold.sales_by_country_minute`.
struct LiveTables {
    by_country: datafusion::arrow::array::RecordBatch,
    by_minute: datafusion::arrow::array::RecordBatch,
}

impl LiveTables {
    fn of(state: &StreamState) -> LiveTables {
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

/// Rebuilds the aggregate, windows, watermark and dedupe memory from
/// `bronze.sales_events`, exactly as they were after its last commit.
async fn rebuild_state(lake: &Lake, options: &StreamOptions) -> Result<StreamState> {
    let mut state = StreamState::new(options.allowed_lateness, options.dedupe_horizon);
    let ctx = catalog::new_session();
    if !catalog::register_table(&ctx, lake, "bronze", EVENTS).await? {
        return Ok(state);
    }
    let query = |sql: String| {
        let ctx = ctx.clone();
        async move {
            ctx.sql(&sql).await?.collect().await.map_err(|e| Error::lake(format!("bronze.{EVENTS}"), e))
        }
    };
    for batch in query("SELECT pays, SUM(montant), COUNT(*), MAX(event_time) FROM bronze.sales_events GROUP BY pays".into()).await? {
        let pays = strings(batch.column(0).as_ref());
        let sums = batch.column(1).as_any().downcast_ref::<Float64Array>().cloned().unwrap_or_else(|| Float64Array::from(Vec::<f64>::new()));
        let counts = batch.column(2).as_any().downcast_ref::<Int64Array>().cloned().unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
        let last = micros(batch.column(3).as_ref());
        for i in 0..batch.num_rows() {
            let last_event_time = chrono::DateTime::from_timestamp_micros(last[i]).unwrap_or_default();
            state.countries.insert(pays[i].clone(), crate::live::CountryTotals {
                pays: pays[i].clone(),
                total_ventes_live: sums.value(i),
                nb_transactions: counts.value(i),
                last_event_time,
            });
            state.max_event_time = Some(state.max_event_time.map_or(last_event_time, |t| t.max(last_event_time)));
        }
    }
    let windows = "SELECT date_trunc('minute', event_time), pays, SUM(montant), COUNT(*) FROM bronze.sales_events \
                   WHERE NOT is_late GROUP BY 1, 2";
    for batch in query(windows.into()).await? {
        let starts = micros(batch.column(0).as_ref());
        let pays = strings(batch.column(1).as_ref());
        let sums = batch.column(2).as_any().downcast_ref::<Float64Array>().cloned().unwrap_or_else(|| Float64Array::from(Vec::<f64>::new()));
        let counts = batch.column(3).as_any().downcast_ref::<Int64Array>().cloned().unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
        for i in 0..batch.num_rows() {
            let start = chrono::DateTime::from_timestamp_micros(starts[i]).unwrap_or_default();
            state.windows.entry(start).or_default().insert(pays[i].clone(), (sums.value(i), counts.value(i)));
        }
    }
    let recent = format!(
        "SELECT event_id FROM bronze.sales_events ORDER BY _ingestion_timestamp DESC, \"partition\", \"offset\" DESC LIMIT {}",
        options.dedupe_horizon
    );
    let mut ids = Vec::new();
    for batch in query(recent).await? {
        ids.extend(strings(batch.column(0).as_ref()));
    }
    for id in ids.iter().rev() {
        state.remember(id);
    }
    Ok(state)
}

fn strings(array: &dyn Array) -> Vec<String> {
    let casted = cast(array, &DataType::Utf8).expect("string-like column");
    let values = casted.as_any().downcast_ref::<StringArray>().expect("utf8 after cast");
    (0..values.len()).map(|i| values.value(i).to_string()).collect()
}

fn micros(array: &dyn Array) -> Vec<i64> {
    let casted = cast(array, &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())))
        .expect("timestamp column");
    let values = casted.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("timestamp after cast");
    (0..values.len()).map(|i| values.value(i)).collect()
}
