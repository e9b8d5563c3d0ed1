//! Saved datasets: `save_dataset` writes a training set with its manifest,
//! `verify_dataset` checks it against the present (see [`crate::dataset`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{FeatureStore, Features};
use crate::dataset::*;
use crate::historical::{BatchStream, EntityInput, HistoricalOptions, HistoricalRequest};
use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::historical::ViewRequest;
use crate::model::{DataSource, Entity, JoinKey};
use crate::offline::{DatasetStorage, ObjectInfo, hex};
use crate::on_demand::{InputSource, OnDemandProjection};
use crate::{Error, Result};

impl FeatureStore {
    /// Folder of a dataset's stored files: beside the registry document.
    pub fn dataset_folder(&self, name: &str) -> String {
        let registry = &self.config().registry.path;
        let parent = registry.rfind('/').map_or("", |i| &registry[..=i]);
        format!("{parent}datasets/{}/{name}", self.project())
    }

    /// Builds a training set like [`FeatureStore::get_historical_features`],
    /// writes it as Parquet to `output` (default `data.parquet` in a new
    /// folder of this save under [`FeatureStore::dataset_folder`]) and
    /// records its manifest as `name`. An explicit `output` must be a new
    /// `.parquet` path outside every data source.
    ///
    /// An existing name is refused. The entity table is read once and kept as
    /// a copy, so an in-memory or SQL entity table can be replayed.
    pub async fn save_dataset(
        &self,
        name: &str,
        entities: EntityInput,
        features: &Features,
        options: &HistoricalOptions,
        output: Option<&str>,
    ) -> Result<DatasetManifest> {
        check_name(name)?;
        let doc = self.registry().refresh().await?;
        let project = doc.project(self.project());
        if project.registry().datasets.contains_key(name) {
            return Err(Error::InvalidArgument(format!("dataset \"{name}\" already exists; save under another name")));
        }
        let offline = self.dataset_storage(&format!("saving dataset \"{name}\""))?;
        let resolution = self.resolve(features, options.full_feature_names).await?;
        let on_demand = resolution.projection();
        if on_demand.is_some() {
            // Checked before any file is written: a save that cannot be verified is not worth its files.
            self.expression_engine().ok_or_else(|| {
                Error::Unsupported(format!(
                    "saving dataset \"{name}\": on-demand features are requested and this build has no expression \
                     engine; build feature-store with the cargo feature \"on-demand\""
                ))
            })?;
        }
        let views = resolution.views.clone();
        let sources: Vec<DataSource> = project.registry().data_sources.values().map(|r| r.spec.clone()).collect();
        let mut entity_defs: BTreeMap<String, Entity> = BTreeMap::new();
        for v in &views {
            for e in &v.view.entities {
                if let Some(r) = project.registry().entities.get(e) {
                    entity_defs.insert(e.clone(), r.spec.clone());
                }
            }
        }
        let mut source_files = Vec::new();
        let mut listed = BTreeSet::new();
        for v in &views {
            if listed.insert(v.source.name.clone()) {
                for object in offline.source_files(&v.source).await? {
                    source_files.push(SourceFile { source: v.source.name.clone(), object });
                }
            }
        }
        let origin = match &entities {
            EntityInput::Path(p) => p.clone(),
            EntityInput::Sql(q) => format!("SQL: {q}"),
            EntityInput::Batches { .. } => "Arrow batches".into(),
            EntityInput::Stream(_) => "Arrow stream".into(),
        };
        // Each save gets its own folder, so a concurrent save under the same
        // name (one of which the registry will refuse) never touches the winner's files.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let folder = format!(
            "{}/{}-{}-{}-{}",
            self.dataset_folder(name),
            Utc::now().format("%Y%m%dT%H%M%S%6fZ"),
            save_host(),
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        match self.sweep_killed_saves(offline, &doc).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "dataset save: removed the files of killed saves"),
            Err(e) => tracing::warn!(error = %e, "dataset save: could not sweep the files of killed saves"),
        }
        if let Some(s) = self.source_containing(&offline.location_url(&folder)?, &sources)? {
            return Err(Error::InvalidArgument(format!(
                "datasets are stored beside the registry, in {folder}, which is inside data source \"{}\" ({}): its files would be read as source data; move the registry or the source's files to separate folders",
                s.name, s.path
            )));
        }
        if let Some(out) = output {
            self.check_output(out, &sources).await?;
        }
        let keys: Vec<JoinKey> = views.iter().flat_map(|v| v.join_keys.iter().cloned()).collect();
        let entity_stream = offline.read_entities(entities, &options.timestamp_column, &sources, &keys).await?;
        let (entity_stream, entity_hash) = hashing(entity_stream)?;
        let entity_file = offline.write_parquet(&format!("{folder}/entities.parquet"), entity_stream).await?;
        let (entity_rows, entity_content) = take(&entity_hash);

        let request = HistoricalRequest {
            entities: EntityInput::Path(entity_file.location.clone()),
            views: views.clone(),
            timestamp_column: options.timestamp_column.clone(),
            sources: sources.clone(),
            on_demand: on_demand.clone(),
        };
        let (out_stream, out_hash) = hashing(self.offline_store()?.get_historical_features(request).await?)?;
        let output_location = output.map_or_else(|| format!("{folder}/data.parquet"), str::to_owned);
        let output_file = offline.write_parquet(&output_location, out_stream).await?;
        let (out_rows, out_content) = take(&out_hash);

        let specs = on_demand.as_ref().map(|p| p.specs()).unwrap_or_default();
        let manifest = DatasetManifest {
            name: name.to_owned(),
            created_at: Utc::now(),
            registry_version: doc.version,
            feature_service: match features {
                Features::Service(s) => Some(s.clone()),
                Features::Refs(_) => None,
            },
            features: views
                .iter()
                .flat_map(|v| {
                    v.features
                        .iter()
                        .zip(&v.output_names)
                        .filter(|(_, o)| !crate::on_demand::is_hidden_input(o))
                        .map(|(f, _)| format!("{}:{f}", v.view.name))
                })
                .chain(specs.iter().flat_map(|s| s.feature_refs()))
                .collect(),
            full_feature_names: options.full_feature_names,
            timestamp_column: options.timestamp_column.clone(),
            views: views.into_iter().map(DatasetView::from).collect(),
            on_demand: specs,
            entities: entity_defs.into_values().collect(),
            source_files,
            entity_table: StoredTable {
                origin: Some(origin),
                rows: entity_rows,
                content_hash: entity_content,
                file: entity_file,
            },
            output: StoredTable { origin: None, rows: out_rows, content_hash: out_content, file: output_file },
        };
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::data(format!("dataset \"{name}\""), format!("cannot encode the manifest: {e}")))?;
        let stored = offline.put_object(&format!("{folder}/manifest.json"), bytes::Bytes::from(bytes)).await?;
        let record = DatasetRecord {
            name: name.to_owned(),
            created_at: manifest.created_at,
            rows: manifest.output.rows,
            output: manifest.output.file.location.clone(),
            folder: offline.location_url(&folder)?,
            manifest: stored,
        };
        let project_name = self.project().to_owned();
        self.registry()
            .update(|doc| {
                let p = doc.projects.entry(project_name.clone()).or_default();
                if p.datasets.contains_key(name) {
                    return Err(Error::InvalidArgument(format!(
                        "dataset \"{name}\" was saved by another writer meanwhile; this run's files at {folder} are not recorded (delete them), save under another name"
                    )));
                }
                p.datasets.insert(name.to_owned(), record.clone());
                Ok(true)
            })
            .await?;
        Ok(manifest)
    }

    /// Deletes the files of saves killed before they registered their
    /// dataset: save folders of no registered dataset whose writer was a
    /// process of this host that no longer runs. Returns the files deleted.
    async fn sweep_killed_saves(
        &self,
        offline: &dyn DatasetStorage,
        doc: &crate::registry::RegistryDocument,
    ) -> Result<usize> {
        let root = offline.location_url(self.dataset_folder("").trim_end_matches('/'))?;
        let registered: BTreeSet<String> = doc
            .project(self.project())
            .registry()
            .datasets
            .values()
            .map(|r| r.folder.trim_end_matches('/').to_owned())
            .collect();
        let mut deleted = 0;
        for url in offline.list_objects(&root).await? {
            let Some(rest) = url.strip_prefix(&format!("{root}/")) else { continue };
            let mut parts = rest.splitn(3, '/');
            let (Some(name), Some(folder), Some(_file)) = (parts.next(), parts.next(), parts.next()) else { continue };
            if registered.contains(&format!("{root}/{name}/{folder}")) || !killed_save(folder) {
                continue;
            }
            if offline.delete_object(&url).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// The source whose files `url` would be among, if any.
    fn source_containing<'a>(&self, url: &str, sources: &'a [DataSource]) -> Result<Option<&'a DataSource>> {
        let storage = self.offline_store()?.datasets();
        for s in sources {
            let root = match s.path.find(['*', '?', '[']) {
                Some(i) => &s.path[..s.path[..i].rfind('/').map_or(0, |j| j + 1)],
                None => s.path.as_str(),
            };
            let root = match storage {
                Some(storage) => storage.location_url(root)?,
                None => root.to_owned(),
            };
            let root = root.trim_end_matches('/');
            if url == root || url.starts_with(&format!("{root}/")) {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Refuses to write `output` (a path or URL) inside a data source of the
    /// registry: the file would replace a source's data or be read as more
    /// of it. Callers writing a retrieval's result somewhere call it first.
    /// A saved dataset's output file is refused too: replacing it would
    /// change a training set the registry records.
    pub async fn check_output_outside_sources(&self, output: &str) -> Result<()> {
        let doc = self.document().await?;
        let project = doc.project(self.project());
        let sources: Vec<DataSource> = project.registry().data_sources.values().map(|r| r.spec.clone()).collect();
        self.refuse_inside_sources(output, &sources)?;
        if let Some(storage) = self.offline_store()?.datasets() {
            let url = storage.location_url(output)?;
            if let Some(d) =
                project.registry().datasets.values().find(|d| storage.location_url(&d.output).is_ok_and(|u| u == url))
            {
                return Err(Error::InvalidArgument(format!(
                    "output {output} is the output of saved dataset \"{}\": writing it would replace that training set; choose another path, or delete the dataset first (dataset delete {})",
                    d.name, d.name
                )));
            }
        }
        Ok(())
    }

    fn refuse_inside_sources(&self, output: &str, sources: &[DataSource]) -> Result<()> {
        // Without dataset storage, locations are compared as written.
        let url = match self.offline_store()?.datasets() {
            Some(storage) => storage.location_url(output)?,
            None => output.to_owned(),
        };
        if let Some(s) = self.source_containing(&url, sources)? {
            return Err(Error::InvalidArgument(format!(
                "output {output} is inside data source \"{}\" ({}): writing it would replace or add to that source's data; choose a path outside it",
                s.name, s.path
            )));
        }
        Ok(())
    }

    /// An explicit output must be new Parquet outside every source, so that
    /// saving never overwrites data, another dataset, or adds a file a source would read.
    async fn check_output(&self, output: &str, sources: &[DataSource]) -> Result<()> {
        let lower = output.to_ascii_lowercase();
        if !(lower.ends_with(".parquet") || lower.ends_with(".pq")) {
            return Err(Error::InvalidArgument(format!(
                "output {output}: a saved dataset is written as Parquet; use a .parquet file name"
            )));
        }
        self.refuse_inside_sources(output, sources)?;
        let offline = self.dataset_storage(&format!("checking output {output}"))?;
        let url = offline.location_url(output)?;
        if offline.object_info(output).await?.is_some() {
            return Err(Error::InvalidArgument(format!(
                "output {url} already exists; a saved dataset never overwrites a file, choose a new path"
            )));
        }
        Ok(())
    }

    /// Saved datasets of the project, by name (registry entries; manifests are read by [`FeatureStore::get_dataset`]).
    pub async fn list_datasets(&self) -> Result<Vec<DatasetRecord>> {
        Ok(self.document().await?.project(self.project()).registry().datasets.values().cloned().collect())
    }

    fn dataset_record(&self, doc: &crate::registry::RegistryDocument, name: &str) -> Result<DatasetRecord> {
        let p = doc.project(self.project());
        p.registry().datasets.get(name).cloned().ok_or_else(|| {
            let close: Vec<String> = p
                .registry()
                .datasets
                .keys()
                .filter(|n| crate::registry::similar(n, name))
                .map(|n| format!("\"{n}\""))
                .collect();
            Error::NotFound {
                kind: "dataset",
                name: name.to_owned(),
                hint: (!close.is_empty()).then(|| format!("did you mean {}?", close.join(" or "))),
            }
        })
    }

    /// The manifest of dataset `name`, read from its folder and checked against the registry's hash.
    pub async fn get_dataset(&self, name: &str) -> Result<DatasetManifest> {
        let record = self.dataset_record(&*self.document().await?, name)?;
        let context = format!("dataset \"{name}\" manifest {}", record.manifest.location);
        let bytes = self
            .dataset_storage(&format!("reading dataset \"{name}\""))?
            .get_object(&record.manifest.location)
            .await?
            .ok_or_else(|| Error::data(&context, "missing; the dataset cannot be read or verified"))?;
        let sha = hex(&Sha256::digest(&bytes));
        if Some(&sha) != record.manifest.sha256.as_ref() {
            return Err(Error::data(
                &context,
                format!("modified since it was saved (sha256 {} -> {})", short(&record.manifest.sha256), &sha[..16]),
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::data(&context, format!("not a manifest: {e}")))
    }

    /// Removes dataset `name` from the registry, then deletes the files of its
    /// save folder; an explicit output elsewhere is kept (it is the caller's).
    pub async fn delete_dataset(&self, name: &str) -> Result<Deleted> {
        // Checked before the registry changes, so a store without dataset
        // storage refuses instead of dropping the record and keeping the files.
        let offline = self.dataset_storage(&format!("deleting dataset \"{name}\""))?;
        let doc = self.registry().refresh().await?;
        let record = self.dataset_record(&doc, name)?;
        let manifest = self.get_dataset(name).await.ok();
        let project_name = self.project().to_owned();
        self.registry()
            .update(|doc| {
                let p = doc.projects.entry(project_name.clone()).or_default();
                Ok(p.datasets.remove(name).is_some())
            })
            .await?;
        let mut files = vec![record.manifest.location.clone()];
        if let Some(m) = &manifest {
            files.push(m.entity_table.file.location.clone());
        }
        files.push(record.output.clone());
        let (mut deleted, mut kept) = (Vec::new(), Vec::new());
        let folder = format!("{}/", record.folder.trim_end_matches('/'));
        for f in files {
            if !f.starts_with(&folder) {
                kept.push(f);
            } else if offline.delete_object(&f).await? {
                deleted.push(f);
            }
        }
        Ok(Deleted { name: name.to_owned(), deleted, kept })
    }

    /// The rows of dataset `name`, read from its stored output.
    pub async fn read_dataset(&self, name: &str) -> Result<BatchStream> {
        let m = self.get_dataset(name).await?;
        self.dataset_storage(&format!("reading dataset \"{name}\""))?
            .read_entities(EntityInput::Path(m.output.file.location), "", &[], &[])
            .await
    }

    /// Compares dataset `name` with the present: source files, definitions,
    /// the stored entity table and output, and a recomputation of the output
    /// from the recorded definitions and entity table.
    pub async fn verify_dataset(&self, name: &str) -> Result<Verification> {
        let m = self.get_dataset(name).await?;
        let doc = self.registry().refresh().await?;
        let reg = doc.project(self.project()).registry();
        let offline = self.dataset_storage(&format!("verifying dataset \"{name}\""))?;
        let mut findings = Vec::new();
        let files_checked = source_file_findings(offline, &m, &mut findings).await;
        definition_findings(&m, reg, &mut findings);
        let entity_ok = stored_file_findings(offline, &m, &mut findings).await;
        let recomputed_hash = if entity_ok {
            self.recompute(&m, &mut findings).await?
        } else {
            findings.push(finding(
                "recomputed",
                "output".into(),
                "not recomputed: the stored entity table is missing or modified".into(),
            ));
            None
        };
        let reproducible = recomputed_hash.as_ref().map(|h| *h == m.output.content_hash);
        Ok(Verification { name: m.name, recomputed_hash, reproducible, files_checked, findings })
    }

    /// Recomputes the output from the recorded inputs; its content hash, or
    /// `None` (with a finding) when the recomputation failed.
    async fn recompute(&self, m: &DatasetManifest, findings: &mut Vec<Finding>) -> Result<Option<String>> {
        let on_demand = match (m.on_demand.is_empty(), self.expression_engine()) {
            (true, _) => None,
            (false, None) => {
                let detail = "not recomputed: the dataset has on-demand features and this build has no expression \
                              engine (cargo feature \"on-demand\")";
                findings.push(finding("recomputed", "output".into(), detail.into()));
                return Ok(None);
            }
            (false, Some(engine)) => match OnDemandProjection::from_specs(m.on_demand.clone(), engine.as_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    findings.push(finding("recomputed", "output".into(), format!("not recomputed: {e}")));
                    return Ok(None);
                }
            },
        };
        let request = HistoricalRequest {
            entities: EntityInput::Path(m.entity_table.file.location.clone()),
            views: m.views.iter().cloned().map(ViewRequest::from).collect(),
            timestamp_column: m.timestamp_column.clone(),
            sources: m.views.iter().map(|v| v.source.clone()).collect(),
            on_demand,
        };
        match self.offline_store()?.get_historical_features(request).await {
            Err(e) => findings.push(finding("recomputed", "output".into(), format!("recomputation failed: {e}"))),
            Ok(stream) => match content_hash(stream).await {
                Err(e) => findings.push(finding("recomputed", "output".into(), format!("recomputation failed: {e}"))),
                Ok((rows, hash)) => {
                    if hash != m.output.content_hash {
                        findings.push(finding(
                            "recomputed",
                            "output".into(),
                            format!(
                                "differs from the recorded output: content hash {} -> {} ({} -> {rows} rows)",
                                &m.output.content_hash[..16],
                                &hash[..16],
                                m.output.rows
                            ),
                        ));
                    }
                    return Ok(Some(hash));
                }
            },
        }
        Ok(None)
    }
}

/// Source files listed again: added, removed, or another size or version.
/// Returns how many recorded files were checked.
async fn source_file_findings(offline: &dyn DatasetStorage, m: &DatasetManifest, findings: &mut Vec<Finding>) -> usize {
    let mut files_checked = 0;
    let mut seen = BTreeSet::new();
    for v in &m.views {
        if !seen.insert(v.source.name.clone()) {
            continue;
        }
        let then: BTreeMap<&str, &ObjectInfo> = m
            .source_files
            .iter()
            .filter(|f| f.source == v.source.name)
            .map(|f| (f.object.location.as_str(), &f.object))
            .collect();
        let now = match offline.source_files(&v.source).await {
            Ok(files) => files,
            Err(e) => {
                findings.push(finding(
                    "source_file",
                    format!("data source {}", v.source.name),
                    format!("cannot list: {e}"),
                ));
                continue;
            }
        };
        let now_by: BTreeMap<&str, &ObjectInfo> = now.iter().map(|o| (o.location.as_str(), o)).collect();
        for (loc, old) in &then {
            files_checked += 1;
            match now_by.get(loc) {
                None => findings.push(finding("source_file", (*loc).to_owned(), "removed".into())),
                Some(new) => {
                    let mut what = Vec::new();
                    if new.size != old.size {
                        what.push(format!("size {} -> {}", old.size, new.size));
                    }
                    if new.e_tag != old.e_tag {
                        what.push(format!(
                            "etag {} -> {}{}",
                            old.e_tag.as_deref().unwrap_or("-"),
                            new.e_tag.as_deref().unwrap_or("-"),
                            if new.size == old.size {
                                " (same size: the file was rewritten, maybe with the same bytes)"
                            } else {
                                ""
                            }
                        ));
                    }
                    if what.is_empty() && new.last_modified != old.last_modified {
                        what.push("modification time changed".into());
                    }
                    if !what.is_empty() {
                        findings.push(finding(
                            "source_file",
                            (*loc).to_owned(),
                            format!("changed: {}", what.join(", ")),
                        ));
                    }
                }
            }
        }
        for (loc, new) in &now_by {
            if !then.contains_key(loc) {
                findings.push(finding("source_file", (*loc).to_owned(), format!("added ({} bytes)", new.size)));
            }
        }
    }
    files_checked
}

/// The registry's definitions now against the recorded ones.
fn definition_findings(m: &DatasetManifest, reg: &crate::registry::ProjectRegistry, findings: &mut Vec<Finding>) {
    let mut changed = Vec::new();
    let mut sources_seen = BTreeSet::new();
    for v in &m.views {
        changed.extend(definition_change("feature_view", &v.view.name, &v.view, reg.feature_views.get(&v.view.name)));
        if sources_seen.insert(v.source.name.clone()) {
            changed.extend(definition_change(
                "data_source",
                &v.source.name,
                &v.source,
                reg.data_sources.get(&v.source.name),
            ));
        }
    }
    for e in &m.entities {
        changed.extend(definition_change("entity", &e.name, e, reg.entities.get(&e.name)));
    }
    for s in &m.on_demand {
        let name = &s.view.name;
        changed.extend(definition_change(
            "on_demand_feature_view",
            name,
            &s.view,
            reg.on_demand_feature_views.get(name),
        ));
        // Request fields the expressions read, against their sources now.
        for &i in &s.used_inputs {
            let crate::on_demand::Input { source: InputSource::Request { source, field }, dtype, .. } =
                &s.inputs.inputs[i]
            else {
                continue;
            };
            let now = reg.request_sources.get(source).map(|r| r.spec.schema.iter().find(|f| &f.name == field));
            let detail = match now {
                None => "removed".to_owned(),
                Some(None) => format!("field \"{field}\" removed"),
                Some(Some(f)) if &f.dtype != dtype => format!("field \"{field}\" changed: {dtype} -> {}", f.dtype),
                Some(Some(_)) => continue,
            };
            changed.push(Finding { kind: "definition".into(), subject: format!("request_source {source}"), detail });
        }
    }
    findings.extend(changed);
}

/// The stored entity copy and output: present, with the bytes written (or
/// at least the rows). Returns whether the entity copy can be replayed.
async fn stored_file_findings(offline: &dyn DatasetStorage, m: &DatasetManifest, findings: &mut Vec<Finding>) -> bool {
    let mut entity_ok = true;
    for (kind, table) in [("entity_table", &m.entity_table), ("output", &m.output)] {
        match offline.object_info(&table.file.location).await {
            Err(e) => {
                entity_ok &= kind != "entity_table";
                findings.push(finding(kind, table.file.location.clone(), format!("cannot read: {e}")));
            }
            Ok(None) => {
                entity_ok &= kind != "entity_table";
                findings.push(finding(kind, table.file.location.clone(), "missing".into()));
            }
            Ok(Some(now)) if now.sha256 != table.file.sha256 => {
                // Same rows re-encoded, or other rows?
                let same_rows =
                    match offline.read_entities(EntityInput::Path(table.file.location.clone()), "", &[], &[]).await {
                        Ok(stream) => content_hash(stream).await.ok().map(|(_, h)| h == table.content_hash),
                        Err(_) => None,
                    };
                let detail = match same_rows {
                    Some(true) => format!(
                        "rewritten: the bytes differ (sha256 {} -> {}) but the rows are identical (content hash matches)",
                        short(&table.file.sha256),
                        short(&now.sha256)
                    ),
                    _ => {
                        entity_ok &= kind != "entity_table";
                        format!(
                            "modified: sha256 {} -> {} ({} -> {} bytes), rows differ",
                            short(&table.file.sha256),
                            short(&now.sha256),
                            table.file.size,
                            now.size
                        )
                    }
                };
                findings.push(finding(kind, table.file.location.clone(), detail));
            }
            Ok(Some(_)) => {}
        }
    }
    entity_ok
}

fn finding(kind: &str, subject: String, detail: String) -> Finding {
    Finding { kind: kind.to_owned(), subject, detail }
}

/// A finding when a recorded definition was removed or changed since.
fn definition_change<T: Serialize>(
    kind: &str,
    name: &str,
    then: &T,
    now: Option<&crate::registry::Record<T>>,
) -> Option<Finding> {
    let detail = match now {
        None => "removed".to_owned(),
        Some(r) => {
            let fields = changed_fields(then, &r.spec);
            if fields.is_empty() {
                return None;
            }
            format!("changed: {}", fields.join(", "))
        }
    };
    Some(Finding { kind: "definition".into(), subject: format!("{kind} {name}"), detail })
}

/// Top-level fields whose values differ between two serialized definitions,
/// with `old -> new` when both are short.
fn changed_fields<T: Serialize>(then: &T, now: &T) -> Vec<String> {
    let (a, b) = (serde_json::to_value(then).unwrap_or_default(), serde_json::to_value(now).unwrap_or_default());
    let show = |v: Option<&serde_json::Value>| v.map_or_else(|| "(none)".to_owned(), |v| v.to_string());
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| {
                    let (old, new) = (show(a.get(k)), show(b.get(k)));
                    if old.len() + new.len() <= 80 { format!("{k} {old} -> {new}") } else { k.clone() }
                })
                .collect()
        }
        (a, b) if a != b => vec!["definition".into()],
        _ => vec![],
    }
}

/// This host's name as a save folder carries it (no `-`, which separates
/// the folder name's parts).
fn save_host() -> String {
    crate::ingest::host_name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' })
        .collect()
}

/// Whether save folder `folder` (`<time>-<host>-<pid>-<seq>`) was written
/// by a process of this host that no longer runs.
fn killed_save(folder: &str) -> bool {
    let parts: Vec<&str> = folder.split('-').collect();
    let [_, host, pid, _] = parts.as_slice() else { return false };
    let here = save_host();
    !here.is_empty()
        && *host == here
        && pid
            .parse::<u32>()
            .is_ok_and(|p| p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists())
}
