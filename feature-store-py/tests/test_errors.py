"""The exception hierarchy and its messages."""

from __future__ import annotations

import pytest

import feature_store as fs
from conftest import make_repo


def test_hierarchy():
    for cls, builtin in [
        (fs.DefinitionError, ValueError),
        (fs.ConfigError, ValueError),
        (fs.NotFoundError, LookupError),
        (fs.InvalidArgumentError, ValueError),
        (fs.DataError, ValueError),
        (fs.StoreUnavailableError, ConnectionError),
        (fs.UnsupportedError, NotImplementedError),
        (fs.BackendError, OSError),
    ]:
        assert issubclass(cls, fs.FeatureStoreError)
        assert issubclass(cls, builtin)
    assert issubclass(fs.ConflictError, fs.FeatureStoreError)
    assert issubclass(fs.CorruptRegistryError, fs.FeatureStoreError)


def test_config_errors_name_the_key(tmp_path):
    repo = make_repo(tmp_path / "r")
    with pytest.raises(fs.ConfigError, match="online_store"):
        fs.FeatureStore(repo_path=str(repo), config={"project": "p", "registry": "r.json", "online_store": {"type": "nosql"}})
    with pytest.raises(fs.ConfigError):
        fs.FeatureStore(repo_path=str(repo), config={"project": "p", "registry": "r.json", "onlin_store": {}})
    with pytest.raises(fs.FeatureStoreError, match="feature_store.yaml") as e:
        fs.FeatureStore(repo_path=str(tmp_path / "missing"))
    # Python users get no command-line advice.
    assert "--repo" not in str(e.value) and "feature-store init" not in str(e.value)


def test_corrupt_registry(store, repo):
    (repo / "data" / "registry.json").write_text("{ not json")
    fresh = fs.FeatureStore(repo_path=str(repo))
    with pytest.raises(fs.CorruptRegistryError, match="registry"):
        fresh.list_feature_views()


def test_not_found_has_kind_and_name(store):
    with pytest.raises(fs.NotFoundError) as e:
        store.get_historical_features(
            __import__("pandas").DataFrame({"driver_id": [1], "event_timestamp": [__import__("datetime").datetime(2020, 1, 1)]}),
            features=fs.FeatureService(name="no_service", features=[]),
        )
    assert e.value.name == "no_service"
    assert "feature service" in e.value.kind
    with pytest.raises(fs.NotFoundError) as e:
        store.get_feature_view("driver_hourly_stat")
    assert e.value.hint == 'did you mean "driver_hourly_stats"?', e.value.hint
