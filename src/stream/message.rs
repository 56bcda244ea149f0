//! The types every part of the stream shares: a raw message as a source
//! hands it over, and source positions (per position key, the next position
//! to read), as read, committed, or aimed at.
//!
//! They live apart from the sources and the loop so that no module of
//! `stream` needs to import from a module that imports it back.

use std::collections::BTreeMap;
use std::sync::Arc;

/// One raw message.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// Kafka topic, or the file name (shared, not copied per message).
    pub topic: Arc<str>,
    /// Kafka partition (0 for files).
    pub partition: i32,
    /// Kafka offset, or the line number in the file (1-based).
    pub offset: i64,
    /// Position key this message advances.
    pub key: Arc<str>,
    /// The key's position once this message is consumed.
    pub next_position: i64,
    /// The message bytes (from a file: a slice of the file, read once).
    pub payload: bytes::Bytes,
}

/// Source positions: key → next position to read.
pub type Positions = BTreeMap<String, i64>;

/// What each bronze table has committed: the positions recorded in its
/// Delta log. Events are committed before rejects, so `rejects` is never
/// ahead of `events`, and is behind it only after a crash between the two.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub events: Positions,
    pub rejects: Positions,
}

impl Committed {
    /// Where reading starts: for each key both tables know, the smaller of
    /// their positions (a key either table lacks is read from the start).
    pub fn start(&self, keys: &[String]) -> Positions {
        keys.iter()
            .filter_map(|key| match (self.events.get(key), self.rejects.get(key)) {
                (Some(events), Some(rejects)) => Some((key.clone(), *events.min(rejects))),
                _ => None,
            })
            .collect()
    }

    /// The positions each table records for a batch that reached `batch`:
    /// those of `batch`, except where the table is already further (a
    /// replayed batch never moves a table's recorded position back).
    pub fn advanced_by(&self, batch: &Positions) -> Committed {
        let advanced = |committed: &Positions| -> Positions {
            batch.iter().map(|(key, next)| (key.clone(), committed.get(key).map_or(*next, |c| (*c).max(*next)))).collect()
        };
        Committed { events: advanced(&self.events), rejects: advanced(&self.rejects) }
    }

    /// Takes in the positions a commit recorded.
    pub fn extend(&mut self, recorded: Committed) {
        self.events.extend(recorded.events);
        self.rejects.extend(recorded.rejects);
    }
}
