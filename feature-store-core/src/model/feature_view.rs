use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Field, Tags, ValidationRules, built, check_name};
use crate::{Result, ValueType};

/// A named group of features read from one source and keyed by zero or more
/// entities. With no entities the view is joined on time alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FeatureView {
    /// Unique name within the project.
    pub name: String,
    /// Entity names; the view's key is the concatenation of their join keys.
    #[serde(default)]
    pub entities: Vec<String>,
    /// Name of the data source.
    pub source: String,
    /// The features. Left empty in a definition, it is inferred from the source at apply.
    #[serde(default)]
    pub schema: Vec<Field>,
    /// How far back a value may be and still count; `None` is unlimited.
    #[serde(default, with = "crate::duration::ttl_serde", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Whether the view is materialized to and served from the online store.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub online: bool,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Team or person responsible.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// Data-quality rules checked before each window is materialized.
    #[serde(default, skip_serializing_if = "ValidationRules::is_empty")]
    pub validation: ValidationRules,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl FeatureView {
    /// Starts building a view over `source`.
    pub fn builder(name: impl Into<String>, source: impl Into<String>) -> FeatureViewBuilder {
        FeatureViewBuilder {
            view: FeatureView {
                name: name.into(),
                entities: Vec::new(),
                source: source.into(),
                schema: Vec::new(),
                ttl: None,
                online: true,
                validation: ValidationRules::default(),
                description: String::new(),
                owner: String::new(),
                tags: Tags::new(),
            },
        }
    }

    /// The feature named `name`, if the view has it.
    pub fn feature(&self, name: &str) -> Option<&Field> {
        self.schema.iter().find(|f| f.name == name)
    }

    /// Feature names in schema order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.schema.iter().map(|f| f.name.as_str())
    }

    pub(crate) fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e);
        }
        if self.name.contains("__") {
            out.push(format!(
                "view name \"{}\" contains \"__\", which is reserved as the separator of full feature names (view__feature)",
                self.name
            ));
        }
        let mut seen = BTreeSet::new();
        for e in &self.entities {
            if !seen.insert(e) {
                out.push(format!("entity \"{e}\" is listed twice"));
            }
        }
        let mut seen = BTreeSet::new();
        for f in &self.schema {
            if let Err(e) = check_name(&f.name) {
                out.push(format!("feature: {e}"));
            }
            if !seen.insert(&f.name) {
                out.push(format!("feature \"{}\" is declared twice in the schema", f.name));
            }
            if matches!(&f.dtype, ValueType::List(inner) if inner.is_list()) {
                out.push(format!("feature \"{}\": lists of lists are not supported", f.name));
            }
        }
        // With a schema still to be inferred, the rules are checked after inference.
        if !self.schema.is_empty() {
            out.extend(self.validation.check(&self.schema));
        }
        out
    }
}

/// Builds a [`FeatureView`]; validation happens in [`FeatureViewBuilder::build`].
#[derive(Debug, Clone)]
pub struct FeatureViewBuilder {
    view: FeatureView,
}

impl FeatureViewBuilder {
    /// Adds an entity by name.
    pub fn entity(mut self, name: impl Into<String>) -> Self {
        self.view.entities.push(name.into());
        self
    }

    /// Adds a feature.
    pub fn feature(mut self, name: impl Into<String>, dtype: ValueType) -> Self {
        self.view.schema.push(Field::new(name, dtype));
        self
    }

    /// Adds a fully described field.
    pub fn field(mut self, field: Field) -> Self {
        self.view.schema.push(field);
        self
    }

    /// Sets the ttl; zero means unlimited.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.view.ttl = (!ttl.is_zero()).then_some(ttl);
        self
    }

    /// Sets whether the view is served online.
    pub fn online(mut self, online: bool) -> Self {
        self.view.online = online;
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

    /// Sets the data-quality rules.
    pub fn validation(mut self, rules: ValidationRules) -> Self {
        self.view.validation = rules;
        self
    }

    /// Validates and returns the view.
    pub fn build(self) -> Result<FeatureView> {
        let problems = self.view.check();
        let name = self.view.name.clone();
        built("feature view", &name, self.view, problems)
    }
}
