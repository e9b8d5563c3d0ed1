//! Saved datasets: a training set written once with a manifest of everything
//! it was built from, so it can be checked, and rebuilt, bit for bit.
//!
//! `FeatureStore::save_dataset` copies the entity table to
//! `<registry folder>/datasets/<project>/<name>/<save id>/entities.parquet` (so a SQL or
//! in-memory entity table can be replayed), runs the retrieval from that copy,
//! writes the output (default: `data.parquet` next to it), and records in the
//! registry: the registry version and every definition used, the feature
//! references, each source file listed with its size, ETag and modification
//! time, and content hashes of the entity table and the output.
//!
//! Content hashes are SHA-256 over the schema and the rows in Arrow's row
//! format, so they do not depend on batch sizes or file encoding; file hashes
//! are SHA-256 of the stored bytes. `verify_dataset` compares all of it with
//! the present and recomputes the output from the recorded definitions.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_row::{RowConverter, SortField};
use arrow_schema::SchemaRef;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::historical::{BatchStream, ViewRequest};
use crate::model::{DataSource, Entity, FeatureView, JoinKey};
use crate::offline::{ObjectInfo, hex};
use crate::{Error, Result};

/// A source file a dataset read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SourceFile {
    /// The data source.
    pub source: String,
    /// The file.
    #[serde(flatten)]
    pub object: ObjectInfo,
}

/// A table the dataset stored (the entity copy or the output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredTable {
    /// Where the rows came from (entity tables: a path, a SQL query or "Arrow batches").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Rows.
    pub rows: u64,
    /// SHA-256 of the schema and rows (see the module docs).
    pub content_hash: String,
    /// The stored file.
    pub file: ObjectInfo,
}

/// One view as it was used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DatasetView {
    /// The view's definition.
    pub view: FeatureView,
    /// Its source's definition.
    pub source: DataSource,
    /// Its join keys.
    pub join_keys: Vec<JoinKey>,
    /// Requested features.
    pub features: Vec<String>,
    /// Their output column names.
    pub output_names: Vec<String>,
}

impl From<ViewRequest> for DatasetView {
    fn from(v: ViewRequest) -> Self {
        Self {
            view: v.view,
            source: v.source,
            join_keys: v.join_keys,
            features: v.features,
            output_names: v.output_names,
        }
    }
}

impl From<DatasetView> for ViewRequest {
    fn from(v: DatasetView) -> Self {
        Self {
            view: v.view,
            source: v.source,
            join_keys: v.join_keys,
            features: v.features,
            output_names: v.output_names,
        }
    }
}

/// Everything a saved dataset was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DatasetManifest {
    /// The dataset's name.
    pub name: String,
    /// When it was saved.
    pub created_at: DateTime<Utc>,
    /// Registry version the definitions were read at.
    pub registry_version: u64,
    /// The feature service requested, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
    /// Feature references, `view:feature`, in output order.
    pub features: Vec<String>,
    /// Whether output columns are `view__feature`.
    pub full_feature_names: bool,
    /// The entity table's timestamp column.
    pub timestamp_column: String,
    /// The views used, as defined then (with the inputs on-demand features
    /// read, under hidden output names, when not requested themselves).
    pub views: Vec<DatasetView>,
    /// The on-demand views used, as defined then, with what was requested of
    /// them: verification compiles these definitions again, not the registry's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_demand: Vec<crate::on_demand::OnDemandSpec>,
    /// The entities of those views, as defined then.
    pub entities: Vec<Entity>,
    /// Every file of every source used, as listed then.
    pub source_files: Vec<SourceFile>,
    /// The entity table (a copy the dataset keeps).
    pub entity_table: StoredTable,
    /// The output.
    pub output: StoredTable,
}

/// A saved dataset's entry in the registry: the manifest itself is stored
/// beside the dataset's files (it lists every source file, which would make
/// the registry every process reads grow with each save), and its SHA-256 is
/// kept here so a changed manifest is detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DatasetRecord {
    /// The dataset's name.
    pub name: String,
    /// When it was saved.
    pub created_at: DateTime<Utc>,
    /// Output rows.
    pub rows: u64,
    /// The output file.
    pub output: String,
    /// The folder of this save (manifest, entity copy, default output).
    pub folder: String,
    /// The stored manifest (`manifest.json`), with its SHA-256.
    pub manifest: ObjectInfo,
}

/// What `delete_dataset` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Deleted {
    /// The dataset.
    pub name: String,
    /// Files deleted.
    pub deleted: Vec<String>,
    /// Files kept: an explicit output outside the dataset's folder is the caller's.
    pub kept: Vec<String>,
}

