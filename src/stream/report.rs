//! What a run shows while it runs and reports at the end: the rate over
//! the last seconds, the lag behind the source's end positions, and the
//! latency from event time to visibility in `live.sales_by_country`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::message::Positions;
use super::options::StreamReport;
use super::source::StreamSource;
use super::state::StreamState;
use crate::live::{LiveHandle, LiveSnapshot};

/// Most latencies kept for the quantiles (16 MB).
const MAX_LATENCIES: usize = 2_000_000;

/// Rate, lag and latency bookkeeping of the loop.
#[derive(Default)]
pub struct LoopProgress {
    latencies: Vec<f64>,
    /// (when, messages) of the batches committed in the last 5 s.
    recent: VecDeque<(Instant, u64)>,
    pub lag: BTreeMap<String, i64>,
    /// The newest end positions fetched, and the fetch under way (run in
    /// the background: a round trip to the broker must not stall batches).
    known_ends: Option<Positions>,
    ends_probe: Option<tokio::task::JoinHandle<crate::error::Result<Positions>>>,
    last_probe: Option<Instant>,
}

impl LoopProgress {
    /// Takes in a committed batch of `messages`: lag against the newest end
    /// positions known (and a new probe of them), and the rate over the
    /// last seconds, which it returns.
    pub async fn batch_committed(&mut self, messages: u64, committed_events: &Positions, source: &StreamSource) -> f64 {
        self.collect_ends().await;
        if let Some(ends) = &self.known_ends {
            self.lag = lag_of(ends, committed_events);
        }
        self.probe_ends(source);
        self.recent.push_back((Instant::now(), messages));
        while self.recent.len() > 1 && self.recent.front().is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(5)) {
            self.recent.pop_front();
        }
        let window = self.recent.front().map(|(t, _)| t.elapsed().as_secs_f64()).unwrap_or(0.0).max(0.2);
        self.recent.iter().map(|(_, n)| *n as f64).sum::<f64>() / window
    }

    /// Records the latency of events just made visible.
    pub fn made_visible(&mut self, event_times: &[DateTime<Utc>]) {
        let visible = Utc::now();
        for time in event_times {
            if self.latencies.len() < MAX_LATENCIES {
                self.latencies.push((visible - *time).num_microseconds().unwrap_or(0) as f64 / 1e6);
            }
        }
    }

    /// The lag at the end of a run, against the newest end positions known;
    /// asked for only when none are.
    pub async fn final_lag(&mut self, targets: Option<Positions>, committed_events: &Positions, source: &StreamSource) -> BTreeMap<String, i64> {
        self.collect_ends().await;
        let ends = match self.known_ends.take().or(targets) {
            Some(ends) => Some(ends),
            None => source.end_positions().await.ok(),
        };
        match ends {
            Some(ends) => lag_of(&ends, committed_events),
            None => self.lag.clone(),
        }
    }

    /// The latency median and 99th percentile, each found in linear time
    /// (no full sort).
    pub fn latency_quantiles(&mut self) -> (Option<f64>, Option<f64>) {
        let mut quantile = |q: f64| {
            (!self.latencies.is_empty()).then(|| {
                let rank = ((self.latencies.len() - 1) as f64 * q) as usize;
                *self.latencies.select_nth_unstable_by(rank, |a, b| a.total_cmp(b)).1
            })
        };
        (quantile(0.5), quantile(0.99))
    }

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

/// Shows the state and the counters in `live.sales_by_country`.
pub fn publish(live: &LiveHandle, state: &StreamState, report: &StreamReport, lag: &BTreeMap<String, i64>, rate: f64) {
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
