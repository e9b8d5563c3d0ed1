//! The feature server end to end: every HTTP endpoint and error code on
//! SQLite and on a real Redis, gRPC beside HTTP, auth, TLS, overload and
//! timeouts (a paused Redis makes requests slow), graceful shutdown with
//! requests in flight, and registry reload.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use feature_store::registry::ApplyMode;
use feature_store::{FeatureStore, Features, MaterializeOptions, OnlineOptions};
use feature_store_server::proto::serving::get_online_features_request::Kind;
use feature_store_server::proto::serving::serving_service_client::ServingServiceClient;
use feature_store_server::proto::serving::{FeatureList, GetFeastServingInfoRequest, GetOnlineFeaturesRequest};
use feature_store_server::proto::types::{RepeatedValue, Value, value::Val};
use feature_store_server::{Server, ServerConfig, ServerConfigBuilder};
use feature_store_tests::redis::RedisServer;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;

use crate::write_repo;

const DEFS: &str = r#"
entities:
  - name: driver
    join_keys: [driver_id]
sources:
  - name: drivers
    path: data/drivers.parquet
    timestamp_field: event_timestamp
    created_timestamp_field: created
feature_views:
  - name: driver_stats
    entities: [driver]
    source: drivers
    schema:
      - {name: conv_rate, dtype: float32}
      - {name: trips, dtype: int64}
      - {name: city, dtype: string}
request_sources:
  - name: order
    schema:
      - {name: amount, dtype: float64}
on_demand_feature_views:
  - name: order_features
    sources: [driver_stats, order]
    features:
      - {name: amount_x_conv, dtype: float64, expression: "amount * conv_rate"}
feature_services:
  - name: activity
    features: [driver_stats:conv_rate, driver_stats:trips]
"#;

/// A running server over a repo of [`DEFS`], applied and materialized.
struct Running {
    dir: tempfile::TempDir,
    store: Arc<FeatureStore>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(online: &str, config: ServerConfigBuilder) -> Self {
        Self::start_with(online, "registry: data/registry.json\n", config).await
    }

    async fn start_with(online: &str, registry: &str, config: ServerConfigBuilder) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_repo(dir.path(), &[("features.yaml", DEFS)]);
        std::fs::write(dir.path().join("feature_store.yaml"), format!("project: demo\n{registry}{online}")).unwrap();
        let store = feature_store::open(dir.path()).unwrap();
        store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
        let (start, end) = (Utc.timestamp_opt(0, 0).unwrap(), Utc.timestamp_opt(1_800_000_000, 0).unwrap());
        store.materialize(start, end, &MaterializeOptions::default()).await.unwrap();
        let store = Arc::new(store);
        let server = Server::bind(Arc::clone(&store), config.port(0).build().unwrap()).await.unwrap();
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self { dir, store, addr, stop: Some(tx), task }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http1(self.addr, method, path, body, &[]).await
    }

    async fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        let (status, text) = self.call("POST", path, Some(&body.to_string())).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {text}")))
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("the server stops").unwrap();
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn http1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(TokioIo::new(stream), addr, method, path, body, headers).await
}

async fn exchange<I>(
    io: I,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", addr.to_string());
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or("").to_owned()))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn online_request(features: &[&str], ids: Json) -> Json {
    json!({ "features": features, "entities": { "driver_id": ids } })
}

