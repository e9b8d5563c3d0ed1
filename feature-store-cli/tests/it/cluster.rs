//! Retrieval on an Apache DataFusion Ballista cluster: a scheduler and two
//! executors, each a process of this binary (`feature-store cluster ...`)
//! on free ports, against the local engine on the same random cases.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use feature_store::{EntityInput, FeatureStore, Features, HistoricalOptions};
use feature_store_tests::free_port;
use feature_store_tests::random_case::{Case, definitions_at, files, generate, store_for};

use super::{cli, fail, ok};

/// A scheduler and executors, killed on drop.
struct TestCluster {
    scheduler: Child,
    executors: Vec<Child>,
    /// Each executor's `host:port`, as errors name it.
    executor_names: Vec<String>,
    port: u16,
    dir: tempfile::TempDir,
}

/// How the executor processes run.
#[derive(Clone, Copy)]
enum Executors<'a> {
    /// `feature-store cluster executor`.
    WithCodec,
    /// As a stock Ballista executor (Ballista's codec, not this project's).
    Stock,
    /// With this folder hidden from them (an empty tmpfs mounted over it in
    /// their own mount namespace): files there cannot be opened.
    Hiding(&'a Path),
}

impl TestCluster {
    fn start(executors: usize) -> Self {
        Self::start_with(executors, Executors::WithCodec)
    }

