//! Saved datasets: a manifest records what a training set was built from;
//! `verify_dataset` recomputes it and names what changed.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema};
use feature_store::registry::ApplyMode;
use feature_store::{EntityInput, FeatureStore, Features, HistoricalOptions};
use feature_store_tests::write_parquet;

use crate::ts_type;

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
const HOUR: i64 = 3_600_000_000;

fn stats(drivers: i64, hours: i64, offset: f64) -> RecordBatch {
    let (mut id, mut ts, mut rate, mut trips) = (vec![], vec![], vec![], vec![]);
    for h in 0..hours {
        for d in 0..drivers {
            id.push(d);
            ts.push(T0 + h * HOUR);
            rate.push(offset + (d * 10 + h) as f64 / 1000.0);
            trips.push(d + h);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("rate", DataType::Float64, true),
        Field::new("trips", DataType::Int64, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(id)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Float64Array::from(rate)),
        Arc::new(Int64Array::from(trips)),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

fn entities() -> RecordBatch {
    let ids: Vec<i64> = (0..20).map(|i| i % 7).collect();
    let ts: Vec<i64> = (0..20).map(|i| T0 + (i % 5) * HOUR + 30 * 60_000_000).collect();
    RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as ArrayRef),
    ])
    .unwrap()
}

const DEFS: &str = "
entities: [{name: driver, join_keys: [driver_id]}]
sources: [{name: stats, path: data/stats, timestamp_field: event_timestamp}]
feature_views:
  - {name: stats_v, entities: [driver], source: stats, ttl: 1d, schema: [{name: rate, dtype: float64}, {name: trips, dtype: int64}]}
";

async fn repo() -> (tempfile::TempDir, FeatureStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), crate::CONFIG).unwrap();
    std::fs::write(dir.path().join("features.yaml"), DEFS).unwrap();
    write_parquet(&dir.path().join("data/stats/part-0.parquet"), &stats(10, 3, 0.0));
    write_parquet(&dir.path().join("data/stats/part-1.parquet"), &stats(5, 2, 0.5));
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    (dir, store)
}

fn features() -> Features {
    Features::refs(["stats_v:rate", "stats_v:trips"])
}

async fn save(store: &FeatureStore, name: &str) -> feature_store::dataset::DatasetManifest {
    store
        .save_dataset(name, EntityInput::batch(entities()), &features(), &HistoricalOptions::default(), None)
        .await
        .unwrap()
}

fn local(url: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(url.strip_prefix("file://").expect("a local file URL"))
}

fn kinds(v: &feature_store::dataset::Verification) -> Vec<String> {
    v.findings
        .iter()
        .map(|f| format!("{} {}", f.kind, f.detail.split([':', '(']).next().unwrap_or_default().trim()))
        .collect()
}

