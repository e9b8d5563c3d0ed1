//! Time-window aggregations declared on a feature view (`aggregations:` in
//! YAML): what each function accepts, what it returns, and its default name.
//! The arithmetic is in `crate::aggregation`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ValueType;
use crate::duration::format_duration;

/// One aggregate feature: `function` of `column` over the events of the
/// last `window`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Aggregation {
    /// The source column aggregated; `None` only for `count` (rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The function.
    pub function: AggregateFunction,
    /// How far back events count: `t - window < event time <= t`.
    #[serde(with = "window_serde")]
    pub window: Duration,
    /// How many values `last_n` keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Output feature name; default `{column}_{function}_{window}` (`count_{window}` for rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Aggregation {
    /// `function` of `column` over `window`.
    pub fn new(column: impl Into<String>, function: AggregateFunction, window: Duration) -> Self {
        Self { column: Some(column.into()), function, window, n: None, name: None }
    }

    /// The number of events in `window`.
    pub fn count_rows(window: Duration) -> Self {
        Self { column: None, function: AggregateFunction::Count, window, n: None, name: None }
    }

    /// Names the output feature.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets how many values `last_n` keeps.
    pub fn with_n(mut self, n: u32) -> Self {
        self.n = Some(n);
        self
    }

    /// The output feature's name: `name`, or `amount_sum_1h` / `count_30d`.
    pub fn output_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let window = window_label(self.window);
        match (&self.column, self.function) {
            (None, f) => format!("{f}_{window}"),
            (Some(c), AggregateFunction::LastN) => format!("{c}_last_{}_{window}", self.n.unwrap_or(0)),
            (Some(c), f) => format!("{c}_{f}_{window}"),
        }
    }

    /// The output type for an input column of type `input` (`None`: counting rows),
    /// or why the function does not apply to it.
    pub fn output_type(&self, input: Option<&ValueType>) -> Result<ValueType, String> {
        use AggregateFunction as F;
        let Some(input) = input else {
            return match self.function {
                F::Count => Ok(ValueType::Int64),
                f => Err(format!("{f} needs a column; only count counts rows without one")),
            };
        };
        let numeric = input.is_numeric();
        let orderable = matches!(
            input,
            ValueType::Int32
                | ValueType::Int64
                | ValueType::Float32
                | ValueType::Float64
                | ValueType::String
                | ValueType::Timestamp
                | ValueType::Bool
        );
        let not_for =
            |what: &str| Err(format!("{} of a {input} column: {} takes {what}", self.function, self.function));
        if input.is_list() && !matches!(self.function, F::Count) {
            return Err(format!(
                "{} of a {input} column: lists are only counted (count); aggregate a scalar column",
                self.function
            ));
        }
        match self.function {
            F::Count | F::CountDistinct | F::ApproxCountDistinct => Ok(ValueType::Int64),
            F::Sum => match input {
                ValueType::Int32 | ValueType::Int64 => Ok(ValueType::Int64),
                ValueType::Float32 | ValueType::Float64 => Ok(ValueType::Float64),
                _ => not_for("numbers (int32, int64, float32, float64)"),
            },
            F::Mean | F::Stddev | F::Variance if numeric => Ok(ValueType::Float64),
            F::Mean | F::Stddev | F::Variance => not_for("numbers (int32, int64, float32, float64)"),
            F::Min | F::Max if orderable => Ok(input.clone()),
            F::Min | F::Max => not_for("numbers, strings, bools or timestamps"),
            F::First | F::Last => Ok(input.clone()),
            F::LastN => Ok(ValueType::List(Box::new(input.clone()))),
        }
    }

    /// Problems with the aggregation on its own (columns and types are
    /// checked against the source at apply), each prefixed with its label.
    pub fn check(&self, interval: Option<Duration>) -> Vec<String> {
        let label = format!("aggregation \"{}\"", self.output_name());
        let mut out = Vec::new();
        if self.window.is_zero() {
            out.push(format!("{label}: window must be longer than zero"));
        }
        if self.window.subsec_nanos() != 0 {
            out.push(format!("{label}: window {} is not a whole number of seconds", format_duration(self.window)));
        }
        if let Some(i) = interval.filter(|i| !i.is_zero() && i.subsec_nanos() == 0)
            && !self.window.as_secs().is_multiple_of(i.as_secs())
        {
            out.push(format!(
                "{label}: window {} is not a multiple of aggregation_interval {}; use a window of a whole number of intervals",
                format_duration(self.window),
                format_duration(i)
            ));
        }
        match (self.function, self.n) {
            (AggregateFunction::LastN, None | Some(0)) => {
                out.push(format!("{label}: last_n needs n, the number of values to keep (e.g. n: 5)"));
            }
            (AggregateFunction::LastN, Some(n)) if n > MAX_LAST_N => {
                out.push(format!("{label}: n = {n} is above the limit of {MAX_LAST_N} values"));
            }
            (AggregateFunction::LastN, Some(_)) => {}
            (f, Some(_)) => out.push(format!("{label}: n applies to last_n only, not to {f}")),
            (_, None) => {}
        }
        if self.column.is_none() && self.function != AggregateFunction::Count {
            out.push(format!("{label}: {} needs a column", self.function));
        }
        if let Some(name) = &self.name
            && let Err(e) = super::check_name(name)
        {
            out.push(format!("{label}: {e}"));
        }
        out
    }
}

