//! Aggregation views from YAML to retrieval: hand-checked windows
//! (continuous and hopping, bounds, empty windows, unknown and null keys),
//! mixed with a plain view in one request, and the errors bad definitions get.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use feature_store::registry::ApplyMode;
use feature_store::{EntityInput, FeatureStore, Features, HistoricalOptions};
use feature_store_tests::write_parquet;

use crate::ts_type;

/// A multiple of 5 minutes, in seconds.
const B: i64 = 1_700_000_100;

const DEFS: &str = r#"
entities:
  - {name: user, join_keys: [user_id]}
sources:
  - {name: transactions, path: data/transactions.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: user_txn_stats
    entities: [user]
    source: transactions
    online: false
    aggregations:
      - {column: amount, function: sum, window: 1h, name: amount_sum_1h}
      - {function: count, window: 1h}
      - {column: merchant, function: count_distinct, window: 1h}
      - {column: amount, function: last_n, n: 2, window: 1h}
      - {column: amount, function: mean, window: 1h}
  - name: user_txn_hopping
    entities: [user]
    source: transactions
    aggregation_interval: 5m
    aggregations:
      - {column: amount, function: sum, window: 1h, name: hop_sum}
  - name: user_latest
    entities: [user]
    source: transactions
    schema:
      - {name: amount, dtype: float64}
"#;

fn transactions() -> RecordBatch {
    let rows: [(i64, i64, f64, &str); 5] = [
        (1, B + 10, 1.0, "a"),
        (1, B + 60, 2.0, "b"),
        (1, B + 400, 4.0, "a"),
        (1, B + 3600, 8.0, "c"),
        (2, B + 100, 5.0, "z"),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("amount", DataType::Float64, true),
        Field::new("merchant", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.1 * 1_000_000).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

fn aggregation_repo(defs: &str) -> tempfile::TempDir {
    let dir = crate::repo(&[("features.yaml", defs)]);
    write_parquet(&dir.path().join("data/transactions.parquet"), &transactions());
    dir
}

#[tokio::test]
async fn windows_are_exact_and_mix_with_plain_views() {
    let dir = aggregation_repo(DEFS);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    // The registry records the derived schema like any other.
    let view = store.get_feature_view("user_txn_stats").await.unwrap();
    let schema: Vec<String> = view.schema.iter().map(|f| format!("{}:{}", f.name, f.dtype)).collect();
    assert_eq!(
        schema,
        [
            "amount_sum_1h:float64",
            "count_1h:int64",
            "merchant_count_distinct_1h:int64",
            "amount_last_2_1h:list<float64>",
            "amount_mean_1h:float64"
        ]
    );

    // Entity times in ns with another zone: instants compare exactly.
    let rows: [(Option<i64>, i64); 7] = [
        (Some(1), B + 3600),
        (Some(1), B + 3610),
        (Some(1), B + 9),
        (Some(2), B + 100),
        (Some(3), B + 100),
        (None, B + 100),
        (Some(1), B + 3599),
    ];
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("event_timestamp", DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())), false),
        ])),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(
                TimestampNanosecondArray::from(rows.iter().map(|r| r.1 * 1_000_000_000).collect::<Vec<_>>())
                    .with_timezone("+02:00"),
            ),
        ],
    )
    .unwrap();
    let features = Features::refs([
        "user_txn_stats:amount_sum_1h",
        "user_txn_stats:count_1h",
        "user_txn_stats:merchant_count_distinct_1h",
        "user_txn_stats:amount_last_2_1h",
        "user_txn_stats:amount_mean_1h",
        "user_txn_hopping:hop_sum",
        "user_latest:amount",
    ]);
    let out = store
        .get_historical_features(EntityInput::batch(entities), &features, &HistoricalOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let out = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&[out.project(&[0, 2, 3, 4, 5, 6, 7, 8]).unwrap()])
        .unwrap()
        .to_string();
    // Hopping windows end at the time floored to 5 minutes: at B + 9 and
    // B + 100 that is B, before every event.
    let expected = [
        "+---------+---------------+----------+----------------------------+------------------+--------------------+---------+--------+",
        "| user_id | amount_sum_1h | count_1h | merchant_count_distinct_1h | amount_last_2_1h | amount_mean_1h     | hop_sum | amount |",
        "+---------+---------------+----------+----------------------------+------------------+--------------------+---------+--------+",
        "| 1       | 15.0          | 4        | 3                          | [8.0, 4.0]       | 3.75               | 15.0    | 8.0    |",
        "| 1       | 14.0          | 3        | 3                          | [8.0, 4.0]       | 4.666666666666667  | 15.0    | 8.0    |",
        "| 1       |               | 0        | 0                          |                  |                    |         |        |",
        "| 2       | 5.0           | 1        | 1                          | [5.0]            | 5.0                |         | 5.0    |",
        "| 3       |               | 0        | 0                          |                  |                    |         |        |",
        "|         |               |          |                            |                  |                    |         |        |",
        "| 1       | 7.0           | 3        | 2                          | [4.0, 2.0]       | 2.3333333333333335 | 7.0     | 4.0    |",
        "+---------+---------------+----------+----------------------------+------------------+--------------------+---------+--------+",
    ];
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, expected, "\n{text}");
}

