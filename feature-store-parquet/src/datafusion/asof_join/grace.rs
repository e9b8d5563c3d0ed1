//! The out-of-core as-of join (a grace hash join): when a view's feature
//! rows exceed the memory limit, both sides are hash-partitioned by join key
//! into spill files ([`super::spill`]), each partition is joined in memory
//! (split again when still too large), and the outputs are put back into
//! entity-row order by the route file (each entity row's partition).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::utils::memory::get_record_batch_memory_size;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;

use super::AsOfSpec;
use super::build::{BuildSide, cast_keys, working_memory};
use super::metrics::AsOfMetrics;
use super::probe::probe;
use super::spill::{Reassembly, RouteWriter, Slot, SpillFile, SpillWriter, partition_of, scatter, spill_batch_bytes};

/// Partitions a spilled join uses when the data's size cannot be estimated.
const SPILL_PARTITIONS: usize = 32;
/// Fewer than this would leave little to run side by side.
const MIN_SPILL_PARTITIONS: usize = 16;

/// At most 256 (the route file names a level-0 partition in one byte), and
/// few enough that open spill files stay well inside the process's file
/// limit: a view holds about two per partition, and several views spill at
/// once. Under the common soft limit of 1,024 files that is 32.
#[allow(unsafe_code)]
fn max_spill_partitions() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct it is given, nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return usize::try_from(limit.rlim_cur / 32).unwrap_or(usize::MAX).clamp(SPILL_PARTITIONS, 256);
        }
    }
    SPILL_PARTITIONS
}

fn over_limit(e: DataFusionError, view: &str, what: &str) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{what} of view \"{view}\" do not fit in the memory limit ({e}); raise offline_store.memory_limit in the config (--memory-limit in the CLI) or narrow the entity time range"
    ))
}

/// Feature rows over the limit: move those collected so far into spill
/// partitions and release their memory. A view without entities cannot be
/// split by key, so for it the limit is an error.
pub(super) fn start_spill(
    e: DataFusionError,
    batches: &mut Vec<RecordBatch>,
    right: &Arc<dyn ExecutionPlan>,
    spec: &AsOfSpec,
    (reservation, pool): (&MemoryReservation, &dyn MemoryPool),
) -> Result<Vec<SpillWriter>> {
    if spec.key_types.is_empty() {
        return Err(over_limit(e, &spec.view, "the feature rows"));
    }
    let bytes = batches.iter().map(get_record_batch_memory_size).sum();
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let partitions = spill_partitions(scan_progress(right), bytes, rows, pool_size(pool)).min(max_spill_partitions());
    tracing::debug!(view = %spec.view, partitions, bytes, rows, "as-of join spills");
    let batch_bytes = spill_batch_bytes(pool, partitions);
    let mut writers = spill_writers(&right.schema(), partitions, batch_bytes)?;
    let keys = right_keys(spec);
    for b in batches.drain(..) {
        scatter_by_key(&b, &keys, &spec.key_types, 0, &mut writers, false)?;
    }
    reservation.free();
    Ok(writers)
}

/// Level-0 partitions for a view whose feature rows outgrew the pool after
/// `bytes` in memory (`rows` rows): enough that each partition's join needs
/// about an eighth of the pool, so partitions run side by side without being
/// split again (each split writes and reads its rows once more). The view's
/// size is estimated from its scan (`progress`: bytes scanned so far and the
/// files' total bytes): the files' bytes, times how much larger decoded rows
/// were than the bytes scanned for them (at least 1: a reader fetches a row
/// group's columns before decoding them, so what it scanned can run ahead of
/// the rows it produced), plus the index. Without a file scan, 32.
fn spill_partitions(progress: Option<(usize, usize)>, bytes: usize, rows: usize, pool: usize) -> usize {
    let Some((scanned, files)) = progress.filter(|(s, f)| *s > 0 && *f > 0) else {
        return SPILL_PARTITIONS;
    };
    let expansion = (bytes as f64 / scanned as f64).max(1.0);
    let with_index = (bytes + rows * INDEX_BYTES_PER_ROW) as f64 / bytes.max(1) as f64;
    let need = files as f64 * expansion * with_index;
    let target = (pool / (PARALLEL_SHARE * 2)).max(1) as f64;
    ((need / target).ceil() as usize).clamp(MIN_SPILL_PARTITIONS, 256)
}

