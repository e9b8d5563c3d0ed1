//! Each partition's rows once, whatever a cluster re-runs.
//!
//! When an executor is lost, Ballista runs the tasks whose output was there
//! again, and a stage reading that output can be handed the rows of a
//! partition from two runs of it (the first run's output that survived on
//! another executor, and the second's), or one run's output twice (seen
//! once: one run's rows reaching the caller twice). Rows carry no identity to
//! drop copies by, and counting a row twice is wrong for a row count, a sum
//! or a count of entities. So:
//!
//! - [`AttemptStampExec`] appends columns saying what the partition is (a
//!   hash of what it reads: its files and byte ranges, or the shuffle
//!   partitions it fetches) and which run of it (a random number drawn when
//!   the partition is executed), and, before an exchange that keeps each
//!   partition's order (the gather of every partition to the caller), the
//!   row's position in the run's output;
//! - [`FirstAttemptExec`] (or [`first_attempts`] on a stream), after the
//!   exchange, keeps for each partition the rows of the first run it sees
//!   (and with positions, each position once), then drops the columns.
//!
//! Positions work only where a run's rows arrive in the order they were
//! produced: then every copy of a run's output is an ascending sequence of
//! positions, however copies interleave, so a position at or below the
//! highest one kept is a copy. A hash exchange (Ballista's sort shuffle)
//! reorders rows, so there a run delivered twice is not caught (not seen).
//!
//! The partition is named by its content, not its index: Ballista hands a
//! task a plan cut down to the task's partitions, numbered from 0, so an
//! index means nothing across tasks. A partition whose input this module
//! cannot name (rows held in the plan) gets a name of its own per run: its
//! copies are all kept, as without this module.
//!
//! A run's output reaches a later stage only once it is complete (Ballista
//! registers a task's shuffle files when the task has finished), and every
//! run of a partition reads the same input through the same deterministic
//! operators, so any one run's rows are the partition's rows.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// The columns [`AttemptStampExec`] appends (what the partition is, which
/// run of it, optionally the row's position in the run); no source or view
/// uses these names.
pub(crate) const PARTITION: &str = "__feature_store_partition";
pub(crate) const ATTEMPT: &str = "__feature_store_attempt";
pub(crate) const POSITION: &str = "__feature_store_position";
const STAMP: [&str; 3] = [PARTITION, ATTEMPT, POSITION];

/// A random number for one run of a partition: the process's random hash
/// keys over the time and a counter, so two runs (in one process or two)
/// differ but for a chance of one in 2^64.
fn run_number() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

/// A name for partition `k` of `plan` that every run of it on any executor
/// computes alike: a hash of the files and byte ranges it scans, or of the
/// shuffle partitions it fetches, through operators that keep partitions
/// apart (an operator with fewer partitions than its input is taken to read
/// all of them). `None` when a leaf is neither.
fn partition_name(plan: &Arc<dyn ExecutionPlan>, k: usize) -> Option<u64> {
    // Fixed keys: executors of one build hash alike.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    describe(plan, k, &mut h)?;
    Some(h.finish())
}

fn describe(plan: &Arc<dyn ExecutionPlan>, k: usize, h: &mut impl Hasher) -> Option<()> {
    use std::hash::Hash;

    use ballista_core::execution_plans::ShuffleReaderExec;
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        let config = scan.data_source().downcast_ref::<FileScanConfig>()?;
        "files".hash(h);
        for file in config.file_groups.get(k)?.files() {
            file.object_meta.location.as_ref().hash(h);
            file.range.as_ref().map(|r| (r.start, r.end)).hash(h);
        }
        return Some(());
    }
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        let k = if reader.broadcast { 0 } else { k };
        let mut fetched: Vec<(usize, usize)> =
            reader.partition.get(k)?.iter().map(|l| (l.partition_id.stage_id, l.partition_id.partition_id)).collect();
        fetched.sort_unstable();
        fetched.dedup();
        ("shuffle", reader.stage_id, fetched).hash(h);
        return Some(());
    }
    let children = plan.children();
    if children.is_empty() {
        return None;
    }
    if plan.is::<datafusion::physical_plan::union::UnionExec>() {
        // Partition `k` is one child's partition, counting on from the children before it.
        let mut k = k;
        for child in children {
            let n = child.output_partitioning().partition_count();
            if k < n {
                return describe(child, k, h);
            }
            k -= n;
        }
        return None;
    }
    let partitions = plan.output_partitioning().partition_count();
    for child in children {
        let n = child.output_partitioning().partition_count();
        if n == partitions {
            describe(child, k, h)?;
        } else {
            for j in 0..n {
                describe(child, j, h)?;
            }
        }
    }
    Some(())
}