    fn start_with(executors: usize, how: Executors<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let scheduler = spawn(&dir, "scheduler", None, &["cluster", "scheduler", "--port", &port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the scheduler did not listen on {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut cluster = Self { scheduler, executors: Vec::new(), executor_names: Vec::new(), port, dir };
        for i in 0..executors {
            let work = cluster.dir.path().join(format!("work{i}"));
            std::fs::create_dir_all(&work).unwrap();
            let (port, address) = (free_port().to_string(), cluster.address());
            let mut args = vec![
                "cluster",
                "executor",
                "--scheduler",
                &address,
                "--port",
                &port,
                "--work-dir",
                work.to_str().unwrap(),
                "--concurrent-tasks",
                "2",
            ];
            let mut hidden = None;
            match how {
                Executors::WithCodec => {}
                Executors::Stock => args.push("--stock"),
                Executors::Hiding(path) => hidden = Some(path),
            }
            let child = spawn(&cluster.dir, &format!("executor{i}"), hidden, &args);
            cluster.executors.push(child);
            cluster.executor_names.push(format!("127.0.0.1:{port}"));
        }
        cluster
    }

    fn address(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// The processes' logs, for a failure's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: String = text.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect();
                out.push_str(&format!("--- {}\n{tail}\n", entry.path().display()));
            }
        }
        out
    }
}

impl TestCluster {
    /// Whether any process's whole log holds `text`.
    fn log_contains(&self, text: &str) -> bool {
        std::fs::read_dir(self.dir.path()).unwrap().flatten().any(|entry| {
            entry.path().extension().is_some_and(|e| e == "log")
                && std::fs::read_to_string(entry.path()).is_ok_and(|t| t.contains(text))
        })
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain(std::iter::once(&mut self.scheduler)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// This binary with `args`, its output in `dir/NAME.log`; with `hidden`,
/// in a mount namespace where that folder is an empty tmpfs.
fn spawn(dir: &tempfile::TempDir, name: &str, hidden: Option<&Path>, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
    let bin = env!("CARGO_BIN_EXE_feature-store");
    let mut command = match hidden {
        None => Command::new(bin),
        Some(path) => {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c", r#"mount -t tmpfs none "$0" && exec "$@""#])
                .arg(path)
                .arg(bin);
            c
        }
    };
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start feature-store cluster")
}

/// Why executors cannot be started with a folder hidden, if they cannot:
/// that takes `unshare` and the right to mount (root, usually).
fn cannot_hide_folders() -> Option<String> {
    let probe = tempfile::tempdir().unwrap();
    let script = r#"mount -t tmpfs none "$0""#;
    match Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(probe.path())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("unshare --mount failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Some(format!("unshare is not available: {e}")),
    }
}

/// The same repo as `store`, retrieving on the cluster at `scheduler`.
fn on_cluster(dir: &Path, scheduler: &str, extra: impl FnOnce(&mut feature_store::RepoConfig)) -> FeatureStore {
    let mut config = feature_store::RepoConfig::load(dir).unwrap();
    config.offline_store.engine = Some("ballista".into());
    config.offline_store.scheduler = Some(scheduler.into());
    config.offline_store.partitions = Some(3);
    extra(&mut config);
    feature_store::from_config(config).unwrap()
}

async fn retrieve(
    store: &FeatureStore,
    entities: RecordBatch,
    features: &[&str],
) -> feature_store::Result<RecordBatch> {
    let stream = store
        .get_historical_features(
            EntityInput::batch(entities),
            &Features::refs(features.iter().copied()),
            &HistoricalOptions::default().with_full_feature_names(true),
        )
        .await?;
    let schema = stream.schema();
    let batches = stream.collect().await?;
    Ok(concat_batches(&schema, &batches).unwrap())
}

const FEATURES: [&str; 4] = ["stats_v:conv", "stats_v:trips", "shops_v:rating", "global_v:temp"];

fn assert_same(seed: u64, got: &RecordBatch, expected: &RecordBatch) {
    assert_eq!(got.num_rows(), expected.num_rows(), "seed {seed}: rows");
    assert_eq!(got.schema().fields().len(), expected.schema().fields().len(), "seed {seed}: columns");
    for (i, f) in expected.schema().fields().iter().enumerate() {
        assert_eq!(got.schema().field(i).name(), f.name(), "seed {seed}");
        assert_eq!(got.column(i).as_ref(), expected.column(i).as_ref(), "seed {seed}: column {}", f.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_retrieval_equals_the_local_engine() {
    let cluster = TestCluster::start(2);
    // Local files every executor sees (the random seeds of the local suite).
    for seed in 0..40 {
        let case = generate(seed);
        let dir = tempfile::tempdir().unwrap();
        let local = store_for(&case, dir.path()).await;
        let expected = retrieve(&local, case.entities.clone(), &FEATURES).await.unwrap();
        let remote = on_cluster(dir.path(), &cluster.address(), |_| {});
        let got = match retrieve(&remote, case.entities.clone(), &FEATURES).await {
            Ok(got) => got,
            Err(e) => panic!("seed {seed}: {e}\n{}", cluster.logs()),
        };
        assert_same(seed, &got, &expected);
    }
    // The work ran on the executors: each made a job folder in its work dir
    // (Ballista deletes the shuffle files inside when a job ends).
    for i in 0..2 {
        let jobs = std::fs::read_dir(cluster.dir.path().join(format!("work{i}"))).unwrap().count();
        assert!(jobs > 0, "executor {i} ran no job\n{}", cluster.logs());
    }

    // Sources on the S3 test server, read by the executors with the
    // offline store's storage options.
    let mut moto = feature_store_tests::moto::MotoServer::start();
    moto.create_bucket("cluster");
    let s3 =
        feature_store::object_store::location::resolve("s3://cluster/", Path::new("/"), &moto.options()).unwrap().store;
    for seed in [3, 7, 11] {
        let case: Case = generate(seed);
        for (path, batch) in files(&case) {
            feature_store_tests::put_parquet(&s3, &format!("seed{seed}/{path}"), &batch).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let options: String = moto.options().iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
        std::fs::write(
            dir.path().join("feature_store.yaml"),
            format!("project: pit\nregistry: data/registry.json\noffline_store:\n  storage_options:\n{options}"),
        )
        .unwrap();
        std::fs::write(dir.path().join("features.yaml"), definitions_at(&case, &format!("s3://cluster/seed{seed}/")))
            .unwrap();
        let local = feature_store::open(dir.path()).unwrap();
        local.apply(&local.repo_definitions().unwrap(), feature_store::registry::ApplyMode::Sync).await.unwrap();
        let expected = retrieve(&local, case.entities.clone(), &FEATURES).await.unwrap();
        let remote = on_cluster(dir.path(), &cluster.address(), |_| {});
        let got = match retrieve(&remote, case.entities.clone(), &FEATURES).await {
            Ok(got) => got,
            Err(e) => panic!("seed {seed} on S3: {e}\n{}", cluster.logs()),
        };
        assert_same(seed, &got, &expected);
        // Written by the executors straight to S3: files of 40 rows, in order.
        let folder = format!("s3://cluster/out/seed{seed}/");
        let written = remote
            .write_historical_features(
                EntityInput::batch(case.entities.clone()),
                &Features::refs(FEATURES),
                &HistoricalOptions::default().with_full_feature_names(true),
                &folder,
                Some(40),
            )
            .await
            .unwrap_or_else(|e| panic!("seed {seed}, folder on S3: {e}\n{}", cluster.logs()));
        assert_eq!(written.rows as usize, expected.num_rows());
        assert_eq!(written.files.len(), expected.num_rows().div_ceil(40), "seed {seed}: {written:?}");
        let (manifest, batches) = read_folder(&folder, &moto.options()).await;
        assert_eq!(manifest["rows"].as_u64(), Some(expected.num_rows() as u64));
        let got = concat_batches(&expected.schema(), &batches).unwrap();
        assert_same(seed, &got, &expected);
    }
    moto.stop();

    // The CLI: `--engine ballista --scheduler` on historical, output equal to the local run's.
    let case = generate(5);
    let dir = tempfile::tempdir().unwrap();
    store_for(&case, dir.path()).await;
    feature_store_tests::write_parquet(&dir.path().join("entities.parquet"), &case.entities);
    let (local_out, remote_out) = (dir.path().join("local.parquet"), dir.path().join("remote.parquet"));
    ok(&historical(dir.path(), &[], &local_out));
    let address = cluster.address();
    let out = historical(dir.path(), &["--engine", "ballista", "--scheduler", &address], &remote_out);
    ok(&out);
    assert_eq!(read(&remote_out), read(&local_out), "the CLI's cluster output differs from the local one");
    // The job's id, address and progress, from the scheduler's REST API.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cluster job finished")
            && stderr.contains("stages=")
            && stderr.contains("bytes_shuffled=")
            && stderr.contains("/api/job/"),
        "no progress from the cluster job: {stderr}"
    );

    // Folder outputs, by this process and by the executors: files of 30
    // rows that, read in the manifest's order, are the single file's rows.
    let expected = concat(read(&local_out));
    let folder_flags = ["--rows-per-file", "30"];
    let cluster_flags = ["--engine", "ballista", "--scheduler", address.as_str(), "--rows-per-file", "30"];
    for (name, flags) in [("local", &folder_flags[..]), ("cluster", &cluster_flags[..])] {
        let folder = dir.path().join(format!("out_{name}"));
        let as_folder = |p: &Path| format!("{}/", p.display());
        for _ in 0..2 {
            // The second run replaces the first's files.
            ok(&historical(dir.path(), flags, Path::new(&as_folder(&folder))));
            let (manifest, batches) = read_folder(&as_folder(&folder), &Default::default()).await;
            assert_eq!(concat(batches), expected, "{name}: the folder's rows differ from the single file's");
            let files = manifest["files"].as_array().unwrap().len();
            assert_eq!(files, expected.num_rows().div_ceil(30), "{name}: {manifest}");
            let on_disk = std::fs::read_dir(&folder).unwrap().count();
            assert_eq!(on_disk, files + 1, "{name}: files besides this run's and the manifest");
        }
        // A folder holding other files is not written into.
        std::fs::write(folder.join("notes.txt"), "mine").unwrap();
        let e = fail(&historical(dir.path(), flags, Path::new(&as_folder(&folder))));
        assert!(e.contains("notes.txt"), "{e}");
    }

    // An entity file over DataFusion's 10 MiB threshold for splitting a scan
    // into byte ranges, in four row groups: every row comes back, in order
    // (the cluster once returned the first row group only).
    let big = big_entities(&case.entities, 800_000);
    let file = std::fs::File::create(dir.path().join("entities.parquet")).unwrap();
    let props =
        parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(200_000)).build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, big.schema(), Some(props)).unwrap();
    writer.write(&big).unwrap();
    writer.close().unwrap();
    assert!(std::fs::metadata(dir.path().join("entities.parquet")).unwrap().len() > 10 << 20);
    ok(&historical(dir.path(), &[], &local_out));
    ok(&historical(dir.path(), &["--engine", "ballista", "--scheduler", &address], &remote_out));
    let (local, remote) = (read(&local_out), read(&remote_out));
    assert_eq!(local.iter().map(RecordBatch::num_rows).sum::<usize>(), 800_000);
    assert_eq!(remote, local, "a large entity file: the cluster's output differs from the local one");
}

/// On-demand features over two views and a request field: computed on the
/// executors (each partition's joined rows), equal to the local engine's,
/// also when the executors write a folder; a view calling a function
/// registered in this process is refused before the job is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_features_on_the_cluster_equal_the_local_engine() {
    const ON_DEMAND: &str = r#"
request_sources:
  - name: req
    schema: [{name: shop_id, dtype: int64}]
on_demand_feature_views:
  - name: od
    sources: [stats_v, shops_v, req]
    features:
      - {name: conv_x_rating, dtype: float64, expression: "conv * rating"}
      - {name: trips_plus_shop, dtype: int64, expression: "COALESCE(trips, 0) + shop_id"}
      - {name: busy, dtype: bool, expression: "trips > 1 OR rating IS NULL"}
  - name: od_req
    sources: [req]
    features:
      - {name: shop_twice, dtype: int64, expression: "shop_id * 2"}
"#;
    let features = ["od:conv_x_rating", "od:trips_plus_shop", "od:busy", "stats_v:trips", "global_v:temp"];
    let cluster = TestCluster::start(2);
    for seed in 0..8 {
        let case = generate(seed);
        let dir = tempfile::tempdir().unwrap();
        store_for(&case, dir.path()).await;
        let defs = std::fs::read_to_string(dir.path().join("features.yaml")).unwrap();
        std::fs::write(dir.path().join("features.yaml"), format!("{defs}{ON_DEMAND}")).unwrap();
        let local = feature_store::open(dir.path()).unwrap();
        local.apply(&local.repo_definitions().unwrap(), feature_store::registry::ApplyMode::Sync).await.unwrap();
        let expected = retrieve(&local, case.entities.clone(), &features).await.unwrap();
        let names: Vec<&str> = expected.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
        assert!(
            names.ends_with(&[
                "stats_v__trips",
                "global_v__temp",
                "od__conv_x_rating",
                "od__trips_plus_shop",
                "od__busy"
            ]) && !names.iter().any(|n| n.contains("conv__") || n.ends_with("__conv") || n.ends_with("__rating")),
            "seed {seed}: the hidden inputs are dropped: {names:?}"
        );
        let remote = on_cluster(dir.path(), &cluster.address(), |_| {});
        let got = match retrieve(&remote, case.entities.clone(), &features).await {
            Ok(got) => got,
            Err(e) => panic!("seed {seed}: {e}\n{}", cluster.logs()),
        };
        assert_same(seed, &got, &expected);
        // No feature view at all: request fields only.
        let expected = retrieve(&local, case.entities.clone(), &["od_req:shop_twice"]).await.unwrap();
        let got = retrieve(&remote, case.entities.clone(), &["od_req:shop_twice"])
            .await
            .unwrap_or_else(|e| panic!("seed {seed}, request fields only: {e}\n{}", cluster.logs()));
        assert_same(seed, &got, &expected);
        let expected = retrieve(&local, case.entities.clone(), &features).await.unwrap();
        // Folder outputs carry them too: written here, and by the executors.
        for (name, store) in [("local", &local), ("cluster", &remote)] {
            let folder = format!("{}/out_{name}/", dir.path().display());
            store
                .write_historical_features(
                    EntityInput::batch(case.entities.clone()),
                    &Features::refs(features),
                    &HistoricalOptions::default().with_full_feature_names(true),
                    &folder,
                    Some(25),
                )
                .await
                .unwrap_or_else(|e| panic!("seed {seed}, {name} folder: {e}\n{}", cluster.logs()));
            let (_, batches) = read_folder(&folder, &Default::default()).await;
            let written = concat_batches(&expected.schema(), &batches).unwrap();
            assert_same(seed, &written, &expected);
        }
    }
    let executor_log = cluster.logs();
    assert!(!executor_log.contains("does not compile"), "{executor_log}");

    // A function registered in this process does not exist on the executors.
    use feature_store::RegisterUdf;
    use feature_store::expressions::datafusion::arrow::datatypes::DataType;
    use feature_store::expressions::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let case = generate(2);
    let dir = tempfile::tempdir().unwrap();
    store_for(&case, dir.path()).await;
    let defs = std::fs::read_to_string(dir.path().join("features.yaml")).unwrap();
    let with_udf = ON_DEMAND.replace("conv * rating", "twice(conv)");
    std::fs::write(dir.path().join("features.yaml"), format!("{defs}{with_udf}")).unwrap();
    let twice = || {
        create_udf(
            "twice",
            vec![DataType::Float64],
            DataType::Float64,
            Volatility::Immutable,
            Arc::new(|args: &[ColumnarValue]| {
                let a = args[0].to_array(1)?;
                Ok(ColumnarValue::Array(arrow::compute::kernels::numeric::add(&a, &a)?))
            }),
        )
    };
    let local = feature_store::open(dir.path()).unwrap();
    local.register_udf(twice()).unwrap();
    local.apply(&local.repo_definitions().unwrap(), feature_store::registry::ApplyMode::Sync).await.unwrap();
    let remote = on_cluster(dir.path(), &cluster.address(), |_| {});
    remote.register_udf(twice()).unwrap();
    let err = retrieve(&remote, case.entities.clone(), &features).await.unwrap_err().to_string();
    assert!(
        err.contains("\"od\"") && err.contains("twice") && err.contains("executors") && err.contains("--engine local"),
        "{err}"
    );
    // The local engine runs it.
    retrieve(&local, case.entities.clone(), &features).await.unwrap();
}

/// Materialization with the newest row per key computed on the cluster:
/// the online store ends up exactly as after a local run (values, statuses,
/// event times), with the same rows read and written per view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_materialization_equals_the_local_engine() {
    use feature_store::{MaterializeOptions, OnlineOptions};
    let cluster = TestCluster::start(2);
    let start = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z").unwrap().to_utc();
    let end = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().to_utc();
    let options = MaterializeOptions::default();
    let mut written = 0;
    for seed in 0..16 {
        let case = generate(seed);
        let dir = tempfile::tempdir().unwrap();
        let local = store_for(&case, dir.path()).await;
        let expected = local.materialize(start, end, &options).await.unwrap();
        let remote = on_cluster(dir.path(), &cluster.address(), |c| {
            c.online_store.options.insert("path".into(), "data/online_cluster.db".into());
        });
        let got = match remote.materialize(start, end, &options).await {
            Ok(got) => got,
            Err(e) => panic!("seed {seed}: {e}\n{}", cluster.logs()),
        };
        let summary = |r: &feature_store::MaterializeReport| -> Vec<(String, u64, u64)> {
            r.views.iter().map(|v| (v.view.clone(), v.rows_read, v.entities_written)).collect()
        };
        assert_eq!(summary(&got), summary(&expected), "seed {seed}: rows read and written per view");
        written += expected.views.iter().map(|v| v.entities_written).sum::<u64>();
        // Every key of the case, and keys with no rows.
        let keys = online_keys(&case);
        let features = Features::refs(FEATURES);
        let a = local.get_online_features(&features, &keys, &OnlineOptions::default()).await.unwrap();
        let b = remote.get_online_features(&features, &keys, &OnlineOptions::default()).await.unwrap();
        assert_eq!(b.values(), a.values(), "seed {seed}: online values");
        assert_eq!(b.statuses(), a.statuses(), "seed {seed}: statuses");
        assert_eq!(b.event_timestamps(), a.event_timestamps(), "seed {seed}: event times");
    }
    assert!(written > 100, "the cases materialized only {written} rows");
    // The executors did the work (each made job folders in its work dir).
    for i in 0..2 {
        let jobs = std::fs::read_dir(cluster.dir.path().join(format!("work{i}"))).unwrap().count();
        assert!(jobs > 0, "executor {i} ran no materialization job\n{}", cluster.logs());
    }

    // The CLI: `materialize --engine ballista --scheduler`, and the flags checked.
    let case = generate(9);
    let dir = tempfile::tempdir().unwrap();
    store_for(&case, dir.path()).await;
    let address = cluster.address();
    let report = ok(&cli(
        dir.path(),
        &["--json", "materialize", "2000-01-01", "2030-01-01", "--engine", "ballista", "--scheduler", &address],
    ));
    assert!(report.contains("entities_written"), "{report}");
    let bad = fail(&cli(dir.path(), &["materialize", "2000-01-01", "2030-01-01", "--engine", "ballista"]));
    assert!(bad.contains("scheduler"), "{bad}");
}

/// Aggregation views with and without entities: events over a day.
const AGG_DEFS: &str = r#"
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
      - {column: amount, function: mean, window: 1h}
      - {column: merchant, function: count_distinct, window: 1d}
      - {column: amount, function: last_n, n: 3, window: 1h}
      - {column: merchant, function: approx_count_distinct, window: 1h}
      - {column: amount, function: stddev, window: 1d}
  - name: all_agg
    source: events
    aggregation_interval: 15m
    aggregations:
      - {function: count, window: 1h, name: events_1h}
      - {column: amount, function: max, window: 1d, name: amount_max_1d}
"#;

/// Random events over a day from `base` (µs): 12 users and some null
/// keys, many events at the same minute, created times and null values.
fn agg_events(base: i64, seed: u64, rows: usize) -> RecordBatch {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let mut state = seed;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let merchants = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"];
    let (mut users, mut times, mut created, mut amounts, mut shops) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rows {
        users.push((next(20) != 0).then(|| next(12) as i64));
        times.push(base + next(24 * 60) as i64 * 60_000_000 + [0, 1, 30_000_000][next(3) as usize]);
        created.push((next(2) == 0).then(|| next(3) as i64));
        amounts.push((next(8) != 0).then(|| next(40) as f64 * 0.25 - 2.0));
        shops.push((next(8) != 0).then(|| merchants[next(7) as usize]));
    }
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, true),
        Field::new("event_timestamp", ts(), false),
        Field::new("created", ts(), true),
        Field::new("amount", DataType::Float64, true),
        Field::new("merchant", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(users)),
        Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
        Arc::new(Float64Array::from(amounts)),
        Arc::new(StringArray::from(shops)),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Jobs the executors have run (a folder each in their work dirs).
fn executor_jobs(cluster: &TestCluster, executors: usize) -> usize {
    (0..executors)
        .map(|i| std::fs::read_dir(cluster.dir.path().join(format!("work{i}"))).map_or(0, |d| d.count()))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregation_views_on_the_cluster_equal_the_local_engine() {
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use feature_store::registry::ApplyMode;
    use feature_store::{MaterializeOptions, OnlineOptions};

    let cluster = TestCluster::start(2);
    let day = 86_400_000_000i64;
    let base = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
    let at = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: agg_cluster\nregistry: data/registry.json\nonline_store: {type: sqlite, path: data/online.db}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("features.yaml"), AGG_DEFS).unwrap();
    for part in 0..3u64 {
        let path = dir.path().join(format!("data/events/part-{part}.parquet"));
        feature_store_tests::write_parquet(&path, &agg_events(base, 40 + part, 900));
    }
    let local = feature_store::open(dir.path()).unwrap();
    local.apply(&local.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let remote = on_cluster(dir.path(), &cluster.address(), |c| {
        c.online_store.options.insert("path".into(), "data/online_cluster.db".into());
    });
    let refs = [
        "user_agg:amount_sum_10m",
        "user_agg:count_1h",
        "user_agg:amount_mean_1h",
        "user_agg:merchant_count_distinct_1d",
        "user_agg:amount_last_3_1h",
        "user_agg:merchant_approx_count_distinct_1h",
        "user_agg:amount_stddev_1d",
        "all_agg:events_1h",
        "all_agg:amount_max_1d",
    ];
    let user_refs: Vec<&str> = refs.iter().copied().filter(|r| r.starts_with("user_agg:")).collect();

    // Retrieval: entity rows at many times, the cluster's rows equal the local engine's.
    let rows = 400usize;
    let mut state = 7u64;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let users: Vec<Option<i64>> = (0..rows).map(|_| (next(10) != 0).then(|| next(14) as i64)).collect();
    let times: Vec<i64> = (0..rows).map(|_| base - day / 8 + next(30 * 60) as i64 * 60_000_000).collect();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("event_timestamp", ts, false),
        ])),
        vec![Arc::new(Int64Array::from(users)), Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC"))],
    )
    .unwrap();
    let expected = retrieve(&local, entities.clone(), &refs).await.unwrap();
    let got = match retrieve(&remote, entities, &refs).await {
        Ok(got) => got,
        Err(e) => panic!("retrieval on the cluster: {e}\n{}", cluster.logs()),
    };
    assert_same(0, &got, &expected);

