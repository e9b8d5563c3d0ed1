//! On-demand features end to end: definition errors, training (the
//! projection over retrieved rows), serving on every online store, and a
//! parity catalogue of expressions run on random inputs both ways, compared
//! bit for bit.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use chrono::{TimeZone, Utc};
use feature_store::online::FeatureStatus;
use feature_store::registry::ApplyMode;
use feature_store::{EntityInput, FeatureStore, Features, HistoricalOptions, MaterializeOptions, OnlineOptions};
use feature_store_tests::redis::{RedisCluster, RedisServer};
use feature_store_tests::write_parquet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ts_type;

const T0: i64 = 1_700_000_000_000_000;
const HOUR: i64 = 3_600_000_000;

/// The catalogue: (name, dtype, expression). Inputs: x float64, y float32,
/// n int64, m int32, s string, b bool, t timestamp, l list<int64> (view
/// `inputs`); amount float64, text string, at timestamp (request `req`).
const CATALOGUE: &[(&str, &str, &str)] = &[
    ("e01", "float64", "x + amount"),
    ("e02", "float64", "x * y"),
    ("e03", "int64", "n + m"),
    ("e04", "int64", "n * 2 - m"),
    ("e05", "int64", "n / NULLIF(m, 0)"),
    ("e06", "float64", "x / NULLIF(y, 0)"),
    ("e07", "string", "CASE WHEN x > 0 THEN 'pos' WHEN x < 0 THEN 'neg' WHEN x = 0 THEN 'zero' ELSE 'other' END"),
    ("e08", "int64", "COALESCE(n, 0)"),
    ("e09", "float64", "COALESCE(x, amount, -1.0)"),
    ("e10", "bool", "x > amount"),
    ("e11", "bool", "x = x"),
    ("e12", "bool", "x IS NULL OR y IS NULL"),
    ("e13", "bool", "b AND x > 0"),
    ("e14", "bool", "NOT b"),
    ("e15", "float64", "abs(x)"),
    ("e16", "float64", "sqrt(abs(x))"),
    ("e17", "float64", "round(x, 2)"),
    ("e18", "float64", "ln(abs(x) + 1)"),
    ("e19", "float64", "power(y, 2)"),
    ("e20", "float64", "greatest(x, amount)"),
    ("e21", "int64", "least(n, m)"),
    ("e22", "string", "upper(s)"),
    ("e23", "int64", "character_length(s)"),
    ("e24", "string", "concat(s, '-', text)"),
    ("e25", "string", "substr(s, 1, 3)"),
    ("e26", "bool", "s LIKE 'a%'"),
    ("e27", "bool", "regexp_like(s, '^[a-c]')"),
    ("e28", "timestamp", "t + INTERVAL '1 day'"),
    ("e29", "timestamp", "date_trunc('hour', at)"),
    ("e30", "int64", "CAST(array_length(l) AS BIGINT)"),
    ("e31", "int64", "array_element(l, 1)"),
    ("e32", "bool", "array_has(l, 3)"),
    ("e33", "float64", "CAST(n AS DOUBLE) / 7"),
    ("e34", "bool", "x IS NOT DISTINCT FROM CAST(y AS DOUBLE)"),
    ("e35", "bool", "isnan(x)"),
    ("e36", "bool", "x BETWEEN -1 AND 1"),
    ("e37", "float64", "CASE WHEN b THEN x ELSE y END"),
    ("e38", "bool", "at > t"),
    ("e39", "string", "CASE WHEN text IS NULL THEN NULL ELSE lower(s) END"),
    ("e40", "float64", "x - floor(x)"),
];

fn inputs_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("x", DataType::Float64, true),
        Field::new("y", DataType::Float32, true),
        Field::new("n", DataType::Int64, true),
        Field::new("m", DataType::Int32, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("t", ts_type(), true),
        Field::new("l", DataType::List(Arc::new(Field::new("item", DataType::Int64, true))), true),
    ]))
}

fn pick<T: Copy>(rng: &mut StdRng, special: &[T], random: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    match rng.random_range(0..10) {
        0 => None,
        1..=3 => Some(special[rng.random_range(0..special.len())]),
        _ => Some(random(rng)),
    }
}

