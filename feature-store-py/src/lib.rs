//! Python bindings (`feature_store._internal`): a thin layer over the Rust
//! [`feature_store::FeatureStore`]. The Feast-style Python API lives in
//! `python/feature_store/`; this module only moves data and calls across.
//!
//! Every call that does I/O or heavy work releases the GIL and blocks on the
//! one process-wide runtime (`runtime.rs`); Arrow data crosses through the C
//! data interface (`convert.rs`); errors become the exception classes of
//! `feature_store.errors` (`error.rs`); Python functions become DataFusion
//! functions for on-demand features (`udf.rs`).

mod convert;
mod error;
mod pandas;
mod runtime;
mod udf;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_pyarrow::{IntoPyArrow, ToPyArrow};
use arrow_schema::{ArrowError, SchemaRef};
use chrono::{DateTime, Utc};
use feature_store::online::OnlineResponse;
use feature_store::registry::ApplyMode;
use feature_store::{BatchStream, Definitions, EntityInput, FeatureStore, Features, HistoricalOptions, OnlineOptions};
use feature_store::{MaterializeOptions, PushMode};
use futures::StreamExt;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::convert::{read_arrow, read_arrow_batch};
use crate::error::{py_error, to_py};
use crate::runtime::{block_on, runtime};

/// How a store was opened, so that a forked child can open its own copy.
enum Opener {
    Repo(PathBuf),
    Config { yaml: String, base: PathBuf },
}

impl Opener {
    fn open(&self) -> feature_store::Result<FeatureStore> {
        match self {
            Self::Repo(path) => feature_store::open(path),
            Self::Config { yaml, base } => {
                let mut config = feature_store::RepoConfig::from_yaml(yaml, "FeatureStore(config=...)")?;
                config.repo_path = base.clone();
                feature_store::from_config(config)
            }
        }
    }
}

/// An opened feature store (`feature_store.FeatureStore` wraps it).
#[pyclass(module = "feature_store._internal", name = "Store", frozen)]
struct Store {
    opener: Opener,
    state: Mutex<Opened>,
}

/// The store and the process it was opened in. Connections and file
/// handles must not be shared with a forked child, so a child reopens.
struct Opened {
    pid: u32,
    store: FeatureStore,
    /// The Python functions registered with its engine (`udf::sync`).
    udfs_seen: u64,
}

impl Store {
    fn new(py: Python<'_>, opener: Opener) -> PyResult<Self> {
        let store = py.detach(|| opener.open()).map_err(to_py)?;
        let mut udfs_seen = 0;
        udf::sync(&store, &mut udfs_seen).map_err(to_py)?;
        Ok(Self { opener, state: Mutex::new(Opened { pid: std::process::id(), store, udfs_seen }) })
    }

    /// The store of this process, with every Python function registered so far.
    fn store(&self) -> PyResult<FeatureStore> {
        let pid = std::process::id();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.pid != pid {
            let fresh = self.opener.open().map_err(to_py)?;
            // The parent's connections are not ours to close (SQLite would drop its locks).
            std::mem::forget(std::mem::replace(&mut *state, Opened { pid, store: fresh, udfs_seen: 0 }));
        }
        let Opened { store, udfs_seen, .. } = &mut *state;
        udf::sync(store, udfs_seen).map_err(to_py)?;
        Ok(store.clone())
    }
}

fn features_arg(features: Option<Vec<String>>, service: Option<String>) -> PyResult<Features> {
    match (features, service) {
        (Some(f), None) => Ok(Features::refs(f)),
        (None, Some(s)) => Ok(Features::service(s)),
        _ => Err(PyValueError::new_err("pass either features or a feature service, not both")),
    }
}

fn definitions(
    store: &FeatureStore,
    json: Option<String>,
    partial: bool,
) -> feature_store::Result<(Definitions, ApplyMode)> {
    match json {
        None => Ok((store.repo_definitions()?, ApplyMode::Sync)),
        Some(text) => {
            let defs = Definitions::from_yaml(&text, "objects passed from Python")?;
            Ok((defs, if partial { ApplyMode::Merge } else { ApplyMode::Sync }))
        }
    }
}

fn micros(us: i64, what: &str) -> PyResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| PyValueError::new_err(format!("{what} is out of range")))
}

fn json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

#[pymethods]
impl Store {
    /// Opens the repo folder holding `feature_store.yaml`.
    #[staticmethod]
    fn open(py: Python<'_>, repo_path: PathBuf) -> PyResult<Self> {
        Self::new(py, Opener::Repo(repo_path))
    }

