#!/usr/bin/env bash
# The main job on embedded defaults, no servers: scaffold a demo repo with
# sample data, plan and apply it, show what the registry holds, and build a
# point-in-time training set from its entity table, then load the embedded
# online store and read features for a few drivers as a service would.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="${1:-demo_repo}"

if [ ! -x target/debug/feature-store ]; then
  echo "==> Building the feature-store CLI (debug; the first build compiles Apache DataFusion and"
  echo "    took about 9 minutes on a 2-core machine; later builds, and scripts/test.sh, reuse it)"
fi
cargo build --locked -p feature-store-cli
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
echo; echo "\$ feature-store historical ... --save train_v1   # a reproducible training set with a manifest"
if ! fs dataset show train_v1 >/dev/null 2>&1; then
  fs historical --entities "$REPO/data/driver_orders.parquet" --service driver_activity --save train_v1
fi
echo; echo "\$ feature-store dataset verify train_v1"
fs dataset verify train_v1
echo; echo "\$ feature-store materialize-incremental   # into the embedded SQLite online store"
fs materialize-incremental
echo; echo "\$ feature-store online --service driver_activity --entity driver_id=1001 --entity driver_id=1002 --entity driver_id=9999"
fs online --service driver_activity --entity driver_id=1001 --entity driver_id=1002 --entity driver_id=9999
echo; echo "\$ feature-store status   # freshness and the last run per view"
fs status
