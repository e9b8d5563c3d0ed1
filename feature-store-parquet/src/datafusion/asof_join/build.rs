//! The build side: a view's feature rows collected (or, over the memory
//! limit, spilled), grouped by join key and sorted by time, with ties
//! resolved so the probe takes the last row at or before its time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::utils::memory::get_record_batch_memory_size;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;

use feature_store_core::aggregation::{Order, RangeIndex, Value, ValueReader, sort_ties};

use super::AsOfSpec;
use super::grace::{right_keys, scatter_by_key, start_spill};
use super::metrics::AsOfMetrics;
use super::spill::{SpillFile, SpillWriter};
use crate::datafusion::timestamps::scaled;

/// Multiply-shift hashing for integer keys; SipHash is needlessly slow here.
#[derive(Default)]
pub(super) struct IntHasher(u64);

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

pub(super) type IntMap<V> = HashMap<i64, V, BuildHasherDefault<IntHasher>>;

/// Maps a join key to its group number.
pub(super) enum KeyIndex {
    /// A view without entities: every row is in group 0.
    Unkeyed,
    /// One integer key; after indexing, the map holds each group's packed range.
    Int(IntMap<u64>),
    /// Any other key, as row-format bytes.
    Rows { converter: RowConverter, map: HashMap<Box<[u8]>, u32> },
}

pub(super) fn cast_keys(columns: &[ArrayRef], types: &[DataType]) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .zip(types)
        .map(|(c, t)| if c.data_type() == t { Ok(Arc::clone(c)) } else { Ok(cast(c, t)?) })
        .collect()
}

