//! The registry: one versioned document on an object store holding every
//! definition, written with compare-and-swap so concurrent writers never lose
//! an update, and cached by readers for a configurable time.

mod document;
mod plan;
mod storage;
mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::Mutex;

pub(crate) use crate::error::similar;
pub use document::{
    FORMAT_VERSION, IngestState, ProjectRegistry, ProjectView, RUNS_KEPT, Record, RegistryDocument, RunOutcome,
    RunRecord, ViewFeatures, ViewState, online_table,
};
pub use plan::{ApplyMode, Change, ChangeAction, ObjectKind, Plan};
pub use storage::{MemoryRegistryStore, RegistryStore, StoreVersion, WriteOutcome};

use crate::offline::OfflineStore;
use crate::on_demand::ExpressionEngine;
use crate::repo::Definitions;
use crate::{Error, Result};

/// Result of [`Registry::apply`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyOutcome {
    /// What changed.
    pub plan: Plan,
    /// Registry version after the apply (unchanged if nothing changed).
    pub version: u64,
    /// Whether a new version was written.
    pub written: bool,
    /// Write attempts made (more than one after conflicts with other writers).
    pub attempts: u32,
}

#[derive(Debug)]
struct Cached {
    doc: Arc<RegistryDocument>,
    fetched: Instant,
}

/// How the last re-read of the registry went, for health checks of
/// long-running readers (the feature server).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegistryHealth {
    /// Version of the document readers are given, when one was read.
    pub version: Option<u64>,
    /// When that document was read.
    pub fetched_at: Option<SystemTime>,
    /// The error of the last failed re-read, cleared by the next good one.
    pub last_error: Option<String>,
    /// When the last re-read failed.
    pub failed_at: Option<SystemTime>,
}

/// A handle on the registry document behind a [`RegistryStore`].
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn RegistryStore>,
    cache_ttl: Duration,
    max_attempts: u32,
    cache: Mutex<Option<Cached>>,
    /// Serve the last good document when a re-read fails (long-running servers).
    keep_last_good: AtomicBool,
    health: std::sync::Mutex<RegistryHealth>,
}

impl Registry {
    /// A registry over `store`; readers reuse a copy for `cache_ttl`.
    pub fn new(store: Arc<dyn RegistryStore>, cache_ttl: Duration) -> Self {
        Self {
            store,
            cache_ttl,
            max_attempts: 64,
            cache: Mutex::new(None),
            keep_last_good: AtomicBool::new(false),
            health: std::sync::Mutex::new(RegistryHealth {
                version: None,
                fetched_at: None,
                last_error: None,
                failed_at: None,
            }),
        }
    }

    /// Sets how many times a write is attempted before a [`Error::Conflict`].
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Where the document lives.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The document, from cache if younger than the cache ttl.
    pub async fn document(&self) -> Result<Arc<RegistryDocument>> {
        {
            let cache = self.cache.lock().await;
            if let Some(c) = cache.as_ref()
                && c.fetched.elapsed() < self.cache_ttl
            {
                return Ok(Arc::clone(&c.doc));
            }
        }
        self.refresh().await
    }

    /// Re-reads the document, bypassing the cache. With
    /// [`Registry::keep_last_good`] on, a failed read (store down, corrupt
    /// document) returns the cached document and is reported by
    /// [`Registry::health`]; the next attempt waits a cache ttl.
    pub async fn refresh(&self) -> Result<Arc<RegistryDocument>> {
        match self.read_fresh().await {
            Ok((doc, _)) => Ok(doc),
            Err(e) if self.keep_last_good.load(Ordering::Relaxed) => {
                let mut cache = self.cache.lock().await;
                let Some(c) = cache.as_mut() else { return Err(e) };
                c.fetched = Instant::now();
                let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
                health.last_error = Some(e.to_string());
                health.failed_at = Some(SystemTime::now());
                tracing::warn!(registry = %self.location(), error = %e, "registry re-read failed; serving the last good version");
                Ok(Arc::clone(&c.doc))
            }
            Err(e) => Err(e),
        }
    }

    /// Makes failed re-reads serve the last good document instead of
    /// failing (the first read still fails). For servers, where an `apply`
    /// that broke the registry must not take serving down with it.
    pub fn keep_last_good(&self, yes: bool) {
        self.keep_last_good.store(yes, Ordering::Relaxed);
    }

