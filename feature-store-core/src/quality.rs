//! Data-quality gates: statistics of a view's window, computed by the offline
//! store in one streaming pass, checked against the view's
//! [`ValidationRules`]. Materialization runs the gate before writing a window;
//! `FeatureStore::validate` runs it on demand.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{DataSource, FeatureView, JoinKey, NewColumns, ValidationRules};
use crate::offline::SourceSchema;
use crate::{Error, FeatureStore, Result, describe_arrow};

/// What to compute over one window of a view's source rows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StatsRequest {
    /// The view (features, types, rules).
    pub view: FeatureView,
    /// Its source.
    pub source: DataSource,
    /// Its join keys, for sample rows.
    pub join_keys: Vec<JoinKey>,
    /// Window start (inclusive); `None` is all history.
    pub start: Option<DateTime<Utc>>,
    /// Window end (inclusive).
    pub end: DateTime<Utc>,
    /// Sample rows to return per violated rule.
    pub samples: usize,
}

/// Statistics of one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WindowStats {
    /// Rows in the window.
    pub rows: u64,
    /// Newest event time in the window.
    pub max_event_ts: Option<DateTime<Utc>>,
    /// Per feature, by name.
    pub features: BTreeMap<String, FeatureStats>,
    /// Files whose columns break the schema contract: (column, file, what was found).
    /// When any is present the other statistics are not computed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_issues: Vec<(String, String, String)>,
    /// Columns of some file that the view does not know: (column, file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_columns: Vec<(String, String)>,
}

/// Statistics of one feature over a window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FeatureStats {
    /// Null values.
    pub nulls: u64,
    /// Smallest value (numeric features).
    pub min: Option<f64>,
    /// Largest value (numeric features).
    pub max: Option<f64>,
    /// Mean (numeric features).
    pub mean: Option<f64>,
    /// Values outside the declared range.
    pub out_of_range: u64,
    /// Values not among the allowed ones.
    pub not_allowed: u64,
    /// Sample offending rows per rule (`ranges`, `allowed_values`, `max_null_fraction`), as JSON objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<String, Vec<serde_json::Value>>,
}

/// The outcome of one rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuleResult {
    /// The rule (`max_null_fraction`, `ranges`, `allowed_values`, `max_row_count_change`, `max_staleness`, `schema`).
    pub rule: String,
    /// The feature or column it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// What was observed, e.g. `0.031 (31 of 1000 rows)`.
    pub observed: String,
    /// The threshold, e.g. `<= 0.02`.
    pub threshold: String,
    /// Whether the rule held.
    pub passed: bool,
    /// Sample offending rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<serde_json::Value>,
}

/// All rule outcomes of one view and window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ValidationReport {
    /// The view.
    pub view: String,
    /// Window start (inclusive); `None` is all history.
    pub start: Option<DateTime<Utc>>,
    /// Window end (inclusive).
    pub end: DateTime<Utc>,
    /// Rows in the window.
    pub rows: u64,
    /// Newest event time in the window.
    pub max_event_ts: Option<DateTime<Utc>>,
    /// Every rule checked, failures first.
    pub results: Vec<RuleResult>,
    /// Things worth knowing that fail nothing (new columns when allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ValidationReport {
    /// True when every rule held.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    /// The failed rules.
    pub fn failures(&self) -> impl Iterator<Item = &RuleResult> {
        self.results.iter().filter(|r| !r.passed)
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = match self.start {
            Some(s) => format!("[{}, {}]", s.to_rfc3339(), self.end.to_rfc3339()),
            None => format!("up to {}", self.end.to_rfc3339()),
        };
        let failed = self.failures().count();
        writeln!(
            f,
            "feature view \"{}\", window {window}, {} rows: {}",
            self.view,
            self.rows,
            if failed == 0 { "passed".to_owned() } else { format!("{failed} rule(s) failed") }
        )?;
        for r in &self.results {
            let what = r.feature.as_deref().map(|x| format!(" {x}")).unwrap_or_default();
            writeln!(
                f,
                "  {} {}{what}: observed {}, threshold {}",
                if r.passed { "ok  " } else { "FAIL" },
                r.rule,
                r.observed,
                r.threshold
            )?;
            for s in r.samples.iter().filter(|_| !r.passed) {
                writeln!(f, "       e.g. {s}")?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "  note {w}")?;
        }
        Ok(())
    }
}

/// A previous run used by `max_row_count_change`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreviousRun {
    pub(crate) rows: u64,
}

/// The schema contract against the source's schema as the store reports it
/// (the first file): a missing column or a changed type always fails. Every
/// file, and new columns, are checked by the store's `window_stats`.
pub(crate) fn schema_contract(
    view: &FeatureView,
    source: &DataSource,
    schema: &SourceSchema,
) -> (Vec<RuleResult>, Vec<String>) {
    let mut results = Vec::new();
    let warnings = Vec::new();
    let columns: BTreeMap<String, &arrow_schema::DataType> =
        schema.schema.fields().iter().map(|f| (source.mapped_name(f.name()).to_owned(), f.data_type())).collect();
    for f in &view.schema {
        match columns.get(&f.name) {
            None => results.push(RuleResult {
                rule: "schema".into(),
                feature: Some(f.name.clone()),
                observed: format!("no column \"{}\" in {}", source.source_column(&f.name), schema.location),
                threshold: format!("a {} column", f.dtype),
                passed: false,
                samples: vec![],
            }),
            Some(dt) if !f.dtype.accepts_arrow(dt) => results.push(RuleResult {
                rule: "schema".into(),
                feature: Some(f.name.clone()),
                observed: format!("{} in {}", describe_arrow(dt), schema.location),
                threshold: format!("{} (as registered)", f.dtype),
                passed: false,
                samples: vec![],
            }),
            Some(_) => {}
        }
    }
    (results, warnings)
}

