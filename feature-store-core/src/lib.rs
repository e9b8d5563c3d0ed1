//! Core of an embeddable feature store: the model (entities, data sources,
//! feature views, feature services, feature references), the declarative
//! repo format, the versioned registry, the [`FeatureStore`] facade, and the
//! traits that stores implement, each with an in-memory reference backend.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use arrow_array::{Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
//! use arrow_schema::{DataType, Field, Schema, TimeUnit};
//! use feature_store_core::model::{DataSource, Entity, FeatureView};
//! use feature_store_core::registry::{ApplyMode, MemoryRegistryStore};
//! use feature_store_core::offline::MemoryOfflineStore;
//! use feature_store_core::{Definitions, FeatureStore, RepoConfig, ValueType};
//!
//! // Offline data the source reads.
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("driver_id", DataType::Int64, false),
//!     Field::new("event_timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
//!     Field::new("conv_rate", DataType::Float32, true),
//! ]));
//! let offline = Arc::new(MemoryOfflineStore::new());
//! offline.insert("driver_stats", schema.clone(), vec![]);
//!
//! let store = FeatureStore::builder(RepoConfig::new("demo", "memory://"))
//!     .with_registry_store(Arc::new(MemoryRegistryStore::new()))
//!     .with_offline_store(offline)
//!     .build()?;
//! let defs = Definitions::new()
//!     .entity(Entity::builder("driver").join_key("driver_id").build()?)
//!     .source(DataSource::builder("driver_stats", "driver_stats", "event_timestamp").build()?)
//!     .feature_view(
//!         FeatureView::builder("driver_hourly_stats", "driver_stats")
//!             .entity("driver")
//!             .feature("conv_rate", ValueType::Float32)
//!             .build()?,
//!     );
//! let outcome = store.apply(&defs, ApplyMode::Sync).await?;
//! assert_eq!(outcome.version, 1);
//! # Ok::<_, feature_store_core::Error>(()) }).unwrap();
//! ```
#![warn(missing_docs)]

pub mod aggregation;
pub mod dataset;
pub mod duration;
mod error;
mod facade;
pub mod historical;
pub mod ingest;
pub mod model;
pub mod offline;
pub mod on_demand;
pub mod online;
pub mod quality;
pub mod registry;
pub mod repo;
#[cfg(test)]
mod robustness;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod value_type;

pub use error::{BoxError, Error, Problem, Result, readable_csv_error, similar};
pub use facade::materialize::{
    MaterializeOptions, MaterializeProgress, MaterializeReport, ProgressFn, PushMode, ViewMaterialization,
};
pub use facade::serving::OnlineOptions;
pub use facade::{Described, FeatureStore, FeatureStoreBuilder, Features};
pub use historical::{BatchStream, EntityInput, HistoricalOptions};
pub use repo::{Definitions, RepoConfig};
pub use value_type::{SCALAR_TYPES, ScalarTypeInfo, UTC, ValueType, describe_arrow, timestamp_type};
/// The Arrow crates this library's API uses, so callers need no version match.
pub use {arrow_array, arrow_schema};
