//! Faults injected between the store and real servers by a TCP proxy
//! (`tests/src/proxy.rs`): a slow or hung Redis, Redis connections cut in the
//! middle of a materialization, and an S3 server answering 503 or hanging.
//! Each is a clear error within the configured timeout, and the store
//! converges once the fault is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema};
use chrono::{TimeZone, Utc};
use feature_store::online::FeatureStatus;
use feature_store::registry::ApplyMode;
use feature_store::{Definitions, Error, FeatureStore, Features, MaterializeOptions, OnlineOptions, RepoConfig};
use feature_store_tests::moto::MotoServer;
use feature_store_tests::proxy::{Fault, FaultProxy};
use feature_store_tests::redis::RedisServer;
use feature_store_tests::write_parquet;

use crate::ts_type;

const DEFS: &str = r#"
entities:
  - {name: user, join_keys: [{name: user_id, dtype: int64}]}
sources:
  - {name: events, path: data/events.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: stats
    entities: [user]
    source: events
    schema: [{name: score, dtype: int64}]
"#;

const T: i64 = 1_700_000_000_000_000;

/// `users` entities, one row each, score = 3 × id.
async fn redis_repo(users: i64, redis_options: &str) -> (tempfile::TempDir, FeatureStore) {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<i64> = (0..users).collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type(), false),
            Field::new("score", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            Arc::new(TimestampMicrosecondArray::from(vec![T; ids.len()]).with_timezone("UTC")),
            Arc::new(Int64Array::from(ids.iter().map(|i| i * 3).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    write_parquet(&dir.path().join("data/events.parquet"), &batch);
    std::fs::write(dir.path().join("features.yaml"), DEFS).unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        format!("project: faults\nregistry: data/registry.json\nonline_store: {{type: redis, {redis_options}}}\n"),
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    (dir, store)
}

fn window() -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    (Utc.timestamp_opt(0, 0).unwrap(), Utc.timestamp_opt(1_800_000_000, 0).unwrap())
}

async fn read(store: &FeatureStore, ids: Vec<i64>) -> feature_store::Result<feature_store::online::OnlineResponse> {
    let rows = RecordBatch::try_from_iter([("user_id", Arc::new(Int64Array::from(ids)) as ArrayRef)]).unwrap();
    store.get_online_features(&Features::refs(["stats:score"]), &rows, &OnlineOptions::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_hung_redis_is_an_error_within_the_timeout_and_reads_recover() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port());
    let url = format!("redis://127.0.0.1:{}", proxy.port());
    let (_dir, store) = redis_repo(10, &format!("connection_string: \"{url}\", timeout: 500ms, retries: 1")).await;
    let (start, end) = window();
    store.materialize(start, end, &MaterializeOptions::default()).await.unwrap();
    assert_eq!(read(&store, vec![4]).await.unwrap().value(0, "score").unwrap().as_i64(), Some(12));

    // Slower than usual but within the timeout: served.
    proxy.set(Fault::Delay(Duration::from_millis(100)));
    assert_eq!(read(&store, vec![5]).await.unwrap().value(0, "score").unwrap().as_i64(), Some(15));

    // Hung: an error naming the store, within the timeout and its retry.
    proxy.set(Fault::Hold);
    for _ in 0..2 {
        let began = Instant::now();
        let err = read(&store, vec![5]).await.unwrap_err();
        let took = began.elapsed();
        assert!(took < Duration::from_secs(4), "a read from a hung Redis took {took:?} (timeout 500ms, 1 retry)");
        assert!(matches!(err, Error::StoreUnavailable { .. } | Error::Backend { .. }), "{err:?}");
        assert!(err.to_string().contains(&url), "{err}");
    }

    // The fault goes away (and the stale connections with it): reads recover.
    proxy.set(Fault::Pass);
    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match read(&store, vec![6]).await {
            Ok(r) => {
                assert_eq!(r.value(0, "score").unwrap().as_i64(), Some(18));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no recovery: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_materialization_then_a_rerun_converges() {
    let users = 40_000;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port());
    let url = format!("redis://127.0.0.1:{}", proxy.port());
    let (_dir, store) = redis_repo(users, &format!("connection_string: \"{url}\", timeout: 1s, retries: 0")).await;
    let store = Arc::new(store);
    let (start, end) = window();
    // Slow enough that the cut lands while writes are in flight.
    proxy.set(Fault::Delay(Duration::from_millis(5)));
    let run = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.materialize(start, end, &MaterializeOptions::default().with_batching(500, 2)).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.set(Fault::Hold);
    proxy.cut();
    let outcome = run.await.unwrap();
    let failed = match &outcome {
        Err(e) => {
            assert!(e.to_string().contains(&url), "the error names the store: {e}");
            true
        }
        Ok(report) => !report.failed_views().is_empty(),
    };
    assert!(failed, "a materialization whose connections were cut must not report success: {outcome:?}");
    let doc = store.document().await.unwrap();
    let watermark = doc.project("faults").registry().view_state.get("stats").and_then(|s| s.watermark);
    assert_eq!(watermark, None, "the watermark moved past a window that was not fully written");

    // Back to normal: a rerun writes every value, exactly.
    proxy.set(Fault::Pass);
    proxy.cut();
    let report = store.materialize(start, end, &MaterializeOptions::default()).await.unwrap();
    assert!(report.failed_views().is_empty(), "{report:?}");
    let ids: Vec<i64> = (0..users).collect();
    let r = read(&store, ids.clone()).await.unwrap();
    for (row, id) in ids.iter().enumerate() {
        assert_eq!(r.status(row, "score").unwrap(), FeatureStatus::Present, "user {id}");
        assert_eq!(r.value(row, "score").unwrap().as_i64(), Some(id * 3), "user {id}");
    }
}

fn s3_config(moto: &MotoServer, proxy: &FaultProxy, bucket: &str) -> RepoConfig {
    let mut options = moto.options();
    options.insert("aws_endpoint".into(), format!("http://127.0.0.1:{}", proxy.port()));
    options.insert("max_retries".into(), "3".into());
    options.insert("retry_timeout".into(), "10s".into());
    options.insert("timeout".into(), "2s".into());
    let mut config = RepoConfig::new("demo", format!("s3://{bucket}/registry.json"));
    config.offline_store.storage_options = options;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_errors_are_retried_and_a_hung_s3_is_a_prompt_clear_error() {
    let moto = MotoServer::start();
    moto.create_bucket("flaky");
    let proxy = FaultProxy::start(moto.port());
    let defs = Definitions::from_yaml(
        "entities:\n  - {name: user, join_keys: [{name: user_id, dtype: int64}]}\n",
        "faults.yaml",
    )
    .unwrap();

    // Two 503s (S3's SlowDown): retried, and the apply lands once.
    proxy.fail_http_requests(2);
    let store = feature_store::from_config(s3_config(&moto, &proxy, "flaky")).unwrap();
    let outcome = store.apply(&defs, ApplyMode::Sync).await.unwrap();
    assert_eq!(proxy.failed_http_requests(), 2, "the injected errors were met");
    assert!(outcome.written);
    let fresh = feature_store::from_config(s3_config(&moto, &proxy, "flaky")).unwrap();
    assert_eq!(fresh.document().await.unwrap().version, outcome.version);

    // 503 on every request: an error naming the registry once the retries are spent.
    proxy.fail_http_requests(1000);
    let store = feature_store::from_config(s3_config(&moto, &proxy, "flaky")).unwrap();
    let began = Instant::now();
    let err = store.document().await.unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(30), "took {:?}", began.elapsed());
    assert!(err.to_string().contains("s3://flaky/registry.json"), "{err}");
    proxy.fail_http_requests(0);

    // A hung server: the per-request timeout ends each try.
    proxy.set(Fault::Hold);
    let store = feature_store::from_config(s3_config(&moto, &proxy, "flaky")).unwrap();
    let began = Instant::now();
    let err = store.document().await.unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(30), "a hung S3 held a read for {:?}", began.elapsed());
    assert!(err.to_string().contains("s3://flaky/registry.json"), "{err}");

    // And it converges: the registry written before is read back intact.
    proxy.set(Fault::Pass);
    proxy.cut();
    let store = feature_store::from_config(s3_config(&moto, &proxy, "flaky")).unwrap();
    assert_eq!(store.document().await.unwrap().version, outcome.version);
}

/// Redis at its `maxmemory` (no eviction): materialization fails naming the
/// store and the cause, the watermark stays, reads keep working, and once
/// memory is raised a rerun writes every value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_is_a_clear_error_and_a_rerun_converges() {
    let users = 30_000;
    let redis = RedisServer::start();
    let url = redis.url();
    let (_dir, store) = redis_repo(users, &format!("connection_string: \"{url}\"")).await;
    let (start, end) = window();
    redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]).unwrap();
    redis.command(&["CONFIG", "SET", "maxmemory", "2mb"]).unwrap();
    let outcome = store.materialize(start, end, &MaterializeOptions::default()).await;
    let message = match &outcome {
        Err(e) => e.to_string(),
        Ok(report) => format!("{report:?}"),
    };
    assert!(outcome.is_err() || !outcome.as_ref().unwrap().failed_views().is_empty(), "{message}");
    assert!(message.contains("OOM") || message.contains("maxmemory"), "the cause is named: {message}");
    assert!(message.contains(&url), "the store is named: {message}");
    let doc = store.document().await.unwrap();
    assert_eq!(doc.project("faults").registry().view_state.get("stats").and_then(|s| s.watermark), None);
    read(&store, vec![1]).await.expect("reads work while Redis is full");

    redis.command(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    store.materialize(start, end, &MaterializeOptions::default()).await.unwrap();
    let ids: Vec<i64> = (0..users).collect();
    let r = read(&store, ids.clone()).await.unwrap();
    for (row, id) in ids.iter().enumerate() {
        assert_eq!(r.value(row, "score").unwrap().as_i64(), Some(id * 3), "user {id}");
    }
}
