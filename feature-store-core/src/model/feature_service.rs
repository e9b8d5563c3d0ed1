use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{FeatureSelection, Tags, built, check_name};
use crate::Result;

/// A named, versioned set of features a model consumes, written as
/// `view:feature` references or whole `view`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FeatureService {
    /// Unique name within the project.
    pub name: String,
    /// Feature references, as written.
    pub features: Vec<String>,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Team or person responsible.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl FeatureService {
    /// Starts building a service.
    pub fn builder(name: impl Into<String>) -> FeatureServiceBuilder {
        FeatureServiceBuilder {
            service: FeatureService {
                name: name.into(),
                features: Vec::new(),
                description: String::new(),
                owner: String::new(),
                tags: Tags::new(),
            },
        }
    }

    /// The parsed selections; invalid entries are reported by validation.
    pub fn selections(&self) -> Vec<FeatureSelection> {
        self.features.iter().filter_map(|f| f.parse().ok()).collect()
    }

    pub(crate) fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e);
        }
        if self.features.is_empty() {
            out.push("a feature service needs at least one feature (features: [view:feature])".into());
        }
        let mut seen = BTreeSet::new();
        for f in &self.features {
            match f.parse::<FeatureSelection>() {
                Ok(sel) => {
                    if !seen.insert(sel.to_string()) {
                        out.push(format!("feature \"{f}\" is listed twice"));
                    }
                }
                Err(e) => out.push(e.to_string()),
            }
        }
        out
    }
}

/// Builds a [`FeatureService`]; validation happens in [`FeatureServiceBuilder::build`].
#[derive(Debug, Clone)]
pub struct FeatureServiceBuilder {
    service: FeatureService,
}

impl FeatureServiceBuilder {
    /// Adds a `view:feature` reference or a whole `view`.
    pub fn feature(mut self, reference: impl Into<String>) -> Self {
        self.service.features.push(reference.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.service.description = d.into();
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, o: impl Into<String>) -> Self {
        self.service.owner = o.into();
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.service.tags.insert(k.into(), v.into());
        self
    }

    /// Validates and returns the service.
    pub fn build(self) -> Result<FeatureService> {
        let problems = self.service.check();
        let name = self.service.name.clone();
        built("feature service", &name, self.service, problems)
    }
}
