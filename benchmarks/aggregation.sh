#!/usr/bin/env bash
# Workload A1: window aggregations, this project vs DuckDB and Polars, in one run.
# Usage: benchmarks/aggregation.sh [EVENTS] [KEYS] [ENTITY_ROWS]   (defaults: 10M, 100k, 1M)
# ONLINE=1 also serves the view online (hopping at 5 minutes, 30 days of events
# for 2,000 keys) from LMDB and SQLite and prints the read latency of 1 entity.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-10000000}"
KEYS="${2:-100000}"
ROWS="${3:-1000000}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks  # one build, one feature set
cd benchmarks
../.venv/bin/python aggregation.py "data/a1_${EVENTS}_${KEYS}_${ROWS}" --binary ../target/release/feature-store \
  --events "$EVENTS" --keys "$KEYS" --rows "$ROWS" --repeat "${REPEAT:-3}" ${SKIP:+--skip "$SKIP"}
if [ -n "${ONLINE:-}" ]; then
  cd ..

  OD="benchmarks/data/a1_online"
  [ -f "$OD/data/events.parquet" ] || .venv/bin/python benchmarks/aggregation.py "$OD" --binary none --events 200000 --keys 2000 --online-repo
  for store in lmdb sqlite; do
    rm -rf "$OD/data/online_bench.$store" "$OD/data/online_bench.db"*
    target/release/online-bench "$OD" --online "$store" --keys 2000 --sizes 1,10
  done
fi
