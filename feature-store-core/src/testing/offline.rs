//! The offline store contract, one behaviour per function, checked against
//! exact expected tables and, on random data, against the plain reference
//! join of [`MemoryOfflineStore`] (the oracle). A backend provides an
//! [`OfflineFixture`] that stores a source's rows the way the backend reads
//! them (Parquet files, memory tables); [`offline_store_suite!`](crate::offline_store_suite)
//! makes one test per behaviour.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::historical::{EntityInput, HistoricalRequest, ViewRequest};
use crate::model::{DataSource, FeatureView, JoinKey};
use crate::offline::{LatestRequest, MemoryOfflineStore, OfflineStore};
use crate::{ValueType, timestamp_type};

/// Stores sources' rows for a backend and opens the backend over them.
#[async_trait]
pub trait OfflineFixture: Send + Sync {
    /// Stores `batches` as the whole data of a new source called `name`
    /// and returns the `path` the source's definition uses.
    async fn put_source(&self, name: &str, batches: Vec<RecordBatch>) -> String;

    /// The store under test, reading what was put.
    fn store(&self) -> Arc<dyn OfflineStore>;
}

/// The reference backend as a fixture: sources are memory tables.
#[derive(Debug, Default)]
pub struct MemoryFixture {
    store: Arc<MemoryOfflineStore>,
}

#[async_trait]
impl OfflineFixture for MemoryFixture {
    async fn put_source(&self, name: &str, batches: Vec<RecordBatch>) -> String {
        let schema = batches.first().expect("at least one batch").schema();
        self.store.insert(name, schema, batches);
        name.to_owned()
    }

    fn store(&self) -> Arc<dyn OfflineStore> {
        Arc::clone(&self.store) as _
    }
}

/// Asserts that `batches` print as `expected` (arrow's pretty format), so a
/// failure shows both tables.
pub fn assert_batches_eq(expected: &[&str], batches: &[RecordBatch]) {
    let actual = arrow_cast::pretty::pretty_format_batches(batches).expect("printable batches").to_string();
    let actual: Vec<&str> = actual.trim().lines().collect();
    assert_eq!(
        expected,
        actual.as_slice(),
        "\n\nexpected:\n{}\n\nactual:\n{}\n",
        expected.join("\n"),
        actual.join("\n")
    );
}

fn micros(s: i64) -> i64 {
    s * 1_000_000
}

fn ts_field(name: &str) -> Field {
    Field::new(name, timestamp_type(), true)
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("valid batch")
}

/// Source rows `(driver_id, event second, conv_rate)`.
fn driver_rows(rows: &[(Option<i64>, Option<i64>, Option<f32>)]) -> RecordBatch {
    batch(
        vec![
            Field::new("driver_id", DataType::Int64, true),
            ts_field("event_timestamp"),
            Field::new("conv_rate", DataType::Float32, true),
        ],
        vec![
            Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.1.map(micros)).collect::<TimestampMicrosecondArray>().with_timezone("UTC")),
            Arc::new(rows.iter().map(|r| r.2).collect::<Float32Array>()),
        ],
    )
}

/// Entity rows `(driver_id, event second)`.
fn entity_rows(rows: &[(Option<i64>, Option<i64>)]) -> RecordBatch {
    batch(
        vec![Field::new("driver_id", DataType::Int64, true), ts_field("event_timestamp")],
        vec![
            Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.1.map(micros)).collect::<TimestampMicrosecondArray>().with_timezone("UTC")),
        ],
    )
}

fn source(name: &str, path: &str) -> DataSource {
    DataSource::builder(name, path, "event_timestamp").build().expect("valid source")
}

fn view(name: &str, src: &DataSource, features: &[(&str, ValueType)], ttl_secs: Option<u64>) -> FeatureView {
    let mut b = FeatureView::builder(name, &src.name).entity("driver");
    for (f, t) in features {
        b = b.feature(*f, t.clone());
    }
    if let Some(s) = ttl_secs {
        b = b.ttl(std::time::Duration::from_secs(s));
    }
    b.build().expect("valid view")
}

fn request(view: &FeatureView, source: &DataSource, keys: &[&str], full_names: bool) -> ViewRequest {
    let features: Vec<String> = view.schema.iter().map(|f| f.name.clone()).collect();
    let output_names =
        features.iter().map(|f| if full_names { format!("{}__{f}", view.name) } else { f.clone() }).collect();
    ViewRequest {
        view: view.clone(),
        source: source.clone(),
        join_keys: keys.iter().map(|k| JoinKey::new(*k, None)).collect(),
        features,
        output_names,
    }
}

async fn retrieve(store: &dyn OfflineStore, entities: RecordBatch, views: Vec<ViewRequest>) -> Vec<RecordBatch> {
    let sources = views.iter().map(|v| v.source.clone()).collect();
    let request = HistoricalRequest {
        entities: EntityInput::batch(entities),
        views,
        timestamp_column: "event_timestamp".into(),
        sources,
        on_demand: None,
    };
    let batches = store.get_historical_features(request).await.expect("retrieval").collect().await.expect("stream");
    batches.into_iter().filter(|b| b.num_rows() > 0).collect()
}

/// The source's columns, with their stored types.
pub async fn source_schema_reports_columns(fixture: &dyn OfflineFixture) {
    let path = fixture.put_source("driver_stats", vec![driver_rows(&[(Some(1), Some(10), Some(0.5))])]).await;
    let schema = fixture.store().source_schema(&source("driver_stats", &path)).await.expect("schema");
    let cols: Vec<(String, DataType)> =
        schema.schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    assert_eq!(
        cols,
        vec![
            ("driver_id".to_owned(), DataType::Int64),
            ("event_timestamp".to_owned(), timestamp_type()),
            ("conv_rate".to_owned(), DataType::Float32)
        ]
    );
    assert!(schema.partition_columns.is_empty());
}

/// A source that holds nothing at its path is an error naming the source.
pub async fn missing_source_is_an_error_naming_it(fixture: &dyn OfflineFixture) {
    let path = fixture.put_source("present", vec![driver_rows(&[(Some(1), Some(10), Some(0.5))])]).await;
    let missing = source("absent_stats", &format!("{path}_absent"));
    let err = fixture.store().source_schema(&missing).await.expect_err("no data there").to_string();
    assert!(err.contains("absent_stats"), "the error names the source: {err}");
}

