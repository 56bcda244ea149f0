//! Streaming state: the complete-mode aggregate by country, the 1-minute
//! event-time windows with their watermark, and the recent event ids used to
//! drop duplicates. All of it is rebuilt exactly from bronze on restart.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, Duration, Utc};

use super::event::SalesEvent;
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
    /// 128-bit fingerprints of recent event ids (collision odds ~1e-26 at a
    /// million ids), oldest first in `seen_order`.
    seen: HashSet<u128, BuildHasherDefault<FingerprintHasher>>,
    seen_order: VecDeque<u128>,
    /// How many recent event ids are remembered for duplicate detection.
    pub dedupe_horizon: usize,
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
            // the order queue), so the set is not rehashed as it fills.
            seen: HashSet::with_capacity_and_hasher(dedupe_horizon.min(1 << 20), Default::default()),
            seen_order: VecDeque::with_capacity(dedupe_horizon.min(1 << 20)),
            dedupe_horizon,
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
        if !self.seen.insert(fingerprint) {
            return false;
        }
        self.seen_order.push_back(fingerprint);
        while self.seen_order.len() > self.dedupe_horizon {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Classifies an event against the watermark of the batch and, if it is
    /// new, remembers its id. Aggregates are updated by `apply` once the
    /// batch is committed.
    pub fn classify(&mut self, event: &SalesEvent, batch_watermark: Option<DateTime<Utc>>) -> Outcome {
        self.classify_fingerprinted(event, fingerprint(&event.event_id), batch_watermark)
    }

    /// `classify` with the event id's `fingerprint` already computed.
    pub fn classify_fingerprinted(
        &mut self,
        event: &SalesEvent,
        fingerprint: u128,
        batch_watermark: Option<DateTime<Utc>>,
    ) -> Outcome {
        if !self.remember_fingerprint(fingerprint) {
            return Outcome::Duplicate;
        }
        Outcome::Accepted { late: is_late(event, batch_watermark) }
    }

    /// Adds an accepted (committed) event to the aggregates.
    pub fn apply(&mut self, event: &SalesEvent, late: bool) {
        // Keys are looked up by reference and cloned only when new.
        let pays = event.pays.as_ref();
        let totals = match self.countries.get_mut(pays) {
            Some(totals) => totals,
            None => self.countries.entry(pays.to_string()).or_insert(CountryTotals {
                pays: pays.to_string(),
                total_ventes_live: 0.0,
                nb_transactions: 0,
                last_event_time: event.event_time,
            }),
        };
        totals.total_ventes_live += event.montant;
        totals.nb_transactions += 1;
        totals.last_event_time = totals.last_event_time.max(event.event_time);
        if !late {
            let window = self.windows.entry(window_start(event.event_time)).or_default();
            let slot = match window.get_mut(pays) {
                Some(slot) => slot,
                None => window.entry(pays.to_string()).or_insert((0.0, 0)),
            };
            slot.0 += event.montant;
            slot.1 += 1;
        }
        self.max_event_time = Some(self.max_event_time.map_or(event.event_time, |t| t.max(event.event_time)));
    }
}

/// Whether an event is older than the watermark (kept and counted, but
/// outside the minute windows).
pub fn is_late(event: &SalesEvent, watermark: Option<DateTime<Utc>>) -> bool {
    watermark.is_some_and(|w| event.event_time < w)
}

/// Hashes a fingerprint by its low 64 bits: they are already a SipHash, so
/// hashing them again would only cost time.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
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

    fn event(id: &str, pays: &str, minute: u32, second: u32, montant: f64) -> SalesEvent<'static> {
        let (id, pays) = (id.to_string(), pays.to_string());
        SalesEvent {
            event_id: id.into(),
            event_time: format!("2026-11-25T10:{minute:02}:{second:02}Z").parse().unwrap(),
            pays: pays.into(),
            client_id: None,
            produit: None,
            categorie: None,
            quantite: None,
            prix_unitaire: None,
            montant,
        }
    }

    #[test]
    fn duplicates_are_counted_once_within_the_horizon() {
        let mut state = StreamState::new(Duration::seconds(60), 2);
        let a = event("a", "France", 0, 0, 10.0);
        assert_eq!(state.classify(&a, None), Outcome::Accepted { late: false });
        assert_eq!(state.classify(&a, None), Outcome::Duplicate);
        state.remember("b");
        state.remember("c");
        // "a" fell out of a horizon of 2 ids.
        assert_eq!(state.classify(&a, None), Outcome::Accepted { late: false });
    }

    #[test]
    fn late_events_count_in_totals_but_not_in_windows() {
        let mut state = StreamState::new(Duration::seconds(30), 100);
        state.apply(&event("a", "UK", 5, 0, 10.0), false);
        let watermark = state.watermark();
        let late = event("b", "UK", 4, 0, 5.0);
        assert_eq!(state.classify(&late, watermark), Outcome::Accepted { late: true });
        state.apply(&late, true);
        assert_eq!(state.countries["UK"].total_ventes_live, 15.0);
        assert_eq!(state.countries["UK"].nb_transactions, 2);
        assert_eq!(state.windows.len(), 1);
        assert_eq!(state.windows.values().map(|countries| countries.len()).sum::<usize>(), 1);
        assert_eq!(window_start(event("c", "UK", 7, 59, 1.0).event_time).to_rfc3339(), "2026-11-25T10:07:00+00:00");
        let before_1970: DateTime<Utc> = "1969-12-31T23:59:30.5Z".parse().unwrap();
        assert_eq!(window_start(before_1970).to_rfc3339(), "1969-12-31T23:59:00+00:00");
    }
}
