//! The HTTP endpoints, shaped as Feast's Python feature server shapes them,
//! and the one middleware every request (HTTP and gRPC) passes: auth,
//! the concurrency limit, the timeout, metrics and the access log.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow_schema::DataType;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feature_store_core::online::ViewRead;
use feature_store_core::{Error as CoreError, FeatureStore, Features, MaterializeOptions, OnlineOptions, PushMode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::json::{columns_to_batch, request_time};
use crate::metrics::{Metrics, StoreKind};

/// Column types by name, for one registry version.
type TypesAt = Option<(u64, Arc<HashMap<String, DataType>>)>;

/// Shared by every request.
pub(crate) struct AppState {
    pub(crate) store: Arc<FeatureStore>,
    pub(crate) metrics: Metrics,
    limiter: Arc<Semaphore>,
    timeout: Duration,
    api_keys: Vec<String>,
    max_body_bytes: usize,
    /// Entity and request-field types, per registry version.
    key_types: std::sync::Mutex<TypesAt>,
}

impl AppState {
    pub(crate) fn new(store: Arc<FeatureStore>, config: &ServerConfig) -> Self {
        Self {
            store,
            metrics: Metrics::new(),
            limiter: Arc::new(Semaphore::new(config.max_concurrency)),
            timeout: config.request_timeout,
            api_keys: config.api_keys().to_vec(),
            max_body_bytes: config.max_body_bytes,
            key_types: std::sync::Mutex::new(None),
        }
    }

    /// Registry types of every join key and request field, so `1001` is
    /// read as the key's declared type.
    async fn key_types(&self) -> Result<Arc<HashMap<String, DataType>>, ApiError> {
        let doc = self.store.document().await.map_err(|e| self.store_error(StoreKind::Registry, e))?;
        if let Some((v, types)) = self.key_types.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *v == doc.version
        {
            return Ok(Arc::clone(types));
        }
        let project = doc.project(self.store.project());
        let mut types = HashMap::new();
        for e in project.registry().entities.values() {
            for k in &e.spec.join_keys {
                if let Some(t) = &k.dtype {
                    types.insert(k.name.clone(), t.to_arrow());
                }
            }
        }
        for r in project.registry().request_sources.values() {
            for f in &r.spec.schema {
                types.entry(f.name.clone()).or_insert_with(|| f.dtype.to_arrow());
            }
        }
        let types = Arc::new(types);
        *self.key_types.lock().unwrap_or_else(|p| p.into_inner()) = Some((doc.version, Arc::clone(&types)));
        Ok(types)
    }

    /// Maps a store error and counts it when a store failed.
    pub(crate) fn store_error(&self, store: StoreKind, e: CoreError) -> ApiError {
        if matches!(
            e,
            CoreError::StoreUnavailable { .. } | CoreError::Backend { .. } | CoreError::CorruptRegistry { .. }
        ) {
            self.metrics.store_error(store);
        }
        ApiError::from(e)
    }
}

/// Entity rows a request asked for, for the access log.
#[derive(Clone, Copy)]
struct EntityCount(usize);

/// Every route; gRPC services are merged in by [`crate::router`].
pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/get-online-features", post(get_online_features))
        .route("/push", post(push))
        .route("/write-to-online-store", post(write_to_online_store))
        .route("/materialize", post(materialize))
        .route("/materialize-incremental", post(materialize_incremental))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

pub(crate) async fn fallback(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {method} {}; this server answers POST /get-online-features, /push, /write-to-online-store, \
         /materialize, /materialize-incremental, GET /health, /ready, /metrics, and gRPC feast.serving.ServingService",
        uri.path()
    ))
}

pub(crate) async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    let allowed = if matches!(uri.path(), "/health" | "/ready" | "/metrics") { "GET" } else { "POST" };
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} takes {allowed}, not {method}", uri.path()),
    )
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"))
}

