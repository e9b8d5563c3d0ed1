"""The :class:`FeatureStore` handle: Feast's method names over the Rust library."""

from __future__ import annotations

import difflib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import pyarrow as pa

from . import _internal
from .definitions import (
    Entity,
    FeatureService,
    FeatureView,
    FeatureViewProjection,
    FileSource,
    OnDemandFeatureView,
    RequestSource,
    _refs,
    to_definitions,
)
from .errors import DataError, InvalidArgumentError, NotFoundError, ValidationError

__all__ = ["FeatureStore", "RetrievalJob", "PushMode", "MaterializeReport", "ApplyResult", "Plan"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SQL = re.compile(r"^[\s(]*(select|with)\b", re.IGNORECASE)


class PushMode(str, Enum):
    """Where :meth:`FeatureStore.push` writes."""

    ONLINE = "online"
    OFFLINE = "offline"
    ONLINE_AND_OFFLINE = "online_and_offline"


@dataclass
class Plan:
    """What an apply changes. ``changes`` are dicts with kind, name, action,
    details and breaking; ``warnings`` name source files a later run would
    refuse (also issued as Python warnings); ``str(plan)`` is the CLI's text."""

    changes: List[Dict[str, Any]]
    text: str
    warnings: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        return bool(self.changes)


@dataclass
class ApplyResult(Plan):
    """The outcome of :meth:`FeatureStore.apply`."""

    version: int = 0
    written: bool = False
    attempts: int = 1


def _warn_files(found: List[str]) -> None:
    for w in found:
        warnings.warn(w, stacklevel=3)


@dataclass
class MaterializeReport:
    """Per view: window, rows read, entities written, rows skipped as older,
    seconds, outcome and the data-quality report."""

    views: List[Dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    run_id: str = ""

    @property
    def failed_views(self) -> List[Dict[str, Any]]:
        """Views whose window failed validation (nothing written, watermark unchanged)."""
        return [v for v in self.views if v.get("outcome") in ("validation_failed", "failed")]

    def _raise_on_failure(self) -> "MaterializeReport":
        if self.failed_views:
            lines = []
            for v in self.failed_views:
                for r in (v.get("validation") or {}).get("results", []):
                    if not r["passed"]:
                        what = f" {r['feature']}" if r.get("feature") else ""
                        lines.append(f"{v['view']}: {r['rule']}{what}: observed {r['observed']}, threshold {r['threshold']}")
            err = ValidationError("validation failed; nothing written for these views:\n  " + "\n  ".join(lines))
            err.report = self
            raise err
        return self

    @property
    def rows_read(self) -> int:
        return sum(v["rows_read"] for v in self.views)

    @property
    def entities_written(self) -> int:
        return sum(v["entities_written"] for v in self.views)


def _micros(value: Union[datetime, date, str, Any], what: str) -> int:
    """µs since the epoch; naive datetimes are UTC, as everywhere in this library."""
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidArgumentError(f"{what}: {value!r} is not an ISO 8601 time") from None
    if type(value).__name__ == "datetime64":  # numpy.datetime64: via its µs count, naive (UTC)
        value = _EPOCH.replace(tzinfo=None) + timedelta(microseconds=int(value.astype("datetime64[us]").astype("int64")))
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        value = value.to_pydatetime()
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, date or ISO 8601 string, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _view_names(feature_views: Any) -> Optional[List[str]]:
    """View names from names or FeatureView objects; one name alone is one view, not its letters."""
    if feature_views is None:
        return None
    if isinstance(feature_views, (str, FeatureView)):
        feature_views = [feature_views]
    return [v.name if isinstance(v, FeatureView) else v for v in feature_views]


def _feature_args(features: Any, feature_service: Any = None) -> Dict[str, Any]:
    if feature_service is not None:
        if features is not None:
            raise InvalidArgumentError("pass features or feature_service, not both")
        features = feature_service
    if isinstance(features, FeatureService):
        return {"service": features.name}
    if isinstance(features, str):
        # One reference, or a feature service by name when it has no ':'.
        return {"features": [features]} if ":" in features else {"service": features}
    if features is None:
        raise InvalidArgumentError("no features requested: pass a list of 'view:feature' or a FeatureService")
    return {"features": _refs(features, "features")}


def _pandas_to_arrow(df: Any, what: str = "entity_df") -> pa.Table:
    duplicated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if duplicated:
        raise DataError(f"{what} has more than one column named {', '.join(map(repr, duplicated))}")
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError) as whole:
        for name in df.columns:
            try:
                pa.Table.from_pandas(df[[name]], preserve_index=False)
            except Exception as e:  # noqa: BLE001 - report the first bad column
                raise DataError(
                    f"{what} column {name!r} (pandas dtype {df[name].dtype}) cannot be converted to Arrow: {e}"
                ) from e
        raise DataError(f"{what} cannot be converted to Arrow: {whole}") from whole
    # A categorical of numbers is its numbers (a join key compares by value);
    # categoricals of strings stay dictionary-encoded, which keys accept.
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type) and not (
            pa.types.is_string(field.type.value_type) or pa.types.is_large_string(field.type.value_type)
        ):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


