"""Native module: the Rust library behind :mod:`feature_store`. Use the
classes of :mod:`feature_store` rather than these directly."""

import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

import pyarrow as pa

__version__: str

def scalar_types() -> List[Tuple[str, str]]: ...
def register_udf(
    name: str,
    function: Callable[..., Any],
    input_types: Optional[List[str]],
    return_type: str,
    source_hash: str,
    label: str,
) -> None:
    """Registers ``function`` (pyarrow arrays in, one value per row out) process-wide
    as the SQL function ``name``; every store registers it with its engine before
    its next call. ``input_types=None`` takes any arguments."""

class ServerHandle:
    @property
    def url(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def grpc_port(self) -> Optional[int]: ...
    def running(self) -> bool: ...
    def stop(self) -> None: ...

class IngestHandle:
    def running(self) -> bool: ...
    def stop(self) -> str: ...

class Store:
    def ingest(
        self,
        views: Optional[List[str]] = None,
        consumer: Optional[str] = None,
        stop_when_idle_s: Optional[float] = None,
        offline_flush_interval_s: Optional[float] = None,
        offline_log: bool = True,
        batch_size: Optional[int] = None,
        offline_compact_interval_s: Optional[float] = 300.0,
    ) -> IngestHandle: ...
    def serve(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        grpc_port: Optional[int] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        api_keys: Optional[List[str]] = None,
        allow_unauthenticated: bool = False,
    ) -> ServerHandle: ...
    @staticmethod
    def open(repo_path: str) -> "Store": ...
    @staticmethod
    def from_config(config: str, repo_path: str) -> "Store": ...
    @property
    def project(self) -> str: ...
    @property
    def repo_path(self) -> str: ...
    def config_json(self) -> str: ...
    def refresh_registry(self) -> None: ...
    def apply(self, definitions: Optional[str] = None, partial: bool = True) -> str: ...
    def plan(self, definitions: Optional[str] = None, partial: bool = True) -> str: ...
    def list(self, kind: str) -> str:
        """JSON records of one kind: entity, data_source, feature_view, feature_service,
        request_source or on_demand_feature_view."""
    def describe(self, name: str) -> str: ...
    def resolve(
        self, features: Optional[List[str]] = None, service: Optional[str] = None, full_feature_names: bool = False
    ) -> List[str]: ...
    def historical(
        self,
        features: Optional[List[str]] = None,
        service: Optional[str] = None,
        full_feature_names: bool = False,
        timestamp_column: str = "event_timestamp",
        table: Any = None,
        path: Optional[str] = None,
        sql: Optional[str] = None,
    ) -> "HistoricalResult": ...
    def write_historical_folder(
        self,
        folder: str,
        rows_per_file: Optional[int] = None,
        features: Optional[List[str]] = None,
        service: Optional[str] = None,
        full_feature_names: bool = False,
        timestamp_column: str = "event_timestamp",
        table: Any = None,
        path: Optional[str] = None,
        sql: Optional[str] = None,
    ) -> str:
        """The retrieval written as Parquet files and _manifest.json under folder (ending in /); the manifest as JSON."""
    def save_dataset(
        self,
        name: str,
        features: Optional[List[str]] = None,
        service: Optional[str] = None,
        full_feature_names: bool = False,
        timestamp_column: str = "event_timestamp",
        table: Any = None,
        path: Optional[str] = None,
        sql: Optional[str] = None,
        output: Optional[str] = None,
    ) -> str: ...
    def check_output(self, path: str) -> None: ...
    def read_dataset(self, name: str) -> "HistoricalResult": ...
    def list_datasets(self) -> str: ...
    def get_dataset(self, name: str) -> str: ...
    def verify_dataset(self, name: str) -> str: ...
    def delete_dataset(self, name: str) -> str: ...
    def profile(self, view: str, start_us: Optional[int], end_us: int, save: bool = True) -> str: ...
    def materialize(self, start_us: int, end_us: int, views: Optional[List[str]] = None) -> str: ...
    def materialize_incremental(self, end_us: int, views: Optional[List[str]] = None) -> str: ...
    def validate(self, views: Optional[List[str]], start_us: Optional[int], end_us: int) -> str: ...
    def push(self, view: str, data: Any, to: str = "online") -> Tuple[int, int]: ...
    def get_online_features(
        self,
        entity_rows: Any,
        features: Optional[List[str]] = None,
        service: Optional[str] = None,
        full_feature_names: bool = False,
    ) -> "OnlineResponse": ...

class HistoricalResult:
    """The stream of one retrieval; read it once."""

    def schema(self) -> pa.Schema: ...
    def to_reader(self) -> pa.RecordBatchReader: ...
    def to_table(self) -> pa.Table: ...
    def to_pandas_parts(self) -> Tuple[List[str], List[Optional[Any]], pa.Table]: ...

class OnlineResponse:
    """Online features: one row per requested entity row, in order."""

    def __len__(self) -> int: ...
    @property
    def store_seconds(self) -> float:
        """Seconds the Rust store call took for this request (lookup and decoding,
        without converting entity rows or this response): diagnostics."""
    @property
    def column_names(self) -> List[str]: ...
    @property
    def feature_names(self) -> List[str]: ...
    def to_dict(self, include_event_timestamps: bool = False) -> Dict[str, List[Any]]:
        """``{column: [value per row]}``: keys first; withheld and missing values are None.
        ``include_event_timestamps`` adds ``{feature}__ts`` (epoch seconds, None where nothing is stored)."""
    def statuses(self) -> Dict[str, List[str]]:
        """``{feature: [PRESENT | NULL_VALUE | NOT_FOUND | OUTSIDE_MAX_AGE per row]}``."""
    def event_timestamps(self) -> Dict[str, List[Optional[datetime.datetime]]]: ...
    def to_arrow(self) -> pa.Table: ...
    def statuses_arrow(self) -> pa.Table: ...
    def event_timestamps_arrow(self) -> pa.Table: ...
    def to_df(self, include_event_timestamps: bool = False) -> Any: ...
    def to_json(self) -> str:
        """The JSON body of Feast's feature server ``/get-online-features``."""
