//! The Parquet offline store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use feature_store_core::historical::{BatchStream, EntityInput, HistoricalRequest};
use feature_store_core::model::DataSource;
use feature_store_core::offline::profile::Profile;
use feature_store_core::offline::{
    CompactRequest, Compacted, DatasetStorage, LatestRequest, LatestRows, OfflineStatistics, OfflineStore,
    OfflineWriter, SourceSchema, StatsRequest, TilesRequest, WindowStats,
};
use feature_store_core::repo::BackendOptions;
use feature_store_core::{Error as CoreError, Result as CoreResult};
use object_store::ObjectStoreExt;
use parquet::arrow::parquet_to_arrow_schema;
use parquet::file::metadata::ParquetMetaDataReader;

use feature_store_object_store::blobs::Blobs;

use crate::datafusion::{Engine, ResolvedEntities};
use crate::error::Error;
use crate::files::{ResolvedSource, SourceFiles, list_source_files};

/// Offline store over Parquet files on local disk, S3 or memory.
#[derive(Debug, Clone)]
pub struct ParquetOfflineStore {
    pub(crate) base_dir: PathBuf,
    pub(crate) options: BTreeMap<String, String>,
    pub(crate) memory_limit: Option<usize>,
    pub(crate) target_partitions: usize,
    pub(crate) blobs: Blobs,
    /// Retrievals run on this Ballista cluster (`engine: ballista`).
    #[cfg(feature = "distributed")]
    pub(crate) cluster: Option<crate::datafusion::distributed::Cluster>,
}

impl ParquetOfflineStore {
    /// A store resolving relative source paths against `base_dir` (the repo root).
    pub fn new(base_dir: impl Into<PathBuf>, options: BTreeMap<String, String>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let base_dir = base_dir.into();
        let blobs = Blobs::new(base_dir.clone(), options.clone());
        Self {
            base_dir,
            options,
            memory_limit: None,
            target_partitions: cores,
            blobs,
            #[cfg(feature = "distributed")]
            cluster: None,
        }
    }