/// A window in one unit, as names read best: `30d`, `1h`, `90m`, `45s`.
fn window_label(window: Duration) -> String {
    let s = window.as_secs();
    match s {
        0 => format_duration(window),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The largest `n` of `last_n`: a window's list is stored in each online tile.
pub const MAX_LAST_N: u32 = 1000;

/// Aggregate functions. Nulls of the column are skipped by every function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AggregateFunction {
    /// Events (without a column) or non-null values; 0 for an empty window.
    Count,
    /// Sum: int64 for integers (exact), float64 for floats.
    Sum,
    /// Arithmetic mean, float64.
    Mean,
    /// Smallest value (floats in IEEE total order: NaN above every number).
    Min,
    /// Largest value (same order).
    Max,
    /// Sample standard deviation, float64; null below two values.
    Stddev,
    /// Sample variance, float64; null below two values.
    Variance,
    /// The oldest value.
    First,
    /// The newest value.
    Last,
    /// The newest `n` values, newest first.
    LastN,
    /// Exact number of distinct values.
    CountDistinct,
    /// HyperLogLog estimate of the number of distinct values.
    ApproxCountDistinct,
}

impl AggregateFunction {
    /// Every function, in documentation order.
    pub const ALL: [Self; 12] = [
        Self::Count,
        Self::Sum,
        Self::Mean,
        Self::Min,
        Self::Max,
        Self::Stddev,
        Self::Variance,
        Self::First,
        Self::Last,
        Self::LastN,
        Self::CountDistinct,
        Self::ApproxCountDistinct,
    ];

    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Mean => "mean",
            Self::Min => "min",
            Self::Max => "max",
            Self::Stddev => "stddev",
            Self::Variance => "variance",
            Self::First => "first",
            Self::Last => "last",
            Self::LastN => "last_n",
            Self::CountDistinct => "count_distinct",
            Self::ApproxCountDistinct => "approx_count_distinct",
        }
    }
}

impl fmt::Display for AggregateFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serde adapter for `aggregation_interval`: a duration string or seconds;
/// zero stays zero so that the check reports it.
pub(crate) mod interval_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&crate::duration::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<super::window_serde::Raw>::deserialize(d)?.map(super::window_serde::Raw::duration).transpose()
    }
}

mod window_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::duration::format_duration(*v))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum Raw {
        Secs(u64),
        Text(String),
    }

    impl Raw {
        pub(super) fn duration<E: serde::de::Error>(self) -> Result<Duration, E> {
            match self {
                Raw::Secs(n) => Ok(Duration::from_secs(n)),
                Raw::Text(t) => crate::duration::parse_duration(&t).map_err(E::custom),
            }
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Raw::deserialize(d)?.duration()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(yaml: &str) -> Aggregation {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn names_default_from_column_function_and_window() {
        assert_eq!(agg("{column: amount, function: sum, window: 1h}").output_name(), "amount_sum_1h");
        assert_eq!(agg("{function: count, window: 30d}").output_name(), "count_30d");
        assert_eq!(agg("{column: amount, function: last_n, n: 5, window: 1d}").output_name(), "amount_last_5_1d");
        assert_eq!(agg("{column: amount, function: max, window: 1d, name: m}").output_name(), "m");
    }

    #[test]
    fn output_types_follow_function_and_column() {
        let t = |yaml: &str, input: ValueType| agg(yaml).output_type(Some(&input));
        assert_eq!(t("{column: a, function: sum, window: 1h}", ValueType::Int32), Ok(ValueType::Int64));
        assert_eq!(t("{column: a, function: sum, window: 1h}", ValueType::Float32), Ok(ValueType::Float64));
        assert_eq!(t("{column: a, function: mean, window: 1h}", ValueType::Int64), Ok(ValueType::Float64));
        assert_eq!(t("{column: a, function: max, window: 1h}", ValueType::String), Ok(ValueType::String));
        assert_eq!(
            t("{column: a, function: last_n, n: 2, window: 1h}", ValueType::Int32),
            Ok(ValueType::List(Box::new(ValueType::Int32)))
        );
        assert_eq!(t("{column: a, function: count_distinct, window: 1h}", ValueType::String), Ok(ValueType::Int64));
        let err = t("{column: a, function: sum, window: 1h}", ValueType::String).unwrap_err();
        assert!(err.contains("sum of a string column") && err.contains("numbers"), "{err}");
        assert!(t("{column: a, function: max, window: 1h}", ValueType::Bytes).is_err());
        assert!(t("{column: a, function: last, window: 1h}", ValueType::List(Box::new(ValueType::Int64))).is_err());
        assert_eq!(agg("{function: count, window: 1h}").output_type(None), Ok(ValueType::Int64));
    }

    #[test]
    fn checks_windows_n_and_names() {
        let five_min = Some(Duration::from_secs(300));
        assert!(agg("{column: a, function: sum, window: 1h}").check(five_min).is_empty());
        let problems = agg("{column: a, function: sum, window: 7m}").check(five_min);
        assert!(problems[0].contains("not a multiple of aggregation_interval 5m"), "{problems:?}");
        let problems = agg("{column: a, function: last_n, window: 1h}").check(None);
        assert!(problems[0].contains("last_n needs n"), "{problems:?}");
        let problems = agg("{column: a, function: sum, n: 3, window: 1h}").check(None);
        assert!(problems[0].contains("n applies to last_n only"), "{problems:?}");
        let problems = agg("{function: sum, window: 1h}").check(None);
        assert!(problems[0].contains("sum needs a column"), "{problems:?}");
        assert!(!agg("{column: a, function: sum, window: 0s}").check(None).is_empty());
        let err = yaml_serde::from_str::<Aggregation>("{column: a, function: median, window: 1h}").unwrap_err();
        assert!(err.to_string().contains("median"), "{err}");
    }
}
