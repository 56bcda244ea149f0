//! Streaming state: the complete-mode aggregate by country, the 1-minute
//! event-time windows with their watermark, and the recent event ids used to
//! drop duplicates. All of it is rebuilt exactly from bronze on restart.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::dedupe::RecentIds;
use crate::live::CountryTotals;

/// Per-country totals plus windows plus dedupe.
pub struct StreamState {
    pub countries: BTreeMap<String, CountryTotals>,
    /// Window start → country → (sum, count), on-time events only (nested
    /// so that an event finds its slot without allocating a key).
    pub windows: BTreeMap<DateTime<Utc>, BTreeMap<String, (f64, i64)>>,
    /// Highest event time seen.
    pub max_event_time: Option<DateTime<Utc>>,
    /// How late an event may be before it misses its window.
    pub allowed_lateness: Duration,
    /// 128-bit fingerprints of the `dedupe_horizon` most recent event ids
    /// (collision odds ~1e-26 at a million ids).
    seen: RecentIds,
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted { late: bool },
    Duplicate,
}

impl StreamState {
    pub fn new(allowed_lateness: Duration, dedupe_horizon: usize) -> StreamState {
        StreamState {
            countries: BTreeMap::new(),
            windows: BTreeMap::new(),
            max_event_time: None,
            allowed_lateness,
            // Sized for the horizon up front (a million ids: about 50 MB with
            // the order queue).
            seen: RecentIds::new(dedupe_horizon),
        }
    }

    /// The watermark: events older than this miss their window.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.max_event_time.map(|t| t - self.allowed_lateness)
    }

    /// Remembers an event id; false when it was already seen.
    pub fn remember(&mut self, event_id: &str) -> bool {
        self.remember_fingerprint(fingerprint(event_id))
    }

    /// `remember` for an id whose `fingerprint` is already computed (decoding
    /// threads compute them in parallel).
    pub fn remember_fingerprint(&mut self, fingerprint: u128) -> bool {
        self.seen.insert(fingerprint)
    }

    /// Readies the dedupe memory for a `classify` of `fingerprint` a few
    /// events later (see `RecentIds::prefetch`).
    pub fn prefetch(&self, fingerprint: u128) {
        self.seen.prefetch(fingerprint);
    }

    /// Classifies an event (by the `fingerprint` of its id and its time)
    /// against the watermark of its batch and, if it is new, remembers its
    /// id. Aggregates are updated by `apply_batch` once the batch is built.
    pub fn classify(
        &mut self,
        fingerprint: u128,
        event_time: DateTime<Utc>,
        batch_watermark: Option<DateTime<Utc>>,
    ) -> Outcome {
        if !self.remember_fingerprint(fingerprint) {
            return Outcome::Duplicate;
        }
        Outcome::Accepted { late: batch_watermark.is_some_and(|w| event_time < w) }
    }

    /// Adds a batch of accepted events — (country, event time, amount,
    /// late) — to the aggregates, as `apply` does one by one. The batch is
    /// summed per country and minute first (a handful of keys), so the
    /// ordered maps are searched once per key, not once per event.
    pub fn apply_batch<'a>(&mut self, events: impl IntoIterator<Item = (&'a str, DateTime<Utc>, f64, bool)>) {
        struct Sums<'a> {
            pays: &'a str,
            total: f64,
            count: i64,
            first: DateTime<Utc>,
            last: DateTime<Utc>,
            /// Window start (µs) → (sum, count) of the on-time events.
            windows: BTreeMap<i64, (f64, i64)>,
        }
        let mut sums: Vec<Sums<'a>> = Vec::new();
        for (pays, event_time, montant, late) in events {
            // Countries come from a few shared strings: compared by address
            // first.
            let slot = match sums.iter().position(|s| std::ptr::eq(s.pays, pays) || s.pays == pays) {
                Some(slot) => slot,
                None => {
                    sums.push(Sums { pays, total: 0.0, count: 0, first: event_time, last: event_time, windows: BTreeMap::new() });
                    sums.len() - 1
                }
            };
            let country = &mut sums[slot];
            country.total += montant;
            country.count += 1;
            country.first = country.first.min(event_time);
            country.last = country.last.max(event_time);
            if !late {
                let window = country.windows.entry(window_start(event_time).timestamp_micros()).or_insert((0.0, 0));
                window.0 += montant;
                window.1 += 1;
            }
        }
        for country in sums {
            let totals = match self.countries.get_mut(country.pays) {
                Some(totals) => totals,
                None => self.countries.entry(country.pays.to_string()).or_insert(CountryTotals {
                    pays: country.pays.to_string(),
                    total_ventes_live: 0.0,
                    nb_transactions: 0,
                    last_event_time: country.first,
                }),
            };
            totals.total_ventes_live += country.total;
            totals.nb_transactions += country.count;
            totals.last_event_time = totals.last_event_time.max(country.last);
            for (start, (total, count)) in country.windows {
                let start = DateTime::from_timestamp_micros(start).expect("a window start of a valid time");
                let window = self.windows.entry(start).or_default();
                let slot = match window.get_mut(country.pays) {
                    Some(slot) => slot,
                    None => window.entry(country.pays.to_string()).or_insert((0.0, 0)),
                };
                slot.0 += total;
                slot.1 += count;
            }
            self.max_event_time = Some(self.max_event_time.map_or(country.last, |t| t.max(country.last)));
        }
    }

    /// Adds an accepted event to the aggregates; a late one counts in the
    /// totals, not in the minute windows.
    pub fn apply(&mut self, pays: &str, event_time: DateTime<Utc>, montant: f64, late: bool) {
        self.apply_batch([(pays, event_time, montant, late)]);
    }
}