/// Each entity row gets the newest source row of its key at or before its
/// time (equal times included); no such row, or an unknown key, gives nulls.
pub async fn as_of_picks_the_newest_row_at_or_before(fixture: &dyn OfflineFixture) {
    let path = fixture
        .put_source(
            "driver_stats",
            vec![driver_rows(&[
                (Some(1), Some(10), Some(1.0)),
                (Some(1), Some(20), Some(2.0)),
                (Some(2), Some(15), Some(5.0)),
            ])],
        )
        .await;
    let src = source("driver_stats", &path);
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], None);
    let entities = entity_rows(&[
        (Some(1), Some(5)),
        (Some(1), Some(10)),
        (Some(1), Some(19)),
        (Some(1), Some(25)),
        (Some(2), Some(100)),
        (Some(3), Some(100)),
    ]);
    let out = retrieve(fixture.store().as_ref(), entities, vec![request(&v, &src, &["driver_id"], false)]).await;
    assert_batches_eq(
        &[
            "+-----------+----------------------+-----------+",
            "| driver_id | event_timestamp      | conv_rate |",
            "+-----------+----------------------+-----------+",
            "| 1         | 1970-01-01T00:00:05Z |           |",
            "| 1         | 1970-01-01T00:00:10Z | 1.0       |",
            "| 1         | 1970-01-01T00:00:19Z | 1.0       |",
            "| 1         | 1970-01-01T00:00:25Z | 2.0       |",
            "| 2         | 1970-01-01T00:01:40Z | 5.0       |",
            "| 3         | 1970-01-01T00:01:40Z |           |",
            "+-----------+----------------------+-----------+",
        ],
        &out,
    );
}

/// A view's ttl bounds the age of a value, both bounds inclusive.
pub async fn ttl_bounds_are_inclusive(fixture: &dyn OfflineFixture) {
    let path = fixture.put_source("driver_stats", vec![driver_rows(&[(Some(1), Some(100), Some(1.0))])]).await;
    let src = source("driver_stats", &path);
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], Some(10));
    let entities =
        entity_rows(&[(Some(1), Some(99)), (Some(1), Some(100)), (Some(1), Some(110)), (Some(1), Some(111))]);
    let out = retrieve(fixture.store().as_ref(), entities, vec![request(&v, &src, &["driver_id"], false)]).await;
    assert_batches_eq(
        &[
            "+-----------+----------------------+-----------+",
            "| driver_id | event_timestamp      | conv_rate |",
            "+-----------+----------------------+-----------+",
            "| 1         | 1970-01-01T00:01:39Z |           |",
            "| 1         | 1970-01-01T00:01:40Z | 1.0       |",
            "| 1         | 1970-01-01T00:01:50Z | 1.0       |",
            "| 1         | 1970-01-01T00:01:51Z |           |",
            "+-----------+----------------------+-----------+",
        ],
        &out,
    );
}

/// Equal event times go to the greatest created time (null lowest), then to
/// the greatest feature values.
pub async fn ties_go_to_created_time_then_values(fixture: &dyn OfflineFixture) {
    let rows = batch(
        vec![
            Field::new("driver_id", DataType::Int64, true),
            ts_field("event_timestamp"),
            ts_field("created"),
            Field::new("conv_rate", DataType::Float32, true),
        ],
        vec![
            Arc::new(Int64Array::from(vec![1, 1, 1, 2, 2, 3, 3])),
            Arc::new(TimestampMicrosecondArray::from(vec![micros(10); 7]).with_timezone("UTC")),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(micros(2)),
                    Some(micros(3)),
                    None,
                    Some(micros(1)),
                    Some(micros(1)),
                    None,
                    Some(micros(0)),
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(Float32Array::from(vec![Some(9.0), Some(1.0), Some(99.0), Some(3.0), Some(4.0), Some(7.0), None])),
        ],
    );
    let path = fixture.put_source("driver_stats", vec![rows]).await;
    let src = DataSource::builder("driver_stats", &path, "event_timestamp")
        .created_timestamp_field("created")
        .build()
        .expect("source");
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], None);
    let entities = entity_rows(&[(Some(1), Some(10)), (Some(2), Some(10)), (Some(3), Some(10))]);
    let out = retrieve(fixture.store().as_ref(), entities, vec![request(&v, &src, &["driver_id"], false)]).await;
    assert_batches_eq(
        &[
            "+-----------+----------------------+-----------+",
            "| driver_id | event_timestamp      | conv_rate |",
            "+-----------+----------------------+-----------+",
            "| 1         | 1970-01-01T00:00:10Z | 1.0       |",
            "| 2         | 1970-01-01T00:00:10Z | 4.0       |",
            "| 3         | 1970-01-01T00:00:10Z |           |",
            "+-----------+----------------------+-----------+",
        ],
        &out,
    );
}

/// One output row per entity row, in input order, duplicates kept, every
/// entity column carried along unchanged.
pub async fn output_keeps_entity_rows_order_and_columns(fixture: &dyn OfflineFixture) {
    let path = fixture
        .put_source(
            "driver_stats",
            vec![driver_rows(&[(Some(1), Some(10), Some(1.0)), (Some(2), Some(10), Some(2.0))])],
        )
        .await;
    let src = source("driver_stats", &path);
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], None);
    let entities = batch(
        vec![
            Field::new("order_id", DataType::Utf8, true),
            Field::new("driver_id", DataType::Int64, true),
            ts_field("event_timestamp"),
        ],
        vec![
            Arc::new(StringArray::from(vec!["c", "a", "b", "a"])),
            Arc::new(Int64Array::from(vec![2, 1, 2, 1])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![micros(30), micros(20), micros(5), micros(20)])
                    .with_timezone("UTC"),
            ),
        ],
    );
    let out = retrieve(fixture.store().as_ref(), entities, vec![request(&v, &src, &["driver_id"], false)]).await;
    assert_batches_eq(
        &[
            "+----------+-----------+----------------------+-----------+",
            "| order_id | driver_id | event_timestamp      | conv_rate |",
            "+----------+-----------+----------------------+-----------+",
            "| c        | 2         | 1970-01-01T00:00:30Z | 2.0       |",
            "| a        | 1         | 1970-01-01T00:00:20Z | 1.0       |",
            "| b        | 2         | 1970-01-01T00:00:05Z |           |",
            "| a        | 1         | 1970-01-01T00:00:20Z | 1.0       |",
            "+----------+-----------+----------------------+-----------+",
        ],
        &out,
    );
}

