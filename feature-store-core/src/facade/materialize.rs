//! Offline to online: [`FeatureStore::materialize`],
//! [`FeatureStore::materialize_incremental`] and [`FeatureStore::push`].
//!
//! A view's window is read as the newest row per entity key (the offline
//! store's [`crate::offline::OfflineStore::latest_rows`]), encoded in chunks
//! and written with a bounded number of writes in flight, so memory does not
//! grow with the row count. Online writes never regress (older event times are
//! skipped per key), so rerunning any window, or rerunning after a failure,
//! converges to the contents of one clean run. A view's watermark advances
//! only after all its writes succeeded.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::FeatureStore;
use super::serving::{check_key_column, column_list};
use crate::model::{DataSource, FeatureView, JoinKey};
use crate::offline::{EVENT_CREATED_TS, LATEST_EVENT_TS, LatestRequest};
use crate::online::codec::{ValueEncoder, conform, entity_keys};
use crate::online::{OnlineRows, OnlineStore, OnlineView, WriteStats};
use crate::quality::ValidationReport;
use crate::registry::{RUNS_KEPT, RunOutcome, RunRecord, ViewState};
use crate::{Error, Result, UTC, ValueType, describe_arrow};

/// Progress of a materialization, reported after every completed write.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MaterializeProgress {
    /// The view being written.
    pub view: String,
    /// Its position among the views of the run (0-based).
    pub view_index: usize,
    /// Number of views in the run.
    pub view_count: usize,
    /// Entities written so far for this view.
    pub entities_written: u64,
}

/// Called with progress; must be cheap.
pub type ProgressFn = Arc<dyn Fn(&MaterializeProgress) + Send + Sync>;

/// Options of [`FeatureStore::materialize`] and [`FeatureStore::materialize_incremental`].
#[derive(Clone)]
#[non_exhaustive]
pub struct MaterializeOptions {
    /// Views to materialize; all online views when `None`.
    pub views: Option<Vec<String>>,
    /// Rows per online write.
    pub write_batch_rows: usize,
    /// Writes in flight at once.
    pub max_in_flight: usize,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
    /// Stop at the first view whose validation fails (default: the other views proceed).
    pub stop_on_validation_failure: bool,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        Self {
            views: None,
            write_batch_rows: 1000,
            max_in_flight: 8,
            progress: None,
            stop_on_validation_failure: false,
        }
    }
}

impl fmt::Debug for MaterializeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaterializeOptions")
            .field("views", &self.views)
            .field("write_batch_rows", &self.write_batch_rows)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl MaterializeOptions {
    /// Restricts the run to `views`.
    pub fn with_views<S: Into<String>>(mut self, views: impl IntoIterator<Item = S>) -> Self {
        self.views = Some(views.into_iter().map(Into::into).collect());
        self
    }

    /// Sets a progress callback.
    pub fn with_progress(mut self, progress: impl Fn(&MaterializeProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Stops the run at the first view whose validation fails.
    pub fn with_stop_on_validation_failure(mut self, yes: bool) -> Self {
        self.stop_on_validation_failure = yes;
        self
    }

    /// Sets rows per write and writes in flight (both at least 1).
    pub fn with_batching(mut self, write_batch_rows: usize, max_in_flight: usize) -> Self {
        self.write_batch_rows = write_batch_rows.max(1);
        self.max_in_flight = max_in_flight.max(1);
        self
    }
}

/// What materializing one view did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ViewMaterialization {
    /// The view.
    pub view: String,
    /// Window start (inclusive); `None` is all history.
    pub start: Option<DateTime<Utc>>,
    /// Window end (inclusive).
    pub end: DateTime<Utc>,
    /// Source rows in the window.
    pub rows_read: u64,
    /// Entities whose value was written.
    pub entities_written: u64,
    /// Entities skipped because the online store held a newer value.
    pub skipped_older: u64,
    /// Wall time.
    pub seconds: f64,
    /// How the view's run ended.
    pub outcome: RunOutcome,
    /// The quality gate's report (schema contract and rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationReport>,
    /// For an aggregation view, the online tiles written (`entities_written`
    /// counts them too); `None` for a plain view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiles_written: Option<u64>,
    /// The view's watermark when the window started after it: the watermark
    /// stays there, since the gap between was never loaded (an incremental
    /// run fills it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark_kept: Option<DateTime<Utc>>,
}

/// What a materialization run did, per view.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct MaterializeReport {
    /// Shared by the run records of every view of this run.
    pub run_id: String,
    /// Per view, in run order.
    pub views: Vec<ViewMaterialization>,
    /// Wall time of the run.
    pub seconds: f64,
}

