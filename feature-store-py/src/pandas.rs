//! `to_df()` without pyarrow's float conversion. pyarrow converts the other
//! columns (timestamps, strings, lists, integers with nulls...), so their
//! pandas types are exactly what `Table.to_pandas()` gives.
//!
//! Float columns are the bulk of a training set, and pyarrow copies each
//! value through a null check into a new block. Here:
//! - a column that is one buffer nobody else holds (a join output of one
//!   batch: entity tables up to the retrieval's batch size, 8Ki-512Ki rows)
//!   becomes the numpy array itself: NaN is written
//!   into its null slots in place and numpy sees the memory through the
//!   array interface protocol, writable, with no copy;
//! - any other column (several batches, shared or sliced buffers) is copied
//!   as whole slices into a new numpy array, with the GIL released, and only
//!   its null slots are then overwritten.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray, RecordBatch};
use arrow_buffer::{MutableBuffer, NullBuffer};
use arrow_schema::DataType;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Whether `to_df()` converts a column of this type itself.
pub(crate) fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float32 | DataType::Float64)
}

/// Columns pyarrow would turn into a pandas extension dtype (nullable
/// `Float64`, say) by the schema's `pandas` metadata, which an entity frame
/// passes on to the result: these are left to pyarrow, so that `to_df()`
/// keeps their dtype (and their nulls) as `to_arrow().to_pandas()` does.
pub(crate) fn extension_dtype_columns(schema: &arrow_schema::Schema) -> std::collections::HashSet<String> {
    let Some(text) = schema.metadata().get("pandas") else { return Default::default() };
    let Ok(meta) = serde_json::from_str::<serde_json::Value>(text) else { return Default::default() };
    meta["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["numpy_type"].as_str().is_some_and(|t| !matches!(t, "float64" | "float32" | "float16")))
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Float values owned by this object and shown to numpy without a copy
/// (`numpy.asarray` keeps the object alive as the array's base). Writable:
/// nothing else refers to the memory.
#[pyclass(module = "feature_store._internal", name = "FloatValues", frozen)]
pub(crate) struct FloatValues {
    buffer: MutableBuffer,
    len: usize,
    typestr: &'static str,
}

#[pymethods]
impl FloatValues {
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", (self.len,))?;
        d.set_item("typestr", self.typestr)?;
        d.set_item("data", (self.buffer.as_ptr() as usize, false))?;
        Ok(d)
    }
}

/// A writable numpy array for each float column of `batches` (`None` for
/// the others), NaN where null.
pub(crate) fn float_columns<'py>(
    py: Python<'py>,
    schema: &arrow_schema::Schema,
    mut batches: Vec<RecordBatch>,
    skip: &std::collections::HashSet<String>,
) -> PyResult<Vec<Option<Bound<'py, PyAny>>>> {
    let numpy = py.import("numpy")?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut out: Vec<Option<Bound<'py, PyAny>>> = vec![None; schema.fields().len()];
    let mut copies = Vec::new();
    if batches.len() == 1 {
        // The batch's own references go first, so a column's buffer is unique if nothing else holds it.
        let mut columns: Vec<Option<ArrayRef>> =
            batches.pop().expect("one batch").columns().iter().cloned().map(Some).collect();
        for (i, slot) in columns.iter_mut().enumerate() {
            let Some(column) =
                slot.take().filter(|c| is_float(c.data_type()) && !skip.contains(schema.field(i).name()))
            else {
                continue;
            };
            let owned = py.detach(|| match column.data_type() {
                DataType::Float32 => owned::<Float32Type>(column, f32::NAN, "<f4"),
                _ => owned::<Float64Type>(column, f64::NAN, "<f8"),
            });
            match owned {
                Ok(values) => out[i] = Some(numpy.call_method1("asarray", (Bound::new(py, values)?,))?),
                Err(column) => copies.push((i, vec![column])),
            }
        }
    } else {
        for (i, field) in schema.fields().iter().enumerate() {
            if is_float(field.data_type()) && !skip.contains(field.name()) {
                copies.push((i, batches.iter().map(|b| std::sync::Arc::clone(b.column(i))).collect()));
            }
        }
    }
    drop(batches);
    let mut targets = Vec::with_capacity(copies.len());
    for (i, chunks) in copies {
        let wide = matches!(schema.field(i).data_type(), DataType::Float64);
        let array = numpy.call_method1("empty", (rows, if wide { "float64" } else { "float32" }))?;
        let (address, readonly): (usize, bool) = array.getattr("__array_interface__")?.get_item("data")?.extract()?;
        if readonly || (address == 0 && rows > 0) {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("numpy.empty returned an unusable array"));
        }
        targets.push(Target { chunks, address, rows, wide });
        out[i] = Some(array);
    }
    py.detach(|| fill(&targets));
    Ok(out)
}

