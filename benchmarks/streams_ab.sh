#!/usr/bin/env bash
# A/B of two builds on JetStream into SQLite, the case of issue 21's 0.5x
# target, alternated round by round so that the machine's drift hits both
# alike. Each run gets its own nats-server and stream: the ceiling consumer
# (stream-load nats-ceiling) reads the stream first, then
# `feature-store ingest` of build A or B (into SQLite plus the offline log).
# Prints one line per run and the medians; single runs vary by +-25% here.
# Usage: benchmarks/streams_ab.sh DIR_A DIR_B [ROUNDS (5)] [EVENTS (200000)]
#   DIR_A, DIR_B: folders holding a feature-store binary (say target/release
#   and a copy of an earlier build); stream-load is taken from DIR_A.
# Environment: NATS_SERVER (default: on PATH or /usr/sbin), CEILING_BATCH,
# INGEST_ARGS (more `feature-store ingest` flags, e.g. "--batch-size 2000"),
# PREFIX (a command to run ingestion under, e.g. "valgrind --tool=callgrind").
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 ROUNDS=${3:-5} EVENTS=${4:-200000}
NATS_BIN="${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
"$PY" - "$DIR/seed.parquet" <<'PY'
import sys, datetime as dt, pyarrow as pa, pyarrow.parquet as pq
cols = {"user_id": pa.array([0], pa.int64()),
        "event_timestamp": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC"))}
cols.update({f"f{i}": pa.array([0.0]) for i in range(10)})
pq.write_table(pa.table(cols), sys.argv[1])
PY

# One run: prints "<label> <ceiling events/s> <ingest events/s>".
run() {
  local label=$1 bin=$2 r
  r=$(mktemp -d "$DIR/run.XXXX")
  local port
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$r/nats" "$r/repo/data/tx"
  "$NATS_BIN" -js -a 127.0.0.1 -p "$port" -sd "$r/nats" > "$r/nats.log" 2>&1 &
  local nats=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done
  cp "$DIR/seed.parquet" "$r/repo/data/tx/"
  printf 'project: bench\nregistry: data/registry.json\nonline_store: {type: sqlite, path: data/online.db}\n' \
    > "$r/repo/feature_store.yaml"
  {
    printf 'entities:\n  - {name: user, join_keys: [user_id]}\nsources:\n'
    printf '  - {name: tx, path: data/tx, timestamp_field: event_timestamp}\n'
    printf '  - {name: tx_stream, kind: nats, url: "nats://127.0.0.1:%s", stream: TX, group: g, ' "$port"
    printf 'timestamp_field: event_timestamp, batch_source: tx}\n'
    printf 'feature_views:\n  - name: user_stream\n    entities: [user]\n    source: tx_stream\n    schema:\n'
    for i in 0 1 2 3 4 5 6 7 8 9; do printf '      - {name: f%s, dtype: float64}\n' "$i"; done
  } > "$r/repo/defs.yaml"
  "$bin/feature-store" --repo "$r/repo" apply > /dev/null
  "$A/stream-load" nats-produce "nats://127.0.0.1:$port" TX tx "$EVENTS" > /dev/null
  "$A/stream-load" nats-ceiling "nats://127.0.0.1:$port" TX g_ceiling "$EVENTS" > "$r/ceiling.json"
  # shellcheck disable=SC2086
  ${PREFIX:-} "$bin/feature-store" --repo "$r/repo" --json ingest --stop-when-idle 2s ${INGEST_ARGS:-} > "$r/ingest.json"
  kill "$nats" 2>/dev/null || true
  wait "$nats" 2>/dev/null || true
  "$PY" - "$label" "$r" "$EVENTS" <<'PY'
import json, sys
label, r, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = json.load(open(f"{r}/ceiling.json"))["events_per_s"]
s = json.load(open(f"{r}/ingest.json"))["sources"][0]
if s["ingested"] != events:
    print(f"WARNING: {label} ingested {s['ingested']} of {events}", file=sys.stderr)
print(label, round(c), round(s["ingested"] / s["busy_seconds"]))
PY
  rm -rf "$r"
}

for i in $(seq "$ROUNDS"); do
  run A "$A"
  run B "$B"
done | tee "$DIR/runs.txt"
"$PY" - "$DIR/runs.txt" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
for label in ("A", "B"):
    c = [int(r[1]) for r in rows if r[0] == label]
    v = [int(r[2]) for r in rows if r[0] == label]
    x = [a / b for a, b in zip(v, c)]
    print(f"{label}: ingest median {st.median(v):,.0f} (best {max(v):,}) events/s, ceiling median {st.median(c):,.0f}, "
          f"x ceiling median {st.median(x):.2f} (runs {' '.join(f'{y:.2f}' for y in x)})")
PY
