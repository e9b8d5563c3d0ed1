//! Data crossing the boundary: Arrow through the C data interface both ways
//! (no copies of column buffers), and Python values only where a caller
//! passes plain rows (online entity rows) or asks for them (`to_dict`).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::ffi_stream::ArrowArrayStreamReader;
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, RecordBatchReader};
use arrow_pyarrow::FromPyArrow;
use arrow_schema::{ArrowError, Field, Schema, SchemaRef};
use feature_store::online::FeatureValue;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::error::py_error;

/// All batches of an Arrow object: anything with `__arrow_c_stream__`
/// (pyarrow tables and readers, polars frames, ...) or `__arrow_c_array__`.
/// Buffers are shared with the producer, not copied.
pub(crate) fn read_arrow(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    if obj.hasattr("__arrow_c_stream__")? || is_pyarrow_reader(obj) {
        let reader = ArrowArrayStreamReader::from_pyarrow_bound(obj)?;
        let schema = reader.schema();
        // A reader backed by Python code takes the GIL itself for each batch.
        let batches = py
            .detach(|| reader.collect::<Result<Vec<_>, ArrowError>>())
            .map_err(|e| py_error("DataError", format!("{what}: reading the Arrow stream failed: {e}")))?;
        return Ok((schema, batches));
    }
    if obj.hasattr("__arrow_c_array__")? {
        let batch = RecordBatch::from_pyarrow_bound(obj)?;
        return Ok((batch.schema(), vec![batch]));
    }
    Err(PyTypeError::new_err(format!(
        "{what}: expected Arrow data (a pyarrow Table, RecordBatch or RecordBatchReader, a polars DataFrame, \
         or any object with __arrow_c_stream__), got {}",
        type_name(obj)
    )))
}

fn is_pyarrow_reader(obj: &Bound<'_, PyAny>) -> bool {
    obj.get_type().name().map(|n| n == "RecordBatchReader").unwrap_or(false)
}

/// One batch holding all rows of an Arrow object.
pub(crate) fn read_arrow_batch(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<RecordBatch> {
    let (schema, batches) = read_arrow(py, obj, what)?;
    if batches.len() == 1 {
        return Ok(batches.into_iter().next().expect("one batch"));
    }
    arrow_select_concat(&schema, &batches).map_err(|e| py_error("DataError", format!("{what}: {e}")))
}

fn arrow_select_concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    arrow_select::concat::concat_batches(schema, batches)
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    let t = obj.get_type();
    let module = t.module().map(|m| m.to_string()).unwrap_or_default();
    let name = t.name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    if module.is_empty() || module == "builtins" { name } else { format!("{module}.{name}") }
}

/// Entity rows given as Python values: a dict of lists (`{"driver_id": [1, 2]}`),
/// a list of dicts (`[{"driver_id": 1}, ...]`), or Arrow data.
pub(crate) fn entity_rows(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<RecordBatch> {
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut names = Vec::with_capacity(dict.len());
        let mut columns = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let name: String = k.extract().map_err(|_| bad_rows("column names must be strings"))?;
            let values: Vec<Bound<'_, PyAny>> = if let Ok(list) = v.cast::<PyList>() {
                list.iter().collect()
            } else if v.is_instance_of::<PyString>() || v.is_instance_of::<PyBytes>() {
                return Err(bad_rows(&format!("column \"{name}\" must be a list of values, got a single value")));
            } else {
                v.try_iter()
                    .map_err(|_| {
                        bad_rows(&format!("column \"{name}\" must be a list of values, got {}", type_name(&v)))
                    })?
                    .collect::<PyResult<_>>()?
            };
            columns.push(python_column(&name, &values)?);
            names.push(name);
        }
        return batch(names, columns, None);
    }
    if let Ok(list) = obj.cast::<PyList>() {
        if list.is_empty() {
            return Err(bad_rows("no entity rows were given"));
        }
        let first = list.get_item(0)?;
        let first =
            first.cast::<PyDict>().map_err(|_| bad_rows("entity_rows must be dicts such as {\"driver_id\": 1001}"))?;
        // The first row's own key objects are the lookup keys: a str caches
        // its hash, where a name converted per lookup would be hashed anew.
        let key_objects: Vec<Bound<'_, PyAny>> = first.keys().iter().collect();
        let names: Vec<String> = key_objects.iter().map(|k| k.extract()).collect::<PyResult<_>>()?;
        let rows = list.len();
        let mut cells: Vec<Vec<Bound<'_, PyAny>>> = vec![Vec::with_capacity(list.len()); names.len()];
        for (i, row) in list.iter().enumerate() {
            let row = row.cast::<PyDict>().map_err(|_| bad_rows(&format!("entity row {i} is not a dict")))?;
            if row.len() != names.len() {
                return Err(bad_rows(&format!(
                    "entity row {i} has keys {:?} but row 0 has {:?}; every row needs the same keys",
                    row.keys().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                    names
                )));
            }
            for (c, (name, key)) in names.iter().zip(&key_objects).enumerate() {
                let v = row
                    .get_item(key)?
                    .ok_or_else(|| bad_rows(&format!("entity row {i} has no \"{name}\"; row 0 has {names:?}")))?;
                cells[c].push(v);
            }
        }
        let columns = names.iter().zip(&cells).map(|(n, v)| python_column(n, v)).collect::<PyResult<Vec<_>>>()?;
        return batch(names, columns, Some(rows));
    }
    read_arrow_batch(py, obj, "entity_rows")
}

