//! Crash tests: the CLI killed (SIGKILL) at random points of its write paths.
//! After each kill the stores open, nothing half-written is served (every
//! value present online is the value a clean run writes), and a rerun
//! converges to exactly a clean run's contents, with no temp files left.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::{cli, json, ok};

const DRIVERS: i64 = 100_000;
const HOURS: i64 = 3;
const BASE: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

/// The demo repo with `DRIVERS` drivers x `HOURS` hourly rows, values derived
/// from (driver, hour), and `online` as its online store.
fn repo(root: &Path, online: &str) -> std::path::PathBuf {
    let repo = root.join("demo");
    ok(&cli(root, &["init", repo.to_str().unwrap()]));
    let config = std::fs::read_to_string(repo.join("feature_store.yaml")).unwrap();
    let config = config.replace("online_store:\n  type: sqlite\n  path: data/online.db\n", online);
    assert!(config.contains(online), "test bug: the demo config changed");
    std::fs::write(repo.join("feature_store.yaml"), config).unwrap();
    let n = (DRIVERS * HOURS) as usize;
    let (mut ids, mut ts, mut conv, mut trips) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for h in 0..HOURS {
        for d in 0..DRIVERS {
            ids.push(1000 + d);
            ts.push(BASE + h * 3_600_000_000);
            conv.push(((d * 7 + h) % 1000) as f32 / 1000.0);
            trips.push(d * 100 + h);
        }
    }
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type.clone(), false),
        Field::new("created", ts_type, false),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Float32Array::from(conv.clone())),
        Arc::new(Float32Array::from(conv)),
        Arc::new(Int64Array::from(trips)),
    ];
    write_parquet(&repo.join("data/driver_stats.parquet"), &RecordBatch::try_new(schema, columns).unwrap());
    ok(&cli(&repo, &["apply"]));
    repo
}

pub(crate) fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// `push --to offline` killed at random points: the source stays readable
/// (a killed writer's staging file is not data), and each push is wholly
/// in it or not at all.
/// Moves the demo source into a folder (`data/driver_stats/part-0.parquet`),
/// so offline pushes can add files to it, and applies; returns the folder.
fn folder_source(repo: &Path) -> std::path::PathBuf {
    let folder = repo.join("data/driver_stats");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::rename(repo.join("data/driver_stats.parquet"), folder.join("part-0.parquet")).unwrap();
    let defs = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    std::fs::write(
        repo.join("features.yaml"),
        defs.replace("path: data/driver_stats.parquet", "path: data/driver_stats/"),
    )
    .unwrap();
    ok(&cli(repo, &["apply"]));
    folder
}

/// A retrieval of one entity row over the whole source, written to `out`
/// in the repo: it succeeds only if every data file reads whole.
fn retrieve_one(repo: &Path, out: &str) -> RecordBatch {
    let entities = repo.join("one.csv");
    std::fs::write(&entities, "driver_id,event_timestamp\n1000,2026-01-01T05:00:00Z\n").unwrap();
    let out = repo.join(out);
    let args = [
        "historical",
        "--entities",
        entities.to_str().unwrap(),
        "--features",
        "driver_hourly_stats:conv_rate",
        "--output",
        out.to_str().unwrap(),
    ];
    ok(&cli(repo, &args));
    read_parquet(&out)
}

