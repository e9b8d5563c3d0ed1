//! On-demand features over retrieved rows. A training-set retrieval hands
//! its [`OnDemandProjection`] to the offline store with the request, so the
//! store evaluates it where the joined rows are (inside its plan: on every
//! partition, on a cluster's executors, before a folder output's writer);
//! serving evaluates the same compiled expressions over decoded rows.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{CompiledView, ExpressionEngine, InputSource, OnDemandInputs, check_udfs};
use crate::historical::BatchStream;
use crate::model::HIDDEN_INPUT_PREFIX;
use crate::model::{OnDemandFeatureView, UdfSignature};
use crate::{Error, Result, ValueType, describe_arrow};

/// One on-demand view's part of a request: which of its features to
/// compute, under which output names, from which columns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OnDemandRequest {
    /// The view's definition.
    pub view: OnDemandFeatureView,
    /// The view compiled against its inputs' types.
    pub compiled: Arc<CompiledView>,
    /// What the view's expressions may read.
    pub inputs: OnDemandInputs,
    /// Requested features: indexes into `compiled.features`.
    pub features: Vec<usize>,
    /// Output column name of each requested feature.
    pub output_names: Vec<String>,
    /// The output field of each requested feature.
    pub fields: Vec<Arc<Field>>,
    /// Per input index, the column holding it: a retrieved feature's output
    /// name, or a request field's name in the entity rows.
    pub columns: Vec<String>,
    /// Inputs the requested features read, sorted.
    pub used_inputs: Vec<usize>,
}

impl OnDemandRequest {
    /// A request for no feature of `view` yet (see [`Self::add_feature`]);
    /// `columns` start empty.
    pub fn new(view: OnDemandFeatureView, compiled: Arc<CompiledView>, inputs: OnDemandInputs) -> Self {
        Self {
            view,
            compiled,
            columns: vec![String::new(); inputs.inputs.len()],
            inputs,
            features: Vec::new(),
            output_names: Vec::new(),
            fields: Vec::new(),
            used_inputs: Vec::new(),
        }
    }

    /// Requests feature `index` of the compiled view under `output` (once).
    pub fn add_feature(&mut self, index: usize, output: String) {
        if self.features.contains(&index) {
            return;
        }
        let feature = &self.compiled.features[index];
        self.features.push(index);
        self.fields.push(Arc::new(Field::new(&output, feature.dtype.to_arrow(), true)));
        self.output_names.push(output);
    }
}

/// Output columns that carry the inputs of on-demand features nobody asked
/// for: retrieved for the expressions, dropped from the output.
pub fn is_hidden_input(name: &str) -> bool {
    name.starts_with(HIDDEN_INPUT_PREFIX)
}

/// The on-demand features of a retrieval: evaluated over each joined batch
/// (retrieved features under their output names, request fields under
/// theirs); the hidden inputs are dropped and one column per requested
/// feature is appended, in request order.
#[derive(Debug, Clone, Default)]
pub struct OnDemandProjection {
    requests: Arc<[OnDemandRequest]>,
}

/// The serialized form of one [`OnDemandRequest`]: what another process (a
/// cluster's executor, or a saved dataset's verification) needs to compile
/// and run it again. Definitions, not compiled code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OnDemandSpec {
    /// The view's definition, expressions and functions as recorded.
    pub view: OnDemandFeatureView,
    /// Its inputs with their types.
    pub inputs: OnDemandInputs,
    /// Requested features, as indices into the view's features.
    pub features: Vec<usize>,
    /// Their output column names.
    pub output_names: Vec<String>,
    /// Per input, the column of the joined rows that carries it (empty when unused).
    pub columns: Vec<String>,
    /// The inputs the requested features read.
    pub used_inputs: Vec<usize>,
}

impl OnDemandSpec {
    /// The requested features as `view:feature` references, in output order.
    pub fn feature_refs(&self) -> Vec<String> {
        self.features
            .iter()
            .map(|&f| match self.view.features.get(f) {
                Some(feature) => format!("{}:{}", self.view.name, feature.name),
                None => format!("{}:#{f}", self.view.name),
            })
            .collect()
    }
}

impl OnDemandProjection {
    /// The projection of `requests`.
    pub fn new(requests: Vec<OnDemandRequest>) -> Self {
        Self { requests: requests.into() }
    }

    /// The on-demand views' requests.
    pub fn requests(&self) -> &[OnDemandRequest] {
        &self.requests
    }

    /// Whether there is nothing to compute.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// The user-defined functions the expressions call (each view's record).
    pub fn udfs(&self) -> impl Iterator<Item = (&str, &UdfSignature)> {
        self.requests.iter().flat_map(|r| r.compiled.udfs.iter().map(move |u| (r.view.name.as_str(), u)))
    }

    /// The output fields of the on-demand features, in request order.
    pub fn output_fields(&self) -> Vec<Arc<Field>> {
        self.requests.iter().flat_map(|r| r.fields.iter().cloned()).collect()
    }

    /// Request fields the expressions read: (name, declared type), each once.
    pub fn request_fields(&self) -> Vec<(String, ValueType)> {
        request_fields(&self.requests)
    }