    /// Opens a store from config text (YAML or JSON); relative paths resolve against `repo_path`.
    #[staticmethod]
    fn from_config(py: Python<'_>, config: String, repo_path: PathBuf) -> PyResult<Self> {
        Self::new(py, Opener::Config { yaml: config, base: repo_path })
    }

    #[getter]
    fn project(&self) -> PyResult<String> {
        Ok(self.store()?.project().to_owned())
    }

    #[getter]
    fn repo_path(&self) -> PyResult<PathBuf> {
        Ok(self.store()?.config().repo_path.clone())
    }

    /// The config as JSON.
    fn config_json(&self) -> PyResult<String> {
        json(self.store()?.config())
    }

    /// Applies definitions (JSON in the YAML file schema; `None` applies the repo's files).
    #[pyo3(signature = (definitions=None, partial=true))]
    fn apply(&self, py: Python<'_>, definitions: Option<String>, partial: bool) -> PyResult<String> {
        let store = self.store()?;
        let outcome = py
            .detach(|| {
                block_on(async {
                    let (defs, mode) = self::definitions(&store, definitions, partial)?;
                    store.apply(&defs, mode).await
                })
            })
            .map_err(to_py)?;
        json(&serde_json::json!({
            "version": outcome.version,
            "written": outcome.written,
            "attempts": outcome.attempts,
            "changes": outcome.plan.changes,
            "warnings": outcome.plan.warnings,
            "text": outcome.plan.to_string(),
        }))
    }

    /// What `apply` would change, as JSON.
    #[pyo3(signature = (definitions=None, partial=true))]
    fn plan(&self, py: Python<'_>, definitions: Option<String>, partial: bool) -> PyResult<String> {
        let store = self.store()?;
        let plan = py
            .detach(|| {
                block_on(async {
                    let (defs, mode) = self::definitions(&store, definitions, partial)?;
                    store.plan(&defs, mode).await
                })
            })
            .map_err(to_py)?;
        json(&serde_json::json!({"changes": plan.changes, "warnings": plan.warnings, "text": plan.to_string()}))
    }

    /// Re-reads the registry now instead of after the cache ttl.
    fn refresh_registry(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store()?;
        py.detach(|| block_on(store.registry().refresh())).map_err(to_py)?;
        Ok(())
    }

