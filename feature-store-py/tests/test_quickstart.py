"""Feast's quickstart retrieval code, unchanged but for the import (its
on-demand feature view is left out: not supported here)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from conftest import END, definitions
from feature_store import FeatureStore


def test_feast_quickstart_runs_unchanged(repo):
    # --- definitions, as the quickstart's feature_repo/example_repo.py ---
    store = FeatureStore(repo_path=str(repo))
    store.apply(list(definitions()))

    # --- the quickstart's test_workflow.py, retrieval parts ---
    end = END.replace(tzinfo=None)
    entity_df = pd.DataFrame.from_dict(
        {
            "driver_id": [1001, 1002, 1003],
            "label_driver_reported_satisfaction": [1, 5, 3],
            "event_timestamp": [end - timedelta(minutes=11), end - timedelta(minutes=36), end - timedelta(minutes=73)],
            "val_to_add": [1, 2, 3],
            "val_to_add_2": [10, 20, 30],
        }
    )
    training_df = store.get_historical_features(
        entity_df=entity_df,
        features=[
            "driver_hourly_stats:conv_rate",
            "driver_hourly_stats:acc_rate",
            "driver_hourly_stats:avg_daily_trips",
        ],
    ).to_df()
    assert training_df.shape == (3, 8)
    assert list(training_df["avg_daily_trips"]) == [700 + 1, 700 + 2, 690 + 3]

    store.materialize_incremental(end_date=datetime.now())

    feature_vector = store.get_online_features(
        features=[
            "driver_hourly_stats:conv_rate",
            "driver_hourly_stats:acc_rate",
            "driver_hourly_stats:avg_daily_trips",
        ],
        entity_rows=[{"driver_id": 1004}, {"driver_id": 1005}],
    ).to_dict()
    assert sorted(feature_vector) == ["acc_rate", "avg_daily_trips", "conv_rate", "driver_id"]
    assert feature_vector["driver_id"] == [1004, 1005]
    assert feature_vector["avg_daily_trips"] == [714, 715]

    features_to_fetch = store.get_feature_service("driver_activity_v1")
    returned = store.get_online_features(features=features_to_fetch, entity_rows=[{"driver_id": 1001}]).to_dict()
    assert returned["conv_rate"][0] is not None