/// One row per driver with random values: nulls, NaN, infinities, signed zeros, extremes.
fn random_inputs(rng: &mut StdRng, drivers: i64) -> RecordBatch {
    let n = drivers as usize;
    let floats = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, f64::MAX, f64::MIN_POSITIVE, -1.0, 1.0];
    let floats32 = [f32::NAN, f32::INFINITY, -0.0, 0.0, f32::MAX, -1.0];
    let x: Float64Array = (0..n).map(|_| pick(rng, &floats, |r| r.random_range(-1e3..1e3))).collect();
    let y: Float32Array = (0..n).map(|_| pick(rng, &floats32, |r| r.random_range(-1e3f32..1e3))).collect();
    let ints: Int64Array =
        (0..n).map(|_| pick(rng, &[0i64, -1, 1, 1 << 40], |r| r.random_range(-1000..1000))).collect();
    let m: Int32Array =
        (0..n).map(|_| pick(rng, &[0i32, -1, i32::MAX, i32::MIN], |r| r.random_range(-50..50))).collect();
    let words = ["apple", "Banana", "cherry", "", "δέλτα", "a%b"];
    let s: StringArray = (0..n).map(|_| pick(rng, &words, |r| words[r.random_range(0..words.len())])).collect();
    let b: BooleanArray = (0..n).map(|_| pick(rng, &[true, false], |r| r.random_bool(0.5))).collect();
    let t = TimestampMicrosecondArray::from(
        (0..n).map(|_| pick(rng, &[0i64, -HOUR, T0], |r| T0 + r.random_range(-1000..1000) * HOUR)).collect::<Vec<_>>(),
    )
    .with_timezone("UTC");
    let lists: Vec<Option<Vec<Option<i64>>>> = (0..n)
        .map(|_| match rng.random_range(0..6) {
            0 => None,
            1 => Some(vec![]),
            2 => Some(vec![None, Some(3)]),
            _ => Some((0..rng.random_range(1..4)).map(|_| Some(rng.random_range(0..5))).collect()),
        })
        .collect();
    let l = ListArray::from_iter_primitive::<Int64Type, _, _>(lists);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from((1..=drivers).collect::<Vec<_>>())),
        Arc::new(TimestampMicrosecondArray::from(vec![T0; n]).with_timezone("UTC")),
        Arc::new(x),
        Arc::new(y),
        Arc::new(ints),
        Arc::new(m),
        Arc::new(s),
        Arc::new(b),
        Arc::new(t),
        Arc::new(l),
    ];
    RecordBatch::try_new(inputs_schema(), cols).unwrap()
}

/// Request data for `drivers` entity rows (plus the key), random like the inputs.
fn random_requests(rng: &mut StdRng, drivers: i64) -> (ArrayRef, ArrayRef, ArrayRef) {
    let n = drivers as usize;
    let amount: Float64Array =
        (0..n).map(|_| pick(rng, &[f64::NAN, 0.0, -0.0, f64::INFINITY], |r| r.random_range(-1e3..1e3))).collect();
    let text: StringArray = (0..n).map(|_| pick(rng, &["x", "", "Ω"], |_| "req")).collect();
    let at = TimestampMicrosecondArray::from(
        (0..n).map(|_| pick(rng, &[T0], |r| T0 + r.random_range(-100..100) * HOUR)).collect::<Vec<_>>(),
    )
    .with_timezone("UTC");
    (Arc::new(amount), Arc::new(text), Arc::new(at))
}

fn catalogue_yaml() -> String {
    let features: Vec<String> = CATALOGUE
        .iter()
        .map(|(n, t, e)| format!("      - {{name: {n}, dtype: {t}, expression: \"{}\"}}", e.replace('"', "\\\"")))
        .collect();
    format!(
        "entities: [{{name: driver, join_keys: [driver_id]}}]
sources: [{{name: inputs_src, path: data/inputs.parquet, timestamp_field: event_timestamp}}]
feature_views:
  - name: inputs
    entities: [driver]
    source: inputs_src
request_sources:
  - name: req
    schema: [{{name: amount, dtype: float64}}, {{name: text, dtype: string}}, {{name: at, dtype: timestamp}}]
on_demand_feature_views:
  - name: catalogue
    sources: [inputs, req]
    features:
{}
",
        features.join("\n")
    )
}

