"""Registry objects defined in Python, Feast style.

They are plain descriptions: :meth:`FeatureStore.apply` turns them into the
same registry objects a repo's YAML files define (the Rust library validates
and stores them), and the ``list_*``/``get_*`` methods turn stored objects
back into these classes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .errors import UnsupportedError
from .types import FeastType, from_name

__all__ = [
    "Entity",
    "Field",
    "FileSource",
    "FeatureView",
    "FeatureViewProjection",
    "FeatureService",
    "RequestSource",
    "OnDemandFeature",
    "OnDemandFeatureView",
]


def _meta(obj: Any, out: Dict[str, Any]) -> Dict[str, Any]:
    if obj.description:
        out["description"] = obj.description
    if obj.owner:
        out["owner"] = obj.owner
    if obj.tags:
        out["tags"] = dict(obj.tags)
    return out


class _Stored:
    """Times kept by the registry (``None`` until applied)."""

    created_timestamp: Optional[datetime] = None
    last_updated_timestamp: Optional[datetime] = None

    def _stamp(self, record: Dict[str, Any]) -> "_Stored":
        self.created_timestamp = _parse_time(record.get("created_at"))
        self.last_updated_timestamp = _parse_time(record.get("updated_at"))
        return self

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name))  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"  # type: ignore[attr-defined]


def _parse_time(text: Optional[str]) -> Optional[datetime]:
    if not text:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


class Entity(_Stored):
    """Something features describe (a driver, a customer), identified by join keys.

    ``join_keys`` defaults to ``[name]``, as in Feast. ``value_type`` (for
    example ``Int64``) declares the type of a single join key; without it the
    type is read from the data sources on apply.
    """

    def __init__(
        self,
        name: str,
        join_keys: Optional[Sequence[str]] = None,
        value_type: Optional[FeastType] = None,
        description: str = "",
        owner: str = "",
        tags: Optional[Dict[str, str]] = None,
        *,
        join_key_types: Optional[Dict[str, FeastType]] = None,
        join_key: Optional[str] = None,
    ) -> None:
        if join_key is not None:  # Feast's older spelling
            if join_keys is not None:
                raise ValueError(f"entity {name!r}: pass join_keys or join_key, not both")
            join_keys = [join_key]
        if isinstance(join_keys, str):
            join_keys = [join_keys]
        self.name = name
        self.join_keys: List[str] = list(join_keys) if join_keys else [name]
        self.join_key_types: Dict[str, FeastType] = dict(join_key_types or {})
        if value_type is not None:
            if len(self.join_keys) != 1:
                raise ValueError(
                    f"entity {name!r}: value_type applies to a single join key; "
                    "use join_key_types={key: type} for composite keys"
                )
            self.join_key_types[self.join_keys[0]] = value_type
        self.description = description
        self.owner = owner
        self.tags = dict(tags or {})

    @property
    def join_key(self) -> str:
        """The join key, for single-key entities."""
        return self.join_keys[0]

    @property
    def value_type(self) -> Optional[FeastType]:
        return self.join_key_types.get(self.join_keys[0]) if len(self.join_keys) == 1 else None

    def to_dict(self) -> Dict[str, Any]:
        keys: List[Any] = []
        for k in self.join_keys:
            t = self.join_key_types.get(k)
            keys.append({"name": k, "dtype": str(t)} if t is not None else k)
        return _meta(self, {"name": self.name, "join_keys": keys})

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Entity":
        keys, types = [], {}
        for k in d["join_keys"]:
            if isinstance(k, dict):
                keys.append(k["name"])
                if k.get("dtype"):
                    types[k["name"]] = from_name(k["dtype"])
            else:
                keys.append(k)
        return cls(d["name"], keys, None, d.get("description", ""), d.get("owner", ""), d.get("tags"),
                   join_key_types=types)


class Field:
    """A feature's name and value type."""

    def __init__(self, name: str, dtype: FeastType, description: str = "", tags: Optional[Dict[str, str]] = None):
        if not isinstance(dtype, FeastType):
            raise TypeError(f"field {name!r}: dtype must be a type such as Int64 or Array(Float32), got {dtype!r}")
        self.name = name
        self.dtype = dtype
        self.description = description
        self.tags = dict(tags or {})

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "dtype": str(self.dtype)}
        if self.description:
            out["description"] = self.description
        if self.tags:
            out["tags"] = dict(self.tags)
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Field":
        return cls(d["name"], from_name(d["dtype"]), d.get("description", ""), d.get("tags"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Field) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, dtype={self.dtype})"


