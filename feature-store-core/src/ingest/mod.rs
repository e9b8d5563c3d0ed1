//! Stream ingestion: the contract a broker client implements
//! ([`StreamConsumer`]), how records become typed rows ([`decode`]) and
//! where rejected ones go ([`dead_letter`]). The loop that writes online,
//! appends the offline log and commits is `FeatureStore::ingest`
//! (`facade/ingest.rs`); broker clients live in `feature-store-streams`.
//!
//! Exactly once in effect rests on three rules the loop keeps:
//! - a message is committed only after its online write and its offline
//!   log file are durable, so a crash replays, never skips;
//! - each partition is consumed in position order by one consumer at a
//!   time, so "position ≤ the newest applied" identifies a replay;
//! - every write a replay repeats is idempotent: latest values never
//!   regress, aggregation tiles record per partition the newest position
//!   they hold ([`crate::facade`]'s `__applied`), and offline log files are
//!   named by the positions they hold and skipped when present.

pub mod dead_letter;
pub mod decode;
pub mod log_file;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::model::{DeadLetterTarget, StreamSource};

/// Fault injection for the crash tests: with `FEATURE_STORE_FAULT` set to
/// `name`, the process aborts here (as a kill -9 would stop it). Points:
/// `ingest-after-offline-flush` (log files written, nothing committed),
/// `ingest-mid-offline-flush` (the first of several log files of a flush
/// written).
pub(crate) fn fault_point(name: &str) {
    if std::env::var_os("FEATURE_STORE_FAULT").is_some_and(|v| v == name) {
        eprintln!("FEATURE_STORE_FAULT: aborting at {name}");
        std::process::abort();
    }
}

/// Test hook: with `FEATURE_STORE_SLOW=<name>=<milliseconds>` set, waits
/// that long at point `name` (a slow online store, say), so that tests can
/// reproduce what only timing would.
pub(crate) async fn slow_point(name: &str) {
    if let Some(v) = std::env::var_os("FEATURE_STORE_SLOW")
        && let Some((point, ms)) = v.to_str().and_then(|v| v.split_once('='))
        && point == name
        && let Ok(ms) = ms.parse::<u64>()
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// This host's name, empty when it cannot be told.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// A lease holder's token, `host/pid/...`: consumers that lease a name or
/// a group write it, so another process can tell a holder that died.
pub fn lease_token(tail: &str) -> String {
    format!("{}/{}/{tail}", host_name(), std::process::id())
}

/// Leases this process's consumers hold or are taking (by a key naming
/// the broker and the lease), with their tokens.
static LEASE_CLAIMS: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Claims lease `key` for `token` within this process, unless another of
/// its consumers has it (`Err` with that one's token). Taken before asking
/// the broker for the lease and given up ([`release_lease_claim`]) when the
/// consumer stops, so that a lease under this process's token with no claim
/// is known to be one a lost reply left.
pub fn claim_lease(key: &str, token: &str) -> std::result::Result<(), String> {
    let mut claims = LEASE_CLAIMS.lock().expect("poisoned");
    match claims.get(key) {
        // A forked child inherits its parent's claims: they are not its own.
        Some(other) if other != token && lease_holder_is_this_process(other) => Err(other.clone()),
        _ => {
            claims.insert(key.to_owned(), token.to_owned());
            Ok(())
        }
    }
}

/// Gives up the claim of [`claim_lease`] if `token` still holds it.
pub fn release_lease_claim(key: &str, token: &str) {
    let mut claims = LEASE_CLAIMS.lock().expect("poisoned");
    if claims.get(key).is_some_and(|t| t == token) {
        claims.remove(key);
    }
}

/// Whether `token` ([`lease_token`]) was made by this process. A lease
/// this process holds under such a token that none of its live consumers
/// claims was left by an attempt whose reply was lost (the lease landed,
/// the answer did not), and may be taken over at once.
pub fn lease_holder_is_this_process(token: &str) -> bool {
    token.starts_with(&lease_token(""))
}

/// Whether the holder of `token` ([`lease_token`]) was a process of this
/// host that no longer runs (killed): its lease may be taken over at once.
pub fn lease_holder_is_dead(token: &str) -> bool {
    let host = host_name();
    let mut parts = token.split('/');
    let (h, pid) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    !host.is_empty()
        && h == host
        && pid.parse::<u32>().is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
}

/// One message as the broker delivered it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Message {
    /// The unit of ordering: a Kafka partition (`"3"`), a Redis consumer
    /// name, a NATS consumer. Positions grow along it.
    pub partition: Arc<str>,
    /// Where the message is in its partition (offset, stream id, sequence).
    pub position: u128,
    /// The broker's own id of the message, for commits and dead letters.
    pub id: String,
    /// The record.
    pub payload: Payload,
    /// When the consumer received it.
    pub received_at: DateTime<Utc>,
}

