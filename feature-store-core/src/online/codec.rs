//! Byte encodings shared by every online backend: entity keys as text and
//! feature values as small tagged byte strings.
//!
//! A value is one type tag byte followed by its payload, little-endian:
//! `bool` 1 byte, `int32`/`float32` 4, `int64`/`float64`/`timestamp`
//! (µs since the epoch) 8, `string`/`bytes` the raw bytes; a list is its
//! element tag with the high bit set, a `u32` count, then per element a
//! validity byte and the element (strings and bytes prefixed by a `u32`
//! length). A null value is not stored at all. The tag lets a reader notice a
//! value written under an older, incompatible schema instead of misreading it.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, ListArray, PrimitiveArray};
use arrow_buffer::{
    BooleanBufferBuilder, Buffer, MutableBuffer, NullBuffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer,
};
use arrow_schema::{DataType, Field};

use crate::value_type::ScalarTypeInfo;
use crate::value_type::codec_tag::{BOOL, BYTES, FLOAT32, FLOAT64, INT32, INT64, LIST, STRING, TIMESTAMP};
use crate::{Error, Result, UTC, ValueType};

/// The tag a value of `t` is stored under (from the value type table).
fn scalar_tag(t: &ValueType) -> u8 {
    let tag = t.scalar_info().codec_tag;
    if t.is_list() { LIST | tag } else { tag }
}

fn tag_name(tag: u8) -> String {
    let scalar = ScalarTypeInfo::by_codec_tag(tag & !LIST).map_or("unknown", |s| s.name);
    if tag & LIST != 0 { format!("list<{scalar}>") } else { scalar.to_owned() }
}

/// Casts `column` to the Arrow type of `dtype` (lossless widenings, unit and
/// layout changes); the caller has checked that the types are compatible.
pub fn conform(column: &ArrayRef, dtype: &ValueType) -> Result<ArrayRef> {
    let target = dtype.to_arrow();
    if column.data_type() == &target {
        return Ok(Arc::clone(column));
    }
    arrow_cast::cast(column, &target).map_err(|e| Error::data("value conversion", e.to_string()))
}

/// Encodes one column's values; the column must have the Arrow type of its value type.
pub struct ValueEncoder<'a> {
    column: &'a dyn Array,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Scalar(u8),
    List(&'a ListArray, u8),
}

impl<'a> ValueEncoder<'a> {
    /// An encoder for `column`, which holds values of `dtype` (see [`conform`]).
    pub fn new(column: &'a dyn Array, dtype: &ValueType) -> Self {
        let kind = match dtype {
            ValueType::List(inner) => Kind::List(column.as_list::<i32>(), scalar_tag(inner)),
            other => Kind::Scalar(scalar_tag(other)),
        };
        Self { column, kind }
    }

    /// Appends row `i`'s encoding to `out`; returns false (appending nothing) for null.
    pub fn encode(&self, i: usize, out: &mut Vec<u8>) -> bool {
        if self.column.is_null(i) {
            return false;
        }
        match self.kind {
            Kind::Scalar(tag) => {
                out.push(tag);
                encode_scalar(self.column, tag, i, out, false);
            }
            Kind::List(list, tag) => {
                out.push(LIST | tag);
                let offsets = list.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                out.extend_from_slice(&((end - start) as u32).to_le_bytes());
                let values = list.values();
                for j in start..end {
                    if values.is_null(j) {
                        out.push(0);
                    } else {
                        out.push(1);
                        encode_scalar(values.as_ref(), tag, j, out, true);
                    }
                }
            }
        }
        true
    }
}

fn encode_scalar(a: &dyn Array, tag: u8, i: usize, out: &mut Vec<u8>, prefixed: bool) {
    match tag {
        BOOL => out.push(u8::from(a.as_boolean().value(i))),
        INT32 => out.extend_from_slice(&a.as_primitive::<Int32Type>().value(i).to_le_bytes()),
        INT64 => out.extend_from_slice(&a.as_primitive::<Int64Type>().value(i).to_le_bytes()),
        FLOAT32 => out.extend_from_slice(&a.as_primitive::<Float32Type>().value(i).to_le_bytes()),
        FLOAT64 => out.extend_from_slice(&a.as_primitive::<Float64Type>().value(i).to_le_bytes()),
        TIMESTAMP => out.extend_from_slice(&a.as_primitive::<TimestampMicrosecondType>().value(i).to_le_bytes()),
        STRING | BYTES => {
            let v: &[u8] =
                if tag == STRING { a.as_string::<i32>().value(i).as_bytes() } else { a.as_binary::<i32>().value(i) };
            if prefixed {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            }
            out.extend_from_slice(v);
        }
        _ => unreachable!("tag {tag} is not a scalar"),
    }
}

