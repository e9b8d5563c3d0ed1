//! The objects users define: entities, data sources, feature views, feature
//! services, and the feature references that select from them.

mod aggregation;
mod data_source;
mod entity;
mod feature_ref;
mod feature_service;
mod feature_view;
mod on_demand;
mod stream_source;
mod validation;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use aggregation::{AggregateFunction, Aggregation, MAX_LAST_N};
pub use data_source::{DataSource, DataSourceBuilder, TimePartition};
pub use entity::{Entity, EntityBuilder, JoinKey};
pub use feature_ref::{FeatureRef, FeatureSelection};
pub use feature_service::{FeatureService, FeatureServiceBuilder};
pub use feature_view::{FeatureView, FeatureViewBuilder};
pub use on_demand::{OnDemandFeature, OnDemandFeatureView, OnDemandFeatureViewBuilder, RequestSource, UdfSignature};
pub use stream_source::{
    DEFAULT_OFFLINE_FLUSH, DeadLetterTarget, EpochUnit, StartPosition, StreamKind, StreamSource, StreamSourceBuilder,
};
pub use validation::{DriftMethod, DriftRule, NewColumns, Number, ValidationRules};

use crate::ValueType;

/// Free-form key/value labels attached to an object.
pub type Tags = BTreeMap<String, String>;

/// A typed column of a feature view (a feature) or of an entity (a join key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Field {
    /// Column name as it appears in retrieval output.
    pub name: String,
    /// Value type.
    pub dtype: ValueType,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl Field {
    /// A field with no description or tags.
    pub fn new(name: impl Into<String>, dtype: ValueType) -> Self {
        Self { name: name.into(), dtype, description: String::new(), tags: Tags::new() }
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// Prefix of the output columns of inputs fetched only for on-demand
/// features (dropped before results are returned); no name may start with it.
pub(crate) const HIDDEN_INPUT_PREFIX: &str = "__on_demand_input__";

/// Checks a name used for an object, a feature or a column.
///
/// Names become column names, Redis key parts and SQL identifiers, so they
/// are restricted to ASCII letters, digits and underscores, not starting with
/// a digit; source columns with other names are renamed with `field_mapping`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 255 {
        return Err(format!("name \"{name}\" is longer than 255 characters"));
    }
    if name.starts_with(HIDDEN_INPUT_PREFIX) {
        return Err(format!(
            "name \"{name}\" starts with \"{HIDDEN_INPUT_PREFIX}\", which retrieval reserves for the inputs of \
             on-demand features"
        ));
    }
    let mut chars = name.chars();
    let first = chars.next().unwrap_or('_');
    if !(first.is_ascii_alphabetic() || first == '_') || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "invalid name \"{name}\": use ASCII letters, digits and underscores, not starting with a digit"
        ));
    }
    Ok(())
}

/// Builders report every problem at once, with the same text as registry validation.
pub(crate) fn built<T>(kind: &str, name: &str, value: T, problems: Vec<String>) -> crate::Result<T> {
    if problems.is_empty() {
        return Ok(value);
    }
    let object = format!("{kind} \"{name}\"");
    Err(crate::Error::Invalid {
        problems: problems.into_iter().map(|m| crate::Problem::new(None, object.clone(), m)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names() {
        assert!(check_name("driver_stats_2").is_ok());
        assert!(check_name("_x").is_ok());
        for bad in ["", "2fast", "conv rate", "a:b", "a-b", "é", "__on_demand_input__x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
