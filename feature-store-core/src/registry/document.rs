//! The registry document: every project's objects, with timestamps and
//! per-view materialization state, and read accessors over it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::similar;
use crate::model::{
    DataSource, Entity, FeatureRef, FeatureSelection, FeatureService, FeatureView, OnDemandFeatureView, RequestSource,
    StreamSource,
};
use crate::{Error, Result};

/// Format of the document this version writes.
pub const FORMAT_VERSION: u32 = 1;

/// The whole registry, stored as one JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegistryDocument {
    /// Document format; readers refuse newer formats.
    pub format_version: u32,
    /// Increases by one on every write.
    pub version: u64,
    /// Time of the last write.
    pub updated_at: Option<DateTime<Utc>>,
    /// Objects by project.
    pub projects: BTreeMap<String, ProjectRegistry>,
    /// A field of the stored document this version does not know (its
    /// path), as a newer writer may add: reading works, writing is refused,
    /// since it would drop the field.
    #[serde(skip)]
    pub unknown_field: Option<String>,
}

impl Default for RegistryDocument {
    fn default() -> Self {
        Self {
            format_version: FORMAT_VERSION,
            version: 0,
            updated_at: None,
            projects: BTreeMap::new(),
            unknown_field: None,
        }
    }
}

/// A value the writer leaves out (`skip_serializing_if`): dropping it loses nothing.
fn is_default(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The path of the first object key of `stored` that `known` lacks.
fn first_unknown(stored: &serde_json::Value, known: &serde_json::Value, path: &mut String) -> bool {
    use serde_json::Value;
    match (stored, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let at = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match b.get(k) {
                    // A null or empty value the writer skips is no loss.
                    None if !is_default(v) => return true,
                    Some(w) if first_unknown(v, w, path) => return true,
                    _ => {}
                }
                path.truncate(at);
            }
            false
        }
        (Value::Array(a), Value::Array(b)) => a.iter().zip(b).enumerate().any(|(i, (v, w))| {
            let at = path.len();
            path.push_str(&format!("[{i}]"));
            let found = first_unknown(v, w, path);
            if !found {
                path.truncate(at);
            }
            found
        }),
        _ => false,
    }
}

/// A stored object with its creation and last-change times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record<T> {
    /// The object as applied (schemas inferred, join-key types resolved).
    pub spec: T,
    /// When the object was first applied.
    pub created_at: DateTime<Utc>,
    /// When the object last changed.
    pub updated_at: DateTime<Utc>,
    /// The registry version that created the object: a feature view's online
    /// data is stored under its name and generation ([`online_table`]), so a
    /// view removed and created again never serves what the old one left
    /// online, whatever failed in between. 0 for records written before
    /// generations existed (their data is under the plain name).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<T> Record<T> {
    pub(crate) fn new(spec: T, at: DateTime<Utc>, generation: u64) -> Self {
        Self { spec, created_at: at, updated_at: at, generation }
    }
}

/// Where the online store keeps the data of view `name` created at
/// `generation`: `name@generation` (the plain name for generation 0). View
/// names hold no `@`, so tables of two views never meet.
pub fn online_table(name: &str, generation: u64) -> String {
    if generation == 0 { name.to_owned() } else { format!("{name}@{generation}") }
}

/// Per-view state that later runs read and advance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ViewState {
    /// Event time up to which the view is materialized online (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<DateTime<Utc>>,
    /// When the watermark last advanced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_materialized_at: Option<DateTime<Utc>>,
    /// Newest event time written online by materialization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_event_ts: Option<DateTime<Utc>>,
    /// The latest materialization runs, oldest first (the last [`RUNS_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunRecord>,
    /// The reference profile drift rules compare with (`feature-store profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::offline::profile::Profile>,
    /// Stream ingestion into the view, as last recorded by `ingest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestState>,
    /// Event time from which an ingestion that did not write this view
    /// (`ingest --views` naming others) committed events of its stream
    /// source: online values miss them until a materialization covering
    /// this time succeeds, and ingestion does not move the watermark past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_gap: Option<DateTime<Utc>>,
}

