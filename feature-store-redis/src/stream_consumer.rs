//! A Redis stream read in a consumer group, for `feature-store ingest`.
//!
//! Each ingest process reads as one named consumer, and its name is the
//! partition positions are ordered in: Redis delivers a consumer's entries
//! in id order, and a restarted consumer first reads its own pending
//! entries (delivered, never acknowledged) again, in order, then new ones.
//! A name is held by one process at a time through a lease key
//! (`<key>:<group>:lease:<name>`), renewed while it runs; a second process
//! under the same name is refused, and one whose holder died on this host
//! takes the lease over at once.
//!
//! Entries carry one JSON record in a field named `data`; entries without
//! it are flat field-value records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use feature_store_core::ingest::dead_letter::DeadLetterSink;
use feature_store_core::ingest::{Message, Payload, StreamConsumer};
use feature_store_core::model::{StartPosition, StreamSource};
use feature_store_core::{Error as CoreError, Result as CoreResult};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Lease lifetime; renewed every third of it.
const LEASE: Duration = Duration::from_secs(15);

/// A consumer of one Redis stream in one group.
pub struct RedisStreamConsumer {
    /// Reconnects by itself after the server restarts.
    conn: ConnectionManager,
    describe: String,
    key: String,
    group: String,
    name: Arc<str>,
    lease_key: String,
    token: String,
    renewed: Instant,
    /// Reading the consumer's own pending entries after this id (a restart
    /// sees them again); `None` once they are all read.
    backlog: Option<String>,
    timeout: Duration,
}

impl Drop for RedisStreamConsumer {
    /// A consumer dropped without [`StreamConsumer::close`] leaves its
    /// lease to lapse or to this process's next consumer of the name.
    fn drop(&mut self) {
        feature_store_core::ingest::release_lease_claim(&self.claim_key(), &self.token);
    }
}

impl std::fmt::Debug for RedisStreamConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamConsumer").field("stream", &self.describe).field("consumer", &self.name).finish()
    }
}

