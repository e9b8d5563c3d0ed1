//! Parquet offline store and object-store plumbing for feature-store.
//!
//! - [`location`]: resolves local paths, `file://`, `s3://` and `memory://`
//!   locations with storage options; used by every crate that needs an object store.
//! - [`registry_store`]: the registry document on an object store, with
//!   compare-and-swap writes safe under concurrent writers.
//! - [`ParquetOfflineStore`]: sources as Parquet files, folders (hive
//!   partitions) or globs.
#![warn(missing_docs)]

pub mod datafusion;
mod datasets;
mod error;
pub mod files;
pub mod location;
mod mapped_files;
mod offline_store;
pub mod registry_store;

pub use error::{Error, Result};
pub use offline_store::ParquetOfflineStore;
pub use registry_store::{LocalFileRegistryStore, ObjectStoreRegistryStore, open_registry_store};
