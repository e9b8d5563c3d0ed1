//! The newest row per entity key in a time window, for materialization:
//! the window's rows sorted by key, then event time, created time and
//! feature values descending (DataFusion's external sort, which spills under
//! the memory limit), then the first row of each key run kept by a streaming
//! pass that compares adjacent keys in Arrow's row format. Memory stays
//! bounded whatever the row count. (A `ROW_NUMBER() OVER (PARTITION BY key)`
//! window was measured 2-3x slower: it keeps state per partition, i.e. per key.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{Expr, cast, ident, lit};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, SendableRecordBatchStream,
    execute_stream,
};
use feature_store_core::historical::BatchStream;
use feature_store_core::offline::{EVENT_CREATED_TS, LATEST_EVENT_TS, LatestRequest, LatestRows, TilesRequest};
use feature_store_core::{Error as CoreError, Result as CoreResult, UTC, ValueType};
use futures::StreamExt;

use super::historical::{Engine, TimestampLike, key_type, read_source_in, source_timestamp, window_of};
use super::{df_error, session};
use crate::files::ResolvedSource;

const CREATED: &str = "__created_ts";

/// Memory for the per-key sort when no limit is configured: beyond it the
/// sort spills, so materializing any number of rows stays bounded.
pub const DEFAULT_MATERIALIZE_MEMORY: usize = 1 << 30;

pub(crate) async fn latest_rows(
    engine: Engine,
    req: LatestRequest,
    resolved: &ResolvedSource,
) -> CoreResult<LatestRows> {
    let ctx = session(Some(engine.memory_limit.unwrap_or(DEFAULT_MATERIALIZE_MEMORY)), engine.target_partitions)?;
    let source = &req.source;
    let view = &req.view;
    let context = format!("feature view \"{}\" (source \"{}\", {})", view.name, source.name, source.path);
    let df = read_source_in(&ctx, resolved, Some(window_of(req.start, Some(req.end)))).await?;
    let schema = df.schema().as_arrow().clone();
    let mut predicate = window_predicate(&schema, source, req.start, req.end, &context)?;
    let ts = ident(&source.timestamp_field);
    let mut select: Vec<Expr> = Vec::new();
    let mut order: Vec<datafusion::logical_expr::SortExpr> = Vec::new();
    for (key, src, column) in key_columns(&schema, source, &req.join_keys, &context)? {
        predicate = predicate.and(ident(src).is_not_null());
        select.push(column);
        order.push(ident(&key.name).sort(true, true));
    }
    select.push(cast(ts, DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))).alias(LATEST_EVENT_TS));
    order.push(ident(LATEST_EVENT_TS).sort(false, false));
    if let Some(c) = &source.created_timestamp_field {
        select.push(ident(c).alias(CREATED));
        order.push(ident(CREATED).sort(false, false));
    }
    for f in &view.schema {
        let src = source.source_column(&f.name);
        if schema.field_with_name(src).is_err() {
            return Err(CoreError::data(&context, format!("feature column \"{src}\" is missing")));
        }
        select.push(cast(ident(src), f.dtype.to_arrow()).alias(&f.name));
    }
    // Sorted by key and newest first only: exact ties (same key, event and
    // created time) are resolved by [`LatestPerKey`] on the features, so the
    // sort's rows (and its merge's memory) carry three columns, not every feature.
    let tie_features: Vec<bool> = view.schema.iter().map(|f| !f.dtype.is_list()).collect();
    let has_created = source.created_timestamp_field.is_some();
    let key_count = req.join_keys.len();
    #[cfg(feature = "distributed")]
    if let Some(cluster) = engine.cluster.clone() {
        // On a cluster: the rows hash-partitioned by key, each partition
        // sorted and reduced on an executor; a key's rows share a partition,
        // so each partition's newest rows are final.
        let df = df.filter(predicate).and_then(|df| df.select(select)).map_err(|e| df_error(&context, e))?;
        let scan = df.create_physical_plan().await.map_err(|e| df_error(&context, e))?;
        let cluster_context = format!("{context} on Ballista cluster {}", cluster.scheduler);
        let partitions = cluster.partitions_for(super::historical::stored_bytes(&resolved.files));
        tracing::info!(view = %view.name, partitions, "cluster job: hash partitions");
        let plan = cluster_plan(scan, key_count, has_created, &tie_features, partitions)
            .map_err(|e| df_error(&cluster_context, e))?;
        let stream = super::distributed::gather(cluster, plan).map_err(|e| CoreError::data(&cluster_context, e))?;
        return Ok(counted(stream, context));
    }
    // Sorted by key and newest first only: exact ties (same key, event and
    // created time) are resolved by [`LatestPerKeyExec`] on the features, so
    // the sort's rows (and its merge's memory) carry three columns, not every feature.
    let df = df
        .filter(predicate)
        .and_then(|df| df.select(select))
        .and_then(|df| df.sort(order))
        .map_err(|e| df_error(&context, e))?;
    let sorted = df.create_physical_plan().await.map_err(|e| df_error(&context, e))?;
    let plan = LatestPerKeyExec::try_new(sorted, key_count, has_created, tie_features)
        .map_err(|e| CoreError::data(&context, e.to_string()))?;
    let stream = execute_stream(Arc::new(plan), ctx.task_ctx()).map_err(|e| df_error(&context, e))?;
    Ok(counted(stream, context))
}

