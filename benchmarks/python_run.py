"""Python benchmark, one run: this project's Python package beside Feast 0.67
on the data of the offline and online benchmarks.

* Historical: ``get_historical_features(entity_df, refs).to_df()`` on workload 1
  (entity_df read into pandas beforehand, not timed), ours several times
  (best and median), Feast's file offline store once (``feast_run.py``).
* Online: one redis-server on a free port; ours materialized from Python,
  then ``get_online_features(features, entity_rows=[{...}]).to_dict()`` p50/p99
  for 1, 10, 100 entities x all features; the Rust call on the same Redis and
  data right after (``online-bench --skip-materialize``) gives the Python
  overhead across processes, and each response's ``store_seconds`` (the Rust
  store call inside that request) gives it within the same request; the same
  on the embedded SQLite store and on the memory store
  (no I/O, so the difference is the Python layer alone); Feast's
  ``get_online_features(...).to_dict()`` on the same Redis (``feast_online.py``).

Run through benchmarks/python.sh, which builds the release extension.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import pandas as pd

sys.path.insert(0, os.path.dirname(__file__))
from online_run import run_json, start_redis  # noqa: E402

import feature_store as fs  # noqa: E402

SIZES = [(1, 3000), (10, 2000), (100, 500)]


def historical(w1, repeat, feast_python):
    store = fs.FeatureStore(repo_path=w1, config={"project": "bench", "registry": "data/registry.json",
                                                   "online_store": {"type": "memory"}})
    store.apply()
    refs = [f"{v.name}:{f.name}" for v in sorted(store.list_feature_views(), key=lambda v: v.name) for f in v.features]
    entity_df = pd.read_parquet(os.path.join(w1, "data", "entities.parquet"))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        df = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
        times.append(time.perf_counter() - t)
        assert len(df) == len(entity_df)
    times.sort()
    out = {"ours_best_s": times[0], "ours_median_s": times[len(times) // 2], "rows": len(entity_df), "features": len(refs)}
    if feast_python:
        views = len({r.split(":")[0] for r in refs})
        r, _ = run_json([feast_python, os.path.join(os.path.dirname(__file__), "feast_run.py"), w1, str(views),
                         str(len(refs) // views), os.path.join(tempfile.mkdtemp(), "feast_out.parquet")], 1800)
        out["feast"] = r
    return out


def latency(store, features, keys):
    """p50/p99 of the whole `get_online_features(...).to_dict()`, and of the
    call alone (entity rows in, an Arrow-backed response out: what the Rust
    call does), timed separately within each request."""
    rng = random.Random(1)
    lat = {}
    for n, iters in SIZES:
        times, calls, own = [], [], []
        for i in range(iters + iters // 10):
            rows = [{"driver_id": rng.randrange(keys)} for _ in range(n)]
            # The previous response and dict are freed here, untimed, as the
            # Rust benchmark frees each response after its timer stops.
            resp = r = None
            t = time.perf_counter()
            resp = store.get_online_features(features=features, entity_rows=rows)
            called = time.perf_counter()
            r = resp.to_dict()
            took = time.perf_counter() - t
            assert len(r["driver_id"]) == n
            if i >= iters // 10:
                times.append(took)
                calls.append(called - t)
                own.append(called - t - resp.store_seconds)
        times.sort()
        calls.sort()
        own.sort()
        pick = lambda ts, p: ts[round((len(ts) - 1) * p)] * 1e6  # noqa: E731
        lat[str(n)] = {"p50_us": pick(times, 0.5), "p99_us": pick(times, 0.99), "mean_us": sum(times) / len(times) * 1e6,
                       "call_p50_us": pick(calls, 0.5), "call_p99_us": pick(calls, 0.99),
                       "own_p50_us": pick(own, 0.5), "own_p99_us": pick(own, 0.99)}
    return lat


def online(data, keys, bench, feast_python):
    proc, port = start_redis()
    out = {}
    try:
        sqlite = os.path.join(tempfile.mkdtemp(prefix="bench_py_sqlite_"), "online.db")
        lmdb = os.path.join(tempfile.mkdtemp(prefix="bench_py_lmdb_"), "online.lmdb")
        for kind, online_cfg, rust_args in [
            ("redis", {"type": "redis", "connection_string": f"redis://127.0.0.1:{port}", "timeout": "60s"},
             ["--online", "redis", "--redis", f"redis://127.0.0.1:{port}"]),
            ("sqlite", {"type": "sqlite", "path": sqlite}, ["--online", "sqlite", "--sqlite", sqlite]),
            # The Rust reader opens the file while this process still holds it (LMDB is multi-process).
            ("lmdb", {"type": "lmdb", "path": lmdb}, ["--online", "lmdb", "--lmdb", lmdb]),
            # No I/O: the difference to Rust is the Python layer alone.
            ("memory", {"type": "memory"}, ["--online", "memory"]),
        ]:
            store = fs.FeatureStore(repo_path=data, config={"project": "bench", "registry": "data/registry.json",
                                                             "online_store": online_cfg})
            store.apply()
            views = sorted(v.name for v in store.list_feature_views())
            t = time.perf_counter()
            report = store.materialize(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
            secs = time.perf_counter() - t
            py = latency(store, views, keys)
            skip = [] if kind == "memory" else ["--skip-materialize"]  # a memory store is per process
            rust, _ = run_json([bench, data, *rust_args, "--keys", str(keys), *skip,
                                "--sizes", ",".join(str(n) for n, _ in SIZES)], 1800)
            out[kind] = {"materialize_seconds": secs, "entities_written": report.entities_written, "python": py,
                         "rust": rust["latency"], "features_per_read": rust["features_per_read"]}
        if feast_python:
            out["feast"], _ = run_json([feast_python, os.path.join(os.path.dirname(__file__), "feast_online.py"), data,
                                        f"127.0.0.1:{port}", "--keys", str(keys)], 7200)
    finally:
        proc.kill()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--w1", required=True, help="workload-1 data dir (generate.py)")
    ap.add_argument("--online", required=True, help="online data dir (generate.py --updates 1)")
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--bench", required=True, help="target/release/online-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--feast-python")
    a = ap.parse_args()
    h = historical(a.w1, a.repeat, a.feast_python)
    o = online(a.online, a.keys, a.bench, a.feast_python)

    print(f"\nHistorical retrieval to pandas, workload 1 ({h['rows']:,} entity rows x {h['features']} features):")
    print("| tool | seconds | rows out | / ours (best) |")
    print("|---|---|---|---|")
    print(f"| feature-store (Python, best / median of {a.repeat}) | {h['ours_best_s']:.2f} / {h['ours_median_s']:.2f} | {h['rows']:,} | 1.0 |")
    if "feast" in h:
        f = h["feast"]
        print(f"| Feast 0.67 file offline store (one run) | {f['to_df_seconds']:.1f} | {f['rows_out']:,} | {f['to_df_seconds'] / h['ours_best_s']:.0f}x |")

    feats = o["redis"]["features_per_read"]
    print(f"\nOnline reads from Python, {feats} features per entity, `.to_dict()` (µs, p50 / p99):")
    print("| reader | " + " | ".join(f"{n} entit{'y' if n == 1 else 'ies'}" for n, _ in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    cell = lambda lat, n: f"{lat[str(n)]['p50_us']:,.0f} / {lat[str(n)]['p99_us']:,.0f}"  # noqa: E731
    for kind in ["redis", "sqlite", "lmdb", "memory"]:
        r = o[kind]
        print(f"| feature-store {kind} (Python) | " + " | ".join(cell(r["python"], n) for n, _ in SIZES) + " |")
        print(f"| feature-store {kind} (Rust, same data, right after) | " + " | ".join(cell(r["rust"], n) for n, _ in SIZES) + " |")
        print(f"| feature-store {kind} (Python, the call alone, without `.to_dict()`) | " + " | ".join(
            f"{r['python'][str(n)]['call_p50_us']:,.0f} / {r['python'][str(n)]['call_p99_us']:,.0f}" for n, _ in SIZES) + " |")
        print(f"| Python overhead of the call, same request (call minus its Rust store call), p50 / p99 (µs) | " + " | ".join(
            f"{r['python'][str(n)]['own_p50_us']:,.0f} / {r['python'][str(n)]['own_p99_us']:,.0f}" for n, _ in SIZES) + " |")
        print(f"| Python overhead of the call against the Rust process, p50 (µs) | " + " | ".join(
            f"{r['python'][str(n)]['call_p50_us'] - r['rust'][str(n)]['p50_us']:,.0f}" for n, _ in SIZES) + " |")
        print(f"| Python overhead with `.to_dict()`, p50 (µs) | " + " | ".join(
            f"{r['python'][str(n)]['p50_us'] - r['rust'][str(n)]['p50_us']:,.0f}" for n, _ in SIZES) + " |")
    if "feast" in o:
        print("| Feast 0.67 redis (Python) | " + " | ".join(cell(o["feast"]["latency"], n) for n, _ in SIZES) + " |")
    print("\n" + json.dumps({"historical": h, "online": o}))


if __name__ == "__main__":
    main()
