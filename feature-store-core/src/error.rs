//! The one public error type of this crate.

use std::fmt;
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed backend error kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors raised by the model, the registry and the facade.
///
/// Backend crates map their own errors into [`Error::Backend`] or
/// [`Error::StoreUnavailable`] so that callers match on one type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The repository's definitions are invalid; every problem found is listed.
    #[error("{}", Problems(problems))]
    Invalid {
        /// All problems, in file order.
        problems: Vec<Problem>,
    },

    /// `feature_store.yaml` (or a config value) is malformed.
    #[error("config {location}: {message}")]
    Config {
        /// File or key that is wrong.
        location: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A named object does not exist.
    #[error("{kind} \"{name}\" not found{}", hint_suffix(hint))]
    NotFound {
        /// Kind of object (`feature view`, `entity`, ...).
        kind: &'static str,
        /// The name that was looked up.
        name: String,
        /// Close matches or what to do instead.
        hint: Option<String>,
    },

    /// A request is malformed (bad feature reference, bad argument).
    #[error("{0}")]
    InvalidArgument(String),

    /// Input data does not have the shape or types required.
    #[error("{context}: {message}")]
    Data {
        /// Where the data came from (file, column, view).
        context: String,
        /// What is wrong.
        message: String,
    },

    /// A concurrent writer changed the registry and retries were exhausted.
    #[error(
        "registry {location}: conflicting concurrent update (gave up after {attempts} attempts); rerun the command"
    )]
    Conflict {
        /// The registry location.
        location: String,
        /// How many times the write was attempted.
        attempts: u32,
    },

    /// The registry document cannot be read as this version's format.
    #[error("registry {location} is corrupt or from an incompatible version: {message}")]
    CorruptRegistry {
        /// The registry location.
        location: String,
        /// What could not be parsed.
        message: String,
    },

    /// A store could not be reached (network, permissions, missing bucket).
    #[error("{store} is unavailable: {source}")]
    StoreUnavailable {
        /// Which store, with its location.
        store: String,
        /// The backend error.
        #[source]
        source: BoxError,
    },

    /// A backend failed in a way not covered above.
    #[error("{context}: {source}")]
    Backend {
        /// What was being done.
        context: String,
        /// The backend error.
        #[source]
        source: BoxError,
    },

    /// A feature is configured but not available in this build or backend.
    #[error("{0}")]
    Unsupported(String),

    /// Local file I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// Builds an [`Error::Data`].
    pub fn data(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Data { context: context.into(), message: message.into() }
    }

    /// Builds an [`Error::Backend`].
    pub fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend { context: context.into(), source: source.into() }
    }

    /// True for errors a retry may cure (a store that was unreachable, a write conflict).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::StoreUnavailable { .. } | Self::Conflict { .. })
    }
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
}

/// One problem found while validating definitions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Definition file the object came from, relative to the repo, when known.
    pub file: Option<String>,
    /// The object, e.g. `feature view "driver_stats"`; empty for file-level problems.
    pub object: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    /// A new problem.
    pub fn new(file: Option<&str>, object: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file: file.map(str::to_owned), object: object.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if !self.object.is_empty() {
            write!(f, "{}: ", self.object)?;
        }
        f.write_str(&self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{} in the definitions:", if n == 1 { "" } else { "s" })?;
        for p in self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Loose similarity for "did you mean" hints: same letters ignoring case and
/// separators, or an edit distance of at most two.
pub fn similar(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    norm(a) == norm(b) || edit_distance(a, b) <= 2.min(a.len().max(b.len()) / 3)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Arrow's CSV reader numbers columns from 0, counts data rows as "lines"
/// and nests its "Parser error: " prefix; with the file's `columns` in
/// order, this names the column and the file line (header included) instead.
pub fn readable_csv_error(message: &str, columns: &[&str]) -> String {
    let message = message.replace("Parser error: ", "");
    let mut out = String::new();
    let mut rest = message.as_str();
    loop {
        let next = ["column ", "line "].iter().filter_map(|w| rest.find(w).map(|at| (at, *w))).min();
        let Some((at, word)) = next else { break };
        let (head, tail) = rest.split_at(at + word.len());
        out.push_str(head);
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        let n = digits.parse::<usize>().ok();
        match (word, n) {
            ("column ", Some(i)) if i < columns.len() => out.push_str(&format!("\"{}\"", columns[i])),
            ("line ", Some(row)) => out.push_str(&format!("{} (data row {row})", row + 1)),
            _ => out.push_str(&digits),
        }
        rest = &tail[digits.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::readable_csv_error;

    #[test]
    fn csv_errors_name_the_column_and_the_file_line() {
        let columns = ["driver_id", "event_timestamp"];
        assert_eq!(
            readable_csv_error(
                "Parser error: Error parsing column 1 at line 2: Parser error: Error parsing timestamp from 'x'",
                &columns
            ),
            "Error parsing column \"event_timestamp\" at line 3 (data row 2): Error parsing timestamp from 'x'"
        );
        assert_eq!(readable_csv_error("column 9 of 2", &columns), "column 9 of 2");
    }
}