/// Null keys and null times never match, on either side.
pub async fn null_keys_and_times_match_nothing(fixture: &dyn OfflineFixture) {
    let path = fixture
        .put_source(
            "driver_stats",
            vec![driver_rows(&[
                (None, Some(10), Some(9.0)),
                (Some(1), None, Some(8.0)),
                (Some(1), Some(10), Some(1.0)),
            ])],
        )
        .await;
    let src = source("driver_stats", &path);
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], None);
    let entities = entity_rows(&[(None, Some(20)), (Some(1), None), (Some(1), Some(20))]);
    let out = retrieve(fixture.store().as_ref(), entities, vec![request(&v, &src, &["driver_id"], false)]).await;
    assert_batches_eq(
        &[
            "+-----------+----------------------+-----------+",
            "| driver_id | event_timestamp      | conv_rate |",
            "+-----------+----------------------+-----------+",
            "|           | 1970-01-01T00:00:20Z |           |",
            "| 1         |                      |           |",
            "| 1         | 1970-01-01T00:00:20Z | 1.0       |",
            "+-----------+----------------------+-----------+",
        ],
        &out,
    );
}

/// Timestamps of any unit and zone compare as instants; naive ones are UTC.
pub async fn instants_compare_across_units_and_zones(fixture: &dyn OfflineFixture) {
    // Source: naive nanoseconds; entity rows: milliseconds at +02:00.
    let rows = batch(
        vec![
            Field::new("driver_id", DataType::Int64, true),
            Field::new("event_timestamp", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("conv_rate", DataType::Float32, true),
        ],
        vec![
            Arc::new(Int64Array::from(vec![1, 1])),
            Arc::new(TimestampNanosecondArray::from(vec![10_000_000_001, 20_000_000_000])),
            Arc::new(Float32Array::from(vec![1.0, 2.0])),
        ],
    );
    let path = fixture.put_source("driver_stats", vec![rows]).await;
    let src = source("driver_stats", &path);
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], None);
    let entities = batch(
        vec![
            Field::new("driver_id", DataType::Int64, true),
            Field::new("event_timestamp", DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())), true),
        ],
        vec![
            Arc::new(Int64Array::from(vec![1, 1, 1])),
            Arc::new(TimestampMillisecondArray::from(vec![10_000, 10_001, 20_000]).with_timezone("+02:00")),
        ],
    );
    let out = retrieve(fixture.store().as_ref(), entities, vec![request(&v, &src, &["driver_id"], false)]).await;
    assert_batches_eq(
        &[
            "+-----------+-------------------------------+-----------+",
            "| driver_id | event_timestamp               | conv_rate |",
            "+-----------+-------------------------------+-----------+",
            "| 1         | 1970-01-01T02:00:10+02:00     |           |",
            "| 1         | 1970-01-01T02:00:10.001+02:00 | 1.0       |",
            "| 1         | 1970-01-01T02:00:20+02:00     | 2.0       |",
            "+-----------+-------------------------------+-----------+",
        ],
        &out,
    );
}

/// Several views in one request, named `view__feature` on request, and a
/// view without entities (its newest row for every entity row).
pub async fn several_views_and_a_view_without_entities(fixture: &dyn OfflineFixture) {
    let stats = fixture
        .put_source(
            "driver_stats",
            vec![driver_rows(&[(Some(1), Some(10), Some(1.0)), (Some(2), Some(10), Some(2.0))])],
        )
        .await;
    let global = batch(
        vec![ts_field("event_timestamp"), Field::new("total", DataType::Int64, true)],
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![micros(5), micros(15)]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![100, 200])),
        ],
    );
    let global = fixture.put_source("global_stats", vec![global]).await;
    let (s1, s2) = (source("driver_stats", &stats), source("global_stats", &global));
    let v1 = view("stats", &s1, &[("conv_rate", ValueType::Float32)], None);
    let v2 = FeatureView::builder("global", "global_stats").feature("total", ValueType::Int64).build().expect("view");
    let entities = entity_rows(&[(Some(1), Some(12)), (Some(2), Some(20))]);
    let views = vec![request(&v1, &s1, &["driver_id"], true), request(&v2, &s2, &[], true)];
    let out = retrieve(fixture.store().as_ref(), entities, views).await;
    assert_batches_eq(
        &[
            "+-----------+----------------------+------------------+---------------+",
            "| driver_id | event_timestamp      | stats__conv_rate | global__total |",
            "+-----------+----------------------+------------------+---------------+",
            "| 1         | 1970-01-01T00:00:12Z | 1.0              | 100           |",
            "| 2         | 1970-01-01T00:00:20Z | 2.0              | 200           |",
            "+-----------+----------------------+------------------+---------------+",
        ],
        &out,
    );
}

