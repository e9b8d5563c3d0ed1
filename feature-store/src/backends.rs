//! The explicit table from config type names to backend constructors.

use std::path::Path;
use std::sync::Arc;

use feature_store_core::offline::OfflineStore;
use feature_store_core::{Error, FeatureStore, RepoConfig, Result};
use feature_store_s3::datafusion::parse_size;
use feature_store_s3::{ParquetOfflineStore, open_registry_store};

/// Offline store types accepted in `offline_store.type`.
pub const OFFLINE_STORE_TYPES: &[&str] = &["file"];

/// Opens the repo folder `repo`: reads `feature_store.yaml` and wires the backends.
pub fn open(repo: impl AsRef<Path>) -> Result<FeatureStore> {
    from_config(RepoConfig::load(repo.as_ref())?)
}

/// Wires the backends a config names; relative paths resolve against `config.repo_path`.
pub fn from_config(config: RepoConfig) -> Result<FeatureStore> {
    let base = config.repo_path.clone();
    let registry = open_registry_store(&config.registry.path, &base, config.registry_storage_options())?;
    let offline: Arc<dyn OfflineStore> = match config.offline_store.kind.as_deref().unwrap_or("file") {
        "file" | "parquet" | "s3" => {
            let limit = match &config.offline_store.memory_limit {
                None => None,
                Some(text) => Some(
                    parse_size(text)
                        .map_err(|message| Error::Config { location: "offline_store.memory_limit".into(), message })?,
                ),
            };
            Arc::new(
                ParquetOfflineStore::new(base.clone(), config.offline_store.storage_options.clone())
                    .with_memory_limit(limit),
            )
        }
        other => {
            return Err(Error::Config {
                location: "offline_store.type".into(),
                message: format!("unknown type \"{other}\"; supported: {}", OFFLINE_STORE_TYPES.join(", ")),
            });
        }
    };
    FeatureStore::builder(config).with_registry_store(registry).with_offline_store(offline).build()
}
