use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::CONFIG_FILE;
use crate::error::similar;
use crate::model::{
    DataSource, Entity, FeatureService, FeatureView, OnDemandFeatureView, RequestSource, StreamKind, StreamSource,
};
use crate::{Error, Problem, Result};

/// An object together with the file it was defined in (repo-relative), if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Defined<T> {
    /// The object.
    pub value: T,
    /// Definition file, for error messages; `None` for objects built in code.
    pub file: Option<String>,
}

impl<T> Defined<T> {
    /// An object built in code.
    pub fn new(value: T) -> Self {
        Self { value, file: None }
    }
}

/// A set of definitions to apply or plan: from YAML files, from code, or both.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    /// Entities.
    pub entities: Vec<Defined<Entity>>,
    /// Data sources.
    pub sources: Vec<Defined<DataSource>>,
    /// Stream sources (`sources:` items with a stream `kind`).
    pub stream_sources: Vec<Defined<StreamSource>>,
    /// Feature views.
    pub feature_views: Vec<Defined<FeatureView>>,
    /// Feature services.
    pub feature_services: Vec<Defined<FeatureService>>,
    /// Request sources.
    pub request_sources: Vec<Defined<RequestSource>>,
    /// On-demand feature views.
    pub on_demand_feature_views: Vec<Defined<OnDemandFeatureView>>,
}

/// The YAML shape of one definition file.
#[derive(Serialize)]
struct DefinitionFile<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entities: Vec<&'a Entity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sources: Vec<SourceItem<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    feature_views: Vec<&'a FeatureView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    feature_services: Vec<&'a FeatureService>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    request_sources: Vec<&'a RequestSource>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    on_demand_feature_views: Vec<&'a OnDemandFeatureView>,
}

/// A `sources:` item: a data source or a stream source.
#[derive(Serialize)]
#[serde(untagged)]
enum SourceItem<'a> {
    Batch(&'a DataSource),
    Stream(&'a StreamSource),
}

const SECTIONS: &str = "entities, sources, feature_views, feature_services, request_sources, on_demand_feature_views";

impl Definitions {
    /// No definitions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entity.
    pub fn entity(mut self, e: Entity) -> Self {
        self.entities.push(Defined::new(e));
        self
    }

    /// Adds a data source.
    pub fn source(mut self, s: DataSource) -> Self {
        self.sources.push(Defined::new(s));
        self
    }

    /// Adds a stream source.
    pub fn stream_source(mut self, s: StreamSource) -> Self {
        self.stream_sources.push(Defined::new(s));
        self
    }

    /// Adds a feature view.
    pub fn feature_view(mut self, v: FeatureView) -> Self {
        self.feature_views.push(Defined::new(v));
        self
    }

    /// Adds a feature service.
    pub fn feature_service(mut self, s: FeatureService) -> Self {
        self.feature_services.push(Defined::new(s));
        self
    }

    /// Adds a request source.
    pub fn request_source(mut self, s: RequestSource) -> Self {
        self.request_sources.push(Defined::new(s));
        self
    }

    /// Adds an on-demand feature view.
    pub fn on_demand_feature_view(mut self, v: OnDemandFeatureView) -> Self {
        self.on_demand_feature_views.push(Defined::new(v));
        self
    }

    /// Appends all of `other`.
    pub fn extend(&mut self, other: Definitions) {
        self.entities.extend(other.entities);
        self.sources.extend(other.sources);
        self.stream_sources.extend(other.stream_sources);
        self.feature_views.extend(other.feature_views);
        self.feature_services.extend(other.feature_services);
        self.request_sources.extend(other.request_sources);
        self.on_demand_feature_views.extend(other.on_demand_feature_views);
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.entities.len()
            + self.sources.len()
            + self.stream_sources.len()
            + self.feature_views.len()
            + self.feature_services.len()
            + self.request_sources.len()
            + self.on_demand_feature_views.len()
    }

    /// True when there are no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses one definition file's text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self> {
        let mut problems = Vec::new();
        let defs = parse_file(text, file, &mut problems);
        if problems.is_empty() { Ok(defs) } else { Err(Error::Invalid { problems }) }
    }

    /// Writes all objects as one definition file, in the format [`Definitions::from_yaml`] reads.
    pub fn to_yaml(&self) -> String {
        let file = DefinitionFile {
            entities: self.entities.iter().map(|d| &d.value).collect(),
            sources: self
                .sources
                .iter()
                .map(|d| SourceItem::Batch(&d.value))
                .chain(self.stream_sources.iter().map(|d| SourceItem::Stream(&d.value)))
                .collect(),
            feature_views: self.feature_views.iter().map(|d| &d.value).collect(),
            feature_services: self.feature_services.iter().map(|d| &d.value).collect(),
            request_sources: self.request_sources.iter().map(|d| &d.value).collect(),
            on_demand_feature_views: self.on_demand_feature_views.iter().map(|d| &d.value).collect(),
        };
        yaml_serde::to_string(&file).expect("definitions always serialize")
    }
}