/// What `ingest` last recorded about a view fed from a stream (every
/// flush interval, at least 5 s apart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IngestState {
    /// The stream source.
    pub source: String,
    /// When this was recorded.
    pub at: Option<DateTime<Utc>>,
    /// Records written online since that ingest process started.
    pub ingested: u64,
    /// Records sent to the dead letters since then.
    pub dead_lettered: u64,
    /// Messages not yet delivered to the group, per partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lag: Vec<(String, u64)>,
    /// Event time to visible online over the latest events: p50, p99, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_ms: Option<(f64, f64)>,
}

/// Materialization runs remembered per view.
pub const RUNS_KEPT: usize = 20;

/// One materialization run of one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunRecord {
    /// Shared by the views of one `materialize` call.
    pub run_id: String,
    /// When the view's run started.
    pub started_at: DateTime<Utc>,
    /// Window start (inclusive); `None` is all history.
    pub start: Option<DateTime<Utc>>,
    /// Window end (inclusive).
    pub end: DateTime<Utc>,
    /// Offline rows read.
    pub rows_read: u64,
    /// Entities written online.
    pub entities_written: u64,
    /// Validation outcome: `None` when the view has no rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_passed: Option<bool>,
    /// Rules that failed, as `rule feature`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_rules: Vec<String>,
    /// Wall time.
    pub seconds: f64,
    /// How it ended.
    pub outcome: RunOutcome,
    /// The error, for failed runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunOutcome {
    /// Written, watermark advanced.
    Succeeded,
    /// Validation failed: nothing written, watermark unchanged.
    ValidationFailed,
    /// An error stopped it (store unreachable, bad data); the watermark is unchanged.
    Failed,
    /// Nothing to do: an incremental run whose end is not after the view's
    /// watermark (reported, not recorded).
    UpToDate,
}

/// One project's objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProjectRegistry {
    /// Entities by name.
    #[serde(default)]
    pub entities: BTreeMap<String, Record<Entity>>,
    /// Data sources by name.
    #[serde(default)]
    pub data_sources: BTreeMap<String, Record<DataSource>>,
    /// Stream sources by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_sources: BTreeMap<String, Record<StreamSource>>,
    /// Feature views by name.
    #[serde(default)]
    pub feature_views: BTreeMap<String, Record<FeatureView>>,
    /// Feature services by name.
    #[serde(default)]
    pub feature_services: BTreeMap<String, Record<FeatureService>>,
    /// Request sources by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_sources: BTreeMap<String, Record<RequestSource>>,
    /// On-demand feature views by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub on_demand_feature_views: BTreeMap<String, Record<OnDemandFeatureView>>,
    /// Materialization state by view name.
    #[serde(default)]
    pub view_state: BTreeMap<String, ViewState>,
    /// Saved datasets by name (their manifests are stored beside their files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub datasets: BTreeMap<String, crate::dataset::DatasetRecord>,
    /// Online tables of removed views not yet cleared (the online store was
    /// unreachable): never read, cleared by the next `apply` that reaches the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphaned_online: Vec<String>,
}

impl RegistryDocument {
    /// Parses a stored document; `location` names it in errors.
    pub fn from_json(bytes: &[u8], location: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Head {
            format_version: u32,
        }
        let corrupt = |message: String| Error::CorruptRegistry { location: location.to_owned(), message };
        let head: Head = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if head.format_version > FORMAT_VERSION {
            return Err(corrupt(format!(
                "format_version {} is newer than this library supports ({FORMAT_VERSION}); upgrade feature-store",
                head.format_version
            )));
        }
        let stored: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let mut doc: Self = serde_json::from_value(stored.clone()).map_err(|e| corrupt(e.to_string()))?;
        let known = serde_json::to_value(&doc).map_err(|e| corrupt(e.to_string()))?;
        let mut path = String::new();
        if first_unknown(&stored, &known, &mut path) {
            doc.unknown_field = Some(path);
        }
        Ok(doc)
    }

    /// Serializes the document.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("registry document always serializes")
    }

    /// The named project's objects, empty if it has none.
    pub fn project(&self, name: &str) -> ProjectView<'_> {
        static EMPTY: std::sync::OnceLock<ProjectRegistry> = std::sync::OnceLock::new();
        match self.projects.get(name) {
            Some(p) => ProjectView { name: name.to_owned(), registry: p, exists: true },
            None => ProjectView {
                name: name.to_owned(),
                registry: EMPTY.get_or_init(ProjectRegistry::default),
                exists: false,
            },
        }
    }
}

