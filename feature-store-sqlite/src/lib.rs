//! The embedded online store: one SQLite file (the library is compiled in),
//! so serving needs no server, as with Feast's default SQLite store.
//!
//! Layout: one table per view, `"online.<project>.<view>"(entity_key,
//! event_ts, record)`, keyed by `entity_key`, `WITHOUT ROWID` so a lookup is
//! one B-tree descent. A table per view rather than one keyed by (project,
//! view, key): every B-tree comparison then settles on the entity key, the
//! first column, in SQLite's fast path. With the shared table the first two
//! columns were always equal and each comparison took the general path;
//! upserts cost 27-34% more instructions. Dropping a view drops its table.
//! `record` holds the row's values as a name-prefixed
//! [record](feature_store_core::online::codec::encode_full_record), so views
//! can gain features without rewriting rows (the new ones read `NOT_FOUND`).
//! The file runs in WAL mode: readers never wait for a writer. Files written
//! by earlier versions, with every view in one `online_values` table, are
//! converted the first time they are opened.
//!
//! Writes never regress: an upsert whose `WHERE excluded.event_ts >=
//! event_ts` guard makes the check and the write one statement.
//! Rows are not expired (SQLite has no expiry); the view's ttl is enforced at
//! read time by the caller.
//!
//! WAL checkpoints (copying committed pages into the database file and
//! syncing it) run on a thread of their own, not in the committing write:
//! see [`Checkpoints`].
//!
//! Small reads (up to [`INLINE_READ_KEYS`] keys) run on the calling task: a
//! point lookup takes microseconds, less than a hop to a blocking thread.
//! Larger reads and all writes run on tokio's blocking pool.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use feature_store_core::online::{BlockingOnlineStore, OnlineRows, StoredRow, ViewRead, WriteStats};
use feature_store_core::repo::BackendOptions;
use feature_store_core::{Error as CoreError, Result as CoreResult};
use rusqlite::{Connection, OpenFlags, params};

/// Reads of at most this many keys run without leaving the calling task.
pub const INLINE_READ_KEYS: usize = 64;

/// The quoted name of a view's table (names are letters, digits and
/// underscores; a quote would be doubled). The prefix keeps clear of SQLite's
/// reserved `sqlite_` names.
fn table(project: &str, view: &str) -> String {
    format!("\"online.{}.{}\"", project.replace('"', "\"\""), view.replace('"', "\"\""))
}

fn create_sql(t: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {t} (entity_key TEXT NOT NULL PRIMARY KEY, event_ts INTEGER NOT NULL, \
         record BLOB NOT NULL) WITHOUT ROWID"
    )
}

fn upsert_sql(t: &str) -> String {
    format!(
        "INSERT INTO {t} (entity_key, event_ts, record) VALUES (?1, ?2, ?3) ON CONFLICT (entity_key) DO UPDATE \
         SET event_ts = excluded.event_ts, record = excluded.record WHERE excluded.event_ts >= {t}.event_ts"
    )
}

fn select_sql(t: &str) -> String {
    format!("SELECT event_ts, record FROM {t} WHERE entity_key = ?1")
}

/// WAL bytes after which a checkpoint runs (see [`connect`]).
const CHECKPOINT_BYTES: i64 = 40 << 20;

/// Page size of new database files: SQLite's default, chosen on purpose.
/// 16 KiB pages made large ingestion batches 6-12 % faster (a quarter of
/// the WAL writes), but a small commit then writes 16 KiB of WAL per key it
/// touches: freshness p99 at 10,000 events/s went from 18.6 to 63.0 ms
/// (Redis stream) and from 8.1 to 22.1 ms (JetStream) in same-day runs of
/// `benchmarks/streams.sh` (2026-12-07).
const PAGE_SIZE: i64 = 4096;

/// The WAL pages of [`CHECKPOINT_BYTES`] on `conn`'s file.
fn checkpoint_pages(conn: &Connection) -> rusqlite::Result<i32> {
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(i32::try_from(CHECKPOINT_BYTES / page.max(512)).unwrap_or(i32::MAX))
}