/// Builds an Arrow column of a feature's type from encoded values.
#[derive(Debug)]
pub struct ValueDecoder {
    dtype: ValueType,
    builder: Builder,
}

/// Values of one fixed-width type with a null buffer that is only
/// allocated once a null arrives: a response of a few rows costs one vector
/// per column, which Arrow's builders would triple.
#[derive(Debug)]
struct Prim<T> {
    values: Vec<T>,
    nulls: NullBufferBuilder,
}

impl<T: arrow_buffer::ArrowNativeType> Prim<T> {
    fn new(capacity: usize) -> Self {
        Self { values: Vec::with_capacity(capacity), nulls: NullBufferBuilder::new(capacity) }
    }

    fn push(&mut self, v: T) {
        self.values.push(v);
        self.nulls.append_non_null();
    }

    fn push_null(&mut self) {
        self.values.push(T::default());
        self.nulls.append_null();
    }

    fn take<P: ArrowPrimitiveType<Native = T>>(&mut self) -> PrimitiveArray<P> {
        let values = std::mem::take(&mut self.values);
        PrimitiveArray::new(ScalarBuffer::from(values), self.nulls.finish())
    }
}

#[derive(Debug)]
enum Builder {
    Bool(BooleanBuilder),
    Int32(Prim<i32>),
    Int64(Prim<i64>),
    Float32(Prim<f32>),
    Float64(Prim<f64>),
    String(StringBuilder),
    Bytes(BinaryBuilder),
    Timestamp(Prim<i64>),
    List { item: Box<Builder>, offsets: Vec<i32>, valid: BooleanBufferBuilder, dtype: ValueType },
}

impl Builder {
    fn new(t: &ValueType, capacity: usize) -> Self {
        match t {
            ValueType::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            ValueType::Int32 => Self::Int32(Prim::new(capacity)),
            ValueType::Int64 => Self::Int64(Prim::new(capacity)),
            ValueType::Float32 => Self::Float32(Prim::new(capacity)),
            ValueType::Float64 => Self::Float64(Prim::new(capacity)),
            ValueType::String => Self::String(StringBuilder::with_capacity(capacity, capacity * 8)),
            ValueType::Bytes => Self::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 8)),
            ValueType::Timestamp => Self::Timestamp(Prim::new(capacity)),
            ValueType::List(inner) => Self::List {
                item: Box::new(Self::new(inner, capacity)),
                offsets: vec![0],
                valid: BooleanBufferBuilder::new(capacity),
                dtype: (**inner).clone(),
            },
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int32(b) => b.push_null(),
            Self::Int64(b) | Self::Timestamp(b) => b.push_null(),
            Self::Float32(b) => b.push_null(),
            Self::Float64(b) => b.push_null(),
            Self::String(b) => b.append_null(),
            Self::Bytes(b) => b.append_null(),
            Self::List { offsets, valid, .. } => {
                offsets.push(*offsets.last().expect("starts with 0"));
                valid.append(false);
            }
        }
    }

    /// Decodes one scalar of stored tag `tag` from the front of `bytes`,
    /// returning the rest; `prefixed` strings carry a length.
    fn append_scalar<'b>(&mut self, tag: u8, bytes: &'b [u8], prefixed: bool) -> Option<&'b [u8]> {
        fn take<const N: usize>(b: &[u8]) -> Option<([u8; N], &[u8])> {
            let (head, rest) = b.split_first_chunk::<N>()?;
            Some((*head, rest))
        }
        let var = |b: &'b [u8]| -> Option<(&'b [u8], &'b [u8])> {
            if prefixed {
                let (len, rest) = take::<4>(b)?;
                rest.split_at_checked(u32::from_le_bytes(len) as usize)
            } else {
                Some((b, &[]))
            }
        };
        Some(match (self, tag) {
            (Self::Bool(b), BOOL) => {
                let (v, rest) = take::<1>(bytes)?;
                b.append_value(v[0] != 0);
                rest
            }
            (Self::Int32(b), INT32) => {
                let (v, rest) = take::<4>(bytes)?;
                b.push(i32::from_le_bytes(v));
                rest
            }
            (Self::Int64(b), INT64) | (Self::Timestamp(b), TIMESTAMP) => {
                let (v, rest) = take::<8>(bytes)?;
                b.push(i64::from_le_bytes(v));
                rest
            }
            (Self::Int64(b), INT32) => {
                let (v, rest) = take::<4>(bytes)?;
                b.push(i64::from(i32::from_le_bytes(v)));
                rest
            }
            (Self::Float32(b), FLOAT32) => {
                let (v, rest) = take::<4>(bytes)?;
                b.push(f32::from_le_bytes(v));
                rest
            }
            (Self::Float64(b), FLOAT64) => {
                let (v, rest) = take::<8>(bytes)?;
                b.push(f64::from_le_bytes(v));
                rest
            }
            (Self::Float64(b), FLOAT32) => {
                let (v, rest) = take::<4>(bytes)?;
                b.push(f64::from(f32::from_le_bytes(v)));
                rest
            }
            (Self::String(b), STRING) => {
                let (v, rest) = var(bytes)?;
                b.append_value(std::str::from_utf8(v).ok()?);
                rest
            }
            (Self::Bytes(b), BYTES) => {
                let (v, rest) = var(bytes)?;
                b.append_value(v);
                rest
            }
            _ => return None,
        })
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.take::<Int32Type>()),
            Self::Int64(b) => Arc::new(b.take::<Int64Type>()),
            Self::Float32(b) => Arc::new(b.take::<Float32Type>()),
            Self::Float64(b) => Arc::new(b.take::<Float64Type>()),
            Self::String(b) => Arc::new(b.finish()),
            Self::Bytes(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.take::<TimestampMicrosecondType>().with_timezone(UTC)),
            Self::List { item, offsets, valid, dtype } => {
                let values = item.finish();
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::new(valid.finish());
                let field = Arc::new(Field::new("item", dtype.to_arrow(), true));
                Arc::new(ListArray::new(field, offsets, values, Some(nulls).filter(|n| n.null_count() > 0)))
            }
        }
    }
}

