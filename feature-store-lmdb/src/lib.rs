//! The fast embedded online store: one LMDB file (the C library is compiled
//! in), so serving needs no server and a lookup is a B+tree walk inside a
//! memory map, with one copy of the value and no query to plan.
//!
//! Why it exists beside SQLite (`feature-store-sqlite`, the layout Feast users
//! know): a point lookup in a SQLite file of a few million rows costs several
//! microseconds of statement and record work, and a request reads one row per
//! view, so SQLite alone cannot serve 50 features of five views in tens of
//! microseconds; LMDB reads the same rows several times faster (figures in
//! `benchmarks/README.md`). Both keep the same rows and semantics and pass the
//! same conformance suite.
//!
//! Layout: one LMDB database in the file at `path` (its lock file is
//! `path-lock`). Key = `project \0 view \0 entity_key`; an entity key too long
//! for LMDB's key limit (511 bytes with the prefix) is replaced by `\x01` and
//! its SHA-256, which no text key can start with. Value = the event time (i64
//! microseconds, little-endian, 8 bytes) followed by the row's
//! [record](feature_store_core::online::codec::encode_full_record).
//!
//! Concurrency: any number of readers, in any number of processes, and one
//! writer at a time (LMDB serializes write transactions through the lock
//! file); readers never wait. Writes never regress: the stored event time is
//! read and compared inside the write transaction. Each write call is one
//! transaction, durable when it returns; a failed call leaves nothing of
//! itself behind.
//!
//! Limits, as LMDB's: not on network file systems; the file does not shrink
//! (freed pages are reused); it may grow to `map_size` (default 64 GiB of
//! address space, not disk); a process that forks after opening the store
//! cannot use it in the child (reported as an error, never attempted).
//! Rows are not expired; the view's ttl is enforced at read time by the caller.
#![warn(missing_docs)]

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use feature_store_core::online::{BlockingOnlineStore, OnlineRows, StoredRow, ViewRead, WriteStats};
use feature_store_core::repo::BackendOptions;
use feature_store_core::{Error as CoreError, Result as CoreResult};
use heed::types::Bytes as Raw;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, MdbError, WithoutTls};
use sha2::{Digest, Sha256};

/// Reads of at most this many keys run without leaving the calling task.
pub const INLINE_READ_KEYS: usize = 64;

/// Address space reserved for the file unless configured: the most it can grow to.
pub const DEFAULT_MAP_SIZE: usize = 64 << 30;

/// Errors of this crate; mapped into the core error at the trait boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file could not be opened or created.
    #[error("cannot open LMDB online store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: heed::Error,
    },
    /// The database's folder could not be created.
    #[error("cannot create the folder of LMDB online store {path}: {source}")]
    CreateDir {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A transaction failed.
    #[error("LMDB online store {path}: {source}")]
    Lmdb {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: heed::Error,
    },
    /// The file reached its configured size.
    #[error(
        "LMDB online store {path} is full ({map_size} bytes, online_store.map_size); raise map_size and rerun: the failed write left nothing behind"
    )]
    Full {
        /// The file.
        path: PathBuf,
        /// The configured size in bytes.
        map_size: usize,
    },
    /// The store was opened before this process forked.
    #[error(
        "LMDB online store {path} was opened before this process forked, and LMDB files cannot be used across fork(); open the store in the child (Python: multiprocessing start method \"spawn\"), or use online_store type sqlite"
    )]
    Forked {
        /// The file.
        path: PathBuf,
    },
    /// A stored value is too short to hold its event time.
    #[error(
        "LMDB online store {path}: the value of {key} is truncated (no event time); was it written by another program?"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The key, printably.
        key: String,
    },
    /// Project and view names longer than LMDB keys allow.
    #[error("LMDB online store {path}: project and view names \"{project}\"/\"{view}\" are too long for an LMDB key")]
    NamesTooLong {
        /// The file.
        path: PathBuf,
        /// The project.
        project: String,
        /// The view.
        view: String,
    },
}