/// Checks `stats` against the view's rules.
pub(crate) fn evaluate(
    view: &FeatureView,
    stats: &WindowStats,
    end: DateTime<Utc>,
    previous: Option<PreviousRun>,
) -> Vec<RuleResult> {
    let rules: &ValidationRules = &view.validation;
    let mut out = Vec::new();
    let rows = stats.rows;
    let fraction = |n: u64| if rows == 0 { 0.0 } else { n as f64 / rows as f64 };
    let empty = FeatureStats::default();
    for f in &view.schema {
        let s = stats.features.get(&f.name).unwrap_or(&empty);
        if let Some(limit) = rules.null_limit(&f.name) {
            let observed = fraction(s.nulls);
            out.push(RuleResult {
                rule: "max_null_fraction".into(),
                feature: Some(f.name.clone()),
                observed: format!("{observed:.4} ({} of {rows} rows)", s.nulls),
                threshold: format!("<= {limit}"),
                passed: observed <= limit,
                samples: s.samples.get("max_null_fraction").cloned().unwrap_or_default(),
            });
        }
        if let Some((lo, hi)) = rules.ranges.get(&f.name) {
            let bound = |b: &Option<crate::model::Number>| b.map_or("-".to_owned(), |n| n.0.to_string());
            out.push(RuleResult {
                rule: "ranges".into(),
                feature: Some(f.name.clone()),
                observed: format!(
                    "{} of {rows} rows outside (min {}, max {})",
                    s.out_of_range,
                    s.min.map_or("-".into(), |v| v.to_string()),
                    s.max.map_or("-".into(), |v| v.to_string())
                ),
                threshold: format!("[{}, {}]", bound(lo), bound(hi)),
                passed: s.out_of_range == 0,
                samples: s.samples.get("ranges").cloned().unwrap_or_default(),
            });
        }
        if let Some(values) = rules.allowed_values.get(&f.name) {
            out.push(RuleResult {
                rule: "allowed_values".into(),
                feature: Some(f.name.clone()),
                observed: format!("{} of {rows} rows with other values", s.not_allowed),
                threshold: format!("one of {}", values.join(", ")),
                passed: s.not_allowed == 0,
                samples: s.samples.get("allowed_values").cloned().unwrap_or_default(),
            });
        }
    }
    if let Some(limit) = rules.max_row_count_change {
        match previous {
            Some(prev) => {
                let change = if prev.rows == 0 {
                    if rows == 0 { 0.0 } else { f64::INFINITY }
                } else {
                    (rows as f64 - prev.rows as f64).abs() / prev.rows as f64
                };
                out.push(RuleResult {
                    rule: "max_row_count_change".into(),
                    feature: None,
                    observed: format!("{change:.4} ({rows} rows vs {} in the previous run)", prev.rows),
                    threshold: format!("<= {}", limit.0),
                    passed: change <= limit.0,
                    samples: vec![],
                });
            }
            None => out.push(RuleResult {
                rule: "max_row_count_change".into(),
                feature: None,
                observed: format!("{rows} rows; no previous run over a window of this length"),
                threshold: format!("<= {}", limit.0),
                passed: true,
                samples: vec![],
            }),
        }
    }
    if let Some(limit) = rules.max_staleness {
        let limit_text = crate::duration::format_duration(limit);
        let (observed, passed) = match stats.max_event_ts {
            Some(newest) => {
                let lag = (end - newest).to_std().unwrap_or_default();
                (
                    format!("{} (newest event {})", crate::duration::format_duration(lag), newest.to_rfc3339()),
                    lag <= limit,
                )
            }
            None => ("no rows in the window".to_owned(), false),
        };
        out.push(RuleResult {
            rule: "max_staleness".into(),
            feature: None,
            observed,
            threshold: format!("<= {limit_text}"),
            passed,
            samples: vec![],
        });
    }
    out
}

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
            let source = project.data_source(&view.source)?.clone();
            let join_keys = project.join_keys(&view)?;
            let previous = project.registry().view_state.get(&name).and_then(|s| previous_run(&s.runs, start, end));
            out.push(self.check_window(&view, &source, &join_keys, start, end, previous).await?);
        }
        Ok(out)
    }

    pub(crate) async fn check_window(
        &self,
        view: &FeatureView,
        source: &DataSource,
        join_keys: &[JoinKey],
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
        previous: Option<PreviousRun>,
    ) -> Result<ValidationReport> {
        let schema = self.offline_store().source_schema(source).await?;
        let (mut results, warnings) = schema_contract(view, source, &schema);
        let stats = if results.is_empty() {
            let request = StatsRequest {
                view: view.clone(),
                source: source.clone(),
                join_keys: join_keys.to_vec(),
                start,
                end,
                samples: 5,
            };
            self.offline_store().window_stats(request).await?
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
        if !stats.new_columns.is_empty() {
            let text = stats.new_columns.iter().map(|(c, f)| format!("{c} (in {f})")).collect::<Vec<_>>().join(", ");
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
            results = evaluate(view, &stats, end, previous);
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

/// The newest successful run over a window of the same length.
pub(crate) fn previous_run(
    runs: &[crate::registry::RunRecord],
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
) -> Option<PreviousRun> {
    let len = start.map(|s| end - s)?;
    runs.iter()
        .rev()
        .find(|r| r.outcome == crate::registry::RunOutcome::Succeeded && r.start.map(|s| r.end - s) == Some(len))
        .map(|r| PreviousRun { rows: r.rows_read })
}
