//! Server settings: the `feature_server:` section of `feature_store.yaml`,
//! overridden by command-line flags, validated in [`ServerConfigBuilder::build`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use feature_store_core::RepoConfig;
use feature_store_core::duration::parse_duration;
use feature_store_core::repo::parse_size;
use serde::Deserialize;

use crate::error::Error;

/// Port of Feast's feature server, kept so clients switch by URL alone.
pub const DEFAULT_PORT: u16 = 6566;
/// Environment variable holding API keys (comma-separated), beside `feature_server.auth.api_keys`.
pub const API_KEYS_ENV: &str = "FEATURE_STORE_API_KEYS";

/// Validated server settings. Build with [`ServerConfig::builder`] or
/// [`ServerConfig::from_repo`].
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// HTTP (and gRPC) listen address.
    pub addr: SocketAddr,
    /// A second listener for gRPC only (gRPC is always served on `addr` too).
    pub grpc_addr: Option<SocketAddr>,
    /// Certificate chain and private key (PEM); both listeners use TLS when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Runtime worker threads (the CLI's; embedded servers use the caller's runtime).
    pub workers: Option<usize>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered 503 (gRPC: DEADLINE_EXCEEDED).
    pub request_timeout: Duration,
    /// Requests served at once; more are answered 503 (gRPC: UNAVAILABLE) at once.
    pub max_concurrency: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Accepted API keys / bearer tokens; empty means no authentication.
    api_keys: Vec<String>,
}

impl std::fmt::Debug for ServerConfig {
    // Keys are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("tls", &self.tls)
            .field("workers", &self.workers)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("api_keys", &format_args!("[{} redacted]", self.api_keys.len()))
            .finish()
    }
}

impl ServerConfig {
    /// A builder with the defaults: `127.0.0.1:6566`, no TLS, no auth,
    /// 16 MiB bodies, 30 s per request, 1024 requests at once, 30 s to drain.
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder::default()
    }

    /// A builder holding the repo's `feature_server:` section; flags set on
    /// it afterwards override the file.
    pub fn from_repo(config: &RepoConfig) -> Result<ServerConfigBuilder, Error> {
        let mut b = ServerConfigBuilder::default();
        let Some(section) = &config.feature_server else { return Ok(b) };
        let s: Section = serde_path_to_error::deserialize(section)
            .map_err(|e| Error::config(format!("feature_server.{}", e.path()), e.inner().to_string()))?;
        if let Some(t) = s.kind.as_deref()
            && !matches!(t, "local" | "http" | "grpc")
        {
            return Err(Error::config(
                "feature_server.type",
                format!("\"{t}\" is not a server this library runs; use local"),
            ));
        }
        b.host = s.host;
        b.port = s.port;
        b.grpc_port = s.grpc_port;
        if let Some(tls) = s.tls {
            b.tls_cert = Some(tls.cert.into());
            b.tls_key = Some(tls.key.into());
        }
        b.workers = s.workers;
        b.max_body = s.max_body;
        b.request_timeout = s.request_timeout;
        b.max_concurrency = s.max_concurrency;
        b.shutdown_timeout = s.shutdown_timeout;
        if let Some(auth) = s.auth {
            b.api_keys = auth.api_keys;
            b.allow_unauthenticated = auth.allow_unauthenticated;
        }
        b.repo_path = Some(config.repo_path.clone());
        Ok(b)
    }

    /// True when requests must carry one of the API keys.
    pub fn auth_enabled(&self) -> bool {
        !self.api_keys.is_empty()
    }

    pub(crate) fn api_keys(&self) -> &[String] {
        &self.api_keys
    }
}

/// The YAML section. Feast's keys (`type`, `enabled`, `metrics`, ...) are
/// accepted so Feast configs load.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    enabled: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    metrics: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    offline_push_batching_enabled: Option<serde_json::Value>,
    host: Option<String>,
    port: Option<u16>,
    grpc_port: Option<u16>,
    tls: Option<TlsSection>,
    workers: Option<usize>,
    max_body: Option<String>,
    request_timeout: Option<String>,
    max_concurrency: Option<usize>,
    shutdown_timeout: Option<String>,
    auth: Option<AuthSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    allow_unauthenticated: bool,
}

/// Builds a [`ServerConfig`]; every setting is checked in [`Self::build`].
#[derive(Debug, Default, Clone)]
pub struct ServerConfigBuilder {
    host: Option<String>,
    port: Option<u16>,
    grpc_port: Option<u16>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    workers: Option<usize>,
    max_body: Option<String>,
    request_timeout: Option<String>,
    max_concurrency: Option<usize>,
    shutdown_timeout: Option<String>,
    api_keys: Vec<String>,
    allow_unauthenticated: bool,
    use_env_keys: bool,
    repo_path: Option<PathBuf>,
}

