//! An inference-side service that mounts feature serving beside its own
//! routes: the store is opened once at start-up, `feature_store_server::router`
//! adds Feast's endpoints (and gRPC) under `/features`, and the service's own
//! handler calls the store in-process (no network hop). Run the demo first
//! (`./scripts/demo.sh`), then:
//!
//! ```text
//! cargo run --example serve_features -- demo_repo 127.0.0.1:8080
//! curl -X POST http://127.0.0.1:8080/features/get-online-features \
//!      -d '{"feature_service": "driver_activity", "entities": {"driver_id": [1001, 1002]}}'
//! curl 'http://127.0.0.1:8080/rank?driver_id=1001&driver_id=1002'
//! ```

use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use feature_store::arrow_array::{ArrayRef, Int64Array, RecordBatch};
use feature_store::{FeatureStore, Features, OnlineOptions};
use feature_store_server::{ServerConfig, router, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let repo = args.next().unwrap_or_else(|| "demo_repo".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let store = Arc::new(feature_store::open(&repo).with_context(|| format!("opening repo {repo}"))?);
    let features = router(Arc::clone(&store), &ServerConfig::builder().build()?);
    let app = axum::Router::new().route("/rank", get(rank)).with_state(Arc::clone(&store)).nest("/features", features);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!("serving {repo} on http://{addr}/rank?driver_id=1001 and http://{addr}/features/get-online-features");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

/// The service's own endpoint: ranks drivers by conversion rate, reading
/// features in-process.
async fn rank(State(store): State<Arc<FeatureStore>>, uri: Uri) -> Result<String, (axum::http::StatusCode, String)> {
    let bad = |m: String| (axum::http::StatusCode::BAD_REQUEST, m);
    let ids = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("driver_id="))
        .map(|v| v.parse::<i64>().map_err(|_| bad(format!("driver_id \"{v}\" is not an integer"))))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(bad("give at least one driver_id".into()));
    }
    let rows = RecordBatch::try_from_iter([("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef)])
        .map_err(|e| bad(e.to_string()))?;
    let response = store
        .get_online_features(&Features::service("driver_activity"), &rows, &OnlineOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let mut ranked: Vec<(i64, f64)> = (0..response.num_rows())
        .map(|r| {
            let id = response.value(r, "driver_id").ok().and_then(|v| v.as_i64()).unwrap_or_default();
            let rate = response.value(r, "conv_rate").ok().and_then(|v| v.as_f64()).unwrap_or(f64::NEG_INFINITY);
            (id, rate)
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(ranked.iter().map(|(id, rate)| format!("{id}\t{rate}\n")).collect())
}
