//! Stream records into typed rows: each record is checked on its own, so a
//! bad one is rejected with its reason while the rest of the batch goes on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{Field, Schema};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

use super::{Message, Payload};
use crate::model::{EpochUnit, StreamSource};
use crate::{UTC, ValueType};

/// Microseconds since the epoch from ISO 8601 text: an offset, `Z`, or none
/// (UTC); a space may replace the `T`; a date alone is midnight UTC.
pub fn parse_instant(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(t) = utc_rfc3339(s.as_bytes()) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc).timestamp_micros());
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, what producers mostly write, read as
/// chrono's RFC 3339 parser reads it at a tenth of its cost; `None` for any
/// other form (offsets, a lowercase `t`, a leap second, more than nine
/// fraction digits), which that parser then decides.
fn utc_rfc3339(b: &[u8]) -> Option<i64> {
    fn digits(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (rest, last) = (&b[19..b.len() - 1], *b.last()?);
    if last != b'Z' {
        return None;
    }
    let nanos = match rest {
        [] => 0,
        [b'.', f @ ..] if (1..=9).contains(&f.len()) => digits(f)? * 10u32.pow(9 - f.len() as u32),
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)?;
    let t = date.and_hms_nano_opt(digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?, nanos)?;
    Some(t.and_utc().timestamp_micros())
}

/// One column a record may carry.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordField {
    /// Name after the stream's `field_mapping` (a join key or feature).
    pub name: String,
    /// Its type.
    pub dtype: ValueType,
    /// A record without it (or with null) is rejected: join keys.
    pub required: bool,
}

/// What records of one stream source hold.
#[derive(Debug, Clone)]
pub struct RecordSchema {
    /// The columns, in output order.
    pub fields: Vec<RecordField>,
    /// Name of the event-time column in the output.
    pub timestamp_column: String,
    source: StreamSource,
    /// Record field name → position in `fields`.
    by_record_name: HashMap<String, usize>,
    /// The same pairs, for scanning.
    by_name: Vec<(String, usize)>,
    /// `by_name`'s names, then the event time's, as JSON strings without
    /// escapes (quotes included), where they can be written so: a record's
    /// key is found by comparing its bytes, before any decoding.
    quoted: Vec<Option<Vec<u8>>>,
}

/// A decoded batch: good records as rows, the rest with the reason.
#[derive(Debug)]
pub struct Decoded {
    /// `fields` then the event time (µs, UTC), one row per good record.
    pub batch: RecordBatch,
    /// For each row, the index of its message.
    pub rows: Vec<usize>,
    /// (message index, reason) of every rejected record.
    pub rejected: Vec<(usize, String)>,
}

/// Reads one record's cells into the scratch row: its event time, or why it is refused.
type RecordFn = fn(&RecordSchema, &Payload, &mut Vec<Cell>) -> Result<i64, String>;

/// A value checked against its column's type.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Time(i64),
    List(Vec<Cell>),
}

impl RecordSchema {
    /// Columns `fields` of records of `source`; event times go to `timestamp_column`.
    pub fn new(source: &StreamSource, fields: Vec<RecordField>, timestamp_column: impl Into<String>) -> Self {
        let mut by_record_name = HashMap::new();
        for (i, f) in fields.iter().enumerate() {
            let raw = source
                .field_mapping
                .iter()
                .find(|(_, to)| **to == f.name)
                .map(|(from, _)| from.clone())
                .unwrap_or_else(|| f.name.clone());
            by_record_name.insert(raw, i);
        }
        // In the columns' order, which is the order producers usually write.
        let mut by_name: Vec<(String, usize)> = by_record_name.iter().map(|(k, v)| (k.clone(), *v)).collect();
        by_name.sort_by_key(|(_, i)| *i);
        let plain = |n: &str| !n.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        let quoted = by_name
            .iter()
            .map(|(n, _)| n.as_str())
            // A field named as the event time is the event time, as in the other paths.
            .map(|n| (plain(n) && n != source.timestamp_field).then(|| format!("\"{n}\"").into_bytes()))
            .chain([plain(&source.timestamp_field).then(|| format!("\"{}\"", source.timestamp_field).into_bytes())])
            .collect();
        Self {
            fields,
            timestamp_column: timestamp_column.into(),
            source: source.clone(),
            by_record_name,
            by_name,
            quoted,
        }
    }

    /// The output schema.
    pub fn arrow_schema(&self) -> Arc<Schema> {
        let mut fields: Vec<Field> =
            self.fields.iter().map(|f| Field::new(&f.name, f.dtype.to_arrow(), !f.required)).collect();
        fields.push(Field::new(&self.timestamp_column, crate::timestamp_type(), false));
        Arc::new(Schema::new(fields))
    }