/// The input's rows with `UInt64` columns last: [`PARTITION`], a name for
/// the partition every run of it computes alike, [`ATTEMPT`], a number
/// drawn for this run of it, and with `positions`, [`POSITION`], the row's
/// position (0, 1, ...) in the run's output.
#[derive(Debug)]
pub struct AttemptStampExec {
    input: Arc<dyn ExecutionPlan>,
    positions: bool,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl AttemptStampExec {
    /// Stamps `input`'s rows; `positions` only before an exchange that
    /// keeps each partition's order (see the module's notes).
    pub fn new(input: Arc<dyn ExecutionPlan>, positions: bool) -> Self {
        let input_schema = input.schema();
        let stamp = if positions { &STAMP[..] } else { &STAMP[..2] };
        let fields: Vec<Arc<Field>> = input_schema
            .fields()
            .iter()
            .cloned()
            .chain(stamp.iter().map(|name| Arc::new(Field::new(*name, DataType::UInt64, false))))
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, input_schema.metadata().clone()));
        // Columns appended last leave the input's partitioning (by column
        // index) true of the output.
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Self { input, positions, schema, cache }
    }

    /// Whether rows carry their position in the run.
    pub fn positions(&self) -> bool {
        self.positions
    }
}

impl DisplayAs for AttemptStampExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttemptStampExec: positions={}", self.positions)
    }
}