impl ValueDecoder {
    /// A decoder producing values of `dtype`.
    pub fn new(dtype: &ValueType, capacity: usize) -> Self {
        Self { dtype: dtype.clone(), builder: Builder::new(dtype, capacity) }
    }

    /// Appends a null.
    pub fn append_null(&mut self) {
        self.builder.append_null();
    }

    /// Appends a decoded value; stored values of another, incompatible type
    /// or malformed bytes are an error naming the feature.
    pub fn append(&mut self, bytes: &[u8], feature: &str) -> Result<()> {
        let bad = |found: &str| {
            Error::data(
                format!("online value of feature \"{feature}\""),
                format!(
                    "stored as {found} but the registry declares {}; re-materialize the view after a type change",
                    self.dtype
                ),
            )
        };
        let (&tag, rest) = bytes.split_first().ok_or_else(|| bad("an empty value"))?;
        let ok = match &mut self.builder {
            Builder::List { item, offsets, valid, .. } if tag & LIST != 0 => (|| {
                let (count, mut rest) = rest.split_at_checked(4)?;
                let count = u32::from_le_bytes(count.try_into().ok()?) as usize;
                for _ in 0..count {
                    let (&flag, r) = rest.split_first()?;
                    rest = if flag == 0 {
                        item.append_null();
                        r
                    } else {
                        item.append_scalar(tag & !LIST, r, true)?
                    };
                }
                let last = *offsets.last().expect("starts with 0");
                offsets.push(last + count as i32);
                valid.append(true);
                rest.is_empty().then_some(())
            })()
            .is_some(),
            Builder::List { .. } => false,
            b => b.append_scalar(tag, rest, false).is_some_and(|r| r.is_empty()),
        };
        if ok { Ok(()) } else { Err(bad(&tag_name(tag))) }
    }

    /// The column built so far; the decoder starts again empty.
    pub fn finish(&mut self) -> ArrayRef {
        self.builder.finish()
    }
}

/// Fixed-width feature columns of one response (ints, floats, timestamps)
/// decoded into a single buffer: the columns are slices of it, so a response
/// of 50 such features allocates one buffer instead of 50.
#[derive(Debug, Default)]
pub struct FixedArena {
    buf: MutableBuffer,
}

/// One fixed-width column being decoded into a [`FixedArena`].
#[derive(Debug)]
pub struct FixedColumn {
    tag: u8,
    width: usize,
    offset: usize,
    len: usize,
    nulls: NullBufferBuilder,
}