    /// Decodes `messages`.
    pub fn decode(&self, messages: &[Message]) -> Decoded {
        self.decode_with(messages, Self::record)
    }

    /// [`Self::decode`] without its one-pass fast path: what the fast path
    /// must agree with (the fuzz target and tests compare the two).
    #[doc(hidden)]
    pub fn decode_checked(&self, messages: &[Message]) -> Decoded {
        self.decode_with(messages, Self::checked_into)
    }

    fn decode_with(&self, messages: &[Message], record: RecordFn) -> Decoded {
        // Column by column as records arrive: one scratch row reused, so a
        // record costs no allocation of its own, and each column is then
        // built from contiguous cells.
        let width = self.fields.len();
        let mut by_column: Vec<Vec<Cell>> = (0..width).map(|_| Vec::with_capacity(messages.len())).collect();
        let mut times = Vec::with_capacity(messages.len());
        let mut rows = Vec::with_capacity(messages.len());
        let mut rejected = Vec::new();
        let mut cells = Vec::with_capacity(width);
        for (m, message) in messages.iter().enumerate() {
            match record(self, &message.payload, &mut cells) {
                Ok(ts) => {
                    for (column, cell) in by_column.iter_mut().zip(cells.drain(..)) {
                        column.push(cell);
                    }
                    times.push(ts);
                    rows.push(m);
                }
                Err(reason) => rejected.push((m, reason)),
            }
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(width + 1);
        for (f, cells) in self.fields.iter().zip(&by_column) {
            columns.push(build(&f.dtype, cells.len(), cells.iter()));
        }
        let ts = TimestampMicrosecondArray::from(times).with_timezone(UTC);
        columns.push(Arc::new(ts));
        let batch = RecordBatch::try_new(self.arrow_schema(), columns).expect("columns built to the schema");
        Decoded { batch, rows, rejected }
    }

    /// One record's cells (into `cells`) and event time, or why it is refused.
    fn record(&self, payload: &Payload, cells: &mut Vec<Cell>) -> Result<i64, String> {
        if let Payload::Json(bytes) = payload {
            if let Some(ts) = self.flat_record_into(bytes, cells) {
                return Ok(ts);
            }
            if let Some((found, ts)) = self.fast_record(bytes) {
                *cells = found;
                return Ok(ts);
            }
        }
        Self::checked_into(self, payload, cells)
    }

    fn checked_into(&self, payload: &Payload, cells: &mut Vec<Cell>) -> Result<i64, String> {
        let (found, ts) = self.checked_record(payload)?;
        *cells = found;
        Ok(ts)
    }

    #[cfg(test)]
    fn flat_record(&self, bytes: &[u8]) -> Option<(Vec<Cell>, i64)> {
        let mut cells = Vec::new();
        self.flat_record_into(bytes, &mut cells).map(|ts| (cells, ts))
    }

    /// A flat JSON object of plain scalars (strings without escapes, short
    /// numbers) read by a byte scan: what producers send nearly always, and
    /// serde_json's general tokenizer costs this path most of its time.
    /// `None` for anything else (nesting, escapes, lists, numbers serde_json
    /// might round differently): [`Self::fast_record`] then reads it. The
    /// cells come from the same [`CellSeed`] as there, so the two agree.
    /// The cells go to `cells` (its earlier contents are dropped; on `None`
    /// it holds anything).
    fn flat_record_into(&self, bytes: &[u8], cells: &mut Vec<Cell>) -> Option<i64> {
        let mut s = Scan { b: bytes, i: 0 };
        s.ws();
        s.eat(b'{')?;
        cells.clear();
        cells.resize(self.fields.len(), Cell::Null);
        let mut ts = None;
        let mut next = 0;
        let unit = self.source.timestamp_unit;
        s.ws();
        if s.peek() == Some(b'}') {
            return None;
        }
        let time_at = self.by_name.len();
        loop {
            // The field after the last one found (producers write fields in
            // one order), or the event time, by their bytes; else decoded.
            let found = [next, time_at].into_iter().find(|&at| match &self.quoted[at] {
                Some(q) => s.b[s.i..].starts_with(q),
                None => false,
            });
            let found = match found {
                Some(at) => {
                    s.i += self.quoted[at].as_ref().map_or(0, Vec::len);
                    Some(at)
                }
                None => {
                    let key = s.string()?;
                    if key == self.source.timestamp_field.as_str() {
                        Some(time_at)
                    } else {
                        self.by_name.iter().position(|(n, _)| n == key)
                    }
                }
            };
            s.ws();
            s.eat(b':')?;
            s.ws();
            if found == Some(time_at) {
                match s.value(CellSeed { dtype: &ValueType::Timestamp, unit })? {
                    Cell::Time(t) => ts = Some(t),
                    _ => return None,
                }
            } else if let Some(at) = found {
                let i = self.by_name[at].1;
                next = at + 1;
                let dtype = &self.fields[i].dtype;
                if matches!(dtype, ValueType::List(_)) {
                    return None;
                }
                cells[i] = s.value(CellSeed { dtype, unit })?;
            } else if self.source.strict {
                return None;
            } else {
                s.skip_scalar()?;
            }
            s.ws();
            match s.take()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
        s.ws();
        if s.i != bytes.len() {
            return None;
        }
        let ts = ts?;
        if self.fields.iter().zip(cells.iter()).any(|(f, c)| f.required && matches!(c, Cell::Null)) {
            return None;
        }
        Some(ts)
    }

    /// A JSON object record read in one pass, without building its object
    /// (the common case: ingestion's hot path). `None` when anything is
    /// off: [`Self::checked_record`] then decides, with its reason. Accepts
    /// exactly what that does, with the same cells: for a repeated field the
    /// last value counts in both, and every value here must be valid, so a
    /// record accepted here is accepted there too.
    fn fast_record(&self, bytes: &[u8]) -> Option<(Vec<Cell>, i64)> {
        use serde::de::{DeserializeSeed, MapAccess, Visitor};

        struct Key<'de>(std::borrow::Cow<'de, str>);
        impl<'de> serde::Deserialize<'de> for Key<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Key<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                        Ok(Key(std::borrow::Cow::Borrowed(v)))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                        Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
                    }
                }
                d.deserialize_str(V)
            }
        }

        struct Record<'s>(&'s RecordSchema);
        impl<'de> Visitor<'de> for Record<'_> {
            /// Cells, the event time, and whether a strict source saw an unknown field.
            type Value = Option<(Vec<Cell>, i64)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let schema = self.0;
                let mut cells = vec![Cell::Null; schema.fields.len()];
                let mut ts = None;
                // Fields are found by a scan (a record has few; hashing each
                // name costs more), starting after the last one found:
                // producers write fields in one order, usually the columns'.
                let mut next = 0;
                let unit = schema.source.timestamp_unit;
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if key == schema.source.timestamp_field.as_str() {
                        match map.next_value_seed(CellSeed { dtype: &ValueType::Timestamp, unit })? {
                            Cell::Time(t) => ts = Some(t),
                            _ => return Ok(None),
                        }
                    } else if let Some((at, i)) = match schema.by_name.get(next) {
                        Some((n, i)) if *n == key => Some((next, *i)),
                        _ => {
                            schema.by_name.iter().enumerate().find(|(_, (n, _))| *n == key).map(|(at, (_, i))| (at, *i))
                        }
                    } {
                        next = at + 1;
                        cells[i] = map.next_value_seed(CellSeed { dtype: &schema.fields[i].dtype, unit })?;
                    } else if schema.source.strict {
                        return Ok(None);
                    } else {
                        // Parsed as the checked path parses it (`IgnoredAny`
                        // would skip invalid UTF-8 that path refuses).
                        map.next_value::<Value>()?;
                    }
                }
                let Some(ts) = ts else { return Ok(None) };
                if schema.fields.iter().zip(&cells).any(|(f, c)| f.required && matches!(c, Cell::Null)) {
                    return Ok(None);
                }
                Ok(Some((cells, ts)))
            }
        }

        struct Seed<'s>(&'s RecordSchema);
        impl<'de> DeserializeSeed<'de> for Seed<'_> {
            type Value = Option<(Vec<Cell>, i64)>;
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(Record(self.0))
            }
        }

        let mut de = serde_json::Deserializer::from_slice(bytes);
        let out = Seed(self).deserialize(&mut de).ok()??;
        de.end().ok()?;
        Some(out)
    }

    /// [`Self::record`] through a parsed JSON object, naming the reason a
    /// record is refused.
    fn checked_record(&self, payload: &Payload) -> Result<(Vec<Cell>, i64), String> {
        let (object, text) = match payload {
            Payload::Json(bytes) => match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(o)) => (o, false),
                Ok(other) => return Err(format!("the record is a JSON {}, not an object", kind(&other))),
                Err(e) => return Err(format!("malformed JSON: {e}")),
            },
            Payload::Fields(pairs) => {
                (pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect(), true)
            }
        };
        let mut cells = vec![Cell::Null; self.fields.len()];
        let mut ts = None;
        let mut unknown: Vec<&str> = Vec::new();
        for (key, value) in &object {
            if *key == self.source.timestamp_field {
                ts = Some(self.timestamp(value, text).map_err(|why| format!("field \"{key}\": {why}"))?);
                continue;
            }
            let Some(&i) = self.by_record_name.get(key.as_str()) else {
                unknown.push(key);
                continue;
            };
            let f = &self.fields[i];
            cells[i] = cell(&f.dtype, value, text, self.source.timestamp_unit).map_err(|why| {
                let shown = if f.name == *key { String::new() } else { format!(" ({})", f.name) };
                format!("field \"{key}\"{shown}: {why}")
            })?;
        }
        let ts =
            ts.ok_or_else(|| format!("no event time: the record lacks field \"{}\"", self.source.timestamp_field))?;
        if let Some(f) = self.fields.iter().zip(&cells).find(|(f, c)| f.required && matches!(c, Cell::Null)) {
            return Err(format!("join key \"{}\" is missing or null", f.0.name));
        }
        if self.source.strict && !unknown.is_empty() {
            return Err(format!(
                "unknown field{} {} (the source is strict; known: {})",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", "),
                self.known()
            ));
        }
        Ok((cells, ts))
    }

    fn known(&self) -> String {
        let mut names: Vec<&str> = self.by_record_name.keys().map(String::as_str).collect();
        names.push(&self.source.timestamp_field);
        names.sort_unstable();
        names.join(", ")
    }

    fn timestamp(&self, value: &Value, text: bool) -> Result<i64, String> {
        match cell(&ValueType::Timestamp, value, text, self.source.timestamp_unit)? {
            Cell::Time(t) => Ok(t),
            _ => Err("is null; every record needs an event time".into()),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `value` as a cell of type `dtype`; `text`: numbers and booleans may be
/// given as text (flat Redis entries).
fn cell(dtype: &ValueType, value: &Value, text: bool, unit: EpochUnit) -> Result<Cell, String> {
    let wrong = || format!("{} {value} is not {dtype}", kind(value));
    if value.is_null() {
        return Ok(Cell::Null);
    }
    // Flat entries carry text: read it as the JSON value it spells.
    if text && let Value::String(s) = value {
        match dtype {
            ValueType::String | ValueType::Bytes => {}
            ValueType::Timestamp if s.trim().parse::<f64>().is_err() => {}
            ValueType::Float32 | ValueType::Float64 if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => {}
            ValueType::List(_) => {
                let parsed: Value = serde_json::from_str(s).map_err(|_| format!("text \"{s}\" is not a JSON list"))?;
                return cell(dtype, &parsed, false, unit);
            }
            _ => {
                let parsed: Value =
                    serde_json::from_str(s.trim()).map_err(|_| format!("text \"{s}\" is not {dtype}"))?;
                return cell(dtype, &parsed, false, unit);
            }
        }
    }
    Ok(match dtype {
        ValueType::Bool => Cell::Bool(value.as_bool().ok_or_else(wrong)?),
        ValueType::Int32 => {
            let n = value.as_i64().ok_or_else(wrong)?;
            i32::try_from(n).map_err(|_| format!("{n} is outside the int32 range"))?;
            Cell::Int(n)
        }
        ValueType::Int64 => Cell::Int(value.as_i64().ok_or_else(wrong)?),
        ValueType::Float32 | ValueType::Float64 => Cell::Float(match value {
            Value::Number(n) => n.as_f64().ok_or_else(wrong)?,
            Value::String(s) => match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => return Err(wrong()),
            },
            _ => return Err(wrong()),
        }),
        ValueType::String | ValueType::Bytes => Cell::Text(value.as_str().ok_or_else(wrong)?.to_owned()),
        ValueType::Timestamp => Cell::Time(match value {
            Value::Number(n) => {
                let micros = n.as_f64().ok_or_else(wrong)? * unit.micros();
                if !micros.is_finite() || micros.abs() > 9.2e18 {
                    return Err(format!("{value} is out of range as a time"));
                }
                micros.round() as i64
            }
            Value::String(s) => parse_instant(s).ok_or_else(|| {
                format!(
                    "\"{s}\" is not a time; give ISO 8601 text (with an offset, Z, or none for UTC) or an epoch number"
                )
            })?,
            _ => return Err(wrong()),
        }),
        ValueType::List(inner) => match value {
            Value::Array(items) => Cell::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(j, v)| cell(inner, v, false, unit).map_err(|why| format!("item {j}: {why}")))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(wrong()),
        },
    })
}

