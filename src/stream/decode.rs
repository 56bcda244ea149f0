//! Decoding of a polled batch, on every core and ahead of the loop.
//!
//! A `DecodedBatch` owns its messages and everything decoded from them, so
//! it can be built on background threads while the loop classifies and
//! commits the batch before it. Decoding needs nothing of the stream state:
//! what the state decides (duplicate, late) is decided by the loop, in
//! message order.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::event;
use super::sink::EventColumns;
use super::message::RawMessage;
use super::state;

/// What the loop needs of a valid event (its bronze row is already in the
/// chunk's `EventColumns`).
#[derive(Debug, Clone, Copy)]
pub struct Decoded {
    /// The fingerprint of the event id (see `state::fingerprint`).
    pub fingerprint: u128,
    pub event_time: DateTime<Utc>,
    pub montant: f64,
    /// Index of the standardised country in the chunk's `countries`.
    pub country: u32,
}

/// The messages of one thread's share of a batch, decoded.
pub struct DecodedChunk {
    /// One per message of the chunk, in order: the event, or why it is
    /// rejected.
    pub results: Vec<Result<Decoded, String>>,
    /// The standardised countries the chunk's events name.
    pub countries: Vec<Box<str>>,
}

impl DecodedChunk {
    pub fn country(&self, event: &Decoded) -> &str {
        &self.countries[event.country as usize]
    }
}

/// A batch of messages and its decoded events, in consecutive chunks (one
/// per decoding thread, not copied into one vector).
pub struct DecodedBatch {
    pub messages: Vec<RawMessage>,
    pub chunks: Vec<DecodedChunk>,
    /// Per chunk, its valid events as bronze rows, in order (apart, so
    /// they can be finished while the chunks' events are read).
    pub columns: Vec<EventColumns>,
}

/// Decodes `messages` on every core (decoding is independent per message).
pub fn decode(messages: Vec<RawMessage>, countries: &BTreeMap<String, String>) -> DecodedBatch {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if threads < 2 || messages.len() < 2_000 {
        let (chunk, columns) = decode_chunk(&messages, countries);
        return DecodedBatch { messages, chunks: vec![chunk], columns: vec![columns] };
    }
    let chunk = messages.len().div_ceil(threads);
    let (chunks, columns) = std::thread::scope(|scope| {
        let workers: Vec<_> =
            messages.chunks(chunk).map(|part| scope.spawn(move || decode_chunk(part, countries))).collect();
        workers.into_iter().map(|w| w.join().expect("decoding thread")).unzip()
    });
    DecodedBatch { messages, chunks, columns }
}

fn decode_chunk(messages: &[RawMessage], countries: &BTreeMap<String, String>) -> (DecodedChunk, EventColumns) {
    let mut columns = EventColumns::with_capacity(messages.len());
    let mut interned = CountryInterner::default();
    let results = messages
        .iter()
        .map(|m| {
            let event = event::parse(&m.payload, countries)?;
            columns.push(&event, m);
            Ok(Decoded {
                fingerprint: state::fingerprint(&event.event_id),
                event_time: event.event_time,
                montant: event.montant,
                country: interned.index_of(&event.pays),
            })
        })
        .collect();
    (DecodedChunk { results, countries: interned.names }, columns)
}

/// Numbers the distinct countries of a chunk (a few dozen at most).
#[derive(Default)]
struct CountryInterner {
    names: Vec<Box<str>>,
    /// Where each name was first seen, when it was borrowed: standardised
    /// countries mostly borrow one string of the country map, so a match is
    /// usually found by its address, without comparing text. (A borrowed
    /// string keeps its address for the whole decoding; a copied one may
    /// be freed and its address reused for another name, so copies are
    /// always compared as text.)
    borrowed_at: Vec<Option<usize>>,
}

impl CountryInterner {
    fn index_of(&mut self, country: &Cow<'_, str>) -> u32 {
        let address = match country {
            Cow::Borrowed(text) => Some(text.as_ptr() as usize),
            Cow::Owned(_) => None,
        };
        let known = address.and_then(|address| {
            self.borrowed_at.iter().zip(&self.names).position(|(at, name)| *at == Some(address) && name.len() == country.len())
        });
        let index = match known.or_else(|| self.names.iter().position(|name| name.as_ref() == country.as_ref())) {
            Some(index) => index,
            None => {
                self.names.push(country.as_ref().into());
                self.borrowed_at.push(address);
                self.names.len() - 1
            }
        };
        index as u32
    }
}

/// The reject reason of a valid event that is a duplicate. Duplicates are
/// rare, so their id is decoded again rather than kept for every event.
pub fn duplicate_reason(message: &RawMessage, countries: &BTreeMap<String, String>) -> String {
    match event::parse(&message.payload, countries) {
        Ok(event) => format!("duplicate event_id {}", event.event_id),
        Err(reason) => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64, payload: &str) -> RawMessage {
        RawMessage {
            topic: "t".into(),
            partition: 0,
            offset,
            key: "t:0".into(),
            next_position: offset + 1,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    #[test]
    fn chunks_keep_message_order_and_name_countries_once() {
        let countries = crate::config::CountryConfig::default().lookup();
        // Enough messages for several decoding threads.
        let messages: Vec<_> = (0..5_000)
            .map(|i| match i % 4 {
                3 => message(i, "{not json"),
                k => message(
                    i,
                    &format!(
                        r#"{{"event_id":"e{i}","timestamp":"2026-11-25T10:00:00Z","pays":"{}","montant":{i}}}"#,
                        ["france", "UK", "France"][k as usize]
                    ),
                ),
            })
            .collect();
        let batch = decode(messages, &countries);
        assert_eq!(batch.messages.len(), 5_000);
        let mut index = 0i64;
        let mut valid_rows = 0;
        for (chunk, columns) in batch.chunks.iter().zip(&batch.columns) {
            valid_rows += columns.len();
            for result in &chunk.results {
                match (index % 4, result) {
                    (3, Err(reason)) => assert!(reason.starts_with("malformed JSON"), "{reason}"),
                    (k, Ok(event)) if k != 3 => {
                        assert_eq!(event.montant, index as f64);
                        assert_eq!(event.fingerprint, state::fingerprint(&format!("e{index}")));
                        assert_eq!(chunk.country(event), if k == 1 { "UK" } else { "France" });
                    }
                    (_, other) => panic!("message {index}: unexpected {:?}", other.as_ref().map(|_| ())),
                }
                index += 1;
            }
            // "france" and "France" are one standardised country.
            assert_eq!(chunk.countries.len(), 2);
        }
        assert_eq!(index, 5_000);
        assert_eq!(valid_rows, 3_750);
        assert_eq!(duplicate_reason(&batch.messages[1], &countries), "duplicate event_id e1");
    }

    #[test]
    fn countries_outside_the_map_keep_their_own_names() {
        // Names the map does not know are copied out of the payload one
        // event at a time; two of the same length must not be taken for one.
        let countries = crate::config::CountryConfig::default().lookup();
        let names = ["Atlantis", "Lemurias", " Atlantis ", "Lemurias"];
        let messages: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                message(i as i64, &format!(r#"{{"event_id":"e{i}","timestamp":"2026-11-25T10:00:00Z","pays":"{name}","montant":1}}"#))
            })
            .collect();
        let batch = decode(messages, &countries);
        let chunk = &batch.chunks[0];
        let got: Vec<&str> = chunk.results.iter().map(|r| chunk.country(r.as_ref().unwrap())).collect();
        assert_eq!(got, ["Atlantis", "Lemurias", "Atlantis", "Lemurias"]);
    }
}
