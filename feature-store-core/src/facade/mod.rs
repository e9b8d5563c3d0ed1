//! The [`FeatureStore`] facade: one handle owning the config, the registry and
//! the stores, shared by the CLI, the Python package and Rust services.
//!
//! Every public method of the facade is in this folder, grouped by
//! capability: definitions and the registry here, then [`serving`] (online
//! reads), [`materialize`] (materialization and push), [`quality`]
//! (validation and profiles) and [`datasets`] (saved training sets).
//! Modules below the facade never import it.

mod datasets;
mod ingest;
pub(crate) mod materialize;
pub(crate) mod on_demand;
mod quality;
pub(crate) mod serving;
mod tiles;

use std::sync::Arc;

use serde::Serialize;

use crate::historical::{BatchStream, EntityInput, HistoricalOptions, HistoricalRequest, ViewRequest};
use crate::model::{
    DataSource, Entity, FeatureRef, FeatureSelection, FeatureService, FeatureView, OnDemandFeatureView, RequestSource,
};
use crate::offline::OfflineStore;
use crate::on_demand::ExpressionEngine;
use crate::online::OnlineStore;
use crate::registry::{
    ApplyMode, ApplyOutcome, ObjectKind, Plan, Record, Registry, RegistryDocument, RegistryStore, ViewState,
};
use crate::repo::{Definitions, RepoConfig, load_definitions};
use crate::{Error, Result};
use serving::ServedView;

/// An opened feature store.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RepoConfig,
    registry: Registry,
    offline: Option<Arc<dyn OfflineStore>>,
    online: Option<Arc<dyn OnlineStore>>,
    /// Computes on-demand features; without one, on-demand views are refused.
    engine: Option<Arc<dyn ExpressionEngine>>,
    /// Resolutions of feature lists, valid for one registry version; saves
    /// re-resolving (and re-cloning definitions) on every online request.
    resolved: std::sync::Mutex<ResolvedCache>,
    /// On-demand views compiled for one registry version.
    compiled: std::sync::Mutex<on_demand::CompiledCache>,
}

#[derive(Debug, Default)]
struct ResolvedCache {
    /// Registry version and expression engine generation.
    key: (u64, u64),
    /// Indexed by `full_feature_names`, then the features (looked up by reference).
    entries: [std::collections::HashMap<Features, Arc<Served>>; 2],
}

/// A feature list resolved for online reads.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) views: Vec<ServedView>,
    pub(crate) on_demand: Vec<crate::on_demand::OnDemandRequest>,
    /// Join keys of the on-demand views' source views: accepted (and
    /// returned) in entity rows even when no requested feature reads them.
    pub(crate) source_keys: Vec<String>,
    /// Request fields the on-demand features read, each once.
    pub(crate) request_fields: Vec<String>,
    /// Every field of the requested on-demand views' request sources:
    /// accepted (and not returned) in entity rows even when no requested
    /// feature reads it, as a client sends one request for any feature.
    pub(crate) declared_request_fields: Vec<String>,
    /// Per on-demand request and input, the input's position among the
    /// decoded feature columns (retrieved inputs only).
    pub(crate) positions: Vec<Vec<Option<usize>>>,
    /// The feature view (plain or on-demand) of each response feature column, in order.
    pub(crate) column_views: Arc<[Arc<str>]>,
}

/// On-demand output names clash neither with each other nor with retrieved features.
fn check_on_demand_names(resolution: &on_demand::Resolution) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for v in &resolution.views {
        for (f, o) in v.features.iter().zip(&v.output_names) {
            seen.insert(o, format!("{}:{f}", v.view.name));
        }
    }
    for r in &resolution.on_demand {
        for (&f, o) in r.features.iter().zip(&r.output_names) {
            let this = format!("{}:{}", r.view.name, r.compiled.features[f].name);
            if let Some(first) = seen.insert(o, this.clone()) {
                return Err(Error::InvalidArgument(format!(
                    "output column \"{o}\" would come from both {first} and {this}; use full feature names \
                     (view__feature) or drop one"
                )));
            }
        }
    }
    Ok(())
}