    /// Checks the projection against the joined rows' schema before any
    /// row is read (request fields present and convertible, no output name
    /// taken) and fixes the output schema.
    pub fn bind(&self, input: &SchemaRef) -> Result<BoundProjection> {
        let empty = RecordBatch::new_empty(Arc::clone(input));
        for (field, dtype) in self.request_fields() {
            request_column(&empty, &field, &dtype, "entity rows")?;
        }
        for name in self.requests.iter().flat_map(|r| r.output_names.iter()) {
            if input.field_with_name(name).is_ok() {
                return Err(Error::InvalidArgument(format!(
                    "output column \"{name}\" would come from both the entity table (or a feature view) and an \
                     on-demand feature view; use full feature names (view__feature) or rename the column"
                )));
            }
        }
        let keep: Vec<usize> = (0..input.fields().len()).filter(|&i| !is_hidden_input(input.field(i).name())).collect();
        let mut fields: Vec<Arc<Field>> = keep.iter().map(|&i| Arc::new(input.field(i).clone())).collect();
        fields.extend(self.output_fields());
        let metadata = input.metadata().clone();
        Ok(BoundProjection {
            projection: self.clone(),
            keep,
            schema: Arc::new(Schema::new_with_metadata(fields, metadata)),
        })
    }

    /// `stream` with the projection applied to each batch, on the stream's
    /// own thread: for stores that do not plan it into their work.
    pub fn apply_stream(&self, stream: BatchStream) -> Result<BatchStream> {
        if self.is_empty() {
            return Ok(stream);
        }
        let bound = Arc::new(self.bind(&stream.schema())?);
        let schema = Arc::clone(bound.schema());
        let mapped = stream.map(move |batch| bound.apply(&batch?));
        Ok(BatchStream::new(schema, Box::pin(mapped)))
    }

    /// The projection's definitions: the views, their inputs and what is
    /// requested, not their compiled expressions (see [`Self::from_specs`]).
    pub fn specs(&self) -> Vec<OnDemandSpec> {
        self.requests
            .iter()
            .map(|r| OnDemandSpec {
                view: r.view.clone(),
                inputs: r.inputs.clone(),
                features: r.features.clone(),
                output_names: r.output_names.clone(),
                columns: r.columns.clone(),
                used_inputs: r.used_inputs.clone(),
            })
            .collect()
    }

    /// [`Self::specs`] as JSON (see [`Self::from_json`]).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.specs()).expect("on-demand projections serialize")
    }

    /// A projection [`Self::to_json`] wrote, compiled again by `engine`.
    pub fn from_json(json: &str, engine: &dyn ExpressionEngine) -> Result<Self> {
        let specs: Vec<OnDemandSpec> = serde_json::from_str(json)
            .map_err(|e| Error::InvalidArgument(format!("a malformed on-demand projection: {e}")))?;
        Self::from_specs(specs, engine)
    }

    /// The projection of `specs` ([`Self::specs`] of another process, or
    /// recorded earlier), compiled again by `engine`: a view that does not
    /// compile here, or compiles with different user-defined functions, is
    /// an error naming it, never a silently different feature.
    pub fn from_specs(specs: Vec<OnDemandSpec>, engine: &dyn ExpressionEngine) -> Result<Self> {
        let mut requests = Vec::with_capacity(specs.len());
        for s in specs {
            let compiled = engine.compile(&s.view, &s.inputs).map_err(|problems| {
                Error::InvalidArgument(format!(
                    "on-demand feature view \"{}\" does not compile in this process: {}",
                    s.view.name,
                    problems.join("; ")
                ))
            })?;
            check_udfs(&s.view.name, &s.view.udfs, &compiled.udfs).map_err(Error::InvalidArgument)?;
            let shape_ok = s.output_names.len() == s.features.len()
                && s.columns.len() == s.inputs.inputs.len()
                && s.features.iter().all(|&f| f < compiled.features.len())
                && s.used_inputs.iter().all(|&i| i < s.inputs.inputs.len());
            if !shape_ok {
                return Err(Error::InvalidArgument(format!(
                    "a malformed on-demand projection of view \"{}\"",
                    s.view.name
                )));
            }
            let mut r = OnDemandRequest::new(s.view, Arc::new(compiled), s.inputs);
            for (f, o) in s.features.into_iter().zip(s.output_names) {
                r.add_feature(f, o);
            }
            r.columns = s.columns;
            r.used_inputs = s.used_inputs;
            requests.push(r);
        }
        Ok(Self::new(requests))
    }
}

/// Request fields `requests` read: (name, declared type), each once, in order.
pub(crate) fn request_fields(requests: &[OnDemandRequest]) -> Vec<(String, ValueType)> {
    let mut out: Vec<(String, ValueType)> = Vec::new();
    for r in requests {
        for &i in &r.used_inputs {
            if let InputSource::Request { field, .. } = &r.inputs.inputs[i].source
                && !out.iter().any(|(n, _)| n == field)
            {
                out.push((field.clone(), r.inputs.inputs[i].dtype.clone()));
            }
        }
    }
    out
}

