//! [`ParquetFixture`]: the offline conformance suite's fixture for this
//! store, writing each source as a folder of Parquet files on local disk,
//! `memory://` or any other location (S3 through a test server).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use async_trait::async_trait;
use feature_store_core::offline::OfflineStore;
use feature_store_core::testing::offline::OfflineFixture;
use feature_store_object_store::blobs::Blobs;

use crate::ParquetOfflineStore;

/// Sources as folders of Parquet files (one file per batch) under a root location.
pub struct ParquetFixture {
    root: String,
    blobs: Blobs,
    store: Arc<ParquetOfflineStore>,
    _guards: Vec<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for ParquetFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFixture").field("root", &self.root).finish_non_exhaustive()
    }
}

impl ParquetFixture {
    /// Sources in a new temporary folder.
    pub fn local() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display().to_string();
        Self::at(root, BTreeMap::new()).with_guard(dir)
    }

    /// Sources in a `memory://` store of their own.
    pub fn memory() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::at(format!("memory://suite-{}-{n}/data", std::process::id()), BTreeMap::new())
    }

    /// Sources under `root` (a folder path or URL) with object-store `options`.
    pub fn at(root: impl Into<String>, options: BTreeMap<String, String>) -> Self {
        let root = root.into();
        let base = std::env::temp_dir();
        Self {
            blobs: Blobs::new(base.clone(), options.clone()),
            store: Arc::new(ParquetOfflineStore::new(base, options)),
            root,
            _guards: Vec::new(),
        }
    }

    /// Sources in a new temporary folder, read under a memory limit of
    /// `bytes`, so that joins and aggregations spill.
    pub fn spilling(bytes: usize) -> Self {
        let mut fixture = Self::local();
        let store = ParquetOfflineStore::new(std::env::temp_dir(), BTreeMap::new()).with_memory_limit(Some(bytes));
        fixture.store = Arc::new(store);
        fixture
    }

    /// Keeps `guard` (a server, a folder) alive as long as the fixture.
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self._guards.push(Box::new(guard));
        self
    }
}

#[async_trait]
impl OfflineFixture for ParquetFixture {
    async fn put_source(&self, name: &str, batches: Vec<RecordBatch>) -> String {
        let folder = format!("{}/{name}", self.root.trim_end_matches('/'));
        for (i, batch) in batches.iter().enumerate() {
            let mut bytes = Vec::new();
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).expect("parquet writer");
            writer.write(batch).expect("write batch");
            writer.close().expect("close");
            self.blobs.put_object(&format!("{folder}/part-{i}.parquet"), bytes.into()).await.expect("put source file");
        }
        folder
    }

    fn store(&self) -> Arc<dyn OfflineStore> {
        Arc::clone(&self.store) as _
    }
}

#[cfg(test)]
mod local_files {
    feature_store_core::offline_store_suite!(async { super::ParquetFixture::local() });
}

#[cfg(test)]
mod memory_urls {
    feature_store_core::offline_store_suite!(async { super::ParquetFixture::memory() });
}

/// Aggregations under a memory limit small enough that every view spills
/// (checked through the spill metrics in the e2e tests): results must not change.
#[cfg(test)]
mod spilled {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_aggregations_match_the_definition() {
        // 500 KiB: a pool of 250 KiB (half the limit), small enough that
        // every view spills, large enough for the busiest key's rows.
        let fixture = super::ParquetFixture::spilling(500 * 1024);
        feature_store_core::testing::offline::random_aggregations_match_the_definition(&fixture).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_tiles_match_the_reference() {
        // The key sort below the tiles spills.
        let fixture = super::ParquetFixture::spilling(500 * 1024);
        feature_store_core::testing::offline::random_tiles_match_the_reference(&fixture).await;
    }
}
