//! `AsOfJoinExec`: the point-in-time join as a DataFusion physical operator.
//!
//! Algorithm: a hash as-of join. The right (feature) side is collected once,
//! grouped by join key, and each group sorted by (event time, created time,
//! tie-break); the left (entity) side streams through in order and each row
//! binary-searches its key's group for the last event time `<=` its own.
//! Cost is O(m log m) to build and O(n log k) to probe (k = rows per key),
//! the complexity of a sort-merge as-of join, without sorting the entity
//! side and without a final sort to restore input order: output rows leave
//! in input order by construction.
//!
//! Right input layout (made by the planner): `[keys..., event_ts, created_ts?, features...]`,
//! keys already cast to the canonical key types and features to their output types.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Builder};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::utils::memory::get_record_batch_memory_size;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream, execute_stream,
};
use futures::{StreamExt, TryStreamExt};

use super::spill::{Merger, SpillFile, SpillWriter, partition_of, scatter};
use super::timestamps::scaled;

/// What one as-of join node joins.
#[derive(Debug, Clone)]
pub(crate) struct AsOfSpec {
    /// View name, for messages and plan display.
    pub view: String,
    /// The view and its source, for errors met while reading its rows.
    pub context: String,
    /// Positions of the join keys in the left schema.
    pub left_keys: Vec<usize>,
    /// Position of the entity timestamp in the left schema.
    pub left_ts: usize,
    /// Canonical type of each key; both sides are cast to it.
    pub key_types: Vec<DataType>,
    /// Whether the right side carries a created-timestamp column.
    pub has_created: bool,
    /// The features appended to the output (right layout order).
    pub features: Vec<Field>,
    /// Unit both sides' event times are compared in (the finer of the two).
    pub ts_unit: TimeUnit,
    /// Ttl in `ts_unit`; `None` is unlimited.
    pub ttl: Option<i64>,
}

/// Point-in-time join of a left (entity) plan with a right (feature rows) plan.
#[derive(Debug)]
pub struct AsOfJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    spec: Arc<AsOfSpec>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl AsOfJoinExec {
    pub(crate) fn new(left: Arc<dyn ExecutionPlan>, right: Arc<dyn ExecutionPlan>, spec: AsOfSpec) -> Self {
        let left_schema = left.schema();
        let fields: Vec<Arc<Field>> = left_schema
            .fields()
            .iter()
            .cloned()
            .chain(spec.features.iter().map(|f| Arc::new(f.clone().with_nullable(true))))
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, left_schema.metadata().clone()));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self { left, right, spec: Arc::new(spec), schema, cache }
    }
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AsOfJoinExec: view={}, keys={}, features={}, ttl={:?} {:?}",
            self.spec.view,
            self.spec.left_keys.len(),
            self.spec.features.len(),
            self.spec.ttl,
            self.spec.ts_unit
        )
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true, false]
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
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] =
            children.try_into().map_err(|_| DataFusionError::Internal("AsOfJoinExec takes two children".into()))?;
        Ok(Arc::new(Self::new(left, right, (*self.spec).clone())))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("AsOfJoinExec has one partition, asked for {partition}")));
        }
        // Left partitions are read one after another, so input order is kept.
        let left_parts = self.left.output_partitioning().partition_count();
        let left_streams =
            (0..left_parts).map(|p| self.left.execute(p, Arc::clone(&context))).collect::<Result<Vec<_>>>()?;
        let left = futures::stream::iter(left_streams).flatten();
        let right = Arc::clone(&self.right);
        let spec = Arc::clone(&self.spec);
        let schema = Arc::clone(&self.schema);
        let out_schema = Arc::clone(&schema);
        // The build side starts now, as its own task: every view of a chain
        // reads and indexes its rows at once instead of one after another
        // (the task is aborted if the stream is dropped).
        let build = SpawnedTask::spawn(BuildSide::collect(right, Arc::clone(&context), Arc::clone(&spec)));
        let joined = futures::stream::once(async move {
            let collected = build.join().await.map_err(|e| DataFusionError::External(Box::new(e)))??;
            Ok::<_, DataFusionError>(match collected {
                Collected::Memory(build) => {
                    // Batches are probed on blocking threads, several at once,
                    // and handed on in their input order.
                    let build = Arc::new(build);
                    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
                    left.map(move |batch| {
                        let (build, spec, schema) = (Arc::clone(&build), Arc::clone(&spec), Arc::clone(&out_schema));
                        async move {
                            let batch = batch?;
                            tokio::task::spawn_blocking(move || probe(&build, &spec, batch, &schema))
                                .await
                                .map_err(|e| DataFusionError::External(Box::new(e)))?
                        }
                    })
                    .buffered(parallel)
                    .boxed()
                }
                Collected::Spilled(parts) => grace_join(left.boxed(), parts, spec, out_schema, context).await?,
            })
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, joined)))
    }
}

