//! Integration tests of the core crate, in one binary to save link time.

mod model;
mod registry;

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use feature_store_core::offline::MemoryOfflineStore;
use feature_store_core::registry::MemoryRegistryStore;
use feature_store_core::{FeatureStore, RepoConfig};

/// A memory offline store with a `drivers` table and a `customers` table.
pub(crate) fn offline() -> Arc<MemoryOfflineStore> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let store = MemoryOfflineStore::new();
    store.insert(
        "drivers",
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts.clone(), false),
            Field::new("created", ts.clone(), true),
            Field::new("conv_rate", DataType::Float32, true),
            Field::new("trips", DataType::Int32, true),
            Field::new("City Name", DataType::Utf8, true),
        ])),
        vec![],
    );
    store.insert(
        "customers",
        Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("ts", ts, false),
            Field::new("ltv", DataType::Float64, true),
        ])),
        vec![],
    );
    Arc::new(store)
}

pub(crate) fn memory_store(registry: Arc<MemoryRegistryStore>) -> FeatureStore {
    FeatureStore::builder(RepoConfig::new("proj", "memory://"))
        .with_registry_store(registry)
        .with_offline_store(offline())
        .build()
        .unwrap()
}