    /// Registry objects of one kind (`entity`, `data_source`, `feature_view`, `feature_service`,
    /// `request_source`, `on_demand_feature_view`) as JSON.
    fn list(&self, py: Python<'_>, kind: &str) -> PyResult<String> {
        let store = self.store()?;
        let text = py.detach(|| {
            block_on(async {
                Ok::<_, feature_store::Error>(match kind {
                    "entity" => serde_json::to_string(&store.list_entities().await?),
                    "data_source" => serde_json::to_string(&store.list_data_sources().await?),
                    "feature_view" => serde_json::to_string(&store.list_feature_views().await?),
                    "feature_service" => serde_json::to_string(&store.list_feature_services().await?),
                    "request_source" => serde_json::to_string(&store.list_request_sources().await?),
                    "on_demand_feature_view" => serde_json::to_string(&store.list_on_demand_feature_views().await?),
                    other => {
                        return Err(feature_store::Error::InvalidArgument(format!(
                            "unknown object kind \"{other}\"; use entity, data_source, feature_view, \
                             feature_service, request_source or on_demand_feature_view"
                        )));
                    }
                })
            })
        });
        text.map_err(to_py)?.map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Every object named `name` (with view state for feature views) as JSON.
    fn describe(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        let store = self.store()?;
        let found = py.detach(|| block_on(store.describe(name))).map_err(to_py)?;
        json(&found)
    }

    /// Output column names of a feature list; raises what retrieval would for unknown names.
    #[pyo3(signature = (features=None, service=None, full_feature_names=false))]
    fn resolve(
        &self,
        py: Python<'_>,
        features: Option<Vec<String>>,
        service: Option<String>,
        full_feature_names: bool,
    ) -> PyResult<Vec<String>> {
        let features = features_arg(features, service)?;
        let store = self.store()?;
        let views = py.detach(|| block_on(store.resolve_views(&features, full_feature_names))).map_err(to_py)?;
        Ok(views.into_iter().flat_map(|v| v.output_names).collect())
    }

    /// Point-in-time correct retrieval; exactly one of `table`, `path`, `sql` gives the entity rows.
    #[pyo3(signature = (features=None, service=None, full_feature_names=false, timestamp_column="event_timestamp".to_owned(), table=None, path=None, sql=None))]
    #[allow(clippy::too_many_arguments)]
    fn historical(
        &self,
        py: Python<'_>,
        features: Option<Vec<String>>,
        service: Option<String>,
        full_feature_names: bool,
        timestamp_column: String,
        table: Option<Bound<'_, PyAny>>,
        path: Option<String>,
        sql: Option<String>,
    ) -> PyResult<HistoricalResult> {
        let (features, input, options) =
            retrieval_args(py, features, service, full_feature_names, timestamp_column, table, path, sql)?;
        let store = self.store()?;
        let stream =
            py.detach(|| block_on(store.get_historical_features(input, &features, &options))).map_err(to_py)?;
        Ok(HistoricalResult::new(stream))
    }

    /// [`Self::historical`] written as a folder of Parquet files (where the
    /// join runs: on a cluster, by the executors) plus `_manifest.json`;
    /// returns the manifest as JSON.
    #[pyo3(signature = (folder, rows_per_file=None, features=None, service=None, full_feature_names=false, timestamp_column="event_timestamp".to_owned(), table=None, path=None, sql=None))]
    #[allow(clippy::too_many_arguments)]
    fn write_historical_folder(
        &self,
        py: Python<'_>,
        folder: String,
        rows_per_file: Option<u64>,
        features: Option<Vec<String>>,
        service: Option<String>,
        full_feature_names: bool,
        timestamp_column: String,
        table: Option<Bound<'_, PyAny>>,
        path: Option<String>,
        sql: Option<String>,
    ) -> PyResult<String> {
        let (features, input, options) =
            retrieval_args(py, features, service, full_feature_names, timestamp_column, table, path, sql)?;
        let store = self.store()?;
        let written = py
            .detach(|| block_on(store.write_historical_features(input, &features, &options, &folder, rows_per_file)))
            .map_err(to_py)?;
        json(&written)
    }

    /// Retrieval saved as dataset `name` (output Parquet at `output`, default
    /// in the dataset's folder); returns the manifest as JSON.
    #[pyo3(signature = (name, features=None, service=None, full_feature_names=false, timestamp_column="event_timestamp".to_owned(), table=None, path=None, sql=None, output=None))]
    #[allow(clippy::too_many_arguments)]
    fn save_dataset(
        &self,
        py: Python<'_>,
        name: &str,
        features: Option<Vec<String>>,
        service: Option<String>,
        full_feature_names: bool,
        timestamp_column: String,
        table: Option<Bound<'_, PyAny>>,
        path: Option<String>,
        sql: Option<String>,
        output: Option<String>,
    ) -> PyResult<String> {
        let (features, input, options) =
            retrieval_args(py, features, service, full_feature_names, timestamp_column, table, path, sql)?;
        let store = self.store()?;
        let manifest = py
            .detach(|| block_on(store.save_dataset(name, input, &features, &options, output.as_deref())))
            .map_err(to_py)?;
        json(&manifest)
    }

    /// Refuses an output path inside a registered data source.
    fn check_output(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        let store = self.store()?;
        py.detach(|| block_on(store.check_output_outside_sources(path))).map_err(to_py)
    }

    /// The stored rows of dataset `name`.
    fn read_dataset(&self, py: Python<'_>, name: &str) -> PyResult<HistoricalResult> {
        let store = self.store()?;
        let stream = py.detach(|| block_on(store.read_dataset(name))).map_err(to_py)?;
        Ok(HistoricalResult::new(stream))
    }

    /// Registry entries of every saved dataset, as JSON.
    fn list_datasets(&self, py: Python<'_>) -> PyResult<String> {
        let store = self.store()?;
        json(&py.detach(|| block_on(store.list_datasets())).map_err(to_py)?)
    }

    /// Deletes dataset `name` (registry entry and its folder's files); what was deleted and kept, as JSON.
    fn delete_dataset(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        let store = self.store()?;
        json(&py.detach(|| block_on(store.delete_dataset(name))).map_err(to_py)?)
    }

    /// The manifest of dataset `name`, as JSON.
    fn get_dataset(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        let store = self.store()?;
        json(&py.detach(|| block_on(store.get_dataset(name))).map_err(to_py)?)
    }

    /// Verification of dataset `name` against the present, as JSON (with `identical`).
    fn verify_dataset(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        let store = self.store()?;
        let v = py.detach(|| block_on(store.verify_dataset(name))).map_err(to_py)?;
        let mut value = serde_json::to_value(&v).map_err(|e| PyValueError::new_err(e.to_string()))?;
        value["identical"] = serde_json::Value::Bool(v.identical());
        value["text"] = serde_json::Value::String(v.to_string());
        json(&value)
    }

    /// A reference profile of `view` over `[start, end]` (µs), stored when `save`; as JSON.
    #[pyo3(signature = (view, start_us, end_us, save=true))]
    fn profile(&self, py: Python<'_>, view: &str, start_us: Option<i64>, end_us: i64, save: bool) -> PyResult<String> {
        let start = start_us.map(|us| micros(us, "start_date")).transpose()?;
        let end = micros(end_us, "end_date")?;
        let store = self.store()?;
        json(&py.detach(|| block_on(store.profile(view, start, end, save))).map_err(to_py)?)
    }

    /// Materializes `[start, end]` (µs since the epoch, both inclusive); returns the report as JSON.
    #[pyo3(signature = (start_us, end_us, views=None))]
    fn materialize(&self, py: Python<'_>, start_us: i64, end_us: i64, views: Option<Vec<String>>) -> PyResult<String> {
        let (start, end) = (micros(start_us, "start_date")?, micros(end_us, "end_date")?);
        let store = self.store()?;
        let options = materialize_options(views);
        let report = py.detach(|| block_on(store.materialize(start, end, &options))).map_err(to_py)?;
        json(&report)
    }

    /// Materializes each view from its watermark to `end`; returns the report as JSON.
    #[pyo3(signature = (end_us, views=None))]
    fn materialize_incremental(&self, py: Python<'_>, end_us: i64, views: Option<Vec<String>>) -> PyResult<String> {
        let end = micros(end_us, "end_date")?;
        let store = self.store()?;
        let options = materialize_options(views);
        let report = py.detach(|| block_on(store.materialize_incremental(end, &options))).map_err(to_py)?;
        json(&report)
    }

    /// Data-quality reports of views over `[start, end]` (µs; `None` start is all history), as JSON.
    #[pyo3(signature = (views, start_us, end_us))]
    fn validate(
        &self,
        py: Python<'_>,
        views: Option<Vec<String>>,
        start_us: Option<i64>,
        end_us: i64,
    ) -> PyResult<String> {
        let start = start_us.map(|us| micros(us, "start_date")).transpose()?;
        let end = micros(end_us, "end_date")?;
        let store = self.store()?;
        let reports = py.detach(|| block_on(store.validate(views.as_deref(), start, end))).map_err(to_py)?;
        json(&reports)
    }

    /// Validates and writes rows of one view; returns (written, skipped as older).
    #[pyo3(signature = (view, data, to="online"))]
    fn push(&self, py: Python<'_>, view: &str, data: &Bound<'_, PyAny>, to: &str) -> PyResult<(u64, u64)> {
        let mode = match to.to_ascii_lowercase().as_str() {
            "online" => PushMode::Online,
            "offline" => PushMode::Offline,
            "online_and_offline" => PushMode::OnlineAndOffline,
            other => {
                return Err(py_error(
                    "InvalidArgumentError",
                    format!("push: unknown mode \"{other}\"; use online, offline or online_and_offline"),
                ));
            }
        };
        let batch = read_arrow_batch(py, data, "push")?;
        let store = self.store()?;
        let stats = py.detach(|| block_on(store.push(view, &batch, mode))).map_err(to_py)?;
        Ok((stats.written, stats.skipped_older))
    }

    /// Starts the feature server (HTTP and gRPC) over this store on the
    /// process runtime and returns its handle; `feature_server:` settings of
    /// the config apply, the arguments override them.
    #[pyo3(signature = (host=None, port=None, grpc_port=None, tls_cert=None, tls_key=None, api_keys=None, allow_unauthenticated=false))]
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        py: Python<'_>,
        host: Option<String>,
        port: Option<u16>,
        grpc_port: Option<u16>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        api_keys: Option<Vec<String>>,
        allow_unauthenticated: bool,
    ) -> PyResult<ServerHandle> {
        use feature_store_server::{Server, ServerConfig};
        let store = self.store()?;
        let server_error = |e: feature_store_server::Error| match e {
            feature_store_server::Error::Store(e) => to_py(e),
            other => PyValueError::new_err(other.to_string()),
        };
        let mut b = ServerConfig::from_repo(store.config()).map_err(server_error)?.keys_from_env(true);
        if let Some(h) = host {
            b = b.host(h);
        }
        if let Some(p) = port {
            b = b.port(p);
        }
        if let Some(p) = grpc_port {
            b = b.grpc_port(p);
        }
        if let Some(c) = tls_cert {
            b = b.tls_cert(c);
        }
        if let Some(k) = tls_key {
            b = b.tls_key(k);
        }
        for k in api_keys.unwrap_or_default() {
            b = b.api_key(k);
        }
        let config = b.allow_unauthenticated(allow_unauthenticated).build().map_err(server_error)?;
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let server = py.detach(|| block_on(Server::bind(Arc::new(store), config))).map_err(server_error)?;
        let addr = server.local_addr();
        let grpc_port = server.grpc_local_addr().map(|a| a.port());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = runtime().spawn(server.run(async {
            let _ = rx.await;
        }));
        Ok(ServerHandle {
            url: format!("{scheme}://{addr}"),
            port: addr.port(),
            grpc_port,
            running: Mutex::new(Some((tx, task))),
        })
    }

