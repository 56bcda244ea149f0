//! `medallion produce`: realistic sales events drawn from the Northwind
//! customers and products, to Kafka (keyed by client) or to JSON-lines
//! files for the embedded stream source.
//!
//! `--bad-ratio R` mixes in, in turn, malformed JSON, a missing field, a
//! wrong type, a negative amount and a duplicated event id, so the stream's
//! dead-letter path can be watched. The sequence is seeded; only the
//! timestamps (the time of sending) differ between runs.
//!
//! The producer comes from `kafka::Connection` (brokers, SASL, TLS); before
//! the first event it asks for the topic's metadata, so a broker that
//! refuses it (bad credentials) is one `Error::KafkaRefused` line at once,
//! not a delivery timeout half a minute later.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Float32Array, Int16Array, StringArray};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::error::{one_line, Error, Result};
use crate::kafka::{self, Connection, Diagnostics, KafkaContext};
use crate::rng::Rng;
use crate::source::dump::Dump;

/// What to send.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub count: u64,
    /// Events per second; `None` = as fast as possible.
    pub rate: Option<f64>,
    pub bad_ratio: f64,
    pub seed: u64,
}

/// What was sent.
#[derive(Debug, Clone, Default)]
pub struct ProduceSummary {
    pub sent: u64,
    pub valid: u64,
    pub bad: u64,
    /// Sum of `montant` over the valid (non-duplicate) events.
    pub valid_amount: f64,
    pub elapsed: Duration,
}

struct Catalog {
    customers: Vec<(String, String)>,
    products: Vec<(String, String, f64)>,
}

fn catalog() -> Result<Catalog> {
    let dump = Dump::northwind()?;
    let customers = dump.extract("customers")?;
    let products = dump.extract("products")?;
    let categories = dump.extract("categories")?;
    let column = |t: &crate::source::ExtractedTable, name: &str| {
        t.batches[0].column(t.schema.index_of(name).expect("Northwind column")).clone()
    };
    let ids = column(&customers, "customer_id");
    let countries = column(&customers, "country");
    let ids = ids.as_any().downcast_ref::<StringArray>().expect("text");
    let countries = countries.as_any().downcast_ref::<StringArray>().expect("text");
    let category_ids = column(&categories, "category_id");
    let category_names = column(&categories, "category_name");
    let category_ids = category_ids.as_any().downcast_ref::<Int16Array>().expect("int2");
    let category_names = category_names.as_any().downcast_ref::<StringArray>().expect("text");
    let category_of = |id: i16| {
        (0..category_ids.len()).find(|i| category_ids.value(*i) == id).map(|i| category_names.value(i).to_string())
    };
    let names = column(&products, "product_name");
    let prices = column(&products, "unit_price");
    let product_categories = column(&products, "category_id");
    let names = names.as_any().downcast_ref::<StringArray>().expect("text");
    let prices = prices.as_any().downcast_ref::<Float32Array>().expect("real");
    let product_categories = product_categories.as_any().downcast_ref::<Int16Array>().expect("int2");
    Ok(Catalog {
        customers: (0..ids.len()).map(|i| (ids.value(i).to_string(), countries.value(i).to_string())).collect(),
        products: (0..names.len())
            .map(|i| {
                let category = category_of(product_categories.value(i)).unwrap_or_default();
                (names.value(i).to_string(), category, prices.value(i) as f64)
            })
            .collect(),
    })
}

/// The generator of event payloads.
pub struct EventGenerator {
    catalog: Catalog,
    rng: Rng,
    bad_ratio: f64,
    produced: u64,
    last_valid: Option<(String, Vec<u8>)>,
}

/// One message to send: key, payload, and whether the stream should accept it.
pub struct Generated {
    pub key: String,
    pub payload: Vec<u8>,
    pub valid: bool,
    pub montant: f64,
}

impl EventGenerator {
    pub fn new(bad_ratio: f64, seed: u64) -> Result<EventGenerator> {
        Ok(EventGenerator { catalog: catalog()?, rng: Rng::new(seed), bad_ratio, produced: 0, last_valid: None })
    }

