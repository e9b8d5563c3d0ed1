//! The distributed form of a retrieval plan.
//!
//! ```text
//! UniqueRowsExec (each row number once; drops it)
//!   SortPreservingMergeExec [row]         <- stage: the rows in entity order
//!     SortExec [row], per partition
//!       OnDemandExec (on-demand features, when requested), per partition
//!       AsOfJoinExec (view n, partitioned)
//!         FirstAttemptExec over RepartitionExec Hash(view n's keys) over AttemptStampExec
//!                                               <- stage boundary (shuffle)
//!           ... AsOfJoinExec (view 1, partitioned)
//!                 RepartitionExec Hash(keys) over RowNumberExec over the entity scan
//!                 RepartitionExec Hash(__key0..) over view 1's feature scan
//! ```
//!
//! Ballista cuts a stage at each hash exchange and at the merge. A view's
//! partition `i` holds every entity row and every feature row of the keys
//! that hash to `i`, so each partition's join is exact on its own; the
//! joins are the local engine's operator, so the rows are the local
//! engine's, bit for bit.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use feature_store_core::on_demand::OnDemandProjection;

use super::attempts::{AttemptStampExec, FirstAttemptExec};
use super::row_number::{RowNumberExec, UniqueRowsExec};
use crate::datafusion::asof_join::{AsOfJoinExec, AsOfSpec};
use crate::datafusion::folder_writer::{FolderTarget, FolderWriterExec};
use crate::datafusion::on_demand::OnDemandExec;

/// The row-number column; no entity table or view uses this name.
pub(crate) const ROW: &str = "__feature_store_row";

/// The retrieval of `views` (each a feature-side plan and its join) for the
/// rows of `entities`, split into `partitions` hash partitions per view.
/// With `folder`, the executors write the rows there instead of sending
/// them back (see [`folder_tail`]).
pub(crate) fn distribute(
    entities: Arc<dyn ExecutionPlan>,
    views: Vec<(Arc<dyn ExecutionPlan>, AsOfSpec)>,
    partitions: usize,
    on_demand: Option<OnDemandProjection>,
    folder: Option<&FolderTarget>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut plan: Arc<dyn ExecutionPlan> = Arc::new(RowNumberExec::new(entities, ROW));
    for (right, spec) in views {
        let left_schema = plan.schema();
        // Both sides hash the same values: the entity keys cast to the
        // view's key types, as the feature side's keys already are.
        let left_hash = spec
            .left_keys
            .iter()
            .zip(&spec.key_types)
            .map(|(&i, t)| {
                let field = left_schema.field(i);
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), i));
                if field.data_type() == t { column } else { Arc::new(CastExpr::new(column, t.clone(), None)) }
            })
            .collect();
        let right_schema = right.schema();
        let right_hash = (0..spec.key_types.len())
            .map(|i| Arc::new(Column::new(right_schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        plan = Arc::new(AsOfJoinExec::partitioned(
            exchange(plan, left_hash, partitions)?,
            exchange(right, right_hash, partitions)?,
            spec,
        )?);
    }
    // On-demand features from each partition's joined rows, on the executors.
    if let Some(projection) = on_demand {
        plan = Arc::new(OnDemandExec::try_new(plan, projection).map_err(|e| DataFusionError::External(Box::new(e)))?);
    }
    let schema = plan.schema();
    let row = schema.index_of(ROW)?;
    let order = LexOrdering::new([PhysicalSortExpr::new_default(Arc::new(Column::new(ROW, row)))])
        .expect("one sort expression");
    if let Some(folder) = folder {
        return folder_tail(plan, row, order, partitions, folder);
    }
    let sorted = Arc::new(SortExec::new(order.clone(), plan).with_preserve_partitioning(true));
    let merged = Arc::new(SortPreservingMergeExec::new(order, sorted));
    Ok(Arc::new(UniqueRowsExec::new(merged, row)))
}

/// `plan`'s rows hash-partitioned by `hash`, each input partition's rows
/// once even if the cluster ran it twice (a feature row counted twice would
/// change a windowed sum; see [`super::attempts`]).
fn exchange(
    plan: Arc<dyn ExecutionPlan>,
    hash: Vec<Arc<dyn PhysicalExpr>>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let stamped = Arc::new(AttemptStampExec::new(plan, false));
    let exchanged = Arc::new(RepartitionExec::try_new(stamped, Partitioning::Hash(hash, partitions))?);
    Ok(Arc::new(FirstAttemptExec::try_new(exchanged)?))
}

/// The rows written to a folder by the executors, a file per block of
/// `rows_per_file` row numbers:
///
/// ```text
/// CoalescePartitionsExec                  <- the list of files back to the caller
///   FolderWriterExec, per partition       <- writes part-<row / rows_per_file>-<run>.parquet
///     SortExec [row], per partition
///       RepartitionExec Hash(row / rows_per_file)   <- a file's rows meet in one partition
///         the joins
/// ```
fn folder_tail(
    plan: Arc<dyn ExecutionPlan>,
    row: usize,
    order: LexOrdering,
    partitions: usize,
    folder: &FolderTarget,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
    let block: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::new(Column::new(ROW, row)),
        Operator::Divide,
        Arc::new(Literal::new(ScalarValue::UInt64(Some(folder.rows_per_file)))),
    ));
    let gathered = Arc::new(RepartitionExec::try_new(plan, Partitioning::Hash(vec![block], partitions))?);
    let sorted = Arc::new(SortExec::new(order, gathered).with_preserve_partitioning(true));
    let writer = FolderWriterExec::new(sorted, Some(row), folder.rows_per_file, folder.url.clone(), folder.run.clone());
    Ok(Arc::new(CoalescePartitionsExec::new(Arc::new(writer))))
}
