//! The execution node: two children (entity rows, a view's feature rows),
//! one output partition in entity-row order; or, partitioned (a cluster's
//! plan), partition `i` of the entity rows joined with partition `i` of the
//! feature rows, both hash-partitioned by the join keys.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use super::AsOfSpec;
use super::build::{BuildSide, Collected};
use super::grace::grace_join;
use super::metrics::AsOfMetrics;
use super::probe::probe;

/// Point-in-time join of a left (entity) plan with a right (feature rows) plan.
#[derive(Debug)]
pub struct AsOfJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    spec: Arc<AsOfSpec>,
    schema: SchemaRef,
    /// Output the features alone, not the entity columns beside them (a
    /// view of a [`super::ZipExec`]).
    features_only: bool,
    /// Join input partition `i` with input partition `i` (both sides
    /// hash-partitioned by key) instead of reading every partition.
    partitioned: bool,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsOfJoinExec {
    /// The entity columns followed by the view's features (a link of a chain).
    pub(crate) fn new(left: Arc<dyn ExecutionPlan>, right: Arc<dyn ExecutionPlan>, spec: AsOfSpec) -> Self {
        Self::with_output(left, right, spec, false, false)
    }

    /// Partition `i` of `left` joined with partition `i` of `right`: both
    /// must be hash-partitioned by the view's join keys (cast to the spec's
    /// key types) into the same number of partitions. Each output partition
    /// keeps its entity partition's row order.
    #[cfg_attr(not(feature = "distributed"), allow(dead_code))] // the cluster's plans
    pub(crate) fn partitioned(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        spec: AsOfSpec,
    ) -> Result<Self> {
        Self::from_parts(left, right, spec, false, true)
    }

    /// Rebuilds a node from its parts (a cluster's codec decoding one).
    pub(crate) fn from_parts(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        spec: AsOfSpec,
        features_only: bool,
        partitioned: bool,
    ) -> Result<Self> {
        let (l, r) = (left.output_partitioning().partition_count(), right.output_partitioning().partition_count());
        if partitioned && l != r {
            return Err(DataFusionError::Internal(format!(
                "partitioned as-of join of view {}: {l} entity partitions against {r} feature partitions",
                spec.view
            )));
        }
        Ok(Self::with_output(left, right, spec, features_only, partitioned))
    }

    /// The view's features alone, for each entity row in order: the spilled
    /// join then keeps no copy of the entity rows.
    pub(crate) fn features_only(left: Arc<dyn ExecutionPlan>, right: Arc<dyn ExecutionPlan>, spec: AsOfSpec) -> Self {
        Self::with_output(left, right, spec, true, false)
    }

    fn with_output(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        spec: AsOfSpec,
        features_only: bool,
        partitioned: bool,
    ) -> Self {
        let left_schema = left.schema();
        let kept: &[Arc<Field>] = if features_only { &[] } else { left_schema.fields() };
        let fields: Vec<Arc<Field>> =
            kept.iter().cloned().chain(spec.features.iter().map(|f| Arc::new(f.clone().with_nullable(true)))).collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, left_schema.metadata().clone()));
        let partitions = if partitioned { left.output_partitioning().partition_count() } else { 1 };
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            left,
            right,
            spec: Arc::new(spec),
            schema,
            features_only,
            partitioned,
            cache,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl AsOfJoinExec {
    /// The feature view this node joins.
    pub fn view(&self) -> &str {
        &self.spec.view
    }

    #[cfg_attr(not(feature = "distributed"), allow(dead_code))] // the cluster's codec
    pub(crate) fn spec(&self) -> &AsOfSpec {
        &self.spec
    }

    /// Whether only the features are output (see [`Self::features_only`]).
    #[cfg_attr(not(feature = "distributed"), allow(dead_code))]
    pub(crate) fn is_features_only(&self) -> bool {
        self.features_only
    }

    /// Whether partitions are joined pairwise (see [`Self::partitioned`]).
    #[cfg_attr(not(feature = "distributed"), allow(dead_code))]
    pub(crate) fn is_partitioned(&self) -> bool {
        self.partitioned
    }
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.spec.aggregations.is_empty() {
            let interval = self.spec.aggregations[0].window.interval;
            return write!(
                f,
                "AsOfJoinExec: view={}, keys={}, aggregations={}, interval={:?} {:?}",
                self.spec.view,
                self.spec.left_keys.len(),
                self.spec.aggregations.len(),
                interval,
                self.spec.ts_unit
            );
        }
        write!(
            f,
            "AsOfJoinExec: view={}, keys={}, features={}, ttl={:?} {:?}{}",
            self.spec.view,
            self.spec.left_keys.len(),
            self.spec.features.len(),
            self.spec.ttl,
            self.spec.ts_unit,
            if self.partitioned { ", partitioned" } else { "" }
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
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
        Ok(Arc::new(Self::from_parts(left, right, (*self.spec).clone(), self.features_only, self.partitioned)?))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let count = self.cache.partitioning.partition_count();
        if partition >= count {
            return Err(DataFusionError::Internal(format!(
                "AsOfJoinExec has {count} partition(s), asked for {partition}"
            )));
        }
        // Left partitions are read one after another, so input order is kept;
        // partitioned, only the matching one.
        let left_rows = if self.partitioned {
            self.left.execute(partition, Arc::clone(&context))?.boxed()
        } else {
            crate::datafusion::partitions_in_order(&self.left, &context)?
        };
        let metrics = AsOfMetrics::new(&self.metrics, partition);
        let counted = metrics.clone();
        let left = left_rows.inspect(move |b| {
            if let Ok(b) = b {
                counted.entity_rows.add(b.num_rows());
            }
        });
        let right = Arc::clone(&self.right);
        let spec = Arc::clone(&self.spec);
        let schema = Arc::clone(&self.schema);
        let out_schema = Arc::clone(&schema);
        let left_schema = self.left.schema();
        let features_only = self.features_only;
        // The build side starts now, as its own task: every view of a chain
        // reads and indexes its rows at once instead of one after another
        // (the task is aborted if the stream is dropped).
        let right_part = self.partitioned.then_some(partition);
        let build = SpawnedTask::spawn(BuildSide::collect(
            right,
            right_part,
            Arc::clone(&context),
            Arc::clone(&spec),
            metrics.clone(),
        ));
        let output = metrics.clone();
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
                        let probe_time = metrics.probe_time.clone();
                        async move {
                            let batch = batch?;
                            tokio::task::spawn_blocking(move || {
                                let _timer = probe_time.timer();
                                probe(&build, &spec, batch, &schema)
                            })
                            .await
                            .map_err(|e| DataFusionError::External(Box::new(e)))?
                        }
                    })
                    .buffered(parallel)
                    .boxed()
                }
                Collected::Spilled(parts) => {
                    let left = (left.boxed(), left_schema, features_only);
                    grace_join(left, parts, spec, out_schema, context, metrics).await?
                }
            })
        })
        .try_flatten()
        .inspect(move |b| {
            if let Ok(b) = b {
                output.output_rows.add(b.num_rows());
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, joined)))
    }
}
