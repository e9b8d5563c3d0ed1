#!/usr/bin/env bash
# Workload A1: window aggregations, this project vs DuckDB and Polars, in one run.
# Usage: benchmarks/aggregation.sh [EVENTS] [KEYS] [ENTITY_ROWS]   (defaults: 10M, 100k, 1M)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-10000000}"
KEYS="${2:-100000}"
ROWS="${3:-1000000}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
cargo build --release --locked -p feature-store-cli
cd benchmarks
../.venv/bin/python aggregation.py "data/a1_${EVENTS}_${KEYS}_${ROWS}" --binary ../target/release/feature-store \
  --events "$EVENTS" --keys "$KEYS" --rows "$ROWS" --repeat "${REPEAT:-3}" ${SKIP:+--skip "$SKIP"}
