//! Feature value types and their single mapping to and from Arrow.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The type of a feature or join-key value. Every value is nullable.
///
/// Lists hold a scalar element type; lists of lists are not supported, as in Feast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// `bool`
    Bool,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `float32`
    Float32,
    /// `float64`
    Float64,
    /// `string` (UTF-8)
    String,
    /// `bytes`
    Bytes,
    /// `timestamp`: an instant, stored as microseconds since the epoch in UTC.
    Timestamp,
    /// `list<T>` of a scalar type.
    List(Box<ValueType>),
}

/// Time zone every timestamp produced by this library carries.
pub const UTC: &str = "UTC";

impl ValueType {
    /// The Arrow type this library produces for values of this type.
    pub fn to_arrow(&self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::String => DataType::Utf8,
            Self::Bytes => DataType::Binary,
            Self::Timestamp => timestamp_type(),
            Self::List(inner) => DataType::List(Arc::new(Field::new("item", inner.to_arrow(), true))),
        }
    }

    /// The value type that an Arrow column of type `dt` holds, if supported.
    ///
    /// Narrow integers widen to `int32`, `uint32` to `int64`, `float16` to
    /// `float32`, dictionary-encoded strings (pandas categoricals) to `string`,
    /// and all string, binary and list layouts map to their logical type.
    pub fn from_arrow(dt: &DataType) -> Option<Self> {
        Some(match dt {
            DataType::Boolean => Self::Bool,
            DataType::Int8 | DataType::Int16 | DataType::Int32 => Self::Int32,
            DataType::UInt8 | DataType::UInt16 => Self::Int32,
            DataType::Int64 | DataType::UInt32 => Self::Int64,
            DataType::Float16 | DataType::Float32 => Self::Float32,
            DataType::Float64 => Self::Float64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::String,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                Self::Bytes
            }
            DataType::Timestamp(_, _) => Self::Timestamp,
            DataType::Dictionary(_, value) => match Self::from_arrow(value)? {
                t @ (Self::String | Self::Bytes) => t,
                _ => return None,
            },
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _) => match Self::from_arrow(f.data_type())? {
                Self::List(_) => return None,
                inner => Self::List(Box::new(inner)),
            },
            _ => return None,
        })
    }

    /// Whether a column of Arrow type `dt` can supply values of this type
    /// without loss: the same logical type, or a lossless widening
    /// (`int32` into `int64`, `float32` into `float64`).
    pub fn accepts_arrow(&self, dt: &DataType) -> bool {
        match Self::from_arrow(dt) {
            Some(found) => self.accepts(&found),
            None => false,
        }
    }

    /// Whether values of type `other` convert losslessly to this type.
    pub fn accepts(&self, other: &ValueType) -> bool {
        match (self, other) {
            (a, b) if a == b => true,
            (Self::Int64, Self::Int32) | (Self::Float64, Self::Float32) => true,
            (Self::List(a), Self::List(b)) => a.accepts(b),
            _ => false,
        }
    }

    /// True for integers and floats.
    pub fn is_numeric(&self) -> bool {
        matches!(self, Self::Int32 | Self::Int64 | Self::Float32 | Self::Float64)
    }

    /// True for `list<T>`.
    pub fn is_list(&self) -> bool {
        matches!(self, Self::List(_))
    }

    /// How drift rules bin values of this type.
    pub fn binning(&self) -> Binning {
        if self.is_numeric() {
            Binning::Numeric
        } else if matches!(self, Self::String | Self::Bool) {
            Binning::Categorical
        } else {
            Binning::None
        }
    }
}

/// The Arrow type of every timestamp this library writes: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("bool"),
            Self::Int32 => f.write_str("int32"),
            Self::Int64 => f.write_str("int64"),
            Self::Float32 => f.write_str("float32"),
            Self::Float64 => f.write_str("float64"),
            Self::String => f.write_str("string"),
            Self::Bytes => f.write_str("bytes"),
            Self::Timestamp => f.write_str("timestamp"),
            Self::List(inner) => write!(f, "list<{inner}>"),
        }
    }
}

