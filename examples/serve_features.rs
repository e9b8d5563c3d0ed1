//! A small inference-side service: open the store once at start-up, then
//! answer every request with an in-process online lookup (no feature server
//! hop). Run the demo first (`./scripts/demo.sh`), then:
//!
//! ```text
//! cargo run --example serve_features -- demo_repo 127.0.0.1:8080
//! curl 'http://127.0.0.1:8080/features?driver_id=1001&driver_id=1002'
//! ```
//!
//! The reply is the Feast feature-server JSON for the `driver_activity`
//! service plus the lookup time in an `x-lookup-micros` header. HTTP is
//! parsed by hand to keep the example free of a web framework.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use feature_store::arrow_array::{ArrayRef, Int64Array, RecordBatch};
use feature_store::{FeatureStore, Features, OnlineOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let repo = args.next().unwrap_or_else(|| "demo_repo".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    // Opened once: registry cache, online store connections and prepared
    // statements are reused by every request.
    let store = Arc::new(feature_store::open(&repo).with_context(|| format!("opening repo {repo}"))?);
    let features = Arc::new(Features::service("driver_activity"));
    let listener = TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!("serving features of {repo} on http://{addr}/features?driver_id=1001");
    loop {
        let (socket, _) = listener.accept().await?;
        let (store, features) = (Arc::clone(&store), Arc::clone(&features));
        tokio::spawn(async move {
            if let Err(e) = handle(socket, &store, &features).await {
                eprintln!("request failed: {e:#}");
            }
        });
    }
}

async fn handle(socket: TcpStream, store: &FeatureStore, features: &Features) -> anyhow::Result<()> {
    let mut reader = BufReader::new(socket);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    // Drain headers.
    let mut line = String::new();
    while reader.read_line(&mut line).await? > 2 {
        line.clear();
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body, micros) = match lookup(store, features, target).await {
        Ok((body, micros)) => ("200 OK", body, micros),
        Err(e) => ("400 Bad Request", serde_json::json!({ "error": format!("{e:#}") }).to_string(), 0),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-lookup-micros: {micros}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    reader.get_mut().write_all(response.as_bytes()).await?;
    Ok(())
}

/// `/features?driver_id=1&driver_id=2` → Feast-shaped JSON and the lookup time.
async fn lookup(store: &FeatureStore, features: &Features, target: &str) -> anyhow::Result<(String, u128)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    anyhow::ensure!(path == "/features", "unknown path {path}; use /features?driver_id=N");
    let ids = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("driver_id="))
        .map(|v| v.parse::<i64>().with_context(|| format!("driver_id \"{v}\" is not an integer")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!ids.is_empty(), "give at least one driver_id");
    let rows = RecordBatch::try_from_iter([("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef)])?;
    let started = Instant::now();
    let response = store.get_online_features(features, &rows, &OnlineOptions::default()).await?;
    let micros = started.elapsed().as_micros();
    Ok((response.to_feast_json().to_string(), micros))
}