/// Checkpoints of the writer's WAL on a thread of their own. Run by the
/// committing writer (SQLite's automatic checkpoint), each one stalled the
/// write path for the copy of 40 MB of pages and the database file's sync:
/// about 100 ms of every 0.8 s of stream ingestion into SQLite, with the
/// machine's other core idle meanwhile. Here a commit that leaves
/// [`CHECKPOINT_BYTES`] or more in the WAL wakes the thread, whose passive
/// checkpoint runs beside later writes. A passive checkpoint cannot let
/// the WAL start over while commits keep coming, so the writer checkpoints
/// itself once the WAL reaches `limit` pages (what the thread has copied
/// by then is not copied again): the WAL stays bounded whatever the load.
/// Durability is unchanged: a commit is durable once in the WAL.
#[derive(Debug)]
struct Checkpoints {
    /// Pages in the WAL after the writer's last commit (its WAL hook).
    pages: Arc<AtomicI32>,
    /// Wakes the thread; a wake-up already pending is enough.
    wake: std::sync::mpsc::SyncSender<()>,
    /// Pages at which the thread is woken.
    start: i32,
    /// Pages at which the writer checkpoints itself.
    limit: i32,
}

impl Checkpoints {
    /// Hooks `writer`'s commits and starts the thread, with a connection of
    /// its own; it ends when the store (the sender) is dropped.
    fn start(writer: &mut Connection, path: &Path, start: i32, limit: i32) -> Result<Self, Error> {
        let open = |source| Error::Open { path: path.to_path_buf(), source };
        // A checkpoint copies pages from file to file, not through the cache.
        let conn = connect(path, 64 << 10)?;
        let pages = Arc::new(AtomicI32::new(0));
        let seen = Arc::clone(&pages);
        // Replaces the automatic checkpoint (the two share SQLite's WAL hook).
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
                seen.store(n, Ordering::Relaxed);
                Ok(())
            }))
            .map_err(open)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let shown = path.display().to_string();
        let spawned = std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
            while woken.recv().is_ok() {
                // Busy (another process's checkpoint) or failed: the next
                // commit wakes the thread again, and the writer's limit holds.
                if let Err(e) = conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE) {
                    tracing::debug!(path = %shown, error = %e, "sqlite: background checkpoint did not run");
                }
            }
        });
        if let Err(e) = spawned {
            // The writer checkpoints itself, as SQLite would.
            tracing::warn!(path = %path.display(), error = %e, "sqlite: no checkpoint thread; the writer checkpoints");
            return Ok(Self { pages, wake, start: i32::MAX, limit: start });
        }
        Ok(Self { pages, wake, start, limit })
    }

    /// After a commit of `writer`: wakes the thread, or checkpoints here at the limit.
    fn committed(&self, writer: &Connection) {
        let pages = self.pages.load(Ordering::Relaxed);
        if pages >= self.limit {
            // As SQLite's automatic checkpoint would; an error leaves the
            // WAL as it was (the next commit tries again).
            let _ = writer.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE);
        } else if pages >= self.start {
            let _ = self.wake.try_send(());
        }
    }
}

/// The layout of earlier versions: every view in one table.
const LEGACY_TABLE: &str = "online_values";