/// The column's values as a uniquely owned buffer with NaN in null slots,
/// or the column back when its buffer is shared or sliced.
fn owned<T: ArrowPrimitiveType>(
    column: ArrayRef,
    nan: T::Native,
    typestr: &'static str,
) -> Result<FloatValues, ArrayRef> {
    let array: PrimitiveArray<T> = column.as_primitive::<T>().clone();
    drop(column);
    let len = array.len();
    let (data_type, values, nulls) = array.into_parts();
    match values.into_inner().into_mutable() {
        Ok(mut buffer) => {
            let slots = &mut buffer.typed_data_mut::<T::Native>()[..len];
            if let Some(nulls) = &nulls {
                write_nan(slots, nulls, nan);
            }
            Ok(FloatValues { buffer, len, typestr })
        }
        Err(shared) => {
            let values = arrow_buffer::ScalarBuffer::<T::Native>::new(shared, 0, len);
            Err(std::sync::Arc::new(PrimitiveArray::<T>::new(values, nulls).with_data_type(data_type)))
        }
    }
}

/// One float column to copy and where its numpy values start.
struct Target {
    chunks: Vec<ArrayRef>,
    /// Address of `rows` values of the column's type, owned by a numpy array
    /// that nothing but this call has seen yet.
    address: usize,
    rows: usize,
    wide: bool,
}

/// Copies every target column, on up to as many threads as there are cores.
fn fill(targets: &[Target]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(targets.len());
    if threads <= 1 {
        targets.iter().for_each(fill_one);
        return;
    }
    std::thread::scope(|s| {
        for k in 0..threads {
            s.spawn(move || targets.iter().skip(k).step_by(threads).for_each(fill_one));
        }
    });
}

fn fill_one(target: &Target) {
    if target.wide {
        copy_column::<Float64Type>(target, f64::NAN);
    } else {
        copy_column::<Float32Type>(target, f32::NAN);
    }
}

fn copy_column<T: ArrowPrimitiveType>(target: &Target, nan: T::Native) {
    // SAFETY: `address` starts `rows` aligned, writable values of this type
    // (a fresh C-contiguous numpy array of the matching dtype). The array is
    // referenced only by the caller, which holds it until this returns, and
    // each target is written by one thread.
    #[allow(unsafe_code)]
    let out = unsafe { std::slice::from_raw_parts_mut(target.address as *mut T::Native, target.rows) };
    let mut at = 0;
    for chunk in &target.chunks {
        let column = chunk.as_primitive::<T>();
        let dst = &mut out[at..at + column.len()];
        dst.copy_from_slice(column.values());
        if let Some(nulls) = column.nulls() {
            write_nan(dst, nulls, nan);
        }
        at += column.len();
    }
}

/// Writes `nan` into the slots `nulls` marks null.
fn write_nan<V: Copy>(slots: &mut [V], nulls: &NullBuffer, nan: V) {
    if nulls.null_count() == 0 {
        return;
    }
    for (word, chunk) in nulls.inner().bit_chunks().iter_padded().enumerate() {
        let mut missing = !chunk;
        while missing != 0 {
            let i = word * 64 + missing.trailing_zeros() as usize;
            if i >= slots.len() {
                break;
            }
            slots[i] = nan;
            missing &= missing - 1;
        }
    }
}
