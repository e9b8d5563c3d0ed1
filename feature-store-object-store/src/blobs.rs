//! Whole-object I/O at locations resolved against a repo root: what saved
//! datasets need to store manifests and check files byte for byte.

use std::collections::BTreeMap;
use std::path::PathBuf;

use feature_store_core::offline::{ObjectInfo, hex};
use feature_store_core::{Error as CoreError, Result as CoreResult};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::location::{ResolvedLocation, resolve};

/// Objects at paths (relative to `base_dir`) or URLs, with storage options.
#[derive(Debug, Clone)]
pub struct Blobs {
    base_dir: PathBuf,
    options: BTreeMap<String, String>,
}

/// `s3://bucket/key`-style URL of a resolved location.
pub fn url_of(loc: &ResolvedLocation) -> String {
    format!("{}/{}", loc.store_url(), loc.path)
}

impl Blobs {
    /// Objects resolved against `base_dir` (the repo root) with object-store `options`.
    pub fn new(base_dir: impl Into<PathBuf>, options: BTreeMap<String, String>) -> Self {
        Self { base_dir: base_dir.into(), options }
    }

    /// Resolves `location` (a URL, or a path relative to the repo).
    pub fn resolve(&self, location: &str) -> CoreResult<ResolvedLocation> {
        resolve(location, &self.base_dir, &self.options).map_err(CoreError::from)
    }

    /// The normalized URL of `location`, for comparing locations.
    pub fn location_url(&self, location: &str) -> CoreResult<String> {
        Ok(url_of(&self.resolve(location)?))
    }

    /// Size, version and SHA-256 of the object at `location`; `None` when absent.
    pub async fn object_info(&self, location: &str) -> CoreResult<Option<ObjectInfo>> {
        let loc = self.resolve(location)?;
        let url = url_of(&loc);
        let got = match loc.store.get(&loc.path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::object_store(&url, e).into()),
        };
        let meta = got.meta.clone();
        let mut bytes = got.into_stream();
        let mut digest = Sha256::new();
        while let Some(chunk) = bytes.next().await {
            digest.update(chunk.map_err(|e| CoreError::from(Error::object_store(&url, e)))?);
        }
        Ok(Some(
            ObjectInfo::new(url, meta.size)
                .with_version(meta.e_tag, Some(meta.last_modified))
                .with_sha256(hex(&digest.finalize())),
        ))
    }

    /// Writes `bytes` at `location`, replacing any object there; returns what was stored.
    pub async fn put_object(&self, location: &str, bytes: bytes::Bytes) -> CoreResult<ObjectInfo> {
        let loc = self.resolve(location)?;
        let url = url_of(&loc);
        let sha = hex(&Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        let put =
            loc.store.put(&loc.path, bytes.into()).await.map_err(|e| CoreError::from(Error::object_store(&url, e)))?;
        Ok(ObjectInfo::new(url, size).with_version(put.e_tag, None).with_sha256(sha))
    }

    /// The bytes at `location`; `None` when absent.
    pub async fn get_object(&self, location: &str) -> CoreResult<Option<bytes::Bytes>> {
        let loc = self.resolve(location)?;
        let url = url_of(&loc);
        match loc.store.get(&loc.path).await {
            Ok(g) => Ok(Some(g.bytes().await.map_err(|e| CoreError::from(Error::object_store(&url, e)))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::object_store(&url, e).into()),
        }
    }

    /// URLs of every object below the folder `location` (none when it does not exist).
    pub async fn list_objects(&self, location: &str) -> CoreResult<Vec<String>> {
        let loc = self.resolve(location)?;
        let url = url_of(&loc);
        let prefix = if loc.path.as_ref().is_empty() { None } else { Some(&loc.path) };
        let mut listing = loc.store.list(prefix);
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            match meta {
                Ok(m) => out.push(format!("{}/{}", loc.store_url(), m.location)),
                // A local folder that does not exist yet.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(Error::object_store(&url, e).into()),
            }
        }
        Ok(out)
    }

    /// Deletes the object at `location`; `false` when there was none. On
    /// local disk, its folder too once empty, and each folder above it that
    /// this leaves empty, as on an object store, where folders exist only
    /// through the objects in them.
    pub async fn delete_object(&self, location: &str) -> CoreResult<bool> {
        let loc = self.resolve(location)?;
        let url = url_of(&loc);
        // A store that deletes missing objects silently (S3) is asked first.
        match loc.store.head(&loc.path).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(Error::object_store(&url, e).into()),
            Ok(_) => {}
        }
        match loc.store.delete(&loc.path).await {
            Ok(()) => {
                // On local disk a folder outlives its last file: a save
                // folder emptied by a delete goes with it, and so does a
                // dataset's folder holding no other save (`remove_dir` fails
                // on the first folder that is not empty, so this stops there).
                if let crate::location::StoreKind::Local(path) = &loc.kind {
                    let mut folder = path.parent();
                    while let Some(f) = folder
                        && std::fs::remove_dir(f).is_ok()
                    {
                        folder = f.parent();
                    }
                }
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::object_store(&url, e).into()),
        }
    }
}
