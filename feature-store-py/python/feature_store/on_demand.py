"""Python functions in on-demand features: :func:`udf` (a function SQL
expressions call by name) and Feast's :func:`on_demand_feature_view`
(a function computing a view's features), which maps onto it.

Registration is process-wide, at decoration time: every
:class:`~feature_store.FeatureStore` of the process, opened before or after,
can evaluate the function (and so can a forked child, which inherits it). A
process that reads a view calling a function must therefore import the
module defining it before reading; otherwise retrieval fails with an error
naming the function.

The registry records each function's name, argument and return types and a
SHA-256 of its source (``inspect.getsource``, or the code object's bytes
where there is no source file). A process whose function has another source
is refused: a feature never silently changes meaning. Apply the definitions
again from the new code to change it deliberately.

Functions run inside the engine: DataFusion calls them with pyarrow arrays,
one batch at a time (the GIL is taken for the call only), in training and in
serving alike. A function must be pure: its result for a row may depend only
on that row's values (no randomness, clock, I/O, or statistics over the batch:
training batches and serving requests group rows differently).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
import types
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow as pa

from . import _internal
from .definitions import Field, FeatureView, FeatureViewProjection, OnDemandFeature, OnDemandFeatureView, RequestSource
from .errors import UnsupportedError
from .types import FeastType

__all__ = ["udf", "UserFunction", "on_demand_feature_view", "registered_udfs", "source_hash"]

_REGISTERED: Dict[str, "UserFunction"] = {}
_LOCK = threading.Lock()


def source_hash(function: Callable[..., Any]) -> str:
    """SHA-256 (hex) of ``function``'s source text, or of its code object where
    Python has no source for it (functions made by ``exec``, in a REPL)."""
    try:
        text = inspect.getsource(function).encode()
    except (OSError, TypeError):
        code = getattr(function, "__code__", None)
        if code is None:
            raise TypeError(f"{function!r} is not a Python function: its source cannot be hashed") from None
        text = _code_bytes(code)
    return hashlib.sha256(text).hexdigest()


def _code_bytes(code: types.CodeType) -> bytes:
    """Bytecode, names and constants, recursively; stable across processes
    (no addresses, no hash-ordered sets)."""
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            parts.append(_code_bytes(c))
        elif isinstance(c, frozenset):
            parts.append(repr(sorted(map(repr, c))).encode())
        else:
            parts.append(repr(c).encode())
    return b"\0".join(parts)


class UserFunction:
    """A Python function registered for SQL expressions (see :func:`udf`).
    Calling it calls the function."""

    def __init__(
        self,
        function: Callable[..., Any],
        name: str,
        input_types: Optional[List[FeastType]],
        return_type: FeastType,
        source_hash: str,
    ) -> None:
        self.function = function
        self.name = name
        self.input_types = input_types
        self.return_type = return_type
        self.source_hash = source_hash
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        args = "..." if self.input_types is None else ", ".join(map(str, self.input_types))
        return f"UserFunction({self.name}({args}) -> {self.return_type}, source {self.source_hash[:12]})"


def _register(
    name: str,
    function: Callable[..., Any],
    call: Callable[..., Any],
    input_types: Optional[Sequence[FeastType]],
    return_type: FeastType,
    label: str,
) -> UserFunction:
    for t in [return_type, *(input_types or [])]:
        if not isinstance(t, FeastType):
            raise TypeError(f"function {name!r}: types must be value types such as Float64 or Array(Int64), got {t!r}")
    digest = source_hash(function)
    types_ = None if input_types is None else [str(t) for t in input_types]
    with _LOCK:
        _internal.register_udf(name, call, types_, str(return_type), digest, label)
        registered = UserFunction(function, name, None if input_types is None else list(input_types), return_type,
                                  digest)
        _REGISTERED[name] = registered
    return registered


def udf(
    name: Optional[str] = None,
    *,
    input_types: Sequence[FeastType],
    return_type: FeastType,
) -> Callable[[Callable[..., Any]], UserFunction]:
    """Registers a vectorised Python function that on-demand expressions call by name.

    The function is called with one ``pyarrow.Array`` per argument (a batch of
    rows, typed as ``input_types``; arguments of other types are cast to them
    where SQL would) and returns one value per row: a ``pyarrow.Array``, or
    anything ``pyarrow.array(..., type=return_type)`` accepts (a list, a numpy
    array, a pandas Series, whose NaN are nulls). An array of another type is
    cast to ``return_type`` if no value is lost. ``name`` defaults to the
    function's name::

        import pyarrow.compute as pc

        @feature_store.udf(input_types=[Float64, Float64], return_type=Float64)
        def ratio(a, b):
            return pc.divide(a, b)

        OnDemandFeature("amount_per_trip", Float64, "ratio(order_amount, CAST(avg_daily_trips AS DOUBLE))")

    Registration is process-wide and immediate (see the module's
    documentation): every store of this process can call it, and the
    registry records its signature and a hash of its source at apply. An
    exception the function raises fails the retrieval with a
    :class:`~feature_store.DataError` naming the function, the exception
    as its ``__cause__``. Registering a name again replaces the function.
    """
    if callable(name):  # @udf(fn, input_types=..., return_type=...) called directly
        function, name = name, None
        return udf(name, input_types=input_types, return_type=return_type)(function)  # type: ignore[return-value]
    if isinstance(input_types, FeastType):
        input_types = [input_types]

    def register(function: Callable[..., Any]) -> UserFunction:
        if isinstance(function, UserFunction):
            function = function.function
        if not callable(function):
            raise TypeError(f"@udf decorates a function, got {type(function).__name__}")
        fname = name or function.__name__
        return _register(fname, function, function, list(input_types), return_type, f'function "{fname}"')

    return register


def registered_udfs() -> Dict[str, UserFunction]:
    """The functions registered in this process, by name (those of
    ``@on_demand_feature_view`` are named ``{view}__{feature}``)."""
    with _LOCK:
        return dict(_REGISTERED)


MODES = ("pandas", "python")


def on_demand_feature_view(
    *,
    sources: Sequence[Union[FeatureView, FeatureViewProjection, RequestSource]],
    schema: Sequence[Field],
    mode: str = "pandas",
    name: Optional[str] = None,
    description: str = "",
    owner: str = "",
    tags: Optional[Dict[str, str]] = None,
    singleton: bool = False,
    entities: Optional[Sequence[Any]] = None,
    write_to_online_store: bool = False,
    track_metrics: bool = False,
    **unsupported: Any,
) -> Callable[[Callable[..., Any]], OnDemandFeatureView]:
    """Feast's decorator: a function computing features from its sources' values.

    Runs Feast definitions such as the quickstart's unchanged::

        @on_demand_feature_view(
            sources=[driver_stats_fv, input_request],
            schema=[Field(name="conv_rate_plus_val1", dtype=Float64)],
        )
        def transformed_conv_rate(inputs: pd.DataFrame) -> pd.DataFrame:
            df = pd.DataFrame()
            df["conv_rate_plus_val1"] = inputs["conv_rate"] + inputs["val_to_add"]
            return df

    The result is an :class:`OnDemandFeatureView` whose feature ``f`` is the
    expression ``{view}__{f}(every input)``, a Python function registered as
    by :func:`udf`. It calls the decorated function once per batch of rows
    (in training, a retrieval batch; in serving, one request), shared by all
    features of the view, and takes column ``f`` of the result. The function
    sees every feature of its feature views (selections ``view[[...]]``
    narrow this) and every field of its request sources, by name and as
    ``view__name``, as:

    - ``mode="pandas"`` (default): a pandas DataFrame; it returns a DataFrame
      (or a dict of columns) with a column per feature in ``schema``.
      Missing values are NaN/None as pandas converts them; NaN returned in a
      float column is a null.
    - ``mode="python"``: a dict of lists; it returns a dict of lists. With
      ``singleton=True``, a dict of one row's values, returning a dict of values.

    Extra returned columns are ignored; the returned values are converted to
    the declared types (a float for an ``Int64`` feature that is not whole
    is an error).

    Not supported (each raises a clear error): ``mode`` other than pandas and
    python (substrait, ray, spark, ...); ``write_to_online_store=True`` (values
    computed at write time); ``entities``; ``aggregations``, ``explode`` and
    other options; ``track_metrics=True``; sources given by name, other
    on-demand views as sources, and feature views without a declared schema
    (inferred from data, or aggregation views): select their features with
    ``view[["a", "b"]]``; a function reading entity keys or the event
    timestamp (only features and request fields are passed); ``schema``
    inferred from the function; ``udf``, ``udf_string`` and
    ``feature_transformation`` (Feast's serialized forms): the registry
    keeps a hash of the function's source, not the function, so every
    process reading the view must import the module defining it. Functions
    must compute each row from that row alone (no statistics over the
    batch: training batches and requests group rows differently).
    """
    if unsupported:
        names = ", ".join(sorted(unsupported))
        raise UnsupportedError(f"@on_demand_feature_view: {names} not supported here (see the docstring's list)")
    if mode not in MODES:
        raise UnsupportedError(
            f"@on_demand_feature_view: mode={mode!r} is not supported; use 'pandas' or 'python', or write the "
            "features as SQL expressions (OnDemandFeatureView with OnDemandFeature)"
        )
    if write_to_online_store:
        raise UnsupportedError(
            "@on_demand_feature_view: write_to_online_store=True is not supported; features are computed when read"
        )
    if entities:
        raise UnsupportedError("@on_demand_feature_view: entities are not supported (its inputs' views have them)")
    if track_metrics:
        raise UnsupportedError("@on_demand_feature_view: track_metrics=True is not supported")
    if singleton and mode != "python":
        raise UnsupportedError("@on_demand_feature_view: singleton=True needs mode='python'")
    if isinstance(sources, (FeatureView, FeatureViewProjection, RequestSource, str)):
        sources = [sources]
    sources = list(sources)

    def decorate(function: Callable[..., Any]) -> OnDemandFeatureView:
        view_name = name or function.__name__
        where = f"on-demand feature view {view_name!r}"
        inputs = _inputs(where, sources)
        outputs = list(schema or [])
        if not outputs:
            raise UnsupportedError(f"{where}: give schema=[Field(...)] for its features; it is not inferred")
        for f in outputs:
            if not isinstance(f, Field):
                raise TypeError(f"{where}: schema must be Field objects, got {f!r}")
        transform = _Transform(function, mode, singleton, inputs, [f.name for f in outputs])
        label = f'function "{function.__name__}" of on-demand feature view "{view_name}"'
        args = ", ".join(f'"{q}"' for q, _ in inputs)
        features = []
        for f in outputs:
            fname = f"{view_name}__{f.name}"
            _register(fname, function, functools.partial(transform.column, f.name), None, f.dtype, label)
            features.append(OnDemandFeature(f.name, f.dtype, f"{fname}({args})", f.description, f.tags))
        view = OnDemandFeatureView(view_name, sources, features, description, owner, tags)
        view.function = function
        view.mode = mode
        return view

    return decorate


def _inputs(where: str, sources: Sequence[Any]) -> List[Tuple[str, Optional[str]]]:
    """(qualified name, plain name or None where two inputs share it) of every input, in order."""
    named: List[Tuple[str, str]] = []
    for s in sources:
        if isinstance(s, FeatureViewProjection) and not isinstance(s.view, OnDemandFeatureView):
            named.extend((s.name, f) for f in s.features)
        elif isinstance(s, FeatureView):
            if not s.schema:
                raise UnsupportedError(
                    f"{where}: feature view {s.name!r} declares no schema (inferred from data, or aggregations); "
                    f"select the features the function reads: {s.name}[[\"a\", \"b\"]]"
                )
            named.extend((s.name, f.name) for f in s.schema)
        elif isinstance(s, RequestSource):
            named.extend((s.name, f.name) for f in s.schema)
        elif isinstance(s, (OnDemandFeatureView, FeatureViewProjection)):
            raise UnsupportedError(f"{where}: on-demand feature views cannot be sources of others ({s.name!r})")
        elif isinstance(s, str):
            raise UnsupportedError(
                f"{where}: source {s!r} is a name; pass the FeatureView or RequestSource object, so that the "
                "function's inputs are known when it is defined"
            )
        else:
            raise TypeError(f"{where}: sources must be feature views, view[[...]] selections or request sources, "
                            f"got {type(s).__name__}")
    counts: Dict[str, int] = {}
    for _, f in named:
        counts[f] = counts.get(f, 0) + 1
    return [(f"{s}__{f}", f if counts[f] == 1 else None) for s, f in named]


def _identity(a: pa.Array) -> Tuple[Any, ...]:
    return (a.type, a.offset, len(a), tuple(0 if b is None else b.address for b in a.buffers()))


class _Transform:
    """One decorated function, called once per batch for all features of its view.

    Each feature's function asks for its column; the batch's result is kept
    until every feature took its column (or the next batch comes). A batch is
    recognised by its arrays' buffer addresses: the cached arrays keep those
    buffers alive, so no other data can be at the same addresses meanwhile.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        mode: str,
        singleton: bool,
        inputs: List[Tuple[str, Optional[str]]],
        outputs: List[str],
    ) -> None:
        self.function = function
        self.mode = mode
        self.singleton = singleton
        self.inputs = inputs
        self.outputs = outputs
        self._lock = threading.Lock()
        self._cache: Optional[Tuple[Any, Sequence[pa.Array], Dict[str, Any], set]] = None

    def column(self, feature: str, *arrays: pa.Array) -> Any:
        key = tuple(_identity(a) for a in arrays)
        with self._lock:
            cached = self._cache
        if cached is None or cached[0] != key or feature in cached[3]:
            cached = (key, arrays, self._run(arrays), set())
        cached[3].add(feature)
        with self._lock:
            self._cache = None if len(cached[3]) == len(self.outputs) else cached
        return cached[2][feature]

    def _names(self) -> Tuple[List[str], List[int]]:
        """Column names the function sees (plain names first, then qualified) and their input indexes."""
        plain = [(p, i) for i, (_, p) in enumerate(self.inputs) if p is not None]
        names = [p for p, _ in plain] + [q for q, _ in self.inputs]
        return names, [i for _, i in plain] + list(range(len(self.inputs)))

    def _run(self, arrays: Sequence[pa.Array]) -> Dict[str, Any]:
        names, index = self._names()
        where = f"function {self.function.__name__!r}"
        if self.mode == "pandas":
            import pandas as pd

            frame = pa.Table.from_arrays([arrays[i] for i in index], names=names).to_pandas()
            out = self.function(frame)
            if isinstance(out, dict):
                out = pd.DataFrame(out)
            if not isinstance(out, pd.DataFrame):
                raise TypeError(f"{where} (mode='pandas') must return a pandas DataFrame, got {type(out).__name__}")
            # Positions, not index labels: pyarrow converts a Series' values in order.
            columns = {c: out[c] for c in self.outputs if c in out.columns}
        else:
            values = {n: arrays[i].to_pylist() for n, i in zip(names, index)}
            if self.singleton:
                rows = len(arrays[0]) if arrays else 0
                results = [self.function({n: v[r] for n, v in values.items()}) for r in range(rows)]
                for r in results:
                    if not isinstance(r, dict):
                        raise TypeError(f"{where} (mode='python', singleton=True) must return a dict, "
                                        f"got {type(r).__name__}")
                columns = {c: [r.get(c) for r in results] for c in self.outputs if all(c in r for r in results)}
            else:
                out = self.function(values)
                if not isinstance(out, dict):
                    raise TypeError(f"{where} (mode='python') must return a dict of lists, got {type(out).__name__}")
                columns = {c: out[c] for c in self.outputs if c in out}
        missing = [c for c in self.outputs if c not in columns]
        if missing:
            raise ValueError(f"{where} returned no {', '.join(map(repr, missing))}; its schema declares "
                             f"{', '.join(map(repr, self.outputs))}")
        return columns