/// Applies DEFS with `from` replaced by `to` and returns the error text.
async fn apply_err(from: &str, to: &str) -> String {
    assert!(DEFS.contains(from), "test bug: {from:?} not in the definitions");
    let dir = aggregation_repo(&DEFS.replacen(from, to, 1));
    let store = feature_store::open(dir.path()).unwrap();
    let defs = match store.repo_definitions() {
        Ok(d) => d,
        Err(e) => return e.to_string(),
    };
    match store.apply(&defs, ApplyMode::Sync).await {
        Ok(_) => panic!("applied with {to:?}"),
        Err(e) => e.to_string(),
    }
}

fn has(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "expected {p:?} in:\n{text}");
    }
}

#[tokio::test]
async fn bad_definitions_name_the_view_the_aggregation_and_the_fix() {
    let view = "feature view \"user_txn_stats\"";
    let e =
        apply_err("    online: false\n    aggregations:", "    online: false\n    ttl: 1d\n    aggregations:").await;
    has(&e, &[view, "ttl 1d does not apply to an aggregation view", "remove ttl"]);
    let e = apply_err("    online: false\n    aggregations:", "    aggregations:").await;
    has(&e, &[view, "needs aggregation_interval", "set online: false"]);
    let e = apply_err(
        "{column: amount, function: sum, window: 1h, name: hop_sum}",
        "{column: amount, function: sum, window: 7m, name: hop_sum}",
    )
    .await;
    has(
        &e,
        &[
            "feature view \"user_txn_hopping\"",
            "aggregation \"hop_sum\"",
            "7m is not a multiple of aggregation_interval 5m",
        ],
    );
    let e = apply_err(
        "{column: amount, function: sum, window: 1h, name: amount_sum_1h}",
        "{column: merchant, function: sum, window: 1h, name: amount_sum_1h}",
    )
    .await;
    has(&e, &[view, "aggregation \"amount_sum_1h\"", "sum of a string column", "numbers"]);
    let e = apply_err(
        "{column: amount, function: sum, window: 1h, name: amount_sum_1h}",
        "{column: amout, function: sum, window: 1h, name: amount_sum_1h}",
    )
    .await;
    has(&e, &[view, "column \"amout\" is not a column", "did you mean \"amount\""]);
    let e = apply_err(
        "{column: amount, function: last_n, n: 2, window: 1h}",
        "{column: amount, function: last_n, window: 1h}",
    )
    .await;
    has(&e, &[view, "last_n needs n"]);
    let e = apply_err("{function: count, window: 1h}", "{function: count, window: 1h, name: amount_sum_1h}").await;
    has(&e, &[view, "\"amount_sum_1h\" is declared twice"]);
    let e = apply_err("{function: count, window: 1h}", "{function: median, window: 1h}").await;
    has(&e, &["median"]);
}

const PARITY_DEFS: &str = r#"
entities:
  - {name: user, join_keys: [user_id]}
sources:
  - {name: events, path: data/events/, timestamp_field: event_timestamp, created_timestamp_field: created}
