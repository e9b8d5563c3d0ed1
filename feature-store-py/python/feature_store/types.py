"""Value types of features and join keys, spelled as in Feast (``Int64``,
``Float32``, ``Array(Float32)``, ...)."""

from __future__ import annotations

from . import _internal

__all__ = [
    "FeastType",
    "PrimitiveFeastType",
    "Array",
    "Bool",
    "Int32",
    "Int64",
    "Float32",
    "Float64",
    "String",
    "Bytes",
    "UnixTimestamp",
    "ValueType",
    "from_name",
]


class FeastType:
    """A value type; ``str(t)`` is the registry's spelling (``int64``, ``list<float32>``)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return self._name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeastType) and other._name == self._name

    def __hash__(self) -> int:
        return hash(self._name)


class PrimitiveFeastType(FeastType):
    """A scalar type."""

    __slots__ = ()


class Array(FeastType):
    """A list of a scalar type: ``Array(Float32)``."""

    __slots__ = ("base_type",)

    def __init__(self, base_type: FeastType) -> None:
        if not isinstance(base_type, PrimitiveFeastType):
            raise TypeError(f"Array() takes a scalar type such as Float32, got {base_type!r}")
        self.base_type = base_type
        super().__init__(f"list<{base_type}>")


Bool = PrimitiveFeastType("bool")
Int32 = PrimitiveFeastType("int32")
Int64 = PrimitiveFeastType("int64")
Float32 = PrimitiveFeastType("float32")
Float64 = PrimitiveFeastType("float64")
String = PrimitiveFeastType("string")
Bytes = PrimitiveFeastType("bytes")
UnixTimestamp = PrimitiveFeastType("timestamp")

# Keyed by the library's own type table: a type added there without a
# constant here fails at import, in the tests, not in a user's notebook.
_SCALARS = {name: globals()[feast_name] for name, feast_name in _internal.scalar_types()}


def from_name(name: str) -> FeastType:
    """The type the registry spells ``name``."""
    if name.startswith("list<") and name.endswith(">"):
        return Array(from_name(name[5:-1]))
    try:
        return _SCALARS[name]
    except KeyError:
        raise ValueError(f"unknown value type {name!r}") from None


class ValueType:
    """Feast's ``ValueType`` names for entity key types (``ValueType.INT64``)."""

    BOOL = Bool
    INT32 = Int32
    INT64 = Int64
    FLOAT = Float32
    DOUBLE = Float64
    STRING = String
    BYTES = Bytes
    UNIX_TIMESTAMP = UnixTimestamp
