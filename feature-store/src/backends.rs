//! The explicit table from config type names to backend constructors.
//!
//! Each backend crate parses its own options (`from_options`); this file only
//! says which name opens which backend and which cargo feature compiles it,
//! side by side, so the list of names cannot drift from the constructors.
//! Adding an online backend: its crate, its feature in `Cargo.toml`, one
//! line in [`ONLINE_BACKENDS`].

use std::path::Path;
use std::sync::Arc;

use feature_store_core::offline::OfflineStore;
use feature_store_core::online::{MemoryOnlineStore, OnlineStore};
use feature_store_core::repo::{BackendOptions, OnlineStoreConfig};
use feature_store_core::{Error, FeatureStore, RepoConfig, Result};
use feature_store_object_store::open_registry_store;

/// Opens a backend from its config section.
type Open<T> = fn(&BackendOptions<'_>) -> Result<Arc<T>>;

/// One row of a backend table.
struct Backend<T: ?Sized + 'static> {
    /// The `type:` name (and its aliases) in `feature_store.yaml`.
    names: &'static [&'static str],
    /// The cargo feature of this crate that compiles it.
    feature: &'static str,
    /// The constructor; `None` when the feature is off in this build.
    open: Option<Open<T>>,
}

/// `Some(constructor)` when `feature` is on, `None` otherwise.
macro_rules! when {
    ($feature:literal, $store:ty, $open:expr) => {{
        #[cfg(feature = $feature)]
        let open: Option<Open<$store>> = Some($open);
        #[cfg(not(feature = $feature))]
        let open: Option<Open<$store>> = None;
        open
    }};
}

/// Online stores, by `online_store.type`.
const ONLINE_BACKENDS: &[Backend<dyn OnlineStore>] = &[
    Backend {
        names: &["sqlite"],
        feature: "sqlite",
        open: when!("sqlite", dyn OnlineStore, |o| Ok(Arc::new(
            feature_store_sqlite::SqliteOnlineStore::from_options(o)?
        ))),
    },
    Backend {
        names: &["lmdb"],
        feature: "lmdb",
        open: when!("lmdb", dyn OnlineStore, |o| Ok(Arc::new(feature_store_lmdb::LmdbOnlineStore::from_options(o)?))),
    },
    Backend {
        names: &["redis"],
        feature: "redis",
        open: when!("redis", dyn OnlineStore, |o| Ok(Arc::new(feature_store_redis::RedisOnlineStore::from_options(
            o
        )?))),
    },
    Backend { names: &["memory"], feature: "", open: Some(open_memory_online) },
];

/// Offline stores, by `offline_store.type` (default `file`).
const OFFLINE_BACKENDS: &[Backend<dyn OfflineStore>] = &[Backend {
    names: &["file", "parquet", "s3"],
    feature: "parquet",
    open: when!("parquet", dyn OfflineStore, open_parquet),
}];

fn open_memory_online(options: &BackendOptions<'_>) -> Result<Arc<dyn OnlineStore>> {
    options.check_known(&[])?;
    Ok(Arc::new(MemoryOnlineStore::new()))
}

#[cfg(feature = "parquet")]
fn open_parquet(options: &BackendOptions<'_>) -> Result<Arc<dyn OfflineStore>> {
    Ok(Arc::new(feature_store_parquet::ParquetOfflineStore::from_options(options)?))
}

/// The names compiled into this build, in table order.
fn compiled<T: ?Sized>(table: &[Backend<T>]) -> Vec<&'static str> {
    table.iter().filter(|b| b.open.is_some()).flat_map(|b| b.names.iter().copied()).collect()
}

/// Online store types this build accepts in `online_store.type`.
pub fn online_store_types() -> Vec<&'static str> {
    compiled(ONLINE_BACKENDS)
}

/// Offline store types this build accepts in `offline_store.type`.
pub fn offline_store_types() -> Vec<&'static str> {
    compiled(OFFLINE_BACKENDS)
}