impl ExecutionPlan for AttemptStampExec {
    fn name(&self) -> &str {
        "AttemptStampExec"
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
            children.try_into().map_err(|_| DataFusionError::Internal("AttemptStampExec takes one child".into()))?;
        Ok(Arc::new(Self::new(input, self.positions)))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let (run, positions) = (run_number(), self.positions);
        // Unnamed: a name of its own, so no other run's rows are dropped for it.
        let name = partition_name(&self.input, partition).unwrap_or_else(run_number);
        let input = self.input.execute(partition, context)?;
        let schema = Arc::clone(&self.schema);
        let out = Arc::clone(&schema);
        let mut next: u64 = 0;
        let stream = input.map(move |batch| {
            let batch = batch?;
            let n = batch.num_rows();
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(UInt64Array::from_value(name, n)));
            columns.push(Arc::new(UInt64Array::from_value(run, n)));
            if positions {
                columns.push(Arc::new(UInt64Array::from_iter_values(next..next + n as u64)));
                next += n as u64;
            }
            Ok(RecordBatch::try_new_with_options(
                Arc::clone(&out),
                columns,
                &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The input's rows of the first run of each stamped partition (each
/// position once, when stamped with positions), without the stamp columns.
/// Works per partition: a partition of this node sees every run of a
/// stamped partition that reaches it.
#[derive(Debug)]
pub struct FirstAttemptExec {
    input: Arc<dyn ExecutionPlan>,
    cache: Arc<PlanProperties>,
}

impl FirstAttemptExec {
    /// `input`'s rows once each; its last columns must be an
    /// [`AttemptStampExec`]'s.
    pub fn try_new(input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let (schema, _) = without_stamp(&input.schema())?;
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Ok(Self { input, cache })
    }
}

/// `schema` without its last columns, which must be a stamp, and the
/// stamp's width (2, or 3 with positions).
fn without_stamp(schema: &SchemaRef) -> Result<(SchemaRef, usize)> {
    let n = schema.fields().len();
    let ends_with = |stamp: &[&str]| {
        n >= stamp.len()
            && stamp.iter().enumerate().all(|(i, name)| {
                let f = schema.field(n - stamp.len() + i);
                f.name() == name && f.data_type() == &DataType::UInt64
            })
    };
    let width = if ends_with(&STAMP) {
        3
    } else if ends_with(&STAMP[..2]) {
        2
    } else {
        return Err(DataFusionError::Internal(format!("the last columns are not a stamp {STAMP:?}")));
    };
    Ok((Arc::new(schema.project(&(0..n - width).collect::<Vec<_>>())?), width))
}

impl DisplayAs for FirstAttemptExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FirstAttemptExec")
    }
}

impl ExecutionPlan for FirstAttemptExec {
    fn name(&self) -> &str {
        "FirstAttemptExec"
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
            children.try_into().map_err(|_| DataFusionError::Internal("FirstAttemptExec takes one child".into()))?;
        Ok(Arc::new(Self::try_new(input)?))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        first_attempts(self.input.execute(partition, context)?)
    }
}

/// [`FirstAttemptExec`] on a stream: its rows of the first run of each
/// stamped partition, each position once, without the stamp columns (its last three).
pub(crate) fn first_attempts(input: SendableRecordBatchStream) -> Result<SendableRecordBatchStream> {
    let (schema, width) = without_stamp(&input.schema())?;
    let out = Arc::clone(&schema);
    let mut runs = FirstRuns::default();
    let stream = input.map(move |batch| {
        let batch = batch?;
        let n = batch.num_columns() - width;
        let keep = runs.keep(batch.column(n), batch.column(n + 1), (width == 3).then(|| batch.column(n + 2)))?;
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&out),
            batch.columns()[..n].to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        Ok(match keep {
            None => batch,
            Some(keep) => datafusion::arrow::compute::filter_record_batch(&batch, &keep)?,
        })
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}

/// The run chosen for each partition name (the first seen), and the
/// position after the highest one kept from it (with positions).
#[derive(Default)]
struct FirstRuns {
    chosen: HashMap<u64, (u64, u64)>,
    dropped: u64,
}

impl FirstRuns {
    /// Which rows to keep (`None`: all of them).
    fn keep(
        &mut self,
        names: &Arc<dyn Array>,
        runs: &Arc<dyn Array>,
        positions: Option<&Arc<dyn Array>>,
    ) -> Result<Option<BooleanArray>> {
        let column = |a: &Arc<dyn Array>| {
            a.as_primitive_opt::<UInt64Type>()
                .filter(|s| s.null_count() == 0)
                .map(|s| s.values().clone())
                .ok_or_else(|| DataFusionError::Internal("a partition stamp is not UInt64 without nulls".into()))
        };
        let (names, runs) = (column(names)?, column(runs)?);
        let positions = positions.map(column).transpose()?;
        let mut keep: Option<Vec<bool>> = None;
        // Rows come in long stretches of one run: one lookup per stretch.
        let mut i = 0;
        while i < names.len() {
            let (name, run) = (names[i], runs[i]);
            let end = (i..names.len()).find(|&j| names[j] != name || runs[j] != run).unwrap_or(names.len());
            let (chosen, next) = self.chosen.entry(name).or_insert((run, 0));
            for j in i..end {
                let kept = match &positions {
                    None => *chosen == run,
                    Some(p) => *chosen == run && p[j] >= *next,
                };
                if kept && let Some(p) = &positions {
                    *next = p[j] + 1;
                }
                match (&mut keep, kept) {
                    (Some(k), _) => k.push(kept),
                    (None, true) => {}
                    (None, false) => keep = Some(std::iter::repeat_n(true, j).chain([false]).collect()),
                }
            }
            i = end;
        }
        let Some(keep) = keep else { return Ok(None) };
        if self.dropped == 0 {
            tracing::warn!("rows the cluster delivered twice (after an executor was lost) are dropped");
        }
        self.dropped += keep.iter().filter(|k| !**k).count() as u64;
        Ok(Some(BooleanArray::from(keep)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, UInt64Type};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, collect, collect_partitioned};
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::{AttemptStampExec, FirstAttemptExec};

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().values().to_vec())
            .collect()
    }

    /// (partition name, run) of a stamped batch's first row.
    fn stamp(b: &RecordBatch) -> (u64, u64) {
        let column = |name| b.column_by_name(name).unwrap().as_primitive::<UInt64Type>().value(0);
        (column(super::PARTITION), column(super::ATTEMPT))
    }

    /// A scan of two Parquet files, a partition each: `[1, 2, 3]` and `[10]`.
    async fn two_files(ctx: &SessionContext, dir: &std::path::Path) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        for (name, v) in [("a.parquet", vec![1, 2, 3]), ("b.parquet", vec![10])] {
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(v))]).unwrap();
            let file = std::fs::File::create(dir.join(name)).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
        let df = ctx.read_parquet(dir.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        assert_eq!(plan.output_partitioning().partition_count(), 2);
        plan
    }

    #[tokio::test]
    async fn a_partition_run_twice_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        // As on a cluster (`cluster_session_config`): a partition reads its own files only.
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(2)
            .set_bool("datafusion.execution.enable_file_stream_work_stealing", false);
        let ctx = SessionContext::new_with_config(config);
        let stamped: Arc<dyn ExecutionPlan> = Arc::new(AttemptStampExec::new(two_files(&ctx, dir.path()).await, true));
        // Two runs of each partition, as a stage reading both would see them.
        let first = collect_partitioned(Arc::clone(&stamped), ctx.task_ctx()).await.unwrap();
        let second = collect_partitioned(Arc::clone(&stamped), ctx.task_ctx()).await.unwrap();
        let (p0, p1) = if values(&first[0])[0] == 1 { (0, 1) } else { (1, 0) };
        assert_eq!(stamp(&first[p0][0]).0, stamp(&second[p0][0]).0, "a partition has one name in every run");
        assert_ne!(stamp(&first[p0][0]).0, stamp(&first[p1][0]).0, "two partitions have two names");
        assert_ne!(stamp(&first[p0][0]).1, stamp(&second[p0][0]).1, "each run draws its own number");
        assert_eq!(stamp(&first[p0][0]), stamp(&first[p0][1]), "one stamp per run");
        // The second run of [1, 2, 3] arrives first ([1, 2]); then a batch
        // mixing the runs ([1, 2] first, [3] second); then the second run's
        // [1, 2] again (a file fetched twice); then [10] twice.
        let schema = first[p0][0].schema();
        let mixed = concat_batches(&schema, [&first[p0][0], &second[p0][1]]).unwrap();
        let input = vec![
            second[p0][0].clone(),
            mixed,
            second[p0][0].clone(),
            first[p0][1].clone(),
            second[p0][1].clone(),
            first[p1][0].clone(),
            second[p1][0].clone(),
            first[p1][0].clone(),
        ];
        let replay = MemorySourceConfig::try_new_exec(&[input], schema, None).unwrap();
        let once = Arc::new(FirstAttemptExec::try_new(replay).unwrap());
        let out = collect(once, ctx.task_ctx()).await.unwrap();
        assert_eq!(out[0].num_columns(), 1, "the stamp is dropped");
        assert_eq!(values(&out), vec![1, 2, 3, 10]);
        // Without positions (after a hash exchange, which reorders rows):
        // one run of each partition, whichever arrives first.
        let plain: Arc<dyn ExecutionPlan> = Arc::new(AttemptStampExec::new(two_files(&ctx, dir.path()).await, false));
        let first = collect_partitioned(Arc::clone(&plain), ctx.task_ctx()).await.unwrap();
        let second = collect_partitioned(plain, ctx.task_ctx()).await.unwrap();
        let mut input: Vec<RecordBatch> = second[p0].clone();
        input.extend(first[p0].iter().chain(&first[p1]).chain(&second[p1]).cloned());
        let replay = MemorySourceConfig::try_new_exec(&[input], first[p0][0].schema(), None).unwrap();
        let out = collect(Arc::new(FirstAttemptExec::try_new(replay).unwrap()), ctx.task_ctx()).await.unwrap();
        assert_eq!(values(&out), vec![1, 2, 3, 10]);
    }