async fn repo_with(online_yaml: &str, defs: &str, data: &RecordBatch) -> (tempfile::TempDir, FeatureStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        format!("project: od\nregistry: data/registry.json\n{online_yaml}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("features.yaml"), defs).unwrap();
    write_parquet(&dir.path().join("data/inputs.parquet"), data);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    (dir, store)
}

/// Equal bit for bit: same type, same nulls, float values compared by their bits.
fn assert_same(name: &str, a: &dyn Array, b: &dyn Array) {
    assert_eq!(a.data_type(), b.data_type(), "{name}: types");
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    for i in 0..a.len() {
        assert_eq!(a.is_null(i), b.is_null(i), "{name}: row {i} null");
    }
    match a.data_type() {
        DataType::Float64 => {
            let (a, b) = (
                a.as_any().downcast_ref::<Float64Array>().unwrap(),
                b.as_any().downcast_ref::<Float64Array>().unwrap(),
            );
            for i in (0..a.len()).filter(|&i| a.is_valid(i)) {
                assert_eq!(
                    a.value(i).to_bits(),
                    b.value(i).to_bits(),
                    "{name}: row {i}: {} vs {}",
                    a.value(i),
                    b.value(i)
                );
            }
        }
        _ => assert_eq!(a.to_data(), b.to_data(), "{name}"),
    }
}

/// Every catalogue expression over random inputs: training (historical
/// retrieval with request fields as entity columns) and serving (online read
/// with request data) give the same values, bit for bit; statuses follow the rule.
async fn parity_on(online_yaml: &str, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let drivers = 300;
    let data = random_inputs(&mut rng, drivers);
    let (_dir, store) = repo_with(online_yaml, &catalogue_yaml(), &data).await;
    store
        .materialize_incremental(Utc.timestamp_micros(T0 + HOUR).unwrap(), &MaterializeOptions::default())
        .await
        .unwrap();

    // 300 known drivers and 20 unknown ones.
    let rows = drivers + 20;
    let (amount, text, at) = random_requests(&mut rng, rows);
    let ids: ArrayRef = Arc::new(Int64Array::from((1..=rows).collect::<Vec<_>>()));
    let features = Features::refs(["catalogue"]);
    let online_rows = RecordBatch::try_from_iter([
        ("driver_id", Arc::clone(&ids)),
        ("amount", Arc::clone(&amount)),
        ("text", Arc::clone(&text)),
        ("at", Arc::clone(&at)),
    ])
    .unwrap();
    let online = store
        .get_online_features(
            &features,
            &online_rows,
            &OnlineOptions::default().with_now(Utc.timestamp_micros(T0 + HOUR).unwrap()),
        )
        .await
        .unwrap();
    let entity_rows = RecordBatch::try_from_iter([
        ("driver_id", Arc::clone(&ids)),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![T0 + HOUR; rows as usize]).with_timezone("UTC")) as ArrayRef,
        ),
        ("amount", amount),
        ("text", text),
        ("at", at),
    ])
    .unwrap();
    let offline = store
        .get_historical_features(EntityInput::batch(entity_rows), &features, &HistoricalOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let offline = arrow::compute::concat_batches(&offline[0].schema(), &offline).unwrap();
    // Inputs are fetched, not returned; request data is not echoed online.
    assert_eq!(online.column_names()[0], "driver_id");
    assert_eq!(online.feature_names(), CATALOGUE.iter().map(|c| c.0).collect::<Vec<_>>());
    let names: Vec<String> = offline.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(&names[..5], ["driver_id", "event_timestamp", "amount", "text", "at"]);
    assert_eq!(names.len(), 5 + CATALOGUE.len(), "{names:?}");
    for (name, _, _) in CATALOGUE {
        let on = online.values().column_by_name(name).unwrap();
        let off = offline.column_by_name(name).unwrap();
        assert_same(name, on.as_ref(), off.as_ref());
        assert!(off.null_count() < rows as usize * 3 / 4, "{name}: mostly null, the catalogue tests little");
        // NULL_VALUE where null; unknown drivers (rows 300..) are NOT_FOUND unless the expression ignores the view.
        for row in 0..rows as usize {
            let status = online.status(row, name).unwrap();
            if on.is_null(row) {
                assert_eq!(status, FeatureStatus::NullValue, "{name} row {row}");
            } else if row >= drivers as usize && *name != "e29" {
                assert_eq!(status, FeatureStatus::NotFound, "{name} row {row}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_catalogue_memory_sqlite_lmdb() {
    parity_on("online_store: {type: memory}\n", 1).await;
    parity_on("online_store: {type: sqlite, path: data/online.db}\n", 2).await;
    parity_on("online_store: {type: lmdb, path: data/online.lmdb, map_size: 256MiB}\n", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_catalogue_redis_and_redis_cluster() {
    let server = RedisServer::start();
    parity_on(&format!("online_store: {{type: redis, connection_string: \"{}\"}}\n", server.url()), 4).await;
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls().join(",");
    parity_on(&format!("online_store: {{type: redis, redis_type: redis_cluster, connection_string: \"{urls}\"}}\n"), 5)
        .await;
}

const ORDER_DEFS: &str = "
entities: [{name: driver, join_keys: [driver_id]}]
sources: [{name: drivers_src, path: data/drivers.parquet, timestamp_field: event_timestamp}]
feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    source: drivers_src
    schema: [{name: conv_rate, dtype: float32}, {name: trips, dtype: int64}, {name: city, dtype: string}]
request_sources:
  - name: order_request
    schema:
      - {name: order_amount, dtype: float64}
      - {name: order_lat, dtype: float64}
on_demand_feature_views:
  - name: order_features
    sources: [driver_hourly_stats, order_request]
    features:
      - {name: amount_x_conv, dtype: float64, expression: \"order_amount * conv_rate\"}
      - {name: big_order, dtype: bool, expression: \"order_amount > 100 AND trips < 15\"}
      - {name: trips_or_zero, dtype: int64, expression: \"COALESCE(trips, 0)\"}
    description: order features
    tags: {team: risk}
  - name: request_only
    sources: [order_request]
    features:
      - {name: north, dtype: bool, expression: \"order_lat > 0\"}
feature_services:
  - name: scoring
    features: [order_features:amount_x_conv, driver_hourly_stats:city]
";

async fn orders_repo(extra: &str) -> (tempfile::TempDir, FeatureStore) {
    let dir = crate::repo(&[("features.yaml", &format!("{ORDER_DEFS}{extra}"))]);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    (dir, store)
}

/// The apply error for `defs` added to the order repo's definitions.
async fn apply_error(feature: &str) -> String {
    let defs = ORDER_DEFS.replace(
        "      - {name: trips_or_zero, dtype: int64, expression: \"COALESCE(trips, 0)\"}",
        &format!("      - {feature}"),
    );
    let dir = crate::repo(&[("features.yaml", &defs)]);
    let store = feature_store::open(dir.path()).unwrap();
    let plan = store.plan(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
    let apply = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
    assert_eq!(plan, apply);
    apply
}

#[tokio::test]
async fn definition_errors_name_the_feature_and_what_is_wrong() {
    let cases: &[(&str, &[&str])] = &[
        (
            "{name: f, dtype: float64, expression: \"conv_rat * 2\"}",
            &[
                "features.yaml",
                "on-demand feature view \"order_features\"",
                "feature \"f\"",
                "unknown column \"conv_rat\"",
                "did you mean \"conv_rate\"",
            ],
        ),
        (
            "{name: f, dtype: int32, expression: \"order_amount * conv_rate\"}",
            &["feature \"f\"", "the expression is float64", "declared int32"],
        ),
        ("{name: f, dtype: float32, expression: \"order_amount\"}", &["the expression is float64", "declared float32"]),
        (
            "{name: f, dtype: float64, expression: \"sum(conv_rate)\"}",
            &["feature \"f\"", "sum() is an aggregate function"],
        ),
        ("{name: f, dtype: float64, expression: \"random()\"}", &["random() is not a pure function"]),
        ("{name: f, dtype: timestamp, expression: \"now()\"}", &["now() is not a pure function"]),
        ("{name: f, dtype: float64, expression: \"conv_rate +\"}", &["feature \"f\"", "syntax error"]),
        ("{name: f, dtype: float64, expression: \"no_such_fn(conv_rate)\"}", &["feature \"f\"", "no_such_fn"]),
        ("{name: f, dtype: float64, expression: \"\"}", &["feature \"f\": the expression is empty"]),
        ("{name: f, dtype: float64, expression: \"row_number() OVER ()\"}", &["feature \"f\"", "window"]),
    ];
    for (feature, wanted) in cases {
        let err = apply_error(feature).await;
        for w in *wanted {
            assert!(err.contains(w), "{feature}: expected {w:?} in: {err}");
        }
    }
    // Widening to the declared type is fine (int32 expression, int64 feature).
    let dir = crate::repo(&[("features.yaml", &ORDER_DEFS.replace("COALESCE(trips, 0)", "character_length(city)"))]);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
}

#[tokio::test]
async fn source_errors_are_named() {
    let check = |defs: String, wanted: &'static [&'static str]| async move {
        let dir = crate::repo(&[("features.yaml", &defs)]);
        let store = feature_store::open(dir.path()).unwrap();
        let err = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
        for w in wanted {
            assert!(err.contains(w), "expected {w:?} in: {err}");
        }
    };
    check(
        ORDER_DEFS
            .replace("sources: [driver_hourly_stats, order_request]", "sources: [driver_hourly_stat, order_request]"),
        &["unknown source \"driver_hourly_stat\"", "did you mean \"driver_hourly_stats\""],
    )
    .await;
    check(
        ORDER_DEFS.replace("sources: [order_request]", "sources: [order_features]"),
        &["\"order_features\" is an on-demand feature view"],
    )
    .await;
    check(
        ORDER_DEFS.replace("- name: request_only", "- name: driver_hourly_stats"),
        &["a feature view has the same name"],
    )
    .await;
    // Two inputs with one name: the plain name is ambiguous, the qualified ones work.
    let twice = ORDER_DEFS.replace(
        "request_sources:",
        "  - name: more_stats\n    entities: [driver]\n    source: drivers_src\n    schema: [{name: conv_rate, dtype: float32}]\nrequest_sources:",
    );
    check(
        twice.replace(
            "sources: [driver_hourly_stats, order_request]",
            "sources: [driver_hourly_stats, more_stats, order_request]",
        ),
        &["column \"conv_rate\" is ambiguous", "\"driver_hourly_stats__conv_rate\" or \"more_stats__conv_rate\""],
    )
    .await;
    let dir = crate::repo(&[(
        "features.yaml",
        &twice
            .replace(
                "sources: [driver_hourly_stats, order_request]",
                "sources: [driver_hourly_stats, more_stats, order_request]",
            )
            .replace("order_amount * conv_rate", "driver_hourly_stats__conv_rate - more_stats__conv_rate"),
    )]);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
}

fn f64s(a: &ArrayRef) -> Vec<Option<f64>> {
    a.as_any().downcast_ref::<Float64Array>().unwrap().iter().collect()
}

#[tokio::test]
async fn training_reads_request_fields_from_the_entity_table() {
    let (dir, store) = orders_repo("").await;
    let t = 1_700_000_000_000_000i64 + HOUR;
    let entity_rows = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(vec![t; 3]).with_timezone("UTC")) as ArrayRef),
        ("order_amount", Arc::new(Float64Array::from(vec![Some(200.0), None, Some(50.0)])) as ArrayRef),
    ])
    .unwrap();
    let get = |features: Features, rows: RecordBatch, full: bool| {
        let store = store.clone();
        async move {
            let opts = HistoricalOptions::default().with_full_feature_names(full);
            let batches =
                store.get_historical_features(EntityInput::batch(rows), &features, &opts).await?.collect().await?;
            Ok::<_, feature_store::Error>(arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap())
        }
    };
    let out =
        get(Features::refs(["order_features:amount_x_conv", "order_features:big_order"]), entity_rows.clone(), false)
            .await
            .unwrap();
    let names: Vec<&str> = out.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["driver_id", "event_timestamp", "order_amount", "amount_x_conv", "big_order"]);
    // conv_rate is 0.5 and 0.25 for drivers 1 and 2 (float32, widened exactly); driver 3 is unknown.
    assert_eq!(f64s(out.column_by_name("amount_x_conv").unwrap()), [Some(100.0), None, None]);
    let big = out.column_by_name("big_order").unwrap().as_any().downcast_ref::<BooleanArray>().unwrap();
    // SQL's three-valued logic: NULL AND FALSE is FALSE.
    assert_eq!(big.iter().collect::<Vec<_>>(), [Some(true), Some(false), Some(false)]);

    // An input also requested comes once, under its own name; full names for both kinds.
    let out = get(Features::refs(["driver_hourly_stats:conv_rate", "order_features"]), entity_rows.clone(), true)
        .await
        .unwrap();
    let names: Vec<&str> = out.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "event_timestamp",
            "order_amount",
            "driver_hourly_stats__conv_rate",
            "order_features__amount_x_conv",
            "order_features__big_order",
            "order_features__trips_or_zero"
        ]
    );
    // A feature service mixing both kinds.
    let out = get(Features::service("scoring"), entity_rows.clone(), false).await.unwrap();
    let names: Vec<&str> = out.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["driver_id", "event_timestamp", "order_amount", "city", "amount_x_conv"]);

    // A view of request fields only, no feature view read.
    let out = get(
        Features::refs(["request_only:north"]),
        RecordBatch::try_from_iter([
            ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(vec![t; 2]).with_timezone("UTC")) as ArrayRef),
            ("order_lat", Arc::new(Int32Array::from(vec![3, -3])) as ArrayRef),
        ])
        .unwrap(),
        false,
    )
    .await
    .unwrap();
    let north = out.column_by_name("north").unwrap().as_any().downcast_ref::<BooleanArray>().unwrap();
    assert_eq!(north.iter().collect::<Vec<_>>(), [Some(true), Some(false)], "an int32 column widens to float64");

    // The request column is missing, or of a type that does not convert losslessly.
    let no_amount = entity_rows.project(&[0, 1]).unwrap();
    let err = get(Features::refs(["order_features:amount_x_conv"]), no_amount, false).await.unwrap_err().to_string();
    assert!(err.contains("no column \"order_amount\"") && err.contains("request field"), "{err}");
    let text_amount = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(vec![t]).with_timezone("UTC")) as ArrayRef),
        ("order_amount", Arc::new(StringArray::from(vec!["12"])) as ArrayRef),
    ])
    .unwrap();
    let err = get(Features::refs(["order_features:amount_x_conv"]), text_amount, false).await.unwrap_err().to_string();
    assert!(err.contains("\"order_amount\" is Utf8 (string)") && err.contains("declares it float64"), "{err}");
    // Unknown on-demand features say what exists.
    let err =
        get(Features::refs(["order_features:amount_x_con"]), entity_rows.clone(), false).await.unwrap_err().to_string();
    assert!(err.contains("did you mean \"order_features:amount_x_conv\""), "{err}");
    // A Parquet entity file carries the request fields too.
    write_parquet(&dir.path().join("entities.parquet"), &entity_rows);
    let from_file = |name: &str| {
        let (store, path) = (store.clone(), dir.path().join(name).display().to_string());
        async move {
            let features = Features::refs(["order_features:amount_x_conv"]);
            let batches = store
                .get_historical_features(EntityInput::Path(path), &features, &HistoricalOptions::default())
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            f64s(batches[0].column_by_name("amount_x_conv").unwrap())
        }
    };
    assert_eq!(from_file("entities.parquet").await, [Some(100.0), None, None]);
    // ... and a CSV one (whole numbers read as int64 are exact float64 values).
    std::fs::write(
        dir.path().join("entities.csv"),
        "driver_id,event_timestamp,order_amount\n1,2023-11-14T23:13:20Z,200\n2,2023-11-14T23:13:20Z,\n",
    )
    .unwrap();
    assert_eq!(from_file("entities.csv").await, [Some(100.0), None]);
}

