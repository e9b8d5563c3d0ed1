//! JSON columns (`{"driver_id": [1001, 1002]}`, Feast's `entities` and
//! `df`) into an Arrow batch, typed by the registry where it declares a
//! column and by the JSON values otherwise. Every refusal names the column,
//! the position and the value.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use feature_store_core::{UTC, ValueType};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Columns of equal length into one batch. `what` names the JSON field in
/// errors (`entities`, `df`).
pub(crate) fn columns_to_batch(
    columns: &Map<String, Value>,
    types: &HashMap<String, DataType>,
    what: &str,
) -> Result<RecordBatch, ApiError> {
    if columns.is_empty() {
        return Err(ApiError::bad_request(format!("{what} is empty; give each column as a list of values")));
    }
    let mut rows: Option<(&str, usize)> = None;
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays = Vec::with_capacity(columns.len());
    for (name, values) in columns {
        let Value::Array(values) = values else {
            return Err(ApiError::bad_request(format!(
                "{what}.{name} is {}, not a list of values (one per row)",
                kind(values)
            )));
        };
        match rows {
            None => rows = Some((name, values.len())),
            Some((first, n)) if n != values.len() => {
                return Err(ApiError::bad_request(format!(
                    "{what}: \"{first}\" has {n} values but \"{name}\" has {}; every column needs one value per row",
                    values.len()
                )));
            }
            Some(_) => {}
        }
        let dtype = match types.get(name).and_then(ValueType::from_arrow) {
            Some(t) => t,
            None => infer(values).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{what}.{name}: cannot tell the type of these values (mixed kinds or nested objects); \
                     give numbers, strings, booleans or lists of one kind"
                ))
            })?,
        };
        let at = |i: usize| format!("{what}.{name}[{i}]");
        let array = build(&dtype, values, &at, name)?;
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    let n = rows.map_or(0, |(_, n)| n);
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The type of a column the registry does not declare (request data,
/// unknown columns the store then names): the kind of its first non-null value.
fn infer(values: &[Value]) -> Option<ValueType> {
    let first = values.iter().find(|v| !v.is_null())?;
    Some(match first {
        Value::Bool(_) => ValueType::Bool,
        Value::Number(_) if values.iter().all(|v| v.is_null() || v.is_i64()) => ValueType::Int64,
        Value::Number(_) => ValueType::Float64,
        Value::String(_) => ValueType::String,
        Value::Array(items) => ValueType::List(Box::new(infer(items).unwrap_or(ValueType::String))),
        _ => return None,
    })
}

fn wrong(at: &str, v: &Value, name: &str, want: &ValueType) -> ApiError {
    ApiError::bad_request(format!("{at} is {} ({v}), but \"{name}\" is {want}", kind(v)))
}

fn build(dtype: &ValueType, values: &[Value], at: &dyn Fn(usize) -> String, name: &str) -> Result<ArrayRef, ApiError> {
    macro_rules! scalar {
        ($builder:expr, $conv:expr) => {{
            let mut b = $builder;
            for (i, v) in values.iter().enumerate() {
                if v.is_null() {
                    b.append_null();
                } else {
                    let conv: &dyn Fn(&Value) -> Option<_> = &$conv;
                    b.append_value(conv(v).ok_or_else(|| wrong(&at(i), v, name, dtype))?);
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match dtype {
        ValueType::Bool => scalar!(BooleanBuilder::new(), |v| v.as_bool()),
        ValueType::Int32 => scalar!(Int32Builder::new(), |v| v.as_i64().and_then(|n| i32::try_from(n).ok())),
        ValueType::Int64 => scalar!(Int64Builder::new(), |v| v.as_i64()),
        ValueType::Float32 => scalar!(Float32Builder::new(), |v| float(v).map(|f| f as f32)),
        ValueType::Float64 => scalar!(Float64Builder::new(), float),
        ValueType::String => scalar!(StringBuilder::new(), |v| v.as_str().map(str::to_owned)),
        ValueType::Bytes => scalar!(BinaryBuilder::new(), |v| v.as_str().map(|s| s.as_bytes().to_vec())),
        ValueType::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone(UTC);
            for (i, v) in values.iter().enumerate() {
                if v.is_null() {
                    b.append_null();
                    continue;
                }
                let t = timestamp(v)
                    .map_err(|why| ApiError::bad_request(format!("{} ({v}) is not a timestamp: {why}", at(i))))?;
                b.append_value(t);
            }
            Arc::new(b.finish())
        }
        ValueType::List(inner) => list(inner, values, at, name)?,
        other => return Err(ApiError::bad_request(format!("\"{name}\": {other} values cannot be sent as JSON"))),
    })
}

fn list(inner: &ValueType, values: &[Value], at: &dyn Fn(usize) -> String, name: &str) -> Result<ArrayRef, ApiError> {
    macro_rules! lists {
        ($item:expr, $conv:expr) => {{
            let mut b = ListBuilder::new($item);
            for (i, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Array(items) => {
                        for (j, item) in items.iter().enumerate() {
                            if item.is_null() {
                                b.values().append_null();
                            } else {
                                let conv: &dyn Fn(&Value) -> Option<_> = &$conv;
                                let x = conv(item).ok_or_else(|| {
                                    wrong(
                                        &format!("{}[{j}]", at(i)),
                                        item,
                                        name,
                                        &ValueType::List(Box::new(inner.clone())),
                                    )
                                })?;
                                b.values().append_value(x);
                            }
                        }
                        b.append(true);
                    }
                    other => return Err(wrong(&at(i), other, name, &ValueType::List(Box::new(inner.clone())))),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match inner {
        ValueType::Bool => lists!(BooleanBuilder::new(), |v| v.as_bool()),
        ValueType::Int32 => lists!(Int32Builder::new(), |v| v.as_i64().and_then(|n| i32::try_from(n).ok())),
        ValueType::Int64 => lists!(Int64Builder::new(), |v| v.as_i64()),
        ValueType::Float32 => lists!(Float32Builder::new(), |v| float(v).map(|f| f as f32)),
        ValueType::Float64 => lists!(Float64Builder::new(), float),
        ValueType::String => lists!(StringBuilder::new(), |v| v.as_str().map(str::to_owned)),
        ValueType::Bytes => lists!(BinaryBuilder::new(), |v| v.as_str().map(|s| s.as_bytes().to_vec())),
        ValueType::Timestamp => lists!(TimestampMicrosecondBuilder::new().with_timezone(UTC), |v| timestamp(v).ok()),
        _ => {
            return Err(ApiError::bad_request(format!("\"{name}\": lists of {inner} cannot be sent as JSON")));
        }
    })
}

/// A JSON number, or the strings this server writes for non-finite floats.
fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Microseconds since the epoch from ISO 8601 text (an offset, `Z`, or none
/// meaning UTC; a date alone is midnight UTC) or a number of seconds.
fn timestamp(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => {
            let secs = n.as_f64().ok_or("not a number")?;
            let micros = secs * 1e6;
            if !micros.is_finite() || micros.abs() > 9.2e18 {
                return Err("out of range".into());
            }
            Ok(micros.round() as i64)
        }
        Value::String(s) => parse_time(s.trim()).ok_or_else(|| {
            "give ISO 8601 text (2026-12-04T10:00:00Z, with an offset, or none meaning UTC) or seconds since the epoch"
                .to_owned()
        }),
        _ => Err("give ISO 8601 text or seconds since the epoch".into()),
    }
}

pub(crate) fn parse_time(s: &str) -> Option<i64> {
    feature_store_core::ingest::decode::parse_instant(s)
}

/// The timestamp of a materialize request (`start_ts`, `end_ts`).
pub(crate) fn request_time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_time(text.trim()).and_then(DateTime::from_timestamp_micros).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field} \"{text}\" is not a timestamp; give ISO 8601 text such as 2026-12-04T10:00:00Z (no offset means UTC)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(json: &str, types: &[(&str, DataType)]) -> Result<RecordBatch, String> {
        let v: Value = serde_json::from_str(json).unwrap();
        let types = types.iter().map(|(n, t)| ((*n).to_owned(), t.clone())).collect();
        columns_to_batch(v.as_object().unwrap(), &types, "entities").map_err(|e| e.message)
    }

    #[test]
    fn declared_types_win_and_refusals_name_the_value() {
        let b = batch(r#"{"driver_id": [1001, null], "x": [1.5, "NaN"]}"#, &[("driver_id", DataType::Int64)]).unwrap();
        assert_eq!(b.schema().field(0).data_type(), &DataType::Int64);
        assert_eq!(b.schema().field(1).data_type(), &DataType::Float64);
        let e = batch(r#"{"driver_id": [1001, "1002"]}"#, &[("driver_id", DataType::Int64)]).unwrap_err();
        assert_eq!(e, r#"entities.driver_id[1] is a string ("1002"), but "driver_id" is int64"#);
        let e = batch(r#"{"a": [1], "b": [1, 2]}"#, &[]).unwrap_err();
        assert!(e.contains("\"a\" has 1 values but \"b\" has 2"), "{e}");
        let e = batch(r#"{"a": 1}"#, &[]).unwrap_err();
        assert!(e.contains("entities.a is an integer, not a list"), "{e}");
    }

    #[test]
    fn timestamps_take_offsets_naive_utc_and_epoch_seconds() {
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Some(1_767_225_600_000_000));
        assert_eq!(parse_time("2026-01-01T01:00:00+01:00"), Some(1_767_225_600_000_000));
        assert_eq!(parse_time("2026-01-01 00:00:00"), Some(1_767_225_600_000_000));
        assert_eq!(parse_time("2026-01-01"), Some(1_767_225_600_000_000));
        assert_eq!(timestamp(&serde_json::json!(1_767_225_600)), Ok(1_767_225_600_000_000));
        assert!(parse_time("yesterday").is_none());
    }
}
