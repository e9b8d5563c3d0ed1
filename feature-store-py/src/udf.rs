//! Python functions as DataFusion scalar functions, for on-demand features.
//!
//! `@feature_store.udf` (and each feature of an `@on_demand_feature_view`)
//! registers a function here, process-wide ([`register_udf`]); every store
//! registers what it has not seen yet with its expression engine before each
//! call ([`sync`]), so stores opened before or after the decoration, and the
//! store a forked child reopens, all have every function.
//!
//! DataFusion calls a function from whichever thread evaluates the
//! expression, while the thread that called the store has released the GIL
//! (`py.detach` around every store call), so a call takes the GIL for itself
//! only. Arrays cross both ways through the Arrow C data interface, without
//! copying their buffers.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use feature_store::expressions::DataFusionEngine;
use feature_store::expressions::datafusion::arrow::array::{Array, ArrayData, ArrayRef, make_array};
use feature_store::expressions::datafusion::arrow::datatypes::DataType;
use feature_store::expressions::datafusion::common::{DataFusionError, Result as DfResult};
use feature_store::expressions::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use feature_store::{FeatureStore, ValueType};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert::type_name;
use crate::error::{py_error, to_py};

/// A Python callable over pyarrow arrays, as a DataFusion scalar function.
#[derive(Debug)]
struct PythonUdf {
    name: String,
    /// How errors name the function (`function "ratio" (udfs.py)`).
    label: String,
    function: Py<PyAny>,
    signature: Signature,
    returns: DataType,
    source_hash: String,
}

// DataFusion compares functions to deduplicate expressions: two are the
// same function when they are the same callable with the same signature.
impl PartialEq for PythonUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.signature == other.signature
            && self.returns == other.returns
            && self.source_hash == other.source_hash
            && self.function.is(&other.function)
    }
}

impl Eq for PythonUdf {}

impl Hash for PythonUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.signature.hash(state);
        self.source_hash.hash(state);
    }
}

impl ScalarUDFImpl for PythonUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(rows)).collect::<DfResult<Vec<_>>>()?;
        let out = Python::attach(|py| self.call(py, &arrays, rows)).map_err(DataFusionError::Execution)?;
        Ok(ColumnarValue::Array(out))
    }
}

impl PythonUdf {
    fn call(&self, py: Python<'_>, arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
        let inputs = arrays
            .iter()
            .map(|a| a.to_data().to_pyarrow(py))
            .collect::<PyResult<Vec<_>>>()
            .and_then(|a| PyTuple::new(py, a))
            .map_err(|e| format!("Python {}: its arguments could not be passed as pyarrow arrays: {e}", self.label))?;
        let result = self.function.bind(py).call1(inputs).map_err(|e| self.raised(py, e))?;
        let data = self.to_array(py, &result).map_err(|e| {
            format!(
                "Python {} returned {}, which is not an array of {} (return a pyarrow Array or anything \
                 pyarrow.array() converts): {e}",
                self.label,
                type_name(&result),
                describe(&self.returns)
            )
        })?;
        if data.len() != rows {
            return Err(format!(
                "Python {} returned {} values for {rows} rows; it must return one value per row",
                self.label,
                data.len()
            ));
        }
        Ok(make_array(data))
    }