/// [`LatestRows`] from a [`LatestPerKeyExec`]'s stream: the rows without
/// its count column, the count summed into `rows_read`.
fn counted(stream: SendableRecordBatchStream, context: String) -> LatestRows {
    let schema = stream.schema();
    let last = schema.fields().len() - 1;
    let out_schema = Arc::new(schema.project(&(0..last).collect::<Vec<_>>()).expect("columns in range"));
    let rows_read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&rows_read);
    let projected = Arc::clone(&out_schema);
    let stream = stream.map(move |batch| {
        let batch = batch.map_err(|e| df_error(&context, e))?;
        let read = batch.column(last).as_any().downcast_ref::<UInt64Array>().map_or(0, |c| c.iter().flatten().sum());
        counter.fetch_add(read, Ordering::Relaxed);
        RecordBatch::try_new(Arc::clone(&projected), batch.columns()[..last].to_vec())
            .map_err(|e| CoreError::data(&context, e.to_string()))
    });
    LatestRows::new(BatchStream::new(out_schema, Box::pin(stream)), rows_read)
}

/// The cluster form of the newest-row reduction, per hash partition of the
/// keys (gathered back by [`super::distributed::gather`]):
///
/// ```text
/// LatestPerKeyExec, per partition
///   SortExec [keys, event time desc, created desc], per partition
///     FirstAttemptExec                  <- a scan partition's rows once, if the cluster ran it twice
///       RepartitionExec Hash(keys)      <- stage boundary (shuffle)
///         AttemptStampExec
///           the window's rows (filter, projection, scan)
/// ```
///
/// A view without entities has one "key": its rows go to one partition.
#[cfg(feature = "distributed")]
fn cluster_plan(
    scan: Arc<dyn ExecutionPlan>,
    key_count: usize,
    has_created: bool,
    tie_features: &[bool],
    partitions: usize,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::sorts::sort::SortExec;

    use super::distributed::{AttemptStampExec, FirstAttemptExec};

    let schema = scan.schema();
    let column = |i: usize| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>;
    let partitioning = if key_count == 0 {
        Partitioning::RoundRobinBatch(1)
    } else {
        Partitioning::Hash((0..key_count).map(column).collect(), partitions)
    };
    let stamped = Arc::new(AttemptStampExec::new(scan, false));
    let exchanged = Arc::new(RepartitionExec::try_new(stamped, partitioning)?);
    let once = Arc::new(FirstAttemptExec::try_new(exchanged)?);
    let order = latest_order(&schema, key_count, has_created);
    let sorted = Arc::new(SortExec::new(order, once).with_preserve_partitioning(true));
    Ok(Arc::new(LatestPerKeyExec::try_new(sorted, key_count, has_created, tie_features.to_vec())?))
}