    /// A store from an `offline_store:` section: `storage_options` (for
    /// object_store), `memory_limit` (e.g. `2GiB`), and `engine` (`local`,
    /// the default, or `ballista` with `scheduler: df://host:port` and
    /// optionally `partitions`).
    pub fn from_options(options: &BackendOptions<'_>) -> CoreResult<Self> {
        options.check_known(&["storage_options", "memory_limit", "engine", "scheduler", "partitions"])?;
        let (engine, scheduler) = (options.string("engine"), options.string("scheduler"));
        let partitions = match options.raw().get("partitions") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| options.error("partitions", format!("expected a positive whole number, got {v}")))?
                    as usize,
            ),
        };
        let cluster = match engine.as_deref() {
            None | Some("local") => {
                if scheduler.is_some() {
                    return Err(
                        options.error("scheduler", "set engine: ballista to run on a cluster (the engine is local)")
                    );
                }
                None
            }
            Some("ballista") => {
                let scheduler = scheduler.ok_or_else(|| {
                    options.error(
                        "scheduler",
                        "engine ballista needs the scheduler's address, e.g. scheduler: df://localhost:50050",
                    )
                })?;
                Some((scheduler, partitions))
            }
            Some(other) => {
                return Err(options.error("engine", format!("unknown engine \"{other}\"; expected local or ballista")));
            }
        };
        let storage = match options.raw().get("storage_options") {
            None => BTreeMap::new(),
            Some(serde_json::Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k.clone(), s.clone()),
                    other => (k.clone(), other.to_string()),
                })
                .collect(),
            Some(other) => return Err(options.error("storage_options", format!("expected a mapping, got {other}"))),
        };
        let store = Self::new(options.base(), storage).with_memory_limit(options.size("memory_limit")?);
        match cluster {
            None => Ok(store),
            Some((scheduler, partitions)) => {
                store.with_cluster(&scheduler, partitions).map_err(|e| options.error("scheduler", e))
            }
        }
    }

    /// Runs retrievals on the Ballista cluster whose scheduler is at
    /// `scheduler` (`df://host:port`), each view's join split into
    /// `partitions` hash partitions (default: one per 64 MiB of a job's input). Sources must be at
    /// locations every executor reads (S3, or paths they all see).
    pub fn with_cluster(self, scheduler: &str, partitions: Option<usize>) -> Result<Self, String> {
        #[cfg(feature = "distributed")]
        {
            let mut cluster = crate::datafusion::distributed::Cluster::new(scheduler, partitions)?;
            cluster.storage = self.options.clone();
            Ok(Self { cluster: Some(cluster), ..self })
        }
        #[cfg(not(feature = "distributed"))]
        {
            let _ = (self, partitions);
            Err(format!(
                "engine ballista (scheduler {scheduler}): this build has no distributed engine; build feature-store with the \"distributed\" feature (the CLI has it)"
            ))
        }
    }

    /// Back to the local engine (`--engine local` over a configured cluster).
    pub fn with_local_engine(self) -> Self {
        #[cfg(feature = "distributed")]
        {
            Self { cluster: None, ..self }
        }
        #[cfg(not(feature = "distributed"))]
        self
    }

    /// Caps query memory; beyond it, operators that can spill to disk do.
    pub fn with_memory_limit(mut self, bytes: Option<usize>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Plans a retrieval without running it: the plan can be executed, and
    /// afterwards shows each operator's metrics (rows in and out per view,
    /// build and probe time, spilling), as `EXPLAIN ANALYZE` would.
    pub async fn plan_historical(&self, request: HistoricalRequest) -> CoreResult<crate::datafusion::RetrievalPlan> {
        self.plan_historical_into(request, None).await
    }

    /// [`Self::plan_historical`], the rows written to `folder` by the plan.
    pub(crate) async fn plan_historical_into(
        &self,
        request: HistoricalRequest,
        folder: Option<crate::datafusion::folder_writer::FolderTarget>,
    ) -> CoreResult<crate::datafusion::RetrievalPlan> {
        // No views is a retrieval of on-demand features over request fields only: the entity rows come back.
        let began = std::time::Instant::now();
        // Every listing happens here, concurrently; the planner gets descriptions.
        let sources = futures::future::join_all(request.views.iter().map(|v| {
            let context = format!("data source \"{}\" ({})", v.source.name, v.source.path);
            self.resolve_source(&v.source, context)
        }));
        let entities = self.resolve_entities(request.entities, &request.sources);
        let (sources, entities) = futures::future::join(sources, entities).await;
        let plan = crate::datafusion::plan_historical(
            self.engine(),
            entities?,
            &request.views,
            sources,
            &request.timestamp_column,
            request.on_demand,
            folder,
        )
        .await?;
        Ok(plan.started_at(began))
    }

    /// [`Self::engine`] for work that runs in this process even when
    /// retrievals go to a cluster, saying so (once per call) when one is set.
    pub(crate) fn local_engine(&self, what: &str) -> Engine {
        #[cfg(feature = "distributed")]
        if let Some(cluster) = &self.cluster {
            tracing::warn!(
                scheduler = %cluster.scheduler,
                "{what} runs on the local engine; retrieval and materialization run on the cluster"
            );
        }
        #[allow(unused_mut)]
        let mut engine = self.engine();
        #[cfg(feature = "distributed")]
        {
            engine.cluster = None;
        }
        let _ = what;
        engine
    }

    /// The planner's view of this store's settings.
    pub(crate) fn engine(&self) -> Engine {
        Engine {
            memory_limit: self.memory_limit,
            target_partitions: self.target_partitions,
            #[cfg(feature = "distributed")]
            cluster: self.cluster.clone(),
        }
    }

    /// Lists `source`'s files; errors say `context`.
    pub(crate) async fn resolve_source(&self, source: &DataSource, context: String) -> CoreResult<ResolvedSource> {
        let files = self.source_files(source).await.map_err(|e| CoreError::data(context, e.to_string()))?;
        Ok(ResolvedSource { source: source.clone(), files })
    }

    /// Lists what an entity input reads: its files, or for SQL every source of the project.
    pub(crate) async fn resolve_entities(
        &self,
        input: EntityInput,
        sources: &[DataSource],
    ) -> CoreResult<ResolvedEntities> {
        Ok(match input {
            EntityInput::Path(path) => {
                // This crate's listing is sorted by path, so a folder of files
                // reads in file-name order and rows keep their order.
                let files = list_source_files(&path, &self.base_dir, &self.options)
                    .await
                    // The listing's message names the resolved location already.
                    .map_err(|e| CoreError::data("entity table", e.to_string()))?;
                ResolvedEntities::Files { path, files }
            }
            EntityInput::Sql(query) => {
                let listed = sources.iter().map(|s| {
                    let context = format!("data source \"{}\" ({})", s.name, s.path);
                    self.resolve_source(s, context)
                });
                ResolvedEntities::Sql { query, sources: futures::future::try_join_all(listed).await? }
            }
            other => ResolvedEntities::Input(other),
        })
    }

    /// The files a source reads.
    pub async fn source_files(&self, source: &DataSource) -> Result<SourceFiles, Error> {
        list_source_files(&source.path, &self.base_dir, &self.options).await
    }

    /// The source's files for a writer: a folder that does not exist yet
    /// (a new stream's batch source) is an empty one, which the first
    /// write creates.
    pub(crate) async fn source_files_to_write(&self, source: &DataSource) -> Result<SourceFiles, Error> {
        match self.source_files(source).await {
            Err(Error::Storage(feature_store_object_store::Error::NotFound { .. })) if !source.is_glob() => {
                let root = feature_store_object_store::location::resolve(&source.path, &self.base_dir, &self.options)?;
                Ok(SourceFiles { root, files: Vec::new(), partition_columns: Vec::new(), replaced: Vec::new() })
            }
            other => other,
        }
    }
}

