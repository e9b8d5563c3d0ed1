//! A catalogue of broken repos, each with the exact problem it must report.
//! Every case also checks that nothing was written to the registry.

use feature_store::Error;
use feature_store::registry::ApplyMode;

use crate::repo;

const GOOD: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id]}
sources:
  - {name: drivers, path: data/drivers.parquet, timestamp_field: event_timestamp, created_timestamp_field: created}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: drivers
    ttl: 1d
    schema:
      - {name: conv_rate, dtype: float32}
      - {name: trips, dtype: int64}
feature_services:
  - {name: svc, features: ["driver_stats:conv_rate"]}
"#;

/// Applies a repo made of GOOD with `from` replaced by `to` (plus extra files),
/// and returns the error text.
async fn apply_err(edits: &[(&str, &str)], extra: &[(&str, &str)]) -> String {
    let mut defs = GOOD.to_owned();
    for (from, to) in edits {
        assert!(defs.contains(from), "test bug: {from:?} not in the good repo");
        defs = defs.replacen(from, to, 1);
    }
    let mut files = vec![("features.yaml", defs.as_str())];
    files.extend_from_slice(extra);
    let dir = repo(&files);
    let result = async {
        let store = feature_store::open(dir.path())?;
        let defs = store.repo_definitions()?;
        store.apply(&defs, ApplyMode::Sync).await
    }
    .await;
    let err = match result {
        Ok(_) => panic!("repo with edits {edits:?} applied without error"),
        Err(e) => e,
    };
    assert!(!dir.path().join("data/registry.json").exists(), "a failed apply wrote the registry");
    err.to_string()
}

fn has(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "expected {p:?} in:\n{text}");
    }
}

#[tokio::test]
async fn the_good_repo_applies() {
    let dir = repo(&[("features.yaml", GOOD)]);
    let store = feature_store::open(dir.path()).unwrap();
    let out = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    assert_eq!(out.version, 1);
}

#[tokio::test]
async fn unknown_entity() {
    let e = apply_err(&[("entities: [driver]", "entities: [rider]")], &[]).await;
    has(&e, &["features.yaml: feature view \"driver_stats\": unknown entity \"rider\"; defined entities: driver"]);
}

#[tokio::test]
async fn unknown_source() {
    let e = apply_err(&[("source: drivers", "source: driverz")], &[]).await;
    has(&e, &["feature view \"driver_stats\": unknown source \"driverz\"; defined sources: drivers"]);
}

#[tokio::test]
async fn unknown_view_in_service() {
    let e = apply_err(&[("\"driver_stats:conv_rate\"", "\"driver_stat:conv_rate\"")], &[]).await;
    has(&e, &["feature service \"svc\": unknown feature view \"driver_stat\""]);
}

#[tokio::test]
async fn unknown_feature_in_service() {
    let e = apply_err(&[("\"driver_stats:conv_rate\"", "\"driver_stats:conv\"")], &[]).await;
    has(&e, &["feature service \"svc\"", "has no feature \"conv\"; its features are: conv_rate, trips"]);
}

#[tokio::test]
async fn duplicate_names_across_files() {
    let e = apply_err(&[], &[("more/other.yaml", "entities:\n  - {name: driver, join_keys: [driver_id]}\n")]).await;
    has(&e, &["more/other.yaml: entity \"driver\": defined twice (first in features.yaml)"]);
}

#[tokio::test]
async fn invalid_name() {
    let e = apply_err(&[("name: driver_stats\n", "name: driver-stats\n")], &[]).await;
    has(&e, &["feature view \"driver-stats\"", "invalid name \"driver-stats\""]);
}

#[tokio::test]
async fn schema_field_missing_from_parquet() {
    let e = apply_err(&[("{name: trips, dtype: int64}", "{name: speed, dtype: int64}")], &[]).await;
    has(
        &e,
        &[
            "feature \"speed\" is not a column of file:///",
            "drivers.parquet",
            "available: conv_rate, trips, city, ts_text",
        ],
    );
}

#[tokio::test]
async fn incompatible_type() {
    let e = apply_err(&[("{name: conv_rate, dtype: float32}", "{name: conv_rate, dtype: int64}")], &[]).await;
    has(
        &e,
        &[
            "feature view \"driver_stats\": column \"conv_rate\" is Float32 (float32) in file:///",
            "but the view declares int64",
        ],
    );
}

#[tokio::test]
async fn narrowing_is_rejected_but_widening_accepted() {
    let e = apply_err(&[("{name: trips, dtype: int64}", "{name: trips, dtype: int32}")], &[]).await;
    has(&e, &["column \"trips\" is Int64 (int64)", "declares int32"]);
    let widened = GOOD.replace("{name: conv_rate, dtype: float32}", "{name: conv_rate, dtype: float64}");
    let dir = repo(&[("features.yaml", &widened)]);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
}