/// Reads every `*.yaml` / `*.yml` file under `dir` except `feature_store.yaml`,
/// skipping hidden folders, `target`, `node_modules` and paths matched by the
/// globs in a `.featurestoreignore` file. Reports every problem in every file.
pub fn load_definitions(dir: &Path) -> Result<Definitions> {
    let ignore = load_ignore(dir)?;
    let mut files = Vec::new();
    collect_yaml(dir, dir, &ignore, &mut files)?;
    files.sort();
    let mut defs = Definitions::new();
    let mut problems = Vec::new();
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        defs.extend(parse_file(&text, &rel, &mut problems));
    }
    if problems.is_empty() { Ok(defs) } else { Err(Error::Invalid { problems }) }
}

fn load_ignore(dir: &Path) -> Result<globset::GlobSet> {
    let mut builder = globset::GlobSetBuilder::new();
    let path = dir.join(".featurestoreignore");
    if let Ok(text) = std::fs::read_to_string(&path) {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let pattern = line.trim_start_matches('/').trim_end_matches('/');
            for p in [pattern.to_owned(), format!("{pattern}/**")] {
                let glob = globset::Glob::new(&p).map_err(|e| Error::Config {
                    location: path.display().to_string(),
                    message: format!("invalid pattern \"{line}\": {e}"),
                })?;
                builder.add(glob);
            }
        }
    }
    builder.build().map_err(|e| Error::Config { location: path.display().to_string(), message: e.to_string() })
}

fn collect_yaml(root: &Path, dir: &Path, ignore: &globset::GlobSet, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        if name.starts_with('.') || ignore.is_match(rel) {
            continue;
        }
        let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if file_type.is_dir() {
            if !matches!(name.as_str(), "target" | "node_modules" | "__pycache__") {
                collect_yaml(root, &path, ignore, out)?;
            }
        } else if (name.ends_with(".yaml") || name.ends_with(".yml")) && !(dir == root && name == CONFIG_FILE) {
            out.push(path);
        }
    }
    Ok(())
}