/// A registry object found by [`FeatureStore::describe`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Described {
    /// An entity.
    Entity(Record<Entity>),
    /// A data source.
    DataSource(Record<DataSource>),
    /// A stream source.
    StreamSource(Record<crate::model::StreamSource>),
    /// A feature view and its materialization state.
    FeatureView {
        /// The stored view.
        #[serde(flatten)]
        record: Record<FeatureView>,
        /// Watermark, runs and reference profile (boxed: the profile is large).
        state: Box<ViewState>,
    },
    /// A feature service.
    FeatureService(Record<FeatureService>),
    /// A request source.
    RequestSource(Record<RequestSource>),
    /// An on-demand feature view.
    OnDemandFeatureView(Record<OnDemandFeatureView>),
}

impl Described {
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::Entity(_) => ObjectKind::Entity,
            Self::DataSource(_) => ObjectKind::DataSource,
            Self::StreamSource(_) => ObjectKind::StreamSource,
            Self::FeatureView { .. } => ObjectKind::FeatureView,
            Self::FeatureService(_) => ObjectKind::FeatureService,
            Self::RequestSource(_) => ObjectKind::RequestSource,
            Self::OnDemandFeatureView(_) => ObjectKind::OnDemandFeatureView,
        }
    }
}

/// Which features to retrieve: references (`view:feature` or whole `view`s) or a feature service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Features {
    /// Feature references, in output order.
    Refs(Vec<String>),
    /// The features of a feature service, in its order.
    Service(String),
}

impl Features {
    /// Feature references such as `["driver_stats:conv_rate", "customer_profile"]`.
    pub fn refs<S: Into<String>>(refs: impl IntoIterator<Item = S>) -> Self {
        Self::Refs(refs.into_iter().map(Into::into).collect())
    }

    /// A feature service by name.
    pub fn service(name: impl Into<String>) -> Self {
        Self::Service(name.into())
    }
}

/// Builds a [`FeatureStore`] from a config and backend instances.
///
/// Backends are passed in rather than looked up so that this crate needs no
/// backend dependencies; the `feature-store` crate maps config types to backends.
#[derive(Debug)]
pub struct FeatureStoreBuilder {
    config: RepoConfig,
    registry_store: Option<Arc<dyn RegistryStore>>,
    offline: Option<Arc<dyn OfflineStore>>,
    online: Option<Arc<dyn OnlineStore>>,
    engine: Option<Arc<dyn ExpressionEngine>>,
}

impl FeatureStoreBuilder {
    /// Sets the engine that compiles and evaluates on-demand features;
    /// without one, definitions with on-demand views are refused.
    pub fn with_expression_engine(mut self, engine: Arc<dyn ExpressionEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Sets the online store; without one, online reads, materialization and push are errors.
    pub fn with_online_store(mut self, store: Arc<dyn OnlineStore>) -> Self {
        self.online = Some(store);
        self
    }

    /// Sets where the registry document is stored.
    pub fn with_registry_store(mut self, store: Arc<dyn RegistryStore>) -> Self {
        self.registry_store = Some(store);
        self
    }

    /// Sets the offline store; without one, retrieval, `apply`'s checks
    /// against the data, materialization and validation are errors (an
    /// inference service that only reads online features needs none).
    pub fn with_offline_store(mut self, store: Arc<dyn OfflineStore>) -> Self {
        self.offline = Some(store);
        self
    }

    /// Checks that every part is present and builds the store.
    pub fn build(self) -> Result<FeatureStore> {
        let missing = |what: &str| Error::InvalidArgument(format!("FeatureStoreBuilder: no {what} was set"));
        let store = self.registry_store.ok_or_else(|| missing("registry store"))?;
        let offline = self.offline;
        let registry = Registry::new(store, self.config.registry.cache_ttl);
        Ok(FeatureStore {
            inner: Arc::new(Inner {
                config: self.config,
                registry,
                offline,
                online: self.online,
                engine: self.engine,
                resolved: Default::default(),
                compiled: Default::default(),
            }),
        })
    }
}

impl FeatureStore {
    /// Starts building a store for `config`.
    pub fn builder(config: RepoConfig) -> FeatureStoreBuilder {
        FeatureStoreBuilder { config, registry_store: None, offline: None, online: None, engine: None }
    }