/// Every endpoint and error code, on one online store.
async fn endpoints_on(online: &str) {
    let s = Running::start(online, ServerConfig::builder().max_body("4KiB")).await;
    // Values exactly as the library renders them.
    let (status, body) = s
        .post(
            "/get-online-features",
            &online_request(&["driver_stats:conv_rate", "driver_stats:city"], json!([1, 2, 99])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids = arrow_array::Int64Array::from(vec![1, 2, 99]);
    let rows =
        arrow_array::RecordBatch::try_from_iter([("driver_id", Arc::new(ids) as arrow_array::ArrayRef)]).unwrap();
    let expected = s
        .store
        .get_online_features(
            &Features::refs(["driver_stats:conv_rate", "driver_stats:city"]),
            &rows,
            &OnlineOptions::default(),
        )
        .await
        .unwrap()
        .to_feast_json();
    assert_eq!(body, expected);
    assert_eq!(body["results"][1]["statuses"], json!(["PRESENT", "PRESENT", "NOT_FOUND"]));
    assert_eq!(body["results"][1]["values"], json!([0.5, 0.25, null]));
    // A feature service, full feature names.
    let (status, body) = s
        .post(
            "/get-online-features",
            &json!({"feature_service": "activity", "entities": {"driver_id": [2]}, "full_feature_names": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "driver_stats__conv_rate", "driver_stats__trips"])
    );
    assert_eq!(body["results"][2]["values"], json!([20]));
    // On-demand features with request data beside the keys, as Feast sends it.
    let (status, body) = s
        .post(
            "/get-online-features",
            &json!({"features": ["order_features:amount_x_conv"], "entities": {"driver_id": [1], "amount": [10.0]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["values"], json!([5.0]));

    // Bad input: 400 naming the problem; unknown views and services 404.
    let cases: [(Json, u16, &str); 9] = [
        (online_request(&["driver_stats:nope"], json!([1])), 400, "driver_stats:nope"),
        (online_request(&["no_view:x"], json!([1])), 404, "no_view"),
        (json!({"feature_service": "nope", "entities": {"driver_id": [1]}}), 404, "nope"),
        (online_request(&["driver_stats:trips"], json!(["one"])), 400, "entities.driver_id[0] is a string"),
        (json!({"features": ["order_features:amount_x_conv"], "entities": {"driver_id": [1]}}), 400, "amount"),
        (
            json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1]}, "extra": 1}),
            400,
            "unknown field `extra`",
        ),
        (json!({"entities": {"driver_id": [1]}}), 400, "no features asked for"),
        (online_request(&["driver_stats:trips"], json!(1)), 400, "not a list"),
        (
            json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1], "other": [1, 2]}}),
            400,
            "has 1 values but",
        ),
    ];
    for (req, want, names) in cases {
        let (status, body) = s.post("/get-online-features", &req).await;
        assert_eq!(status, want, "{req} -> {body}");
        let msg = body["error"].as_str().unwrap_or_else(|| panic!("no error field: {body}"));
        assert!(msg.contains(names), "{req}: {msg}");
    }
    let (status, text) = s.call("POST", "/get-online-features", Some("{\"features\": [")).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("malformed JSON body at features: EOF"), "{text}");
    let big = format!(
        "{{\"features\": [\"driver_stats:trips\"], \"entities\": {{\"driver_id\": [{}]}}}}",
        vec!["1"; 4000].join(",")
    );
    let (status, text) = s.call("POST", "/get-online-features", Some(&big)).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("\"error\"") && text.contains("max_body (4 KiB)"), "{text}");
    let (status, text) = s.call("GET", "/no-such-endpoint", None).await;
    assert_eq!(status, 404, "{text}");
    let (status, text) = s.call("GET", "/push", None).await;
    assert_eq!(status, 405, "{text}");

    // Push by source and by view, write-to-online-store: never regress a newer value.
    let t = "2030-01-01T00:00:00Z";
    let df = json!({"driver_id": [1], "event_timestamp": [t], "created": [t], "conv_rate": [0.75], "trips": [7], "city": ["z"]});
    let (status, body) = s.post("/push", &json!({"push_source_name": "drivers", "df": df, "to": "online"})).await;
    assert_eq!((status, &body["written"]), (200, &json!(1)), "{body}");
    let old = json!({"driver_id": [1], "event_timestamp": ["2020-01-01 00:00:00"], "created": [null], "conv_rate": [0.1], "trips": [1], "city": ["old"]});
    let (status, body) =
        s.post("/write-to-online-store", &json!({"feature_view_name": "driver_stats", "df": old})).await;
    assert_eq!((status, &body["skipped_older"]), (200, &json!(1)), "{body}");
    let (_, body) = s.post("/get-online-features", &online_request(&["driver_stats:conv_rate"], json!([1]))).await;
    assert_eq!(body["results"][1]["values"], json!([0.75]));
    for (req, want, names) in [
        (json!({"push_source_name": "nope", "df": {"driver_id": [1]}}), 404, "nope"),
        (json!({"feature_view": "driver_stats", "df": {"driver_id": [1]}, "to": "sideways"}), 400, "sideways"),
        (json!({"feature_view": "driver_stats", "df": {"driver_id": [1]}}), 400, "event_timestamp"),
        (
            json!({"feature_view": "driver_stats", "df": {"driver_id": [1], "event_timestamp": ["soon"]}}),
            400,
            "not a timestamp",
        ),
    ] {
        let (status, body) = s.post("/push", &req).await;
        assert_eq!(status, want, "{req} -> {body}");
        assert!(body["error"].as_str().unwrap().contains(names), "{body}");
    }

    // Materialization, both forms.
    let (status, body) = s
        .post("/materialize", &json!({"start_ts": "2023-01-01T00:00:00Z", "end_ts": "2024-01-01T00:00:00", "feature_views": ["driver_stats"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["views"][0]["rows_read"], json!(2));
    let (status, body) = s.post("/materialize-incremental", &json!({"end_ts": "2024-06-01T00:00:00Z"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.post("/materialize", &json!({"start_ts": "x", "end_ts": "2024-01-01"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = s
        .post("/materialize", &json!({"start_ts": "2023-01-01", "end_ts": "2024-01-01", "feature_views": ["nope"]}))
        .await;
    assert_eq!(status, 404, "{body}");

    // Health, readiness, metrics.
    let (status, text) = s.call("GET", "/health", None).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"status\":\"ok\""), "{text}");
    let (status, text) = s.call("GET", "/ready", None).await;
    assert_eq!(status, 200, "{text}");
    let (_, text) = s.call("GET", "/metrics", None).await;
    for line in [
        "feature_server_requests_total{endpoint=\"/get-online-features\",code=\"200\"} 4",
        "feature_server_requests_total{endpoint=\"/get-online-features\",code=\"413\"} 1",
        "feature_server_feature_statuses_total{feature_view=\"driver_stats\",status=\"NOT_FOUND\"} 2",
        "feature_server_feature_statuses_total{feature_view=\"order_features\",status=\"PRESENT\"} 1",
        "feature_server_request_duration_seconds_count{endpoint=\"/push\"}",
        "feature_server_registry_version",
    ] {
        assert!(text.contains(line), "metrics lack {line}:\n{text}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_error_on_sqlite() {
    endpoints_on("online_store: {type: sqlite, path: data/online.db}\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_error_on_redis_and_503_while_it_is_down() {
    let mut redis = RedisServer::start();
    let online = format!("online_store: {{type: redis, connection_string: \"{}\"}}\n", redis.url());
    endpoints_on(&online).await;

    let s = Running::start(&online, ServerConfig::builder()).await;
    redis.stop();
    let started = Instant::now();
    let (status, body) = s.post("/get-online-features", &online_request(&["driver_stats:trips"], json!([1]))).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unavailable"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(15), "answered after {:?}", started.elapsed());
    let (status, _) = s.call("GET", "/ready", None).await;
    assert_eq!(status, 503);
    let (_, text) = s.call("GET", "/metrics", None).await;
    assert!(!text.contains("feature_server_store_errors_total{store=\"online\"} 0"), "{text}");
    redis.restart();
    let mut status = 0;
    for _ in 0..50 {
        status = s.post("/get-online-features", &online_request(&["driver_stats:trips"], json!([1]))).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "serving resumes once Redis is back");
    s.stop().await;
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

fn int64s(v: &[i64]) -> RepeatedValue {
    RepeatedValue { val: v.iter().map(|x| Value { val: Some(Val::Int64Val(*x)) }).collect() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_serves_what_http_serves() {
    let s = Running::start("online_store: {type: sqlite, path: data/online.db}\n", ServerConfig::builder()).await;
    let mut client = ServingServiceClient::new(channel(s.addr).await);
    let info = client.get_feast_serving_info(GetFeastServingInfoRequest {}).await.unwrap().into_inner();
    assert!(!info.version.is_empty());
    let request = |features: Vec<&str>, ids: &[i64]| GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList { val: features.into_iter().map(str::to_owned).collect() })),
        entities: [("driver_id".to_owned(), int64s(ids))].into(),
        ..Default::default()
    };
    let r = client
        .get_online_features(request(
            vec!["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:city"],
            &[1, 99],
        ))
        .await
        .unwrap()
        .into_inner();
    let names = r.metadata.unwrap().feature_names.unwrap().val;
    assert_eq!(names, ["driver_id", "conv_rate", "trips", "city"]);
    assert_eq!(r.results[0].values[0].val, Some(Val::Int64Val(1)));
    assert_eq!(r.results[1].values[0].val, Some(Val::FloatVal(0.5)));
    assert_eq!(r.results[2].values[0].val, Some(Val::Int64Val(10)));
    assert_eq!(r.results[3].values[0].val, Some(Val::StringVal("a".into())));
    assert_eq!(r.results[3].values[1].val, None);
    assert_eq!(r.results[1].statuses, [1, 3], "PRESENT, NOT_FOUND");
    assert_eq!(r.results[1].event_timestamps[0].seconds, 1_700_000_000);
    // Request data through request_context.
    let mut odfv = request(vec!["order_features:amount_x_conv"], &[2]);
    odfv.request_context.insert("amount".into(), RepeatedValue { val: vec![Value { val: Some(Val::DoubleVal(4.0)) }] });
    let r = client.get_online_features(odfv).await.unwrap().into_inner();
    assert_eq!(r.results[1].values[0].val, Some(Val::DoubleVal(1.0)));
    // Errors carry the codes matching the HTTP statuses.
    let e = client.get_online_features(request(vec!["driver_stats:nope"], &[1])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("driver_stats:nope"), "{e}");
    let e = client.get_online_features(request(vec!["no_view:x"], &[1])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let mut mixed = request(vec!["driver_stats:trips"], &[1]);
    mixed.entities.get_mut("driver_id").unwrap().val.push(Value { val: Some(Val::StringVal("2".into())) });
    let e = client.get_online_features(mixed).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("entities.driver_id[1] is string_val"), "{e}");
    // The standard health service answers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(s.addr).await);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest { service: "feast.serving.ServingService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_endpoint_but_health() {
    let key = "s3cr3t-key-for-tests";
    let s =
        Running::start("online_store: {type: sqlite, path: data/online.db}\n", ServerConfig::builder().api_key(key))
            .await;
    let body = online_request(&["driver_stats:trips"], json!([1])).to_string();
    let call = |headers: Vec<(&'static str, String)>| {
        let body = body.clone();
        let addr = s.addr;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http1(addr, "POST", "/get-online-features", Some(&body), &h).await
        }
    };
    let (status, text) = call(vec![]).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("Authorization: Bearer"), "{text}");
    let (status, text) = call(vec![("authorization", "Bearer wrong".into())]).await;
    assert_eq!(status, 403, "{text}");
    assert!(!text.contains("wrong") && !text.contains(key), "keys never echoed: {text}");
    assert_eq!(call(vec![("authorization", format!("Bearer {key}"))]).await.0, 200);
    assert_eq!(call(vec![("x-api-key", key.to_owned())]).await.0, 200);
    assert_eq!(s.call("GET", "/health", None).await.0, 200, "probes need no key");
    assert_eq!(s.call("GET", "/metrics", None).await.0, 401);
    let (_, text) = http1(s.addr, "GET", "/metrics", None, &[("x-api-key", key)]).await;
    assert!(!text.contains(key));
    // gRPC: the same keys, as metadata.
    let mut client = ServingServiceClient::new(channel(s.addr).await);
    let e = client.get_feast_serving_info(GetFeastServingInfoRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let mut req = tonic::Request::new(GetFeastServingInfoRequest {});
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    client.get_feast_serving_info(req).await.unwrap();
    s.stop().await;

    // Reachable from other machines without keys: refused unless allowed.
    let e = ServerConfig::builder().host("0.0.0.0").build().unwrap_err().to_string();
    assert!(e.contains("without API keys"), "{e}");
    ServerConfig::builder().host("0.0.0.0").allow_unauthenticated(true).build().unwrap();
    let e = ServerConfig::builder().api_key("  ").build().unwrap_err().to_string();
    assert!(e.contains("auth.api_keys[0]"), "{e}");
    assert!(!format!("{:?}", ServerConfig::builder().api_key(key).build().unwrap()).contains(key));
}

/// A paused Redis holds requests in flight: overload, timeout and shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_timeout_and_graceful_shutdown_with_requests_in_flight() {
    let redis = RedisServer::start();
    let online = format!("online_store: {{type: redis, connection_string: \"{}\"}}\n", redis.url());
    let body = online_request(&["driver_stats:trips"], json!([1])).to_string();

    // One request at a time: the second is refused at once with 503.
    let s = Running::start(&online, ServerConfig::builder().max_concurrency(1)).await;
    redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]).unwrap();
    let first = tokio::spawn({
        let (addr, body) = (s.addr, body.clone());
        async move { http1(addr, "POST", "/get-online-features", Some(&body), &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, text) = s.call("POST", "/get-online-features", Some(&body)).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("max_concurrency"), "{text}");
    assert!(started.elapsed() < Duration::from_millis(500), "refused without waiting");
    assert_eq!(first.await.unwrap().0, 200, "the request in flight completes");
    s.stop().await;

    // A request slower than request_timeout: 503 naming the timeout.
    let s = Running::start(&online, ServerConfig::builder().request_timeout("300ms")).await;
    redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]).unwrap();
    let (status, text) = s.call("POST", "/get-online-features", Some(&body)).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    s.stop().await;

    // Shutdown while eight requests wait on the paused store: all complete.
    let s = Running::start(&online, ServerConfig::builder()).await;
    redis.command(&["CLIENT", "PAUSE", "1000", "ALL"]).unwrap();
    let inflight: Vec<_> = (0..8)
        .map(|_| {
            let (addr, body) = (s.addr, body.clone());
            tokio::spawn(async move { http1(addr, "POST", "/get-online-features", Some(&body), &[]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = s.addr;
    s.stop().await;
    for r in inflight {
        let (status, text) = r.await.unwrap();
        assert_eq!(status, 200, "an in-flight request was cut: {text}");
        assert!(text.contains("\"results\""), "{text}");
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_grpc_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    feature_store_tests::make_certificates(certs.path());
    let config = ServerConfig::builder().tls(certs.path().join("server.crt"), certs.path().join("server.key"));
    let s = Running::start("online_store: {type: sqlite, path: data/online.db}\n", config).await;
    let connector = tls_connector(&certs.path().join("ca.crt"));
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    let body = online_request(&["driver_stats:trips"], json!([1])).to_string();
    let (status, text) = exchange(TokioIo::new(tls), s.addr, "POST", "/get-online-features", Some(&body), &[]).await;
    assert_eq!(status, 200, "{text}");
    // h2 over the same TLS port (what gRPC clients speak).
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("https://localhost:{}/get-online-features", s.addr.port()))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    // Plain HTTP to the TLS port gets no answer.
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(hyper::Request::get("/health").body(Full::new(Bytes::new())).unwrap()).await
    })
    .await;
    assert!(!matches!(plain, Ok(Ok(ref r)) if r.status() == 200), "plain HTTP must not be served on the TLS port");
    // A certificate without its key is refused when the server starts.
    let e = Server::bind(
        Arc::clone(&s.store),
        ServerConfig::builder()
            .port(0)
            .tls(certs.path().join("server.crt"), certs.path().join("ca.crt"))
            .build()
            .unwrap(),
    )
    .await
    .err()
    .expect("a wrong key is refused")
    .to_string();
    assert!(e.contains("ca.crt"), "{e}");
    s.stop().await;
}

fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An `apply` is served without a restart; a broken registry keeps the last good version, reported by /health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_changes_are_picked_up_and_a_broken_registry_keeps_the_last_good_one() {
    let s = Running::start_with(
        "online_store: {type: sqlite, path: data/online.db}\n",
        "registry: {path: data/registry.json, cache_ttl: 300ms}\n",
        ServerConfig::builder(),
    )
    .await;
    let body = json!({"feature_service": "more", "entities": {"driver_id": [1]}});
    let (status, _) = s.post("/get-online-features", &body).await;
    assert_eq!(status, 404, "no such service yet");
    // Another process applies a new service.
    let more = format!("{DEFS}  - name: more\n    features: [driver_stats:city]\n");
    std::fs::write(s.dir.path().join("features.yaml"), more).unwrap();
    let other = feature_store::open(s.dir.path()).unwrap();
    other.apply(&other.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = s.post("/get-online-features", &body).await.0;
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200, "the new registry version is served without a restart");
    // A corrupt registry: serving goes on with the last good version.
    std::fs::write(s.dir.path().join("data/registry.json"), "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (status, health) = s.call("GET", "/health", None).await;
    assert_eq!(status, 200);
    assert!(health.contains("\"status\":\"degraded\"") && health.contains("registry.json"), "{health}");
    assert_eq!(s.post("/get-online-features", &body).await.0, 200);
    let (_, text) = s.call("GET", "/metrics", None).await;
    assert!(text.contains("feature_server_registry_stale 1"), "{text}");
    s.stop().await;
}

/// The `feature_server:` section of feature_store.yaml configures the server; unknown keys are named.
#[test]
fn the_feature_server_section_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let write = |section: &str| {
        std::fs::write(
            dir.path().join("feature_store.yaml"),
            format!("project: demo\nregistry: data/registry.json\n{section}"),
        )
        .unwrap();
        feature_store::RepoConfig::load(dir.path()).unwrap()
    };
    let c = write(
        "feature_server:\n  type: local\n  port: 7001\n  max_body: 1MiB\n  request_timeout: 2s\n  auth: {api_keys: [abc]}\n",
    );
    let config = ServerConfig::from_repo(&c).unwrap().build().unwrap();
    assert_eq!(config.addr.port(), 7001);
    assert_eq!(config.max_body_bytes, 1 << 20);
    assert_eq!(config.request_timeout, Duration::from_secs(2));
    assert!(config.auth_enabled());
    let c = write("feature_server:\n  prot: 7001\n");
    let e = ServerConfig::from_repo(&c).unwrap_err().to_string();
    assert!(e.contains("prot") && e.contains("port"), "{e}");
    let c = write("feature_server:\n  request_timeout: soon\n");
    let e = ServerConfig::from_repo(&c).unwrap().build().unwrap_err().to_string();
    assert!(e.contains("request_timeout"), "{e}");
}

/// Feast 0.67's own server answered `tests/golden/requests.json` over
/// `tests/golden/driver_stats.parquet` (recorded by
/// `tests/golden/feast_server.py`); this server must answer the same, field
/// by field. Known, documented differences: a stored null is `NULL_VALUE`
/// here (Feast says `PRESENT` beside the null), float32 values are written
/// in their shortest decimal form (Feast widens them to float64 digits; both
/// parse to the same float32), columns follow the request's order (Feast
/// reorders them; clients read them by `feature_names`), and an unknown
/// feature is a 400 here (a 500 in Feast).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_feasts_own_server_field_by_field() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let requests: Json = serde_json::from_str(&std::fs::read_to_string(golden.join("requests.json")).unwrap()).unwrap();
    let answers: Json =
        serde_json::from_str(&std::fs::read_to_string(golden.join("feast_server_responses.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::copy(golden.join("driver_stats.parquet"), dir.path().join("data/driver_stats.parquet")).unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: golden\nregistry: data/registry.json\nonline_store: {type: sqlite, path: data/online.db}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("features.yaml"),
        r#"
entities:
  - {name: driver, join_keys: [{name: driver_id, dtype: int64}]}
sources:
  - {name: driver_stats_source, path: data/driver_stats.parquet, timestamp_field: event_timestamp, created_timestamp_field: created}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: driver_stats_source
    schema:
      - {name: conv_rate, dtype: float32}
      - {name: acc_rate, dtype: float64}
      - {name: avg_daily_trips, dtype: int64}
      - {name: name, dtype: string}
feature_services:
  - {name: driver_activity, features: ["driver_stats:conv_rate", "driver_stats:avg_daily_trips"]}
"#,
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let (start, end) =
        (Utc.with_ymd_and_hms(2023, 12, 31, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap());
    store.materialize(start, end, &MaterializeOptions::default()).await.unwrap();
    let server = Server::bind(Arc::new(store), ServerConfig::builder().port(0).build().unwrap()).await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    for (request, feast) in requests.as_array().unwrap().iter().zip(answers.as_array().unwrap()) {
        let name = request["name"].as_str().unwrap();
        assert_eq!(feast["name"], request["name"], "answers recorded in request order");
        let (status, text) =
            http1(addr, "POST", request["path"].as_str().unwrap(), Some(&request["body"].to_string()), &[]).await;
        let ours: Json = serde_json::from_str(&text).unwrap();
        let feast_status = feast["status"].as_u64().unwrap();
        if feast_status != 200 {
            assert!((400..500).contains(&status), "{name}: Feast {feast_status}, here {status}: {text}");
            assert!(ours["error"].is_string(), "{name}: {text}");
            continue;
        }
        assert_eq!(status, 200, "{name}: {text}");
        let columns = |body: &Json| -> std::collections::BTreeMap<String, Json> {
            let names = body["metadata"]["feature_names"].as_array().unwrap();
            names
                .iter()
                .zip(body["results"].as_array().unwrap())
                .map(|(n, r)| (n.as_str().unwrap().to_owned(), r.clone()))
                .collect()
        };
        let (mine, theirs) = (columns(&ours), columns(&feast["body"]));
        assert_eq!(mine.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>(), "{name}: feature names");
        assert_eq!(
            ours["metadata"]["feature_names"][0], feast["body"]["metadata"]["feature_names"][0],
            "{name}: keys first"
        );
        for (column, t) in &theirs {
            let m = &mine[column];
            assert_eq!(m["event_timestamps"], t["event_timestamps"], "{name}/{column}: event times");
            let (mv, tv) = (m["values"].as_array().unwrap(), t["values"].as_array().unwrap());
            let (ms, ts) = (m["statuses"].as_array().unwrap(), t["statuses"].as_array().unwrap());
            assert_eq!(mv.len(), tv.len(), "{name}/{column}");
            for i in 0..tv.len() {
                match (&mv[i], &tv[i]) {
                    (Json::Number(a), Json::Number(b)) if a.is_f64() || b.is_f64() => {
                        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                        assert!(a == b || (a as f32) == (b as f32), "{name}/{column}[{i}]: {a} vs Feast {b}");
                    }
                    (a, b) => assert_eq!(a, b, "{name}/{column}[{i}]"),
                }
                let feast_status =
                    if tv[i].is_null() && ts[i] == "PRESENT" { json!("NULL_VALUE") } else { ts[i].clone() };
                assert_eq!(ms[i], feast_status, "{name}/{column}[{i}]: status");
            }
        }
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