    /// Starts ingesting the stream sources (of `views`, or all) in the
    /// background; the handle stops it and returns each source's totals.
    #[pyo3(signature = (views=None, consumer=None, stop_when_idle_s=None, offline_flush_interval_s=None, offline_log=true, batch_size=None, offline_compact_interval_s=Some(300.0)))]
    #[allow(clippy::too_many_arguments)]
    fn ingest(
        &self,
        views: Option<Vec<String>>,
        consumer: Option<String>,
        stop_when_idle_s: Option<f64>,
        offline_flush_interval_s: Option<f64>,
        offline_log: bool,
        batch_size: Option<usize>,
        offline_compact_interval_s: Option<f64>,
    ) -> PyResult<IngestHandle> {
        use feature_store::ingest::IngestOptions;
        let store = self.store()?;
        let seconds = |s: f64, name: &str| {
            if s.is_finite() && s > 0.0 {
                Ok(std::time::Duration::from_secs_f64(s))
            } else {
                Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, not {s}")))
            }
        };
        let mut options = IngestOptions::default().with_offline_log(offline_log);
        if let Some(v) = views {
            options = options.with_views(v);
        }
        if let Some(c) = consumer {
            options = options.with_consumer(c);
        }
        if let Some(s) = stop_when_idle_s {
            options = options.with_stop_when_idle(seconds(s, "stop_when_idle")?);
        }
        if let Some(s) = offline_flush_interval_s {
            options = options.with_offline_flush_interval(seconds(s, "offline_flush_interval")?);
        }
        if let Some(n) = batch_size {
            if n == 0 {
                return Err(PyValueError::new_err("batch_size must be at least 1"));
            }
            options.max_batch = n;
        }
        options.offline_compact_interval =
            offline_compact_interval_s.map(|s| seconds(s, "offline_compact_interval")).transpose()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = runtime().spawn(async move {
            store
                .ingest(&feature_store::StreamConsumers, options, async {
                    let _ = rx.await;
                })
                .await
        });
        Ok(IngestHandle { running: Mutex::new(Some((tx, task))) })
    }

