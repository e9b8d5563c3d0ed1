//! Embeddable feature store: open a repo folder (or a config value) and get a
//! [`FeatureStore`] wired to the backends its `feature_store.yaml` names.
//!
//! This crate only chooses backends; the model, registry and facade live in
//! `feature-store-core`, the Parquet offline store and object-store plumbing
//! in `feature-store-s3`, the online stores in `feature-store-sqlite`
//! (embedded default), `feature-store-lmdb` (embedded, fastest reads) and
//! `feature-store-redis`.
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

pub use backends::{OFFLINE_STORE_TYPES, ONLINE_STORE_TYPES, from_config, online_store, open};
pub use feature_store_core::*;
pub use feature_store_lmdb as lmdb;
pub use feature_store_redis as redis;
pub use feature_store_s3 as s3;
pub use feature_store_sqlite as sqlite;

/// The README's Rust snippets, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}
