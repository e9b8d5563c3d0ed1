#!/usr/bin/env python3
"""Records what Feast 0.67's own feature server (`feast serve`) answers to
the requests in requests.json, over the data in driver_stats.parquet, into
feast_server_responses.json. tests/e2e/server.rs sends the same requests to
this project's server over the same data and compares field by field.

Run with a Feast venv (python3 -m venv .venv-feast && .venv-feast/bin/pip
install "feast[redis]==0.67.0"):

    .venv-feast/bin/python tests/golden/feast_server.py

The data file is rewritten only with --data (it is committed, and the Rust
test reads it)."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "driver_stats.parquet"


def write_data():
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    ids, ts, created, conv, acc, trips, name = [], [], [], [], [], [], []
    for d in (1001, 1002, 1003):
        for h in range(4):
            ids.append(d)
            ts.append(t0 + timedelta(hours=h, seconds=d - 1000))
            created.append(t0 + timedelta(hours=h, minutes=5))
            conv.append((d - 1000) / 10 + h / 100)
            acc.append(None if (d == 1002 and h == 3) else d / 1000 + h / 7)
            trips.append(h * 10 + d - 1000)
            name.append(f"driver-{d}-{h}")
    table = pa.table({
        "driver_id": pa.array(ids, pa.int64()),
        "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "created": pa.array(created, pa.timestamp("us", tz="UTC")),
        "conv_rate": pa.array(conv, pa.float32()),
        "acc_rate": pa.array(acc, pa.float64()),
        "avg_daily_trips": pa.array(trips, pa.int64()),
        "name": pa.array(name, pa.string()),
    })
    pq.write_table(table, DATA)


REPO = '''
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(name="driver_stats_source", path="{data}", timestamp_field="event_timestamp",
                    created_timestamp_column="created")
driver_stats = FeatureView(
    name="driver_stats", entities=[driver], ttl=timedelta(0), online=True, source=source,
    schema=[Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float64),
            Field(name="avg_daily_trips", dtype=Int64), Field(name="name", dtype=String)],
)
activity = FeatureService(name="driver_activity", features=[driver_stats[["conv_rate", "avg_daily_trips"]]])
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    if "--data" in sys.argv or not DATA.exists():
        write_data()
    requests = json.loads((HERE / "requests.json").read_text())
    feast = Path(sys.executable).parent / "feast"
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d)
        (repo / "feature_store.yaml").write_text(
            "project: golden\nregistry: data/registry.db\nprovider: local\n"
            "online_store: {type: sqlite, path: data/online.db}\nentity_key_serialization_version: 3\n"
        )
        (repo / "data").mkdir()
        (repo / "repo.py").write_text(REPO.format(data=DATA))
        env = {**os.environ, "FEAST_USAGE": "False"}
        subprocess.run([str(feast), "apply"], cwd=repo, check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run([str(feast), "materialize", "2023-12-31T00:00:00", "2024-01-02T00:00:00"],
                       cwd=repo, check=True, env=env, stdout=subprocess.DEVNULL)
        port = free_port()
        server = subprocess.Popen([str(feast), "serve", "-p", str(port), "--workers", "1"], cwd=repo, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/health", timeout=1)
                    break
                except Exception:
                    time.sleep(0.1)
            out = []
            for r in requests:
                status, text = post(base + r["path"], r["body"])
                try:
                    body = json.loads(text)
                except ValueError:
                    body = text
                out.append({"name": r["name"], "status": status, "body": body})
        finally:
            server.terminate()
            server.wait(timeout=30)
    (HERE / "feast_server_responses.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(out)} answers of Feast's server")


if __name__ == "__main__":
    main()
