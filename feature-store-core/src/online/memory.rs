//! The in-memory reference online store.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use bytes::Bytes;

use super::{OnlineRows, OnlineStore, OnlineView, StoredRow, ViewRead, WriteStats};
use crate::Result;
use crate::online::check_expected;

type Rows = HashMap<String, (i64, Bytes)>;

/// Online values in a process-local map; the reference for the conformance
/// suite and handy in tests. Nothing persists.
#[derive(Debug, Default)]
pub struct MemoryOnlineStore {
    views: RwLock<HashMap<(String, String), Rows>>,
}

impl MemoryOnlineStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl OnlineStore for MemoryOnlineStore {
    fn describe(&self) -> String {
        "memory online store".into()
    }

    async fn write(&self, project: &str, view: &OnlineView, rows: &OnlineRows) -> Result<WriteStats> {
        let mut views = self.views.write().expect("poisoned");
        let table = views.entry((project.to_owned(), view.name.clone())).or_default();
        let mut stats = WriteStats::default();
        for i in 0..rows.len() {
            let ts = rows.event_ts(i);
            if table.get(rows.key(i)).is_some_and(|(stored, _)| *stored > ts) {
                stats.skipped_older += 1;
                continue;
            }
            let mut record = Vec::new();
            rows.encode_record(i, &mut record);
            table.insert(rows.key(i).to_owned(), (ts, Bytes::from(record)));
            stats.written += 1;
        }
        Ok(stats)
    }

    async fn read(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>> {
        let views = self.views.read().expect("poisoned");
        let mut out = Vec::with_capacity(reads.len());
        for r in reads {
            let table = views.get(&(project.to_owned(), r.view.clone()));
            let mut rows = Vec::with_capacity(r.keys.len());
            for k in &r.keys {
                rows.push(table.and_then(|t| t.get(k)).map(|(ts, record)| StoredRow::new(*ts, record.clone())));
            }
            out.push(rows);
        }
        Ok(out)
    }

    async fn compare_and_swap(
        &self,
        project: &str,
        view: &OnlineView,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> Result<Vec<bool>> {
        check_expected(rows, expected)?;
        let mut views = self.views.write().expect("poisoned");
        let table = views.entry((project.to_owned(), view.name.clone())).or_default();
        let mut out = Vec::with_capacity(rows.len());
        for (i, want) in expected.iter().enumerate() {
            let now = table.get(rows.key(i));
            let same = match (now, want) {
                (None, None) => true,
                (Some((ts, record)), Some(w)) => *ts == w.event_ts && *record == w.record,
                _ => false,
            };
            if same {
                let mut record = Vec::new();
                rows.encode_record(i, &mut record);
                table.insert(rows.key(i).to_owned(), (rows.event_ts(i), Bytes::from(record)));
            }
            out.push(same);
        }
        Ok(out)
    }

    async fn delete(&self, project: &str, view: &str, keys: &[String]) -> Result<u64> {
        let mut views = self.views.write().expect("poisoned");
        let Some(table) = views.get_mut(&(project.to_owned(), view.to_owned())) else { return Ok(0) };
        Ok(keys.iter().filter(|k| table.remove(k.as_str()).is_some()).count() as u64)
    }

    async fn drop_view(&self, project: &str, view: &str) -> Result<()> {
        self.views.write().expect("poisoned").remove(&(project.to_owned(), view.to_owned()));
        Ok(())
    }
}
