#!/usr/bin/env bash
# The feature server under load, in one run: `feature-store serve` over the
# embedded store (LMDB, or EMBEDDED=sqlite) and over Redis, by HTTP and by
# gRPC, beside Feast 0.67's `feast serve` on the same rows in the same Redis
# (with FEAST_PYTHON set, e.g. python3 -m venv .venv-feast &&
# .venv-feast/bin/pip install "feast[redis]==0.67.0").
# The load generator is `server-load` (benchmarks/online/src/bin/server_load.rs):
# closed loop on loopback, one keep-alive connection per concurrent worker,
# 1 and 100 entities x 50 features, concurrency 1, 16 and 64, each cell
# CELL_SECONDS (default 3) after 0.5 s of warm-up, at most MAX_REQUESTS.
# Usage: benchmarks/server.sh [KEYS]   (default 100,000 entities)
# Environment: FEAST_PYTHON, FEAST_WORKERS (feast serve --workers, default 1),
#   FEAST_SERVE_FLAGS (default: --no-access-log --max-requests 0), EMBEDDED (lmdb|sqlite),
#   CELL_SECONDS, MAX_REQUESTS, CONCURRENCY (default 1,16,64), ENTITIES (default 1,100),
#   SERVER_WORKERS (feature-store serve --workers; default one per core),
#   CLIENT_THREADS (server-load's runtime threads, default 2),
#   GRPC_CLIENTS (default "generated raw": tonic's generated client, and undecoded replies).
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-100000}"
CELL_SECONDS="${CELL_SECONDS:-3}"
MAX_REQUESTS="${MAX_REQUESTS:-200000}"
CONCURRENCY="${CONCURRENCY:-1,16,64}"
ENTITIES="${ENTITIES:-1,100}"
EMBEDDED="${EMBEDDED:-lmdb}"
FEAST_WORKERS="${FEAST_WORKERS:-1}"
# Ours logs nothing per request, so Feast's access log is off too; Feast's
# default --max-requests 1000 restarts its worker every ~1,000 requests,
# closing every connection (transport errors, stalls near 1 s): off.
FEAST_SERVE_FLAGS="${FEAST_SERVE_FLAGS:---no-access-log --max-requests 0}"
CLIENT_THREADS="${CLIENT_THREADS:-2}"
# gRPC through tonic's generated client (decodes every response, as a real
# client does) and through a raw codec over the same connection (pre-encoded
# requests, responses read as bytes but not decoded, as the HTTP side reads JSON).
GRPC_CLIENTS="${GRPC_CLIENTS:-generated raw}"
FEATURES=50

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/pip install --quiet -r scripts/requirements-test.txt
fi
export PYO3_PYTHON="$PWD/.venv/bin/python" PYO3_BUILD_EXTENSION_MODULE=1
# The same package set as the other benchmarks, so features unify and nothing is rebuilt.
cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks -p feature-store-py
BIN="${CARGO_TARGET_DIR:-target}/release"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
FS="$BIN/feature-store"
LOAD="$BIN/server-load"

DIR="$PWD/benchmarks/data/server_${KEYS}"
OUT="$DIR/results"
# One view of 50 float32 features over KEYS entities, one row each (generate.py, seed 42).
if [ ! -f "$DIR/data/view_0.parquet" ]; then
  .venv/bin/python benchmarks/generate.py "$DIR" --entity-rows 10 --views 1 --features "$FEATURES" --keys "$KEYS" --updates 1
fi
rm -rf "$OUT" && mkdir -p "$OUT"
REFS=$(.venv/bin/python -c "print(','.join(f'view_0:v0_f{i}' for i in range($FEATURES)))")

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
wait_http() {  # URL PID LOG: until GET URL answers, or the process exits
  for _ in $(seq 1 600); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then echo "server exited; its log:" >&2; cat "$3" >&2; return 1; fi
    sleep 0.1
  done
  echo "server did not answer $1 within 60 s; its log:" >&2; cat "$3" >&2; return 1
}
stop() {  # PID: SIGTERM, then wait for it
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no > "$OUT/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping > /dev/null 2>&1 && break; sleep 0.1; done

# This project: two repos over the same Parquet file, one per online store.
repo() {  # NAME ONLINE_STORE_YAML
  local r="$DIR/$1"
  rm -rf "$r" && mkdir -p "$r"
  printf 'project: bench\nregistry: registry.json\nonline_store: %s\n' "$2" > "$r/feature_store.yaml"
  cat > "$r/features.yaml" <<EOF
entities:
  - {name: driver, join_keys: [driver_id]}
sources:
  - {name: src_0, path: $DIR/data/view_0.parquet, timestamp_field: event_timestamp}
feature_views:
  - {name: view_0, entities: [driver], source: src_0}
EOF
  "$FS" --repo "$r" apply > /dev/null
  local t0; t0=$(date +%s%N)
  "$FS" --repo "$r" materialize 1970-01-01T00:00:00Z now > /dev/null
  echo "feature-store materialize ($1): $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
}
case "$EMBEDDED" in
  lmdb) repo ours_embedded "{type: lmdb, path: online.lmdb}" ;;
  sqlite) repo ours_embedded "{type: sqlite, path: online.db}" ;;
  *) echo "EMBEDDED is lmdb or sqlite" >&2; exit 2 ;;