#[tokio::test]
async fn serving_takes_request_data_beside_the_keys() {
    let (_dir, store) = orders_repo("").await;
    let t = 1_700_000_000_000_000i64;
    store
        .materialize_incremental(Utc.timestamp_micros(t + HOUR).unwrap(), &MaterializeOptions::default())
        .await
        .unwrap();
    let rows = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1, 2, 9])) as ArrayRef),
        ("order_amount", Arc::new(Float64Array::from(vec![Some(200.0), None, Some(5.0)])) as ArrayRef),
    ])
    .unwrap();
    let features = Features::refs(["order_features:amount_x_conv", "order_features:trips_or_zero"]);
    let out = store.get_online_features(&features, &rows, &OnlineOptions::default()).await.unwrap();
    assert_eq!(out.column_names(), ["driver_id", "amount_x_conv", "trips_or_zero"]);
    assert_eq!(f64s(out.values().column_by_name("amount_x_conv").unwrap()), [Some(100.0), None, None]);
    use FeatureStatus::*;
    let statuses: Vec<_> = (0..3).map(|r| out.status(r, "amount_x_conv").unwrap()).collect();
    assert_eq!(statuses, [Present, NullValue, NullValue]);
    // COALESCE gives a value for the unknown driver, with its input's status.
    let statuses: Vec<_> = (0..3).map(|r| out.status(r, "trips_or_zero").unwrap()).collect();
    assert_eq!(statuses, [Present, Present, NotFound]);
    assert_eq!(out.value(2, "trips_or_zero").unwrap(), feature_store::online::FeatureValue::Int(0));
    assert_eq!(out.event_timestamp(0, "trips_or_zero").unwrap(), Some(Utc.timestamp_micros(t).unwrap()));

    let err = store
        .get_online_features(&features, &rows.project(&[0]).unwrap(), &OnlineOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no column \"order_amount\""), "{err}");
    // A field of the view's request source that no requested feature reads
    // is accepted (one request shape for any feature) and not returned.
    let out = store
        .get_online_features(&Features::refs(["order_features:trips_or_zero"]), &rows, &OnlineOptions::default())
        .await
        .unwrap();
    assert_eq!(out.column_names(), ["driver_id", "trips_or_zero"]);
    // Without on-demand features it is an unknown column.
    let err = store
        .get_online_features(&Features::refs(["driver_hourly_stats:trips"]), &rows, &OnlineOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("column \"order_amount\" that is not a join key"), "{err}");
}