fn unavailable(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> CoreError {
    CoreError::StoreUnavailable { store: what.to_owned(), source: Box::new(e) }
}

/// `ms-seq` as one ordered number.
fn position(id: &str) -> Option<u128> {
    let (ms, seq) = id.split_once('-')?;
    Some((u128::from(ms.parse::<u64>().ok()?) << 64) | u128::from(seq.parse::<u64>().ok()?))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<bytes::Bytes> {
    match v {
        Value::BulkString(b) => Some(bytes::Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(bytes::Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    }
}

/// A connection to the one server of `source.connection_string`.
async fn connect(source: &StreamSource, timeout: Duration) -> CoreResult<ConnectionManager> {
    let conn_text = source.connection_string.as_deref().unwrap_or_default();
    let urls = crate::config::connection_urls(conn_text).map_err(CoreError::from)?;
    let [url] = urls.as_slice() else {
        return Err(CoreError::Config {
            location: format!("stream source \"{}\"", source.name),
            message: "connection_string: give one Redis server (streams are not read from a cluster)".into(),
        });
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = redis::Client::open(url.as_str()).map_err(|e| CoreError::Config {
        location: format!("stream source \"{}\"", source.name),
        message: format!("connection_string: {e}"),
    })?;
    // Replies to blocking reads take up to the poll's wait.
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, cfg).await.map_err(|e| unavailable(&source.describe(), e))
}

/// Dead letters appended to a stream (`XADD <key> * data <letter>`) on the
/// source's server.
pub struct RedisStreamDeadLetters {
    conn: ConnectionManager,
    key: String,
    describe: String,
}

impl std::fmt::Debug for RedisStreamDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamDeadLetters").field("to", &self.describe).finish()
    }
}

impl RedisStreamDeadLetters {
    /// Letters of `source` to the stream `key` on its server.
    pub async fn open(source: &StreamSource, key: &str) -> CoreResult<Self> {
        let conn = connect(source, Duration::from_secs(5)).await?;
        let host = source.describe();
        Ok(Self { conn, key: key.to_owned(), describe: format!("Redis stream \"{key}\" (the server of {host})") })
    }
}

#[async_trait]
impl DeadLetterSink for RedisStreamDeadLetters {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn send(&mut self, letters: &[bytes::Bytes]) -> CoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for l in letters {
            pipe.cmd("XADD").arg(&self.key).arg("*").arg("data").arg(l.as_ref()).ignore();
        }
        pipe.query_async::<()>(&mut self.conn).await.map_err(|e| unavailable(&self.describe, e))
    }
}

impl RedisStreamConsumer {
    /// Joins `group` (created at `source.start` if absent) of the stream
    /// `source.key` as consumer `name`, taking the name's lease.
    pub async fn open(source: &StreamSource, group: &str, name: &str) -> CoreResult<Self> {
        let key = source.key.clone().unwrap_or_default();
        let describe = source.describe();
        let timeout = Duration::from_secs(5);
        let conn = connect(source, timeout).await?;
        let mut me = Self {
            conn,
            describe,
            lease_key: format!("{key}:{group}:lease:{name}"),
            key,
            group: group.to_owned(),
            name: name.into(),
            token: feature_store_core::ingest::lease_token(
                &std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros()
                    .to_string(),
            ),
            renewed: Instant::now(),
            backlog: Some("0".into()),
            timeout,
        };
        let start = match source.start {
            StartPosition::Latest => "$",
            _ => "0",
        };
        let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&me.key)
            .arg(group)
            .arg(start)
            .arg("MKSTREAM")
            .query_async(&mut me.conn)
            .await;
        match created {
            Ok(_) => tracing::info!(stream = %me.describe, group, start, "ingest: consumer group created"),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(unavailable(&me.describe, e)),
        }
        me.take_lease().await?;
        Ok(me)
    }

    /// Takes the name's lease: free, expired, held by a dead process of
    /// this host, or left by this process's own attempt whose reply was lost.
    async fn take_lease(&mut self) -> CoreResult<()> {
        if let Err(other) = feature_store_core::ingest::claim_lease(&self.claim_key(), &self.token) {
            return Err(self.held_by(&other));
        }
        let refused = self.try_take_lease().await;
        if !matches!(refused, Ok(None)) {
            feature_store_core::ingest::release_lease_claim(&self.claim_key(), &self.token);
        }
        match refused? {
            None => Ok(()),
            Some(holder) => Err(self.held_by(&holder)),
        }
    }

    /// The lease's key among this process's claims: the server and the key.
    fn claim_key(&self) -> String {
        format!("{} {}", self.describe, self.lease_key)
    }

    fn held_by(&self, holder: &str) -> CoreError {
        let who = if feature_store_core::ingest::lease_holder_is_this_process(holder) {
            "another consumer of this process"
        } else {
            "another ingest process"
        };
        CoreError::InvalidArgument(format!(
            "consumer \"{}\" of group \"{}\" on {}: {who} ({holder}) holds this consumer name; \
             give each process its own name (--consumer NAME), or wait {} s for a stopped holder's lease to lapse",
            self.name,
            self.group,
            self.describe,
            LEASE.as_secs()
        ))
    }

    /// [`Self::take_lease`] once claimed in this process: `None` when
    /// taken, else the holder.
    async fn try_take_lease(&mut self) -> CoreResult<Option<String>> {
        let ms = LEASE.as_millis() as u64;
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.lease_key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| unavailable(&self.describe, e))?;
        if set.is_some() {
            return Ok(None);
        }
        let holder: Option<String> = redis::cmd("GET")
            .arg(&self.lease_key)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| unavailable(&self.describe, e))?;
        let holder = holder.unwrap_or_default();
        // This attempt claimed the lease in this process, so a token of
        // this process here is one a lost reply left.
        let lost_reply = feature_store_core::ingest::lease_holder_is_this_process(&holder);
        if feature_store_core::ingest::lease_holder_is_dead(&holder) || lost_reply {
            let swapped: i64 = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0",
            )
            .key(&self.lease_key)
            .arg(&holder)
            .arg(&self.token)
            .arg(ms)
            .invoke_async(&mut self.conn)
            .await
            .map_err(|e| unavailable(&self.describe, e))?;
            if swapped == 1 {
                let why = if lost_reply {
                    "left by this process's attempt whose reply was lost"
                } else {
                    "of a dead process"
                };
                tracing::info!(consumer = %self.name, previous = holder, "ingest: took over the lease {why}");
                return Ok(None);
            }
        }
        Ok(Some(holder))
    }

    /// Renews the lease; losing it (another process took the name) stops ingestion.
    async fn renew(&mut self) -> CoreResult<()> {
        if self.renewed.elapsed() < LEASE / 3 {
            return Ok(());
        }
        let kept: i64 = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
             if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0",
        )
        .key(&self.lease_key)
        .arg(&self.token)
        .arg(LEASE.as_millis() as u64)
        .invoke_async(&mut self.conn)
        .await
        .map_err(|e| unavailable(&self.describe, e))?;
        if kept == 0 {
            return Err(CoreError::InvalidArgument(format!(
                "consumer \"{}\" on {}: another process took this consumer name's lease; stopping",
                self.name, self.describe
            )));
        }
        self.renewed = Instant::now();
        Ok(())
    }

    fn messages(&self, reply: &Value) -> Vec<Message> {
        // [[key, [[id, [field, value, ...]], ...]]]
        let mut out = Vec::new();
        let Value::Array(streams) = reply else { return out };
        for s in streams {
            let Value::Array(kv) = s else { continue };
            let Some(Value::Array(entries)) = kv.get(1) else { continue };
            for e in entries {
                let Value::Array(e) = e else { continue };
                let Some(id) = e.first().and_then(text) else { continue };
                let Some(pos) = position(&id) else { continue };
                let fields: Vec<&Value> = match e.get(1) {
                    Some(Value::Array(f)) => f.iter().collect(),
                    // A pending entry deleted from the stream (XDEL/trim) comes back with no fields.
                    _ => Vec::new(),
                };
                let pairs: Vec<(String, &Value)> =
                    fields.chunks(2).filter_map(|c| Some((text(c.first()?)?, *c.get(1)?))).collect();
                let payload = match pairs.iter().find(|(k, _)| k == "data") {
                    Some((_, v)) if pairs.len() == 1 => Payload::Json(bytes(v).unwrap_or_default()),
                    _ => Payload::Fields(pairs.iter().map(|(k, v)| (k.clone(), text(v).unwrap_or_default())).collect()),
                };
                out.push(Message::new(Arc::clone(&self.name), pos, id, payload));
            }
        }
        out
    }
}