esac
repo ours_redis "{type: redis, connection_string: \"redis://127.0.0.1:$REDIS_PORT\"}"

# Feast: the same rows into the same Redis (its own key layout).
if [ -n "${FEAST_PYTHON:-}" ]; then
  FEAST="$(dirname "$FEAST_PYTHON")/feast"
  FR="$DIR/feast_repo"
  rm -rf "$FR" && mkdir -p "$FR"
  cat > "$FR/feature_store.yaml" <<EOF
project: bench_feast
registry: registry.db
provider: local
online_store:
  type: redis
  connection_string: "127.0.0.1:$REDIS_PORT"
offline_store:
  type: file
entity_key_serialization_version: 3
EOF
  cat > "$FR/features.py" <<EOF
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
src_0 = FileSource(name="src_0", path="$DIR/data/view_0.parquet", timestamp_field="event_timestamp")
view_0 = FeatureView(
    name="view_0",
    entities=[driver],
    schema=[Field(name=f"v0_f{i}", dtype=Float32) for i in range($FEATURES)],
    source=src_0,
    online=True,
)
EOF
  "$FEAST" -c "$FR" apply > "$OUT/feast_apply.log" 2>&1
  t0=$(date +%s%N)
  "$FEAST" -c "$FR" materialize 1970-01-01T00:00:00 "$(date -u +%Y-%m-%dT%H:%M:%S)" > "$OUT/feast_materialize.log" 2>&1
  echo "feast materialize: $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
fi

# The same three entities from every server, to compare values afterwards.
sample() {  # URL NAME
  curl -s -X POST "$1/get-online-features" -H 'content-type: application/json' \
    -d "{\"features\": [\"$(echo "$REFS" | sed 's/,/","/g')\"], \"entities\": {\"driver_id\": [0, 1, $((KEYS - 1))]}}" \
    > "$OUT/sample_$2.json"
}
load() {  # URL PROTOCOL LABEL SERVER_PID [more server-load flags]
  if ! "$LOAD" --url "$1" --protocol "$2" --label "$3" --server-pid "$4" --redis-pid "$REDIS_PID" "${@:5}" \
    --features "$REFS" --keys "$KEYS" \
    --entities "$ENTITIES" --concurrency "$CONCURRENCY" --seconds "$CELL_SECONDS" \
    --max-requests "$MAX_REQUESTS" --threads "$CLIENT_THREADS" >> "$OUT/cells.jsonl"; then
    if ! kill -0 "$4" 2>/dev/null; then
      local status=0
      wait "$4" || status=$?
      echo "the server ($3, pid $4) is gone: exit status $status (128 + N: killed by signal N)" >&2
    fi
    exit 1
  fi
}
ours() {  # NAME LABEL
  local port; port=$(free_port)
  "$FS" --repo "$DIR/$1" serve --port "$port" ${SERVER_WORKERS:+--workers "$SERVER_WORKERS"} > "$OUT/serve_$1.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/health" "$pid" "$OUT/serve_$1.log"
  sample "http://127.0.0.1:$port" "$1"
  load "http://127.0.0.1:$port" http "$2" "$pid"
  for client in $GRPC_CLIENTS; do
    load "http://127.0.0.1:$port" grpc "$2" "$pid" --grpc-client "$client"
  done
  curl -s "http://127.0.0.1:$port/metrics" > "$OUT/metrics_$1.txt" || true
  stop "$pid"
}
ours ours_embedded "ours, $EMBEDDED"
ours ours_redis "ours, Redis"
if [ -n "${FEAST_PYTHON:-}" ]; then
  port=$(free_port)
  # shellcheck disable=SC2086
  "$FEAST" -c "$FR" serve -p "$port" --workers "$FEAST_WORKERS" $FEAST_SERVE_FLAGS > "$OUT/feast_serve.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/health" "$pid" "$OUT/feast_serve.log"
  sample "http://127.0.0.1:$port" feast
  load "http://127.0.0.1:$port" http "Feast 0.67, Redis" "$pid"
  stop "$pid"
fi

.venv/bin/python - "$OUT" "feast serve --workers $FEAST_WORKERS $FEAST_SERVE_FLAGS" <<'PY'
import json, math, os, sys
out, feast_cmd = sys.argv[1], sys.argv[2]
cells = [json.loads(l) for l in open(os.path.join(out, "cells.jsonl"))]
# Values must agree between servers: every feature of the same three entities.
samples = {}
for f in sorted(os.listdir(out)):
    if f.startswith("sample_"):
        d = json.load(open(os.path.join(out, f)))
        samples[f[7:-5]] = {n: r["values"] for n, r in zip(d["metadata"]["feature_names"], d["results"])}