/// How far the Parquet scans under `plan` have read: bytes scanned so far
/// (DataFusion's `bytes_scanned` metric) and the scanned files' total bytes.
/// An estimate: files the time filter prunes count in the total, so it errs
/// towards more partitions. `None` without a file scan.
fn scan_progress(plan: &Arc<dyn ExecutionPlan>) -> Option<(usize, usize)> {
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        let config = scan.data_source().downcast_ref::<FileScanConfig>()?;
        let files: u64 = config
            .file_groups
            .iter()
            .flat_map(|g| g.files())
            .map(|f| f.range.as_ref().map_or(f.object_meta.size, |r| (r.end - r.start).max(0) as u64))
            .sum();
        let scanned = scan.metrics()?.sum_by_name("bytes_scanned")?.as_usize();
        return Some((scanned, usize::try_from(files).unwrap_or(usize::MAX)));
    }
    let mut found = None;
    for child in plan.children() {
        if let Some((s, f)) = scan_progress(child) {
            let (s0, f0) = found.unwrap_or((0, 0));
            found = Some((s0 + s, f0 + f));
        }
    }
    found
}

fn spill_writers(schema: &SchemaRef, partitions: usize, batch_bytes: usize) -> Result<Vec<SpillWriter>> {
    (0..partitions).map(|_| SpillWriter::new(schema, batch_bytes)).collect()
}

/// Positions of the keys in the right layout (they come first).
pub(super) fn right_keys(spec: &AsOfSpec) -> Vec<usize> {
    (0..spec.key_types.len()).collect()
}

/// The key every row of `file` has, formatted, or `None` when they differ.
fn single_key(file: &SpillFile, spec: &AsOfSpec) -> Result<Option<String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let converter = datafusion::arrow::row::RowConverter::new(
        spec.key_types.iter().map(|t| datafusion::arrow::row::SortField::new(t.clone())).collect(),
    )?;
    let mut first: Option<(datafusion::arrow::row::OwnedRow, String)> = None;
    for b in file.read()? {
        let b = b?;
        let keys = cast_keys(&b.columns()[..spec.key_types.len()], &spec.key_types)?;
        let rows = converter.convert_columns(&keys)?;
        for i in 0..b.num_rows() {
            match &first {
                None => {
                    let options = FormatOptions::default();
                    let shown = keys
                        .iter()
                        .map(|k| ArrayFormatter::try_new(k.as_ref(), &options).map(|f| f.value(i).to_string()))
                        .collect::<Result<Vec<_>, _>>()?;
                    first = Some((rows.row(i).owned(), shown.join(", ")));
                }
                Some((row, _)) if row.row() != rows.row(i) => return Ok(None),
                Some(_) => {}
            }
        }
    }
    Ok(first.map(|(_, shown)| shown))
}

/// Memory a partition join of `right` takes: its rows plus the index.
fn partition_need(right: &SpillFile) -> usize {
    right.bytes + right.rows * INDEX_BYTES_PER_ROW
}

/// What the in-memory index adds per feature row.
const INDEX_BYTES_PER_ROW: usize = 40;

/// Partitions run two at a time beside other views' work: a partition may
/// count on about a quarter of the pool.
const PARALLEL_SHARE: usize = 4;

fn pool_size(pool: &dyn MemoryPool) -> usize {
    match pool.memory_limit() {
        MemoryLimit::Finite(l) => l,
        _ => usize::MAX,
    }
}

