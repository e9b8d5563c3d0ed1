//! Scalar values as the aggregate functions see them, read from Arrow
//! columns, ordered as retrieval orders them, and encoded for tiles.

use std::cmp::Ordering;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};

use crate::{Error, Result};

/// One non-null input value. Integers of every width are `Int`, floats of
/// every width `Float` (float32 widens exactly), timestamps microseconds.
#[derive(Debug, Clone)]
pub enum Value {
    /// A bool.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// UTF-8 text.
    Str(Box<str>),
    /// Bytes.
    Bytes(Box<[u8]>),
    /// Microseconds since the epoch, UTC.
    Time(i64),
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Self::Bool(_) => 0,
            Self::Int(_) => 1,
            Self::Float(_) => 2,
            Self::Str(_) => 3,
            Self::Bytes(_) => 4,
            Self::Time(_) => 5,
        }
    }

    /// The same value with floats made canonical for equality: `-0.0` is
    /// `0.0` and every NaN one NaN, as SQL's `COUNT(DISTINCT)` counts them.
    pub(crate) fn canonical(self) -> Self {
        match self {
            Self::Float(0.0) => Self::Float(0.0),
            Self::Float(f) if f.is_nan() => Self::Float(f64::NAN),
            v => v,
        }
    }

    /// Appends a self-delimiting encoding: a tag byte, then the payload.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
            Self::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Self::Float(f) => {
                out.push(3);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Self::Str(s) => {
                out.push(4);
                put_len(out, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Self::Bytes(b) => {
                out.push(5);
                put_len(out, b.len());
                out.extend_from_slice(b);
            }
            Self::Time(t) => {
                out.push(6);
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(match r.u8()? {
            1 => Self::Bool(r.u8()? != 0),
            2 => Self::Int(r.i64()?),
            3 => Self::Float(f64::from_bits(r.u64()?)),
            4 => {
                let n = r.len()?;
                let bytes = r.take(n)?;
                Self::Str(std::str::from_utf8(bytes).map_err(|_| r.corrupt("text that is not UTF-8"))?.into())
            }
            5 => {
                let n = r.len()?;
                Self::Bytes(r.take(n)?.into())
            }
            6 => Self::Time(r.i64()?),
            t => return Err(r.corrupt(&format!("unknown value tag {t}"))),
        })
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

/// Consistent with `Eq`: floats are equal when their bits are (total order).
impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u8(self.rank());
        match self {
            Self::Bool(b) => b.hash(state),
            Self::Int(i) | Self::Time(i) => i.hash(state),
            Self::Float(f) => f.to_bits().hash(state),
            Self::Str(s) => s.hash(state),
            Self::Bytes(b) => b.hash(state),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The order of retrieval's tie rules: floats in IEEE total order (NaN above
/// every number), text and bytes bytewise. Values of one column share a variant.
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            (Self::Int(a), Self::Int(b)) => a.cmp(b),
            (Self::Float(a), Self::Float(b)) => a.total_cmp(b),
            (Self::Str(a), Self::Str(b)) => a.cmp(b),
            (Self::Bytes(a), Self::Bytes(b)) => a.cmp(b),
            (Self::Time(a), Self::Time(b)) => a.cmp(b),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

/// Reads one column's values by row; nulls are `None`.
#[derive(Debug)]
pub struct ValueReader {
    column: ArrayRef,
}

impl ValueReader {
    /// A reader over `column`, or an error naming `what` if its type cannot be aggregated.
    pub fn new(column: ArrayRef, what: &str) -> Result<Self> {
        match column.data_type() {
            DataType::Boolean
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::Timestamp(TimeUnit::Microsecond, _) => Ok(Self { column }),
            other => Err(Error::InvalidArgument(format!(
                "{what}: cannot aggregate a column of type {}",
                crate::describe_arrow(other)
            ))),
        }
    }

    /// The values of `rows`, in that order: one type dispatch for all of them.
    pub fn take(&self, rows: &[u32]) -> Vec<Option<Value>> {
        fn each<T>(
            c: &T,
            rows: &[u32],
            valid: impl Fn(usize) -> bool,
            f: impl Fn(&T, usize) -> Value,
        ) -> Vec<Option<Value>> {
            rows.iter().map(|r| valid(*r as usize).then(|| f(c, *r as usize))).collect()
        }
        let c = &self.column;
        let valid = |i: usize| c.is_valid(i);
        match c.data_type() {
            DataType::Int64 => each(c.as_primitive::<Int64Type>(), rows, valid, |a, i| Value::Int(a.value(i))),
            DataType::Float64 => each(c.as_primitive::<Float64Type>(), rows, valid, |a, i| Value::Float(a.value(i))),
            DataType::Int32 => {
                each(c.as_primitive::<Int32Type>(), rows, valid, |a, i| Value::Int(i64::from(a.value(i))))
            }
            DataType::Float32 => {
                each(c.as_primitive::<Float32Type>(), rows, valid, |a, i| Value::Float(f64::from(a.value(i))))
            }
            _ => rows.iter().map(|r| self.get(*r as usize)).collect(),
        }
    }

    /// Whether row `i` is null.
    pub fn is_null(&self, i: usize) -> bool {
        self.column.is_null(i)
    }

    /// The value of row `i`.
    pub fn get(&self, i: usize) -> Option<Value> {
        let c = &self.column;
        if c.is_null(i) {
            return None;
        }
        Some(match c.data_type() {
            DataType::Boolean => Value::Bool(c.as_boolean().value(i)),
            DataType::Int32 => Value::Int(i64::from(c.as_primitive::<Int32Type>().value(i))),
            DataType::Int64 => Value::Int(c.as_primitive::<Int64Type>().value(i)),
            DataType::Float32 => Value::Float(f64::from(c.as_primitive::<Float32Type>().value(i))),
            DataType::Float64 => Value::Float(c.as_primitive::<Float64Type>().value(i)),
            DataType::Utf8 => Value::Str(c.as_string::<i32>().value(i).into()),
            DataType::LargeUtf8 => Value::Str(c.as_string::<i64>().value(i).into()),
            DataType::Utf8View => Value::Str(c.as_string_view().value(i).into()),
            DataType::Binary => Value::Bytes(c.as_binary::<i32>().value(i).into()),
            DataType::LargeBinary => Value::Bytes(c.as_binary::<i64>().value(i).into()),
            DataType::BinaryView => Value::Bytes(c.as_binary_view().value(i).into()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Value::Time(c.as_primitive::<TimestampMicrosecondType>().value(i))
            }
            _ => unreachable!("checked in ValueReader::new"),
        })
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// A cursor over an encoded tile; every read checks the length, so a
/// truncated or foreign record is an error, never a panic.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub(crate) fn corrupt(&self, what: &str) -> Error {
        Error::Data {
            context: "online aggregation tile".into(),
            message: format!("corrupt record: {what} at byte {}; rewrite it with materialize", self.at),
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or_else(|| self.corrupt("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub(crate) fn len(&mut self) -> Result<usize> {
        Ok(self.u32()? as usize)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }

    pub(crate) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub(crate) fn i128(&mut self) -> Result<i128> {
        Ok(i128::from_le_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }

    pub(crate) fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}
