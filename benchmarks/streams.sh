#!/usr/bin/env bash
# Stream ingestion from a Redis stream, (when nats-server is found: NATS_SERVER,
# .venv/bin/nats-server from scripts/test.sh, or on PATH) a NATS JetStream
# stream, and (when a tansu binary is found: TANSU, or .venv/bin/tansu from
# scripts/test.sh) a Kafka topic of 4 partitions, in one run, on loopback
# with the broker on this machine:
#   ceiling   the broker's own delivery rate to a consumer that reads,
#             acknowledges and discards (stream-load ceiling): the most any
#             consumer gets;
#   embedded  `feature-store ingest` into SQLite (and the offline log);
#   redis     `feature-store ingest` into Redis (same server, own keys);
#   fresh     event time to visible online at a fixed 10k events/s;
#   feast     Feast 0.67's documented path, a consumer calling store.push
#             (benchmarks/streams_feast.py), into the same Redis, when
#             FEAST_PYTHON is set (python3 -m venv .venv-feast &&
#             .venv-feast/bin/pip install "feast[redis]==0.67.0").
# Events: JSON with a user key (100,000 users), an event time and 10 float
# features, one per entry's `data` field; a plain view of the 10 features.
# Usage: benchmarks/streams.sh [EVENTS]   (default 200,000)
# Environment: RATE (default 10000), RATE_SECONDS (default 10), FEAST_PYTHON, BIN, TANSU,
# KAFKA_FETCH_WAIT_MS (the Kafka source's fetch.wait.max.ms; default the store's 20).
# CEILING_BATCH: messages per read of the Redis and NATS ceilings (default 10000, ingestion's poll size).
# tansu for measuring: a release build (cargo install tansu --version 0.6.0
# --locked --features dynostore); scripts/test.sh installs a debug one.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-200000}"
RATE="${RATE:-10000}"
RATE_SECONDS="${RATE_SECONDS:-10}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/pip install --quiet -r scripts/requirements-test.txt
fi
export PYO3_PYTHON="$PWD/.venv/bin/python" PYO3_BUILD_EXTENSION_MODULE=1
# The same package set as the other benchmarks, so features unify and nothing
# is rebuilt. BIN=target/debug (a smoke run of this script) skips the build.
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -p feature-store-cli -p feature-store-benchmarks -p feature-store-py
  BIN="${CARGO_TARGET_DIR:-target}/release"
fi
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
FS="$BIN/feature-store"
LOAD="$BIN/stream-load"

DIR="$(mktemp -d)"
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" --daemonize yes --pidfile "$DIR/redis.pid" >/dev/null
trap 'kill "$(cat "$DIR/redis.pid")" 2>/dev/null; rm -rf "$DIR"' EXIT
URL="redis://127.0.0.1:$PORT"
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.05; done