    pub fn next_event(&mut self) -> Generated {
        self.produced += 1;
        let (client, country) = self.catalog.customers[(self.rng.next() % self.catalog.customers.len() as u64) as usize].clone();
        let (product, category, price) =
            self.catalog.products[(self.rng.next() % self.catalog.products.len() as u64) as usize].clone();
        let quantity = 1 + self.rng.next() % 20;
        let amount = (price * quantity as f64 * 100.0).round() / 100.0;
        let event_id = format!("{:016x}{:016x}", self.rng.next(), self.produced);
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let good = serde_json::json!({
            "event_id": event_id, "timestamp": timestamp, "pays": country, "client_id": client,
            "produit": product, "categorie": category, "quantite": quantity,
            "prix_unitaire": price, "montant": amount,
        });
        if self.rng.unit() < self.bad_ratio {
            let kind = self.rng.next() % 5;
            // A duplicate keeps its original's key, so it lands in the same
            // partition: the one stream process that owns the original sees
            // it too, as it would when a producer resends a message.
            let (key, payload) = match (kind, &self.last_valid) {
                (0, _) => (client, format!("{{\"event_id\": \"{event_id}\", \"pays\": \"{country}\", \"montant\": ").into_bytes()),
                (1, _) => (client, without(&good, "montant")),
                (2, _) => (client, with(&good, "montant", serde_json::json!(amount.to_string()))),
                (4, Some((key, previous))) => (key.clone(), previous.clone()),
                _ => (client, with(&good, "montant", serde_json::json!(-amount - 1.0))),
            };
            return Generated { key, payload, valid: false, montant: 0.0 };
        }
        let payload = serde_json::to_vec(&good).expect("json");
        self.last_valid = Some((client.clone(), payload.clone()));
        Generated { key: client, payload, valid: true, montant: amount }
    }
}

fn without(value: &serde_json::Value, field: &str) -> Vec<u8> {
    let mut value = value.clone();
    value.as_object_mut().expect("object").remove(field);
    serde_json::to_vec(&value).expect("json")
}

fn with(value: &serde_json::Value, field: &str, replacement: serde_json::Value) -> Vec<u8> {
    let mut value = value.clone();
    value.as_object_mut().expect("object").insert(field.to_string(), replacement);
    serde_json::to_vec(&value).expect("json")
}

/// Paces sending at `rate` events per second.
async fn pace(started: Instant, sent: u64, rate: Option<f64>) {
    if let Some(rate) = rate.filter(|r| *r > 0.0) {
        let due = Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The producer's settings besides brokers and security.
const PRODUCER_TUNING: [(&str, &str); 3] = [("linger.ms", "5"), ("compression.type", "lz4"), ("message.timeout.ms", "30000")];

/// Longest the producer waits for the brokers to answer before the first event.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes to a Kafka topic, keyed by client.
pub async fn to_kafka(
    connection: &Connection,
    topic: &str,
    options: &ProduceOptions,
    progress: &indicatif::ProgressBar,
) -> Result<ProduceSummary> {
    let brokers = connection.brokers();
    let (producer, diagnostics) = connection.producer(&PRODUCER_TUNING)?;
    connect(connection, &producer, &diagnostics, topic).await?;
    let mut generator = EventGenerator::new(options.bad_ratio, options.seed)?;
    let mut summary = ProduceSummary::default();
    let started = Instant::now();
    let mut in_flight = Vec::new();
    for n in 0..options.count {
        pace(started, n, options.rate).await;
        let event = generator.next_event();
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(&event.key).payload(&event.payload))
            .map_err(|(e, _)| kafka_error(brokers, topic, e))?;
        in_flight.push(delivery);
        tally(&mut summary, &event);
        if in_flight.len() >= 10_000 {
            for delivery in in_flight.drain(..) {
                delivered(brokers, topic, delivery).await.map_err(|e| refused_or(connection, &diagnostics, e))?;
            }
            progress.set_position(summary.sent);
        }
    }
    for delivery in in_flight {
        delivered(brokers, topic, delivery).await.map_err(|e| refused_or(connection, &diagnostics, e))?;
    }
    progress.set_position(summary.sent);
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Waits until the brokers answer a metadata request for `topic`; a
/// refusal (bad credentials, a failed TLS handshake) fails at once.
async fn connect(connection: &Connection, producer: &FutureProducer<KafkaContext>, diagnostics: &Arc<Diagnostics>, topic: &str) -> Result<()> {
    let (producer, diagnostics, check, topic_name) = (producer.clone(), diagnostics.clone(), connection.clone(), topic.to_string());
    let answered = tokio::task::spawn_blocking(move || {
        kafka::metadata(
            CONNECT_TIMEOUT,
            |wait| producer.client().fetch_metadata(Some(&topic_name), wait),
            || diagnostics.refusal().map(|refusal| check.refused(&refusal)),
        )
    })
    .await
    .map_err(|e| Error::other("Kafka producer", e))??;
    answered.map(|_| ()).map_err(|e| kafka_error(connection.brokers(), topic, e))
}

/// The broker's refusal when it reported one, else `err`.
fn refused_or(connection: &Connection, diagnostics: &Diagnostics, err: Error) -> Error {
    diagnostics.refusal().map(|refusal| connection.refused(&refusal)).unwrap_or(err)
}

async fn delivered(brokers: &str, topic: &str, delivery: rdkafka::producer::DeliveryFuture) -> Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(kafka_error(brokers, topic, e)),
        Err(_) => Err(kafka_error(brokers, topic, "delivery cancelled")),
    }
}