base = samples.get("ours_embedded")
for name, s in samples.items():
    same = base is not None and s.keys() == base.keys() and all(
        all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(s[k], base[k])) for k in s)
    print(f"sample of 3 entities x {len(s) - 1} features, {name}: {'same values as ours_embedded' if same else 'DIFFERENT from ours_embedded'}")

is_feast = lambda c: c["label"].startswith("Feast")
feast = {(c["entities"], c["concurrency"]): c for c in cells if is_feast(c)}
num = lambda x: "-" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"
ms = lambda us: "-" if us is None else f"{us / 1000:.3f}" if us < 10_000 else f"{us / 1000:,.1f}"
head = (f"{'server':18} {'protocol':8} {'ent':>3} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>8} "
        f"{'errors':>6} {'x Feast req/s':>13} {'Feast p99/ours':>14} {'CPU us/req srv+redis':>20} {'client':>6} {'cores':>9}")
print(f"\n{head}\n{'-' * len(head)}")
order = {}
for c in cells:
    order.setdefault(c["label"], len(order))
def cores(c):
    b, m = c.get("cores_busy_benchmark"), c.get("cores_busy_machine")
    return "-" if b is None or m is None else f"{b:.2f}/{m:.2f}"
proto = lambda c: c["protocol"] + ("-raw" if c.get("grpc_client") == "raw" else "")
key = lambda c: (c["entities"], c["concurrency"], is_feast(c), order[c["label"]], proto(c))
group = None
for c in sorted(cells, key=key):
    if group is not None and group != (c["entities"], c["concurrency"]):
        print()
    group = (c["entities"], c["concurrency"])
    f = feast.get(group)
    ratio = lat = ""
    if f and not is_feast(c) and f["rps"] > 0:
        ratio = f"{c['rps'] / f['rps']:.1f}x"
        lat = f"{f['p99_us'] / c['p99_us']:.1f}x" if c["p99_us"] and f["p99_us"] else ""
    srv, red, cli = c.get("server_cpu_us_per_request"), c.get("redis_cpu_us_per_request"), c.get("client_cpu_us_per_request")
    cpu = "-" if srv is None else num(srv) + ("" if "Redis" not in c["label"] or red is None else f"+{num(red)}")
    print(f"{c['label']:18} {proto(c):8} {c['entities']:>3} {c['concurrency']:>4} {num(c['rps']):>8} {ms(c['p50_us']):>8} "
          f"{ms(c['p99_us']):>8} {ms(c['p999_us']):>8} {c['errors']:>6} {ratio:>13} {lat:>14} {cpu:>20} {num(cli):>6} {cores(c):>9}")
    if c["check"] != "ok":
        print(f"    check failed: {c['check']}")
    if c["error_kinds"]:
        print(f"    errors by kind: {c['error_kinds']}")
print("\nCPU us/req: CPU time of the server (and Redis) over the window per successful request; client: the load")
print("generator's. cores: cores kept busy by server + Redis + load generator / by the whole machine (other load")
print(f"shows as the difference; {os.cpu_count()} cores here).")
if feast:
    print(f"Feast: {feast_cmd} (gunicorn with uvicorn workers, its other defaults)")

print("\nTargets:")
for r in sorted((c for c in cells if c["label"] == "ours, Redis" and c["concurrency"] == 16), key=lambda c: (c["entities"], proto(c))):
    f = feast.get((r["entities"], 16))
    if f and f["rps"] > 0:
        x = r["rps"] / f["rps"]
        print(f"  >= 20x Feast's req/s on the same Redis at concurrency 16, {r['entities']} entities, {proto(r)}: {x:.1f}x ({'met' if x >= 20 else 'not met'})")
for c in cells:
    if c["label"].startswith("ours, ") and c["label"] != "ours, Redis" and c["entities"] == 1 and c["concurrency"] == 1:
        p99 = c["p99_us"] if c["p99_us"] is not None else math.inf
        print(f"  p99 <= 1 ms, {c['label'][6:]}, 1 entity, concurrency 1, {proto(c)}: {p99 / 1000:.3f} ms ({'met' if p99 <= 1000 else 'not met'})")
ours = [c for c in cells if not is_feast(c)]
errs = sum(c["errors"] for c in ours)
warm = sum(v for c in ours for k, v in c["error_kinds"].items() if k.startswith("warmup_"))
checks = [c for c in ours if c["check"] != "ok"]
print(f"  zero errors (ours): {errs} in measured requests, {warm} in warm-ups, {len(checks)} failed checks ({'met' if errs == 0 and warm == 0 and not checks else 'not met'})")
if feast:
    print(f"  Feast: {sum(c['errors'] for c in feast.values())} errors in measured requests")
PY
