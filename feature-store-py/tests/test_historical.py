"""get_historical_features from Python: every input form, every output form,
exact point-in-time values against a brute-force reference."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_store as fs
from conftest import DRIVERS, END, driver_stats_table, make_repo

FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
]


def reference(entity: pd.DataFrame, ttl=timedelta(days=1)) -> pd.DataFrame:
    """Brute force: newest source row with entity_ts - ttl <= event_ts <= entity_ts."""
    src = driver_stats_table().to_pandas()
    out = []
    for _, row in entity.iterrows():
        ts = pd.Timestamp(row["event_timestamp"])
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        c = src[(src.driver_id == row["driver_id"]) & (src.event_timestamp <= ts) & (src.event_timestamp >= ts - ttl)]
        if len(c) == 0:
            out.append((None, None, None))
        else:
            best = c.sort_values(["event_timestamp", "created"]).iloc[-1]
            out.append((best.conv_rate, best.acc_rate, best.avg_daily_trips))
    return pd.DataFrame(out, columns=["conv_rate", "acc_rate", "avg_daily_trips"])


def entity_df() -> pd.DataFrame:
    end = END.replace(tzinfo=None)
    return pd.DataFrame(
        {
            "driver_id": [1001, 1002, 1003, 1001, 1009, 1002],
            "label": [1, 0, 1, 1, 0, 0],
            # naive = UTC; 1001 twice (duplicates stay), 1009 unknown, one row before all data
            "event_timestamp": [
                end - timedelta(minutes=90),
                end - timedelta(hours=33),
                end,
                end - timedelta(minutes=90),
                end - timedelta(minutes=90),
                end - timedelta(days=10),
            ],
        }
    )


def assert_matches_reference(result: pd.DataFrame, entity: pd.DataFrame) -> None:
    expected = reference(entity)
    assert len(result) == len(entity)
    assert list(result["driver_id"]) == list(entity["driver_id"])
    for col in expected.columns:
        got = [None if pd.isna(v) else float(v) for v in result[col]]
        want = [None if v is None or pd.isna(v) else float(v) for v in expected[col]]
        assert got == pytest.approx(want, nan_ok=True), col


def test_pandas_in_pandas_out_exact(store):
    entity = entity_df()
    df = store.get_historical_features(entity_df=entity, features=FEATURES).to_df()
    assert list(df.columns) == ["driver_id", "label", "event_timestamp", "conv_rate", "acc_rate", "avg_daily_trips"]
    assert_matches_reference(df, entity)
    # Entity columns come back unchanged (naive stays naive).
    assert df["event_timestamp"].dt.tz is None
    assert list(df["label"]) == list(entity["label"])
    # Exact value check on one row: 1003 at END is hour 71.
    assert df.loc[2, "avg_daily_trips"] == 71 * 10 + 3
    assert pd.isna(df.loc[4, "conv_rate"])  # unknown driver
    assert pd.isna(df.loc[5, "conv_rate"])  # before any data


def test_time_zone_aware_equals_naive_utc(store):
    naive = entity_df()
    aware = naive.copy()
    aware["event_timestamp"] = aware["event_timestamp"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    a = store.get_historical_features(naive, FEATURES).to_df()
    b = store.get_historical_features(aware, FEATURES).to_df()
    pd.testing.assert_frame_equal(a.drop(columns="event_timestamp"), b.drop(columns="event_timestamp"))
    assert str(b["event_timestamp"].dt.tz) == "America/New_York"


def test_ttl_boundaries_inclusive(store):
    # Row at exactly END - 1 day + 0 is within ttl of END; one µs earlier is not.
    t = END
    entity = pd.DataFrame({"driver_id": [1001, 1001], "event_timestamp": [t, t + timedelta(days=1)]})
    df = store.get_historical_features(entity, ["driver_hourly_stats:avg_daily_trips"]).to_df()
    assert df["avg_daily_trips"].iloc[0] == 71 * 10 + 1
    # END + 1 day: newest row is END, exactly ttl old: still included (both bounds inclusive).
    assert df["avg_daily_trips"].iloc[1] == 71 * 10 + 1
    late = pd.DataFrame({"driver_id": [1001], "event_timestamp": [t + timedelta(days=1, microseconds=1)]})
    df = store.get_historical_features(late, ["driver_hourly_stats:avg_daily_trips"]).to_df()
    assert pd.isna(df["avg_daily_trips"].iloc[0])


def test_mixed_naive_and_aware_objects_read_naive_as_utc(store):
    mixed = pd.DataFrame({"driver_id": [1001, 1001], "event_timestamp": [END, END.replace(tzinfo=None)]}, dtype=object)
    mixed["driver_id"] = mixed["driver_id"].astype("int64")
    df = store.get_historical_features(mixed, FEATURES).to_df()
    assert df["avg_daily_trips"].tolist() == [711, 711]


def test_polars_in_polars_out(store):
    entity = pl.from_pandas(entity_df())
    out = store.get_historical_features(entity, FEATURES).to_polars()
    assert isinstance(out, pl.DataFrame)
    assert out.height == entity.height
    assert_matches_reference(out.to_pandas(), entity_df())


def test_pyarrow_table_reader_and_capsule_inputs(store):
    table = pa.Table.from_pandas(entity_df(), preserve_index=False)
    a = store.get_historical_features(table, FEATURES).to_arrow()
    assert isinstance(a, pa.Table)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))
    b = store.get_historical_features(reader, FEATURES).to_arrow()
    assert a.equals(b)

    class Capsule:
        """Only the Arrow PyCapsule protocol, like any third-party frame."""

        def __arrow_c_stream__(self, requested_schema=None):
            return table.__arrow_c_stream__(requested_schema)

    job = store.get_historical_features(Capsule(), FEATURES)
    assert a.equals(job.to_arrow())
    assert a.equals(job.to_arrow())  # an exporter, unlike a reader, can be read again


def test_one_shot_reader_can_be_retrieved_once(store):
    table = pa.Table.from_pandas(entity_df(), preserve_index=False)
    job = store.get_historical_features(pa.RecordBatchReader.from_batches(table.schema, table.to_batches()), FEATURES)
    job.to_arrow()
    with pytest.raises(fs.InvalidArgumentError, match="one-shot"):
        job.to_arrow()
    # A table can be retrieved again, with identical results.
    job = store.get_historical_features(table, FEATURES)
    assert job.to_arrow().equals(job.to_arrow())


def test_parquet_path_and_sql_entity_tables(store, repo):
    entity = entity_df()
    pq.write_table(pa.Table.from_pandas(entity, preserve_index=False), repo / "entities.parquet")
    by_path = store.get_historical_features(str(repo / "entities.parquet"), FEATURES).to_df()
    assert_matches_reference(by_path, entity)
    sql = (
        "SELECT driver_id, event_timestamp FROM driver_stats_source "
        "WHERE event_timestamp = (SELECT max(event_timestamp) FROM driver_stats_source) ORDER BY driver_id"
    )
    by_sql = store.get_historical_features(sql, ["driver_hourly_stats:avg_daily_trips"]).to_df()
    assert list(by_sql["driver_id"]) == DRIVERS
    assert list(by_sql["avg_daily_trips"]) == [710 + d - 1000 for d in DRIVERS]


def test_streaming_batches_and_parquet_output(store, tmp_path):
    entity = pd.DataFrame(
        {"driver_id": [1001 + i % 5 for i in range(5000)], "event_timestamp": [END - timedelta(minutes=i) for i in range(5000)]}
    )
    job = store.get_historical_features(entity, FEATURES)
    reader = job.to_batches()
    assert isinstance(reader, pa.RecordBatchReader)
    rows = sum(b.num_rows for b in reader)
    assert rows == 5000
    n = job.to_parquet(tmp_path / "out.parquet")
    assert n == 5000
    written = pq.read_table(tmp_path / "out.parquet")
    assert written.num_rows == 5000
    assert written.column("driver_id").to_pylist() == entity["driver_id"].tolist()
    # The output may replace the entity file it is computed from, and a
    # failed write leaves the previous file whole, with no partial file.
    entities = tmp_path / "entities.parquet"
    pq.write_table(pa.Table.from_pandas(entity, preserve_index=False), entities)
    assert store.get_historical_features(str(entities), FEATURES).to_parquet(entities) == 5000
    assert pq.read_table(entities).column("conv_rate").to_pylist() == written.column("conv_rate").to_pylist()
    before = (tmp_path / "out.parquet").read_bytes()
    with pytest.raises(Exception):
        job.to_parquet(tmp_path / "out.parquet", compression="no-such-codec")
    assert (tmp_path / "out.parquet").read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]


def test_folder_output(store, tmp_path):
    entity = pd.DataFrame(
        {"driver_id": [1001 + i % 5 for i in range(2500)], "event_timestamp": [END - timedelta(minutes=i) for i in range(2500)]}
    )
    expected = store.get_historical_features(entity, FEATURES).to_arrow()
    folder = tmp_path / "training"
    job = store.get_historical_features(entity, FEATURES)
    assert job.to_parquet(f"{folder}/", rows_per_file=1000) == 2500
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert [f["rows"] for f in manifest["files"]] == [1000, 1000, 500]
    parts = [pq.read_table(folder / f["file"]) for f in manifest["files"]]
    assert pa.concat_tables(parts).equals(expected)
    with pytest.raises(fs.InvalidArgumentError, match="apply to a single file"):
        job.to_parquet(f"{folder}/", compression="zstd")
    with pytest.raises(fs.InvalidArgumentError, match="rows_per_file applies to a folder"):
        job.to_parquet(tmp_path / "one.parquet", rows_per_file=10)
    # A one-shot reader of entity rows is read once, by either kind of output.
    reader = pa.Table.from_pandas(entity, preserve_index=False).to_reader()
    once = store.get_historical_features(reader, FEATURES)
    assert once.to_parquet(f"{tmp_path}/again/") == 2500
    with pytest.raises(fs.InvalidArgumentError, match="already read"):
        once.to_parquet(f"{tmp_path}/again/")


def test_parquet_output_inside_a_source_is_refused(store, repo):
    source = repo / "data" / "driver_stats.parquet"
    before = source.read_bytes()
    with pytest.raises(fs.InvalidArgumentError, match='inside data source "driver_stats_source"'):
        store.get_historical_features(entity_df(), FEATURES).to_parquet(source)
    assert source.read_bytes() == before


def test_full_feature_names_and_feature_service(store):
    driver, source, view, service = __import__("conftest").definitions()
    df = store.get_historical_features(entity_df(), FEATURES, full_feature_names=True).to_df()
    assert "driver_hourly_stats__conv_rate" in df.columns
    by_service = store.get_historical_features(entity_df(), features=service).to_df()
    assert list(by_service.columns)[-2:] == ["conv_rate", "avg_daily_trips"]
    by_name = store.get_historical_features(entity_df(), feature_service="driver_activity_v1").to_df()
    pd.testing.assert_frame_equal(by_service, by_name)
    # Views and selections are accepted in the feature list too.
    by_objects = store.get_historical_features(entity_df(), [view[["conv_rate"]]]).to_df()
    assert list(by_objects.columns)[-1] == "conv_rate"


def test_unknown_feature_fails_when_the_job_is_created(store):
    with pytest.raises(fs.NotFoundError) as e:
        store.get_historical_features(entity_df(), ["driver_hourly_stats:conv_rat"])
    assert "conv_rat" in str(e.value) and "conv_rate" in str(e.value)
    assert isinstance(e.value, LookupError)
    with pytest.raises(fs.NotFoundError):
        store.get_historical_features(entity_df(), ["no_such_view:x"])


def test_bad_entity_tables_are_clear_errors(store):
    missing_ts = entity_df().drop(columns="event_timestamp")
    with pytest.raises(fs.FeatureStoreError, match="event_timestamp"):
        store.get_historical_features(missing_ts, FEATURES).to_df()
    as_text = entity_df().assign(event_timestamp=lambda d: d["event_timestamp"].astype(str))
    with pytest.raises(fs.FeatureStoreError, match="event_timestamp"):
        store.get_historical_features(as_text, FEATURES).to_df()
    no_key = entity_df().drop(columns="driver_id")
    with pytest.raises(fs.FeatureStoreError, match="driver_id"):
        store.get_historical_features(no_key, FEATURES).to_df()
    # Objects pyarrow cannot convert: the error names the column.
    odd = entity_df().assign(label=[object()] * 6)
    with pytest.raises(fs.DataError, match="label"):
        store.get_historical_features(odd, FEATURES).to_df()
    with pytest.raises(TypeError, match="entity_df"):
        store.get_historical_features(42, FEATURES)


def test_pandas_categorical_and_nullable_dtypes(store):
    entity = entity_df()
    entity["driver_id"] = entity["driver_id"].astype("Int64")
    entity.loc[1, "driver_id"] = pd.NA
    entity["segment"] = pd.Categorical(["a", "b", "a", "b", "a", "b"])
    df = store.get_historical_features(entity, FEATURES).to_df()
    assert len(df) == 6
    assert pd.isna(df.loc[1, "conv_rate"])  # null key: null features
    assert df.loc[0, "avg_daily_trips"] == reference(entity_df()).loc[0, "avg_daily_trips"]
    assert list(df["segment"].astype(str)) == ["a", "b", "a", "b", "a", "b"]


def test_pandas_index_is_dropped_and_order_kept(store):
    entity = entity_df().iloc[::-1]
    df = store.get_historical_features(entity, FEATURES).to_df()
    assert list(df["driver_id"]) == list(entity["driver_id"])
    assert list(df.index) == list(range(len(entity)))


def test_gil_is_released_while_joining(store):
    n = 300_000
    entity = pa.table(
        {
            "driver_id": pa.array([1001 + i % 7 for i in range(n)], pa.int64()),
            "event_timestamp": pa.array([END - timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        }
    )
    ticks = 0
    stop = threading.Event()

    def spin():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = ticks
        time.sleep(0.2)  # sleeping releases the GIL: the spinner's full rate
        rate = (ticks - before) / 0.2
        job = store.get_historical_features(entity, FEATURES)
        before, started = ticks, time.perf_counter()
        out = job.to_arrow()
        seconds = time.perf_counter() - started
        during = ticks - before
    finally:
        stop.set()
        t.join()
    assert out.num_rows == n
    # Held for the whole join, the GIL would let the spinner run only at switch
    # points; released, it shares the interpreter for the whole join.
    assert during > 0.2 * rate * seconds, (during, rate, seconds)


def test_csv_entity_file_is_read_with_the_registry_key_types(tmp_path):
    repo = make_repo(tmp_path / "zips", project="zips")
    pq.write_table(
        pa.table(
            {
                "zip": ["001", "1"],
                "event_timestamp": pa.array([END - timedelta(hours=1)] * 2, pa.timestamp("us", "UTC")),
                "population": pa.array([10, 20], pa.int64()),
            }
        ),
        repo / "data" / "zips.parquet",
    )
    zone = fs.Entity(name="zone", join_keys=["zip"])
    source = fs.FileSource(name="zips_source", path="data/zips.parquet", timestamp_field="event_timestamp")
    view = fs.FeatureView(
        name="zips", entities=[zone], source=source,
        schema=[fs.Field(name="zip", dtype=fs.String), fs.Field(name="population", dtype=fs.Int64)],
    )
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply([zone, source, view])
    entities = tmp_path / "entities.csv"
    at = END.strftime("%Y-%m-%d %H:%M:%S")  # naive: taken as UTC
    entities.write_text(f"zip,event_timestamp\n001,{at}\n1,{at}\n")
    out = store.get_historical_features(str(entities), ["zips:population"]).to_arrow()
    assert out.column("zip").to_pylist() == ["001", "1"]
    assert out.column("population").to_pylist() == [10, 20]
    assert out.schema.field("event_timestamp").type == pa.timestamp("ns", "UTC")  # CSV times keep their ns
    # A saved dataset keeps the entity rows as read: "001" stays a string.
    saved = store.get_historical_features(str(entities), ["zips:population"], save_as="zips_set").to_arrow()
    assert saved.column("zip").to_pylist() == ["001", "1"]
    assert saved.column("population").to_pylist() == [10, 20]
    entities.write_text(f"zip,event_timestamp\n001,{at}\n1,not a time\n")
    with pytest.raises(fs.FeatureStoreError, match="not a time"):
        store.get_historical_features(str(entities), ["zips:population"]).to_arrow()


def test_categorical_keys_and_duplicate_columns(store):
    plain = store.get_historical_features(entity_df(), FEATURES).to_df()
    categorical = entity_df().astype({"driver_id": "category"})
    got = store.get_historical_features(categorical, FEATURES).to_df()
    assert got["conv_rate"].equals(plain["conv_rate"])
    store.materialize(END - timedelta(days=1), END)
    online = store.get_online_features(FEATURES, pd.DataFrame({"driver_id": [1001, 1002]}).astype("category"))
    assert online.to_dict()["conv_rate"] == store.get_online_features(FEATURES, {"driver_id": [1001, 1002]}).to_dict()["conv_rate"]
    twice = pd.concat([entity_df(), entity_df()[["driver_id"]]], axis=1)
    with pytest.raises(fs.DataError, match="more than one column named 'driver_id'"):
        store.get_historical_features(twice, FEATURES)
    table = pa.Table.from_pandas(entity_df(), preserve_index=False)
    table = table.append_column("driver_id", pa.array([1] * table.num_rows, pa.int64()))
    with pytest.raises(fs.DataError, match='more than one column is named "driver_id"'):
        store.get_historical_features(table, FEATURES).to_arrow()
    with pytest.raises(fs.DataError, match='more than one column is named "driver_id"'):
        store.get_online_features(FEATURES, pa.table({"driver_id": [1001]}).append_column("driver_id", pa.array([2])))


def test_materialize_takes_one_view_name_and_numpy_times(store):
    import numpy as np

    end = np.datetime64(END.replace(tzinfo=None))  # numpy times are naive: UTC
    report = store.materialize(end - np.timedelta64(1, "D"), end, feature_views="driver_hourly_stats")
    assert [v["view"] for v in report.views] == ["driver_hourly_stats"]


def test_to_df_equals_pyarrow_conversion_for_every_type(tmp_path):
    """to_df() fills float columns in Rust; the frame must be the one pyarrow
    gives (values, NaN where null, dtypes, column order) and stay writable."""
    repo = make_repo(tmp_path / "typed", project="typed")
    t0 = END - timedelta(hours=5)
    n = 3
    pq.write_table(
        pa.table(
            {
                "k": pa.array([1, 2, 3], pa.int64()),
                "event_timestamp": pa.array([t0] * n, pa.timestamp("us", "UTC")),
                # Null feature values in the source, beside rows with no match at all.
                "f32": pa.array([1.5, None, -0.0], pa.float32()),
                "f64": pa.array([None, 2.25, float("nan")], pa.float64()),
                "i64": pa.array([7, None, 9], pa.int64()),
                "i32": pa.array([1, 2, 3], pa.int32()),
                "b": pa.array([True, None, False]),
                "s": pa.array(["x", None, "z"]),
                "raw": pa.array([b"a", b"", None], pa.binary()),
                "at": pa.array([t0, None, t0], pa.timestamp("us", "UTC")),
                "v": pa.array([[1.0, 2.0], None, []], pa.list_(pa.float32())),
            }
        ),
        repo / "data" / "typed.parquet",
    )
    key = fs.Entity(name="key", join_keys=["k"])
    source = fs.FileSource(name="typed_source", path="data/typed.parquet", timestamp_field="event_timestamp")
    schema = [
        fs.Field(name="f32", dtype=fs.Float32), fs.Field(name="f64", dtype=fs.Float64),
        fs.Field(name="i64", dtype=fs.Int64), fs.Field(name="i32", dtype=fs.Int32),
        fs.Field(name="b", dtype=fs.Bool), fs.Field(name="s", dtype=fs.String),
        fs.Field(name="raw", dtype=fs.Bytes), fs.Field(name="at", dtype=fs.UnixTimestamp),
        fs.Field(name="v", dtype=fs.Array(fs.Float32)),
    ]
    view = fs.FeatureView(name="typed", entities=[key], source=source, schema=schema)
    store = fs.FeatureStore(repo_path=str(repo))
    store.apply([key, source, view])
    refs = [f"typed:{f.name}" for f in schema]
    # A float feature between entity columns: order must be kept.
    entity = pd.DataFrame({
        "k": [1, 2, 3, 4, 1, 2, 3, 1] * 40_000,
        "weight": [0.5, None, 0.25] * 106_666 + [1.0, 2.0],
        "event_timestamp": [END, END, END, END, t0 - timedelta(hours=1), END, END, END] * 40_000,
    })
    # Chunks that are slices at odd offsets: several batches, null bitmaps not word-aligned.
    whole = pa.Table.from_pandas(entity, preserve_index=False)
    chunked = pa.concat_tables([whole.slice(i, 100_003) for i in range(0, len(entity), 100_003)])
    assert chunked.column("weight").num_chunks == 4 and chunked.column("weight").null_count > 0
    # One output batch: the join's float outputs become the numpy arrays (no
    # copy); the entity's own float column (pyarrow's memory) is copied.
    small = whole.slice(3, 5000)
    single = store.get_historical_features(small, refs).to_df()
    assert type(single["f32"].to_numpy().base.base).__name__ == "FloatValues"
    assert type(single["weight"].to_numpy().base).__name__ == "ndarray"
    pd.testing.assert_frame_equal(single, store.get_historical_features(small, refs).to_arrow().to_pandas())
    single.loc[0, "f64"] = 3.0
    assert single["f64"].iloc[0] == 3.0 and pd.isna(single["f64"].iloc[5])
    job = lambda: store.get_historical_features(chunked, refs)  # noqa: E731
    fast = job().to_df()
    assert type(fast["f32"].to_numpy().base).__name__ == "ndarray"
    slow = job().to_arrow().to_pandas()
    pd.testing.assert_frame_equal(fast, slow)
    assert list(fast.columns) == ["k", "weight", "event_timestamp"] + [f.name for f in schema]
    assert fast["weight"].isna().tolist()[:4] == [False, True, False, False]
    assert str(fast["f32"].dtype) == "float32" and str(fast["f64"].dtype) == "float64"
    assert fast["f32"].isna().tolist()[:8] == [False, True, False, True, True, True, False, False]
    assert fast["f64"].isna().tolist()[:8] == [True, False, True, True, True, False, True, True]
    assert str(fast["f32"].iloc[2]) == "-0.0"
    fast.loc[0, "f32"] = 5.0
    fast.loc[1, "weight"] = 2.0
    assert fast["f32"].iloc[0] == 5.0 and fast["weight"].iloc[1] == 2.0 and fast["f32"].iloc[8] == 1.5
    # Keyword arguments are pyarrow's.
    mapped = job().to_df(types_mapper=pd.ArrowDtype)
    assert str(mapped["f32"].dtype) == "float[pyarrow]"
    # A nullable pandas Float64 entity column stays Float64 (nulls kept), as pyarrow restores it.
    nullable = entity.head(300).astype({"weight": "Float64"})
    kept = store.get_historical_features(nullable, refs).to_df()
    assert str(kept["weight"].dtype) == "Float64" and kept["weight"].isna().sum() == 100, kept["weight"].dtype
    pd.testing.assert_frame_equal(kept, store.get_historical_features(nullable, refs).to_arrow().to_pandas())
    assert type(kept["f64"].to_numpy().base.base).__name__ == "FloatValues"
    # No rows at all.
    empty = store.get_historical_features(entity.head(0), refs)
    pd.testing.assert_frame_equal(empty.to_df(), store.get_historical_features(entity.head(0), refs).to_arrow().to_pandas())
