//! Random point-in-time cases: three views (a keyed view with created
//! timestamps and ties, a two-key view over two files, a view without
//! entities behind a glob) and entity rows of mixed units and zones. The
//! local engine's tests check them against a brute-force reference; the
//! cluster's tests check the cluster against the local engine.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use feature_store::FeatureStore;
use feature_store::registry::ApplyMode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::write_parquet;

/// Times start here (ms since the epoch).
pub const T0_MS: i64 = 1_700_000_000_000;

/// A timestamp column of `unit` and zone `tz` from ms values.
pub fn ts_array(unit: TimeUnit, tz: Option<&str>, ms: &[Option<i64>]) -> ArrayRef {
    let conv = |f: fn(i64) -> i64| ms.iter().map(|v| v.map(f)).collect::<Vec<_>>();
    let a: ArrayRef = match unit {
        TimeUnit::Second => Arc::new(TimestampSecondArray::from(conv(|v| v.div_euclid(1000)))),
        TimeUnit::Millisecond => Arc::new(TimestampMillisecondArray::from(conv(|v| v))),
        TimeUnit::Microsecond => Arc::new(TimestampMicrosecondArray::from(conv(|v| v * 1000))),
        TimeUnit::Nanosecond => Arc::new(TimestampNanosecondArray::from(conv(|v| v * 1_000_000))),
    };
    match tz {
        Some(tz) => arrow::compute::cast(&a, &DataType::Timestamp(unit, Some(tz.into()))).unwrap(),
        None => a,
    }
}

/// Timestamp units the generator picks from.
pub const UNITS: [TimeUnit; 4] = [TimeUnit::Second, TimeUnit::Millisecond, TimeUnit::Microsecond, TimeUnit::Nanosecond];
/// Time zones the generator picks from (none = naive).
pub const ZONES: [Option<&str>; 4] = [None, Some("UTC"), Some("America/New_York"), Some("+05:30")];

/// One random case: sources, entity rows and the views' ttls (seconds).
pub struct Case {
    pub stats: RecordBatch,
    pub shops: RecordBatch,
    pub global: RecordBatch,
    pub entities: RecordBatch,
    pub stats_ttl: Option<i64>,
    pub shops_ttl: Option<i64>,
}

/// The case for `seed`.
pub fn generate(seed: u64) -> Case {
    generate_scaled(seed, 1)
}