/// Reads the Arrow schema from a Parquet file's footer (two ranged reads).
pub(crate) async fn parquet_schema(files: &SourceFiles, index: usize) -> Result<Arc<Schema>, Error> {
    let meta = &files.files[index];
    let url = files.file_url(meta);
    let corrupt = |message: String| Error::Parquet {
        location: url.clone(),
        source: parquet::errors::ParquetError::General(message),
    };
    let store = &files.root.store;
    let size = meta.size;
    if size < 12 {
        return Err(corrupt(format!("file is {size} bytes, too small to be Parquet")));
    }
    let tail = store.get_range(&meta.location, size - 8..size).await.map_err(|e| Error::object_store(&url, e))?;
    if &tail[4..8] != b"PAR1" {
        return Err(corrupt("missing the PAR1 magic at the end of the file (truncated or not Parquet)".into()));
    }
    let len = u64::from(u32::from_le_bytes(tail[0..4].try_into().expect("4 bytes")));
    if len + 8 > size {
        return Err(corrupt(format!("footer length {len} exceeds the file size {size}")));
    }
    let footer =
        store.get_range(&meta.location, size - 8 - len..size - 8).await.map_err(|e| Error::object_store(&url, e))?;
    let md = ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|source| Error::Parquet { location: url.clone(), source })?;
    let fm = md.file_metadata();
    let schema = parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata())
        .map_err(|source| Error::Parquet { location: url.clone(), source })?;
    Ok(Arc::new(schema))
}