def _source_name(path: str) -> str:
    stem = re.split(r"[/\\]", path.rstrip("/\\"))[-1]
    stem = re.sub(r"\.parquet$", "", stem)
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem).strip("_") or "source"
    return name if name[0].isalpha() else f"source_{name}"


class FileSource(_Stored):
    """Parquet data: one file, a folder (hive partitions allowed) or a glob, at a
    repo-relative path or a URL (``s3://``, ``file://``, ``memory://``).

    Without a ``name``, the file or folder name is used (``data/driver_stats.parquet``
    gives ``driver_stats``).
    """

    def __init__(
        self,
        path: str,
        timestamp_field: str = "event_timestamp",
        created_timestamp_column: Optional[str] = None,
        field_mapping: Optional[Dict[str, str]] = None,
        name: Optional[str] = None,
        description: str = "",
        owner: str = "",
        tags: Optional[Dict[str, str]] = None,
        file_format: Optional[str] = None,
        event_timestamp_column: Optional[str] = None,
        timestamp_partition: Optional[Dict[str, str]] = None,
    ) -> None:
        """``timestamp_partition={"column": "date", "format": "%Y-%m-%d"}`` declares a
        hive partition column derived from the event time, so time-bounded reads
        skip partitions outside their window (see the README)."""
        if event_timestamp_column is not None:  # Feast's older spelling
            timestamp_field = event_timestamp_column
        if file_format is not None and "parquet" not in str(file_format).lower() + type(file_format).__name__.lower():
            raise ValueError(f"FileSource {path!r}: only parquet is supported, got file_format={file_format!r}")
        self.path = str(path)
        self.name = name or _source_name(self.path)
        self.timestamp_field = timestamp_field
        self.created_timestamp_column = created_timestamp_column
        self.field_mapping = dict(field_mapping or {})
        self.description = description
        self.owner = owner
        self.tags = dict(tags or {})
        self.timestamp_partition = dict(timestamp_partition) if timestamp_partition else None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "path": self.path, "timestamp_field": self.timestamp_field}
        if self.created_timestamp_column:
            out["created_timestamp_field"] = self.created_timestamp_column
        if self.field_mapping:
            out["field_mapping"] = dict(self.field_mapping)
        if self.timestamp_partition:
            out["timestamp_partition"] = dict(self.timestamp_partition)
        return _meta(self, out)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "FileSource":
        return cls(d["path"], d["timestamp_field"], d.get("created_timestamp_field"), d.get("field_mapping"),
                   d["name"], d.get("description", ""), d.get("owner", ""), d.get("tags"),
                   timestamp_partition=d.get("timestamp_partition"))


def _ttl_text(ttl: Optional[timedelta], view: str) -> Optional[str]:
    if ttl is None:
        return None
    if not isinstance(ttl, timedelta):
        raise TypeError(f"feature view {view!r}: ttl must be a datetime.timedelta, got {type(ttl).__name__}")
    if ttl < timedelta(0):
        raise ValueError(f"feature view {view!r}: ttl must not be negative, got {ttl}")
    if ttl == timedelta(0):
        return None  # Feast: a zero ttl means values never expire.
    if ttl % timedelta(milliseconds=1):
        raise ValueError(f"feature view {view!r}: ttl {ttl} is not a whole number of milliseconds")
    ms = ttl // timedelta(milliseconds=1)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _parse_ttl(text: Optional[str]) -> Optional[timedelta]:
    if text is None:
        return None
    total = timedelta(0)
    units = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
             "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
    for n, unit in re.findall(r"(\d+)\s*([a-z]+)", str(text)):
        total += int(n) * units.get(unit, units.get(unit[:1], timedelta(seconds=1)))
    if str(text).strip().isdigit():
        total = timedelta(seconds=int(text))
    return total


def _seconds_text(d: Optional[timedelta], what: str) -> Optional[str]:
    """A window or interval as whole seconds (``"3600s"``)."""
    if d is None:
        return None
    if not isinstance(d, timedelta):
        raise TypeError(f"{what} must be a datetime.timedelta, got {type(d).__name__}")
    if d <= timedelta(0) or d % timedelta(seconds=1):
        raise ValueError(f"{what} must be a positive whole number of seconds, got {d}")
    return f"{d // timedelta(seconds=1)}s"