impl From<Error> for CoreError {
    /// The core error names the store and its file once; the operation and
    /// the cause follow.
    fn from(e: Error) -> Self {
        let store = |path: &std::path::Path| format!("LMDB online store {}", path.display());
        match e {
            Error::Open { path, source } => {
                CoreError::StoreUnavailable { store: store(&path), source: format!("cannot open it: {source}").into() }
            }
            Error::CreateDir { path, source } => CoreError::StoreUnavailable {
                store: store(&path),
                source: format!("cannot create its folder: {source}").into(),
            },
            Error::Forked { ref path } => CoreError::StoreUnavailable { store: store(path), source: Box::new(e) },
            Error::Lmdb { path, source } => CoreError::backend(store(&path), source),
            other => CoreError::backend("LMDB online store", other),
        }
    }
}

/// Online store in one LMDB file.
#[derive(Debug, Clone)]
pub struct LmdbOnlineStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    map_size: usize,
    /// Opened on the first write, or on the first read once the file exists,
    /// so that opening a store creates no file.
    handle: OnceLock<Arc<Handle>>,
    opening: Mutex<()>,
    /// Touch every page when the file is first opened (see [`LmdbOnlineStore::with_preload`]).
    preload: bool,
}

/// An open environment, shared by every store of this process on the same file
/// (LMDB allows one per process and file).
struct Handle {
    env: Env<WithoutTls>,
    db: Database<'static, Raw, Raw>,
    /// The process that opened it; a forked child must not touch it.
    pid: u32,
    max_key: usize,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("path", &self.env.path()).field("pid", &self.pid).finish()
    }
}

/// Environments open in this process, by canonical path.
static OPEN: Mutex<Vec<(PathBuf, u32, Weak<Handle>)>> = Mutex::new(Vec::new());

impl LmdbOnlineStore {
    /// A store in the database file at `path`, which may grow to `map_size`
    /// bytes (a multiple of the page size; [`DEFAULT_MAP_SIZE`] when `None`).
    /// Nothing is touched until the first write, which creates the file and
    /// its folder; reads before that find nothing.
    pub fn open(path: impl AsRef<Path>, map_size: Option<usize>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if path.is_dir() {
            return Err(Error::Open {
                path: path.clone(),
                source: heed::Error::Io(std::io::Error::other("the path is a folder; name a file")),
            });
        }
        let map_size = map_size.unwrap_or(DEFAULT_MAP_SIZE);
        let page = 4096;
        let map_size = map_size.div_ceil(page) * page;
        Ok(Self {
            inner: Arc::new(Inner { path, map_size, handle: OnceLock::new(), opening: Mutex::new(()), preload: false }),
        })
    }

