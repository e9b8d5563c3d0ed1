//! Turns a path or URL plus storage options into an [`ObjectStore`] and a
//! path inside it. Every crate that needs an object store resolves it here.
//!
//! | written as | store |
//! |---|---|
//! | `data/x.parquet`, `/abs/x.parquet`, `file:///abs/x.parquet` | local files (relative paths against the repo root) |
//! | `s3://bucket/key` | S3 or an S3-compatible server (`aws_endpoint`, `aws_region`, `aws_allow_http`, credentials from the environment) |
//! | `memory://name/key` | process-wide in-memory store `name`, shared by every user in the process |

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

#[cfg(feature = "s3")]
use std::time::Duration;

use object_store::ObjectStore;
#[cfg(feature = "s3")]
use object_store::RetryConfig;
#[cfg(feature = "s3")]
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;

use crate::error::{Error, Result};

/// Where a location lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// Local file system; holds the absolute file path.
    Local(PathBuf),
    /// S3 (or compatible) bucket.
    S3 {
        /// Bucket name.
        bucket: String,
    },
    /// Named in-memory store.
    Memory {
        /// Store name (the URL host).
        name: String,
    },
}

/// A resolved location: the store, the path within it and a printable URL.
#[derive(Debug, Clone)]
pub struct ResolvedLocation {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// Path within the store.
    pub path: Path,
    /// Normalized URL for messages and for keying DataFusion object stores.
    pub url: String,
    /// Which kind of store.
    pub kind: StoreKind,
}

impl ResolvedLocation {
    /// The URL of the store's root (`s3://bucket`, `file://`, `memory://name`).
    pub fn store_url(&self) -> String {
        match &self.kind {
            StoreKind::Local(_) => "file://".into(),
            StoreKind::S3 { bucket } => format!("s3://{bucket}"),
            StoreKind::Memory { name } => format!("memory://{name}"),
        }
    }
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// The process-wide in-memory store called `name` (`memory://name/...`).
pub fn memory_store(name: &str) -> Arc<InMemory> {
    Arc::clone(memory_stores().lock().expect("poisoned").entry(name.to_owned()).or_default())
}

#[cfg(feature = "s3")]
fn s3_stores() -> &'static Mutex<HashMap<String, Arc<dyn ObjectStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Whether `location` is a URL (has a scheme) rather than a local path.
pub fn is_url(location: &str) -> bool {
    location.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
    })
}

/// Resolves `location` against `base_dir` with object-store `options`.
pub fn resolve(location: &str, base_dir: &FsPath, options: &BTreeMap<String, String>) -> Result<ResolvedLocation> {
    let invalid = |message: &str| Error::InvalidLocation { location: location.to_owned(), message: message.to_owned() };
    if !is_url(location) {
        let p = FsPath::new(location);
        let abs = if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
        return local(location, &abs);
    }
    let (scheme, rest) = location.split_once("://").expect("is_url");
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(invalid("file:// URLs need an absolute path, e.g. file:///data/x.parquet"));
            }
            local(location, FsPath::new(path))
        }
        "memory" => {
            let (name, key) = rest.split_once('/').unwrap_or((rest, ""));
            let path = Path::parse(key).map_err(|e| invalid(&e.to_string()))?;
            let store: Arc<dyn ObjectStore> = memory_store(name);
            Ok(ResolvedLocation {
                store,
                url: format!("memory://{name}/{path}"),
                path,
                kind: StoreKind::Memory { name: name.to_owned() },
            })
        }
        "s3" | "s3a" => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket; write s3://bucket/key"));
            }
            let path = Path::parse(key).map_err(|e| invalid(&e.to_string()))?;
            let store = s3_store(bucket, options)?;
            Ok(ResolvedLocation {
                store,
                url: format!("s3://{bucket}/{path}"),
                path,
                kind: StoreKind::S3 { bucket: bucket.to_owned() },
            })
        }
        other => {
            Err(invalid(&format!("unsupported scheme \"{other}\"; use a local path, file://, s3:// or memory://")))
        }
    }
}