/// One key's feature rows alone exceed what a partition may use.
fn one_key_too_large(spec: &AsOfSpec, key: &str, right: &SpillFile, pool: &dyn MemoryPool) -> DataFusionError {
    let need = partition_need(right);
    let limit = match pool.memory_limit() {
        MemoryLimit::Finite(l) => format!("{} (a pool of {})", size(l * 2), size(l)),
        _ => "the memory limit".to_owned(),
    };
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    DataFusionError::ResourcesExhausted(format!(
        "view \"{}\": the {} feature rows of join key ({key}) need about {} in memory at once, more than a \
         partition of the as-of join may hold under a limit of {limit} (partitions run {parallel} at a time, \
         beside the other views); raise offline_store.memory_limit (--memory-limit in the CLI) to at least about {}, \
         or leave that key's rows out of the source",
        spec.view,
        right.rows,
        size(need),
        size(need * PARALLEL_SHARE * 2),
    ))
}

/// Bytes for people: KiB under a MiB, MiB above.
fn size(bytes: usize) -> String {
    if bytes < 1 << 20 {
        format!("{} KiB", bytes.div_ceil(1 << 10))
    } else {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    }
}

/// Partitions a spilled join splits an oversized partition into.
const SUB_PARTITIONS: usize = 8;
/// How often a partition may be split again before the join gives up.
const MAX_SPLIT_LEVEL: u32 = 4;

/// Hash-partitions a batch by the key columns at `key_columns`; returns
/// each row's partition.
pub(super) fn scatter_by_key(
    batch: &RecordBatch,
    key_columns: &[usize],
    key_types: &[DataType],
    level: u32,
    writers: &mut [SpillWriter],
    entity_side: bool,
) -> Result<Vec<u32>> {
    let columns: Vec<ArrayRef> = key_columns.iter().map(|i| Arc::clone(batch.column(*i))).collect();
    let keys = cast_keys(&columns, key_types)?;
    let parts = partition_of(&keys, key_types, writers.len(), level)?;
    scatter(batch, &parts, writers, entity_side)?;
    Ok(parts)
}

/// What joining one spilled partition produced.
enum PartitionOutcome {
    /// The joined rows, in entity-row order.
    Joined(SpillFile),
    /// Too large for memory: these sub-partitions (right, left, level) instead.
    Split(Vec<(SpillFile, SpillFile, u32)>),
    /// No entity rows fell into the partition.
    Empty,
    /// One key that could fit the pool, but not beside the partitions
    /// running now: tried again when nothing else of this join runs.
    Deferred(SpillFile, SpillFile, u32),
}

/// Everything a partition join needs, owned so partitions can run concurrently.
struct Partition {
    /// The view's spec with the entity side narrowed to keys, time and row number.
    spec: Arc<AsOfSpec>,
    metrics: AsOfMetrics,
    /// Narrow entity rows: keys, entity time, row number.
    row_schema: SchemaRef,
    /// What the probe returns on narrow rows: those columns and the features.
    probe_schema: SchemaRef,
    /// What a partition keeps: the row number and the features.
    part_schema: SchemaRef,
    context: Arc<TaskContext>,
    batch_bytes: usize,
    /// Run with no other partition of this join beside it.
    alone: bool,
}

