//! `to_df()` without pyarrow's float conversion: float columns are copied
//! straight from the collected batches into numpy arrays, NaN where null,
//! on all cores and with the GIL released. pyarrow converts the other
//! columns (timestamps, strings, lists, integers with nulls...), so their
//! pandas types are exactly what `Table.to_pandas()` gives.
//!
//! Float columns are the bulk of a training set. pyarrow writes each value
//! through a null check into a new block; here a batch's values are copied
//! as one slice and only the null slots are then overwritten.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrowPrimitiveType, RecordBatch};
use arrow_schema::DataType;
use pyo3::prelude::*;

/// One float column and where its numpy values start.
pub(crate) struct Target {
    column: usize,
    /// Address of `rows` values of the column's type, owned by a numpy array
    /// that nothing but this call has seen yet.
    address: usize,
    wide: bool,
}

/// The numpy dtype a column becomes here, or `None` for pyarrow's conversion.
fn numpy_dtype(t: &DataType) -> Option<&'static str> {
    match t {
        DataType::Float32 => Some("float32"),
        DataType::Float64 => Some("float64"),
        _ => None,
    }
}

/// Writable numpy arrays for the float columns of `batches` (one 2-D
/// allocation per dtype, so large ones get huge pages from numpy), filled;
/// `None` for the other columns.
pub(crate) fn float_columns<'py>(
    py: Python<'py>,
    schema: &arrow_schema::Schema,
    batches: &[RecordBatch],
) -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let numpy = py.import("numpy")?;
    let mut columns: Vec<Option<Bound<'py, PyAny>>> = vec![None; schema.fields().len()];
    let mut targets = Vec::new();
    for dtype in ["float32", "float64"] {
        let chosen: Vec<usize> =
            (0..schema.fields().len()).filter(|&i| numpy_dtype(schema.field(i).data_type()) == Some(dtype)).collect();
        if chosen.is_empty() {
            continue;
        }
        let block = numpy.call_method1("empty", ((chosen.len(), rows), dtype))?;
        for (j, &column) in chosen.iter().enumerate() {
            let row = block.get_item(j)?;
            let (address, readonly): (usize, bool) = row.getattr("__array_interface__")?.get_item("data")?.extract()?;
            if readonly || (address == 0 && rows > 0) {
                return Err(pyo3::exceptions::PyRuntimeError::new_err("numpy.empty returned an unusable array"));
            }
            targets.push(Target { column, address, wide: dtype == "float64" });
            columns[column] = Some(row);
        }
    }
    py.detach(|| fill(batches, &targets, rows));
    Ok(columns)
}

/// Copies every target column, on up to as many threads as there are cores.
fn fill(batches: &[RecordBatch], targets: &[Target], rows: usize) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(targets.len());
    if threads <= 1 {
        targets.iter().for_each(|t| fill_one(batches, t, rows));
        return;
    }
    std::thread::scope(|s| {
        for k in 0..threads {
            s.spawn(move || targets.iter().skip(k).step_by(threads).for_each(|t| fill_one(batches, t, rows)));
        }
    });
}

fn fill_one(batches: &[RecordBatch], target: &Target, rows: usize) {
    if target.wide {
        copy_column::<Float64Type>(batches, target, rows, f64::NAN);
    } else {
        copy_column::<Float32Type>(batches, target, rows, f32::NAN);
    }
}

fn copy_column<T: ArrowPrimitiveType>(batches: &[RecordBatch], target: &Target, rows: usize, nan: T::Native) {
    // SAFETY: `address` starts `rows` aligned, writable values of this type
    // (a row of a fresh C-contiguous numpy array of the matching dtype). The
    // array is referenced only by the caller, which holds it until this
    // returns, and each target is written by one thread.
    #[allow(unsafe_code)]
    let out = unsafe { std::slice::from_raw_parts_mut(target.address as *mut T::Native, rows) };
    let mut at = 0;
    for batch in batches {
        let column = batch.column(target.column).as_primitive::<T>();
        let n = column.len();
        let dst = &mut out[at..at + n];
        dst.copy_from_slice(column.values());
        if let Some(nulls) = column.nulls().filter(|n| n.null_count() > 0) {
            for (word, chunk) in nulls.inner().bit_chunks().iter_padded().enumerate() {
                let mut missing = !chunk;
                while missing != 0 {
                    let i = word * 64 + missing.trailing_zeros() as usize;
                    if i >= n {
                        break;
                    }
                    dst[i] = nan;
                    missing &= missing - 1;
                }
            }
        }
        at += n;
    }
}