    // Materialization: a window, then incrementally on; tiles built by the
    // executors give the same online store as tiles built locally.
    let jobs_before = executor_jobs(&cluster, 2);
    let options = MaterializeOptions::default();
    let summary = |r: &feature_store::MaterializeReport| -> Vec<(String, u64, u64)> {
        r.views.iter().map(|v| (v.view.clone(), v.rows_read, v.entities_written)).collect()
    };
    for (start, end) in [(base - day, base + day / 2), (base + day / 3, base + day + day / 4)] {
        let want = local.materialize(at(start), at(end), &options).await.unwrap();
        let have = match remote.materialize(at(start), at(end), &options).await {
            Ok(r) => r,
            Err(e) => panic!("materialization on the cluster: {e}\n{}", cluster.logs()),
        };
        assert_eq!(summary(&have), summary(&want), "[{start}, {end}]: events read and tile rows written per view");
        assert!(want.views.iter().all(|v| v.rows_read > 0 && v.entities_written > 0), "{:?}", summary(&want));
    }
    assert!(executor_jobs(&cluster, 2) > jobs_before, "the executors ran no tile job\n{}", cluster.logs());
    let keys = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("user_id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from((0..14).map(Some).collect::<Vec<_>>()))],
    )
    .unwrap();
    // A view without entities is read with rows of no columns.
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .unwrap();
    let reads =
        [(Features::refs(user_refs.iter().copied()), keys), (Features::refs(refs[7..].iter().copied()), one_row)];
    for now in [base + day / 4 + 7_000_000, base + day / 2 - 1, base + day + 60_000_000, base + day + day / 4] {
        let options = OnlineOptions::default().with_now(at(now));
        for (features, rows) in &reads {
            let a = local.get_online_features(features, rows, &options).await.unwrap();
            let b = remote.get_online_features(features, rows, &options).await.unwrap();
            assert_eq!(b.values(), a.values(), "now {now}: online values");
            assert_eq!(b.statuses(), a.statuses(), "now {now}: statuses");
            assert_eq!(b.event_timestamps(), a.event_timestamps(), "now {now}: event times");
        }
    }
}

/// The case's entity keys that can be looked up online (every key, and
/// keys with no rows; rows with a null key left out).
fn online_keys(case: &Case) -> RecordBatch {
    let keys = case.entities.project(&[0, 1, 2]).unwrap();
    let usable = arrow::compute::and(
        &arrow::compute::is_not_null(keys.column(0)).unwrap(),
        &arrow::compute::is_not_null(keys.column(2)).unwrap(),
    )
    .unwrap();
    arrow::compute::filter_record_batch(&keys, &usable).unwrap()
}

/// `rows` entity rows: `entities` repeated, plus columns of pseudo-random
/// numbers that do not compress (so the file is large).
fn big_entities(entities: &RecordBatch, rows: usize) -> RecordBatch {
    let copies = vec![entities.clone(); rows.div_ceil(entities.num_rows())];
    let repeated = concat_batches(&entities.schema(), &copies).unwrap().slice(0, rows);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = || {
        arrow::array::Int64Array::from_iter_values((0..rows).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as i64
        }))
    };
    let mut fields: Vec<arrow::datatypes::FieldRef> = repeated.schema().fields().iter().cloned().collect();
    let mut columns = repeated.columns().to_vec();
    for i in 0..3 {
        fields.push(Arc::new(arrow::datatypes::Field::new(
            format!("noise{i}"),
            arrow::datatypes::DataType::Int64,
            false,
        )));
        columns.push(Arc::new(noise()));
    }
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap()
}