impl Partition {
    async fn join(self, right: SpillFile, left: SpillFile, level: u32) -> Result<PartitionOutcome> {
        let spec = &self.spec;
        if left.rows == 0 {
            return Ok(PartitionOutcome::Empty);
        }
        let reservation =
            MemoryConsumer::new(format!("AsOfJoin[{}] partition", spec.view)).register(self.context.memory_pool());
        // A partition within its share of the pool that does not fit met
        // other work's reservations. While those change (other views still
        // reading their rows, say) it waits for them, up to about 20 s;
        // reservations that stay put (another view's index) are not waited
        // for: the partition is split like a large one.
        let pool = self.context.memory_pool();
        let small = partition_need(&right) * PARALLEL_SHARE <= pool_size(pool.as_ref());
        let (mut attempt, mut still, mut last) = (0u64, 0, usize::MAX);
        let (batches, right_schema, fits) = loop {
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
            fits = fits && reservation.try_grow(working_memory(&batches, spec)).is_ok();
            if fits || !small || attempt >= 40 || still >= 3 {
                break (batches, right_schema, fits);
            }
            drop(batches);
            reservation.free();
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt.min(10))).await;
            let now = pool.reserved();
            still = if now == last { still + 1 } else { 0 };
            last = now;
        };
        if fits {
            self.metrics.build_mem_used.set_max(reservation.size());
        }
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
            // One key cannot be split: when it needs more than a partition's
            // share of the pool, find out before splitting. It fails now if
            // it needs more than half the pool or already ran alone, and
            // otherwise waits for the other partitions to finish.
            let pool = pool_size(self.context.memory_pool().as_ref());
            if partition_need(&right) * PARALLEL_SHARE > pool
                && let Some(key) = single_key(&right, spec)?
            {
                if partition_need(&right) * 2 > pool || self.alone {
                    return Err(one_key_too_large(spec, &key, &right, self.context.memory_pool().as_ref()));
                }
                return Ok(PartitionOutcome::Deferred(right, left, level));
            }
            let split =
                |file: &SpillFile, schema: &SchemaRef, keys: &[usize], entity_side: bool| -> Result<Vec<SpillFile>> {
                    let _timer = self.metrics.spill_time.timer();
                    let mut w = spill_writers(schema, SUB_PARTITIONS, self.batch_bytes)?;
                    for b in file.read()? {
                        scatter_by_key(&b?, keys, &spec.key_types, level + 1, &mut w, entity_side)?;
                    }
                    w.into_iter().map(SpillWriter::finish).collect()
                };
            let rights = split(&right, &right_schema, &right_keys(spec), false)?;
            let lefts = split(&left, &self.row_schema, &spec.left_keys, true)?;
            self.metrics.spilled(&rights);
            self.metrics.spilled(&lefts);
            return Ok(PartitionOutcome::Split(
                rights.into_iter().zip(lefts).map(|(r, l)| (r, l, level + 1)).collect(),
            ));
        }
        let build = BuildSide::index(batches, &right_schema, spec, reservation, &self.metrics).await?;
        let (spec2, schema2, part_schema) =
            (Arc::clone(spec), Arc::clone(&self.probe_schema), Arc::clone(&self.part_schema));
        // Only the row number and the features are kept: the entity columns
        // come back in order from the whole-row file at reassembly.
        let keep: Vec<usize> =
            std::iter::once(spec.left_ts + 1).chain(spec.left_ts + 2..schema2.fields().len()).collect();
        let (probe_time, spill_time) = (self.metrics.probe_time.clone(), self.metrics.spill_time.clone());
        let batch_bytes = self.batch_bytes;
        let out = tokio::task::spawn_blocking(move || -> Result<SpillFile> {
            let mut w = SpillWriter::new(&part_schema, batch_bytes)?;
            let mut reader = left.read()?;
            loop {
                let spill_timer = spill_time.timer();
                let Some(b) = reader.next() else { break };
                let b = b?;
                spill_timer.done();
                let joined = {
                    let _timer = probe_time.timer();
                    let joined = probe(&build, &spec2, b, &schema2)?.project(&keep)?;
                    RecordBatch::try_new(Arc::clone(&part_schema), joined.columns().to_vec())?
                };
                let _timer = spill_time.timer();
                w.write(&joined)?;
            }
            let _timer = spill_time.timer();
            w.finish()
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        self.metrics.spilled(std::slice::from_ref(&out));
        Ok(PartitionOutcome::Joined(out))
    }
}