fn parse_file(text: &str, file: &str, problems: &mut Vec<Problem>) -> Definitions {
    let mut defs = Definitions::new();
    if let Err(e) = super::yaml_limits::check(text) {
        problems.push(Problem::new(Some(file), "", e));
        return defs;
    }
    let doc: yaml_serde::Value = match yaml_serde::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let hint = syntax_hint(text, &e.to_string());
            problems.push(Problem::new(Some(file), "", format!("YAML syntax error: {e}{hint}")));
            return defs;
        }
    };
    let map = match doc {
        yaml_serde::Value::Null => return defs,
        yaml_serde::Value::Mapping(m) => m,
        _ => {
            problems.push(Problem::new(Some(file), "", format!("expected a mapping with some of the keys {SECTIONS}")));
            return defs;
        }
    };
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default().to_owned();
        match key.as_str() {
            "entities" => parse_items(&value, text, file, "entity", &key, &mut defs.entities, problems),
            "sources" | "data_sources" | "stream_sources" => {
                // Items with a stream `kind` are stream sources, the rest
                // (no kind, or kind parquet/file) data sources.
                let (mut batch, mut stream) = (Vec::new(), Vec::new());
                if let yaml_serde::Value::Sequence(items) = &value {
                    for item in items {
                        let kind = item.get("kind").and_then(|k| k.as_str()).map(str::to_owned);
                        match kind.as_deref() {
                            Some(k) if StreamKind::NAMES.contains(&k) || key == "stream_sources" => {
                                stream.push(item.clone())
                            }
                            Some("parquet" | "file") => {
                                let mut item = item.clone();
                                if let yaml_serde::Value::Mapping(m) = &mut item {
                                    m.remove("kind");
                                }
                                batch.push(item);
                            }
                            Some(other) => problems.push(Problem::new(
                                Some(file),
                                item.get("name").and_then(|n| n.as_str()).map_or_else(
                                    || "data source".to_owned(),
                                    |n| format!("data source \"{n}\""),
                                ),
                                format!(
                                    "unknown kind \"{other}\"; expected parquet (the default) or a stream: {}",
                                    StreamKind::NAMES.join(", ")
                                ),
                            )),
                            None => batch.push(item.clone()),
                        }
                    }
                    let batch = yaml_serde::Value::Sequence(batch);
                    let stream = yaml_serde::Value::Sequence(stream);
                    parse_items(&batch, text, file, "data source", &key, &mut defs.sources, problems);
                    parse_items(&stream, text, file, "stream source", &key, &mut defs.stream_sources, problems);
                } else {
                    parse_items(&value, text, file, "data source", &key, &mut defs.sources, problems)
                }
            }
            "feature_views" => {
                parse_items(&value, text, file, "feature view", &key, &mut defs.feature_views, problems)
            }
            "feature_services" => {
                parse_items(&value, text, file, "feature service", &key, &mut defs.feature_services, problems)
            }
            "request_sources" => {
                parse_items(&value, text, file, "request source", &key, &mut defs.request_sources, problems)
            }
            "on_demand_feature_views" => parse_items(
                &value,
                text,
                file,
                "on-demand feature view",
                &key,
                &mut defs.on_demand_feature_views,
                problems,
            ),
            "project" | "registry" | "online_store" | "offline_store" => problems.push(Problem::new(
                Some(file),
                "",
                format!("\"{key}\" belongs in {CONFIG_FILE} at the repo root, not in a definition file"),
            )),
            other => problems.push(Problem::new(
                Some(file),
                "",
                format!(
                    "unknown section \"{other}\"; expected {SECTIONS} (list files that are not definitions in .featurestoreignore)"
                ),
            )),
        }
    }
    defs
}