/// Multiply-shift hashing for integer keys; SipHash is needlessly slow here.
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(26);
    }
}

type IntMap<V> = HashMap<i64, V, BuildHasherDefault<IntHasher>>;

/// Maps a join key to its group number.
enum KeyIndex {
    /// A view without entities: every row is in group 0.
    Unkeyed,
    /// One integer key; after indexing, the map holds each group's packed range.
    Int(IntMap<u64>),
    /// Any other key, as row-format bytes.
    Rows { converter: RowConverter, map: HashMap<Box<[u8]>, u32> },
}

fn cast_keys(columns: &[ArrayRef], types: &[DataType]) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .zip(types)
        .map(|(c, t)| if c.data_type() == t { Ok(Arc::clone(c)) } else { Ok(cast(c, t)?) })
        .collect()
}

fn any_null(columns: &[ArrayRef], i: usize) -> bool {
    columns.iter().any(|c| c.is_null(i))
}

/// Group of a row whose key is null: it joins nothing.
const NO_GROUP: u32 = u32::MAX;

impl KeyIndex {
    /// The index, each row's group ([`NO_GROUP`] for a null key; empty when
    /// unkeyed) and the number of groups.
    fn build(keys: &[ArrayRef], types: &[DataType]) -> Result<(Self, Vec<u32>, u32)> {
        let n = keys.first().map_or(0, |k| k.len());
        if keys.is_empty() {
            return Ok((Self::Unkeyed, Vec::new(), 1));
        }
        let too_many =
            || DataFusionError::ResourcesExhausted("more than 4,294,967,294 distinct keys in one view".into());
        let mut groups = Vec::with_capacity(n);
        let mut next = 0u32;
        if types.len() == 1 && types[0] == DataType::Int64 {
            let a = keys[0].as_primitive::<Int64Type>();
            let mut map = IntMap::default();
            for i in 0..n {
                groups.push(if a.is_null(i) {
                    NO_GROUP
                } else {
                    *map.entry(a.value(i)).or_insert_with(|| {
                        next += 1;
                        u64::from(next - 1)
                    }) as u32
                });
            }
            if next == NO_GROUP {
                return Err(too_many());
            }
            return Ok((Self::Int(map), groups, next));
        }
        let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let rows = converter.convert_columns(keys)?;
        let mut map: HashMap<Box<[u8]>, u32> = HashMap::new();
        for i in 0..n {
            groups.push(if any_null(keys, i) {
                NO_GROUP
            } else {
                let key = rows.row(i);
                match map.get(key.as_ref()) {
                    Some(g) => *g,
                    None => {
                        map.insert(key.as_ref().into(), next);
                        next += 1;
                        next - 1
                    }
                }
            });
        }
        if next == NO_GROUP {
            return Err(too_many());
        }
        Ok((Self::Rows { converter, map }, groups, next))
    }
}

/// The indexed feature rows of one view, with their memory reservation.
struct BuildSide {
    data: Indexed,
    _reservation: MemoryReservation,
}

/// Feature rows grouped by key, each group sorted by time. The sorted order
/// is a permutation of the collected rows: copying the feature columns into
/// it would cost a gather per column for no faster probe (a probe touches one
/// row of a group, wherever it lies).
struct Indexed {
    index: KeyIndex,
    /// Each group's range in `ts`/`rows`, packed by [`pack`]; the integer
    /// index keeps ranges in its map instead, saving the probe one cache miss.
    ranges: Vec<u64>,
    /// Event time of each sorted row, in the spec's unit.
    ts: Vec<i64>,
    /// Row of `features` of each sorted row.
    rows: Vec<u32>,
    /// Feature columns in collected order.
    features: Vec<ArrayRef>,
}

