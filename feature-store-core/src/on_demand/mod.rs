//! The contract of the expression engine that computes on-demand features.
//!
//! Core knows what an on-demand view reads ([`OnDemandInputs`]) and what a
//! compiled feature needs ([`CompiledFeature`]); parsing, type checking and
//! evaluation are the engine's (`feature-store-on-demand`, on DataFusion).
//! Training and serving evaluate the same compiled expressions, so the two
//! paths cannot disagree.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow_array::ArrayRef;

use crate::model::{FeatureRef, FeatureView, OnDemandFeatureView, RequestSource, UdfSignature};
use crate::{Result, ValueType};

mod projection;
pub use projection::{
    BoundProjection, OnDemandProjection, OnDemandRequest, OnDemandSpec, is_hidden_input, missing_request_field,
    request_column,
};
pub(crate) use projection::{evaluate_with, request_fields};

/// Where an input of an on-demand view comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum InputSource {
    /// A feature of a (plain or aggregation) feature view.
    Feature(FeatureRef),
    /// A field of a request source, named as the request carries it.
    Request {
        /// The request source.
        source: String,
        /// The field.
        field: String,
    },
}

impl fmt::Display for InputSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Feature(r) => r.fmt(f),
            Self::Request { source, field } => write!(f, "request field {source}.{field}"),
        }
    }
}

/// One input value of an on-demand view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Input {
    /// Where its values come from.
    pub source: InputSource,
    /// Its declared type (the Arrow type [`ValueType::to_arrow`] gives).
    pub dtype: ValueType,
}

/// What an on-demand view's expressions may read: every input, and the
/// names an expression may call each by.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct OnDemandInputs {
    /// The inputs, in source order.
    pub inputs: Vec<Input>,
    /// Column name → input index. Every input is named `source__name`; its
    /// plain `name` too when no other input has that name.
    pub names: BTreeMap<String, usize>,
    /// Plain names two or more inputs share → their qualified names.
    pub ambiguous: BTreeMap<String, Vec<String>>,
}

impl OnDemandInputs {
    /// The inputs of `view`, given its sources (feature views by name, request sources by name).
    ///
    /// Unknown sources are reported by registry validation; here they are skipped.
    pub fn of(
        view: &OnDemandFeatureView,
        feature_view: impl Fn(&str) -> Option<FeatureView>,
        request_source: impl Fn(&str) -> Option<RequestSource>,
    ) -> Self {
        let mut inputs = Vec::new();
        let mut plain: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        let mut names = BTreeMap::new();
        let mut add = |source_name: &str, name: &str, source: InputSource, dtype: ValueType| {
            let i = inputs.len();
            inputs.push(Input { source, dtype });
            let qualified = format!("{source_name}__{name}");
            names.insert(qualified.clone(), i);
            plain.entry(name.to_owned()).or_default().push((qualified, i));
        };
        for s in &view.sources {
            if let Some(v) = feature_view(s) {
                for f in &v.schema {
                    add(s, &f.name, InputSource::Feature(FeatureRef::new(s, &f.name)), f.dtype.clone());
                }
            } else if let Some(r) = request_source(s) {
                for f in &r.schema {
                    let source = InputSource::Request { source: s.clone(), field: f.name.clone() };
                    add(s, &f.name, source, f.dtype.clone());
                }
            }
        }
        let mut ambiguous = BTreeMap::new();
        for (name, users) in plain {
            // A qualified name wins over a plain one that happens to equal it.
            if names.contains_key(&name) {
                continue;
            }
            if let [(_, i)] = users.as_slice() {
                names.insert(name, *i);
            } else {
                ambiguous.insert(name, users.into_iter().map(|(q, _)| q).collect());
            }
        }
        Self { inputs, names, ambiguous }
    }

    /// The request fields among the inputs: (field name, type), in input order.
    pub fn request_fields(&self) -> impl Iterator<Item = (&str, &ValueType)> {
        self.inputs.iter().filter_map(|i| match &i.source {
            InputSource::Request { field, .. } => Some((field.as_str(), &i.dtype)),
            InputSource::Feature(_) => None,
        })
    }
}

/// A compiled expression: evaluated over the columns of its inputs.
pub trait FeatureExpr: Send + Sync + fmt::Debug {
    /// Evaluates over `columns` (one per [`CompiledFeature::inputs`] entry,
    /// `rows` long, typed as the inputs' declared types); returns a column
    /// of the feature's declared type.
    fn evaluate(&self, columns: &[ArrayRef], rows: usize) -> Result<ArrayRef>;
}

/// One feature of a compiled view.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CompiledFeature {
    /// Feature name.
    pub name: String,
    /// Declared type, which the expression's output has.
    pub dtype: ValueType,
    /// Input indexes ([`OnDemandInputs::inputs`]) the expression reads, in
    /// the order [`FeatureExpr::evaluate`] takes them.
    pub inputs: Vec<usize>,
    /// The expression.
    pub expr: Arc<dyn FeatureExpr>,
}

impl CompiledFeature {
    /// A compiled feature.
    pub fn new(name: String, dtype: ValueType, inputs: Vec<usize>, expr: Arc<dyn FeatureExpr>) -> Self {
        Self { name, dtype, inputs, expr }
    }
}

/// An on-demand view compiled against its inputs' types.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CompiledView {
    /// The view's features, in definition order.
    pub features: Vec<CompiledFeature>,
    /// User-defined functions the expressions call, sorted by name.
    pub udfs: Vec<UdfSignature>,
}

impl CompiledView {
    /// A compiled view.
    pub fn new(features: Vec<CompiledFeature>, udfs: Vec<UdfSignature>) -> Self {
        Self { features, udfs }
    }
}

/// Parses, type-checks and compiles on-demand feature expressions.
pub trait ExpressionEngine: Send + Sync + fmt::Debug {
    /// Compiles every feature of `view` over `inputs`. Each problem (a
    /// syntax error, an unknown column, a type that does not match the
    /// declared one, an aggregate or volatile function) is one message
    /// naming the feature; all are returned together.
    fn compile(
        &self,
        view: &OnDemandFeatureView,
        inputs: &OnDemandInputs,
    ) -> std::result::Result<CompiledView, Vec<String>>;

    /// Whether a user-defined function named `name` is registered.
    fn has_udf(&self, name: &str) -> bool;

    /// Changes whenever a user-defined function is registered, so that
    /// views compiled before are compiled again.
    fn generation(&self) -> u64;

    /// For downcasting to the concrete engine (to register functions).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Checks the functions a view was applied with against the ones this
/// process compiled it with: a missing or different function is an error,
/// never a silently different feature.
pub fn check_udfs(view: &str, recorded: &[UdfSignature], compiled: &[UdfSignature]) -> std::result::Result<(), String> {
    for want in recorded {
        match compiled.iter().find(|c| c.name == want.name) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(format!(
                    "on-demand feature view \"{view}\" was applied with the function {want}, but this process \
                     registers {got}; register the same function (or apply the definitions again from this process)"
                ));
            }
            None => {
                return Err(format!(
                    "on-demand feature view \"{view}\" calls {want}, which this process did not register; register \
                     it before reading the view (Rust: store.register_udf; Python: import the module whose \
                     @feature_store.udf or @on_demand_feature_view defines it)"
                ));
            }
        }
    }
    Ok(())
}
