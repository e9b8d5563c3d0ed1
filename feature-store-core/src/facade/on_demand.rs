//! On-demand features in the facade: resolving references to on-demand
//! views into the inputs they need, compiling each view once per registry
//! version, and evaluating them over retrieved rows, offline (each batch of
//! the retrieval's stream) and online (the decoded response), with the same
//! compiled expressions.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::Array;

use super::FeatureStore;
use crate::historical::ViewRequest;
use crate::model::{FeatureRef, FeatureSelection, OnDemandFeatureView};
use crate::on_demand::{
    CompiledView, InputSource, OnDemandProjection, OnDemandRequest, check_udfs, is_hidden_input, request_fields,
};
use crate::online::FeatureStatus;
use crate::registry::{ProjectView, similar};
use crate::{Error, Result, ValueType};

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
        is_hidden_input(name)
    }

    /// Request fields the on-demand views read: (name, declared type), each once.
    pub(crate) fn request_fields(&self) -> Vec<(String, ValueType)> {
        request_fields(&self.on_demand)
    }

    /// The on-demand features as the projection an offline store applies to the joined rows.
    pub(crate) fn projection(&self) -> Option<OnDemandProjection> {
        (!self.on_demand.is_empty()).then(|| OnDemandProjection::new(self.on_demand.clone()))
    }
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
                    out.push(OnDemandRequest::new(view.clone(), Arc::clone(&compiled), project.on_demand_inputs(view)));
                    out.len() - 1
                }
            };
            let r = &mut out[at];
            for i in wanted {
                let output = FeatureRef::new(&view.name, &compiled.features[i].name).output_name(full_feature_names);
                r.add_feature(i, output);
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