.venv/bin/python - "$DIR" <<'PY'
import sys, datetime as dt, pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
d = Path(sys.argv[1]) / "seed"
d.mkdir()
cols = {"user_id": pa.array([0], pa.int64()),
        "event_timestamp": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC"))}
cols.update({f"f{i}": pa.array([0.0]) for i in range(10)})
pq.write_table(pa.table(cols), d / "seed.parquet")
PY

# A repo reading stream KEY in group GROUP, online store ONLINE (the stream
# source's connection fields SOURCE, default a Redis stream).
repo() {
  local name=$1 key=$2 group=$3 online=$4
  local source=${5:-"kind: redis_stream, connection_string: \"$URL\", key: $key"}
  mkdir -p "$DIR/$name/data/tx"
  cp "$DIR/seed/seed.parquet" "$DIR/$name/data/tx/"
  printf 'project: bench\nregistry: data/registry.json\n%s\n' "$online" > "$DIR/$name/feature_store.yaml"
  {
    printf 'entities:\n  - {name: user, join_keys: [user_id]}\nsources:\n'
    printf '  - {name: tx, path: data/tx, timestamp_field: event_timestamp}\n'
    printf '  - {name: tx_stream, %s, group: %s, timestamp_field: event_timestamp, batch_source: tx}\n' "$source" "$group"
    printf 'feature_views:\n  - name: user_stream\n    entities: [user]\n    source: tx_stream\n    schema:\n'
    for i in 0 1 2 3 4 5 6 7 8 9; do printf '      - {name: f%s, dtype: float64}\n' "$i"; done
  } > "$DIR/$name/defs.yaml"
  "$FS" --repo "$DIR/$name" apply >/dev/null
}
repo embedded tx g_embedded "online_store: {type: sqlite, path: data/online.db}"
repo redis tx g_redis "online_store: {type: redis, connection_string: \"$URL\", key_prefix: bench}"
repo fresh tx_rate g_fresh "online_store: {type: sqlite, path: data/online.db}"

field() { .venv/bin/python -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "producing $EVENTS events" >&2
"$LOAD" produce "$URL" tx "$EVENTS" > "$DIR/produce.json"
"$LOAD" ceiling "$URL" tx g_ceiling "$EVENTS" > "$DIR/ceiling.json"
CEILING=$(field 'round(d["events_per_s"])' < "$DIR/ceiling.json")
for r in embedded redis; do
  "$FS" --repo "$DIR/$r" --json ingest --stop-when-idle 2s > "$DIR/$r.json"
done
# Events per second of ingestion's busy time; a run that did not ingest
# every event (stopped idle before the end) is no measure: say so.
rate() {
  local got
  got=$(field 'd["sources"][0]["ingested"]' < "$DIR/$1.json")
  [ "$got" = "$EVENTS" ] || echo "WARNING: $1 ingested $got of $EVENTS events; its rate is not comparable" >&2
  field 'round(d["sources"][0]["ingested"] / d["sources"][0]["busy_seconds"])' < "$DIR/$1.json"
}
EMB=$(rate embedded)
RED=$(rate redis)

"$FS" --repo "$DIR/fresh" --json ingest --stop-when-idle 3s --offline-flush-interval 1s > "$DIR/fresh.json" &
ING=$!
sleep 1
"$LOAD" produce "$URL" tx_rate $((RATE * RATE_SECONDS)) "$RATE" > "$DIR/rate.json"
wait "$ING"
FRESH=$(field '"p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d events at %s/s)" % (*d["sources"][0]["freshness_ms"], d["sources"][0]["ingested"], '"$RATE"')' < "$DIR/fresh.json")

FEAST="not run (set FEAST_PYTHON)"
if [ -n "${FEAST_PYTHON:-}" ]; then
  "$FEAST_PYTHON" benchmarks/streams_feast.py "$DIR/feast" "$PORT" tx "$EVENTS" "$DIR/seed/seed.parquet" > "$DIR/feast.json"
  FEAST=$(field 'round(d["events_per_s"])' < "$DIR/feast.json")
fi

printf '\n%-34s %12s %10s\n' "path ($EVENTS events, 10 features)" "events/s" "x ceiling"
printf '%-34s %12s %10s\n' "broker ceiling (read, ack, discard)" "$CEILING" "1.00"
for pair in "ingest into SQLite + offline log:$EMB" "ingest into Redis + offline log:$RED" "Feast 0.67 push into Redis:$FEAST"; do
  name=${pair%%:*}; v=${pair#*:}
  case "$v" in ''|*[!0-9]*) printf '%-34s %12s\n' "$name" "$v" ;;
    *) printf '%-34s %12s %10s\n' "$name" "$v" "$(.venv/bin/python -c "print(f'{$v/$CEILING:.2f}')")" ;; esac
done
if [ -n "${FEAST_PYTHON:-}" ]; then
  printf 'ours into Redis / Feast: %sx\n' "$(.venv/bin/python -c "print(f'{$RED/$FEAST:.1f}')")"
fi
printf 'freshness at %s events/s into SQLite: %s\n' "$RATE" "$FRESH"

NATS_BIN="${NATS_SERVER:-}"
[ -n "$NATS_BIN" ] || { [ -x .venv/bin/nats-server ] && NATS_BIN="$PWD/.venv/bin/nats-server"; } || true
[ -n "$NATS_BIN" ] || NATS_BIN="$(command -v nats-server || true)"
if [ -z "$NATS_BIN" ]; then
  echo "NATS: skipped (no nats-server)"
else
  NPORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$DIR/nats"
  "$NATS_BIN" -js -a 127.0.0.1 -p "$NPORT" -sd "$DIR/nats" > "$DIR/nats.log" 2>&1 &
  NATS_PID=$!
  trap 'kill "$NATS_PID" 2>/dev/null; kill "$(cat "$DIR/redis.pid")" 2>/dev/null; rm -rf "$DIR"' EXIT
  until (exec 3<>"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null; do sleep 0.05; done
  NURL="nats://127.0.0.1:$NPORT"
  NSRC="kind: nats, url: \"$NURL\", stream:"
  repo n_embedded tx g_embedded "online_store: {type: sqlite, path: data/online.db}" "$NSRC TX"
  repo n_redis tx g_redis "online_store: {type: redis, connection_string: \"$URL\", key_prefix: nbench}" "$NSRC TX"
  repo n_fresh tx_rate g_fresh "online_store: {type: sqlite, path: data/online.db}" "$NSRC TX_RATE"
  echo "producing $EVENTS events to JetStream" >&2
  "$LOAD" nats-produce "$NURL" TX tx "$EVENTS" > "$DIR/nproduce.json"
  # The broker's CPU seconds while it serves each consumer (it shares the
  # machine's cores with them): user + system time from /proc.
  broker_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$NATS_PID/stat"; }
  c0=$(broker_cpu)
  "$LOAD" nats-ceiling "$NURL" TX g_ceiling "$EVENTS" > "$DIR/nceiling.json"
  c1=$(broker_cpu)
  NCEILING=$(field 'round(d["events_per_s"])' < "$DIR/nceiling.json")
  declare -A NCPU
  NCPU[ceiling]=$(.venv/bin/python -c "print(f'{$c1 - $c0:.2f}')")
  for r in n_embedded n_redis; do
    c0=$(broker_cpu)
    "$FS" --repo "$DIR/$r" --json ingest --stop-when-idle 2s > "$DIR/$r.json"
    c1=$(broker_cpu)
    NCPU[$r]=$(.venv/bin/python -c "print(f'{$c1 - $c0:.2f}')")
  done
  NEMB=$(rate n_embedded)
  NRED=$(rate n_redis)
  # The rate stream exists before ingestion starts (ingestion does not create streams).
  "$LOAD" nats-produce "$NURL" TX_RATE tx_rate 0 > /dev/null
  "$FS" --repo "$DIR/n_fresh" --json ingest --stop-when-idle 3s --offline-flush-interval 1s > "$DIR/n_fresh.json" &
  ING=$!
  sleep 1
  "$LOAD" nats-produce "$NURL" TX_RATE tx_rate $((RATE * RATE_SECONDS)) "$RATE" > "$DIR/nrate.json"
  wait "$ING"
  NFRESH=$(field '"p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d events at %s/s)" % (*d["sources"][0]["freshness_ms"], d["sources"][0]["ingested"], '"$RATE"')' < "$DIR/n_fresh.json")
  printf '\n%-34s %12s %10s %15s\n' "NATS JetStream ($EVENTS events)" "events/s" "x ceiling" "broker CPU s"
  printf '%-34s %12s %10s %15s\n' "broker ceiling (read, ack, discard)" "$NCEILING" "1.00" "${NCPU[ceiling]}"
  for pair in "ingest into SQLite + offline log:$NEMB:n_embedded" "ingest into Redis + offline log:$NRED:n_redis"; do
    name=${pair%%:*}; rest=${pair#*:}; v=${rest%%:*}; r=${rest#*:}
    printf '%-34s %12s %10s %15s\n' "$name" "$v" "$(.venv/bin/python -c "print(f'{$v/$NCEILING:.2f}')")" "${NCPU[$r]}"
  done
  printf 'freshness at %s events/s into SQLite: %s\n' "$RATE" "$NFRESH"
fi

TANSU="${TANSU:-$PWD/.venv/bin/tansu}"
if [ ! -x "$TANSU" ]; then
  echo "Kafka: skipped (no tansu at $TANSU)"
  exit 0
fi
KPORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$TANSU" broker --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" \
  --storage-engine memory://tansu/ > "$DIR/tansu.log" 2>&1 &
TANSU_PID=$!
trap 'kill "$TANSU_PID" ${NATS_PID:-} 2>/dev/null; kill "$(cat "$DIR/redis.pid")" 2>/dev/null; rm -rf "$DIR"' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null; do sleep 0.05; done
BROKERS="127.0.0.1:$KPORT"
"$LOAD" kafka-topic "$BROKERS" tx 4 >/dev/null
"$LOAD" kafka-topic "$BROKERS" tx_rate 4 >/dev/null
KSRC="kind: kafka, brokers: \"$BROKERS\", properties: {fetch.wait.max.ms: \"${KAFKA_FETCH_WAIT_MS:-20}\"}, topic:"
repo k_embedded tx g_embedded "online_store: {type: sqlite, path: data/online.db}" "$KSRC tx"
repo k_redis tx g_redis "online_store: {type: redis, connection_string: \"$URL\", key_prefix: kbench}" "$KSRC tx"
repo k_fresh tx_rate g_fresh "online_store: {type: sqlite, path: data/online.db}" "$KSRC tx_rate"
echo "producing $EVENTS events to Kafka" >&2
"$LOAD" kafka-produce "$BROKERS" tx "$EVENTS" > "$DIR/kproduce.json"
"$LOAD" kafka-ceiling "$BROKERS" tx g_ceiling "$EVENTS" > "$DIR/kceiling.json"
KCEILING=$(field 'round(d["events_per_s"])' < "$DIR/kceiling.json")
for r in k_embedded k_redis; do
  "$FS" --repo "$DIR/$r" --json ingest --stop-when-idle 2s > "$DIR/$r.json"
done
KEMB=$(rate k_embedded)
KRED=$(rate k_redis)
"$FS" --repo "$DIR/k_fresh" --json ingest --stop-when-idle 10s --offline-flush-interval 1s > "$DIR/k_fresh.json" &
ING=$!
sleep 8  # the group's first join
"$LOAD" kafka-produce "$BROKERS" tx_rate $((RATE * RATE_SECONDS)) "$RATE" > "$DIR/krate.json"
wait "$ING"
KFRESH=$(field '"p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d events at %s/s)" % (*d["sources"][0]["freshness_ms"], d["sources"][0]["ingested"], '"$RATE"')' < "$DIR/k_fresh.json")
printf '\n%-34s %12s %10s\n' "Kafka ($EVENTS events, 4 partitions)" "events/s" "x ceiling"
printf '%-34s %12s %10s\n' "broker ceiling (read, commit, discard)" "$KCEILING" "1.00"
for pair in "ingest into SQLite + offline log:$KEMB" "ingest into Redis + offline log:$KRED"; do
  name=${pair%%:*}; v=${pair#*:}
  printf '%-34s %12s %10s\n' "$name" "$v" "$(.venv/bin/python -c "print(f'{$v/$KCEILING:.2f}')")"
done
printf 'freshness at %s events/s into SQLite: %s\n' "$RATE" "$KFRESH"
