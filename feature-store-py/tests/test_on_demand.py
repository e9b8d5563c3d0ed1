"""On-demand features from Python: request sources and expression views,
Python UDFs (in this process, another process, a forked child), and Feast's
@on_demand_feature_view."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import feature_store as fs
from conftest import END, definitions, make_repo

AT_END = 71  # hour index of END: conv_rate = (driver - 1000) + 71/1000, avg_daily_trips = 710 + (driver - 1000)


def conv(driver: int) -> float:
    """conv_rate of `driver` at END as stored (float32), widened exactly."""
    return float(np.float32((driver - 1000) + AT_END / 1000))


def order_objects():
    driver, source, view, service = definitions()
    request = fs.RequestSource(
        name="order_request",
        schema=[fs.Field(name="order_amount", dtype=fs.Float64), fs.Field(name="order_lat", dtype=fs.Float64)],
        description="per order",
        tags={"team": "risk"},
    )
    odfv = fs.OnDemandFeatureView(
        name="order_features",
        sources=[view, request],
        features=[
            fs.OnDemandFeature("amount_x_conv", fs.Float64, "order_amount * conv_rate"),
            fs.OnDemandFeature("big_order", fs.Bool, "order_amount > 100 AND avg_daily_trips < 713",
                               description="large order, few trips"),
            fs.OnDemandFeature(name="trips_or_zero", dtype=fs.Int64, expression="COALESCE(avg_daily_trips, 0)"),
        ],
        description="order features",
        owner="risk@example.com",
        tags={"team": "risk"},
    )
    return view, request, odfv


@pytest.fixture
def orders(store):
    view, request, odfv = order_objects()
    store.apply([odfv])  # pulls in the view and the request source
    store.materialize(END - timedelta(days=1), END)
    return store


def entity_frame(**request) -> pd.DataFrame:
    end = END.replace(tzinfo=None)
    return pd.DataFrame({"driver_id": [1001, 1002, 1009], "event_timestamp": [end, end, end], **request})


# Definitions


def test_objects_round_trip_through_the_registry(orders):
    view, request, odfv = order_objects()
    assert orders.get_on_demand_feature_view("order_features") == odfv
    assert orders.get_request_source("order_request") == request
    assert orders.list_request_sources() == [request]
    [back] = orders.list_on_demand_feature_views()
    assert back.to_dict() == odfv.to_dict()
    assert back.sources == [view, request]  # the registered objects, not just names
    assert back.features[1].description == "large order, few trips"
    assert back.udfs == [] and back.created_timestamp is not None
    assert orders.list_on_demand_feature_views(tags={"team": "risk"}) == [odfv]
    assert orders.list_on_demand_feature_views(tags={"team": "other"}) == []
    assert not orders.apply([odfv]).written
    assert [d["kind"] for d in orders.describe("order_features")] == ["on_demand_feature_view"]
    # The on-demand view is not a (materializable) feature view.
    assert [v.name for v in orders.list_feature_views()] == ["driver_hourly_stats"]
    with pytest.raises(fs.NotFoundError, match="did you mean \"order_features\""):
        orders.get_on_demand_feature_view("order_feature")


def test_definition_errors_name_the_feature(store):
    view, request, _ = order_objects()
    bad = fs.OnDemandFeatureView(
        name="bad", sources=[view, request], features=[fs.OnDemandFeature("f", fs.Float64, "order_amount * conv_rat")]
    )
    with pytest.raises(fs.DefinitionError, match='feature "f".*unknown column "conv_rat".*did you mean "conv_rate"'):
        store.apply([bad])
    narrow = fs.OnDemandFeatureView(
        name="bad", sources=[view, request], features=[fs.OnDemandFeature("f", fs.Int32, "order_amount * conv_rate")]
    )
    with pytest.raises(fs.DefinitionError, match="the expression is float64 but the feature is declared int32"):
        store.plan([narrow])
    with pytest.raises(TypeError, match="OnDemandFeature"):
        fs.OnDemandFeatureView(name="x", sources=[view], features=[fs.Field(name="f", dtype=fs.Float64)])
    with pytest.raises(ValueError, match="non-empty SQL expression"):
        fs.OnDemandFeature("f", fs.Float64, "")
    with pytest.raises(TypeError, match="request sources"):
        fs.OnDemandFeatureView(name="x", sources=[object()], features=[])
    # Feast's class-based constructor and options this model does not keep.
    with pytest.raises(fs.UnsupportedError, match="schema, udf not supported.*OnDemandFeature"):
        fs.OnDemandFeatureView(name="x", sources=[view], features=[], schema=[], udf=lambda df: df)
    with pytest.raises(fs.UnsupportedError, match="owner is not kept"):
        fs.RequestSource(name="r", schema=[fs.Field(name="a", dtype=fs.Int64)], owner="me")


# Serving


def test_online_request_data_in_every_row_form(orders):
    features = ["order_features:amount_x_conv", "order_features:big_order", "order_features:trips_or_zero"]
    want = {
        "driver_id": [1001, 1002, 1009],
        "amount_x_conv": [200 * conv(1001), 99.5 * conv(1002), None],
        "big_order": [True, False, False],  # SQL: FALSE AND NULL is FALSE
        "trips_or_zero": [711, 712, 0],
    }
    # Ints for a float field are accepted (exactly), mixed with floats too; request values are not echoed.
    # Only fields the requested features read may be given (order_lat is read by none).
    rows = [
        {"driver_id": 1001, "order_amount": 200},
        {"driver_id": 1002, "order_amount": 99.5},
        {"driver_id": 1009, "order_amount": 5},
    ]
    resp = orders.get_online_features(features, rows)
    assert resp.to_dict() == want
    assert resp.statuses() == {
        "amount_x_conv": ["PRESENT", "PRESENT", "NULL_VALUE"],
        "big_order": ["PRESENT", "PRESENT", "NOT_FOUND"],  # a value, with its inputs' worst status
        "trips_or_zero": ["PRESENT", "PRESENT", "NOT_FOUND"],
    }
    columns = {"driver_id": [1001, 1002, 1009], "order_amount": [200, 99.5, 5]}
    assert orders.get_online_features(features, columns).to_dict() == want
    assert orders.get_online_features(features, pd.DataFrame(columns)).to_dict() == want
    assert orders.get_online_features(features, pl.DataFrame(columns, strict=False)).to_dict() == want
    table = pa.table({"driver_id": [1001, 1002, 1009], "order_amount": pa.array([200, 99, 5], pa.int32())})
    assert orders.get_online_features(features, table).to_dict()["amount_x_conv"][:2] == [200 * conv(1001),
                                                                                          99 * conv(1002)]
    # A view of the driver's features next to the on-demand ones; full names for both.
    full = orders.get_online_features(["driver_hourly_stats:conv_rate", "order_features:amount_x_conv"], rows,
                                      full_feature_names=True)
    assert full.feature_names == ["driver_hourly_stats__conv_rate", "order_features__amount_x_conv"]
    assert full.to_dict()["order_features__amount_x_conv"] == want["amount_x_conv"]


def test_online_request_errors_name_the_field(orders):
    features = ["order_features:amount_x_conv"]
    with pytest.raises(fs.FeatureStoreError, match='no column "order_amount"'):
        orders.get_online_features(features, [{"driver_id": 1001}])
    with pytest.raises(fs.FeatureStoreError, match="order_amount"):
        orders.get_online_features(features, [{"driver_id": 1001, "order_amount": "12"}])
    # order_lat is declared by the view's request source: accepted though unread, and not returned.
    out = orders.get_online_features(features, [{"driver_id": 1001, "order_amount": 1.0, "order_lat": 1.0}])
    assert out.to_dict().keys() == {"driver_id", "amount_x_conv"}
    with pytest.raises(fs.InvalidArgumentError, match='column "order_id" that is not a join key'):
        orders.get_online_features(features, [{"driver_id": 1001, "order_amount": 1.0, "order_id": 1.0}])
    with pytest.raises(fs.DataError, match="not exact as a float"):
        orders.get_online_features(features, [{"driver_id": 1001, "order_amount": 2**60},
                                              {"driver_id": 1001, "order_amount": 0.5}])


def test_online_timestamp_and_numpy_request_values(store):
    request = fs.RequestSource(name="req", schema=[fs.Field(name="at", dtype=fs.UnixTimestamp),
                                                   fs.Field(name="score", dtype=fs.Float64)])
    store.apply([fs.OnDemandFeatureView(name="times", sources=[request], features=[
        fs.OnDemandFeature("hour", fs.Int64, "CAST(date_part('hour', at) AS BIGINT)"),
        fs.OnDemandFeature("half", fs.Float64, "score / 2"),
    ])])
    rows = [
        {"at": datetime(2024, 1, 1, 5, 30), "score": np.float32(1.5)},  # naive is UTC
        {"at": datetime(2024, 1, 1, 7, 0, tzinfo=timezone(timedelta(hours=2))), "score": np.int64(3)},
        {"at": pd.Timestamp("2024-01-01 23:59:59", tz="UTC"), "score": None},
    ]
    assert store.get_online_features(["times"], rows).to_dict() == {"hour": [5, 5, 23], "half": [0.75, 1.5, None]}


def test_projections_and_feature_services(orders):
    _, _, odfv = order_objects()
    service = fs.FeatureService(name="scoring", features=[odfv[["amount_x_conv"]], odfv["trips_or_zero"]])
    everything = fs.FeatureService(name="everything", features=[odfv])
    orders.apply([service, everything])
    assert orders.get_feature_service("scoring").refs() == ["order_features:amount_x_conv",
                                                            "order_features:trips_or_zero"]
    rows = [{"driver_id": 1001, "order_amount": 10.0}]
    assert orders.get_online_features(service, rows).feature_names == ["amount_x_conv", "trips_or_zero"]
    assert orders.get_online_features("everything", rows).feature_names == ["amount_x_conv", "big_order",
                                                                            "trips_or_zero"]
    assert orders.get_online_features([odfv], rows).feature_names == ["amount_x_conv", "big_order", "trips_or_zero"]
    df = orders.get_historical_features(entity_frame(order_amount=[1.0, 2.0, 3.0], order_lat=[0.0] * 3),
                                        feature_service=service).to_df()
    assert list(df.columns) == ["driver_id", "event_timestamp", "order_amount", "order_lat", "amount_x_conv",
                                "trips_or_zero"]


# Training


@pytest.mark.parametrize("kind", ["pandas", "polars", "pyarrow", "pyarrow_int_amounts"])
def test_historical_request_columns_from_entity_tables(orders, kind):
    frame = entity_frame(order_amount=[200.0, 99.5, 5.0], order_lat=[1.0, -1.0, 0.0])
    entity = {
        "pandas": frame,
        "polars": pl.from_pandas(frame),
        "pyarrow": pa.Table.from_pandas(frame),
        "pyarrow_int_amounts": pa.Table.from_pandas(frame.assign(order_amount=[200, 99, 5])),
    }[kind]
    df = orders.get_historical_features(entity, ["order_features:amount_x_conv", "order_features:trips_or_zero"]).to_df()
    amounts = [200, 99, 5] if kind == "pyarrow_int_amounts" else [200, 99.5, 5]
    assert list(df["driver_id"]) == [1001, 1002, 1009]
    assert df["amount_x_conv"].tolist()[:2] == [amounts[0] * conv(1001), amounts[1] * conv(1002)]
    assert np.isnan(df["amount_x_conv"].tolist()[2])
    assert df["trips_or_zero"].tolist() == [711, 712, 0]


def test_historical_missing_request_column_is_named(orders):
    with pytest.raises(fs.FeatureStoreError, match='no column "order_amount"'):
        orders.get_historical_features(entity_frame(), ["order_features:amount_x_conv"]).to_df()


def test_training_equals_serving(orders):
    rng = np.random.default_rng(5)
    amounts = [float(a) for a in rng.uniform(-500, 500, 5)] + [float("nan"), None]
    drivers = [1001, 1002, 1003, 1004, 1005, 1001, 1009]
    online = orders.get_online_features(
        ["order_features"], {"driver_id": drivers, "order_amount": amounts}
    ).to_arrow()
    end = END.replace(tzinfo=None)
    offline = orders.get_historical_features(
        pa.table({"driver_id": drivers, "event_timestamp": pa.array([end] * 7, pa.timestamp("us")),
                  "order_amount": pa.array(amounts, pa.float64()), "order_lat": [0.0] * 7}),
        ["order_features"],
    ).to_arrow()
    for name in ["amount_x_conv", "big_order", "trips_or_zero"]:
        assert online.column(name).type == offline.column(name).type, name
        same = [repr(v) for v in online.column(name).to_pylist()]  # repr: NaN equals NaN
        assert same == [repr(v) for v in offline.column(name).to_pylist()], name


def test_saved_dataset_of_on_demand_features_verifies(orders):
    orders.apply([udf_view()])
    frame = entity_frame(order_amount=[711.0, 1424.0, 1.0], order_lat=[0.0] * 3)
    refs = ["order_features:amount_x_conv", "per_trip:amount_per_trip", "driver_hourly_stats:conv_rate"]
    expected = orders.get_historical_features(frame, refs).to_arrow()
    saved = orders.get_historical_features(frame, refs, save_as="with_odfv")
    assert saved.feature_names == ["conv_rate", "amount_x_conv", "amount_per_trip"]
    again = orders.get_saved_dataset("with_odfv")
    assert again.feature_names == saved.feature_names
    table = again.to_arrow()
    assert table.column_names == expected.column_names  # inputs nobody asked for stay hidden
    for name in saved.feature_names:
        assert table.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert [s["view"]["name"] for s in again.manifest["on_demand"]] == ["order_features", "per_trip"]
    report = again.verify()
    assert report["identical"], report["text"]


# Python UDFs


@fs.udf(input_types=[fs.Float64, fs.Float64], return_type=fs.Float64)
def ratio(a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.divide(a, b)


@fs.udf(name="scaled_trips", input_types=[fs.Int64], return_type=fs.Float64)
def scale(trips: pa.Array):
    # Anything pyarrow.array accepts: a list, here with None for a null.
    return [None if t is None else t / 10 for t in trips.to_pylist()]


def udf_view(name: str = "per_trip", expression: str = "ratio(order_amount, CAST(avg_daily_trips AS DOUBLE))"):
    view, request, _ = order_objects()
    return fs.OnDemandFeatureView(
        name=name,
        sources=[view, request],
        features=[
            fs.OnDemandFeature("amount_per_trip", fs.Float64, expression),
            fs.OnDemandFeature("tenth_trips", fs.Float64, "scaled_trips(avg_daily_trips)"),
        ],
    )


def test_udf_offline_and_online(orders):
    assert ratio(pa.array([1.0]), pa.array([4.0])).to_pylist() == [0.25]  # still callable
    assert fs.registered_udfs()["ratio"].return_type == fs.Float64
    orders.apply([udf_view()])
    view = orders.get_on_demand_feature_view("per_trip")
    recorded = {u["name"]: u for u in view.udfs}
    assert recorded["ratio"]["args"] == ["Float64", "Float64"] and recorded["ratio"]["returns"] == "Float64"
    assert recorded["ratio"]["source_hash"] == fs.on_demand.source_hash(ratio.function)
    assert len(recorded["scaled_trips"]["source_hash"]) == 64
    rows = [{"driver_id": 1001, "order_amount": 711.0},
            {"driver_id": 1009, "order_amount": 1.0}]
    online = orders.get_online_features(["per_trip"], rows).to_dict()
    assert online == {"driver_id": [1001, 1009], "amount_per_trip": [1.0, None], "tenth_trips": [71.1, None]}
    df = orders.get_historical_features(entity_frame(order_amount=[711.0, 1424.0, 1.0], order_lat=[0.0] * 3),
                                        ["per_trip:amount_per_trip", "per_trip:tenth_trips"]).to_df()
    assert df["amount_per_trip"].tolist()[:2] == [1.0, 2.0]
    assert df["tenth_trips"].tolist()[:2] == [71.1, 71.2]
    # Streamed batch by batch through pyarrow's reader too (the GIL is free while it reads).
    reader = orders.get_historical_features(entity_frame(order_amount=[711.0, 1424.0, 1.0], order_lat=[0.0] * 3),
                                            ["per_trip:amount_per_trip"]).to_batches()
    assert reader.read_all().column("amount_per_trip").to_pylist()[:2] == [1.0, 2.0]


ONLINE_STORES = {
    "sqlite": "  type: sqlite\n  path: data/online.db",
    "lmdb": "  type: lmdb\n  path: data/online.lmdb",
    "memory": "  type: memory",
}


@pytest.mark.parametrize("online", ["sqlite", "lmdb", "memory", "redis"])
def test_udf_and_feast_views_on_every_online_store(tmp_path, request, online):
    if online == "redis":
        server = request.getfixturevalue("redis_server")
        config = f"  type: redis\n  connection_string: \"127.0.0.1:{server.port}\""
    else:
        config = ONLINE_STORES[online]
    store = fs.FeatureStore(repo_path=str(make_repo(tmp_path / online, project=f"od_{online}", online=config)))
    _, _, transformed_conv_rate = feast_quickstart_objects()
    store.apply([udf_view(), transformed_conv_rate])
    store.materialize(END - timedelta(days=1), END)
    rows = [{"driver_id": 1001, "order_amount": 711.0, "val_to_add": 1, "val_to_add_2": 2},
            {"driver_id": 1009, "order_amount": 1.0, "val_to_add": 1, "val_to_add_2": 2}]
    out = store.get_online_features(["per_trip", "transformed_conv_rate:conv_rate_plus_val1"], rows)
    assert out.to_dict() == {"driver_id": [1001, 1009], "amount_per_trip": [1.0, None], "tenth_trips": [71.1, None],
                             "conv_rate_plus_val1": [conv(1001) + 1, None]}
    assert out.statuses()["tenth_trips"] == ["PRESENT", "NULL_VALUE"]


def test_udf_registered_after_the_store_opened(orders):
    @fs.udf(name="late_udf", input_types=[fs.Float64], return_type=fs.Float64)
    def late(a):
        return pc.negate(a)

    _, request, _ = order_objects()
    orders.apply([fs.OnDemandFeatureView(name="late_view", sources=[request],
                                         features=[fs.OnDemandFeature("neg", fs.Float64, "late_udf(order_lat)")])])
    out = orders.get_online_features(["late_view:neg"], [{"order_lat": 2.5}, {"order_lat": -1.0}]).to_dict()
    assert out == {"neg": [-2.5, 1.0]}


def test_udf_exceptions_name_the_function(orders):
    @fs.udf(name="fragile", input_types=[fs.Float64], return_type=fs.Float64)
    def fragile(a):
        raise ZeroDivisionError("the divisor was zero")

    @fs.udf(name="too_short", input_types=[fs.Float64], return_type=fs.Float64)
    def too_short(a):
        return [1.0]

    @fs.udf(name="not_numbers", input_types=[fs.Float64], return_type=fs.Float64)
    def not_numbers(a):
        return ["x"] * len(a)

    _, request, _ = order_objects()
    orders.apply([fs.OnDemandFeatureView(name="fails", sources=[request], features=[
        fs.OnDemandFeature("raises", fs.Float64, "fragile(order_lat)"),
        fs.OnDemandFeature("short", fs.Float64, "too_short(order_lat)"),
        fs.OnDemandFeature("strings", fs.Float64, "not_numbers(order_lat)"),
    ])])
    rows = [{"order_lat": 1.0}, {"order_lat": 2.0}]
    with pytest.raises(fs.DataError, match='Python function "fragile" raised ZeroDivisionError: the divisor was zero') as e:
        orders.get_online_features(["fails:raises"], rows)
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    assert "test_on_demand.py" in str(e.value)  # where it was raised
    entity = pd.DataFrame({"event_timestamp": [END, END], "order_lat": [1.0, 2.0]})
    with pytest.raises(fs.DataError, match='"fragile" raised ZeroDivisionError') as e:
        orders.get_historical_features(entity, ["fails:raises"]).to_df()
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    with pytest.raises(fs.DataError, match='"too_short" returned 1 values for 2 rows'):
        orders.get_online_features(["fails:short"], rows)
    with pytest.raises(fs.DataError, match='"not_numbers" returned list, which is not an array of float64'):
        orders.get_online_features(["fails:strings"], rows)
    # The store still serves after a failure.
    assert orders.get_online_features(["order_features:trips_or_zero"], [{"driver_id": 1001}]).to_dict() == {
        "driver_id": [1001], "trips_or_zero": [711]}


def test_udf_registration_errors():
    with pytest.raises(fs.InvalidArgumentError, match='cannot register function "abs".*built-in'):
        fs.udf(name="abs", input_types=[fs.Float64], return_type=fs.Float64)(lambda a: a)
    with pytest.raises(fs.InvalidArgumentError, match="use ASCII letters"):
        fs.udf(name="two words", input_types=[fs.Float64], return_type=fs.Float64)(lambda a: a)
    with pytest.raises(TypeError, match="value types"):
        fs.udf(input_types=["float"], return_type=fs.Float64)(lambda a: a)


def test_changed_function_in_this_process_is_refused(orders):
    @fs.udf(name="bump", input_types=[fs.Float64], return_type=fs.Float64)
    def bump(a):
        return pc.add(a, 1.0)

    _, request, _ = order_objects()
    view = fs.OnDemandFeatureView(name="bumped", sources=[request],
                                  features=[fs.OnDemandFeature("b", fs.Float64, "bump(order_lat)")])
    orders.apply([view])
    assert orders.get_online_features(["bumped:b"], [{"order_lat": 1.0}]).to_dict() == {"b": [2.0]}

    @fs.udf(name="bump", input_types=[fs.Float64], return_type=fs.Float64)
    def bump_more(a):
        return pc.add(a, 2.0)

    with pytest.raises(fs.FeatureStoreError, match="was applied with the function bump.*but this process registers"):
        orders.get_online_features(["bumped:b"], [{"order_lat": 1.0}])
    # Applying again from this code records the new function.
    orders.apply([view])
    assert orders.get_online_features(["bumped:b"], [{"order_lat": 1.0}]).to_dict() == {"b": [3.0]}


UDF_MODULE = '''
import pyarrow.compute as pc
import feature_store as fs


@fs.udf(input_types=[fs.Float64], return_type=fs.Float64)
def doubled(a):
    return pc.multiply(a, {factor})
'''

READER = '''
import sys
sys.path.insert(0, {tests!r})
{imports}
import feature_store as fs

store = fs.FeatureStore(repo_path={repo!r})
try:
    print(store.get_online_features(["dbl:d"], [{{"driver_id": 1001}}]).to_dict()["d"])
except fs.FeatureStoreError as e:
    print(type(e).__name__, e)
'''


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_other_processes_need_the_same_function(orders, tmp_path):
    for version, factor in (("v1", "2.0"), ("v2", "3.0")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "odfv_udfs.py").write_text(UDF_MODULE.format(factor=factor))
    load_module(tmp_path / "v1" / "odfv_udfs.py", "odfv_udfs_v1")
    driver, _, view, _ = definitions()
    orders.apply([fs.OnDemandFeatureView(name="dbl", sources=[view],
                                         features=[fs.OnDemandFeature("d", fs.Float64, "doubled(conv_rate)")])])
    assert orders.get_online_features(["dbl:d"], [{"driver_id": 1001}]).to_dict()["d"] == [2 * conv(1001)]

    def read(imports: str) -> str:
        script = READER.format(tests=str(tmp_path), imports=imports, repo=str(orders.repo_path))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert read("import v1.odfv_udfs") == str([2 * conv(1001)])
    missing = read("")
    assert "calls doubled(Float64) -> Float64" in missing and "did not register" in missing, missing
    changed = read("import v2.odfv_udfs")
    assert "was applied with the function doubled(Float64) -> Float64 [source" in changed, changed
    assert "but this process registers doubled(Float64) -> Float64 [source" in changed, changed


def _read_in_forked_child(store: fs.FeatureStore, repo: str, queue) -> None:
    try:
        rows = [{"driver_id": 1001, "order_amount": 711.0}]
        inherited = store.get_online_features(["per_trip"], rows).to_dict()
        opened = fs.FeatureStore(repo_path=repo).get_online_features(["per_trip"], rows).to_dict()
        offline = store.get_historical_features(entity_frame(order_amount=[711.0, 1424.0, 1.0], order_lat=[0.0] * 3),
                                                ["per_trip:amount_per_trip"]).to_df()
        queue.put((inherited, opened, offline["amount_per_trip"].tolist()[:2]))
    except Exception as e:  # noqa: BLE001 - report to the parent
        queue.put(repr(e))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="fork is not available")
def test_udf_in_a_forked_worker(orders):
    orders.apply([udf_view()])
    rows = [{"driver_id": 1001, "order_amount": 711.0}]
    before = orders.get_online_features(["per_trip"], rows).to_dict()  # the parent ran the function first
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_forked_child, args=(orders, str(orders.repo_path), queue))
    child.start()
    result = queue.get(timeout=120)
    child.join(30)
    assert result == (before, before, [1.0, 2.0]), result
    assert child.exitcode == 0
    assert orders.get_online_features(["per_trip"], rows).to_dict() == before


# Feast's @on_demand_feature_view


def feast_quickstart_objects():
    """Feast's quickstart feature_repo/example_repo.py on-demand parts, unchanged."""
    from feature_store import Field, Float64, Int64, RequestSource, on_demand_feature_view

    _, _, driver_stats_fv, _ = definitions()
    input_request = RequestSource(
        name="vals_to_add",
        schema=[
            Field(name="val_to_add", dtype=Int64),
            Field(name="val_to_add_2", dtype=Int64),
        ],
    )

    @on_demand_feature_view(
        sources=[driver_stats_fv, input_request],
        schema=[
            Field(name="conv_rate_plus_val1", dtype=Float64),
            Field(name="conv_rate_plus_val2", dtype=Float64),
        ],
    )
    def transformed_conv_rate(inputs: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame()
        df["conv_rate_plus_val1"] = inputs["conv_rate"] + inputs["val_to_add"]
        df["conv_rate_plus_val2"] = inputs["conv_rate"] + inputs["val_to_add_2"]
        return df

    return driver_stats_fv, input_request, transformed_conv_rate


def test_feast_pandas_on_demand_view(store):
    driver_stats_fv, input_request, transformed_conv_rate = feast_quickstart_objects()
    assert isinstance(transformed_conv_rate, fs.OnDemandFeatureView)
    assert transformed_conv_rate.mode == "pandas"
    store.apply([transformed_conv_rate, fs.FeatureService(name="driver_activity_v1b",
                                                          features=[driver_stats_fv[["conv_rate"]],
                                                                    transformed_conv_rate])])
    assert store.get_on_demand_feature_view("transformed_conv_rate") == transformed_conv_rate
    store.materialize(END - timedelta(days=1), END)
    entity_rows = [
        {"driver_id": 1001, "val_to_add": 1000, "val_to_add_2": 2000},
        {"driver_id": 1002, "val_to_add": 1001, "val_to_add_2": 2002},
    ]
    out = store.get_online_features(
        features=["driver_hourly_stats:acc_rate", "transformed_conv_rate:conv_rate_plus_val1",
                  "transformed_conv_rate:conv_rate_plus_val2"],
        entity_rows=entity_rows,
    ).to_dict()
    assert out["conv_rate_plus_val1"] == [conv(1001) + 1000, conv(1002) + 1001]
    assert out["conv_rate_plus_val2"] == [conv(1001) + 2000, conv(1002) + 2002]
    service = store.get_online_features(store.get_feature_service("driver_activity_v1b"), entity_rows)
    assert service.feature_names == ["conv_rate", "conv_rate_plus_val1", "conv_rate_plus_val2"]
    training = store.get_historical_features(
        entity_frame(val_to_add=[1, 2, 3], val_to_add_2=[10, 20, 30]),
        ["transformed_conv_rate:conv_rate_plus_val1", "transformed_conv_rate:conv_rate_plus_val2"],
    ).to_df()
    assert training["conv_rate_plus_val1"].tolist()[:2] == [conv(1001) + 1, conv(1002) + 2]
    # An unknown driver's conv_rate is NaN in pandas, so its sum is NaN: a null.
    assert np.isnan(training["conv_rate_plus_val1"].tolist()[2])
    assert store.get_online_features(["transformed_conv_rate"], [{"driver_id": 9, "val_to_add": 1,
                                                                  "val_to_add_2": 2}]).statuses() == {
        "conv_rate_plus_val1": ["NULL_VALUE"], "conv_rate_plus_val2": ["NULL_VALUE"]}


def test_feast_function_runs_once_per_batch_and_sees_both_names(store):
    _, _, view, _ = definitions()
    request = fs.RequestSource(name="req", schema=[fs.Field(name="val", dtype=fs.Int64),
                                                   fs.Field(name="conv_rate", dtype=fs.Float64)])
    calls = []

    @fs.on_demand_feature_view(sources=[view[["conv_rate", "avg_daily_trips"]], request],
                               schema=[fs.Field(name="a", dtype=fs.Float64), fs.Field(name="b", dtype=fs.Int64)])
    def counted(inputs: pd.DataFrame) -> pd.DataFrame:
        calls.append(list(inputs.columns))
        return pd.DataFrame({"a": inputs["driver_hourly_stats__conv_rate"] * inputs["req__conv_rate"],
                             "b": inputs["avg_daily_trips"] + inputs["val"], "ignored": 1})

    store.apply([counted])
    store.materialize(END - timedelta(days=1), END)
    out = store.get_online_features(["counted"], [{"driver_id": 1001, "val": 1, "conv_rate": 2.0}]).to_dict()
    assert out == {"driver_id": [1001], "a": [2 * conv(1001)], "b": [712]}
    # conv_rate is in two inputs: only its qualified names are given.
    assert calls == [["avg_daily_trips", "val", "driver_hourly_stats__conv_rate",
                      "driver_hourly_stats__avg_daily_trips", "req__val", "req__conv_rate"]]
    store.get_historical_features(entity_frame(val=[1, 2, 3], conv_rate=[1.0, 1.0, 1.0]), ["counted"]).to_df()
    assert len(calls) == 2


def test_feast_python_mode_and_singleton(store):
    _, _, view, _ = definitions()
    request = fs.RequestSource(name="vals", schema=[fs.Field(name="val_to_add", dtype=fs.Int64)])

    @fs.on_demand_feature_view(sources=[view, request], schema=[fs.Field(name="plus_python", dtype=fs.Float64)],
                               mode="python")
    def in_python(inputs):
        return {"plus_python": [c + v if c is not None else None
                                for c, v in zip(inputs["conv_rate"], inputs["val_to_add"])]}

    @fs.on_demand_feature_view(sources=[view, request], schema=[fs.Field(name="label", dtype=fs.String)],
                               mode="python", singleton=True)
    def per_row(inputs):
        return {"label": f"{inputs['driver_hourly_stats__avg_daily_trips']}-{inputs['val_to_add']}"}

    store.apply([in_python, per_row])
    store.materialize(END - timedelta(days=1), END)
    rows = {"driver_id": [1001, 1009], "val_to_add": [5, 6]}
    out = store.get_online_features(["in_python:plus_python", "per_row:label"], rows).to_dict()
    assert out == {"driver_id": [1001, 1009], "plus_python": [conv(1001) + 5, None], "label": ["711-5", "None-6"]}
    df = store.get_historical_features(entity_frame(val_to_add=[1, 2, 3]), ["per_row:label"]).to_df()
    assert df["label"].tolist() == ["711-1", "712-2", "None-3"]


def test_feast_function_errors(store):
    _, _, view, _ = definitions()
    request = fs.RequestSource(name="vals", schema=[fs.Field(name="val_to_add", dtype=fs.Int64)])

    @fs.on_demand_feature_view(sources=[view, request], schema=[fs.Field(name="wanted", dtype=fs.Float64)])
    def forgets(inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"other": inputs["conv_rate"]})

    store.apply([forgets])
    with pytest.raises(fs.DataError, match="\"forgets\" of on-demand feature view \"forgets\" raised ValueError: "
                                           "function 'forgets' returned no 'wanted'"):
        store.get_online_features(["forgets:wanted"], [{"driver_id": 1001, "val_to_add": 1}])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "substrait"}, "mode='substrait' is not supported"),
        ({"write_to_online_store": True}, "write_to_online_store=True is not supported"),
        ({"aggregations": []}, "aggregations not supported"),
        ({"entities": ["driver"]}, "entities are not supported"),
        ({"singleton": True}, "singleton=True needs mode='python'"),
    ],
)
def test_feast_options_not_supported_are_refused(kwargs, match):
    _, _, view, _ = definitions()
    with pytest.raises(fs.UnsupportedError, match=match):
        fs.on_demand_feature_view(sources=[view], schema=[fs.Field(name="x", dtype=fs.Float64)], **kwargs)(
            lambda inputs: inputs)


def test_feast_sources_that_cannot_be_read_are_refused():
    driver, source, view, _ = definitions()
    inferred = fs.FeatureView(name="inferred", entities=[driver], source=source)
    schema = [fs.Field(name="x", dtype=fs.Float64)]
    with pytest.raises(fs.UnsupportedError, match=r"declares no schema.*inferred\[\[\"a\", \"b\"\]\]"):
        fs.on_demand_feature_view(sources=[inferred], schema=schema)(lambda inputs: inputs)
    with pytest.raises(fs.UnsupportedError, match="is a name"):
        fs.on_demand_feature_view(sources=["driver_hourly_stats"], schema=schema)(lambda inputs: inputs)
    with pytest.raises(fs.UnsupportedError, match="schema"):
        fs.on_demand_feature_view(sources=[view], schema=[])(lambda inputs: inputs)
    # A selection of an inferred view names its inputs.
    fs.on_demand_feature_view(sources=[inferred[["conv_rate"]]], schema=schema, name="selected")(lambda i: i)
