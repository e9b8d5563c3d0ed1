"""Exceptions raised by the feature store.

Every error derives from :class:`FeatureStoreError`; most also derive from the
built-in exception they stand for, so ``except ValueError`` and
``except LookupError`` keep working. Messages are the Rust library's own: they
say what was wrong and where.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
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


class FeatureStoreError(Exception):
    """Base class of every feature store error.

    ``transient`` is true when retrying may succeed (an unreachable store, a
    concurrent registry write).
    """

    transient: bool = False


class DefinitionError(FeatureStoreError, ValueError):
    """Definitions are invalid. ``problems`` lists every problem as
    ``(file, object, message)`` tuples (``file`` is empty for objects built in code)."""

    problems: list = []


class ConfigError(FeatureStoreError, ValueError):
    """The store configuration is malformed; ``location`` names the key or file."""

    location: str = ""


class NotFoundError(FeatureStoreError, LookupError):
    """A named object does not exist; ``kind`` and ``name`` say which, and
    ``hint`` the close names or the fix (``did you mean "driver_stats"?``)."""

    kind: str = ""
    name: str = ""
    hint: Optional[str] = None


class InvalidArgumentError(FeatureStoreError, ValueError):
    """A request is malformed (bad feature reference, bad argument)."""


class DataError(FeatureStoreError, ValueError):
    """Input data has the wrong shape or types; ``context`` says where."""

    context: str = ""


class ConflictError(FeatureStoreError):
    """Concurrent registry writers kept conflicting; rerun the command."""


class CorruptRegistryError(FeatureStoreError):
    """The registry document cannot be read as this version's format."""


class StoreUnavailableError(FeatureStoreError, ConnectionError):
    """A store (Redis, S3, a file) could not be reached."""


class UnsupportedError(FeatureStoreError, NotImplementedError):
    """The feature is not available in this build or backend."""


class BackendError(FeatureStoreError, OSError):
    """A backend or local file operation failed."""


class ValidationError(FeatureStoreError, ValueError):
    """A window failed its data-quality rules: nothing was written for that view
    and its watermark did not move. ``report`` is the run's
    :class:`~feature_store.MaterializeReport` (other views may have succeeded)."""

    report = None