/// A group's `start..end` in one word (the rows of one build side fit in `u32`).
#[inline]
fn pack(start: usize, end: usize) -> u64 {
    ((start as u64) << 32) | end as u64
}

#[inline]
fn unpack(range: u64) -> (usize, usize) {
    ((range >> 32) as usize, (range & 0xffff_ffff) as usize)
}

/// Asks the CPU to start loading `p`'s cache line, so searches several rows
/// ahead overlap their misses instead of waiting for each in turn.
#[inline]
#[allow(unsafe_code)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many rows ahead the probe prefetches.
const PREFETCH_AHEAD: usize = 16;

/// The right side, in memory or (over the memory limit) spilled in partitions.
enum Collected {
    Memory(BuildSide),
    Spilled(Vec<SpillFile>),
}

static SPILLED_JOINS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many as-of joins in this process have spilled to disk (a diagnostic
/// for tests and operators; each spilling view counts once).
pub fn spilled_joins() -> u64 {
    SPILLED_JOINS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Number of partitions a spilled join uses; each must fit in memory.
const SPILL_PARTITIONS: usize = 32;

fn over_limit(e: DataFusionError, view: &str, what: &str) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{what} of view \"{view}\" do not fit in the memory limit ({e}); raise offline_store.memory_limit / --memory-limit or narrow the entity time range"
    ))
}

/// Feature rows over the limit: move those collected so far into spill
/// partitions and release their memory. A view without entities cannot be
/// split by key, so for it the limit is an error.
fn start_spill(
    e: DataFusionError,
    batches: &mut Vec<RecordBatch>,
    schema: &SchemaRef,
    spec: &AsOfSpec,
    reservation: &MemoryReservation,
) -> Result<Vec<SpillWriter>> {
    if spec.key_types.is_empty() {
        return Err(over_limit(e, &spec.view, "the feature rows"));
    }
    let mut writers = spill_writers(schema, SPILL_PARTITIONS)?;
    let keys = right_keys(spec);
    for b in batches.drain(..) {
        scatter_by_key(&b, &keys, &spec.key_types, 0, &mut writers, false)?;
    }
    reservation.free();
    Ok(writers)
}

fn spill_writers(schema: &SchemaRef, partitions: usize) -> Result<Vec<SpillWriter>> {
    (0..partitions).map(|_| SpillWriter::new(schema)).collect()
}

impl BuildSide {
    async fn collect(
        right: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
        spec: Arc<AsOfSpec>,
    ) -> Result<Collected> {
        let reservation = MemoryConsumer::new(format!("AsOfJoin[{}]", spec.view)).register(context.memory_pool());
        let schema = right.schema();
        let mut stream = execute_stream(right, context)?;
        let mut batches = Vec::new();
        let mut spill: Option<Vec<SpillWriter>> = None;
        let keys = right_keys(&spec);
        while let Some(batch) = stream.next().await {
            // A damaged file surfaces here; say whose rows were being read.
            let batch = batch.map_err(|e| e.context(format!("reading the rows of {}", spec.context)))?;
            if spill.is_none() {
                match reservation.try_grow(get_record_batch_memory_size(&batch)) {
                    Ok(()) => {
                        batches.push(batch);
                        continue;
                    }
                    Err(e) => spill = Some(start_spill(e, &mut batches, &schema, &spec, &reservation)?),
                }
            }
            let writers = spill.as_mut().expect("spilling");
            scatter_by_key(&batch, &keys, &spec.key_types, 0, writers, false)?;
        }
        let writers = match spill {
            Some(writers) => writers,
            // Concatenating copies the rows once more and the index adds ~40 bytes a row.
            None => match reservation.try_grow(working_memory(&batches)) {
                Ok(()) => return Ok(Collected::Memory(Self::index(batches, &schema, &spec, reservation).await?)),
                Err(e) => start_spill(e, &mut batches, &schema, &spec, &reservation)?,
            },
        };
        Ok(Collected::Spilled(writers.into_iter().map(SpillWriter::finish).collect::<Result<_>>()?))
    }

