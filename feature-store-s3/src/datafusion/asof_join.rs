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
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
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

use super::timestamps::instants;

/// What one as-of join node joins.
#[derive(Debug, Clone)]
pub(crate) struct AsOfSpec {
    /// View name, for messages and plan display.
    pub view: String,
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
    /// Ttl in nanoseconds; `None` is unlimited.
    pub ttl_nanos: Option<i128>,
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
            "AsOfJoinExec: view={}, keys={}, features={}, ttl_ns={:?}",
            self.spec.view,
            self.spec.left_keys.len(),
            self.spec.features.len(),
            self.spec.ttl_nanos
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
        let joined = futures::stream::once(async move {
            let build = Arc::new(BuildSide::collect(right, context, Arc::clone(&spec)).await?);
            Ok::<_, DataFusionError>(left.map(move |batch| probe(&build, &spec, batch?, &out_schema)))
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
    /// One integer key.
    Int(IntMap<u32>),
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

impl KeyIndex {
    fn build(keys: &[ArrayRef], types: &[DataType]) -> Result<(Self, Vec<Option<u32>>, u32)> {
        let n = keys.first().map_or(0, |k| k.len());
        if keys.is_empty() {
            return Ok((Self::Unkeyed, Vec::new(), 1));
        }
        let mut groups = Vec::with_capacity(n);
        let mut next = 0u32;
        if types.len() == 1 && types[0] == DataType::Int64 {
            let a = keys[0].as_primitive::<Int64Type>();
            let mut map = IntMap::default();
            for i in 0..n {
                groups.push(if a.is_null(i) {
                    None
                } else {
                    Some(*map.entry(a.value(i)).or_insert_with(|| {
                        next += 1;
                        next - 1
                    }))
                });
            }
            return Ok((Self::Int(map), groups, next));
        }
        let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let rows = converter.convert_columns(keys)?;
        let mut map: HashMap<Box<[u8]>, u32> = HashMap::new();
        for i in 0..n {
            groups.push(if any_null(keys, i) {
                None
            } else {
                let key = rows.row(i);
                Some(match map.get(key.as_ref()) {
                    Some(g) => *g,
                    None => {
                        map.insert(key.as_ref().into(), next);
                        next += 1;
                        next - 1
                    }
                })
            });
        }
        Ok((Self::Rows { converter, map }, groups, next))
    }

    fn lookup(&self, keys: &[ArrayRef], n: usize) -> Result<Vec<Option<u32>>> {
        Ok(match self {
            Self::Unkeyed => vec![Some(0); n],
            Self::Int(map) => {
                let a = keys[0].as_primitive::<Int64Type>();
                (0..n).map(|i| if a.is_null(i) { None } else { map.get(&a.value(i)).copied() }).collect()
            }
            Self::Rows { converter, map } => {
                let rows = converter.convert_columns(keys)?;
                (0..n).map(|i| if any_null(keys, i) { None } else { map.get(rows.row(i).as_ref()).copied() }).collect()
            }
        })
    }
}

/// The indexed feature rows of one view, with their memory reservation.
struct BuildSide {
    data: Indexed,
    _reservation: MemoryReservation,
}

/// Feature rows grouped by key, each group sorted by time.
struct Indexed {
    batch: RecordBatch,
    index: KeyIndex,
    /// Start of each group in `ts`/`rows`; `groups + 1` entries.
    offsets: Vec<usize>,
    /// Event time of each sorted row.
    ts: Vec<i128>,
    /// Row of `batch` for each sorted position.
    rows: Vec<u32>,
}

impl BuildSide {
    async fn collect(right: Arc<dyn ExecutionPlan>, context: Arc<TaskContext>, spec: Arc<AsOfSpec>) -> Result<Self> {
        let reservation = MemoryConsumer::new(format!("AsOfJoin[{}]", spec.view)).register(context.memory_pool());
        let schema = right.schema();
        let mut stream = execute_stream(right, context)?;
        let mut batches = Vec::new();
        let over_limit = |e: DataFusionError, view: &str| {
            DataFusionError::ResourcesExhausted(format!(
                "the feature rows of view \"{view}\" do not fit in the memory limit ({e}); raise offline_store.memory_limit / --memory-limit or narrow the entity time range"
            ))
        };
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            reservation.try_grow(batch.get_array_memory_size()).map_err(|e| over_limit(e, &spec.view))?;
            batches.push(batch);
        }
        let batch = concat_batches(&schema, &batches)?;
        drop(batches);
        let spec2 = Arc::clone(&spec);
        let data = tokio::task::spawn_blocking(move || Indexed::new(batch, &spec2))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        // Account for the index too; the batches' share was reserved above.
        let index_bytes = data.ts.len() * 20 + data.offsets.len() * 8;
        reservation.try_grow(index_bytes).map_err(|e| over_limit(e, &spec.view))?;
        Ok(Self { data, _reservation: reservation })
    }
}

impl Indexed {
    fn new(batch: RecordBatch, spec: &AsOfSpec) -> Result<Self> {
        let nk = spec.key_types.len();
        let keys = cast_keys(&batch.columns()[..nk], &spec.key_types)?;
        let (index, groups, group_count) = KeyIndex::build(&keys, &spec.key_types)?;
        let ts = instants(batch.column(nk));
        let created = spec.has_created.then(|| instants(batch.column(nk + 1)));
        let feature_start = nk + 1 + usize::from(spec.has_created);

        let mut entries: Vec<(u32, i128, i128, u32)> = (0..batch.num_rows())
            .filter_map(|i| {
                let g = if nk == 0 { 0 } else { groups[i]? };
                let t = ts[i]?;
                let c = created.as_ref().and_then(|c| c[i]).unwrap_or(i128::MIN);
                Some((g, t, c, i as u32))
            })
            .collect();
        entries.sort_unstable();
        resolve_ties(&mut entries, &batch, feature_start)?;

        let mut offsets = vec![0usize; group_count as usize + 1];
        for e in &entries {
            offsets[e.0 as usize + 1] += 1;
        }
        for g in 0..group_count as usize {
            offsets[g + 1] += offsets[g];
        }
        let sorted_ts = entries.iter().map(|e| e.1).collect();
        let rows = entries.iter().map(|e| e.3).collect();
        Ok(Self { batch, index, offsets, ts: sorted_ts, rows })
    }
}

/// Within each run of equal (key, event time, created time), moves the row
/// with the greatest feature values (row-format order, nulls lowest) to the
/// end, where the probe picks it. Only tied rows are converted.
fn resolve_ties(entries: &mut [(u32, i128, i128, u32)], batch: &RecordBatch, feature_start: usize) -> Result<()> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=entries.len() {
        let same = i < entries.len()
            && entries[i].0 == entries[start].0
            && entries[i].1 == entries[start].1
            && entries[i].2 == entries[start].2;
        if !same {
            if i - start > 1 {
                runs.push(start..i);
            }
            start = i;
        }
    }
    if runs.is_empty() {
        return Ok(());
    }
    let tied: Vec<u32> = runs.iter().flat_map(|r| entries[r.clone()].iter().map(|e| e.3)).collect();
    let indices = datafusion::arrow::array::UInt32Array::from(tied);
    let features: Vec<ArrayRef> =
        batch.columns()[feature_start..].iter().map(|c| take(c.as_ref(), &indices, None)).collect::<Result<_, _>>()?;
    let converter = RowConverter::new(features.iter().map(|c| SortField::new(c.data_type().clone())).collect())?;
    let rows = converter.convert_columns(&features)?;
    let mut k = 0;
    for run in runs {
        let len = run.len();
        let best = (0..len).max_by(|a, b| rows.row(k + a).cmp(&rows.row(k + b)).then(a.cmp(b))).unwrap_or(0);
        entries.swap(run.start + best, run.end - 1);
        k += len;
    }
    Ok(())
}

fn probe(build: &BuildSide, spec: &AsOfSpec, left: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let build = &build.data;
    let n = left.num_rows();
    let ets = instants(left.column(spec.left_ts));
    let key_columns: Vec<ArrayRef> = spec.left_keys.iter().map(|i| Arc::clone(left.column(*i))).collect();
    let keys = cast_keys(&key_columns, &spec.key_types)?;
    let groups = if build.ts.is_empty() { vec![None; n] } else { build.index.lookup(&keys, n)? };
    let mut idx = UInt32Builder::with_capacity(n);
    for (g, t) in groups.into_iter().zip(ets) {
        let found = (|| {
            let g = g? as usize;
            let t = t?;
            let (s, e) = (build.offsets[g], build.offsets[g + 1]);
            let p = build.ts[s..e].partition_point(|x| *x <= t);
            if p == 0 {
                return None;
            }
            let pos = s + p - 1;
            if let Some(ttl) = spec.ttl_nanos {
                if build.ts[pos] < t - ttl {
                    return None;
                }
            }
            Some(build.rows[pos])
        })();
        idx.append_option(found);
    }
    let indices = idx.finish();
    let feature_start = build.batch.num_columns() - spec.features.len();
    let mut columns = left.columns().to_vec();
    for c in &build.batch.columns()[feature_start..] {
        columns.push(take(c.as_ref(), &indices, None)?);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
