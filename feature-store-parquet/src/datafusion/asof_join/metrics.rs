//! What an as-of join reports through DataFusion's metrics, so a retrieval
//! plan shown with its metrics (`EXPLAIN ANALYZE`) says, per view, how many
//! rows went in and out, where time went and whether it spilled.

use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricCategory, Time};

use super::spill::SpillFile;

/// The metrics an `AsOfJoinExec` reports, by name.
pub const METRIC_NAMES: &[&str] = &[
    "output_rows",
    "entity_rows",
    "feature_rows",
    "build_time",
    "probe_time",
    "spill_time",
    "build_mem_used",
    "spill_count",
    "spilled_bytes",
    "spilled_rows",
];

/// Handles to one join's metrics; clones update the same values.
#[derive(Debug, Clone)]
pub(crate) struct AsOfMetrics {
    /// Rows produced (one per entity row).
    pub(crate) output_rows: Count,
    /// Entity rows read from the left child.
    pub(crate) entity_rows: Count,
    /// Feature rows read from the right child (the view's source rows in range).
    pub(crate) feature_rows: Count,
    /// Time indexing feature rows (grouping by key, sorting by time, ties).
    pub(crate) build_time: Time,
    /// Time probing entity rows against the index.
    pub(crate) probe_time: Time,
    /// Time partitioning rows into spill files, writing and reading them
    /// (the grace join only).
    pub(crate) spill_time: Time,
    /// Memory reserved for the in-memory build side, at its largest.
    pub(crate) build_mem_used: Gauge,
    /// Spill files written (grace partitions of both sides and their outputs).
    pub(crate) spill_count: Count,
    /// Bytes written to spill files.
    pub(crate) spilled_bytes: Count,
    /// Rows written to spill files.
    pub(crate) spilled_rows: Count,
}

impl AsOfMetrics {
    pub(crate) fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let rows =
            |name: &'static str| MetricBuilder::new(set).with_category(MetricCategory::Rows).counter(name, partition);
        Self {
            output_rows: MetricBuilder::new(set).output_rows(partition),
            entity_rows: rows("entity_rows"),
            feature_rows: rows("feature_rows"),
            build_time: MetricBuilder::new(set).subset_time("build_time", partition),
            probe_time: MetricBuilder::new(set).subset_time("probe_time", partition),
            spill_time: MetricBuilder::new(set).subset_time("spill_time", partition),
            build_mem_used: MetricBuilder::new(set).peak_memory_usage("build_mem_used", partition),
            spill_count: MetricBuilder::new(set).spill_count(partition),
            spilled_bytes: MetricBuilder::new(set).spilled_bytes(partition),
            spilled_rows: MetricBuilder::new(set).spilled_rows(partition),
        }
    }

    /// Counts spill files just written (empty ones are not counted).
    pub(crate) fn spilled(&self, files: &[SpillFile]) {
        for f in files.iter().filter(|f| f.rows > 0) {
            self.spill_count.add(1);
            self.spilled_bytes.add(f.bytes);
            self.spilled_rows.add(f.rows);
        }
    }
}
