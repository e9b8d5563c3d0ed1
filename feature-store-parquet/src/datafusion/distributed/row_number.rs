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
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

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
