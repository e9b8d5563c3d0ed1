//! The offline store contract, its optional capabilities, and the in-memory
//! reference implementation.
//!
//! [`OfflineStore`] is what every offline backend must do: a source's schema,
//! point-in-time retrieval, and the latest rows for materialization. What
//! only some backends can do is a capability the backend hands out
//! ([`OfflineStore::statistics`], [`OfflineStore::writer`],
//! [`OfflineStore::datasets`]); the facade asks for it and says which
//! capability is missing, instead of each method failing on its own.

mod datasets;
pub mod folder;
mod memory;
pub mod profile;
mod reference_join;
pub mod statistics;

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use datasets::{DatasetStorage, ObjectInfo, hex};
pub use memory::MemoryOfflineStore;
pub use statistics::{FeatureStats, OfflineStatistics, StatsRequest, WindowStats};

use crate::Result;
use crate::aggregation::tile_rows::TileWindow;
use crate::historical::{BatchStream, HistoricalRequest};
use crate::model::{DataSource, FeatureView, JoinKey};

/// What an offline store knows about a source's columns before reading rows.
#[derive(Debug, Clone)]
pub struct SourceSchema {
    /// Columns as stored (before `field_mapping`), partition columns last.
    pub schema: SchemaRef,
    /// Columns that come from hive-style `key=value/` folder names.
    pub partition_columns: Vec<String>,
    /// Where the schema was read from (a file), for messages.
    pub location: String,
}

/// Historical data access. Backends: Parquet on object stores
/// (`feature-store-parquet`) and [`MemoryOfflineStore`].
#[async_trait]
pub trait OfflineStore: Send + Sync + Debug {
    /// The columns a source provides; errors name the source and its path.
    async fn source_schema(&self, source: &DataSource) -> Result<SourceSchema>;

    /// Files of `source` that a run reading them would refuse (unreadable,
    /// a column type no other file agrees with, or one a `declared` feature
    /// type does not accept), one sentence each naming the file. `apply` and
    /// `plan` show them as warnings: a retrieval reads only the files its
    /// window reaches, so such a file otherwise surfaces at the first run
    /// that reaches it (and files added after `apply` are checked by the
    /// next `plan`). Empty for stores without files.
    async fn file_problems(&self, source: &DataSource, declared: &[DeclaredColumn]) -> Result<Vec<String>>;

    /// Point-in-time correct retrieval: one output row per entity row, in
    /// input order, with each view's features as of the row's timestamp.
    /// Semantics are those of [`crate::historical`]. A request's
    /// [`HistoricalRequest::on_demand`] projection is applied before the
    /// rows leave the store (at the latest with
    /// [`crate::on_demand::OnDemandProjection::apply_stream`]).
    async fn get_historical_features(&self, request: HistoricalRequest) -> Result<BatchStream>;

    /// For materialization: the newest row per entity key with event time in
    /// `[start, end]`, ties broken as in historical retrieval, streamed with
    /// memory bounded independently of the row count.
    async fn latest_rows(&self, request: LatestRequest) -> Result<LatestRows>;

    /// For materializing aggregation views: the tile rows
    /// ([`crate::aggregation::tile_rows`], layout
    /// [`crate::aggregation::tile_rows::tile_rows_schema`]) of every entity
    /// key with events in `[request.start, request.end]` (non-null keys), in
    /// no particular order. Each key's rows must come from all of its events
    /// at once.
    async fn tiles(&self, request: TilesRequest) -> Result<BatchStream>;

    /// Window statistics and profiles for data-quality gates; `None` when
    /// this backend cannot compute them.
    fn statistics(&self) -> Option<&dyn OfflineStatistics> {
        None
    }

    /// Appending pushed rows to a source; `None` when this backend's sources are read-only.
    fn writer(&self) -> Option<&dyn OfflineWriter> {
        None
    }

    /// Storage for saved datasets; `None` when this backend cannot store them.
    fn datasets(&self) -> Option<&dyn DatasetStorage> {
        None
    }

    /// Writing retrievals straight to a folder of files where the rows are
    /// produced; `None` when this backend cannot.
    fn folder_writer(&self) -> Option<&dyn folder::FolderWriter> {
        None
    }
}

/// A source column a feature view declares a type for, checked against
/// every file by [`OfflineStore::file_problems`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeclaredColumn {
    /// The view declaring it.
    pub view: String,
    /// The feature.
    pub feature: String,
    /// The column in the source's files (after `field_mapping`).
    pub column: String,
    /// The declared type.
    pub dtype: crate::ValueType,
}

impl DeclaredColumn {
    /// Feature `feature` of `view`, read from `column`, declared `dtype`.
    pub fn new(
        view: impl Into<String>,
        feature: impl Into<String>,
        column: impl Into<String>,
        dtype: crate::ValueType,
    ) -> Self {
        Self { view: view.into(), feature: feature.into(), column: column.into(), dtype }
    }
}

/// Appends pushed rows to a source's data; see [`OfflineStore::writer`].
#[async_trait]
pub trait OfflineWriter: Send + Sync + Debug {
    /// Appends `batch` (columns named as in the source) to the source's data
    /// as a new file or part; returns where it was written.
    async fn append(&self, source: &DataSource, batch: RecordBatch) -> Result<String>;

    /// Writes `batches` (one schema, at least one batch; parts, not
    /// concatenated first) as the file `name` in the source's folder, below the
    /// hive partition folder `partition` (`date=2024-05-01`) when given,
    /// atomically (readers see all of it or nothing). Returns `false`, and
    /// writes nothing, when a file of that name is already there: a writer
    /// that names files by what they hold can repeat a write after a crash.
    async fn append_named(
        &self,
        source: &DataSource,
        partition: Option<&str>,
        name: &str,
        batches: Vec<RecordBatch>,
    ) -> Result<bool>;

