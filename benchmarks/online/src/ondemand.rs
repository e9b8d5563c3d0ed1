//! `ondemand-bench DIR [--online memory|sqlite|lmdb] [--keys N] [--rounds N]`: the
//! online cost of on-demand features. Writes a repo with two views of five
//! features over N keys, a request source and an on-demand view of five
//! expressions over both views and the request, materializes it, then
//! alternates two reads per round: the eight input features alone (the plain
//! read) and the five on-demand features (the same inputs, evaluated), for 1
//! and 100 entities. Prints one JSON object: p50/p99 of each and the added
//! latency. The repo stays in DIR for `ondemand.py` (Python and Feast).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeZone, Utc};
use feature_store::arrow_array::{
    ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use feature_store::registry::ApplyMode;
use feature_store::{Features, MaterializeOptions, OnlineOptions};
use rand::{Rng, SeedableRng};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: i64 = 1_735_689_600_000_000; // 2025-01-01

/// The on-demand view: five expressions over `view_a`, `view_b` and the request.
pub const DEFINITIONS: &str = "
entities: [{name: driver, join_keys: [driver_id]}]
sources:
  - {name: src_a, path: data/a.parquet, timestamp_field: event_timestamp}
  - {name: src_b, path: data/b.parquet, timestamp_field: event_timestamp}
feature_views:
  - {name: view_a, entities: [driver], source: src_a}
  - {name: view_b, entities: [driver], source: src_b}
request_sources:
  - name: order
    schema: [{name: amount, dtype: float64}, {name: lat, dtype: float64}]
on_demand_feature_views:
  - name: od
    sources: [view_a, view_b, order]
    features:
      - {name: amount_x_a1, dtype: float64, expression: \"amount * a1\"}
      - {name: a2_plus_b1, dtype: float64, expression: \"a2 + b1\"}
      - {name: big_and_few, dtype: int64, expression: \"CASE WHEN amount > 100 AND b2 < 10 THEN 1 ELSE 0 END\"}
      - {name: ratio, dtype: float64, expression: \"COALESCE(a3, 0) / NULLIF(b3, 0)\"}
      - {name: distance, dtype: float64, expression: \"sqrt(power(lat - a4, 2) + power(amount - b4, 2))\"}
";

/// The plain read: the inputs the expressions need.
pub const INPUTS: [&str; 8] =
    ["view_a:a1", "view_a:a2", "view_a:a3", "view_a:a4", "view_b:b1", "view_b:b2", "view_b:b3", "view_b:b4"];

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn write_parquet(path: &std::path::Path, batch: &RecordBatch) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    let file = std::fs::File::create(path)?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    w.write(batch)?;
    w.close()?;
    Ok(())
}

fn view_data(rng: &mut rand::rngs::StdRng, keys: i64, prefix: &str, float32: bool) -> anyhow::Result<RecordBatch> {
    let n = keys as usize;
    let mut cols: Vec<(String, ArrayRef)> = vec![
        ("driver_id".into(), Arc::new(Int64Array::from((0..keys).collect::<Vec<_>>()))),
        ("event_timestamp".into(), Arc::new(TimestampMicrosecondArray::from(vec![T0; n]).with_timezone("UTC"))),
    ];
    for f in 1..=5 {
        let col: ArrayRef = if float32 {
            Arc::new((0..n).map(|_| Some(rng.random_range(0.0f32..20.0))).collect::<Float32Array>())
        } else {
            Arc::new((0..n).map(|_| Some(rng.random_range(0.0..200.0))).collect::<Float64Array>())
        };
        cols.push((format!("{prefix}{f}"), col));
    }
    Ok(RecordBatch::try_from_iter(cols)?)
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(std::env::args().collect()))
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        args.get(1).context("usage: ondemand-bench DIR [--online memory|sqlite|lmdb] [--keys N] [--rounds N]")?,
    );
    let kind = arg(&args, "--online").unwrap_or_else(|| "lmdb".into());
    let keys: i64 = arg(&args, "--keys").map_or(Ok(10_000), |k| k.parse())?;
    let rounds: usize = arg(&args, "--rounds").map_or(Ok(20_000), |k| k.parse())?;
    let online = match kind.as_str() {
        "memory" => "{type: memory}".to_owned(),
        "sqlite" => "{type: sqlite, path: data/online.db}".to_owned(),
        "lmdb" => "{type: lmdb, path: data/online.lmdb}".to_owned(),
        other => anyhow::bail!("unknown --online {other} (memory, sqlite or lmdb)"),
    };
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("feature_store.yaml"),
        format!("project: ondemand_bench\nregistry: data/registry.json\nonline_store: {online}\n"),
    )?;
    std::fs::write(dir.join("features.yaml"), DEFINITIONS)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    write_parquet(&dir.join("data/a.parquet"), &view_data(&mut rng, keys, "a", false)?)?;
    write_parquet(&dir.join("data/b.parquet"), &view_data(&mut rng, keys, "b", true)?)?;
    let store = feature_store::open(&dir)?;
    store.apply(&store.repo_definitions()?, ApplyMode::Sync).await?;
    store
        .materialize(
            Utc.timestamp_micros(T0 - 1).unwrap(),
            Utc.timestamp_micros(T0 + 1).unwrap(),
            &MaterializeOptions::default(),
        )
        .await?;

    let plain = Features::refs(INPUTS);
    let od = Features::refs(["od"]);
    let options = OnlineOptions::default();
    let mut out = serde_json::Map::new();
    out.insert("online_store".into(), kind.clone().into());
    out.insert("keys".into(), keys.into());
    out.insert("allocator".into(), (if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" }).into());
    for entities in [1usize, 100] {
        let n = if entities == 1 { rounds } else { rounds / 10 };
        let mut plain_times = Vec::with_capacity(n);
        let mut od_times = Vec::with_capacity(n);
        let mut checksum = 0.0;
        for round in 0..n + n / 10 {
            let ids: Vec<i64> = (0..entities).map(|_| rng.random_range(0..keys)).collect();
            let amount: Vec<f64> = (0..entities).map(|_| rng.random_range(0.0..200.0)).collect();
            let lat: Vec<f64> = (0..entities).map(|_| rng.random_range(0.0..200.0)).collect();
            let keys_only =
                RecordBatch::try_from_iter([("driver_id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef)])?;
            let with_request = RecordBatch::try_from_iter([
                ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("amount", Arc::new(Float64Array::from(amount)) as ArrayRef),
                ("lat", Arc::new(Float64Array::from(lat)) as ArrayRef),
            ])?;
            // Alternate which goes first, so neither always finds a warmer cache.
            let (first_od, warm) = (round % 2 == 0, round < n / 10);
            for which in [first_od, !first_od] {
                let started = Instant::now();
                if which {
                    let r = store.get_online_features(&od, &with_request, &options).await?;
                    let took = started.elapsed();
                    checksum += r.values().num_columns() as f64;
                    if !warm {
                        od_times.push(took);
                    }
                } else {
                    let r = store.get_online_features(&plain, &keys_only, &options).await?;
                    let took = started.elapsed();
                    checksum += r.values().num_columns() as f64;
                    if !warm {
                        plain_times.push(took);
                    }
                }
            }
        }
        plain_times.sort();
        od_times.sort();
        let (p50, p99) = (percentile(&plain_times, 0.5), percentile(&plain_times, 0.99));
        let (o50, o99) = (percentile(&od_times, 0.5), percentile(&od_times, 0.99));
        out.insert(
            format!("entities_{entities}"),
            serde_json::json!({
                "reads": n,
                "plain_p50_us": p50, "plain_p99_us": p99,
                "on_demand_p50_us": o50, "on_demand_p99_us": o99,
                "added_p50_us": o50 - p50, "added_p99_us": o99 - p99,
                "checksum": checksum,
            }),
        );
    }
    // The engine's share: the five compiled expressions alone over one row.
    let doc = store.document().await?;
    let project = doc.project(store.project());
    let view = project.on_demand_feature_view("od")?;
    let inputs = project.on_demand_inputs(view);
    let engine = store.expression_engine().context("no expression engine")?;
    let compiled = engine.compile(view, &inputs).map_err(|p| anyhow::anyhow!(p.join("; ")))?;
    let row: Vec<ArrayRef> = inputs
        .inputs
        .iter()
        .map(|i| match i.dtype {
            feature_store::ValueType::Float32 => Arc::new(Float32Array::from(vec![5.0f32])) as ArrayRef,
            _ => Arc::new(Float64Array::from(vec![150.0])) as ArrayRef,
        })
        .collect();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        for f in &compiled.features {
            let args: Vec<ArrayRef> = f.inputs.iter().map(|&i| Arc::clone(&row[i])).collect();
            std::hint::black_box(f.expr.evaluate(&args, 1)?);
        }
        times.push(started.elapsed());
    }
    times.sort();
    out.insert(
        "engine_only_1_row".into(),
        serde_json::json!({"p50_us": percentile(&times, 0.5), "p99_us": percentile(&times, 0.99)}),
    );
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
