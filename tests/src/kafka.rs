//! A Kafka-protocol broker (`tansu`, in memory) on a free port, started by
//! the tests and stopped on drop, with helpers to create topics and
//! produce through librdkafka; and librdkafka's own mock cluster
//! ([`KafkaMock`]) for what tansu 0.6 does not do: give a killed group
//! member's partitions to the others.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{find_executable, free_port};

fn tansu() -> PathBuf {
    find_executable("tansu", "TANSU").expect(
        "tansu (a Kafka-protocol broker) not found: run ./scripts/test.sh (it installs it into .venv/bin) or \
         cargo install tansu --locked --features dynostore",
    )
}

/// A running `tansu broker` keeping its topics in memory, or in an S3
/// bucket (then it survives a restart).
pub struct KafkaServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// `(storage engine URL, environment)` for restarts.
    storage: (String, Vec<(String, String)>),
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

impl KafkaServer {
    /// Starts a broker keeping its topics in memory.
    pub fn start() -> Self {
        Self::start_with("memory://tansu/".into(), Vec::new())
    }

    /// Starts a broker keeping its topics in bucket `bucket` of the S3
    /// server `moto` (which must exist): a restart finds them again.
    pub fn start_on_s3(moto: &crate::moto::MotoServer, bucket: &str) -> Self {
        let env = [
            ("AWS_ENDPOINT", moto.endpoint()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ];
        Self::start_with(format!("s3://{bucket}/"), env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn start_with(storage: String, env: Vec<(String, String)>) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self { child: None, port, dir, storage: (storage, env) };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = tansu();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("log file");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage.0])
            .envs(self.storage.1.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("tansu exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on port {} within 30 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// What the broker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().expect("admin client");
        let results = runtime()
            .block_on(admin.create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))
            .expect("create_topics");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}\n{}", self.log()));
        }
    }

    /// Produces `values` to `topic`, the i-th to partition `i % partitions`,
    /// each acknowledged; returns their ids, `partition/offset`.
    pub fn produce(&self, topic: &str, partitions: i32, values: &[String]) -> Vec<String> {
        produce(&self.bootstrap(), topic, partitions, values)
    }

    /// Kills the broker.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Produces `values` to `topic` at `bootstrap`, the i-th to partition
/// `i % partitions`, each acknowledged; returns their ids, `partition/offset`.
pub fn produce(bootstrap: &str, topic: &str, partitions: i32, values: &[String]) -> Vec<String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    runtime().block_on(async {
        let sends: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let record = FutureRecord::<(), String>::to(topic).payload(v).partition(i as i32 % partitions);
                producer.send(record, Duration::from_secs(30))
            })
            .collect();
        let mut ids = Vec::with_capacity(values.len());
        for s in sends {
            let delivery = s.await.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
            ids.push(format!("{}/{}", delivery.partition, delivery.offset));
        }
        ids
    })
}

/// Every message value of `topic` at `bootstrap` (all partitions, from
/// the start), read until `expected` arrived and a second passed without
/// another, or 30 s passed.
pub fn consume_all(bootstrap: &str, topic: &str, expected: usize) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut last = Instant::now();
    // Past `expected`, one more quiet second: a duplicate would show.
    while Instant::now() < deadline && (out.len() < expected || last.elapsed() < Duration::from_secs(1)) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.payload().unwrap_or_default().to_vec());
            last = Instant::now();
        }
    }
    out
}

/// librdkafka's mock Kafka cluster, in this process, listening on a local
/// port: it implements consumer groups with session timeouts, so a killed
/// member's partitions move to the next process, which tansu 0.6 does not
/// do. Used only for that; everything else runs against tansu.
pub struct KafkaMock {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl KafkaMock {
    /// A one-broker cluster with `topic` of `partitions` partitions.
    pub fn start(topic: &str, partitions: i32) -> Self {
        let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
        cluster.create_topic(topic, partitions, 1).expect("mock topic");
        Self { cluster }
    }

    /// The cluster's `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}
