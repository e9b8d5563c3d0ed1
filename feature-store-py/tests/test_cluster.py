"""Historical retrieval and materialization on an Apache DataFusion Ballista cluster from Python:
`FeatureStore(config=...)` with `offline_store: {engine: ballista, scheduler: ...}`
against the local engine, on a `feature-store cluster local` process (the CLI
binary the test script builds beside the extension)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

import feature_store as fs
from conftest import definitions, free_port, make_repo
from test_historical import FEATURES, entity_df

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("FEATURE_STORE_BIN", ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "feature-store"))


@pytest.fixture(scope="module")
def cluster():
    assert BINARY.is_file(), f"{BINARY} not found: scripts/test.sh builds it (or set FEATURE_STORE_BIN)"
    port = free_port()
    proc = subprocess.Popen(
        [str(BINARY), "cluster", "local", "--executors", "2", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, f"feature-store cluster local exited with {proc.returncode}"
            assert time.time() < deadline, "the cluster did not listen within 60 s"
            time.sleep(0.1)
    yield f"df://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def config(scheduler: str) -> dict:
    return {
        "project": "quickstart",
        "registry": "data/registry.json",
        "online_store": {"type": "sqlite", "path": "data/online.db"},
        "offline_store": {"engine": "ballista", "scheduler": scheduler, "partitions": 3},
    }


def test_cluster_retrieval_equals_the_local_engine(tmp_path, cluster):
    repo = make_repo(tmp_path / "repo")
    local = fs.FeatureStore(repo_path=str(repo))
    local.apply(list(definitions()))
    entity = entity_df()
    expected = local.get_historical_features(entity_df=entity, features=FEATURES).to_arrow()

    remote = fs.FeatureStore(repo_path=str(repo), config=config(cluster))
    got = remote.get_historical_features(entity_df=entity, features=FEATURES).to_arrow()
    assert got.equals(expected)
    # Polars in: the same rows.
    got = remote.get_historical_features(entity_df=pl.from_pandas(entity), features=FEATURES).to_arrow()
    assert got.equals(expected)


def test_cluster_materialization_equals_the_local_engine(tmp_path, cluster):
    repo = make_repo(tmp_path / "repo")
    local = fs.FeatureStore(repo_path=str(repo))
    local.apply(list(definitions()))
    start, end = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)
    local.materialize(start, end)
    settings = config(cluster)
    settings["online_store"]["path"] = "data/online_cluster.db"
    remote = fs.FeatureStore(repo_path=str(repo), config=settings)
    remote.materialize(start, end)
    rows = [{"driver_id": d} for d in (1001, 1002, 1003, 1009)]
    expected = local.get_online_features(features=FEATURES, entity_rows=rows).to_dict()
    assert expected["conv_rate"][0] is not None
    assert remote.get_online_features(features=FEATURES, entity_rows=rows).to_dict() == expected


def test_unreachable_scheduler_is_named(tmp_path):
    repo = make_repo(tmp_path / "repo")
    local = fs.FeatureStore(repo_path=str(repo))
    local.apply(list(definitions()))
    address = f"df://127.0.0.1:{free_port()}"
    remote = fs.FeatureStore(repo_path=str(repo), config=config(address))
    with pytest.raises(fs.StoreUnavailableError) as e:
        remote.get_historical_features(entity_df=entity_df(), features=FEATURES).to_arrow()
    assert address in str(e.value)
