//! `feature-store ingest` from a real `redis-server` stream: records in →
//! online values, aggregates and the offline log equal to a reference
//! computed here; bad records in the dead letters; kill -9 mid-stream,
//! a Redis restart mid-stream and two processes in one group change
//! nothing; the offline log read by `historical` equals what is served.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use feature_store_tests::redis::RedisServer;

use super::{cli, ok};

/// One event as produced: `bad` ones carry a string user id.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) user: i64,
    pub(super) ts: i64,
    pub(super) amount: f64,
    pub(super) merchant: String,
    pub(super) bad: bool,
}

/// `n` events over users 1..=20 with distinct times in [now-5h, now-2h),
/// out of order; every 97th is bad.
pub(super) fn events(n: usize, seed: u64) -> Vec<Event> {
    let now = chrono::Utc::now().timestamp_micros();
    let start = now - 5 * 3_600_000_000;
    let span = 3 * 3_600_000_000i64;
    (0..n)
        .map(|i| {
            let k = (i as u64).wrapping_mul(2_654_435_761).wrapping_add(seed) % (n as u64);
            Event {
                user: (k % 20) as i64 + 1,
                ts: start + (k as i64) * (span / n as i64),
                amount: (k % 89) as f64 * 0.25,
                merchant: format!("m{}", k % 7),
                bad: i % 97 == 13,
            }
        })
        .collect()
}

pub(super) fn json(e: &Event) -> String {
    let t = chrono::DateTime::from_timestamp_micros(e.ts).unwrap().to_rfc3339();
    if e.bad {
        format!(r#"{{"user_id": "u{}", "event_timestamp": "{t}", "amount": {}}}"#, e.user, e.amount)
    } else {
        format!(
            r#"{{"user_id": {}, "event_timestamp": "{t}", "amount": {}, "merchant": "{}"}}"#,
            e.user, e.amount, e.merchant
        )
    }
}

/// XADDs every event over one connection; returns the entry ids.
fn produce(redis: &RedisServer, key: &str, events: &[Event]) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    let mut req = Vec::new();
    for e in events {
        let body = json(e);
        let parts = ["XADD", key, "*", "data", body.as_str()];
        req.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
        for p in parts {
            req.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes());
        }
    }
    s.write_all(&req).unwrap();
    let mut r = BufReader::new(s);
    let mut ids = Vec::new();
    for _ in events {
        let mut len = String::new();
        r.read_line(&mut len).unwrap();
        assert!(len.starts_with('$'), "XADD answered {len}");
        let mut id = String::new();
        r.read_line(&mut id).unwrap();
        ids.push(id.trim_end().to_owned());
    }
    ids
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A repo whose stream source reads key `tx` of `redis`, with a plain view
/// and an aggregation view over it; `online` is the online_store section.
fn repo(root: &Path, redis: &RedisServer, online: &str) -> PathBuf {
    repo_with(root, &redis_source(redis), online, false)
}

/// The connection fields of a stream source reading key `tx` of `redis`.
/// A join whose lease landed but whose reply was lost leaves the lease
/// under a token of this process: the retry takes it over rather than
/// refusing its own lease as another process's. A second live consumer of
/// the name in this process, and another process's lease, are still refused.
#[test]
fn a_redis_lease_left_by_a_lost_reply_is_taken_over_by_the_retry() {
    use feature_store::ingest::StreamConsumer;
    use feature_store::model::{StreamKind, StreamSource};
    use feature_store::redis::RedisStreamConsumer;
    let redis = RedisServer::start();
    let source = StreamSource::builder("tx_stream", StreamKind::RedisStream, "event_timestamp", "tx")
        .redis(redis.url(), "tx")
        .build()
        .unwrap();
    let lease = "tx:g:lease:c1";
    let lost = feature_store::ingest::lease_token("1");
    redis.command(&["SET", lease, &lost, "PX", "15000"]).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut first = RedisStreamConsumer::open(&source, "g", "c1")
            .await
            .expect("the lease this process's lost reply left is taken over");
        let holder = redis.command(&["GET", lease]).unwrap();
        assert_ne!(holder.trim(), lost, "the retry holds the lease under its own token");
        let err = RedisStreamConsumer::open(&source, "g", "c1").await.unwrap_err();
        assert!(err.to_string().contains("another consumer of this process"), "{err}");
        first.close().await.unwrap();
        redis.command(&["SET", lease, "otherhost/1/1", "PX", "15000"]).unwrap();
        let err = RedisStreamConsumer::open(&source, "g", "c1").await.unwrap_err();
        assert!(err.to_string().contains("another ingest process (otherhost/1/1)"), "{err}");
    });
}

