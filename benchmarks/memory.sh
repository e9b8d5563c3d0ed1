#!/usr/bin/env bash
# Issue 25's benchmark: workload 2 (10M entity rows x 50M feature rows) under
# memory limits, each run inside a memory cgroup of limit + base (10% or
# 100 MiB, whichever is larger), beside DuckDB with SET memory_limit in the
# same cgroup and DuckDB unlimited. Needs root (it makes the cgroups).
# Usage: benchmarks/memory.sh [LIMITS]   (default 512MiB,1GiB,2GiB)
#   BIN=dir-of-a-release-build to skip the build; SKIP=duckdb,unlimited to leave runs out.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMITS="${1:-512MiB,1GiB,2GiB}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks  # one build, one feature set
  BIN="${CARGO_TARGET_DIR:-target}/release"
fi
DIR="benchmarks/data/w2"
if [ ! -f "$DIR/data/entities.parquet" ]; then
  .venv/bin/python benchmarks/generate.py "$DIR" --entity-rows 10000000 --keys 1000000
fi
.venv/bin/python benchmarks/memory.py "$DIR" --binary "$BIN/feature-store" --limits "$LIMITS" --skip "${SKIP:-}"