/// One JSON value read straight into a cell, as [`cell`] reads it from a
/// parsed `Value` (`text` false), without building the `Value`: a number or
/// a string is read where it lies. An error for anything [`cell`] would
/// refuse, or that is rare here (lists go through a `Value`): the fast path
/// then gives up and the checked path decides, with its reason.
struct CellSeed<'a> {
    dtype: &'a ValueType,
    unit: EpochUnit,
}

impl<'de> serde::de::DeserializeSeed<'de> for CellSeed<'_> {
    type Value = Cell;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cell, D::Error> {
        use serde::de::Error;
        if let ValueType::List(_) = self.dtype {
            let value: Value = serde::Deserialize::deserialize(d)?;
            return cell(self.dtype, &value, false, self.unit).map_err(D::Error::custom);
        }
        d.deserialize_any(self)
    }
}

impl CellSeed<'_> {
    /// A number as `Value::as_f64` reads it, as [`cell`] takes it.
    fn float<E: serde::de::Error>(&self, v: f64) -> Result<Cell, E> {
        match self.dtype {
            ValueType::Float32 | ValueType::Float64 => Ok(Cell::Float(v)),
            ValueType::Timestamp => {
                let micros = v * self.unit.micros();
                if !micros.is_finite() || micros.abs() > 9.2e18 {
                    return Err(E::custom("out of range as a time"));
                }
                Ok(Cell::Time(micros.round() as i64))
            }
            _ => Err(E::custom("not this type")),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for CellSeed<'_> {
    type Value = Cell;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a {} value", self.dtype)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Cell, E> {
        Ok(Cell::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Cell, E> {
        match self.dtype {
            ValueType::Bool => Ok(Cell::Bool(v)),
            _ => Err(E::custom("not this type")),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Cell, E> {
        match self.dtype {
            ValueType::Int64 => Ok(Cell::Int(v)),
            ValueType::Int32 if i32::try_from(v).is_ok() => Ok(Cell::Int(v)),
            _ => self.float(v as f64),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Cell, E> {
        match (self.dtype, i64::try_from(v)) {
            (ValueType::Int64 | ValueType::Int32, Ok(n)) => self.visit_i64(n),
            (ValueType::Int64 | ValueType::Int32, Err(_)) => Err(E::custom("outside int64")),
            _ => self.float(v as f64),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Cell, E> {
        self.float(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cell, E> {
        match self.dtype {
            ValueType::String | ValueType::Bytes => Ok(Cell::Text(v.to_owned())),
            ValueType::Timestamp => parse_instant(v).map(Cell::Time).ok_or_else(|| E::custom("not a time")),
            ValueType::Float32 | ValueType::Float64 => match v {
                "NaN" => Ok(Cell::Float(f64::NAN)),
                "Infinity" => Ok(Cell::Float(f64::INFINITY)),
                "-Infinity" => Ok(Cell::Float(f64::NEG_INFINITY)),
                _ => Err(E::custom("not a float")),
            },
            _ => Err(E::custom("not this type")),
        }
    }
}

/// A cursor over one record for [`RecordSchema::flat_record`]: each step
/// either reads exactly what serde_json would read there or gives up.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

/// Powers of ten a double holds exactly.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn take(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.take()? == c).then_some(())
    }

    /// JSON's whitespace, as serde_json skips it.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string without escapes or control characters, valid UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.take()? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => {}
            }
        }
        std::str::from_utf8(&self.b[start..self.i - 1]).ok()
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(w).then(|| self.i += w.len())
    }

    /// A scalar read into `seed`'s cell.
    fn value(&mut self, seed: CellSeed<'_>) -> Option<Cell> {
        use serde::de::Visitor;
        type E = serde_json::Error;
        match self.peek()? {
            b'"' => seed.visit_str::<E>(self.string()?).ok(),
            b't' => self.word(b"true").and_then(|()| seed.visit_bool::<E>(true).ok()),
            b'f' => self.word(b"false").and_then(|()| seed.visit_bool::<E>(false).ok()),
            b'n' => self.word(b"null").and_then(|()| seed.visit_unit::<E>().ok()),
            _ => match self.number()? {
                Number::U64(n) => seed.visit_u64::<E>(n).ok(),
                Number::I64(n) => seed.visit_i64::<E>(n).ok(),
                Number::F64(f) => seed.visit_f64::<E>(f).ok(),
            },
        }
    }

    /// A scalar of a field no view reads, checked as serde_json checks it.
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number().map(drop),
        }
    }

    /// A number as serde_json (without `float_roundtrip`) reads it, in the
    /// range where its result is the exactly rounded one: integers that fit
    /// 64 bits, and decimals whose digits fit 53 bits and whose power of
    /// ten is exact (one correctly rounded multiplication or division).
    fn number(&mut self) -> Option<Number> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let mut significand: u64 = 0;
        let first = self.take()?;
        match first {
            b'0' => {
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => {
                significand = u64::from(first - b'0');
                while let Some(c @ b'0'..=b'9') = self.peek() {
                    significand = significand.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let mut exponent: i32 = 0;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            float = true;
            let start = self.i;
            while let Some(c @ b'0'..=b'9') = self.peek() {
                significand = significand.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                exponent -= 1;
                self.i += 1;
            }
            if self.i == start {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            float = true;
            let negative_exp = match self.peek()? {
                b'-' => {
                    self.i += 1;
                    true
                }
                b'+' => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let start = self.i;
            let mut e: i32 = 0;
            while let Some(c @ b'0'..=b'9') = self.peek() {
                e = e.checked_mul(10)?.checked_add(i32::from(c - b'0'))?;
                self.i += 1;
            }
            if self.i == start || e > 1000 {
                return None;
            }
            exponent += if negative_exp { -e } else { e };
        }
        if !float {
            return if !negative {
                Some(Number::U64(significand))
            } else {
                // serde_json reads -0 and anything below i64::MIN as a float.
                let n = (significand as i64).wrapping_neg();
                (n < 0).then_some(Number::I64(n))
            };
        }
        if significand > 1 << 53 {
            return None;
        }
        let pow = *EXACT_POW10.get(exponent.unsigned_abs() as usize)?;
        let f = significand as f64;
        let f = if exponent >= 0 { f * pow } else { f / pow };
        Some(Number::F64(if negative { -f } else { f }))
    }
}

/// A JSON number as serde_json hands it to a visitor.
enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A column of checked cells.
fn build<'a>(dtype: &ValueType, n: usize, cells: impl Iterator<Item = &'a Cell>) -> ArrayRef {
    macro_rules! scalar {
        ($b:expr, $pat:pat => $v:expr) => {{
            let mut b = $b;
            for c in cells {
                match c {
                    $pat => b.append_value($v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match dtype {
        ValueType::Bool => scalar!(BooleanBuilder::with_capacity(n), Cell::Bool(v) => *v),
        ValueType::Int32 => scalar!(Int32Builder::with_capacity(n), Cell::Int(v) => *v as i32),
        ValueType::Int64 => scalar!(Int64Builder::with_capacity(n), Cell::Int(v) => *v),
        ValueType::Float32 => scalar!(Float32Builder::with_capacity(n), Cell::Float(v) => *v as f32),
        ValueType::Float64 => scalar!(Float64Builder::with_capacity(n), Cell::Float(v) => *v),
        ValueType::String => scalar!(StringBuilder::with_capacity(n, 0), Cell::Text(v) => v),
        ValueType::Bytes => scalar!(BinaryBuilder::with_capacity(n, 0), Cell::Text(v) => v.as_bytes()),
        ValueType::Timestamp => {
            scalar!(TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC), Cell::Time(v) => *v)
        }
        ValueType::List(inner) => {
            let cells: Vec<&Cell> = cells.collect();
            let items: Vec<&Cell> = cells
                .iter()
                .flat_map(|c| if let Cell::List(v) = c { v.iter().collect() } else { Vec::new() })
                .collect();
            let values = build(inner, items.len(), items.into_iter());
            let mut offsets = vec![0i32];
            let mut valid = Vec::with_capacity(cells.len());
            for c in &cells {
                let n = if let Cell::List(v) = c { v.len() } else { 0 };
                offsets.push(offsets.last().copied().unwrap_or(0) + n as i32);
                valid.push(matches!(c, Cell::List(_)));
            }
            let field = Arc::new(Field::new_list_field(inner.to_arrow(), true));
            Arc::new(arrow_array::ListArray::new(
                field,
                arrow_buffer::OffsetBuffer::new(offsets.into()),
                values,
                Some(arrow_buffer::NullBuffer::from(valid)),
            ))
        }
    }
}

/// The fields of `source`'s records each view over it reads, and which are
/// required (join keys): `types` gives each column's type.
pub fn record_fields(join_keys: &[(String, ValueType)], values: &BTreeMap<String, ValueType>) -> Vec<RecordField> {
    let mut out: Vec<RecordField> =
        join_keys.iter().map(|(n, t)| RecordField { name: n.clone(), dtype: t.clone(), required: true }).collect();
    for (n, t) in values {
        if !out.iter().any(|f| f.name == *n) {
            out.push(RecordField { name: n.clone(), dtype: t.clone(), required: false });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;

    use super::*;
    use crate::model::StreamKind;

    fn schema(strict: bool) -> RecordSchema {
        let source = StreamSource::builder("s", StreamKind::RedisStream, "ts", "b")
            .redis("redis://x", "k")
            .map_field("rate", "conv_rate")
            .strict(strict)
            .build()
            .unwrap();
        let fields = vec![
            RecordField { name: "driver_id".into(), dtype: ValueType::Int64, required: true },
            RecordField { name: "conv_rate".into(), dtype: ValueType::Float32, required: false },
            RecordField { name: "tags".into(), dtype: ValueType::List(Box::new(ValueType::String)), required: false },
        ];
        RecordSchema::new(&source, fields, "event_timestamp")
    }

    fn json(s: &str) -> Message {
        Message::new("p".into(), 1, "1", Payload::Json(bytes::Bytes::copy_from_slice(s.as_bytes())))
    }

    /// The one-pass path and the checked one agree on every record: rows,
    /// values, refusals and their reasons.
    #[test]
    fn the_fast_path_decodes_as_the_checked_one() {
        let records = [
            r#"{"driver_id": 1, "rate": 0.5, "ts": "2026-12-04T10:00:00+01:00", "tags": ["a", "b"]}"#,
            r#"{"driver_id": 1, "driver_id": 2, "ts": 5}"#,
            r#"{"driver_id": "x", "driver_id": 2, "ts": 5}"#,
            r#"{"driver_id": 2, "driver_id": "x", "ts": 5}"#,
            r#"{"ts": 1, "ts": "bad", "driver_id": 3}"#,
            r#"{"ts": "bad", "ts": 1, "driver_id": 3}"#,
            r#"{"driver_id": 4, "ts": 1.5e9, "rate": null}"#,
            r#"{"driver_id": 5, "ts": 1, "extra": {"deep": [1, 2, {"x": null}]}}"#,
            r#"{"driver_id": 6, "ts": 1, "tags": null, "rate": "NaN"}"#,
            r#"{"driver_id": 7, "ts": 1} trailing"#,
            r#"{"driver_id": 9223372036854775807, "ts": -1}"#,
            r#"{"driver_id": 1.0, "ts": 1}"#,
            r#"{"driver_id": 1, "ts": 1, "rate": 1e400}"#,
            r#"{}"#,
            r#""text""#,
            r#"{"driver_id": 8, "ts": 1, "tags": [1]}"#,
            r#"{"ts": 1, "rate": 2, "driver_id": 3}"#,
            r#"{"dri\u0076er_id": 4, "ts": 1}"#,
            r#"{"driver_idx": "a", "driver_id": 5, "ts\"": 2, "ts": 3, "rate": 0.25}"#,
            r#"{"driver_id":6,"ts":"2026-12-04T10:00:00.5Z","rate":-12.75e1}"#,
        ];
        for strict in [false, true] {
            let schema = schema(strict);
            let mut messages: Vec<Message> = records.iter().map(|r| json(r)).collect();
            // Invalid UTF-8 in an unknown field's text (found by the fuzz target).
            let mut bad = br#"{"driver_id": 1, "": "10"#.to_vec();
            bad.extend_from_slice(&[0xc6, 0xcf, 0xcf]);
            bad.extend_from_slice(br#"", "ts": 0}"#);
            messages.push(Message::new("p".into(), 9, "9", Payload::Json(bytes::Bytes::from(bad))));
            let (fast, checked) = (schema.decode(&messages), schema.decode_checked(&messages));
            assert_eq!(fast.rows, checked.rows, "strict {strict}");
            assert_eq!(fast.rejected, checked.rejected, "strict {strict}");
            assert_eq!(fast.batch, checked.batch, "strict {strict}");
            assert!(fast.rows.len() >= 5 && !fast.rejected.is_empty(), "test bug: {:?}", fast.rows);
        }
    }

    /// The byte scan takes the records producers usually send, gives up on
    /// the rest, and reads every value it takes as serde_json does.
    #[test]
    fn the_byte_scan_reads_as_serde_json() {
        let schema = schema(false);
        let numbers = [
            "0",
            "-0",
            "7",
            "-7",
            "0.1",
            "-0.0",
            "1.5e-3",
            "1E+2",
            "1e22",
            "1e23",
            "0.30000000000000004",
            "9007199254740993.0",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "123456.789e-7",
            "5e-324",
            "1.7976931348623157e308",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "--1",
            "1.5.5",
            "\"NaN\"",
            "\"-Infinity\"",
            "\"1\"",
            "true",
            "null",
        ];
        let mut taken = 0;
        for n in numbers {
            for record in [
                format!(r#"{{"driver_id": 1, "ts": 5, "rate": {n}}}"#),
                format!(r#"{{"driver_id": {n}, "ts": 5}}"#),
                format!(r#"{{"driver_id": 1, "ts": {n}}}"#),
                format!(r#"{{"driver_id": 1, "ts": 5, "other": {n}}}"#),
            ] {
                let bytes = record.as_bytes();
                let (flat, serde) = (schema.flat_record(bytes), schema.fast_record(bytes));
                if let Some((cells, ts)) = &flat {
                    taken += 1;
                    let (want, want_ts) = serde.as_ref().unwrap_or_else(|| panic!("{record}: taken, serde refused"));
                    assert_eq!(ts, want_ts, "{record}");
                    assert_eq!(format!("{cells:?}"), format!("{want:?}"), "{record}");
                    if let (Cell::Float(a), Cell::Float(b)) = (&cells[1], &want[1]) {
                        assert_eq!(a.to_bits(), b.to_bits(), "{record}");
                    }
                }
            }
        }
        assert!(taken > 40, "the scan took only {taken} records");
        let usual = br#"{"driver_id":17,"ts":"2026-12-04T10:00:00.123456Z","rate":612.5,"other":"x"}"#;
        assert!(schema.flat_record(usual).is_some());
        for unusual in [
            &br#"{"driver_id":1,"ts":5,"tags":["a"]}"#[..],
            br#"{"driver_id":1,"ts":5,"other":{"a":1}}"#,
            br#"{"driver_id":1,"ts":"2026-12-04T10:00:00\u005a"}"#,
            br#"{"driver_id":1,"ts":5} x"#,
            br#"{"driver_id":1,"ts":5,}"#,
        ] {
            assert!(schema.flat_record(unusual).is_none(), "{}", String::from_utf8_lossy(unusual));
        }
    }

    /// The common UTC form is read as chrono reads it; other forms are left to chrono.
    #[test]
    fn utc_times_are_read_as_chrono_reads_them() {
        let chrono = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc).timestamp_micros());
        let mut taken = 0;
        for s in [
            "2026-12-04T10:00:00Z",
            "2026-12-04T10:00:00.5Z",
            "2026-12-04T10:00:00.123456Z",
            "2026-12-04T10:00:00.123456789Z",
            "2026-12-04T10:00:00.1234567891Z",
            "2024-02-29T23:59:59.999999Z",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-04T24:00:00Z",
            "2016-12-31T23:59:60Z",
            "0000-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "1900-01-01T00:00:00.000001Z",
            "9999-12-31T23:59:59Z",
            "2026-12-04t10:00:00z",
            "2026-12-04 10:00:00Z",
            "2026-12-04T10:00:00+01:00",
            "2026-12-04T10:00:00.Z",
            "2026-12-04T10:00Z",
            "2026-1-04T10:00:00Z",
            "+026-12-04T10:00:00Z",
            "2026-12-04T10:00:0xZ",
        ] {
            match utc_rfc3339(s.as_bytes()) {
                Some(t) => {
                    taken += 1;
                    assert_eq!(Some(t), chrono(s), "{s}");
                }
                None => assert_eq!(parse_instant(s), chrono(s).or_else(|| parse_instant(s)), "{s}"),
            }
        }
        assert_eq!(taken, 9, "the fast form was not taken where it should be");
    }

    #[test]
    fn good_records_become_rows_and_bad_ones_say_why() {
        let messages = vec![
            json(r#"{"driver_id": 1, "rate": 0.5, "ts": "2026-12-04T10:00:00+01:00", "tags": ["a"]}"#),
            json(r#"{"driver_id": "x", "ts": 0}"#),
            json(r#"{"driver_id": 2, "ts": 1780000000.5, "extra": 1}"#),
            json(r#"{"rate": 1, "ts": 0}"#),
            json(r#"[1]"#),
            json(r#"{"driver_id": 3, "ts": "yesterday"}"#),
            json(r#"{"driver_id": 3}"#),
            json("{bad"),
            Message::new(
                "p".into(),
                2,
                "2",
                Payload::Fields(vec![
                    ("driver_id".into(), "4".into()),
                    ("rate".into(), "NaN".into()),
                    ("ts".into(), "2026-12-04 09:00:00".into()),
                ]),
            ),
        ];
        let d = schema(false).decode(&messages);
        assert_eq!(d.rows, vec![0, 2, 8]);
        let reasons: Vec<String> = d.rejected.iter().map(|(i, r)| format!("{i}: {r}")).collect();
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        assert!(reasons[0].contains("1: field \"driver_id\": string \"x\" is not int64"), "{reasons:?}");
        assert!(reasons[1].contains("join key \"driver_id\" is missing or null"), "{reasons:?}");
        assert!(reasons[2].contains("JSON array, not an object"), "{reasons:?}");
        assert!(reasons[3].contains("\"yesterday\" is not a time"), "{reasons:?}");
        assert!(reasons[4].contains("lacks field \"ts\""), "{reasons:?}");
        assert!(reasons[5].contains("malformed JSON"), "{reasons:?}");
        let ts = d.batch.column(3).as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        assert_eq!(ts.value(0), parse_instant("2026-12-04T09:00:00Z").unwrap());
        assert_eq!(ts.value(2), parse_instant("2026-12-04T09:00:00Z").unwrap());
        assert_eq!(ts.value(1), 1_780_000_000_500_000);
        let rate = d.batch.column(1).as_primitive::<arrow_array::types::Float32Type>();
        assert!(rate.is_null(1) && rate.value(2).is_nan());
        assert_eq!(d.batch.column(2).as_list::<i32>().value(0).as_string::<i32>().value(0), "a");
        let strict = schema(true).decode(&messages[2..3]);
        assert!(strict.rejected[0].1.contains("unknown field \"extra\""), "{:?}", strict.rejected);
    }
}
