//! Online serving end to end: the conformance suite and a materialize/read/push
//! scenario against every backend (memory, SQLite, Redis with AUTH, a
//! 3-primary Redis Cluster), plus failures of a real `redis-server`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, TimeZone, Utc};
use feature_store::online::{FeatureStatus, FeatureValue, OnlineResponse};
use feature_store::registry::{ApplyMode, RunOutcome};
use feature_store::{Error, FeatureStore, Features, MaterializeOptions, OnlineOptions, PushMode};
use feature_store_tests::redis::{RedisCluster, RedisServer};
use feature_store_tests::write_parquet;

use crate::ts_type;

const HOUR: i64 = 3_600_000_000;

/// Base time: a whole hour a few hours ago, so ttl expiry in Redis is in the future.
fn base() -> i64 {
    let now = Utc::now().timestamp_micros();
    now - now.rem_euclid(HOUR) - 6 * HOUR
}

fn at(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).unwrap()
}

struct Row {
    driver: Option<i64>,
    ts: i64,
    created: Option<i64>,
    conv: Option<f32>,
    trips: i64,
    city: Option<&'static str>,
}

fn stats_batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("created", ts_type(), true),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("trips", DataType::Int64, true),
        Field::new("city", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| r.driver).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| Some(r.ts)).collect::<TimestampMicrosecondArray>().with_timezone("UTC")),
        Arc::new(rows.iter().map(|r| r.created).collect::<TimestampMicrosecondArray>().with_timezone("UTC")),
        Arc::new(rows.iter().map(|r| r.conv).collect::<Float32Array>()),
        Arc::new(rows.iter().map(|r| Some(r.trips)).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| r.city).collect::<StringArray>()),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

const DEFS: &str = "
entities: [{name: driver, join_keys: [driver_id]}]
sources: [{name: stats, path: data/stats, timestamp_field: event_timestamp, created_timestamp_field: created}]
feature_views:
  - {name: stats_v, entities: [driver], source: stats, ttl: 1d, schema: [{name: conv_rate, dtype: float32}, {name: trips, dtype: int64}]}
  - {name: city_v, entities: [driver], source: stats, schema: [{name: city, dtype: string}]}
  - {name: offline_only, entities: [driver], source: stats, online: false, schema: [{name: trips, dtype: int64}]}
";

fn first_rows(t: i64) -> Vec<Row> {
    let r = |driver, ts, created, conv, trips, city| Row { driver, ts, created, conv, trips, city };
    vec![
        r(Some(1), t - 3 * HOUR, None, Some(0.1), 1, Some("a")),
        r(Some(1), t - 2 * HOUR, None, Some(0.2), 2, Some("a")),
        r(Some(1), t - HOUR, None, None, 3, Some("b")),
        r(Some(2), t - 2 * HOUR, Some(t), Some(0.5), 5, Some("c")),
        r(Some(2), t - 2 * HOUR, Some(t + 1), Some(0.6), 6, Some("c")),
        r(Some(3), t - 3 * HOUR, None, Some(0.3), 7, None),
        r(Some(4), t + HOUR, None, Some(0.9), 9, Some("d")),
        r(Some(5), t - HOUR, None, Some(0.7), 8, Some("e")),
        r(Some(5), t - HOUR, None, Some(0.8), 8, Some("e")),
        r(None, t - HOUR, None, Some(0.4), 4, Some("z")),
    ]
}

