"""Online benchmark, one run: materialization throughput and online read
latency of this project (Redis and embedded SQLite, in-process Rust) beside
redis-benchmark's pipelined 50-field HSET rate (the ceiling) and Feast on the
same data and the same Redis server.

usage: online_run.py DATA_DIR --bench target/release/online-bench --keys N [--feast-python PY]
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_redis():
    port = free_port()
    d = tempfile.mkdtemp(prefix="bench_redis_")
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


SCRATCH = []


def scratch():
    """A temporary folder for one store's files, removed at the end (they take gigabytes)."""
    d = tempfile.mkdtemp(prefix="bench_online_")
    SCRATCH.append(d)
    return d


def run_json(cmd, timeout):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), time.perf_counter() - t


def hset_ceiling(port, fields):
    value = "x" * 5  # a tagged float32 is 5 bytes
    args = ["HSET", "bench:__rand_int__"] + [a for i in range(fields) for a in (f"f{i}", value)]
    r = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-P", "64", "-c", "4", "-n", "300000",
                        "-r", "1000000", "-q"] + args, capture_output=True, text=True, timeout=600)
    m = re.search(r"([\d.]+) requests per second", r.stdout)
    if not m:
        raise SystemExit(f"redis-benchmark: {r.stdout}{r.stderr}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--bench", required=True)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--feast-python")
    a = ap.parse_args()
    proc, port = start_redis()
    results = {}
    try:
        print(f"redis-server on port {port}; data {a.dir}", file=sys.stderr)
        ceiling = hset_ceiling(port, 50)
        subprocess.run(["redis-cli", "-p", str(port), "FLUSHALL"], capture_output=True)
        results["rust_redis"], _ = run_json([a.bench, a.dir, "--online", "redis", "--redis", f"redis://127.0.0.1:{port}", "--keys", str(a.keys)], 3600)
        db = os.path.join(scratch(), "online.db")
        results["rust_sqlite"], _ = run_json([a.bench, a.dir, "--online", "sqlite", "--sqlite", db, "--keys", str(a.keys)], 3600)
        lmdb = os.path.join(scratch(), "online.lmdb")
        results["rust_lmdb"], _ = run_json([a.bench, a.dir, "--online", "lmdb", "--lmdb", lmdb, "--keys", str(a.keys)], 3600)
        # The same file opened by a fresh process with preload: every page mapped before the first request.
        results["rust_lmdb_preload"], _ = run_json([a.bench, a.dir, "--online", "lmdb", "--lmdb", lmdb, "--keys", str(a.keys), "--skip-materialize", "--preload"], 3600)
        if a.feast_python:
            results["feast_redis"], _ = run_json([a.feast_python, os.path.join(os.path.dirname(__file__), "feast_online.py"), a.dir, f"127.0.0.1:{port}", "--keys", str(a.keys)], 7200)
    finally:
        proc.kill()
        for d in SCRATCH:
            shutil.rmtree(d, ignore_errors=True)
    ours = results["rust_redis"]
    print(f"\nMaterialization, {a.keys:,} entities x {ours['features_per_read']} features ({ours['materialize_view_rows']:,} view rows):")
    print(f"| writer | entities/s | values/s | seconds | vs HSET ceiling |")
    print(f"|---|---|---|---|---|")
    print(f"| redis-benchmark HSET 50 fields, -P 64 (ceiling) | {ceiling:,.0f} | {ceiling * 50:,.0f} | — | 1.00 |")
    for name, key in [("feature-store -> Redis", "rust_redis"), ("feature-store -> SQLite (embedded)", "rust_sqlite"), ("feature-store -> LMDB (embedded)", "rust_lmdb"), ("Feast 0.67 -> Redis", "feast_redis")]:
        r = results.get(key)
        if r and "materialize_seconds" in r:
            print(f"| {name} | {r['materialize_entities_per_s']:,.0f} | {r['materialize_values_per_s']:,.0f} | {r['materialize_seconds']:.1f} | {r['materialize_entities_per_s'] / ceiling:.2f} |")
    print(f"\nOnline read latency, {ours['features_per_read']} features per entity (µs, p50 / p99):")
    print("| reader | 1 entity | 10 | 100 | 1000 |")
    print("|---|---|---|---|---|")
    for name, key in [("feature-store Redis (Rust, in-process)", "rust_redis"), ("feature-store SQLite (Rust, in-process)", "rust_sqlite"), ("feature-store LMDB (Rust, in-process)", "rust_lmdb"), ("feature-store LMDB, preload (Rust, in-process)", "rust_lmdb_preload"), ("Feast 0.67 Redis (Python)", "feast_redis")]:
        r = results.get(key)
        if r:
            cells = [f"{r['latency'][n]['p50_us']:,.0f} / {r['latency'][n]['p99_us']:,.0f}" for n in ["1", "10", "100", "1000"]]
            print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n" + json.dumps({"hset_ceiling_per_s": ceiling, **results}))


if __name__ == "__main__":
    main()