fn redis_source(redis: &RedisServer) -> String {
    format!("kind: redis_stream\n    connection_string: {}\n    key: tx", redis.url())
}

/// A repo whose stream source has the connection fields `stream` (YAML
/// lines, indented for the source), with the batch source in hourly hive
/// folders (`hour=2026-12-04-10/`) when `hourly`.
pub(super) fn repo_with(root: &Path, stream: &str, online: &str, hourly: bool) -> PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("feature_store.yaml"), format!("project: shop\nregistry: data/registry.json\n{online}"))
        .unwrap();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("merchant", DataType::Utf8, true),
    ]));
    // A user no stream event has, a year back: the seed the schema is read from.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1000])),
        Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_000_000]).with_timezone("UTC")),
        Arc::new(Float64Array::from(vec![1.0])),
        Arc::new(StringArray::from(vec!["seed"])),
    ];
    let seed = if hourly { "data/tx/hour=2023-11-14-22/seed.parquet" } else { "data/tx/seed.parquet" };
    write_parquet(&repo.join(seed), &RecordBatch::try_new(schema, columns).unwrap());
    let partition = if hourly { "\n    timestamp_partition: {column: hour, format: \"%Y-%m-%d-%H\"}" } else { "" };
    std::fs::write(
        repo.join("definitions.yaml"),
        format!(
            r#"entities:
  - {{name: user, join_keys: [user_id]}}
sources:
  - name: transactions
    path: data/tx
    timestamp_field: event_timestamp{}
  - name: transactions_stream
    {}
    timestamp_field: event_timestamp
    batch_source: transactions
feature_views:
  - name: user_last
    entities: [user]
    source: transactions_stream
    schema:
      - {{name: amount, dtype: float64}}
      - {{name: merchant, dtype: string}}
  - name: user_stats
    entities: [user]
    source: transactions_stream
    aggregation_interval: 1h
    aggregations:
      - {{function: sum, column: amount, window: 1d}}
      - {{function: count, window: 1d}}
"#,
            partition, stream
        ),
    )
    .unwrap();
    ok(&cli(&repo, &["apply"]));
    repo
}

pub(super) fn ingest(repo: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_feature-store"))
        .arg("--repo")
        .arg(repo)
        .args(["ingest", "--batch-size", "37"])
        .args(if extra.contains(&"--offline-flush-interval") {
            &[][..]
        } else {
            &["--offline-flush-interval", "200ms"][..]
        })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run feature-store ingest")
}

/// Runs ingestion until the stream is quiet for 2 s.
pub(super) fn drain(repo: &Path, extra: &[&str]) {
    let mut args = vec!["ingest", "--offline-flush-interval", "200ms", "--stop-when-idle", "2s"];
    args.extend_from_slice(extra);
    ok(&cli(repo, &args));
}

