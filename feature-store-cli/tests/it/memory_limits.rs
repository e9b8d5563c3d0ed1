//! `--memory-limit` inside a real memory cgroup sized at the limit plus the
//! documented base (10% or 100 MiB, whichever is larger): a retrieval of
//! several times that much data, and a materialization, complete with the
//! unlimited run's results; a retrieval that cannot fit (one key's rows
//! exceed the limit) fails with an error that says what to raise, not by
//! the OOM killer. The cgroup (v2 `memory.max` or v1
//! `memory.limit_in_bytes`) is made by the test as root; where that is not
//! possible the test prints why and returns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::{cli, ok};

const MIB: u64 = 1 << 20;
const BASE: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

/// The allowance above the limit the README documents.
fn base(limit: u64) -> u64 {
    (limit / 10).max(100 * MIB)
}

/// A memory cgroup made for one test and removed when dropped.
struct Cgroup {
    path: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// `None` (after saying why) when this machine or user cannot make one.
    fn create(name: &str, limit: u64) -> Option<Self> {
        let skip = |why: String| {
            eprintln!("skipped: no memory cgroup for this test: {why}");
            None
        };
        let v2_root = Path::new("/sys/fs/cgroup");
        let v1_root = Path::new("/sys/fs/cgroup/memory");
        let controllers = std::fs::read_to_string(v2_root.join("cgroup.controllers")).unwrap_or_default();
        let (root, v2) = if controllers.split_whitespace().any(|c| c == "memory") {
            (v2_root, true)
        } else if v1_root.join("memory.limit_in_bytes").exists() {
            (v1_root, false)
        } else {
            return skip("neither cgroup v2 nor v1 has the memory controller mounted".into());
        };
        let path = root.join(format!("feature-store-test-{name}-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&path) {
            return skip(format!("cannot create {} ({e}); the test needs root", path.display()));
        }
        let cg = Self { path, v2 };
        let written = if v2 {
            cg.write("memory.max", limit).and_then(|()| cg.write("memory.swap.max", 0).or(Ok(())))
        } else {
            cg.write("memory.limit_in_bytes", limit)
                .and_then(|()| cg.write("memory.memsw.limit_in_bytes", limit).or(Ok(())))
        };
        if let Err(e) = written {
            return skip(format!("cannot set the limit of {} ({e})", cg.path.display()));
        }
        Some(cg)
    }

    fn write(&self, file: &str, value: u64) -> std::io::Result<()> {
        std::fs::write(self.path.join(file), value.to_string())
    }

    /// The CLI on `repo`, its process moved into the cgroup before it starts.
    fn cli(&self, repo: &Path, args: &[&str]) -> Output {
        let procs = self.path.join("cgroup.procs");
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {} && exec \"$@\"", procs.display()))
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_feature-store"))
            .arg("--repo")
            .arg(repo)
            .args(args)
            .output()
            .expect("run feature-store in the cgroup")
    }

    /// OOM kills inside the cgroup so far.
    fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        let text = std::fs::read_to_string(self.path.join(file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok())).unwrap_or(0)
    }

    /// Anonymous memory charged to the cgroup now (heap, stacks: what the
    /// kernel cannot reclaim without swap), from `memory.stat`.
    fn anon(&self) -> u64 {
        let key = if self.v2 { "anon " } else { "total_rss " };
        let text = std::fs::read_to_string(self.path.join("memory.stat")).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix(key).and_then(|n| n.trim().parse().ok())).unwrap_or(0)
    }

    /// [`Self::cli`], sampling the cgroup's anonymous memory every 5 ms;
    /// returns the output and the largest sample.
    fn cli_sampled(&self, repo: &Path, args: &[&str]) -> (Output, u64) {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut peak = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(self.anon());
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                peak
            });
            let out = self.cli(repo, args);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (out, sampler.join().unwrap())
        })
    }

    /// Times the cgroup's usage reached its limit (reclaim ran).
    fn limit_hits(&self) -> u64 {
        if self.v2 {
            let text = std::fs::read_to_string(self.path.join("memory.events")).unwrap_or_default();
            return text.lines().find_map(|l| l.strip_prefix("max ").and_then(|n| n.trim().parse().ok())).unwrap_or(0);
        }
        // With swap accounting the memsw counter is the one that trips.
        ["memory.failcnt", "memory.memsw.failcnt"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.path.join(f)).ok()?.trim().parse().ok())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The last process may take a moment to leave.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Drops `path`'s pages from the page cache, so the run under test reads
