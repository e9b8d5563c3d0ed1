//! Diffing definitions against the stored registry: what `plan` prints and `apply` writes.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::document::{ProjectRegistry, Record};
use crate::model::{DataSource, Entity, FeatureService, FeatureView, OnDemandFeatureView, RequestSource};
use crate::repo::{Defined, Definitions};

/// How `apply` treats registry objects missing from the definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ApplyMode {
    /// The definitions are the whole project: missing objects are removed (repo apply).
    #[default]
    Sync,
    /// The definitions are added or replace same-named objects; others stay.
    Merge,
}

/// The kind of a registry object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ObjectKind {
    /// An entity.
    Entity,
    /// A data source.
    DataSource,
    /// A stream source.
    StreamSource,
    /// A feature view.
    FeatureView,
    /// A feature service.
    FeatureService,
    /// A request source.
    RequestSource,
    /// An on-demand feature view.
    OnDemandFeatureView,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Entity => "entity",
            Self::DataSource => "data source",
            Self::StreamSource => "stream source",
            Self::FeatureView => "feature view",
            Self::FeatureService => "feature service",
            Self::RequestSource => "request source",
            Self::OnDemandFeatureView => "on-demand feature view",
        })
    }
}

/// What happens to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeAction {
    /// New object.
    Added,
    /// Existing object with different content.
    Changed,
    /// Object no longer defined.
    Removed,
}

/// One object's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Change {
    /// Object kind.
    pub kind: ObjectKind,
    /// Object name.
    pub name: String,
    /// Added, changed or removed.
    pub action: ChangeAction,
    /// What changed, one line per property.
    pub details: Vec<String>,
    /// Why consumers may break (empty if the change is safe).
    pub breaking: Vec<String>,
}

/// The difference between the stored registry and the definitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Plan {
    /// Changes ordered by kind, then name.
    pub changes: Vec<Change>,
    /// What applying would not refuse but a later run would: source files
    /// that cannot be read or disagree with the others (see
    /// [`crate::offline::OfflineStore::file_problems`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Plan {
    /// True if applying would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Feature views whose online data no longer matches their definition:
    /// removed views and views with a breaking change.
    pub fn online_resets(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| {
                c.kind == ObjectKind::FeatureView
                    && (c.action == ChangeAction::Removed
                        || (c.action == ChangeAction::Changed && !c.breaking.is_empty()))
            })
            .map(|c| c.name.clone())
            .collect()
    }

    /// Feature views this plan removes.
    pub fn removed_views(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| c.kind == ObjectKind::FeatureView && c.action == ChangeAction::Removed)
            .map(|c| c.name.clone())
            .collect()
    }

    /// True if any change may break consumers.
    pub fn has_breaking(&self) -> bool {
        self.changes.iter().any(|c| !c.breaking.is_empty())
    }

    /// Changes with the given action.
    pub fn with_action(&self, action: ChangeAction) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.action == action)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.changes.is_empty() {
            return f.write_str("No changes.");
        }
        for c in &self.changes {
            let sign = match c.action {
                ChangeAction::Added => '+',
                ChangeAction::Changed => '~',
                ChangeAction::Removed => '-',
            };
            writeln!(f, "{sign} {} {}", c.kind, c.name)?;
            for d in &c.details {
                writeln!(f, "    {d}")?;
            }
            for b in &c.breaking {
                writeln!(f, "    BREAKING: {b}")?;
            }
        }
        let count = |a| self.with_action(a).count();
        write!(
            f,
            "{} to add, {} to change, {} to remove",
            count(ChangeAction::Added),
            count(ChangeAction::Changed),
            count(ChangeAction::Removed)
        )?;
        if self.has_breaking() {
            write!(f, " (breaking changes present)")?;
        }
        Ok(())
    }
}

/// The definitions apply will validate: in merge mode, the stored objects
/// overlaid with the new ones.
pub(crate) fn merged(current: &ProjectRegistry, defs: &Definitions, mode: ApplyMode) -> Definitions {
    if mode == ApplyMode::Sync {
        return defs.clone();
    }
    fn overlay<T: Clone>(
        stored: &BTreeMap<String, Record<T>>,
        new: &[Defined<T>],
        name: impl Fn(&T) -> &str,
    ) -> Vec<Defined<T>> {
        let mut out: Vec<Defined<T>> = stored
            .iter()
            .filter(|(n, _)| !new.iter().any(|d| name(&d.value) == n.as_str()))
            .map(|(_, r)| Defined { value: r.spec.clone(), file: Some("registry".into()) })
            .collect();
        out.extend(new.iter().cloned());
        out
    }
    Definitions {
        entities: overlay(&current.entities, &defs.entities, |e| &e.name),
        sources: overlay(&current.data_sources, &defs.sources, |e| &e.name),
        stream_sources: overlay(&current.stream_sources, &defs.stream_sources, |e| &e.name),
        feature_views: overlay(&current.feature_views, &defs.feature_views, |e| &e.name),
        feature_services: overlay(&current.feature_services, &defs.feature_services, |e| &e.name),
        request_sources: overlay(&current.request_sources, &defs.request_sources, |e| &e.name),
        on_demand_feature_views: overlay(&current.on_demand_feature_views, &defs.on_demand_feature_views, |e| &e.name),
    }
}