    /// The result as an array of the return type; pyarrow converts other
    /// values (lists, numpy arrays, pandas Series with NaN as null) and casts
    /// arrays of another type when no value is lost.
    fn to_array(&self, py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<ArrayData> {
        let pa = py.import("pyarrow")?;
        let want = self.returns.to_pyarrow(py)?;
        let mut array = result.clone();
        if array.is_instance(&pa.getattr("ChunkedArray")?)? {
            array = array.call_method0("combine_chunks")?;
        }
        if !array.is_instance(&pa.getattr("Array")?)? {
            array = if array.hasattr("__arrow_c_array__")? {
                pa.call_method1("array", (array,))?
            } else {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("type", &want)?;
                pa.call_method("array", (array,), Some(&kwargs))?
            };
        }
        if !array.getattr("type")?.eq(&want)? {
            array = array.call_method1("cast", (&want,))?;
        }
        ArrayData::from_pyarrow_bound(&array)
    }

    /// The message for an exception the function raised; the exception is
    /// kept so that the error Python finally sees has it as its cause.
    fn raised(&self, py: Python<'_>, err: PyErr) -> String {
        let mut at = String::new();
        if let Some(mut tb) = err.traceback(py).map(Bound::into_any) {
            // The innermost frame: where the function failed, not where it was called.
            while let Ok(next) = tb.getattr("tb_next") {
                if next.is_none() {
                    break;
                }
                tb = next;
            }
            let file = tb.getattr("tb_frame").and_then(|f| f.getattr("f_code")).and_then(|c| c.getattr("co_filename"));
            if let (Ok(file), Ok(line)) = (file, tb.getattr("tb_lineno")) {
                at = format!(" (at {file}:{line})");
            }
        }
        let message = format!("Python {} raised {err}{at}", self.label);
        remember(message.clone(), err.into_value(py).into_any());
        message
    }
}

fn describe(t: &DataType) -> String {
    match ValueType::from_arrow(t) {
        Some(v) if v.to_arrow() == *t => v.to_string(),
        _ => t.to_string(),
    }
}

/// Exceptions Python functions raised, by the message that reports them.
/// Few: each is taken when its error reaches Python, and only the newest are kept.
static RAISED: Mutex<VecDeque<(String, Py<PyAny>)>> = Mutex::new(VecDeque::new());

fn remember(message: String, exception: Py<PyAny>) {
    let mut raised = RAISED.lock().unwrap_or_else(PoisonError::into_inner);
    if raised.len() >= 16 {
        raised.pop_front();
    }
    raised.push_back((message, exception));
}

/// The exception a Python function raised, if `message` reports one.
pub(crate) fn take_cause<'py>(py: Python<'py>, message: &str) -> Option<Bound<'py, PyAny>> {
    let mut raised = RAISED.lock().unwrap_or_else(PoisonError::into_inner);
    let i = raised.iter().rposition(|(m, _)| message.contains(m.as_str()))?;
    raised.remove(i).map(|(_, e)| e.into_bound(py))
}

struct Registered {
    udf: ScalarUDF,
    source_hash: String,
    /// [`GENERATION`] when it was registered.
    generation: u64,
}

/// Functions registered in this process; a name registered again replaces its function.
static REGISTERED: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
/// Counts registrations (changed under the [`REGISTERED`] lock).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Registers a Python function process-wide. `input_types` and
/// `return_type` are value type names (`float64`, `list<int64>`);
/// without `input_types` the function takes any arguments, as the
/// expression passes them. Names a store would refuse (invalid, a built-in
/// function's) are refused here, at once.
#[pyfunction]
#[pyo3(signature = (name, function, input_types, return_type, source_hash, label))]
pub(crate) fn register_udf(
    name: String,
    function: Py<PyAny>,
    input_types: Option<Vec<String>>,
    return_type: String,
    source_hash: String,
    label: String,
) -> PyResult<()> {
    let parse = |t: &str| {
        t.parse::<ValueType>()
            .map(|v| v.to_arrow())
            .map_err(|e| py_error("InvalidArgumentError", format!("cannot register function \"{name}\": {e}")))
    };
    let returns = parse(&return_type)?;
    let signature = match input_types {
        Some(types) => {
            Signature::exact(types.iter().map(|t| parse(t)).collect::<PyResult<_>>()?, Volatility::Immutable)
        }
        None => Signature::variadic_any(Volatility::Immutable),
    };
    let udf = ScalarUDF::new_from_impl(PythonUdf {
        name: name.clone(),
        label,
        function,
        signature,
        returns,
        source_hash: source_hash.clone(),
    });
    DataFusionEngine::new().register_udf_with_source(udf.clone(), source_hash.clone()).map_err(|e| to_py(e.into()))?;
    let mut all = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    all.retain(|r| r.udf.name() != name);
    all.push(Registered { udf, source_hash, generation });
    Ok(())
}

/// Registers with `store`'s engine every function registered since
/// generation `seen` (0: all of them), and advances `seen`.
pub(crate) fn sync(store: &FeatureStore, seen: &mut u64) -> feature_store::Result<()> {
    if GENERATION.load(Ordering::Acquire) == *seen {
        return Ok(());
    }
    let all = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
    let engine =
        store.expression_engine().and_then(|e| e.as_any().downcast_ref::<DataFusionEngine>()).ok_or_else(|| {
            feature_store::Error::Unsupported(
                "this store has no DataFusion expression engine for Python functions".into(),
            )
        })?;
    for r in all.iter().filter(|r| r.generation > *seen) {
        engine.register_udf_with_source(r.udf.clone(), r.source_hash.clone())?;
    }
    *seen = GENERATION.load(Ordering::Acquire);
    Ok(())
}
