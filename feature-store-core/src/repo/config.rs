use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::parse_duration;
use crate::model::check_name;
use crate::{Error, Result};

/// Name of the config file at the root of every repo.
pub const CONFIG_FILE: &str = "feature_store.yaml";

/// The contents of `feature_store.yaml`.
///
/// String values may refer to environment variables as `${NAME}` or
/// `${NAME:-default}`, so credentials stay out of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RepoConfig {
    /// Namespace of every object in the repo.
    pub project: String,
    /// Where the registry document lives.
    pub registry: RegistryConfig,
    /// Offline (Parquet) store settings.
    #[serde(default)]
    pub offline_store: OfflineStoreConfig,
    /// Online store settings.
    #[serde(default)]
    pub online_store: OnlineStoreConfig,
    /// Feast's `provider`: accepted so Feast configs load; only `local` has a meaning here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Feast's key encoding version: accepted and ignored (keys here are width-free text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_key_serialization_version: Option<u32>,
    /// Feast's `auth` block (`feast init` writes `type: no_auth`): accepted so
    /// Feast configs load. Feast's other types (OIDC, Kubernetes) are refused
    /// rather than silently unenforced; the feature server's own API keys
    /// are set under `feature_server.auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<serde_json::Value>,
    /// The `feature_server:` section, read by the feature server
    /// (`feature-store-server`), which owns its keys and checks them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_server: Option<serde_json::Value>,
    /// Folder that relative paths are resolved against; the repo root. Not read from the file.
    #[serde(skip)]
    pub repo_path: PathBuf,
}

/// Location and caching of the registry document.
///
/// Written either as a bare path/URL or as a mapping with `path`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Repo-relative path or URL (`file://`, `s3://bucket/key`, `memory://name/key`).
    pub path: String,
    /// How long readers may use a cached copy before re-reading.
    #[serde(with = "secs")]
    pub cache_ttl: Duration,
    /// Object-store options for the registry; defaults to the offline store's.
    pub storage_options: Option<BTreeMap<String, String>>,
}

impl RegistryConfig {
    /// A registry at `path` with the default 10 s cache.
    pub fn new(path: impl Into<String>) -> Self {
        Self { path: path.into(), cache_ttl: Duration::from_secs(10), storage_options: None }
    }

    /// Sets the reader cache ttl; zero disables caching.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }
}

mod secs {
    use super::*;
    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::duration::format_duration(*d))
    }
}

impl<'de> Deserialize<'de> for RegistryConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            path: String,
            #[serde(default)]
            cache_ttl: Option<String>,
            #[serde(default)]
            cache_ttl_seconds: Option<u64>,
            #[serde(default)]
            storage_options: Option<BTreeMap<String, String>>,
            #[serde(default)]
            registry_type: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Path(String),
            Full(Full),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("registry must be a path/URL or a mapping {path, cache_ttl, storage_options}")
        })?;
        Ok(match raw {
            Raw::Path(p) => RegistryConfig::new(p),
            Raw::Full(f) => {
                if let Some(t) = f.registry_type.as_deref()
                    && !matches!(t, "file" | "object_store" | "s3")
                {
                    return Err(serde::de::Error::custom(format!(
                        "registry_type \"{t}\" is not supported; the registry is one document on an object store (file, s3, memory)"
                    )));
                }
                let cache_ttl = match (f.cache_ttl, f.cache_ttl_seconds) {
                    (Some(t), _) => parse_duration(&t).map_err(serde::de::Error::custom)?,
                    (None, Some(s)) => Duration::from_secs(s),
                    (None, None) => Duration::from_secs(10),
                };
                RegistryConfig { path: f.path, cache_ttl, storage_options: f.storage_options }
            }
        })
    }
}

/// Offline store settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OfflineStoreConfig {
    /// Store type; `file` (Parquet through object_store) is the only one.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Options passed to object_store (`aws_endpoint`, `aws_region`, `aws_allow_http`, ...).
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Memory limit for query execution, e.g. `2GiB`; beyond it joins spill to disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// Where retrievals run: `local` (the default) or `ballista` (a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The Ballista scheduler's address, `df://host:port`, for `engine: ballista`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// Hash partitions each view's join is split into on a cluster (default: one per 64 MiB of a job's input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u64>,
}

impl OfflineStoreConfig {
    /// The section as backend options (`storage_options`, `memory_limit`,
    /// `engine`, `scheduler`, `partitions`),
    /// for the offline backend to parse.
    pub fn backend_options(&self) -> BTreeMap<String, serde_json::Value> {
        let mut out = BTreeMap::new();
        if !self.storage_options.is_empty() {
            let map = self.storage_options.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())));
            out.insert("storage_options".into(), serde_json::Value::Object(map.collect()));
        }
        if let Some(limit) = &self.memory_limit {
            out.insert("memory_limit".into(), serde_json::Value::String(limit.clone()));
        }
        for (key, value) in [("engine", &self.engine), ("scheduler", &self.scheduler)] {
            if let Some(v) = value {
                out.insert(key.into(), serde_json::Value::String(v.clone()));
            }
        }
        if let Some(p) = self.partitions {
            out.insert("partitions".into(), serde_json::Value::from(p));
        }
        out
    }
}

