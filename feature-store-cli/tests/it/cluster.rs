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
    port: u16,
    dir: tempfile::TempDir,
}

impl TestCluster {
    fn start(executors: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let scheduler = spawn(&dir, "scheduler", &["cluster", "scheduler", "--port", &port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the scheduler did not listen on {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut cluster = Self { scheduler, executors: Vec::new(), port, dir };
        for i in 0..executors {
            let work = cluster.dir.path().join(format!("work{i}"));
            std::fs::create_dir_all(&work).unwrap();
            let child = spawn(
                &cluster.dir,
                &format!("executor{i}"),
                &[
                    "cluster",
                    "executor",
                    "--scheduler",
                    &cluster.address(),
                    "--port",
                    &free_port().to_string(),
                    "--work-dir",
                    work.to_str().unwrap(),
                    "--concurrent-tasks",
                    "2",
                ],
            );
            cluster.executors.push(child);
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

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain(std::iter::once(&mut self.scheduler)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(dir: &tempfile::TempDir, name: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_feature-store"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start feature-store cluster")
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
    ok(&historical(dir.path(), &["--engine", "ballista", "--scheduler", &address], &remote_out));
    assert_eq!(read(&remote_out), read(&local_out), "the CLI's cluster output differs from the local one");

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
