//! A Kafka topic consumed in a consumer group for `feature-store ingest`,
//! through librdkafka.
//!
//! Kafka keeps each partition's order and the group's committed offsets, so
//! the ingestion rules map directly: a partition is a [`Message::partition`]
//! (`"0"`, `"1"`, ...), an offset its position, and a commit stores
//! `offset + 1` of the newest message of each partition, only for
//! partitions this process still holds. Automatic commits and offset stores
//! are off.
//!
//! Rebalances move partitions between the group's processes. A revoked
//! partition's uncommitted messages are replayed by its new owner from the
//! last commit, so this consumer reports the change to the ingestion loop
//! ([`StreamConsumer::take_reassignment`]), which drops what it holds of
//! that partition, and discards the partition's messages fetched earlier
//! in the poll during which the revocation happened (they come again from
//! the committed offset, to whichever process owns it). The rebalance waits for
//! that poll: librdkafka runs the callbacks inside it, so a revocation
//! never lands in the middle of a write. The default assignment strategy is
//! `cooperative-sticky`, so a process joining or leaving moves only the
//! partitions that must move.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use feature_store_core::ingest::{Message, Payload, Reassignment, StreamConsumer};
use feature_store_core::model::{StartPosition, StreamSource};
use feature_store_core::{Error, Result};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// How long the broker may hold a fetch for more data (`fetch.wait.max.ms`).
const FETCH_WAIT_MS: &str = "20";

/// Session timeout unless `properties` sets one: a killed process's
/// partitions move to the others after this long.
const SESSION_TIMEOUT_MS: &str = "10000";

/// How long a first poll waits for the group's first assignment.
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// Dead letters produced to a topic on the source's brokers (idempotent
/// producer, `acks=all`; each send waits for every letter's delivery).
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
    describe: String,
}

impl std::fmt::Debug for KafkaDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDeadLetters").field("to", &self.describe).finish()
    }
}

/// Source `properties` a producer shares with the consumer: how to reach
/// and authenticate to the brokers (the rest are consumer settings).
fn connection_property(key: &str) -> bool {
    ["security.", "sasl.", "ssl.", "socket.", "broker.", "client.dns.", "enable.ssl."]
        .iter()
        .any(|p| key.starts_with(p))
}

impl KafkaDeadLetters {
    /// Letters of `source` to `topic` on its brokers.
    pub fn open(source: &StreamSource, topic: &str) -> Result<Self> {
        let brokers = source.brokers.clone().unwrap_or_default();
        let describe = format!("Kafka topic \"{topic}\" on {brokers}");
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in source.properties.iter().filter(|(k, _)| connection_property(k)) {
            config.set(key, value);
        }
        let producer: FutureProducer = config.create().map_err(|e| Error::Config {
            location: format!("stream source \"{}\" dead_letter", source.name),
            message: e.to_string(),
        })?;
        Ok(Self { producer, topic: topic.to_owned(), describe })
    }
}

#[async_trait]
impl feature_store_core::ingest::dead_letter::DeadLetterSink for KafkaDeadLetters {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn send(&mut self, letters: &[Bytes]) -> Result<()> {
        // All in flight at once, then each delivery awaited.
        let mut deliveries = Vec::with_capacity(letters.len());
        for l in letters {
            let record = FutureRecord::<(), [u8]>::to(&self.topic).payload(l.as_ref());
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| unavailable(&self.describe, e))?);
        }
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(unavailable(&self.describe, e)),
                Err(_) => return Err(unavailable(&self.describe, "the producer stopped before delivering")),
            }
        }
        Ok(())
    }
}

/// A consumer of one Kafka topic in one group.
pub struct KafkaStreamConsumer {
    describe: String,
    group: String,
    topic: String,
    consumer: Arc<BaseConsumer<GroupContext>>,
    /// Partition names, interned.
    names: BTreeMap<i32, Arc<str>>,
    /// A lost assignment was reported; reset once partitions are assigned again.
    lost_reported: bool,
}

impl std::fmt::Debug for KafkaStreamConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStreamConsumer").field("topic", &self.describe).field("group", &self.group).finish()
    }
}

/// Receives librdkafka's callbacks (on the thread that polls).
struct GroupContext {
    describe: String,
    /// Partition changes not yet taken by the ingestion loop.
    changes: Mutex<Reassignment>,
    /// Partitions revoked since the current poll began: what it fetched of
    /// them before is dropped.
    revoked_in_poll: Mutex<Vec<i32>>,
    /// Set at the first assignment (even an empty one): the group is joined.
    joined: std::sync::atomic::AtomicBool,
    /// The newest error librdkafka reported, for a poll that cannot connect.
    last_error: Mutex<Option<String>>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", stream = %self.describe, %error, "{reason}");
        *self.last_error.lock().expect("not poisoned") = Some(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.revoked_in_poll.lock().expect("not poisoned").extend(list.elements().iter().map(|e| e.partition()));
            let mut changes = self.changes.lock().expect("not poisoned");
            changes.revoke(list.elements().iter().map(|e| partition_name(e.partition())));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                self.joined.store(true, std::sync::atomic::Ordering::SeqCst);
                let mut changes = self.changes.lock().expect("not poisoned");
                changes.assign(list.elements().iter().map(|e| partition_name(e.partition())));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(stream = %self.describe, error = %e, "ingest: rebalance failed"),
        }
    }
}

