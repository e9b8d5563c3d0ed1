use serde::{Deserialize, Deserializer, Serialize};

use super::{Tags, built, check_name};
use crate::{Result, ValueType};

/// Something features describe (a driver, a customer), identified by one or
/// more join-key columns. Composite keys are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Entity {
    /// Unique name within the project.
    pub name: String,
    /// Key columns, in order. Their types are declared or inferred from sources at apply.
    pub join_keys: Vec<JoinKey>,
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

/// One join-key column of an entity.
///
/// In YAML either a bare name (`driver_id`) or `{name: driver_id, dtype: int64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JoinKey {
    /// Column name.
    pub name: String,
    /// Declared or inferred type; `None` until inferred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<ValueType>,
}

impl JoinKey {
    /// A join key with an optional declared type.
    pub fn new(name: impl Into<String>, dtype: Option<ValueType>) -> Self {
        Self { name: name.into(), dtype }
    }
}

impl<'de> Deserialize<'de> for JoinKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            name: String,
            #[serde(default)]
            dtype: Option<ValueType>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Full(Full),
        }
        Ok(
            match Raw::deserialize(d)
                .map_err(|_| serde::de::Error::custom("a join key is a column name or {name: ..., dtype: ...}"))?
            {
                Raw::Name(name) => JoinKey { name, dtype: None },
                Raw::Full(f) => JoinKey { name: f.name, dtype: f.dtype },
            },
        )
    }
}

impl Entity {
    /// Starts building an entity.
    pub fn builder(name: impl Into<String>) -> EntityBuilder {
        EntityBuilder { name: name.into(), ..Default::default() }
    }

    /// Join-key column names, in order.
    pub fn join_key_names(&self) -> impl Iterator<Item = &str> {
        self.join_keys.iter().map(|k| k.name.as_str())
    }

    /// Checks what can be checked without the rest of the repo.
    pub(crate) fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e);
        }
        if self.join_keys.is_empty() {
            out.push("an entity needs at least one join key (join_keys: [my_id])".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for k in &self.join_keys {
            if let Err(e) = check_name(&k.name) {
                out.push(format!("join key: {e}"));
            }
            if !seen.insert(&k.name) {
                out.push(format!("join key \"{}\" is listed twice", k.name));
            }
            if let Some(t) = &k.dtype
                && !t.can_be_join_key()
            {
                out.push(format!(
                    "join key \"{}\" has type {t}; join keys must be bool, integer, string, bytes or timestamp",
                    k.name
                ));
            }
        }
        out
    }
}

/// Builds an [`Entity`]; validation happens in [`EntityBuilder::build`].
#[derive(Debug, Default, Clone)]
pub struct EntityBuilder {
    name: String,
    join_keys: Vec<JoinKey>,
    description: String,
    owner: String,
    tags: Tags,
}

impl EntityBuilder {
    /// Adds a join key whose type is inferred from sources at apply.
    pub fn join_key(mut self, name: impl Into<String>) -> Self {
        self.join_keys.push(JoinKey::new(name, None));
        self
    }

    /// Adds a join key with a declared type.
    pub fn typed_join_key(mut self, name: impl Into<String>, dtype: ValueType) -> Self {
        self.join_keys.push(JoinKey::new(name, Some(dtype)));
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, o: impl Into<String>) -> Self {
        self.owner = o.into();
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }

    /// Validates and returns the entity.
    pub fn build(self) -> Result<Entity> {
        let e = Entity {
            name: self.name,
            join_keys: self.join_keys,
            description: self.description,
            owner: self.owner,
            tags: self.tags,
        };
        let problems = e.check();
        let name = e.name.clone();
        built("entity", &name, e, problems)
    }
}