/// Finds `kind` in `table`: its constructor, or an error naming the cargo
/// feature that compiles it, or the names this build knows.
fn lookup<T: ?Sized>(table: &[Backend<T>], section: &str, kind: &str) -> Result<Open<T>> {
    let config = |message: String| Error::Config { location: format!("{section}.type"), message };
    match table.iter().find(|b| b.names.contains(&kind)) {
        Some(Backend { open: Some(open), .. }) => Ok(*open),
        Some(b) => Err(config(format!(
            "\"{kind}\" is not compiled into this build; build feature-store with the cargo feature \"{}\"",
            b.feature
        ))),
        None => Err(config(format!("unknown type \"{kind}\"; supported: {}", compiled(table).join(", ")))),
    }
}

/// The online store `config` names; relative paths resolve against `base`.
pub fn online_store(config: &OnlineStoreConfig, base: &Path) -> Result<Arc<dyn OnlineStore>> {
    let open = lookup(ONLINE_BACKENDS, "online_store", &config.kind)?;
    open(&BackendOptions::new("online_store", &config.kind, &config.options, base))
}

/// The online store's section with its heap caches bounded by the offline
/// store's `memory_limit`, when one is set and the section leaves them to
/// the default: SQLite's page cache (64 MiB a connection by default, filled
/// by a large materialization and kept) becomes 1/16 of the limit, at
/// least 2 MiB, so the process stays within the limit plus its base.
fn online_under_limit(config: &RepoConfig) -> Option<OnlineStoreConfig> {
    let limit = config.offline_store.memory_limit.as_deref()?;
    let limit = feature_store_core::repo::parse_size(limit).ok()?;
    if config.online_store.kind != "sqlite" || config.online_store.options.contains_key("cache_size") {
        return None;
    }
    let cache = (limit / 16).clamp(2 << 20, 64 << 20);
    let mut limited = config.online_store.clone();
    limited.options.insert("cache_size".into(), cache.to_string().into());
    Some(limited)
}

/// Opens the repo folder `repo`: reads `feature_store.yaml` and wires the backends.
pub fn open(repo: impl AsRef<Path>) -> Result<FeatureStore> {
    from_config(RepoConfig::load(repo.as_ref())?)
}