pub(super) fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Online values and aggregates per user, as served.
pub(super) fn served(repo: &Path, users: &[i64]) -> BTreeMap<i64, (f64, String, f64, i64)> {
    let mut args = vec![
        "--json".to_owned(),
        "online".to_owned(),
        "--features".to_owned(),
        "user_last:amount,user_last:merchant,user_stats:amount_sum_1d,user_stats:count_1d".to_owned(),
    ];
    for u in users {
        args.push("--entity".into());
        args.push(format!("user_id={u}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut out: serde_json::Value = serde_json::from_str(&ok(&cli(repo, &args))).unwrap();
    // The aggregates are complete up to the hour ingestion last caught up
    // in; when an hour boundary has passed since it stopped they are
    // honestly OUTSIDE_MAX_AGE. Catching up again (nothing new to read)
    // moves the watermark; then every status must be PRESENT.
    if out["results"][3]["statuses"].as_array().is_some_and(|s| s.iter().any(|s| s == "OUTSIDE_MAX_AGE")) {
        eprintln!("aggregates outside max age (an hour boundary passed since ingestion stopped?): catching up again");
        drain(repo, &[]);
        out = serde_json::from_str(&ok(&cli(repo, &args))).unwrap();
    }
    let results = out["results"].as_array().unwrap();
    let column = |i: usize| (results[i]["values"].as_array().unwrap().clone(), results[i]["statuses"].clone());
    let (amount, _) = column(1);
    let (merchant, _) = column(2);
    let (sum, sum_status) = column(3);
    let (count, _) = column(4);
    users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            assert_eq!(sum_status[i], "PRESENT", "user {u}: aggregation status in {out}");
            (
                *u,
                (
                    amount[i].as_f64().unwrap(),
                    merchant[i].as_str().unwrap().to_owned(),
                    sum[i].as_f64().unwrap(),
                    count[i].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// What serving must show after every good event: the newest per user, and
/// the sum and count of all of them (all lie in the 1-day window).
pub(super) fn reference(events: &[Event]) -> BTreeMap<i64, (f64, String, f64, i64)> {
    let mut out: BTreeMap<i64, (i64, f64, String, f64, i64)> = BTreeMap::new();
    for e in events.iter().filter(|e| !e.bad) {
        let r = out.entry(e.user).or_insert((i64::MIN, 0.0, String::new(), 0.0, 0));
        if e.ts > r.0 {
            (r.0, r.1, r.2) = (e.ts, e.amount, e.merchant.clone());
        }
        r.3 += e.amount;
        r.4 += 1;
    }
    out.into_iter().map(|(u, r)| (u, (r.1, r.2, r.3, r.4))).collect()
}

/// The offline log files (not the seed), in any partition folder.
pub(super) fn log_file_paths(repo: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![repo.join("data/tx")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                // Not object_store's staging copy (`name#N`) of a file being written.
                if name.starts_with("ingest-") && name.ends_with(".parquet") {
                    files.push(p);
                }
            }
        }
    }
    files
}

/// Every row of the offline log files: (user, ts µs, amount bits), sorted.
pub(super) fn offline_log(repo: &Path) -> Vec<(i64, i64, u64)> {
    let mut rows = Vec::new();
    for f in log_file_paths(repo) {
        // A running ingestion's compaction may delete a file after the listing.
        let Ok(file) = std::fs::File::open(&f) else { continue };
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for b in reader {
            let b = b.unwrap();
            let user = b.column_by_name("user_id").unwrap().as_primitive::<arrow_array::types::Int64Type>();
            let ts = b
                .column_by_name("event_timestamp")
                .unwrap()
                .as_primitive::<arrow_array::types::TimestampMicrosecondType>();
            let amount = b.column_by_name("amount").unwrap().as_primitive::<arrow_array::types::Float64Type>();
            for i in 0..b.num_rows() {
                rows.push((user.value(i), ts.value(i), amount.value(i).to_bits()));
            }
        }
    }
    rows.sort_unstable();
    rows
}

pub(super) fn expected_log(events: &[Event]) -> Vec<(i64, i64, u64)> {
    let mut rows: Vec<_> = events.iter().filter(|e| !e.bad).map(|e| (e.user, e.ts, e.amount.to_bits())).collect();
    rows.sort_unstable();
    rows
}

/// The ids of the dead letters, and how many lines the file has.
pub(super) fn dead_letters(repo: &Path) -> (BTreeSet<String>, usize) {
    let text = std::fs::read_to_string(repo.join("dead_letter/transactions_stream.jsonl")).unwrap_or_default();
    let mut ids = BTreeSet::new();
    let mut lines = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["source"], "transactions_stream");
        assert!(v["reason"].as_str().unwrap().contains("\"user_id\""), "{v}");
        assert!(v["received_at"].as_str().is_some() && v["record"].is_object(), "{v}");
        ids.insert(v["id"].as_str().unwrap().to_owned());
        lines += 1;
    }
    (ids, lines)
}

/// Everything the run must end with, checked against `events` (with `ids` their stream ids).
pub(super) fn check_all(repo: &Path, events: &[Event], ids: &[String]) {
    check_values(repo, events);
    let bad: BTreeSet<String> = events.iter().zip(ids).filter(|(e, _)| e.bad).map(|(_, id)| id.clone()).collect();
    let (dead, _) = dead_letters(repo);
    assert_eq!(dead, bad, "dead letters");
}

/// Dead letters published to a broker (`letters`, one JSON object each):
/// one per bad event, each with its reason, and no dead-letter file.
pub(super) fn check_broker_letters(repo: &Path, letters: &[String], events: &[Event], ids: &[String]) {
    let mut got = BTreeSet::new();
    for l in letters {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v["source"], "transactions_stream", "{v}");
        assert!(v["reason"].as_str().unwrap().contains("\"user_id\""), "{v}");
        assert!(v["received_at"].as_str().is_some() && v["record"].is_object(), "{v}");
        got.insert(v["id"].as_str().unwrap().to_owned());
    }
    let bad: BTreeSet<String> = events.iter().zip(ids).filter(|(e, _)| e.bad).map(|(_, id)| id.clone()).collect();
    assert!(!bad.is_empty(), "test bug: no bad event");
    assert_eq!(got, bad, "dead letters on the broker");
    assert_eq!(letters.len(), bad.len(), "a letter was sent twice");
    assert!(!repo.join("dead_letter").exists(), "a dead-letter file was written too");
}

/// Online values and the offline log, checked against `events`.
pub(super) fn check_values(repo: &Path, events: &[Event]) {
    let want = reference(events);
    let users: Vec<i64> = want.keys().copied().collect();
    let got = served(repo, &users);
    for (u, w) in &want {
        let g = &got[u];
        assert_eq!((g.0, &g.1, g.3), (w.0, &w.1, w.3), "user {u}: served {g:?}, reference {w:?}");
        assert!((g.2 - w.2).abs() < 1e-9, "user {u}: sum {} vs {}", g.2, w.2);
    }
    let (got, want) = (offline_log(repo), expected_log(events));
    if got != want {
        let mut extra = got.clone();
        for w in &want {
            if let Some(i) = extra.iter().position(|g| g == w) {
                extra.swap_remove(i);
            }
        }
        let mut missing = want.clone();
        for g in &got {
            if let Some(i) = missing.iter().position(|w| w == g) {
                missing.swap_remove(i);
            }
        }
        panic!(
            "offline log differs from the good events: {} rows, want {}; extra (user, time, amount bits) {:?}; missing {:?}",
            got.len(),
            want.len(),
            &extra[..extra.len().min(10)],
            &missing[..missing.len().min(10)]
        );
    }
}

/// Same as serving, from the offline log: `historical` at a time after the
/// last event for every user.
pub(super) fn check_parity(repo: &Path, events: &[Event]) {
    let want = reference(events);
    let at = chrono::Utc::now().to_rfc3339();
    let mut csv = String::from("user_id,event_timestamp\n");
    for u in want.keys() {
        csv.push_str(&format!("{u},{at}\n"));
    }
    std::fs::write(repo.join("entities.csv"), csv).unwrap();
    let out = repo.join("training.parquet");
    ok(&cli(
        repo,
        &[
            "historical",
            "--entities",
            repo.join("entities.csv").to_str().unwrap(),
            "--features",
            "user_last:amount,user_last:merchant,user_stats:amount_sum_1d,user_stats:count_1d",
            "--output",
            out.to_str().unwrap(),
        ],
    ));
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&out).unwrap())
            .unwrap()
            .build()
            .unwrap();
    let served = served(repo, &want.keys().copied().collect::<Vec<_>>());
    let mut seen = 0;
    for b in reader {
        let b = b.unwrap();
        let user = b.column_by_name("user_id").unwrap().as_primitive::<arrow_array::types::Int64Type>();
        let amount = b.column_by_name("amount").unwrap().as_primitive::<arrow_array::types::Float64Type>();
        let sum = b.column_by_name("amount_sum_1d").unwrap().as_primitive::<arrow_array::types::Float64Type>();
        let count = b.column_by_name("count_1d").unwrap();
        let count = arrow_cast_i64(count);
        for i in 0..b.num_rows() {
            let s = &served[&user.value(i)];
            assert_eq!(amount.value(i), s.0, "user {}: historical amount vs online", user.value(i));
            assert!((sum.value(i) - s.2).abs() < 1e-9, "user {}: historical sum vs online", user.value(i));
            assert_eq!(count[i], s.3, "user {}: historical count vs online", user.value(i));
            seen += 1;
        }
    }
    assert_eq!(seen, want.len());
}

