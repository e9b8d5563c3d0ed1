//! `feature-store ingest` from a real `nats-server` JetStream stream: the
//! same reference checks as the Redis Streams tests (`streams.rs`), kill -9
//! mid-stream, a second process standing by and taking over, and a server
//! restart mid-stream.

use std::process::Command;
use std::time::Duration;

use feature_store_tests::nats::NatsServer;
use feature_store_tests::proxy::{Fault, FaultProxy};

use super::streams::{
    Event, check_all, check_broker_letters, check_parity, check_values, dead_letters, drain, expected_log, ingest,
    json, kill, log_files, offline_log, repo_with, wait_for,
};
use super::{cli, ok};

const SQLITE: &str = "online_store: {type: sqlite, path: data/online.db}\n";

fn source(nats: &NatsServer) -> String {
    format!("kind: nats\n    url: {}\n    stream: TX\n    subject: tx.events", nats.url())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A lease this process left (a create that landed with its reply lost,
/// or a consumer dropped without closing) is taken over by its next open at
/// once rather than waited out; a second live consumer of the group in this
/// process stands by.
#[test]
fn a_nats_lease_this_process_left_is_taken_over_at_once() {
    use feature_store::ingest::StreamConsumer;
    use feature_store::model::{StreamKind, StreamSource};
    use feature_store::nats::NatsStreamConsumer;
    let nats = NatsServer::start();
    create_stream(&nats);
    let source = StreamSource::builder("tx_stream", StreamKind::Nats, "event_timestamp", "tx")
        .nats(nats.url(), "TX", Some("tx.events".into()))
        .build()
        .unwrap();
    runtime().block_on(async {
        // Its lease stays in the bucket, as a lost reply's would.
        drop(NatsStreamConsumer::open(&source, "g", "c1").await.unwrap());
        let started = std::time::Instant::now();
        let mut second = tokio::time::timeout(Duration::from_secs(10), NatsStreamConsumer::open(&source, "g", "c1"))
            .await
            .expect("taken over at once, not waited out (a lease lasts 15 s)")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        let third = tokio::time::timeout(Duration::from_secs(3), NatsStreamConsumer::open(&source, "g", "c2")).await;
        assert!(third.is_err(), "a second live consumer of the group in this process stands by");
        second.close().await.unwrap();
    });
}

/// Creates stream TX (subjects `tx.>`, file storage).
fn create_stream(nats: &NatsServer) {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "TX".into(),
            subjects: vec!["tx.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
}

/// Publishes every event (acknowledged by the stream); returns their sequences.
fn produce(nats: &NatsServer, events: &[Event]) -> Vec<String> {
    produce_to(&nats.url(), events)
}

fn produce_to(url: &str, events: &[Event]) -> Vec<String> {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut acks = Vec::new();
        for e in events {
            acks.push(js.publish("tx.events", json(e).into()).await.unwrap());
        }
        let mut ids = Vec::new();
        for a in acks {
            ids.push(a.await.unwrap().sequence.to_string());
        }
        ids
    })
}

#[test]
fn nats_records_reach_online_offline_and_dead_letters() {
    records_reach_online_offline_and_dead_letters(&NatsServer::start());
}

/// Records in, twice: online values, offline log and dead letters equal
/// the reference, and the second run (which opens the buckets the first
/// created) changes nothing.
fn records_reach_online_offline_and_dead_letters(nats: &NatsServer) {
    create_stream(nats);
    let root = tempfile::tempdir().unwrap();
    let repo = repo_with(root.path(), &source(nats), SQLITE, false);
    let events = super::streams::events(600, 21);
    let ids = produce(nats, &events);
    drain(&repo, &[]);
    check_all(&repo, &events, &ids);
    check_parity(&repo, &events);
    let before = offline_log(&repo);
    drain(&repo, &[]);
    assert_eq!(offline_log(&repo), before, "a second run changed the offline log");
}

/// Debian 12's nats-server is 2.9: the client's bucket creation read an
/// account-info reply that server does not send, and ingestion failed at
/// every start ("data did not match any variant of untagged enum
/// Response"). scripts/test.sh installs Debian's package when absent.
#[test]
fn debians_nats_server_2_9_is_consumed_too() {
    let bin = std::path::PathBuf::from(std::env::var("NATS_SERVER_DEBIAN").unwrap_or("/usr/sbin/nats-server".into()));
    if !bin.is_file() {
        eprintln!("skipped: no {} (Debian's nats-server package; scripts/test.sh installs it)", bin.display());
        return;
    }
    records_reach_online_offline_and_dead_letters(&NatsServer::start_binary(bin));
}

/// With a flush interval longer than the run, nothing is committed until
/// the end, and all 3,000 events still arrive (when acknowledgements waited
/// for the flush, JetStream's default of 1,000 unacknowledged messages
/// stopped delivery at 1,000, and the idle run stopped there).
#[test]
fn more_unacknowledged_messages_than_jetstreams_default_are_delivered() {
    let nats = NatsServer::start();
    create_stream(&nats);
    let root = tempfile::tempdir().unwrap();
    let repo = repo_with(root.path(), &source(&nats), SQLITE, false);
    let events = super::streams::events(3000, 27);
    let ids = produce(&nats, &events);
    ok(&cli(&repo, &["ingest", "--offline-flush-interval", "10m", "--stop-when-idle", "2s"]));
    check_all(&repo, &events, &ids);
}

/// kill -9 right after a batch was decoded (its online writes under way,
/// nothing committed), repeatedly, then one run to the end.
#[test]
fn nats_ingest_killed_anywhere_loses_and_doubles_nothing() {
    let nats = NatsServer::start();
    create_stream(&nats);
    let root = tempfile::tempdir().unwrap();
    let repo = repo_with(root.path(), &source(&nats), SQLITE, false);
    let all = super::streams::events(2500, 23);
    let mut ids = Vec::new();
    for (i, chunk) in all.chunks(500).enumerate() {
        ids.extend(produce(&nats, chunk));
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

/// Two processes in one group: the second stands by while the first holds
/// the group, and takes over when the first is killed; no event twice.
#[test]
fn a_second_nats_process_stands_by_and_takes_over() {
    let nats = NatsServer::start();
    create_stream(&nats);
    let root = tempfile::tempdir().unwrap();
    let repo = repo_with(root.path(), &source(&nats), SQLITE, false);
    let all = super::streams::events(2000, 29);
    let mut ids = produce(&nats, &all[..1000]);
    let first = ingest(&repo, &["--consumer", "a", "--offline-flush-interval", "1s"]);
    wait_for("an offline log file", || log_files(&repo) > 0);
    let second = ingest(&repo, &["--consumer", "b", "--stop-when-idle", "4s"]);
    std::thread::sleep(Duration::from_millis(500));
    ids.extend(produce(&nats, &all[1000..]));
    std::thread::sleep(Duration::from_millis(300));
    kill(first);
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    check_all(&repo, &all, &ids);
}

/// The server restarts mid-stream: ingestion reconnects, resumes, and a
/// graceful stop (SIGTERM) ends equal to the reference.
#[test]
fn a_nats_restart_mid_stream_loses_and_doubles_nothing() {
    let mut nats = NatsServer::start();
    create_stream(&nats);
    let root = tempfile::tempdir().unwrap();
    let repo = repo_with(root.path(), &source(&nats), SQLITE, false);
    let all = super::streams::events(1500, 31);
    let mut ids = produce(&nats, &all[..700]);
    let child = ingest(&repo, &[]);
    wait_for("an offline log file", || log_files(&repo) > 0);
    nats.restart();
    ids.extend(produce(&nats, &all[700..]));
    wait_for("the whole stream in the offline log", || offline_log(&repo).len() >= expected_log(&all).len());
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_all(&repo, &all, &ids);
}

/// Messages lost on the wire: the proxy holds what the server sends, the
/// connection is cut, and what was held is gone, though the server counts
/// it delivered. Ingestion sees more delivered than arrived (a gap in the
/// deliveries, or the consumer's count once the stream is quiet) and reads
/// them again: nothing lost or doubled. Without that check the events
/// stayed missing and the offline log never filled.
#[test]
fn messages_lost_on_a_cut_connection_are_read_again() {
    let nats = NatsServer::start();
    create_stream(&nats);
    let proxy = FaultProxy::start(nats.port());
    let root = tempfile::tempdir().unwrap();
    let via = format!("kind: nats\n    url: nats://127.0.0.1:{}\n    stream: TX\n    subject: tx.events", proxy.port());
    let repo = repo_with(root.path(), &via, SQLITE, false);
    let all = super::streams::events(1500, 37);
    let mut child = ingest(&repo, &["--offline-flush-interval", "300ms"]);
    // Ingestion's log as it comes: its report of a loss is what ends the cuts.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (log, mut stderr) = (std::sync::Arc::clone(&log), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let reported = || log.lock().unwrap().contains("never arrived");
    let mut ids = produce(&nats, &all[..50]);
    wait_for("the first events in the offline log", || offline_log(&repo).len() >= expected_log(&all[..50]).len());
    // A cut loses deliveries only when a poll was waiting at the server as
    // the events were published (nearly always, but not under load): cut at
    // least four times, and on until ingestion reports a loss (at most 29).
    let mut upto = 50;
    while upto < all.len() && (upto < 250 || !reported()) {
        upto += 50;
        // What the server sends now stays in the proxy until the cut.
        proxy.set(Fault::Hold);
        std::thread::sleep(Duration::from_millis(20));
        ids.extend(produce(&nats, &all[upto - 50..upto]));
        std::thread::sleep(Duration::from_millis(150));
        proxy.cut();
        proxy.set(Fault::Pass);
        wait_for("the events so far in the offline log", || {
            offline_log(&repo).len() >= expected_log(&all[..upto]).len()
        });
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let err = log.lock().unwrap().clone();
    assert!(status.success(), "{err}");
    let dropped = proxy.dropped_from_server();
    let payloads = dropped.windows(9).filter(|w| w == b"\"user_id\"").count();
    assert!(
        err.contains("never arrived"),
        "{upto} events, {} bytes from the server discarded by cuts ({payloads} event payloads among them), and \
         ingestion never reported a lost delivery: {err}",
        dropped.len()
    );
    check_all(&repo, &all[..upto], &ids);
}

/// The group's committed position, as the bucket holds it.
fn position(nats: &NatsServer) -> Option<String> {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let kv = js.get_key_value("feature_store_ingest_positions").await.ok()?;
        kv.get("TX_feature-store-shop").await.ok()?.map(|b| String::from_utf8_lossy(&b).into_owned())
    })
}

/// `start: latest`: the group starts after what the stream held when its
/// first process started, and keeps that start through a kill -9 before
/// anything was committed, so events published while no process ran are
/// read (polls acknowledge at once, so the consumer's ack floor cannot say
/// where the group started).
#[test]
fn a_nats_group_starting_at_latest_keeps_its_start_through_a_kill() {
    let nats = NatsServer::start();
    create_stream(&nats);
    let root = tempfile::tempdir().unwrap();
    let repo = repo_with(root.path(), &format!("{}\n    start: latest", source(&nats)), SQLITE, false);
    produce(&nats, &super::streams::events(200, 63));
    let child = ingest(&repo, &["--offline-flush-interval", "10m"]);
    wait_for("the group's starting position", || position(&nats).is_some());
    assert_eq!(position(&nats).as_deref(), Some("200"));
    kill(child);
    let after = super::streams::events(200, 64);
    let ids = produce(&nats, &after);
    drain(&repo, &[]);
    check_all(&repo, &after, &ids);
}

/// `dead_letter: subject:<name>`: bad records are published through
/// JetStream to a subject a stream captures; one no stream captures is
/// refused at start, naming it.
#[test]
fn dead_letters_go_to_a_nats_subject_when_configured() {
    let nats = NatsServer::start();
    create_stream(&nats);
    let root = tempfile::tempdir().unwrap();
    let lost = format!("{}\n    dead_letter: subject:nowhere.dead", source(&nats));
    let repo = repo_with(root.path(), &lost, SQLITE, false);
    let out = super::cli(&repo, &["ingest", "--stop-when-idle", "2s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nowhere.dead") && err.contains("no JetStream stream"), "{err}");

    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "DEAD".into(),
            subjects: vec!["dead.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let with_letters = format!("{}\n    dead_letter: subject:dead.tx", source(&nats));
    let repo = repo_with(root.path(), &with_letters, SQLITE, false);
    let events = super::streams::events(400, 25);
    let ids = produce(&nats, &events);
    drain(&repo, &[]);
    check_values(&repo, &events);
    let letters = runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let mut stream = js.get_stream("DEAD").await.unwrap();
        let n = stream.info().await.unwrap().state.messages;
        let mut out = Vec::new();
        for seq in 1..=n {
            let m = stream.get_raw_message(seq).await.unwrap();
            out.push(String::from_utf8(m.payload.to_vec()).unwrap());
        }
        out
    });
    check_broker_letters(&repo, &letters, &events, &ids);
}
