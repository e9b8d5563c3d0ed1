//! `TilesExec`: an aggregation view's online tile rows built from its events
//! per hash partition of the keys, where the events are (the local engine's
//! partitions, or a cluster's executors), so only tile rows travel on. Its
//! input is sorted by key (DataFusion's sort, which spills under the memory
//! limit), and it builds each run of keys as soon as the run is complete:
//! memory holds one batch and the current key's events, not a partition.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use feature_store_core::aggregation::tile_rows::{TileWindow, tile_rows, tile_rows_schema};
use feature_store_core::model::FeatureView;
use futures::StreamExt;

/// Output rows per batch.
const BATCH_ROWS: usize = 8192;

/// What a [`TilesExec`] builds: the view, its key columns, the blocks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TilesSpec {
    /// The aggregation view.
    pub(crate) view: FeatureView,
    /// The join-key columns of the events, by name.
    pub(crate) keys: Vec<String>,
    /// The blocks rewritten.
    pub(crate) window: TileWindow,
    /// Whether the user set a memory limit: then a key whose events cannot
    /// fit in it is an error; without one, the pool (materialization's
    /// default) only steers the sort's spilling.
    pub(crate) limited: bool,
}

/// Per input partition, which must hold every event of its keys sorted by
/// key: the tile rows of those events ([`tile_rows`]), a batch's complete
/// keys at a time.
pub(crate) struct TilesExec {
    input: Arc<dyn ExecutionPlan>,
    spec: Arc<TilesSpec>,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for TilesExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TilesExec").field("view", &self.spec.view.name).finish_non_exhaustive()
    }
}

impl TilesExec {
    /// Tile rows of `spec` from `input`'s partitions.
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, spec: TilesSpec) -> Self {
        let schema = tile_rows_schema(&spec.view);
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            input.boundedness(),
        ));
        Self { input, spec: Arc::new(spec), cache, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// [`TilesExec::spec`] as JSON: the view's definition, not code.
    pub(crate) fn spec_json(&self) -> String {
        let s = &self.spec;
        serde_json::to_string(&(&s.view, &s.keys, &s.window, s.limited)).expect("definitions serialize")
    }

    /// A spec from [`TilesExec::spec_json`].
    pub(crate) fn spec_from_json(json: &str) -> std::result::Result<TilesSpec, String> {
        let (view, keys, window, limited) = serde_json::from_str(json).map_err(|e| format!("tile spec: {e}"))?;
        Ok(TilesSpec { view, keys, window, limited })
    }
}

impl DisplayAs for TilesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TilesExec: view={}, keys=[{}]", self.spec.view.name, self.spec.keys.join(", "))
    }
}