#[cfg(unix)]
#[test]
fn offline_push_killed_anywhere_leaves_a_readable_source() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(tmp.path(), "online_store:\n  type: sqlite\n  path: data/online.db\n");
    let folder = folder_source(&repo);
    let rows = read_parquet(&folder.join("part-0.parquet"));
    let push_file = tmp.path().join("push.parquet");
    write_parquet(&push_file, &rows);
    let push = ["push", "driver_hourly_stats", "--file", push_file.to_str().unwrap(), "--to", "offline"];
    ok(&cli(&repo, &push));
    let count = |repo: &Path| -> usize {
        let files = std::fs::read_dir(repo.join("data/driver_stats"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
            .count();
        // Every data file reads whole: a retrieval over the source succeeds.
        retrieve_one(repo, "one.parquet");
        files
    };
    assert_eq!(count(&repo), 2);
    let mut rng = 0x1234_5678_9abc_def0u64;
    for _ in 0..6 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Once the staging file exists, i.e. while the file is being written.
        let after = Duration::from_micros((rng >> 33) % 3000);
        let writing = |repo: &Path| {
            std::fs::read_dir(repo.join("data/driver_stats"))
                .map(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().contains('#')))
                .unwrap_or(false)
        };
        run_and_kill_when(&repo, &push, writing, after);
        count(&repo);
    }
    // Each complete file holds the whole push.
    for e in std::fs::read_dir(&folder).unwrap().filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".parquet") {
            assert_eq!(read_parquet(&e.path()).num_rows(), rows.num_rows(), "{name} holds part of a push");
        }
    }
}

const WINDOW: [&str; 2] = ["2025-12-31T00:00:00Z", "2026-01-02T00:00:00Z"];

