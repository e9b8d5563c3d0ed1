//! A backend's section of `feature_store.yaml` (`online_store:` with its
//! `type:`), handed to the backend crate that parses its own options, so
//! each backend's keys are known in one place: its crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The options of one backend section, with the repo root that relative
/// paths resolve against.
#[derive(Debug, Clone, Copy)]
pub struct BackendOptions<'a> {
    section: &'a str,
    kind: &'a str,
    options: &'a BTreeMap<String, serde_json::Value>,
    base: &'a Path,
}

impl<'a> BackendOptions<'a> {
    /// Options of `section` (e.g. `online_store`) for backend `kind`;
    /// relative paths resolve against `base`.
    pub fn new(
        section: &'a str,
        kind: &'a str,
        options: &'a BTreeMap<String, serde_json::Value>,
        base: &'a Path,
    ) -> Self {
        Self { section, kind, options, base }
    }

    /// The backend's type name as written.
    pub fn kind(&self) -> &str {
        self.kind
    }

    /// The raw options (without `type`).
    pub fn raw(&self) -> &BTreeMap<String, serde_json::Value> {
        self.options
    }

    /// The repo root.
    pub fn base(&self) -> &Path {
        self.base
    }

    /// A configuration error about option `key`, located as `section.key`.
    pub fn error(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Config { location: format!("{}.{key}", self.section), message: message.into() }
    }

    /// Fails on the first option not in `known`, listing the known ones.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        match self.options.keys().find(|k| k.as_str() != "type" && !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => {
                Err(self.error(k, format!("unknown option for type {}; known: {}", self.kind, known.join(", "))))
            }
        }
    }

    /// A string option (numbers and bools as written).
    pub fn string(&self, key: &str) -> Option<String> {
        self.options.get(key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// A path option, relative paths resolved against the repo root; `default` when absent.
    pub fn path(&self, key: &str, default: &str) -> PathBuf {
        let p = PathBuf::from(self.string(key).unwrap_or_else(|| default.to_owned()));
        if p.is_absolute() { p } else { self.base.join(p) }
    }

    /// A boolean option; `default` when absent.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.options.get(key) {
            None => Ok(default),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.error(key, format!("expected true or false, got {other}"))),
        }
    }

    /// A byte-size option such as `64GiB` (see [`parse_size`]).
    pub fn size(&self, key: &str) -> Result<Option<usize>> {
        self.string(key).map(|t| parse_size(&t).map_err(|m| self.error(key, m))).transpose()
    }
}

/// Parses a byte size such as `2GiB`, `512MB`, `1.5G` or `1048576`.
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size \"{text}\": expected e.g. 2GiB or 512MB"))?;
    let mul: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => return Err(format!("invalid size \"{text}\": unknown unit \"{other}\"")),
    };
    Ok((n * mul) as usize)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2 parsecs").is_err());
    }
}
