//! Builds a point-in-time training set in process and reports how long the
//! join took, without writing it anywhere (the engine's share of a run).
//!
//! ```sh
//! cargo run --release -p feature-store-examples --example training_set -- REPO ENTITIES.parquet view_a,view_b
//! ```

use std::time::Instant;

use feature_store::{EntityInput, Features, HistoricalOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let repo = args.next().unwrap_or_else(|| "demo_repo".into());
    let entities = args.next().unwrap_or_else(|| format!("{repo}/data/driver_orders.parquet"));
    let features = args.next().unwrap_or_else(|| "driver_hourly_stats".into());
    let store = feature_store::open(&repo)?;
    let started = Instant::now();
    let abs = std::path::absolute(&entities)?.display().to_string();
    let mut stream = store
        .get_historical_features(
            EntityInput::Path(abs),
            &Features::refs(features.split(',')),
            &HistoricalOptions::default(),
        )
        .await?;
    let planned = started.elapsed();
    let (mut rows, mut first) = (0, None);
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows();
        first.get_or_insert(started.elapsed());
    }
    println!(
        "{rows} rows; planned in {:.3}s, first batch at {:.3}s, done in {:.3}s",
        planned.as_secs_f64(),
        first.unwrap_or_default().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
