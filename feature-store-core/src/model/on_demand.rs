//! Request-time features: request sources (values a caller passes with each
//! request) and on-demand feature views (SQL scalar expressions over feature
//! views and request sources, evaluated by one engine offline and online).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Field, Tags, built, check_name};
use crate::{Result, ValueType};

/// Values a caller supplies with each request: entity-table columns in
/// training, request data beside the entity rows when serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RequestSource {
    /// Unique name among sources (data and request) of the project.
    pub name: String,
    /// The fields a request carries.
    pub schema: Vec<Field>,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl RequestSource {
    /// A request source with these fields.
    pub fn new(name: impl Into<String>, schema: Vec<Field>) -> Result<Self> {
        let source = Self { name: name.into(), schema, description: String::new(), tags: Tags::new() };
        let problems = source.check();
        let name = source.name.clone();
        built("request source", &name, source, problems)
    }

    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.schema.iter().find(|f| f.name == name)
    }

    pub(crate) fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e);
        }
        if self.schema.is_empty() {
            out.push("a request source needs at least one field (schema: [{name, dtype}])".into());
        }
        let mut seen = BTreeSet::new();
        for f in &self.schema {
            if let Err(e) = check_name(&f.name) {
                out.push(format!("field: {e}"));
            }
            if !seen.insert(f.name.as_str()) {
                out.push(format!("field \"{}\" is listed twice", f.name));
            }
        }
        out
    }
}

/// One feature of an on-demand view: a SQL scalar expression and the type it is declared to have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OnDemandFeature {
    /// Output name.
    pub name: String,
    /// Declared type; the expression's type must equal it or widen to it losslessly.
    pub dtype: ValueType,
    /// A DataFusion SQL scalar expression over the view's inputs.
    pub expression: String,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl OnDemandFeature {
    /// A feature computed by `expression`.
    pub fn new(name: impl Into<String>, dtype: ValueType, expression: impl Into<String>) -> Self {
        Self { name: name.into(), dtype, expression: expression.into(), description: String::new(), tags: Tags::new() }
    }
}

/// A user-defined function an on-demand view calls, as the process that
/// applied the view had it registered: a serving process whose function
/// differs (or is missing) refuses the view instead of computing something else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UdfSignature {
    /// The name expressions call it by.
    pub name: String,
    /// Argument types as the expression called it (Arrow type names).
    pub args: Vec<String>,
    /// Return type for those arguments (Arrow type name).
    pub returns: String,
    /// For functions defined in Python, a hash of the function's source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_hash: Option<String>,
}

impl UdfSignature {
    /// A signature: argument and return types as Arrow type names.
    pub fn new(
        name: impl Into<String>,
        args: Vec<String>,
        returns: impl Into<String>,
        source_hash: Option<String>,
    ) -> Self {
        Self { name: name.into(), args, returns: returns.into(), source_hash }
    }
}

impl std::fmt::Display for UdfSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({}) -> {}", self.name, self.args.join(", "), self.returns)?;
        if let Some(h) = &self.source_hash {
            write!(f, " [source {}]", &h[..h.len().min(12)])?;
        }
        Ok(())
    }
}

/// Features computed at request time from feature views and request sources.
///
/// Inputs are named by feature name, or `view__feature` (`source__field`)
/// where two inputs share a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OnDemandFeatureView {
    /// Unique name among feature views (plain, aggregation and on-demand).
    pub name: String,
    /// Feature views and request sources whose values the expressions read.
    pub sources: Vec<String>,
    /// The computed features.
    pub features: Vec<OnDemandFeature>,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Team or person responsible.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// User-defined functions the expressions call, recorded at apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udfs: Vec<UdfSignature>,
}

impl OnDemandFeatureView {
    /// Starts building a view over `sources`.
    pub fn builder(name: impl Into<String>) -> OnDemandFeatureViewBuilder {
        OnDemandFeatureViewBuilder {
            view: OnDemandFeatureView {
                name: name.into(),
                sources: Vec::new(),
                features: Vec::new(),
                description: String::new(),
                owner: String::new(),
                tags: Tags::new(),
                udfs: Vec::new(),
            },
        }
    }

    /// The feature named `name`.
    pub fn feature(&self, name: &str) -> Option<&OnDemandFeature> {
        self.features.iter().find(|f| f.name == name)
    }

    /// Feature names in definition order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    pub(crate) fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e);
        }
        if self.sources.is_empty() {
            out.push("an on-demand feature view needs at least one source (sources: [view, request_source])".into());
        }
        let mut seen = BTreeSet::new();
        for s in &self.sources {
            if !seen.insert(s.as_str()) {
                out.push(format!("source \"{s}\" is listed twice"));
            }
        }
        if self.features.is_empty() {
            out.push(
                "an on-demand feature view needs at least one feature (features: [{name, dtype, expression}])".into(),
            );
        }
        let mut seen = BTreeSet::new();
        for f in &self.features {
            if let Err(e) = check_name(&f.name) {
                out.push(format!("feature: {e}"));
            }
            if !seen.insert(f.name.as_str()) {
                out.push(format!("feature \"{}\" is listed twice", f.name));
            }
            if f.expression.trim().is_empty() {
                out.push(format!("feature \"{}\": the expression is empty", f.name));
            }
        }
        out
    }
}

/// Builds an [`OnDemandFeatureView`]; names and shapes are checked in
/// [`OnDemandFeatureViewBuilder::build`], expressions at apply (against the inputs' types).
#[derive(Debug, Clone)]
pub struct OnDemandFeatureViewBuilder {
    view: OnDemandFeatureView,
}

impl OnDemandFeatureViewBuilder {
    /// Adds a source: a feature view or a request source.
    pub fn source(mut self, name: impl Into<String>) -> Self {
        self.view.sources.push(name.into());
        self
    }

    /// Adds a feature computed by `expression`.
    pub fn feature(mut self, name: impl Into<String>, dtype: ValueType, expression: impl Into<String>) -> Self {
        self.view.features.push(OnDemandFeature::new(name, dtype, expression));
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.view.description = d.into();
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, o: impl Into<String>) -> Self {
        self.view.owner = o.into();
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.view.tags.insert(k.into(), v.into());
        self
    }

    /// Validates and returns the view.
    pub fn build(self) -> Result<OnDemandFeatureView> {
        let problems = self.view.check();
        let name = self.view.name.clone();
        built("on-demand feature view", &name, self.view, problems)
    }
}
