//! The explicit table from config type names to backend constructors.

use std::path::Path;
use std::sync::Arc;

use feature_store_core::offline::OfflineStore;
use feature_store_core::online::{MemoryOnlineStore, OnlineStore};
use feature_store_core::repo::OnlineStoreConfig;
use feature_store_core::{Error, FeatureStore, RepoConfig, Result};
use feature_store_s3::datafusion::parse_size;
use feature_store_s3::{ParquetOfflineStore, open_registry_store};

/// Offline store types accepted in `offline_store.type`.
pub const OFFLINE_STORE_TYPES: &[&str] = &["file"];

/// Online store types accepted in `online_store.type`.
pub const ONLINE_STORE_TYPES: &[&str] = &["sqlite", "lmdb", "redis", "memory"];

/// The online store `config` names; relative paths resolve against `base`.
pub fn online_store(config: &OnlineStoreConfig, base: &Path) -> Result<Arc<dyn OnlineStore>> {
    let unknown = |allowed: &[&str]| -> Result<()> {
        match config.options.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(Error::Config {
                location: format!("online_store.{k}"),
                message: format!("unknown option for type {}; known: {}", config.kind, allowed.join(", ")),
            }),
            None => Ok(()),
        }
    };
    Ok(match config.kind.as_str() {
        "sqlite" => {
            unknown(&["path"])?;
            let path = config.option_str("path").unwrap_or_else(|| "data/online.db".into());
            let path = if std::path::Path::new(&path).is_absolute() { path.into() } else { base.join(path) };
            Arc::new(feature_store_sqlite::SqliteOnlineStore::open(path)?)
        }
        "lmdb" => {
            unknown(&["path", "map_size", "preload"])?;
            let path = config.option_str("path").unwrap_or_else(|| "data/online.lmdb".into());
            let path = if std::path::Path::new(&path).is_absolute() { path.into() } else { base.join(path) };
            let map_size = match config.option_str("map_size") {
                None => None,
                Some(text) => Some(
                    parse_size(&text)
                        .map_err(|message| Error::Config { location: "online_store.map_size".into(), message })?,
                ),
            };
            let preload = match config.options.get("preload") {
                None => false,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(Error::Config {
                        location: "online_store.preload".into(),
                        message: format!("expected true or false, got {other}"),
                    });
                }
            };
            Arc::new(feature_store_lmdb::LmdbOnlineStore::open(path, map_size)?.with_preload(preload)?)
        }
        "memory" => {
            unknown(&[])?;
            Arc::new(MemoryOnlineStore::new())
        }
        "redis" => {
            let mut options = config.options.clone();
            // A CA file named in the repo config is relative to the repo.
            if let Some(serde_json::Value::String(p)) = options.get_mut("tls_ca_cert")
                && std::path::Path::new(p.as_str()).is_relative()
            {
                *p = base.join(p.as_str()).display().to_string();
            }
            Arc::new(feature_store_redis::RedisOnlineStore::from_options(&options)?)
        }
        other => {
            return Err(Error::Config {
                location: "online_store.type".into(),
                message: format!("unknown type \"{other}\"; supported: {}", ONLINE_STORE_TYPES.join(", ")),
            });
        }
    })
}

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
    let online = online_store(&config.online_store, &base)?;
    FeatureStore::builder(config)
        .with_registry_store(registry)
        .with_offline_store(offline)
        .with_online_store(online)
        .build()
}
