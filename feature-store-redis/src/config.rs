//! `online_store` options of the Redis store.

use std::collections::BTreeMap;
use std::time::Duration;

use feature_store_core::duration::parse_duration;

use crate::Error;

/// How to reach Redis and how to lay out keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS) URLs: one server, or cluster seed nodes.
    pub nodes: Vec<String>,
    /// Whether the nodes form a Redis Cluster.
    pub cluster: bool,
    /// Key prefix, before the project.
    pub key_prefix: String,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one store call (a read of any size, one write batch).
    pub timeout: Duration,
    /// Reconnection attempts before a call fails.
    pub retries: usize,
    /// Whether keys expire with the view's ttl.
    pub expire: bool,
    /// Rows per write script call (standalone; cluster calls are per slot).
    pub rows_per_script: usize,
    /// PEM file of the CA that signed the servers' certificates, for
    /// `rediss://` with a private CA; default: the system's roots.
    pub tls_ca_cert: Option<std::path::PathBuf>,
}

impl RedisConfig {
    /// One standalone server at `url` with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            nodes: vec![url.into()],
            cluster: false,
            key_prefix: "fs".into(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            retries: 2,
            expire: true,
            rows_per_script: 128,
            tls_ca_cert: None,
        }
    }

    /// A cluster reached through `seeds`.
    pub fn cluster<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Self {
        let mut c = Self::new(String::new());
        c.nodes = seeds.into_iter().map(Into::into).collect();
        c.cluster = true;
        c
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts servers signed by the CA in this PEM file.
    pub fn with_tls_ca_cert(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_cert = Some(path.into());
        self
    }

    /// Sets the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Reads the `online_store` options of `feature_store.yaml`:
    ///
    /// * `connection_string` (required): comma-separated `redis://` /
    ///   `rediss://` URLs or `host:port` items, plus Feast-style
    ///   `password=…`, `username=…`, `ssl=true`, `db=N` items;
    /// * `redis_type`: `redis` (default) or `redis_cluster`;
    /// * `key_prefix` (`fs`), `connect_timeout` (`2s`), `timeout` (`5s`),
    ///   `retries` (2), `expire` (true), `rows_per_script` (128),
    ///   `tls_ca_cert` (a PEM file; relative to the repo when opened from one).
    pub fn from_options(options: &BTreeMap<String, serde_json::Value>) -> Result<Self, Error> {
        let text = |k: &str| {
            options.get(k).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        const KNOWN: &[&str] = &[
            "type",
            "connection_string",
            "redis_type",
            "key_prefix",
            "connect_timeout",
            "timeout",
            "retries",
            "expire",
            "rows_per_script",
            "tls_ca_cert",
        ];
        if let Some(k) = options.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(Error::Config(format!("unknown option \"{k}\"; known: {}", KNOWN[1..].join(", "))));
        }
        let conn = text("connection_string")
            .ok_or_else(|| Error::Config("connection_string is required, e.g. redis://localhost:6379".into()))?;
        let mut c = Self::new(String::new());
        c.nodes = parse_connection_string(&conn)?;
        c.cluster = match text("redis_type").as_deref() {
            None | Some("redis") => false,
            Some("redis_cluster") => true,
            Some(other) => {
                return Err(Error::Config(format!("redis_type \"{other}\": expected redis or redis_cluster")));
            }
        };
        if !c.cluster && c.nodes.len() > 1 {
            return Err(Error::Config(format!(
                "{} nodes given for redis_type redis; set redis_type: redis_cluster for a cluster",
                c.nodes.len()
            )));
        }
        if let Some(p) = text("key_prefix") {
            if p.is_empty() || p.contains(['{', '}']) {
                return Err(Error::Config(format!("key_prefix \"{p}\" must be non-empty without braces")));
            }
            c.key_prefix = p;
        }
        let duration = |k: &str, d: Duration| -> Result<Duration, Error> {
            text(k).map_or(Ok(d), |t| parse_duration(&t).map_err(|m| Error::Config(format!("{k}: {m}"))))
        };
        c.connect_timeout = duration("connect_timeout", c.connect_timeout)?;
        c.timeout = duration("timeout", c.timeout)?;
        let number = |k: &str, d: usize| -> Result<usize, Error> {
            text(k)
                .map_or(Ok(d), |t| t.parse().map_err(|_| Error::Config(format!("{k}: \"{t}\" is not a whole number"))))
        };
        c.retries = number("retries", c.retries)?;
        c.rows_per_script = number("rows_per_script", c.rows_per_script)?.max(1);
        c.tls_ca_cert = text("tls_ca_cert").map(Into::into);
        c.expire = match text("expire").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(Error::Config(format!("expire: \"{other}\" is not true or false"))),
        };
        Ok(c)
    }
}

