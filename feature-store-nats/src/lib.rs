//! A NATS JetStream stream consumed for `feature-store ingest`.
//!
//! JetStream has no partitions, and it redelivers unacknowledged messages
//! after their ack wait, out of order. Ingestion's exactly-once rules need
//! each partition read in order from the last commit, so here the stream is
//! one partition read by one process of the group at a time:
//! - the group's committed position (a stream sequence) is kept in the
//!   key-value bucket `feature_store_ingest_positions` (no expiry), written
//!   only after the writes it covers are durable; a process starting takes
//!   the group's lease (a key of the bucket `feature_store_ingest`, which
//!   lapses 15 s after its holder stops renewing it), then re-creates the
//!   group's durable consumer after that position, so what the previous
//!   holder had not committed comes again, in order. A new group's first
//!   process records where it starts (`start: latest` is the stream's last
//!   sequence then) before it reads anything;
//! - other processes of the group wait for the lease (standby), so a second
//!   process never doubles an effect and takes over when the first stops;
//! - the consumer is only a cursor: each poll acknowledges what it received
//!   at once (`AckPolicy::All`), so the server's pending set stays one poll
//!   long. With acknowledgements held until the offline log's flush, that
//!   set grew to a flush's worth of messages, and nats-server spent about
//!   1.5x the CPU serving ingestion that it spent serving a plain consumer
//!   (0.8 s against 0.54 s for 200,000 events); acknowledged per poll,
//!   1.1-1.3x (benchmarks/streams.sh, "broker CPU s"). The consumer keeps
//!   its state in memory: a restarted server loses it, and ingestion
//!   re-creates the consumer after the newest message it has;
//! - deliveries are counted: the consumer sequence in each reply subject
//!   goes up by one per delivery, so a message lost between server and
//!   client (a connection cut mid-poll) shows as a gap. Nothing after a gap
//!   is taken; the consumer is re-created after the newest message taken,
//!   and the lost one comes again instead of being skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv};
use async_trait::async_trait;
use feature_store_core::ingest::{Message, Payload, StreamConsumer};
use feature_store_core::model::{StartPosition, StreamSource};
use feature_store_core::{Error, Result};
use futures::StreamExt;

/// This process's claim on a group's lease (see
/// [`feature_store_core::ingest::claim_lease`]), given up when dropped: an
/// open that fails, or a consumer dropped without closing, leaves its lease
/// in the bucket for this process's next open to take over at once.
#[derive(Debug)]
struct Claim {
    key: String,
    token: String,
}

impl Claim {
    fn release(&self) {
        feature_store_core::ingest::release_lease_claim(&self.key, &self.token);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.release();
    }
}

/// Bucket of the groups' leases.
const LEASES: &str = "feature_store_ingest";
/// Bucket of the groups' committed positions (stream sequences).
const POSITIONS: &str = "feature_store_ingest_positions";
/// A lease lapses this long after its last renewal.
const LEASE: Duration = Duration::from_secs(15);
/// Time a delivered message may stay unacknowledged before JetStream sends
/// it again. Polls acknowledge at once, so only a lost acknowledgement
/// waits this long; the redelivery is then dropped as already taken.
const ACK_WAIT: Duration = Duration::from_secs(3600);

/// A consumer of one JetStream stream in one group.
pub struct NatsStreamConsumer {
    claim: Claim,
    describe: String,
    group: String,
    name: Arc<str>,
    consumer: consumer::PullConsumer,
    /// The stream, to re-create the consumer a restarted server dropped.
    stream: jetstream::stream::Stream,
    durable: String,
    filter_subject: String,
    positions: kv::Store,
    /// When the consumer was last found on the server.
    checked: Instant,
    leases: kv::Store,
    lease_key: String,
    token: String,
    revision: u64,
    renewed: Instant,
    /// The consumer sequence of the last delivery seen (0: none since the
    /// consumer was created); the next must be one more, or one was lost.
    delivered: u64,
    /// The newest sequence polled: a redelivery at or below it is dropped.
    polled: u64,
}