    /// The version readers are given and how the last re-read went.
    pub fn health(&self) -> RegistryHealth {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The cache ttl: how long readers reuse a document.
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    async fn read_fresh(&self) -> Result<(Arc<RegistryDocument>, Option<StoreVersion>)> {
        let (doc, token) = match self.store.read().await? {
            None => (RegistryDocument::default(), None),
            Some((bytes, token)) => (RegistryDocument::from_json(&bytes, &self.location())?, Some(token)),
        };
        let doc = Arc::new(doc);
        *self.cache.lock().await = Some(Cached { doc: Arc::clone(&doc), fetched: Instant::now() });
        {
            let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            health.version = Some(doc.version);
            health.fetched_at = Some(SystemTime::now());
            health.last_error = None;
            health.failed_at = None;
        }
        Ok((doc, token))
    }

    /// Shows what applying `defs` to `project` would change, without writing.
    pub async fn plan(
        &self,
        project: &str,
        defs: &Definitions,
        mode: ApplyMode,
        offline: &dyn OfflineStore,
        engine: Option<&dyn ExpressionEngine>,
    ) -> Result<Plan> {
        let (doc, _) = self.read_fresh().await?;
        let current = doc.project(project).registry().clone();
        let merged = plan::merged(&current, defs, mode);
        let resolved = validate::validate(&merged, offline, &Default::default(), engine).await?;
        let mut plan = plan::build(&current, &resolved, Utc::now(), doc.version + 1).1;
        plan.warnings = validate::file_warnings(&resolved, offline).await;
        Ok(plan)
    }

    /// Validates `defs` and writes them to `project` in one atomic step.
    ///
    /// On a conflict with another writer the document is re-read, the
    /// definitions re-merged and re-validated, and the write retried.
    pub async fn apply(
        &self,
        project: &str,
        defs: &Definitions,
        mode: ApplyMode,
        offline: &dyn OfflineStore,
        engine: Option<&dyn ExpressionEngine>,
    ) -> Result<ApplyOutcome> {
        let cache = validate::SchemaCache::default();
        let mut attempts = 0;
        let mut warnings = None;
        loop {
            attempts += 1;
            let (doc, token) = self.read_fresh().await?;
            let current = doc.project(project).registry().clone();
            let resolved = validate::validate(&plan::merged(&current, defs, mode), offline, &cache, engine).await?;
            if warnings.is_none() {
                // Once: a retry after a conflict re-merges definitions, not files.
                warnings = Some(validate::file_warnings(&resolved, offline).await);
            }
            let now = Utc::now();
            let (next, mut plan) = plan::build(&current, &resolved, now, doc.version + 1);
            plan.warnings = warnings.clone().unwrap_or_default();
            if plan.is_empty() && doc.projects.contains_key(project) {
                return Ok(ApplyOutcome { plan, version: doc.version, written: false, attempts });
            }
            let mut new_doc = (*doc).clone();
            new_doc.projects.insert(project.to_owned(), next);
            match self.write(new_doc, token.as_ref()).await? {
                Some(version) => {
                    tracing::info!(project, version, attempts, changes = plan.changes.len(), "registry: applied");
                    return Ok(ApplyOutcome { plan, version, written: true, attempts });
                }
                None if attempts >= self.max_attempts => {
                    return Err(Error::Conflict { location: self.location(), attempts });
                }
                None => {
                    tracing::debug!(project, attempts, "registry: another writer was first; re-reading");
                    backoff(attempts).await
                }
            }
        }
    }

    /// Applies `change` to the latest document and writes it, retrying on
    /// conflicts. `change` returns `false` to skip the write.
    ///
    /// Used for small updates such as advancing a view's watermark.
    pub async fn update(
        &self,
        mut change: impl FnMut(&mut RegistryDocument) -> Result<bool>,
    ) -> Result<Arc<RegistryDocument>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (doc, token) = self.read_fresh().await?;
            let mut new_doc = (*doc).clone();
            if !change(&mut new_doc)? {
                return Ok(doc);
            }
            match self.write(new_doc, token.as_ref()).await? {
                Some(_) => {
                    return Ok(self.cache.lock().await.as_ref().map(|c| Arc::clone(&c.doc)).expect("cached on write"));
                }
                None if attempts >= self.max_attempts => {
                    return Err(Error::Conflict { location: self.location(), attempts });
                }
                None => backoff(attempts).await,
            }
        }
    }

    /// Writes `doc` as the next version if the store is still at `token`; `None` on conflict.
    async fn write(&self, mut doc: RegistryDocument, token: Option<&StoreVersion>) -> Result<Option<u64>> {
        if let Some(field) = &doc.unknown_field {
            return Err(Error::Unsupported(format!(
                "registry {}: it holds \"{field}\", a field this version of feature-store does not know (written \
                 by a newer version?); writing would drop it, so this version only reads this registry: upgrade \
                 feature-store to change it",
                self.location()
            )));
        }
        doc.version += 1;
        doc.updated_at = Some(Utc::now());
        doc.format_version = FORMAT_VERSION;
        let began = Instant::now();
        match self.store.write(Bytes::from(doc.to_json()), token).await? {
            WriteOutcome::Written(_) => {
                let version = doc.version;
                tracing::debug!(
                    location = %self.store.location(),
                    version,
                    seconds = began.elapsed().as_secs_f64(),
                    "registry: document written"
                );
                *self.cache.lock().await = Some(Cached { doc: Arc::new(doc), fetched: Instant::now() });
                Ok(Some(version))
            }
            WriteOutcome::Conflict => Ok(None),
        }
    }
}

/// Randomized exponential backoff so that colliding writers spread out.
async fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let cap_ms = 5u64 << attempt.min(6);
    let ms = 1 + h.finish() % cap_ms;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
