//! Point-in-time retrieval against a brute-force reference on random data,
//! plus hand-checked golden tables.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampSecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type, Schema, TimeUnit};
use feature_store::registry::ApplyMode;
use feature_store::{EntityInput, FeatureStore, Features, HistoricalOptions};
use feature_store_tests::random_case::{definitions, generate, generate_scaled, store_for, ts_array};
use feature_store_tests::write_parquet;

/// Instants in ns, independent of the library's own conversion.
fn ns(a: &ArrayRef) -> Vec<Option<i128>> {
    let DataType::Timestamp(unit, _) = a.data_type() else { panic!("not a timestamp") };
    let mul: i128 = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1000,
        TimeUnit::Nanosecond => 1,
    };
    let raw: Vec<Option<i64>> = match unit {
        TimeUnit::Second => a.as_primitive::<arrow::datatypes::TimestampSecondType>().iter().collect(),
        TimeUnit::Millisecond => a.as_primitive::<arrow::datatypes::TimestampMillisecondType>().iter().collect(),
        TimeUnit::Microsecond => a.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().iter().collect(),
        TimeUnit::Nanosecond => a.as_primitive::<arrow::datatypes::TimestampNanosecondType>().iter().collect(),
    };
    raw.into_iter().map(|v| v.map(|v| i128::from(v) * mul)).collect()
}

#[derive(Clone, Debug, PartialEq)]
enum Key {
    Int(i64),
    Str(String),
}

/// A feature value for comparison: floats by total order, nulls lowest.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Null,
    F(f64),
    I(i64),
}

fn cmp_vals(a: &[Val], b: &[Val]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Val::Null, Val::Null) => std::cmp::Ordering::Equal,
            (Val::Null, _) => std::cmp::Ordering::Less,
            (_, Val::Null) => std::cmp::Ordering::Greater,
            (Val::F(p), Val::F(q)) => p.total_cmp(q),
            (Val::I(p), Val::I(q)) => p.cmp(q),
            _ => unreachable!(),
        };
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

fn keys_of(columns: &[&ArrayRef], i: usize) -> Option<Vec<Key>> {
    columns
        .iter()
        .map(|c| {
            if c.is_null(i) {
                return None;
            }
            Some(match c.data_type() {
                DataType::Int64 => Key::Int(c.as_primitive::<Int64Type>().value(i)),
                DataType::Int32 => Key::Int(i64::from(c.as_primitive::<arrow::datatypes::Int32Type>().value(i))),
                DataType::Utf8 => Key::Str(c.as_string::<i32>().value(i).to_owned()),
                other => panic!("key type {other}"),
            })
        })
        .collect()
}

fn vals_of(columns: &[&ArrayRef], i: usize) -> Vec<Val> {
    columns
        .iter()
        .map(|c| {
            if c.is_null(i) {
                return Val::Null;
            }
            match c.data_type() {
                DataType::Float64 => Val::F(c.as_primitive::<Float64Type>().value(i)),
                DataType::Float32 => Val::F(f64::from(c.as_primitive::<Float32Type>().value(i))),
                DataType::Int64 => Val::I(c.as_primitive::<Int64Type>().value(i)),
                other => panic!("value type {other}"),
            }
        })
        .collect()
}

/// One view for the reference: source columns by name.
struct RefView<'a> {
    source: &'a RecordBatch,
    keys: Vec<&'a str>,        // source key columns, in entity join-key order
    entity_keys: Vec<&'a str>, // entity columns
    ts: &'a str,
    created: Option<&'a str>,
    features: Vec<&'a str>,
    ttl_ns: Option<i128>,
}

/// The brute force: for every entity row, scan every source row.
fn reference(entities: &RecordBatch, ts_col: &str, view: &RefView<'_>) -> Vec<Vec<Val>> {
    let ets = ns(entities.column_by_name(ts_col).unwrap());
    let ekeys: Vec<&ArrayRef> = view.entity_keys.iter().map(|k| entities.column_by_name(k).unwrap()).collect();
    let skeys: Vec<&ArrayRef> = view.keys.iter().map(|k| view.source.column_by_name(k).unwrap()).collect();
    let sts = ns(view.source.column_by_name(view.ts).unwrap());
    let screated = view.created.map(|c| ns(view.source.column_by_name(c).unwrap()));
    let sfeat: Vec<&ArrayRef> = view.features.iter().map(|f| view.source.column_by_name(f).unwrap()).collect();
    let null_row = vec![Val::Null; view.features.len()];
    (0..entities.num_rows())
        .map(|i| {
            let (Some(ek), Some(et)) = (keys_of(&ekeys, i), ets[i]) else { return null_row.clone() };
            let mut best: Option<(i128, Option<i128>, Vec<Val>)> = None;
            for j in 0..view.source.num_rows() {
                let (Some(sk), Some(st)) = (keys_of(&skeys, j), sts[j]) else { continue };
                if sk != ek || st > et || view.ttl_ns.is_some_and(|ttl| st < et - ttl) {
                    continue;
                }
                let cand = (st, screated.as_ref().and_then(|c| c[j]), vals_of(&sfeat, j));
                let better = match &best {
                    None => true,
                    Some(b) => (cand.0, cand.1).cmp(&(b.0, b.1)).then_with(|| cmp_vals(&cand.2, &b.2)).is_gt(),
                };
                if better {
                    best = Some(cand);
                }
            }
            best.map_or(null_row.clone(), |b| b.2)
        })
        .collect()
}