#[tokio::test]
async fn join_key_missing_from_source() {
    let e = apply_err(&[("join_keys: [driver_id]", "join_keys: [rider_id]")], &[]).await;
    has(&e, &["join key \"rider_id\" of entity \"driver\" is not a column of source \"drivers\"", "field_mapping"]);
}

#[tokio::test]
async fn timestamp_field_missing() {
    let e = apply_err(&[("timestamp_field: event_timestamp", "timestamp_field: ts")], &[]).await;
    has(
        &e,
        &["data source \"drivers\": timestamp_field \"ts\" is not a column of", "its columns are: city, conv_rate"],
    );
}

#[tokio::test]
async fn timestamp_field_not_a_timestamp() {
    let e = apply_err(&[("timestamp_field: event_timestamp", "timestamp_field: ts_text")], &[]).await;
    has(&e, &["timestamp_field \"ts_text\" is Utf8 (string) in", "not a timestamp"]);
}

#[tokio::test]
async fn created_timestamp_not_a_timestamp() {
    let e = apply_err(&[("created_timestamp_field: created", "created_timestamp_field: city")], &[]).await;
    has(&e, &["created_timestamp_field \"city\" is Utf8 (string)"]);
}

#[tokio::test]
async fn malformed_ttl() {
    let e = apply_err(&[("ttl: 1d", "ttl: 1 fortnight")], &[]).await;
    has(
        &e,
        &[
            "features.yaml: feature view \"driver_stats\": line 10: ttl: invalid duration \"1 fortnight\": unknown unit \"fortnight\"",
        ],
    );
}

#[tokio::test]
async fn join_key_types_disagree_between_sources() {
    let riders = "sources:\n  - {name: riders, path: data/riders.parquet, timestamp_field: event_timestamp}\nfeature_views:\n  - {name: rider_stats, entities: [driver], source: riders}\n";
    let e = apply_err(&[], &[("riders.yaml", riders)]).await;
    has(
        &e,
        &[
            "entity \"driver\": join key \"driver_id\" has different types across sources",
            "int64 in source \"drivers\"",
            "string in source \"riders\"",
        ],
    );
}

#[tokio::test]
async fn declared_join_key_type_disagrees_with_data() {
    let e = apply_err(&[("join_keys: [driver_id]", "join_keys: [{name: driver_id, dtype: string}]")], &[]).await;
    has(&e, &["entity \"driver\": join key \"driver_id\" is declared string but is int64"]);
}

#[tokio::test]
async fn yaml_syntax_error() {
    let e = apply_err(&[], &[("broken.yml", "entities: [\n  - name: x\n")]).await;
    has(&e, &["broken.yml: YAML syntax error"]);
}

#[tokio::test]
async fn misspelled_field() {
    let e = apply_err(&[("timestamp_field: event_timestamp", "timestamp_feild: event_timestamp")], &[]).await;
    has(&e, &["data source \"drivers\": unknown field `timestamp_feild`, expected one of"]);
}

#[tokio::test]
async fn unknown_section() {
    let e = apply_err(&[], &[("x.yaml", "featureviews: []\n")]).await;
    has(&e, &["x.yaml: unknown section \"featureviews\"", ".featurestoreignore"]);
}

#[tokio::test]
async fn config_key_in_definition_file() {
    let e = apply_err(&[], &[("x.yaml", "project: other\n")]).await;
    has(&e, &["x.yaml: \"project\" belongs in feature_store.yaml"]);
}

#[tokio::test]
async fn missing_source_file() {
    let e = apply_err(&[("path: data/drivers.parquet", "path: data/nope.parquet")], &[]).await;
    has(&e, &["data source \"drivers\": cannot read \"data/nope.parquet\"", "no file or folder"]);
}

#[tokio::test]
async fn corrupt_parquet_file() {
    let e = apply_err(
        &[("path: data/drivers.parquet", "path: data/corrupt.parquet")],
        &[("data/corrupt.parquet", "this is not parquet at all")],
    )
    .await;
    has(&e, &["data source \"drivers\"", "corrupt.parquet: not a readable Parquet file", "PAR1"]);
}

#[tokio::test]
async fn field_mapping_of_missing_column() {
    let e = apply_err(
        &[("created_timestamp_field: created}", "created_timestamp_field: created, field_mapping: {Conv: conv_rate}}")],
        &[],
    )
    .await;
    has(&e, &["field_mapping source column \"Conv\" is not in"]);
}