/// Read access to one project with errors that name what is missing.
#[derive(Debug, Clone)]
pub struct ProjectView<'a> {
    name: String,
    registry: &'a ProjectRegistry,
    exists: bool,
}

/// The features one view contributes to a request, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewFeatures {
    /// The view.
    pub view: FeatureView,
    /// Its requested features, in the order first requested.
    pub features: Vec<String>,
}

impl<'a> ProjectView<'a> {
    /// The online table of feature view `view` ([`online_table`]); its plain
    /// name if the project has no such view.
    pub fn online_table(&self, view: &str) -> String {
        online_table(view, self.registry.feature_views.get(view).map_or(0, |r| r.generation))
    }

    /// The underlying records.
    pub fn registry(&self) -> &'a ProjectRegistry {
        self.registry
    }

    /// The project's objects as definitions, as a repo would declare them
    /// (schemas and join-key types as resolved at apply).
    pub fn to_definitions(&self) -> crate::repo::Definitions {
        use crate::repo::Defined;
        let r = self.registry;
        crate::repo::Definitions {
            entities: r.entities.values().map(|x| Defined::new(x.spec.clone())).collect(),
            sources: r.data_sources.values().map(|x| Defined::new(x.spec.clone())).collect(),
            stream_sources: r.stream_sources.values().map(|x| Defined::new(x.spec.clone())).collect(),
            feature_views: r.feature_views.values().map(|x| Defined::new(x.spec.clone())).collect(),
            feature_services: r.feature_services.values().map(|x| Defined::new(x.spec.clone())).collect(),
            request_sources: r.request_sources.values().map(|x| Defined::new(x.spec.clone())).collect(),
            on_demand_feature_views: r.on_demand_feature_views.values().map(|x| Defined::new(x.spec.clone())).collect(),
        }
    }

    /// Whether anything was ever applied to this project.
    pub fn exists(&self) -> bool {
        self.exists
    }

    fn not_found(&self, kind: &'static str, name: &str, names: impl Iterator<Item = &'a String>) -> Error {
        let hint = if !self.exists {
            Some(format!(
                "project \"{}\" has nothing applied; run `feature-store apply` (`store.apply()` in Python)",
                self.name
            ))
        } else {
            let close: Vec<&String> = names.filter(|n| similar(n, name)).collect();
            if close.is_empty() {
                None
            } else {
                Some(format!(
                    "did you mean {}?",
                    close.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(" or ")
                ))
            }
        };
        Error::NotFound { kind, name: name.to_owned(), hint }
    }

    /// The entity named `name`.
    pub fn entity(&self, name: &str) -> Result<&'a Entity> {
        self.registry
            .entities
            .get(name)
            .map(|r| &r.spec)
            .ok_or_else(|| self.not_found("entity", name, self.registry.entities.keys()))
    }

    /// The data source named `name`; for a stream source, its batch
    /// source (which retrieval, materialization and validation read).
    pub fn data_source(&self, name: &str) -> Result<&'a DataSource> {
        let name = self.registry.stream_sources.get(name).map_or(name, |s| s.spec.batch_source.as_str());
        self.registry.data_sources.get(name).map(|r| &r.spec).ok_or_else(|| {
            self.not_found(
                "data source",
                name,
                self.registry.data_sources.keys().chain(self.registry.stream_sources.keys()),
            )
        })
    }

    /// The stream source named `name`.
    pub fn stream_source(&self, name: &str) -> Result<&'a StreamSource> {
        self.registry
            .stream_sources
            .get(name)
            .map(|r| &r.spec)
            .ok_or_else(|| self.not_found("stream source", name, self.registry.stream_sources.keys()))
    }

    /// Whether view source name `a` and `b` read the same data (a stream
    /// source and its batch source do).
    pub fn same_source(&self, a: &str, b: &str) -> bool {
        let batch =
            |n: &str| self.registry.stream_sources.get(n).map_or_else(|| n.to_owned(), |s| s.spec.batch_source.clone());
        a == b || batch(a) == batch(b)
    }

    /// The feature view named `name`.
    pub fn feature_view(&self, name: &str) -> Result<&'a FeatureView> {
        self.registry
            .feature_views
            .get(name)
            .map(|r| &r.spec)
            .ok_or_else(|| self.not_found("feature view", name, self.registry.feature_views.keys()))
    }

    /// The on-demand feature view named `name`.
    pub fn on_demand_feature_view(&self, name: &str) -> Result<&'a OnDemandFeatureView> {
        self.registry
            .on_demand_feature_views
            .get(name)
            .map(|r| &r.spec)
            .ok_or_else(|| self.not_found("on-demand feature view", name, self.registry.on_demand_feature_views.keys()))
    }

    /// The request source named `name`.
    pub fn request_source(&self, name: &str) -> Result<&'a RequestSource> {
        self.registry
            .request_sources
            .get(name)
            .map(|r| &r.spec)
            .ok_or_else(|| self.not_found("request source", name, self.registry.request_sources.keys()))
    }

    /// The inputs of on-demand view `view` as stored.
    pub fn on_demand_inputs(&self, view: &OnDemandFeatureView) -> crate::on_demand::OnDemandInputs {
        let r = self.registry;
        crate::on_demand::OnDemandInputs::of(
            view,
            |n| r.feature_views.get(n).map(|x| x.spec.clone()),
            |n| r.request_sources.get(n).map(|x| x.spec.clone()),
        )
    }

    /// The feature service named `name`.
    pub fn feature_service(&self, name: &str) -> Result<&'a FeatureService> {
        self.registry
            .feature_services
            .get(name)
            .map(|r| &r.spec)
            .ok_or_else(|| self.not_found("feature service", name, self.registry.feature_services.keys()))
    }

    /// The join-key columns of a view, in entity order.
    pub fn join_keys(&self, view: &FeatureView) -> Result<Vec<crate::model::JoinKey>> {
        let mut keys = Vec::new();
        for e in &view.entities {
            keys.extend(self.entity(e)?.join_keys.iter().cloned());
        }
        Ok(keys)
    }

    /// Resolves selections into views and features, grouped by view in first-seen order.
    ///
    /// Unknown views and features are errors naming the reference; a feature
    /// requested twice is kept once.
    pub fn resolve(&self, selections: &[FeatureSelection]) -> Result<Vec<ViewFeatures>> {
        let mut out: Vec<ViewFeatures> = Vec::new();
        for sel in selections {
            let view = self.feature_view(sel.view())?;
            let names: Vec<String> = match sel {
                FeatureSelection::View(_) => view.feature_names().map(str::to_owned).collect(),
                FeatureSelection::Feature(FeatureRef { feature, .. }) => {
                    if view.feature(feature).is_none() {
                        let close: Vec<String> = view
                            .feature_names()
                            .filter(|n| similar(n, feature))
                            .map(|n| format!("\"{}:{n}\"", view.name))
                            .collect();
                        let hint = if close.is_empty() {
                            format!("its features are: {}", view.feature_names().collect::<Vec<_>>().join(", "))
                        } else {
                            format!("did you mean {}?", close.join(" or "))
                        };
                        return Err(Error::NotFound {
                            kind: "feature",
                            name: format!("{}:{feature}", view.name),
                            hint: Some(hint),
                        });
                    }
                    vec![feature.clone()]
                }
            };
            let idx = match out.iter().position(|v| v.view.name == view.name) {
                Some(i) => i,
                None => {
                    out.push(ViewFeatures { view: view.clone(), features: Vec::new() });
                    out.len() - 1
                }
            };
            for n in names {
                if !out[idx].features.contains(&n) {
                    out[idx].features.push(n);
                }
            }
        }
        Ok(out)
    }

    /// The selections of a feature service.
    pub fn service_selections(&self, service: &str) -> Result<Vec<FeatureSelection>> {
        self.feature_service(service)?.features.iter().map(|f| f.parse()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        assert!(similar("driver_stats", "driver_stat"));
        assert!(similar("conv_rate", "ConvRate"));
        assert!(!similar("abc", "xyz"));
    }
}