/// A repo with the scenario's data and definitions, applied.
async fn open_repo(online_yaml: &str, t: i64) -> (tempfile::TempDir, FeatureStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        format!("project: online_e2e\nregistry: data/registry.json\n{online_yaml}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("features.yaml"), DEFS).unwrap();
    write_parquet(&dir.path().join("data/stats/part-0.parquet"), &stats_batch(&first_rows(t)));
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    (dir, store)
}

fn drivers(ids: &[Option<i64>]) -> RecordBatch {
    RecordBatch::try_from_iter([("driver_id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef)]).unwrap()
}

async fn read(store: &FeatureStore, ids: &[Option<i64>], now: i64) -> OnlineResponse {
    store
        .get_online_features(
            &Features::refs(["stats_v:conv_rate", "stats_v:trips", "city_v:city"]),
            &drivers(ids),
            &OnlineOptions::default().with_now(at(now)),
        )
        .await
        .unwrap()
}

/// The error of an online read that must fail.
async fn online_err(store: &FeatureStore, refs: &[&str], rows: &RecordBatch) -> Error {
    store.get_online_features(&Features::refs(refs.iter().copied()), rows, &OnlineOptions::default()).await.unwrap_err()
}

fn cell(r: &OnlineResponse, row: usize, col: &str) -> (FeatureValue, FeatureStatus) {
    (r.value(row, col).unwrap(), r.status(row, col).unwrap())
}

/// A float32 feature as the row view shows it: its shortest decimal form.
fn f(v: f32) -> FeatureValue {
    FeatureValue::Float(v.to_string().parse().unwrap())
}

/// The whole online flow against one backend.
async fn scenario(online_yaml: &str) {
    use FeatureStatus::*;
    let t = base();
    let (dir, store) = open_repo(online_yaml, t).await;

    // Window [t-4h, t]: driver 4's row is after the end; the null key is dropped.
    let opts = MaterializeOptions::default().with_views(["stats_v"]);
    let report = store.materialize(at(t - 4 * HOUR), at(t), &opts).await.unwrap();
    assert_eq!(report.views.len(), 1);
    assert_eq!(report.views[0].rows_read, 8, "{report:?}");
    assert_eq!(report.views[0].entities_written, 4, "{report:?}");
    // A view without ttl and without a watermark reads all history.
    let report =
        store.materialize_incremental(at(t), &MaterializeOptions::default().with_views(["city_v"])).await.unwrap();
    assert_eq!(report.views[0].start, None);
    assert_eq!(report.views[0].entities_written, 4);

    let r = read(&store, &[Some(1), Some(2), Some(3), Some(4), Some(1), Some(5), None], t).await;
    assert_eq!(r.num_rows(), 7);
    assert_eq!(r.column_names(), vec!["driver_id", "conv_rate", "trips", "city"]);
    assert_eq!(
        cell(&r, 0, "conv_rate"),
        (FeatureValue::Null, NullValue),
        "newest row of driver 1 has a null conv_rate"
    );
    assert_eq!(cell(&r, 0, "trips"), (FeatureValue::Int(3), Present));
    assert_eq!(cell(&r, 0, "city"), (FeatureValue::String("b".into()), Present));
    assert_eq!(r.event_timestamp(0, "trips").unwrap(), Some(at(t - HOUR)));
    assert_eq!(cell(&r, 1, "conv_rate"), (f(0.6), Present), "the later created timestamp wins a tie");
    assert_eq!(cell(&r, 2, "city"), (FeatureValue::Null, NullValue));
    for col in ["conv_rate", "trips", "city"] {
        assert_eq!(cell(&r, 3, col), (FeatureValue::Null, NotFound), "driver 4 has no row in the window");
        assert_eq!(cell(&r, 6, col), (FeatureValue::Null, NotFound), "a null key is not found");
        assert_eq!(cell(&r, 4, col), cell(&r, 0, col), "a repeated entity gets the same values");
    }
    assert_eq!(cell(&r, 5, "conv_rate"), (f(0.8), Present), "exact ties go to the greatest feature values");
    let json = r.to_feast_json();
    assert_eq!(json["metadata"]["feature_names"][1], "conv_rate");
    assert_eq!(json["results"][2]["statuses"][3], "NOT_FOUND");
    assert_eq!(json["results"][2]["values"][0], 3);

    // The ttl is enforced at read time: two days later stats_v is stale, city_v has no ttl.
    let r = read(&store, &[Some(2)], t + 48 * HOUR).await;
    assert_eq!(cell(&r, 0, "conv_rate"), (FeatureValue::Null, OutsideMaxAge));
    assert_eq!(cell(&r, 0, "city"), (FeatureValue::String("c".into()), Present));

    // Keys of another integer width are the same keys; other types are errors naming the key.
    let narrow = RecordBatch::try_from_iter([("driver_id", Arc::new(Int32Array::from(vec![2])) as ArrayRef)]).unwrap();
    let r = store
        .get_online_features(&Features::refs(["stats_v:trips"]), &narrow, &OnlineOptions::default().with_now(at(t)))
        .await
        .unwrap();
    assert_eq!(cell(&r, 0, "trips"), (FeatureValue::Int(6), Present));
    let text = RecordBatch::try_from_iter([("driver_id", Arc::new(StringArray::from(vec!["2"])) as ArrayRef)]).unwrap();
    let err = online_err(&store, &["stats_v:trips"], &text).await;
    assert!(err.to_string().contains("\"driver_id\"") && err.to_string().contains("int64"), "{err}");
    let err = online_err(&store, &["stats_v:trip"], &drivers(&[Some(1)])).await;
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let extra = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("driverid", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
    ])
    .unwrap();
    let err = online_err(&store, &["stats_v:trips"], &extra).await;
    assert!(err.to_string().contains("\"driverid\""), "{err}");
    let clash = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("trips", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
    ])
    .unwrap();
    let err = online_err(&store, &["stats_v:trips"], &clash).await;
    assert!(err.to_string().contains("\"trips\" would come from both"), "{err}");
    let err = online_err(&store, &["offline_only:trips"], &drivers(&[Some(1)])).await;
    assert!(err.to_string().contains("not served online"), "{err}");

    // Incremental: new data, from the watermark on.
    let r2 = |driver, ts, conv, trips| Row {
        driver: Some(driver),
        ts,
        created: None,
        conv: Some(conv),
        trips,
        city: Some("n"),
    };
    write_parquet(
        &dir.path().join("data/stats/part-1.parquet"),
        &stats_batch(&[r2(1, t + HOUR, 0.95, 10), r2(4, t + HOUR, 0.99, 11), r2(3, t + 3 * HOUR, 0.1, 12)]),
    );
    let e2 = t + 2 * HOUR;
    let report = store.materialize_incremental(at(e2), &MaterializeOptions::default()).await.unwrap();
    let stats = report.views.iter().find(|v| v.view == "stats_v").unwrap();
    assert_eq!(stats.start, Some(at(t)), "incremental starts at the watermark");
    assert_eq!(stats.rows_read, 3, "{report:?}");
    assert_eq!(stats.entities_written, 2, "rows after the end are not read: {report:?}");
    assert!(report.views.iter().all(|v| v.view != "offline_only"), "offline views are not materialized");
    let state = store.describe("stats_v").await.unwrap();
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json[0]["state"]["watermark"], serde_json::json!(at(e2)));
    // An end before the watermark has nothing to do, and says so.
    let report = store.materialize_incremental(at(t), &MaterializeOptions::default()).await.unwrap();
    let stats = report.views.iter().find(|v| v.view == "stats_v").unwrap();
    assert_eq!((stats.outcome, stats.start, stats.rows_read), (RunOutcome::UpToDate, Some(at(e2)), 0));
    assert!(report.failed_views().is_empty());
    let r = read(&store, &[Some(1), Some(4), Some(3)], e2).await;
    assert_eq!(cell(&r, 0, "conv_rate"), (f(0.95), Present));
    assert_eq!(cell(&r, 1, "trips"), (FeatureValue::Int(11), Present));
    assert_eq!(cell(&r, 2, "trips"), (FeatureValue::Int(7), Present), "driver 3's next row is after the window");

    // Rerunning an old window never regresses newer values.
    let report = store.materialize(at(t - 4 * HOUR), at(t), &opts).await.unwrap();
    assert!(report.views[0].skipped_older >= 1, "{report:?}");
    let r = read(&store, &[Some(1)], e2).await;
    assert_eq!(cell(&r, 0, "conv_rate"), (f(0.95), Present));
    let json = serde_json::to_value(store.describe("stats_v").await.unwrap()).unwrap();
    assert_eq!(
        json[0]["state"]["watermark"],
        serde_json::json!(at(e2)),
        "an old window does not move the watermark back"
    );
    // A window starting after the watermark leaves a gap never loaded: the
    // watermark stays, and the report says so.
    let later = store.materialize(at(e2 + 2 * HOUR), at(e2 + 3 * HOUR), &opts).await.unwrap();
    assert_eq!(later.views[0].watermark_kept, Some(at(e2)), "{later:?}");
    let json = serde_json::to_value(store.describe("stats_v").await.unwrap()).unwrap();
    assert_eq!(json[0]["state"]["watermark"], serde_json::json!(at(e2)), "a gap never moves the watermark");
    // A contiguous window moves it.
    let next = store.materialize(at(e2), at(e2 + HOUR), &opts).await.unwrap();
    assert_eq!(next.views[0].watermark_kept, None);
    let json = serde_json::to_value(store.describe("stats_v").await.unwrap()).unwrap();
    assert_eq!(json[0]["state"]["watermark"], serde_json::json!(at(e2 + HOUR)));

    // Push: fresh values online and, optionally, offline.
    let now = Utc::now().timestamp_micros();
    let push = |driver: i64, ts: i64, conv: f32| {
        RecordBatch::try_from_iter([
            ("driver_id", Arc::new(Int64Array::from(vec![driver])) as ArrayRef),
            ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(vec![ts]).with_timezone("UTC")) as ArrayRef),
            ("conv_rate", Arc::new(Float32Array::from(vec![conv])) as ArrayRef),
            ("trips", Arc::new(Int32Array::from(vec![42])) as ArrayRef),
        ])
        .unwrap()
    };
    // Offline, the pushed rows are rows of the source for every view reading
    // it: city_v's column is required (it would read as null otherwise).
    let err = store.push("stats_v", &push(2, now, 0.42), PushMode::OnlineAndOffline).await.unwrap_err();
    assert!(err.to_string().contains("needs their columns too: city_v:city"), "{err}");
    let plus = |batch: RecordBatch, name: &str, col: ArrayRef| {
        let mut fields: Vec<arrow::datatypes::FieldRef> = batch.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(arrow::datatypes::Field::new(name, col.data_type().clone(), true)));
        let mut columns = batch.columns().to_vec();
        columns.push(col);
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap()
    };
    let with_city = plus(push(2, now, 0.42), "city", Arc::new(StringArray::from(vec!["pushed"])));
    let w = store.push("stats_v", &with_city, PushMode::OnlineAndOffline).await.unwrap();
    assert_eq!(w.written, 1);
    let w = store.push("stats_v", &push(2, now - HOUR, 0.01), PushMode::Online).await.unwrap();
    assert_eq!((w.written, w.skipped_older), (0, 1), "an older push is skipped");
    let r = read(&store, &[Some(2)], now).await;
    assert_eq!(cell(&r, 0, "conv_rate"), (f(0.42), Present));
    assert_eq!(cell(&r, 0, "trips"), (FeatureValue::Int(42), Present));
    let pushed_files = std::fs::read_dir(dir.path().join("data/stats")).unwrap().count();
    assert_eq!(pushed_files, 3, "the offline push adds one Parquet file");
    let bad = push(2, now, 0.5).project(&[0, 1, 2]).unwrap();
    let err = store.push("stats_v", &bad, PushMode::Online).await.unwrap_err();
    assert!(err.to_string().contains("missing feature column \"trips\""), "{err}");
    let wrong = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
        ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(vec![now]).with_timezone("UTC")) as ArrayRef),
        ("conv_rate", Arc::new(StringArray::from(vec!["high"])) as ArrayRef),
        ("trips", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
    ])
    .unwrap();
    let err = store.push("stats_v", &wrong, PushMode::Online).await.unwrap_err();
    assert!(err.to_string().contains("\"conv_rate\" is Utf8"), "{err}");
    let r = read(&store, &[Some(2)], now).await;
    assert_eq!(cell(&r, 0, "conv_rate"), (f(0.42), Present), "failed pushes write nothing");

    // The pushed offline row is seen by a later materialization of a fresh store.
    let online = store.online_store().unwrap();
    let table = store.document().await.unwrap().project("online_e2e").online_table("stats_v");
    assert!(table.starts_with("stats_v@"), "stored under the view's generation: {table}");
    online.drop_view("online_e2e", &table).await.unwrap();
    let r = read(&store, &[Some(2)], now).await;
    assert_eq!(r.status(0, "conv_rate").unwrap(), NotFound, "drop_view empties the view");
    store.materialize(at(t - 4 * HOUR), at(now), &opts).await.unwrap();
    let r = read(&store, &[Some(2)], now).await;
    assert_eq!(cell(&r, 0, "conv_rate"), (f(0.42), Present));
    // The other view of the source materializes the pushed file too.
    let city = MaterializeOptions::default().with_views(["city_v"]);
    store.materialize(at(t - 4 * HOUR), at(now), &city).await.unwrap();
    let r = store
        .get_online_features(&Features::refs(["city_v:city"]), &drivers(&[Some(2)]), &OnlineOptions::default())
        .await
        .unwrap();
    assert_eq!(r.value(0, "city").unwrap(), FeatureValue::String("pushed".into()));
    // An offline-only push reaches a view that is not served online, and counts its rows.
    let only = push(3, now, 0.1).project(&[0, 1, 3]).unwrap();
    let err = store.push("offline_only", &only, PushMode::Online).await.unwrap_err();
    assert!(err.to_string().contains("not served online"), "{err}");
    let full = plus(
        plus(only, "conv_rate", Arc::new(Float32Array::from(vec![0.1f32]))),
        "city",
        Arc::new(StringArray::from(vec!["x"])),
    );
    let w = store.push("offline_only", &full, PushMode::Offline).await.unwrap();
    assert_eq!(w.written, 1);

    // A feature added to a view reads NOT_FOUND (not NULL_VALUE) until the
    // view is materialized again: its stored rows were written without it.
    let grown =
        DEFS.replacen("{name: trips, dtype: int64}]}", "{name: trips, dtype: int64}, {name: city, dtype: string}]}", 1);
    std::fs::write(dir.path().join("features.yaml"), grown).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let grown_read = || async {
        let refs = Features::refs(["stats_v:trips", "stats_v:city"]);
        store.get_online_features(&refs, &drivers(&[Some(2)]), &OnlineOptions::default()).await.unwrap()
    };
    let r = grown_read().await;
    assert_eq!(cell(&r, 0, "trips"), (FeatureValue::Int(42), Present));
    assert_eq!(cell(&r, 0, "city"), (FeatureValue::Null, NotFound));
    assert_eq!(r.event_timestamp(0, "city").unwrap(), None);
    store.materialize(at(t - 4 * HOUR), at(now), &opts).await.unwrap();
    let r = grown_read().await;
    assert_eq!(cell(&r, 0, "city"), (FeatureValue::String("pushed".into()), Present));
    let doc = store.document().await.unwrap();
    for view in ["stats_v", "city_v"] {
        online.drop_view("online_e2e", &doc.project("online_e2e").online_table(view)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_memory() {
    scenario("online_store: {type: memory}\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_sqlite() {
    scenario("online_store: {type: sqlite, path: data/online.db}\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_lmdb() {
    scenario("online_store: {type: lmdb, path: data/online.lmdb, map_size: 1GiB}\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_and_conformance_redis_with_auth() {
    let server = RedisServer::start_with_password("s3cret pass");
    let url = format!("redis://:s3cret%20pass@127.0.0.1:{}", server.port());
    let yaml = format!("online_store: {{type: redis, connection_string: \"{url}\"}}\n");
    scenario(&yaml).await;
    let store = feature_store::redis::RedisOnlineStore::new(feature_store::redis::RedisConfig::new(&url)).unwrap();
    feature_store::testing::online_store_conformance(Arc::new(store), "conf").await;
    // A wrong password is a clear error.
    let bad = feature_store::redis::RedisOnlineStore::new(feature_store::redis::RedisConfig::new(format!(
        "redis://:wrong@127.0.0.1:{}",
        server.port()
    )))
    .unwrap();
    let err = feature_store::online::OnlineStore::read(&bad, "p", &[]).await;
    assert!(err.is_ok(), "an empty read needs no connection");
    let err = feature_store::online::OnlineStore::delete(&bad, "p", "v", &["k".into()]).await.unwrap_err();
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

/// A view removed while the online store is down, then defined again once it
/// is back (its data persisted), must not serve the old view's values: the
/// new view's data lives apart, and the next apply clears the old data.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_views_online_data_never_comes_back() {
    use FeatureStatus::*;
    let mut server = RedisServer::start();
    let t = base();
    let yaml = format!("online_store: {{type: redis, connection_string: \"{}\", timeout: 2s}}\n", server.url());
    let (dir, store) = open_repo(&yaml, t).await;
    store.materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default()).await.unwrap();
    assert_eq!(cell(&read(&store, &[Some(3)], t).await, 0, "trips"), (FeatureValue::Int(7), Present));

    // Redis goes down (its data saved); city_v is removed meanwhile.
    assert!(server.command(&["SAVE"]).unwrap().contains("OK"));
    server.stop();
    let without = DEFS
        .replace("  - {name: city_v, entities: [driver], source: stats, schema: [{name: city, dtype: string}]}\n", "");
    std::fs::write(dir.path().join("features.yaml"), &without).unwrap();
    let err = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
    assert!(
        err.contains("clearing the online data of removed feature view \"city_v\" failed")
            && err.contains("the next `feature-store apply` clears it"),
        "{err}"
    );

    // Redis is back with the old data; the view is defined again.
    server.restart();
    assert!(server.command(&["DBSIZE"]).unwrap().trim_start_matches(':').trim() != "0", "the data persisted");
    std::fs::write(dir.path().join("features.yaml"), DEFS).unwrap();
    let outcome = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    assert!(outcome.written);
    // The first read on the restarted server meets the dropped connection
    // and reads again on a new one: no error reaches the caller.
    let r = read(&store, &[Some(1), Some(3)], t).await;
    assert_eq!(cell(&r, 0, "city"), (FeatureValue::Null, NotFound), "the re-created view was never materialized");
    assert_eq!(cell(&r, 1, "trips"), (FeatureValue::Int(7), Present), "other views keep serving");
    let doc = store.document().await.unwrap();
    assert!(doc.project("online_e2e").registry().orphaned_online.is_empty(), "the old data was cleared");
    let keys = server.command(&["KEYS", "*city_v*"]).unwrap();
    assert!(keys.starts_with("*0"), "no key of the old city_v is left: {keys}");
    // Materializing the new view serves its values again.
    store.materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default()).await.unwrap();
    assert_eq!(cell(&read(&store, &[Some(1)], t).await, 0, "city"), (FeatureValue::String("b".into()), Present));
}

/// Feast's `host:port,password=...` form takes the password as written,
/// characters that mean something in a URL included.
#[tokio::test(flavor = "multi_thread")]
async fn feast_style_password_with_url_characters() {
    let password = "p@ss/w#rd%x:y?z";
    let mut server = RedisServer::start_with_password(password);
    let yaml = format!(
        "online_store: {{type: redis, connection_string: \"127.0.0.1:{},password={password}\", timeout: 2s}}\n",
        server.port()
    );
    scenario(&yaml).await;
    // Errors name the server but never the password, in either spelling.
    let (_dir, store) = open_repo(&yaml, base()).await;
    server.stop();
    let err = store
        .get_online_features(&Features::refs(["stats_v:trips"]), &drivers(&[Some(1)]), &OnlineOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(!err.contains("p@ss") && !err.contains("p%40ss"), "the password leaked: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_and_conformance_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls().join(",");
    let yaml = format!("online_store: {{type: redis, redis_type: redis_cluster, connection_string: \"{urls}\"}}\n");
    scenario(&yaml).await;
    let store = feature_store::redis::RedisOnlineStore::new(feature_store::redis::RedisConfig::cluster(cluster.urls()))
        .unwrap();
    feature_store::testing::online_store_conformance(Arc::new(store.clone()), "conf").await;
    // Keys really are spread over the nodes, and drop_view reaches every node.
    let mut rows = feature_store::online::OnlineRows::new(vec!["a".into()]);
    for i in 0..300 {
        rows.begin_row(format!("k={i}"), 1);
        rows.push_value(Some(b"\x06x"));
    }
    let view = feature_store::online::OnlineView::new("spread", None);
    feature_store::online::OnlineStore::write(&store, "conf", &view, &rows).await.unwrap();
    let sizes = || -> Vec<i64> {
        cluster
            .nodes()
            .iter()
            .map(|n| n.command(&["DBSIZE"]).unwrap().trim_start_matches(':').parse().unwrap())
            .collect()
    };
    assert!(sizes().iter().all(|&c| c > 0), "every primary holds keys: {:?}", sizes());
    feature_store::online::OnlineStore::drop_view(&store, "conf", "spread").await.unwrap();
    assert_eq!(sizes(), vec![0, 0, 0], "drop_view removes keys on every node");
}

/// `n` drivers with one row each at `t - 1h`, values derived from the id.
fn many_drivers(dir: &std::path::Path, n: i64, t: i64) {
    let rows: Vec<Row> = (0..n)
        .map(|i| Row {
            driver: Some(i),
            ts: t - HOUR,
            created: None,
            conv: Some(i as f32 / 7.0),
            trips: i * 3,
            city: Some("x"),
        })
        .collect();
    write_parquet(&dir.join("data/stats/part-0.parquet"), &stats_batch(&rows));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_materialization_then_rerun_equals_clean_run() {
    let t = base();
    let server = Arc::new(Mutex::new(RedisServer::start()));
    let url = server.lock().unwrap().url();
    let (dir, store) =
        open_repo(&format!("online_store: {{type: redis, connection_string: \"{url}\", timeout: 2s}}\n"), t).await;
    let n = 60_000;
    many_drivers(dir.path(), n, t);
    let killed = Arc::new(AtomicBool::new(false));
    let (s2, k2) = (Arc::clone(&server), Arc::clone(&killed));
    let opts = MaterializeOptions::default().with_views(["stats_v"]).with_progress(move |p| {
        if p.entities_written >= 10_000 && !k2.swap(true, Ordering::SeqCst) {
            s2.lock().unwrap().stop();
        }
    });
    let err = store.materialize(at(t - 4 * HOUR), at(t), &opts).await.unwrap_err();
    assert!(killed.load(Ordering::SeqCst), "the server was killed during the run");
    assert!(matches!(err, Error::StoreUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "the error names the store: {err}");
    let json = serde_json::to_value(store.describe("stats_v").await.unwrap()).unwrap();
    assert!(json[0]["state"]["watermark"].is_null(), "a failed run leaves the watermark alone: {json}");

    server.lock().unwrap().restart();
    let report = store
        .materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default().with_views(["stats_v"]))
        .await
        .unwrap();
    assert_eq!(report.views[0].entities_written, n as u64);
    let json = serde_json::to_value(store.describe("stats_v").await.unwrap()).unwrap();
    assert_eq!(json[0]["state"]["watermark"], serde_json::json!(at(t)));

    // Same contents as a clean run into the memory store.
    let clean_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        clean_dir.path().join("feature_store.yaml"),
        "project: online_e2e\nregistry: data/registry.json\nonline_store: {type: memory}\n",
    )
    .unwrap();
    std::fs::write(clean_dir.path().join("features.yaml"), DEFS).unwrap();
    many_drivers(clean_dir.path(), n, t);
    let clean = feature_store::open(clean_dir.path()).unwrap();
    clean.apply(&clean.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    clean.materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default().with_views(["stats_v"])).await.unwrap();
    let ids: Vec<Option<i64>> = (0..n).map(Some).collect();
    let features = Features::refs(["stats_v:conv_rate", "stats_v:trips"]);
    let o = OnlineOptions::default().with_now(at(t));
    let a = store.get_online_features(&features, &drivers(&ids), &o).await.unwrap();
    let b = clean.get_online_features(&features, &drivers(&ids), &o).await.unwrap();
    assert_eq!(a.values(), b.values());
    assert_eq!(a.statuses(), b.statuses());
    assert_eq!(a.event_timestamps(), b.event_timestamps());
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_with_redis_down_fail_within_the_timeout_and_recover() {
    let t = base();
    let mut server = RedisServer::start();
    let url = server.url();
    let (_dir, store) =
        open_repo(&format!("online_store: {{type: redis, connection_string: \"{url}\", timeout: 1s}}\n"), t).await;
    store.materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default()).await.unwrap();
    assert_eq!(read(&store, &[Some(2)], t).await.status(0, "trips").unwrap(), FeatureStatus::Present);
    server.stop();
    let features = Features::refs(["stats_v:trips"]);
    for _ in 0..3 {
        let began = Instant::now();
        let err =
            store.get_online_features(&features, &drivers(&[Some(2)]), &OnlineOptions::default()).await.unwrap_err();
        let took = began.elapsed();
        assert!(took < Duration::from_millis(2500), "a read with Redis down took {took:?} (timeout 1s)");
        assert!(matches!(err, Error::StoreUnavailable { .. }), "{err:?}");
        assert!(err.to_string().contains(&url), "{err}");
    }
    server.restart();
    // The server came back empty (no persistence): reads work again and say so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        match store.get_online_features(&features, &drivers(&[Some(2)]), &OnlineOptions::default()).await {
            Ok(r) => break r,
            Err(e) => assert!(Instant::now() < deadline, "no recovery after restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status(0, "trips").unwrap(), FeatureStatus::NotFound);
    store.materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default()).await.unwrap();
    assert_eq!(read(&store, &[Some(2)], t).await.status(0, "trips").unwrap(), FeatureStatus::Present);
}

async fn concurrent_pushes_converge(online_yaml: &str) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let t = base();
    let (_dir, store) = open_repo(online_yaml, t).await;
    let keys = 200i64;
    let versions = 16i64;
    // Every (key, version) pair, shuffled, split over 8 concurrent pushers.
    let mut items: Vec<(i64, i64)> = (0..keys).flat_map(|k| (0..versions).map(move |v| (k, v))).collect();
    items.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    let pushed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = items
        .chunks(items.len() / 8)
        .map(|chunk| {
            let store = store.clone();
            let chunk = chunk.to_vec();
            let pushed = Arc::clone(&pushed);
            tokio::spawn(async move {
                for batch in chunk.chunks(25) {
                    let b = RecordBatch::try_from_iter([
                        ("driver_id", Arc::new(batch.iter().map(|x| x.0).collect::<Int64Array>()) as ArrayRef),
                        (
                            "event_timestamp",
                            Arc::new(
                                batch
                                    .iter()
                                    .map(|x| Some(t + x.1 * 1000))
                                    .collect::<TimestampMicrosecondArray>()
                                    .with_timezone("UTC"),
                            ) as ArrayRef,
                        ),
                        ("conv_rate", Arc::new(batch.iter().map(|x| x.1 as f32).collect::<Float32Array>()) as ArrayRef),
                        ("trips", Arc::new(batch.iter().map(|x| x.0 * 100 + x.1).collect::<Int64Array>()) as ArrayRef),
                    ])
                    .unwrap();
                    store.push("stats_v", &b, PushMode::Online).await.unwrap();
                    pushed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(pushed.load(Ordering::Relaxed), (keys * versions) as u64);
    let ids: Vec<Option<i64>> = (0..keys).map(Some).collect();
    let r = store
        .get_online_features(
            &Features::refs(["stats_v:trips"]),
            &drivers(&ids),
            &OnlineOptions::default().with_now(at(t)),
        )
        .await
        .unwrap();
    for k in 0..keys as usize {
        assert_eq!(
            cell(&r, k, "trips"),
            (FeatureValue::Int(k as i64 * 100 + versions - 1), FeatureStatus::Present),
            "key {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_converge_to_the_newest_value() {
    concurrent_pushes_converge("online_store: {type: memory}\n").await;
    concurrent_pushes_converge("online_store: {type: sqlite}\n").await;
    concurrent_pushes_converge("online_store: {type: lmdb}\n").await;
    let server = RedisServer::start();
    concurrent_pushes_converge(&format!("online_store: {{type: redis, connection_string: \"{}\"}}\n", server.url()))
        .await;
}

#[test]
fn unknown_online_store_options_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, needle) in [
        ("online_store: {type: sqlite, pth: x.db}\n", "online_store.pth"),
        ("online_store: {type: cassandra}\n", "unknown type \"cassandra\""),
        ("online_store: {type: lmdb, map_size: lots}\n", "online_store.map_size"),
        ("online_store: {type: redis}\n", "connection_string is required"),
        ("online_store: {type: redis, connection_string: \"redis://x:1\", timeout: soon}\n", "timeout"),
    ] {
        std::fs::write(dir.path().join("feature_store.yaml"), format!("project: p\nregistry: r.json\n{yaml}")).unwrap();
        let err = feature_store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{yaml}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_view_clears_its_online_data() {
    let t = base();
    let (dir, store) = open_repo("online_store: {type: sqlite}\n", t).await;
    store.materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default()).await.unwrap();
    let doc = store.document().await.unwrap();
    let tables = doc.project("online_e2e");
    let raw = |view: &str| {
        let table = tables.online_table(view);
        feature_store::online::ViewRead::new(table, vec!["city".into(), "trips".into()], vec!["driver_id=2".into()])
    };
    let online = Arc::clone(store.online_store().unwrap());
    let got = online.read("online_e2e", &[raw("city_v"), raw("stats_v")]).await.unwrap();
    assert!(got[0][0].is_some() && got[1][0].is_some());
    let without_city = DEFS.lines().filter(|l| !l.contains("city_v")).collect::<Vec<_>>().join("\n");
    std::fs::write(dir.path().join("features.yaml"), without_city).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let got = online.read("online_e2e", &[raw("city_v"), raw("stats_v")]).await.unwrap();
    assert!(got[0][0].is_none(), "the removed view's online rows are dropped");
    assert!(got[1][0].is_some(), "other views keep theirs");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_with_auth_and_a_private_ca() {
    let server = RedisServer::start_tls("tls-pass");
    let config = feature_store::redis::RedisConfig::new(server.url()).with_tls_ca_cert(server.ca_cert());
    let store = feature_store::redis::RedisOnlineStore::new(config).unwrap();
    feature_store::testing::online_store_conformance(Arc::new(store), "tls").await;
    // Without the CA the server's certificate is not trusted: a clear error, not a hang.
    let untrusted = feature_store::redis::RedisOnlineStore::new(
        feature_store::redis::RedisConfig::new(server.url()).with_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    let err = feature_store::online::OnlineStore::delete(&untrusted, "p", "v", &["k".into()]).await.unwrap_err();
    assert!(err.to_string().contains("localhost"), "{err}");
    // And through feature_store.yaml.
    let t = base();
    let yaml = format!(
        "online_store: {{type: redis, connection_string: \"{}\", tls_ca_cert: \"{}\"}}\n",
        server.url(),
        server.ca_cert().display()
    );
    let (_dir, store) = open_repo(&yaml, t).await;
    store.materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default()).await.unwrap();
    assert_eq!(read(&store, &[Some(2)], t).await.status(0, "trips").unwrap(), FeatureStatus::Present);
}

#[tokio::test(flavor = "multi_thread")]
async fn materialization_under_a_small_memory_limit_spills_and_matches() {
    let t = base();
    let n = 200_000;
    let mut results = Vec::new();
    for limit in ["", "offline_store: {memory_limit: 16MiB}\n"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("feature_store.yaml"),
            format!("project: online_e2e\nregistry: data/registry.json\nonline_store: {{type: memory}}\n{limit}"),
        )
        .unwrap();
        std::fs::write(dir.path().join("features.yaml"), DEFS).unwrap();
        // Each driver three times, so the newest row must be picked under spilling too.
        let rows: Vec<Row> = (0..n)
            .flat_map(|i| {
                (0..3).map(move |k| Row {
                    driver: Some(i),
                    ts: t - HOUR * (3 - k),
                    created: None,
                    conv: Some(k as f32),
                    trips: i * 10 + k,
                    city: None,
                })
            })
            .collect();
        write_parquet(&dir.path().join("data/stats/part-0.parquet"), &stats_batch(&rows));
        let store = feature_store::open(dir.path()).unwrap();
        store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
        let report = store
            .materialize(at(t - 4 * HOUR), at(t), &MaterializeOptions::default().with_views(["stats_v"]))
            .await
            .unwrap();
        assert_eq!(report.views[0].rows_read, 3 * n as u64);
        assert_eq!(report.views[0].entities_written, n as u64);
        let ids: Vec<Option<i64>> = (0..n).step_by(997).map(Some).collect();
        let r = store
            .get_online_features(
                &Features::refs(["stats_v:trips"]),
                &drivers(&ids),
                &OnlineOptions::default().with_now(at(t)),
            )
            .await
            .unwrap();
        for (row, id) in ids.iter().enumerate() {
            assert_eq!(r.value(row, "trips").unwrap(), FeatureValue::Int(id.unwrap() * 10 + 2));
        }
        results.push(r.values().clone());
    }
    assert_eq!(results[0], results[1]);
}
