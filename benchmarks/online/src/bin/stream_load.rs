//! Stream ingestion benchmark driver (`benchmarks/streams.sh`), against a
//! Redis stream, a Kafka topic or a NATS JetStream stream:
//! - `produce URL KEY N [RATE]`: N events of 10 float features as JSON in
//!   each entry's `data` field, pipelined 1,000 per round trip; with RATE
//!   (events/s) paced in 10 ms slices. Each event's time is when it is sent,
//!   so ingestion's freshness (event time to visible online) is end to end.
//! - `ceiling URL KEY GROUP N`: the broker's own delivery rate, a consumer
//!   in a new group that reads (XREADGROUP, 2,000 per call), acknowledges
//!   and discards N entries: the most any consumer of this stream gets.
//! - `kafka-topic BROKERS TOPIC PARTITIONS`: creates the topic.
//! - `kafka-produce BROKERS TOPIC N [RATE]`: the same events as message
//!   values, keyed by user (so a user's events keep their order), acknowledged
//!   by the broker; paced as above with RATE.
//! - `kafka-ceiling BROKERS TOPIC GROUP N`: a librdkafka consumer in a new
//!   group that reads N messages and discards them, committing every 10,000
//!   (ingestion's batch; synchronously, as ingestion does) and with
//!   ingestion's fetch settings, so the two differ only in what is done with
//!   the messages.
//! - `nats-produce URL STREAM SUBJECT N [RATE]`: creates the JetStream
//!   stream (file storage) if absent and publishes the same events to
//!   SUBJECT, each acknowledged by the stream (up to 1,000 in flight); paced
//!   as above with RATE.
//! - `nats-ceiling URL STREAM CONSUMER N`: a durable pull consumer (ack
//!   all, as ingestion's) that fetches batches of up to 2,000, acknowledges
//!   each batch's last message (double ack, as ingestion does) and discards
//!   them.
//!
//! Prints one JSON line.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

fn event(i: u64, keys: u64, at: chrono::DateTime<chrono::Utc>) -> String {
    let mut s = format!(
        r#"{{"user_id":{},"event_timestamp":"{}""#,
        i % keys + 1,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    for f in 0..10 {
        s.push_str(&format!(r#","f{f}":{}"#, (i * 31 + f) % 1000));
        s.push_str(".5");
    }
    s.push('}');
    s
}

/// Messages the Redis and NATS ceiling consumers take per read: ingestion's
/// default poll size (`--batch-size`), unless `CEILING_BATCH` says otherwise.
fn ceiling_batch() -> usize {
    std::env::var("CEILING_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

/// How many events to send next, at most `cap`: with a rate, whatever is
/// due by now (None: nothing yet, wait a 10 ms slice); without, the rest.
fn next_chunk(started: Instant, rate: Option<f64>, sent: u64, n: u64, cap: u64) -> Option<u64> {
    let due = match rate {
        Some(r) => ((started.elapsed().as_secs_f64() * r) as u64).min(n),
        None => n,
    };
    (due > sent).then(|| (due - sent).min(cap))
}

async fn produce(url: &str, key: &str, n: u64, rate: Option<f64>) -> anyhow::Result<serde_json::Value> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let Some(chunk) = next_chunk(started, rate, sent, n, 1000) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let now = chrono::Utc::now();
        let mut pipe = redis::pipe();
        for i in sent..sent + chunk {
            pipe.cmd("XADD").arg(key).arg("*").arg("data").arg(event(i, 100_000, now)).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        sent += chunk;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({"produced": n, "seconds": secs, "events_per_s": n as f64 / secs}))
}

async fn ceiling(url: &str, key: &str, group: &str, n: u64) -> anyhow::Result<serde_json::Value> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: redis::RedisResult<()> =
        redis::cmd("XGROUP").arg("CREATE").arg(key).arg(group).arg("0").query_async(&mut conn).await;
    let started = Instant::now();
    let mut read = 0u64;
    while read < n {
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("c")
            .arg("COUNT")
            .arg(ceiling_batch())
            .arg("BLOCK")
            .arg(2000)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let ids = entry_ids(&reply);
        if ids.is_empty() {
            bail!("the stream ran dry after {read} of {n} entries");
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(key).arg(group);
        for id in &ids {
            ack.arg(id);
        }
        let _: i64 = ack.query_async(&mut conn).await?;
        read += ids.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({"consumed": read, "seconds": secs, "events_per_s": read as f64 / secs}))
}

fn entry_ids(reply: &redis::Value) -> Vec<String> {
    let redis::Value::Array(streams) = reply else { return Vec::new() };
    let mut out = Vec::new();
    for s in streams {
        let redis::Value::Array(kv) = s else { continue };
        let Some(redis::Value::Array(entries)) = kv.get(1) else { continue };
        for e in entries {
            if let redis::Value::Array(e) = e
                && let Some(redis::Value::BulkString(id)) = e.first()
            {
                out.push(String::from_utf8_lossy(id).into_owned());
            }
        }
    }
    out
}

fn kafka_config(brokers: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

async fn kafka_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<serde_json::Value> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = kafka_config(brokers).create()?;
    for r in admin
        .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(serde_json::json!({"topic": topic, "partitions": partitions}))
}

async fn kafka_produce(brokers: &str, topic: &str, n: u64, rate: Option<f64>) -> anyhow::Result<serde_json::Value> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        kafka_config(brokers).set("acks", "all").set("linger.ms", "5").set("batch.num.messages", "10000").create()?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let Some(chunk) = next_chunk(started, rate, sent, n, if rate.is_some() { 1000 } else { 5000 }) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let now = chrono::Utc::now();
        let mut acks = Vec::with_capacity(chunk as usize);
        for i in sent..sent + chunk {
            let key = (i % 100_000 + 1).to_string();
            let value = event(i, 100_000, now);
            // Enqueued now (the record is copied), acknowledged later.
            let ack = producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&value))
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
            acks.push(ack);
        }
        for a in acks {
            a.await?.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        }
        sent += chunk;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({"produced": n, "seconds": secs, "events_per_s": n as f64 / secs}))
}

