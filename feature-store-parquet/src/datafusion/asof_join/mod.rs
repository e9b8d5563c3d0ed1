//! `AsOfJoinExec`: the point-in-time join as a DataFusion physical operator.
//!
//! - [`exec`]: the execution node and how a partition runs.
//! - [`build`]: the build side: feature rows collected, grouped by key,
//!   sorted by time, ties resolved.
//! - [`probe`]: entity batches searching the index.
//! - [`grace`] and [`spill`]: the out-of-core (grace hash) join under a memory limit.
//! - [`metrics`]: what the node reports to DataFusion (`EXPLAIN ANALYZE`).
//! - [`zip`]: views joined side by side under a memory limit, each
//!   reading the entity rows itself, their features put together row for row.
//!
//! Algorithm: a hash as-of join. The right (feature) side is collected once,
//! grouped by join key, and each group sorted by (event time, created time,
//! tie-break); the left (entity) side streams through in order and each row
//! binary-searches its key's group for the last event time `<=` its own.
//! Cost is O(m log m) to build and O(n log k) to probe (k = rows per key),
//! the complexity of a sort-merge as-of join, without sorting the entity
//! side and without a final sort to restore input order: output rows leave
//! in input order by construction.
//!
//! Right input layout (made by the planner): `[keys..., event_ts, created_ts?, features...]`,
//! keys already cast to the canonical key types and features to their output types.
//!
//! Aggregation views ([`AsOfSpec::aggregations`] not empty) use the same
//! node: the right side's columns are then the aggregations' inputs, the
//! build also indexes each key's events for range queries
//! ([`feature_store_core::aggregation::RangeIndex`]), and each entity row,
//! instead of taking one row, aggregates the range of its key's events in
//! its window. Spilling, metrics and the output order are shared.

mod build;
mod exec;
mod grace;
mod metrics;
mod probe;
mod spill;
mod zip;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

pub use exec::AsOfJoinExec;
pub use metrics::METRIC_NAMES;
pub use zip::ZipExec;

/// What one as-of join node joins.
#[derive(Debug, Clone)]
pub(crate) struct AsOfSpec {
    /// View name, for messages and plan display.
    pub view: String,
    /// The view and its source, for errors met while reading its rows.
    pub context: String,
    /// Positions of the join keys in the left schema.
    pub left_keys: Vec<usize>,
    /// Position of the entity timestamp in the left schema.
    pub left_ts: usize,
    /// Canonical type of each key; both sides are cast to it.
    pub key_types: Vec<DataType>,
    /// Whether the right side carries a created-timestamp column.
    pub has_created: bool,
    /// The features appended to the output (right layout order).
    pub features: Vec<Field>,
    /// Unit both sides' event times are compared in (the finer of the two).
    pub ts_unit: TimeUnit,
    /// Ttl in `ts_unit`; `None` is unlimited.
    pub ttl: Option<i64>,
    /// For an aggregation view: one per output feature, in `features` order.
    pub aggregations: Vec<AggColumn>,
}

/// One aggregate feature of an aggregation view.
#[derive(Debug, Clone)]
pub(crate) struct AggColumn {
    /// Function, input type, window and interval (both in the spec's `ts_unit`).
    pub window: feature_store_core::aggregation::WindowSpec,
    /// Which right-side input column it reads (after keys and times); `None` counts rows.
    pub column: Option<usize>,
    /// The output feature's type.
    pub dtype: feature_store_core::ValueType,
}