impl ServerConfigBuilder {
    /// Listen host (an IP address or `localhost`); default `127.0.0.1`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }
    /// HTTP port (0 picks a free one); default 6566.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// A second, gRPC-only port.
    pub fn grpc_port(mut self, port: u16) -> Self {
        self.grpc_port = Some(port);
        self
    }
    /// TLS with this PEM certificate chain and key.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }
    /// Sets only the certificate (the CLI's `--tls-cert`); `build` requires the key too.
    pub fn tls_cert(mut self, cert: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self
    }
    /// Sets only the key (the CLI's `--tls-key`).
    pub fn tls_key(mut self, key: impl Into<PathBuf>) -> Self {
        self.tls_key = Some(key.into());
        self
    }
    /// Runtime worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }
    /// Largest request body, as a size (`16MiB`).
    pub fn max_body(mut self, size: impl Into<String>) -> Self {
        self.max_body = Some(size.into());
        self
    }
    /// Per-request timeout, as a duration (`30s`, `500ms`).
    pub fn request_timeout(mut self, d: impl Into<String>) -> Self {
        self.request_timeout = Some(d.into());
        self
    }
    /// Requests served at once.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n);
        self
    }
    /// How long shutdown waits for in-flight requests (`30s`).
    pub fn shutdown_timeout(mut self, d: impl Into<String>) -> Self {
        self.shutdown_timeout = Some(d.into());
        self
    }
    /// Adds an accepted API key (bearer token).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }
    /// Also accept the keys in `FEATURE_STORE_API_KEYS` (comma-separated).
    pub fn keys_from_env(mut self, yes: bool) -> Self {
        self.use_env_keys = yes;
        self
    }
    /// Allows serving a non-loopback address without API keys.
    pub fn allow_unauthenticated(mut self, yes: bool) -> Self {
        self.allow_unauthenticated = yes;
        self
    }

    /// Checks every setting and resolves the addresses.
    pub fn build(self) -> Result<ServerConfig, Error> {
        let host = self.host.as_deref().unwrap_or("127.0.0.1");
        let ip: IpAddr = match host {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            h => h.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| {
                Error::config("host", format!("\"{h}\" is not an IP address (use 127.0.0.1, 0.0.0.0 or ::)"))
            })?,
        };
        let port = self.port.unwrap_or(DEFAULT_PORT);
        let addr = SocketAddr::new(ip, port);
        let grpc_addr = self.grpc_port.map(|p| SocketAddr::new(ip, p));
        if let Some(g) = grpc_addr
            && p_eq(g.port(), port)
        {
            return Err(Error::config(
                "grpc_port",
                format!(
                    "{} is the HTTP port too; gRPC is served there already, so leave grpc_port out or pick another",
                    g.port()
                ),
            ));
        }
        let resolve = |p: PathBuf| match &self.repo_path {
            Some(root) if p.is_relative() => root.join(p),
            _ => p,
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(c), Some(k)) => Some((resolve(c), resolve(k))),
            (None, None) => None,
            (Some(_), None) => return Err(Error::config("tls_key", "a certificate was given without its key")),
            (None, Some(_)) => return Err(Error::config("tls_cert", "a key was given without its certificate")),
        };
        let size = |key: &str, v: Option<String>, default: usize| -> Result<usize, Error> {
            match v {
                None => Ok(default),
                Some(t) => match parse_size(&t) {
                    Ok(0) => Err(Error::config(key, "must be more than 0 bytes")),
                    Ok(n) => Ok(n),
                    Err(m) => Err(Error::config(key, m)),
                },
            }
        };
        let duration = |key: &str, v: Option<String>, default: Duration| -> Result<Duration, Error> {
            match v {
                None => Ok(default),
                Some(t) => match parse_duration(&t) {
                    Ok(d) if d.is_zero() => Err(Error::config(key, "must be longer than 0")),
                    Ok(d) => Ok(d),
                    Err(m) => Err(Error::config(key, m)),
                },
            }
        };
        let max_body_bytes = size("max_body", self.max_body, 16 << 20)?;
        let request_timeout = duration("request_timeout", self.request_timeout, Duration::from_secs(30))?;
        let shutdown_timeout = duration("shutdown_timeout", self.shutdown_timeout, Duration::from_secs(30))?;
        let max_concurrency = self.max_concurrency.unwrap_or(1024);
        if max_concurrency == 0 {
            return Err(Error::config("max_concurrency", "must be at least 1"));
        }
        if self.workers == Some(0) {
            return Err(Error::config("workers", "must be at least 1"));
        }
        let mut api_keys: Vec<String> = Vec::new();
        for (i, k) in self.api_keys.into_iter().enumerate() {
            let k = k.trim().to_owned();
            if k.is_empty() {
                // An unset `${VAR}` becomes an empty key: refuse rather than run open.
                return Err(Error::config(
                    format!("auth.api_keys[{i}]"),
                    "is empty (an environment variable it names may be unset)",
                ));
            }
            api_keys.push(k);
        }
        if self.use_env_keys
            && let Ok(v) = std::env::var(API_KEYS_ENV)
        {
            api_keys.extend(v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned));
        }
        if api_keys.is_empty() && !ip.is_loopback() && !self.allow_unauthenticated {
            return Err(Error::config(
                "auth",
                format!(
                    "serving on {ip}, reachable from other machines, without API keys; set feature_server.auth.api_keys \
                     (or {API_KEYS_ENV}), or allow it explicitly with feature_server.auth.allow_unauthenticated: true \
                     (--allow-unauthenticated)"
                ),
            ));
        }
        Ok(ServerConfig {
            addr,
            grpc_addr,
            tls,
            workers: self.workers,
            max_body_bytes,
            request_timeout,
            max_concurrency,
            shutdown_timeout,
            api_keys,
        })
    }
}

fn p_eq(a: u16, b: u16) -> bool {
    a == b && a != 0
}
