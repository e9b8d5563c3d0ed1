//! The offline store trait and its in-memory reference implementation.

mod reference_join;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::historical::{BatchStream, HistoricalRequest};
use crate::model::{DataSource, FeatureView, JoinKey};
use crate::{Error, Result};

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
/// (`feature-store-s3`) and [`MemoryOfflineStore`].
#[async_trait]
pub trait OfflineStore: Send + Sync + Debug {
    /// The columns a source provides; errors name the source and its path.
    async fn source_schema(&self, source: &DataSource) -> Result<SourceSchema>;

    /// Point-in-time correct retrieval: one output row per entity row, in
    /// input order, with each view's features as of the row's timestamp.
    /// Semantics are those of [`crate::historical`].
    async fn get_historical_features(&self, request: HistoricalRequest) -> Result<BatchStream>;

    /// For materialization: the newest row per entity key with event time in
    /// `[start, end]`, ties broken as in historical retrieval, streamed with
    /// memory bounded independently of the row count.
    async fn latest_rows(&self, request: LatestRequest) -> Result<LatestRows> {
        Err(Error::Unsupported(format!("{self:?} cannot read latest rows for feature view \"{}\"", request.view.name)))
    }

    /// For data-quality gates: statistics of a view's rows in a window, in one pass.
    async fn window_stats(&self, request: crate::quality::StatsRequest) -> Result<crate::quality::WindowStats> {
        Err(Error::Unsupported(format!(
            "{self:?} cannot compute statistics for feature view \"{}\"",
            request.view.name
        )))
    }

    /// For reference profiles: a summary of a view's rows in a window (see
    /// [`crate::quality::profile`]).
    async fn profile(&self, request: crate::quality::StatsRequest) -> Result<crate::quality::profile::Profile> {
        Err(Error::Unsupported(format!("{self:?} cannot profile feature view \"{}\"", request.view.name)))
    }

    /// For dataset manifests: every file a source reads now, with size and version.
    async fn source_files(&self, source: &DataSource) -> Result<Vec<crate::dataset::ObjectInfo>> {
        Err(Error::Unsupported(format!("{self:?} cannot list the files of data source \"{}\"", source.name)))
    }

    /// Reads an entity input (a file, SQL, batches) into a stream, as
    /// retrieval would: a CSV file's `keys` columns are read as their
    /// registry types (pass none for a file of another kind).
    async fn read_entities(
        &self,
        entities: crate::historical::EntityInput,
        timestamp_column: &str,
        sources: &[DataSource],
        keys: &[JoinKey],
    ) -> Result<BatchStream> {
        let _ = (timestamp_column, sources, keys);
        Err(Error::Unsupported(format!("{self:?} cannot read entity input {entities:?}")))
    }

    /// Writes `stream` as one Parquet file at `location` (a URL, or a path
    /// relative to the repo), replacing any object there; returns what was
    /// stored, with its SHA-256.
    async fn write_parquet(&self, location: &str, stream: BatchStream) -> Result<crate::dataset::ObjectInfo> {
        let _ = stream;
        Err(Error::Unsupported(format!("{self:?} cannot write {location}")))
    }

    /// Writes `bytes` at `location`, replacing any object there; returns what was stored, with its SHA-256.
    async fn put_object(&self, location: &str, bytes: bytes::Bytes) -> Result<crate::dataset::ObjectInfo> {
        let _ = bytes;
        Err(Error::Unsupported(format!("{self:?} cannot write {location}")))
    }

    /// The bytes at `location`; `None` when absent.
    async fn get_object(&self, location: &str) -> Result<Option<bytes::Bytes>> {
        Err(Error::Unsupported(format!("{self:?} cannot read {location}")))
    }

    /// Deletes the object at `location`; `false` when there was none.
    async fn delete_object(&self, location: &str) -> Result<bool> {
        Err(Error::Unsupported(format!("{self:?} cannot delete {location}")))
    }

    /// The normalized URL of `location` (a URL or a path relative to the repo), for comparing locations.
    fn location_url(&self, location: &str) -> Result<String> {
        Ok(location.to_owned())
    }

    /// Size, version and SHA-256 of the object at `location`; `None` when absent.
    async fn object_info(&self, location: &str) -> Result<Option<crate::dataset::ObjectInfo>> {
        Err(Error::Unsupported(format!("{self:?} cannot read {location}")))
    }

    /// For push: appends `batch` (columns named as in the source) to the
    /// source's data as a new file; returns where it was written.
    async fn append(&self, source: &DataSource, batch: RecordBatch) -> Result<String> {
        let _ = batch;
        Err(Error::Unsupported(format!("this offline store cannot append to data source \"{}\"", source.name)))
    }
}

/// Offline data held in memory, keyed by source path; the reference implementation.
#[derive(Debug, Default)]
pub struct MemoryOfflineStore {
    tables: RwLock<HashMap<String, (SchemaRef, Vec<RecordBatch>)>>,
}

impl MemoryOfflineStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the rows a source with this `path` reads.
    pub fn insert(&self, path: impl Into<String>, schema: SchemaRef, batches: Vec<RecordBatch>) {
        self.tables.write().expect("poisoned").insert(path.into(), (schema, batches));
    }

    /// The rows registered at `path`.
    pub fn batches(&self, path: &str) -> Option<Vec<RecordBatch>> {
        self.tables.read().expect("poisoned").get(path).map(|(_, b)| b.clone())
    }
}

#[async_trait]
impl OfflineStore for MemoryOfflineStore {
    async fn source_schema(&self, source: &DataSource) -> Result<SourceSchema> {
        let tables = self.tables.read().expect("poisoned");
        let (schema, _) = tables.get(&source.path).ok_or_else(|| {
            Error::data(
                format!("data source \"{}\"", source.name),
                format!("no data at \"{}\" in the memory offline store", source.path),
            )
        })?;
        Ok(SourceSchema { schema: Arc::clone(schema), partition_columns: Vec::new(), location: source.path.clone() })
    }

    /// A plain single-threaded join (see `reference_join`): meant for tests
    /// and small data, and as the reference the Parquet store is checked
    /// against. Entity rows come as batches or a stream; paths and SQL need
    /// the Parquet store.
    async fn get_historical_features(&self, request: HistoricalRequest) -> Result<BatchStream> {
        use crate::historical::EntityInput;
        let (schema, batches) = match request.entities {
            EntityInput::Batches { schema, batches } => (schema, batches),
            EntityInput::Stream(s) => (s.schema(), s.collect().await?),
            other => {
                return Err(Error::Unsupported(format!(
                    "the memory offline store reads entity rows from Arrow batches or streams, not {other:?}; use the Parquet offline store for files and SQL"
                )));
            }
        };
        let entities = arrow_select::concat::concat_batches(&schema, &batches)
            .map_err(|e| Error::data("entity table", e.to_string()))?;
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        crate::historical::check_output_names(&columns, &request.views)?;
        let out = reference_join::join(&entities, &request.views, &request.timestamp_column, |v| {
            let tables = self.tables.read().expect("poisoned");
            let (schema, batches) = tables.get(&v.source.path).ok_or_else(|| {
                Error::data(
                    format!("data source \"{}\"", v.source.name),
                    format!("no data at \"{}\" in the memory offline store", v.source.path),
                )
            })?;
            arrow_select::concat::concat_batches(schema, batches)
                .map_err(|e| Error::data(format!("data source \"{}\"", v.source.name), e.to_string()))
        })?;
        Ok(BatchStream::from_batches(out.schema(), vec![out]))
    }
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
