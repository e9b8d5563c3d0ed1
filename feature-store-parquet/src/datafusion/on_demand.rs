//! `OnDemandExec`: on-demand features computed on the joined rows inside
//! the retrieval plan, per partition. So they run where the join runs (on a
//! cluster's executors, before a folder output's writer) and beside the
//! plan's other work rather than after it on the caller's thread.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use feature_store_core::on_demand::{BoundProjection, OnDemandProjection};
use futures::StreamExt;

/// The input's rows without the hidden inputs of on-demand features, plus
/// one column per requested on-demand feature (see [`OnDemandProjection`]).
/// Keeps the input's partitioning and order.
pub struct OnDemandExec {
    input: Arc<dyn ExecutionPlan>,
    projection: OnDemandProjection,
    bound: Arc<BoundProjection>,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for OnDemandExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnDemandExec").field("views", &self.view_names()).finish_non_exhaustive()
    }
}

impl OnDemandExec {
    /// Binds `projection` to `input`'s schema: a missing request field or a
    /// clashing output name is an error now, before any row is read.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, projection: OnDemandProjection) -> feature_store_core::Result<Self> {
        let bound = Arc::new(projection.bind(&input.schema())?);
        let schema = Arc::clone(bound.schema());
        // As many partitions as the input, but no claim about how rows are
        // spread: a hash partitioning names columns by position, and the
        // hidden inputs' columns are dropped.
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Ok(Self { input, projection, bound, cache, metrics: ExecutionPlanMetricsSet::new() })
    }

    /// What it computes.
    pub fn projection(&self) -> &OnDemandProjection {
        &self.projection
    }

    fn view_names(&self) -> Vec<&str> {
        self.projection.requests().iter().map(|r| r.view.name.as_str()).collect()
    }
}

impl DisplayAs for OnDemandExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let features: usize = self.projection.requests().iter().map(|r| r.features.len()).sum();
        write!(f, "OnDemandExec: views=[{}], features={features}", self.view_names().join(", "))
    }
}

impl ExecutionPlan for OnDemandExec {
    fn name(&self) -> &str {
        "OnDemandExec"
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
            children.try_into().map_err(|_| DataFusionError::Internal("OnDemandExec takes one child".into()))?;
        Ok(Arc::new(Self::try_new(input, self.projection.clone()).map_err(|e| DataFusionError::External(Box::new(e)))?))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let bound = Arc::clone(&self.bound);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema: SchemaRef = Arc::clone(bound.schema());
        let stream = input.map(move |batch| {
            let batch = batch?;
            let timer = baseline.elapsed_compute().timer();
            let out = bound.apply(&batch).map_err(|e| DataFusionError::External(Box::new(e)));
            timer.done();
            if let Ok(b) = &out {
                baseline.record_output(b.num_rows());
            }
            out
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