fn kafka_error(brokers: &str, topic: &str, err: impl std::fmt::Display) -> Error {
    Error::Other {
        context: format!("sending to Kafka at {brokers} (topic {topic})"),
        reason: format!("{} — check KAFKA_BOOTSTRAP_SERVERS and that the topic exists", one_line(&err.to_string())),
    }
}

fn tally(summary: &mut ProduceSummary, event: &Generated) {
    summary.sent += 1;
    if event.valid {
        summary.valid += 1;
        summary.valid_amount += event.montant;
    } else {
        summary.bad += 1;
    }
}

/// Writes one JSON-lines file into `dir` (written aside, then renamed in,
/// so the file source never sees half a file).
pub fn to_dir(dir: &Path, options: &ProduceOptions) -> Result<ProduceSummary> {
    std::fs::create_dir_all(dir).map_err(|e| Error::other(format!("creating {}", dir.display()), e))?;
    let mut generator = EventGenerator::new(options.bad_ratio, options.seed)?;
    let mut summary = ProduceSummary::default();
    let started = Instant::now();
    let mut text = Vec::new();
    for _ in 0..options.count {
        let event = generator.next_event();
        text.extend_from_slice(&event.payload);
        text.push(b'\n');
        tally(&mut summary, &event);
    }
    let name = format!("{}-{:08x}.jsonl", Utc::now().format("%Y%m%dT%H%M%S%.6f"), options.seed as u32);
    let staging = dir.join(format!(".{name}.tmp"));
    std::fs::write(&staging, &text).map_err(|e| Error::other(format!("writing {}", staging.display()), e))?;
    std::fs::rename(&staging, dir.join(&name)).map_err(|e| Error::other(format!("publishing {name}"), e))?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

use chrono::Utc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_carries_the_key_of_the_event_it_repeats() {
        let mut generator = EventGenerator::new(0.5, 7).unwrap();
        let mut last_valid: Option<Generated> = None;
        let mut duplicates = 0;
        for _ in 0..2_000 {
            let event = generator.next_event();
            if event.valid {
                last_valid = Some(event);
                continue;
            }
            if let Some(original) = last_valid.as_ref().filter(|original| original.payload == event.payload) {
                assert_eq!(event.key, original.key);
                duplicates += 1;
            }
        }
        assert!(duplicates > 50, "{duplicates} duplicates among 2000 events at a bad ratio of 0.5");
    }
}