async fn retrieve(store: &FeatureStore, entities: RecordBatch, features: &[&str], full: bool) -> RecordBatch {
    let stream = store
        .get_historical_features(
            EntityInput::batch(entities),
            &Features::refs(features.iter().copied()),
            &HistoricalOptions::default().with_full_feature_names(full),
        )
        .await
        .unwrap();
    let schema = stream.schema();
    let batches = stream.collect().await.unwrap();
    concat_batches(&schema, &batches).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_brute_force_on_random_data() {
    for seed in 0..40 {
        let case = generate(seed);
        let dir = tempfile::tempdir().unwrap();
        let store = store_for(&case, dir.path()).await;
        let out = retrieve(
            &store,
            case.entities.clone(),
            &["stats_v:conv", "stats_v:trips", "shops_v:rating", "global_v:temp"],
            false,
        )
        .await;

        assert_eq!(out.num_rows(), case.entities.num_rows(), "seed {seed}: one row per entity row");
        for (i, f) in case.entities.schema().fields().iter().enumerate() {
            assert_eq!(
                out.column(i).as_ref(),
                case.entities.column(i).as_ref(),
                "seed {seed}: entity column {} changed",
                f.name()
            );
        }
        let views = [
            RefView {
                source: &case.stats,
                keys: vec!["driver_id"],
                entity_keys: vec!["driver_id"],
                ts: "event_timestamp",
                created: Some("created"),
                features: vec!["conv", "trips"],
                ttl_ns: case.stats_ttl.map(|t| i128::from(t) * 1_000_000_000),
            },
            RefView {
                source: &case.shops,
                keys: vec!["region", "shop_id"],
                entity_keys: vec!["region", "shop_id"],
                ts: "ts",
                created: None,
                features: vec!["rating"],
                ttl_ns: case.shops_ttl.map(|t| i128::from(t) * 1_000_000_000),
            },
            RefView {
                source: &case.global,
                keys: vec![],
                entity_keys: vec![],
                ts: "ts",
                created: None,
                features: vec!["temp"],
                ttl_ns: None,
            },
        ];
        let mut col = case.entities.num_columns();
        for v in &views {
            let expected = reference(&case.entities, "event_timestamp", v);
            let got: Vec<&ArrayRef> = (0..v.features.len()).map(|k| out.column(col + k)).collect();
            for (row, exp) in expected.iter().enumerate() {
                let actual = vals_of(&got, row);
                assert_eq!(&actual, exp, "seed {seed}, view {:?}, entity row {row}", v.features);
            }
            col += v.features.len();
        }
    }
}

/// The memory offline store (the reference implementation in core) gives
/// exactly the Parquet store's output on the same random cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_offline_store_agrees_with_the_parquet_store() {
    let features = ["stats_v:conv", "stats_v:trips", "shops_v:rating", "global_v:temp"];
    for seed in 0..40 {
        let case = generate(seed);
        let dir = tempfile::tempdir().unwrap();
        let parquet = store_for(&case, dir.path()).await;
        let expected = retrieve(&parquet, case.entities.clone(), &features, true).await;

        let offline = feature_store::offline::MemoryOfflineStore::new();
        for (path, batch) in
            [("data/stats.parquet", &case.stats), ("data/shops/", &case.shops), ("data/global_*.parquet", &case.global)]
        {
            offline.insert(
                path,
                batch.schema(),
                vec![
                    batch.slice(0, batch.num_rows() / 2),
                    batch.slice(batch.num_rows() / 2, batch.num_rows() - batch.num_rows() / 2),
                ],
            );
        }
        let memory = FeatureStore::builder(feature_store::RepoConfig::new("pit", "memory://reference/registry.json"))
            .with_registry_store(Arc::new(feature_store::registry::MemoryRegistryStore::new()))
            .with_offline_store(Arc::new(offline))
            .build()
            .unwrap();
        let defs = feature_store::Definitions::from_yaml(&definitions(&case), "features.yaml").unwrap();
        memory.apply(&defs, ApplyMode::Sync).await.unwrap();
        let got = retrieve(&memory, case.entities.clone(), &features, true).await;
        assert_eq!(got.schema().fields().len(), expected.schema().fields().len(), "seed {seed}");
        for (i, f) in expected.schema().fields().iter().enumerate() {
            assert_eq!(got.schema().field(i).name(), f.name(), "seed {seed}");
            assert_eq!(got.column(i).as_ref(), expected.column(i).as_ref(), "seed {seed}: column {}", f.name());
        }
    }
    // Files and SQL need a query engine: said so.
    let offline = feature_store::offline::MemoryOfflineStore::new();
    let memory = FeatureStore::builder(feature_store::RepoConfig::new("pit", "memory://reference/r.json"))
        .with_registry_store(Arc::new(feature_store::registry::MemoryRegistryStore::new()))
        .with_offline_store(Arc::new(offline))
        .build()
        .unwrap();
    let e = memory
        .get_historical_features(
            EntityInput::Sql("SELECT 1".into()),
            &Features::refs(["x:y"]),
            &HistoricalOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not found") || e.to_string().contains("Arrow batches"), "{e}");
}

fn entity_rows(ids: &[Option<i64>], times: &[&str]) -> RecordBatch {
    let ms: Vec<Option<i64>> =
        times.iter().map(|t| Some(chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_millis())).collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, true),
            Field::new("event_timestamp", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
        ])),
        vec![Arc::new(Int64Array::from(ids.to_vec())), ts_array(TimeUnit::Millisecond, Some("UTC"), &ms)],
    )
    .unwrap()
}

fn table(batch: &RecordBatch) -> String {
    arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch)).unwrap().to_string()
}