/// Composite join keys match on every key column.
pub async fn composite_keys_match_on_every_column(fixture: &dyn OfflineFixture) {
    let rows = batch(
        vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("store_id", DataType::Int64, true),
            ts_field("event_timestamp"),
            Field::new("sales", DataType::Int64, true),
        ],
        vec![
            Arc::new(StringArray::from(vec!["eu", "eu", "us"])),
            Arc::new(Int64Array::from(vec![1, 2, 1])),
            Arc::new(TimestampMicrosecondArray::from(vec![micros(1); 3]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![10, 20, 30])),
        ],
    );
    let path = fixture.put_source("store_stats", vec![rows]).await;
    let src = source("store_stats", &path);
    let v = FeatureView::builder("stores", "store_stats")
        .entity("store")
        .feature("sales", ValueType::Int64)
        .build()
        .expect("view");
    let entities = batch(
        vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("store_id", DataType::Int64, true),
            ts_field("event_timestamp"),
        ],
        vec![
            Arc::new(StringArray::from(vec!["us", "eu", "us"])),
            Arc::new(Int64Array::from(vec![1, 2, 2])),
            Arc::new(TimestampMicrosecondArray::from(vec![micros(5); 3]).with_timezone("UTC")),
        ],
    );
    let out =
        retrieve(fixture.store().as_ref(), entities, vec![request(&v, &src, &["region", "store_id"], false)]).await;
    assert_batches_eq(
        &[
            "+--------+----------+----------------------+-------+",
            "| region | store_id | event_timestamp      | sales |",
            "+--------+----------+----------------------+-------+",
            "| us     | 1        | 1970-01-01T00:00:05Z | 30    |",
            "| eu     | 2        | 1970-01-01T00:00:05Z | 20    |",
            "| us     | 2        | 1970-01-01T00:00:05Z |       |",
            "+--------+----------+----------------------+-------+",
        ],
        &out,
    );
}

/// A small deterministic generator (no dependency needed for test data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// On random data with many ties, duplicates, nulls and a ttl, the backend
/// gives exactly the reference join's output, split over several files.
pub async fn random_data_matches_the_reference(fixture: &dyn OfflineFixture) {
    for seed in 1..=4u64 {
        let mut rng = Lcg(seed);
        let mut parts = Vec::new();
        for _ in 0..3 {
            let rows: Vec<(Option<i64>, Option<i64>, Option<f32>)> = (0..400)
                .map(|_| {
                    let key = (rng.next(20) != 0).then(|| rng.next(40) as i64);
                    let t = (rng.next(30) != 0).then(|| rng.next(200) as i64);
                    let v = (rng.next(10) != 0).then(|| rng.next(8) as f32 / 4.0);
                    (key, t, v)
                })
                .collect();
            parts.push(driver_rows(&rows));
        }
        let name = format!("random_{seed}");
        let path = fixture.put_source(&name, parts.clone()).await;
        let reference = MemoryOfflineStore::new();
        reference.insert(name.as_str(), parts[0].schema(), parts);
        let ttl = (seed % 2 == 0).then_some(30);
        let entities: Vec<(Option<i64>, Option<i64>)> = (0..500)
            .map(|_| {
                ((rng.next(25) != 0).then(|| rng.next(45) as i64), (rng.next(25) != 0).then(|| rng.next(220) as i64))
            })
            .collect();
        let entities = entity_rows(&entities);
        let src = source(&name, &path);
        let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], ttl);
        let got =
            retrieve(fixture.store().as_ref(), entities.clone(), vec![request(&v, &src, &["driver_id"], false)]).await;
        let src = source(&name, &name);
        let want = retrieve(&reference, entities, vec![request(&v, &src, &["driver_id"], false)]).await;
        let show = |b: &[RecordBatch]| arrow_cast::pretty::pretty_format_batches(b).expect("printable").to_string();
        assert_eq!(show(&got), show(&want), "seed {seed}: the backend differs from the reference join");
    }
}

/// An aggregation view over `source` with its schema derived from `inputs`
/// (column name to type), as apply derives it.
pub fn aggregation_view(
    name: &str,
    source: &str,
    aggregations: Vec<crate::model::Aggregation>,
    interval: Option<std::time::Duration>,
    inputs: &[(&str, ValueType)],
) -> FeatureView {
    let mut b = FeatureView::builder(name, source).entity("driver").online(interval.is_some());
    for a in aggregations {
        b = b.aggregation(a);
    }
    if let Some(i) = interval {
        b = b.aggregation_interval(i);
    }
    let mut v = b.build().expect("valid aggregation view");
    v.schema = v
        .aggregations
        .iter()
        .map(|a| {
            let input = a.column.as_ref().map(|c| inputs.iter().find(|(n, _)| n == c).expect("input column").1.clone());
            crate::model::Field::new(a.output_name(), a.output_type(input.as_ref()).expect("valid aggregation"))
        })
        .collect();
    v
}

/// Event rows `(driver_id, event µs, created µs, amount, qty, merchant)`.
type EventRow = (Option<i64>, Option<i64>, Option<i64>, Option<f64>, Option<i64>, Option<&'static str>);

fn event_rows(rows: &[EventRow]) -> RecordBatch {
    batch(
        vec![
            Field::new("driver_id", DataType::Int64, true),
            ts_field("event_timestamp"),
            ts_field("created"),
            Field::new("amount", DataType::Float64, true),
            Field::new("qty", DataType::Int64, true),
            Field::new("merchant", DataType::Utf8, true),
        ],
        vec![
            Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.1).collect::<TimestampMicrosecondArray>().with_timezone("UTC")),
            Arc::new(rows.iter().map(|r| r.2).collect::<TimestampMicrosecondArray>().with_timezone("UTC")),
            Arc::new(rows.iter().map(|r| r.3).collect::<arrow_array::Float64Array>()),
            Arc::new(rows.iter().map(|r| r.4).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.5).collect::<StringArray>()),
        ],
    )
}

const EVENT_INPUTS: [(&str, ValueType); 3] =
    [("amount", ValueType::Float64), ("qty", ValueType::Int64), ("merchant", ValueType::String)];

/// Every function over the event columns, with windows of 10 s, 30 s and 60 s.
fn every_aggregation() -> Vec<crate::model::Aggregation> {
    use crate::model::{AggregateFunction as F, Aggregation};
    let w = std::time::Duration::from_secs;
    vec![
        Aggregation::count_rows(w(30)),
        Aggregation::new("amount", F::Count, w(10)),
        Aggregation::new("amount", F::Sum, w(30)),
        Aggregation::new("qty", F::Sum, w(60)),
        Aggregation::new("amount", F::Mean, w(60)),
        Aggregation::new("qty", F::Mean, w(10)),
        Aggregation::new("amount", F::Min, w(30)),
        Aggregation::new("merchant", F::Max, w(60)),
        Aggregation::new("amount", F::Stddev, w(60)),
        Aggregation::new("qty", F::Variance, w(30)),
        Aggregation::new("merchant", F::First, w(30)),
        Aggregation::new("amount", F::Last, w(10)),
        Aggregation::new("qty", F::LastN, w(60)).with_n(3),
        Aggregation::new("merchant", F::CountDistinct, w(60)),
        Aggregation::new("qty", F::ApproxCountDistinct, w(30)),
    ]
}