    /// Concatenates and indexes batches; `reservation` holds their size plus
    /// [`working_memory`], and shrinks back once the originals are dropped.
    async fn index(
        batches: Vec<RecordBatch>,
        schema: &SchemaRef,
        spec: &Arc<AsOfSpec>,
        reservation: MemoryReservation,
    ) -> Result<Self> {
        let copy: usize = batches.iter().map(get_record_batch_memory_size).sum();
        let batch = concat_batches(schema, &batches)?;
        drop(batches);
        reservation.shrink(copy.min(reservation.size()));
        let spec2 = Arc::clone(spec);
        let data = tokio::task::spawn_blocking(move || Indexed::new(batch, &spec2))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(Self { data, _reservation: reservation })
    }
}

/// Memory needed beyond the batches themselves to build the index.
fn working_memory(batches: &[RecordBatch]) -> usize {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    batches.iter().map(get_record_batch_memory_size).sum::<usize>() + rows * 40
}

/// Positions of the keys in the right layout (they come first).
fn right_keys(spec: &AsOfSpec) -> Vec<usize> {
    (0..spec.key_types.len()).collect()
}

/// Partitions a spilled join splits an oversized partition into.
const SUB_PARTITIONS: usize = 8;
/// How often a partition may be split again before the join gives up.
const MAX_SPLIT_LEVEL: u32 = 4;

/// Hash-partitions a batch by the key columns at `key_columns`.
fn scatter_by_key(
    batch: &RecordBatch,
    key_columns: &[usize],
    key_types: &[DataType],
    level: u32,
    writers: &mut [SpillWriter],
    entity_side: bool,
) -> Result<()> {
    let columns: Vec<ArrayRef> = key_columns.iter().map(|i| Arc::clone(batch.column(*i))).collect();
    let keys = cast_keys(&columns, key_types)?;
    let parts = partition_of(&keys, key_types, writers.len(), level)?;
    scatter(batch, &parts, writers, entity_side)
}

/// What joining one spilled partition produced.
enum PartitionOutcome {
    /// The joined rows, in entity-row order.
    Joined(SpillFile),
    /// Too large for memory: these sub-partitions (right, left, level) instead.
    Split(Vec<(SpillFile, SpillFile, u32)>),
    /// No entity rows fell into the partition.
    Empty,
}

/// Everything a partition join needs, owned so partitions can run concurrently.
struct Partition {
    spec: Arc<AsOfSpec>,
    row_schema: SchemaRef,
    probe_schema: SchemaRef,
    context: Arc<TaskContext>,
}