/// `online --json` for a fixed sample of drivers.
fn sample(repo: &Path) -> serde_json::Value {
    let mut args = vec!["online".to_owned(), "--service".into(), "driver_activity".into()];
    for d in (0..DRIVERS).step_by(487) {
        args.push("--entity".into());
        args.push(format!("driver_id={}", 1000 + d));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    json(&cli(repo, &args))
}

/// Runs `args` and kills it `after` the file `started` exists (at once
/// without one); returns whether it was killed while running.
fn run_and_kill(repo: &Path, args: &[&str], started: Option<&Path>, after: Duration) -> bool {
    run_and_kill_when(repo, args, |_| started.is_none_or(Path::exists), after)
}

/// Runs `args` and kills it `after` `began` holds (polled); returns whether
/// it was killed while running.
fn run_and_kill_when(repo: &Path, args: &[&str], began: impl Fn(&Path) -> bool, after: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_feature-store"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !began(repo) && matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
    std::thread::sleep(after);
    let killed = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    killed
}

/// `written` is the file the online store creates on its first write
/// (none for a server: the kills then start with the process).
fn converges_after_kills(online: &str, written: Option<&str>) {
    converges_after_kills_between(online, online, written);
}

/// As [`converges_after_kills`], the clean run with online store
/// `clean_online`, the killed runs with `online` (a server's other database).
fn converges_after_kills_between(clean_online: &str, online: &str, written: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    // The clean run: what every crashed run must converge to.
    let clean = repo(&tmp.path().join("clean"), clean_online);
    let started = Instant::now();
    ok(&cli(&clean, &[&["materialize"][..], &WINDOW].concat()));
    let took = started.elapsed();
    let expected = sample(&clean);

    let crashed = repo(&tmp.path().join("crashed"), online);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut killed = 0;
    for _ in 0..6 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Once the writes began: the first run creates the store's file,
        // later ones find it, so they are killed anywhere.
        let after = took.mul_f64(0.5 * (rng >> 33) as f64 / (1u64 << 31) as f64);
        let args = [&["materialize"][..], &WINDOW].concat();
        let file = written.map(|w| crashed.join(w));
        killed += usize::from(run_and_kill(&crashed, &args, file.as_deref(), after));
        // The stores open, and whatever is served is a clean run's value.
        ok(&cli(&crashed, &["status"]));
        let got = sample(&crashed);
        for (col, want) in got["results"].as_array().unwrap().iter().zip(expected["results"].as_array().unwrap()) {
            for (i, status) in col["statuses"].as_array().unwrap().iter().enumerate() {
                if status != "NOT_FOUND" {
                    assert_eq!(col["values"][i], want["values"][i], "{online}: a half-written value is served");
                    assert_eq!(col["event_timestamps"][i], want["event_timestamps"][i]);
                }
            }
        }
    }
    assert!(killed >= 3, "{online}: most runs were killed mid-way ({killed} of 6)");
    ok(&cli(&crashed, &[&["materialize"][..], &WINDOW].concat()));
    assert_eq!(sample(&crashed), expected, "{online}: a rerun converges to the clean run");
    let leftovers: Vec<String> = std::fs::read_dir(crashed.join("data"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[cfg(unix)]
#[test]
fn materialize_into_sqlite_killed_anywhere_converges() {
    converges_after_kills("online_store:\n  type: sqlite\n  path: data/online.db\n", Some("data/online.db"));
}

#[cfg(unix)]
#[test]
fn materialize_into_lmdb_killed_anywhere_converges() {
    converges_after_kills(
        "online_store:\n  type: lmdb\n  path: data/online.lmdb\n  map_size: 1GiB\n",
        Some("data/online.lmdb"),
    );
}

/// Against a real `redis-server` (each test run starts its own): the clean
/// run and the crashed one use separate databases of it.
#[cfg(unix)]
#[test]
fn materialize_into_redis_killed_anywhere_converges() {
    let redis = feature_store_tests::redis::RedisServer::start();
    let url = redis.url();
    let (clean, crashed) = (format!("{url}/1"), format!("{url}/2"));
    let clean_cfg = format!("online_store:\n  type: redis\n  connection_string: \"{clean}\"\n");
    let crashed_cfg = format!("online_store:\n  type: redis\n  connection_string: \"{crashed}\"\n");
    converges_after_kills_between(&clean_cfg, &crashed_cfg, None);
}

/// The online store's file hits a size limit mid-write (as on a full disk):
/// a clear error naming it, only clean-run values served, and a rerun
/// converges.
fn full_disk_converges(online: &str, file: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let clean = repo(&tmp.path().join("clean"), online);
    ok(&cli(&clean, &[&["materialize"][..], &WINDOW].concat()));
    let expected = sample(&clean);
    let full = repo(&tmp.path().join("full"), online);
    // 2048 blocks of 512 bytes (sh's unit): past the start, before the end.
    let limited = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 2048 && exec '{}' --repo '{}' materialize {} {}",
            env!("CARGO_BIN_EXE_feature-store"),
            full.display(),
            WINDOW[0],
            WINDOW[1]
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&limited.stderr);
    assert!(!limited.status.success(), "{online}: the limit was not reached");
    let path = full.join(file).display().to_string();
    assert!(stderr.contains(&path), "{online}: the error names the file: {stderr}");
    assert_eq!(stderr.matches(&path).count(), 1, "{online}: named once: {stderr}");
    let got = sample(&full);
    for (col, want) in got["results"].as_array().unwrap().iter().zip(expected["results"].as_array().unwrap()) {
        for (i, status) in col["statuses"].as_array().unwrap().iter().enumerate() {
            if status != "NOT_FOUND" {
                assert_eq!(col["values"][i], want["values"][i], "{online}: a half-written value is served");
            }
        }
    }
    ok(&cli(&full, &[&["materialize"][..], &WINDOW].concat()));
    assert_eq!(sample(&full), expected, "{online}: a rerun converges to the clean run");
}

#[cfg(unix)]
#[test]
fn a_full_disk_under_sqlite_is_a_clear_error_and_a_rerun_converges() {
    full_disk_converges("online_store:\n  type: sqlite\n  path: data/online.db\n", "data/online.db");
}

#[cfg(unix)]
#[test]
fn a_full_disk_under_lmdb_is_a_clear_error_and_a_rerun_converges() {
    full_disk_converges(
        "online_store:\n  type: lmdb\n  path: data/online.lmdb\n  map_size: 1GiB\n",
        "data/online.lmdb",
    );
}

/// `apply` killed at random points while the definitions alternate: the
/// registry always reads, and the next apply leaves no temp file.
#[cfg(unix)]
#[test]
fn apply_killed_anywhere_leaves_a_readable_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    let defs = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let changed = defs.replacen("description: A driver on the platform", "description: Someone who drives", 1);
    assert_ne!(defs, changed, "test bug: the demo definitions changed");
    let started = Instant::now();
    ok(&cli(&repo, &["apply"]));
    let took = started.elapsed();
    for i in 0..12u32 {
        std::fs::write(repo.join("features.yaml"), if i % 2 == 0 { &changed } else { &defs }).unwrap();
        run_and_kill(&repo, &["apply"], None, took.mul_f64(f64::from(i % 6) / 5.0));
        ok(&cli(&repo, &["plan"]));
    }
    ok(&cli(&repo, &["apply"]));
    // A killed apply whose temp file no later write swept (the applies after
    // it had nothing to change): any command that reads the registry sweeps it.
    std::fs::write(repo.join("data/.registry.json.4000000.tmp"), b"{\"partial").unwrap();
    assert!(ok(&cli(&repo, &["plan"])).contains("No changes."));
    let temps: Vec<String> = std::fs::read_dir(repo.join("data"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

/// The registry's file hits a size limit (as on a full disk) during `apply`:
/// an error naming the registry, the previous version intact and readable,
/// no temp file left, and the next `apply` succeeds.
#[cfg(unix)]
#[test]
fn a_full_disk_under_the_registry_keeps_the_previous_version() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    let before = std::fs::read(repo.join("data/registry.json")).unwrap();
    assert!(before.len() > 2048, "test bug: the registry fits under the limit");
    let defs = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    std::fs::write(repo.join("features.yaml"), defs.replacen("A driver on the platform", "Someone who drives", 1))
        .unwrap();
    // 4 blocks of 512 bytes: the new document does not fit.
    let limited = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f 4 && exec '{}' --repo '{}' apply", env!("CARGO_BIN_EXE_feature-store"), repo.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(1), "{stderr}");
    let registry = repo.join("data/registry.json").display().to_string();
    assert!(stderr.contains(&registry) && stderr.contains("the registry was not changed"), "{stderr}");
    assert_eq!(std::fs::read(repo.join("data/registry.json")).unwrap(), before, "the previous version is intact");
    let left: Vec<String> = std::fs::read_dir(repo.join("data"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "the failed writer removed its temp file: {left:?}");
    assert!(ok(&cli(&repo, &["plan"])).contains("Someone who drives"));
    ok(&cli(&repo, &["apply"]));
    assert!(ok(&cli(&repo, &["plan"])).contains("No changes."));
}

/// `entities.parquet` in `repo`: 200,000 rows over every driver, two hours
/// after the data's first rows.
fn write_entities(repo: &Path) {
    let n = 200_000usize;
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let entities = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type, false),
        ])),
        vec![
            Arc::new(Int64Array::from((0..n as i64).map(|i| 1000 + i % DRIVERS).collect::<Vec<_>>())) as ArrayRef,
            Arc::new(TimestampMicrosecondArray::from(vec![BASE + 7_200_000_000; n]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    write_parquet(&repo.join("entities.parquet"), &entities);
}

/// A saved dataset whose files hit a size limit (as on a full disk): an
/// error naming the file, no dataset registered, no file of it left, and a
/// rerun saves it.
#[cfg(unix)]
#[test]
fn a_full_disk_while_saving_a_dataset_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(tmp.path(), "online_store:\n  type: sqlite\n  path: data/online.db\n");
    write_entities(&repo);
    let args = "historical --entities entities.parquet --features driver_hourly_stats --save train";
    // 100 blocks of 512 bytes: less than the dataset's files.
    let limited = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && ulimit -f 100 && exec '{}' {args}",
            repo.display(),
            env!("CARGO_BIN_EXE_feature-store")
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing failed, nothing was kept there") && stderr.contains(".parquet"), "{stderr}");
    assert_eq!(json(&cli(&repo, &["--json", "dataset", "list"])), serde_json::json!([]));
    let mut files = Vec::new();
    let mut dirs = vec![repo.join("data")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else if e.path().to_string_lossy().contains("/train/") {
                files.push(e.path());
            }
        }
    }
    assert!(files.is_empty(), "files of the failed save were left: {files:?}");
    let out =
        Command::new(env!("CARGO_BIN_EXE_feature-store")).current_dir(&repo).args(args.split(' ')).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&cli(&repo, &["--json", "dataset", "list"])).as_array().unwrap().len(), 1);
}