AGGREGATE_FUNCTIONS = (
    "count", "sum", "mean", "min", "max", "stddev", "variance",
    "first", "last", "last_n", "count_distinct", "approx_count_distinct",
)


class Aggregation:
    """A time-window aggregate feature, as Feast declares it: ``function`` of
    ``column`` over the events of the last ``time_window``.

    ``function`` is one of ``AGGREGATE_FUNCTIONS`` (``avg`` is taken as
    ``mean``); ``count`` without a column counts events; ``last_n`` needs
    ``n``. ``name`` defaults to ``{column}_{function}_{window}``.
    ``slide_interval`` is the view's ``aggregation_interval`` (one per view
    here: give it on the view, or the same on every aggregation).
    """

    def __init__(
        self,
        column: Optional[str] = None,
        function: str = "",
        time_window: Optional[timedelta] = None,
        slide_interval: Optional[timedelta] = None,
        name: Optional[str] = None,
        n: Optional[int] = None,
    ) -> None:
        function = "mean" if function == "avg" else function
        if function not in AGGREGATE_FUNCTIONS:
            raise ValueError(f"aggregation function {function!r} is not one of: {', '.join(AGGREGATE_FUNCTIONS)}")
        if time_window is None:
            raise ValueError(f"aggregation {function} of {column or 'events'}: time_window is required")
        _seconds_text(time_window, f"aggregation {function} of {column or 'events'}: time_window")
        _seconds_text(slide_interval, f"aggregation {function} of {column or 'events'}: slide_interval")
        self.column = column or None
        self.function = function
        self.time_window = time_window
        self.slide_interval = slide_interval
        self.name = name
        self.n = n

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"function": self.function, "window": _seconds_text(self.time_window, "time_window")}
        if self.column:
            out["column"] = self.column
        if self.n is not None:
            out["n"] = self.n
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Aggregation":
        return cls(d.get("column"), d["function"], _parse_ttl(d["window"]), None, d.get("name"), d.get("n"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Aggregation) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_dict().items())))

    def __repr__(self) -> str:
        return f"Aggregation({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


class FeatureView(_Stored):
    """Features computed from one source, keyed by entities, with an optional ttl.

    ``view[["a", "b"]]`` selects some of its features, for feature services.
    """

    def __init__(
        self,
        name: str,
        source: FileSource,
        schema: Optional[Sequence[Field]] = None,
        entities: Optional[Sequence[Union[Entity, str]]] = None,
        ttl: Optional[timedelta] = None,
        online: bool = True,
        description: str = "",
        owner: str = "",
        tags: Optional[Dict[str, str]] = None,
        validation: Optional[Dict[str, Any]] = None,
        aggregations: Optional[Sequence[Aggregation]] = None,
        aggregation_interval: Optional[timedelta] = None,
    ) -> None:
        """``validation`` takes the YAML ``validation:`` rules as a dict, e.g.
        ``{"ranges": {"conv_rate": [0.0, 1.0]}, "max_staleness": "4h"}``.

        ``aggregations`` makes the view compute its features from the
        source's events (its schema then follows from them); windows hop by
        ``aggregation_interval``, which a view served online needs."""
        if not isinstance(source, FileSource):
            raise TypeError(f"feature view {name!r}: source must be a FileSource, got {type(source).__name__}")
        self.name = name
        self.source = source
        self.schema: List[Field] = list(schema or [])
        self.entities: List[Union[Entity, str]] = list(entities or [])
        for e in self.entities:
            if not isinstance(e, (Entity, str)):
                raise TypeError(f"feature view {name!r}: entities must be Entity objects or names, got {e!r}")
        _ttl_text(ttl, name)
        self.ttl = ttl
        self.online = online
        self.description = description
        self.owner = owner
        self.tags = dict(tags or {})
        self.validation: Dict[str, Any] = dict(validation or {})
        self.aggregations: List[Aggregation] = list(aggregations or [])
        for a in self.aggregations:
            if not isinstance(a, Aggregation):
                raise TypeError(f"feature view {name!r}: aggregations must be Aggregation objects, got {a!r}")
        slides = {a.slide_interval for a in self.aggregations if a.slide_interval is not None}
        if aggregation_interval is not None:
            slides.add(aggregation_interval)
        if len(slides) > 1:
            raise ValueError(
                f"feature view {name!r}: aggregations slide by different intervals ({sorted(slides)}); "
                "a view has one aggregation_interval"
            )
        self.aggregation_interval: Optional[timedelta] = next(iter(slides), None)
        _seconds_text(self.aggregation_interval, f"feature view {name!r}: aggregation_interval")

    @property
    def features(self) -> List[Field]:
        """The feature fields (the schema)."""
        return self.schema

    @property
    def batch_source(self) -> FileSource:
        """The source (Feast's name for it)."""
        return self.source

    @property
    def join_keys(self) -> List[str]:
        """Join keys of the view's entities; entities given by name count as their own key
        (views read from the registry carry names only, so ask the store's entities for theirs)."""
        keys: List[str] = []
        for e in self.entities:
            keys.extend(e.join_keys if isinstance(e, Entity) else [e])
        return keys

    @property
    def entity_names(self) -> List[str]:
        return [e.name if isinstance(e, Entity) else e for e in self.entities]

    def __getitem__(self, features: Union[str, Sequence[str]]) -> "FeatureViewProjection":
        if isinstance(features, str):
            features = [features]
        return FeatureViewProjection(self.name, list(features), self)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "source": self.source.name}
        if self.entities:
            out["entities"] = self.entity_names
        if self.schema:
            out["schema"] = [f.to_dict() for f in self.schema]
        ttl = _ttl_text(self.ttl, self.name)
        if ttl is not None:
            out["ttl"] = ttl
        if not self.online:
            out["online"] = False
        if self.validation:
            out["validation"] = dict(self.validation)
        if self.aggregations:
            out["aggregations"] = [a.to_dict() for a in self.aggregations]
        if self.aggregation_interval is not None:
            out["aggregation_interval"] = _seconds_text(self.aggregation_interval, "aggregation_interval")
        return _meta(self, out)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: FileSource) -> "FeatureView":
        return cls(d["name"], source, [Field.from_dict(f) for f in d.get("schema", [])], d.get("entities", []),
                   _parse_ttl(d.get("ttl")), d.get("online", True), d.get("description", ""), d.get("owner", ""),
                   d.get("tags"), d.get("validation"),
                   [Aggregation.from_dict(a) for a in d.get("aggregations", [])],
                   _parse_ttl(d.get("aggregation_interval")))