/// Errors of this crate; mapped into the core error at the trait boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file could not be opened or created.
    #[error("cannot open SQLite online store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The database's folder could not be created.
    #[error("cannot create the folder of SQLite online store {path}: {source}")]
    CreateDir {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file written by an earlier version could not be converted to
    /// tables per view (nothing was changed).
    #[error("cannot convert SQLite online store {path} to this version's layout: {source}")]
    Upgrade {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("SQLite online store {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}

impl From<Error> for CoreError {
    /// The core error names the store and its file once; the operation and
    /// the cause follow.
    fn from(e: Error) -> Self {
        let store = |path: &std::path::Path| format!("SQLite online store {}", path.display());
        match e {
            Error::Open { path, source } => {
                // SQLite says "unable to open database file" whatever the
                // cause; the file system tells why (a permission, a missing folder).
                let why = match os_reason(&path) {
                    Some(os) => format!("cannot open it: {source} ({os})"),
                    None => format!("cannot open it: {source}"),
                };
                CoreError::StoreUnavailable { store: store(&path), source: why.into() }
            }
            Error::CreateDir { path, source } => CoreError::StoreUnavailable {
                store: store(&path),
                source: format!("cannot create its folder: {source}").into(),
            },
            Error::Sqlite { source: source @ rusqlite::Error::SqliteFailure(f, _), path }
                if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                CoreError::StoreUnavailable { store: store(&path), source: Box::new(source) }
            }
            Error::Sqlite { source, path } => CoreError::backend(store(&path), source),
            Error::Upgrade { source, path } => CoreError::StoreUnavailable {
                store: store(&path),
                source: format!("cannot convert it to this version's layout (tables per view): {source}").into(),
            },
        }
    }
}

/// Why the file system would refuse to open `path` for writing (or to
/// create it in its folder), if it would; probes without leaving anything.
fn os_reason(path: &std::path::Path) -> Option<String> {
    let probe = if path.exists() {
        std::fs::OpenOptions::new().read(true).write(true).open(path).err()?
    } else {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let probe = dir.join(format!(".{name}.probe-{}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                return None;
            }
            Err(e) => e,
        }
    };
    Some(probe.to_string())
}

/// Online store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteOnlineStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Page cache of each connection, in bytes.
    cache_bytes: usize,
    /// Idle connections for reads.
    readers: Mutex<Vec<Connection>>,
    /// The one writer (SQLite allows one at a time anyway), opened on first
    /// write so that opening a store creates no file, with its checkpoints.
    writer: Mutex<Option<(Connection, Checkpoints)>>,
    /// WAL pages at which checkpoints start, and at which the writer runs
    /// one itself, when not those of [`CHECKPOINT_BYTES`] (tests).
    checkpoint_pages: Option<(i32, i32)>,
    /// Set once the file is known to exist, so reads stop checking.
    exists: std::sync::atomic::AtomicBool,
}

impl SqliteOnlineStore {
    /// A store in the database file at `path`. Nothing is touched until the
    /// first write, which creates the file and its folder; reads before that
    /// find nothing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if path.is_dir() {
            return Err(Error::Open { path: path.clone(), source: rusqlite::Error::InvalidPath(path.clone()) });
        }
        Ok(Self { inner: Arc::new(Inner::new(path, DEFAULT_CACHE_BYTES)) })
    }

    /// A store from an `online_store:` section with `type: sqlite`: `path`
    /// (default `data/online.db` in the repo) and `cache_size`, each
    /// connection's page cache (default 64MiB).
    pub fn from_options(options: &BackendOptions<'_>) -> CoreResult<Self> {
        options.check_known(&["path", "cache_size"])?;
        let store = Self::open(options.path("path", "data/online.db"))?;
        Ok(match options.size("cache_size")? {
            Some(bytes) => store.with_cache_size(bytes),
            None => store,
        })
    }

    /// Each connection's page cache. It is heap memory, outside any query
    /// pool: a process under a memory limit keeps it small (the default is
    /// 64 MiB, which a large materialization fills).
    pub fn with_cache_size(self, bytes: usize) -> Self {
        Self { inner: Arc::new(Inner::new(self.inner.path.clone(), bytes.max(64 << 10))) }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// Page cache of each connection unless `cache_size` says otherwise.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

fn connect(path: &Path, cache_bytes: usize) -> Result<Connection, Error> {
    let open = |source| Error::Open { path: path.to_path_buf(), source };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open)?;
    // WAL: readers do not block on the writer; NORMAL sync is durable across
    // process crashes (a power loss may drop the last commits, which a rerun restores).
    // A new file's pages (an existing file keeps its own): see [`PAGE_SIZE`].
    conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(open)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(open)?;
    // Reads through a memory map skip a copy per page.
    conn.pragma_update(None, "mmap_size", 1i64 << 40).map_err(open)?;
    // Negative: KiB rather than pages.
    let cache_kib = i64::try_from(cache_bytes / 1024).unwrap_or(i64::MAX);
    conn.pragma_update(None, "cache_size", -cache_kib).map_err(open)?;
    // Checkpoints copy each WAL page into the database once per checkpoint,
    // so a page rewritten by many commits costs one copy, not many: every
    // 40 MB of WAL rather than SQLite's 1,000 pages (4 MB). Ingestion's
    // batches touch pages all over the table; with 1,000 the checkpoints
    // were a third of its write path. The WAL is cut back to 64 MiB after.
    // (The store's writer replaces this with [`Checkpoints`].)
    let pages = checkpoint_pages(&conn).map_err(open)?;
    conn.pragma_update(None, "wal_autocheckpoint", pages).map_err(open)?;
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20).map_err(open)?;
    // Four statements per view (read, upsert, swap, delete).
    conn.set_prepared_statement_cache_capacity(128);
    if has_table(&conn, LEGACY_TABLE).map_err(open)? {
        upgrade(&mut conn).map_err(|source| Error::Upgrade { path: path.to_path_buf(), source })?;
    }
    Ok(conn)
}