/// The request's token: `Authorization: Bearer T` or `x-api-key: T`.
fn token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Equal-length comparison that does not stop at the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error_response(grpc: bool, e: ApiError) -> Response {
    if grpc {
        let mut r = e.to_grpc().into_http::<axum::body::Body>();
        *r.status_mut() = StatusCode::OK;
        let (parts, body) = r.into_parts();
        Response::from_parts(parts, body)
    } else {
        e.into_response()
    }
}

/// Auth, concurrency limit, timeout, metrics and access log around every request.
pub(crate) async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let grpc = is_grpc(req.headers());
    let endpoint = Metrics::endpoint_index(&path);
    let open = matches!(path.as_str(), "/health" | "/ready") || path.starts_with("/grpc.health.");
    if !state.api_keys.is_empty() && !open {
        let denied = match token(req.headers()) {
            None => Some(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "this server needs an API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
            )),
            Some(t) if !state.api_keys.iter().any(|k| same_secret(k, t)) => {
                Some(ApiError::new(StatusCode::FORBIDDEN, "permission_denied", "the API key sent is not accepted here"))
            }
            Some(_) => None,
        };
        if let Some(e) = denied {
            let status = e.status;
            state.metrics.record(endpoint, status.as_u16(), started.elapsed());
            tracing::info!(target: "feature_store_server::access", %method, path, status = status.as_u16(), "denied");
            return error_response(grpc, e);
        }
    }
    let Ok(permit) = Arc::clone(&state.limiter).try_acquire_owned() else {
        state.metrics.overloaded();
        state.metrics.record(endpoint, 503, started.elapsed());
        return error_response(
            grpc,
            ApiError::unavailable("the server is at its max_concurrency of requests in flight; retry shortly"),
        );
    };
    state.metrics.in_flight().fetch_add(1, Ordering::Relaxed);
    // Materialization runs to completion (it is spawned and cannot be cut midway).
    let timed = !path.starts_with("/materialize");
    let response = if timed {
        match tokio::time::timeout(state.timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => error_response(
                grpc,
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    format!("the request took longer than the server's request_timeout of {:?}", state.timeout),
                ),
            ),
        }
    } else {
        next.run(req).await
    };
    state.metrics.in_flight().fetch_sub(1, Ordering::Relaxed);
    drop(permit);
    let elapsed = started.elapsed();
    let status = if grpc { grpc_as_http(response.headers()) } else { response.status().as_u16() };
    state.metrics.record(endpoint, status, elapsed);
    let entities = response.extensions().get::<EntityCount>().map_or(0, |c| c.0);
    tracing::info!(
        target: "feature_store_server::access",
        %method,
        path,
        status,
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        entities,
    );
    response
}

/// The HTTP status a gRPC status code corresponds to, for metrics.
fn grpc_as_http(headers: &HeaderMap) -> u16 {
    match headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()) {
        None | Some(0) => 200,
        Some(3 | 11) => 400,
        Some(5) => 404,
        Some(16) => 401,
        Some(7) => 403,
        Some(10) => 409,
        Some(14) => 503,
        Some(4) => 504,
        Some(_) => 500,
    }
}

/// A JSON body read within the size limit and parsed with the path of
/// what failed (`entities.driver_id`).
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map(|l| format!(" ({})", size_text(l.0))).unwrap_or_default();
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the request body is larger than the server's max_body{limit}; send fewer rows per request, or raise max_body"
                    ),
                )
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("the request body is empty; send a JSON object"));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de).map(Body).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_path_to_error says "?" where the document ended before a path began.
            let at = if path == "." || path.is_empty() || path == "?" { String::new() } else { format!(" at {path}") };
            ApiError::bad_request(format!("malformed JSON body{at}: {inner}"))
        })
    }
}