fn arrow_cast_i64(a: &ArrayRef) -> Vec<i64> {
    match a.data_type() {
        DataType::Int64 => a.as_primitive::<arrow_array::types::Int64Type>().values().to_vec(),
        DataType::UInt64 => {
            a.as_primitive::<arrow_array::types::UInt64Type>().values().iter().map(|v| *v as i64).collect()
        }
        other => panic!("count is {other}"),
    }
}

/// Waits until `f` holds (or fails after 60 s).
pub(super) fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn log_files(repo: &Path) -> usize {
    log_file_paths(repo).len()
}

#[test]
fn redis_stream_records_reach_online_offline_and_dead_letters() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path(), &redis, "online_store: {type: sqlite, path: data/online.db}\n");
    let events = events(600, 1);
    let ids = produce(&redis, "tx", &events);
    drain(&repo, &[]);
    check_all(&repo, &events, &ids);
    check_parity(&repo, &events);
    // Everything is committed: a second run finds nothing and changes nothing.
    let before = offline_log(&repo);
    drain(&repo, &[]);
    assert_eq!(offline_log(&repo), before);
    let pending = redis.command(&["XPENDING", "tx", "feature-store-shop", "-", "+", "10"]).unwrap();
    assert_eq!(pending, "*0", "messages left unacknowledged: {pending}");
    // `status` shows what ingestion recorded.
    let status: serde_json::Value = serde_json::from_str(&ok(&cli(&repo, &["--json", "status"]))).unwrap();
    let view = status.as_array().unwrap().iter().find(|v| v["view"] == "user_last").unwrap();
    assert_eq!(view["ingest"]["source"], "transactions_stream", "{view}");
    assert!(view["watermark"].is_string(), "{view}");
    // Prometheus metrics while it runs, current within seconds though
    // nothing is flushed or committed for ten minutes.
    let port = feature_store_tests::free_port();
    let child = ingest(&repo, &["--metrics-port", &port.to_string(), "--offline-flush-interval", "10m"]);
    let more = self::events(50, 99);
    produce(&redis, "tx", &more);
    let scrape = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut s, &mut text).ok()?;
        Some(text)
    };
    let good = more.iter().filter(|e| !e.bad).count();
    let want = format!("feature_store_ingest_ingested_total{{source=\"transactions_stream\"}} {good}\n");
    wait_for("the ingested count in /metrics", || scrape().is_some_and(|t| t.contains(&want)));
    let text = scrape().unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200 OK")
            && text.contains(
                "feature_store_ingest_freshness_milliseconds{source=\"transactions_stream\",quantile=\"0.99\"}"
            ),
        "{text}"
    );
    kill(child);
}

