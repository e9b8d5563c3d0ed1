"""Saved datasets and reference profiles from Python."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

import feature_store as fs
from conftest import END, definitions, driver_stats_table

FEATURES = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]


def entity_df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": [1001, 1002, 1003, 1001],
            "event_timestamp": [END - timedelta(hours=h) for h in (1, 5, 30, 2)],
        }
    )


def test_save_as_records_a_manifest_and_verifies(store, repo):
    job = store.get_historical_features(entity_df(), FEATURES, save_as="train_v1")
    assert isinstance(job, fs.SavedDataset)
    df = job.to_df()
    fresh = store.get_historical_features(entity_df(), FEATURES).to_df()
    pd.testing.assert_frame_equal(df, fresh)
    assert job.manifest["output"]["rows"] == 4
    assert job.manifest["entity_table"]["origin"] == "Arrow batches"
    assert "data/datasets/quickstart/train_v1/" in job.location and job.location.endswith("/data.parquet")
    assert job.feature_names == ["conv_rate", "avg_daily_trips"]

    again = store.get_saved_dataset("train_v1")
    pd.testing.assert_frame_equal(again.to_df(), df)
    assert [d.name for d in store.list_saved_datasets()] == ["train_v1"]
    result = again.verify()
    assert result["identical"], result["text"]
    assert "bit-identical" in result["text"]

    with pytest.raises(fs.InvalidArgumentError, match="already exists"):
        store.get_historical_features(entity_df(), FEATURES, save_as="train_v1")
    with pytest.raises(fs.NotFoundError, match="dataset \"train_v2\" not found"):
        store.get_saved_dataset("train_v2")

    # Rewriting the source with other values: the file and the recomputed output differ.
    table = driver_stats_table()
    table = table.set_column(3, "conv_rate", pa_float32([v * 2 for v in table.column("conv_rate").to_pylist()]))
    pq.write_table(table, repo / "data" / "driver_stats.parquet")
    result = store.verify_dataset("train_v1")
    assert not result["identical"]
    kinds = [f["kind"] for f in result["findings"]]
    assert kinds == ["source_file", "recomputed"], result["text"]


def pa_float32(values):
    import pyarrow as pa

    return pa.array(values, pa.float32())


def test_save_to_a_path(store, tmp_path):
    out = tmp_path / "train.parquet"
    job = store.get_historical_features(entity_df(), FEATURES, save_as="to_path", save_to=out)
    assert out.exists()
    assert pq.read_table(out).num_rows == 4
    assert job.location.endswith("train.parquet")
    out2 = store.delete_saved_dataset("to_path")
    assert out.exists() and out2["kept"] == [job.location]
    assert len(out2["deleted"]) == 2  # manifest and entity copy
    with pytest.raises(fs.NotFoundError):
        store.get_saved_dataset("to_path")
    with pytest.raises(fs.InvalidArgumentError, match="already exists"):
        store.get_historical_features(entity_df(), FEATURES, save_as="again", save_to=out)
    with pytest.raises(fs.InvalidArgumentError, match="written as Parquet"):
        store.get_historical_features(entity_df(), FEATURES, save_as="csv", save_to=tmp_path / "x.csv")
    with pytest.raises(fs.InvalidArgumentError, match="give save_as"):
        store.get_historical_features(entity_df(), FEATURES, save_to=tmp_path / "y.parquet")


def test_profile_and_drift_rule(repo):
    driver, source, view, _ = definitions()
    store = fs.FeatureStore(repo_path=str(repo))
    drifting = fs.FeatureView(name=view.name, entities=[driver], source=source, ttl=view.ttl, schema=view.schema,
                              validation={"drift": {"method": "psi", "threshold": 0.2, "features": ["acc_rate"]}})
    store.apply([drifting])
    first, second = (END - timedelta(hours=71), END - timedelta(hours=36)), (END - timedelta(hours=35), END)
    profile = store.profile(view.name, *first)
    assert profile["rows"] == 5 * 36
    acc = profile["features"]["acc_rate"]
    assert acc["count"] == 180 and acc["nulls"] == 0
    assert len(acc["histogram"]["counts"]) == len(acc["histogram"]["cuts"]) + 1
    # acc_rate = hour/100 grows with time: the later window has moved entirely.
    [report] = store.validate([view.name], *second)
    drift = [r for r in report["results"] if r["rule"] == "drift"]
    assert [(r["feature"], r["passed"]) for r in drift] == [("acc_rate", False)], report
    [same] = store.validate([view.name], *first)
    assert all(r["passed"] for r in same["results"]), same
    with pytest.raises(fs.ValidationError, match="drift acc_rate"):
        store.materialize(*second)
