//! Plans a historical request: the entity input, one right-side scan per view
//! with projection and time-bound pushdown, and a chain of [`AsOfJoinExec`]s.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::logical_expr::{Expr, cast, ident, lit};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::{CsvReadOptions, DataFrame, ParquetReadOptions, SessionContext};
use feature_store_core::historical::{BatchStream, EntityInput, ViewRequest, check_output_names};
use feature_store_core::model::DataSource;
use feature_store_core::{Error as CoreError, Result as CoreResult, ValueType, describe_arrow};
use futures::{StreamExt, TryStreamExt};

use super::asof_join::{AggColumn, AsOfJoinExec, AsOfSpec, ZipExec};
use super::on_demand::OnDemandExec;
use super::timestamps::{finer, instant_range, unit_nanos};
use super::{df_error, retrieval_batch_rows, session_with_batch_rows};
use crate::files::ResolvedSource;
use feature_store_core::on_demand::OnDemandProjection;

/// Entity time range, for pruning feature rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    min: i128,
    max: i128,
}

/// A planned retrieval: the physical plan and the task context it runs in.
/// Executing it gives the retrieval's rows; afterwards its operators'
/// metrics say where time and memory went (see [`Self::display_with_metrics`]).
/// A plan runs once, so its metrics describe one run.
pub struct RetrievalPlan {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    /// Runs on this cluster instead of in this process.
    #[cfg(feature = "distributed")]
    cluster: Option<super::distributed::Cluster>,
    /// When planning began: the logged duration covers listing and planning too.
    began: std::time::Instant,
    executed: std::sync::atomic::AtomicBool,
    /// The views' files: a decoding failure is followed by a search for the file.
    files: Arc<Vec<crate::files::SourceFiles>>,
}

impl fmt::Debug for RetrievalPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetrievalPlan").field("plan", &self.plan.name()).finish_non_exhaustive()
    }
}

impl RetrievalPlan {
    /// The physical plan: the entity scan under a chain of [`AsOfJoinExec`]s,
    /// one per view; under a memory limit, when the entity rows can be read
    /// again, the views side by side under a [`ZipExec`] instead.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// Runs the plan; the rows stream in entity-row order. When the stream
    /// ends, each view's join metrics go to `tracing` (debug) and the totals
    /// (info), so a subscriber sees where a retrieval spent its time; a
    /// stream that fails logs the failure instead. A second call is an
    /// error: plan the retrieval again.
    pub fn execute(&self) -> CoreResult<BatchStream> {
        use std::sync::atomic::Ordering;
        if self.executed.swap(true, Ordering::SeqCst) {
            return Err(CoreError::InvalidArgument(
                "this retrieval plan has already run (its metrics describe that run); plan the retrieval again".into(),
            ));
        }
        let schema = self.plan.schema();
        #[cfg(feature = "distributed")]
        let stream: SendableRecordBatchStream = match &self.cluster {
            Some(cluster) => super::distributed::stream(cluster.clone(), Arc::clone(&self.plan)),
            None => execute_stream(Arc::clone(&self.plan), Arc::clone(&self.task))
                .map_err(|e| df_error("historical retrieval", e))?,
        };
        #[cfg(not(feature = "distributed"))]
        let stream = execute_stream(Arc::clone(&self.plan), Arc::clone(&self.task))
            .map_err(|e| df_error("historical retrieval", e))?;
        let rows = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (counter, fail_flag) = (Arc::clone(&rows), Arc::clone(&failed));
        let stream = stream.map_err(|e| df_error("historical retrieval", e));
        let stream =
            crate::unreadable::naming_files(BatchStream::new(schema, Box::pin(stream)), Arc::clone(&self.files));
        let schema = stream.schema();
        let stream = stream.inspect(move |b| match b {
            Ok(b) => {
                counter.fetch_add(b.num_rows(), Ordering::Relaxed);
            }
            Err(_) => fail_flag.store(true, Ordering::Relaxed),
        });
        let plan = Arc::clone(&self.plan);
        let began = self.began;
        let finished = futures::stream::once(async move {
            let seconds = began.elapsed().as_secs_f64();
            if failed.load(Ordering::Relaxed) {
                tracing::info!(rows = rows.load(Ordering::Relaxed), seconds, "historical: retrieval failed");
            } else {
                log_finished(&plan, rows.load(Ordering::Relaxed), seconds);
            }
        })
        .filter_map(|()| futures::future::ready(None));
        Ok(BatchStream::new(schema, Box::pin(stream.chain(finished))))
    }

    /// Counts the run's time from `began` (before the sources were listed).
    pub(crate) fn started_at(mut self, began: std::time::Instant) -> Self {
        self.began = began;
        self
    }

    /// The plan with each operator's metrics as they stand: after the stream
    /// has ended, what `EXPLAIN ANALYZE` shows.
    pub fn display_with_metrics(&self) -> String {
        datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(self.plan.as_ref())
            .indent(true)
            .to_string()
    }

    /// Metric `name` (see [`super::ASOF_METRIC_NAMES`]) summed over the plan's as-of joins.
    pub fn asof_metric(&self, name: &str) -> usize {
        fn walk(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
            let own = if plan.name() == "AsOfJoinExec" {
                let metrics = plan.metrics().map(|m| m.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
                metrics.iter().filter(|m| m.value().name() == name).map(|m| m.value().as_usize()).sum()
            } else {
                0
            };
            own + plan.children().into_iter().map(|c| walk(c, name)).sum::<usize>()
        }
        walk(&self.plan, name)
    }
}

/// What the planner needs of the store's settings, as plain values.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub(crate) memory_limit: Option<usize>,
    pub(crate) target_partitions: usize,
    /// Retrievals run on this cluster.
    #[cfg(feature = "distributed")]
    pub(crate) cluster: Option<super::distributed::Cluster>,
}