/// Builds the new project state from resolved definitions, keeping creation
/// times and view state of unchanged names, and the plan that leads there.
#[allow(clippy::field_reassign_with_default)] // each field is computed in turn, feeding the plan
/// The next registry of a project and the plan that leads there; objects
/// created now get `generation` (the version being written).
pub(crate) fn build(
    current: &ProjectRegistry,
    resolved: &Definitions,
    now: DateTime<Utc>,
    generation: u64,
) -> (ProjectRegistry, Plan) {
    let mut plan = Plan::default();
    let mut next = ProjectRegistry::default();
    next.entities = diff_kind(
        ObjectKind::Entity,
        &current.entities,
        &resolved.entities,
        |e| &e.name,
        entity_breaks,
        (now, generation),
        &mut plan,
    );
    next.data_sources = diff_kind(
        ObjectKind::DataSource,
        &current.data_sources,
        &resolved.sources,
        |e| &e.name,
        source_breaks,
        (now, generation),
        &mut plan,
    );
    next.stream_sources = diff_kind(
        ObjectKind::StreamSource,
        &current.stream_sources,
        &resolved.stream_sources,
        |e| &e.name,
        |_, _| vec![],
        (now, generation),
        &mut plan,
    );
    next.feature_views = diff_kind(
        ObjectKind::FeatureView,
        &current.feature_views,
        &resolved.feature_views,
        |e| &e.name,
        view_breaks,
        (now, generation),
        &mut plan,
    );
    next.feature_services = diff_kind(
        ObjectKind::FeatureService,
        &current.feature_services,
        &resolved.feature_services,
        |e| &e.name,
        service_breaks,
        (now, generation),
        &mut plan,
    );
    next.request_sources = diff_kind(
        ObjectKind::RequestSource,
        &current.request_sources,
        &resolved.request_sources,
        |e| &e.name,
        request_source_breaks,
        (now, generation),
        &mut plan,
    );
    next.on_demand_feature_views = diff_kind(
        ObjectKind::OnDemandFeatureView,
        &current.on_demand_feature_views,
        &resolved.on_demand_feature_views,
        |e| &e.name,
        on_demand_breaks,
        (now, generation),
        &mut plan,
    );
    // A breaking view change (keys, types) invalidates what is online, so its
    // watermark resets and the next incremental run starts over.
    let reset = plan.online_resets();
    next.view_state = current
        .view_state
        .iter()
        .filter(|(n, _)| next.feature_views.contains_key(*n) && !reset.contains(n))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    // Saved datasets carry their own copies of the definitions they used.
    next.datasets = current.datasets.clone();
    // Removed views' online data is cleared after the write; until that
    // succeeds their tables are listed, so a later apply clears them.
    next.orphaned_online = current.orphaned_online.clone();
    for (name, record) in &current.feature_views {
        if !next.feature_views.contains_key(name) {
            let table = crate::registry::online_table(name, record.generation);
            if !next.orphaned_online.contains(&table) {
                next.orphaned_online.push(table);
            }
        }
    }
    plan.changes.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    (next, plan)
}

fn diff_kind<T: Clone + PartialEq + Serialize>(
    kind: ObjectKind,
    current: &BTreeMap<String, Record<T>>,
    new: &[Defined<T>],
    name: impl Fn(&T) -> &str,
    breaks: fn(&T, &T) -> Vec<String>,
    (now, generation): (DateTime<Utc>, u64),
    plan: &mut Plan,
) -> BTreeMap<String, Record<T>> {
    let mut out = BTreeMap::new();
    for d in new {
        let n = name(&d.value).to_owned();
        let record = match current.get(&n) {
            None => {
                plan.changes.push(Change {
                    kind,
                    name: n.clone(),
                    action: ChangeAction::Added,
                    details: vec![],
                    breaking: vec![],
                });
                Record::new(d.value.clone(), now, generation)
            }
            Some(old) if old.spec == d.value => old.clone(),
            Some(old) => {
                plan.changes.push(Change {
                    kind,
                    name: n.clone(),
                    action: ChangeAction::Changed,
                    details: property_diff(&old.spec, &d.value),
                    breaking: breaks(&old.spec, &d.value),
                });
                Record {
                    spec: d.value.clone(),
                    created_at: old.created_at,
                    updated_at: now,
                    generation: old.generation,
                }
            }
        };
        out.insert(n, record);
    }
    for n in current.keys().filter(|n| !out.contains_key(*n)) {
        let breaking = match kind {
            ObjectKind::DataSource | ObjectKind::StreamSource => vec![],
            _ => vec![format!("{kind} removed; consumers that read it will fail")],
        };
        plan.changes.push(Change { kind, name: n.clone(), action: ChangeAction::Removed, details: vec![], breaking });
    }
    out
}

