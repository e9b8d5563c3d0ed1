//! DataFusion glue: the session, the error bridge, the as-of join operator
//! ([`AsOfJoinExec`]) and the planner that turns a historical request into one
//! physical plan.

mod asof_join;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod folder_writer;
pub(crate) mod historical;
pub(crate) mod latest;
mod on_demand;
mod stats;
pub(crate) mod tiles;
mod timestamps;

pub use asof_join::{AsOfJoinExec, METRIC_NAMES as ASOF_METRIC_NAMES, ZipExec};
pub use historical::RetrievalPlan;
pub(crate) use historical::{Engine, ResolvedEntities, entity_plan, plan_historical};
pub use latest::{DEFAULT_MATERIALIZE_MEMORY, LatestPerKeyExec};
pub(crate) use latest::{latest_rows, tiles};
pub use on_demand::OnDemandExec;
pub(crate) use stats::{profile, window_stats};

use std::sync::Arc;

use datafusion::common::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use feature_store_core::Error as CoreError;

/// Every partition of `plan`, one after another, as one stream: the
/// plan's rows in its partitions' order.
pub(crate) fn partitions_in_order(
    plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    context: &Arc<datafusion::execution::TaskContext>,
) -> datafusion::common::Result<
    futures::stream::BoxStream<'static, datafusion::common::Result<datafusion::arrow::array::RecordBatch>>,
> {
    use datafusion::physical_plan::ExecutionPlanProperties;
    use futures::StreamExt;
    let parts = (0..plan.output_partitioning().partition_count())
        .map(|p| plan.execute(p, Arc::clone(context)))
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    Ok(futures::stream::iter(parts).flatten().boxed())
}

/// Hands memory the process has freed back to the kernel before a new
/// operation starts under a limit. glibc's malloc keeps freed memory in
/// its arenas (up to 64 MiB a heap, and any free pages below the top), so
/// one view's freed buffers still count against the cgroup while the next
/// view allocates its own. Materializing an aggregation view, then a plain
/// view, under 32 MiB: 83-89 MiB of anonymous memory at the peak without
/// this, 72-79 with it. `malloc_trim` takes a few milliseconds; other
/// allocators and platforms are left alone.
#[allow(unsafe_code)]
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heap to the kernel;
    // it reads no memory of ours and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A session for one retrieval: all cores, and the memory limit (if any)
/// as a fair spill pool so operators that can spill do.
pub(crate) fn session(memory_limit: Option<usize>, target_partitions: usize) -> Result<SessionContext, CoreError> {
    session_with_batch_rows(memory_limit, target_partitions, batch_rows(memory_limit))
}

/// [`session`] with batches of `rows` rows.
pub(crate) fn session_with_batch_rows(
    memory_limit: Option<usize>,
    target_partitions: usize,
    rows: usize,
) -> Result<SessionContext, CoreError> {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        release_freed_heap();
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(pool_bytes(limit))));
    }
    let runtime = runtime.build_arc().map_err(|e| df_error("starting the query engine", e))?;
    let mut config = SessionConfig::new();
    if let Some(limit) = memory_limit {
        // Sorts reserve this much for merging spilled runs; the 10 MB default
        // would not fit small limits.
        config = config
            .with_sort_spill_reservation_bytes((pool_bytes(limit) / 8).min(10 << 20))
            // The filter's decoded columns, cached for the projection, are
            // held outside any pool.
            .set_usize("datafusion.execution.parquet.max_predicate_cache_size", 0);
    }
    // Under a limit, one partition per scan: every open scan holds its column
    // readers' dictionaries and pages outside the pool, and a retrieval's
    // views already read at once, one scan each.
    let partitions = if memory_limit.is_some() { 1 } else { target_partitions.max(1) };
    let config = config
        .with_target_partitions(partitions)
        .with_batch_size(rows)
        .set_bool("datafusion.execution.parquet.schema_force_view_types", false)
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        // Parquet writers leave NaN out of float min/max statistics, and
        // DataFusion 55 takes a column whose min equals its max (no nulls) for
        // a constant: [NaN, 1.0] would be read as [1.0, 1.0]
        // (apache/datafusion#24804). Row-group pruning on the time column
        // still reads statistics; planning from them is not needed here.
        .set_bool("datafusion.execution.collect_statistics", false);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let local = url::Url::parse("file://").expect("a valid URL");
    ctx.register_object_store(&local, crate::mapped_files::MappedLocalFiles::new());
    Ok(ctx)
}