/// Each join key with its source column and that column cast to the key's
/// canonical type, named by the key.
fn key_columns<'a>(
    schema: &datafusion::arrow::datatypes::Schema,
    source: &'a feature_store_core::model::DataSource,
    keys: &'a [feature_store_core::model::JoinKey],
    context: &str,
) -> CoreResult<Vec<(&'a feature_store_core::model::JoinKey, &'a str, Expr)>> {
    keys.iter()
        .map(|key| {
            let src = source.source_column(&key.name);
            let src_type = schema
                .field_with_name(src)
                .map(|f| f.data_type().clone())
                .map_err(|_| CoreError::data(context, format!("join key column \"{src}\" is missing")))?;
            let declared = key.dtype.clone().or_else(|| ValueType::from_arrow(&src_type)).ok_or_else(|| {
                CoreError::data(context, format!("join key \"{}\" has unsupported type {src_type}", key.name))
            })?;
            Ok((key, src, cast(ident(src), key_type(&declared)).alias(&key.name)))
        })
        .collect()
}

/// The tile rows of an aggregation view from its events in `[start, end]`
/// with non-null keys (see [`feature_store_core::offline::TilesRequest`]):
///
/// ```text
/// TilesExec, per partition                  <- tile rows, a run of complete keys at a time
///   SortExec [keys], per partition          <- spills under the memory limit
///     RepartitionExec Hash(keys)            <- every event of a key in one partition
///       the window's events (filter, projection, scan)
/// ```
///
/// On a cluster the exchange is a shuffle between executors (each scan
/// partition's rows once, [`super::distributed::FirstAttemptExec`]), the
/// tiles are built on the executors and only tile rows come back. A view
/// without entities has one key: its events go to one partition.
pub(crate) async fn tiles(engine: Engine, req: TilesRequest, resolved: &ResolvedSource) -> CoreResult<BatchStream> {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::repartition::RepartitionExec;

    use datafusion::physical_plan::sorts::sort::SortExec;

    use super::tiles::{TilesExec, TilesSpec, key_order};

    let ctx = session(Some(engine.memory_limit.unwrap_or(DEFAULT_MATERIALIZE_MEMORY)), engine.target_partitions)?;
    let source = &req.source;
    let view = &req.view;
    let context = format!("feature view \"{}\" (source \"{}\", {})", view.name, source.name, source.path);
    let df = read_source_in(&ctx, resolved, Some(window_of(req.start, Some(req.end)))).await?;
    let schema = df.schema().as_arrow().clone();
    let mut predicate = window_predicate(&schema, source, req.start, req.end, &context)?;
    let micros = DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()));
    let mut select: Vec<Expr> = Vec::new();
    for (_, src, column) in key_columns(&schema, source, &req.join_keys, &context)? {
        predicate = predicate.and(ident(src).is_not_null());
        select.push(column);
    }
    select.push(cast(ident(&source.timestamp_field), micros.clone()).alias(LATEST_EVENT_TS));
    if let Some(c) = &source.created_timestamp_field {
        select.push(cast(ident(c), micros.clone()).alias(EVENT_CREATED_TS));
    }
    for c in req.columns() {
        let src = source.source_column(c);
        let found = schema
            .field_with_name(src)
            .map_err(|_| CoreError::data(&context, format!("column \"{src}\" of the aggregations is missing")))?;
        let t = ValueType::from_arrow(found.data_type()).ok_or_else(|| {
            CoreError::data(&context, format!("column \"{src}\" has unsupported type {}", found.data_type()))
        })?;
        select.push(cast(ident(src), t.to_arrow()).alias(c));
    }
    let df = df.filter(predicate).and_then(|df| df.select(select)).map_err(|e| df_error(&context, e))?;
    let scan = df.create_physical_plan().await.map_err(|e| df_error(&context, e))?;
    let scan_schema = scan.schema();
    let key_count = req.join_keys.len();
    let partitioning = |partitions: usize| {
        if key_count == 0 {
            Partitioning::RoundRobinBatch(1)
        } else {
            let column = |i: usize| Arc::new(Column::new(scan_schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>;
            Partitioning::Hash((0..key_count).map(column).collect(), partitions)
        }
    };
    let spec = TilesSpec {
        view: view.clone(),
        keys: req.key_names().into_iter().map(str::to_owned).collect(),
        window: req.window,
        limited: engine.memory_limit.is_some(),
    };
    let out_schema = feature_store_core::aggregation::tile_rows::tile_rows_schema(view);
    let sorted = |plan: Arc<dyn ExecutionPlan>| -> Arc<dyn ExecutionPlan> {
        match key_order(&plan.schema(), key_count) {
            Some(order) => Arc::new(SortExec::new(order, plan).with_preserve_partitioning(true)),
            None => plan,
        }
    };
    #[cfg(feature = "distributed")]
    if let Some(cluster) = engine.cluster.clone() {
        use super::distributed::{AttemptStampExec, FirstAttemptExec};
        let cluster_context = format!("{context} on Ballista cluster {}", cluster.scheduler);
        let partitions = cluster.partitions_for(super::historical::stored_bytes(&resolved.files));
        tracing::info!(view = %view.name, partitions, "cluster job: hash partitions for tiles");
        let stamped = Arc::new(AttemptStampExec::new(scan, false));
        let exchanged = RepartitionExec::try_new(stamped, partitioning(partitions))
            .and_then(|e| FirstAttemptExec::try_new(Arc::new(e)))
            .map_err(|e| df_error(&cluster_context, e))?;
        let plan = Arc::new(TilesExec::new(sorted(Arc::new(exchanged)), spec));
        let stream = super::distributed::gather(cluster, plan).map_err(|e| CoreError::data(&cluster_context, e))?;
        let stream = stream.map(move |b| b.map_err(|e| df_error(&cluster_context, e)));
        return Ok(BatchStream::new(out_schema, Box::pin(stream)));
    }
    let exchanged = RepartitionExec::try_new(scan, partitioning(ctx.state().config().target_partitions()))
        .map_err(|e| df_error(&context, e))?;
    let plan = Arc::new(TilesExec::new(sorted(Arc::new(exchanged)), spec));
    let stream = execute_stream(plan, ctx.task_ctx()).map_err(|e| df_error(&context, e))?;
    let stream = stream.map(move |b| b.map_err(|e| df_error(&context, e)));
    Ok(BatchStream::new(out_schema, Box::pin(stream)))
}

/// `start <= event time <= end` in the source column's own unit and zone
/// (bounds rounded inward), so Parquet statistics can prune row groups.
pub(crate) fn window_predicate(
    schema: &datafusion::arrow::datatypes::Schema,
    source: &feature_store_core::model::DataSource,
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: chrono::DateTime<chrono::Utc>,
    context: &str,
) -> CoreResult<Expr> {
    let (unit, tz) = &source_timestamp(schema, source, context)?;
    let per_unit = match unit {
        TimeUnit::Second => 1_000_000i64,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1,
        TimeUnit::Nanosecond => 0,
    };
    let bound = |us: i64, up: bool| -> ScalarValue {
        let v = if per_unit == 0 {
            us.saturating_mul(1000)
        } else if up {
            us.div_euclid(per_unit) + i64::from(us.rem_euclid(per_unit) != 0)
        } else {
            us.div_euclid(per_unit)
        };
        ScalarValue::new_timestamp_like(*unit, tz.clone(), v)
    };
    let ts = ident(&source.timestamp_field);
    let mut predicate = ts.clone().lt_eq(lit(bound(end.timestamp_micros(), false)));
    if let Some(start) = start {
        predicate = predicate.and(ts.gt_eq(lit(bound(start.timestamp_micros(), true))));
    }
    Ok(predicate)
}

/// Keys ascending, nulls first: the order of [`LatestPerKeyExec`]'s output
/// (none without keys).
fn key_order(schema: &SchemaRef, key_count: usize) -> Option<datafusion::physical_expr::LexOrdering> {
    use datafusion::arrow::compute::SortOptions;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::expressions::Column;
    datafusion::physical_expr::LexOrdering::new((0..key_count).map(|i| {
        let column = Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>;
        PhysicalSortExpr::new(column, SortOptions { descending: false, nulls_first: true })
    }))
}

/// The order [`LatestPerKeyExec`] reads: keys ascending (nulls first),
/// then event and created time newest first (nulls last).
fn latest_order(schema: &SchemaRef, key_count: usize, has_created: bool) -> datafusion::physical_expr::LexOrdering {
    use datafusion::arrow::compute::SortOptions;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::expressions::Column;
    let column = |i: usize| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>;
    let newest = SortOptions { descending: true, nulls_first: false };
    let times = key_count..key_count + 1 + usize::from(has_created);
    let order = (0..key_count)
        .map(|i| PhysicalSortExpr::new(column(i), SortOptions { descending: false, nulls_first: true }))
        .chain(times.map(|i| PhysicalSortExpr::new(column(i), newest)));
    datafusion::physical_expr::LexOrdering::new(order).expect("the event time is always a sort column")
}

/// The column a [`LatestPerKeyExec`] appends: how many input rows each
/// row's key had, so a caller counts the rows read even when the work ran
/// on a cluster, and a row delivered twice is an exact copy.
pub(crate) const ROWS_READ: &str = "__feature_store_rows_read";

/// The newest row of each key, per partition, from partitions each sorted by
/// key, then event and created time newest first, holding all of a key's
/// rows (one sorted partition locally; a hash partition on a cluster).
/// Output: keys, event time, features (the created time dropped), and
/// [`ROWS_READ`].
#[derive(Debug)]
pub struct LatestPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    key_count: usize,
    has_created: bool,
    tie_features: Vec<bool>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl LatestPerKeyExec {
    /// `input`: keys, event time, created time (when `has_created`), then
    /// one column per entry of `tie_features` (true where exact ties compare it).
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        key_count: usize,
        has_created: bool,
        tie_features: Vec<bool>,
    ) -> datafusion::common::Result<Self> {
        let latest = LatestPerKey::new(&input.schema(), key_count, has_created, &tie_features)?;
        let out = latest.out_schema();
        let fields: Vec<Arc<Field>> = out
            .fields()
            .iter()
            .cloned()
            .chain(std::iter::once(Arc::new(Field::new(ROWS_READ, DataType::UInt64, false))))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        // Rows leave in key order (the order the input is required to have).
        let mut equivalence = EquivalenceProperties::new(Arc::clone(&schema));
        if let Some(order) = key_order(&schema, key_count) {
            equivalence.add_ordering(order);
        }
        let cache = Arc::new(PlanProperties::new(
            equivalence,
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self { input, key_count, has_created, tie_features, schema, cache })
    }

    /// Join keys leading the input.
    pub fn key_count(&self) -> usize {
        self.key_count
    }

    /// Whether the input has a created-time column after the event time.
    pub fn has_created(&self) -> bool {
        self.has_created
    }

    /// Per feature column: whether exact ties compare it.
    pub fn tie_features(&self) -> &[bool] {
        &self.tie_features
    }
}

impl DisplayAs for LatestPerKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LatestPerKeyExec: keys={}, created={}", self.key_count, self.has_created)
    }
}