/// An executor that dies while still registered: its tasks fail to launch
/// or to report, and Ballista runs them on the other executor; the job
/// completes with the local result, or fails with a clear error and leaves
/// no output file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executor_leaves_the_result_or_a_clear_error() {
    let mut cluster = TestCluster::start(2);
    let case = feature_store_tests::random_case::generate_scaled(4, 40);
    let dir = tempfile::tempdir().unwrap();
    store_for(&case, dir.path()).await;
    feature_store_tests::write_parquet(&dir.path().join("entities.parquet"), &case.entities);
    let local_out = dir.path().join("local.parquet");
    ok(&historical(dir.path(), &[], &local_out));
    let address = cluster.address();
    // Both executors registered: a first job runs.
    ok(&historical(dir.path(), &["--engine", "ballista", "--scheduler", &address], &dir.path().join("warm.parquet")));
    cluster.executors[1].kill().unwrap();
    cluster.executors[1].wait().unwrap();
    let remote_out = dir.path().join("remote.parquet");
    let began = Instant::now();
    let out = historical(dir.path(), &["--engine", "ballista", "--scheduler", &address], &remote_out);
    eprintln!(
        "after the kill: success={} in {:?}: {}",
        out.status.success(),
        began.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        assert_eq!(read(&remote_out), read(&local_out), "the result after an executor died differs");
    } else {
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("Ballista cluster") && e.contains(&address), "{e}\n{}", cluster.logs());
        assert!(!remote_out.exists(), "a failed job left {}", remote_out.display());
    }
    assert!(began.elapsed() < Duration::from_secs(120), "took {:?}", began.elapsed());
}

