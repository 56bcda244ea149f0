//! The Kafka stream source (librdkafka through `rdkafka`).
//!
//! Partitions are positioned at the positions committed in the lake (not
//! the consumer group's offsets), which is what makes the stream
//! exactly-once. Which partitions a stream reads is its `Membership`: all of
//! them (the default, assigned by hand), a list (`--partitions`), or those
//! the consumer group gives it (`--group`, `Membership::Shared`): streams of
//! one group split the topic, and when one stops the group hands its
//! partitions to the others. A shared consumer's assigned partitions are
//! paused until the stream has positioned them (`seek`); each assignment or
//! revocation bumps an epoch the stream loop watches, and the loop then
//! starts over from the lake (`stream::run`). Polling runs on a blocking
//! thread; payloads are copied out in batches.
//!
//! The consumer comes from `kafka::Connection` (brokers, SASL, TLS). A broker
//! that refuses it (bad credentials, a TLS handshake that fails, a denied
//! ACL) ends the stream with `Error::KafkaRefused`: librdkafka reports the
//! refusal as an error event on the consumer's queue and would reconnect
//! forever. Before partitions are assigned the queue holds nothing else, so
//! the first metadata request reads it between short waits (a wrong
//! password fails in about a second); afterwards `poll` sees such events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::message::{Positions, RawMessage};
use crate::error::{one_line, Error, Result};
use crate::kafka::{self, Assignment, Connection, Diagnostics, KafkaContext, Refusal};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a shared stream waits for the group to assign it partitions.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A shared stream's group settings: a stopped or killed process is noticed
/// (and its partitions handed over) within ten seconds, not Kafka's default
/// 45; the round-robin assignor spreads partitions evenly. `[kafka.properties]`
/// overrides them.
const SHARED_TUNING: [(&str, &str); 3] = [
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    ("partition.assignment.strategy", "roundrobin"),
];

/// Which partitions of the topic a stream reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Every partition (the default): one stream per topic.
    AllPartitions,
    /// These partitions only (`--partitions 0,2`): streams split a topic by
    /// hand, each with its own list.
    Partitions(Vec<i32>),
    /// Those the consumer group assigns (`--group NAME`): streams of one
    /// group split the topic and take over the partitions of one that stops.
    Shared,
}

/// The consumer's settings besides brokers and security.
const CONSUMER_TUNING: [(&str, &str); 8] = [
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("enable.partition.eof", "false"),
    ("fetch.wait.max.ms", "100"),
    ("queued.max.messages.kbytes", "262144"),
    // Once the local queue is full, fetch again 10 ms later, not the
    // default 1 s: with 1 s a catch-up read idles most of the time.
    ("fetch.queue.backoff.ms", "10"),
    ("client.id", "medallion"),
];

/// Clones share one consumer.
#[derive(Clone)]
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<KafkaContext>>,
    diagnostics: Arc<Diagnostics>,
    /// Set once partitions are assigned: from then on the consumer's queue
    /// holds messages, and only `poll` reads it.
    assigned: Arc<AtomicBool>,
    connection: Connection,
    topic: String,
    membership: Membership,
    /// Set once a shared consumer has subscribed.
    subscribed: Arc<AtomicBool>,
}

impl KafkaSource {
    /// A source on `brokers` without authentication or encryption.
    pub fn new(brokers: &str, topic: &str, group: &str) -> Result<KafkaSource> {
        KafkaSource::connect(&Connection::plaintext(brokers), topic, group)
    }

    /// A source on the brokers of `connection`, with its security, reading
    /// every partition.
    pub fn connect(connection: &Connection, topic: &str, group: &str) -> Result<KafkaSource> {
        KafkaSource::connect_as(connection, topic, group, Membership::AllPartitions)
    }

