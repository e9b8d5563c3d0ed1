use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Aggregation, Field, Tags, ValidationRules, built, check_name};
use crate::duration::format_duration;
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
    /// Time-window aggregations of the source's events; when present they
    /// define the features (the schema follows from them at apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregations: Vec<Aggregation>,
    /// The hop of the aggregations' windows: each window ends at the entity
    /// time floored to a multiple of it. `None` is a continuous window,
    /// ending at the entity time itself (offline only).
    #[serde(default, with = "super::aggregation::interval_serde", skip_serializing_if = "Option::is_none")]
    pub aggregation_interval: Option<Duration>,
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
                aggregations: Vec::new(),
                aggregation_interval: None,
            },
        }
    }

    /// Whether the view aggregates events (`aggregations:`) rather than serving rows as they are.
    pub fn is_aggregation(&self) -> bool {
        !self.aggregations.is_empty()
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
        if self.is_aggregation() {
            out.extend(self.check_aggregations());
        } else if let Some(i) = self.aggregation_interval {
            out.push(format!(
                "aggregation_interval {} applies to views with aggregations only; add aggregations or remove it",
                format_duration(i)
            ));
        } else if !self.schema.is_empty() {
            // With a schema still to be inferred, the rules are checked after inference.
            out.extend(self.validation.check(&self.schema));
        }
        out
    }

    fn check_aggregations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let interval = self.aggregation_interval;
        if let Some(i) = interval {
            if i.is_zero() {
                out.push("aggregation_interval must be longer than zero; remove it for continuous windows".into());
            } else if i.subsec_nanos() != 0 {
                out.push(format!("aggregation_interval {} is not a whole number of seconds", format_duration(i)));
            }
        }
        if let Some(ttl) = self.ttl {
            out.push(format!(
                "ttl {} does not apply to an aggregation view: each aggregation's window bounds the events it covers; remove ttl",
                format_duration(ttl)
            ));
        }
        if self.online && interval.is_none() {
            out.push(
                "an aggregation view served online (online: true, the default) needs aggregation_interval (e.g. 5m): \
                 served values are tiles of that interval, and training uses the same hopping windows so both agree; \
                 add aggregation_interval, or set online: false to train on continuous windows"
                    .into(),
            );
        }
        if !self.validation.is_empty() {
            out.push(
                "validation rules are not supported on aggregation views yet (they check materialized rows, and an aggregation view materializes tiles); remove validation"
                    .into(),
            );
        }
        let mut seen = BTreeSet::new();
        for a in &self.aggregations {
            out.extend(a.check(interval));
            let name = a.output_name();
            if !seen.insert(name.clone()) {
                out.push(format!(
                    "aggregation \"{name}\" is declared twice; give one of them another name (name: ...)"
                ));
            }
        }
        // A stored view carries the schema derived from its aggregations.
        for f in &self.schema {
            if !seen.contains(&f.name) {
                out.push(format!(
                    "feature \"{}\" in the schema is not one of the aggregations; an aggregation view's schema follows from its aggregations, so remove the schema",
                    f.name
                ));
            }
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

    /// Adds a time-window aggregation; its output is a feature of the view.
    pub fn aggregation(mut self, aggregation: Aggregation) -> Self {
        self.view.aggregations.push(aggregation);
        self
    }

    /// Sets the hop of the aggregations' windows (see [`FeatureView::aggregation_interval`]).
    pub fn aggregation_interval(mut self, interval: Duration) -> Self {
        self.view.aggregation_interval = Some(interval);
        self
    }

    /// Validates and returns the view.
    pub fn build(self) -> Result<FeatureView> {
        let problems = self.view.check();
        let name = self.view.name.clone();
        built("feature view", &name, self.view, problems)
    }
}