/// Source rows (driver 1): 10:00 conv 0.1 (created 10:05), 10:00 conv 0.2
/// (created 10:01), 11:00 conv 0.3, 12:00 conv 0.4; driver 2: 09:00 conv 0.9.
/// ttl 1h, so 11:00 is still valid at exactly 12:00 but not after.
#[tokio::test]
async fn golden_table() {
    let dir = tempfile::tempdir().unwrap();
    let ms = |t: &str| Some(chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_millis());
    let src = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, true),
            Field::new("event_timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("created", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("conv", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 1, 1, 1, 2])),
            ts_array(
                TimeUnit::Microsecond,
                Some("UTC"),
                &[
                    ms("2024-01-01T10:00:00Z"),
                    ms("2024-01-01T10:00:00Z"),
                    ms("2024-01-01T11:00:00Z"),
                    ms("2024-01-01T12:00:00Z"),
                    ms("2024-01-01T09:00:00Z"),
                ],
            ),
            ts_array(
                TimeUnit::Microsecond,
                Some("UTC"),
                &[ms("2024-01-01T10:05:00Z"), ms("2024-01-01T10:01:00Z"), None, None, None],
            ),
            Arc::new(Float64Array::from(vec![0.1, 0.2, 0.3, 0.4, 0.9])),
        ],
    )
    .unwrap();
    write_parquet(&dir.path().join("data/s.parquet"), &src);
    std::fs::write(dir.path().join("feature_store.yaml"), "project: g\nregistry: data/registry.json\n").unwrap();
    std::fs::write(
        dir.path().join("f.yaml"),
        "entities: [{name: driver, join_keys: [driver_id]}]\nsources: [{name: s, path: data/s.parquet, timestamp_field: event_timestamp, created_timestamp_field: created}]\nfeature_views: [{name: v, entities: [driver], source: s, ttl: 1h}, {name: v2, entities: [driver], source: s}]\n",
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let entities = entity_rows(
        &[Some(1), Some(1), Some(1), Some(1), Some(1), Some(2), None, Some(3), Some(1)],
        &[
            "2024-01-01T09:59:59Z", // before any data
            "2024-01-01T10:00:00Z", // equal event times: created 10:05 wins
            "2024-01-01T10:59:59Z",
            "2024-01-01T12:00:00Z", // exactly at 12:00 row
            "2024-01-01T11:59:59Z", // 11:00 row still within 1h
            "2024-01-01T10:00:00Z", // 09:00 + 1h: at the ttl bound, inclusive
            "2024-01-01T10:00:00Z", // null key
            "2024-01-01T10:00:00Z", // unknown key
            "2024-01-01T10:00:00Z", // duplicate of row 2 stays duplicated
        ],
    );
    let out = retrieve(&store, entities, &["v:conv"], true).await;
    let expected = "\
+-----------+----------------------+---------+
| driver_id | event_timestamp      | v__conv |
+-----------+----------------------+---------+
| 1         | 2024-01-01T09:59:59Z |         |
| 1         | 2024-01-01T10:00:00Z | 0.1     |
| 1         | 2024-01-01T10:59:59Z | 0.1     |
| 1         | 2024-01-01T12:00:00Z | 0.4     |
| 1         | 2024-01-01T11:59:59Z | 0.3     |
| 2         | 2024-01-01T10:00:00Z | 0.9     |
|           | 2024-01-01T10:00:00Z |         |
| 3         | 2024-01-01T10:00:00Z |         |
| 1         | 2024-01-01T10:00:00Z | 0.1     |
+-----------+----------------------+---------+";
    assert_eq!(table(&out), expected, "\n{}", table(&out));

    // Same output name from two views without full names: an error that says so.
    let err = store
        .get_historical_features(
            EntityInput::batch(entity_rows(&[Some(1)], &["2024-01-01T10:00:00Z"])),
            &Features::refs(["v:conv", "v2:conv"]),
            &HistoricalOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("output column \"conv\" would come from both v:conv and v2:conv"), "{err}");
}

#[tokio::test]
async fn errors_name_the_problem() {
    let case = generate(7);
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(&case, dir.path()).await;
    let run = |entities: RecordBatch, features: Vec<&'static str>, ts: &'static str| {
        let store = store.clone();
        async move {
            store
                .get_historical_features(
                    EntityInput::batch(entities),
                    &Features::refs(features),
                    &HistoricalOptions::default().with_timestamp_column(ts),
                )
                .await
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
    };
    let e = run(case.entities.clone(), vec!["stats_v:conv"], "when").await;
    assert!(e.contains("no timestamp column \"when\"") && e.contains("driver_id, region"), "{e}");
    let e = run(case.entities.clone(), vec!["stats_v:conv"], "label").await;
    assert!(e.contains("column \"label\" is Int64 (int64), not a timestamp"), "{e}");
    let e = run(case.entities.clone(), vec!["stats_v:nope"], "event_timestamp").await;
    assert!(e.contains("feature \"stats_v:nope\" not found"), "{e}");
    let e = run(case.entities.clone(), vec!["nope_v:conv"], "event_timestamp").await;
    assert!(e.contains("feature view \"nope_v\" not found"), "{e}");
    // A string key where the view joins on int64.
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Utf8, true),
            Field::new("event_timestamp", DataType::Timestamp(TimeUnit::Second, None), true),
        ])),
        vec![Arc::new(StringArray::from(vec!["1"])), Arc::new(TimestampSecondArray::from(vec![1]))],
    )
    .unwrap();
    let e = run(bad, vec!["stats_v:conv"], "event_timestamp").await;
    assert!(
        e.contains("join key column \"driver_id\" is Utf8 (string) but feature view \"stats_v\" joins on it as int64"),
        "{e}"
    );
    // Source files changed after apply: a feature column of a type the
    // declared one cannot take losslessly, or no column at all, is an error
    // (not a silent cast), as in materialization's schema contract.
    let stats = &case.stats;
    let trips = stats.schema().index_of("trips").unwrap();
    let mut columns = stats.columns().to_vec();
    columns[trips] = arrow::compute::cast(&columns[trips], &DataType::Float64).unwrap();
    let mut fields: Vec<Field> = stats.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[trips] = Field::new("trips", DataType::Float64, true);
    let floats = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    write_parquet(&dir.path().join("data/stats.parquet"), &floats);
    let e = run(case.entities.clone(), vec!["stats_v:trips"], "event_timestamp").await;
    assert!(
        e.contains("feature view \"stats_v\"")
            && e.contains("feature \"trips\" is declared int64 but its column \"trips\" holds Float64 (float64)"),
        "{e}"
    );
    let conv = floats.schema().index_of("conv").unwrap();
    let keep: Vec<usize> = (0..floats.num_columns()).filter(|i| *i != conv).collect();
    write_parquet(&dir.path().join("data/stats.parquet"), &floats.project(&keep).unwrap());
    let e = run(case.entities.clone(), vec!["stats_v:conv"], "event_timestamp").await;
    assert!(e.contains("feature \"conv\" has no column \"conv\" in the source's files (they have: driver_id"), "{e}");
    // A damaged page (the footer intact) fails while rows are read; the
    // error names the view and source being read. The entity rows are the
    // source's own keys and times, so no row group is pruned.
    let path = dir.path().join("data/stats.parquet");
    write_parquet(&path, stats);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    bytes[4..n - 8 - footer].fill(0xff);
    std::fs::write(&path, bytes).unwrap();
    let schema = stats.schema();
    let own = stats.project(&[schema.index_of("driver_id").unwrap(), schema.index_of("event_timestamp").unwrap()]);
    let stream = store
        .get_historical_features(
            EntityInput::batch(own.unwrap()),
            &Features::refs(["stats_v:conv"]),
            &HistoricalOptions::default(),
        )
        .await;
    let e = match stream {
        Err(e) => e.to_string(),
        Ok(s) => s.collect().await.map(|_| ()).unwrap_err().to_string(),
    };
    assert!(e.contains("reading the rows of feature view \"stats_v\" (source \"stats\""), "{e}");
}

