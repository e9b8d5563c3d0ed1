//! The online store trait, its data types, and the in-memory reference store.
//!
//! Online stores keep, per project, view and entity key, the newest row of
//! feature values with its event time. Keys and values arrive already encoded
//! ([`codec`]), so backends only move bytes; the facade
//! ([`crate::FeatureStore::get_online_features`]) decodes them into Arrow and
//! applies statuses and the ttl.

mod blocking;
pub mod codec;
mod memory;
mod response;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use blocking::BlockingOnlineStore;
pub use memory::MemoryOnlineStore;
pub use response::{FeatureStatus, FeatureValue, OnlineResponse};

use crate::Result;

/// What a backend needs to know about a view when writing it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OnlineView {
    /// The view's name.
    pub name: String,
    /// The view's ttl: stores with expiry drop a value this long after its event time.
    pub ttl: Option<Duration>,
}

impl OnlineView {
    /// A view description.
    pub fn new(name: impl Into<String>, ttl: Option<Duration>) -> Self {
        Self { name: name.into(), ttl }
    }
}

/// Rows to write for one view: per row an entity key, an event time and one
/// encoded value (or null) per feature, held in one buffer. Clones share
/// the rows (a store's write hands them to a blocking thread: a deep copy
/// of a 10,000-row batch's keys and values cost ingestion into SQLite 2 %
/// of its time); the first change to a shared one copies it.
#[derive(Debug, Clone, Default)]
pub struct OnlineRows {
    rows: Arc<Rows>,
}

#[derive(Debug, Clone, Default)]
struct Rows {
    features: Vec<String>,
    keys: Vec<String>,
    event_ts: Vec<i64>,
    /// `rows * features + 1` offsets into `data`.
    offsets: Vec<u32>,
    valid: Vec<bool>,
    data: Vec<u8>,
}

impl OnlineRows {
    /// Empty rows for `features`.
    pub fn new(features: Vec<String>) -> Self {
        Self { rows: Arc::new(Rows { features, offsets: vec![0], ..Rows::default() }) }
    }

    /// Feature names, the order of every row's values.
    pub fn features(&self) -> &[String] {
        &self.rows.features
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.keys.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.keys.is_empty()
    }

    /// Starts a row; follow with exactly one `push_*` per feature.
    pub fn begin_row(&mut self, key: String, event_ts_micros: i64) {
        let rows = Arc::make_mut(&mut self.rows);
        rows.keys.push(key);
        rows.event_ts.push(event_ts_micros);
    }

    /// Appends the next value of the current row through `encode`, which
    /// writes the bytes and returns false for null.
    pub fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> bool) {
        let rows = Arc::make_mut(&mut self.rows);
        let valid = encode(&mut rows.data);
        rows.valid.push(valid);
        rows.offsets.push(rows.data.len() as u32);
    }

    /// Appends the next value of the current row.
    pub fn push_value(&mut self, value: Option<&[u8]>) {
        self.push_with(|buf| match value {
            Some(v) => {
                buf.extend_from_slice(v);
                true
            }
            None => false,
        });
    }

    /// Entity key of row `i`.
    pub fn key(&self, i: usize) -> &str {
        &self.rows.keys[i]
    }

    /// Event time of row `i`, microseconds since the epoch.
    pub fn event_ts(&self, i: usize) -> i64 {
        self.rows.event_ts[i]
    }

    /// Encoded value of feature `f` in row `i`; `None` for null.
    pub fn value(&self, i: usize, f: usize) -> Option<&[u8]> {
        let r = &*self.rows;
        let at = i * r.features.len() + f;
        r.valid[at].then(|| &r.data[r.offsets[at] as usize..r.offsets[at + 1] as usize])
    }

    /// Appends row `i` as a name-prefixed record of every feature, nulls
    /// included ([`codec::encode_full_record`]), the payload stores keep per key.
    pub fn encode_record(&self, i: usize, out: &mut Vec<u8>) {
        let fields = self.rows.features.iter().enumerate().map(|(f, name)| (name.as_str(), self.value(i, f)));
        codec::encode_full_record(fields, out);
    }
}