    /// Names (without folders) of the source's files whose names start
    /// with `prefix`, in any partition.
    async fn list_named(&self, source: &DataSource, prefix: &str) -> Result<Vec<String>>;

    /// Merges runs of small offline log files of `request.stream` (see
    /// [`crate::ingest::log_file`]) into one file per run, and deletes files
    /// a merged file replaces. Each partition's newest file is left as it
    /// is (a restart may complete that flush in other folders). Safe beside
    /// running ingestion and other compactions: readers skip replaced files
    /// from the moment their merged file exists.
    async fn compact_log(&self, source: &DataSource, request: &CompactRequest) -> Result<Compacted>;
}

/// What [`OfflineWriter::compact_log`] merges.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactRequest {
    /// The stream source whose log files are merged.
    pub stream: String,
    /// Files at least this large are left as they are.
    pub small_bytes: u64,
    /// A run of adjacent small files of one folder and partition is merged
    /// once it holds this many.
    pub min_files: usize,
    /// A merged file's inputs add up to at most this many bytes (which
    /// bounds the memory a merge holds).
    pub max_bytes: u64,
}

impl CompactRequest {
    /// Defaults: files under 16 MiB are small, runs of 8 are merged, into
    /// files of at most 128 MiB of inputs.
    pub fn new(stream: impl Into<String>) -> Self {
        Self { stream: stream.into(), small_bytes: 16 << 20, min_files: 8, max_bytes: 128 << 20 }
    }

    /// Merges runs of at least `n` files (at least 2).
    pub fn with_min_files(mut self, n: usize) -> Self {
        self.min_files = n.max(2);
        self
    }
}

/// What one [`OfflineWriter::compact_log`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compacted {
    /// Merged files written.
    pub written: u64,
    /// Files deleted (a merge's inputs, and replaced files a killed
    /// compaction left).
    pub removed: u64,
    /// Rows in the merged files.
    pub rows: u64,
}

/// Name of the event-time column in [`LatestRows`] batches.
pub const LATEST_EVENT_TS: &str = "__event_ts";

/// A request for the newest row per entity key of a view within a time window.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LatestRequest {
    /// The view.
    pub view: FeatureView,
    /// Its source.
    pub source: DataSource,
    /// Its join keys.
    pub join_keys: Vec<JoinKey>,
    /// Inclusive lower bound on event time; `None` reads all history.
    pub start: Option<DateTime<Utc>>,
    /// Inclusive upper bound on event time.
    pub end: DateTime<Utc>,
}

impl LatestRequest {
    /// A request for `view` over `[start, end]`.
    pub fn new(
        view: FeatureView,
        source: DataSource,
        join_keys: Vec<JoinKey>,
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
    ) -> Self {
        Self { view, source, join_keys, start, end }
    }
}

/// Name of the created-time column in [`OfflineStore::events`] batches.
pub const EVENT_CREATED_TS: &str = "__created_ts";

/// A request for the online tile rows of an aggregation view
/// ([`crate::aggregation::tile_rows`]) over its events in a window. The
/// store reads the events in `[start, end]`, laid out as `tile_rows` takes
/// them: the join-key columns (named by join key; integers as `int64`),
/// [`LATEST_EVENT_TS`] (µs, UTC), [`EVENT_CREATED_TS`] (µs, UTC) when the
/// source has a created-timestamp field, then each distinct column the
/// aggregations read ([`TilesRequest::columns`]), named as in the view and
/// cast to the type its values have ([`crate::ValueType::from_arrow`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TilesRequest {
    /// The aggregation view.
    pub view: FeatureView,
    /// Its source.
    pub source: DataSource,
    /// Its join keys.
    pub join_keys: Vec<JoinKey>,
    /// Inclusive lower bound on event time: the window's
    /// [`TileWindow::read_start`]; `None` reads all history.
    pub start: Option<DateTime<Utc>>,
    /// Inclusive upper bound on event time.
    pub end: DateTime<Utc>,
    /// The blocks rewritten.
    pub window: TileWindow,
}

impl TilesRequest {
    /// A request for the blocks of `view` that `window` rewrites, from
    /// events up to `end` (the window's own end).
    pub fn new(
        view: FeatureView,
        source: DataSource,
        join_keys: Vec<JoinKey>,
        window: TileWindow,
        end: DateTime<Utc>,
    ) -> Self {
        Self { view, source, join_keys, start: window.read_start(), end, window }
    }

    /// The join keys' names.
    pub fn key_names(&self) -> Vec<&str> {
        self.join_keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The distinct columns the aggregations read, in first-use order.
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in self.view.aggregations.iter().filter_map(|a| a.column.as_deref()) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// The newest row per entity key: batches with the join-key columns (named
/// by join key; integers as `int64`), [`LATEST_EVENT_TS`] (µs, UTC) and the
/// view's features in their declared types. Rows with a null key are left out.
#[derive(Debug)]
#[non_exhaustive]
pub struct LatestRows {
    /// The rows, streamed.
    pub stream: BatchStream,
    /// Source rows in the window, known once the stream has ended.
    pub rows_read: Arc<AtomicU64>,
}

impl LatestRows {
    /// Wraps a stream and its row counter.
    pub fn new(stream: BatchStream, rows_read: Arc<AtomicU64>) -> Self {
        Self { stream, rows_read }
    }
}
