//! A whole repo on S3: sources and registry in a bucket on a real
//! S3-compatible server started by the test.

use std::sync::Arc;

use feature_store::object_store::location::resolve;
use feature_store::registry::ApplyMode;
use feature_store::{Definitions, RepoConfig};
use feature_store_tests::moto::MotoServer;
use feature_store_tests::put_parquet;

use crate::drivers_batch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_with_sources_and_registry_on_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("features");
    let root = resolve("s3://features/", std::path::Path::new("/"), &moto.options()).unwrap();
    let store = Arc::clone(&root.store);
    // A hive-partitioned folder and a single file.
    put_parquet(&store, "drivers/date=2024-01-01/part-0.parquet", &drivers_batch()).await;
    put_parquet(&store, "drivers/date=2024-01-02/part-0.parquet", &drivers_batch()).await;
    put_parquet(&store, "drivers/_SUCCESS", &drivers_batch()).await;
    put_parquet(&store, "single/drivers.parquet", &drivers_batch()).await;

    let yaml = r#"
entities:
  - {name: driver, join_keys: [driver_id]}
sources:
  - {name: partitioned, path: "s3://features/drivers/", timestamp_field: event_timestamp}
  - {name: globbed, path: "s3://features/drivers/*/*.parquet", timestamp_field: event_timestamp}
  - {name: single, path: "s3://features/single/drivers.parquet", timestamp_field: event_timestamp}
feature_views:
  - {name: by_folder, entities: [driver], source: partitioned}
  - {name: by_glob, entities: [driver], source: globbed, schema: [{name: trips, dtype: int64}]}
  - {name: by_file, entities: [driver], source: single}
"#;
    let mut config = RepoConfig::new("demo", "s3://features/registry/registry.json");
    config.offline_store.storage_options = moto.options();
    let fs = feature_store::from_config(config).unwrap();
    let out = fs.apply(&Definitions::from_yaml(yaml, "s3.yaml").unwrap(), ApplyMode::Sync).await.unwrap();
    assert_eq!(out.version, 1);
    let doc = fs.registry().refresh().await.unwrap();
    let p = doc.project("demo");
    // The partition column is not inferred as a feature.
    assert_eq!(
        p.feature_view("by_folder").unwrap().feature_names().collect::<Vec<_>>(),
        ["created", "conv_rate", "trips", "city", "ts_text"]
    );
    assert_eq!(p.entity("driver").unwrap().join_keys[0].dtype.as_ref().unwrap().to_string(), "int64");

    // Point-in-time retrieval reads the hive folder, the glob and the file from S3.
    let entities = drivers_batch().project(&[0, 1]).unwrap();
    let out = fs
        .get_historical_features(
            feature_store::EntityInput::batch(entities.clone()),
            &feature_store::Features::refs(["by_folder:conv_rate", "by_glob:trips", "by_file:city"]),
            &feature_store::HistoricalOptions::default(),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let out = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
    assert_eq!(out.num_rows(), 2);
    let names: Vec<String> = out.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["driver_id", "event_timestamp", "conv_rate", "trips", "city"]);
    let city = out.column(4).as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    assert_eq!((city.value(0), city.value(1)), ("a", "b"));

    // A saved dataset on S3: files beside the registry, verified, then a source file changes.
    let m = fs
        .save_dataset(
            "on_s3",
            feature_store::EntityInput::batch(entities.clone()),
            &feature_store::Features::refs(["by_folder:conv_rate", "by_file:city"]),
            &feature_store::HistoricalOptions::default(),
            None,
        )
        .await
        .unwrap();
    assert!(
        m.output.file.location.starts_with("s3://features/registry/datasets/demo/on_s3/"),
        "{}",
        m.output.file.location
    );
    assert!(m.output.file.location.ends_with("/data.parquet"));
    assert_eq!(m.source_files.len(), 3, "{:?}", m.source_files);
    assert!(m.source_files.iter().all(|f| f.object.e_tag.is_some()));
    let v = fs.verify_dataset("on_s3").await.unwrap();
    assert!(v.identical(), "{v}");
    let mut changed = drivers_batch();
    changed = changed.slice(0, 1);
    put_parquet(&store, "single/drivers.parquet", &changed).await;
    let v = fs.verify_dataset("on_s3").await.unwrap();
    let subjects: Vec<&str> = v.findings.iter().map(|f| f.subject.as_str()).collect();
    assert_eq!(subjects, ["s3://features/single/drivers.parquet", "output"], "{v}");

    // A missing object on S3 is reported with its URL.
    let bad = "sources:\n  - {name: single, path: \"s3://features/nothing/here.parquet\", timestamp_field: event_timestamp}\n";
    let err = fs.apply(&Definitions::from_yaml(bad, "bad.yaml").unwrap(), ApplyMode::Merge).await.unwrap_err();
    assert!(err.to_string().contains("cannot read \"s3://features/nothing/here.parquet\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_s3_is_a_prompt_clear_error() {
    let mut moto = MotoServer::start();
    moto.create_bucket("gone");
    let mut options = moto.options();
    options.insert("max_retries".into(), "1".into());
    options.insert("retry_timeout".into(), "2s".into());
    let mut config = RepoConfig::new("demo", "s3://gone/registry.json");
    config.offline_store.storage_options = options;
    let fs = feature_store::from_config(config.clone()).unwrap();
    fs.document().await.unwrap();
    moto.stop();

    let fs = feature_store::from_config(config).unwrap();
    let started = std::time::Instant::now();
    let err = fs.document().await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(matches!(err, feature_store::Error::StoreUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("registry s3://gone/registry.json is unavailable"), "{err}");
}