impl FixedArena {
    /// An empty arena with room for about `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self { buf: MutableBuffer::new(bytes) }
    }

    /// Starts a column of `dtype`, or `None` when the type is not fixed-width.
    pub fn column(&mut self, dtype: &ValueType, rows: usize) -> Option<FixedColumn> {
        let width = dtype.fixed_width()?;
        let tag = scalar_tag(dtype);
        // Every column starts 8-aligned (the buffer itself is 64-aligned).
        let pad = self.buf.len().next_multiple_of(8) - self.buf.len();
        self.buf.extend_zeros(pad);
        self.buf.reserve(rows * 8);
        Some(FixedColumn { tag, width, offset: self.buf.len(), len: 0, nulls: NullBufferBuilder::new(rows) })
    }

    /// Appends a stored value to `col`, the column being decoded; another
    /// stored type than a lossless widening is an error naming the feature.
    pub fn append(&mut self, col: &mut FixedColumn, bytes: &[u8], feature: &str) -> Result<()> {
        let ok = match (col.tag, bytes) {
            (INT32, [INT32, v @ ..]) | (FLOAT32, [FLOAT32, v @ ..]) if v.len() == 4 => {
                self.buf.extend_from_slice(v);
                true
            }
            (INT64, [INT64, v @ ..]) | (FLOAT64, [FLOAT64, v @ ..]) | (TIMESTAMP, [TIMESTAMP, v @ ..])
                if v.len() == 8 =>
            {
                self.buf.extend_from_slice(v);
                true
            }
            (INT64, [INT32, v @ ..]) if v.len() == 4 => {
                let v = i32::from_le_bytes(v.try_into().expect("4 bytes"));
                self.buf.push(i64::from(v));
                true
            }
            (FLOAT64, [FLOAT32, v @ ..]) if v.len() == 4 => {
                let v = f32::from_le_bytes(v.try_into().expect("4 bytes"));
                self.buf.push(f64::from(v));
                true
            }
            _ => false,
        };
        if !ok {
            // The general decoder words the error the same way for every type.
            let dtype = &ScalarTypeInfo::by_codec_tag(col.tag).expect("a column's tag is in the table").value_type;
            ValueDecoder::new(dtype, 1).append(bytes, feature)?;
            return Err(Error::data(format!("online value of feature \"{feature}\""), "malformed stored value"));
        }
        col.len += 1;
        col.nulls.append_non_null();
        Ok(())
    }

    /// Appends a null to `col`.
    pub fn append_null(&mut self, col: &mut FixedColumn) {
        self.buf.extend_zeros(col.width);
        col.len += 1;
        col.nulls.append_null();
    }

    /// The finished buffer, which every column of this arena slices.
    pub fn finish(self) -> Buffer {
        self.buf.into()
    }
}

impl FixedColumn {
    /// The column as an Arrow array over `buffer` (the finished arena).
    pub fn array(mut self, buffer: &Buffer) -> ArrayRef {
        fn slice<T: ArrowPrimitiveType>(buffer: &Buffer, c: &mut FixedColumn) -> PrimitiveArray<T> {
            let width = std::mem::size_of::<T::Native>();
            let data = buffer.slice_with_length(c.offset, c.len * width);
            PrimitiveArray::new(ScalarBuffer::new(data, 0, c.len), c.nulls.finish())
        }
        match self.tag {
            INT32 => Arc::new(slice::<Int32Type>(buffer, &mut self)),
            INT64 => Arc::new(slice::<Int64Type>(buffer, &mut self)),
            FLOAT32 => Arc::new(slice::<Float32Type>(buffer, &mut self)),
            FLOAT64 => Arc::new(slice::<Float64Type>(buffer, &mut self)),
            _ => Arc::new(slice::<TimestampMicrosecondType>(buffer, &mut self).with_timezone(UTC)),
        }
    }
}

/// Builds the text key of each row from a view's join-key columns.
///
/// The key is `name=value` pairs sorted by name and joined by `,`, so views
/// over the same entities share keys. Integers of any width are written in
/// decimal (an `int32` and an `int64` key of equal value are the same key),
/// strings with `%`, `,`, `=`, `{` and `}` percent-escaped, bytes as `0x`
/// hex, booleans as `true`/`false`. A view without entities has the single key `_`.
pub fn entity_keys(columns: &[(&str, &ArrayRef)], rows: usize) -> Result<Vec<Option<String>>> {
    if columns.is_empty() {
        return Ok(vec![Some("_".to_owned()); rows]);
    }
    let mut order: Vec<usize> = (0..columns.len()).collect();
    order.sort_by_key(|&i| columns[i].0);
    let mut out = Vec::with_capacity(rows);
    let mut buf = String::new();
    for row in 0..rows {
        buf.clear();
        let mut null = false;
        for (n, &i) in order.iter().enumerate() {
            let (name, col) = columns[i];
            if col.is_null(row) {
                null = true;
                break;
            }
            if n > 0 {
                buf.push(',');
            }
            buf.push_str(name);
            buf.push('=');
            write_key_value(col.as_ref(), row, &mut buf).map_err(|t| {
                Error::data(format!("join key \"{name}\""), format!("type {t} cannot be an entity key"))
            })?;
        }
        out.push(if null { None } else { Some(buf.clone()) });
    }
    Ok(out)
}