#[tokio::test]
async fn definitions_round_trip_through_the_registry() {
    let (_dir, store) = orders_repo("").await;
    let doc = store.document().await.unwrap();
    let defs = doc.project("demo").to_definitions();
    assert_eq!(defs.on_demand_feature_views.len(), 2);
    assert_eq!(defs.request_sources.len(), 1);
    let yaml = defs.to_yaml();
    let back = feature_store::Definitions::from_yaml(&yaml, "round.yaml").unwrap();
    assert_eq!(
        back.on_demand_feature_views.iter().map(|d| &d.value).collect::<Vec<_>>(),
        defs.on_demand_feature_views.iter().map(|d| &d.value).collect::<Vec<_>>()
    );
    // Applying the registry's own definitions changes nothing.
    let outcome = store.apply(&back, ApplyMode::Sync).await.unwrap();
    assert!(!outcome.written, "{}", outcome.plan);
    let described = store.describe("order_features").await.unwrap();
    assert_eq!(described.len(), 1);
}

/// `times_two(x float64)`: a user function returning float64 (or, for "another build", int64).
fn times_two(out: DataType) -> feature_store::expressions::datafusion::logical_expr::ScalarUDF {
    use feature_store::expressions::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let int = out == DataType::Int64;
    create_udf(
        "times_two",
        vec![DataType::Float64],
        out,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let a = args[0].to_array(1)?;
            let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
            let doubled: ArrayRef = if int {
                Arc::new(a.iter().map(|v| v.map(|v| (v * 2.0) as i64)).collect::<Int64Array>())
            } else {
                Arc::new(a.iter().map(|v| v.map(|v| v * 2.0)).collect::<Float64Array>())
            };
            Ok(ColumnarValue::Array(doubled))
        }),
    )
}

