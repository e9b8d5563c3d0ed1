//! `TilesExec`: an aggregation view's online tile rows built from its events
//! per hash partition of the keys, where the events are (the local engine's
//! partitions, or a cluster's executors), so only tile rows travel on.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use feature_store_core::aggregation::tile_rows::{TileWindow, tile_rows, tile_rows_schema};
use feature_store_core::model::FeatureView;
use futures::{StreamExt, TryStreamExt};

/// Output rows per batch.
const BATCH_ROWS: usize = 8192;

/// What a [`TilesExec`] builds: the view, its key columns, the blocks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TilesSpec {
    /// The aggregation view.
    pub(crate) view: FeatureView,
    /// The join-key columns of the events, by name.
    pub(crate) keys: Vec<String>,
    /// The blocks rewritten.
    pub(crate) window: TileWindow,
}

/// Per input partition, which must hold every event of its keys: the tile
/// rows of those events ([`tile_rows`]), built once the partition has been
/// read.
pub(crate) struct TilesExec {
    input: Arc<dyn ExecutionPlan>,
    spec: Arc<TilesSpec>,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for TilesExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TilesExec").field("view", &self.spec.view.name).finish_non_exhaustive()
    }
}

impl TilesExec {
    /// Tile rows of `spec` from `input`'s partitions.
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, spec: TilesSpec) -> Self {
        let schema = tile_rows_schema(&spec.view);
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            input.boundedness(),
        ));
        Self { input, spec: Arc::new(spec), cache, metrics: ExecutionPlanMetricsSet::new() }
    }

    /// [`TilesExec::spec`] as JSON: the view's definition, not code.
    pub(crate) fn spec_json(&self) -> String {
        let s = &self.spec;
        serde_json::to_string(&(&s.view, &s.keys, &s.window)).expect("definitions serialize")
    }

    /// A spec from [`TilesExec::spec_json`].
    pub(crate) fn spec_from_json(json: &str) -> std::result::Result<TilesSpec, String> {
        let (view, keys, window) = serde_json::from_str(json).map_err(|e| format!("tile spec: {e}"))?;
        Ok(TilesSpec { view, keys, window })
    }
}

impl DisplayAs for TilesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TilesExec: view={}, keys=[{}]", self.spec.view.name, self.spec.keys.join(", "))
    }
}

impl ExecutionPlan for TilesExec {
    fn name(&self) -> &str {
        "TilesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
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
            children.try_into().map_err(|_| DataFusionError::Internal("TilesExec takes one child".into()))?;
        Ok(Arc::new(Self::new(input, self.spec.as_ref().clone())))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let spec = Arc::clone(&self.spec);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema: SchemaRef = tile_rows_schema(&spec.view);
        let events_schema = input.schema();
        let rows = futures::stream::once(async move {
            let batches: Vec<RecordBatch> = input.try_collect().await?;
            let timer = baseline.elapsed_compute().timer();
            let events = datafusion::arrow::compute::concat_batches(&events_schema, &batches)?;
            drop(batches);
            let keys: Vec<&str> = spec.keys.iter().map(String::as_str).collect();
            let out = tile_rows(&spec.view, &keys, &events, &spec.window)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            timer.done();
            baseline.record_output(out.num_rows());
            let chunks: Vec<Result<RecordBatch>> = (0..out.num_rows())
                .step_by(BATCH_ROWS)
                .map(|at| Ok(out.slice(at, BATCH_ROWS.min(out.num_rows() - at))))
                .collect();
            Ok::<_, DataFusionError>(futures::stream::iter(chunks))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows.boxed())))
    }
}
