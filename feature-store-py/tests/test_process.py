"""Processes: concurrent applies from many processes, and use after fork."""

from __future__ import annotations

import multiprocessing as mp
from datetime import timedelta

import pytest

import feature_store as fs
from conftest import END, definitions


def _apply_view(repo: str, i: int) -> int:
    store = fs.FeatureStore(repo_path=repo)
    driver, source, _, _ = definitions()
    view = fs.FeatureView(
        name=f"view_{i}", entities=[driver], schema=[fs.Field(name="conv_rate", dtype=fs.Float32)], source=source
    )
    return store.apply([view]).attempts


def test_concurrent_applies_from_processes_all_land(store, repo):
    n = 6
    ctx = mp.get_context("spawn")
    with ctx.Pool(n) as pool:
        attempts = pool.starmap(_apply_view, [(str(repo), i) for i in range(n)])
    fresh = fs.FeatureStore(repo_path=str(repo))  # `store` may serve its cached registry copy
    names = sorted(v.name for v in fresh.list_feature_views())
    assert names == sorted(["driver_hourly_stats"] + [f"view_{i}" for i in range(n)])
    assert all(a >= 1 for a in attempts)


def _read_in_child(store: fs.FeatureStore, queue) -> None:
    try:
        d = store.get_online_features(["driver_hourly_stats:avg_daily_trips"], [{"driver_id": 1002}]).to_dict()
        report = store.materialize(END - timedelta(hours=1), END)
        queue.put((d["avg_daily_trips"], report.entities_written))
    except Exception as e:  # noqa: BLE001 - report to the parent
        queue.put(repr(e))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="fork is not available")
def test_store_works_in_a_forked_child(store):
    store.materialize(END - timedelta(days=1), END)
    # Use the runtime and connections in the parent first, then fork.
    before = store.get_online_features(["driver_hourly_stats:avg_daily_trips"], [{"driver_id": 1002}]).to_dict()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(store, queue))
    child.start()
    result = queue.get(timeout=60)
    child.join(30)
    assert result == (before["avg_daily_trips"], 5), result
    assert child.exitcode == 0
    # The parent still works after the child is gone.
    assert store.get_online_features(["driver_hourly_stats:avg_daily_trips"], [{"driver_id": 1002}]).to_dict() == before


def _read_lmdb_in_child(store: fs.FeatureStore, queue) -> None:
    try:
        store.get_online_features(["driver_hourly_stats:avg_daily_trips"], [{"driver_id": 1002}])
        queue.put("read succeeded")
    except fs.StoreUnavailableError as e:
        queue.put(("StoreUnavailableError", str(e)))
    except Exception as e:  # noqa: BLE001 - report to the parent
        queue.put(repr(e))


def test_lmdb_store_serves_and_refuses_use_across_fork(tmp_path):
    from conftest import make_repo

    repo = make_repo(tmp_path / "lmdb", online="  type: lmdb\n  path: data/online.lmdb")
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply(list(definitions()))
    assert store.config.online_store.type == "lmdb"
    store.materialize(END - timedelta(days=1), END)
    d = store.get_online_features(["driver_hourly_stats:avg_daily_trips"], [{"driver_id": 1002}, {"driver_id": 9}])
    assert d.to_dict()["avg_daily_trips"][1] is None
    assert d.statuses()["avg_daily_trips"] == ["PRESENT", "NOT_FOUND"]
    # A second store object on the same file in the same process shares it.
    other = fs.FeatureStore(repo_path=str(repo))
    assert other.get_online_features(["driver_hourly_stats:avg_daily_trips"], [{"driver_id": 1002}]).to_dict() == {
        "driver_id": [1002],
        "avg_daily_trips": d.to_dict()["avg_daily_trips"][:1],
    }
    if "fork" not in mp.get_all_start_methods():
        return
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_lmdb_in_child, args=(store, queue))
    child.start()
    result = queue.get(timeout=60)
    child.join(30)
    assert result[0] == "StoreUnavailableError" and "fork" in result[1], result
    # The parent is unaffected.
    assert store.get_online_features(["driver_hourly_stats:avg_daily_trips"], [{"driver_id": 1002}]).to_dict() == {
        "driver_id": [1002],
        "avg_daily_trips": d.to_dict()["avg_daily_trips"][:1],
    }