impl std::fmt::Debug for NatsStreamConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStreamConsumer").field("stream", &self.describe).field("group", &self.group).finish()
    }
}

/// How long polls may come back empty before the consumer is looked up.
const CONSUMER_CHECK: Duration = Duration::from_secs(2);

/// The group's durable consumer, reading the messages after stream sequence
/// `after`. Its state is kept in memory (see the module doc); it
/// acknowledges cumulatively.
async fn create_consumer(
    stream: &jetstream::stream::Stream,
    durable: &str,
    after: u64,
    filter_subject: &str,
) -> std::result::Result<consumer::PullConsumer, jetstream::stream::ConsumerError> {
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: ACK_WAIT,
            // Unlimited, as a lost acknowledgement must not stop delivery
            // (JetStream's default of 1,000 did, when acknowledgements waited
            // for the offline log's flush).
            max_ack_pending: -1,
            filter_subject: filter_subject.to_owned(),
            memory_storage: true,
            ..Default::default()
        })
        .await
}

/// The key-value bucket `name` (one value a key, entries lapsing after
/// `max_age`, zero: never), created when absent. The bucket's stream is
/// created here rather than by `create_key_value`, which first reads the
/// account's info in a shape nats-server 2.9 (Debian 12's) does not send,
/// and fails there on every start.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
) -> std::result::Result<kv::Store, Box<dyn std::error::Error + Send + Sync>> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    // What a bucket is, as the key-value API defines it (ADR-8).
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    // Another process may create it first: the same config is no error.
    js.get_or_create_stream(config).await?;
    Ok(js.get_key_value(name).await?)
}

/// The stream and consumer sequences in a JetStream message's reply subject
/// (ADR-15: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
/// seq>...`, 7 tokens after the prefix, or with `<domain>.<account hash>.`
/// before the stream, 9 or more). The client's `info()` also parses the
/// timestamp and the rest (about 350 instructions a message more,
/// callgrind). `None` for anything else (`info()` then says what is wrong).
fn reply_sequences(reply: &str) -> Option<(u64, u64)> {
    let mut tokens = [""; 9];
    let mut n = 0;
    for t in reply.strip_prefix("$JS.ACK.")?.split('.') {
        if let Some(slot) = tokens.get_mut(n) {
            *slot = t;
        }
        n += 1;
    }
    let at = match n {
        7 => 3,
        n if n >= 9 => 5,
        _ => return None,
    };
    Some((tokens[at].parse().ok()?, tokens[at + 1].parse().ok()?))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::StoreUnavailable { store: what.to_owned(), source: e.to_string().into() }
}

/// KV keys allow letters, digits, `-`, `_`, `=` and `.`.
fn kv_key(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=') { c } else { '_' }).collect()
}

/// Dead letters published to a subject on the source's server, through
/// JetStream (each acknowledged by the stream that captures the subject).
pub struct NatsDeadLetters {
    js: jetstream::Context,
    subject: String,
    describe: String,
}

impl std::fmt::Debug for NatsDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDeadLetters").field("to", &self.describe).finish()
    }
}

impl NatsDeadLetters {
    /// Letters of `source` to `subject` on its server.
    pub async fn open(source: &StreamSource, subject: &str) -> Result<Self> {
        let url = source.url.clone().unwrap_or_default();
        let describe = format!("NATS subject \"{subject}\" on {url}");
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("feature-store ingest dead letters")
            .retry_on_initial_connect()
            .connect(url.as_str())
            .await
            .map_err(|e| unavailable(&describe, e))?;
        let js = jetstream::new(client);
        // Without a stream capturing it, a publish is lost: refuse at start.
        js.stream_by_subject(subject).await.map_err(|e| {
            Error::InvalidArgument(format!(
                "{describe}: no JetStream stream captures it ({e}); create one for the dead letters \
                 (nats stream add DEAD --subjects '{subject}')"
            ))
        })?;
        Ok(Self { js, subject: subject.to_owned(), describe })
    }
}