impl MaterializeReport {
    /// Source rows read over all views.
    pub fn rows_read(&self) -> u64 {
        self.views.iter().map(|v| v.rows_read).sum()
    }

    /// Entities written over all views.
    pub fn entities_written(&self) -> u64 {
        self.views.iter().map(|v| v.entities_written).sum()
    }

    /// Views whose window failed validation (nothing written, watermark unchanged).
    pub fn failed_views(&self) -> Vec<&ViewMaterialization> {
        self.views.iter().filter(|v| matches!(v.outcome, RunOutcome::ValidationFailed | RunOutcome::Failed)).collect()
    }
}

fn push_run(state: &mut ViewState, run: RunRecord) {
    state.runs.push(run);
    let excess = state.runs.len().saturating_sub(RUNS_KEPT);
    state.runs.drain(..excess);
}

/// A run id that sorts by time: `20261122T083015Z-1a2b3c`.
fn new_run_id() -> String {
    let now = Utc::now();
    let salt = (now.timestamp_subsec_nanos() as u64) ^ (u64::from(std::process::id()) << 20);
    format!("{}-{:06x}", now.format("%Y%m%dT%H%M%SZ"), salt & 0xff_ffff)
}

/// Where [`FeatureStore::push`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PushMode {
    /// The online store only.
    #[default]
    Online,
    /// The offline store only (a new Parquet file under the source's folder).
    Offline,
    /// Both: offline first, then online; when the online write fails, a
    /// materialization of the rows' time range serves them (a second push
    /// would add them to the source twice).
    OnlineAndOffline,
}

/// A view prepared for writing: names and types resolved once.
pub(crate) struct WriteTarget {
    pub(crate) view: FeatureView,
    pub(crate) join_keys: Vec<JoinKey>,
    /// The view's online table and ttl.
    pub(crate) online: OnlineView,
}

impl WriteTarget {
    fn features(&self) -> Vec<String> {
        self.view.schema.iter().map(|f| f.name.clone()).collect()
    }

    /// Encodes rows whose key columns, event times and features are already
    /// in the view's types; rows with a null key or time are skipped.
    pub(crate) fn encode(
        &self,
        keys: &[(&str, &ArrayRef)],
        event_ts: &dyn Array,
        features: &[ArrayRef],
    ) -> Result<OnlineRows> {
        let rows = event_ts.len();
        let entity = entity_keys(keys, rows)?;
        let ts = event_ts.as_primitive::<TimestampMicrosecondType>();
        let encoders: Vec<ValueEncoder<'_>> =
            features.iter().zip(&self.view.schema).map(|(c, f)| ValueEncoder::new(c.as_ref(), &f.dtype)).collect();
        let mut out = OnlineRows::new(self.features());
        for (i, key) in entity.into_iter().enumerate() {
            let Some(key) = key else { continue };
            if ts.is_null(i) {
                continue;
            }
            out.begin_row(key, ts.value(i));
            for e in &encoders {
                out.push_with(|buf| e.encode(i, buf));
            }
        }
        Ok(out)
    }
}

impl FeatureStore {
    fn online_target(&self, doc: &crate::registry::RegistryDocument, name: &str) -> Result<(WriteTarget, DataSource)> {
        self.write_target(doc, name, true)
    }

    /// The view's write target; `online` refuses views not served online.
    pub(crate) fn write_target(
        &self,
        doc: &crate::registry::RegistryDocument,
        name: &str,
        online: bool,
    ) -> Result<(WriteTarget, DataSource)> {
        let project = doc.project(self.project());
        let view = project.feature_view(name)?.clone();
        if online && !view.online {
            return Err(Error::InvalidArgument(format!(
                "feature view \"{name}\" is not served online (online: false); set online: true to materialize or push it"
            )));
        }
        let source = project.data_source(&view.source)?.clone();
        let join_keys = project.join_keys(&view)?;
        let online = OnlineView::new(project.online_table(&view.name), view.ttl);
        Ok((WriteTarget { view, join_keys, online }, source))
    }