/// kill -9 at random points while events keep arriving, then one run to
/// the end: nothing lost, nothing counted twice, online or offline.
#[test]
fn ingest_killed_anywhere_loses_and_doubles_nothing() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path(), &redis, "online_store: {type: sqlite, path: data/online.db}\n");
    let all = events(3000, 7);
    let mut ids = Vec::new();
    let chunks: Vec<&[Event]> = all.chunks(500).collect();
    let mut killed = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        ids.extend(produce(&redis, "tx", chunk));
        // Dead letters are written as a batch is decoded, before its online
        // writes, and commits wait for the next offline flush (1 s): killed
        // soon after a new letter, the process has applied events online
        // that it never committed, which the next run receives again.
        let letters = dead_letters(&repo).1;
        let child = ingest(&repo, &["--consumer", "worker", "--offline-flush-interval", "1s"]);
        wait_for("a dead letter", || dead_letters(&repo).1 > letters);
        std::thread::sleep(Duration::from_millis(15 * (i as u64 % 5)));
        killed += 1;
        kill(child);
    }
    drain(&repo, &["--consumer", "worker"]);
    assert_eq!(killed, chunks.len());
    // Replays did happen: some dead letters were written twice.
    let (ids_dead, lines) = dead_letters(&repo);
    assert!(lines > ids_dead.len(), "no batch was received twice; the kills came too late to test anything");
    check_all(&repo, &all, &ids);
    check_parity(&repo, &all);
}

