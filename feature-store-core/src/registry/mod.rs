//! The registry: one versioned document on an object store holding every
//! definition, written with compare-and-swap so concurrent writers never lose
//! an update, and cached by readers for a configurable time.

mod document;
mod plan;
mod storage;
mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::Mutex;

pub(crate) use crate::error::similar;
pub use document::{
    FORMAT_VERSION, ProjectRegistry, ProjectView, RUNS_KEPT, Record, RegistryDocument, RunOutcome, RunRecord,
    ViewFeatures, ViewState, online_table,
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

/// A handle on the registry document behind a [`RegistryStore`].
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn RegistryStore>,
    cache_ttl: Duration,
    max_attempts: u32,
    cache: Mutex<Option<Cached>>,
}

impl Registry {
    /// A registry over `store`; readers reuse a copy for `cache_ttl`.
    pub fn new(store: Arc<dyn RegistryStore>, cache_ttl: Duration) -> Self {
        Self { store, cache_ttl, max_attempts: 64, cache: Mutex::new(None) }
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
        Ok(self.read_fresh().await?.0)
    }

    /// Re-reads the document, bypassing the cache.
    pub async fn refresh(&self) -> Result<Arc<RegistryDocument>> {
        Ok(self.read_fresh().await?.0)
    }

    async fn read_fresh(&self) -> Result<(Arc<RegistryDocument>, Option<StoreVersion>)> {
        let (doc, token) = match self.store.read().await? {
            None => (RegistryDocument::default(), None),
            Some((bytes, token)) => (RegistryDocument::from_json(&bytes, &self.location())?, Some(token)),
        };
        let doc = Arc::new(doc);
        *self.cache.lock().await = Some(Cached { doc: Arc::clone(&doc), fetched: Instant::now() });
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
        Ok(plan::build(&current, &resolved, Utc::now(), doc.version + 1).1)
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
        loop {
            attempts += 1;
            let (doc, token) = self.read_fresh().await?;
            let current = doc.project(project).registry().clone();
            let resolved = validate::validate(&plan::merged(&current, defs, mode), offline, &cache, engine).await?;
            let now = Utc::now();
            let (next, plan) = plan::build(&current, &resolved, now, doc.version + 1);
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