impl Message {
    /// A message of `partition` at `position`.
    pub fn new(partition: Arc<str>, position: u128, id: impl Into<String>, payload: Payload) -> Self {
        Self { partition, position, id: id.into(), payload, received_at: Utc::now() }
    }
}

/// How a message carries its record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Payload {
    /// One JSON object (a Kafka value, a NATS payload, a Redis `data` field).
    Json(Bytes),
    /// Field-value pairs whose values are text (a flat Redis Streams
    /// entry): numbers and booleans are parsed from the text.
    Fields(Vec<(String, String)>),
}

/// A broker client consuming one stream source in a consumer group.
///
/// `poll` returns each partition's messages in position order, starting
/// after the last committed position (a restarted consumer sees again
/// what it had not committed). `commit` marks messages done; the loop calls
/// it only once their effects are durable.
#[async_trait]
pub trait StreamConsumer: Send + Debug {
    /// What is consumed, for messages (no credentials).
    fn describe(&self) -> String;

    /// Up to `max` messages, waiting at most `wait` for the first one.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>>;

    /// Marks `messages` (previously polled) as processed.
    async fn commit(&mut self, messages: &[Message]) -> Result<()>;

    /// Messages waiting per partition (published but not yet delivered to
    /// this group), where the broker tells; empty otherwise.
    async fn lag(&mut self) -> Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }

    /// The partitions this consumer lost and gained since the last call
    /// (a consumer-group rebalance), `None` when nothing changed. The loop
    /// drops what it holds uncommitted of a lost partition (its new owner
    /// replays it from the last commit) and re-reads the offline log of a
    /// gained one. Messages of a lost partition are never returned after
    /// the change is reported.
    fn take_reassignment(&mut self) -> Option<Reassignment> {
        None
    }

    /// Releases the consumer's claims (leases, group membership) on a
    /// graceful stop.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Partitions a consumer lost and gained in a rebalance, in that order (a
/// partition may be in both: revoked, then assigned again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reassignment {
    /// Partitions no longer read by this consumer.
    pub revoked: Vec<Arc<str>>,
    /// Partitions newly read by this consumer.
    pub assigned: Vec<Arc<str>>,
}

impl Reassignment {
    /// Records the loss of `partitions`.
    pub fn revoke(&mut self, partitions: impl IntoIterator<Item = Arc<str>>) {
        self.revoked.extend(partitions);
    }

    /// Records the gain of `partitions`.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = Arc<str>>) {
        self.assigned.extend(partitions);
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty() && self.assigned.is_empty()
    }
}

/// Opens consumers for stream sources; the umbrella crate's
/// implementation knows the brokers compiled in.
#[async_trait]
pub trait ConsumerFactory: Send + Sync + Debug {
    /// A consumer of `source` (connection fields already expanded) in
    /// `group`, identifying itself as `consumer`.
    async fn open(&self, source: &StreamSource, group: &str, consumer: &str) -> Result<Box<dyn StreamConsumer>>;

    /// A publisher of dead letters to `target` (a topic, subject or stream
    /// on `source`'s broker; files are the loop's own).
    async fn open_dead_letters(
        &self,
        source: &StreamSource,
        target: &DeadLetterTarget,
    ) -> Result<Box<dyn dead_letter::DeadLetterSink>>;
}

/// A callback of [`IngestOptions::progress`].
pub type ProgressFn = Arc<dyn Fn(&IngestStats) + Send + Sync>;

/// How `FeatureStore::ingest` runs.
#[derive(Clone)]
#[non_exhaustive]
pub struct IngestOptions {
    /// Only the stream sources these views read (all by default), and only these views.
    pub views: Option<Vec<String>>,
    /// This process's name in the consumer groups (default: the host name).
    pub consumer: Option<String>,
    /// Messages taken per poll.
    pub max_batch: usize,
    /// How long a poll waits for a first message.
    pub poll_wait: Duration,
    /// Overrides each source's `offline_flush_interval`.
    pub offline_flush_interval: Option<Duration>,
    /// Events buffered for the offline log before a flush regardless of age.
    pub offline_flush_rows: usize,
    /// Append ingested events to the batch source (default true).
    pub offline_log: bool,
    /// How often small offline log files are merged (at start, then after
    /// a flush once this long has passed); `None` never merges.
    pub offline_compact_interval: Option<Duration>,
    /// Adjacent small files of one folder and partition merged at a time,
    /// at least.
    pub offline_compact_min_files: usize,
    /// Folder relative dead-letter paths are resolved against; default the repo's.
    pub base_dir: Option<std::path::PathBuf>,
    /// Stop once every source has been idle (no message) for this long.
    pub stop_when_idle: Option<Duration>,
    /// Called with the running totals after every commit, at every retry,
    /// and between commits at most every `progress_interval` while events
    /// arrive (commits follow the offline flush, 60 s apart by default).
    pub progress: Option<ProgressFn>,
    /// How often `progress` hears of events between commits (default 1 s).
    pub progress_interval: Duration,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            views: None,
            consumer: None,
            max_batch: 10_000,
            poll_wait: Duration::from_millis(200),
            offline_flush_interval: None,
            offline_flush_rows: 500_000,
            offline_log: true,
            offline_compact_interval: Some(Duration::from_secs(300)),
            offline_compact_min_files: 8,
            base_dir: None,
            stop_when_idle: None,
            progress: None,
            progress_interval: Duration::from_secs(1),
        }
    }
}

