"""`FeatureStore.ingest` from a real redis-server stream: blocking until idle
and in the background, with the records' effects online, in the offline
log and in the dead letters."""

import json
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_store as fs


def xadd(port: int, key: str, records: list) -> None:
    """XADD each record (a dict, or raw text) as the entry's `data` field, on one connection."""
    req = b""
    for r in records:
        body = (r if isinstance(r, str) else json.dumps(r)).encode()
        parts = [b"XADD", key.encode(), b"*", b"data", body]
        req += b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(req)
        got = b""
        while got.count(b"\r\n") < 2 * len(records):
            got += c.recv(65536)
    assert b"-ERR" not in got, got


def make_repo(root: Path, port: int, key: str) -> Path:
    (root / "data" / "tx").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1000], pa.int64()),
                "event_timestamp": pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC")),
                "amount": pa.array([1.0]),
            }
        ),
        root / "data" / "tx" / "seed.parquet",
    )
    (root / "feature_store.yaml").write_text(
        "project: shop\nregistry: data/registry.json\nonline_store: {type: sqlite, path: data/online.db}\n"
    )
    (root / "defs.yaml").write_text(
        f"""entities:
  - {{name: user, join_keys: [user_id]}}
sources:
  - {{name: transactions, path: data/tx, timestamp_field: event_timestamp}}
  - name: transactions_stream
    kind: redis_stream
    connection_string: "127.0.0.1:{port}"
    key: {key}
    timestamp_field: event_timestamp
    batch_source: transactions
feature_views:
  - name: user_last
    entities: [user]
    source: transactions_stream
    schema: [{{name: amount, dtype: float64}}]
  - name: user_stats
    entities: [user]
    source: transactions_stream
    aggregation_interval: 1h
    aggregations: [{{function: sum, column: amount, window: 1d}}]
"""
    )
    return root


def events(n: int, start: datetime) -> list:
    return [
        {"user_id": i % 3 + 1, "event_timestamp": (start + timedelta(minutes=i)).isoformat(), "amount": float(i)}
        for i in range(n)
    ]


def test_ingest_until_idle_reaches_online_offline_and_dead_letters(tmp_path, redis_server):
    repo = make_repo(tmp_path, redis_server.port, "tx_blocking")
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply()
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    evs = events(60, start)
    xadd(redis_server.port, "tx_blocking", evs + ['{"user_id": "x", "event_timestamp": 0}', "not json"])

    stats = store.ingest(stop_when_idle=1.5, offline_flush_interval=0.2)

    assert [(s["source"], s["received"], s["ingested"], s["dead_lettered"]) for s in stats] == [
        ("transactions_stream", 62, 60, 2)
    ]
    assert stats[0]["offline_rows"] == 60 and stats[0]["committed"] == 62
    online = store.get_online_features(
        ["user_last:amount", "user_stats:amount_sum_1d"], [{"user_id": u} for u in (1, 2, 3)]
    ).to_dict()
    assert online["amount"] == [57.0, 58.0, 59.0]
    assert online["amount_sum_1d"] == [sum(float(i) for i in range(60) if i % 3 == u) for u in range(3)]
    logged = pa.concat_tables(
        [pq.read_table(p) for p in (repo / "data" / "tx").glob("ingest-*.parquet")]
    ).sort_by("amount")
    assert logged["amount"].to_pylist() == [float(i) for i in range(60)]
    letters = [json.loads(line) for line in (repo / "dead_letter" / "transactions_stream.jsonl").read_text().splitlines()]
    assert [l["record"] for l in letters] == [{"user_id": "x", "event_timestamp": 0}, "not json"]
    assert "not int64" in letters[0]["reason"] and "malformed JSON" in letters[1]["reason"]


def test_ingest_in_the_background_and_stop(tmp_path, redis_server):
    repo = make_repo(tmp_path, redis_server.port, "tx_background")
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply()
    with store.ingest(offline_flush_interval=timedelta(milliseconds=200), background=True) as ingestion:
        assert ingestion.running()
        start = datetime.now(timezone.utc) - timedelta(hours=2)
        xadd(redis_server.port, "tx_background", events(9, start))
        deadline = time.time() + 30
        while time.time() < deadline:
            got = store.get_online_features(["user_last:amount"], [{"user_id": 3}]).to_dict()["amount"]
            if got == [8.0]:
                break
            time.sleep(0.05)
        assert got == [8.0]
        stats = ingestion.stop()
    assert not ingestion.running()
    assert stats[0]["ingested"] == 9 and stats[0]["committed"] == 9
    with pytest.raises(RuntimeError, match="already stopped"):
        ingestion.stop()


def test_ingest_without_stream_sources_says_what_to_define(tmp_path):
    (tmp_path / "feature_store.yaml").write_text("project: empty\nregistry: data/registry.json\n")
    store = fs.FeatureStore(repo_path=str(tmp_path))
    with pytest.raises(Exception, match="no feature view over a stream source"):
        store.ingest(stop_when_idle=0.5)