/// Two processes in one group (distinct consumer names) share the stream:
/// each event takes effect once.
#[test]
fn two_ingest_processes_in_one_group_share_without_double_effects() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path(), &redis, "online_store: {type: sqlite, path: data/online.db}\n");
    let all = events(2000, 3);
    let a = ingest(&repo, &["--consumer", "a", "--stop-when-idle", "3s"]);
    let b = ingest(&repo, &["--consumer", "b", "--stop-when-idle", "3s"]);
    let mut ids = Vec::new();
    for chunk in all.chunks(250) {
        ids.extend(produce(&redis, "tx", chunk));
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    check_all(&repo, &all, &ids);
    // Both took part, and a third process under a name in use is refused.
    let consumers = redis.command(&["XINFO", "CONSUMERS", "tx", "feature-store-shop"]).unwrap();
    assert_eq!(consumers, "*2", "{consumers}");
    let holder = ingest(&repo, &["--consumer", "a"]);
    wait_for("the lease", || redis.command(&["EXISTS", "tx:feature-store-shop:lease:a"]).unwrap() == ":1");
    let refused = cli(&repo, &["ingest", "--consumer", "a", "--stop-when-idle", "1s"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("holds this consumer name"), "{err}");
    kill(holder);
}

/// The broker, which is also the online store here, restarts mid-stream:
/// ingestion backs off, resumes, and ends equal to the reference.
#[test]
fn a_redis_restart_mid_stream_loses_and_doubles_nothing() {
    let mut redis = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let root = tempfile::tempdir().unwrap();
    let online = format!("online_store: {{type: redis, connection_string: \"{}\"}}\n", redis.url());
    let repo = repo(root.path(), &redis, &online);
    let all = events(1500, 11);
    let mut ids = produce(&redis, "tx", &all[..700]);
    let child = ingest(&repo, &["--consumer", "w"]);
    wait_for("an offline log file", || log_files(&repo) > 0);
    redis.restart();
    ids.extend(produce(&redis, "tx", &all[700..]));
    // It carries on by itself; then a graceful stop (SIGTERM) flushes and commits.
    wait_for("the stream drained", || {
        redis.command(&["XINFO", "GROUPS", "tx"]).is_ok_and(|_| offline_log(&repo).len() >= expected_log(&all).len())
    });
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    check_all(&repo, &all, &ids);
}

/// Aborted (as by kill -9) right after a flush's log files are written and
/// before the commit, and in the middle of a flush spanning several hourly
/// folders: the next run writes no row twice and completes the cut flush.
#[test]
fn a_crash_between_the_offline_log_and_the_commit_writes_no_row_twice() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let repo =
        repo_with(root.path(), &redis_source(&redis), "online_store: {type: sqlite, path: data/online.db}\n", true);
    let all = events(1200, 5);
    let mut ids = Vec::new();
    for (half, fault) in [(&all[..600], "ingest-mid-offline-flush"), (&all[600..], "ingest-after-offline-flush")] {
        ids.extend(produce(&redis, "tx", half));
        let mut aborted = 0;
        for _ in 0..3 {
            let out = Command::new(env!("CARGO_BIN_EXE_feature-store"))
                .arg("--repo")
                .arg(&repo)
                .args(["ingest", "--consumer", "w", "--batch-size", "150", "--offline-flush-interval", "100ms"])
                .args(["--stop-when-idle", "2s"])
                .env("FEATURE_STORE_FAULT", fault)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains(&format!("aborting at {fault}")) {
                assert!(!out.status.success());
                aborted += 1;
            } else {
                assert!(out.status.success(), "{fault}: {err}");
                break;
            }
        }
        assert!(aborted >= 1, "{fault} was never reached");
    }
    drain(&repo, &["--consumer", "w"]);
    let folders: BTreeSet<PathBuf> = log_file_paths(&repo).iter().map(|p| p.parent().unwrap().to_owned()).collect();
    assert!(folders.len() >= 3, "events span several hourly folders: {folders:?}");
    check_all(&repo, &all, &ids);
    check_parity(&repo, &all);
}

/// An online write slower than `--stop-when-idle` is work, not idleness:
/// ingestion goes on to the end of the stream. (It stopped after the first
/// slow batch while idle time was counted from a batch's arrival.)
#[test]
fn a_write_slower_than_the_idle_limit_does_not_stop_ingestion() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let repo =
        repo_with(root.path(), &redis_source(&redis), "online_store: {type: sqlite, path: data/online.db}\n", true);
    let all = events(300, 3);
    let ids = produce(&redis, "tx", &all);
    let out = Command::new(env!("CARGO_BIN_EXE_feature-store"))
        .arg("--repo")
        .arg(&repo)
        .args(["--json", "ingest", "--batch-size", "100", "--offline-flush-interval", "200ms"])
        .args(["--stop-when-idle", "1s"])
        .env("FEATURE_STORE_SLOW", "ingest-online-write=1500")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Read from its own report: checking the served values could catch up
    // by itself (`served` drains again when aggregates lag).
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sources"][0]["received"], 300, "{report}");
    check_all(&repo, &all, &ids);
}

