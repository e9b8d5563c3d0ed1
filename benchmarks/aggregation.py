"""Workload A1: time-window aggregations at entity times (point in time),
this project against DuckDB and Polars on the same Parquet files, each in
its own process; prints wall time, peak RSS, ratios, and whether the three
outputs agree (floats within 1e-9 relative).

  benchmarks/aggregation.sh [EVENTS] [KEYS] [ENTITY_ROWS]   (A1: 10M, 100k, 1M)

Six aggregations over continuous windows, as the issue sets them: sum of
amount over 1h, mean over 7d, events over 30d, max amount over 1d, distinct
merchants over 7d, last amount over 1d. A window of an entity row at t holds
its key's events with t - w < e <= t.
"""
import argparse
import os
import subprocess
import sys

from run import timed

DAY_US = 86_400_000_000

DEFS = """\
entities:
  - {name: user, join_keys: [user_id]}
sources:
  - {name: events, path: data/events.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: user_txn
    entities: [user]
    source: events
    online: false
    aggregations:
      - {column: amount, function: sum, window: 1h, name: amount_sum_1h}
      - {column: amount, function: mean, window: 7d, name: amount_mean_7d}
      - {function: count, window: 30d, name: txn_count_30d}
      - {column: amount, function: max, window: 1d, name: amount_max_1d}
      - {column: merchant, function: count_distinct, window: 7d, name: merchants_7d}
      - {column: amount, function: last, window: 1d, name: amount_last_1d}
"""

FEATURES = "user_txn:amount_sum_1h,user_txn:amount_mean_7d,user_txn:txn_count_30d,user_txn:amount_max_1d,user_txn:merchants_7d,user_txn:amount_last_1d"

# A range join on the longest window, each aggregate filtered to its own
# window; COUNT(ev.event_timestamp) so an unmatched row counts 0; arg_max by
# (time, amount) is the newest value with ties to the larger, as ours.
DUCKDB = r'''
import duckdb, sys
d, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(f"""
COPY (
  SELECT e.row_id,
    SUM(v.amount) FILTER (WHERE v.event_timestamp > e.event_timestamp - INTERVAL 1 HOUR) AS amount_sum_1h,
    AVG(v.amount) FILTER (WHERE v.event_timestamp > e.event_timestamp - INTERVAL 7 DAY) AS amount_mean_7d,
    COUNT(v.event_timestamp) AS txn_count_30d,
    MAX(v.amount) FILTER (WHERE v.event_timestamp > e.event_timestamp - INTERVAL 1 DAY) AS amount_max_1d,
    COUNT(DISTINCT v.merchant) FILTER (WHERE v.event_timestamp > e.event_timestamp - INTERVAL 7 DAY) AS merchants_7d,
    arg_max(v.amount, (v.event_timestamp, v.amount)) FILTER (WHERE v.event_timestamp > e.event_timestamp - INTERVAL 1 DAY AND v.amount IS NOT NULL) AS amount_last_1d
  FROM read_parquet('{d}/data/entities.parquet') e
  LEFT JOIN read_parquet('{d}/data/events.parquet') v
    ON v.user_id = e.user_id AND v.event_timestamp <= e.event_timestamp
   AND v.event_timestamp > e.event_timestamp - INTERVAL 30 DAY
  GROUP BY e.row_id ORDER BY e.row_id
) TO '{out}' (FORMAT parquet)""")
'''

POLARS = r'''
import polars as pl, sys
from datetime import timedelta
d, out = sys.argv[1], sys.argv[2]
e = pl.scan_parquet(f"{d}/data/entities.parquet")
v = pl.scan_parquet(f"{d}/data/events.parquet").rename({"event_timestamp": "ts"})
t = pl.col("event_timestamp")
def within(w):
    return pl.col("ts") > t - w
last_1d = within(timedelta(days=1)) & pl.col("amount").is_not_null()
joined = (e.join(v, on="user_id", how="left")
    .filter(pl.col("ts").is_null() | ((pl.col("ts") <= t) & within(timedelta(days=30)))))
agg = joined.group_by("row_id").agg(
    pl.col("amount").filter(within(timedelta(hours=1))).sum().alias("amount_sum_1h"),
    pl.col("amount").filter(within(timedelta(days=7))).mean().alias("amount_mean_7d"),
    pl.col("ts").count().alias("txn_count_30d"),
    pl.col("amount").filter(within(timedelta(days=1))).max().alias("amount_max_1d"),
    pl.col("merchant").filter(within(timedelta(days=7)) & pl.col("merchant").is_not_null()).n_unique().alias("merchants_7d"),
    pl.col("amount").filter(last_1d).sort_by(pl.col("ts").filter(last_1d), pl.col("amount").filter(last_1d)).last().alias("amount_last_1d"),
)
# Polars sums an empty group to 0; the window definition says null.
has_1h = joined.group_by("row_id").agg(pl.col("amount").filter(within(timedelta(hours=1))).count().alias("n1h"))
(agg.join(has_1h, on="row_id")
    .with_columns(pl.when(pl.col("n1h") > 0).then(pl.col("amount_sum_1h")).otherwise(None).alias("amount_sum_1h"))
    .drop("n1h").sort("row_id").collect().write_parquet(out))
'''