fn write_key_value(a: &dyn Array, i: usize, out: &mut String) -> std::result::Result<(), String> {
    match a.data_type() {
        DataType::Int8 => push_display(out, a.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => push_display(out, a.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => push_display(out, a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => push_display(out, a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => push_display(out, a.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => push_display(out, a.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => push_display(out, a.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => push_display(out, a.as_primitive::<UInt64Type>().value(i)),
        DataType::Boolean => push_display(out, a.as_boolean().value(i)),
        DataType::Utf8 => escape(a.as_string::<i32>().value(i), out),
        DataType::LargeUtf8 => escape(a.as_string::<i64>().value(i), out),
        DataType::Utf8View => escape(a.as_string_view().value(i), out),
        DataType::Binary => hex(a.as_binary::<i32>().value(i), out),
        DataType::LargeBinary => hex(a.as_binary::<i64>().value(i), out),
        DataType::BinaryView => hex(a.as_binary_view().value(i), out),
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let k = d.normalized_keys()[i];
            return write_key_value(d.values().as_ref(), k, out);
        }
        other => return Err(crate::describe_arrow(other)),
    }
    Ok(())
}

fn push_display(out: &mut String, v: impl std::fmt::Display) {
    let _ = write!(out, "{v}");
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '%' | ',' | '=' | '{' | '}' => {
                let _ = write!(out, "%{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn hex(b: &[u8], out: &mut String) {
    out.push_str("0x");
    for byte in b {
        let _ = write!(out, "{byte:02x}");
    }
}

/// Set in a record's count when it lists every feature of its view, nulls
/// included (as empty values), so a name it lacks was not written at all.
/// Records without it (written before nulls were kept) omit their nulls.
const COMPLETE: u16 = 0x8000;

/// A set of named encoded values, the payload stores keep per key: `u16`
/// count, then per value a `u16`-prefixed name and a `u32`-prefixed value.
pub fn encode_record<'v>(fields: impl ExactSizeIterator<Item = (&'v str, &'v [u8])>, out: &mut Vec<u8>) {
    write_record(fields.len() as u16, fields.map(|(n, v)| (n, Some(v))), out);
}

/// A record of every feature of a row, nulls as empty values (no encoded
/// value is empty: each has its tag byte). A reader can then tell a null
/// value from a feature the row was written without (one added to the view
/// later), which is `NOT_FOUND`, not `NULL_VALUE`.
pub fn encode_full_record<'v>(fields: impl ExactSizeIterator<Item = (&'v str, Option<&'v [u8]>)>, out: &mut Vec<u8>) {
    write_record(COMPLETE | fields.len() as u16, fields, out);
}

fn write_record<'v>(count: u16, fields: impl Iterator<Item = (&'v str, Option<&'v [u8]>)>, out: &mut Vec<u8>) {
    out.extend_from_slice(&count.to_le_bytes());
    for (name, value) in fields {
        let value = value.unwrap_or_default();
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// Looks up `wanted` names in a record; `None` where a name is absent or its value null.
pub fn decode_record(record: &[u8], wanted: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
    let mut spans = vec![None; wanted.len()];
    record_spans(record, wanted, &mut spans)?;
    Ok(spans
        .into_iter()
        .map(|s| s.filter(|(a, b)| a < b).map(|(a, b)| record[a as usize..b as usize].to_vec()))
        .collect())
}

/// Finds `wanted` names in a record without copying: `out[i]` becomes the
/// byte range of `wanted[i]`'s value (empty for a stored null), or stays
/// `None` when absent. Returns whether the record is complete
/// ([`encode_full_record`]): then an absent name was never written, else it
/// may also be a null.
///
/// Records are usually written in the order the features are requested in,
/// so the name at the same position is tried first.
pub fn record_spans(record: &[u8], wanted: &[String], out: &mut [Option<(u32, u32)>]) -> Result<bool> {
    let corrupt = || Error::data("online record", "stored record is truncated or corrupt");
    let (count, mut rest) = record.split_at_checked(2).ok_or_else(corrupt)?;
    let count = u16::from_le_bytes([count[0], count[1]]);
    let mut at = 2usize;
    for n in 0..(count & !COMPLETE) as usize {
        let (len, r) = rest.split_at_checked(2).ok_or_else(corrupt)?;
        let name_len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let (name, r) = r.split_at_checked(name_len).ok_or_else(corrupt)?;
        let (len, r) = r.split_at_checked(4).ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (_, r) = r.split_at_checked(len).ok_or_else(corrupt)?;
        let value_at = at + 2 + name_len + 4;
        let slot = match wanted.get(n) {
            Some(w) if w.as_bytes() == name => Some(n),
            _ => wanted.iter().position(|w| w.as_bytes() == name),
        };
        if let Some(slot) = slot {
            out[slot] = Some((value_at as u32, (value_at + len) as u32));
        }
        at = value_at + len;
        rest = r;
    }
    Ok(count & COMPLETE != 0)
}

#[cfg(test)]
mod tests {
    use arrow_array::builder::{Float32Builder, ListBuilder};
    use arrow_array::{Float64Array, Int32Array, Int64Array, StringArray};

    use super::*;

    fn roundtrip(col: ArrayRef, t: &ValueType) -> ArrayRef {
        let enc = ValueEncoder::new(col.as_ref(), t);
        let mut dec = ValueDecoder::new(t, col.len());
        for i in 0..col.len() {
            let mut buf = Vec::new();
            if enc.encode(i, &mut buf) {
                dec.append(&buf, "f").unwrap();
            } else {
                dec.append_null();
            }
        }
        dec.finish()
    }

    #[test]
    fn values_round_trip() {
        let col: ArrayRef = Arc::new(StringArray::from(vec![Some("a,b"), None, Some("")]));
        assert_eq!(roundtrip(Arc::clone(&col), &ValueType::String).as_ref(), col.as_ref());
        let col: ArrayRef = Arc::new(Float64Array::from(vec![Some(f64::NAN), None, Some(-0.0)]));
        let back = roundtrip(Arc::clone(&col), &ValueType::Float64);
        assert!(back.as_primitive::<Float64Type>().value(0).is_nan());
        assert!(back.is_null(1));
        let mut lb = ListBuilder::new(Float32Builder::new());
        lb.values().append_value(1.5);
        lb.values().append_null();
        lb.append(true);
        lb.append(false);
        lb.append(true);
        let col: ArrayRef = Arc::new(lb.finish());
        let t = ValueType::List(Box::new(ValueType::Float32));
        assert_eq!(roundtrip(Arc::clone(&col), &t).as_ref(), col.as_ref());
    }

    /// Property: random columns of every value type (nulls, NaN and signed
    /// zeros, extreme integers, multi-byte text, empty and null lists)
    /// come back from the codec exactly, bit for bit (compared through
    /// their debug form, which tells NaN, -0.0 and 0.0 apart).
    #[test]
    fn random_columns_of_every_type_round_trip() {
        use arrow_array::builder::{
            ArrayBuilder, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
            TimestampMicrosecondBuilder,
        };
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let floats = [f64::NAN, -0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE, 1e308, -1.5];
        let texts = ["", "a,b", "é🦀", "\u{0}", "k=1:x"];
        fn fill(b: &mut dyn ArrayBuilder, t: &ValueType, r: u64, floats: &[f64], texts: &[&str]) {
            let any = b.as_any_mut();
            let pick = |n: usize| (r >> 8) as usize % n;
            match t {
                ValueType::Bool => any.downcast_mut::<BooleanBuilder>().unwrap().append_value(r & 1 == 0),
                ValueType::Int32 => any
                    .downcast_mut::<Int32Builder>()
                    .unwrap()
                    .append_value([i32::MIN, i32::MAX, 0, -1, (r >> 16) as i32][pick(5)]),
                ValueType::Int64 => any
                    .downcast_mut::<Int64Builder>()
                    .unwrap()
                    .append_value([i64::MIN, i64::MAX, 0, -1, (r >> 3) as i64][pick(5)]),
                ValueType::Float32 => {
                    any.downcast_mut::<Float32Builder>().unwrap().append_value(floats[pick(floats.len())] as f32)
                }
                ValueType::Float64 => {
                    let v = if r.is_multiple_of(3) { f64::from_bits(r) } else { floats[pick(floats.len())] };
                    any.downcast_mut::<Float64Builder>().unwrap().append_value(v)
                }
                ValueType::String => {
                    any.downcast_mut::<StringBuilder>().unwrap().append_value(texts[pick(texts.len())])
                }
                ValueType::Bytes => any.downcast_mut::<BinaryBuilder>().unwrap().append_value(r.to_le_bytes()),
                ValueType::Timestamp => any
                    .downcast_mut::<TimestampMicrosecondBuilder>()
                    .unwrap()
                    .append_value([i64::MIN / 2, 0, -1, 1_700_000_000_000_000][pick(4)]),
                _ => unreachable!("scalars only"),
            }
        }
        let scalars = [
            ValueType::Bool,
            ValueType::Int32,
            ValueType::Int64,
            ValueType::Float32,
            ValueType::Float64,
            ValueType::String,
            ValueType::Bytes,
            ValueType::Timestamp,
        ];
        for t in scalars.iter().cloned().chain(scalars.iter().map(|s| ValueType::List(Box::new(s.clone())))) {
            for _ in 0..20 {
                let rows = (next() % 40) as usize;
                let column: ArrayRef = match &t {
                    ValueType::List(inner) => {
                        let mut b = ListBuilder::new(arrow_array::builder::make_builder(&inner.to_arrow(), 0));
                        for _ in 0..rows {
                            if next() % 6 == 0 {
                                b.append(false);
                                continue;
                            }
                            for _ in 0..next() % 5 {
                                let r = next();
                                if r % 7 == 0 {
                                    append_null(b.values().as_mut(), inner);
                                } else {
                                    fill(b.values().as_mut(), inner, r, &floats, &texts);
                                }
                            }
                            b.append(true);
                        }
                        let list = b.finish();
                        // The builder's item field is named "item" and nullable, as the codec's.
                        cast_to(Arc::new(list), &t)
                    }
                    scalar => {
                        let mut b = arrow_array::builder::make_builder(&scalar.to_arrow(), rows);
                        for _ in 0..rows {
                            let r = next();
                            if r % 6 == 0 {
                                append_null(b.as_mut(), scalar);
                            } else {
                                fill(b.as_mut(), scalar, r, &floats, &texts);
                            }
                        }
                        cast_to(b.finish(), &t)
                    }
                };
                let back = roundtrip(Arc::clone(&column), &t);
                assert_eq!(back.data_type(), column.data_type());
                // Row by row: a long array's debug form elides its middle.
                for i in 0..rows {
                    let (got, want) = (back.slice(i, 1), column.slice(i, 1));
                    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{t} row {i}");
                }
            }
        }
    }

    fn append_null(b: &mut dyn arrow_array::builder::ArrayBuilder, t: &ValueType) {
        use arrow_array::builder::{
            BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
            TimestampMicrosecondBuilder,
        };
        let any = b.as_any_mut();
        match t {
            ValueType::Bool => any.downcast_mut::<BooleanBuilder>().unwrap().append_null(),
            ValueType::Int32 => any.downcast_mut::<Int32Builder>().unwrap().append_null(),
            ValueType::Int64 => any.downcast_mut::<Int64Builder>().unwrap().append_null(),
            ValueType::Float32 => any.downcast_mut::<Float32Builder>().unwrap().append_null(),
            ValueType::Float64 => any.downcast_mut::<Float64Builder>().unwrap().append_null(),
            ValueType::String => any.downcast_mut::<StringBuilder>().unwrap().append_null(),
            ValueType::Bytes => any.downcast_mut::<BinaryBuilder>().unwrap().append_null(),
            ValueType::Timestamp => any.downcast_mut::<TimestampMicrosecondBuilder>().unwrap().append_null(),
            _ => unreachable!("scalars only"),
        }
    }

    /// The column in the codec's exact Arrow type (time zone, list item field).
    fn cast_to(col: ArrayRef, t: &ValueType) -> ArrayRef {
        arrow_cast::cast(&col, &t.to_arrow()).expect("same layout")
    }

    #[test]
    fn widening_is_accepted_and_narrowing_is_an_error() {
        let mut buf = Vec::new();
        let col: ArrayRef = Arc::new(Int32Array::from(vec![7]));
        ValueEncoder::new(col.as_ref(), &ValueType::Int32).encode(0, &mut buf);
        let mut dec = ValueDecoder::new(&ValueType::Int64, 1);
        dec.append(&buf, "f").unwrap();
        assert_eq!(dec.finish().as_primitive::<Int64Type>().value(0), 7);
        let err = ValueDecoder::new(&ValueType::String, 1).append(&buf, "trips").unwrap_err().to_string();
        assert!(err.contains("\"trips\"") && err.contains("int32") && err.contains("string"), "{err}");
    }

    #[test]
    fn fixed_columns_share_one_aligned_buffer() {
        let enc = |col: ArrayRef, t: &ValueType| {
            let mut buf = Vec::new();
            assert!(ValueEncoder::new(col.as_ref(), t).encode(0, &mut buf));
            buf
        };
        let f32v = enc(Arc::new(arrow_array::Float32Array::from(vec![1.5])), &ValueType::Float32);
        let i32v = enc(Arc::new(Int32Array::from(vec![-7])), &ValueType::Int32);
        let f64v = enc(Arc::new(Float64Array::from(vec![2.25])), &ValueType::Float64);
        let mut arena = FixedArena::with_capacity(0);
        // A 4-byte column of odd length, then 8-byte ones: each must start aligned.
        let mut a = arena.column(&ValueType::Float32, 3).unwrap();
        arena.append(&mut a, &f32v, "a").unwrap();
        arena.append_null(&mut a);
        arena.append(&mut a, &f32v, "a").unwrap();
        let mut b = arena.column(&ValueType::Float64, 2).unwrap();
        arena.append(&mut b, &f32v, "b").unwrap();
        arena.append(&mut b, &f64v, "b").unwrap();
        let mut c = arena.column(&ValueType::Int64, 1).unwrap();
        arena.append(&mut c, &i32v, "c").unwrap();
        assert!(arena.column(&ValueType::String, 1).is_none());
        let mut d = arena.column(&ValueType::Int32, 1).unwrap();
        let err = arena.append(&mut d, &f64v, "trips").unwrap_err().to_string();
        assert!(err.contains("\"trips\"") && err.contains("float64") && err.contains("int32"), "{err}");
        let buffer = arena.finish();
        let a = a.array(&buffer);
        assert_eq!(a.as_primitive::<Float32Type>().iter().collect::<Vec<_>>(), vec![Some(1.5), None, Some(1.5)]);
        let b = b.array(&buffer);
        assert_eq!(b.as_primitive::<Float64Type>().values().to_vec(), vec![1.5, 2.25]);
        assert_eq!(b.null_count(), 0);
        assert_eq!(c.array(&buffer).as_primitive::<Int64Type>().value(0), -7);
    }

    #[test]
    fn keys_are_sorted_escaped_and_width_independent() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), None]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("x=1,{y}"), Some("z")]));
        let keys = entity_keys(&[("z_id", &a), ("a_id", &b)], 2).unwrap();
        assert_eq!(keys, vec![Some("a_id=x%3D1%2C%7By%7D,z_id=5".to_owned()), None]);
        let wide: ArrayRef = Arc::new(Int64Array::from(vec![5]));
        let narrow: ArrayRef = Arc::new(Int32Array::from(vec![5]));
        assert_eq!(entity_keys(&[("k", &wide)], 1).unwrap(), entity_keys(&[("k", &narrow)], 1).unwrap());
    }

    #[test]
    fn records_find_values_by_name() {
        let mut rec = Vec::new();
        encode_record([("a", &b"\x03xx"[..]), ("b", &b"\x06"[..])].into_iter(), &mut rec);
        let got = decode_record(&rec, &["b".into(), "c".into(), "a".into()]).unwrap();
        assert_eq!(got, vec![Some(b"\x06".to_vec()), None, Some(b"\x03xx".to_vec())]);
        assert!(decode_record(&rec[..rec.len() - 1], &["a".into()]).is_err());
        let mut spans = [None; 2];
        assert!(!record_spans(&rec, &["a".into(), "c".into()], &mut spans).unwrap());
    }

    #[test]
    fn full_records_tell_nulls_from_unwritten_features() {
        let mut rec = Vec::new();
        encode_full_record([("a", Some(&b"\x03xx"[..])), ("b", None)].into_iter(), &mut rec);
        let mut spans = [None; 3];
        assert!(record_spans(&rec, &["a".into(), "b".into(), "c".into()], &mut spans).unwrap());
        let [a, b, c] = spans;
        assert!(a.is_some_and(|(x, y)| y - x == 3));
        assert!(b.is_some_and(|(x, y)| x == y), "a stored null is an empty span");
        assert_eq!(c, None, "a feature the row was written without");
        let got = decode_record(&rec, &["b".into(), "a".into()]).unwrap();
        assert_eq!(got, vec![None, Some(b"\x03xx".to_vec())]);
    }
}
