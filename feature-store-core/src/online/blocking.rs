//! One adapter for online stores with a blocking API (embedded databases):
//! a backend implements [`BlockingOnlineStore`] and gets [`OnlineStore`],
//! with calls run on tokio's blocking pool so no runtime thread waits on
//! disk, and small reads served inline, where a hop to another thread would
//! cost more than the lookup.

use std::fmt::Debug;

use async_trait::async_trait;

use super::{OnlineRows, OnlineStore, OnlineView, StoredRow, ViewRead, WriteStats};
use crate::{Error, Result};

/// A synchronous online store; see [`OnlineStore`] for the contract of each
/// call. Cloning must be cheap (an `Arc` inside): each call moves a clone to
/// a blocking thread.
pub trait BlockingOnlineStore: Clone + Send + Sync + Debug + 'static {
    /// Reads of at most this many keys in all run on the caller's thread.
    const INLINE_READ_KEYS: usize = 0;

    /// What the store is, for errors of its tasks (`SQLite online store`).
    const KIND: &'static str;

    /// Short description with the location, for messages.
    fn describe_store(&self) -> String;

    /// [`OnlineStore::write`], blocking.
    fn write_blocking(&self, project: &str, view: &str, rows: &OnlineRows) -> Result<WriteStats>;

    /// [`OnlineStore::read`], blocking.
    fn read_blocking(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>>;

    /// [`OnlineStore::compare_and_swap`], blocking; the adapter has checked
    /// the arguments ([`super::check_expected`]).
    fn compare_and_swap_blocking(
        &self,
        project: &str,
        view: &str,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> Result<Vec<bool>>;

    /// [`OnlineStore::delete`], blocking.
    fn delete_blocking(&self, project: &str, view: &str, keys: &[String]) -> Result<u64>;

    /// [`OnlineStore::drop_view`], blocking.
    fn drop_view_blocking(&self, project: &str, view: &str) -> Result<()>;
}

async fn on_blocking_pool<S: BlockingOnlineStore, T: Send + 'static>(
    store: &S,
    f: impl FnOnce(&S) -> Result<T> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| Error::backend(format!("{} task", S::KIND), e))?
}

#[async_trait]
impl<S: BlockingOnlineStore> OnlineStore for S {
    fn describe(&self) -> String {
        self.describe_store()
    }

    async fn write(&self, project: &str, view: &OnlineView, rows: &OnlineRows) -> Result<WriteStats> {
        let (project, name, rows) = (project.to_owned(), view.name.clone(), rows.clone());
        on_blocking_pool(self, move |s| s.write_blocking(&project, &name, &rows)).await
    }

    async fn read(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>> {
        if reads.iter().map(|r| r.keys.len()).sum::<usize>() <= S::INLINE_READ_KEYS {
            return self.read_blocking(project, reads);
        }
        let (project, reads) = (project.to_owned(), reads.to_vec());
        on_blocking_pool(self, move |s| s.read_blocking(&project, &reads)).await
    }

    async fn compare_and_swap(
        &self,
        project: &str,
        view: &OnlineView,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> Result<Vec<bool>> {
        super::check_expected(rows, expected)?;
        let (project, name, rows, expected) = (project.to_owned(), view.name.clone(), rows.clone(), expected.to_vec());
        on_blocking_pool(self, move |s| s.compare_and_swap_blocking(&project, &name, &rows, &expected)).await
    }

    async fn delete(&self, project: &str, view: &str, keys: &[String]) -> Result<u64> {
        let (project, view, keys) = (project.to_owned(), view.to_owned(), keys.to_vec());
        on_blocking_pool(self, move |s| s.delete_blocking(&project, &view, &keys)).await
    }

    async fn drop_view(&self, project: &str, view: &str) -> Result<()> {
        let (project, view) = (project.to_owned(), view.to_owned());
        on_blocking_pool(self, move |s| s.drop_view_blocking(&project, &view)).await
    }
}