/// The aggregates of `view` at each entity row by the definition: a scan of
/// every event (see [`crate::aggregation::reference`]), independent of any store.
fn aggregates_by_definition(view: &FeatureView, events: &[RecordBatch], entities: &RecordBatch) -> Vec<ArrayRef> {
    use arrow_array::Array;

    use crate::aggregation::{KeyEvents, Order, Output, ValueReader, WindowSpec, outputs_to_array, reference};
    let all = arrow_select::concat::concat_batches(&events[0].schema(), events).expect("concat");
    let ints = |c: &ArrayRef| c.as_any().downcast_ref::<Int64Array>().expect("int64").clone();
    let times = |c: &ArrayRef| c.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("µs").clone();
    let (keys, event_ts, created) = (ints(all.column(0)), times(all.column(1)), times(all.column(2)));
    let (entity_keys, entity_ts) = (ints(entities.column(0)), times(entities.column(1)));
    let us = |d: std::time::Duration| d.as_micros() as i64;
    view.aggregations
        .iter()
        .map(|a| {
            let reader = a
                .column
                .as_ref()
                .map(|c| ValueReader::new(Arc::clone(all.column_by_name(c).expect("column")), c).expect("reader"));
            let input = a.column.as_ref().map(|c| EVENT_INPUTS.iter().find(|(n, _)| n == c).expect("input").1.clone());
            let spec = WindowSpec {
                function: a.function,
                input: input.clone(),
                n: a.n,
                window: us(a.window),
                interval: view.aggregation_interval.map(us),
            };
            let outputs: Vec<Output> = (0..entities.num_rows())
                .map(|i| {
                    if entity_keys.is_null(i) || entity_ts.is_null(i) {
                        return Output::Null;
                    }
                    let mut mine: Vec<(Order, Option<crate::aggregation::Value>)> = (0..all.num_rows())
                        .filter(|j| {
                            keys.is_valid(*j) && event_ts.is_valid(*j) && keys.value(*j) == entity_keys.value(i)
                        })
                        .map(|j| {
                            let order = Order {
                                time: event_ts.value(j),
                                created: created.is_valid(j).then(|| created.value(j)),
                            };
                            (order, reader.as_ref().and_then(|r| r.get(j)))
                        })
                        .collect();
                    mine.sort();
                    let (orders, values): (Vec<Order>, Vec<_>) = mine.into_iter().unzip();
                    let values: &[Option<crate::aggregation::Value>] = if input.is_some() { &values } else { &[] };
                    reference::aggregate_at(&KeyEvents { orders: &orders, values }, &spec, entity_ts.value(i))
                        .expect("aggregate")
                })
                .collect();
            let dtype = a.output_type(input.as_ref()).expect("type");
            outputs_to_array(&outputs, &dtype).expect("column")
        })
        .collect()
}

/// Compares float columns within 1e-9 relative (NaN equal to NaN), others
/// exactly: how aggregates from different paths are compared.
pub fn assert_columns_close(what: &str, name: &str, got: &ArrayRef, want: &ArrayRef) {
    use arrow_array::Array;
    assert_eq!(got.data_type(), want.data_type(), "{what}: column {name} type");
    if let (Some(g), Some(w)) = (
        got.as_any().downcast_ref::<arrow_array::Float64Array>(),
        want.as_any().downcast_ref::<arrow_array::Float64Array>(),
    ) {
        for i in 0..g.len() {
            let (a, b) = (g.is_valid(i).then(|| g.value(i)), w.is_valid(i).then(|| w.value(i)));
            let ok = match (a, b) {
                (Some(x), Some(y)) => {
                    x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * y.abs().max(1e-300)
                }
                (x, y) => x.is_none() && y.is_none(),
            };
            assert!(ok, "{what}: column {name}, row {i}: got {a:?}, want {b:?}");
        }
        return;
    }
    assert_eq!(got.as_ref(), want.as_ref(), "{what}: column {name}");
}

/// Aggregation views, continuous and hopping, on random events split over
/// several files (keys, times and created times with nulls and ties, values
/// with nulls), at random entity times and on window bounds: every function
/// equals its definition, computed here by a scan of every event.
pub async fn random_aggregations_match_the_definition(fixture: &dyn OfflineFixture) {
    const MERCHANTS: [&str; 5] = ["a", "b", "c", "d", "é"];
    for seed in 1..=4u64 {
        let mut rng = Lcg(seed * 7919);
        let mut parts = Vec::new();
        let mut event_times = Vec::new();
        for _ in 0..3 {
            let rows: Vec<EventRow> = (0..300)
                .map(|_| {
                    let key = (rng.next(25) != 0).then(|| rng.next(12) as i64);
                    let t = (rng.next(30) != 0)
                        .then(|| micros(rng.next(150) as i64) + [0, 1, 500_000][rng.next(3) as usize]);
                    let created = (rng.next(2) == 0).then(|| micros(rng.next(4) as i64));
                    let amount = (rng.next(8) != 0).then(|| match rng.next(50) {
                        0 => f64::NAN,
                        1 => 1e6 + rng.next(4) as f64,
                        _ => rng.next(16) as f64 * 0.25 - 1.0,
                    });
                    let qty = (rng.next(8) != 0).then(|| rng.next(7) as i64 - 2);
                    let merchant = (rng.next(8) != 0).then(|| MERCHANTS[rng.next(5) as usize]);
                    if let Some(t) = t {
                        event_times.push(t);
                    }
                    (key, t, created, amount, qty, merchant)
                })
                .collect();
            parts.push(event_rows(&rows));
        }
        let name = format!("events_{seed}");
        let path = fixture.put_source(&name, parts.clone()).await;
        let src = DataSource::builder(&name, &path, "event_timestamp")
            .created_timestamp_field("created")
            .build()
            .expect("source");
        let interval = (seed % 2 == 0).then(|| std::time::Duration::from_secs(5));
        let v = aggregation_view("txn", &name, every_aggregation(), interval, &EVENT_INPUTS);
        // Entity times at random, on event times and on window bounds (10 s, 30 s, 60 s).
        let mut entities: Vec<(Option<i64>, Option<i64>)> = (0..300)
            .map(|_| {
                let key = (rng.next(25) != 0).then(|| rng.next(14) as i64);
                (key, (rng.next(25) != 0).then(|| micros(rng.next(220) as i64 - 20)))
            })
            .collect();
        for t in event_times.iter().step_by(7) {
            let key = Some(rng.next(12) as i64);
            for d in [0, micros(10), micros(30), micros(60), micros(10) - 1, micros(60) + 1] {
                entities.push((key, Some(t + d)));
            }
        }
        let entities = batch(
            vec![Field::new("driver_id", DataType::Int64, true), ts_field("event_timestamp")],
            vec![
                Arc::new(entities.iter().map(|r| r.0).collect::<Int64Array>()),
                Arc::new(entities.iter().map(|r| r.1).collect::<TimestampMicrosecondArray>().with_timezone("UTC")),
            ],
        );
        let want = aggregates_by_definition(&v, &parts, &entities);
        let got =
            retrieve(fixture.store().as_ref(), entities.clone(), vec![request(&v, &src, &["driver_id"], false)]).await;
        let got = arrow_select::concat::concat_batches(&got[0].schema(), &got).expect("concat");
        assert_eq!(got.num_rows(), entities.num_rows(), "seed {seed}: one row per entity row");
        assert_eq!(got.column(0).as_ref(), entities.column(0).as_ref(), "seed {seed}: entity rows in input order");
        for (i, f) in v.schema.iter().enumerate() {
            let what = format!("seed {seed}, interval {interval:?}");
            assert_columns_close(&what, &f.name, got.column(2 + i), &want[i]);
        }
    }
}

