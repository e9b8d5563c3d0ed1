"""Fixtures: a fresh repo folder with Feast-quickstart-like driver data, and a
real redis-server started on a free port for the Redis tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_store as fs

# The newest hourly row: the last full hour, so online values are within the 1-day ttl.
END = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
DRIVERS = [1001, 1002, 1003, 1004, 1005]
HOURS = 72


def driver_stats_table() -> pa.Table:
    """Hourly rows for each driver over three days; values encode (driver, hour)
    so expected results are computable: conv_rate = (driver - 1000) + hour/1000."""
    ids, ts, created, conv, acc, trips = [], [], [], [], [], []
    for d in DRIVERS:
        for h in range(HOURS):
            t = END - timedelta(hours=HOURS - 1 - h)
            ids.append(d)
            ts.append(t)
            created.append(t + timedelta(minutes=5))
            conv.append((d - 1000) + h / 1000)
            acc.append(h / 100)
            trips.append(h * 10 + (d - 1000))
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "created": pa.array(created, pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array(conv, pa.float32()),
            "acc_rate": pa.array(acc, pa.float32()),
            "avg_daily_trips": pa.array(trips, pa.int64()),
        }
    )


def hour_index(t: datetime) -> int:
    """Index of the latest hourly row at or before t."""
    return HOURS - 1 - int((END - t) // timedelta(hours=1)) if t <= END else HOURS - 1


CONFIG = """\
project: {project}
registry: data/registry.json
online_store:
{online}
"""


def make_repo(root: Path, project: str = "quickstart", online: str = "  type: sqlite\n  path: data/online.db") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(driver_stats_table(), root / "data" / "driver_stats.parquet")
    (root / "feature_store.yaml").write_text(CONFIG.format(project=project, online=online))
    return root


def definitions():
    driver = fs.Entity(name="driver", join_keys=["driver_id"])
    source = fs.FileSource(
        name="driver_stats_source",
        path="data/driver_stats.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    view = fs.FeatureView(
        name="driver_hourly_stats",
        entities=[driver],
        ttl=timedelta(days=1),
        schema=[
            fs.Field(name="conv_rate", dtype=fs.Float32),
            fs.Field(name="acc_rate", dtype=fs.Float32),
            fs.Field(name="avg_daily_trips", dtype=fs.Int64),
        ],
        online=True,
        source=source,
        tags={"team": "driver_performance"},
    )
    service = fs.FeatureService(name="driver_activity_v1", features=[view[["conv_rate", "avg_daily_trips"]]])
    return driver, source, view, service


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def store(repo: Path) -> fs.FeatureStore:
    s = fs.FeatureStore(repo_path=str(repo))
    s.apply(list(definitions()))
    return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own on a free port, in a temp folder."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (scripts/test.sh installs it)")
        self.dir = tempfile.mkdtemp(prefix="fs-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()
