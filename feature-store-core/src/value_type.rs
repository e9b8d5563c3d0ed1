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

/// Tags of the online value codec (`online::codec`). They are part of the
/// stored format: a tag is never reused or renumbered.
pub(crate) mod codec_tag {
    pub(crate) const BOOL: u8 = 1;
    pub(crate) const INT32: u8 = 2;
    pub(crate) const INT64: u8 = 3;
    pub(crate) const FLOAT32: u8 = 4;
    pub(crate) const FLOAT64: u8 = 5;
    pub(crate) const STRING: u8 = 6;
    pub(crate) const BYTES: u8 = 7;
    pub(crate) const TIMESTAMP: u8 = 8;
    /// Set on a list's tag, beside its element's tag.
    pub(crate) const LIST: u8 = 0x80;
}

/// What this library derives from one scalar value type. Parsing and
/// display, the Arrow mapping, lossless widening, join-key rules, drift
/// binning, online codec tags and the Python names all read this table, so
/// a new scalar type is one row here plus the typed code paths the compiler
/// then points to (the codec's encoder and decoder, Python's conversions).
#[derive(Debug)]
#[non_exhaustive]
pub struct ScalarTypeInfo {
    /// The type.
    pub value_type: ValueType,
    /// The registry's spelling (`int64`), also its `Display`.
    pub name: &'static str,
    /// Other spellings definitions may use, lowercase (Feast's `unixtimestamp`, SQL's `bigint`).
    pub aliases: &'static [&'static str],
    /// Feast's Python name for the type (`Int64`, `UnixTimestamp`).
    pub feast_name: &'static str,
    /// Types whose values convert to this one without loss.
    pub widens_from: &'static [ValueType],
    /// Bytes per value in an Arrow primitive buffer; `None` for `bool`
    /// (bit-packed) and variable-width types.
    pub fixed_width: Option<usize>,
    /// Whether a join key may have this type: floats may not, since keys
    /// that print alike need not be equal.
    pub join_key: bool,
    /// Integer or float.
    pub numeric: bool,
    /// How drift rules bin values of this type.
    pub binning: Binning,
    /// The online codec's tag for the type.
    pub(crate) codec_tag: u8,
    arrow: fn() -> DataType,
}

/// Every scalar value type; `list<T>` takes one of these as `T`.
pub static SCALAR_TYPES: [ScalarTypeInfo; 8] = [
    ScalarTypeInfo {
        value_type: ValueType::Bool,
        name: "bool",
        aliases: &["boolean"],
        feast_name: "Bool",
        widens_from: &[],
        fixed_width: None,
        join_key: true,
        numeric: false,
        binning: Binning::Categorical,
        codec_tag: codec_tag::BOOL,
        arrow: || DataType::Boolean,
    },
    ScalarTypeInfo {
        value_type: ValueType::Int32,
        name: "int32",
        aliases: &["int", "integer"],
        feast_name: "Int32",
        widens_from: &[],
        fixed_width: Some(4),
        join_key: true,
        numeric: true,
        binning: Binning::Numeric,
        codec_tag: codec_tag::INT32,
        arrow: || DataType::Int32,
    },
    ScalarTypeInfo {
        value_type: ValueType::Int64,
        name: "int64",
        aliases: &["long", "bigint"],
        feast_name: "Int64",
        widens_from: &[ValueType::Int32],
        fixed_width: Some(8),
        join_key: true,
        numeric: true,
        binning: Binning::Numeric,
        codec_tag: codec_tag::INT64,
        arrow: || DataType::Int64,
    },
    ScalarTypeInfo {
        value_type: ValueType::Float32,
        name: "float32",
        aliases: &["float"],
        feast_name: "Float32",
        widens_from: &[],
        fixed_width: Some(4),
        join_key: false,
        numeric: true,
        binning: Binning::Numeric,
        codec_tag: codec_tag::FLOAT32,
        arrow: || DataType::Float32,
    },
    ScalarTypeInfo {
        value_type: ValueType::Float64,
        name: "float64",
        aliases: &["double"],
        feast_name: "Float64",
        widens_from: &[ValueType::Float32],
        fixed_width: Some(8),
        join_key: false,
        numeric: true,
        binning: Binning::Numeric,
        codec_tag: codec_tag::FLOAT64,
        arrow: || DataType::Float64,
    },
    ScalarTypeInfo {
        value_type: ValueType::String,
        name: "string",
        aliases: &["str", "utf8"],
        feast_name: "String",
        widens_from: &[],
        fixed_width: None,
        join_key: true,
        numeric: false,
        binning: Binning::Categorical,
        codec_tag: codec_tag::STRING,
        arrow: || DataType::Utf8,
    },
    ScalarTypeInfo {
        value_type: ValueType::Bytes,
        name: "bytes",
        aliases: &["binary"],
        feast_name: "Bytes",
        widens_from: &[],
        fixed_width: None,
        join_key: true,
        numeric: false,
        binning: Binning::None,
        codec_tag: codec_tag::BYTES,
        arrow: || DataType::Binary,
    },
    ScalarTypeInfo {
        value_type: ValueType::Timestamp,
        name: "timestamp",
        aliases: &["unixtimestamp", "unix_timestamp", "datetime"],
        feast_name: "UnixTimestamp",
        widens_from: &[],
        fixed_width: Some(8),
        join_key: true,
        numeric: false,
        binning: Binning::None,
        codec_tag: codec_tag::TIMESTAMP,
        arrow: timestamp_type,
    },
];

