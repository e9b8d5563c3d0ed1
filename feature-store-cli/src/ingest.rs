//! `feature-store ingest`: every stream source with views, into the online
//! store and the offline log, until SIGTERM or Ctrl-C (or, with
//! `--stop-when-idle`, until the streams go quiet).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feature_store::FeatureStore;
use feature_store::ingest::{IngestOptions, IngestStats};

/// Flags of `ingest`.
pub(crate) struct Flags {
    pub(crate) views: Vec<String>,
    pub(crate) consumer: Option<String>,
    pub(crate) offline_flush_interval: Option<String>,
    pub(crate) no_offline_log: bool,
    pub(crate) offline_compact_interval: Option<String>,
    pub(crate) stop_when_idle: Option<String>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) metrics_port: Option<u16>,
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    feature_store::duration::parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

pub(crate) async fn ingest(
    store: FeatureStore,
    repo: &std::path::Path,
    flags: Flags,
    json: bool,
) -> anyhow::Result<()> {
    let mut options = IngestOptions::default().with_base_dir(repo);
    if !flags.views.is_empty() {
        options = options.with_views(flags.views);
    }
    if let Some(c) = flags.consumer {
        options = options.with_consumer(c);
    }
    if let Some(t) = &flags.offline_flush_interval {
        options = options.with_offline_flush_interval(duration("offline-flush-interval", t)?);
    }
    if let Some(t) = &flags.stop_when_idle {
        options = options.with_stop_when_idle(duration("stop-when-idle", t)?);
    }
    if let Some(n) = flags.batch_size {
        anyhow::ensure!(n > 0, "--batch-size must be at least 1");
        options.max_batch = n;
    }
    options = options.with_offline_log(!flags.no_offline_log);
    match flags.offline_compact_interval.as_deref() {
        None => {}
        Some("off") => options.offline_compact_interval = None,
        Some(t) => options.offline_compact_interval = Some(duration("offline-compact-interval", t)?),
    }
    // The latest totals per source, for the status line and /metrics.
    let latest: Arc<Mutex<BTreeMap<String, IngestStats>>> = Arc::default();
    if let Some(port) = flags.metrics_port {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| anyhow::anyhow!("--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {e}"))?;
        if !json {
            eprintln!("Metrics on http://{}/metrics", listener.local_addr()?);
        }
        let latest = Arc::clone(&latest);
        std::thread::spawn(move || serve_metrics(&listener, &latest));
    }
    let record = Arc::clone(&latest);
    options = options.with_progress(move |s: &IngestStats| {
        record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(s.source.clone(), s.clone());
    });
    if !json {
        // One line per source every few seconds on stderr, so logs of a
        // long-running process show progress without -v.
        let last = std::sync::Mutex::new(Instant::now() - Duration::from_secs(60));
        let record = Arc::clone(&latest);
        options = options.with_progress(move |s: &IngestStats| {
            record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(s.source.clone(), s.clone());
            let mut last = last.lock().expect("poisoned");
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!("{}", line(s));
            }
        });
    }
    // Signals go to the graceful stop from here on: buffered events are
    // logged and committed before the process exits.
    crate::interrupt::uninstall();
    let started = Instant::now();
    let stats = store.ingest(&feature_store::StreamConsumers, options, feature_store_server::shutdown_signal()).await?;
    if json {
        let out = serde_json::to_value(&stats)?;
        crate::output::json(&serde_json::json!({ "sources": out, "seconds": started.elapsed().as_secs_f64() }))?;
    } else {
        for s in &stats {
            println!("{}", line(s));
        }
    }
    Ok(())
}

fn line(s: &IngestStats) -> String {
    let lag: u64 = s.lag.iter().map(|(_, n)| n).sum();
    format!(
        "{}: {} received, {} ingested, {} dead-lettered, {} rows in {} offline log files, {} committed{}{}{}",
        s.source,
        s.received,
        s.ingested,
        s.dead_lettered,
        s.offline_rows,
        s.offline_files,
        s.committed,
        if s.lag.is_empty() { String::new() } else { format!(", lag {lag}") },
        s.freshness_ms
            .map(|(p50, p99, max)| {
                let f = crate::output::freshness;
                format!(", freshness p50 {} p99 {} max {}", f(p50), f(p99), f(max))
            })
            .unwrap_or_default(),
        match (&s.last_error, s.retries) {
            (Some(e), n) if n > 0 => format!(", {n} retries (last: {e})"),
            _ => String::new(),
        },
    )
}

/// Answers every request on `listener` with the Prometheus text of the
/// latest totals (one connection at a time: scrapes are rare and small).
fn serve_metrics(listener: &std::net::TcpListener, latest: &Mutex<BTreeMap<String, IngestStats>>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 2048];
        let n = conn.read(&mut buf).unwrap_or(0);
        let found = buf[..n].starts_with(b"GET /metrics");
        let body = if found {
            metrics(&latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
        } else {
            "not found; GET /metrics\n".to_owned()
        };
        let status = if found { "200 OK" } else { "404 Not Found" };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// The Prometheus text format of each source's totals.
fn metrics(latest: &BTreeMap<String, IngestStats>) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(&IngestStats) -> Vec<(String, f64)>| {
        out.push_str(&format!(
            "# HELP feature_store_ingest_{name} {help}\n# TYPE feature_store_ingest_{name} {kind}\n"
        ));
        for (source, s) in latest {
            for (labels, v) in value(s) {
                out.push_str(&format!("feature_store_ingest_{name}{{source=\"{source}\"{labels}}} {v}\n"));
            }
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    family("received_total", "counter", "Messages received, replays included.", &|s| one(s.received as f64));
    family("ingested_total", "counter", "Records written online.", &|s| one(s.ingested as f64));
    family("dead_lettered_total", "counter", "Records sent to the dead letters.", &|s| one(s.dead_lettered as f64));
    family("offline_rows_total", "counter", "Records appended to the offline log.", &|s| one(s.offline_rows as f64));
    family("committed_total", "counter", "Messages acknowledged to the broker.", &|s| one(s.committed as f64));
    family("retries_total", "counter", "Failed polls, writes and commits retried.", &|s| one(s.retries as f64));
    family("reassignments_total", "counter", "Rebalances that gave this process partitions.", &|s| {
        one(s.reassignments as f64)
    });
    family("lag", "gauge", "Messages not yet delivered to the group, per partition.", &|s| {
        s.lag.iter().map(|(p, n)| (format!(",partition=\"{p}\""), *n as f64)).collect()
    });
    family("freshness_milliseconds", "gauge", "Event time to visible online over the latest events.", &|s| {
        s.freshness_ms
            .map(|(p50, p99, max)| {
                vec![
                    (",quantile=\"0.5\"".to_owned(), p50),
                    (",quantile=\"0.99\"".to_owned(), p99),
                    (",quantile=\"1\"".to_owned(), max),
                ]
            })
            .unwrap_or_default()
    });
    family("newest_event_timestamp_seconds", "gauge", "Newest event time written online.", &|s| {
        s.newest_event.map(|t| one(t.timestamp_micros() as f64 / 1e6)).unwrap_or_default()
    });
    family("events_per_second", "gauge", "Records written online per busy second.", &|s| {
        if s.busy_seconds > 0.0 { one(s.ingested as f64 / s.busy_seconds) } else { Vec::new() }
    });
    out
}
