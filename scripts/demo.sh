#!/usr/bin/env bash
# The main job on embedded defaults, no servers: scaffold a demo repo with
# sample data, plan and apply it, show what the registry holds, and build a
# point-in-time training set from its entity table.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="${1:-demo_repo}"

cargo build --quiet --locked -p feature-store-cli
BIN="$PWD/target/debug/feature-store"
fs() { "$BIN" --repo "$REPO" "$@"; }

if [ ! -f "$REPO/feature_store.yaml" ]; then
  "$BIN" init "$REPO"
fi
echo; echo "\$ feature-store plan";            fs plan
echo; echo "\$ feature-store apply";           fs apply
echo; echo "\$ feature-store list views";      fs list views
echo; echo "\$ feature-store list services";   fs list services
echo; echo "\$ feature-store describe driver_hourly_stats"; fs describe driver_hourly_stats
echo; echo "\$ feature-store historical --entities data/driver_orders.parquet --service driver_activity --output training.parquet"
(cd "$REPO" && "$BIN" historical --entities data/driver_orders.parquet --service driver_activity --output training.parquet)
echo; echo "\$ feature-store historical --entities data/driver_orders.parquet --features driver_hourly_stats:conv_rate,driver_hourly_stats:acc_rate"
fs historical --entities "$REPO/data/driver_orders.parquet" --features driver_hourly_stats:conv_rate,driver_hourly_stats:acc_rate