/// Every entity input kind gives the same rows: batches, a stream, a Parquet
/// file, a CSV file, and a SQL query over the sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_inputs_agree() {
    let case = generate(3);
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(&case, dir.path()).await;
    let features = Features::refs(["stats_v:conv", "global_v:temp"]);
    let opts = HistoricalOptions::default();
    let collect = |s: feature_store::BatchStream| async move {
        let schema = s.schema();
        concat_batches(&schema, &s.collect().await.unwrap()).unwrap()
    };
    let expected = collect(
        store.get_historical_features(EntityInput::batch(case.entities.clone()), &features, &opts).await.unwrap(),
    )
    .await;

    let stream = feature_store::BatchStream::from_batches(
        case.entities.schema(),
        vec![case.entities.slice(0, 3), case.entities.slice(3, case.entities.num_rows() - 3)],
    );
    let got =
        collect(store.get_historical_features(EntityInput::Stream(stream), &features, &opts).await.unwrap()).await;
    assert_eq!(got, expected);

    write_parquet(&dir.path().join("entities.parquet"), &case.entities);
    let got = collect(
        store.get_historical_features(EntityInput::Path("entities.parquet".into()), &features, &opts).await.unwrap(),
    )
    .await;
    assert_eq!(got, expected, "relative paths resolve against the repo root");

    // A folder of files reads in file-name order, rows in file order.
    let n = case.entities.num_rows();
    for (i, (start, len)) in [(0, n / 3), (n / 3, n / 3), (2 * (n / 3), n - 2 * (n / 3))].into_iter().enumerate() {
        write_parquet(&dir.path().join(format!("ents/part-{i}.parquet")), &case.entities.slice(start, len));
    }
    let got =
        collect(store.get_historical_features(EntityInput::Path("ents/".into()), &features, &opts).await.unwrap())
            .await;
    assert_eq!(got, expected, "a multi-file entity folder keeps file and row order");

    // SQL over the registered sources: entity rows straight from the stats source.
    let q =
        "SELECT driver_id, event_timestamp FROM stats WHERE driver_id IS NOT NULL ORDER BY driver_id, event_timestamp";
    let got = collect(
        store
            .get_historical_features(EntityInput::Sql(q.into()), &Features::refs(["stats_v:trips"]), &opts)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.num_rows(), case.stats.column(0).len() - case.stats.column(0).null_count());
    assert_eq!(got.schema().field(2).name(), "trips");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_feature_names_and_feature_service() {
    let case = generate(5);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("svc.yaml"),
        "feature_services:\n  - {name: svc, features: [stats_v, \"global_v:temp\"]}\n",
    )
    .unwrap();
    let store = store_for(&case, dir.path()).await;
    let out = retrieve(&store, case.entities.clone(), &["stats_v", "shops_v:rating"], true).await;
    let names: Vec<String> =
        out.schema().fields().iter().skip(case.entities.num_columns()).map(|f| f.name().clone()).collect();
    assert_eq!(names, ["stats_v__conv", "stats_v__trips", "shops_v__rating"]);
    let via_service = store
        .get_historical_features(
            EntityInput::batch(case.entities.clone()),
            &Features::service("svc"),
            &HistoricalOptions::default(),
        )
        .await
        .unwrap();
    let names: Vec<String> =
        via_service.schema().fields().iter().skip(case.entities.num_columns()).map(|f| f.name().clone()).collect();
    assert_eq!(names, ["conv", "trips", "temp"]);
    assert_eq!(
        via_service.collect().await.unwrap().iter().map(|b| b.num_rows()).sum::<usize>(),
        case.entities.num_rows()
    );
}

