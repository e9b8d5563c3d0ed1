//! `FeatureStore::ingest`: stream sources into the online store and the
//! offline log, exactly once in effect (see [`crate::ingest`] for the rules).
//!
//! Per stream source, one loop: poll → decode (bad records to the dead
//! letters) → write every view's online rows (plain views never regress;
//! aggregation views merge into their tiles, skipping positions a block
//! already holds) → buffer the rows for the offline log → when the buffer
//! is old or large enough, write it to the batch source and commit every
//! message it covers. A failed write is retried with backoff until it
//! succeeds or ingestion stops; nothing is committed past it.
//!
//! Offline log files are named `ingest-<source>-<partition hex>-<first>-<last>.parquet`
//! after the positions of the events they hold. On start the loop lists
//! them: a partition's events up to the newest `last` are in the log, and
//! those of its newest flush are written again only into the partition
//! folders (hive `date=` folders) that lack its file, which completes a
//! flush a crash cut short. Runs of small files are merged at start and
//! every `offline_compact_interval` (`OfflineWriter::compact_log`; each
//! partition's newest file is never merged, so the rule above holds).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use chrono::{DateTime, Utc};

use super::FeatureStore;
use super::materialize::{WriteTarget, events_batch};
use super::tiles::EventPositions;
use crate::ingest::dead_letter::{DeadLetterFile, DeadLetterSink, ParquetDeadLetters, encode as encode_letters};
use crate::ingest::decode::{Decoded, RecordField, RecordSchema};
use crate::ingest::log_file::LogFileName;
use crate::ingest::{ConsumerFactory, IngestOptions, IngestStats, Message, Payload, StreamConsumer};
use crate::model::{DataSource, DeadLetterTarget, StreamSource};
use crate::offline::CompactRequest;
use crate::offline::LATEST_EVENT_TS;
use crate::online::OnlineRows;
use crate::{Error, Result, ValueType};

/// Longest pause between retries of a failing write or poll.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one stream source feeds, resolved against one registry version.
struct SourcePlan {
    version: u64,
    stream: StreamSource,
    batch: DataSource,
    /// Shared with the decoding task of each prefetched poll ([`Prefetching`]).
    schema: Arc<RecordSchema>,
    /// Shared with the decoding task too, which encodes the decoded rows for them.
    views: Arc<Vec<WriteTarget>>,
}

impl SourcePlan {
    /// Whether `other` feeds the same views the same way.
    fn same_as(&self, other: &SourcePlan) -> bool {
        self.stream == other.stream
            && self.batch == other.batch
            && self.views.len() == other.views.len()
            && self
                .views
                .iter()
                .zip(other.views.iter())
                .all(|(a, b)| a.view == b.view && a.online.name == b.online.name)
    }
}

/// Events waiting for the offline log.
#[derive(Default)]
struct OfflineBuffer {
    batches: Vec<RecordBatch>,
    /// Per buffered row (across batches): (partition, position).
    positions: Vec<(Arc<str>, u128)>,
    /// Rows of a flush a crash cut short, per partition, with its range.
    recovering: Vec<RecordBatch>,
    recovering_positions: Vec<(Arc<str>, u128)>,
    opened: Option<Instant>,
}

/// Per partition: the newest position in the offline log, and the range of
/// the newest flush (which may lack some of its partition folders).
#[derive(Debug, Default, Clone)]
struct Flushed {
    last: u128,
    newest_flush: Option<(u128, u128)>,
}