fn parse_items<T: DeserializeOwned>(
    value: &yaml_serde::Value,
    text: &str,
    file: &str,
    kind: &str,
    section: &str,
    out: &mut Vec<Defined<T>>,
    problems: &mut Vec<Problem>,
) {
    let items = match value {
        yaml_serde::Value::Sequence(items) => items.as_slice(),
        yaml_serde::Value::Null => &[],
        _ => {
            problems.push(Problem::new(Some(file), "", format!("\"{section}\" must be a list")));
            return;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let name = item.get("name").and_then(|n| n.as_str());
        let label = match name {
            Some(name) => format!("{kind} \"{name}\""),
            None => format!("{section}[{i}]"),
        };
        match serde_path_to_error::deserialize::<_, T>(item.clone()) {
            Ok(v) => out.push(Defined { value: v, file: Some(file.to_owned()) }),
            Err(e) => {
                let path = e.path().to_string();
                let message = item_error(text, name, &path, &e.into_inner().to_string());
                problems.push(Problem::new(Some(file), label, message));
            }
        }
    }
}

/// A definition's error with the field it is about (`ttl: invalid
/// duration ...`), the line of the file where that is when it can be found,
/// and for an unknown key the known key it is closest to.
fn item_error(text: &str, item: Option<&str>, path: &str, message: &str) -> String {
    let unknown = message.strip_prefix("unknown field `").and_then(|r| r.split_once('`'));
    let mut hint = String::new();
    let key = match unknown {
        Some((key, rest)) => {
            let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
            let close: Vec<String> = known.iter().filter(|k| similar(k, key)).map(|k| format!("`{k}`")).collect();
            if !close.is_empty() {
                hint = format!("; did you mean {}?", close.join(" or "));
            }
            Some(key)
        }
        None if message.starts_with("missing field") => None,
        None => path.rsplit('.').next().map(|k| k.split('[').next().unwrap_or(k)).filter(|k| !k.is_empty()),
    };
    let field = if path == "." || unknown.is_some() { String::new() } else { format!("{path}: ") };
    let line = locate(text, item, key).map_or_else(String::new, |n| format!("line {n}: "));
    format!("{line}{field}{message}{hint}")
}

/// The 1-based line of `key` inside the list item named `item` (or of the
/// item itself without a key), found in the text; `None` when unsure.
fn locate(text: &str, item: Option<&str>, key: Option<&str>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let is_key = |line: &str, key: &str| {
        line.match_indices(&format!("{key}:"))
            .any(|(at, _)| line[..at].chars().last().is_none_or(|c| c == ' ' || c == '{' || c == '-' || c == ','))
    };
    let (start, column) = match item {
        Some(name) => {
            let at = lines.iter().position(|l| {
                let t = l.trim_start().trim_start_matches("- ").trim_start();
                t.strip_prefix("name:").is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
            })?;
            (at, lines[at].find("name:")?)
        }
        None => return None,
    };
    let Some(key) = key else { return Some(start + 1) };
    // The item's own lines: up to the next line indented less than its keys.
    let end = lines[start + 1..]
        .iter()
        .position(|l| {
            let indent = l.len() - l.trim_start().len();
            !l.trim().is_empty() && !l.trim_start().starts_with('#') && indent < column
        })
        .map_or(lines.len(), |n| start + 1 + n);
    (start..end).find(|&i| is_key(lines[i], key)).map(|i| i + 1)
}

/// What usually causes a YAML syntax error at the line it names: a tab, or
/// keys of one mapping that do not line up.
fn syntax_hint(text: &str, message: &str) -> String {
    let line: Option<usize> = message
        .split("at line ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    let Some(n) = line.filter(|n| *n >= 1) else { return String::new() };
    let lines: Vec<&str> = text.lines().collect();
    let tabbed = (n.saturating_sub(1)..=n)
        .filter(|&i| i >= 1)
        .find(|&i| lines.get(i - 1).is_some_and(|l| l[..l.len() - l.trim_start().len()].contains('\t')));
    if let Some(i) = tabbed {
        return format!("; line {i} is indented with a tab: YAML indents with spaces only");
    }
    let indentation = ["did not find expected key", "mapping values are not allowed", "did not find expected '-'"];
    if indentation.iter().any(|m| message.contains(m)) {
        return format!(
            "; check the indentation of line {n} and the lines above it: the keys of one mapping start in the same column"
        );
    }
    String::new()
}

#[cfg(test)]
mod tests {
    /// A "billion laughs" file (nine levels of nine aliases, 9^9 leaves once
    /// expanded) is refused quickly with a clear error, not expanded.
    #[test]
    fn alias_expansion_is_bounded() {
        let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..=9 {
            let p = format!("*a{}", i - 1);
            yaml.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 9].join(", ")));
        }
        yaml.push_str("entities: *a9\n");
        let started = std::time::Instant::now();
        let err = crate::Definitions::from_yaml(&yaml, "bomb.yaml").unwrap_err().to_string();
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(err.contains("bomb.yaml") && err.contains("YAML syntax error"), "{err}");
        assert!(err.contains("repetition limit"), "the error says why: {err}");
    }

    const VIEWS: &str = "feature_views:
  - name: first
    entities: [driver]
    source: stats
    ttl: 1d
  - name: driver_hourly_stats
    entities: [driver]
    source: stats
    ttl: TTL
    schema:
      - {name: conv_rate, dtype: DTYPE}
    OWNER: a@example.com
";

    fn problems(yaml: &str) -> String {
        crate::Definitions::from_yaml(yaml, "features.yaml").unwrap_err().to_string()
    }

    fn views(ttl: &str, dtype: &str, owner: &str) -> String {
        VIEWS.replace("TTL", ttl).replace("DTYPE", dtype).replace("OWNER", owner)
    }

    #[test]
    fn definition_errors_name_the_field_and_the_line() {
        let err = problems(&views("1fortnightz", "float32", "owner"));
        assert!(
            err.contains("feature view \"driver_hourly_stats\": line 9: ttl: invalid duration \"1fortnightz\""),
            "{err}"
        );
        let err = problems(&views("1d", "float32", "ownr"));
        assert!(err.contains("line 12: unknown field `ownr`") && err.contains("did you mean `owner`?"), "{err}");
        let err = problems(&views("1d", "flaot32", "owner"));
        assert!(err.contains("line 11: schema[0].dtype: unknown type \"flaot32\""), "{err}");
    }

    #[test]
    fn yaml_syntax_errors_hint_at_tabs_and_indentation() {
        let err = problems(&views("1d", "float32", "owner").replace("    owner", "\towner"));
        assert!(err.contains("indented with a tab"), "{err}");
        let err = problems("feature_views:\n  - name: v\n    source: s\n   ttl: 1d\n");
        assert!(err.contains("check the indentation of line"), "{err}");
    }
}