#[tokio::test]
async fn user_functions_are_recorded_and_required() {
    use feature_store::RegisterUdf;
    let defs = ORDER_DEFS.replace("COALESCE(trips, 0)", "CAST(times_two(order_amount) AS BIGINT)");
    let dir = crate::repo(&[("features.yaml", &defs)]);
    let store = feature_store::open(dir.path()).unwrap();
    // Without the function, apply says which one is missing.
    let err = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
    assert!(err.contains("feature \"trips_or_zero\"") && err.contains("times_two"), "{err}");
    store.register_udf(times_two(DataType::Float64)).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let view = store
        .list_on_demand_feature_views()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.spec.name == "order_features")
        .unwrap();
    assert_eq!(view.spec.udfs.len(), 1);
    assert_eq!(view.spec.udfs[0].to_string(), "times_two(Float64) -> Float64");

    let rows = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("order_amount", Arc::new(Float64Array::from(vec![21.0])) as ArrayRef),
    ])
    .unwrap();
    let features = Features::refs(["order_features:trips_or_zero"]);
    let out = store.get_online_features(&features, &rows, &OnlineOptions::default()).await.unwrap();
    assert_eq!(out.value(0, "trips_or_zero").unwrap(), feature_store::online::FeatureValue::Int(42));

    // Another process without the function: a clear error, for this view only.
    let other = feature_store::open(dir.path()).unwrap();
    let err = other.get_online_features(&features, &rows, &OnlineOptions::default()).await.unwrap_err().to_string();
    assert!(err.contains("calls times_two(Float64) -> Float64, which this process did not register"), "{err}");
    let plain = Features::refs(["driver_hourly_stats:conv_rate"]);
    other.get_online_features(&plain, &rows.project(&[0]).unwrap(), &OnlineOptions::default()).await.unwrap();
    // ... or with a different one.
    other.register_udf(times_two(DataType::Int64)).unwrap();
    let err = other.get_online_features(&features, &rows, &OnlineOptions::default()).await.unwrap_err().to_string();
    assert!(err.contains("was applied with the function times_two(Float64) -> Float64"), "{err}");
    assert!(err.contains("registers times_two(Float64) -> Int64"), "{err}");
    // Registering the right one later fixes it (compiled views are rebuilt).
    other.register_udf(times_two(DataType::Float64)).unwrap();
    let out = other.get_online_features(&features, &rows, &OnlineOptions::default()).await.unwrap();
    assert_eq!(out.value(0, "trips_or_zero").unwrap(), feature_store::online::FeatureValue::Int(42));

    // Built-in names and functions that are not pure are refused.
    let err = store.register_udf(abs_like()).unwrap_err().to_string();
    assert!(err.contains("a built-in function has that name"), "{err}");
}

fn abs_like() -> feature_store::expressions::datafusion::logical_expr::ScalarUDF {
    use feature_store::expressions::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    create_udf(
        "abs",
        vec![DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| Ok(args[0].clone())),
    )
}

/// An on-demand view over an aggregation view: training and serving agree at the same instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_an_aggregation_view_training_equals_serving() {
    let defs = "