/// One line per top-level property that differs, as `key: old -> new`.
fn property_diff<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) =
        (serde_json::to_value(old).unwrap_or_default(), serde_json::to_value(new).unwrap_or_default())
    else {
        return vec![];
    };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let show = |v: Option<&serde_json::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
    let mut out = Vec::new();
    for k in keys.into_iter().filter(|k| a.get(*k) != b.get(*k)) {
        match (a.get(k).and_then(named_items), b.get(k).and_then(named_items)) {
            // Lists of named items (a view's schema, an on-demand view's
            // features): what changed per item, not both whole lists.
            (Some(old), Some(new)) => {
                let before = out.len();
                for (name, n) in &new {
                    match old.iter().find(|(o, _)| o == name) {
                        None => out.push(format!("{k}: added {name}: {n}")),
                        Some((_, o)) if o != n => {
                            for line in property_diff(o, n) {
                                out.push(format!("{k} {name}: {line}"));
                            }
                        }
                        Some(_) => {}
                    }
                }
                for (name, _) in old.iter().filter(|(o, _)| !new.iter().any(|(n, _)| n == o)) {
                    out.push(format!("{k}: removed {name}"));
                }
                if out.len() == before {
                    let names = |items: &[(&str, &serde_json::Value)]| {
                        items.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    };
                    out.push(format!("{k}: reordered: [{}] -> [{}]", names(&old), names(&new)));
                }
            }
            _ => out.push(format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))),
        }
    }
    out
}

/// A JSON list whose items are objects with distinct `name`s, as (name, item).
fn named_items(v: &serde_json::Value) -> Option<Vec<(&str, &serde_json::Value)>> {
    let items: Vec<(&str, &serde_json::Value)> =
        v.as_array()?.iter().map(|x| Some((x.get("name")?.as_str()?, x))).collect::<Option<_>>()?;
    let distinct = items.iter().enumerate().all(|(i, (n, _))| items[..i].iter().all(|(m, _)| m != n));
    distinct.then_some(items)
}

fn entity_breaks(old: &Entity, new: &Entity) -> Vec<String> {
    if old.join_keys != new.join_keys {
        vec!["join keys changed; online keys and retrieval inputs change".into()]
    } else {
        vec![]
    }
}

fn source_breaks(_: &DataSource, _: &DataSource) -> Vec<String> {
    vec![]
}

fn view_breaks(old: &FeatureView, new: &FeatureView) -> Vec<String> {
    let mut out = Vec::new();
    if old.entities != new.entities {
        out.push(format!("entities changed from [{}] to [{}]", old.entities.join(", "), new.entities.join(", ")));
    }
    for f in &old.schema {
        match new.feature(&f.name) {
            None => out.push(format!("feature \"{}\" removed", f.name)),
            Some(n) if n.dtype != f.dtype => {
                out.push(format!("feature \"{}\" type changed from {} to {}", f.name, f.dtype, n.dtype))
            }
            Some(_) => {}
        }
    }
    // Online tiles hold partial states of one interval grid and one function.
    let rebuild =
        "its online values are NOT_FOUND until `feature-store materialize` rewrites the tiles of the longest window";
    if old.is_aggregation() && new.is_aggregation() && old.aggregation_interval != new.aggregation_interval {
        let show = |d: Option<std::time::Duration>| d.map_or("(none)".into(), crate::duration::format_duration);
        out.push(format!(
            "aggregation_interval changed from {} to {}; {rebuild}",
            show(old.aggregation_interval),
            show(new.aggregation_interval)
        ));
    }
    for a in &old.aggregations {
        let name = a.output_name();
        if let Some(b) = new.aggregations.iter().find(|b| b.output_name() == name)
            && (a.function, &a.column, a.n) != (b.function, &b.column, b.n)
        {
            out.push(format!(
                "aggregation \"{name}\" now computes {} of {}; {rebuild}",
                b.function,
                b.column.as_deref().unwrap_or("rows")
            ));
        }
    }
    out
}

