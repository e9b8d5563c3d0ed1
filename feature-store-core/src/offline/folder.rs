//! A retrieval written as a folder of Parquet files where its rows are
//! produced (on a cluster, by the executors), with a manifest giving the
//! files' order. See [`super::OfflineStore::folder_writer`].

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::historical::HistoricalRequest;

/// The manifest's name inside the folder; it is written last, so a folder
/// whose manifest is missing holds no finished output.
pub const MANIFEST: &str = "_manifest.json";

/// The manifest's `format`.
pub const FORMAT: &str = "feature-store.folder-output.v1";

/// Rows per file unless told otherwise.
pub const DEFAULT_ROWS_PER_FILE: u64 = 1_000_000;

/// Writes retrievals as folders; see [`super::OfflineStore::folder_writer`].
#[async_trait]
pub trait FolderWriter: Send + Sync + Debug {
    /// Runs `request` and writes its rows under `folder` (a path or URL
    /// ending in `/`) as Parquet files of `rows_per_file` rows each,
    /// `part-NNNNNN-<run>.parquet` (name order is row order), then
    /// [`MANIFEST`]. Files of earlier runs in the folder are removed once
    /// the manifest is written; on failure this run's files are removed and
    /// the folder is as it was. A folder holding other files is refused.
    async fn write_historical_folder(
        &self,
        request: HistoricalRequest,
        folder: &str,
        rows_per_file: u64,
    ) -> Result<FolderOutput>;
}

/// A folder output's manifest (`_manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FolderOutput {
    /// [`FORMAT`].
    pub format: String,
    /// The folder, as a URL.
    pub folder: String,
    /// Rows in all files.
    pub rows: u64,
    /// The files' columns (every file has them, and an empty output has no files).
    pub columns: Vec<OutputColumn>,
    /// The files in row order: concatenated, the retrieval's rows in entity order.
    pub files: Vec<OutputFile>,
    /// Where the rows were produced and written: `local` or the cluster's scheduler.
    pub engine: String,
    /// When the manifest was written.
    pub created_at: DateTime<Utc>,
}

impl FolderOutput {
    /// A manifest of `files` (in any order; sorted here by first row).
    pub fn new(
        folder: String,
        columns: Vec<OutputColumn>,
        mut files: Vec<OutputFile>,
        engine: String,
        created_at: DateTime<Utc>,
    ) -> Self {
        files.sort_by_key(|f| f.first_row);
        let rows = files.iter().map(|f| f.rows).sum();
        Self { format: FORMAT.into(), folder, rows, columns, files, engine, created_at }
    }
}

/// A column of a folder output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutputColumn {
    /// Name.
    pub name: String,
    /// Arrow data type, as Arrow prints it (`Int64`, `Timestamp(µs, "UTC")`).
    pub dtype: String,
}

impl OutputColumn {
    /// A column.
    pub fn new(name: impl Into<String>, dtype: impl Into<String>) -> Self {
        Self { name: name.into(), dtype: dtype.into() }
    }
}

/// A file of a folder output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutputFile {
    /// Name inside the folder.
    pub file: String,
    /// Its first row's number in the output (0-based).
    pub first_row: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

impl OutputFile {
    /// A file.
    pub fn new(file: impl Into<String>, first_row: u64, rows: u64, bytes: u64) -> Self {
        Self { file: file.into(), first_row, rows, bytes }
    }
}
