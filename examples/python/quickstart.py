"""Notebook-style walk through the Python API, on embedded defaults (no servers).

Defines a repo in Python, builds a point-in-time training set into pandas,
materializes into the embedded SQLite online store and reads online features
as a service would. Run from the repo root after `scripts/py-develop.sh`:

    .venv/bin/python examples/python/quickstart.py [DIR]
"""

import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, Float32, Int64

# %% A repo folder: settings and sample data (three days of hourly stats for five drivers).
repo = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="fs_quickstart_"))
(repo / "data").mkdir(parents=True, exist_ok=True)
(repo / "feature_store.yaml").write_text(
    "project: quickstart\nregistry: data/registry.json\nonline_store:\n  type: sqlite\n  path: data/online.db\n"
)
end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
rng = np.random.default_rng(7)
hours = pd.date_range(end=end, periods=3 * 24, freq="h")
stats = pd.DataFrame(
    [(d, t) for d in range(1001, 1006) for t in hours], columns=["driver_id", "event_timestamp"]
).assign(
    created=lambda df: df.event_timestamp,
    conv_rate=lambda df: rng.random(len(df)).astype("float32"),
    acc_rate=lambda df: rng.random(len(df)).astype("float32"),
    avg_daily_trips=lambda df: rng.integers(0, 1000, len(df)),
)
stats.to_parquet(repo / "data" / "driver_stats.parquet", index=False)

# %% Definitions in Python, as in Feast.
driver = Entity(name="driver", join_keys=["driver_id"])
driver_stats_source = FileSource(
    name="driver_hourly_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
driver_stats_fv = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
    ],
    online=True,
    source=driver_stats_source,
    tags={"team": "driver_performance"},
)
driver_activity = FeatureService(name="driver_activity_v1", features=[driver_stats_fv[["conv_rate", "avg_daily_trips"]]])

store = FeatureStore(repo_path=str(repo))
print(store.plan([driver, driver_stats_source, driver_stats_fv, driver_activity]))
store.apply([driver, driver_stats_source, driver_stats_fv, driver_activity])

# %% A training set: each label row gets the features as of its own timestamp.
entity_df = pd.DataFrame(
    {
        "driver_id": [1001, 1002, 1003, 1001],
        "label_driver_reported_satisfaction": [1, 5, 3, 4],
        "event_timestamp": [end - timedelta(hours=h) for h in (1, 5, 30, 100)],
    }
)
training_df = store.get_historical_features(
    entity_df=entity_df,
    features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips"],
).to_df()
print("\ntraining set (the last row predates all data, so its features are null):")
print(training_df.to_string())

# %% Materialize the newest values into the embedded online store.
report = store.materialize_incremental(end_date=datetime.now(timezone.utc))
print(f"\nmaterialized {report.entities_written} entities from {report.rows_read} rows in {report.seconds:.2f}s")

# %% Online features, as an inference service would read them.
response = store.get_online_features(
    features=driver_activity,
    entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}, {"driver_id": 9999}],
)
print("\nonline features:", response.to_dict())
print("statuses:       ", response.statuses())