impl ExecutionPlan for TilesExec {
    fn name(&self) -> &str {
        "TilesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    /// Keys ascending: a planner must keep the sort below.
    fn required_input_ordering(&self) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        vec![
            key_order(&self.input.schema(), self.spec.keys.len())
                .map(datafusion::physical_expr::OrderingRequirements::from),
        ]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input]: [Arc<dyn ExecutionPlan>; 1] =
            children.try_into().map_err(|_| DataFusionError::Internal("TilesExec takes one child".into()))?;
        Ok(Arc::new(Self::new(input, self.spec.as_ref().clone())))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        // What this partition holds at once (the current key's events, and
        // their copy while its tiles are built) is reserved from the pool, so
        // a key too large for the limit is an error that says what to raise,
        // not memory past the limit.
        let reservation = MemoryConsumer::new(format!("TilesExec[{partition}]")).register(context.memory_pool());
        let pool_limit = context.memory_pool().memory_limit();
        let input = self.input.execute(partition, context)?;
        let spec = Arc::clone(&self.spec);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema: SchemaRef = tile_rows_schema(&spec.view);
        let runs = KeyRuns::new(&input.schema(), spec.keys.len())?;
        let view_name = spec.view.name.clone();
        let limited = spec.limited;
        let reserve = move |runs: &KeyRuns, complete: &[RecordBatch]| -> Result<()> {
            let building: usize = complete.iter().map(slice_bytes).sum();
            // The runs' batches and their concatenated copy.
            let need = runs.pending_bytes + 2 * building;
            // The most one key takes: its events and their copy.
            let one_key = 2 * runs.pending_bytes.max(runs.completed_run_bytes);
            match reservation.try_resize(need) {
                Ok(()) => Ok(()),
                // One key needs more than half the pool: it cannot fit
                // beside the sort's share, however that spills.
                Err(e) if limited && matches!(pool_limit, MemoryLimit::Finite(l) if one_key > l / 2) => {
                    let run = if runs.completed_run_bytes > runs.pending_bytes {
                        complete.first()
                    } else {
                        runs.pending.first()
                    };
                    Err(one_key_too_large(&view_name, run, runs.key_count, one_key, &pool_limit, e))
                }
                // No single key is too large; the sort's sorted rows still
                // hold their share as they stream out: go on uncounted rather
                // than take the sort's memory.
                Err(_) => Ok(()),
            }
        };
        let build = move |events: Vec<RecordBatch>| -> Result<Vec<Result<RecordBatch>>> {
            let timer = baseline.elapsed_compute().timer();
            let Some(first) = events.first() else { return Ok(Vec::new()) };
            let events = datafusion::arrow::compute::concat_batches(&first.schema(), &events)?;
            let keys: Vec<&str> = spec.keys.iter().map(String::as_str).collect();
            let out = tile_rows(&spec.view, &keys, &events, &spec.window)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            timer.done();
            baseline.record_output(out.num_rows());
            Ok((0..out.num_rows())
                .step_by(BATCH_ROWS)
                .map(|at| Ok(out.slice(at, BATCH_ROWS.min(out.num_rows() - at))))
                .collect())
        };
        // Each input batch completes the keys before its last one; the last
        // key's events wait for the next batch (or the end).
        let stream = futures::stream::unfold(Some((input, runs, reserve)), move |state| {
            let build = build.clone();
            async move {
                let (mut input, mut runs, reserve) = state?;
                loop {
                    let (complete, more) = match input.next().await {
                        Some(Ok(batch)) => match runs.push(batch) {
                            Ok(complete) => (complete, true),
                            Err(e) => return Some((futures::stream::iter(vec![Err(e)]), None)),
                        },
                        Some(Err(e)) => return Some((futures::stream::iter(vec![Err(e)]), None)),
                        None => (runs.finish(), false),
                    };
                    if let Err(e) = reserve(&runs, &complete) {
                        return Some((futures::stream::iter(vec![Err(e)]), None));
                    }
                    let out = match build(complete) {
                        Ok(out) => out,
                        Err(e) => return Some((futures::stream::iter(vec![Err(e)]), None)),
                    };
                    // Built: only the current key's events stay held.
                    let _ = reserve(&runs, &[]);
                    match (out.is_empty(), more) {
                        (true, true) => continue,
                        (true, false) => return None,
                        (false, true) => return Some((futures::stream::iter(out), Some((input, runs, reserve)))),
                        (false, false) => return Some((futures::stream::iter(out), None)),
                    }
                }
            }
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream.boxed())))
    }
}

/// The bytes of `batch`'s rows (a slice counts its rows, not the buffers it shares).
fn slice_bytes(batch: &RecordBatch) -> usize {
    batch.columns().iter().map(|c| c.to_data().get_slice_memory_size().unwrap_or(0)).sum()
}

/// One key's events alone exceed what the memory limit lets a partition hold.
fn one_key_too_large(
    view: &str,
    run: Option<&RecordBatch>,
    key_count: usize,
    need: usize,
    limit: &MemoryLimit,
    e: DataFusionError,
) -> DataFusionError {
    let key = match run {
        Some(b) if key_count > 0 && b.num_rows() > 0 => {
            let values: Vec<String> = (0..key_count)
                .map(|i| {
                    datafusion::arrow::util::display::array_value_to_string(b.column(i), 0)
                        .unwrap_or_else(|_| "?".to_owned())
                })
                .collect();
            format!("the events of join key ({})", values.join(", "))
        }
        _ => "the events (the view has no entities, so they are one key)".to_owned(),
    };
    let pool = match limit {
        MemoryLimit::Finite(l) => format!(" (a pool of {} MiB)", l >> 20),
        _ => String::new(),
    };
    let root = e.find_root().to_string();
    DataFusionError::ResourcesExhausted(format!(
        "aggregation view \"{view}\": {key} need about {} MiB in memory at once to build their tiles, more than the \
         memory limit allows{pool}: {root}; raise offline_store.memory_limit (--memory-limit in the CLI; a \
         materialization without one uses 1 GiB) to at least about {} MiB, or materialize a shorter time range",
        need.div_ceil(1 << 20),
        // The pool is half the limit, shared with the sort below.
        (need * 4).div_ceil(1 << 20),
    ))
}

