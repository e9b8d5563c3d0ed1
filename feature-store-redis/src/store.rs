//! The Redis online store: connections, pipelined reads, scripted writes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use feature_store_core::online::{OnlineRows, OnlineStore, OnlineView, StoredRow, ViewRead, WriteStats};
use feature_store_core::repo::BackendOptions;
use feature_store_core::{Error as CoreError, Result as CoreResult};
use futures::StreamExt;
use futures::future::try_join_all;
use futures::stream::FuturesUnordered;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use tokio::sync::OnceCell;

use crate::layout::{self, SWAP_SCRIPT, WRITE_SCRIPT};
use crate::{Error, RedisConfig};

/// Online store on Redis or Redis Cluster. See the crate docs for the layout.
///
/// Connections open on first use (so a service can start before Redis) and
/// reconnect on their own; every call is bounded by `timeout`.
#[derive(Debug, Clone)]
pub struct RedisOnlineStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    /// Where, for messages (URLs without passwords).
    name: String,
    conn: OnceCell<Conn>,
    script: Script,
    swap: Script,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOnlineStore").field("nodes", &self.name).finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

impl RedisOnlineStore {
    /// A store for `config`; nothing connects until the first call.
    pub fn new(config: RedisConfig) -> Result<Self, Error> {
        if config.nodes.is_empty() || config.nodes.iter().any(String::is_empty) {
            return Err(Error::Config("no Redis server given".into()));
        }
        for n in &config.nodes {
            redis::Client::open(n.as_str()).map_err(|e| Error::Config(format!("{}: {e}", redact(n))))?;
        }
        // rustls needs one process-wide crypto provider for rediss:// URLs.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kind = if config.cluster { "Redis Cluster" } else { "Redis" };
        let name =
            format!("{kind} online store {}", config.nodes.iter().map(|n| redact(n)).collect::<Vec<_>>().join(","));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                name,
                conn: OnceCell::new(),
                script: Script::new(WRITE_SCRIPT),
                swap: Script::new(SWAP_SCRIPT),
            }),
        })
    }

    /// A store from an `online_store:` section with `type: redis` (see
    /// [`RedisConfig::from_options`]); a relative `tls_ca_cert` is a file in the repo.
    pub fn from_options(options: &BackendOptions<'_>) -> feature_store_core::Result<Self> {
        let mut raw = options.raw().clone();
        if let Some(serde_json::Value::String(p)) = raw.get_mut("tls_ca_cert")
            && std::path::Path::new(p.as_str()).is_relative()
        {
            *p = options.base().join(p.as_str()).display().to_string();
        }
        Ok(Self::new(RedisConfig::from_options(&raw)?)?)
    }

    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }
}

impl Inner {
    fn err(&self, source: redis::RedisError) -> Error {
        Error::Redis { store: self.name.clone(), source }
    }

    async fn bounded<T>(&self, f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::time::timeout(self.config.timeout, f)
            .await
            .unwrap_or_else(|_| Err(Error::Timeout { store: self.name.clone(), after: self.config.timeout }))
    }

