//! The offline store trait and its in-memory reference implementation.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;

use crate::historical::{BatchStream, HistoricalRequest};
use crate::model::DataSource;
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

    /// Retrieval needs a query engine, which this crate leaves to backends:
    /// the Parquet store over `memory://` URLs is the in-memory way to run it.
    async fn get_historical_features(&self, _request: HistoricalRequest) -> Result<BatchStream> {
        Err(Error::Unsupported(
            "the memory offline store only serves schemas; for in-memory retrieval use the Parquet offline store with memory:// source paths".into(),
        ))
    }
}
