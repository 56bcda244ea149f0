//! Where a stream run starts: what bronze has committed, the state rebuilt
//! from it, and the source positioned after it.
//!
//! Each micro-batch commits its events, then its rejects, each commit
//! recording the source positions it covers. A run reads those positions
//! back and seeks the source to the smaller of the two per key. After a
//! crash between the two commits, the last batch is therefore read again;
//! its messages are all in bronze events already, and those absent from it
//! (`replay_accepted` says which are present) are the rejects still to
//! write. The aggregate, windows, watermark and dedupe memory are rebuilt
//! from `bronze.sales_events` exactly as they were after its last commit.

use std::collections::HashSet;

use datafusion::arrow::array::{Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::prelude::SessionContext;

use super::message::{Committed, Positions};
use super::options::StreamOptions;
use super::sink::{EVENTS_TABLE, REJECTS_TABLE};
use super::source::StreamSource;
use super::state::StreamState;
use crate::error::{Error, Result};
use crate::lake::{catalog, Lake};
use crate::live::CountryTotals;

/// A message's identity in bronze: (topic, partition, offset).
pub type MessageId = (String, i32, i64);

/// Everything a run starts from.
pub struct Recovered {
    /// What each bronze table has committed.
    pub committed: Committed,
    /// The state as of the last events commit.
    pub state: StreamState,
    /// The messages already in bronze events among those read again (a
    /// batch whose rejects were not committed).
    pub replay_accepted: HashSet<MessageId>,
    /// Where the source was positioned.
    pub start: Positions,
    /// The source's assignment epoch the keys were read at.
    pub epoch: u64,
}

/// Reads back what bronze holds, rebuilds the state and seeks `source` to
/// the first message either table lacks.
pub async fn recover(lake: &Lake, source: &mut StreamSource, options: &StreamOptions) -> Result<Recovered> {
    source.join().await?;
    // The epoch before the keys: a reassignment after this moment is seen.
    let epoch = source.assignment_epoch();
    let keys = source.keys().await?;
    let committed = Committed {
        events: lake.committed_positions("bronze", EVENTS_TABLE, &keys).await?,
        rejects: lake.committed_positions("bronze", REJECTS_TABLE, &keys).await?,
    };
    let state = rebuild_state(lake, options).await?;
    let replay_regions = replay_regions(source, &committed, &keys)?;
    let replay_accepted = committed_messages(lake, &replay_regions).await?;
    let start = committed.start(&keys);
    source.seek(&start).await?;
    Ok(Recovered { committed, state, replay_accepted, start, epoch })
}

/// SQL predicates selecting, per key, the messages committed to bronze
/// events and not yet to the rejects.
fn replay_regions(source: &StreamSource, committed: &Committed, keys: &[String]) -> Result<Vec<String>> {
    keys.iter()
        .filter_map(|key| {
            let events = *committed.events.get(key)?;
            let rejects = committed.rejects.get(key).copied().unwrap_or(0);
            (rejects < events).then(|| source.region_predicate(key, rejects, events))
        })
        .collect()
}

/// (topic, partition, offset) of the committed events inside the regions
/// (SQL predicates from `StreamSource::region_predicate`).
async fn committed_messages(lake: &Lake, regions: &[String]) -> Result<HashSet<MessageId>> {
    let ctx = catalog::new_session();
    let mut out = HashSet::new();
    if regions.is_empty() || !catalog::register_table(&ctx, lake, "bronze", EVENTS_TABLE).await? {
        return Ok(out);
    }
    let sql = format!(
        "SELECT topic, \"partition\", \"offset\" FROM bronze.{EVENTS_TABLE} WHERE {}",
        regions.iter().map(|r| format!("({r})")).collect::<Vec<_>>().join(" OR ")
    );
    let batches = ctx.sql(&sql).await?.collect().await.map_err(|e| Error::lake(format!("bronze.{EVENTS_TABLE}"), e))?;
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

/// Rebuilds the aggregate, windows, watermark and dedupe memory from
/// `bronze.sales_events`, exactly as they were after its last commit.
pub async fn rebuild_state(lake: &Lake, options: &StreamOptions) -> Result<StreamState> {
    let mut state = StreamState::new(options.allowed_lateness, options.dedupe_horizon);
    let ctx = catalog::new_session();
    if !catalog::register_table(&ctx, lake, "bronze", EVENTS_TABLE).await? {
        return Ok(state);
    }
    add_totals(&ctx, &mut state).await?;
    let recent = format!(
        "SELECT event_id FROM bronze.{EVENTS_TABLE} ORDER BY _ingestion_timestamp DESC, \"partition\", \"offset\" DESC LIMIT {}",
        options.dedupe_horizon
    );
    let mut ids = Vec::new();
    for batch in query(&ctx, recent).await? {
        ids.extend(strings(batch.column(0).as_ref()));
    }
    for id in ids.iter().rev() {
        state.remember(id);
    }
    Ok(state)
}

/// The aggregate, windows and watermark of everything in
/// `bronze.sales_events` now, without the dedupe memory: what the gold live
/// tables show when several streams share the topic.
pub async fn rebuild_totals(lake: &Lake, allowed_lateness: chrono::Duration) -> Result<StreamState> {
    let mut state = StreamState::new(allowed_lateness, 0);
    let ctx = catalog::new_session();
    if catalog::register_table(&ctx, lake, "bronze", EVENTS_TABLE).await? {
        add_totals(&ctx, &mut state).await?;
    }
    Ok(state)
}

async fn query(ctx: &SessionContext, sql: String) -> Result<Vec<RecordBatch>> {
    ctx.sql(&sql).await?.collect().await.map_err(|e| Error::lake(format!("bronze.{EVENTS_TABLE}"), e))
}

/// Adds the per-country totals and the minute windows of the bronze events
/// registered in `ctx` to `state`.
async fn add_totals(ctx: &SessionContext, state: &mut StreamState) -> Result<()> {
    let query = |sql: String| query(ctx, sql);
    let totals = format!("SELECT pays, SUM(montant), COUNT(*), MAX(event_time) FROM bronze.{EVENTS_TABLE} GROUP BY pays");
    for batch in query(totals).await? {
        let pays = strings(batch.column(0).as_ref());
        let sums = floats(batch.column(1).as_ref());
        let counts = integers(batch.column(2).as_ref());
        let last = micros(batch.column(3).as_ref());
        for i in 0..batch.num_rows() {
            let last_event_time = chrono::DateTime::from_timestamp_micros(last[i]).unwrap_or_default();
            state.countries.insert(pays[i].clone(), CountryTotals {
                pays: pays[i].clone(),
                total_ventes_live: sums.value(i),
                nb_transactions: counts.value(i),
                last_event_time,
            });
            state.max_event_time = Some(state.max_event_time.map_or(last_event_time, |t| t.max(last_event_time)));
        }
    }
    let windows = format!(
        "SELECT date_trunc('minute', event_time), pays, SUM(montant), COUNT(*) FROM bronze.{EVENTS_TABLE} \
         WHERE NOT is_late GROUP BY 1, 2"
    );
    for batch in query(windows).await? {
        let starts = micros(batch.column(0).as_ref());
        let pays = strings(batch.column(1).as_ref());
        let sums = floats(batch.column(2).as_ref());
        let counts = integers(batch.column(3).as_ref());
        for i in 0..batch.num_rows() {
            let start = chrono::DateTime::from_timestamp_micros(starts[i]).unwrap_or_default();
            state.windows.entry(start).or_default().insert(pays[i].clone(), (sums.value(i), counts.value(i)));
        }
    }
    Ok(())
}

fn strings(array: &dyn Array) -> Vec<String> {
    let casted = cast(array, &DataType::Utf8).expect("string-like column");
    let values = casted.as_any().downcast_ref::<StringArray>().expect("utf8 after cast");
    (0..values.len()).map(|i| values.value(i).to_string()).collect()
}

/// A `SUM` of floats (empty when the column has another type, as an empty
/// result may).
fn floats(array: &dyn Array) -> Float64Array {
    array.as_any().downcast_ref::<Float64Array>().cloned().unwrap_or_else(|| Float64Array::from(Vec::<f64>::new()))
}

/// A `COUNT` (empty when the column has another type, as an empty result
/// may).
fn integers(array: &dyn Array) -> Int64Array {
    array.as_any().downcast_ref::<Int64Array>().cloned().unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()))
}

fn micros(array: &dyn Array) -> Vec<i64> {
    let casted = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))).expect("timestamp column");
    let values = casted.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("timestamp after cast");
    (0..values.len()).map(|i| values.value(i)).collect()
}