pub(super) fn any_null(columns: &[ArrayRef], i: usize) -> bool {
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
pub(super) struct BuildSide {
    pub(super) data: Indexed,
    _reservation: MemoryReservation,
}

/// Feature rows grouped by key, each group sorted by time. The sorted order
/// is a permutation of the collected rows: copying the feature columns into
/// it would cost a gather per column for no faster probe (a probe touches one
/// row of a group, wherever it lies).
pub(super) struct Indexed {
    pub(super) index: KeyIndex,
    /// Each group's range in `ts`/`rows`, packed by [`pack`]; the integer
    /// index keeps ranges in its map instead, saving the probe one cache miss.
    pub(super) ranges: Vec<u64>,
    /// Event time of each sorted row, in the spec's unit.
    pub(super) ts: Vec<i64>,
    /// Row of `features` of each sorted row.
    pub(super) rows: Vec<u32>,
    /// Feature columns in collected order.
    pub(super) features: Vec<ArrayRef>,
    /// An aggregation view's range structures, one per aggregation.
    pub(super) aggregates: Vec<RangeIndex>,
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
pub(super) const PREFETCH_AHEAD: usize = 16;

/// The right side, in memory or (over the memory limit) spilled in partitions.
pub(super) enum Collected {
    Memory(BuildSide),
    Spilled(Vec<SpillFile>),
}

impl BuildSide {
    pub(super) async fn collect(
        right: Arc<dyn ExecutionPlan>,
        partition: Option<usize>,
        context: Arc<TaskContext>,
        spec: Arc<AsOfSpec>,
        metrics: AsOfMetrics,
    ) -> Result<Collected> {
        let reservation = MemoryConsumer::new(format!("AsOfJoin[{}]", spec.view)).register(context.memory_pool());
        let schema = right.schema();
        let pool = Arc::clone(context.memory_pool());
        let mut stream = match partition {
            Some(p) => right.execute(p, context)?,
            None => execute_stream(Arc::clone(&right), context)?,
        };
        let mut batches = Vec::new();
        let mut spill: Option<Vec<SpillWriter>> = None;
        let keys = right_keys(&spec);
        while let Some(batch) = stream.next().await {
            // A damaged file surfaces here; say whose rows were being read.
            let batch = batch.map_err(|e| e.context(format!("reading the rows of {}", spec.context)))?;
            metrics.feature_rows.add(batch.num_rows());
            if spill.is_none() {
                match reservation.try_grow(get_record_batch_memory_size(&batch)) {
                    Ok(()) => {
                        batches.push(batch);
                        continue;
                    }
                    Err(e) => {
                        let _timer = metrics.spill_time.timer();
                        spill = Some(start_spill(e, &mut batches, &right, &spec, (&reservation, pool.as_ref()))?);
                    }
                }
            }
            let writers = spill.as_mut().expect("spilling");
            let _timer = metrics.spill_time.timer();
            scatter_by_key(&batch, &keys, &spec.key_types, 0, writers, false)?;
        }
        let writers = match spill {
            Some(writers) => writers,
            // Concatenating copies the rows once more and the index adds ~40 bytes a row.
            None => match reservation.try_grow(working_memory(&batches, &spec)) {
                Ok(()) => {
                    metrics.build_mem_used.set_max(reservation.size());
                    return Ok(Collected::Memory(Self::index(batches, &schema, &spec, reservation, &metrics).await?));
                }
                Err(e) => {
                    let _timer = metrics.spill_time.timer();
                    start_spill(e, &mut batches, &right, &spec, (&reservation, pool.as_ref()))?
                }
            },
        };
        let _timer = metrics.spill_time.timer();
        let files: Vec<SpillFile> = writers.into_iter().map(SpillWriter::finish).collect::<Result<_>>()?;
        metrics.spilled(&files);
        Ok(Collected::Spilled(files))
    }

    /// Concatenates and indexes batches; `reservation` holds their size plus
    /// [`working_memory`], and shrinks back once the originals are dropped.
    pub(super) async fn index(
        batches: Vec<RecordBatch>,
        schema: &SchemaRef,
        spec: &Arc<AsOfSpec>,
        reservation: MemoryReservation,
        metrics: &AsOfMetrics,
    ) -> Result<Self> {
        let copy: usize = batches.iter().map(get_record_batch_memory_size).sum();
        let batch = concat_batches(schema, &batches)?;
        drop(batches);
        reservation.shrink(copy.min(reservation.size()));
        let spec2 = Arc::clone(spec);
        let build_time = metrics.build_time.clone();
        let data = tokio::task::spawn_blocking(move || {
            let _timer = build_time.timer();
            Indexed::new(batch, &spec2)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        Ok(Self { data, _reservation: reservation })
    }
}

/// Memory needed beyond the batches themselves to build the index: ~40
/// bytes a row, and for an aggregation view its orders, each input column's
/// values and each aggregation's structure.
pub(super) fn working_memory(batches: &[RecordBatch], spec: &AsOfSpec) -> usize {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let per_row = if spec.aggregations.is_empty() {
        40
    } else {
        let columns = spec.features.len().min(spec.aggregations.len());
        40 + 24 + 32 * columns + 40 * spec.aggregations.len()
    };
    batches.iter().map(get_record_batch_memory_size).sum::<usize>() + rows * per_row
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
        let aggregates = if spec.aggregations.is_empty() {
            resolve_ties(&offsets, &sorted_ts, &mut rows, &created_of, &features)?;
            Vec::new()
        } else {
            aggregate_index(spec, &offsets, &sorted_ts, &rows, &created_of, &features)?
        };
        let ranges = match &mut index {
            KeyIndex::Int(map) => {
                for v in map.values_mut() {
                    *v = pack(offsets[*v as usize], offsets[*v as usize + 1]);
                }
                Vec::new()
            }
            _ => offsets.windows(2).map(|w| pack(w[0], w[1])).collect(),
        };
        Ok(Self { index, ranges, ts: sorted_ts, rows, features, aggregates })
    }

    /// The events of a group's packed `range` in the window `lo < e <= hi`,
    /// as positions in the sorted order.
    #[inline]
    pub(super) fn window(&self, range: u64, lo: i64, hi: i64) -> (usize, usize) {
        let (s, e) = unpack(range);
        let ts = &self.ts[s..e];
        let a = ts.partition_point(|x| *x <= lo);
        let b = ts.partition_point(|x| *x <= hi).max(a);
        (s + a, s + b)
    }

    /// Row of `features` to use for a group's packed `range` at time `t`, if any.
    #[inline]
    pub(super) fn find(&self, range: u64, t: i64, ttl: Option<i64>) -> Option<u32> {
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
    pub(super) fn prefetch(&self, range: u64) {
        let (s, e) = unpack(range);
        if s < e {
            prefetch(self.ts[s..].as_ptr());
            prefetch(self.ts[e - 1..].as_ptr());
            prefetch(self.rows[e - 1..].as_ptr());
        }
    }
}

/// An aggregation view's structures over the sorted events: their orders,
/// each input column's values in that order (ties by value, so the result
/// never depends on file layout), and one [`RangeIndex`] per aggregation.
fn aggregate_index(
    spec: &AsOfSpec,
    offsets: &[usize],
    ts: &[i64],
    rows: &[u32],
    created_of: &dyn Fn(u32) -> i64,
    inputs: &[ArrayRef],
) -> Result<Vec<RangeIndex>> {
    let has_created = spec.has_created;
    let orders: Arc<[Order]> = ts
        .iter()
        .zip(rows)
        .map(|(t, r)| Order { time: *t, created: has_created.then(|| created_of(*r)).filter(|c| *c != i64::MIN) })
        .collect();
    // Each input column once (values in index order, ties sorted), then
    // each aggregation's structure: independent work, spread over the cores.
    let mut wanted: Vec<usize> = spec.aggregations.iter().filter_map(|a| a.column).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let values: Vec<Arc<[Option<Value>]>> = parallel(wanted.len(), |k| {
        let reader = ValueReader::new(Arc::clone(&inputs[wanted[k]]), &spec.context)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut values: Vec<Option<Value>> = reader.take(rows);
        for w in offsets.windows(2) {
            sort_ties(&orders[w[0]..w[1]], &mut values[w[0]..w[1]]);
        }
        Ok(values.into())
    })?;
    let none: Arc<[Option<Value>]> = Arc::from(Vec::new());
    // Aggregations of one column needing the same structure build it once.
    let aggs = &spec.aggregations;
    let owner: Vec<usize> = (0..aggs.len())
        .map(|k| {
            (0..k)
                .find(|&j| aggs[j].column == aggs[k].column && RangeIndex::shares(&aggs[j].window, &aggs[k].window))
                .unwrap_or(k)
        })
        .collect();
    let built: Vec<usize> = (0..aggs.len()).filter(|&k| owner[k] == k).collect();
    let indexes = parallel(built.len(), |i| {
        let agg = &aggs[built[i]];
        let values = match agg.column {
            None => Arc::clone(&none),
            Some(c) => Arc::clone(&values[wanted.binary_search(&c).expect("listed")]),
        };
        RangeIndex::new(&agg.window, Arc::clone(&orders), values, offsets)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    })?;
    Ok((0..aggs.len())
        .map(|k| indexes[built.binary_search(&owner[k]).expect("built")].sharing(&aggs[k].window))
        .collect())
}

/// `f(0..n)` on up to as many threads as there are cores, results in order.
fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n);
    if threads <= 1 {
        return (0..n).map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<T>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= n {
                            return out;
                        }
                        out.push((k, f(k)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("index builder panicked")).collect()
    });
    done.sort_by_key(|(k, _)| *k);
    done.into_iter().map(|(_, r)| r).collect()
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