entities: [{name: user, join_keys: [user_id]}]
sources: [{name: txns, path: data/txns.parquet, timestamp_field: event_timestamp}]
feature_views:
  - name: user_agg
    entities: [user]
    source: txns
    aggregation_interval: 5m
    aggregations:
      - {column: amount, function: sum, window: 1h}
      - {function: count, window: 1h}
request_sources:
  - name: req
    schema: [{name: amount, dtype: float64}]
on_demand_feature_views:
  - name: vs_history
    sources: [user_agg, req]
    features:
      - {name: share, dtype: float64, expression: \"req__amount / NULLIF(amount_sum_1h + req__amount, 0)\"}
      - {name: busy, dtype: bool, expression: \"count_1h >= 3\"}
";
    let minute = 60_000_000i64;
    let base = 1_767_225_600_000_000i64;
    let mut rng = StdRng::seed_from_u64(7);
    let n = 400;
    let users: Vec<i64> = (0..n).map(|_| rng.random_range(1..20)).collect();
    let times: Vec<i64> =
        (0..n).map(|_| base + rng.random_range(0..180) * minute + rng.random_range(0..60_000_000)).collect();
    let amounts: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..100.0)).collect();
    let data = RecordBatch::try_from_iter([
        ("user_id", Arc::new(Int64Array::from(users)) as ArrayRef),
        ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")) as ArrayRef),
        ("amount", Arc::new(Float64Array::from(amounts)) as ArrayRef),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: od\nregistry: data/registry.json\nonline_store: {type: sqlite, path: data/online.db}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("features.yaml"), defs).unwrap();
    write_parquet(&dir.path().join("data/txns.parquet"), &data);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let now = Utc.timestamp_micros(base + 150 * minute).unwrap();
    store
        .materialize(Utc.timestamp_micros(base - 60 * minute).unwrap(), now, &MaterializeOptions::default())
        .await
        .unwrap();

    let ids: ArrayRef = Arc::new(Int64Array::from((1..=25).collect::<Vec<_>>()));
    let amount: ArrayRef = Arc::new(Float64Array::from((1..=25).map(|i| i as f64 * 1.5).collect::<Vec<_>>()));
    let features = Features::refs(["vs_history"]);
    let online_rows =
        RecordBatch::try_from_iter([("user_id", Arc::clone(&ids)), ("amount", Arc::clone(&amount))]).unwrap();
    let online =
        store.get_online_features(&features, &online_rows, &OnlineOptions::default().with_now(now)).await.unwrap();
    let entity_rows = RecordBatch::try_from_iter([
        ("user_id", ids),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); 25]).with_timezone("UTC"))
                as ArrayRef,
        ),
        ("amount", amount),
    ])
    .unwrap();
    let offline = store
        .get_historical_features(EntityInput::batch(entity_rows), &features, &HistoricalOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    for name in ["share", "busy"] {
        let on = online.values().column_by_name(name).unwrap();
        let off = offline[0].column_by_name(name).unwrap();
        assert_same(name, on.as_ref(), off.as_ref());
    }
    let share = online.values().column_by_name("share").unwrap();
    assert!(share.null_count() < 10, "most users have events in the window");
}

/// A saved dataset records the on-demand views it computed, as defined
/// then: verification compiles the recorded definitions again and gets the
/// same rows; a changed definition or request field is named; a process
/// without a function the view calls gets a finding, not another output.
#[tokio::test]
async fn saved_datasets_record_and_recompute_on_demand_features() {
    use feature_store::RegisterUdf;
    let defs = ORDER_DEFS.replace("COALESCE(trips, 0)", "CAST(times_two(order_amount) AS BIGINT)");
    let dir = crate::repo(&[("features.yaml", &defs)]);
    let store = feature_store::open(dir.path()).unwrap();
    store.register_udf(times_two(DataType::Float64)).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let t = 1_700_000_000_000_000i64 + HOUR;
    let rows = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1, 2, 3, 1])) as ArrayRef),
        ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(vec![t; 4]).with_timezone("UTC")) as ArrayRef),
        ("order_amount", Arc::new(Float64Array::from(vec![Some(200.0), None, Some(50.0), Some(1.5)])) as ArrayRef),
    ])
    .unwrap();
    let features = Features::refs(["order_features:amount_x_conv", "driver_hourly_stats:city", "order_features"]);
    let opts = HistoricalOptions::default();
    let m = store.save_dataset("d", EntityInput::batch(rows.clone()), &features, &opts, None).await.unwrap();
    assert_eq!(
        m.features,
        [
            "driver_hourly_stats:city",
            "order_features:amount_x_conv",
            "order_features:big_order",
            "order_features:trips_or_zero"
        ]
    );
    assert_eq!(m.on_demand.len(), 1);
    assert_eq!(m.on_demand[0].output_names, ["amount_x_conv", "big_order", "trips_or_zero"]);

    // The stored output holds what a retrieval returns, hidden inputs left out.
    let retrieved = store.get_historical_features(EntityInput::batch(rows.clone()), &features, &opts).await.unwrap();
    let retrieved = retrieved.collect().await.unwrap();
    let stored = store.read_dataset("d").await.unwrap().collect().await.unwrap();
    let names = |b: &RecordBatch| b.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    assert_eq!(names(&stored[0]), names(&retrieved[0]));
    assert!(!names(&stored[0]).iter().any(|n| n.contains("trips") && n != "trips_or_zero"), "{:?}", names(&stored[0]));
    for name in ["amount_x_conv", "big_order", "trips_or_zero"] {
        let concat = |b: &[RecordBatch]| {
            let cols: Vec<ArrayRef> = b.iter().map(|b| Arc::clone(b.column_by_name(name).unwrap())).collect();
            arrow::compute::concat(&cols.iter().map(|c| c.as_ref()).collect::<Vec<_>>()).unwrap()
        };
        assert_eq!(concat(&stored).to_data(), concat(&retrieved).to_data(), "{name}");
    }
    let v = store.verify_dataset("d").await.unwrap();
    assert!(v.identical(), "{v}");

    // New definitions: named, while the recorded ones still recompute the same rows.
    let changed = defs
        .replace("order_amount * conv_rate", "order_amount * conv_rate * 2")
        .replace("{name: order_lat, dtype: float64}", "{name: order_lat, dtype: float32}");
    std::fs::write(dir.path().join("features.yaml"), &changed).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let v = store.verify_dataset("d").await.unwrap();
    assert_eq!(v.reproducible, Some(true), "{v}");
    let findings: Vec<String> = v.findings.iter().map(|f| format!("{} {}: {}", f.kind, f.subject, f.detail)).collect();
    assert_eq!(findings.len(), 1, "{v}");
    assert!(findings[0].starts_with("definition on_demand_feature_view order_features: changed"), "{v}");
    // order_lat is not read by the requested features; order_amount is.
    std::fs::write(
        dir.path().join("features.yaml"),
        changed.replace("{name: order_amount, dtype: float64}", "{name: order_amount, dtype: float32}"),
    )
    .unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let v = store.verify_dataset("d").await.unwrap();
    assert!(
        v.findings.iter().any(|f| f.subject == "request_source order_request"
            && f.detail == "field \"order_amount\" changed: float64 -> float32"),
        "{v}"
    );
    assert_eq!(v.reproducible, Some(true), "{v}");

    // A process without the function: not recomputed, and said why.
    let other = feature_store::open(dir.path()).unwrap();
    let v = other.verify_dataset("d").await.unwrap();
    assert_eq!(v.reproducible, None, "{v}");
    let why = v.findings.iter().find(|f| f.kind == "recomputed").map(|f| f.detail.clone()).unwrap_or_default();
    assert!(why.contains("not recomputed") && why.contains("times_two"), "{v}");
}

