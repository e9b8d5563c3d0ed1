//! The expression engine of on-demand features, on Apache DataFusion.
//!
//! Each feature's SQL expression is parsed, type-checked and compiled into a
//! DataFusion physical expression once (per registry version); training
//! evaluates it over each batch of the retrieval's output and serving over
//! the decoded online row, so both run the same code with DataFusion's
//! semantics (SQL null propagation, Arrow's total order for NaN).
//!
//! ```
//! use std::sync::Arc;
//! use feature_store_core::model::{FeatureView, OnDemandFeatureView};
//! use feature_store_core::on_demand::{ExpressionEngine, OnDemandInputs};
//! use feature_store_core::ValueType;
//! use feature_store_on_demand::DataFusionEngine;
//!
//! let stats = FeatureView::builder("stats", "src").feature("conv_rate", ValueType::Float32).build().unwrap();
//! let view = OnDemandFeatureView::builder("od")
//!     .source("stats")
//!     .feature("double_rate", ValueType::Float64, "conv_rate * 2.0")
//!     .build()
//!     .unwrap();
//! let inputs = OnDemandInputs::of(&view, |_| Some(stats.clone()), |_| None);
//! let compiled = DataFusionEngine::new().compile(&view, &inputs).unwrap();
//! let rate = Arc::new(arrow_array::Float32Array::from(vec![0.25])) as arrow_array::ArrayRef;
//! let out = compiled.features[0].expr.evaluate(&[rate], 1).unwrap();
//! assert_eq!(out.as_any().downcast_ref::<arrow_array::Float64Array>().unwrap().value(0), 0.5);
//! ```
#![warn(missing_docs)]

mod engine;
mod error;

/// The DataFusion crate UDFs are written against, so callers need no version match.
pub use datafusion;
pub use engine::DataFusionEngine;
pub use error::{Error, Result};