def generate(d, events, keys, rows, seed=7):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(f"{d}/data", exist_ok=True)
    rng = np.random.default_rng(seed)
    start = 1_767_225_600_000_000  # 2026-01-01 UTC, µs
    span = 60 * DAY_US
    # Distinct times per event, so "last" has no ties for the SQL engines to break arbitrarily.
    ts = start + rng.choice(span, size=events, replace=False) if events < 50_000_000 else start + rng.integers(0, span, events)
    amount = np.round(rng.lognormal(3.0, 1.0, events), 2)
    amount_valid = rng.random(events) > 0.02
    table = pa.table({
        "user_id": pa.array(rng.integers(0, keys, events), pa.int64()),
        "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount, pa.float64(), mask=~amount_valid),
        "merchant": pa.array(rng.integers(0, 5000, events), pa.int64()),
    })
    pq.write_table(table, f"{d}/data/events.parquet", row_group_size=1 << 20)
    entities = pa.table({
        "row_id": pa.array(np.arange(rows), pa.int64()),
        "user_id": pa.array(rng.integers(0, keys, rows), pa.int64()),
        "event_timestamp": pa.array(start + 30 * DAY_US + rng.integers(0, 30 * DAY_US, rows), pa.timestamp("us", tz="UTC")),
    })
    pq.write_table(entities, f"{d}/data/entities.parquet")
    with open(f"{d}/feature_store.yaml", "w") as f:
        f.write("project: a1\nregistry: data/registry.json\n")
    with open(f"{d}/features.yaml", "w") as f:
        f.write(DEFS)


ONLINE_DEFS = DEFS.replace("[user_id]", "[driver_id]").replace("online: false", "aggregation_interval: 5m")


def generate_online(d, events, keys, seed=9):
    """The A1 view served online (hopping at 5 minutes) over events of the
    last 30 days, keyed by driver_id as benchmarks/online reads them."""
    import time

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(f"{d}/data", exist_ok=True)
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1e6)
    table = pa.table({
        "driver_id": pa.array(rng.integers(0, keys, events), pa.int64()),
        "event_timestamp": pa.array(now - rng.integers(0, 30 * DAY_US, events), pa.timestamp("us", tz="UTC")),
        "amount": pa.array(np.round(rng.lognormal(3.0, 1.0, events), 2)),
        "merchant": pa.array(rng.integers(0, 5000, events), pa.int64()),
    })
    pq.write_table(table, f"{d}/data/events.parquet")
    with open(f"{d}/feature_store.yaml", "w") as f:
        f.write("project: a1_online\nregistry: data/registry.json\n")
    with open(f"{d}/features.yaml", "w") as f:
        f.write(ONLINE_DEFS.replace("{name: user,", "{name: driver,").replace("entities: [user]", "entities: [driver]"))


def compare(d, names):
    import numpy as np
    import pyarrow.parquet as pq

    ours = pq.read_table(f"{d}/out_{names[0]}.parquet").sort_by("row_id")
    lines = []
    for other in names[1:]:
        path = f"{d}/out_{other}.parquet"
        if not os.path.exists(path):
            continue
        t = pq.read_table(path).sort_by("row_id")
        bad = []
        for c in ["amount_sum_1h", "amount_mean_7d", "txn_count_30d", "amount_max_1d", "merchants_7d", "amount_last_1d"]:
            a = ours.column(c).to_numpy(zero_copy_only=False).astype("float64")
            b = t.column(c).to_numpy(zero_copy_only=False).astype("float64")
            same = (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= 1e-9 * np.maximum(np.abs(b), 1.0))
            if len(a) != len(b) or not same.all():
                bad.append(f"{c} ({int((~same).sum())} rows differ)")
        lines.append(f"{other}: " + ("agrees on every row and column" if not bad else "DIFFERS: " + ", ".join(bad)))
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip", default="")
    ap.add_argument("--online-repo", action="store_true", help="only write the online variant's repo into DIR")
    a = ap.parse_args()
    d = os.path.abspath(a.dir)
    if a.online_repo:
        generate_online(d, a.events, a.keys)
        return
    if not os.path.exists(f"{d}/data/events.parquet"):
        generate(d, a.events, a.keys, a.rows)
    subprocess.run([a.binary, "--repo", d, "apply"], check=True, stdout=subprocess.DEVNULL)
    runs = [("feature-store", "ours", [a.binary, "--repo", d, "historical", "--entities", f"{d}/data/entities.parquet",
                                       "--features", FEATURES, "--output", f"{d}/out_ours.parquet"])]
    if "duckdb" not in a.skip:
        runs.append(("duckdb range join", "duckdb", [sys.executable, "-c", DUCKDB, d, f"{d}/out_duckdb.parquet"]))
    if "polars" not in a.skip:
        runs.append(("polars join+filter", "polars", [sys.executable, "-c", POLARS, d, f"{d}/out_polars.parquet"]))
    results = []
    for name, _, cmd in runs:
        walls, rss, status_text = [], 0.0, "ok"
        for _ in range(a.repeat):
            wall, r, err, status = timed(cmd, timeout=1800)
            walls.append(wall)
            rss = max(rss, r)
            if status != 0 or "error:" in err.lower():
                status_text = "FAILED: " + (err.strip().splitlines() or ["?"])[-1][:120]
                break
        walls.sort()
        results.append((name, walls[0], walls[len(walls) // 2], rss, status_text))
    base = results[0][1]
    import pyarrow.parquet as pq
    events = pq.ParquetFile(f"{d}/data/events.parquet").metadata.num_rows
    rows = pq.ParquetFile(f"{d}/data/entities.parquet").metadata.num_rows
    print(f"A1: {events:,} events, {rows:,} entity rows, 6 aggregations (continuous windows), {d}")
    print(f"{'tool':<20} {'best s':>8} {'median s':>9} {'peak RSS MiB':>13} {'ours / tool':>12}  status")
    for name, best, median, rss, st in results:
        print(f"{name:<20} {best:>8.2f} {median:>9.2f} {rss:>13,.0f} {base / best:>12.2f}  {st}")
    for line in compare(d, [r[1] for r in runs]):
        print(line)


if __name__ == "__main__":
    main()
