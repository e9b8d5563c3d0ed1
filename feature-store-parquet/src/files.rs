//! Finding a source's Parquet files: one file, a folder (recursively, with
//! hive-style `key=value/` partitions) or a glob.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};

use crate::error::{Error, Result};
use feature_store_core::ingest::log_file::replaced;
use feature_store_object_store::location::{ResolvedLocation, is_url, resolve};

/// A data source with its files listed: what the planner reads, so that
/// planning works on plain descriptions and never lists on its own.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    /// The source's definition.
    pub source: feature_store_core::model::DataSource,
    /// Its files now.
    pub files: SourceFiles,
}

/// The files behind one source location.
#[derive(Debug, Clone)]
pub struct SourceFiles {
    /// The resolved root (the file, the folder, or the glob's fixed prefix).
    pub root: ResolvedLocation,
    /// Data files, sorted by path.
    pub files: Vec<ObjectMeta>,
    /// Hive partition column names, from the folder names below the root.
    pub partition_columns: Vec<String>,
    /// Offline log files a compacted file of their folder replaces: never
    /// read, deleted by the next compaction (see `feature_store_core::ingest::log_file`).
    pub replaced: Vec<ObjectMeta>,
}

impl SourceFiles {
    /// `s3://bucket/key`-style URL of one listed file.
    pub fn file_url(&self, meta: &ObjectMeta) -> String {
        format!("{}/{}", self.root.store_url(), meta.location)
    }

    /// Hive partition values of a file (`key=value` folders below the root).
    pub fn partition_values(&self, meta: &ObjectMeta) -> BTreeMap<String, String> {
        let root: Vec<_> = self.root.path.parts().collect();
        meta.location
            .parts()
            .skip(root.len())
            .filter_map(|p| p.as_ref().split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    }
}

/// Extensions of files that are never Parquet data: a repo's registry
/// document, the embedded online store and its journals, notes.
const NOT_DATA: [&str; 12] =
    [".json", ".yaml", ".yml", ".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".md", ".txt", ".log", ".lock"];

/// A file `object_store` writes before renaming it to its name (`name#3`),
/// left behind when a writer is killed.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_data_file(meta: &ObjectMeta) -> bool {
    let name = meta.location.filename().unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    // Skip Spark/Hadoop markers (_SUCCESS, _metadata), hidden and temporary files.
    let skipped = name.starts_with('_')
        || name.starts_with('.')
        || name.ends_with(".crc")
        || name.ends_with(".tmp")
        || is_staging(name)
        || NOT_DATA.iter().any(|ext| lower.ends_with(ext));
    // An empty file is no data, except one named as Parquet: that one is a
    // broken file (an interrupted write?), and reading it says so.
    !skipped && (meta.size > 0 || lower.ends_with(".parquet"))
}

/// Lists the data files at `location` (file, folder or glob).
pub async fn list_source_files(
    location: &str,
    base_dir: &FsPath,
    options: &BTreeMap<String, String>,
) -> Result<SourceFiles> {
    let glob_at = location.find(['*', '?', '[']);
    let (fixed, pattern) = match glob_at {
        None => (location, None),
        Some(i) => {
            let cut = location[..i].rfind('/').map_or(0, |j| j + 1);
            (&location[..cut], Some(&location[cut..]))
        }
    };
    let fixed = if fixed.is_empty() && !is_url(location) { "." } else { fixed };
    let root = resolve(fixed, base_dir, options)?;
    let not_found = |message: String| Error::not_found(location, message);

    if pattern.is_none() {
        match root.store.head(&root.path).await {
            Ok(meta) => {
                return Ok(SourceFiles {
                    root,
                    files: vec![meta],
                    partition_columns: Vec::new(),
                    replaced: Vec::new(),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            // Local stores report a folder given as a file path this way.
            Err(object_store::Error::Generic { .. })
                if matches!(root.kind, feature_store_object_store::location::StoreKind::Local(_)) => {}
            Err(e) => return Err(Error::object_store(&root.url, e)),
        }
    }
    let prefix = if root.path.as_ref().is_empty() { None } else { Some(&root.path) };
    let mut files: Vec<ObjectMeta> =
        root.store.list(prefix).try_collect().await.map_err(|e| Error::object_store(&root.url, e))?;
    files.retain(is_data_file);
    if let Some(pattern) = pattern {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::invalid_location(location, e.to_string()))?
            .compile_matcher();
        let skip = root.path.parts().count();
        files.retain(|m| {
            let rel: Vec<_> = m.location.parts().skip(skip).map(|p| p.as_ref().to_owned()).collect();
            glob.is_match(rel.join("/"))
        });
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    if files.is_empty() {
        return Err(not_found(match pattern {
            Some(_) => "the glob matches no files".into(),
            None => "no file or folder with data files exists there".into(),
        }));
    }
    let names: Vec<(String, String)> = files
        .iter()
        .map(|m| {
            let name = m.location.filename().unwrap_or_default().to_owned();
            let folder = m.location.as_ref().strip_suffix(name.as_str()).unwrap_or_default().to_owned();
            (folder, name)
        })
        .collect();
    let is_replaced = replaced(names.iter().map(|(f, n)| (f.as_str(), n.as_str())));
    let (replaced, files): (Vec<_>, Vec<_>) = files.into_iter().zip(is_replaced).partition(|(_, r)| *r);
    let files: Vec<ObjectMeta> = files.into_iter().map(|(m, _)| m).collect();
    let replaced = replaced.into_iter().map(|(m, _)| m).collect();
    let mut sf = SourceFiles { root, files, partition_columns: Vec::new(), replaced };
    sf.partition_columns = sf.partition_values(&sf.files[0]).into_keys().collect();
    // Partition keys in folder order, not alphabetical.
    let order: Vec<String> = sf.files[0].location.parts().map(|p| p.as_ref().to_owned()).collect();
    sf.partition_columns.sort_by_key(|k| order.iter().position(|p| p.starts_with(&format!("{k}="))));
    Ok(sf)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn an_empty_parquet_file_is_listed_and_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-0.parquet"), b"not checked by listing").unwrap();
        std::fs::write(dir.path().join("part-1.parquet"), b"").unwrap();
        std::fs::write(dir.path().join("marker"), b"").unwrap();
        // What a killed `object_store` writer leaves: never read as data.
        std::fs::write(dir.path().join("push-1.parquet#7"), b"half a file").unwrap();
        let files =
            super::list_source_files(&dir.path().display().to_string(), dir.path(), &BTreeMap::new()).await.unwrap();
        let names: Vec<&str> = files.files.iter().map(|m| m.location.filename().unwrap()).collect();
        assert_eq!(names, ["part-0.parquet", "part-1.parquet"]);
        let e = crate::offline_store::parquet_schema(&files, 1).await.unwrap_err().to_string();
        assert!(e.contains("part-1.parquet") && e.contains("file is 0 bytes, too small to be Parquet"), "{e}");
    }
}