fn bad_rows(message: &str) -> PyErr {
    py_error("InvalidArgumentError", format!("entity_rows: {message}"))
}

/// `rows` is known for a list of rows: views without entities take empty rows (`[{}]`).
fn batch(names: Vec<String>, columns: Vec<ArrayRef>, rows: Option<usize>) -> PyResult<RecordBatch> {
    if columns.is_empty() {
        let Some(rows) = rows else {
            return Err(bad_rows(
                "no entity key columns were given (for views without entities pass one empty dict per row: [{}])",
            ));
        };
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        return RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &options)
            .map_err(|e| bad_rows(&e.to_string()));
    }
    let fields: Vec<Field> =
        names.iter().zip(&columns).map(|(n, c)| Field::new(n, c.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| bad_rows(&format!("columns have different lengths ({e})")))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    Timestamp,
}

fn kind_of(v: &Bound<'_, PyAny>) -> PyResult<Option<Kind>> {
    Ok(Some(if v.is_instance_of::<PyBool>() {
        Kind::Bool
    } else if v.is_instance_of::<PyInt>() {
        Kind::Int
    } else if v.is_instance_of::<PyString>() {
        Kind::Str
    } else if v.is_instance_of::<PyBytes>() {
        Kind::Bytes
    } else if v.is_instance_of::<PyFloat>() {
        Kind::Float
    } else if v.extract::<i64>().is_ok() {
        // numpy integers and anything else with __index__.
        Kind::Int
    } else if is_datetime(v)? {
        // Request fields of type timestamp (datetime and pandas.Timestamp).
        Kind::Timestamp
    } else if type_name(v).starts_with("numpy.") && v.extract::<f64>().is_ok() {
        Kind::Float
    } else {
        return Ok(None);
    }))
}

fn is_datetime(v: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = v.py();
    v.is_instance(&py.import(pyo3::intern!(py, "datetime"))?.getattr(pyo3::intern!(py, "datetime"))?)
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Bool => "bool",
        Kind::Int => "int",
        Kind::Float => "float",
        Kind::Str => "str",
        Kind::Bytes => "bytes",
        Kind::Timestamp => "datetime",
    }
}

/// Integers up to 2^53 are exact as float64.
const EXACT_IN_F64: i64 = 1 << 53;

