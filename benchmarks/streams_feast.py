"""Feast 0.67's documented path for stream features, as a user would write
it: a consumer of the Redis stream that turns each batch into a DataFrame
and calls `store.push(push_source, df, to=PushMode.ONLINE)` into Feast's
Redis online store, acknowledging the batch after the push.

Usage: streams_feast.py DIR REDIS_PORT STREAM_KEY N SEED_PARQUET
Prints one JSON line: events/s over the N events.
"""

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource
from feast.data_source import PushMode
from feast.types import Float64
from feast.value_type import ValueType

root, port, key, n, seed = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
root.mkdir(parents=True, exist_ok=True)
(root / "feature_store.yaml").write_text(
    f"""project: streambench
registry: {root / "registry.db"}
provider: local
online_store:
  type: redis
  connection_string: "127.0.0.1:{port}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""
)
store = FeatureStore(repo_path=str(root))
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
batch = FileSource(name="tx_batch", path=seed, timestamp_field="event_timestamp")
push = PushSource(name="tx_push", batch_source=batch)
view = FeatureView(
    name="user_stream",
    entities=[user],
    ttl=timedelta(days=1),
    schema=[Field(name=f"f{i}", dtype=Float64) for i in range(10)],
    source=push,
    online=True,
)
store.apply([user, batch, push, view])

r = redis.Redis(port=port)
try:
    r.xgroup_create(key, "feast", id="0")
except redis.ResponseError:
    pass
done = 0
started = time.perf_counter()
while done < n:
    reply = r.xreadgroup("feast", "c", {key: ">"}, count=2000, block=2000)
    if not reply:
        raise SystemExit(f"the stream ran dry after {done} of {n}")
    entries = reply[0][1]
    rows = [json.loads(fields[b"data"]) for _, fields in entries]
    df = pd.DataFrame(rows)
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    store.push("tx_push", df, to=PushMode.ONLINE)
    r.xack(key, "feast", *[i for i, _ in entries])
    done += len(entries)
secs = time.perf_counter() - started
print(json.dumps({"consumed": done, "seconds": secs, "events_per_s": done / secs}))