fn request_source_breaks(old: &RequestSource, new: &RequestSource) -> Vec<String> {
    let mut out = Vec::new();
    for f in &old.schema {
        match new.field(&f.name) {
            None => {
                out.push(format!("field \"{}\" removed; requests and entity tables must no longer carry it", f.name))
            }
            Some(n) if n.dtype != f.dtype => {
                out.push(format!("field \"{}\" changes type {} -> {}", f.name, f.dtype, n.dtype))
            }
            Some(_) => {}
        }
    }
    for f in &new.schema {
        if old.field(&f.name).is_none() {
            out.push(format!("field \"{}\" added; callers must pass it", f.name));
        }
    }
    out
}

fn on_demand_breaks(old: &OnDemandFeatureView, new: &OnDemandFeatureView) -> Vec<String> {
    let mut out = Vec::new();
    for f in &old.features {
        match new.feature(&f.name) {
            None => out.push(format!("feature \"{}\" removed; consumers that read it will fail", f.name)),
            Some(n) if n.dtype != f.dtype => {
                out.push(format!("feature \"{}\" changes type {} -> {}", f.name, f.dtype, n.dtype))
            }
            Some(n) if n.expression != f.expression => out.push(format!(
                "feature \"{}\" changes expression \"{}\" -> \"{}\": models trained on it see other values",
                f.name, f.expression, n.expression
            )),
            Some(_) => {}
        }
    }
    out
}

fn service_breaks(old: &FeatureService, new: &FeatureService) -> Vec<String> {
    old.features
        .iter()
        .filter(|f| !new.features.contains(f))
        .map(|f| format!("feature \"{f}\" removed from the service"))
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::build;
    use crate::ValueType;
    use crate::model::{FeatureView, Field};
    use crate::registry::ProjectRegistry;
    use crate::repo::Definitions;

    /// Lists of named items are compared item by item.
    #[test]
    fn named_lists_diff_per_item() {
        let old = serde_json::json!({"ttl": "1d", "schema": [
            {"name": "a", "dtype": "int64"}, {"name": "b", "dtype": "float64"}, {"name": "c", "dtype": "string"}
        ]});
        let new = serde_json::json!({"ttl": "2d", "schema": [
            {"name": "a", "dtype": "int64"}, {"name": "b", "dtype": "float32"}, {"name": "d", "dtype": "bool"}
        ]});
        assert_eq!(
            super::property_diff(&old, &new),
            [
                "schema b: dtype: \"float64\" -> \"float32\"",
                "schema: added d: {\"dtype\":\"bool\",\"name\":\"d\"}",
                "schema: removed c",
                "ttl: \"1d\" -> \"2d\""
            ]
        );
        let swapped = serde_json::json!({"ttl": "1d", "schema": [
            {"name": "b", "dtype": "float64"}, {"name": "a", "dtype": "int64"}, {"name": "c", "dtype": "string"}
        ]});
        assert_eq!(super::property_diff(&old, &swapped), ["schema: reordered: [a, b, c] -> [b, a, c]"]);
    }

    fn view(name: &str, feature: &str) -> FeatureView {
        FeatureView::builder(name, "src").field(Field::new(feature, ValueType::Int64)).build().unwrap()
    }

    /// A view keeps its generation while it exists; removed and created
    /// again, it gets another, so its online table differs from the old one,
    /// which is listed until cleared.
    #[test]
    fn generations_separate_a_recreated_views_online_data() {
        let now = Utc::now();
        let defs = Definitions::new().feature_view(view("v", "a"));
        let (one, _) = build(&ProjectRegistry::default(), &defs, now, 3);
        assert_eq!(one.feature_views["v"].generation, 3);
        let changed = Definitions::new().feature_view(view("v", "b"));
        let (two, _) = build(&one, &changed, now, 4);
        assert_eq!(two.feature_views["v"].generation, 3, "a change keeps the generation");
        let (gone, _) = build(&two, &Definitions::new(), now, 5);
        assert_eq!(gone.orphaned_online, ["v@3"]);
        let (back, _) = build(&gone, &defs, now, 6);
        assert_eq!(back.feature_views["v"].generation, 6);
        assert_eq!(crate::registry::online_table("v", back.feature_views["v"].generation), "v@6");
        assert_eq!(back.orphaned_online, ["v@3"], "still listed until an apply clears it");
        assert_eq!(crate::registry::online_table("v", 0), "v", "records from before generations");
    }
}