impl FeatureStore {
    /// Consumes every stream source (or those of `options.views`) until
    /// `shutdown` completes (or every source is idle for
    /// `options.stop_when_idle`), writing each record online to the views
    /// over its source and appending it to the source's `batch_source`.
    /// Returns each source's totals. On shutdown, buffered events are
    /// flushed and committed first.
    pub async fn ingest(
        &self,
        factory: &dyn ConsumerFactory,
        options: IngestOptions,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<Vec<IngestStats>> {
        let doc = self.document().await?;
        let project = doc.project(self.project());
        let mut sources: Vec<StreamSource> = Vec::new();
        match &options.views {
            Some(views) => {
                for v in views {
                    let view = project.feature_view(v)?;
                    let stream = project.registry().stream_sources.get(&view.source).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "feature view \"{v}\" reads data source \"{}\", not a stream source; only views over \
                             stream sources can be ingested",
                            view.source
                        ))
                    })?;
                    if !sources.iter().any(|s| s.name == stream.spec.name) {
                        sources.push(stream.spec.clone());
                    }
                }
            }
            None => {
                for s in project.registry().stream_sources.values() {
                    if project.registry().feature_views.values().any(|v| v.spec.source == s.spec.name) {
                        sources.push(s.spec.clone());
                    }
                }
            }
        }
        if sources.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "project \"{}\" has no feature view over a stream source; define a source with kind kafka, nats \
                 or redis_stream, point a view at it, and apply",
                self.project()
            )));
        }
        let consumer = options.consumer.clone().unwrap_or_else(default_consumer_name);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let runs = sources.iter().map(|s| {
            let mut stop = stop_rx.clone();
            let consumer = consumer.clone();
            let options = &options;
            async move {
                let result = self.ingest_source(factory, s, &consumer, options, &mut stop).await;
                if let Err(e) = &result {
                    tracing::error!(source = %s.name, error = %e, "ingest: stopped");
                }
                result
            }
        });
        let all = futures::future::join_all(runs);
        tokio::pin!(all);
        tokio::pin!(shutdown);
        let results = tokio::select! {
            r = &mut all => r,
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                all.await
            }
        };
        results.into_iter().collect()
    }

    /// Resolves what `stream` feeds at the current registry version.
    async fn ingest_plan(&self, stream_name: &str, only: Option<&[String]>) -> Result<SourcePlan> {
        let doc = self.document().await?;
        let project = doc.project(self.project());
        let stream = project.stream_source(stream_name)?.clone();
        let batch = project.data_source(stream_name)?.clone();
        let views: Vec<String> = project
            .registry()
            .feature_views
            .values()
            .filter(|v| v.spec.source == stream.name && only.is_none_or(|o| o.contains(&v.spec.name)))
            .map(|v| v.spec.name.clone())
            .collect();
        let mut targets = Vec::new();
        let mut keys: Vec<(String, ValueType)> = Vec::new();
        let mut values: BTreeMap<String, ValueType> = BTreeMap::new();
        let mut owner: HashMap<String, String> = HashMap::new();
        let mut source_types: Option<HashMap<String, ValueType>> = None;
        let mut add = |name: &str, dtype: &ValueType, view: &str, values: &mut BTreeMap<String, ValueType>| match values
            .get(name)
        {
            Some(t) if t != dtype => Err(Error::InvalidArgument(format!(
                "stream source \"{}\": feature views \"{}\" and \"{view}\" read \"{name}\" as {t} and {dtype}; \
                     records have one type per field",
                stream.name, owner[name]
            ))),
            Some(_) => Ok(()),
            None => {
                values.insert(name.to_owned(), dtype.clone());
                owner.insert(name.to_owned(), view.to_owned());
                Ok(())
            }
        };
        for name in &views {
            let (target, _) = self.write_target(&doc, name, false)?;
            for k in &target.join_keys {
                let t = k.dtype.clone().ok_or_else(|| {
                    Error::InvalidArgument(format!("join key \"{}\" has no type; run apply again", k.name))
                })?;
                match keys.iter().find(|(n, _)| *n == k.name) {
                    Some((_, have)) if *have != t => {
                        return Err(Error::InvalidArgument(format!(
                            "stream source \"{}\": join key \"{}\" is {have} in one view and {t} in \"{name}\"",
                            stream.name, k.name
                        )));
                    }
                    Some(_) => {}
                    None => keys.push((k.name.clone(), t)),
                }
            }
            if target.view.is_aggregation() {
                if source_types.is_none() {
                    let schema = self.offline_store()?.source_schema(&batch).await?;
                    source_types = Some(
                        schema
                            .schema
                            .fields()
                            .iter()
                            .filter_map(|f| {
                                Some((batch.mapped_name(f.name()).to_owned(), ValueType::from_arrow(f.data_type())?))
                            })
                            .collect(),
                    );
                }
                let types = source_types.as_ref().expect("set above");
                for c in target.view.aggregations.iter().filter_map(|a| a.column.as_ref()) {
                    let t = types.get(c).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "feature view \"{name}\" aggregates \"{c}\", which batch source \"{}\" lacks",
                            batch.name
                        ))
                    })?;
                    add(c, t, name, &mut values)?;
                }
            } else {
                for f in &target.view.schema {
                    add(&f.name, &f.dtype, name, &mut values)?;
                }
            }
            targets.push(target);
        }
        let fields = crate::ingest::decode::record_fields(&keys, &values);
        let fields: Vec<RecordField> = fields.into_iter().filter(|f| !keys.is_empty() || !f.required).collect();
        let schema = Arc::new(RecordSchema::new(&stream, fields, LATEST_EVENT_TS));
        Ok(SourcePlan { version: doc.version, stream, batch, schema, views: Arc::new(targets) })
    }

    async fn ingest_source(
        &self,
        factory: &dyn ConsumerFactory,
        stream: &StreamSource,
        consumer_name: &str,
        options: &IngestOptions,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<IngestStats> {
        let only = options.views.as_deref();
        let mut plan = self.ingest_plan(&stream.name, only).await?;
        let online =
            if plan.views.iter().any(|t| t.view.online) { Some(Arc::clone(self.online_store()?)) } else { None };
        let writer = if options.offline_log {
            Some(self.offline_writer(&format!("the offline log of stream source \"{}\"", stream.name))?)
        } else {
            None
        };
        let flush_every = options.offline_flush_interval.unwrap_or(stream.offline_flush_interval);
        let expanded = expand_source(stream)?;
        let group = expanded.group_or_default(self.project());
        let mut stats = IngestStats { source: stream.name.clone(), ..Default::default() };
        let Some(opened) = open_consumer(factory, &expanded, &group, consumer_name, options, &mut stats, stop).await?
        else {
            return Ok(stats);
        };
        tracing::info!(source = %stream.name, consumer = %opened.describe(), group, "ingest: consuming");
        let mut src = Prefetching::new(opened);
        let mut dead = match expanded.dead_letter_target() {
            DeadLetterTarget::File(p) => {
                let p = std::path::PathBuf::from(p);
                let base = options.base_dir.as_deref().unwrap_or(&self.config().repo_path);
                DeadLetters::Sink(Box::new(DeadLetterFile::new(if p.is_absolute() { p } else { base.join(p) })))
            }
            DeadLetterTarget::Parquet(p) => {
                let what = format!("the Parquet dead letters of stream source \"{}\"", stream.name);
                // A URL or absolute path as written; a relative one against the same folder as a file's.
                let path = match (&options.base_dir, p.contains("://") || std::path::Path::new(&p).is_absolute()) {
                    (Some(base), false) => base.join(&p).display().to_string(),
                    _ => p,
                };
                DeadLetters::Parquet(
                    Box::new(ParquetDeadLetters::new(&stream.name, &path)?),
                    self.offline_writer(&what)?,
                )
            }
            target => DeadLetters::Sink(factory.open_dead_letters(&expanded, &target).await?),
        };
        let prefix = format!("ingest-{}-", stream.name);
        let mut flushed: HashMap<Arc<str>, Flushed> = match &writer {
            Some(w) => read_flushed(*w, &plan, &prefix, None).await?,
            None => HashMap::new(),
        };
        let compact = CompactRequest::new(stream.name.clone()).with_min_files(options.offline_compact_min_files);
        let mut compacted_at: Option<Instant> = None;
        let mut buffer = OfflineBuffer::default();
        let mut pending: Vec<Message> = Vec::new();
        let mut idle_since = Instant::now();
        let mut last_lag = Instant::now() - Duration::from_secs(60);
        let mut backoff = Duration::from_millis(100);
        // Whether a poll ever succeeded: an idle stop without one is an error.
        let mut reached = false;
        // When the last poll that found the stream drained started: every
        // event published before it has been read.
        let mut caught_up: Option<DateTime<Utc>> = None;
        let mut freshness = Freshness::default();
        let mut first_message: Option<Instant> = None;
        // Time since the first message spent in polls that found nothing:
        // not ingesting (busy_seconds leaves it out).
        let mut idle_polls = Duration::ZERO;
        let mut watermark_written = Instant::now() - Duration::from_secs(3600);
        // When progress was last reported, and how many messages it had.
        let mut reported = (Instant::now(), 0);
        loop {
            let stopping = *stop.borrow();
            let idle = options.stop_when_idle.is_some_and(|d| idle_since.elapsed() >= d);
            if stopping || idle {
                break;
            }
            if let (Some(w), Some(every)) = (writer, options.offline_compact_interval)
                && compacted_at.is_none_or(|t| t.elapsed() >= every)
            {
                compacted_at = Some(Instant::now());
                match w.compact_log(&plan.batch, &compact).await {
                    Ok(done) => {
                        stats.offline_files_merged += done.removed;
                        if done.written > 0 || done.removed > 0 {
                            tracing::info!(
                                source = %stream.name,
                                merged = done.written,
                                removed = done.removed,
                                rows = done.rows,
                                "ingest: offline log compacted"
                            );
                        }
                    }
                    // Small files cost readers time, not correctness: next time.
                    Err(e) => {
                        tracing::warn!(source = %stream.name, error = %e, "ingest: offline log compaction failed")
                    }
                }
            }
            // A schema change is picked up at the registry's cache ttl; what
            // is buffered was decoded for the old one, so it goes first.
            // An unreachable registry only delays this check.
            let version = match self.document().await {
                Ok(doc) => doc.version,
                Err(e) => {
                    tracing::warn!(source = %stream.name, error = %e, "ingest: cannot read the registry; carrying on");
                    plan.version
                }
            };
            if version != plan.version {
                let fresh = self.ingest_plan(&stream.name, only).await?;
                if fresh.same_as(&plan) {
                    // Another write (a watermark, a run record): nothing to re-read.
                    plan.version = fresh.version;
                } else {
                    self.flush_offline(writer, &plan, &mut buffer, &mut flushed, &mut stats).await?;
                    commit(src.consumer().await?, &mut pending, &mut stats).await?;
                    plan = fresh;
                    tracing::info!(source = %stream.name, version, "ingest: definitions changed; views re-read");
                }
            }
            let Some(Polled { at: polled_at, waited, messages, prepared }) =
                src.next(options.max_batch, options.poll_wait, stop).await?
            else {
                continue;
            };
            if let Some(change) = src.consumer().await?.take_reassignment()
                && !apply_reassignment(
                    change,
                    writer,
                    &plan,
                    &prefix,
                    (&mut pending, &mut buffer, &mut flushed, &mut stats, &mut idle_since),
                    stop,
                )
                .await
            {
                src.close().await;
                return Ok(stats);
            }
            let messages = match messages {
                Ok(m) => {
                    backoff = Duration::from_millis(100);
                    reached = true;
                    caught_up = (m.len() < options.max_batch).then_some(polled_at);
                    if m.is_empty() && first_message.is_some() {
                        idle_polls += waited;
                    }
                    m
                }
                Err(e @ Error::InvalidArgument(_)) => {
                    // The consumer lost its claim (another process took its
                    // name or partitions): what is uncommitted is the new
                    // holder's to replay, so nothing more is written here.
                    src.close().await;
                    return Err(e);
                }
                Err(e) => {
                    stats.retries += 1;
                    stats.last_error = Some(e.to_string());
                    tracing::warn!(source = %stream.name, error = %e, "ingest: poll failed; retrying");
                    if let Some(p) = &options.progress {
                        p(&stats);
                    }
                    if sleep_or_stop(backoff, stop).await {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if !messages.is_empty() {
                // The next poll runs while this batch is decoded and written.
                src.prefetch(options.max_batch, options.poll_wait, &plan.schema, &plan.views);
                first_message.get_or_insert_with(Instant::now);
                stats.received += messages.len() as u64;
                // Decoded beside the last write, unless the definitions changed since.
                let prepared = match prepared {
                    Some(task) => Some(task.await.map_err(|e| Error::backend("ingest: the decoding task", e))?),
                    None => None,
                };
                let (decoded, mut encoded) = match prepared {
                    Some(p) if Arc::ptr_eq(&p.schema, &plan.schema) && Arc::ptr_eq(&p.views, &plan.views) => {
                        (p.decoded, p.encoded.ok())
                    }
                    _ => (plan.schema.decode(&messages), None),
                };
                let letters: Vec<(&Message, &str)> =
                    decoded.rejected.iter().map(|(i, why)| (&messages[*i], why.as_str())).collect();
                if !letters.is_empty() {
                    let mut wait = Duration::from_millis(100);
                    while let Err(e) = dead.send(&stream.name, &letters).await {
                        stats.retries += 1;
                        stats.last_error = Some(format!("dead letters to {}: {e}", dead.describe()));
                        tracing::warn!(source = %stream.name, error = %e, "ingest: dead letters not sent; retrying");
                        if let Some(p) = &options.progress {
                            p(&stats);
                        }
                        if sleep_or_stop(wait, stop).await {
                            // Nothing of this batch is committed: a restart replays it.
                            src.close().await;
                            return Ok(stats);
                        }
                        wait = (wait * 2).min(MAX_BACKOFF);
                    }
                    tracing::warn!(
                        source = %stream.name,
                        count = letters.len(),
                        first = letters[0].1,
                        to = %dead.describe(),
                        "ingest: records sent to the dead letters"
                    );
                }
                stats.dead_lettered += letters.len() as u64;
                let positions = EventPositions::of(&messages, &decoded.rows);
                if let Some(online) = &online
                    && decoded.batch.num_rows() > 0
                {
                    let mut wait = Duration::from_millis(100);
                    loop {
                        match self.ingest_online(online, &plan, &decoded.batch, &positions, encoded.take()).await {
                            Ok(()) => break,
                            Err(e) => {
                                stats.retries += 1;
                                stats.last_error = Some(e.to_string());
                                tracing::warn!(source = %stream.name, error = %e, "ingest: online write failed; retrying");
                                if let Some(p) = &options.progress {
                                    p(&stats);
                                }
                                if sleep_or_stop(wait, stop).await {
                                    // Nothing of this batch is committed: a restart replays it.
                                    src.close().await;
                                    return Ok(stats);
                                }
                                wait = (wait * 2).min(MAX_BACKOFF);
                            }
                        }
                    }
                    freshness.record(&decoded.batch, &mut stats);
                }
                stats.ingested += decoded.batch.num_rows() as u64;
                if writer.is_some() {
                    buffer.add(&decoded.batch, &messages, &decoded.rows, &flushed);
                }
                // A commit needs each message's partition and position, not
                // its record: held until the offline flush (60 s by
                // default), the payloads were most of ingestion's memory.
                // The decoding task is done with them: no copy.
                let messages = Arc::try_unwrap(messages).unwrap_or_else(|shared| (*shared).clone());
                pending.extend(messages.into_iter().map(|mut m| {
                    m.payload = Payload::Json(bytes::Bytes::new());
                    m
                }));
                // Idle is counted from the end of the last batch's work: a
                // write slower than `stop_when_idle` is not idleness.
                idle_since = Instant::now();
            }
            let due = buffer.opened.is_some_and(|t| t.elapsed() >= flush_every)
                || buffer.positions.len() + buffer.recovering_positions.len() >= options.offline_flush_rows;
            if writer.is_none() || due || (buffer.opened.is_none() && !pending.is_empty()) {
                // Partitions lost while this loop was not polling (a long
                // online outage outlasting the group's poll interval) are
                // dropped before anything of them is flushed or committed.
                if let Some(change) = src.consumer().await?.take_reassignment()
                    && !apply_reassignment(
                        change,
                        writer,
                        &plan,
                        &prefix,
                        (&mut pending, &mut buffer, &mut flushed, &mut stats, &mut idle_since),
                        stop,
                    )
                    .await
                {
                    src.close().await;
                    return Ok(stats);
                }
                let files = stats.offline_files;
                if let Err(e) = self.flush_offline(writer, &plan, &mut buffer, &mut flushed, &mut stats).await {
                    stats.retries += 1;
                    stats.last_error = Some(e.to_string());
                    tracing::warn!(source = %stream.name, error = %e, "ingest: offline log write failed; retrying");
                    if let Some(p) = &options.progress {
                        p(&stats);
                    }
                    if sleep_or_stop(backoff, stop).await {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                if stats.offline_files > files {
                    crate::ingest::fault_point("ingest-after-offline-flush");
                }
                let before = stats.committed;
                let committed = commit(src.consumer().await?, &mut pending, &mut stats).await.inspect_err(|e| {
                    stats.retries += 1;
                    stats.last_error = Some(e.to_string());
                    tracing::warn!(source = %stream.name, error = %e, "ingest: commit failed; will retry");
                });
                // Caught up and committed: the online views hold every event
                // published before `caught_up`, which their status reads as
                // their watermark (aggregations are complete up to it).
                if let Some(t) = first_message
                    && stats.committed > before
                {
                    stats.busy_seconds = t.elapsed().saturating_sub(idle_polls).as_secs_f64();
                }
                if committed.is_ok()
                    && online.is_some()
                    && watermark_written.elapsed() >= flush_every.max(Duration::from_secs(5))
                {
                    watermark_written = Instant::now();
                    if let Err(e) = self.record_ingest_state(&plan, caught_up, &stats).await {
                        tracing::warn!(source = %stream.name, error = %e, "ingest: could not record its state");
                    }
                }
                if let Some(p) = &options.progress {
                    reported = (Instant::now(), stats.received);
                    freshness.summarize(&mut stats);
                    p(&stats);
                }
            }
            // Commits wait for the offline flush; metrics and the progress
            // line would be as old as that without this.
            if let Some(p) = &options.progress
                && reported.1 != stats.received
                && reported.0.elapsed() >= options.progress_interval
            {
                reported = (Instant::now(), stats.received);
                freshness.summarize(&mut stats);
                p(&stats);
            }
            if last_lag.elapsed() >= Duration::from_secs(5) {
                last_lag = Instant::now();
                if let Ok(lag) = src.consumer().await?.lag().await {
                    stats.lag = lag;
                }
            }
        }
        freshness.summarize(&mut stats);
        // Graceful stop: what was written online reaches the log and is committed.
        self.flush_offline(writer, &plan, &mut buffer, &mut flushed, &mut stats).await?;
        let before = stats.committed;
        let consumer = src.consumer().await?;
        commit(consumer, &mut pending, &mut stats).await?;
        if let Some(t) = first_message
            && stats.committed > before
        {
            stats.busy_seconds = t.elapsed().saturating_sub(idle_polls).as_secs_f64();
        }
        if let Ok(lag) = consumer.lag().await {
            stats.lag = lag;
        }
        if online.is_some() {
            self.record_ingest_state(&plan, caught_up, &stats).await?;
        }
        consumer.close().await?;
        if !reached
            && !*stop.borrow()
            && let Some(e) = &stats.last_error
        {
            return Err(never_read(consumer.describe(), options, &stats, e));
        }
        tracing::info!(
            source = %stream.name,
            received = stats.received,
            ingested = stats.ingested,
            dead_lettered = stats.dead_lettered,
            "ingest: stopped"
        );
        Ok(stats)
    }

    /// Records the ingestion state of the plan's online views and, when
    /// ingestion has caught up at `caught_up`, moves their watermark there
    /// (never back, and never past a view's `ingest_gap`).
    ///
    /// The consumer group's positions are shared by every view of the
    /// stream source, so the events a run limited to some views (`ingest
    /// --views`) commits never reach the others online: their state gets
    /// an `ingest_gap` at this run's oldest event, and their watermark is
    /// put back before it, so that `materialize-incremental` loads them from
    /// the offline log (which clears the gap).
    async fn record_ingest_state(
        &self,
        plan: &SourcePlan,
        caught_up: Option<DateTime<Utc>>,
        stats: &IngestStats,
    ) -> Result<()> {
        let project = self.project().to_owned();
        let views: Vec<String> = plan.views.iter().filter(|t| t.view.online).map(|t| t.view.name.clone()).collect();
        let recorded = crate::registry::IngestState {
            source: plan.stream.name.clone(),
            at: Some(Utc::now()),
            ingested: stats.ingested,
            dead_lettered: stats.dead_lettered,
            lag: stats.lag.clone(),
            freshness_ms: stats.freshness_ms.map(|(p50, p99, _)| (p50, p99)),
        };
        self.registry()
            .update(|doc| {
                let p = doc.projects.entry(project.clone()).or_default();
                let skipped: Vec<String> = p
                    .feature_views
                    .values()
                    .map(|r| &r.spec)
                    .filter(|v| v.online && v.source == plan.stream.name && !views.contains(&v.name))
                    .map(|v| v.name.clone())
                    .collect();
                if let Some(oldest) = stats.oldest_event {
                    let before = oldest - chrono::Duration::microseconds(1);
                    for v in skipped {
                        let state = p.view_state.entry(v).or_default();
                        state.ingest_gap = Some(state.ingest_gap.map_or(oldest, |g| g.min(oldest)));
                        if state.watermark.is_some_and(|w| w > before) {
                            state.watermark = Some(before);
                        }
                    }
                }
                for v in views.iter().filter(|v| p.feature_views.contains_key(*v)) {
                    let state = p.view_state.entry(v.clone()).or_default();
                    // Ingestion does not fill a gap another run left: a materialization does.
                    let cap = caught_up.map(|at| match state.ingest_gap {
                        Some(g) => at.min(g - chrono::Duration::microseconds(1)),
                        None => at,
                    });
                    if let Some(at) = cap
                        && state.watermark.is_none_or(|w| w < at)
                    {
                        state.watermark = Some(at);
                    }
                    if stats.newest_event.is_some() && state.newest_event_ts < stats.newest_event {
                        state.newest_event_ts = stats.newest_event;
                    }
                    state.ingest = Some(recorded.clone());
                }
                Ok(true)
            })
            .await?;
        Ok(())
    }

    /// Writes one decoded batch to every online view of the plan; `encoded`:
    /// its plain views' rows when the decoding task encoded them ([`encode_online`]).
    async fn ingest_online(
        &self,
        online: &Arc<dyn crate::online::OnlineStore>,
        plan: &SourcePlan,
        batch: &RecordBatch,
        positions: &EventPositions,
        encoded: Option<Vec<Option<OnlineRows>>>,
    ) -> Result<()> {
        let ts = batch.column_by_name(LATEST_EVENT_TS).expect("decoded batches carry event times");
        let mut encoded = encoded.map(Vec::into_iter);
        for target in plan.views.iter().filter(|t| t.view.online) {
            let ready = encoded.as_mut().and_then(Iterator::next).flatten();
            if target.view.is_aggregation() {
                let keys: Vec<(&str, &ArrayRef)> = target
                    .join_keys
                    .iter()
                    .map(|k| (k.name.as_str(), batch.column_by_name(&k.name).expect("decoded with the view's keys")))
                    .collect();
                let mut inputs = Vec::new();
                let mut fields = Vec::new();
                for c in target.view.aggregations.iter().filter_map(|a| a.column.as_ref()) {
                    if fields.iter().any(|f: &crate::model::Field| f.name == *c) {
                        continue;
                    }
                    let col = batch.column_by_name(c).expect("decoded with the view's inputs");
                    let t = ValueType::from_arrow(col.data_type()).expect("decoded as a value type");
                    fields.push(crate::model::Field::new(c.clone(), t));
                    inputs.push(Arc::clone(col));
                }
                let events = events_batch(&keys, ts, None, &fields, &inputs)?;
                self.push_tiles(online, target, &events, Some(positions)).await?;
            } else {
                let rows = match ready {
                    Some(rows) => rows,
                    None => encode_plain(target, batch)?,
                };
                crate::ingest::slow_point("ingest-online-write").await;
                online.write(self.project(), &target.online, &rows).await?;
            }
        }
        Ok(())
    }

    /// Writes the buffered events to the batch source, one file per stream
    /// partition (and per hive folder), the file holding the partition's
    /// newest position last.
    async fn flush_offline(
        &self,
        writer: Option<&dyn crate::offline::OfflineWriter>,
        plan: &SourcePlan,
        buffer: &mut OfflineBuffer,
        flushed: &mut HashMap<Arc<str>, Flushed>,
        stats: &mut IngestStats,
    ) -> Result<()> {
        let Some(writer) = writer else {
            return Ok(());
        };
        if buffer.batches.is_empty() && buffer.recovering.is_empty() {
            buffer.opened = None;
            return Ok(());
        }
        let context = format!("the offline log of stream source \"{}\"", plan.stream.name);
        // Rows of an interrupted flush go back under that flush's name.
        if !buffer.recovering.is_empty() {
            for (partition, (parts, _, _)) in by_partition(&buffer.recovering, &buffer.recovering_positions, &context)?
            {
                let Some((first, last)) = flushed.get(&partition).and_then(|f| f.newest_flush) else { continue };
                let name = LogFileName::format(&plan.stream.name, &partition, first, last);
                self.write_log_file(writer, plan, parts, &name, &context, stats).await?;
            }
            buffer.recovering.clear();
            buffer.recovering_positions.clear();
        }
        if !buffer.batches.is_empty() {
            for (partition, (parts, first, last)) in by_partition(&buffer.batches, &buffer.positions, &context)? {
                let name = LogFileName::format(&plan.stream.name, &partition, first, last);
                self.write_log_file(writer, plan, parts, &name, &context, stats).await?;
                let f = flushed.entry(partition).or_default();
                f.last = f.last.max(last);
                f.newest_flush = Some((first, last));
            }
            buffer.batches.clear();
            buffer.positions.clear();
        }
        buffer.opened = None;
        Ok(())
    }

    /// Writes `rows` (decoded columns, in parts) as log file `name`: in the batch
    /// source's column names, split by its `timestamp_partition` folders,
    /// the folder holding the newest event last.
    async fn write_log_file(
        &self,
        writer: &dyn crate::offline::OfflineWriter,
        plan: &SourcePlan,
        rows: Vec<RecordBatch>,
        name: &str,
        context: &str,
        stats: &mut IngestStats,
    ) -> Result<()> {
        let source = &plan.batch;
        let parts: Vec<(Option<String>, Vec<RecordBatch>)> = match &source.timestamp_partition {
            None => vec![(None, rows.iter().map(|b| to_source_names(b, source, context)).collect::<Result<_>>()?)],
            Some(p) => {
                // Per folder: its last row (across the parts) and its rows of each part.
                let mut by_folder: BTreeMap<String, (usize, Vec<Vec<u32>>)> = BTreeMap::new();
                let mut row = 0;
                for (b, batch) in rows.iter().enumerate() {
                    let ts = batch
                        .column_by_name(LATEST_EVENT_TS)
                        .expect("decoded")
                        .as_primitive::<TimestampMicrosecondType>();
                    for i in 0..ts.len() {
                        let at = DateTime::<Utc>::from_timestamp_micros(ts.value(i)).unwrap_or_default();
                        let folder = format!("{}={}", p.column, at.format(&p.format));
                        let e = by_folder.entry(folder).or_insert_with(|| (0, vec![Vec::new(); rows.len()]));
                        e.0 = row;
                        e.1[b].push(i as u32);
                        row += 1;
                    }
                }
                // The folder holding the last row (the newest position) goes last.
                let mut folders: Vec<_> = by_folder.into_iter().collect();
                folders.sort_by_key(|(_, (last, _))| *last);
                let mut out = Vec::with_capacity(folders.len());
                for (folder, (_, idx)) in folders {
                    let mut batches = Vec::new();
                    for (batch, idx) in rows.iter().zip(&idx) {
                        if !idx.is_empty() {
                            batches.push(to_source_names(&take(batch, idx, context)?, source, context)?);
                        }
                    }
                    out.push((Some(folder), batches));
                }
                out
            }
        };
        drop(rows);
        let several = parts.len() > 1;
        for (folder, batches) in parts {
            let n = batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            if writer.append_named(source, folder.as_deref(), name, batches).await? {
                stats.offline_rows += n;
                stats.offline_files += 1;
                if several {
                    crate::ingest::fault_point("ingest-mid-offline-flush");
                }
            }
        }
        Ok(())
    }
}

/// Where an ingest loop's dead letters go: a sink taking JSON letters (a
/// file, the broker), or Parquet files through the offline store's writer.
enum DeadLetters<'a> {
    Sink(Box<dyn DeadLetterSink>),
    Parquet(Box<ParquetDeadLetters>, &'a dyn crate::offline::OfflineWriter),
}

impl DeadLetters<'_> {
    fn describe(&self) -> String {
        match self {
            Self::Sink(s) => s.describe(),
            Self::Parquet(p, _) => p.describe(),
        }
    }

    /// Delivers `letters` of stream source `source`; durable when it returns.
    async fn send(&mut self, source: &str, letters: &[(&Message, &str)]) -> Result<()> {
        match self {
            Self::Sink(s) => s.send(&encode_letters(source, letters)).await,
            Self::Parquet(p, writer) => p.write(*writer, source, letters).await,
        }
    }
}

/// One partition's rows (in parts) and its first and last positions.
type PartitionRows = (Vec<RecordBatch>, u128, u128);

/// Buffered rows by stream partition, without concatenating them: per
/// partition its rows of each batch (the batch itself where it holds no
/// other partition's) and its first and last positions.
fn by_partition(
    batches: &[RecordBatch],
    positions: &[(Arc<str>, u128)],
    context: &str,
) -> Result<BTreeMap<Arc<str>, PartitionRows>> {
    let mut out: BTreeMap<Arc<str>, PartitionRows> = BTreeMap::new();
    let mut offset = 0;
    for batch in batches {
        let rows = &positions[offset..offset + batch.num_rows()];
        offset += batch.num_rows();
        let mut idx: BTreeMap<&Arc<str>, Vec<u32>> = BTreeMap::new();
        for (i, (p, _)) in rows.iter().enumerate() {
            match idx.get_mut(p) {
                Some(v) => v.push(i as u32),
                None => {
                    idx.insert(p, vec![i as u32]);
                }
            }
        }
        for (p, idx) in idx {
            let part = take(batch, &idx, context)?;
            let (lo, hi) = idx.iter().fold((u128::MAX, 0), |(lo, hi), &i| {
                let at = rows[i as usize].1;
                (lo.min(at), hi.max(at))
            });
            let e = out.entry(Arc::clone(p)).or_insert_with(|| (Vec::new(), lo, hi));
            e.0.push(part);
            e.1 = e.1.min(lo);
            e.2 = e.2.max(hi);
        }
    }
    Ok(out)
}

impl EventPositions {
    /// The positions of the decoded rows (`rows[i]`: the message of row i).
    fn of(messages: &[Message], rows: &[usize]) -> Self {
        let mut out = EventPositions::default();
        let mut index: HashMap<&str, u32> = HashMap::new();
        for &m in rows {
            let p = &messages[m].partition;
            let i = *index.entry(p).or_insert_with(|| {
                out.partitions.push(p.to_string());
                (out.partitions.len() - 1) as u32
            });
            out.rows.push((i, messages[m].position));
        }
        out
    }
}

/// One poll's result: when it began, how long the loop waited for it
/// (less than the poll took when it ran during the previous batch's work),
/// and, for a prefetched poll, its records decoded and encoded.
struct Polled {
    at: DateTime<Utc>,
    waited: Duration,
    messages: Result<Arc<Vec<Message>>>,
    prepared: Option<Preparing>,
}

/// The decoding and encoding of a prefetched batch, under way on a
/// blocking thread of its own.
type Preparing = tokio::task::JoinHandle<Prepared>;

/// A prefetched batch made ready by its decoding task for the plan whose
/// schema and views it names: the loop redoes it if its plan changed since.
struct Prepared {
    schema: Arc<RecordSchema>,
    views: Arc<Vec<WriteTarget>>,
    decoded: Decoded,
    /// The online rows of each online view, in the plan's order (`None`
    /// for aggregation views, whose tiles the loop builds).
    encoded: Result<Vec<Option<OnlineRows>>>,
}

type PollTask =
    tokio::task::JoinHandle<(Box<dyn StreamConsumer>, DateTime<Utc>, Result<Arc<Vec<Message>>>, Option<Preparing>)>;

/// A consumer whose next poll, and the decoding of what it returns, can
/// run while the loop writes the batch before: three stages at once, the
/// write of batch N, the decoding of N+1 (on a blocking thread, started as
/// its poll returns) and the poll of N+2 (the broker round trip and the
/// client's parsing). Each stage takes about as long as the others, so
/// with the decoding inside the poll's task the poll stage set the pace
/// and the broker idled while a batch was decoded. The consumer moves into
/// the poll's task and back; every other use waits for that poll first and
/// keeps its result for [`Prefetching::next`]. A poll's messages are not
/// processed before the batch ahead of them, so positions stay in order;
/// rebalances it saw are reported (`take_reassignment`) once it is back,
/// before any flush or commit.
struct Prefetching {
    consumer: Option<Box<dyn StreamConsumer>>,
    inflight: Option<PollTask>,
    ready: Option<Polled>,
}

impl Prefetching {
    fn new(consumer: Box<dyn StreamConsumer>) -> Self {
        Self { consumer: Some(consumer), inflight: None, ready: None }
    }

    /// Waits for a poll under way and keeps its result.
    async fn settle(&mut self) -> Result<()> {
        if let Some(task) = self.inflight.take() {
            let began = Instant::now();
            let (consumer, at, messages, prepared) =
                task.await.map_err(|e| Error::backend("ingest: the stream poll task", e))?;
            self.consumer = Some(consumer);
            self.ready = Some(Polled { at, waited: began.elapsed(), messages, prepared });
        }
        Ok(())
    }

    /// The consumer, once any poll under way is back.
    async fn consumer(&mut self) -> Result<&mut dyn StreamConsumer> {
        self.settle().await?;
        Ok(self.consumer.as_deref_mut().expect("back from its poll"))
    }

    /// Starts the next poll in the background; its records are decoded
    /// there with `schema` and encoded for `views`' online rows (the loop
    /// does both again if its plan changed): the loop's own work per batch
    /// is then the online write, which sets ingestion's pace.
    fn prefetch(&mut self, max: usize, wait: Duration, schema: &Arc<RecordSchema>, views: &Arc<Vec<WriteTarget>>) {
        if self.inflight.is_some() || self.ready.is_some() {
            return;
        }
        let Some(mut consumer) = self.consumer.take() else { return };
        let (schema, views) = (Arc::clone(schema), Arc::clone(views));
        self.inflight = Some(tokio::spawn(async move {
            let at = Utc::now();
            let messages = consumer.poll(max, wait).await.map(Arc::new);
            let prepared = match &messages {
                Ok(m) if !m.is_empty() => {
                    let m = Arc::clone(m);
                    Some(tokio::task::spawn_blocking(move || {
                        let decoded = schema.decode(&m);
                        let encoded = encode_online(&views, &decoded.batch);
                        Prepared { schema, views, decoded, encoded }
                    }))
                }
                _ => None,
            };
            (consumer, at, messages, prepared)
        }));
    }

    /// The next poll's result: a prefetched one, or a poll now (`None`
    /// when `stop` changed during it).
    async fn next(
        &mut self,
        max: usize,
        wait: Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Polled>> {
        self.settle().await?;
        if let Some(p) = self.ready.take() {
            return Ok(Some(p));
        }
        let consumer = self.consumer.as_deref_mut().expect("back from its poll");
        let at = Utc::now();
        let began = Instant::now();
        let messages = tokio::select! {
            r = consumer.poll(max, wait) => r.map(Arc::new),
            _ = stop.changed() => return Ok(None),
        };
        Ok(Some(Polled { at, waited: began.elapsed(), messages, prepared: None }))
    }

    /// Closes the consumer (after any poll under way), ignoring errors: for
    /// stops that return at once.
    async fn close(&mut self) {
        if let Ok(c) = self.consumer().await {
            let _ = c.close().await;
        }
    }
}

/// The online rows of a decoded batch for each online view of `views`, in
/// their order: `None` for aggregation views (their tiles need the stored
/// state, read by the loop) and when the batch has no rows.
fn encode_online(views: &[WriteTarget], batch: &RecordBatch) -> Result<Vec<Option<OnlineRows>>> {
    views
        .iter()
        .filter(|t| t.view.online)
        .map(
            |t| {
                if t.view.is_aggregation() || batch.num_rows() == 0 {
                    Ok(None)
                } else {
                    encode_plain(t, batch).map(Some)
                }
            },
        )
        .collect()
}

/// A decoded batch as the online rows of plain view `target`.
fn encode_plain(target: &WriteTarget, batch: &RecordBatch) -> Result<OnlineRows> {
    let column = |name: &str, what: &str| {
        batch.column_by_name(name).unwrap_or_else(|| panic!("decoded with the view's {what} \"{name}\""))
    };
    let keys: Vec<(&str, &ArrayRef)> =
        target.join_keys.iter().map(|k| (k.name.as_str(), column(&k.name, "key"))).collect();
    let ts = column(LATEST_EVENT_TS, "event time");
    let features: Vec<ArrayRef> = target.view.schema.iter().map(|f| Arc::clone(column(&f.name, "feature"))).collect();
    target.encode(&keys, ts.as_ref(), &features)
}

/// What the ingest loop holds that a rebalance changes: pending commits,
/// buffered log rows, the log's state per partition, totals, the idle clock.
type LoopState<'a> = (
    &'a mut Vec<Message>,
    &'a mut OfflineBuffer,
    &'a mut HashMap<Arc<str>, Flushed>,
    &'a mut IngestStats,
    &'a mut Instant,
);

/// Applies a rebalance to what the loop holds: a lost partition's
/// uncommitted work (pending commits, buffered log rows) is dropped, as its
/// new owner replays it from the last commit; a gained one's offline log is
/// listed again (another process may have written to it), and the idle
/// clock restarts. False when stopped while the log could not be listed.
async fn apply_reassignment(
    change: crate::ingest::Reassignment,
    writer: Option<&dyn crate::offline::OfflineWriter>,
    plan: &SourcePlan,
    prefix: &str,
    held: LoopState<'_>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let (pending, buffer, flushed, stats, idle_since) = held;
    pending.retain(|m| !change.revoked.contains(&m.partition));
    buffer.drop_partitions(&change.revoked);
    for p in &change.revoked {
        flushed.remove(p);
    }
    if let Some(w) = writer
        && !change.assigned.is_empty()
    {
        let mut wait = Duration::from_millis(100);
        let relisted = loop {
            match read_flushed(w, plan, prefix, Some(&change.assigned)).await {
                Ok(f) => break f,
                Err(e) => {
                    stats.retries += 1;
                    stats.last_error = Some(e.to_string());
                    tracing::warn!(source = %plan.stream.name, error = %e, "ingest: cannot list the offline log; retrying");
                    if sleep_or_stop(wait, stop).await {
                        return false;
                    }
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        };
        // A partition without log files has no entry (offsets start at 0).
        for p in &change.assigned {
            flushed.remove(p);
        }
        flushed.extend(relisted);
    }
    if !change.assigned.is_empty() {
        stats.reassignments += 1;
        // New partitions to read: not idle.
        *idle_since = Instant::now();
    }
    tracing::info!(
        source = %plan.stream.name,
        revoked = ?change.revoked,
        assigned = ?change.assigned,
        "ingest: partitions reassigned"
    );
    true
}

/// The offline log's state per partition (of `only`, or all), from the
/// names of its files.
async fn read_flushed(
    writer: &dyn crate::offline::OfflineWriter,
    plan: &SourcePlan,
    prefix: &str,
    only: Option<&[Arc<str>]>,
) -> Result<HashMap<Arc<str>, Flushed>> {
    let mut flushed: HashMap<Arc<str>, Flushed> = HashMap::new();
    for name in writer.list_named(&plan.batch, prefix).await? {
        if let Some(LogFileName { partition, first, last, .. }) =
            LogFileName::parse(&name).filter(|n| n.source == plan.stream.name)
        {
            if only.is_some_and(|o| !o.iter().any(|p| **p == *partition)) {
                continue;
            }
            let f = flushed.entry(partition.into()).or_default();
            if last > f.last {
                f.last = last;
                f.newest_flush = Some((first, last));
            }
        }
    }
    Ok(flushed)
}

impl OfflineBuffer {
    /// Forgets the buffered rows of `partitions`.
    fn drop_partitions(&mut self, partitions: &[Arc<str>]) {
        if partitions.is_empty() {
            return;
        }
        fn keep(batches: &mut Vec<RecordBatch>, positions: &mut Vec<(Arc<str>, u128)>, drop: &[Arc<str>]) {
            if batches.is_empty() || !positions.iter().any(|(p, _)| drop.contains(p)) {
                return;
            }
            let schema = batches[0].schema();
            let rows = arrow_select::concat::concat_batches(&schema, batches.iter()).expect("same schema");
            let idx: Vec<u32> =
                (0..positions.len() as u32).filter(|&i| !drop.contains(&positions[i as usize].0)).collect();
            let kept = take(&rows, &idx, "the offline log buffer").expect("indices in range");
            positions.retain(|(p, _)| !drop.contains(p));
            batches.clear();
            if kept.num_rows() > 0 {
                batches.push(kept);
            }
        }
        keep(&mut self.batches, &mut self.positions, partitions);
        keep(&mut self.recovering, &mut self.recovering_positions, partitions);
        if self.batches.is_empty() && self.recovering.is_empty() {
            self.opened = None;
        }
    }

    /// Buffers the rows not yet in the log: those of a partition's newest
    /// (maybe interrupted) flush apart, those already logged not at all.
    fn add(&mut self, batch: &RecordBatch, messages: &[Message], rows: &[usize], flushed: &HashMap<Arc<str>, Flushed>) {
        let mut fresh = Vec::new();
        let mut again = Vec::new();
        for (r, &m) in rows.iter().enumerate() {
            let msg = &messages[m];
            match flushed.get(&msg.partition) {
                Some(f) if f.newest_flush.is_some_and(|(a, b)| (a..=b).contains(&msg.position)) => {
                    again.push(r as u32);
                }
                Some(f) if msg.position <= f.last => {}
                _ => fresh.push(r as u32),
            }
        }
        let pick = |idx: &[u32]| take(batch, idx, "the offline log buffer").expect("indices in range");
        if !fresh.is_empty() {
            self.batches.push(pick(&fresh));
            self.positions.extend(fresh.iter().map(|&r| {
                let m = &messages[rows[r as usize]];
                (Arc::clone(&m.partition), m.position)
            }));
        }
        if !again.is_empty() {
            self.recovering.push(pick(&again));
            self.recovering_positions.extend(again.iter().map(|&r| {
                let m = &messages[rows[r as usize]];
                (Arc::clone(&m.partition), m.position)
            }));
        }
        if self.opened.is_none() && (!self.batches.is_empty() || !self.recovering.is_empty()) {
            self.opened = Some(Instant::now());
        }
    }
}

async fn commit(consumer: &mut dyn StreamConsumer, pending: &mut Vec<Message>, stats: &mut IngestStats) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    consumer.commit(pending).await?;
    stats.committed += pending.len() as u64;
    pending.clear();
    Ok(())
}

/// Sleeps `d` unless ingestion is stopped first (then `true`).
/// Joins the source's group, retrying with backoff while the broker cannot
/// be reached (a process started before its broker, or beside a flaky
/// network, waits for it rather than exiting); a refusal (a missing stream,
/// a consumer name in use) ends it at once. `None`: stopped while waiting.
async fn open_consumer(
    factory: &dyn ConsumerFactory,
    source: &StreamSource,
    group: &str,
    consumer_name: &str,
    options: &IngestOptions,
    stats: &mut IngestStats,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Box<dyn StreamConsumer>>> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        let e = match factory.open(source, group, consumer_name).await {
            Ok(c) => return Ok(Some(c)),
            Err(e @ Error::StoreUnavailable { .. }) => e,
            Err(e) => return Err(e),
        };
        stats.retries += 1;
        stats.last_error = Some(e.to_string());
        tracing::warn!(source = %source.name, error = %e, "ingest: cannot join the stream's group; retrying");
        if let Some(p) = &options.progress {
            p(stats);
        }
        if options.stop_when_idle.is_some_and(|d| started.elapsed() >= d) {
            return Err(never_read(source.describe(), options, stats, &e.to_string()));
        }
        if sleep_or_stop(wait, stop).await {
            return Ok(None);
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// `--stop-when-idle` without ever reading from the broker: an error, not "drained".
fn never_read(store: String, options: &IngestOptions, stats: &IngestStats, last_error: &str) -> Error {
    Error::StoreUnavailable {
        store,
        source: format!(
            "stopped after {:?} without ever reading from the broker ({} tries); last error: {last_error}",
            options.stop_when_idle.unwrap_or_default(),
            stats.retries
        )
        .into(),
    }
}

async fn sleep_or_stop(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// The latest per-event freshness samples (event time to visible online, ms).
#[derive(Default)]
struct Freshness {
    samples: std::collections::VecDeque<f64>,
}

impl Freshness {
    const KEPT: usize = 100_000;

    fn record(&mut self, batch: &RecordBatch, stats: &mut IngestStats) {
        let ts = batch.column_by_name(LATEST_EVENT_TS).expect("decoded").as_primitive::<TimestampMicrosecondType>();
        let now = Utc::now().timestamp_micros();
        for t in ts.values().iter() {
            if self.samples.len() == Self::KEPT {
                self.samples.pop_front();
            }
            self.samples.push_back((now - t) as f64 / 1000.0);
        }
        let newest = ts.values().iter().max().copied().and_then(DateTime::from_timestamp_micros);
        stats.newest_event = stats.newest_event.max(newest);
        let oldest = ts.values().iter().min().copied().and_then(DateTime::from_timestamp_micros);
        stats.oldest_event = match (stats.oldest_event, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Puts the quantiles of the kept samples into `stats`: when progress is
    /// reported and at the end, not per batch (sorting 100,000 samples per
    /// batch took 8 % of ingestion's CPU).
    fn summarize(&self, stats: &mut IngestStats) {
        if self.samples.is_empty() {
            return;
        }
        let mut values: Vec<f64> = self.samples.iter().copied().collect();
        let last = values.len() - 1;
        let mut at = |q: f64| *values.select_nth_unstable_by(((last as f64) * q).round() as usize, f64::total_cmp).1;
        stats.freshness_ms = Some((at(0.5), at(0.99), at(1.0)));
    }
}

/// Rows `idx` of `batch`.
fn take(batch: &RecordBatch, idx: &[u32], context: &str) -> Result<RecordBatch> {
    // Every row in order (one stream partition, one folder: the usual
    // flush): the batch itself, not a copy of it.
    if idx.len() == batch.num_rows() && idx.iter().enumerate().all(|(i, &j)| i as u32 == j) {
        return Ok(batch.clone());
    }
    let indices = UInt32Array::from(idx.to_vec());
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| arrow_select::take::take(c, &indices, None))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::data(context, e.to_string()))?;
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| Error::data(context, e.to_string()))
}

/// Decoded columns in the batch source's names: fields through its
/// `field_mapping` backwards, the event time as its `timestamp_field`.
fn to_source_names(rows: &RecordBatch, source: &DataSource, context: &str) -> Result<RecordBatch> {
    let fields: Vec<arrow_schema::Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let name = if f.name() == LATEST_EVENT_TS {
                source.timestamp_field.as_str()
            } else {
                source.source_column(f.name())
            };
            f.as_ref().clone().with_name(name).with_nullable(true)
        })
        .collect();
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), rows.columns().to_vec())
        .map_err(|e| Error::data(context, e.to_string()))
}

/// The source with `${VAR}` references in its connection fields expanded.
fn expand_source(s: &StreamSource) -> Result<StreamSource> {
    let mut out = s.clone();
    for field in [
        &mut out.brokers,
        &mut out.topic,
        &mut out.url,
        &mut out.stream,
        &mut out.subject,
        &mut out.connection_string,
        &mut out.key,
        &mut out.group,
    ] {
        if let Some(v) = field.as_mut() {
            *v = crate::repo::config::expand_env(v)
                .map_err(|e| Error::InvalidArgument(format!("stream source \"{}\": {e}", s.name)))?;
        }
    }
    for (key, v) in out.properties.iter_mut() {
        *v = crate::repo::config::expand_env(v)
            .map_err(|e| Error::InvalidArgument(format!("stream source \"{}\", property {key}: {e}", s.name)))?;
    }
    Ok(out)
}

/// This host's name, the default consumer name (a restarted process on the
/// same host resumes what it had not committed).
fn default_consumer_name() -> String {
    Some(crate::ingest::host_name()).filter(|h| !h.is_empty()).unwrap_or_else(|| "feature-store".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revoked partition's buffered rows, fresh or of a cut flush, go;
    /// the others stay in order.
    #[test]
    fn dropping_partitions_keeps_the_others_rows() {
        use arrow_array::Int64Array;
        let batch = |v: Vec<i64>| {
            RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(v)) as arrow_array::ArrayRef)]).unwrap()
        };
        let (p0, p1): (Arc<str>, Arc<str>) = (Arc::from("0"), Arc::from("1"));
        let mut b = OfflineBuffer {
            batches: vec![batch(vec![10, 11]), batch(vec![12])],
            positions: vec![(Arc::clone(&p0), 5), (Arc::clone(&p1), 7), (Arc::clone(&p0), 6)],
            recovering: vec![batch(vec![20])],
            recovering_positions: vec![(Arc::clone(&p1), 3)],
            opened: Some(Instant::now()),
        };
        b.drop_partitions(std::slice::from_ref(&p1));
        let kept: Vec<i64> = b
            .batches
            .iter()
            .flat_map(|x| x.column(0).as_primitive::<arrow_array::types::Int64Type>().values().to_vec())
            .collect();
        assert_eq!(kept, vec![10, 12]);
        assert_eq!(b.positions, vec![(Arc::clone(&p0), 5), (Arc::clone(&p0), 6)]);
        assert!(b.recovering.is_empty() && b.recovering_positions.is_empty());
        assert!(b.opened.is_some());
        b.drop_partitions(&[p0]);
        assert!(b.batches.is_empty() && b.positions.is_empty() && b.opened.is_none());
    }

    #[test]
    fn buffered_rows_split_by_partition_without_copying_whole_batches() {
        use arrow_array::Int64Array;
        let batch = |v: Vec<i64>| {
            RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(v)) as arrow_array::ArrayRef)]).unwrap()
        };
        let (p0, p1): (Arc<str>, Arc<str>) = (Arc::from("0"), Arc::from("1"));
        let whole = batch(vec![1, 2]);
        let batches = vec![whole.clone(), batch(vec![3, 4, 5])];
        let positions = vec![
            (Arc::clone(&p0), 10),
            (Arc::clone(&p0), 11),
            (Arc::clone(&p1), 7),
            (Arc::clone(&p0), 12),
            (Arc::clone(&p1), 6),
        ];
        let split = super::by_partition(&batches, &positions, "test").unwrap();
        let values = |parts: &[RecordBatch]| -> Vec<i64> {
            parts
                .iter()
                .flat_map(|x| x.column(0).as_primitive::<arrow_array::types::Int64Type>().values().to_vec())
                .collect()
        };
        let (parts, first, last) = &split[&p0];
        assert_eq!((values(parts), *first, *last), (vec![1, 2, 4], 10, 12));
        assert!(Arc::ptr_eq(parts[0].column(0), whole.column(0)), "a batch of one partition is not copied");
        let (parts, first, last) = &split[&p1];
        assert_eq!((values(parts), *first, *last), (vec![3, 5], 6, 7));
        assert_eq!(split.len(), 2);
    }
}