    /// The configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.inner.config
    }

    /// The project every object belongs to.
    pub fn project(&self) -> &str {
        &self.inner.config.project
    }

    /// The registry handle.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The engine computing on-demand features, if this store has one.
    pub fn expression_engine(&self) -> Option<&Arc<dyn ExpressionEngine>> {
        self.inner.engine.as_ref()
    }

    /// The offline store, or an error saying none is available.
    pub fn offline_store(&self) -> Result<&Arc<dyn OfflineStore>> {
        self.inner.offline.as_ref().ok_or_else(|| Error::Config {
            location: "offline_store".into(),
            message: "no offline store is available: this build of feature-store has none (enable the cargo \
                      feature \"parquet\") or none was given to FeatureStoreBuilder"
                .into(),
        })
    }

    /// The offline store's statistics (for validation and profiles), or an
    /// error saying, for `what`, that it has none.
    pub(crate) fn statistics(&self, what: &str) -> Result<&dyn crate::offline::OfflineStatistics> {
        self.offline_store()?.statistics().ok_or_else(|| {
            Error::Unsupported(format!(
                "{what}: the configured offline store does not compute window statistics, which validation and \
                 profiles need; the Parquet offline store does"
            ))
        })
    }

    /// The offline store's writer (for offline pushes), or an error saying, for `what`, that it has none.
    pub(crate) fn offline_writer(&self, what: &str) -> Result<&dyn crate::offline::OfflineWriter> {
        self.offline_store()?.writer().ok_or_else(|| {
            Error::Unsupported(format!("{what}: the configured offline store cannot append pushed rows to its sources"))
        })
    }

    /// The offline store's dataset storage (for saved datasets), or an error
    /// saying, for `what`, that it has none.
    pub(crate) fn dataset_storage(&self, what: &str) -> Result<&dyn crate::offline::DatasetStorage> {
        self.offline_store()?.datasets().ok_or_else(|| {
            Error::Unsupported(format!(
                "{what}: the configured offline store cannot store saved datasets; the Parquet offline store can"
            ))
        })
    }

    /// The online store, or an error saying none is configured.
    pub fn online_store(&self) -> Result<&Arc<dyn OnlineStore>> {
        self.inner.online.as_ref().ok_or_else(|| Error::Config {
            location: "online_store".into(),
            message: "no online store is configured".into(),
        })
    }

    /// Reads the definition files of the repo folder.
    pub fn repo_definitions(&self) -> Result<Definitions> {
        load_definitions(&self.inner.config.repo_path)
    }

    /// What applying `defs` would change.
    pub async fn plan(&self, defs: &Definitions, mode: ApplyMode) -> Result<Plan> {
        let engine = self.inner.engine.as_deref();
        self.inner.registry.plan(self.project(), defs, mode, self.offline_store()?.as_ref(), engine).await
    }

    /// Validates and writes `defs` atomically, then clears the online data of
    /// removed views. Views with a breaking change keep serving; their
    /// watermarks were reset in the same write, so the next incremental run
    /// rewrites them (a value still in an old type reads as a clear error).
    pub async fn apply(&self, defs: &Definitions, mode: ApplyMode) -> Result<ApplyOutcome> {
        let engine = self.inner.engine.as_deref();
        let outcome =
            self.inner.registry.apply(self.project(), defs, mode, self.offline_store()?.as_ref(), engine).await?;
        self.clear_orphaned_online(&outcome).await?;
        Ok(outcome)
    }

