//! `feature-store ingest` from a real Kafka-protocol broker (`tansu`): the
//! same reference checks as the Redis Streams tests (`streams.rs`) on a
//! topic of several partitions, kill -9 mid-stream (against librdkafka's
//! mock cluster, see below), a group of two
//! processes whose partitions move between them (a join mid-stream, then a
//! leave) under both rebalance protocols.

use std::process::Command;
use std::time::Duration;

use feature_store_tests::kafka::{KafkaMock, KafkaServer};

use super::streams::{
    Event, check_all, check_broker_letters, check_parity, check_values, dead_letters, drain, ingest, json, kill,
    log_files, offline_log, repo_with, wait_for,
};

const SQLITE: &str = "online_store: {type: sqlite, path: data/online.db}\n";

/// The stream source's connection fields, with extra client `properties`.
fn source(kafka: &KafkaServer, properties: &str) -> String {
    format!("kind: kafka\n    brokers: {}\n    topic: tx\n    properties: {{{properties}}}", kafka.bootstrap())
}

fn produce(kafka: &KafkaServer, partitions: i32, events: &[Event]) -> Vec<String> {
    let values: Vec<String> = events.iter().map(json).collect();
    kafka.produce("tx", partitions, &values)
}

#[test]
fn kafka_records_reach_online_offline_and_dead_letters() {
    let kafka = KafkaServer::start();
    kafka.create_topic("tx", 3);
    let root = tempfile::tempdir().unwrap();
    let repo = repo_with(root.path(), &source(&kafka, ""), SQLITE, false);
    let events = super::streams::events(600, 41);
    let ids = produce(&kafka, 3, &events);
    drain(&repo, &[]);
    check_all(&repo, &events, &ids);
    check_parity(&repo, &events);
    // Each partition has its own log files.
    let before = offline_log(&repo);
    let names: Vec<String> = super::streams::log_file_paths(&repo)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for p in ["30", "31", "32"] {
        assert!(names.iter().any(|n| n.starts_with(&format!("ingest-transactions_stream-{p}-"))), "{names:?}");
    }
    // Committed: a second run reads nothing again.
    drain(&repo, &[]);
    assert_eq!(offline_log(&repo), before, "a second run changed the offline log");
}

