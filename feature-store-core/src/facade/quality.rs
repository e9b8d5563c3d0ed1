//! Data-quality gates on demand (`validate`), the gate materialization runs
//! per window (`check_window`), and reference profiles (`profile`).

use chrono::{DateTime, Utc};

use super::FeatureStore;
use crate::model::{DataSource, FeatureView, JoinKey, NewColumns};
use crate::offline::profile::Profile;
use crate::offline::{StatsRequest, WindowStats};
use crate::quality::{PreviousRun, RuleResult, ValidationReport, evaluate, previous_run, schema_contract};
use crate::{Error, Result};

impl FeatureStore {
    /// Checks each view's window against its rules and the schema contract
    /// without writing anything. `views` `None` checks every view with rules.
    pub async fn validate(
        &self,
        views: Option<&[String]>,
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
    ) -> Result<Vec<ValidationReport>> {
        if let Some(s) = start
            && s > end
        {
            return Err(Error::InvalidArgument(format!("validation window starts ({s}) after it ends ({end})")));
        }
        let doc = self.document().await?;
        let project = doc.project(self.project());
        let names: Vec<String> = match views {
            Some(v) if !v.is_empty() => v.to_vec(),
            _ => project
                .registry()
                .feature_views
                .values()
                .filter(|r| !r.spec.validation.is_empty())
                .map(|r| r.spec.name.clone())
                .collect(),
        };
        let mut out = Vec::new();
        for name in names {
            let view = project.feature_view(&name)?.clone();
            not_aggregation(&view, "validation")?;
            let source = project.data_source(&view.source)?.clone();
            let join_keys = project.join_keys(&view)?;
            let state = project.registry().view_state.get(&name);
            let previous = state.and_then(|s| previous_run(&s.runs, start, end));
            let reference = state.and_then(|s| s.profile.as_ref());
            out.push(self.check_window(&view, &source, &join_keys, start, end, previous, reference).await?);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)] // internal: the gate's inputs, each used once
    pub(crate) async fn check_window(
        &self,
        view: &FeatureView,
        source: &DataSource,
        join_keys: &[JoinKey],
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
        previous: Option<PreviousRun>,
        reference: Option<&Profile>,
    ) -> Result<ValidationReport> {
        let schema = self.offline_store()?.source_schema(source).await?;
        let (mut results, warnings) = schema_contract(view, source, &schema);
        let stats = if results.is_empty() {
            let mut request = StatsRequest::new(view.clone(), source.clone(), join_keys.to_vec(), start, end);
            request.reference = reference.cloned();
            self.statistics(&format!("validating feature view \"{}\"", view.name))?.window_stats(request).await?
        } else {
            WindowStats::default()
        };
        let mut warnings = warnings;
        for (column, file, found) in &stats.schema_issues {
            results.push(RuleResult {
                rule: "schema".into(),
                feature: Some(column.clone()),
                observed: format!("{found} in {file}"),
                threshold: view
                    .feature(column)
                    .map_or_else(|| "present".to_owned(), |f| format!("{} (as registered)", f.dtype)),
                passed: false,
                samples: vec![],
            });
        }
        let mut new_columns = stats.new_columns.clone();
        if !new_columns.is_empty() {
            // A column another view over the same data reads is in the registry too.
            let doc = self.document().await?;
            let project = doc.project(self.project());
            let mut registered = std::collections::HashSet::new();
            for other in project.registry().feature_views.values().map(|r| &r.spec) {
                if !project.same_source(&other.source, &view.source) {
                    continue;
                }
                let keys = project.join_keys(other).unwrap_or_default();
                let names = other
                    .schema
                    .iter()
                    .map(|f| f.name.as_str())
                    .chain(other.aggregations.iter().filter_map(|a| a.column.as_deref()))
                    .chain(keys.iter().map(|k| k.name.as_str()));
                registered.extend(names.map(|n| source.source_column(n).to_owned()));
            }
            new_columns.retain(|(c, _)| !registered.contains(c));
        }
        if !new_columns.is_empty() {
            let text = new_columns.iter().map(|(c, f)| format!("{c} (in {f})")).collect::<Vec<_>>().join(", ");
            match view.validation.new_columns {
                NewColumns::Reject => results.push(RuleResult {
                    rule: "schema".into(),
                    feature: None,
                    observed: format!("columns not in the registry: {text}"),
                    threshold: "no new columns (new_columns: reject)".into(),
                    passed: false,
                    samples: vec![],
                }),
                _ => warnings.push(format!(
                    "columns not in the registry: {text} (allowed; set validation.new_columns: reject to fail on them)"
                )),
            }
        }
        if results.is_empty() {
            let (r, w) = evaluate(view, &stats, end, previous, reference);
            results = r;
            warnings.extend(w);
        }
        results.sort_by_key(|r| r.passed);
        Ok(ValidationReport {
            view: view.name.clone(),
            start,
            end,
            rows: stats.rows,
            max_event_ts: stats.max_event_ts,
            results,
            warnings,
        })
    }
}

