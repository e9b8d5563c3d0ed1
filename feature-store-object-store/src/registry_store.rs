//! Registry documents on object stores, written with compare-and-swap.
//!
//! S3 and memory stores use conditional puts (`If-Match` on the etag, or
//! `If-None-Match: *` for the first write). The local file system has no
//! conditional put, so local registries serialize writers with an exclusive
//! OS lock on a `.lock` file beside the document and replace the document by
//! an atomic rename; readers never see a partial file.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use feature_store_core::registry::{RegistryStore, StoreVersion, WriteOutcome};
use feature_store_core::{Error as CoreError, Result as CoreResult};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::error::Error;
use crate::location::{ResolvedLocation, StoreKind, resolve};

/// Opens the registry store for `location` (path or URL) against `base_dir`.
pub fn open_registry_store(
    location: &str,
    base_dir: &FsPath,
    options: &BTreeMap<String, String>,
) -> CoreResult<Arc<dyn RegistryStore>> {
    let resolved = resolve(location, base_dir, options)?;
    Ok(match &resolved.kind {
        StoreKind::Local(path) => Arc::new(LocalFileRegistryStore::new(path.clone())),
        _ => Arc::new(ObjectStoreRegistryStore::new(resolved)),
    })
}

/// A registry document on any object store with conditional puts.
#[derive(Debug)]
pub struct ObjectStoreRegistryStore {
    store: Arc<dyn ObjectStore>,
    path: Path,
    url: String,
}

impl ObjectStoreRegistryStore {
    /// A registry at a resolved location.
    pub fn new(location: ResolvedLocation) -> Self {
        Self { store: location.store, path: location.path, url: location.url }
    }
}

fn unavailable(url: &str, e: object_store::Error) -> CoreError {
    match e {
        object_store::Error::Generic { .. }
        | object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotFound { .. } => {
            CoreError::StoreUnavailable { store: format!("registry {url}"), source: Box::new(e) }
        }
        other => CoreError::backend(format!("registry {url}"), other),
    }
}

#[async_trait]
impl RegistryStore for ObjectStoreRegistryStore {
    fn location(&self) -> String {
        self.url.clone()
    }

    async fn read(&self) -> CoreResult<Option<(Bytes, StoreVersion)>> {
        match self.store.get(&self.path).await {
            Ok(r) => {
                let token = StoreVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
                let bytes = r.bytes().await.map_err(|e| unavailable(&self.url, e))?;
                Ok(Some((bytes, token)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(&self.url, e)),
        }
    }

    async fn write(&self, data: Bytes, expected: Option<&StoreVersion>) -> CoreResult<WriteOutcome> {
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => PutMode::Update(UpdateVersion { e_tag: v.e_tag.clone(), version: v.version.clone() }),
        };
        let opts = PutOptions { mode, ..Default::default() };
        match self.store.put_opts(&self.path, PutPayload::from(data), opts).await {
            Ok(r) => Ok(WriteOutcome::Written(StoreVersion { e_tag: r.e_tag, version: r.version })),
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                Ok(WriteOutcome::Conflict)
            }
            // A document deleted under us while we held a version: treat as a conflict and re-read.
            Err(object_store::Error::NotFound { .. }) if expected.is_some() => Ok(WriteOutcome::Conflict),
            Err(e @ object_store::Error::NotImplemented { .. }) => Err(CoreError::Unsupported(format!(
                "registry {}: this object store has no conditional put, so concurrent writers cannot be made safe: {e}",
                self.url
            ))),
            Err(e) => Err(unavailable(&self.url, e)),
        }
    }
}

/// A registry document in a local file, guarded by an exclusive file lock.
#[derive(Debug)]
pub struct LocalFileRegistryStore {
    path: PathBuf,
}

impl LocalFileRegistryStore {
    /// A registry at the absolute file `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn token(bytes: &[u8]) -> StoreVersion {
        // Content hash: every write changes the document's version field, so
        // equal hashes mean the same document.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        StoreVersion { e_tag: Some(format!("{:016x}-{}", h.finish(), bytes.len())), version: None }
    }

    fn read_sync(path: &FsPath) -> Result<Option<Vec<u8>>, Error> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { location: path.display().to_string(), source: e }),
        }
    }

    /// Removes killed writers' temp files. Every writer holds the lock from
    /// its temp file's creation to its rename, so while the caller holds it,
    /// any temp file left is a dead writer's.
    fn sweep_temps(path: &FsPath) {
        let dir = path.parent().unwrap_or(FsPath::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let prefix = format!(".{name}.");
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if file.starts_with(&prefix) && file.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Sweeps on a read too, when no writer holds the lock: a killed apply
    /// followed only by applies with nothing to change would otherwise keep
    /// its temp file forever. Never waits and never creates the lock file
    /// (a read-only registry stays untouched).
    fn sweep_if_idle(path: &FsPath) {
        let Ok(lock) = std::fs::OpenOptions::new().write(true).open(path.with_extension("lock")) else {
            return;
        };
        if lock.try_lock().is_ok() {
            Self::sweep_temps(path);
        }
    }

    fn write_sync(path: &FsPath, data: &[u8], expected: Option<&StoreVersion>) -> Result<WriteOutcome, Error> {
        let io = |e: std::io::Error| Error::Io { location: path.display().to_string(), source: e };
        let dir = path.parent().unwrap_or(FsPath::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
        lock.lock().map_err(io)?;
        let current = Self::read_sync(path)?.map(|b| Self::token(&b));
        if current.as_ref() != expected {
            return Ok(WriteOutcome::Conflict);
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Self::sweep_temps(path);
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            // A full disk or a size limit: the document is unchanged, and no
            // partial temp file is left for the next writer to sweep.
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io {
                location: path.display().to_string(),
                source: std::io::Error::new(
                    e.kind(),
                    format!("{e}; the registry was not changed (the previous version is intact)"),
                ),
            });
        }
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        drop(lock);
        Ok(WriteOutcome::Written(Self::token(data)))
    }
}

#[async_trait]
impl RegistryStore for LocalFileRegistryStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn read(&self) -> CoreResult<Option<(Bytes, StoreVersion)>> {
        let path = self.path.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            Self::sweep_if_idle(&path);
            Self::read_sync(&path)
        })
        .await
        .map_err(|e| CoreError::backend("registry read", e))??;
        Ok(bytes.map(|b| {
            let token = Self::token(&b);
            (Bytes::from(b), token)
        }))
    }

    async fn write(&self, data: Bytes, expected: Option<&StoreVersion>) -> CoreResult<WriteOutcome> {
        let path = self.path.clone();
        let expected = expected.cloned();
        Ok(tokio::task::spawn_blocking(move || Self::write_sync(&path, &data, expected.as_ref()))
            .await
            .map_err(|e| CoreError::backend("registry write", e))??)
    }
}