    /// Clears the online tables of removed views (listed in the registry by
    /// the write that removed them) and unlists the cleared ones. A failure
    /// leaves them listed for the next apply; they are never read meanwhile,
    /// since a view created again under the same name gets a new table.
    async fn clear_orphaned_online(&self, outcome: &ApplyOutcome) -> Result<()> {
        let Some(online) = &self.inner.online else { return Ok(()) };
        let doc = self.document().await?;
        let orphaned = doc.project(self.project()).registry().orphaned_online.clone();
        if orphaned.is_empty() {
            return Ok(());
        }
        let mut cleared = Vec::new();
        let mut failed = None;
        for table in &orphaned {
            match online.drop_view(self.project(), table).await {
                Ok(()) => cleared.push(table.clone()),
                Err(e) => {
                    failed = Some((table.clone(), e));
                    break;
                }
            }
        }
        if !cleared.is_empty() {
            let project = self.project().to_owned();
            self.inner
                .registry
                .update(|doc| {
                    let Some(p) = doc.projects.get_mut(&project) else { return Ok(false) };
                    let before = p.orphaned_online.len();
                    p.orphaned_online.retain(|t| !cleared.contains(t));
                    Ok(p.orphaned_online.len() != before)
                })
                .await?;
        }
        match failed {
            None => Ok(()),
            Some((table, e)) => {
                let view = table.split('@').next().unwrap_or(&table).to_owned();
                let written = if outcome.written {
                    format!("registry version {} was written, but ", outcome.version)
                } else {
                    String::new()
                };
                Err(Error::Backend {
                    context: format!(
                        "{written}clearing the online data of removed feature view \"{view}\" failed; it is never \
                         served (a view created again under that name is stored apart), and the next \
                         `feature-store apply` clears it once the online store is reachable"
                    ),
                    source: Box::new(e),
                })
            }
        }
    }

