//! Data-quality rules declared on a feature view (`validation:` in YAML).
//!
//! The rules are checked on every window before it is materialized (see
//! `crate::quality`), and on demand. Thresholds are inclusive: an observed
//! value equal to the threshold passes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::Field;

/// A float that compares by bits, so rules can live in `Eq` definitions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Number(pub f64);

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}

impl Eq for Number {}

/// The rules of one view. Feature names may be `"*"` (every feature without its own entry)
/// in `max_null_fraction`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ValidationRules {
    /// Largest share of null values per feature, in [0, 1].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_null_fraction: BTreeMap<String, Number>,
    /// Inclusive `[min, max]` per numeric feature; `null` leaves a side open.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ranges: BTreeMap<String, (Option<Number>, Option<Number>)>,
    /// The only values a feature may take (compared as text; nulls are not checked here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "scalars_as_text")]
    pub allowed_values: BTreeMap<String, Vec<String>>,
    /// Largest relative change of the window's row count against the previous
    /// successful run over a window of the same length (0.2 = ±20 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_row_count_change: Option<Number>,
    /// Largest gap between the window's newest event time and the window's end.
    #[serde(default, with = "crate::duration::ttl_serde", skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<Duration>,
    /// Distribution shift of each window against the view's stored reference profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftRule>,
    /// Source columns the registry does not know: reported (`allow`, the default) or a failure (`reject`).
    #[serde(default, skip_serializing_if = "NewColumns::is_allow")]
    pub new_columns: NewColumns,
}

/// `drift: {method: psi, threshold: 0.2, features: [...]}`: fails a feature
/// whose distribution moved further than `threshold` from the reference
/// profile (see `crate::offline::profile`). Without `features`, every
/// numeric, string and bool feature is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DriftRule {
    /// How drift is measured.
    #[serde(default)]
    pub method: DriftMethod,
    /// Largest drift that passes (inclusive).
    pub threshold: Number,
    /// Features to check; empty is all that can be binned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Windows with fewer rows are not measured (noted, not failed).
    #[serde(default = "default_min_rows", skip_serializing_if = "is_default_min_rows")]
    pub min_rows: u64,
}

fn default_min_rows() -> u64 {
    100
}

fn is_default_min_rows(n: &u64) -> bool {
    *n == default_min_rows()
}

impl DriftRule {
    /// A PSI rule with `threshold` over every binnable feature.
    pub fn psi(threshold: f64) -> Self {
        Self {
            method: DriftMethod::Psi,
            threshold: Number(threshold),
            features: Vec::new(),
            min_rows: default_min_rows(),
        }
    }

    /// Restricts the rule to `features`.
    pub fn with_features<S: Into<String>>(mut self, features: impl IntoIterator<Item = S>) -> Self {
        self.features = features.into_iter().map(Into::into).collect();
        self
    }
}

/// Drift measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DriftMethod {
    /// Population stability index over the reference profile's bins.
    #[default]
    Psi,
}

/// What to do with source columns that are neither keys, timestamps nor features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NewColumns {
    /// Report them as a warning.
    #[default]
    Allow,
    /// Fail validation.
    Reject,
}

impl NewColumns {
    fn is_allow(&self) -> bool {
        *self == Self::Allow
    }
}

fn scalars_as_text<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let raw: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, values)| {
            let values = values
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s),
                    serde_json::Value::Number(n) => Ok(n.to_string()),
                    serde_json::Value::Bool(b) => Ok(b.to_string()),
                    other => Err(serde::de::Error::custom(format!(
                        "allowed_values.{k}: {other} is not a string, number or boolean"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((k, values))
        })
        .collect()
}

impl ValidationRules {
    /// True when no rule is declared.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The null-fraction limit of `feature`: its own entry, else `"*"`.
    pub fn null_limit(&self, feature: &str) -> Option<f64> {
        self.max_null_fraction.get(feature).or_else(|| self.max_null_fraction.get("*")).map(|n| n.0)
    }

    /// Problems with the rules themselves, against the view's features.
    pub(crate) fn check(&self, schema: &[Field]) -> Vec<String> {
        let mut out = Vec::new();
        let feature = |name: &str| schema.iter().find(|f| f.name == name);
        let unknown = |rule: &str, name: &str| {
            format!(
                "validation.{rule}: \"{name}\" is not a feature of the view (features: {})",
                schema.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        for (name, limit) in &self.max_null_fraction {
            if name != "*" && feature(name).is_none() {
                out.push(unknown("max_null_fraction", name));
            }
            if !(0.0..=1.0).contains(&limit.0) {
                out.push(format!("validation.max_null_fraction.{name}: {} is not a fraction in [0, 1]", limit.0));
            }
        }
        for (name, (lo, hi)) in &self.ranges {
            match feature(name) {
                None => out.push(unknown("ranges", name)),
                Some(f) if !f.dtype.is_numeric() => {
                    out.push(format!("validation.ranges.{name}: the feature is {}, not a number", f.dtype));
                }
                Some(_) => {}
            }
            if let (Some(lo), Some(hi)) = (lo, hi)
                && lo.0 > hi.0
            {
                out.push(format!("validation.ranges.{name}: the minimum {} is above the maximum {}", lo.0, hi.0));
            }
            if lo.is_none() && hi.is_none() {
                out.push(format!("validation.ranges.{name}: give at least one bound, e.g. [0, null]"));
            }
        }
        for (name, values) in &self.allowed_values {
            if feature(name).is_none() {
                out.push(unknown("allowed_values", name));
            }
            if values.is_empty() {
                out.push(format!("validation.allowed_values.{name}: the list is empty"));
            }
        }
        if let Some(d) = &self.drift {
            if !(d.threshold.0 > 0.0 && d.threshold.0.is_finite()) {
                out.push(format!("validation.drift.threshold: {} must be a positive number", d.threshold.0));
            }
            for name in &d.features {
                match feature(name) {
                    None => out.push(unknown("drift.features", name)),
                    Some(f) if f.dtype.binning() == crate::value_type::Binning::None => {
                        out.push(format!(
                            "validation.drift.features: \"{name}\" is {}; drift is measured on numbers, strings and bools",
                            f.dtype
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(c) = self.max_row_count_change
            && !(c.0 >= 0.0 && c.0.is_finite())
        {
            out.push(format!("validation.max_row_count_change: {} must be a non-negative fraction", c.0));
        }
        out
    }
}
