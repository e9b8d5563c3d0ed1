"""Materialization, push and online reads from Python, on the embedded SQLite
store and on a real redis-server."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pytest

import feature_store as fs
from conftest import DRIVERS, END, definitions, make_repo

FEATURES = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]


def newest_trips(driver: int) -> int:
    return 71 * 10 + (driver - 1000)


def test_materialize_then_read_every_entity_form(store):
    report = store.materialize(END - timedelta(days=3), END)
    assert report.entities_written == len(DRIVERS)
    assert report.rows_read == 72 * len(DRIVERS)
    forms = [
        [{"driver_id": 1001}, {"driver_id": 1005}, {"driver_id": 1001}],
        {"driver_id": [1001, 1005, 1001]},
        pd.DataFrame({"driver_id": [1001, 1005, 1001]}),
        pa.table({"driver_id": pa.array([1001, 1005, 1001], pa.int32())}),  # int32 widens losslessly
    ]
    for rows in forms:
        started = time.perf_counter()
        resp = store.get_online_features(features=FEATURES, entity_rows=rows)
        # The Rust store call's own time, for telling the Python layer's cost apart.
        assert 0 < resp.store_seconds <= time.perf_counter() - started
        d = resp.to_dict()
        assert d["driver_id"] == [1001, 1005, 1001]
        assert d["avg_daily_trips"] == [newest_trips(1001), newest_trips(1005), newest_trips(1001)]
        assert resp.statuses()["avg_daily_trips"] == ["PRESENT"] * 3


def test_statuses_ttl_and_event_times(store):
    store.materialize(END - timedelta(days=3), END)
    # A driver whose newest row is older than the 1-day ttl: read time enforces the ttl.
    stale_at = END - timedelta(days=2)
    store.push("driver_hourly_stats", pa.table({
        "driver_id": pa.array([1777], pa.int64()),
        "event_timestamp": pa.array([stale_at], pa.timestamp("us", tz="UTC")),
        "conv_rate": pa.array([0.1], pa.float32()),
        "acc_rate": pa.array([0.1], pa.float32()),
        "avg_daily_trips": pa.array([1], pa.int64()),
    }))
    resp = store.get_online_features(FEATURES, [{"driver_id": 1001}, {"driver_id": 4242}, {"driver_id": 1777}])
    assert resp.statuses()["conv_rate"] == ["PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"]
    assert resp.to_dict()["avg_daily_trips"] == [newest_trips(1001), None, None]  # stale value withheld
    assert resp.event_timestamps()["conv_rate"] == [END, None, stale_at]
    assert resp.feature_names == ["conv_rate", "avg_daily_trips"]
    assert len(resp) == 3
    body = json.loads(resp.to_json())
    assert body["metadata"]["feature_names"] == ["driver_id", "conv_rate", "avg_daily_trips"]
    assert body["results"][1]["statuses"] == ["PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"]


def test_push_then_read_present_values(store):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "event_timestamp": [now, now],
            "created": [now, now],
            "conv_rate": pd.Series([0.5, 0.25], dtype="float32"),
            "acc_rate": pd.Series([0.9, None], dtype="float32"),
            "avg_daily_trips": [7, 8],
        }
    )
    assert store.push("driver_hourly_stats", rows) == 2
    resp = store.get_online_features(
        ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips"],
        {"driver_id": [1002, 1001]},
    )
    d = resp.to_dict()
    assert d["conv_rate"] == [0.25, 0.5]
    assert d["acc_rate"] == [None, pytest.approx(0.9)]
    assert d["avg_daily_trips"] == [8, 7]
    assert resp.statuses()["acc_rate"] == ["NULL_VALUE", "PRESENT"]
    assert resp.event_timestamps()["conv_rate"] == [now, now]
    # An older push is skipped: writes never regress.
    older = rows.assign(event_timestamp=now - timedelta(hours=1), avg_daily_trips=[70, 80])
    assert store.push("driver_hourly_stats", older) == 0
    assert store.get_online_features(FEATURES, {"driver_id": [1001]}).to_dict()["avg_daily_trips"] == [7]
    # Outputs in every form.
    df = resp.to_df()
    assert list(df.columns) == ["driver_id", "conv_rate", "acc_rate", "avg_daily_trips"]
    table = resp.to_arrow()
    assert table.column("avg_daily_trips").to_pylist() == [8, 7]
    assert resp.statuses_arrow().column("acc_rate").to_pylist() == ["NULL_VALUE", "PRESENT"]
    assert resp.event_timestamps_arrow().num_rows == 2


def test_push_rounds_pandas_float64_to_float32_features(store):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = pd.DataFrame(  # pandas makes float64: Feast code pushes frames like this
        {"driver_id": [1001], "event_timestamp": [now], "conv_rate": [0.1], "acc_rate": [0.7], "avg_daily_trips": [3]}
    )
    assert store.push("driver_hourly_stats", rows) == 1
    d = store.get_online_features(["driver_hourly_stats:conv_rate"], {"driver_id": [1001]}).to_dict()
    assert d["conv_rate"] == [pytest.approx(0.1)]
    assert d["conv_rate"][0] != 0.1  # stored as float32, as declared
    # A finite float64 beyond float32's range is refused, not stored as an infinity; inf itself is a value.
    too_big = rows.assign(conv_rate=[1e300], event_timestamp=[now + timedelta(seconds=1)])
    with pytest.raises(fs.DataError, match=r"conv_rate.*beyond the float32 range"):
        store.push("driver_hourly_stats", too_big)
    assert store.get_online_features(["driver_hourly_stats:conv_rate"], {"driver_id": [1001]}).to_dict() == d
    assert store.push("driver_hourly_stats", too_big.assign(conv_rate=[float("inf")])) == 1


def test_push_validation_errors_name_the_problem(store):
    now = datetime.now(timezone.utc)
    bad_type = pd.DataFrame(
        {"driver_id": [1001], "event_timestamp": [now], "conv_rate": ["high"], "acc_rate": [0.1], "avg_daily_trips": [1]}
    )
    with pytest.raises(fs.DataError, match="conv_rate"):
        store.push("driver_hourly_stats", bad_type)
    missing = bad_type.drop(columns=["conv_rate"])
    with pytest.raises(fs.FeatureStoreError, match="conv_rate"):
        store.push("driver_hourly_stats", missing)
    with pytest.raises(fs.NotFoundError, match="driver_hourly_stat"):
        store.push("driver_hourly_stat", bad_type)
    with pytest.raises(fs.InvalidArgumentError, match="mode"):
        store.push("driver_hourly_stats", bad_type, to="sideways")


def test_push_offline_appends_to_the_source(store):
    now = END + timedelta(hours=1)
    rows = pa.table(
        {
            "driver_id": pa.array([1003], pa.int64()),
            "event_timestamp": pa.array([now], pa.timestamp("us", tz="UTC")),
            "created": pa.array([now], pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array([9.5], pa.float32()),
            "acc_rate": pa.array([0.5], pa.float32()),
            "avg_daily_trips": pa.array([999], pa.int64()),
        }
    )
    # The quickstart source is a single file: appending is refused with the reason.
    with pytest.raises(fs.FeatureStoreError, match="single"):
        store.push("driver_hourly_stats", rows, to=fs.PushMode.OFFLINE)


def test_entity_key_type_errors_name_the_key(store):
    store.materialize(END - timedelta(days=1), END)
    with pytest.raises(fs.DataError, match="driver_id"):
        store.get_online_features(FEATURES, [{"driver_id": "1001"}])
    with pytest.raises(fs.DataError, match="mixes"):
        store.get_online_features(FEATURES, {"driver_id": [1001, "x"]})
    with pytest.raises(fs.InvalidArgumentError, match="driver_id"):
        store.get_online_features(FEATURES, [{"driver": 1001}])
    with pytest.raises(fs.InvalidArgumentError, match="same keys"):
        store.get_online_features(FEATURES, [{"driver_id": 1001}, {"driver_id": 1, "x": 2}])
    with pytest.raises(fs.NotFoundError):
        store.get_online_features(["driver_hourly_stats:nope"], [{"driver_id": 1001}])


def test_numpy_keys_and_feature_service(store):
    import numpy as np

    store.materialize(END - timedelta(days=1), END)
    resp = store.get_online_features(definitions()[3], {"driver_id": np.array([1002, 1003], dtype=np.int64)})
    assert resp.feature_names == ["conv_rate", "avg_daily_trips"]
    assert resp.event_timestamps()["avg_daily_trips"] == [END, END]


def test_materialize_incremental_advances_the_watermark(store):
    first = store.materialize_incremental(end_date=END - timedelta(hours=12))
    view = first.views[0]
    assert view["view"] == "driver_hourly_stats"
    assert view["entities_written"] == len(DRIVERS)
    mid = END - timedelta(hours=12)
    described = [d for d in store.describe("driver_hourly_stats") if d["kind"] == "feature_view"][0]
    assert pd.Timestamp(described["state"]["watermark"]) == pd.Timestamp(mid)
    second = store.materialize_incremental(end_date=END)
    assert pd.Timestamp(second.views[0]["start"]) == pd.Timestamp(mid)
    # Naive datetimes and ISO strings are UTC.
    naive = (END - timedelta(hours=1)).replace(tzinfo=None)
    again = store.materialize(naive, END.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert again.entities_written == len(DRIVERS)
    with pytest.raises(fs.InvalidArgumentError):
        store.materialize("yesterday", END)


def test_redis_online_store(tmp_path, redis_server):
    online = f"  type: redis\n  connection_string: \"127.0.0.1:{redis_server.port}\""
    repo = make_repo(tmp_path / "redis_repo", project="py_redis", online=online)
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply(list(definitions()))
    store.materialize(END - timedelta(days=3), END)
    resp = store.get_online_features(FEATURES, [{"driver_id": d} for d in DRIVERS + [9999]])
    assert resp.event_timestamps()["avg_daily_trips"] == [END] * 5 + [None]
    assert resp.statuses()["avg_daily_trips"][-1] == "NOT_FOUND"


def test_unreachable_redis_is_store_unavailable(tmp_path):
    from conftest import free_port

    online = f"  type: redis\n  connection_string: \"127.0.0.1:{free_port()}\"\n  connect_timeout: 300ms\n  retries: 0"
    repo = make_repo(tmp_path / "down", project="down", online=online)
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply(list(definitions()))
    with pytest.raises(fs.StoreUnavailableError) as e:
        store.get_online_features(FEATURES, [{"driver_id": 1001}])
    assert isinstance(e.value, ConnectionError)
    assert e.value.transient
    # Nothing was half-written: the watermark did not move after a failed materialization.
    with pytest.raises(fs.StoreUnavailableError):
        store.materialize_incremental(END)
    state = [d for d in store.describe("driver_hourly_stats") if d["kind"] == "feature_view"][0]["state"]
    assert state.get("watermark") is None


def test_nan_and_infinities_keep_their_meaning(store):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    import pyarrow as pa

    # Arrow keeps NaN as a value (pandas would read it as missing).
    rows = pa.table(
        {
            "driver_id": pa.array([1001, 1002, 1003], pa.int64()),
            "event_timestamp": pa.array([now] * 3, pa.timestamp("us", tz="UTC")),
            "created": pa.array([now] * 3, pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array([float("nan"), float("inf"), float("-inf")], pa.float32()),
            "acc_rate": pa.array([0.1, 0.2, 0.3], pa.float32()),
            "avg_daily_trips": pa.array([1, 2, 3], pa.int64()),
        }
    )
    store.push("driver_hourly_stats", rows)
    resp = store.get_online_features(["driver_hourly_stats:conv_rate"], {"driver_id": [1001, 1002, 1003]})
    d = resp.to_dict()["conv_rate"]
    assert d[0] != d[0] and d[1] == float("inf") and d[2] == float("-inf")
    assert resp.statuses()["conv_rate"] == ["PRESENT"] * 3
    body = json.loads(resp.to_json())  # strict JSON: no bare NaN
    assert body["results"][1]["values"] == ["NaN", "Infinity", "-Infinity"]
