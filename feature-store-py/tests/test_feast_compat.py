"""Feast habits that must keep working, and the fixes they needed."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_store as fs
from conftest import END, definitions, make_repo


def test_feast_yaml_keys_are_accepted(tmp_path):
    repo = make_repo(tmp_path / "r")
    text = (repo / "feature_store.yaml").read_text()
    # What `feast init` writes, auth block included.
    (repo / "feature_store.yaml").write_text(
        text + "provider: local\nentity_key_serialization_version: 3\nauth:\n  type: no_auth\n"
    )
    assert fs.FeatureStore(repo_path=str(repo)).project == "quickstart"
    (repo / "feature_store.yaml").write_text(text + "auth:\n  type: oidc\n")
    with pytest.raises(fs.ConfigError, match="auth type \"oidc\" is not supported"):
        fs.FeatureStore(repo_path=str(repo))
    (repo / "feature_store.yaml").write_text(text + "provider: gcp\n")
    with pytest.raises(fs.ConfigError, match="provider"):
        fs.FeatureStore(repo_path=str(repo))


def test_join_key_in_schema_declares_the_key(repo):
    driver, source, _, _ = definitions()
    view = fs.FeatureView(
        name="with_key",
        entities=[driver],
        schema=[fs.Field(name="driver_id", dtype=fs.Int64), fs.Field(name="conv_rate", dtype=fs.Float32)],
        source=source,
    )
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply([view])
    assert [f.name for f in store.get_feature_view("with_key").features] == ["conv_rate"]
    assert not store.apply([view]).written  # stable across applies
    wrong = fs.FeatureView(name="wrong_key", entities=[driver], source=source,
                           schema=[fs.Field(name="driver_id", dtype=fs.String), fs.Field(name="conv_rate", dtype=fs.Float32)])
    with pytest.raises(fs.DefinitionError, match="driver_id"):
        store.apply([wrong])


def test_inferred_schema_rejects_column_names_that_are_not_feature_names(tmp_path):
    repo = make_repo(tmp_path / "r")
    pq.write_table(pa.table({"driver_id": [1], "event_timestamp": pa.array([END], pa.timestamp("us", tz="UTC")),
                             "Rate Raw": [0.5]}), repo / "data" / "odd.parquet")
    store = fs.FeatureStore(repo_path=str(repo))
    driver, *_ = definitions()
    odd = fs.FeatureView(name="odd", entities=[driver], source=fs.FileSource(path="data/odd.parquet"))
    with pytest.raises(fs.DefinitionError, match="Rate Raw"):
        store.apply([odd])
    # Nothing was stored, so later applies are unaffected.
    store.apply(list(definitions()))


def test_views_without_entities_are_served_with_empty_rows(tmp_path):
    repo = make_repo(tmp_path / "r")
    pq.write_table(pa.table({"event_timestamp": pa.array([END - timedelta(hours=1), END], pa.timestamp("us", tz="UTC")),
                             "demand": pa.array([1.5, 2.5])}), repo / "data" / "global.parquet")
    store = fs.FeatureStore(repo_path=str(repo))
    view = fs.FeatureView(name="global_stats", source=fs.FileSource(path="data/global.parquet"), ttl=timedelta(days=2))
    store.apply([view])
    store.materialize(END - timedelta(days=1), END)
    resp = store.get_online_features(["global_stats:demand"], [{}, {}])
    assert resp.to_dict() == {"demand": [2.5, 2.5]}
    with pytest.raises(fs.InvalidArgumentError, match="no entities"):
        store.get_online_features(["global_stats:demand"], [{"driver_id": 1}])


def test_online_to_dict_with_event_timestamps_and_categorical_keys(store):
    store.materialize(END - timedelta(days=1), END)
    rows = pd.DataFrame({"driver_id": [1001, 4242]})
    d = store.get_online_features(["driver_hourly_stats:conv_rate"], rows).to_dict(include_event_timestamps=True)
    assert d["conv_rate__ts"] == [int(END.timestamp()), None]
    df = store.get_online_features(["driver_hourly_stats:conv_rate"], rows).to_df(include_event_timestamps=True)
    assert list(df.columns) == ["driver_id", "conv_rate", "conv_rate__ts"]


def test_categorical_string_keys_read_back_in_to_dict(tmp_path):
    repo = make_repo(tmp_path / "r")
    pq.write_table(pa.table({"user": ["a", "b"], "event_timestamp": pa.array([END, END], pa.timestamp("us", tz="UTC")),
                             "score": [1, 2]}), repo / "data" / "users.parquet")
    store = fs.FeatureStore(repo_path=str(repo))
    user = fs.Entity(name="user")
    store.apply([fs.FeatureView(name="users", entities=[user], source=fs.FileSource(path="data/users.parquet"))])
    store.materialize(END - timedelta(hours=1), END)
    rows = pd.DataFrame({"user": pd.Categorical(["b", "a", "b"])})
    d = store.get_online_features(["users:score"], rows).to_dict()
    assert d == {"user": ["b", "a", "b"], "score": [2, 1, 2]}
    assert '"b"' in store.get_online_features(["users:score"], rows).to_json()


def test_small_conveniences(store):
    assert store.config.project == "quickstart"
    assert store.config.online_store.type == "sqlite"
    assert [v.name for v in store.list_feature_views(tags={"team": "driver_performance"})] == ["driver_hourly_stats"]
    assert store.list_feature_views(tags={"team": "other"}) == []
    store.refresh_registry()
    v = store.get_feature_view("driver_hourly_stats")
    assert v.batch_source.name == "driver_stats_source"
    assert fs.Entity(name="driver", join_key="driver_id").join_keys == ["driver_id"]
    assert fs.FileSource(path="x.parquet", event_timestamp_column="ts").timestamp_field == "ts"
    with pytest.raises(ValueError, match="milliseconds"):
        fs.FeatureView(name="v", source=fs.FileSource(path="a.parquet"), ttl=timedelta(microseconds=500))


def test_reference_without_colon_hints_at_the_format(store):
    with pytest.raises(fs.NotFoundError, match='write "driver_hourly_stats:conv_rate"'):
        store.get_historical_features(pd.DataFrame({"driver_id": [1001], "event_timestamp": [END]}), ["conv_rate"])
    with pytest.raises(fs.NotFoundError, match="view:feature"):
        store.get_historical_features(pd.DataFrame({"driver_id": [1001], "event_timestamp": [END]}), ["no_such_thing"])


def test_push_refuses_null_keys_and_times(store):
    rows = pd.DataFrame({"driver_id": pd.array([1001, None], dtype="Int64"), "event_timestamp": [END, END],
                         "conv_rate": pd.Series([0.1, 0.2], dtype="float32"),
                         "acc_rate": pd.Series([0.1, 0.2], dtype="float32"), "avg_daily_trips": [1, 2]})
    with pytest.raises(fs.DataError, match="row 1 has a null join key"):
        store.write_to_online_store("driver_hourly_stats", rows)
    rows = rows.assign(driver_id=[1001, 1002], event_timestamp=[END, None])
    with pytest.raises(fs.DataError, match="null event timestamp"):
        store.push("driver_hourly_stats", rows)


def test_validation_rules_gate_materialization(repo):
    driver, source, view, _ = definitions()
    # conv_rate = driver - 1000 + hour/1000: [0, 1] holds for driver 1000 only.
    strict = fs.FeatureView(name=view.name, entities=[driver], source=source, ttl=view.ttl, schema=view.schema,
                            validation={"ranges": {"conv_rate": [0.0, 1.0]}, "max_null_fraction": {"*": 0.0}})
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply([strict])
    assert store.get_feature_view(view.name).validation["ranges"] == {"conv_rate": [0.0, 1.0]}
    [report] = store.validate([view.name], END - timedelta(days=1), END)
    failed = [r for r in report["results"] if not r["passed"]]
    assert [(r["rule"], r["feature"]) for r in failed] == [("ranges", "conv_rate")]
    assert failed[0]["samples"]
    with pytest.raises(fs.ValidationError, match="ranges conv_rate") as e:
        store.materialize(END - timedelta(days=1), END)
    assert e.value.report.failed_views[0]["view"] == view.name
    resp = store.get_online_features(["driver_hourly_stats:conv_rate"], [{"driver_id": 1001}])
    assert resp.statuses()["conv_rate"] == ["NOT_FOUND"]  # nothing was written
