//! `feature-store serve`: the Feast-compatible feature server
//! (`feature-store-server`) over the repo's store, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;

use feature_store::FeatureStore;
use feature_store_server::{Server, ServerConfig};

/// Flags of `serve`; each overrides the repo's `feature_server:` key.
pub(crate) struct Flags {
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) grpc_port: Option<u16>,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) workers: Option<usize>,
    pub(crate) max_body: Option<String>,
    pub(crate) request_timeout: Option<String>,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) shutdown_timeout: Option<String>,
    pub(crate) allow_unauthenticated: bool,
}

pub(crate) async fn serve(store: FeatureStore, flags: Flags, json: bool) -> anyhow::Result<()> {
    let mut b = ServerConfig::from_repo(store.config())?.keys_from_env(true);
    if let Some(h) = flags.host {
        b = b.host(h);
    }
    if let Some(p) = flags.port {
        b = b.port(p);
    }
    if let Some(p) = flags.grpc_port {
        b = b.grpc_port(p);
    }
    if let Some((c, k)) = flags.tls {
        b = b.tls(c, k);
    }
    if let Some(n) = flags.workers {
        b = b.workers(n);
    }
    if let Some(s) = flags.max_body {
        b = b.max_body(s);
    }
    if let Some(t) = flags.request_timeout {
        b = b.request_timeout(t);
    }
    if let Some(n) = flags.max_concurrency {
        b = b.max_concurrency(n);
    }
    if let Some(t) = flags.shutdown_timeout {
        b = b.shutdown_timeout(t);
    }
    if flags.allow_unauthenticated {
        b = b.allow_unauthenticated(true);
    }
    let config = b.build()?;
    let tls = config.tls.is_some();
    let auth = config.auth_enabled();
    // Signals go to the graceful shutdown from here on.
    crate::interrupt::uninstall();
    let project = store.project().to_owned();
    let server = Server::bind(Arc::new(store), config).await?;
    let scheme = if tls { "https" } else { "http" };
    let http = format!("{scheme}://{}", server.local_addr());
    let grpc = server.grpc_local_addr().map(|a| a.to_string());
    if json {
        crate::output::json(&serde_json::json!({
            "project": project, "http": http, "grpc": grpc.clone().unwrap_or_else(|| server.local_addr().to_string()),
            "tls": tls, "auth": auth,
        }))?;
    } else {
        println!(
            "Serving project \"{project}\" on {http} (gRPC on {}{}{}). Stop with Ctrl-C or SIGTERM.",
            grpc.as_deref()
                .map_or_else(|| "the same port".to_owned(), |g| format!("port {}", g.rsplit(':').next().unwrap_or(g))),
            if tls { ", TLS" } else { "" },
            if auth { ", API keys required" } else { "" },
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server.run(feature_store_server::shutdown_signal()).await?;
    if !json {
        println!("Stopped.");
    }
    Ok(())
}
