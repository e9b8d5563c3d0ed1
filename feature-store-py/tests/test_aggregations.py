"""Aggregation views from Python: Feast's Aggregation on FeatureView, exact
point-in-time windows in training (checked against pandas), and online
values equal to training's at the same time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

import feature_store as fs
from conftest import DRIVERS, END, definitions


def agg_view(source: fs.FileSource, driver: fs.Entity) -> fs.FeatureView:
    return fs.FeatureView(
        name="driver_activity",
        entities=[driver],
        source=source,
        aggregation_interval=timedelta(hours=1),
        aggregations=[
            fs.Aggregation(column="avg_daily_trips", function="sum", time_window=timedelta(hours=3)),
            fs.Aggregation(column="conv_rate", function="avg", time_window=timedelta(days=1), name="conv_mean_1d"),
            fs.Aggregation(function="count", time_window=timedelta(hours=6)),
            fs.Aggregation(column="avg_daily_trips", function="last_n", n=2, time_window=timedelta(hours=3)),
        ],
    )


@pytest.fixture
def agg_store(store: fs.FeatureStore) -> fs.FeatureStore:
    driver, source, _, _ = definitions()
    store.apply([agg_view(source, driver)])
    return store


def test_schema_follows_from_the_aggregations(agg_store):
    view = agg_store.get_feature_view("driver_activity")
    assert [(f.name, f.dtype) for f in view.features] == [
        ("avg_daily_trips_sum_3h", fs.Int64),
        ("conv_mean_1d", fs.Float64),
        ("count_6h", fs.Int64),
        ("avg_daily_trips_last_2_3h", fs.Array(fs.Int64)),
    ]
    assert view.aggregation_interval == timedelta(hours=1)
    assert [a.function for a in view.aggregations] == ["sum", "mean", "count", "last_n"]
    # Re-applying what the registry returned changes nothing.
    assert not agg_store.apply([view]).written


def test_training_windows_equal_a_scan_of_the_events(agg_store, repo):
    events = pd.read_parquet(repo / "data" / "driver_stats.parquet")
    times = [END - timedelta(hours=h, minutes=m) for h in (0, 5, 30) for m in (0, 1, 59)]
    entity_df = pd.DataFrame(
        [(d, t) for d in DRIVERS + [999] for t in times], columns=["driver_id", "event_timestamp"]
    )
    out = agg_store.get_historical_features(
        entity_df,
        features=[
            "driver_activity:avg_daily_trips_sum_3h",
            "driver_activity:conv_mean_1d",
            "driver_activity:count_6h",
            "driver_activity:avg_daily_trips_last_2_3h",
        ],
    ).to_df()
    assert len(out) == len(entity_df)
    for _, row in out.iterrows():
        t = row["event_timestamp"]
        b = t.floor("h")  # hopping: the window ends at t floored to the interval
        mine = events[events.driver_id == row["driver_id"]]

        def window(hours):
            return mine[(mine.event_timestamp > b - timedelta(hours=hours)) & (mine.event_timestamp <= b)]

        w3 = window(3)
        if len(w3):
            assert row["avg_daily_trips_sum_3h"] == w3.avg_daily_trips.sum()
            newest = w3.sort_values("event_timestamp", ascending=False).avg_daily_trips.tolist()[:2]
            assert list(row["avg_daily_trips_last_2_3h"]) == newest
        else:
            assert pd.isna(row["avg_daily_trips_sum_3h"]) and row["avg_daily_trips_last_2_3h"] is None
        w24 = window(24)
        if len(w24):
            assert row["conv_mean_1d"] == pytest.approx(w24.conv_rate.astype("float64").mean(), rel=1e-9)
        assert row["count_6h"] == len(window(6))


def test_online_values_equal_training_at_the_same_time(agg_store):
    agg_store.materialize_incremental(end_date=datetime.now(timezone.utc))
    features = ["driver_activity:avg_daily_trips_sum_3h", "driver_activity:count_6h", "driver_activity:conv_mean_1d"]
    # The online read uses the clock; read again if an hour (the interval) began meanwhile.
    for _ in range(2):
        now = datetime.now(timezone.utc)
        online = agg_store.get_online_features(
            features=features, entity_rows=[{"driver_id": d} for d in DRIVERS]
        ).to_dict()
        if datetime.now(timezone.utc).hour == now.hour:
            break
    training = agg_store.get_historical_features(
        pd.DataFrame({"driver_id": DRIVERS, "event_timestamp": [now] * len(DRIVERS)}), features=features
    ).to_df()
    assert online["avg_daily_trips_sum_3h"] == training["avg_daily_trips_sum_3h"].tolist()
    assert online["count_6h"] == training["count_6h"].tolist()
    assert online["conv_mean_1d"] == pytest.approx(training["conv_mean_1d"].tolist(), rel=1e-9)


def test_pushed_events_update_the_online_tiles(agg_store):
    agg_store.materialize_incremental(end_date=datetime.now(timezone.utc))
    features = ["driver_activity:count_6h", "driver_activity:avg_daily_trips_sum_3h"]

    def read():
        return agg_store.get_online_features(features=features, entity_rows=[{"driver_id": 1001}]).to_dict()

    for _ in range(2):
        now = datetime.now(timezone.utc)
        b = now.replace(minute=0, second=0, microsecond=0)  # the windows' end: now floored to the interval
        before = read()
        events = pd.DataFrame(
            {
                "driver_id": [1001, 1001],
                "event_timestamp": [b, b - timedelta(minutes=30)],
                "created": [b, b],
                "conv_rate": pd.Series([0.5, 0.25], dtype="float32"),
                "avg_daily_trips": [7, 8],
            }
        )
        # The source is one file, so the offline part is refused before anything is written.
        with pytest.raises(fs.UnsupportedError, match="single file"):
            shared = events.assign(acc_rate=pd.Series([0.9, 0.8], dtype="float32"))  # another view reads it
            agg_store.push("driver_activity", shared, to="online_and_offline")
        assert read() == before
        assert agg_store.push("driver_activity", events) == 2
        after = read()
        if datetime.now(timezone.utc).hour == now.hour:
            break
    assert after["count_6h"] == [before["count_6h"][0] + 2]
    assert after["avg_daily_trips_sum_3h"] == [(before["avg_daily_trips_sum_3h"][0] or 0) + 15]
    with pytest.raises(fs.DataError, match="avg_daily_trips"):
        agg_store.push("driver_activity", events.assign(avg_daily_trips=["seven", "eight"]))
    with pytest.raises(fs.DataError, match='"acc_rate" is not a join key, timestamp or aggregated column'):
        agg_store.push("driver_activity", events.assign(acc_rate=[0.1, 0.2]))
    assert read() == after


def test_bad_aggregations_are_clear_errors(store):
    driver, source, _, _ = definitions()
    with pytest.raises(ValueError, match="median"):
        fs.Aggregation(column="conv_rate", function="median", time_window=timedelta(hours=1))
    with pytest.raises(ValueError, match="time_window is required"):
        fs.Aggregation(column="conv_rate", function="sum")
    view = fs.FeatureView(
        name="bad",
        entities=[driver],
        source=source,
        aggregations=[fs.Aggregation(column="conv_rate", function="sum", time_window=timedelta(hours=1))],
    )
    with pytest.raises(fs.DefinitionError) as e:
        store.apply([view])
    assert "needs aggregation_interval" in str(e.value)
