//! `online-bench REPO --online TYPE [--redis URL] [--sqlite PATH] [--lmdb PATH] [--option K=V]...`: materializes
//! the generated benchmark repo into one online store, then measures
//! `get_online_features` latency in-process for 1, 10, 100 and 1000 entities
//! × every feature of every view. Prints one JSON object on stdout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeZone, Utc};
use feature_store::arrow_array::{ArrayRef, Int64Array, RecordBatch};
use feature_store::registry::ApplyMode;
use feature_store::repo::OnlineStoreConfig;
use feature_store::{Features, MaterializeOptions, OnlineOptions, RepoConfig};
use rand::{Rng, SeedableRng};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() -> anyhow::Result<()> {
    // `--runtime current-thread` runs every task on the calling thread (no
    // hand-offs between threads), the default is tokio's multi-threaded one.
    let args: Vec<String> = std::env::args().collect();
    let mut rt = match arg(&args, "--runtime").as_deref() {
        None | Some("multi-thread") => tokio::runtime::Builder::new_multi_thread(),
        Some("current-thread") => tokio::runtime::Builder::new_current_thread(),
        Some(other) => anyhow::bail!("unknown --runtime {other} (multi-thread or current-thread)"),
    };
    rt.enable_all().build()?.block_on(run(args))
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let repo = args
        .get(1)
        .context("usage: online-bench REPO --online redis|sqlite|lmdb|memory [--redis URL] [--sqlite PATH] [--lmdb PATH] [--keys N]")?;
    let kind = arg(&args, "--online").unwrap_or_else(|| "sqlite".into());
    let keys: i64 = arg(&args, "--keys").map_or(Ok(1_000_000), |k| k.parse())?;
    let mut config = RepoConfig::load(std::path::Path::new(repo))?;
    let mut online = OnlineStoreConfig::new(kind.clone());
    match kind.as_str() {
        "redis" => {
            let url = arg(&args, "--redis").context("--redis URL is required for redis")?;
            online.options.insert("connection_string".into(), serde_json::Value::String(url));
            online.options.insert("timeout".into(), serde_json::Value::String("60s".into()));
        }
        "sqlite" => {
            let path = arg(&args, "--sqlite").unwrap_or_else(|| "data/online_bench.db".into());
            online.options.insert("path".into(), serde_json::Value::String(path));
        }
        "lmdb" => {
            let path = arg(&args, "--lmdb").unwrap_or_else(|| "data/online_bench.lmdb".into());
            online.options.insert("path".into(), serde_json::Value::String(path));
            if args.iter().any(|a| a == "--preload") {
                online.options.insert("preload".into(), serde_json::Value::Bool(true));
            }
        }
        "memory" => {}
        other => anyhow::bail!("unknown --online {other}"),
    }
    // `--option key=value` sets any other online store option (numbers as numbers).
    for (i, a) in args.iter().enumerate() {
        if a == "--option" {
            let kv = args.get(i + 1).context("--option takes key=value")?;
            let (k, v) = kv.split_once('=').context("--option takes key=value")?;
            let v = v.parse::<u64>().map_or_else(|_| serde_json::Value::String(v.into()), serde_json::Value::from);
            online.options.insert(k.into(), v);
        }
    }
    config.online_store = online;
    let store = feature_store::from_config(config)?;
    store.apply(&store.repo_definitions()?, ApplyMode::Sync).await?;
    let views: Vec<String> = store.list_feature_views().await?.into_iter().map(|r| r.spec.name).collect();
    let features_per_view: Vec<usize> = store.list_feature_views().await?.iter().map(|r| r.spec.schema.len()).collect();

    let mut out = BTreeMap::new();
    if !args.iter().any(|a| a == "--skip-materialize") {
        let start = Utc.timestamp_opt(0, 0).single().expect("epoch");
        let began = Instant::now();
        let report = store.materialize(start, Utc::now(), &MaterializeOptions::default()).await?;
        let secs = began.elapsed().as_secs_f64();
        let rows: u64 = report.entities_written();
        let values: u64 =
            report.views.iter().zip(&features_per_view).map(|(v, f)| v.entities_written * *f as u64).sum();
        out.insert("materialize_seconds", serde_json::json!(secs));
        out.insert("materialize_view_rows", serde_json::json!(rows));
        out.insert("materialize_entities_per_s", serde_json::json!(keys as f64 / secs));
        out.insert("materialize_view_rows_per_s", serde_json::json!(rows as f64 / secs));
        out.insert("materialize_values_per_s", serde_json::json!(values as f64 / secs));
    }

    let features = Features::refs(views.clone());
    {
        // Fixed per-request cost: resolving the features against the registry.
        let t = Instant::now();
        for _ in 0..5000 {
            std::hint::black_box(store.resolve_views(&features, false).await?);
        }
        out.insert("resolve_us", serde_json::json!(t.elapsed().as_secs_f64() / 5000.0 * 1e6));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut latency = BTreeMap::new();
    let sizes: Vec<usize> =
        arg(&args, "--sizes").map_or(Ok(vec![1, 10, 100, 1000]), |s| s.split(',').map(str::parse).collect())?;
    // `--repeat K` runs K times as many calls (for profiling).
    let repeat: usize = arg(&args, "--repeat").map_or(Ok(1), |k| k.parse())?;
    for (n, iterations) in [(1usize, 5000usize), (10, 2000), (100, 500), (1000, 100)] {
        let iterations = iterations * repeat;
        if !sizes.contains(&n) {
            continue;
        }
        let mut times = Vec::with_capacity(iterations);
        for i in 0..iterations + iterations / 10 {
            let ids: Vec<i64> = (0..n).map(|_| rng.random_range(0..keys)).collect();
            let batch = RecordBatch::try_from_iter([("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef)])?;
            let t = Instant::now();
            let r = store.get_online_features(&features, &batch, &OnlineOptions::default()).await?;
            let took = t.elapsed();
            assert_eq!(r.num_rows(), n);
            if i >= iterations / 10 {
                times.push(took);
            }
        }
        times.sort();
        let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len() as f64 * 1e6;
        latency.insert(
            n.to_string(),
            serde_json::json!({"p50_us": percentile(&times, 0.5), "p99_us": percentile(&times, 0.99), "mean_us": mean, "iterations": iterations}),
        );
    }
    out.insert("features_per_read", serde_json::json!(features_per_view.iter().sum::<usize>()));
    out.insert("latency", serde_json::json!(latency));
    out.insert("online", serde_json::json!(kind));
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
