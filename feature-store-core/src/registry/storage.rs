//! Where the registry document is kept: the [`RegistryStore`] trait and its
//! in-memory reference implementation.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;

use crate::Result;

/// Identifies one stored version of the registry document, for conditional writes.
///
/// Stores fill what they have: an HTTP etag, an object version, or a counter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreVersion {
    /// Entity tag of the stored object.
    pub e_tag: Option<String>,
    /// Store-specific version identifier.
    pub version: Option<String>,
}

/// Result of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The document was written; this identifies the new version.
    Written(StoreVersion),
    /// Someone else wrote first; re-read and try again.
    Conflict,
}

/// Storage for the single registry document, with compare-and-swap writes.
///
/// Implementations must make [`RegistryStore::write`] atomic: when two
/// writers hold the same `expected` version, exactly one succeeds.
#[async_trait]
pub trait RegistryStore: Send + Sync + Debug {
    /// Human-readable location, used in messages.
    fn location(&self) -> String;

    /// The current document and its version, or `None` if nothing was written yet.
    async fn read(&self) -> Result<Option<(Bytes, StoreVersion)>>;

    /// Writes `data` if the stored version is still `expected`
    /// (`None`: only if no document exists yet).
    async fn write(&self, data: Bytes, expected: Option<&StoreVersion>) -> Result<WriteOutcome>;
}

/// A registry kept in process memory; the reference implementation.
#[derive(Debug, Default)]
pub struct MemoryRegistryStore {
    state: Mutex<Option<(Bytes, u64)>>,
}

impl MemoryRegistryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn counter(v: u64) -> StoreVersion {
    StoreVersion { e_tag: None, version: Some(v.to_string()) }
}

#[async_trait]
impl RegistryStore for MemoryRegistryStore {
    fn location(&self) -> String {
        "memory registry".into()
    }

    async fn read(&self) -> Result<Option<(Bytes, StoreVersion)>> {
        Ok(self.state.lock().await.as_ref().map(|(b, v)| (b.clone(), counter(*v))))
    }

    async fn write(&self, data: Bytes, expected: Option<&StoreVersion>) -> Result<WriteOutcome> {
        let mut state = self.state.lock().await;
        let current = state.as_ref().map(|(_, v)| counter(*v));
        if current.as_ref() != expected {
            return Ok(WriteOutcome::Conflict);
        }
        let next = state.as_ref().map_or(1, |(_, v)| v + 1);
        *state = Some((data, next));
        Ok(WriteOutcome::Written(counter(next)))
    }
}