/// Entity rows with any files or sources they read already listed.
pub(crate) enum ResolvedEntities {
    /// Batches or a stream, as given.
    Input(EntityInput),
    /// A Parquet or CSV file, folder or glob, listed.
    Files { path: String, files: crate::files::SourceFiles },
    /// A SQL query over the project's sources, each listed.
    Sql { query: String, sources: Vec<ResolvedSource> },
}

/// Reports a finished retrieval's join metrics through `tracing`.
fn log_finished(plan: &Arc<dyn ExecutionPlan>, rows: usize, seconds: f64) {
    // Views in request order: a chain's first view is its innermost node.
    fn joins(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<Arc<dyn ExecutionPlan>>) {
        plan.children().into_iter().for_each(|c| joins(c, out));
        if plan.is::<AsOfJoinExec>() {
            out.push(Arc::clone(plan));
        }
    }
    let mut found = Vec::new();
    joins(plan, &mut found);
    let mut spilled = 0;
    for node in &found {
        let metrics = node.metrics().map(|m| m.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        let get = |name: &str| -> usize {
            metrics.iter().filter(|m| m.value().name() == name).map(|m| m.value().as_usize()).sum()
        };
        spilled += get("spill_count");
        let view = node.downcast_ref::<AsOfJoinExec>().map_or("?", AsOfJoinExec::view);
        tracing::debug!(
            view,
            entity_rows = get("entity_rows"),
            feature_rows = get("feature_rows"),
            build_seconds = get("build_time") as f64 / 1e9,
            probe_seconds = get("probe_time") as f64 / 1e9,
            spill_seconds = get("spill_time") as f64 / 1e9,
            build_bytes = get("build_mem_used"),
            spill_files = get("spill_count"),
            spilled_bytes = get("spilled_bytes"),
            "historical: view joined"
        );
    }
    // The views' columns come from a ZipExec, under a folder writer and the
    // on-demand features' node if any.
    let mut top = Arc::clone(plan);
    if top.is::<super::folder_writer::FolderWriterExec>() {
        top = Arc::clone(top.children()[0]);
    }
    let below = top.downcast_ref::<OnDemandExec>().map(|on_demand| {
        let metrics = on_demand.metrics().map(|m| m.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        let compute: usize =
            metrics.iter().filter(|m| m.value().name() == "elapsed_compute").map(|m| m.value().as_usize()).sum();
        tracing::debug!(
            views = ?on_demand.projection().requests().iter().map(|r| r.view.name.as_str()).collect::<Vec<_>>(),
            compute_seconds = compute as f64 / 1e9,
            "historical: on-demand features computed"
        );
        Arc::clone(on_demand.children()[0])
    });
    if let Some(below) = below {
        top = below;
    }
    let side_by_side = top.is::<ZipExec>();
    tracing::info!(
        rows,
        views = found.len(),
        side_by_side,
        spill_files = spilled,
        seconds,
        "historical: retrieval finished"
    );
}

/// Plans a retrieval over resolved inputs: `views[i]` reads `sources[i]`.
/// A source whose listing failed fails the plan when its view is planned,
/// after the entity side and the views before it, so the first problem
/// reported is the same whatever order the listings finished in.
pub(crate) async fn plan_historical(
    engine: Engine,
    entities: ResolvedEntities,
    views: &[ViewRequest],
    sources: Vec<CoreResult<ResolvedSource>>,
    ts_col: &str,
    on_demand: Option<OnDemandProjection>,
    folder: Option<super::folder_writer::FolderTarget>,
) -> CoreResult<RetrievalPlan> {
    let began = std::time::Instant::now();
    let files: Vec<crate::files::SourceFiles> =
        sources.iter().filter_map(|s| s.as_ref().ok()).map(|s| s.files.clone()).collect();
    let rows = retrieval_batch_rows(engine.memory_limit, output_row_bytes(views));
    let ctx = session_with_batch_rows(engine.memory_limit, engine.target_partitions, rows)?;
    // The entity side is scanned in one partition so its row order is the input order.
    let entity_ctx =
        SessionContext::new_with_config_rt(ctx.copied_config().with_target_partitions(1), ctx.runtime_env());
    let keys: Vec<&feature_store_core::model::JoinKey> = views.iter().flat_map(|v| &v.join_keys).collect();
    // Side by side needs entity rows that read the same every time: files
    // and batches do; a one-shot stream cannot be read twice, and a query's
    // row order is not promised.
    #[cfg(feature = "distributed")]
    let cluster = engine.cluster.clone();
    #[cfg(not(feature = "distributed"))]
    let cluster: Option<()> = None;
    let side_by_side = engine.memory_limit.is_some()
        && cluster.is_none()
        && views.len() > 1
        && matches!(entities, ResolvedEntities::Files { .. } | ResolvedEntities::Input(EntityInput::Batches { .. }));
    // On a cluster without a configured partition count, the largest view's
    // files plus the entity rows size the job's hash partitions.
    #[cfg(feature = "distributed")]
    let partitions = cluster.as_ref().map(|c| {
        let view_bytes = sources.iter().filter_map(|s| s.as_ref().ok()).map(|s| stored_bytes(&s.files)).max();
        let bytes = view_bytes.unwrap_or(0) + entity_bytes(&entities);
        let partitions = c.partitions_for(bytes);
        tracing::info!(partitions, input_bytes = bytes, "cluster job: hash partitions per view");
        partitions
    });
    let (entity_plan, bounds) = entity_plan(&entity_ctx, entities, ts_col, &keys).await?;
    let schema = entity_plan.schema();
    let entity_columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let left_ts = entity_timestamp(&schema, ts_col)?;
    check_output_names(&entity_columns, views)?;

    let mut plan: Arc<dyn ExecutionPlan> = Arc::clone(&entity_plan);
    let mut zipped = vec![Arc::clone(&entity_plan)];
    #[cfg(feature = "distributed")]
    let mut distributed = Vec::new();
    for (view, source) in views.iter().zip(sources) {
        let (right, spec) = view_plan(&ctx, view, &source?, &schema, left_ts, bounds).await?;
        #[cfg(feature = "distributed")]
        if cluster.is_some() {
            distributed.push((right, spec));
            continue;
        }
        if side_by_side {
            let entities = fresh(&entity_plan).map_err(|e| df_error("entity table", e))?;
            zipped.push(Arc::new(AsOfJoinExec::features_only(entities, right, spec)));
        } else {
            plan = Arc::new(AsOfJoinExec::new(plan, right, spec));
        }
    }
    if side_by_side {
        plan = Arc::new(ZipExec::new(zipped));
    }
    if let Some(projection) = &on_demand
        && cluster.is_none()
    {
        plan = Arc::new(OnDemandExec::try_new(plan, projection.clone())?);
    }
    if let Some(folder) = &folder
        && cluster.is_none()
    {
        plan = Arc::new(
            super::folder_writer::FolderWriterExec::new(
                plan,
                None,
                folder.rows_per_file,
                folder.url.clone(),
                folder.run.clone(),
            )
            .with_store(Arc::clone(&folder.store), folder.path.clone()),
        );
    }
    #[cfg(feature = "distributed")]
    if let Some(cluster) = &cluster {
        let context = format!("Ballista cluster {}", cluster.scheduler);
        if let Some(projection) = &on_demand
            && let Some((view, udf)) = projection.udfs().next()
        {
            return Err(CoreError::InvalidArgument(format!(
                "{context}: on-demand feature view \"{view}\" calls the user-defined function {udf}, which is \
                 registered in this process, not on the cluster's executors; run this retrieval on the local \
                 engine (--engine local), or leave the view out"
            )));
        }
        let partitions = partitions.unwrap_or(cluster.partitions);
        plan = super::distributed::distribute(plan, distributed, partitions, on_demand, folder.as_ref())
            .map_err(|e| df_error(&context, e))?;
        // Every node must reach the executors: say which cannot now, not
        // after the job is submitted (a one-shot stream of entity rows, say).
        super::distributed::check_sendable(&plan).map_err(|e| CoreError::data(&context, e))?;
    }
    Ok(RetrievalPlan {
        plan,
        task: ctx.task_ctx(),
        #[cfg(feature = "distributed")]
        cluster,
        began,
        executed: Default::default(),
        files: Arc::new(files),
    })
}

/// Bytes of a source's files as stored.
#[cfg(feature = "distributed")]
pub(crate) fn stored_bytes(files: &crate::files::SourceFiles) -> u64 {
    files.files.iter().map(|f| f.size).sum()
}

/// Bytes of the entity rows: files as stored, batches in memory, a query's sources.
#[cfg(feature = "distributed")]
fn entity_bytes(entities: &ResolvedEntities) -> u64 {
    match entities {
        ResolvedEntities::Files { files, .. } => stored_bytes(files),
        ResolvedEntities::Sql { sources, .. } => sources.iter().map(|s| stored_bytes(&s.files)).sum(),
        ResolvedEntities::Input(EntityInput::Batches { batches, .. }) => {
            batches.iter().map(|b| b.get_array_memory_size() as u64).sum()
        }
        ResolvedEntities::Input(_) => 0,
    }
}

/// A copy of `plan` that runs on its own: a file scan's nodes share their
/// work queue between executions of one instance (sibling work stealing), so
/// two readers of one instance would each get part of the rows.
fn fresh(plan: &Arc<dyn ExecutionPlan>) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    let children = plan.children().into_iter().map(fresh).collect::<datafusion::common::Result<Vec<_>>>()?;
    use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
    let plan = if children.is_empty() {
        Arc::clone(plan)
    } else {
        Arc::clone(plan).replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?
    };
    plan.reset_state()
}

/// About how many bytes an output row takes: the features' values (1 for
/// bools, 32 for strings, bytes and lists) plus 32 for the entity columns.
fn output_row_bytes(views: &[ViewRequest]) -> usize {
    let width = |t: &ValueType| match t.fixed_width() {
        Some(w) => w,
        None if *t == ValueType::Bool => 1,
        None => 32,
    };
    32 + views
        .iter()
        .flat_map(|v| v.features.iter().map(move |f| v.view.feature(f).map_or(32, |field| width(&field.dtype))))
        .sum::<usize>()
}

/// A schema's column names, for messages.
fn column_names(schema: &Schema) -> String {
    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
}

fn entity_timestamp(schema: &SchemaRef, column: &str) -> CoreResult<usize> {
    let columns = || column_names(schema);
    let (i, field) = schema.column_with_name(column).ok_or_else(|| {
        CoreError::data(
            "entity table",
            format!(
                "no timestamp column \"{column}\"; its columns are: {}; pass its name as the timestamp column (timestamp_column= in Python, --timestamp-column in the CLI)",
                columns()
            ),
        )
    })?;
    if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
        return Err(CoreError::data(
            "entity table",
            format!(
                "column \"{column}\" is {}, not a timestamp; convert it (e.g. pandas.to_datetime) or name another column",
                describe_arrow(field.data_type())
            ),
        ));
    }
    Ok(i)
}

