#!/usr/bin/env bash
# Benchmark: this project vs DuckDB and Polars on the same files, in one run.
# Usage: benchmarks/run.sh [ENTITY_ROWS] [KEYS]   (defaults: workload 1, 1M rows, 100k keys)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
KEYS="${2:-100000}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks  # one build, one feature set
DIR="benchmarks/data/w1_${ROWS}_${KEYS}"
if [ ! -f "$DIR/data/entities.parquet" ]; then
  .venv/bin/python benchmarks/generate.py "$DIR" --entity-rows "$ROWS" --keys "$KEYS"
fi
.venv/bin/python benchmarks/run.py "$DIR" --binary target/release/feature-store --rows "$ROWS" --repeat "${REPEAT:-5}" ${MEMORY_LIMIT:+--memory-limit "$MEMORY_LIMIT"} ${FEAST_PYTHON:+--feast-python "$FEAST_PYTHON"}