/// Moves the rows of a file written by an earlier version (one
/// `online_values` table for every view) into tables per view, in one
/// transaction. Merged under the never-regress rule, so an earlier version
/// that wrote to the old table again is merged again on the next open.
fn upgrade(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new(conn, rusqlite::TransactionBehavior::Immediate)?;
    if has_table(&tx, LEGACY_TABLE)? {
        let views: Vec<(String, String)> = tx
            .prepare(&format!("SELECT DISTINCT project, view FROM {LEGACY_TABLE}"))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (project, view) in views {
            let t = table(&project, &view);
            tx.execute_batch(&create_sql(&t))?;
            tx.execute(
                &format!(
                    "INSERT INTO {t} (entity_key, event_ts, record) SELECT entity_key, event_ts, record \
                     FROM {LEGACY_TABLE} WHERE project = ?1 AND view = ?2 ON CONFLICT (entity_key) DO UPDATE \
                     SET event_ts = excluded.event_ts, record = excluded.record \
                     WHERE excluded.event_ts >= {t}.event_ts"
                ),
                params![project, view],
            )?;
        }
        tx.execute_batch(&format!("DROP TABLE {LEGACY_TABLE}"))?;
    }
    tx.commit()
}

/// Whether the file has a table of this (unquoted) name.
fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")?.exists([name])
}

impl Inner {
    fn new(path: PathBuf, cache_bytes: usize) -> Self {
        Inner {
            path,
            cache_bytes,
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            checkpoint_pages: None,
            exists: Default::default(),
        }
    }

    fn sql(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite { path: self.path.clone(), source }
    }

