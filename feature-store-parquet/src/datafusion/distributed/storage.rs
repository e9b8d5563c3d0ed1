//! What executors read sources with: the job carries the offline store's
//! `storage_options` as session settings (`feature_store.storage.<key>`),
//! and each executor builds its object stores from them, the same way the
//! local engine does, so an S3 endpoint or credential set once in
//! `feature_store.yaml` reaches every executor.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ballista_core::extension::SessionConfigExt;
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;
use url::Url;

/// The offline store's `storage_options`, as a session config extension.
#[derive(Debug, Clone, Default)]
pub struct StorageSettings {
    options: BTreeMap<String, String>,
}

impl StorageSettings {
    /// Settings carrying `options`.
    pub fn new(options: BTreeMap<String, String>) -> Self {
        Self { options }
    }
}

impl ConfigExtension for StorageSettings {
    const PREFIX: &'static str = "feature_store";
}

impl ExtensionOptions for StorageSettings {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.strip_prefix("storage.").ok_or_else(|| {
            DataFusionError::Configuration(format!(
                "unknown setting feature_store.{key}; expected feature_store.storage.<option>"
            ))
        })?;
        self.options.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.options
            .iter()
            .map(|(k, v)| ConfigEntry {
                key: format!("{}.storage.{k}", Self::PREFIX),
                value: Some(v.clone()),
                description: "an object store option of the offline store",
            })
            .collect()
    }
}

/// The session config schedulers, executors and each job start from:
/// Ballista's, with [`StorageSettings`] registered so a job's storage
/// options are accepted, and no work stealing between scan partitions.
pub fn cluster_session_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_option_extension(StorageSettings::default())
        // Each task must read exactly the file groups the client planned: a
        // scan re-split into byte ranges on the cluster (files over 10 MiB)
        // lost rows, an entity file coming back with its first row group
        // only (test: `cluster_retrieval_equals_the_local_engine`), and
        // DataFusion's work stealing hands a task's files to sibling
        // partitions that, as separate tasks, are never polled for them.
        .set_bool("datafusion.execution.enable_file_stream_work_stealing", false)
        .set_bool("datafusion.optimizer.repartition_file_scans", false)
}

/// A scheduler's session for one job: [`cluster_runtime_env`]'s stores.
pub fn cluster_session_state(config: SessionConfig) -> Result<datafusion::execution::SessionState> {
    let runtime = cluster_runtime_env(&config)?;
    Ok(datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build())
}

/// The storage options a job's session carries.
pub(crate) fn storage_options(config: &SessionConfig) -> BTreeMap<String, String> {
    config.options().extensions.get::<StorageSettings>().map(|s| s.options.clone()).unwrap_or_default()
}

/// An executor's runtime for one session: object stores built from the
/// session's [`StorageSettings`].
pub fn cluster_runtime_env(config: &SessionConfig) -> Result<Arc<RuntimeEnv>> {
    let options = storage_options(config);
    RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(Stores { options, stores: Mutex::default() }))
        .build_arc()
}

/// Object stores by scheme and host, made on first use.
#[derive(Debug)]
struct Stores {
    options: BTreeMap<String, String>,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Stores {
    fn key(url: &Url) -> String {
        format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
    }
}

impl ObjectStoreRegistry for Stores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.stores.lock().expect("stores lock").insert(Self::key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.stores
            .lock()
            .expect("stores lock")
            .remove(&Self::key(url))
            .ok_or_else(|| DataFusionError::Execution(format!("no object store for {url}")))
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = Self::key(url);
        if let Some(store) = self.stores.lock().expect("stores lock").get(&key) {
            return Ok(Arc::clone(store));
        }
        if url.scheme() == "memory" {
            return Err(DataFusionError::Execution(format!(
                "{url}: an in-memory store lives in one process; executors cannot read it (use files or S3)"
            )));
        }
        let location = if url.scheme() == "file" { "file:///".to_owned() } else { format!("{key}/") };
        let resolved =
            feature_store_object_store::location::resolve(&location, std::path::Path::new("/"), &self.options)
                .map_err(|e| DataFusionError::Execution(format!("object store for {url}: {e}")))?;
        let store = match resolved.kind {
            // Plain reads: the local engine's mapped files would count
            // against an executor's memory without its pool seeing them.
            feature_store_object_store::location::StoreKind::Local(_) => {
                Arc::new(object_store::local::LocalFileSystem::new()) as Arc<dyn ObjectStore>
            }
            _ => resolved.store,
        };
        let store = match EXECUTOR.get() {
            Some(name) => Arc::new(OnExecutor { inner: store, name: name.clone() }) as Arc<dyn ObjectStore>,
            None => store,
        };
        self.stores.lock().expect("stores lock").insert(key, Arc::clone(&store));
        Ok(store)
    }
}

/// This process's executor, as errors name it (`host:port`).
static EXECUTOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process's executor in the errors of the object stores it
/// reads and writes with (a file one executor cannot open is then reported
/// with the file and the executor). The first name given stays.
pub fn set_executor_name(name: impl Into<String>) {
    let _ = EXECUTOR.set(name.into());
}

/// A store whose read errors say which executor saw them.
#[derive(Debug)]
struct OnExecutor {
    inner: Arc<dyn ObjectStore>,
    name: String,
}

impl std::fmt::Display for OnExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (on executor {})", self.inner, self.name)
    }
}

impl OnExecutor {
    fn tag(&self, e: object_store::Error) -> object_store::Error {
        let on = |source: Box<dyn std::error::Error + Send + Sync>| -> Box<dyn std::error::Error + Send + Sync> {
            format!("{source} (on executor {})", self.name).into()
        };
        match e {
            object_store::Error::NotFound { path, source } => {
                object_store::Error::NotFound { path, source: on(source) }
            }
            object_store::Error::PermissionDenied { path, source } => {
                object_store::Error::PermissionDenied { path, source: on(source) }
            }
            object_store::Error::Unauthenticated { path, source } => {
                object_store::Error::Unauthenticated { path, source: on(source) }
            }
            object_store::Error::Generic { store, source } => {
                object_store::Error::Generic { store, source: on(source) }
            }
            other => other,
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for OnExecutor {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await.map_err(|e| self.tag(e))
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await.map_err(|e| self.tag(e))
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await.map_err(|e| self.tag(e))
    }

    async fn get_ranges(
        &self,
        location: &object_store::path::Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await.map_err(|e| self.tag(e))
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await.map_err(|e| self.tag(e))
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await.map_err(|e| self.tag(e))
    }
}
