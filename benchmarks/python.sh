#!/usr/bin/env bash
# Python benchmark in one run: this project's Python package (release
# extension) beside Feast 0.67, for historical retrieval to pandas (workload 1)
# and online latency (same Redis). Feast runs when FEAST_PYTHON names the
# python of a venv with `feast[redis]==0.67.0`.
# Usage: benchmarks/python.sh [ONLINE_KEYS]   (default 100,000 entities)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-100000}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt pandas
# One release build for the extension, the online-bench binary and the CLI.
export PYO3_PYTHON="$PWD/.venv/bin/python" PYO3_BUILD_EXTENSION_MODULE=1
cargo build --release --locked --workspace
PKG=$(mktemp -d)
cp -r feature-store-py/python/feature_store "$PKG/"
rm -f "$PKG"/feature_store/*.so
cp target/release/lib_internal.so "$PKG/feature_store/_internal.abi3.so"
W1="benchmarks/data/w1_1000000_100000"
[ -f "$W1/data/entities.parquet" ] || .venv/bin/python benchmarks/generate.py "$W1" --entity-rows 1000000 --keys 100000
ONLINE="benchmarks/data/online_${KEYS}"
[ -f "$ONLINE/data/view_0.parquet" ] || .venv/bin/python benchmarks/generate.py "$ONLINE" --entity-rows 1000 --keys "$KEYS" --updates 1
# PYTHONPATH first, so the release build wins over a dev .pth in .venv.
PYTHONPATH="$PKG" .venv/bin/python -c 'import feature_store, sys; print("feature_store from", feature_store.__file__, file=sys.stderr)'
PYTHONPATH="$PKG" .venv/bin/python benchmarks/python_run.py --w1 "$W1" --online "$ONLINE" --keys "$KEYS" \
  --bench target/release/online-bench --repeat "${REPEAT:-3}" ${FEAST_PYTHON:+--feast-python "$FEAST_PYTHON"}