/// Under a memory limit too small for a view's feature rows the join spills
/// to disk (grace hash partitions) and gives the same rows as the brute force;
/// a view without entities cannot be partitioned and stops with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spills_under_a_memory_limit_with_identical_results() {
    let mut checked = 0;
    let mut spilled_seeds = 0;
    let mut chain_spilled = 0;
    for seed in 0..12 {
        let case = generate_scaled(seed, 60);
        if case.stats.num_rows() < 6000 || case.shops.num_rows() < 3000 {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = store_for(&case, dir.path()).await;
        let mut config = store.config().clone();
        config.offline_store.memory_limit = Some("60KiB".into());
        let limited = feature_store::from_config(config).unwrap();
        // Planned on the Parquet store directly, so the join's metrics can be read afterwards.
        let parquet = feature_store::parquet::ParquetOfflineStore::new(dir.path(), Default::default())
            .with_memory_limit(Some(60 << 10));
        let features = Features::refs(["stats_v:conv", "stats_v:trips", "shops_v:rating"]);
        let request = limited
            .historical_request(EntityInput::batch(case.entities.clone()), &features, &HistoricalOptions::default())
            .await
            .unwrap();
        let plan = parquet.plan_historical(request).await.unwrap();
        let stream = plan.execute().unwrap();
        let schema = stream.schema();
        let out = concat_batches(&schema, &stream.collect().await.unwrap()).unwrap();
        let spilled = plan.asof_metric("spill_count");
        assert_eq!(spilled > 0, plan.asof_metric("spilled_bytes") > 0, "spill files have bytes");
        assert_eq!(spilled > 0, plan.asof_metric("spill_time") > 0, "spilling takes time, and only spilling");
        let Err(again) = plan.execute() else { panic!("a plan runs once") };
        let again = again.to_string();
        assert!(again.contains("already run"), "{again}");
        assert_eq!(
            plan.asof_metric("entity_rows"),
            2 * case.entities.num_rows(),
            "each of 2 joins reads every entity row"
        );
        assert_eq!(plan.asof_metric("output_rows"), 2 * case.entities.num_rows(), "{}", plan.display_with_metrics());
        let shown = plan.display_with_metrics();
        assert!(shown.contains("AsOfJoinExec: view=stats_v") && shown.contains("spill_count="), "{shown}");
        // Narrow entity time ranges can prune a view below the limit; most seeds spill.
        spilled_seeds += usize::from(spilled > 0);
        // The facade, with the same limit from the config, gives the same rows.
        let via_store =
            retrieve(&limited, case.entities.clone(), &["stats_v:conv", "stats_v:trips", "shops_v:rating"], false)
                .await;
        assert_eq!(via_store, out, "seed {seed}: planned and facade retrievals differ");
        assert!(shown.contains("ZipExec"), "batches under a limit join the views side by side: {shown}");
        // A one-shot stream cannot be read once per view: the views then
        // form a chain, which spills the entity rows whole; same rows.
        let batches: Vec<_> = (0..case.entities.num_rows())
            .step_by(700)
            .map(|s| case.entities.slice(s, 700.min(case.entities.num_rows() - s)))
            .collect();
        let stream = feature_store::BatchStream::from_batches(case.entities.schema(), batches);
        let request = limited
            .historical_request(EntityInput::Stream(stream), &features, &HistoricalOptions::default())
            .await
            .unwrap();
        // (At 96 KiB: here the busiest key needs over half of a 60 KiB
        // limit's pool, which fails unless it happens to fit at once.)
        let chain_store = feature_store::parquet::ParquetOfflineStore::new(dir.path(), Default::default())
            .with_memory_limit(Some(96 << 10));
        let chained = chain_store.plan_historical(request).await.unwrap();
        let rows = chained.execute().unwrap().collect().await.unwrap();
        let chain_shown = chained.display_with_metrics();
        assert!(!chain_shown.contains("ZipExec"), "{chain_shown}");
        chain_spilled += usize::from(chained.asof_metric("spill_count") > 0);
        assert_eq!(concat_batches(&schema, &rows).unwrap(), out, "seed {seed}: chained and side-by-side differ");
        let views = [
            RefView {
                source: &case.stats,
                keys: vec!["driver_id"],
                entity_keys: vec!["driver_id"],
                ts: "event_timestamp",
                created: Some("created"),
                features: vec!["conv", "trips"],
                ttl_ns: case.stats_ttl.map(|t| i128::from(t) * 1_000_000_000),
            },
            RefView {
                source: &case.shops,
                keys: vec!["region", "shop_id"],
                entity_keys: vec!["region", "shop_id"],
                ts: "ts",
                created: None,
                features: vec!["rating"],
                ttl_ns: case.shops_ttl.map(|t| i128::from(t) * 1_000_000_000),
            },
        ];
        assert_eq!(out.num_rows(), case.entities.num_rows());
        for (i, _) in case.entities.schema().fields().iter().enumerate() {
            assert_eq!(out.column(i).as_ref(), case.entities.column(i).as_ref(), "seed {seed}: entity order");
        }
        let mut col = case.entities.num_columns();
        for v in &views {
            let expected = reference(&case.entities, "event_timestamp", v);
            let got: Vec<&ArrayRef> = (0..v.features.len()).map(|k| out.column(col + k)).collect();
            for (row, exp) in expected.iter().enumerate() {
                assert_eq!(&vals_of(&got, row), exp, "seed {seed}, view {:?}, row {row} (spilled)", v.features);
            }
            col += v.features.len();
        }
        // The limit binds: the entity-less view cannot be split and says so.
        if case.global.num_rows() > 30 {
            let err = async {
                limited
                    .get_historical_features(
                        EntityInput::batch(case.entities.clone()),
                        &Features::refs(["global_v:temp", "stats_v:conv"]),
                        &HistoricalOptions::default(),
                    )
                    .await?
                    .collect()
                    .await
            }
            .await
            .map(|_| ());
            if let Err(e) = err {
                assert!(e.to_string().contains("memory_limit"), "{e}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "too few seeds had enough rows ({checked})");
    assert!(spilled_seeds * 2 >= checked, "only {spilled_seeds} of {checked} seeds spilled");
    assert!(chain_spilled * 2 >= checked, "only {chain_spilled} of {checked} chained retrievals spilled");
    eprintln!("{spilled_seeds} of {checked} seeds spilled");
}

/// `timestamp_partition`: hive partitions outside a read's time window are
/// never opened (a corrupt file there does not matter), and results equal an
/// unpartitioned read of the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_partitions_outside_the_window_are_not_read() {
    const DAY_US: i64 = 86_400_000_000;
    const JAN1: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    let dir = tempfile::tempdir().unwrap();
    for day in 0..5i64 {
        let (mut ids, mut ts, mut rate) = (vec![], vec![], vec![]);
        for h in 0..24 {
            for d in 0..10i64 {
                ids.push(d);
                ts.push(JAN1 + day * DAY_US + h * 3_600_000_000);
                rate.push((day * 100 + h) as f64 + d as f64 / 100.0);
            }
        }
        let batch = RecordBatch::try_from_iter([
            ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as ArrayRef),
            ("rate", Arc::new(Float64Array::from(rate)) as ArrayRef),
        ])
        .unwrap();
        let date = format!("2026-01-0{}", day + 1);
        write_parquet(&dir.path().join(format!("data/events/date={date}/part-0.parquet")), &batch);
        write_parquet(&dir.path().join(format!("data/clean/{date}.parquet")), &batch);
    }
    let bad = dir.path().join("data/events/date=2026-02-01/part-0.parquet");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, b"this is not a parquet file, and must never be opened").unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), "project: parts\nregistry: data/registry.json\n").unwrap();
    let defs = |partition: &str| {
        format!(
            "
entities: [{{name: driver, join_keys: [driver_id]}}]
sources:
  - {{name: events, path: data/events/, timestamp_field: event_timestamp{partition}}}
  - {{name: clean, path: data/clean/, timestamp_field: event_timestamp}}
feature_views:
  - {{name: ev_v, entities: [driver], source: events, ttl: 1d, schema: [{{name: rate, dtype: float64}}]}}
  - {{name: clean_v, entities: [driver], source: clean, ttl: 1d, schema: [{{name: rate, dtype: float64}}]}}
"
        )
    };
    std::fs::write(dir.path().join("features.yaml"), defs(", timestamp_partition: {column: date}")).unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    // Apply reads every footer: the corrupt file is a warning (a run reaching it fails), not a refusal.
    let applied = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    assert!(applied.written);
    let [warning] = &applied.plan.warnings[..] else { panic!("{:?}", applied.plan.warnings) };
    assert!(
        warning.starts_with("data source \"events\" (data/events/): ")
            && warning.contains("date=2026-02-01/part-0.parquet")
            && warning.contains("PAR1"),
        "{warning}"
    );
    assert!(applied.plan.to_string().starts_with("warning: data source \"events\""), "{}", applied.plan);

    let entities = entity_rows(
        &[Some(1), Some(2), Some(3), None],
        &["2026-01-03T05:30:00Z", "2026-01-02T23:00:00Z", "2026-01-04T00:00:00Z", "2026-01-03T00:00:00Z"],
    );
    let got = retrieve(&store, entities.clone(), &["ev_v:rate"], false).await;
    let want = retrieve(&store, entities.clone(), &["clean_v:rate"], false).await;
    assert_eq!(got.column(got.num_columns() - 1).as_ref(), want.column(want.num_columns() - 1).as_ref());
    assert_eq!(got.column(got.num_columns() - 1).null_count(), 1);

    // Materialization and validation of a window skip the corrupt partition too.
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-02T00:00:00Z").unwrap().to_utc();
    let end = chrono::DateTime::parse_from_rfc3339("2026-01-03T23:59:59Z").unwrap().to_utc();
    let views = ["ev_v".to_owned()];
    let reports = store.validate(Some(&views), Some(start), end).await.unwrap();
    assert!(reports[0].passed(), "{}", reports[0]);
    let report = store
        .materialize(start, end, &feature_store::MaterializeOptions::default().with_views(["ev_v"]))
        .await
        .unwrap();
    assert_eq!((report.views[0].rows_read, report.views[0].entities_written), (2 * 24 * 10, 10), "{report:?}");

    // Without the declaration every partition is read, and the corrupt file fails the read.
    std::fs::write(dir.path().join("features.yaml"), defs("")).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let e = crate::historical_error(&store, entities, &["ev_v:rate"]).await;
    assert!(e.contains("date=2026-02-01") || e.to_lowercase().contains("parquet"), "{e}");

    // A column that is not a partition column is a definition error.
    std::fs::write(dir.path().join("features.yaml"), defs(", timestamp_partition: {column: day}")).unwrap();
    let e = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
    assert!(e.contains("timestamp_partition.column \"day\" is not a partition column") && e.contains("date"), "{e}");
}