class FeatureViewProjection:
    """Some features of a view: ``driver_stats[["conv_rate"]]``.

    ``view`` is the view selected from (``None`` when only its name is
    known); applying an on-demand view over a projection applies it too."""

    def __init__(self, name: str, features: List[str], view: Optional[Any] = None) -> None:
        self.name = name
        self.features = features
        self.view = view

    def refs(self) -> List[str]:
        return [f"{self.name}:{f}" for f in self.features]

    def __repr__(self) -> str:
        return f"FeatureViewProjection({self.name!r}, {self.features!r})"


class FeatureService(_Stored):
    """A named, versionable list of features a model consumes."""

    def __init__(
        self,
        name: str,
        features: Iterable[Union[FeatureView, FeatureViewProjection, str]],
        description: str = "",
        owner: str = "",
        tags: Optional[Dict[str, str]] = None,
    ) -> None:
        self.name = name
        self.features = list(features)
        self.description = description
        self.owner = owner
        self.tags = dict(tags or {})

    def refs(self) -> List[str]:
        """Feature references (``view`` or ``view:feature``) in order."""
        return _refs(self.features, f"feature service {self.name!r}")

    def to_dict(self) -> Dict[str, Any]:
        return _meta(self, {"name": self.name, "features": self.refs()})

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "FeatureService":
        return cls(d["name"], d["features"], d.get("description", ""), d.get("owner", ""), d.get("tags"))


def _refs(features: Iterable[Any], where: str) -> List[str]:
    out: List[str] = []
    for f in features:
        if isinstance(f, str):
            out.append(f)
        elif isinstance(f, (FeatureView, OnDemandFeatureView)):
            out.append(f.name)
        elif isinstance(f, FeatureViewProjection):
            out.extend(f.refs())
        else:
            raise TypeError(f"{where}: features must be 'view:feature' strings, feature views, on-demand feature "
                            f"views or view[[...]] selections, got {type(f).__name__}")
    return out


