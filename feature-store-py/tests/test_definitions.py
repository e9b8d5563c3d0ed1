"""Definitions in Python are the registry's objects: apply, plan, list, and
the same objects from YAML files."""

from __future__ import annotations

from datetime import timedelta

import pytest

import feature_store as fs
from conftest import definitions, make_repo


def test_apply_then_list_gives_the_same_objects(store):
    driver, source, view, service = definitions()
    [e] = store.list_entities()
    assert e.name == "driver" and e.join_keys == ["driver_id"]
    assert e.value_type == fs.Int64  # inferred from the source on apply
    [s] = store.list_data_sources()
    assert s == source
    [v] = store.list_feature_views()
    assert v.name == view.name
    assert v.ttl == timedelta(days=1)
    assert [f.name for f in v.features] == ["conv_rate", "acc_rate", "avg_daily_trips"]
    assert v.features[0].dtype == fs.Float32
    assert v.entities == ["driver"]
    assert v.tags == {"team": "driver_performance"}
    assert v.source == source
    assert v.created_timestamp is not None and v.last_updated_timestamp is not None
    [svc] = store.list_feature_services()
    assert svc.refs() == ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]
    assert store.get_feature_view("driver_hourly_stats").name == "driver_hourly_stats"
    with pytest.raises(fs.NotFoundError):
        store.get_feature_view("nope")


def test_apply_is_idempotent_and_plan_reports_changes(store):
    driver, source, view, service = definitions()
    again = store.apply([driver, source, view, service])
    assert not again.written and not again.changes
    shorter = fs.FeatureView(name=view.name, entities=[driver], ttl=timedelta(hours=2), schema=view.schema, source=source)
    plan = store.plan([shorter])
    assert [c["name"] for c in plan.changes] == ["driver_hourly_stats"]
    assert "ttl" in str(plan)
    changed = fs.FeatureView(
        name=view.name,
        entities=[driver],
        ttl=timedelta(hours=2),
        schema=view.schema + [fs.Field(name="extra", dtype=fs.Array(fs.Float32))],
        source=source,
    )
    # The source has no column "extra": the apply fails and changes nothing.
    with pytest.raises(fs.DefinitionError) as e:
        store.apply([changed])
    assert any("extra" in msg for _, _, msg in e.value.problems)
    assert isinstance(e.value, ValueError)
    assert store.get_feature_view(view.name).ttl == timedelta(days=1)


def test_partial_apply_keeps_other_objects_and_full_apply_removes_them(store):
    driver, source, view, service = definitions()
    small = fs.FeatureView(name="trips_only", entities=[driver], schema=[fs.Field(name="avg_daily_trips", dtype=fs.Int64)],
                           source=source)
    store.apply([small])
    assert sorted(v.name for v in store.list_feature_views()) == ["driver_hourly_stats", "trips_only"]
    outcome = store.apply([driver, source, small], partial=False)
    assert outcome.written
    assert [v.name for v in store.list_feature_views()] == ["trips_only"]
    assert store.list_feature_services() == []


def test_yaml_defined_objects_are_the_same(tmp_path):
    repo = make_repo(tmp_path / "yaml_repo")
    (repo / "features.yaml").write_text(
        """
entities:
  - name: driver
    join_keys: [driver_id]
sources:
  - name: driver_stats_source
    path: data/driver_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_field: created
feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    source: driver_stats_source
    ttl: 1d
    schema:
      - {name: conv_rate, dtype: float32}
      - {name: acc_rate, dtype: float32}
      - {name: avg_daily_trips, dtype: int64}
    tags: {team: driver_performance}
feature_services:
  - name: driver_activity_v1
    features: [driver_hourly_stats:conv_rate, driver_hourly_stats:avg_daily_trips]
"""
    )
    store = fs.FeatureStore(repo_path=str(repo))
    assert store.apply().written  # no objects: the repo's YAML files
    # Applying the same objects from Python changes nothing.
    again = store.apply(list(definitions()))
    assert not again.written, again.changes


def test_config_dict_and_types(tmp_path):
    repo = make_repo(tmp_path / "cfg")
    store = fs.FeatureStore(
        repo_path=str(repo),
        config={"project": "from_dict", "registry": "data/registry.json", "online_store": {"type": "memory"}},
    )
    assert store.project == "from_dict"
    assert store.config["online_store"]["type"] == "memory"
    e = fs.Entity(name="user", value_type=fs.ValueType.STRING)
    assert e.join_keys == ["user"] and e.value_type == fs.String
    assert str(fs.Array(fs.Int64)) == "list<int64>"
    # Python's type names come from the library's one type table.
    from feature_store import _internal, types

    assert len(_internal.scalar_types()) == 8
    for name, feast_name in _internal.scalar_types():
        assert str(getattr(types, feast_name)) == name
        assert types.from_name(name) is getattr(types, feast_name)
        assert types.from_name(f"list<{name}>") == fs.Array(getattr(types, feast_name))
    with pytest.raises(TypeError):
        fs.Array(fs.Array(fs.Int64))
    with pytest.raises(TypeError):
        fs.Field(name="x", dtype="int64")
    with pytest.raises(ValueError):
        fs.FeatureView(name="v", source=fs.FileSource(path="a.parquet"), ttl=timedelta(seconds=-1))
    assert fs.FileSource(path="data/driver_stats.parquet").name == "driver_stats"
    with pytest.raises(TypeError, match="cannot apply"):
        store.apply([object()])


def test_definition_errors_list_every_problem(store):
    driver, source, view, service = definitions()
    bad_view = fs.FeatureView(name="bad", entities=["ghost"], schema=[fs.Field(name="nope", dtype=fs.Int64)], source=source)
    bad_service = fs.FeatureService(name="svc", features=["missing_view:x"])
    with pytest.raises(fs.DefinitionError) as e:
        store.apply([bad_view, bad_service])
    text = str(e.value)
    assert "ghost" in text and "nope" in text and "missing_view" in text
    assert len(e.value.problems) >= 3


def test_apply_warns_about_a_later_unreadable_file_of_a_folder_source(repo):
    (repo / "data" / "stats").mkdir()
    (repo / "data" / "driver_stats.parquet").rename(repo / "data" / "stats" / "a.parquet")
    (repo / "data" / "stats" / "b.parquet").write_bytes(b"cut short, not parquet")
    driver, _, view, _ = definitions()
    folder = fs.FileSource(name="driver_stats_source", path="data/stats/", timestamp_field="event_timestamp")
    view = fs.FeatureView(name=view.name, entities=[driver], ttl=view.ttl, schema=view.schema, source=folder)
    store = fs.FeatureStore(repo_path=str(repo))
    with pytest.warns(UserWarning, match=r"b\.parquet: not a readable Parquet file") as caught:
        result = store.apply([driver, folder, view])
    assert result.written and len(caught) == 1
    assert result.warnings == [str(caught[0].message)]
    assert str(caught[0].message).startswith('data source "driver_stats_source" (data/stats/): ')
    assert str(result).startswith("warning: ")
