//! `feature-store init`: a working demo repo with generated sample data.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DurationRound, TimeDelta, Utc};
use parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};

const CONFIG: &str = "\
project: {project}
# Repo-relative path or URL: file://, s3://bucket/key, memory://name/key
registry: data/registry.json
offline_store:
  # Passed to object_store, e.g. aws_endpoint, aws_region, aws_allow_http
  storage_options: {}
online_store:
  type: sqlite
  path: data/online.db
";

const DEFINITIONS: &str = "\
entities:
  - name: driver
    join_keys: [driver_id]
    description: A driver on the platform

sources:
  - name: driver_stats
    path: data/driver_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_field: created

feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    source: driver_stats
    ttl: 1d
    schema:
      - {name: conv_rate, dtype: float32}
      - {name: acc_rate, dtype: float32}
      - {name: avg_daily_trips, dtype: int64}
    owner: ranking@example.com
    tags: {team: ranking}

# Values a caller passes with each request (entity-table columns in training).
request_sources:
  - name: order_request
    schema:
      - {name: order_amount, dtype: float64}

# Features computed at request time: SQL expressions over views and request data.
on_demand_feature_views:
  - name: order_features
    sources: [driver_hourly_stats, order_request]
    features:
      - {name: amount_x_conv, dtype: float64, expression: \"order_amount * conv_rate\"}
      - {name: big_order, dtype: bool, expression: \"order_amount > 100 AND avg_daily_trips < 10\"}

feature_services:
  - name: driver_activity
    features: [driver_hourly_stats:conv_rate, driver_hourly_stats:avg_daily_trips]
";

/// Drivers in the demo data.
pub(crate) const DRIVERS: std::ops::RangeInclusive<i64> = 1001..=1005;

pub(crate) fn scaffold(dir: &Path, project: &str) -> anyhow::Result<()> {
    if dir.exists() && dir.read_dir().with_context(|| format!("cannot read {}", dir.display()))?.next().is_some() {
        bail!("{} already exists and is not empty; choose a new folder", dir.display());
    }
    feature_store::model::check_name(project).map_err(|e| anyhow::anyhow!("--project: {e}"))?;
    std::fs::create_dir_all(dir.join("data")).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("feature_store.yaml"), CONFIG.replace("{project}", project))?;
    std::fs::write(dir.join("features.yaml"), DEFINITIONS)?;
    let end = Utc::now().duration_trunc(TimeDelta::hours(1))?;
    write_driver_stats(&dir.join("data/driver_stats.parquet"), end)?;
    write_orders(&dir.join("data/driver_orders.parquet"), end)
}

/// An entity table: orders whose features a model trains on, at times
/// spread over the same week (some before any data, some exactly on the hour).
fn write_orders(path: &Path, end: chrono::DateTime<Utc>) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = 12;
    let mut ids = Vec::new();
    let mut ts = Vec::new();
    let mut label = Vec::new();
    for i in 0..n {
        ids.push(1001 + (i % 5) as i64);
        let minutes = rng.random_range(0..8 * 24 * 60);
        ts.push((end - TimeDelta::minutes(minutes)).timestamp_micros());
        label.push(rng.random_range(0..2i64));
    }
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type, false),
        Field::new("trip_completed", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Int64Array::from(label)),
    ];
    write(path, RecordBatch::try_new(schema, columns)?)
}

fn write(path: &Path, batch: RecordBatch) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// Hourly stats for five drivers over the last seven days, from a fixed seed
/// so every demo repo holds the same values relative to its creation hour.
fn write_driver_stats(path: &Path, end: chrono::DateTime<Utc>) -> anyhow::Result<()> {
    let hours = 7 * 24;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let (mut ids, mut ts, mut created, mut conv, mut acc, mut trips) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for h in 0..hours {
        let t = end - TimeDelta::hours(hours - 1 - h);
        for d in DRIVERS {
            ids.push(d);
            ts.push(t.timestamp_micros());
            created.push((t + TimeDelta::minutes(rng.random_range(1..30))).timestamp_micros());
            conv.push(rng.random::<f32>());
            acc.push(rng.random::<f32>());
            trips.push(rng.random_range(0..1000i64));
        }
    }
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type.clone(), false),
        Field::new("created", ts_type, false),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
        Arc::new(Float32Array::from(conv)),
        Arc::new(Float32Array::from(acc)),
        Arc::new(Int64Array::from(trips)),
    ];
    write(path, RecordBatch::try_new(schema, columns)?)
}