/// The projection a retrieval hands the offline store: written as a folder
/// (computed inside the plan, before the writer), and sent to another
/// process as definitions that compile again there, or fail naming the view.
#[tokio::test]
async fn on_demand_features_in_folder_outputs_and_across_processes() {
    use feature_store::RegisterUdf;
    use feature_store::on_demand::OnDemandProjection;
    let (dir, store) = orders_repo("").await;
    let t = 1_700_000_000_000_000i64 + HOUR;
    let rows = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1, 2, 3, 1])) as ArrayRef),
        ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(vec![t; 4]).with_timezone("UTC")) as ArrayRef),
        ("order_amount", Arc::new(Float64Array::from(vec![Some(200.0), None, Some(50.0), Some(1.5)])) as ArrayRef),
    ])
    .unwrap();
    let features = Features::refs(["order_features", "driver_hourly_stats:city"]);
    let opts = HistoricalOptions::default();
    let batches = store
        .get_historical_features(EntityInput::batch(rows.clone()), &features, &opts)
        .await
        .unwrap()
        .collect()
        .await;
    let batches = batches.unwrap();
    let expected = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(expected.num_rows(), 4);
    let folder = format!("{}/training/", dir.path().display());
    let written = store
        .write_historical_features(EntityInput::batch(rows.clone()), &features, &opts, &folder, Some(3))
        .await
        .unwrap();
    assert_eq!((written.rows, written.files.len()), (4, 2));
    let mut got = Vec::new();
    for f in &written.files {
        let file = std::fs::File::open(dir.path().join("training").join(&f.file)).unwrap();
        got.extend(
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap().map(Result::unwrap),
        );
    }
    let got = arrow::compute::concat_batches(&expected.schema(), &got).unwrap();
    assert_eq!(got, expected, "the folder's rows differ from the stream's");

    // Another process compiles the same definitions again.
    let request = store.historical_request(EntityInput::batch(rows.clone()), &features, &opts).await.unwrap();
    let projection = request.on_demand.expect("the request carries the on-demand features");
    let json = projection.to_json();
    let engine = feature_store::expressions::DataFusionEngine::new();
    let again = OnDemandProjection::from_json(&json, &engine).unwrap();
    assert_eq!(again.to_json(), json);
    assert_eq!(again.output_fields(), projection.output_fields());
    assert!(OnDemandProjection::from_json("{not json", &engine).unwrap_err().to_string().contains("malformed"));

    // ... or says which view it cannot compile: a function only the first process has.
    let defs = ORDER_DEFS.replace("COALESCE(trips, 0)", "CAST(times_two(order_amount) AS BIGINT)");
    let dir = crate::repo(&[("features.yaml", &defs)]);
    let store = feature_store::open(dir.path()).unwrap();
    store.register_udf(times_two(DataType::Float64)).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let request = store.historical_request(EntityInput::batch(rows), &features, &opts).await.unwrap();
    let json = request.on_demand.unwrap().to_json();
    let err = OnDemandProjection::from_json(&json, &engine).unwrap_err().to_string();
    assert!(err.contains("\"order_features\"") && err.contains("times_two"), "{err}");
}
