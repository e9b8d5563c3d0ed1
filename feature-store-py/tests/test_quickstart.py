"""Feast's quickstart, unchanged but for the imports: its definitions
(feature_repo/example_repo.py, the on-demand view included) and the
retrieval parts of test_workflow.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from conftest import END, definitions
from feature_store import FeatureService, FeatureStore, Field, Float64, Int64, RequestSource, on_demand_feature_view


def quickstart_definitions():
    # entity, source and view as conftest builds them (the quickstart's, over local data)
    driver, driver_stats_source, driver_stats_fv, _ = definitions()

    # --- from the quickstart's feature_repo/example_repo.py ---
    # Define a request data source which encodes features / information only
    # available at request time (e.g. part of the user initiated HTTP request)
    input_request = RequestSource(
        name="vals_to_add",
        schema=[
            Field(name="val_to_add", dtype=Int64),
            Field(name="val_to_add_2", dtype=Int64),
        ],
    )

    # Define an on demand feature view which can generate new features based on
    # existing feature views and RequestSource features
    @on_demand_feature_view(
        sources=[driver_stats_fv, input_request],
        schema=[
            Field(name="conv_rate_plus_val1", dtype=Float64),
            Field(name="conv_rate_plus_val2", dtype=Float64),
        ],
    )
    def transformed_conv_rate(inputs: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame()
        df["conv_rate_plus_val1"] = inputs["conv_rate"] + inputs["val_to_add"]
        df["conv_rate_plus_val2"] = inputs["conv_rate"] + inputs["val_to_add_2"]
        return df

    # This groups features into a model version
    driver_activity_v1 = FeatureService(
        name="driver_activity_v1",
        features=[
            driver_stats_fv[["conv_rate"]],  # Sub-selects a feature from a feature view
            transformed_conv_rate,  # Selects all features from the feature view
        ],
    )
    driver_activity_v2 = FeatureService(name="driver_activity_v2", features=[driver_stats_fv, transformed_conv_rate])
    return [driver, driver_stats_source, driver_stats_fv, input_request, transformed_conv_rate, driver_activity_v1,
            driver_activity_v2]


def test_feast_quickstart_runs_unchanged(repo):
    store = FeatureStore(repo_path=str(repo))
    store.apply(quickstart_definitions())

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
            "transformed_conv_rate:conv_rate_plus_val1",
            "transformed_conv_rate:conv_rate_plus_val2",
        ],
    ).to_df()
    assert training_df.shape == (3, 10)
    assert list(training_df["avg_daily_trips"]) == [700 + 1, 700 + 2, 690 + 3]
    assert list(training_df["conv_rate_plus_val1"]) == list(training_df["conv_rate"].astype("float64") + [1, 2, 3])

    store.materialize_incremental(end_date=datetime.now())

    entity_rows = [
        # {join_key: entity_value}
        {
            "driver_id": 1001,
            "val_to_add": 1000,
            "val_to_add_2": 2000,
        },
        {
            "driver_id": 1002,
            "val_to_add": 1001,
            "val_to_add_2": 2002,
        },
    ]
    feature_vector = store.get_online_features(
        features=[
            "driver_hourly_stats:acc_rate",
            "transformed_conv_rate:conv_rate_plus_val1",
            "transformed_conv_rate:conv_rate_plus_val2",
        ],
        entity_rows=entity_rows,
    ).to_dict()
    assert sorted(feature_vector) == ["acc_rate", "conv_rate_plus_val1", "conv_rate_plus_val2", "driver_id"]
    assert feature_vector["driver_id"] == [1001, 1002]
    assert [round(v, 3) for v in feature_vector["conv_rate_plus_val1"]] == [1000 + 1.071, 1001 + 2.071]

    features_to_fetch = store.get_feature_service("driver_activity_v1")
    returned = store.get_online_features(features=features_to_fetch, entity_rows=entity_rows).to_dict()
    assert sorted(returned) == ["conv_rate", "conv_rate_plus_val1", "conv_rate_plus_val2", "driver_id"]
    assert returned["conv_rate"][0] is not None

    plain = store.get_online_features(
        features=["driver_hourly_stats:avg_daily_trips"], entity_rows=[{"driver_id": 1004}, {"driver_id": 1005}]
    ).to_dict()
    assert plain["avg_daily_trips"] == [714, 715]