/// them again and the cgroup is charged for them (pages cached by the
/// writer are charged to the writer's cgroup).
fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: advice on an open descriptor; it changes no memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise({})", path.display());
}

/// `peak_rss_mib` from a `-v` run's log: the process's high-water mark,
/// mapped source pages included (the kernel reclaims those at the limit).
fn logged_peak_rss(stderr: &str) -> u64 {
    let at = stderr.find("peak_rss_mib=").unwrap_or_else(|| panic!("no peak_rss_mib in the log: {stderr}"));
    let digits: String = stderr[at + 13..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u64>().unwrap() * MIB
}

/// A repo of one view of `features` float32 columns: `rows_per_key` hourly
/// rows for each of `keys` drivers (values derived from driver and hour), and
/// an entity table of `entities` rows asking at random-looking times.
fn repo(root: &Path, keys: i64, rows_per_key: i64, features: usize, entities: i64) -> PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("data")).unwrap();
    std::fs::write(
        repo.join("feature_store.yaml"),
        "project: memory\nregistry: data/registry.json\nonline_store:\n  type: sqlite\n  path: data/online.db\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("features.yaml"),
        concat!(
            "entities:\n  - {name: driver, join_keys: [driver_id]}\n",
            "sources:\n  - {name: stats, path: data/stats.parquet, timestamp_field: event_timestamp}\n",
            "feature_views:\n",
            "  - {name: wide, entities: [driver], source: stats,\n",
            "     validation: {max_null_fraction: {\"*\": 0.0}, ranges: {f0: [0, null]}}}\n",
            "  - {name: wide_b, entities: [driver], source: stats, online: false}\n",
        ),
    )
    .unwrap();
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields =
        vec![Field::new("driver_id", DataType::Int64, false), Field::new("event_timestamp", ts_type.clone(), false)];
    fields.extend((0..features).map(|f| Field::new(format!("f{f}"), DataType::Float32, true)));
    let schema = Arc::new(Schema::new(fields));
    let file = std::fs::File::create(repo.join("data/stats.parquet")).unwrap();
    // Row groups of 16k-20k rows (~5 MB): a scan holds one row group's columns,
    // so a file's layout, not its size, sets the least memory a read needs
    // (README: memory limits).
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some((keys as usize).max(16_384)))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).unwrap();
    // Written an hour at a time, so the generator itself stays small.
    for h in 0..rows_per_key {
        let ids: Vec<i64> = (0..keys).collect();
        let ts = vec![BASE + h * 3_600_000_000; keys as usize];
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from(ids)), Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC"))];
        for f in 0..features as i64 {
            columns.push(Arc::new(Float32Array::from_iter_values(
                (0..keys).map(|d| ((d * 31 + h * 7 + f) % 10_007) as f32 / 7.0),
            )));
        }
        writer.write(&RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()).unwrap();
    }
    writer.close().unwrap();
    let ids: Vec<i64> = (0..entities).map(|i| (i * 7919) % (keys + 10)).collect();
    let ts: Vec<i64> = (0..entities).map(|i| BASE + ((i * 104_729) % (rows_per_key * 3600)) * 1_000_000).collect();
    let entity_schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type, false),
    ]));
    let batch = RecordBatch::try_new(
        entity_schema,
        vec![Arc::new(Int64Array::from(ids)), Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC"))],
    )
    .unwrap();
    crate::crash::write_parquet(&repo.join("data/entities.parquet"), &batch);
    ok(&cli(&repo, &["apply"]));
    repo
}