/// Files of one source may store event times in different units and zones:
/// they are read as the same instants; integers and floats of different
/// widths widen. Other type differences name the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_with_different_timestamp_types_read_as_instants() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z in ms
    let rows = |part: i64| -> (Vec<i64>, Vec<i64>, Vec<f64>) {
        let ids: Vec<i64> = (0..6).map(|i| i % 3).collect();
        let ms: Vec<i64> = (0..6).map(|i| base + (part * 6 + i) * 600_000).collect();
        let rate: Vec<f64> = (0..6).map(|i| (part * 6 + i) as f64).collect();
        (ids, ms, rate)
    };
    let batch = |ids: Vec<i64>, ts: ArrayRef, rate: Vec<f64>| {
        RecordBatch::try_from_iter([
            ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("event_timestamp", ts),
            ("rate", Arc::new(Float64Array::from(rate)) as ArrayRef),
        ])
        .unwrap()
    };
    let mut uniform = Vec::new();
    for (part, unit, tz) in [
        (0, TimeUnit::Microsecond, Some("UTC")),
        (1, TimeUnit::Nanosecond, None),
        (2, TimeUnit::Millisecond, Some("America/New_York")),
    ] {
        let (ids, ms, rate) = rows(part);
        let opt: Vec<Option<i64>> = ms.iter().copied().map(Some).collect();
        // The same instants in each file's unit, with its zone as metadata only.
        let ts = arrow::compute::cast(&ts_array(unit, None, &opt), &DataType::Timestamp(unit, None)).unwrap();
        let ts = match tz {
            Some(tz) => arrow::array::make_array(
                ts.to_data().into_builder().data_type(DataType::Timestamp(unit, Some(tz.into()))).build().unwrap(),
            ),
            None => ts,
        };
        let mut file = batch(ids.clone(), ts, rate.clone());
        if part == 1 {
            // Narrower key and feature types in one file widen losslessly.
            let narrow = |c: usize, t: &DataType| arrow::compute::cast(file.column(c), t).unwrap();
            let (key, rate) = (narrow(0, &DataType::Int32), narrow(2, &DataType::Float32));
            file = RecordBatch::try_from_iter([
                ("driver_id", key),
                ("event_timestamp", Arc::clone(file.column(1))),
                ("rate", rate),
            ])
            .unwrap();
        }
        write_parquet(&dir.path().join(format!("data/mixed/part-{part}.parquet")), &file);
        uniform.push(batch(ids, ts_array(TimeUnit::Microsecond, Some("UTC"), &opt), rate));
    }
    let uniform = concat_batches(&uniform[0].schema(), &uniform).unwrap();
    write_parquet(&dir.path().join("data/uniform.parquet"), &uniform);
    std::fs::write(dir.path().join("feature_store.yaml"), "project: mixed\nregistry: data/registry.json\n").unwrap();
    std::fs::write(
        dir.path().join("features.yaml"),
        "
entities: [{name: driver, join_keys: [driver_id]}]
sources:
  - {name: mixed, path: data/mixed/, timestamp_field: event_timestamp}
  - {name: uniform, path: data/uniform.parquet, timestamp_field: event_timestamp}
feature_views:
  - {name: mixed_v, entities: [driver], source: mixed, ttl: 1h, schema: [{name: rate, dtype: float64}]}
  - {name: uniform_v, entities: [driver], source: uniform, ttl: 1h, schema: [{name: rate, dtype: float64}]}
",
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let times: Vec<String> = (0..18)
        .map(|i| chrono::DateTime::from_timestamp_millis(base + i * 600_000 + 300_000).unwrap().to_rfc3339())
        .collect();
    let ids: Vec<Option<i64>> = (0..18).map(|i| Some(i % 3)).collect();
    let entities = entity_rows(&ids, &times.iter().map(String::as_str).collect::<Vec<_>>());
    let got = retrieve(&store, entities.clone(), &["mixed_v:rate"], false).await;
    let want = retrieve(&store, entities, &["uniform_v:rate"], false).await;
    let (g, w) = (got.column(got.num_columns() - 1), want.column(want.num_columns() - 1));
    assert_eq!(g.as_ref(), w.as_ref());
    assert_eq!(g.null_count(), 0);
    // Materialization and profiles read the mixed source too.
    let end = chrono::DateTime::from_timestamp_millis(base + 18 * 600_000).unwrap();
    let report = store
        .materialize(end - chrono::Duration::days(1), end, &feature_store::MaterializeOptions::default())
        .await
        .unwrap();
    assert!(report.views.iter().all(|v| v.entities_written == 3), "{report:?}");
    let p = store.profile("mixed_v", None, end, false).await.unwrap();
    assert_eq!(p.rows, 18);

    // A feature stored as int64 in one file and float64 in the others: named with both files.
    let (ids, ms, _) = rows(3);
    let opt: Vec<Option<i64>> = ms.iter().copied().map(Some).collect();
    let odd = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("event_timestamp", ts_array(TimeUnit::Microsecond, Some("UTC"), &opt)),
        ("rate", Arc::new(Int64Array::from(vec![1i64; 6])) as ArrayRef),
    ])
    .unwrap();
    write_parquet(&dir.path().join("data/mixed/part-3.parquet"), &odd);
    let e = store.profile("mixed_v", None, end, false).await.unwrap_err().to_string();
    assert!(e.contains("column \"rate\" is Float64") && e.contains("part-3.parquet"), "{e}");
}