impl IngestOptions {
    /// Only these views (and the sources they read).
    pub fn with_views<S: Into<String>>(mut self, views: impl IntoIterator<Item = S>) -> Self {
        self.views = Some(views.into_iter().map(Into::into).collect());
        self
    }

    /// This process's consumer name.
    pub fn with_consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// Folder for relative dead-letter paths.
    pub fn with_base_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Stops after every source has been idle this long.
    pub fn with_stop_when_idle(mut self, idle: Duration) -> Self {
        self.stop_when_idle = Some(idle);
        self
    }

    /// Overrides the sources' offline flush interval.
    pub fn with_offline_flush_interval(mut self, every: Duration) -> Self {
        self.offline_flush_interval = Some(every);
        self
    }

    /// Whether to append to the batch sources.
    pub fn with_offline_log(mut self, yes: bool) -> Self {
        self.offline_log = yes;
        self
    }

    /// Merges small offline log files this often (`None`: never), in runs
    /// of at least `min_files`.
    pub fn with_offline_compaction(mut self, every: Option<Duration>, min_files: usize) -> Self {
        self.offline_compact_interval = every;
        self.offline_compact_min_files = min_files.max(2);
        self
    }

    /// Calls `f` with the running totals: after every commit and retry, and
    /// every `progress_interval` (1 s) between commits while events arrive.
    pub fn with_progress(mut self, f: impl Fn(&IngestStats) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }
}

impl Debug for IngestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestOptions")
            .field("views", &self.views)
            .field("consumer", &self.consumer)
            .field("max_batch", &self.max_batch)
            .field("offline_flush_interval", &self.offline_flush_interval)
            .field("offline_log", &self.offline_log)
            .finish_non_exhaustive()
    }
}

/// Running totals of one stream source's ingestion.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct IngestStats {
    /// The stream source.
    pub source: String,
    /// Messages received (including replays after a restart).
    pub received: u64,
    /// Records written online.
    pub ingested: u64,
    /// Records sent to the dead letters.
    pub dead_lettered: u64,
    /// Records appended to the offline log.
    pub offline_rows: u64,
    /// Offline log files written.
    pub offline_files: u64,
    /// Offline log files merged away by compaction.
    pub offline_files_merged: u64,
    /// Messages committed.
    pub committed: u64,
    /// Online or broker errors retried.
    pub retries: u64,
    /// Rebalances that gave this consumer partitions.
    pub reassignments: u64,
    /// The last error retried (unreachable broker or store, refused login).
    pub last_error: Option<String>,
    /// Newest event time written online.
    pub newest_event: Option<DateTime<Utc>>,
    /// Oldest event time written online (where the events this run
    /// commits begin, for the views it does not write).
    pub oldest_event: Option<DateTime<Utc>>,
    /// Event time to visible online over the latest events (up to
    /// 100,000): median, 99th percentile and worst, ms.
    pub freshness_ms: Option<(f64, f64, f64)>,
    /// Seconds from the first message received to the last commit, less
    /// the polls in between that found nothing: the time spent ingesting,
    /// without the idle wait before a stop (or between bursts).
    pub busy_seconds: f64,
    /// Messages waiting per partition, as of the last check.
    pub lag: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::{claim_lease, lease_token, release_lease_claim};

    #[test]
    fn lease_claims_are_per_process_and_released_only_by_their_holder() {
        let (a, b) = (lease_token("a"), lease_token("b"));
        claim_lease("k1", &a).unwrap();
        claim_lease("k1", &a).unwrap();
        assert_eq!(claim_lease("k1", &b), Err(a.clone()), "another consumer of this process holds it");
        release_lease_claim("k1", &b);
        assert_eq!(claim_lease("k1", &b), Err(a.clone()), "only the holder releases");
        release_lease_claim("k1", &a);
        claim_lease("k1", &b).unwrap();
        // A claim inherited from a parent process (another pid) is not this process's.
        let parent = format!("{}/0/x", lease_token("").split('/').next().unwrap());
        claim_lease("k2", &parent).unwrap();
        claim_lease("k2", &a).unwrap();
        release_lease_claim("k1", &b);
        release_lease_claim("k2", &a);
    }
}