fn read_all(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn same_rows(a: &Path, b: &Path) {
    let (a, b) = (read_all(a), read_all(b));
    let schema = a[0].schema();
    let a = arrow::compute::concat_batches(&schema, &a).unwrap();
    let b = arrow::compute::concat_batches(&schema, &b).unwrap();
    assert_eq!(a.num_rows(), b.num_rows());
    assert!(a == b, "the limited run's output differs from the unlimited run's");
}

#[test]
fn retrieval_and_materialization_hold_inside_a_cgroup_of_the_limit_plus_base() {
    let limit = 32 * MIB;
    let Some(cg) = Cgroup::create("fits", limit + base(limit)) else { return };
    let tmp = tempfile::tempdir().unwrap();
    // 1M feature rows of 60 float32 columns: ~260 MB decoded, twice the
    // cgroup; 400k entity rows.
    let repo = repo(tmp.path(), 20_000, 50, 60, 400_000);
    // An aggregation view over the same rows: materialized below, inside the cgroup.
    let defs = repo.join("features.yaml");
    let mut text = std::fs::read_to_string(&defs).unwrap();
    text.push_str(concat!(
        "  - {name: agg, entities: [driver], source: stats, aggregation_interval: 1h,\n",
        "     aggregations: [{column: f0, function: sum, window: 1d}, {column: f1, function: max, window: 7d}]}\n",
    ));
    std::fs::write(&defs, text).unwrap();
    ok(&cli(&repo, &["apply"]));
    let entities = repo.join("data/entities.parquet");
    let (free, limited) = (tmp.path().join("free.parquet"), tmp.path().join("limited.parquet"));
    let args = |out: &Path| {
        vec![
            "historical".to_owned(),
            "--entities".into(),
            entities.display().to_string(),
            "--features".into(),
            // Two views: under the limit they join side by side (ZipExec).
            "wide,wide_b".into(),
            "--full-feature-names".into(),
            "--output".into(),
            out.display().to_string(),
        ]
    };
    // Saved as a dataset unlimited; verified (the join recomputed) under the limit below.
    let mut free_args = args(&free);
    free_args.extend(["--save".to_owned(), "free".into()]);
    ok(&cli(&repo, &free_args.iter().map(String::as_str).collect::<Vec<_>>()));
    let mut limited_args = args(&limited);
    // Saved as a dataset under the limit too (its rows written beside the output).
    limited_args.extend(["--memory-limit".to_owned(), "32MiB".into(), "-vv".into(), "--save".into(), "limited".into()]);
    evict(&repo.join("data/stats.parquet"));
    evict(&entities);
    let (out, anon) = cg.cli_sampled(&repo, &limited_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(cg.oom_kills(), 0, "the OOM killer struck: {}", String::from_utf8_lossy(&out.stderr));
    let log = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spilled_bytes="), "no join metrics in the log: {stderr}{log}");
    assert!(!stderr.contains("spilled_bytes=0 "), "a join did not spill, so the test proves nothing: {stderr}");
    assert!(stderr.contains("side_by_side=true"), "the views were not joined side by side: {stderr}");
    same_rows(&free, &limited);
    eprintln!(
        "anonymous memory peak (sampled) {} MiB, peak RSS {} MiB, cgroup limit hits {}",
        anon / MIB,
        logged_peak_rss(&stderr) / MIB,
        cg.limit_hits()
    );
    assert!(anon <= limit + base(limit), "anonymous memory reached {} MiB, above the limit plus base", anon / MIB);

    // Materialization of the same rows into SQLite (the plain view, and the
    // aggregation view's tiles), inside the same cgroup.
    evict(&repo.join("data/stats.parquet"));
    let (out, anon) = cg.cli_sampled(
        &repo,
        &["--memory-limit", "32MiB", "materialize", "2025-12-01T00:00:00Z", "2026-02-01T00:00:00Z"],
    );
    assert_eq!(cg.oom_kills(), 0, "the OOM killer struck: {}", String::from_utf8_lossy(&out.stderr));
    ok(&out);
    eprintln!("materialize: anonymous memory peak (sampled) {} MiB", anon / MIB);
    assert!(anon <= limit + base(limit), "anonymous memory reached {} MiB, above the limit plus base", anon / MIB);

    // Validation (the same one-pass statistics the materialization gate
    // ran) and the saved dataset's verification (a recomputed join), too.
    for (what, args) in [
        ("validate", &["--memory-limit", "32MiB", "validate", "wide"][..]),
        ("dataset verify", &["--memory-limit", "32MiB", "dataset", "verify", "free"][..]),
    ] {
        evict(&repo.join("data/stats.parquet"));
        let (out, anon) = cg.cli_sampled(&repo, args);
        assert_eq!(cg.oom_kills(), 0, "{what}: the OOM killer struck: {}", String::from_utf8_lossy(&out.stderr));
        ok(&out);
        eprintln!("{what}: anonymous memory peak (sampled) {} MiB", anon / MIB);
        assert!(anon <= limit + base(limit), "{what}: anonymous memory reached {} MiB", anon / MIB);
    }
    let online = ok(&cli(
        &repo,
        &["--json", "online", "--features", "wide:f0,wide:f59,agg:f1_max_7d", "--entity", "driver_id=19999"],
    ));
    let h = 49i64;
    let d = 19_999i64;
    let expect = |f: i64| ((d * 31 + h * 7 + f) % 10_007) as f32 / 7.0;
    assert!(online.contains(&format!("{}", expect(0))) && online.contains(&format!("{}", expect(59))), "{online}");
    assert!(online.contains("f1_max_7d"), "{online}");
    let datasets = ok(&cli(&repo, &["dataset", "list"]));
    assert!(datasets.contains("limited"), "the dataset saved under the limit is missing: {datasets}");
}

#[test]
fn one_key_too_large_for_the_limit_fails_with_advice_not_the_oom_killer() {
    let limit = 16 * MIB;
    let Some(cg) = Cgroup::create("one-key", limit + base(limit)) else { return };
    let tmp = tempfile::tempdir().unwrap();
    // One driver with 400k rows of 60 features (~100 MB): no partition can hold it.
    let repo = repo(tmp.path(), 1, 400_000, 60, 10_000);
    let entities = repo.join("data/entities.parquet");
    let out_file = tmp.path().join("out.parquet");
    evict(&repo.join("data/stats.parquet"));
    let out = cg.cli(
        &repo,
        &[
            "historical",
            "--entities",
            entities.to_str().unwrap(),
            "--features",
            "wide",
            "--output",
            out_file.to_str().unwrap(),
            "--memory-limit",
            "16MiB",
        ],
    );
    assert_eq!(cg.oom_kills(), 0, "the OOM killer struck: {}", String::from_utf8_lossy(&out.stderr));
    let err = crate::fail(&out);
    assert!(err.contains("join key (0)") && err.contains("memory_limit"), "{err}");
    assert!(!out_file.exists(), "a failed run left an output behind");
}

/// The aggregation operator holds one key's events at once to build their
/// tiles: a key with more than the limit allows fails with advice under
/// `--memory-limit`, before its memory grows past the limit; without a
/// limit the same materialization completes. (No cgroup needed: without the
/// check, the limited run would complete, using several times the limit.)
#[test]
fn one_key_too_large_for_aggregation_tiles_fails_with_advice() {
    let tmp = tempfile::tempdir().unwrap();
    // One driver with 400k hourly events: about 8 MB of the columns the tiles read.
    let repo = repo(tmp.path(), 1, 400_000, 4, 10);
    let defs = repo.join("features.yaml");
    let mut text = std::fs::read_to_string(&defs).unwrap();
    text.push_str(concat!(
        "  - {name: agg, entities: [driver], source: stats, aggregation_interval: 1h,\n",
        "     aggregations: [{column: f0, function: sum, window: 1d}, {column: f1, function: max, window: 7d}]}\n",
    ));
    std::fs::write(&defs, text).unwrap();
    ok(&cli(&repo, &["apply"]));
    let window = ["2025-12-01T00:00:00Z", "2080-01-01T00:00:00Z"];
    let limited = cli(&repo, &["--memory-limit", "16MiB", "materialize", window[0], window[1], "--views", "agg"]);
    let err = crate::fail(&limited);
    assert!(
        err.contains("aggregation view \"agg\"") && err.contains("join key (0)") && err.contains("memory_limit"),
        "{err}"
    );
    ok(&cli(&repo, &["materialize", window[0], window[1], "--views", "agg"]));
    let online = ok(&cli(&repo, &["--json", "online", "--features", "agg:f0_sum_1d", "--entity", "driver_id=0"]));
    assert!(online.contains("f0_sum_1d"), "{online}");
}