/// A CSV entity table's times keep their nanoseconds: an entity row 400 ns
/// after a feature row sees it, one 50 ns before does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_entity_times_keep_nanoseconds() {
    let dir = tempfile::tempdir().unwrap();
    let t = 1_767_225_600_000_000_000i64; // 2026-01-01T00:00:00Z in ns
    let rows = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![7, 7])) as ArrayRef),
        (
            "event_timestamp",
            Arc::new(arrow::array::TimestampNanosecondArray::from(vec![t + 100, t + 1_000]).with_timezone("UTC"))
                as ArrayRef,
        ),
        ("rate", Arc::new(Float64Array::from(vec![1.0, 2.0])) as ArrayRef),
    ])
    .unwrap();
    write_parquet(&dir.path().join("data/ns.parquet"), &rows);
    std::fs::write(dir.path().join("feature_store.yaml"), "project: ns\nregistry: data/registry.json\n").unwrap();
    std::fs::write(
        dir.path().join("features.yaml"),
        "
entities: [{name: driver, join_keys: [driver_id]}]
sources: [{name: ns, path: data/ns.parquet, timestamp_field: event_timestamp}]
feature_views: [{name: ns_v, entities: [driver], source: ns, schema: [{name: rate, dtype: float64}]}]
",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("entities.csv"),
        "driver_id,event_timestamp\n7,2026-01-01T00:00:00.000000050Z\n7,2026-01-01T00:00:00.000000500Z\n\
         7,2026-01-01T01:00:00.000000999+01:00\n7,2026-01-01T00:00:00.000001\n",
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let s = store
        .get_historical_features(
            EntityInput::Path("entities.csv".into()),
            &Features::refs(["ns_v:rate"]),
            &HistoricalOptions::default(),
        )
        .await
        .unwrap();
    let schema = s.schema();
    let got = concat_batches(&schema, &s.collect().await.unwrap()).unwrap();
    let rate: Vec<Option<f64>> = got.column_by_name("rate").unwrap().as_primitive::<Float64Type>().iter().collect();
    assert_eq!(rate, [None, Some(1.0), Some(1.0), Some(2.0)]);
    let times = ns(got.column_by_name("event_timestamp").unwrap());
    let t = i128::from(t);
    assert_eq!(times, [Some(t + 50), Some(t + 500), Some(t + 999), Some(t + 1_000)]);
}

/// Parquet writers leave NaN out of float min/max statistics; a row group
/// holding [NaN, 1.0] has min = max = 1.0, which DataFusion 55 would take for
/// a constant column. NaN must come back as NaN, and rank above every number
/// when it breaks a tie (IEEE total order), whatever the file layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_feature_values_are_read_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z in ms
    let source = |ids: Vec<i64>, ms: Vec<i64>, x: Vec<f64>| {
        let ms: Vec<Option<i64>> = ms.into_iter().map(Some).collect();
        RecordBatch::try_from_iter([
            ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("event_timestamp", ts_array(TimeUnit::Millisecond, Some("UTC"), &ms)),
            ("x", Arc::new(Float64Array::from(x)) as ArrayRef),
        ])
        .unwrap()
    };
    // Driver 1: NaN at +0, 1.0 at +1 min. Driver 2: NaN and 1.0 tied at +0.
    write_parquet(
        &dir.path().join("data/one/all.parquet"),
        &source(vec![1, 1, 2, 2], vec![base, base + 60_000, base, base], vec![f64::NAN, 1.0, f64::NAN, 1.0]),
    );
    // The tie again, split over two files.
    write_parquet(&dir.path().join("data/two/a.parquet"), &source(vec![2], vec![base], vec![1.0]));
    write_parquet(&dir.path().join("data/two/b.parquet"), &source(vec![2], vec![base], vec![f64::NAN]));
    std::fs::write(dir.path().join("feature_store.yaml"), "project: nan\nregistry: data/registry.json\n").unwrap();
    std::fs::write(
        dir.path().join("features.yaml"),
        "
entities: [{name: driver, join_keys: [driver_id]}]
sources:
  - {name: one, path: data/one/, timestamp_field: event_timestamp}
  - {name: two, path: data/two/, timestamp_field: event_timestamp}
feature_views:
  - {name: one_v, entities: [driver], source: one, schema: [{name: x, dtype: float64}]}
  - {name: two_v, entities: [driver], source: two, schema: [{name: x, dtype: float64}]}
",
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
    let times = [at(base), at(base + 60_000), at(base)];
    let entities = entity_rows(&[Some(1), Some(1), Some(2)], &times.iter().map(String::as_str).collect::<Vec<_>>());
    let got = retrieve(&store, entities.clone(), &["one_v:x"], false).await;
    let x = got.column(got.num_columns() - 1).as_primitive::<Float64Type>();
    assert!(x.value(0).is_nan(), "{}", table(&got));
    assert_eq!(x.value(1), 1.0, "{}", table(&got));
    assert!(x.value(2).is_nan(), "the tie goes to NaN: {}", table(&got));
    let split = retrieve(&store, entities, &["two_v:x"], false).await;
    let y = split.column(split.num_columns() - 1).as_primitive::<Float64Type>();
    assert!(y.value(2).is_nan(), "the same tie over two files: {}", table(&split));
}