/// The server URLs of a connection string (`redis://...` URLs, or Feast's
/// `host:port,password=x,ssl=true` form).
pub(crate) fn connection_urls(text: &str) -> Result<Vec<String>, Error> {
    parse_connection_string(text)
}

/// Turns `host:port,password=x,ssl=true` or URL lists into URLs.
fn parse_connection_string(text: &str) -> Result<Vec<String>, Error> {
    let mut hosts = Vec::new();
    let (mut password, mut username, mut tls, mut db) = (None, None, false, None);
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.starts_with("redis://") || item.starts_with("rediss://") {
            hosts.push(item.to_owned());
            continue;
        }
        match item.split_once('=') {
            Some(("password", v)) => password = Some(v.to_owned()),
            Some(("username", v)) => username = Some(v.to_owned()),
            Some(("ssl", v)) => tls = v.eq_ignore_ascii_case("true"),
            Some(("db", v)) => db = Some(v.to_owned()),
            Some((k, _)) => return Err(Error::Config(format!("connection_string: unknown option \"{k}\""))),
            None => hosts.push(item.to_owned()),
        }
    }
    if hosts.is_empty() {
        return Err(Error::Config("connection_string names no server".into()));
    }
    Ok(hosts
        .into_iter()
        .map(|h| {
            if h.contains("://") {
                return h;
            }
            // Feast's form takes the password as written; a URL needs
            // `@`, `/`, `#`, `%`... percent-encoded.
            let auth = match (&username, &password) {
                (Some(u), Some(p)) => format!("{}:{}@", userinfo(u), userinfo(p)),
                (None, Some(p)) => format!(":{}@", userinfo(p)),
                _ => String::new(),
            };
            let scheme = if tls { "rediss" } else { "redis" };
            let db = db.as_ref().map(|d| format!("/{d}")).unwrap_or_default();
            format!("{scheme}://{auth}{h}{db}")
        })
        .collect())
}

/// `text` percent-encoded for a URL's user or password: all but unreserved characters.
fn userinfo(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, serde_json::Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned()))).collect()
    }

    #[test]
    fn feast_style_and_url_connection_strings() {
        let c = RedisConfig::from_options(&opts(&[("connection_string", "localhost:6379,password=s3cret,ssl=true")]))
            .unwrap();
        assert_eq!(c.nodes, vec!["rediss://:s3cret@localhost:6379"]);
        let c = RedisConfig::from_options(&opts(&[
            ("connection_string", "redis://a:1,redis://b:2"),
            ("redis_type", "redis_cluster"),
            ("timeout", "250ms"),
        ]))
        .unwrap();
        assert!(c.cluster);
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_options_are_named() {
        for (pairs, needle) in [
            (vec![], "connection_string is required"),
            (vec![("connection_string", "a:1"), ("redis_type", "sentinel")], "redis_type"),
            (vec![("connection_string", "a:1,b:2")], "redis_cluster"),
            (vec![("connection_string", "a:1"), ("timeout", "soon")], "timeout"),
            (vec![("connection_string", "a:1"), ("conection_timeout", "1s")], "unknown option \"conection_timeout\""),
        ] {
            let err = RedisConfig::from_options(&opts(&pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