/// The tile rows of a hopping aggregation view, over random events split
/// over several files, for all history and for windows that start inside
/// it: equal to the reference's, built from every event at once
/// ([`crate::aggregation::tile_rows`]), whatever partitioning or spilling
/// the backend used. Each key's event count is on exactly one of its rows.
pub async fn random_tiles_match_the_reference(fixture: &dyn OfflineFixture) {
    use crate::aggregation::tile_rows::{TILE_EVENTS, TileWindow};
    use crate::offline::TilesRequest;
    for seed in 1..=3u64 {
        let mut rng = Lcg(seed * 104_729);
        let mut parts = Vec::new();
        for _ in 0..3 {
            let rows: Vec<EventRow> = (0..400)
                .map(|_| {
                    let key = (rng.next(25) != 0).then(|| rng.next(30) as i64);
                    let t = (rng.next(30) != 0).then(|| micros(rng.next(600) as i64) + [0, 1][rng.next(2) as usize]);
                    let created = (rng.next(2) == 0).then(|| micros(rng.next(4) as i64));
                    let amount = (rng.next(8) != 0).then(|| rng.next(16) as f64 * 0.25 - 1.0);
                    let qty = (rng.next(8) != 0).then(|| rng.next(7) as i64 - 2);
                    let merchant = (rng.next(8) != 0).then(|| ["a", "b", "c"][rng.next(3) as usize]);
                    (key, t, created, amount, qty, merchant)
                })
                .collect();
            parts.push(event_rows(&rows));
        }
        let name = format!("tile_events_{seed}");
        let path = fixture.put_source(&name, parts.clone()).await;
        let reference = MemoryOfflineStore::new();
        reference.insert(name.as_str(), parts[0].schema(), parts);
        let v =
            aggregation_view("txn", &name, every_aggregation(), Some(std::time::Duration::from_secs(5)), &EVENT_INPUTS);
        let keys = vec![JoinKey::new("driver_id", None)];
        for (start, end) in [(None, 700), (Some(230), 500), (Some(599), 601)] {
            let window = TileWindow::new(&v, start.map(at), at(end)).expect("hopping view");
            let request = |path: &str| {
                let src = DataSource::builder(&name, path, "event_timestamp")
                    .created_timestamp_field("created")
                    .build()
                    .expect("source");
                TilesRequest::new(v.clone(), src, keys.clone(), window, at(end))
            };
            let got = tiles_by_key(fixture.store().as_ref(), request(&path)).await;
            let want = tiles_by_key(&reference, request(&name)).await;
            let what = format!("seed {seed}, window {start:?}..{end}");
            assert!(want.num_rows() > 0, "{what}: the reference has tile rows");
            assert_eq!(got.num_rows(), want.num_rows(), "{what}: tile rows");
            let total = |b: &RecordBatch| -> u64 {
                let c = b.column_by_name(TILE_EVENTS).expect("counts");
                c.as_any().downcast_ref::<arrow_array::UInt64Array>().expect("u64").values().iter().sum()
            };
            assert_eq!(total(&got), total(&want), "{what}: events read");
            assert_eq!(got, want, "{what}: the backend's tile rows differ from the reference's");
        }
    }
}

/// A store's tile rows ordered by online key (row order is not part of the contract).
async fn tiles_by_key(store: &dyn OfflineStore, request: crate::offline::TilesRequest) -> RecordBatch {
    let stream = store.tiles(request).await.expect("tile rows");
    let schema = stream.schema();
    let all = arrow_select::concat::concat_batches(&schema, &stream.collect().await.expect("stream")).expect("concat");
    let keys = all.column_by_name(crate::aggregation::tile_rows::TILE_KEY).expect("keys");
    let converter = arrow_row::RowConverter::new(vec![arrow_row::SortField::new(DataType::Utf8)]).expect("converter");
    let rows = converter.convert_columns(&[Arc::clone(keys)]).expect("rows");
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    order.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    arrow_select::take::take_record_batch(&all, &arrow_array::UInt32Array::from(order)).expect("take")
}

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).expect("in range")
}

