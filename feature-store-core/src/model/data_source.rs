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
    /// A hive partition column derived from the event time, so reads of a
    /// time window skip the partitions (and their files) outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_partition: Option<TimePartition>,
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
                timestamp_partition: None,
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
        if let Some(p) = &self.timestamp_partition {
            out.extend(p.check());
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

/// `timestamp_partition: {column: date, format: "%Y-%m-%d"}`: each value of
/// the hive column `column` names the period (UTC) that holds the event times
/// of every row below it, e.g. `date=2024-05-01/` holds
/// `[2024-05-01T00:00Z, 2024-05-02T00:00Z)`. The period's length is the
/// smallest field in `format` (`%S`, `%M`, `%H`, `%d`/`%j`, `%m`, `%Y`).
/// A value that does not format back to itself is treated as unparsable.
///
/// Declare it only when that holds: a row whose event time lies outside its
/// partition's period (late data filed by arrival date) can be skipped. A
/// value that does not parse with `format` is never skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TimePartition {
    /// The hive partition column (`column=value/` folders).
    pub column: String,
    /// chrono `strftime` format of its values.
    #[serde(default = "default_partition_format")]
    pub format: String,
}

fn default_partition_format() -> String {
    "%Y-%m-%d".into()
}

/// Length of a partition's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

impl TimePartition {
    /// Partitions of `column` in `format`.
    pub fn new(column: impl Into<String>, format: impl Into<String>) -> Self {
        Self { column: column.into(), format: format.into() }
    }

    fn period(&self) -> Option<Period> {
        let has = |x: &str| self.format.contains(x);
        Some(if has("%S") || has("%T") {
            Period::Second
        } else if has("%M") || has("%R") {
            Period::Minute
        } else if has("%H") {
            Period::Hour
        } else if has("%d") || has("%e") || has("%j") || has("%F") {
            Period::Day
        } else if has("%m") || has("%b") {
            Period::Month
        } else if has("%Y") {
            Period::Year
        } else {
            return None;
        })
    }

    fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.column.trim().is_empty() {
            out.push("timestamp_partition.column is empty; name the hive partition column (e.g. date)".into());
        }
        match self.period() {
            None => out.push(format!(
                "timestamp_partition.format \"{}\" has no date fields; use e.g. \"%Y-%m-%d\" or \"%Y-%m-%d-%H\"",
                self.format
            )),
            Some(_) if !(self.format.contains("%Y") || self.format.contains("%F")) => {
                out.push(format!("timestamp_partition.format \"{}\" has no year (%Y)", self.format))
            }
            Some(_) => {}
        }
        out
    }

    /// The period `[start, end)` a partition value names, as UTC nanoseconds;
    /// `None` when it does not parse.
    pub fn period_of(&self, value: &str) -> Option<(i128, i128)> {
        use chrono::{NaiveDateTime, Timelike};
        let period = self.period()?;
        // Complete the fields the format leaves out, so one parse gives an instant.
        let (mut v, mut f) = (value.to_owned(), self.format.clone());
        let has_day = matches!(period, Period::Second | Period::Minute | Period::Hour | Period::Day);
        if !has_day {
            if period == Period::Year {
                v.push_str("|01");
                f.push_str("|%m");
            }
            v.push_str("|01");
            f.push_str("|%d");
        }
        if matches!(period, Period::Day | Period::Month | Period::Year) {
            v.push_str("|00");
            f.push_str("|%H");
        }
        if matches!(period, Period::Hour | Period::Day | Period::Month | Period::Year) {
            v.push_str("|00");
            f.push_str("|%M");
        }
        let start = NaiveDateTime::parse_from_str(&v, &f).ok()?.and_utc();
        // A value that does not print back the same is not in this format
        // ("2024-05" read with "%Y-%j" would be 5 January): read it, never skip it.
        if start.format(&self.format).to_string() != value {
            return None;
        }
        let end = match period {
            Period::Second => start + chrono::Duration::seconds(1),
            Period::Minute => start + chrono::Duration::minutes(1),
            Period::Hour => start + chrono::Duration::hours(1),
            Period::Day => start + chrono::Duration::days(1),
            Period::Month => start.checked_add_months(chrono::Months::new(1))?,
            Period::Year => start.checked_add_months(chrono::Months::new(12))?,
        };
        let ns =
            |t: chrono::DateTime<chrono::Utc>| i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.nanosecond());
        Some((ns(start), ns(end)))
    }
}

/// Builds a [`DataSource`]; validation happens in [`DataSourceBuilder::build`].
#[derive(Debug, Clone)]
pub struct DataSourceBuilder {
    source: DataSource,
}

impl DataSourceBuilder {
    /// Declares a hive partition column derived from the event time (see [`TimePartition`]).
    pub fn timestamp_partition(mut self, column: impl Into<String>, format: impl Into<String>) -> Self {
        self.source.timestamp_partition = Some(TimePartition::new(column, format));
        self
    }

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

#[cfg(test)]
mod tests {
    use super::TimePartition;

    const H: i128 = 3_600_000_000_000;

    #[test]
    fn partition_periods() {
        let day = TimePartition::new("date", "%Y-%m-%d");
        let (s, e) = day.period_of("2024-05-01").unwrap();
        assert_eq!(s, 1_714_521_600 * 1_000_000_000);
        assert_eq!(e - s, 24 * H);
        assert_eq!(day.period_of("not a date"), None);
        let hour = TimePartition::new("h", "%Y%m%d%H");
        let (s2, e2) = hour.period_of("2024050103").unwrap();
        assert_eq!((s2 - s, e2 - s2), (3 * H, H));
        let month = TimePartition::new("m", "%Y-%m");
        let (s3, e3) = month.period_of("2024-02").unwrap();
        assert_eq!(e3 - s3, 29 * 24 * H);
        let year = TimePartition::new("y", "%Y");
        let (s4, e4) = year.period_of("2024").unwrap();
        assert_eq!(e4 - s4, 366 * 24 * H);
        assert!(!TimePartition::new("d", "%H").check().is_empty());
        assert!(!TimePartition::new("d", "day").check().is_empty());
        assert!(TimePartition::new("d", "%Y/%m/%d").check().is_empty());
        // Values that parse only loosely in the format are not trusted.
        assert_eq!(TimePartition::new("d", "%Y-%j").period_of("2024-05"), None);
        assert_eq!(day.period_of("2024-5-1"), None);
    }
}
