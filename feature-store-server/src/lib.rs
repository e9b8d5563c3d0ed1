//! A Feast-compatible feature server over a [`FeatureStore`]: Feast's HTTP
//! endpoints (`/get-online-features`, `/push`, ...) and its gRPC
//! `feast.serving.ServingService`, on axum/hyper and tonic, so a team moves
//! off Feast's Python server by changing a URL.
//!
//! Run it with [`Server::bind`] and [`Server::run`] (what `feature-store
//! serve` does), or mount [`router`] beside a service's own routes:
//!
//! ```no_run
//! # async fn f(store: std::sync::Arc<feature_store_core::FeatureStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use feature_store_server::{ServerConfig, router};
//! let features = router(store, &ServerConfig::builder().build()?);
//! let app = axum::Router::new().nest("/features", features);
//! # let _ = app; Ok(()) }
//! ```
//!
//! Every request passes one middleware (auth, concurrency limit, timeout,
//! metrics, access log through `tracing` target `feature_store_server::access`,
//! which never records feature values or keys).

mod config;
mod error;
/// For the fuzz target `server_request` only (the fuzz crate can reach
/// nothing private); not part of the API.
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod http;
mod json;
mod metrics;
mod serve;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use feature_store_core::FeatureStore;
use futures::FutureExt;
use tower::ServiceExt;

pub use config::{API_KEYS_ENV, DEFAULT_PORT, ServerConfig, ServerConfigBuilder};
pub use error::Error;
pub use grpc::FeastServing;
pub use serve::{Server, shutdown_signal};

/// Code generated from Feast's own `.proto` files (Feast 0.67, Apache-2.0).
pub mod proto {
    /// `feast.types`: typed values.
    #[allow(missing_docs, clippy::all, unreachable_pub)]
    pub mod types {
        tonic::include_proto!("feast.types");
    }
    /// `feast.serving`: the `ServingService` messages, server and client.
    #[allow(missing_docs, clippy::all, unreachable_pub)]
    pub mod serving {
        tonic::include_proto!("feast.serving");
    }
    /// The encoded descriptors, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/feast_descriptor.bin"));
}

type ServingServer = proto::serving::serving_service_server::ServingServiceServer<FeastServing>;

pub(crate) struct Parts {
    pub(crate) router: Router,
    pub(crate) grpc_router: Router,
    pub(crate) state: Arc<http::AppState>,
    pub(crate) health: tonic_health::server::HealthReporter,
}

/// Adds a tonic service under its `/package.Service/` prefix.
fn add_grpc<S>(router: Router, svc: S) -> Router
where
    S: tower::Service<axum::http::Request<tonic::body::Body>, Error = Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    router.route_service(
        &format!("/{}/{{*rest}}", S::NAME),
        svc.map_request(|req: axum::http::Request<axum::body::Body>| req.map(tonic::body::Body::new)),
    )
}

pub(crate) fn build(store: Arc<FeatureStore>, config: &ServerConfig) -> Parts {
    let state = Arc::new(http::AppState::new(store, config));
    let serving = ServingServer::new(FeastServing { state: Arc::clone(&state) })
        .max_decoding_message_size(config.max_body_bytes)
        .max_encoding_message_size(usize::MAX);
    let (health, health_service) = tonic_health::server::health_reporter();
    // Uncontended at this point, so it completes at once.
    let _ = health.set_serving::<ServingServer>().now_or_never();
    let mut grpc = add_grpc(Router::new(), serving);
    grpc = add_grpc(grpc, health_service);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    if let Ok(v1) = reflection.build_v1() {
        grpc = add_grpc(grpc, v1);
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    if let Ok(v1alpha) = reflection.build_v1alpha() {
        grpc = add_grpc(grpc, v1alpha);
    }
    let finish = |r: Router| {
        r.fallback(http::fallback)
            .method_not_allowed_fallback(http::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), http::guard))
            .layer(DefaultBodyLimit::max(http::body_limit(&state)))
            .layer(axum::Extension(http::BodyLimit(http::body_limit(&state))))
    };
    let router = finish(http::routes(Arc::clone(&state)).merge(grpc.clone()));
    let grpc_router = finish(grpc);
    Parts { router, grpc_router, state, health }
}

/// Every endpoint, HTTP and gRPC, as one axum [`Router`] over `store`, with
/// `config`'s auth, limits and timeout applied, to mount in a service.
/// The registry is read through the store's cache (re-read each cache ttl
/// by the request that finds it expired); [`Server`] refreshes it in the
/// background instead.
pub fn router(store: Arc<FeatureStore>, config: &ServerConfig) -> Router {
    store.registry().keep_last_good(true);
    build(store, config).router
}

/// The gRPC `ServingService` alone, for a tonic server of the caller's.
pub fn grpc_service(store: Arc<FeatureStore>, config: &ServerConfig) -> ServingServer {
    let state = Arc::new(http::AppState::new(store, config));
    ServingServer::new(FeastServing { state })
}