/// Online store settings: a `type` and that backend's own options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OnlineStoreConfig {
    /// Backend name: `sqlite` (embedded default), `redis` or `memory`.
    #[serde(rename = "type", default = "default_online")]
    pub kind: String,
    /// Backend options (`path`, `connection_string`, ...), checked by the backend.
    #[serde(flatten)]
    pub options: BTreeMap<String, serde_json::Value>,
}

fn default_online() -> String {
    "sqlite".into()
}

impl Default for OnlineStoreConfig {
    fn default() -> Self {
        let mut options = BTreeMap::new();
        options.insert("path".into(), serde_json::Value::String("data/online.db".into()));
        Self { kind: default_online(), options }
    }
}

impl OnlineStoreConfig {
    /// A config for backend `kind` with no options.
    pub fn new(kind: impl Into<String>) -> Self {
        Self { kind: kind.into(), options: BTreeMap::new() }
    }

    /// A string option, if set.
    pub fn option_str(&self, key: &str) -> Option<String> {
        self.options.get(key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

impl RepoConfig {
    /// A config for `project` with a registry at `registry`, everything else default.
    pub fn new(project: impl Into<String>, registry: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            registry: RegistryConfig::new(registry),
            offline_store: OfflineStoreConfig::default(),
            online_store: OnlineStoreConfig::default(),
            provider: None,
            entity_key_serialization_version: None,
            auth: None,
            feature_server: None,
            repo_path: PathBuf::from("."),
        }
    }

    /// Reads `feature_store.yaml` from the repo folder `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Config {
                    location: path.display().to_string(),
                    message: format!(
                        "not found; {} is not a feature repo (a repo folder holds {CONFIG_FILE} and the definitions)",
                        dir.display()
                    ),
                }
            } else {
                Error::io(&path, e)
            }
        })?;
        let mut config = Self::from_yaml(&text, &path.display().to_string())?;
        config.repo_path = dir.to_path_buf();
        Ok(config)
    }

    /// Parses config text; `location` names it in errors.
    pub fn from_yaml(text: &str, location: &str) -> Result<Self> {
        let err = |message: String| Error::Config { location: location.to_owned(), message };
        super::yaml_limits::check(text).map_err(err)?;
        let text = expand_env(text).map_err(err)?;
        let config: RepoConfig = yaml_serde::from_str(&text).map_err(|e| err(e.to_string()))?;
        config.check().map_err(err)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        check_name(&self.project).map_err(|e| format!("project: {e}"))?;
        if let Some(p) = self.provider.as_deref()
            && p != "local"
        {
            return Err(format!(
                "provider \"{p}\" is not supported; this library runs in-process (provider: local), \
                 reaching object stores by URL (s3://, file://) and Redis by its connection string"
            ));
        }
        if let Some(auth) = &self.auth {
            match auth.get("type").and_then(|t| t.as_str()) {
                Some("no_auth") => {}
                Some(other) => {
                    return Err(format!(
                        "auth type \"{other}\" is not supported; use `auth: {{type: no_auth}}` or leave auth out, \
                         and protect the feature server with API keys (`feature_server.auth.api_keys`)"
                    ));
                }
                None => return Err("auth: expected a mapping with `type` (only no_auth is supported)".into()),
            }
        }
        if self.registry.path.trim().is_empty() {
            return Err("registry: path is empty".into());
        }
        if let Some(kind) = &self.offline_store.kind
            && !matches!(kind.as_str(), "file" | "parquet" | "s3")
        {
            return Err(format!(
                "offline_store.type \"{kind}\" is not supported; use file (Parquet on local paths, s3:// or memory://)"
            ));
        }
        Ok(())
    }

    /// Options for the registry's object store.
    pub fn registry_storage_options(&self) -> &BTreeMap<String, String> {
        self.registry.storage_options.as_ref().unwrap_or(&self.offline_store.storage_options)
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment values.
pub(crate) fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unterminated ${ in config".to_string())?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (std::env::var(name), default) {
            (Ok(v), _) => out.push_str(&v),
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => {
                return Err(format!(
                    "environment variable {name} is not set (referenced as ${{{name}}}); set it or write ${{{name}:-default}}"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config() {
        let c = RepoConfig::from_yaml(
            "project: p\nregistry: {path: s3://b/r.json, cache_ttl_seconds: 5}\noffline_store:\n  storage_options: {aws_region: eu-west-1}\nonline_store:\n  type: redis\n  connection_string: redis://localhost:6379\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.registry.path, "s3://b/r.json");
        assert_eq!(c.registry.cache_ttl, Duration::from_secs(5));
        assert_eq!(c.registry_storage_options().get("aws_region").unwrap(), "eu-west-1");
        assert_eq!(c.online_store.kind, "redis");
        assert_eq!(c.online_store.option_str("connection_string").unwrap(), "redis://localhost:6379");
    }

    #[test]
    fn env_expansion() {
        assert_eq!(expand_env("a ${FS_TEST_SURELY_UNSET:-x} b").unwrap(), "a x b");
        assert!(expand_env("${FS_TEST_SURELY_UNSET}").unwrap_err().contains("FS_TEST_SURELY_UNSET"));
    }

    #[test]
    fn typos_are_rejected() {
        let e = RepoConfig::from_yaml("project: p\nregistry: r.json\nonline_stor: {}\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("online_stor"), "{e}");
        let e = RepoConfig::from_yaml("project: my-proj\nregistry: r.json\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("project"), "{e}");
    }
}