async fn latest(
    store: &dyn OfflineStore,
    v: &FeatureView,
    src: &DataSource,
    start: Option<i64>,
    end: i64,
) -> (Vec<RecordBatch>, u64) {
    let request =
        LatestRequest::new(v.clone(), src.clone(), vec![JoinKey::new("driver_id", None)], start.map(at), at(end));
    let rows = store.latest_rows(request).await.expect("latest rows");
    let counter = Arc::clone(&rows.rows_read);
    let batches: Vec<RecordBatch> =
        rows.stream.collect().await.expect("stream").into_iter().filter(|b| b.num_rows() > 0).collect();
    let read = counter.load(std::sync::atomic::Ordering::Relaxed);
    if batches.is_empty() {
        return (batches, read);
    }
    // Key order is not part of the contract: sort by key for comparison.
    let schema: SchemaRef = batches[0].schema();
    let all = arrow_select::concat::concat_batches(&schema, &batches).expect("concat");
    let order = arrow_ord_sort(&all);
    let sorted = arrow_select::take::take_record_batch(&all, &order).expect("take");
    (vec![sorted], read)
}

fn arrow_ord_sort(batch: &RecordBatch) -> arrow_array::UInt32Array {
    let converter = arrow_row::RowConverter::new(vec![arrow_row::SortField::new(batch.column(0).data_type().clone())])
        .expect("converter");
    let rows = converter.convert_columns(&[Arc::clone(batch.column(0))]).expect("rows");
    let mut idx: Vec<u32> = (0..batch.num_rows() as u32).collect();
    idx.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    idx.into()
}

/// The newest row per key with event time in `[start, end]` (both
/// inclusive), ties broken as in retrieval, null keys left out, and the
/// window's rows counted.
pub async fn latest_rows_are_the_newest_per_key_in_the_window(fixture: &dyn OfflineFixture) {
    let path = fixture
        .put_source(
            "driver_stats",
            vec![
                driver_rows(&[
                    (Some(1), Some(10), Some(1.0)),
                    (Some(1), Some(20), Some(2.0)),
                    (Some(1), Some(31), Some(3.0)),
                ]),
                driver_rows(&[
                    (Some(2), Some(20), Some(4.0)),
                    (Some(2), Some(20), Some(5.0)),
                    (None, Some(20), Some(9.0)),
                ]),
                driver_rows(&[(Some(3), Some(9), Some(6.0)), (Some(4), Some(30), None)]),
            ],
        )
        .await;
    let src = source("driver_stats", &path);
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], None);
    let (got, read) = latest(fixture.store().as_ref(), &v, &src, Some(10), 30).await;
    assert_batches_eq(
        &[
            "+-----------+----------------------+-----------+",
            "| driver_id | __event_ts           | conv_rate |",
            "+-----------+----------------------+-----------+",
            "| 1         | 1970-01-01T00:00:20Z | 2.0       |",
            "| 2         | 1970-01-01T00:00:20Z | 5.0       |",
            "| 4         | 1970-01-01T00:00:30Z |           |",
            "+-----------+----------------------+-----------+",
        ],
        &got,
    );
    assert_eq!(read, 5, "rows in the window with a key: 1@10, 1@20, 2@20 twice, 4@30");
    let (got, _) = latest(fixture.store().as_ref(), &v, &src, None, 9).await;
    assert_batches_eq(
        &[
            "+-----------+----------------------+-----------+",
            "| driver_id | __event_ts           | conv_rate |",
            "+-----------+----------------------+-----------+",
            "| 3         | 1970-01-01T00:00:09Z | 6.0       |",
            "+-----------+----------------------+-----------+",
        ],
        &got,
    );
}

/// On random data with created-time ties, equal values, nulls and null keys,
/// the backend's latest rows equal the reference's, for several windows.
pub async fn random_latest_rows_match_the_reference(fixture: &dyn OfflineFixture) {
    let mut rng = Lcg(7);
    let mut parts = Vec::new();
    for _ in 0..3 {
        let n = 300;
        let keys: Vec<Option<i64>> = (0..n).map(|_| (rng.next(25) != 0).then(|| rng.next(30) as i64)).collect();
        let events: Vec<Option<i64>> =
            (0..n).map(|_| (rng.next(30) != 0).then(|| micros(rng.next(60) as i64))).collect();
        let created: Vec<Option<i64>> =
            (0..n).map(|_| (rng.next(3) != 0).then(|| micros(rng.next(4) as i64))).collect();
        let values: Vec<Option<f32>> = (0..n).map(|_| (rng.next(8) != 0).then(|| rng.next(5) as f32)).collect();
        parts.push(batch(
            vec![
                Field::new("driver_id", DataType::Int64, true),
                ts_field("event_timestamp"),
                ts_field("created"),
                Field::new("conv_rate", DataType::Float32, true),
            ],
            vec![
                Arc::new(Int64Array::from(keys)),
                Arc::new(TimestampMicrosecondArray::from(events).with_timezone("UTC")),
                Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
                Arc::new(Float32Array::from(values)),
            ],
        ));
    }
    let path = fixture.put_source("random_latest", parts.clone()).await;
    let reference = MemoryOfflineStore::new();
    reference.insert("random_latest", parts[0].schema(), parts);
    let build = |path: &str| {
        DataSource::builder("random_latest", path, "event_timestamp")
            .created_timestamp_field("created")
            .build()
            .expect("source")
    };
    let (src, ref_src) = (build(&path), build("random_latest"));
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], None);
    let show = |b: &[RecordBatch]| arrow_cast::pretty::pretty_format_batches(b).expect("printable").to_string();
    for (start, end) in [(None, 59), (Some(10), 40), (Some(30), 30), (Some(61), 100)] {
        let (got, got_read) = latest(fixture.store().as_ref(), &v, &src, start, end).await;
        let (want, want_read) = latest(&reference, &v, &ref_src, start, end).await;
        assert_eq!(show(&got), show(&want), "window {start:?}..={end}: the backend differs from the reference");
        assert_eq!(got_read, want_read, "window {start:?}..={end}: rows read");
    }
}