    /// Reads every row once when the file is opened (now, if it exists), so
    /// its pages are mapped before the first request: a serving process then
    /// never pays a page fault on a lookup, at a start-up cost of about a
    /// second per few million rows. Without it the first lookups of each page
    /// fault it in (a few microseconds each) until traffic has touched them.
    pub fn with_preload(self, preload: bool) -> Result<Self, Error> {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            path: shared.path.clone(),
            map_size: shared.map_size,
            handle: OnceLock::new(),
            opening: Mutex::new(()),
            preload: shared.preload,
        });
        inner.preload = preload;
        if preload {
            inner.handle(false)?;
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// A store from an `online_store:` section with `type: lmdb`: `path`
    /// (default `data/online.lmdb` in the repo), `map_size` (the most the
    /// file may grow to, e.g. `64GiB`) and `preload` (see [`Self::with_preload`]).
    pub fn from_options(options: &BackendOptions<'_>) -> CoreResult<Self> {
        options.check_known(&["path", "map_size", "preload"])?;
        let path = options.path("path", "data/online.lmdb");
        let map_size = options.size("map_size")?;
        let preload = options.bool("preload", false)?;
        Ok(Self::open(path, map_size)?.with_preload(preload)?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// The path with its folder resolved, so two spellings of one file share a handle.
fn canonical(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.canonicalize()?,
        None => std::env::current_dir()?,
    };
    Ok(dir.join(name))
}

impl Inner {
    fn lmdb(&self, source: heed::Error) -> Error {
        match source {
            heed::Error::Mdb(MdbError::MapFull) => Error::Full { path: self.path.clone(), map_size: self.map_size },
            source => Error::Lmdb { path: self.path.clone(), source },
        }
    }

    /// The open environment; `None` when `create` is false and the file does not exist yet.
    fn handle(&self, create: bool) -> Result<Option<Arc<Handle>>, Error> {
        if let Some(h) = self.handle.get() {
            return self.checked(h).map(Some);
        }
        let _guard = self.opening.lock().expect("poisoned");
        if let Some(h) = self.handle.get() {
            return self.checked(h).map(Some);
        }
        if !create && !self.path.is_file() {
            return Ok(None);
        }
        if create && let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir { path: self.path.clone(), source })?;
        }
        let h = self.shared()?;
        if self.preload {
            self.touch(&h)?;
        }
        let _ = self.handle.set(Arc::clone(&h));
        Ok(Some(h))
    }

    /// Reads one byte of every key and value, mapping every page of the tree.
    fn touch(&self, h: &Handle) -> Result<(), Error> {
        let txn = h.env.read_txn().map_err(|e| self.lmdb(e))?;
        let mut sum = 0u8;
        for entry in h.db.iter(&txn).map_err(|e| self.lmdb(e))? {
            let (k, v) = entry.map_err(|e| self.lmdb(e))?;
            sum = sum.wrapping_add(k.first().copied().unwrap_or(0)).wrapping_add(v.last().copied().unwrap_or(0));
        }
        std::hint::black_box(sum);
        Ok(())
    }

    fn checked(&self, h: &Arc<Handle>) -> Result<Arc<Handle>, Error> {
        if h.pid != std::process::id() {
            return Err(Error::Forked { path: self.path.clone() });
        }
        Ok(Arc::clone(h))
    }

    /// This process's handle on the file, opened if no store holds one.
    fn shared(&self) -> Result<Arc<Handle>, Error> {
        let open_err = |source| Error::Open { path: self.path.clone(), source };
        let canon = canonical(&self.path).map_err(|e| open_err(heed::Error::Io(e)))?;
        let pid = std::process::id();
        let mut registry = OPEN.lock().expect("poisoned");
        registry.retain(|(_, owner, w)| *owner != pid || w.strong_count() > 0);
        if let Some((_, owner, w)) = registry.iter().find(|(p, _, _)| *p == canon) {
            if *owner != pid {
                return Err(Error::Forked { path: self.path.clone() });
            }
            if let Some(h) = w.upgrade() {
                return Ok(h);
            }
        }
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(self.map_size).max_readers(1024);
        // SAFETY: the file is only ever accessed through LMDB, whose lock file
        // coordinates readers and the writer across processes; this process
        // opens it once (the registry above) and never uses a handle after a
        // fork (checked by pid before every use). NO_SUB_DIR names a file
        // rather than a folder; NO_READ_AHEAD suits random point reads.
        #[allow(unsafe_code)]
        let env = unsafe {
            options.flags(EnvFlags::NO_SUB_DIR | EnvFlags::NO_READ_AHEAD);
            options.open(&canon)
        }
        .map_err(|e| match e {
            heed::Error::EnvAlreadyOpened => Error::Forked { path: self.path.clone() },
            e => open_err(e),
        })?;
        // Reader slots of processes that died mid-read would otherwise stay taken.
        env.clear_stale_readers().map_err(open_err)?;
        let txn = env.read_txn().map_err(open_err)?;
        let db = env
            .open_databases_and_commit(txn, |opener, txn| {
                opener.open_database::<Raw, Raw>(txn, None).map(CommitOrAbort::<_, ()>::Commit)
            })
            .map_err(open_err)?
            .commit()
            .flatten()
            .ok_or_else(|| open_err(heed::Error::Io(std::io::Error::other("the main database is missing"))))?;
        let max_key = env.max_key_size();
        let handle = Arc::new(Handle { env, db, pid, max_key });
        registry.push((canon, pid, Arc::downgrade(&handle)));
        Ok(handle)
    }

    /// `project \0 view \0`, the prefix of every key of a view.
    fn prefix(&self, h: &Handle, project: &str, view: &str, out: &mut Vec<u8>) -> Result<(), Error> {
        out.clear();
        out.extend_from_slice(project.as_bytes());
        out.push(0);
        out.extend_from_slice(view.as_bytes());
        out.push(0);
        if out.len() + 33 > h.max_key {
            return Err(Error::NamesTooLong { path: self.path.clone(), project: project.into(), view: view.into() });
        }
        Ok(())
    }

    /// Appends the entity part of a key to `out`, which holds the view's prefix.
    fn push_entity(h: &Handle, entity: &str, out: &mut Vec<u8>) {
        if out.len() + entity.len() <= h.max_key && entity.as_bytes().first().is_none_or(|b| *b != 1) {
            out.extend_from_slice(entity.as_bytes());
        } else {
            out.push(1);
            out.extend_from_slice(&Sha256::digest(entity.as_bytes()));
        }
    }

    fn read(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>, Error> {
        let Some(h) = self.handle(false)? else {
            return Ok(reads.iter().map(|r| vec![None; r.keys.len()]).collect());
        };
        // One read transaction for the whole call: one consistent snapshot.
        let txn = h.env.read_txn().map_err(|e| self.lmdb(e))?;
        let mut key = Vec::with_capacity(128);
        let mut out = Vec::with_capacity(reads.len());
        for r in reads {
            self.prefix(&h, project, &r.view, &mut key)?;
            let prefix = key.len();
            let mut rows = Vec::with_capacity(r.keys.len());
            for entity in &r.keys {
                key.truncate(prefix);
                Self::push_entity(&h, entity, &mut key);
                rows.push(match h.db.get(&txn, &key).map_err(|e| self.lmdb(e))? {
                    None => None,
                    Some(value) => {
                        let Some((ts, record)) = value.split_first_chunk::<8>() else {
                            return Err(Error::Corrupt {
                                path: self.path.clone(),
                                key: format!("{project}/{}/{entity}", r.view),
                            });
                        };
                        Some(StoredRow::new(i64::from_le_bytes(*ts), Bytes::copy_from_slice(record)))
                    }
                });
            }
            out.push(rows);
        }
        Ok(out)
    }

    fn write(&self, project: &str, view: &str, rows: &OnlineRows) -> Result<WriteStats, Error> {
        let h = self.handle(true)?.expect("created on write");
        let mut txn = h.env.write_txn().map_err(|e| self.lmdb(e))?;
        let mut stats = WriteStats::default();
        let mut key = Vec::with_capacity(128);
        self.prefix(&h, project, view, &mut key)?;
        let prefix = key.len();
        let mut value = Vec::new();
        for i in 0..rows.len() {
            key.truncate(prefix);
            Self::push_entity(&h, rows.key(i), &mut key);
            let ts = rows.event_ts(i);
            let older =
                h.db.get(&txn, &key)
                    .map_err(|e| self.lmdb(e))?
                    .and_then(|v| v.first_chunk::<8>().map(|t| i64::from_le_bytes(*t)))
                    .is_some_and(|stored| stored > ts);
            if older {
                stats.skipped_older += 1;
                continue;
            }
            value.clear();
            value.extend_from_slice(&ts.to_le_bytes());
            rows.encode_record(i, &mut value);
            h.db.put(&mut txn, &key, &value).map_err(|e| self.lmdb(e))?;
            stats.written += 1;
        }
        txn.commit().map_err(|e| self.lmdb(e))?;
        Ok(stats)
    }

    fn compare_and_swap(
        &self,
        project: &str,
        view: &str,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> Result<Vec<bool>, Error> {
        let h = self.handle(true)?.expect("created on write");
        // One write transaction: LMDB serializes writers, across processes too.
        let mut txn = h.env.write_txn().map_err(|e| self.lmdb(e))?;
        let mut key = Vec::with_capacity(128);
        self.prefix(&h, project, view, &mut key)?;
        let prefix = key.len();
        let mut value = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for (i, want) in expected.iter().enumerate() {
            key.truncate(prefix);
            Self::push_entity(&h, rows.key(i), &mut key);
            let same = match (h.db.get(&txn, &key).map_err(|e| self.lmdb(e))?, want) {
                (None, None) => true,
                (Some(stored), Some(w)) => stored
                    .split_first_chunk::<8>()
                    .is_some_and(|(ts, record)| i64::from_le_bytes(*ts) == w.event_ts && record == &w.record[..]),
                _ => false,
            };
            if same {
                value.clear();
                value.extend_from_slice(&rows.event_ts(i).to_le_bytes());
                rows.encode_record(i, &mut value);
                h.db.put(&mut txn, &key, &value).map_err(|e| self.lmdb(e))?;
            }
            out.push(same);
        }
        txn.commit().map_err(|e| self.lmdb(e))?;
        Ok(out)
    }

    fn delete(&self, project: &str, view: &str, keys: &[String]) -> Result<u64, Error> {
        let Some(h) = self.handle(false)? else { return Ok(0) };
        let mut txn = h.env.write_txn().map_err(|e| self.lmdb(e))?;
        let mut key = Vec::with_capacity(128);
        self.prefix(&h, project, view, &mut key)?;
        let prefix = key.len();
        let mut n = 0;
        for entity in keys {
            key.truncate(prefix);
            Self::push_entity(&h, entity, &mut key);
            n += u64::from(h.db.delete(&mut txn, &key).map_err(|e| self.lmdb(e))?);
        }
        txn.commit().map_err(|e| self.lmdb(e))?;
        Ok(n)
    }

    fn drop_view(&self, project: &str, view: &str) -> Result<(), Error> {
        let Some(h) = self.handle(false)? else { return Ok(()) };
        let mut start = Vec::new();
        self.prefix(&h, project, view, &mut start)?;
        // Every key of the view sorts between `project\0view\0` and `project\0view\x01`.
        let mut end = start.clone();
        *end.last_mut().expect("non-empty") = 1;
        let mut txn = h.env.write_txn().map_err(|e| self.lmdb(e))?;
        let range = (Bound::Included(&start[..]), Bound::Excluded(&end[..]));
        h.db.delete_range(&mut txn, &range).map_err(|e| self.lmdb(e))?;
        txn.commit().map_err(|e| self.lmdb(e))?;
        Ok(())
    }
}

impl BlockingOnlineStore for LmdbOnlineStore {
    const INLINE_READ_KEYS: usize = INLINE_READ_KEYS;
    const KIND: &'static str = "LMDB online store";

    fn describe_store(&self) -> String {
        format!("{} {}", Self::KIND, self.inner.path.display())
    }

    fn write_blocking(&self, project: &str, view: &str, rows: &OnlineRows) -> CoreResult<WriteStats> {
        Ok(self.inner.write(project, view, rows)?)
    }

    fn read_blocking(&self, project: &str, reads: &[ViewRead]) -> CoreResult<Vec<Vec<Option<StoredRow>>>> {
        Ok(self.inner.read(project, reads)?)
    }

    fn compare_and_swap_blocking(
        &self,
        project: &str,
        view: &str,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> CoreResult<Vec<bool>> {
        Ok(self.inner.compare_and_swap(project, view, rows, expected)?)
    }

    fn delete_blocking(&self, project: &str, view: &str, keys: &[String]) -> CoreResult<u64> {
        Ok(self.inner.delete(project, view, keys)?)
    }

    fn drop_view_blocking(&self, project: &str, view: &str) -> CoreResult<()> {
        Ok(self.inner.drop_view(project, view)?)
    }
}

#[cfg(test)]
mod tests {
    use feature_store_core::online::{OnlineStore, OnlineView};

    use super::*;

    fn one_row(key: &str, ts: i64, value: &[u8]) -> OnlineRows {
        let mut rows = OnlineRows::new(vec!["a".into()]);
        rows.begin_row(key.into(), ts);
        rows.push_value(Some(value));
        rows
    }

    async fn get(store: &LmdbOnlineStore, view: &str, key: &str) -> Option<(i64, Vec<Option<Vec<u8>>>)> {
        let got = store.read("p", &[ViewRead::new(view, vec!["a".to_owned()], vec![key.into()])]).await.unwrap();
        got.into_iter().next().unwrap().pop().unwrap().map(|r| (r.event_ts, r.values(&["a".to_owned()]).unwrap()))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/online.lmdb");
        let store = Arc::new(LmdbOnlineStore::open(&path, None).unwrap());
        feature_store_core::testing::online_store_conformance(Arc::clone(&store) as _, "p").await;
        // A second store on the same file shares the environment (LMDB allows one per process).
        let again = LmdbOnlineStore::open(dir.path().join("sub/../sub/online.lmdb"), None).unwrap();
        again.write("p", &OnlineView::new("v", None), &one_row("k=1", 5, b"\x03x")).await.unwrap();
        assert_eq!(get(&store, "v", "k=1").await.map(|r| r.0), Some(5));
        drop((store, again));
        // Contents survive reopening.
        let store = LmdbOnlineStore::open(&path, None).unwrap();
        assert_eq!(get(&store, "v", "k=1").await, Some((5, vec![Some(b"\x03x".to_vec())])));
    }

    #[tokio::test]
    async fn long_keys_are_hashed_and_views_drop_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbOnlineStore::open(dir.path().join("online.lmdb"), None).unwrap();
        let long = format!("k={}", "x".repeat(2000));
        let longer = format!("{long}y");
        store.write("p", &OnlineView::new("v", None), &one_row(&long, 1, b"\x03a")).await.unwrap();
        store.write("p", &OnlineView::new("v", None), &one_row(&longer, 2, b"\x03b")).await.unwrap();
        store.write("p", &OnlineView::new("v2", None), &one_row("k=1", 3, b"\x03c")).await.unwrap();
        assert_eq!(get(&store, "v", &long).await, Some((1, vec![Some(b"\x03a".to_vec())])));
        assert_eq!(get(&store, "v", &longer).await, Some((2, vec![Some(b"\x03b".to_vec())])));
        store.drop_view("p", "v").await.unwrap();
        assert_eq!(get(&store, "v", &long).await, None);
        assert_eq!(get(&store, "v2", "k=1").await.map(|r| r.0), Some(3), "another view must survive a drop");
    }

    #[tokio::test]
    async fn opening_creates_nothing_and_a_full_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.lmdb");
        let store = LmdbOnlineStore::open(&path, Some(64 * 1024)).unwrap();
        assert_eq!(get(&store, "v", "k").await, None);
        assert!(!path.exists(), "reads must not create the database");
        let mut rows = OnlineRows::new(vec!["a".into()]);
        let big = vec![3u8; 4000];
        for i in 0..100 {
            rows.begin_row(format!("k={i}"), 1);
            rows.push_value(Some(&big));
        }
        let err = store.write("p", &OnlineView::new("v", None), &rows).await.unwrap_err().to_string();
        assert!(err.contains("map_size") && err.contains("online.lmdb"), "{err}");
        assert_eq!(get(&store, "v", "k=0").await, None, "a failed write leaves nothing behind");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let store = LmdbOnlineStore::open(dir.path().join("file/online.lmdb"), None).unwrap();
        let err = store.write("p", &OnlineView::new("v", None), &one_row("k", 1, b"\x03a")).await.unwrap_err();
        assert!(matches!(err, CoreError::StoreUnavailable { .. }), "{err}");
    }
}

/// The online conformance suite, one test per behaviour, each on a new file.
#[cfg(test)]
mod suite {
    feature_store_core::online_store_suite!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::LmdbOnlineStore::open(dir.path().join("online.lmdb"), None).expect("open");
        (std::sync::Arc::new(store) as std::sync::Arc<dyn feature_store_core::online::OnlineStore>, dir)
    });
}