/// The share of a memory limit DataFusion's pool gets: 1/2. An output
/// writer takes up to 1/8 (row groups cut at 1/16, encoded beside the rows);
/// the rest covers what no pool sees: each open Parquet column reader's
/// dictionary and page buffers, spill writers' pending batches and the
/// allocator's slack (workload 2, five views side by side under 1 GiB: a
/// 640 MiB pool gave a heap peak of 736 MB and 958 MiB of anonymous memory,
/// too close to a cgroup of 1,126 MiB; measured with heaptrack and the
/// cgroup's counters).
pub(crate) fn pool_bytes(limit: usize) -> usize {
    limit / 2
}

/// Rows per batch. Without a memory limit, 8x DataFusion's default: Parquet
/// decoding and the as-of join do less per-batch work (workload 1 from
/// Python, best of five: 0.52-0.53 s against 0.60-0.69 s). Under a limit, the
/// default keeps each operator's working set small enough to spill in steps.
fn batch_rows(memory_limit: Option<usize>) -> usize {
    if memory_limit.is_some() { 8192 } else { 65_536 }
}

/// Output bytes a retrieval batch aims at when no memory limit is set.
const RETRIEVAL_BATCH_BYTES: usize = 64 << 20;

/// Rows per batch of a historical retrieval whose output rows take about
/// `row_bytes`: batches of about [`RETRIEVAL_BATCH_BYTES`], between 8Ki
/// (DataFusion's default) and 512Ki rows. Fewer, larger batches mean fewer
/// probe and gather rounds per view (workload 1 from Python, 50 float
/// features, alternating in one process: 0.46-0.52 s best at 256Ki-512Ki
/// rows against 0.64 s at 64Ki). The byte budget keeps rows of thousands of
/// features from making batches of gigabytes; under a memory limit the
/// session's small batches stay.
pub(crate) fn retrieval_batch_rows(memory_limit: Option<usize>, row_bytes: usize) -> usize {
    if memory_limit.is_some() {
        return batch_rows(memory_limit);
    }
    (RETRIEVAL_BATCH_BYTES / row_bytes.max(1)).clamp(8192, 512 << 10)
}

/// Maps engine errors to the core error, keeping unreachable stores apart.
pub(crate) fn df_error(context: &str, e: DataFusionError) -> CoreError {
    match e {
        DataFusionError::ObjectStore(source) => match *source {
            object_store::Error::Generic { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                CoreError::StoreUnavailable { store: context.to_owned(), source: Box::new(*source) }
            }
            other => CoreError::data(context, other.to_string()),
        },
        DataFusionError::ResourcesExhausted(m) => CoreError::data(context, format!("out of memory: {m}")),
        DataFusionError::ArrowError(a, _) => CoreError::data(context, a.to_string()),
        DataFusionError::ParquetError(p) => CoreError::data(context, format!("not a readable Parquet file: {p}")),
        DataFusionError::Context(c, inner) => df_error(&format!("{context}: {c}"), *inner),
        DataFusionError::Shared(inner) => match Arc::try_unwrap(inner) {
            Ok(e) => df_error(context, e),
            Err(shared) => CoreError::data(context, shared.to_string()),
        },
        DataFusionError::External(b) => match b.downcast::<CoreError>() {
            Ok(core) => *core,
            Err(other) => CoreError::Backend { context: context.to_owned(), source: other },
        },
        other => CoreError::data(context, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retrieval_batches_follow_row_width() {
        use super::retrieval_batch_rows;
        // Workload 1: 50 float32 features plus the entity columns.
        assert_eq!(retrieval_batch_rows(None, 232), (64 << 20) / 232);
        assert_eq!(retrieval_batch_rows(None, 8), 512 << 10);
        assert_eq!(retrieval_batch_rows(None, 40_000), 8192);
        assert_eq!(retrieval_batch_rows(Some(1 << 30), 232), 8192);
    }
}
