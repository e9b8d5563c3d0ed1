//! Reference profiles and drift.
//!
//! A profile summarizes a view's features over a window the operator trusts
//! (`feature-store profile VIEW`); it is stored with the view's state in the
//! registry. A `drift` rule then compares each later window with it by the
//! population stability index (PSI) over the profile's bins:
//!
//! - numeric features: bins cut at the reference minimum, deciles and just
//!   above the maximum, so each inner bin holds about a tenth of the
//!   reference and values outside the reference's range land in the two
//!   outer bins (empty in the reference) whatever their distance; integer
//!   features are cut at whole numbers;
//! - string and bool features: one bin per value among the reference's 20 most
//!   frequent, plus one for every other value;
//! - both: one more bin for nulls, so a null burst is drift too, and a
//!   feature that was all null in the reference still has bins.
//!
//! Windows with fewer rows than the rule's `min_rows` (default 100), empty
//! ones included, are not measured: PSI of a handful of rows is noise.
//!
//! `PSI = sum((a - e) * ln(a / e))` over bins, with `e` and `a` the reference
//! and window shares; shares are floored at [`PSI_FLOOR`] so an empty bin
//! counts as a large shift rather than an infinite one. Common reading:
//! below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 a large one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ValueType;

/// Smallest share a bin is given when computing PSI.
pub const PSI_FLOOR: f64 = 1e-4;

/// Quantiles a profile records for numeric features.
pub const PROFILE_QUANTILES: [f64; 9] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99];

/// Most frequent values kept per string or bool feature.
pub const TOP_VALUES: usize = 20;

/// Cut points of the numeric bins: the reference deciles.
pub const DECILES: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// A stored summary of one view over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Profile {
    /// The view.
    pub view: String,
    /// When it was computed.
    pub computed_at: DateTime<Utc>,
    /// Window start (inclusive); `None` is all history.
    pub start: Option<DateTime<Utc>>,
    /// Window end (inclusive).
    pub end: DateTime<Utc>,
    /// Rows in the window.
    pub rows: u64,
    /// Per feature, by name.
    pub features: BTreeMap<String, FeatureProfile>,
}

impl Profile {
    /// An empty profile of `view` computed now.
    pub fn new(view: impl Into<String>, start: Option<DateTime<Utc>>, end: DateTime<Utc>, rows: u64) -> Self {
        Self { view: view.into(), computed_at: Utc::now(), start, end, rows, features: BTreeMap::new() }
    }
}

/// Summary of one feature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FeatureProfile {
    /// The feature's type when profiled; a drift check skips a feature whose type changed since.
    pub dtype: String,
    /// Non-null values.
    pub count: u64,
    /// Null values.
    pub nulls: u64,
    /// `nulls / rows`.
    pub null_fraction: f64,
    /// Smallest value (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest value (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Mean (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Population standard deviation (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Approximate quantiles (t-digest), `"p50"` style keys (numeric).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quantiles: BTreeMap<String, f64>,
    /// Bins for drift (numeric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    /// The most frequent values and their counts, most frequent first (string, bool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_values: Vec<(String, u64)>,
    /// Non-null values outside `top_values`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Numeric bins: `cuts` ascending; bin 0 is `x < cuts[0]`, bin i is
/// `cuts[i-1] <= x < cuts[i]`, the last is `x >= cuts[last]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Histogram {
    /// Cut points, strictly ascending.
    pub cuts: Vec<f64>,
    /// Non-null values per bin (`cuts.len() + 1` bins).
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Bins with the given cut points; duplicates and non-finite cuts are dropped.
    pub fn with_cuts(mut cuts: Vec<f64>) -> Self {
        cuts.retain(|c| c.is_finite());
        cuts.sort_by(f64::total_cmp);
        cuts.dedup();
        let counts = vec![0; cuts.len() + 1];
        Self { cuts, counts }
    }
}

pub use crate::value_type::Binning;

/// How a feature of type `dtype` is binned.
pub fn binning(dtype: &ValueType) -> Binning {
    dtype.binning()
}

