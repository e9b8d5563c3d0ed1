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
scripts/build-deps.sh
cargo build --locked -p feature-store-cli
BIN="$PWD/target/debug/feature-store"
# Commands run inside the repo, as a user would type them there: the CLI finds
# feature_store.yaml in the current folder or the nearest one above it.
fs() { (cd "$REPO" && "$BIN" "$@"); }
say() { printf '\n$ %s\n' "$*"; }

if [ ! -f "$REPO/feature_store.yaml" ]; then
  say "feature-store init $REPO"
  "$BIN" init "$REPO"
fi
say "cd $REPO"
say "feature-store plan";                        fs plan
say "feature-store apply";                       fs apply
say "feature-store list views";                  fs list views
say "feature-store list services";               fs list services
say "feature-store describe driver_hourly_stats"; fs describe driver_hourly_stats
say "feature-store historical --entities data/driver_orders.parquet --service driver_activity --output training.parquet"
fs historical --entities data/driver_orders.parquet --service driver_activity --output training.parquet
say "feature-store historical --entities data/driver_orders.parquet --features driver_hourly_stats:conv_rate,driver_hourly_stats:acc_rate"
fs historical --entities data/driver_orders.parquet --features driver_hourly_stats:conv_rate,driver_hourly_stats:acc_rate
say "feature-store historical --entities data/driver_orders.parquet --service driver_activity --save train_v1   # a reproducible training set with a manifest"
if ! fs dataset show train_v1 >/dev/null 2>&1; then
  fs historical --entities data/driver_orders.parquet --service driver_activity --save train_v1
else
  echo "(dataset train_v1 exists from an earlier run; delete it with: feature-store dataset delete train_v1)"
fi
say "feature-store dataset verify train_v1"
fs dataset verify train_v1
say "feature-store materialize-incremental   # into the embedded SQLite online store"
fs materialize-incremental
say "feature-store online --service driver_activity --entity driver_id=1001 --entity driver_id=1002 --entity driver_id=9999"
fs online --table --service driver_activity --entity driver_id=1001 --entity driver_id=1002 --entity driver_id=9999
say "feature-store status   # freshness and the last run per view"
fs status
