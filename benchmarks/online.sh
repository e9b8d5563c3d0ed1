#!/usr/bin/env bash
# Online benchmark in one run: materialization and read latency of this project
# (Redis, embedded SQLite) beside redis-benchmark's HSET ceiling and, with
# FEAST_PYTHON set, Feast 0.67 on the same data and Redis server.
# Usage: benchmarks/online.sh [KEYS]   (default 1,000,000 entities x 5 views x 10 features)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-1000000}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks  # one build, one feature set
DIR="benchmarks/data/online_${KEYS}"
if [ ! -f "$DIR/data/view_0.parquet" ]; then
  .venv/bin/python benchmarks/generate.py "$DIR" --entity-rows 1000 --keys "$KEYS" --updates 1
fi
.venv/bin/python benchmarks/online_run.py "$DIR" --bench target/release/online-bench --keys "$KEYS" ${FEAST_PYTHON:+--feast-python "$FEAST_PYTHON"}
