//! The Parquet offline store: sources as Parquet files, folders (hive
//! partitions) or globs on any location `feature-store-object-store`
//! resolves, queried with Apache DataFusion.
//!
//! - [`ParquetOfflineStore`]: the store and its option parsing.
//! - [`files`]: which files of a folder or glob are a source's data.
//! - `log_compaction`: merging ingestion's small offline log files.
//! - `folder_output`: retrievals written as a folder of Parquet files and a manifest.
//! - [`datafusion`]: the point-in-time join operator, the retrieval planner,
//!   latest rows for materialization, one-pass window statistics.
#![warn(missing_docs)]

pub mod datafusion;
mod datasets;
mod error;
pub mod files;
mod folder_output;
mod log_compaction;
mod mapped_files;
mod offline_store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod unreadable;

pub use error::{Error, Result};
pub use offline_store::ParquetOfflineStore;
