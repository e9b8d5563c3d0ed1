//! `RowNumberExec`: numbers the entity rows before a cluster scatters them
//! by key, so the output can be put back into the entity table's order.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::datafusion::folder_writer::{RowsOnce, row_order};

/// The input's columns plus a `UInt64` row number (0, 1, ...) in input
/// order; the input's partitions are read one after another.
#[derive(Debug)]
pub struct RowNumberExec {
    input: Arc<dyn ExecutionPlan>,
    column: String,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl RowNumberExec {
    /// Appends column `column` to `input`'s rows.
    pub fn new(input: Arc<dyn ExecutionPlan>, column: &str) -> Self {
        let input_schema = input.schema();
        let fields: Vec<Arc<Field>> = input_schema
            .fields()
            .iter()
            .cloned()
            .chain(std::iter::once(Arc::new(Field::new(column, DataType::UInt64, false))))
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, input_schema.metadata().clone()));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self { input, column: column.to_owned(), schema, cache }
    }

    /// The row number's column name.
    pub fn column(&self) -> &str {
        &self.column
    }
}

impl DisplayAs for RowNumberExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowNumberExec: column={}", self.column)
    }
}

impl ExecutionPlan for RowNumberExec {
    fn name(&self) -> &str {
        "RowNumberExec"
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
            children.try_into().map_err(|_| DataFusionError::Internal("RowNumberExec takes one child".into()))?;
        Ok(Arc::new(Self::new(input, &self.column)))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("RowNumberExec has one partition, asked for {partition}")));
        }
        let input = crate::datafusion::partitions_in_order(&self.input, &context)?;
        let schema = Arc::clone(&self.schema);
        let out = Arc::clone(&schema);
        let mut next: u64 = 0;
        let stream = input.map(move |batch| {
            let batch = batch?;
            let n = batch.num_rows() as u64;
            let numbers = Arc::new(UInt64Array::from_iter_values(next..next + n));
            next += n;
            let mut columns = batch.columns().to_vec();
            columns.push(numbers);
            Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The rows of one input partition sorted by row number, each row number
/// once, without the row-number column.
///
/// A cluster can deliver a row twice: when an executor is lost, Ballista's
/// scheduler runs a stage whose input was there again from the start, and
/// the next stage keeps the outputs of the first attempt's finished tasks
/// beside the second's. The copies are identical (every operator here is
/// deterministic), so a row number seen just before is dropped; a row
/// number skipped means rows were lost, and is an error, never a shorter
/// result.
#[derive(Debug)]
pub struct UniqueRowsExec {
    input: Arc<dyn ExecutionPlan>,
    row: usize,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl UniqueRowsExec {
    /// `input`'s rows once each by its column `row`, which the output leaves out.
    pub fn new(input: Arc<dyn ExecutionPlan>, row: usize) -> Self {
        let input_schema = input.schema();
        let keep: Vec<usize> = (0..input_schema.fields().len()).filter(|i| *i != row).collect();
        let schema = Arc::new(input_schema.project(&keep).expect("columns in range"));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self { input, row, schema, cache }
    }

    /// The input's row-number column.
    pub fn row(&self) -> usize {
        self.row
    }
}

impl DisplayAs for UniqueRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UniqueRowsExec: row={}", self.row)
    }
}

impl ExecutionPlan for UniqueRowsExec {
    fn name(&self) -> &str {
        "UniqueRowsExec"
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

    /// One partition sorted by row number: copies of a row are neighbours.
    fn required_input_distribution(&self) -> Vec<datafusion::physical_plan::Distribution> {
        vec![datafusion::physical_plan::Distribution::SinglePartition]
    }

    fn required_input_ordering(&self) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        vec![Some(row_order(&self.input.schema(), self.row))]
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
            children.try_into().map_err(|_| DataFusionError::Internal("UniqueRowsExec takes one child".into()))?;
        Ok(Arc::new(Self::new(input, self.row)))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("UniqueRowsExec has one partition, asked for {partition}")));
        }
        if self.input.output_partitioning().partition_count() != 1 {
            return Err(DataFusionError::Internal("UniqueRowsExec needs one input partition".into()));
        }
        let input = self.input.execute(0, context)?;
        let (schema, row) = (Arc::clone(&self.schema), self.row);
        let out = Arc::clone(&schema);
        let mut once = RowsOnce::every_row();
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        let stream = input.map(move |batch| {
            let batch = batch?;
            let keep = once.keep(&batch, row)?;
            counter.store(once.dropped, std::sync::atomic::Ordering::Relaxed);
            let columns: Vec<usize> = (0..batch.num_columns()).filter(|i| *i != row).collect();
            let batch = batch.project(&columns)?;
            let batch = match keep {
                None => batch,
                Some(keep) => datafusion::arrow::compute::filter_record_batch(&batch, &keep)?,
            };
            Ok(RecordBatch::try_new_with_options(
                Arc::clone(&out),
                batch.columns().to_vec(),
                &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )?)
        });
        let report = futures::stream::once(async move {
            let dropped = dropped.load(std::sync::atomic::Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(dropped, "rows delivered twice after an executor was lost were dropped");
            }
        })
        .filter_map(|()| futures::future::ready(None));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream.chain(report))))
    }
}