#[async_trait]
impl feature_store_core::ingest::dead_letter::DeadLetterSink for NatsDeadLetters {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn send(&mut self, letters: &[bytes::Bytes]) -> Result<()> {
        let mut acks = Vec::with_capacity(letters.len());
        for l in letters {
            acks.push(
                self.js.publish(self.subject.clone(), l.clone()).await.map_err(|e| unavailable(&self.describe, e))?,
            );
        }
        for ack in acks {
            ack.await.map_err(|e| {
                if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                    unavailable(
                        &self.describe,
                        format!(
                            "no JetStream stream captures subject \"{}\"; create one (nats stream add)",
                            self.subject
                        ),
                    )
                } else {
                    unavailable(&self.describe, e)
                }
            })?;
        }
        Ok(())
    }
}

impl NatsStreamConsumer {
    /// Joins `group` of `source.stream` as `name`: waits for the group's
    /// lease (logging once that another process holds it), then reads from
    /// the group's ack floor.
    pub async fn open(source: &StreamSource, group: &str, name: &str) -> Result<Self> {
        let describe = source.describe();
        let url = source.url.clone().unwrap_or_default();
        let stream_name = source.stream.clone().unwrap_or_default();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name(format!("feature-store ingest {name}"))
            .retry_on_initial_connect()
            .connect(url.as_str())
            .await
            .map_err(|e| unavailable(&describe, e))?;
        let js = jetstream::new(client);
        let mut stream = js.get_stream(&stream_name).await.map_err(|e| match e.kind() {
            // No answer is no verdict: the caller retries.
            jetstream::context::GetStreamErrorKind::Request => {
                unavailable(&describe, format!("stream \"{stream_name}\" cannot be read: {e}"))
            }
            _ => Error::InvalidArgument(format!(
                "{describe}: stream \"{stream_name}\" cannot be read: {e}; create it (nats stream add)"
            )),
        })?;
        let leases = bucket(&js, LEASES, LEASE)
            .await
            .map_err(|e| unavailable(&describe, format!("lease bucket {LEASES}: {e}")))?;
        let lease_key = kv_key(&format!("{stream_name}.{group}"));
        // One token per open: a second consumer of the group in this
        // process must not pass for this one.
        let opened = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let token = feature_store_core::ingest::lease_token(&format!("{name}/{}", opened.as_micros()));
        let claim = Claim { key: format!("{describe} {lease_key}"), token: token.clone() };
        let mut waited = false;
        let revision = loop {
            // Another consumer of this process holds the group: stand by as
            // behind another process.
            if let Err(holder) = feature_store_core::ingest::claim_lease(&claim.key, &token) {
                if !waited {
                    tracing::info!(
                        stream = %describe,
                        group,
                        holder,
                        "ingest: another consumer of this process is consuming the group; standing by"
                    );
                    waited = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            match leases.create(&lease_key, token.clone().into()).await {
                Ok(rev) => break rev,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let entry = leases.entry(&lease_key).await.ok().flatten();
                    let holder =
                        entry.as_ref().map(|e| String::from_utf8_lossy(&e.value).into_owned()).unwrap_or_default();
                    // A holder that died on this host (kill -9) is not waited
                    // for, nor a lease of this process that none of its
                    // consumers claims (a create that landed, its reply lost;
                    // a consumer dropped without closing).
                    let orphan = feature_store_core::ingest::lease_holder_is_this_process(&holder);
                    if (feature_store_core::ingest::lease_holder_is_dead(&holder) || orphan)
                        && let Some(e) = &entry
                    {
                        if let Ok(rev) = leases.update(&lease_key, token.clone().into(), e.revision).await {
                            let whose = if orphan { "left by this process" } else { "of a dead process" };
                            tracing::info!(previous = holder, "ingest: took over the lease {whose}");
                            break rev;
                        }
                        continue;
                    }
                    if !waited {
                        tracing::info!(
                            stream = %describe,
                            group,
                            holder,
                            "ingest: another process of the group is consuming; standing by until its lease lapses"
                        );
                        waited = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(unavailable(&describe, format!("lease: {e}"))),
            }
        };
        let durable = kv_key(group);
        let filter_subject = source.subject.clone().unwrap_or_default();
        // Past the lease, a failure gives it back, so a retry of this open
        // (ingestion retries one that found the server unreachable) does not
        // stand by behind this process's own lease.
        let started = async {
            let positions = bucket(&js, POSITIONS, Duration::ZERO)
                .await
                .map_err(|e| unavailable(&describe, format!("position bucket {POSITIONS}: {e}")))?;
            let stored = positions
                .get(lease_key.as_str())
                .await
                .map_err(|e| unavailable(&describe, format!("position bucket {POSITIONS}: {e}")))?
                .and_then(|b| std::str::from_utf8(&b).ok().and_then(|t| t.parse::<u64>().ok()));
            // Polls acknowledge at once, so the consumer's ack floor runs ahead
            // of what is committed: only the bucket's position is trusted.
            let acked = match stream.consumer_info(&durable).await {
                Ok(info) => Some(info.ack_floor.stream_sequence),
                Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => None,
                Err(e) => return Err(unavailable(&describe, e)),
            };
            let floor = match stored {
                Some(f) => f,
                None => {
                    // The group's first start: where it starts is recorded before
                    // anything is read, so a crash before the first commit resumes
                    // there. A consumer without a position is a version's that
                    // acknowledged only at commits: its ack floor is its position.
                    let f = match (acked, source.start) {
                        (Some(a), _) => a,
                        (None, StartPosition::Latest) => {
                            stream.info().await.map_err(|e| unavailable(&describe, e))?.state.last_sequence
                        }
                        (None, _) => 0,
                    };
                    positions
                        .put(lease_key.as_str(), f.to_string().into())
                        .await
                        .map_err(|e| unavailable(&describe, format!("position bucket {POSITIONS}: {e}")))?;
                    f
                }
            };
            if acked.is_some() {
                stream.delete_consumer(&durable).await.map_err(|e| unavailable(&describe, e))?;
            }
            let consumer = create_consumer(&stream, &durable, floor, &filter_subject)
                .await
                .map_err(|e| unavailable(&describe, e))?;
            Ok((positions, floor, consumer))
        }
        .await;
        let (positions, floor, consumer) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = leases.delete_expect_revision(&lease_key, Some(revision)).await;
                return Err(e);
            }
        };
        Ok(Self {
            claim,
            describe,
            group: group.to_owned(),
            name: Arc::from(stream_name.as_str()),
            consumer,
            stream,
            durable,
            filter_subject,
            positions,
            checked: Instant::now(),
            leases,
            lease_key,
            token,
            revision,
            renewed: Instant::now(),
            delivered: 0,
            polled: floor,
        })
    }

    /// The messages of one pull request, in order, those already polled
    /// (redelivered after a lost acknowledgement) left out, acknowledged at
    /// once. At a gap in the deliveries the rest is dropped and the consumer
    /// re-created after the last message taken, so the lost one comes again.
    async fn take(
        &mut self,
        batch: std::result::Result<consumer::pull::Batch, consumer::pull::BatchError>,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let mut batch = batch.map_err(|e| unavailable(&self.describe, e))?;
        let mut last: Option<jetstream::Message> = None;
        let mut gap = None;
        let mut failed = None;
        while let Some(m) = batch.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    failed = Some(unavailable(&self.describe, e));
                    break;
                }
            };
            let (seq, delivered) = match m.reply.as_deref().and_then(reply_sequences) {
                Some(s) => s,
                None => match m.info() {
                    Ok(info) => (info.stream_sequence, info.consumer_sequence),
                    Err(e) => {
                        failed = Some(unavailable(&self.describe, e));
                        break;
                    }
                },
            };
            if delivered > self.delivered + 1 {
                gap = Some((self.delivered, delivered));
                break;
            }
            self.delivered = self.delivered.max(delivered);
            if seq > self.polled {
                self.polled = seq;
                out.push(Message::new(
                    Arc::clone(&self.name),
                    u128::from(seq),
                    seq.to_string(),
                    Payload::Json(m.payload.clone()),
                ));
            }
            last = Some(m);
        }
        drop(batch);
        if let Some((seen, next)) = gap {
            self.lost(seen, next);
            if let Err(e) = self.recreate_consumer().await {
                // What was taken stays taken (`polled` is past it); the
                // next delivery shows the gap again, and this is retried.
                if out.is_empty() {
                    return Err(e);
                }
                tracing::warn!(stream = %self.describe, error = %e, "ingest: consumer not re-created yet");
            }
        } else if let Some(m) = last {
            // What is committed is the bucket's position, not this: the
            // acknowledgement only keeps the server's pending set short.
            if let Err(e) = m.ack().await {
                tracing::debug!(stream = %self.describe, error = %e, "ingest: acknowledgement not sent");
            }
        }
        match failed {
            // What came before the error is kept (`polled` is past it): the
            // next poll goes on after it.
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(()),
        }
    }

    /// Logs that deliveries after `seen` and before `next` were lost.
    fn lost(&self, seen: u64, next: u64) {
        tracing::warn!(
            stream = %self.describe,
            after = self.polled,
            "ingest: deliveries {}..{} never arrived (a connection cut mid-poll?); reading again after the last message taken",
            seen + 1,
            next - 1
        );
    }

    /// Replaces the group's consumer with one reading after the newest
    /// message polled: what this process has not committed it still holds,
    /// so nothing is skipped or read twice.
    async fn recreate_consumer(&mut self) -> Result<()> {
        use jetstream::context::ConsumerInfoErrorKind;
        match self.stream.consumer_info(&self.durable).await {
            Ok(_) => {
                self.stream.delete_consumer(&self.durable).await.map_err(|e| unavailable(&self.describe, e))?;
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {}
            Err(e) => return Err(unavailable(&self.describe, e)),
        }
        self.consumer = create_consumer(&self.stream, &self.durable, self.polled, &self.filter_subject)
            .await
            .map_err(|e| unavailable(&self.describe, e))?;
        self.delivered = 0;
        self.checked = Instant::now();
        Ok(())
    }

    /// Re-creates the group's consumer when the server no longer has it (a
    /// restarted server drops a consumer whose state was in memory), or
    /// when it delivered more than arrived: a quiet stream has no later
    /// delivery to show the gap that messages lost on the wire leave.
    async fn ensure_consumer(&mut self) -> Result<()> {
        use jetstream::context::ConsumerInfoErrorKind;
        self.checked = Instant::now();
        match self.stream.consumer_info(&self.durable).await {
            Ok(info) if info.delivered.consumer_sequence > self.delivered => {
                self.lost(self.delivered, info.delivered.consumer_sequence + 1);
                self.recreate_consumer().await
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                tracing::info!(stream = %self.describe, after = self.polled, "ingest: the server lost the group's consumer; re-created it");
                self.recreate_consumer().await
            }
            Err(e) => Err(unavailable(&self.describe, e)),
        }
    }

    async fn renew(&mut self) -> Result<()> {
        if self.renewed.elapsed() < LEASE / 3 {
            return Ok(());
        }
        match self.leases.update(&self.lease_key, self.token.clone().into(), self.revision).await {
            Ok(rev) => {
                self.revision = rev;
                self.renewed = Instant::now();
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // An update whose reply was lost may have landed: still ours.
                match self.leases.entry(&self.lease_key).await {
                    Ok(Some(entry)) if entry.value.as_ref() == self.token.as_bytes() => {
                        self.revision = entry.revision;
                        self.renewed = Instant::now();
                        Ok(())
                    }
                    _ => Err(self.lost_lease(e)),
                }
            }
            // A connection cut is no lost lease while the lease lasts: the
            // caller backs off and polls again, which renews again.
            Err(e) if self.renewed.elapsed() < LEASE => {
                Err(unavailable(&self.describe, format!("renewing the group's lease: {e}")))
            }
            Err(e) => Err(self.lost_lease(e)),
        }
    }

    fn lost_lease(&self, e: impl std::fmt::Display) -> Error {
        Error::InvalidArgument(format!(
            "{}: lost the group's lease ({e}); another process may have taken over the group \"{}\"; stopping",
            self.describe, self.group
        ))
    }
}