def _is_pandas(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas" and hasattr(obj, "columns") and hasattr(obj, "dtypes")


def _is_polars(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "polars"


def _to_arrow_input(data: Any, what: str) -> Any:
    """An object the native layer reads through the Arrow C stream interface."""
    if _is_pandas(data):
        return _pandas_to_arrow(data, what)
    if _is_polars(data):
        if hasattr(data, "collect") and not hasattr(data, "to_arrow"):  # LazyFrame
            data = data.collect()
        return data.to_arrow()
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__") or isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, dict):
        return pa.table(data)
    raise TypeError(
        f"{what} must be a pandas or polars DataFrame, a pyarrow Table, RecordBatch or RecordBatchReader, "
        f"an object with __arrow_c_stream__, a Parquet path or a SQL string; got {type(data).__name__}"
    )


class _Config(dict):
    """A dict whose keys read as attributes, nested too."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return _Config(value) if isinstance(value, dict) else value


class RetrievalJob:
    """A point-in-time join, run when a result is asked for.

    Each ``to_*`` call runs the retrieval (entity rows from a one-shot reader
    can be retrieved once). Features are checked when the job is created, so
    unknown names fail at once.
    """

    def __init__(self, store: "_internal.Store", request: Dict[str, Any], output_names: List[str]) -> None:
        self._store = store
        self._request = request
        self._output_names = output_names
        self._reader_used = False
        self._saved: Optional[str] = None

    @property
    def feature_names(self) -> List[str]:
        """Names of the feature columns the result will have, in order."""
        return list(self._output_names)

    def _run(self) -> "_internal.HistoricalResult":
        if self._saved is not None:
            return self._store.read_dataset(self._saved)
        self._use_entity_rows()
        return self._store.historical(**self._request)

    def _use_entity_rows(self) -> None:
        table = self._request.get("table")
        if isinstance(table, pa.RecordBatchReader):
            # A reader can be read once; tables, frames and other exporters can be re-exported.
            if self._reader_used:
                raise InvalidArgumentError(
                    "the entity rows came from a one-shot stream that was already read; "
                    "pass a Table or DataFrame to retrieve more than once"
                )
            self._reader_used = True

    def to_batches(self) -> pa.RecordBatchReader:
        """A streaming ``pyarrow.RecordBatchReader``: the join runs as batches are read."""
        return self._run().to_reader()

    def to_arrow(self) -> pa.Table:
        """The whole result as a ``pyarrow.Table`` (buffers shared with Rust, not copied)."""
        return self._run().to_table()

    def to_df(self, **to_pandas_kwargs: Any) -> Any:
        """The whole result as a pandas DataFrame (one row per entity row, in input order).

        Keyword arguments go to ``pyarrow.Table.to_pandas``. Without them,
        float columns are filled in Rust straight into writable numpy arrays
        (NaN where null, as pyarrow gives them) and pyarrow converts the rest,
        including float columns an entity frame gave a nullable dtype
        (``Float64``): the same frame as ``to_arrow().to_pandas()``, one block
        per float column instead of one consolidated block."""
        if to_pandas_kwargs:
            return self.to_arrow().to_pandas(**to_pandas_kwargs)
        names, floats, rest = self._run().to_pandas_parts()
        if all(a is None for a in floats):
            return rest.to_pandas()
        import pandas as pd

        other = rest.to_pandas() if rest.num_columns else None
        return pd.DataFrame(
            {name: other[name] if array is None else array for name, array in zip(names, floats)}, copy=False
        )

    to_pandas = to_df

    def to_polars(self) -> Any:
        """The whole result as a polars DataFrame."""
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def to_parquet(
        self, path: Union[str, os.PathLike], rows_per_file: Optional[int] = None, **writer_kwargs: Any
    ) -> int:
        """Streams the result into a Parquet file; returns the number of rows written.

        A path inside a registered data source is refused: the file would
        replace or add to that source's data. A local file is written beside
        the target and renamed over it at the end, so a failed run leaves any
        previous file whole, and the target may be the entity file being read.

        A path ending in ``/`` (a folder, local or ``s3://bucket/prefix/``)
        gets Parquet files of ``rows_per_file`` rows (default 1,000,000)
        written where the join runs (on a cluster, by the executors) and a
        ``_manifest.json`` listing them in row order, as the CLI's
        ``--output DIR/`` does."""
        import pyarrow.parquet as pq

        target = os.fspath(path)
        if str(target).endswith("/"):
            if writer_kwargs:
                raise InvalidArgumentError(
                    f"writer options ({', '.join(sorted(writer_kwargs))}) apply to a single file; "
                    "a folder output is written by the store"
                )
            if self._saved is not None:
                raise InvalidArgumentError(
                    "a saved dataset is already stored; write it to a .parquet file, or retrieve again to write a folder"
                )
            self._use_entity_rows()
            manifest = json.loads(
                self._store.write_historical_folder(folder=str(target), rows_per_file=rows_per_file, **self._request)
            )
            return int(manifest["rows"])
        if rows_per_file is not None:
            raise InvalidArgumentError("rows_per_file applies to a folder output (a path ending in /)")
        self._store.check_output(os.path.abspath(target))
        local = "://" not in str(target)
        partial = f"{target}.partial-{os.getpid()}" if local else str(target)
        reader = self.to_batches()
        rows = 0
        try:
            with pq.ParquetWriter(partial, reader.schema, **writer_kwargs) as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
            if local:
                os.replace(partial, target)
        except BaseException:
            if local:
                try:
                    os.remove(partial)
                except OSError:
                    pass
            raise
        return rows

    def schema(self) -> pa.Schema:
        return self._run().schema()


class SavedDataset(RetrievalJob):
    """A training set saved with a manifest of what it was built from.

    ``to_*`` methods read the stored output (not a new join); ``verify()``
    recomputes it from the recorded inputs and reports what changed.
    """

    def __init__(self, store: "_internal.Store", manifest: Dict[str, Any]) -> None:
        # The output's feature columns: the views' (but inputs of on-demand
        # features nobody requested), then the on-demand features.
        names = [n for v in manifest["views"] for n in v["output_names"] if not n.startswith("__on_demand_input__")]
        names += [n for s in manifest.get("on_demand", []) for n in s["output_names"]]
        super().__init__(store, {}, names)
        self._saved = manifest["name"]
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def location(self) -> str:
        """URL of the stored output Parquet file."""
        return self.manifest["output"]["file"]["location"]

    def verify(self) -> Dict[str, Any]:
        """``{"identical": bool, "findings": [{kind, subject, detail}], "recomputed_hash", "text"}``."""
        return json.loads(self._store.verify_dataset(self.name))

    def __repr__(self) -> str:
        return f"SavedDataset({self.name!r}, rows={self.manifest['output']['rows']}, location={self.location!r})"


def _wait_for_interrupt(handle: Any) -> None:
    """Waits while ``handle`` runs, until Ctrl-C or SIGTERM (SIGTERM only on
    the main thread)."""
    import signal
    import time

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _term)
    except ValueError:  # not the main thread: Ctrl-C only
        pass
    try:
        while handle.running():
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Ingestion:
    """Stream ingestion running in the background (:meth:`FeatureStore.ingest`)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def running(self) -> bool:
        return self._handle.running()

    def stop(self) -> List[Dict[str, Any]]:
        """Stops after logging and committing what was received; returns each
        source's totals (``received``, ``ingested``, ``dead_lettered``,
        ``offline_rows``, ``committed``, ...). Raises what stopped it, if it failed."""
        return json.loads(self._handle.stop())

    def __enter__(self) -> "Ingestion":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle.running():
            self.stop()


class FeatureServer:
    """A running feature server (:meth:`FeatureStore.serve`)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    @property
    def url(self) -> str:
        """``http://host:port`` (``https`` with TLS)."""
        return self._handle.url

    @property
    def port(self) -> int:
        return self._handle.port

    @property
    def grpc_port(self) -> Optional[int]:
        return self._handle.grpc_port

    def running(self) -> bool:
        return self._handle.running()

    def stop(self) -> None:
        """Stops accepting, finishes requests in flight, and returns."""
        self._handle.stop()

    def __enter__(self) -> "FeatureServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FeatureServer({self.url!r}, running={self.running()})"


class FeatureStore:
    """An opened feature store.

    ``FeatureStore(repo_path=".")`` reads ``feature_store.yaml`` in the repo
    folder; ``FeatureStore(config={...})`` takes the same settings as a dict
    (relative paths resolve against ``repo_path``, default the current folder).
    """

    def __init__(
        self,
        repo_path: Optional[Union[str, os.PathLike]] = None,
        config: Optional[Dict[str, Any]] = None,
        fs_yaml_file: Optional[Union[str, os.PathLike]] = None,
    ) -> None:
        if fs_yaml_file is not None:
            if config is not None:
                raise InvalidArgumentError("pass config or fs_yaml_file, not both")
            text = Path(fs_yaml_file).read_text()
            base = Path(repo_path) if repo_path is not None else Path(fs_yaml_file).resolve().parent
            self._store = _internal.Store.from_config(text, str(base))
        elif config is not None:
            if not isinstance(config, dict):
                raise TypeError(f"config must be a dict, got {type(config).__name__}")
            base = Path(repo_path) if repo_path is not None else Path.cwd()
            self._store = _internal.Store.from_config(json.dumps(config), str(base))
        else:
            self._store = _internal.Store.open(str(repo_path if repo_path is not None else "."))

    def __repr__(self) -> str:
        return f"FeatureStore(project={self.project!r}, repo_path={str(self.repo_path)!r})"

    @property
    def project(self) -> str:
        return self._store.project

    @property
    def repo_path(self) -> Path:
        return Path(self._store.repo_path)

    @property
    def config(self) -> "_Config":
        """The configuration: a dict whose keys also read as attributes (``store.config.project``)."""
        return _Config(json.loads(self._store.config_json()))

    def refresh_registry(self) -> None:
        """Re-reads the registry now instead of after the cache ttl."""
        self._store.refresh_registry()

    def version(self) -> str:
        return _internal.__version__

    # Registry

    def apply(self, objects: Optional[Iterable[Any]] = None, partial: bool = True) -> ApplyResult:
        """Registers objects (with the sources and entities their views use).

        With ``partial=True`` (Feast's behaviour) other registered objects
        stay; with ``partial=False`` the objects are the whole project and the
        rest is removed. Without objects, the repo folder's YAML files are
        applied as the whole project. Safe under concurrent writers.
        """
        defs = None if objects is None else json.dumps(to_definitions(objects))
        out = json.loads(self._store.apply(defs, partial))
        _warn_files(out["warnings"])
        return ApplyResult(
            changes=out["changes"],
            text=out["text"],
            warnings=out["warnings"],
            version=out["version"],
            written=out["written"],
            attempts=out["attempts"],
        )

    def plan(self, objects: Optional[Iterable[Any]] = None, partial: bool = True) -> Plan:
        """What :meth:`apply` with the same arguments would change."""
        defs = None if objects is None else json.dumps(to_definitions(objects))
        out = json.loads(self._store.plan(defs, partial))
        _warn_files(out["warnings"])
        return Plan(out["changes"], out["text"], out["warnings"])

    def _records(self, kind: str) -> List[Dict[str, Any]]:
        return json.loads(self._store.list(kind))

    def list_entities(self) -> List[Entity]:
        return [Entity.from_dict(r["spec"])._stamp(r) for r in self._records("entity")]  # type: ignore[misc]

    def list_data_sources(self) -> List[FileSource]:
        return [FileSource.from_dict(r["spec"])._stamp(r) for r in self._records("data_source")]  # type: ignore[misc]

    def list_feature_views(self, tags: Optional[Dict[str, str]] = None) -> List[FeatureView]:
        """Registered views; with ``tags``, only views carrying all of them."""
        sources = {s.name: s for s in self.list_data_sources()}
        views = [
            FeatureView.from_dict(r["spec"], sources[r["spec"]["source"]])._stamp(r)  # type: ignore[misc]
            for r in self._records("feature_view")
        ]
        if tags:
            views = [v for v in views if all(v.tags.get(k) == val for k, val in tags.items())]
        return views

    def list_feature_services(self) -> List[FeatureService]:
        return [FeatureService.from_dict(r["spec"])._stamp(r) for r in self._records("feature_service")]  # type: ignore[misc]

    def list_request_sources(self) -> List[RequestSource]:
        return [RequestSource.from_dict(r["spec"])._stamp(r) for r in self._records("request_source")]  # type: ignore[misc]

    def list_on_demand_feature_views(self, tags: Optional[Dict[str, str]] = None) -> List[OnDemandFeatureView]:
        """Registered on-demand views, their sources as registered objects; with
        ``tags``, only views carrying all of them. ``udfs`` lists the functions
        each view's expressions call, as recorded at apply."""
        records = self._records("on_demand_feature_view")
        if tags:
            records = [r for r in records if all((r["spec"].get("tags") or {}).get(k) == v for k, v in tags.items())]
        if not records:
            return []
        known: Dict[str, Any] = {v.name: v for v in self.list_feature_views()}
        known.update({s.name: s for s in self.list_request_sources()})
        return [OnDemandFeatureView.from_dict(r["spec"], known)._stamp(r) for r in records]  # type: ignore[misc]

    def _get(self, objects: List[Any], kind: str, name: str) -> Any:
        for o in objects:
            if o.name == name:
                return o
        names = sorted(o.name for o in objects)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
        if close:
            hint = "did you mean " + " or ".join(f'"{c}"' for c in close) + "?"
        else:
            hint = "registered: " + (", ".join(names) or "none")
        err = NotFoundError(f'{kind} "{name}" not found; {hint}')
        err.kind, err.name, err.hint = kind, name, hint
        raise err

    def get_entity(self, name: str) -> Entity:
        return self._get(self.list_entities(), "entity", name)

    def get_data_source(self, name: str) -> FileSource:
        return self._get(self.list_data_sources(), "data source", name)

    def get_feature_view(self, name: str) -> FeatureView:
        return self._get(self.list_feature_views(), "feature view", name)

    def get_feature_service(self, name: str) -> FeatureService:
        return self._get(self.list_feature_services(), "feature service", name)

    def get_request_source(self, name: str) -> RequestSource:
        return self._get(self.list_request_sources(), "request source", name)

    def get_on_demand_feature_view(self, name: str) -> OnDemandFeatureView:
        return self._get(self.list_on_demand_feature_views(), "on-demand feature view", name)

    def describe(self, name: str) -> List[Dict[str, Any]]:
        """Every registered object named ``name``, with a view's watermark, as dicts."""
        return json.loads(self._store.describe(name))

    # Offline

    def get_historical_features(
        self,
        entity_df: Any,
        features: Optional[Union[Sequence[Any], FeatureService, str]] = None,
        full_feature_names: bool = False,
        *,
        feature_service: Optional[Union[FeatureService, str]] = None,
        timestamp_column: str = "event_timestamp",
        save_as: Optional[str] = None,
        save_to: Optional[Union[str, os.PathLike]] = None,
    ) -> RetrievalJob:
        """Point-in-time correct features for each entity row, as of its timestamp.

        ``entity_df`` is a pandas or polars DataFrame, a pyarrow Table or
        RecordBatchReader, any object with ``__arrow_c_stream__``, a Parquet or
        CSV path or URL, or a SQL query over the registered sources. Naive
        timestamps are taken as UTC. The result has exactly one row per entity
        row, in input order. On-demand features read their request fields
        from the entity table's columns of the same names.

        With ``save_as="name"`` the join runs now: its output is written as
        Parquet (to ``save_to``, default the dataset's folder beside the
        registry), a copy of the entity rows is kept, and a manifest is recorded
        (see ``get_saved_dataset``); the returned job reads the saved rows.
        """
        fargs = _feature_args(features, feature_service)
        request: Dict[str, Any] = dict(fargs, full_feature_names=full_feature_names, timestamp_column=timestamp_column)
        if isinstance(entity_df, (str, os.PathLike)):
            text = os.fspath(entity_df)
            request["sql" if _SQL.match(text) else "path"] = text
        else:
            request["table"] = _to_arrow_input(entity_df, "entity_df")
        if save_to is not None and save_as is None:
            raise InvalidArgumentError("save_to names where a saved dataset goes; give save_as='name' too")
        if save_as is not None:
            output = None if save_to is None else os.fspath(save_to)
            if output is not None and "://" not in output:
                output = os.path.abspath(output)
            manifest = json.loads(self._store.save_dataset(save_as, output=output, **request))
            return SavedDataset(self._store, manifest)
        names = self._store.resolve(fargs.get("features"), fargs.get("service"), full_feature_names)
        return RetrievalJob(self._store, request, names)

    def get_saved_dataset(self, name: str) -> SavedDataset:
        """A dataset saved with ``get_historical_features(..., save_as=name)`` or ``feature-store historical --save``."""
        return SavedDataset(self._store, json.loads(self._store.get_dataset(name)))

    def list_saved_datasets(self) -> List[SavedDataset]:
        """Every saved dataset of the project, by name."""
        return [self.get_saved_dataset(r["name"]) for r in json.loads(self._store.list_datasets())]

    def delete_saved_dataset(self, name: str) -> Dict[str, Any]:
        """Removes dataset ``name`` and deletes the files of its save folder; returns
        ``{"deleted": [...], "kept": [...]}`` (an explicit ``save_to`` file is kept)."""
        return json.loads(self._store.delete_dataset(name))

    def verify_dataset(self, name: str) -> Dict[str, Any]:
        """Recomputes dataset ``name`` from its recorded inputs; see ``SavedDataset.verify``."""
        return json.loads(self._store.verify_dataset(name))

    def profile(
        self,
        feature_view: Union[str, FeatureView],
        start_date: Optional[Union[datetime, str]] = None,
        end_date: Optional[Union[datetime, str]] = None,
        save: bool = True,
    ) -> Dict[str, Any]:
        """Summarizes a view's features over ``[start_date, end_date]`` (default all
        history up to now) and, when ``save``, stores it as the reference its
        ``drift`` rule compares later windows with."""
        view = feature_view.name if isinstance(feature_view, FeatureView) else feature_view
        start = None if start_date is None else _micros(start_date, "start_date")
        end = _micros(datetime.now(timezone.utc) if end_date is None else end_date, "end_date")
        return json.loads(self._store.profile(view, start, end, save))

    # Online

    def materialize(
        self,
        start_date: Union[datetime, str],
        end_date: Union[datetime, str],
        feature_views: Optional[Sequence[Union[str, FeatureView]]] = None,
    ) -> MaterializeReport:
        """Writes the newest value per entity with event time in ``[start_date, end_date]``
        (both inclusive) to the online store and advances the views' watermarks."""
        views = _view_names(feature_views)
        out = json.loads(self._store.materialize(_micros(start_date, "start_date"), _micros(end_date, "end_date"), views))
        return MaterializeReport(out["views"], out["seconds"], out["run_id"])._raise_on_failure()

    def materialize_incremental(
        self,
        end_date: Optional[Union[datetime, str]] = None,
        feature_views: Optional[Sequence[Union[str, FeatureView]]] = None,
    ) -> MaterializeReport:
        """Materializes each view from its watermark (first run: ``end_date - ttl``) to ``end_date`` (default now)."""
        end = datetime.now(timezone.utc) if end_date is None else end_date
        views = _view_names(feature_views)
        out = json.loads(self._store.materialize_incremental(_micros(end, "end_date"), views))
        return MaterializeReport(out["views"], out["seconds"], out["run_id"])._raise_on_failure()

    def validate(
        self,
        feature_views: Optional[Sequence[Union[str, FeatureView]]] = None,
        start_date: Optional[Union[datetime, str]] = None,
        end_date: Optional[Union[datetime, str]] = None,
    ) -> List[Dict[str, Any]]:
        """Checks views' data in ``[start_date, end_date]`` (default: all history
        up to now) against their validation rules, writing nothing. One report
        dict per view: ``results`` (rule, feature, observed, threshold, passed,
        samples) and ``warnings``."""
        views = _view_names(feature_views)
        start = None if start_date is None else _micros(start_date, "start_date")
        end = _micros(datetime.now(timezone.utc) if end_date is None else end_date, "end_date")
        return json.loads(self._store.validate(views, start, end))

    def push(self, feature_view_name: str, df: Any, to: Union[PushMode, str] = PushMode.ONLINE) -> int:
        """Validates rows of one view against its schema and writes them; returns rows written.

        Older rows than the stored ones are skipped, so out-of-order pushes converge.
        ``to`` may also append the rows to the offline source as a new Parquet file.
        """
        mode = to.value if isinstance(to, PushMode) else str(to)
        written, _skipped = self._store.push(feature_view_name, _to_arrow_input(df, "push"), mode)
        return written

    def write_to_online_store(self, feature_view_name: str, df: Any) -> int:
        """Feast's name for ``push(view, df, to=PushMode.ONLINE)``."""
        return self.push(feature_view_name, df, to=PushMode.ONLINE)

    def write_to_offline_store(self, feature_view_name: str, df: Any) -> int:
        """Feast's name for ``push(view, df, to=PushMode.OFFLINE)``: a new Parquet file in the source's folder."""
        return self.push(feature_view_name, df, to=PushMode.OFFLINE)

    def serve(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        grpc_port: Optional[int] = None,
        tls_cert: Optional[Union[str, os.PathLike]] = None,
        tls_key: Optional[Union[str, os.PathLike]] = None,
        api_keys: Optional[List[str]] = None,
        allow_unauthenticated: bool = False,
        background: bool = False,
    ) -> "FeatureServer":
        """Serves this store over HTTP and gRPC (Feast's endpoints) from the Rust server.

        With ``background=False`` (Feast's ``serve``) this blocks until
        Ctrl-C or SIGTERM, then finishes requests in flight. With
        ``background=True`` it returns at once; call ``stop()`` on the
        result (or use it as a context manager). Settings of the config's
        ``feature_server:`` section apply; arguments override them; port 0
        picks a free port (read it from ``.port``).
        """
        handle = self._store.serve(
            host=host,
            port=port,
            grpc_port=grpc_port,
            tls_cert=None if tls_cert is None else os.fspath(tls_cert),
            tls_key=None if tls_key is None else os.fspath(tls_key),
            api_keys=api_keys,
            allow_unauthenticated=allow_unauthenticated,
        )
        server = FeatureServer(handle)
        if background:
            return server
        try:
            _wait_for_interrupt(handle)
        finally:
            server.stop()
        return server

    def ingest(
        self,
        feature_views: Optional[Sequence[Union[str, FeatureView]]] = None,
        consumer: Optional[str] = None,
        stop_when_idle: Optional[Union[float, timedelta]] = None,
        offline_flush_interval: Optional[Union[float, timedelta]] = None,
        offline_log: bool = True,
        batch_size: Optional[int] = None,
        background: bool = False,
        offline_compact_interval: Optional[Union[float, timedelta]] = 300.0,
    ) -> Union["Ingestion", List[Dict[str, Any]]]:
        """Consumes the stream sources (kind ``kafka``, ``nats``, ``redis_stream``)
        that feature views read: records are checked against the views' schema
        (bad ones go to the source's dead-letter file), written online and
        appended to the source's ``batch_source``; the broker is told only once
        both are durable, so a restart neither loses nor double-counts an event.

        With ``background=False`` this blocks until every stream has been idle
        for ``stop_when_idle`` (seconds or a timedelta), or until Ctrl-C/SIGTERM,
        and returns each source's totals. With ``background=True`` it returns an
        :class:`Ingestion` at once; call ``stop()`` on it.

        Runs of small offline log files are merged at start and then every
        ``offline_compact_interval`` (seconds or a timedelta; ``None`` never).
        """

        def secs(v: Optional[Union[float, timedelta]]) -> Optional[float]:
            return v.total_seconds() if isinstance(v, timedelta) else (None if v is None else float(v))

        handle = self._store.ingest(
            _view_names(feature_views),
            consumer,
            secs(stop_when_idle),
            secs(offline_flush_interval),
            offline_log,
            batch_size,
            secs(offline_compact_interval),
        )
        ingestion = Ingestion(handle)
        if background:
            return ingestion
        _wait_for_interrupt(handle)
        return ingestion.stop()

    def get_online_features(
        self,
        features: Union[Sequence[Any], FeatureService, str],
        entity_rows: Any,
        full_feature_names: bool = False,
    ) -> "_internal.OnlineResponse":
        """Latest features for entity rows: a list of dicts (``[{"driver_id": 1001}]``),
        a dict of lists, or a DataFrame/Arrow table of join keys.

        On-demand features take their request fields from the same rows,
        beside the keys (``[{"driver_id": 1001, "order_amount": 120.5}]``);
        an int is accepted for a float field when it converts exactly. Give
        only the fields the requested features read: any other column is an
        error, so a misspelt field is never silently ignored. Request values
        are not returned.

        The response has one row per entity row, in order; ``.statuses()``
        tells PRESENT, NULL_VALUE, NOT_FOUND or OUTSIDE_MAX_AGE (a value older
        than the view's ttl is withheld). An on-demand feature is NULL_VALUE
        where its result is null, and otherwise has the worst status of its
        inputs.
        """
        fargs = _feature_args(features)
        if not isinstance(entity_rows, (list, dict)):
            entity_rows = _to_arrow_input(entity_rows, "entity_rows")
        return self._store.get_online_features(entity_rows, fargs.get("features"), fargs.get("service"), full_feature_names)