/// `features` or `feature_service`, as Feast takes them.
pub(crate) fn features(features: Option<Vec<String>>, service: Option<String>) -> Result<Features, ApiError> {
    match (features.filter(|f| !f.is_empty()), service) {
        (Some(_), Some(s)) => Err(ApiError::bad_request(format!(
            "give either features or feature_service, not both (feature_service \"{s}\" was given with a feature list)"
        ))),
        (Some(f), None) => Ok(Features::refs(f)),
        (None, Some(s)) => Ok(Features::service(s)),
        (None, None) => Err(ApiError::bad_request(
            "no features asked for: give \"features\": [\"view:feature\", ...] or \"feature_service\": \"name\"",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OnlineRequest {
    #[serde(default)]
    pub(crate) features: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) feature_service: Option<String>,
    pub(crate) entities: Map<String, Value>,
    #[serde(default)]
    full_feature_names: bool,
    /// Request data of on-demand features; may also ride in `entities`, as Feast sends it.
    #[serde(default)]
    pub(crate) request_context: Option<Map<String, Value>>,
    #[serde(default)]
    include_feature_view_version_metadata: bool,
}

async fn get_online_features(State(state): State<Arc<AppState>>, Body(req): Body<OnlineRequest>) -> Response {
    match online(&state, req).await {
        Ok((body, n)) => {
            let mut r =
                ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], axum::body::Body::from(body))
                    .into_response();
            r.extensions_mut().insert(EntityCount(n));
            r
        }
        Err(e) => e.into_response(),
    }
}

async fn online(state: &AppState, req: OnlineRequest) -> Result<(Vec<u8>, usize), ApiError> {
    if req.include_feature_view_version_metadata {
        return Err(ApiError::bad_request(
            "include_feature_view_version_metadata is not supported: feature views here are not versioned by @v suffixes",
        ));
    }
    let features = features(req.features, req.feature_service)?;
    let mut columns = req.entities;
    if let Some(ctx) = req.request_context {
        for (k, v) in ctx {
            if columns.contains_key(&k) {
                return Err(ApiError::bad_request(format!("\"{k}\" is in both entities and request_context")));
            }
            columns.insert(k, v);
        }
    }
    let types = state.key_types().await?;
    let batch = columns_to_batch(&columns, &types, "entities")?;
    let rows = batch.num_rows();
    state.metrics.entities(rows);
    let options = OnlineOptions::default().with_full_feature_names(req.full_feature_names);
    let response = state
        .store
        .get_online_features(&features, &batch, &options)
        .await
        .map_err(|e| state.store_error(StoreKind::Online, e))?;
    state.metrics.statuses(&response);
    let mut body = Vec::with_capacity(256 + response.values().num_columns() * rows * 48);
    response.write_feast_json(&mut body);
    Ok((body, rows))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PushRequest {
    #[serde(default)]
    pub(crate) push_source_name: Option<String>,
    #[serde(default)]
    pub(crate) feature_view: Option<String>,
    pub(crate) df: Map<String, Value>,
    #[serde(default)]
    pub(crate) to: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    allow_registry_cache: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    transform_on_write: Option<bool>,
}

async fn push(State(state): State<Arc<AppState>>, Body(req): Body<PushRequest>) -> Response {
    let to = req.to.as_deref().unwrap_or("online");
    let mode = match to {
        "online" => PushMode::Online,
        "offline" => PushMode::Offline,
        "online_and_offline" => PushMode::OnlineAndOffline,
        other => {
            return ApiError::bad_request(format!(
                "\"to\": \"{other}\" is not a push target; use online, offline or online_and_offline"
            ))
            .into_response();
        }
    };
    let views = match (req.push_source_name, req.feature_view) {
        (Some(_), Some(_)) => {
            return ApiError::bad_request("give push_source_name or feature_view, not both").into_response();
        }
        (None, None) => {
            return ApiError::bad_request(
                "name where the rows go: \"push_source_name\" (every view over that source) or \"feature_view\"",
            )
            .into_response();
        }
        (None, Some(v)) => vec![v],
        (Some(source), None) => match views_of_source(&state, &source, mode).await {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        },
    };
    write_rows(&state, views, &req.df, mode, to).await
}

/// The views a push to source `name` feeds (online ones unless offline only).
async fn views_of_source(state: &AppState, name: &str, mode: PushMode) -> Result<Vec<String>, ApiError> {
    let doc = state.store.document().await.map_err(|e| state.store_error(StoreKind::Registry, e))?;
    let project = doc.project(state.store.project());
    let registry = project.registry();
    if !registry.data_sources.contains_key(name) && !registry.stream_sources.contains_key(name) {
        let known: Vec<&str> =
            registry.data_sources.keys().chain(registry.stream_sources.keys()).map(String::as_str).collect();
        return Err(ApiError::not_found(format!(
            "push source \"{name}\" not found; the data sources are: {}",
            if known.is_empty() { "none (run feature-store apply)".to_owned() } else { known.join(", ") }
        )));
    }
    let readers: Vec<&feature_store_core::model::FeatureView> =
        registry.feature_views.values().map(|r| &r.spec).filter(|v| project.same_source(&v.source, name)).collect();
    let chosen: Vec<String> =
        readers.iter().filter(|v| mode == PushMode::Offline || v.online).map(|v| v.name.clone()).collect();
    if chosen.is_empty() {
        return Err(ApiError::not_found(format!(
            "no feature view {}reads source \"{name}\", so a push to it has nowhere to go",
            if mode == PushMode::Offline { "" } else { "served online " }
        )));
    }
    Ok(chosen)
}

async fn write_rows(
    state: &AppState,
    views: Vec<String>,
    df: &Map<String, Value>,
    mode: PushMode,
    to: &str,
) -> Response {
    let result = async {
        let types =
            state.store.push_column_types(&views[0]).await.map_err(|e| state.store_error(StoreKind::Registry, e))?;
        let batch = columns_to_batch(df, &types, "df")?;
        if batch.num_rows() == 0 {
            return Err(ApiError::bad_request("df holds no rows; nothing to push"));
        }
        let (mut written, mut skipped) = (0u64, 0u64);
        let store_kind = if mode == PushMode::Offline { StoreKind::Offline } else { StoreKind::Online };
        // The source's offline data is written once, with the first view; the
        // others only take the rows online.
        for (i, view) in views.iter().enumerate() {
            let m = if i == 0 { mode } else { PushMode::Online };
            if i > 0 && mode == PushMode::Offline {
                break;
            }
            let stats = state.store.push(view, &batch, m).await.map_err(|e| state.store_error(store_kind, e))?;
            written += stats.written;
            skipped += stats.skipped_older;
        }
        Ok(json!({
            "feature_views": views,
            "rows": batch.num_rows(),
            "to": to,
            "written": written,
            "skipped_older": skipped,
        }))
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteRequest {
    pub(crate) feature_view_name: String,
    pub(crate) df: Map<String, Value>,
    #[serde(default)]
    #[allow(dead_code)]
    allow_registry_cache: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    transform_on_write: Option<bool>,
}

async fn write_to_online_store(State(state): State<Arc<AppState>>, Body(req): Body<WriteRequest>) -> Response {
    write_rows(&state, vec![req.feature_view_name], &req.df, PushMode::Online, "online").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaterializeRequest {
    #[serde(default)]
    pub(crate) start_ts: Option<String>,
    #[serde(default)]
    pub(crate) end_ts: Option<String>,
    #[serde(default)]
    pub(crate) feature_views: Option<Vec<String>>,
    #[serde(default)]
    disable_event_timestamp: bool,
    #[serde(default)]
    #[allow(dead_code)]
    full_feature_names: bool,
    #[serde(default)]
    pub(crate) version: Option<String>,
}

async fn materialize(State(state): State<Arc<AppState>>, Body(req): Body<MaterializeRequest>) -> Response {
    let window = (|| {
        if req.disable_event_timestamp {
            return Err(ApiError::bad_request(
                "disable_event_timestamp is not supported: materialization windows are event-time windows",
            ));
        }
        if req.version.is_some() {
            return Err(ApiError::bad_request("version is not supported: feature views here are not versioned"));
        }
        let start = req.start_ts.as_deref().ok_or_else(|| ApiError::bad_request("start_ts is required"))?;
        let end = req.end_ts.as_deref().ok_or_else(|| ApiError::bad_request("end_ts is required"))?;
        Ok((request_time("start_ts", start)?, request_time("end_ts", end)?))
    })();
    let (start, end) = match window {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let options = materialize_options(req.feature_views);
    let store = Arc::clone(&state.store);
    // Spawned: a client that disconnects does not cut a run midway.
    let run = tokio::spawn(async move { store.materialize(start, end, &options).await });
    materialize_result(&state, run.await).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaterializeIncrementalRequest {
    pub(crate) end_ts: String,
    #[serde(default)]
    pub(crate) feature_views: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    full_feature_names: bool,
    #[serde(default)]
    pub(crate) version: Option<String>,
}

async fn materialize_incremental(
    State(state): State<Arc<AppState>>,
    Body(req): Body<MaterializeIncrementalRequest>,
) -> Response {
    if req.version.is_some() {
        return ApiError::bad_request("version is not supported: feature views here are not versioned").into_response();
    }
    let end = match request_time("end_ts", &req.end_ts) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let options = materialize_options(req.feature_views);
    let store = Arc::clone(&state.store);
    let run = tokio::spawn(async move { store.materialize_incremental(end, &options).await });
    materialize_result(&state, run.await).await
}

fn materialize_options(views: Option<Vec<String>>) -> MaterializeOptions {
    let options = MaterializeOptions::default();
    match views {
        Some(v) => options.with_views(v),
        None => options,
    }
}

async fn materialize_result(
    state: &AppState,
    joined: Result<feature_store_core::Result<feature_store_core::MaterializeReport>, tokio::task::JoinError>,
) -> Response {
    let report = match joined {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return state.store_error(StoreKind::Online, e).into_response(),
        Err(e) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("materialization stopped: {e}"),
            )
            .into_response();
        }
    };
    let failed: Vec<String> = report.failed_views().iter().map(|v| v.view.clone()).collect();
    let mut body = serde_json::to_value(&report).unwrap_or(Value::Null);
    if failed.is_empty() {
        return Json(body).into_response();
    }
    if let Value::Object(m) = &mut body {
        m.insert(
            "error".into(),
            Value::String(format!(
                "materialization failed for feature view{} {}; nothing was written for {}, and the watermark did not move",
                if failed.len() == 1 { "" } else { "s" },
                failed.join(", "),
                if failed.len() == 1 { "it" } else { "them" }
            )),
        );
    }
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let h = state.store.registry().health();
    let stale = h.last_error.is_some();
    let secs = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| chrono::DateTime::from_timestamp(d.as_secs() as i64, d.subsec_nanos()))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    Json(json!({
        "status": if stale { "degraded" } else { "ok" },
        "project": state.store.project(),
        "registry": {
            "version": h.version,
            "read_at": secs(h.fetched_at),
            "last_error": h.last_error,
            "failed_at": secs(h.failed_at),
        },
    }))
    .into_response()
}

/// Ready when the online store answers a one-key read within the request timeout.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let store = match state.store.online_store() {
        Ok(s) => Arc::clone(s),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let probe = [ViewRead::new("__readiness_probe__", Arc::from(Vec::<String>::new()), vec!["probe".to_owned()])];
    let project = state.store.project().to_owned();
    match tokio::time::timeout(state.timeout, store.read(&project, &probe)).await {
        Ok(Ok(_)) => Json(json!({ "status": "ready", "online_store": store.describe() })).into_response(),
        Ok(Err(e)) => state.store_error(StoreKind::Online, e).into_response(),
        Err(_) => ApiError::unavailable(format!(
            "{} did not answer within the request timeout of {:?}",
            store.describe(),
            state.timeout
        ))
        .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let h = state.store.registry().health();
    let text = state.metrics.render(h.version, h.last_error.is_some());
    let mut r = text.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

/// The body limit axum's extractors enforce.
pub(crate) fn body_limit(state: &AppState) -> usize {
    state.max_body_bytes
}

/// [`body_limit`] as a request extension, so that a refusal can say it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

/// `16 MiB`, `512 KiB`, `100 bytes`.
fn size_text(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use arrow_schema::DataType;

    use super::{OnlineRequest, PushRequest};
    use crate::json::columns_to_batch;

    /// Valid bodies, mutated: the request parsing and the JSON-to-Arrow
    /// conversion return a value or an error, never panic, and stay fast.
    /// Seeded and repeatable; `FS_FUZZ_ITERATIONS` runs more.
    #[test]
    fn mutated_request_bodies_never_panic() {
        let seeds: [&[u8]; 4] = [
            br#"{"features": ["v:a", "v:b"], "entities": {"driver_id": [1001, 1002], "amount": [1.5, null]}, "full_feature_names": true}"#,
            br#"{"feature_service": "s", "entities": {"k": ["a", "b"], "t": ["2024-01-01T00:00:00Z", 1700000000]}}"#,
            br#"{"push_source_name": "src", "df": {"driver_id": [1], "event_timestamp": ["2024-01-01 00:00:00"], "l": [[1, 2, null]]}, "to": "online"}"#,
            br#"{"feature_view": "v", "df": {"x": [true, false], "f": ["NaN", "Infinity", -1e308]}}"#,
        ];
        let tokens: [&[u8]; 16] = [
            b"[",
            b"]",
            b"{",
            b"}",
            b",",
            b":",
            b"\"",
            b"null",
            b"1e309",
            b"-0",
            b"9223372036854775808",
            b"\\u0000",
            b"\xff",
            b"[[[[[[[[",
            b"\"NaN\"",
            b"2024-13-40T25:61:61Z",
        ];
        let mut types = HashMap::new();
        types.insert("driver_id".to_owned(), DataType::Int64);
        types.insert("event_timestamp".to_owned(), feature_store_core::timestamp_type());
        types.insert("amount".to_owned(), DataType::Float64);
        types.insert(
            "l".to_owned(),
            DataType::List(std::sync::Arc::new(arrow_schema::Field::new("item", DataType::Int64, true))),
        );
        let iterations: usize =
            std::env::var("FS_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let started = Instant::now();
        let mut parsed = 0;
        for i in 0..iterations {
            let mut body = seeds[i % seeds.len()].to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (body.len() + 1);
                match next() % 3 {
                    0 => body.insert(at, next() as u8),
                    1 if at < body.len() => {
                        body.remove(at);
                    }
                    _ => {
                        let t = tokens[(next() as usize) % tokens.len()];
                        body.splice(at..at, t.iter().copied());
                    }
                }
            }
            let one = Instant::now();
            if let Ok(r) = serde_json::from_slice::<OnlineRequest>(&body) {
                parsed += 1;
                let _ = columns_to_batch(&r.entities, &types, "entities");
            }
            if let Ok(r) = serde_json::from_slice::<PushRequest>(&body) {
                parsed += 1;
                let _ = columns_to_batch(&r.df, &types, "df");
            }
            assert!(one.elapsed() < Duration::from_secs(1), "slow input: {}", String::from_utf8_lossy(&body));
        }
        eprintln!("{iterations} mutated bodies ({parsed} parsed) in {:?}", started.elapsed());
        assert!(parsed > iterations / 20, "the mutations should keep some bodies valid ({parsed})");
    }
}