/// Canonical key type: integers compare as int64 whatever their width.
pub(super) fn key_type(t: &ValueType) -> DataType {
    match t {
        ValueType::Int32 | ValueType::Int64 => DataType::Int64,
        other => other.to_arrow(),
    }
}

async fn view_plan(
    ctx: &SessionContext,
    view: &ViewRequest,
    resolved: &ResolvedSource,
    entity_schema: &SchemaRef,
    left_ts: usize,
    bounds: Option<Bounds>,
) -> CoreResult<(Arc<dyn ExecutionPlan>, AsOfSpec)> {
    let name = &view.view.name;
    let source = &view.source;
    let context = format!("feature view \"{name}\" (source \"{}\", {})", source.name, source.path);
    // How far before the earliest entity time rows can matter: the ttl, or
    // for an aggregation view its longest window (plus an interval, as
    // hopping windows end at the time floored to it).
    let lookback = if view.view.is_aggregation() {
        let longest = view.view.aggregations.iter().map(|a| a.window).max().unwrap_or_default();
        Some(longest + view.view.aggregation_interval.unwrap_or_default())
    } else {
        view.view.ttl
    };
    let window = bounds.map(|b| (lookback.map(|t| b.min - t.as_nanos() as i128), Some(b.max)));
    let df = read_source_in(ctx, resolved, window).await?;
    let source_schema = df.schema().as_arrow().clone();

    let mut left_keys = Vec::new();
    let mut key_types = Vec::new();
    let mut select: Vec<Expr> = Vec::new();
    for (i, key) in view.join_keys.iter().enumerate() {
        let (pos, field) = entity_schema.column_with_name(&key.name).ok_or_else(|| {
            CoreError::data(
                "entity table",
                format!("missing join key column \"{}\" needed by feature view \"{name}\"", key.name),
            )
        })?;
        let src_col = source.source_column(&key.name);
        let src_type = source_schema.field_with_name(src_col).map(|f| f.data_type().clone()).map_err(|_| {
            CoreError::data(&context, format!("join key column \"{src_col}\" is missing; re-run apply to re-validate"))
        })?;
        let declared = key.dtype.clone().or_else(|| ValueType::from_arrow(&src_type)).ok_or_else(|| {
            CoreError::data(&context, format!("join key \"{}\" has unsupported type {src_type}", key.name))
        })?;
        let target = key_type(&declared);
        let entity_vt = ValueType::from_arrow(field.data_type());
        if entity_vt.as_ref().map(key_type) != Some(target.clone()) {
            return Err(CoreError::data(
                "entity table",
                format!(
                    "join key column \"{}\" is {} but feature view \"{name}\" joins on it as {declared}; cast the column",
                    key.name,
                    describe_arrow(field.data_type())
                ),
            ));
        }
        left_keys.push(pos);
        key_types.push(target.clone());
        select.push(cast(ident(src_col), target).alias(format!("__key{i}")));
    }

    let (unit, tz) = &source_timestamp(&source_schema, source, &context)?;
    select.push(ident(&source.timestamp_field).alias("__event_ts"));
    if let Some(c) = &source.created_timestamp_field {
        select.push(ident(c).alias("__created_ts"));
    }
    let mut features = Vec::new();
    let mut aggregations = Vec::new();
    let DataType::Timestamp(entity_unit, _) = entity_schema.field(left_ts).data_type() else {
        return Err(CoreError::data("entity table", "the timestamp column is not a timestamp"));
    };
    let ts_unit = finer(*entity_unit, *unit);
    if view.view.is_aggregation() {
        let in_unit =
            |d: std::time::Duration| (d.as_nanos() / unit_nanos(ts_unit) as u128).min(i64::MAX as u128) as i64;
        let mut inputs: Vec<&str> = Vec::new();
        for (f, out) in view.features.iter().zip(&view.output_names) {
            let field = view.view.feature(f).ok_or_else(|| CoreError::NotFound {
                kind: "feature",
                name: format!("{name}:{f}"),
                hint: None,
            })?;
            let agg = view.view.aggregations.iter().find(|a| a.output_name() == *f).ok_or_else(|| {
                CoreError::data(
                    &context,
                    format!("feature \"{f}\" is not one of the view's aggregations; re-run apply"),
                )
            })?;
            let (input, column) = match &agg.column {
                None => (None, None),
                Some(c) => {
                    let column = source.source_column(c);
                    let found = source_schema.field_with_name(column).map_err(|_| {
                        CoreError::data(
                            &context,
                            format!(
                                "aggregation \"{f}\" reads column \"{column}\", which the source's files do not have (they have: {})",
                                column_names(&source_schema)
                            ),
                        )
                    })?;
                    let t = ValueType::from_arrow(found.data_type()).ok_or_else(|| {
                        CoreError::data(
                            &context,
                            format!(
                                "aggregation \"{f}\": column \"{column}\" has unsupported type {}",
                                describe_arrow(found.data_type())
                            ),
                        )
                    })?;
                    if let Err(why) = agg.output_type(Some(&t)) {
                        return Err(CoreError::data(&context, format!("aggregation \"{f}\": {why}; re-run apply")));
                    }
                    let at = match inputs.iter().position(|c| *c == column) {
                        Some(at) => at,
                        None => {
                            select.push(cast(ident(column), t.to_arrow()).alias(format!("__agg{}", inputs.len())));
                            inputs.push(column);
                            inputs.len() - 1
                        }
                    };
                    (Some(t), Some(at))
                }
            };
            let window = feature_store_core::aggregation::WindowSpec {
                function: agg.function,
                input,
                n: agg.n,
                window: in_unit(agg.window),
                interval: view.view.aggregation_interval.map(in_unit),
            };
            aggregations.push(AggColumn { window, column, dtype: field.dtype.clone() });
            features.push(Field::new(out, field.dtype.to_arrow(), true));
        }
    }
    for (f, out) in view.features.iter().zip(&view.output_names).filter(|_| !view.view.is_aggregation()) {
        let field = view.view.feature(f).ok_or_else(|| CoreError::NotFound {
            kind: "feature",
            name: format!("{name}:{f}"),
            hint: None,
        })?;
        // The same contract as materialization: the declared type or a
        // lossless widening of it, never a silent lossy cast (float to int,
        // text to numbers) that training would see and serving refuse.
        let column = source.source_column(f);
        let found = source_schema.field_with_name(column).map_err(|_| {
            CoreError::data(
                &context,
                format!(
                    "feature \"{f}\" has no column \"{column}\" in the source's files (they have: {})",
                    column_names(&source_schema)
                ),
            )
        })?;
        if !field.dtype.accepts_arrow(found.data_type()) {
            let file = first_file_where(&resolved.files, column, |t| !field.dtype.accepts_arrow(t)).await;
            return Err(CoreError::data(
                &context,
                format!(
                    "feature \"{f}\" is declared {} but its column \"{column}\" holds {}{}; declare the type the files have, or rewrite them (only lossless widenings such as int32 to int64 are read)",
                    field.dtype,
                    describe_arrow(found.data_type()),
                    file.map(|u| format!(" (in {u})")).unwrap_or_default()
                ),
            ));
        }
        let dt = field.dtype.to_arrow();
        select.push(cast(ident(column), dt.clone()).alias(out));
        features.push(Field::new(out, dt, true));
    }

    let ttl_nanos = view.view.ttl.map(|d| d.as_nanos() as i128);
    // Times are whole units, so flooring the ttl keeps `ts >= t - ttl` exact.
    let ttl = ttl_nanos.map(|n| (n / unit_nanos(ts_unit)).min(i128::from(i64::MAX)) as i64);
    let lookback_nanos = lookback.map(|d| d.as_nanos() as i128);
    let mut df = df;
    if let Some(b) = bounds {
        // Conservative bounds in the column's unit; the join applies the exact ones.
        let u = unit_nanos(*unit);
        let upper = b.max.div_euclid(u) + 1;
        let upper = ScalarValue::new_timestamp_like(*unit, tz.clone(), clamp(upper));
        let mut predicate = ident(&source.timestamp_field).lt_eq(lit(upper));
        if let Some(back) = lookback_nanos {
            let lower = (b.min - back).div_euclid(u) - 1;
            predicate = predicate.and(ident(&source.timestamp_field).gt_eq(lit(ScalarValue::new_timestamp_like(
                *unit,
                tz.clone(),
                clamp(lower),
            ))));
        }
        df = df.filter(predicate).map_err(|e| df_error(&context, e))?;
    }
    let df = df.select(select).map_err(|e| df_error(&context, e))?;
    let right = df.create_physical_plan().await.map_err(|e| df_error(&context, e))?;
    let spec = AsOfSpec {
        view: name.clone(),
        context: format!("{context}, one of its files"),
        left_keys,
        left_ts,
        key_types,
        has_created: source.created_timestamp_field.is_some(),
        features,
        ts_unit,
        ttl,
        aggregations,
    };
    Ok((right, spec))
}