    /// Latest values for entity rows (dict of lists, list of dicts or Arrow).
    #[pyo3(signature = (entity_rows, features=None, service=None, full_feature_names=false))]
    fn get_online_features(
        &self,
        py: Python<'_>,
        entity_rows: &Bound<'_, PyAny>,
        features: Option<Vec<String>>,
        service: Option<String>,
        full_feature_names: bool,
    ) -> PyResult<OnlineResult> {
        let features = features_arg(features, service)?;
        let batch = convert::entity_rows(py, entity_rows)?;
        let store = self.store()?;
        let options = OnlineOptions::default().with_full_feature_names(full_feature_names);
        let (response, store_seconds) = py.detach(|| {
            let started = std::time::Instant::now();
            let response = block_on(store.get_online_features(&features, &batch, &options));
            (response, started.elapsed().as_secs_f64())
        });
        Ok(OnlineResult { response: response.map_err(to_py)?, store_seconds })
    }
}

type Running = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), feature_store_server::Error>>);

/// A feature server started by `Store.serve`.
#[pyclass(module = "feature_store._internal", name = "ServerHandle", frozen)]
struct ServerHandle {
    url: String,
    port: u16,
    grpc_port: Option<u16>,
    running: Mutex<Option<Running>>,
}

#[pymethods]
impl ServerHandle {
    /// `http://host:port` (https with TLS).
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP (and gRPC) port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// The gRPC-only port, when one was asked for.
    #[getter]
    fn grpc_port(&self) -> Option<u16> {
        self.grpc_port
    }

    /// True until `stop` (or a failure) ends the server.
    fn running(&self) -> bool {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|(_, t)| !t.is_finished())
    }

    /// Stops accepting, finishes requests in flight (within the shutdown
    /// timeout) and returns; a second call does nothing.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let Some((tx, task)) = self.running.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Ok(());
        };
        let _ = tx.send(());
        match py.detach(|| block_on(task)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PyRuntimeError::new_err(e.to_string())),
            Err(e) => Err(PyRuntimeError::new_err(format!("the server task failed: {e}"))),
        }
    }
}

