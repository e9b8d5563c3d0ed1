//! The statistics capability of an offline store: what data-quality gates
//! and reference profiles ask of a window of a view's rows, computed in one
//! pass by the backend and checked by `crate::quality`.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::profile::{FeatureProfile, Profile};
use crate::Result;
use crate::model::{DataSource, FeatureView, JoinKey};

/// Window statistics and profiles; a backend offers them through
/// [`super::OfflineStore::statistics`].
#[async_trait]
pub trait OfflineStatistics: Send + Sync + Debug {
    /// Statistics of a view's rows in a window, in one pass: row count, newest
    /// event time, per-feature nulls/range/allowed-value counts, drift bins
    /// against the request's reference, and the schema contract file by file.
    async fn window_stats(&self, request: StatsRequest) -> Result<WindowStats>;

    /// A summary of a view's rows in a window (see [`Profile`]).
    async fn profile(&self, request: StatsRequest) -> Result<Profile>;
}

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
    /// The reference profile drift rules compare with; its bins are counted.
    pub reference: Option<Profile>,
}

impl StatsRequest {
    /// A request for `view` over `[start, end]`.
    pub fn new(
        view: FeatureView,
        source: DataSource,
        join_keys: Vec<JoinKey>,
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
    ) -> Self {
        Self { view, source, join_keys, start, end, samples: 5, reference: None }
    }

    /// The features a drift check bins, with their reference profiles.
    pub fn drift_features(&self) -> Vec<(&crate::model::Field, &FeatureProfile)> {
        let (Some(rule), Some(reference)) = (&self.view.validation.drift, &self.reference) else {
            return Vec::new();
        };
        self.view
            .schema
            .iter()
            .filter(|f| rule.features.is_empty() || rule.features.contains(&f.name))
            .filter_map(|f| {
                let p = reference.features.get(&f.name)?;
                (p.dtype == f.dtype.to_string() && p.reference_bins().is_some()).then_some((f, p))
            })
            .collect()
    }
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
    /// Non-null values per bin of the reference profile (drift rules only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bins: Vec<u64>,
    /// Sample offending rows per rule (`ranges`, `allowed_values`, `max_null_fraction`), as JSON objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<String, Vec<serde_json::Value>>,
}