    /// Runs `f` with the writer, creating the database on first use.
    fn with_writer<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, Error>) -> Result<T, Error> {
        let mut guard = self.writer.lock().expect("poisoned");
        if guard.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|source| Error::CreateDir { path: self.path.clone(), source })?;
            }
            let mut conn = connect(&self.path, self.cache_bytes)?;
            let (start, limit) = match self.checkpoint_pages {
                Some(pages) => pages,
                None => {
                    let start = checkpoint_pages(&conn).map_err(|e| self.sql(e))?;
                    (start, start.saturating_mul(4))
                }
            };
            let checkpoints = Checkpoints::start(&mut conn, &self.path, start, limit)?;
            *guard = Some((conn, checkpoints));
        }
        let (conn, checkpoints) = guard.as_mut().expect("opened above");
        let out = f(conn);
        checkpoints.committed(conn);
        out
    }

    /// Whether the database exists yet (it is created by the first write).
    fn exists(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.exists.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.writer.lock().expect("poisoned").is_some() || self.path.is_file();
        self.exists.store(now, Ordering::Relaxed);
        now
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let conn = match self.readers.lock().expect("poisoned").pop() {
            Some(c) => c,
            None => connect(&self.path, self.cache_bytes)?,
        };
        let out = f(&conn);
        self.readers.lock().expect("poisoned").push(conn);
        out
    }

    fn read(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>, Error> {
        if !self.exists() {
            return Ok(reads.iter().map(|r| vec![None; r.keys.len()]).collect());
        }
        self.with_reader(|conn| {
            // One read transaction for the whole call: one lock, one consistent snapshot.
            let tx = conn.unchecked_transaction().map_err(|e| self.sql(e))?;
            let out = self.read_in(&tx, project, reads);
            tx.finish().map_err(|e| self.sql(e))?;
            out
        })
    }

    fn read_in(
        &self,
        conn: &Connection,
        project: &str,
        reads: &[ViewRead],
    ) -> Result<Vec<Vec<Option<StoredRow>>>, Error> {
        let mut out = Vec::with_capacity(reads.len());
        for r in reads {
            let t = table(project, &r.view);
            match self.read_view(conn, &t, &r.keys) {
                Ok(rows) => out.push(rows),
                // A view never written (or dropped, perhaps by another
                // process since this statement was prepared) has no table.
                Err(_) if !has_table(conn, &t[1..t.len() - 1]).map_err(|e| self.sql(e))? => {
                    out.push(vec![None; r.keys.len()])
                }
                Err(e) => return Err(self.sql(e)),
            }
        }
        Ok(out)
    }

    fn read_view(&self, conn: &Connection, t: &str, keys: &[String]) -> rusqlite::Result<Vec<Option<StoredRow>>> {
        let mut stmt = conn.prepare_cached(&select_sql(t))?;
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            let mut q = stmt.query([key])?;
            rows.push(match q.next()? {
                None => None,
                Some(row) => {
                    let ts: i64 = row.get(0)?;
                    let record = row.get_ref(1)?.as_blob()?;
                    Some(StoredRow::new(ts, bytes::Bytes::copy_from_slice(record)))
                }
            });
        }
        Ok(rows)
    }

    fn write(&self, project: &str, view: &str, rows: &OnlineRows) -> Result<WriteStats, Error> {
        self.with_writer(|conn| self.write_in(conn, project, view, rows))
    }

    fn write_in(
        &self,
        conn: &mut Connection,
        project: &str,
        view: &str,
        rows: &OnlineRows,
    ) -> Result<WriteStats, Error> {
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let mut stats = WriteStats::default();
        let t = table(project, view);
        // A no-op once the table exists (settled when it is prepared).
        tx.prepare_cached(&create_sql(&t)).and_then(|mut c| c.raw_execute()).map_err(|e| self.sql(e))?;
        {
            let mut stmt = tx.prepare_cached(&upsert_sql(&t)).map_err(|e| self.sql(e))?;
            // In key order (a key's own rows keep theirs, so the result is
            // the same): each insert lands near the last in the table's
            // B-tree, whose pages are then still in the CPU's caches.
            let mut order: Vec<usize> = (0..rows.len()).collect();
            order.sort_by(|&a, &b| rows.key(a).cmp(rows.key(b)));
            let mut record = Vec::new();
            for i in order {
                record.clear();
                rows.encode_record(i, &mut record);
                stmt.raw_bind_parameter(1, rows.key(i)).map_err(|e| self.sql(e))?;
                stmt.raw_bind_parameter(2, rows.event_ts(i)).map_err(|e| self.sql(e))?;
                stmt.raw_bind_parameter(3, &record).map_err(|e| self.sql(e))?;
                let changed = stmt.raw_execute().map_err(|e| self.sql(e))?;
                if changed == 1 {
                    stats.written += 1;
                } else {
                    stats.skipped_older += 1;
                }
            }
        }
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(stats)
    }

    fn compare_and_swap(
        &self,
        project: &str,
        view: &str,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> Result<Vec<bool>, Error> {
        self.with_writer(|conn| {
            // IMMEDIATE takes the write lock before the reads, so another
            // process cannot change a row between its check and its write.
            let tx =
                rusqlite::Transaction::new(conn, rusqlite::TransactionBehavior::Immediate).map_err(|e| self.sql(e))?;
            let mut out = Vec::with_capacity(rows.len());
            let t = table(project, view);
            tx.prepare_cached(&create_sql(&t)).and_then(|mut c| c.raw_execute()).map_err(|e| self.sql(e))?;
            {
                let mut select = tx.prepare_cached(&select_sql(&t)).map_err(|e| self.sql(e))?;
                let mut replace = tx
                    .prepare_cached(&format!(
                        "INSERT OR REPLACE INTO {t} (entity_key, event_ts, record) VALUES (?1, ?2, ?3)"
                    ))
                    .map_err(|e| self.sql(e))?;
                let mut record = Vec::new();
                for (i, want) in expected.iter().enumerate() {
                    let mut q = select.query([rows.key(i)]).map_err(|e| self.sql(e))?;
                    let same = match (q.next().map_err(|e| self.sql(e))?, want) {
                        (None, None) => true,
                        (Some(row), Some(w)) => {
                            let ts: i64 = row.get(0).map_err(|e| self.sql(e))?;
                            let stored =
                                row.get_ref(1).map_err(|e| self.sql(e))?.as_blob().map_err(|e| self.sql(e.into()))?;
                            ts == w.event_ts && stored == &w.record[..]
                        }
                        _ => false,
                    };
                    drop(q);
                    if same {
                        record.clear();
                        rows.encode_record(i, &mut record);
                        replace.execute(params![rows.key(i), rows.event_ts(i), record]).map_err(|e| self.sql(e))?;
                    }
                    out.push(same);
                }
            }
            tx.commit().map_err(|e| self.sql(e))?;
            Ok(out)
        })
    }

    fn delete(&self, project: &str, view: &str, keys: &[String]) -> Result<u64, Error> {
        if !self.exists() {
            return Ok(0);
        }
        self.with_writer(|conn| self.delete_in(conn, project, view, keys))
    }

    fn delete_in(&self, conn: &mut Connection, project: &str, view: &str, keys: &[String]) -> Result<u64, Error> {
        let t = table(project, view);
        if !has_table(conn, &t[1..t.len() - 1]).map_err(|e| self.sql(e))? {
            return Ok(0);
        }
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let mut n = 0;
        {
            let mut stmt =
                tx.prepare_cached(&format!("DELETE FROM {t} WHERE entity_key = ?1")).map_err(|e| self.sql(e))?;
            for k in keys {
                n += stmt.execute([k]).map_err(|e| self.sql(e))? as u64;
            }
        }
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(n)
    }

    fn drop_view(&self, project: &str, view: &str) -> Result<(), Error> {
        if !self.exists() {
            return Ok(());
        }
        self.with_writer(|conn| {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", table(project, view))).map_err(|e| self.sql(e))?;
            Ok(())
        })
    }
}

