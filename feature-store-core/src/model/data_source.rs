use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Tags, built, check_name};
use crate::Result;

/// Parquet data that feature views read: one file, a folder (hive-style
/// `key=value/` partitions allowed) or a glob, at a repo-relative path or a
/// URL (`file://`, `s3://`, `memory://`).
///
/// Relative paths are stored as written and resolved against the repo root
/// when read, so a repo can be moved or checked out elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DataSource {
    /// Unique name within the project.
    pub name: String,
    /// Path or URL of the file, folder or glob.
    pub path: String,
    /// File format; only `parquet` is supported.
    #[serde(default = "parquet", skip_serializing_if = "is_parquet")]
    pub format: String,
    /// Column holding each row's event time.
    pub timestamp_field: String,
    /// Column holding when each row was written; breaks ties between equal event times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_timestamp_field: Option<String>,
    /// Source column name → feature or join-key name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_mapping: BTreeMap<String, String>,
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

fn parquet() -> String {
    "parquet".into()
}

fn is_parquet(s: &str) -> bool {
    s == "parquet"
}

impl DataSource {
    /// Starts building a source reading `path` with event times in `timestamp_field`.
    pub fn builder(
        name: impl Into<String>,
        path: impl Into<String>,
        timestamp_field: impl Into<String>,
    ) -> DataSourceBuilder {
        DataSourceBuilder {
            source: DataSource {
                name: name.into(),
                path: path.into(),
                format: parquet(),
                timestamp_field: timestamp_field.into(),
                created_timestamp_field: None,
                field_mapping: BTreeMap::new(),
                description: String::new(),
                owner: String::new(),
                tags: Tags::new(),
            },
        }
    }

    /// The name a source column takes after `field_mapping`.
    pub fn mapped_name<'a>(&'a self, column: &'a str) -> &'a str {
        self.field_mapping.get(column).map(String::as_str).unwrap_or(column)
    }

    /// The source column that supplies `name` (a feature or join key), undoing `field_mapping`.
    pub fn source_column<'a>(&'a self, name: &'a str) -> &'a str {
        self.field_mapping.iter().find(|(_, to)| to.as_str() == name).map(|(from, _)| from.as_str()).unwrap_or(name)
    }

    /// Whether `path` is a glob pattern rather than a file or folder.
    pub fn is_glob(&self) -> bool {
        self.path.contains(['*', '?', '['])
    }

    pub(crate) fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e);
        }
        if self.path.trim().is_empty() {
            out.push("path is empty; give a Parquet file, folder, glob or URL".into());
        }
        if !self.format.eq_ignore_ascii_case("parquet") {
            out.push(format!("format \"{}\" is not supported; only parquet is", self.format));
        }
        if self.timestamp_field.trim().is_empty() {
            out.push("timestamp_field is empty; name the column holding event times".into());
        }
        if self.created_timestamp_field.as_deref() == Some(self.timestamp_field.as_str()) {
            out.push("created_timestamp_field must differ from timestamp_field".into());
        }
        let mut targets = BTreeSet::new();
        for (from, to) in &self.field_mapping {
            if let Err(e) = check_name(to) {
                out.push(format!("field_mapping {from} -> {to}: {e}"));
            }
            if !targets.insert(to) {
                out.push(format!("field_mapping maps two columns to \"{to}\""));
            }
        }
        out
    }
}

/// Builds a [`DataSource`]; validation happens in [`DataSourceBuilder::build`].
#[derive(Debug, Clone)]
pub struct DataSourceBuilder {
    source: DataSource,
}

impl DataSourceBuilder {
    /// Sets the created-timestamp column used to break event-time ties.
    pub fn created_timestamp_field(mut self, field: impl Into<String>) -> Self {
        self.source.created_timestamp_field = Some(field.into());
        self
    }

    /// Renames source column `from` to `to`.
    pub fn map_field(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.source.field_mapping.insert(from.into(), to.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.source.description = d.into();
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, o: impl Into<String>) -> Self {
        self.source.owner = o.into();
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.source.tags.insert(k.into(), v.into());
        self
    }

    /// Validates and returns the source.
    pub fn build(self) -> Result<DataSource> {
        let problems = self.source.check();
        let name = self.source.name.clone();
        built("data source", &name, self.source, problems)
    }
}