fn kafka_ceiling(brokers: &str, topic: &str, group: &str, n: u64) -> anyhow::Result<serde_json::Value> {
    /// Ingestion's default batch, after which it commits.
    const COMMIT_EVERY: u64 = 10_000;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = kafka_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "20")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut read = 0u64;
    let mut started: Option<Instant> = None;
    let mut idle = Instant::now();
    while read < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(m) => {
                let m = m?;
                started.get_or_insert_with(Instant::now);
                idle = Instant::now();
                std::hint::black_box(m.payload());
                read += 1;
                if read.is_multiple_of(COMMIT_EVERY) {
                    consumer.commit_consumer_state(CommitMode::Sync)?;
                }
            }
            None if idle.elapsed() > Duration::from_secs(30) => bail!("the topic ran dry after {read} of {n} messages"),
            None => {}
        }
    }
    if !read.is_multiple_of(COMMIT_EVERY) {
        consumer.commit_consumer_state(CommitMode::Sync)?;
    }
    // From the first message: the group's join is not the broker's delivery rate.
    let secs = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or_default();
    Ok(serde_json::json!({"consumed": read, "seconds": secs, "events_per_s": read as f64 / secs}))
}

async fn nats_produce(
    url: &str,
    stream: &str,
    subject: &str,
    n: u64,
    rate: Option<f64>,
) -> anyhow::Result<serde_json::Value> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![subject.to_owned()],
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("stream {stream}: {e}"))?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let Some(chunk) = next_chunk(started, rate, sent, n, 1000) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let now = chrono::Utc::now();
        let mut acks = Vec::with_capacity(chunk as usize);
        for i in sent..sent + chunk {
            let ack = js.publish(subject.to_owned(), event(i, 100_000, now).into()).await?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        }
        sent += chunk;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({"produced": n, "seconds": secs, "events_per_s": n as f64 / secs}))
}

async fn nats_ceiling(url: &str, stream: &str, durable: &str, n: u64) -> anyhow::Result<serde_json::Value> {
    use async_nats::jetstream::consumer;
    use futures::StreamExt;
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await.map_err(|e| anyhow::anyhow!("stream {stream}: {e}"))?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::All,
            // As ingestion's (JetStream's default of 1,000 would stall a 2,000 batch).
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("consumer {durable}: {e}"))?;
    let mut read = 0u64;
    let mut started: Option<Instant> = None;
    let mut idle = Instant::now();
    while read < n {
        let mut batch = consumer
            .batch()
            .max_messages(ceiling_batch())
            .expires(Duration::from_millis(100))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
        let mut last = None;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
            started.get_or_insert_with(Instant::now);
            std::hint::black_box(&m.payload);
            read += 1;
            last = Some(m);
        }
        match last {
            Some(m) => {
                m.double_ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                idle = Instant::now();
            }
            None if idle.elapsed() > Duration::from_secs(30) => {
                bail!("the stream ran dry after {read} of {n} messages")
            }
            None => {}
        }
    }
    let secs = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or_default();
    Ok(serde_json::json!({"consumed": read, "seconds": secs, "events_per_s": read as f64 / secs}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, what: &str| args.get(i).cloned().with_context(|| format!("missing {what}"));
    let out = match args.first().map(String::as_str) {
        Some("produce") => {
            let n = arg(3, "N")?.parse()?;
            let rate = args.get(4).map(|r| r.parse()).transpose()?;
            produce(&arg(1, "URL")?, &arg(2, "KEY")?, n, rate).await?
        }
        Some("ceiling") => ceiling(&arg(1, "URL")?, &arg(2, "KEY")?, &arg(3, "GROUP")?, arg(4, "N")?.parse()?).await?,
        Some("kafka-topic") => {
            kafka_topic(&arg(1, "BROKERS")?, &arg(2, "TOPIC")?, arg(3, "PARTITIONS")?.parse()?).await?
        }
        Some("kafka-produce") => {
            let n = arg(3, "N")?.parse()?;
            let rate = args.get(4).map(|r| r.parse()).transpose()?;
            kafka_produce(&arg(1, "BROKERS")?, &arg(2, "TOPIC")?, n, rate).await?
        }
        Some("kafka-ceiling") => {
            kafka_ceiling(&arg(1, "BROKERS")?, &arg(2, "TOPIC")?, &arg(3, "GROUP")?, arg(4, "N")?.parse()?)?
        }
        Some("nats-produce") => {
            let n = arg(4, "N")?.parse()?;
            let rate = args.get(5).map(|r| r.parse()).transpose()?;
            nats_produce(&arg(1, "URL")?, &arg(2, "STREAM")?, &arg(3, "SUBJECT")?, n, rate).await?
        }
        Some("nats-ceiling") => {
            nats_ceiling(&arg(1, "URL")?, &arg(2, "STREAM")?, &arg(3, "CONSUMER")?, arg(4, "N")?.parse()?).await?
        }
        _ => bail!(
            "usage: stream-load produce URL KEY N [RATE] | ceiling URL KEY GROUP N | kafka-topic BROKERS TOPIC \
             PARTITIONS | kafka-produce BROKERS TOPIC N [RATE] | kafka-ceiling BROKERS TOPIC GROUP N | nats-produce \
             URL STREAM SUBJECT N [RATE] | nats-ceiling URL STREAM CONSUMER N"
        ),
    };
    println!("{out}");
    Ok(())
}
