"""Deterministic data for the point-in-time join benchmark.

Workload 1: 1M entity rows x 5 views x 10 float features, 100k keys x 10
updates per view over 30 days. Sizes are flags so smaller runs are cheap.
Writes DIR/entities.parquet, DIR/view_{i}.parquet and a repo (feature_store.yaml,
features.yaml) for this project.
"""
import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

T0 = np.datetime64("2024-01-01T00:00:00", "us")
SPAN_US = 30 * 24 * 3600 * 1_000_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--entity-rows", type=int, default=1_000_000)
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--updates", type=int, default=10)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.dir, "data"), exist_ok=True)
    rng = np.random.default_rng(42)

    n = a.entity_rows
    ent = pa.table({
        "driver_id": rng.integers(0, a.keys, n, dtype=np.int64),
        "event_timestamp": pa.array(T0 + rng.integers(0, SPAN_US, n).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC")),
    })
    pq.write_table(ent, os.path.join(a.dir, "data", "entities.parquet"))

    views = []
    for v in range(a.views):
        m = a.keys * a.updates
        cols = {
            "driver_id": np.repeat(np.arange(a.keys, dtype=np.int64), a.updates),
            "event_timestamp": pa.array(T0 + rng.integers(0, SPAN_US, m).astype("timedelta64[us]"), pa.timestamp("us", tz="UTC")),
        }
        for f in range(a.features):
            cols[f"v{v}_f{f}"] = rng.random(m, dtype=np.float32)
        pq.write_table(pa.table(cols), os.path.join(a.dir, "data", f"view_{v}.parquet"), row_group_size=256 * 1024)
        views.append(v)

    with open(os.path.join(a.dir, "feature_store.yaml"), "w") as f:
        f.write("project: bench\nregistry: data/registry.json\n")
    with open(os.path.join(a.dir, "features.yaml"), "w") as f:
        f.write("entities:\n  - {name: driver, join_keys: [driver_id]}\nsources:\n")
        for v in views:
            f.write(f"  - {{name: src_{v}, path: data/view_{v}.parquet, timestamp_field: event_timestamp}}\n")
        f.write("feature_views:\n")
        for v in views:
            f.write(f"  - {{name: view_{v}, entities: [driver], source: src_{v}}}\n")
    print(f"wrote {n} entity rows, {a.views} views x {a.keys * a.updates} rows to {a.dir}")


if __name__ == "__main__":
    main()