type Ingesting = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<feature_store::Result<Vec<feature_store::ingest::IngestStats>>>,
);

/// Stream ingestion started by `Store.ingest`.
#[pyclass(module = "feature_store._internal", name = "IngestHandle", frozen)]
struct IngestHandle {
    running: Mutex<Option<Ingesting>>,
}

#[pymethods]
impl IngestHandle {
    /// True until `stop`, idleness (`stop_when_idle`) or a failure ends it.
    fn running(&self) -> bool {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|(_, t)| !t.is_finished())
    }

    /// Stops (buffered events are logged and committed first) and returns
    /// each source's totals as JSON; raises what stopped ingestion, if it failed.
    fn stop(&self, py: Python<'_>) -> PyResult<String> {
        let Some((tx, task)) = self.running.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return Err(PyRuntimeError::new_err("ingestion was already stopped"));
        };
        let _ = tx.send(());
        match py.detach(|| block_on(task)) {
            Ok(Ok(stats)) => json(&stats),
            Ok(Err(e)) => Err(to_py(e)),
            Err(e) => Err(PyRuntimeError::new_err(format!("the ingest task failed: {e}"))),
        }
    }
}

/// A retrieval call's arguments: the features, the entity rows, the options.
#[allow(clippy::too_many_arguments)] // the Python keyword arguments, as given
fn retrieval_args(
    py: Python<'_>,
    features: Option<Vec<String>>,
    service: Option<String>,
    full_feature_names: bool,
    timestamp_column: String,
    table: Option<Bound<'_, PyAny>>,
    path: Option<String>,
    sql: Option<String>,
) -> PyResult<(Features, EntityInput, HistoricalOptions)> {
    let features = features_arg(features, service)?;
    let input = entity_input(py, table, path, sql)?;
    let options = HistoricalOptions::default()
        .with_full_feature_names(full_feature_names)
        .with_timestamp_column(timestamp_column);
    Ok((features, input, options))
}

/// Entity rows from exactly one of an Arrow exporter, a path, or SQL.
fn entity_input(
    py: Python<'_>,
    table: Option<Bound<'_, PyAny>>,
    path: Option<String>,
    sql: Option<String>,
) -> PyResult<EntityInput> {
    Ok(match (table, path, sql) {
        (Some(t), None, None) => {
            let (schema, batches) = read_arrow(py, &t, "entity_df")?;
            EntityInput::Batches { schema, batches }
        }
        (None, Some(p), None) => EntityInput::Path(p),
        (None, None, Some(q)) => EntityInput::Sql(q),
        _ => return Err(PyValueError::new_err("give the entity rows as exactly one of table, path or sql")),
    })
}

fn materialize_options(views: Option<Vec<String>>) -> MaterializeOptions {
    let options = MaterializeOptions::default();
    match views {
        Some(v) => options.with_views(v),
        None => options,
    }
}

/// The stream of a historical retrieval, consumed once.
#[pyclass(module = "feature_store._internal", name = "HistoricalResult", frozen)]
struct HistoricalResult {
    schema: SchemaRef,
    stream: Mutex<Option<BatchStream>>,
    pid: u32,
}

impl HistoricalResult {
    fn new(stream: BatchStream) -> Self {
        Self { schema: stream.schema(), stream: Mutex::new(Some(stream)), pid: std::process::id() }
    }

    fn take(&self) -> PyResult<BatchStream> {
        if self.pid != std::process::id() {
            return Err(py_error(
                "FeatureStoreError",
                "this retrieval was started in another process (before a fork); call get_historical_features again"
                    .into(),
            ));
        }
        self.stream.lock().unwrap_or_else(PoisonError::into_inner).take().ok_or_else(|| {
            py_error("FeatureStoreError", "this retrieval's result was already read; run the retrieval again".into())
        })
    }
}

/// Pulls a [`BatchStream`] on the process runtime, for pyarrow's reader.
struct BlockingReader {
    stream: BatchStream,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Iterator for BlockingReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        // pyarrow reads with the GIL released, but not every consumer of the
        // stream does; a Python function in an on-demand feature needs the
        // GIL on whichever runtime thread evaluates it, so never block holding it.
        let (runtime, stream) = (&self.runtime, &mut self.stream);
        let next = Python::attach(|py| py.detach(|| runtime.block_on(stream.next())))?;
        Some(next.map_err(|e| ArrowError::ExternalError(Box::new(e))))
    }
}

