//! Stream ingestion benchmark driver (`benchmarks/streams.sh`), against a
//! Redis stream:
//! - `produce URL KEY N [RATE]`: N events of 10 float features as JSON in
//!   each entry's `data` field, pipelined 1,000 per round trip; with RATE
//!   (events/s) paced in 10 ms slices. Each event's time is when it is sent,
//!   so ingestion's freshness (event time to visible online) is end to end.
//! - `ceiling URL KEY GROUP N`: the broker's own delivery rate, a consumer
//!   in a new group that reads (XREADGROUP, 2,000 per call), acknowledges
//!   and discards N entries: the most any consumer of this stream gets.
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

async fn produce(url: &str, key: &str, n: u64, rate: Option<f64>) -> anyhow::Result<serde_json::Value> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let chunk = match rate {
            // Paced: whatever is due by now, in 10 ms slices.
            Some(r) => {
                let due = ((started.elapsed().as_secs_f64() * r) as u64).min(n);
                if due <= sent {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                (due - sent).min(1000)
            }
            None => (n - sent).min(1000),
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
            .arg(2000)
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
        _ => bail!("usage: stream-load produce URL KEY N [RATE] | ceiling URL KEY GROUP N"),
    };
    println!("{out}");
    Ok(())
}
