//! Listening: HTTP/1.1 and h2 on one port (gRPC included), an optional
//! gRPC-only port, TLS, graceful shutdown, and the registry kept fresh.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::error::Error;
use crate::http::AppState;

/// A bound server: the ports are open once [`Server::bind`] returns (so a
/// caller can read the chosen ports), and requests are served by [`Server::run`].
pub struct Server {
    http: TcpListener,
    grpc: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    router: Router,
    grpc_router: Router,
    state: Arc<AppState>,
    health: tonic_health::server::HealthReporter,
    config: ServerConfig,
}

impl Server {
    /// Reads the registry once (a broken one fails here, not on the first
    /// request), loads TLS files and binds the ports.
    pub async fn bind(store: Arc<feature_store_core::FeatureStore>, config: ServerConfig) -> Result<Self, Error> {
        store.online_store()?;
        store.registry().keep_last_good(true);
        store.document().await?;
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr: addr.to_string(), source })
        };
        let http = bind(config.addr).await?;
        let grpc = match config.grpc_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let parts = crate::build(store, &config);
        Ok(Self {
            http,
            grpc,
            tls,
            router: parts.router,
            grpc_router: parts.grpc_router,
            state: parts.state,
            health: parts.health,
            config,
        })
    }

    /// The HTTP (and gRPC) address, with the port the OS chose for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.addr)
    }

    /// The gRPC-only address, when one was asked for.
    pub fn grpc_local_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish within the shutdown timeout, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Self { http, grpc, tls, router, grpc_router, state, health, config } = self;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            target: "feature_store_server",
            addr = %http.local_addr().map_or_else(|_| config.addr.to_string(), |a| a.to_string()),
            grpc_addr = ?grpc.as_ref().and_then(|g| g.local_addr().ok()),
            scheme,
            auth = !config.api_keys().is_empty(),
            "feature server listening"
        );
        let refresher = tokio::spawn(keep_registry_fresh(Arc::clone(&state)));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer, router) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = http.accept() => match accepted {
                    Ok((s, p)) => (s, p, router.clone()),
                    Err(e) => { accept_failed(e).await; continue; }
                },
                accepted = accept_opt(grpc.as_ref()) => match accepted {
                    Ok((s, p)) => (s, p, grpc_router.clone()),
                    Err(e) => { accept_failed(e).await; continue; }
                },
            };
            let _ = stream.set_nodelay(true);
            let watcher = graceful.watcher();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = TowerToHyperService::new(router);
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                let _ = watcher.watch(builder.serve_connection(TokioIo::new(s), service)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        // Stop accepting first, then drain.
        drop(http);
        drop(grpc);
        health.set_not_serving::<crate::proto::serving::serving_service_server::ServingServiceServer<crate::FeastServing>>().await;
        tracing::info!(target: "feature_store_server", "shutting down: finishing requests in flight");
        match tokio::time::timeout(config.shutdown_timeout, graceful.shutdown()).await {
            Ok(()) => tracing::info!(target: "feature_store_server", "all connections closed"),
            Err(_) => tracing::warn!(
                target: "feature_store_server",
                timeout = ?config.shutdown_timeout,
                "shutdown timeout passed with connections still open; closing them"
            ),
        }
        refresher.abort();
        Ok(())
    }
}

async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Out of file descriptors and the like: log, pause, go on accepting.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(target: "feature_store_server", error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Re-reads the registry every cache ttl, so requests never wait on a read
/// and an `apply` is served without a restart; a failed read keeps the last
/// good version (reported by `/health`).
async fn keep_registry_fresh(state: Arc<AppState>) {
    let registry = state.store.registry();
    let ttl = registry.cache_ttl();
    if ttl.is_zero() {
        return; // every request reads the registry itself
    }
    let mut version = registry.health().version;
    loop {
        tokio::time::sleep(ttl.max(Duration::from_millis(200))).await;
        let _ = registry.refresh().await;
        let h = registry.health();
        if h.version != version && h.last_error.is_none() {
            tracing::info!(target: "feature_store_server", version = ?h.version, "serving a new registry version");
            version = h.version;
        }
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |p: &std::path::Path, m: String| Error::Tls { path: p.display().to_string(), message: m };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, format!("cannot read a PEM certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(err(cert, "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| err(key, format!("does not match the certificate or is unusable: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!(target: "feature_store_server", "signal received");
}