    /// [`FeatureStore::resolve_views`] for online reads, remembered per registry version.
    pub(crate) async fn resolve_served(&self, features: &Features, full_feature_names: bool) -> Result<Arc<Served>> {
        let doc = self.document().await?;
        let slot = usize::from(full_feature_names);
        let key = (doc.version, self.inner.engine.as_ref().map_or(0, |e| e.generation()));
        {
            let cache = self.inner.resolved.lock().expect("poisoned");
            if cache.key == key
                && let Some(hit) = cache.entries[slot].get(features)
            {
                return Ok(Arc::clone(hit));
            }
        }
        let resolution = self.resolve_in(&doc, features, full_feature_names)?;
        let request_fields: Vec<String> = resolution.request_fields().into_iter().map(|(n, _)| n).collect();
        // Output names clash among themselves or never: checked once here.
        crate::historical::check_output_names(&[], &resolution.views)?;
        check_on_demand_names(&resolution)?;
        let project = doc.project(self.project());
        let views = resolution
            .views
            .into_iter()
            .map(|v| {
                let table = project.online_table(&v.view.name);
                ServedView::new(v, table)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut declared_request_fields: Vec<String> = Vec::new();
        for r in &resolution.on_demand {
            for (field, _) in r.inputs.request_fields() {
                if !declared_request_fields.iter().any(|f| f == field) {
                    declared_request_fields.push(field.to_owned());
                }
            }
        }
        let mut source_keys = Vec::new();
        for r in &resolution.on_demand {
            for s in &r.view.sources {
                if let Ok(v) = project.feature_view(s) {
                    for k in project.join_keys(v)? {
                        if !source_keys.contains(&k.name) {
                            source_keys.push(k.name);
                        }
                    }
                }
            }
        }
        let decoded: Vec<&String> = views.iter().flat_map(|v| v.request.output_names.iter()).collect();
        let positions = resolution
            .on_demand
            .iter()
            .map(|r| {
                (0..r.inputs.inputs.len())
                    .map(|i| {
                        let retrieved = matches!(r.inputs.inputs[i].source, crate::on_demand::InputSource::Feature(_));
                        let used = r.used_inputs.contains(&i);
                        (retrieved && used).then(|| decoded.iter().position(|n| **n == r.columns[i])).flatten()
                    })
                    .collect()
            })
            .collect();
        let mut column_views: Vec<Arc<str>> = Vec::new();
        for v in &views {
            let name: Arc<str> = Arc::from(v.request.view.name.as_str());
            for o in &v.request.output_names {
                if !on_demand::Resolution::is_hidden(o) {
                    column_views.push(Arc::clone(&name));
                }
            }
        }
        for r in &resolution.on_demand {
            let name: Arc<str> = Arc::from(r.view.name.as_str());
            column_views.extend(r.features.iter().map(|_| Arc::clone(&name)));
        }
        let served = Arc::new(Served {
            views,
            on_demand: resolution.on_demand,
            source_keys,
            request_fields,
            declared_request_fields,
            positions,
            column_views: column_views.into(),
        });
        let mut cache = self.inner.resolved.lock().expect("poisoned");
        if cache.key != key {
            cache.key = key;
            cache.entries.iter_mut().for_each(std::collections::HashMap::clear);
        }
        if cache.entries[slot].len() < 1024 {
            cache.entries[slot].insert(features.clone(), Arc::clone(&served));
        }
        Ok(served)
    }

    /// Resolves features against the registry into per-view requests; on-demand
    /// features contribute the inputs they read (under hidden output names).
    pub async fn resolve_views(&self, features: &Features, full_feature_names: bool) -> Result<Vec<ViewRequest>> {
        let doc = self.document().await?;
        Ok(self.resolve_in(&doc, features, full_feature_names)?.views)
    }

    pub(crate) async fn resolve(&self, features: &Features, full_feature_names: bool) -> Result<on_demand::Resolution> {
        let doc = self.document().await?;
        let resolution = self.resolve_in(&doc, features, full_feature_names)?;
        check_on_demand_names(&resolution)?;
        Ok(resolution)
    }

    fn resolve_in(
        &self,
        doc: &RegistryDocument,
        features: &Features,
        full_feature_names: bool,
    ) -> Result<on_demand::Resolution> {
        let project = doc.project(self.project());
        let selections: Vec<FeatureSelection> = match features {
            Features::Refs(refs) => {
                if refs.is_empty() {
                    return Err(Error::InvalidArgument("no features requested".into()));
                }
                refs.iter().map(|r| r.parse()).collect::<Result<_>>()?
            }
            Features::Service(name) => project.service_selections(name)?,
        };
        let on_demand_views = &project.registry().on_demand_feature_views;
        let (on_demand, plain): (Vec<FeatureSelection>, Vec<FeatureSelection>) =
            selections.into_iter().partition(|s| on_demand_views.contains_key(s.view()));
        let resolved = project.resolve(&plain).map_err(|e| match (e, features) {
            // "score" alone names a whole view: when no view has that name,
            // say which views have such a feature, or how references look.
            (Error::NotFound { kind, name, hint }, Features::Refs(refs))
                if kind == "feature view" && refs.contains(&name) =>
            {
                let owners: Vec<&str> = project
                    .registry()
                    .feature_views
                    .values()
                    .filter(|r| r.spec.feature(&name).is_some())
                    .map(|r| r.spec.name.as_str())
                    .chain(
                        on_demand_views
                            .values()
                            .filter(|r| r.spec.feature(&name).is_some())
                            .map(|r| r.spec.name.as_str()),
                    )
                    .collect();
                let hint = if owners.is_empty() {
                    let form = "a reference is \"view:feature\", or a view's name for all its features";
                    hint.map_or_else(|| form.to_owned(), |h| format!("{h}; {form}"))
                } else {
                    let quoted = |f: &dyn Fn(&str) -> String| owners.iter().map(|v| f(v)).collect::<Vec<_>>();
                    format!(
                        "\"{name}\" is a feature of {} {}: write {}",
                        if owners.len() == 1 { "view" } else { "views" },
                        quoted(&|v| format!("\"{v}\"")).join(" and "),
                        quoted(&|v| format!("\"{v}:{name}\"")).join(" or ")
                    )
                };
                Error::NotFound { kind, name, hint: Some(hint) }
            }
            (e, _) => e,
        })?;
        let mut views = Vec::new();
        for vf in resolved {
            let source = project.data_source(&vf.view.source)?.clone();
            let join_keys = project.join_keys(&vf.view)?;
            let output_names = vf
                .features
                .iter()
                .map(|f| FeatureRef::new(vf.view.name.clone(), f.clone()).output_name(full_feature_names))
                .collect();
            views.push(ViewRequest { view: vf.view, source, join_keys, features: vf.features, output_names });
        }
        let on_demand = if on_demand.is_empty() {
            Vec::new()
        } else {
            self.resolve_on_demand(doc.version, &project, &on_demand, full_feature_names, &mut views)?
        };
        Ok(on_demand::Resolution { views, on_demand })
    }

    /// Point-in-time correct training data: for every entity row, each
    /// requested feature as of the row's timestamp (see [`crate::historical`]).
    ///
    /// Returns a stream, so callers can write large results without holding them.
    pub async fn get_historical_features(
        &self,
        entities: EntityInput,
        features: &Features,
        options: &HistoricalOptions,
    ) -> Result<BatchStream> {
        let resolution = self.resolve(features, options.full_feature_names).await?;
        let sources = self.list_data_sources().await?.into_iter().map(|r| r.spec).collect();
        let request =
            HistoricalRequest::new(entities, resolution.views.clone(), options.timestamp_column.clone(), sources)
                .with_on_demand(resolution.projection());
        tracing::debug!(
            project = self.project(),
            views = ?request.views.iter().map(|v| v.view.name.as_str()).collect::<Vec<_>>(),
            on_demand = ?resolution.on_demand.iter().map(|v| v.view.name.as_str()).collect::<Vec<_>>(),
            entities = ?request.entities,
            "historical: retrieving"
        );
        self.offline_store()?.get_historical_features(request).await
    }

    /// [`Self::get_historical_features`] written as a folder of Parquet files
    /// where the rows are produced (on a cluster, by the executors, straight
    /// to the object store) plus `_manifest.json` listing the files in row
    /// order; see [`crate::offline::folder::FolderWriter`]. `folder` is a
    /// path or URL ending in `/`; files hold `rows_per_file` rows (default
    /// [`crate::offline::folder::DEFAULT_ROWS_PER_FILE`]).
    pub async fn write_historical_features(
        &self,
        entities: EntityInput,
        features: &Features,
        options: &HistoricalOptions,
        folder: &str,
        rows_per_file: Option<u64>,
    ) -> Result<crate::offline::folder::FolderOutput> {
        if !folder.ends_with('/') {
            return Err(Error::InvalidArgument(format!(
                "output folder \"{folder}\" must end with / (a file name ending in .parquet writes one file)"
            )));
        }
        if rows_per_file == Some(0) {
            return Err(Error::InvalidArgument("rows per file must be at least 1".into()));
        }
        let resolution = self.resolve(features, options.full_feature_names).await?;
        let offline = self.offline_store()?;
        let writer = offline.folder_writer().ok_or_else(|| {
            Error::Unsupported(format!(
                "the offline store {} cannot write folder outputs; write a .parquet file",
                self.config().offline_store.kind.as_deref().unwrap_or("file")
            ))
        })?;
        let sources = self.list_data_sources().await?.into_iter().map(|r| r.spec).collect();
        let projection = resolution.projection();
        let request = HistoricalRequest::new(entities, resolution.views, options.timestamp_column.clone(), sources)
            .with_on_demand(projection);
        writer
            .write_historical_folder(
                request,
                folder,
                rows_per_file.unwrap_or(crate::offline::folder::DEFAULT_ROWS_PER_FILE),
            )
            .await
    }

    /// The request [`Self::get_historical_features`] hands the offline store:
    /// features resolved against the registry, with every source of the
    /// project (for SQL entity queries). For running it another way, e.g.
    /// planning it to read the operators' metrics.
    pub async fn historical_request(
        &self,
        entities: EntityInput,
        features: &Features,
        options: &HistoricalOptions,
    ) -> Result<HistoricalRequest> {
        let resolution = self.resolve(features, options.full_feature_names).await?;
        let sources = self.list_data_sources().await?.into_iter().map(|r| r.spec).collect();
        let projection = resolution.projection();
        Ok(HistoricalRequest::new(entities, resolution.views, options.timestamp_column.clone(), sources)
            .with_on_demand(projection))
    }

    /// The latest registry document (cached for the configured ttl).
    pub async fn document(&self) -> Result<Arc<RegistryDocument>> {
        self.inner.registry.document().await
    }

    /// Entities of the project, by name.
    pub async fn list_entities(&self) -> Result<Vec<Record<Entity>>> {
        Ok(self.document().await?.project(self.project()).registry().entities.values().cloned().collect())
    }

    /// Data sources of the project, by name.
    pub async fn list_data_sources(&self) -> Result<Vec<Record<DataSource>>> {
        Ok(self.document().await?.project(self.project()).registry().data_sources.values().cloned().collect())
    }

    /// Feature views of the project, by name.
    pub async fn list_feature_views(&self) -> Result<Vec<Record<FeatureView>>> {
        Ok(self.document().await?.project(self.project()).registry().feature_views.values().cloned().collect())
    }

    /// Stream sources.
    pub async fn list_stream_sources(&self) -> Result<Vec<Record<crate::model::StreamSource>>> {
        Ok(self.document().await?.project(self.project()).registry().stream_sources.values().cloned().collect())
    }

    /// Request sources of the project, by name.
    pub async fn list_request_sources(&self) -> Result<Vec<Record<RequestSource>>> {
        Ok(self.document().await?.project(self.project()).registry().request_sources.values().cloned().collect())
    }

    /// On-demand feature views of the project, by name.
    pub async fn list_on_demand_feature_views(&self) -> Result<Vec<Record<OnDemandFeatureView>>> {
        Ok(self
            .document()
            .await?
            .project(self.project())
            .registry()
            .on_demand_feature_views
            .values()
            .cloned()
            .collect())
    }

    /// Feature services of the project, by name.
    pub async fn list_feature_services(&self) -> Result<Vec<Record<FeatureService>>> {
        Ok(self.document().await?.project(self.project()).registry().feature_services.values().cloned().collect())
    }

    /// The feature view named `name`.
    pub async fn get_feature_view(&self, name: &str) -> Result<FeatureView> {
        self.document().await?.project(self.project()).feature_view(name).cloned()
    }

    /// Every object named `name`, whatever its kind (names are unique per kind only).
    pub async fn describe(&self, name: &str) -> Result<Vec<Described>> {
        let doc = self.document().await?;
        let project = doc.project(self.project());
        let p = project.registry();
        let mut out = Vec::new();
        if let Some(r) = p.entities.get(name) {
            out.push(Described::Entity(r.clone()));
        }
        if let Some(r) = p.data_sources.get(name) {
            out.push(Described::DataSource(r.clone()));
        }
        if let Some(r) = p.stream_sources.get(name) {
            out.push(Described::StreamSource(r.clone()));
        }
        if let Some(r) = p.feature_views.get(name) {
            out.push(Described::FeatureView {
                record: r.clone(),
                state: Box::new(p.view_state.get(name).cloned().unwrap_or_default()),
            });
        }
        if let Some(r) = p.feature_services.get(name) {
            out.push(Described::FeatureService(r.clone()));
        }
        if let Some(r) = p.request_sources.get(name) {
            out.push(Described::RequestSource(r.clone()));
        }
        if let Some(r) = p.on_demand_feature_views.get(name) {
            out.push(Described::OnDemandFeatureView(r.clone()));
        }
        if out.is_empty() {
            let all = p
                .entities
                .keys()
                .chain(p.data_sources.keys())
                .chain(p.stream_sources.keys())
                .chain(p.feature_views.keys())
                .chain(p.feature_services.keys())
                .chain(p.request_sources.keys())
                .chain(p.on_demand_feature_views.keys());
            let mut close: Vec<String> =
                all.filter(|n| crate::registry::similar(n, name)).map(|n| format!("\"{n}\"")).collect();
            close.dedup();
            let hint = if !project.exists() {
                Some(format!(
                    "project \"{}\" has nothing applied; run `feature-store apply` (`store.apply()` in Python)",
                    self.project()
                ))
            } else if close.is_empty() {
                None
            } else {
                Some(format!("did you mean {}?", close.join(" or ")))
            };
            return Err(Error::NotFound { kind: "object", name: name.to_owned(), hint });
        }
        Ok(out)
    }
}