/// One Arrow column from Python values of one kind; `None` is null. Ints
/// among floats (request values such as `120` and `99.5`) are floats when exact.
fn python_column(name: &str, values: &[Bound<'_, PyAny>]) -> PyResult<ArrayRef> {
    let mut kind = None;
    for (i, v) in values.iter().enumerate() {
        if v.is_none() {
            continue;
        }
        let k = kind_of(v)?.ok_or_else(|| {
            py_error(
                "DataError",
                format!(
                    "entity_rows: column \"{name}\" row {i}: {} is not a supported value (int, float, str, bytes, \
                     bool, datetime; pass other types as an Arrow table)",
                    type_name(v)
                ),
            )
        })?;
        match kind {
            None => kind = Some(k),
            Some(Kind::Int | Kind::Float) if matches!(k, Kind::Int | Kind::Float) => {
                if k == Kind::Float {
                    kind = Some(Kind::Float);
                }
            }
            Some(prev) if prev != k => {
                return Err(py_error(
                    "DataError",
                    format!(
                        "entity_rows: column \"{name}\" mixes {} and {} values (row {i} is {})",
                        kind_name(prev),
                        kind_name(k),
                        kind_name(k)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let Some(kind) = kind else {
        return Err(py_error(
            "DataError",
            format!(
                "entity_rows: column \"{name}\" holds only None; its type cannot be told, pass an Arrow column instead"
            ),
        ));
    };
    let n = values.len();
    Ok(match kind {
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(n);
            for (i, v) in values.iter().enumerate() {
                if v.is_none() {
                    b.append_null();
                } else {
                    b.append_value(v.extract::<i64>().map_err(|_| {
                        py_error(
                            "DataError",
                            format!("entity_rows: column \"{name}\" row {i}: {v} does not fit in int64"),
                        )
                    })?);
                }
            }
            Arc::new(b.finish())
        }
        Kind::Str => {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            for v in values {
                if v.is_none() { b.append_null() } else { b.append_value(v.extract::<String>()?) }
            }
            Arc::new(b.finish())
        }
        Kind::Bytes => {
            let mut b = BinaryBuilder::with_capacity(n, n * 8);
            for v in values {
                if v.is_none() { b.append_null() } else { b.append_value(v.cast::<PyBytes>()?.as_bytes()) }
            }
            Arc::new(b.finish())
        }
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(n);
            for v in values {
                if v.is_none() { b.append_null() } else { b.append_value(v.extract::<bool>()?) }
            }
            Arc::new(b.finish())
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(n);
            for (i, v) in values.iter().enumerate() {
                if v.is_none() {
                    b.append_null();
                } else if !v.is_instance_of::<PyFloat>()
                    && let Ok(int) = v.extract::<i64>()
                {
                    if int.unsigned_abs() > EXACT_IN_F64.unsigned_abs() {
                        return Err(py_error(
                            "DataError",
                            format!(
                                "entity_rows: column \"{name}\" row {i}: the int {int} among floats is not exact as \
                                 a float; pass it as a float or the column as an Arrow table"
                            ),
                        ));
                    }
                    b.append_value(int as f64);
                } else {
                    b.append_value(v.extract::<f64>().map_err(|_| {
                        py_error("DataError", format!("entity_rows: column \"{name}\" row {i}: {v} is not a float"))
                    })?);
                }
            }
            Arc::new(b.finish())
        }
        Kind::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            for (i, v) in values.iter().enumerate() {
                if v.is_none() {
                    b.append_null();
                } else {
                    b.append_value(datetime_micros(v).map_err(|e| {
                        py_error("DataError", format!("entity_rows: column \"{name}\" row {i}: {v}: {e}"))
                    })?);
                }
            }
            Arc::new(b.finish())
        }
    })
}

/// µs since the epoch of a datetime; a naive one is UTC, as everywhere in this library.
fn datetime_micros(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    if v.getattr(pyo3::intern!(v.py(), "tzinfo"))?.is_none() {
        Ok(v.extract::<chrono::NaiveDateTime>()?.and_utc().timestamp_micros())
    } else {
        Ok(v.extract::<chrono::DateTime<chrono::FixedOffset>>()?.timestamp_micros())
    }
}

/// A Python list of a column's values. Plain types go straight from the
/// typed buffer to Python objects (the hot path of `to_dict`); float32
/// widens exactly, as pyarrow's `to_pylist` does.
pub(crate) fn column_to_list<'py>(py: Python<'py>, column: &dyn arrow_array::Array) -> PyResult<Bound<'py, PyList>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
    use arrow_schema::DataType;
    match column.data_type() {
        DataType::Float32 => PyList::new(py, column.as_primitive::<Float32Type>().iter().map(|v| v.map(f64::from))),
        DataType::Float64 => PyList::new(py, column.as_primitive::<Float64Type>().iter()),
        DataType::Int64 => PyList::new(py, column.as_primitive::<Int64Type>().iter()),
        DataType::Int32 => PyList::new(py, column.as_primitive::<Int32Type>().iter()),
        DataType::Boolean => PyList::new(py, column.as_boolean().iter()),
        DataType::Utf8 => PyList::new(py, column.as_string::<i32>().iter()),
        _ => {
            let items = (0..column.len())
                .map(|r| feature_value(py, FeatureValue::from_array(column, r)))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)
        }
    }
}

/// A Python object for one value of a response row.
pub(crate) fn feature_value(py: Python<'_>, value: FeatureValue) -> PyResult<Bound<'_, PyAny>> {
    Ok(match value {
        FeatureValue::Null => py.None().into_bound(py),
        FeatureValue::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        FeatureValue::Int(i) => i.into_pyobject(py)?.into_any(),
        FeatureValue::Float(f) => f.into_pyobject(py)?.into_any(),
        FeatureValue::String(s) => PyString::new(py, &s).into_any(),
        FeatureValue::Bytes(b) => PyBytes::new(py, &b).into_any(),
        FeatureValue::Timestamp(t) => t.into_pyobject(py)?.into_any(),
        FeatureValue::List(items) => {
            let items = items.into_iter().map(|v| feature_value(py, v)).collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
        _ => py.None().into_bound(py),
    })
}