feature_views:
  - name: user_agg
    entities: [user]
    source: events
    aggregation_interval: 5m
    aggregations:
      - {column: amount, function: sum, window: 10m}
      - {function: count, window: 1h}
      - {column: qty, function: mean, window: 1h}
      - {column: qty, function: sum, window: 1d}
      - {column: merchant, function: max, window: 1d}
      - {column: amount, function: min, window: 1d}
      - {column: amount, function: stddev, window: 1h}
      - {column: qty, function: variance, window: 1d}
      - {column: merchant, function: first, window: 10m}
      - {column: amount, function: last, window: 1h}
      - {column: qty, function: last_n, n: 3, window: 1h}
      - {column: merchant, function: count_distinct, window: 1d}
      - {column: merchant, function: approx_count_distinct, window: 1h}
"#;

/// Random events over a day from `base` (µs): 8 users, ties, nulls, created times.
fn random_events(base: i64, seed: u64) -> RecordBatch {
    let mut state = seed;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let merchants = ["m1", "m2", "m3", "m4", "m5", "m6"];
    let n = 600;
    type Columns =
        (Vec<i64>, Vec<i64>, Vec<Option<i64>>, Vec<Option<f64>>, Vec<Option<i64>>, Vec<Option<&'static str>>);
    let mut cols: Columns = Default::default();
    for _ in 0..n {
        cols.0.push(next(8) as i64);
        // Minutes, so many events share a time, some exactly on tile bounds.
        cols.1.push(base + next(24 * 60) as i64 * 60_000_000 + [0, 1, 30_000_000][next(3) as usize]);
        cols.2.push((next(2) == 0).then(|| next(3) as i64));
        cols.3.push((next(8) != 0).then(|| next(40) as f64 * 0.5 - 3.0));
        cols.4.push((next(8) != 0).then(|| next(9) as i64 - 2));
        cols.5.push((next(8) != 0).then(|| merchants[next(6) as usize]));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("created", ts_type(), true),
        Field::new("amount", DataType::Float64, true),
        Field::new("qty", DataType::Int64, true),
        Field::new("merchant", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(cols.0)),
        Arc::new(TimestampMicrosecondArray::from(cols.1).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(cols.2).with_timezone("UTC")),
        Arc::new(Float64Array::from(cols.3)),
        Arc::new(Int64Array::from(cols.4)),
        Arc::new(StringArray::from(cols.5)),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Historical retrieval of `features` for `users`, every row at `now`, as one batch.
async fn historical_at(store: &FeatureStore, features: &Features, users: &[Option<i64>], now: i64) -> RecordBatch {
    let entity_rows = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("event_timestamp", ts_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(users.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(vec![now; users.len()]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let hist = store
        .get_historical_features(EntityInput::batch(entity_rows), features, &HistoricalOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    arrow::compute::concat_batches(&hist[0].schema(), &hist).unwrap()
}

/// Materialize, then read online at several times and compare with
/// historical retrieval at those times: values equal (floats within 1e-9
/// relative), statuses and event times as documented.
async fn online_equals_historical(online_yaml: &str) {
    use feature_store::online::FeatureStatus;
    use feature_store::{MaterializeOptions, OnlineOptions};

    let day = 86_400_000_000i64;
    let base = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        format!("project: agg_parity\nregistry: data/registry.json\n{online_yaml}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("features.yaml"), PARITY_DEFS).unwrap();
    write_parquet(&dir.path().join("data/events/part-0.parquet"), &random_events(base, 11));
    write_parquet(&dir.path().join("data/events/part-1.parquet"), &random_events(base, 12));
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let at = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap();
    // Two runs: a window, then incrementally on (blocks met by both are rewritten whole).
    let report = store.materialize(at(base - day), at(base + day / 2), &MaterializeOptions::default()).await.unwrap();
    assert!(report.entities_written() > 0, "tiles written");
    store.materialize_incremental(at(base + day + day / 4), &MaterializeOptions::default()).await.unwrap();
    let view = store.get_feature_view("user_agg").await.unwrap();
    let refs: Vec<String> = view.schema.iter().map(|f| format!("user_agg:{}", f.name)).collect();
    let features = Features::refs(refs.iter().map(String::as_str));
    let users: Vec<Option<i64>> = (0..10).map(Some).collect(); // 8 and 9 have no events
    let five = 300_000_000i64;
    let user_rows = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("user_id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(users.clone()))],
    )
    .unwrap();
    for now in [
        base + 3_600_000_000 + 7_000_000,
        base + day / 4,
        base + day / 2 + five - 1,
        base + day - 1,
        base + day + 2 * five,
    ] {
        let online = store
            .get_online_features(&features, &user_rows, &OnlineOptions::default().with_now(at(now)))
            .await
            .unwrap();
        let hist = historical_at(&store, &features, &users, now).await;
        let b = now - now.rem_euclid(five);
        for (i, f) in view.schema.iter().enumerate() {
            let got = online.values().column(1 + i);
            let want = hist.column(2 + i);
            let what = format!("{online_yaml} now {now}, online against historical");
            feature_store::testing::offline::assert_columns_close(&what, &f.name, got, want);
            for (row, user) in users.iter().enumerate() {
                let status = online.status(row, &f.name).unwrap();
                let ts = online.event_timestamp(row, &f.name).unwrap().map(|t| t.timestamp_micros());
                if user.unwrap() >= 8 {
                    assert_eq!(status, FeatureStatus::NotFound, "user {user:?} {}", f.name);
                    continue;
                }
                if status == FeatureStatus::NotFound {
                    // No block in the window: the empty window's value.
                    continue;
                }
                assert_eq!(ts, Some(b), "{} event time is the window's end", f.name);
                let complete = now <= base + day + day / 4;
                let expected = match (complete, want.is_null(row)) {
                    (false, _) => FeatureStatus::OutsideMaxAge,
                    (true, true) => FeatureStatus::NullValue,
                    (true, false) => FeatureStatus::Present,
                };
                assert_eq!(status, expected, "user {user:?}, {} at {now}", f.name);
            }
        }
    }
    // Rewriting a window is idempotent.
    let before = store
        .get_online_features(&features, &user_rows, &OnlineOptions::default().with_now(at(base + day / 2)))
        .await
        .unwrap();
    store.materialize(at(base), at(base + day), &MaterializeOptions::default()).await.unwrap();
    let after = store
        .get_online_features(&features, &user_rows, &OnlineOptions::default().with_now(at(base + day / 2)))
        .await
        .unwrap();
    assert_eq!(before.values(), after.values(), "rewriting a window changes nothing");

    // A second day of events pushed in four concurrent pushes (to the source
    // and the tiles): online still equals historical, which reads the
    // appended source, and a materialization of the range agrees.
    let more = random_events(base + day, 13);
    let quarter = more.num_rows() / 4;
    let pushes = (0..4).map(|i| {
        let part = more.slice(i * quarter, if i == 3 { more.num_rows() - 3 * quarter } else { quarter });
        let store = &store;
        async move { store.push("user_agg", &part, feature_store::PushMode::OnlineAndOffline).await }
    });
    for pushed in futures::future::join_all(pushes).await {
        assert!(pushed.unwrap().written > 0, "{online_yaml}: pushed");
    }
    let times = [base + day + day / 2, base + 2 * day - 1, base + 2 * day + 3 * five];
    let mut served = Vec::new();
    for now in times {
        let online = store
            .get_online_features(&features, &user_rows, &OnlineOptions::default().with_now(at(now)))
            .await
            .unwrap();
        let hist = historical_at(&store, &features, &users, now).await;
        for (i, f) in view.schema.iter().enumerate() {
            let what = format!("{online_yaml} now {now}, pushed tiles against historical");
            feature_store::testing::offline::assert_columns_close(
                &what,
                &f.name,
                online.values().column(1 + i),
                hist.column(2 + i),
            );
        }
        served.push(online);
    }
    store.materialize(at(base), at(base + 2 * day), &MaterializeOptions::default()).await.unwrap();
    let rebuilt_at = times;
    for (now, pushed) in rebuilt_at.iter().zip(&served) {
        let rebuilt = store
            .get_online_features(&features, &user_rows, &OnlineOptions::default().with_now(at(*now)))
            .await
            .unwrap();
        for (i, f) in view.schema.iter().enumerate() {
            let what = format!("{online_yaml} now {now}, materialized against pushed tiles");
            feature_store::testing::offline::assert_columns_close(
                &what,
                &f.name,
                rebuilt.values().column(1 + i),
                pushed.values().column(1 + i),
            );
        }
    }

    // Racing pushes into one tile, online only, from tasks on several
    // threads: every event is counted once.
    let t0 = base + 3 * day + 60_000_000;
    let one_user = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("user_id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![3]))],
    )
    .unwrap();
    let count = Features::refs(["user_agg:count_1h", "user_agg:amount_sum_10m"]);
    let (tasks, each) = (6, 8);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..each {
                let event = RecordBatch::try_new(
                    Arc::new(Schema::new(vec![
                        Field::new("user_id", DataType::Int64, false),
                        Field::new("event_timestamp", ts_type(), false),
                        Field::new("amount", DataType::Float64, true),
                        Field::new("qty", DataType::Int64, true),
                        Field::new("merchant", DataType::Utf8, true),
                    ])),
                    vec![
                        Arc::new(Int64Array::from(vec![3])),
                        Arc::new(TimestampMicrosecondArray::from(vec![t0 + task * 1000 + i]).with_timezone("UTC")),
                        Arc::new(Float64Array::from(vec![1.0])),
                        Arc::new(Int64Array::from(vec![1])),
                        Arc::new(StringArray::from(vec!["m1"])),
                    ],
                )
                .unwrap();
                store.push("user_agg", &event, feature_store::PushMode::Online).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let got =
        store.get_online_features(&count, &one_user, &OnlineOptions::default().with_now(at(t0 + five))).await.unwrap();
    let counted = got.values().column(1).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    let summed = got.values().column(2).as_any().downcast_ref::<Float64Array>().unwrap().value(0);
    assert_eq!((counted, summed), (tasks * each, (tasks * each) as f64), "{online_yaml}: racing pushes lost events");
}

#[tokio::test(flavor = "multi_thread")]
async fn online_equals_historical_memory() {
    online_equals_historical("online_store: {type: memory}\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn online_equals_historical_sqlite() {
    online_equals_historical("online_store: {type: sqlite, path: data/online.db}\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn online_equals_historical_lmdb() {
    online_equals_historical("online_store: {type: lmdb, path: data/online.lmdb, map_size: 1GiB}\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn online_equals_historical_redis_and_cluster() {
    let server = feature_store_tests::redis::RedisServer::start();
    online_equals_historical(&format!("online_store: {{type: redis, connection_string: \"{}\"}}\n", server.url()))
        .await;
    let cluster = feature_store_tests::redis::RedisCluster::start(3);
    let urls = cluster.urls().join(",");
    online_equals_historical(&format!(
        "online_store: {{type: redis, redis_type: redis_cluster, connection_string: \"{urls}\"}}\n"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_interval_or_function_never_serves_old_tiles() {
    use feature_store::online::FeatureStatus;
    use feature_store::{MaterializeOptions, OnlineOptions};

    let base = 1_767_225_600_000_000i64;
    let dir = tempfile::tempdir().unwrap();
    let config =
        "project: agg_change\nregistry: data/registry.json\nonline_store: {type: sqlite, path: data/online.db}\n";
    std::fs::write(dir.path().join("feature_store.yaml"), config).unwrap();
    std::fs::write(dir.path().join("features.yaml"), PARITY_DEFS).unwrap();
    write_parquet(&dir.path().join("data/events/part-0.parquet"), &random_events(base, 5));
    let at = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap();
    let now = at(base + 86_400_000_000);
    let users = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("user_id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    let read = |store: feature_store::FeatureStore, feature: &'static str| {
        let users = users.clone();
        async move {
            let r = store
                .get_online_features(&Features::refs([feature]), &users, &OnlineOptions::default().with_now(now))
                .await
                .unwrap();
            (0..3).map(|i| r.status(i, feature.split(':').nth(1).unwrap()).unwrap()).collect::<Vec<_>>()
        }
    };
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    store.materialize(at(base - 86_400_000_000), now, &MaterializeOptions::default()).await.unwrap();
    assert!(read(store.clone(), "user_agg:amount_sum_10m").await.contains(&FeatureStatus::Present));

    // sum becomes mean under the same name: the old states are not read.
    let changed = PARITY_DEFS.replace(
        "{column: amount, function: sum, window: 10m}",
        "{column: amount, function: mean, window: 10m, name: amount_sum_10m}",
    );
    std::fs::write(dir.path().join("features.yaml"), &changed).unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    let plan = store.plan(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let text = plan.to_string();
    assert!(
        text.contains("aggregation \"amount_sum_10m\" now computes mean of amount") && text.contains("NOT_FOUND until"),
        "{text}"
    );
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    assert_eq!(read(store.clone(), "user_agg:amount_sum_10m").await, vec![FeatureStatus::NotFound; 3]);
    // Other aggregations keep being served (as possibly stale: the breaking
    // change reset the view's watermark).
    let other = read(store.clone(), "user_agg:count_1h").await;
    assert!(other.iter().any(|s| matches!(s, FeatureStatus::Present | FeatureStatus::OutsideMaxAge)), "{other:?}");

    // A new interval: no tile of the old grid is read.
    std::fs::write(
        dir.path().join("features.yaml"),
        changed.replace("aggregation_interval: 5m", "aggregation_interval: 10m"),
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    assert_eq!(read(store.clone(), "user_agg:count_1h").await, vec![FeatureStatus::NotFound; 3]);
    store.materialize(at(base - 86_400_000_000), now, &MaterializeOptions::default()).await.unwrap();
    assert!(read(store.clone(), "user_agg:count_1h").await.contains(&FeatureStatus::Present));
}

/// Under a small memory limit the aggregation spills (grace partitions by
/// key), reports it in its metrics, and gives the same bits as in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregations_spill_under_a_memory_limit_with_identical_results() {
    let base = 1_767_225_600_000_000i64;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), "project: agg_spill\nregistry: data/registry.json\n")
        .unwrap();
    std::fs::write(
        dir.path().join("features.yaml"),
        PARITY_DEFS.replace("    aggregation_interval: 5m\n", "    online: false\n"),
    )
    .unwrap();
    for seed in 0..4 {
        write_parquet(&dir.path().join(format!("data/events/part-{seed}.parquet")), &random_events(base, 100 + seed));
    }
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let view = store.get_feature_view("user_agg").await.unwrap();
    let refs: Vec<String> = view.schema.iter().map(|f| format!("user_agg:{}", f.name)).collect();
    let features = Features::refs(refs.iter().map(String::as_str));
    let n = 3000usize;
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("event_timestamp", ts_type(), false),
        ])),
        vec![
            Arc::new(Int64Array::from((0..n as i64).map(|i| i % 9).collect::<Vec<_>>())),
            Arc::new(
                TimestampMicrosecondArray::from(
                    (0..n as i64).map(|i| base + (i * 7_919_000_003) % 86_400_000_000).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let run = |limit: Option<usize>| {
        let (store, entities, features, dir) =
            (store.clone(), entities.clone(), features.clone(), dir.path().to_owned());
        async move {
            let parquet =
                feature_store::parquet::ParquetOfflineStore::new(&dir, Default::default()).with_memory_limit(limit);
            let request = store
                .historical_request(EntityInput::batch(entities), &features, &HistoricalOptions::default())
                .await
                .unwrap();
            let plan = parquet.plan_historical(request).await.unwrap();
            let stream = plan.execute().unwrap();
            let schema = stream.schema();
            let out = arrow::compute::concat_batches(&schema, &stream.collect().await.unwrap()).unwrap();
            (out, plan.asof_metric("spill_count"), plan.asof_metric("output_rows"), plan.display_with_metrics())
        }
    };
    let (in_memory, spills, rows, _) = run(None).await;
    assert_eq!((spills, rows), (0, n));
    let (spilled, spills, rows, shown) = run(Some(1280 << 10)).await;
    assert!(spills > 0, "the aggregation spilled:\n{shown}");
    assert_eq!(rows, n);
    assert!(shown.contains("AsOfJoinExec: view=user_agg") && shown.contains("aggregations=13"), "{shown}");
    assert_eq!(spilled, in_memory, "spilled and in-memory results are identical");
}
