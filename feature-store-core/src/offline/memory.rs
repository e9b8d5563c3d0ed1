//! [`MemoryOfflineStore`]: the reference offline backend, plain and
//! single-threaded, that the Parquet store's results are checked against.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;

use super::{
    CompactRequest, Compacted, LatestRequest, LatestRows, OfflineStore, OfflineWriter, SourceSchema, TilesRequest,
    reference_join,
};
use crate::historical::{BatchStream, HistoricalRequest};
use crate::model::DataSource;
use crate::{Error, Result};

/// Offline data held in memory, keyed by source path; the reference implementation.
#[derive(Debug, Default)]
pub struct MemoryOfflineStore {
    tables: RwLock<HashMap<String, (SchemaRef, Vec<RecordBatch>)>>,
    /// Names given to [`OfflineWriter::append_named`], by source path.
    named: RwLock<HashMap<String, std::collections::BTreeSet<String>>>,
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

    /// All rows of `source` as one batch.
    fn rows(&self, source: &DataSource) -> Result<RecordBatch> {
        let tables = self.tables.read().expect("poisoned");
        let (schema, batches) = tables.get(&source.path).ok_or_else(|| missing(source))?;
        arrow_select::concat::concat_batches(schema, batches)
            .map_err(|e| Error::data(format!("data source \"{}\"", source.name), e.to_string()))
    }
}

fn missing(source: &DataSource) -> Error {
    Error::data(
        format!("data source \"{}\"", source.name),
        format!("no data at \"{}\" in the memory offline store", source.path),
    )
}

#[async_trait]
impl OfflineStore for MemoryOfflineStore {
    async fn source_schema(&self, source: &DataSource) -> Result<SourceSchema> {
        let tables = self.tables.read().expect("poisoned");
        let (schema, _) = tables.get(&source.path).ok_or_else(|| missing(source))?;
        Ok(SourceSchema { schema: Arc::clone(schema), partition_columns: Vec::new(), location: source.path.clone() })
    }

    /// A table in memory has one schema and no files.
    async fn file_problems(&self, _source: &DataSource, _declared: &[super::DeclaredColumn]) -> Result<Vec<String>> {
        Ok(Vec::new())
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
        let out = reference_join::join(&entities, &request.views, &request.timestamp_column, |v| self.rows(&v.source))?;
        let stream = BatchStream::from_batches(out.schema(), vec![out]);
        match &request.on_demand {
            Some(projection) => projection.apply_stream(stream),
            None => Ok(stream),
        }
    }

    /// The tile rows of every event in the window (see `reference_join::events`).
    async fn tiles(&self, request: TilesRequest) -> Result<BatchStream> {
        let (events, _) = reference_join::events(&request, &self.rows(&request.source)?)?;
        let rows = crate::aggregation::tile_rows(&request.view, &request.key_names(), &events, &request.window)?;
        Ok(BatchStream::from_batches(rows.schema(), vec![rows]))
    }

    /// The plain reference for materialization reads (see `reference_join::latest`).
    async fn latest_rows(&self, request: LatestRequest) -> Result<LatestRows> {
        let (rows, read) = reference_join::latest(&request, &self.rows(&request.source)?)?;
        Ok(LatestRows::new(BatchStream::from_batches(rows.schema(), vec![rows]), Arc::new(AtomicU64::new(read))))
    }

    fn writer(&self) -> Option<&dyn OfflineWriter> {
        Some(self)
    }
}

#[async_trait]
impl OfflineWriter for MemoryOfflineStore {
    /// Adds `batch` to the source's rows: its columns are the source's (in
    /// any order; missing nullable ones read as nulls), each cast to the
    /// stored type only where every value converts; other columns are refused.
    async fn append(&self, source: &DataSource, batch: RecordBatch) -> Result<String> {
        let context = format!("data source \"{}\"", source.name);
        let mut tables = self.tables.write().expect("poisoned");
        let (schema, batches) = tables.get_mut(&source.path).ok_or_else(|| missing(source))?;
        if let Some(extra) = batch.schema().fields().iter().find(|f| schema.field_with_name(f.name()).is_err()) {
            return Err(Error::data(
                &context,
                format!("pushed column \"{}\" is not a column of the memory table", extra.name()),
            ));
        }
        let strict = arrow_cast::CastOptions { safe: false, ..Default::default() };
        let mut columns = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            columns.push(match batch.column_by_name(f.name()) {
                Some(c) => arrow_cast::cast_with_options(c, f.data_type(), &strict).map_err(|e| {
                    Error::data(
                        &context,
                        format!("pushed column \"{}\" cannot be stored as {}: {e}", f.name(), f.data_type()),
                    )
                })?,
                None => arrow_array::new_null_array(f.data_type(), batch.num_rows()),
            });
        }
        let part =
            RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| Error::data(&context, e.to_string()))?;
        batches.push(part);
        Ok(format!("memory offline store {}#{}", source.path, batches.len() - 1))
    }

    async fn append_named(
        &self,
        source: &DataSource,
        _partition: Option<&str>,
        name: &str,
        batches: Vec<RecordBatch>,
    ) -> Result<bool> {
        if self.named.read().expect("poisoned").get(&source.path).is_some_and(|n| n.contains(name)) {
            return Ok(false);
        }
        let Some(first) = batches.first() else {
            return Err(Error::InvalidArgument(format!("no rows to write as {name}")));
        };
        let batch = arrow_select::concat::concat_batches(&first.schema(), &batches)
            .map_err(|e| Error::data(format!("memory offline store {}", source.path), e.to_string()))?;
        self.append(source, batch).await?;
        self.named.write().expect("poisoned").entry(source.path.clone()).or_default().insert(name.to_owned());
        Ok(true)
    }

    async fn list_named(&self, source: &DataSource, prefix: &str) -> Result<Vec<String>> {
        let named = self.named.read().expect("poisoned");
        Ok(named
            .get(&source.path)
            .map(|n| n.iter().filter(|x| x.starts_with(prefix)).cloned().collect())
            .unwrap_or_default())
    }

    /// A source here is one list of batches, not files: nothing to merge.
    async fn compact_log(&self, _source: &DataSource, _request: &CompactRequest) -> Result<Compacted> {
        Ok(Compacted::default())
    }
}