/// Error returned when a type name is not recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseValueTypeError(String);

impl fmt::Display for ParseValueTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown type \"{}\"; expected one of bool, int32, int64, float32, float64, string, bytes, timestamp or list<T> of those",
            self.0
        )
    }
}

impl std::error::Error for ParseValueTypeError {}

impl FromStr for ValueType {
    type Err = ParseValueTypeError;

    /// Accepts the canonical names and the Feast spellings (`Int64`,
    /// `Float32`, `String`, `UnixTimestamp`, `Array(Float32)`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseValueTypeError(s.to_owned());
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        for (open, close) in [("list<", ">"), ("array(", ")"), ("array<", ">"), ("list[", "]")] {
            if let Some(inner) = lower.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
                let inner: ValueType = inner.parse().map_err(|_| err())?;
                if inner.is_list() {
                    return Err(err());
                }
                return Ok(Self::List(Box::new(inner)));
            }
        }
        Ok(match lower.as_str() {
            "bool" | "boolean" => Self::Bool,
            "int32" | "int" | "integer" => Self::Int32,
            "int64" | "long" | "bigint" => Self::Int64,
            "float32" | "float" => Self::Float32,
            "float64" | "double" => Self::Float64,
            "string" | "str" | "utf8" => Self::String,
            "bytes" | "binary" => Self::Bytes,
            "timestamp" | "unixtimestamp" | "unix_timestamp" | "datetime" => Self::Timestamp,
            _ => return Err(err()),
        })
    }
}

impl Serialize for ValueType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ValueType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Human name of an Arrow type for error messages (`Utf8`, `Timestamp(ns, UTC)`).
pub fn describe_arrow(dt: &DataType) -> String {
    match ValueType::from_arrow(dt) {
        Some(v) => format!("{dt} ({v})"),
        None => format!("{dt} (unsupported)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for name in [
            "bool",
            "int32",
            "int64",
            "float32",
            "float64",
            "string",
            "bytes",
            "timestamp",
            "list<int64>",
            "list<string>",
            "list<timestamp>",
        ] {
            let t: ValueType = name.parse().unwrap();
            assert_eq!(t.to_string(), name);
            assert_eq!(ValueType::from_arrow(&t.to_arrow()), Some(t));
        }
    }

    #[test]
    fn feast_spellings() {
        assert_eq!("Int64".parse::<ValueType>().unwrap(), ValueType::Int64);
        assert_eq!("UnixTimestamp".parse::<ValueType>().unwrap(), ValueType::Timestamp);
        assert_eq!("Array(Float32)".parse::<ValueType>().unwrap(), ValueType::List(Box::new(ValueType::Float32)));
        assert!("list<list<int64>>".parse::<ValueType>().is_err());
        assert!("decimal".parse::<ValueType>().unwrap_err().to_string().contains("decimal"));
    }

    #[test]
    fn widening_is_one_way() {
        assert!(ValueType::Int64.accepts_arrow(&DataType::Int32));
        assert!(!ValueType::Int32.accepts_arrow(&DataType::Int64));
        assert!(ValueType::Float64.accepts_arrow(&DataType::Float32));
        assert!(!ValueType::Float32.accepts_arrow(&DataType::Float64));
        assert!(!ValueType::Float64.accepts_arrow(&DataType::Int64));
        assert!(
            ValueType::String.accepts_arrow(&DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)))
        );
        assert!(ValueType::Timestamp.accepts_arrow(&DataType::Timestamp(TimeUnit::Nanosecond, None)));
    }
}

/// How a feature is binned for drift, from its type (see `crate::offline::profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Binning {
    /// Decile bins.
    Numeric,
    /// Top values.
    Categorical,
    /// Not binned (lists, bytes, timestamps).
    None,
}

impl Binning {
    /// Decile bins.
    pub fn is_numeric(self) -> bool {
        self == Self::Numeric
    }

    /// Top values.
    pub fn is_categorical(self) -> bool {
        self == Self::Categorical
    }
}