/// Small offline log files (here one flush per run, in hourly folders) are
/// merged by the next run: the log holds the same rows, training equals
/// serving, and the restart bookkeeping the file names carry still holds
/// (events after the merge are logged once).
#[test]
fn small_offline_log_files_are_merged_and_nothing_changes() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let online = "online_store: {type: sqlite, path: data/online.db}\n";
    let repo = repo_with(root.path(), &redis_source(&redis), online, true);
    let (mut all, mut ids) = (Vec::new(), Vec::new());
    for round in 0..10 {
        let batch = events(60, round);
        ids.extend(produce(&redis, "tx", &batch));
        all.extend(batch);
        drain(&repo, &["--offline-compact-interval", "off"]);
    }
    let before = log_files(&repo);
    assert!(before >= 20, "test bug: only {before} log files");
    check_all(&repo, &all, &ids);
    drain(&repo, &[]);
    let after = log_files(&repo);
    assert!(after * 3 <= before, "{before} log files, {after} after compaction");
    check_all(&repo, &all, &ids);
    check_parity(&repo, &all);
    let batch = events(60, 77);
    ids.extend(produce(&redis, "tx", &batch));
    all.extend(batch);
    drain(&repo, &[]);
    check_all(&repo, &all, &ids);
    check_parity(&repo, &all);
}

/// `dead_letter: stream:<key>`: bad records are appended to a Redis stream
/// on the source's server (field `data`), not to a file.
#[test]
fn dead_letters_go_to_a_redis_stream_when_configured() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let source = format!("{}\n    dead_letter: stream:tx-dead", redis_source(&redis));
    let repo = repo_with(root.path(), &source, "online_store: {type: sqlite, path: data/online.db}\n", false);
    let events = events(400, 5);
    let ids = produce(&redis, "tx", &events);
    drain(&repo, &[]);
    check_values(&repo, &events);
    check_broker_letters(&repo, &redis.stream_field("tx-dead", "data").unwrap(), &events, &ids);
}

/// The dead letters in Parquet folder `dead_letter/tx.parquet`: their ids,
/// and how many rows the files hold.
fn parquet_dead_letters(repo: &Path) -> (BTreeSet<String>, usize) {
    let (mut ids, mut rows) = (BTreeSet::new(), 0);
    let Ok(dir) = std::fs::read_dir(repo.join("dead_letter/tx.parquet")) else { return (ids, rows) };
    for entry in dir {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("dead-letters-") && name.ends_with(".parquet"), "{name}");
        let file = std::fs::File::open(&path).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for b in reader {
            let b = b.unwrap();
            let text =
                |c: &str| b.column_by_name(c).unwrap_or_else(|| panic!("no column {c}")).as_string::<i32>().clone();
            let (source, reason, record, id) = (text("source"), text("reason"), text("record"), text("id"));
            let received = b.column_by_name("received_at").unwrap();
            assert_eq!(received.data_type(), &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
            for i in 0..b.num_rows() {
                assert_eq!(source.value(i), "transactions_stream");
                assert!(reason.value(i).contains("\"user_id\""), "{}", reason.value(i));
                let r: serde_json::Value = serde_json::from_str(record.value(i)).unwrap();
                assert!(r.is_object(), "{r}");
                assert!(!received.is_null(i));
                ids.insert(id.value(i).to_owned());
                rows += 1;
            }
        }
    }
    (ids, rows)
}

/// `dead_letter: <path>.parquet`: bad records land in Parquet files (one
/// per partition and write, named by the positions they hold), and a
/// replay after a crash writes none of them twice.
#[test]
fn dead_letters_as_parquet_are_written_once_through_a_crash() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let source = format!("{}\n    dead_letter: dead_letter/tx.parquet", redis_source(&redis));
    let repo = repo_with(root.path(), &source, "online_store: {type: sqlite, path: data/online.db}\n", false);
    let events = events(900, 11);
    let ids = produce(&redis, "tx", &events);
    // Aborted after the first offline flush, before any commit: the next
    // run receives every record again, the bad ones included.
    let out = Command::new(env!("CARGO_BIN_EXE_feature-store"))
        .arg("--repo")
        .arg(&repo)
        .args(["ingest", "--consumer", "w", "--batch-size", "150", "--offline-flush-interval", "100ms"])
        .args(["--stop-when-idle", "2s"])
        .env("FEATURE_STORE_FAULT", "ingest-after-offline-flush")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("aborting at ingest-after-offline-flush") && !out.status.success(), "{err}");
    let (before, _) = parquet_dead_letters(&repo);
    assert!(!before.is_empty(), "no dead letter was written before the crash; the replay tests nothing");
    drain(&repo, &["--consumer", "w"]);
    check_values(&repo, &events);
    let (got, rows) = parquet_dead_letters(&repo);
    let bad: BTreeSet<String> = events.iter().zip(&ids).filter(|(e, _)| e.bad).map(|(_, id)| id.clone()).collect();
    assert_eq!(got, bad, "dead letters");
    assert_eq!(rows, bad.len(), "a dead letter was written twice");
    assert!(!repo.join("dead_letter/transactions_stream.jsonl").exists(), "letters went to the default file too");
}