#[async_trait]
impl OfflineStore for ParquetOfflineStore {
    async fn source_schema(&self, source: &DataSource) -> CoreResult<SourceSchema> {
        let context =
            |e: Error| CoreError::data(format!("data source \"{}\" ({})", source.name, source.path), e.to_string());
        let files = self.source_files(source).await.map_err(context)?;
        let schema = parquet_schema(&files, 0).await.map_err(context)?;
        let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
        for p in &files.partition_columns {
            if !fields.iter().any(|f| f.name() == p) {
                fields.push(Arc::new(Field::new(p, DataType::Utf8, true)));
            }
        }
        Ok(SourceSchema {
            schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
            partition_columns: files.partition_columns.clone(),
            location: files.file_url(&files.files[0]),
        })
    }

    /// Reads every file's footer (16 at a time), as a retrieval over all of
    /// history would, and merges the schemas by retrieval's rules.
    async fn file_problems(
        &self,
        source: &DataSource,
        declared: &[feature_store_core::offline::DeclaredColumn],
    ) -> CoreResult<Vec<String>> {
        use futures::StreamExt;
        let files = match self.source_files(source).await {
            Ok(f) => f,
            // Listing failures are validation's errors already.
            Err(_) => return Ok(Vec::new()),
        };
        let read: Vec<(usize, Result<Arc<Schema>, Error>)> = futures::stream::iter(0..files.files.len())
            .map(|i| {
                let files = &files;
                async move { (i, parquet_schema(files, i).await) }
            })
            .buffered(16)
            .collect()
            .await;
        let mut problems = Vec::new();
        let mut schemas = Vec::new();
        for (i, r) in read {
            match r {
                Ok(s) => schemas.push((i, s)),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !schemas.is_empty()
            && let Err(e) = crate::datafusion::historical::merged_schema(&files, &schemas, "")
        {
            problems.push(match e {
                CoreError::Data { message, .. } => message,
                other => other.to_string(),
            });
        }
        // The first file whose type each declaration does not accept (files
        // that lack the column are the schema contract's business).
        for d in declared {
            // A column the files already disagree on is named once, above.
            if problems.iter().any(|p| p.contains(&format!("column \"{}\" is ", d.column))) {
                continue;
            }
            let found = schemas.iter().find_map(|(i, s)| {
                let f = s.field_with_name(&d.column).ok()?;
                (!d.dtype.accepts_arrow(f.data_type())).then(|| (*i, f.data_type().clone()))
            });
            if let Some((i, t)) = found {
                problems.push(format!(
                    "column \"{}\" is {} in {}, but feature view \"{}\" declares \"{}\" {}: retrievals and materializations of the view that read this file fail; declare the type the files have, or rewrite the file",
                    d.column,
                    feature_store_core::describe_arrow(&t),
                    files.file_url(&files.files[i]),
                    d.view,
                    d.feature,
                    d.dtype
                ));
            }
        }
        Ok(problems)
    }

    async fn get_historical_features(&self, request: HistoricalRequest) -> CoreResult<BatchStream> {
        self.plan_historical(request).await?.execute()
    }

    async fn latest_rows(&self, request: LatestRequest) -> CoreResult<LatestRows> {
        let source = &request.source;
        let context = format!("data source \"{}\" ({})", source.name, source.path);
        let resolved = self.resolve_source(source, context).await?;
        let mut rows = crate::datafusion::latest_rows(self.engine(), request, &resolved).await?;
        rows.stream = crate::unreadable::naming_files(rows.stream, Arc::new(vec![resolved.files]));
        Ok(rows)
    }

    async fn tiles(&self, request: TilesRequest) -> CoreResult<BatchStream> {
        let source = &request.source;
        let context = format!("data source \"{}\" ({})", source.name, source.path);
        let resolved = self.resolve_source(source, context).await?;
        let tiles = crate::datafusion::tiles(self.engine(), request, &resolved).await?;
        Ok(crate::unreadable::naming_files(tiles, Arc::new(vec![resolved.files])))
    }

    fn statistics(&self) -> Option<&dyn OfflineStatistics> {
        Some(self)
    }

    fn writer(&self) -> Option<&dyn OfflineWriter> {
        Some(self)
    }

    fn folder_writer(&self) -> Option<&dyn feature_store_core::offline::folder::FolderWriter> {
        Some(self)
    }

    fn datasets(&self) -> Option<&dyn DatasetStorage> {
        Some(self)
    }
}

#[async_trait]
impl OfflineStatistics for ParquetOfflineStore {
    async fn window_stats(&self, request: StatsRequest) -> CoreResult<WindowStats> {
        let (view, source) = (&request.view, &request.source);
        let context =
            format!("validating feature view \"{}\" (source \"{}\", {})", view.name, source.name, source.path);
        let resolved = self.resolve_source(source, context).await?;
        crate::datafusion::window_stats(self.local_engine("validation statistics"), request, &resolved).await
    }

    async fn profile(&self, request: StatsRequest) -> CoreResult<Profile> {
        let source = &request.source;
        let context = format!("data source \"{}\" ({})", source.name, source.path);
        let resolved = self.resolve_source(source, context).await?;
        crate::datafusion::profile(self.local_engine("profiling"), request, &resolved).await
    }
}

#[async_trait]
impl OfflineWriter for ParquetOfflineStore {
    /// Writes `batch` as a new Parquet file in the source's folder; single-file,
    /// glob and hive-partitioned sources are refused, as a new file there
    /// would not be read or would lack partition values.
    async fn append(&self, source: &DataSource, batch: arrow_array::RecordBatch) -> CoreResult<String> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "push-{}-{}-{}.parquet",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%6fZ"),
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (_, at) = self.write_file(source, None, &name, vec![batch], false, "pushed rows").await?;
        Ok(at)
    }

    async fn append_named(
        &self,
        source: &DataSource,
        partition: Option<&str>,
        name: &str,
        batches: Vec<arrow_array::RecordBatch>,
    ) -> CoreResult<bool> {
        Ok(self.write_file(source, partition, name, batches, true, "rows").await?.0)
    }

    async fn list_named(&self, source: &DataSource, prefix: &str) -> CoreResult<Vec<String>> {
        let context = format!("data source \"{}\" ({})", source.name, source.path);
        let files = self.source_files_to_write(source).await.map_err(|e| CoreError::data(&context, e.to_string()))?;
        Ok(files
            .files
            .iter()
            .filter_map(|f| f.location.filename())
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    async fn compact_log(&self, source: &DataSource, request: &CompactRequest) -> CoreResult<Compacted> {
        self.compact_log_files(source, request).await
    }
}

impl ParquetOfflineStore {
    /// Writes `batches` (one schema) as file `name` in the source's folder (below hive
    /// folder `partition` if given); with `skip_existing`, an existing file
    /// of that name is left as it is (`false`). Single-file and glob
    /// sources are refused, and so is a file outside the partition folders
    /// of a hive-partitioned source, as such a file would not be read or
    /// would lack partition values.
    async fn write_file(
        &self,
        source: &DataSource,
        partition: Option<&str>,
        name: &str,
        batches: Vec<arrow_array::RecordBatch>,
        skip_existing: bool,
        what: &str,
    ) -> CoreResult<(bool, String)> {
        let context = format!("data source \"{}\" ({})", source.name, source.path);
        let Some(first) = batches.first() else {
            return Err(CoreError::InvalidArgument(format!("{context}: no rows to write as {name}")));
        };
        let schema = first.schema();
        let refuse = |why: &str| {
            Err(CoreError::Unsupported(format!("{context}: cannot append {what}: {why}; point the source at a folder")))
        };
        if source.is_glob() {
            return refuse("the source is a glob");
        }
        let files = self.source_files_to_write(source).await.map_err(|e| CoreError::data(&context, e.to_string()))?;
        if files.files.len() == 1 && files.files[0].location == files.root.path {
            return refuse("the source is a single file");
        }
        let partition_column = partition.and_then(|p| p.split_once('=')).map(|(c, _)| c.to_owned());
        match (&partition_column, files.partition_columns.as_slice()) {
            (None, []) => {}
            (None, _) => return refuse("the source is hive-partitioned"),
            (Some(c), cols) if cols.is_empty() || cols == [c.clone()] => {}
            (Some(c), cols) => {
                return Err(CoreError::Unsupported(format!(
                    "{context}: cannot append {what} under {c}= folders: the source is partitioned by {}",
                    cols.join(", ")
                )));
            }
        }
        let mut path = files.root.path.clone();
        if let Some(p) = partition {
            path = path.join(p);
        }
        let path = path.join(name);
        let unavailable = |e: object_store::Error| CoreError::StoreUnavailable {
            store: context.clone(),
            source: Box::new(Error::object_store(&files.root.url, e)),
        };
        let url = format!("{}/{}", files.root.store_url(), path);
        if skip_existing {
            match files.root.store.head(&path).await {
                Ok(_) => return Ok((false, url)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        // Other views may read other columns of this source: the new file
        // carries every column the existing files have (nulls where the
        // batch has none), so no view finds a file without its columns.
        let existing = match files.files.len() {
            0 => None,
            _ => {
                let mut existing =
                    parquet_schema(&files, 0).await.map_err(|e| CoreError::data(&context, e.to_string()))?;
                if !files.partition_columns.is_empty() {
                    let kept: Vec<_> = existing
                        .fields()
                        .iter()
                        .filter(|f| !files.partition_columns.contains(f.name()))
                        .cloned()
                        .collect();
                    existing = Arc::new(Schema::new(kept));
                }
                Some(existing)
            }
        };
        let batches = batches
            .into_iter()
            .map(|b| match &existing {
                Some(existing) => with_missing_columns(b, existing),
                None => Ok(b),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CoreError::data(&context, e.to_string()))?;
        let schema = batches.first().map_or(schema, |b| b.schema());
        // Sized for the rows as they are in memory, which the encoded file
        // rarely exceeds: no copies as the buffer grows (pages reserved and
        // not written cost nothing).
        let in_memory: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        let mut buf = Vec::with_capacity(in_memory.min(1 << 30) + (64 << 10));
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut buf, Arc::clone(&schema), Some(append_properties(&schema)))
                .map_err(|e| CoreError::data(&context, e.to_string()))?;
        for batch in &batches {
            if batch.schema() != schema {
                return Err(CoreError::data(&context, format!("the parts of {name} have different columns")));
            }
            writer.write(batch).map_err(|e| CoreError::data(&context, e.to_string()))?;
        }
        drop(batches);
        writer.close().map_err(|e| CoreError::data(&context, e.to_string()))?;
        files.root.store.put(&path, bytes::Bytes::from(buf).into()).await.map_err(unavailable)?;
        Ok((true, url))
    }
}

/// Parquet's defaults without dictionaries for float columns: measured
/// values rarely repeat, so the writer hashed every value only to fall back
/// to plain encoding (half the instructions of ingestion's log writes).
/// Compaction rewrites the files with its own settings.
fn append_properties(schema: &Schema) -> parquet::file::properties::WriterProperties {
    let mut b = parquet::file::properties::WriterProperties::builder();
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Float32 | DataType::Float64) {
            b = b.set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from(f.name().as_str()), false);
        }
    }
    b.build()
}

/// `batch` plus a null column for every field of `existing` it lacks.
fn with_missing_columns(
    batch: arrow_array::RecordBatch,
    existing: &Schema,
) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError> {
    let missing: Vec<_> =
        existing.fields().iter().filter(|f| batch.schema().field_with_name(f.name()).is_err()).collect();
    if missing.is_empty() {
        return Ok(batch);
    }
    let mut fields: Vec<arrow_schema::FieldRef> = batch.schema().fields().iter().cloned().collect();
    let mut columns = batch.columns().to_vec();
    for f in missing {
        fields.push(Arc::new(f.as_ref().clone().with_nullable(true)));
        columns.push(arrow_array::new_null_array(f.data_type(), batch.num_rows()));
    }
    arrow_array::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