/// An [`OnDemandProjection`] bound to one input schema.
#[derive(Debug, Clone)]
pub struct BoundProjection {
    projection: OnDemandProjection,
    keep: Vec<usize>,
    schema: SchemaRef,
}

impl BoundProjection {
    /// The output schema: the input's columns but the hidden inputs, then the on-demand features.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The projection of one batch of the bound schema.
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let computed = evaluate(&self.projection.requests, batch, "entity rows")?;
        let mut columns: Vec<ArrayRef> = self.keep.iter().map(|&i| Arc::clone(batch.column(i))).collect();
        columns.extend(computed);
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| Error::data("on-demand features", e.to_string()))
    }
}

/// The column of `batch` named `name` as type `dtype`: request fields may
/// come in any type that converts losslessly (an `int32` column for an
/// `int64` field); anything else is an error naming the field and both types.
pub fn request_column(batch: &RecordBatch, name: &str, dtype: &ValueType, context: &str) -> Result<ArrayRef> {
    let column = batch.column_by_name(name).ok_or_else(|| missing_request_field(name, batch.schema_ref(), context))?;
    let want = dtype.to_arrow();
    if column.data_type() == &want {
        return Ok(Arc::clone(column));
    }
    let cast = |c: &ArrayRef| arrow_cast::cast(c, &want).map_err(|e| Error::data(context, e.to_string()));
    if column.null_count() == column.len() || dtype.accepts_arrow(column.data_type()) {
        return cast(column);
    }
    // Whole numbers for a float field (pandas makes int64 columns of whole
    // amounts): taken when every value converts exactly.
    if matches!(dtype, ValueType::Float32 | ValueType::Float64) && column.data_type().is_integer() {
        let converted = cast(column)?;
        let back = arrow_cast::cast(&converted, column.data_type()).map_err(|e| Error::data(context, e.to_string()))?;
        if back.to_data() == column.to_data() {
            return Ok(converted);
        }
        let row = (0..column.len()).find(|&i| back.slice(i, 1).to_data() != column.slice(i, 1).to_data()).unwrap_or(0);
        return Err(Error::data(
            context,
            format!(
                "request field \"{name}\" row {row}: {} has no exact {dtype} value; pass {dtype} values",
                crate::online::FeatureValue::from_array(column.as_ref(), row).as_i64().unwrap_or_default()
            ),
        ));
    }
    Err(Error::data(
        context,
        format!(
            "request field \"{name}\" is {} but its request source declares it {dtype}; pass {dtype} values",
            describe_arrow(column.data_type())
        ),
    ))
}

/// The error for request field `name` absent from `schema` (of `context`).
pub fn missing_request_field(name: &str, schema: &Schema, context: &str) -> Error {
    let given: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).filter(|n| !is_hidden_input(n)).collect();
    Error::InvalidArgument(format!(
        "{context} have no column \"{name}\", a request field the requested on-demand features read; given: {}",
        given.join(", ")
    ))
}

/// Evaluates the requested features of every on-demand view over `batch`
/// (retrieved features under their output names, request fields under
/// theirs): one column per requested feature, in request order.
pub(crate) fn evaluate(on_demand: &[OnDemandRequest], batch: &RecordBatch, context: &str) -> Result<Vec<ArrayRef>> {
    evaluate_with(on_demand, batch.num_rows(), |r, _, i| {
        let input = &r.inputs.inputs[i];
        match &input.source {
            InputSource::Request { .. } => request_column(batch, &r.columns[i], &input.dtype, context),
            InputSource::Feature(_) => batch.column_by_name(&r.columns[i]).cloned().ok_or_else(|| {
                Error::data(context, format!("the retrieved rows lack input column \"{}\"", r.columns[i]))
            }),
        }
    })
}

/// [`evaluate`] with the input columns from `column(request, request index, input index)`.
pub(crate) fn evaluate_with(
    on_demand: &[OnDemandRequest],
    rows: usize,
    mut column: impl FnMut(&OnDemandRequest, usize, usize) -> Result<ArrayRef>,
) -> Result<Vec<ArrayRef>> {
    let mut out = Vec::with_capacity(on_demand.iter().map(|r| r.features.len()).sum());
    let mut columns: Vec<Option<ArrayRef>> = Vec::new();
    let mut args: Vec<ArrayRef> = Vec::new();
    for (ri, r) in on_demand.iter().enumerate() {
        columns.clear();
        columns.resize(r.inputs.inputs.len(), None);
        for &i in &r.used_inputs {
            columns[i] = Some(column(r, ri, i)?);
        }
        for &f in &r.features {
            let feature = &r.compiled.features[f];
            args.clear();
            args.extend(feature.inputs.iter().map(|&i| Arc::clone(columns[i].as_ref().expect("used input"))));
            let value = feature.expr.evaluate(&args, rows).map_err(|e| match e {
                Error::Data { message, .. } => {
                    Error::data(format!("on-demand feature \"{}:{}\"", r.view.name, feature.name), message)
                }
                other => other,
            })?;
            out.push(value);
        }
    }
    Ok(out)
}