/// `historical` of the case's three views for `repo/entities.parquet`, with `extra` flags, into `out`.
fn historical(repo: &Path, extra: &[&str], out: &Path) -> std::process::Output {
    let entities = repo.join("entities.parquet");
    let mut args =
        vec!["historical", "--entities", entities.to_str().unwrap(), "--features", "stats_v,shops_v,global_v"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--output", out.to_str().unwrap()]);
    cli(repo, &args)
}

fn concat(batches: Vec<RecordBatch>) -> RecordBatch {
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// A folder output's manifest and its files' rows, in the manifest's order.
async fn read_folder(
    folder: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> (serde_json::Value, Vec<RecordBatch>) {
    use feature_store::object_store::object_store::{ObjectStoreExt, path::Path as StorePath};
    let resolved = feature_store::object_store::location::resolve(folder, Path::new("/"), options).unwrap();
    let base = resolved.path.as_ref().trim_end_matches('/').to_owned();
    let get = |name: String| {
        let store = Arc::clone(&resolved.store);
        let at = StorePath::from(format!("{base}/{name}"));
        async move { store.get(&at).await.unwrap().bytes().await.unwrap() }
    };
    let manifest: serde_json::Value = serde_json::from_slice(&get("_manifest.json".into()).await).unwrap();
    let mut batches = Vec::new();
    let mut next_row = 0;
    for f in manifest["files"].as_array().unwrap() {
        assert_eq!(f["first_row"].as_u64(), Some(next_row), "{manifest}");
        let bytes = get(f["file"].as_str().unwrap().to_owned()).await;
        let rows: Vec<RecordBatch> = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1 << 20)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let n = rows.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
        assert_eq!(f["rows"].as_u64(), Some(n), "{manifest}");
        next_row += n;
        batches.extend(rows);
    }
    (manifest, batches)
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1 << 20)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_scheduler_fails_fast_naming_it() {
    let case = generate(1);
    let dir = tempfile::tempdir().unwrap();
    store_for(&case, dir.path()).await;
    let address = format!("df://127.0.0.1:{}", free_port());
    let remote = on_cluster(dir.path(), &address, |_| {});
    let began = Instant::now();
    let e = retrieve(&remote, case.entities.clone(), &FEATURES).await.unwrap_err().to_string();
    assert!(e.contains(&address), "{e}");
    assert!(began.elapsed() < Duration::from_secs(30), "took {:?}", began.elapsed());

    // Bad settings are named before anything runs.
    let bad = fail(&cli(
        dir.path(),
        &["historical", "--entities", "x.parquet", "--features", "stats_v", "--engine", "ballista"],
    ));
    assert!(bad.contains("scheduler"), "{bad}");
    let bad = fail(&cli(
        dir.path(),
        &["historical", "--entities", "x.parquet", "--features", "stats_v", "--scheduler", "df://nohost"],
    ));
    assert!(bad.contains("df://host:port"), "{bad}");
    // A one-shot stream of entity rows cannot reach executors: said at planning.
    let stream = futures::stream::iter(vec![Ok(case.entities.clone())]);
    let e = remote
        .get_historical_features(
            EntityInput::Stream(feature_store::historical::BatchStream::new(case.entities.schema(), Box::pin(stream))),
            &Features::refs(FEATURES),
            &HistoricalOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("one-shot stream"), "{e}");
}

/// A cluster that cannot run the job says why, and quickly: executors
/// without this project's codec (stock Ballista executors) name the operator
/// they cannot decode and how to start executors that can; an executor that
/// cannot open a source file names the file and the executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_cannot_run_the_job_says_why() {
    let case = generate(2);
    let dir = tempfile::tempdir().unwrap();
    let local = store_for(&case, dir.path()).await;
    retrieve(&local, case.entities.clone(), &FEATURES).await.unwrap();

    let cluster = TestCluster::start_with(1, Executors::Stock);
    let remote = on_cluster(dir.path(), &cluster.address(), |_| {});
    let began = Instant::now();
    let e = retrieve(&remote, case.entities.clone(), &FEATURES).await.unwrap_err().to_string();
    eprintln!("stock executor, after {:?}: {e}", began.elapsed());
    assert!(e.contains("AsOfJoinExec") && e.contains("feature-store cluster executor"), "{e}\n{}", cluster.logs());
    assert!(began.elapsed() < Duration::from_secs(60), "took {:?}", began.elapsed());
    drop(cluster);

    if let Some(why) = cannot_hide_folders() {
        eprintln!("skipped the unreadable-file case: {why}");
        return;
    }
    let data = dir.path().join("data");
    let cluster = TestCluster::start_with(1, Executors::Hiding(&data));
    let remote = on_cluster(dir.path(), &cluster.address(), |_| {});
    let began = Instant::now();
    let e = retrieve(&remote, case.entities.clone(), &FEATURES).await.unwrap_err().to_string();
    eprintln!("hidden files, after {:?}: {e}", began.elapsed());
    assert!(e.contains(data.to_str().unwrap()), "the error names no file: {e}\n{}", cluster.logs());
    let executor = &cluster.executor_names[0];
    assert!(e.contains(&format!("on executor {executor}")), "the error names no executor ({executor}): {e}");
    assert!(began.elapsed() < Duration::from_secs(60), "took {:?}", began.elapsed());
}

/// An executor killed in the middle of jobs (a folder output written by the
/// executors, then a single file, alternately; `FS_KILL_ROUNDS` rounds, 4
/// by default): each job completes with exactly the local result or fails
/// with an error naming the cluster and leaves nothing at the output, within
/// a bounded time. Ballista's scheduler, after losing an executor, can run a
/// stage again beside the first attempt's outputs (rows arrive twice), lose
/// rows, or leave the job stalled; the first is repaired (`UniqueRowsExec`),
/// the others are errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_killed_mid_job_leaves_the_result_or_a_clear_error() {
    let rounds: usize = std::env::var("FS_KILL_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4);
    let delay: u64 = std::env::var("FS_KILL_DELAY_MS").ok().and_then(|r| r.parse().ok()).unwrap_or(300);
    let case = feature_store_tests::random_case::generate_scaled(4, 40);
    let dir = tempfile::tempdir().unwrap();
    store_for(&case, dir.path()).await;
    feature_store_tests::write_parquet(&dir.path().join("entities.parquet"), &case.entities);
    let local_out = dir.path().join("local.parquet");
    ok(&historical(dir.path(), &[], &local_out));
    let expected = concat(read(&local_out));
    let (mut completed, mut failed) = (0, 0);
    for round in 0..rounds {
        let folder_mode = round % 2 == 0;
        let mut cluster = TestCluster::start(3);
        let address = cluster.address();
        let out_path =
            dir.path().join(if folder_mode { format!("out_{round}") } else { format!("out_{round}.parquet") });
        let out_arg = if folder_mode { format!("{}/", out_path.display()) } else { out_path.display().to_string() };
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let (repo, address, out_arg) = (dir.path().to_owned(), address.clone(), out_arg.clone());
            std::thread::spawn(move || {
                let entities = repo.join("entities.parquet");
                let mut command = Command::new(env!("CARGO_BIN_EXE_feature-store"));
                command.arg("--repo").arg(&repo).args(["historical", "--entities"]).arg(&entities);
                command.args([
                    "--features",
                    "stats_v,shops_v,global_v",
                    "--engine",
                    "ballista",
                    "--scheduler",
                    &address,
                ]);
                if folder_mode {
                    command.args(["--rows-per-file", "50"]);
                }
                command.args(["--output", &out_arg]).env("FEATURE_STORE_CLUSTER_STALL_SECONDS", "20");
                let _ = tx.send(command.output().expect("run feature-store"));
            });
        }
        std::thread::sleep(Duration::from_millis(delay));
        cluster.executors[2].kill().unwrap();
        cluster.executors[2].wait().unwrap();
        let began = Instant::now();
        let Ok(out) = rx.recv_timeout(Duration::from_secs(150)) else {
            panic!("round {round}: the job did not end within 150 s of the kill\n{}", cluster.logs())
        };
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!(
            "round {round} (folder: {folder_mode}): success={} {:?} after the kill",
            out.status.success(),
            began.elapsed()
        );
        if !out.status.success() {
            eprintln!("{}", stderr.lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join("\n"));
            failed += 1;
            assert!(stderr.contains("Ballista cluster"), "round {round}: {stderr}\n{}", cluster.logs());
            let left: Vec<_> =
                std::fs::read_dir(&out_path).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
            assert!(left.is_empty(), "round {round}: a failed folder output left {left:?}");
            assert!(folder_mode || !out_path.exists(), "round {round}: a failed job left {}", out_path.display());
            continue;
        }
        completed += 1;
        let got = if folder_mode {
            concat(read_folder(&out_arg, &Default::default()).await.1)
        } else {
            concat(read(&out_path))
        };
        if got != expected {
            let differing: Vec<usize> = (0..got.num_rows().min(expected.num_rows()))
                .filter(|&r| got.slice(r, 1) != expected.slice(r, 1))
                .collect();
            panic!(
                "round {round}: {} rows where the local run has {}; {} rows differ (first {:?})\n{stderr}\n{}",
                got.num_rows(),
                expected.num_rows(),
                differing.len(),
                differing.first(),
                cluster.logs()
            );
        }
    }
    eprintln!("{completed} of {rounds} jobs completed with the local result, {failed} failed with a clear error");
}

