"""Embeddable feature store: point-in-time correct training sets and
low-latency online features, with Feast's API, computed in Rust.

>>> from feature_store import FeatureStore
>>> store = FeatureStore(repo_path=".")                    # doctest: +SKIP
>>> store.get_historical_features(entity_df, features=[...]).to_df()  # doctest: +SKIP
"""

import os as _os

from . import _internal
from ._internal import HistoricalResult, OnlineResponse, __version__
from .definitions import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    FeatureViewProjection,
    Field,
    FileSource,
    OnDemandFeature,
    OnDemandFeatureView,
    RequestSource,
)
from .errors import (
    BackendError,
    ConfigError,
    ConflictError,
    CorruptRegistryError,
    DataError,
    DefinitionError,
    FeatureStoreError,
    InvalidArgumentError,
    NotFoundError,
    StoreUnavailableError,
    UnsupportedError,
    ValidationError,
)
from .on_demand import UserFunction, on_demand_feature_view, registered_udfs, udf
from .store import ApplyResult, FeatureServer, FeatureStore, Ingestion, MaterializeReport, Plan, PushMode, RetrievalJob, SavedDataset
from .types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp, ValueType

__all__ = [
    "__version__",
    "FeatureStore",
    "FeatureServer",
    "Ingestion",
    "RetrievalJob",
    "SavedDataset",
    "OnlineResponse",
    "HistoricalResult",
    "PushMode",
    "MaterializeReport",
    "ApplyResult",
    "Plan",
    "Aggregation",
    "Entity",
    "Field",
    "FileSource",
    "FeatureView",
    "FeatureViewProjection",
    "FeatureService",
    "RequestSource",
    "OnDemandFeature",
    "OnDemandFeatureView",
    "on_demand_feature_view",
    "udf",
    "UserFunction",
    "registered_udfs",
    "Array",
    "Bool",
    "Bytes",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "String",
    "UnixTimestamp",
    "ValueType",
    "FeatureStoreError",
    "DefinitionError",
    "ConfigError",
    "NotFoundError",
    "InvalidArgumentError",
    "DataError",
    "ConflictError",
    "CorruptRegistryError",
    "StoreUnavailableError",
    "UnsupportedError",
    "BackendError",
    "ValidationError",
]

if hasattr(_os, "register_at_fork"):
    # A runtime thread caught mid-lock at a fork leaves the child a lock that
    # is never released (see feature-store-py/src/runtime.rs): wait until
    # they are all still.
    _os.register_at_fork(before=_internal.before_fork)