/// A file whose footer reads but whose pages do not decode (a corrupt
/// dictionary index, say) fails a retrieval or materialization that reaches
/// it, naming that file among the source's others: DataFusion's reader
/// says only what failed, so the files are decoded again to find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_does_not_decode_is_named_with_its_file() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    const JAN1: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    let dir = tempfile::tempdir().unwrap();
    for part in 0..3i64 {
        let n = 2000;
        let ids: Vec<i64> = (0..n).map(|i| i % 50).collect();
        let ts: Vec<i64> = (0..n).map(|i| JAN1 + part * 86_400_000_000 + i * 1_000_000).collect();
        // Few distinct values: dictionary encoded, indices in the data pages.
        let city: Vec<String> = (0..n).map(|i| format!("city-{}", (i * 7 + part) % 13)).collect();
        let batch = RecordBatch::try_from_iter([
            ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as ArrayRef),
            ("city", Arc::new(StringArray::from(city)) as ArrayRef),
        ])
        .unwrap();
        write_parquet(&dir.path().join(format!("data/trips/part-{part}.parquet")), &batch);
    }
    // Overwrite the middle of part-1's `city` data page (after its header): the footer stays valid.
    let bad = dir.path().join("data/trips/part-1.parquet");
    let reader = SerializedFileReader::new(std::fs::File::open(&bad).unwrap()).unwrap();
    let chunk = reader.metadata().row_group(0).column(2).clone();
    let (start, len) = (chunk.data_page_offset() as usize, chunk.compressed_size() as usize);
    let dict_len = chunk.dictionary_page_offset().map_or(0, |d| chunk.data_page_offset() as usize - d as usize);
    let data_len = len - dict_len;
    assert!(data_len > 64, "test bug: the data page is {data_len} bytes");
    let mut bytes = std::fs::read(&bad).unwrap();
    for b in &mut bytes[start + data_len / 2 - 16..start + data_len / 2 + 16] {
        *b = 0xFF;
    }
    std::fs::write(&bad, bytes).unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), "project: pages\nregistry: data/registry.json\n").unwrap();
    std::fs::write(
        dir.path().join("features.yaml"),
        "
entities: [{name: driver, join_keys: [driver_id]}]
sources: [{name: trips, path: data/trips/, timestamp_field: event_timestamp}]
feature_views:
  - {name: trips_v, entities: [driver], source: trips, schema: [{name: city, dtype: string}]}
",
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let named =
        |e: &str| e.contains("part-1.parquet does not decode") && !e.contains("part-0") && !e.contains("part-2");
    let entities = entity_rows(&[Some(1), Some(2)], &["2026-01-05T00:00:00Z", "2026-01-05T00:00:00Z"]);
    let e = crate::historical_error(&store, entities, &["trips_v:city"]).await;
    assert!(named(&e) && e.contains("feature view \"trips_v\""), "{e}");
    let start = chrono::DateTime::parse_from_rfc3339("2025-12-01T00:00:00Z").unwrap().to_utc();
    let end = chrono::DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z").unwrap().to_utc();
    let e = store.materialize(start, end, &feature_store::MaterializeOptions::default()).await.unwrap_err().to_string();
    assert!(named(&e) && e.contains("trips_v"), "{e}");
}

/// A list column whose items pyarrow names `element` in one file and
/// arrow-rs or polars `item` in another (a push into a pyarrow-written
/// source, say) is one column: retrieval and materialization read both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_items_named_differently_by_writers_are_one_column() {
    use arrow::array::{ListBuilder, StringBuilder};
    const JAN1: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    let dir = tempfile::tempdir().unwrap();
    for (file, item, driver) in [("a", "item", 1i64), ("b", "element", 2)] {
        let mut tags =
            ListBuilder::new(StringBuilder::new()).with_field(Field::new(item, DataType::Utf8, item == "element"));
        tags.values().append_value(format!("{file}-x"));
        tags.values().append_value(format!("{file}-y"));
        tags.append(true);
        let batch = RecordBatch::try_from_iter([
            ("driver_id", Arc::new(Int64Array::from(vec![driver])) as ArrayRef),
            ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(vec![JAN1]).with_timezone("UTC")) as ArrayRef),
            ("tags", Arc::new(tags.finish()) as ArrayRef),
        ])
        .unwrap();
        write_parquet(&dir.path().join(format!("data/tags/{file}.parquet")), &batch);
    }
    std::fs::write(dir.path().join("feature_store.yaml"), "project: lists\nregistry: data/registry.json\n").unwrap();
    std::fs::write(
        dir.path().join("features.yaml"),
        "
entities: [{name: driver, join_keys: [driver_id]}]
sources: [{name: tags, path: data/tags/, timestamp_field: event_timestamp}]
feature_views:
  - {name: tags_v, entities: [driver], source: tags, schema: [{name: tags, dtype: list<string>}]}
",
    )
    .unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    let applied = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    assert!(applied.plan.warnings.is_empty(), "{:?}", applied.plan.warnings);
    let entities = entity_rows(&[Some(1), Some(2)], &["2026-01-02T00:00:00Z", "2026-01-02T00:00:00Z"]);
    let got = retrieve(&store, entities, &["tags_v:tags"], false).await;
    let tags = got.column_by_name("tags").unwrap().as_list::<i32>();
    let texts: Vec<Vec<String>> =
        (0..2).map(|i| tags.value(i).as_string::<i32>().iter().map(|s| s.unwrap().to_owned()).collect()).collect();
    assert_eq!(texts, [vec!["a-x", "a-y"], vec!["b-x", "b-y"]]);
    let start = chrono::DateTime::parse_from_rfc3339("2025-12-01T00:00:00Z").unwrap().to_utc();
    let end = chrono::DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z").unwrap().to_utc();
    let report = store.materialize(start, end, &feature_store::MaterializeOptions::default()).await.unwrap();
    assert_eq!(report.views[0].entities_written, 2, "{report:?}");
}
