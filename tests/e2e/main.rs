//! Workspace-level end-to-end tests, in one binary.

mod aggregation;
mod bad_repos;
mod dataset;
mod faults;
mod historical;
mod on_demand;
mod online;
mod quality;
mod registry_stores;
mod s3;
mod server;
mod suites;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use feature_store_tests::write_parquet;

pub(crate) const CONFIG: &str = "project: demo\nregistry: data/registry.json\n";

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// driver_id:int64, event_timestamp, created, conv_rate:float32, trips:int64, city:string, ts_text:string
pub(crate) fn drivers_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("created", ts_type(), true),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("trips", DataType::Int64, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("ts_text", DataType::Utf8, true),
    ]));
    let t = 1_700_000_000_000_000i64;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2])),
        Arc::new(TimestampMicrosecondArray::from(vec![t, t]).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(vec![t, t]).with_timezone("UTC")),
        Arc::new(Float32Array::from(vec![0.5, 0.25])),
        Arc::new(Int64Array::from(vec![10, 20])),
        Arc::new(StringArray::from(vec!["a", "b"])),
        Arc::new(StringArray::from(vec!["2024-01-01", "2024-01-02"])),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

/// driver_id:string (disagrees with drivers), event_timestamp, rating:float64
pub(crate) fn riders_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Utf8, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("rating", DataType::Float64, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["x"])),
        Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
        Arc::new(Float64Array::from(vec![4.5])),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

/// A repo folder with `feature_store.yaml`, sample Parquet data and the given definition files.
pub(crate) fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_repo(dir.path(), files);
    dir
}

pub(crate) fn write_repo(dir: &Path, files: &[(&str, &str)]) {
    std::fs::write(dir.join("feature_store.yaml"), CONFIG).unwrap();
    write_parquet(&dir.join("data/drivers.parquet"), &drivers_batch());
    write_parquet(&dir.join("data/riders.parquet"), &riders_batch());
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// The error of a retrieval of `features` that must fail, at planning or
/// while its rows stream.
pub(crate) async fn historical_error(
    store: &feature_store::FeatureStore,
    entities: arrow_array::RecordBatch,
    features: &[&str],
) -> String {
    let started = store
        .get_historical_features(
            feature_store::EntityInput::batch(entities),
            &feature_store::Features::refs(features.iter().copied()),
            &feature_store::HistoricalOptions::default(),
        )
        .await;
    match started {
        Err(e) => e.to_string(),
        Ok(s) => s.collect().await.unwrap_err().to_string(),
    }
}
