#!/usr/bin/env bash
# On-demand features in one run: the latency an on-demand view of five
# expressions over two views adds to the plain read of its eight inputs, for
# 1 and 100 entities, in Rust (LMDB and SQLite) and Python, beside Feast 0.67's
# python-mode on-demand view on the same data (with FEAST_PYTHON set, e.g.
# python3 -m venv .venv-feast && .venv-feast/bin/pip install "feast[redis]==0.67.0").
# Usage: benchmarks/ondemand.sh [KEYS] [ROUNDS]   (default 10,000 keys, 20,000 reads of one entity)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-10000}"
ROUNDS="${2:-20000}"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
export PYO3_PYTHON="$PWD/.venv/bin/python" PYO3_BUILD_EXTENSION_MODULE=1
cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks -p feature-store-py
BIN="${CARGO_TARGET_DIR:-target}/release"
# The release extension beside the Python sources, in a folder of its own.
PYDIR=benchmarks/data/ondemand_py
rm -rf "$PYDIR" && mkdir -p "$PYDIR"
cp -r feature-store-py/python/feature_store "$PYDIR/"
cp "$BIN/lib_internal.so" "$PYDIR/feature_store/_internal.abi3.so"
OUT=benchmarks/data/ondemand_results
mkdir -p "$OUT"
for store in lmdb sqlite; do
  DIR="benchmarks/data/ondemand_${store}_${KEYS}"
  rm -rf "$DIR"
  "$BIN/ondemand-bench" "$DIR" --online "$store" --keys "$KEYS" --rounds "$ROUNDS" > "$OUT/rust_$store.json"
done
# The same Rust driver with mimalloc as its global allocator (an embedder's
# choice): Arrow allocates 128-byte aligned buffers per operation, which
# glibc's malloc serves on a slow path.
cp "$BIN/ondemand-bench" "$OUT/ondemand-bench-system"
# (the same packages as above, so that only the driver is compiled again)
cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks -p feature-store-py --features feature-store-benchmarks/mimalloc
DIR="benchmarks/data/ondemand_lmdb_mimalloc_${KEYS}"
rm -rf "$DIR"
"$BIN/ondemand-bench" "$DIR" --online lmdb --keys "$KEYS" --rounds "$ROUNDS" > "$OUT/rust_lmdb_mimalloc.json"
cp "$OUT/ondemand-bench-system" "$BIN/ondemand-bench"
PYTHONPATH="$PYDIR" .venv/bin/python benchmarks/ondemand_python.py ours "benchmarks/data/ondemand_lmdb_${KEYS}" \
  --keys "$KEYS" --rounds $((ROUNDS / 4)) > "$OUT/python_lmdb.json"
if [ -n "${FEAST_PYTHON:-}" ]; then
  "$FEAST_PYTHON" benchmarks/ondemand_python.py feast "benchmarks/data/ondemand_lmdb_${KEYS}" \
    --keys "$KEYS" --rounds $((ROUNDS / 10)) 2>/dev/null | tail -1 > "$OUT/feast.json"
fi
.venv/bin/python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for name, label in [("rust_lmdb", "Rust, LMDB"), ("rust_lmdb_mimalloc", "Rust, LMDB, mimalloc"), ("rust_sqlite", "Rust, SQLite"), ("python_lmdb", "Python, LMDB"), ("feast", "Feast 0.67, SQLite")]:
    p = os.path.join(out, name + ".json")
    if os.path.exists(p) and os.path.getsize(p):
        rows.append((label, json.load(open(p))))
feast = dict(rows).get("Feast 0.67, SQLite")
print(f"{'':22} {'entities':>8} {'plain p50/p99 us':>18} {'on-demand p50/p99 us':>22} {'added p50/p99 us':>18} {'Feast added / ours':>20}")
for label, r in rows:
    for e in ("entities_1", "entities_100"):
        x = r[e]
        ratio = ""
        if feast and label != "Feast 0.67, SQLite":
            f = feast[e]
            ratio = f"{f['added_p50_us'] / max(x['added_p50_us'], 0.01):.0f}x / {f['added_p99_us'] / max(x['added_p99_us'], 0.01):.0f}x"
        print(f"{label:22} {e.split('_')[1]:>8} {x['plain_p50_us']:>8.1f}/{x['plain_p99_us']:<9.1f} {x['on_demand_p50_us']:>10.1f}/{x['on_demand_p99_us']:<11.1f} {x['added_p50_us']:>8.1f}/{x['added_p99_us']:<9.1f} {ratio:>20}")
PY