impl ExecutionPlan for LatestPerKeyExec {
    fn name(&self) -> &str {
        "LatestPerKeyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    /// Keys ascending, then event and created time newest first: a planner
    /// must keep the sort below (without the requirement it may drop it).
    fn required_input_ordering(&self) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        vec![Some(datafusion::physical_expr::OrderingRequirements::from(latest_order(
            &self.input.schema(),
            self.key_count,
            self.has_created,
        )))]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::common::Result<TreeNodeRecursion>,
    ) -> datafusion::common::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let [input]: [Arc<dyn ExecutionPlan>; 1] =
            children.try_into().map_err(|_| DataFusionError::Internal("LatestPerKeyExec takes one child".into()))?;
        Ok(Arc::new(Self::try_new(input, self.key_count, self.has_created, self.tie_features.clone())?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::common::Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let latest = LatestPerKey::new(&self.input.schema(), self.key_count, self.has_created, &self.tie_features)?;
        let schema = Arc::clone(&self.schema);
        let with_count = {
            let schema = Arc::clone(&schema);
            move |(batch, counts): (RecordBatch, Vec<u64>)| -> datafusion::common::Result<RecordBatch> {
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(UInt64Array::from(counts)));
                Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
            }
        };
        // The last key's row is held until the input ends, then emitted.
        let state = Some((input, latest));
        let stream = futures::stream::unfold(state, move |state| {
            let with_count = with_count.clone();
            async move {
                let (mut input, mut latest) = state?;
                loop {
                    match input.next().await {
                        Some(Ok(batch)) => match latest.push(&batch) {
                            Ok(out) if out.0.num_rows() == 0 => continue,
                            Ok(out) => return Some((with_count(out), Some((input, latest)))),
                            Err(e) => return Some((Err(e.into()), None)),
                        },
                        Some(Err(e)) => return Some((Err(e), None)),
                        None => {
                            return match latest.finish() {
                                Ok(Some(out)) => Some((with_count(out), None)),
                                Ok(None) => None,
                                Err(e) => Some((Err(e.into()), None)),
                            };
                        }
                    }
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The newest row of each key from batches sorted by key, then event and
/// created time newest first, carrying the current key across batches.
/// Exact ties (same key, event and created time) go to the row whose
/// features sort first descending, nulls last, list features left out: the
/// rule the as-of join applies, so materialized rows equal retrieved ones.
struct LatestPerKey {
    key_count: usize,
    /// Position of the created time, which the output leaves out.
    created: Option<usize>,
    keys: Option<RowConverter>,
    times: RowConverter,
    /// Feature columns ties compare, and their converter (descending, nulls last).
    tie_columns: Vec<usize>,
    ties: Option<RowConverter>,
    out_schema: SchemaRef,
    /// The best row so far of the current key, held until the key ends.
    pending: Option<Pending>,
}

struct Pending {
    row: RecordBatch,
    key: Option<OwnedRow>,
    time: OwnedRow,
    /// Rows of this key read so far.
    count: u64,
}

type ArrowResult<T> = Result<T, datafusion::arrow::error::ArrowError>;

impl LatestPerKey {
    /// `schema`: keys, event time, created time (when `has_created`), features.
    fn new(schema: &SchemaRef, key_count: usize, has_created: bool, tie_features: &[bool]) -> ArrowResult<Self> {
        let field = |i: usize| schema.field(i).data_type().clone();
        let keys = (key_count > 0)
            .then(|| RowConverter::new((0..key_count).map(|i| SortField::new(field(i))).collect()))
            .transpose()?;
        let time_columns = 1 + usize::from(has_created);
        let times =
            RowConverter::new((key_count..key_count + time_columns).map(|i| SortField::new(field(i))).collect())?;
        let first_feature = key_count + time_columns;
        let tie_columns: Vec<usize> =
            tie_features.iter().enumerate().filter(|(_, t)| **t).map(|(i, _)| first_feature + i).collect();
        let desc = datafusion::arrow::compute::SortOptions { descending: true, nulls_first: false };
        let ties = (!tie_columns.is_empty())
            .then(|| {
                RowConverter::new(tie_columns.iter().map(|i| SortField::new_with_options(field(*i), desc)).collect())
            })
            .transpose()?;
        let created = has_created.then_some(key_count + 1);
        let fields =
            schema.fields().iter().enumerate().filter(|(i, _)| Some(*i) != created).map(|(_, f)| Arc::clone(f));
        let out_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields.collect::<Vec<_>>()));
        Ok(Self { key_count, created, keys, times, tie_columns, ties, out_schema, pending: None })
    }

    fn out_schema(&self) -> SchemaRef {
        Arc::clone(&self.out_schema)
    }

    /// Whether row `b` (one row) wins a tie against row `a`.
    fn wins(&self, a: &RecordBatch, b: &RecordBatch) -> ArrowResult<bool> {
        let Some(ties) = &self.ties else { return Ok(false) };
        let rows = |x: &RecordBatch| {
            ties.convert_columns(&self.tie_columns.iter().map(|i| Arc::clone(x.column(*i))).collect::<Vec<_>>())
        };
        let (ra, rb) = (rows(a)?, rows(b)?);
        Ok(rb.row(0) < ra.row(0))
    }

    /// The rows of keys that ended in `batch` (or before it), each with the
    /// number of input rows of its key.
    fn push(&mut self, batch: &RecordBatch) -> ArrowResult<(RecordBatch, Vec<u64>)> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok((RecordBatch::new_empty(Arc::clone(&self.out_schema)), Vec::new()));
        }
        let keys = self.keys.as_ref().map(|c| c.convert_columns(&batch.columns()[..self.key_count])).transpose()?;
        let time_columns = 1 + usize::from(self.created.is_some());
        let times = self.times.convert_columns(&batch.columns()[self.key_count..self.key_count + time_columns])?;
        let mut carried: Option<(RecordBatch, u64)> = None;
        let mut selected: Vec<u32> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        // Rows of the current key so far (from earlier batches too).
        let mut count = self.pending.as_ref().map_or(0, |p| p.count);
        // The current key's best row: held over from an earlier batch, or a row of this one.
        let mut here: Option<usize> = None;
        for i in 0..n {
            let same_key = match (&keys, here, &self.pending) {
                (None, Some(_), _) | (None, None, Some(_)) => true,
                (Some(k), Some(j), _) => k.row(j) == k.row(i),
                (Some(k), None, Some(p)) => p.key.as_ref().is_some_and(|key| key.row() == k.row(i)),
                (_, None, None) => false,
            };
            if !same_key {
                if let Some(j) = here {
                    selected.push(j as u32);
                    counts.push(count);
                } else if let Some(p) = self.pending.take() {
                    carried = Some((p.row, count));
                }
                here = Some(i);
                count = 1;
                continue;
            }
            count += 1;
            // Same key: only an exact tie with the best row can replace it.
            let best = match here {
                Some(j) => (times.row(j) == times.row(i)).then(|| batch.slice(j, 1)),
                None => self.pending.as_ref().filter(|p| p.time.row() == times.row(i)).map(|p| p.row.clone()),
            };
            if let Some(best) = best
                && self.wins(&best, &batch.slice(i, 1))?
            {
                if here.is_none() {
                    self.pending = None;
                }
                here = Some(i);
            }
        }
        match (here, self.pending.as_mut()) {
            (Some(j), _) => {
                self.pending = Some(Pending {
                    row: batch.slice(j, 1),
                    key: keys.as_ref().map(|k| k.row(j).owned()),
                    time: times.row(j).owned(),
                    count,
                });
            }
            (None, Some(p)) => p.count = count,
            (None, None) => {}
        }
        let picked = take_record_batch(batch, &UInt32Array::from(selected))?;
        let (out, counts) = match carried {
            Some((c, carried_count)) => {
                (concat_batches(&batch.schema(), &[c, picked])?, std::iter::once(carried_count).chain(counts).collect())
            }
            None => (picked, counts),
        };
        Ok((self.project(out)?, counts))
    }

    /// The last key's row and its count, once the input has ended.
    fn finish(&mut self) -> ArrowResult<Option<(RecordBatch, Vec<u64>)>> {
        self.pending.take().map(|p| Ok((self.project(p.row)?, vec![p.count]))).transpose()
    }

    fn project(&self, batch: RecordBatch) -> ArrowResult<RecordBatch> {
        let columns =
            (0..batch.num_columns()).filter(|i| Some(*i) != self.created).map(|i| Arc::clone(batch.column(i)));
        RecordBatch::try_new(Arc::clone(&self.out_schema), columns.collect())
    }
}