impl Partition {
    async fn join(self, right: SpillFile, left: SpillFile, level: u32) -> Result<PartitionOutcome> {
        let spec = &self.spec;
        if left.rows == 0 {
            return Ok(PartitionOutcome::Empty);
        }
        let reservation =
            MemoryConsumer::new(format!("AsOfJoin[{}] partition", spec.view)).register(self.context.memory_pool());
        let mut batches = Vec::new();
        let mut fits = true;
        let reader = right.read()?;
        let right_schema = reader.schema();
        for b in reader {
            let b = b?;
            if reservation.try_grow(get_record_batch_memory_size(&b)).is_err() {
                fits = false;
                break;
            }
            batches.push(b);
        }
        fits = fits && reservation.try_grow(working_memory(&batches)).is_ok();
        if !fits {
            drop(batches);
            reservation.free();
            if level >= MAX_SPLIT_LEVEL {
                return Err(over_limit(
                    DataFusionError::ResourcesExhausted(format!(
                        "{} feature rows in one partition after {level} splits",
                        right.rows
                    )),
                    &spec.view,
                    "the feature rows of one join key (a very frequent key?)",
                ));
            }
            let split =
                |file: &SpillFile, schema: &SchemaRef, keys: &[usize], entity_side: bool| -> Result<Vec<SpillFile>> {
                    let mut w = spill_writers(schema, SUB_PARTITIONS)?;
                    for b in file.read()? {
                        scatter_by_key(&b?, keys, &spec.key_types, level + 1, &mut w, entity_side)?;
                    }
                    w.into_iter().map(SpillWriter::finish).collect()
                };
            let rights = split(&right, &right_schema, &right_keys(spec), false)?;
            let lefts = split(&left, &self.row_schema, &spec.left_keys, true)?;
            return Ok(PartitionOutcome::Split(
                rights.into_iter().zip(lefts).map(|(r, l)| (r, l, level + 1)).collect(),
            ));
        }
        let build = BuildSide::index(batches, &right_schema, spec, reservation).await?;
        let (spec2, schema2) = (Arc::clone(spec), Arc::clone(&self.probe_schema));
        let out = tokio::task::spawn_blocking(move || -> Result<SpillFile> {
            let mut w = SpillWriter::new(&schema2)?;
            for b in left.read()? {
                w.write(&probe(&build, &spec2, b?, &schema2)?)?;
            }
            w.finish()
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(PartitionOutcome::Joined(out))
    }
}

/// The spilled (grace hash) join: partition the entity rows by key with their
/// row numbers, join partition by partition in memory, merge by row number.
async fn grace_join(
    mut left: futures::stream::BoxStream<'static, Result<RecordBatch>>,
    right_parts: Vec<SpillFile>,
    spec: Arc<AsOfSpec>,
    out_schema: SchemaRef,
    context: Arc<TaskContext>,
) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
    SPILLED_JOINS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let left_fields = out_schema.fields().len() - spec.features.len();
    let left_schema = Arc::new(Schema::new(out_schema.fields()[..left_fields].to_vec()));
    let mut row_fields: Vec<Arc<Field>> = left_schema.fields().iter().cloned().collect();
    row_fields.push(Arc::new(Field::new("__asof_row", DataType::UInt64, false)));
    let row_schema = Arc::new(Schema::new(row_fields.clone()));
    let row_col = left_fields;

    // 1. Entity rows, numbered, into partitions.
    let mut writers = spill_writers(&row_schema, right_parts.len())?;
    let mut next_row = 0u64;
    while let Some(batch) = left.next().await {
        let batch = batch?;
        let n = batch.num_rows() as u64;
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(datafusion::arrow::array::UInt64Array::from_iter_values(next_row..next_row + n)));
        next_row += n;
        let numbered = RecordBatch::try_new(Arc::clone(&row_schema), columns)?;
        scatter_by_key(&numbered, &spec.left_keys, &spec.key_types, 0, &mut writers, true)?;
    }
    let left_parts = writers.into_iter().map(SpillWriter::finish).collect::<Result<Vec<_>>>()?;