impl FeatureStore {
    /// Summarizes `view` over `[start, end]` (per feature: counts, nulls,
    /// min/max, mean/std, quantiles, drift bins or top values) and, when
    /// `save`, stores it as the reference its `drift` rule compares with.
    ///
    /// Refused when the window is empty or the source breaks the schema
    /// contract: neither can serve as a reference.
    pub async fn profile(
        &self,
        view: &str,
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
        save: bool,
    ) -> Result<Profile> {
        if let Some(s) = start
            && s > end
        {
            return Err(Error::InvalidArgument(format!("profile window starts ({s}) after it ends ({end})")));
        }
        let doc = self.document().await?;
        let project = doc.project(self.project());
        let spec = project.feature_view(view)?.clone();
        not_aggregation(&spec, "a profile")?;
        let source = project.data_source(&spec.source)?.clone();
        let join_keys = project.join_keys(&spec)?;
        let schema = self.offline_store()?.source_schema(&source).await?;
        let (problems, _) = schema_contract(&spec, &source, &schema);
        if let Some(p) = problems.first() {
            return Err(Error::data(
                format!("profiling feature view \"{view}\""),
                format!(
                    "{} {}: observed {}, expected {}",
                    p.rule,
                    p.feature.as_deref().unwrap_or_default(),
                    p.observed,
                    p.threshold
                ),
            ));
        }
        let request = StatsRequest::new(spec.clone(), source, join_keys, start, end);
        let profile = self.statistics(&format!("profiling feature view \"{view}\""))?.profile(request).await?;
        if profile.rows == 0 {
            let window = start.map_or_else(|| format!("up to {end}"), |s| format!("[{s}, {end}]"));
            return Err(Error::InvalidArgument(format!(
                "feature view \"{view}\" has no rows in {window}; a reference profile needs data"
            )));
        }
        if save {
            let project = self.project().to_owned();
            self.registry()
                .update(|doc| {
                    let p = doc.projects.entry(project.clone()).or_default();
                    match p.feature_views.get(view) {
                        Some(r) if r.spec == spec => {}
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "feature view \"{view}\" changed or was removed while it was profiled; profile it again"
                            )));
                        }
                    }
                    p.view_state.entry(view.to_owned()).or_default().profile = Some(profile.clone());
                    Ok(true)
                })
                .await?;
        }
        Ok(profile)
    }

    /// The stored reference profile of `view`, if any.
    pub async fn reference_profile(&self, view: &str) -> Result<Option<Profile>> {
        let doc = self.document().await?;
        let project = doc.project(self.project());
        project.feature_view(view)?;
        Ok(project.registry().view_state.get(view).and_then(|s| s.profile.clone()))
    }
}

/// Quality checks read a view's rows as served; an aggregation view has none to read.
fn not_aggregation(view: &FeatureView, what: &str) -> Result<()> {
    if view.is_aggregation() {
        return Err(Error::Unsupported(format!(
            "feature view \"{}\" aggregates events; {what} of an aggregation view is not available in this version",
            view.name
        )));
    }
    Ok(())
}
