//! `feature-store ingest`: every stream source with views, into the online
//! store and the offline log, until SIGTERM or Ctrl-C (or, with
//! `--stop-when-idle`, until the streams go quiet).

use std::time::{Duration, Instant};

use feature_store::FeatureStore;
use feature_store::ingest::{IngestOptions, IngestStats};

/// Flags of `ingest`.
pub(crate) struct Flags {
    pub(crate) views: Vec<String>,
    pub(crate) consumer: Option<String>,
    pub(crate) offline_flush_interval: Option<String>,
    pub(crate) no_offline_log: bool,
    pub(crate) stop_when_idle: Option<String>,
    pub(crate) batch_size: Option<usize>,
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    feature_store::duration::parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

pub(crate) async fn ingest(store: FeatureStore, repo: &std::path::Path, flags: Flags, json: bool) -> anyhow::Result<()> {
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
    if !json {
        // One line per source every few seconds on stderr, so logs of a
        // long-running process show progress without -v.
        let last = std::sync::Mutex::new(Instant::now() - Duration::from_secs(60));
        options = options.with_progress(move |s: &IngestStats| {
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
    let stats =
        store.ingest(&feature_store::StreamConsumers, options, feature_store_server::shutdown_signal()).await?;
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
        "{}: {} received, {} ingested, {} dead-lettered, {} rows in {} offline log files, {} committed{}{}",
        s.source,
        s.received,
        s.ingested,
        s.dead_lettered,
        s.offline_rows,
        s.offline_files,
        s.committed,
        if s.lag.is_empty() { String::new() } else { format!(", lag {lag}") },
        s.freshness_ms
            .map(|(p50, p99, max)| format!(", freshness p50 {p50:.0} ms p99 {p99:.0} ms max {max:.0} ms"))
            .unwrap_or_default(),
    )
}