/// The 128-bit SipHash-1-3 of an id (one pass over the id).
pub fn fingerprint(id: &str) -> u128 {
    use std::hash::Hasher;
    let mut hasher = siphasher::sip128::SipHasher13::new();
    hasher.write(id.as_bytes());
    siphasher::sip128::Hasher128::finish128(&hasher).as_u128()
}

/// The start of the 1-minute tumbling window holding `time`.
pub fn window_start(time: DateTime<Utc>) -> DateTime<Utc> {
    const MINUTE: i64 = 60_000_000;
    let micros = time.timestamp_micros();
    DateTime::from_timestamp_micros(micros - micros.rem_euclid(MINUTE)).unwrap_or(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32, second: u32) -> DateTime<Utc> {
        format!("2026-11-25T10:{minute:02}:{second:02}Z").parse().unwrap()
    }

    #[test]
    fn duplicates_are_counted_once_within_the_horizon() {
        let mut state = StreamState::new(Duration::seconds(60), 2);
        let a = fingerprint("a");
        assert_eq!(state.classify(a, at(0, 0), None), Outcome::Accepted { late: false });
        assert_eq!(state.classify(a, at(0, 0), None), Outcome::Duplicate);
        state.remember("b");
        state.remember("c");
        // "a" fell out of a horizon of 2 ids.
        assert_eq!(state.classify(a, at(0, 0), None), Outcome::Accepted { late: false });
    }

    #[test]
    fn a_batch_adds_up_as_its_events_one_by_one() {
        let events = [
            ("UK", at(5, 0), 10.0, false),
            ("France", at(5, 30), 2.5, false),
            ("UK", at(6, 1), 4.0, false),
            ("UK", at(4, 0), 1.0, true),
            ("France", at(5, 59), 0.5, false),
            ("UK", at(5, 10), 3.0, false),
        ];
        let mut one_by_one = StreamState::new(Duration::seconds(30), 100);
        for (pays, time, montant, late) in events {
            one_by_one.apply(pays, time, montant, late);
        }
        let mut batched = StreamState::new(Duration::seconds(30), 100);
        batched.apply("UK", at(1, 0), 100.0, false);
        one_by_one.apply("UK", at(1, 0), 100.0, false);
        batched.apply_batch(events);
        assert_eq!(batched.countries, one_by_one.countries);
        assert_eq!(batched.windows, one_by_one.windows);
        assert_eq!(batched.max_event_time, Some(at(6, 1)));
        // By hand: UK 10 + 4 + 1 + 3 + 100, in windows 10:01, 10:05 (10 + 3), 10:06.
        assert_eq!(batched.countries["UK"].total_ventes_live, 118.0);
        assert_eq!(batched.windows[&at(5, 0)]["UK"], (13.0, 2));
        assert_eq!(batched.windows.len(), 3);
    }

    #[test]
    fn late_events_count_in_totals_but_not_in_windows() {
        let mut state = StreamState::new(Duration::seconds(30), 100);
        state.apply("UK", at(5, 0), 10.0, false);
        let watermark = state.watermark();
        // 10:04:00 is before the watermark 10:04:30; 10:04:31 is not.
        assert_eq!(state.classify(fingerprint("b"), at(4, 0), watermark), Outcome::Accepted { late: true });
        assert_eq!(state.classify(fingerprint("c"), at(4, 31), watermark), Outcome::Accepted { late: false });
        state.apply("UK", at(4, 0), 5.0, true);
        assert_eq!(state.countries["UK"].total_ventes_live, 15.0);
        assert_eq!(state.countries["UK"].nb_transactions, 2);
        assert_eq!(state.countries["UK"].last_event_time, at(5, 0));
        assert_eq!(state.windows.len(), 1);
        assert_eq!(state.windows.values().map(|countries| countries.len()).sum::<usize>(), 1);
        assert_eq!(window_start(at(7, 59)).to_rfc3339(), "2026-11-25T10:07:00+00:00");
        let before_1970: DateTime<Utc> = "1969-12-31T23:59:30.5Z".parse().unwrap();
        assert_eq!(window_start(before_1970).to_rfc3339(), "1969-12-31T23:59:00+00:00");
    }
}