/// `historical --save` killed at random points: every dataset listed
/// afterwards verifies (none is registered half-saved), and the next save
/// removes the files the killed saves left.
#[cfg(unix)]
#[test]
fn dataset_saves_killed_anywhere_leave_nothing_half_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(tmp.path(), "online_store:\n  type: sqlite\n  path: data/online.db\n");
    write_entities(&repo);
    let entities = repo.join("entities.parquet");
    let save = |name: &str| {
        vec![
            "historical".to_owned(),
            "--entities".into(),
            entities.display().to_string(),
            "--features".into(),
            "driver_hourly_stats".into(),
            "--save".into(),
            name.to_owned(),
        ]
    };
    let started = Instant::now();
    let args = save("clean");
    ok(&cli(&repo, &args.iter().map(String::as_str).collect::<Vec<_>>()));
    let took = started.elapsed();
    let folders = |repo: &Path| -> Vec<std::path::PathBuf> {
        let root = repo.join("data/datasets/driver_ranking");
        let mut out = Vec::new();
        for name in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(name.path()).into_iter().flatten().flatten() {
                out.push(f.path());
            }
        }
        out
    };
    let (mut killed, mut left_files) = (0, false);
    for i in 0..6u32 {
        let args = save(&format!("killed{i}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        killed += usize::from(run_and_kill(&repo, &args, None, took.mul_f64(f64::from(i + 1) / 7.0)));
        let listed = json(&cli(&repo, &["--json", "dataset", "list"]));
        // The next save sweeps this one's files: look before it runs.
        left_files |= folders(&repo).len() > listed.as_array().unwrap().len();
        for d in listed.as_array().unwrap() {
            let name = d["name"].as_str().unwrap();
            let verified = json(&cli(&repo, &["--json", "dataset", "verify", name]));
            assert_eq!(verified["reproducible"], true, "dataset {name} was registered half-saved: {verified}");
        }
    }
    assert!(killed >= 3, "most saves were killed mid-way ({killed} of 6)");
    assert!(left_files, "test bug: no killed save left files ({killed} killed)");
    let args = save("after");
    ok(&cli(&repo, &args.iter().map(String::as_str).collect::<Vec<_>>()));
    let registered = json(&cli(&repo, &["--json", "dataset", "list"])).as_array().unwrap().len();
    let left = folders(&repo);
    assert_eq!(left.len(), registered, "files of killed saves are left: {left:?}");
}

/// Rows one hour after the data's last: every driver, new values.
fn newer_rows(source: &Path) -> RecordBatch {
    let rows = read_parquet(source);
    let n = DRIVERS as usize;
    let last = BASE + HOURS * 3_600_000_000;
    let schema = rows.schema();
    let ids: Vec<i64> = (0..DRIVERS).map(|d| 1000 + d).collect();
    let conv: Vec<f32> = (0..DRIVERS).map(|d| ((d * 13) % 1000) as f32 / 999.0).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(vec![last; n]).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(vec![last; n]).with_timezone("UTC")),
        Arc::new(Float32Array::from(conv.clone())),
        Arc::new(Float32Array::from(conv)),
        Arc::new(Int64Array::from((0..DRIVERS).map(|d| -d).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// An online push killed at random points: every row served is either the
/// materialized value or the pushed one, whole (never a mixture of the two
/// within a row), and a rerun of the push converges to a clean push.
#[cfg(unix)]
#[test]
fn online_push_killed_anywhere_converges() {
    let online = "online_store:\n  type: sqlite\n  path: data/online.db\n";
    let tmp = tempfile::tempdir().unwrap();
    let clean = repo(&tmp.path().join("clean"), online);
    ok(&cli(&clean, &[&["materialize"][..], &WINDOW].concat()));
    let before = sample(&clean);
    let push_file = tmp.path().join("newer.parquet");
    write_parquet(&push_file, &newer_rows(&clean.join("data/driver_stats.parquet")));
    let push = ["push", "driver_hourly_stats", "--file", push_file.to_str().unwrap()];
    let started = Instant::now();
    ok(&cli(&clean, &push));
    let took = started.elapsed();
    let after = sample(&clean);
    assert_ne!(before, after, "test bug: the push changes nothing");

    let crashed = repo(&tmp.path().join("crashed"), online);
    ok(&cli(&crashed, &[&["materialize"][..], &WINDOW].concat()));
    let mut rng = 0x0ddb_a11c_afe0_0001u64;
    let mut killed = 0;
    for _ in 0..5 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let at = took.mul_f64(0.8 * (rng >> 33) as f64 / (1u64 << 31) as f64);
        killed += usize::from(run_and_kill(&crashed, &push, None, at));
        let got = sample(&crashed);
        let rows = got["results"][0]["values"].as_array().unwrap().len();
        for row in 0..rows {
            let whole = |want: &serde_json::Value| {
                got["results"].as_array().unwrap().iter().zip(want["results"].as_array().unwrap()).all(|(g, w)| {
                    g["values"][row] == w["values"][row] && g["event_timestamps"][row] == w["event_timestamps"][row]
                })
            };
            assert!(whole(&before) || whole(&after), "row {row} is neither the old value nor the pushed one");
        }
    }
    assert!(killed >= 2, "most pushes were killed mid-way ({killed} of 5)");
    ok(&cli(&crashed, &push));
    assert_eq!(sample(&crashed), after, "a rerun of the push converges to a clean push");
}

/// An offline push whose new file hits a size limit (as on a full disk): an
/// error, no new data file visible to readers, retrieval still works, and a
/// rerun adds the push once.
#[cfg(unix)]
#[test]
fn an_offline_push_on_a_full_disk_adds_nothing_and_a_rerun_lands_once() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(tmp.path(), "online_store:\n  type: sqlite\n  path: data/online.db\n");
    let folder = folder_source(&repo);
    let push_file = tmp.path().join("newer.parquet");
    write_parquet(&push_file, &newer_rows(&folder.join("part-0.parquet")));
    let data_files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        names.sort();
        names
    };
    // 200 blocks of 512 bytes: less than the pushed file (100,000 rows).
    let limited = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 200 && exec '{}' --repo '{}' push driver_hourly_stats --file '{}' --to offline",
            env!("CARGO_BIN_EXE_feature-store"),
            repo.display(),
            push_file.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&limited.stderr);
    assert_eq!(limited.status.code(), Some(1), "the push must fail: {stderr}");
    assert!(stderr.contains("driver_stats"), "the error names where it was writing: {stderr}");
    assert_eq!(data_files(), ["part-0.parquet"], "no new data file is visible after the failed push");
    assert_eq!(retrieve_one(&repo, "before.parquet").num_rows(), 1);
    ok(&cli(&repo, &["push", "driver_hourly_stats", "--file", push_file.to_str().unwrap(), "--to", "offline"]));
    assert_eq!(data_files().len(), 2, "the rerun adds one file: {:?}", data_files());
    let added: Vec<String> = data_files().into_iter().filter(|n| n != "part-0.parquet").collect();
    assert_eq!(read_parquet(&folder.join(&added[0])).num_rows(), DRIVERS as usize);
    assert_eq!(retrieve_one(&repo, "after.parquet").num_rows(), 1);
}