impl BlockingOnlineStore for SqliteOnlineStore {
    const INLINE_READ_KEYS: usize = INLINE_READ_KEYS;
    const KIND: &'static str = "SQLite online store";

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

    #[tokio::test(flavor = "multi_thread")]
    async fn conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/online.db");
        let store = Arc::new(SqliteOnlineStore::open(&path).unwrap());
        feature_store_core::testing::online_store_conformance(store, "p").await;
        // Contents survive reopening.
        let store = SqliteOnlineStore::open(&path).unwrap();
        let mut rows = OnlineRows::new(vec!["a".into()]);
        rows.begin_row("k=1".into(), 5);
        rows.push_value(Some(b"\x03x"));
        store.write("p", &OnlineView::new("v", None), &rows).await.unwrap();
        drop(store);
        let store = SqliteOnlineStore::open(&path).unwrap();
        let got = store.read("p", &[ViewRead::new("v", vec!["a".into()], vec!["k=1".into()])]).await.unwrap();
        assert_eq!(got[0][0].as_ref().map(|r| r.event_ts), Some(5));
    }

    /// A file of the earlier layout (every view in `online_values`) reads
    /// the same after conversion, and keeps never-regress.
    #[tokio::test]
    async fn a_file_of_the_earlier_layout_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let mut record = Vec::new();
        feature_store_core::online::codec::encode_full_record([("a", Some(&b"\x03x"[..]))].into_iter(), &mut record);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE online_values (project TEXT NOT NULL, view TEXT NOT NULL, entity_key TEXT NOT NULL, \
                 event_ts INTEGER NOT NULL, record BLOB NOT NULL, PRIMARY KEY (project, view, entity_key)) WITHOUT ROWID",
            )
            .unwrap();
            for (p, v, k, ts) in
                [("p", "v", "k=1", 5), ("p", "v", "k=2", 6), ("p", "w", "k=1", 7), ("q", "v", "k=1", 8)]
            {
                conn.execute("INSERT INTO online_values VALUES (?1, ?2, ?3, ?4, ?5)", params![p, v, k, ts, record])
                    .unwrap();
            }
        }
        let store = SqliteOnlineStore::open(&path).unwrap();
        let ts = |got: Vec<Vec<Option<StoredRow>>>| -> Vec<Option<i64>> {
            got.into_iter().flatten().map(|r| r.map(|r| r.event_ts)).collect()
        };
        let read = |view: &str, keys: &[&str]| {
            ViewRead::new(view, vec!["a".into()], keys.iter().map(|k| k.to_string()).collect())
        };
        let got = store.read("p", &[read("v", &["k=1", "k=2", "k=3"]), read("w", &["k=1"])]).await.unwrap();
        assert_eq!(ts(got), vec![Some(5), Some(6), None, Some(7)]);
        assert_eq!(ts(store.read("q", &[read("v", &["k=1"])]).await.unwrap()), vec![Some(8)]);
        assert_eq!(
            &store.read("p", &[read("v", &["k=1"])]).await.unwrap()[0][0].as_ref().unwrap().record[..],
            &record[..]
        );
        // An older write loses to the converted row; a newer one wins.
        for (at, want) in [(4, 5), (9, 9)] {
            let mut rows = OnlineRows::new(vec!["a".into()]);
            rows.begin_row("k=1".into(), at);
            rows.push_value(Some(b"\x03y"));
            store.write("p", &OnlineView::new("v", None), &rows).await.unwrap();
            assert_eq!(ts(store.read("p", &[read("v", &["k=1"])]).await.unwrap()), vec![Some(want)]);
        }
        let conn = Connection::open(&path).unwrap();
        assert!(!has_table(&conn, LEGACY_TABLE).unwrap(), "the old table is dropped once converted");
    }

    /// Another process dropping a view under this one's prepared statements:
    /// reads find nothing and writes re-create the table.
    #[tokio::test]
    async fn a_view_dropped_by_another_process_reads_empty_and_takes_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let (a, b) = (SqliteOnlineStore::open(&path).unwrap(), SqliteOnlineStore::open(&path).unwrap());
        let write = |store: &SqliteOnlineStore, at: i64| {
            let mut rows = OnlineRows::new(vec!["a".into()]);
            rows.begin_row("k=1".into(), at);
            rows.push_value(Some(b"\x03x"));
            let store = store.clone();
            async move { store.write("p", &OnlineView::new("v", None), &rows).await.unwrap() }
        };
        let read = || ViewRead::new("v", vec!["a".into()], vec!["k=1".into()]);
        write(&a, 5).await;
        assert_eq!(a.read("p", &[read()]).await.unwrap()[0][0].as_ref().map(|r| r.event_ts), Some(5));
        b.drop_view("p", "v").await.unwrap();
        assert_eq!(a.read("p", &[read()]).await.unwrap(), vec![vec![None]]);
        assert_eq!(a.delete("p", "v", &["k=1".into()]).await.unwrap(), 0);
        write(&a, 3).await;
        assert_eq!(b.read("p", &[read()]).await.unwrap()[0][0].as_ref().map(|r| r.event_ts), Some(3));
    }

    /// Writes enough rows to fill many WAL pages, in `batches` commits.
    async fn fill(store: &SqliteOnlineStore, batches: usize) {
        let value = [b"\x03".as_slice(), &[b'x'; 300]].concat();
        for b in 0..batches {
            let mut rows = OnlineRows::new(vec!["a".into()]);
            for k in 0..200 {
                rows.begin_row(format!("k={k}"), b as i64);
                rows.push_value(Some(&value));
            }
            store.write("p", &OnlineView::new("v", None), &rows).await.unwrap();
        }
    }

    /// Checkpoints at the given WAL sizes (pages), rather than the defaults.
    fn with_checkpoints(path: &Path, start: i32, limit: i32) -> SqliteOnlineStore {
        let mut inner = Inner::new(path.to_path_buf(), DEFAULT_CACHE_BYTES);
        inner.checkpoint_pages = Some((start, limit));
        SqliteOnlineStore { inner: Arc::new(inner) }
    }

    /// The database file holds only its first page until a checkpoint
    /// copies the WAL into it: it grows when the checkpoint thread runs (the
    /// writer's limit out of reach), at once when the writer reaches its
    /// limit, and not at all when neither may checkpoint (SQLite's own
    /// automatic checkpoint is off for the writer).
    #[tokio::test(flavor = "multi_thread")]
    async fn checkpoints_run_beside_the_writes_and_the_writer_bounds_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let first_page = PAGE_SIZE as u64;

        let none = dir.path().join("none.db");
        let store = with_checkpoints(&none, i32::MAX, i32::MAX);
        fill(&store, 10).await;
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(size(&none), first_page, "nothing may checkpoint, so nothing reaches the database file");

        let beside = dir.path().join("beside.db");
        let store = with_checkpoints(&beside, 8, i32::MAX);
        fill(&store, 10).await;
        let began = std::time::Instant::now();
        while size(&beside) <= first_page && began.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(size(&beside) > first_page, "the checkpoint thread never copied the WAL into the database");
        let got = store.read("p", &[ViewRead::new("v", vec!["a".into()], vec!["k=199".into()])]).await.unwrap();
        assert_eq!(got[0][0].as_ref().map(|r| r.event_ts), Some(9));

        let limited = dir.path().join("limited.db");
        let store = with_checkpoints(&limited, i32::MAX, 2);
        fill(&store, 1).await;
        assert!(size(&limited) > first_page, "the writer did not checkpoint at its limit");
    }

    #[tokio::test]
    async fn opening_creates_nothing_and_an_unwritable_path_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteOnlineStore::open(dir.path().join("online.db")).unwrap();
        let got = store.read("p", &[ViewRead::new("v", vec!["a".into()], vec!["k".into()])]).await.unwrap();
        assert_eq!(got, vec![vec![None]]);
        assert!(!dir.path().join("online.db").exists(), "reads must not create the database");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let store = SqliteOnlineStore::open(dir.path().join("file/online.db")).unwrap();
        let mut rows = OnlineRows::new(vec!["a".into()]);
        rows.begin_row("k".into(), 1);
        rows.push_value(None);
        let err = store.write("p", &OnlineView::new("v", None), &rows).await.unwrap_err();
        assert!(matches!(err, CoreError::StoreUnavailable { .. }), "{err}");
        assert!(err.to_string().contains("online.db"), "{err}");
    }
}

/// The online conformance suite, one test per behaviour, each on a new file.
#[cfg(test)]
mod suite {
    feature_store_core::online_store_suite!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = super::SqliteOnlineStore::open(dir.path().join("online.db")).expect("open");
        (std::sync::Arc::new(store) as std::sync::Arc<dyn feature_store_core::online::OnlineStore>, dir)
    });
}