class RequestSource(_Stored):
    """Values a caller passes with each request, for on-demand features.

    Training reads them from the entity table's columns; serving from the
    entity rows, beside the join keys (``{"driver_id": 1001, "val_to_add": 5}``
    or DataFrame columns). Request values are not returned in the response.

    >>> RequestSource(name="vals_to_add", schema=[Field(name="val_to_add", dtype=Int64)])  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        schema: Sequence[Field],
        description: str = "",
        tags: Optional[Dict[str, str]] = None,
        owner: str = "",
    ) -> None:
        if owner:
            raise UnsupportedError(f"request source {name!r}: owner is not kept for request sources; "
                                   "put it on the on-demand views that read it")
        self.name = name
        self.schema: List[Field] = list(schema)
        for f in self.schema:
            if not isinstance(f, Field):
                raise TypeError(f"request source {name!r}: schema must be Field objects, got {f!r}")
        self.description = description
        self.owner = ""
        self.tags = dict(tags or {})

    @property
    def features(self) -> List[Field]:
        """The request fields (the schema)."""
        return self.schema

    def to_dict(self) -> Dict[str, Any]:
        return _meta(self, {"name": self.name, "schema": [f.to_dict() for f in self.schema]})

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RequestSource":
        return cls(d["name"], [Field.from_dict(f) for f in d["schema"]], d.get("description", ""), d.get("tags"))


class OnDemandFeature(Field):
    """A feature of an on-demand view: its name, type and the expression computing it.

    ``expression`` is a SQL scalar expression (DataFusion's dialect:
    arithmetic, ``CASE``, ``COALESCE``, comparisons, math, string, date/time
    and list functions, and functions registered with :func:`feature_store.udf`)
    over the view's inputs: each feature of its feature views and each field
    of its request sources, by name, or as ``source__name`` where two inputs
    share a name. Its type must equal ``dtype`` or widen to it losslessly
    (otherwise ``CAST(... AS DOUBLE)``); nulls propagate as in SQL.
    """

    def __init__(
        self,
        name: str,
        dtype: FeastType,
        expression: str,
        description: str = "",
        tags: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(name, dtype, description, tags)
        if not isinstance(expression, str) or not expression.strip():
            raise ValueError(f"on-demand feature {name!r}: expression must be a non-empty SQL expression string, "
                             f"got {expression!r}")
        self.expression = expression

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "dtype": str(self.dtype), "expression": self.expression}
        if self.description:
            out["description"] = self.description
        if self.tags:
            out["tags"] = dict(self.tags)
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "OnDemandFeature":
        return cls(d["name"], from_name(d["dtype"]), d["expression"], d.get("description", ""), d.get("tags"))

    def __repr__(self) -> str:
        return f"OnDemandFeature(name={self.name!r}, dtype={self.dtype}, expression={self.expression!r})"


OnDemandSource = Union[FeatureView, FeatureViewProjection, RequestSource, str]


class OnDemandFeatureView(_Stored):
    """Features computed at request time from feature views and request sources.

    Each feature is an :class:`OnDemandFeature`: a SQL expression the same
    engine evaluates in training (inside the retrieval's plan) and in serving
    (on the online row), so the two cannot disagree::

        order_request = RequestSource(name="order_request", schema=[Field(name="order_amount", dtype=Float64)])
        order_features = OnDemandFeatureView(
            name="order_features",
            sources=[driver_hourly_stats, order_request],
            features=[
                OnDemandFeature("amount_x_conv", Float64, "order_amount * conv_rate"),
                OnDemandFeature("big_order", Bool, "order_amount > 100 AND avg_daily_trips < 10"),
            ],
        )
        store.apply([order_features])  # applies the views and request sources it reads, too
        store.get_online_features(["order_features:amount_x_conv"],
                                  [{"driver_id": 1001, "order_amount": 120.5}])

    ``sources`` are feature views (or ``view[[...]]`` selections, or names of
    registered views) and request sources (objects or names). Reference the
    features like any others (``"order_features:amount_x_conv"``,
    ``order_features[["big_order"]]``, in feature services too); the inputs
    are read but not returned unless requested. Feast's function-based
    views: :func:`feature_store.on_demand_feature_view`.
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[OnDemandSource],
        features: Sequence[OnDemandFeature],
        description: str = "",
        owner: str = "",
        tags: Optional[Dict[str, str]] = None,
        **feast_options: Any,
    ) -> None:
        if feast_options:
            raise UnsupportedError(
                f"on-demand feature view {name!r}: {', '.join(sorted(feast_options))} not supported; write each "
                "feature as OnDemandFeature(name, dtype, expression), or decorate a function with "
                "@on_demand_feature_view(sources=..., schema=...) as in Feast"
            )
        if isinstance(sources, (str, FeatureView, FeatureViewProjection, RequestSource)):
            sources = [sources]
        self.name = name
        self.sources: List[OnDemandSource] = list(sources)
        for s in self.sources:
            if not isinstance(s, (FeatureView, FeatureViewProjection, RequestSource, str)):
                raise TypeError(f"on-demand feature view {name!r}: sources must be feature views, view[[...]] "
                                f"selections, request sources or their names, got {type(s).__name__}")
        self.features: List[OnDemandFeature] = list(features)
        for f in self.features:
            if not isinstance(f, OnDemandFeature):
                raise TypeError(f"on-demand feature view {name!r}: features must be OnDemandFeature(name, dtype, "
                                f"expression) objects, got {f!r}")
        self.description = description
        self.owner = owner
        self.tags = dict(tags or {})
        # Functions the expressions call, as the registry recorded them at apply.
        self.udfs: List[Dict[str, Any]] = []
        # Set by @on_demand_feature_view: the Python function and how it is called.
        self.function: Optional[Any] = None
        self.mode: Optional[str] = None

    @property
    def schema(self) -> List[OnDemandFeature]:
        """The features (Feast's name for them)."""
        return self.features

    @property
    def source_names(self) -> List[str]:
        return [s if isinstance(s, str) else s.name for s in self.sources]

    def __getitem__(self, features: Union[str, Sequence[str]]) -> FeatureViewProjection:
        if isinstance(features, str):
            features = [features]
        return FeatureViewProjection(self.name, list(features), self)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "name": self.name,
            "sources": self.source_names,
            "features": [f.to_dict() for f in self.features],
        }
        return _meta(self, out)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], sources: Optional[Dict[str, Any]] = None) -> "OnDemandFeatureView":
        """``sources`` maps names to registered objects, used in place of the names where present."""
        known = sources or {}
        view = cls(d["name"], [known.get(s, s) for s in d["sources"]],
                   [OnDemandFeature.from_dict(f) for f in d["features"]], d.get("description", ""),
                   d.get("owner", ""), d.get("tags"))
        view.udfs = list(d.get("udfs", []))
        return view