/// An unreachable broker: a drain (`--stop-when-idle`) that never read
/// anything fails and says why, instead of reporting success.
#[test]
fn an_unreachable_kafka_broker_is_an_error_that_says_why() {
    let root = tempfile::tempdir().unwrap();
    let port = feature_store_tests::free_port();
    let source = format!("kind: kafka\n    brokers: 127.0.0.1:{port}\n    topic: tx");
    let repo = repo_with(root.path(), &source, SQLITE, false);
    let out = super::cli(&repo, &["ingest", "--stop-when-idle", "2s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("without ever reading from the broker"),
        "{err}"
    );
    assert!(err.contains("retries (last: kafka stream"), "the status line names the failure: {err}");
}

/// kill -9 right after a batch was decoded (its online writes under way,
/// nothing committed), repeatedly, then one run to the end. Against
/// librdkafka's mock cluster, which expires a killed member after its
/// session timeout (6 s, the least a broker allows) and moves its
/// partitions to the next process: tansu 0.6 never does (and a restarted
/// static member, `group.instance.id`, got its partitions back only
/// sometimes when the machine was loaded).
#[test]
fn kafka_ingest_killed_anywhere_loses_and_doubles_nothing() {
    let kafka = KafkaMock::start("tx", 2);
    killed_anywhere(&kafka.bootstrap(), "session.timeout.ms: \"6000\"", 43);
}

fn killed_anywhere(bootstrap: &str, properties: &str, seed: u64) {
    let root = tempfile::tempdir().unwrap();
    let source = format!("kind: kafka\n    brokers: {bootstrap}\n    topic: tx\n    properties: {{{properties}}}");
    let repo = repo_with(root.path(), &source, SQLITE, false);
    let all = super::streams::events(2500, seed);
    let mut ids = Vec::new();
    for (i, chunk) in all.chunks(500).enumerate() {
        let values: Vec<String> = chunk.iter().map(json).collect();
        ids.extend(feature_store_tests::kafka::produce(bootstrap, "tx", 2, &values));
        let letters = dead_letters(&repo).1;
        let child = ingest(&repo, &["--offline-flush-interval", "1s"]);
        wait_for("a dead letter", || dead_letters(&repo).1 > letters);
        std::thread::sleep(Duration::from_millis(15 * (i as u64 % 5)));
        kill(child);
    }
    drain(&repo, &[]);
    let (unique, lines) = dead_letters(&repo);
    assert!(lines > unique.len(), "no batch was received twice; the kills came too late to test anything");
    check_all(&repo, &all, &ids);
    check_parity(&repo, &all);
}

/// A group of two processes: the second joins mid-stream and takes some of
/// the first's partitions (a rebalance while both write), then the first
/// stops and the second takes the rest. Every event takes effect once, and
/// the offline log holds each once.
fn partitions_move_between_processes(strategy: &str, seed: u64) {
    let kafka = KafkaServer::start();
    kafka.create_topic("tx", 4);
    let root = tempfile::tempdir().unwrap();
    let properties = format!("partition.assignment.strategy: {strategy}");
    let repo = repo_with(root.path(), &source(&kafka, &properties), SQLITE, false);
    let all = super::streams::events(3000, seed);
    let mut ids = produce(&kafka, 4, &all[..1000]);
    let first = ingest(&repo, &["--consumer", "a", "--offline-flush-interval", "1s"]);
    wait_for("an offline log file", || log_files(&repo) > 0);
    let second = ingest(&repo, &["-v", "--consumer", "b", "--offline-flush-interval", "1s", "--stop-when-idle", "20s"]);
    for chunk in all[1000..2000].chunks(100) {
        ids.extend(produce(&kafka, 4, chunk));
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill").args(["-TERM", &first.id().to_string()]).status().unwrap();
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ids.extend(produce(&kafka, 4, &all[2000..]));
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.matches("partitions reassigned").count() >= 2, "the second process never gained a partition: {err}");
    check_all(&repo, &all, &ids);
    check_parity(&repo, &all);
}

#[test]
fn kafka_partitions_move_between_processes_cooperatively() {
    partitions_move_between_processes("cooperative-sticky", 47);
}

#[test]
fn kafka_partitions_move_between_processes_eagerly() {
    partitions_move_between_processes("range", 53);
}

/// `dead_letter: topic:<name>`: bad records are produced to a topic on the
/// source's brokers, not written to a file.
#[test]
fn dead_letters_go_to_a_kafka_topic_when_configured() {
    let kafka = KafkaServer::start();
    kafka.create_topic("tx", 2);
    kafka.create_topic("tx-dead", 1);
    let root = tempfile::tempdir().unwrap();
    let with_letters = format!("{}\n    dead_letter: topic:tx-dead", source(&kafka, ""));
    let repo = repo_with(root.path(), &with_letters, SQLITE, false);
    let events = super::streams::events(400, 43);
    let ids = produce(&kafka, 2, &events);
    drain(&repo, &[]);
    check_values(&repo, &events);
    let bad = events.iter().filter(|e| e.bad).count();
    let letters: Vec<String> = feature_store_tests::kafka::consume_all(&kafka.bootstrap(), "tx-dead", bad)
        .into_iter()
        .map(|v| String::from_utf8(v).unwrap())
        .collect();
    check_broker_letters(&repo, &letters, &events, &ids);
}

/// The broker restarts mid-stream (tansu keeping its topics and the
/// group's offsets in S3, on the harness's moto server, so they survive):
/// ingestion reconnects and resumes, and a graceful stop (SIGTERM) ends
/// equal to the reference, nothing lost or doubled.
#[test]
fn a_kafka_broker_restart_mid_stream_loses_and_doubles_nothing() {
    let moto = feature_store_tests::moto::MotoServer::start();
    moto.create_bucket("tansu");
    let mut kafka = KafkaServer::start_on_s3(&moto, "tansu");
    kafka.create_topic("tx", 2);
    let root = tempfile::tempdir().unwrap();
    let repo = repo_with(root.path(), &source(&kafka, ""), SQLITE, false);
    let all = super::streams::events(600, 47);
    let mut ids = produce(&kafka, 2, &all[..300]);
    let child = ingest(&repo, &[]);
    wait_for("an offline log file", || log_files(&repo) > 0);
    let restarted = std::time::Instant::now();
    kafka.restart();
    ids.extend(produce(&kafka, 2, &all[300..]));
    wait_for("the whole stream in the offline log", || {
        offline_log(&repo).len() >= super::streams::expected_log(&all).len()
    });
    eprintln!("caught up {:?} after the restart", restarted.elapsed());
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_all(&repo, &all, &ids);
    check_parity(&repo, &all);
}