#[async_trait]
impl StreamConsumer for NatsStreamConsumer {
    fn describe(&self) -> String {
        format!("{} in group \"{}\"", self.describe, self.group)
    }

    /// One no-wait pull request with an expiry: the server answers at once
    /// with what the stream holds (up to `max`), or, when that is nothing,
    /// as soon as messages arrive within `wait` (measured with nats-server
    /// 2.9 and 2.15). A request without no-wait would hold a slow stream's
    /// messages until the batch filled or `wait` passed, costing freshness
    /// at every poll; the expiry also bounds the client's wait (its timer
    /// ends the request 5 s after it) when the broker goes away.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        self.renew().await?;
        let mut out = Vec::new();
        let batch =
            self.consumer.fetch().max_messages(max).expires(wait.max(Duration::from_millis(10))).messages().await;
        match self.take(batch, &mut out).await {
            // Nothing for a while: the consumer may be gone with a restarted server.
            Ok(()) if out.is_empty() && self.checked.elapsed() > CONSUMER_CHECK => self.ensure_consumer().await?,
            Ok(()) => {}
            Err(e) => {
                // A failed pull may be a consumer that is gone; the caller retries.
                let _ = self.ensure_consumer().await;
                return Err(e);
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, messages: &[Message]) -> Result<()> {
        let Some(upto) = messages.iter().map(|m| m.position).max() else { return Ok(()) };
        // The position is what a new process starts after; a restarted
        // server keeps it (the consumer's own state is in memory).
        self.positions
            .put(self.lease_key.as_str(), upto.to_string().into())
            .await
            .map_err(|e| unavailable(&self.describe, format!("position bucket {POSITIONS}: {e}")))?;
        Ok(())
    }

    async fn lag(&mut self) -> Result<Vec<(String, u64)>> {
        let info = self.consumer.info().await.map_err(|e| unavailable(&self.describe, e))?;
        Ok(vec![(self.group.clone(), info.num_pending)])
    }

    async fn close(&mut self) -> Result<()> {
        let _ = self.leases.delete_expect_revision(&self.lease_key, Some(self.revision)).await;
        self.claim.release();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::reply_sequences;

    #[test]
    fn the_sequences_are_read_from_both_reply_subject_formats() {
        assert_eq!(reply_sequences("$JS.ACK.TX.g1.1.4711.12.1733500000000000000.3"), Some((4711, 12)));
        assert_eq!(reply_sequences("$JS.ACK.hub.ACCHASH.TX.g1.2.4711.12.1733500000000000000.3.r4nd"), Some((4711, 12)));
        assert_eq!(reply_sequences("$JS.ACK.hub.ACCHASH.TX.g1.2.4711.12.1733500000000000000.3"), Some((4711, 12)));
        assert_eq!(reply_sequences("$JS.ACK.TX.g1.1.notanumber.12.17.3"), None);
        assert_eq!(reply_sequences("$JS.ACK.TX.g1.1.4711.x.17.3"), None);
        assert_eq!(reply_sequences("$JS.ACK.TX.g1.1.4711"), None);
        assert_eq!(reply_sequences("_INBOX.abc"), None);
    }
}