/// Keys ascending, nulls first: the order [`TilesExec`] reads (`None`
/// without keys: a view without entities has one key).
pub(crate) fn key_order(schema: &SchemaRef, key_count: usize) -> Option<datafusion::physical_expr::LexOrdering> {
    use datafusion::arrow::compute::SortOptions;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::expressions::Column;
    let column = |i: usize| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>;
    datafusion::physical_expr::LexOrdering::new(
        (0..key_count).map(|i| PhysicalSortExpr::new(column(i), SortOptions { descending: false, nulls_first: true })),
    )
}

/// Splits batches sorted by their leading key columns into complete runs
/// of keys: what [`KeyRuns::push`] returns holds every row of its keys
/// seen so far and none of a key still to come.
struct KeyRuns {
    converter: Option<RowConverter>,
    key_count: usize,
    /// Rows of the last key seen, which the next batch may continue.
    pending: Vec<RecordBatch>,
    pending_key: Option<OwnedRow>,
    /// The bytes of `pending`'s rows.
    pending_bytes: usize,
    /// The bytes of the key run the last push or finish completed from
    /// `pending` (0 when none): the largest single key among its output.
    completed_run_bytes: usize,
}

impl KeyRuns {
    fn new(schema: &SchemaRef, key_count: usize) -> Result<Self> {
        let converter = (key_count > 0)
            .then(|| {
                RowConverter::new((0..key_count).map(|i| SortField::new(schema.field(i).data_type().clone())).collect())
            })
            .transpose()?;
        Ok(Self {
            converter,
            key_count,
            pending: Vec::new(),
            pending_key: None,
            pending_bytes: 0,
            completed_run_bytes: 0,
        })
    }

    /// `batch`'s rows added; returns the rows of keys now complete.
    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let Some(converter) = &self.converter else {
            // No keys: every row is the one key's, complete at the end.
            self.pending_bytes += slice_bytes(&batch);
            self.pending.push(batch);
            return Ok(Vec::new());
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let rows = converter.convert_columns(&batch.columns()[..self.key_count])?;
        let mut last_start = n - 1;
        while last_start > 0 && rows.row(last_start - 1) == rows.row(n - 1) {
            last_start -= 1;
        }
        let mut complete = Vec::new();
        self.completed_run_bytes = 0;
        if self.pending_key.as_ref().is_some_and(|k| k.row() != rows.row(0)) || last_start > 0 {
            complete.append(&mut self.pending);
            self.completed_run_bytes = std::mem::take(&mut self.pending_bytes);
        }
        if last_start > 0 {
            complete.push(batch.slice(0, last_start));
        }
        let rest = batch.slice(last_start, n - last_start);
        self.pending_bytes += slice_bytes(&rest);
        self.pending.push(rest);
        self.pending_key = Some(rows.row(n - 1).owned());
        Ok(complete)
    }

    /// The last key's rows, at the end of the input.
    fn finish(&mut self) -> Vec<RecordBatch> {
        self.pending_key = None;
        self.completed_run_bytes = std::mem::take(&mut self.pending_bytes);
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::KeyRuns;

    fn keys(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
            .collect()
    }

    /// Runs that span batches come out whole, once each, in order.
    #[test]
    fn runs_of_keys_come_out_whole() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let batch =
            |v: Vec<i64>| RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(v))]).unwrap();
        let mut runs = KeyRuns::new(&schema, 1).unwrap();
        let mut out = Vec::new();
        for input in [vec![1, 1, 2], vec![2, 2], vec![2], vec![3, 4, 4], vec![5], vec![6, 6]] {
            let complete = runs.push(batch(input)).unwrap();
            let got = keys(&complete);
            // Nothing emitted has a key still pending.
            if let (Some(last), Some(next)) = (got.last(), keys(&runs.pending).first()) {
                assert!(last < next, "{got:?} then pending {next}");
            }
            out.extend(got);
        }
        out.extend(keys(&runs.finish()));
        assert_eq!(out, vec![1, 1, 2, 2, 2, 2, 3, 4, 4, 5, 6, 6]);
    }
}
