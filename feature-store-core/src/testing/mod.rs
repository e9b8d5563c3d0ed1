//! Behavioural suites that every backend must pass, run by each backend's
//! tests (compiled with the `testing` cargo feature, or in this crate's tests).
//!
//! - [`online`]: the online store contract, one behaviour per function, and
//!   [`online_store_suite!`](crate::online_store_suite) for one test per behaviour.
//! - [`offline`]: the offline store contract against exact tables and the
//!   reference join, and [`offline_store_suite!`](crate::offline_store_suite).
//! - [`registry_store_conformance`]: compare-and-swap registry storage.

pub mod offline;
pub mod online;

pub use online::online_store_conformance;

use std::sync::Arc;

use bytes::Bytes;

use crate::registry::{RegistryStore, WriteOutcome};

/// Checks the compare-and-swap contract of a [`RegistryStore`] that starts empty.
///
/// Panics with a description of the first broken rule.
pub async fn registry_store_conformance(store: Arc<dyn RegistryStore>) {
    assert!(store.read().await.expect("read empty").is_none(), "a new store must be empty");
    let v1 = match store.write(Bytes::from_static(b"{\"n\":1}"), None).await.expect("first write") {
        WriteOutcome::Written(v) => v,
        WriteOutcome::Conflict => panic!("first write to an empty store conflicted"),
    };
    assert_eq!(
        store.write(Bytes::from_static(b"{\"n\":9}"), None).await.expect("create again"),
        WriteOutcome::Conflict,
        "create-if-absent must fail once a document exists"
    );
    let (bytes, token) = store.read().await.expect("read").expect("document exists");
    assert_eq!(&bytes[..], b"{\"n\":1}");
    assert_eq!(token, v1, "read must return the version the write produced");
    let v2 = match store.write(Bytes::from_static(b"{\"n\":2}"), Some(&v1)).await.expect("update") {
        WriteOutcome::Written(v) => v,
        WriteOutcome::Conflict => panic!("update with the current version conflicted"),
    };
    assert_ne!(v1, v2, "a write must produce a new version");
    assert_eq!(
        store.write(Bytes::from_static(b"{\"n\":3}"), Some(&v1)).await.expect("stale update"),
        WriteOutcome::Conflict,
        "update with a stale version must conflict"
    );
    assert_eq!(&store.read().await.expect("read").expect("exists").0[..], b"{\"n\":2}", "stale write must not land");

    // Concurrent increments: every successful write counts, none is lost.
    let writers = 8;
    let per_writer = 5;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < per_writer {
                let (bytes, token) = store.read().await.expect("read").expect("exists");
                let n: u64 =
                    serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")["n"].as_u64().expect("n");
                let next = Bytes::from(format!("{{\"n\":{}}}", n + 1));
                if let WriteOutcome::Written(_) = store.write(next, Some(&token)).await.expect("write") {
                    done += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let (bytes, _) = store.read().await.expect("read").expect("exists");
    let n = serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")["n"].as_u64().expect("n");
    assert_eq!(n, 2 + writers * per_writer, "concurrent compare-and-swap lost updates");
}

#[cfg(test)]
mod memory_online {
    crate::online_store_suite!(async {
        (
            std::sync::Arc::new(crate::online::MemoryOnlineStore::new())
                as std::sync::Arc<dyn crate::online::OnlineStore>,
            (),
        )
    });
}

#[cfg(test)]
mod memory_offline {
    crate::offline_store_suite!(async { crate::testing::offline::MemoryFixture::default() });
}

/// The suites can fail: deliberately broken backends are caught.
#[cfg(test)]
mod broken_backends {
    use std::sync::Arc;

    use async_trait::async_trait;

    use crate::Result;
    use crate::historical::{BatchStream, HistoricalRequest};
    use crate::model::DataSource;
    use crate::offline::{LatestRequest, LatestRows, OfflineStore, SourceSchema};
    use crate::online::{MemoryOnlineStore, OnlineRows, OnlineStore, OnlineView, StoredRow, ViewRead, WriteStats};
    use crate::testing::offline::{MemoryFixture, OfflineFixture};

    /// Retrieval that ignores every view's ttl.
    #[derive(Debug)]
    struct IgnoresTtl(Arc<dyn OfflineStore>);

    #[async_trait]
    impl OfflineStore for IgnoresTtl {
        async fn source_schema(&self, source: &DataSource) -> Result<SourceSchema> {
            self.0.source_schema(source).await
        }

        async fn file_problems(
            &self,
            source: &DataSource,
            declared: &[crate::offline::DeclaredColumn],
        ) -> Result<Vec<String>> {
            self.0.file_problems(source, declared).await
        }

        async fn get_historical_features(&self, mut request: HistoricalRequest) -> Result<BatchStream> {
            request.views.iter_mut().for_each(|v| v.view.ttl = None);
            self.0.get_historical_features(request).await
        }

        async fn latest_rows(&self, request: LatestRequest) -> Result<LatestRows> {
            self.0.latest_rows(request).await
        }

        async fn tiles(&self, request: crate::offline::TilesRequest) -> Result<BatchStream> {
            self.0.tiles(request).await
        }
    }

    struct BrokenFixture(MemoryFixture);

    #[async_trait]
    impl OfflineFixture for BrokenFixture {
        async fn put_source(&self, name: &str, batches: Vec<arrow_array::RecordBatch>) -> String {
            self.0.put_source(name, batches).await
        }

        fn store(&self) -> Arc<dyn OfflineStore> {
            Arc::new(IgnoresTtl(self.0.store()))
        }
    }

    #[tokio::test]
    #[should_panic(expected = "expected:")]
    async fn an_offline_store_ignoring_ttl_fails_the_suite() {
        super::offline::ttl_bounds_are_inclusive(&BrokenFixture(MemoryFixture::default())).await;
    }

    /// Writes that replace whatever is stored, older or not.
    #[derive(Debug, Default)]
    struct Regresses(MemoryOnlineStore);

    #[async_trait]
    impl OnlineStore for Regresses {
        fn describe(&self) -> String {
            "regressing store".into()
        }

        async fn write(&self, project: &str, view: &OnlineView, rows: &OnlineRows) -> Result<WriteStats> {
            let keys: Vec<String> = (0..rows.len()).map(|i| rows.key(i).to_owned()).collect();
            self.0.delete(project, &view.name, &keys).await?;
            self.0.write(project, view, rows).await
        }

        async fn read(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>> {
            self.0.read(project, reads).await
        }

        async fn compare_and_swap(
            &self,
            project: &str,
            view: &OnlineView,
            rows: &OnlineRows,
            expected: &[Option<StoredRow>],
        ) -> Result<Vec<bool>> {
            self.0.compare_and_swap(project, view, rows, expected).await
        }

        async fn delete(&self, project: &str, view: &str, keys: &[String]) -> Result<u64> {
            self.0.delete(project, view, keys).await
        }

        async fn drop_view(&self, project: &str, view: &str) -> Result<()> {
            self.0.drop_view(project, view).await
        }
    }

    #[tokio::test]
    #[should_panic(expected = "an older event time must be skipped")]
    async fn an_online_store_that_regresses_fails_the_suite() {
        super::online::never_regress(Arc::new(Regresses::default()), "p").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "regressed")]
    async fn an_online_store_that_regresses_fails_the_interleaving_property() {
        super::online::random_interleavings_never_regress(Arc::new(Regresses::default()), "p").await;
    }

    /// Swaps that check the expected row, then write after a pause: the
    /// check and the write are not one step.
    #[derive(Debug, Default)]
    struct RacySwaps(MemoryOnlineStore);

    #[async_trait]
    impl OnlineStore for RacySwaps {
        fn describe(&self) -> String {
            "racy store".into()
        }

        async fn write(&self, project: &str, view: &OnlineView, rows: &OnlineRows) -> Result<WriteStats> {
            self.0.write(project, view, rows).await
        }

        async fn read(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>> {
            self.0.read(project, reads).await
        }

        async fn compare_and_swap(
            &self,
            project: &str,
            view: &OnlineView,
            rows: &OnlineRows,
            expected: &[Option<StoredRow>],
        ) -> Result<Vec<bool>> {
            crate::online::check_expected(rows, expected)?;
            let keys: Vec<String> = (0..rows.len()).map(|i| rows.key(i).to_owned()).collect();
            let read = [ViewRead::new(view.name.clone(), Vec::<String>::new(), keys.clone())];
            let before = self.0.read(project, &read).await?.remove(0);
            let ok: Vec<bool> = before.iter().zip(expected).map(|(b, e)| b == e).collect();
            tokio::task::yield_now().await;
            let mut chosen = OnlineRows::new(rows.features().to_vec());
            for i in (0..rows.len()).filter(|i| ok[*i]) {
                chosen.begin_row(rows.key(i).to_owned(), rows.event_ts(i));
                for f in 0..rows.features().len() {
                    chosen.push_value(rows.value(i, f));
                }
            }
            let chosen_keys: Vec<String> = (0..chosen.len()).map(|i| chosen.key(i).to_owned()).collect();
            self.0.delete(project, &view.name, &chosen_keys).await?;
            self.0.write(project, view, &chosen).await?;
            Ok(ok)
        }

        async fn delete(&self, project: &str, view: &str, keys: &[String]) -> Result<u64> {
            self.0.delete(project, view, keys).await
        }

        async fn drop_view(&self, project: &str, view: &str) -> Result<()> {
            self.0.drop_view(project, view).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "concurrent swaps lost updates")]
    async fn an_online_store_with_racy_swaps_fails_the_suite() {
        super::online::compare_and_swap_is_atomic_per_key(Arc::new(RacySwaps::default()), "p").await;
    }
}