#[async_trait]
impl StreamConsumer for RedisStreamConsumer {
    fn describe(&self) -> String {
        format!("{} as consumer \"{}\" of group \"{}\"", self.describe, self.name, self.group)
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> CoreResult<Vec<Message>> {
        self.renew().await?;
        if let Some(after) = self.backlog.clone() {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&*self.name)
                .arg("COUNT")
                .arg(max)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&after)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| unavailable(&self.describe, e))?;
            let got = self.messages(&reply);
            match got.last() {
                Some(m) => {
                    self.backlog = Some(m.id.clone());
                    return Ok(got);
                }
                None => self.backlog = None,
            }
        }
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&*self.name)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| unavailable(&self.describe, e))?;
        Ok(self.messages(&reply))
    }

    async fn commit(&mut self, messages: &[Message]) -> CoreResult<()> {
        for chunk in messages.chunks(1000) {
            let mut cmd = redis::cmd("XACK");
            cmd.arg(&self.key).arg(&self.group);
            for m in chunk {
                cmd.arg(&m.id);
            }
            let _: i64 = tokio::time::timeout(self.timeout * 2, cmd.query_async(&mut self.conn))
                .await
                .map_err(|_| CoreError::backend(&self.describe, "XACK timed out"))?
                .map_err(|e| unavailable(&self.describe, e))?;
        }
        Ok(())
    }

    async fn lag(&mut self) -> CoreResult<Vec<(String, u64)>> {
        let reply: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| unavailable(&self.describe, e))?;
        let Value::Array(groups) = reply else { return Ok(Vec::new()) };
        for g in groups {
            let fields: Vec<(String, Value)> = match g {
                Value::Array(f) => f.chunks(2).filter_map(|c| Some((text(&c[0])?, c.get(1)?.clone()))).collect(),
                Value::Map(m) => m.into_iter().filter_map(|(k, v)| Some((text(&k)?, v))).collect(),
                _ => continue,
            };
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
            if get("name").and_then(text).as_deref() == Some(self.group.as_str())
                && let Some(Value::Int(lag)) = get("lag")
            {
                return Ok(vec![(self.group.clone(), (*lag).max(0) as u64)]);
            }
        }
        Ok(Vec::new())
    }

    async fn close(&mut self) -> CoreResult<()> {
        feature_store_core::ingest::release_lease_claim(&self.claim_key(), &self.token);
        // Released only if still ours; pending entries stay for the next run under this name.
        let _: redis::RedisResult<i64> = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .key(&self.lease_key)
        .arg(&self.token)
        .invoke_async(&mut self.conn)
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn ids_order_as_numbers() {
        assert!(position("1700000000000-5").unwrap() < position("1700000000000-10").unwrap());
        assert!(position("1700000000000-99").unwrap() < position("1700000000001-0").unwrap());
        assert_eq!(position("x"), None);
    }
}