/// Unit and zone of a source's timestamp column; missing or not a timestamp is an error.
pub(super) fn source_timestamp(
    schema: &datafusion::arrow::datatypes::Schema,
    source: &DataSource,
    context: &str,
) -> CoreResult<(TimeUnit, Option<Arc<str>>)> {
    let name = &source.timestamp_field;
    let field = schema
        .field_with_name(name)
        .map_err(|_| CoreError::data(context, format!("timestamp column \"{name}\" is missing")))?;
    match field.data_type() {
        DataType::Timestamp(unit, tz) => Ok((*unit, tz.clone())),
        other => Err(CoreError::data(context, format!("timestamp column \"{name}\" is {other}, not a timestamp"))),
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

pub(super) trait TimestampLike {
    fn new_timestamp_like(unit: TimeUnit, tz: Option<Arc<str>>, v: i64) -> ScalarValue;
}

impl TimestampLike for ScalarValue {
    fn new_timestamp_like(unit: TimeUnit, tz: Option<Arc<str>>, v: i64) -> ScalarValue {
        match unit {
            TimeUnit::Second => ScalarValue::TimestampSecond(Some(v), tz),
            TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(Some(v), tz),
            TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(v), tz),
            TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(Some(v), tz),
        }
    }
}

/// Reads a source's Parquet files (file, hive folder or glob) as a DataFrame.
pub(super) async fn read_source(ctx: &SessionContext, resolved: &ResolvedSource) -> CoreResult<DataFrame> {
    read_source_in(ctx, resolved, None).await
}

/// Event-time window of a read, inclusive, as UTC nanoseconds; `None` ends are open.
pub(crate) type Window = (Option<i128>, Option<i128>);

/// A window from optional UTC bounds.
pub(crate) fn window_of(
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> Window {
    let ns = |t: chrono::DateTime<chrono::Utc>| {
        i128::from(t.timestamp()) * 1_000_000_000 + i128::from(chrono::Timelike::nanosecond(&t))
    };
    (start.map(ns), end.map(ns))
}

/// [`read_source`] for rows in `window` only: with a `timestamp_partition`,
/// hive partitions whose period misses the window are filtered out, which
/// DataFusion applies when listing, so their files are never opened. Rows
/// are not filtered here; callers apply their exact time predicates.
pub(crate) async fn read_source_in(
    ctx: &SessionContext,
    resolved: &ResolvedSource,
    window: Option<Window>,
) -> CoreResult<DataFrame> {
    let source = &resolved.source;
    let context = format!("data source \"{}\" ({})", source.name, source.path);
    let planned = plan_source_read(resolved, window, &context).await?;
    read_planned(ctx, source, &planned, &context).await
}

/// A source's files for one read: the listing, the files the window keeps
/// (all without a `timestamp_partition`), their footers' schemas, and the
/// partition filter that skips the others.
pub(crate) struct SourceRead {
    pub(crate) files: crate::files::SourceFiles,
    pub(crate) read: Vec<usize>,
    /// (file index, schema) of the files read; file 0's when none is.
    pub(crate) schemas: Vec<(usize, Arc<datafusion::arrow::datatypes::Schema>)>,
    prune: Option<Expr>,
}

/// Keeps the files of a listed source that `window` needs and reads their
/// footers, once, for callers that check them before reading rows.
pub(crate) async fn plan_source_read(
    resolved: &ResolvedSource,
    window: Option<Window>,
    context: &str,
) -> CoreResult<SourceRead> {
    let source = &resolved.source;
    let files = resolved.files.clone();
    let prune = match (&source.timestamp_partition, window) {
        (Some(p), Some((lo, hi))) if files.partition_columns.contains(&p.column) => {
            let mut all = std::collections::BTreeSet::new();
            let mut kept = std::collections::BTreeSet::new();
            for meta in &files.files {
                let Some(value) = files.partition_values(meta).remove(&p.column) else { continue };
                if partition_in_window(p, &value, (lo, hi)) {
                    kept.insert(value.clone());
                }
                all.insert(value);
            }
            (kept.len() < all.len()).then(|| {
                let values: Vec<Expr> = kept.into_iter().map(lit).collect();
                if values.is_empty() { lit(false) } else { ident(&p.column).in_list(values, false) }
            })
        }
        _ => None,
    };
    let read: Vec<usize> = (0..files.files.len())
        .filter(|i| match (&prune, window) {
            (Some(_), Some(w)) => file_in_window(source, &files, &files.files[*i], w),
            _ => true,
        })
        .collect();
    let footers = if read.is_empty() { vec![0] } else { read.clone() };
    let schemas = futures::stream::iter(footers)
        .map(|i| {
            let files = &files;
            async move { crate::offline_store::parquet_schema(files, i).await.map(|s| (i, s)) }
        })
        .buffered(16)
        .try_collect()
        .await
        .map_err(|e| CoreError::data(context, e.to_string()))?;
    Ok(SourceRead { files, read, schemas, prune })
}

/// The rows of a planned read. The table schema comes from the footers of the
/// files read (DataFusion would read every file's, skipped ones included, and
/// refuse files whose timestamp units or zones differ).
pub(crate) async fn read_planned(
    ctx: &SessionContext,
    source: &DataSource,
    planned: &SourceRead,
    context: &str,
) -> CoreResult<DataFrame> {
    let schema = merged_schema(&planned.files, &planned.schemas, context)?;
    let df = read_listed(ctx, source, &planned.files, Some(&schema), context).await?;
    match &planned.prune {
        Some(filter) => df.filter(filter.clone()).map_err(|e| df_error(context, e)),
        None => Ok(df),
    }
}

/// The first of `files` whose column `column` has a type `wrong` holds,
/// from the footers (read one by one: for an error message).
async fn first_file_where(
    files: &crate::files::SourceFiles,
    column: &str,
    wrong: impl Fn(&DataType) -> bool,
) -> Option<String> {
    for (i, meta) in files.files.iter().enumerate() {
        if let Ok(schema) = crate::offline_store::parquet_schema(files, i).await
            && schema.field_with_name(column).is_ok_and(|f| wrong(f.data_type()))
        {
            return Some(files.file_url(meta));
        }
    }
    None
}

/// One schema for the files read: columns in order of first
/// appearance, all nullable; a timestamp column whose unit or zone differs
/// between files becomes UTC in the finest unit (every file's values are then
/// the same instants); any other type difference is an error naming both files.
pub(crate) fn merged_schema(
    files: &crate::files::SourceFiles,
    schemas: &[(usize, Arc<datafusion::arrow::datatypes::Schema>)],
    context: &str,
) -> CoreResult<datafusion::arrow::datatypes::Schema> {
    use datafusion::arrow::datatypes::{Field, Schema};
    if schemas.windows(2).all(|w| w[0].1.fields() == w[1].1.fields()) {
        return Ok(schemas[0].1.as_ref().clone());
    }
    let mut fields: Vec<(Field, usize)> = Vec::new();
    for (i, schema) in schemas {
        for f in schema.fields() {
            match fields.iter_mut().find(|(x, _)| x.name() == f.name()) {
                None => fields.push((f.as_ref().clone().with_nullable(true), *i)),
                Some((x, first)) if x.data_type() != f.data_type() => match (x.data_type(), f.data_type()) {
                    (DataType::Timestamp(u1, z1), DataType::Timestamp(u2, z2)) => {
                        let unit = super::timestamps::finer(*u1, *u2);
                        let zone = if z1.is_none() && z2.is_none() { None } else { Some("UTC".into()) };
                        *x = x.clone().with_data_type(DataType::Timestamp(unit, zone));
                    }
                    (a, b) if wider(a, b).is_some() => {
                        let t = wider(a, b).expect("checked");
                        *x = x.clone().with_data_type(t);
                    }
                    (a, b) if same_but_item_names(a, b) => {
                        let t = nullable_items(a);
                        *x = x.clone().with_data_type(t);
                    }
                    (a, b) => {
                        // Name the first file's own type, not the one merged so far.
                        let a = schemas
                            .iter()
                            .find(|(j, _)| j == first)
                            .and_then(|(_, s)| s.field_with_name(f.name()).ok())
                            .map_or(a, |f| f.data_type());
                        return Err(CoreError::data(
                            context,
                            format!(
                                "column \"{}\" is {} in {} but {} in {}; the files of one source must agree",
                                f.name(),
                                describe_arrow(a),
                                files.file_url(&files.files[*first]),
                                describe_arrow(b),
                                files.file_url(&files.files[*i])
                            ),
                        ));
                    }
                },
                Some(_) => {}
            }
        }
    }
    Ok(Schema::new(fields.into_iter().map(|(f, _)| f).collect::<Vec<_>>()))
}

/// Whether list types `a` and `b` differ only in their items' field names
/// or nullability: pyarrow names a list's item `element`, arrow-rs (this
/// store's own writes) and polars `item`, and a source may hold files of both.
fn same_but_item_names(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    let items = |x: &datafusion::arrow::datatypes::FieldRef, y: &datafusion::arrow::datatypes::FieldRef| {
        x.data_type() == y.data_type() || same_but_item_names(x.data_type(), y.data_type())
    };
    match (a, b) {
        (List(x), List(y)) | (LargeList(x), LargeList(y)) => items(x, y),
        (FixedSizeList(x, n), FixedSizeList(y, m)) => n == m && items(x, y),
        _ => false,
    }
}

/// `t` with every list item nullable, so the merged type holds every file's values.
fn nullable_items(t: &DataType) -> DataType {
    use DataType::*;
    let item = |f: &datafusion::arrow::datatypes::FieldRef| {
        Arc::new(f.as_ref().clone().with_data_type(nullable_items(f.data_type())).with_nullable(true))
    };
    match t {
        List(f) => List(item(f)),
        LargeList(f) => LargeList(item(f)),
        FixedSizeList(f, n) => FixedSizeList(item(f), *n),
        other => other.clone(),
    }
}

/// The type both `a` and `b` widen to without loss, for files of one source
/// written with different integer or float widths (or string encodings).
fn wider(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    fn rank(t: &DataType) -> Option<(u8, u8)> {
        // (family, width): 0 signed, 1 unsigned, 2 float, 3 string.
        Some(match t {
            Int8 => (0, 8),
            Int16 => (0, 16),
            Int32 => (0, 32),
            Int64 => (0, 64),
            UInt8 => (1, 8),
            UInt16 => (1, 16),
            UInt32 => (1, 32),
            UInt64 => (1, 64),
            Float16 => (2, 16),
            Float32 => (2, 32),
            Float64 => (2, 64),
            Utf8 | LargeUtf8 | Utf8View => (3, 0),
            _ => return None,
        })
    }
    let ((fa, wa), (fb, wb)) = (rank(a)?, rank(b)?);
    let signed = |w: u8| match w {
        8 => Int8,
        16 => Int16,
        32 => Int32,
        _ => Int64,
    };
    match (fa, fb) {
        (3, 3) => Some(Utf8),
        (x, y) if x == y => Some(if wa >= wb { a.clone() } else { b.clone() }),
        // Unsigned into a strictly wider signed type is lossless.
        (0, 1) if wa > wb => Some(a.clone()),
        (1, 0) if wb > wa => Some(b.clone()),
        (0, 1) | (1, 0) if wa.max(wb) < 64 => Some(signed(wa.max(wb) * 2)),
        _ => None,
    }
}

/// Whether partition `value` may hold rows in `window` (unparsable values may).
fn partition_in_window(p: &feature_store_core::model::TimePartition, value: &str, (lo, hi): Window) -> bool {
    match p.period_of(value) {
        None => true,
        Some((start, end)) => lo.is_none_or(|lo| end > lo) && hi.is_none_or(|hi| start <= hi),
    }
}

/// Whether a listed file may hold rows of `source` in `window`.
pub(crate) fn file_in_window(
    source: &DataSource,
    files: &crate::files::SourceFiles,
    meta: &object_store::ObjectMeta,
    window: Window,
) -> bool {
    let Some(p) = &source.timestamp_partition else { return true };
    files.partition_values(meta).get(&p.column).is_none_or(|v| partition_in_window(p, v, window))
}

async fn read_listed(
    ctx: &SessionContext,
    source: &DataSource,
    files: &crate::files::SourceFiles,
    schema: Option<&datafusion::arrow::datatypes::Schema>,
    context: &str,
) -> CoreResult<DataFrame> {
    register_store(ctx, &files.root)?;
    let all_parquet = files.files.iter().all(|f| f.location.as_ref().ends_with(".parquet"));
    let mut options = ParquetReadOptions::default().file_extension(if all_parquet { ".parquet" } else { "" });
    if let Some(schema) = schema {
        options = options.schema(schema);
    }
    let read = if source.is_glob() || (!all_parquet && files.partition_columns.is_empty()) {
        // DataFusion expands globs only in plain local paths, and without a
        // `.parquet` extension to filter on it would read marker files too,
        // so hand it the files this crate already listed (sorted, markers skipped).
        let urls: Vec<String> = files.files.iter().map(|m| files.file_url(m)).collect();
        ctx.read_parquet(urls, options).await
    } else if files.files.len() == 1 && files.files[0].location == files.root.path {
        ctx.read_parquet(files.root.url.clone(), options).await
    } else {
        let partition_cols: Vec<(String, DataType)> =
            files.partition_columns.iter().map(|c| (c.clone(), DataType::Utf8)).collect();
        let url = format!("{}/", files.root.url.trim_end_matches('/'));
        ctx.read_parquet(url, options.table_partition_cols(partition_cols)).await
    };
    read.map_err(|e| df_error(context, e))
}

fn register_store(
    ctx: &SessionContext,
    root: &feature_store_object_store::location::ResolvedLocation,
) -> CoreResult<()> {
    if matches!(root.kind, feature_store_object_store::location::StoreKind::Local(_)) {
        return Ok(());
    }
    let url = url::Url::parse(&root.store_url())
        .map_err(|e| CoreError::InvalidArgument(format!("{}: {e}", root.store_url())))?;
    ctx.register_object_store(&url, Arc::clone(&root.store));
    Ok(())
}

/// The entity side as a single-partition plan, and its time range when known
/// without consuming it.
pub(crate) async fn entity_plan(
    ctx: &SessionContext,
    input: ResolvedEntities,
    ts_col: &str,
    keys: &[&feature_store_core::model::JoinKey],
) -> CoreResult<(Arc<dyn ExecutionPlan>, Option<Bounds>)> {
    let input = match input {
        ResolvedEntities::Input(input) => input,
        ResolvedEntities::Files { path, files } => {
            let context = format!("entity table {path}");
            register_store(ctx, &files.root)?;
            let urls: Vec<String> = files.files.iter().map(|m| files.file_url(m)).collect();
            let is_csv = path.to_ascii_lowercase().trim_end_matches('/').ends_with(".csv")
                || urls.iter().all(|u| u.to_ascii_lowercase().ends_with(".csv"));
            let df = if is_csv {
                read_entity_csv(ctx, urls, ts_col, keys).await
            } else {
                ctx.read_parquet(urls, ParquetReadOptions::default().file_extension("")).await
            }
            .map_err(|e| df_error(&context, e))?;
            return dataframe_plan(df, ts_col, &context, is_csv).await;
        }
        ResolvedEntities::Sql { query, sources } => {
            for s in &sources {
                let df = read_source(ctx, s).await?;
                ctx.register_table(s.source.name.as_str(), df.into_view()).map_err(|e| df_error("entity query", e))?;
            }
            let df = ctx.sql(&query).await.map_err(|e| df_error("entity query", e))?;
            return dataframe_plan(df, ts_col, "entity query", false).await;
        }
    };
    match input {
        EntityInput::Batches { schema, batches } => {
            let bounds = match schema.index_of(ts_col) {
                Ok(i) if matches!(schema.field(i).data_type(), DataType::Timestamp(_, _)) => batches
                    .iter()
                    .filter_map(|b| instant_range(b.column(i)))
                    .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
                    .map(|(min, max)| Bounds { min, max }),
                _ => None,
            };
            let plan =
                MemorySourceConfig::try_new_exec(&[batches], schema, None).map_err(|e| df_error("entity table", e))?;
            Ok((plan, bounds))
        }
        EntityInput::Stream(stream) => {
            let schema = stream.schema();
            let part = Arc::new(OnceStream { schema: Arc::clone(&schema), stream: Mutex::new(Some(stream)) });
            let plan = StreamingTableExec::try_new(schema, vec![part], None, Vec::new(), false, None)
                .map_err(|e| df_error("entity stream", e))?;
            Ok((Arc::new(plan), None))
        }
        other => {
            Err(CoreError::Unsupported(format!("entity input {other:?} is not supported by the Parquet offline store")))
        }
    }
}

/// A CSV file has no types, so its columns are not left to guessing where the
/// registry knows better: join keys are read as their declared types (a
/// string key `001` stays `001`), and the timestamp column as UTC instants
/// (naive values taken as UTC, offsets honored), so a value that does not
/// parse is an error naming its line. Times keep their nanoseconds (so a
/// CSV's times lie between 1677 and 2262, as Arrow's nanosecond times do):
/// cut to microseconds, an entity row could land before a feature row it
/// follows.
async fn read_entity_csv(
    ctx: &SessionContext,
    urls: Vec<String>,
    ts_col: &str,
    keys: &[&feature_store_core::model::JoinKey],
) -> datafusion::error::Result<DataFrame> {
    let inferred = ctx.read_csv(urls.clone(), CsvReadOptions::new().file_extension("")).await?;
    let fields: Vec<Field> = inferred
        .schema()
        .as_arrow()
        .fields()
        .iter()
        .map(|f| {
            let declared = keys.iter().find(|k| k.name == *f.name()).and_then(|k| k.dtype.as_ref());
            let t = if f.name() == ts_col {
                DataType::Timestamp(TimeUnit::Nanosecond, Some(feature_store_core::UTC.into()))
            } else if let Some(t) = declared {
                t.to_arrow()
            } else {
                f.data_type().clone()
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    let schema = datafusion::arrow::datatypes::Schema::new(fields);
    ctx.read_csv(urls, CsvReadOptions::new().file_extension("").schema(&schema)).await
}

async fn dataframe_plan(
    df: DataFrame,
    ts_col: &str,
    context: &str,
    csv: bool,
) -> CoreResult<(Arc<dyn ExecutionPlan>, Option<Bounds>)> {
    // Reading the time bounds parses every row, so a CSV's bad value surfaces here.
    let columns: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    let failed = |e| match df_error(context, e) {
        CoreError::Data { context, message } if csv => {
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            CoreError::data(context, feature_store_core::readable_csv_error(&message, &columns))
        }
        other => other,
    };
    let is_ts = df
        .schema()
        .as_arrow()
        .field_with_name(ts_col)
        .is_ok_and(|f| matches!(f.data_type(), DataType::Timestamp(_, _)));
    let bounds = if is_ts {
        let mut aggregates = vec![min(ident(ts_col)).alias("lo"), max(ident(ts_col)).alias("hi")];
        if csv {
            // Every column of a CSV parsed here too, so a bad key or request
            // value is named with its column and line, not mid-join.
            aggregates.extend(
                columns
                    .iter()
                    .filter(|c| c.as_str() != ts_col)
                    .enumerate()
                    .map(|(i, c)| datafusion::functions_aggregate::expr_fn::count(ident(c)).alias(format!("c{i}"))),
            );
        }
        let agg = df
            .clone()
            .aggregate(vec![], aggregates)
            .map_err(|e| df_error(context, e))?
            .collect()
            .await
            .map_err(failed)?;
        agg.first().filter(|b| b.num_rows() == 1).and_then(|b| {
            let (lo, _) = instant_range(b.column(0))?;
            let (_, hi) = instant_range(b.column(1))?;
            Some(Bounds { min: lo, max: hi })
        })
    } else {
        None
    };
    let plan = df.create_physical_plan().await.map_err(|e| df_error(context, e))?;
    Ok((plan, bounds))
}

/// A stream handed in by the caller, readable once.
struct OnceStream {
    schema: SchemaRef,
    stream: Mutex<Option<BatchStream>>,
}

impl fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnceStream")
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().expect("poisoned").take();
        let schema = Arc::clone(&self.schema);
        let inner = match taken {
            Some(s) => s.map_err(|e| datafusion::common::DataFusionError::External(Box::new(e))).boxed(),
            None => futures::stream::once(async {
                Err(datafusion::common::DataFusionError::Execution("the entity stream was already read".into()))
            })
            .boxed(),
        };
        Box::pin(RecordBatchStreamAdapter::new(schema, inner))
    }
}
