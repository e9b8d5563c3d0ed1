//! Embeddable feature store: open a repo folder (or a config value) and get a
//! [`FeatureStore`] wired to the backends its `feature_store.yaml` names.
//!
//! This crate only chooses backends; the model, registry and facade live in
//! `feature-store-core`, locations and registry storage in
//! `feature-store-object-store`, the Parquet offline store (DataFusion) in
//! `feature-store-parquet`, the online stores in `feature-store-sqlite`
//! (embedded default), `feature-store-lmdb` (embedded, fastest reads) and
//! `feature-store-redis`.
//!
//! Backends are cargo features: `sqlite` and `parquet` by default, `lmdb`,
//! `redis` and `s3` on request, `full` for all. An inference service that
//! only reads online features can build with
//! `default-features = false, features = ["redis"]` and compiles no query
//! engine; a config naming a backend left out of the build is an error that
//! names the feature to enable.
//!
//! ```no_run
//! # async fn demo() -> feature_store::Result<()> {
//! let store = feature_store::open("my_repo")?;
//! let defs = store.repo_definitions()?;
//! let outcome = store.apply(&defs, feature_store::registry::ApplyMode::Sync).await?;
//! println!("{}", outcome.plan);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod backends;

mod streams;
pub use backends::{from_config, offline_store_types, online_store, online_store_types, open};
pub use feature_store_core::*;
#[cfg(feature = "lmdb")]
pub use feature_store_lmdb as lmdb;
#[cfg(feature = "nats")]
pub use feature_store_nats as nats;
pub use feature_store_object_store as object_store;
#[cfg(feature = "on-demand")]
pub use feature_store_on_demand as expressions;
#[cfg(feature = "parquet")]
pub use feature_store_parquet as parquet;
#[cfg(feature = "redis")]
pub use feature_store_redis as redis;
#[cfg(feature = "sqlite")]
pub use feature_store_sqlite as sqlite;
pub use streams::StreamConsumers;

/// Registering user-defined functions for on-demand features on an opened store.
#[cfg(feature = "on-demand")]
pub trait RegisterUdf {
    /// Registers `udf` (a DataFusion scalar function, immutable) so that
    /// on-demand expressions can call it by name; see
    /// [`expressions::DataFusionEngine::register_udf`].
    fn register_udf(&self, udf: feature_store_on_demand::datafusion::logical_expr::ScalarUDF) -> Result<()>;
}

#[cfg(feature = "on-demand")]
impl RegisterUdf for FeatureStore {
    fn register_udf(&self, udf: feature_store_on_demand::datafusion::logical_expr::ScalarUDF) -> Result<()> {
        let engine = self
            .expression_engine()
            .and_then(|e| e.as_any().downcast_ref::<feature_store_on_demand::DataFusionEngine>())
            .ok_or_else(|| {
                Error::Unsupported(
                    "this store was built without the DataFusion expression engine; give \
                     FeatureStoreBuilder::with_expression_engine a feature_store::expressions::DataFusionEngine"
                        .into(),
                )
            })?;
        Ok(engine.register_udf(udf)?)
    }
}

/// The README's Rust snippets, compiled as doc tests so they stay true.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../../README.md")]
mod readme {}