    #[tokio::test]
    async fn rows_of_an_unnamed_partition_are_all_kept() {
        // Rows held in the plan: nothing names the partition across runs.
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![7]))]).unwrap();
        let source = MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap();
        let stamped: Arc<dyn ExecutionPlan> = Arc::new(AttemptStampExec::new(source, false));
        let ctx = SessionContext::new();
        let mut runs = collect(Arc::clone(&stamped), ctx.task_ctx()).await.unwrap();
        runs.extend(collect(stamped, ctx.task_ctx()).await.unwrap());
        assert_ne!(stamp(&runs[0]).0, stamp(&runs[1]).0);
        let replay = MemorySourceConfig::try_new_exec(&[runs.clone()], runs[0].schema(), None).unwrap();
        let out = collect(Arc::new(FirstAttemptExec::try_new(replay).unwrap()), ctx.task_ctx()).await.unwrap();
        assert_eq!(values(&out), vec![7, 7]);
    }

    #[tokio::test]
    async fn one_run_delivered_twice_interleaved_is_kept_once() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = |v: Vec<i64>| RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(v))]).unwrap();
        let source = MemorySourceConfig::try_new_exec(
            &[vec![batch(vec![1, 2]), batch(vec![3]), batch(vec![4, 5])]],
            schema.clone(),
            None,
        )
        .unwrap();
        let ctx = SessionContext::new();
        let run = collect(Arc::new(AttemptStampExec::new(source, true)), ctx.task_ctx()).await.unwrap();
        // Two reads of one run's output, their batches interleaved.
        let input = vec![
            run[0].clone(),
            run[0].clone(),
            run[1].clone(),
            run[0].clone(),
            run[2].clone(),
            run[1].clone(),
            run[2].clone(),
        ];
        let replay = MemorySourceConfig::try_new_exec(&[input], run[0].schema(), None).unwrap();
        let out = collect(Arc::new(FirstAttemptExec::try_new(replay).unwrap()), ctx.task_ctx()).await.unwrap();
        assert_eq!(values(&out), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_plan_without_the_stamp_last_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let source = MemorySourceConfig::try_new_exec(&[vec![]], schema, None).unwrap();
        assert!(FirstAttemptExec::try_new(source).is_err());
    }
}
