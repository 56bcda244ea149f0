//! The Kafka stream source (librdkafka through `rdkafka`).
//!
//! Partitions are assigned by hand at the positions committed in the lake
//! (not the consumer group's offsets), which is what makes the stream
//! exactly-once; the group id is still used so tools can see the consumer.
//! Polling runs on a blocking thread; payloads are copied out in batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::message::{Positions, RawMessage};
use crate::error::{one_line, Error, Result};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Clones share one consumer.
#[derive(Clone)]
pub struct KafkaSource {
    consumer: Arc<BaseConsumer>,
    brokers: String,
    topic: String,
}

impl KafkaSource {
    pub fn new(brokers: &str, topic: &str, group: &str) -> Result<KafkaSource> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .set("queued.max.messages.kbytes", "262144")
            // Once the local queue is full, fetch again 10 ms later, not the
            // default 1 s: with 1 s a catch-up read idles most of the time.
            .set("fetch.queue.backoff.ms", "10")
            .set("client.id", "medallion")
            .create()
            .map_err(|e| Error::Config(format!("invalid Kafka settings: {}", one_line(&e.to_string()))))?;
        Ok(KafkaSource { consumer: Arc::new(consumer), brokers: brokers.to_string(), topic: topic.to_string() })
    }

    pub fn describe(&self) -> String {
        format!("kafka://{}/{}", self.brokers, self.topic)
    }

    fn key(&self, partition: i32) -> String {
        format!("{}:{partition}", self.topic)
    }

    /// Offsets `from..to` of the partition behind `key`.
    pub fn region_predicate(&self, key: &str, from: i64, to: i64) -> String {
        let partition = key.rsplit(':').next().and_then(|p| p.parse::<i32>().ok()).unwrap_or(-1);
        format!(
            "topic = '{}' AND \"partition\" = {partition} AND \"offset\" >= {from} AND \"offset\" < {to}",
            self.topic.replace('\'', "''")
        )
    }

    fn unreachable(&self, err: impl std::fmt::Display) -> Error {
        Error::Other {
            context: format!("Kafka at {} (topic {})", self.brokers, self.topic),
            reason: format!("{} — check KAFKA_BOOTSTRAP_SERVERS and that the topic exists", one_line(&err.to_string())),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&BaseConsumer) -> T + Send + 'static,
    ) -> Result<T> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || work(&consumer)).await.map_err(|e| Error::other("Kafka consumer", e))
    }

    async fn partitions(&self) -> Result<Vec<i32>> {
        let topic = self.topic.clone();
        let metadata = self
            .blocking(move |c| c.fetch_metadata(Some(&topic), METADATA_TIMEOUT))
            .await?
            .map_err(|e| self.unreachable(e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(self.unreachable("the topic does not exist or has no partitions"));
        }
        Ok(partitions)
    }

    pub async fn keys(&self) -> Result<Vec<String>> {
        Ok(self.partitions().await?.into_iter().map(|p| self.key(p)).collect())
    }

    pub async fn seek(&mut self, positions: &Positions) -> Result<()> {
        let mut assignment = TopicPartitionList::new();
        for partition in self.partitions().await? {
            let offset = match positions.get(&self.key(partition)) {
                Some(next) => Offset::Offset(*next),
                None => Offset::Beginning,
            };
            assignment.add_partition_offset(&self.topic, partition, offset).map_err(|e| self.unreachable(e))?;
        }
        self.consumer.assign(&assignment).map_err(|e| self.unreachable(e))?;
        Ok(())
    }

    pub async fn end_positions(&self) -> Result<Positions> {
        let partitions = self.partitions().await?;
        let topic = self.topic.clone();
        let marks = self
            .blocking(move |c| {
                partitions
                    .iter()
                    .map(|p| c.fetch_watermarks(&topic, *p, METADATA_TIMEOUT).map(|(_, high)| (*p, high)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
            .map_err(|e| self.unreachable(e))?;
        Ok(marks.into_iter().map(|(p, high)| (self.key(p), high)).collect())
    }

    /// Waits up to `wait` for a first message, then gathers more for up to
    /// `linger` after it (or until `max`): full batches mean fewer commits.
    pub async fn poll(&self, max: usize, wait: Duration, linger: Duration) -> Result<Vec<RawMessage>> {
        let topic: Arc<str> = self.topic.as_str().into();
        let polled = self
            .blocking(move |consumer| {
                let mut deadline = Instant::now() + wait;
                let mut out = Vec::new();
                // One shared key string per partition.
                let mut keys: Vec<Arc<str>> = Vec::new();
                while out.len() < max {
                    // Take what is queued without a timeout (no clock read);
                    // wait only when the queue is empty.
                    let polled = match consumer.poll(Duration::ZERO) {
                        Some(polled) => Some(polled),
                        None => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            consumer.poll(left)
                        }
                    };
                    match polled {
                        Some(Ok(message)) => {
                            if out.is_empty() {
                                deadline = Instant::now() + linger;
                                out.reserve(max.min(100_000));
                            }
                            let partition = message.partition();
                            let slot = partition.max(0) as usize;
                            while keys.len() <= slot {
                                let p = keys.len();
                                keys.push(format!("{topic}:{p}").into());
                            }
                            out.push(RawMessage {
                                topic: topic.clone(),
                                partition,
                                offset: message.offset(),
                                key: keys[slot].clone(),
                                next_position: message.offset() + 1,
                                payload: bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                            })
                        }
                        Some(Err(err)) => {
                            // Transport errors (a broker restarting) are retried by
                            // librdkafka itself; report and keep going.
                            tracing::warn!("Kafka: {}", one_line(&err.to_string()));
                            if Instant::now() >= deadline {
                                break;
                            }
                        }
                        None => continue,
                    }
                }
                out
            })
            .await?;
        Ok(polled)
    }
}