/// `start: latest`: a new group skips what the stream held before it was
/// created, and takes everything after.
#[test]
fn a_group_starting_at_latest_takes_only_later_events() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let source = format!("{}\n    start: latest", redis_source(&redis));
    let repo = repo_with(root.path(), &source, "online_store: {type: sqlite, path: data/online.db}\n", false);
    let before = events(200, 61);
    produce(&redis, "tx", &before);
    let child = ingest(&repo, &[]);
    wait_for("the consumer group", || redis.command(&["XINFO", "GROUPS", "tx"]).is_ok_and(|r| r == "*1"));
    let after = events(200, 62);
    let ids = produce(&redis, "tx", &after);
    wait_for("the later events in the offline log", || offline_log(&repo).len() >= expected_log(&after).len());
    std::thread::sleep(Duration::from_millis(500));
    kill(child);
    check_all(&repo, &after, &ids);
}

/// `--views`: only the named view is written online (the other view over
/// the same stream stays empty); the offline log still gets every event.
#[test]
fn ingest_views_writes_only_those_views() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path(), &redis, "online_store: {type: sqlite, path: data/online.db}\n");
    let events = events(300, 63);
    produce(&redis, "tx", &events);
    drain(&repo, &["--views", "user_last"]);
    let want = reference(&events);
    let mut args = vec!["--json", "online", "--features", "user_last:amount,user_stats:count_1d"];
    let entities: Vec<String> = want.keys().map(|u| format!("user_id={u}")).collect();
    for e in &entities {
        args.extend(["--entity", e.as_str()]);
    }
    let out: serde_json::Value = serde_json::from_str(&ok(&cli(&repo, &args))).unwrap();
    let results = out["results"].as_array().unwrap();
    for (i, (u, w)) in want.iter().enumerate() {
        assert_eq!(results[1]["values"][i].as_f64(), Some(w.0), "user {u}: {out}");
        assert_eq!(results[2]["statuses"][i], "NOT_FOUND", "user {u}: a view not asked for was written: {out}");
    }
    assert_eq!(offline_log(&repo), expected_log(&events));
    // The group's positions moved past those events for user_stats too: the
    // view is marked as missing them, and a later run over every view (which
    // receives nothing) does not move its watermark past them, so
    // materialize-incremental loads them from the offline log.
    let status = ok(&cli(&repo, &["status"]));
    assert!(status.contains("missing events from"), "{status}");
    drain(&repo, &[]);
    ok(&cli(&repo, &["materialize-incremental", "now"]));
    check_values(&repo, &events);
    let status: serde_json::Value = serde_json::from_str(&ok(&cli(&repo, &["--json", "status"]))).unwrap();
    assert!(status.as_array().unwrap().iter().all(|v| v["ingest_gap"].is_null()), "{status}");
}

/// `--no-offline-log`: online only; no log file is written, and every
/// message is still committed (a second run finds nothing).
#[test]
fn ingest_without_the_offline_log_writes_online_only() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path(), &redis, "online_store: {type: sqlite, path: data/online.db}\n");
    let events = events(300, 65);
    produce(&redis, "tx", &events);
    drain(&repo, &["--no-offline-log"]);
    assert_eq!(log_files(&repo), 0, "log files written with --no-offline-log");
    let want = reference(&events);
    let got = served(&repo, &want.keys().copied().collect::<Vec<_>>());
    for (u, w) in &want {
        let g = &got[u];
        assert_eq!((g.0, &g.1, g.3), (w.0, &w.1, w.3), "user {u}");
    }
    let pending = redis.command(&["XPENDING", "tx", "feature-store-shop", "-", "+", "10"]).unwrap();
    assert_eq!(pending, "*0", "messages left unacknowledged: {pending}");
    drain(&repo, &[]);
    assert_eq!(log_files(&repo), 0, "a second run found uncommitted messages");
}
