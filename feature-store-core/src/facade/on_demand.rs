//! On-demand features in the facade: resolving references to on-demand
//! views into the inputs they need, compiling each view once per registry
//! version, and evaluating them over retrieved rows, offline (each batch of
//! the retrieval's stream) and online (the decoded response), with the same
//! compiled expressions.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use futures::StreamExt;

use super::FeatureStore;
use crate::historical::{BatchStream, ViewRequest};
use crate::model::{FeatureRef, FeatureSelection, OnDemandFeatureView};
use crate::on_demand::{CompiledView, InputSource, OnDemandInputs, check_udfs};
use crate::online::FeatureStatus;
use crate::registry::{ProjectView, similar};
use crate::{Error, Result, ValueType, describe_arrow};

use crate::model::HIDDEN_INPUT_PREFIX as HIDDEN;

/// Features resolved against the registry: the views to read (with the
/// inputs on-demand views need) and the on-demand views to evaluate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolution {
    pub(crate) views: Vec<ViewRequest>,
    pub(crate) on_demand: Vec<OnDemandRequest>,
}

impl Resolution {
    /// Output columns of inputs nobody asked for.
    pub(crate) fn is_hidden(name: &str) -> bool {
        name.starts_with(HIDDEN)
    }

    /// Request fields the on-demand views read: (name, declared type), each once.
    pub(crate) fn request_fields(&self) -> Vec<(String, ValueType)> {
        let mut out: Vec<(String, ValueType)> = Vec::new();
        for r in &self.on_demand {
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

    /// Output column names of the on-demand features.
    pub(crate) fn on_demand_outputs(&self) -> impl Iterator<Item = &str> {
        self.on_demand.iter().flat_map(|r| r.output_names.iter().map(String::as_str))
    }
}

/// One on-demand view's part of a request.
#[derive(Debug, Clone)]
pub(crate) struct OnDemandRequest {
    pub(crate) view: OnDemandFeatureView,
    pub(crate) compiled: Arc<CompiledView>,
    pub(crate) inputs: OnDemandInputs,
    /// Requested features: indexes into `compiled.features`.
    pub(crate) features: Vec<usize>,
    pub(crate) output_names: Vec<String>,
    /// The output field of each requested feature.
    pub(crate) fields: Vec<Arc<Field>>,
    /// Per input index, the column holding it: a retrieved feature's output
    /// name, or a request field's name in the entity rows.
    pub(crate) columns: Vec<String>,
    /// Inputs the requested features read, sorted.
    pub(crate) used_inputs: Vec<usize>,
}

/// Compiled on-demand views of one registry version and engine generation.
#[derive(Debug, Default)]
pub(crate) struct CompiledCache {
    key: (u64, u64),
    views: HashMap<String, Arc<CompiledView>>,
}

impl FeatureStore {
    /// The compiled form of on-demand view `view`, compiled once per registry
    /// version (and again after functions are registered).
    pub(crate) fn compiled_view(
        &self,
        version: u64,
        project: &ProjectView<'_>,
        view: &OnDemandFeatureView,
    ) -> Result<Arc<CompiledView>> {
        let engine = self.inner.engine.as_deref().ok_or_else(|| {
            Error::Unsupported(format!(
                "on-demand feature view \"{}\": this build has no expression engine; build feature-store with the \
                 cargo feature \"on-demand\"",
                view.name
            ))
        })?;
        let key = (version, engine.generation());
        {
            let cache = self.inner.compiled.lock().expect("poisoned");
            if cache.key == key
                && let Some(hit) = cache.views.get(&view.name)
            {
                return Ok(Arc::clone(hit));
            }
        }
        let invalid = |m: String| Error::InvalidArgument(m);
        for udf in &view.udfs {
            if !engine.has_udf(&udf.name) {
                check_udfs(&view.name, std::slice::from_ref(udf), &[]).map_err(invalid)?;
            }
        }
        let inputs = project.on_demand_inputs(view);
        let compiled = engine.compile(view, &inputs).map_err(|problems| {
            invalid(format!(
                "on-demand feature view \"{}\" does not compile in this process: {}",
                view.name,
                problems.join("; ")
            ))
        })?;
        check_udfs(&view.name, &view.udfs, &compiled.udfs).map_err(invalid)?;
        let compiled = Arc::new(compiled);
        let mut cache = self.inner.compiled.lock().expect("poisoned");
        if cache.key != key {
            cache.key = key;
            cache.views.clear();
        }
        cache.views.insert(view.name.clone(), Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Adds the on-demand selections to `views` (resolved from the plain
    /// selections): their inputs join the view requests, hidden unless requested.
    pub(crate) fn resolve_on_demand(
        &self,
        version: u64,
        project: &ProjectView<'_>,
        selections: &[FeatureSelection],
        full_feature_names: bool,
        views: &mut Vec<ViewRequest>,
    ) -> Result<Vec<OnDemandRequest>> {
        let mut out: Vec<OnDemandRequest> = Vec::new();
        for sel in selections {
            let view = project.on_demand_feature_view(sel.view())?;
            let compiled = self.compiled_view(version, project, view)?;
            let wanted: Vec<usize> = match sel {
                FeatureSelection::View(_) => (0..compiled.features.len()).collect(),
                FeatureSelection::Feature(r) => match compiled.features.iter().position(|f| f.name == r.feature) {
                    Some(i) => vec![i],
                    None => {
                        let names: Vec<&str> = view.feature_names().collect();
                        let close: Vec<String> = names
                            .iter()
                            .filter(|n| similar(n, &r.feature))
                            .map(|n| format!("\"{}:{n}\"", view.name))
                            .collect();
                        let hint = if close.is_empty() {
                            format!("its features are: {}", names.join(", "))
                        } else {
                            format!("did you mean {}?", close.join(" or "))
                        };
                        return Err(Error::NotFound { kind: "feature", name: r.to_string(), hint: Some(hint) });
                    }
                },
            };
            let at = match out.iter().position(|o| o.view.name == view.name) {
                Some(i) => i,
                None => {
                    let inputs = project.on_demand_inputs(view);
                    out.push(OnDemandRequest {
                        view: view.clone(),
                        compiled: Arc::clone(&compiled),
                        columns: vec![String::new(); inputs.inputs.len()],
                        inputs,
                        features: Vec::new(),
                        output_names: Vec::new(),
                        fields: Vec::new(),
                        used_inputs: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            let r = &mut out[at];
            for i in wanted {
                if !r.features.contains(&i) {
                    r.features.push(i);
                    let feature = &compiled.features[i];
                    let output = FeatureRef::new(&view.name, &feature.name).output_name(full_feature_names);
                    r.fields.push(Arc::new(Field::new(&output, feature.dtype.to_arrow(), true)));
                    r.output_names.push(output);
                }
            }
        }
        // Inputs, once every plain selection is known (a requested feature is reused, not fetched twice).
        for r in &mut out {
            let mut used: Vec<usize> =
                r.features.iter().flat_map(|&f| r.compiled.features[f].inputs.iter().copied()).collect();
            used.sort_unstable();
            used.dedup();
            for &i in &used {
                r.columns[i] = match &r.inputs.inputs[i].source {
                    InputSource::Request { field, .. } => field.clone(),
                    InputSource::Feature(f) => input_column(project, views, f)?,
                };
            }
            r.used_inputs = used;
        }
        Ok(out)
    }
}

/// The output column carrying feature `f` in `views`, adding it as a hidden input if nobody requested it.
fn input_column(project: &ProjectView<'_>, views: &mut Vec<ViewRequest>, f: &FeatureRef) -> Result<String> {
    let at = match views.iter().position(|v| v.view.name == f.view) {
        Some(i) => i,
        None => {
            let view = project.feature_view(&f.view)?.clone();
            let source = project.data_source(&view.source)?.clone();
            let join_keys = project.join_keys(&view)?;
            views.push(ViewRequest { view, source, join_keys, features: Vec::new(), output_names: Vec::new() });
            views.len() - 1
        }
    };
    let v = &mut views[at];
    if let Some(i) = v.features.iter().position(|x| x == &f.feature) {
        return Ok(v.output_names[i].clone());
    }
    let name = format!("{HIDDEN}{}__{}", f.view, f.feature);
    v.features.push(f.feature.clone());
    v.output_names.push(name.clone());
    Ok(name)
}

/// The column of `batch` named `name` as type `dtype`: request fields may
/// come in any type that converts losslessly (an `int32` column for an
/// `int64` field); anything else is an error naming the field and both types.
pub(crate) fn request_column(batch: &RecordBatch, name: &str, dtype: &ValueType, context: &str) -> Result<ArrayRef> {
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
pub(crate) fn missing_request_field(name: &str, schema: &Schema, context: &str) -> Error {
    let given: Vec<&str> =
        schema.fields().iter().map(|f| f.name().as_str()).filter(|n| !Resolution::is_hidden(n)).collect();
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

/// The fields of the on-demand outputs.
pub(crate) fn output_fields(on_demand: &[OnDemandRequest]) -> Vec<Arc<Field>> {
    on_demand.iter().flat_map(|r| r.fields.iter().cloned()).collect()
}

/// Wraps a retrieval's stream: each batch gains the on-demand columns and loses the hidden inputs.
pub(crate) fn evaluate_stream(stream: BatchStream, resolution: &Resolution) -> Result<BatchStream> {
    if resolution.on_demand.is_empty() {
        return Ok(stream);
    }
    let input = stream.schema();
    // Request fields and name clashes are checked before any row is read.
    let empty = RecordBatch::new_empty(Arc::clone(&input));
    for (field, dtype) in resolution.request_fields() {
        request_column(&empty, &field, &dtype, "entity rows")?;
    }
    for name in resolution.on_demand_outputs() {
        if input.field_with_name(name).is_ok() {
            return Err(Error::InvalidArgument(format!(
                "output column \"{name}\" would come from both the entity table (or a feature view) and an on-demand \
                 feature view; use full feature names (view__feature) or rename the column"
            )));
        }
    }
    let keep: Vec<usize> =
        (0..input.fields().len()).filter(|&i| !Resolution::is_hidden(input.field(i).name())).collect();
    let mut fields: Vec<Arc<Field>> = keep.iter().map(|&i| Arc::new(input.field(i).clone())).collect();
    fields.extend(output_fields(&resolution.on_demand));
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let on_demand = Arc::new(resolution.on_demand.clone());
    let out_schema = Arc::clone(&schema);
    let mapped = stream.map(move |batch| {
        let batch = batch?;
        let computed = evaluate(&on_demand, &batch, "entity rows")?;
        let mut columns: Vec<ArrayRef> = keep.iter().map(|&i| Arc::clone(batch.column(i))).collect();
        columns.extend(computed);
        RecordBatch::try_new(Arc::clone(&out_schema), columns)
            .map_err(|e| Error::data("on-demand features", e.to_string()))
    });
    Ok(BatchStream::new(schema, Box::pin(mapped)))
}

/// Rank of a status when an on-demand feature takes the worst of its inputs'.
fn badness(s: FeatureStatus) -> u8 {
    match s {
        FeatureStatus::Present => 0,
        FeatureStatus::NullValue => 1,
        FeatureStatus::OutsideMaxAge => 2,
        _ => 3,
    }
}

/// Statuses and event times of one on-demand column: `NULL_VALUE` where the
/// result is null, else the worst status of the inputs; the oldest input
/// event time. `input` gives a retrieved input's statuses and times.
pub(crate) fn online_statuses<'a>(
    r: &OnDemandRequest,
    feature: usize,
    value: &dyn Array,
    input: impl Fn(usize) -> Option<(&'a [FeatureStatus], &'a [Option<i64>])>,
    statuses: &mut Vec<FeatureStatus>,
    times: &mut Vec<Option<i64>>,
) {
    let rows = value.len();
    let sources: Vec<(&[FeatureStatus], &[Option<i64>])> =
        r.compiled.features[feature].inputs.iter().filter_map(|&i| input(i)).collect();
    for row in 0..rows {
        let mut worst = FeatureStatus::Present;
        let mut oldest: Option<i64> = None;
        for (st, tm) in &sources {
            if badness(st[row]) > badness(worst) {
                worst = st[row];
            }
            if let Some(t) = tm[row] {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        statuses.push(if value.is_null(row) { FeatureStatus::NullValue } else { worst });
        times.push(oldest);
    }
}