/// A join key in the schema declares the key (Feast's habit); its type must still match.
#[tokio::test]
async fn join_key_in_schema_with_another_type() {
    let e = apply_err(&[("{name: trips, dtype: int64}", "{name: driver_id, dtype: string}")], &[]).await;
    has(&e, &["join key \"driver_id\" is", "but the schema declares string"]);
}

#[tokio::test]
async fn timestamp_column_in_schema() {
    let e = apply_err(&[("{name: trips, dtype: int64}", "{name: event_timestamp, dtype: timestamp}")], &[]).await;
    has(&e, &["feature \"event_timestamp\" is the source's timestamp column"]);
}

#[tokio::test]
async fn entity_without_join_keys() {
    let e = apply_err(&[("join_keys: [driver_id]", "join_keys: []")], &[]).await;
    has(&e, &["entity \"driver\": an entity needs at least one join key"]);
}

#[tokio::test]
async fn malformed_feature_reference() {
    let e = apply_err(&[("\"driver_stats:conv_rate\"", "\"driver_stats:conv_rate:x\"")], &[]).await;
    has(&e, &["feature service \"svc\"", "more than one ':'"]);
}

#[tokio::test]
async fn unknown_dtype() {
    let e = apply_err(&[("{name: trips, dtype: int64}", "{name: trips, dtype: decimal}")], &[]).await;
    has(&e, &["feature view \"driver_stats\"", "unknown type \"decimal\""]);
}

#[tokio::test]
async fn duplicate_feature_in_schema() {
    let e = apply_err(&[("{name: trips, dtype: int64}", "{name: conv_rate, dtype: float32}")], &[]).await;
    has(&e, &["feature \"conv_rate\" is declared twice"]);
}

#[tokio::test]
async fn all_problems_are_reported_at_once() {
    let e = apply_err(
        &[("entities: [driver]", "entities: [rider]"), ("{name: trips, dtype: int64}", "{name: speed, dtype: int64}")],
        &[("extra.yaml", "entities:\n  - {name: bad name, join_keys: [k]}\n")],
    )
    .await;
    has(&e, &["3 problems", "unknown entity \"rider\"", "feature \"speed\"", "invalid name \"bad name\""]);
}

#[tokio::test]
async fn config_problems() {
    for (config, expected) in [
        ("registry: r.json\n", "missing field `project`"),
        ("project: p\nregistry: r.json\noffline_store: {storage_option: {}}\n", "unknown field `storage_option`"),
        ("project: p\nregistry: gs://bucket/r.json\n", "unsupported scheme \"gs\""),
        (
            "project: p\nregistry: s3://b/r.json\noffline_store: {storage_options: {aws_endpoit: x}}\n",
            "storage option \"aws_endpoit\"",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("feature_store.yaml"), config).unwrap();
        let e = feature_store::open(dir.path()).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(expected), "{config}: expected {expected:?} in {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let e = feature_store::open(dir.path()).map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::Config { .. }));
    assert!(e.to_string().contains("is not a feature repo"), "{e}");
}

#[tokio::test]
async fn ignore_file_excludes_other_yaml() {
    let dir = repo(&[("features.yaml", GOOD), ("ci/pipeline.yml", "jobs: {}\n"), (".featurestoreignore", "ci/\n")]);
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
}

/// A file of 200,000 nested brackets (the YAML scanner's time grows with the
/// square of the depth: minutes) is refused at once, naming the file and place.
#[tokio::test]
async fn deeply_nested_yaml_is_refused_quickly() {
    let deep = "feature_views: ".to_owned() + &"[".repeat(200_000);
    let started = std::time::Instant::now();
    let err = apply_err(&[], &[("deep.yaml", &deep)]).await;
    has(&err, &["deep.yaml", "nesting deeper than 64 levels at line 1, column 79"]);
    assert!(started.elapsed().as_secs() < 5, "took {:?}", started.elapsed());
}

/// Apply reads the first file of a folder source for its schema and every
/// other file's footer for the plan's warnings: an unreadable file, or one
/// whose column type no other file shares, is named before a run meets it.
#[tokio::test]
async fn later_files_of_a_folder_source_are_warned_about() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    let good = crate::drivers_batch();
    let mut fields: Vec<Field> = good.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = good.columns().to_vec();
    let trips = good.schema().index_of("trips").unwrap();
    fields[trips] = Field::new("trips", DataType::Utf8, true);
    columns[trips] = Arc::new(StringArray::from(vec!["10", "20"]));
    let text_trips = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let defs = GOOD.replacen("path: data/drivers.parquet", "path: data/drv/", 1);
    let dir = repo(&[("features.yaml", defs.as_str()), ("data/drv/c.parquet", "truncated, not parquet")]);
    feature_store_tests::write_parquet(&dir.path().join("data/drv/a.parquet"), &good);
    feature_store_tests::write_parquet(&dir.path().join("data/drv/b.parquet"), &text_trips);
    let store = feature_store::open(dir.path()).unwrap();
    let defs = store.repo_definitions().unwrap();
    let plan = store.plan(&defs, ApplyMode::Sync).await.unwrap();
    let applied = store.apply(&defs, ApplyMode::Sync).await.unwrap();
    assert!(applied.written);
    for warnings in [&plan.warnings, &applied.plan.warnings] {
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        has(&warnings[0], &["data source \"drivers\" (data/drv/)", "c.parquet: not a readable Parquet file"]);
        has(
            &warnings[1],
            &["column \"trips\" is Int64 (int64) in file://", "a.parquet but Utf8 (string) in ", "b.parquet"],
        );
    }
}

