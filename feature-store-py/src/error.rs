//! Rust errors as Python exceptions.
//!
//! The exception classes are defined in Python (`feature_store/errors.py`) so
//! that they can also derive from the built-in they stand for (`ValueError`,
//! `LookupError`, `ConnectionError`, ...); this module only picks the class
//! and fills in the attributes.

use feature_store::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// The Python exception for `err`; its message is the whole cause chain.
pub(crate) fn to_py(err: Error) -> PyErr {
    Python::attach(|py| build(py, &err).unwrap_or_else(|e| e))
}

/// A Python exception of class `class` (from `feature_store.errors`).
pub(crate) fn py_error(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let made = || -> PyResult<PyErr> {
            let cls = py.import("feature_store.errors")?.getattr(class)?;
            Ok(PyErr::from_value(cls.call1((message.clone(),))?))
        };
        made().unwrap_or_else(|_| PyRuntimeError::new_err(message.clone()))
    })
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let class = match err {
        Error::Invalid { .. } => "DefinitionError",
        Error::Config { .. } => "ConfigError",
        Error::NotFound { .. } => "NotFoundError",
        Error::InvalidArgument(_) => "InvalidArgumentError",
        Error::Data { .. } => "DataError",
        Error::Conflict { .. } => "ConflictError",
        Error::CorruptRegistry { .. } => "CorruptRegistryError",
        Error::StoreUnavailable { .. } => "StoreUnavailableError",
        Error::Unsupported(_) => "UnsupportedError",
        Error::Backend { .. } | Error::Io { .. } => "BackendError",
        _ => "FeatureStoreError",
    };
    let cls = py.import("feature_store.errors")?.getattr(class)?;
    let text = message(err);
    let exc = cls.call1((text.as_str(),))?;
    if let Some(cause) = crate::udf::take_cause(py, &text) {
        // What a Python function raised, with its traceback, stays visible.
        exc.setattr("__cause__", cause)?;
    }
    match err {
        Error::Invalid { problems } => {
            let items = problems
                .iter()
                .map(|p| PyTuple::new(py, [p.file.clone().unwrap_or_default(), p.object.clone(), p.message.clone()]))
                .collect::<PyResult<Vec<_>>>()?;
            exc.setattr("problems", PyList::new(py, items)?)?;
        }
        Error::Config { location, .. } => exc.setattr("location", location)?,
        Error::NotFound { kind, name, hint } => {
            exc.setattr("kind", *kind)?;
            exc.setattr("name", name)?;
            exc.setattr("hint", hint.as_deref())?;
        }
        Error::Data { context, .. } => exc.setattr("context", context)?,
        _ => {}
    }
    exc.setattr("transient", err.is_transient())?;
    Ok(PyErr::from_value(exc))
}

/// The error's text followed by every cause not already quoted in it.
fn message(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let t = cause.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = cause.source();
    }
    text
}