fn partition_name(p: i32) -> Arc<str> {
    Arc::from(p.to_string().as_str())
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::StoreUnavailable { store: what.to_owned(), source: e.to_string().into() }
}

/// One message as fetched, before it becomes a [`Message`].
struct Fetched {
    partition: i32,
    offset: i64,
    payload: Option<Bytes>,
}

impl KafkaStreamConsumer {
    /// Joins `group` on `source.topic` as `name` (the client id), reading
    /// from the group's committed offsets (a new group from `source.start`).
    pub fn open(source: &StreamSource, group: &str, name: &str) -> Result<Self> {
        let describe = source.describe();
        let topic = source.topic.clone().unwrap_or_default();
        let brokers = source.brokers.clone().unwrap_or_default();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &brokers)
            .set("group.id", group)
            .set("client.id", name)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set(
                "auto.offset.reset",
                match source.start {
                    StartPosition::Latest => "latest",
                    _ => "earliest",
                },
            )
            .set("session.timeout.ms", SESSION_TIMEOUT_MS)
            .set("partition.assignment.strategy", "cooperative-sticky")
            // librdkafka's 500 ms makes a quiet partition's next event wait
            // up to that long in the broker: freshness p99 1.26 s at 10k
            // events/s against 80 ms with 20 ms (benchmarks/README.md).
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in &source.properties {
            config.set(key, value);
        }
        let context = GroupContext {
            describe: describe.clone(),
            changes: Mutex::new(Reassignment::default()),
            revoked_in_poll: Mutex::new(Vec::new()),
            joined: std::sync::atomic::AtomicBool::new(false),
            last_error: Mutex::new(None),
        };
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(|e| Error::InvalidArgument(format!("{describe}: the Kafka client refused its settings: {e}")))?;
        consumer.subscribe(&[&topic]).map_err(|e| unavailable(&describe, e))?;
        Ok(Self {
            describe,
            group: group.to_owned(),
            topic,
            consumer: Arc::new(consumer),
            names: BTreeMap::new(),
            lost_reported: false,
        })
    }

    /// A poll's error: retried, unless librdkafka calls it fatal.
    fn poll_error(&self, e: KafkaError) -> Error {
        match self.consumer.client().fatal_error() {
            Some((code, reason)) => Error::InvalidArgument(format!(
                "{}: the Kafka client failed ({code}: {reason}); stopping",
                self.describe
            )),
            None => unavailable(&self.describe, e),
        }
    }

    fn name_of(&mut self, partition: i32) -> Arc<str> {
        Arc::clone(self.names.entry(partition).or_insert_with(|| partition_name(partition)))
    }

    /// Runs `f` on the consumer on a blocking thread (librdkafka's calls block).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BaseConsumer<GroupContext>) -> T + Send + 'static,
    ) -> Result<T> {
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || f(&consumer))
            .await
            .map_err(|e| unavailable(&self.describe, format!("the Kafka client's thread failed: {e}")))
    }
}

