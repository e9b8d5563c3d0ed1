"""Feast's file offline store on the benchmark files (run with Feast's own venv).

Usage: feast_run.py DATA_DIR VIEWS FEATURES OUT.parquet
"""
import json
import os
import sys
import tempfile
import time
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

data, views, features, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
repo = tempfile.mkdtemp(prefix="feast_bench_")
with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
    f.write(
        "project: bench\nregistry: registry.db\nprovider: local\n"
        "online_store: {type: sqlite, path: online.db}\noffline_store: {type: file}\n"
        "entity_key_serialization_version: 3\n"
    )
driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
objects = [driver]
refs = []
for v in range(views):
    src = FileSource(name=f"src_{v}", path=os.path.abspath(f"{data}/data/view_{v}.parquet"), timestamp_field="event_timestamp")
    schema = [Field(name=f"v{v}_f{i}", dtype=Float32) for i in range(features)]
    objects.append(FeatureView(name=f"view_{v}", entities=[driver], ttl=timedelta(0), schema=schema, source=src, online=False))
    refs += [f"view_{v}:v{v}_f{i}" for i in range(features)]
store = FeatureStore(repo_path=repo)
store.apply(objects)
entity_df = pd.read_parquet(f"{data}/data/entities.parquet")
t = time.perf_counter()
df = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
to_df_seconds = time.perf_counter() - t
df.to_parquet(out)
print(f"feast rows out: {len(df)} of {len(entity_df)} entity rows", file=sys.stderr)
# The retrieval alone (get_historical_features(...).to_df()), for benchmarks/python_run.py.
print(json.dumps({"to_df_seconds": to_df_seconds, "rows_out": len(df), "entity_rows": len(entity_df)}))
