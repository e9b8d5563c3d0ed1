//! Types of a point-in-time ("as of") historical retrieval request.
//!
//! Semantics, for every entity row and every requested view V:
//! candidates are V's source rows whose join keys equal the row's, with
//! `event_ts <= entity_ts` and, when V has a ttl, `event_ts >= entity_ts - ttl`
//! (both bounds inclusive). The chosen row has the greatest event time, then
//! the greatest created time (a null created time is lowest); any remaining tie
//! goes to the row whose requested feature values are greatest, compared in
//! request order with nulls lowest, so the result never depends on file layout
//! or read order (reading every feature to break rare exact ties would cost
//! each narrow request the I/O of the whole view). No candidate, a null key or a null entity time gives null features.
//! The output has exactly one row per entity row, in input order.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::Stream;
use futures::stream::BoxStream;

use crate::model::{DataSource, FeatureView};
use crate::{Error, Result};

/// Default name of the entity table's timestamp column, as in Feast.
pub const DEFAULT_TIMESTAMP_COLUMN: &str = "event_timestamp";

/// A stream of record batches with a known schema.
pub struct BatchStream {
    schema: SchemaRef,
    inner: BoxStream<'static, Result<RecordBatch>>,
}

impl BatchStream {
    /// Wraps a stream whose batches all have `schema`.
    pub fn new(schema: SchemaRef, inner: BoxStream<'static, Result<RecordBatch>>) -> Self {
        Self { schema, inner }
    }

    /// A stream over batches already in memory.
    pub fn from_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self::new(schema, Box::pin(futures::stream::iter(batches.into_iter().map(Ok))))
    }

    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        SchemaRef::clone(&self.schema)
    }

    /// Reads the whole stream into memory.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        use futures::TryStreamExt;
        self.inner.try_collect().await
    }
}

impl fmt::Debug for BatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchStream").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl Stream for BatchStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Where entity rows come from.
#[non_exhaustive]
pub enum EntityInput {
    /// Arrow batches in memory.
    Batches {
        /// Schema of the batches.
        schema: SchemaRef,
        /// The rows, in order.
        batches: Vec<RecordBatch>,
    },
    /// A stream of batches, read once.
    Stream(BatchStream),
    /// A Parquet or CSV file, folder or URL; the format follows the extension
    /// (`.csv` is CSV, anything else Parquet).
    Path(String),
    /// A SQL query over the project's data sources, each a table named after its source.
    Sql(String),
}

impl fmt::Debug for EntityInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Batches { batches, .. } => write!(f, "Batches({} batches)", batches.len()),
            Self::Stream(_) => f.write_str("Stream"),
            Self::Path(p) => write!(f, "Path({p})"),
            Self::Sql(q) => write!(f, "Sql({q})"),
        }
    }
}

impl EntityInput {
    /// Entity rows from one record batch.
    pub fn batch(batch: RecordBatch) -> Self {
        Self::Batches { schema: batch.schema(), batches: vec![batch] }
    }
}

/// One view's part of a historical request, resolved against the registry.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ViewRequest {
    /// The view.
    pub view: FeatureView,
    /// Its data source.
    pub source: DataSource,
    /// Join-key columns (names in the entity table and, after mapping, in the source).
    pub join_keys: Vec<crate::model::JoinKey>,
    /// Requested features, in output order.
    pub features: Vec<String>,
    /// Output column name of each requested feature.
    pub output_names: Vec<String>,
}

/// A historical retrieval request handed to an offline store.
#[derive(Debug)]
#[non_exhaustive]
pub struct HistoricalRequest {
    /// The entity rows.
    pub entities: EntityInput,
    /// The views to join, in output order.
    pub views: Vec<ViewRequest>,
    /// Name of the entity table's timestamp column.
    pub timestamp_column: String,
    /// All data sources of the project, for SQL entity queries.
    pub sources: Vec<DataSource>,
    /// On-demand features to compute from the joined rows (and hidden
    /// inputs to drop); the store applies it before the rows leave it
    /// ([`crate::on_demand::OnDemandProjection::bind`] checks it against
    /// the joined schema before any row is read).
    pub on_demand: Option<crate::on_demand::OnDemandProjection>,
}

impl HistoricalRequest {
    /// A request joining `views` onto `entities` (see
    /// [`crate::FeatureStore::historical_request`] to resolve one from feature references).
    pub fn new(
        entities: EntityInput,
        views: Vec<ViewRequest>,
        timestamp_column: impl Into<String>,
        sources: Vec<DataSource>,
    ) -> Self {
        Self { entities, views, timestamp_column: timestamp_column.into(), sources, on_demand: None }
    }

    /// The request computing `projection` from the joined rows.
    pub fn with_on_demand(mut self, projection: Option<crate::on_demand::OnDemandProjection>) -> Self {
        self.on_demand = projection.filter(|p| !p.is_empty());
        self
    }
}

/// Options of [`crate::FeatureStore::get_historical_features`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HistoricalOptions {
    /// Name output columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
    /// The entity table's timestamp column.
    pub timestamp_column: String,
}

impl Default for HistoricalOptions {
    fn default() -> Self {
        Self { full_feature_names: false, timestamp_column: DEFAULT_TIMESTAMP_COLUMN.into() }
    }
}

impl HistoricalOptions {
    /// Sets full feature names.
    pub fn with_full_feature_names(mut self, yes: bool) -> Self {
        self.full_feature_names = yes;
        self
    }

    /// Sets the entity timestamp column.
    pub fn with_timestamp_column(mut self, column: impl Into<String>) -> Self {
        self.timestamp_column = column.into();
        self
    }
}

/// Checks that output names are unique; a clash is an error naming both sources.
/// Two entity columns of one name are an error too: which one is the key or
/// the time would be a guess.
pub fn check_output_names(entity_columns: &[String], views: &[ViewRequest]) -> Result<()> {
    let mut names = std::collections::HashSet::with_capacity(entity_columns.len());
    if let Some(twice) = entity_columns.iter().find(|c| !names.insert(c.as_str())) {
        return Err(Error::data("entity table", format!("more than one column is named \"{twice}\"")));
    }
    // Sources are (view index, feature index); `None` is the entity table. Formatted only on a clash.
    let mut seen: std::collections::HashMap<&str, Option<(usize, usize)>> =
        entity_columns.iter().map(|c| (c.as_str(), None)).collect();
    let name = |src: Option<(usize, usize)>| match src {
        None => "the entity table".to_owned(),
        Some((v, f)) => format!("{}:{}", views[v].view.name, views[v].features[f]),
    };
    for (vi, v) in views.iter().enumerate() {
        for (fi, out) in v.output_names.iter().enumerate() {
            if let Some(first) = seen.insert(out.as_str(), Some((vi, fi))) {
                return Err(Error::InvalidArgument(format!(
                    "output column \"{out}\" would come from both {} and {}; use full feature names (view__feature) or drop one",
                    name(first),
                    name(Some((vi, fi)))
                )));
            }
        }
    }
    Ok(())
}