fn local(location: &str, abs: &FsPath) -> Result<ResolvedLocation> {
    let abs = std::path::absolute(abs).map_err(|e| Error::Io { location: location.to_owned(), source: e })?;
    let abs = normalize(&abs);
    let path = Path::from_absolute_path(&abs)
        .map_err(|e| Error::InvalidLocation { location: location.to_owned(), message: e.to_string() })?;
    static LOCAL: OnceLock<Arc<LocalFileSystem>> = OnceLock::new();
    let store: Arc<dyn ObjectStore> = LOCAL.get_or_init(|| Arc::new(LocalFileSystem::new())).clone();
    Ok(ResolvedLocation { store, url: format!("file:///{path}"), path, kind: StoreKind::Local(abs) })
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(p: &FsPath) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(not(feature = "s3"))]
fn s3_store(bucket: &str, _options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    Err(Error::InvalidLocation {
        location: format!("s3://{bucket}"),
        message: "this build has no S3 support; build feature-store with the cargo feature \"s3\"".into(),
    })
}

/// Builds (once per bucket and options) an S3 store: environment first
/// (`AWS_*` variables), then `options`, which win.
#[cfg(feature = "s3")]
fn s3_store(bucket: &str, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    let cache_key = format!("{bucket}\u{0}{options:?}");
    if let Some(s) = s3_stores().lock().expect("poisoned").get(&cache_key) {
        return Ok(Arc::clone(s));
    }
    // Fail within seconds on an unreachable endpoint rather than object_store's
    // default of retrying for three minutes; both are tunable per store.
    let mut retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..Default::default() };
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in options {
        let bad_value = |message: String| Error::InvalidOption { key: key.clone(), message };
        match key.as_str() {
            "max_retries" => {
                retry.max_retries = value.parse().map_err(|_| bad_value(format!("\"{value}\" is not a number")))?;
                continue;
            }
            "retry_timeout" => {
                retry.retry_timeout = feature_store_core::duration::parse_duration(value).map_err(bad_value)?;
                continue;
            }
            _ => {}
        }
        let config_key: AmazonS3ConfigKey = key.to_ascii_lowercase().parse().map_err(|_| Error::InvalidOption {
            key: key.clone(),
            message: "not an S3 option; use e.g. aws_endpoint, aws_region, aws_access_key_id, aws_secret_access_key, aws_allow_http, connect_timeout, timeout, max_retries, retry_timeout".into(),
        })?;
        builder = builder.with_config(config_key, value);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.with_retry(retry).build().map_err(|e| {
        Error::InvalidOption { key: "s3".into(), message: format!("cannot configure S3 for bucket \"{bucket}\": {e}") }
    })?);
    s3_stores().lock().expect("poisoned").insert(cache_key, Arc::clone(&store));
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_kinds() {
        let opts = BTreeMap::new();
        let r = resolve("data/x.parquet", FsPath::new("/repo"), &opts).unwrap();
        assert_eq!(r.kind, StoreKind::Local(PathBuf::from("/repo/data/x.parquet")));
        assert_eq!(r.url, "file:///repo/data/x.parquet");
        let r = resolve("../shared/x.parquet", FsPath::new("/repo/sub"), &opts).unwrap();
        assert_eq!(r.url, "file:///repo/shared/x.parquet");
        let r = resolve("memory://m1/a/b.json", FsPath::new("/"), &opts).unwrap();
        assert_eq!(r.path.as_ref(), "a/b.json");
        assert_eq!(r.store_url(), "memory://m1");
        assert!(resolve("gs://b/x", FsPath::new("/"), &opts).unwrap_err().to_string().contains("unsupported scheme"));
        #[cfg(feature = "s3")]
        {
            let mut bad = BTreeMap::new();
            bad.insert("aws_endpoit".to_string(), "x".to_string());
            assert!(resolve("s3://b/k", FsPath::new("/"), &bad).unwrap_err().to_string().contains("aws_endpoit"));
        }
        #[cfg(not(feature = "s3"))]
        assert!(resolve("s3://b/k", FsPath::new("/"), &opts).unwrap_err().to_string().contains("cargo feature \"s3\""));
    }
}