#[tokio::test]
async fn saved_dataset_records_its_inputs_and_verifies_identical() {
    let (_dir, store) = repo().await;
    let m = save(&store, "train_v1").await;
    assert_eq!(m.entity_table.rows, 20);
    assert_eq!(m.output.rows, 20);
    assert_eq!(m.entity_table.origin.as_deref(), Some("Arrow batches"));
    assert_eq!(m.features, ["stats_v:rate", "stats_v:trips"]);
    assert_eq!(m.registry_version, 1);
    assert_eq!(m.views[0].view.name, "stats_v");
    assert_eq!(m.entities[0].name, "driver");
    assert_eq!(m.source_files.len(), 2);
    assert!(m.source_files.iter().all(|f| f.object.size > 0 && f.object.e_tag.is_some()));
    assert!(m.output.file.location.contains("data/datasets/demo/train_v1/"), "{}", m.output.file.location);
    assert!(m.output.file.location.ends_with("/data.parquet"), "{}", m.output.file.location);
    assert_eq!(m.output.file.sha256.as_ref().map(String::len), Some(64));
    assert!(local(&m.entity_table.file.location).exists());

    // The stored rows are what retrieval returns, by content hash.
    let fresh = store
        .get_historical_features(EntityInput::batch(entities()), &features(), &HistoricalOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut h = feature_store::dataset::ContentHasher::new(&fresh[0].schema()).unwrap();
    fresh.iter().for_each(|b| h.update(b).unwrap());
    assert_eq!(h.finish().1, m.output.content_hash);
    let stored = store.read_dataset("train_v1").await.unwrap().collect().await.unwrap();
    let mut h = feature_store::dataset::ContentHasher::new(&stored[0].schema()).unwrap();
    stored.iter().for_each(|b| h.update(b).unwrap());
    assert_eq!(h.finish().1, m.output.content_hash);

    let v = store.verify_dataset("train_v1").await.unwrap();
    assert!(v.identical(), "{v}");
    assert_eq!(v.recomputed_hash.as_deref(), Some(m.output.content_hash.as_str()));
    assert_eq!(v.files_checked, 2);
    assert!(v.to_string().contains("bit-identical"), "{v}");

    // Listed, shown, and a name is saved once; later applies keep it.
    assert_eq!(store.list_datasets().await.unwrap().len(), 1);
    let e = store
        .save_dataset("train_v1", EntityInput::batch(entities()), &features(), &HistoricalOptions::default(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    assert_eq!(store.get_dataset("train_v1").await.unwrap(), m);
    let e = store.get_dataset("train_v2").await.unwrap_err().to_string();
    assert!(e.contains("dataset \"train_v2\" not found") && e.contains("train_v1"), "{e}");
    let e = store
        .save_dataset("../x", EntityInput::batch(entities()), &features(), &HistoricalOptions::default(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("dataset name \"../x\" is invalid"), "{e}");
}

#[tokio::test]
async fn verify_names_a_changed_source_file() {
    let (dir, store) = repo().await;
    save(&store, "d").await;
    // Rewrite a file with other values: the file and the recomputed output both differ.
    write_parquet(&dir.path().join("data/stats/part-1.parquet"), &stats(5, 2, 0.9));
    let v = store.verify_dataset("d").await.unwrap();
    assert_eq!(kinds(&v), ["source_file changed", "recomputed differs from the recorded output"], "{v}");
    assert!(v.findings[0].subject.ends_with("data/stats/part-1.parquet"), "{v}");
}

#[tokio::test]
async fn verify_names_an_added_file_that_does_not_change_the_output() {
    let (dir, store) = repo().await;
    save(&store, "d").await;
    // Rows after every entity timestamp: a new file, yet the same output.
    let late = stats(3, 1, 0.0);
    let shifted = arrow::compute::cast(late.column(1), &DataType::Int64).unwrap();
    let shifted = arrow::compute::kernels::numeric::add(&shifted, &Int64Array::new_scalar(100 * HOUR)).unwrap();
    let shifted = arrow::compute::cast(&shifted, &ts_type()).unwrap();
    let mut cols = late.columns().to_vec();
    cols[1] = shifted;
    write_parquet(&dir.path().join("data/stats/part-2.parquet"), &RecordBatch::try_new(late.schema(), cols).unwrap());
    let v = store.verify_dataset("d").await.unwrap();
    assert_eq!(kinds(&v), ["source_file added"], "{v}");
    assert!(!v.identical());
}

#[tokio::test]
async fn verify_names_a_changed_definition_and_still_recomputes_as_recorded() {
    let (dir, store) = repo().await;
    save(&store, "d").await;
    std::fs::write(dir.path().join("features.yaml"), DEFS.replace("ttl: 1d", "ttl: 1h")).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let v = store.verify_dataset("d").await.unwrap();
    assert_eq!(kinds(&v), ["definition changed"], "{v}");
    assert_eq!(v.findings[0].subject, "feature_view stats_v");
    assert!(v.findings[0].detail.contains("ttl \"1d\" -> \"1h\"") || v.findings[0].detail.contains("ttl"), "{v}");
    assert_eq!(v.reproducible, Some(true), "recomputed from the recorded definitions");
}

#[tokio::test]
async fn verify_names_a_tampered_output() {
    let (_dir, store) = repo().await;
    let m = save(&store, "d").await;
    let out = local(&m.output.file.location);
    let rows = store.read_dataset("d").await.unwrap().collect().await.unwrap();
    write_parquet(&out, &entities());
    let v = store.verify_dataset("d").await.unwrap();
    assert_eq!(kinds(&v), ["output modified"], "{v}");
    // The recomputation from the recorded inputs still matches the recorded hash.
    assert_eq!(v.recomputed_hash.as_deref(), Some(m.output.content_hash.as_str()));
    assert_eq!(v.reproducible, Some(true));
    assert!(v.to_string().contains("still gives the recorded output bit for bit"), "{v}");
    // The same rows re-encoded (small row groups): named as such.
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(3)).build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&out).unwrap(), rows[0].schema(), Some(props))
            .unwrap();
    rows.iter().for_each(|b| w.write(b).unwrap());
    w.close().unwrap();
    let v = store.verify_dataset("d").await.unwrap();
    assert_eq!(kinds(&v), ["output rewritten"], "{v}");
    assert!(v.findings[0].detail.contains("rows are identical"), "{v}");
    std::fs::remove_file(&out).unwrap();
    let v = store.verify_dataset("d").await.unwrap();
    assert_eq!(kinds(&v), ["output missing"], "{v}");
    // A modified entity copy cannot be replayed: said, not guessed.
    write_parquet(&local(&m.entity_table.file.location), &entities().slice(0, 3));
    let v = store.verify_dataset("d").await.unwrap();
    assert!(kinds(&v).contains(&"entity_table modified".to_owned()), "{v}");
    assert!(kinds(&v).iter().any(|k| k.starts_with("recomputed not recomputed")), "{v}");
}

#[tokio::test]
async fn sql_entity_tables_are_kept_and_replayed() {
    let (dir, store) = repo().await;
    let out = dir.path().join("train.parquet");
    let m = store
        .save_dataset(
            "from_sql",
            EntityInput::Sql(
                "SELECT driver_id, event_timestamp FROM stats WHERE trips > 3 ORDER BY driver_id, event_timestamp"
                    .into(),
            ),
            &features(),
            &HistoricalOptions::default(),
            Some(out.to_str().unwrap()),
        )
        .await
        .unwrap();
    assert!(m.entity_table.origin.as_deref().unwrap().starts_with("SQL: SELECT"));
    assert!(out.exists());
    assert!(m.output.file.location.ends_with("train.parquet"));
    assert!(m.output.rows > 0 && m.output.rows == m.entity_table.rows);
    // New source rows would change the query's result; the kept copy replays the original.
    write_parquet(&dir.path().join("data/stats/part-3.parquet"), &stats(9, 1, 0.0).slice(8, 1));
    let v = store.verify_dataset("from_sql").await.unwrap();
    assert_eq!(kinds(&v), ["source_file added"], "{v}");
}

#[tokio::test]
async fn explicit_outputs_never_overwrite_or_land_in_a_source() {
    let (dir, store) = repo().await;
    let save_to = |out: std::path::PathBuf| {
        let store = store.clone();
        async move {
            store
                .save_dataset(
                    "x",
                    EntityInput::batch(entities()),
                    &features(),
                    &HistoricalOptions::default(),
                    Some(out.to_str().unwrap()),
                )
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
    };
    let e = save_to(dir.path().join("data/stats/new.parquet")).await;
    assert!(e.contains("inside data source \"stats\""), "{e}");
    let e = save_to(dir.path().join("data/stats/part-0.parquet")).await;
    assert!(e.contains("inside data source \"stats\""), "{e}");
    let taken = dir.path().join("taken.parquet");
    std::fs::write(&taken, b"someone's file").unwrap();
    let e = save_to(taken.clone()).await;
    assert!(e.contains("already exists; a saved dataset never overwrites a file"), "{e}");
    assert_eq!(std::fs::read(&taken).unwrap(), b"someone's file");
    let e = save_to(dir.path().join("out.csv")).await;
    assert!(e.contains("written as Parquet"), "{e}");
    assert!(store.list_datasets().await.unwrap().is_empty());
}

#[tokio::test]
async fn manifests_live_beside_the_files_and_delete_removes_them() {
    let (dir, store) = repo().await;
    let m = save(&store, "d").await;
    // The registry holds a small entry; the manifest is a file checked by hash.
    let registry = std::fs::read_to_string(dir.path().join("data/registry.json")).unwrap();
    assert!(!registry.contains("part-0.parquet"), "source file lists stay out of the registry");
    let records = store.list_datasets().await.unwrap();
    assert_eq!((records[0].name.as_str(), records[0].rows), ("d", 20));
    let manifest = local(&records[0].manifest.location);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"rows\": 20", "\"rows\": 21")).unwrap();
    let e = store.get_dataset("d").await.unwrap_err().to_string();
    assert!(e.contains("modified since it was saved"), "{e}");
    std::fs::write(&manifest, text).unwrap();
    assert_eq!(store.get_dataset("d").await.unwrap(), m);

    let out = local(&m.output.file.location);
    let d = store.delete_dataset("d").await.unwrap();
    assert_eq!(d.deleted.len(), 3, "{d:?}");
    assert!(d.kept.is_empty());
    assert!(!out.exists() && !manifest.exists());
    // No empty folders left behind: the save's, then the dataset's.
    let save_folder = out.parent().unwrap();
    assert!(!save_folder.exists() && !save_folder.parent().unwrap().exists(), "{}", save_folder.display());
    assert!(dir.path().join("feature_store.yaml").exists());
    assert!(store.list_datasets().await.unwrap().is_empty());
    let e = store.delete_dataset("d").await.unwrap_err().to_string();
    assert!(e.contains("dataset \"d\" not found"), "{e}");
    // The name can be saved again.
    save(&store, "d").await;
}

#[tokio::test]
async fn a_source_over_the_whole_data_folder_skips_the_registry_and_refuses_datasets_inside_it() {
    let (dir, store) = repo().await;
    // A source over data/ lists data/registry.json too: skipped, not read as Parquet.
    let defs = format!(
        "{DEFS}  - {{name: all_v, entities: [driver], source: everything, schema: [{{name: rate, dtype: float64}}]}}\n"
    )
    .replace("sources: [", "sources: [{name: everything, path: data/, timestamp_field: event_timestamp}, ");
    std::fs::write(dir.path().join("features.yaml"), defs).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let e = store
        .save_dataset("d", EntityInput::batch(entities()), &features(), &HistoricalOptions::default(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside data source \"everything\""), "{e}");
    assert!(!dir.path().join("data/datasets").exists());
}