/// The spilled (grace hash) join. The entity rows go once, whole and in
/// order, to one sequential file; only their keys, time and row number are
/// hash-partitioned (the route records each row's partition). Partitions
/// are joined in memory, each keeping row numbers and features only, and the
/// output reads the whole-row file in order beside each row's features taken
/// from its partition by the route. A wide entity side (earlier views'
/// features in a chain) is thus written and read once per view, not
/// scattered, joined and merged back column by column.
pub(super) async fn grace_join(
    (mut left, left_schema, features_only): (futures::stream::BoxStream<'static, Result<RecordBatch>>, SchemaRef, bool),
    right_parts: Vec<SpillFile>,
    spec: Arc<AsOfSpec>,
    out_schema: SchemaRef,
    context: Arc<TaskContext>,
    metrics: AsOfMetrics,
) -> Result<futures::stream::BoxStream<'static, Result<RecordBatch>>> {
    let left_fields = out_schema.fields().len() - spec.features.len();
    // Narrow rows: keys, entity time, row number.
    let narrow: Vec<usize> = spec.left_keys.iter().copied().chain([spec.left_ts]).collect();
    let mut row_fields: Vec<Arc<Field>> = narrow.iter().map(|i| Arc::clone(&left_schema.fields()[*i])).collect();
    row_fields.push(Arc::new(Field::new("__asof_row", DataType::UInt64, false)));
    let row_schema = Arc::new(Schema::new(row_fields.clone()));
    let keys = spec.left_keys.len();
    let narrow_spec = Arc::new(AsOfSpec { left_keys: (0..keys).collect(), left_ts: keys, ..(*spec).clone() });

    // 1. Entity rows whole into one file in order; their narrow rows,
    //    numbered, into partitions; the route records each row's.
    let batch_bytes = spill_batch_bytes(context.memory_pool().as_ref(), right_parts.len());
    // A features-only join keeps no entity columns.
    let mut whole = if features_only { None } else { Some(SpillWriter::new(&left_schema, batch_bytes)?) };
    let mut writers = spill_writers(&row_schema, right_parts.len(), batch_bytes)?;
    let mut route = RouteWriter::new()?;
    let mut next_row = 0u64;
    while let Some(batch) = left.next().await {
        let batch = batch?;
        let n = batch.num_rows() as u64;
        let mut columns: Vec<ArrayRef> = narrow.iter().map(|i| Arc::clone(batch.column(*i))).collect();
        columns.push(Arc::new(datafusion::arrow::array::UInt64Array::from_iter_values(next_row..next_row + n)));
        next_row += n;
        let numbered = RecordBatch::try_new(Arc::clone(&row_schema), columns)?;
        let _timer = metrics.spill_time.timer();
        if let Some(whole) = &mut whole {
            whole.write(&batch)?;
        }
        let parts = scatter_by_key(&numbered, &narrow_spec.left_keys, &spec.key_types, 0, &mut writers, true)?;
        route.write(&parts)?;
    }
    let (whole, left_parts) = {
        let _timer = metrics.spill_time.timer();
        (
            whole.map(SpillWriter::finish).transpose()?,
            writers.into_iter().map(SpillWriter::finish).collect::<Result<Vec<_>>>()?,
        )
    };
    if let Some(whole) = &whole {
        metrics.spilled(std::slice::from_ref(whole));
    }
    metrics.spilled(&left_parts);

    // 2. Each partition joined in memory, in entity-row order within the
    //    partition; a partition too large for memory is split again.
    let mut probe_fields = row_fields;
    probe_fields.extend(out_schema.fields()[left_fields..].iter().cloned());
    let probe_schema = Arc::new(Schema::new(probe_fields));
    let part_schema = Arc::new(Schema::new(
        std::iter::once(Arc::new(Field::new("__asof_row", DataType::UInt64, false)))
            .chain(out_schema.fields()[left_fields..].iter().cloned())
            .collect::<Vec<_>>(),
    ));
    let feature_schema = Arc::new(Schema::new(out_schema.fields()[left_fields..].to_vec()));
    let mut outputs: Vec<Vec<SpillFile>> = (0..right_parts.len()).map(|_| Vec::new()).collect();
    // Partitions run concurrently, one per core; splits go back on the queue
    // under their level-0 partition (`slot`).
    let mut pending: Vec<(SpillFile, SpillFile, u32, usize)> =
        right_parts.into_iter().zip(left_parts).enumerate().map(|(slot, (r, l))| (r, l, 0, slot)).collect();
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut running = futures::stream::FuturesUnordered::new();
    let mut deferred = Vec::new();
    loop {
        while running.len() < parallel {
            let (alone, next) = match pending.pop() {
                Some(p) => (false, p),
                None if running.is_empty() && !deferred.is_empty() => (true, deferred.pop().expect("deferred")),
                None => break,
            };
            let (right, left, level, slot) = next;
            let part = Partition {
                spec: Arc::clone(&narrow_spec),
                metrics: metrics.clone(),
                row_schema: Arc::clone(&row_schema),
                probe_schema: Arc::clone(&probe_schema),
                part_schema: Arc::clone(&part_schema),
                context: Arc::clone(&context),
                batch_bytes,
                alone,
            };
            let join = part.join(right, left, level);
            running.push(futures::FutureExt::boxed(async move { (slot, join.await) }));
        }
        match running.next().await {
            None => break,
            Some((slot, outcome)) => match outcome? {
                PartitionOutcome::Joined(file) => outputs[slot].push(file),
                PartitionOutcome::Split(parts) => pending.extend(parts.into_iter().map(|(r, l, lv)| (r, l, lv, slot))),
                PartitionOutcome::Empty => {}
                PartitionOutcome::Deferred(r, l, lv) => deferred.push((r, l, lv, slot)),
            },
        }
    }

    // 3. Back into input order: whole rows in order, features by the route.
    let batch_size = context.session_config().batch_size();
    let slots = outputs
        .into_iter()
        .map(|files| Slot::new(files, 0, &feature_schema, (batch_size, batch_bytes)))
        .collect::<Result<Vec<_>>>()?;
    let whole = whole.as_ref().map(SpillFile::read).transpose()?;
    let merger = Reassembly::new(route.finish()?, whole, slots, out_schema, batch_size);
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

#[cfg(test)]
mod tests {
    use super::spill_partitions;

    const MIB: usize = 1 << 20;

    #[test]
    fn partitions_follow_the_estimated_size_of_the_view() {
        // 64 MiB of rows read, 1Mi rows: the index adds 40 MiB (x1.625).
        let (bytes, rows) = (64 * MIB, 1 << 20);
        // Nothing to estimate from: the fixed fan-out.
        assert_eq!(spill_partitions(None, bytes, rows, 512 * MIB), 32);
        assert_eq!(spill_partitions(Some((0, 100)), bytes, rows, 512 * MIB), 32);
        // 100 MiB of files, scanned as far as decoded: 162.5 MiB needed,
        // 3 partitions of 64 MiB (an eighth of the pool): the floor of 16.
        assert_eq!(spill_partitions(Some((64 * MIB, 100 * MIB)), bytes, rows, 512 * MIB), 16);
        // 10 GiB of files: 16.25 GiB needed, 260 partitions, at most 256.
        assert_eq!(spill_partitions(Some((64 * MIB, 10 << 30)), bytes, rows, 512 * MIB), 256);
        // 4 GiB of files, the reader ahead of the rows (scanned more than
        // decoded): no expansion assumed, 104 partitions.
        assert_eq!(spill_partitions(Some((200 * MIB, 4 << 30)), bytes, rows, 512 * MIB), 104);
        // Rows 4x larger decoded than scanned (dictionaries, compression):
        // 1 GiB of files needs 104 partitions too.
        assert_eq!(spill_partitions(Some((16 * MIB, 1 << 30)), bytes, rows, 512 * MIB), 104);
        // A smaller pool, more partitions for the same data.
        assert_eq!(spill_partitions(Some((64 * MIB, 1 << 30)), bytes, rows, 128 * MIB), 104);
    }
}