    fn views_to_run(
        &self,
        doc: &crate::registry::RegistryDocument,
        options: &MaterializeOptions,
    ) -> Result<Vec<String>> {
        let project = doc.project(self.project());
        match &options.views {
            Some(v) if v.is_empty() => Err(Error::InvalidArgument("no feature views named".into())),
            Some(v) => {
                // A view named twice runs once (in its first position).
                let mut names: Vec<String> = Vec::with_capacity(v.len());
                for name in v {
                    project.feature_view(name)?;
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
                Ok(names)
            }
            None => {
                let all: Vec<String> = project
                    .registry()
                    .feature_views
                    .values()
                    .filter(|r| r.spec.online)
                    .map(|r| r.spec.name.clone())
                    .collect();
                if all.is_empty() {
                    return Err(Error::InvalidArgument(format!(
                        "project \"{}\" has no online feature views; run `feature-store apply` (`store.apply()` in Python) first",
                        self.project()
                    )));
                }
                Ok(all)
            }
        }
    }

    /// Writes the newest value per entity with event time in `[start, end]`
    /// (both inclusive, as in Feast) of each view to the online store, then
    /// advances each view's watermark to `end` (never backwards).
    pub async fn materialize(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        options: &MaterializeOptions,
    ) -> Result<MaterializeReport> {
        if start > end {
            return Err(Error::InvalidArgument(format!("materialize window starts ({start}) after it ends ({end})")));
        }
        self.run_materialization(end, options, |_, _| Some(start)).await
    }

    /// Materializes each view from its watermark to `end`; a view never
    /// materialized starts at `end - ttl`, or reads all history without a ttl
    /// (an aggregation view: its longest window plus an interval).
    pub async fn materialize_incremental(
        &self,
        end: DateTime<Utc>,
        options: &MaterializeOptions,
    ) -> Result<MaterializeReport> {
        self.run_materialization(end, options, |view, state| match state.and_then(|s| s.watermark) {
            Some(w) => Some(w),
            // An aggregation view needs the tiles of its longest window only.
            None if view.is_aggregation() => {
                let longest = view.aggregations.iter().map(|a| a.window).max().unwrap_or_default();
                let back = longest + view.aggregation_interval.unwrap_or_default();
                chrono::Duration::from_std(back).ok().and_then(|t| end.checked_sub_signed(t))
            }
            None => {
                view.ttl.and_then(|ttl| chrono::Duration::from_std(ttl).ok()).and_then(|t| end.checked_sub_signed(t))
            }
        })
        .await
    }

    async fn run_materialization(
        &self,
        end: DateTime<Utc>,
        options: &MaterializeOptions,
        start_of: impl Fn(&FeatureView, Option<&crate::registry::ViewState>) -> Option<DateTime<Utc>>,
    ) -> Result<MaterializeReport> {
        let began = Instant::now();
        let online = Arc::clone(self.online_store()?);
        let doc = self.registry().refresh().await?;
        let names = self.views_to_run(&doc, options)?;
        let run_id = new_run_id();
        let mut report = MaterializeReport { run_id: run_id.clone(), views: Vec::new(), seconds: 0.0 };
        for (index, name) in names.iter().enumerate() {
            let (target, source) = self.online_target(&doc, name)?;
            let state = doc.project(self.project()).registry().view_state.get(name);
            let start = start_of(&target.view, state);
            if start.is_some_and(|s| s > end) {
                // Already materialized past `end`: nothing to read. (Only an
                // incremental run gets here: `materialize` refuses such windows.)
                report.views.push(ViewMaterialization {
                    view: name.clone(),
                    start,
                    end,
                    rows_read: 0,
                    entities_written: 0,
                    skipped_older: 0,
                    seconds: 0.0,
                    outcome: RunOutcome::UpToDate,
                    validation: None,
                    tiles_written: None,
                    watermark_kept: None,
                });
                continue;
            }
            let started_at = Utc::now();
            let view_began = Instant::now();
            let mut run = RunRecord {
                run_id: run_id.clone(),
                started_at,
                start,
                end,
                rows_read: 0,
                entities_written: 0,
                validation_passed: None,
                failed_rules: vec![],
                seconds: 0.0,
                outcome: RunOutcome::Failed,
                error: None,
            };
            // An aggregation view's tiles are computed from its events and
            // have no gate; a plain view passes the gate first.
            let aggregation = target.view.is_aggregation();
            let validation = if aggregation {
                None
            } else {
                // The gate: the schema contract always, the view's rules when it has any.
                let previous = state.and_then(|s| crate::quality::previous_run(&s.runs, start, end));
                let reference = state.and_then(|s| s.profile.as_ref());
                let validation = match self
                    .check_window(&target.view, &source, &target.join_keys, start, end, previous, reference)
                    .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        run.error = Some(e.to_string());
                        run.seconds = view_began.elapsed().as_secs_f64();
                        self.record_run(name, run).await;
                        return Err(e);
                    }
                };
                if !target.view.validation.is_empty() || !validation.passed() {
                    run.validation_passed = Some(validation.passed());
                    run.failed_rules = validation
                        .failures()
                        .map(|r| r.feature.as_ref().map_or_else(|| r.rule.clone(), |f| format!("{} {f}", r.rule)))
                        .collect();
                }
                if !validation.passed() {
                    tracing::warn!(
                        project = self.project(),
                        view = %name,
                        failed = ?run.failed_rules,
                        "materialize: validation failed; nothing written for this view"
                    );
                    run.rows_read = validation.rows;
                    run.outcome = RunOutcome::ValidationFailed;
                    run.seconds = view_began.elapsed().as_secs_f64();
                    self.record_run(name, run).await;
                    report.views.push(ViewMaterialization {
                        view: name.clone(),
                        start,
                        end,
                        rows_read: validation.rows,
                        entities_written: 0,
                        skipped_older: 0,
                        seconds: view_began.elapsed().as_secs_f64(),
                        outcome: RunOutcome::ValidationFailed,
                        validation: Some(validation),
                        tiles_written: None,
                        watermark_kept: None,
                    });
                    if options.stop_on_validation_failure {
                        break;
                    }
                    continue;
                }
                Some(validation)
            };
            let written = if aggregation {
                self.materialize_tiles(&online, &target, source, start, end).await
            } else {
                self.materialize_view(&online, &target, source, start, end, index, names.len(), options).await
            };
            let (rows_read, stats, newest) = match written {
                Ok(w) => w,
                Err(e) => {
                    // The error is returned (and printed by the CLI): logged, not warned twice.
                    tracing::info!(project = self.project(), view = %name, error = %e, "materialize: view failed");
                    run.error = Some(e.to_string());
                    run.seconds = view_began.elapsed().as_secs_f64();
                    self.record_run(name, run).await;
                    return Err(e);
                }
            };
            run.rows_read = rows_read;
            run.entities_written = stats.written;
            run.outcome = RunOutcome::Succeeded;
            run.seconds = view_began.elapsed().as_secs_f64();
            tracing::info!(
                project = self.project(),
                view = %name,
                start = ?start,
                %end,
                rows_read,
                entities_written = stats.written,
                skipped_older = stats.skipped_older,
                aggregation,
                seconds = run.seconds,
                "materialize: view written"
            );
            let watermark_kept = self.advance_watermark(name, start, end, run, newest).await?;
            report.views.push(ViewMaterialization {
                view: name.clone(),
                start,
                end,
                rows_read,
                entities_written: stats.written,
                skipped_older: stats.skipped_older,
                seconds: view_began.elapsed().as_secs_f64(),
                outcome: RunOutcome::Succeeded,
                validation: validation.filter(|v| !target.view.validation.is_empty() || !v.warnings.is_empty()),
                tiles_written: aggregation.then_some(stats.written),
                watermark_kept,
            });
        }
        report.seconds = began.elapsed().as_secs_f64();
        tracing::info!(
            project = self.project(),
            run_id = %report.run_id,
            views = report.views.len(),
            rows_read = report.rows_read(),
            entities_written = report.entities_written(),
            seconds = report.seconds,
            "materialize: run finished"
        );
        Ok(report)
    }

    /// Remembers a run that advanced nothing; best effort, as the run's own
    /// error (if any) is what the caller needs to see.
    async fn record_run(&self, view: &str, run: RunRecord) {
        let project = self.project().to_owned();
        let _ = self
            .registry()
            .update(|doc| {
                let p = doc.projects.entry(project.clone()).or_default();
                if !p.feature_views.contains_key(view) {
                    return Ok(false);
                }
                push_run(p.view_state.entry(view.to_owned()).or_default(), run.clone());
                Ok(true)
            })
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn materialize_view(
        &self,
        online: &Arc<dyn OnlineStore>,
        target: &WriteTarget,
        source: DataSource,
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
        view_index: usize,
        view_count: usize,
        options: &MaterializeOptions,
    ) -> Result<(u64, WriteStats, Option<DateTime<Utc>>)> {
        let request = LatestRequest::new(target.view.clone(), source, target.join_keys.clone(), start, end);
        let latest = self.offline_store()?.latest_rows(request).await?;
        let mut stream = latest.stream;
        let project = self.project().to_owned();
        let mut stats = WriteStats::default();
        let mut newest_us: Option<i64> = None;
        let mut in_flight = FuturesUnordered::new();
        let report = |stats: &WriteStats| {
            if let Some(p) = &options.progress {
                p(&MaterializeProgress {
                    view: target.view.name.clone(),
                    view_index,
                    view_count,
                    entities_written: stats.written + stats.skipped_older,
                });
            }
        };
        while let Some(batch) = stream.try_next().await? {
            let schema = batch.schema();
            let column = |name: &str| {
                schema.index_of(name).map(|i| batch.column(i)).map_err(|_| {
                    Error::data(format!("latest rows of \"{}\"", target.view.name), format!("no column \"{name}\""))
                })
            };
            let keys: Vec<(&str, &ArrayRef)> =
                target.join_keys.iter().map(|k| Ok((k.name.as_str(), column(&k.name)?))).collect::<Result<_>>()?;
            let ts = column(LATEST_EVENT_TS)?;
            let times = ts.as_primitive::<TimestampMicrosecondType>();
            if let Some(max) = times.iter().flatten().max() {
                newest_us = newest_us.max(Some(max));
            }
            let features: Vec<ArrayRef> =
                target.view.schema.iter().map(|f| column(&f.name).cloned()).collect::<Result<_>>()?;
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = options.write_batch_rows.min(batch.num_rows() - offset);
                let slice_keys: Vec<ArrayRef> = keys.iter().map(|(_, c)| c.slice(offset, len)).collect();
                let named: Vec<(&str, &ArrayRef)> = keys.iter().map(|(n, _)| *n).zip(&slice_keys).collect();
                let slice_features: Vec<ArrayRef> = features.iter().map(|c| c.slice(offset, len)).collect();
                let rows = target.encode(&named, ts.slice(offset, len).as_ref(), &slice_features)?;
                offset += len;
                while in_flight.len() >= options.max_in_flight {
                    if let Some(done) = in_flight.next().await {
                        stats += done?;
                        report(&stats);
                    }
                }
                let online = Arc::clone(online);
                let project = project.clone();
                let view = target.online.clone();
                in_flight.push(async move { online.write(&project, &view, &rows).await });
            }
        }
        while let Some(done) = in_flight.next().await {
            stats += done?;
            report(&stats);
        }
        Ok((latest.rows_read.load(Ordering::Relaxed), stats, newest_us.and_then(DateTime::from_timestamp_micros)))
    }

    /// Moves the view's watermark to `end`, unless the window started after
    /// it (a gap never loaded): then returns the kept watermark.
    async fn advance_watermark(
        &self,
        view: &str,
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
        run: RunRecord,
        newest: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>> {
        let project = self.project().to_owned();
        let now = Utc::now();
        let mut kept = None;
        self.registry()
            .update(|doc| {
                let p = doc.projects.entry(project.clone()).or_default();
                if !p.feature_views.contains_key(view) {
                    return Err(Error::NotFound {
                        kind: "feature view",
                        name: view.to_owned(),
                        hint: Some("it was removed while being materialized".into()),
                    });
                }
                let state = p.view_state.entry(view.to_owned()).or_default();
                kept = None;
                match state.watermark {
                    // Windows are inclusive: one starting a microsecond
                    // after the watermark continues it.
                    Some(w) if start.is_some_and(|s| s > w + chrono::Duration::microseconds(1)) => kept = Some(w),
                    Some(w) if w >= end => {}
                    _ => state.watermark = Some(end),
                }
                if newest.is_some() && state.newest_event_ts < newest {
                    state.newest_event_ts = newest;
                }
                // A run over the events a limited ingestion skipped loads them.
                if state.ingest_gap.is_some_and(|g| start.is_none_or(|s| s <= g) && end >= g) {
                    state.ingest_gap = None;
                }
                state.last_materialized_at = Some(now);
                push_run(state, run.clone());
                Ok(true)
            })
            .await?;
        if let Some(w) = kept {
            tracing::warn!(
                project = self.project(),
                view,
                watermark = %w,
                "materialize: the window starts after the watermark; kept it (run materialize-incremental to fill the gap)"
            );
        }
        Ok(kept)
    }

    /// The registry's type of every column a push to `view` may carry: join
    /// keys, the source's timestamps, and the features of every view reading
    /// the same source (an offline push carries those too). Readers of text
    /// (CSV, JSON) use it so `1001` is an int64 key and not a float.
    pub async fn push_column_types(&self, view: &str) -> Result<HashMap<String, DataType>> {
        let doc = self.document().await?;
        let project = doc.project(self.project());
        let spec = project.feature_view(view)?;
        let source = project.data_source(&spec.source)?;
        let mut types = HashMap::new();
        for k in project.join_keys(spec)? {
            if let Some(t) = &k.dtype {
                types.insert(k.name.clone(), t.to_arrow());
            }
        }
        types.insert(source.timestamp_field.clone(), crate::timestamp_type());
        if let Some(created) = &source.created_timestamp_field {
            types.insert(created.clone(), crate::timestamp_type());
        }
        for other in project
            .registry()
            .feature_views
            .values()
            .map(|r| &r.spec)
            .filter(|v| project.same_source(&v.source, &spec.source))
        {
            for f in &other.schema {
                types.entry(f.name.clone()).or_insert_with(|| f.dtype.to_arrow());
            }
        }
        Ok(types)
    }

    /// Writes `batch` of fresh values to the view's online store and/or offline
    /// source. Columns are the view's join keys, its source's timestamp field
    /// (optionally the created-timestamp field) and every feature; types must
    /// match the registry (lossless widenings accepted), unknown columns are errors.
    pub async fn push(&self, view: &str, batch: &RecordBatch, mode: PushMode) -> Result<WriteStats> {
        let doc = self.document().await?;
        // An offline-only push needs no online serving.
        let (target, source) = self.write_target(&doc, view, mode != PushMode::Offline)?;
        let context = format!("push to feature view \"{view}\"");
        // Checked before anything is written, so a store that cannot take
        // the offline part refuses the push instead of leaving it online only.
        let offline_writer = if mode == PushMode::Online { None } else { Some(self.offline_writer(&context)?) };
        let schema = batch.schema();
        let get = |name: &str, what: &str| {
            schema.index_of(name).map(|i| batch.column(i)).map_err(|_| {
                Error::data(&context, format!("missing {what} column \"{name}\"; given: {}", column_list(&schema)))
            })
        };
        let mut keys = Vec::new();
        for k in &target.join_keys {
            let col = get(&k.name, "join key")?;
            check_key_column(k, col, &context)?;
            keys.push((k.name.as_str(), col));
        }
        let ts_col = get(&source.timestamp_field, "timestamp")?;
        let ts = micros_utc(ts_col, &source.timestamp_field, &context)?;
        // Aggregation views take their input columns, in the source's types.
        let project = doc.project(self.project());
        let readers: Vec<&FeatureView> = if mode == PushMode::Online {
            vec![&target.view]
        } else {
            project
                .registry()
                .feature_views
                .values()
                .map(|r| &r.spec)
                .filter(|v| project.same_source(&v.source, &source.name))
                .collect()
        };
        let source_types = if readers.iter().any(|v| v.is_aggregation()) {
            let schema = self.offline_store()?.source_schema(&source).await?;
            schema
                .schema
                .fields()
                .iter()
                .filter_map(|f| Some((source.mapped_name(f.name()).to_owned(), ValueType::from_arrow(f.data_type())?)))
                .collect()
        } else {
            HashMap::new()
        };
        let pushed = pushed_fields(&target.view, &source_types);
        let mut features = Vec::new();
        for f in &pushed {
            let what = if target.view.is_aggregation() { "aggregated" } else { "feature" };
            features.push(push_column(get(&f.name, what)?, f, &target.view.name, &context)?);
        }
        // An offline push adds rows of the source, which every view reading
        // it sees: a column another view needs, left out, would read as a
        // null newer than that view's real values. So such a push carries
        // those columns too, checked against their views' types.
        let mut shared: Vec<(String, ArrayRef)> = Vec::new();
        if mode != PushMode::Online {
            // (view, feature) of each required column the push lacks, each feature once.
            let mut lacking: Vec<(&str, String)> = Vec::new();
            for other in &readers {
                if other.name == target.view.name {
                    continue;
                }
                for f in &pushed_fields(other, &source_types) {
                    if pushed.iter().any(|p| p.name == f.name) || shared.iter().any(|(n, _)| *n == f.name) {
                        continue;
                    }
                    let Ok(i) = schema.index_of(&f.name) else {
                        if !lacking.iter().any(|(_, l)| *l == f.name) {
                            lacking.push((&other.name, f.name.clone()));
                        }
                        continue;
                    };
                    shared.push((f.name.clone(), push_column(batch.column(i), f, &other.name, &context)?));
                }
            }
            if !lacking.is_empty() {
                return Err(Error::data(
                    &context,
                    format!(
                        "data source \"{}\" is also read by other feature views; an offline push adds rows for all \
                         of them, so it needs their columns too: {}",
                        source.name,
                        lacking.iter().map(|(v, f)| format!("{v}:{f}")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let known = |n: &str| {
            target.join_keys.iter().any(|k| k.name == n)
                || n == source.timestamp_field
                || source.created_timestamp_field.as_deref() == Some(n)
                || pushed.iter().any(|p| p.name == n)
                || shared.iter().any(|(s, _)| s == n)
        };
        if let Some(extra) = schema.fields().iter().find(|f| !known(f.name())) {
            return Err(Error::data(
                &context,
                format!(
                    "column \"{}\" is not a join key, timestamp or {} of the view ({})",
                    extra.name(),
                    if target.view.is_aggregation() { "aggregated column" } else { "feature" },
                    pushed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        // A row without a key or an event time can be neither served nor joined: refuse, don't drop.
        for (name, col) in &keys {
            if let Some(i) = (0..col.len()).find(|i| col.is_null(*i)) {
                return Err(Error::data(&context, format!("row {i} has a null join key \"{name}\"")));
            }
        }
        if let Some(i) = (0..ts.len()).find(|i| ts.is_null(*i)) {
            return Err(Error::data(
                &context,
                format!("row {i} has a null event timestamp (column \"{}\")", source.timestamp_field),
            ));
        }
        // Offline first: the source is the record every view is rebuilt
        // from, so an online write that fails after it is repaired by
        // materializing, while the reverse order could serve values the
        // source never got.
        let rows = batch.num_rows() as u64;
        if mode != PushMode::Online {
            let renamed = to_source_columns(batch, &source, &target, &ts, &pushed, &features, &shared)?;
            offline_writer.expect("taken above for offline pushes").append(&source, renamed).await?;
        }
        let online = match mode {
            PushMode::Offline => return Ok(WriteStats::new(rows, 0)),
            _ => self.online_store()?,
        };
        let written = if target.view.is_aggregation() {
            let created = source
                .created_timestamp_field
                .as_deref()
                .and_then(|name| batch.column_by_name(name).map(|c| micros_utc(c, name, &context)))
                .transpose()?;
            let events = events_batch(&keys, &ts, created, &pushed, &features)?;
            self.push_tiles(online, &target, &events, None).await.map(|_| WriteStats::new(rows, 0))
        } else {
            let encoded = target.encode(&keys, ts.as_ref(), &features)?;
            online.write(self.project(), &target.online, &encoded).await
        };
        written.map_err(|e| match mode {
            PushMode::OnlineAndOffline => Error::backend(
                format!(
                    "push to feature view \"{view}\": the rows were appended to data source \"{}\", but the \
                     online write failed; do not push them again (the source would hold them twice): \
                     materialize their time range to serve them",
                    source.name
                ),
                e,
            ),
            _ => e,
        })
    }
}

/// The value columns a push into `view` carries: a plain view's features,
/// or an aggregation view's input columns typed as in its source (`types`).
fn pushed_fields(view: &FeatureView, types: &HashMap<String, ValueType>) -> Vec<crate::model::Field> {
    if !view.is_aggregation() {
        return view.schema.clone();
    }
    let mut out: Vec<crate::model::Field> = Vec::new();
    for c in view.aggregations.iter().filter_map(|a| a.column.as_ref()) {
        if let Some(t) = types.get(c)
            && !out.iter().any(|f| f.name == *c)
        {
            out.push(crate::model::Field::new(c.clone(), t.clone()));
        }
    }
    out
}

/// A pushed time column in µs UTC, or an error naming it.
fn micros_utc(col: &ArrayRef, name: &str, context: &str) -> Result<ArrayRef> {
    match col.data_type() {
        DataType::Timestamp(_, _) => {
            arrow_cast::cast(col, &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())))
                .map_err(|e| Error::data(context, e.to_string()))
        }
        other => Err(Error::data(context, format!("column \"{name}\" is {}, not a timestamp", describe_arrow(other)))),
    }
}

/// Pushed events in the columns tiles are built from: join keys, event and
/// created times, inputs.
pub(crate) fn events_batch(
    keys: &[(&str, &ArrayRef)],
    ts: &ArrayRef,
    created: Option<ArrayRef>,
    pushed: &[crate::model::Field],
    inputs: &[ArrayRef],
) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (name, col) in keys {
        fields.push(arrow_schema::Field::new(*name, col.data_type().clone(), true));
        columns.push(Arc::clone(col));
    }
    fields.push(arrow_schema::Field::new(LATEST_EVENT_TS, ts.data_type().clone(), true));
    columns.push(Arc::clone(ts));
    if let Some(c) = created {
        fields.push(arrow_schema::Field::new(EVENT_CREATED_TS, c.data_type().clone(), true));
        columns.push(c);
    }
    for (f, col) in pushed.iter().zip(inputs) {
        fields.push(arrow_schema::Field::new(&f.name, col.data_type().clone(), true));
        columns.push(Arc::clone(col));
    }
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)
        .map_err(|e| Error::data("push", e.to_string()))
}

/// A pushed feature column in the declared type of `feature` (of `view`).
fn push_column(col: &ArrayRef, feature: &crate::model::Field, view: &str, context: &str) -> Result<ArrayRef> {
    if let Some(narrowed) = narrow_for_push(col, &feature.dtype, &feature.name, context)? {
        return Ok(narrowed);
    }
    if !feature.dtype.accepts_arrow(col.data_type()) {
        return Err(Error::data(
            context,
            format!(
                "feature \"{}\" is {} but feature view \"{view}\" declares {}",
                feature.name,
                describe_arrow(col.data_type()),
                feature.dtype
            ),
        ));
    }
    conform(col, &feature.dtype)
}

/// pandas and most Python code only make 64-bit numbers, so a push of
/// float64 values to a float32 feature rounds them to float32 (as
/// `astype("float32")` would), and int64 values to an int32 feature are
/// taken when every value fits; a value that does not is an error naming
/// its row, and so is a finite float64 beyond float32's range (it would
/// become an infinity). `None`: no narrowing applies.
fn narrow_for_push(col: &ArrayRef, declared: &ValueType, feature: &str, context: &str) -> Result<Option<ArrayRef>> {
    match (declared, col.data_type()) {
        (ValueType::Float32, DataType::Float64) => {
            let values = col.as_primitive::<arrow_array::types::Float64Type>();
            if let Some(i) = (0..values.len())
                .find(|&i| values.is_valid(i) && values.value(i).is_finite() && (values.value(i) as f32).is_infinite())
            {
                return Err(Error::data(
                    context,
                    format!(
                        "feature \"{feature}\" is declared float32 but row {i} holds {:e}, beyond the float32 range (it would be stored as an infinity); declare it float64",
                        values.value(i)
                    ),
                ));
            }
            Ok(Some(arrow_cast::cast(col, &DataType::Float32).map_err(|e| Error::data(context, e.to_string()))?))
        }
        (ValueType::Int32, DataType::Int64) => {
            let values = col.as_primitive::<arrow_array::types::Int64Type>();
            if let Some(i) = (0..values.len()).find(|&i| values.is_valid(i) && i32::try_from(values.value(i)).is_err())
            {
                return Err(Error::data(
                    context,
                    format!(
                        "feature \"{feature}\" is declared int32 but row {i} holds {}, outside the int32 range",
                        values.value(i)
                    ),
                ));
            }
            Ok(Some(arrow_cast::cast(col, &DataType::Int32).map_err(|e| Error::data(context, e.to_string()))?))
        }
        _ => Ok(None),
    }
}

/// The pushed rows in the source's column names and the view's types.
fn to_source_columns(
    batch: &RecordBatch,
    source: &DataSource,
    target: &WriteTarget,
    ts: &ArrayRef,
    pushed: &[crate::model::Field],
    features: &[ArrayRef],
    shared: &[(String, ArrayRef)],
) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for k in &target.join_keys {
        let col = batch.column_by_name(&k.name).expect("checked");
        let col = match &k.dtype {
            Some(t) if ValueType::from_arrow(col.data_type()).as_ref() != Some(t) => conform(col, t)?,
            _ => Arc::clone(col),
        };
        fields.push(arrow_schema::Field::new(source.source_column(&k.name), col.data_type().clone(), true));
        columns.push(col);
    }
    fields.push(arrow_schema::Field::new(&source.timestamp_field, ts.data_type().clone(), true));
    columns.push(Arc::clone(ts));
    if let Some(c) = source.created_timestamp_field.as_deref().and_then(|c| batch.column_by_name(c)) {
        let name = source.created_timestamp_field.as_deref().expect("present");
        fields.push(arrow_schema::Field::new(name, c.data_type().clone(), true));
        columns.push(Arc::clone(c));
    }
    for (f, col) in pushed.iter().zip(features) {
        fields.push(arrow_schema::Field::new(source.source_column(&f.name), col.data_type().clone(), true));
        columns.push(Arc::clone(col));
    }
    for (name, col) in shared {
        fields.push(arrow_schema::Field::new(source.source_column(name), col.data_type().clone(), true));
        columns.push(Arc::clone(col));
    }
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)
        .map_err(|e| Error::data("push", e.to_string()))
}

#[cfg(test)]
mod tests {
    use arrow_array::{Float64Array, Int64Array};

    use super::*;

    #[test]
    fn push_narrows_64_bit_numbers_only_when_declared_and_in_range() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![Some(0.1), None]));
        let got = narrow_for_push(&floats, &ValueType::Float32, "f", "push").unwrap().unwrap();
        assert_eq!(got.data_type(), &DataType::Float32);
        assert!(got.is_null(1));
        assert!(narrow_for_push(&floats, &ValueType::Float64, "f", "push").unwrap().is_none());

        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None, Some(-(1 << 31))]));
        let got = narrow_for_push(&ints, &ValueType::Int32, "n", "push").unwrap().unwrap();
        assert_eq!(got.as_primitive::<arrow_array::types::Int32Type>().value(2), i32::MIN);
        let big: ArrayRef = Arc::new(Int64Array::from(vec![1, 1 << 40]));
        let e = narrow_for_push(&big, &ValueType::Int32, "n", "push").unwrap_err().to_string();
        assert!(e.contains("row 1 holds 1099511627776, outside the int32 range"), "{e}");
    }
}