#[async_trait]
impl StreamConsumer for KafkaStreamConsumer {
    fn describe(&self) -> String {
        format!("{} in group \"{}\"", self.describe, self.group)
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        let wait = wait.max(Duration::from_millis(10));
        let fetched = self
            .blocking(move |c| -> std::result::Result<Vec<Fetched>, KafkaError> {
                let joined = || c.context().joined.load(std::sync::atomic::Ordering::SeqCst);
                // Until the group is joined, "nothing came" means nothing
                // yet: the first poll waits for the join, then `wait` more
                // (so `--stop-when-idle` does not stop before a partition
                // was read).
                let mut start = Instant::now();
                let mut was_joined = joined();
                let until = |start: Instant, joined: bool| start + if joined { wait } else { wait.max(JOIN_WAIT) };
                let mut out = Vec::new();
                c.context().revoked_in_poll.lock().expect("not poisoned").clear();
                while out.len() < max {
                    let left = if out.is_empty() {
                        until(start, was_joined).saturating_duration_since(Instant::now()).min(wait)
                    } else {
                        Duration::ZERO
                    };
                    let next = c.poll(left);
                    if !was_joined && joined() {
                        was_joined = true;
                        start = Instant::now();
                    }
                    let revoked = std::mem::take(&mut *c.context().revoked_in_poll.lock().expect("not poisoned"));
                    if !revoked.is_empty() {
                        // Fetched before their revocation: their new owner
                        // reads them again from the committed offset. (What
                        // this poll returned came after: librdkafka drops
                        // the old assignment's queued messages.)
                        out.retain(|f: &Fetched| !revoked.contains(&f.partition));
                    }
                    match next {
                        Some(Ok(m)) => out.push(Fetched {
                            partition: m.partition(),
                            offset: m.offset(),
                            payload: m.payload().map(Bytes::copy_from_slice),
                        }),
                        Some(Err(e)) if out.is_empty() => return Err(e),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "ingest: Kafka poll reported an error");
                            break;
                        }
                        None if out.is_empty() && Instant::now() < until(start, was_joined) => continue,
                        None => break,
                    }
                }
                Ok(out)
            })
            .await?
            .map_err(|e| self.poll_error(e))?;
        let context = self.consumer.context();
        if fetched.is_empty()
            && !context.joined.load(std::sync::atomic::Ordering::SeqCst)
            && let Some(e) = context.last_error.lock().expect("not poisoned").take()
        {
            // librdkafka retries by itself and reports through its error
            // callback only: without a join, say why (unreachable brokers,
            // a refused login) so the loop counts and logs a retry.
            return Err(unavailable(&self.describe, format!("cannot join the consumer group: {e}")));
        }
        let mut out = Vec::with_capacity(fetched.len());
        for f in fetched {
            let partition = self.name_of(f.partition);
            let id = format!("{}/{}", f.partition, f.offset);
            // A null value (a tombstone) is not a record: the dead letters say so.
            let payload = Payload::Json(f.payload.unwrap_or_default());
            out.push(Message::new(partition, u128::try_from(f.offset).unwrap_or_default(), id, payload));
        }
        Ok(out)
    }

    async fn commit(&mut self, messages: &[Message]) -> Result<()> {
        let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
        for m in messages {
            let Ok(p) = m.partition.parse::<i32>() else { continue };
            let offset = i64::try_from(m.position).unwrap_or(i64::MAX);
            let e = newest.entry(p).or_insert(offset);
            *e = (*e).max(offset);
        }
        if newest.is_empty() {
            return Ok(());
        }
        let topic = self.topic.clone();
        let describe = self.describe.clone();
        self.blocking(move |c| -> Result<()> {
            // Only partitions still held: a revoked one's new owner commits it.
            let held: BTreeSet<i32> = c
                .assignment()
                .map_err(|e| unavailable(&describe, e))?
                .elements()
                .iter()
                .filter(|e| e.topic() == topic)
                .map(|e| e.partition())
                .collect();
            let mut list = TopicPartitionList::new();
            for (p, offset) in newest {
                if held.contains(&p) {
                    list.add_partition_offset(&topic, p, Offset::Offset(offset + 1))
                        .map_err(|e| unavailable(&describe, e))?;
                }
            }
            if list.count() == 0 {
                return Ok(());
            }
            c.commit(&list, CommitMode::Sync).map_err(|e| unavailable(&describe, format!("commit: {e}")))
        })
        .await?
    }

    fn take_reassignment(&mut self) -> Option<Reassignment> {
        let mut changes = std::mem::take(&mut *self.consumer.context().changes.lock().expect("not poisoned"));
        // Lost without a rebalance callback yet (the poll interval passed
        // while the loop was retrying a write, or the session expired): the
        // group may already have given these partitions to another process.
        if self.consumer.assignment_lost() {
            if !self.lost_reported {
                self.lost_reported = true;
                if let Ok(held) = self.consumer.assignment() {
                    changes.revoke(held.elements().iter().map(|e| partition_name(e.partition())));
                }
            }
        } else {
            self.lost_reported = false;
        }
        (!changes.is_empty()).then_some(changes)
    }

    async fn lag(&mut self) -> Result<Vec<(String, u64)>> {
        let topic = self.topic.clone();
        let describe = self.describe.clone();
        self.blocking(move |c| -> Result<Vec<(String, u64)>> {
            let positions = c.position().map_err(|e| unavailable(&describe, e))?;
            let mut out = Vec::new();
            for e in positions.elements() {
                if e.topic() != topic {
                    continue;
                }
                let (low, high) = c
                    .fetch_watermarks(&topic, e.partition(), Duration::from_secs(5))
                    .map_err(|err| unavailable(&describe, err))?;
                let at = match e.offset() {
                    Offset::Offset(o) => o,
                    // Nothing consumed yet here: the committed offset, else
                    // everything the broker still holds.
                    _ => c
                        .committed_offsets(
                            {
                                let mut l = TopicPartitionList::new();
                                l.add_partition(&topic, e.partition());
                                l
                            },
                            Duration::from_secs(5),
                        )
                        .ok()
                        .and_then(|l| l.elements().first().and_then(|x| x.offset().to_raw()))
                        .filter(|o| *o >= 0)
                        .unwrap_or(low),
                };
                tracing::debug!(partition = e.partition(), position = ?e.offset(), high, at, "ingest: Kafka lag");
                out.push((e.partition().to_string(), u64::try_from(high - at).unwrap_or(0)));
            }
            Ok(out)
        })
        .await?
    }

    async fn close(&mut self) -> Result<()> {
        // Leaves the group now (its partitions move at once), not at the
        // session timeout.
        let _ = self.blocking(|c| c.unsubscribe()).await;
        Ok(())
    }
}