    /// A source reading the partitions `membership` says.
    pub fn connect_as(connection: &Connection, topic: &str, group: &str, membership: Membership) -> Result<KafkaSource> {
        let mut tuning = CONSUMER_TUNING.to_vec();
        if membership == Membership::Shared {
            tuning.extend(SHARED_TUNING);
        }
        let (consumer, diagnostics) = connection.consumer(group, &tuning)?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            diagnostics,
            assigned: Arc::new(AtomicBool::new(false)),
            connection: connection.clone(),
            topic: topic.to_string(),
            membership,
            subscribed: Arc::new(AtomicBool::new(false)),
        })
    }

    fn assignment(&self) -> Arc<Assignment> {
        self.consumer.context().assignment()
    }

    /// Which partitions this stream reads.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Changes with every assignment or revocation of a shared stream's
    /// partitions (always 0 otherwise).
    pub fn assignment_epoch(&self) -> u64 {
        match self.membership {
            Membership::Shared => self.assignment().epoch(),
            _ => 0,
        }
    }

    pub fn describe(&self) -> String {
        format!("kafka://{}/{}", self.connection.brokers(), self.topic)
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
            context: format!("Kafka at {} (topic {})", self.connection.brokers(), self.topic),
            reason: format!("{} — check KAFKA_BOOTSTRAP_SERVERS and that the topic exists", one_line(&err.to_string())),
        }
    }

    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce(&KafkaSource) -> T + Send + 'static) -> Result<T> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || work(&source)).await.map_err(|e| Error::other("Kafka consumer", e))
    }

    /// The refusal librdkafka reported, if any. Before partitions are
    /// assigned, its error events are read off the consumer's queue here.
    fn refusal(&self) -> Option<Error> {
        if !self.assigned.load(Ordering::SeqCst) {
            while let Some(polled) = self.consumer.poll(Duration::ZERO) {
                if let Err(err) = polled {
                    self.diagnostics.note(&err, None);
                }
            }
        }
        self.diagnostics.refusal().map(|refusal| self.connection.refused(&refusal))
    }

    /// Every partition of the topic.
    async fn topic_partitions(&self) -> Result<Vec<i32>> {
        let metadata = self
            .blocking(|source| {
                kafka::metadata(
                    METADATA_TIMEOUT,
                    |wait| source.consumer.fetch_metadata(Some(&source.topic), wait),
                    || source.refusal(),
                )
            })
            .await??
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

    /// The partitions this stream reads now: all, the configured list
    /// (checked against the topic), or a shared stream's assignment.
    async fn partitions(&self) -> Result<Vec<i32>> {
        match &self.membership {
            Membership::AllPartitions => self.topic_partitions().await,
            Membership::Partitions(wanted) => {
                let existing = self.topic_partitions().await?;
                match wanted.iter().find(|p| !existing.contains(p)) {
                    Some(missing) => Err(crate::error::Error::Config(format!(
                        "partition {missing} of Kafka topic {} does not exist (it has {} partitions, 0 to {}): fix --partitions",
                        self.topic,
                        existing.len(),
                        existing.len().saturating_sub(1)
                    ))),
                    None => Ok(wanted.clone()),
                }
            }
            Membership::Shared => Ok(self.assignment().partitions()),
        }
    }

    /// A shared stream joins its group (once) and waits for its first
    /// assignment; the other memberships have nothing to join.
    pub async fn join(&self) -> Result<()> {
        if self.membership != Membership::Shared || self.subscribed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.topic_partitions().await?; // a missing topic or a refusal: one clear line
        self.consumer.subscribe(&[&self.topic]).map_err(|e| self.unreachable(e))?;
        self.assigned.store(true, Ordering::SeqCst);
        let joined = self
            .blocking(|source| {
                let deadline = Instant::now() + JOIN_TIMEOUT;
                while source.assignment().epoch() == 0 && Instant::now() < deadline {
                    // Assigned partitions are paused: nothing is read here
                    // but the group's events.
                    if let Some(Err(err)) = source.consumer.poll(Duration::from_millis(100)) {
                        if source.diagnostics.note(&err, None) {
                            return Err(source.diagnostics.refusal());
                        }
                    }
                }
                Ok(source.assignment().epoch() > 0)
            })
            .await?;
        match joined {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.unreachable(format!(
                "the consumer group gave no assignment within {} s",
                JOIN_TIMEOUT.as_secs()
            ))),
            Err(Some(refusal)) => Err(self.connection.refused(&refusal)),
            Err(None) => Err(self.unreachable("the broker refused the client")),
        }
    }

    pub async fn keys(&self) -> Result<Vec<String>> {
        self.join().await?;
        Ok(self.partitions().await?.into_iter().map(|p| self.key(p)).collect())
    }

    pub async fn seek(&mut self, positions: &Positions) -> Result<()> {
        self.join().await?;
        let mut assignment = TopicPartitionList::new();
        for partition in self.partitions().await? {
            let offset = match positions.get(&self.key(partition)) {
                Some(next) => Offset::Offset(*next),
                None => Offset::Beginning,
            };
            assignment.add_partition_offset(&self.topic, partition, offset).map_err(|e| self.unreachable(e))?;
        }
        if self.membership == Membership::Shared {
            return self.seek_assigned(assignment).await;
        }
        self.consumer.assign(&assignment).map_err(|e| self.unreachable(e))?;
        self.assigned.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Positions a shared stream's (paused) partitions and resumes them:
    /// the group's assignment is replaced by the same partitions at the
    /// lake's positions (librdkafka allows `assign` outside the rebalance
    /// callback; seeking a partition whose fetch has not started yet fails
    /// on a busy machine). A partition the group took away meanwhile has
    /// moved the epoch: the loop starts over before reading it.
    async fn seek_assigned(&self, assignment: TopicPartitionList) -> Result<()> {
        if assignment.count() == 0 {
            return Ok(());
        }
        self.blocking(move |source| {
            source.consumer.assign(&assignment)?;
            source.consumer.resume(&assignment)
        })
        .await?
        .map_err(|e| self.unreachable(format!("positioning the assigned partitions: {e}")))
    }

    pub async fn end_positions(&self) -> Result<Positions> {
        let partitions = self.partitions().await?;
        let topic = self.topic.clone();
        let marks = self
            .blocking(move |source| {
                partitions
                    .iter()
                    .map(|p| source.consumer.fetch_watermarks(&topic, *p, METADATA_TIMEOUT).map(|(_, high)| (*p, high)))
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
            .blocking(move |source| {
                let consumer = &source.consumer;
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
                            if source.diagnostics.note(&err, None) {
                                return Err(source.diagnostics.refusal());
                            }
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
                Ok(out)
            })
            .await?;
        polled.map_err(|refusal: Option<Refusal>| match refusal {
            Some(refusal) => self.connection.refused(&refusal),
            None => self.unreachable("the broker refused the client"),
        })
    }
}