/// What `verify_dataset` found different; empty means bit-identical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finding {
    /// `source_file`, `definition`, `entity_table`, `output` or `recomputed`.
    pub kind: String,
    /// The object concerned (a file URL, `feature_view x`, ...).
    pub subject: String,
    /// What changed.
    pub detail: String,
}

/// The outcome of `verify_dataset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Verification {
    /// The dataset.
    pub name: String,
    /// Content hash of the output recomputed from the recorded inputs, when it could be.
    pub recomputed_hash: Option<String>,
    /// Whether that recomputation gave the recorded output bit for bit
    /// (`None` when it could not run): inputs may have changed without changing the output.
    pub reproducible: Option<bool>,
    /// Source files compared.
    pub files_checked: usize,
    /// Differences, empty when identical.
    pub findings: Vec<Finding>,
}

impl Verification {
    /// True when nothing differs: same sources, definitions, entity table and output, and
    /// a recomputation gives the same bits.
    pub fn identical(&self) -> bool {
        self.findings.is_empty()
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.identical() {
            return write!(
                f,
                "dataset \"{}\": bit-identical ({} source files unchanged, definitions unchanged, output intact; content hash {} recomputed and equal)",
                self.name,
                self.files_checked,
                self.recomputed_hash.as_deref().map_or("-", |h| &h[..16.min(h.len())])
            );
        }
        writeln!(f, "dataset \"{}\": {} difference(s)", self.name, self.findings.len())?;
        for x in &self.findings {
            writeln!(f, "  {} {}: {}", x.kind, x.subject, x.detail)?;
        }
        match self.reproducible {
            Some(true) => write!(
                f,
                "recomputing from the recorded definitions and entity rows over the current files still gives the recorded output bit for bit"
            ),
            Some(false) => write!(
                f,
                "recomputing from the recorded definitions and entity rows over the current files gives a different output"
            ),
            None => write!(f, "the output could not be recomputed"),
        }
    }
}

/// SHA-256 over a table's schema and rows, independent of batch boundaries.
#[derive(Debug)]
pub struct ContentHasher {
    converter: RowConverter,
    digest: Sha256,
    rows: u64,
}

impl ContentHasher {
    /// A hasher for tables of `schema`.
    pub fn new(schema: &SchemaRef) -> Result<Self> {
        let mut digest = Sha256::new();
        for f in schema.fields() {
            digest.update(format!("{}:{};", f.name(), f.data_type()).as_bytes());
        }
        let fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let converter = RowConverter::new(fields)
            .map_err(|e| Error::Unsupported(format!("cannot hash a table with this schema: {e}")))?;
        Ok(Self { converter, digest, rows: 0 })
    }

    /// Adds a batch's rows.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self
            .converter
            .convert_columns(batch.columns())
            .map_err(|e| Error::Unsupported(format!("cannot hash these rows: {e}")))?;
        for row in rows.iter() {
            let bytes = row.as_ref();
            self.digest.update((bytes.len() as u64).to_le_bytes());
            self.digest.update(bytes);
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows so far and the hex digest.
    pub fn finish(self) -> (u64, String) {
        (self.rows, hex(&self.digest.finalize()))
    }
}

/// Passes a stream through a [`ContentHasher`]; the result is in the returned slot once the stream ends.
pub(crate) fn hashing(stream: BatchStream) -> Result<(BatchStream, Arc<Mutex<Option<ContentHasher>>>)> {
    let schema = stream.schema();
    let slot = Arc::new(Mutex::new(Some(ContentHasher::new(&schema)?)));
    let s2 = Arc::clone(&slot);
    let inner = stream.map(move |b| {
        let b = b?;
        if let Some(h) = s2.lock().expect("poisoned").as_mut() {
            h.update(&b)?;
        }
        Ok(b)
    });
    Ok((BatchStream::new(schema, Box::pin(inner)), slot))
}

pub(crate) fn take(slot: &Arc<Mutex<Option<ContentHasher>>>) -> (u64, String) {
    slot.lock().expect("poisoned").take().expect("hashed once").finish()
}

/// Dataset names are used in paths: letters, digits, `_`, `-`, `.`; not starting with `.`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "dataset name \"{name}\" is invalid: use letters, digits, '_', '-' and '.' (not first), at most 128 characters"
        )))
    }
}

/// Rows and content hash of a stream.
pub(crate) async fn content_hash(mut stream: BatchStream) -> Result<(u64, String)> {
    let mut hasher = ContentHasher::new(&stream.schema())?;
    while let Some(b) = stream.next().await {
        hasher.update(&b?)?;
    }
    Ok(hasher.finish())
}

pub(crate) fn short(h: &Option<String>) -> String {
    h.as_deref().map_or_else(|| "-".to_owned(), |h| h[..16.min(h.len())].to_owned())
}