/// Wires the backends a config names; relative paths resolve against `config.repo_path`.
///
/// A build without an offline backend (no `parquet` feature) opens any repo
/// for online reads; offline calls then say which feature they need.
pub fn from_config(config: RepoConfig) -> Result<FeatureStore> {
    let base = config.repo_path.clone();
    let registry = open_registry_store(&config.registry.path, &base, config.registry_storage_options())?;
    let kind = config.offline_store.kind.clone().unwrap_or_else(|| "file".into());
    let offline = match lookup(OFFLINE_BACKENDS, "offline_store", &kind) {
        Ok(open) => {
            let options = config.offline_store.backend_options();
            Some(open(&BackendOptions::new("offline_store", &kind, &options, &base))?)
        }
        // Only the default may be absent silently; a type the user chose must exist.
        Err(_) if config.offline_store.kind.is_none() && offline_store_types().is_empty() => None,
        Err(e) => return Err(e),
    };
    let online = match online_under_limit(&config) {
        Some(limited) => online_store(&limited, &base)?,
        None => online_store(&config.online_store, &base)?,
    };
    let mut builder = FeatureStore::builder(config).with_registry_store(registry).with_online_store(online);
    if let Some(offline) = offline {
        builder = builder.with_offline_store(offline);
    }
    #[cfg(feature = "on-demand")]
    {
        builder = builder.with_expression_engine(Arc::new(feature_store_on_demand::DataFusionEngine::new()));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_limit_bounds_sqlites_page_cache_unless_it_is_set() {
        let config = |text: &str| RepoConfig::from_yaml(text, "test").unwrap();
        let limited = config(
            "project: p\nregistry: r.json\nonline_store: {type: sqlite}\noffline_store: {memory_limit: 32MiB}\n",
        );
        let section = online_under_limit(&limited).expect("bounded");
        assert_eq!(section.options["cache_size"].as_str(), Some("2097152"));
        let large =
            config("project: p\nregistry: r.json\nonline_store: {type: sqlite}\noffline_store: {memory_limit: 4GiB}\n");
        assert_eq!(online_under_limit(&large).unwrap().options["cache_size"].as_str(), Some("67108864"));
        let chosen = config(
            "project: p\nregistry: r.json\nonline_store: {type: sqlite, cache_size: 1GiB}\noffline_store: {memory_limit: 32MiB}\n",
        );
        assert!(online_under_limit(&chosen).is_none(), "the user's cache_size stays");
        assert!(online_under_limit(&config("project: p\nregistry: r.json\n")).is_none(), "no limit, no change");
    }

    #[test]
    fn unknown_types_list_exactly_the_compiled_backends() {
        let err = lookup(ONLINE_BACKENDS, "online_store", "cassandra").unwrap_err().to_string();
        let compiled = online_store_types();
        assert!(err.contains(&format!("supported: {}", compiled.join(", "))), "{err}");
        assert!(compiled.contains(&"memory"));
        assert_eq!(compiled.contains(&"redis"), cfg!(feature = "redis"));
        assert_eq!(compiled.contains(&"lmdb"), cfg!(feature = "lmdb"));
        assert_eq!(compiled.contains(&"sqlite"), cfg!(feature = "sqlite"));
        assert_eq!(offline_store_types().contains(&"file"), cfg!(feature = "parquet"));
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn a_backend_left_out_of_the_build_names_its_feature() {
        let err = lookup(ONLINE_BACKENDS, "online_store", "redis").unwrap_err().to_string();
        assert!(err.contains("cargo feature \"redis\""), "{err}");
    }
}

/// A build without the Parquet offline store (`--no-default-features
/// --features sqlite`) serves online features from a repo another process
/// applied, and says which feature offline calls need.
#[cfg(all(test, feature = "sqlite", not(feature = "parquet")))]
mod online_only {
    use std::sync::Arc;

    use feature_store_core::arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use feature_store_core::arrow_schema::{DataType, Field, Schema};
    use feature_store_core::model::{DataSource, Entity, FeatureView};
    use feature_store_core::offline::MemoryOfflineStore;
    use feature_store_core::online::FeatureStatus;
    use feature_store_core::registry::ApplyMode;
    use feature_store_core::{Definitions, EntityInput, Features, HistoricalOptions, OnlineOptions, ValueType};

    #[tokio::test]
    async fn serves_online_and_names_the_missing_feature() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("feature_store.yaml"), "project: p\nregistry: data/registry.json\n").unwrap();
        // The pipeline's apply, with an offline store of its own.
        let schema = Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, true),
            Field::new("event_timestamp", feature_store_core::timestamp_type(), true),
            Field::new("conv_rate", DataType::Float32, true),
        ]));
        let offline = Arc::new(MemoryOfflineStore::new());
        offline.insert("stats", schema, vec![]);
        let config = feature_store_core::RepoConfig::load(dir.path()).unwrap();
        let registry = super::open_registry_store(&config.registry.path, dir.path(), &Default::default()).unwrap();
        let pipeline = feature_store_core::FeatureStore::builder(config)
            .with_registry_store(registry)
            .with_offline_store(offline)
            .build()
            .unwrap();
        let defs = Definitions::new()
            .entity(Entity::builder("driver").join_key("driver_id").build().unwrap())
            .source(DataSource::builder("stats", "stats", "event_timestamp").build().unwrap())
            .feature_view(
                FeatureView::builder("v", "stats")
                    .entity("driver")
                    .feature("conv_rate", ValueType::Float32)
                    .build()
                    .unwrap(),
            );
        pipeline.apply(&defs, ApplyMode::Sync).await.unwrap();

        // The service: this build, no query engine.
        let service = super::open(dir.path()).unwrap();
        let rows =
            RecordBatch::try_from_iter([("driver_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        let got = service.get_online_features(&Features::refs(["v:conv_rate"]), &rows, &OnlineOptions::default()).await;
        assert_eq!(got.unwrap().status(0, "conv_rate").unwrap(), FeatureStatus::NotFound);
        let err = service
            .get_historical_features(
                EntityInput::batch(rows),
                &Features::refs(["v:conv_rate"]),
                &HistoricalOptions::default(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cargo feature \"parquet\""), "{err}");
    }
}
