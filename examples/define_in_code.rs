//! Defines a feature view and a feature service with the Rust builders and
//! merges them into an existing repo's registry, next to its YAML objects.
//!
//! ```sh
//! cargo run -p feature-store-cli -- init demo_repo
//! cargo run -p feature-store-examples --example define_in_code -- demo_repo
//! ```

use std::time::Duration;

use feature_store::model::{FeatureService, FeatureView};
use feature_store::registry::ApplyMode;
use feature_store::{Definitions, ValueType};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let repo = std::env::args().nth(1).unwrap_or_else(|| "demo_repo".into());
    let store = feature_store::open(&repo)?;

    // The YAML objects first, so the code-defined view can refer to them.
    store.apply(&store.repo_definitions()?, ApplyMode::Sync).await?;

    let defs = Definitions::new()
        .feature_view(
            FeatureView::builder("driver_quality", "driver_stats")
                .entity("driver")
                .feature("acc_rate", ValueType::Float32)
                .ttl(Duration::from_secs(6 * 3600))
                .description("Acceptance rate, defined in Rust")
                .tag("origin", "code")
                .build()?,
        )
        .feature_service(
            FeatureService::builder("driver_quality_v1")
                .feature("driver_quality")
                .feature("driver_hourly_stats:conv_rate")
                .build()?,
        );

    // Merge keeps the YAML-defined objects; Sync would remove them.
    println!("Plan:\n{}", store.plan(&defs, ApplyMode::Merge).await?);
    let outcome = store.apply(&defs, ApplyMode::Merge).await?;
    println!("Registry version {} (written: {})", outcome.version, outcome.written);
    for v in store.list_feature_views().await? {
        println!("  view {:<20} features: {}", v.spec.name, v.spec.feature_names().collect::<Vec<_>>().join(", "));
    }
    Ok(())
}
