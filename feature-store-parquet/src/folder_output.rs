//! Retrievals written as a folder of Parquet files plus a manifest
//! ([`FolderWriter`]): the folder is checked, the plan writes the files
//! where its rows are produced (this process, or a cluster's executors),
//! then the manifest is written, and only then are earlier runs' files
//! removed. A failed run removes its own files, so the folder is left as
//! it was.

use async_trait::async_trait;
use feature_store_core::historical::HistoricalRequest;
use feature_store_core::offline::folder::{FolderOutput, FolderWriter, MANIFEST, OutputColumn, OutputFile};
use feature_store_core::{Error as CoreError, Result as CoreResult};
use feature_store_object_store::location::{self, StoreKind};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::ParquetOfflineStore;
use crate::datafusion::folder_writer::{FolderTarget, FolderWriterExec, child_path, written_files};

#[async_trait]
impl FolderWriter for ParquetOfflineStore {
    async fn write_historical_folder(
        &self,
        request: HistoricalRequest,
        folder: &str,
        rows_per_file: u64,
    ) -> CoreResult<FolderOutput> {
        let context = format!("output folder {folder}");
        let resolved = location::resolve(folder, &self.base_dir, &self.options)
            .map_err(|e| CoreError::InvalidArgument(format!("{context}: {e}")))?;
        let engine = self.engine_name();
        if matches!(resolved.kind, StoreKind::Memory { .. }) && engine != "local" {
            return Err(CoreError::InvalidArgument(format!(
                "{context}: an in-memory store lives in one process; a cluster's executors cannot write to it"
            )));
        }
        let url = format!("{}/", resolved.url.trim_end_matches('/'));
        let (store, path) = (resolved.store, resolved.path);
        let earlier = existing_parts(&store, &path, &url).await?;
        let run = run_name();
        let target = FolderTarget {
            url: url.clone(),
            run: run.clone(),
            rows_per_file,
            store: std::sync::Arc::clone(&store),
            path: path.clone(),
        };
        let plan = self.plan_historical_into(request, Some(target)).await?;
        let columns = file_columns(plan.plan());
        let written = async {
            let stream = plan.execute()?;
            let batches: Vec<_> = stream.try_collect().await?;
            written_files(&batches).map_err(|e| CoreError::data(&context, e.to_string()))
        }
        .await;
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                // The run's own files go; earlier runs' stay as they were.
                if let Err(cleanup) = remove_run(&store, &path, &run).await {
                    tracing::warn!(folder = %url, run, error = %cleanup, "could not remove a failed run's files");
                }
                return Err(e);
            }
        };
        let files = written.into_iter().map(|(file, first, rows, bytes)| OutputFile::new(file, first, rows, bytes));
        let manifest = FolderOutput::new(url.clone(), columns, files.collect(), engine, chrono::Utc::now());
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        store
            .put(&child_path(&path, MANIFEST), body.into())
            .await
            .map_err(|e| CoreError::data(&context, format!("cannot write {MANIFEST}: {e}")))?;
        // The manifest names this run's files: earlier runs' go now.
        for name in earlier {
            if let Err(e) = store.delete(&child_path(&path, &name)).await {
                tracing::warn!(folder = %url, file = name, error = %e, "could not remove an earlier run's file");
            }
        }
        tracing::info!(folder = %url, files = manifest.files.len(), rows = manifest.rows, "historical: folder written");
        Ok(manifest)
    }
}

impl ParquetOfflineStore {
    /// `local`, or the cluster's scheduler address.
    fn engine_name(&self) -> String {
        #[cfg(feature = "distributed")]
        if let Some(cluster) = &self.cluster {
            return cluster.scheduler.clone();
        }
        "local".into()
    }
}

/// Names of the earlier runs' part files in the folder; anything that is
/// not a part file or the manifest is an error (the folder is someone else's).
async fn existing_parts(store: &std::sync::Arc<dyn ObjectStore>, path: &Path, url: &str) -> CoreResult<Vec<String>> {
    let prefix = if path.as_ref().is_empty() { None } else { Some(path) };
    let mut listing = store.list(prefix);
    let mut parts = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = match meta {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => return Err(CoreError::data(format!("output folder {url}"), format!("cannot list it: {e}"))),
        };
        let name = meta.location.as_ref().strip_prefix(path.as_ref()).unwrap_or(meta.location.as_ref());
        let name = name.trim_start_matches('/');
        if name == MANIFEST {
            continue;
        }
        if name.starts_with("part-") && name.ends_with(".parquet") && !name.contains('/') {
            parts.push(name.to_owned());
        } else {
            return Err(CoreError::InvalidArgument(format!(
                "output folder {url} holds {name}, which is not a feature-store output file; \
                 give an empty folder or one an earlier folder output wrote"
            )));
        }
    }
    Ok(parts)
}

/// Deletes the part files of `run`.
async fn remove_run(store: &std::sync::Arc<dyn ObjectStore>, path: &Path, run: &str) -> object_store::Result<()> {
    let prefix = if path.as_ref().is_empty() { None } else { Some(path) };
    let suffix = format!("-{run}.parquet");
    let mine: Vec<Path> = store
        .list(prefix)
        .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(&suffix)))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    for p in mine {
        store.delete(&p).await?;
    }
    Ok(())
}

/// A name no other run has: the time and this process.
fn run_name() -> String {
    let now = chrono::Utc::now();
    format!("{}{:09}-{:x}", now.format("%Y%m%dT%H%M%S"), now.timestamp_subsec_nanos(), std::process::id())
}

/// The files' columns: the writer's input, less the row number.
fn file_columns(plan: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> Vec<OutputColumn> {
    fn find(plan: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> Option<&FolderWriterExec> {
        plan.downcast_ref::<FolderWriterExec>().or_else(|| plan.children().into_iter().find_map(find))
    }
    find(plan)
        .map(|w| {
            w.file_schema().fields().iter().map(|f| OutputColumn::new(f.name(), f.data_type().to_string())).collect()
        })
        .unwrap_or_default()
}
