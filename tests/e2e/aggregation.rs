//! Aggregation views from YAML to retrieval: hand-checked windows
//! (continuous and hopping, bounds, empty windows, unknown and null keys),
//! mixed with a plain view in one request, and the errors bad definitions get.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use feature_store::registry::ApplyMode;
use feature_store::{EntityInput, Features, HistoricalOptions};
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

#[tokio::test]
async fn serving_an_aggregation_view_online_says_it_is_not_available_yet() {
    let dir = aggregation_repo(DEFS);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let end = chrono::DateTime::from_timestamp(B + 4000, 0).unwrap();
    let err = store
        .materialize_incremental(end, &feature_store::MaterializeOptions::default().with_views(["user_txn_hopping"]))
        .await
        .unwrap_err()
        .to_string();
    has(&err, &["feature view \"user_txn_hopping\" aggregates events"]);
}
