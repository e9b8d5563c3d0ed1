use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A reference to one feature of one view, written `view:feature`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FeatureRef {
    /// Feature view name.
    pub view: String,
    /// Feature name within the view.
    pub feature: String,
}

impl FeatureRef {
    /// A reference to `view:feature`.
    pub fn new(view: impl Into<String>, feature: impl Into<String>) -> Self {
        Self { view: view.into(), feature: feature.into() }
    }

    /// Output column name: `feature`, or `view__feature` with full feature names.
    pub fn output_name(&self, full_feature_names: bool) -> String {
        if full_feature_names { format!("{}__{}", self.view, self.feature) } else { self.feature.clone() }
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.view, self.feature)
    }
}

impl FromStr for FeatureRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match FeatureSelection::from_str(s)? {
            FeatureSelection::Feature(r) => Ok(r),
            FeatureSelection::View(v) => Err(Error::InvalidArgument(format!(
                "feature reference \"{v}\" names no feature; write \"{v}:<feature>\""
            ))),
        }
    }
}

/// An item of a feature service: one feature (`view:feature`) or all of a view's features (`view`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeatureSelection {
    /// One feature.
    Feature(FeatureRef),
    /// Every feature of the named view, in schema order.
    View(String),
}

impl FeatureSelection {
    /// The view this selection reads.
    pub fn view(&self) -> &str {
        match self {
            Self::Feature(r) => &r.view,
            Self::View(v) => v,
        }
    }
}

impl fmt::Display for FeatureSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Feature(r) => r.fmt(f),
            Self::View(v) => f.write_str(v),
        }
    }
}

impl FromStr for FeatureSelection {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "invalid feature reference \"{s}\": {why}; write \"view:feature\" or \"view\""
            ))
        };
        let t = s.trim();
        match t.split_once(':') {
            None if t.is_empty() => Err(bad("it is empty")),
            None => Ok(Self::View(t.to_owned())),
            Some((v, f)) => {
                if v.is_empty() || f.is_empty() {
                    return Err(bad("a part is empty"));
                }
                if f.contains(':') {
                    return Err(bad("it has more than one ':'"));
                }
                Ok(Self::Feature(FeatureRef::new(v.trim(), f.trim())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs() {
        let r: FeatureRef = "driver_stats:conv_rate".parse().unwrap();
        assert_eq!(r.view, "driver_stats");
        assert_eq!(r.output_name(true), "driver_stats__conv_rate");
        assert_eq!(r.output_name(false), "conv_rate");
        assert_eq!("v".parse::<FeatureSelection>().unwrap(), FeatureSelection::View("v".into()));
        for bad in ["", ":x", "v:", "a:b:c"] {
            assert!(bad.parse::<FeatureSelection>().is_err(), "{bad}");
        }
        assert!("v".parse::<FeatureRef>().unwrap_err().to_string().contains("v:<feature>"));
    }
}
