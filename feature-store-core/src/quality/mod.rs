//! Data-quality gates: statistics of a view's window, computed by the offline
//! store in one streaming pass, checked against the view's
//! [`ValidationRules`]. Materialization runs the gate before writing a window;
//! `FeatureStore::validate` runs it on demand. Reference profiles for drift
//! rules are in [`profile`].

/// Reference profiles for drift rules: the types live beside the statistics contract.
pub mod profile {
    pub use crate::offline::profile::*;
}

pub use crate::offline::statistics::{FeatureStats, StatsRequest, WindowStats};

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::describe_arrow;
use crate::model::{DataSource, FeatureView, ValidationRules};
use crate::offline::SourceSchema;
use crate::offline::profile::Profile;

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
        // Only rules over rows count them; the schema contract alone reads no rows.
        let rows = if self.results.iter().all(|r| r.rule == "schema") {
            "schema checked".to_owned()
        } else {
            format!("{} rows", self.rows)
        };
        writeln!(
            f,
            "feature view \"{}\", window {window}, {rows}: {}",
            self.view,
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
    reference: Option<&Profile>,
) -> (Vec<RuleResult>, Vec<String>) {
    let mut warnings = Vec::new();
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
    if let Some(rule) = &rules.drift {
        drift_results(view, rule, stats, reference, &mut out, &mut warnings);
    }
    (out, warnings)
}

fn drift_results(
    view: &FeatureView,
    rule: &crate::model::DriftRule,
    stats: &WindowStats,
    reference: Option<&Profile>,
    out: &mut Vec<RuleResult>,
    warnings: &mut Vec<String>,
) {
    let threshold = format!("psi <= {}", rule.threshold.0);
    let Some(reference) = reference else {
        warnings.push(format!(
            "drift: feature view \"{}\" has no reference profile, so drift was not checked; run `feature-store profile {}` (`store.profile(...)` in Python) over a window you trust",
            view.name, view.name
        ));
        return;
    };
    let when = reference.computed_at.format("%Y-%m-%d %H:%M:%SZ");
    if stats.rows < rule.min_rows {
        warnings.push(format!(
            "drift: not measured on {} row(s), fewer than min_rows {} (PSI of few rows is noise)",
            stats.rows, rule.min_rows
        ));
        return;
    }
    for f in &view.schema {
        if !rule.features.is_empty() && !rule.features.contains(&f.name) {
            continue;
        }
        if rule.features.is_empty() && profile::binning(&f.dtype) == profile::Binning::None {
            continue;
        }
        let Some(p) = reference.features.get(&f.name) else {
            warnings.push(format!(
                "drift: feature \"{}\" is not in the reference profile of {when}; rerun `feature-store profile {}` (`store.profile(...)` in Python)",
                f.name, view.name
            ));
            continue;
        };
        if p.dtype != f.dtype.to_string() {
            warnings.push(format!(
                "drift: feature \"{}\" was {} when profiled ({when}) and is {} now; rerun `feature-store profile {}` (`store.profile(...)` in Python)",
                f.name, p.dtype, f.dtype, view.name
            ));
            continue;
        }
        let Some(bins) = p.reference_bins() else { continue };
        let window = stats.features.get(&f.name).map(|s| s.bins.clone()).unwrap_or_default();
        if window.len() != bins.len() {
            // The store did not count this feature's bins: say so rather than pass silently.
            out.push(RuleResult {
                rule: "drift".into(),
                feature: Some(f.name.clone()),
                observed: "the offline store did not count the reference bins".into(),
                threshold: threshold.clone(),
                passed: false,
                samples: vec![],
            });
            continue;
        }
        let d = profile::psi(&bins, &window);
        let moved = d
            .largest
            .filter(|(_, e, a)| (a - e).abs() >= 0.0005)
            .map(|(label, e, a)| format!("; largest shift {label}: {:.1}% -> {:.1}%", e * 100.0, a * 100.0))
            .unwrap_or_default();
        out.push(RuleResult {
            rule: "drift".into(),
            feature: Some(f.name.clone()),
            observed: format!("psi {:.4} vs the reference profile of {when} ({} rows){moved}", d.psi, reference.rows),
            threshold: threshold.clone(),
            passed: d.psi <= rule.threshold.0,
            samples: vec![],
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(results: Vec<RuleResult>, rows: u64) -> String {
        let end = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let r = ValidationReport {
            view: "v".into(),
            start: None,
            end,
            rows,
            max_event_ts: None,
            results,
            warnings: vec!["columns not in the registry: x".into()],
        };
        r.to_string()
    }

    #[test]
    fn a_report_counts_rows_only_when_a_rule_read_them() {
        assert!(report(vec![], 0).contains(", schema checked: passed"), "{}", report(vec![], 0));
        let nulls = RuleResult {
            rule: "max_null_fraction".into(),
            feature: Some("f".into()),
            observed: "0 (0 of 12 rows)".into(),
            threshold: "<= 0.1".into(),
            passed: true,
            samples: vec![],
        };
        assert!(report(vec![nulls], 12).contains(", 12 rows: passed"));
    }
}