    async fn conn(&self) -> Result<Conn, Error> {
        let c = &self.config;
        self.conn
            .get_or_try_init(|| async {
                let certs = self.certs()?;
                if c.cluster {
                    let mut builder = ClusterClientBuilder::new(c.nodes.clone());
                    if let Some(certs) = certs {
                        builder = builder.certs(certs);
                    }
                    let client = builder
                        .connection_timeout(c.connect_timeout)
                        .response_timeout(c.timeout)
                        .retries(c.retries as u32)
                        .build()
                        .map_err(|e| self.err(e))?;
                    let conn = client.get_async_connection().await.map_err(|e| self.err(e))?;
                    Ok(Conn::Cluster(conn))
                } else {
                    let client = self.client(&c.nodes[0])?;
                    let cfg = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(c.connect_timeout))
                        .set_response_timeout(Some(c.timeout))
                        .set_number_of_retries(c.retries)
                        .set_max_delay(Duration::from_millis(500));
                    let conn = ConnectionManager::new_lazy_with_config(client, cfg).map_err(|e| self.err(e))?;
                    Ok(Conn::Single(conn))
                }
            })
            .await
            .cloned()
    }

    fn certs(&self) -> Result<Option<redis::TlsCertificates>, Error> {
        let Some(path) = &self.config.tls_ca_cert else { return Ok(None) };
        let pem = std::fs::read(path).map_err(|e| Error::Config(format!("tls_ca_cert {}: {e}", path.display())))?;
        Ok(Some(redis::TlsCertificates { client_tls: None, root_cert: Some(pem) }))
    }

    /// A client for one node, trusting the configured CA.
    fn client(&self, url: &str) -> Result<redis::Client, Error> {
        match self.certs()? {
            Some(certs) => redis::Client::build_with_tls(url, certs),
            None => redis::Client::open(url),
        }
        .map_err(|e| self.err(e))
    }

    /// Groups of indexes whose keys may go in one multi-key call: one group
    /// in standalone mode, one per slot in a cluster.
    fn groups(&self, keys: &[String]) -> Vec<Vec<usize>> {
        if !self.config.cluster {
            return vec![(0..keys.len()).collect()];
        }
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            by_slot.entry(layout::slot(k)).or_default().push(i);
        }
        by_slot.into_values().collect()
    }

    async fn write(&self, project: &str, view: &OnlineView, rows: &OnlineRows) -> Result<WriteStats, Error> {
        if rows.is_empty() {
            return Ok(WriteStats::default());
        }
        let conn = self.conn().await?;
        let c = &self.config;
        let keys: Vec<String> =
            (0..rows.len()).map(|i| layout::key(&c.key_prefix, project, rows.key(i), &view.name)).collect();
        let ttl_ms = view.ttl.filter(|_| c.expire).map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
        let mut calls = Vec::new();
        let (mut record, mut stored) = (Vec::new(), Vec::new());
        for group in self.groups(&keys) {
            // Rows for one key stay in order within one call, so they apply in order.
            for chunk in group.chunks(c.rows_per_script) {
                let mut inv = self.script.prepare_invoke();
                inv.arg(ttl_ms.unwrap_or(0));
                for &i in chunk {
                    inv.key(&keys[i]);
                    let ts = rows.event_ts(i);
                    inv.arg(ttl_ms.map_or(0, |t| ts.div_euclid(1000).saturating_add(t).max(1)));
                    record.clear();
                    rows.encode_record(i, &mut record);
                    layout::value(ts, &record, &mut stored);
                    inv.arg(&stored[..]);
                }
                calls.push(inv);
            }
        }
        let mut written = 0;
        let mut pending = FuturesUnordered::new();
        for inv in calls {
            if pending.len() >= 64
                && let Some(done) = pending.next().await
            {
                written += done?;
            }
            let mut conn = conn.clone();
            pending.push(async move { inv.invoke_async::<u64>(&mut conn).await.map_err(|e| self.err(e)) });
        }
        while let Some(done) = pending.next().await {
            written += done?;
        }
        Ok(WriteStats::new(written, rows.len() as u64 - written))
    }

    async fn read(&self, project: &str, reads: &[ViewRead]) -> Result<Vec<Vec<Option<StoredRow>>>, Error> {
        let conn = self.conn().await?;
        let prefix = &self.config.key_prefix;
        // Flatten (read, key) pairs into one key list for MGET.
        let mut keys = Vec::new();
        let mut owner = Vec::new();
        for (r, read) in reads.iter().enumerate() {
            for (k, key) in read.keys.iter().enumerate() {
                keys.push(layout::key(prefix, project, key, &read.view));
                owner.push((r, k));
            }
        }
        let mut out: Vec<Vec<Option<StoredRow>>> = reads.iter().map(|r| vec![None; r.keys.len()]).collect();
        if keys.is_empty() {
            return Ok(out);
        }
        let groups = self.groups(&keys);
        let replies = try_join_all(groups.iter().map(|group| {
            let mut mget = redis::cmd("MGET");
            for &i in group {
                mget.arg(&keys[i]);
            }
            let mut conn = conn.clone();
            async move { mget.query_async::<Vec<Option<Vec<u8>>>>(&mut conn).await }
        }))
        .await
        .map_err(|e| self.err(e))?;
        for (group, reply) in groups.iter().zip(replies) {
            for (&i, value) in group.iter().zip(reply) {
                let Some(value) = value else { continue };
                let (r, k) = owner[i];
                let layout =
                    |message: String| Error::Layout { store: self.name.clone(), key: keys[i].clone(), message };
                let (event_ts, record_len) =
                    layout::split_value(&value).map(|(t, r)| (t, r.len())).ok_or_else(|| {
                        layout(
                            "the value does not start with an event time; was the key written by another program?"
                                .into(),
                        )
                    })?;
                let record_at = value.len() - record_len;
                out[r][k] = Some(StoredRow::new(event_ts, bytes::Bytes::from(value).slice(record_at..)));
            }
        }
        Ok(out)
    }

    async fn compare_and_swap(
        &self,
        project: &str,
        view: &OnlineView,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> Result<Vec<bool>, Error> {
        let mut out = vec![false; rows.len()];
        if rows.is_empty() {
            return Ok(out);
        }
        let conn = self.conn().await?;
        let c = &self.config;
        let keys: Vec<String> =
            (0..rows.len()).map(|i| layout::key(&c.key_prefix, project, rows.key(i), &view.name)).collect();
        let ttl_ms = view.ttl.filter(|_| c.expire).map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
        let mut calls = Vec::new();
        let (mut record, mut stored, mut want) = (Vec::new(), Vec::new(), Vec::new());
        for group in self.groups(&keys) {
            for chunk in group.chunks(c.rows_per_script) {
                let mut inv = self.swap.prepare_invoke();
                for &i in chunk {
                    inv.key(&keys[i]);
                    want.clear();
                    match &expected[i] {
                        None => want.push(b'0'),
                        Some(row) => {
                            want.push(b'1');
                            layout::value(row.event_ts, &row.record, &mut stored);
                            want.extend_from_slice(&stored);
                        }
                    }
                    inv.arg(&want[..]);
                    let ts = rows.event_ts(i);
                    record.clear();
                    rows.encode_record(i, &mut record);
                    layout::value(ts, &record, &mut stored);
                    inv.arg(&stored[..]);
                    inv.arg(ttl_ms.map_or(0, |t| ts.div_euclid(1000).saturating_add(t).max(1)));
                }
                calls.push((chunk.to_vec(), inv));
            }
        }
        let replies = try_join_all(calls.into_iter().map(|(chunk, inv)| {
            let mut conn = conn.clone();
            async move { inv.invoke_async::<Vec<i64>>(&mut conn).await.map(|r| (chunk, r)) }
        }))
        .await
        .map_err(|e| self.err(e))?;
        for (chunk, reply) in replies {
            for (i, swapped) in chunk.into_iter().zip(reply) {
                out[i] = swapped == 1;
            }
        }
        Ok(out)
    }

    async fn delete(&self, project: &str, view: &str, entity_keys: &[String]) -> Result<u64, Error> {
        let conn = self.conn().await?;
        let keys: Vec<String> =
            entity_keys.iter().map(|k| layout::key(&self.config.key_prefix, project, k, view)).collect();
        let groups = self.groups(&keys);
        let counts = try_join_all(groups.iter().map(|g| {
            let mut pipe = redis::pipe();
            for &i in g {
                pipe.cmd("DEL").arg(&keys[i]);
            }
            let mut conn = conn.clone();
            async move { pipe.query_async::<Vec<u64>>(&mut conn).await }
        }))
        .await
        .map_err(|e| self.err(e))?;
        Ok(counts.into_iter().flatten().sum())
    }

    /// Scans every primary for the view's keys and unlinks them.
    async fn drop_view(&self, project: &str, view: &str) -> Result<(), Error> {
        let conn = self.conn().await?;
        let pattern = layout::view_pattern(&self.config.key_prefix, project, view);
        let nodes: Vec<String> = match &conn {
            Conn::Single(_) => vec![self.config.nodes[0].clone()],
            Conn::Cluster(_) => self.primaries(conn.clone()).await?,
        };
        for node in nodes {
            let client = self.client(&node)?;
            let mut direct = client.get_multiplexed_async_connection().await.map_err(|e| self.err(e))?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut direct)
                    .await
                    .map_err(|e| self.err(e))?;
                if !keys.is_empty() {
                    let mut pipe = redis::pipe();
                    for k in &keys {
                        pipe.cmd("UNLINK").arg(k).ignore();
                    }
                    pipe.query_async::<()>(&mut direct).await.map_err(|e| self.err(e))?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// URLs of the cluster's primaries, with the seeds' scheme and credentials.
    async fn primaries(&self, mut conn: Conn) -> Result<Vec<String>, Error> {
        let slots: Vec<Value> =
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.map_err(|e| self.err(e))?;
        let seed = &self.config.nodes[0];
        let (scheme, auth) = {
            let s = seed.find("://").map_or(0, |i| i + 3);
            let at = seed.rfind('@').filter(|&a| a > s).map_or(s, |a| a + 1);
            (&seed[..s], &seed[s..at])
        };
        let mut out: Vec<String> = Vec::new();
        for range in slots {
            let Value::Array(items) = range else { continue };
            let Some(Value::Array(primary)) = items.get(2) else { continue };
            let host = match primary.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = primary.get(1) else { continue };
            let url = format!("{scheme}{auth}{host}:{port}");
            if !out.contains(&url) {
                out.push(url);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl OnlineStore for RedisOnlineStore {
    fn describe(&self) -> String {
        self.inner.name.clone()
    }

    async fn write(&self, project: &str, view: &OnlineView, rows: &OnlineRows) -> CoreResult<WriteStats> {
        // Idempotent (never-regress writes of the same rows), so a dropped
        // connection is retried once; the counts may then include rows the
        // lost attempt had already stored.
        let i = &self.inner;
        i.bounded(once_more(&i.name, "writing", || i.write(project, view, rows))).await.map_err(CoreError::from)
    }

    async fn read(&self, project: &str, reads: &[ViewRead]) -> CoreResult<Vec<Vec<Option<StoredRow>>>> {
        let i = &self.inner;
        i.bounded(once_more(&i.name, "reading", || i.read(project, reads))).await.map_err(CoreError::from)
    }

    async fn compare_and_swap(
        &self,
        project: &str,
        view: &OnlineView,
        rows: &OnlineRows,
        expected: &[Option<StoredRow>],
    ) -> CoreResult<Vec<bool>> {
        feature_store_core::online::check_expected(rows, expected)?;
        let i = &self.inner;
        i.bounded(i.compare_and_swap(project, view, rows, expected)).await.map_err(CoreError::from)
    }

    async fn delete(&self, project: &str, view: &str, keys: &[String]) -> CoreResult<u64> {
        let i = &self.inner;
        i.bounded(once_more(&i.name, "deleting", || i.delete(project, view, keys))).await.map_err(CoreError::from)
    }

    async fn drop_view(&self, project: &str, view: &str) -> CoreResult<()> {
        // A scan of a large database can outlast one call's timeout; it is not bounded.
        self.inner.drop_view(project, view).await.map_err(CoreError::from)
    }
}

/// Runs an idempotent call once more when its connection was dropped (a
/// restarted server, a cut connection): the manager has reconnected by then,
/// so the first call after an outage does not fail. Within the caller's
/// timeout. Compare-and-swap is not retried: its first attempt may have
/// applied, and only the caller can tell.
async fn once_more<T, F, Fut>(store: &str, what: &str, call: F) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    match call().await {
        Err(Error::Redis { source, .. }) if source.is_connection_dropped() || source.is_io_error() => {
            tracing::debug!(store, error = %source, "redis: connection dropped; {what} again");
            call().await
        }
        other => other,
    }
}