/// `materialize --engine ballista` with one of three executors killed
/// mid-job: the online store ends up exactly as after a local run, or the
/// command fails naming the cluster and a rerun (here, local) repairs
/// whatever it had written. Rows arriving twice after Ballista's stage
/// rollback must not change the per-view counts either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_killed_mid_materialization_leaves_the_store_right_or_a_clear_error() {
    use feature_store::OnlineOptions;
    let rounds: usize = std::env::var("FS_KILL_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    let delay: u64 = std::env::var("FS_KILL_DELAY_MS").ok().and_then(|r| r.parse().ok()).unwrap_or(300);
    let case = feature_store_tests::random_case::generate_scaled(4, 40);
    let local_dir = tempfile::tempdir().unwrap();
    let local = store_for(&case, local_dir.path()).await;
    let start = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z").unwrap().to_utc();
    let end = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().to_utc();
    let expected = local.materialize(start, end, &Default::default()).await.unwrap();
    let expected_counts: Vec<(String, u64, u64)> =
        expected.views.iter().map(|v| (v.view.clone(), v.rows_read, v.entities_written)).collect();
    let keys = online_keys(&case);
    let features = Features::refs(FEATURES);
    let want = local.get_online_features(&features, &keys, &OnlineOptions::default()).await.unwrap();
    let (mut completed, mut failed) = (0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        store_for(&case, dir.path()).await;
        let mut cluster = TestCluster::start(3);
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let (repo, address) = (dir.path().to_owned(), cluster.address());
            std::thread::spawn(move || {
                let mut command = Command::new(env!("CARGO_BIN_EXE_feature-store"));
                command.arg("--repo").arg(&repo);
                command.args(["--json", "materialize", "2000-01-01", "2030-01-01", "--engine", "ballista"]);
                command.args(["--scheduler", &address]).env("FEATURE_STORE_CLUSTER_STALL_SECONDS", "20");
                let _ = tx.send(command.output().expect("run feature-store"));
            });
        }
        std::thread::sleep(Duration::from_millis(delay));
        cluster.executors[2].kill().unwrap();
        cluster.executors[2].wait().unwrap();
        let began = Instant::now();
        let Ok(out) = rx.recv_timeout(Duration::from_secs(150)) else {
            panic!("round {round}: the job did not end within 150 s of the kill\n{}", cluster.logs())
        };
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("round {round}: success={} {:?} after the kill", out.status.success(), began.elapsed());
        // Evidence the copies were there and dropped (in the caller's or an executor's log).
        if stderr.contains("delivered twice") || cluster.log_contains("delivered twice") {
            eprintln!("round {round}: rows the cluster delivered twice were dropped");
        }
        if out.status.success() {
            completed += 1;
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("round {round}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
            let got: Vec<(String, u64, u64)> = report["views"]
                .as_array()
                .unwrap_or_else(|| panic!("round {round}: no views in {report}"))
                .iter()
                .map(|v| {
                    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("round {round}: no {k} in {v}"));
                    (v["view"].as_str().unwrap().to_owned(), n("rows_read"), n("entities_written"))
                })
                .collect();
            // A partition Ballista ran twice after the kill is counted once.
            assert_eq!(got, expected_counts, "round {round}: rows read and entities written\n{stderr}");
        } else {
            failed += 1;
            eprintln!("{}", stderr.lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join("\n"));
            assert!(stderr.contains("Ballista cluster"), "round {round}: {stderr}\n{}", cluster.logs());
            // Whatever reached the online store before the failure: a rerun repairs it.
            ok(&cli(dir.path(), &["materialize", "2000-01-01", "2030-01-01"]));
        }
        let store = feature_store::open(dir.path()).unwrap();
        let got = store.get_online_features(&features, &keys, &OnlineOptions::default()).await.unwrap();
        let same = got.values() == want.values()
            && got.statuses() == want.statuses()
            && got.event_timestamps() == want.event_timestamps();
        if !same {
            // Which rows differ, to tell a lost row from a stale one.
            let line = |r: &feature_store::online::OnlineResponse, row: usize| {
                [r.values().clone(), r.statuses(), r.event_timestamps()]
                    .iter()
                    .flat_map(|b| {
                        (0..b.num_columns())
                            .map(|c| arrow::util::display::array_value_to_string(b.column(c), row).unwrap())
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            };
            let differing: Vec<usize> = (0..want.num_rows()).filter(|&i| line(&got, i) != line(&want, i)).collect();
            eprintln!("round {round}: {} online rows differ", differing.len());
            for &row in differing.iter().take(10) {
                eprintln!("row {row}: cluster {:?}\n        local   {:?}", line(&got, row), line(&want, row));
            }
        }
        assert_eq!(got.values(), want.values(), "round {round}: online values");
        assert_eq!(got.statuses(), want.statuses(), "round {round}: statuses");
        assert_eq!(got.event_timestamps(), want.event_timestamps(), "round {round}: event times");
    }
    eprintln!("{completed} of {rounds} materializations completed, {failed} failed with a clear error and were rerun");
}