/// A request's on-demand projection runs on the joined rows before they
/// leave the store: each requested feature appended in order, computed from
/// retrieved features and request fields (converted to their declared
/// types), and the hidden inputs dropped; a missing request field is an
/// error naming it.
pub async fn on_demand_projection_runs_on_the_joined_rows(fixture: &dyn OfflineFixture) {
    use crate::on_demand::{
        CompiledFeature, CompiledView, FeatureExpr, Input, InputSource, OnDemandInputs, OnDemandProjection,
        OnDemandRequest,
    };
    /// `inputs[0] * factor (+ inputs[1])`, over float32 and float64 inputs.
    #[derive(Debug)]
    struct Scaled(f64);
    impl FeatureExpr for Scaled {
        fn evaluate(&self, columns: &[ArrayRef], rows: usize) -> crate::Result<ArrayRef> {
            let value = |c: &ArrayRef, i: usize| -> Option<f64> {
                let c = arrow_cast::cast(c, &DataType::Float64).ok()?;
                let c = c.as_any().downcast_ref::<arrow_array::Float64Array>()?;
                (!arrow_array::Array::is_null(c, i)).then(|| c.value(i))
            };
            let out: arrow_array::Float64Array = (0..rows)
                .map(|i| {
                    let base = value(&columns[0], i)? * self.0;
                    match columns.get(1) {
                        Some(extra) => Some(base + value(extra, i)?),
                        None => Some(base),
                    }
                })
                .collect();
            Ok(Arc::new(out))
        }
    }
    let path = fixture
        .put_source(
            "driver_stats",
            vec![driver_rows(&[(Some(1), Some(10), Some(1.5)), (Some(2), Some(10), Some(2.0))])],
        )
        .await;
    let src = source("driver_stats", &path);
    let v = view("stats", &src, &[("conv_rate", ValueType::Float32)], None);
    let hidden = format!("{}stats__conv_rate", crate::model::HIDDEN_INPUT_PREFIX);
    let mut stats = request(&v, &src, &["driver_id"], false);
    stats.output_names = vec![hidden.clone()];
    let od = crate::model::OnDemandFeatureView::builder("od")
        .source("stats")
        .source("req")
        .feature("double_conv", ValueType::Float64, "conv_rate * 2")
        .feature("with_bonus", ValueType::Float64, "conv_rate + bonus")
        .build()
        .expect("valid view");
    let inputs = OnDemandInputs {
        inputs: vec![
            Input {
                source: InputSource::Feature(crate::model::FeatureRef::new("stats", "conv_rate")),
                dtype: ValueType::Float32,
            },
            Input {
                source: InputSource::Request { source: "req".into(), field: "bonus".into() },
                dtype: ValueType::Float64,
            },
        ],
        names: [("conv_rate".to_owned(), 0), ("bonus".to_owned(), 1)].into_iter().collect(),
        ambiguous: Default::default(),
    };
    let compiled = CompiledView::new(
        vec![
            CompiledFeature::new("double_conv".into(), ValueType::Float64, vec![0], Arc::new(Scaled(2.0))),
            CompiledFeature::new("with_bonus".into(), ValueType::Float64, vec![0, 1], Arc::new(Scaled(1.0))),
        ],
        Vec::new(),
    );
    let mut r = OnDemandRequest::new(od, Arc::new(compiled), inputs);
    r.add_feature(1, "with_bonus".into());
    r.add_feature(0, "double_conv".into());
    r.columns = vec![hidden, "bonus".into()];
    r.used_inputs = vec![0, 1];
    let projection = OnDemandProjection::new(vec![r]);
    let entities = |bonus: bool| {
        let mut fields = vec![Field::new("driver_id", DataType::Int64, true), ts_field("event_timestamp")];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![2, 1, 3])),
            Arc::new(TimestampMicrosecondArray::from(vec![micros(30), micros(20), micros(20)]).with_timezone("UTC")),
        ];
        if bonus {
            // int64 whole numbers for a float64 field convert exactly.
            fields.push(Field::new("bonus", DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from(vec![Some(10), None, Some(1)])));
        }
        batch(fields, columns)
    };
    let run = |entities: RecordBatch| {
        let store = fixture.store();
        let request = HistoricalRequest::new(
            EntityInput::batch(entities),
            vec![stats.clone()],
            "event_timestamp",
            vec![src.clone()],
        )
        .with_on_demand(Some(projection.clone()));
        async move { store.get_historical_features(request).await?.collect().await }
    };
    let out: Vec<RecordBatch> =
        run(entities(true)).await.expect("retrieval").into_iter().filter(|b| b.num_rows() > 0).collect();
    assert_batches_eq(
        &[
            "+-----------+----------------------+-------+------------+-------------+",
            "| driver_id | event_timestamp      | bonus | with_bonus | double_conv |",
            "+-----------+----------------------+-------+------------+-------------+",
            "| 2         | 1970-01-01T00:00:30Z | 10    | 12.0       | 4.0         |",
            "| 1         | 1970-01-01T00:00:20Z |       |            | 3.0         |",
            "| 3         | 1970-01-01T00:00:20Z | 1     |            |             |",
            "+-----------+----------------------+-------+------------+-------------+",
        ],
        &out,
    );
    let err = match run(entities(false)).await {
        Ok(_) => panic!("entity rows without the request field were accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("\"bonus\"") && err.contains("request field"), "{err}");
}

/// One `#[tokio::test]` per offline-store behaviour for a backend.
///
/// `$make` is an async expression giving a value that implements
/// [`OfflineFixture`] (and holds whatever must live for the test: a temp
/// dir, a server). The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! offline_store_suite {
    ($make:expr) => {
        $crate::offline_store_suite!(@each $make;
            source_schema_reports_columns, missing_source_is_an_error_naming_it,
            as_of_picks_the_newest_row_at_or_before, ttl_bounds_are_inclusive, ties_go_to_created_time_then_values,
            output_keeps_entity_rows_order_and_columns, null_keys_and_times_match_nothing,
            instants_compare_across_units_and_zones, several_views_and_a_view_without_entities,
            composite_keys_match_on_every_column, random_data_matches_the_reference,
            latest_rows_are_the_newest_per_key_in_the_window, random_latest_rows_match_the_reference,
            random_aggregations_match_the_definition, random_tiles_match_the_reference,
            on_demand_projection_runs_on_the_joined_rows);
    };
    (@each $make:expr; $($behaviour:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() {
                let fixture = $make.await;
                $crate::testing::offline::$behaviour(&fixture).await;
            }
        )+
    };
}