impl ScalarTypeInfo {
    /// The Arrow type this library produces for the type.
    pub fn arrow_type(&self) -> DataType {
        (self.arrow)()
    }

    /// The row whose codec tag is `tag`.
    pub(crate) fn by_codec_tag(tag: u8) -> Option<&'static Self> {
        SCALAR_TYPES.iter().find(|s| s.codec_tag == tag)
    }
}

impl ValueType {
    /// This type's row in [`SCALAR_TYPES`]; a list's is its element's.
    pub fn scalar_info(&self) -> &'static ScalarTypeInfo {
        let i = match self {
            Self::Bool => 0,
            Self::Int32 => 1,
            Self::Int64 => 2,
            Self::Float32 => 3,
            Self::Float64 => 4,
            Self::String => 5,
            Self::Bytes => 6,
            Self::Timestamp => 7,
            Self::List(inner) => return inner.scalar_info(),
        };
        &SCALAR_TYPES[i]
    }

    /// The Arrow type this library produces for values of this type.
    pub fn to_arrow(&self) -> DataType {
        match self {
            Self::List(inner) => DataType::List(Arc::new(Field::new("item", inner.to_arrow(), true))),
            scalar => scalar.scalar_info().arrow_type(),
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
            (Self::List(a), Self::List(b)) => a.accepts(b),
            (Self::List(_), _) | (_, Self::List(_)) => false,
            (a, b) => a == b || a.scalar_info().widens_from.contains(b),
        }
    }

    /// True for integers and floats.
    pub fn is_numeric(&self) -> bool {
        !self.is_list() && self.scalar_info().numeric
    }

    /// Whether a join key may have this type (not floats, not lists).
    pub fn can_be_join_key(&self) -> bool {
        !self.is_list() && self.scalar_info().join_key
    }

    /// Bytes per value in an Arrow primitive buffer; `None` for `bool`,
    /// variable-width types and lists.
    pub fn fixed_width(&self) -> Option<usize> {
        if self.is_list() { None } else { self.scalar_info().fixed_width }
    }

    /// True for `list<T>`.
    pub fn is_list(&self) -> bool {
        matches!(self, Self::List(_))
    }

    /// How drift rules bin values of this type.
    pub fn binning(&self) -> Binning {
        if self.is_list() { Binning::None } else { self.scalar_info().binning }
    }
}

/// The Arrow type of every timestamp this library writes: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(inner) => write!(f, "list<{inner}>"),
            scalar => f.write_str(scalar.scalar_info().name),
        }
    }
}

/// Error returned when a type name is not recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseValueTypeError(String);

impl fmt::Display for ParseValueTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = SCALAR_TYPES.iter().map(|s| s.name).collect();
        write!(f, "unknown type \"{}\"; expected one of {} or list<T> of those", self.0, names.join(", "))
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
        SCALAR_TYPES
            .iter()
            .find(|s| s.name == lower || s.aliases.contains(&lower.as_str()))
            .map(|s| s.value_type.clone())
            .ok_or_else(err)
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
    fn the_scalar_table_is_consistent() {
        let mut spellings = std::collections::HashSet::new();
        let mut tags = std::collections::HashSet::new();
        for row in &SCALAR_TYPES {
            assert!(std::ptr::eq(row.value_type.scalar_info(), row), "{} points at another row", row.name);
            assert_eq!(row.value_type.to_string(), row.name);
            for spelling in std::iter::once(&row.name).chain(row.aliases) {
                assert!(spellings.insert(*spelling), "{spelling} is listed twice");
                assert_eq!(spelling.parse::<ValueType>().unwrap(), row.value_type);
            }
            assert_eq!(row.feast_name.parse::<ValueType>().unwrap(), row.value_type);
            assert!(tags.insert(row.codec_tag) && row.codec_tag & codec_tag::LIST == 0, "{}", row.name);
            assert_eq!(ValueType::from_arrow(&row.arrow_type()), Some(row.value_type.clone()));
            assert_eq!(row.fixed_width, row.arrow_type().primitive_width(), "{}", row.name);
            assert_eq!(row.numeric, row.arrow_type().is_numeric(), "{}", row.name);
            for narrow in row.widens_from {
                assert!(row.value_type.accepts(narrow) && !narrow.accepts(&row.value_type));
            }
        }
        let list = ValueType::List(Box::new(ValueType::Int64));
        assert!(!list.can_be_join_key() && !list.is_numeric() && list.fixed_width().is_none());
        assert_eq!(list.binning(), Binning::None);
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
