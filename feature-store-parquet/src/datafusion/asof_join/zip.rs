//! `ZipExec`: the entity rows beside each view's features, row for row.
//!
//! Under a memory limit the views are joined side by side instead of in a
//! chain: each [`super::AsOfJoinExec`] reads the entity rows itself and
//! outputs only its features, and this node puts the columns together. A
//! chain hands each view the entity rows plus every earlier view's
//! features, so a spilling view would write all of those to disk and read
//! them back; side by side, a spilling view keeps only keys, times and its
//! own features. It needs an entity plan that gives the same rows in the
//! same order each time it runs (files and in-memory batches, not a
//! one-shot stream or a query), which the planner checks.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::{RecordBatchReceiverStream, RecordBatchStreamAdapter};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use futures::stream::BoxStream;

/// Columns of children that give the same number of rows, side by side.
#[derive(Debug)]
pub struct ZipExec {
    children: Vec<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
}

impl ZipExec {
    /// `children[0]`'s columns, then each other child's, in order.
    pub(crate) fn new(children: Vec<Arc<dyn ExecutionPlan>>) -> Self {
        let fields: Vec<Arc<Field>> = children.iter().flat_map(|c| c.schema().fields().to_vec()).collect();
        let metadata = children.first().map(|c| c.schema().metadata().clone()).unwrap_or_default();
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self { children, schema, cache }
    }
}

impl DisplayAs for ZipExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZipExec: inputs={}", self.children.len())
    }
}

impl ExecutionPlan for ZipExec {
    fn name(&self) -> &str {
        "ZipExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.children.iter().collect()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true; self.children.len()]
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
        Ok(Arc::new(Self::new(children)))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("ZipExec has one partition, asked for {partition}")));
        }
        // A child's partitions are read one after another, in order; each
        // child runs ahead on its own task (see `run_ahead`).
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
        let inputs = self
            .children
            .iter()
            .map(|c| Ok(run_ahead(crate::datafusion::partitions_in_order(c, &context)?, c.schema(), &gate)))
            .collect::<Result<Vec<BoxStream<'static, Result<RecordBatch>>>>>()?;
        let zip = Zip { current: (0..inputs.len()).map(|_| None).collect(), inputs, schema: Arc::clone(&self.schema) };
        let stream = futures::stream::unfold(Some(zip), |state| async move {
            let mut zip = state?;
            match zip.next_batch().await {
                Ok(Some(b)) => Some((Ok(b), Some(zip))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream)))
    }
}

/// Drives `input` on a task of its own, at most two batches ahead of the
/// zip. Without it the zip pulled one child at a time, so a spilling view's
/// partitioning and partition joins ran only after the view before it had
/// produced its first rows, and every view's reassembly shared one thread.
/// Until its first batch a child holds one of `gate`'s permits (one per
/// core): the work before a spilled view's first row is what takes cores
/// and memory outside the pool (the spill writers' pending batches), so
/// only that many views do it at once; after it a view only reads back.
fn run_ahead(
    mut input: BoxStream<'static, Result<RecordBatch>>,
    schema: SchemaRef,
    gate: &Arc<tokio::sync::Semaphore>,
) -> BoxStream<'static, Result<RecordBatch>> {
    let mut builder = RecordBatchReceiverStream::builder(schema, 2);
    let tx = builder.tx();
    let gate = Arc::clone(gate);
    builder.spawn(async move {
        let mut permit = Some(gate.acquire_owned().await.map_err(|e| DataFusionError::External(Box::new(e)))?);
        while let Some(batch) = input.next().await {
            permit.take();
            if tx.send(batch).await.is_err() {
                break; // the zip was dropped
            }
        }
        Ok(())
    });
    builder.build().boxed()
}

struct Zip {
    inputs: Vec<BoxStream<'static, Result<RecordBatch>>>,
    /// Per input: its current batch and the next row of it.
    current: Vec<Option<(RecordBatch, usize)>>,
    schema: SchemaRef,
}

impl Zip {
    /// As many rows as every input has at hand, or `None` when all ended
    /// together (an input ending early is an error: the rows would not line up).
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut ended = Vec::new();
        for (i, input) in self.inputs.iter_mut().enumerate() {
            if self.current[i].is_none() {
                loop {
                    match input.next().await {
                        Some(b) => {
                            let b = b?;
                            if b.num_rows() > 0 {
                                self.current[i] = Some((b, 0));
                                break;
                            }
                        }
                        None => {
                            ended.push(i);
                            break;
                        }
                    }
                }
            }
        }
        if ended.len() == self.inputs.len() {
            return Ok(None);
        }
        if !ended.is_empty() {
            return Err(DataFusionError::Internal(format!(
                "ZipExec: input(s) {ended:?} ended before the others; the views' rows do not line up"
            )));
        }
        let n = self.current.iter().flatten().map(|(b, i)| b.num_rows() - i).min().expect("inputs");
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for current in &mut self.current {
            let (batch, i) = current.as_mut().expect("every input has a batch");
            columns.extend(batch.slice(*i, n).columns().iter().cloned());
            *i += n;
            if *i == batch.num_rows() {
                *current = None;
            }
        }
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Some(RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?))
    }
}