impl RecordBatchReader for BlockingReader {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }
}

#[pymethods]
impl HistoricalResult {
    /// The output schema as a `pyarrow.Schema`.
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.schema.as_ref().to_pyarrow(py)
    }

    /// A streaming `pyarrow.RecordBatchReader`; batches are computed as they are read.
    fn to_reader<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let reader: Box<dyn RecordBatchReader + Send> =
            Box::new(BlockingReader { stream: self.take()?, runtime: runtime() });
        reader.into_pyarrow(py)
    }

    /// Runs the retrieval to the end (GIL released) and returns a `pyarrow.Table`.
    fn to_table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = self.take()?;
        let schema = stream.schema();
        let batches = py.detach(|| block_on(stream.collect())).map_err(to_py)?;
        arrow_pyarrow::Table::try_new(batches, schema)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
            .into_pyarrow(py)
    }

    /// Runs the retrieval to the end (GIL released) for a pandas DataFrame:
    /// the column names, a filled writable numpy array for each float column
    /// (`None` for the others) and a `pyarrow.Table` of the other columns.
    #[allow(clippy::type_complexity)]
    fn to_pandas_parts<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Vec<String>, Vec<Option<Bound<'py, PyAny>>>, Bound<'py, PyAny>)> {
        let stream = self.take()?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = py.detach(|| block_on(stream.collect())).map_err(to_py)?;
        let extension = pandas::extension_dtype_columns(&schema);
        let fast = |f: &arrow_schema::Field| pandas::is_float(f.data_type()) && !extension.contains(f.name());
        let rest: Vec<usize> = (0..schema.fields().len()).filter(|&i| !fast(schema.field(i))).collect();
        let rest_schema = Arc::new(schema.project(&rest).map_err(|e| PyRuntimeError::new_err(e.to_string()))?);
        let rest_batches = batches
            .iter()
            .map(|b| b.project(&rest))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let floats = pandas::float_columns(py, &schema, batches, &extension)?;
        let table = arrow_pyarrow::Table::try_new(rest_batches, rest_schema)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
            .into_pyarrow(py)?;
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok((names, floats, table))
    }
}

/// Online features for a list of entity rows, with statuses and event times.
#[pyclass(module = "feature_store._internal", name = "OnlineResponse", frozen)]
struct OnlineResult {
    response: OnlineResponse,
    /// Time inside the Rust store call (GIL released), so the Python
    /// layer's own cost of a request can be told apart in the same request.
    store_seconds: f64,
}

impl OnlineResult {
    fn feature_index(&self) -> std::ops::Range<usize> {
        self.response.key_column_count()..self.response.values().num_columns()
    }
}

#[pymethods]
impl OnlineResult {
    /// Seconds the Rust store call took for this request (lookup and
    /// decoding, without converting the entity rows or this response).
    #[getter]
    fn store_seconds(&self) -> f64 {
        self.store_seconds
    }

    fn __len__(&self) -> usize {
        self.response.num_rows()
    }