def to_definitions(objects: Iterable[Any]) -> Dict[str, List[Dict[str, Any]]]:
    """The YAML-file shape of ``objects``; sources and entities a view uses are included."""
    entities: Dict[str, Entity] = {}
    sources: Dict[str, FileSource] = {}
    views: Dict[str, FeatureView] = {}
    services: Dict[str, FeatureService] = {}
    request_sources: Dict[str, RequestSource] = {}
    on_demand_views: Dict[str, OnDemandFeatureView] = {}

    def add(table: Dict[str, Any], obj: Any, kind: str) -> None:
        prev = table.get(obj.name)
        if prev is not None and prev.to_dict() != obj.to_dict():
            raise ValueError(f"two different {kind}s are named {obj.name!r}")
        table[obj.name] = obj

    def add_view(view: FeatureView) -> None:
        add(views, view, "feature view")
        add(sources, view.source, "data source")
        for e in view.entities:
            if isinstance(e, Entity):
                add(entities, e, "entity")

    if isinstance(objects, (Entity, FileSource, FeatureView, FeatureService, RequestSource, OnDemandFeatureView)):
        objects = [objects]
    for obj in objects:
        if isinstance(obj, Entity):
            add(entities, obj, "entity")
        elif isinstance(obj, FileSource):
            add(sources, obj, "data source")
        elif isinstance(obj, FeatureView):
            add_view(obj)
        elif isinstance(obj, FeatureService):
            add(services, obj, "feature service")
        elif isinstance(obj, RequestSource):
            add(request_sources, obj, "request source")
        elif isinstance(obj, OnDemandFeatureView):
            add(on_demand_views, obj, "on-demand feature view")
            for s in obj.sources:
                if isinstance(s, FeatureViewProjection):
                    s = s.view
                if isinstance(s, FeatureView):
                    add_view(s)
                elif isinstance(s, RequestSource):
                    add(request_sources, s, "request source")
        else:
            raise TypeError(
                f"cannot apply {type(obj).__name__}: expected Entity, FileSource, FeatureView, FeatureService, "
                "RequestSource or OnDemandFeatureView"
            )
    out: Dict[str, List[Dict[str, Any]]] = {}
    for key, table in (("entities", entities), ("sources", sources), ("feature_views", views),
                       ("feature_services", services), ("request_sources", request_sources),
                       ("on_demand_feature_views", on_demand_views)):
        if table:
            out[key] = [o.to_dict() for o in table.values()]
    return out