/// The drift of one feature: PSI and the bin that moved most.
#[derive(Debug, Clone)]
pub(crate) struct Drift {
    pub(crate) psi: f64,
    /// Label of the bin with the largest share change, its reference and window shares.
    pub(crate) largest: Option<(String, f64, f64)>,
}

/// PSI between reference and window counts given as (label, count) per bin.
pub(crate) fn psi(reference: &[(String, u64)], window: &[u64]) -> Drift {
    let total_ref: u64 = reference.iter().map(|(_, n)| n).sum();
    let total_win: u64 = window.iter().sum();
    let share = |n: u64, total: u64| if total == 0 { 0.0 } else { n as f64 / total as f64 };
    let mut sum = 0.0;
    let mut largest: Option<(String, f64, f64)> = None;
    for ((label, r), w) in reference.iter().zip(window) {
        let e_raw = share(*r, total_ref);
        let a_raw = share(*w, total_win);
        let (e, a) = (e_raw.max(PSI_FLOOR), a_raw.max(PSI_FLOOR));
        sum += (a - e) * (a / e).ln();
        if largest.as_ref().is_none_or(|(_, le, la)| (a_raw - e_raw).abs() > (la - le).abs()) {
            largest = Some((label.clone(), e_raw, a_raw));
        }
    }
    Drift { psi: sum, largest }
}

/// A number for labels: at most 6 significant decimals, no trailing zeros.
pub(crate) fn short(v: f64) -> String {
    let t = format!("{v:.6}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    if t == "-0" { "0".to_owned() } else { t.to_owned() }
}

impl FeatureProfile {
    /// The reference bins as (label, count), nulls last; `None` when the
    /// feature is not binned (lists, bytes, timestamps).
    pub(crate) fn reference_bins(&self) -> Option<Vec<(String, u64)>> {
        let mut out = Vec::new();
        if let Some(h) = &self.histogram {
            // The last cut sits just above the reference maximum: label that bin "> max".
            let above_max = self.max.filter(|m| h.cuts.last() == Some(&m.next_up()));
            for (i, n) in h.counts.iter().enumerate() {
                let lo = i.checked_sub(1).map(|j| h.cuts[j]);
                let hi = h.cuts.get(i).copied();
                let label = match (lo, hi) {
                    (None, Some(hi)) => format!("< {}", short(hi)),
                    (Some(lo), Some(hi)) if Some(hi) == above_max.map(f64::next_up) && above_max.is_some() => {
                        format!("[{}, {}]", short(lo), short(above_max.unwrap_or(hi)))
                    }
                    (Some(lo), Some(hi)) => format!("[{}, {})", short(lo), short(hi)),
                    (Some(_), None) if above_max.is_some() => format!("> {}", short(above_max.unwrap_or_default())),
                    (Some(lo), None) => format!(">= {}", short(lo)),
                    (None, None) => "all values".to_owned(),
                };
                out.push((label, *n));
            }
        } else if !self.top_values.is_empty()
            || self.other_count > 0
            || self.dtype.parse::<ValueType>().is_ok_and(|t| binning(&t) == Binning::Categorical)
        {
            out.extend(self.top_values.iter().map(|(v, n)| (format!("\"{v}\""), *n)));
            out.push(("other values".to_owned(), self.other_count));
        } else {
            return None;
        }
        out.push(("null".to_owned(), self.nulls));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_equal_shares_and_grows_with_shift() {
        let reference: Vec<(String, u64)> = (0..4).map(|i| (i.to_string(), 100)).collect();
        assert!(psi(&reference, &[10, 10, 10, 10]).psi.abs() < 1e-12);
        let shifted = psi(&reference, &[0, 10, 10, 80]);
        assert!(shifted.psi > 0.5, "{}", shifted.psi);
        assert_eq!(shifted.largest.unwrap().0, "3");
        // An empty window bin is floored, not infinite.
        assert!(shifted.psi.is_finite());
    }

    #[test]
    fn cuts_are_deduplicated_and_sorted() {
        let h = Histogram::with_cuts(vec![3.0, 1.0, 1.0, f64::NAN, 2.0]);
        assert_eq!(h.cuts, vec![1.0, 2.0, 3.0]);
        assert_eq!(h.counts.len(), 4);
    }
}