/// A file added after `apply` whose column widens past a declared type
/// (`conv_rate` float64, declared float32): the next `plan` warns naming
/// the file and the view, and a retrieval's error names the file too.
#[tokio::test]
async fn a_later_file_wider_than_a_declared_type_is_named_by_plan_and_retrieval() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    let good = crate::drivers_batch();
    let defs = GOOD.replacen("path: data/drivers.parquet", "path: data/drv/", 1);
    let dir = repo(&[("features.yaml", defs.as_str())]);
    feature_store_tests::write_parquet(&dir.path().join("data/drv/a.parquet"), &good);
    let store = feature_store::open(dir.path()).unwrap();
    let defs = store.repo_definitions().unwrap();
    let applied = store.apply(&defs, ApplyMode::Sync).await.unwrap();
    assert!(applied.written && applied.plan.warnings.is_empty(), "{:?}", applied.plan.warnings);

    let mut fields: Vec<Field> = good.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = good.columns().to_vec();
    let rate = good.schema().index_of("conv_rate").unwrap();
    fields[rate] = Field::new("conv_rate", DataType::Float64, true);
    columns[rate] = Arc::new(Float64Array::from(vec![0.125, 0.0625]));
    let wide = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    feature_store_tests::write_parquet(&dir.path().join("data/drv/b.parquet"), &wide);

    let plan = store.plan(&defs, ApplyMode::Sync).await.unwrap();
    let [warning] = &plan.warnings[..] else { panic!("{:?}", plan.warnings) };
    has(
        warning,
        &[
            "data source \"drivers\" (data/drv/): column \"conv_rate\" is Float64 (float64) in file://",
            "b.parquet, but feature view \"driver_stats\" declares \"conv_rate\" float32",
        ],
    );
    assert!(!warning.contains("a.parquet"), "{warning}");

    let entities = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(arrow::array::Int64Array::from(vec![1])) as ArrayRef),
        (
            "event_timestamp",
            Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![1_700_000_100_000_000]).with_timezone("UTC"))
                as ArrayRef,
        ),
    ])
    .unwrap();
    let e = crate::historical_error(&store, entities, &["driver_stats:conv_rate"]).await;
    has(&e, &["feature \"conv_rate\" is declared float32 but its column \"conv_rate\" holds Float64", "b.parquet)"]);
}

/// A new stream's batch source has no files yet: `apply` says a Parquet
/// file with the events' columns is needed, and one without rows will do.
#[tokio::test]
async fn a_stream_batch_source_without_files_asks_for_one_and_an_empty_file_will_do() {
    use std::sync::Arc;

    use arrow::record_batch::RecordBatch;

    let defs = r#"
entities: [{name: user, join_keys: [user_id]}]
sources:
  - {name: tx, path: data/tx/, timestamp_field: event_timestamp}
stream_sources:
  - {name: tx_stream, kind: redis_stream, connection_string: "redis://127.0.0.1:1", key: tx, timestamp_field: event_timestamp, batch_source: tx}
feature_views:
  - {name: user_last, entities: [user], source: tx_stream, schema: [{name: amount, dtype: float64}]}
"#;
    let dir = repo(&[("features.yaml", defs)]);
    std::fs::create_dir_all(dir.path().join("data/tx")).unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    let e = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
    has(&e, &["data source \"tx\"", "batch source of stream source \"tx_stream\"", "no rows needed"]);
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("user_id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("event_timestamp", crate::ts_type(), false),
        arrow::datatypes::Field::new("amount", arrow::datatypes::DataType::Float64, true),
    ]));
    feature_store_tests::write_parquet(&dir.path().join("data/tx/seed.parquet"), &RecordBatch::new_empty(schema));
    let applied = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    assert!(applied.written);
}