    // 2. Each partition joined in memory, in entity-row order within the
    //    partition; a partition too large for memory is split again.
    let mut probe_fields = row_fields;
    probe_fields.extend(out_schema.fields()[left_fields..].iter().cloned());
    let probe_schema = Arc::new(Schema::new(probe_fields));
    let mut outputs = Vec::new();
    // Partitions run concurrently, one per core; splits go back on the queue.
    let mut pending: Vec<(SpillFile, SpillFile, u32)> =
        right_parts.into_iter().zip(left_parts).map(|(r, l)| (r, l, 0)).collect();
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        while running.len() < parallel {
            let Some((right, left, level)) = pending.pop() else { break };
            let part = Partition {
                spec: Arc::clone(&spec),
                row_schema: Arc::clone(&row_schema),
                probe_schema: Arc::clone(&probe_schema),
                context: Arc::clone(&context),
            };
            running.push(futures::FutureExt::boxed(part.join(right, left, level)));
        }
        match running.next().await {
            None => break,
            Some(outcome) => match outcome? {
                PartitionOutcome::Joined(file) => outputs.push(file),
                PartitionOutcome::Split(parts) => pending.extend(parts),
                PartitionOutcome::Empty => {}
            },
        }
    }

    // 3. Back into input order.
    let batch_size = context.session_config().batch_size();
    let merger = Merger::new(outputs, row_col, out_schema, batch_size)?;
    Ok(futures::stream::unfold(Some(merger), |state| async move {
        let mut m = state?;
        match m.next_batch() {
            Ok(Some(b)) => Some((Ok(b), Some(m))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed())
}

impl Indexed {
    fn new(batch: RecordBatch, spec: &AsOfSpec) -> Result<Self> {
        let nk = spec.key_types.len();
        let keys = cast_keys(&batch.columns()[..nk], &spec.key_types)?;
        let (mut index, groups, group_count) = KeyIndex::build(&keys, &spec.key_types)?;
        drop(keys);
        let ts = scaled(batch.column(nk), spec.ts_unit)?;
        // Created times only compare with each other, so their own unit is fine.
        let created = if spec.has_created {
            let c = batch.column(nk + 1);
            let DataType::Timestamp(unit, _) = c.data_type() else {
                return Err(DataFusionError::Internal("created timestamp is not a timestamp".into()));
            };
            Some(scaled(c, *unit)?)
        } else {
            None
        };
        let feature_start = nk + 1 + usize::from(spec.has_created);
        // A row takes part when its key and event time are not null.
        let group = |i: usize| -> Option<usize> {
            let g = if nk == 0 { 0 } else { groups[i] };
            (g != NO_GROUP && ts.get(i).is_some()).then_some(g as usize)
        };

        // Counting sort by group straight into the index's own arrays (time
        // and row side by side), then each (small) group by time: linear
        // where one big comparison sort would be O(n log n), and with no
        // intermediate copy of the rows (fresh memory costs page faults).
        let groups_len = group_count as usize;
        let mut offsets = vec![0usize; groups_len + 1];
        for i in 0..batch.num_rows() {
            if let Some(g) = group(i) {
                offsets[g + 1] += 1;
            }
        }
        for g in 0..groups_len {
            offsets[g + 1] += offsets[g];
        }
        let mut next = offsets[..groups_len].to_vec();
        let mut sorted_ts = vec![0i64; offsets[groups_len]];
        let mut rows = vec![0u32; offsets[groups_len]];
        for i in 0..batch.num_rows() {
            if let Some(g) = group(i) {
                let slot = next[g];
                sorted_ts[slot] = ts.values[i];
                rows[slot] = i as u32;
                next[g] = slot + 1;
            }
        }
        drop(next);
        drop(groups);
        // Rows of a group arrive in collected order, usually already by time.
        let created_of = |row: u32| created.as_ref().and_then(|c| c.get(row as usize)).unwrap_or(i64::MIN);
        let mut scratch: Vec<(i64, i64, u32)> = Vec::new();
        for g in 0..groups_len {
            let (s, e) = (offsets[g], offsets[g + 1]);
            let in_order = (s + 1..e).all(|i| {
                let (a, b) = (sorted_ts[i - 1], sorted_ts[i]);
                a < b || (a == b && (created_of(rows[i - 1]), rows[i - 1]) < (created_of(rows[i]), rows[i]))
            });
            if in_order {
                continue;
            }
            scratch.clear();
            scratch.extend((s..e).map(|i| (sorted_ts[i], created_of(rows[i]), rows[i])));
            scratch.sort_unstable();
            for (i, (t, _, r)) in (s..e).zip(&scratch) {
                sorted_ts[i] = *t;
                rows[i] = *r;
            }
        }
        let features = batch.columns()[feature_start..].to_vec();
        resolve_ties(&offsets, &sorted_ts, &mut rows, &created_of, &features)?;
        let ranges = match &mut index {
            KeyIndex::Int(map) => {
                for v in map.values_mut() {
                    *v = pack(offsets[*v as usize], offsets[*v as usize + 1]);
                }
                Vec::new()
            }
            _ => offsets.windows(2).map(|w| pack(w[0], w[1])).collect(),
        };
        Ok(Self { index, ranges, ts: sorted_ts, rows, features })
    }

    /// Row of `features` to use for a group's packed `range` at time `t`, if any.
    #[inline]
    fn find(&self, range: u64, t: i64, ttl: Option<i64>) -> Option<u32> {
        let (s, e) = unpack(range);
        let p = self.ts[s..e].partition_point(|x| *x <= t);
        if p == 0 {
            return None;
        }
        let pos = s + p - 1;
        match ttl {
            Some(ttl) if self.ts[pos] < t.saturating_sub(ttl) => None,
            _ => Some(self.rows[pos]),
        }
    }

    /// Starts loading the cache lines [`Self::find`] will read for `range`.
    #[inline]
    fn prefetch(&self, range: u64) {
        let (s, e) = unpack(range);
        if s < e {
            prefetch(self.ts[s..].as_ptr());
            prefetch(self.ts[e - 1..].as_ptr());
            prefetch(self.rows[e - 1..].as_ptr());
        }
    }
}

/// Within each run of equal (key, event time, created time), moves the row
/// with the greatest feature values (row-format order, nulls lowest) to the
/// end, where the probe picks it. Only tied rows are converted.
fn resolve_ties(
    offsets: &[usize],
    ts: &[i64],
    rows: &mut [u32],
    created_of: &dyn Fn(u32) -> i64,
    features: &[ArrayRef],
) -> Result<()> {
    let mut runs = Vec::new();
    for w in offsets.windows(2) {
        let (s, e) = (w[0], w[1]);
        let mut start = s;
        for i in s + 1..=e {
            let same = i < e && ts[i] == ts[start] && created_of(rows[i]) == created_of(rows[start]);
            if !same {
                if i - start > 1 {
                    runs.push(start..i);
                }
                start = i;
            }
        }
    }
    if runs.is_empty() {
        return Ok(());
    }
    let tied: Vec<u32> = runs.iter().flat_map(|r| rows[r.clone()].iter().copied()).collect();
    let indices = datafusion::arrow::array::UInt32Array::from(tied);
    let features: Vec<ArrayRef> =
        features.iter().map(|c| take(c.as_ref(), &indices, None)).collect::<Result<_, _>>()?;
    let converter = RowConverter::new(features.iter().map(|c| SortField::new(c.data_type().clone())).collect())?;
    let converted = converter.convert_columns(&features)?;
    let mut k = 0;
    for run in runs {
        let len = run.len();
        let best = (0..len).max_by(|a, b| converted.row(k + a).cmp(&converted.row(k + b)).then(a.cmp(b))).unwrap_or(0);
        rows.swap(run.start + best, run.end - 1);
        k += len;
    }
    Ok(())
}

fn probe(build: &BuildSide, spec: &AsOfSpec, left: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let build = &build.data;
    let n = left.num_rows();
    let ts = scaled(left.column(spec.left_ts), spec.ts_unit)?;
    let mut idx = UInt32Builder::with_capacity(n);
    if build.ts.is_empty() {
        idx.append_nulls(n);
    } else {
        let key_columns: Vec<ArrayRef> = spec.left_keys.iter().map(|i| Arc::clone(left.column(*i))).collect();
        let keys = cast_keys(&key_columns, &spec.key_types)?;
        match &build.index {
            KeyIndex::Unkeyed => {
                for i in 0..n {
                    idx.append_option(ts.get(i).and_then(|t| build.find(build.ranges[0], t, spec.ttl)));
                }
            }
            KeyIndex::Int(map) => {
                let k = keys[0].as_primitive::<Int64Type>();
                // Two passes: independent hash lookups first, then the
                // searches, each prefetching the rows a few searches ahead,
                // so the CPU overlaps cache misses instead of chaining them.
                const NONE: u64 = u64::MAX;
                let ranges: Vec<u64> = (0..n)
                    .map(|i| if k.is_valid(i) { map.get(&k.value(i)).copied().unwrap_or(NONE) } else { NONE })
                    .collect();
                for (i, r) in ranges.iter().enumerate() {
                    if let Some(&ahead) = ranges.get(i + PREFETCH_AHEAD)
                        && ahead != NONE
                    {
                        build.prefetch(ahead);
                    }
                    let found = match ts.get(i) {
                        Some(t) if *r != NONE => build.find(*r, t, spec.ttl),
                        _ => None,
                    };
                    idx.append_option(found);
                }
            }
            KeyIndex::Rows { converter, map } => {
                let rows = converter.convert_columns(&keys)?;
                for i in 0..n {
                    let found = match ts.get(i) {
                        Some(t) if !any_null(&keys, i) => map
                            .get(rows.row(i).as_ref())
                            .and_then(|g| build.find(build.ranges[*g as usize], t, spec.ttl)),
                        _ => None,
                    };
                    idx.append_option(found);
                }
            }
        }
    }
    let indices = idx.finish();
    let mut columns = left.columns().to_vec();
    for c in &build.features {
        columns.push(take(c.as_ref(), &indices, None)?);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
