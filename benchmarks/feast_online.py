"""Feast's side of the online benchmark: materialize the generated repo into
Redis with Feast and time get_online_features. Runs in Feast's own venv.

usage: feast_online.py DATA_DIR REDIS_HOST:PORT --keys N [--skip-materialize]
Prints one JSON object on stdout.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timezone

import pyarrow.parquet as pq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("redis")
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--skip-materialize", action="store_true")
    a = ap.parse_args()
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32

    data = os.path.abspath(os.path.join(a.dir, "data"))
    views = sorted(f[:-8] for f in os.listdir(data) if f.startswith("view_") and f.endswith(".parquet"))
    repo = tempfile.mkdtemp(prefix="feast_online_")
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write(
            "project: bench_feast\nregistry: registry.db\nprovider: local\n"
            f"online_store:\n  type: redis\n  connection_string: \"{a.redis}\"\n"
            "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
        )
    store = FeatureStore(repo_path=repo)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    objs = [driver]
    refs = []
    for v in views:
        path = os.path.join(data, f"{v}.parquet")
        cols = [c for c in pq.read_schema(path).names if c not in ("driver_id", "event_timestamp")]
        src = FileSource(name=f"src_{v}", path=path, timestamp_field="event_timestamp")
        objs.append(FeatureView(name=v, entities=[driver], schema=[Field(name=c, dtype=Float32) for c in cols], source=src, online=True))
        refs += [f"{v}:{c}" for c in cols]
    store.apply(objs)
    out = {"features_per_read": len(refs)}
    if not a.skip_materialize:
        t = time.perf_counter()
        store.materialize(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
        secs = time.perf_counter() - t
        out.update(materialize_seconds=secs, materialize_entities_per_s=a.keys / secs,
                   materialize_values_per_s=a.keys * len(refs) / secs)
    rng = random.Random(1)
    lat = {}
    for n, iters in [(1, 500), (10, 300), (100, 100), (1000, 20)]:
        times = []
        for i in range(iters + iters // 10):
            rows = [{"driver_id": rng.randrange(a.keys)} for _ in range(n)]
            t = time.perf_counter()
            r = store.get_online_features(features=refs, entity_rows=rows).to_dict()
            took = time.perf_counter() - t
            assert len(r["driver_id"]) == n
            if i >= iters // 10:
                times.append(took)
        times.sort()
        pick = lambda p: times[round((len(times) - 1) * p)] * 1e6
        lat[str(n)] = {"p50_us": pick(0.5), "p99_us": pick(0.99), "mean_us": sum(times) / len(times) * 1e6, "iterations": iters}
    out["latency"] = lat
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
