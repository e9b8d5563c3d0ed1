//! The saved-datasets capability of an offline store: listing a source's
//! files with their versions, reading and writing whole tables, and
//! whole-object I/O, so a training set can be stored with its manifest and
//! checked byte for byte later.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::historical::{BatchStream, EntityInput};
use crate::model::{DataSource, JoinKey};

/// What `FeatureStore::save_dataset` and `verify_dataset` need from the
/// offline store; a backend offers it through [`super::OfflineStore::datasets`].
#[async_trait]
pub trait DatasetStorage: Send + Sync + Debug {
    /// Every file a source reads now, with size and version.
    async fn source_files(&self, source: &DataSource) -> Result<Vec<ObjectInfo>>;

    /// Reads an entity input (a file, SQL, batches) into a stream, as
    /// retrieval would: a CSV file's `keys` columns are read as their
    /// registry types (pass none for a file of another kind).
    async fn read_entities(
        &self,
        entities: EntityInput,
        timestamp_column: &str,
        sources: &[DataSource],
        keys: &[JoinKey],
    ) -> Result<BatchStream>;

    /// Writes `stream` as one Parquet file at `location` (a URL, or a path
    /// relative to the repo), replacing any object there; returns what was
    /// stored, with its SHA-256. A failed write leaves no object behind.
    async fn write_parquet(&self, location: &str, stream: BatchStream) -> Result<ObjectInfo>;

    /// Writes `bytes` at `location`, replacing any object there; returns what was stored, with its SHA-256.
    async fn put_object(&self, location: &str, bytes: bytes::Bytes) -> Result<ObjectInfo>;

    /// The bytes at `location`; `None` when absent.
    async fn get_object(&self, location: &str) -> Result<Option<bytes::Bytes>>;

    /// Deletes the object at `location`; `false` when there was none.
    async fn delete_object(&self, location: &str) -> Result<bool>;

    /// URLs of every object below the folder `location`; empty when it
    /// does not exist.
    async fn list_objects(&self, location: &str) -> Result<Vec<String>>;

    /// The normalized URL of `location` (a URL or a path relative to the repo), for comparing locations.
    fn location_url(&self, location: &str) -> Result<String>;

    /// Size, version and SHA-256 of the object at `location`; `None` when absent.
    async fn object_info(&self, location: &str) -> Result<Option<ObjectInfo>>;
}

/// A stored object as listed by an object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// URL of the object.
    pub location: String,
    /// Bytes.
    pub size: u64,
    /// The store's ETag (version tag), when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    /// Last modification time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
    /// SHA-256 of the bytes, hex; only for objects the dataset wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl ObjectInfo {
    /// An object at `location` of `size` bytes.
    pub fn new(location: impl Into<String>, size: u64) -> Self {
        Self { location: location.into(), size, e_tag: None, last_modified: None, sha256: None }
    }

    /// Sets the ETag and modification time.
    pub fn with_version(mut self, e_tag: Option<String>, last_modified: Option<DateTime<Utc>>) -> Self {
        self.e_tag = e_tag;
        self.last_modified = last_modified;
        self
    }

    /// Sets the content hash.
    pub fn with_sha256(mut self, hex: impl Into<String>) -> Self {
        self.sha256 = Some(hex.into());
        self
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
