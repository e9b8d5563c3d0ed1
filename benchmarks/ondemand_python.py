"""The Python side of the on-demand benchmark, on the repo `ondemand-bench` wrote.

usage: ondemand_python.py ours DIR [--rounds N]     this package (DIR's online store, already materialized)
       ondemand_python.py feast DIR [--rounds N]    Feast 0.67 in its own venv: the same parquet files, an
                                                    on-demand view in python mode computing the same five
                                                    features, a SQLite online store
Prints one JSON object: p50/p99 of the plain read (the eight inputs) and of the
on-demand read (the five features), alternated, for 1 and 100 entities.
"""
import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

KEYS = None
INPUTS = ["view_a:a1", "view_a:a2", "view_a:a3", "view_a:a4", "view_b:b1", "view_b:b2", "view_b:b3", "view_b:b4"]
ON_DEMAND = ["od:amount_x_a1", "od:a2_plus_b1", "od:big_and_few", "od:ratio", "od:distance"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)] * 1e6


def measure(read_plain, read_od, keys, rounds):
    rng = random.Random(42)
    out = {}
    for entities in (1, 100):
        n = rounds if entities == 1 else max(rounds // 10, 20)
        plain, od = [], []
        for i in range(n + n // 10):
            ids = [rng.randrange(keys) for _ in range(entities)]
            amount = [rng.uniform(0, 200) for _ in range(entities)]
            lat = [rng.uniform(0, 200) for _ in range(entities)]
            order = [(True, od), (False, plain)] if i % 2 == 0 else [(False, plain), (True, od)]
            for is_od, times in order:
                t = time.perf_counter()
                if is_od:
                    read_od(ids, amount, lat)
                else:
                    read_plain(ids)
                took = time.perf_counter() - t
                if i >= n // 10:
                    times.append(took)
        p50, p99, o50, o99 = pct(plain, 0.5), pct(plain, 0.99), pct(od, 0.5), pct(od, 0.99)
        out[f"entities_{entities}"] = {
            "reads": n, "plain_p50_us": p50, "plain_p99_us": p99, "on_demand_p50_us": o50,
            "on_demand_p99_us": o99, "added_p50_us": o50 - p50, "added_p99_us": o99 - p99,
        }
    return out


def ours(repo, rounds, keys):
    import feature_store as fs

    store = fs.FeatureStore(repo_path=repo)

    def plain(ids):
        store.get_online_features(INPUTS, entity_rows={"driver_id": ids}).to_dict()

    def od(ids, amount, lat):
        store.get_online_features(ON_DEMAND, entity_rows={"driver_id": ids, "amount": amount, "lat": lat}).to_dict()

    # The same values as the Rust side computes, checked once.
    r = store.get_online_features(ON_DEMAND, entity_rows=[{"driver_id": 1, "amount": 150.0, "lat": 3.0}]).to_dict()
    assert r["amount_x_a1"][0] is not None, r
    return {"tool": "feature_store (Python)", **measure(plain, od, keys, rounds)}


def feast(repo, rounds, keys):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RequestSource, ValueType
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float32, Float64, Int64

    data = os.path.abspath(os.path.join(repo, "data"))
    work = tempfile.mkdtemp(prefix="feast_ondemand_")
    with open(os.path.join(work, "feature_store.yaml"), "w") as f:
        f.write(
            "project: ondemand_feast\nregistry: registry.db\nprovider: local\n"
            f"online_store:\n  type: sqlite\n  path: {work}/online.db\n"
            "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
        )
    store = FeatureStore(repo_path=work)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view_a = FeatureView(
        name="view_a", entities=[driver], ttl=timedelta(days=3650),
        schema=[Field(name=f"a{i}", dtype=Float64) for i in range(1, 6)],
        source=FileSource(path=f"{data}/a.parquet", timestamp_field="event_timestamp"),
    )
    view_b = FeatureView(
        name="view_b", entities=[driver], ttl=timedelta(days=3650),
        schema=[Field(name=f"b{i}", dtype=Float32) for i in range(1, 6)],
        source=FileSource(path=f"{data}/b.parquet", timestamp_field="event_timestamp"),
    )
    order = RequestSource(name="order", schema=[Field(name="amount", dtype=Float64), Field(name="lat", dtype=Float64)])

    @on_demand_feature_view(
        sources=[view_a, view_b, order],
        schema=[Field(name="amount_x_a1", dtype=Float64), Field(name="a2_plus_b1", dtype=Float64),
                Field(name="big_and_few", dtype=Int64), Field(name="ratio", dtype=Float64),
                Field(name="distance", dtype=Float64)],
        mode="python",
    )
    def od(inputs):
        import math  # Feast runs the function from its source: imports go inside

        out = {"amount_x_a1": [], "a2_plus_b1": [], "big_and_few": [], "ratio": [], "distance": []}
        for amount, lat, a1, a2, a3, a4, b1, b2, b3, b4 in zip(
            inputs["amount"], inputs["lat"], inputs["a1"], inputs["a2"], inputs["a3"], inputs["a4"],
            inputs["b1"], inputs["b2"], inputs["b3"], inputs["b4"],
        ):
            out["amount_x_a1"].append(amount * a1)
            out["a2_plus_b1"].append(a2 + b1)
            out["big_and_few"].append(1 if amount > 100 and b2 < 10 else 0)
            out["ratio"].append((a3 or 0) / b3 if b3 else None)
            out["distance"].append(math.sqrt((lat - a4) ** 2 + (amount - b4) ** 2))
        return out

    store.apply([driver, view_a, view_b, order, od])
    store.materialize(datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 1, tzinfo=timezone.utc))

    def plain(ids):
        store.get_online_features(features=INPUTS, entity_rows=[{"driver_id": i} for i in ids]).to_dict()

    def on_demand(ids, amount, lat):
        rows = [{"driver_id": i, "amount": a, "lat": la} for i, a, la in zip(ids, amount, lat)]
        store.get_online_features(features=ON_DEMAND, entity_rows=rows).to_dict()

    r = store.get_online_features(features=ON_DEMAND, entity_rows=[{"driver_id": 1, "amount": 150.0, "lat": 3.0}]).to_dict()
    assert r["amount_x_a1"][0] is not None, r
    import feast
    return {"tool": f"Feast {feast.__version__} (python-mode on-demand view, SQLite online store)",
            **measure(plain, on_demand, keys, rounds)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["ours", "feast"])
    ap.add_argument("dir")
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=10000)
    a = ap.parse_args()
    repo = os.path.abspath(a.dir)
    result = ours(repo, a.rounds, a.keys) if a.which == "ours" else feast(repo, a.rounds, a.keys)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
