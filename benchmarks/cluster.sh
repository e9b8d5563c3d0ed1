#!/usr/bin/env bash
# Issue 23's benchmark: workload 1 (or 2) on the local engine and on a
# Ballista cluster (one scheduler, two executors, this machine), alternating,
# in one run: wall time, peak memory per process, equal outputs.
# Usage: benchmarks/cluster.sh [ENTITY_ROWS] [KEYS]   (defaults: workload 1)
#   BIN=dir-of-a-release-build to skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-1000000}"
KEYS="${2:-100000}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks  # one build, one feature set
  BIN="${CARGO_TARGET_DIR:-target}/release"
fi
DIR="benchmarks/data/w1_${ROWS}_${KEYS}"
if [ ! -f "$DIR/data/entities.parquet" ]; then
  .venv/bin/python benchmarks/generate.py "$DIR" --entity-rows "$ROWS" --keys "$KEYS"
fi
.venv/bin/python benchmarks/cluster.py "$DIR" --binary "$BIN/feature-store" --rows "$ROWS" --repeat "${REPEAT:-3}"