/// `scale` multiplies the number of source rows of the keyed views.
pub fn generate_scaled(seed: u64, scale: usize) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_src = rng.random_range(0..300) * scale;
    let n_ent = rng.random_range(1..200);
    let keys = rng.random_range(1..15i64) * scale as i64;
    let unit = |rng: &mut StdRng| UNITS[rng.random_range(0..3)]; // Parquet has no seconds; entities get seconds below
    let zone = |rng: &mut StdRng| ZONES[rng.random_range(0..4)];
    // Coarse times (whole seconds, few distinct) force equal event times and ties.
    let time = |rng: &mut StdRng| {
        T0_MS + 1000 * rng.random_range(0..400i64) + if rng.random_bool(0.2) { rng.random_range(0..1000) } else { 0 }
    };
    let maybe = |rng: &mut StdRng, p: f64| rng.random_bool(p);

    let stats_ts: Vec<Option<i64>> = (0..n_src).map(|_| (!maybe(&mut rng, 0.03)).then(|| time(&mut rng))).collect();
    let stats_created: Vec<Option<i64>> = stats_ts
        .iter()
        .map(|t| if maybe(&mut rng, 0.3) { None } else { Some(t.unwrap_or(T0_MS) + 1000 * rng.random_range(0..3)) })
        .collect();
    let (su, sz) = (unit(&mut rng), zone(&mut rng));
    let stats = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, true),
            Field::new("event_timestamp", DataType::Timestamp(su, sz.map(Into::into)), true),
            Field::new("created", DataType::Timestamp(su, sz.map(Into::into)), true),
            Field::new("conv", DataType::Float64, true),
            Field::new("trips", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(
                (0..n_src).map(|_| (!maybe(&mut rng, 0.05)).then(|| rng.random_range(0..keys))).collect::<Vec<_>>(),
            )),
            ts_array(su, sz, &stats_ts),
            ts_array(su, sz, &stats_created),
            Arc::new(Float64Array::from(
                (0..n_src)
                    .map(|_| (!maybe(&mut rng, 0.1)).then(|| f64::from(rng.random_range(0..5)) / 4.0))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                (0..n_src).map(|_| (!maybe(&mut rng, 0.1)).then(|| rng.random_range(0..3))).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();

    let n_shops = rng.random_range(0..200) * scale;
    let regions = ["eu", "us", "apac"];
    let (hu, hz) = (unit(&mut rng), zone(&mut rng));
    let shops_ts: Vec<Option<i64>> = (0..n_shops).map(|_| Some(time(&mut rng))).collect();
    let shops = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("shop_id", DataType::Int32, true),
            Field::new("ts", DataType::Timestamp(hu, hz.map(Into::into)), true),
            Field::new("rating", DataType::Float32, true),
        ])),
        vec![
            Arc::new(StringArray::from(
                (0..n_shops)
                    .map(|_| (!maybe(&mut rng, 0.03)).then(|| regions[rng.random_range(0..3)]))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from(
                (0..n_shops).map(|_| Some(rng.random_range(0..4 * scale as i32))).collect::<Vec<_>>(),
            )),
            ts_array(hu, hz, &shops_ts),
            Arc::new(Float32Array::from((0..n_shops).map(|_| Some(rng.random_range(0..4) as f32)).collect::<Vec<_>>())),
        ],
    )
    .unwrap();

    let n_global = rng.random_range(0..40);
    let (gu, gz) = (unit(&mut rng), zone(&mut rng));
    let global_ts: Vec<Option<i64>> = (0..n_global).map(|_| Some(time(&mut rng))).collect();
    let global = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(gu, gz.map(Into::into)), true),
            Field::new("temp", DataType::Float64, true),
        ])),
        vec![
            ts_array(gu, gz, &global_ts),
            Arc::new(Float64Array::from(
                (0..n_global).map(|_| Some(rng.random_range(0..3) as f64)).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();

    let stats_ttl = maybe(&mut rng, 0.6).then(|| rng.random_range(1..120i64));
    let shops_ttl = maybe(&mut rng, 0.5).then(|| rng.random_range(1..120i64));
    // Entity times: random, older than all data, or exactly at a source time or a ttl bound.
    let mut ent_ts = Vec::new();
    for _ in 0..n_ent {
        let pick = rng.random_range(0..10);
        let t = match pick {
            0 => None,
            1 => Some(T0_MS - 5_000_000),
            2 | 3 if n_src > 0 => {
                stats_ts[rng.random_range(0..n_src)].map(|t| t + 1000 * stats_ttl.unwrap_or(0) * i64::from(pick == 3))
            }
            4 if n_src > 0 => stats_ts[rng.random_range(0..n_src)].map(|t| t + 1000 * stats_ttl.unwrap_or(0) + 1000),
            _ => Some(time(&mut rng) + rng.random_range(0..2000)),
        };
        ent_ts.push(t);
    }
    let (eu, ez) = (UNITS[rng.random_range(0..4)], zone(&mut rng));
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
            Field::new("shop_id", DataType::Int64, true),
            Field::new("event_timestamp", DataType::Timestamp(eu, ez.map(Into::into)), true),
            Field::new("label", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(
                (0..n_ent).map(|_| (!maybe(&mut rng, 0.05)).then(|| rng.random_range(0..keys + 2))).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from((0..n_ent).map(|_| Some(regions[rng.random_range(0..3)])).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(
                (0..n_ent)
                    .map(|_| (!maybe(&mut rng, 0.05)).then(|| rng.random_range(0..5 * scale as i64)))
                    .collect::<Vec<_>>(),
            )),
            ts_array(eu, ez, &ent_ts),
            Arc::new(Int64Array::from((0..n_ent as i64).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    Case { stats, shops, global, entities, stats_ttl, shops_ttl }
}

/// The case's definitions file.
pub fn definitions(case: &Case) -> String {
    definitions_at(case, "data/")
}

/// [`definitions`] with the sources under `base` (`data/`, `s3://bucket/prefix/`).
pub fn definitions_at(case: &Case, base: &str) -> String {
    let ttl = |t: Option<i64>| t.map_or(String::new(), |t| format!(", ttl: {t}s"));
    format!(
        r#"
entities:
  - {{name: driver, join_keys: [driver_id]}}
  - {{name: shop, join_keys: [region, shop_id]}}
sources:
  - {{name: stats, path: {base}stats.parquet, timestamp_field: event_timestamp, created_timestamp_field: created}}
  - {{name: shops, path: {base}shops/, timestamp_field: ts}}
  - {{name: global, path: "{base}global_*.parquet", timestamp_field: ts}}
feature_views:
  - {{name: stats_v, entities: [driver], source: stats{}, schema: [{{name: conv, dtype: float64}}, {{name: trips, dtype: int64}}]}}
  - {{name: shops_v, entities: [shop], source: shops{}, schema: [{{name: rating, dtype: float32}}]}}
  - {{name: global_v, source: global, schema: [{{name: temp, dtype: float64}}]}}
"#,
        ttl(case.stats_ttl),
        ttl(case.shops_ttl)
    )
}

/// Writes the case as a repo; the shops source is split over two files and
/// the global source matched by a glob.
/// The case's source files, relative to the sources' base: the shops source
/// is split over two files and the global source matched by a glob.
pub fn files(case: &Case) -> Vec<(&'static str, RecordBatch)> {
    let half = case.shops.num_rows() / 2;
    vec![
        ("stats.parquet", case.stats.clone()),
        ("shops/a.parquet", case.shops.slice(0, half)),
        ("shops/b.parquet", case.shops.slice(half, case.shops.num_rows() - half)),
        ("global_1.parquet", case.global.clone()),
    ]
}

/// Writes the case as a repo in `dir` and applies it.
pub async fn store_for(case: &Case, dir: &std::path::Path) -> FeatureStore {
    std::fs::write(dir.join("feature_store.yaml"), "project: pit\nregistry: data/registry.json\n").unwrap();
    std::fs::write(dir.join("features.yaml"), definitions(case)).unwrap();
    for (path, batch) in files(case) {
        write_parquet(&dir.join("data").join(path), &batch);
    }
    let store = feature_store::open(dir).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    store
}