/// One view's part of a read: which features of which keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ViewRead {
    /// The view.
    pub view: String,
    /// Features to return, in this order (shared with the cached resolution,
    /// so a request does not copy the names).
    pub features: Arc<[String]>,
    /// Entity keys (see [`codec::entity_keys`]), without repeats.
    pub keys: Vec<String>,
}

impl ViewRead {
    /// A read of `features` for `keys` of `view`.
    pub fn new(view: impl Into<String>, features: impl Into<Arc<[String]>>, keys: Vec<String>) -> Self {
        Self { view: view.into(), features: features.into(), keys }
    }
}

/// A stored row as read back: its event time and its record of named values
/// ([`codec::encode_record`]). Backends hand the record over undecoded, so a
/// read costs one buffer per row, not one per value; the caller picks the
/// requested features out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Event time, microseconds since the epoch.
    pub event_ts: i64,
    /// The row's values by name ([`codec::encode_full_record`]).
    pub record: Bytes,
}

impl StoredRow {
    /// A row read back.
    pub fn new(event_ts: i64, record: impl Into<Bytes>) -> Self {
        Self { event_ts, record: record.into() }
    }

    /// The encoded value of each of `features`; `None` where the stored value
    /// is null or the feature was not written (a feature added to the view later).
    pub fn values(&self, features: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        codec::decode_record(&self.record, features)
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteStats {
    /// Rows stored.
    pub written: u64,
    /// Rows skipped because the store already held a newer event time.
    pub skipped_older: u64,
}

impl WriteStats {
    /// Stats of a write.
    pub fn new(written: u64, skipped_older: u64) -> Self {
        Self { written, skipped_older }
    }
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, other: Self) {
        self.written += other.written;
        self.skipped_older += other.skipped_older;
    }
}

/// Checks the arguments of [`OnlineStore::compare_and_swap`]: one expected
/// row per row, distinct keys. Backends call it first.
pub fn check_expected(rows: &OnlineRows, expected: &[Option<StoredRow>]) -> Result<()> {
    if rows.len() != expected.len() {
        return Err(crate::Error::InvalidArgument(format!(
            "compare_and_swap: {} rows but {} expected rows",
            rows.len(),
            expected.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    if let Some(i) = (0..rows.len()).find(|i| !seen.insert(rows.key(*i))) {
        return Err(crate::Error::InvalidArgument(format!(
            "compare_and_swap: key \"{}\" appears twice in one call",
            rows.key(i)
        )));
    }
    Ok(())
}

/// Latest feature values per entity for serving. Backends: memory
/// ([`MemoryOnlineStore`]), SQLite (`feature-store-sqlite`), Redis (`feature-store-redis`).
///
/// Every backend passes [`crate::testing::online_store_conformance`].
#[async_trait]
pub trait OnlineStore: Send + Sync + Debug {
    /// Short description with the location, for messages (`redis redis://host:6379`).
    fn describe(&self) -> String;

    /// Stores `rows` of `view`. A row whose event time is older than the one
    /// stored for its key is skipped, atomically per key, so out-of-order
    /// writes converge to the newest value; an equal event time overwrites.
    /// Rows of one call for the same key apply in order.
    async fn write(&self, project: &str, view: &OnlineView, rows: &OnlineRows) -> Result<WriteStats>;

    /// Reads every [`ViewRead`] in one call; the result has, per read and per
    /// key in its order, the stored row or `None`.
    async fn read(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>>;

    /// Replaces the stored row of each row's key with that row if the stored
    /// row is still `expected[i]` (`None`: no row), atomically per key, and
    /// says per row whether it did. Event times are not compared: the caller
    /// has decided. This is a read-modify-write without lost updates, which
    /// pushes into aggregation tiles need: read, merge, swap, and retry the
    /// keys that lost a race. Rows of one call have distinct keys.
    async fn compare_and_swap(
        &self,
        project: &str,
        view: &OnlineView,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> Result<Vec<bool>>;

    /// Deletes `keys` of `view`; returns how many existed.
    async fn delete(&self, project: &str, view: &str, keys: &[String]) -> Result<u64>;

    /// Deletes every key of `view`.
    async fn drop_view(&self, project: &str, view: &str) -> Result<()>;
}
