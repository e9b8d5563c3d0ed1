//! Object-store plumbing for feature-store, without the query engine: an
//! inference service that reads its registry from S3 and its features from
//! an online store links this crate and no DataFusion.
//!
//! - [`location`]: resolves local paths, `file://`, `s3://` (cargo feature
//!   `s3`) and `memory://` locations with storage options; every crate that
//!   needs an object store resolves it here.
//! - [`registry_store`]: the registry document on an object store or a local
//!   file, with compare-and-swap writes safe under concurrent writers.
//! - [`blobs`]: whole-object I/O (put, get, delete, size and SHA-256) for
//!   saved datasets' manifests and files.
#![warn(missing_docs)]

pub mod blobs;
mod error;
pub mod location;
pub mod registry_store;

pub use error::{Error, Result};
/// The object_store crate this one is built on, so callers need no version match.
pub use object_store;
pub use registry_store::{LocalFileRegistryStore, ObjectStoreRegistryStore, open_registry_store};