    /// Column names: entity keys, then features.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.response.column_names().into_iter().map(str::to_owned).collect()
    }

    /// Feature column names.
    #[getter]
    fn feature_names(&self) -> Vec<String> {
        self.response.feature_names().into_iter().map(str::to_owned).collect()
    }

    /// `{column: [value per row]}`, keys first; withheld and missing values are `None`.
    /// With `include_event_timestamps`, each feature also gets `{feature}__ts`:
    /// the stored row's event time in whole seconds since the epoch (Feast's
    /// shape), `None` where nothing is stored.
    #[pyo3(signature = (include_event_timestamps=false))]
    fn to_dict<'py>(&self, py: Python<'py>, include_event_timestamps: bool) -> PyResult<Bound<'py, PyDict>> {
        let values = self.response.values();
        let keys = self.response.key_column_count();
        let out = PyDict::new(py);
        for (c, field) in values.schema_ref().fields().iter().enumerate() {
            let list = convert::column_to_list(py, values.column(c).as_ref())?;
            out.set_item(PyString::new(py, field.name()), list)?;
            if include_event_timestamps && c >= keys {
                let secs: Vec<Option<i64>> = self
                    .response
                    .feature_event_micros(c - keys)
                    .iter()
                    .map(|t| t.map(|us| us.div_euclid(1_000_000)))
                    .collect();
                out.set_item(format!("{}__ts", field.name()), PyList::new(py, secs)?)?;
            }
        }
        Ok(out)
    }

    /// `{feature: [status per row]}` with `PRESENT`, `NULL_VALUE`, `NOT_FOUND`, `OUTSIDE_MAX_AGE`.
    fn statuses<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        let names = self.response.column_names();
        for (i, c) in self.feature_index().enumerate() {
            let items: Vec<&str> = self.response.feature_statuses(i).iter().map(|s| s.as_str()).collect();
            out.set_item(names[c], PyList::new(py, items)?)?;
        }
        Ok(out)
    }

    /// `{feature: [event time of the stored row, or None]}` as UTC datetimes.
    fn event_timestamps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        let names = self.response.column_names();
        for (i, c) in self.feature_index().enumerate() {
            let items: Vec<Option<DateTime<Utc>>> = self
                .response
                .feature_event_micros(i)
                .iter()
                .map(|t| t.and_then(DateTime::from_timestamp_micros))
                .collect();
            out.set_item(names[c], PyList::new(py, items)?)?;
        }
        Ok(out)
    }

    /// Values as a `pyarrow.Table` (keys, then features), without copying.
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        table(py, self.response.values().clone())
    }

    /// Statuses as a `pyarrow.Table` of string columns, one per response column.
    fn statuses_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        table(py, self.response.statuses())
    }

    /// Event times as a `pyarrow.Table`, one timestamp column per response column.
    fn event_timestamps_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        table(py, self.response.event_timestamps())
    }

    /// Values as a pandas DataFrame; `include_event_timestamps` adds `{feature}__ts` columns as in `to_dict`.
    #[pyo3(signature = (include_event_timestamps=false))]
    fn to_df<'py>(&self, py: Python<'py>, include_event_timestamps: bool) -> PyResult<Bound<'py, PyAny>> {
        if !include_event_timestamps {
            return self.to_arrow(py)?.call_method0("to_pandas");
        }
        let values = self.response.values();
        let keys = self.response.key_column_count();
        let mut fields: Vec<arrow_schema::FieldRef> = Vec::new();
        let mut columns: Vec<arrow_array::ArrayRef> = Vec::new();
        for (c, field) in values.schema_ref().fields().iter().enumerate() {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(values.column(c)));
            if c >= keys {
                let secs: arrow_array::Int64Array = self
                    .response
                    .feature_event_micros(c - keys)
                    .iter()
                    .map(|t| t.map(|us| us.div_euclid(1_000_000)))
                    .collect();
                fields.push(Arc::new(arrow_schema::Field::new(
                    format!("{}__ts", field.name()),
                    arrow_schema::DataType::Int64,
                    true,
                )));
                columns.push(Arc::new(secs));
            }
        }
        let batch = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        table(py, batch)?.call_method0("to_pandas")
    }

    /// The JSON body Feast's feature server returns from `/get-online-features`.
    fn to_json(&self) -> PyResult<String> {
        json(&self.response.to_feast_json())
    }

    fn __repr__(&self) -> String {
        format!("OnlineResponse(rows={}, features={:?})", self.response.num_rows(), self.response.feature_names())
    }
}

fn table(py: Python<'_>, batch: RecordBatch) -> PyResult<Bound<'_, PyAny>> {
    arrow_pyarrow::Table::try_new(vec![batch.clone()], batch.schema())
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
        .into_pyarrow(py)
}

/// The native module behind `feature_store`.
/// The library's scalar value types as `(registry name, Feast name)` pairs,
/// read from its one type table, so `feature_store.types` cannot drift from it.
#[pyfunction]
fn scalar_types() -> Vec<(&'static str, &'static str)> {
    feature_store::SCALAR_TYPES.iter().map(|t| (t.name, t.feast_name)).collect()
}

/// Run by `os.register_at_fork(before=...)`: waits (at most `limit_ms`)
/// until the runtime's threads are still (see `runtime::before_fork`);
/// returns whether they were.
#[pyfunction]
#[pyo3(signature = (limit_ms = 200))]
fn before_fork(py: Python<'_>, limit_ms: u64) -> bool {
    py.detach(|| crate::runtime::before_fork(std::time::Duration::from_millis(limit_ms)))
}

#[pymodule]
fn _internal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(scalar_types, m)?)?;
    m.add_function(wrap_pyfunction!(udf::register_udf, m)?)?;
    m.add_function(wrap_pyfunction!(before_fork, m)?)?;
    m.add_class::<Store>()?;
    m.add_class::<ServerHandle>()?;
    m.add_class::<IngestHandle>()?;
    m.add_class::<HistoricalResult>()?;
    m.add_class::<OnlineResult>()?;
    m.add_class::<pandas::FloatValues>()?;
    Ok(())
}
